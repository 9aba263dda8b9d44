//go:build !cgo

package matmul

import "github.com/acttail/acttail-gpu/runtime/model"

// Without cgo the products run in plain Go: each weight row is decoded
// once into float32 and dotted with every activation row.

// mulRows computes output rows [o0, o1) of m·x on the calling goroutine.
func mulRows(dst []float32, m *Matrix, x []float32, n, o0, o1 int) {
	row := make([]float32, m.Cols)
	for o := o0; o < o1; o++ {
		if err := model.Decode(row, m.Data[o*m.rowBytes:(o+1)*m.rowBytes], m.DType); err != nil {
			panic(err) // NewMatrix checked the sizes
		}
		for r := range n {
			dst[r*m.Rows+o] = dot(row, x[r*m.Cols:(r+1)*m.Cols])
		}
	}
}

func dot(a, b []float32) float32 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return (s0 + s1) + (s2 + s3)
}

// sum adds up p; MemReadBandwidth reads memory with it.
func sum(p []float32) float64 {
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(p); i += 4 {
		s0 += p[i]
		s1 += p[i+1]
		s2 += p[i+2]
		s3 += p[i+3]
	}
	for ; i < len(p); i++ {
		s0 += p[i]
	}
	return float64((s0 + s1) + (s2 + s3))
}

// ISA names the instruction set the kernels use: "go" without cgo.
func ISA() string { return "go" }

func setISA(string) string { return "go" }
