package gather

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/internal/cputest"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// randMatrix returns an out×in weight of type d built from file bytes that
// start at byte offset off of their allocation, and T as the kernels see
// it, decoded to float32 (in×out).
func randMatrix(t *testing.T, rng *rand.Rand, d model.DType, out, in, off int) (*Matrix, []float32) {
	t.Helper()
	enc := cputest.RandWeights(t, rng, d, out*in)
	if d == model.Q8_0 && in%model.Q8Block != 0 {
		// No Q8_0 file holds such rows, but T (blocks along out) can:
		// take src as T directly, so the kernels see odd In too.
		m := &Matrix{DType: d, In: in, Out: out, t: enc, rowBytes: d.Bytes(out)}
		return m, decodeT(t, m)
	}
	buf := make([]byte, off+len(enc))
	copy(buf[off:], enc)
	m, err := NewMatrix(d, out, in, buf[off:])
	if err != nil {
		t.Fatal(err)
	}
	return m, decodeT(t, m)
}

// decodeT widens the stored T to float32.
func decodeT(t *testing.T, m *Matrix) []float32 {
	t.Helper()
	tf := make([]float32, m.In*m.Out)
	for j := range m.In {
		if err := model.Decode(tf[j*m.Out:(j+1)*m.Out], m.t[j*m.rowBytes:(j+1)*m.rowBytes], m.DType); err != nil {
			t.Fatal(err)
		}
	}
	return tf
}

// reference is Σ_{j ∈ idx} x[r*in+j]·T[j, o] in float64 for r < n, with
// Σ|x T| for each output to scale the tolerance: float32 sums in another
// order differ by about eps·Σ|x T|.
func reference(tf []float32, in, out int, x []float32, n int, idx []int32) (ref, abs []float64) {
	ref = make([]float64, n*out)
	abs = make([]float64, n*out)
	for r := range n {
		for _, j := range idx {
			a := float64(x[r*in+int(j)])
			for o := range out {
				p := a * float64(tf[int(j)*out+o])
				ref[r*out+o] += p
				abs[r*out+o] += math.Abs(p)
			}
		}
	}
	return ref, abs
}

func allRows(in int) []int32 {
	idx := make([]int32, in)
	for j := range idx {
		idx[j] = int32(j)
	}
	return idx
}

// idxCases are the kept sets Gather is checked with.
func idxCases(rng *rand.Rand, in int) map[string][]int32 {
	var some []int32
	for j := range in {
		if rng.Float64() < 0.3 {
			some = append(some, int32(j))
		}
	}
	return map[string][]int32{"none": nil, "one": {int32(rng.IntN(in))}, "all": allRows(in), "random": some}
}

// shapes are (out, in): odd sizes; two large enough to be split between
// threads by kept rows (one wide, one of many rows, whose kept rows run
// through the prefetches of kernels.c); one whose single chunk crosses a
// column block (CB in kernels.c).
func shapes(d model.DType) [][2]int {
	outs := []int{1, 7, 32, 64, 172}
	if d == model.Q8_0 {
		outs = []int{32, 64, 96}
	}
	var s [][2]int
	for _, out := range outs {
		for _, in := range []int{1, 3, 64, 172} {
			s = append(s, [2]int{out, in})
		}
	}
	return append(s, [2]int{2048, 96}, [2]int{96, 1024}, [2]int{16448, 3})
}

func TestGather(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	for _, isa := range cputest.ISAs(t, ISA, setISA) {
		setISA(isa)
		for _, d := range cputest.DTypes {
			for _, s := range shapes(d) {
				out, in := s[0], s[1]
				m, tf := randMatrix(t, rng, d, out, in, rng.IntN(3))
				x := cputest.RandVec(rng, in)
				for name, idx := range idxCases(rng, in) {
					ref, abs := reference(tf, in, out, x, 1, idx)
					for _, th := range []int{1, 2} {
						dst := cputest.NaNDst(out)
						cputest.WithThreads(th, func() { Gather(dst[:out], m, x, idx) })
						t.Run(fmt.Sprintf("%s/%s/%dx%d/%s/threads=%d", isa, d, out, in, name, th), func(t *testing.T) {
							cputest.CheckClose(t, dst, ref, abs)
						})
					}
				}
			}
		}
	}
}

func TestDense(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	for _, isa := range cputest.ISAs(t, ISA, setISA) {
		setISA(isa)
		for _, d := range cputest.DTypes {
			for _, s := range append(shapes(d), [2]int{96, 300}) { // 300 crosses a block of rows
				out, in := s[0], s[1]
				m, tf := randMatrix(t, rng, d, out, in, 1)
				for _, n := range []int{1, 2, 5, 17} {
					x := cputest.RandVec(rng, n*in)
					ref, abs := reference(tf, in, out, x, n, allRows(in))
					for _, th := range []int{1, 2} {
						dst := cputest.NaNDst(n * out)
						cputest.WithThreads(th, func() { Dense(dst[:n*out], m, x, n) })
						t.Run(fmt.Sprintf("%s/%s/%dx%d/n=%d/threads=%d", isa, d, out, in, n, th), func(t *testing.T) {
							cputest.CheckClose(t, dst, ref, abs)
						})
					}
				}
			}
		}
	}
}

// NewMatrix stores the file's weights transposed: exactly for F32, F16
// and BF16, within one more rounding step for Q8_0.
func TestNewMatrixTransposes(t *testing.T) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), 3))
	const out, in = 96, 70 * 32
	for _, d := range cputest.DTypes {
		src := cputest.RandVec(rng, out*in)
		enc, err := model.Encode(src, d)
		if err != nil {
			t.Fatal(err)
		}
		w := make([]float32, out*in)
		if err := model.Decode(w, enc, d); err != nil {
			t.Fatal(err)
		}
		m, err := NewMatrix(d, out, in, enc)
		if err != nil {
			t.Fatal(err)
		}
		if m.In != in || m.Out != out || m.DType != d || m.Bytes() != d.Bytes(out*in) {
			t.Fatalf("%s: got %s %d×%d of %d bytes", d, m.DType, m.Out, m.In, m.Bytes())
		}
		tf := decodeT(t, m)
		for j := range in {
			for o := range out {
				got, want := tf[j*out+o], w[o*in+j]
				if d != model.Q8_0 {
					if got != want {
						t.Fatalf("%s: T[%d,%d] = %g, want %g", d, j, o, got, want)
					}
					continue
				}
				// Half a step of the new block's scale amax/127, plus the
				// f16 rounding of that scale over 127 steps.
				var amax float64
				for oo := o / 32 * 32; oo < o/32*32+32; oo++ {
					amax = max(amax, math.Abs(float64(w[oo*in+j])))
				}
				if diff := math.Abs(float64(got - want)); diff > amax/254*1.001+amax/1024 {
					t.Fatalf("Q8_0: T[%d,%d] = %g, want %g (block amax %g)", j, o, got, want, amax)
				}
			}
		}
	}
}

func TestNewMatrixErrors(t *testing.T) {
	for _, tc := range []struct {
		d       model.DType
		out, in int
		bytes   int
	}{
		{model.F32, 2, 3, 23},
		{model.F32, 2, 3, 25},
		{model.F16, 2, 3, 11},
		{model.BF16, 2, 3, 13},
		{model.Q8_0, 32, 33, 32 * 34},   // inputs not whole blocks in the file
		{model.Q8_0, 31, 32, 31 * 34},   // outputs not whole blocks in T
		{model.Q8_0, 33, 64, 33 * 68},   // outputs not whole blocks in T
		{model.Q8_0, 32, 32, 32*34 - 1}, // short
		{model.F32, 0, 3, 0},
		{model.F32, 3, 0, 0},
		{model.F32, -1, 3, 0},
		{model.DType(9), 1, 1, 4},
	} {
		if _, err := NewMatrix(tc.d, tc.out, tc.in, make([]byte, tc.bytes)); err == nil {
			t.Errorf("NewMatrix(%s, %d, %d, %d bytes) did not fail", tc.d, tc.out, tc.in, tc.bytes)
		}
	}
	if _, err := NewMatrix(model.Q8_0, 64, 32, make([]byte, 64*34)); err != nil {
		t.Errorf("valid Q8_0 matrix: %v", err)
	}
}

// refTopK is the sort-based definition: stable by decreasing |x|, first k,
// then ascending.
func refTopK(x []float32, k int) []int32 {
	idx := allRows(len(x))
	sort.SliceStable(idx, func(a, b int) bool { return abs(x[idx[a]]) > abs(x[idx[b]]) })
	idx = idx[:max(0, min(k, len(x)))]
	slices.Sort(idx)
	return idx
}

// topKInputs are vectors rich in ties: few distinct magnitudes with both
// signs and zeros of both signs, plain normals, and values a few ulps
// apart, which only the last radix level tells apart.
func topKInputs(rng *rand.Rand, n int) map[string][]float32 {
	levels := []float32{0, float32(math.Copysign(0, -1)), 0.5, -0.5, 1, -1, 2, -2, 1e-30, -3e38}
	ties, ulps := make([]float32, n), make([]float32, n)
	for i := range n {
		ties[i] = levels[rng.IntN(len(levels))]
		u := math.Float32bits(1.5) + uint32(rng.IntN(40))
		ulps[i] = math.Float32frombits(u | uint32(rng.IntN(2))<<31)
	}
	return map[string][]float32{"ties": ties, "normal": cputest.RandVec(rng, n), "ulps": ulps}
}

func TestTopK(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 4))
	for _, n := range []int{1, 2, 5, 64, 173, 4096, 11008} {
		for name, x := range topKInputs(rng, n) {
			for _, k := range []int{-1, 0, 1, 2, n / 3, n / 2, n - 1, n, n + 3, 1 + rng.IntN(n)} {
				want := refTopK(x, k)
				prefix := []int32{-7, -8}
				got := TopK(slices.Clip(prefix), x, k)
				if !slices.Equal(got[:2], prefix) || !slices.Equal(got[2:], want) {
					t.Fatalf("%s n=%d k=%d: got %v, want %v", name, n, k, got[2:], want)
				}
			}
		}
	}
}

// scaleInputs are column-norm-like scales: random positive, with ties
// (a few levels, zeros included) and all ones.
func scaleInputs(rng *rand.Rand, n int) map[string][]float32 {
	pos, ties, ones := make([]float32, n), make([]float32, n), make([]float32, n)
	levels := []float32{0, 0.25, 1, 4}
	for i := range n {
		pos[i] = float32(0.1 + 3*rng.Float64())
		ties[i] = levels[rng.IntN(len(levels))]
		ones[i] = 1
	}
	return map[string][]float32{"positive": pos, "ties": ties, "ones": ones}
}

// scaled is the score vector |x_j|·scale_j, multiplied in float32 as the
// kernels do.
func scaled(x, scale []float32) []float32 {
	out := make([]float32, len(x))
	for j := range x {
		out[j] = abs(x[j] * scale[j])
	}
	return out
}

// TopKScaled is the sort-based top-k of the scores |x|·scale, exactly
// (ties toward the lower index); with scale all ones it is TopK.
func TestTopKScaled(t *testing.T) {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 6))
	for _, n := range []int{1, 5, 64, 173, 4096} {
		for xname, x := range topKInputs(rng, n) {
			for sname, sc := range scaleInputs(rng, n) {
				for _, k := range []int{0, 1, n / 3, n / 2, n - 1, n, 1 + rng.IntN(n)} {
					want := refTopK(scaled(x, sc), k)
					got := TopKScaled([]int32{-7}, x, sc, k)
					if got[0] != -7 || !slices.Equal(got[1:], want) {
						t.Fatalf("%s×%s n=%d k=%d: got %v, want %v", xname, sname, n, k, got[1:], want)
					}
				}
			}
		}
	}
}

// ThresholdScaled keeps exactly the j with |x_j|·scale_j > t.
func TestThresholdScaled(t *testing.T) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), 7))
	for _, n := range []int{0, 1, 7, 4096} {
		for xname, x := range topKInputs(rng, n) {
			for sname, sc := range scaleInputs(rng, n) {
				for _, th := range []float32{0, 0.5, 1, 3} {
					var want []int32
					for j, v := range scaled(x, sc) {
						if v > th {
							want = append(want, int32(j))
						}
					}
					got := ThresholdScaled([]int32{-7}, x, sc, th)
					if got[0] != -7 || !slices.Equal(got[1:], want) {
						t.Fatalf("%s×%s n=%d t=%g: got %v, want %v", xname, sname, n, th, got[1:], want)
					}
				}
			}
		}
	}
}

func TestThreshold(t *testing.T) {
	rng := rand.New(rand.NewPCG(rand.Uint64(), 5))
	for _, n := range []int{0, 1, 7, 4096} {
		for name, x := range topKInputs(rng, n) {
			for _, th := range []float32{-1, 0, 0.5, 1, 1.5, 3} {
				var want []int32
				for j, v := range x {
					if abs(v) > th {
						want = append(want, int32(j))
					}
				}
				got := Threshold([]int32{-7}, x, th)
				if got[0] != -7 || !slices.Equal(got[1:], want) {
					t.Fatalf("%s n=%d t=%g: got %v, want %v", name, n, th, got[1:], want)
				}
			}
		}
	}
}

// Selection and the product allocate nothing once idx has room, so the
// decode loop does not feed the garbage collector.
func TestNoAllocs(t *testing.T) {
	if cputest.Race {
		t.Skip("sync.Pool drops items under the race detector")
	}
	rng := rand.New(rand.NewPCG(1, 6))
	m, _ := randMatrix(t, rng, model.BF16, 1024, 512, 0)
	x, dst := cputest.RandVec(rng, 512), make([]float32, 1024)
	idx := make([]int32, 0, 512)
	cputest.WithThreads(2, func() {
		allocs := testing.AllocsPerRun(50, func() {
			idx = TopK(idx[:0], x, 100)
			Gather(dst, m, x, idx)
			idx = Threshold(idx[:0], x, 1)
			Gather(dst, m, x, idx)
			idx = TopKScaled(idx[:0], x, x, 100)
			idx = ThresholdScaled(idx[:0], x, x, 1)
			Dense(dst, m, x, 1)
		})
		if allocs != 0 {
			t.Fatalf("%g allocations a call", allocs)
		}
	})
}

// Products from several goroutines at once share the pool safely and give
// the same bits as one alone.
func TestConcurrent(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 7))
	m, _ := randMatrix(t, rng, model.F16, 2048, 256, 0)
	x := cputest.RandVec(rng, 256)
	idx := TopK(nil, x, 77)
	want := make([]float32, 2048)
	Gather(want, m, x, idx)
	var wg sync.WaitGroup
	bad := make([]bool, 4)
	for g := range bad {
		wg.Add(1)
		go func() {
			defer wg.Done()
			dst := make([]float32, 2048)
			for range 50 {
				Gather(dst, m, x, idx)
				bad[g] = bad[g] || !slices.Equal(dst, want)
			}
		}()
	}
	wg.Wait()
	if slices.Contains(bad, true) {
		t.Fatalf("concurrent results differ: %v", bad)
	}
}

func TestGatherPanicsOnBadIndex(t *testing.T) {
	m, _ := randMatrix(t, rand.New(rand.NewPCG(3, 8)), model.F32, 8, 4, 0)
	defer func() {
		if recover() == nil {
			t.Fatal("index 4 of 4 inputs accepted")
		}
	}()
	Gather(make([]float32, 8), m, make([]float32, 4), []int32{1, 4})
}
