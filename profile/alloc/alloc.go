// Package alloc turns heavy-tail exponents into per-projection sparsity
// budgets (ActTail; docs/ACTTAIL.md section 2) and rounds any budget to
// integer kept-input counts.
//
// Conventions. A site is one projection (plan.Site), P_i = d_in·d_out its
// weight count. s_i is the fraction of site i's inputs dropped per token and
// K_i the number kept. Every mean is weighted by P_i ("global sparsity"):
// bytes read are what batch-1 decode saves. Slices returned are indexed
// like the sites given; the caller owns them.
//
// # Allocation
//
// Uniform gives every site the target. ActTail (inferred from AlphaPruning)
// maps alpha_i to a ratio
//
//	r_i = (1 − ε) + 2ε·(alpha_i − alpha_min)/(alpha_max − alpha_min)
//
// (SmallerAlphaSparser uses alpha_max − alpha_i; r_i = 1 when all alphas
// are equal) and sets s_i = clamp(c·r_i, SMin, SMax), with c such that
// Σ P_i s_i = Target·Σ P_i. With BlockAverage each alpha is first replaced
// by the plain (unweighted) mean over the sites of its layer, as
// AlphaPruning's block-wise mapping averages its layer metric; the seven
// projections count once each, whatever their size.
//
// f(c) = Σ P_i clamp(c·r_i, SMin, SMax) is continuous, nondecreasing and
// linear between the breakpoints SMin/r_i and SMax/r_i, so c is found by
// bisection over the sorted breakpoints and one linear solve. That is the
// fixed point of the usual "clamp, re-solve c over the unclamped sites"
// loop, reached in O(n log n) with no loop that could cycle. Since
// SMin ≤ Target ≤ SMax, a c exists unless ε = 1: then the sites with the
// extreme alpha get r_i = 0 and stay at SMin whatever c is, and a Target
// near SMax is out of reach (an error). ε = 0, or equal alphas, returns
// Uniform exactly. Where 1 − 1/d_in is below SMax for the narrowest site,
// it replaces SMax (for all sites, so the order by alpha holds): every
// site keeps at least one input, and a budget below that would only be
// undone by Round at the other sites' expense.
//
// # Rounding
//
// Perplexity is steep in sparsity, so methods are compared at the same
// realized sparsity, bit for bit. Round therefore fixes the kept-weight
// total T = Σ d_out,i·K_i from the target and the shapes alone, before it
// looks at s: T is the multiple of g = gcd(d_out,i) nearest to
// (1 − target)·Σ P_i that some K with 1 ≤ K_i ≤ d_in reaches (every such
// total is a multiple of g, so none is closer; an error if none is within
// max d_out).
//
// Given s, the real k_i = (1 − s_i)·d_in, clamped to [1, d_in], and Round
// returns integers 1 ≤ K_i ≤ d_in with Σ d_out,i·K_i = T that minimize
// Σ (K_i − k_i)², in two levels:
//
//   - Sites are grouped by d_out (a Llama block has at most four values:
//     dim, q_dim, kv_dim, hidden). Inside a group with total n, the best K
//     is largest remainder: floor every k_i, then add 1 by largest
//     fractional part (or take 1 by smallest), in rounds, never leaving
//     [1, d_in]. That is the greedy order of marginal costs, so it is
//     optimal, and its cost c_G(n) is convex in n.
//   - The group totals n_G, with Σ d_G·n_G = T exactly, minimize
//     Σ c_G(n_G): a depth-first branch and bound over the groups. n_G is
//     confined to one residue class modulo the gcd of the later groups'
//     d_out/g (else the rest cannot be hit exactly); the bound adds the
//     continuous optimum of the later groups, and being convex it lets
//     each walk along a class stop early. It ends, being a search over
//     finite ranges, and on Llama shapes visits a handful of nodes.
//
// Error per site: |K_i − k_i| < 1 when a group's total lies between its
// floor and ceiling sums; otherwise the exact total moves the group by up
// to about half the step its residue class allows (units of d_out/g), and
// while no site of the group sits at a bound each site takes at most
// 1 + ⌈|n_G − Σk|/|G|⌉. Measured: below 1 on Llama-2-7B and Llama-3-8B
// shapes; on stories260K up to about 3 at 0.9, where most of a group sits
// at one input and one site takes the group's whole step. With arbitrary
// coprime d_out values (not Llama's) the step, and so the error, can reach
// hundreds of inputs: the price of equal totals.
package alloc

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"

	"github.com/acttail/acttail-gpu/runtime/plan"
)

// Direction says which end of the alpha range gets more sparsity.
type Direction string

// Directions. ACTTAIL.md infers LargerAlphaSparser (a lighter tail holds
// less learned structure); the other is the ablation.
const (
	LargerAlphaSparser  Direction = "larger-alpha-sparser"
	SmallerAlphaSparser Direction = "smaller-alpha-sparser"
)

// DefaultSMax caps one site's sparsity when Options.SMax is 0.
const DefaultSMax = 0.99

// Options are ActTail's parameters.
type Options struct {
	// Target is the P-weighted mean sparsity, in [0, 1).
	Target float64
	// Eps is ε, the half-width of the ratio range, in [0, 1].
	Eps float64
	// Direction; "" means LargerAlphaSparser.
	Direction Direction
	// BlockAverage replaces each alpha by its layer's plain mean.
	BlockAverage bool
	// SMin ≤ s_i ≤ SMax. SMax 0 means DefaultSMax (a zero SMax only
	// admits Target 0 and SMin 0, which give all zeros either way).
	SMin, SMax float64
}

func (o Options) withDefaults() Options {
	if o.SMax == 0 {
		o.SMax = DefaultSMax
	}
	if o.Direction == "" {
		o.Direction = LargerAlphaSparser
	}
	return o
}

// Validate checks the options, with defaults filled in.
func (o Options) Validate() error {
	o = o.withDefaults()
	switch {
	case !(o.Target >= 0 && o.Target < 1):
		return fmt.Errorf("target sparsity %g must be in [0, 1)", o.Target)
	case !(o.Eps >= 0 && o.Eps <= 1):
		return fmt.Errorf("eps %g must be in [0, 1]", o.Eps)
	case !(o.SMin >= 0 && o.SMin < 1):
		return fmt.Errorf("s_min %g must be in [0, 1)", o.SMin)
	case !(o.SMax >= 0 && o.SMax < 1):
		return fmt.Errorf("s_max %g must be in [0, 1)", o.SMax)
	case o.SMin > o.Target:
		return fmt.Errorf("target sparsity %g is below s_min %g", o.Target, o.SMin)
	case o.Target > o.SMax:
		return fmt.Errorf("target sparsity %g is above s_max %g", o.Target, o.SMax)
	case o.Direction != LargerAlphaSparser && o.Direction != SmallerAlphaSparser:
		return fmt.Errorf("direction %q: want %q or %q", o.Direction, LargerAlphaSparser, SmallerAlphaSparser)
	}
	return nil
}

// checkSites rejects an empty list and non-positive shapes.
func checkSites(sites []plan.Site) error {
	if len(sites) == 0 {
		return errors.New("no sites")
	}
	for i, s := range sites {
		if s.DIn <= 0 || s.DOut <= 0 {
			return fmt.Errorf("site %d (layer %d %s): bad shape %d×%d", i, s.Layer, s.Proj, s.DOut, s.DIn)
		}
	}
	return nil
}

func checkTarget(target float64) error {
	if !(target >= 0 && target < 1) {
		return fmt.Errorf("target sparsity %g must be in [0, 1)", target)
	}
	return nil
}

// Uniform gives every site the target sparsity (TEAL's allocation).
func Uniform(sites []plan.Site, target float64) ([]float64, error) {
	if err := checkSites(sites); err != nil {
		return nil, fmt.Errorf("uniform allocation: %w", err)
	}
	if err := checkTarget(target); err != nil {
		return nil, fmt.Errorf("uniform allocation: %w", err)
	}
	s := make([]float64, len(sites))
	for i := range s {
		s[i] = target
	}
	return s, nil
}

// ActTail allocates from sites[i].Alpha, which must be fitted (finite,
// > 0). See the package documentation for the mapping.
func ActTail(sites []plan.Site, o Options) ([]float64, error) {
	o = o.withDefaults()
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("acttail allocation: %w", err)
	}
	if err := checkSites(sites); err != nil {
		return nil, fmt.Errorf("acttail allocation: %w", err)
	}
	// A site keeps at least one input; one cap for all keeps the order.
	minIn := slices.MinFunc(sites, func(a, b plan.Site) int { return a.DIn - b.DIn }).DIn
	if c := 1 - 1/float64(minIn); c < o.SMax {
		if o.Target > c {
			return nil, fmt.Errorf("acttail allocation: target sparsity %g is above %g: a site with %d inputs keeps at least one", o.Target, c, minIn)
		}
		o.SMax = c
	}
	alpha := make([]float64, len(sites))
	for i, s := range sites {
		if !(s.Alpha > 0) || math.IsInf(s.Alpha, 0) {
			return nil, fmt.Errorf("acttail allocation: site %d (layer %d %s) has alpha %g; fit the spectra first", i, s.Layer, s.Proj, s.Alpha)
		}
		alpha[i] = s.Alpha
	}
	if o.BlockAverage {
		alpha = blockMeans(sites, alpha)
	}
	r, ok := ratios(alpha, o.Eps, o.Direction)
	if !ok {
		return Uniform(sites, o.Target)
	}
	s, err := solve(weights(sites), r, o)
	if err != nil {
		return nil, fmt.Errorf("acttail allocation: %w", err)
	}
	return s, nil
}

// blockMeans replaces each alpha by the plain mean over the sites of the
// same Layer.
func blockMeans(sites []plan.Site, alpha []float64) []float64 {
	sum := map[int]float64{}
	cnt := map[int]int{}
	for i, s := range sites {
		sum[s.Layer] += alpha[i]
		cnt[s.Layer]++
	}
	out := make([]float64, len(alpha))
	for i, s := range sites {
		out[i] = sum[s.Layer] / float64(cnt[s.Layer])
	}
	return out
}

// ratios returns r_i in [1 − ε, 1 + ε], monotone in alpha in the given
// direction, and false when they would all be 1.
func ratios(alpha []float64, eps float64, dir Direction) ([]float64, bool) {
	lo, hi := slices.Min(alpha), slices.Max(alpha)
	if eps == 0 || lo == hi {
		return nil, false
	}
	r := make([]float64, len(alpha))
	for i, a := range alpha {
		t := a - lo
		if dir == SmallerAlphaSparser {
			t = hi - a
		}
		r[i] = (1 - eps) + 2*eps*t/(hi-lo)
	}
	return r, true
}

func weights(sites []plan.Site) []float64 {
	p := make([]float64, len(sites))
	for i, s := range sites {
		p[i] = float64(s.Params())
	}
	return p
}

// solve finds c with Σ p_i·clamp(c·r_i, SMin, SMax) = Target·Σ p_i and
// returns the clamped c·r_i.
func solve(p, r []float64, o Options) ([]float64, error) {
	var w float64
	for _, v := range p {
		w += v
	}
	goal := o.Target * w
	s := make([]float64, len(p))
	at := func(c float64) float64 {
		var f float64
		for i := range p {
			s[i] = min(max(c*r[i], o.SMin), o.SMax)
			f += p[i] * s[i]
		}
		return f
	}
	bps := []float64{0}
	for _, v := range r {
		if v > 0 {
			bps = append(bps, o.SMin/v, o.SMax/v)
		}
	}
	sort.Float64s(bps)
	j := sort.Search(len(bps), func(j int) bool { return at(bps[j]) >= goal })
	var c float64
	switch {
	case j == len(bps):
		c = bps[j-1]
		if top := at(c); goal-top > 1e-12*w {
			zero := 0
			for _, v := range r {
				if v == 0 {
					zero++
				}
			}
			return nil, fmt.Errorf("target sparsity %g is out of reach: %d sites have ratio 0 (eps %g) and stay at s_min %g, so with the rest at s_max %g the weighted mean is at most %.9g",
				o.Target, zero, o.Eps, o.SMin, o.SMax, top/w)
		}
	case j == 0:
		c = 0
	default:
		c0, c1 := bps[j-1], bps[j]
		f0, f1 := at(c0), at(c1)
		c = c0 + (goal-f0)*(c1-c0)/(f1-f0)
	}
	// One Newton step over the unclamped sites removes the rounding left
	// by the interpolation.
	f := at(c)
	var slope float64
	for i := range p {
		if s[i] > o.SMin && s[i] < o.SMax {
			slope += p[i] * r[i]
		}
	}
	if slope > 0 {
		at(c + (goal-f)/slope)
	}
	return s, nil
}
