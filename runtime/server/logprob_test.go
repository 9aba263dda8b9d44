package server

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
)

// logprobsOf against a float64 log-softmax and a full sort.
func TestLogprobsOf(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 5, 20, 300} {
		row := make([]float32, 300)
		for i := range row {
			row[i] = float32(r.NormFloat64() * 4)
		}
		row[7], row[8] = row[9], row[9] // ties: the lower id first
		row[11] = float32(math.Inf(-1))
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v))
		}
		tok := r.IntN(len(row))
		got := logprobsOf(row, tok, n)
		if want := float64(row[tok]) - math.Log(sum); math.Abs(float64(got.logprob)-want) > 1e-5 {
			t.Fatalf("n=%d: logprob %g, want %g", n, got.logprob, want)
		}
		ids := make([]int, len(row))
		for i := range ids {
			ids[i] = i
		}
		sort.SliceStable(ids, func(a, b int) bool { return row[ids[a]] > row[ids[b]] })
		if len(got.top) != n {
			t.Fatalf("n=%d: %d alternatives", n, len(got.top))
		}
		for k, e := range got.top {
			want := float32(logprobFloor)
			if e.id != 11 {
				want = float32(float64(row[e.id]) - math.Log(sum))
			}
			if e.id != ids[k] || math.Abs(float64(e.logprob-want)) > 1e-5 {
				t.Fatalf("n=%d: alternative %d is %+v, want id %d", n, k, e, ids[k])
			}
		}
	}
	nan := []float32{1, float32(math.NaN()), 2}
	if got := logprobsOf(nan, 0, 3); got.logprob != logprobFloor {
		t.Fatalf("a NaN row gave %+v", got)
	}
}

type completionLP struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// Completions report each token's log-probability under the model: its
// text, the log-softmax of the prompt's logits for the first, the greedy
// token as the top alternative, the same numbers streamed as not.
func TestCompletionLogprobs(t *testing.T) {
	f := start(t, Config{}, false)
	ids := f.tok.Encode(storyPrompt, true)
	e, err := engine.Load(cpu.New(1), f.m)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Backend.Close()
	logits := make([]float32, f.m.Config.VocabSize)
	if err := e.NewState(0, 64).Forward(ids, logits, false); err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v))
	}
	first := float64(slices.Max(logits)) - math.Log(sum)

	body := map[string]any{"prompt": storyPrompt, "max_tokens": 20, "temperature": 0, "logprobs": 3}
	var r struct {
		Choices []struct {
			Text     string       `json:"text"`
			Logprobs completionLP `json:"logprobs"`
		} `json:"choices"`
	}
	f.decode(t, "/v1/completions", body, &r)
	text, lp := r.Choices[0].Text, r.Choices[0].Logprobs
	if len(lp.Tokens) != 20 || strings.Join(lp.Tokens, "") != text {
		t.Fatalf("tokens %q for text %q", lp.Tokens, text)
	}
	if math.Abs(float64(lp.TokenLogprobs[0])-first) > 1e-4 {
		t.Errorf("first token's logprob %g, log-softmax of the prompt's logits %g", lp.TokenLogprobs[0], first)
	}
	off := 0
	for i, tok := range lp.Tokens {
		top := lp.TopLogprobs[i]
		if len(top) < 3 || len(top) > 4 || top[tok] != lp.TokenLogprobs[i] || lp.TextOffset[i] != off {
			t.Fatalf("token %d %q: logprob %g, top %v, offset %d (want %d)", i, tok, lp.TokenLogprobs[i], top, lp.TextOffset[i], off)
		}
		for _, v := range top {
			if v > lp.TokenLogprobs[i] || v > 0 {
				t.Fatalf("token %d %q: greedy, but %v has a likelier one", i, tok, top)
			}
		}
		off += len(tok)
	}

	body["stream"] = true
	resp := f.do(t, context.Background(), http.MethodPost, "/v1/completions", body)
	defer resp.Body.Close()
	var streamed completionLP
	var stext string
	for _, c := range readChunks(t, resp) {
		ch := c.Choices[0]
		stext += ch.Text
		if ch.Logprobs != nil {
			streamed.Tokens = append(streamed.Tokens, ch.Logprobs.Tokens...)
			streamed.TokenLogprobs = append(streamed.TokenLogprobs, ch.Logprobs.TokenLogprobs...)
			streamed.TextOffset = append(streamed.TextOffset, ch.Logprobs.TextOffset...)
		}
	}
	if stext != text || !slices.Equal(streamed.Tokens, lp.Tokens) || !slices.Equal(streamed.TokenLogprobs, lp.TokenLogprobs) ||
		!slices.Equal(streamed.TextOffset, lp.TextOffset) {
		t.Fatalf("streamed %q %v %v, replied %q %v %v", stext, streamed.Tokens, streamed.TokenLogprobs, text, lp.Tokens, lp.TokenLogprobs)
	}

	// A stop string: the tokens inside it are not reported, the one it
	// begins in is.
	stop := text[10:14]
	cut := text[:strings.Index(text, stop)]
	body = map[string]any{"prompt": storyPrompt, "max_tokens": 20, "temperature": 0, "logprobs": 0, "stop": stop}
	r.Choices = nil // json would merge into the old maps
	f.decode(t, "/v1/completions", body, &r)
	lp = r.Choices[0].Logprobs
	joined := strings.Join(lp.Tokens, "")
	if r.Choices[0].Text != cut || !strings.HasPrefix(joined, cut) || len(joined) >= len(cut)+len(stop) || lp.TextOffset[len(lp.TextOffset)-1] >= len(cut) {
		t.Fatalf("stop %q: text %q, tokens %q", stop, r.Choices[0].Text, lp.Tokens)
	}
	if len(lp.TopLogprobs[0]) != 1 {
		t.Errorf("logprobs 0: top %v, want the chosen token only", lp.TopLogprobs[0])
	}
}

// Chat reports logprobs in its own shape: token, logprob, bytes and
// top_logprobs, streamed and not.
func TestChatLogprobs(t *testing.T) {
	f := start(t, Config{}, false)
	body := map[string]any{"messages": []map[string]any{{"role": "user", "content": "Tell me a story."}}, "max_tokens": 12,
		"temperature": 0, "logprobs": true, "top_logprobs": 2}
	var r struct {
		Choices []struct {
			Message  struct{ Content string } `json:"message"`
			Logprobs struct {
				Content []chatLogprob `json:"content"`
			} `json:"logprobs"`
		} `json:"choices"`
	}
	f.decode(t, "/v1/chat/completions", body, &r)
	c := r.Choices[0]
	var joined []byte
	for _, e := range c.Logprobs.Content {
		for _, b := range e.Bytes {
			joined = append(joined, byte(b))
		}
		if len(e.TopLogprobs) != 2 || e.TopLogprobs[0].Logprob != e.Logprob || e.TopLogprobs[0].Token != e.Token || e.TopLogprobs[1].Logprob > e.Logprob {
			t.Fatalf("entry %+v: greedy, want itself first of 2", e)
		}
	}
	if string(joined) != c.Message.Content || len(c.Logprobs.Content) != 12 {
		t.Fatalf("bytes %q for content %q", joined, c.Message.Content)
	}
	body["stream"] = true
	resp := f.do(t, context.Background(), http.MethodPost, "/v1/chat/completions", body)
	defer resp.Body.Close()
	var n int
	for _, ch := range readChunks(t, resp) {
		if lp := ch.Choices[0].ChatLogprobs; lp != nil {
			for _, e := range lp.Content {
				if e.Logprob != c.Logprobs.Content[n].Logprob || e.Token != c.Logprobs.Content[n].Token {
					t.Fatalf("streamed entry %d %+v, replied %+v", n, e, c.Logprobs.Content[n])
				}
				n++
			}
		}
	}
	if n != 12 {
		t.Fatalf("%d entries streamed", n)
	}
}

// decode posts body and decodes the 200 reply into v.
func (f *fixture) decode(t *testing.T, path string, body map[string]any, v any) {
	t.Helper()
	status, b := f.post(t, context.Background(), path, body)
	if status != http.StatusOK {
		t.Fatalf("%s: status %d: %s", path, status, b)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %s: %v", path, b, err)
	}
}

// lpChunk is a stream chunk with its logprobs in either endpoint's shape.
type lpChunk struct {
	Choices []struct {
		Text         string          `json:"text"`
		Raw          json.RawMessage `json:"logprobs"`
		Logprobs     *completionLP   `json:"-"`
		ChatLogprobs *chatLogprobs   `json:"-"`
	} `json:"choices"`
}

// readChunks reads a stream's chunks that have a choice, up to [DONE].
func readChunks(t *testing.T, resp *http.Response) []lpChunk {
	t.Helper()
	var out []lpChunk
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if data == "[DONE]" {
			return out
		}
		var c lpChunk
		if err := json.Unmarshal([]byte(data), &c); err != nil {
			t.Fatalf("chunk %s: %v", data, err)
		}
		if len(c.Choices) == 0 {
			continue
		}
		if raw := c.Choices[0].Raw; len(raw) > 0 && string(raw) != "null" {
			json.Unmarshal(raw, &c.Choices[0].Logprobs)
			json.Unmarshal(raw, &c.Choices[0].ChatLogprobs)
		}
		out = append(out, c)
	}
	t.Fatalf("stream ended without [DONE]: %v", sc.Err())
	return nil
}
