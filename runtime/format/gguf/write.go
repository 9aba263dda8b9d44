package gguf

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// llama.cpp's general.file_type values for the dtypes Write produces.
var fileTypes = map[model.DType]uint32{model.F32: 0, model.F16: 1, model.Q8_0: 7, model.BF16: 32}

// Write stores m as a GGUF v3 llama file at path, replacing it atomically
// (a temporary file in the same directory is renamed over it).
//
// The 2-D weights (embedding, projections, output) are written in dtype;
// Q8_0 needs rows of whole 32-value blocks, so a matrix whose row length is
// not a multiple of 32 is written as F16 instead. The 1-D norm weights are
// always F32, as llama.cpp writes them. A tensor already in its target type
// is copied byte for byte, so Load(Write(m)) is bit-identical when m's
// matrices are in dtype and its norms F32; others are converted through
// float32. Only the tensors the config implies are written.
//
// Config.NormEps and RopeTheta are stored as f32, as llama.cpp reads them,
// and load back as the float64 with the same shortest decimal form (1e-5
// stays 1e-5). Config.RopeScale is written as llama.cpp's rope_freqs tensor
// plus acttail.rope.scaling.* keys that keep its parameters. A BPE vocabulary
// with an empty PreTokenizer is written as "llama-bpe" and loads as "llama3".
func Write(m *model.Checkpoint, path string, dtype model.DType) error {
	if err := write(m, path, dtype); err != nil {
		return fmt.Errorf("gguf: write %s: %w", path, err)
	}
	return nil
}

// outTensor is one tensor as it will be written.
type outTensor struct {
	info TensorInfo
	src  *model.Tensor
	to   model.DType
}

func write(m *model.Checkpoint, path string, dtype model.DType) error {
	if _, ok := fileTypes[dtype]; !ok {
		return fmt.Errorf("unsupported dtype %s", dtype)
	}
	if err := m.Check(); err != nil {
		return err
	}
	cfg := &m.Config
	if cfg.Arch != "" && cfg.Arch != archLlama {
		return fmt.Errorf("architecture %q is not supported (want %q)", cfg.Arch, archLlama)
	}
	kvs, err := metadata(m, dtype)
	if err != nil {
		return err
	}
	tensors, err := plan(m, dtype)
	if err != nil {
		return err
	}

	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	w := &writer{w: bufio.NewWriterSize(tmp, 1<<20)}
	w.header(kvs, tensors)
	for i := range tensors {
		w.pad(DefaultAlignment)
		w.tensor(&tensors[i])
	}
	if w.err == nil {
		w.err = w.w.Flush()
	}
	if w.err == nil {
		w.err = tmp.Chmod(0o644)
	}
	if w.err == nil {
		w.err = tmp.Sync()
	}
	if err := tmp.Close(); w.err == nil {
		w.err = err
	}
	if w.err != nil {
		return w.err
	}
	return os.Rename(tmp.Name(), path)
}

// plan lists the tensors in the config's order with their GGUF names,
// target types and offsets.
func plan(m *model.Checkpoint, dtype model.DType) ([]outTensor, error) {
	cfg := &m.Config
	names := tensorNames(cfg)
	var out []outTensor
	for _, s := range cfg.Shapes() {
		t := m.Tensors[s.Name]
		to := model.F32
		if len(s.Shape) > 1 {
			to = dtype
			if to == model.Q8_0 && s.Shape[len(s.Shape)-1]%model.Q8Block != 0 {
				to = model.F16
			}
		}
		out = append(out, outTensor{info: TensorInfo{Name: names[s.Name]}, src: t, to: to})
	}
	if s := cfg.RopeScale; s != nil {
		if err := checkRopeScaling(s); err != nil {
			return nil, err
		}
		freqs := llama3RopeFactors(cfg.HeadDim, cfg.RopeTheta, s)
		data, err := model.Encode(freqs, model.F32)
		if err != nil {
			return nil, err
		}
		t := &model.Tensor{Name: ggufRopeFreqs, DType: model.F32, Shape: []int{len(freqs)}, Data: data}
		out = append(out, outTensor{info: TensorInfo{Name: ggufRopeFreqs}, src: t, to: model.F32})
	}
	var off uint64
	for i := range out {
		o := &out[i]
		shape := o.src.Shape
		o.info.Dims = make([]uint64, len(shape))
		for j, d := range shape {
			o.info.Dims[len(shape)-1-j] = uint64(d)
		}
		var err error
		if o.info.Type, err = ggmlType(o.to); err != nil {
			return nil, err
		}
		o.info.Size = uint64(o.to.Bytes(o.src.Elems()))
		o.info.Offset = uint64(alignUp(int64(off), DefaultAlignment))
		off = o.info.Offset + o.info.Size
	}
	return out, nil
}

// metadata lists the key/value pairs of m's file.
func metadata(m *model.Checkpoint, dtype model.DType) ([]KV, error) {
	c := &m.Config
	kvs := []KV{
		{"general.architecture", str(archLlama)},
		{"general.alignment", u32(DefaultAlignment)},
		{"general.file_type", u32(int(fileTypes[dtype]))},
	}
	add := func(key string, v Value) { kvs = append(kvs, KV{key, v}) }
	if c.Name != "" {
		add("general.name", str(c.Name))
	}
	if dtype == model.Q8_0 {
		add("general.quantization_version", u32(2))
	}
	add("llama.context_length", u32(c.SeqLen))
	add("llama.embedding_length", u32(c.Dim))
	add("llama.feed_forward_length", u32(c.HiddenDim))
	add("llama.block_count", u32(c.NLayers))
	add("llama.attention.head_count", u32(c.NHeads))
	add("llama.attention.head_count_kv", u32(c.NKVHeads))
	add("llama.attention.key_length", u32(c.HeadDim))
	add("llama.attention.value_length", u32(c.HeadDim))
	add("llama.rope.dimension_count", u32(c.HeadDim))
	add("llama.rope.freq_base", f32(c.RopeTheta))
	add("llama.attention.layer_norm_rms_epsilon", f32(c.NormEps))
	add("llama.vocab_size", u32(c.VocabSize))
	if c.Synthetic {
		add(keySynthetic, Value{Type: TypeBool, V: true})
	}
	if s := c.RopeScale; s != nil {
		add(keyRopeType, str(s.Type))
		add(keyRopeFactor, f64(s.Factor))
		add(keyRopeLow, f64(s.LowFreqFactor))
		add(keyRopeHigh, f64(s.HighFreqFactor))
		add(keyRopeOrigCtx, u32(s.OriginalMaxPosition))
	}
	v := m.Vocab
	if v == nil {
		return kvs, nil
	}
	if n := len(v.Tokens); n != c.VocabSize || (v.Scores != nil && len(v.Scores) != n) || (v.Types != nil && len(v.Types) != n) {
		return nil, fmt.Errorf("vocabulary of %d has %d tokens, %d scores and %d token types", c.VocabSize, n, len(v.Scores), len(v.Types))
	}
	switch v.Kind {
	case model.VocabSPM:
		add("tokenizer.ggml.model", str(tokModelSPM))
	case model.VocabBPE:
		add("tokenizer.ggml.model", str(tokModelBPE))
		pre := v.PreTokenizer
		if pre == "" || pre == "llama3" {
			pre = preLlama3GGUF
		}
		add("tokenizer.ggml.pre", str(pre))
	default:
		return nil, fmt.Errorf("vocabulary kind %q is not supported", v.Kind)
	}
	add("tokenizer.ggml.tokens", Value{Type: TypeArray, Elem: TypeString, V: v.Tokens})
	if v.Scores != nil {
		add("tokenizer.ggml.scores", Value{Type: TypeArray, Elem: TypeFloat32, V: v.Scores})
	}
	if v.Types != nil {
		types := make([]int32, len(v.Types))
		for i, t := range v.Types {
			types[i] = int32(t)
		}
		add("tokenizer.ggml.token_type", Value{Type: TypeArray, Elem: TypeInt32, V: types})
	}
	if v.Merges != nil {
		add("tokenizer.ggml.merges", Value{Type: TypeArray, Elem: TypeString, V: v.Merges})
	}
	for _, id := range []struct {
		key string
		id  int
	}{{"bos", v.BOS}, {"eos", v.EOS}, {"unknown", v.UNK}} {
		if id.id >= 0 {
			add("tokenizer.ggml."+id.key+"_token_id", u32(id.id))
		}
	}
	for i, id := range append([]int{v.BOS, v.EOS, v.UNK}, v.EOT...) {
		if id >= len(v.Tokens) || id < -1 || (i >= 3 && id < 0) {
			return nil, fmt.Errorf("token id %d out of range for %d tokens", id, len(v.Tokens))
		}
	}
	if len(v.EOT) > 0 {
		add("tokenizer.ggml.eot_token_id", u32(v.EOT[0]))
	}
	if len(v.EOT) > 1 {
		eots := make([]uint32, len(v.EOT))
		for i, e := range v.EOT {
			eots[i] = uint32(e)
		}
		add(keyEOTs, Value{Type: TypeArray, Elem: TypeUint32, V: eots})
	}
	add("tokenizer.ggml.add_bos_token", Value{Type: TypeBool, V: v.AddBOS})
	add("tokenizer.ggml.add_space_prefix", Value{Type: TypeBool, V: v.AddSpacePrefix})
	if v.ChatTemplate != "" {
		add("tokenizer.chat_template", str(v.ChatTemplate))
	}
	return kvs, nil
}

func str(s string) Value  { return Value{Type: TypeString, V: s} }
func u32(n int) Value     { return Value{Type: TypeUint32, V: uint32(n)} }
func f32(x float64) Value { return Value{Type: TypeFloat32, V: float32(x)} }
func f64(x float64) Value { return Value{Type: TypeFloat64, V: x} }

// writer encodes little-endian values, counting bytes and keeping the
// first error so that a long sequence of writes is checked once.
type writer struct {
	w   *bufio.Writer
	n   int64
	err error
	buf [8]byte
}

func (w *writer) write(b []byte) {
	if w.err != nil {
		return
	}
	k, err := w.w.Write(b)
	w.n += int64(k)
	w.err = err
}

func (w *writer) u32(v uint32) {
	binary.LittleEndian.PutUint32(w.buf[:], v)
	w.write(w.buf[:4])
}

func (w *writer) u64(v uint64) {
	binary.LittleEndian.PutUint64(w.buf[:], v)
	w.write(w.buf[:8])
}

func (w *writer) str(s string) {
	w.u64(uint64(len(s)))
	if w.err == nil {
		k, err := w.w.WriteString(s)
		w.n += int64(k)
		w.err = err
	}
}

// pad writes zeros up to the next multiple of align.
func (w *writer) pad(align int64) {
	var zero [maxAlignment]byte
	w.write(zero[:alignUp(w.n, align)-w.n])
}

func (w *writer) header(kvs []KV, tensors []outTensor) {
	w.u32(Magic)
	w.u32(3)
	w.u64(uint64(len(tensors)))
	w.u64(uint64(len(kvs)))
	for _, kv := range kvs {
		w.str(kv.Key)
		w.u32(uint32(kv.Value.Type))
		w.value(kv.Value)
	}
	for i := range tensors {
		t := &tensors[i].info
		w.str(t.Name)
		w.u32(uint32(len(t.Dims)))
		for _, d := range t.Dims {
			w.u64(d)
		}
		w.u32(uint32(t.Type))
		w.u64(t.Offset)
	}
}

// value writes the encoding of v (its type tag is written by the caller).
// Only the Go types Write produces are handled.
func (w *writer) value(v Value) {
	switch x := v.V.(type) {
	case string:
		w.str(x)
	case bool:
		b := byte(0)
		if x {
			b = 1
		}
		w.write([]byte{b})
	case uint32:
		w.u32(x)
	case float32:
		w.u32(math.Float32bits(x))
	case float64:
		w.u64(math.Float64bits(x))
	case []string:
		w.u32(uint32(TypeString))
		w.u64(uint64(len(x)))
		for _, s := range x {
			w.str(s)
		}
	case []float32:
		w.u32(uint32(TypeFloat32))
		w.u64(uint64(len(x)))
		for _, f := range x {
			w.u32(math.Float32bits(f))
		}
	case []int32:
		w.u32(uint32(TypeInt32))
		w.u64(uint64(len(x)))
		for _, n := range x {
			w.u32(uint32(n))
		}
	case []uint32:
		w.u32(uint32(TypeUint32))
		w.u64(uint64(len(x)))
		for _, n := range x {
			w.u32(n)
		}
	default:
		if w.err == nil {
			w.err = fmt.Errorf("cannot encode metadata value %T", v.V)
		}
	}
}

// convertChunk is how many elements tensor converts at a time: a multiple
// of the Q8_0 block, small enough that no large model is copied whole.
const convertChunk = 1 << 16

// tensor writes t's data in its target type, streaming through float32
// chunks when the type changes.
func (w *writer) tensor(t *outTensor) {
	if t.src.DType == t.to {
		w.write(t.src.Data)
		return
	}
	n := t.src.Elems()
	buf := make([]float32, min(n, convertChunk))
	for start := 0; start < n && w.err == nil; start += convertChunk {
		f := buf[:min(convertChunk, n-start)]
		from := t.src.DType.Bytes(start)
		if err := model.Decode(f, t.src.Data[from:from+t.src.DType.Bytes(len(f))], t.src.DType); err != nil {
			w.err = fmt.Errorf("tensor %s: %w", t.src.Name, err)
			return
		}
		b, err := model.Encode(f, t.to)
		if err != nil {
			w.err = fmt.Errorf("tensor %s: %w", t.src.Name, err)
			return
		}
		w.write(b)
	}
}
