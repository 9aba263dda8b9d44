// Package model is the in-memory description of a Llama-family checkpoint
// that every file format loads into and every backend reads from: a Config,
// a set of named tensors and a vocabulary.
//
// Conventions, fixed for the whole runtime:
//   - Tensor names are the Hugging Face Llama names (see the Name helpers in
//     names.go), whatever the file format.
//   - Shapes are row-major, outermost dimension first, as PyTorch writes them:
//     a projection weight is (out, in).
//   - The q and k projection rows are in the original Meta layout, in which
//     RoPE rotates adjacent pairs (0,1), (2,3), ... of each head. llama2.c and
//     GGUF store them that way; the Hugging Face loader undoes the row
//     permutation that transformers applies, and the writer applies it again.
//   - Tensor data is raw little-endian bytes in the tensor's DType. It may be a
//     window into a memory-mapped file: treat it as read-only.
package model

import (
	"errors"
	"fmt"
	"io"
	"sort"
)

// Config holds the hyperparameters of a Llama-family decoder.
type Config struct {
	Arch       string `json:"arch"` // "llama" (Llama-2/3, Mistral share the graph)
	Dim        int    `json:"dim"`
	HiddenDim  int    `json:"hidden_dim"`
	NLayers    int    `json:"n_layers"`
	NHeads     int    `json:"n_heads"`
	NKVHeads   int    `json:"n_kv_heads"`
	HeadDim    int    `json:"head_dim"`
	VocabSize  int    `json:"vocab_size"`
	SeqLen     int    `json:"seq_len"` // maximum context length
	NormEps    float64
	RopeTheta  float64
	RopeScale  *RopeScaling `json:",omitempty"`
	TiedOutput bool         // classifier shares the token embedding
	// Synthetic marks a random-weight model made for speed tests only.
	Synthetic bool `json:",omitempty"`
	// Name is a human label (file name, HF model id, synthetic shape).
	Name string `json:",omitempty"`
}

// RopeScaling is Llama-3.1's frequency-dependent RoPE scaling ("rope_type":
// "llama3" in config.json).
type RopeScaling struct {
	Type                string  `json:"rope_type"`
	Factor              float64 `json:"factor"`
	LowFreqFactor       float64 `json:"low_freq_factor"`
	HighFreqFactor      float64 `json:"high_freq_factor"`
	OriginalMaxPosition int     `json:"original_max_position_embeddings"`
}

// MaxSeqLen is the longest context a config may claim: above every released
// model's (Llama 4 Scout claims 10M tokens). A larger claim is a corrupt or
// hostile file; no file-backed tensor bounds it, and a KV cache sized by it
// would be the first thing to take the process down.
const MaxSeqLen = 1 << 24

// Validate checks that the dimensions are positive, consistent and
// plausible. Most sizes are also bounded by the tensors a file must hold
// (Model.Check); the context length is bounded only here.
func (c *Config) Validate() error {
	switch {
	case c.Dim <= 0, c.HiddenDim <= 0, c.NLayers <= 0, c.NHeads <= 0, c.NKVHeads <= 0, c.VocabSize <= 0, c.SeqLen <= 0:
		return fmt.Errorf("config: non-positive dimension (dim %d, hidden %d, layers %d, heads %d, kv heads %d, vocab %d, seq_len %d)",
			c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKVHeads, c.VocabSize, c.SeqLen)
	case c.HeadDim <= 0 || c.HeadDim%2 != 0:
		return fmt.Errorf("config: head_dim %d must be positive and even", c.HeadDim)
	case c.NHeads%c.NKVHeads != 0:
		return fmt.Errorf("config: %d heads is not a multiple of %d kv heads", c.NHeads, c.NKVHeads)
	case c.Dim > 1<<20 || c.HiddenDim > 1<<20 || c.NLayers > 1<<12 || c.VocabSize > 1<<24 || c.NHeads > 1<<12 || c.HeadDim > 1<<14:
		return fmt.Errorf("config: implausibly large dimensions (dim %d, hidden %d, layers %d, vocab %d)", c.Dim, c.HiddenDim, c.NLayers, c.VocabSize)
	case c.SeqLen > MaxSeqLen:
		return fmt.Errorf("config: context length %d is implausible (at most %d)", c.SeqLen, MaxSeqLen)
	case !(c.NormEps > 0):
		return fmt.Errorf("config: norm eps %g must be positive", c.NormEps)
	case !(c.RopeTheta > 0):
		return fmt.Errorf("config: rope theta %g must be positive", c.RopeTheta)
	}
	return nil
}

// KVDim is the width of the k and v projections.
func (c *Config) KVDim() int { return c.NKVHeads * c.HeadDim }

// QDim is the width of the q projection (usually Dim).
func (c *Config) QDim() int { return c.NHeads * c.HeadDim }

// Tensor is a named, typed, shaped block of little-endian bytes.
type Tensor struct {
	Name  string
	DType DType
	Shape []int
	Data  []byte
	// Mapped says Data is a window of a read-only shared memory map of
	// the model file, so that Release may drop its pages (set by the
	// loaders; false for bytes on the heap).
	Mapped bool
}

// Release tells the kernel that the process no longer needs the pages of
// a mapped tensor's bytes, for a backend that has made its own copy: they
// leave the process's resident memory, and are read from the file again
// if touched. Data stays valid. It does nothing for a tensor that is not
// Mapped, or where the system has no such call.
func (t *Tensor) Release() {
	if t.Mapped {
		releasePages(t.Data)
	}
}

// Elems is the number of elements.
func (t *Tensor) Elems() int { return Elems(t.Shape) }

// Elems multiplies out a shape; an empty shape is a scalar.
func Elems(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Float32 decodes the tensor into a new float32 slice.
func (t *Tensor) Float32() ([]float32, error) {
	out := make([]float32, t.Elems())
	if err := Decode(out, t.Data, t.DType); err != nil {
		return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
	}
	return out, nil
}

// Checkpoint is a loaded checkpoint.
type Checkpoint struct {
	Config  Config
	Tensors map[string]*Tensor
	Vocab   *Vocab
	// Source names what was loaded (path) and its format ("llama2c", "hf", "gguf", "synthetic").
	Source, Format string
	closers        []io.Closer
}

// New returns an empty model with the given config.
func New(cfg Config) *Checkpoint {
	return &Checkpoint{Config: cfg, Tensors: map[string]*Tensor{}}
}

// Add stores a tensor under its name, replacing any earlier one.
func (m *Checkpoint) Add(t *Tensor) { m.Tensors[t.Name] = t }

// OnClose registers a resource (a memory mapping) to release in Close.
func (m *Checkpoint) OnClose(c io.Closer) { m.closers = append(m.closers, c) }

// Close releases memory mappings. Tensor data must not be used afterwards.
func (m *Checkpoint) Close() error {
	var errs []error
	for i := len(m.closers) - 1; i >= 0; i-- {
		errs = append(errs, m.closers[i].Close())
	}
	m.closers = nil
	return errors.Join(errs...)
}

// Names returns the tensor names in a stable order: embedding, layers in
// order, then the rest alphabetically.
func (m *Checkpoint) Names() []string {
	names := make([]string, 0, len(m.Tensors))
	for n := range m.Tensors {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return tensorOrder(names[i]) < tensorOrder(names[j]) })
	return names
}

// Tensor returns the named tensor after checking its shape, so callers can
// index it without further checks.
func (m *Checkpoint) Tensor(name string, shape ...int) (*Tensor, error) {
	t, ok := m.Tensors[name]
	if !ok {
		return nil, fmt.Errorf("model %s: missing tensor %q", m.Source, name)
	}
	if len(t.Shape) != len(shape) {
		return nil, fmt.Errorf("model %s: tensor %q has shape %v, want %v", m.Source, name, t.Shape, shape)
	}
	for i := range shape {
		if t.Shape[i] != shape[i] {
			return nil, fmt.Errorf("model %s: tensor %q has shape %v, want %v", m.Source, name, t.Shape, shape)
		}
	}
	if want := t.DType.Bytes(t.Elems()); want != len(t.Data) {
		return nil, fmt.Errorf("model %s: tensor %q holds %d bytes, %s %v needs %d", m.Source, name, len(t.Data), t.DType, t.Shape, want)
	}
	return t, nil
}

// Check verifies that every tensor the Llama graph needs is present with
// the shape the config implies.
func (m *Checkpoint) Check() error {
	if err := m.Config.Validate(); err != nil {
		return fmt.Errorf("model %s: %w", m.Source, err)
	}
	for _, s := range m.Config.Shapes() {
		if _, err := m.Tensor(s.Name, s.Shape...); err != nil {
			return err
		}
	}
	return nil
}

// ParamCount is the total number of weights.
func (m *Checkpoint) ParamCount() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += int64(t.Elems())
	}
	return n
}

// ByteCount is the total size of the tensor data.
func (m *Checkpoint) ByteCount() int64 {
	var n int64
	for _, t := range m.Tensors {
		n += int64(len(t.Data))
	}
	return n
}
