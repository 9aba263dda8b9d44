package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// testFiles returns the stories260K files and their contents, the bytes
// built into the binary.
func testFiles(t *testing.T) ([]File, map[string][]byte) {
	t.Helper()
	return Stories260K, map[string][]byte{Stories260K[0].Name: builtinWeights, Stories260K[1].Name: builtinTokenizer}
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// server serves content by file name under /stories260K/ and counts hits.
func server(t *testing.T, content map[string][]byte) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		name, ok := strings.CutPrefix(r.URL.Path, "/stories260K/")
		b, found := content[name]
		if !ok || !found {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// isolate keeps the test off the real user cache and out of $ACTTAIL_MODEL_DIR.
func isolate(t *testing.T) {
	t.Helper()
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
	t.Setenv(EnvModelDir, "")
}

// leftovers lists the entries of dir other than the wanted files.
func leftovers(t *testing.T, dir string, files []File) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	want := map[string]bool{}
	for _, f := range files {
		want[f.Name] = true
	}
	var extra []string
	for _, e := range entries {
		if !want[e.Name()] {
			extra = append(extra, e.Name())
		}
	}
	return extra
}

func TestFetchAndCache(t *testing.T) {
	isolate(t)
	files, content := testFiles(t)
	srv, hits := server(t, content)
	var log bytes.Buffer
	f := &Fetcher{BaseURL: srv.URL + "/stories260K/", Dir: filepath.Join(t.TempDir(), "cache"), Files: files, Log: &log}
	dir, err := f.Fetch(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		got, err := os.ReadFile(filepath.Join(dir, file.Name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, content[file.Name]) {
			t.Fatalf("%s: downloaded bytes differ", file.Name)
		}
	}
	if extra := leftovers(t, dir, files); len(extra) > 0 {
		t.Fatalf("left behind %v", extra)
	}
	if hits.Load() != int64(len(files)) {
		t.Fatalf("%d requests, want %d", hits.Load(), len(files))
	}
	if lines := strings.Count(log.String(), "downloading "+srv.URL); lines != len(files) {
		t.Fatalf("log %q: want a line naming each source", log.String())
	}

	// Cached with the right hash: no more requests.
	if _, err := f.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != int64(len(files)) {
		t.Fatalf("cached files downloaded again: %d requests", hits.Load())
	}

	// A corrupted cached file is fetched again, and only that one.
	if err := os.WriteFile(filepath.Join(dir, files[1].Name), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Fetch(context.Background()); err != nil {
		t.Fatal(err)
	}
	if hits.Load() != int64(len(files))+1 {
		t.Fatalf("%d requests after repairing one file, want %d", hits.Load(), len(files)+1)
	}
}

func TestHashMismatch(t *testing.T) {
	isolate(t)
	files, content := testFiles(t)
	bad := map[string][]byte{}
	for k, v := range content {
		bad[k] = append(append([]byte(nil), v...), 'x')
	}
	srv, _ := server(t, bad)
	dir := t.TempDir()
	f := &Fetcher{BaseURL: srv.URL + "/stories260K", Dir: dir, Files: files}
	_, err := f.Fetch(context.Background())
	if err == nil {
		t.Fatal("wrong bytes accepted")
	}
	msg := err.Error()
	for _, s := range []string{files[0].Name, files[0].SHA256, hashOf(bad[files[0].Name]), "mismatch"} {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not mention %q", msg, s)
		}
	}
	if extra := leftovers(t, dir, nil); len(extra) > 0 {
		t.Fatalf("left behind %v", extra)
	}
}

func TestHTTPErrors(t *testing.T) {
	isolate(t)
	files, content := testFiles(t)
	srv, _ := server(t, content)
	dir := t.TempDir()

	f := &Fetcher{BaseURL: srv.URL + "/missing/", Dir: dir, Files: files}
	_, err := f.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), srv.URL+"/missing/"+files[0].Name) {
		t.Fatalf("404: got %v, want the URL and status", err)
	}

	f = &Fetcher{BaseURL: srv.URL + "/stories260K/", Dir: dir, Files: files, MaxSize: 100}
	_, err = f.Fetch(context.Background())
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversize: got %v, want a size-limit error", err)
	}
	if extra := leftovers(t, dir, nil); len(extra) > 0 {
		t.Fatalf("left behind %v", extra)
	}
}

func TestCancel(t *testing.T) {
	isolate(t)
	started := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1000")
		_, _ = w.Write(make([]byte, 10))
		w.(http.Flusher).Flush()
		close(started)
		<-r.Context().Done()
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	dir := t.TempDir()
	f := &Fetcher{BaseURL: srv.URL, Dir: dir, Files: []File{{Name: "slow.bin", SHA256: strings.Repeat("0", 64)}}}
	_, err := f.Fetch(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if extra := leftovers(t, dir, nil); len(extra) > 0 {
		t.Fatalf("left behind %v", extra)
	}
}

// The built-in model is stories260K as published, and loads.
func TestBuiltin(t *testing.T) {
	if hashOf(builtinWeights) != Stories260K[0].SHA256 || hashOf(builtinTokenizer) != Stories260K[1].SHA256 {
		t.Fatal("the embedded files are not the published stories260K")
	}
	m, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Config.Name != BuiltinName || m.Config.Dim != 64 || m.Vocab == nil || len(m.Vocab.Tokens) != 512 {
		t.Fatalf("%s: %+v", m.Source, m.Config)
	}
}

// Open: "" is the built-in model or $ACTTAIL_MODEL_DIR's, a path is that
// checkpoint, a known name its model; anything else says what it accepts.
func TestOpen(t *testing.T) {
	isolate(t)
	ctx := context.Background()
	dir := t.TempDir()
	_, content := testFiles(t)
	for _, f := range Stories260K {
		if err := os.WriteFile(filepath.Join(dir, f.Name), content[f.Name], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ name, env, source string }{
		{"", "", "stories260K (built in)"},
		{"stories260k", "", "stories260K (built in)"},
		{"", dir, filepath.Join(dir, "stories260K.bin")},
		{filepath.Join(dir, "stories260K.bin"), "", filepath.Join(dir, "stories260K.bin")},
	} {
		t.Setenv(EnvModelDir, tc.env)
		m, err := Open(ctx, tc.name, nil)
		if err != nil {
			t.Errorf("Open(%q) with $%s=%q: %v", tc.name, EnvModelDir, tc.env, err)
			continue
		}
		if m.Source != tc.source || m.Config.Name != BuiltinName {
			t.Errorf("Open(%q): source %q, name %q; want %q", tc.name, m.Source, m.Config.Name, tc.source)
		}
		m.Close()
	}
	t.Setenv(EnvModelDir, filepath.Join(dir, "nope"))
	if _, err := Open(ctx, "", nil); err == nil || !strings.Contains(err.Error(), EnvModelDir) {
		t.Errorf("missing $%s: got %v", EnvModelDir, err)
	}
	t.Setenv(EnvModelDir, "")
	if _, err := Open(ctx, "stories1B", nil); err == nil || !strings.Contains(err.Error(), "stories15M") {
		t.Errorf("unknown name: got %v, want the known names", err)
	}
}

// withModel makes k a known model for one test.
func withModel(t *testing.T, k Known) {
	old := Models
	Models = append(append([]Known(nil), Models...), k)
	t.Cleanup(func() { Models = old })
}

// A known model is downloaded into the cache once, with a line saying so,
// and loads from there.
func TestOpenDownloads(t *testing.T) {
	isolate(t)
	files, content := testFiles(t)
	srv, hits := server(t, content)
	var known []File
	for _, f := range files {
		f.URL = srv.URL + "/stories260K/" + f.Name
		known = append(known, f)
	}
	withModel(t, Known{Name: "stories-test", Files: known})
	for range 2 {
		var log bytes.Buffer
		m, err := Open(context.Background(), "stories-test", &log)
		if err != nil {
			t.Fatal(err)
		}
		dir, _ := CacheDir("stories-test")
		if m.Source != filepath.Join(dir, files[0].Name) {
			t.Errorf("source %s, want the cache", m.Source)
		}
		m.Close()
	}
	if hits.Load() != int64(len(files)) {
		t.Errorf("%d requests for %d files", hits.Load(), len(files))
	}
}

// Offline, a known model fails in one line that says what failed and what
// to pass, with no raw network error.
func TestOpenOffline(t *testing.T) {
	isolate(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/m.bin"
	ln.Close()
	withModel(t, Known{Name: "stories-test", Files: []File{{Name: "m.bin", URL: closed, SHA256: strings.Repeat("0", 64)}}})
	_, err = Open(context.Background(), "stories-test", nil)
	var u *UnreachableError
	if !errors.As(err, &u) {
		t.Fatalf("got %v, want an UnreachableError", err)
	}
	msg := err.Error()
	for _, want := range []string{"model stories-test", "cannot reach " + ln.Addr().String(), "--model PATH", closed} {
		if !strings.Contains(msg, want) {
			t.Errorf("%q lacks %q", msg, want)
		}
	}
	if strings.Contains(msg, "\n") || strings.Contains(msg, "dial tcp") {
		t.Errorf("%q: not one plain line", msg)
	}
	if dir, _ := CacheDir("stories-test"); exists(dir) {
		t.Errorf("a failed download left %s", dir)
	}

	// A name that does not resolve.
	f := &Fetcher{Dir: t.TempDir(), Files: []File{{Name: "m.bin", URL: "http://huggingface.co/m.bin"}},
		Client: &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return nil, &net.DNSError{Err: "no such host", Name: "huggingface.co", IsNotFound: true}
		}}}}
	_, err = f.Fetch(context.Background())
	if !errors.As(err, &u) || err.Error() != "cannot reach huggingface.co (its name does not resolve: no network?)" {
		t.Errorf("DNS failure: %v", err)
	}
}

func TestCacheDir(t *testing.T) {
	isolate(t)
	dir, err := CacheDir("stories15M")
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "acttail-gpu", "stories15M"); dir != want {
		t.Fatalf("cache dir %q, want %q", dir, want)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
