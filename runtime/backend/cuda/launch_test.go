package cuda

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/acttail/acttail-gpu/cgo"
	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

func dim(x, y, z int) cudadrv.Dim3 { return cudadrv.Dim3{X: x, Y: y, Z: z} }

func TestLaunchGeometry(t *testing.T) {
	att, err := attentionLaunch(3, 8, 4, 8)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		got  launch
		want launch
	}{
		// stories260K: dim 64, hidden 172, 8 heads of 8, 4 kv heads.
		{"gemv hidden 172", gemvLaunch(172), launch{grid: dim(22, 0, 0), block: dim(256, 0, 0)}},
		{"gemv 11008", gemvLaunch(11008), launch{grid: dim(1376, 0, 0), block: dim(256, 0, 0)}},
		{"gemm 9 rows x 172", gemmLaunch(9, 172), launch{grid: dim(3, 1, 0), block: dim(256, 0, 0)}},
		{"gemm 512 x 4096", gemmLaunch(512, 4096), launch{grid: dim(64, 8, 0), block: dim(256, 0, 0)}},
		{"rope 3 rows 8x8", ropeLaunch(3, 8, 8), launch{grid: dim(1, 3, 0), block: dim(256, 0, 0)}},
		{"rope 32x128", ropeLaunch(1, 32, 128), launch{grid: dim(8, 1, 0), block: dim(256, 0, 0)}},
		{"embed 172", embedLaunch(2, 172), launch{grid: dim(1, 2, 0), block: dim(256, 0, 0)}},
		{"transpose 172x64", transposeLaunch(172, 64), launch{grid: dim(2, 6, 0), block: dim(32, 8, 0)}},
		{"select", selectLaunch(5), launch{grid: dim(5, 0, 0), block: dim(1024, 0, 0)}},
		{"stride small", strideGrid(172), launch{grid: dim(1, 0, 0), block: dim(256, 0, 0)}},
		{"stride capped", strideGrid(1 << 30), launch{grid: dim(4096, 0, 0), block: dim(256, 0, 0)}},
		{"attention", att, launch{grid: dim(8, 3, 0), block: dim(256, 0, 0)}},
		// gather: 132 SMs, 4096 bf16 outputs = 4 column tiles of 1024.
		{"gather 7B q at k=2048", gatherLaunch(1, 4096, 2048, 132, 8), launch{grid: dim(4, 64, 1), block: dim(128, 0, 0)}},
		{"gather 7B down k=1101", gatherLaunch(1, 4096, 1101, 132, 8), launch{grid: dim(4, 34, 1), block: dim(128, 0, 0)}},
		{"gather odd 172 scalar", gatherLaunch(2, 172, 40, 132, 1), launch{grid: dim(2, 1, 2), block: dim(128, 0, 0)}},
		{"gather tiny k", gatherLaunch(1, 64, 3, 132, 4), launch{grid: dim(1, 1, 1), block: dim(128, 0, 0)}},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, tc.got, tc.want)
		}
	}
}

func TestAttentionLimits(t *testing.T) {
	if _, err := attentionLaunch(1, 8, 4, 256); err != nil {
		t.Errorf("head_dim 256: %v", err)
	}
	if _, err := attentionLaunch(1, 8, 4, 258); err == nil {
		t.Error("head_dim 258 accepted")
	}
	if _, err := attentionLaunch(1, 8, 3, 8); err == nil {
		t.Error("8 heads over 3 kv heads accepted")
	}
}

func TestVec(t *testing.T) {
	for _, tc := range []struct {
		d     model.DType
		n     int
		ok    bool
		elems int
	}{
		{model.BF16, 4096, true, 8},
		{model.BF16, 172, false, 1},
		{model.F16, 64, true, 8},
		{model.F32, 172, true, 4},
		{model.F32, 66, false, 1},
		{model.Q8_0, 4096, false, 1},
	} {
		if got := vecOK(tc.d, tc.n); got != tc.ok {
			t.Errorf("vecOK(%s, %d) = %v", tc.d, tc.n, got)
		}
		if got := vecElems(tc.d, tc.ok); got != tc.elems {
			t.Errorf("vecElems(%s, %v) = %d, want %d", tc.d, tc.ok, got, tc.elems)
		}
	}
}

func TestSuffixAndSparseDType(t *testing.T) {
	want := map[model.DType]string{model.F32: "f32", model.F16: "f16", model.BF16: "bf16", model.Q8_0: "q8"}
	for d, s := range want {
		if got, err := suffix(d); err != nil || got != s {
			t.Errorf("suffix(%s) = %q, %v", d, got, err)
		}
	}
	if _, err := suffix(model.DType(99)); err == nil {
		t.Error("suffix accepted an unknown dtype")
	}
	if sparseDType(model.Q8_0) != model.F32 || sparseDType(model.BF16) != model.BF16 {
		t.Error("sparseDType")
	}
	// The kernels' dtype codes are model.DType values.
	if model.F32 != 0 || model.F16 != 1 || model.BF16 != 2 || model.Q8_0 != 3 {
		t.Error("model.DType order changed: update AT_F32... in cuda/common.cuh")
	}
}

func TestPackSites(t *testing.T) {
	p := packSite(backend.Site{ID: 3, TopK: true, K: 2048, Threshold: 0.5})
	want := [siteBytes]byte{0x00, 0x08, 0, 0, 0, 0, 0, 0x3f, 1, 0, 0, 0, 0, 0, 0, 0}
	if p != want {
		t.Errorf("packSite = % x, want % x", p, want)
	}
	p = packSite(backend.Site{ID: 0, K: -5, Threshold: 0.25})
	if k := int32(binary.LittleEndian.Uint32(p[0:])); k != 0 {
		t.Errorf("negative K packed as %d", k)
	}
	if th := math.Float32frombits(binary.LittleEndian.Uint32(p[4:])); th != 0.25 || p[8] != 0 {
		t.Errorf("threshold site packed as % x", p)
	}

	sites := []backend.Site{
		{ID: 0, TopK: true, K: 32},
		{ID: 6, TopK: false, Threshold: 1.5},
		{ID: maxSites + 10, TopK: true, K: 7}, // shares the last slot: not packed
		{ID: -1, TopK: true, K: 9},
	}
	table := packSites(sites)
	if len(table) != maxSites*siteBytes {
		t.Fatalf("table is %d bytes", len(table))
	}
	if k := binary.LittleEndian.Uint32(table[0:]); k != 32 || table[8] != 1 {
		t.Errorf("slot 0 = % x", table[:siteBytes])
	}
	if th := math.Float32frombits(binary.LittleEndian.Uint32(table[6*siteBytes+4:])); th != 1.5 {
		t.Errorf("slot 6 threshold = %g", th)
	}
	for i, v := range table[(maxSites-1)*siteBytes:] {
		if v != 0 {
			t.Fatalf("last slot byte %d = %d, want 0", i, v)
		}
	}
	for _, tc := range []struct{ id, slot int }{{0, 0}, {223, 223}, {maxSites - 2, maxSites - 2}, {maxSites - 1, maxSites - 1}, {1 << 20, maxSites - 1}, {-1, maxSites - 1}} {
		if got := siteSlot(tc.id); got != tc.slot {
			t.Errorf("siteSlot(%d) = %d, want %d", tc.id, got, tc.slot)
		}
	}
}

func TestNewWithoutGPU(t *testing.T) {
	b, err := New(Options{})
	if err == nil {
		b.Close()
		t.Skip("a GPU is present")
	}
	if !errors.Is(err, cudadrv.ErrNoDriver) && !errors.Is(err, cudadrv.ErrNoDevice) {
		t.Fatalf("New: %v, want ErrNoDriver or ErrNoDevice", err)
	}
	if _, err := Available(); err == nil {
		t.Fatal("Available succeeded where New failed")
	}
}

func TestEmbeddedFatbin(t *testing.T) {
	// A fatbin starts with the magic 0xba55ed50.
	if len(fatbin) < 16 || binary.LittleEndian.Uint32(fatbin) != 0xba55ed50 {
		t.Fatalf("kernels/acttail.fatbin is not a fatbin (%d bytes)", len(fatbin))
	}
}
