// Package llama2c reads Andrej Karpathy's llama2.c checkpoints: the legacy
// (v0) header of seven int32 values and the versioned fp32 header (magic
// "ak42", version 1, padded to 256 bytes), and the tokenizer.bin that goes
// with them.
package llama2c

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/acttail/acttail-gpu/runtime/model"
)

const (
	magicV1      = 0x616b3432 // "ak42"
	headerV1Size = 256
	legacyHeader = 7 * 4
)

// ErrTruncated marks a file whose header is a plausible llama2.c header but
// which is shorter than the weights it announces.
var ErrTruncated = errors.New("truncated")

// Header is the decoded checkpoint header.
type Header struct {
	Version    int // 0 legacy, 1 versioned fp32
	Config     model.Config
	DataOffset int64
}

// ParseHeader decodes the header at the start of data (at least 256 bytes
// or the whole file) and checks that a file of size bytes can hold the
// weights it announces.
func ParseHeader(data []byte, size int64, name string) (*Header, error) {
	if len(data) < legacyHeader {
		return nil, fmt.Errorf("%s: %d bytes is too short for a llama2.c header", name, len(data))
	}
	u32 := func(i int) int32 { return int32(binary.LittleEndian.Uint32(data[4*i:])) }
	h := &Header{}
	var p [7]int32
	var shared bool
	if uint32(u32(0)) == magicV1 {
		if len(data) < headerV1Size {
			return nil, fmt.Errorf("%s: truncated v1 header", name)
		}
		h.Version = int(u32(1))
		if h.Version != 1 {
			return nil, fmt.Errorf("%s: llama2.c format version %d is not supported (only the fp32 version 1 and the legacy header)", name, h.Version)
		}
		for i := range p {
			p[i] = u32(2 + i)
		}
		shared = data[36] != 0
		h.DataOffset = headerV1Size
	} else {
		for i := range p {
			p[i] = u32(i)
		}
		shared = p[5] > 0
		if p[5] < 0 {
			p[5] = -p[5]
		}
		h.DataOffset = legacyHeader
	}
	for i, v := range p {
		if v <= 0 {
			return nil, fmt.Errorf("%s: header value %d is %d; not a llama2.c checkpoint", name, i, v)
		}
	}
	cfg := model.Config{
		Arch: "llama", Dim: int(p[0]), HiddenDim: int(p[1]), NLayers: int(p[2]), NHeads: int(p[3]),
		NKVHeads: int(p[4]), VocabSize: int(p[5]), SeqLen: int(p[6]), NormEps: 1e-5, RopeTheta: 10000,
		TiedOutput: shared, Name: strings.TrimSuffix(filepath.Base(name), filepath.Ext(name)),
	}
	if cfg.Dim%cfg.NHeads != 0 {
		return nil, fmt.Errorf("%s: dim %d is not a multiple of %d heads", name, cfg.Dim, cfg.NHeads)
	}
	cfg.HeadDim = cfg.Dim / cfg.NHeads
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	h.Config = cfg
	if need := h.DataOffset + 4*weightCount(&cfg, h.Version); need > size {
		return nil, fmt.Errorf("%s: %w: want %d bytes, have %d (its llama2.c header announces dim %d, %d layers, vocab %d)",
			name, ErrTruncated, need, size, cfg.Dim, cfg.NLayers, cfg.VocabSize)
	}
	return h, nil
}

// block is one tensor in file order: count elements in `n` slices of shape.
type block struct {
	name  func(l int) string // nil for the RoPE tables, which are skipped
	shape []int
	layer bool // one per layer, stacked
}

func layout(c *model.Config, version int) []block {
	proj := func(p model.Projection) block {
		out, in := p.Shape(c)
		return block{func(l int) string { return model.ProjName(l, p) }, []int{out, in}, true}
	}
	fixed := func(n string) func(int) string { return func(int) string { return n } }
	attnNorm := block{model.AttnNormName, []int{c.Dim}, true}
	ffnNorm := block{model.FFNNormName, []int{c.Dim}, true}
	embed := block{fixed(model.NameEmbed), []int{c.VocabSize, c.Dim}, false}
	final := block{fixed(model.NameOutputNorm), []int{c.Dim}, false}
	rope := block{nil, []int{c.SeqLen, c.HeadDim / 2}, false}
	var bs []block
	if version == 0 {
		bs = []block{embed, attnNorm, proj(model.ProjQ), proj(model.ProjK), proj(model.ProjV), proj(model.ProjO),
			ffnNorm, proj(model.ProjGate), proj(model.ProjDown), proj(model.ProjUp), final, rope, rope}
	} else {
		bs = []block{attnNorm, ffnNorm, final, embed, proj(model.ProjQ), proj(model.ProjK), proj(model.ProjV),
			proj(model.ProjO), proj(model.ProjGate), proj(model.ProjDown), proj(model.ProjUp)}
	}
	if !c.TiedOutput {
		bs = append(bs, block{fixed(model.NameOutput), []int{c.VocabSize, c.Dim}, false})
	}
	return bs
}

func weightCount(c *model.Config, version int) int64 {
	var n int64
	for _, b := range layout(c, version) {
		k := int64(model.Elems(b.shape))
		if b.layer {
			k *= int64(c.NLayers)
		}
		n += k
	}
	return n
}

// Load memory-maps a llama2.c checkpoint and, if a tokenizer.bin (or
// tok<vocab>.bin) lies beside it, its vocabulary.
func Load(path string) (*model.Checkpoint, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", path, err)
	}
	if st.Size() < legacyHeader {
		return nil, fmt.Errorf("load %s: %d bytes is too short for a llama2.c checkpoint", path, st.Size())
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(st.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("load %s: mmap: %w", path, err)
	}
	m, err := fromBytes(data, path)
	if err != nil {
		syscall.Munmap(data)
		return nil, err
	}
	m.OnClose(unmapper(data))
	for _, t := range m.Tensors {
		t.Mapped = true
	}
	if tok := findTokenizer(path, m.Config.VocabSize); tok != "" {
		raw, err := os.ReadFile(tok)
		if err == nil {
			err = addVocab(m, raw, tok)
		}
		if err != nil {
			m.Close()
			return nil, err
		}
	}
	return m, nil
}

// Parse builds a model over data, a whole checkpoint in memory, with the
// vocabulary of tokenizer, a tokenizer.bin in memory (nil: none). The
// tensors are windows into data, which must stay unchanged while the model
// is in use. name is the checkpoint's file name, which names the model.
func Parse(data, tokenizer []byte, name string) (*model.Checkpoint, error) {
	m, err := fromBytes(data, name)
	if err != nil {
		return nil, err
	}
	if tokenizer != nil {
		if err := addVocab(m, tokenizer, name+" tokenizer"); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// addVocab parses raw, a tokenizer.bin named name, as m's vocabulary.
func addVocab(m *model.Checkpoint, raw []byte, name string) error {
	v, err := ParseVocab(raw, m.Config.VocabSize, name)
	if err != nil {
		return err
	}
	m.Vocab = v
	return nil
}

type unmapper []byte

func (u unmapper) Close() error { return syscall.Munmap(u) }

// fromBytes builds a model whose tensors are windows into data.
func fromBytes(data []byte, name string) (*model.Checkpoint, error) {
	h, err := ParseHeader(data, int64(len(data)), name)
	if err != nil {
		return nil, fmt.Errorf("load %w", err)
	}
	m := model.New(h.Config)
	m.Source, m.Format = name, "llama2c"
	off := h.DataOffset
	take := func(shape []int) []byte {
		n := int64(4 * model.Elems(shape))
		b := data[off : off+n : off+n]
		off += n
		return b
	}
	for _, b := range layout(&h.Config, h.Version) {
		count := 1
		if b.layer {
			count = h.Config.NLayers
		}
		for l := range count {
			d := take(b.shape)
			if b.name != nil {
				m.Add(&model.Tensor{Name: b.name(l), DType: model.F32, Shape: b.shape, Data: d})
			}
		}
	}
	if err := m.Check(); err != nil {
		return nil, err
	}
	return m, nil
}

// findTokenizer looks beside the checkpoint for tokenizer.bin or tok<N>.bin.
func findTokenizer(path string, vocab int) string {
	dir := filepath.Dir(path)
	for _, n := range []string{fmt.Sprintf("tok%d.bin", vocab), "tokenizer.bin"} {
		p := filepath.Join(dir, n)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// IsCheckpoint reports whether path looks like a llama2.c checkpoint: a
// regular file whose header parses and whose size fits it.
func IsCheckpoint(path string) bool { return Check(path) == nil }

// Check says why path is not a llama2.c checkpoint, or returns nil if it
// is one. A plausible header on a file too short for its weights gives an
// error wrapping ErrTruncated.
func Check(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	buf := make([]byte, headerV1Size)
	n, _ := f.ReadAt(buf, 0)
	_, err = ParseHeader(buf[:n], st.Size(), path)
	return err
}

// Write stores m as a version 1 (fp32) llama2.c checkpoint. RoPE tables are
// not part of version 1; weights of any dtype are widened to fp32.
func Write(m *model.Checkpoint, path string) (err error) {
	c := m.Config
	if err := m.Check(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if c.HeadDim*c.NHeads != c.Dim {
		return fmt.Errorf("write %s: llama2.c needs head_dim × heads = dim (%d × %d ≠ %d)", path, c.HeadDim, c.NHeads, c.Dim)
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".llama2c-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	hdr := make([]byte, headerV1Size)
	binary.LittleEndian.PutUint32(hdr, magicV1)
	binary.LittleEndian.PutUint32(hdr[4:], 1)
	for i, v := range []int{c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKVHeads, c.VocabSize, c.SeqLen} {
		binary.LittleEndian.PutUint32(hdr[8+4*i:], uint32(v))
	}
	if c.TiedOutput {
		hdr[36] = 1
	}
	w.Write(hdr)
	for _, b := range layout(&c, 1) {
		count := 1
		if b.layer {
			count = c.NLayers
		}
		for l := range count {
			t := m.Tensors[b.name(l)]
			if t.DType == model.F32 {
				w.Write(t.Data)
				continue
			}
			v, err := t.Float32()
			if err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			enc, _ := model.Encode(v, model.F32)
			w.Write(enc)
		}
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return os.Rename(f.Name(), path)
}
