// Package dtype holds dtype.h, the weight decoders (and an AVX2 lane sum) that the C kernels of
// packages matmul, gather and attend share: a row of F32, F16, BF16 or Q8_0 weights
// to float32.
//
// Its Go side only embeds the header. Go's build cache hashes a package's
// own files, not the headers its C files include from elsewhere; a package
// that includes dtype.h imports this one, whose compiled form changes with
// the header, so that the includer is rebuilt when dtype.h changes.
package dtype

import _ "embed"

//go:embed dtype.h
var _ string
