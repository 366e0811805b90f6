package daemon

import (
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestTCPKeepaliveNotInTimeWait: a connection the app closed first sits in
// TIME-WAIT and sends nothing more, as Linux's TIME-WAIT sockets send no
// keepalive: past the keepalive idle time (15 s) host A sees no segment
// from it.
func TestTCPKeepaliveNotInTimeWait(t *testing.T) {
	if testing.Short() {
		t.Skip("waits past the keepalive idle time")
	}
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "timewait"})
	ln := listenApp(t, a, "tcp://0.0.0.0:7420")
	var kc net.Conn
	if err := rig.A.Do(func() (err error) {
		kc, err = net.Dial("tcp", netip.AddrPortFrom(rig.B.IPv4, 7420).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer kc.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	seen := newSegmentCounter(t, rig.A, uint16(kc.LocalAddr().(*net.TCPAddr).Port))
	c.Close() // the app closes first: B's end goes to TIME-WAIT
	kc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(kc); err != nil {
		t.Fatal(err)
	}
	kc.Close()
	time.Sleep(500 * time.Millisecond) // the last ACK
	seen.reset()
	time.Sleep(17 * time.Second)
	if n := seen.count(7420); n != 0 {
		t.Fatalf("%d segments from B's end in TIME-WAIT past the keepalive idle time", n)
	}
}
