package gguf

import (
	"strconv"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// GGUF tensor names for the tensors outside the blocks.
const (
	ggufEmbed      = "token_embd.weight"
	ggufOutputNorm = "output_norm.weight"
	ggufOutput     = "output.weight"
	// ggufRopeFreqs holds Llama-3.1's per-frequency RoPE divisors.
	ggufRopeFreqs = "rope_freqs.weight"
)

// ggufProj is the GGUF name of each projection inside a block, indexed by
// model.Projection.
var ggufProj = [model.NumProjections]string{"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"}

// tensorNames maps every canonical tensor name a (validated) config can
// have, the untied output included, to its GGUF name.
func tensorNames(c *model.Config) map[string]string {
	m := map[string]string{
		model.NameEmbed:      ggufEmbed,
		model.NameOutputNorm: ggufOutputNorm,
		model.NameOutput:     ggufOutput,
	}
	for l := range c.NLayers {
		blk := "blk." + strconv.Itoa(l) + "."
		m[model.AttnNormName(l)] = blk + "attn_norm.weight"
		m[model.FFNNormName(l)] = blk + "ffn_norm.weight"
		for p := range model.NumProjections {
			m[model.ProjName(l, p)] = blk + ggufProj[p] + ".weight"
		}
	}
	return m
}
