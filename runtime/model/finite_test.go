package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// Every 16-bit pattern is classified as its float32 widening is, in
// each of the four lanes of a word, for F16 and BF16.
func TestFiniteLanes16(t *testing.T) {
	for _, d := range []DType{F16, BF16} {
		conv := F16ToF32
		if d == BF16 {
			conv = BF16ToF32
		}
		for h := range 1 << 16 {
			v := float64(conv(uint16(h)))
			want := !math.IsNaN(v) && !math.IsInf(v, 0)
			for lane := range 4 {
				b := make([]byte, 8)
				binary.LittleEndian.PutUint16(b[2*lane:], uint16(h))
				if got := finite(b, d); got != want {
					t.Fatalf("%s %#04x in lane %d: finite %v, want %v", d, h, lane, got, want)
				}
			}
		}
	}
}

func TestFiniteLanes32(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	bits := []uint32{0, 0x80000000, 1, 0x007fffff, 0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000, 0x7f800001, 0x7fc00000, 0xffffffff}
	for range 100000 {
		bits = append(bits, r.Uint32())
	}
	for _, w := range bits {
		v := float64(math.Float32frombits(w))
		want := !math.IsNaN(v) && !math.IsInf(v, 0)
		for lane := range 2 {
			b := make([]byte, 8)
			binary.LittleEndian.PutUint32(b[4*lane:], w)
			if got := finite(b, F32); got != want {
				t.Fatalf("%#08x in lane %d: finite %v, want %v", w, lane, got, want)
			}
		}
	}
}

// A planted NaN or infinity is found at its index, in any dtype, in a
// tensor large enough to span several chunks, at odd lengths too.
func TestCheckFinite(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, d := range []DType{F32, F16, BF16, Q8_0} {
		for _, n := range []int{32, 96, 3 * finiteChunk / 2 / 32 * 32, finiteChunk/2 + 32} {
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(r.NormFloat64()) * 1e3
			}
			m := New(Config{})
			m.Source = "test"
			for i, name := range []string{"a", "b"} {
				data, err := Encode(vals, d)
				if err != nil {
					t.Fatal(err)
				}
				m.Add(&Tensor{Name: fmt.Sprint(name, i), DType: d, Shape: []int{n}, Data: data})
			}
			if err := m.CheckFinite(); err != nil {
				t.Fatalf("%s × %d, finite: %v", d, n, err)
			}
			for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
				at := r.IntN(n)
				if r.IntN(4) == 0 {
					at = n - 1
				}
				planted := append([]float32(nil), vals...)
				planted[at] = bad
				data, err := Encode(planted, d)
				if err != nil {
					t.Fatal(err)
				}
				m.Tensors["b1"].Data = data
				want := at
				if d == Q8_0 {
					want = at / Q8Block * Q8Block // the block's scale goes bad
				}
				err = m.CheckFinite()
				if err == nil || !strings.Contains(err.Error(), fmt.Sprintf(`tensor "b1" (%s [%d]): element %d is `, d, n, want)) {
					t.Fatalf("%s × %d, %g at %d: %v", d, n, bad, at, err)
				}
			}
		}
	}
}

func BenchmarkCheckFinite(b *testing.B) {
	m := New(Config{})
	for i := range 16 {
		m.Add(&Tensor{Name: fmt.Sprint("w", i), DType: F16, Shape: []int{1 << 23}, Data: make([]byte, 1<<24)})
	}
	b.SetBytes(int64(16 << 24))
	for b.Loop() {
		if err := m.CheckFinite(); err != nil {
			b.Fatal(err)
		}
	}
}
