package tokenizer

import (
	"fmt"
	"unicode/utf8"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// byteRunes is GPT-2's bytes_to_unicode: printable bytes stand for
// themselves, the others for runes from U+0100 on, in byte order.
var byteRunes = func() (t [256]rune) {
	n := rune(0)
	for b := range 256 {
		if b >= '!' && b <= '~' || b >= 0xA1 && b <= 0xAC || b >= 0xAE {
			t[b] = rune(b)
		} else {
			t[b] = 256 + n
			n++
		}
	}
	return t
}()

// runeBytes inverts byteRunes: runeBytes[r] is 1+byte, 0 for runes that
// stand for no byte.
var runeBytes = func() (t [256 + 68]int16) {
	for b, r := range byteRunes {
		t[r] = int16(b) + 1
	}
	return t
}()

// initBPE builds the byte-level tables: pre-tokenizer, byte tokens, merge
// table and decoded bytes.
func (t *Tokenizer) initBPE() error {
	v := t.vocab
	switch v.PreTokenizer {
	case "", "llama3":
		t.split, t.wholeWords = llama3Chunk, true
	case "gpt2":
		t.split = gpt2Chunk
	default:
		return fmt.Errorf("unsupported pre-tokenizer %q (want llama3 or gpt2)", v.PreTokenizer)
	}
	for b, r := range byteRunes {
		if id, ok := t.pieceID[string(r)]; ok {
			t.byteID[b] = id
		}
	}
	t.decoded = make([][]byte, len(v.Tokens))
	for id, s := range v.Tokens {
		switch v.Type(id) {
		case model.TokenNormal, model.TokenByte:
			t.decoded[id] = decodeByteRunes(s)
		case model.TokenUserDefined:
			t.decoded[id] = []byte(s)
		case model.TokenUnknown:
			t.decoded[id] = []byte("\uFFFD")
		}
	}
	t.pairs = make(map[pairKey]pairMerge, len(v.Merges))
	return t.rankPairs()
}

// decodeByteRunes maps each rune of a byte-level piece back to its byte;
// runes that stand for no byte are kept as UTF-8.
func decodeByteRunes(s string) []byte {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r >= 0 && int(r) < len(runeBytes) && runeBytes[r] > 0 {
			out = append(out, byte(runeBytes[r]-1))
		} else {
			out = utf8.AppendRune(out, r)
		}
	}
	return out
}

// encodeBPE splits text into pre-tokenizer chunks and merges the byte
// tokens of each by rank. A chunk that is itself a token is taken whole
// when the pre-tokenizer asks for it (Llama-3). Bytes without a token
// become UNK, or are dropped if there is no UNK either.
func (t *Tokenizer) encodeBPE(dst []int, text string, m *merger) []int {
	var word []byte
	for i := 0; i < len(text); {
		e := t.split(text, i)
		chunk := text[i:e]
		i = e
		if t.wholeWords {
			word = word[:0]
			for j := 0; j < len(chunk); j++ {
				word = utf8.AppendRune(word, byteRunes[chunk[j]])
			}
			if id, ok := t.pieceID[string(word)]; ok {
				dst = append(dst, int(id))
				continue
			}
		}
		m.reset()
		for j := 0; j < len(chunk); j++ {
			if id := t.byteID[chunk[j]]; id >= 0 {
				m.add(id)
			} else if t.vocab.UNK >= 0 {
				m.add(int32(t.vocab.UNK))
			}
		}
		dst = m.merge(t.pairs, dst)
	}
	return dst
}
