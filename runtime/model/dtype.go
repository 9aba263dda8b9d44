package model

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DType is the element type of a tensor.
type DType int

// Supported element types. Q8_0 is GGML's block format: blocks of 32 int8
// values, each block led by an f16 scale (34 bytes a block).
const (
	F32 DType = iota
	F16
	BF16
	Q8_0
)

// Q8Block is the number of values in one Q8_0 block.
const Q8Block = 32

var dtypeNames = [...]string{"F32", "F16", "BF16", "Q8_0"}

func (d DType) String() string {
	if d < 0 || int(d) >= len(dtypeNames) {
		return fmt.Sprintf("DType(%d)", int(d))
	}
	return dtypeNames[d]
}

// ParseDType accepts the names String returns, case-insensitively.
func ParseDType(s string) (DType, error) {
	for i, n := range dtypeNames {
		if equalFold(n, s) {
			return DType(i), nil
		}
	}
	return 0, fmt.Errorf("unknown dtype %q (want f32, f16, bf16 or q8_0)", s)
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Bytes is the storage size of n elements; -1 if n is not a whole number
// of blocks for a block type.
func (d DType) Bytes(n int) int {
	switch d {
	case F32:
		return 4 * n
	case F16, BF16:
		return 2 * n
	case Q8_0:
		if n%Q8Block != 0 {
			return -1
		}
		return n / Q8Block * 34
	}
	return -1
}

// Decode converts src, holding len(dst) elements of type d, to float32.
func Decode(dst []float32, src []byte, d DType) error {
	if want := d.Bytes(len(dst)); want < 0 || len(src) != want {
		return fmt.Errorf("decode %s: %d bytes for %d elements", d, len(src), len(dst))
	}
	switch d {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case Q8_0:
		for b := 0; b < len(dst)/Q8Block; b++ {
			blk := src[34*b:]
			scale := F16ToF32(binary.LittleEndian.Uint16(blk))
			for j := range Q8Block {
				dst[b*Q8Block+j] = scale * float32(int8(blk[2+j]))
			}
		}
	default:
		return fmt.Errorf("decode: unsupported dtype %s", d)
	}
	return nil
}

// Encode converts src to type d, returning new bytes. Q8_0 needs
// len(src) to be a multiple of 32.
func Encode(src []float32, d DType) ([]byte, error) {
	n := d.Bytes(len(src))
	if n < 0 {
		return nil, fmt.Errorf("encode %s: %d elements is not a whole number of blocks", d, len(src))
	}
	out := make([]byte, n)
	switch d {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToBF16(v))
		}
	case Q8_0:
		for b := 0; b < len(src)/Q8Block; b++ {
			blk := src[b*Q8Block : (b+1)*Q8Block]
			var amax float32
			for _, v := range blk {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			scale := amax / 127
			binary.LittleEndian.PutUint16(out[34*b:], F32ToF16(scale))
			inv := float32(0)
			if scale != 0 {
				inv = 1 / scale
			}
			for j, v := range blk {
				out[34*b+2+j] = byte(int8(math.Round(float64(v * inv))))
			}
		}
	}
	return out, nil
}

// BF16ToF32 widens a bfloat16.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 rounds to nearest even; NaN stays NaN.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

// F16ToF32 widens an IEEE half.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		// subnormal: value = man * 2^-24
		f := float32(man) * (1.0 / (1 << 24))
		if sign != 0 {
			return -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// F32ToF16 rounds to nearest even, saturating to infinity.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xff
	man := b & 0x7fffff
	if exp == 0xff {
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		if e < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint(14 - e)
		half := uint32(1) << (shift - 1)
		r := man >> shift
		rem := man & (1<<shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rem := man & 0x1fff
	if rem > 0x1000 || (rem == 0x1000 && r&1 == 1) {
		r++ // may carry into the exponent, which is the right rounding
	}
	return sign | uint16(r)
}
