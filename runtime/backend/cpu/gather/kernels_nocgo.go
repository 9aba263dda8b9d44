//go:build !cgo

package gather

import "github.com/acttail/acttail-gpu/runtime/model"

// Without cgo the products run in plain Go: each kept row's columns are
// decoded into float32, 256 at a time, and added, scaled, to the sums.

// gatherCols computes dst[o0:o1] of Gather over the kept rows idx[r0:r1]
// (rows r0 … r1−1 when all is set) on the calling goroutine. o0 and o1
// are whole Q8_0 blocks.
func gatherCols(dst []float32, m *Matrix, x []float32, idx []int32, all bool, r0, r1, o0, o1 int) {
	var buf [256]float32
	for b0 := o0; b0 < o1; b0 += len(buf) {
		b1 := min(b0+len(buf), o1)
		y, row := dst[b0:b1], buf[:b1-b0]
		lo, hi := m.DType.Bytes(b0), m.DType.Bytes(b1)
		clear(y)
		for k := r0; k < r1; k++ {
			j := k
			if !all {
				j = int(idx[k])
			}
			if err := model.Decode(row, m.t[j*m.rowBytes+lo:j*m.rowBytes+hi], m.DType); err != nil {
				panic(err) // NewMatrix checked the sizes
			}
			a := x[j]
			for i, w := range row {
				y[i] += a * w
			}
		}
	}
}

// denseCols computes columns [o0, o1) of Dense for n rows, one Gather
// over all rows each.
func denseCols(dst []float32, m *Matrix, x []float32, n, o0, o1 int) {
	for r := range n {
		gatherCols(dst[r*m.Out:], m, x[r*m.In:], nil, true, 0, m.In, o0, o1)
	}
}

// ISA names the instruction set the kernels use: "go" without cgo.
func ISA() string { return "go" }

func setISA(string) string { return "go" }
