package daemon

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath"
)

// TestTCPSegmentationOffload: an app sends 16 MiB to a kernel TCP server
// on host A, over IPv4 and IPv6, and the server answers the SHA-256 of
// what it read. By default the sender's segments go out through the
// packet socket, larger than one MSS on average (the kernel cuts them, or
// hands them whole to the veth); with tcp.no_gso every packet goes
// through the AF_XDP tx ring and none through the socket. Both deliver
// every byte. Then 20 requests and replies with pauses: with the default
// the app's requests are written to the socket by the Stack's goroutine
// (tcpWorker.direct), with no_gso never; and 10 more with a capture
// running, which holds every request and reply.
func TestTCPSegmentationOffload(t *testing.T) {
	data := make([]byte, 16<<20)
	rand.Read(data)
	want := sha256.Sum256(data)
	for _, noGSO := range []bool{false, true} {
		t.Run(fmt.Sprintf("no_gso=%v", noGSO), func(t *testing.T) {
			rig, d := tcpRig(t, func(o *Config) { o.Datapath.TCP.NoGSO = noGSO })
			kl := kernelListen(t, rig.A, ":7200")
			go serveEach(kl, func(c net.Conn) {
				h := sha256.New()
				if _, err := io.Copy(h, c); err == nil {
					c.Write(h.Sum(nil))
				}
			})
			a := attach(t, d, app.Options{Name: "sender"})
			before := d.Engine().Stats().Totals
			for _, dst := range []netip.Addr{rig.A.IPv4, rig.A.IPv6} {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(dst, 7200).String())
				cancel()
				if err != nil {
					t.Fatalf("dial %v: %v", dst, err)
				}
				_ = c.SetDeadline(time.Now().Add(60 * time.Second))
				if _, err := c.Write(data); err != nil {
					t.Fatalf("%v: write: %v", dst, err)
				}
				if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
					t.Fatalf("%v: close write: %v", dst, err)
				}
				got, err := io.ReadAll(c)
				c.Close()
				if err != nil || string(got) != string(want[:]) {
					t.Fatalf("%v: the server's SHA-256 %x (%v), want %x", dst, got, err, want)
				}
			}
			// Requests and replies with pauses between them: the app's
			// requests go out from the Stack's goroutine (direct), not
			// through the worker, with the default.
			el := kernelListen(t, rig.A, ":7201")
			go echoServe(el)
			direct0 := d.Engine().TCPStats().DirectWrites
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := a.Dial(ctx, "tcp://"+netip.AddrPortFrom(rig.A.IPv4, 7201).String())
			cancel()
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			req, resp := make([]byte, 64), make([]byte, 64)
			for i := range 20 {
				rand.Read(req)
				if _, err := c.Write(req); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if _, err := io.ReadFull(c, resp); err != nil || string(resp) != string(req) {
					t.Fatalf("reply %d: %x (%v), want %x", i, resp, err, req)
				}
				time.Sleep(2 * time.Millisecond)
			}
			direct := d.Engine().TCPStats().DirectWrites - direct0
			t.Logf("20 requests: %d packets written directly", direct)
			if noGSO && direct != 0 || !noGSO && direct < 10 {
				t.Errorf("%d of 20 requests written directly", direct)
			}

			// While a capture runs, the requests go through the worker,
			// which captures them, and the replies are captured as they
			// come in: IPv4 TCP frames with the 64 bytes, each way.
			capt, err := d.Engine().StartCapture(datapath.CaptureFilter{})
			if err != nil {
				t.Fatal(err)
			}
			direct0 = d.Engine().TCPStats().DirectWrites
			asked := map[string]bool{}
			for i := range 10 {
				rand.Read(req)
				asked[string(req)] = true
				if _, err := c.Write(req); err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				if _, err := io.ReadFull(c, resp); err != nil || string(resp) != string(req) {
					t.Fatalf("reply %d: %x (%v), want %x", i, resp, err, req)
				}
				time.Sleep(2 * time.Millisecond)
			}
			d.Engine().StopCapture(capt)
			var seen [2]int
			capt.Read(func(r *datapath.CaptureRecord) bool {
				f := r.Data
				if len(f) == r.Len && len(f) > 14+20+64 && f[12] == 0x08 && f[13] == 0x00 && f[14+9] == 6 && asked[string(f[len(f)-64:])] {
					seen[r.Dir]++
				}
				return true
			})
			t.Logf("captured: %d requests sent, %d replies received", seen[datapath.CaptureTx], seen[datapath.CaptureRx])
			if seen[datapath.CaptureTx] != 10 || seen[datapath.CaptureRx] != 10 {
				t.Errorf("captured %d of 10 requests and %d of 10 replies", seen[datapath.CaptureTx], seen[datapath.CaptureRx])
			}
			if n := d.Engine().TCPStats().DirectWrites - direct0; n != 0 {
				t.Errorf("%d packets written past the worker during the capture", n)
			}
			c.Close()
			after := d.Engine().Stats().Totals
			gso, frames := after.TxGSO-before.TxGSO, after.Tx-before.Tx
			sent := uint64(2 * len(data))
			t.Logf("packet socket %d packets (%.0f bytes of data each), AF_XDP %d frames, drops %v", gso, float64(sent)/float64(max(gso, 1)), frames, after.Drops)
			if noGSO {
				if gso != 0 || frames < sent/1500 {
					t.Fatalf("no_gso: %d packets through the packet socket, %d frames through AF_XDP for %d bytes", gso, frames, sent)
				}
				return
			}
			// At most one MSS (1,448 bytes with timestamps) a packet
			// without segmentation, less on average with the
			// acknowledgements and handshakes among them.
			if gso == 0 || sent/gso <= 1448 {
				t.Fatalf("%d packets through the packet socket for %d bytes: no larger than a segment on average", gso, sent)
			}
		})
	}
}
