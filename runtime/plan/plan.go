// Package plan is the sparsity plan: a versioned JSON file that says, for
// every linear projection of a model, how many of its input activations a
// decode step keeps. Profiling writes it; every backend reads it. It is
// data, not code: the engine turns it into per-projection Sites.
package plan

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// Version is the plan file format this package writes. It reads it and
// every older one: version 1 had no Selection, and reads as
// SelectMagnitude.
const Version = 2

// Mode is how a budget is applied at run time.
type Mode string

// Modes.
const (
	// ModeTopK keeps exactly K largest-|x| inputs per token.
	ModeTopK Mode = "topk"
	// ModeThreshold zeroes inputs with |x| ≤ Threshold (TEAL); the
	// realized sparsity varies per token.
	ModeThreshold Mode = "threshold"
)

// ParseMode reads a mode's name. It is the one parser of modes: the
// flags and the plan file loader (Validate) both use it.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case ModeTopK, ModeThreshold:
		return m, nil
	}
	return "", fmt.Errorf("unknown mode %q (want %s or %s)", s, ModeTopK, ModeThreshold)
}

// Selection is how a site ranks its inputs before keeping the top K (or
// those above Threshold): by score |x_j|, or by |x_j|·‖W[:,j]‖₂ with the
// column norms of the projection's weight (WINA, Chen et al. 2025). The
// norms come from the weights at run time (engine.Model.Budgets), which
// the plan's fingerprint pins; thresholds are in units of the score.
type Selection string

// Selections.
const (
	// SelectMagnitude scores input j by |x_j| (TEAL, ActTail).
	SelectMagnitude Selection = "magnitude"
	// SelectWINA scores input j of a projection by |x_j|·‖W[:,j]‖₂, its
	// own weight's column norm.
	SelectWINA Selection = "wina"
	// SelectWINAShared scores input j by |x_j| times the column norm of
	// the stacked weights of the projections that share the input
	// (q/k/v, gate/up; o and down alone), so that one ranking serves the
	// group.
	SelectWINAShared Selection = "wina-shared"
)

// Selections lists the selections.
func Selections() []Selection {
	return []Selection{SelectMagnitude, SelectWINA, SelectWINAShared}
}

// ParseSelection reads a selection's name; the flags and the plan loader
// both use it.
func ParseSelection(s string) (Selection, error) {
	switch v := Selection(s); v {
	case SelectMagnitude, SelectWINA, SelectWINAShared:
		return v, nil
	}
	return "", fmt.Errorf("unknown selection %q (want %s, %s or %s)", s, SelectMagnitude, SelectWINA, SelectWINAShared)
}

// Plan is one model's sparsity allocation.
type Plan struct {
	Version int `json:"version"`
	// Model identifies the checkpoint the plan was made for.
	Model ModelID `json:"model"`
	// Method is the allocation: "uniform", "acttail", "greedy", ...
	Method string `json:"method"`
	// Params are the method's parameters as given (target, eps, ...).
	Params Params `json:"params"`
	// Mode is ModeTopK or ModeThreshold.
	Mode Mode `json:"mode"`
	// Selection ranks the inputs (since version 2; Decode fills in
	// SelectMagnitude for version 1).
	Selection Selection `json:"selection"`
	// Target is the parameter-weighted mean sparsity asked for; Realized is
	// what the integer K values give.
	Target   float64 `json:"target"`
	Realized float64 `json:"realized"`
	// Calibration describes the text the thresholds come from.
	Calibration *Calibration `json:"calibration,omitempty"`
	Sites       []Site       `json:"sites"`
}

// ModelID pins a plan to a checkpoint.
type ModelID struct {
	Name        string `json:"name"`
	Fingerprint string `json:"fingerprint"`
	Layers      int    `json:"layers"`
	Dim         int    `json:"dim"`
	HiddenDim   int    `json:"hidden_dim"`
}

// Params records how a plan was made.
type Params struct {
	Eps          float64 `json:"eps,omitempty"`
	Direction    string  `json:"direction,omitempty"` // "larger-alpha-sparser" or "smaller-alpha-sparser"
	Xmin         string  `json:"xmin,omitempty"`      // ks, mid, peak
	BlockAverage bool    `json:"block_average,omitempty"`
	SMin         float64 `json:"s_min"`
	SMax         float64 `json:"s_max"`
	Seeded       string  `json:"seeded,omitempty"` // greedy: the allocation it started from
}

// Calibration describes the calibration run.
type Calibration struct {
	File   string `json:"file"`
	Tokens int    `json:"tokens"`
}

// Site is one projection's budget and the statistics it came from.
type Site struct {
	Layer int    `json:"layer"`
	Proj  string `json:"proj"` // q, k, v, o, gate, up, down
	DIn   int    `json:"d_in"`
	DOut  int    `json:"d_out"`
	// Sparsity is the planned fraction of inputs dropped; K = the inputs
	// kept per token in topk mode; Threshold the |x| cut in threshold mode.
	Sparsity  float64 `json:"sparsity"`
	K         int     `json:"k"`
	Threshold float32 `json:"threshold"`
	// Heavy-tail fit of the weight's eigenvalue spectrum, when known.
	Alpha     float64 `json:"alpha,omitempty"`
	Xmin      float64 `json:"xmin,omitempty"`
	NTail     int     `json:"n_tail,omitempty"`
	KS        float64 `json:"ks,omitempty"`
	Sigma     float64 `json:"sigma,omitempty"`
	LambdaMax float64 `json:"lambda_max,omitempty"`
}

// Params returns the weight count of the projection.
func (s *Site) Params() int { return s.DIn * s.DOut }

// KeepFor is the number of inputs kept at sparsity s of d inputs:
// ceil((1 − s)·d), at least 1.
func KeepFor(s float64, d int) int {
	k := int(math.Ceil((1-s)*float64(d) - 1e-9))
	return max(1, min(d, k))
}

// Sites lists every projection of a config, in (layer, projection) order,
// with dimensions filled in and sparsity 0.
func Sites(c *model.Config) []Site {
	var out []Site
	for l := range c.NLayers {
		for p := range model.NumProjections {
			dout, din := p.Shape(c)
			out = append(out, Site{Layer: l, Proj: p.String(), DIn: din, DOut: dout, K: din})
		}
	}
	return out
}

// WeightedSparsity is Σ P_i s_i / Σ P_i over sites, with s_i = 1 − K_i/d_in
// when useK, else the planned Sparsity.
func WeightedSparsity(sites []Site, useK bool) float64 {
	var num, den float64
	for _, s := range sites {
		p := float64(s.Params())
		v := s.Sparsity
		if useK {
			v = 1 - float64(s.K)/float64(s.DIn)
		}
		num += p * v
		den += p
	}
	if den == 0 {
		return 0
	}
	return num / den
}

// Index returns the position of (layer, proj) in Sites order.
func Index(layer int, p model.Projection) int { return layer*int(model.NumProjections) + int(p) }

// Validate checks the plan's structure on its own.
func (p *Plan) Validate() error {
	if p.Version != Version {
		return fmt.Errorf("plan version %d; this build reads versions 1 to %d", p.Version, Version)
	}
	if _, err := ParseMode(string(p.Mode)); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	if p.Selection == "" {
		return fmt.Errorf("plan version %d has no selection (want %s, %s or %s)", p.Version, SelectMagnitude, SelectWINA, SelectWINAShared)
	}
	if _, err := ParseSelection(string(p.Selection)); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	if !(p.Target >= 0 && p.Target < 1) {
		return fmt.Errorf("plan target sparsity %g outside [0, 1)", p.Target)
	}
	if len(p.Sites) != p.Model.Layers*int(model.NumProjections) {
		return fmt.Errorf("plan has %d sites; %d layers need %d", len(p.Sites), p.Model.Layers, p.Model.Layers*int(model.NumProjections))
	}
	for i, s := range p.Sites {
		want := model.Projection(i % int(model.NumProjections))
		if s.Layer != i/int(model.NumProjections) || s.Proj != want.String() {
			return fmt.Errorf("plan site %d is layer %d %q; want layer %d %q", i, s.Layer, s.Proj, i/int(model.NumProjections), want)
		}
		switch {
		case s.DIn <= 0 || s.DOut <= 0:
			return fmt.Errorf("plan site layer %d %s: bad shape %d×%d", s.Layer, s.Proj, s.DOut, s.DIn)
		case !(s.Sparsity >= 0 && s.Sparsity < 1):
			return fmt.Errorf("plan site layer %d %s: sparsity %g outside [0, 1)", s.Layer, s.Proj, s.Sparsity)
		case s.K < 1 || s.K > s.DIn:
			return fmt.Errorf("plan site layer %d %s: k %d outside [1, %d]", s.Layer, s.Proj, s.K, s.DIn)
		case !(s.Threshold >= 0) || math.IsInf(float64(s.Threshold), 0):
			return fmt.Errorf("plan site layer %d %s: threshold %g must be finite and ≥ 0", s.Layer, s.Proj, s.Threshold)
		}
	}
	return nil
}

// Check verifies that the plan was made for m (same shapes and weights).
func (p *Plan) Check(m *model.Checkpoint) error {
	id := Identify(m)
	if p.Model.Layers != id.Layers || p.Model.Dim != id.Dim || p.Model.HiddenDim != id.HiddenDim {
		return fmt.Errorf("plan is for %s (%d layers, dim %d, hidden %d), not %s (%d layers, dim %d, hidden %d)",
			p.Model.Name, p.Model.Layers, p.Model.Dim, p.Model.HiddenDim, id.Name, id.Layers, id.Dim, id.HiddenDim)
	}
	if p.Model.Fingerprint != id.Fingerprint {
		return fmt.Errorf("plan is for model %s with fingerprint %.16s…, but %s has %.16s…: the weights differ", p.Model.Name, p.Model.Fingerprint, m.Source, id.Fingerprint)
	}
	for i, s := range Sites(&m.Config) {
		if p.Sites[i].DIn != s.DIn || p.Sites[i].DOut != s.DOut {
			return fmt.Errorf("plan site layer %d %s is %d×%d; the model's is %d×%d", s.Layer, s.Proj, p.Sites[i].DOut, p.Sites[i].DIn, s.DOut, s.DIn)
		}
	}
	return nil
}

// Identify returns the model's identity. The fingerprint is a SHA-256 over
// the tensor names, dtypes, shapes and a sample of each tensor's bytes
// (all of it up to 1 MiB; above that 256 evenly spaced 4 KiB blocks),
// computed in the tensor dtype as stored, so it does not depend on the file
// format but does on the dtype. Hashing every byte of a 13 GB checkpoint
// at every start would cost seconds; the sample still tells apart any two
// real checkpoints.
//
// A sampled tensor that is Mapped has its pages released after (see
// model.Tensor.Release): the kernel maps tens of KiB around every page
// read, so the samples would otherwise bring back most of a file whose
// projections the backend has copied and let go. A tensor the backend
// reads in place is read back from the page cache on its next use.
func Identify(m *model.Checkpoint) ModelID {
	h := sha256.New()
	var buf [8]byte
	for _, n := range m.Names() {
		t := m.Tensors[n]
		io.WriteString(h, n)
		binary.LittleEndian.PutUint64(buf[:], uint64(t.DType))
		h.Write(buf[:])
		for _, d := range t.Shape {
			binary.LittleEndian.PutUint64(buf[:], uint64(d))
			h.Write(buf[:])
		}
		const block, blocks = 4096, 256
		if len(t.Data) <= 1<<20 {
			h.Write(t.Data)
			continue
		}
		step := (len(t.Data) - block) / (blocks - 1)
		for i := range blocks {
			h.Write(t.Data[i*step : i*step+block])
		}
		t.Release()
	}
	name := m.Config.Name
	if name == "" {
		name = filepath.Base(m.Source)
	}
	return ModelID{Name: name, Fingerprint: hex.EncodeToString(h.Sum(nil)), Layers: m.Config.NLayers, Dim: m.Config.Dim, HiddenDim: m.Config.HiddenDim}
}

// Load reads and validates a plan file. At most 64 MiB is read.
func Load(path string) (*Plan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	defer f.Close()
	p, err := Decode(io.LimitReader(f, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("plan %s: %w", path, err)
	}
	return p, nil
}

// Decode reads and validates a plan from r, of this version or an older
// one (upgraded in memory: see Version).
func Decode(r io.Reader) (*Plan, error) {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	var p Plan
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("not a plan file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("trailing data after the plan")
	}
	if p.Version == 1 {
		if p.Selection != "" {
			return nil, fmt.Errorf("plan version 1 has selection %q; selections came with version 2", p.Selection)
		}
		p.Version, p.Selection = Version, SelectMagnitude
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return &p, nil
}

// Save writes the plan as indented JSON, atomically.
func (p *Plan) Save(path string) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("save plan %s: %w", path, err)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("save plan %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("save plan %s: %w", path, err)
	}
	return os.Rename(tmp, path)
}
