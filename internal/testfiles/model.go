package testfiles

import (
	"math/rand/v2"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// FuzzModel builds a small random model from a fuzzer's arguments, for
// writer round trips. shape holds one field a byte: kv heads, heads and
// context, head dim, dim, hidden dim (or vocab size without tokens),
// layers, dtype (one of dtypes) and flags (1 tied, 2 BPE, 4 RoPE scaling,
// 8 synthetic, 32 add BOS, 64 add space prefix). tokens, one a line, are the
// vocabulary (none when empty; at most 32 lines). Matrices are stored in
// the dtype and norms in F32, as the writers store them, so a round trip
// keeps every byte. ok is false when the fields make no valid config.
func FuzzModel(shape uint64, dtypes []model.DType, tokens, template, merges string) (m *model.Checkpoint, dtype model.DType, ok bool) {
	b := func(i int) int { return int(shape >> (8 * i) & 0xff) }
	dtype = dtypes[b(6)%len(dtypes)]
	flags := b(7)
	cfg := model.Config{Arch: "llama", NKVHeads: 1 + b(0)%2, HeadDim: 2 * (1 + b(2)%4), Dim: 2 * (1 + b(3)%8),
		HiddenDim: 1 + b(4)%8, NLayers: 1 + b(5)%2, SeqLen: 1 + b(1), NormEps: 1e-5, RopeTheta: 10000,
		TiedOutput: flags&1 != 0, Synthetic: flags&8 != 0, Name: "fuzz"}
	cfg.NHeads = cfg.NKVHeads * (1 + b(1)%2)
	if dtype == model.Q8_0 { // rows of whole blocks, or a writer stores F16
		cfg.Dim, cfg.HiddenDim, cfg.HeadDim = 32, 32, 32/cfg.NHeads
	}
	if flags&4 != 0 {
		cfg.RopeTheta = 500000
		cfg.RopeScale = &model.RopeScaling{Type: "llama3", Factor: 8, LowFreqFactor: 1, HighFreqFactor: 4, OriginalMaxPosition: 16}
	}
	var v *model.Vocab
	if tokens != "" {
		toks := strings.Split(tokens, "\n")
		toks = toks[:min(len(toks), 32)]
		n := len(toks)
		v = &model.Vocab{Kind: model.VocabSPM, Tokens: toks, BOS: n / 2, EOS: n - 1, UNK: -1, AddBOS: flags&32 != 0,
			AddSpacePrefix: flags&64 != 0, ChatTemplate: template}
		if flags&2 != 0 {
			v.Kind, v.PreTokenizer = model.VocabBPE, "llama3"
			if merges != "" {
				v.Merges = strings.Split(merges, "\n")
			}
			if n > 1 {
				v.EOT = []int{0, n - 2}
			}
		} else {
			for i := range toks {
				v.Scores = append(v.Scores, -float32(i))
				v.Types = append(v.Types, model.TokenType(1+i%6))
			}
		}
		cfg.VocabSize = n
	} else {
		cfg.VocabSize = 1 + b(4)
	}
	if cfg.Validate() != nil {
		return nil, 0, false
	}
	r := rand.New(rand.NewPCG(shape, 7))
	m = model.New(cfg)
	m.Vocab, m.Source, m.Format = v, "fuzz", "synthetic"
	for _, s := range cfg.Shapes() {
		f := make([]float32, model.Elems(s.Shape))
		for i := range f {
			f[i] = float32(r.NormFloat64())
		}
		d := dtype
		if len(s.Shape) == 1 {
			d = model.F32
		}
		data, err := model.Encode(f, d)
		if err != nil {
			return nil, 0, false
		}
		m.Add(&model.Tensor{Name: s.Name, DType: d, Shape: s.Shape, Data: data})
	}
	return m, dtype, true
}
