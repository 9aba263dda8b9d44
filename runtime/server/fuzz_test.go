package server

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// Chat templates the fuzz targets switch between: none, Llama-2, Mistral,
// Llama-3 (by their markers, as detectChat reads them).
var fuzzTemplates = []string{"", "[INST] <<SYS>>", "[INST]", "<|start_header_id|>"}

// fuzzTokenizers are stories260K's tokenizer with each of fuzzTemplates,
// its vocab extended by the control tokens the templates use.
func fuzzTokenizers(t testing.TB) []*tokenizer.Tokenizer {
	v, err := llama2c.LoadVocab(testfiles.Shared(t, "models/stories260K/tok512.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if v.Types == nil {
		v.Types = make([]model.TokenType, len(v.Tokens))
		for i := range v.Types {
			v.Types[i] = model.TokenNormal
		}
	}
	for _, s := range []string{"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"} {
		v.Tokens = append(v.Tokens, s)
		v.Types = append(v.Types, model.TokenControl)
		if v.Scores != nil {
			v.Scores = append(v.Scores, 0)
		}
	}
	var out []*tokenizer.Tokenizer
	for _, tmpl := range fuzzTemplates {
		w := *v
		w.ChatTemplate = tmpl
		tk, err := tokenizer.New(&w)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, tk)
	}
	return out
}

func TestFuzzCorpus(t *testing.T) {
	testfiles.WriteCorpus(t, "FuzzRequest", []testfiles.Seed{
		{Name: "completion", Args: []any{[]byte(`{"prompt":"Once upon a time","max_tokens":20,"temperature":0.7,"top_p":0.9,"seed":3,"stop":["\n","end"],"logprobs":2}`), false, 0}},
		{Name: "completion-list", Args: []any{[]byte(`{"model":"dense","prompt":["Hi"],"stream":true,"stream_options":{"include_usage":true},"n":1}`), false, 0}},
		{Name: "chat-parts", Args: []any{[]byte(`{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"Hi"}]}],"max_completion_tokens":5,"logprobs":true,"top_logprobs":3}`), true, 3}},
		{Name: "chat-llama2", Args: []any{[]byte(`{"messages":[{"role":"developer","content":"x"},{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"}]}`), true, 1}},
		{Name: "bad-types", Args: []any{[]byte(`{"prompt":3,"max_tokens":5.5,"stream":"yes"}`), false, 0}},
		{Name: "not-json", Args: []any{[]byte(`{"prompt": "Hi",`), true, 2}},
	})
	testfiles.WriteCorpus(t, "FuzzStopFilter", []testfiles.Seed{
		{Name: "one", Args: []any{"Once upon a time there was", "a t", []byte{3, 9, 1}}},
		{Name: "overlapping", Args: []any{"abcabcabd", "abd\x00cab\x00bca", []byte{1, 1, 1, 1, 1, 1, 1, 1}}},
		{Name: "none", Args: []any{"no stop here", "", []byte{4}}},
		{Name: "utf8", Args: []any{"日本語のテキスト", "語の\x00ト", []byte{2, 5}}},
	})
	testfiles.WriteCorpus(t, "FuzzChat", []testfiles.Seed{
		{Name: "plain", Args: []any{"", []byte{0, 1, 2}, "Be brief.\x00Hi\x00Hello."}},
		{Name: "llama2", Args: []any{"{% if messages[0]['role'] == 'system' %}<<SYS>> [INST]", []byte{0, 1, 2, 1}, "sys\x00 a \x00b\x00c"}},
		{Name: "mistral", Args: []any{"[INST] {{ m }} [/INST]", []byte{3, 1}, "dev\x00user"}},
		{Name: "llama3", Args: []any{"<|start_header_id|>", []byte{1, 2, 1}, "<|eot_id|>\x00x\x00 y "}},
	})
}

// FuzzRequest decodes any body as a completions or chat request, checks
// its parameters and builds its prompt with each chat template: a bad one
// is a 4xx with OpenAI's error shape, a good one has valid parameters and a
// prompt of tokens in the vocabulary.
func FuzzRequest(f *testing.F) {
	tks := fuzzTokenizers(f)
	f.Fuzz(func(t *testing.T, body []byte, chat bool, template int) {
		tk := tks[uint(template)%uint(len(tks))]
		s := &Server{cfg: Config{Tokenizer: tk, MaxBody: 4096}, ctx: 64}
		var req request
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		check := func(err error) {
			e := asAPIError(err)
			if e.status < 400 || e.status >= 500 || e.message == "" || e.typ == "" {
				t.Fatalf("%q: error %d %+v", body, e.status, e)
			}
		}
		if err := decodeBody(httptest.NewRecorder(), r, s.cfg.MaxBody, &req); err != nil {
			check(err)
			return
		}
		p, err := req.params(64, 16, chat)
		if err != nil {
			check(err)
			return
		}
		if p.maxTokens < 1 || p.maxTokens > 64 || p.sample.Validate() != nil || p.logprobs < -1 || p.logprobs > maxTopLogprobs ||
			!chat && p.logprobs > maxLogprobs {
			t.Fatalf("%q: params %+v", body, p)
		}
		ids, param, err := s.prompt(&req, chat)
		if err != nil {
			check(err)
			return
		}
		if len(ids) == 0 || param == "" {
			t.Fatalf("%q: empty prompt", body)
		}
		for _, id := range ids {
			if id < 0 || id >= tk.VocabSize() {
				t.Fatalf("%q: token %d outside the vocabulary", body, id)
			}
		}
		if err := s.fits(len(ids), &p, param); err != nil {
			check(err)
		} else if len(ids)+p.maxTokens > s.ctx {
			t.Fatalf("%q: %d prompt tokens and %d to generate fit a context of %d", body, len(ids), p.maxTokens, s.ctx)
		}
	})
}

// FuzzStopFilter feeds text in pieces (cut at the given lengths) through
// the stop-string filter: what it passes on is a prefix of the text with no
// stop string in it, followed in the text by a stop string when it
// stopped, and the whole text when it did not.
func FuzzStopFilter(f *testing.F) {
	f.Fuzz(func(t *testing.T, text, stops string, cuts []byte) {
		var list []string
		for _, s := range strings.Split(stops, "\x00")[:min(4, strings.Count(stops, "\x00")+1)] {
			if s != "" {
				list = append(list, s)
			}
		}
		filter := stopFilter{stops: list}
		var out strings.Builder
		rest, stopped := text, false
		for i := 0; rest != "" && !stopped; i++ {
			n := len(rest)
			if i < len(cuts) {
				n = min(n, 1+int(cuts[i]))
			}
			var piece string
			piece, stopped = filter.push(rest[:n])
			out.WriteString(piece)
			rest = rest[n:]
		}
		if !stopped {
			out.WriteString(filter.end())
		}
		got := out.String()
		if !strings.HasPrefix(text, got) {
			t.Fatalf("passed on %q, not a prefix of %q", got, text)
		}
		for _, s := range list {
			if strings.Contains(got, s) {
				t.Fatalf("passed on %q, which holds the stop %q", got, s)
			}
		}
		after := text[len(got):]
		starts := false
		for _, s := range list {
			starts = starts || strings.HasPrefix(after, s)
		}
		if stopped != starts || !stopped && got != text {
			t.Fatalf("text %q, stops %q: passed on %q, stopped %v", text, list, got, stopped)
		}
	})
}

// FuzzChat detects the format of any chat template and renders and encodes
// any conversation in it: the prompt keeps every message's text and ends
// where the assistant's answer begins.
func FuzzChat(f *testing.F) {
	tk := fuzzTokenizers(f)[0]
	roles := []string{"system", "user", "assistant", "developer"}
	f.Fuzz(func(t *testing.T, template string, who []byte, contents string) {
		format := detectChat(template)
		switch {
		case strings.Contains(template, "<|start_header_id|>") != (format == llama3Chat),
			format == llama2Chat && !strings.Contains(template, "<<SYS>>"),
			format == plainChat && strings.Contains(template, "[INST]"):
			t.Fatalf("template %q detected as %d", template, format)
		}
		texts := strings.Split(contents, "\x00")
		var msgs []message
		for i, r := range who[:min(len(who), 8)] {
			raw, _ := json.Marshal(texts[i%len(texts)])
			msgs = append(msgs, message{Role: roles[int(r)%len(roles)], Content: raw})
		}
		turns, err := chatTurns(msgs)
		if err != nil {
			if len(msgs) > 0 {
				t.Fatalf("%d messages refused: %v", len(msgs), err)
			}
			return
		}
		text := renderChat(format, turns, "<s>", "</s>")
		for _, tn := range turns {
			c := tn.content
			if format != plainChat {
				c = strings.TrimSpace(c)
			}
			if !strings.Contains(text, c) && !(tn.role == "system" && format != llama3Chat && format != plainChat) {
				t.Fatalf("%s prompt %q lost %s message %q", []string{"plain", "llama2", "mistral", "llama3"}[format], text, tn.role, c)
			}
		}
		if end := map[chatFormat]string{plainChat: "assistant:", llama3Chat: "<|start_header_id|>assistant<|end_header_id|>\n\n"}[format]; !strings.HasSuffix(text, end) {
			t.Fatalf("prompt %q does not end in %q", text, end)
		}
		w := *tk.Vocab()
		w.ChatTemplate = template
		wt, err := tokenizer.New(&w)
		if err != nil {
			t.Fatal(err)
		}
		ids, err := chatPrompt(wt, msgs)
		if err != nil || len(ids) == 0 || ids[0] != wt.BOS() {
			t.Fatalf("chat prompt %v, %v", ids, err)
		}
		for _, id := range ids {
			if id < 0 || id >= wt.VocabSize() {
				t.Fatalf("token %d outside the vocabulary", id)
			}
		}
	})
}
