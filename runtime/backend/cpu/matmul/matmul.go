// Package matmul multiplies float32 activations by weight matrices stored
// as F32, F16, BF16 or Q8_0 bytes, on all CPU cores.
//
// Conventions: a weight W is row-major with Rows = outputs and Cols =
// inputs (the GGUF/llama2.c layout), so every output is the dot product of
// one contiguous weight row with one activation row. Activations x are
// n×Cols and results dst are n×Rows, both row-major float32 and owned by the
// caller. Weights are converted to float32 on the fly; activations are never
// quantised and all sums are float32.
//
// n == 1 (decode) is limited by memory bandwidth: each weight byte is read
// once. n > 1 (prefill) reuses each decoded block of weights across all n
// activation rows, so it is limited by arithmetic instead.
package matmul

import (
	"fmt"

	"github.com/acttail/acttail-gpu/runtime/backend/cpu/pool"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Matrix is a row-major (Rows = out, Cols = in) weight of type DType. Data
// holds DType.Bytes(Rows*Cols) bytes; it may be a read-only memory-mapped
// window at any alignment (the kernels use unaligned loads) and is never
// written or copied. Make one with NewMatrix.
type Matrix struct {
	DType      model.DType
	Rows, Cols int
	Data       []byte

	rowBytes int // bytes of one row
}

// NewMatrix wraps data as a rows×cols weight of type d. Q8_0 needs cols to
// be a multiple of 32 so that every row is whole blocks.
func NewMatrix(d model.DType, rows, cols int, data []byte) (*Matrix, error) {
	if d.Bytes(model.Q8Block) < 0 {
		return nil, fmt.Errorf("matmul: unsupported dtype %s", d)
	}
	if rows <= 0 || cols <= 0 {
		return nil, fmt.Errorf("matmul: %s matrix %d×%d: sizes must be positive", d, rows, cols)
	}
	rowBytes := d.Bytes(cols)
	if rowBytes < 0 {
		return nil, fmt.Errorf("matmul: %s matrix %d×%d: %d columns is not whole blocks", d, rows, cols, cols)
	}
	if rowBytes > 0 && rows > maxInt/rowBytes {
		return nil, fmt.Errorf("matmul: %s matrix %d×%d is too large", d, rows, cols)
	}
	if len(data) != rows*rowBytes {
		return nil, fmt.Errorf("matmul: %s matrix %d×%d needs %d bytes, got %d", d, rows, cols, rows*rowBytes, len(data))
	}
	return &Matrix{DType: d, Rows: rows, Cols: cols, Data: data, rowBytes: rowBytes}, nil
}

const maxInt = int(^uint(0) >> 1)

// Threads is the number of threads MatMul uses: pool.Threads, shared by
// all CPU kernels.
func Threads() int { return pool.Threads() }

// SetThreads sets the number of threads MatMul (and every other user of
// package pool) uses; n < 1 means 1.
func SetThreads(n int) { pool.SetThreads(n) }

// minParallel is the number of multiply-adds below which a product runs on
// the calling goroutine alone: waking workers costs more than it saves.
const minParallel = 64 << 10

// MatMul computes dst[r*m.Rows+o] = Σ_i W[o,i]·x[r*m.Cols+i] for r < n,
// using Threads() threads. n == 1 is the decode matrix-vector product.
func MatMul(dst []float32, m *Matrix, x []float32, n int) {
	m.check(dst, x, n, 0, m.Rows)
	if n == 0 {
		return
	}
	chunk := chunkRows(m.Rows, m.Cols, n, Threads())
	if chunk >= m.Rows {
		mulRows(dst, m, x, n, 0, m.Rows)
		return
	}
	pool.Run((m.Rows+chunk-1)/chunk, pool.Func(func(c int) {
		o0 := c * chunk
		mulRows(dst, m, x, n, o0, min(o0+chunk, m.Rows))
	}))
}

// MatMulRange is MatMul restricted to output rows [o0, o1), on the calling
// goroutine only, for callers that split the work themselves. dst keeps the
// n×m.Rows layout; other columns are left alone.
func MatMulRange(dst []float32, m *Matrix, x []float32, n, o0, o1 int) {
	m.check(dst, x, n, o0, o1)
	if n > 0 && o0 < o1 {
		mulRows(dst, m, x, n, o0, o1)
	}
}

// chunkRows is how many output rows one parallel task takes: a multiple of
// 24 (whole row blocks of the n > 1 kernel), about four tasks a thread so
// that a thread slowed by other work is covered by the rest. It returns
// rows or more when the product is too small to split.
func chunkRows(rows, cols, n, threads int) int {
	if threads <= 1 || rows*cols*n < minParallel || rows < 48 {
		return rows
	}
	c := (rows + 4*threads - 1) / (4 * threads)
	return (c + 23) / 24 * 24
}

// check panics on shapes that are a programming error.
func (m *Matrix) check(dst, x []float32, n, o0, o1 int) {
	switch {
	case m.rowBytes == 0:
		panic("matmul: Matrix not made by NewMatrix")
	case n < 0 || o0 < 0 || o1 > m.Rows || o0 > o1:
		panic(fmt.Sprintf("matmul: n=%d rows [%d,%d) of a %d×%d matrix", n, o0, o1, m.Rows, m.Cols))
	case len(x) < n*m.Cols:
		panic(fmt.Sprintf("matmul: x has %d values, want %d×%d", len(x), n, m.Cols))
	case len(dst) < n*m.Rows:
		panic(fmt.Sprintf("matmul: dst has %d values, want %d×%d", len(dst), n, m.Rows))
	}
}
