package htsr

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

// Options tunes Profile. The zero value fits with XminKS on GOMAXPROCS
// workers and draws no progress bar.
type Options struct {
	// Method is the cut-off rule; "" means XminKS.
	Method XminMethod
	// Workers is the number of matrices processed at once; ≤ 0 means
	// GOMAXPROCS. Each holds about 12·rows·cols + 8·min(rows, cols)² bytes
	// (the decoded weight, its float64 copy and the Gram matrix).
	Workers int
	// Progress receives a progress bar, drawn only if it is a terminal.
	Progress io.Writer
}

// FitModel fits every linear projection of m, returning one Fit per
// projection in plan.Sites(&m.Config) order. Cancelling ctx stops it
// between matrices; a matrix already started runs to the end.
func FitModel(ctx context.Context, m *model.Checkpoint, o Options) ([]Fit, error) {
	method := o.Method
	if method == "" {
		method = XminKS
	}
	if _, err := ParseXmin(string(method)); err != nil {
		return nil, err
	}
	workers := o.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	sites := plan.Sites(&m.Config)
	fits := make([]Fit, len(sites))
	bar := progress.New(o.Progress, int64(len(sites)), "htsr")
	defer bar.Finish()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, len(sites)) {
		wg.Go(func() {
			for i := range next {
				f, err := fitSite(m, &sites[i], method)
				if err != nil {
					cancel(err)
					return
				}
				fits[i] = f
				bar.Add(1)
			}
		})
	}
feed:
	for i := range sites {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}
	return fits, nil
}

// fitSite fits one projection's weight.
func fitSite(m *model.Checkpoint, s *plan.Site, method XminMethod) (Fit, error) {
	p, err := model.ParseProjection(s.Proj)
	if err != nil {
		return Fit{}, err
	}
	name := model.ProjName(s.Layer, p)
	t, err := m.Tensor(name, s.DOut, s.DIn)
	if err != nil {
		return Fit{}, fmt.Errorf("htsr: %w", err)
	}
	w, err := t.Float32()
	if err != nil {
		return Fit{}, fmt.Errorf("htsr: %w", err)
	}
	a, rows, cols, err := gramFactor(w, s.DOut, s.DIn)
	if err != nil {
		return Fit{}, fmt.Errorf("htsr: %s: %w", name, err)
	}
	eig, err := gramEigenvalues(a, rows, cols)
	if err != nil {
		return Fit{}, fmt.Errorf("htsr: %s: %w", name, err)
	}
	f, err := fitPowerLaw(eig, method)
	if err != nil {
		return Fit{}, fmt.Errorf("htsr: %s: %w", name, err)
	}
	return f, nil
}
