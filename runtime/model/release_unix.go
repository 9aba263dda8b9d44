//go:build unix

package model

import (
	"os"
	"syscall"
	"unsafe"
)

// releasePages drops the whole pages inside b from the process's memory
// (madvise MADV_DONTNEED). On a shared file mapping that loses nothing:
// a later read faults the page in from the file. Errors are ignored; the
// pages then simply stay.
func releasePages(b []byte) {
	if len(b) == 0 {
		return
	}
	page := uintptr(os.Getpagesize())
	start := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	lo, hi := (start+page-1)&^(page-1), (start+uintptr(len(b)))&^(page-1)
	if lo >= hi {
		return
	}
	_ = syscall.Madvise(b[lo-start:hi-start], syscall.MADV_DONTNEED)
}
