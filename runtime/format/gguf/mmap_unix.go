//go:build unix

package gguf

import (
	"fmt"
	"os"
	"syscall"
)

// mapping is a read-only memory mapping of a whole file.
type mapping struct{ data []byte }

// mapped: the data are a file mapping (model.Tensor.Mapped).
const mapped = true

// mapFile maps the file at path read-only. The mapping outlives the file
// descriptor, which is closed before returning.
func mapFile(path string) (*mapping, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size == 0 {
		return nil, fmt.Errorf("empty file")
	}
	if int64(int(size)) != size {
		return nil, fmt.Errorf("file of %d bytes is too large to map", size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	return &mapping{data: data}, nil
}

// Close unmaps the file; later calls do nothing.
func (m *mapping) Close() error {
	if m.data == nil {
		return nil
	}
	err := syscall.Munmap(m.data)
	m.data = nil
	return err
}
