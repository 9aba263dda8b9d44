package llama2c

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/model"
)

func storiesPath(t testing.TB) string {
	return filepath.Join(testfiles.Stories260K(t), "stories260K.bin")
}

func TestLoadStories260K(t *testing.T) {
	m, err := Load(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	c := m.Config
	if c.Dim != 64 || c.HiddenDim != 172 || c.NLayers != 5 || c.NHeads != 8 || c.NKVHeads != 4 ||
		c.VocabSize != 512 || c.SeqLen != 512 || !c.TiedOutput || c.HeadDim != 8 {
		t.Fatalf("config %+v", c)
	}
	if m.Vocab == nil || len(m.Vocab.Tokens) != 512 {
		t.Fatal("tokenizer beside the checkpoint not loaded")
	}
	// The first embedding value, read by hand from the file.
	raw, _ := os.ReadFile(storiesPath(t))
	emb := m.Tensors[model.NameEmbed]
	if !bytes.Equal(emb.Data[:4], raw[28:32]) {
		t.Fatal("embedding does not start right after the header")
	}
	// The final norm sits right before the two RoPE tables (512 × 4 each).
	fin := m.Tensors[model.NameOutputNorm]
	end := len(raw) - 2*512*4*4
	if !bytes.Equal(fin.Data, raw[end-64*4:end]) {
		t.Fatal("final norm not where the legacy layout puts it")
	}
}

// Parse, from memory, gives the tensors and vocabulary Load gives from the
// file.
func TestParseInMemory(t *testing.T) {
	m, err := Load(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	raw, _ := os.ReadFile(storiesPath(t))
	tok, _ := os.ReadFile(filepath.Join(filepath.Dir(storiesPath(t)), "tok512.bin"))
	p, err := Parse(raw, tok, "stories260K.bin")
	if err != nil {
		t.Fatal(err)
	}
	if p.Config != m.Config || len(p.Tensors) != len(m.Tensors) || len(p.Vocab.Tokens) != len(m.Vocab.Tokens) {
		t.Fatalf("config %+v, %d tensors; Load gives %+v, %d", p.Config, len(p.Tensors), m.Config, len(m.Tensors))
	}
	for n, tt := range m.Tensors {
		if !bytes.Equal(tt.Data, p.Tensors[n].Data) {
			t.Fatalf("tensor %s differs", n)
		}
	}
	if _, err := Parse(raw[:5000], tok, "cut.bin"); !errors.Is(err, ErrTruncated) {
		t.Errorf("a cut checkpoint: %v", err)
	}
}

func TestWriteV1RoundTrip(t *testing.T) {
	m, err := Load(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tied := range []bool{true, false} {
		if !tied {
			// an untied variant: give it a classifier of its own
			m.Config.TiedOutput = false
			emb := m.Tensors[model.NameEmbed]
			m.Add(&model.Tensor{Name: model.NameOutput, DType: model.F32, Shape: emb.Shape, Data: bytes.Repeat([]byte{0, 0, 128, 63}, emb.Elems())})
		}
		p := filepath.Join(t.TempDir(), "v1.bin")
		if err := Write(m, p); err != nil {
			t.Fatal(err)
		}
		m2, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		if m2.Config.TiedOutput != tied || len(m2.Tensors) != len(m.Tensors) {
			t.Fatalf("tied=%v: got %v with %d tensors", tied, m2.Config.TiedOutput, len(m2.Tensors))
		}
		for n, tt := range m.Tensors {
			if !bytes.Equal(tt.Data, m2.Tensors[n].Data) {
				t.Fatalf("tensor %s differs after a v1 round trip", n)
			}
		}
		m2.Close()
	}
}

func TestTruncatedAndHostile(t *testing.T) {
	raw, err := os.ReadFile(storiesPath(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, n := range []int{0, 3, 27, 28, 1000, len(raw) - 2*512*4*4 - 1} {
		p := filepath.Join(dir, "cut.bin")
		os.WriteFile(p, raw[:n], 0o644)
		if _, err := Load(p); err == nil {
			t.Errorf("file cut to %d bytes loaded", n)
		}
	}
	// A whole header on a short file says how short.
	want := fmt.Sprintf("truncated: want %d bytes, have 5000", len(raw))
	if err := Check(writeCut(t, raw[:5000])); !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), want) {
		t.Errorf("Check: %v, want %q", err, want)
	}
	hdr := func(vals ...int32) []byte {
		b := make([]byte, 4*len(vals))
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
		}
		return b
	}
	for name, h := range map[string][]byte{
		"zero dim":         hdr(0, 172, 5, 8, 4, 512, 512),
		"huge":             hdr(1<<30, 1<<30, 1<<20, 8, 4, 512, 512),
		"heads not divide": hdr(64, 172, 5, 7, 7, 512, 512),
		"kv not divide":    hdr(64, 172, 5, 8, 3, 512, 512),
		"v2":               append(hdr(magicV1, 2), make([]byte, 248)...),
	} {
		if _, err := ParseHeader(h, 1<<40, name); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A version 1 header has no RoPE tables to bound its context length.
	v1 := append(hdr(magicV1, 1, 64, 172, 5, 8, 4, 512, math.MaxInt32), make([]byte, 220)...)
	if _, err := ParseHeader(v1, 1<<40, "v1"); err == nil || !strings.Contains(err.Error(), "context length 2147483647") {
		t.Errorf("v1 header with a 2^31-1 context: %v", err)
	}
}

func writeCut(t *testing.T, b []byte) string {
	p := filepath.Join(t.TempDir(), "cut.bin")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func FuzzParseHeader(f *testing.F) {
	f.Add([]byte{64, 0, 0, 0, 172, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 4, 0, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0}, int64(1056540))
	v1 := make([]byte, 256)
	binary.LittleEndian.PutUint32(v1, magicV1)
	binary.LittleEndian.PutUint32(v1[4:], 1)
	f.Add(v1, int64(1<<20))
	f.Fuzz(func(t *testing.T, data []byte, size int64) {
		h, err := ParseHeader(data, size, "fuzz")
		if err != nil {
			return
		}
		if h.DataOffset+4*weightCount(&h.Config, h.Version) > size {
			t.Fatal("accepted a header whose weights do not fit")
		}
	})
}

// tinyCheckpoint is a llama2.c checkpoint of dimension 2 (one layer, one
// head, four tokens, context 2) in the given version, with weights 0.5.
func tinyCheckpoint(t *testing.T, version int, tied bool) []byte {
	cfg := model.Config{Arch: "llama", Dim: 2, HiddenDim: 2, NLayers: 1, NHeads: 1, NKVHeads: 1, HeadDim: 2,
		VocabSize: 4, SeqLen: 2, NormEps: 1e-5, RopeTheta: 10000, TiedOutput: tied}
	half := binary.LittleEndian.AppendUint32(nil, math.Float32bits(0.5))
	var b bytes.Buffer
	if version == 0 {
		vocab := int32(cfg.VocabSize)
		if !tied {
			vocab = -vocab
		}
		for _, v := range []int32{2, 2, 1, 1, 1, vocab, 2} {
			binary.Write(&b, binary.LittleEndian, v)
		}
	} else {
		hdr := make([]byte, headerV1Size)
		binary.LittleEndian.PutUint32(hdr, magicV1)
		binary.LittleEndian.PutUint32(hdr[4:], 1)
		for i, v := range []int{2, 2, 1, 1, 1, 4, 2} {
			binary.LittleEndian.PutUint32(hdr[8+4*i:], uint32(v))
		}
		if tied {
			hdr[36] = 1
		}
		b.Write(hdr)
	}
	b.Write(bytes.Repeat(half, int(weightCount(&cfg, version))))
	return b.Bytes()
}

func TestFuzzLoadCorpus(t *testing.T) {
	tok := tokFile(6, []float32{0, 0, 0, -1}, []string{"<unk>", "\n<s>\n", "\n</s>\n", " a"})
	v0, v1 := tinyCheckpoint(t, 0, true), tinyCheckpoint(t, 1, false)
	for _, c := range []struct {
		data []byte
		tok  []byte
	}{{v0, tok}, {v1, tok}, {v0, nil}} {
		p := filepath.Join(t.TempDir(), "m.bin")
		os.WriteFile(p, c.data, 0o644)
		if c.tok != nil {
			os.WriteFile(filepath.Join(filepath.Dir(p), "tokenizer.bin"), c.tok, 0o644)
		}
		m, err := Load(p)
		if err != nil {
			t.Fatal(err)
		}
		m.Close()
	}
	testfiles.WriteCorpus(t, "FuzzLoad", []testfiles.Seed{
		{Name: "v0-tied", Args: []any{v0, tok}},
		{Name: "v1-untied", Args: []any{v1, tok}},
		{Name: "v0-no-tokenizer", Args: []any{v0, []byte{}}},
		{Name: "v1-cut", Args: []any{v1[:len(v1)-3], tok}},
		{Name: "tokenizer-cut", Args: []any{v0, tok[:len(tok)-2]}},
	})
}

// FuzzLoad loads any bytes as a llama2.c checkpoint, with any bytes as its
// tokenizer.bin (none when empty), through what Load runs once the files
// are read (no files, which would make an input cost ten times as much):
// what loads is a checked model whose weights can all be read.
func FuzzLoad(f *testing.F) {
	f.Fuzz(func(t *testing.T, data, tok []byte) {
		m, err := fromBytes(data, "fuzz.bin")
		if err == nil && len(tok) > 0 {
			err = addVocab(m, tok, "tokenizer.bin")
		}
		if err != nil {
			return
		}
		if err := m.Check(); err != nil {
			t.Fatal(err)
		}
		if v := m.Vocab; v != nil && len(v.Tokens) != m.Config.VocabSize {
			t.Fatalf("%d tokens for a vocabulary of %d", len(v.Tokens), m.Config.VocabSize)
		}
		if _, err := ParseHeader(data[:min(len(data), headerV1Size)], int64(len(data)), "fuzz.bin"); err != nil {
			t.Fatalf("loaded, but IsCheckpoint would say no: %v", err)
		}
		m.CheckFinite() // reads every byte of every tensor
	})
}
