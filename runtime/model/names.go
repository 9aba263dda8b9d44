package model

import (
	"fmt"
	"strconv"
	"strings"
)

// Projection names the seven linear projections of a Llama block, in the
// order the runtime lists them.
type Projection int

// The projections of one block.
const (
	ProjQ Projection = iota
	ProjK
	ProjV
	ProjO
	ProjGate
	ProjUp
	ProjDown
	NumProjections
)

var projShort = [...]string{"q", "k", "v", "o", "gate", "up", "down"}
var projHF = [...]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

// String is the short name: q, k, v, o, gate, up, down.
func (p Projection) String() string {
	if p < 0 || p >= NumProjections {
		return fmt.Sprintf("Projection(%d)", int(p))
	}
	return projShort[p]
}

// ParseProjection accepts a short name.
func ParseProjection(s string) (Projection, error) {
	for i, n := range projShort {
		if n == s {
			return Projection(i), nil
		}
	}
	return 0, fmt.Errorf("unknown projection %q (want q, k, v, o, gate, up or down)", s)
}

// Shape is (out, in) for the projection under cfg.
func (p Projection) Shape(cfg *Config) (out, in int) {
	switch p {
	case ProjQ:
		return cfg.QDim(), cfg.Dim
	case ProjK, ProjV:
		return cfg.KVDim(), cfg.Dim
	case ProjO:
		return cfg.Dim, cfg.QDim()
	case ProjGate, ProjUp:
		return cfg.HiddenDim, cfg.Dim
	case ProjDown:
		return cfg.Dim, cfg.HiddenDim
	}
	panic("model: bad projection")
}

// Canonical (Hugging Face) tensor names.
const (
	NameEmbed      = "model.embed_tokens.weight"
	NameOutputNorm = "model.norm.weight"
	NameOutput     = "lm_head.weight"
)

// ProjName is the tensor name of projection p in layer l.
func ProjName(l int, p Projection) string {
	return "model.layers." + strconv.Itoa(l) + "." + projHF[p] + ".weight"
}

// AttnNormName is the RMSNorm weight before attention in layer l.
func AttnNormName(l int) string { return "model.layers." + strconv.Itoa(l) + ".input_layernorm.weight" }

// FFNNormName is the RMSNorm weight before the MLP in layer l.
func FFNNormName(l int) string {
	return "model.layers." + strconv.Itoa(l) + ".post_attention_layernorm.weight"
}

// NamedShape pairs a tensor name with its expected shape.
type NamedShape struct {
	Name  string
	Shape []int
}

// Shapes lists every tensor the graph needs, with its shape, in file order.
func (c *Config) Shapes() []NamedShape {
	s := []NamedShape{{NameEmbed, []int{c.VocabSize, c.Dim}}}
	for l := 0; l < c.NLayers; l++ {
		s = append(s, NamedShape{AttnNormName(l), []int{c.Dim}})
		for p := ProjQ; p < NumProjections; p++ {
			out, in := p.Shape(c)
			s = append(s, NamedShape{ProjName(l, p), []int{out, in}})
			if p == ProjO {
				s = append(s, NamedShape{FFNNormName(l), []int{c.Dim}})
			}
		}
	}
	s = append(s, NamedShape{NameOutputNorm, []int{c.Dim}})
	if !c.TiedOutput {
		s = append(s, NamedShape{NameOutput, []int{c.VocabSize, c.Dim}})
	}
	return s
}

// tensorOrder sorts embedding first, then layers by index, then the rest.
func tensorOrder(name string) string {
	if name == NameEmbed {
		return "0"
	}
	if rest, ok := strings.CutPrefix(name, "model.layers."); ok {
		if i := strings.IndexByte(rest, '.'); i > 0 {
			if l, err := strconv.Atoi(rest[:i]); err == nil {
				return fmt.Sprintf("1%08d%s", l, rest[i:])
			}
		}
	}
	return "2" + name
}
