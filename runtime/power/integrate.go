package power

// sample is one power reading taken at a time since the start of a run.
type sample struct {
	t     float64 // seconds since Start
	watts float64
}

// trapezoid integrates power over time with the trapezoid rule as samples
// arrive, so a long run keeps no sample history. Samples must come in time
// order. The zero value has seen no sample.
type trapezoid struct {
	last   sample
	n      int     // samples added
	joules float64 // integral from the first sample to last
}

// add extends the integral to s.
func (tr *trapezoid) add(s sample) {
	if tr.n > 0 {
		tr.joules += (s.t - tr.last.t) * (s.watts + tr.last.watts) / 2
	}
	tr.last = s
	tr.n++
}
