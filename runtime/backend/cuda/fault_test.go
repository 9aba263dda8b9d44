package cuda

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/server"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// hugeContext is a context whose KV cache (stories260K: 5 layers × 2 ×
// 2^28 × 32 float32) no device here holds, so the first allocation of a
// state's cache fails: a real device fault (out of memory), on the
// emulator (16 GiB) as on an H200.
const hugeContext = 1 << 28

// TestGPUStickyError: a device error is kept as Err, the ops after it do
// nothing (and do not crash on the buffer that was never allocated), and
// the engine's next pass returns it.
func TestGPUStickyError(t *testing.T) {
	defer guard(t)
	g := newGPU(t)
	m, err := llama2c.Load(filepath.Join(testfiles.Stories260K(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	m.Config.SeqLen = hugeContext
	e, err := engine.Load(g, m)
	if err != nil {
		t.Fatal(err)
	}
	if g.Err() != nil {
		t.Fatalf("error before the fault: %v", g.Err())
	}
	s := e.NewState(hugeContext, 4)
	first := g.Err()
	if first == nil {
		t.Fatal("a 32 GiB cache allocated without an error")
	}
	logits := make([]float32, m.Config.VocabSize)
	err = s.Forward([]int{1, 2, 3}, logits, false)
	if err == nil || !errors.Is(err, first) {
		t.Fatalf("forward after the fault: %v, want %v", err, first)
	}
	if err := e.NewState(64, 4).Forward([]int{1}, logits, false); !errors.Is(err, first) {
		t.Fatalf("a state of its own after the fault: %v, want the sticky %v", err, first)
	}
	if g.Err() != first {
		t.Fatalf("Err changed from %v to %v", first, g.Err())
	}
}

// TestGPUServeDeviceFault serves on the emulated GPU and makes the first
// request hit a device fault (its sequence's cache does not fit): that
// request gets a 500, the server keeps running, answers the next request
// with a 500 too, and /healthz reports the fault with a 503.
func TestGPUServeDeviceFault(t *testing.T) {
	defer guard(t)
	g := newGPU(t)
	m, err := llama2c.Load(filepath.Join(testfiles.Stories260K(t), "stories260K.bin"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	m.Config.SeqLen = hugeContext
	e, err := engine.Load(g, m)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Model: e, Tokenizer: tok, Context: hugeContext})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	post := func() (int, string) {
		body, _ := json.Marshal(map[string]any{"prompt": "Once upon a time", "max_tokens": 4})
		resp, err := http.Post(ts.URL+"/v1/completions", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Error struct{ Type, Message string }
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, out.Error.Type + ": " + out.Error.Message
	}
	for i := range 2 {
		if code, msg := post(); code != http.StatusInternalServerError || !strings.Contains(msg, "server_error") || !strings.Contains(msg, "cuda") {
			t.Fatalf("request %d: %d %q, want a 500 naming the device error", i, code, msg)
		}
	}
	resp, err := http.Get(ts.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/healthz after a device fault: %d, want 503", resp.StatusCode)
	}
}
