package gather

import (
	"math"
	"slices"
	"sync"
)

// TopK appends to idx the indices of the k entries of x of largest |x|,
// in ascending order, and returns the extended slice. Among equal
// magnitudes the lower index wins, so exactly min(k, len(x)) indices are
// appended (none for k ≤ 0). A NaN counts as larger than any number.
//
// The k-th largest magnitude is found by a radix select on the bits of |x|
// (non-negative floats order as their bit patterns): a histogram of bits
// 30–20 over all of x, then of bits 19–10 and 9–0 over the shrinking set
// of candidates that share the prefix found so far, then one pass that
// collects. The loops are branch-free where the data would make branches
// unpredictable. Scratch space comes from a pool, so nothing is allocated
// when idx has room for k more.
func TopK(idx []int32, x []float32, k int) []int32 { return topK(idx, x, nil, k) }

// TopKScaled is TopK of the scores |x[j]|·scale[j] (len(scale) = len(x),
// scale ≥ 0): the weight-informed selection, with the scale folded into
// the first pass over x.
func TopKScaled(idx []int32, x, scale []float32, k int) []int32 {
	if len(scale) != len(x) {
		panic("gather: TopKScaled: scale and x differ in length")
	}
	return topK(idx, x, scale, k)
}

// topK is TopK of |x|, or of |x|·scale when scale is not nil.
func topK(idx []int32, x, scale []float32, k int) []int32 {
	n := len(x)
	switch {
	case k <= 0:
		return idx
	case k >= n:
		idx = slices.Grow(idx, n)
		for j := range n {
			idx = append(idx, int32(j))
		}
		return idx
	}
	sp := scratch.Get().(*[]uint32)
	defer scratch.Put(sp)
	if cap(*sp) < 2*n {
		*sp = make([]uint32, 2*n)
	}
	mags, cand := (*sp)[:n], (*sp)[n:2*n]
	var hist [1 << 11]int32
	if scale == nil {
		for j, v := range x {
			u := mag(v)
			mags[j] = u
			hist[u>>20]++
		}
	} else {
		for j, v := range x {
			u := mag(v * scale[j])
			mags[j] = u
			hist[u>>20]++
		}
	}
	b, above := pick(hist[:], k)
	kth := b << 20
	if need := k - above; hist[b] > int32(need) { // the cut falls inside the bin: refine it
		// Candidates share bits 30–20 with the cut; then bits 30–10.
		c := compact(cand, mags, 20, b)
		clear(hist[:1<<10])
		for _, u := range c {
			hist[u>>10&1023]++
		}
		b2, a := pick(hist[:1<<10], need)
		above += a
		c = compact(c, c, 10, b<<10|b2)
		clear(hist[:1<<10])
		for _, u := range c {
			hist[u&1023]++
		}
		b3, a := pick(hist[:1<<10], k-above)
		above += a
		kth = (b<<10|b2)<<10 | b3
		return collect(idx, mags, kth, k, k-above)
	}
	// The whole bin is kept: everything from its smallest possible value up.
	return collect(idx, mags, kth, k, n)
}

// scratch holds *[]uint32 work space for TopK.
var scratch = sync.Pool{New: func() any { return new([]uint32) }}

// mag is the bit pattern of |v|.
func mag(v float32) uint32 { return math.Float32bits(v) &^ (1 << 31) }

// b2i is 1 for true; the compiler makes it a flag move, not a branch.
func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compact copies to dst, in order, the values of src whose bits above
// shift equal prefix, and returns them. dst may be src.
func compact(dst, src []uint32, shift uint, prefix uint32) []uint32 {
	m := 0
	for _, u := range src {
		dst[m] = u
		m += b2i(u>>shift == prefix)
	}
	return dst[:m]
}

// pick finds the bin that holds the k-th largest of the values counted in
// hist (bins in increasing order of value), and how many lie in higher bins.
func pick(hist []int32, k int) (bin uint32, above int) {
	for b := len(hist) - 1; b > 0; b-- {
		if above+int(hist[b]) >= k {
			return uint32(b), above
		}
		above += int(hist[b])
	}
	return 0, above
}

// collect appends, in order, the k indices whose magnitude is above kth,
// or equal to it and among the first ties of those.
func collect(idx []int32, mags []uint32, kth uint32, k, ties int) []int32 {
	idx = slices.Grow(idx, len(mags))
	out := idx[len(idx) : len(idx)+len(mags)]
	m := 0
	for j, u := range mags {
		out[m] = int32(j)
		eq := b2i(u == kth)
		m += b2i(u > kth) | eq&b2i(ties > 0)
		ties -= eq
	}
	return idx[:len(idx)+k]
}

// Threshold appends to idx, in ascending order, the indices j with
// |x[j]| > t, and returns the extended slice. No allocation when idx has
// room for len(x) more.
func Threshold(idx []int32, x []float32, t float32) []int32 {
	idx = slices.Grow(idx, len(x))
	out := idx[len(idx) : len(idx)+len(x)]
	m := 0
	for j, v := range x {
		out[m] = int32(j) // written always, kept only if it passes: no branch to mispredict
		if abs(v) > t {
			m++
		}
	}
	return idx[:len(idx)+m]
}

// ThresholdScaled is Threshold of the scores |x[j]|·scale[j]
// (len(scale) = len(x)).
func ThresholdScaled(idx []int32, x, scale []float32, t float32) []int32 {
	if len(scale) != len(x) {
		panic("gather: ThresholdScaled: scale and x differ in length")
	}
	idx = slices.Grow(idx, len(x))
	out := idx[len(idx) : len(idx)+len(x)]
	m := 0
	for j, v := range x {
		out[m] = int32(j)
		if abs(v*scale[j]) > t {
			m++
		}
	}
	return idx[:len(idx)+m]
}

func abs(v float32) float32 { return math.Float32frombits(mag(v)) }
