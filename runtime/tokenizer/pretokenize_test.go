package tokenizer

import (
	"math/rand/v2"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// chunks splits s with a pre-tokenizer scanner.
func chunks(split func(string, int) int, s string) []string {
	var out []string
	for i := 0; i < len(s); {
		e := split(s, i)
		out = append(out, s[i:e])
		i = e
	}
	return out
}

func TestLlama3Chunks(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"Hello world", []string{"Hello", " world"}},
		{"I'm here", []string{"I", "'m", " here"}},
		{"DON'T we'LL they'Re", []string{"DON", "'T", " we", "'LL", " they", "'Re"}},
		{"it'ſ", []string{"it", "'ſ"}}, // (?i) folds ſ to s
		{"'hello", []string{"'hello"}},
		{"12345", []string{"123", "45"}},
		{"x1234567y", []string{"x", "123", "456", "7", "y"}},
		{"a   b", []string{"a", "  ", " b"}},
		{"a \tb", []string{"a", " ", "\tb"}},
		{"end  ", []string{"end", "  "}},
		{"\n\n", []string{"\n\n"}},
		{"a\n\nb", []string{"a", "\n\n", "b"}},
		{"a \n  b", []string{"a", " \n", " ", " b"}},
		{"x!!! y", []string{"x", "!!!", " y"}},
		{"hi...\n\nok", []string{"hi", "...\n\n", "ok"}},
		{" ...", []string{" ..."}},
		{"(a)", []string{"(a", ")"}},
		{"Привет мир", []string{"Привет", " мир"}},
		{"日本語のテキスト", []string{"日本語のテキスト"}},
		{"emoji 😀😀 ok", []string{"emoji", " 😀😀", " ok"}},
		{"café\u0301", []string{"café", "\u0301"}},
		{"\u00a0x", []string{"\u00a0x"}},
		{"a\r\n", []string{"a", "\r\n"}},
		{"\xff\xfeab \xffab", []string{"\xff\xfe", "ab", " \xff", "ab"}},
		{"\xffab", []string{"\xffab"}},
	} {
		if got := chunks(llama3Chunk, c.in); !slices.Equal(got, c.want) {
			t.Errorf("llama3 %q: %q, want %q", c.in, got, c.want)
		}
	}
}

func TestGPT2Chunks(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []string
	}{
		{"Hello world", []string{"Hello", " world"}},
		{"I'm DON'T", []string{"I", "'m", " DON", "'", "T"}},
		{"12345 678", []string{"12345", " 678"}},
		{"a   b", []string{"a", "  ", " b"}},
		{"x!!! y", []string{"x", "!!!", " y"}},
		{"a\n\nb", []string{"a", "\n", "\n", "b"}},
		{"end \n", []string{"end", " \n"}},
		{" 😀", []string{" 😀"}},
	} {
		if got := chunks(gpt2Chunk, c.in); !slices.Equal(got, c.want) {
			t.Errorf("gpt2 %q: %q, want %q", c.in, got, c.want)
		}
	}
}

// regexpSplitter is the pattern run by Go's regexp (leftmost-first, as a
// backtracking engine would choose), with \s widened to Unicode White_Space
// and the lookahead alternative \s+(?!\S) done by explicit backtracking.
type regexpSplitter struct{ head, space *regexp.Regexp }

const ws = `\t\n\v\f\r \x{85}\p{Z}`

func newRegexpSplitter(head string) regexpSplitter {
	head = strings.ReplaceAll(head, `[^\s`, `[^`+ws)
	head = strings.ReplaceAll(head, `\s`, `[`+ws+`]`)
	return regexpSplitter{regexp.MustCompile(`\A(?:` + head + `)`), regexp.MustCompile(`\A[` + ws + `]+`)}
}

var (
	llama3Regexp = newRegexpSplitter(`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+`)
	gpt2Regexp   = newRegexpSplitter(`'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+`)
)

func (r regexpSplitter) split(s string, i int) int {
	if loc := r.head.FindStringIndex(s[i:]); loc != nil {
		return i + loc[1]
	}
	run := r.space.FindString(s[i:])
	if run == "" {
		panic("no alternative matches at " + s[i:])
	}
	// \s+(?!\S): backtrack from the whole run, one rune at a time, to the
	// first length that is followed by the end or by whitespace.
	var ends []int
	for k := range run {
		if k > 0 {
			ends = append(ends, k)
		}
	}
	ends = append(ends, len(run))
	for j := len(ends) - 1; j >= 0; j-- {
		if k := ends[j]; i+k == len(s) || k < len(run) {
			return i + k
		}
	}
	return i + len(run) // \s+
}

func TestChunksMatchRegexp(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for range 20000 {
		s := randomText(rng, 30, true)
		for _, c := range []struct {
			name   string
			scan   func(string, int) int
			regexp regexpSplitter
		}{{"llama3", llama3Chunk, llama3Regexp}, {"gpt2", gpt2Chunk, gpt2Regexp}} {
			if got, want := chunks(c.scan, s), chunks(c.regexp.split, s); !slices.Equal(got, want) {
				t.Fatalf("%s %q: %q, regexp %q", c.name, s, got, want)
			}
		}
	}
}

func FuzzPreTokenize(f *testing.F) {
	for _, s := range []string{"", "I'm DON'T 12345 a   b\n\n", "x!!! y\r\n", "Привет 😀 \u00a0\u3000", "\xff'\xe2\x82"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, c := range []struct {
			name   string
			scan   func(string, int) int
			regexp regexpSplitter
		}{{"llama3", llama3Chunk, llama3Regexp}, {"gpt2", gpt2Chunk, gpt2Regexp}} {
			got := chunks(c.scan, s)
			for _, ch := range got {
				if ch == "" {
					t.Fatalf("%s %q: empty chunk", c.name, s)
				}
			}
			if strings.Join(got, "") != s {
				t.Fatalf("%s %q: chunks %q do not concatenate to the input", c.name, s, got)
			}
			if want := chunks(c.regexp.split, s); !slices.Equal(got, want) {
				t.Fatalf("%s %q: %q, regexp %q", c.name, s, got, want)
			}
		}
	})
}
