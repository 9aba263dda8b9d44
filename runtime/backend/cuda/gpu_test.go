package cuda

// GPU tests: every op against the CPU backend (the reference semantics) on
// fresh random inputs, odd sizes included. They skip without a GPU.
// ACTTAIL_KERNELS selects a fatbin other than the embedded one. -short
// leaves out the large matrices (for runs under compute-sanitizer).

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

// newGPU opens the CUDA backend (with cuBLAS where it loads) or skips the
// test.
func newGPU(t testing.TB) *Backend {
	t.Helper()
	return newGPUWith(t, Options{})
}

// newGPUWith is newGPU with options (the kernels still from ACTTAIL_KERNELS).
func newGPUWith(t testing.TB, o Options) *Backend {
	t.Helper()
	o.Kernels = os.Getenv("ACTTAIL_KERNELS")
	b, err := New(o)
	if errors.Is(err, cudadrv.ErrNoDriver) || errors.Is(err, cudadrv.ErrNoDevice) {
		t.Skipf("needs a GPU: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	})
	return b
}

// guard turns a panic of an op (misuse the test did not mean) into this
// test's failure, so that one failing test does not end the test
// binary and the GPU run still reports the others. Use: defer guard(t).
func guard(t *testing.T) {
	if r := recover(); r != nil {
		t.Fatalf("panic: %v", r)
	}
}

var dtypes = []model.DType{model.F32, model.F16, model.BF16, model.Q8_0}

// tolerance is the allowed error relative to the larger of |want| and the
// rms of want: 1e-4 for fp32 weights, 2e-2 for 16-bit and Q8_0.
func tolerance(d model.DType) float64 {
	if d == model.F32 {
		return 1e-4
	}
	return 2e-2
}

// transposedTolerance is tolerance for products on UploadSparse weights:
// the CPU backend requantizes a transposed Q8_0 matrix in blocks along its
// outputs (a second rounding of every weight), while the GPU widens it to
// F32 exactly, so Q8_0 results differ by up to a few percent of the rms.
func transposedTolerance(d model.DType) float64 {
	if d == model.Q8_0 {
		return 5e-2
	}
	return tolerance(d)
}

func compare(t *testing.T, what string, got, want []float32, tol float64) {
	t.Helper()
	var ss float64
	for _, w := range want {
		ss += float64(w) * float64(w)
	}
	rms := math.Sqrt(ss / float64(max(len(want), 1)))
	bad := 0
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if !(math.Abs(g-w) <= tol*max(math.Abs(w), rms)) {
			if bad < 5 {
				t.Errorf("%s: [%d] = %g, want %g (rms %g)", what, i, g, w, rms)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%s: %d of %d values off (tolerance %g)", what, bad, len(want), tol)
	}
}

func randVec(r *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64())
	}
	return v
}

// randTensor is a random (out, in) matrix, or a vector when in == 0.
func randTensor(t *testing.T, r *rand.Rand, d model.DType, out, in int) *model.Tensor {
	shape := []int{out, in}
	if in == 0 {
		shape = []int{out}
	}
	v := randVec(r, model.Elems(shape))
	for i := range v {
		v[i] *= 0.1
	}
	data, err := model.Encode(v, d)
	if err != nil {
		t.Fatal(err)
	}
	return &model.Tensor{Name: fmt.Sprintf("w%dx%d", out, in), DType: d, Shape: shape, Data: data}
}

// pair holds the same buffer on both backends.
type pair struct {
	g, c backend.Buffer
	n    int
}

func newPair(g *Backend, c *cpu.Backend, v []float32) pair {
	p := pair{g.Alloc(len(v)), c.Alloc(len(v)), len(v)}
	g.Write(p.g, 0, v)
	c.Write(p.c, 0, v)
	return p
}

func (p pair) check(t *testing.T, g *Backend, c *cpu.Backend, what string, tol float64) {
	t.Helper()
	got, want := make([]float32, p.n), make([]float32, p.n)
	g.Read(got, p.g, 0)
	c.Read(want, p.c, 0)
	compare(t, what, got, want, tol)
}

func upload(t *testing.T, g *Backend, c *cpu.Backend, tn *model.Tensor, sparse bool) (backend.Weight, backend.Weight) {
	t.Helper()
	up := [2]func(*model.Tensor) (backend.Weight, error){g.Upload, c.Upload}
	if sparse {
		up = [2]func(*model.Tensor) (backend.Weight, error){g.UploadSparse, c.UploadSparse}
	}
	gw, err := up[0](tn)
	if err != nil {
		t.Fatal(err)
	}
	cw, err := up[1](tn)
	if err != nil {
		t.Fatal(err)
	}
	return gw, cw
}

func TestGPUElementwise(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 64, 172, 4097} {
		rows := 3
		x := newPair(g, c, randVec(r, rows*n))
		y := newPair(g, c, randVec(r, rows*n))
		g.SwiGLU(x.g, y.g, rows*n)
		c.SwiGLU(x.c, y.c, rows*n)
		x.check(t, g, c, fmt.Sprintf("swiglu n=%d", n), 1e-5)
		g.Add(x.g, y.g, rows*n-1)
		c.Add(x.c, y.c, rows*n-1)
		x.check(t, g, c, fmt.Sprintf("add n=%d", n), 1e-6)
		// The copy must be exact: start both from the GPU's x (swiglu and
		// add may differ from the CPU's in the last bit).
		gx := make([]float32, rows*n)
		g.Read(gx, x.g, 0)
		c.Write(x.c, 0, gx)
		g.Copy(y.g, 1, x.g, 0, rows*n-1)
		c.Copy(y.c, 1, x.c, 0, rows*n-1)
		y.check(t, g, c, fmt.Sprintf("copy n=%d", n), 0)

		w := randTensor(t, r, model.F32, n, 0)
		gw, cw := upload(t, g, c, w, false)
		d := newPair(g, c, make([]float32, rows*n))
		g.RMSNorm(d.g, x.g, gw, rows, 1e-5)
		c.RMSNorm(d.c, x.c, cw, rows, 1e-5)
		d.check(t, g, c, fmt.Sprintf("rmsnorm n=%d", n), 1e-4)
		g.RMSNorm(x.g, x.g, gw, rows, 1e-5) // in place
		c.RMSNorm(x.c, x.c, cw, rows, 1e-5)
		x.check(t, g, c, fmt.Sprintf("rmsnorm in place n=%d", n), 1e-4)
	}
}

func TestGPURoPE(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct{ rows, heads, hd, pos0 int }{{1, 8, 8, 0}, {5, 4, 8, 37}, {3, 32, 128, 4000}, {2, 2, 256, 100000}} {
		freqs := make([]float32, tc.hd/2)
		for i := range freqs {
			freqs[i] = float32(math.Pow(10000, -float64(2*i)/float64(tc.hd)))
		}
		x := newPair(g, c, randVec(r, tc.rows*tc.heads*tc.hd))
		g.RoPE(x.g, tc.rows, tc.heads, tc.hd, tc.pos0, freqs)
		c.RoPE(x.c, tc.rows, tc.heads, tc.hd, tc.pos0, freqs)
		x.check(t, g, c, fmt.Sprintf("rope %+v", tc), 1e-5)
	}
}

func TestGPURoPECache(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(19, 20))
	for _, tc := range []struct{ rows, heads, kv, hd, pos0 int }{
		{1, 8, 4, 8, 0}, {5, 8, 4, 8, 37}, {3, 32, 8, 128, 4000}, {1, 32, 32, 128, 511}, {2, 4, 1, 256, 100000}, {7, 6, 2, 10, 3},
	} {
		freqs := make([]float32, tc.hd/2)
		for i := range freqs {
			freqs[i] = float32(math.Pow(10000, -float64(2*i)/float64(tc.hd)))
		}
		kvDim, ctx := tc.kv*tc.hd, tc.pos0+tc.rows+2
		q := newPair(g, c, randVec(r, tc.rows*tc.heads*tc.hd))
		k := newPair(g, c, randVec(r, tc.rows*kvDim))
		v := newPair(g, c, randVec(r, tc.rows*kvDim))
		kc := newPair(g, c, randVec(r, ctx*kvDim))
		vc := newPair(g, c, randVec(r, ctx*kvDim))
		g.RoPECache(q.g, k.g, v.g, kc.g, vc.g, tc.rows, tc.heads, tc.kv, tc.hd, tc.pos0, freqs)
		c.RoPECache(q.c, k.c, v.c, kc.c, vc.c, tc.rows, tc.heads, tc.kv, tc.hd, tc.pos0, freqs)
		for _, p := range []struct {
			name string
			p    pair
		}{{"q", q}, {"k", k}, {"v", v}, {"k cache", kc}, {"v cache", vc}} {
			p.p.check(t, g, c, fmt.Sprintf("rope cache %s %+v", p.name, tc), 1e-5)
		}
	}
}

func TestGPUEmbed(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(5, 6))
	for _, d := range dtypes {
		for _, dim := range []int{64, 96, 4096} {
			tbl := randTensor(t, r, d, 37, dim)
			gw, cw := upload(t, g, c, tbl, false)
			tokens := []int{0, 36, 5, 5, 17}
			x := newPair(g, c, make([]float32, len(tokens)*dim))
			g.Embed(x.g, gw, tokens)
			c.Embed(x.c, cw, tokens)
			x.check(t, g, c, fmt.Sprintf("embed %s dim=%d", d, dim), 0)
		}
	}
}

// gemmBackends is the backends a product test runs on: one with this
// repository's GEMM kernels and, where cuBLAS loads, one with cuBLAS (only
// rows > gemvRows differ between them).
func gemmBackends(t *testing.T) []*Backend {
	bs := []*Backend{newGPUWith(t, Options{NoBLAS: true})}
	if g := newGPU(t); g.blas != nil {
		bs = append(bs, g)
	} else {
		t.Logf("no cuBLAS variant: %s", g.BLAS())
	}
	return bs
}

func TestGPUMatMul(t *testing.T) {
	defer guard(t)
	c := cpu.New(0)
	r := rand.New(rand.NewPCG(7, 8))
	shapes := [][2]int{{172, 64}, {64, 172}, {100, 96}, {512, 4096}, {33, 32}}
	for _, g := range gemmBackends(t) {
		rowSet := []int{1, 3, 8, 9, 70}
		if g.blas != nil {
			rowSet = []int{9, 70}
		}
		for _, d := range dtypes {
			for _, sh := range shapes {
				out, in := sh[0], sh[1]
				if d == model.Q8_0 && in%model.Q8Block != 0 || testing.Short() && out*in > 1<<16 {
					continue
				}
				w := randTensor(t, r, d, out, in)
				for _, sparse := range []bool{false, true} {
					gw, cw := upload(t, g, c, w, sparse)
					tol := tolerance(d)
					if sparse {
						tol = transposedTolerance(d)
					}
					for _, rows := range rowSet {
						x := newPair(g, c, randVec(r, rows*in))
						y := newPair(g, c, randVec(r, rows*out))
						if sparse { // dense site on the transposed layout
							s := backend.Budget{ID: -1, TopK: true, K: in}
							g.SparseMatMul(y.g, gw, x.g, rows, s)
							c.SparseMatMul(y.c, cw, x.c, rows, s)
						} else {
							g.MatMul(y.g, gw, x.g, rows)
							c.MatMul(y.c, cw, x.c, rows)
						}
						y.check(t, g, c, fmt.Sprintf("matmul %s %dx%d rows=%d transposed=%v (%s)", d, out, in, rows, sparse, g.BLAS()), tol)
					}
				}
			}
		}
	}
}

func TestGPUAttention(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(9, 10))
	for _, tc := range []struct{ rows, heads, kv, hd, pos0 int }{
		{1, 8, 4, 8, 0}, {1, 8, 4, 8, 40}, {7, 8, 4, 8, 3}, {1, 32, 8, 128, 1500}, {20, 4, 4, 64, 0}, {2, 4, 1, 256, 300}, {1, 2, 2, 96, 9},
		// Split over blocks (flash-decoding): rows whose last chunks differ.
		{3, 4, 2, 64, 1023}, {8, 2, 1, 32, 5000}, {1, 4, 4, 8, 40000},
	} {
		ctx := tc.pos0 + tc.rows
		q := newPair(g, c, randVec(r, tc.rows*tc.heads*tc.hd))
		kc := newPair(g, c, randVec(r, ctx*tc.kv*tc.hd))
		vc := newPair(g, c, randVec(r, ctx*tc.kv*tc.hd))
		out := newPair(g, c, make([]float32, tc.rows*tc.heads*tc.hd))
		g.Attention(out.g, q.g, kc.g, vc.g, tc.rows, tc.heads, tc.kv, tc.hd, tc.pos0)
		c.Attention(out.c, q.c, kc.c, vc.c, tc.rows, tc.heads, tc.kv, tc.hd, tc.pos0)
		out.check(t, g, c, fmt.Sprintf("attention %+v", tc), 1e-4)
	}
}

// tiedVec has many equal magnitudes (multiples of 1/4, both signs) so that
// top-k must break ties exactly as the CPU does.
func tiedVec(r *rand.Rand, n int) []float32 {
	v := randVec(r, n)
	for i := range v {
		v[i] = float32(math.Round(float64(v[i])*4)) / 4
	}
	return v
}

func TestGPUSparseMatMul(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(11, 12))
	// 8×17024: inputs beyond at_select's register path (16 × 1024).
	shapes := [][2]int{{64, 172}, {172, 64}, {4096, 4096}, {40, 33}, {8, 17024}}
	for _, d := range dtypes {
		for _, sh := range shapes {
			out, in := sh[0], sh[1]
			if d == model.Q8_0 && in%model.Q8Block != 0 || testing.Short() && out*in > 1<<18 {
				continue
			}
			gw, cw := upload(t, g, c, randTensor(t, r, d, out, in), true)
			sites := []backend.Budget{
				{ID: 0, TopK: true, K: 1},
				{ID: 1, TopK: true, K: in / 2},
				{ID: 2, TopK: true, K: in - 1},
				{ID: 3, TopK: true, K: (in + 4) / 5},
				{ID: 4, Threshold: 0.5},
				{ID: 5, Threshold: 1.25},
				{ID: maxSites + 3, TopK: true, K: in / 3},
				{ID: -1, TopK: true, K: in / 4},
				{ID: 6, TopK: true, K: in}, // dense, counted
			}
			for _, rows := range []int{1, 4, 12} {
				for _, tied := range []bool{false, true} {
					for _, s := range sites {
						v := randVec(r, rows*in)
						if tied {
							v = tiedVec(r, rows*in)
						}
						x := newPair(g, c, v)
						y := newPair(g, c, randVec(r, rows*out))
						g.SparseMatMul(y.g, gw, x.g, rows, s)
						c.SparseMatMul(y.c, cw, x.c, rows, s)
						y.check(t, g, c, fmt.Sprintf("sparse %s %dx%d rows=%d tied=%v site=%+v", d, out, in, rows, tied, s), transposedTolerance(d))
					}
				}
			}
			gk, gs := g.SparseStats()
			ck, cs := c.SparseStats()
			if fmt.Sprint(gk, gs) != fmt.Sprint(ck, cs) {
				t.Errorf("sparse stats %s %dx%d: cuda kept %v seen %v, cpu kept %v seen %v", d, out, in, gk, gs, ck, cs)
			}
		}
	}
}

// TestGPUGroups checks the fused launches (q/k/v, gate/up) against the CPU
// backend, which runs each projection alone: outputs of several widths (GQA),
// budgets of every kind in one group, decode and prefill row counts.
func TestGPUGroups(t *testing.T) {
	defer guard(t)
	r := rand.New(rand.NewPCG(17, 18))
	groups := []groupCase{
		{64, []int{64, 32, 32}}, // stories260K q/k/v
		{64, []int{172, 172}},   // stories260K gate/up
		{96, []int{40, 33, 8}},  // odd widths: scalar gather, vector gemv
		{4096, []int{4096, 1024, 1024}},
	}
	for _, g := range gemmBackends(t) {
		c := cpu.New(0) // stats are compared per GPU backend
		rowSet := []int{1, 3, 8, 12}
		if g.blas != nil {
			rowSet = []int{12}
		}
		checkGroups(t, g, c, r, groups, rowSet)
	}
}

type groupCase struct {
	in   int
	outs []int
}

func checkGroups(t *testing.T, g *Backend, c *cpu.Backend, r *rand.Rand, groups []groupCase, rowSet []int) {
	for _, d := range dtypes {
		for _, gr := range groups {
			in := gr.in
			if d == model.Q8_0 && in%model.Q8Block != 0 || testing.Short() && in > 1024 {
				continue
			}
			for _, sparse := range []bool{false, true} {
				gws, cws := make([]backend.Weight, len(gr.outs)), make([]backend.Weight, len(gr.outs))
				for i, out := range gr.outs {
					gws[i], cws[i] = upload(t, g, c, randTensor(t, r, d, out, in), sparse)
				}
				tol := tolerance(d)
				if sparse {
					tol = transposedTolerance(d)
				}
				budgets := [][]backend.Budget{{}} // dense
				if sparse {
					budgets = [][]backend.Budget{
						{{ID: 0, TopK: true, K: in / 2}, {ID: 1, TopK: true, K: in / 5}, {ID: 2, TopK: true, K: 1}},
						{{ID: 3, Threshold: 0.5}, {ID: 4, TopK: true, K: in / 3}, {ID: 5, TopK: true, K: in}},
						{{ID: -1, TopK: true, K: in}, {ID: 6, Threshold: 1.1}, {ID: -1, TopK: true, K: in}},
						{{ID: 7, Threshold: 0.3}, {ID: 8, Threshold: 0.9}, {ID: -1, Threshold: 1.5}},
					}
				}
				for _, sites := range budgets {
					for _, rows := range rowSet {
						x := newPair(g, c, tiedVec(r, rows*in))
						ys := make([]pair, len(gr.outs))
						gp, cp := make([]backend.Proj, len(gr.outs)), make([]backend.Proj, len(gr.outs))
						for i, out := range gr.outs {
							ys[i] = newPair(g, c, randVec(r, rows*out))
							add := (i+rows)%2 == 1 // some products add to what the output holds
							gp[i], cp[i] = backend.Proj{Dst: ys[i].g, W: gws[i], Add: add}, backend.Proj{Dst: ys[i].c, W: cws[i], Add: add}
							if sparse {
								gp[i].Budget, cp[i].Budget = sites[i%len(sites)], sites[i%len(sites)]
							}
						}
						if sparse {
							g.SparseMatMuls(x.g, rows, gp)
							c.SparseMatMuls(x.c, rows, cp)
						} else {
							g.MatMuls(x.g, rows, gp)
							c.MatMuls(x.c, rows, cp)
						}
						for i := range ys {
							ys[i].check(t, g, c, fmt.Sprintf("group %s in=%d outs=%v rows=%d sparse=%v: projection %d site %+v (%s)",
								d, in, gr.outs, rows, sparse, i, gp[i].Budget, g.BLAS()), tol)
						}
					}
				}
				gk, gs := g.SparseStats()
				ck, cs := c.SparseStats()
				if fmt.Sprint(gk, gs) != fmt.Sprint(ck, cs) {
					t.Errorf("group stats %s in=%d: cuda kept %v seen %v, cpu kept %v seen %v", d, in, gk, gs, ck, cs)
				}
			}
		}
	}
}

// TestGPUSiteTables runs products under two budgets tables whose sites
// share IDs, in turn, then under a table too big to sit beside them (all
// are dropped and placed anew), against the CPU: each product must read
// its own table's budget from c_sites, and a table in place is not
// uploaded again.
func TestGPUSiteTables(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(13, 14))
	gw, cw := upload(t, g, c, randTensor(t, r, model.BF16, 96, 128), true)
	a := &backend.Budgets{Sites: []backend.Budget{{ID: 0, TopK: true, K: 10}, {ID: 1, Threshold: 0.7}}}
	b := &backend.Budgets{Sites: []backend.Budget{{ID: 0, TopK: true, K: 50}, {ID: 1, Threshold: 0.2}}}
	big := &backend.Budgets{Sites: make([]backend.Budget, maxSites-2)}
	for i := range big.Sites {
		big.Sites[i] = backend.Budget{ID: i, TopK: true, K: 1 + i%100}
	}
	for n, tab := range []*backend.Budgets{a, b, a, b, big, a} {
		for i := range min(2, len(tab.Sites)) {
			x := newPair(g, c, randVec(r, 128))
			y := newPair(g, c, make([]float32, 96))
			ps := []backend.Proj{{Dst: y.g, W: gw, Budget: tab.Sites[i], Table: tab}}
			g.SparseMatMuls(x.g, 1, ps)
			ps[0].Dst, ps[0].W = y.c, cw
			c.SparseMatMuls(x.c, 1, ps)
			y.check(t, g, c, fmt.Sprintf("product %d under table %d, site %+v", i, n, tab.Sites[i]), 2e-2)
		}
		if _, ok := g.tables.base[tab]; !ok {
			t.Errorf("table %d is not placed after its use", n)
		}
	}
	if _, ok := g.tables.base[b]; ok {
		t.Error("table b is still placed after the big table took the slots")
	}
}

// TestGPUPick picks from several rows at once, greedy and sampled, on
// vocabulary sizes from 1 to Llama 3's: each greedy row must give
// sample.Greedy's index (a unique maximum, then ties below it), each
// sampled row an index whose CDF interval holds u (to 1e-4).
func TestGPUPick(t *testing.T) {
	defer guard(t)
	g := newGPU(t)
	r := rand.New(rand.NewPCG(15, 16))
	const temp = 0.8
	us := []float32{0, 0, 0.25, 0.5, 0.999, 0}
	temps := []float32{0, temp, temp, temp, temp, 0}
	for _, n := range []int{1, 172, 512, 32000, 128256} {
		rows := len(us)
		v := make([]float32, rows*n)
		for i := range rows {
			row := v[i*n : (i+1)*n]
			copy(row, randVec(r, n))
			row[(i+1)*n/7] = 9 // a unique maximum, then ties below it
			if n > 2 {
				row[n/2], row[n-1] = 9, 9
			}
		}
		b := g.Alloc(rows * n)
		g.Write(b, 0, v)
		got := g.Pick(b, rows, n, temps, us)
		for i, id := range got {
			row := v[i*n : (i+1)*n]
			if temps[i] == 0 {
				if want := sample.Greedy(row); id != want {
					t.Errorf("argmax n=%d row %d: %d, want %d", n, i, id, want)
				}
				continue
			}
			lo, hi := cdfInterval(row, temp, id)
			if float64(us[i]) < lo-1e-4 || float64(us[i]) > hi+1e-4 {
				t.Errorf("sample n=%d row %d u=%g: index %d covers [%g, %g)", n, i, us[i], id, lo, hi)
			}
		}
	}
}

// cdfInterval is the range of u that inverse-CDF sampling maps to index i.
func cdfInterval(v []float32, temp float64, i int) (lo, hi float64) {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, float64(x))
	}
	var sum, before float64
	for j, x := range v {
		p := math.Exp((float64(x) - m) / temp)
		if j < i {
			before += p
		}
		sum += p
	}
	p := math.Exp((float64(v[i]) - m) / temp)
	return before / sum, (before + p) / sum
}

// TestGPUDescribe checks that the backend says what runs its GEMMs.
func TestGPUDescribe(t *testing.T) {
	own := newGPUWith(t, Options{NoBLAS: true})
	if d := own.Describe(); !strings.HasSuffix(d, "GEMM own kernels") || own.BLAS() != "own kernels: off (NoBLAS)" {
		t.Errorf("NoBLAS: Describe %q, BLAS %q", d, own.BLAS())
	}
	g := newGPU(t)
	t.Logf("%s; %s", g.Describe(), g.BLAS())
	if g.blas != nil && !strings.Contains(g.Describe(), "GEMM cuBLAS ") {
		t.Errorf("with cuBLAS: Describe %q", g.Describe())
	}
	if d, err := Available(Options{NoBLAS: true}); err != nil || d != own.Describe() {
		t.Errorf("Available = %q, %v; want %q", d, err, own.Describe())
	}
}

// TestGPUNormThenGroup runs RMSNorm and then a sparse group that reads its
// output, as the engine does before q/k/v and gate/up (and SwiGLU before
// the down projection, below): for threshold sites
// and dense sites on the transposed layout, the group's outputs are zeroed
// by the norm's own launch (at_rmsnorm+zero, no at_zero), and an output
// that accumulates (Proj.Add) must keep what it held. Each output and the
// norm's result are checked against the CPU backend; a norm followed by
// something else (a Read, another norm, a top-k group) is queued as is.
func TestGPUNormThenGroup(t *testing.T) {
	defer guard(t)
	g, c := newGPU(t), cpu.New(0)
	r := rand.New(rand.NewPCG(23, 24))
	const in = 96
	outs := []int{40, 33, 8}
	gw, cw := upload(t, g, c, randTensor(t, r, model.F32, in, 0), false)
	ws := make([][2]backend.Weight, len(outs))
	for i, out := range outs {
		ws[i][0], ws[i][1] = upload(t, g, c, randTensor(t, r, model.BF16, out, in), true)
	}
	for _, sites := range [][]backend.Budget{
		{{ID: 0, Threshold: 0.5}, {ID: 1, Threshold: 0.9}, {ID: 2, Threshold: 0.2}},
		{{ID: -1, TopK: true, K: in}, {ID: -1, TopK: true, K: in}, {ID: -1, TopK: true, K: in}}, // dense
		{{ID: 3, TopK: true, K: in / 3}, {ID: 4, TopK: true, K: in / 2}, {ID: 5, TopK: true, K: 7}},
	} {
		for _, rows := range []int{1, 3} {
			x := newPair(g, c, randVec(r, rows*in))
			xn := newPair(g, c, make([]float32, rows*in))
			ys := make([]pair, len(outs))
			gp, cp := make([]backend.Proj, len(outs)), make([]backend.Proj, len(outs))
			for i, out := range outs {
				ys[i] = newPair(g, c, randVec(r, rows*out)) // what an accumulating output holds
				add := i == 1
				gp[i] = backend.Proj{Dst: ys[i].g, W: ws[i][0], Add: add, Budget: sites[i]}
				cp[i] = backend.Proj{Dst: ys[i].c, W: ws[i][1], Add: add, Budget: sites[i]}
			}
			// Nothing between the norm and the group, as in the engine; then
			// once more with the norm in place (dst = x).
			for _, inPlace := range []bool{false, true} {
				src := x
				if inPlace {
					src = xn
				}
				g.RMSNorm(xn.g, src.g, gw, rows, 1e-5)
				c.RMSNorm(xn.c, src.c, cw, rows, 1e-5)
				g.SparseMatMuls(xn.g, rows, gp)
				c.SparseMatMuls(xn.c, rows, cp)
				for i := range ys {
					ys[i].check(t, g, c, fmt.Sprintf("norm then group, rows=%d in place %v, site %+v, projection %d", rows, inPlace, sites[i], i), 2e-2)
				}
				xn.check(t, g, c, fmt.Sprintf("norm then group, rows=%d in place %v: the norm", rows, inPlace), 1e-4)
			}
		}
	}
	// SwiGLU and then the down projection, which reads its result: a top-k
	// site does the SwiGLU in at_select (at_select+swiglu), which must
	// still leave silu(gate) * up in gate; other sites run it as is.
	const hidden = 172
	dw, dc := upload(t, g, c, randTensor(t, r, model.BF16, in, hidden), true)
	for _, site := range []backend.Budget{{ID: 6, TopK: true, K: hidden / 5}, {ID: 7, Threshold: 0.3}, {ID: -1, TopK: true, K: hidden}} {
		for _, rows := range []int{1, 3} {
			gate, up := newPair(g, c, randVec(r, rows*hidden)), newPair(g, c, randVec(r, rows*hidden))
			y := newPair(g, c, randVec(r, rows*in)) // the residual stream the product adds to
			g.SwiGLU(gate.g, up.g, rows*hidden)
			c.SwiGLU(gate.c, up.c, rows*hidden)
			g.SparseMatMuls(gate.g, rows, []backend.Proj{{Dst: y.g, W: dw, Add: true, Budget: site}})
			c.SparseMatMuls(gate.c, rows, []backend.Proj{{Dst: y.c, W: dc, Add: true, Budget: site}})
			y.check(t, g, c, fmt.Sprintf("swiglu then down, rows=%d site %+v", rows, site), 2e-2)
			gate.check(t, g, c, fmt.Sprintf("swiglu then down, rows=%d site %+v: the swiglu", rows, site), 1e-5)
		}
	}
}
