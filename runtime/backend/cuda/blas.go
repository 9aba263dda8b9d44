package cuda

import (
	"fmt"

	"github.com/acttail/acttail-gpu/cgo/cudadrv"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// cuBLAS is optional (cgo.OpenBLAS finds it at run time, never required):
// where it loads, the GEMMs of prefill chunks and of batches over
// gemvRows rows go to cublasGemmEx, else to at_gemm. Decode products
// (rows <= gemvRows) and the sparse gathers are always this repository's
// kernels, and Q8_0 weights always take at_gemm_q8.
//
// cuBLAS multiplies two inputs of one type, so with F16 or BF16 weights
// the activations are narrowed to that type first (at_narrow, one launch
// for the whole group) and accumulated in fp32; F32 weights multiply in
// full fp32 (CUBLAS_COMPUTE_32F, no TF32). at_gemm instead keeps fp32
// activations against widened weights (TF32 tensor cores for F16/BF16).

// openBLAS makes the cuBLAS handle on the backend's stream, unless off;
// without one it notes why. It runs on the device thread.
func (b *Backend) openBLAS(c *cudadrv.Ctx, off bool) {
	if off {
		b.blasNote = "off (NoBLAS)"
		return
	}
	h, err := c.OpenBLAS(b.stream)
	if err != nil {
		b.blasNote = err.Error()
		return
	}
	b.blas = h
}

// BLAS says what runs the GEMMs: the cuBLAS library and version, or why
// this repository's kernels do.
func (b *Backend) BLAS() string {
	if b.blas != nil {
		return b.blas.String()
	}
	return "own kernels: " + b.blasNote
}

// blasType is the cuBLAS input type of weights of dtype d, false for
// dtypes cuBLAS does not take (Q8_0).
func blasType(d model.DType) (cudadrv.DataType, bool) {
	switch d {
	case model.F32:
		return cudadrv.R32F, true
	case model.F16:
		return cudadrv.R16F, true
	case model.BF16:
		return cudadrv.R16BF, true
	}
	return 0, false
}

// gemms queues y_p = W_p x_p (y_p += W_p x_p with accum) for the
// projections of g, which share m's dtype, layout and input width, over
// rows > gemvRows tokens. The input of projection p is at src() + p*stride
// floats (stride 0: one input for all); src is called on the device thread
// (it may name a scratch buffer). m.Trans: weights (in, out), else (out,
// in), both row-major.
func (b *Backend) gemms(m *Mat, src func() cudadrv.DevicePtr, stride, rows int, g []proj) {
	sfx, err := suffix(m.DType)
	must(err)
	ab, ok := blasType(m.DType)
	if !ok || b.blas == nil {
		fg, trans := b.fn["at_gemm_"+sfx], boolInt(m.Trans)
		b.queue(fmt.Sprintf("gemm_%s*%d", sfx, len(g)), func(c *cudadrv.Ctx) error {
			x := src()
			for i, p := range g {
				l := gemmLaunch(rows, p.out)
				if err := c.Launch(fg, l.grid, l.block, 0, b.stream, p.y, p.w, x.Add(4*i*stride), rows, p.out, m.In, trans, boolInt(p.accum)); err != nil {
					return err
				}
			}
			return nil
		})
		return
	}
	esize := 4
	if ab != cudadrv.R32F {
		esize = 2
		n := (len(g)-1)*stride + rows*m.In // the inputs, end to end
		b.ensure(scratchNarrow, 2*n)
		f, l := b.fn["at_narrow"], strideGrid(n)
		b.queue("at_narrow", func(c *cudadrv.Ctx) error {
			return c.Launch(f, l.grid, l.block, 0, b.stream, b.scratch[scratchNarrow], src(), int64(n), int(m.DType))
		})
	}
	b.queue(fmt.Sprintf("cublas_%s*%d", sfx, len(g)), func(c *cudadrv.Ctx) error {
		in := src()
		if esize == 2 {
			in = b.scratch[scratchNarrow]
		}
		for i, p := range g {
			if err := c.Gemm(b.blas, blasGEMM(m, ab, p, in.Add(esize*i*stride), rows)); err != nil {
				return err
			}
		}
		return nil
	})
}

// blasGEMM is y = W x (+ y) for rows tokens in cuBLAS's column-major terms:
// y (rows, out) row-major is C (out × rows); x (rows, in) is B (in × rows);
// W (out, in) row-major is Aᵀ with lda = in, W (in, out) is A with lda = out.
func blasGEMM(m *Mat, ab cudadrv.DataType, p proj, x cudadrv.DevicePtr, rows int) cudadrv.GEMM {
	lda := m.In
	if m.Trans {
		lda = p.out
	}
	beta := float32(0)
	if p.accum {
		beta = 1
	}
	return cudadrv.GEMM{TransA: !m.Trans, M: p.out, N: rows, K: m.In, AB: ab, A: p.w, LdA: lda, B: x, LdB: m.In,
		C: p.y, LdC: p.out, Alpha: 1, Beta: beta}
}
