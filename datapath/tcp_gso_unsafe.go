package datapath

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// appendIovecs appends an iovec for each non-empty slice to v.
func appendIovecs(v []unix.Iovec, slices [][]byte) []unix.Iovec {
	for _, b := range slices {
		if len(b) == 0 {
			continue
		}
		e := unix.Iovec{Base: &b[0]}
		e.SetLen(len(b))
		v = append(v, e)
	}
	return v
}

// writev writes the slices to fd in one writev(2), with iov as the
// reusable iovec array.
func writev(fd int, slices [][]byte, iov *[]unix.Iovec) error {
	v := appendIovecs((*iov)[:0], slices)
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

// sendmmsg writes the batch's packets to fd in one sendmmsg(2) and
// returns how many the kernel took.
func sendmmsg(fd int, b *gsoBatch) (int, error) {
	if b.n == 0 {
		return 0, nil
	}
	v := b.iov[:0]
	starts := [gsoBatchMax + 1]int{}
	for i := range b.n {
		starts[i] = len(v)
		v = appendIovecs(v, b.parts[i])
	}
	starts[b.n] = len(v)
	b.iov = v
	for i := range b.n {
		m := &b.msgs[i]
		*m = unix.Mmsghdr{}
		m.Hdr.Iov = &v[starts[i]]
		m.Hdr.SetIovlen(starts[i+1] - starts[i])
	}
	for {
		r, _, e := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&b.msgs[0])), uintptr(b.n), 0, 0, 0)
		if e == unix.EINTR {
			continue
		}
		clear(v) // drop the references to the Stack's buffers
		for i := range b.n {
			b.msgs[i].Hdr.Iov = nil
		}
		if e != 0 {
			return 0, e
		}
		return int(r), nil
	}
}
