package datapath_test

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/sessions"
)

// wait waits for an event the layer delivered that ok accepts.
func (n *notes) wait(t *testing.T, what string, ok func(sessions.Event) bool) sessions.Event {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		n.mu.Lock()
		for _, e := range n.evs {
			if ok(e) {
				n.mu.Unlock()
				return e
			}
		}
		n.mu.Unlock()
	}
	t.Fatalf("no %s event", what)
	return sessions.Event{}
}

// TestTCPGlobalListener: an app with global scope binds tcp://; the bind
// is in the program's maps (the datapath serves it), while TCP to a port
// nobody bound stays with the kernel (a kernel listener on B is reached
// from A, and a port with no listener at all answers with the kernel's
// reset), and a second app connects to the app's listener through
// cut-through.
func TestTCPGlobalListener(t *testing.T) {
	r := newEngineRig(t, 1, 1500)
	srv := r.attach(t)
	cli := r.attach(t)
	th, err := r.l.BindURI(srv.id, "tcp://0.0.0.0:8080")
	if err != nil {
		t.Fatalf("global TCP bind: %v", err)
	}
	if _, err := r.l.BindURI(srv.id, "tcp://0.0.0.0:8081"); err != nil {
		t.Fatalf("global TCP bind: %v", err)
	}
	// A UDP listener on the same port is in the maps: the check below can
	// tell the two apart.
	if _, err := r.l.BindURI(srv.id, "udp://0.0.0.0:8080"); err != nil {
		t.Fatal(err)
	}
	r.waitMirror(t)
	ents, err := datapath.ListenerEntries(r.eng)
	if err != nil {
		t.Fatal(err)
	}
	udpSeen, tcpSeen := false, 0
	for _, e := range ents {
		switch e.Tuple.Proto {
		case flow.TransportUDP:
			udpSeen = udpSeen || e.Tuple.LocalPort == 8080
		case flow.TransportTCP:
			if e.Tuple.LocalPort == 8080 || e.Tuple.LocalPort == 8081 {
				tcpSeen++
			}
		default:
			t.Errorf("listener map has a %s entry: %+v", e.Tuple.Proto, e)
		}
	}
	if !udpSeen || tcpSeen != 2 {
		t.Fatalf("the UDP listener or the 2 TCP ones are not in the map: %+v", ents)
	}

	// The kernel keeps TCP of ports nobody bound: a kernel listener on
	// B:8082 is reached.
	var kl net.Listener
	if err := r.p.B.Do(func() error {
		var err error
		kl, err = net.Listen("tcp", ":8082")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kl.Close()
	go func() {
		for {
			c, err := kl.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	pass0 := r.eng.Stats().BPF["pass"]
	for _, dst := range []netip.Addr{r.p.B.IPv4, r.p.B.IPv6} {
		err := r.p.A.Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 8082).String(), 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := c.Write([]byte("through the kernel")); err != nil {
				return err
			}
			buf := make([]byte, 18)
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			if string(buf) != "through the kernel" {
				return errors.New("echo differs")
			}
			return nil
		})
		if err != nil {
			t.Fatalf("kernel TCP to %v:8082 while 8080 is bound globally: %v", dst, err)
		}
		// No listener at all on 8083: the kernel answers with a reset.
		err = r.p.A.Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 8083).String(), 3*time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if !errors.Is(err, unix.ECONNREFUSED) {
			t.Fatalf("TCP to %v:8083 (no listener): %v, want connection refused", dst, err)
		}
	}
	st := r.eng.Stats()
	if st.BPF["pass"] <= pass0 || st.Totals.Rx != 0 {
		t.Fatalf("bpf %v, worker rx %d: TCP of unbound ports went to the datapath", st.BPF, st.Totals.Rx)
	}

	// Cut-through from a second app through the global listener.
	res, err := r.l.ConnectURI(cli.id, "tcp://"+netip.AddrPortFrom(r.p.B.IPv4, 8080).String(), 21)
	if err != nil {
		t.Fatalf("cut-through connect: %v", err)
	}
	if !res.CutThrough {
		t.Fatalf("connect %+v: not cut-through", res)
	}
	cev := r.note.wait(t, "connected", func(e sessions.Event) bool { return e.Kind == sessions.EventConnected && e.Opaque == 21 })
	aev := r.note.wait(t, "accepted", func(e sessions.Event) bool { return e.Kind == sessions.EventAccepted && e.Listener == th })
	if !cev.CutThrough || !aev.CutThrough || aev.App != srv.id {
		t.Fatalf("events %+v, %+v", cev, aev)
	}
	ctx := cev.Pair.Tx
	srx, stx := aev.Pair.Rx, aev.Pair.Tx
	if _, err := ctx.Enqueue([]byte("hello, server")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := srx.Dequeue(buf)
	if err != nil || string(buf[:n]) != "hello, server" {
		t.Fatalf("server read %q, %v", buf[:n], err)
	}
	crx := cev.Pair.Rx
	if _, err := stx.Enqueue([]byte("hello, client")); err != nil {
		t.Fatal(err)
	}
	n, err = crx.Dequeue(buf)
	if err != nil || string(buf[:n]) != "hello, client" {
		t.Fatalf("client read %q, %v", buf[:n], err)
	}
}
