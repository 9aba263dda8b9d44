// Package tokenizer turns text into token ids and back for the two
// algorithms a model.Vocab describes: SentencePiece-style BPE (VocabSPM:
// Llama-2, Mistral, llama2.c) and GPT-2 style byte-level BPE (VocabBPE:
// Llama-3).
//
// Both merge adjacent symbols best pair first, using a heap of candidate
// pairs over a linked list of symbols, so encoding is O(n log n) in the
// length of the text (merge.go). Ties go to the leftmost pair, which is
// what llama2.c's quadratic loop and Hugging Face's BPE do. SPM ranks a
// pair by the score of the token it makes (NaN scores never merge; unlike
// llama2.c there is no -1e10 floor), or by merge rank when Vocab.Merges is
// set; BPE always by rank. Only normal and user-defined tokens take part in
// merges, and a merge whose result is not a token is ignored.
//
// BPE splits text first with the GPT-2 or Llama-3 pre-tokenizer pattern
// (pretokenize.go); with Llama-3's, a chunk that is itself a token is taken
// whole (Hugging Face's ignore_merges).
//
// Any byte string encodes. SPM sends bytes that are not part of a token
// (and invalid UTF-8) to its <0xXX> byte tokens, or to UNK when the vocab
// has none; byte-level BPE covers all bytes by construction. Decode gives
// back the bytes, so Decode(Encode(s)) == s whenever the vocab covers every
// byte, with one exception: SPM writes a space as "▁" (U+2581), so a literal
// "▁" in the text decodes as a space.
//
// A Tokenizer is immutable after New and safe for concurrent use; a Stream
// is not.
package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// Tokenizer encodes and decodes text for one vocabulary.
type Tokenizer struct {
	vocab *model.Vocab
	// pieceID maps the text of every token that encoding may produce by
	// lookup or merge (normal and user-defined types) to its lowest id.
	pieceID map[string]int32
	// pairs is the merge table: which token two adjacent tokens become,
	// and how urgently.
	pairs map[pairKey]pairMerge
	// joins holds the pairs of runes that are adjacent inside some token
	// (VocabSPM only): where two runes of the text are not, no merge
	// crosses.
	joins map[uint64]struct{}
	// byteID is the token for each byte: SPM's <0xXX>, BPE's byte rune; -1
	// where there is none.
	byteID [256]int32
	// decoded holds the bytes each token decodes to (nil for control and
	// unused tokens).
	decoded [][]byte
	// stripSpace drops the leading space of the first decoded piece: the
	// "▁" that SPM encoding prepends.
	stripSpace bool
	// specials are the control, user-defined and unknown token strings that
	// EncodeSpecial finds in text, bucketed by first byte, longest first.
	specials [256][]int32
	// split finds the next pre-tokenizer chunk (VocabBPE only).
	split func(s string, i int) int
	// wholeWords makes a chunk that is itself a token encode to that token
	// without merging (Llama-3's ignore_merges).
	wholeWords bool
}

// New builds a tokenizer for v, which it keeps and must not be modified
// afterwards.
func New(v *model.Vocab) (*Tokenizer, error) {
	if err := check(v); err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	t := &Tokenizer{vocab: v, pieceID: make(map[string]int32, len(v.Tokens))}
	for id, s := range v.Tokens {
		if s == "" {
			continue
		}
		typ := v.Type(id)
		if typ == model.TokenNormal || typ == model.TokenUserDefined {
			if _, dup := t.pieceID[s]; !dup {
				t.pieceID[s] = int32(id)
			}
		}
		if typ == model.TokenControl || typ == model.TokenUserDefined || typ == model.TokenUnknown {
			t.specials[s[0]] = append(t.specials[s[0]], int32(id))
		}
	}
	for b := range t.specials {
		slices.SortStableFunc(t.specials[b], func(x, y int32) int { return len(v.Tokens[y]) - len(v.Tokens[x]) })
	}
	for i := range t.byteID {
		t.byteID[i] = -1
	}
	var err error
	switch v.Kind {
	case model.VocabSPM:
		err = t.initSPM()
	case model.VocabBPE:
		err = t.initBPE()
	}
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	return t, nil
}

// check rejects vocabs whose fields disagree with each other.
func check(v *model.Vocab) error {
	if v == nil {
		return fmt.Errorf("no vocabulary")
	}
	n := len(v.Tokens)
	if n == 0 {
		return fmt.Errorf("the vocabulary is empty")
	}
	if v.Kind != model.VocabSPM && v.Kind != model.VocabBPE {
		return fmt.Errorf("unknown vocabulary kind %q", v.Kind)
	}
	if v.Scores != nil && len(v.Scores) != n {
		return fmt.Errorf("%d scores for %d tokens", len(v.Scores), n)
	}
	if v.Types != nil && len(v.Types) != n {
		return fmt.Errorf("%d token types for %d tokens", len(v.Types), n)
	}
	for _, f := range []struct {
		name string
		id   int
	}{{"BOS", v.BOS}, {"EOS", v.EOS}, {"UNK", v.UNK}} {
		if f.id < -1 || f.id >= n {
			return fmt.Errorf("%s id %d is outside the vocabulary (%d tokens)", f.name, f.id, n)
		}
	}
	for _, id := range v.EOT {
		if id < 0 || id >= n {
			return fmt.Errorf("end-of-turn id %d is outside the vocabulary (%d tokens)", id, n)
		}
	}
	return nil
}

// Vocab returns the vocabulary the tokenizer was built from.
func (t *Tokenizer) Vocab() *model.Vocab { return t.vocab }

// VocabSize is the number of tokens.
func (t *Tokenizer) VocabSize() int { return len(t.vocab.Tokens) }

// BOS is the beginning-of-sequence id, or -1.
func (t *Tokenizer) BOS() int { return t.vocab.BOS }

// EOS is the end-of-sequence id, or -1.
func (t *Tokenizer) EOS() int { return t.vocab.EOS }

// IsEnd reports whether id ends generation (EOS or an end-of-turn token).
func (t *Tokenizer) IsEnd(id int) bool { return t.vocab.IsEnd(id) }

// Piece returns the text of token id in the vocab's own convention ("▁" for
// a space in SPM, byte runes in BPE), or "" for an id outside the vocab.
func (t *Tokenizer) Piece(id int) string {
	if id < 0 || id >= len(t.vocab.Tokens) {
		return ""
	}
	return t.vocab.Tokens[id]
}

// TokenBytes returns a copy of the bytes token id adds to decoded text, as
// the token stands alone: a space for SPM's "▁" (the first token's space is
// not dropped, as Decode drops it), a byte token's byte, nothing for control
// tokens and ids outside the vocab.
func (t *Tokenizer) TokenBytes(id int) []byte {
	if id < 0 || id >= len(t.decoded) {
		return nil
	}
	return append([]byte(nil), t.decoded[id]...)
}

// Encode turns text into token ids, with BOS first when addBOS is set and
// the vocab has one. Control and user-defined token strings in the text are
// encoded as ordinary text; see EncodeSpecial.
func (t *Tokenizer) Encode(text string, addBOS bool) []int {
	ids := t.start(addBOS)
	var m merger
	return t.encodeText(ids, text, &m)
}

// EncodeSpecial is Encode that also recognizes the strings of control,
// user-defined and unknown tokens in text ("<s>", "<|eot_id|>", longest
// first), as chat templates need. For SPM, the text after each such token
// gets the space prefix again, as llama.cpp does.
func (t *Tokenizer) EncodeSpecial(text string, addBOS bool) []int {
	ids := t.start(addBOS)
	var m merger
	from := 0
	for i := 0; i < len(text); {
		id := t.specialAt(text, i)
		if id < 0 {
			i++
			continue
		}
		if from < i {
			ids = t.encodeText(ids, text[from:i], &m)
		}
		ids = append(ids, int(id))
		i += len(t.vocab.Tokens[id])
		from = i
	}
	if from < len(text) {
		ids = t.encodeText(ids, text[from:], &m)
	}
	return ids
}

// specialAt returns the longest special token whose text starts at text[i:],
// or -1.
func (t *Tokenizer) specialAt(text string, i int) int32 {
	for _, id := range t.specials[text[i]] {
		if strings.HasPrefix(text[i:], t.vocab.Tokens[id]) {
			return id
		}
	}
	return -1
}

func (t *Tokenizer) start(addBOS bool) []int {
	if addBOS && t.vocab.BOS >= 0 {
		return []int{t.vocab.BOS}
	}
	return nil
}

// encodeText appends the ids of plain text.
func (t *Tokenizer) encodeText(dst []int, text string, m *merger) []int {
	if t.vocab.Kind == model.VocabSPM {
		return t.encodeSPM(dst, text, m)
	}
	return t.encodeBPE(dst, text, m)
}

// Decode turns ids back into text: control and unused tokens give nothing,
// byte tokens their byte, UNK U+FFFD, and ids outside the vocab nothing.
// The result holds whatever bytes the tokens spell, valid UTF-8 or not. For
// SPM with a space prefix, the leading space of the first piece is dropped.
func (t *Tokenizer) Decode(ids []int) string {
	var out []byte
	started := false
	for _, id := range ids {
		out = t.appendToken(out, id, &started)
	}
	return string(out)
}

// appendToken appends the bytes of id; started records whether any text
// came before, for the space prefix.
func (t *Tokenizer) appendToken(dst []byte, id int, started *bool) []byte {
	if id < 0 || id >= len(t.decoded) {
		return dst
	}
	b := t.decoded[id]
	if len(b) == 0 {
		return dst
	}
	if !*started {
		*started = true
		if t.stripSpace && b[0] == ' ' && t.vocab.Type(id) == model.TokenNormal {
			b = b[1:]
		}
	}
	return append(dst, b...)
}

// Stream decodes a generated sequence one token at a time.
type Stream struct {
	t       *Tokenizer
	started bool
	pending []byte
}

// NewStream starts an incremental decode.
func (t *Tokenizer) NewStream() *Stream { return &Stream{t: t} }

// Next returns the text that token id completes. Bytes that begin a UTF-8
// sequence that the next tokens may finish are held back; bytes that can
// never become valid UTF-8 are passed on as they are. The concatenation of
// every Next and a final Flush equals Decode of all the ids.
func (s *Stream) Next(id int) string {
	s.pending = s.t.appendToken(s.pending, id, &s.started)
	n := completeUTF8(s.pending)
	out := string(s.pending[:n])
	s.pending = append(s.pending[:0], s.pending[n:]...)
	return out
}

// Flush returns the bytes held back, if any, and empties the stream's
// buffer.
func (s *Stream) Flush() string {
	out := string(s.pending)
	s.pending = s.pending[:0]
	return out
}

// completeUTF8 is the length of the prefix of b that does not end inside
// an unfinished but so far valid UTF-8 sequence.
func completeUTF8(b []byte) int {
	for k := 1; k < utf8.UTFMax && k <= len(b); k++ {
		if c := b[len(b)-k]; utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-k:]) {
				return len(b) - k
			}
			break
		}
	}
	return len(b)
}
