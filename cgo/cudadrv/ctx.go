package cudadrv

/*
#include <stdlib.h>
#include <string.h>
#include "drv.h"
*/
import "C"

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"unsafe"
)

// DevicePtr is a device address.
type DevicePtr uint64

// Add offsets p by n bytes.
func (p DevicePtr) Add(n int) DevicePtr { return p + DevicePtr(n) }

// Stream, Event, Module, Function and Graph are driver handles.
type (
	Stream   struct{ h C.CUstream }
	Event    struct{ h C.CUevent }
	Module   struct{ h C.CUmodule }
	Function struct {
		h    C.CUfunction
		Name string
	}
	Graph struct{ h C.CUgraphExec }
)

// Dim3 is a grid or block shape.
type Dim3 struct{ X, Y, Z int }

// Ctx issues driver calls. It exists only on the device thread: use the
// *Ctx a Do or Go closure receives, and do not keep it.
type Ctx struct {
	args *argArena
	// dry makes Launch, CopyHtoD, CopyDtoD, Memset and Gemm add what they
	// would queue to dryHash instead of queuing it (BeginDry).
	dry     bool
	dryHash maphash.Hash
	// vals and offs are the storage of the last launch's packed arguments.
	vals []byte
	offs []int
}

// drySeed seeds every dry-run hash of the process, so that two Ctx hash
// the same work alike.
var drySeed = maphash.MakeSeed()

// BeginDry starts a dry run: until EndDry, Launch, CopyHtoD, CopyDtoD,
// Memset and Gemm queue nothing and fold everything they were given
// (kernel, grid, block, argument bytes, addresses, sizes) into a 64-bit
// hash (hash/maphash: AES-based, a few GB/s, against about 1 GB/s for a
// byte-at-a-time hash), which EndDry returns. Two runs with the same hash
// queue the same work.
func (c *Ctx) BeginDry() {
	c.dryHash.SetSeed(drySeed)
	c.dry = true
}

// EndDry ends a dry run and returns its hash.
func (c *Ctx) EndDry() uint64 {
	h := c.dryHash.Sum64()
	c.dry = false
	return h
}

// fold adds values to the dry-run hash.
func (c *Ctx) fold(vals ...uint64) {
	var b [8 * 16]byte
	for len(vals) > 0 {
		n := min(len(vals), 16)
		for i, v := range vals[:n] {
			binary.LittleEndian.PutUint64(b[8*i:], v)
		}
		c.dryHash.Write(b[:8*n])
		vals = vals[n:]
	}
}

// argArena is C memory for kernel arguments: cuLaunchKernel copies them at
// the call, so one arena serves every launch on the thread.
type argArena struct {
	ptrs [maxArgs]unsafe.Pointer
	vals [argBytes]byte
}

func (c *Ctx) free() { C.free(unsafe.Pointer(c.args)) }

// Synchronize waits for all work in the context.
func (c *Ctx) Synchronize() error { return check("cuCtxSynchronize", C.at_cuCtxSynchronize()) }

// MemAlloc allocates bytes of device memory (not zeroed).
func (c *Ctx) MemAlloc(bytes int) (DevicePtr, error) {
	var p C.CUdeviceptr
	if err := check("cuMemAlloc_v2", C.at_cuMemAlloc(&p, C.size_t(max(bytes, 1)))); err != nil {
		return 0, fmt.Errorf("alloc %d bytes: %w", bytes, err)
	}
	return DevicePtr(p), nil
}

// MemFree frees device memory.
func (c *Ctx) MemFree(p DevicePtr) error {
	return check("cuMemFree_v2", C.at_cuMemFree(C.CUdeviceptr(p)))
}

// MemGetInfo returns the free and total device memory in bytes.
func (c *Ctx) MemGetInfo() (free, total uint64, err error) {
	var f, t C.size_t
	err = check("cuMemGetInfo_v2", C.at_cuMemGetInfo(&f, &t))
	return uint64(f), uint64(t), err
}

// StreamCreate makes a stream that orders with the legacy default stream.
func (c *Ctx) StreamCreate() (Stream, error) {
	var s C.CUstream
	err := check("cuStreamCreate", C.at_cuStreamCreate(&s, 0))
	return Stream{s}, err
}

// StreamDestroy destroys s once its work is done.
func (c *Ctx) StreamDestroy(s Stream) error {
	return check("cuStreamDestroy", C.at_cuStreamDestroy(s.h))
}

// StreamSynchronize waits for s.
func (c *Ctx) StreamSynchronize(s Stream) error {
	return check("cuStreamSynchronize", C.at_cuStreamSynchronize(s.h))
}

// CopyHtoD queues a copy of bytes from host memory src to dst on s. src is
// read before the call returns (pageable memory is staged), so it may be
// reused at once; it must not hold Go pointers.
func (c *Ctx) CopyHtoD(dst DevicePtr, src unsafe.Pointer, bytes int, s Stream) error {
	if bytes == 0 {
		return nil
	}
	if c.dry {
		c.fold(1, uint64(dst), uint64(bytes))
		c.dryHash.Write(unsafe.Slice((*byte)(src), bytes))
		return nil
	}
	return check("cuMemcpyHtoDAsync_v2", C.at_cuMemcpyHtoDAsync(C.CUdeviceptr(dst), src, C.size_t(bytes), s.h))
}

// CopyDtoH copies bytes from src to host memory dst after the work queued
// on s, and returns when the copy is done (dst is pageable memory).
func (c *Ctx) CopyDtoH(dst unsafe.Pointer, src DevicePtr, bytes int, s Stream) error {
	if bytes == 0 {
		return nil
	}
	if err := check("cuMemcpyDtoHAsync_v2", C.at_cuMemcpyDtoHAsync(dst, C.CUdeviceptr(src), C.size_t(bytes), s.h)); err != nil {
		return err
	}
	return c.StreamSynchronize(s)
}

// MemAllocHost allocates bytes of page-locked host memory, which
// CopyDtoHAsync can fill while the host goes on. It is C memory: it holds
// no Go pointers and the garbage collector does not move it.
func (c *Ctx) MemAllocHost(bytes int) (unsafe.Pointer, error) {
	var p unsafe.Pointer
	if err := check("cuMemAllocHost_v2", C.at_cuMemAllocHost(&p, C.size_t(max(bytes, 1)))); err != nil {
		return nil, fmt.Errorf("alloc %d bytes of pinned host memory: %w", bytes, err)
	}
	return p, nil
}

// MemFreeHost frees memory from MemAllocHost.
func (c *Ctx) MemFreeHost(p unsafe.Pointer) error {
	return check("cuMemFreeHost", C.at_cuMemFreeHost(p))
}

// CopyDtoHAsync queues a copy of bytes from src to dst, page-locked
// memory from MemAllocHost, on s and returns at once: dst holds the
// values once the work queued before it is done (an event recorded after
// it says when).
func (c *Ctx) CopyDtoHAsync(dst unsafe.Pointer, src DevicePtr, bytes int, s Stream) error {
	if bytes == 0 {
		return nil
	}
	return check("cuMemcpyDtoHAsync_v2", C.at_cuMemcpyDtoHAsync(dst, C.CUdeviceptr(src), C.size_t(bytes), s.h))
}

// CopyDtoD queues a device-to-device copy on s.
func (c *Ctx) CopyDtoD(dst, src DevicePtr, bytes int, s Stream) error {
	if bytes == 0 {
		return nil
	}
	if c.dry {
		c.fold(2, uint64(dst), uint64(src), uint64(bytes))
		return nil
	}
	return check("cuMemcpyDtoDAsync_v2", C.at_cuMemcpyDtoDAsync(C.CUdeviceptr(dst), C.CUdeviceptr(src), C.size_t(bytes), s.h))
}

// Memset queues setting bytes bytes at p to v on s.
func (c *Ctx) Memset(p DevicePtr, v byte, bytes int, s Stream) error {
	if bytes == 0 {
		return nil
	}
	if c.dry {
		c.fold(3, uint64(p), uint64(v), uint64(bytes))
		return nil
	}
	return check("cuMemsetD8Async", C.at_cuMemsetD8Async(C.CUdeviceptr(p), C.uchar(v), C.size_t(bytes), s.h))
}

// ModuleLoadData loads a fatbin, cubin or PTX image.
func (c *Ctx) ModuleLoadData(image []byte) (Module, error) {
	if len(image) == 0 {
		return Module{}, fmt.Errorf("cuda: load module: empty image")
	}
	// A copy in C memory: aligned, NUL-terminated (PTX is text) and not
	// moved while the driver reads it.
	buf := C.malloc(C.size_t(len(image) + 1))
	defer C.free(buf)
	C.memcpy(buf, unsafe.Pointer(&image[0]), C.size_t(len(image)))
	*(*byte)(unsafe.Add(buf, len(image))) = 0
	var m C.CUmodule
	err := check("cuModuleLoadData", C.at_cuModuleLoadData(&m, buf))
	return Module{m}, err
}

// ModuleUnload unloads m.
func (c *Ctx) ModuleUnload(m Module) error { return check("cuModuleUnload", C.at_cuModuleUnload(m.h)) }

// Function looks up an extern "C" kernel in m.
func (c *Ctx) Function(m Module, name string) (Function, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var f C.CUfunction
	if err := check("cuModuleGetFunction", C.at_cuModuleGetFunction(&f, m.h, cs)); err != nil {
		return Function{}, fmt.Errorf("kernel %s: %w", name, err)
	}
	return Function{f, name}, nil
}

// Global looks up a __device__ or __constant__ variable in m: its address
// and size in bytes.
func (c *Ctx) Global(m Module, name string) (DevicePtr, int, error) {
	cs := C.CString(name)
	defer C.free(unsafe.Pointer(cs))
	var p C.CUdeviceptr
	var n C.size_t
	if err := check("cuModuleGetGlobal_v2", C.at_cuModuleGetGlobal(&p, &n, m.h, cs)); err != nil {
		return 0, 0, fmt.Errorf("global %s: %w", name, err)
	}
	return DevicePtr(p), int(n), nil
}

// SetMaxDynamicShared lets f use up to bytes of dynamic shared memory
// (beyond the default 48 KiB).
func (c *Ctx) SetMaxDynamicShared(f Function, bytes int) error {
	const attrMaxDynamicShared = 8 // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	return check("cuFuncSetAttribute", C.at_cuFuncSetAttribute(f.h, attrMaxDynamicShared, C.int(bytes)))
}

// Launch queues kernel f on s. args are the kernel's parameters in order;
// see PackArgs for the Go types accepted.
func (c *Ctx) Launch(f Function, grid, block Dim3, shared int, s Stream, args ...any) error {
	vals, offs, err := appendArgs(c.vals, c.offs, args)
	if err != nil {
		return fmt.Errorf("launch %s: %w", f.Name, err)
	}
	c.vals, c.offs = vals, offs
	return c.LaunchPacked(f, grid, block, shared, s, Packed{vals, offs})
}

// Packed is a launch's arguments as PackArgs lays them out, for callers
// that pack them once and launch them later (or many times).
type Packed struct {
	Vals []byte
	Offs []int
}

// Pack packs args (PackArgs).
func Pack(args ...any) (Packed, error) {
	vals, offs, err := PackArgs(args)
	return Packed{vals, offs}, err
}

// LaunchPacked is Launch with arguments packed beforehand.
func (c *Ctx) LaunchPacked(f Function, grid, block Dim3, shared int, s Stream, p Packed) error {
	g, b := grid.norm(), block.norm()
	if c.dry {
		c.fold(4, uint64(uintptr(unsafe.Pointer(f.h))), uint64(g.X), uint64(g.Y), uint64(g.Z), uint64(b.X), uint64(b.Y), uint64(b.Z), uint64(shared))
		c.dryHash.Write(p.Vals)
		return nil
	}
	if len(p.Offs) > maxArgs || len(p.Vals) > argBytes {
		return fmt.Errorf("launch %s: %d arguments in %d bytes, at most %d in %d", f.Name, len(p.Offs), len(p.Vals), maxArgs, argBytes)
	}
	a := c.args
	copy(a.vals[:], p.Vals)
	for i, o := range p.Offs {
		a.ptrs[i] = unsafe.Pointer(&a.vals[o])
	}
	r := C.at_cuLaunchKernel(f.h, C.uint(g.X), C.uint(g.Y), C.uint(g.Z), C.uint(b.X), C.uint(b.Y), C.uint(b.Z),
		C.uint(shared), s.h, &a.ptrs[0])
	if err := check("cuLaunchKernel", r); err != nil {
		return fmt.Errorf("launch %s grid %v block %v shared %d: %w", f.Name, g, b, shared, err)
	}
	return nil
}

// norm turns zero extents into 1.
func (d Dim3) norm() Dim3 {
	return Dim3{max(d.X, 1), max(d.Y, 1), max(d.Z, 1)}
}

// EventCreate makes a timing event.
func (c *Ctx) EventCreate() (Event, error) {
	var e C.CUevent
	err := check("cuEventCreate", C.at_cuEventCreate(&e, 0))
	return Event{e}, err
}

// EventDestroy destroys e.
func (c *Ctx) EventDestroy(e Event) error { return check("cuEventDestroy", C.at_cuEventDestroy(e.h)) }

// EventRecord records e on s.
func (c *Ctx) EventRecord(e Event, s Stream) error {
	return check("cuEventRecord", C.at_cuEventRecord(e.h, s.h))
}

// EventSynchronize waits for e.
func (c *Ctx) EventSynchronize(e Event) error {
	return check("cuEventSynchronize", C.at_cuEventSynchronize(e.h))
}

// EventElapsed is the time in milliseconds between two recorded events.
func (c *Ctx) EventElapsed(start, end Event) (float32, error) {
	var ms C.float
	err := check("cuEventElapsedTime", C.at_cuEventElapsedTime(&ms, start.h, end.h))
	return float32(ms), err
}

// HasGraphs reports whether the driver offers stream capture.
func (c *Ctx) HasGraphs() bool { return C.at_has_graphs() != 0 }

// BeginCapture starts recording the work queued on s into a graph. The
// capture mode is thread-local: every call of this package runs on the
// device thread, and no other thread's calls are affected.
func (c *Ctx) BeginCapture(s Stream) error {
	if !c.HasGraphs() {
		return fmt.Errorf("cuda: stream capture: not offered by this driver")
	}
	const threadLocal = 1 // CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
	return check("cuStreamBeginCapture", C.at_cuStreamBeginCapture(s.h, threadLocal))
}

// Captured is a graph recorded by stream capture, not yet instantiated.
type Captured struct{ h C.CUgraph }

// EndCapture ends the capture on s. It fails (and the stream leaves
// capture mode) when work queued during the capture could not be captured.
func (c *Ctx) EndCapture(s Stream) (Captured, error) {
	var g C.CUgraph
	err := check("cuStreamEndCapture", C.at_cuStreamEndCapture(s.h, &g))
	return Captured{g}, err
}

// DestroyCaptured frees a captured graph (an instantiated one keeps its own copy).
func (c *Ctx) DestroyCaptured(g Captured) error {
	if g.h == nil {
		return nil
	}
	return check("cuGraphDestroy", C.at_cuGraphDestroy(g.h))
}

// Instantiate makes a launchable graph of g.
func (c *Ctx) Instantiate(g Captured) (Graph, error) {
	var e C.CUgraphExec
	err := check("cuGraphInstantiateWithFlags", C.at_cuGraphInstantiate(&e, g.h))
	return Graph{e}, err
}

// GraphUpdate rewrites e in place with the parameters of g, which must have
// the same topology (the same kinds of nodes in the same order: kernel
// arguments, grids and copy addresses may differ). It fails otherwise.
func (c *Ctx) GraphUpdate(e Graph, g Captured) error {
	var result C.int
	if err := check("cuGraphExecUpdate", C.at_cuGraphExecUpdate(e.h, g.h, &result)); err != nil {
		return fmt.Errorf("%w (update result %d)", err, int(result))
	}
	return nil
}

// GraphLaunch queues graph g on s.
func (c *Ctx) GraphLaunch(g Graph, s Stream) error {
	return check("cuGraphLaunch", C.at_cuGraphLaunch(g.h, s.h))
}

// GraphDestroy destroys g.
func (c *Ctx) GraphDestroy(g Graph) error {
	return check("cuGraphExecDestroy", C.at_cuGraphExecDestroy(g.h))
}
