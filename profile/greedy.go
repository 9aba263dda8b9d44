package profile

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/eval"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

// GreedyOptions control the data-aware search.
type GreedyOptions struct {
	// Levels are the weighted sparsities to return allocations for.
	Levels []float64
	// Start is the weighted sparsity of the allocation the search begins
	// from, Seed that allocation per site (nil: uniform at Start; an
	// ActTail allocation at Start seeds the search with alpha).
	Start float64
	Seed  []float64 `json:"-"`
	// Step is how much one move raises one site's sparsity (default 0.05).
	Step float64
	// SMax caps every site (default 0.99).
	SMax float64
	// Refine is the most transfer rounds run at each level (default 4;
	// negative: none). A round measures, for every site, the loss change of
	// one Step up and one Step down, then moves sparsity from the site where
	// it costs most to the one where it costs least, keeping the weighted
	// mean, if that lowers the loss. It undoes the myopia of the greedy path.
	Refine int
	// Candidates, if set, returns more allocations to consider at a level
	// (an ActTail allocation, say): the search refines whichever of the
	// greedy path, uniform and these has the lowest calibration loss, so
	// its result is never worse on the calibration text than any of them.
	Candidates func(level float64) ([][]float64, error) `json:"-"`
	// Holdout, if set, are calibration tokens the search does not score
	// moves on: a refinement transfer is kept only if it also lowers the
	// loss on them, which guards against fitting the scored tokens.
	Holdout []int `json:"-"`
	// Progress, if set, hears each finished level.
	Progress func(level, loss float64) `json:"-"`
	// Bar, if set, goes from 0 to GreedyBarTotal over the search: its path
	// from Start to the last level and the refinement rounds at each level,
	// in proportion to their estimated cost.
	Bar *progress.Bar `json:"-"`
}

// GreedyBarTotal is the count of GreedyOptions.Bar at the last level.
const GreedyBarTotal = 1000

// Greedy searches budgets on calibration tokens: from the seed, it
// repeatedly raises the sparsity of the one site whose next Step costs
// the least increase of calibration loss per unit of weighted sparsity
// gained, until it has passed every level. The loss is the mean NLL of
// tokens with every token sparse in topk mode. Costs are re-measured
// lazily (a move whose stale cost is still the cheapest after re-measuring
// is taken; others go back in the queue), which keeps the number of
// forward passes per move small. When a move would cross a level, it is
// cut so the level is met exactly and the allocation recorded.
//
// The model must be loaded sparse; its budgets are restored afterwards.
func Greedy(ctx context.Context, s *engine.State, tokens []int, sites []plan.Site, o GreedyOptions) ([][]float64, error) {
	if len(o.Levels) == 0 {
		return nil, errors.New("greedy: no levels")
	}
	levels := append([]float64(nil), o.Levels...)
	sort.Float64s(levels)
	if o.Step <= 0 {
		o.Step = 0.05
	}
	if o.SMax <= 0 {
		o.SMax = 0.99
	}
	if !(o.Start >= 0 && o.Start <= levels[0]) || levels[len(levels)-1] >= o.SMax {
		return nil, fmt.Errorf("greedy: start %g and levels %v must satisfy 0 ≤ start ≤ levels < s_max %g", o.Start, levels, o.SMax)
	}
	cur := make([]float64, len(sites))
	if o.Seed != nil {
		if len(o.Seed) != len(sites) {
			return nil, fmt.Errorf("greedy: seed has %d sites, model %d", len(o.Seed), len(sites))
		}
		copy(cur, o.Seed)
	} else {
		for i := range cur {
			cur[i] = o.Start
		}
	}
	m := s.Model()
	prev := m.Sites()
	defer m.SetSites(prev)
	var total float64
	for _, st := range sites {
		total += float64(st.Params())
	}
	lossOn := func(sp []float64, toks []int) (float64, error) {
		bs := make([]backend.Site, len(sites))
		for i, st := range sites {
			bs[i] = backend.Site{ID: i, TopK: true, K: plan.KeepFor(sp[i], st.DIn)}
		}
		if err := m.SetSites(bs); err != nil {
			return 0, err
		}
		r, err := eval.Perplexity(ctx, s, toks, eval.Options{Ctx: s.Context(), Stride: s.Context(), Sparse: eval.SparseAll})
		return r.MeanNLL, err
	}
	loss := func(sp []float64) (float64, error) { return lossOn(sp, tokens) }
	// holdoutOK reports whether moving from old to cur keeps the held-out
	// loss from rising (always true without held-out tokens).
	holdoutOK := func(old, cur []float64) (bool, error) {
		if len(o.Holdout) < 2 {
			return true, nil
		}
		a, err := lossOn(old, o.Holdout)
		if err != nil {
			return false, err
		}
		b, err := lossOn(cur, o.Holdout)
		return b < a, err
	}
	uniform := func(lv float64) []float64 {
		u := make([]float64, len(sites))
		for i := range u {
			u[i] = lv
		}
		return u
	}
	base, err := loss(cur)
	if err != nil {
		return nil, err
	}
	mean := func() float64 {
		var num float64
		for i, st := range sites {
			num += float64(st.Params()) * cur[i]
		}
		return num / total
	}
	if o.Refine == 0 {
		o.Refine = 4
	}
	// The bar's share of the path and of the refinement rounds follows
	// their loss evaluations: about two a move, S(last-start)/Step moves,
	// and two a site a round.
	start, last := mean(), levels[len(levels)-1]
	rounds := float64(len(levels) * max(o.Refine, 0) * len(sites))
	refined := 0.0 // refinement rounds done, in sites
	pathShare := 1.0
	if rounds > 0 {
		moves := (last - start) / o.Step
		pathShare = moves / (moves + float64(len(levels)*max(o.Refine, 0)))
	}
	advance := func() {
		frac := 0.0
		if last > start {
			frac = pathShare * (mean() - start) / (last - start)
		}
		if rounds > 0 {
			frac += (1 - pathShare) * refined / rounds
		}
		o.Bar.Set(int64(math.Round(GreedyBarTotal * frac)))
	}
	// gain is the weighted sparsity one move of site i adds.
	step := func(i int) float64 { return math.Min(o.Step, o.SMax-cur[i]) }
	gain := func(i int) float64 { return step(i) * float64(sites[i].Params()) / total }
	measure := func(i int) (float64, error) {
		old := cur[i]
		cur[i] += step(i)
		l, err := loss(cur)
		cur[i] = old
		return (l - base) / gain(i), err
	}
	// refine runs transfer rounds at the current level (see Refine).
	refine := func(cur []float64, base float64) (float64, error) {
		for range o.Refine {
			up := make([]float64, len(sites))   // loss increase per unit gained
			down := make([]float64, len(sites)) // loss decrease per unit given back
			for i := range sites {
				old := cur[i]
				up[i], down[i] = math.Inf(1), math.Inf(-1)
				if d := math.Min(o.Step, o.SMax-old); d > 1e-12 {
					cur[i] = old + d
					l, err := loss(cur)
					if err != nil {
						return 0, err
					}
					up[i] = (l - base) / (d * float64(sites[i].Params()) / total)
				}
				if d := math.Min(o.Step, old); d > 1e-12 {
					cur[i] = old - d
					l, err := loss(cur)
					if err != nil {
						return 0, err
					}
					down[i] = (base - l) / (d * float64(sites[i].Params()) / total)
				}
				cur[i] = old
				refined++
				advance()
			}
			// Try the three most promising transfers; keep the first that helps.
			type pair struct {
				from, to int
				score    float64
			}
			var pairs []pair
			for i := range sites {
				for j := range sites {
					if i != j && !math.IsInf(down[i], 0) && !math.IsInf(up[j], 0) && down[i] > up[j] {
						pairs = append(pairs, pair{i, j, down[i] - up[j]})
					}
				}
			}
			sort.Slice(pairs, func(a, b int) bool { return pairs[a].score > pairs[b].score })
			improved := false
			for _, pr := range pairs[:min(3, len(pairs))] {
				// equal weighted amounts: P_from·d_from = P_to·d_to
				w := math.Min(math.Min(o.Step, cur[pr.from])*float64(sites[pr.from].Params()),
					math.Min(o.Step, o.SMax-cur[pr.to])*float64(sites[pr.to].Params()))
				df, dt := w/float64(sites[pr.from].Params()), w/float64(sites[pr.to].Params())
				old := slices.Clone(cur)
				cur[pr.from] -= df
				cur[pr.to] += dt
				l, err := loss(cur)
				if err != nil {
					return 0, err
				}
				if l < base {
					ok, err := holdoutOK(old, cur)
					if err != nil {
						return 0, err
					}
					if ok {
						base, improved = l, true
						break
					}
				}
				cur[pr.from] += df
				cur[pr.to] -= dt
			}
			if !improved {
				break
			}
		}
		return base, nil
	}
	q := &costHeap{}
	for i := range sites {
		if step(i) <= 0 {
			continue
		}
		c, err := measure(i)
		if err != nil {
			return nil, err
		}
		heap.Push(q, move{i, c})
	}
	out := make([][]float64, 0, len(levels))
	for _, lv := range levels {
		for mean() < lv-1e-12 {
			if q.Len() == 0 {
				return nil, fmt.Errorf("greedy: every site is at s_max %g before level %g", o.SMax, lv)
			}
			mv := heap.Pop(q).(move)
			c, err := measure(mv.site)
			if err != nil {
				return nil, err
			}
			if q.Len() > 0 && c > (*q)[0].cost {
				heap.Push(q, move{mv.site, c}) // no longer the cheapest
				continue
			}
			i := mv.site
			need := (lv - mean()) * total / float64(sites[i].Params())
			if need < step(i) {
				// cut the move at the level; the rest of it stays queued
				cur[i] += need
				if base, err = loss(cur); err != nil {
					return nil, err
				}
				heap.Push(q, move{i, c})
				break
			}
			cur[i] += step(i)
			advance()
			if base, err = loss(cur); err != nil {
				return nil, err
			}
			if step(i) > 1e-12 {
				c, err := measure(i)
				if err != nil {
					return nil, err
				}
				heap.Push(q, move{i, c})
			}
		}
		// fix the mean to the level exactly (floating-point dust)
		scale := lv / mean()
		for i := range cur {
			cur[i] *= scale
		}
		if base, err = loss(cur); err != nil {
			return nil, err
		}
		// start the refinement from the best candidate
		cands := [][]float64{uniform(lv)}
		if o.Candidates != nil {
			more, err := o.Candidates(lv)
			if err != nil {
				return nil, err
			}
			cands = append(cands, more...)
		}
		for _, c := range cands {
			if len(c) != len(cur) {
				return nil, fmt.Errorf("greedy: candidate with %d sites for %d", len(c), len(cur))
			}
			l, err := loss(c)
			if err != nil {
				return nil, err
			}
			if l < base {
				copy(cur, c)
				base = l
			}
		}
		if base, err = refine(cur, base); err != nil {
			return nil, err
		}
		out = append(out, append([]float64(nil), cur...))
		refined = float64(len(out) * max(o.Refine, 0) * len(sites)) // rounds a level skipped
		advance()
		if o.Progress != nil {
			l, _ := loss(cur)
			o.Progress(lv, l)
		}
	}
	return out, nil
}

type move struct {
	site int
	cost float64
}

type costHeap []move

func (h costHeap) Len() int           { return len(h) }
func (h costHeap) Less(i, j int) bool { return h[i].cost < h[j].cost }
func (h costHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *costHeap) Push(x any)        { *h = append(*h, x.(move)) }
func (h *costHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
