package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// TestMemoryBudget serves under a budget that holds two worst-case
// requests: a request whose worst case alone passes the budget gets a 400
// before anything runs; six concurrent ones all complete, never more than
// two at a time, and their reservations are released at the end.
func TestMemoryBudget(t *testing.T) {
	const maxTokens = 24
	m, tok := stories(t)
	e, err := engine.Load(cpu.New(1), m)
	if err != nil {
		t.Fatal(err)
	}
	prompt := "Once upon a time"
	perJob := e.StateBytes(len(tok.Encode(prompt, true))+maxTokens, prefillRows)
	f := start(t, Config{MaxBatch: 8, MaxMemory: 2 * perJob}, false)

	code, body := f.post(t, context.Background(), "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 400})
	var e400 struct{ Error struct{ Code string } }
	if err := json.Unmarshal(body, &e400); err != nil || code != http.StatusBadRequest || e400.Error.Code != "memory_exceeded" {
		t.Fatalf("a request past the budget: %d %s", code, body)
	}

	want := f.greedy(t, prompt, maxTokens, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := f.stream(t, ctx, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": maxTokens, "temperature": 0})
			switch {
			case err != nil:
				errs <- fmt.Errorf("client %d: %v", c, err)
			case s.text != want:
				errs <- fmt.Errorf("client %d: %q, want %q", c, s.text, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	f.waitMetric(t, `acttail_requests_total{model="dense",status="200"}`, func(v float64) bool { return v == 6 })
	f.waitMetric(t, "acttail_sequence_memory_bytes", func(v float64) bool { return v == 0 })
	mt := f.metrics(t)
	if n, two := mt["acttail_batch_size_count"], mt[`acttail_batch_size_bucket{le="2"}`]; n == 0 || two != n {
		t.Errorf("%g of %g decode steps ran at most two sequences, want all", two, n)
	}
	if mt["acttail_sequence_memory_budget_bytes"] != float64(2*perJob) {
		t.Errorf("budget metric %g, want %d", mt["acttail_sequence_memory_budget_bytes"], 2*perJob)
	}
}

// A model file that claims the largest context a file may (2^24 tokens;
// more is refused at load) is served at the default context, and its
// states start small: New allocates nothing of that size, and a request
// runs.
func TestHugeModelContext(t *testing.T) {
	m, tok := stories(t)
	m.Config.SeqLen = model.MaxSeqLen
	e, err := engine.Load(cpu.New(1), m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Model: e, Tokenizer: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(context.Background())
	if budget, ctx, per := s.Memory(); ctx != DefaultContext || per != e.StateBytes(DefaultContext, prefillRows) || budget <= 0 {
		t.Fatalf("Memory() = %d, %d, %d", budget, ctx, per)
	}
	ts := httptest.NewServer(s.Handler())
	defer ts.Close()
	f := &fixture{s: s, tok: tok, ts: ts, url: ts.URL}
	r := f.complete(t, "/v1/completions", map[string]any{"prompt": "Once upon a time", "max_tokens": 8, "temperature": 0})
	if len(r.Choices) != 1 || r.Choices[0].Text == "" {
		t.Fatalf("reply %+v", r)
	}
}
