package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/acttail/acttail-gpu/runtime/model"
)

func runInfo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("info", "[--model PATH] [--json]", stderr)
	var mf modelFlags
	mf.register(fs)
	asJSON := fs.Bool("json", false, "print as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	m, err := mf.open(ctx, stderr)
	if err != nil {
		return err
	}
	defer m.Close()
	type tensor struct {
		Name  string `json:"name"`
		DType string `json:"dtype"`
		Shape []int  `json:"shape"`
		Bytes int    `json:"bytes"`
	}
	var ts []tensor
	for _, n := range m.Names() {
		t := m.Tensors[n]
		ts = append(ts, tensor{n, t.DType.String(), t.Shape, len(t.Data)})
	}
	if *asJSON {
		out := struct {
			Source  string       `json:"source"`
			Format  string       `json:"format"`
			Config  model.Config `json:"config"`
			Params  int64        `json:"params"`
			Bytes   int64        `json:"bytes"`
			Vocab   int          `json:"vocab_tokens"`
			Tensors []tensor     `json:"tensors"`
		}{m.Source, m.Format, m.Config, m.ParamCount(), m.ByteCount(), vocabLen(m), ts}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	c := m.Config
	fmt.Fprintf(stdout, "source      %s (%s)\n", m.Source, m.Format)
	if c.Synthetic {
		fmt.Fprintln(stdout, "synthetic   yes: random weights, for speed tests only")
	}
	fmt.Fprintf(stdout, "shape       dim %d, hidden %d, %d layers, %d heads (%d kv, head dim %d), vocab %d, context %d\n",
		c.Dim, c.HiddenDim, c.NLayers, c.NHeads, c.NKVHeads, c.HeadDim, c.VocabSize, c.SeqLen)
	fmt.Fprintf(stdout, "rope        theta %g", c.RopeTheta)
	if c.RopeScale != nil {
		fmt.Fprintf(stdout, ", %s scaling ×%g", c.RopeScale.Type, c.RopeScale.Factor)
	}
	fmt.Fprintf(stdout, "; rms eps %g; classifier %s\n", c.NormEps, map[bool]string{true: "tied to the embedding", false: "separate"}[c.TiedOutput])
	fmt.Fprintf(stdout, "parameters  %d (%.2f M), %d bytes (%.1f MiB)\n", m.ParamCount(), float64(m.ParamCount())/1e6, m.ByteCount(), float64(m.ByteCount())/(1<<20))
	if v := m.Vocab; v != nil {
		fmt.Fprintf(stdout, "tokenizer   %s, %d tokens, bos %d, eos %d\n", v.Kind, len(v.Tokens), v.BOS, v.EOS)
	} else {
		fmt.Fprintln(stdout, "tokenizer   none")
	}
	fmt.Fprintln(stdout)
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENSOR\tDTYPE\tSHAPE\tBYTES")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", t.Name, t.DType, t.Shape, t.Bytes)
	}
	return tw.Flush()
}

func vocabLen(m *model.Checkpoint) int {
	if m.Vocab == nil {
		return 0
	}
	return len(m.Vocab.Tokens)
}
