// Command reliability is the driver of bench/reliability.sh. It starts
// `acttail-gpu serve` on a free loopback port (twice: once for the load,
// once for a short grace), puts it through load and faults, samples the
// server's resident memory throughout and writes a Markdown report:
//
//   - concurrent streams: 64 greedy streams at once, each compared with
//     a single request's text;
//   - a burst past the queue: 200 requests at once for 72 places (8
//     running, 64 waiting), the rest answered 429 with Retry-After;
//   - slow and vanishing clients: streams read a few bytes at a time, and
//     streams dropped after their first chunk, at once;
//   - slowloris: connections that send half a body or half their
//     headers and then nothing, while a normal client is served;
//   - a connection flood past --max-conns;
//   - malformed requests: none may get a 5xx;
//   - SIGTERM with streams in flight: all drain and the process exits 0,
//     /healthz answering 503 meanwhile; then, with a short --grace, every
//     stream still in flight gets an error event or a 503, none a dropped
//     connection.
//
// Every phase is bounded by timeouts; the run takes under a minute with
// stories260K. It connects to 127.0.0.1 only.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	bin := flag.String("bin", "./acttail-gpu", "the acttail-gpu binary")
	modelPath := flag.String("model", "", "model to serve (default: the binary's default, stories260K)")
	out := flag.String("out", "docs/results/reliability.md", "report to write")
	flag.Parse()
	r := &report{}
	if err := run(r, *bin, *modelPath); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		r.fail(err)
	}
	if err := os.WriteFile(*out, []byte(r.markdown(*bin, *modelPath)), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "reliability:", err)
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "wrote %s\n", *out)
	if r.failed != nil {
		os.Exit(1)
	}
}

// report collects each phase's lines.
type report struct {
	sections []section
	rss      []rssPoint
	failed   error
}

type section struct {
	title string
	lines []string
}

type rssPoint struct {
	t     time.Duration
	kib   int
	phase string
}

func (r *report) add(title string, lines ...string) {
	r.sections = append(r.sections, section{title, lines})
	fmt.Fprintf(os.Stderr, "== %s\n%s\n", title, strings.Join(lines, "\n"))
}

func (r *report) fail(err error) {
	r.failed = err
	r.add("Run failed", "- "+err.Error())
}

func (r *report) markdown(bin, modelPath string) string {
	var b strings.Builder
	b.WriteString("# Reliability: load and faults on `serve`\n\n")
	b.WriteString("Written by `bench/reliability.sh` (driver `bench/reliability`), which serves the model on a loopback port and\n")
	b.WriteString("puts it through the phases below. Every count is from this run.\n\n")
	m := modelPath
	if m == "" {
		m = "stories260K (the default)"
	}
	fmt.Fprintf(&b, "- model: %s, `--device cpu`\n- machine: %d CPUs, %s %s/%s\n- date: %s\n\n",
		m, runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	for _, s := range r.sections {
		fmt.Fprintf(&b, "## %s\n\n%s\n\n", s.title, strings.Join(s.lines, "\n"))
	}
	if len(r.rss) > 0 {
		b.WriteString("## Resident memory of the first server over time\n\n")
		b.WriteString("Sampled from /proc every 200 ms; per phase, the first, largest and last sample.\n\n")
		b.WriteString("| phase | samples | first MiB | max MiB | last MiB |\n| --- | ---: | ---: | ---: | ---: |\n")
		var order []string
		byPhase := map[string][]int{}
		for _, p := range r.rss {
			if _, ok := byPhase[p.phase]; !ok {
				order = append(order, p.phase)
			}
			byPhase[p.phase] = append(byPhase[p.phase], p.kib)
		}
		for _, ph := range order {
			v := byPhase[ph]
			mx := v[0]
			for _, x := range v {
				mx = max(mx, x)
			}
			fmt.Fprintf(&b, "| %s | %d | %.1f | %.1f | %.1f |\n", ph, len(v), mib(v[0]), mib(mx), mib(v[len(v)-1]))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func mib(kib int) float64 { return float64(kib) / 1024 }

// server is a running `acttail-gpu serve`.
type server struct {
	cmd    *exec.Cmd
	url    string
	stderr bytes.Buffer
	exited chan error

	mu    sync.Mutex
	phase string
	rss   []rssPoint
	start time.Time
	done  chan struct{}
}

func startServer(bin, modelPath string, args ...string) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	all := []string{"serve", "--device", "cpu", "--addr", addr}
	if modelPath != "" {
		all = append(all, "--model", modelPath)
	}
	s := &server{url: "http://" + addr, exited: make(chan error, 1), done: make(chan struct{}), start: time.Now(), phase: "start"}
	s.cmd = exec.Command(bin, append(all, args...)...)
	s.cmd.Stderr = &s.stderr
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.exited <- s.cmd.Wait(); close(s.done) }()
	go s.sample()
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := client.Get(s.url + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case err := <-s.exited:
			return nil, fmt.Errorf("serve exited (%v): %s", err, s.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			s.cmd.Process.Kill()
			return nil, errors.New("serve did not answer /healthz in 60 s")
		}
	}
}

// sample records VmRSS every 200 ms until the process exits.
func (s *server) sample() {
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-tick.C:
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.cmd.Process.Pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
				s.mu.Lock()
				s.rss = append(s.rss, rssPoint{time.Since(s.start), kib, s.phase})
				s.mu.Unlock()
			}
		}
	}
}

func (s *server) setPhase(p string) {
	s.mu.Lock()
	s.phase = p
	s.mu.Unlock()
}

// metric reads one sample of /metrics.
func (s *server) metric(name string) float64 {
	resp, err := client.Get(s.url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return -1
}

// waitMetric polls until ok(metric) or d passes; it returns how long it
// took, or -1.
func (s *server) waitMetric(name string, ok func(float64) bool, d time.Duration) time.Duration {
	t0 := time.Now()
	for time.Since(t0) < d {
		if ok(s.metric(name)) {
			return time.Since(t0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1
}

var client = &http.Client{Transport: &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 512, MaxConnsPerHost: 0}, Timeout: 60 * time.Second}

const prompt = "Once upon a time"

// post sends a JSON body and returns the status, the body and the
// Retry-After header.
func (s *server) post(ctx context.Context, path string, body any) (int, []byte, string, error) {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, resp.Header.Get("Retry-After"), err
}

// streamResult is what a streaming client saw.
type streamResult struct {
	text     string
	done     bool   // [DONE] arrived
	errEvent string // the code of an error event, if one came
	status   int
	err      error // transport error (dropped connection)
}

// stream reads a completions stream; onFirst runs after its first event,
// and pace, if set, slows reading to n bytes every d.
func (s *server) stream(ctx context.Context, body map[string]any, onFirst func(), paceN int, paceD time.Duration) streamResult {
	body["stream"] = true
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/v1/completions", bytes.NewReader(b))
	resp, err := client.Do(req)
	if err != nil {
		return streamResult{err: err}
	}
	defer resp.Body.Close()
	res := streamResult{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		io.Copy(io.Discard, resp.Body)
		return res
	}
	var rd io.Reader = resp.Body
	if paceN > 0 {
		rd = &slowReader{r: resp.Body, n: paceN, d: paceD}
	}
	sc := bufio.NewScanner(rd)
	first := true
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if first && onFirst != nil {
			onFirst()
		}
		first = false
		if data == "[DONE]" {
			res.done = true
			return res
		}
		var c struct {
			Choices []struct{ Text string }
			Error   *struct{ Code string }
		}
		if json.Unmarshal([]byte(data), &c) == nil {
			if c.Error != nil {
				res.errEvent = c.Error.Code
				return res
			}
			if len(c.Choices) > 0 {
				res.text += c.Choices[0].Text
			}
		}
	}
	res.err = sc.Err()
	if res.err == nil {
		res.err = io.ErrUnexpectedEOF
	}
	return res
}

type slowReader struct {
	r io.Reader
	n int
	d time.Duration
}

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(s.d)
	return s.r.Read(p[:min(len(p), s.n)])
}

func run(r *report, bin, modelPath string) error {
	s, err := startServer(bin, modelPath, "--body-timeout", "5s")
	if err != nil {
		return err
	}
	defer func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
		}
		s.mu.Lock()
		r.rss = s.rss
		s.mu.Unlock()
	}()
	ctx := context.Background()
	s.setPhase("idle")
	time.Sleep(time.Second)
	if err := phaseStreams(ctx, s, r); err != nil {
		return err
	}
	phaseBurst(ctx, s, r)
	phaseSlowClients(ctx, s, r)
	if err := phaseSlowloris(ctx, s, r); err != nil {
		return err
	}
	if err := phaseFlood(s, r); err != nil {
		return err
	}
	phaseMalformed(s, r)
	phaseDrain(s, r)
	return phaseShortGrace(r, bin, modelPath)
}

// phaseStreams (1) runs 64 greedy streams at once and compares each with
// a single request's text.
func phaseStreams(ctx context.Context, s *server, r *report) error {
	s.setPhase("64 streams")
	status, body, _, err := s.post(ctx, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 64, "temperature": 0})
	if err != nil || status != 200 {
		return fmt.Errorf("single request: %d %v", status, err)
	}
	var single struct{ Choices []struct{ Text string } }
	json.Unmarshal(body, &single)
	want := single.Choices[0].Text
	t0 := time.Now()
	res := parallel(64, func(int) streamResult {
		return s.stream(ctx, map[string]any{"prompt": prompt, "max_tokens": 64, "temperature": 0}, nil, 0, 0)
	})
	wall := time.Since(t0)
	same := 0
	for _, x := range res {
		if x.done && x.text == want {
			same++
		}
	}
	r.add("Concurrent streams",
		fmt.Sprintf("- 64 greedy streams of 64 tokens at once: %d of 64 ended with [DONE] and equal the single request's text, in %.2f s (%.0f tokens/s over all).",
			same, wall.Seconds(), 64*64/wall.Seconds()))
	return nil
}

// burstAnswer is how one request of the burst was answered, and when.
type burstAnswer struct {
	status int
	retry  string
	code   string
	d      time.Duration
}

// phaseBurst (2) sends 200 requests at once, past the queue's 72 places.
func phaseBurst(ctx context.Context, s *server, r *report) {
	s.setPhase("burst of 200")
	counts := map[int]int{}
	var slowest429 time.Duration
	withRetry := 0
	for _, a := range burst(ctx, s) {
		counts[a.status]++
		if a.status == 429 {
			slowest429 = max(slowest429, a.d)
			if a.retry != "" && a.code == "queue_full" {
				withRetry++
			}
		}
	}
	r.add("A burst past the queue (8 running, 64 waiting)",
		fmt.Sprintf("- 200 requests (256 tokens each) at once: %d answered 200, %d answered 429 (%d of them `queue_full` with Retry-After), %d other; the slowest 429 came after %d ms.",
			counts[200], counts[429], withRetry, 200-counts[200]-counts[429], slowest429.Milliseconds()))
}

// burst sends the 200 requests and collects their answers.
func burst(ctx context.Context, s *server) []burstAnswer {
	var mu sync.Mutex
	var answers []burstAnswer
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			st, b, ra, err := s.post(ctx, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 256, "temperature": 1, "seed": 1})
			a := burstAnswer{status: st, retry: ra, d: time.Since(t)}
			if err != nil {
				a.code = err.Error()
			}
			var e struct{ Error struct{ Code string } }
			if json.Unmarshal(b, &e) == nil {
				a.code = e.Error.Code
			}
			mu.Lock()
			answers = append(answers, a)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return answers
}

// phaseSlowClients (3) runs 16 streams read slowly and 32 dropped after
// their first chunk, at once, and times when the slots are free again.
func phaseSlowClients(ctx context.Context, s *server, r *report) {
	s.setPhase("slow and vanishing clients")
	var slow []streamResult
	var wg sync.WaitGroup
	var mu sync.Mutex
	t0 := time.Now()
	freed := make(chan time.Duration, 1)
	go func() {
		time.Sleep(100 * time.Millisecond) // the clients have connected
		freed <- s.waitMetric("acttail_active_sequences", func(v float64) bool { return v == 0 }, 30*time.Second) + 100*time.Millisecond
	}()
	for i := range 48 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := map[string]any{"prompt": prompt, "max_tokens": 200, "temperature": 1, "seed": i}
			if i < 16 {
				x := s.stream(ctx, body, nil, 64, 20*time.Millisecond)
				mu.Lock()
				slow = append(slow, x)
				mu.Unlock()
				return
			}
			cctx, cancel := context.WithCancel(ctx)
			s.stream(cctx, body, cancel, 0, 0)
		}()
	}
	wg.Wait()
	slowTook := time.Since(t0)
	slowDone := 0
	for _, x := range slow {
		if x.done {
			slowDone++
		}
	}
	r.add("Slow and vanishing clients",
		fmt.Sprintf("- 16 clients reading 64 bytes every 20 ms and 32 dropping their stream after the first chunk, all at once: %d of 16 slow streams ended with [DONE], the last %.1f s after the start.", slowDone, slowTook.Seconds()),
		fmt.Sprintf("- Active sequences were 0 again %.2f s after the start, while the slow clients were still reading: their tokens wait in their handlers' outboxes, not in a slot.", (<-freed).Seconds()))
}

// phaseSlowloris (4) holds 300 connections with half a body and 50 with
// half their headers while a normal client is served.
func phaseSlowloris(ctx context.Context, s *server, r *report) error {
	s.setPhase("slowloris")
	client.CloseIdleConnections()
	conns, err := slowlorisConns(s)
	if err != nil {
		return err
	}
	held := s.metric("acttail_http_connections")
	t := time.Now()
	st, _, _, err := s.post(ctx, "/v1/completions", map[string]any{"prompt": prompt, "max_tokens": 16})
	normal := time.Since(t)
	if err != nil {
		st = 0
	}
	got408, last408, closedHeaders := slowlorisEnds(conns)
	open := s.waitMetric("acttail_http_connections", func(v float64) bool { return v <= 1 }, 5*time.Second)
	r.add("Slowloris (--body-timeout 5s; headers: 10 s)",
		fmt.Sprintf("- 300 connections that sent half a body and 50 that sent half their headers, then nothing: %.0f connections open; meanwhile a normal request got %d in %d ms.", held, st, normal.Milliseconds()),
		fmt.Sprintf("- %d of 300 half bodies were answered 408 (the last %.1f s after the attack was in place); %d of 50 half headers were closed by the server; all connections gone %d ms later (-1: not within 5 s).",
			got408, last408.Seconds(), closedHeaders, open.Milliseconds()))
	return nil
}

// slowlorisConns opens the 350 connections: the first 300 send half a
// body, the rest half their headers.
func slowlorisConns(s *server) ([]net.Conn, error) {
	var conns []net.Conn
	for i := range 350 {
		c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			return nil, fmt.Errorf("slowloris connection %d: %v", i, err)
		}
		if i < 300 {
			fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\": ")
		} else {
			fmt.Fprintf(c, "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Le")
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// slowlorisEnds waits for the server to end the slowloris connections and
// counts how: half bodies answered 408 (and when the last was), half
// headers closed or refused.
func slowlorisEnds(conns []net.Conn) (got408 int, last408 time.Duration, closedHeaders int) {
	var mu sync.Mutex
	var cw sync.WaitGroup
	t0 := time.Now()
	for i, c := range conns {
		cw.Add(1)
		go func() {
			defer cw.Done()
			c.SetReadDeadline(time.Now().Add(20 * time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case i < 300 && err == nil && resp.StatusCode == http.StatusRequestTimeout:
				got408++
				last408 = max(last408, time.Since(t0))
			case i >= 300 && err != nil && !isTimeout(err):
				closedHeaders++ // closed by the server after ReadHeaderTimeout
			case i >= 300 && err == nil && resp.StatusCode >= 400:
				closedHeaders++
			}
			c.Close()
		}()
	}
	cw.Wait()
	return got408, last408, closedHeaders
}

// phaseFlood (5) opens 600 idle connections, past --max-conns (512).
func phaseFlood(s *server, r *report) error {
	s.setPhase("connection flood")
	client.CloseIdleConnections()
	var conns []net.Conn
	for range 600 {
		c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
		if err != nil {
			return err
		}
		conns = append(conns, c)
	}
	time.Sleep(500 * time.Millisecond)
	refused := refusedConns(conns)
	for _, c := range conns {
		c.Close()
	}
	recovered := s.waitMetric("acttail_http_connections", func(v float64) bool { return v <= 1 }, 5*time.Second)
	r.add("A connection flood past --max-conns (512)",
		fmt.Sprintf("- 600 idle connections: %d were answered 503 `too_many_connections` at once and closed; the other %d were held until the client closed them (or, idle, until the 10 s header timeout); the server was back to no connections %d ms after the client closed them.",
			refused, 600-refused, recovered.Milliseconds()),
		"- While the cap is full, a new client is refused too: the cap bounds the process, not who gets in.")
	return nil
}

// refusedConns counts the connections answered 503 within a second.
func refusedConns(conns []net.Conn) int {
	var mu sync.Mutex
	refused := 0
	var hz sync.WaitGroup
	for _, c := range conns {
		hz.Add(1)
		go func() {
			defer hz.Done()
			c.SetReadDeadline(time.Now().Add(time.Second))
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err == nil && resp.StatusCode == http.StatusServiceUnavailable {
				mu.Lock()
				refused++
				mu.Unlock()
			}
		}()
	}
	hz.Wait()
	return refused
}

// phaseMalformed (6) sends malformed and hostile requests: none may get a
// 5xx.
func phaseMalformed(s *server, r *report) {
	s.setPhase("malformed requests")
	bad := malformed()
	byStatus := map[int]int{}
	fivexx := 0
	for _, b := range bad {
		st, err := s.raw(b)
		if err != nil {
			byStatus[0]++
			continue
		}
		byStatus[st]++
		if st >= 500 && st != http.StatusHTTPVersionNotSupported {
			fivexx++
		}
	}
	var keys []int
	for k := range byStatus {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d × %d", byStatus[k], k))
	}
	r.add("Malformed requests",
		fmt.Sprintf("- %d malformed or hostile requests: %s (0: no answer); %d server errors (5xx but net/http's 505 for the request line `GET / HTTP/9.9`).", len(bad), strings.Join(parts, ", "), fivexx),
		"- The 200 is `{\"prompt\":\"\\u0000\\ud800\"}`, valid JSON (the lone surrogate decodes as U+FFFD); the 307 is net/http cleaning `/../../etc/passwd`.")
}

// phaseDrain (7) sends SIGTERM with streams in flight.
func phaseDrain(s *server, r *report) {
	s.setPhase("SIGTERM drain")
	client.CloseIdleConnections()
	d := drain(s, 16, 8, map[string]any{"prompt": prompt, "max_tokens": 400, "temperature": 1, "seed": 5})
	r.add("SIGTERM with 16 streams in flight, 8 running and 8 queued (--grace 30s)", d...)
}

// phaseShortGrace (8) starts a second server with a short grace and
// drains it with more streams in flight than it can finish.
func phaseShortGrace(r *report, bin, modelPath string) error {
	s2, err := startServer(bin, modelPath, "--grace", "300ms", "--threads", "1", "--max-batch", "4")
	if err != nil {
		return err
	}
	d := drain(s2, 16, 4, map[string]any{"prompt": prompt, "max_tokens": 480, "temperature": 1, "seed": 6})
	r.add("SIGTERM with 16 streams in flight, 4 running and 12 queued, and --grace 300ms (--threads 1, --max-batch 4)", d...)
	return nil
}

// drain starts n streams, sends SIGTERM once running of them have their
// first chunk (the rest wait in the queue), asks /healthz and for a new
// completion meanwhile, and reports how every stream ended and how the
// process exited.
func drain(s *server, n, running int, body map[string]any) []string {
	ctx := context.Background()
	results, started, finished := drainStreams(ctx, s, n, running, body)
	started.Wait()
	t0 := time.Now()
	s.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(50 * time.Millisecond)
	health, newReq := duringDrain(ctx, s)
	finished.Wait()
	exit := s.waitExit()
	took := time.Since(t0)
	var done, errEvents, status503, dropped int
	for _, x := range results {
		switch {
		case x.done:
			done++
		case x.errEvent != "":
			errEvents++
		case x.status == http.StatusServiceUnavailable:
			status503++
		default:
			dropped++
		}
	}
	return []string{
		fmt.Sprintf("- During the drain: /healthz answered %s, a new completion %s.", health, newReq),
		fmt.Sprintf("- Of %d streams: %d ended with [DONE], %d with an error event, %d were answered 503, %d lost their connection without either.", n, done, errEvents, status503, dropped),
		fmt.Sprintf("- The process exited with %s, %.2f s after SIGTERM.", exit, took.Seconds()),
	}
}

// drainStreams starts n streams of body. started is done once running of
// them have their first chunk, finished once all have ended; results are
// theirs, to read after finished.
func drainStreams(ctx context.Context, s *server, n, running int, body map[string]any) (results []streamResult, started, finished *sync.WaitGroup) {
	started, finished = &sync.WaitGroup{}, &sync.WaitGroup{}
	started.Add(running)
	var count sync.Mutex
	left := running
	results = make([]streamResult, n)
	for i := range n {
		finished.Add(1)
		go func() {
			defer finished.Done()
			b := map[string]any{}
			for k, v := range body {
				b[k] = v
			}
			var once sync.Once
			results[i] = s.stream(ctx, b, func() {
				once.Do(func() {
					count.Lock()
					if left > 0 {
						left--
						started.Done()
					}
					count.Unlock()
				})
			}, 0, 0)
		}()
	}
	return results, started, finished
}

// duringDrain asks /healthz and for a new completion, and says how each
// was answered.
func duringDrain(ctx context.Context, s *server) (health, newReq string) {
	hz, hzErr := client.Get(s.url + "/healthz")
	health = "refused"
	if hzErr == nil {
		health = fmt.Sprintf("%d (Retry-After %q)", hz.StatusCode, hz.Header.Get("Retry-After"))
		hz.Body.Close()
	}
	st, _, _, err := s.post(ctx, "/v1/completions", map[string]any{"prompt": prompt})
	newReq = fmt.Sprint(st)
	if err != nil {
		newReq = "refused"
	}
	return health, newReq
}

// waitExit waits up to 40 s for the process to exit (then kills it) and says
// how it exited.
func (s *server) waitExit() string {
	select {
	case err := <-s.exited:
		if err == nil {
			return "0"
		}
		lines := strings.Split(strings.TrimSpace(s.stderr.String()), "\n")
		return err.Error() + fmt.Sprintf(" (%q)", lines[len(lines)-1])
	case <-time.After(40 * time.Second):
		s.cmd.Process.Kill()
		return "still running after 40 s (killed)"
	}
}

// raw sends one hand-written HTTP request and returns the status.
func (s *server) raw(req string) (int, error) {
	c, err := net.Dial("tcp", strings.TrimPrefix(s.url, "http://"))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// malformed lists hostile requests, each a whole HTTP/1.1 request.
func malformed() []string {
	post := func(path, body string) string {
		return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", path, len(body), body)
	}
	var out []string
	for _, b := range []string{
		``, `{`, `[]`, `null`, `"x"`, `{"prompt":`, `{"prompt":"Hi"} {}`, `{"prompt":"Hi"}}`, `{"prompt":3}`, `{"prompt":["a","b"]}`,
		`{"prompt":[]}`, `{"prompt":{"a":1}}`, `{"prompt":"Hi","max_tokens":5.5}`, `{"prompt":"Hi","max_tokens":-1}`,
		`{"prompt":"Hi","max_tokens":1e30}`, `{"prompt":"Hi","max_tokens":"10"}`, `{"prompt":"Hi","temperature":-1}`,
		`{"prompt":"Hi","temperature":"hot"}`, `{"prompt":"Hi","top_p":0}`, `{"prompt":"Hi","top_p":1.5}`, `{"prompt":"Hi","n":3}`,
		`{"prompt":"Hi","stop":7}`, `{"prompt":"Hi","stop":[1,2]}`, `{"prompt":"Hi","seed":"x"}`, `{"prompt":"Hi","seed":1e40}`,
		`{"prompt":"Hi","stream":"yes"}`, `{"prompt":"Hi","logprobs":9}`, `{"prompt":"Hi","logprobs":true}`, `{"prompt":"Hi","model":"gpt-9"}`,
		`{"prompt":"Hi","model":7}`, `{"prompt":"` + strings.Repeat("the cat sat on the mat. ", 200) + `"}`,
		`{"prompt":"Hi","max_tokens":100000}`, `{"prompt":"\u0000\ud800"}`, `{"prompt":"Hi","stream_options":3}`,
	} {
		out = append(out, post("/v1/completions", b))
	}
	for _, b := range []string{
		`{}`, `{"messages":[]}`, `{"messages":{}}`, `{"messages":[{"role":"wizard","content":"x"}]}`, `{"messages":[{"role":"user"}]}`,
		`{"messages":[{"role":"user","content":3}]}`, `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}`, `{"messages":[{"content":"x"}]}`,
		`{"messages":[{"role":"user","content":"x"}],"logprobs":2}`, `{"messages":[{"role":"user","content":"x"}],"top_logprobs":2}`,
		`{"messages":[{"role":"user","content":"x"}],"logprobs":true,"top_logprobs":99}`, `{"messages":"hi"}`,
	} {
		out = append(out, post("/v1/chat/completions", b))
	}
	out = append(out,
		post("/v1/completions", `{"prompt":"`+strings.Repeat("a", 2<<20)+`"}`), // over --max-body
		"GET /v1/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"DELETE /v1/models HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /v1/models/nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nzz\r\n",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\nConnection: close\r\n\r\n",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\nConnection: close\r\n\r\nhello",
		"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\nConnection: close\r\n\r\n",
		"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
		"NOT HTTP AT ALL\r\n\r\n",
		"GET /healthz HTTP/1.1\r\nHost: x\r\n"+strings.Repeat("X-Pad: "+strings.Repeat("a", 1000)+"\r\n", 2000)+"\r\n",
	)
	return out
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// parallel runs f(0..n-1) at once and returns the results in order.
func parallel[T any](n int, f func(int) T) []T {
	out := make([]T, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = f(i)
		}()
	}
	wg.Wait()
	return out
}
