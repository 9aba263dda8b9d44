package model

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"sync"
)

// CheckFinite reports the first tensor (in Names order) holding a NaN or an
// infinity, naming the element. A file of NaNs loads and runs as well as a
// real one and only its output shows it; this catches it at load.
//
// It reads every byte of the weights once, on all cores, eight bytes at a
// time (a whole model at memory speed), so it is cheap enough to run on
// every load. For a memory-mapped file it also pages the weights in, which
// the first forward pass would do anyway.
func (m *Checkpoint) CheckFinite() error {
	names := m.Names()
	type chunk struct {
		t          *Tensor
		start, end int // byte range
	}
	var chunks []chunk
	for _, n := range names {
		t := m.Tensors[n]
		unit := t.DType.Bytes(1)
		if t.DType == Q8_0 {
			unit = Q8_0.Bytes(Q8Block)
		}
		if unit <= 0 {
			continue
		}
		step := unit * max(1, finiteChunk/unit)
		for s := 0; s < len(t.Data); s += step {
			chunks = append(chunks, chunk{t, s, min(s+step, len(t.Data))})
		}
	}
	// Workers take chunks in order; the first bad chunk by index wins, so
	// the report does not depend on scheduling.
	bad := len(chunks)
	var mu sync.Mutex
	var next int
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(chunks)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				i := next
				next++
				stop := i >= bad
				mu.Unlock()
				if stop || i >= len(chunks) {
					return
				}
				c := chunks[i]
				if !finite(c.t.Data[c.start:c.end], c.t.DType) {
					mu.Lock()
					bad = min(bad, i)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if bad == len(chunks) {
		return nil
	}
	c := chunks[bad]
	i, v := firstNonFinite(c.t.Data[c.start:c.end], c.t.DType)
	first := 0
	if c.t.DType == Q8_0 {
		first = c.start / Q8_0.Bytes(Q8Block) * Q8Block
	} else {
		first = c.start / c.t.DType.Bytes(1)
	}
	what := "NaN"
	if math.IsInf(float64(v), 0) {
		what = fmt.Sprint(v)
	}
	return fmt.Errorf("model %s: tensor %q (%s %v): element %d is %s", m.Source, c.t.Name, c.t.DType, c.t.Shape, first+i, what)
}

// finiteChunk is the bytes one worker checks at a time.
const finiteChunk = 4 << 20

// finite reports whether b, whole elements (or Q8_0 blocks) of type d,
// holds no NaN and no infinity.
func finite(b []byte, d DType) bool {
	switch d {
	case F32:
		return !anyExpAllOnes(b, 0x7fffffff7fffffff, 0x0080000000800000)
	case F16:
		return !anyExpAllOnes(b, 0x7fff7fff7fff7fff, 0x0400040004000400)
	case BF16:
		return !anyExpAllOnes(b, 0x7fff7fff7fff7fff, 0x0080008000800080)
	case Q8_0:
		// The int8 values are finite; only each block's f16 scale can be
		// NaN or infinite.
		blk := Q8_0.Bytes(Q8Block)
		for o := 0; o+2 <= len(b); o += blk {
			if binary.LittleEndian.Uint16(b[o:])&0x7fff >= 0x7c00 {
				return false
			}
		}
	}
	return true
}

// anyExpAllOnes reports whether a float lane of b has an all-ones exponent
// (NaN or infinity). Each 64-bit word holds two f32 or four 16-bit lanes;
// mask clears their sign bits and add is what lifts a lane whose
// magnitude bits reach the all-ones exponent into its (cleared) sign bit,
// without carrying into the next lane. So one OR of masked sums over the
// words, tested against the sign bits, answers for all of them.
func anyExpAllOnes(b []byte, mask, add uint64) bool {
	le := binary.LittleEndian
	var acc uint64
	for len(b) >= 32 {
		acc |= (le.Uint64(b)&mask + add) | (le.Uint64(b[8:])&mask + add) |
			(le.Uint64(b[16:])&mask + add) | (le.Uint64(b[24:])&mask + add)
		b = b[32:]
	}
	for len(b) >= 8 {
		acc |= le.Uint64(b)&mask + add
		b = b[8:]
	}
	if len(b) > 0 {
		var tail [8]byte // zeros are finite
		copy(tail[:], b)
		acc |= le.Uint64(tail[:])&mask + add
	}
	return acc&^mask != 0
}

// firstNonFinite returns the index and value of the first NaN or infinity
// in b, elements of type d (for Q8_0, the first element of the block with
// the bad scale); -1 if none.
func firstNonFinite(b []byte, d DType) (int, float32) {
	le := binary.LittleEndian
	bad := func(v float32) bool { return math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) }
	switch d {
	case F32:
		for i := 0; 4*i+4 <= len(b); i++ {
			if v := math.Float32frombits(le.Uint32(b[4*i:])); bad(v) {
				return i, v
			}
		}
	case F16, BF16:
		conv := F16ToF32
		if d == BF16 {
			conv = BF16ToF32
		}
		for i := 0; 2*i+2 <= len(b); i++ {
			if v := conv(le.Uint16(b[2*i:])); bad(v) {
				return i, v
			}
		}
	case Q8_0:
		blk := Q8_0.Bytes(Q8Block)
		for k := 0; k*blk+2 <= len(b); k++ {
			if v := F16ToF32(le.Uint16(b[k*blk:])); bad(v) {
				return k * Q8Block, v
			}
		}
	}
	return -1, 0
}
