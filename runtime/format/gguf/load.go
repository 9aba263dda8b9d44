package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// Metadata keys written by this package and read by nothing else.
const (
	keySynthetic = "acttail.synthetic"
	// keyEOTs lists every end-of-turn id when there is more than the one
	// tokenizer.ggml.eot_token_id can hold.
	keyEOTs = "acttail.eot_token_ids"
	// Llama-3.1 RoPE scaling parameters; llama.cpp keeps only the derived
	// rope_freqs tensor, which is written too.
	keyRopeType     = "acttail.rope.scaling.type"
	keyRopeFactor   = "acttail.rope.scaling.factor"
	keyRopeLow      = "acttail.rope.scaling.low_freq_factor"
	keyRopeHigh     = "acttail.rope.scaling.high_freq_factor"
	keyRopeOrigCtx  = "acttail.rope.scaling.original_context_length"
	archLlama       = "llama"
	tokModelSPM     = "llama"
	tokModelBPE     = "gpt2"
	preLlama3GGUF   = "llama-bpe"
	preGPT2         = "gpt2"
	defaultRopeBase = 10000
)

// Load maps the llama-architecture GGUF file at path read-only and returns
// its model. Tensor data are windows into the mapping, released by the
// model's Close. Tensors must be F32, F16, BF16 or Q8_0; other ggml types
// (Q4_K, ...) are rejected. Mistral GGUFs load too: they use "llama".
//
// A rope_freqs.weight tensor (Llama-3.1) is not kept as a tensor: it becomes
// Config.RopeScale, from this package's acttail.rope.scaling.* keys when
// present, else by matching it against Llama-3.x's scaling parameters; a
// tensor that matches neither is an error.
func Load(path string) (*model.Checkpoint, error) {
	mp, err := mapFile(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	m, err := decode(mp.data, path)
	if err != nil {
		mp.Close()
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	m.OnClose(mp)
	for _, t := range m.Tensors {
		t.Mapped = mapped
	}
	return m, nil
}

// decode builds a model whose tensors are windows into data, a whole file.
func decode(data []byte, path string) (*model.Checkpoint, error) {
	f, err := ReadFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return nil, err
	}
	md := &meta{f: f}
	if arch := md.str("general.architecture", ""); md.err == nil && arch != archLlama {
		return nil, fmt.Errorf("gguf: architecture %q is not supported (want %q)", arch, archLlama)
	}
	cfg := md.config()
	vocab := md.vocab()
	if md.err != nil {
		return nil, fmt.Errorf("gguf: %w", md.err)
	}
	byName := make(map[string]*TensorInfo, len(f.Tensors))
	for i := range f.Tensors {
		byName[f.Tensors[i].Name] = &f.Tensors[i]
	}
	cfg.TiedOutput = byName[ggufOutput] == nil
	if cfg.VocabSize == 0 {
		if vocab != nil {
			cfg.VocabSize = len(vocab.Tokens)
		} else if t := byName[ggufEmbed]; t != nil && len(t.Dims) == 2 && t.Dims[1] <= math.MaxInt32 {
			cfg.VocabSize = int(t.Dims[1])
		}
	}
	if vocab != nil && len(vocab.Tokens) != cfg.VocabSize {
		return nil, fmt.Errorf("gguf: %d tokens for a vocabulary of %d", len(vocab.Tokens), cfg.VocabSize)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("gguf: %w", err)
	}
	if t := byName[ggufRopeFreqs]; t != nil {
		if err := ropeFromTensor(&cfg, f, t, data, md.has(keyRopeType)); err != nil {
			return nil, fmt.Errorf("gguf: %w", err)
		}
	}

	m := model.New(cfg)
	m.Vocab, m.Source, m.Format = vocab, path, "gguf"
	canonical := map[string]string{}
	for hf, g := range tensorNames(&cfg) {
		canonical[g] = hf
	}
	for i := range f.Tensors {
		t := &f.Tensors[i]
		if t.Name == ggufRopeFreqs {
			continue
		}
		name, ok := canonical[t.Name]
		if !ok {
			return nil, fmt.Errorf("gguf: unexpected tensor %q in a %d-layer llama model", t.Name, cfg.NLayers)
		}
		dt, ok := t.Type.dtype()
		if !ok {
			return nil, fmt.Errorf("gguf: tensor %q: ggml type %s is not supported (want F32, F16, BF16 or Q8_0)", t.Name, t.Type)
		}
		m.Add(&model.Tensor{Name: name, DType: dt, Shape: t.Shape(), Data: window(data, f, t)})
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return m, nil
}

// window is the tensor's bytes in data; ReadFile checked that they lie
// within it. The capacity is clipped so that an append cannot spill over.
func window(data []byte, f *File, t *TensorInfo) []byte {
	start := f.DataOffset + int64(t.Offset)
	end := start + int64(t.Size)
	return data[start:end:end]
}

// ropeFromTensor sets cfg.RopeScale from rope_freqs.weight unless our own
// metadata already did.
func ropeFromTensor(cfg *model.Config, f *File, t *TensorInfo, data []byte, fromKeys bool) error {
	if t.Type != GGMLF32 || len(t.Dims) != 1 || t.Dims[0] != uint64(cfg.HeadDim/2) {
		return fmt.Errorf("%s: %s %v, want F32 [%d]", ggufRopeFreqs, t.Type, t.Dims, cfg.HeadDim/2)
	}
	if fromKeys {
		return nil
	}
	b := window(data, f, t)
	freqs := make([]float32, len(b)/4)
	for i := range freqs {
		freqs[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	s, err := inferRopeScaling(freqs, cfg.HeadDim, cfg.RopeTheta)
	cfg.RopeScale = s
	return err
}

// meta reads typed metadata, keeping the first error so that callers can
// read many keys and check once.
type meta struct {
	f   *File
	err error
}

func (m *meta) has(key string) bool {
	_, ok := m.f.Get(key)
	return ok
}

func (m *meta) fail(format string, args ...any) {
	if m.err == nil {
		m.err = fmt.Errorf(format, args...)
	}
}

// get returns the value under key; a missing key is an error when required.
func (m *meta) get(key string, required bool) (Value, bool) {
	v, ok := m.f.Get(key)
	if !ok && required {
		m.fail("missing metadata key %s", key)
	}
	return v, ok
}

// int reads a non-negative integer that fits in an int32; def ==
// required makes the key required.
func (m *meta) int(key string, def int) int {
	v, ok := m.get(key, def == required)
	if !ok {
		return def
	}
	n, isInt := v.Int()
	if !isInt || n < 0 || n > math.MaxInt32 {
		m.fail("metadata %s: %v (%s), want a non-negative 32-bit integer", key, v.V, v.Type)
		return 0
	}
	return int(n)
}

// float reads an f32 or f64; NaN as def makes the key required.
func (m *meta) float(key string, def float64) float64 {
	v, ok := m.get(key, math.IsNaN(def))
	if !ok {
		return def
	}
	if f, isF32 := v.V.(float32); isF32 {
		return f32ToF64(f)
	}
	f, isFloat := v.Float()
	if !isFloat {
		m.fail("metadata %s: %v (%s), want a float", key, v.V, v.Type)
	}
	return f
}

func (m *meta) str(key, def string) string {
	v, ok := m.get(key, false)
	if !ok {
		return def
	}
	s, isStr := v.Str()
	if !isStr {
		m.fail("metadata %s: %s value, want a string", key, v.Type)
	}
	return s
}

func (m *meta) bool(key string, def bool) bool {
	v, ok := m.get(key, false)
	if !ok {
		return def
	}
	b, isBool := v.Bool()
	if !isBool {
		m.fail("metadata %s: %s value, want a bool", key, v.Type)
	}
	return b
}

// array reads an array of T; nil when the key is absent.
func array[T any](m *meta, key string) []T {
	v, ok := m.get(key, false)
	if !ok {
		return nil
	}
	a, isT := v.V.([]T)
	if !isT {
		var zero T
		m.fail("metadata %s: %s of %s, want an array of %T", key, v.Type, v.Elem, zero)
	}
	return a
}

// required, as meta.int's default, makes the key required.
const required = -1

func (m *meta) config() model.Config {
	c := model.Config{
		Arch:      archLlama,
		Name:      m.str("general.name", ""),
		Synthetic: m.bool(keySynthetic, false),
		SeqLen:    m.int("llama.context_length", required),
		Dim:       m.int("llama.embedding_length", required),
		HiddenDim: m.int("llama.feed_forward_length", required),
		NLayers:   m.int("llama.block_count", required),
		NHeads:    m.int("llama.attention.head_count", required),
		NormEps:   m.float("llama.attention.layer_norm_rms_epsilon", math.NaN()),
		RopeTheta: m.float("llama.rope.freq_base", defaultRopeBase),
		VocabSize: m.int("llama.vocab_size", 0),
	}
	c.NKVHeads = m.int("llama.attention.head_count_kv", c.NHeads)
	if c.NHeads > 0 {
		c.HeadDim = m.int("llama.attention.key_length", c.Dim/c.NHeads)
	}
	if v := m.int("llama.attention.value_length", c.HeadDim); v != c.HeadDim {
		m.fail("llama.attention.value_length %d differs from key_length %d", v, c.HeadDim)
	}
	if r := m.int("llama.rope.dimension_count", c.HeadDim); r != c.HeadDim {
		m.fail("llama.rope.dimension_count %d differs from head_dim %d: partial rotary embeddings are not supported", r, c.HeadDim)
	}
	if t := m.str("llama.rope.scaling.type", "none"); t != "none" {
		m.fail("llama.rope.scaling.type %q is not supported", t)
	}
	if m.has(keyRopeType) {
		c.RopeScale = &model.RopeScaling{
			Type:                m.str(keyRopeType, ""),
			Factor:              m.float(keyRopeFactor, math.NaN()),
			LowFreqFactor:       m.float(keyRopeLow, math.NaN()),
			HighFreqFactor:      m.float(keyRopeHigh, math.NaN()),
			OriginalMaxPosition: m.int(keyRopeOrigCtx, required),
		}
		if err := checkRopeScaling(c.RopeScale); err != nil {
			m.fail("%w", err)
		}
	}
	return c
}

// vocab reads the tokenizer; nil when the file has none.
func (m *meta) vocab() *model.Vocab {
	v := &model.Vocab{BOS: -1, EOS: -1, UNK: -1}
	switch kind := m.str("tokenizer.ggml.model", ""); kind {
	case "", "none", "no_vocab":
		return nil
	case tokModelSPM:
		v.Kind = model.VocabSPM
		v.AddSpacePrefix = m.bool("tokenizer.ggml.add_space_prefix", true)
	case tokModelBPE:
		v.Kind = model.VocabBPE
		v.AddSpacePrefix = m.bool("tokenizer.ggml.add_space_prefix", false)
		switch pre := m.str("tokenizer.ggml.pre", preGPT2); pre {
		case preLlama3GGUF:
			v.PreTokenizer = "llama3"
		case "default":
			v.PreTokenizer = preGPT2
		default:
			v.PreTokenizer = pre
		}
	default:
		m.fail("tokenizer.ggml.model %q is not supported (want %q or %q)", kind, tokModelSPM, tokModelBPE)
		return nil
	}
	v.Tokens = array[string](m, "tokenizer.ggml.tokens")
	v.Scores = array[float32](m, "tokenizer.ggml.scores")
	if types := array[int32](m, "tokenizer.ggml.token_type"); types != nil {
		v.Types = make([]model.TokenType, len(types))
		for i, t := range types {
			v.Types[i] = model.TokenType(t)
		}
	}
	v.Merges = array[string](m, "tokenizer.ggml.merges")
	v.AddBOS = m.bool("tokenizer.ggml.add_bos_token", true)
	v.ChatTemplate = m.str("tokenizer.chat_template", "")
	n := len(v.Tokens)
	if n == 0 {
		m.fail("tokenizer.ggml.tokens is missing or empty")
		return nil
	}
	if (v.Scores != nil && len(v.Scores) != n) || (v.Types != nil && len(v.Types) != n) {
		m.fail("%d tokens but %d scores and %d token types", n, len(v.Scores), len(v.Types))
	}
	id := func(key string) int {
		i := m.int(key, -2) // -2: absent, as -1 means required
		if i < 0 {
			return -1
		}
		if i >= n {
			m.fail("metadata %s: token id %d out of range for %d tokens", key, i, n)
		}
		return i
	}
	v.BOS = id("tokenizer.ggml.bos_token_id")
	v.EOS = id("tokenizer.ggml.eos_token_id")
	v.UNK = id("tokenizer.ggml.unknown_token_id")
	if m.has(keyEOTs) {
		for _, e := range array[uint32](m, keyEOTs) {
			if int64(e) >= int64(n) {
				m.fail("metadata %s: token id %d out of range for %d tokens", keyEOTs, e, n)
			}
			v.EOT = append(v.EOT, int(e))
		}
	} else {
		for _, key := range []string{"tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"} {
			if e := id(key); e >= 0 {
				v.EOT = append(v.EOT, e)
			}
		}
	}
	return v
}
