// Package server is an OpenAI-compatible HTTP server for one model:
// POST /v1/completions and /v1/chat/completions (with server-sent-event
// streaming), GET /v1/models, /healthz and /metrics (Prometheus text).
//
// # API
//
//   - POST /v1/completions: prompt (a string, or a list of one), and the
//     parameters below; the reply's choices[0].text is the completion
//     (without the prompt).
//   - POST /v1/chat/completions: messages (role system, developer, user or
//     assistant; content a string or a list of text parts); the reply's
//     choices[0].message.content.
//   - Both take model (a name from GET /v1/models; absent: Config.Default),
//     max_tokens (or max_completion_tokens; 1..MaxTokensLimit, default
//     DefaultMaxTokens), temperature (0..2; 0 is greedy), top_p (0..1],
//     seed, stop (a string or a list), n (1 only), stream,
//     stream_options.include_usage and logprobs: for completions an
//     integer 0..5 (tokens, token_logprobs, top_logprobs, text_offset in
//     bytes), for chat a boolean with top_logprobs 0..20 (content entries
//     with token, logprob, bytes, top_logprobs). Log-probabilities are the
//     log-softmax of the model's raw logits, before temperature or top_p;
//     tokens wholly inside a stop string are not reported. Other OpenAI
//     fields (echo, penalties, tools, ...) are ignored. Replies carry id,
//     object, created, model, finish_reason ("stop" or "length") and usage.
//   - The prompt and max_tokens must fit in the context together; without
//     max_tokens a request gets what the context leaves, up to
//     DefaultMaxTokens. Either is checked before the request is queued.
//   - stream: server-sent events "data: {chunk}", OpenAI's chunk shapes
//     (chat: a first chunk with the role, then content deltas), a last
//     chunk with finish_reason, then "data: [DONE]". An engine failure
//     after the stream began is sent as an event holding the error JSON.
//   - GET /v1/models, /v1/models/{id}; GET /healthz (503 while shutting
//     down, or after a device fault) and /metrics, which need no API key.
//
// Errors are OpenAI's {"error": {"message", "type", "param", "code"}}:
// 400 (invalid_json; invalid_type, a field of the wrong JSON type, named in
// param; invalid_value; context_length_exceeded), 401 (invalid_api_key;
// the Bearer scheme in any case), 404 (model_not_found, or no such
// endpoint), 405, 408 (request_timeout: the body took over BodyTimeout),
// 413 (body over MaxBody), 429 (queue_full) and 503 (shutting_down, or
// too_many_connections past MaxConns). 429 and 503 carry Retry-After.
//
// # Connections
//
// Serve bounds what a client can hold: HeaderTimeout for the headers,
// BodyTimeout for the body, WriteTimeout for each write of a reply (each
// stream chunk; a client that stops reading is dropped and its sequence
// freed), IdleTimeout between kept-alive requests, and MaxConns
// connections at once. On Shutdown the listener stays open while running
// requests finish: new generations and /healthz get 503. When the grace
// runs out, a running stream gets a terminal error event and every other
// request a 503 before the connections close.
//
// # Concurrency
//
// Backends are not safe for concurrent use, so one scheduler goroutine owns
// the engine. HTTP handlers parse and tokenize a request, put a job on a
// bounded queue (full: 429) and read the job's tokens from a channel; they
// never touch the model. Each tick the scheduler drops jobs whose request
// was cancelled (a client that went away frees its slot before the next
// step), admits queued jobs while fewer than MaxBatch run (prefilling each
// prompt densely with State.Forward), then runs one engine.Batch.Step per
// plan group and samples each sequence's next token with its own sampler.
// A job's tokens go to an outbox that never blocks the scheduler and holds
// only what its handler has not taken yet (nothing is sized by
// max_tokens), so a slow client never stalls the scheduler. A long
// prompt's prefill does hold up the decode steps of the running sequences
// (prefill is not interleaved).
//
// # Plans
//
// The model never changes: all variants share one engine.Model, loaded
// once (in the sparse layout when any plan is given). New turns each plan
// into its run-time budgets once (engine.Model.Budgets); a job's state
// runs under its variant's budgets from admission on. Each tick is one
// engine.Batch.Step over every running sequence, ordered by variant, so
// the rows of one plan are a run that reads the weights once; the cost of
// serving k plans is k budgets tables, not k copies of the weights, and a
// step over a k-plan mix reads the weights up to k times.
//
// # Memory
//
// Each running sequence holds an engine.State: a KV cache of
// 2·layers·positions·kv_dim float32 values, which grows with the
// sequence, plus prefill scratch (engine.Model.StateBytes). A job reserves
// its worst case, a state for its prompt plus max_tokens (at most the
// context), when it is admitted, and frees it when it ends; the scheduler
// admits the oldest waiting job only while the reservations fit in
// MaxMemory, so no file or request can make the sequences allocate past
// it. A request whose worst case alone does not fit gets a 400 at once.
//
// # Generation
//
// A completion prompt is encoded with BOS. Chat messages are rendered with
// the vocab's chat template when it has one that this package knows
// (Llama-2 [INST]/<<SYS>>, including Mistral's system-less variant, or
// Llama-3 headers; see chat.go) and encoded with special tokens
// recognized, as llama.cpp does (so special-token text inside a message is
// a token too); otherwise as plain "role: content" lines ending in
// "assistant:". Generation ends at an end token of the vocab, at a stop
// string (not returned; streamed text that could begin one is held back
// until it cannot), or at max_tokens.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/plan"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// DenseModel is the model name that runs without a plan; it is always
// served.
const DenseModel = "dense"

// Config describes what a Server serves and its limits. Zero limits take
// the defaults in their comments.
type Config struct {
	Model     *engine.Model
	Tokenizer *tokenizer.Tokenizer
	// Plans are the named sparsity plans, each served as a model of that
	// name beside DenseModel. They must have been checked against the
	// model (plan.Check) and the model loaded with engine.Options.Sparse.
	Plans []Plan
	// Default is the model a request that names none gets ("":
	// DenseModel, so that a plain client gets the model as it is).
	Default string
	// APIKey, if set, is the bearer token every /v1/ request must carry.
	APIKey string
	// MaxBatch is the most sequences generating at once (8).
	MaxBatch int
	// Queue is the most requests waiting for a slot; more get 429 (64).
	Queue int
	// Context is each sequence's context length (0: the model's, at most
	// DefaultContext; more than the model's: the model's).
	Context int
	// MaxMemory is the backend memory in bytes that the sequences' states
	// (KV caches and scratch) may hold in all (0: half of what the
	// backend has free when the server starts, backend.Memory; without
	// that, MaxBatch states of the full context). A request is admitted
	// when its worst case (its prompt plus max_tokens) fits beside those
	// of the running ones; one whose worst case alone passes it gets a
	// 400 before anything is allocated.
	MaxMemory int64
	// MaxBody is the largest request body in bytes; larger get 413 (1 MiB).
	MaxBody int64
	// MaxTokensLimit is the largest max_tokens a request may ask for (the
	// context length).
	MaxTokensLimit int
	// DefaultMaxTokens is max_tokens when a request does not say (256, at
	// most MaxTokensLimit and what the context leaves after the prompt).
	DefaultMaxTokens int
	// BodyTimeout is how long a request may take to send its body (10 s);
	// slower gets 408. Headers have HeaderTimeout.
	BodyTimeout time.Duration
	// HeaderTimeout is how long a connection may take to send a request's
	// headers (10 s).
	HeaderTimeout time.Duration
	// WriteTimeout is how long each write of a reply (each stream chunk)
	// may take to reach the client (30 s); a client that stops reading for
	// longer is dropped and its sequence freed.
	WriteTimeout time.Duration
	// IdleTimeout is how long a kept-alive connection may wait for its
	// next request (60 s).
	IdleTimeout time.Duration
	// MaxConns is the most connections open at once (512); one more is
	// answered 503 and closed. Serve enforces it.
	MaxConns int
	// PowerFunc, if set, reports the accelerator's power draw for
	// /metrics (acttail_gpu_power_watts, exported when ok). It is called
	// on the scraping request's goroutine, so it must not use the backend.
	PowerFunc func() (watts float64, ok bool)
	// Log receives one line per request and the scheduler's errors (nil:
	// discarded).
	Log *slog.Logger

	// beforeStep, if set, runs on the scheduler goroutine before each
	// decode tick (tests use it to hold or slow the scheduler).
	beforeStep func()
}

// DefaultContext is the context a sequence gets when neither Config.Context
// nor a smaller model context says otherwise: a model's own (up to 128K
// tokens for Llama 3.1) would make a worst-case request reserve gigabytes.
const DefaultContext = 4096

// Plan is a sparsity plan served under a model name.
type Plan struct {
	Name string
	Plan *plan.Plan
	Mode plan.Mode // plan.ModeTopK or plan.ModeThreshold; "": the plan's own
}

// variant is one servable model name and the budgets it runs under.
type variant struct {
	name    string
	budgets *backend.Budgets // nil: dense; its sites count from budgets.Sites[0].ID
}

// Server serves one engine.Model over HTTP.
type Server struct {
	cfg      Config
	ctx      int // context length of every sequence
	variants []variant
	byName   map[string]int
	def      int // index of the default variant
	created  int64
	queue    *queue
	metrics  *metrics
	log      *slog.Logger
	mux      http.Handler

	// abort cancels every job when a shutdown runs out of time.
	abort     context.Context
	abortFunc context.CancelFunc
	stop      chan struct{} // closed by Shutdown: the scheduler exits once idle
	done      chan struct{} // closed when the scheduler has exited
	stopOnce  sync.Once

	// fault is the backend's sticky device error once a pass has met one
	// (written by the scheduler, read by /healthz): every request after it
	// fails with a 500, and the process keeps serving the errors, /healthz
	// and /metrics.
	fault atomic.Pointer[error]
	// inflight counts the generation requests that passed the checks and
	// have not finished writing, for Shutdown to wait on.
	inflight atomic.Int64

	mu       sync.Mutex
	http     *http.Server // set by Serve
	shutdown bool         // Shutdown has begun: Serve returns at once
}

// New checks cfg, resolves the plans and starts the scheduler goroutine,
// which runs until Shutdown. From then on the model belongs to the server.
func New(cfg Config) (*Server, error) {
	if cfg.Model == nil || cfg.Tokenizer == nil {
		return nil, errors.New("server: a model and a tokenizer are required")
	}
	if cfg.Tokenizer.VocabSize() != cfg.Model.Config.VocabSize {
		return nil, fmt.Errorf("server: tokenizer has %d tokens, model %d", cfg.Tokenizer.VocabSize(), cfg.Model.Config.VocabSize)
	}
	setDefault(&cfg.MaxBatch, 8)
	setDefault(&cfg.Queue, 64)
	setDefault(&cfg.MaxBody, 1<<20)
	setDefault(&cfg.DefaultMaxTokens, 256)
	setDefault(&cfg.BodyTimeout, 10*time.Second)
	setDefault(&cfg.HeaderTimeout, 10*time.Second)
	setDefault(&cfg.WriteTimeout, 30*time.Second)
	setDefault(&cfg.IdleTimeout, 60*time.Second)
	setDefault(&cfg.MaxConns, 512)
	if cfg.MaxBatch < 0 || cfg.Queue < 0 || cfg.MaxBody < 0 || cfg.MaxTokensLimit < 0 || cfg.DefaultMaxTokens < 0 || cfg.Context < 0 ||
		cfg.BodyTimeout < 0 || cfg.HeaderTimeout < 0 || cfg.WriteTimeout < 0 || cfg.IdleTimeout < 0 || cfg.MaxConns < 0 {
		return nil, errors.New("server: negative limit")
	}
	ctxLen := cfg.Model.Config.SeqLen
	switch {
	case cfg.Context > 0 && cfg.Context < ctxLen:
		ctxLen = cfg.Context
	case cfg.Context == 0:
		ctxLen = min(ctxLen, DefaultContext)
	}
	if cfg.MaxMemory < 0 {
		return nil, errors.New("server: negative memory budget")
	}
	if cfg.MaxMemory == 0 {
		cfg.MaxMemory = defaultMemory(cfg.Model, ctxLen, cfg.MaxBatch)
	}
	if cfg.MaxTokensLimit == 0 || cfg.MaxTokensLimit > ctxLen {
		cfg.MaxTokensLimit = ctxLen
	}
	cfg.DefaultMaxTokens = min(cfg.DefaultMaxTokens, cfg.MaxTokensLimit)
	s := &Server{cfg: cfg, ctx: ctxLen, byName: map[string]int{}, created: time.Now().Unix(),
		queue: newQueue(cfg.Queue), log: cfg.Log, stop: make(chan struct{}), done: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.resolvePlans(); err != nil {
		return nil, err
	}
	names := make([]string, len(s.variants))
	for i, v := range s.variants {
		names[i] = v.name
	}
	s.metrics = newMetrics(names)
	s.metrics.budget = cfg.MaxMemory
	s.abort, s.abortFunc = context.WithCancel(context.Background())
	s.routes()
	sch := newScheduler(s)
	go sch.run()
	return s, nil
}

func setDefault[T ~int | ~int64](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// resolvePlans turns each plan into its budgets and picks the default.
// Each variant's sites count under IDs of their own, so that one step's
// counts tell the variants apart.
func (s *Server) resolvePlans() error {
	m := s.cfg.Model
	s.variants = []variant{{name: DenseModel}}
	for _, p := range s.cfg.Plans {
		if p.Name == "" || p.Name == DenseModel {
			return fmt.Errorf("server: plan name %q is reserved or empty", p.Name)
		}
		if _, dup := s.byName[p.Name]; dup {
			return fmt.Errorf("server: two plans named %q", p.Name)
		}
		if p.Plan == nil {
			return fmt.Errorf("server: plan %q is nil", p.Name)
		}
		bud, err := m.Budgets(p.Plan, p.Mode)
		if err != nil {
			return fmt.Errorf("server: plan %q: %w", p.Name, err)
		}
		base := (len(s.variants) - 1) * len(bud.Sites)
		s.byName[p.Name] = len(s.variants)
		s.variants = append(s.variants, variant{name: p.Name, budgets: bud.CountedAt(base)})
	}
	s.byName[DenseModel] = 0
	if def := s.cfg.Default; def != "" {
		i, ok := s.byName[def]
		if !ok {
			return fmt.Errorf("server: default model %q is not served", def)
		}
		s.def = i
	}
	return nil
}

// defaultMemory is Config.MaxMemory's default: half of the backend's free
// memory, or maxBatch states of the full context where it cannot say.
func defaultMemory(m *engine.Model, ctx, maxBatch int) int64 {
	if mem, ok := m.Backend.(backend.Memory); ok {
		if free, err := mem.FreeMemory(); err == nil && free > 0 {
			return free / 2
		}
	}
	return int64(maxBatch) * m.StateBytes(ctx, prefillRows)
}

// Memory is the sequences' memory budget in bytes (Config.MaxMemory), the
// context of each sequence, and the bytes one sequence of that whole
// context reserves.
func (s *Server) Memory() (budget int64, ctx int, perSequence int64) {
	return s.cfg.MaxMemory, s.ctx, s.cfg.Model.StateBytes(s.ctx, prefillRows)
}

// Handler returns the HTTP handler of every endpoint.
func (s *Server) Handler() http.Handler { return s.mux }

// Serve accepts connections on ln until Shutdown; it returns nil after a
// shutdown. It holds at most MaxConns connections and warns (in the log)
// when ln is reachable beyond loopback and no API key is set.
func (s *Server) Serve(ln net.Listener) error {
	hs := &http.Server{Handler: s.mux, ReadHeaderTimeout: s.cfg.HeaderTimeout, IdleTimeout: s.cfg.IdleTimeout,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.mu.Lock()
	if s.shutdown {
		s.mu.Unlock()
		return nil
	}
	s.http = hs
	s.mu.Unlock()
	if s.cfg.APIKey == "" && !isLoopback(ln.Addr()) {
		s.log.Warn("serving beyond loopback without an API key: anyone who can reach this address can use the model (set --api-key or ACTTAIL_API_KEY)",
			"addr", ln.Addr().String())
	}
	if err := hs.Serve(limitConns(ln, s.cfg.MaxConns, s.metrics)); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Run serves on ln until ctx ends, then shuts down, giving running
// requests up to grace to finish.
func (s *Server) Run(ctx context.Context, ln net.Listener, grace time.Duration) error {
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	select {
	case err := <-served:
		s.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down: finishing running requests", "grace", grace)
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	err := s.Shutdown(sctx)
	if e := <-served; err == nil {
		err = e
	}
	return err
}

// How long Shutdown waits, once ctx has ended, for the handlers of the
// cancelled requests to write their last words, and then for connections
// to close by themselves.
const (
	abortWait = time.Second
	closeWait = time.Second
)

// Shutdown stops taking generation requests (they get 503, and /healthz
// answers 503, while the listener stays open), lets running and queued ones
// finish, then closes the listener and connections and stops the
// scheduler. If ctx ends first, the remaining requests are cancelled: a
// stream gets a terminal error event, any other request a 503; Shutdown
// gives their handlers abortWait to write it and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.queue.close()
	s.mu.Lock()
	s.shutdown = true
	hs := s.http
	s.mu.Unlock()
	if hs != nil {
		hs.SetKeepAlivesEnabled(false) // connections close after their reply
	}
	var err error
	if !s.waitIdle(ctx.Done()) {
		err = ctx.Err()
		s.abortFunc()
		actx, cancel := context.WithTimeout(context.Background(), abortWait)
		s.waitIdle(actx.Done())
		cancel()
	}
	s.stopOnce.Do(func() { close(s.stop) })
	<-s.done
	if hs != nil {
		cctx, cancel := context.WithTimeout(context.Background(), closeWait)
		if hs.Shutdown(cctx) != nil {
			hs.Close()
		}
		cancel()
	}
	return err
}

// waitIdle waits until no generation request is in flight (true) or stop
// is closed (false).
func (s *Server) waitIdle(stop <-chan struct{}) bool {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.inflight.Load() > 0 {
		select {
		case <-stop:
			return s.inflight.Load() == 0
		case <-tick.C:
		}
	}
	return true
}
