package hf

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"

	"github.com/acttail/acttail-gpu/runtime/model"
	"github.com/acttail/acttail-gpu/runtime/progress"
)

// maxHeader bounds the safetensors JSON header. The reference implementation
// uses the same 100 MB limit; a 128k-vocabulary model needs well under 1 MiB.
const maxHeader = 100 << 20

// metadataKey is the reserved header entry holding string metadata.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a safetensors file. Begin and End are
// byte offsets relative to the first byte after the header (dataStart), as
// in the file.
type TensorInfo struct {
	DType      model.DType
	Shape      []int
	Begin, End int64
}

// stDTypes maps the safetensors dtype names this package reads to ours.
var stDTypes = map[string]model.DType{"F32": model.F32, "F16": model.F16, "BF16": model.BF16}

// stName is the safetensors spelling of d.
func stName(d model.DType) (string, error) {
	for n, t := range stDTypes {
		if t == d {
			return n, nil
		}
	}
	return "", fmt.Errorf("dtype %s cannot be stored in safetensors (want F32, F16 or BF16)", d)
}

// ReadHeader parses and validates the header of a safetensors file of the
// given size read through r; name labels errors. It returns the tensors by
// name, the "__metadata__" strings and the file offset where tensor data
// starts. Every tensor is checked to lie within the file, to hold exactly
// the bytes its dtype and shape need, and not to overlap any other.
func ReadHeader(r io.ReaderAt, size int64, name string) (tensors map[string]TensorInfo, metadata map[string]string, dataStart int64, err error) {
	fail := func(format string, args ...any) (map[string]TensorInfo, map[string]string, int64, error) {
		return nil, nil, 0, fmt.Errorf("safetensors %s: %s", name, fmt.Sprintf(format, args...))
	}
	if size < 8 {
		return fail("file of %d bytes is too short for a header", size)
	}
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return fail("read header length: %v", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > maxHeader {
		return fail("header length %d exceeds the %d byte limit", n, maxHeader)
	}
	if n > uint64(size-8) {
		return fail("header length %d exceeds the %d bytes after the length field", n, size-8)
	}
	if n < 2 {
		return fail("header length %d is too short for a JSON object", n)
	}
	hdr := make([]byte, n)
	if _, err := r.ReadAt(hdr, 8); err != nil {
		return fail("read header: %v", err)
	}
	if hdr[0] != '{' {
		return fail("header does not start with a JSON object")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		return fail("header JSON: %v", err)
	}
	dataStart = 8 + int64(n)
	dataLen := size - dataStart

	if m, ok := raw[metadataKey]; ok {
		if err := json.Unmarshal(m, &metadata); err != nil {
			return fail("%s must map strings to strings: %v", metadataKey, err)
		}
		delete(raw, metadataKey)
	}
	tensors = make(map[string]TensorInfo, len(raw))
	for tname, msg := range raw {
		info, err := parseTensorInfo(msg, dataLen)
		if err != nil {
			return fail("tensor %q: %v", tname, err)
		}
		tensors[tname] = info
	}
	if err := checkOverlap(tensors); err != nil {
		return fail("%v", err)
	}
	return tensors, metadata, dataStart, nil
}

// parseTensorInfo decodes and validates one header entry against a data
// section of dataLen bytes.
func parseTensorInfo(msg json.RawMessage, dataLen int64) (TensorInfo, error) {
	var e struct {
		DType   *string  `json:"dtype"`
		Shape   []int64  `json:"shape"`
		Offsets []uint64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(msg, &e); err != nil {
		return TensorInfo{}, fmt.Errorf("bad entry: %v", err)
	}
	if e.DType == nil {
		return TensorInfo{}, errors.New("missing dtype")
	}
	dt, ok := stDTypes[*e.DType]
	if !ok {
		return TensorInfo{}, fmt.Errorf("unsupported dtype %q (want F32, F16 or BF16)", *e.DType)
	}
	if e.Shape == nil {
		return TensorInfo{}, errors.New("missing shape")
	}
	if len(e.Offsets) != 2 {
		return TensorInfo{}, fmt.Errorf("data_offsets has %d values, want 2", len(e.Offsets))
	}
	begin, end := e.Offsets[0], e.Offsets[1]
	if begin > end || end > uint64(dataLen) {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d] outside the %d data bytes", begin, end, dataLen)
	}
	// Elements cannot outnumber the data bytes, which bounds the product
	// well below overflow.
	elems, err := shapeElems(e.Shape, dataLen)
	if err != nil {
		return TensorInfo{}, err
	}
	if want := uint64(dt.Bytes(1)) * uint64(elems); end-begin != want {
		return TensorInfo{}, fmt.Errorf("%s %v needs %d bytes, data_offsets [%d, %d] hold %d", dt, e.Shape, want, begin, end, end-begin)
	}
	shape := make([]int, len(e.Shape))
	for i, d := range e.Shape {
		shape[i] = int(d)
	}
	return TensorInfo{DType: dt, Shape: shape, Begin: int64(begin), End: int64(end)}, nil
}

// shapeElems multiplies out shape, failing on negative dimensions or a
// product above limit.
func shapeElems(shape []int64, limit int64) (int64, error) {
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		if d == 0 {
			return 0, nil
		}
	}
	n := int64(1)
	for _, d := range shape {
		if n > limit/d {
			return 0, fmt.Errorf("shape %v has more elements than the file has bytes", shape)
		}
		n *= d
	}
	return n, nil
}

// checkOverlap reports two tensors sharing bytes.
func checkOverlap(tensors map[string]TensorInfo) error {
	type span struct {
		name       string
		begin, end int64
	}
	spans := make([]span, 0, len(tensors))
	for n, t := range tensors {
		if t.End > t.Begin {
			spans = append(spans, span{n, t.Begin, t.End})
		}
	}
	sort.Slice(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].name < spans[j].name
	})
	for i := 1; i < len(spans); i++ {
		if spans[i].begin < spans[i-1].end {
			return fmt.Errorf("tensors %q and %q overlap", spans[i-1].name, spans[i].name)
		}
	}
	return nil
}

// mappedFile is a read-only memory mapping of a whole file.
type mappedFile struct {
	path string
	data []byte
}

// Close unmaps the file; it is safe to call twice.
func (f *mappedFile) Close() error {
	if f.data == nil {
		return nil
	}
	err := unmap(f.data)
	f.data = nil
	if err != nil {
		return fmt.Errorf("unmap %s: %w", f.path, err)
	}
	return nil
}

// openSafetensors maps path and returns its tensors, whose Data are
// windows into the mapping. The caller owns the returned mapping.
func openSafetensors(path string) (*mappedFile, map[string]*model.Tensor, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: %w", path, err)
	}
	size := st.Size()
	if !st.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("load %s: not a regular file", path)
	}
	if size < 8 {
		return nil, nil, fmt.Errorf("load %s: file of %d bytes is too short for a safetensors header", path, size)
	}
	if int64(int(size)) != size {
		return nil, nil, fmt.Errorf("load %s: file of %d bytes is too large to map", path, size)
	}
	// Parse the header through the file first, so a bad file is rejected
	// before anything is mapped.
	infos, _, dataStart, err := ReadHeader(f, size, path)
	if err != nil {
		return nil, nil, err
	}
	data, err := mmapFile(f, int(size))
	if err != nil {
		return nil, nil, fmt.Errorf("load %s: map: %w", path, err)
	}
	mf := &mappedFile{path: path, data: data}
	tensors := make(map[string]*model.Tensor, len(infos))
	for name, info := range infos {
		b, e := dataStart+info.Begin, dataStart+info.End
		tensors[name] = &model.Tensor{Name: name, DType: info.DType, Shape: info.Shape, Data: data[b:e:e], Mapped: mapped}
	}
	return mf, tensors, nil
}

// tensorWriter streams one tensor's bytes in the file's dtype.
type tensorWriter struct {
	name  string
	dtype model.DType
	shape []int
	size  int64
	write func(w io.Writer) error
}

// writeSafetensors writes tensors to path through a temporary file in the
// same directory, renamed into place once complete.
func writeSafetensors(path string, tensors []tensorWriter, metadata map[string]string, bar *progress.Bar) error {
	hdr := make(map[string]any, len(tensors)+1)
	if metadata != nil {
		hdr[metadataKey] = metadata
	}
	var off int64
	for _, t := range tensors {
		dt, err := stName(t.dtype)
		if err != nil {
			return fmt.Errorf("write %s: tensor %q: %w", path, t.name, err)
		}
		hdr[t.name] = map[string]any{"dtype": dt, "shape": t.shape, "data_offsets": [2]int64{off, off + t.size}}
		off += t.size
	}
	bar.SetTotal(off)
	js, err := marshalJSON(hdr, false)
	if err != nil {
		return fmt.Errorf("write %s: header: %w", path, err)
	}
	// Pad with spaces so tensor data starts 8-byte aligned.
	for len(js)%8 != 0 {
		js = append(js, ' ')
	}
	return writeAtomic(path, func(w io.Writer) error {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(js)))
		if _, err := w.Write(n[:]); err != nil {
			return err
		}
		if _, err := w.Write(js); err != nil {
			return err
		}
		for _, t := range tensors {
			cw := &countWriter{w: w}
			if err := t.write(cw); err != nil {
				return fmt.Errorf("tensor %q: %w", t.name, err)
			}
			if cw.n != t.size {
				return fmt.Errorf("tensor %q: wrote %d bytes, header says %d", t.name, cw.n, t.size)
			}
			bar.Add(t.size)
		}
		return nil
	})
}

// countWriter counts the bytes written through it.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// writeAtomic writes path through a buffered temporary file in the same
// directory and renames it into place, so a reader never sees half a file
// and a file still mapped by a loaded model is not overwritten in place.
func writeAtomic(path string, fill func(w io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
			err = fmt.Errorf("write %s: %w", path, err)
		}
	}()
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if err := fill(bw); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// marshalJSON is json.Marshal without escaping <, > and &, which
// tokenizer files are full of, optionally indented.
func marshalJSON(v any, indent bool) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if indent {
		enc.SetIndent("", "  ")
	}
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// writeJSON writes v as indented JSON to path.
func writeJSON(path string, v any) error {
	js, err := marshalJSON(v, true)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	js = append(js, '\n')
	return writeAtomic(path, func(w io.Writer) error {
		_, err := w.Write(js)
		return err
	})
}
