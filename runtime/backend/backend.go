// Package backend defines the operations the Llama graph is written
// against. The engine package composes them into a forward pass; each
// backend (cpu, cuda) implements them over its own memory.
//
// Conventions: activations are float32, row-major, one row per token. A
// Buffer holds rows × width values; ops take the row count explicitly so one
// buffer sized for the longest prefill chunk serves every step. Weights are
// uploaded once from model tensors and never change.
package backend

import "github.com/acttail/acttail-gpu/runtime/model"

// Buffer is backend memory holding float32 activations.
type Buffer interface {
	// Len is the capacity in float32 values.
	Len() int
}

// Weight is a model tensor uploaded to the backend.
type Weight interface {
	// Shape is the tensor's shape as in the model ((out, in) for matrices).
	Shape() []int
}

// Backend is one compute device. Methods are called from one goroutine at a
// time; an op may use many threads (or a device) internally, but its results
// are visible to the next op when it returns (or, for asynchronous devices,
// to the next op on the same backend in program order).
//
// Deferred fusion: a backend may hold back an RMSNorm or a SwiGLU and
// complete it inside the next op that reads its output (the CUDA backend
// normalizes rows inside the top-k select of the group that follows, or
// clears the group's outputs in the norm's launch). Every other op, and
// every Read, Write or SparseStats, first completes what is held back, so
// program order is kept; the caller sees no difference but speed.
//
// Errors: an op's misuse (a short buffer, a weight of the wrong layout)
// panics, since no input reaches it unchecked. A device error is sticky,
// as in bufio.Writer: the backend keeps the first one as Err, and every op
// after it does nothing (its results are undefined). The engine checks
// Err at the end of each pass and returns it.
type Backend interface {
	// Name is "cpu" or "cuda".
	Name() string
	// Describe is one line about the device (for logs and `devices`).
	Describe() string

	// Upload makes a tensor usable by ops. Matrices keep their dtype;
	// vectors (norm weights) are widened to float32.
	Upload(t *model.Tensor) (Weight, error)
	// Alloc returns a zeroed buffer of n float32 values.
	Alloc(n int) Buffer
	// View is values off … off+n of b as a buffer of their own, sharing
	// b's memory (a batch step's rows of one plan, say).
	View(b Buffer, off, n int) Buffer
	// Free releases a buffer from Alloc once the work queued so far is
	// done; neither it nor its views may be used after. (The CPU leaves
	// it to the garbage collector.)
	Free(b Buffer)
	// Write copies src into b starting at value offset off.
	Write(b Buffer, off int, src []float32)
	// Read copies len(dst) values from b starting at value offset off.
	Read(dst []float32, b Buffer, off int)
	// Close releases the backend's memory.
	Close() error
	// Err is the first device error since the backend was made, if any
	// (always nil on the CPU). It does not wait for queued work: an error
	// of an asynchronous op appears after the next op that waits (Read).
	Err() error

	// Embed writes row tokens[r] of table (vocab, dim) into row r of dst.
	Embed(dst Buffer, table Weight, tokens []int)
	// RMSNorm: dst[r] = x[r] / sqrt(mean(x[r]²) + eps) ⊙ w, for rows of width len(w).
	RMSNorm(dst, x Buffer, w Weight, rows int, eps float32)
	// MatMul: dst[r] = W · x[r] for a (out, in) weight, rows rows.
	MatMul(dst Buffer, w Weight, x Buffer, rows int)
	// MatMuls runs MatMul(p.Dst, p.W, x, rows) for every p of a group that
	// shares its input (q/k/v, gate/up); a backend may fuse the group into
	// one pass. The destinations must not overlap x or each other.
	MatMuls(x Buffer, rows int, ps []Proj)
	// RoPECache is one attention layer's step before attention: q (rows ×
	// heads × headDim) and k (rows × kvHeads × headDim) rotated in place,
	// each adjacent pair (2i, 2i+1) of every head of row r by the angle
	// (pos0 + r) · freqs[i]; then k and v (rows × kvHeads × headDim)
	// copied into the caches kc and vc at position pos0.
	RoPECache(q, k, v, kc, vc Buffer, rows, heads, kvHeads, headDim, pos0 int, freqs []float32)
	// Copy copies n values from src at offset srcOff to dst at dstOff.
	Copy(dst Buffer, dstOff int, src Buffer, srcOff, n int)
	// Attention computes causal grouped-query attention for rows queries at
	// positions pos0 … pos0+rows-1 against cache positions 0 … pos0+r, writing
	// rows of nHeads × headDim into out.
	Attention(out, q, kc, vc Buffer, rows, nHeads, nKVHeads, headDim, pos0 int)
	// SwiGLU: gate[i] = silu(gate[i]) · up[i] for n values.
	SwiGLU(gate, up Buffer, n int)

	// UploadSparse uploads a (out, in) projection for SparseMatMuls, stored
	// input-channel-major so that dropping input j skips one contiguous row.
	UploadSparse(t *model.Tensor) (Weight, error)
	// SparseMatMuls: p.Dst[r] = p.W · mask(x[r]) for every p of a group
	// that shares its input, weights from UploadSparse, where mask keeps
	// the inputs p.Budget selects, reading only their weight rows; a site
	// that keeps every input is a dense product. Each p has its own
	// budget; a backend may select and gather the whole group in one pass.
	SparseMatMuls(x Buffer, rows int, ps []Proj)
	// SparseStats returns, per site ID, the inputs kept and the inputs seen
	// by SparseMatMuls since the last call, and resets the counts.
	SparseStats() (kept, seen []int64)
}

// Memory is a backend that can say how much memory it has left for new
// buffers (a server sizes its caches by it).
type Memory interface {
	FreeMemory() (int64, error)
}

// Stepper is a backend that can submit the ops of one decode step as a
// unit (the CUDA backend: a CUDA graph). The engine calls BeginStep before
// a step's first op and EndStep after its last; between them it queues
// ops only (no Read, Write or SparseStats).
type Stepper interface {
	BeginStep()
	EndStep()
}

// Picker is a backend that picks the next token where the logits are (the
// CUDA backend: at_pick), so that a decode step reads back token ids
// instead of rows of logits. Like ops, it panics on a device error.
type Picker interface {
	// Pick chooses a token from each of rows rows of n logits (row r at
	// offset r·n): where temps[r] is 0, the index of the largest value, the
	// lowest on ties (as sample.Greedy); else a draw from
	// softmax(row / temps[r]) by inverse CDF in index order at us[r],
	// uniform in [0, 1) (as sample.Sampler without truncation).
	Pick(logits Buffer, rows, n int, temps, us []float32) []int
}

// BudgetsChecker is a Backend that cannot run every table of budgets.
// engine.Model.SiteBudgets asks it when a table is made, so that a table
// it cannot run is refused there, with an error, and not by a sticky
// device error at its first product (which would stop every sequence
// sharing the backend).
type BudgetsChecker interface {
	CheckBudgets(t *Budgets) error
}

// Chainer is a Picker whose pick can stay on the device and feed the next
// decode step, so that the step is queued before the host has the token:
// the device goes from one step to the next without waiting for the host,
// which reads each token one step behind.
type Chainer interface {
	Picker
	// PickNext queues a pick from the first n values of logits (as Pick
	// with one row) and returns at once. Its token stays on the device for
	// EmbedPicked, and reaches the host at Picked(t). Tickets are read in
	// the order they were issued, with at most 4 unread.
	PickNext(logits Buffer, n int, temperature, u float32) Ticket
	// EmbedPicked is Embed of the last PickNext's token, as one row.
	EmbedPicked(dst Buffer, table Weight)
	// Picked waits for the token of t.
	Picked(t Ticket) int
}

// Ticket is a token picked by Chainer.PickNext, not yet read.
type Ticket int

// Proj is one product of a group that shares its input.
type Proj struct {
	Dst    Buffer
	W      Weight
	Budget Budget // SparseMatMuls only
	// Table is the table Budget comes from (Budget =
	// Table.Sites[Budget.ID]), nil for a budget of no table (a dense one,
	// say). A backend may keep
	// per-table state keyed by it, as the CUDA backend keeps its device
	// copy of the table.
	Table *Budgets
	// Add makes the product add to Dst (Dst += W·x: the residual add fused
	// into the projection) instead of overwriting it.
	Add bool
}

// Budget is one projection's activation budget at run time.
type Budget struct {
	// ID indexes the plan's sites (layer·7 + projection), for statistics;
	// a negative ID is not counted.
	ID int
	// TopK: keep exactly K inputs of largest |x| per token. Otherwise keep
	// the inputs with |x| > Threshold.
	TopK      bool
	K         int
	Threshold float32
	// Scale, when set (one value per input), makes the selection
	// weight-informed: input j is ranked, and compared with Threshold, by
	// |x_j|·Scale[j] (the weight's column norm, plan.SelectWINA) instead
	// of |x_j|. The products still use x itself. Shared, never written.
	Scale []float32
}

// Budgets is one run's activation budgets: a Budget per plan site, in plan
// order (layer·7 + projection), each with its index as ID. A table is made
// once (engine.Model.Budgets) and never changed after, so a backend may
// cache what it derives from one by the pointer's identity; a run that
// wants other budgets makes another table. A sequence carries the table
// it runs under (engine.State.Budgets), so one model serves any number of
// plans, each row of a batch under its own.
type Budgets struct {
	Sites []Budget
}

// CountedAt is a copy of the table whose sites count under IDs base,
// base+1, … in SparseStats, so that tables running in one step are
// counted apart.
func (b *Budgets) CountedAt(base int) *Budgets {
	t := &Budgets{Sites: append([]Budget(nil), b.Sites...)}
	for i := range t.Sites {
		t.Sites[i].ID = base + i
	}
	return t
}

// Mode is the table's masking mode, "topk" or "threshold" (that of its
// first site; engine.Model.Budgets makes every site the same).
func (b *Budgets) Mode() string {
	if len(b.Sites) == 0 {
		return ""
	}
	return b.Sites[0].ModeName()
}

// Dense reports whether the site keeps every one of din inputs.
func (s Budget) Dense(din int) bool {
	if s.TopK {
		return s.K >= din
	}
	return s.Threshold <= 0
}

// Equal reports whether s and o are the same budget: equal fields, and
// the same Scale (by identity: the sites of a table share their scale
// vectors, which are never written).
func (s Budget) Equal(o Budget) bool {
	sameScale := len(s.Scale) == len(o.Scale) && (len(s.Scale) == 0 || &s.Scale[0] == &o.Scale[0])
	return s.ID == o.ID && s.TopK == o.TopK && s.K == o.K && s.Threshold == o.Threshold && sameScale
}

// ModeName is "topk" or "threshold".
func (s Budget) ModeName() string {
	if s.TopK {
		return "topk"
	}
	return "threshold"
}
