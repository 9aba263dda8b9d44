package tokenizer

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/acttail/acttail-gpu/runtime/model"
)

func TestTok512OnceUponATime(t *testing.T) {
	tk := loadTok512(t)
	text := "Once upon a time"
	ids := tk.Encode(text, true)
	// <s> ▁Once ▁upon ▁a ▁time
	if want := []int{1, 403, 407, 261, 378}; !equalIDs(ids, want) {
		t.Fatalf("Encode(%q) = %v, want %v", text, ids, want)
	}
	if got := tk.Decode(ids); got != text {
		t.Fatalf("Decode = %q, want %q", got, text)
	}
	if got := tk.Encode("", true); !equalIDs(got, []int{1}) {
		t.Fatalf("Encode(\"\", true) = %v, want [1]", got)
	}
	if got := tk.Encode("", false); len(got) != 0 {
		t.Fatalf("Encode(\"\", false) = %v, want none", got)
	}
	if tk.BOS() != 1 || tk.EOS() != 2 || tk.VocabSize() != 512 || !tk.IsEnd(2) || tk.IsEnd(1) {
		t.Fatal("BOS, EOS, VocabSize or IsEnd is wrong")
	}
	if tk.Piece(403) != "▁Once" || tk.Piece(-1) != "" || tk.Piece(512) != "" {
		t.Fatal("Piece is wrong")
	}
}

func TestTok512ByteFallback(t *testing.T) {
	tk := loadTok512(t)
	// "\n" is no piece of tok512, nor "😀" (4 bytes), nor an invalid byte.
	ids := tk.Encode("a\n😀\xff", false)
	want := []int{261, 3 + '\n', 3 + 0xf0, 3 + 0x9f, 3 + 0x98, 3 + 0x80, 3 + 0xff}
	if !equalIDs(ids, want) {
		t.Fatalf("Encode = %v, want %v", ids, want)
	}
	if got := tk.Decode(ids); got != "a\n😀\xff" {
		t.Fatalf("Decode = %q", got)
	}
}

func TestTok512MatchesNaive(t *testing.T) {
	tk := loadTok512(t)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		s := randomText(rng, 60, true)
		got := tk.Encode(s, false)
		if want := naiveSPM(tk.Vocab(), s); !equalIDs(got, want) {
			t.Fatalf("Encode(%q) = %v, naive %v", s, got, want)
		}
		if !strings.Contains(s, "▁") {
			if back := tk.Decode(got); back != s {
				t.Fatalf("Decode(Encode(%q)) = %q", s, back)
			}
		}
		if back := streamDecode(t, tk, got); back != tk.Decode(got) {
			t.Fatalf("stream decode %q, Decode %q", back, tk.Decode(got))
		}
	}
}

func TestTok512Stories(t *testing.T) {
	tk := loadTok512(t)
	text := string(sharedFile(t, "data/tinystories-eval.txt"))
	head := text[:4096]
	if got, want := tk.Encode(head, false), naiveSPM(tk.Vocab(), head); !equalIDs(got, want) {
		t.Fatalf("first 4 KB: heap and naive encodings differ (%d and %d tokens)", len(got), len(want))
	}
	for _, name := range []string{"data/tinystories-eval.txt", "data/tinystories-calib.txt", "data/wikitext-2-test.txt"} {
		text := string(sharedFile(t, name))
		ids := tk.Encode(text, true)
		if back := tk.Decode(ids); back != text {
			t.Fatalf("%s does not round-trip", name)
		}
		if back := streamDecode(t, tk, ids); back != text {
			t.Fatalf("%s does not round-trip through a Stream", name)
		}
		t.Logf("%s: %d bytes, %d tokens", name, len(text), len(ids))
	}
}

// TestSPMRanks runs SPM merges by rank (Vocab.Merges), with merges made from
// the synthetic vocab's pieces in score order.
func TestSPMRanks(t *testing.T) {
	v := syntheticSPM()
	lookup := pieceLookup(v)
	for id, s := range v.Tokens {
		if !mergeable(v, id) {
			continue
		}
		for k := 1; k < len(s); k++ {
			if _, ok := lookup[s[:k]]; ok && utf8.RuneStart(s[k]) {
				if _, ok := lookup[s[k:]]; ok {
					v.Merges = append(v.Merges, s[:k]+" "+s[k:])
				}
			}
		}
	}
	v.Merges = append(v.Merges, "x y", "▁ aa", "aa a") // unusable merges are ignored
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	if got := tk.Encode("the", false); !slices.Equal(got, []int{lookup["▁the"]}) {
		t.Fatalf("Encode(the) = %v", got)
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for range 2000 {
		s := randomText(rng, 40, true)
		got := tk.Encode(s, true)
		if want := append([]int{1}, naiveSPM(v, s)...); !equalIDs(got, want) {
			t.Fatalf("Encode(%q) = %v, naive %v", s, got, want)
		}
	}
}

func TestSPMSynthetic(t *testing.T) {
	v := syntheticSPM()
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	lookup := pieceLookup(v)
	for _, c := range []struct {
		text string
		want []string
	}{
		{"the", []string{"▁the"}},
		{"aaaa", []string{"▁a", "aaa"}}, // "▁a" scores best, then "aa", then "aaa"
		{"中文", []string{"▁", "中文"}},     // "中文" (-26) beats "▁中" (-27)
		{" and", []string{"▁", "▁and"}},
		{"é!", []string{"▁", "é", "<0x21>"}},
	} {
		var want []int
		for _, p := range c.want {
			if id, ok := lookup[p]; ok {
				want = append(want, id)
			} else {
				want = append(want, slices.Index(v.Tokens, p))
			}
		}
		if got := tk.Encode(c.text, false); !equalIDs(got, want) {
			t.Errorf("Encode(%q) = %v, want %v %q", c.text, got, want, c.want)
		}
		if got := tk.Decode(want); got != c.text {
			t.Errorf("Decode(%q) = %q, want %q", c.want, got, c.text)
		}
	}
}

func TestSPMNoBytesNoPrefix(t *testing.T) {
	v := &model.Vocab{Kind: model.VocabSPM, Tokens: []string{"<unk>", "a", "b", "ab", "▁", "ba"},
		Scores: []float32{0, 0, 0, 1, 0, 1}, Types: []model.TokenType{model.TokenUnknown, 1, 1, 1, 1, 1}, BOS: -1, EOS: -1}
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	// Equal scores: the leftmost pair merges first.
	if got := tk.Encode("aba", false); !equalIDs(got, []int{3, 1}) {
		t.Fatalf("Encode(aba) = %v, want [3 1]", got)
	}
	if got := tk.Encode("bab", false); !equalIDs(got, []int{5, 2}) {
		t.Fatalf("Encode(bab) = %v, want [5 2]", got)
	}
	if got := tk.Encode("ab c", true); !equalIDs(got, []int{3, 4, 0}) {
		t.Fatalf("Encode = %v, want [3 4 0]: no prefix, no BOS, UNK for c", got)
	}
	if got := tk.Decode([]int{3, 4, 0, -1, 99}); got != "ab \uFFFD" {
		t.Fatalf("Decode = %q", got)
	}
	v.UNK = -1
	tk, _ = New(v)
	if got := tk.Encode("ab c", true); !equalIDs(got, []int{3, 4}) {
		t.Fatalf("Encode without UNK = %v, want [3 4]", got)
	}
}

func TestEncodeSpecialSPM(t *testing.T) {
	tk := spmOrSynthetic(t)
	lookup := pieceLookup(tk.Vocab())
	if got := tk.Encode("<s>", false); slices.Contains(got, 1) {
		t.Fatalf("Encode found the BOS string: %v", got)
	}
	got := tk.EncodeSpecial("<s>the</s>the", false)
	want := []int{1, lookup["▁the"], 2, lookup["▁the"]}
	if !equalIDs(got, want) {
		t.Fatalf("EncodeSpecial = %v, want %v", got, want)
	}
	if got := tk.EncodeSpecial("the<unk>", true); !equalIDs(got, []int{1, lookup["▁the"], 0}) {
		t.Fatalf("EncodeSpecial with <unk> = %v", got)
	}
	if got := tk.Decode(want); got != "the the" {
		t.Fatalf("Decode = %q", got)
	}
}

func TestNewRejects(t *testing.T) {
	ok := func() *model.Vocab {
		return &model.Vocab{Kind: model.VocabSPM, Tokens: []string{"a"}, Scores: []float32{0}, BOS: -1, EOS: -1, UNK: -1}
	}
	for name, edit := range map[string]func(v *model.Vocab){
		"kind":          func(v *model.Vocab) { v.Kind = "wordpiece" },
		"empty":         func(v *model.Vocab) { v.Tokens = nil },
		"scores":        func(v *model.Vocab) { v.Scores = []float32{0, 1} },
		"no scores":     func(v *model.Vocab) { v.Scores = nil },
		"types":         func(v *model.Vocab) { v.Types = []model.TokenType{} },
		"bos":           func(v *model.Vocab) { v.BOS = 1 },
		"unk":           func(v *model.Vocab) { v.UNK = -2 },
		"eot":           func(v *model.Vocab) { v.EOT = []int{5} },
		"byte token":    func(v *model.Vocab) { v.Types = []model.TokenType{model.TokenByte} },
		"merge":         func(v *model.Vocab) { v.Merges = []string{"ab"} },
		"pre-tokenizer": func(v *model.Vocab) { v.Kind, v.PreTokenizer = model.VocabBPE, "bert" },
	} {
		v := ok()
		edit(v)
		if _, err := New(v); err == nil {
			t.Errorf("%s: New accepted %+v", name, v)
		}
	}
	if _, err := New(nil); err == nil {
		t.Error("New(nil) gave no error")
	}
	if _, err := New(ok()); err != nil {
		t.Errorf("New(ok) = %v", err)
	}
}

func TestStreamHoldsPartialRunes(t *testing.T) {
	tk := spmOrSynthetic(t)
	b := func(c byte) int { return int(tk.byteID[c]) }
	s := tk.NewStream()
	steps := []struct {
		id   int
		want string
	}{
		{1, ""},
		{int(tk.pieceID["▁"]), ""}, // the prefix space is dropped
		{b(0xe4), ""},
		{b(0xb8), ""},
		{b(0xad), "中"},
		{b('!'), "!"},
		{b(0xf0), ""},
		{b('x'), "\xf0x"}, // can never complete: passed on
		{b(0xc3), ""},
	}
	for i, st := range steps {
		if got := s.Next(st.id); got != st.want {
			t.Fatalf("step %d: Next(%d) = %q, want %q", i, st.id, got, st.want)
		}
	}
	if got := s.Flush(); got != "\xc3" {
		t.Fatalf("Flush = %q", got)
	}
	if got := s.Flush(); got != "" {
		t.Fatalf("second Flush = %q", got)
	}
}

func TestCompleteUTF8(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{"", 0}, {"a", 1}, {"\xe4", 0}, {"a\xe4\xb8", 1}, {"中", 3}, {"\xf0\x9f\x98", 0}, {"😀", 4},
		{"\xf0\x9f\x98\x80\x80", 5}, {"\xff", 1}, {"\xe4a", 2}, {"\x80\x80\x80", 3}, {"\xe0\x80", 2},
	} {
		if got := completeUTF8([]byte(c.in)); got != c.want {
			t.Errorf("completeUTF8(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}

func FuzzSPMRoundTrip(f *testing.F) {
	for _, s := range []string{"", "Once upon a time", " two  spaces ", "\xff\xfe", "中文 é😀", "▁", "<s>x</s>", "\n\n"} {
		f.Add(s)
	}
	tk := spmOrSynthetic(f)
	f.Fuzz(func(t *testing.T, s string) {
		ids := tk.Encode(s, true)
		if len(s) < 400 {
			if want := append([]int{1}, naiveSPM(tk.Vocab(), s)...); !equalIDs(ids, want) {
				t.Fatalf("Encode(%q) = %v, naive %v", s, ids, want)
			}
		}
		back := tk.Decode(ids)
		if !strings.Contains(s, "▁") && back != s {
			t.Fatalf("Decode(Encode(%q)) = %q", s, back)
		}
		if st := streamDecode(t, tk, ids); st != back {
			t.Fatalf("stream %q, Decode %q", st, back)
		}
		tk.Decode(tk.EncodeSpecial(s, true))
	})
}
