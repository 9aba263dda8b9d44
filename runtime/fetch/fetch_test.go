package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// testFiles returns the stories260K files and their contents: the real
// ones from the shared folder when this checkout has it, otherwise made-up
// bytes with the Files' hashes replaced to match.
func testFiles(t *testing.T) ([]File, map[string][]byte) {
	t.Helper()
	content := map[string][]byte{}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if dir, ok := FindShared(Stories260K, wd); ok {
		for _, f := range Stories260K {
			b, err := os.ReadFile(filepath.Join(dir, f.Name))
			if err != nil {
				t.Fatal(err)
			}
			content[f.Name] = b
		}
		return Stories260K, content
	}
	files := make([]File, len(Stories260K))
	for i, f := range Stories260K {
		b := bytes.Repeat([]byte(f.Name), 1000+i)
		content[f.Name] = b
		files[i] = File{Name: f.Name, SHA256: hashOf(b)}
	}
	return files, content
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
	if lines := strings.Count(log.String(), "\n"); lines != 1 || !strings.Contains(log.String(), srv.URL) {
		t.Fatalf("log %q: want one line naming the source (a buffer gets no progress bar)", log.String())
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

func TestDefaultModelEnv(t *testing.T) {
	isolate(t)
	dir := t.TempDir()
	t.Setenv(EnvModelDir, dir)
	got, err := DefaultModel(context.Background(), nil)
	if err != nil || got != dir {
		t.Fatalf("DefaultModel = %q, %v; want %q", got, err, dir)
	}
	t.Setenv(EnvModelDir, filepath.Join(dir, "nope"))
	if _, err := DefaultModel(context.Background(), nil); err == nil || !strings.Contains(err.Error(), EnvModelDir) {
		t.Fatalf("missing override dir: got %v", err)
	}
}

func TestDefaultModelShared(t *testing.T) {
	isolate(t)
	root := t.TempDir()
	model := filepath.Join(root, "shared", "models", ModelName)
	if err := os.MkdirAll(model, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range Stories260K {
		if err := os.WriteFile(filepath.Join(model, f.Name), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	deep := filepath.Join(root, "repo", "runtime", "cmd")
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(deep)
	got, err := DefaultModel(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// Compare resolved paths: the temp dir may sit behind a symlink.
	want, _ := filepath.EvalSymlinks(model)
	if g, _ := filepath.EvalSymlinks(got); g != want {
		t.Fatalf("DefaultModel = %q, want %q", got, model)
	}

	if _, ok := FindShared(append(Stories260K, File{Name: "absent"}), deep); ok {
		t.Fatal("FindShared accepted a folder missing a file")
	}
}

func TestDefaultCacheDir(t *testing.T) {
	isolate(t)
	dir, err := DefaultCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(base, "acttail-gpu", ModelName); dir != want {
		t.Fatalf("cache dir %q, want %q", dir, want)
	}
}
