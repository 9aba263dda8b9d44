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
		{"select", selectLaunch(5, 1), launch{grid: dim(5, 1, 0), block: dim(1024, 0, 0)}},
		{"select q/k/v", selectLaunch(2, 3), launch{grid: dim(2, 3, 0), block: dim(1024, 0, 0)}},
		// 7B q/k/v: 3 × 512 blocks; stories260K gate/up: 2 × 22.
		{"gemv q/k/v 7B", gemvLaunch(4096, 4096, 4096), launch{grid: dim(1536, 0, 0), block: dim(256, 0, 0)}},
		{"gemv gate/up 172", gemvLaunch(172, 172), launch{grid: dim(44, 0, 0), block: dim(256, 0, 0)}},
		{"stride small", strideGrid(172), launch{grid: dim(1, 0, 0), block: dim(256, 0, 0)}},
		{"stride capped", strideGrid(1 << 30), launch{grid: dim(4096, 0, 0), block: dim(256, 0, 0)}},
		{"attention", att, launch{grid: dim(8, 3, 0), block: dim(256, 0, 0)}},
		// gather: 132 SMs, 4096 bf16 outputs = 4 column tiles of 1024.
		{"gather 7B q at k=2048", gatherLaunch(1, []int{4096}, 2048, 132, 8), launch{grid: dim(4, 64, 1), block: dim(128, 0, 0)}},
		{"gather 7B down k=1101", gatherLaunch(1, []int{4096}, 1101, 132, 8), launch{grid: dim(4, 34, 1), block: dim(128, 0, 0)}},
		{"gather odd 172 scalar", gatherLaunch(2, []int{172}, 40, 132, 1), launch{grid: dim(2, 1, 2), block: dim(128, 0, 0)}},
		// 7B q/k/v at k=2048: 12 column tiles, 528 blocks wanted → 44 splits.
		{"gather q/k/v 7B", gatherLaunch(1, []int{4096, 4096, 4096}, 2048, 132, 8), launch{grid: dim(12, 44, 1), block: dim(128, 0, 0)}},
		// GQA k/v widths differ from q: 4096 + 1024 + 1024 = 4 + 1 + 1 tiles.
		{"gather GQA q/k/v", gatherLaunch(1, []int{4096, 1024, 1024}, 4096, 132, 8), launch{grid: dim(6, 88, 1), block: dim(128, 0, 0)}},
		// at_gather_thr: on one SM the gather would take 1 split of 11008
		// inputs; 6 are the fewest that keep each under 2048.
		{"gather thr splits", gatherThrLaunch(1, []int{4096}, 11008, 1, 8), launch{grid: dim(4, 6, 1), block: dim(128, 0, 0)}},
		{"gather thr 7B q/k/v", gatherThrLaunch(1, []int{4096, 4096, 4096}, 4096, 132, 8), launch{grid: dim(12, 44, 1), block: dim(128, 0, 0)}},
		{"gather tiny k", gatherLaunch(1, []int{64}, 3, 132, 4), launch{grid: dim(1, 1, 1), block: dim(128, 0, 0)}},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: got %+v, want %+v", tc.name, tc.got, tc.want)
		}
	}
}

func TestAttentionSplits(t *testing.T) {
	for _, tc := range []struct{ rows, n, splits, chunk int }{
		{1, 512, 1, 512},      // one block is enough
		{1, 513, 2, 257},      // just past one chunk
		{1, 4096, 8, 512},     // 7B at 4k context: 32 heads × 8 blocks
		{3, 1026, 3, 342},     // decode rows share the split
		{9, 5000, 1, 5000},    // prefill chunks do not split
		{1, 100000, 64, 1563}, // capped
	} {
		s, c := attentionSplits(tc.rows, tc.n)
		if s != tc.splits || c != tc.chunk {
			t.Errorf("attentionSplits(%d, %d) = %d, %d; want %d, %d", tc.rows, tc.n, s, c, tc.splits, tc.chunk)
		}
		if s*c < tc.n {
			t.Errorf("attentionSplits(%d, %d): %d × %d positions do not cover %d", tc.rows, tc.n, s, c, tc.n)
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
	p := packSite(backend.Budget{ID: 3, TopK: true, K: 2048, Threshold: 0.5})
	want := [siteBytes]byte{0x00, 0x08, 0, 0, 0, 0, 0, 0x3f, 1, 0, 0, 0, 0, 0, 0, 0}
	if p != want {
		t.Errorf("packSite = % x, want % x", p, want)
	}
	p = packSite(backend.Budget{ID: 0, K: -5, Threshold: 0.25})
	if k := int32(binary.LittleEndian.Uint32(p[0:])); k != 0 {
		t.Errorf("negative K packed as %d", k)
	}
	if th := math.Float32frombits(binary.LittleEndian.Uint32(p[4:])); th != 0.25 || p[8] != 0 {
		t.Errorf("threshold site packed as % x", p)
	}

}

// A site's slot is its place in its table; a site of no table, or one
// its table does not hold, goes to the shared last slot.
func TestTableIndex(t *testing.T) {
	tab := &backend.Budgets{Sites: []backend.Budget{{ID: 4, TopK: true, K: 3}, {ID: 5, Threshold: 0.5}, {ID: 6, TopK: true, K: 1}}}
	big := &backend.Budgets{Sites: make([]backend.Budget, maxSites)}
	for i := range big.Sites {
		big.Sites[i].ID = i
	}
	for _, tc := range []struct {
		p  backend.Proj
		i  int
		ok bool
	}{
		{backend.Proj{Budget: tab.Sites[0], Table: tab}, 0, true},
		{backend.Proj{Budget: tab.Sites[2], Table: tab}, 2, true},
		{backend.Proj{Budget: backend.Budget{ID: 5, Threshold: 0.25}, Table: tab}, 0, false}, // not the table's
		{backend.Proj{Budget: backend.Budget{ID: 7, TopK: true, K: 1}, Table: tab}, 0, false},
		{backend.Proj{Budget: backend.Budget{ID: 3}, Table: tab}, 0, false},
		{backend.Proj{Budget: tab.Sites[1]}, 0, false},               // no table
		{backend.Proj{Budget: big.Sites[1], Table: big}, 0, false}, // too big for c_sites
		{backend.Proj{Budget: backend.Budget{ID: -1, TopK: true, K: 9}}, 0, false},
	} {
		if i, ok := tableIndex(tc.p); i != tc.i || ok != tc.ok {
			t.Errorf("tableIndex(%+v) = %d, %v; want %d, %v", tc.p.Budget, i, ok, tc.i, tc.ok)
		}
	}
}

func TestPackGroup(t *testing.T) {
	g := packGroup([]proj{
		{y: 0x1000, w: 0x2000, out: 4096, slot: 7, stat: 7},
		{y: 0x3000, w: 0x4000, out: 172, slot: 2046, stat: -1, accum: true},
	})
	if len(g) != groupBytes {
		t.Fatalf("%d bytes, want %d", len(g), groupBytes)
	}
	u64 := func(o int) uint64 { return binary.LittleEndian.Uint64(g[o:]) }
	i32 := func(o int) int32 { return int32(binary.LittleEndian.Uint32(g[o:])) }
	for _, c := range []struct {
		name      string
		got, want int64
	}{
		{"p0.y", int64(u64(0)), 0x1000}, {"p0.w", int64(u64(8)), 0x2000}, {"p0.out", int64(i32(16)), 4096},
		{"p0.slot", int64(i32(20)), 7}, {"p0.stat", int64(i32(24)), 7},
		{"p1.y", int64(u64(32)), 0x3000}, {"p1.out", int64(i32(48)), 172}, {"p1.slot", int64(i32(52)), 2046},
		{"p1.stat", int64(i32(56)), -1}, {"p0.accum", int64(i32(28)), 0}, {"p1.accum", int64(i32(60)), 1},
		{"p2.y", int64(u64(64)), 0}, {"p2.out", int64(i32(80)), 0}, {"p2.stat", int64(i32(88)), -1},
		{"n", int64(i32(96)), 2},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
	if e := packGroup(nil); len(e) != groupBytes || binary.LittleEndian.Uint32(e[groupMax*projBytes:]) != 0 {
		t.Errorf("the empty group packs as %v", e)
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Errorf("a group of %d packed", groupMax+1)
			}
		}()
		packGroup(make([]proj, groupMax+1))
	}()
}

func TestFusable(t *testing.T) {
	bf := func(out, in int) *Mat { return &Mat{DType: model.BF16, Out: out, In: in, Trans: true} }
	tab := &backend.Budgets{Sites: []backend.Budget{{ID: 0}, {ID: 1}, {ID: 2}, {ID: 3}}}
	// p is a product under site id of tab; ids that tab does not hold have
	// no table, so they take the shared slot.
	p := func(m *Mat, id int) backend.Proj {
		if id >= 0 && id < len(tab.Sites) {
			return backend.Proj{W: m, Budget: tab.Sites[id], Table: tab}
		}
		return backend.Proj{W: m, Budget: backend.Budget{ID: id}}
	}
	q, k, v, o := bf(4096, 4096), bf(1024, 4096), bf(1024, 4096), bf(4096, 11008)
	f16 := &Mat{DType: model.F16, Out: 1024, In: 4096, Trans: true}
	rowMajor := &Mat{DType: model.BF16, Out: 1024, In: 4096}
	for _, tc := range []struct {
		name  string
		ps    []backend.Proj
		sites bool
		want  int
	}{
		{"q/k/v", []backend.Proj{p(q, 0), p(k, 1), p(v, 2)}, true, 3},
		{"four", []backend.Proj{p(q, 0), p(k, 1), p(v, 2), p(q, 3)}, true, 3},
		{"other input width", []backend.Proj{p(q, 0), p(o, 1)}, true, 1},
		{"other dtype", []backend.Proj{p(q, 0), p(f16, 1)}, true, 1},
		{"other layout", []backend.Proj{p(q, 0), p(rowMajor, 1)}, false, 1},
		{"shared slot", []backend.Proj{p(q, 0), p(k, -1)}, true, 1},
		{"shared slot first", []backend.Proj{p(q, maxSites+3), p(k, 1)}, true, 1},
		{"dense ignores slots", []backend.Proj{p(q, -1), p(k, -1), p(v, -1)}, false, 3},
	} {
		if got := fusable(tc.ps, tc.sites); got != tc.want {
			t.Errorf("%s: fusable = %d, want %d", tc.name, got, tc.want)
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
	if _, err := Available(Options{}); err == nil {
		t.Fatal("Available succeeded where New failed")
	}
}

func TestEmbeddedFatbin(t *testing.T) {
	// A fatbin starts with the magic 0xba55ed50.
	if len(fatbin) < 16 || binary.LittleEndian.Uint32(fatbin) != 0xba55ed50 {
		t.Fatalf("kernels/acttail.fatbin is not a fatbin (%d bytes)", len(fatbin))
	}
}
