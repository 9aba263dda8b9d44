// Package fetch finds the default model, stories260K, and downloads it into
// the user cache when it is nowhere on the machine.
//
// DefaultModel looks, in order:
//  1. in the directory named by $ACTTAIL_MODEL_DIR, if set;
//  2. in A/shared/models/stories260K for every ancestor A of the working
//     directory and of the executable's directory (the checkout layout
//     keeps shared/ beside the repository);
//  3. in the user cache, os.UserCacheDir()/acttail-gpu/stories260K, when
//     both files are there with the right sha256;
//  4. otherwise it downloads both files from Hugging Face into that cache,
//     checking their sha256 before they are renamed into place.
package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"

	"github.com/acttail/acttail-gpu/runtime/progress"
)

// EnvModelDir names the environment variable that overrides the default
// model directory.
const EnvModelDir = "ACTTAIL_MODEL_DIR"

// DefaultBaseURL is the public home of stories260K.
const DefaultBaseURL = "https://huggingface.co/karpathy/tinyllamas/resolve/main/stories260K/"

// DefaultMaxSize bounds each downloaded file; the stories260K files are
// about 1 MiB and 6 KiB.
const DefaultMaxSize = 16 << 20

// ModelName is the directory name of the default model, under
// shared/models and under the cache.
const ModelName = "stories260K"

// File is one file of a model with its expected sha256 (lowercase hex).
type File struct {
	Name   string
	SHA256 string
}

// Stories260K lists the files of the default model.
var Stories260K = []File{
	{Name: "stories260K.bin", SHA256: "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"},
	{Name: "tok512.bin", SHA256: "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"},
}

// Fetcher downloads a set of files into a directory, skipping those already
// there with the right hash.
type Fetcher struct {
	// BaseURL is joined with each file name to form its URL.
	BaseURL string
	// Dir receives the files; it is created if missing.
	Dir string
	// Files lists what to fetch.
	Files []File
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// MaxSize refuses any file larger than this; 0 means DefaultMaxSize.
	MaxSize int64
	// Log receives one line saying where the files come from and, on a
	// terminal, a progress bar; nil discards both.
	Log io.Writer
}

// DefaultCacheDir is os.UserCacheDir()/acttail-gpu/stories260K.
func DefaultCacheDir() (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("default model cache: %w", err)
	}
	return filepath.Join(c, "acttail-gpu", ModelName), nil
}

// NewDefault returns the Fetcher DefaultModel uses: stories260K from
// DefaultBaseURL into DefaultCacheDir.
func NewDefault(log io.Writer) (*Fetcher, error) {
	dir, err := DefaultCacheDir()
	if err != nil {
		return nil, err
	}
	return &Fetcher{BaseURL: DefaultBaseURL, Dir: dir, Files: Stories260K, Log: log}, nil
}

// DefaultModel returns the directory holding stories260K.bin and
// tok512.bin, downloading them into the user cache if no copy is found (see
// the package comment for the order). log receives a line when a download
// happens, and a progress bar if it is a terminal; it may be nil.
func DefaultModel(ctx context.Context, log io.Writer) (string, error) {
	if dir := os.Getenv(EnvModelDir); dir != "" {
		return checkEnvDir(dir)
	}
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	if dir, ok := FindShared(Stories260K, starts...); ok {
		return dir, nil
	}
	f, err := NewDefault(log)
	if err != nil {
		return "", err
	}
	return f.Fetch(ctx)
}

// checkEnvDir accepts the override only if it is a directory, so that a typo
// fails here rather than as a missing file later.
func checkEnvDir(dir string) (string, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("$%s: %w", EnvModelDir, err)
	}
	if !st.IsDir() {
		return "", fmt.Errorf("$%s: %s is not a directory", EnvModelDir, dir)
	}
	return dir, nil
}

// FindShared looks for A/shared/models/stories260K holding every one of
// files, for each ancestor A of each start directory (the start included),
// and returns the first found. Files are checked for presence only: the
// shared folder is trusted.
func FindShared(files []File, starts ...string) (string, bool) {
	for _, s := range starts {
		a, err := filepath.Abs(s)
		if err != nil {
			continue
		}
		for {
			dir := filepath.Join(a, "shared", "models", ModelName)
			if hasAll(dir, files) {
				return dir, true
			}
			parent := filepath.Dir(a)
			if parent == a {
				break
			}
			a = parent
		}
	}
	return "", false
}

func hasAll(dir string, files []File) bool {
	for _, f := range files {
		st, err := os.Stat(filepath.Join(dir, f.Name))
		if err != nil || !st.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// Fetch makes sure every file is in f.Dir with its expected hash,
// downloading those that are missing or differ, and returns f.Dir. A file
// is streamed to a temporary file in f.Dir and renamed into place only
// after its hash checks, so an interrupted or corrupt download leaves
// nothing behind.
func (f *Fetcher) Fetch(ctx context.Context) (string, error) {
	var todo []File
	for _, file := range f.Files {
		ok, err := hasHash(filepath.Join(f.Dir, file.Name), file.SHA256)
		if err != nil {
			return "", err
		}
		if !ok {
			todo = append(todo, file)
		}
	}
	if len(todo) == 0 {
		return f.Dir, nil
	}
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return "", fmt.Errorf("fetch: %w", err)
	}
	fmt.Fprintf(f.log(), "fetch: downloading %d file(s) from %s into %s\n", len(todo), f.BaseURL, f.Dir)
	for _, file := range todo {
		if err := f.download(ctx, file); err != nil {
			return "", err
		}
	}
	return f.Dir, nil
}

func (f *Fetcher) log() io.Writer {
	if f.Log == nil {
		return io.Discard
	}
	return f.Log
}

// hasHash reports whether path exists with the given sha256; a missing file
// is not an error.
func hasHash(path, want string) (bool, error) {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("fetch: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.Copy(h, fh); err != nil {
		return false, fmt.Errorf("fetch: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)) == want, nil
}

// download fetches one file into f.Dir through a temporary file.
func (f *Fetcher) download(ctx context.Context, file File) (err error) {
	u, err := url.JoinPath(f.BaseURL, file.Name)
	if err != nil {
		return fmt.Errorf("fetch %s: bad base URL: %w", file.Name, err)
	}
	limit := f.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	client := f.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: HTTP status %s", u, resp.Status)
	}
	if resp.ContentLength > limit {
		return fmt.Errorf("fetch %s: %d bytes exceeds the %d-byte limit", u, resp.ContentLength, limit)
	}

	tmp, err := os.CreateTemp(f.Dir, "."+file.Name+".*.part")
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bar := progress.NewBytes(f.log(), resp.ContentLength, file.Name)
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h, bar), io.LimitReader(resp.Body, limit+1))
	bar.Finish()
	if err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	if n > limit {
		return fmt.Errorf("fetch %s: more than the %d-byte limit", u, limit)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return fmt.Errorf("fetch %s: got %d of %d bytes", u, n, resp.ContentLength)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != file.SHA256 {
		return fmt.Errorf("fetch %s: sha256 mismatch for %s: expected %s, got %s", u, file.Name, file.SHA256, got)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(f.Dir, file.Name)); err != nil {
		return fmt.Errorf("fetch %s: %w", u, err)
	}
	return nil
}
