package profile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/acttail/acttail-gpu/profile/htsr"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
)

// fitsFile caches heavy-tail fits: spectra of 7B-sized matrices take
// minutes on a small machine, and they depend only on the weights and
// the xmin rule.
type fitsFile struct {
	Fingerprint string          `json:"fingerprint"`
	Xmin        htsr.XminMethod `json:"xmin"`
	Fits        []htsr.Fit      `json:"fits"`
}

// Fits returns the heavy-tail fits of every projection of m: from cache
// (a JSON file) when it holds fits for these weights and this xmin rule,
// else computed and, if cache is not empty, written there. progress gets
// a progress bar when it is a terminal.
func Fits(ctx context.Context, m *model.Checkpoint, xmin htsr.XminMethod, cache string, progress io.Writer) ([]htsr.Fit, error) {
	id := plan.Identify(m)
	if cache != "" {
		b, err := os.ReadFile(cache)
		switch {
		case err == nil:
			var f fitsFile
			if err := json.Unmarshal(b, &f); err != nil {
				return nil, fmt.Errorf("fits cache %s: %w", cache, err)
			}
			if f.Fingerprint == id.Fingerprint && f.Xmin == xmin && len(f.Fits) == len(plan.Sites(&m.Config)) {
				return f.Fits, nil
			}
		case !errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("fits cache: %w", err)
		}
	}
	fits, err := htsr.FitModel(ctx, m, htsr.Options{Method: xmin, Progress: progress})
	if err != nil {
		return nil, err
	}
	if cache != "" {
		b, err := json.MarshalIndent(fitsFile{id.Fingerprint, xmin, fits}, "", " ")
		if err == nil {
			err = os.WriteFile(cache, b, 0o644)
		}
		if err != nil {
			return nil, fmt.Errorf("fits cache: %w", err)
		}
	}
	return fits, nil
}

// FitsFor is Fits when one of methods reads the fits (Method.NeedsFits),
// else nil: uniform needs no spectra, which take minutes on 7B-sized
// models.
func FitsFor(ctx context.Context, m *model.Checkpoint, methods []Method, xmin htsr.XminMethod, cache string, progress io.Writer) ([]htsr.Fit, error) {
	for _, meth := range methods {
		if meth.NeedsFits() {
			return Fits(ctx, m, xmin, cache, progress)
		}
	}
	return nil, nil
}
