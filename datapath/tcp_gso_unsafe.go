package datapath

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// writev writes the slices to fd in one writev(2), with iov as the
// reusable iovec array.
func writev(fd int, slices [][]byte, iov *[]unix.Iovec) error {
	v := (*iov)[:0]
	for _, b := range slices {
		if len(b) == 0 {
			continue
		}
		e := unix.Iovec{Base: &b[0]}
		e.SetLen(len(b))
		v = append(v, e)
	}
	*iov = v
	if len(v) == 0 {
		return nil
	}
	_, _, e := unix.Syscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
	clear(v) // drop the references to the Stack's buffers
	if e != 0 {
		return e
	}
	return nil
}
