package testfiles

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// CorpusEnv names the environment variable that makes WriteCorpus write.
const CorpusEnv = "ACTTAIL_WRITE_CORPUS"

// Seed is one entry of a fuzz target's seed corpus: the target's arguments
// after *testing.T, in order.
type Seed struct {
	Name string
	Args []any
}

// WriteCorpus writes seeds as testdata/fuzz/<target>/<name>, the files of
// Go's fuzzing corpus format that `go test` reads as the target's seed
// corpus, when $ACTTAIL_WRITE_CORPUS is set; otherwise it skips the test.
// The committed seeds are what the calling test builds, so they can be
// remade after a format change:
//
//	ACTTAIL_WRITE_CORPUS=1 go test -run Corpus ./runtime/...
//
// Arguments may be []byte, string, bool, int, int64 or uint64.
func WriteCorpus(t *testing.T, target string, seeds []Seed) {
	t.Helper()
	if os.Getenv(CorpusEnv) == "" {
		t.Skipf("set %s=1 to write testdata/fuzz/%s", CorpusEnv, target)
	}
	dir := filepath.Join("testdata", "fuzz", target)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range seeds {
		var b strings.Builder
		b.WriteString("go test fuzz v1\n")
		for _, a := range s.Args {
			switch v := a.(type) {
			case []byte:
				fmt.Fprintf(&b, "[]byte(%q)\n", v)
			case string:
				fmt.Fprintf(&b, "string(%q)\n", v)
			case bool, int, int64, uint64:
				fmt.Fprintf(&b, "%T(%v)\n", v, v)
			default:
				t.Fatalf("seed %s: argument of type %T", s.Name, a)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, s.Name), []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("wrote %d seeds to %s", len(seeds), dir)
}
