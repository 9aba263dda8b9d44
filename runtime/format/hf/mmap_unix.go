//go:build linux || darwin || freebsd || netbsd || openbsd

package hf

import (
	"os"
	"syscall"
)

// mmapFile maps the first size bytes of f read-only. Pages are shared with
// the page cache, so a model costs no heap and loads lazily.
func mmapFile(f *os.File, size int) ([]byte, error) {
	return syscall.Mmap(int(f.Fd()), 0, size, syscall.PROT_READ, syscall.MAP_SHARED)
}

func unmap(b []byte) error { return syscall.Munmap(b) }

// mapped: mmapFile's bytes are a file mapping (model.Tensor.Mapped).
const mapped = true
