package progress

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for a bar under test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// forced returns a bar that draws into buf on a fake clock.
func forced(buf io.Writer, total int64, label string, opt Options) (*Bar, *fakeClock) {
	opt.Force = true
	return onClock(buf, total, label, opt)
}

// onClock returns a bar on a fake clock.
func onClock(buf io.Writer, total int64, label string, opt Options) (*Bar, *fakeClock) {
	b := NewWith(buf, total, label, opt)
	c := &fakeClock{t: time.Unix(1000, 0)}
	b.now = c.now
	b.start = c.t
	return b, c
}

// Short work on a pipe writes nothing.
func TestNotTerminalShortWorkWritesNothing(t *testing.T) {
	var buf bytes.Buffer
	b := NewBytes(&buf, 100, "x")
	b.Add(10)
	b.Set(100)
	_, _ = b.Write(make([]byte, 5))
	b.Finish()
	if buf.Len() != 0 {
		t.Fatalf("wrote %q to a non-terminal", buf.String())
	}
	if b.Count() != 105 {
		t.Fatalf("count %d, want 105", b.Count())
	}

	// A regular file is not a terminal either.
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Fatal("regular file reported as a terminal")
	}
	fb := New(f, 10, "file")
	fb.Add(3)
	fb.Finish()
	if st, err := f.Stat(); err != nil || st.Size() != 0 {
		t.Fatalf("file bar wrote %d bytes (err %v)", st.Size(), err)
	}
	if IsTerminal(&buf) {
		t.Fatal("bytes.Buffer reported as a terminal")
	}
}

// Long work on a pipe writes a plain line every PlainEvery and a last one
// at Finish; Println lines go through as they are.
func TestPlainLines(t *testing.T) {
	var buf bytes.Buffer
	b, clk := onClock(&buf, 100, "fits", Options{})
	clk.advance(time.Second)
	b.Add(10)
	if buf.Len() != 0 {
		t.Fatalf("wrote %q after 1 s", buf.String())
	}
	clk.advance(5 * time.Second)
	b.Add(30)
	clk.advance(time.Second)
	b.Add(10) // within PlainEvery of the last line
	b.Println("level 0.50 done")
	clk.advance(5 * time.Second)
	b.Set(100)
	b.Finish()
	want := "fits  40% 40/100 6.7 it/s ETA 9s\nlevel 0.50 done\nfits 100% 100/100 8.3 it/s in 12s\n"
	if got := buf.String(); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
}

// After the first plain line, the next waits for 5% more of the work or a
// minute.
func TestPlainLinesThrottled(t *testing.T) {
	var buf bytes.Buffer
	b, clk := onClock(&buf, 1000, "greedy", Options{})
	for _, step := range []struct {
		after time.Duration
		add   int64
		lines int
	}{{5 * time.Second, 10, 1}, {5 * time.Second, 10, 1}, {5 * time.Second, 40, 2}, {50 * time.Second, 1, 2}, {10 * time.Second, 1, 3}} {
		clk.advance(step.after)
		b.Add(step.add)
		if got := strings.Count(buf.String(), "\n"); got != step.lines {
			t.Fatalf("after %v more and +%d: %d lines, want %d:\n%s", step.after, step.add, got, step.lines, buf.String())
		}
	}
}

// Println on a terminal writes above the bar and redraws it.
func TestPrintlnAboveBar(t *testing.T) {
	var buf bytes.Buffer
	b, clk := forced(&buf, 10, "rows", Options{Width: 4})
	clk.advance(time.Second)
	b.Add(5)
	buf.Reset()
	bar := "\rrows  50% [==  ] 5/10 5.0 it/s ETA 1s"
	b.Println("row 5")
	if got, want := buf.String(), "\rrow 5"+strings.Repeat(" ", len(bar)-len("\rrow 5"))+"\n"+bar; got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}
	var nilBar *Bar
	nilBar.Println("dropped")
}

func TestRendering(t *testing.T) {
	var buf bytes.Buffer
	b, clk := forced(&buf, 4<<20, "model.bin", Options{Bytes: true, Width: 10})
	clk.advance(2 * time.Second)
	b.Add(1 << 20)
	want := "\rmodel.bin  25% [==        ] 1.0 MiB/4.0 MiB 512.0 KiB/s ETA 6s"
	if got := buf.String(); got != want {
		t.Fatalf("got  %q\nwant %q", got, want)
	}

	// Within the interval nothing is drawn.
	buf.Reset()
	clk.advance(50 * time.Millisecond)
	b.Add(1)
	if buf.Len() != 0 {
		t.Fatalf("redrew within the interval: %q", buf.String())
	}

	buf.Reset()
	clk.advance(2 * time.Second)
	b.Set(4 << 20)
	b.Finish()
	out := buf.String()
	if !strings.HasPrefix(out, "\rmodel.bin 100% [==========] 4.0 MiB/4.0 MiB") || !strings.HasSuffix(out, " in 4s\n") {
		t.Fatalf("final line %q", out)
	}
	buf.Reset()
	b.Finish()
	b.Add(1)
	if buf.Len() != 0 {
		t.Fatalf("drew after Finish: %q", buf.String())
	}
}

func TestItemsAndUnknownTotal(t *testing.T) {
	var buf bytes.Buffer
	b, clk := forced(&buf, 0, "eval", Options{})
	clk.advance(time.Second)
	b.Add(40)
	if got, want := buf.String(), "\reval 40 40.0 it/s"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	// A shorter line blanks the tail of the longer one before it.
	buf.Reset()
	b2, clk2 := forced(&buf, 1000, "", Options{Width: 4})
	clk2.advance(time.Second)
	b2.Add(999)
	first := buf.String()
	buf.Reset()
	clk2.advance(time.Hour)
	b2.Set(1)
	second := buf.String()
	if len(second) < len(first) {
		t.Fatalf("second line %q shorter than first %q: tail not blanked", second, first)
	}
	if !strings.Contains(second, "ETA ") || !strings.HasPrefix(second, "\r  0% [    ] 1/1000") {
		t.Fatalf("second line %q", second)
	}
}

func TestConcurrentAdd(t *testing.T) {
	var buf bytes.Buffer
	sw := &syncWriter{w: &buf}
	b := NewWith(sw, 8000, "c", Options{Force: true, Interval: time.Nanosecond})
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				b.Add(1)
			}
		}()
	}
	wg.Wait()
	b.Finish()
	if b.Count() != 8000 {
		t.Fatalf("count %d, want 8000", b.Count())
	}
	if sw.overlap.Load() {
		t.Fatal("two redraws wrote at once")
	}
	out := buf.String()
	if !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("want exactly one newline at the end, got %q", out[max(0, len(out)-200):])
	}
}

// syncWriter records whether two writes ever overlapped.
type syncWriter struct {
	busy    sync.Mutex
	overlap atomic.Bool
	w       io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	if !s.busy.TryLock() {
		s.overlap.Store(true)
		return len(p), nil
	}
	defer s.busy.Unlock()
	return s.w.Write(p)
}

func TestNilBar(t *testing.T) {
	var b *Bar
	b.Add(1)
	b.Set(2)
	b.Finish()
	if n, err := b.Write([]byte("abc")); n != 3 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	if b.Count() != 0 {
		t.Fatal("nil bar counted")
	}
}

func TestFormat(t *testing.T) {
	for _, tc := range []struct {
		v    float64
		want string
	}{{0, "0 B"}, {1023, "1023 B"}, {1536, "1.5 KiB"}, {13.5 * (1 << 30), "13.5 GiB"}} {
		if got := FormatBytes(tc.v); got != tc.want {
			t.Errorf("FormatBytes(%g) = %q, want %q", tc.v, got, tc.want)
		}
	}
	for _, tc := range []struct {
		d    time.Duration
		want string
	}{{4 * time.Second, "4s"}, {125 * time.Second, "2m05s"}, {3720 * time.Second, "1h02m"}} {
		if got := formatDuration(tc.d); got != tc.want {
			t.Errorf("formatDuration(%v) = %q, want %q", tc.d, got, tc.want)
		}
	}
}

// Work done within the first Interval shows nothing on a terminal either.
func TestQuickWorkShowsNothing(t *testing.T) {
	var buf bytes.Buffer
	b, clk := forced(&buf, 10, "load", Options{})
	clk.advance(50 * time.Millisecond)
	b.Add(10)
	b.Finish()
	if buf.Len() != 0 {
		t.Fatalf("wrote %q", buf.String())
	}
}
