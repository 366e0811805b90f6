package daemon

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUDPExamplesDatagramSizes: udpecho echoes to a kernel UDP socket on
// host A datagrams of every size UDP carries, 0 to the largest (65,507
// bytes over IPv4, 65,527 over IPv6), and udpsink counts them all.
func TestUDPExamplesDatagramSizes(t *testing.T) {
	dir := t.TempDir()
	echoBin := buildExample(t, dir, "udpecho")
	sinkBin := buildExample(t, dir, "udpsink")
	rig, d := tcpRig(t)
	runExampleProc(t, d, echoBin, "udpecho: echoing on", "--listen", "udp://:9000")
	sink := runExampleProc(t, d, sinkBin, "udpsink: receiving on", "--listen", "udp://:9001", "--interval", "1h")

	var sent, sentBytes int
	for _, c := range []struct {
		dst netip.Addr
		max int
	}{{rig.B.IPv4, 65507}, {rig.B.IPv6, 65527}} {
		err := rig.A.Do(func() error {
			pc, err := net.ListenUDP("udp", nil)
			if err != nil {
				return err
			}
			defer pc.Close()
			for _, n := range []int{0, 1, 1472, 1473, 32768, c.max - 1, c.max} {
				msg := make([]byte, n)
				rand.Read(msg)
				buf := make([]byte, 65536)
				var got []byte
				for try := 0; try < 3 && got == nil; try++ {
					if _, err := pc.WriteToUDPAddrPort(msg, netip.AddrPortFrom(c.dst, 9000)); err != nil {
						return fmt.Errorf("send %d bytes: %w", n, err)
					}
					pc.SetReadDeadline(time.Now().Add(time.Second))
					m, _, err := pc.ReadFromUDPAddrPort(buf)
					if err == nil {
						got = buf[:m]
					}
				}
				if got == nil || !bytes.Equal(got, msg) {
					return fmt.Errorf("udpecho on %v: a datagram of %d bytes: %d back (nil: none in 3 tries)", c.dst, n, len(got))
				}
				if _, err := pc.WriteToUDPAddrPort(msg, netip.AddrPortFrom(c.dst, 9001)); err != nil {
					return fmt.Errorf("send %d bytes: %w", n, err)
				}
				sent++
				sentBytes += n
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	time.Sleep(200 * time.Millisecond)
	sink.cmd.Process.Signal(syscall.SIGTERM)
	if st := sink.exited(5 * time.Second); st != 0 {
		t.Fatalf("udpsink: exit status %d, stderr %q", st, sink.errText())
	}
	want := fmt.Sprintf("udpsink: total: %d datagrams, %d bytes,", sent, sentBytes)
	if got := sink.rest.String(); !strings.Contains(got, want) {
		t.Errorf("udpsink's output %q, want a line starting %q", got, want)
	}
}
