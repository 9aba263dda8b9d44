package gather

import (
	"encoding/binary"
	"sync"
	"unsafe"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// alignedBytes returns n zero bytes starting on a 64-byte boundary, so
// that rows whose size is a multiple of 64 start on cache lines.
func alignedBytes(n int) []byte {
	buf := make([]byte, n+63)
	off := int(-uintptr(unsafe.Pointer(unsafe.SliceData(buf))) & 63)
	return buf[off : off+n : off+n]
}

// bands runs fn(b) for every b < n on Threads() goroutines, each taking
// every Threads()-th band with its own fn from newFn (for scratch space).
// Matrices are built once, so plain goroutines do.
func bands(n int, newFn func() func(b int)) {
	th := min(Threads(), n)
	var wg sync.WaitGroup
	for g := range th {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn := newFn()
			for b := g; b < n; b += th {
				fn(b)
			}
		}()
	}
	wg.Wait()
}

// tile is the side of the square blocks transpose copies: 64 rows of 64
// two- or four-byte elements, read and written within L1.
const tile = 64

// transpose copies src, out×in elements of es bytes, into m.t as in×out.
// Each goroutine writes its own bands of rows of T.
func (m *Matrix) transpose(src []byte, es int) {
	out, in := m.Out, m.In
	bands((in+tile-1)/tile, func() func(int) {
		return func(b int) {
			i0, i1 := b*tile, min(b*tile+tile, in)
			for o0 := 0; o0 < out; o0 += tile {
				o1 := min(o0+tile, out)
				for o := o0; o < o1; o++ {
					s := src[(o*in+i0)*es : (o*in+i1)*es]
					if es == 2 {
						for i := range i1 - i0 {
							binary.LittleEndian.PutUint16(m.t[((i0+i)*out+o)*2:], binary.LittleEndian.Uint16(s[2*i:]))
						}
					} else {
						for i := range i1 - i0 {
							binary.LittleEndian.PutUint32(m.t[((i0+i)*out+o)*4:], binary.LittleEndian.Uint32(s[4*i:]))
						}
					}
				}
			}
		}
	})
}

// requantize builds Q8_0 rows of T from src, Q8_0 blocks along in: for
// each band of 32 inputs (one source block a weight row) it decodes the
// band to float32, transposed, and encodes each of its 32 rows anew.
// NewMatrix has checked the sizes, so Decode and Encode cannot fail.
func (m *Matrix) requantize(src []byte) {
	out, in := m.Out, m.In
	const q = model.Q8Block
	srcRow := model.Q8_0.Bytes(in)
	bands(in/q, func() func(int) {
		band := make([]float32, q*out) // band[i*out+o] = W[o, b*q+i]
		var blk [q]float32
		return func(b int) {
			for o := range out {
				off := o*srcRow + b*34
				if err := model.Decode(blk[:], src[off:off+34], model.Q8_0); err != nil {
					panic(err)
				}
				for i, v := range blk {
					band[i*out+o] = v
				}
			}
			for i := range q {
				enc, err := model.Encode(band[i*out:(i+1)*out], model.Q8_0)
				if err != nil {
					panic(err)
				}
				copy(m.t[(b*q+i)*m.rowBytes:], enc)
			}
		}
	})
}
