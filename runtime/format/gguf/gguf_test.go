package gguf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/model"
)

func testConfig() model.Config {
	return model.Config{Arch: "llama", Dim: 64, HiddenDim: 96, NLayers: 2, NHeads: 4, NKVHeads: 2, HeadDim: 16,
		VocabSize: 300, SeqLen: 128, NormEps: 1e-5, RopeTheta: 10000, Name: "test-model"}
}

// randModel fills every tensor cfg implies with random values: matrices in
// dtype, norms in F32.
func randModel(t *testing.T, cfg model.Config, dtype model.DType, seed uint64) *model.Checkpoint {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	m := model.New(cfg)
	for _, s := range cfg.Shapes() {
		f := make([]float32, model.Elems(s.Shape))
		for i := range f {
			f[i] = float32(r.NormFloat64() * 0.1)
		}
		d := dtype
		if len(s.Shape) == 1 {
			d = model.F32
			for i := range f {
				f[i] += 1
			}
		}
		data, err := model.Encode(f, d)
		if err != nil {
			t.Fatal(err)
		}
		m.Add(&model.Tensor{Name: s.Name, DType: d, Shape: s.Shape, Data: data})
	}
	return m
}

func spmVocab(n int) *model.Vocab {
	v := &model.Vocab{Kind: model.VocabSPM, BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true}
	for i := range n {
		v.Tokens = append(v.Tokens, fmt.Sprintf("▁tok%d", i))
		v.Scores = append(v.Scores, -float32(i)/3)
		v.Types = append(v.Types, model.TokenNormal)
	}
	v.Tokens[0], v.Types[0] = "<unk>", model.TokenUnknown
	v.Tokens[1], v.Types[1] = "<s>", model.TokenControl
	v.Tokens[2], v.Types[2] = "</s>", model.TokenControl
	v.Tokens[3], v.Types[3] = "<0x0A>", model.TokenByte
	return v
}

func bpeVocab(n int) *model.Vocab {
	v := &model.Vocab{Kind: model.VocabBPE, PreTokenizer: "llama3", BOS: n - 3, EOS: n - 2, UNK: -1, AddBOS: true,
		EOT: []int{n - 1, n - 2}, ChatTemplate: "{{ messages }}"}
	for i := range n {
		v.Tokens = append(v.Tokens, fmt.Sprintf("Ġt%d", i))
	}
	v.Merges = []string{"Ġ t", "Ġt 1", "Ġt1 0"}
	return v
}

func writeLoad(t *testing.T, m *model.Checkpoint, dtype model.DType) *model.Checkpoint {
	t.Helper()
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := Write(m, path, dtype); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { got.Close() })
	if got.Format != "gguf" || got.Source != path {
		t.Errorf("source %q format %q", got.Source, got.Format)
	}
	return got
}

func sameTensors(t *testing.T, want, got *model.Checkpoint) {
	t.Helper()
	if len(got.Tensors) != len(want.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(want.Tensors))
	}
	for name, w := range want.Tensors {
		g := got.Tensors[name]
		if g == nil {
			t.Fatalf("tensor %s missing", name)
		}
		if g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
			t.Fatalf("tensor %s: %s %v (%d bytes), want %s %v (%d bytes), data equal %v",
				name, g.DType, g.Shape, len(g.Data), w.DType, w.Shape, len(w.Data), bytes.Equal(g.Data, w.Data))
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, dtype := range []model.DType{model.F32, model.F16, model.BF16, model.Q8_0} {
		for _, tied := range []bool{false, true} {
			for _, vk := range []string{"spm", "bpe", "none"} {
				t.Run(fmt.Sprintf("%s/tied=%v/%s", dtype, tied, vk), func(t *testing.T) {
					cfg := testConfig()
					cfg.TiedOutput = tied
					var v *model.Vocab
					switch vk {
					case "spm":
						v = spmVocab(cfg.VocabSize)
					case "bpe":
						v = bpeVocab(cfg.VocabSize)
						cfg.RopeTheta = 500000
						cfg.RopeScale = &model.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 64}
						cfg.Synthetic = true
					}
					m := randModel(t, cfg, dtype, uint64(dtype))
					m.Vocab = v
					got := writeLoad(t, m, dtype)
					if !reflect.DeepEqual(got.Config, m.Config) {
						t.Errorf("config\n got %+v\nwant %+v", got.Config, m.Config)
					}
					if !reflect.DeepEqual(got.Vocab, m.Vocab) {
						t.Errorf("vocab\n got %+v\nwant %+v", got.Vocab, m.Vocab)
					}
					sameTensors(t, m, got)
				})
			}
		}
	}
}

// TestConvert writes an F32 model in each dtype and checks the result
// against model.Encode, the reference quantizer.
func TestConvert(t *testing.T) {
	cfg := testConfig()
	cfg.HiddenDim = 80 // down_proj rows of 80 cannot be Q8_0: F16 instead
	src := randModel(t, cfg, model.F32, 9)
	for _, dtype := range []model.DType{model.F16, model.BF16, model.Q8_0} {
		got := writeLoad(t, src, dtype)
		for name, s := range src.Tensors {
			g := got.Tensors[name]
			want := dtype
			switch {
			case len(s.Shape) == 1:
				want = model.F32
			case dtype == model.Q8_0 && s.Shape[1]%32 != 0:
				want = model.F16
			}
			f, err := s.Float32()
			if err != nil {
				t.Fatal(err)
			}
			ref, err := model.Encode(f, want)
			if err != nil {
				t.Fatal(err)
			}
			if g.DType != want || !bytes.Equal(g.Data, ref) {
				t.Fatalf("%s as %s: got %s, data equal to reference %v", name, dtype, g.DType, bytes.Equal(g.Data, ref))
			}
			dec, err := g.Float32()
			if err != nil {
				t.Fatal(err)
			}
			for i := range f {
				// Q8_0 error is at most half a step of amax/127 per block; the
				// values are ~N(0, 0.1) so 0.01 is a generous bound for all.
				if math.Abs(float64(dec[i]-f[i])) > 0.01 {
					t.Fatalf("%s as %s: [%d] %g -> %g", name, want, i, f[i], dec[i])
				}
			}
		}
	}
}

// TestShapeOrder checks that GGUF's ne lists the innermost dimension first.
func TestShapeOrder(t *testing.T) {
	// A hand-built file: no metadata, one 2x3 F32 tensor "w" holding 0..5.
	var b builder
	b.header(3, 1, 0)
	b.str("w")
	b.u32(2)
	b.u64(3) // ne[0]: the row length
	b.u64(2)
	b.u32(uint32(GGMLF32))
	b.u64(0)
	hdr := b.Len()
	b.pad(32)
	for i := range 6 {
		b.u32(math.Float32bits(float32(i)))
	}
	f, err := ReadFile(bytes.NewReader(b.Bytes()), int64(b.Len()))
	if err != nil {
		t.Fatal(err)
	}
	ti := f.Tensors[0]
	if f.DataOffset != int64(alignUp(int64(hdr), 32)) || !reflect.DeepEqual(ti.Dims, []uint64{3, 2}) ||
		!reflect.DeepEqual(ti.Shape(), []int{2, 3}) || ti.Size != 24 || f.Version != 3 || f.Alignment != 32 {
		t.Fatalf("parsed %+v, tensor %+v", f, ti)
	}
	row1 := b.Bytes()[f.DataOffset+12 : f.DataOffset+24]
	if math.Float32frombits(binary.LittleEndian.Uint32(row1)) != 3 {
		t.Fatal("row 1 does not start with element 3")
	}

	// And Write stores a (kv_dim, dim) projection as ne = [dim, kv_dim].
	cfg := testConfig()
	m := randModel(t, cfg, model.F32, 1)
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := Write(m, path, model.F32); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err = ReadFile(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range f.Tensors {
		if ti.Name != "blk.1.attn_k.weight" {
			continue
		}
		if !reflect.DeepEqual(ti.Dims, []uint64{64, 32}) {
			t.Fatalf("attn_k ne %v, want [64 32]", ti.Dims)
		}
		start := f.DataOffset + int64(ti.Offset)
		if !bytes.Equal(raw[start:start+int64(ti.Size)], m.Tensors[model.ProjName(1, model.ProjK)].Data) {
			t.Fatal("attn_k bytes differ from k_proj")
		}
		return
	}
	t.Fatal("no blk.1.attn_k.weight")
}

// builder assembles hand-made GGUF bytes.
type builder struct{ bytes.Buffer }

func (b *builder) u32(v uint32) { binary.Write(&b.Buffer, binary.LittleEndian, v) }
func (b *builder) u64(v uint64) { binary.Write(&b.Buffer, binary.LittleEndian, v) }
func (b *builder) str(s string) { b.u64(uint64(len(s))); b.WriteString(s) }
func (b *builder) pad(a int) {
	for b.Len()%a != 0 {
		b.WriteByte(0)
	}
}
func (b *builder) header(version uint32, tensors, kvs uint64) {
	b.u32(Magic)
	b.u32(version)
	b.u64(tensors)
	b.u64(kvs)
}

// tensorInfo appends an info record for an F32-or-other tensor.
func (b *builder) tensorInfo(name string, typ GGMLType, off uint64, dims ...uint64) {
	b.str(name)
	b.u32(uint32(len(dims)))
	for _, d := range dims {
		b.u64(d)
	}
	b.u32(uint32(typ))
	b.u64(off)
}

func TestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		build      func(b *builder)
	}{
		{"bad magic", "bad magic", func(b *builder) { b.u32(0x46554746); b.u32(3); b.u64(0); b.u64(0) }},
		{"version 1", "version 1", func(b *builder) { b.header(1, 0, 0) }},
		{"big endian", "big-endian", func(b *builder) { b.header(0x03000000, 0, 0) }},
		{"short", "needs 8 bytes", func(b *builder) { b.u32(Magic); b.u32(3); b.u32(0) }},
		{"lying key length", "exceeds", func(b *builder) { b.header(3, 0, 1); b.u64(1 << 40); b.WriteString("key and some bytes") }},
		{"lying string value", "exceeds the", func(b *builder) {
			b.header(3, 0, 1)
			b.str("k")
			b.u32(uint32(TypeString))
			b.u64(1 << 62)
			b.WriteString("xx")
		}},
		{"huge array count", "cannot fit", func(b *builder) {
			b.header(3, 0, 1)
			b.str("k")
			b.u32(uint32(TypeArray))
			b.u32(uint32(TypeUint32))
			b.u64(1 << 61)
			b.u64(0)
		}},
		{"huge string array count", "cannot fit", func(b *builder) {
			b.header(3, 0, 1)
			b.str("k")
			b.u32(uint32(TypeArray))
			b.u32(uint32(TypeString))
			b.u64(math.MaxUint64)
			b.u64(0)
		}},
		{"nested array", "arrays of arrays", func(b *builder) {
			b.header(3, 0, 1)
			b.str("k")
			b.u32(uint32(TypeArray))
			b.u32(uint32(TypeArray))
			b.u64(1)
			b.u64(0)
		}},
		{"huge tensor count", "cannot fit", func(b *builder) { b.header(3, 1<<50, 0); b.u64(0) }},
		{"huge kv count", "cannot fit", func(b *builder) { b.header(3, 0, math.MaxUint64); b.u64(0) }},
		{"bad value type", "unknown value type 13", func(b *builder) { b.header(3, 0, 1); b.str("k"); b.u32(13); b.u64(0) }},
		{"bad array type", "unknown array element type", func(b *builder) {
			b.header(3, 0, 1)
			b.str("k")
			b.u32(uint32(TypeArray))
			b.u32(77)
			b.u64(0)
		}},
		{"bad bool", "neither 0 nor 1", func(b *builder) { b.header(3, 0, 1); b.str("k"); b.u32(uint32(TypeBool)); b.WriteByte(2) }},
		{"duplicate key", "twice", func(b *builder) {
			b.header(3, 0, 2)
			for range 2 {
				b.str("k")
				b.u32(uint32(TypeUint8))
				b.WriteByte(1)
			}
		}},
		{"bad alignment", "general.alignment", func(b *builder) {
			b.header(3, 0, 1)
			b.str("general.alignment")
			b.u32(uint32(TypeUint32))
			b.u32(24)
		}},
		{"n_dims 9", "n_dims 9", func(b *builder) {
			b.header(3, 1, 0)
			b.tensorInfo("w", GGMLF32, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1)
			b.Write(make([]byte, 64))
		}},
		{"zero dim", "out of range", func(b *builder) { b.header(3, 1, 0); b.tensorInfo("w", GGMLF32, 0, 4, 0); b.Write(make([]byte, 64)) }},
		{"huge dims", "out of range", func(b *builder) {
			b.header(3, 1, 0)
			b.tensorInfo("w", GGMLF32, 0, 1<<40, 1<<40)
			b.Write(make([]byte, 64))
		}},
		{"bad ggml type", "unknown ggml type 99", func(b *builder) { b.header(3, 1, 0); b.tensorInfo("w", 99, 0, 4); b.Write(make([]byte, 64)) }},
		{"partial block", "not a multiple", func(b *builder) { b.header(3, 1, 0); b.tensorInfo("w", GGMLQ8_0, 0, 16); b.Write(make([]byte, 64)) }},
		{"misaligned", "alignment", func(b *builder) { b.header(3, 1, 0); b.tensorInfo("w", GGMLF32, 4, 4); b.Write(make([]byte, 64)) }},
		{"data out of range", "past the end", func(b *builder) {
			b.header(3, 1, 0)
			b.tensorInfo("w", GGMLF32, 0, 64)
			b.pad(32)
			b.Write(make([]byte, 255))
		}},
		{"offset out of range", "past the end", func(b *builder) {
			b.header(3, 1, 0)
			b.tensorInfo("w", GGMLF32, 1<<63, 1)
			b.pad(32)
			b.Write(make([]byte, 64))
		}},
		{"overlap", "overlaps", func(b *builder) {
			b.header(3, 2, 0)
			b.tensorInfo("a", GGMLF32, 0, 16)
			b.tensorInfo("b", GGMLF32, 32, 16)
			b.pad(32)
			b.Write(make([]byte, 128))
		}},
		{"duplicate tensor", "twice", func(b *builder) {
			b.header(3, 2, 0)
			b.tensorInfo("a", GGMLF32, 0, 8)
			b.tensorInfo("a", GGMLF32, 32, 8)
			b.pad(32)
			b.Write(make([]byte, 128))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b builder
			tc.build(&b)
			_, err := ReadFile(bytes.NewReader(b.Bytes()), int64(b.Len()))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// tinyFile is a small valid model file: one layer, an SPM vocabulary.
func tinyFile(t testing.TB, dtype model.DType) []byte {
	cfg := model.Config{Arch: "llama", Dim: 32, HiddenDim: 32, NLayers: 1, NHeads: 2, NKVHeads: 1, HeadDim: 16,
		VocabSize: 8, SeqLen: 16, NormEps: 1e-6, RopeTheta: 10000, TiedOutput: true, Name: "tiny"}
	m := model.New(cfg)
	for _, s := range cfg.Shapes() {
		d := dtype
		if len(s.Shape) == 1 {
			d = model.F32
		}
		m.Add(&model.Tensor{Name: s.Name, DType: d, Shape: s.Shape, Data: make([]byte, d.Bytes(model.Elems(s.Shape)))})
	}
	m.Vocab = spmVocab(cfg.VocabSize)
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := Write(m, path, dtype); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestTruncated(t *testing.T) {
	raw := tinyFile(t, model.F16)
	if _, err := decode(raw, "tiny"); err != nil {
		t.Fatal(err)
	}
	for n := range len(raw) {
		if _, err := decode(raw[:n], "cut"); err == nil {
			t.Fatalf("prefix of %d of %d bytes decoded", n, len(raw))
		}
	}
	// Load goes through the same decode after mapping the file; check that
	// path on a spread of prefixes, the empty file included.
	path := filepath.Join(t.TempDir(), "cut.gguf")
	for n := 0; n < len(raw); n += 1 + n/8 {
		if err := os.WriteFile(path, raw[:n], 0o644); err != nil {
			t.Fatal(err)
		}
		if m, err := Load(path); err == nil {
			m.Close()
			t.Fatalf("prefix of %d of %d bytes loaded", n, len(raw))
		}
	}
}

// rewrite re-encodes raw with the metadata changed by edit, keeping the
// tensor infos and data.
func rewrite(t *testing.T, raw []byte, edit func([]KV) []KV, editTensors func([]TensorInfo)) []byte {
	t.Helper()
	f, err := ReadFile(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := &writer{w: bufio.NewWriter(&out)}
	var ts []outTensor
	for _, ti := range f.Tensors {
		ts = append(ts, outTensor{info: ti})
	}
	if editTensors != nil {
		infos := make([]TensorInfo, len(ts))
		for i := range ts {
			infos[i] = ts[i].info
		}
		editTensors(infos)
		for i := range ts {
			ts[i].info = infos[i]
		}
	}
	w.header(edit(f.Metadata), ts)
	w.pad(DefaultAlignment)
	w.write(raw[f.DataOffset:])
	if err := w.w.Flush(); err != nil || w.err != nil {
		t.Fatal(err, w.err)
	}
	return out.Bytes()
}

func setKey(key string, v Value) func([]KV) []KV {
	return func(kvs []KV) []KV {
		out := []KV{}
		for _, kv := range kvs {
			if kv.Key != key {
				out = append(out, kv)
			}
		}
		if v.V != nil {
			out = append(out, KV{key, v})
		}
		return out
	}
}

func TestLoadRejects(t *testing.T) {
	raw := tinyFile(t, model.F16)
	keep := func(kvs []KV) []KV { return kvs }
	for _, tc := range []struct {
		name, want  string
		edit        func([]KV) []KV
		editTensors func([]TensorInfo)
	}{
		{"arch", `architecture "gpt2"`, setKey("general.architecture", str("gpt2")), nil},
		{"missing dim", "missing metadata key llama.embedding_length", setKey("llama.embedding_length", Value{}), nil},
		{"wrong type", "llama.block_count", setKey("llama.block_count", str("one")), nil},
		{"rope scaling", "not supported", setKey("llama.rope.scaling.type", str("yarn")), nil},
		{"tokenizer", "tokenizer.ggml.model", setKey("tokenizer.ggml.model", str("bert")), nil},
		{"bos range", "out of range", setKey("tokenizer.ggml.bos_token_id", u32(8)), nil},
		{"vocab size", "tokens for a vocabulary", setKey("llama.vocab_size", u32(9)), nil},
		{"unsupported type", `tensor "blk.0.attn_q.weight": ggml type Q4_0 is not supported`, keep, func(ts []TensorInfo) {
			for i := range ts {
				if ts[i].Name == "blk.0.attn_q.weight" {
					ts[i].Type = 2 // Q4_0: 32x32 F16 is 2048 bytes, as Q4_0 576: still in range
				}
			}
		}},
		{"unknown tensor", `unexpected tensor "blk.5.attn_q.weight"`, keep, func(ts []TensorInfo) {
			for i := range ts {
				if ts[i].Name == "blk.0.attn_q.weight" {
					ts[i].Name = "blk.5.attn_q.weight"
				}
			}
		}},
		{"wrong shape", "has shape", keep, func(ts []TensorInfo) {
			for i := range ts {
				if ts[i].Name == "blk.0.attn_q.weight" {
					ts[i].Dims = []uint64{16, 64}
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decode(rewrite(t, raw, tc.edit, tc.editTensors), "x")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
	// The unedited rewrite loads: the cases above fail for their edit alone.
	if _, err := decode(rewrite(t, raw, keep, nil), "x"); err != nil {
		t.Fatal(err)
	}
}

func TestDefaults(t *testing.T) {
	raw := tinyFile(t, model.F32)
	drop := func(keys ...string) func([]KV) []KV {
		return func(kvs []KV) []KV {
			for _, k := range keys {
				kvs = setKey(k, Value{})(kvs)
			}
			return kvs
		}
	}
	m, err := decode(rewrite(t, raw, drop("llama.attention.key_length", "llama.attention.value_length",
		"llama.rope.dimension_count", "llama.rope.freq_base", "llama.vocab_size", "general.alignment",
		"tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_space_prefix"), nil), "x")
	if err != nil {
		t.Fatal(err)
	}
	c := m.Config
	if c.NKVHeads != 1 || c.HeadDim != 16 || c.RopeTheta != 10000 || c.VocabSize != 8 || !m.Vocab.AddBOS || !m.Vocab.AddSpacePrefix {
		t.Fatalf("defaults: %+v %+v", c, m.Vocab)
	}
	m, err = decode(rewrite(t, raw, drop("tokenizer.ggml.model"), nil), "x")
	if err != nil || m.Vocab != nil {
		t.Fatalf("no tokenizer: %v, vocab %v", err, m.Vocab)
	}
}

func TestVersion2(t *testing.T) {
	raw := tinyFile(t, model.F32)
	binary.LittleEndian.PutUint32(raw[4:], 2)
	m, err := decode(raw, "v2")
	if err != nil || m.Config.Name != "tiny" {
		t.Fatalf("v2: %v", err)
	}
}

func TestIsGGUF(t *testing.T) {
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.bin")
	os.WriteFile(good, tinyFile(t, model.F32), 0o644)
	os.WriteFile(bad, []byte("GGU"), 0o644)
	if !IsGGUF(good) || IsGGUF(bad) || IsGGUF(filepath.Join(dir, "none")) {
		t.Fatal("IsGGUF wrong")
	}
}

func TestInferRopeScaling(t *testing.T) {
	// Llama-3.1 8B: theta 500000, head_dim 128, factor 8.
	want := &model.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}
	freqs := llama3RopeFactors(128, 500000, want)
	if freqs[0] != 1 || freqs[63] != 8 {
		t.Fatalf("factors %v", freqs)
	}
	got, err := inferRopeScaling(freqs, 128, 500000)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, %v", got, err)
	}
	freqs[40] *= 1.5
	if _, err := inferRopeScaling(freqs, 128, 500000); err == nil {
		t.Fatal("foreign rope_freqs accepted")
	}
	ones := []float32{1, 1, 1}
	if got, err := inferRopeScaling(ones, 6, 10000); got != nil || err != nil {
		t.Fatalf("all-ones: %v %v", got, err)
	}
}

// TestForeignRopeFreqs loads a Llama-3.1 style file: rope_freqs only, no
// acttail keys.
func TestForeignRopeFreqs(t *testing.T) {
	cfg := testConfig()
	cfg.RopeTheta = 500000
	cfg.RopeScale = &model.RopeScaling{Type: "llama3", Factor: 32, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}
	m := randModel(t, cfg, model.F16, 3)
	path := filepath.Join(t.TempDir(), "m.gguf")
	if err := Write(m, path, model.F16); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	foreign := rewrite(t, raw, func(kvs []KV) []KV {
		var out []KV
		for _, kv := range kvs {
			if !strings.HasPrefix(kv.Key, "acttail.") {
				out = append(out, kv)
			}
		}
		return out
	}, nil)
	got, err := decode(foreign, "x")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got.Config.RopeScale, cfg.RopeScale) {
		t.Fatalf("rope scale %+v", got.Config.RopeScale)
	}
	if _, ok := got.Tensors[ggufRopeFreqs]; ok {
		t.Fatal("rope_freqs kept as a tensor")
	}
}

func TestWriteRejects(t *testing.T) {
	m := randModel(t, testConfig(), model.F32, 1)
	dir := t.TempDir()
	delete(m.Tensors, model.NameOutput)
	if err := Write(m, filepath.Join(dir, "a.gguf"), model.F32); err == nil {
		t.Fatal("incomplete model written")
	}
	m = randModel(t, testConfig(), model.F32, 1)
	m.Vocab = spmVocab(299)
	if err := Write(m, filepath.Join(dir, "b.gguf"), model.F32); err == nil {
		t.Fatal("vocabulary of the wrong size written")
	}
	m.Vocab = spmVocab(300)
	m.Vocab.EOT = []int{-1}
	if err := Write(m, filepath.Join(dir, "c.gguf"), model.F32); err == nil {
		t.Fatal("negative EOT id written")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("left behind %v", entries)
	}
}

func FuzzReadFile(f *testing.F) {
	raw := tinyFile(f, model.Q8_0)
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add(raw[:100])
	for _, off := range []int{4, 8, 16, 24, 40} {
		bad := bytes.Clone(raw)
		bad[off] ^= 0xff
		f.Add(bad)
	}
	var b builder
	b.header(3, 1, 0)
	b.tensorInfo("w", GGMLF32, 0, 3, 2)
	b.pad(32)
	b.Write(make([]byte, 24))
	f.Add(b.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := ReadFile(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			return
		}
		for _, ti := range file.Tensors {
			if file.DataOffset+int64(ti.Offset)+int64(ti.Size) > int64(len(data)) {
				t.Fatalf("tensor %s out of range", ti.Name)
			}
		}
		if m, err := decode(data, "fuzz"); err == nil {
			if err := m.Check(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
