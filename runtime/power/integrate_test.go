package power

import (
	"math"
	"testing"
)

func TestTrapezoid(t *testing.T) {
	for _, c := range []struct {
		name    string
		samples []sample
		joules  float64
	}{
		{"none", nil, 0},
		{"one sample", []sample{{0, 300}}, 0},
		{"constant 100 W for 2 s", []sample{{0, 100}, {0.5, 100}, {1, 100}, {2, 100}}, 200},
		// The rule is exact for a linear ramp: 0 → 200 W over 4 s is 400 J.
		{"ramp", []sample{{0, 0}, {1, 50}, {2.5, 125}, {4, 200}}, 400},
		// A step held between samples: 10 W for 1 s, then a jump to 30 W
		// seen only at t = 1.1, then 30 W to t = 2.
		{"step", []sample{{0, 10}, {1, 10}, {1.1, 30}, {2, 30}}, 10 + 0.1*20 + 0.9*30},
	} {
		var tr trapezoid
		for _, s := range c.samples {
			tr.add(s)
		}
		if math.Abs(tr.joules-c.joules) > 1e-9 {
			t.Errorf("%s: %g J, want %g", c.name, tr.joules, c.joules)
		}
		if tr.n != len(c.samples) {
			t.Errorf("%s: counted %d samples, want %d", c.name, tr.n, len(c.samples))
		}
	}
}
