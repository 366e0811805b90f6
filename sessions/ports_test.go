package sessions_test

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

// lookupUDP finds the global listener a UDP datagram to addr:port in FIB
// fib would reach.
func lookupUDP(l *sessions.Layer, fib sessions.FIBID, addr netip.Addr, port uint16) (*sessions.Listener, bool) {
	t := flow.FiveTuple{Local: flow.AddrBytes(addr), LocalPort: port, Remote: flow.AddrBytes(remote), RemotePort: 5000,
		Proto: flow.TransportUDP, Family: flow.Family4}
	return l.LookupListener(fib, &t)
}

// TestBind_PortZeroPicksEphemeral: without a PortReserver, port 0 picks a
// free port of the ephemeral range, a different one each time, never an
// every-port entry; BoundEndpoint tells it; the range running out is
// ErrAddressInUse.
func TestBind_PortZeroPicksEphemeral(t *testing.T) {
	r := newRig(t)
	a := r.attach(sessions.ScopeGlobal)
	seen := map[uint16]bool{}
	for i := range 3 {
		h := r.bind(a, "udp://0.0.0.0:0")
		e, err := r.l.BoundEndpoint(a, h)
		if err != nil {
			t.Fatal(err)
		}
		if e.Port < sessions.DefaultEphemeralLow || e.Port > sessions.DefaultEphemeralHigh || seen[e.Port] {
			t.Fatalf("bind %d: port %d (seen %v)", i, e.Port, seen)
		}
		seen[e.Port] = true
		if ln, ok := lookupUDP(r.l, 1, addrA, e.Port); !ok || ln.Handle != h {
			t.Fatalf("port %d: listener %v %v", e.Port, ln, ok)
		}
	}
	// No every-port entry: a port nobody bound finds nothing.
	for _, p := range []uint16{1, 9, sessions.DefaultEphemeralLow + 1000, 65535} {
		if seen[p] {
			continue
		}
		if ln, ok := lookupUDP(r.l, 1, addrA, p); ok {
			t.Fatalf("port %d reaches listener %+v", p, ln)
		}
	}
	// A local-scope app's port 0 gets a real port in its local handle.
	b := r.attach(sessions.ScopeLocal)
	h, err := r.l.BindURI(b, "udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if e, err := r.l.BoundEndpoint(b, h); err != nil || e.Port == 0 {
		t.Fatalf("local bind: %+v %v", e, err)
	}

	// A range of two ports runs out at the third bind.
	l, err := sessions.New(sessions.Config{View: r.view, Memory: &sessionstest.Memory{}, Workers: 1,
		Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1, FIB6: 2}, EphemeralPorts: [2]uint16{40000, 40001}})
	if err != nil {
		t.Fatal(err)
	}
	at, err := l.Attach(sessions.AttachOptions{ClientID: 1})
	if err != nil {
		t.Fatal(err)
	}
	got := map[uint16]bool{}
	for range 2 {
		h, err := l.BindURI(at.App, "udp://0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		e, _ := l.BoundEndpoint(at.App, h)
		got[e.Port] = true
	}
	if !got[40000] || !got[40001] {
		t.Fatalf("ports %v", got)
	}
	if _, err := l.BindURI(at.App, "udp://0.0.0.0:0"); !errors.Is(err, sessions.ErrAddressInUse) {
		t.Fatalf("third bind: %v", err)
	}
	// A port taken on the wildcard address is not picked for a specific
	// address either.
	if _, err := l.BindURI(at.App, "udp://10.0.0.1:0"); !errors.Is(err, sessions.ErrAddressInUse) {
		t.Fatalf("bind of a specific address: %v", err)
	}
}

// reserver is the fake datapath with a PortReserver that hands out ports
// from 50000 and refuses the ports in taken (held by "kernel sockets").
type reserver struct {
	*sessionstest.Datapath
	next  uint16
	taken map[uint16]bool
	held  map[string]bool
}

func (d *reserver) ReservePort(e sessions.Endpoint) (uint16, error) {
	p := e.Port
	if p == 0 {
		p = d.next
		d.next++
	}
	k := fmt.Sprintf("%v:%d", e.Addr, p)
	if d.taken[p] || d.held[k] {
		return 0, fmt.Errorf("reserve: %w: %w", sessions.ErrAddressInUse, syscall.EADDRINUSE)
	}
	d.held[k] = true
	return p, nil
}

func (d *reserver) ReleasePort(e sessions.Endpoint) {
	delete(d.held, fmt.Sprintf("%v:%d", e.Addr, e.Port))
}

// TestBind_PortReserver: with a PortReserver, a global bind's port is the
// one it holds (port 0: the one it picked); a port it refuses fails the
// bind with both ErrAddressInUse and EADDRINUSE; the port is given back
// at unbind and when the bind fails later on.
func TestBind_PortReserver(t *testing.T) {
	view := sessionstest.NewView().Add(2, 1, addrA)
	dp := &reserver{Datapath: sessionstest.NewDatapath(addrA, addrA6), next: 50000, taken: map[uint16]bool{7000: true}, held: map[string]bool{}}
	l, err := sessions.New(sessions.Config{View: view, Memory: &sessionstest.Memory{}, Datapath: dp, Workers: 1,
		Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1, FIB6: 2}})
	if err != nil {
		t.Fatal(err)
	}
	at, err := l.Attach(sessions.AttachOptions{ClientID: 1})
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.BindURI(at.App, "udp://0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := l.BoundEndpoint(at.App, h); e.Port != 50000 || !dp.held["0.0.0.0:50000"] {
		t.Fatalf("bound %v, held %v", e, dp.held)
	}
	_, err = l.BindURI(at.App, "udp://0.0.0.0:7000")
	if !errors.Is(err, sessions.ErrAddressInUse) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("bind of a port the kernel holds: %v", err)
	}
	if err := l.Unbind(at.App, h); err != nil {
		t.Fatal(err)
	}
	if len(dp.held) != 0 {
		t.Fatalf("after unbind: held %v", dp.held)
	}
	dp.SetFail(false, true) // Listen fails: the reservation goes back
	if _, err := l.BindURI(at.App, "udp://0.0.0.0:9000"); !errors.Is(err, sessionstest.ErrInjected) {
		t.Fatalf("bind with a failing listen: %v", err)
	}
	if len(dp.held) != 0 {
		t.Fatalf("after a failed bind: held %v", dp.held)
	}
}
