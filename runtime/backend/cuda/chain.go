package cuda

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/acttail/acttail-gpu/cgo/cudadrv"
	"github.com/acttail/acttail-gpu/runtime/backend"
)

var _ backend.Chainer = (*Backend)(nil)

// pickRing is how many chained picks may be unread at once.
const pickRing = 4

// chain is the state of backend.Chainer: at_pick writes each chained
// token to next (device memory), which the next step's at_embed reads, and
// an asynchronous copy takes it to slot i of host (page-locked), with
// events[i] recorded after it.
type chain struct {
	next   cudadrv.DevicePtr // int32: the last PickNext's token
	host   unsafe.Pointer    // int32 × pickRing, page-locked
	events [pickRing]cudadrv.Event
	issued int // tickets issued
	read   int // tickets read
}

// initChain allocates the chain's memory and events once.
func (b *Backend) initChain() {
	if b.chain.host != nil {
		return
	}
	p, err := b.alloc(4)
	if b.fail(err); err != nil {
		return
	}
	b.chain.next = p
	b.do(func(c *cudadrv.Ctx) error {
		var err error
		if b.chain.host, err = c.MemAllocHost(4 * pickRing); err != nil {
			return err
		}
		for i := range b.chain.events {
			if b.chain.events[i], err = c.EventCreate(); err != nil {
				return err
			}
		}
		return nil
	})
}

// PickNext implements backend.Chainer: at_pick on one row into the chain's
// device slot, then the copy of the token to its host slot and an event,
// all queued without waiting.
func (b *Backend) PickNext(logits backend.Buffer, n int, temperature, u float32) backend.Ticket {
	b.flush(nil) // the pending op goes first
	b.outsideStep("PickNext")
	lb := buf(logits)
	if n <= 0 || n > lb.n {
		panic(fmt.Sprintf("cuda: pick: %d logits in a buffer of %d", n, lb.n))
	}
	if b.chain.issued-b.chain.read >= pickRing {
		panic(fmt.Sprintf("cuda: pick: %d chained picks unread, at most %d", b.chain.issued-b.chain.read, pickRing))
	}
	b.initChain()
	b.ensure(scratchPick, 8)
	params := pickParams([]float32{temperature}, []float32{u})
	t := b.chain.issued
	b.chain.issued++
	if b.err != nil { // failed: a ticket that reads as token 0
		return backend.Ticket(t)
	}
	slot, next := t%pickRing, b.chain.next
	host, ev := unsafe.Add(b.chain.host, 4*slot), b.chain.events[slot]
	b.dev.Go(func(c *cudadrv.Ctx) error {
		if err := b.launchPick(c, next, lb.p, n, params); err != nil {
			return err
		}
		if err := c.CopyDtoHAsync(host, next, 4, b.stream); err != nil {
			return err
		}
		return c.EventRecord(ev, b.stream)
	})
	return backend.Ticket(t)
}

// EmbedPicked implements backend.Chainer: at_embed reading its token id
// from the chain's device slot (a fixed address, so a step's graph stays
// the same from token to token).
func (b *Backend) EmbedPicked(dst backend.Buffer, table backend.Weight) {
	if b.chain.issued == 0 {
		panic("cuda: EmbedPicked before any PickNext")
	}
	m := mat(table)
	if m.Trans {
		panic("cuda: embed: table was uploaded with UploadSparse")
	}
	d := need("embed", dst, m.In)
	b.launch("at_embed", embedLaunch(1, m.In), d.p, m.p, b.chain.next, m.In, int(m.DType), make([]byte, 4*inlineTokens))
}

// Picked implements backend.Chainer: it waits for the ticket's event and
// reads its host slot.
func (b *Backend) Picked(t backend.Ticket) int {
	b.outsideStep("Picked")
	if int(t) != b.chain.read || b.chain.read >= b.chain.issued {
		panic(fmt.Sprintf("cuda: picked: ticket %d read out of order (next %d of %d issued)", t, b.chain.read, b.chain.issued))
	}
	slot := b.chain.read % pickRing
	b.chain.read++
	b.do(func(c *cudadrv.Ctx) error { return c.EventSynchronize(b.chain.events[slot]) })
	if b.err != nil {
		return 0
	}
	return int(*(*int32)(unsafe.Add(b.chain.host, 4*slot)))
}

// free releases the chain's host memory and events (Close; the device
// slot is one of b.allocs).
func (c *chain) free(ctx *cudadrv.Ctx) error {
	if c.host == nil {
		return nil
	}
	errs := []error{ctx.MemFreeHost(c.host)}
	for _, e := range c.events {
		errs = append(errs, ctx.EventDestroy(e))
	}
	c.host = nil
	return errors.Join(errs...)
}
