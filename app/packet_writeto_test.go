package app

import (
	"errors"
	"net"
	"net/netip"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
)

// TestWriteToNilCutThroughAddr: WriteTo given a nil *CutThroughAddr fails
// with EINVAL, as it fails given a nil *net.UDPAddr (and as a
// net.UDPConn's WriteTo fails given one), with an error whose text can be
// printed. Before, it dereferenced the nil address and panicked.
func TestWriteToNilCutThroughAddr(t *testing.T) {
	a := &App{done: make(chan struct{})}
	p := &PacketConn{a: a, rd: newHalf(), wr: newHalf(), done: make(chan struct{}),
		peers: map[flow.Handle]*end{}, laddr: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:9"))}
	var (
		n   int
		err error
	)
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("WriteTo to a nil *CutThroughAddr panicked: %v", r)
			}
		}()
		n, err = p.WriteTo([]byte("x"), (*CutThroughAddr)(nil))
		_ = err.Error()
	}()
	var oe *net.OpError
	if n != 0 || !errors.As(err, &oe) || oe.Op != "write" || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("WriteTo to a nil *CutThroughAddr: %d, %v; want a write *net.OpError wrapping EINVAL", n, err)
	}
	// Closed, the write fails with net.ErrClosed, its error printable too.
	close(p.done)
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("WriteTo to a nil *CutThroughAddr after Close: %v", r)
			}
		}()
		n, err = p.WriteTo([]byte("x"), (*CutThroughAddr)(nil))
		_ = err.Error()
	}()
	if n != 0 || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("WriteTo to a nil *CutThroughAddr after Close: %d, %v; want net.ErrClosed", n, err)
	}
}

// TestWriteToAddrOfAnotherType: WriteTo given an address that is neither a
// *net.UDPAddr nor a *CutThroughAddr fails as a net.UDPConn's does: a
// write *net.OpError whose Err is syscall.EINVAL itself, which programs
// compare with ==.
func TestWriteToAddrOfAnotherType(t *testing.T) {
	a := &App{done: make(chan struct{})}
	p := &PacketConn{a: a, rd: newHalf(), wr: newHalf(), done: make(chan struct{}),
		peers: map[flow.Handle]*end{}, laddr: net.UDPAddrFromAddrPort(netip.MustParseAddrPort("0.0.0.0:9"))}
	to := &net.TCPAddr{IP: net.IPv4(10, 0, 0, 1), Port: 9}
	n, err := p.WriteTo([]byte("x"), to)
	var oe *net.OpError
	if n != 0 || !errors.As(err, &oe) || oe.Op != "write" || oe.Err != syscall.EINVAL || oe.Addr != to {
		t.Fatalf("WriteTo to a *net.TCPAddr: %d, %v; want a write *net.OpError naming it, its Err syscall.EINVAL", n, err)
	}
}
