package model

// VocabKind is the tokenizer algorithm.
type VocabKind string

// Tokenizer algorithms.
const (
	// VocabSPM is SentencePiece-style BPE (Llama-2, Mistral, llama2.c):
	// spaces become "▁", a "▁" is prepended, pieces merge by score (or by
	// merge rank when Merges is set), unknown bytes fall back to <0xXX> tokens.
	VocabSPM VocabKind = "spm"
	// VocabBPE is GPT-2 style byte-level BPE (Llama-3): text is split by a
	// pre-tokenizer, bytes are mapped to printable runes, pieces merge by rank.
	VocabBPE VocabKind = "bpe"
)

// TokenType follows GGUF's tokenizer.ggml.token_type values.
type TokenType int32

// Token types.
const (
	TokenNormal      TokenType = 1
	TokenUnknown     TokenType = 2
	TokenControl     TokenType = 3
	TokenUserDefined TokenType = 4
	TokenUnused      TokenType = 5
	TokenByte        TokenType = 6
)

// Vocab describes a tokenizer in the terms GGUF uses, so that every format
// loads into it and the tokenizer package builds an encoder from it.
// Tokens are stored in the file's own convention: for VocabSPM, "▁" for a
// space and "<0xXX>" for byte tokens; for VocabBPE, GPT-2's byte-to-rune map.
type Vocab struct {
	Kind   VocabKind
	Tokens []string
	Scores []float32   // per token; may be nil for VocabBPE
	Types  []TokenType // per token; nil means all normal
	Merges []string    // "left right", highest priority first; may be nil for VocabSPM
	// PreTokenizer names the VocabBPE split rule: "llama3" (default) or "gpt2".
	PreTokenizer string
	BOS, EOS     int // -1 when absent
	UNK          int // -1 when absent
	AddBOS       bool
	// AddSpacePrefix prepends "▁" before encoding (VocabSPM; true for Llama-2).
	AddSpacePrefix bool
	// EOT lists further ids that end generation (Llama-3's <|eot_id|>).
	EOT          []int
	ChatTemplate string
}

// Type returns the type of token id (TokenNormal when Types is nil).
func (v *Vocab) Type(id int) TokenType {
	if v.Types == nil || id < 0 || id >= len(v.Types) {
		return TokenNormal
	}
	return v.Types[id]
}

// IsEnd reports whether id ends generation.
func (v *Vocab) IsEnd(id int) bool {
	if id == v.EOS {
		return true
	}
	for _, e := range v.EOT {
		if id == e {
			return true
		}
	}
	return false
}
