package engine

import (
	"math"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// A batched step gives each sequence the logits it gets alone, dense and
// sparse, with sequences at different positions; on a sparse-loaded model
// the rows run under budgets of their own in one step: two plans, and a
// dense row, in an order that cuts the rows into several runs.
func TestBatchMatchesSingle(t *testing.T) {
	for _, sparse := range []bool{false, true} {
		m := randomModel(t, smallConfig(), model.F32, 21)
		e, err := LoadWith(cpu.New(0), m, Options{Sparse: sparse})
		if err != nil {
			t.Fatal(err)
		}
		prompts := [][]int{{1, 2, 3}, {4}, {5, 6, 7, 8, 9, 10}, {2, 9}, {7, 7, 1}}
		next := []int{11, 12, 13, 14, 15}
		buds := make([]*backend.Budgets, len(prompts)) // all dense unless sparse
		if sparse {
			a, err := e.Budgets(randomPlan(m, 5), plan.ModeTopK)
			if err != nil {
				t.Fatal(err)
			}
			b, err := e.Budgets(randomPlan(m, 6), plan.ModeThreshold)
			if err != nil {
				t.Fatal(err)
			}
			buds = []*backend.Budgets{a, a, b, nil, a}
		}
		V := m.Config.VocabSize
		prefilled := func() []*State {
			var states []*State
			for i, p := range prompts {
				s := e.NewState(0, 8)
				s.Budgets, s.SparseFrom = buds[i], len(p)
				if err := s.Forward(p, make([]float32, V), false); err != nil {
					t.Fatal(err)
				}
				states = append(states, s)
			}
			return states
		}
		// alone
		want := make([][]float32, len(prompts))
		for i, s := range prefilled() {
			want[i] = make([]float32, V)
			if err := s.Forward([]int{next[i]}, want[i], false); err != nil {
				t.Fatal(err)
			}
		}
		// together
		states := prefilled()
		bt := e.NewBatch(len(states))
		got := make([]float32, len(states)*V)
		if err := bt.Step(states, next, got); err != nil {
			t.Fatalf("step: %v", err)
		}
		for i := range states {
			if states[i].Pos != len(prompts[i])+1 {
				t.Fatalf("sequence %d at position %d", i, states[i].Pos)
			}
			for j := range V {
				if d := math.Abs(float64(got[i*V+j] - want[i][j])); d > 1e-5 {
					t.Fatalf("sparse=%v seq %d logit %d: batch %g, alone %g", sparse, i, j, got[i*V+j], want[i][j])
				}
			}
		}
		if err := bt.Step(append(states, states...), make([]int, 2*len(states)), make([]float32, 2*len(states)*V)); err == nil {
			t.Fatal("oversized batch accepted")
		}
	}
}

// stepper is the CPU backend with the Stepper protocol checked: no Read,
// Write or SparseStats between BeginStep and EndStep, no nesting.
type stepper struct {
	*cpu.Backend
	t           *testing.T
	in          bool
	begin, ends int
}

func (s *stepper) BeginStep() {
	if s.in {
		s.t.Error("BeginStep inside a step")
	}
	s.in = true
	s.begin++
}

func (s *stepper) EndStep() {
	if !s.in {
		s.t.Error("EndStep outside a step")
	}
	s.in = false
	s.ends++
}

func (s *stepper) Read(dst []float32, b backend.Buffer, off int) {
	if s.in {
		s.t.Error("Read inside a step")
	}
	s.Backend.Read(dst, b, off)
}

func (s *stepper) Write(b backend.Buffer, off int, src []float32) {
	if s.in {
		s.t.Error("Write inside a step")
	}
	s.Backend.Write(b, off, src)
}

func (s *stepper) SparseStats() (kept, seen []int64) {
	if s.in {
		s.t.Error("SparseStats inside a step")
	}
	return s.Backend.SparseStats()
}

// TestStepProtocol checks where the engine brackets decode steps for a
// Stepper backend (the CUDA graphs): every one-token decode and batch step,
// no prefill chunk, nothing while Observe reads activations; and that the
// logits are those of the plain backend.
func TestStepProtocol(t *testing.T) {
	m := randomModel(t, smallConfig(), model.F32, 23)
	V := m.Config.VocabSize
	st := &stepper{Backend: cpu.New(0), t: t}
	es, err := LoadWith(st, m, Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	ep, err := LoadWith(cpu.New(0), m, Options{Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	run := func(e *Model) []float32 {
		var out []float32
		bud, err := e.Budgets(randomPlan(m, 5), plan.ModeTopK)
		if err != nil {
			t.Fatal(err)
		}
		s := e.NewState(0, 4)
		s.Budgets = bud
		logits := make([]float32, 6*V)
		if err := s.Forward([]int{1, 2, 3, 4, 5, 6}, logits, false); err != nil { // chunks of 4 and 2: no step
			t.Fatal(err)
		}
		out = append(out, logits[:V]...)
		for _, tok := range []int{7, 8, 9} { // three steps
			if err := s.Forward([]int{tok}, logits, false); err != nil {
				t.Fatal(err)
			}
			out = append(out, logits[:V]...)
		}
		if err := s.Forward([]int{10}, logits, true); err != nil { // one step, all rows
			t.Fatal(err)
		}
		out = append(out, logits[:V]...)
		s.Observe = func(int, model.Projection, []float32, int, int) {}
		if err := s.Forward([]int{11}, logits, false); err != nil { // observed: no step
			t.Fatal(err)
		}
		out = append(out, logits[:V]...)
		s.Observe = nil
		bt := e.NewBatch(2)
		s2 := e.NewState(0, 4)
		s2.Budgets = bud
		if err := s2.Forward([]int{3}, logits, false); err != nil { // one step
			t.Fatal(err)
		}
		if err := bt.Step([]*State{s, s2}, []int{12, 13}, logits); err != nil { // one step
			t.Fatal(err)
		}
		return append(out, logits[:2*V]...)
	}
	got, want := run(es), run(ep)
	if st.begin != 6 || st.ends != 6 {
		t.Errorf("%d BeginStep and %d EndStep, want 6 each", st.begin, st.ends)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("logit %d: %g with steps, %g without", i, got[i], want[i])
		}
	}
}
