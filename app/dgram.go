package app

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"

	"github.com/xsessiond/xsessiond/flow"
)

// The largest UDP payloads IPv4 and IPv6 can carry (a 65,535-byte IPv4
// packet less its 20-byte header and the UDP header; a 65,535-byte IPv6
// payload less the UDP header), as the kernel's UDP sockets allow them.
const (
	MaxDatagram4 = 65507
	MaxDatagram6 = 65527
)

// Errors of datagram writes: each wraps the errno a kernel UDP socket
// returns for the same call, so errors.Is(err, syscall.EMSGSIZE) and the
// like work as with package net.
var (
	errMessageTooLong = &Error{Msg: ErrMessageTooLong.Error(), Err: errors.Join(ErrMessageTooLong, syscall.EMSGSIZE)}
	errPortZero       = &Error{Msg: "app: destination port 0", Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)}
	errNoAddress      = &Error{Msg: "app: no destination address", Err: errors.Join(flow.ErrInvalidValue, syscall.EINVAL)}
)

// checkDgramSize refuses a datagram of n bytes to remote larger than its
// family allows.
func checkDgramSize(n int, remote netip.AddrPort) error {
	max := MaxDatagram4
	if a := remote.Addr(); a.Is6() && !a.Is4In6() {
		max = MaxDatagram6
	}
	if n > max {
		return errMessageTooLong
	}
	return nil
}

// checkDest checks a WriteTo's destination as a kernel UDP socket bound to
// the listener's address would: an address and a port (EINVAL), of the
// listener's family (EAFNOSUPPORT), and the datagram's size (EMSGSIZE).
func (p *PacketConn) checkDest(remote netip.AddrPort, n int) error {
	a := remote.Addr().Unmap()
	if !a.IsValid() || a.IsUnspecified() {
		return errNoAddress
	}
	if remote.Port() == 0 {
		return errPortZero
	}
	fam := flow.Family4
	if a.Is6() {
		fam = flow.Family6
	}
	if want := p.ep.Family(); fam != want {
		return &Error{Msg: fmt.Sprintf("app: destination %v is not of the listener's family (%v)", remote, p.ep.Addr),
			Err: syscall.EAFNOSUPPORT}
	}
	return checkDgramSize(n, netip.AddrPortFrom(a, remote.Port()))
}
