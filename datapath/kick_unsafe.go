package datapath

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// readNoWait reads an eventfd the app shares without ever blocking. The
// app holds the same open file, so it can clear O_NONBLOCK on it and read
// the count away between the worker's poll and its read: a plain read
// would then wait for the app's next write, with the worker and every
// app on it stopped. RWF_NOWAIT makes this one read non-blocking whatever
// the file's flags (eventfd reads honour it); a kernel that refuses the
// flag gets the plain read. The call is made by hand, with the iovec on
// the stack: unix.Preadv2 allocates its iovecs, once per kick.
func readNoWait(fd int, b []byte) (int, error) {
	var iov unix.Iovec
	iov.Base = &b[0]
	iov.SetLen(len(b))
	n, _, errno := unix.Syscall6(unix.SYS_PREADV2, uintptr(fd), uintptr(unsafe.Pointer(&iov)), 1,
		^uintptr(0), 0, unix.RWF_NOWAIT) // offset -1: the file's position, as read(2)
	switch errno {
	case 0:
		return int(n), nil
	case unix.EOPNOTSUPP:
		return unix.Read(fd, b)
	}
	return 0, errno
}
