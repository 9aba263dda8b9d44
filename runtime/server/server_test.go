package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/acttail/acttail-gpu/internal/hostpick"
	"github.com/acttail/acttail-gpu/internal/testmodel"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// stories opens stories260K and its tokenizer (skipping when absent).
func stories(t *testing.T) (*model.Checkpoint, *tokenizer.Tokenizer) {
	t.Helper()
	m := testmodel.Stories260K(t)
	t.Cleanup(func() { m.Close() })
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}

// halfPlan keeps half of every projection's inputs.
func halfPlan(t *testing.T, m *model.Checkpoint) *plan.Plan {
	t.Helper()
	p := &plan.Plan{Version: plan.Version, Selection: plan.SelectMagnitude, Model: plan.Identify(m), Method: "uniform", Mode: plan.ModeTopK, Target: 0.5, Sites: plan.Sites(&m.Config)}
	for i := range p.Sites {
		s := &p.Sites[i]
		s.Sparsity = 0.5
		s.K = plan.KeepFor(s.Sparsity, s.DIn)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(m); err != nil {
		t.Fatal(err)
	}
	return p
}

// fixture is a running server over stories260K.
type fixture struct {
	s    *Server
	ts   *httptest.Server
	m    *model.Checkpoint
	tok  *tokenizer.Tokenizer
	half *plan.Plan // served as model "half" when the fixture has plans
	key  string
	url  string // where requests go: the httptest server unless a test says
}

// start serves stories260K with cfg (Model, Tokenizer and, when withPlan,
// Plans filled in) and shuts it down at the end of the test.
func start(t *testing.T, cfg Config, withPlan bool) *fixture {
	t.Helper()
	return startOn(t, cfg, withPlan, func(*model.Checkpoint) backend.Backend { return cpu.New(0) })
}

// startOn is start on the backend newBackend makes for the model.
func startOn(t *testing.T, cfg Config, withPlan bool, newBackend func(*model.Checkpoint) backend.Backend) *fixture {
	t.Helper()
	m, tok := stories(t)
	f := &fixture{m: m, tok: tok, key: cfg.APIKey}
	e, err := engine.LoadWith(newBackend(m), m, engine.Options{Sparse: withPlan})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Model, cfg.Tokenizer = e, tok
	if withPlan {
		f.half = halfPlan(t, m)
		cfg.Plans = []Plan{{Name: "half", Plan: f.half}}
	}
	f.s, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.ts = httptest.NewServer(f.s.Handler())
	f.url = f.ts.URL
	t.Cleanup(func() {
		f.ts.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := f.s.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		e.Backend.Close()
	})
	return f
}

// greedy is the engine's own greedy completion of prompt: what `generate`
// prints after the prompt, on a separate engine and backend.
func (f *fixture) greedy(t *testing.T, prompt string, maxTokens int, p *plan.Plan) string {
	t.Helper()
	ids := f.tok.Encode(prompt, true)
	return f.greedyIDs(t, ids, maxTokens, p, true)
}

// greedyIDs generates from ids; prime feeds the prompt to the decoder
// first, as completions do (chat does not).
func (f *fixture) greedyIDs(t *testing.T, ids []int, maxTokens int, p *plan.Plan, prime bool) string {
	t.Helper()
	b := cpu.New(1)
	defer b.Close()
	e, err := engine.LoadWith(b, f.m, engine.Options{Sparse: f.half != nil})
	if err != nil {
		t.Fatal(err)
	}
	st := e.NewState(0, 64)
	if p != nil {
		if st.Budgets, err = e.Budgets(p, ""); err != nil {
			t.Fatal(err)
		}
	}
	st.SparseFrom = len(ids)
	dec := f.tok.NewStream()
	if prime {
		for _, id := range ids {
			dec.Next(id)
		}
	}
	var out strings.Builder
	_, err = st.Generate(context.Background(), ids, engine.GenOptions{MaxTokens: maxTokens, IsEnd: f.tok.IsEnd}, func(id int) error {
		out.WriteString(dec.Next(id))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out.String() + dec.Flush()
}

// post sends body as JSON (a string is sent as is) and returns the status
// and the body.
func (f *fixture) post(t *testing.T, ctx context.Context, path string, body any) (int, []byte) {
	t.Helper()
	resp := f.do(t, ctx, http.MethodPost, path, body)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read: %v", path, err)
	}
	return resp.StatusCode, b
}

func (f *fixture) do(t *testing.T, ctx context.Context, method, path string, body any) *http.Response {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.url+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if f.key != "" {
		req.Header.Set("Authorization", "Bearer "+f.key)
	}
	resp, err := f.ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// answer is the part of a non-streamed reply the tests look at.
type answer struct {
	Object  string `json:"object"`
	ID      string `json:"id"`
	Model   string `json:"model"`
	Choices []struct {
		Text    string `json:"text"`
		Message struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"message"`
		FinishReason string `json:"finish_reason"`
	} `json:"choices"`
	Usage usage `json:"usage"`
}

func (f *fixture) complete(t *testing.T, path string, body map[string]any) answer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	status, b := f.post(t, ctx, path, body)
	if status != http.StatusOK {
		t.Fatalf("%s: status %d: %s", path, status, b)
	}
	var r answer
	if err := json.Unmarshal(b, &r); err != nil || len(r.Choices) != 1 {
		t.Fatalf("%s: reply %s: %v", path, b, err)
	}
	return r
}

// streamed is what a client assembles from a stream.
type streamed struct {
	text, finish, role string
	usage              *usage
	chunks             int
}

// stream posts body with stream set and reads the events up to [DONE].
func (f *fixture) stream(t *testing.T, ctx context.Context, path string, body map[string]any) (streamed, error) {
	t.Helper()
	body["stream"] = true
	resp := f.do(t, ctx, http.MethodPost, path, body)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return streamed{}, fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		return streamed{}, fmt.Errorf("content type %q", ct)
	}
	return readStream(resp.Body)
}

func readStream(r io.Reader) (streamed, error) {
	var s streamed
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			return s, fmt.Errorf("line %q is not a data line", line)
		}
		if data == "[DONE]" {
			if s.finish == "" {
				return s, fmt.Errorf("[DONE] before a finish reason")
			}
			return s, nil
		}
		var c struct {
			Choices []struct {
				Text  *string `json:"text"`
				Delta *struct {
					Role    string `json:"role"`
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
			Usage *usage    `json:"usage"`
			Error *struct{} `json:"error"`
		}
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			return s, fmt.Errorf("chunk %q: %v", data, err)
		}
		if c.Error != nil {
			return s, fmt.Errorf("error event %s", data)
		}
		s.chunks++
		if c.Usage != nil {
			s.usage = c.Usage
			continue
		}
		if len(c.Choices) != 1 {
			return s, fmt.Errorf("chunk %q: %d choices", data, len(c.Choices))
		}
		ch := c.Choices[0]
		if s.finish != "" {
			return s, fmt.Errorf("chunk after the finish reason: %q", data)
		}
		if ch.Text != nil {
			s.text += *ch.Text
		}
		if ch.Delta != nil {
			if ch.Delta.Role != "" {
				s.role = ch.Delta.Role
			}
			s.text += ch.Delta.Content
		}
		if ch.FinishReason != nil {
			s.finish = *ch.FinishReason
		}
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	return s, fmt.Errorf("stream ended without [DONE]")
}

// metrics fetches /metrics and returns each sample by its name and labels
// as written, checking that every line is a comment or a sample.
func (f *fixture) metrics(t *testing.T) map[string]float64 {
	t.Helper()
	resp := f.do(t, context.Background(), http.MethodGet, "/metrics", nil)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: status %d, %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sample := regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})?) (NaN|[+-]Inf|[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$`)
	comment := regexp.MustCompile(`^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* (counter|gauge|histogram|summary|untyped))$`)
	out := map[string]float64{}
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if comment.MatchString(line) {
			continue
		}
		m := sample.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("/metrics line %q is not Prometheus text", line)
		}
		v, err := strconv.ParseFloat(strings.Replace(m[2], "Inf", "inf", 1), 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", line, err)
		}
		out[m[1]] = v
	}
	return out
}

// waitMetric polls /metrics until ok(value of name) or the deadline.
func (f *fixture) waitMetric(t *testing.T, name string, ok func(float64) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		v, found := f.metrics(t)[name]
		if found && ok(v) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present %v) after 5 s", name, v, found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const storyPrompt = "Once upon a time"

// Greedy output through the API equals the engine's own greedy
// generation, dense and with a plan, streamed and not; /v1/models lists
// both models.
func TestGreedyMatchesEngine(t *testing.T) {
	f := start(t, Config{}, true)
	ids := f.tok.Encode(storyPrompt, true)
	for _, tc := range []struct {
		model string
		plan  *plan.Plan
	}{{DenseModel, nil}, {"half", f.half}} {
		want := f.greedy(t, storyPrompt, 40, tc.plan)
		r := f.complete(t, "/v1/completions", map[string]any{"model": tc.model, "prompt": storyPrompt, "max_tokens": 40, "temperature": 0})
		c := r.Choices[0]
		if c.Text != want {
			t.Fatalf("%s: got %q, want %q", tc.model, c.Text, want)
		}
		if r.Object != "text_completion" || r.Model != tc.model || !strings.HasPrefix(r.ID, "cmpl-") {
			t.Errorf("%s: object %q model %q id %q", tc.model, r.Object, r.Model, r.ID)
		}
		u := r.Usage
		if u.PromptTokens != len(ids) || u.CompletionTokens < 1 || u.CompletionTokens > 40 || u.TotalTokens != u.PromptTokens+u.CompletionTokens {
			t.Errorf("%s: usage %+v (prompt %d tokens)", tc.model, u, len(ids))
		}
		if (u.CompletionTokens == 40) != (c.FinishReason == "length") || (c.FinishReason != "length" && c.FinishReason != "stop") {
			t.Errorf("%s: finish %q after %d tokens", tc.model, c.FinishReason, u.CompletionTokens)
		}
		// a list of one prompt is the same request
		if r2 := f.complete(t, "/v1/completions", map[string]any{"model": tc.model, "prompt": []string{storyPrompt}, "max_tokens": 40, "temperature": 0}); r2.Choices[0].Text != want {
			t.Errorf("%s: list prompt gave %q", tc.model, r2.Choices[0].Text)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		s, err := f.stream(t, ctx, "/v1/completions", map[string]any{"model": tc.model, "prompt": storyPrompt, "max_tokens": 40, "temperature": 0,
			"stream_options": map[string]any{"include_usage": true}})
		cancel()
		if err != nil {
			t.Fatalf("%s stream: %v", tc.model, err)
		}
		if s.text != want || s.finish != c.FinishReason || s.usage == nil || *s.usage != u {
			t.Fatalf("%s stream: %q finish %q usage %v; want %q %q %+v", tc.model, s.text, s.finish, s.usage, want, c.FinishReason, u)
		}
	}
	resp := f.do(t, context.Background(), http.MethodGet, "/v1/models", nil)
	var list struct {
		Object string
		Data   []modelInfo
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || list.Object != "list" || len(list.Data) != 2 ||
		list.Data[0].ID != DenseModel || list.Data[1].ID != "half" || list.Data[1].Object != "model" {
		t.Fatalf("/v1/models: %+v %v", list, err)
	}
	resp.Body.Close()
	f.waitMetric(t, `acttail_requests_total{model="half",status="200"}`, func(v float64) bool { return v == 3 })
	m := f.metrics(t)
	if v := m[`acttail_realized_sparsity{model="half"}`]; v < 0.4 || v > 0.6 {
		t.Errorf("realized sparsity of half = %g, want about 0.5", v)
	}
}

// A stop string cuts the text before it, streamed or not; a sampled
// request with a seed repeats.
// A request that names no model gets the dense model even where plans
// are served, unless Config.Default says otherwise.
func TestDefaultModel(t *testing.T) {
	f := start(t, Config{}, true)
	want := f.greedy(t, storyPrompt, 20, nil)
	r := f.complete(t, "/v1/completions", map[string]any{"prompt": storyPrompt, "max_tokens": 20, "temperature": 0})
	if r.Model != DenseModel || r.Choices[0].Text != want {
		t.Errorf("no model: served by %q: %q; want dense %q", r.Model, r.Choices[0].Text, want)
	}
	g := start(t, Config{Default: "half"}, true)
	if r := g.complete(t, "/v1/completions", map[string]any{"prompt": storyPrompt, "max_tokens": 5}); r.Model != "half" {
		t.Errorf("Default half: served by %q", r.Model)
	}
}

func TestStopAndSeed(t *testing.T) {
	f := start(t, Config{}, false)
	want := f.greedy(t, storyPrompt, 60, nil)
	if len(want) < 30 {
		t.Fatalf("greedy text %q too short for the test", want)
	}
	stop := want[20:24]
	cut := want[:strings.Index(want, stop)]
	body := func() map[string]any {
		return map[string]any{"prompt": storyPrompt, "max_tokens": 60, "temperature": 0, "stop": []string{"never appears", stop}}
	}
	r := f.complete(t, "/v1/completions", body())
	if r.Choices[0].Text != cut || r.Choices[0].FinishReason != "stop" {
		t.Fatalf("stop %q: got %q (%s), want %q", stop, r.Choices[0].Text, r.Choices[0].FinishReason, cut)
	}
	s, err := f.stream(t, context.Background(), "/v1/completions", body())
	if err != nil || s.text != cut || s.finish != "stop" {
		t.Fatalf("stop %q streamed: got %q (%s), %v; want %q", stop, s.text, s.finish, err, cut)
	}
	seeded := map[string]any{"prompt": storyPrompt, "max_tokens": 30, "temperature": 1, "top_p": 0.9, "seed": 7}
	a, b := f.complete(t, "/v1/completions", seeded), f.complete(t, "/v1/completions", seeded)
	if a.Choices[0].Text != b.Choices[0].Text {
		t.Fatalf("seed 7 gave %q then %q", a.Choices[0].Text, b.Choices[0].Text)
	}
}

func TestStopFilter(t *testing.T) {
	cases := []struct {
		pieces  []string
		stops   []string
		out     []string // after each push
		stopped bool
		end     string
	}{
		{[]string{"ab", "cd"}, nil, []string{"ab", "cd"}, false, ""},
		{[]string{"hello", " wor", "ld"}, []string{"world"}, []string{"hello", " ", ""}, true, ""},
		{[]string{"a\n", "\nb"}, []string{"\n\n"}, []string{"a", ""}, true, ""},
		{[]string{"x<", "|y"}, []string{"<|end|>"}, []string{"x", "<|y"}, false, ""},
		{[]string{"xy", "z"}, []string{"yz!", "q"}, []string{"x", ""}, false, "yz"},
		{[]string{"STOP"}, []string{"ST", "STOP"}, []string{""}, true, ""},
		{[]string{"aS", "T"}, []string{"TT", "ST"}, []string{"a", ""}, true, ""},
	}
	for i, tc := range cases {
		f := stopFilter{stops: tc.stops}
		var stopped bool
		for j, p := range tc.pieces {
			var out string
			out, stopped = f.push(p)
			if out != tc.out[j] {
				t.Errorf("case %d push %q: got %q, want %q", i, p, out, tc.out[j])
			}
			if stopped && j != len(tc.pieces)-1 {
				t.Errorf("case %d: stopped early at %q", i, p)
			}
		}
		if stopped != tc.stopped {
			t.Errorf("case %d: stopped %v", i, stopped)
		}
		if !stopped {
			if e := f.end(); e != tc.end {
				t.Errorf("case %d: end %q, want %q", i, e, tc.end)
			}
		}
	}
}

// The chat endpoint renders the plain fallback for stories260K (no
// template) and answers in chat's shape.
func TestChat(t *testing.T) {
	f := start(t, Config{}, false)
	msgs := []map[string]any{
		{"role": "system", "content": "You tell stories."},
		{"role": "user", "content": []map[string]string{{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story."}}},
	}
	ids := f.tok.Encode("system: You tell stories.\nuser: Tell me a story.\nassistant:", true)
	want := f.greedyIDs(t, ids, 30, nil, false)
	r := f.complete(t, "/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 30, "temperature": 0})
	c := r.Choices[0]
	if c.Message.Role != "assistant" || c.Message.Content != want || r.Object != "chat.completion" || !strings.HasPrefix(r.ID, "chatcmpl-") {
		t.Fatalf("chat reply %+v, want content %q", r, want)
	}
	if r.Usage.PromptTokens != len(ids) {
		t.Errorf("prompt tokens %d, want %d", r.Usage.PromptTokens, len(ids))
	}
	s, err := f.stream(t, context.Background(), "/v1/chat/completions", map[string]any{"messages": msgs, "max_tokens": 30, "temperature": 0})
	if err != nil || s.text != want || s.role != "assistant" || s.finish != c.FinishReason {
		t.Fatalf("chat stream %+v, %v; want %q", s, err, want)
	}
}

func TestRenderChat(t *testing.T) {
	turns := []turn{{"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello."}, {"user", "Bye"}}
	cases := []struct {
		template string
		want     string
	}{
		{"", "system: Be brief.\nuser:  Hi \nassistant: Hello.\nuser: Bye\nassistant:"},
		{"{% if messages[0]['role'] == 'system' %}<<SYS>>\\n' + ... + '[INST] ' ...",
			"[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]"},
		{"{{ bos_token }}{% for message in messages %}[INST] {{ message['content'] }} [/INST]",
			"[INST] Be brief.\n\nHi [/INST] Hello. </s><s>[INST] Bye [/INST]"},
		{"{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' %}",
			"<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>" +
				"<|start_header_id|>assistant<|end_header_id|>\n\n"},
	}
	for _, tc := range cases {
		if got := renderChat(detectChat(tc.template), turns, "<s>", "</s>"); got != tc.want {
			t.Errorf("template %.30q:\ngot  %q\nwant %q", tc.template, got, tc.want)
		}
	}
}

// Many concurrent streaming clients: none fails, each gets exactly the
// greedy text of its prompt, and steps batched several sequences.
func TestConcurrentStreams(t *testing.T) {
	f := start(t, Config{MaxBatch: 8, Queue: 64}, true)
	prompts := []string{storyPrompt, "The cat", "Lily and Ben", "One day, a little dog", "Tom had a red ball", "The sun"}
	const maxTokens = 48
	// Clients alternate between the dense model and the plan "half", so
	// that steps mix rows of both.
	models, plans := []string{DenseModel, "half"}, []*plan.Plan{nil, f.half}
	want := make([][2]string, len(prompts))
	for i, p := range prompts {
		for v := range models {
			want[i][v] = f.greedy(t, p, maxTokens, plans[v])
			// the non-streamed reply agrees too
			if r := f.complete(t, "/v1/completions", map[string]any{"model": models[v], "prompt": p, "max_tokens": maxTokens, "temperature": 0}); r.Choices[0].Text != want[i][v] {
				t.Fatalf("prompt %q on %s: reply %q, want %q", p, models[v], r.Choices[0].Text, want[i][v])
			}
		}
	}
	if want[0][0] == want[0][1] {
		t.Fatalf("the plan does not change the text (%q): the test cannot tell the rows apart", want[0][0])
	}
	const clients = 24
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, v := c%len(prompts), c%len(models)
			path, body := "/v1/completions", map[string]any{"model": models[v], "prompt": prompts[p], "max_tokens": maxTokens, "temperature": 0}
			s, err := f.stream(t, ctx, path, body)
			switch {
			case err != nil:
				errs <- fmt.Errorf("client %d: %v", c, err)
			case s.text != want[p][v]:
				errs <- fmt.Errorf("client %d (%q on %s): got %q, want %q", c, prompts[p], models[v], s.text, want[p][v])
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// a handler counts its request after the client has read the end
	requests := float64(clients/2 + len(prompts))
	f.waitMetric(t, `acttail_requests_total{model="dense",status="200"}`, func(v float64) bool { return v == requests })
	f.waitMetric(t, `acttail_requests_total{model="half",status="200"}`, func(v float64) bool { return v == requests })
	m := f.metrics(t)
	if v := m[`acttail_realized_sparsity{model="half"}`]; v < 0.4 || v > 0.6 {
		t.Errorf("realized sparsity of half = %g, want about 0.5", v)
	}
	if steps, single := m["acttail_batch_size_count"], m[`acttail_batch_size_bucket{le="1"}`]; steps <= single {
		t.Errorf("no decode step ran more than one sequence (%g steps, %g of one)", steps, single)
	}
	if m["acttail_active_sequences"] != 0 {
		t.Errorf("metrics after the load: %v", m)
	}
	if m["acttail_time_to_first_token_seconds_count"] != 2*requests || m["acttail_decode_tokens_per_second"] <= 0 {
		t.Errorf("first-token histogram or decode rate missing: %v", m)
	}
}

// TestDevicePicks serves on a backend that picks tokens (a
// backend.Picker, here on the host: internal/hostpick) and checks that
// concurrent greedy, temperature, top-p and logprobs requests get the text
// of a server that reads the logits, that the plain ones are picked and
// that only the top-p and logprobs rows are read.
func TestDevicePicks(t *testing.T) {
	var hp *hostpick.Backend
	cfg := Config{MaxBatch: 8, Queue: 64}
	entered, release := holdScheduler(&cfg)
	picking := startOn(t, cfg, false, func(m *model.Checkpoint) backend.Backend {
		hp = &hostpick.Backend{Backend: cpu.New(0), Vocab: m.Config.VocabSize}
		return hp
	})
	reading := start(t, Config{}, false)
	const maxTokens = 24
	bodies := []map[string]any{
		{"prompt": storyPrompt, "max_tokens": maxTokens, "temperature": 0},
		{"prompt": "The cat", "max_tokens": maxTokens, "temperature": 0.9, "seed": 5},
		{"prompt": "Lily and Ben", "max_tokens": maxTokens, "temperature": 1, "top_p": 0.8, "seed": 6},
		{"prompt": "One day, a little dog", "max_tokens": maxTokens, "temperature": 0.7, "seed": 8},
		// logprobs need the row on the host: picked there, with the same draws
		{"prompt": "Tom had a red ball", "max_tokens": maxTokens, "temperature": 0.8, "seed": 9, "logprobs": 2},
	}
	want := make([]string, len(bodies))
	for i, b := range bodies {
		want[i] = reading.complete(t, "/v1/completions", b).Choices[0].Text
	}
	var wg sync.WaitGroup
	got := make([]string, len(bodies))
	for i, b := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = picking.complete(t, "/v1/completions", b).Choices[0].Text
		}()
	}
	// Hold the first step until every request is admitted or queued, so
	// that they run as batches of mixed rows.
	<-entered
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if int(picking.metrics(t)["acttail_active_sequences"])+picking.s.queue.len() == len(bodies) {
			break
		}
	}
	release()
	wg.Wait()
	for i := range bodies {
		if got[i] != want[i] {
			t.Errorf("request %v: picked %q, read %q", bodies[i], got[i], want[i])
		}
	}
	// Each prompt's logits are read once; after that only the top-p rows.
	if hp.Picks < 3 || hp.Rows <= len(bodies) {
		t.Errorf("%d rows picked and %d logits rows read: want picks, and reads past the %d prompts'", hp.Picks, hp.Rows, len(bodies))
	}
	t.Logf("%d rows picked, %d logits rows read", hp.Picks, hp.Rows)
}

// holdScheduler makes the scheduler wait before each decode step until
// release is called; entered gets a token each time it starts waiting.
func holdScheduler(cfg *Config) (entered chan struct{}, release func()) {
	hold := make(chan struct{})
	entered = make(chan struct{}, 1)
	cfg.beforeStep = func() {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-hold
	}
	var once sync.Once
	return entered, func() { once.Do(func() { close(hold) }) }
}

// With one slot and a queue of one, a third request is refused with 429
// while the first runs and the second waits; both then finish.
func TestQueueFull(t *testing.T) {
	cfg := Config{MaxBatch: 1, Queue: 1}
	entered, release := holdScheduler(&cfg)
	f := start(t, cfg, false)
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := map[string]any{"prompt": storyPrompt, "max_tokens": 5, "temperature": 0}
	done := make(chan error, 2)
	go func() {
		_, err := f.stream(t, ctx, "/v1/completions", body)
		done <- err
	}()
	<-entered // the first request holds the slot
	go func() {
		status, b := f.post(t, ctx, "/v1/completions", body)
		if status != http.StatusOK {
			done <- fmt.Errorf("queued request: %d %s", status, b)
			return
		}
		done <- nil
	}()
	for f.s.queue.len() != 1 {
		time.Sleep(time.Millisecond)
	}
	resp := f.do(t, ctx, http.MethodPost, "/v1/completions", body)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	checkError(t, "queue full", resp.StatusCode, b, http.StatusTooManyRequests, "queue_full")
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("429 with Retry-After %q", ra)
	}
	release()
	for range 2 {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}

// A client that goes away frees its slot at once.
func TestDisconnectFreesSlot(t *testing.T) {
	cfg := Config{}
	cfg.beforeStep = func() { time.Sleep(2 * time.Millisecond) }
	f := start(t, cfg, false)
	ctx, cancel := context.WithCancel(context.Background())
	resp := f.do(t, ctx, http.MethodPost, "/v1/completions",
		map[string]any{"prompt": storyPrompt, "max_tokens": 400, "temperature": 1, "seed": 1, "stream": true})
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "data: ") {
		t.Fatalf("first line %q, %v", line, err)
	}
	f.waitMetric(t, "acttail_active_sequences", func(v float64) bool { return v == 1 })
	cancel()
	resp.Body.Close()
	f.waitMetric(t, "acttail_active_sequences", func(v float64) bool { return v == 0 })
	f.waitMetric(t, `acttail_requests_total{model="dense",status="499"}`, func(v float64) bool { return v == 1 })
	// 400 tokens at ≥ 2 ms a step take ≥ 0.8 s; the slot was freed long before.
	if n := f.metrics(t)["acttail_tokens_generated_total"]; n >= 400 {
		t.Errorf("%g tokens generated: the sequence ran to the end", n)
	}
}

// checkError checks an error reply's status, OpenAI shape and code.
func checkError(t *testing.T, name string, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var e map[string]map[string]any
	if err := json.Unmarshal(body, &e); err != nil {
		t.Errorf("%s: body %q: %v", name, body, err)
		return
	}
	inner := e["error"]
	msg, _ := inner["message"].(string)
	typ, _ := inner["type"].(string)
	_, hasParam := inner["param"]
	code, hasCode := inner["code"]
	if status != wantStatus || msg == "" || typ == "" || !hasParam || !hasCode || (wantCode != "" && code != wantCode) {
		t.Errorf("%s: status %d %s; want %d with code %q", name, status, body, wantStatus, wantCode)
	}
}

// Bad requests get the right status and OpenAI's error JSON; the API key
// is enforced on /v1/ only.
func TestBadInput(t *testing.T) {
	f := start(t, Config{APIKey: "sekret", MaxBody: 2048, MaxTokensLimit: 100, Context: 64}, false)
	long := strings.Repeat("the cat sat on the mat. ", 20)
	ok := `{"prompt":"Hi","max_tokens":2}`
	cases := []struct {
		name, method, path, body, key string
		status                        int
		code                          string
	}{
		{"malformed JSON", "POST", "/v1/completions", `{"prompt": "Hi",`, "sekret", 400, "invalid_json"},
		{"trailing data", "POST", "/v1/completions", ok + ` {}`, "sekret", 400, "invalid_json"},
		{"wrong type", "POST", "/v1/completions", `{"prompt": "Hi", "max_tokens": "many"}`, "sekret", 400, "invalid_type"},
		{"max_tokens 5.5", "POST", "/v1/completions", `{"prompt": "Hi", "max_tokens": 5.5}`, "sekret", 400, "invalid_type"},
		{"stream a string", "POST", "/v1/completions", `{"prompt": "Hi", "stream": "yes"}`, "sekret", 400, "invalid_type"},
		{"not an object", "POST", "/v1/completions", `["Hi"]`, "sekret", 400, "invalid_json"},
		{"trailing garbage", "POST", "/v1/completions", ok + ` }`, "sekret", 400, "invalid_json"},
		{"logprobs 6", "POST", "/v1/completions", `{"prompt":"Hi","logprobs":6}`, "sekret", 400, "invalid_value"},
		{"logprobs true", "POST", "/v1/completions", `{"prompt":"Hi","logprobs":true}`, "sekret", 400, "invalid_type"},
		{"top_logprobs on completions", "POST", "/v1/completions", `{"prompt":"Hi","top_logprobs":2}`, "sekret", 400, "invalid_value"},
		{"chat logprobs 3", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"logprobs":3}`, "sekret", 400, "invalid_type"},
		{"chat top_logprobs alone", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"top_logprobs":3}`, "sekret", 400, "invalid_value"},
		{"chat top_logprobs 21", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"logprobs":true,"top_logprobs":21}`, "sekret", 400, "invalid_value"},
		{"prompt and max_tokens past the context", "POST", "/v1/completions", `{"prompt":"the cat sat on the mat.","max_tokens":60}`, "sekret", 400, "context_length_exceeded"},
		{"unknown model", "POST", "/v1/completions", `{"model":"gpt-9","prompt":"Hi"}`, "sekret", 404, "model_not_found"},
		{"unknown model chat", "POST", "/v1/chat/completions", `{"model":"gpt-9","messages":[{"role":"user","content":"Hi"}]}`, "sekret", 404, "model_not_found"},
		{"prompt too long", "POST", "/v1/completions", `{"prompt":"` + long + `"}`, "sekret", 400, "context_length_exceeded"},
		{"max_tokens 0", "POST", "/v1/completions", `{"prompt":"Hi","max_tokens":0}`, "sekret", 400, ""},
		{"max_tokens negative", "POST", "/v1/completions", `{"prompt":"Hi","max_tokens":-3}`, "sekret", 400, ""},
		{"max_tokens over limit", "POST", "/v1/completions", `{"prompt":"Hi","max_tokens":101}`, "sekret", 400, ""},
		{"temperature", "POST", "/v1/completions", `{"prompt":"Hi","temperature":2.5}`, "sekret", 400, ""},
		{"top_p 0", "POST", "/v1/completions", `{"prompt":"Hi","top_p":0}`, "sekret", 400, ""},
		{"n 2", "POST", "/v1/completions", `{"prompt":"Hi","n":2}`, "sekret", 400, ""},
		{"stop number", "POST", "/v1/completions", `{"prompt":"Hi","stop":3}`, "sekret", 400, ""},
		{"two prompts", "POST", "/v1/completions", `{"prompt":["a","b"]}`, "sekret", 400, ""},
		{"no prompt", "POST", "/v1/completions", `{"max_tokens":2}`, "sekret", 400, ""},
		{"no messages", "POST", "/v1/chat/completions", `{"max_tokens":2}`, "sekret", 400, ""},
		{"bad role", "POST", "/v1/chat/completions", `{"messages":[{"role":"wizard","content":"Hi"}]}`, "sekret", 400, ""},
		{"image part", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, "sekret", 400, ""},
		{"body too big", "POST", "/v1/completions", `{"prompt":"` + strings.Repeat("a", 3000) + `"}`, "sekret", 413, "request_too_large"},
		{"GET completions", "GET", "/v1/completions", "", "sekret", 405, "method_not_allowed"},
		{"POST models", "POST", "/v1/models", "{}", "sekret", 405, "method_not_allowed"},
		{"no key", "POST", "/v1/completions", ok, "", 401, "invalid_api_key"},
		{"wrong key", "POST", "/v1/completions", ok, "guess", 401, "invalid_api_key"},
		{"key without scheme", "POST", "/v1/completions", ok, "=sekret", 401, "invalid_api_key"},
		{"basic scheme", "POST", "/v1/completions", ok, "=Basic sekret", 401, "invalid_api_key"},
		{"lower-case bearer", "POST", "/v1/completions", ok, "=bearer sekret", 200, ""},
		{"upper-case bearer, two spaces", "POST", "/v1/completions", ok, "=BEARER  sekret", 200, ""},
		{"no key models", "GET", "/v1/models", "", "", 401, "invalid_api_key"},
		{"unknown path", "GET", "/v2/everything", "", "sekret", 404, "not_found"},
		{"unknown model get", "GET", "/v1/models/gpt-9", "", "sekret", 404, "model_not_found"},
		{"good", "POST", "/v1/completions", ok, "sekret", 200, ""},
		{"good chat", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"Hi"}],"max_tokens":2}`, "sekret", 200, ""},
		{"models", "GET", "/v1/models/dense", "", "sekret", 200, ""},
		{"healthz without key", "GET", "/healthz", "", "", 200, ""},
		{"metrics without key", "GET", "/metrics", "", "", 200, ""},
	}
	for _, tc := range cases {
		req, err := http.NewRequest(tc.method, f.ts.URL+tc.path, strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		if raw, ok := strings.CutPrefix(tc.key, "="); ok {
			req.Header.Set("Authorization", raw)
		} else if tc.key != "" {
			req.Header.Set("Authorization", "Bearer "+tc.key)
		}
		resp, err := f.ts.Client().Do(req)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if tc.status == 200 {
			if resp.StatusCode != 200 {
				t.Errorf("%s: status %d: %s", tc.name, resp.StatusCode, b)
			}
			continue
		}
		checkError(t, tc.name, resp.StatusCode, b, tc.status, tc.code)
		if tc.status == 405 && resp.Header.Get("Allow") == "" {
			t.Errorf("%s: no Allow header", tc.name)
		}
	}
	m := f.metrics(t)
	if m[`acttail_requests_total{model="none",status="401"}`] != 4 || m[`acttail_requests_total{model="dense",status="400"}`] == 0 {
		t.Errorf("request counters: %v", m)
	}
}

// Run over a real listener: cancelling its context lets a running stream
// finish while the listener stays open, answering new requests and
// /healthz with 503 and Retry-After, then returns.
func TestRunFinishesRequests(t *testing.T) {
	cfg := Config{}
	cfg.beforeStep = func() { time.Sleep(time.Millisecond) }
	f := start(t, cfg, false)
	want := f.greedy(t, storyPrompt, 100, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	defer stop()
	ran := make(chan error, 1)
	go func() { ran <- f.s.Run(runCtx, ln, 10*time.Second) }()
	f.url = "http://" + ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := f.do(t, ctx, http.MethodPost, "/v1/completions", map[string]any{"prompt": storyPrompt, "max_tokens": 100, "temperature": 0, "stream": true})
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	first, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	stop()
	for !f.s.queue.isClosed() {
		time.Sleep(time.Millisecond)
	}
	for _, path := range []string{"/v1/completions", "/healthz"} {
		method, body := http.MethodPost, any(map[string]any{"prompt": "Hi"})
		if path == "/healthz" {
			method, body = http.MethodGet, nil
		}
		r := f.do(t, ctx, method, path, body) // through the listener, still open
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
			t.Errorf("%s during shutdown: %d, Retry-After %q: %s", path, r.StatusCode, r.Header.Get("Retry-After"), b)
		}
	}
	s, err := readStream(io.MultiReader(strings.NewReader(first), br))
	if err != nil || s.text != want {
		t.Fatalf("stream across shutdown: %q, %v; want %q", s.text, err, want)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatal(err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return")
	}
	if _, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		t.Error("the listener is still open after Run returned")
	}
}

// When the grace runs out, every request still in flight gets an answer:
// a running stream a terminal error event, queued requests 503.
func TestGraceExpiry(t *testing.T) {
	cfg := Config{MaxBatch: 2, Queue: 4}
	entered, release := holdScheduler(&cfg)
	defer release()
	f := start(t, cfg, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- f.s.Run(runCtx, ln, 200*time.Millisecond) }()
	f.url = "http://" + ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := map[string]any{"prompt": storyPrompt, "max_tokens": 50, "temperature": 0}
	stream := make(chan error, 1)
	go func() {
		_, err := f.stream(t, ctx, "/v1/completions", map[string]any{"prompt": storyPrompt, "max_tokens": 50, "stream": true})
		stream <- err
	}()
	<-entered // the stream runs (its first token sent), the scheduler held
	statuses := make(chan int, 3)
	for range 3 { // queued: the held scheduler admits no more
		go func() {
			status, _ := f.post(t, ctx, "/v1/completions", body)
			statuses <- status
		}()
	}
	for f.s.queue.len() != 3 {
		time.Sleep(time.Millisecond)
	}
	stop()
	<-f.s.abort.Done() // the grace ran out; let the scheduler see the cancellations
	release()
	if err := <-ran; err != context.DeadlineExceeded {
		t.Errorf("Run: %v, want the grace's deadline", err)
	}
	if err := <-stream; err == nil || !strings.Contains(err.Error(), "shutting_down") {
		t.Errorf("stream: %v, want an error event", err)
	}
	for range 3 {
		if status := <-statuses; status != http.StatusServiceUnavailable {
			t.Errorf("request in flight: status %d, want 503", status)
		}
	}
}

// A body that stops arriving is answered 408 after BodyTimeout; a
// connection over MaxConns gets 503 at once; a stream whose client stops
// taking writes is dropped and its slot freed.
func TestSlowAndTooManyClients(t *testing.T) {
	f := start(t, Config{BodyTimeout: 200 * time.Millisecond, MaxConns: 2}, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go f.s.Serve(ln)
	addr := ln.Addr().String()
	half := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
		return c
	}
	a, b := half(), half()
	defer a.Close()
	defer b.Close()
	f.waitMetric(t, "acttail_http_connections", func(v float64) bool { return v == 2 })
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("third connection: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	c.Close()
	checkError(t, "over MaxConns", resp.StatusCode, body, http.StatusServiceUnavailable, "too_many_connections")
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 over MaxConns without Retry-After")
	}
	start := time.Now()
	for _, c := range []net.Conn{a, b} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("half-sent body: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		checkError(t, "half-sent body", resp.StatusCode, body, http.StatusRequestTimeout, "request_timeout")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("half-sent bodies answered after %v", d)
	}
	f.waitMetric(t, "acttail_http_connections", func(v float64) bool { return v == 0 })
	if m := f.metrics(t); m["acttail_http_connections_refused_total"] != 1 {
		t.Errorf("refused connections: %v", m["acttail_http_connections_refused_total"])
	}
}

// failingWriter is a ResponseWriter whose writes fail after the first n.
type failingWriter struct {
	header http.Header
	n      int
}

func (w *failingWriter) Header() http.Header { return w.header }
func (w *failingWriter) WriteHeader(int)     {}
func (w *failingWriter) Write(b []byte) (int, error) {
	if w.n == 0 {
		return 0, errors.New("client gone")
	}
	w.n--
	return len(b), nil
}

// A stream whose writes fail (a client that stopped reading past
// WriteTimeout) ends at once, frees its slot and counts as 499.
func TestFailedWriteDropsJob(t *testing.T) {
	cfg := Config{}
	cfg.beforeStep = func() { time.Sleep(time.Millisecond) }
	f := start(t, cfg, false)
	req := httptest.NewRequest(http.MethodPost, "/v1/completions",
		strings.NewReader(`{"prompt":"Once upon a time","max_tokens":400,"temperature":1,"seed":3,"stream":true}`))
	done := make(chan struct{})
	go func() {
		f.s.Handler().ServeHTTP(&failingWriter{header: http.Header{}, n: 3}, req)
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the handler kept writing to a failed client")
	}
	f.waitMetric(t, "acttail_active_sequences", func(v float64) bool { return v == 0 })
	f.waitMetric(t, `acttail_requests_total{model="dense",status="499"}`, func(v float64) bool { return v == 1 })
	if n := f.metrics(t)["acttail_tokens_generated_total"]; n >= 400 {
		t.Errorf("%g tokens generated for a client gone after three writes", n)
	}
}

// addrListener is a listener that reports another address.
type addrListener struct {
	net.Listener
	addr net.Addr
}

func (l addrListener) Addr() net.Addr { return l.addr }

// Serving beyond loopback without an API key is logged as a warning.
func TestBindWarning(t *testing.T) {
	for _, tc := range []struct {
		ip   string
		key  string
		warn bool
	}{{"127.0.0.1", "", false}, {"::1", "", false}, {"0.0.0.0", "", true}, {"192.0.2.7", "", true}, {"0.0.0.0", "k", false}} {
		var log bytes.Buffer
		m, tok := stories(t)
		e, err := engine.Load(cpu.New(1), m)
		if err != nil {
			t.Fatal(err)
		}
		s, err := New(Config{Model: e, Tokenizer: tok, APIKey: tc.key, Log: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- s.Serve(addrListener{ln, &net.TCPAddr{IP: net.ParseIP(tc.ip), Port: 8080}}) }()
		for started := false; !started; time.Sleep(time.Millisecond) {
			s.mu.Lock()
			started = s.http != nil
			s.mu.Unlock()
		}
		s.Shutdown(context.Background())
		<-served
		e.Backend.Close()
		if got := strings.Contains(log.String(), "without an API key"); got != tc.warn {
			t.Errorf("%s, key %q: warned %v, want %v: %s", tc.ip, tc.key, got, tc.warn, log.String())
		}
	}
}

// A real ecosystem client, the openai npm package, streams a completion,
// reads typed errors and logprobs of completions and chat, streamed too.
func TestOpenAINodeClient(t *testing.T) {
	if testing.Short() {
		t.Skip("installs an npm package")
	}
	node, errNode := exec.LookPath("node")
	npm, errNpm := exec.LookPath("npm")
	if errNode != nil || errNpm != nil {
		t.Skip("node or npm not installed")
	}
	f := start(t, Config{APIKey: "sekret"}, false)
	want := f.greedy(t, storyPrompt, 40, nil)
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	install := exec.CommandContext(ctx, npm, "install", "openai@4", "--no-audit", "--no-fund", "--silent")
	install.Dir = dir
	install.Env = append(os.Environ(), "npm_config_update_notifier=false")
	if out, err := install.CombinedOutput(); err != nil {
		t.Skipf("npm install openai@4 failed (no registry?): %v\n%s", err, out)
	}
	script := `const OpenAI = require("openai");
(async () => {
  const client = new OpenAI({ baseURL: process.argv[2], apiKey: "sekret", maxRetries: 0 });
  const stream = await client.completions.create({ model: "dense", prompt: process.argv[3], max_tokens: 40, temperature: 0, stream: true });
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0].text;
  const chat = await client.chat.completions.create({ model: "dense", messages: [{ role: "user", content: "Hi" }], max_tokens: 5 });
  if (chat.choices[0].message.role !== "assistant") throw new Error("chat role " + chat.choices[0].message.role);
  let failed = "";
  try { await client.completions.create({ model: "nope", prompt: "x" }); } catch (e) { failed = e.status + " " + e.code; }
  let typed = "";
  try { await client.completions.create({ model: "dense", prompt: "x", max_tokens: 5.5 }); } catch (e) { typed = e.status + " " + e.code + " " + e.param; }
  const lp = await client.completions.create({ model: "dense", prompt: process.argv[3], max_tokens: 5, temperature: 0, logprobs: 2 });
  const l = lp.choices[0].logprobs;
  if (l.tokens.join("") !== lp.choices[0].text || l.token_logprobs.length !== 5 || Object.keys(l.top_logprobs[0]).length < 2) throw new Error("completion logprobs " + JSON.stringify(l));
  const cl = await client.chat.completions.create({ model: "dense", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3 });
  const content = cl.choices[0].logprobs.content;
  if (content.length < 1 || content[0].top_logprobs.length !== 3 || typeof content[0].logprob !== "number") throw new Error("chat logprobs " + JSON.stringify(cl.choices[0].logprobs));
  const cs = await client.chat.completions.create({ model: "dense", messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, logprobs: true, top_logprobs: 3, stream: true });
  let streamed = [];
  for await (const chunk of cs) if (chunk.choices[0]?.logprobs) streamed = streamed.concat(chunk.choices[0].logprobs.content);
  if (JSON.stringify(streamed) !== JSON.stringify(content)) throw new Error("streamed chat logprobs " + JSON.stringify(streamed));
  process.stdout.write(JSON.stringify({ text, failed, typed }));
})().catch((e) => { console.error(e); process.exit(1); });
`
	if err := os.WriteFile(filepath.Join(dir, "run.js"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, node, "run.js", f.ts.URL+"/v1", storyPrompt)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node client: %v\n%s", err, stderr.String())
	}
	var got struct{ Text, Failed, Typed string }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	if got.Text != want || got.Failed != "404 model_not_found" || got.Typed != "400 invalid_type max_tokens" {
		t.Fatalf("node client: text %q, errors %q and %q; want %q, 404 model_not_found, 400 invalid_type max_tokens", got.Text, got.Failed, got.Typed, want)
	}
}

// A request without max_tokens gets what the context leaves after its
// prompt; one whose prompt leaves nothing is refused before it runs.
func TestContextFit(t *testing.T) {
	f := start(t, Config{Context: 40}, false)
	prompt := strings.Repeat("the cat sat. ", 5)
	n := len(f.tok.Encode(prompt, true))
	if n >= 40 {
		t.Fatalf("prompt of %d tokens", n)
	}
	r := f.complete(t, "/v1/completions", map[string]any{"prompt": prompt, "temperature": 1, "seed": 2})
	if r.Usage.CompletionTokens > 40-n {
		t.Errorf("%d completion tokens after a prompt of %d in a context of 40", r.Usage.CompletionTokens, n)
	}
	full := strings.Repeat("the cat sat. ", 20)
	status, b := f.post(t, context.Background(), "/v1/completions", map[string]any{"prompt": full})
	checkError(t, "prompt fills the context", status, b, http.StatusBadRequest, "context_length_exceeded")
}
