//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package hf

import (
	"io"
	"os"
)

// mmapFile reads the file into memory where mmap is not available.
func mmapFile(f *os.File, size int) ([]byte, error) {
	b := make([]byte, size)
	_, err := io.ReadFull(io.NewSectionReader(f, 0, int64(size)), b)
	return b, err
}

func unmap([]byte) error { return nil }

// mapped: mmapFile's bytes are on the heap (model.Tensor.Mapped).
const mapped = false
