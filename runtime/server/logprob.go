package server

import (
	"container/heap"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// tokenLogprob is a generated token's log-probability under the model (the
// log-softmax of the raw logits, before temperature or truncation, as
// OpenAI and vLLM report it) and the most likely tokens at its position.
type tokenLogprob struct {
	logprob float32
	top     []idLogprob // most likely first
}

type idLogprob struct {
	id      int
	logprob float32
}

// logprobFloor stands in for a log-probability JSON cannot hold (−Inf, or
// NaN from a broken row), as OpenAI reports masked tokens.
const logprobFloor = -9999

// logprobsOf is the log-softmax of row at tok and its n largest entries:
// one pass for the normalizer and one through a heap of n.
func logprobsOf(row []float32, tok, n int) *tokenLogprob {
	maxv := math.Inf(-1)
	for _, v := range row {
		maxv = max(maxv, float64(v))
	}
	var sum float64
	for _, v := range row {
		sum += math.Exp(float64(v) - maxv)
	}
	norm := maxv + math.Log(sum)
	lp := func(i int) float32 {
		v := float64(row[i]) - norm
		if math.IsNaN(v) || v < logprobFloor {
			return logprobFloor
		}
		return float32(v)
	}
	out := &tokenLogprob{logprob: lp(tok)}
	if n == 0 {
		return out
	}
	h := make(topHeap, 0, n+1)
	for i, v := range row {
		if len(h) < n {
			heap.Push(&h, idLogit{i, v})
		} else if v > h[0].logit {
			h[0] = idLogit{i, v}
			heap.Fix(&h, 0)
		}
	}
	out.top = make([]idLogprob, len(h))
	for k := len(h) - 1; k >= 0; k-- {
		e := heap.Pop(&h).(idLogit)
		out.top[k] = idLogprob{e.id, lp(e.id)}
	}
	return out
}

type idLogit struct {
	id    int
	logit float32
}

// topHeap is a min-heap by logit (ties: the higher id is smaller), so its
// root is the entry the next larger logit displaces.
type topHeap []idLogit

func (h topHeap) Len() int { return len(h) }
func (h topHeap) Less(i, j int) bool {
	return h[i].logit < h[j].logit || h[i].logit == h[j].logit && h[i].id > h[j].id
}
func (h topHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *topHeap) Push(x any)   { *h = append(*h, x.(idLogit)) }
func (h *topHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// tokenText is how a token is named in logprobs: its text when that is
// valid UTF-8, else OpenAI's "bytes:\xNN..." spelling.
func tokenText(b []byte) string {
	if utf8.Valid(b) {
		return string(b)
	}
	var s strings.Builder
	s.WriteString("bytes:")
	for _, c := range b {
		fmt.Fprintf(&s, "\\x%02x", c)
	}
	return s.String()
}

// completionLogprobs is a completions choice's logprobs, OpenAI's legacy
// shape: parallel lists, one entry a token. TextOffset is each token's byte
// offset in the choice's text; TopLogprobs holds the requested number of
// alternatives and the chosen token.
type completionLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

// chatLogprobs is a chat choice's logprobs.
type chatLogprobs struct {
	Content []chatLogprob `json:"content"`
	Refusal []chatLogprob `json:"refusal"` // always null: no refusals here
}

type chatLogprob struct {
	Token       string           `json:"token"`
	Logprob     float32          `json:"logprob"`
	Bytes       []int            `json:"bytes"`
	TopLogprobs []chatTopLogprob `json:"top_logprobs"`
}

// chatTopLogprob is one alternative of a chat token.
type chatTopLogprob struct {
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// logprobEntry is one generated token's logprobs waiting to be sent with
// the text it decoded to: start and end are its bytes in the choice's text.
type logprobEntry struct {
	id         int
	lp         *tokenLogprob
	start, end int
}

// logprobsJSON renders entries in the shape of the endpoint (nil: none).
func logprobsJSON(tok *tokenizer.Tokenizer, chat bool, entries []logprobEntry) any {
	if chat {
		out := &chatLogprobs{Content: []chatLogprob{}}
		for _, e := range entries {
			b := tok.TokenBytes(e.id)
			c := chatLogprob{Token: tokenText(b), Logprob: e.lp.logprob, Bytes: byteInts(b), TopLogprobs: []chatTopLogprob{}}
			for _, t := range e.lp.top {
				tb := tok.TokenBytes(t.id)
				c.TopLogprobs = append(c.TopLogprobs, chatTopLogprob{Token: tokenText(tb), Logprob: t.logprob, Bytes: byteInts(tb)})
			}
			out.Content = append(out.Content, c)
		}
		return out
	}
	out := &completionLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, e := range entries {
		name := tokenText(tok.TokenBytes(e.id))
		top := map[string]float32{}
		for _, t := range e.lp.top {
			top[tokenText(tok.TokenBytes(t.id))] = t.logprob
		}
		top[name] = e.lp.logprob // last: the chosen token wins a name two tokens share
		out.Tokens = append(out.Tokens, name)
		out.TokenLogprobs = append(out.TokenLogprobs, e.lp.logprob)
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, e.start)
	}
	return out
}

// byteInts is b as JSON numbers (a []byte would marshal as base64).
func byteInts(b []byte) []int {
	out := make([]int, len(b))
	for i, c := range b {
		out[i] = int(c)
	}
	return out
}
