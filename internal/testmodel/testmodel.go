// Package testmodel opens the model that tests run on: stories260K, the
// checkpoint built into the binary (runtime/fetch), so that a test needs
// no file beside the checkout.
package testmodel

import (
	"testing"

	"github.com/acttail/acttail-gpu/runtime/fetch"
	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/tokenizer"
)

// Stories260K is the built-in stories260K checkpoint, closed when t ends.
func Stories260K(t testing.TB) *model.Checkpoint {
	t.Helper()
	m, err := fetch.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// Stories260KTokenizer is Stories260K with the tokenizer of its vocabulary.
func Stories260KTokenizer(t testing.TB) (*model.Checkpoint, *tokenizer.Tokenizer) {
	t.Helper()
	m := Stories260K(t)
	tok, err := tokenizer.New(m.Vocab)
	if err != nil {
		t.Fatal(err)
	}
	return m, tok
}
