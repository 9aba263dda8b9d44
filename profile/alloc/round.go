package alloc

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/acttail/acttail-gpu/runtime/plan"
)

// meanTolerance is how far the weighted mean of the budgets given to Round
// may be from its target: the budget must have been made for that target.
const meanTolerance = 1e-6

// Round turns budgets s (made for target) into kept-input counts K_i,
// 1 ≤ K_i ≤ d_in, whose kept-weight total Σ d_out·K_i depends only on the
// shapes and the target, so every method rounds to the same realized
// sparsity. See the package documentation for the algorithm.
func Round(sites []plan.Site, s []float64, target float64) ([]int, error) {
	if err := checkSites(sites); err != nil {
		return nil, fmt.Errorf("round budgets: %w", err)
	}
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("round budgets: %w", err)
	}
	if len(s) != len(sites) {
		return nil, fmt.Errorf("round budgets: %d budgets for %d sites", len(s), len(sites))
	}
	var num, den float64
	for i, v := range s {
		if !(v >= 0 && v < 1) {
			return nil, fmt.Errorf("round budgets: site %d (layer %d %s) has sparsity %g outside [0, 1)", i, sites[i].Layer, sites[i].Proj, v)
		}
		p := float64(sites[i].Params())
		num += p * v
		den += p
	}
	if mean := num / den; math.Abs(mean-target) > meanTolerance {
		return nil, fmt.Errorf("round budgets: they average %.9g, not the target %g; round each allocation at the target it was made for", mean, target)
	}
	groups, g := groupsOf(sites)
	total, err := budget(sites, groups, g, target)
	if err != nil {
		return nil, fmt.Errorf("round budgets: %w", err)
	}
	rd := newRounder(sites, groups, realKeep(sites, s))
	n, ok := solveUnits(groups, rd.x, total/g, rd.fill)
	if !ok {
		// budget found total reachable and the search is exhaustive.
		panic(fmt.Sprintf("alloc: reachable total %d not found", total))
	}
	for j := range groups {
		rd.fill(j, n[j])
	}
	return rd.K, nil
}

// Apply writes the planned sparsity and the kept count into each site. K is
// what a topk backend uses; Sparsity records the unrounded plan.
func Apply(sites []plan.Site, s []float64, k []int) {
	if len(s) != len(sites) || len(k) != len(sites) {
		panic(fmt.Sprintf("alloc.Apply: %d sites, %d budgets, %d counts", len(sites), len(s), len(k)))
	}
	for i := range sites {
		sites[i].Sparsity = s[i]
		sites[i].K = k[i]
	}
}

// KeptWeights is Σ d_out,i·k_i: the weights a decode step reads.
func KeptWeights(sites []plan.Site, k []int) int64 {
	var t int64
	for i, s := range sites {
		t += int64(s.DOut) * int64(k[i])
	}
	return t
}

// Realized is the weighted sparsity 1 − KeptWeights/Σ P_i, computed from
// integers so that equal totals give equal values bit for bit (unlike
// plan.WeightedSparsity, whose float sum depends on the per-site K).
func Realized(sites []plan.Site, k []int) float64 {
	var w int64
	for _, s := range sites {
		w += int64(s.DIn) * int64(s.DOut)
	}
	return 1 - float64(KeptWeights(sites, k))/float64(w)
}

// group is the sites sharing one d_out; n, its kept-input total, counts in
// units of unit·g weights.
type group struct {
	unit   int64 // d_out / g
	sites  []int
	lo, hi int64 // bounds on n: one input a site, all of them
}

// groupsOf groups the sites by d_out, largest first, and returns
// g = gcd of all d_out.
func groupsOf(sites []plan.Site) ([]group, int64) {
	by := map[int][]int{}
	var g int64
	for i, s := range sites {
		by[s.DOut] = append(by[s.DOut], i)
		g = gcd(g, int64(s.DOut))
	}
	outs := make([]int, 0, len(by))
	for d := range by {
		outs = append(outs, d)
	}
	slices.Sort(outs)
	slices.Reverse(outs)
	groups := make([]group, len(outs))
	for j, d := range outs {
		gr := group{unit: int64(d) / g, sites: by[d], lo: int64(len(by[d]))}
		for _, i := range gr.sites {
			gr.hi += int64(sites[i].DIn)
		}
		groups[j] = gr
	}
	return groups, g
}

// budget picks the kept-weight total for target from the shapes alone: the
// reachable multiple of g nearest (1 − target)·Σ P_i, ties to the smaller.
func budget(sites []plan.Site, groups []group, g int64, target float64) (int64, error) {
	var w, tmin, maxOut int64
	for _, s := range sites {
		w += int64(s.DIn) * int64(s.DOut)
		tmin += int64(s.DOut)
		maxOut = max(maxOut, int64(s.DOut))
	}
	ideal := (1 - target) * float64(w)
	uni := make([]float64, len(sites))
	for i := range uni {
		uni[i] = target
	}
	rd := newRounder(sites, groups, realKeep(sites, uni))
	// Walk the multiples m·g outwards from the ideal, nearest first. A side
	// stops past max d_out from the ideal or past its own end of the range
	// [Σ d_out, Σ P] that K can reach; a multiple below Σ d_out is passed
	// over on the way up to it.
	far := func(m int64) bool { return math.Abs(float64(m*g)-ideal) > float64(maxOut) }
	down := int64(math.Floor(ideal / float64(g)))
	up := down + 1
	for {
		dok, uok := !far(down) && down*g >= tmin, !far(up) && up <= w/g
		if !dok && !uok {
			break
		}
		m := up
		if dok && (!uok || ideal-float64(down*g) <= float64(up*g)-ideal) {
			m = down
			down--
		} else {
			up++
		}
		if m*g >= tmin {
			if _, ok := solveUnits(groups, rd.x, m, rd.fill); ok {
				return m * g, nil
			}
		}
	}
	if ideal < float64(tmin) {
		return 0, fmt.Errorf("target sparsity %g keeps %.0f of %d weights, but one input per projection already keeps %d (at most %.6g sparsity for these shapes)",
			target, ideal, w, tmin, 1-float64(tmin)/float64(w))
	}
	return 0, fmt.Errorf("target sparsity %g: no kept-input counts 1 ≤ K ≤ d_in give a total within %d weights of %.0f", target, maxOut, ideal)
}

// realKeep is k_i = (1 − s_i)·d_in clamped to [1, d_in].
func realKeep(sites []plan.Site, s []float64) []float64 {
	k := make([]float64, len(sites))
	for i, st := range sites {
		d := float64(st.DIn)
		k[i] = min(max((1-s[i])*d, 1), d)
	}
	return k
}

// solveUnits finds n_j in [lo_j, hi_j] with Σ unit_j·n_j = r that
// minimizes Σ cost(j, n_j), by depth-first branch and bound over the groups
// in turn; false means no such n exists. cost(j, ·) must be convex and at
// least (n − x_j)²/|group j|, as a sum of squares (K_i − k_i)² over the
// group is (Cauchy–Schwarz), x_j being Σ k_i.
//
// At group j, n_j must satisfy unit_j·n_j ≡ rem (mod h_j), h_j the gcd of
// the later units, or the later groups cannot make up the rest exactly. A
// lower bound on a branch is the cost so far plus the continuous optimum
// of the later groups with their bounds dropped, Δ²/Σ unit²·|group|. It is
// convex in n_j, so the search starts at the class member where it is
// least and walks outwards, each way only until the bound is no better
// than the best total found.
func solveUnits(groups []group, x []float64, r int64, cost func(j int, n int64) float64) ([]int64, bool) {
	G := len(groups)
	h := make([]int64, G)         // gcd of the later groups' units
	minRest := make([]int64, G+1) // Σ over groups ≥ j of unit·lo
	maxRest := make([]int64, G+1) // and of unit·hi
	wx := make([]float64, G+1)    // Σ over groups ≥ j of unit·x
	curv := make([]float64, G+1)  // Σ over groups ≥ j of unit²·|group|
	for j := G - 1; j >= 0; j-- {
		gr := groups[j]
		if j+1 < G {
			h[j] = gcd(h[j+1], groups[j+1].unit)
		}
		minRest[j] = minRest[j+1] + gr.unit*gr.lo
		maxRest[j] = maxRest[j+1] + gr.unit*gr.hi
		wx[j] = wx[j+1] + float64(gr.unit)*x[j]
		curv[j] = curv[j+1] + float64(gr.unit*gr.unit)*float64(len(gr.sites))
	}
	cur := make([]int64, G)
	best := cheapest{cost: math.Inf(1)}
	var walk func(j int, rem int64, acc float64)
	walk = func(j int, rem int64, acc float64) {
		gr := groups[j]
		if j == G-1 {
			best.finish(groups, cur, rem, acc, cost)
			return
		}
		lo := max(gr.lo, ceilDiv(rem-maxRest[j+1], gr.unit))
		hi := min(gr.hi, floorDiv(rem-minRest[j+1], gr.unit))
		d := gcd(gr.unit, h[j])
		if lo > hi || rem%d != 0 {
			return
		}
		mod := h[j] / d
		base := mulMod(mod1(rem/d, mod), inverse(gr.unit/d, mod), mod)
		bound := func(n int64) (float64, float64) {
			own := cost(j, n)
			e := float64(rem-gr.unit*n) - wx[j+1]
			return acc + own + e*e/curv[j+1], own
		}
		// Start at the class member nearest the continuous minimum, then
		// descend to the discrete one.
		center := x[j] + (float64(rem)-wx[j])/curv[j]*float64(gr.unit)*float64(len(gr.sites))
		center = min(max(center, float64(lo)), float64(hi))
		n0 := base + mod*int64(math.Ceil((center-float64(base))/float64(mod)))
		if n0 > hi || n0-mod >= lo && center-float64(n0-mod) < float64(n0)-center {
			n0 -= mod
		}
		if n0 < lo {
			return
		}
		b0, _ := bound(n0)
		for _, step := range []int64{mod, -mod} {
			for n := n0 + step; n >= lo && n <= hi; n += step {
				b, _ := bound(n)
				if b >= b0 {
					break
				}
				n0, b0 = n, b
			}
		}
		for _, step := range []int64{mod, -mod} {
			n := n0
			if step < 0 {
				n -= mod
			}
			for ; n >= lo && n <= hi; n += step {
				b, own := bound(n)
				if b >= best.cost {
					break
				}
				cur[j] = n
				walk(j+1, rem-gr.unit*n, acc+own)
			}
		}
	}
	walk(0, r, 0)
	return best.n, best.n != nil
}

// cheapest is the least costly full assignment of group totals seen.
type cheapest struct {
	n    []int64
	cost float64
}

// finish gives the last group what remains of the total, if it can take
// it, and keeps cur if it beats the best so far.
func (b *cheapest) finish(groups []group, cur []int64, rem int64, acc float64, cost func(int, int64) float64) {
	j := len(groups) - 1
	gr := groups[j]
	if rem%gr.unit != 0 || rem/gr.unit < gr.lo || rem/gr.unit > gr.hi {
		return
	}
	cur[j] = rem / gr.unit
	if c := acc + cost(j, cur[j]); c < b.cost {
		b.cost, b.n = c, slices.Clone(cur)
	}
}

// rounder rounds the real k of each group's sites to a given group total.
type rounder struct {
	sites  []plan.Site
	k      []float64
	x      []float64 // Σ k over each group
	groups []group
	order  [][]int // each group's sites, largest fractional part of k first
	K      []int
}

func newRounder(sites []plan.Site, groups []group, k []float64) *rounder {
	rd := &rounder{sites: sites, k: k, x: make([]float64, len(groups)), groups: groups, order: make([][]int, len(groups)), K: make([]int, len(sites))}
	frac := func(i int) float64 { return k[i] - math.Floor(k[i]) }
	for j, gr := range groups {
		for _, i := range gr.sites {
			rd.x[j] += k[i]
		}
		o := slices.Clone(gr.sites)
		slices.SortStableFunc(o, func(a, b int) int { return cmp.Compare(frac(b), frac(a)) })
		rd.order[j] = o
	}
	return rd
}

// fill sets K over group j's sites to sum to n, within [1, d_in], and
// returns Σ (K_i − k_i)² over them. Floor every k_i, then add 1 by largest
// fractional part (or take 1 by smallest), in rounds: the greedy order of
// marginal costs 2(K_i − k_i) ± 1, so the sum of squares is the least any
// such K reaches, and it is convex in n.
func (rd *rounder) fill(j int, n int64) float64 {
	var sum int64
	for _, i := range rd.groups[j].sites {
		rd.K[i] = int(math.Floor(rd.k[i]))
		sum += int64(rd.K[i])
	}
	order := rd.order[j]
	for d := n - sum; d > 0; {
		moved := false
		for _, i := range order {
			if d > 0 && rd.K[i] < rd.sites[i].DIn {
				rd.K[i]++
				d--
				moved = true
			}
		}
		if !moved {
			panic("alloc: group total above its bound")
		}
	}
	for d := sum - n; d > 0; {
		moved := false
		for _, i := range slices.Backward(order) {
			if d > 0 && rd.K[i] > 1 {
				rd.K[i]--
				d--
				moved = true
			}
		}
		if !moved {
			panic("alloc: group total below its bound")
		}
	}
	var c float64
	for _, i := range order {
		e := float64(rd.K[i]) - rd.k[i]
		c += e * e
	}
	return c
}

func gcd(a, b int64) int64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// mod1 is a mod m in [0, m), for m ≥ 1.
func mod1(a, m int64) int64 { return ((a % m) + m) % m }

func mulMod(a, b, m int64) int64 { return a % m * (b % m) % m }

// inverse is a⁻¹ mod m for gcd(a, m) = 1 (0 when m = 1).
func inverse(a, m int64) int64 {
	if m == 1 {
		return 0
	}
	// extended Euclid on (a mod m, m)
	r0, r1 := mod1(a, m), m
	s0, s1 := int64(1), int64(0)
	for r1 != 0 {
		q := r0 / r1
		r0, r1 = r1, r0-q*r1
		s0, s1 = s1, s0-q*s1
	}
	return mod1(s0, m)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func ceilDiv(a, b int64) int64 { return -floorDiv(-a, b) }
