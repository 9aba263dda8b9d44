package format

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/acttail/acttail-gpu/internal/testfiles"
	"github.com/acttail/acttail-gpu/runtime/format/gguf"
	"github.com/acttail/acttail-gpu/runtime/format/hf"
	"github.com/acttail/acttail-gpu/runtime/model"
)

func TestDetectAndLoad(t *testing.T) {
	dir := testfiles.Stories260K(t)
	src := filepath.Join(dir, "stories260K.bin")
	m, err := Load(dir) // a directory holding one llama2.c checkpoint
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tmp := t.TempDir()
	hfDir, ggufDir := filepath.Join(tmp, "hf"), filepath.Join(tmp, "g")
	if err := hf.Write(m, hfDir, model.F32); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(ggufDir, 0o755)
	if err := gguf.Write(m, filepath.Join(ggufDir, "m.gguf"), model.F16); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, kind string }{
		{src, "llama2c"}, {dir, "llama2c"}, {hfDir, "hf"}, {ggufDir, "gguf"}, {filepath.Join(ggufDir, "m.gguf"), "gguf"},
	} {
		kind, _, err := Detect(tc.path)
		if err != nil || kind != tc.kind {
			t.Errorf("Detect(%s) = %q, %v; want %q", tc.path, kind, err, tc.kind)
		}
		m2, err := Load(tc.path)
		if err != nil {
			t.Errorf("Load(%s): %v", tc.path, err)
			continue
		}
		if m2.Config.Dim != 64 || m2.Vocab == nil {
			t.Errorf("%s: %+v", tc.path, m2.Config)
		}
		m2.Close()
	}
	// Not models: a text file, an empty directory, a directory with two
	// checkpoints, a missing path.
	txt := filepath.Join(tmp, "x.txt")
	os.WriteFile(txt, []byte("hello"), 0o644)
	empty := filepath.Join(tmp, "empty")
	os.Mkdir(empty, 0o755)
	two := filepath.Join(tmp, "two")
	os.Mkdir(two, 0o755)
	raw, _ := os.ReadFile(src)
	os.WriteFile(filepath.Join(two, "a.bin"), raw, 0o644)
	os.WriteFile(filepath.Join(two, "b.bin"), raw, 0o644)
	for _, p := range []string{txt, empty, two, filepath.Join(tmp, "missing")} {
		if _, err := Load(p); err == nil {
			t.Errorf("Load(%s) succeeded", p)
		}
	}
}
