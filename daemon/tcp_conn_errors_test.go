package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// opFields describes the *net.OpError in err as a program sees its
// fields: Op, whether Net is the network of the object's own address
// (own), and what Source and Addr are: nil, own, peer (the connection's
// RemoteAddr) or another address; then errClass's classes.
func opFields(err error, own, peer net.Addr) string {
	if err == nil {
		return "nil"
	}
	var oe *net.OpError
	if !errors.As(err, &oe) {
		return fmt.Sprintf("no *net.OpError (%T) %s", err, errClass(err))
	}
	which := func(a net.Addr) string {
		switch {
		case a == nil:
			return "nil"
		case a.String() == own.String():
			return "own"
		case peer != nil && a.String() == peer.String():
			return "peer"
		}
		return "other " + a.String()
	}
	return fmt.Sprintf("op=%q net-is-own's=%v source=%s addr=%s %s", oe.Op, oe.Net == own.Network(), which(oe.Source), which(oe.Addr), errClass(err))
}

// TestTCPConnErrorFieldsMatchKernel: the *net.OpError of every call of a
// closed TCP Conn (dialed to and accepted from a kernel peer on host A,
// and cut-through between two apps) has the fields a kernel connection's
// has: the Op ("close" for CloseWrite and CloseRead, "set" for the
// setters), the Source and Addr (the local and remote address; a
// deadline setter's the local address in Addr alone).
func TestTCPConnErrorFieldsMatchKernel(t *testing.T) {
	r := newSemConnRig(t)
	cases := []semCase{
		{name: "calls after Close", run: func(t *testing.T, c, peer net.Conn, tr *semTrace) {
			la, ra := c.LocalAddr(), c.RemoteAddr()
			note := func(what string, err error) { tr.note(what, opFields(err, la, ra)) }
			c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
			_, err := c.Read(make([]byte, 16))
			note("Read past the deadline", err)
			note("Close", c.Close())
			_, err = c.Read(make([]byte, 16))
			note("Read", err)
			_, err = c.Write([]byte("x"))
			note("Write", err)
			note("Close again", c.Close())
			note("SetDeadline", c.SetDeadline(time.Now()))
			note("SetReadDeadline", c.SetReadDeadline(time.Now()))
			note("SetWriteDeadline", c.SetWriteDeadline(time.Now()))
			note("CloseWrite", callMethod(c, closeWriter.CloseWrite))
			note("CloseRead", callMethod(c, closeReader.CloseRead))
			note("SetLinger", callMethod(c, func(l lingerer) error { return l.SetLinger(0) }))
			note("SetKeepAlive", callMethod(c, func(k keepAliver) error { return k.SetKeepAlive(true) }))
			note("SetKeepAlivePeriod", callMethod(c, func(k keepAlivePr) error { return k.SetKeepAlivePeriod(time.Minute) }))
			note("SetKeepAliveConfig", callMethod(c, func(k keepAliveCf) error {
				return k.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true})
			}))
		}},
	}
	runSemCases(t, r.kinds(), cases)
}

// TestTCPListenerErrorFieldsMatchKernel: the *net.OpError of a TCP
// Listener's Accept (past its deadline, after Close) and of a second
// Close has the fields a kernel listener's has: the listener's address
// in Addr, no Source.
func TestTCPListenerErrorFieldsMatchKernel(t *testing.T) {
	rig, d := tcpRig(t)
	a := attach(t, d, app.Options{Name: "errors"})
	kinds := []struct {
		name   string
		listen func() (net.Listener, error)
	}{
		{"kernel", func() (l net.Listener, err error) {
			err = rig.A.Do(func() error {
				l, err = net.Listen("tcp", netip.AddrPortFrom(rig.A.IPv4, 0).String())
				return err
			})
			return l, err
		}},
		{"wire", func() (net.Listener, error) {
			return a.Listen("tcp://" + netip.AddrPortFrom(rig.B.IPv4, 0).String())
		}},
		{"loopback", func() (net.Listener, error) { return a.Listen("tcp://127.0.0.1:0") }},
		{"both families", func() (net.Listener, error) { return a.Listen("tcp://:0") }},
	}
	var ref semTrace
	for i, k := range kinds {
		ln, err := k.listen()
		if err != nil {
			t.Fatalf("%s: listen: %v", k.name, err)
		}
		own := ln.Addr()
		var tr semTrace
		note := func(what string, err error) { tr.note(what, opFields(err, own, nil)) }
		ln.(deadliner).SetDeadline(time.Now().Add(10 * time.Millisecond))
		_, err = ln.Accept()
		note("Accept past the deadline", err)
		note("Close", ln.Close())
		_, err = ln.Accept()
		note("Accept after Close", err)
		note("Close again", ln.Close())
		if i == 0 {
			ref = tr
			t.Logf("%s:%v", k.name, tr)
			continue
		}
		compareSem(t, k.name, ref, tr, nil)
	}
}
