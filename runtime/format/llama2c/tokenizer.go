package llama2c

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// tokenizer.bin layout: int32 max_token_length, then for each token a
// float32 score, an int32 byte length and the bytes, little-endian. The
// token count is not stored; it is the model's vocab_size.
//
// llama2.c's export writes SentencePiece pieces with "▁" turned into a space
// and BOS/EOS as "\n<s>\n" and "\n</s>\n". ParseVocab converts to the
// model.Vocab SPM convention and WriteVocab converts back.
const (
	vocabUNK        = 0
	vocabBOS        = 1
	vocabEOS        = 2
	vocabBOSFile    = "\n<s>\n"
	vocabEOSFile    = "\n</s>\n"
	vocabSPMSpace   = "▁"
	vocabEntryBytes = 8 // score and length before each token's bytes
)

// LoadVocab reads a llama2.c tokenizer.bin, taking every token in the file.
func LoadVocab(path string) (*model.Vocab, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("load vocab %s: %w", path, err)
	}
	return ParseVocab(data, 0, path)
}

// ParseVocab decodes a tokenizer.bin held in data. It reads vocabSize
// tokens and wants the file to end there; with vocabSize <= 0 it reads
// tokens until the end of data. name is used in errors. Token 0 is UNK, 1
// BOS and 2 EOS, as in llama2.c; "<0xXX>" pieces are byte tokens.
func ParseVocab(data []byte, vocabSize int, name string) (*model.Vocab, error) {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s: tokenizer: %s", name, fmt.Sprintf(format, args...))
	}
	if len(data) < 4 {
		return nil, fail("%d bytes is too short for the max_token_length header", len(data))
	}
	maxLen := int64(int32(binary.LittleEndian.Uint32(data)))
	if maxLen < 0 {
		return nil, fail("max_token_length is %d", maxLen)
	}
	rest := data[4:]
	// Each token takes at least vocabEntryBytes, so the file bounds what
	// vocabSize may ask to allocate.
	if vocabSize > len(rest)/vocabEntryBytes {
		return nil, fail("%d tokens need at least %d bytes but the file has %d (truncated, or the wrong tokenizer)",
			vocabSize, 4+vocabEntryBytes*int64(vocabSize), len(data))
	}
	capacity := max(vocabSize, 0)
	v := &model.Vocab{
		Kind:           model.VocabSPM,
		Tokens:         make([]string, 0, capacity),
		Scores:         make([]float32, 0, capacity),
		Types:          make([]model.TokenType, 0, capacity),
		BOS:            -1,
		EOS:            -1,
		UNK:            -1,
		AddBOS:         true,
		AddSpacePrefix: true,
	}
	for id := 0; vocabSize <= 0 && len(rest) > 0 || id < vocabSize; id++ {
		if len(rest) < vocabEntryBytes {
			return nil, fail("token %d: truncated (the file ends %d bytes later)", id, len(rest))
		}
		score := math.Float32frombits(binary.LittleEndian.Uint32(rest))
		n := int64(int32(binary.LittleEndian.Uint32(rest[4:])))
		rest = rest[vocabEntryBytes:]
		switch {
		case n < 0:
			return nil, fail("token %d: length %d is negative", id, n)
		case n > maxLen:
			return nil, fail("token %d: length %d exceeds max_token_length %d", id, n, maxLen)
		case n > int64(len(rest)):
			return nil, fail("token %d: length %d runs past the end of the file (%d bytes left)", id, n, len(rest))
		}
		piece, typ := vocabFromFile(id, string(rest[:n]))
		rest = rest[n:]
		v.Tokens = append(v.Tokens, piece)
		v.Scores = append(v.Scores, score)
		v.Types = append(v.Types, typ)
	}
	if len(rest) > 0 {
		return nil, fail("%d bytes left after %d tokens (the file holds more tokens than the model's vocabulary)", len(rest), vocabSize)
	}
	n := len(v.Tokens)
	if n == 0 {
		return nil, fail("no tokens")
	}
	if n > vocabUNK {
		v.UNK = vocabUNK
	}
	if n > vocabBOS {
		v.BOS = vocabBOS
	}
	if n > vocabEOS {
		v.EOS = vocabEOS
	}
	return v, nil
}

// vocabFromFile converts the piece of token id from the file's convention.
func vocabFromFile(id int, s string) (string, model.TokenType) {
	switch {
	case id == vocabUNK:
		return s, model.TokenUnknown
	case id == vocabBOS:
		if s == vocabBOSFile {
			s = "<s>"
		}
		return s, model.TokenControl
	case id == vocabEOS:
		if s == vocabEOSFile {
			s = "</s>"
		}
		return s, model.TokenControl
	case isByteToken(s):
		return s, model.TokenByte
	}
	return strings.ReplaceAll(s, " ", vocabSPMSpace), model.TokenNormal
}

// vocabToFile converts the piece of token id back to the file's convention.
func vocabToFile(v *model.Vocab, id int) string {
	s := v.Tokens[id]
	switch v.Type(id) {
	case model.TokenControl:
		if id == v.BOS && s == "<s>" {
			return vocabBOSFile
		}
		if id == v.EOS && s == "</s>" {
			return vocabEOSFile
		}
		return s
	case model.TokenUnknown, model.TokenByte:
		return s
	}
	return strings.ReplaceAll(s, vocabSPMSpace, " ")
}

// isByteToken reports whether s is "<0xXX>".
func isByteToken(s string) bool {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return false
	}
	for _, c := range []byte(s[3:5]) {
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// WriteVocab writes v as a tokenizer.bin. v must be an SPM vocab with a
// score per token; max_token_length is the longest piece written. It
// inverts ParseVocab: a file read and written again is byte-identical,
// except that a piece that held "▁" in the file comes back as a space.
func WriteVocab(w io.Writer, v *model.Vocab) error {
	if v.Kind != model.VocabSPM {
		return fmt.Errorf("write tokenizer: llama2.c stores SentencePiece vocabularies, not %q", v.Kind)
	}
	if len(v.Scores) != len(v.Tokens) {
		return fmt.Errorf("write tokenizer: %d scores for %d tokens", len(v.Scores), len(v.Tokens))
	}
	pieces := make([]string, len(v.Tokens))
	maxLen := 0
	for id := range v.Tokens {
		pieces[id] = vocabToFile(v, id)
		maxLen = max(maxLen, len(pieces[id]))
	}
	if maxLen > math.MaxInt32 {
		return fmt.Errorf("write tokenizer: a %d-byte piece does not fit", maxLen)
	}
	bw := bufio.NewWriter(w)
	var buf [vocabEntryBytes]byte
	binary.LittleEndian.PutUint32(buf[:], uint32(maxLen))
	bw.Write(buf[:4])
	for id, p := range pieces {
		binary.LittleEndian.PutUint32(buf[:], math.Float32bits(v.Scores[id]))
		binary.LittleEndian.PutUint32(buf[4:], uint32(len(p)))
		bw.Write(buf[:])
		bw.WriteString(p)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write tokenizer: %w", err)
	}
	return nil
}
