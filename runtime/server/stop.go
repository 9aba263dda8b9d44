package server

import "strings"

// stopFilter turns decoded pieces into the text a client may see: it cuts
// the text before the first stop string and holds back any tail that could
// be the start of one, so streamed text never has to be taken back.
//
// No suffix of the text already passed on is a proper prefix of a stop
// string (such a suffix would have been held back), so a stop string can
// only occur within held text: searching that is enough.
type stopFilter struct {
	stops []string
	held  string
}

// push adds piece and returns the text now safe to pass on, and whether a
// stop string ended the text (push must not be called again).
func (f *stopFilter) push(piece string) (out string, stopped bool) {
	f.held += piece
	if len(f.stops) == 0 {
		out, f.held = f.held, ""
		return out, false
	}
	cut := -1
	for _, s := range f.stops {
		if i := strings.Index(f.held, s); i >= 0 && (cut < 0 || i < cut) {
			cut = i
		}
	}
	if cut >= 0 {
		out, f.held = f.held[:cut], ""
		return out, true
	}
	keep := 0
	for _, s := range f.stops {
		for k := min(len(s)-1, len(f.held)); k > keep; k-- {
			if strings.HasSuffix(f.held, s[:k]) {
				keep = k
				break
			}
		}
	}
	n := len(f.held) - keep
	out, f.held = f.held[:n], f.held[n:]
	return out, false
}

// end returns the text still held when generation ends without a stop
// string.
func (f *stopFilter) end() string {
	out := f.held
	f.held = ""
	return out
}
