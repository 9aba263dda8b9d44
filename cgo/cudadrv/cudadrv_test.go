package cudadrv

import (
	"bytes"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/acttail/acttail-gpu/cuda/emu"
)

func TestPackArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []any
		want []byte
		err  string
	}{
		{"ptr", []any{DevicePtr(0x0102030405060708)}, []byte{8, 7, 6, 5, 4, 3, 2, 1}, ""},
		{"int32 and float32", []any{int32(-1), float32(1)}, []byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0, 0}, ""},
		{"int", []any{172}, []byte{172, 0, 0, 0, 0, 0, 0, 0}, ""},
		{"int64", []any{int64(-2)}, []byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ""},
		{"int overflow", []any{1 << 40}, nil, "does not fit"},
		{"unsupported", []any{"x"}, nil, "unsupported type string"},
		{"too many", make([]any, maxArgs+1), nil, "at most"},
		{"struct", []any{[]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, int32(7)}, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0}, ""},
		{"empty struct", []any{[]byte{}}, nil, "empty struct"},
		{"too large", []any{make([]byte, argBytes), 1}, nil, "bytes of kernel arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vals, offs, err := PackArgs(tc.args)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(vals) != string(tc.want) {
				t.Errorf("vals = %v, want %v", vals, tc.want)
			}
			want := 0
			for i, o := range offs {
				if o != want {
					t.Errorf("offs[%d] = %d, want %d", i, o, want)
				}
				want += 8
				if b, ok := tc.args[i].([]byte); ok {
					want = o + (len(b)+7)/8*8
				}
			}
		})
	}
}

func TestMissingLibrary(t *testing.T) {
	err := openLibrary("libacttail-no-such-driver.so.1")
	if !errors.Is(err, ErrNoDriver) {
		t.Fatalf("err = %v, want ErrNoDriver", err)
	}
}

// TestOpenWithoutGPU checks that a machine without a driver or a GPU gets
// a clean, distinguishable error rather than a crash.
func TestOpenWithoutGPU(t *testing.T) {
	d, err := Open(0)
	if err == nil {
		d.Close()
		t.Skip("a GPU is present")
	}
	if !errors.Is(err, ErrNoDriver) && !errors.Is(err, ErrNoDevice) {
		t.Fatalf("Open: %v, want ErrNoDriver or ErrNoDevice", err)
	}
	t.Logf("Open(0): %v", err)
}

func TestErrorText(t *testing.T) {
	e := &Error{Op: "cuMemAlloc_v2", Code: 2, Name: "CUDA_ERROR_OUT_OF_MEMORY", Msg: "out of memory"}
	if got, want := e.Error(), "cuda: cuMemAlloc_v2: CUDA_ERROR_OUT_OF_MEMORY (2): out of memory"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestDim3Norm(t *testing.T) {
	if got := (Dim3{X: 3}).norm(); got != (Dim3{3, 1, 1}) {
		t.Errorf("norm = %v", got)
	}
}

// gpu opens device 0 or skips the test.
func gpu(t *testing.T) *Device {
	t.Helper()
	d, err := Open(0)
	if err != nil {
		t.Skipf("needs a GPU: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Error(err)
		}
	})
	return d
}

func TestGPUMemory(t *testing.T) {
	d := gpu(t)
	t.Log(d.Info())
	src := []float32{1, 2, 3, 4, 5}
	got := make([]float32, 8)
	err := d.Do(func(c *Ctx) error {
		s, err := c.StreamCreate()
		if err != nil {
			return err
		}
		defer c.StreamDestroy(s)
		a, err := c.MemAlloc(32)
		if err != nil {
			return err
		}
		defer c.MemFree(a)
		b, err := c.MemAlloc(32)
		if err != nil {
			return err
		}
		defer c.MemFree(b)
		for _, e := range []error{
			c.Memset(b, 0, 32, s),
			c.CopyHtoD(a, unsafe.Pointer(&src[0]), 20, s),
			c.CopyDtoD(b.Add(4), a, 20, s),
		} {
			if e != nil {
				return e
			}
		}
		return c.CopyDtoH(unsafe.Pointer(&got[0]), b, 32, s)
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := []float32{0, 1, 2, 3, 4, 5, 0, 0}; string(f32bytes(got)) != string(f32bytes(want)) {
		t.Errorf("got %v, want %v", got, want)
	}
}

func f32bytes(v []float32) []byte { return unsafe.Slice((*byte)(unsafe.Pointer(&v[0])), 4*len(v)) }

// scalePTX is cuda "p[i] *= a for i < n", compiled by nvcc 11.8 for
// compute_80 (the driver JIT-compiles it).
const scalePTX = `
.version 7.8
.target sm_80
.address_size 64
	// .globl	scale
.visible .entry scale(
	.param .u64 scale_param_0,
	.param .f32 scale_param_1,
	.param .u32 scale_param_2
)
{
	.reg .pred 	%p<2>;
	.reg .f32 	%f<4>;
	.reg .b32 	%r<6>;
	.reg .b64 	%rd<5>;
	ld.param.u64 	%rd1, [scale_param_0];
	ld.param.f32 	%f1, [scale_param_1];
	ld.param.u32 	%r2, [scale_param_2];
	mov.u32 	%r3, %ctaid.x;
	mov.u32 	%r4, %ntid.x;
	mov.u32 	%r5, %tid.x;
	mad.lo.s32 	%r1, %r3, %r4, %r5;
	setp.ge.s32 	%p1, %r1, %r2;
	@%p1 bra 	$L__BB0_2;
	cvta.to.global.u64 	%rd2, %rd1;
	mul.wide.s32 	%rd3, %r1, 4;
	add.s64 	%rd4, %rd2, %rd3;
	ld.global.f32 	%f2, [%rd4];
	mul.f32 	%f3, %f2, %f1;
	st.global.f32 	[%rd4], %f3;
$L__BB0_2:
	ret;
}
`

func TestGPULaunchGraphEvents(t *testing.T) {
	d := gpu(t)
	const n = 1000
	host := make([]float32, n)
	for i := range host {
		host[i] = float32(i)
	}
	var ms float32
	err := d.Do(func(c *Ctx) error {
		m, err := c.ModuleLoadData([]byte(scalePTX))
		if err != nil {
			return err
		}
		defer c.ModuleUnload(m)
		f, err := c.Function(m, "scale")
		if err != nil {
			return err
		}
		s, err := c.StreamCreate()
		if err != nil {
			return err
		}
		defer c.StreamDestroy(s)
		p, err := c.MemAlloc(4 * n)
		if err != nil {
			return err
		}
		defer c.MemFree(p)
		if err := c.CopyHtoD(p, unsafe.Pointer(&host[0]), 4*n, s); err != nil {
			return err
		}
		e0, _ := c.EventCreate()
		e1, _ := c.EventCreate()
		defer c.EventDestroy(e0)
		defer c.EventDestroy(e1)
		c.EventRecord(e0, s)
		if err := c.Launch(f, Dim3{X: 4}, Dim3{X: 256}, 0, s, p, float32(2), n); err != nil {
			return err
		}
		c.EventRecord(e1, s)
		if err := c.EventSynchronize(e1); err != nil {
			return err
		}
		if ms, err = c.EventElapsed(e0, e1); err != nil {
			return err
		}
		if c.HasGraphs() {
			// Captured with factor 7, then updated in place to factor 3:
			// only the update's arguments may run.
			capture := func(factor float32) (Captured, error) {
				if err := c.BeginCapture(s); err != nil {
					return Captured{}, err
				}
				if err := c.Launch(f, Dim3{X: 4}, Dim3{X: 256}, 0, s, p, factor, n); err != nil {
					c.EndCapture(s)
					return Captured{}, err
				}
				return c.EndCapture(s)
			}
			g7, err := capture(7)
			if err != nil {
				return err
			}
			defer c.DestroyCaptured(g7)
			e, err := c.Instantiate(g7)
			if err != nil {
				return err
			}
			defer c.GraphDestroy(e)
			g3, err := capture(3)
			if err != nil {
				return err
			}
			defer c.DestroyCaptured(g3)
			if err := c.GraphUpdate(e, g3); err != nil {
				return err
			}
			if err := c.GraphLaunch(e, s); err != nil {
				return err
			}
		} else {
			t.Log("driver has no stream capture")
			if err := c.Launch(f, Dim3{X: 4}, Dim3{X: 256}, 0, s, p, float32(3), n); err != nil {
				return err
			}
		}
		return c.CopyDtoH(unsafe.Pointer(&host[0]), p, 4*n, s)
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range host {
		if v != float32(6*i) {
			t.Fatalf("p[%d] = %g, want %d", i, v, 6*i)
		}
	}
	if !(ms >= 0) || math.IsInf(float64(ms), 0) {
		t.Errorf("elapsed %g ms", ms)
	}
}

func TestGPUAsyncErrorReported(t *testing.T) {
	d := gpu(t)
	d.Go(func(c *Ctx) error { return errors.New("boom") })
	if err := d.Do(func(c *Ctx) error { return nil }); err == nil || err.Error() != "boom" {
		t.Fatalf("Do after failing Go: %v, want boom", err)
	}
	if err := d.Do(func(c *Ctx) error { return nil }); err != nil {
		t.Fatalf("error not cleared: %v", err)
	}
}

// TestEmulatedDriver runs this package's GPU tests on cuda/emu, the CPU
// stand-in for libcuda (built with AddressSanitizer where the compiler has
// it): the binding's calls, argument packing, events and graph capture and
// update, on every machine.
func TestEmulatedDriver(t *testing.T) {
	if emu.Active() {
		t.Skip("already running on " + emu.Env)
	}
	lib := emu.Build(t, filepath.Join("..", ".."))
	out, err := lib.Rerun([]string{BLASEnv + "=" + lib.Path}, "-test.run", "^TestGPU", "-test.v", "-test.count=1")
	for _, want := range []string{"--- PASS: TestGPULaunchGraphEvents", "--- PASS: TestGPUBLAS"} {
		if err != nil || bytes.Contains(out, []byte("AddressSanitizer")) || !bytes.Contains(out, []byte(want)) {
			t.Fatalf("GPU tests on the emulator (%s): %v\n%s", want, err, out)
		}
	}
}

// TestDryRun checks that a dry run queues nothing and that its hash tells
// apart any difference in what would have been queued.
func TestDryRun(t *testing.T) {
	c := &Ctx{}
	run := func(grid int, arg float32, dst DevicePtr) uint64 {
		c.BeginDry()
		// No driver is loaded here: a call that reached it would crash.
		if err := c.Launch(Function{Name: "k"}, Dim3{X: grid}, Dim3{X: 32}, 0, Stream{}, DevicePtr(0x1000), arg, 7); err != nil {
			t.Fatal(err)
		}
		if err := c.CopyDtoD(dst, 0x3000, 64, Stream{}); err != nil {
			t.Fatal(err)
		}
		if err := c.Memset(dst, 0, 64, Stream{}); err != nil {
			t.Fatal(err)
		}
		g := GEMM{M: grid, N: 1, K: 1, AB: R16BF, A: 0x4000, B: 0x5000, C: dst, LdA: grid, LdB: 1, LdC: grid, Alpha: arg}
		if err := c.Gemm(&BLAS{}, g); err != nil {
			t.Fatal(err)
		}
		return c.EndDry()
	}
	base := run(4, 1.5, 0x2000)
	if run(4, 1.5, 0x2000) != base {
		t.Error("the same work hashed differently")
	}
	for name, h := range map[string]uint64{"grid": run(5, 1.5, 0x2000), "argument": run(4, 2.5, 0x2000), "address": run(4, 1.5, 0x2100)} {
		if h == base {
			t.Errorf("another %s hashed the same", name)
		}
	}
	if c.dry {
		t.Error("EndDry left the dry run on")
	}
}
