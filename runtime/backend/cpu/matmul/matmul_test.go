package matmul

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/cputest"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// randMatrix returns a rows×cols weight of type d whose Data starts at
// byte offset off of its allocation, and the same weights as float32.
func randMatrix(t *testing.T, rng *rand.Rand, d model.DType, rows, cols, off int) (*Matrix, []float32) {
	t.Helper()
	enc := cputest.RandWeights(t, rng, d, rows*cols)
	buf := make([]byte, off+len(enc))
	copy(buf[off:], enc)
	m, err := NewMatrix(d, rows, cols, buf[off:])
	if err != nil {
		t.Fatal(err)
	}
	w := make([]float32, rows*cols)
	if err := model.Decode(w, m.Data, d); err != nil {
		t.Fatal(err)
	}
	return m, w
}

// reference is w·x in float64, with Σ|w_i x_i| for each output to scale
// the tolerance: float32 sums in another order differ by about eps·Σ|w_i x_i|.
func reference(w []float32, rows, cols int, x []float32, n int) (ref, abs []float64) {
	ref = make([]float64, n*rows)
	abs = make([]float64, n*rows)
	for r := range n {
		for o := range rows {
			var s, a float64
			for i := range cols {
				p := float64(w[o*cols+i]) * float64(x[r*cols+i])
				s += p
				a += math.Abs(p)
			}
			ref[r*rows+o], abs[r*rows+o] = s, a
		}
	}
	return ref, abs
}

func TestMatMul(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	floatCols := []int{1, 3, 31, 33, 172, 257, 1100} // 1100 crosses a 512-column block
	q8Cols := []int{32, 64, 96, 544, 1056}
	for _, isa := range cputest.ISAs(t, ISA, setISA) {
		setISA(isa)
		for _, d := range cputest.DTypes {
			cols := floatCols
			if d == model.Q8_0 {
				cols = q8Cols
			}
			for _, c := range cols {
				for _, rows := range []int{1, 7, 64, 172} {
					m, w := randMatrix(t, rng, d, rows, c, 1+rng.IntN(3))
					for _, n := range []int{1, 2, 3, 5, 17} {
						x := cputest.RandVec(rng, n*c)
						ref, abs := reference(w, rows, c, x, n)
						for _, th := range []int{1, 2, 3} {
							name := fmt.Sprintf("%s/%s/%dx%d/n=%d/threads=%d", isa, d, rows, c, n, th)
							dst := cputest.NaNDst(n * rows)
							cputest.WithThreads(th, func() { MatMul(dst[:n*rows], m, x, n) })
							t.Run(name, func(t *testing.T) { cputest.CheckClose(t, dst, ref, abs) })
						}
					}
				}
			}
		}
	}
}

func TestMatMulRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
	for _, d := range cputest.DTypes {
		m, w := randMatrix(t, rng, d, 50, 96, 1)
		const n = 3
		x := cputest.RandVec(rng, n*96)
		ref, abs := reference(w, 50, 96, x, n)
		dst := make([]float32, n*50)
		for i := range dst {
			dst[i] = -7
		}
		MatMulRange(dst, m, x, n, 13, 29)
		for r := range n {
			for o := range 50 {
				k := r*50 + o
				if o >= 13 && o < 29 {
					cputest.CheckClose(t, dst[k:k+1], ref[k:k+1], abs[k:k+1])
				} else if dst[k] != -7 {
					t.Fatalf("%s: wrote output %d outside [13,29)", d, o)
				}
			}
		}
	}
}

// TestHalfValues multiplies every finite F16 and BF16 value by one-hot
// activations, so each output must equal one weight exactly: that checks
// conversion of subnormals, signed zeros and extremes on both paths.
func TestHalfValues(t *testing.T) {
	const cols = 64
	for _, isa := range cputest.ISAs(t, ISA, setISA) {
		setISA(isa)
		for _, d := range []model.DType{model.F16, model.BF16} {
			data := make([]byte, 2<<16)
			for h := range 1 << 16 {
				v := uint16(h)
				if f := half(d, v); math.IsInf(float64(f), 0) || math.IsNaN(float64(f)) {
					v = 0
				}
				binary.LittleEndian.PutUint16(data[2*h:], v)
			}
			rows := 1 << 16 / cols
			m, err := NewMatrix(d, rows, cols, data)
			if err != nil {
				t.Fatal(err)
			}
			w := make([]float32, rows*cols)
			if err := model.Decode(w, data, d); err != nil {
				t.Fatal(err)
			}
			x := make([]float32, cols*cols) // identity: n = cols one-hot rows
			for i := range cols {
				x[i*cols+i] = 1
			}
			dst := make([]float32, cols*rows)
			MatMul(dst, m, x, cols) // tiled path
			for k := range cols {
				one := make([]float32, rows)
				MatMul(one, m, x[k*cols:(k+1)*cols], 1) // matrix-vector path
				for o := range rows {
					want := w[o*cols+k]
					if got := dst[k*rows+o]; got != want {
						t.Fatalf("%s %s n=%d: W[%d,%d] = %g, want %g", isa, d, cols, o, k, got, want)
					}
					if got := one[o]; got != want {
						t.Fatalf("%s %s n=1: W[%d,%d] = %g, want %g", isa, d, o, k, got, want)
					}
				}
			}
		}
	}
}

func half(d model.DType, h uint16) float32 {
	if d == model.BF16 {
		return model.BF16ToF32(h)
	}
	return model.F16ToF32(h)
}

func TestNewMatrixErrors(t *testing.T) {
	for _, tc := range []struct {
		d          model.DType
		rows, cols int
		bytes      int
	}{
		{model.F32, 2, 3, 23},
		{model.F32, 2, 3, 25},
		{model.F16, 2, 3, 11},
		{model.BF16, 2, 3, 13},
		{model.Q8_0, 2, 33, 2 * 34},
		{model.Q8_0, 2, 16, 34},
		{model.Q8_0, 2, 32, 67},
		{model.F32, 0, 3, 0},
		{model.F32, 3, 0, 0},
		{model.DType(9), 1, 1, 4},
	} {
		if _, err := NewMatrix(tc.d, tc.rows, tc.cols, make([]byte, tc.bytes)); err == nil {
			t.Errorf("NewMatrix(%s, %d, %d, %d bytes) did not fail", tc.d, tc.rows, tc.cols, tc.bytes)
		}
	}
	if _, err := NewMatrix(model.Q8_0, 2, 64, make([]byte, 2*2*34)); err != nil {
		t.Errorf("valid Q8_0 matrix: %v", err)
	}
}

func TestMemReadBandwidth(t *testing.T) {
	if bw := MemReadBandwidth(8 << 20); !(bw > 0) {
		t.Fatalf("bandwidth %g", bw)
	}
}
