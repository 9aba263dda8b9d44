//go:build unix

package model

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestRelease drops the pages of a window of a mapped file and reads it
// back unchanged; a heap tensor marked by mistake would lose its bytes, so
// an unmarked one must be left alone.
func TestRelease(t *testing.T) {
	want := make([]byte, 5*os.Getpagesize()+123)
	for i := range want {
		want[i] = byte(i*7 + i/4096)
	}
	path := filepath.Join(t.TempDir(), "w.bin")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data, err := syscall.Mmap(int(f.Fd()), 0, len(want), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Munmap(data)
	mapped := &Tensor{Data: data[100 : len(data)-50], Mapped: true}
	mapped.Release()
	if !bytes.Equal(mapped.Data, want[100:len(want)-50]) {
		t.Fatal("a released mapped tensor reads back different bytes")
	}
	heap := append([]byte(nil), want...)
	(&Tensor{Data: heap}).Release()
	if !bytes.Equal(heap, want) {
		t.Fatal("Release changed a tensor that is not Mapped")
	}
}
