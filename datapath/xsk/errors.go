package xsk

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// Errors returned by this package, wrapped as "verb: %w" with the detail.
// Errors from the kernel also wrap the errno, so both errors.Is(err,
// ErrBusy) and errors.Is(err, unix.EBUSY) hold.
var (
	// ErrInvalidOptions: an Options field is out of range.
	ErrInvalidOptions = errors.New("invalid AF_XDP socket options")
	// ErrClosed: the Socket was closed.
	ErrClosed = errors.New("socket closed")
	// ErrNotSupported: the kernel or the driver lacks what was asked
	// (AF_XDP itself, zero-copy, need-wakeup).
	ErrNotSupported = errors.New("not supported by the kernel or driver")
	// ErrBusy: the queue already has an AF_XDP socket or UMEM bound.
	ErrBusy = errors.New("queue busy")
	// ErrNoDevice: no interface with that index, or no such queue.
	ErrNoDevice = errors.New("no such interface or queue")
	// ErrPermission: the process lacks CAP_NET_RAW (or CAP_NET_ADMIN).
	ErrPermission = errors.New("permission denied")
	// ErrNoMemory: the UMEM or rings could not be allocated or pinned
	// (RLIMIT_MEMLOCK, memory pressure).
	ErrNoMemory = errors.New("out of memory")
)

// sysErr translates a syscall error into one of the sentinels, once, at the
// boundary: "op: sentinel (errno)".
func sysErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var sentinel error
	var errno unix.Errno
	if errors.As(err, &errno) {
		switch errno {
		case unix.EBUSY:
			sentinel = ErrBusy
		case unix.ENODEV, unix.ENXIO:
			sentinel = ErrNoDevice
		case unix.EPERM, unix.EACCES:
			sentinel = ErrPermission
		case unix.ENOMEM, unix.ENOBUFS:
			sentinel = ErrNoMemory
		case unix.EOPNOTSUPP, unix.EAFNOSUPPORT, unix.EPROTONOSUPPORT:
			sentinel = ErrNotSupported
		case unix.EINVAL:
			sentinel = ErrInvalidOptions
		}
	}
	if sentinel == nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return fmt.Errorf("%s: %w (%w)", op, sentinel, err)
}

// umemRegErr is the error of registering a UMEM of size bytes. Unless the
// process has CAP_IPC_LOCK the kernel charges a UMEM to its user's locked
// memory and refuses one that would take it past RLIMIT_MEMLOCK with
// ENOBUFS alone (xdp_umem_account_pages), so the error says what ran short
// and what to do.
func umemRegErr(err error, size int) error {
	e := sysErr("register umem", err)
	var lim unix.Rlimit
	if !errors.Is(err, unix.ENOBUFS) || unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) != nil {
		return e
	}
	limit := "unlimited"
	if lim.Cur != unix.RLIM_INFINITY {
		limit = fmt.Sprintf("%d KiB", lim.Cur>>10)
	}
	return fmt.Errorf("%w: its %d KiB would take the user's locked memory (every AF_XDP UMEM of the user's "+
		"processes counts) past RLIMIT_MEMLOCK (%s), and the process lacks CAP_IPC_LOCK: give it CAP_IPC_LOCK "+
		"(deploy/xsessiond.service does) or raise the limit (LimitMEMLOCK= in a systemd unit, ulimit -l)", e, size>>10, limit)
}
