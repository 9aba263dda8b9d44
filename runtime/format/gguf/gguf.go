// Package gguf reads and writes Llama models in GGUF, the single-file format
// of llama.cpp (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md).
//
// A GGUF file is a little-endian header (magic "GGUF", version, tensor and
// metadata counts), typed key/value metadata, one info record per tensor
// (name, dimensions, ggml type, offset) and a data section aligned to
// general.alignment (default 32) that holds every tensor, each aligned too.
//
// Shapes: GGUF lists a tensor's dimensions innermost first (ne[0] is the
// contiguous one), the reverse of this runtime's row-major, outermost-first
// shapes. A projection weight of shape (out, in) is stored with ne = [in, out];
// the bytes themselves are laid out identically, so no data is transposed.
//
// Q and K projection rows in llama GGUF files are in Meta's interleaved-RoPE
// layout, which is the runtime's canonical layout (see package model), so
// they are loaded and written without permutation.
//
// ReadFile parses the header, metadata and tensor infos of any GGUF v2 or v3
// file; Load turns a llama-architecture file into a model.Checkpoint whose tensor
// data are windows into a read-only memory mapping of the file; Write stores
// a model.Checkpoint as GGUF v3.
package gguf

import (
	"fmt"
	"math"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// Magic is the first four bytes of every GGUF file, "GGUF" read as a
// little-endian uint32.
const Magic = 0x46554747

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// ValueType is the type tag of a metadata value.
type ValueType uint32

// Metadata value types, as numbered by the GGUF specification.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var valueTypeNames = [...]string{"u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"}

func (t ValueType) String() string {
	if int(t) < len(valueTypeNames) {
		return valueTypeNames[t]
	}
	return fmt.Sprintf("ValueType(%d)", uint32(t))
}

// size is the encoded size of a fixed-width scalar; 0 for strings and arrays.
func (t ValueType) size() int64 {
	switch t {
	case TypeUint8, TypeInt8, TypeBool:
		return 1
	case TypeUint16, TypeInt16:
		return 2
	case TypeUint32, TypeInt32, TypeFloat32:
		return 4
	case TypeUint64, TypeInt64, TypeFloat64:
		return 8
	}
	return 0
}

// Value is one metadata value. A scalar is held in V as the Go type of the
// same width (uint8, int8, uint16, int16, uint32, int32, float32, bool,
// string, uint64, int64, float64). An array has Type TypeArray, its element
// type in Elem, and V a slice of that Go type ([]int32, []string, ...).
// Arrays of arrays are not supported.
type Value struct {
	Type ValueType
	Elem ValueType
	V    any
}

// Int returns an integer scalar of any width as int64. A uint64 above
// math.MaxInt64 is reported as not an integer.
func (v Value) Int() (int64, bool) {
	switch x := v.V.(type) {
	case uint8:
		return int64(x), true
	case int8:
		return int64(x), true
	case uint16:
		return int64(x), true
	case int16:
		return int64(x), true
	case uint32:
		return int64(x), true
	case int32:
		return int64(x), true
	case uint64:
		if x > math.MaxInt64 {
			return 0, false
		}
		return int64(x), true
	case int64:
		return x, true
	}
	return 0, false
}

// Float returns a float32 or float64 scalar as float64.
func (v Value) Float() (float64, bool) {
	switch x := v.V.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// Str returns a string scalar.
func (v Value) Str() (string, bool) {
	s, ok := v.V.(string)
	return s, ok
}

// Bool returns a bool scalar.
func (v Value) Bool() (bool, bool) {
	b, ok := v.V.(bool)
	return b, ok
}

// KV is one metadata entry.
type KV struct {
	Key   string
	Value Value
}

// TensorInfo describes one tensor of a GGUF file.
type TensorInfo struct {
	Name string
	// Dims is GGUF's ne: innermost (contiguous) dimension first.
	Dims []uint64
	Type GGMLType
	// Offset is relative to File.DataOffset.
	Offset uint64
	// Size is the tensor's byte size, implied by Type and Dims.
	Size uint64
}

// Shape is Dims reversed: the runtime's outermost-first shape.
func (t *TensorInfo) Shape() []int {
	s := make([]int, len(t.Dims))
	for i, d := range t.Dims {
		s[len(s)-1-i] = int(d)
	}
	return s
}

// File is the parsed header of a GGUF file: everything but the tensor data.
type File struct {
	Version uint32
	// Metadata is in file order; keys are unique.
	Metadata []KV
	Tensors  []TensorInfo
	// DataOffset is where the data section starts in the file.
	DataOffset int64
	// Alignment is general.alignment, or DefaultAlignment.
	Alignment int

	index map[string]int
}

// Get returns the metadata value stored under key.
func (f *File) Get(key string) (Value, bool) {
	i, ok := f.index[key]
	if !ok {
		return Value{}, false
	}
	return f.Metadata[i].Value, true
}

// GGMLType is a ggml tensor element type.
type GGMLType uint32

// The ggml types this package converts to and from model.DType. ReadFile
// knows the sizes of the other common ggml types, but Load rejects them.
const (
	GGMLF32  GGMLType = 0
	GGMLF16  GGMLType = 1
	GGMLQ8_0 GGMLType = 8
	GGMLBF16 GGMLType = 30
)

type ggmlTraits struct {
	name        string
	block, size uint64 // elements a block, bytes a block
}

// ggmlTypes holds the block layout of the ggml types, for size checks.
var ggmlTypes = map[GGMLType]ggmlTraits{
	0: {"F32", 1, 4}, 1: {"F16", 1, 2}, 2: {"Q4_0", 32, 18}, 3: {"Q4_1", 32, 20},
	6: {"Q5_0", 32, 22}, 7: {"Q5_1", 32, 24}, 8: {"Q8_0", 32, 34}, 9: {"Q8_1", 32, 36},
	10: {"Q2_K", 256, 84}, 11: {"Q3_K", 256, 110}, 12: {"Q4_K", 256, 144}, 13: {"Q5_K", 256, 176},
	14: {"Q6_K", 256, 210}, 15: {"Q8_K", 256, 292}, 16: {"IQ2_XXS", 256, 66}, 17: {"IQ2_XS", 256, 74},
	18: {"IQ3_XXS", 256, 98}, 19: {"IQ1_S", 256, 50}, 20: {"IQ4_NL", 32, 18}, 21: {"IQ3_S", 256, 110},
	22: {"IQ2_S", 256, 82}, 23: {"IQ4_XS", 256, 136}, 24: {"I8", 1, 1}, 25: {"I16", 1, 2},
	26: {"I32", 1, 4}, 27: {"I64", 1, 8}, 28: {"F64", 1, 8}, 29: {"IQ1_M", 256, 56},
	30: {"BF16", 1, 2}, 34: {"TQ1_0", 256, 54}, 35: {"TQ2_0", 256, 66},
}

func (t GGMLType) String() string {
	if tr, ok := ggmlTypes[t]; ok {
		return tr.name
	}
	return fmt.Sprintf("GGMLType(%d)", uint32(t))
}

// dtype is the model.DType of a ggml type this package loads.
func (t GGMLType) dtype() (model.DType, bool) {
	switch t {
	case GGMLF32:
		return model.F32, true
	case GGMLF16:
		return model.F16, true
	case GGMLBF16:
		return model.BF16, true
	case GGMLQ8_0:
		return model.Q8_0, true
	}
	return 0, false
}

// ggmlType is the ggml type that stores d.
func ggmlType(d model.DType) (GGMLType, error) {
	switch d {
	case model.F32:
		return GGMLF32, nil
	case model.F16:
		return GGMLF16, nil
	case model.BF16:
		return GGMLBF16, nil
	case model.Q8_0:
		return GGMLQ8_0, nil
	}
	return 0, fmt.Errorf("no ggml type for dtype %s", d)
}
