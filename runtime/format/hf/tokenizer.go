package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// metaspace is SentencePiece's stand-in for a space.
const metaspace = "▁"

// llama3Split is the pre-tokenizer regex of Llama-3's tokenizer.json.
const llama3Split = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`

// scoresKey holds Vocab.Scores in tokenizer_config.json, which
// transformers passes through as an unused keyword argument; tokenizer.json
// has no place for them.
const scoresKey = "acttail_scores"

// addedToken is an entry of tokenizer.json's added_tokens.
type addedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// component is any normalizer, pre-tokenizer or post-processor, with the
// fields of the kinds Load inspects; others are ignored.
type component struct {
	Type          string      `json:"type"`
	Normalizers   []component `json:"normalizers"`
	Pretokenizers []component `json:"pretokenizers"`
	Processors    []component `json:"processors"`
	Prepend       string      `json:"prepend"`
	Pattern       struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content        string `json:"content"`
	PrependScheme  string `json:"prepend_scheme"`
	AddPrefixSpace *bool  `json:"add_prefix_space"`
	Single         []struct {
		SpecialToken *struct {
			ID string `json:"id"`
		} `json:"SpecialToken"`
	} `json:"single"`
}

// walk calls f on c and every component nested in a Sequence.
func (c *component) walk(f func(*component)) {
	if c == nil {
		return
	}
	f(c)
	for _, list := range [][]component{c.Normalizers, c.Pretokenizers, c.Processors} {
		for i := range list {
			list[i].walk(f)
		}
	}
}

// tokenizerDoc is the part of tokenizer.json Load reads.
type tokenizerDoc struct {
	AddedTokens   []addedToken `json:"added_tokens"`
	Normalizer    *component   `json:"normalizer"`
	PreTokenizer  *component   `json:"pre_tokenizer"`
	PostProcessor *component   `json:"post_processor"`
	Model         struct {
		Type         string            `json:"type"`
		UnkToken     *string           `json:"unk_token"`
		ByteFallback bool              `json:"byte_fallback"`
		Vocab        map[string]int    `json:"vocab"`
		Merges       []json.RawMessage `json:"merges"`
	} `json:"model"`
}

// tokenizerConfig is the part of tokenizer_config.json Load reads.
// Token fields stay raw: they are a string, an AddedToken object or null.
type tokenizerConfig struct {
	AddBOS       *bool           `json:"add_bos_token"`
	BOS          json.RawMessage `json:"bos_token"`
	EOS          json.RawMessage `json:"eos_token"`
	ChatTemplate json.RawMessage `json:"chat_template"`
	Scores       []float32       `json:"acttail_scores"`
}

// parseVocab builds a Vocab from tokenizer.json and the optional
// tokenizer_config.json and generation_config.json (nil when absent),
// padding it to vocabSize tokens.
func parseVocab(tokJSON, cfgJSON, genJSON []byte, vocabSize int) (*model.Vocab, error) {
	var tf tokenizerDoc
	if err := json.Unmarshal(tokJSON, &tf); err != nil {
		return nil, fmt.Errorf("tokenizer.json: bad JSON: %v", err)
	}
	if tf.Model.Type != "BPE" {
		return nil, fmt.Errorf("tokenizer.json: model type %q is not supported (want BPE)", tf.Model.Type)
	}
	tokens, special, err := denseTokens(&tf)
	if err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if len(tokens) > vocabSize {
		return nil, fmt.Errorf("tokenizer.json: %d tokens exceed config vocab_size %d", len(tokens), vocabSize)
	}
	v := &model.Vocab{Tokens: tokens, BOS: -1, EOS: -1, UNK: -1}
	if err := detectKind(&tf, v); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	if v.Merges, err = parseMerges(tf.Model.Merges); err != nil {
		return nil, fmt.Errorf("tokenizer.json: %w", err)
	}
	ids := make(map[string]int, len(tokens))
	for i, t := range tokens {
		ids[t] = i
	}
	lookup := func(s string) int {
		if id, ok := ids[s]; ok {
			return id
		}
		return -1
	}

	v.Types = make([]model.TokenType, len(tokens))
	for i, t := range tokens {
		v.Types[i] = model.TokenNormal
		if s, ok := special[i]; ok {
			v.Types[i] = model.TokenUserDefined
			if s {
				v.Types[i] = model.TokenControl
			}
		} else if v.Kind == model.VocabSPM && isByteToken(t) {
			v.Types[i] = model.TokenByte
		}
	}
	if u := tf.Model.UnkToken; u != nil {
		if v.UNK = lookup(*u); v.UNK >= 0 {
			v.Types[v.UNK] = model.TokenUnknown
		}
	}

	// BOS and AddBOS: tokenizer_config.json wins, then the post-processor
	// template, then the conventional names.
	var tc tokenizerConfig
	if cfgJSON != nil {
		if err := json.Unmarshal(cfgJSON, &tc); err != nil {
			return nil, fmt.Errorf("tokenizer_config.json: bad JSON: %v", err)
		}
	}
	var templateBOS *string
	tf.PostProcessor.walk(func(c *component) {
		if c.Type == "TemplateProcessing" && templateBOS == nil {
			s := ""
			if len(c.Single) > 0 && c.Single[0].SpecialToken != nil {
				s = c.Single[0].SpecialToken.ID
			}
			templateBOS = &s
		}
	})
	bos, err := specialToken(tc.BOS, lookup)
	if err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: bos_token: %w", err)
	}
	if bos == -2 && templateBOS != nil && *templateBOS != "" {
		bos = lookup(*templateBOS)
	}
	if v.EOS, err = specialToken(tc.EOS, lookup); err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: eos_token: %w", err)
	}
	v.BOS = bos
	if bos == -2 {
		v.BOS = fallbackToken(lookup, "<s>", "<|begin_of_text|>")
	}
	if v.EOS == -2 {
		v.EOS = fallbackToken(lookup, "</s>", "<|end_of_text|>")
	}
	switch {
	case tc.AddBOS != nil:
		v.AddBOS = *tc.AddBOS
	case templateBOS != nil:
		v.AddBOS = *templateBOS != ""
	default:
		v.AddBOS = v.Kind == model.VocabSPM
	}
	if v.ChatTemplate, err = chatTemplate(tc.ChatTemplate); err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: %w", err)
	}
	if tc.Scores != nil {
		if len(tc.Scores) != len(tokens) {
			return nil, fmt.Errorf("tokenizer_config.json: %d %s for %d tokens", len(tc.Scores), scoresKey, len(tokens))
		}
		v.Scores = tc.Scores
	}
	if genJSON != nil {
		if v.EOT, err = extraEOS(genJSON, v.EOS, len(tokens)); err != nil {
			return nil, fmt.Errorf("generation_config.json: %w", err)
		}
	}

	for i := len(v.Tokens); i < vocabSize; i++ {
		v.Tokens = append(v.Tokens, padName(i))
		v.Types = append(v.Types, model.TokenUnused)
		if v.Scores != nil {
			v.Scores = append(v.Scores, 0)
		}
	}
	if allNormal(v.Types) {
		v.Types = nil
	}
	return v, nil
}

// denseTokens lays out model.vocab and added_tokens by id, requiring ids
// 0..n-1 each used once (an added token may repeat a vocab entry exactly).
// special maps the ids of added tokens to their special flag.
func denseTokens(tf *tokenizerDoc) (tokens []string, special map[int]bool, err error) {
	// Ids beyond the entry count cannot be dense; checking first bounds the
	// allocation by the file's size.
	limit := len(tf.Model.Vocab) + len(tf.AddedTokens)
	tokens = make([]string, limit)
	filled := make([]bool, limit)
	put := func(id int, s string, added bool) error {
		if id < 0 || id >= limit {
			return fmt.Errorf("token %q has id %d outside 0..%d (ids must be dense)", s, id, limit-1)
		}
		if filled[id] {
			if added && tokens[id] == s {
				return nil
			}
			return fmt.Errorf("id %d is used by both %q and %q", id, tokens[id], s)
		}
		tokens[id], filled[id] = s, true
		return nil
	}
	// Map order is random; sort so the error for a duplicate is stable.
	pieces := make([]string, 0, len(tf.Model.Vocab))
	for s := range tf.Model.Vocab {
		pieces = append(pieces, s)
	}
	sort.Strings(pieces)
	for _, s := range pieces {
		if err := put(tf.Model.Vocab[s], s, false); err != nil {
			return nil, nil, err
		}
	}
	special = make(map[int]bool, len(tf.AddedTokens))
	for _, a := range tf.AddedTokens {
		if err := put(a.ID, a.Content, true); err != nil {
			return nil, nil, fmt.Errorf("added token: %w", err)
		}
		special[a.ID] = a.Special
	}
	n := 0
	for i, f := range filled {
		if f {
			n = i + 1
		}
	}
	for i := range n {
		if !filled[i] {
			return nil, nil, fmt.Errorf("no token has id %d (ids must be 0..%d without gaps)", i, n-1)
		}
	}
	if n == 0 {
		return nil, nil, errors.New("empty vocabulary")
	}
	return tokens[:n], special, nil
}

// detectKind sets Kind, PreTokenizer and AddSpacePrefix from the
// normalizer, pre-tokenizer and byte_fallback.
func detectKind(tf *tokenizerDoc, v *model.Vocab) error {
	spm, byteLevel, prefix := tf.Model.ByteFallback, false, false
	split := ""
	tf.Normalizer.walk(func(c *component) {
		switch c.Type {
		case "Replace":
			if c.Pattern.String != nil && *c.Pattern.String == " " && c.Content == metaspace {
				spm = true
			}
		case "Prepend":
			if c.Prepend == metaspace {
				spm, prefix = true, true
			}
		}
	})
	tf.PreTokenizer.walk(func(c *component) {
		switch c.Type {
		case "Metaspace":
			spm = true
			switch c.PrependScheme {
			case "first", "always":
				prefix = true
			case "":
				// Before prepend_scheme, add_prefix_space (default true) said it.
				prefix = c.AddPrefixSpace == nil || *c.AddPrefixSpace
			}
		case "ByteLevel":
			byteLevel = true
		case "Split":
			if c.Pattern.Regex != nil {
				split += *c.Pattern.Regex
			}
		}
	})
	switch {
	case spm:
		v.Kind, v.AddSpacePrefix = model.VocabSPM, prefix
	case byteLevel:
		v.Kind, v.PreTokenizer = model.VocabBPE, "gpt2"
		if strings.Contains(split, `\p{N}{1,3}`) {
			v.PreTokenizer = "llama3"
		}
	default:
		return errors.New("cannot tell the tokenizer kind: no byte_fallback, Metaspace or ByteLevel pre-tokenizer")
	}
	return nil
}

// parseMerges accepts merges as "a b" strings or ["a", "b"] pairs and
// returns them as "a b" strings. A pair whose parts hold spaces joins
// ambiguously; Vocab.Merges cannot say more.
func parseMerges(raw []json.RawMessage) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	out := make([]string, len(raw))
	for i, r := range raw {
		r = bytes.TrimSpace(r)
		if len(r) > 0 && r[0] == '[' {
			var pair []string
			if err := json.Unmarshal(r, &pair); err != nil || len(pair) != 2 {
				return nil, fmt.Errorf("merge %d is not a pair of strings", i)
			}
			out[i] = pair[0] + " " + pair[1]
			continue
		}
		if err := json.Unmarshal(r, &out[i]); err != nil {
			return nil, fmt.Errorf("merge %d is neither a string nor a pair", i)
		}
	}
	return out, nil
}

// specialToken resolves a tokenizer_config token field: -2 when the key is
// absent (the caller falls back), -1 for null or a token not in the
// vocabulary, else its id.
func specialToken(raw json.RawMessage, lookup func(string) int) (int, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0:
		return -2, nil
	case bytes.Equal(raw, []byte("null")):
		return -1, nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		return lookup(s), nil
	}
	var obj struct {
		Content *string `json:"content"`
	}
	if err := json.Unmarshal(raw, &obj); err != nil || obj.Content == nil {
		return 0, errors.New("want a string, null or an object with content")
	}
	return lookup(*obj.Content), nil
}

// fallbackToken is the id of the first name present, or -1.
func fallbackToken(lookup func(string) int, names ...string) int {
	for _, n := range names {
		if id := lookup(n); id >= 0 {
			return id
		}
	}
	return -1
}

// chatTemplate accepts a template string or a list of named templates, of
// which it takes "default".
func chatTemplate(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	var s string
	if raw[0] == '"' {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("chat_template: %v", err)
		}
		return s, nil
	}
	var list []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return "", errors.New("chat_template: want a string or a list of named templates")
	}
	for _, t := range list {
		if t.Name == "default" {
			return t.Template, nil
		}
	}
	return "", nil
}

// extraEOS reads generation_config.json's eos_token_id (an id or a list)
// and returns the ids other than eos, each once.
func extraEOS(data []byte, eos, n int) ([]int, error) {
	var gc struct {
		EOS json.RawMessage `json:"eos_token_id"`
	}
	if err := json.Unmarshal(data, &gc); err != nil {
		return nil, fmt.Errorf("bad JSON: %v", err)
	}
	raw := bytes.TrimSpace(gc.EOS)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	var list []int
	if raw[0] == '[' {
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("eos_token_id: %v", err)
		}
	} else {
		var id int
		if err := json.Unmarshal(raw, &id); err != nil {
			return nil, fmt.Errorf("eos_token_id: %v", err)
		}
		list = []int{id}
	}
	var out []int
	for _, id := range list {
		if id < 0 || id >= n {
			return nil, fmt.Errorf("eos_token_id %d outside the %d tokens", id, n)
		}
		if id != eos && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out, nil
}

// isByteToken reports a SentencePiece byte token "<0xXX>".
func isByteToken(s string) bool {
	if len(s) != 6 || s[:3] != "<0x" || s[5] != '>' {
		return false
	}
	_, err := strconv.ParseUint(s[3:5], 16, 8)
	return err == nil
}

// padName names the filler token Load appends at id when the tokenizer
// has fewer tokens than the embedding has rows.
func padName(id int) string { return "<unused_" + strconv.Itoa(id) + ">" }

func allNormal(types []model.TokenType) bool {
	for _, t := range types {
		if t != model.TokenNormal {
			return false
		}
	}
	return true
}

// tokenizerFiles returns the JSON documents for tokenizer.json,
// tokenizer_config.json and generation_config.json describing v.
func tokenizerFiles(v *model.Vocab) (tok, cfg, gen map[string]any, err error) {
	// Trailing filler tokens are what Load pads back; leave them out.
	n := len(v.Tokens)
	for n > 0 && v.Type(n-1) == model.TokenUnused && v.Tokens[n-1] == padName(n-1) {
		n--
	}
	if n == 0 {
		return nil, nil, nil, errors.New("vocab: no tokens")
	}
	if v.Scores != nil && len(v.Scores) != len(v.Tokens) {
		return nil, nil, nil, fmt.Errorf("vocab: %d scores for %d tokens", len(v.Scores), len(v.Tokens))
	}
	if v.Types != nil && len(v.Types) != len(v.Tokens) {
		return nil, nil, nil, fmt.Errorf("vocab: %d types for %d tokens", len(v.Types), len(v.Tokens))
	}
	tokens := v.Tokens[:n]
	// JSON strings are UTF-8: other bytes would come back as U+FFFD.
	for i, m := range v.Merges {
		if !utf8.ValidString(m) {
			return nil, nil, nil, fmt.Errorf("vocab: merge %d (%q) is not valid UTF-8, which tokenizer.json cannot hold", i, m)
		}
	}
	if !utf8.ValidString(v.ChatTemplate) {
		return nil, nil, nil, errors.New("vocab: the chat template is not valid UTF-8, which tokenizer_config.json cannot hold")
	}
	ids := make(map[string]int, n)
	var added []addedToken
	for i, t := range tokens {
		if !utf8.ValidString(t) {
			return nil, nil, nil, fmt.Errorf("vocab: token %d (%q) is not valid UTF-8, which tokenizer.json cannot hold", i, t)
		}
		if j, dup := ids[t]; dup {
			return nil, nil, nil, fmt.Errorf("vocab: token %q at ids %d and %d (tokenizer.json maps pieces to one id)", t, j, i)
		}
		ids[t] = i
		switch v.Type(i) {
		case model.TokenControl, model.TokenUnknown:
			added = append(added, addedToken{ID: i, Content: t, Special: true})
		case model.TokenUserDefined, model.TokenUnused:
			added = append(added, addedToken{ID: i, Content: t, Normalized: true})
		}
	}
	name := func(id int) any {
		if id < 0 || id >= n {
			return nil
		}
		return tokens[id]
	}

	merges := v.Merges
	if merges == nil && v.Kind == model.VocabSPM {
		merges = spmMerges(v, tokens)
	}
	if merges == nil {
		merges = []string{}
	}
	bpe := map[string]any{
		"type":                      "BPE",
		"dropout":                   nil,
		"unk_token":                 name(v.UNK),
		"continuing_subword_prefix": nil,
		"end_of_word_suffix":        nil,
		"vocab":                     orderedVocab(tokens),
		"merges":                    merges,
	}
	tok = map[string]any{
		"version":        "1.0",
		"truncation":     nil,
		"padding":        nil,
		"added_tokens":   added,
		"normalizer":     nil,
		"pre_tokenizer":  nil,
		"post_processor": nil,
	}
	switch v.Kind {
	case model.VocabSPM:
		norm := []any{map[string]any{"type": "Replace", "pattern": map[string]any{"String": " "}, "content": metaspace}}
		dec := []any{
			map[string]any{"type": "Replace", "pattern": map[string]any{"String": metaspace}, "content": " "},
			map[string]any{"type": "ByteFallback"},
			map[string]any{"type": "Fuse"},
		}
		if v.AddSpacePrefix {
			norm = append([]any{map[string]any{"type": "Prepend", "prepend": metaspace}}, norm...)
			dec = append(dec, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
		}
		tok["normalizer"] = map[string]any{"type": "Sequence", "normalizers": norm}
		tok["decoder"] = map[string]any{"type": "Sequence", "decoders": dec}
		bpe["fuse_unk"] = true
		bpe["byte_fallback"] = true
	case model.VocabBPE:
		byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
		if v.PreTokenizer == "gpt2" {
			tok["pre_tokenizer"] = byteLevel
		} else {
			byteLevel["use_regex"] = false
			tok["pre_tokenizer"] = map[string]any{"type": "Sequence", "pretokenizers": []any{
				map[string]any{"type": "Split", "pattern": map[string]any{"Regex": llama3Split}, "behavior": "Isolated", "invert": false},
				byteLevel,
			}}
			bpe["ignore_merges"] = true
		}
		tok["decoder"] = map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}
		bpe["fuse_unk"] = false
		bpe["byte_fallback"] = false
	default:
		return nil, nil, nil, fmt.Errorf("vocab: unknown kind %q", v.Kind)
	}
	if bos := name(v.BOS); v.AddBOS && bos != nil {
		tok["post_processor"] = template(bos.(string), v.BOS)
	}
	tok["model"] = bpe

	class := "LlamaTokenizerFast"
	if v.Kind == model.VocabBPE {
		class = "PreTrainedTokenizerFast"
	}
	cfg = map[string]any{
		"tokenizer_class":              class,
		"add_bos_token":                v.AddBOS,
		"add_eos_token":                false,
		"bos_token":                    name(v.BOS),
		"eos_token":                    name(v.EOS),
		"unk_token":                    name(v.UNK),
		"clean_up_tokenization_spaces": false,
	}
	if v.ChatTemplate != "" {
		cfg["chat_template"] = v.ChatTemplate
	}
	if v.Scores != nil {
		for i, s := range v.Scores[:n] {
			if math.IsNaN(float64(s)) || math.IsInf(float64(s), 0) {
				return nil, nil, nil, fmt.Errorf("vocab: token %d has score %g, which JSON cannot hold", i, s)
			}
		}
		cfg[scoresKey] = v.Scores[:n]
	}

	gen = map[string]any{}
	if v.BOS >= 0 {
		gen["bos_token_id"] = v.BOS
	}
	var eos []int
	if v.EOS >= 0 {
		eos = append(eos, v.EOS)
	}
	eos = append(eos, v.EOT...)
	switch len(eos) {
	case 0:
	case 1:
		gen["eos_token_id"] = eos[0]
	default:
		gen["eos_token_id"] = eos
	}
	return tok, cfg, gen, nil
}

// template is a TemplateProcessing post-processor that prepends bos.
func template(bos string, id int) map[string]any {
	special := func(typeID int) map[string]any {
		return map[string]any{"SpecialToken": map[string]any{"id": bos, "type_id": typeID}}
	}
	seq := func(s string, typeID int) map[string]any {
		return map[string]any{"Sequence": map[string]any{"id": s, "type_id": typeID}}
	}
	return map[string]any{
		"type":   "TemplateProcessing",
		"single": []any{special(0), seq("A", 0)},
		"pair":   []any{special(0), seq("A", 0), special(1), seq("B", 1)},
		"special_tokens": map[string]any{
			bos: map[string]any{"id": bos, "ids": []int{id}, "tokens": []string{bos}},
		},
	}
}

// orderedVocab marshals as a JSON object mapping each token to its id, in
// id order as Hugging Face writes it.
type orderedVocab []string

// MarshalJSON implements json.Marshaler.
func (o orderedVocab) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, t := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := marshalJSON(t, false)
		if err != nil {
			return nil, err
		}
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(i))
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// spmMerges derives BPE merges from a SentencePiece vocabulary that has
// only scores, as transformers' LlamaConverter does: every split of a
// normal token of two or more runes into two normal tokens is a merge.
// Merges are ordered by the merged token's score, highest first; ties go
// to the lower merged id, then the lower left id, then the lower right id.
// Without scores every score counts as equal.
func spmMerges(v *model.Vocab, tokens []string) []string {
	ids := make(map[string]int, len(tokens))
	for i, t := range tokens {
		if v.Type(i) == model.TokenNormal {
			ids[t] = i
		}
	}
	type merge struct {
		left, right, merged int
		score               float32
	}
	var ms []merge
	for i, t := range tokens {
		if v.Type(i) != model.TokenNormal || utf8.RuneCountInString(t) < 2 {
			continue
		}
		var score float32
		if v.Scores != nil {
			score = v.Scores[i]
		}
		for k := range t {
			if k == 0 {
				continue
			}
			l, okl := ids[t[:k]]
			rt, okr := ids[t[k:]]
			if okl && okr {
				ms = append(ms, merge{l, rt, i, score})
			}
		}
	}
	sort.Slice(ms, func(a, b int) bool {
		x, y := ms[a], ms[b]
		switch {
		case x.score != y.score:
			return x.score > y.score
		case x.merged != y.merged:
			return x.merged < y.merged
		case x.left != y.left:
			return x.left < y.left
		}
		return x.right < y.right
	})
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = tokens[m.left] + " " + tokens[m.right]
	}
	return out
}
