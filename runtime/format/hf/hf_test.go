package hf

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// testConfig is a small model with grouped-query attention.
func testConfig(tied bool) model.Config {
	return model.Config{
		Arch: "llama", Dim: 64, HiddenDim: 96, NLayers: 2, NHeads: 4, NKVHeads: 2, HeadDim: 16,
		VocabSize: 300, SeqLen: 128, NormEps: 1e-5, RopeTheta: 500000, TiedOutput: tied, Name: "test/tiny",
	}
}

// randomModel fills every tensor cfg needs with normal values stored as d.
func randomModel(t testing.TB, cfg model.Config, d model.DType, seed uint64) *model.Checkpoint {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 7))
	m := model.New(cfg)
	m.Source, m.Format = "test", "synthetic"
	for _, s := range cfg.Shapes() {
		vals := make([]float32, model.Elems(s.Shape))
		for i := range vals {
			vals[i] = float32(r.NormFloat64())
		}
		data, err := model.Encode(vals, d)
		if err != nil {
			t.Fatal(err)
		}
		m.Add(&model.Tensor{Name: s.Name, DType: d, Shape: s.Shape, Data: data})
	}
	return m
}

// padVocab appends the filler tokens Load appends up to n.
func padVocab(v *model.Vocab, n int) {
	for i := len(v.Tokens); i < n; i++ {
		v.Tokens = append(v.Tokens, padName(i))
		v.Types = append(v.Types, model.TokenUnused)
		if v.Scores != nil {
			v.Scores = append(v.Scores, 0)
		}
	}
}

// spmVocab is a llama2.c-style SentencePiece vocabulary: scores, no merges.
func spmVocab(n int) *model.Vocab {
	v := &model.Vocab{Kind: model.VocabSPM, BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true,
		ChatTemplate: "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"}
	add := func(s string, typ model.TokenType, score float32) {
		v.Tokens = append(v.Tokens, s)
		v.Types = append(v.Types, typ)
		v.Scores = append(v.Scores, score)
	}
	add("<unk>", model.TokenUnknown, 0)
	add("<s>", model.TokenControl, 0)
	add("</s>", model.TokenControl, 0)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), model.TokenByte, 0)
	}
	for i, p := range []string{"▁t", "he", "▁a", "in", "▁the", "er", "▁s", "on", "▁w", "re",
		"▁", "t", "h", "e", "a", "i", "n", "r", "s", "o", "w", "é", "▁é", "ée"} {
		add(p, model.TokenNormal, -float32(i)-0.25)
	}
	padVocab(v, n)
	return v
}

// bytesToUnicode is GPT-2's map from bytes to printable runes.
func bytesToUnicode() []string {
	out := make([]string, 256)
	next := 256
	for b := range 256 {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			out[b] = string(rune(b))
		} else {
			out[b] = string(rune(next))
			next++
		}
	}
	return out
}

// bpeVocab is a Llama-3-style byte-level vocabulary with merges.
func bpeVocab(n int) *model.Vocab {
	v := &model.Vocab{Kind: model.VocabBPE, PreTokenizer: "llama3", AddBOS: true, UNK: -1,
		ChatTemplate: "{% for m in messages %}<|start|>{{ m['content'] }}<|eot_id|>{% endfor %}"}
	v.Tokens = bytesToUnicode()
	v.Types = make([]model.TokenType, 256)
	for i := range v.Types {
		v.Types[i] = model.TokenNormal
	}
	for _, m := range [][2]string{{"Ġ", "t"}, {"h", "e"}, {"Ġt", "he"}, {"i", "n"}, {"Ġ", "a"}, {"e", "r"}, {"n", "d"}, {"Ġa", "nd"}} {
		v.Merges = append(v.Merges, m[0]+" "+m[1])
		v.Tokens = append(v.Tokens, m[0]+m[1])
		v.Types = append(v.Types, model.TokenNormal)
	}
	for _, s := range []string{"<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start|>"} {
		v.Tokens = append(v.Tokens, s)
		v.Types = append(v.Types, model.TokenControl)
	}
	v.Tokens = append(v.Tokens, "<tool>")
	v.Types = append(v.Types, model.TokenUserDefined)
	v.BOS, v.EOS, v.EOT = len(v.Tokens)-5, len(v.Tokens)-4, []int{len(v.Tokens) - 3}
	padVocab(v, n)
	return v
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name       string
		tied       bool
		src, dst   model.DType
		vocab      func(int) *model.Vocab
		ropeScale  bool
		synthetic  bool
		exactBytes bool
	}{
		{"f32 untied spm", false, model.F32, model.F32, spmVocab, false, false, true},
		{"f16 tied bpe", true, model.F16, model.F16, bpeVocab, true, false, true},
		{"bf16 untied bpe synthetic", false, model.BF16, model.BF16, bpeVocab, false, true, true},
		{"bf16 tied spm", true, model.BF16, model.BF16, spmVocab, true, false, true},
		{"f32 to bf16", false, model.F32, model.BF16, nil, false, false, false},
		{"f32 to f16", true, model.F32, model.F16, spmVocab, false, false, false},
		{"q8_0 to f32", false, model.Q8_0, model.F32, nil, false, false, false},
		{"bf16 to f32", false, model.BF16, model.F32, nil, false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(tc.tied)
			cfg.Synthetic = tc.synthetic
			if tc.ropeScale {
				cfg.RopeScale = &model.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}
			}
			m := randomModel(t, cfg, tc.src, 1)
			if tc.vocab != nil {
				m.Vocab = tc.vocab(cfg.VocabSize)
			}
			dir := filepath.Join(t.TempDir(), "out")
			if err := Write(m, dir, tc.dst); err != nil {
				t.Fatal(err)
			}
			if !IsDir(dir) {
				t.Fatal("IsDir false for a written directory")
			}
			got, err := Load(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer got.Close()
			if got.Source != dir || got.Format != "hf" {
				t.Errorf("source %q format %q", got.Source, got.Format)
			}
			if !reflect.DeepEqual(got.Config, cfg) {
				t.Errorf("config\n got %+v\nwant %+v", got.Config, cfg)
			}
			if len(got.Tensors) != len(m.Tensors) {
				t.Errorf("%d tensors, want %d", len(got.Tensors), len(m.Tensors))
			}
			for name, want := range m.Tensors {
				g := got.Tensors[name]
				if g == nil {
					t.Fatalf("tensor %s missing", name)
				}
				if g.DType != tc.dst || !reflect.DeepEqual(g.Shape, want.Shape) {
					t.Fatalf("tensor %s: %s %v, want %s %v", name, g.DType, g.Shape, tc.dst, want.Shape)
				}
				wantData := want.Data
				if !tc.exactBytes {
					f, _ := want.Float32()
					wantData, _ = model.Encode(f, tc.dst)
				}
				if !bytes.Equal(g.Data, wantData) {
					t.Fatalf("tensor %s: data differs", name)
				}
			}
			if tc.vocab == nil {
				if got.Vocab != nil {
					t.Error("vocab from nowhere")
				}
				return
			}
			want := *m.Vocab
			if want.Merges == nil {
				want.Merges = spmMerges(&want, want.Tokens)
			}
			if !reflect.DeepEqual(got.Vocab, &want) {
				t.Errorf("vocab\n got %+v\nwant %+v", got.Vocab, &want)
			}
			// A second trip through the loaded model changes nothing.
			dir2 := filepath.Join(t.TempDir(), "again")
			if err := Write(got, dir2, tc.dst); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{configFile, weightsFile, tokenizerFile, tokenizerCfgFile, generationFile} {
				a, _ := os.ReadFile(filepath.Join(dir, f))
				b, _ := os.ReadFile(filepath.Join(dir2, f))
				if !bytes.Equal(a, b) {
					t.Errorf("%s differs after a second round trip", f)
				}
			}
		})
	}
}

// refPermute is transformers' convert_llama_weights_to_hf permute:
// w.view(n_heads, dim1/n_heads/2, 2, dim2).transpose(1, 2).reshape(dim1, dim2).
func refPermute(w []float32, nHeads, dim1, dim2 int) []float32 {
	half := dim1 / nHeads / 2
	// view index (h, i, j, c) -> flat ((h*half+i)*2+j)*dim2+c
	view := func(h, i, j, c int) float32 { return w[((h*half+i)*2+j)*dim2+c] }
	out := make([]float32, 0, len(w))
	// After transpose(1, 2) the axes are (h, j, i, c); reshape walks them in order.
	for h := range nHeads {
		for j := range 2 {
			for i := range half {
				for c := range dim2 {
					out = append(out, view(h, i, j, c))
				}
			}
		}
	}
	return out
}

func TestPermuteMatchesTransformers(t *testing.T) {
	cfg := testConfig(false)
	m := randomModel(t, cfg, model.F32, 3)
	dir := t.TempDir()
	if err := Write(m, dir, model.F32); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, weightsFile)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	infos, meta, start, err := ReadHeader(bytes.NewReader(raw), int64(len(raw)), path)
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Errorf("metadata %v lacks format pt", meta)
	}
	if start%8 != 0 {
		t.Errorf("data starts at %d, not 8-aligned", start)
	}
	for l := range cfg.NLayers {
		for _, p := range []struct {
			proj  model.Projection
			heads int
		}{{model.ProjQ, cfg.NHeads}, {model.ProjK, cfg.NKVHeads}} {
			name := model.ProjName(l, p.proj)
			out, in := p.proj.Shape(&cfg)
			src, _ := m.Tensors[name].Float32()
			want, _ := model.Encode(refPermute(src, p.heads, out, in), model.F32)
			info := infos[name]
			if got := raw[start+info.Begin : start+info.End]; !bytes.Equal(got, want) {
				t.Errorf("%s: written rows are not transformers' permutation", name)
			}
		}
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	for name, want := range m.Tensors {
		if !bytes.Equal(got.Tensors[name].Data, want.Data) {
			t.Errorf("%s: Load does not invert the permutation", name)
		}
	}
}

func TestPermuteRowsInverse(t *testing.T) {
	for _, tc := range []struct{ rows, headDim, rowBytes int }{{4, 4, 1}, {64, 16, 8}, {6, 2, 3}, {128, 128, 2}} {
		data := make([]byte, tc.rows*tc.rowBytes)
		for i := range data {
			data[i] = byte(i * 7)
		}
		hf, err := permuteRows(data, tc.rows, tc.headDim, true)
		if err != nil {
			t.Fatal(err)
		}
		back, err := permuteRows(hf, tc.rows, tc.headDim, false)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back, data) {
			t.Errorf("%+v: permute then unpermute changed the data", tc)
		}
	}
	if _, err := permuteRows(make([]byte, 12), 6, 4, true); err == nil {
		t.Error("rows not a multiple of head_dim accepted")
	}
}

// stTensor is one tensor for stBlob.
type stTensor struct {
	name, dtype string
	shape       []int
	data        []byte
}

// stBlob builds a safetensors file with tensors laid out in order.
func stBlob(t testing.TB, ts ...stTensor) []byte {
	t.Helper()
	hdr := map[string]any{metadataKey: map[string]string{"format": "pt"}}
	var off int
	var data []byte
	for _, x := range ts {
		hdr[x.name] = map[string]any{"dtype": x.dtype, "shape": x.shape, "data_offsets": []int{off, off + len(x.data)}}
		off += len(x.data)
		data = append(data, x.data...)
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	return rawBlob(string(js), data)
}

// rawBlob is a safetensors file with the given header text and data.
func rawBlob(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestReadHeaderErrors(t *testing.T) {
	data16 := make([]byte, 16)
	long := binary.LittleEndian.AppendUint64(nil, 200<<20)
	for _, tc := range []struct {
		name, want string
		blob       []byte
		size       int64 // 0: len(blob)
	}{
		{"short file", "too short", []byte{1, 2, 3}, 0},
		{"header past end", "exceeds", rawBlob(`{}`, nil)[:9], 0},
		{"header over limit", "limit", long, 300 << 20},
		{"header tiny", "too short", rawBlob(`{`, nil), 0},
		{"bad json", "JSON", rawBlob(`{"a":`, data16), 0},
		{"not object", "JSON object", rawBlob(`[1,2]   `, data16), 0},
		{"trailing garbage", "JSON", rawBlob(`{} x`, data16), 0},
		{"bad dtype", `"w": unsupported dtype "I64"`, rawBlob(`{"w":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}`, data16), 0},
		{"missing dtype", "missing dtype", rawBlob(`{"w":{"shape":[2],"data_offsets":[0,8]}}`, data16), 0},
		{"missing shape", "missing shape", rawBlob(`{"w":{"dtype":"F32","data_offsets":[0,8]}}`, data16), 0},
		{"three offsets", "3 values", rawBlob(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}`, data16), 0},
		{"offset past end", "outside", rawBlob(`{"w":{"dtype":"F32","shape":[5],"data_offsets":[0,20]}}`, data16), 0},
		{"begin after end", "outside", rawBlob(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}`, data16), 0},
		{"negative offset", "bad entry", rawBlob(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}`, data16), 0},
		{"wrong byte count", "needs 8 bytes", rawBlob(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,12]}}`, data16), 0},
		{"negative dim", "negative", rawBlob(`{"w":{"dtype":"F32","shape":[-2,-2],"data_offsets":[0,16]}}`, data16), 0},
		{"overflowing shape", "more elements", rawBlob(`{"w":{"dtype":"F16","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,0]}}`, data16), 0},
		{"float dim", "bad entry", rawBlob(`{"w":{"dtype":"F32","shape":[1.5],"data_offsets":[0,6]}}`, data16), 0},
		{"overlap", "overlap", rawBlob(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, data16), 0},
		{"bad metadata", "__metadata__", rawBlob(`{"__metadata__":{"format":1}}`, nil), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			size := tc.size
			if size == 0 {
				size = int64(len(tc.blob))
			}
			_, _, _, err := ReadHeader(bytes.NewReader(tc.blob), size, "bad.safetensors")
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), "bad.safetensors") || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name the file and %q", err, tc.want)
			}
		})
	}
}

func TestReadHeaderValid(t *testing.T) {
	blob := stBlob(t,
		stTensor{"a", "F32", []int{2, 1}, make([]byte, 8)},
		stTensor{"empty", "BF16", []int{0, 3}, nil},
		stTensor{"s", "F16", []int{}, make([]byte, 2)},
	)
	infos, meta, start, err := ReadHeader(bytes.NewReader(blob), int64(len(blob)), "ok")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]TensorInfo{
		"a":     {model.F32, []int{2, 1}, 0, 8},
		"empty": {model.BF16, []int{0, 3}, 8, 8},
		"s":     {model.F16, []int{}, 8, 10},
	}
	if !reflect.DeepEqual(infos, want) || meta["format"] != "pt" || start != int64(len(blob)-10) {
		t.Errorf("got %v %v %d", infos, meta, start)
	}
}

// writeModelDir writes m to a new directory and returns it.
func writeModelDir(t *testing.T, m *model.Checkpoint) string {
	t.Helper()
	dir := t.TempDir()
	if err := Write(m, dir, model.F32); err != nil {
		t.Fatal(err)
	}
	return dir
}

// readTensors returns the raw tensors of a written file, in file order.
func readTensors(t *testing.T, path string) []stTensor {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	infos, _, start, err := ReadHeader(bytes.NewReader(raw), int64(len(raw)), path)
	if err != nil {
		t.Fatal(err)
	}
	var out []stTensor
	for name, info := range infos {
		dt, _ := stName(info.DType)
		out = append(out, stTensor{name, dt, info.Shape, raw[start+info.Begin : start+info.End]})
	}
	return out
}

func TestShardedLoad(t *testing.T) {
	m := randomModel(t, testConfig(false), model.F32, 5)
	m.Vocab = bpeVocab(300)
	dir := writeModelDir(t, m)
	ts := readTensors(t, filepath.Join(dir, weightsFile))
	if err := os.Remove(filepath.Join(dir, weightsFile)); err != nil {
		t.Fatal(err)
	}
	ts = append(ts, stTensor{"model.layers.0.self_attn.rotary_emb.inv_freq", "F32", []int{8}, make([]byte, 32)})
	shards := [2][]stTensor{}
	weightMap := map[string]string{}
	for i, x := range ts {
		shards[i%2] = append(shards[i%2], x)
		weightMap[x.name] = fmt.Sprintf("model-%05d-of-00002.safetensors", i%2+1)
	}
	writeShards := func(t *testing.T, shards [2][]stTensor, weightMap map[string]string) {
		for i, s := range shards {
			name := fmt.Sprintf("model-%05d-of-00002.safetensors", i+1)
			if err := os.WriteFile(filepath.Join(dir, name), stBlob(t, s...), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		js, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
		if err := os.WriteFile(filepath.Join(dir, indexFile), js, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeShards(t, shards, weightMap)
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range m.Tensors {
		if !bytes.Equal(got.Tensors[name].Data, want.Data) {
			t.Errorf("%s differs", name)
		}
	}
	if _, ok := got.Tensors["model.layers.0.self_attn.rotary_emb.inv_freq"]; ok {
		t.Error("inv_freq kept")
	}
	if err := got.Close(); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, want string
		edit       func(shards *[2][]stTensor, wm map[string]string)
	}{
		{"missing in shard", "missing tensor", func(s *[2][]stTensor, wm map[string]string) { s[0] = s[0][1:] }},
		{"duplicate across shards", "more than one shard", func(s *[2][]stTensor, wm map[string]string) { s[1] = append(s[1], s[0][0]) }},
		{"escaping shard path", "not a file", func(s *[2][]stTensor, wm map[string]string) { wm[s[0][0].name] = "../x.safetensors" }},
		{"missing shard file", "no such file", func(s *[2][]stTensor, wm map[string]string) { wm[s[0][0].name] = "nope.safetensors" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := shards
			s[0] = append([]stTensor(nil), shards[0]...)
			s[1] = append([]stTensor(nil), shards[1]...)
			wm := map[string]string{}
			for k, v := range weightMap {
				wm[k] = v
			}
			tc.edit(&s, wm)
			writeShards(t, s, wm)
			if _, err := Load(dir); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMissingLMHeadIsTied(t *testing.T) {
	m := randomModel(t, testConfig(false), model.BF16, 9)
	delete(m.Tensors, model.NameOutput)
	m.Config.TiedOutput = true
	dir := t.TempDir()
	if err := Write(m, dir, model.BF16); err != nil {
		t.Fatal(err)
	}
	// Say untied in config.json, as some checkpoints do.
	path := filepath.Join(dir, configFile)
	js, _ := os.ReadFile(path)
	js = bytes.Replace(js, []byte(`"tie_word_embeddings": true`), []byte(`"tie_word_embeddings": false`), 1)
	if err := os.WriteFile(path, js, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	if !got.Config.TiedOutput {
		t.Error("missing lm_head did not tie the output")
	}
}

func TestLoadErrors(t *testing.T) {
	m := randomModel(t, testConfig(false), model.F32, 11)
	m.Vocab = spmVocab(300)
	src := writeModelDir(t, m)
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tensors := readTensors(t, filepath.Join(src, weightsFile))
	without := func(name string) []byte {
		var keep []stTensor
		for _, x := range tensors {
			if x.name != name {
				keep = append(keep, x)
			}
		}
		return stBlob(t, keep...)
	}
	replaceJSON := func(file, old, new string) func(string) {
		return func(dir string) {
			b := bytes.Replace(read(file), []byte(old), []byte(new), 1)
			if err := os.WriteFile(filepath.Join(dir, file), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeFile := func(file string, data []byte) func(string) {
		return func(dir string) {
			if err := os.WriteFile(filepath.Join(dir, file), data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, tc := range []struct {
		name, want string
		edit       func(dir string)
	}{
		{"no config", "config.json", func(dir string) { os.Remove(filepath.Join(dir, configFile)) }},
		{"no weights", "neither", func(dir string) { os.Remove(filepath.Join(dir, weightsFile)) }},
		{"config bad json", "config.json: bad JSON", writeFile(configFile, []byte(`{"architectures":`))},
		{"zero heads", "non-positive", replaceJSON(configFile, `"num_attention_heads": 4`, `"num_attention_heads": 0`)},
		{"unknown architecture", `"GPT2LMHeadModel"`, replaceJSON(configFile, `"LlamaForCausalLM"`, `"GPT2LMHeadModel"`)},
		{"linear rope scaling", `"linear"`, replaceJSON(configFile, `"tie_word_embeddings"`, `"rope_scaling": {"type": "linear", "factor": 2}, "tie_word_embeddings"`)},
		{"missing tensor", "missing tensor", writeFile(weightsFile, without(model.FFNNormName(1)))},
		{"truncated weights", "model.safetensors", writeFile(weightsFile, read(weightsFile)[:100])},
		{"header past end", "exceeds", writeFile(weightsFile, binary.LittleEndian.AppendUint64(nil, 1<<20))},
		{"vocab id gap", "no token has id 5", replaceJSON(tokenizerFile, `"<0x02>": 5,`, ``)},
		{"vocab duplicate id", "used by both", replaceJSON(tokenizerFile, `"<0x02>": 5,`, `"<0x02>": 6,`)},
		{"vocab too big", "exceed config vocab_size", replaceJSON(configFile, `"vocab_size": 300`, `"vocab_size": 100`)},
		{"tokenizer not BPE", "Unigram", replaceJSON(tokenizerFile, `"type": "BPE"`, `"type": "Unigram"`)},
		{"tokenizer bad json", "tokenizer.json: bad JSON", writeFile(tokenizerFile, []byte(`{`))},
		{"scores wrong length", "acttail_scores", replaceJSON(tokenizerCfgFile, `"acttail_scores": [`, `"acttail_scores": [1,`)},
		{"eos out of range", "eos_token_id", writeFile(generationFile, []byte(`{"eos_token_id": [2, 999]}`))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range []string{configFile, weightsFile, tokenizerFile, tokenizerCfgFile, generationFile} {
				writeFile(f, read(f))(dir)
			}
			tc.edit(dir)
			got, err := Load(dir)
			if err == nil {
				got.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("error %q does not name %s and %q", err, dir, tc.want)
			}
		})
	}
}

func TestNoTokenizer(t *testing.T) {
	dir := writeModelDir(t, randomModel(t, testConfig(true), model.F32, 2))
	m, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Vocab != nil {
		t.Error("vocab without tokenizer.json")
	}
	if m.Config.Name != "test/tiny" {
		t.Errorf("name %q", m.Config.Name)
	}
}

func TestWriteErrors(t *testing.T) {
	m := randomModel(t, testConfig(false), model.F32, 4)
	if err := Write(m, t.TempDir(), model.Q8_0); err == nil {
		t.Error("Q8_0 safetensors written")
	}
	m.Vocab = spmVocab(300)
	m.Vocab.Tokens[40] = m.Vocab.Tokens[41]
	if err := Write(m, t.TempDir(), model.F32); err == nil || !strings.Contains(err.Error(), "ids 40 and 41") {
		t.Errorf("duplicate token: %v", err)
	}
	m.Vocab = nil
	delete(m.Tensors, model.NameEmbed)
	if err := Write(m, t.TempDir(), model.F32); err == nil {
		t.Error("incomplete model written")
	}
}

func TestIsDir(t *testing.T) {
	dir := t.TempDir()
	if IsDir(dir) || IsDir(filepath.Join(dir, "nope")) {
		t.Error("IsDir true without config.json")
	}
	os.WriteFile(filepath.Join(dir, configFile), []byte("{}"), 0o644)
	if !IsDir(dir) || IsDir(filepath.Join(dir, configFile)) {
		t.Error("IsDir wrong")
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		name, js string
		check    func(c model.Config) bool
		wantErr  string
	}{
		{"llama2 defaults", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5}`,
			func(c model.Config) bool {
				return c.NKVHeads == 4 && c.HeadDim == 16 && c.RopeTheta == 10000 && c.Name == "dirname" && c.Arch == "llama" && c.RopeScale == nil
			}, ""},
		{"mistral by model_type", `{"model_type":"mistral","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":null,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_theta":1e6,"sliding_window":null,"_name_or_path":"m/x"}`,
			func(c model.Config) bool {
				return c.NKVHeads == 2 && c.HeadDim == 16 && c.RopeTheta == 1e6 && c.Name == "m/x"
			}, ""},
		{"llama3.1 scaling with type", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"head_dim":32,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_scaling":{"type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192},"acttail_synthetic":true}`,
			func(c model.Config) bool {
				return c.HeadDim == 32 && c.Synthetic && c.RopeScale != nil && *c.RopeScale == model.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 8192}
			}, ""},
		{"default rope type", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_scaling":{"rope_type":"default"}}`,
			func(c model.Config) bool { return c.RopeScale == nil }, ""},
		{"yarn", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_scaling":{"rope_type":"yarn","factor":4}}`, nil, `"yarn"`},
		{"llama3 incomplete", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_scaling":{"rope_type":"llama3","factor":4}}`, nil, "needs"},
		{"zero heads", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":0,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5}`, nil, "non-positive"},
		{"uneven heads", `{"architectures":["LlamaForCausalLM"],"hidden_size":65,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5}`, nil, "not a multiple"},
		{"no eps", `{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128}`, nil, "eps"},
		{"unknown arch", `{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2"}`, nil, `"Qwen2ForCausalLM"`},
		{"unknown type", `{"model_type":"gpt2"}`, nil, `"gpt2"`},
		{"no arch", `{"hidden_size":64}`, nil, "cannot tell"},
		{"not json", `hidden_size`, nil, "bad JSON"},
		{"float dim", `{"architectures":["LlamaForCausalLM"],"hidden_size":64.5}`, nil, "bad JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseConfig([]byte(tc.js), "dirname")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Errorf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Errorf("config %+v", c)
			}
		})
	}
}

// Tokenizer fixtures in the shapes Hugging Face hubs hold them (cut down).
const (
	llama2Tokenizer = `{"version":"1.0","added_tokens":[
 {"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},{"id":2,"content":"</s>","special":true}],
 "normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
 "pre_tokenizer":null,
 "post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{}},
 "decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
 "model":{"type":"BPE","dropout":null,"unk_token":"<unk>","fuse_unk":true,"byte_fallback":true,
  "vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0x00>":3,"<0x0A>":4,"▁":5,"t":6,"▁t":7},
  "merges":["▁ t"]}}`
	mistralTokenizer = `{"version":"1.0","added_tokens":[
 {"id":0,"content":"<unk>","special":true},{"id":1,"content":"<s>","special":true},{"id":2,"content":"</s>","special":true},{"id":6,"content":"[INST]","special":true}],
 "normalizer":null,
 "pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false},
 "post_processor":null,
 "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,
  "vocab":{"<unk>":0,"<s>":1,"</s>":2,"<0xFF>":3,"▁":4,"a":5},
  "merges":[["▁","a"]]}}`
	llama3Tokenizer = `{"version":"1.0","added_tokens":[
 {"id":4,"content":"<|begin_of_text|>","special":true},{"id":5,"content":"<|end_of_text|>","special":true},{"id":6,"content":"<|eot_id|>","special":true}],
 "normalizer":null,
 "pre_tokenizer":{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},"behavior":"Isolated","invert":false},{"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]},
 "post_processor":{"type":"Sequence","processors":[{"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true},{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<|begin_of_text|>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],"pair":[],"special_tokens":{}}]},
 "decoder":{"type":"ByteLevel"},
 "model":{"type":"BPE","unk_token":null,"byte_fallback":false,"ignore_merges":true,
  "vocab":{"Ġ":0,"t":1,"Ġt":2,"<0x00>":3},
  "merges":["Ġ t"]}}`
	gpt2Tokenizer = `{"added_tokens":[],"pre_tokenizer":{"type":"ByteLevel","add_prefix_space":false},
 "model":{"type":"BPE","vocab":{"a":0,"b":1,"ab":2},"merges":["a b"]}}`
)

func TestParseVocab(t *testing.T) {
	for _, tc := range []struct {
		name          string
		tok, cfg, gen string
		size          int
		want          *model.Vocab
	}{
		{"llama2", llama2Tokenizer, ``, ``, 10, &model.Vocab{
			Kind:   model.VocabSPM,
			Tokens: []string{"<unk>", "<s>", "</s>", "<0x00>", "<0x0A>", "▁", "t", "▁t", "<unused_8>", "<unused_9>"},
			Types: []model.TokenType{model.TokenUnknown, model.TokenControl, model.TokenControl, model.TokenByte, model.TokenByte,
				model.TokenNormal, model.TokenNormal, model.TokenNormal, model.TokenUnused, model.TokenUnused},
			Merges: []string{"▁ t"}, BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true}},
		{"mistral metaspace with config", mistralTokenizer,
			`{"add_bos_token":false,"bos_token":{"__type":"AddedToken","content":"<s>"},"eos_token":"</s>","chat_template":[{"name":"default","template":"T"},{"name":"tool_use","template":"U"}]}`,
			`{"eos_token_id":2}`, 7, &model.Vocab{
				Kind:   model.VocabSPM,
				Tokens: []string{"<unk>", "<s>", "</s>", "<0xFF>", "▁", "a", "[INST]"},
				Types: []model.TokenType{model.TokenUnknown, model.TokenControl, model.TokenControl, model.TokenByte,
					model.TokenNormal, model.TokenNormal, model.TokenControl},
				Merges: []string{"▁ a"}, BOS: 1, EOS: 2, UNK: 0, AddBOS: false, AddSpacePrefix: true, ChatTemplate: "T"}},
		{"llama3 instruct", llama3Tokenizer, `{"bos_token":"<|begin_of_text|>","eos_token":"<|eot_id|>","chat_template":"C"}`,
			`{"bos_token_id":4,"eos_token_id":[5,6,5]}`, 7, &model.Vocab{
				Kind: model.VocabBPE, PreTokenizer: "llama3",
				Tokens: []string{"Ġ", "t", "Ġt", "<0x00>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"},
				Types: []model.TokenType{model.TokenNormal, model.TokenNormal, model.TokenNormal, model.TokenNormal,
					model.TokenControl, model.TokenControl, model.TokenControl},
				Merges: []string{"Ġ t"}, BOS: 4, EOS: 6, UNK: -1, AddBOS: true, EOT: []int{5}, ChatTemplate: "C"}},
		{"llama3 base without config", llama3Tokenizer, ``, `{"eos_token_id":5}`, 7, &model.Vocab{
			Kind: model.VocabBPE, PreTokenizer: "llama3",
			Tokens: []string{"Ġ", "t", "Ġt", "<0x00>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"},
			Types: []model.TokenType{model.TokenNormal, model.TokenNormal, model.TokenNormal, model.TokenNormal,
				model.TokenControl, model.TokenControl, model.TokenControl},
			Merges: []string{"Ġ t"}, BOS: 4, EOS: 5, UNK: -1, AddBOS: true}},
		{"gpt2 plain", gpt2Tokenizer, `{"eos_token":null}`, ``, 3, &model.Vocab{
			Kind: model.VocabBPE, PreTokenizer: "gpt2", Tokens: []string{"a", "b", "ab"},
			Merges: []string{"a b"}, BOS: -1, EOS: -1, UNK: -1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var cfg, gen []byte
			if tc.cfg != "" {
				cfg = []byte(tc.cfg)
			}
			if tc.gen != "" {
				gen = []byte(tc.gen)
			}
			v, err := parseVocab([]byte(tc.tok), cfg, gen, tc.size)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(v, tc.want) {
				t.Errorf("\n got %+v\nwant %+v", v, tc.want)
			}
		})
	}
}

func TestParseVocabErrors(t *testing.T) {
	for _, tc := range []struct{ name, tok, want string }{
		{"gap", `{"added_tokens":[{"id":0,"content":"a"}],"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"b":2}}}`, "no token has id 1"},
		{"sparse", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"b":2}}}`, "dense"},
		{"huge id", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"b":2000000000}}}`, "outside"},
		{"negative id", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":-1}}}`, "outside"},
		{"duplicate", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"b":0}}}`, "used by both"},
		{"added conflict", `{"added_tokens":[{"id":0,"content":"x"}],"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0}}}`, "used by both"},
		{"empty", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{}}}`, "empty"},
		{"wordpiece", `{"model":{"type":"WordPiece","vocab":{"a":0}}}`, "WordPiece"},
		{"unknown kind", `{"model":{"type":"BPE","vocab":{"a":0}}}`, "kind"},
		{"bad merge", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0},"merges":[["a"]]}}`, "merge 0"},
		{"bad merge type", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0},"merges":[3]}}`, "merge 0"},
		{"too many", `{"pre_tokenizer":{"type":"ByteLevel"},"model":{"type":"BPE","vocab":{"a":0,"b":1,"c":2,"d":3,"e":4}}}`, "exceed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseVocab([]byte(tc.tok), nil, nil, 4); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// vocabTrip writes v's tokenizer files and parses them back.
func vocabTrip(t testing.TB, v *model.Vocab) *model.Vocab {
	tok, cfg, gen, err := tokenizerFiles(v)
	if err != nil {
		t.Fatal(err)
	}
	var js [3][]byte
	for i, d := range []any{tok, cfg, gen} {
		if js[i], err = json.Marshal(d); err != nil {
			t.Fatal(err)
		}
	}
	got, err := parseVocab(js[0], js[1], js[2], len(v.Tokens))
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestVocabRoundTrip(t *testing.T) {
	variants := map[string]func() *model.Vocab{
		"spm no prefix no bos": func() *model.Vocab {
			v := spmVocab(290)
			v.AddSpacePrefix, v.AddBOS, v.ChatTemplate = false, false, ""
			return v
		},
		"spm with merges no scores": func() *model.Vocab {
			v := spmVocab(300)
			v.Scores, v.Merges = nil, []string{"▁ t", "h e"}
			return v
		},
		"spm no eos": func() *model.Vocab {
			v := spmVocab(300)
			v.EOS, v.EOT = -1, []int{2}
			return v
		},
		"gpt2 bpe": func() *model.Vocab {
			v := bpeVocab(270)
			v.PreTokenizer, v.AddBOS = "gpt2", false
			return v
		},
		"bpe with scores": func() *model.Vocab {
			v := bpeVocab(300)
			v.Scores = make([]float32, 300)
			v.Scores[3] = -1.5
			return v
		},
	}
	for name, mk := range variants {
		t.Run(name, func(t *testing.T) {
			v := mk()
			want := mk()
			if want.Merges == nil {
				want.Merges = spmMerges(want, want.Tokens)
			}
			if got := vocabTrip(t, v); !reflect.DeepEqual(got, want) {
				t.Errorf("\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestSPMMerges(t *testing.T) {
	tokens := []string{"<unk>", "▁", "t", "h", "e", "he", "▁t", "th", "▁the", "the"}
	scores := []float32{0, -1, -2, -3, -4, -5, -6, -7, -8, -0.5}
	types := make([]model.TokenType, len(tokens))
	for i := range types {
		types[i] = model.TokenNormal
	}
	types[0] = model.TokenUnknown
	v := &model.Vocab{Kind: model.VocabSPM, Tokens: tokens, Scores: scores, Types: types}
	want := []string{"t he", "th e", "h e", "▁ t", "t h", "▁ the", "▁t he"}
	if got := spmMerges(v, tokens); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add(stBlob(f, stTensor{"a", "F32", []int{2, 2}, make([]byte, 16)}, stTensor{"b", "BF16", []int{3}, make([]byte, 6)}))
	f.Add(stBlob(f))
	f.Add(rawBlob(`{"__metadata__":{"format":"pt"}}`, nil))
	f.Add(rawBlob(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 16)))
	f.Add(rawBlob(`{"a":{"dtype":"F16","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, nil))
	f.Add(rawBlob(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{0}))
	f.Add(rawBlob(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,400]}}`, nil))
	f.Add(rawBlob(`{"a":`, nil))
	f.Add(binary.LittleEndian.AppendUint64(nil, 1<<62))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, blob []byte) {
		infos, _, start, err := ReadHeader(bytes.NewReader(blob), int64(len(blob)), "fuzz")
		if err != nil {
			return
		}
		if start < 10 || start > int64(len(blob)) {
			t.Fatalf("data start %d in %d bytes", start, len(blob))
		}
		for name, info := range infos {
			if info.Begin < 0 || info.End < info.Begin || start+info.End > int64(len(blob)) {
				t.Fatalf("%s: offsets [%d, %d] outside the file", name, info.Begin, info.End)
			}
			if int64(info.DType.Bytes(model.Elems(info.Shape))) != info.End-info.Begin {
				t.Fatalf("%s: size mismatch", name)
			}
		}
		if err := checkOverlap(infos); err != nil {
			t.Fatal(err)
		}
	})
}

func FuzzConfig(f *testing.F) {
	for _, js := range []string{
		`{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5}`,
		`{"architectures":["LlamaForCausalLM"],"hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":16,"vocab_size":300,"max_position_embeddings":128,"rms_norm_eps":1e-5,"rope_theta":500000.0,"rope_scaling":{"rope_type":"llama3","factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192}}`,
		`{"model_type":"mistral","hidden_size":64,"num_attention_heads":3}`,
		`{"architectures":["LlamaForCausalLM"],"hidden_size":64,"num_attention_heads":0}`,
		`{"architectures":[]}`,
		`null`,
		`{"rope_scaling":{"type":"dynamic"},"model_type":"llama"}`,
	} {
		f.Add([]byte(js))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		c, err := parseConfig(js, "fuzz")
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parseConfig accepted an invalid config: %v", err)
		}
	})
}

func FuzzTokenizerJSON(f *testing.F) {
	for _, v := range []*model.Vocab{spmVocab(300), bpeVocab(300)} {
		tok, _, _, err := tokenizerFiles(v)
		if err != nil {
			f.Fatal(err)
		}
		js, _ := json.Marshal(tok)
		f.Add(js)
	}
	for _, s := range []string{llama2Tokenizer, mistralTokenizer, llama3Tokenizer, gpt2Tokenizer, `{}`, `{"model":{"type":"BPE","vocab":{"a":5}}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, js []byte) {
		const size = 400
		v, err := parseVocab(js, nil, nil, size)
		if err != nil {
			return
		}
		if len(v.Tokens) != size || (v.Types != nil && len(v.Types) != size) || (v.Scores != nil && len(v.Scores) != size) {
			t.Fatalf("%d tokens, %d types, %d scores", len(v.Tokens), len(v.Types), len(v.Scores))
		}
		for _, id := range []int{v.BOS, v.EOS, v.UNK} {
			if id < -1 || id >= size {
				t.Fatalf("special id %d", id)
			}
		}
	})
}
