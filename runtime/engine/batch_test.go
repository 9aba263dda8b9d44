package engine

import (
	"math"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// A batched step gives each sequence the logits it gets alone, dense and
// sparse, with sequences at different positions.
func TestBatchMatchesSingle(t *testing.T) {
	for _, sparse := range []bool{false, true} {
		m := randomModel(t, smallConfig(), model.F32, 21)
		e, err := LoadWith(cpu.New(0), m, Options{Sparse: sparse})
		if err != nil {
			t.Fatal(err)
		}
		if sparse {
			if err := e.SetPlan(randomPlan(m, 5), plan.ModeTopK); err != nil {
				t.Fatal(err)
			}
		}
		V := m.Config.VocabSize
		prompts := [][]int{{1, 2, 3}, {4}, {5, 6, 7, 8, 9, 10}}
		next := []int{11, 12, 13}
		// alone
		want := make([][]float32, len(prompts))
		for i, p := range prompts {
			s := e.NewState(0, 8)
			s.SparseFrom = len(p)
			if err := s.Forward(p, make([]float32, V), false); err != nil {
				t.Fatal(err)
			}
			want[i] = make([]float32, V)
			if err := s.Forward([]int{next[i]}, want[i], false); err != nil {
				t.Fatal(err)
			}
		}
		// together
		var states []*State
		for _, p := range prompts {
			s := e.NewState(0, 8)
			s.SparseFrom = len(p)
			if err := s.Forward(p, make([]float32, V), false); err != nil {
				t.Fatal(err)
			}
			states = append(states, s)
		}
		bt := e.NewBatch(4)
		got := make([]float32, len(states)*V)
		dense, err := bt.Step(states, next, got)
		if err != nil || dense {
			t.Fatalf("step: dense %v, %v", dense, err)
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
		if _, err := bt.Step(append(states, states...), []int{1, 1, 1, 1, 1, 1}, make([]float32, 6*V)); err == nil {
			t.Fatal("oversized batch accepted")
		}
	}
}
