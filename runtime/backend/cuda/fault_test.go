package cuda

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/cgo/cudadrv"
	"github.com/acttail/acttail-gpu/internal/testmodel"
	"github.com/acttail/acttail-gpu/runtime/engine"
	"github.com/acttail/acttail-gpu/runtime/server"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// fillDevice takes all of the device's free memory, as another process on
// the GPU would (allocated, never touched), and gives it back at the end
// of the test, before the backend closes: the backend's next allocation
// fails, a real device fault (out of memory) from the driver.
func fillDevice(t *testing.T, g *Backend) {
	t.Helper()
	free, err := g.FreeMemory()
	if err != nil || free <= 0 {
		t.Fatalf("free memory: %d, %v", free, err)
	}
	var p cudadrv.DevicePtr
	if err := g.dev.Do(func(c *cudadrv.Ctx) (err error) { p, err = c.MemAlloc(int(free)); return err }); err != nil {
		t.Skipf("cannot take the device's %d free bytes: %v", free, err)
	}
	t.Cleanup(func() {
		if err := g.dev.Do(func(c *cudadrv.Ctx) error { return c.MemFree(p) }); err != nil {
			t.Error(err)
		}
	})
}

// TestGPUStickyError: a device error is kept as Err, the ops after it do
// nothing (and do not crash on the buffer that was never allocated), and
// the engine's next pass returns it.
func TestGPUStickyError(t *testing.T) {
	defer guard(t)
	g := newGPU(t)
	m := testmodel.Stories260K(t)
	e, err := engine.Load(g, m)
	if err != nil {
		t.Fatal(err)
	}
	if g.Err() != nil {
		t.Fatalf("error before the fault: %v", g.Err())
	}
	fillDevice(t, g)
	s := e.NewState(64, 4)
	first := g.Err()
	if first == nil {
		t.Fatal("a state allocated on a full device without an error")
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

// TestGPUServeDeviceFault serves on the emulated GPU and fills the
// device, so the first request meets a device fault when its state is
// allocated: it gets a 500, the server keeps running, answers the next
// request with a 500 too, and /healthz reports the fault with a 503.
func TestGPUServeDeviceFault(t *testing.T) {
	defer guard(t)
	g := newGPU(t)
	m := testmodel.Stories260K(t)
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Load(g, m)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(server.Config{Model: e, Tokenizer: tok, MaxMemory: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	fillDevice(t, g)
	defer srv.Shutdown(context.Background()) // before the backend closes
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
