package tcp

import (
	"errors"
	"fmt"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"

	"github.com/xsessiond/xsessiond/fifo"
)

var (
	// ErrClosed: the Stack, Listener or Conn is closed.
	ErrClosed = errors.New("tcp: closed")
	// ErrTooManyConns: Options.MaxConns or MaxConnsPerOwner reached.
	ErrTooManyConns = errors.New("tcp: too many connections")
	// ErrFifoCorrupt: the app left the Conn's rx or tx fifo with indices
	// more than its size apart (fifo.ErrCorrupt), which no producer or
	// consumer following the fifo's ABI does. The Conn resets its
	// connection (Handler.Reset). It wraps syscall.EIO.
	ErrFifoCorrupt = fmt.Errorf("tcp: %w (%w)", fifo.ErrCorrupt, syscall.EIO)
)

// toErrno maps a gVisor error to the errno a socket would report, so
// errors.Is(err, syscall.ECONNREFUSED) and the like work on what this
// package returns and reports.
func toErrno(err tcpip.Error) error {
	switch err.(type) {
	case nil:
		return nil
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrConnectionAborted, *tcpip.ErrAborted:
		return syscall.ECONNABORTED
	case *tcpip.ErrPortInUse, *tcpip.ErrDuplicateAddress:
		return syscall.EADDRINUSE
	case *tcpip.ErrBadLocalAddress:
		return syscall.EADDRNOTAVAIL
	case *tcpip.ErrInvalidEndpointState, *tcpip.ErrAlreadyConnected:
		return syscall.EISCONN
	case *tcpip.ErrClosedForSend:
		return syscall.EPIPE
	}
	return errors.New(err.String())
}
