package tokenizer

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// spmSpace is how SentencePiece writes a space.
const spmSpace = "▁"

// initSPM builds the SPM tables: byte tokens, the merge table and the
// decoded bytes.
func (t *Tokenizer) initSPM() error {
	v := t.vocab
	t.decoded = make([][]byte, len(v.Tokens))
	for id, s := range v.Tokens {
		switch v.Type(id) {
		case model.TokenByte:
			b, ok := parseByteToken(s)
			if !ok {
				return fmt.Errorf("byte token %d is %q, not <0xXX>", id, s)
			}
			if t.byteID[b] < 0 {
				t.byteID[b] = int32(id)
			}
			t.decoded[id] = []byte{b}
		case model.TokenNormal:
			t.decoded[id] = []byte(strings.ReplaceAll(s, spmSpace, " "))
		case model.TokenUserDefined:
			t.decoded[id] = []byte(s)
		case model.TokenUnknown:
			t.decoded[id] = []byte("\uFFFD")
		}
	}
	t.stripSpace = v.AddSpacePrefix
	t.joins = make(map[uint64]struct{})
	for s := range t.pieceID {
		prev := rune(-1)
		for _, r := range s {
			if prev >= 0 {
				t.joins[runePair(prev, r)] = struct{}{}
			}
			prev = r
		}
	}
	t.pairs = make(map[pairKey]pairMerge)
	if len(v.Merges) > 0 {
		return t.rankPairs()
	}
	if v.Scores == nil {
		return fmt.Errorf("an SPM vocabulary needs scores or merges")
	}
	// Every split of a token into two tokens is a pair that merges into it
	// with the token's score, which is the pair lookup llama2.c makes.
	for s, id := range t.pieceID {
		score := float64(v.Scores[id])
		if math.IsNaN(score) {
			continue
		}
		for k := 1; k < len(s); k++ {
			if !utf8.RuneStart(s[k]) {
				continue
			}
			a, okA := t.pieceID[s[:k]]
			b, okB := t.pieceID[s[k:]]
			if okA && okB {
				t.pairs[pairKey{a, b}] = pairMerge{score, id}
			}
		}
	}
	return nil
}

// rankPairs fills the merge table from Vocab.Merges, the first merge of a
// pair winning. Merges whose sides or result are not tokens are skipped.
func (t *Tokenizer) rankPairs() error {
	for rank, m := range t.vocab.Merges {
		l, r, ok := strings.Cut(m, " ")
		if !ok {
			return fmt.Errorf("merge %d is %q, not \"left right\"", rank, m)
		}
		a, okA := t.pieceID[l]
		b, okB := t.pieceID[r]
		id, okC := t.pieceID[l+r]
		if !okA || !okB || !okC {
			continue
		}
		k := pairKey{a, b}
		if _, dup := t.pairs[k]; !dup {
			t.pairs[k] = pairMerge{-float64(rank), id}
		}
	}
	return nil
}

// parseByteToken reads "<0xXX>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return 0, false
	}
	hi, ok1 := hexDigit(s[3])
	lo, ok2 := hexDigit(s[4])
	return hi<<4 | lo, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// encodeSPM follows llama2.c's encoder: spaces become "▁" (and one is
// prepended when the vocab asks for it), each rune becomes its
// token or else its bytes' tokens (UNK without byte tokens), then pairs
// merge. Byte and UNK symbols never merge.
//
// No merge can join two runes that are adjacent in no token, so the text
// is merged in segments cut at such places (and around byte and UNK
// symbols): the result is the same as merging it whole, with small heaps.
func (t *Tokenizer) encodeSPM(dst []int, text string, m *merger) []int {
	if text == "" {
		return dst
	}
	m.reset()
	prev := rune(-1) // the last symbol's rune, -1 after a byte or UNK symbol
	add := func(piece string, r rune) {
		id, ok := t.pieceID[piece]
		if !ok {
			r = -1
		}
		if _, joins := t.joins[runePair(prev, r)]; !joins || r < 0 {
			dst = m.merge(t.pairs, dst)
			m.reset()
		}
		if ok {
			m.add(id)
		} else {
			t.addBytes(m, piece)
		}
		prev = r
	}
	if t.vocab.AddSpacePrefix {
		add(spmSpace, '▁')
	}
	for i := 0; i < len(text); {
		r, size := utf8.DecodeRuneInString(text[i:])
		switch {
		case r == ' ':
			add(spmSpace, '▁')
		case r == utf8.RuneError && size == 1:
			dst = m.merge(t.pairs, dst)
			m.reset()
			t.addBytes(m, text[i:i+1])
			prev = -1
		default:
			add(text[i:i+size], r)
		}
		i += size
	}
	return m.merge(t.pairs, dst)
}

// runePair packs two adjacent runes into a joins key.
func runePair(a, b rune) uint64 { return uint64(uint32(a))<<32 | uint64(uint32(b)) }

// addBytes adds the byte tokens of piece, or one UNK if a byte has none;
// with neither the piece is dropped.
func (t *Tokenizer) addBytes(m *merger, piece string) {
	mark := len(m.syms)
	for i := 0; i < len(piece); i++ {
		id := t.byteID[piece[i]]
		if id < 0 {
			m.syms = m.syms[:mark]
			if t.vocab.UNK >= 0 {
				m.add(int32(t.vocab.UNK))
			}
			return
		}
		m.add(id)
	}
}
