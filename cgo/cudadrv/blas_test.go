package cudadrv

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/acttail/acttail-gpu/runtime/model"
)

func TestBLASLibraries(t *testing.T) {
	t.Setenv("ACTTAIL_LIBCUDA", "")
	t.Setenv(BLASEnv, "")
	libs := BLASLibraries()
	if len(libs) != 6 || libs[0] != "libcublas.so.13" || libs[5] != "/usr/local/cuda/lib64/libcublas.so.11" {
		t.Errorf("search = %v", libs)
	}
	t.Setenv("ACTTAIL_LIBCUDA", "/tmp/emu.so")
	if libs := BLASLibraries(); len(libs) != 0 {
		t.Errorf("with another driver library: %v, want none", libs)
	}
	t.Setenv(BLASEnv, "/opt/x/libcublas.so.12")
	if libs := BLASLibraries(); len(libs) != 1 || libs[0] != "/opt/x/libcublas.so.12" {
		t.Errorf("with %s: %v", BLASEnv, libs)
	}
}

// TestBLASSymbols opens a real cuBLAS where one is installed (CI installs
// Debian's CUDA 11.8 toolkit) and checks that every symbol the binding
// needs resolves; no GPU is needed for that.
func TestBLASSymbols(t *testing.T) {
	for _, lib := range []string{"libcublas.so.13", "libcublas.so.12", "libcublas.so.11"} {
		if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/" + lib); err != nil {
			continue
		}
		if os.Getenv("ACTTAIL_LIBCUDA") != "" {
			t.Skip("ACTTAIL_LIBCUDA is set: the search is ACTTAIL_LIBCUBLAS alone")
		}
		l, err := loadBLAS()
		if err != nil {
			t.Fatalf("%s is installed, but: %v", lib, err)
		}
		t.Logf("resolved every cuBLAS symbol in %s", l)
		return
	}
	t.Skip("no cuBLAS installed in /usr/lib/x86_64-linux-gnu")
}

func TestBLASErrorText(t *testing.T) {
	e := &BLASError{Op: "cublasGemmEx", Status: 7, Name: "CUBLAS_STATUS_INVALID_VALUE"}
	if got, want := e.Error(), "cublas: cublasGemmEx: CUBLAS_STATUS_INVALID_VALUE (7)"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestGEMMCheck(t *testing.T) {
	ok := GEMM{M: 4, N: 3, K: 5, AB: R16BF, A: 1, B: 2, C: 3, LdA: 4, LdB: 5, LdC: 4, Alpha: 1}
	if err := ok.check(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*GEMM){
		"zero size":    func(g *GEMM) { g.K = 0 },
		"short lda":    func(g *GEMM) { g.LdA = 3 },
		"short lda^T":  func(g *GEMM) { g.TransA = true }, // op(A) = A^T: A is k x m, lda >= 5
		"short ldb^T":  func(g *GEMM) { g.TransB = true }, // B is n x k, ldb >= 3 holds, so check ldc
		"short ldc":    func(g *GEMM) { g.LdC = 2 },
		"type":         func(g *GEMM) { g.AB = 1 },
		"null":         func(g *GEMM) { g.B = 0 },
		"int32 bounds": func(g *GEMM) { g.N = 1 << 31 },
	} {
		g := ok
		mod(&g)
		err := g.check()
		if name == "short ldb^T" {
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted %+v", name, g)
		}
	}
}

// TestGPUBLAS checks Gemm against a float64 product on fresh random
// inputs, for every input type and transpose, odd sizes, padded leading
// dimensions, beta 0 (C not read: it holds NaN) and 1, and inside a CUDA
// graph. Tolerance 1e-5 of the larger of |want| and the rms of C: the
// inputs are the same rounded values on both sides, so only the order of
// the float32 sums differs.
func TestGPUBLAS(t *testing.T) {
	d := gpu(t)
	r := rand.New(rand.NewPCG(21, 22))
	err := d.Do(func(c *Ctx) error {
		s, err := c.StreamCreate()
		if err != nil {
			return err
		}
		defer c.StreamDestroy(s)
		b, err := c.OpenBLAS(s)
		if errors.Is(err, ErrNoBLAS) {
			t.Skipf("needs cuBLAS: %v", err)
		}
		if err != nil {
			return err
		}
		defer c.CloseBLAS(b)
		t.Logf("%s", b)
		for _, ab := range []DataType{R32F, R16F, R16BF} {
			for _, sz := range [][3]int{{37, 9, 70}, {1, 1, 1}, {64, 130, 33}} {
				for _, tr := range [][2]bool{{false, false}, {true, false}, {false, true}, {true, true}} {
					for _, beta := range []float32{0, 1} {
						for _, graph := range []bool{false, true} {
							name := fmt.Sprintf("type %d m,n,k=%v trans=%v beta=%g graph=%v", ab, sz, tr, beta, graph)
							if err := checkGemm(c, s, b, r, ab, sz, tr, beta, graph); err != nil {
								return fmt.Errorf("%s: %w", name, err)
							}
						}
					}
				}
			}
		}
		// Bad arguments come back as errors, before cuBLAS sees them.
		if err := c.Gemm(b, GEMM{M: 2, N: 2, K: 2, AB: R32F, A: 1, B: 1, C: 1, LdA: 1, LdB: 2, LdC: 2}); err == nil ||
			!strings.Contains(err.Error(), "leading dimensions") {
			return fmt.Errorf("lda 1 for m 2: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkGemm runs one product and compares it with the host's.
func checkGemm(c *Ctx, s Stream, b *BLAS, r *rand.Rand, ab DataType, sz [3]int, tr [2]bool, beta float32, graph bool) error {
	m, n, k := sz[0], sz[1], sz[2]
	rowsA, colsA, rowsB, colsB := m, k, k, n
	if tr[0] {
		rowsA, colsA = k, m
	}
	if tr[1] {
		rowsB, colsB = n, k
	}
	lda, ldb, ldc := rowsA+3, rowsB+1, m+2
	a, aBytes := randMatrix(r, ab, lda*colsA)
	bm, bBytes := randMatrix(r, ab, ldb*colsB)
	cm := make([]float32, ldc*n)
	for i := range cm {
		cm[i] = float32(r.NormFloat64())
		if beta == 0 {
			cm[i] = float32(math.NaN())
		}
	}
	want := make([]float64, ldc*n)
	var rms float64
	for j := 0; j < n; j++ {
		for i := 0; i < m; i++ {
			var acc float64
			for l := 0; l < k; l++ {
				ai, bi := l*lda+i, j*ldb+l
				if tr[0] {
					ai = i*lda + l
				}
				if tr[1] {
					bi = l*ldb + j
				}
				acc += float64(a[ai]) * float64(bm[bi])
			}
			if beta != 0 {
				acc += float64(beta) * float64(cm[j*ldc+i])
			}
			want[j*ldc+i] = acc
			rms += acc * acc
		}
	}
	rms = math.Sqrt(rms / float64(m*n))
	var dA, dB, dC DevicePtr
	defer func() {
		for _, p := range []DevicePtr{dA, dB, dC} {
			if p != 0 {
				c.MemFree(p)
			}
		}
	}()
	var err error
	if dA, err = c.MemAlloc(len(aBytes)); err != nil {
		return err
	}
	if dB, err = c.MemAlloc(len(bBytes)); err != nil {
		return err
	}
	if dC, err = c.MemAlloc(4 * len(cm)); err != nil {
		return err
	}
	for _, e := range []error{
		c.CopyHtoD(dA, unsafe.Pointer(&aBytes[0]), len(aBytes), s),
		c.CopyHtoD(dB, unsafe.Pointer(&bBytes[0]), len(bBytes), s),
		c.CopyHtoD(dC, unsafe.Pointer(&cm[0]), 4*len(cm), s),
		c.StreamSynchronize(s),
	} {
		if e != nil {
			return e
		}
	}
	g := GEMM{TransA: tr[0], TransB: tr[1], M: m, N: n, K: k, AB: ab, A: dA, B: dB, C: dC, LdA: lda, LdB: ldb, LdC: ldc, Alpha: 1, Beta: beta}
	if graph {
		if !c.HasGraphs() {
			return nil
		}
		if err := c.BeginCapture(s); err != nil {
			return err
		}
		err := c.Gemm(b, g)
		cg, cerr := c.EndCapture(s)
		if err = errors.Join(err, cerr); err != nil {
			return err
		}
		e, err := c.Instantiate(cg)
		c.DestroyCaptured(cg)
		if err != nil {
			return err
		}
		defer c.GraphDestroy(e)
		if err := c.GraphLaunch(e, s); err != nil {
			return err
		}
	} else if err := c.Gemm(b, g); err != nil {
		return err
	}
	got := make([]float32, len(cm))
	if err := c.CopyDtoH(unsafe.Pointer(&got[0]), dC, 4*len(got), s); err != nil {
		return err
	}
	for j := 0; j < n; j++ {
		for i := 0; i < ldc; i++ {
			at := j*ldc + i
			if i >= m { // padding rows of C are not written
				if math.Float32bits(got[at]) != math.Float32bits(cm[at]) {
					return fmt.Errorf("C padding [%d,%d] changed: %g", i, j, got[at])
				}
				continue
			}
			if diff := math.Abs(float64(got[at]) - want[at]); !(diff <= 1e-5*math.Max(math.Abs(want[at]), rms)) {
				return fmt.Errorf("C[%d,%d] = %g, want %g", i, j, got[at], want[at])
			}
		}
	}
	return nil
}

// randMatrix is n random values as the type holds them (float32, then
// rounded) and their bytes in that type.
func randMatrix(r *rand.Rand, ab DataType, n int) ([]float32, []byte) {
	v := make([]float32, n)
	var out []byte
	for i := range v {
		f := float32(r.NormFloat64())
		switch ab {
		case R16F:
			h := model.F32ToF16(f)
			v[i] = model.F16ToF32(h)
			out = append(out, byte(h), byte(h>>8))
		case R16BF:
			h := model.F32ToBF16(f)
			v[i] = model.BF16ToF32(h)
			out = append(out, byte(h), byte(h>>8))
		default:
			v[i] = f
			u := math.Float32bits(f)
			out = append(out, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
		}
	}
	return v, out
}
