// Package hf loads and writes Hugging Face model directories: config.json,
// safetensors weights (one file or shards listed in
// model.safetensors.index.json) and the tokenizers library's
// tokenizer.json with transformers' tokenizer_config.json and
// generation_config.json.
//
// Weights are memory-mapped read-only: a loaded model's tensors are windows
// into the files, released by Model.Close, except the q and k projections,
// which are copied because their rows are reordered. transformers stores
// those rows so that RoPE rotates the halves (i, i+head_dim/2) of a head;
// the runtime's layout (see package model) rotates adjacent pairs
// (2i, 2i+1). Within each head, HF row j*(head_dim/2)+i holds Meta row
// 2i+j for j in {0, 1}. Load undoes this and Write applies it.
package hf

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// File names in a model directory.
const (
	configFile       = "config.json"
	weightsFile      = "model.safetensors"
	indexFile        = "model.safetensors.index.json"
	tokenizerFile    = "tokenizer.json"
	tokenizerCfgFile = "tokenizer_config.json"
	generationFile   = "generation_config.json"
)

// IsDir reports whether path is a directory holding a config.json.
func IsDir(path string) bool {
	if st, err := os.Stat(path); err != nil || !st.IsDir() {
		return false
	}
	st, err := os.Stat(filepath.Join(path, configFile))
	return err == nil && st.Mode().IsRegular()
}

// Load reads the Llama or Mistral checkpoint in dir. Tensor data stays
// memory-mapped until the model is closed. The vocabulary is nil when dir
// has no tokenizer.json.
func Load(dir string) (*model.Checkpoint, error) {
	data, err := os.ReadFile(filepath.Join(dir, configFile))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	cfg, err := parseConfig(data, filepath.Base(filepath.Clean(dir)))
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", filepath.Join(dir, configFile), err)
	}
	m := model.New(cfg)
	m.Source, m.Format = dir, "hf"
	if err := loadRest(m, dir); err != nil {
		m.Close() // the load error matters more than an unmap error
		return nil, err
	}
	return m, nil
}

// loadRest fills m from dir once the config is known.
func loadRest(m *model.Checkpoint, dir string) error {
	cfg := &m.Config
	if err := loadWeights(m, dir); err != nil {
		return err
	}
	if _, ok := m.Tensors[model.NameOutput]; !ok {
		// Several checkpoints omit lm_head without setting
		// tie_word_embeddings; transformers then ties it.
		m.Config.TiedOutput = true
	}
	for l := range cfg.NLayers {
		if err := permuteQK(m, l, false); err != nil {
			return fmt.Errorf("load %s: %w", dir, err)
		}
	}
	v, err := loadVocab(dir, cfg.VocabSize)
	if err != nil {
		return err
	}
	m.Vocab = v
	return m.Check()
}

// loadWeights maps model.safetensors, or else every shard named in
// model.safetensors.index.json, and adds their tensors to m.
func loadWeights(m *model.Checkpoint, dir string) error {
	single := filepath.Join(dir, weightsFile)
	if _, err := os.Stat(single); err == nil {
		return addFile(m, single, nil)
	}
	index := filepath.Join(dir, indexFile)
	data, err := os.ReadFile(index)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("load %s: neither %s nor %s", dir, weightsFile, indexFile)
	}
	if err != nil {
		return fmt.Errorf("load %s: %w", index, err)
	}
	var idx struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &idx); err != nil {
		return fmt.Errorf("load %s: bad JSON: %v", index, err)
	}
	if len(idx.WeightMap) == 0 {
		return fmt.Errorf("load %s: empty weight_map", index)
	}
	shards := map[string][]string{}
	for name, file := range idx.WeightMap {
		if !filepath.IsLocal(file) {
			return fmt.Errorf("load %s: tensor %q: shard %q is not a file in the model directory", index, name, file)
		}
		shards[file] = append(shards[file], name)
	}
	files := make([]string, 0, len(shards))
	for f := range shards {
		files = append(files, f)
	}
	sort.Strings(files)
	for _, f := range files {
		if err := addFile(m, filepath.Join(dir, f), shards[f]); err != nil {
			return err
		}
	}
	return nil
}

// addFile maps one safetensors file into m, registering the unmapping.
// want lists tensors an index promises the file holds.
func addFile(m *model.Checkpoint, path string, want []string) error {
	mf, tensors, err := openSafetensors(path)
	if err != nil {
		return err
	}
	m.OnClose(mf)
	for _, name := range want {
		if _, ok := tensors[name]; !ok {
			return fmt.Errorf("load %s: missing tensor %q listed in %s", path, name, indexFile)
		}
	}
	for name, t := range tensors {
		if strings.HasSuffix(name, "rotary_emb.inv_freq") {
			continue // derived from rope_theta; older exports saved it
		}
		if _, dup := m.Tensors[name]; dup {
			return fmt.Errorf("load %s: tensor %q appears in more than one shard", path, name)
		}
		m.Add(t)
	}
	return nil
}

// loadVocab reads the tokenizer files in dir, or returns nil without a
// tokenizer.json.
func loadVocab(dir string, vocabSize int) (*model.Vocab, error) {
	read := func(name string) ([]byte, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", dir, err)
		}
		return data, nil
	}
	tok, err := read(tokenizerFile)
	if err != nil || tok == nil {
		return nil, err
	}
	cfg, err := read(tokenizerCfgFile)
	if err != nil {
		return nil, err
	}
	gen, err := read(generationFile)
	if err != nil {
		return nil, err
	}
	v, err := parseVocab(tok, cfg, gen, vocabSize)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", dir, err)
	}
	return v, nil
}

// permuteQK replaces layer l's q and k projections by copies with rows in
// the runtime's order (toHF false) or in transformers' order (toHF true).
// Tensors absent or of the wrong shape are left for Model.Check to report.
func permuteQK(m *model.Checkpoint, l int, toHF bool) error {
	c := &m.Config
	for _, p := range []struct {
		proj  model.Projection
		heads int
	}{{model.ProjQ, c.NHeads}, {model.ProjK, c.NKVHeads}} {
		out, in := p.proj.Shape(c)
		t, err := m.Tensor(model.ProjName(l, p.proj), out, in)
		if err != nil {
			continue
		}
		data, err := permuteRows(t.Data, out, c.HeadDim, toHF)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		m.Add(&model.Tensor{Name: t.Name, DType: t.DType, Shape: t.Shape, Data: data})
	}
	return nil
}

// permuteRows returns a copy of data, a matrix of rows equal-sized rows
// forming heads of headDim rows, with the rows of each head reordered from
// transformers' layout to the runtime's (toHF false) or back.
func permuteRows(data []byte, rows, headDim int, toHF bool) ([]byte, error) {
	if rows <= 0 || headDim <= 0 || headDim%2 != 0 || rows%headDim != 0 || len(data)%rows != 0 {
		return nil, fmt.Errorf("cannot permute %d bytes as %d rows of heads of %d", len(data), rows, headDim)
	}
	rb := len(data) / rows
	out := make([]byte, len(data))
	src := metaSource
	if toHF {
		src = hfSource
	}
	for r := range rows {
		s := src(r, headDim)
		copy(out[r*rb:(r+1)*rb], data[s*rb:(s+1)*rb])
	}
	return out, nil
}

// hfSource is the Meta row that HF row r holds: within a head, HF row
// j*(headDim/2)+i holds Meta row 2i+j.
func hfSource(r, headDim int) int {
	h, k, half := r/headDim, r%headDim, headDim/2
	j, i := k/half, k%half
	return h*headDim + 2*i + j
}

// metaSource is the HF row that holds Meta row r; the inverse of hfSource.
func metaSource(r, headDim int) int {
	h, k, half := r/headDim, r%headDim, headDim/2
	i, j := k/2, k%2
	return h*headDim + j*half + i
}

// Write saves m to dir (created if needed) as a Hugging Face checkpoint
// with weights of type dtype (F32, F16 or BF16), converting as needed, and
// the tokenizer files when m has a vocabulary. Load reads it back to the
// same config, tensors and vocabulary; a scores-only SentencePiece
// vocabulary gains the merges spmMerges derives. Existing files are
// replaced atomically, so dir may be the directory m was loaded from.
func Write(m *model.Checkpoint, dir string, dtype model.DType) error {
	if _, err := stName(dtype); err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	if err := m.Check(); err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	cfg := &m.Config
	if v := m.Vocab; v != nil && len(v.Tokens) > cfg.VocabSize {
		return fmt.Errorf("write %s: %d tokens exceed vocab size %d", dir, len(v.Tokens), cfg.VocabSize)
	}
	var tok, tokCfg, gen map[string]any
	if m.Vocab != nil {
		var err error
		if tok, tokCfg, gen, err = tokenizerFiles(m.Vocab); err != nil {
			return fmt.Errorf("write %s: %w", dir, err)
		}
	}
	// Map q/k names to their head counts, so the writer permutes them.
	heads := map[string]int{}
	for l := range cfg.NLayers {
		heads[model.ProjName(l, model.ProjQ)] = cfg.NHeads
		heads[model.ProjName(l, model.ProjK)] = cfg.NKVHeads
	}
	var tws []tensorWriter
	for _, name := range m.Names() {
		t := m.Tensors[name]
		tw, err := newTensorWriter(t, dtype, heads[name], cfg.HeadDim)
		if err != nil {
			return fmt.Errorf("write %s: tensor %q: %w", dir, name, err)
		}
		tws = append(tws, tw)
	}

	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("write %s: %w", dir, err)
	}
	if err := writeSafetensors(filepath.Join(dir, weightsFile), tws, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, configFile), configJSON(cfg, dtype, m.Vocab)); err != nil {
		return err
	}
	if m.Vocab == nil {
		return nil
	}
	for _, f := range []struct {
		name string
		v    any
	}{{tokenizerFile, tok}, {tokenizerCfgFile, tokCfg}, {generationFile, gen}} {
		if err := writeJSON(filepath.Join(dir, f.name), f.v); err != nil {
			return err
		}
	}
	return nil
}

// newTensorWriter prepares t for streaming as dtype, permuting its rows
// into transformers' order when heads > 0. It converts a row at a time, so
// writing needs no second copy of the model.
func newTensorWriter(t *model.Tensor, dtype model.DType, heads, headDim int) (tensorWriter, error) {
	elems := t.Elems()
	for _, d := range t.Shape {
		if d < 0 {
			return tensorWriter{}, fmt.Errorf("negative dimension in shape %v", t.Shape)
		}
	}
	if want := t.DType.Bytes(elems); want < 0 || want != len(t.Data) {
		return tensorWriter{}, fmt.Errorf("holds %d bytes, %s %v needs %d", len(t.Data), t.DType, t.Shape, want)
	}
	// A row is the outer index of a matrix, or the whole tensor when there
	// is none or block-typed rows would split blocks.
	rows := 1
	if len(t.Shape) >= 2 && t.Shape[0] > 0 && t.DType.Bytes(elems/t.Shape[0]) >= 0 {
		rows = t.Shape[0]
	}
	rowElems := elems / rows
	srcRow, dstRow := t.DType.Bytes(rowElems), dtype.Bytes(rowElems)
	order := func(r int) int { return r }
	if heads > 0 {
		if headDim <= 0 || headDim%2 != 0 || rows != heads*headDim {
			return tensorWriter{}, fmt.Errorf("shape %v is not %d heads of %d rows", t.Shape, heads, headDim)
		}
		order = func(r int) int { return hfSource(r, headDim) }
	}
	write := func(w io.Writer) error {
		var buf []float32
		if t.DType != dtype {
			buf = make([]float32, rowElems)
		}
		for r := range rows {
			s := order(r)
			row := t.Data[s*srcRow : (s+1)*srcRow]
			if buf != nil {
				if err := model.Decode(buf, row, t.DType); err != nil {
					return err
				}
				var err error
				if row, err = model.Encode(buf, dtype); err != nil {
					return err
				}
			}
			if _, err := w.Write(row); err != nil {
				return err
			}
		}
		return nil
	}
	return tensorWriter{name: t.Name, dtype: dtype, shape: t.Shape, size: int64(rows) * int64(dstRow), write: write}, nil
}
