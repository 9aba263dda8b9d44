// Package format opens a checkpoint in any supported format: a Hugging
// Face directory, a GGUF file, or a llama2.c checkpoint (file, or a
// directory holding one).
package format

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/acttail/acttail-gpu/runtime/format/gguf"
	"github.com/acttail/acttail-gpu/runtime/format/hf"
	"github.com/acttail/acttail-gpu/runtime/format/llama2c"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Load detects the format of path and loads it.
func Load(path string) (*model.Checkpoint, error) {
	kind, file, err := Detect(path)
	if err != nil {
		return nil, err
	}
	switch kind {
	case "hf":
		return hf.Load(file)
	case "gguf":
		return gguf.Load(file)
	default:
		return llama2c.Load(file)
	}
}

// Detect names the format of path ("hf", "gguf" or "llama2c") and the file
// or directory to hand to that loader.
func Detect(path string) (kind, file string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("open model: %w", err)
	}
	if !st.IsDir() {
		switch {
		case gguf.IsGGUF(path):
			return "gguf", path, nil
		case llama2c.IsCheckpoint(path):
			return "llama2c", path, nil
		}
		return "", "", fmt.Errorf("open model %s: not a GGUF file or a llama2.c checkpoint", path)
	}
	if hf.IsDir(path) {
		return "hf", path, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return "", "", fmt.Errorf("open model: %w", err)
	}
	var found []string
	for _, e := range entries {
		p := filepath.Join(path, e.Name())
		switch {
		case e.IsDir():
		case strings.HasSuffix(e.Name(), ".gguf") && gguf.IsGGUF(p):
			found = append(found, "gguf:"+p)
		case strings.HasSuffix(e.Name(), ".bin") && llama2c.IsCheckpoint(p):
			found = append(found, "llama2c:"+p)
		}
	}
	if len(found) != 1 {
		return "", "", fmt.Errorf("open model %s: want a directory with config.json, or exactly one .gguf or llama2.c .bin checkpoint; found %d", path, len(found))
	}
	kind, file, _ = strings.Cut(found[0], ":")
	return kind, file, nil
}
