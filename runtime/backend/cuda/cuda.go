// Package cuda is the GPU backend: backend.Backend over the CUDA driver API
// (package cgo, opened at run time) and the kernels of cuda/, built into one
// fatbin that is embedded in the binary (kernels/acttail.fatbin) or loaded
// from Options.Kernels.
//
// All work goes to one stream in program order. Ops queue their launches on
// the device thread and return at once; Read, Alloc, Upload and
// SparseStats wait. Buffers are float32 device memory; matrices keep their
// dtype on the device (F32, F16, BF16 and Q8_0 natively for dense products
// and embedding lookups), UploadSparse stores them input-channel-major
// (Q8_0 widened to F32). A failed launch is sticky in CUDA: it is reported
// by the next waiting op, and the backend keeps the first such error as
// Err (backend.Backend), queuing nothing after it; the engine returns it
// at the end of the pass.
//
// Decode steps run as CUDA graphs (graph.go): the engine brackets a step
// with BeginStep and EndStep (backend.Stepper), the ops of the step are
// recorded and launched as one graph; positions and token ids live in
// device memory, so the next step of a sequence launches the same graph.
package cuda

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

//go:embed kernels/acttail.fatbin
var fatbin []byte

// Options configure New.
type Options struct {
	// Kernels is a fatbin to load instead of the embedded one (--kernels).
	Kernels string
	// Device is the CUDA device ordinal.
	Device int
	// NoGraphs runs decode steps op by op instead of as CUDA graphs.
	NoGraphs bool
	// NoBLAS keeps the GEMMs of prefill on this repository's kernels even
	// where cuBLAS is installed (--no-cublas).
	NoBLAS bool
}

// Available describes the backend New(o) makes (device, memory, driver,
// what runs the GEMMs), or returns the error that says why there is none
// (wrapping cgo's ErrNoDriver or ErrNoDevice where there is no GPU).
func Available(o Options) (string, error) {
	b, err := New(o)
	if err != nil {
		return "", err
	}
	d := b.Describe()
	return d, b.Close()
}

// Backend is the CUDA backend. Its methods are called from one goroutine
// at a time (backend.Backend); the device work runs on the device thread.
type Backend struct {
	dev    *cudadrv.Device
	info   cudadrv.Info
	stream cudadrv.Stream
	err    error // the sticky device error (Err), caller-side
	mod    cudadrv.Module
	fn     map[string]cudadrv.Function
	sites  cudadrv.DevicePtr // c_sites
	// blas is the cuBLAS handle for prefill GEMMs (blas.go), nil without
	// one; blasNote says why there is none.
	blas     *cudadrv.BLAS
	blasNote string

	// Caller-side state (the goroutine calling the ops).
	mirror       [maxSites][siteBytes]byte // what c_sites holds
	tables       siteTables                // where each budgets table sits in c_sites (ops.go)
	freqs        []float32                 // host copy of the RoPE frequencies on the device
	statCap      int                       // sites the device counters hold
	hostKept     []int64                   // dense sites, counted on the host
	hostSeen     []int64
	allocs       map[cudadrv.DevicePtr]int // every allocation, freed by Close
	scratchBytes [numScratch]int
	step         step              // the decode step being recorded (graph.go)
	norm         *pendingNorm      // an RMSNorm not queued yet (ops.go, flush)
	swiglu       *pendingSwiGLU    // a SwiGLU not queued yet; at most one of the two is set
	varsDev      cudadrv.DevicePtr // the step variables (graph.go)
	timingOn    bool              // StartProfile (profile.go)

	// Device-thread state: touched only inside Do/Go closures.
	scratch [numScratch]cudadrv.DevicePtr
	stats   cudadrv.DevicePtr // 2 uint64 per site: kept, seen
	dFreqs  cudadrv.DevicePtr
	graph   graphState
	timing    timing
	chain   chain // backend.Chainer (chain.go); issued and read are caller-side
}

// Scratch buffers, grown on demand.
const (
	scratchIdx    = iota // int32 kept indices, rows × in
	scratchCount         // int32 kept count per row
	scratchMasked        // float32 masked inputs, rows × in
	scratchTokens        // int32 token ids
	scratchResult        // int32 argmax / sample result
	scratchAttn          // float32 split-attention partials
	scratchNarrow        // 16-bit GEMM inputs for cuBLAS (blas.go)
	scratchPick          // float32 pairs (1/temperature, u) for at_pick
	numScratch
)

var kernelNames = []string{
	"at_rmsnorm", "at_rope", "at_rope_cache", "at_swiglu", "at_add", "at_zero", "at_embed", "at_transpose", "at_narrow", "at_select",
	"at_attention", "at_attention_combine", "at_pick",
	"at_gemv_f32", "at_gemv_f16", "at_gemv_bf16", "at_gemv_q8",
	"at_gemm_f32", "at_gemm_f16", "at_gemm_bf16", "at_gemm_q8",
	"at_gather_f32", "at_gather_f16", "at_gather_bf16",
	"at_gather_thr_f32", "at_gather_thr_f16", "at_gather_thr_bf16",
}

var (
	_ backend.Backend = (*Backend)(nil)
	_ backend.Picker  = (*Backend)(nil)
	_ backend.Memory  = (*Backend)(nil)
)

// New opens device o.Device and loads the kernels. Without a driver or a
// GPU it returns an error wrapping cudadrv.ErrNoDriver or ErrNoDevice.
func New(o Options) (*Backend, error) {
	image := fatbin
	if o.Kernels != "" {
		var err error
		if image, err = os.ReadFile(o.Kernels); err != nil {
			return nil, fmt.Errorf("cuda: kernels: %w", err)
		}
	}
	dev, err := cudadrv.Open(o.Device)
	if err != nil {
		return nil, err
	}
	b := &Backend{dev: dev, info: dev.Info(), fn: map[string]cudadrv.Function{}, allocs: map[cudadrv.DevicePtr]int{}}
	b.step.graphs = !o.NoGraphs
	err = dev.Do(func(c *cudadrv.Ctx) error {
		var err error
		if b.stream, err = c.StreamCreate(); err != nil {
			return err
		}
		if b.mod, err = c.ModuleLoadData(image); err != nil {
			return fmt.Errorf("load kernels (%s): %w", kernelSource(o.Kernels), err)
		}
		for _, n := range kernelNames {
			if b.fn[n], err = c.Function(b.mod, n); err != nil {
				return fmt.Errorf("kernels (%s): %w", kernelSource(o.Kernels), err)
			}
		}
		var size int
		if b.sites, size, err = c.Global(b.mod, "c_sites"); err != nil {
			return err
		}
		if size != maxSites*siteBytes {
			return fmt.Errorf("kernels (%s): c_sites is %d bytes, want %d", kernelSource(o.Kernels), size, maxSites*siteBytes)
		}
		zero := make([]byte, size)
		if err := c.CopyHtoD(b.sites, unsafe.Pointer(&zero[0]), size, b.stream); err != nil {
			return err
		}
		b.openBLAS(c, o.NoBLAS)
		return nil
	})
	if err != nil {
		dev.Close()
		return nil, err
	}
	return b, nil
}

func kernelSource(path string) string {
	if path == "" {
		return "embedded fatbin"
	}
	return path
}

// Name implements backend.Backend.
func (*Backend) Name() string { return "cuda" }

// Describe implements backend.Backend: the device, and what runs the
// prefill GEMMs.
func (b *Backend) Describe() string {
	if b.blas != nil {
		return b.info.String() + ", GEMM " + b.blas.String()
	}
	return b.info.String() + ", GEMM own kernels"
}

// Info describes the device.
func (b *Backend) Info() cudadrv.Info { return b.info }

// Close implements backend.Backend: it frees every buffer and weight.
func (b *Backend) Close() error {
	b.flush(nil) // the pending op goes first
	// A step cut short by a panic is dropped (the device thread may still
	// count earlier ones).
	b.step.on, b.step.ops = false, nil
	err := b.dev.Do(func(c *cudadrv.Ctx) error {
		var errs []error
		errs = append(errs, c.StreamSynchronize(b.stream))
		errs = append(errs, b.graph.destroyAll(c), b.timing.destroyEvents(c), c.CloseBLAS(b.blas), b.chain.free(c))
		for p := range b.allocs {
			errs = append(errs, c.MemFree(p))
		}
		for _, p := range append(b.scratch[:], b.stats, b.dFreqs) {
			if p != 0 {
				errs = append(errs, c.MemFree(p))
			}
		}
		errs = append(errs, c.ModuleUnload(b.mod), c.StreamDestroy(b.stream))
		return errors.Join(errs...)
	})
	b.allocs = nil
	return errors.Join(err, b.dev.Close())
}

// A device error is sticky (as it is in CUDA, and as bufio.Writer's is):
// the first one is kept as Err, and from then on the ops queue nothing and
// wait for nothing, so that no later op runs on memory that is not there.
// The engine checks Err at the end of every pass.

// Err implements backend.Backend: the first device error, if any.
func (b *Backend) Err() error { return b.err }

// fail keeps err as the sticky error if it is the first.
func (b *Backend) fail(err error) {
	if err != nil && b.err == nil {
		b.err = fmt.Errorf("cuda: %w", err)
	}
}

// do runs fn on the device thread and waits for it, unless the backend
// has failed; its error (or one of the work queued before it) becomes the
// sticky error.
func (b *Backend) do(fn func(*cudadrv.Ctx) error) {
	if b.err == nil {
		b.fail(b.dev.Do(fn))
	}
}

// must panics on err: for misuse that no input can cause (an op's own
// arguments), not for device errors (fail).
func must(err error) {
	if err != nil {
		panic(err)
	}
}

// alloc returns bytes of zeroed device memory, tracked for Close.
func (b *Backend) alloc(bytes int) (cudadrv.DevicePtr, error) {
	if b.err != nil {
		return 0, b.err
	}
	var p cudadrv.DevicePtr
	err := b.dev.Do(func(c *cudadrv.Ctx) error {
		var err error
		if p, err = c.MemAlloc(bytes); err != nil {
			return err
		}
		return c.Memset(p, 0, bytes, b.stream)
	})
	if err != nil {
		return 0, err
	}
	b.allocs[p] = bytes
	return p, nil
}

// free releases an allocation after the work queued so far.
func (b *Backend) free(p cudadrv.DevicePtr) error {
	delete(b.allocs, p)
	return b.dev.Do(func(c *cudadrv.Ctx) error {
		if err := c.StreamSynchronize(b.stream); err != nil {
			return err
		}
		return c.MemFree(p)
	})
}

// ensure grows scratch buffer i to at least bytes; call it from the
// caller's goroutine before queuing work that uses scratch i.
func (b *Backend) ensure(i, bytes int) {
	if bytes <= b.scratchBytes[i] {
		return
	}
	bytes = max(bytes, 2*b.scratchBytes[i], 256)
	b.scratchBytes[i] = bytes
	b.do(func(c *cudadrv.Ctx) error {
		if old := b.scratch[i]; old != 0 {
			if err := c.StreamSynchronize(b.stream); err != nil {
				return err
			}
			if err := c.MemFree(old); err != nil {
				return err
			}
		}
		var err error
		b.scratch[i], err = c.MemAlloc(bytes)
		return err
	})
}

// Buf is a device buffer of float32 values.
type Buf struct {
	p cudadrv.DevicePtr
	n int
}

// Len implements backend.Buffer.
func (x *Buf) Len() int { return x.n }

// Ptr is the buffer's device address (for benchmarks and tests).
func (x *Buf) Ptr() cudadrv.DevicePtr { return x.p }

func (x *Buf) at(off int) cudadrv.DevicePtr { return x.p.Add(4 * off) }

func buf(b backend.Buffer) *Buf { return b.(*Buf) }

// Vec is a 1-D weight widened to float32.
type Vec struct {
	p cudadrv.DevicePtr
	n int
}

// Shape implements backend.Weight.
func (v *Vec) Shape() []int { return []int{v.n} }

// Mat is a matrix in its dtype: (Out, In) row-major, or (In, Out) when
// Trans (from UploadSparse).
type Mat struct {
	p       cudadrv.DevicePtr
	DType   model.DType
	Out, In int
	Trans   bool
}

// Shape implements backend.Weight: the model's (out, in).
func (m *Mat) Shape() []int { return []int{m.Out, m.In} }

// Alloc implements backend.Backend.
func (b *Backend) Alloc(n int) backend.Buffer {
	p, err := b.alloc(4 * n)
	b.fail(err) // a failed allocation is a buffer at 0 that no op touches
	return &Buf{p, n}
}

// Free implements backend.Backend. A buffer whose allocation failed (the
// sticky error) has nothing to free.
func (b *Backend) Free(x backend.Buffer) {
	d := buf(x)
	if d.p == 0 {
		return
	}
	if _, ok := b.allocs[d.p]; !ok {
		panic("cuda: free: not a buffer from Alloc, or freed already (a view?)")
	}
	b.flush(nil) // the pending op goes first
	b.outsideStep("free")
	if b.err != nil {
		delete(b.allocs, d.p) // the context is lost; Close frees nothing more of it
		return
	}
	b.fail(b.free(d.p))
}

// FreeMemory implements backend.Memory: the device's free memory.
func (b *Backend) FreeMemory() (int64, error) {
	var free uint64
	err := b.dev.Do(func(c *cudadrv.Ctx) error {
		var err error
		free, _, err = c.MemGetInfo()
		return err
	})
	return int64(free), err
}

// View implements backend.Backend.
func (b *Backend) View(x backend.Buffer, off, n int) backend.Buffer {
	src := buf(x)
	span("view", src.n, off, n)
	return &Buf{src.at(off), n}
}

// Write implements backend.Backend.
// Like the CPU backend's copy, it writes only what fits after off.
func (b *Backend) Write(dst backend.Buffer, off int, src []float32) {
	b.flush(nil) // the pending op goes first
	b.outsideStep("write")
	d := buf(dst)
	span("write", d.n, off, 0)
	src = src[:min(len(src), d.n-off)]
	if len(src) == 0 {
		return
	}
	b.do(func(c *cudadrv.Ctx) error {
		return c.CopyHtoD(d.at(off), unsafe.Pointer(&src[0]), 4*len(src), b.stream)
	})
}

// Read implements backend.Backend: it waits for the work queued so far.
// Like the CPU backend's copy, it reads only what lies after off.
func (b *Backend) Read(dst []float32, src backend.Buffer, off int) {
	b.flush(nil) // the pending op goes first
	b.outsideStep("read")
	s := buf(src)
	span("read", s.n, off, 0)
	dst = dst[:min(len(dst), s.n-off)]
	b.do(func(c *cudadrv.Ctx) error {
		if len(dst) == 0 {
			return c.StreamSynchronize(b.stream)
		}
		return c.CopyDtoH(unsafe.Pointer(&dst[0]), s.at(off), 4*len(dst), b.stream)
	})
}

// Sync waits for the work queued so far and reports its first error.
func (b *Backend) Sync() error {
	b.flush(nil) // the pending op goes first
	b.outsideStep("sync")
	return b.dev.Do(func(c *cudadrv.Ctx) error { return c.StreamSynchronize(b.stream) })
}

// Upload implements backend.Backend.
func (b *Backend) Upload(t *model.Tensor) (backend.Weight, error) {
	switch len(t.Shape) {
	case 1:
		f, err := t.Float32()
		if err != nil {
			return nil, err
		}
		p, err := b.upload(unsafe.Pointer(&f[0]), 4*len(f))
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", t.Name, err)
		}
		return &Vec{p, len(f)}, nil
	case 2:
		if err := checkMatrix(t); err != nil {
			return nil, err
		}
		p, err := b.upload(unsafe.Pointer(&t.Data[0]), len(t.Data))
		if err != nil {
			return nil, fmt.Errorf("upload %s: %w", t.Name, err)
		}
		return &Mat{p: p, DType: t.DType, Out: t.Shape[0], In: t.Shape[1]}, nil
	}
	return nil, fmt.Errorf("upload %s: unsupported rank %d", t.Name, len(t.Shape))
}

func checkMatrix(t *model.Tensor) error {
	if _, err := suffix(t.DType); err != nil {
		return fmt.Errorf("upload %s: %w", t.Name, err)
	}
	if t.Shape[0] <= 0 || t.Shape[1] <= 0 {
		return fmt.Errorf("upload %s: shape %v", t.Name, t.Shape)
	}
	// The kernels find element (o, i) of a Q8_0 matrix as block (o·in + i)/32,
	// which is right only when every row is whole blocks (as the CPU backend
	// also requires).
	if t.DType == model.Q8_0 && t.Shape[1]%model.Q8Block != 0 {
		return fmt.Errorf("upload %s: Q8_0 rows of %d values are not whole blocks of %d", t.Name, t.Shape[1], model.Q8Block)
	}
	if want := t.DType.Bytes(t.Elems()); want <= 0 || len(t.Data) != want {
		return fmt.Errorf("upload %s: %d bytes for %v %s", t.Name, len(t.Data), t.Shape, t.DType)
	}
	return nil
}

// upload copies host bytes into a new allocation.
func (b *Backend) upload(src unsafe.Pointer, bytes int) (cudadrv.DevicePtr, error) {
	p, err := b.alloc(bytes)
	if err != nil {
		return 0, err
	}
	err = b.dev.Do(func(c *cudadrv.Ctx) error { return c.CopyHtoD(p, src, bytes, b.stream) })
	return p, err
}

// UploadSparse implements backend.Backend: the matrix is uploaded as is and
// transposed on the device.
func (b *Backend) UploadSparse(t *model.Tensor) (backend.Weight, error) {
	if len(t.Shape) != 2 {
		return nil, fmt.Errorf("upload %s: sparse weights must be matrices", t.Name)
	}
	if err := checkMatrix(t); err != nil {
		return nil, err
	}
	out, in := t.Shape[0], t.Shape[1]
	src, err := b.upload(unsafe.Pointer(&t.Data[0]), len(t.Data))
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", t.Name, err)
	}
	dt := sparseDType(t.DType)
	dst, err := b.alloc(dt.Bytes(out * in))
	if err != nil {
		b.free(src)
		return nil, fmt.Errorf("upload %s: %w", t.Name, err)
	}
	l := transposeLaunch(out, in)
	err = b.dev.Do(func(c *cudadrv.Ctx) error {
		return c.Launch(b.fn["at_transpose"], l.grid, l.block, 0, b.stream, dst, src, out, in, int(t.DType))
	})
	if err := errors.Join(err, b.free(src)); err != nil {
		return nil, fmt.Errorf("upload %s: %w", t.Name, err)
	}
	return &Mat{p: dst, DType: dt, Out: out, In: in, Trans: true}, nil
}

// launch queues a kernel whose arguments are known now (they are packed
// here, once, not each time the op runs); its error surfaces at the next
// waiting op.
func (b *Backend) launch(name string, l launch, args ...any) {
	b.queue(name, b.launchFunc(name, l, args...))
}

// launchFunc is the op that launches kernel name with args, packed now.
func (b *Backend) launchFunc(name string, l launch, args ...any) func(*cudadrv.Ctx) error {
	f := b.fn[name]
	p, err := cudadrv.Pack(args...)
	must(err)
	return func(c *cudadrv.Ctx) error { return c.LaunchPacked(f, l.grid, l.block, l.shared, b.stream, p) }
}

// queue runs f on the device thread after the work queued before it (and
// the pending op, flush), or
// records it when a step is being recorded. f may only queue stream work
// (launches, device copies, memsets; host copies only with hostCopy). tag
// names the work f queues (the kernels, how many): the tags of a step are
// its graph's topology, which picks the executable graph it updates.
func (b *Backend) queue(tag string, f func(*cudadrv.Ctx) error) {
	b.flush(nil)
	b.queueNow(tag, f)
}

// queueNow is queue without flushing the pending op.
func (b *Backend) queueNow(tag string, f func(*cudadrv.Ctx) error) {
	if b.err != nil {
		return
	}
	if b.timingOn {
		f = b.timedOp(tag, f)
	}
	if b.step.on {
		b.step.ops = append(b.step.ops, f)
		b.step.topo.WriteString(tag)
		b.step.topo.WriteByte(0) // tags never hold a NUL
		return
	}
	b.dev.Go(f)
}
