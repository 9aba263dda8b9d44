//go:build !unix

package gguf

import "os"

// mapping holds the whole file; without mmap it is read into memory.
type mapping struct{ data []byte }

// mapped: the data are not a file mapping (model.Tensor.Mapped).
const mapped = false

func mapFile(path string) (*mapping, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return &mapping{data: data}, nil
}

// Close drops the file contents.
func (m *mapping) Close() error {
	m.data = nil
	return nil
}
