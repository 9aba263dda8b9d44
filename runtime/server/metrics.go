package server

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// metrics are the server's counters and gauges, written in the Prometheus
// text exposition format (version 0.0.4) by hand.
type metrics struct {
	mu        sync.Mutex
	models    []string // variant names, by index
	requests  map[[2]string]uint64
	generated uint64
	prompt    uint64
	ttft      histogram
	batch     histogram
	active    int
	memory    int64  // bytes the running sequences have reserved
	budget    int64  // Config.MaxMemory
	conns     int    // open connections (Serve's)
	refused   uint64 // connections refused over MaxConns
	// realized sparsity per variant: Σ sequences·sparsity and Σ sequences
	// over its sparse steps.
	realizedSum, realizedN []float64
	// recent steps, for the decode rate: tokens and duration of each.
	recent     [64]stepSample
	nextSample int
}

type stepSample struct {
	tokens int
	d      time.Duration
}

func newMetrics(models []string) *metrics {
	return &metrics{models: models, requests: map[[2]string]uint64{},
		ttft:        newHistogram(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
		batch:       newHistogram(1, 2, 4, 8, 16, 32, 64, 128),
		realizedSum: make([]float64, len(models)), realizedN: make([]float64, len(models))}
}

func (m *metrics) request(model string, status int) {
	m.mu.Lock()
	m.requests[[2]string{model, strconv.Itoa(status)}]++
	m.mu.Unlock()
}

func (m *metrics) firstToken(d time.Duration) {
	m.mu.Lock()
	m.ttft.observe(d.Seconds())
	m.mu.Unlock()
}

func (m *metrics) addPrompt(n int) {
	m.mu.Lock()
	m.prompt += uint64(n)
	m.mu.Unlock()
}

func (m *metrics) addGenerated(n int) {
	m.mu.Lock()
	m.generated += uint64(n)
	m.mu.Unlock()
}

// conn counts a connection opened (+1) or closed (-1).
func (m *metrics) conn(delta int) {
	m.mu.Lock()
	m.conns += delta
	m.mu.Unlock()
}

func (m *metrics) refuse() {
	m.mu.Lock()
	m.refused++
	m.mu.Unlock()
}

func (m *metrics) setMemory(n int64) {
	m.mu.Lock()
	m.memory = n
	m.mu.Unlock()
}

func (m *metrics) setActive(n int) {
	m.mu.Lock()
	m.active = n
	m.mu.Unlock()
}

// step records one decode step of n sequences.
func (m *metrics) step(n int, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.batch.observe(float64(n))
	m.recent[m.nextSample] = stepSample{n, d}
	m.nextSample = (m.nextSample + 1) % len(m.recent)
}

// realized records the measured sparsity of the n rows of variant v in
// one decode step.
func (m *metrics) realized(v, n int, sparsity float64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.realizedSum[v] += float64(n) * sparsity
	m.realizedN[v] += float64(n)
}

// decodeRate is the tokens per second of the recent decode steps (time
// spent stepping only, not idle time).
func (m *metrics) decodeRate() float64 {
	var tok int
	var d time.Duration
	for _, s := range m.recent {
		tok += s.tokens
		d += s.d
	}
	if d <= 0 {
		return 0
	}
	return float64(tok) / d.Seconds()
}

// write writes the exposition with queued requests waiting; power, if
// set, adds the GPU power gauge.
func (m *metrics) write(w io.Writer, queued int, power func() (float64, bool)) {
	var b strings.Builder
	head := func(name, typ, help string) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, typ)
	}
	m.mu.Lock()
	head("acttail_requests_total", "counter", "Requests answered, by model and HTTP status (499: the client went away).")
	keys := make([][2]string, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		return keys[i][0] < keys[j][0] || keys[i][0] == keys[j][0] && keys[i][1] < keys[j][1]
	})
	for _, k := range keys {
		fmt.Fprintf(&b, "acttail_requests_total{model=%s,status=%s} %d\n", quote(k[0]), quote(k[1]), m.requests[k])
	}
	head("acttail_tokens_generated_total", "counter", "Tokens sampled, including any after a stop string.")
	fmt.Fprintf(&b, "acttail_tokens_generated_total %d\n", m.generated)
	head("acttail_prompt_tokens_total", "counter", "Prompt tokens prefilled.")
	fmt.Fprintf(&b, "acttail_prompt_tokens_total %d\n", m.prompt)
	head("acttail_time_to_first_token_seconds", "histogram", "From a request's arrival to its first generated token.")
	m.ttft.write(&b, "acttail_time_to_first_token_seconds")
	head("acttail_batch_size", "histogram", "Sequences in each decode step.")
	m.batch.write(&b, "acttail_batch_size")
	head("acttail_decode_tokens_per_second", "gauge", "Tokens per second of the last 64 decode steps, counting step time only.")
	fmt.Fprintf(&b, "acttail_decode_tokens_per_second %s\n", num(m.decodeRate()))
	head("acttail_queue_depth", "gauge", "Requests waiting for a slot.")
	fmt.Fprintf(&b, "acttail_queue_depth %d\n", queued)
	head("acttail_active_sequences", "gauge", "Sequences generating.")
	fmt.Fprintf(&b, "acttail_active_sequences %d\n", m.active)
	head("acttail_sequence_memory_bytes", "gauge", "Backend memory the running sequences have reserved (KV caches and scratch, each at its worst case).")
	fmt.Fprintf(&b, "acttail_sequence_memory_bytes %d\n", m.memory)
	head("acttail_sequence_memory_budget_bytes", "gauge", "The most the sequences may reserve in all (--max-memory).")
	fmt.Fprintf(&b, "acttail_sequence_memory_budget_bytes %d\n", m.budget)
	head("acttail_http_connections", "gauge", "Connections open (through Serve).")
	fmt.Fprintf(&b, "acttail_http_connections %d\n", m.conns)
	head("acttail_http_connections_refused_total", "counter", "Connections answered 503 and closed because MaxConns were open.")
	fmt.Fprintf(&b, "acttail_http_connections_refused_total %d\n", m.refused)
	head("acttail_realized_sparsity", "gauge", "Parameter-weighted fraction of projection inputs dropped, mean over decoded tokens since start.")
	for v, name := range m.models {
		switch {
		case v == 0:
			fmt.Fprintf(&b, "acttail_realized_sparsity{model=%s} 0\n", quote(name))
		case m.realizedN[v] > 0:
			fmt.Fprintf(&b, "acttail_realized_sparsity{model=%s} %s\n", quote(name), num(m.realizedSum[v]/m.realizedN[v]))
		}
	}
	m.mu.Unlock()
	if power != nil {
		if watts, ok := power(); ok {
			head("acttail_gpu_power_watts", "gauge", "Accelerator power draw.")
			fmt.Fprintf(&b, "acttail_gpu_power_watts %s\n", num(watts))
		}
	}
	io.WriteString(w, b.String())
}

// quote is a label value in the exposition's quoting.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s) + `"`
}

// num formats a sample value (NaN and ±Inf as the format spells them).
func num(v float64) string {
	switch {
	case math.IsNaN(v):
		return "NaN"
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

// histogram is a Prometheus histogram: cumulative bucket counts at
// upper bounds, plus sum and count.
type histogram struct {
	bounds []float64
	counts []uint64 // per bucket, not cumulative; the last is +Inf
	sum    float64
}

func newHistogram(bounds ...float64) histogram {
	return histogram{bounds: bounds, counts: make([]uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	h.counts[sort.SearchFloat64s(h.bounds, v)]++
	h.sum += v
}

func (h *histogram) write(b *strings.Builder, name string) {
	var cum uint64
	for i, c := range h.counts {
		cum += c
		le := "+Inf"
		if i < len(h.bounds) {
			le = num(h.bounds[i])
		}
		fmt.Fprintf(b, "%s_bucket{le=%s} %d\n", name, quote(le), cum)
	}
	fmt.Fprintf(b, "%s_sum %s\n%s_count %d\n", name, num(h.sum), name, cum)
}
