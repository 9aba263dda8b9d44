package tokenizer

import (
	"unicode"
	"unicode/utf8"
)

// The byte-level BPE pre-tokenizers split text with a regular expression
// that uses a lookahead Go's regexp lacks, so each is written out as a
// scanner: given the start i of a chunk (i < len(s)), it returns the end.
// Alternatives are tried in the pattern's order with its backtracking,
// \s is Unicode White_Space, \p{L} and \p{N} are Go's unicode tables, and an
// invalid UTF-8 byte is one U+FFFD, as Go's regexp reads it.

func isLetter(r rune) bool { return unicode.IsLetter(r) }
func isNumber(r rune) bool { return unicode.IsNumber(r) }
func isSpace(r rune) bool  { return unicode.IsSpace(r) }

// isOther is [^\s\p{L}\p{N}].
func isOther(r rune) bool { return !isSpace(r) && !isLetter(r) && !isNumber(r) }

func isNewline(r rune) bool { return r == '\r' || r == '\n' }

// runAt returns the rune at s[i], or -1 at the end of s.
func runAt(s string, i int) (rune, int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// span returns the end of the run of runes from i that satisfy in, taking
// at most max runes (max < 0: no limit).
func span(s string, i int, in func(rune) bool, max int) int {
	for ; max != 0; max-- {
		r, n := runAt(s, i)
		if n == 0 || !in(r) {
			break
		}
		i += n
	}
	return i
}

// contraction matches 's|'t|'re|'ve|'m|'ll|'d at s[i] (the quote), with
// (?i) case folding when fold is set, and returns its end or -1.
func contraction(s string, i int, fold bool) int {
	eq := func(r, c rune) bool { return r == c || fold && foldEq(r, c) }
	r1, n1 := runAt(s, i+1)
	switch {
	case eq(r1, 's'), eq(r1, 't'), eq(r1, 'm'), eq(r1, 'd'):
		return i + 1 + n1
	}
	r2, n2 := runAt(s, i+1+n1)
	switch {
	case eq(r1, 'r') && eq(r2, 'e'), eq(r1, 'v') && eq(r2, 'e'), eq(r1, 'l') && eq(r2, 'l'):
		return i + 1 + n1 + n2
	}
	return -1
}

// foldEq reports whether r and c are equal under Unicode simple case
// folding (so 's' matches 'S' and 'ſ').
func foldEq(r, c rune) bool {
	for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
		if f == r {
			return true
		}
	}
	return r == c
}

// spaceEnd handles the pattern's tail for a chunk starting with
// whitespace: \s+(?!\S)|\s+ . A run of spaces before a non-space leaves its
// last space to the next chunk; a run at the end of the text is taken whole.
func spaceEnd(s string, i int) int {
	e, last := i, i
	for {
		r, n := runAt(s, e)
		if n == 0 || !isSpace(r) {
			break
		}
		last = e
		e += n
	}
	if e < len(s) && last > i {
		return last
	}
	return e
}

// llama3Chunk scans one chunk of Llama-3's pattern:
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//	 ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
func llama3Chunk(s string, i int) int {
	r, n := runAt(s, i)
	if r == '\'' {
		if e := contraction(s, i, true); e >= 0 {
			return e
		}
	}
	if isLetter(r) {
		return span(s, i+n, isLetter, -1)
	}
	if !isNewline(r) && !isNumber(r) {
		if r2, n2 := runAt(s, i+n); n2 > 0 && isLetter(r2) {
			return span(s, i+n+n2, isLetter, -1)
		}
	}
	if isNumber(r) {
		return span(s, i+n, isNumber, 2)
	}
	j := i
	if r == ' ' {
		j += n
	}
	if rj, nj := runAt(s, j); nj > 0 && isOther(rj) {
		e := span(s, j+nj, isOther, -1)
		return span(s, e, isNewline, -1)
	}
	// r is whitespace. \s*[\r\n]+ ends after the run's last newline.
	e, nl := i, -1
	for {
		r, n := runAt(s, e)
		if n == 0 || !isSpace(r) {
			break
		}
		e += n
		if isNewline(r) {
			nl = e
		}
	}
	if nl >= 0 {
		return nl
	}
	return spaceEnd(s, i)
}

// gpt2Chunk scans one chunk of GPT-2's pattern:
//
//	's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
func gpt2Chunk(s string, i int) int {
	r, n := runAt(s, i)
	if r == '\'' {
		if e := contraction(s, i, false); e >= 0 {
			return e
		}
	}
	j := i
	if r == ' ' {
		j += n
	}
	if rj, nj := runAt(s, j); nj > 0 {
		for _, class := range []func(rune) bool{isLetter, isNumber, isOther} {
			if class(rj) {
				return span(s, j+nj, class, -1)
			}
		}
	}
	return spaceEnd(s, i)
}
