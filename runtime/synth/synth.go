// Package synth makes random-weight Llama models of real shapes, for speed
// tests only: their output is noise, never evidence of accuracy.
//
// Weights are drawn uniformly with the variance of the usual initialisation,
// so activations keep unit scale through the layers:
//   - the token embedding has variance 1;
//   - q, k, v, gate and up, and the classifier, have variance 1/in, so a
//     unit-RMS input gives a unit-RMS output;
//   - o and down, which write into the residual stream, have variance
//     1/(in·2·layers), so the residual stays O(1) after all 2·layers
//     additions (GPT-2's residual scaling);
//   - RMSNorm weights are 1.0 and are stored as F32 whatever the dtype.
//
// A uniform draw on [-a, a] with a = σ√3 has the same variance as N(0, σ²) and
// costs one multiply per value instead of a Box-Muller transform. Each chunk
// of 64Ki values takes its own PCG generator seeded from (seed, tensor,
// chunk), so the bytes depend only on the config, dtype and seed, not on how
// many goroutines made them.
package synth

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

// presets are the named shapes, keyed by lowercase name.
var presets = map[string]model.Config{
	"llama-2-7b":  llama(4096, 11008, 32, 32, 32, 32000, 4096, 1e4),
	"llama-2-13b": llama(5120, 13824, 40, 40, 40, 32000, 4096, 1e4),
	"llama-3-8b":  llama(4096, 14336, 32, 32, 8, 128256, 8192, 5e5),
	// Mistral-7B-v0.1: rope theta 1e4; its 4096-token sliding window is not
	// part of model.Config, so attention here is over the whole context.
	"mistral-7b":  llama(4096, 14336, 32, 32, 8, 32000, 32768, 1e4),
	"llama-110m":  llama(768, 2048, 12, 12, 12, 32000, 1024, 1e4),
	"stories260k": llama(64, 172, 5, 8, 4, 512, 512, 1e4),
}

func llama(dim, hidden, layers, heads, kvHeads, vocab, seq int, rope float64) model.Config {
	return model.Config{
		Arch: "llama", Dim: dim, HiddenDim: hidden, NLayers: layers, NHeads: heads, NKVHeads: kvHeads,
		HeadDim: dim / heads, VocabSize: vocab, SeqLen: seq, NormEps: 1e-5, RopeTheta: rope,
		Synthetic: true,
	}
}

// Presets lists the preset names, sorted.
func Presets() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Preset returns the config of a named shape (case-insensitive), with an
// untied classifier, Synthetic set and Name the preset name.
func Preset(name string) (model.Config, error) {
	key := strings.ToLower(name)
	cfg, ok := presets[key]
	if !ok {
		return model.Config{}, fmt.Errorf("synth: unknown preset %q (known: %s)", name, strings.Join(Presets(), ", "))
	}
	cfg.Name = key
	return cfg, nil
}

// Options tunes NewWith.
type Options struct {
	// Progress, if not nil, is advanced by the bytes generated; size it
	// with Size.
	Progress *progress.Bar
	// Workers is the number of goroutines; 0 means GOMAXPROCS.
	Workers int
}

// New returns a model with every tensor of cfg.Shapes() filled with random
// values (see the package comment) encoded in dtype, and a synthetic
// vocabulary (see Vocab). The same cfg, dtype and seed give the same bytes.
func New(cfg model.Config, dtype model.DType, seed uint64) (*model.Checkpoint, error) {
	return NewWith(cfg, dtype, seed, Options{})
}

// chunkElems is the number of values one generator makes; a multiple of
// model.Q8Block so chunks never split a block.
const chunkElems = 1 << 16

// job is one chunk of one tensor.
type job struct {
	tensor int // index into the shapes
	start  int // first element
	n      int // element count
}

// NewWith is New with options.
func NewWith(cfg model.Config, dtype model.DType, seed uint64, opt Options) (*model.Checkpoint, error) {
	if err := checkDType(&cfg, dtype); err != nil {
		return nil, err
	}
	cfg.Synthetic = true
	shapes := cfg.Shapes()
	sigma := sigmas(&cfg, shapes)
	m := model.New(cfg)
	m.Source = "synthetic " + cfg.Name
	m.Format = "synthetic"
	m.Vocab = Vocab(cfg.VocabSize)

	tensors := make([]*model.Tensor, len(shapes))
	var jobs []job
	for i, s := range shapes {
		n := model.Elems(s.Shape)
		t := &model.Tensor{Name: s.Name, DType: dtype, Shape: s.Shape}
		if len(s.Shape) == 1 {
			// RMSNorm weights: 1.0 in F32, nothing to draw.
			t.DType = model.F32
			t.Data = make([]byte, 4*n)
			for j := range n {
				binary.LittleEndian.PutUint32(t.Data[4*j:], math.Float32bits(1))
			}
			opt.Progress.Add(int64(len(t.Data)))
		} else {
			t.Data = make([]byte, dtype.Bytes(n))
			for start := 0; start < n; start += chunkElems {
				jobs = append(jobs, job{tensor: i, start: start, n: min(chunkElems, n-start)})
			}
		}
		tensors[i] = t
		m.Add(t)
	}

	workers := opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]float32, chunkElems)
			for {
				k := int(next.Add(1) - 1)
				if k >= len(jobs) {
					return
				}
				j := jobs[k]
				t := tensors[j.tensor]
				vals := buf[:j.n]
				fill(vals, seed, j, sigma[j.tensor])
				b, err := model.Encode(vals, dtype)
				if err != nil {
					errs[w] = fmt.Errorf("synth: tensor %s: %w", t.Name, err)
					return
				}
				copy(t.Data[dtype.Bytes(j.start):], b)
				opt.Progress.Add(int64(len(b)))
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// checkDType rejects configs and dtypes that cannot make a well-formed
// model: an invalid config, an unknown dtype, or Q8_0 rows that are not
// whole blocks (GGUF and the kernels quantise along rows).
func checkDType(cfg *model.Config, dtype model.DType) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	if dtype.Bytes(model.Q8Block) < 0 {
		return fmt.Errorf("synth: unsupported dtype %s", dtype)
	}
	if dtype == model.Q8_0 {
		for _, s := range cfg.Shapes() {
			if len(s.Shape) == 2 && s.Shape[1]%model.Q8Block != 0 {
				return fmt.Errorf("synth: Q8_0 needs rows of whole %d-value blocks; %s has rows of %d", model.Q8Block, s.Name, s.Shape[1])
			}
		}
	}
	return nil
}

// Size is the number of bytes NewWith will generate for cfg in dtype
// (RMSNorm weights counted as F32), for sizing a progress bar or refusing
// a model that will not fit in memory.
func Size(cfg model.Config, dtype model.DType) (int64, error) {
	if err := checkDType(&cfg, dtype); err != nil {
		return 0, err
	}
	var total int64
	for _, s := range cfg.Shapes() {
		n := model.Elems(s.Shape)
		if len(s.Shape) == 1 {
			total += int64(model.F32.Bytes(n))
		} else {
			total += int64(dtype.Bytes(n))
		}
	}
	return total, nil
}

// sigmas is the standard deviation of each matrix's values (see the
// package comment); 0 for the RMSNorm weights.
func sigmas(cfg *model.Config, shapes []model.NamedShape) []float64 {
	residual := map[string]bool{}
	for l := range cfg.NLayers {
		residual[model.ProjName(l, model.ProjO)] = true
		residual[model.ProjName(l, model.ProjDown)] = true
	}
	out := make([]float64, len(shapes))
	for i, s := range shapes {
		switch {
		case len(s.Shape) != 2:
		case s.Name == model.NameEmbed:
			out[i] = 1
		case residual[s.Name]:
			out[i] = 1 / math.Sqrt(float64(s.Shape[1])*2*float64(cfg.NLayers))
		default:
			out[i] = 1 / math.Sqrt(float64(s.Shape[1]))
		}
	}
	return out
}

// fill writes uniform values on [-σ√3, σ√3) into dst from the generator of
// chunk j: each 64-bit draw gives two values from its signed 32-bit halves.
func fill(dst []float32, seed uint64, j job, sigma float64) {
	pcg := rand.NewPCG(splitmix(seed), splitmix(uint64(j.tensor)<<40^uint64(j.start)^splitmix(seed)))
	scale := float32(sigma * math.Sqrt(3) / (1 << 31))
	i := 0
	for ; i+1 < len(dst); i += 2 {
		u := pcg.Uint64()
		dst[i] = float32(int32(u)) * scale
		dst[i+1] = float32(int32(u>>32)) * scale
	}
	if i < len(dst) {
		dst[i] = float32(int32(pcg.Uint64())) * scale
	}
}

// splitmix is SplitMix64's finaliser: it spreads nearby seeds over the
// whole state space, so chunk generators are unrelated.
func splitmix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// Vocab returns a SentencePiece-style vocabulary of size tokens that the
// tokenizer can encode and decode any text with: "<unk>", "<s>", "</s>",
// the 256 byte tokens "<0x00>".."<0xFF>", then pieces "▁tok<id>". Scores
// descend with the id. A size under 259 keeps only the first size tokens.
func Vocab(size int) *model.Vocab {
	v := &model.Vocab{
		Kind: model.VocabSPM, BOS: -1, EOS: -1, UNK: 0,
		AddBOS: true, AddSpacePrefix: true,
		Tokens: make([]string, 0, size),
		Scores: make([]float32, 0, size),
		Types:  make([]model.TokenType, 0, size),
	}
	add := func(tok string, typ model.TokenType) {
		if len(v.Tokens) < size {
			v.Scores = append(v.Scores, -float32(len(v.Tokens)))
			v.Tokens = append(v.Tokens, tok)
			v.Types = append(v.Types, typ)
		}
	}
	add("<unk>", model.TokenUnknown)
	add("<s>", model.TokenControl)
	add("</s>", model.TokenControl)
	for b := range 256 {
		add(fmt.Sprintf("<0x%02X>", b), model.TokenByte)
	}
	for id := len(v.Tokens); id < size; id++ {
		add(fmt.Sprintf("▁tok%d", id), model.TokenNormal)
	}
	if size > 1 {
		v.BOS = 1
	}
	if size > 2 {
		v.EOS = 2
	}
	if size < 1 {
		v.UNK = -1
	}
	return v
}
