package cuda

// Benchmarks (go test -bench, or the test binary with -test.bench): each
// reports its bandwidth against the device-to-device copy bandwidth
// measured in the same run, never a timed assertion.

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/acttail/acttail-gpu/profile/calib"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/synth"
)

var (
	benchOnce sync.Once
	benchGPU  *Backend
	benchErr  error
	copyBW    float64 // bytes read + written per second
)

// smoke reports ACTTAIL_BENCH_SMOKE: every benchmark on small shapes (the
// stories260k preset for decode), to run their code on the emulator before
// a GPU run does (TestEmulatedGPU). The numbers mean nothing then.
func smoke() bool { return os.Getenv("ACTTAIL_BENCH_SMOKE") != "" }

// shape is (out, in), or a small stand-in under smoke.
func shape(out, in int) (int, int) {
	if smoke() { // a sixteenth, in whole Q8_0 blocks
		return ceilDiv(out/16, 32) * 32, ceilDiv(in/16, 32) * 32
	}
	return out, in
}

// gpuBench opens one backend for every benchmark of the run (weights for a
// 7B model are uploaded once) and measures the copy bandwidth.
func gpuBench(b *testing.B) *Backend {
	benchOnce.Do(func() {
		if benchGPU, benchErr = New(Options{Kernels: os.Getenv("ACTTAIL_KERNELS")}); benchErr != nil {
			return
		}
		n := 256 << 20 // floats: 1 GiB
		if smoke() {
			n = 1 << 20
		}
		src, dst := benchGPU.Alloc(n), benchGPU.Alloc(n)
		copyBW = timeIt(benchGPU, 20, func() { benchGPU.Copy(dst, 0, src, 0, n) }) // warm-up and measure
		copyBW = 2 * 4 * float64(n) / copyBW
	})
	if benchErr != nil {
		b.Skipf("needs a GPU: %v", benchErr)
	}
	return benchGPU
}

// timeIt runs fn reps times after one warm-up call and returns seconds a call.
func timeIt(g *Backend, reps int, fn func()) float64 {
	fn()
	if err := g.Sync(); err != nil {
		panic(err)
	}
	start := time.Now()
	for range reps {
		fn()
	}
	if err := g.Sync(); err != nil {
		panic(err)
	}
	return time.Since(start).Seconds() / float64(reps)
}

func BenchmarkCopy(b *testing.B) {
	gpuBench(b)
	b.ReportMetric(copyBW/1e9, "GB/s")
}

func benchTensor(b *testing.B, d model.DType, out, in int) *model.Tensor {
	r := rand.New(rand.NewPCG(1, 1))
	v := make([]float32, out*in)
	for i := range v {
		v[i] = float32(r.NormFloat64()) * 0.02
	}
	data, err := model.Encode(v, d)
	if err != nil {
		b.Fatal(err)
	}
	return &model.Tensor{Name: "bench", DType: d, Shape: []int{out, in}, Data: data}
}

// BenchmarkMatVec is the dense decode product, one token, on the Llama-2-7B
// MLP shapes: weight bytes per second and their share of copy bandwidth.
func BenchmarkMatVec(b *testing.B) {
	g := gpuBench(b)
	for _, sh := range [][2]int{{4096, 11008}, {11008, 4096}} {
		sh[0], sh[1] = shape(sh[0], sh[1])
		for _, d := range []model.DType{model.BF16, model.Q8_0} {
			b.Run(fmt.Sprintf("%s_%dx%d", d, sh[0], sh[1]), func(b *testing.B) {
				w, err := g.Upload(benchTensor(b, d, sh[0], sh[1]))
				if err != nil {
					b.Fatal(err)
				}
				x, y := g.Alloc(sh[1]), g.Alloc(sh[0])
				g.MatMul(y, w, x, 1)
				g.Sync()
				b.ResetTimer()
				for range b.N {
					g.MatMul(y, w, x, 1)
				}
				g.Sync()
				bw := float64(d.Bytes(sh[0]*sh[1])) * float64(b.N) / b.Elapsed().Seconds()
				b.ReportMetric(bw/1e9, "GB/s")
				b.ReportMetric(100*bw/copyBW, "%copy")
			})
		}
	}
}

// BenchmarkPrefill is the GEMM of a prefill chunk (512 tokens) on the
// Llama-2-7B MLP shapes in bf16, two ways side by side: own (at_gemm, TF32
// tensor cores) and cublas (cublasGemmEx, where cuBLAS loads; its time
// includes narrowing the activations to bf16). It reports TFLOP/s, and
// x_own, own's time over cuBLAS's.
func BenchmarkPrefill(b *testing.B) {
	g := gpuBench(b)
	own, err := New(Options{Kernels: os.Getenv("ACTTAIL_KERNELS"), NoBLAS: true})
	if err != nil {
		b.Fatal(err)
	}
	defer own.Close()
	rows := 512
	if smoke() {
		rows = 16
	}
	for _, sh := range [][2]int{{11008, 4096}, {4096, 11008}} {
		sh[0], sh[1] = shape(sh[0], sh[1])
		t := benchTensor(b, model.BF16, sh[0], sh[1])
		var ownSec float64
		for _, v := range []struct {
			name string
			be   *Backend
		}{{"own", own}, {"cublas", g}} {
			b.Run(fmt.Sprintf("BF16_%dx%d_rows%d/%s", sh[0], sh[1], rows, v.name), func(b *testing.B) {
				if v.be.blas == nil && v.name == "cublas" {
					b.Skipf("no cuBLAS: %s", v.be.BLAS())
				}
				w, err := v.be.Upload(t)
				if err != nil {
					b.Fatal(err)
				}
				x, y := v.be.Alloc(rows*sh[1]), v.be.Alloc(rows*sh[0])
				v.be.MatMul(y, w, x, rows)
				must(v.be.Sync())
				b.ResetTimer()
				for range b.N {
					v.be.MatMul(y, w, x, rows)
				}
				must(v.be.Sync())
				sec := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(2*float64(rows*sh[0]*sh[1])/sec/1e12, "TFLOP/s")
				if v.name == "own" {
					ownSec = sec
				} else if ownSec > 0 {
					b.ReportMetric(ownSec/sec, "x_own")
				}
			})
		}
	}
}

// BenchmarkSparse is the sparse product on the transposed 4096×11008 bf16
// down projection at sparsity s, on random inputs, three ways:
//   - gather: the at_gather kernel alone, over a kept list at_select made
//     beforehand (the "sparse gather product");
//   - topk: SparseMatMul with an exact top-k site (at_select + at_gather);
//   - threshold: SparseMatMul with the |x| quantile as threshold (at_zero +
//     at_gather_thr, selection inside the gather).
//
// ratio is the time over (1 − s) × the dense transposed product's time (1
// is ideal; the target is ≤ 1.25).
func BenchmarkSparse(b *testing.B) {
	g := gpuBench(b)
	out, in := shape(4096, 11008)
	w, err := g.UploadSparse(benchTensor(b, model.BF16, out, in))
	if err != nil {
		b.Fatal(err)
	}
	m := w.(*Mat)
	x, y := g.Alloc(in), g.Alloc(out)
	r := rand.New(rand.NewPCG(2, 2))
	xv := make([]float32, in)
	for i := range xv {
		xv[i] = float32(r.NormFloat64())
	}
	g.Write(x, 0, xv)
	mags := make([]float64, in)
	for i, v := range xv {
		mags[i] = math.Abs(float64(v))
	}
	slices.Sort(mags)
	reps := 200
	if smoke() {
		reps = 2
	}
	dense := timeIt(g, reps, func() { g.SparseMatMul(y, w, x, 1, backend.Budget{ID: -1, TopK: true, K: in}) })
	b.Run("dense", func(b *testing.B) {
		for range b.N {
			g.SparseMatMul(y, w, x, 1, backend.Budget{ID: -1, TopK: true, K: in})
		}
		g.Sync()
		b.ReportMetric(float64(2*out*in)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GB/s")
	})
	for _, s := range []float64{0.5, 0.7, 0.8, 0.9} {
		k := int(float64(in) * (1 - s))
		topk := backend.Budget{ID: 0, TopK: true, K: k}
		thr := backend.Budget{ID: 1, Threshold: float32(mags[in-k-1])} // keeps the k largest (no ties in random data)
		// The gather alone, on the kept list of one top-k select; it adds
		// to y (accum) so that nothing else runs.
		g.SparseMatMul(y, w, x, 1, topk)
		if err := g.Sync(); err != nil {
			b.Fatal(err)
		}
		idx, cnt := g.scratch[scratchIdx], g.scratch[scratchCount]
		image := packGroup([]proj{{y: buf(y).p, w: m.p, out: out, stat: -1, accum: true}})
		gl := gatherLaunch(1, []int{out}, k, g.info.SMs, vecElems(model.BF16, true))
		gather := func() { g.launch("at_gather_bf16", gl, buf(x).p, idx, cnt, in, 1, 1, image) }
		for _, v := range []struct {
			name string
			run  func()
		}{
			{"gather", gather},
			{"topk", func() { g.SparseMatMul(y, w, x, 1, topk) }},
			{"threshold", func() { g.SparseMatMul(y, w, x, 1, thr) }},
		} {
			b.Run(fmt.Sprintf("s=%.1f/%s", s, v.name), func(b *testing.B) {
				v.run()
				g.Sync()
				b.ResetTimer()
				for range b.N {
					v.run()
				}
				g.Sync()
				per := b.Elapsed().Seconds() / float64(b.N)
				b.ReportMetric(per/((1-s)*dense), "ratio")
				b.ReportMetric(float64(2*out*k)/per/1e9, "GB/s")
			})
		}
	}
	kept, seen := g.SparseStats()
	if len(seen) > 1 && seen[1] > 0 {
		b.Logf("threshold sites kept %.3f of the inputs", float64(kept[1])/float64(seen[1]))
	}
}

// timeSteps times 8 decode steps of e under bud op by op and prints where their
// device time went, a line a kind of op ("timing NAME OP ..."), for the
// GPU check's summary.
func timeSteps(b *testing.B, g *Backend, e *engine.Model, bud *backend.Budgets, name string) {
	const steps = 8
	st := e.NewState(512, 1)
	st.Budgets = bud
	logits := make([]float32, e.Config.VocabSize)
	if err := st.Forward([]int{1, 2, 3, 4}, make([]float32, e.Config.VocabSize), false); err != nil {
		b.Fatal(err)
	}
	g.StartTiming()
	for i := range steps {
		if err := st.Forward([]int{(5 + i) % e.Config.VocabSize}, logits, false); err != nil {
			b.Fatal(err)
		}
	}
	kt, err := g.StopTiming()
	if err != nil {
		b.Fatal(err)
	}
	var total float64
	for _, k := range kt {
		total += k.Seconds
	}
	fmt.Printf("timing %s: %.1f µs of device time a step in %d kinds of op\n", name, 1e6*total/steps, len(kt))
	for _, k := range kt {
		fmt.Printf("timing %s %-28s %5d calls a step %9.1f µs a step %7.2f µs a call %5.1f%%\n", name, k.Name,
			k.Calls/steps, 1e6*k.Seconds/steps, 1e6*k.Seconds/float64(k.Calls), 100*k.Seconds/total)
	}
}

var (
	llamaOnce sync.Once
	llama     *model.Checkpoint
	llamaErr  error
)

// decodeModes are the ways the decode benchmarks run a step:
//   - graphs: Forward of one token as a CUDA graph, logits read back;
//   - eager: the same op by op;
//   - chained: as generate runs on this backend (backend.Chainer), a graph
//     whose token is the one at_pick chose on the device, queued before the
//     previous token is read, so the host's share overlaps the device's.
var decodeModes = []string{"graphs", "eager", "chained"}

// decodeStepper returns one decode step of st in mode (decodeModes), and
// the call that ends the run (it reads the last chained pick).
func decodeStepper(b *testing.B, g *Backend, st *engine.State, mode string) (step, finish func()) {
	V := st.Vocab()
	if mode != "chained" {
		logits := make([]float32, V)
		i := 0
		step = func() {
			if st.Pos == st.Context() {
				st.Reset()
			}
			if err := st.Forward([]int{i % V}, logits, false); err != nil {
				b.Fatal(err)
			}
			i++
		}
		return step, func() {}
	}
	var pending backend.Ticket
	started := false
	step = func() {
		if !started || st.Pos == st.Context() {
			if started {
				g.Picked(pending)
				st.Reset()
			}
			if err := st.Decode(1); err != nil {
				b.Fatal(err)
			}
			pending, started = g.PickNext(st.Logits(), V, 0, 0), true
			return
		}
		if err := st.DecodePicked(); err != nil {
			b.Fatal(err)
		}
		next := g.PickNext(st.Logits(), V, 0, 0)
		g.Picked(pending)
		pending = next
	}
	finish = func() {
		if started {
			g.Picked(pending)
		}
	}
	return step, finish
}

// timeDecode times b.N decode steps of st in mode after 3 untimed ones and
// returns seconds a step.
func timeDecode(b *testing.B, g *Backend, st *engine.State, mode string) float64 {
	step, finish := decodeStepper(b, g, st, mode)
	for range 3 {
		step()
	}
	b.ResetTimer()
	for range b.N {
		step()
	}
	finish()
	return b.Elapsed().Seconds() / float64(b.N)
}

// BenchmarkDecode7B is one-token decode on a synthetic Llama-2-7B-shaped
// bf16 model (13.5 GB, made on the host): dense weights, and transposed
// weights with no plan, 50% and 80% uniform plans in top-k and in
// threshold mode (thresholds calibrated on the GPU); each in the
// decodeModes. x_dense is tok/s over the dense model's, same mode;
// %sparse is the weighted sparsity the timed steps realized.
func BenchmarkDecode7B(b *testing.B) {
	gpuBench(b) // copy bandwidth
	llamaOnce.Do(func() {
		preset := "llama-2-7b"
		if smoke() {
			preset = "stories260k"
		}
		cfg, err := synth.Preset(preset)
		if err != nil {
			llamaErr = err
			return
		}
		llama, llamaErr = synth.New(cfg, model.BF16, 7)
	})
	if llamaErr != nil {
		b.Fatal(llamaErr)
	}
	c := &llama.Config
	var weights int64
	for _, t := range llama.Tensors {
		if len(t.Shape) == 2 && t.Name != model.NameEmbed {
			weights += int64(len(t.Data))
		}
	}
	denseTok := map[string]float64{} // dense decode tok/s, with graphs and without
	for _, sparse := range []bool{false, true} {
		// A backend per model, so that Close frees its 13.5 GB.
		g, err := New(Options{Kernels: os.Getenv("ACTTAIL_KERNELS")})
		if err != nil {
			b.Fatal(err)
		}
		e, err := engine.LoadWith(g, llama, engine.Options{Sparse: sparse})
		if err != nil {
			b.Fatal(err)
		}
		type level struct {
			s    float64
			mode plan.Mode
		}
		levels := []level{{0, ""}}
		if sparse {
			levels = []level{{0, ""}, {0.5, plan.ModeTopK}, {0.8, plan.ModeTopK}, {0.5, plan.ModeThreshold}, {0.8, plan.ModeThreshold}}
		}
		for _, lv := range levels {
			s := lv.s
			name := "dense"
			var bud *backend.Budgets
			if sparse {
				name = fmt.Sprintf("transposed_s=%.1f", s)
				if s > 0 {
					name += "_" + string(lv.mode)
					p := uniformPlan(c, s)
					var err error
					if bud, err = e.Budgets(p, plan.ModeTopK); err != nil {
						b.Fatal(err)
					}
					if lv.mode == plan.ModeThreshold {
						// Thresholds that realize s on 32 random tokens (the
						// synthetic model has no text), as profile does.
						st := e.NewState(64, 64)
						toks := make([]int, 32)
						for i := range toks {
							toks[i] = (7919*i + 13) % c.VocabSize
						}
						if _, err := calib.Calibrate(context.Background(), st, toks, p.Sites, plan.SelectMagnitude, 1); err != nil {
							b.Fatal(err)
						}
						if bud, err = e.SiteBudgets(calib.ThresholdBudgets(p.Sites, nil)); err != nil {
							b.Fatal(err)
						}
					}
				}
			}
			e.Realized() // reset the counters
			for _, mode := range decodeModes {
				g.setGraphs(mode != "eager")
				b.Run(name+"/"+mode, func(b *testing.B) {
					st := e.NewState(512, 1)
					st.Budgets = bud
					sec := timeDecode(b, g, st, mode)
					b.ReportMetric(1/sec, "tok/s")
					b.ReportMetric(100*float64(weights)*(1-s)/sec/copyBW, "%copy")
					if !sparse {
						denseTok[mode] = 1 / sec
					} else if d := denseTok[mode]; d > 0 {
						b.ReportMetric(1/sec/d, "x_dense")
					}
					if _, w := e.Realized(); s > 0 {
						b.ReportMetric(100*w, "%sparse")
					}
				})
			}
			g.setGraphs(true)
			if gs := g.GraphStats(); gs.Failed > 0 {
				b.Logf("%s: %d graph captures failed: %v", name, gs.Failed, gs.LastError)
			}
			timeSteps(b, g, e, bud, "Decode7B/"+name)
		}
		if err := g.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeFloor is one-token decode on a model with Llama-2-7B's
// layer count, heads and vocabulary but a width of 128 (hidden 344): the
// device has next to nothing to compute, so a step takes its fixed cost,
// which sparsity cannot remove: the host's recording, dry run and graph
// launch (or the eager launches), the latency of some 300–420 small
// kernels, and reading the logits or the picked token. Dense, 80% top-k
// and a threshold plan, each in the decodeModes; us/step, and x_graphs
// (time over the graphs mode's). On the emulator with ACTTAIL_EMU_SKIP_KERNELS=1 the kernels are
// not run, and us/step is the host's share alone.
func BenchmarkDecodeFloor(b *testing.B) {
	g, err := New(Options{Kernels: os.Getenv("ACTTAIL_KERNELS")})
	if err != nil {
		b.Skipf("needs a GPU: %v", err)
	}
	defer g.Close()
	cfg, err := synth.Preset("llama-2-7b")
	if err != nil {
		b.Fatal(err)
	}
	cfg.Dim, cfg.HiddenDim, cfg.HeadDim, cfg.SeqLen = 128, 344, 4, 512
	if smoke() {
		cfg.NLayers, cfg.VocabSize = 4, 512
	}
	m, err := synth.New(cfg, model.BF16, 11)
	if err != nil {
		b.Fatal(err)
	}
	e, err := engine.LoadWith(g, m, engine.Options{Sparse: true})
	if err != nil {
		b.Fatal(err)
	}
	for _, level := range []string{"dense", "topk_0.8", "threshold"} {
		var bud *backend.Budgets
		switch level {
		case "topk_0.8":
			bud, err = e.Budgets(uniformPlan(&cfg, 0.8), plan.ModeTopK)
		case "threshold":
			p := uniformPlan(&cfg, 0.8)
			for i := range p.Sites {
				p.Sites[i].Threshold = 0.5
			}
			bud, err = e.SiteBudgets(calib.ThresholdBudgets(p.Sites, nil))
		}
		if err != nil {
			b.Fatal(err)
		}
		var graphSec float64
		for _, mode := range decodeModes {
			g.setGraphs(mode != "eager")
			b.Run(level+"/"+mode, func(b *testing.B) {
				st := e.NewState(cfg.SeqLen, 1)
				st.Budgets = bud
				sec := timeDecode(b, g, st, mode)
				b.ReportMetric(sec*1e6, "us/step")
				if mode == "graphs" {
					graphSec = sec
				} else if graphSec > 0 {
					b.ReportMetric(sec/graphSec, "x_graphs")
				}
			})
		}
		g.setGraphs(true)
	}
}
