package bench

import (
	"fmt"
	"testing"
	"time"

	"github.com/acttail/acttail-gpu/internal/testmodel"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/backend/cpu/matmul"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/synth"
)

// decodeBytes is the weight bytes one decode step reads: every matrix
// (the classifier included) once, plus one embedding row.
func decodeBytes(m *model.Checkpoint) int64 {
	var n int64
	for _, t := range m.Tensors {
		if len(t.Shape) == 2 && t.Name != model.NameEmbed {
			n += int64(len(t.Data))
		}
	}
	emb := m.Tensors[model.NameEmbed]
	if m.Config.TiedOutput {
		n += int64(len(emb.Data))
	}
	return n + int64(len(emb.Data)/emb.Shape[0])
}

// benchDecode measures one-token decode steps; the cache is reset before it
// fills, so every step attends to a short, similar context.
func benchDecode(b *testing.B, m *model.Checkpoint, memBW float64) {
	e, err := engine.Load(cpu.New(0), m)
	if err != nil {
		b.Fatal(err)
	}
	s := e.NewState(256, 1)
	logits := make([]float32, m.Config.VocabSize)
	b.ResetTimer()
	for i := range b.N {
		if s.Pos == s.Context() {
			s.Reset()
		}
		if err := s.Forward([]int{i % m.Config.VocabSize}, logits, false); err != nil {
			b.Fatal(err)
		}
	}
	sec := b.Elapsed().Seconds()
	b.ReportMetric(float64(b.N)/sec, "tok/s")
	bw := float64(decodeBytes(m)) * float64(b.N) / sec
	b.ReportMetric(bw/1e9, "weightGB/s")
	if memBW > 0 {
		b.ReportMetric(memBW/1e9, "memGB/s")
		b.ReportMetric(100*bw/memBW, "%bw")
	}
}

func BenchmarkDecodeStories260K(b *testing.B) {
	m := testmodel.Stories260K(b)
	defer m.Close()
	benchDecode(b, m, 0)
}

// model110M is the synthetic f32 model of about 110M parameters.
func model110M(b *testing.B) *model.Checkpoint {
	c, err := synth.Preset("llama-110m")
	if err != nil {
		b.Fatal(err)
	}
	m, err := synth.New(c, model.F32, 1)
	if err != nil {
		b.Fatal(err)
	}
	return m
}

// BenchmarkDecode110M decodes on a random-weight model of about 110M
// parameters (dim 768, hidden 2048, 12 layers, vocab 32000, f32: 440 MB,
// far beyond the caches) and reports weight bytes read per second next to
// the memory read bandwidth measured in the same run.
func BenchmarkDecode110M(b *testing.B) {
	m := model110M(b)
	bw := matmul.MemReadBandwidth(512 << 20)
	benchDecode(b, m, bw)
}

// BenchmarkDecodeSparse110M decodes the 110M synthetic model dense and
// under uniform top-k plans, in one run, and reports each plan's speed-up
// over the dense pass next to the ideal 1/(1 − s) for the projections'
// bytes (the classifier and attention stay dense, so the whole-step ideal
// is lower).
func BenchmarkDecodeSparse110M(b *testing.B) {
	m := model110M(b)
	c := m.Config
	e, err := engine.LoadWith(cpu.New(0), m, engine.Options{Sparse: true})
	if err != nil {
		b.Fatal(err)
	}
	logits := make([]float32, c.VocabSize)
	rate := func(steps int, bud *backend.Budgets) float64 {
		s := e.NewState(256, 1)
		s.Budgets = bud
		start := time.Now()
		for i := range steps {
			if s.Pos == s.Context() {
				s.Reset()
			}
			if err := s.Forward([]int{i % c.VocabSize}, logits, false); err != nil {
				b.Fatal(err)
			}
		}
		return float64(steps) / time.Since(start).Seconds()
	}
	for _, sp := range []float64{0.5, 0.8, 0.9} {
		b.Run(fmt.Sprintf("s=%.1f", sp), func(b *testing.B) {
			p := &plan.Plan{Version: plan.Version, Selection: plan.SelectMagnitude, Model: plan.Identify(m), Method: "uniform", Mode: plan.ModeTopK, Target: sp, Sites: plan.Sites(&c)}
			for i := range p.Sites {
				p.Sites[i].Sparsity = sp
				p.Sites[i].K = plan.KeepFor(sp, p.Sites[i].DIn)
			}
			dense := rate(20, nil)
			bud, err := e.Budgets(p, "")
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			sparse := rate(b.N, bud)
			b.ReportMetric(sparse, "tok/s")
			b.ReportMetric(dense, "dense-tok/s")
			b.ReportMetric(sparse/dense, "speedup")
			b.ReportMetric(1/(1-sp), "ideal-proj-speedup")
		})
	}
}
