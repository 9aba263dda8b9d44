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
	// Selection is the run-time selection the moves are scored under
	// ("": plan.SelectMagnitude).
	Selection plan.Selection `json:"-"`
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
// The model must be loaded sparse. The search runs s under budgets of its
// own; s.Budgets is left as it was.
func Greedy(ctx context.Context, s *engine.State, tokens []int, sites []plan.Site, o GreedyOptions) ([][]float64, error) {
	g, err := newGreedy(ctx, s, tokens, sites, o)
	if err != nil {
		return nil, err
	}
	defer func(b *backend.Budgets) { s.Budgets = b }(s.Budgets)
	return g.run()
}

// greedy is one search: the allocation it stands at, that allocation's
// loss, and the queue of moves from it.
type greedy struct {
	ctx    context.Context
	s      *engine.State
	tokens []int
	sites  []plan.Site
	o      GreedyOptions // defaults filled in
	scales [][]float32   // of o.Selection (engine.Model.Scales)
	levels []float64     // o.Levels, sorted
	total  float64       // Σ P_i over the sites
	cur    []float64     // the allocation: a sparsity per site
	base   float64       // the loss at cur
	q      costHeap      // a move per site that can still rise; costs may be stale
	bar    greedyBar     // GreedyOptions.Bar's bookkeeping
}

// greedyBar shares GreedyOptions.Bar between the path and the
// refinement rounds by their loss evaluations: about two a move,
// (last − start)/Step moves, and two a site a round.
type greedyBar struct {
	start, last float64 // the weighted sparsity at the seed, the last level
	rounds      float64 // refinement rounds in all, in sites
	refined     float64 // refinement rounds done, in sites
	pathShare   float64 // the path's share of the bar
}

func newGreedyBar(start float64, levels []float64, o GreedyOptions, sites int) greedyBar {
	b := greedyBar{start: start, last: levels[len(levels)-1], rounds: float64(len(levels) * max(o.Refine, 0) * sites), pathShare: 1}
	if b.rounds > 0 {
		moves := (b.last - b.start) / o.Step
		b.pathShare = moves / (moves + float64(len(levels)*max(o.Refine, 0)))
	}
	return b
}

// advance sets the bar to the search's progress: the path by the weighted
// sparsity reached, the rounds by those done.
func (g *greedy) advance() {
	b := &g.bar
	frac := 0.0
	if b.last > b.start {
		frac = b.pathShare * (g.mean() - b.start) / (b.last - b.start)
	}
	if b.rounds > 0 {
		frac += (1 - b.pathShare) * b.refined / b.rounds
	}
	g.o.Bar.Set(int64(math.Round(GreedyBarTotal * frac)))
}

// newGreedy checks o, fills in its defaults and places the search at its
// seed.
func newGreedy(ctx context.Context, s *engine.State, tokens []int, sites []plan.Site, o GreedyOptions) (*greedy, error) {
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
	if o.Refine == 0 {
		o.Refine = 4
	}
	if !(o.Start >= 0 && o.Start <= levels[0]) || levels[len(levels)-1] >= o.SMax {
		return nil, fmt.Errorf("greedy: start %g and levels %v must satisfy 0 ≤ start ≤ levels < s_max %g", o.Start, levels, o.SMax)
	}
	if o.Seed != nil && len(o.Seed) != len(sites) {
		return nil, fmt.Errorf("greedy: seed has %d sites, model %d", len(o.Seed), len(sites))
	}
	scales, err := s.Model().Scales(o.Selection)
	if err != nil {
		return nil, fmt.Errorf("greedy: %w", err)
	}
	g := &greedy{ctx: ctx, s: s, tokens: tokens, sites: sites, o: o, scales: scales, levels: levels, cur: make([]float64, len(sites))}
	if o.Seed != nil {
		copy(g.cur, o.Seed)
	} else {
		g.cur = g.uniform(o.Start)
	}
	for _, st := range sites {
		g.total += float64(st.Params())
	}
	g.bar = newGreedyBar(g.mean(), levels, o, len(sites))
	return g, nil
}

// run walks the levels upwards and returns the allocation at each.
func (g *greedy) run() ([][]float64, error) {
	var err error
	if g.base, err = g.loss(g.cur); err != nil {
		return nil, err
	}
	for i := range g.sites {
		if g.step(i) <= 0 {
			continue
		}
		if err := g.requeue(i); err != nil {
			return nil, err
		}
	}
	out := make([][]float64, 0, len(g.levels))
	for _, lv := range g.levels {
		if err := g.level(lv); err != nil {
			return nil, err
		}
		out = append(out, append([]float64(nil), g.cur...))
		g.bar.refined = float64(len(out) * max(g.o.Refine, 0) * len(g.sites)) // rounds a level skipped
		g.advance()
		if g.o.Progress != nil {
			l, _ := g.loss(g.cur)
			g.o.Progress(lv, l)
		}
	}
	return out, nil
}

// level takes the search to level lv: the greedy path up to it, then
// the best of that and the candidates, refined.
func (g *greedy) level(lv float64) error {
	for g.mean() < lv-1e-12 {
		cut, err := g.move(lv)
		if err != nil {
			return err
		}
		if cut {
			break
		}
	}
	// fix the mean to the level exactly (floating-point dust)
	scale := lv / g.mean()
	for i := range g.cur {
		g.cur[i] *= scale
	}
	var err error
	if g.base, err = g.loss(g.cur); err != nil {
		return err
	}
	if err := g.bestStart(lv); err != nil {
		return err
	}
	return g.refine()
}

// move takes the cheapest move of the queue, after re-measuring it, or
// puts it back if it is no longer the cheapest. A move that would pass
// lv is cut at lv (cut true): the rest of it stays queued.
func (g *greedy) move(lv float64) (cut bool, err error) {
	if g.q.Len() == 0 {
		return false, fmt.Errorf("greedy: every site is at s_max %g before level %g", g.o.SMax, lv)
	}
	i := heap.Pop(&g.q).(move).site
	c, err := g.measure(i)
	if err != nil {
		return false, err
	}
	if g.q.Len() > 0 && c > g.q[0].cost {
		heap.Push(&g.q, move{i, c}) // no longer the cheapest
		return false, nil
	}
	need := (lv - g.mean()) * g.total / float64(g.sites[i].Params())
	if need < g.step(i) {
		g.cur[i] += need
		if g.base, err = g.loss(g.cur); err != nil {
			return false, err
		}
		heap.Push(&g.q, move{i, c})
		return true, nil
	}
	g.cur[i] += g.step(i)
	g.advance()
	if g.base, err = g.loss(g.cur); err != nil {
		return false, err
	}
	if g.step(i) > 1e-12 {
		return false, g.requeue(i)
	}
	return false, nil
}

// bestStart moves the search to uniform at lv, or to a candidate
// (GreedyOptions.Candidates), where that has a lower loss than cur.
func (g *greedy) bestStart(lv float64) error {
	cands := [][]float64{g.uniform(lv)}
	if g.o.Candidates != nil {
		more, err := g.o.Candidates(lv)
		if err != nil {
			return err
		}
		cands = append(cands, more...)
	}
	for _, c := range cands {
		if len(c) != len(g.cur) {
			return fmt.Errorf("greedy: candidate with %d sites for %d", len(c), len(g.cur))
		}
		l, err := g.loss(c)
		if err != nil {
			return err
		}
		if l < g.base {
			copy(g.cur, c)
			g.base = l
		}
	}
	return nil
}

// refine runs transfer rounds at the current level (see
// GreedyOptions.Refine) until one does not help.
func (g *greedy) refine() error {
	for range g.o.Refine {
		up, down, err := g.slopes()
		if err != nil {
			return err
		}
		improved, err := g.transfer(up, down)
		if err != nil || !improved {
			return err
		}
	}
	return nil
}

// slopes measures, for every site, the loss increase per unit of
// weighted sparsity of one Step up (+Inf at s_max) and the loss decrease
// per unit of one Step down (−Inf at 0).
func (g *greedy) slopes() (up, down []float64, err error) {
	up, down = make([]float64, len(g.sites)), make([]float64, len(g.sites))
	for i := range g.sites {
		old := g.cur[i]
		up[i], down[i] = math.Inf(1), math.Inf(-1)
		if d := math.Min(g.o.Step, g.o.SMax-old); d > 1e-12 {
			g.cur[i] = old + d
			l, err := g.loss(g.cur)
			if err != nil {
				return nil, nil, err
			}
			up[i] = (l - g.base) / (d * float64(g.sites[i].Params()) / g.total)
		}
		if d := math.Min(g.o.Step, old); d > 1e-12 {
			g.cur[i] = old - d
			l, err := g.loss(g.cur)
			if err != nil {
				return nil, nil, err
			}
			down[i] = (g.base - l) / (d * float64(g.sites[i].Params()) / g.total)
		}
		g.cur[i] = old
		g.bar.refined++
		g.advance()
	}
	return up, down, nil
}

// A transfer moves sparsity from one site to another.
type transfer struct {
	from, to int
	score    float64 // the loss it should save per unit moved
}

// transfer tries the three most promising transfers that slopes up and
// down suggest, and keeps the first that lowers the loss (and passes the
// held-out check).
func (g *greedy) transfer(up, down []float64) (bool, error) {
	var ts []transfer
	for i := range g.sites {
		for j := range g.sites {
			if i != j && !math.IsInf(down[i], 0) && !math.IsInf(up[j], 0) && down[i] > up[j] {
				ts = append(ts, transfer{i, j, down[i] - up[j]})
			}
		}
	}
	sort.Slice(ts, func(a, b int) bool { return ts[a].score > ts[b].score })
	for _, t := range ts[:min(3, len(ts))] {
		ok, err := g.try(t)
		if ok || err != nil {
			return ok, err
		}
	}
	return false, nil
}

// try makes transfer t, of equal weighted amounts (P_from·d_from =
// P_to·d_to), and keeps it if it lowers the loss and the held-out loss.
func (g *greedy) try(t transfer) (bool, error) {
	pf, pt := float64(g.sites[t.from].Params()), float64(g.sites[t.to].Params())
	w := math.Min(math.Min(g.o.Step, g.cur[t.from])*pf, math.Min(g.o.Step, g.o.SMax-g.cur[t.to])*pt)
	df, dt := w/pf, w/pt
	old := slices.Clone(g.cur)
	g.cur[t.from] -= df
	g.cur[t.to] += dt
	l, err := g.loss(g.cur)
	if err != nil {
		return false, err
	}
	if l < g.base {
		ok, err := g.holdoutOK(old, g.cur)
		if err != nil {
			return false, err
		}
		if ok {
			g.base = l
			return true, nil
		}
	}
	g.cur[t.from] += df
	g.cur[t.to] -= dt
	return false, nil
}

// loss is the calibration loss of allocation sp.
func (g *greedy) loss(sp []float64) (float64, error) { return g.lossOn(sp, g.tokens) }

// lossOn is the mean NLL of toks with every token sparse under
// allocation sp, in top-k mode.
func (g *greedy) lossOn(sp []float64, toks []int) (float64, error) {
	bs := make([]backend.Budget, len(g.sites))
	for i, st := range g.sites {
		bs[i] = backend.Budget{ID: i, TopK: true, K: plan.KeepFor(sp[i], st.DIn)}
		if g.scales != nil {
			bs[i].Scale = g.scales[i]
		}
	}
	var err error
	if g.s.Budgets, err = g.s.Model().SiteBudgets(bs); err != nil {
		return 0, err
	}
	ctx := g.s.Context()
	r, err := eval.Perplexity(g.ctx, g.s, toks, eval.Options{Ctx: ctx, Stride: ctx, Sparse: eval.SparseAll})
	return r.MeanNLL, err
}

// holdoutOK reports whether moving from old to cur keeps the held-out
// loss from rising (always true without held-out tokens).
func (g *greedy) holdoutOK(old, cur []float64) (bool, error) {
	if len(g.o.Holdout) < 2 {
		return true, nil
	}
	a, err := g.lossOn(old, g.o.Holdout)
	if err != nil {
		return false, err
	}
	b, err := g.lossOn(cur, g.o.Holdout)
	return b < a, err
}

// uniform is lv at every site.
func (g *greedy) uniform(lv float64) []float64 {
	u := make([]float64, len(g.sites))
	for i := range u {
		u[i] = lv
	}
	return u
}

// mean is the weighted sparsity of cur.
func (g *greedy) mean() float64 {
	var num float64
	for i, st := range g.sites {
		num += float64(st.Params()) * g.cur[i]
	}
	return num / g.total
}

// step is how much the next move of site i raises it.
func (g *greedy) step(i int) float64 { return math.Min(g.o.Step, g.o.SMax-g.cur[i]) }

// gain is the weighted sparsity the next move of site i adds.
func (g *greedy) gain(i int) float64 { return g.step(i) * float64(g.sites[i].Params()) / g.total }

// measure is the cost of the next move of site i: the loss it adds per
// unit of weighted sparsity gained.
func (g *greedy) measure(i int) (float64, error) {
	old := g.cur[i]
	g.cur[i] += g.step(i)
	l, err := g.loss(g.cur)
	g.cur[i] = old
	return (l - g.base) / g.gain(i), err
}

// requeue measures the next move of site i and queues it.
func (g *greedy) requeue(i int) error {
	c, err := g.measure(i)
	if err != nil {
		return err
	}
	heap.Push(&g.q, move{i, c})
	return nil
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
