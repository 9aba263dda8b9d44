// Package progress reports long work: downloads, model loading, heavy-tail
// fits, calibration, the greedy search, sweep rows, evaluation, conversion.
//
// On a terminal (an *os.File whose mode has os.ModeCharDevice) a Bar is one
// line with a bar, the rate and an ETA, redrawn in place with a carriage
// return at most every 100 ms (work done within the first 100 ms shows
// nothing). On a pipe, a file or a CI log it writes plain
// lines instead: one 5 s in, then one each 5% of the work (at most every
// 5 s, at least every minute), and a last one at Finish; work shorter than
// 5 s writes nothing, so captured output stays clean.
// Println writes a line of its own above the bar (a finished sweep row, a
// greedy level). Add, Set, Write and Println are safe to call from several
// goroutines at once.
//
// All methods of a nil *Bar are no-ops, so code that reports progress can
// take an optional bar without checking for nil.
package progress

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultInterval is the least time between two redraws on a terminal.
const DefaultInterval = 100 * time.Millisecond

// DefaultPlainEvery is the least time between two plain lines, and how
// long work runs before it writes any.
const DefaultPlainEvery = 5 * time.Second

// defaultWidth is the number of cells of the bar itself.
const defaultWidth = 30

// Options tunes a Bar. The zero value counts items and draws only on a
// terminal.
type Options struct {
	// Bytes formats counts and rates in binary units (KiB, MiB/s) instead
	// of plain item counts.
	Bytes bool
	// Force draws as on a terminal even when the writer is not one (tests,
	// or a caller that knows better).
	Force bool
	// Interval is the least time between redraws on a terminal; 0 means
	// DefaultInterval.
	Interval time.Duration
	// PlainEvery is the least time between plain lines; 0 means
	// DefaultPlainEvery.
	PlainEvery time.Duration
	// Width is the number of cells in the bar; 0 means 30.
	Width int
}

// Bar is a progress bar. Create one with New, NewBytes or NewWith.
type Bar struct {
	w        io.Writer
	total    atomic.Int64
	label    string
	opt      Options
	mode     mode
	now      func() time.Time // injectable clock for tests
	start    time.Time
	n        atomic.Int64
	lastDraw atomic.Int64 // nanoseconds since start of the last redraw
	finished atomic.Bool

	mu      sync.Mutex // serialises writes to w
	lastLen int        // length of the previous line, to blank its tail
	lines   int        // plain lines written
	lastN   int64      // the count at the last plain line
}

// mode is how a Bar shows itself.
type mode int

const (
	silent   mode = iota // no writer: only count
	terminal             // redraw one line in place
	plain                // a line now and then
)

// New returns a bar counting items up to total (total ≤ 0: unknown, so no
// percentage or ETA is shown).
func New(w io.Writer, total int64, label string) *Bar {
	return NewWith(w, total, label, Options{})
}

// NewBytes returns a bar counting bytes up to total.
func NewBytes(w io.Writer, total int64, label string) *Bar {
	return NewWith(w, total, label, Options{Bytes: true})
}

// NewWith returns a bar with explicit options.
func NewWith(w io.Writer, total int64, label string, opt Options) *Bar {
	if opt.Interval <= 0 {
		opt.Interval = DefaultInterval
	}
	if opt.Width <= 0 {
		opt.Width = defaultWidth
	}
	if opt.PlainEvery <= 0 {
		opt.PlainEvery = DefaultPlainEvery
	}
	b := &Bar{w: w, label: label, opt: opt, now: time.Now}
	b.total.Store(total)
	switch {
	case w == nil || w == io.Discard:
		b.mode = silent
	case opt.Force || IsTerminal(w):
		b.mode = terminal
	default:
		b.mode = plain
	}
	b.start = b.now()
	return b
}

// IsTerminal reports whether w is a character device such as a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || f == nil {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// Add counts n more units and redraws if the last redraw is old enough.
func (b *Bar) Add(n int64) {
	if b == nil {
		return
	}
	b.n.Add(n)
	b.maybeDraw()
}

// Set sets the count to n and redraws if the last redraw is old enough.
func (b *Bar) Set(n int64) {
	if b == nil {
		return
	}
	b.n.Store(n)
	b.maybeDraw()
}

// SetTotal sets the count at which the work is done, for work that learns
// its size after the bar is made (≤ 0: unknown).
func (b *Bar) SetTotal(n int64) {
	if b == nil {
		return
	}
	b.total.Store(n)
}

// Write counts len(p) units, so a Bar can sit in an io.MultiWriter or an
// io.TeeReader beside an io.Copy. It never fails.
func (b *Bar) Write(p []byte) (int, error) {
	b.Add(int64(len(p)))
	return len(p), nil
}

// Count is the current count.
func (b *Bar) Count() int64 {
	if b == nil {
		return 0
	}
	return b.n.Load()
}

// Finish draws the final state and ends the line, unless the work was too
// short to show (under Interval on a terminal, PlainEvery on a pipe, with
// nothing drawn). Later calls, and Adds after it, draw nothing.
func (b *Bar) Finish() {
	if b == nil || !b.finished.CompareAndSwap(false, true) || b.mode == silent {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	el := b.now().Sub(b.start)
	switch {
	case b.mode == plain && b.lines == 0 && el < b.opt.PlainEvery:
		return
	case b.mode == terminal && b.lastDraw.Load() == 0 && el < b.opt.Interval:
		return
	}
	b.render(el, "\n")
}

// Println writes line on a line of its own: on a terminal above the bar,
// which is redrawn below it. A nil Bar, or one without a writer, drops it.
func (b *Bar) Println(line string) {
	if b == nil || b.mode == silent {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.mode == plain {
		_, _ = io.WriteString(b.w, line+"\n")
		return
	}
	pad := ""
	if d := b.lastLen - len(line); d > 0 {
		pad = strings.Repeat(" ", d)
	}
	_, _ = io.WriteString(b.w, "\r"+line+pad+"\n")
	b.lastLen = 0
	if !b.finished.Load() && b.lastDraw.Load() != 0 {
		b.render(b.now().Sub(b.start), "")
	}
}

// maybeDraw redraws when Interval has passed since the last redraw (on a
// pipe, see plainDue); of several goroutines that get here at once, only
// the one that wins the compare-and-swap draws.
func (b *Bar) maybeDraw() {
	if b.mode == silent || b.finished.Load() {
		return
	}
	el := b.now().Sub(b.start)
	last := b.lastDraw.Load()
	if b.mode == plain {
		if el-time.Duration(last) < b.opt.PlainEvery {
			return
		}
		b.mu.Lock()
		defer b.mu.Unlock()
		if !b.finished.Load() && b.plainDue(el) {
			b.lastDraw.Store(int64(max(el, 1)))
			b.lastN = b.n.Load()
			b.render(el, "\n")
		}
		return
	}
	if el-time.Duration(last) < b.opt.Interval {
		return // the first redraw too waits an Interval: work done sooner shows nothing
	}
	if !b.lastDraw.CompareAndSwap(last, int64(max(el, 1))) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished.Load() {
		return
	}
	b.render(el, "")
}

// plainDue reports whether a plain line is due at el: PlainEvery after the
// last one, if the work has since moved on by 5% of its total or a minute
// has passed (so a long run logs a line or two a minute, not twelve). Done
// work is left to Finish's line. b.mu must be held.
func (b *Bar) plainDue(el time.Duration) bool {
	since := el - time.Duration(b.lastDraw.Load())
	n, total := b.n.Load(), b.total.Load()
	switch {
	case since < b.opt.PlainEvery:
		return false
	case n >= total && total > 0:
		return false
	case total <= 0 || b.lines == 0:
		return true
	}
	return float64(n-b.lastN) >= 0.05*float64(total) || since >= 12*b.opt.PlainEvery
}

// render writes one line; b.mu must be held. Write errors are ignored: a
// progress bar must not fail the work it reports on.
func (b *Bar) render(elapsed time.Duration, end string) {
	line := b.line(b.n.Load(), elapsed)
	if b.mode == plain {
		b.lines++
		_, _ = io.WriteString(b.w, line+end)
		return
	}
	pad := ""
	if d := b.lastLen - len(line); d > 0 {
		pad = strings.Repeat(" ", d)
	}
	b.lastLen = len(line)
	_, _ = io.WriteString(b.w, "\r"+line+pad+end)
}

// line formats the bar text: label, percent, bar (on a terminal),
// count/total, rate, ETA.
func (b *Bar) line(n int64, elapsed time.Duration) string {
	var s strings.Builder
	if b.label != "" {
		s.WriteString(b.label)
		s.WriteString(" ")
	}
	rate := 0.0
	if sec := elapsed.Seconds(); sec > 0 {
		rate = float64(n) / sec
	}
	total := b.total.Load()
	if total > 0 {
		frac := min(max(float64(n)/float64(total), 0), 1)
		fmt.Fprintf(&s, "%3.0f%% ", 100*frac)
		if b.mode == terminal {
			fill := int(frac * float64(b.opt.Width))
			fmt.Fprintf(&s, "[%s%s] ", strings.Repeat("=", fill), strings.Repeat(" ", b.opt.Width-fill))
		}
		fmt.Fprintf(&s, "%s/%s", b.amount(n), b.amount(total))
	} else {
		s.WriteString(b.amount(n))
	}
	if b.opt.Bytes {
		fmt.Fprintf(&s, " %s/s", FormatBytes(rate))
	} else {
		fmt.Fprintf(&s, " %.1f it/s", rate)
	}
	switch {
	case b.finished.Load():
		fmt.Fprintf(&s, " in %s", formatDuration(elapsed))
	case total > 0 && rate > 0 && n < total:
		eta := time.Duration(float64(total-n) / rate * float64(time.Second))
		fmt.Fprintf(&s, " ETA %s", formatDuration(eta))
	}
	return s.String()
}

// amount formats a count in the bar's units.
func (b *Bar) amount(n int64) string {
	if b.opt.Bytes {
		return FormatBytes(float64(n))
	}
	return fmt.Sprintf("%d", n)
}

// FormatBytes writes a byte count with a binary unit: "512 B", "1.5 KiB",
// "12.0 MiB", "13.5 GiB".
func FormatBytes(v float64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB"}
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if i == 0 {
		return fmt.Sprintf("%.0f B", v)
	}
	return fmt.Sprintf("%.1f %s", v, units[i])
}

// formatDuration rounds to whole seconds: "4s", "2m05s", "1h02m".
func formatDuration(d time.Duration) string {
	s := int64(d.Round(time.Second) / time.Second)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%dh%02dm", s/3600, s/60%60)
}

// barKey is the context key of NewContext's Bar.
type barKey struct{}

// NewContext returns ctx carrying b, for work whose functions take no bar
// of their own (calib.Run adds the tokens it has run to it).
func NewContext(ctx context.Context, b *Bar) context.Context {
	return context.WithValue(ctx, barKey{}, b)
}

// FromContext returns the Bar of NewContext, or nil (whose methods do
// nothing).
func FromContext(ctx context.Context) *Bar {
	b, _ := ctx.Value(barKey{}).(*Bar)
	return b
}
