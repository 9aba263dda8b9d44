// Package fetch resolves what --model names: a checkpoint on disk, the
// default model, or a known model by name.
//
// The default model is stories260K, built into the binary (the files of
// stories260K/ beside this file, embedded with go:embed), so it runs from
// any directory, under `go run` and `go install`, with no network;
// $ACTTAIL_MODEL_DIR, when set, names another default. The larger
// TinyStories checkpoints of llama2.c (stories15M, stories42M,
// stories110M) are known by name: the first use downloads them into
// os.UserCacheDir()/acttail-gpu/NAME, with a progress bar, and checks their
// sha256 before they are renamed into place.
package fetch

import (
	"context"
	"crypto/sha256"
	_ "embed" // the built-in model
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/format"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

// EnvModelDir names the environment variable that overrides the default
// model: a checkpoint, or a directory holding one.
const EnvModelDir = "ACTTAIL_MODEL_DIR"

// BuiltinName is the name of the built-in default model.
const BuiltinName = "stories260K"

// DefaultMaxSize bounds each downloaded file whose size is not known in
// advance.
const DefaultMaxSize = 16 << 20

var (
	//go:embed stories260K/stories260K.bin
	builtinWeights []byte
	//go:embed stories260K/tok512.bin
	builtinTokenizer []byte
)

// Stories260K lists the files of the built-in model with their sha256, as
// karpathy/tinyllamas publishes them.
var Stories260K = []File{
	{Name: "stories260K.bin", SHA256: "b0a507e7ad0f626624f17112325e66691f9076d622e1d3274d103d00299f2696"},
	{Name: "tok512.bin", SHA256: "037cb335abb25d1fa9e8ecae30ed2a3a8ace9302862ebcdc05d51a6bbb10c312"},
}

// Builtin returns stories260K, read from the bytes built into the binary
// (its tensors are windows into them; nothing is copied or written).
func Builtin() (*model.Checkpoint, error) {
	m, err := llama2c.Parse(builtinWeights, builtinTokenizer, Stories260K[0].Name)
	if err != nil {
		return nil, fmt.Errorf("built-in %s: %w", BuiltinName, err)
	}
	m.Source = BuiltinName + " (built in)"
	return m, nil
}

// Known is a model that --model can name: its checkpoint is Files[0], with
// its tokenizer after it.
type Known struct {
	Name  string
	About string // one line: size, training data, format
	Files []File
}

// tinyllamas is where the TinyStories checkpoints live; tokenizer is the
// Llama-2 vocabulary they use, from llama2.c.
const (
	tinyllamas = "https://huggingface.co/karpathy/tinyllamas/resolve/main/"
	tokenizer  = "https://raw.githubusercontent.com/karpathy/llama2.c/master/tokenizer.bin"
	tokenSHA   = "50a52ef822ee9e83de5ce9d0be0a025a773d019437f58b5ff9dcafb063ece361"
)

// Models lists the models known by name, smallest first; the first is the
// built-in one and has nothing to download.
var Models = []Known{
	{BuiltinName, "260K parameters, TinyStories, built into the binary", nil},
	{"stories15M", "15M parameters, TinyStories, llama2.c checkpoint (58 MiB download)", []File{
		{Name: "stories15M.bin", URL: tinyllamas + "stories15M.bin", Size: 60816028, SHA256: "cd590644d963867a2b6e5a1107f51fad663c41d79c149fbecbbb1f95fa81f49a"},
		{Name: "tokenizer.bin", URL: tokenizer, SHA256: tokenSHA}}},
	{"stories42M", "42M parameters, TinyStories, llama2.c checkpoint (159 MiB download)", []File{
		{Name: "stories42M.bin", URL: tinyllamas + "stories42M.bin", Size: 167020572, SHA256: "9f65a1000e17d0bc167dd6332e0ce5119a0222a3d920cead5bce413bfab2ee7b"},
		{Name: "tokenizer.bin", URL: tokenizer, SHA256: tokenSHA}}},
	{"stories110M", "110M parameters, TinyStories, llama2.c checkpoint (418 MiB download)", []File{
		{Name: "stories110M.bin", URL: tinyllamas + "stories110M.bin", Size: 438381596, SHA256: "515267168726a1ed1317a64a408492e6af3b67c1f71c5bd98c01d9d721803a24"},
		{Name: "tokenizer.bin", URL: tokenizer, SHA256: tokenSHA}}},
}

// Lookup returns the known model called name (case does not matter).
func Lookup(name string) (Known, bool) {
	for _, k := range Models {
		if strings.EqualFold(k.Name, name) {
			return k, true
		}
	}
	return Known{}, false
}

// Names lists the known models' names.
func Names() []string {
	var out []string
	for _, k := range Models {
		out = append(out, k.Name)
	}
	return out
}

// Open loads the model that name, a --model value, stands for:
//   - "": the default, the checkpoint $ACTTAIL_MODEL_DIR names if set, else
//     the built-in stories260K;
//   - a file or directory that exists: that checkpoint (format.Load);
//   - a known model's name: the built-in one, or the cached download,
//     fetched first if it is not in the cache (log gets a line and a
//     progress bar; it may be nil).
func Open(ctx context.Context, name string, log io.Writer) (*model.Checkpoint, error) {
	if name == "" {
		if dir := os.Getenv(EnvModelDir); dir != "" {
			if _, err := os.Stat(dir); err != nil {
				return nil, fmt.Errorf("$%s: %w", EnvModelDir, err)
			}
			return format.Load(dir)
		}
		return Builtin()
	}
	if _, err := os.Stat(name); !errors.Is(err, fs.ErrNotExist) {
		return format.Load(name)
	}
	k, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("open model %s: no such file or directory, and not a known model name (%s)", name, strings.Join(Names(), ", "))
	}
	if k.Files == nil {
		return Builtin()
	}
	dir, err := CacheDir(k.Name)
	if err != nil {
		return nil, err
	}
	f := &Fetcher{Dir: dir, Files: k.Files, Log: log}
	if _, err := f.Fetch(ctx); err != nil {
		var u *UnreachableError
		if errors.As(err, &u) {
			return nil, fmt.Errorf("model %s: %w; download %s yourself and pass --model PATH, or leave --model out for the built-in %s",
				k.Name, u, u.URL, BuiltinName)
		}
		return nil, fmt.Errorf("model %s: %w", k.Name, err)
	}
	return format.Load(filepath.Join(dir, k.Files[0].Name))
}

// CacheDir is os.UserCacheDir()/acttail-gpu/name, where a known model is
// downloaded.
func CacheDir(name string) (string, error) {
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("model cache: %w", err)
	}
	return filepath.Join(c, "acttail-gpu", name), nil
}

// File is one file of a model with its expected sha256 (lowercase hex).
type File struct {
	Name   string
	SHA256 string
	// URL is where the file comes from; empty means the Fetcher's BaseURL
	// joined with Name.
	URL string
	// Size is the file's length in bytes, 0 if not known in advance (then
	// the Fetcher's MaxSize bounds it).
	Size int64
}

// Fetcher downloads a set of files into a directory, skipping those already
// there with the right hash.
type Fetcher struct {
	// BaseURL is joined with the name of each file that has no URL.
	BaseURL string
	// Dir receives the files; it is created if missing.
	Dir string
	// Files lists what to fetch.
	Files []File
	// Client makes the requests; nil means http.DefaultClient.
	Client *http.Client
	// MaxSize refuses any file of unknown Size larger than this; 0 means
	// DefaultMaxSize.
	MaxSize int64
	// Log receives one line saying where the files come from and a
	// progress bar for each (plain lines when it is not a terminal); nil
	// discards both.
	Log io.Writer
}

// UnreachableError is a download that found no server: no network, a name
// that does not resolve, a connection refused or timed out.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	host := e.URL
	if u, err := url.Parse(e.URL); err == nil {
		host = u.Host
	}
	var dns *net.DNSError
	var why string
	switch {
	case errors.As(e.Err, &dns):
		why = "its name does not resolve: no network?"
	case errors.Is(e.Err, os.ErrDeadlineExceeded):
		why = "timed out"
	default:
		why = "no connection: no network?"
		var op *net.OpError
		if errors.As(e.Err, &op) && op.Err != nil {
			why = op.Err.Error() + ": no network?"
		}
	}
	return fmt.Sprintf("cannot reach %s (%s)", host, why)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Fetch makes sure every file is in f.Dir with its expected hash,
// downloading those that are missing or differ, and returns f.Dir. A file
// is streamed to a temporary file in f.Dir and renamed into place only
// after its hash checks, so an interrupted or corrupt download leaves
// nothing behind (f.Dir is made once a server answers).
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
	u := file.URL
	if u == "" {
		if u, err = url.JoinPath(f.BaseURL, file.Name); err != nil {
			return fmt.Errorf("fetch %s: bad base URL: %w", file.Name, err)
		}
	}
	limit := f.MaxSize
	if limit <= 0 {
		limit = DefaultMaxSize
	}
	if file.Size > 0 {
		limit = file.Size
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
		if ctx.Err() != nil {
			return fmt.Errorf("fetch %s: %w", u, ctx.Err())
		}
		return &UnreachableError{URL: u, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetch %s: HTTP status %s", u, resp.Status)
	}
	if resp.ContentLength > limit {
		return fmt.Errorf("fetch %s: %d bytes exceeds the %d-byte limit", u, resp.ContentLength, limit)
	}
	fmt.Fprintf(f.log(), "downloading %s into %s\n", u, f.Dir)
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return fmt.Errorf("fetch: %w", err)
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
	total := resp.ContentLength
	if total < 0 {
		total = file.Size
	}
	bar := progress.NewBytes(f.log(), total, file.Name)
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
