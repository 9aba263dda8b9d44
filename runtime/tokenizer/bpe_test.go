package tokenizer

import (
	"github.com/acttail/acttail-gpu/internal/testfiles"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// tinyBPE is a hand-made byte-level vocab: token b is byte b, then a few
// merges, a token with no merge, and special tokens.
func tinyBPE(pre string) *model.Vocab {
	v := &model.Vocab{Kind: model.VocabBPE, PreTokenizer: pre, BOS: -1, EOS: -1, UNK: -1}
	for b := range 256 {
		v.Tokens = append(v.Tokens, string(byteRunes[b]))
	}
	for _, m := range []string{"h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or"} {
		v.Tokens = append(v.Tokens, strings.Replace(m, " ", "", 1))
		v.Merges = append(v.Merges, m)
	}
	v.Tokens = append(v.Tokens, "Ġxyz", "<|begin_of_text|>", "<|eot_id|>", "<|user|>")
	v.Types = make([]model.TokenType, len(v.Tokens))
	for i := range v.Types {
		v.Types[i] = model.TokenNormal
	}
	v.Types[264], v.Types[265], v.Types[266] = model.TokenControl, model.TokenControl, model.TokenUserDefined
	v.BOS, v.EOT = 264, []int{265}
	return v
}

func TestByteRunes(t *testing.T) {
	if byteRunes[' '] != 'Ġ' || byteRunes['\n'] != 'Ċ' || byteRunes['a'] != 'a' || byteRunes[0] != 'Ā' ||
		byteRunes[0xad] != 'Ń' || byteRunes[0xff] != 'ÿ' {
		t.Fatal("byteRunes differs from GPT-2's bytes_to_unicode")
	}
	seen := map[rune]bool{}
	for b, r := range byteRunes {
		if seen[r] || decodeByteRunes(string(r))[0] != byte(b) {
			t.Fatalf("byte %d: rune %q is not a bijection", b, r)
		}
		seen[r] = true
	}
}

func TestTinyBPE(t *testing.T) {
	const (
		hello, gW, or, gWor, gXyz, bos, eot, user = 259, 260, 261, 262, 263, 264, 265, 266
	)
	for _, c := range []struct {
		pre, text string
		want      []int
	}{
		{"llama3", "hello world", []int{hello, gWor, 'l', 'd'}},
		{"gpt2", "hello world", []int{hello, gWor, 'l', 'd'}},
		{"llama3", "lll", []int{257, 'l'}}, // equal ranks: leftmost first
		{"llama3", " xyz", []int{gXyz}},    // whole chunk is a token
		{"gpt2", " xyz", []int{' ', 'x', 'y', 'z'}},
		{"llama3", "I'm 12345", []int{'I', '\'', 'm', ' ', '1', '2', '3', '4', '5'}},
		{"llama3", "hé", []int{'h', 0xc3, 0xa9}},
		{"llama3", "", nil},
	} {
		tk, err := New(tinyBPE(c.pre))
		if err != nil {
			t.Fatal(err)
		}
		if got := tk.Encode(c.text, false); !equalIDs(got, c.want) {
			t.Errorf("%s Encode(%q) = %v, want %v", c.pre, c.text, got, c.want)
		}
		if got := tk.Decode(c.want); got != c.text {
			t.Errorf("%s Decode(%v) = %q, want %q", c.pre, c.want, got, c.text)
		}
	}
	tk, _ := New(tinyBPE(""))
	text := "<|begin_of_text|><|user|>hello<|eot_id|>"
	ids := tk.EncodeSpecial(text, true)
	if want := []int{bos, bos, user, hello, eot}; !equalIDs(ids, want) {
		t.Fatalf("EncodeSpecial = %v, want %v", ids, want)
	}
	if got := tk.Decode(ids); got != "<|user|>hello" {
		t.Fatalf("Decode = %q", got)
	}
	if ids := tk.Encode(text, true); ids[0] != bos || tk.Decode(ids) != text || len(ids) < 10 {
		t.Fatalf("Encode should take the special strings as text: %v", ids)
	}
	if !tk.IsEnd(eot) || tk.IsEnd(bos) {
		t.Fatal("IsEnd")
	}
}

// trainBPE learns n byte-level merges from corpus, most frequent pair first
// (ties to the smaller pair), as a vocab for comparing against naiveBPE.
func trainBPE(corpus, pre string, n int) *model.Vocab {
	v := &model.Vocab{Kind: model.VocabBPE, PreTokenizer: pre, BOS: -1, EOS: -1, UNK: -1}
	for b := range 256 {
		v.Tokens = append(v.Tokens, string(byteRunes[b]))
	}
	split := llama3Chunk
	if pre == "gpt2" {
		split = gpt2Chunk
	}
	counts := map[string]int{}
	for _, c := range chunks(split, corpus) {
		counts[c]++
	}
	var words [][]string
	var freq []int
	for c, k := range counts {
		var w []string
		for _, b := range []byte(c) {
			w = append(w, string(byteRunes[b]))
		}
		words, freq = append(words, w), append(freq, k)
	}
	for range n {
		pairs := map[[2]string]int{}
		for i, w := range words {
			for j := 0; j+1 < len(w); j++ {
				pairs[[2]string{w[j], w[j+1]}] += freq[i]
			}
		}
		var best [2]string
		bestN := 0
		for p, k := range pairs {
			if k > bestN || k == bestN && p[0]+" "+p[1] < best[0]+" "+best[1] {
				best, bestN = p, k
			}
		}
		if bestN < 2 {
			break
		}
		v.Tokens = append(v.Tokens, best[0]+best[1])
		v.Merges = append(v.Merges, best[0]+" "+best[1])
		for i, w := range words {
			var out []string
			for j := 0; j < len(w); j++ {
				if j+1 < len(w) && w[j] == best[0] && w[j+1] == best[1] {
					out = append(out, best[0]+best[1])
					j++
				} else {
					out = append(out, w[j])
				}
			}
			words[i] = out
		}
	}
	return v
}

const trainCorpus = `Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.
One day, she saw a big, red ball in the park. "Can I play with it?" she asked her mom. Her mom said, "Yes,
but be careful!" Lily played and played until 5:30 pm. In 1984 the population was 12,345; in 2024 it's
67,890 — that's growth. Привет, мир! 日本語のテキスト. Émile's café isn't open; they'll reopen Tuesday.
    indented code() { return x + y; }
	tabs	and  double  spaces   here.


New paragraphs after blank lines. DON'T SHOUT. We'VE been here. I'd like 3.14159 and 2.71828 please.`

// trainedBPE returns a tokenizer with merges learned from the shared
// TinyStories calibration text, or from trainCorpus without it.
func trainedBPE(t testing.TB, pre string) *Tokenizer {
	corpus := trainCorpus
	if p := testfiles.Find("data/tinystories-calib.txt"); p != "" {
		corpus += string(sharedFile(t, "data/tinystories-calib.txt"))
	}
	v := trainBPE(corpus, pre, 400)
	v.Tokens = append(v.Tokens, "<|eot_id|>")
	v.Types = make([]model.TokenType, len(v.Tokens))
	for i := range v.Types {
		v.Types[i] = model.TokenNormal
	}
	v.Types[len(v.Types)-1] = model.TokenControl
	v.EOS = len(v.Tokens) - 1
	tk, err := New(v)
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestBPEMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for _, pre := range []string{"llama3", "gpt2"} {
		tk := trainedBPE(t, pre)
		// The built-in corpus alone (no shared folder) teaches fewer merges.
		want := 300
		if testfiles.Find("data/tinystories-calib.txt") == "" {
			want = 50
		}
		if len(tk.Vocab().Merges) < want {
			t.Fatalf("only %d merges learned", len(tk.Vocab().Merges))
		}
		for range 3000 {
			s := randomText(rng, 50, true)
			ids := tk.Encode(s, false)
			if want := naiveBPE(tk.Vocab(), s, tk.split, tk.wholeWords); !equalIDs(ids, want) {
				t.Fatalf("%s Encode(%q) = %v, naive %v", pre, s, ids, want)
			}
			if back := tk.Decode(ids); back != s {
				t.Fatalf("%s Decode(Encode(%q)) = %q", pre, s, back)
			}
			if back := streamDecode(t, tk, ids); back != s {
				t.Fatalf("%s stream decode of %q = %q", pre, s, back)
			}
		}
	}
}

func TestBPEData(t *testing.T) {
	text := string(sharedFile(t, "data/wikitext-2-test.txt"))
	for _, pre := range []string{"llama3", "gpt2"} {
		tk := trainedBPE(t, pre)
		head := text[:20000]
		if got, want := tk.Encode(head, false), naiveBPE(tk.Vocab(), head, tk.split, tk.wholeWords); !equalIDs(got, want) {
			t.Fatalf("%s: heap and naive differ on the first 20 KB of wikitext", pre)
		}
		ids := tk.Encode(text, false)
		if back := tk.Decode(ids); back != text {
			t.Fatalf("%s: wikitext does not round-trip", pre)
		}
		t.Logf("%s: %d bytes, %d tokens", pre, len(text), len(ids))
	}
}

func FuzzBPERoundTrip(f *testing.F) {
	for _, s := range []string{"", "hello world", "I'm DON'T 12345", "a   b\n\n", "\xff\xe2\x82", "日本語 😀", "<|eot_id|>x"} {
		f.Add(s)
	}
	tks := []*Tokenizer{trainedBPE(f, "llama3"), trainedBPE(f, "gpt2")}
	f.Fuzz(func(t *testing.T, s string) {
		for _, tk := range tks {
			ids := tk.Encode(s, false)
			if len(s) < 400 {
				if want := naiveBPE(tk.Vocab(), s, tk.split, tk.wholeWords); !equalIDs(ids, want) {
					t.Fatalf("Encode(%q) = %v, naive %v", s, ids, want)
				}
			}
			if back := tk.Decode(ids); back != s {
				t.Fatalf("Decode(Encode(%q)) = %q", s, back)
			}
			if back := streamDecode(t, tk, ids); back != s {
				t.Fatalf("stream decode of %q = %q", s, back)
			}
			special := tk.EncodeSpecial(s, false)
			if want := strings.ReplaceAll(s, "<|eot_id|>", ""); tk.Decode(special) != want {
				t.Fatalf("Decode(EncodeSpecial(%q)) = %q, want %q", s, tk.Decode(special), want)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	text := string(sharedFile(b, "data/wikitext-2-test.txt"))
	for _, c := range []struct {
		name string
		tk   *Tokenizer
	}{
		{"spm-tok512", loadTok512(b)},
		{"bpe-llama3", trainedBPE(b, "llama3")},
		{"bpe-gpt2", trainedBPE(b, "gpt2")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				c.tk.Encode(text, true)
			}
		})
	}
}

func BenchmarkDecode(b *testing.B) {
	tk := loadTok512(b)
	text := string(sharedFile(b, "data/wikitext-2-test.txt"))
	ids := tk.Encode(text, true)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tk.Decode(ids)
	}
}
