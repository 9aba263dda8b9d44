package calib

import (
	"context"
	"errors"
	"math"

	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

// SampleText draws n tokens of calibration text from the model itself:
// sequences that start at bos and run, at temperature 1, until an end
// token or the state's context, concatenated (each led by bos). It is the
// data-free way to get more calibration text than a small file holds;
// the model runs dense whatever plan is applied.
func SampleText(ctx context.Context, s *engine.State, bos, n int, seed uint64, isEnd func(int) bool) ([]int, error) {
	if bos < 0 {
		return nil, errors.New("sampling calibration text needs a BOS token")
	}
	prevFrom := s.SparseFrom
	defer func() { s.SparseFrom = prevFrom }()
	out := make([]int, 0, n)
	for i := uint64(0); len(out) < n; i++ {
		s.Reset()
		s.SparseFrom = math.MaxInt
		seq := []int{bos}
		_, err := s.Generate(ctx, seq, engine.GenOptions{
			MaxTokens: min(s.Context()-1, n-len(out)-1),
			Sample:    sample.Options{Temperature: 1, Seed: seed + i},
			IsEnd:     isEnd,
		}, func(id int) error {
			seq = append(seq, id)
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, seq...)
	}
	return out[:n], nil
}
