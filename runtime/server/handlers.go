package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

func (s *Server) routes() {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/completions", s.generation(false))
	mux.HandleFunc("/v1/chat/completions", s.generation(true))
	mux.HandleFunc("/v1/models", s.endpoint(http.MethodGet, true, s.listModels))
	mux.HandleFunc("/v1/models/", s.endpoint(http.MethodGet, true, s.getModel))
	mux.HandleFunc("/healthz", s.endpoint(http.MethodGet, false, s.healthz))
	mux.HandleFunc("/metrics", s.endpoint(http.MethodGet, false, s.serveMetrics))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, &apiError{status: http.StatusNotFound, typ: "invalid_request_error", code: "not_found",
			message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path)})
	})
	s.mux = s.deadlines(mux)
}

// deadlines gives every request BodyTimeout to send its body (a
// generation lifts it once the body is read; elsewhere it bounds the
// server's reading of a body no handler wanted) and ends, with the request,
// the write deadlines a reply sets: net/http resets neither between
// requests on one connection.
func (s *Server) deadlines(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		rc.SetReadDeadline(time.Now().Add(s.cfg.BodyTimeout))
		defer rc.SetWriteDeadline(time.Time{})
		h.ServeHTTP(w, r)
	})
}

// endpoint wraps h with a method check and, for the API, the bearer token
// check.
func (s *Server) endpoint(method string, auth bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if auth && !s.authorized(r) {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, &apiError{status: http.StatusUnauthorized, typ: "invalid_request_error", code: "invalid_api_key",
				message: "missing or invalid API key: send Authorization: Bearer <key>"})
			return
		}
		if r.Method != method && !(method == http.MethodGet && r.Method == http.MethodHead) {
			w.Header().Set("Allow", method)
			writeError(w, &apiError{status: http.StatusMethodNotAllowed, typ: "invalid_request_error", code: "method_not_allowed",
				message: fmt.Sprintf("%s %s: use %s", r.Method, r.URL.Path, method)})
			return
		}
		h(w, r)
	}
}

// authorized checks the bearer token. The scheme is case-insensitive, as
// HTTP's auth schemes are (RFC 9110 §11.1).
func (s *Server) authorized(r *http.Request) bool {
	if s.cfg.APIKey == "" {
		return true
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	tok = strings.TrimLeft(tok, " ")
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.APIKey)) == 1
}

// Seconds a client is told to wait (Retry-After) before trying again: a
// full queue drains in moments; a server shutting down is gone for a
// restart, or for good.
const (
	retryBusy     = "1"
	retryShutdown = "5"
)

// writeError answers e as OpenAI's error JSON, with Retry-After on 429 and
// 503.
func writeError(w http.ResponseWriter, e *apiError) {
	switch e.status {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", retryBusy)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryShutdown)
	}
	writeJSON(w, e.status, e.body())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// modelInfo is one entry of /v1/models.
type modelInfo struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Created int64  `json:"created"`
	OwnedBy string `json:"owned_by"`
}

func (s *Server) info(v variant) modelInfo {
	return modelInfo{ID: v.name, Object: "model", Created: s.created, OwnedBy: "acttail"}
}

func (s *Server) listModels(w http.ResponseWriter, r *http.Request) {
	list := struct {
		Object string      `json:"object"`
		Data   []modelInfo `json:"data"`
	}{Object: "list"}
	for _, v := range s.variants {
		list.Data = append(list.Data, s.info(v))
	}
	writeJSON(w, http.StatusOK, list)
}

func (s *Server) getModel(w http.ResponseWriter, r *http.Request) {
	i, err := s.variantFor(strings.TrimPrefix(r.URL.Path, "/v1/models/"))
	if err != nil {
		writeError(w, asAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, s.info(s.variants[i]))
}

// variantFor resolves a request's model name ("": the default).
func (s *Server) variantFor(name string) (int, error) {
	if name == "" {
		return s.def, nil
	}
	i, ok := s.byName[name]
	if !ok {
		return 0, &apiError{status: http.StatusNotFound, typ: "invalid_request_error", param: "model", code: "model_not_found",
			message: fmt.Sprintf("the model %q does not exist; GET /v1/models lists them", name)}
	}
	return i, nil
}

// mib formats bytes as MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if s.queue.isClosed() {
		w.Header().Set("Retry-After", retryShutdown)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "shutting down"})
		return
	}
	if f := s.fault.Load(); f != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "device fault", "error": (*f).Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) serveMetrics(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	s.metrics.write(w, s.queue.len(), s.cfg.PowerFunc)
}

// recorder remembers the status and model of a generation request for
// the request counter.
type recorder struct {
	http.ResponseWriter
	status int
	model  string
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection (to flush).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// statusGone is the status counted for a request whose client went away.
const statusGone = 499

// generation is the handler of /v1/completions (chat false) and
// /v1/chat/completions.
func (s *Server) generation(chat bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w, model: "none"}
		var u usage
		s.endpoint(http.MethodPost, true, func(w http.ResponseWriter, r *http.Request) {
			u = s.generate(rec, r, chat, start)
		})(rec, r)
		if rec.status == 0 {
			rec.status = http.StatusOK
		}
		s.metrics.request(rec.model, rec.status)
		s.log.Info("request", "path", r.URL.Path, "model", rec.model, "status", rec.status,
			"prompt_tokens", u.PromptTokens, "completion_tokens", u.CompletionTokens, "seconds", time.Since(start).Seconds())
	}
}

// generate runs one generation request and returns its token counts.
func (s *Server) generate(w *recorder, r *http.Request, chat bool, arrived time.Time) usage {
	g, err := s.readRequest(w, r, chat)
	if err != nil {
		writeError(w, asAPIError(err))
		return usage{}
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel() // also drops the job if it still runs (a stop string)
	defer context.AfterFunc(s.abort, cancel)()
	// Counted before the push, so that a Shutdown that closed the queue
	// after this push succeeded sees it.
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	j := newJob(ctx, g.variant, g.prompt, g.p.sample, g.p.maxTokens, g.p.logprobs, g.positions, g.need)
	if e := s.enqueue(j); e != nil {
		writeError(w, e)
		return usage{}
	}
	return s.relay(ctx, r, j, s.newRelay(w, g, chat), arrived)
}

// genRequest is a generation request decoded and checked: what its job
// and its reply are made from.
type genRequest struct {
	req       request
	variant   int
	prompt    []int
	p         params
	positions int   // prompt and completion, at most the context
	need      int64 // bytes of the sequence's state
}

// readRequest decodes and checks a generation request, naming its model
// in w once that is known.
func (s *Server) readRequest(w *recorder, r *http.Request, chat bool) (*genRequest, error) {
	g := &genRequest{}
	if err := decodeBody(w, r, s.cfg.MaxBody, &g.req); err != nil {
		// The deadline stays: net/http reads what is left of a body
		// before it replies, and a body that stalled would hold it.
		return nil, err
	}
	// The body is read: lift its deadline, so that the connection's
	// background read can tell when the client goes away.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	var err error
	if g.variant, err = s.variantFor(g.req.Model); err != nil {
		return nil, err
	}
	w.model = s.variants[g.variant].name
	if g.p, err = g.req.params(s.cfg.MaxTokensLimit, s.cfg.DefaultMaxTokens, chat); err != nil {
		return nil, err
	}
	var param string
	if g.prompt, param, err = s.prompt(&g.req, chat); err != nil {
		return nil, err
	}
	if err := s.fits(len(g.prompt), &g.p, param); err != nil {
		return nil, err
	}
	if err := s.budget(g); err != nil {
		return nil, err
	}
	return g, nil
}

// budget sets the positions and the state bytes g's sequence needs, and
// checks the bytes against the server's memory budget.
func (s *Server) budget(g *genRequest) error {
	g.positions = min(len(g.prompt)+g.p.maxTokens, s.ctx)
	g.need = s.cfg.Model.StateBytes(g.positions, prefillRows)
	if g.need > s.cfg.MaxMemory {
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: "max_tokens", code: "memory_exceeded",
			message: fmt.Sprintf("the request needs %s of sequence memory (%d prompt tokens + max_tokens %d); the server's budget is %s: ask for fewer tokens",
				mib(g.need), len(g.prompt), g.p.maxTokens, mib(s.cfg.MaxMemory))}
	}
	return nil
}

// enqueue queues j, or says why the queue would not take it.
func (s *Server) enqueue(j *job) *apiError {
	switch err := s.queue.push(j); err {
	case errQueueFull:
		return &apiError{status: http.StatusTooManyRequests, typ: "rate_limit_error", code: "queue_full",
			message: fmt.Sprintf("%d requests are already waiting; retry later", s.cfg.Queue)}
	case errClosed:
		return &apiError{status: http.StatusServiceUnavailable, typ: "server_error", code: "shutting_down",
			message: "the server is shutting down"}
	}
	return nil
}

// relayState carries a job's tokens to its reply: it decodes them, holds
// back stop strings and counts the usage.
type relayState struct {
	rp      *reply
	dec     *tokenizer.Stream
	filter  stopFilter
	decoded int // bytes of text decoded, before the stop filter
	u       usage
}

// newRelay starts the reply to g.
func (s *Server) newRelay(w *recorder, g *genRequest, chat bool) *relayState {
	rp := &reply{w: w, chat: chat, stream: g.req.Stream, model: w.model, created: time.Now().Unix(),
		usageChunk: g.req.StreamOpts != nil && g.req.StreamOpts.IncludeUsage, id: newID(chat),
		tok: s.cfg.Tokenizer, logprobs: g.p.logprobs >= 0, writeTimeout: s.cfg.WriteTimeout}
	rs := &relayState{rp: rp, dec: s.cfg.Tokenizer.NewStream(), filter: stopFilter{stops: g.p.stops},
		u: usage{PromptTokens: len(g.prompt)}}
	if !chat {
		// Prime the decoder with the prompt so that the first piece keeps
		// the space that joins it to the prompt (as `generate` does).
		for _, id := range g.prompt {
			rs.dec.Next(id)
		}
	}
	return rs
}

// relay passes j's events to the reply until the job ends, the client
// goes away or the server shuts down.
func (s *Server) relay(ctx context.Context, r *http.Request, j *job, rs *relayState, arrived time.Time) usage {
	rp := rs.rp
	var evs []event
	for {
		select {
		case <-ctx.Done():
			if r.Context().Err() != nil {
				rp.w.status = statusGone
				return rs.u
			}
			return rp.fail(&apiError{status: http.StatusServiceUnavailable, typ: "server_error", code: "shutting_down",
				message: "the server shut down before the request finished"}, rs.u)
		case <-j.out.ready:
		}
		evs = j.out.take(evs)
		for _, ev := range evs {
			if u, done := s.relayEvent(rs, ev, arrived); done {
				return u
			}
		}
		if rp.err != nil { // the client stopped reading: drop the job
			rp.w.status = statusGone
			return rs.u
		}
	}
}

// relayEvent passes on one event; done says the reply is finished.
func (s *Server) relayEvent(rs *relayState, ev event, arrived time.Time) (u usage, done bool) {
	switch {
	case ev.err != nil:
		s.log.Error("generation", "model", rs.rp.w.model, "err", ev.err)
		return rs.rp.fail(asAPIError(ev.err), rs.u), true
	case ev.done:
		return rs.end(ev.reason), true
	}
	rs.u.CompletionTokens++
	if rs.u.CompletionTokens == 1 {
		s.metrics.firstToken(time.Since(arrived))
	}
	if rs.token(ev) {
		return rs.rp.finish("stop", rs.u), true
	}
	return usage{}, false
}

// token decodes and sends a generated token; it reports whether the text
// reached a stop string.
func (rs *relayState) token(ev event) (stopped bool) {
	piece := rs.dec.Next(ev.token)
	if ev.lp != nil {
		rs.rp.pending = append(rs.rp.pending, logprobEntry{id: ev.token, lp: ev.lp, start: rs.decoded, end: rs.decoded + len(piece)})
	}
	rs.decoded += len(piece)
	text, stopped := rs.filter.push(piece)
	rs.rp.send(text, stopped)
	return stopped
}

// end sends what the decoder and the stop filter still hold and finishes
// the reply: reason is the job's, or "stop" where a stop string ends the
// held text.
func (rs *relayState) end(reason string) usage {
	text, stopped := rs.filter.push(rs.dec.Flush())
	if !stopped {
		text += rs.filter.end()
	}
	rs.rp.send(text, true)
	if stopped {
		reason = "stop"
	}
	return rs.rp.finish(reason, rs.u)
}

// fits checks that the prompt of n tokens and the completion fit in a
// sequence's context together, before anything is allocated for them. A
// request that names no max_tokens gets what is left, up to the default.
func (s *Server) fits(n int, p *params, param string) error {
	room := s.ctx - n
	switch {
	case room < 1:
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: param, code: "context_length_exceeded",
			message: fmt.Sprintf("the prompt is %d tokens; the context holds %d, with at least one left for the completion", n, s.ctx)}
	case !p.setMax:
		p.maxTokens = min(p.maxTokens, room)
	case p.maxTokens > room:
		return &apiError{status: http.StatusBadRequest, typ: "invalid_request_error", param: "max_tokens", code: "context_length_exceeded",
			message: fmt.Sprintf("the prompt (%d tokens) and max_tokens (%d) need %d tokens; the context holds %d", n, p.maxTokens, n+p.maxTokens, s.ctx)}
	}
	return nil
}

// prompt encodes the prompt or messages of req; param names the field.
func (s *Server) prompt(req *request, chat bool) (ids []int, param string, err error) {
	tok := s.cfg.Tokenizer
	if chat {
		if req.Messages == nil {
			return nil, "messages", badParam("messages", "messages is required")
		}
		ids, err = chatPrompt(tok, req.Messages)
		return ids, "messages", err
	}
	texts, ok, err := stringOrList(req.Prompt, "prompt")
	switch {
	case err != nil:
		return nil, "prompt", err
	case !ok:
		return nil, "prompt", badParam("prompt", "prompt is required")
	case len(texts) != 1:
		return nil, "prompt", badParam("prompt", "exactly one prompt is supported")
	}
	ids = tok.Encode(texts[0], true)
	if len(ids) == 0 {
		return nil, "prompt", badParam("prompt", "the prompt encodes to no tokens and the model has no BOS token")
	}
	return ids, "prompt", nil
}

func newID(chat bool) string {
	var b [12]byte
	rand.Read(b[:])
	if chat {
		return "chatcmpl-" + hex.EncodeToString(b[:])
	}
	return "cmpl-" + hex.EncodeToString(b[:])
}

// reply writes a generation's answer: one JSON object, or server-sent
// events in OpenAI's chunk shape followed by "data: [DONE]". Every write
// has writeTimeout to reach the client; the first that fails (the client
// went away or stopped reading) is kept in err and ends all writing.
type reply struct {
	w                        *recorder
	chat, stream, usageChunk bool
	id, model                string
	created                  int64
	started                  bool // stream: headers (and chat's role chunk) written
	text                     strings.Builder
	writeTimeout             time.Duration
	err                      error

	// logprobs: the request asked for them; pending are the tokens whose
	// text is not all sent yet, entries (not streamed) those sent; sent
	// counts the bytes of text passed on.
	tok      *tokenizer.Tokenizer
	logprobs bool
	pending  []logprobEntry
	entries  []logprobEntry
	sent     int
}

// send passes on generated text and the logprobs of the tokens it
// completes. cut says the text ends here: the tokens partly sent are
// reported too, and those not sent at all (inside a stop string) dropped.
func (rp *reply) send(text string, cut bool) {
	rp.sent += len(text)
	k := 0
	for k < len(rp.pending) && (rp.pending[k].end <= rp.sent || cut && rp.pending[k].start < rp.sent) {
		k++
	}
	done := rp.pending[:k:k]
	rp.pending = rp.pending[k:]
	if cut {
		rp.pending = nil
	}
	if !rp.stream {
		rp.text.WriteString(text)
		rp.entries = append(rp.entries, done...)
		return
	}
	rp.start()
	if text != "" || len(done) > 0 {
		rp.event(rp.chunk(text, done, nil))
	}
}

// start writes the stream's headers and, for chat, the chunk that names
// the role.
func (rp *reply) start() {
	if rp.started {
		return
	}
	rp.started = true
	h := rp.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	rp.deadline()
	rp.w.WriteHeader(http.StatusOK)
	if rp.chat {
		empty := ""
		c := rp.chunk("", nil, nil)
		c.Choices[0].Delta = &chatMsg{Role: "assistant", Content: &empty}
		rp.event(c)
	}
}

// chunk is a stream chunk carrying text and the logprobs of entries, or
// (finish set) the last one.
func (rp *reply) chunk(text string, entries []logprobEntry, finish *string) completion {
	c := completion{ID: rp.id, Object: "text_completion", Created: rp.created, Model: rp.model,
		Choices: []choice{{FinishReason: finish}}}
	if rp.logprobs && finish == nil {
		c.Choices[0].Logprobs = logprobsJSON(rp.tok, rp.chat, entries)
	}
	if rp.chat {
		c.Object = "chat.completion.chunk"
		d := &chatMsg{}
		if text != "" {
			d.Content = &text
		}
		c.Choices[0].Delta = d
	} else {
		c.Choices[0].Text = &text
	}
	return c
}

// event writes one server-sent event and flushes it to the client.
func (rp *reply) event(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // the reply types always marshal (logprobs are finite)
	}
	rp.write(fmt.Appendf(nil, "data: %s\n\n", b))
}

// write sends b and flushes it, unless an earlier write failed.
func (rp *reply) write(b []byte) {
	if rp.err != nil {
		return
	}
	rp.deadline()
	if _, err := rp.w.Write(b); err != nil {
		rp.err = err
		return
	}
	if err := http.NewResponseController(rp.w).Flush(); err != nil {
		rp.err = err
	}
}

// deadline gives the next write writeTimeout to reach the client (where
// the connection supports deadlines).
func (rp *reply) deadline() {
	if rp.writeTimeout > 0 {
		http.NewResponseController(rp.w).SetWriteDeadline(time.Now().Add(rp.writeTimeout))
	}
}

// finish ends a successful generation.
func (rp *reply) finish(reason string, u usage) usage {
	u.TotalTokens = u.PromptTokens + u.CompletionTokens
	if rp.stream {
		rp.start()
		rp.event(rp.chunk("", nil, &reason))
		if rp.usageChunk {
			rp.event(completion{ID: rp.id, Object: rp.chunk("", nil, nil).Object, Created: rp.created, Model: rp.model,
				Choices: []choice{}, Usage: &u})
		}
		rp.write([]byte("data: [DONE]\n\n"))
		return u
	}
	text := rp.text.String()
	c := completion{ID: rp.id, Object: "text_completion", Created: rp.created, Model: rp.model,
		Choices: []choice{{FinishReason: &reason}}, Usage: &u}
	if rp.logprobs {
		c.Choices[0].Logprobs = logprobsJSON(rp.tok, rp.chat, rp.entries)
	}
	if rp.chat {
		c.Object = "chat.completion"
		c.Choices[0].Message = &chatMsg{Role: "assistant", Content: &text}
	} else {
		c.Choices[0].Text = &text
	}
	rp.deadline()
	writeJSON(rp.w, http.StatusOK, c)
	return u
}

// fail ends a generation with an error: an error reply, or an error event
// when the stream has begun (OpenAI's clients raise it).
func (rp *reply) fail(e *apiError, u usage) usage {
	if !rp.started {
		rp.deadline()
		writeError(rp.w, e)
		return u
	}
	rp.w.status = e.status
	rp.event(e.body())
	return u
}
