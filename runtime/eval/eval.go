// Package eval measures perplexity with sliding windows, the protocol of
// Hugging Face's perplexity guide and TEAL: windows of Ctx tokens start
// every Stride tokens, and each window scores only the tokens it adds, so
// every token after the first is scored exactly once with as much context
// as the window allows.
package eval

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/acttail/acttail-gpu/runtime/engine"
)

// Options control the windows.
type Options struct {
	Ctx    int // window length in tokens (0: the model's context)
	Stride int // tokens between window starts (0: Ctx/2)
	// Sparse says which tokens of each window run under the model's plan:
	// SparseAll, SparseSecondHalf (TEAL's protocol: the first half is a
	// dense prompt) or SparseNone. Ignored when no plan is applied.
	Sparse string
	// Progress, if set, is called after each window with tokens scored so
	// far and the total to score.
	Progress func(done, total int)
}

// Which tokens of a window are sparsified.
const (
	SparseAll        = "all"
	SparseSecondHalf = "second-half"
	SparseNone       = "none"
)

// Result is the summary of one run.
type Result struct {
	Perplexity   float64 `json:"perplexity"`
	MeanNLL      float64 `json:"mean_nll"`
	TokensScored int     `json:"tokens_scored"`
	TokensRun    int     `json:"tokens_run"` // forward passes, with overlap
	Windows      int     `json:"windows"`
	Ctx          int     `json:"ctx"`
	Stride       int     `json:"stride"`
	Seconds      float64 `json:"seconds"`
	TokensPerSec float64 `json:"tokens_per_sec"` // tokens run per second
}

// Window is one span of the token stream: tokens [Begin, End) run through
// the model, the last Score of them scored.
type Window struct{ Begin, End, Score int }

// Windows lays out the sliding windows over n tokens.
func Windows(n, ctx, stride int) []Window {
	var ws []Window
	prevEnd := 0
	for begin := 0; prevEnd < n; begin += stride {
		end := min(begin+ctx, n)
		score := end - prevEnd
		if begin == 0 {
			score-- // the first token has nothing to be predicted from
		}
		ws = append(ws, Window{begin, end, score})
		prevEnd = end
	}
	return ws
}

// Perplexity scores tokens with s's model. s is reset for every window.
func Perplexity(ctx context.Context, s *engine.State, tokens []int, o Options) (Result, error) {
	if o.Ctx <= 0 || o.Ctx > s.Context() {
		o.Ctx = s.Context()
	}
	if o.Stride <= 0 {
		o.Stride = max(1, o.Ctx/2)
	}
	if o.Stride > o.Ctx {
		return Result{}, fmt.Errorf("stride %d is longer than the window %d: tokens between windows would not be scored", o.Stride, o.Ctx)
	}
	switch o.Sparse {
	case "":
		o.Sparse = SparseSecondHalf
	case SparseAll, SparseSecondHalf, SparseNone:
	default:
		return Result{}, fmt.Errorf("sparse tokens %q: want %s, %s or %s", o.Sparse, SparseAll, SparseSecondHalf, SparseNone)
	}
	if len(tokens) < 2 {
		return Result{}, errors.New("perplexity needs at least two tokens of text")
	}
	ws := Windows(len(tokens), o.Ctx, o.Stride)
	total := 0
	for _, w := range ws {
		total += w.Score
	}
	vocab := s.Vocab()
	chunk := s.MaxRows()
	logits := make([]float32, chunk*vocab)
	start := time.Now()
	res := Result{Ctx: o.Ctx, Stride: o.Stride, Windows: len(ws)}
	var nll float64
	for _, w := range ws {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		s.Reset()
		switch o.Sparse {
		case SparseAll:
			s.SparseFrom = 0
		case SparseSecondHalf:
			s.SparseFrom = (w.End - w.Begin) / 2
		default:
			s.SparseFrom = math.MaxInt
		}
		firstScored := w.End - w.Score // index of the first scored token
		for at := w.Begin; at < w.End; at += chunk {
			n := min(chunk, w.End-at)
			if err := s.Forward(tokens[at:at+n], logits[:n*vocab], true); err != nil {
				return res, err
			}
			res.TokensRun += n
			// Row r predicts token at+r+1.
			for r := range n {
				t := at + r + 1
				if t < firstScored || t >= w.End {
					continue
				}
				nll += NLL(logits[r*vocab:(r+1)*vocab], tokens[t])
				res.TokensScored++
			}
		}
		if o.Progress != nil {
			o.Progress(res.TokensScored, total)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	res.MeanNLL = nll / float64(res.TokensScored)
	res.Perplexity = math.Exp(res.MeanNLL)
	if res.Seconds > 0 {
		res.TokensPerSec = float64(res.TokensRun) / res.Seconds
	}
	return res, nil
}

// NLL is −log softmax(logits)[target], computed stably in float64.
func NLL(logits []float32, target int) float64 {
	maxv := math.Inf(-1)
	for _, v := range logits {
		maxv = max(maxv, float64(v))
	}
	var sum float64
	for _, v := range logits {
		sum += math.Exp(float64(v) - maxv)
	}
	return math.Log(sum) + maxv - float64(logits[target])
}
