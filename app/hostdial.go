package app

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/xsessiond/xsessiond/flow"
)

// dialHost is Dial's way to a kernel socket of the host, which the
// daemon's sessions do not reach (the datapath carries sessions to other
// hosts, and between apps cut-through): after the daemon answered err, a
// failed dial's *net.OpError, Dial connects with a kernel socket of this
// process, as net.Dial would, when
//   - the daemon says a kernel socket holds the port of the host's own
//     address dialed (flow.ErrHostSocket), or
//   - no app listens on the loopback address dialed (flow.ErrLocalConnect)
//     and, for UDP, a kernel socket of this process's network namespace
//     holds its port (heldHere: a UDP connect succeeds whether or not
//     anything is there, and the daemon's refusal is what a kernel
//     socket's first read would report).
//
// The loopback address is this process's: in the interface's network
// namespace the host's, in a container's its own, as net.Dial's. It
// returns the kernel socket, or an error: err when the case is none of
// these; else, the kernel's dial failing too, the kernel's error for the
// host's own address or a dial ctx ended (a timeout, the port's owner
// refusing: net.Dial's error), and err for a loopback address nothing
// listens on (flow.ErrLocalConnect, which wraps ECONNREFUSED as the
// kernel's would).
func dialHost(ctx context.Context, err error) (net.Conn, error) {
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Addr == nil || (oe.Net != "tcp" && oe.Net != "udp") {
		return nil, err
	}
	host := errors.Is(err, flow.ErrHostSocket)
	switch {
	case host:
	case errors.Is(err, flow.ErrLocalConnect):
		if oe.Net == "udp" && !heldHere(oe.Addr) {
			return nil, err
		}
	default:
		return nil, err
	}
	var d net.Dialer
	c, kerr := d.DialContext(ctx, oe.Net, oe.Addr.String())
	if kerr == nil {
		return c, nil
	}
	if host || ctx.Err() != nil {
		return nil, kerr
	}
	return nil, err
}

// heldHere reports whether a kernel UDP socket of this thread's network
// namespace holds addr's port on addr or on the unspecified address, as
// /proc/thread-self/net/udp and udp6 list the sockets (a dual-stack one
// bound to [::] takes IPv4 too). A listing, unlike a bind of the port,
// takes the port from no program binding it meanwhile.
func heldHere(addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua.Port == 0 {
		return false
	}
	ap := ua.AddrPort()
	a := ap.Addr().Unmap()
	if !a.IsLoopback() {
		return false
	}
	files := []string{"/proc/thread-self/net/udp6"}
	if a.Is4() {
		files = append(files, "/proc/thread-self/net/udp")
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) < 2 {
				continue
			}
			la, ok := procAddrPort(fields[1])
			if ok && la.Port() == ap.Port() && (la.Addr().IsUnspecified() || la.Addr().Unmap() == a) {
				return true
			}
		}
	}
	return false
}

// procAddrPort parses a local_address of /proc/net/udp: ADDR:PORT in hex,
// the address as one 32-bit word (IPv4) or four (IPv6), each printed as
// the number its bytes make in the host's byte order, and the port.
func procAddrPort(s string) (netip.AddrPort, bool) {
	h, p, ok := strings.Cut(s, ":")
	port, err := strconv.ParseUint(p, 16, 16)
	if !ok || err != nil || len(h) != 8 && len(h) != 32 {
		return netip.AddrPort{}, false
	}
	raw := make([]byte, len(h)/2)
	for w := 0; w < len(h); w += 8 {
		v, err := strconv.ParseUint(h[w:w+8], 16, 32)
		if err != nil {
			return netip.AddrPort{}, false
		}
		binary.NativeEndian.PutUint32(raw[w/2:], uint32(v))
	}
	a, _ := netip.AddrFromSlice(raw)
	return netip.AddrPortFrom(a, uint16(port)), true
}
