package llama2c

import (
	"bytes"
	"encoding/binary"
	"github.com/acttail/acttail-gpu/internal/testfiles"
	"math"
	"os"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/model"
)

func tok512Path(t testing.TB) string {
	p := testfiles.Find("models/stories260K/tok512.bin")
	if p == "" {
		t.Skip("shared/models/stories260K/tok512.bin not found")
	}
	return p
}

// tokFile builds a tokenizer.bin from pieces in the file's convention.
func tokFile(maxLen int32, scores []float32, pieces []string) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, maxLen)
	for i, p := range pieces {
		binary.Write(&b, binary.LittleEndian, scores[i])
		binary.Write(&b, binary.LittleEndian, int32(len(p)))
		b.WriteString(p)
	}
	return b.Bytes()
}

func TestParseVocabTok512(t *testing.T) {
	path := tok512Path(t)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	v, err := LoadVocab(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Tokens) != 512 || len(v.Scores) != 512 || len(v.Types) != 512 {
		t.Fatalf("got %d tokens, %d scores, %d types; want 512", len(v.Tokens), len(v.Scores), len(v.Types))
	}
	if v.Kind != model.VocabSPM || v.BOS != 1 || v.EOS != 2 || v.UNK != 0 || !v.AddBOS || !v.AddSpacePrefix {
		t.Fatalf("vocab settings: kind %q BOS %d EOS %d UNK %d AddBOS %v AddSpacePrefix %v",
			v.Kind, v.BOS, v.EOS, v.UNK, v.AddBOS, v.AddSpacePrefix)
	}
	for _, c := range []struct {
		id    int
		piece string
		typ   model.TokenType
	}{
		{0, "<unk>", model.TokenUnknown},
		{1, "<s>", model.TokenControl},
		{2, "</s>", model.TokenControl},
		{3, "<0x00>", model.TokenByte},
		{3 + 'A', "<0x41>", model.TokenByte},
		{258, "<0xFF>", model.TokenByte},
		{259, "▁t", model.TokenNormal},
		{403, "▁Once", model.TokenNormal},
		{410, "▁", model.TokenNormal},
		{465, "“", model.TokenNormal},
	} {
		if v.Tokens[c.id] != c.piece || v.Types[c.id] != c.typ {
			t.Errorf("token %d = %q type %d, want %q type %d", c.id, v.Tokens[c.id], v.Types[c.id], c.piece, c.typ)
		}
	}
	if v.Scores[260] != -1 || v.Scores[511] != -252 {
		t.Errorf("scores 260, 511 = %v, %v; want -1, -252", v.Scores[260], v.Scores[511])
	}
	for id, p := range v.Tokens {
		if strings.Contains(p, " ") {
			t.Errorf("token %d %q still holds a space", id, p)
		}
	}
	if w, err := ParseVocab(data, 512, "tok512.bin"); err != nil || len(w.Tokens) != 512 {
		t.Fatalf("ParseVocab with vocab size 512: %v", err)
	}
	var out bytes.Buffer
	if err := WriteVocab(&out, v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("WriteVocab does not give back tok512.bin (%d bytes, want %d)", out.Len(), len(data))
	}
}

func TestParseVocabErrors(t *testing.T) {
	good := tokFile(6, []float32{0, 0, 0, -1}, []string{"<unk>", "\n<s>\n", "\n</s>\n", " a"})
	if _, err := ParseVocab(good, 4, "good"); err != nil {
		t.Fatalf("good file: %v", err)
	}
	for _, c := range []struct {
		name      string
		data      []byte
		vocabSize int
		want      string
	}{
		{"empty", nil, 0, "too short"},
		{"header only", good[:4], 0, "no tokens"},
		{"negative max", tokFile(-1, nil, nil), 0, "max_token_length is -1"},
		{"too long for max", tokFile(1, []float32{0}, []string{"ab"}), 0, "exceeds max_token_length"},
		{"truncated entry", good[:len(good)-5], 0, "truncated"},
		{"truncated piece", good[:len(good)-1], 0, "runs past the end"},
		{"negative length", func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint32(b[8:], math.MaxUint32)
			return b
		}(), 0, "negative"},
		{"huge length", func() []byte {
			b := bytes.Clone(good)
			binary.LittleEndian.PutUint32(b[0:], math.MaxInt32)
			binary.LittleEndian.PutUint32(b[8:], math.MaxInt32)
			return b
		}(), 0, "runs past the end"},
		{"more tokens than vocab", good, 3, "bytes left after 3 tokens"},
		{"fewer tokens than vocab", good, 5, "truncated"},
		{"huge vocab", good, math.MaxInt32, "need at least"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseVocab(c.data, c.vocabSize, "bad.bin")
			if err == nil {
				t.Fatalf("no error, want %q", c.want)
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "bad.bin") {
				t.Fatalf("error %q should name the file and say %q", err, c.want)
			}
		})
	}
}

func TestParseVocabOddScores(t *testing.T) {
	nan := math.Float32frombits(0x7fc00001)
	data := tokFile(5, []float32{nan, float32(math.Inf(-1)), 0}, []string{"<unk>", "x y", ""})
	v, err := ParseVocab(data, 0, "odd")
	if err != nil {
		t.Fatal(err)
	}
	if v.Tokens[1] != "x y" || v.Types[1] != model.TokenControl || v.Tokens[2] != "" || v.EOS != 2 {
		t.Fatalf("odd pieces: %q", v.Tokens)
	}
	var out bytes.Buffer
	if err := WriteVocab(&out, v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), data) {
		t.Fatal("NaN, -Inf and empty pieces do not round-trip")
	}
}

func TestWriteVocabRejects(t *testing.T) {
	for _, v := range []*model.Vocab{
		{Kind: model.VocabBPE, Tokens: []string{"a"}},
		{Kind: model.VocabSPM, Tokens: []string{"a"}},
	} {
		if err := WriteVocab(&bytes.Buffer{}, v); err == nil {
			t.Errorf("WriteVocab(%+v) gave no error", v)
		}
	}
}

func TestFuzzParseVocabCorpus(t *testing.T) {
	good := tokFile(6, []float32{0, 0, 0, -1, -2}, []string{"<unk>", "\n<s>\n", "\n</s>\n", "<0x0A>", " a b"})
	testfiles.WriteCorpus(t, "FuzzParseVocab", []testfiles.Seed{
		{Name: "good", Args: []any{good, 0}},
		{Name: "good-5", Args: []any{good, 5}},
		{Name: "good-too-many", Args: []any{good, 1 << 30}},
		{Name: "cut", Args: []any{good[:9], 0}},
		{Name: "huge-lengths", Args: []any{[]byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f}, 0}},
		{Name: "negative-length", Args: []any{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}, 1}},
	})
}

// FuzzParseVocab parses any bytes as a tokenizer.bin. Its seeds are small
// (testdata/fuzz/FuzzParseVocab): tok512.bin whole (6 KB) left the workers
// minimizing, 89 execs in 30 s.
func FuzzParseVocab(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte, vocabSize int) {
		v, err := ParseVocab(data, vocabSize, "fuzz")
		if err != nil {
			return
		}
		if vocabSize > 0 && len(v.Tokens) != vocabSize {
			t.Fatalf("%d tokens, asked for %d", len(v.Tokens), vocabSize)
		}
		var out bytes.Buffer
		if err := WriteVocab(&out, v); err != nil {
			t.Fatal(err)
		}
		w, err := ParseVocab(out.Bytes(), len(v.Tokens), "fuzz again")
		if err != nil {
			t.Fatalf("written vocab does not parse: %v", err)
		}
		for id := range v.Tokens {
			if w.Tokens[id] != v.Tokens[id] || w.Types[id] != v.Types[id] ||
				math.Float32bits(w.Scores[id]) != math.Float32bits(v.Scores[id]) {
				t.Fatalf("token %d: %q %d %v became %q %d %v", id, v.Tokens[id], v.Types[id], v.Scores[id],
					w.Tokens[id], w.Types[id], w.Scores[id])
			}
		}
	})
}
