package cuda

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// Launch geometry shared with the kernels (cuda/*.cu); each constant names
// the #define it mirrors.
const (
	eltThreads    = 256  // at_rope, at_swiglu, at_add, at_embed, at_rmsnorm
	eltMaxBlocks  = 4096 // grid-stride kernels
	gemvWarps     = 8    // at_gemv_*: 256 threads, one warp an output
	gemvRows      = 8    // AT_GEMV_ROWS: larger batches take the GEMM
	gemmTile      = 64   // AT_TILE
	selectThreads = 1024 // AT_SELECT_THREADS
	selectPer     = 16   // AT_SELECT_PER: inputs a thread of at_select holds in registers
	gatherThreads = 128  // AT_GATHER_THREADS
	attWarps      = 8    // AT_ATT_WARPS
	attMaxHeadDim = 256  // AT_ATT_MAXD
	attChunk      = 512  // cache positions a block takes in a split attention
	attMaxSplits  = 64
	sampleThreads = 1024 // AT_SAMPLE_THREADS
	maxSites      = 2048 // AT_MAX_SITES: slots of c_sites
	siteBytes     = 16   // sizeof(at_site)
	groupMax      = 3    // AT_GROUP: projections a fused launch takes
	projBytes     = 32   // sizeof(at_proj)
	groupBytes    = 104  // sizeof(at_group)
	inlineTokens  = 8    // AT_INLINE_TOKENS: token ids at_embed takes by value
	thrChunk      = 2048 // AT_THR_CHUNK: inputs one at_gather_thr block scans at most
	// gatherMinRows is the fewest kept rows worth a split of their own.
	gatherMinRows = 32
	// gatherWaves is the blocks a gather aims at per SM.
	gatherWaves = 4
)

// launch is one kernel's grid, block and dynamic shared memory.
type launch struct {
	grid, block cudadrv.Dim3
	shared      int
}

func ceilDiv(a, b int) int { return (a + b - 1) / b }

// gridFor is the blocks of block threads that cover n items (at least 1).
func gridFor(n, block int) int { return max(1, ceilDiv(n, block)) }

// strideGrid is the grid of a grid-stride kernel over n items.
func strideGrid(n int) launch {
	return launch{grid: cudadrv.Dim3{X: min(gridFor(n, eltThreads), eltMaxBlocks)}, block: cudadrv.Dim3{X: eltThreads}}
}

// suffix names a dtype's kernel variant (at_gemv_bf16, ...).
func suffix(d model.DType) (string, error) {
	switch d {
	case model.F32:
		return "f32", nil
	case model.F16:
		return "f16", nil
	case model.BF16:
		return "bf16", nil
	case model.Q8_0:
		return "q8", nil
	}
	return "", fmt.Errorf("cuda: unsupported dtype %s", d)
}

// vecOK reports whether rows of n elements of d can be read with 16-byte
// loads: n a multiple of the elements in 16 bytes (rows then stay aligned,
// since allocations are 256-byte aligned). Q8_0 has its own block path.
func vecOK(d model.DType, n int) bool {
	switch d {
	case model.F32:
		return n%4 == 0
	case model.F16, model.BF16:
		return n%8 == 0
	}
	return false
}

// vecElems is the outputs one gather thread owns.
func vecElems(d model.DType, vec bool) int {
	switch {
	case !vec:
		return 1
	case d == model.F32:
		return 4
	}
	return 8
}

// gemvLaunch covers the outputs of every projection of a group, block
// after block.
func gemvLaunch(outs ...int) launch {
	blocks := 0
	for _, o := range outs {
		blocks += gridFor(o, gemvWarps)
	}
	return launch{grid: cudadrv.Dim3{X: blocks}, block: cudadrv.Dim3{X: 32 * gemvWarps}}
}

func gemmLaunch(rows, out int) launch {
	return launch{grid: cudadrv.Dim3{X: gridFor(out, gemmTile), Y: gridFor(rows, gemmTile)}, block: cudadrv.Dim3{X: 256}}
}

func normLaunch(rows int) launch {
	return launch{grid: cudadrv.Dim3{X: rows}, block: cudadrv.Dim3{X: eltThreads}}
}

func ropeLaunch(rows, heads, headDim int) launch {
	return launch{grid: cudadrv.Dim3{X: gridFor(heads*headDim/2, eltThreads), Y: rows}, block: cudadrv.Dim3{X: eltThreads}}
}

// ropeCacheLaunch covers the q pairs, k pairs and v values of a row.
func ropeCacheLaunch(rows, heads, kvHeads, headDim int) launch {
	w := heads*(headDim/2) + kvHeads*(headDim/2) + kvHeads*headDim
	return launch{grid: cudadrv.Dim3{X: gridFor(w, eltThreads), Y: rows}, block: cudadrv.Dim3{X: eltThreads}}
}

func embedLaunch(rows, dim int) launch {
	return launch{grid: cudadrv.Dim3{X: gridFor(dim, eltThreads), Y: rows}, block: cudadrv.Dim3{X: eltThreads}}
}

func transposeLaunch(out, in int) launch {
	return launch{grid: cudadrv.Dim3{X: gridFor(in, 32), Y: gridFor(out, 32)}, block: cudadrv.Dim3{X: 32, Y: 8}}
}

func selectLaunch(rows, projs int) launch {
	return launch{grid: cudadrv.Dim3{X: rows, Y: projs}, block: cudadrv.Dim3{X: selectThreads}}
}

func attentionLaunch(rows, heads, kvHeads, headDim int) (launch, error) {
	switch {
	case headDim > attMaxHeadDim:
		return launch{}, fmt.Errorf("cuda: attention: head_dim %d above the kernel's %d", headDim, attMaxHeadDim)
	case kvHeads <= 0 || heads%kvHeads != 0:
		return launch{}, fmt.Errorf("cuda: attention: %d heads is not a multiple of %d kv heads", heads, kvHeads)
	}
	return launch{grid: cudadrv.Dim3{X: heads, Y: rows}, block: cudadrv.Dim3{X: 32 * attWarps}}, nil
}

// attentionSplits is how many blocks share each (row, head) of a decode
// attention over up to n cache positions (flash-decoding), and the
// positions each takes: one block up to attChunk positions or for prefill
// chunks (rows > gemvRows), else one a chunk of about attChunk.
func attentionSplits(rows, n int) (splits, chunk int) {
	if rows > gemvRows || n <= attChunk {
		return 1, n
	}
	splits = min(ceilDiv(n, attChunk), attMaxSplits)
	return splits, ceilDiv(n, splits)
}

// gatherLaunch covers the outputs of every projection of a group with
// threads of vecElems outputs each, and splits each token's kept list (at
// most maxKept rows) so that about gatherWaves blocks per SM run, with at
// least gatherMinRows rows a split.
func gatherLaunch(rows int, outs []int, maxKept, sms, vecElems int) launch {
	cols := 0
	for _, o := range outs {
		cols += gridFor(o, gatherThreads*vecElems)
	}
	splits := gridFor(gatherWaves*sms, cols*rows)
	splits = max(1, min(splits, maxKept/gatherMinRows))
	return launch{grid: cudadrv.Dim3{X: cols, Y: splits, Z: rows}, block: cudadrv.Dim3{X: gatherThreads}}
}

// gatherThrLaunch is at_gather_thr's grid: at_gather's over all in inputs,
// with enough splits that none holds more than thrChunk inputs.
func gatherThrLaunch(rows int, outs []int, in, sms, vecElems int) launch {
	l := gatherLaunch(rows, outs, in, sms, vecElems)
	l.grid.Y = max(l.grid.Y, gridFor(in, thrChunk))
	return l
}

// packSite encodes a site as the kernels' at_site: k, threshold, topk, 0.
func packSite(s backend.Budget) [siteBytes]byte {
	var b [siteBytes]byte
	k := min(max(s.K, 0), math.MaxInt32)
	binary.LittleEndian.PutUint32(b[0:], uint32(int32(k)))
	binary.LittleEndian.PutUint32(b[4:], math.Float32bits(s.Threshold))
	if s.TopK {
		binary.LittleEndian.PutUint32(b[8:], 1)
	}
	return b
}

// proj is one projection of a fused launch, as the kernels' at_proj.
type proj struct {
	y, w  cudadrv.DevicePtr
	out   int
	slot  int
	stat  int  // < 0: not counted
	accum bool // y += W x
}

// packGroup encodes up to groupMax projections as the kernels' at_group:
// per at_proj y, w (8 bytes each), out, slot, stat, accum (4 bytes each);
// then the count. Unused entries are zero with stat -1.
func packGroup(ps []proj) []byte {
	if len(ps) > groupMax {
		panic(fmt.Sprintf("cuda: a group of %d projections", len(ps)))
	}
	b := make([]byte, groupBytes)
	for i := range groupMax {
		e := b[i*projBytes:]
		p := proj{stat: -1}
		if i < len(ps) {
			p = ps[i]
		}
		binary.LittleEndian.PutUint64(e[0:], uint64(p.y))
		binary.LittleEndian.PutUint64(e[8:], uint64(p.w))
		binary.LittleEndian.PutUint32(e[16:], uint32(int32(p.out)))
		binary.LittleEndian.PutUint32(e[20:], uint32(int32(p.slot)))
		binary.LittleEndian.PutUint32(e[24:], uint32(int32(p.stat)))
		if p.accum {
			binary.LittleEndian.PutUint32(e[28:], 1)
		}
	}
	binary.LittleEndian.PutUint32(b[groupMax*projBytes:], uint32(len(ps)))
	return b
}

// packTokens encodes up to inlineTokens ids as the kernels' at_tokens.
func packTokens(ids []int32) []byte {
	if len(ids) > inlineTokens {
		panic(fmt.Sprintf("cuda: %d inline tokens", len(ids)))
	}
	b := make([]byte, 4*inlineTokens)
	for i, t := range ids {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(t))
	}
	return b
}

// sparseDType is the device dtype of an UploadSparse weight: Q8_0 is
// widened to F32, since its blocks run along the input dimension.
func sparseDType(d model.DType) model.DType {
	if d == model.Q8_0 {
		return model.F32
	}
	return d
}
