package daemon

import (
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestIPv6LaterFragmentNextHeader: Linux's IPv6 reassembly takes a
// datagram's next header from its first fragment and does not look at what
// the fragment headers of the later ones say (RFC 8200 4.5 asks a sender to
// repeat it; a receiver cannot count on that). A UDP datagram whose later
// fragments name another next header reaches a kernel socket of B, the
// reference; it reaches an app's socket as well, its fragments in order
// (the worker reassembles them) and reversed (the kernel does, and the
// daemon's reservation reads it).
func TestIPv6LaterFragmentNextHeader(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	a := attach(t, d, app.Options{Name: "nexthdr", RxFifoSize: 1 << 20, TxFifoSize: 1 << 16, SegmentSize: 16 << 20})
	snd := newFragSender(t, rig)
	pc, err := a.ListenPacket("udp://[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ks, err := bindKernel(rig.B, "[::]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ks.Close()
	appPort := pc.LocalAddr().(*net.UDPAddr).Port
	kernelPort := ks.LocalAddr().(*net.UDPAddr).Port

	// receive reads one datagram from c and compares it with want.
	receive := func(c net.PacketConn, want []byte) error {
		buf := make([]byte, 65536)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return err
		}
		if !bytes.Equal(buf[:n], want) {
			return fmt.Errorf("%d bytes that are not the datagram's %d", n, len(want))
		}
		return nil
	}
	seq := 0
	for _, next := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_NONE, unix.IPPROTO_ICMPV6, unix.IPPROTO_DSTOPTS} {
		for _, order := range []string{"in order", "reversed"} {
			name := fmt.Sprintf("next header %d, %s", next, order)
			seq++
			payload := fragFill(seq, 4000)
			for _, dst := range []struct {
				who  string
				port int
				c    net.PacketConn
			}{{"the kernel socket", kernelPort, ks}, {"the app", appPort, pc}} {
				dg := snd.datagram(true, dst.port, payload)
				pieces := []fragPiece{{0, 1400, true}, {1400, 2800, true}, {2800, len(dg), false}}
				if order == "reversed" {
					pieces[0], pieces[2] = pieces[2], pieces[0]
				}
				snd.laterNext = next
				err := snd.send(true, dg, pieces)
				snd.laterNext = 0
				if err != nil {
					t.Fatal(err)
				}
				if err := receive(dst.c, payload); err != nil {
					t.Errorf("%s: %s: %v (bpf %v)", name, dst.who, err, d.Engine().Stats().BPF)
				}
			}
		}
	}
	// Datagrams whose fragments all name UDP still arrive after those.
	seq++
	payload := fragFill(seq, 3000)
	dg := snd.datagram(true, appPort, payload)
	if err := snd.send(true, dg, []fragPiece{{0, 1400, true}, {1400, 2800, true}, {2800, len(dg), false}}); err != nil {
		t.Fatal(err)
	}
	if err := receive(pc, payload); err != nil {
		t.Fatalf("a datagram after those: %v", err)
	}
}
