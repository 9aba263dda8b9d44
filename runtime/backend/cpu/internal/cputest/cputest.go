// Package cputest holds the test helpers that the CPU kernel packages
// (matmul, gather, pool) share: kernel-set selection, thread counts,
// random inputs with a reference check, and the benchmarks' weight buffer.
package cputest

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"
	"unsafe"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/pool"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// DTypes are the weight types every CPU kernel takes.
var DTypes = []model.DType{model.F32, model.F16, model.BF16, model.Q8_0}

// ISAs lists the kernel sets this build and CPU can run, so that the SIMD
// one and the portable one both get checked on a machine that has SIMD.
// isa and setISA are the package's own; the default set is restored when
// t ends.
func ISAs(t *testing.T, isa func() string, setISA func(string) string) []string {
	t.Helper()
	def := isa()
	t.Cleanup(func() { setISA(def) })
	var out []string
	for _, name := range []string{"avx2", "scalar", "go"} {
		if setISA(name) == name {
			out = append(out, name)
		}
	}
	setISA(def)
	return out
}

// WithThreads runs f with pool.SetThreads(n), restoring the old count after.
func WithThreads(n int, f func()) {
	old := pool.Threads()
	pool.SetThreads(n)
	defer pool.SetThreads(old)
	f()
}

// RandVec returns n standard normal values.
func RandVec(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// RandWeights returns n standard normal values encoded as type d.
func RandWeights(t testing.TB, rng *rand.Rand, d model.DType, n int) []byte {
	t.Helper()
	enc, err := model.Encode(RandVec(rng, n), d)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// NaNDst is n values of NaN plus a guard of five more, for CheckClose.
func NaNDst(n int) []float32 {
	d := make([]float32, n+5)
	for i := range d {
		d[i] = float32(math.NaN())
	}
	return d
}

// CheckClose requires |got-ref| <= 1e-5·Σ|w x| + 1e-6 for every output,
// abs holding Σ|w x| (float32 sums in another order differ by about
// eps·Σ|w x|), and that whatever got holds past ref is still NaN.
func CheckClose(t *testing.T, got []float32, ref, abs []float64) {
	t.Helper()
	for k := range ref {
		if d := math.Abs(float64(got[k]) - ref[k]); !(d <= 1e-5*abs[k]+1e-6) {
			t.Fatalf("output %d: got %g, want %g (Σ|wx| = %g)", k, got[k], ref[k], abs[k])
		}
	}
	for _, v := range got[len(ref):] {
		if !math.IsNaN(float64(v)) {
			t.Fatal("wrote past dst")
		}
	}
}

// WeightBytes is the size of WeightBuffer: far beyond any last-level
// cache, so that benchmarks which move to a new window of it on every call
// read their weights from memory, as decode does.
const WeightBytes = 512 << 20

var (
	weightOnce sync.Once
	weightBuf  []byte
)

// WeightBuffer returns a shared buffer of WeightBytes bytes, starting on a
// 64-byte boundary and filled with bytes 0x30-0x3f: read as f32, f16, bf16
// or Q8_0 every value is a normal number, so no subnormal or NaN slows the
// arithmetic.
func WeightBuffer() []byte {
	weightOnce.Do(func() {
		buf := make([]byte, WeightBytes+63)
		off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(buf))) & 63)
		weightBuf = buf[off : off+WeightBytes : off+WeightBytes]
		for i := range weightBuf {
			weightBuf[i] = byte(0x30 + i*7%16)
		}
	})
	return weightBuf
}
