// Package hostpick is a backend.Picker that reads the logits and picks on
// the host, over any backend: the reference the device pickers are held
// to, and a test double that counts what the engine and the server ask of
// a picker.
package hostpick

import (
	"fmt"
	"math"
	"slices"

	"github.com/acttail/acttail-gpu/runtime/backend"
	"github.com/acttail/acttail-gpu/runtime/sample"
)

// Backend wraps a backend with Pick and the backend.Chainer calls done on
// the host. It counts the rows picked and the full logits rows (Vocab
// values) read by anyone else.
type Backend struct {
	backend.Backend
	Vocab int
	Picks int // rows picked
	Rows  int // Read calls of exactly Vocab values

	last    int   // the last PickNext's token
	unread  []int // PickNext's tokens not yet Picked, oldest first
	tickets int   // issued
}

var _ backend.Chainer = (*Backend)(nil)

// Read implements backend.Backend, counting logits rows.
func (h *Backend) Read(dst []float32, b backend.Buffer, off int) {
	if len(dst) == h.Vocab {
		h.Rows++
	}
	h.Backend.Read(dst, b, off)
}

// Pick implements backend.Picker on the host.
func (h *Backend) Pick(b backend.Buffer, rows, n int, temps, us []float32) []int {
	ids := make([]int, rows)
	v := make([]float32, n)
	for r := range rows {
		h.Picks++
		h.Backend.Read(v, b, r*n)
		ids[r] = Pick(v, temps[r], us[r])
	}
	return ids
}

// Pick is one row of backend.Picker's Pick: the greedy index at
// temperature 0, else the inverse-CDF draw at u (float64 sums).
func Pick(v []float32, temperature, u float32) int {
	if temperature == 0 {
		return sample.Greedy(v)
	}
	maxv := slices.Max(v)
	p := make([]float64, len(v))
	var sum float64
	for i, x := range v {
		p[i] = math.Exp(float64(x-maxv) / float64(temperature))
		sum += p[i]
	}
	r := float64(u) * sum
	for i, q := range p {
		if r -= q; r < 0 {
			return i
		}
	}
	return len(v) - 1
}

// PickNext implements backend.Chainer: it picks at once and keeps the
// token for EmbedPicked and Picked.
func (h *Backend) PickNext(b backend.Buffer, n int, temperature, u float32) backend.Ticket {
	h.last = h.Pick(b, 1, n, []float32{temperature}, []float32{u})[0]
	h.unread = append(h.unread, h.last)
	h.tickets++
	return backend.Ticket(h.tickets - 1)
}

// EmbedPicked implements backend.Chainer.
func (h *Backend) EmbedPicked(dst backend.Buffer, table backend.Weight) {
	h.Backend.Embed(dst, table, []int{h.last})
}

// Picked implements backend.Chainer; tickets must come in order.
func (h *Backend) Picked(t backend.Ticket) int {
	if want := h.tickets - len(h.unread); int(t) != want {
		panic(fmt.Sprintf("hostpick: ticket %d read, want %d", t, want))
	}
	tok := h.unread[0]
	h.unread = h.unread[1:]
	return tok
}
