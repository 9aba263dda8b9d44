package tokenizer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// sharedFile reads a shared file or skips the test.
func sharedFile(t testing.TB, rel string) []byte {
	p := testfiles.Find(rel)
	if p == "" {
		t.Skipf("shared/%s not found", rel)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

const tok512 = "models/stories260K/tok512.bin"

// loadTok512 builds the stories260K tokenizer or skips the test.
func loadTok512(t testing.TB) *Tokenizer {
	p := testfiles.Find(tok512)
	if p == "" {
		t.Skip("shared/" + tok512 + " not found")
	}
	return mustTok512(t, p)
}

func mustTok512(t testing.TB, path string) *Tokenizer {
	v, err := llama2c.LoadVocab(path)
	if err != nil {
		t.Fatal(err)
	}
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// spmOrSynthetic is tok512 when the shared folder has it, otherwise a small
// SPM vocab built here, so that fuzz targets run anywhere.
func spmOrSynthetic(t testing.TB) *Tokenizer {
	if p := testfiles.Find(tok512); p != "" {
		return mustTok512(t, p)
	}
	tk, err := New(syntheticSPM())
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// syntheticSPM is a llama2.c-shaped vocab: <unk>, <s>, </s>, 256 byte
// tokens, then pieces with falling scores.
func syntheticSPM() *model.Vocab {
	v := &model.Vocab{Kind: model.VocabSPM, BOS: 1, EOS: 2, UNK: 0, AddBOS: true, AddSpacePrefix: true}
	add := func(s string, score float32, typ model.TokenType) {
		v.Tokens = append(v.Tokens, s)
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, typ)
	}
	add("<unk>", 0, model.TokenUnknown)
	add("<s>", 0, model.TokenControl)
	add("</s>", 0, model.TokenControl)
	for b := range 256 {
		add(byteToken(byte(b)), 0, model.TokenByte)
	}
	for i, p := range []string{"▁t", "he", "▁a", "▁the", "in", "▁th", "er", "an", "▁w", "▁an", "▁and", "aa", "aaa",
		"▁", "e", "t", "a", "h", "n", "d", "i", "r", "w", "é", "中", "文", "中文", "▁中"} {
		add(p, -float32(i), model.TokenNormal)
	}
	return v
}

func byteToken(b byte) string { return fmt.Sprintf("<0x%02X>", b) }

// randomText draws up to n runes from an alphabet with ASCII, spaces and
// newlines, accented and CJK letters, digits of other scripts, marks,
// emoji, odd whitespace and, when invalid is set, broken UTF-8.
func randomText(rng *rand.Rand, n int, invalid bool) string {
	alphabet := []string{"a", "e", "t", "h", "n", "d", "T", "O", "x", "q", " ", " ", " ", "  ", "\n", "\r\n", "\t",
		"'", "'s", "'T", "'re", "'LL", ".", ",", "!", "?", "\"", "1", "23", "4567", "é", "ñ", "中", "文", "ß", "Σ", "ſ",
		"٣", "½", "\u0301", "😀", "👍🏽", "\u00a0", "\u3000", "\u2028", "\u0085", "\v", "“", "”", "—", "<", ">", "|",
		"once", " upon", " a", " time", "the", " the", "and", "<s>", "</s>", "<unk>"}
	if invalid {
		alphabet = append(alphabet, "\xff", "\xe2\x82", "\xc3", "\x80", "\xf0\x9f\x98")
	}
	var b strings.Builder
	for range rng.IntN(n + 1) {
		b.WriteString(alphabet[rng.IntN(len(alphabet))])
	}
	return b.String()
}

// naiveMerge is llama2.c's quadratic loop over token texts: merge the best
// adjacent pair, the first of equals, until none is left. Scores rank pairs
// by the merged piece's score (NaN never merges); merges, when given, by
// the rank of "left right".
func naiveMerge(v *model.Vocab, ids []int, lookup map[string]int, ranks map[string]int) []int {
	for {
		best, bestAt, bestID := math.Inf(-1), -1, -1
		for i := 0; i+1 < len(ids); i++ {
			a, b := v.Tokens[ids[i]], v.Tokens[ids[i+1]]
			id, ok := lookup[a+b]
			if !ok || !mergeable(v, ids[i]) || !mergeable(v, ids[i+1]) {
				continue
			}
			var prio float64
			if ranks != nil {
				r, ok := ranks[a+" "+b]
				if !ok {
					continue
				}
				prio = -float64(r)
			} else {
				prio = float64(v.Scores[id])
				if math.IsNaN(prio) {
					continue
				}
			}
			if bestAt < 0 || prio > best {
				best, bestAt, bestID = prio, i, id
			}
		}
		if bestAt < 0 {
			return ids
		}
		ids[bestAt] = bestID
		ids = append(ids[:bestAt+1], ids[bestAt+2:]...)
	}
}

func mergeable(v *model.Vocab, id int) bool {
	typ := v.Type(id)
	return typ == model.TokenNormal || typ == model.TokenUserDefined
}

// naiveTables memoizes pieceLookup and mergeRanks per vocab.
var naiveTables sync.Map // *model.Vocab -> [2]map[string]int

func tablesOf(v *model.Vocab) (lookup, ranks map[string]int) {
	if m, ok := naiveTables.Load(v); ok {
		t := m.([2]map[string]int)
		return t[0], t[1]
	}
	lookup, ranks = pieceLookup(v), mergeRanks(v)
	naiveTables.Store(v, [2]map[string]int{lookup, ranks})
	return lookup, ranks
}

// pieceLookup maps mergeable token texts to their lowest id.
func pieceLookup(v *model.Vocab) map[string]int {
	m := map[string]int{}
	for id, s := range v.Tokens {
		if _, dup := m[s]; !dup && mergeable(v, id) {
			m[s] = id
		}
	}
	return m
}

// mergeRanks maps "left right" to its first rank, or nil without merges.
func mergeRanks(v *model.Vocab) map[string]int {
	if len(v.Merges) == 0 {
		return nil
	}
	m := map[string]int{}
	for r, s := range v.Merges {
		if _, dup := m[s]; !dup {
			m[s] = r
		}
	}
	return m
}

// naiveSPM encodes like llama2.c's encode(): "▁" prefix and spaces, runes
// or their byte tokens, then naiveMerge.
func naiveSPM(v *model.Vocab, text string) []int {
	if text == "" {
		return nil
	}
	lookup, ranks := tablesOf(v)
	byteIDs := map[string]int{}
	for id, s := range v.Tokens {
		if v.Type(id) == model.TokenByte {
			byteIDs[s] = id
		}
	}
	if v.AddSpacePrefix {
		text = " " + text
	}
	var ids []int
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		piece := text[i : i+size]
		if r == ' ' {
			piece = "▁"
		}
		if id, ok := lookup[piece]; ok && !(r == utf8.RuneError && size == 1) {
			ids = append(ids, id)
		} else {
			for j := range len(piece) {
				ids = append(ids, byteIDs[byteToken(piece[j])])
			}
		}
		i += size
	}
	return naiveMerge(v, ids, lookup, ranks)
}

// naiveBPE encodes byte-level BPE chunk by chunk with naiveMerge, taking a
// chunk whole when it is a token and whole is set.
func naiveBPE(v *model.Vocab, text string, split func(string, int) int, whole bool) []int {
	lookup, ranks := tablesOf(v)
	var out []int
	for i := 0; i < len(text); {
		e := split(text, i)
		var ids []int
		var word strings.Builder
		for _, c := range []byte(text[i:e]) {
			ids = append(ids, lookup[string(byteRunes[c])])
			word.WriteRune(byteRunes[c])
		}
		if id, ok := lookup[word.String()]; ok && whole {
			out = append(out, id)
		} else {
			out = append(out, naiveMerge(v, ids, lookup, ranks)...)
		}
		i = e
	}
	return out
}

// equalIDs reports whether two id lists match.
func equalIDs(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// streamDecode decodes ids through a Stream and checks that no piece but
// the flush splits valid UTF-8 when the whole is valid.
func streamDecode(t testing.TB, tk *Tokenizer, ids []int) string {
	s := tk.NewStream()
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(s.Next(id))
	}
	whole := b.String()
	rest := s.Flush()
	if utf8.ValidString(whole+rest) && (!utf8.ValidString(whole) || rest != "") {
		t.Fatalf("stream held back %q or split a rune in %q", rest, whole)
	}
	return whole + rest
}

func TestFuzzStreamCorpus(t *testing.T) {
	ids := func(v ...uint16) []byte {
		var b []byte
		for _, x := range v {
			b = append(b, byte(x), byte(x>>8))
		}
		return b
	}
	testfiles.WriteCorpus(t, "FuzzStream", []testfiles.Seed{
		{Name: "empty", Args: []any{[]byte{}}},
		{Name: "words", Args: []any{ids(3, 300, 301, 302, 400, 4)}},
		// SPM's byte tokens (id byte+3, fed as id+2) of € and half an emoji
		{Name: "utf8-bytes", Args: []any{ids(0xe2+5, 0x82+5, 0xac+5, 0xf0+5, 0x9f+5)}},
		{Name: "out-of-range", Args: []any{ids(0, 1, 0xffff, 2, 0xfffe)}},
	})
}

// FuzzStream decodes any sequence of ids, out-of-range ones and lone
// UTF-8 bytes included, one token at a time: the pieces and the flush add
// up to Decode of the whole, and no piece splits a rune when the whole is
// valid UTF-8.
func FuzzStream(f *testing.F) {
	tks := []*Tokenizer{spmOrSynthetic(f), trainedBPE(f, "llama3")}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, tk := range tks {
			ids := make([]int, len(raw)/2)
			for i := range ids {
				u := int(raw[2*i]) | int(raw[2*i+1])<<8
				ids[i] = u%(tk.VocabSize()+4) - 2
			}
			s := tk.NewStream()
			var pieces []string
			for _, id := range ids {
				pieces = append(pieces, s.Next(id))
			}
			pieces = append(pieces, s.Flush())
			want := tk.Decode(ids)
			if got := strings.Join(pieces, ""); got != want {
				t.Fatalf("stream of %v: %q, Decode %q", ids, got, want)
			}
			if utf8.ValidString(want) {
				for i, p := range pieces {
					if !utf8.ValidString(p) {
						t.Fatalf("stream of %v: piece %d (%q) splits a rune", ids, i, p)
					}
				}
			}
		}
	})
}

// TokenBytes spells each token as it stands alone: joined, they are the
// decoded text with SPM's leading space kept; control tokens are empty.
func TestTokenBytes(t *testing.T) {
	tk := spmOrSynthetic(t)
	ids := tk.Encode("Once upon a time, é", true)
	var joined []byte
	for _, id := range ids {
		joined = append(joined, tk.TokenBytes(id)...)
	}
	if got, want := string(joined), " "+tk.Decode(ids); got != want {
		t.Fatalf("joined %q, want %q", got, want)
	}
	if tk.TokenBytes(tk.BOS()) != nil || tk.TokenBytes(-1) != nil || tk.TokenBytes(tk.VocabSize()) != nil {
		t.Fatal("bytes for BOS or an id outside the vocab")
	}
	b := tk.TokenBytes(ids[1])
	b[0] = 'X'
	if tk.TokenBytes(ids[1])[0] == 'X' {
		t.Fatal("TokenBytes returned the tokenizer's own bytes")
	}
}
