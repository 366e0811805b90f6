package daemon

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestUDPDuplicateBindKeepsPortHold: a bind of a specific address and
// port that a listener holds already fails, and leaves the listener's
// kernel socket where it was, while another address of the same port
// holds a socket of its own: when the listener goes, the socket closes
// and a kernel socket of B can bind that address and port again.
func TestUDPDuplicateBindKeepsPortHold(t *testing.T) {
	const port = 7640
	rig, _, a := multiBufferRig(t, nstest.Options{}, "generic")
	other := netip.MustParseAddr("10.77.0.12")
	ipIn(t, rig.B, "addr", "add", other.String()+"/24", "dev", rig.B.Link)
	mine := netip.AddrPortFrom(rig.B.IPv4, port)
	first, err := a.ListenPacket("udp://" + mine.String())
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.ListenPacket("udp://" + netip.AddrPortFrom(other, port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	if dup, err := a.ListenPacket("udp://" + mine.String()); err == nil {
		dup.Close()
		t.Fatalf("a second bind of %v succeeded", mine)
	}
	first.Close()
	var last error
	ok := false
	for end := time.Now().Add(3 * time.Second); !ok && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		last = rig.B.Do(func() error {
			c, err := net.ListenPacket("udp4", mine.String())
			if err == nil {
				c.Close()
			}
			return err
		})
		ok = last == nil
	}
	if !ok {
		t.Fatalf("%v still held after its listener closed: %v", mine, last)
	}
}
