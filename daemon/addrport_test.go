package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestPacketConnAddrPortWire echoes a kernel client's datagrams from host A
// with ReadFromUDPAddrPort and WriteToUDPAddrPort: the address read is the
// client's, every datagram comes back exact, and the server's read and
// write allocate nothing.
func TestPacketConnAddrPortWire(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "echo"})
	pc, err := a.ListenPacketConn("udp://0.0.0.0:7011")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cli := kernelClient(t, rig.A)
	want := cli.LocalAddr().(*net.UDPAddr).AddrPort()
	want = netip.AddrPortFrom(rig.A.IPv4, want.Port())
	to := netip.AddrPortFrom(rig.B.IPv4, 7011)
	pc.SetDeadline(time.Now().Add(10 * time.Second))
	cli.SetDeadline(time.Now().Add(10 * time.Second))
	buf, back := make([]byte, 2048), make([]byte, 2048)
	round := func(i int) {
		msg := bytes.Repeat([]byte{byte(i)}, 1+i%1400)
		if _, err := cli.WriteToUDPAddrPort(msg, to); err != nil {
			t.Fatal(err)
		}
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if from != want {
			t.Fatalf("read from %v, the client is %v", from, want)
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], from); err != nil {
			t.Fatal(err)
		}
		k, err := cli.Read(back)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(back[:k], msg) {
			t.Fatalf("round %d: %d bytes back, sent %d", i, k, len(msg))
		}
	}
	for i := range 200 {
		round(i)
	}
	var n int
	allocs := testing.AllocsPerRun(200, func() {
		msg := buf[:64]
		if _, err := cli.WriteToUDPAddrPort(msg, to); err != nil {
			t.Fatal(err)
		}
		k, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:k], from); err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Read(back); err != nil {
			t.Fatal(err)
		}
		n++
	})
	// The daemon's goroutines share the process: a stray allocation of
	// theirs may land in a round. The echo itself allocating would give
	// one or more per round.
	if allocs >= 0.5 && !raceEnabled { // the race detector's runtime allocates
		t.Fatalf("%.2f allocations per echo round trip (%d rounds)", allocs, n)
	}
	if _, err := pc.WriteToUDPAddrPort([]byte("x"), netip.AddrPort{}); err == nil {
		t.Fatal("write to the zero AddrPort succeeded")
	}
}

// TestPacketConnAddrPortCutThrough: a cut-through peer's datagrams give the
// zero AddrPort (the peer has no address), which WriteToUDPAddrPort refuses;
// WriteTo with ReadFrom's *CutThroughAddr answers it.
func TestPacketConnAddrPortCutThrough(t *testing.T) {
	d := startDaemon(t)
	srv := attach(t, d, app.Options{Name: "srv"})
	pc, err := srv.ListenPacketConn("udp://0.0.0.0:9002")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	cli := attach(t, d, app.Options{Name: "cli"})
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := cli.Dial(ctx, "udp://127.0.0.1:9002")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	pc.SetDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	for i := range 3 {
		msg := fmt.Sprintf("datagram %d", i)
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil || string(buf[:n]) != msg || from.IsValid() {
			t.Fatalf("read %q from %v, %v; want %q from the zero AddrPort", buf[:n], from, err, msg)
		}
		if _, err := pc.WriteToUDPAddrPort(buf[:n], from); !errors.Is(err, app.ErrNoDatapath) {
			t.Fatalf("write to the zero AddrPort without a datapath: %v", err)
		}
	}
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	n, addr, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.WriteTo(buf[:n], addr); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("reply %q, %v", buf[:n], err)
	}
}
