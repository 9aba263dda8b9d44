package profile

import (
	"context"
	"fmt"
	"strings"

	"github.com/acttail/acttail-gpu/profile/alloc"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// Method is an allocation method: how the pipeline finds every site's
// sparsity at a level, in closed form from the heavy-tail fits or by a
// search on calibration text.
//
// # Adding a method
//
// A new method touches this package alone: a constant below and a row in
// the methods table, which says
//   - how its budgets are made: allocate (at one level, from the sites
//     and their fits) or search (at every level at once, on the
//     pipeline's calibration text, as Greedy does);
//   - whether it reads the heavy-tail fits (FitsFor computes them then);
//   - whether a sweep runs it at every ActTail setting of its Grid
//     (ActTail) or once;
//   - which of its parameters a plan records (plan.Params).
//
// ParseMethod, Methods, NeedsCalib, FitsFor, the Pipeline and Variants
// read the table, so every flag, `profile`, the sweep and its labels
// know the method from then on. Only the flags' help texts (and bench's
// default --methods) name the methods in words.
type Method string

// The allocation methods.
const (
	// MethodUniform gives every site the level (TEAL's allocation).
	MethodUniform Method = "uniform"
	// MethodActTail maps the sites' heavy-tail exponents to budgets
	// (alloc.ActTail).
	MethodActTail Method = "acttail"
	// MethodGreedy searches budgets on calibration text (Greedy), from
	// uniform and ActTail allocations.
	MethodGreedy Method = "greedy"
)

// spec is what the pipeline knows of one method; exactly one of allocate
// and search is set.
type spec struct {
	name Method
	// fits: the budgets read the heavy-tail fits (plan.Site.Alpha).
	fits bool
	// allocate returns the sparsity of every site at o.Target.
	allocate func(sites []plan.Site, o Options) ([]float64, error)
	// search returns the sparsities of every site at each of levels
	// (sorted, distinct) from one search on p's calibration text.
	search func(ctx context.Context, p *Pipeline, o Options, levels []float64) ([][]float64, error)
	// grid: the method has ActTail's settings (ε, direction), and a sweep
	// runs it at each of its Grid's.
	grid bool
	// record writes the method's parameters, beyond s_min and s_max,
	// into a plan (nil: none).
	record func(p *plan.Params, o Options)
}

// methods is the table of allocation methods, in the order flags and
// messages list them.
var methods = []spec{
	{name: MethodUniform, allocate: func(sites []plan.Site, o Options) ([]float64, error) { return alloc.Uniform(sites, o.Target) }},
	{name: MethodActTail, fits: true, grid: true, allocate: actTail, record: func(p *plan.Params, o Options) {
		p.Eps, p.Direction, p.Xmin, p.BlockAverage = o.Eps, string(o.Direction), string(o.Xmin), o.BlockAverage
	}},
	{name: MethodGreedy, fits: true, search: greedySearch},
}

func actTail(sites []plan.Site, o Options) ([]float64, error) { return alloc.ActTail(sites, o.Options) }

// Methods lists the allocation methods.
func Methods() []Method {
	out := make([]Method, len(methods))
	for i, m := range methods {
		out[i] = m.name
	}
	return out
}

// ParseMethod reads a method's name. It is the one parser of methods:
// every flag that takes one uses it.
func ParseMethod(s string) (Method, error) {
	if _, ok := lookup(Method(s)); ok {
		return Method(s), nil
	}
	names := make([]string, len(methods))
	for i, m := range methods {
		names[i] = string(m.name)
	}
	return "", fmt.Errorf("unknown allocation method %q (want %s or %s)", s, strings.Join(names[:len(names)-1], ", "), names[len(names)-1])
}

func lookup(m Method) (*spec, bool) {
	for i := range methods {
		if methods[i].name == m {
			return &methods[i], true
		}
	}
	return nil, false
}

// specOf is m's row, or ParseMethod's error.
func specOf(m Method) (*spec, error) {
	sp, ok := lookup(m)
	if !ok {
		_, err := ParseMethod(string(m))
		return nil, err
	}
	return sp, nil
}

// NeedsFits reports whether m reads the heavy-tail fits. Uniform does
// not, and the spectra take minutes on 7B-sized models.
func (m Method) NeedsFits() bool {
	sp, ok := lookup(m)
	return ok && sp.fits
}

// Searches reports whether m searches budgets on calibration text, and
// so needs some.
func (m Method) Searches() bool {
	sp, ok := lookup(m)
	return ok && sp.search != nil
}

// NeedsCalib says why making plans by methods in mode needs calibration
// text, or "" when it does not: threshold mode calibrates its cuts on it,
// and a searching method searches on it.
func NeedsCalib(methods []Method, mode plan.Mode) string {
	if mode == plan.ModeThreshold {
		return "threshold mode calibrates its cuts on calibration text"
	}
	for _, m := range methods {
		if m.Searches() {
			return fmt.Sprintf("the %s method searches budgets on calibration text", m)
		}
	}
	return ""
}

// Grid is a set of ActTail settings: the ones a sweep runs, and the ones
// whose allocations a search also starts from.
type Grid struct {
	Eps        []float64
	Directions []alloc.Direction
}

// Variants are the settings of o.Method that a sweep runs at each level:
// o at every ε × direction of g for a method with ActTail's settings;
// else o alone, with those settings cleared (its row shows none).
func Variants(o Options, g Grid) ([]Options, error) {
	sp, err := specOf(o.Method)
	if err != nil {
		return nil, err
	}
	if !sp.grid {
		o.Eps, o.Direction = 0, ""
		return []Options{o}, nil
	}
	var out []Options
	for _, eps := range g.Eps {
		for _, d := range g.Directions {
			o.Eps, o.Direction = eps, d
			out = append(out, o)
		}
	}
	return out, nil
}

// Label names o in a sweep's tables: the method, with its ActTail
// settings if it has them ("acttail eps=0.1 smaller-alpha-sparser"), and
// its selection unless that is magnitude ("uniform +wina").
func (o Options) Label() string {
	sel := ""
	if s := o.selection(); s != plan.SelectMagnitude {
		sel = " +" + string(s)
	}
	if sp, ok := lookup(o.Method); !ok || !sp.grid {
		return string(o.Method) + sel
	}
	d := alloc.LargerAlphaSparser // alloc's default
	if o.Direction == alloc.SmallerAlphaSparser {
		d = alloc.SmallerAlphaSparser
	}
	return fmt.Sprintf("%s eps=%g %s%s", o.Method, o.Eps, d, sel)
}
