package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sort"
)

// Limits on what a file may declare. Counts and lengths are also bounded by
// the bytes left in the file, so a lying header fails before it allocates.
const (
	maxKeyLen    = 1 << 16 // the specification caps keys at 65535 bytes
	maxNameLen   = 1 << 10 // ggml itself caps tensor names at 63 bytes
	maxDims      = 4       // GGML_MAX_DIMS
	maxAlignment = 1 << 16
	maxElems     = 1 << 48 // per tensor; keeps byte sizes far from overflow
	// The smallest encodings: a key/value is a key length, a type and one
	// byte; a tensor info is a name length, n_dims, one dim, type and offset.
	minKVBytes     = 8 + 4 + 1
	minTensorBytes = 8 + 4 + 8 + 4 + 8
	// Preallocation for arrays never exceeds this many elements; longer
	// arrays grow as their elements are actually read.
	maxPrealloc = 1 << 16
)

// IsGGUF reports whether the file at path starts with the GGUF magic.
func IsGGUF(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var b [4]byte
	if _, err := io.ReadFull(f, b[:]); err != nil {
		return false
	}
	return binary.LittleEndian.Uint32(b[:]) == Magic
}

// ReadFile parses the header, metadata and tensor infos of the size-byte
// GGUF file r, checking that every tensor lies within the file, has the byte
// size its type and dimensions imply, is aligned, and overlaps no other. It
// reads no tensor data. Versions 2 and 3 are accepted.
func ReadFile(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("gguf: negative size %d", size)
	}
	// Small files (fuzz inputs) get a small buffer.
	buf := int(min(size, 1<<16))
	rd := &reader{br: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), buf), size: size}
	f, err := rd.file()
	if err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	return f, nil
}

// reader decodes little-endian values, refusing to read past size.
type reader struct {
	br        *bufio.Reader
	off, size int64
	scratch   []byte
}

func (r *reader) left() int64 { return r.size - r.off }

// bytes reads n bytes into the scratch buffer, valid until the next call.
func (r *reader) bytes(n int64, what string) ([]byte, error) {
	if n < 0 || n > r.left() {
		return nil, fmt.Errorf("offset %d: %s needs %d bytes, only %d left", r.off, what, n, r.left())
	}
	if int64(cap(r.scratch)) < n {
		r.scratch = make([]byte, n)
	}
	b := r.scratch[:n]
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, fmt.Errorf("offset %d: read %s: %w", r.off, what, err)
	}
	r.off += n
	return b, nil
}

func (r *reader) u32(what string) (uint32, error) {
	b, err := r.bytes(4, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64(what string) (uint64, error) {
	b, err := r.bytes(8, what)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// str reads a length-prefixed string of at most limit bytes.
func (r *reader) str(what string, limit uint64) (string, error) {
	n, err := r.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > limit {
		return "", fmt.Errorf("offset %d: %s length %d exceeds the limit of %d", r.off-8, what, n, limit)
	}
	if n > uint64(r.left()) {
		return "", fmt.Errorf("offset %d: %s length %d exceeds the %d bytes left", r.off-8, what, n, r.left())
	}
	b, err := r.bytes(int64(n), what)
	return string(b), err
}

func (r *reader) file() (*File, error) {
	if r.size < 4 {
		return nil, errors.New("file too short for the magic")
	}
	magic, err := r.u32("magic")
	if err != nil {
		return nil, err
	}
	if magic != Magic {
		return nil, fmt.Errorf("bad magic %#08x, not a GGUF file", magic)
	}
	f := &File{Alignment: DefaultAlignment, index: map[string]int{}}
	if f.Version, err = r.u32("version"); err != nil {
		return nil, err
	}
	switch {
	case f.Version == 2 || f.Version == 3:
	case f.Version&0xffff == 0 && f.Version != 0:
		return nil, fmt.Errorf("version %#x: big-endian GGUF files are not supported", f.Version)
	default:
		return nil, fmt.Errorf("unsupported GGUF version %d (want 2 or 3)", f.Version)
	}
	nTensors, err := r.u64("tensor count")
	if err != nil {
		return nil, err
	}
	nKV, err := r.u64("metadata count")
	if err != nil {
		return nil, err
	}
	if left := uint64(r.left()); nTensors > left/minTensorBytes || nKV > left/minKVBytes ||
		nTensors*minTensorBytes+nKV*minKVBytes > left {
		return nil, fmt.Errorf("%d tensors and %d metadata entries cannot fit in the %d bytes left", nTensors, nKV, left)
	}
	f.Metadata = make([]KV, 0, nKV)
	for i := range nKV {
		kv, err := r.kv()
		if err != nil {
			return nil, fmt.Errorf("metadata entry %d: %w", i, err)
		}
		if _, dup := f.index[kv.Key]; dup {
			return nil, fmt.Errorf("metadata key %q appears twice", kv.Key)
		}
		f.index[kv.Key] = len(f.Metadata)
		f.Metadata = append(f.Metadata, kv)
	}
	if v, ok := f.Get("general.alignment"); ok {
		a, isU32 := v.V.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 || a > maxAlignment {
			return nil, fmt.Errorf("general.alignment %v (%s) is not a uint32 power of two up to %d", v.V, v.Type, maxAlignment)
		}
		f.Alignment = int(a)
	}
	f.Tensors = make([]TensorInfo, 0, nTensors)
	names := make(map[string]bool, nTensors)
	for i := range nTensors {
		t, err := r.tensorInfo(uint64(f.Alignment))
		if err != nil {
			return nil, fmt.Errorf("tensor info %d: %w", i, err)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		names[t.Name] = true
		f.Tensors = append(f.Tensors, t)
	}
	f.DataOffset = alignUp(r.off, int64(f.Alignment))
	return f, f.checkData(r.size)
}

// checkData verifies that the tensors tile the data section as GGUF
// writers lay it out (llama.cpp requires the same): sorted by offset, each
// starts at the aligned end of the one before, and nothing but alignment
// padding follows the last. A tensor whose type or dimensions were altered
// leaves a gap or an overlap, so its byte size, implied by type × dims, is
// checked against the room the file gives it.
func (f *File) checkData(size int64) error {
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.DataOffset > size {
		return fmt.Errorf("data section at %d starts past the end of the %d-byte file", f.DataOffset, size)
	}
	dataLen := uint64(size - f.DataOffset)
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	align := uint64(f.Alignment)
	var end uint64 // where the tensor before ends
	for k, i := range order {
		t := &f.Tensors[i]
		if t.Offset > dataLen || t.Size > dataLen-t.Offset {
			return fmt.Errorf("tensor %q: %s %v needs %d bytes at data offset %d, past the end of the file (%d data bytes)", t.Name, t.Type, t.Dims, t.Size, t.Offset, dataLen)
		}
		if k > 0 {
			prev := &f.Tensors[order[k-1]]
			switch next := alignUp64(end, align); {
			case t.Offset < end:
				return fmt.Errorf("tensor %q at data offset %d overlaps tensor %q (%s %v, %d bytes at %d)", t.Name, t.Offset, prev.Name, prev.Type, prev.Dims, prev.Size, prev.Offset)
			case t.Offset > next:
				return fmt.Errorf("tensor %q: %s %v is %d bytes, but the file gives it %d (up to tensor %q): a wrong type or shape", prev.Name, prev.Type, prev.Dims, prev.Size, t.Offset-prev.Offset, t.Name)
			}
		} else if t.Offset != 0 {
			return fmt.Errorf("tensor %q: the first tensor starts at data offset %d, not 0", t.Name, t.Offset)
		}
		end = t.Offset + t.Size
	}
	if last := &f.Tensors[order[len(order)-1]]; dataLen > alignUp64(end, align) {
		return fmt.Errorf("tensor %q: %s %v is %d bytes, but %d bytes follow it to the end of the file: a wrong type or shape", last.Name, last.Type, last.Dims, last.Size, dataLen-last.Offset)
	}
	return nil
}

func alignUp64(n, a uint64) uint64 { return (n + a - 1) / a * a }

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

func (r *reader) kv() (KV, error) {
	key, err := r.str("key", maxKeyLen)
	if err != nil {
		return KV{}, err
	}
	t, err := r.u32("value type")
	if err != nil {
		return KV{}, fmt.Errorf("key %q: %w", key, err)
	}
	v, err := r.value(ValueType(t))
	if err != nil {
		return KV{}, fmt.Errorf("key %q: %w", key, err)
	}
	return KV{Key: key, Value: v}, nil
}

func (r *reader) value(t ValueType) (Value, error) {
	switch {
	case t == TypeString:
		s, err := r.str("string", math.MaxInt64)
		return Value{Type: t, V: s}, err
	case t == TypeArray:
		return r.array()
	case t.size() > 0:
		b, err := r.bytes(t.size(), t.String())
		if err != nil {
			return Value{}, err
		}
		v, err := scalar(t, b)
		return Value{Type: t, V: v}, err
	}
	return Value{}, fmt.Errorf("offset %d: unknown value type %d", r.off-4, uint32(t))
}

// scalar decodes a fixed-width value of type t from b.
func scalar(t ValueType, b []byte) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return b[0], nil
	case TypeInt8:
		return int8(b[0]), nil
	case TypeUint16:
		return le.Uint16(b), nil
	case TypeInt16:
		return int16(le.Uint16(b)), nil
	case TypeUint32:
		return le.Uint32(b), nil
	case TypeInt32:
		return int32(le.Uint32(b)), nil
	case TypeFloat32:
		return math.Float32frombits(le.Uint32(b)), nil
	case TypeBool:
		if b[0] > 1 {
			return nil, fmt.Errorf("bool byte %d is neither 0 nor 1", b[0])
		}
		return b[0] == 1, nil
	case TypeUint64:
		return le.Uint64(b), nil
	case TypeInt64:
		return int64(le.Uint64(b)), nil
	case TypeFloat64:
		return math.Float64frombits(le.Uint64(b)), nil
	}
	return nil, fmt.Errorf("unknown value type %d", uint32(t))
}

func (r *reader) array() (Value, error) {
	et, err := r.u32("array element type")
	if err != nil {
		return Value{}, err
	}
	elem := ValueType(et)
	n, err := r.u64("array length")
	if err != nil {
		return Value{}, err
	}
	v := Value{Type: TypeArray, Elem: elem}
	switch {
	case elem == TypeArray:
		return Value{}, errors.New("arrays of arrays are not supported")
	case elem == TypeString:
		if n > uint64(r.left())/8 {
			return Value{}, fmt.Errorf("array of %d strings cannot fit in the %d bytes left", n, r.left())
		}
		ss := make([]string, 0, min(n, maxPrealloc))
		for i := range n {
			s, err := r.str("string", math.MaxInt64)
			if err != nil {
				return Value{}, fmt.Errorf("array element %d: %w", i, err)
			}
			ss = append(ss, s)
		}
		v.V = ss
		return v, nil
	case elem.size() > 0:
		if n > uint64(r.left())/uint64(elem.size()) {
			return Value{}, fmt.Errorf("array of %d %s cannot fit in the %d bytes left", n, elem, r.left())
		}
		b, err := r.bytes(int64(n)*elem.size(), "array")
		if err != nil {
			return Value{}, err
		}
		v.V, err = decodeArray(elem, b, int(n))
		return v, err
	}
	return Value{}, fmt.Errorf("unknown array element type %d", et)
}

// decodeArray decodes n fixed-width values of type t into a typed slice.
func decodeArray(t ValueType, b []byte, n int) (any, error) {
	le := binary.LittleEndian
	switch t {
	case TypeUint8:
		return append([]uint8(nil), b...), nil
	case TypeInt8:
		return decodeEach(b, n, 1, func(b []byte) int8 { return int8(b[0]) }), nil
	case TypeUint16:
		return decodeEach(b, n, 2, le.Uint16), nil
	case TypeInt16:
		return decodeEach(b, n, 2, func(b []byte) int16 { return int16(le.Uint16(b)) }), nil
	case TypeUint32:
		return decodeEach(b, n, 4, le.Uint32), nil
	case TypeInt32:
		return decodeEach(b, n, 4, func(b []byte) int32 { return int32(le.Uint32(b)) }), nil
	case TypeFloat32:
		return decodeEach(b, n, 4, func(b []byte) float32 { return math.Float32frombits(le.Uint32(b)) }), nil
	case TypeBool:
		out := make([]bool, n)
		for i, c := range b {
			if c > 1 {
				return nil, fmt.Errorf("array element %d: bool byte %d is neither 0 nor 1", i, c)
			}
			out[i] = c == 1
		}
		return out, nil
	case TypeUint64:
		return decodeEach(b, n, 8, le.Uint64), nil
	case TypeInt64:
		return decodeEach(b, n, 8, func(b []byte) int64 { return int64(le.Uint64(b)) }), nil
	case TypeFloat64:
		return decodeEach(b, n, 8, func(b []byte) float64 { return math.Float64frombits(le.Uint64(b)) }), nil
	}
	return nil, fmt.Errorf("unknown array element type %d", uint32(t))
}

func decodeEach[T any](b []byte, n, size int, dec func([]byte) T) []T {
	out := make([]T, n)
	for i := range out {
		out[i] = dec(b[i*size:])
	}
	return out
}

func (r *reader) tensorInfo(align uint64) (TensorInfo, error) {
	var t TensorInfo
	var err error
	if t.Name, err = r.str("tensor name", maxNameLen); err != nil {
		return t, err
	}
	fail := func(err error) (TensorInfo, error) { return t, fmt.Errorf("tensor %q: %w", t.Name, err) }
	nd, err := r.u32("n_dims")
	if err != nil {
		return fail(err)
	}
	if nd < 1 || nd > maxDims {
		return fail(fmt.Errorf("n_dims %d is not between 1 and %d", nd, maxDims))
	}
	t.Dims = make([]uint64, nd)
	elems := uint64(1)
	for i := range t.Dims {
		d, err := r.u64("dimension")
		if err != nil {
			return fail(err)
		}
		if d == 0 || d > maxElems/elems {
			return fail(fmt.Errorf("dimension %d is %d, out of range", i, d))
		}
		t.Dims[i] = d
		elems *= d
	}
	typ, err := r.u32("ggml type")
	if err != nil {
		return fail(err)
	}
	t.Type = GGMLType(typ)
	tr, ok := ggmlTypes[t.Type]
	if !ok {
		return fail(fmt.Errorf("unknown ggml type %d", typ))
	}
	if t.Dims[0]%tr.block != 0 {
		return fail(fmt.Errorf("row length %d is not a multiple of the %s block size %d", t.Dims[0], t.Type, tr.block))
	}
	hi, lo := bits.Mul64(elems/tr.block, tr.size)
	if hi != 0 {
		return fail(fmt.Errorf("byte size overflows"))
	}
	t.Size = lo
	if t.Offset, err = r.u64("offset"); err != nil {
		return fail(err)
	}
	if t.Offset%align != 0 {
		return fail(fmt.Errorf("data offset %d is not a multiple of the alignment %d", t.Offset, align))
	}
	return t, nil
}
