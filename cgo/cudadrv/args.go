package cudadrv

import (
	"encoding/binary"
	"fmt"
	"math"
	"reflect"
	"slices"
)

// maxArgs bounds a kernel's parameter count, argBytes their packed size.
const (
	maxArgs  = 32
	argBytes = 1024
)

// PackArgs lays kernel arguments out as cuLaunchKernel reads them: each in
// its own 8-byte-aligned slot, little-endian, with offs[i] the slot of
// argument i. Accepted: DevicePtr, uint64, int64, float64 (8 bytes);
// int32, uint32, float32 (4 bytes); int (as int32, which must hold it);
// []byte, the image of a struct passed by value (its fields laid out by
// the caller, alignment at most 8), in as many 8-byte slots as it needs.
func PackArgs(args []any) (vals []byte, offs []int, err error) {
	return appendArgs(nil, nil, args)
}

// appendArgs is PackArgs into the storage of vals and offs (reused by
// every launch of a Ctx, so that packing allocates nothing).
func appendArgs(vals []byte, offs []int, args []any) ([]byte, []int, error) {
	if len(args) > maxArgs {
		return nil, nil, fmt.Errorf("%d kernel arguments, at most %d", len(args), maxArgs)
	}
	size := 0
	for i, a := range args {
		b, ok := a.([]byte)
		switch {
		case !ok:
			size += 8
		case len(b) == 0:
			return nil, nil, fmt.Errorf("argument %d: empty struct image", i)
		default:
			size += (len(b) + 7) / 8 * 8
		}
	}
	if size > argBytes {
		return nil, nil, fmt.Errorf("%d bytes of kernel arguments, at most %d", size, argBytes)
	}
	vals = slices.Grow(vals[:0], size)[:size]
	clear(vals)
	offs = slices.Grow(offs[:0], len(args))[:len(args)]
	o := 0
	for i, a := range args {
		offs[i] = o
		s := vals[o : o+8]
		o += 8
		switch v := a.(type) {
		case []byte:
			copy(vals[offs[i]:], v)
			o = offs[i] + (len(v)+7)/8*8
		case DevicePtr:
			binary.LittleEndian.PutUint64(s, uint64(v))
		case uint64:
			binary.LittleEndian.PutUint64(s, v)
		case int64:
			binary.LittleEndian.PutUint64(s, uint64(v))
		case float64:
			binary.LittleEndian.PutUint64(s, math.Float64bits(v))
		case int32:
			binary.LittleEndian.PutUint32(s, uint32(v))
		case uint32:
			binary.LittleEndian.PutUint32(s, v)
		case float32:
			binary.LittleEndian.PutUint32(s, math.Float32bits(v))
		case int:
			if v != int(int32(v)) {
				return nil, nil, fmt.Errorf("argument %d: int %d does not fit int32", i, v)
			}
			binary.LittleEndian.PutUint32(s, uint32(int32(v)))
		default:
			// reflect.TypeOf, unlike fmt's %T, does not make the arguments
			// escape: callers' boxed values stay on their stacks.
			return nil, nil, fmt.Errorf("argument %d: unsupported type %s", i, reflect.TypeOf(a))
		}
	}
	return vals, offs, nil
}
