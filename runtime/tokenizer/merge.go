package tokenizer

// pairKey is two adjacent tokens, left then right.
type pairKey struct{ left, right int32 }

// pairMerge is what a pair becomes: the token, and the priority of the merge
// (higher merges first: an SPM score, or minus a BPE merge rank).
type pairMerge struct {
	prio   float64
	result int32
}

// symbol is one node of the linked list of tokens being merged; its index
// is the position of its first initial symbol, so list order is index order.
type symbol struct {
	id         int32 // -1 once merged into its left neighbour
	prev, next int32 // -1 at the ends
}

// candidate is a pair that was adjacent when pushed; it is stale if either
// side has changed since.
type candidate struct {
	prio            float64
	left, right     int32
	leftID, rightID int32
	result          int32
}

// merger holds the buffers of one encode call.
type merger struct {
	syms []symbol
	heap []candidate
}

func (m *merger) reset() { m.syms = m.syms[:0] }

func (m *merger) add(id int32) { m.syms = append(m.syms, symbol{id: id}) }

// merge applies pairs to the symbols added since reset, best pair first and
// leftmost among equals, until no adjacent pair is in the table, and
// appends the resulting ids to dst.
func (m *merger) merge(pairs map[pairKey]pairMerge, dst []int) []int {
	syms := m.syms
	n := int32(len(syms))
	if n == 0 {
		return dst
	}
	for i := range n {
		syms[i].prev, syms[i].next = i-1, i+1
	}
	syms[n-1].next = -1
	m.heap = m.heap[:0]
	for i := int32(0); i+1 < n; i++ {
		m.push(pairs, i, i+1)
	}
	for len(m.heap) > 0 {
		c := m.pop()
		l, r := &syms[c.left], &syms[c.right]
		if l.id != c.leftID || r.id != c.rightID || l.next != c.right {
			continue
		}
		l.id, r.id = c.result, -1
		l.next = r.next
		if l.next >= 0 {
			syms[l.next].prev = c.left
		}
		if l.prev >= 0 {
			m.push(pairs, l.prev, c.left)
		}
		if l.next >= 0 {
			m.push(pairs, c.left, l.next)
		}
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		dst = append(dst, int(syms[i].id))
	}
	return dst
}

// push adds the pair (left, right) if the table can merge it.
func (m *merger) push(pairs map[pairKey]pairMerge, left, right int32) {
	a, b := m.syms[left].id, m.syms[right].id
	pm, ok := pairs[pairKey{a, b}]
	if !ok {
		return
	}
	h := append(m.heap, candidate{pm.prio, left, right, a, b, pm.result})
	for i := len(h) - 1; i > 0; {
		p := (i - 1) / 2
		if !before(&h[i], &h[p]) {
			break
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
	m.heap = h
}

// pop removes and returns the best candidate.
func (m *merger) pop() candidate {
	h := m.heap
	top := h[0]
	last := len(h) - 1
	h[0] = h[last]
	h = h[:last]
	for i := 0; ; {
		c := 2*i + 1
		if c >= last {
			break
		}
		if c+1 < last && before(&h[c+1], &h[c]) {
			c++
		}
		if !before(&h[c], &h[i]) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	m.heap = h
	return top
}

// before orders the heap: higher priority first, then the leftmost pair.
func before(a, b *candidate) bool {
	if a.prio != b.prio {
		return a.prio > b.prio
	}
	return a.left < b.left
}
