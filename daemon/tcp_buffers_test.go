package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/datapath/tcp"
)

// TestTCPNonReaderBounded: an app opens connections to a kernel server on
// host A that sends 1 MiB on each, and reads none of them. What the daemon
// holds for them in gVisor stays within the app's buffer bound
// (tcp.user_buffer_memory, on each of root's apps by itself; 8 MiB here)
// plus the clamped connections' 64 KiB
// buffers, not a receive buffer per connection; when the app reads at
// last, every byte comes, on the clamped connections as on the others.
func TestTCPNonReaderBounded(t *testing.T) {
	const appBound = 8 << 20
	rig, d := tcpRig(t, func(c *Config) { c.Datapath.TCP.Stack.GroupBufferBytes = appBound })
	const per = 1 << 20
	pattern := func(i, off int) byte { return byte(i*7 + off%251) }
	ln := kernelListen(t, rig.A, ":7600")
	go serveEach(ln, func(c net.Conn) {
		var idx [1]byte
		if _, err := io.ReadFull(c, idx[:]); err != nil {
			return
		}
		buf := make([]byte, per)
		for off := range buf {
			buf[off] = pattern(int(idx[0]), off)
		}
		c.Write(buf)
		io.Copy(io.Discard, c) // until the app closes
	})
	a := attach(t, d, app.Options{Name: "lazy", RxFifoSize: 64 << 10, TxFifoSize: 64 << 10})
	const n = 40
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conns := make([]net.Conn, n)
	for i := range conns {
		c, err := a.Dial(ctx, fmt.Sprintf("tcp://%s:7600", rig.A.IPv4))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	// The senders fill what the app's fifos and gVisor take.
	held := func() (rq int) {
		for _, c := range d.eng.TCPConns() {
			rq += c.RecvQ
		}
		return rq
	}
	bound := appBound + n*2*tcp.ClampedBuffer
	last, since := -1, time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if h := held(); h != last {
			last, since = h, time.Now()
		}
		if last > bound {
			t.Fatalf("gVisor holds %d bytes for an app that reads nothing, over %d", last, bound)
		}
		time.Sleep(20 * time.Millisecond)
	}
	st := d.Engine().TCPStats().Buffers
	t.Logf("%d connections of an app reading nothing: gVisor holds %d bytes for them (bound %d); buffers %+v", n, last, bound, st)
	if st.Clamped < n-appBound/(2<<20) {
		t.Fatalf("buffers %+v: want at least %d connections clamped", st, n-appBound/(2<<20))
	}
	// ctl show stats says so.
	doc, err := show(t, d.Socket(), "stats")
	if err != nil {
		t.Fatal(err)
	}
	var sv StatsView
	if err := json.Unmarshal(doc, &sv); err != nil {
		t.Fatal(err)
	}
	if tv := sv.TCP; tv == nil || tv.Connections < n || tv.BuffersClamped != st.Clamped || tv.UserBufferLimit != appBound || tv.BufferBytes <= 0 {
		t.Fatalf("show stats: tcp %+v, want %d connections or more, %d clamped, a user's bound of %d", tv, n, st.Clamped, appBound)
	}
	buf := make([]byte, 64<<10)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		for off := 0; off < per; {
			k, err := c.Read(buf[:min(len(buf), per-off)])
			for j := range k {
				if buf[j] != pattern(i, off+j) {
					t.Fatalf("connection %d: byte %d is %d, want %d", i, off+j, buf[j], pattern(i, off+j))
				}
			}
			off += k
			if err != nil {
				t.Fatalf("connection %d after %d bytes: %v", i, off, err)
			}
		}
	}
}
