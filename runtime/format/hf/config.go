package hf

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/acttail/acttail-gpu/runtime/model"
)

// hfConfig is the part of a transformers config.json that a Llama-family
// decoder needs. Pointers mark keys whose absence selects a default.
type hfConfig struct {
	Architectures         []string        `json:"architectures,omitempty"`
	ModelType             string          `json:"model_type,omitempty"`
	NameOrPath            string          `json:"_name_or_path,omitempty"`
	HiddenSize            int             `json:"hidden_size"`
	IntermediateSize      int             `json:"intermediate_size"`
	NumHiddenLayers       int             `json:"num_hidden_layers"`
	NumAttentionHeads     int             `json:"num_attention_heads"`
	NumKeyValueHeads      *int            `json:"num_key_value_heads,omitempty"`
	HeadDim               *int            `json:"head_dim,omitempty"`
	VocabSize             int             `json:"vocab_size"`
	MaxPositionEmbeddings int             `json:"max_position_embeddings"`
	RMSNormEps            float64         `json:"rms_norm_eps"`
	RopeTheta             *float64        `json:"rope_theta,omitempty"`
	RopeScaling           json.RawMessage `json:"rope_scaling,omitempty"`
	TieWordEmbeddings     bool            `json:"tie_word_embeddings"`
	TorchDType            string          `json:"torch_dtype,omitempty"`
	HiddenAct             string          `json:"hidden_act,omitempty"`
	BOSTokenID            *int            `json:"bos_token_id,omitempty"`
	EOSTokenID            *int            `json:"eos_token_id,omitempty"`
	Synthetic             bool            `json:"acttail_synthetic,omitempty"`
}

// supportedArch lists the architectures and model types Load reads.
var supportedArch = map[string]bool{
	"LlamaForCausalLM":   true,
	"MistralForCausalLM": true,
}

var supportedType = map[string]bool{"llama": true, "mistral": true}

// parseConfig reads config.json into a validated model.Config; name is
// the Name used when the file has no _name_or_path. lm_head presence is not
// known here: TiedOutput only reflects tie_word_embeddings.
func parseConfig(data []byte, name string) (model.Config, error) {
	var hc hfConfig
	if err := json.Unmarshal(data, &hc); err != nil {
		return model.Config{}, fmt.Errorf("bad JSON: %v", err)
	}
	switch {
	case len(hc.Architectures) > 0:
		for _, a := range hc.Architectures {
			if !supportedArch[a] {
				return model.Config{}, fmt.Errorf("unsupported architecture %q (want LlamaForCausalLM or MistralForCausalLM)", a)
			}
		}
	case hc.ModelType != "":
		if !supportedType[hc.ModelType] {
			return model.Config{}, fmt.Errorf("unsupported model_type %q (want llama or mistral)", hc.ModelType)
		}
	default:
		return model.Config{}, errors.New("no architectures or model_type: cannot tell the architecture")
	}
	cfg := model.Config{
		Arch:       "llama",
		Dim:        hc.HiddenSize,
		HiddenDim:  hc.IntermediateSize,
		NLayers:    hc.NumHiddenLayers,
		NHeads:     hc.NumAttentionHeads,
		NKVHeads:   hc.NumAttentionHeads,
		VocabSize:  hc.VocabSize,
		SeqLen:     hc.MaxPositionEmbeddings,
		NormEps:    hc.RMSNormEps,
		RopeTheta:  10000,
		TiedOutput: hc.TieWordEmbeddings,
		Synthetic:  hc.Synthetic,
		Name:       hc.NameOrPath,
	}
	if cfg.Name == "" {
		cfg.Name = name
	}
	if hc.NumKeyValueHeads != nil {
		cfg.NKVHeads = *hc.NumKeyValueHeads
	}
	if hc.RopeTheta != nil {
		cfg.RopeTheta = *hc.RopeTheta
	}
	switch {
	case hc.HeadDim != nil:
		cfg.HeadDim = *hc.HeadDim
	case cfg.NHeads > 0 && cfg.Dim%cfg.NHeads == 0:
		cfg.HeadDim = cfg.Dim / cfg.NHeads
	case cfg.NHeads > 0:
		return model.Config{}, fmt.Errorf("hidden_size %d is not a multiple of %d heads and head_dim is not set", cfg.Dim, cfg.NHeads)
	}
	rs, err := parseRopeScaling(hc.RopeScaling)
	if err != nil {
		return model.Config{}, err
	}
	cfg.RopeScale = rs
	if err := cfg.Validate(); err != nil {
		return model.Config{}, err
	}
	return cfg, nil
}

// parseRopeScaling accepts null, {"rope_type": "default"} and Llama-3.1's
// "llama3" scaling (also spelled with "type").
func parseRopeScaling(raw json.RawMessage) (*model.RopeScaling, error) {
	if len(raw) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	var rs struct {
		RopeType string   `json:"rope_type"`
		Type     string   `json:"type"`
		Factor   *float64 `json:"factor"`
		Low      *float64 `json:"low_freq_factor"`
		High     *float64 `json:"high_freq_factor"`
		OrigMax  *int     `json:"original_max_position_embeddings"`
	}
	if err := json.Unmarshal(raw, &rs); err != nil {
		return nil, fmt.Errorf("rope_scaling: %v", err)
	}
	typ := rs.RopeType
	if typ == "" {
		typ = rs.Type
	}
	switch typ {
	case "default":
		return nil, nil
	case "llama3":
	default:
		return nil, fmt.Errorf("rope_scaling type %q is not supported (want llama3)", typ)
	}
	if rs.Factor == nil || rs.Low == nil || rs.High == nil || rs.OrigMax == nil {
		return nil, errors.New("rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and original_max_position_embeddings")
	}
	out := &model.RopeScaling{Type: typ, Factor: *rs.Factor, LowFreqFactor: *rs.Low, HighFreqFactor: *rs.High, OriginalMaxPosition: *rs.OrigMax}
	// The llama3 rule interpolates between the two wavelength bounds, so they
	// must be ordered; factors must be positive.
	if !(out.Factor > 0) || !(out.LowFreqFactor > 0) || !(out.HighFreqFactor > out.LowFreqFactor) || out.OriginalMaxPosition <= 0 {
		return nil, fmt.Errorf("rope_scaling llama3: implausible values (factor %g, low %g, high %g, original max %d)",
			out.Factor, out.LowFreqFactor, out.HighFreqFactor, out.OriginalMaxPosition)
	}
	return out, nil
}

// torchDType names d as config.json's torch_dtype.
func torchDType(d model.DType) string {
	switch d {
	case model.F16:
		return "float16"
	case model.BF16:
		return "bfloat16"
	}
	return "float32"
}

// configJSON builds config.json for cfg with weights stored as dtype.
func configJSON(cfg *model.Config, dtype model.DType, v *model.Vocab) hfConfig {
	kv, hd, theta := cfg.NKVHeads, cfg.HeadDim, cfg.RopeTheta
	hc := hfConfig{
		Architectures:         []string{"LlamaForCausalLM"},
		ModelType:             "llama",
		NameOrPath:            cfg.Name,
		HiddenSize:            cfg.Dim,
		IntermediateSize:      cfg.HiddenDim,
		NumHiddenLayers:       cfg.NLayers,
		NumAttentionHeads:     cfg.NHeads,
		NumKeyValueHeads:      &kv,
		HeadDim:               &hd,
		VocabSize:             cfg.VocabSize,
		MaxPositionEmbeddings: cfg.SeqLen,
		RMSNormEps:            cfg.NormEps,
		RopeTheta:             &theta,
		TieWordEmbeddings:     cfg.TiedOutput,
		TorchDType:            torchDType(dtype),
		HiddenAct:             "silu",
		Synthetic:             cfg.Synthetic,
	}
	if rs := cfg.RopeScale; rs != nil {
		hc.RopeScaling, _ = json.Marshal(rs) // a struct of numbers and a string always marshals
	}
	if v != nil {
		if v.BOS >= 0 {
			hc.BOSTokenID = &v.BOS
		}
		if v.EOS >= 0 {
			hc.EOSTokenID = &v.EOS
		}
	}
	return hc
}
