package cuda

import (
	"fmt"
	"strings"
	"testing"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/model"
)

// The host-side checks run before any device call, so a Backend with no
// device exercises them: an op with zero rows is a no-op (a zero grid would
// otherwise be launched as one block), and a short buffer or a bad token
// panics with a message instead of reaching the device.
func TestHostChecks(t *testing.T) {
	var b Backend // no device: any launch would panic on the nil device
	bf := func(n int) *Buf { return &Buf{n: n} }
	m := &Mat{DType: model.BF16, Out: 172, In: 64}
	mt := &Mat{DType: model.BF16, Out: 172, In: 64, Trans: true}
	v := &Vec{n: 64}
	freqs := make([]float32, 4)

	noops := map[string]func(){
		"rmsnorm":    func() { b.RMSNorm(bf(0), bf(0), v, 0, 1e-5) },
		"matmul":     func() { b.MatMul(bf(0), m, bf(0), 0) },
		"matmul T":   func() { b.MatMul(bf(0), mt, bf(0), 0) },
		"rope":       func() { b.RoPE(bf(0), 0, 8, 8, 3, freqs) },
		"attention":  func() { b.Attention(bf(0), bf(0), bf(96), bf(96), 0, 8, 4, 8, 3) },
		"swiglu":     func() { b.SwiGLU(bf(0), bf(0), 0) },
		"add":        func() { b.Add(bf(0), bf(0), 0) },
		"copy":       func() { b.Copy(bf(4), 4, bf(4), 0, 0) },
		"embed":      func() { b.Embed(bf(0), m, nil) },
		"sparse":     func() { b.SparseMatMul(bf(0), mt, bf(0), 0, backend.Budget{ID: 3, TopK: true, K: 5}) },
		"write none": func() { b.Write(bf(4), 4, []float32{1, 2}) },
	}
	for name, fn := range noops {
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s with nothing to do: panic %v", name, r)
				}
			}()
			fn()
		}()
	}

	panics := []struct {
		name, want string
		fn         func()
	}{
		{"rmsnorm short dst", "need 192", func() { b.RMSNorm(bf(191), bf(192), v, 3, 1e-5) }},
		{"matmul short x", "need 128", func() { b.MatMul(bf(344), m, bf(127), 2) }},
		{"matmul short dst", "need 344", func() { b.MatMul(bf(343), m, bf(128), 2) }},
		{"rope short", "need 128", func() { b.RoPE(bf(127), 2, 8, 8, 0, freqs) }},
		{"rope freqs", "3 frequencies", func() { b.RoPE(bf(64), 1, 8, 8, 0, freqs[:3]) }},
		{"attention cache", "need 128", func() { b.Attention(bf(64), bf(64), bf(127), bf(128), 1, 8, 4, 8, 3) }},
		{"attention position", "position -1", func() { b.Attention(bf(64), bf(64), bf(128), bf(128), 1, 8, 4, 8, -1) }},
		{"swiglu", "need 10", func() { b.SwiGLU(bf(10), bf(9), 10) }},
		{"add", "need 10", func() { b.Add(bf(9), bf(10), 10) }},
		{"copy dst", "outside a buffer of 8", func() { b.Copy(bf(8), 5, bf(8), 0, 4) }},
		{"copy src", "outside a buffer of 8", func() { b.Copy(bf(8), 0, bf(8), -1, 4) }},
		{"copy negative", "outside", func() { b.Copy(bf(8), 0, bf(8), 0, -1) }},
		{"embed token", "token 172", func() { b.Embed(bf(128), m, []int{0, 172}) }},
		{"embed negative", "token -1", func() { b.Embed(bf(128), m, []int{-1}) }},
		{"embed short", "need 128", func() { b.Embed(bf(127), m, []int{0, 1}) }},
		{"sparse short", "need 128", func() { b.SparseMatMul(bf(344), mt, bf(100), 2, backend.Budget{TopK: true, K: 3}) }},
		{"read offset", "outside a buffer of 4", func() { b.Read(make([]float32, 1), bf(4), 5) }},
		{"write offset", "outside a buffer of 4", func() { b.Write(bf(4), -1, []float32{1}) }},
		{"pick size", "2 rows of 3 logits in a buffer of 5", func() { b.Pick(bf(5), 2, 3, []float32{0, 0}, []float32{0, 0}) }},
		{"pick params", "1 temperatures", func() { b.Pick(bf(6), 2, 3, []float32{0}, []float32{0, 0}) }},
	}
	for _, tc := range panics {
		func() {
			defer func() {
				r := recover()
				if r == nil || !strings.Contains(fmt.Sprint(r), tc.want) {
					t.Errorf("%s: panic %v, want one containing %q", tc.name, r, tc.want)
				}
			}()
			tc.fn()
		}()
	}
}

func TestCheckMatrix(t *testing.T) {
	for _, tc := range []struct {
		d     model.DType
		shape []int
		ok    bool
	}{
		{model.Q8_0, []int{32, 64}, true},
		{model.Q8_0, []int{64, 48}, false}, // 3072 values are whole blocks, the rows are not
		{model.BF16, []int{64, 172}, true},
		{model.F32, []int{0, 4}, false},
	} {
		n := model.Elems(tc.shape)
		data := make([]byte, max(tc.d.Bytes(n), 0))
		err := checkMatrix(&model.Tensor{Name: "w", DType: tc.d, Shape: tc.shape, Data: data})
		if (err == nil) != tc.ok {
			t.Errorf("%s %v: err %v, want ok=%v", tc.d, tc.shape, err, tc.ok)
		}
	}
}

// Budgets with weight-informed scores are refused with a sticky error,
// before any device call, rather than run as |x| selection.
func TestRefusesWeightInformed(t *testing.T) {
	var b Backend // no device: any launch would panic on the nil device
	mt := &Mat{DType: model.BF16, Out: 172, In: 64, Trans: true}
	site := backend.Budget{ID: 0, TopK: true, K: 5, Scale: make([]float32, 64)}
	b.SparseMatMul(&Buf{n: 172}, mt, &Buf{n: 64}, 1, site)
	if err := b.Err(); err == nil || !strings.Contains(err.Error(), "weight-informed selection is not on CUDA yet") {
		t.Fatalf("err %v", err)
	}
}

// Tables with weight-informed sites are refused when they are made
// (backend.BudgetsChecker); others pass.
func TestCheckBudgets(t *testing.T) {
	var b Backend
	ok := &backend.Budgets{Sites: []backend.Budget{{ID: 0, TopK: true, K: 3}}}
	wina := &backend.Budgets{Sites: []backend.Budget{{ID: 0, TopK: true, K: 3, Scale: []float32{1, 2}}}}
	if err := b.CheckBudgets(ok); err != nil {
		t.Fatal(err)
	}
	if err := b.CheckBudgets(wina); err == nil || !strings.Contains(err.Error(), "not on CUDA yet") {
		t.Fatalf("wina table: %v", err)
	}
}
