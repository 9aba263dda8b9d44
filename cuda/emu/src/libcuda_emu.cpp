// libcuda_emu.cpp: a CPU stand-in for libcuda.so.1 that runs the kernels of
// cuda/ (compiled here as C++ through emu.h), so that the CUDA backend and
// its GPU tests run on a machine without a GPU. cgo/cudadrv loads it in
// place of the driver when ACTTAIL_LIBCUDA names it:
//
//   g++ -std=c++17 -O2 -fPIC -shared -Icuda/emu/src/include -o libcuda-emu.so cuda/emu/src/libcuda_emu.cpp
//   ACTTAIL_LIBCUDA=$PWD/libcuda-emu.so go test ./runtime/backend/cuda -run GPU
//
// (package emu, in the folder above, does both for the tests.) It
// implements the driver entry points cgo/cudadrv/drv.c resolves, by their
// ABI names: device memory is host memory, every stream runs synchronously
// in call order, the module is the kernels compiled in (the fatbin image is
// ignored), and stream capture records launches, device copies and memsets
// into a graph that cuGraphLaunch replays and cuGraphExecUpdate rewrites,
// with the driver's rules: host copies and synchronization inside a capture
// invalidate it, an update needs the same nodes in the same order.
//
// It also answers for the slice of libcublas that cgo/cudadrv uses
// (cublasCreate, SetStream, SetWorkspace, GemmEx, ...), so that
// ACTTAIL_LIBCUBLAS can name this library too: a GEMM is a host node on the
// stream, computed in float from F32, F16 or BF16 inputs with cuBLAS's
// column-major conventions, its arguments checked as cuBLAS does and every
// matrix bounds-checked against its allocation.
//
// Checks the GPU would not make: every copy and memset must lie inside one
// allocation, a block may not exceed 1024 threads, and a block whose
// threads wait at different barriers is reported (deadlock) and aborts.
// Every other block runs its threads in reverse order, so that most
// missing barriers change a result.
#include "emu.h"

#include "../../acttail.cu"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

// ---------------------------------------------------------------- fibers

namespace emu {

dim3 block_idx, block_dim, grid_dim;

namespace {

const size_t kStack = 256 << 10;  // bytes of stack a thread
const int kMaxThreads = 1024;

// A warp's barrier: count of live lanes arrived, gen the barriers passed.
// Barrier gen publishes into set gen & 1 (emu::publish).
struct Warp {
  int live = 0, count = 0;
  unsigned gen = 0;
  uint64_t slots[2][32];
  unsigned lanes[2];  // the lanes that published into each set
  // open lets the waiting lanes go. Every lane has now left the barrier
  // before (it published here), so the set that barrier used is free.
  void open() {
    count = 0;
    gen++;
    lanes[gen & 1] = 0;
  }
};

struct Fiber {
  void *sp = nullptr;
  dim3 tid;
  unsigned lane = 0, warp = 0;
  bool done = false;
  char *stack = nullptr;
  // A waiting fiber waits for *wait_on to move past wait_gen; the
  // scheduler skips it until then.
  const unsigned *wait_on = nullptr;
  unsigned wait_gen = 0;
};

struct Block {
  Fiber fibers[kMaxThreads];
  Warp warps[kMaxThreads / 32];
  int n = 0, live = 0, count = 0;
  unsigned gen = 0;
  std::function<void()> body;
  void *sched_sp = nullptr;
  Fiber *cur = nullptr;
  // The round in progress: the threads run in index order (reverse: from
  // the last), pos the one running, ran whether any did.
  bool reverse = false, ran = false;
  int pos = -1;
};

Block blk;

}  // namespace
}  // namespace emu

#if defined(__x86_64__)
// emu_swap saves the callee-saved registers and the stack pointer of the
// running context in *save and resumes the one whose stack pointer is load.
extern "C" void emu_swap(void **save, void *load);
asm(R"(
  .text
  .globl emu_swap
  .hidden emu_swap
  .type emu_swap, @function
emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_swap, .-emu_swap
)");
#else
#error "cuda/emu: the fiber switch is written for x86-64"
#endif

namespace emu {
namespace {

// next_sp makes the next thread of the round that can run the running one
// and returns its stack, or the scheduler's at the end of the round. A
// thread switches to the next one directly, not through the scheduler:
// half the switches, and each returns where the branch predictor expects.
EMU_SCHED void *next_sp() {
  for (int k = blk.pos + 1; k < blk.n; k++) {
    Fiber &f = blk.fibers[blk.reverse ? blk.n - 1 - k : k];
    if (f.done || (f.wait_on && *f.wait_on == f.wait_gen)) continue;
    f.wait_on = nullptr;
    blk.pos = k;
    blk.cur = &f;
    blk.ran = true;
    return f.sp;
  }
  return blk.sched_sp;
}

[[noreturn]] EMU_SCHED void fiber_main() {
  Fiber *f = blk.cur;
  blk.body();
  f->done = true;
  blk.live--;
  Warp &w = blk.warps[f->warp];
  w.live--;
  // A barrier that waited only for this thread opens.
  if (blk.count > 0 && blk.count == blk.live) blk.count = 0, blk.gen++;
  if (w.count > 0 && w.count == w.live) w.open();
  emu_swap(&f->sp, next_sp());
  std::abort();  // a finished fiber is never resumed
}

// wait parks the running fiber until *gen moves past g.
EMU_SCHED void wait(const unsigned *gen, unsigned g) {
  Fiber *f = blk.cur;
  f->wait_on = gen;
  f->wait_gen = g;
  emu_swap(&f->sp, next_sp());
}

// run executes body for every thread of one block.
EMU_SCHED void run_block(unsigned threads, const std::function<void()> &body) {
  blk.n = (int)threads;
  blk.live = (int)threads;
  blk.count = 0;
  blk.body = body;
  const int warps = (int)(threads + 31) / 32;
  for (int w = 0; w < warps; w++) {
    Warp &wp = blk.warps[w];
    wp.live = std::min(32, (int)threads - 32 * w);
    wp.count = 0;
    wp.lanes[0] = wp.lanes[1] = 0;
  }
  for (unsigned i = 0; i < threads; i++) {
    Fiber &f = blk.fibers[i];
    if (!f.stack) f.stack = static_cast<char *>(std::malloc(kStack));
    f.tid.x = i % block_dim.x;
    f.tid.y = i / block_dim.x % block_dim.y;
    f.tid.z = i / (block_dim.x * block_dim.y);
    f.lane = i % 32;
    f.warp = i / 32;
    f.done = false;
    f.wait_on = nullptr;
    // The stack emu_swap pops: six registers, then fiber_main as the return
    // address; fiber_main starts with rsp = 8 mod 16, as after a call.
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStack - 64) & ~uintptr_t(15);
    void **sp = reinterpret_cast<void **>(top);
    for (int r = 0; r < 6; r++) sp[r] = nullptr;
    sp[6] = reinterpret_cast<void *>(&fiber_main);
    f.sp = sp;
  }
  // Every other block runs its threads in reverse order between barriers,
  // so that a read of shared memory another thread writes without a
  // barrier in between sees the write in one order and not in the other.
  static unsigned long blocks = 0;
  blk.reverse = blocks++ & 1;
  while (blk.live > 0) {
    blk.pos = -1;
    blk.ran = false;
    void *sp = next_sp();
    if (sp != blk.sched_sp) emu_swap(&blk.sched_sp, sp);  // back at the end of the round
    if (!blk.ran) {
      std::fprintf(stderr, "cuda/emu: deadlock in block (%u,%u,%u): threads wait at different barriers\n",
                   block_idx.x, block_idx.y, block_idx.z);
      std::abort();
    }
  }
  blk.cur = nullptr;
}

}  // namespace

const dim3 &thread_idx() { return blk.cur->tid; }
unsigned lane() { return blk.cur->lane; }

EMU_SCHED void syncthreads() {
  const unsigned g = blk.gen;
  if (++blk.count == blk.live) {
    blk.count = 0;
    blk.gen++;
    return;
  }
  wait(&blk.gen, g);
}

EMU_SCHED Slots publish(uint64_t v) {
  Warp &w = blk.warps[blk.cur->warp];
  const unsigned g = w.gen, set = g & 1, lane = blk.cur->lane;
  w.slots[set][lane] = v;
  w.lanes[set] |= 1u << lane;
  if (++w.count == w.live)
    w.open();
  else
    wait(&w.gen, g);
  return Slots{w.slots[set], w.lanes[set]};
}

}  // namespace emu

// ---------------------------------------------------------------- kernels

// scale is the binding's own test kernel (scalePTX in
// cgo/cudadrv/cudadrv_test.go), which this module answers for as the
// driver would for that PTX.
extern "C" void scale(float *p, float a, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) p[i] *= a;
}

namespace {

// A launcher reads a kernel's arguments from cuLaunchKernel's array of
// pointers, as the driver does, and knows their sizes for graph nodes.
struct Kernel {
  const char *name;
  std::function<void(void **)> call;
  std::vector<size_t> sizes;
};

template <class... A, size_t... I>
void invoke(void (*f)(A...), void **p, std::index_sequence<I...>) {
  f(*static_cast<typename std::remove_reference<A>::type *>(p[I])...);
}

template <class... A>
Kernel kernel(const char *name, void (*f)(A...)) {
  return Kernel{name, [f](void **p) { invoke(f, p, std::index_sequence_for<A...>{}); }, {sizeof(A)...}};
}

#define AT_KERNEL(name) kernel(#name, name),
const std::vector<Kernel> kernels = {
    AT_KERNEL(scale) AT_KERNEL(at_rmsnorm) AT_KERNEL(at_rope) AT_KERNEL(at_rope_cache) AT_KERNEL(at_zero) AT_KERNEL(at_swiglu) AT_KERNEL(at_add) AT_KERNEL(at_embed)
        AT_KERNEL(at_transpose) AT_KERNEL(at_narrow) AT_KERNEL(at_select) AT_KERNEL(at_attention) AT_KERNEL(at_attention_combine) AT_KERNEL(at_pick)
            AT_KERNEL(at_gemv_f32) AT_KERNEL(at_gemv_f16) AT_KERNEL(at_gemv_bf16)
                AT_KERNEL(at_gemv_q8) AT_KERNEL(at_gemm_f32) AT_KERNEL(at_gemm_f16) AT_KERNEL(at_gemm_bf16)
                    AT_KERNEL(at_gemm_q8) AT_KERNEL(at_gather_f32) AT_KERNEL(at_gather_f16)
                        AT_KERNEL(at_gather_bf16) AT_KERNEL(at_gather_thr_f32) AT_KERNEL(at_gather_thr_f16)
                            AT_KERNEL(at_gather_thr_bf16)};

// ---------------------------------------------------------------- driver

typedef int CUresult;
enum : CUresult {
  OK = 0,
  INVALID_VALUE = 1,
  NOT_INITIALIZED = 3,
  INVALID_HANDLE = 400,
  NOT_FOUND = 500,
  LAUNCH_OUT_OF_RESOURCES = 701,
  CAPTURE_UNSUPPORTED = 900,
  CAPTURE_INVALIDATED = 901,
  CAPTURE_UNMATCHED = 903,
  EXEC_UPDATE_FAILURE = 910,
};

std::recursive_mutex mu;  // the driver is thread-safe; cgo/cudadrv calls from one thread
bool inited = false;
// skipWork (ACTTAIL_EMU_SKIP_KERNELS=1, read by cuInit) accepts kernel
// launches and cuBLAS calls, with every check, but does not run them:
// the host side of a run, timed without the emulated device work.
bool skipWork = false;
std::map<uintptr_t, size_t> allocs;  // start -> bytes
size_t allocated = 0;
const size_t kTotal = size_t(16) << 30;

// inside reports whether [p, p+n) lies in one allocation.
bool inside(uint64_t p, size_t n) {
  auto it = allocs.upper_bound(p);
  if (it == allocs.begin()) return false;
  --it;
  return p >= it->first && p + n <= it->first + it->second;
}

struct Node {
  enum Kind { LAUNCH, COPY, SET, HOST } kind;
  const Kernel *k = nullptr;
  std::function<void()> host;  // HOST: work of a library on the stream (the cuBLAS stand-in)
  dim3 grid, block;
  std::vector<char> args;  // each argument at offs[i]
  std::vector<size_t> offs;
  uint64_t dst = 0, src = 0;
  size_t n = 0;
  unsigned char v = 0;
};

struct Graph {
  std::vector<Node> nodes;
};

struct Stream {
  bool capturing = false, invalid = false;
  Graph *graph = nullptr;
};

CUresult run(const Node &nd) {
  switch (nd.kind) {
    case Node::COPY:
      std::memmove(reinterpret_cast<void *>(nd.dst), reinterpret_cast<void *>(nd.src), nd.n);
      return OK;
    case Node::SET:
      std::memset(reinterpret_cast<void *>(nd.dst), nd.v, nd.n);
      return OK;
    case Node::HOST:
      if (!skipWork) nd.host();
      return OK;
    case Node::LAUNCH:
      if (skipWork) return OK;
      break;
  }
  std::vector<void *> p(nd.offs.size());
  std::vector<char> args = nd.args;  // a kernel may not change its arguments, but C++ lets it
  for (size_t i = 0; i < p.size(); i++) p[i] = args.data() + nd.offs[i];
  emu::grid_dim = nd.grid;
  emu::block_dim = nd.block;
  const unsigned threads = nd.block.x * nd.block.y * nd.block.z;
  for (unsigned z = 0; z < nd.grid.z; z++)
    for (unsigned y = 0; y < nd.grid.y; y++)
      for (unsigned x = 0; x < nd.grid.x; x++) {
        emu::block_idx.x = x, emu::block_idx.y = y, emu::block_idx.z = z;
        emu::run_block(threads, [&] { nd.k->call(p.data()); });
      }
  return OK;
}

// submit runs nd now, or records it when s is capturing.
CUresult submit(void *stream, Node nd) {
  Stream *s = static_cast<Stream *>(stream);
  if (s && s->capturing) {
    s->graph->nodes.push_back(std::move(nd));
    return OK;
  }
  return run(nd);
}

// hostOp is a host copy or a wait on s: not capturable.
CUresult hostOp(void *stream) {
  Stream *s = static_cast<Stream *>(stream);
  if (s && s->capturing) {
    s->invalid = true;
    return CAPTURE_UNSUPPORTED;
  }
  return OK;
}

// A fake address for handles that need none of their own.
char ctxTag, moduleTag;

}  // namespace

extern "C" {

#define GUARD std::lock_guard<std::recursive_mutex> lock(mu)

CUresult cuInit(unsigned) {
  GUARD;
  inited = true;
  const char *skip = std::getenv("ACTTAIL_EMU_SKIP_KERNELS");
  skipWork = skip && std::strcmp(skip, "1") == 0;
  return OK;
}
CUresult cuDriverGetVersion(int *v) {
  *v = 12000;
  return OK;
}
CUresult cuDeviceGetCount(int *n) {
  *n = inited ? 1 : 0;
  return inited ? OK : NOT_INITIALIZED;
}
CUresult cuDeviceGet(int *d, int ordinal) {
  if (ordinal != 0) return INVALID_VALUE;
  *d = 0;
  return OK;
}
CUresult cuDeviceGetName(char *name, int len, int) {
  std::snprintf(name, len, "acttail CPU emulator");
  return OK;
}
CUresult cuDeviceTotalMem_v2(size_t *bytes, int) {
  *bytes = kTotal;
  return OK;
}
CUresult cuDeviceGetAttribute(int *v, int attr, int) {
  switch (attr) {
    case 16: *v = 4; return OK;   // multiprocessors
    case 75: *v = 9; return OK;   // compute capability major
    case 76: *v = 0; return OK;   // minor
    default: *v = 0; return OK;
  }
}
CUresult cuDevicePrimaryCtxRetain(void **c, int) {
  *c = &ctxTag;
  return OK;
}
CUresult cuDevicePrimaryCtxRelease_v2(int) { return OK; }
CUresult cuCtxSetCurrent(void *) { return OK; }
CUresult cuCtxSynchronize(void) { return OK; }

CUresult cuStreamCreate(void **s, unsigned) {
  *s = new Stream;
  return OK;
}
CUresult cuStreamDestroy_v2(void *s) {
  delete static_cast<Stream *>(s);
  return OK;
}
CUresult cuStreamSynchronize(void *s) {
  GUARD;
  return hostOp(s);
}

CUresult cuMemAlloc_v2(uint64_t *p, size_t bytes) {
  GUARD;
  if (allocated + bytes > kTotal) return 2;  // out of memory
  // 256-byte aligned like the driver's, but exactly bytes long, so that
  // AddressSanitizer (TestEmulatedGPU) sees any access past the end.
  void *m = nullptr;
  if (posix_memalign(&m, 256, bytes ? bytes : 1) != 0) return 2;
  *p = reinterpret_cast<uint64_t>(m);
  allocs[*p] = bytes;
  allocated += bytes;
  return OK;
}
CUresult cuMemFree_v2(uint64_t p) {
  GUARD;
  auto it = allocs.find(p);
  if (it == allocs.end()) return INVALID_VALUE;
  allocated -= it->second;
  allocs.erase(it);
  std::free(reinterpret_cast<void *>(p));
  return OK;
}
CUresult cuMemAllocHost_v2(void **p, size_t bytes) {
  *p = std::malloc(bytes ? bytes : 1);
  return *p ? OK : 2;
}
CUresult cuMemFreeHost(void *p) {
  std::free(p);
  return OK;
}
CUresult cuMemGetInfo_v2(size_t *free, size_t *total) {
  GUARD;
  *free = kTotal - allocated;
  *total = kTotal;
  return OK;
}

CUresult cuMemcpyHtoDAsync_v2(uint64_t dst, const void *src, size_t n, void *s) {
  GUARD;
  if (CUresult r = hostOp(s)) return r;
  if (!inside(dst, n)) return INVALID_VALUE;
  std::memcpy(reinterpret_cast<void *>(dst), src, n);
  return OK;
}
CUresult cuMemcpyDtoHAsync_v2(void *dst, uint64_t src, size_t n, void *s) {
  GUARD;
  if (CUresult r = hostOp(s)) return r;
  if (!inside(src, n)) return INVALID_VALUE;
  std::memcpy(dst, reinterpret_cast<void *>(src), n);
  return OK;
}
CUresult cuMemcpyDtoDAsync_v2(uint64_t dst, uint64_t src, size_t n, void *s) {
  GUARD;
  if (!inside(dst, n) || !inside(src, n)) return INVALID_VALUE;
  Node nd{Node::COPY};
  nd.dst = dst, nd.src = src, nd.n = n;
  return submit(s, std::move(nd));
}
CUresult cuMemcpyHtoD_v2(uint64_t dst, const void *src, size_t n) { return cuMemcpyHtoDAsync_v2(dst, src, n, nullptr); }
CUresult cuMemcpyDtoH_v2(void *dst, uint64_t src, size_t n) { return cuMemcpyDtoHAsync_v2(dst, src, n, nullptr); }
CUresult cuMemcpyDtoD_v2(uint64_t dst, uint64_t src, size_t n) { return cuMemcpyDtoDAsync_v2(dst, src, n, nullptr); }
CUresult cuMemsetD8Async(uint64_t p, unsigned char v, size_t n, void *s) {
  GUARD;
  if (!inside(p, n)) return INVALID_VALUE;
  Node nd{Node::SET};
  nd.dst = p, nd.n = n, nd.v = v;
  return submit(s, std::move(nd));
}
CUresult cuMemsetD8_v2(uint64_t p, unsigned char v, size_t n) { return cuMemsetD8Async(p, v, n, nullptr); }

CUresult cuModuleLoadData(void **m, const void *) {
  *m = &moduleTag;
  return OK;
}
CUresult cuModuleUnload(void *) { return OK; }
CUresult cuModuleGetFunction(void **f, void *, const char *name) {
  for (const Kernel &k : kernels)
    if (std::strcmp(k.name, name) == 0) {
      *f = const_cast<Kernel *>(&k);
      return OK;
    }
  return NOT_FOUND;
}
CUresult cuModuleGetGlobal_v2(uint64_t *p, size_t *bytes, void *, const char *name) {
  GUARD;
  if (std::strcmp(name, "c_sites") != 0) return NOT_FOUND;
  *p = reinterpret_cast<uint64_t>(&c_sites[0]);
  *bytes = sizeof c_sites;
  allocs[*p] = sizeof c_sites;  // copies into it pass the bounds check
  return OK;
}
CUresult cuFuncSetAttribute(void *, int, int) { return OK; }

CUresult cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                        unsigned shmem, void *s, void **params, void **) {
  GUARD;
  const Kernel *k = static_cast<const Kernel *>(f);
  if (!k) return INVALID_HANDLE;
  if (bx * by * bz > 1024 || bx * by * bz == 0 || gx == 0 || gy == 0 || gz == 0 || gy > 65535 || gz > 65535)
    return INVALID_VALUE;
  if (shmem > 0) return LAUNCH_OUT_OF_RESOURCES;  // no kernel here uses dynamic shared memory
  Node nd{Node::LAUNCH};
  nd.k = k;
  nd.grid.x = gx, nd.grid.y = gy, nd.grid.z = gz;
  nd.block.x = bx, nd.block.y = by, nd.block.z = bz;
  size_t off = 0;
  for (size_t sz : k->sizes) {
    off = (off + 7) / 8 * 8;
    nd.offs.push_back(off);
    off += sz;
  }
  nd.args.resize(off);
  for (size_t i = 0; i < k->sizes.size(); i++) std::memcpy(nd.args.data() + nd.offs[i], params[i], k->sizes[i]);
  return submit(s, std::move(nd));
}

struct Event {
  std::chrono::steady_clock::time_point t;
};
CUresult cuEventCreate(void **e, unsigned) {
  *e = new Event;
  return OK;
}
CUresult cuEventDestroy_v2(void *e) {
  delete static_cast<Event *>(e);
  return OK;
}
CUresult cuEventRecord(void *e, void *s) {
  GUARD;
  if (CUresult r = hostOp(s)) return r;
  static_cast<Event *>(e)->t = std::chrono::steady_clock::now();
  return OK;
}
CUresult cuEventSynchronize(void *) { return OK; }
CUresult cuEventElapsedTime_v2(float *ms, void *a, void *b) {
  *ms = std::chrono::duration<float, std::milli>(static_cast<Event *>(b)->t - static_cast<Event *>(a)->t).count();
  return OK;
}

CUresult cuGetErrorName(CUresult r, const char **s) {
  switch (r) {
    case OK: *s = "CUDA_SUCCESS"; break;
    case INVALID_VALUE: *s = "CUDA_ERROR_INVALID_VALUE"; break;
    case 2: *s = "CUDA_ERROR_OUT_OF_MEMORY"; break;
    case NOT_INITIALIZED: *s = "CUDA_ERROR_NOT_INITIALIZED"; break;
    case INVALID_HANDLE: *s = "CUDA_ERROR_INVALID_HANDLE"; break;
    case NOT_FOUND: *s = "CUDA_ERROR_NOT_FOUND"; break;
    case LAUNCH_OUT_OF_RESOURCES: *s = "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES"; break;
    case CAPTURE_UNSUPPORTED: *s = "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"; break;
    case CAPTURE_INVALIDATED: *s = "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED"; break;
    case CAPTURE_UNMATCHED: *s = "CUDA_ERROR_STREAM_CAPTURE_UNMATCHED"; break;
    case EXEC_UPDATE_FAILURE: *s = "CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE"; break;
    default: *s = "CUDA_ERROR_UNKNOWN"; return INVALID_VALUE;
  }
  return OK;
}
CUresult cuGetErrorString(CUresult r, const char **s) {
  const char *name;
  cuGetErrorName(r, &name);
  *s = name;
  return OK;
}

CUresult cuStreamBeginCapture_v2(void *stream, int) {
  GUARD;
  Stream *s = static_cast<Stream *>(stream);
  if (!s || s->capturing) return INVALID_VALUE;
  s->capturing = true;
  s->invalid = false;
  s->graph = new Graph;
  return OK;
}
CUresult cuStreamEndCapture(void *stream, void **g) {
  GUARD;
  Stream *s = static_cast<Stream *>(stream);
  if (!s || !s->capturing) return CAPTURE_UNMATCHED;
  s->capturing = false;
  if (s->invalid) {
    delete s->graph;
    s->graph = nullptr;
    *g = nullptr;
    return CAPTURE_INVALIDATED;
  }
  *g = s->graph;
  s->graph = nullptr;
  return OK;
}
CUresult cuGraphInstantiateWithFlags(void **e, void *g, unsigned long long) {
  if (!g) return INVALID_VALUE;
  *e = new Graph(*static_cast<Graph *>(g));
  return OK;
}
CUresult cuGraphLaunch(void *e, void *stream) {
  GUARD;
  Stream *s = static_cast<Stream *>(stream);
  if (s && s->capturing) {
    s->invalid = true;
    return CAPTURE_UNSUPPORTED;
  }
  for (const Node &nd : static_cast<Graph *>(e)->nodes)
    if (CUresult r = run(nd)) return r;
  return OK;
}
CUresult cuGraphExecDestroy(void *e) {
  delete static_cast<Graph *>(e);
  return OK;
}
CUresult cuGraphDestroy(void *g) {
  delete static_cast<Graph *>(g);
  return OK;
}

struct UpdateInfo {
  int result;
  void *errorNode, *errorFromNode;
};
CUresult cuGraphExecUpdate_v2(void *e, void *g, UpdateInfo *info) {
  Graph *exec = static_cast<Graph *>(e), *from = static_cast<Graph *>(g);
  info->result = 0;
  bool same = exec->nodes.size() == from->nodes.size();
  for (size_t i = 0; same && i < exec->nodes.size(); i++)
    same = exec->nodes[i].kind == from->nodes[i].kind && exec->nodes[i].k == from->nodes[i].k;
  if (!same) {
    info->result = 2;  // CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED (or the function changed)
    return EXEC_UPDATE_FAILURE;
  }
  exec->nodes = from->nodes;
  return OK;
}

}  // extern "C"

// ---------------------------------------------------------------- cuBLAS

namespace {

typedef int cublasStatus_t;
enum : cublasStatus_t { BLAS_OK = 0, BLAS_NOT_INITIALIZED = 1, BLAS_INVALID_VALUE = 7, BLAS_NOT_SUPPORTED = 15 };

struct BlasHandle {
  void *stream = nullptr;
  uint64_t workspace = 0;
};

// elem reads element i of a matrix of cudaDataType t (0 F32, 2 F16, 14 BF16).
float elem(uint64_t p, size_t i, int t) {
  if (t == 0) return reinterpret_cast<const float *>(p)[i];
  const uint16_t h = reinterpret_cast<const uint16_t *>(p)[i];
  return t == 2 ? at_f16(h) : at_bf16(h);  // the kernels' decoders (common.cuh)
}

// fits reports whether a column-major rows x cols matrix with leading
// dimension ld of size-byte elements lies in one allocation.
bool fits(uint64_t p, int rows, int cols, int ld, size_t size) {
  return inside(p, ((size_t)ld * (cols - 1) + rows) * size);
}

}  // namespace

extern "C" {

cublasStatus_t cublasCreate_v2(void **h) {
  GUARD;
  if (!inited) return BLAS_NOT_INITIALIZED;
  *h = new BlasHandle;
  return BLAS_OK;
}
cublasStatus_t cublasDestroy_v2(void *h) {
  delete static_cast<BlasHandle *>(h);
  return BLAS_OK;
}
cublasStatus_t cublasGetVersion_v2(void *, int *v) {
  *v = 0;  // not a cuBLAS release
  return BLAS_OK;
}
cublasStatus_t cublasSetStream_v2(void *h, void *s) {
  static_cast<BlasHandle *>(h)->stream = s;
  return BLAS_OK;
}
cublasStatus_t cublasSetWorkspace_v2(void *h, void *p, size_t bytes) {
  GUARD;
  if (bytes && !inside(reinterpret_cast<uint64_t>(p), bytes)) return BLAS_INVALID_VALUE;
  static_cast<BlasHandle *>(h)->workspace = reinterpret_cast<uint64_t>(p);
  return BLAS_OK;
}
const char *cublasGetStatusString(cublasStatus_t s) {
  switch (s) {
    case BLAS_OK: return "CUBLAS_STATUS_SUCCESS";
    case BLAS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case BLAS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case BLAS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    default: return "CUBLAS_STATUS_UNKNOWN";
  }
}

// cublasGemmEx: C = alpha op(A) op(B) + beta C, column-major; op(A) m x k,
// op(B) k x n. Host scalars (the default pointer mode), C in F32, compute
// CUBLAS_COMPUTE_32F (68) or its pedantic form, A and B of one type.
cublasStatus_t cublasGemmEx(void *handle, int transa, int transb, int m, int n, int k, const void *alpha,
                            const void *A, int atype, int lda, const void *B, int btype, int ldb, const void *beta,
                            void *C, int ctype, int ldc, int compute, int) {
  GUARD;
  BlasHandle *h = static_cast<BlasHandle *>(handle);
  if (!h) return BLAS_NOT_INITIALIZED;
  if (m < 0 || n < 0 || k < 0 || (transa != 0 && transa != 1) || (transb != 0 && transb != 1)) return BLAS_INVALID_VALUE;
  const int rowsA = transa ? k : m, colsA = transa ? m : k, rowsB = transb ? n : k, colsB = transb ? k : n;
  if (lda < std::max(1, rowsA) || ldb < std::max(1, rowsB) || ldc < std::max(1, m)) return BLAS_INVALID_VALUE;
  if (atype != btype || (atype != 0 && atype != 2 && atype != 14) || ctype != 0 || (compute != 68 && compute != 69))
    return BLAS_NOT_SUPPORTED;
  if (m == 0 || n == 0) return BLAS_OK;
  const size_t esize = atype == 0 ? 4 : 2;
  const uint64_t a = reinterpret_cast<uint64_t>(A), b = reinterpret_cast<uint64_t>(B), c = reinterpret_cast<uint64_t>(C);
  if ((k > 0 && (!fits(a, rowsA, colsA, lda, esize) || !fits(b, rowsB, colsB, ldb, esize))) || !fits(c, m, n, ldc, 4)) {
    std::fprintf(stderr, "cublas-emu: cublasGemmEx m=%d n=%d k=%d: a matrix lies outside its allocation\n", m, n, k);
    return BLAS_INVALID_VALUE;
  }
  const float al = *static_cast<const float *>(alpha), be = *static_cast<const float *>(beta);
  Node nd{Node::HOST};
  nd.host = [=] {
    float *cm = reinterpret_cast<float *>(c);
    for (int j = 0; j < n; j++)
      for (int i = 0; i < m; i++) {
        float acc = 0.f;
        for (int l = 0; l < k; l++) {
          const size_t ai = transa ? (size_t)i * lda + l : (size_t)l * lda + i;
          const size_t bi = transb ? (size_t)l * ldb + j : (size_t)j * ldb + l;
          acc += elem(a, ai, atype) * elem(b, bi, btype);
        }
        float &out = cm[(size_t)j * ldc + i];
        out = al * acc + (be == 0.f ? 0.f : be * out);  // beta = 0: C is not read (may hold NaN)
      }
  };
  return submit(h->stream, std::move(nd)) == OK ? BLAS_OK : BLAS_INVALID_VALUE;
}

}  // extern "C"
