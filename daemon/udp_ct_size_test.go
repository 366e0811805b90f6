package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// sizeResult is what a WriteTo of a datagram returned, as a program sees
// it: the count, and whether the error is EMSGSIZE held in an
// *os.SyscallError naming "sendto".
func sizeResult(n int, err error) string {
	if err == nil {
		return fmt.Sprintf("n=%d", n)
	}
	var se *os.SyscallError
	return fmt.Sprintf("n=%d EMSGSIZE=%v syscall=%v", n, errors.Is(err, syscall.EMSGSIZE), errors.As(err, &se) && se.Syscall == "sendto")
}

// TestPacketConnCutThroughLargestDatagramMatchesKernel: a UDP listener's
// WriteTo to a cut-through peer (another app of the host, which dialed
// the listener at a loopback address) takes the datagrams a kernel UDP
// socket's WriteTo takes to a loopback address of that family, and fails
// a byte more with EMSGSIZE, as it does: 65,507 bytes to 127.0.0.1,
// 65,527 to ::1. The fifos hold more, and before the listener queued a
// datagram larger than IP carries (the peer's own Write to the listener
// was refused).
func TestPacketConnCutThroughLargestDatagramMatchesKernel(t *testing.T) {
	d := startDaemon(t)
	big := app.Options{RxFifoSize: 1 << 20, TxFifoSize: 1 << 20, SegmentSize: 16 << 20}
	srvOpts, cliOpts := big, big
	srvOpts.Name, cliOpts.Name = "listener", "peer"
	srv, cli := attach(t, d, srvOpts), attach(t, d, cliOpts)
	buf := make([]byte, 1<<17)
	for _, f := range []struct {
		name, kernelNet, loopback, listen string
		max                               int
	}{
		{"IPv4", "udp4", "127.0.0.1", "udp://0.0.0.0:7933", app.MaxDatagram4},
		{"IPv6", "udp6", "[::1]", "udp://[::]:7933", app.MaxDatagram6},
	} {
		t.Run(f.name, func(t *testing.T) {
			sizes := []int{f.max, f.max + 1}
			// The kernel's record: a socket sending to another on the
			// loopback address.
			var kernel []string
			ks, err := net.ListenPacket(f.kernelNet, f.loopback+":0")
			if err != nil {
				t.Fatal(err)
			}
			defer ks.Close()
			kr, err := net.ListenPacket(f.kernelNet, f.loopback+":0")
			if err != nil {
				t.Fatal(err)
			}
			defer kr.Close()
			for _, size := range sizes {
				kernel = append(kernel, sizeResult(ks.WriteTo(bytes.Repeat([]byte("k"), size), kr.LocalAddr())))
			}
			// The app's: the listener answering a cut-through peer.
			pc, err := srv.ListenPacket(f.listen)
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			c, err := cli.Dial(ctx, "udp://"+f.loopback+":7933")
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write([]byte("hi")); err != nil {
				t.Fatal(err)
			}
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, peer, err := pc.ReadFrom(buf)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := peer.(*app.CutThroughAddr); !ok {
				t.Fatalf("the peer's datagram came from %v (%T), want a cut-through session", peer, peer)
			}
			var got []string
			for _, size := range sizes {
				n, err := pc.WriteTo(bytes.Repeat([]byte("a"), size), peer)
				got = append(got, sizeResult(n, err))
				if err == nil {
					c.SetReadDeadline(time.Now().Add(5 * time.Second))
					if m, err := c.Read(buf); err != nil || m != size {
						t.Errorf("the peer read %d bytes, %v; want %d", m, err, size)
					}
				}
			}
			for i := range sizes {
				if got[i] != kernel[i] {
					t.Errorf("WriteTo of %d bytes: %s; the kernel's: %s", sizes[i], got[i], kernel[i])
				}
			}
		})
	}
}
