package cudadrv

import (
	"encoding/binary"
	"fmt"
	"math"
)

// maxArgs bounds a kernel's parameter count.
const maxArgs = 32

// PackArgs lays kernel arguments out as cuLaunchKernel reads them: each in
// its own 8-byte slot, little-endian, with offs[i] the slot of argument i.
// Accepted: DevicePtr, uint64, int64, float64 (8 bytes); int32, uint32,
// float32 (4 bytes); int (as int32, which must hold it).
func PackArgs(args []any) (vals []byte, offs []int, err error) {
	if len(args) > maxArgs {
		return nil, nil, fmt.Errorf("%d kernel arguments, at most %d", len(args), maxArgs)
	}
	vals = make([]byte, 8*len(args))
	offs = make([]int, len(args))
	for i, a := range args {
		o := 8 * i
		offs[i] = o
		s := vals[o : o+8]
		switch v := a.(type) {
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
			return nil, nil, fmt.Errorf("argument %d: unsupported type %T", i, a)
		}
	}
	return vals, offs, nil
}
