package datapath_test

import (
	"net/netip"
	"testing"
	"time"
)

// TestFifoFullYields sends more to a listener than its rx fifo holds, with
// nobody reading: the worker drops the rest as fifo-full, counted, and
// yields its CPU after each batch that met the full fifo (FullYields), at
// most once per such batch.
func TestFifoFullYields(t *testing.T) {
	r := newEngineRig(t, 1, 1500)
	a := r.attach(t) // 4 MiB rx fifo
	if _, err := r.l.BindURI(a.id, "udp://0.0.0.0:9000"); err != nil {
		t.Fatal(err)
	}
	r.waitMirror(t)
	c := hostUDP(t, r.p.A, netip.AddrPortFrom(r.p.A.IPv4, 0))
	dst := netip.AddrPortFrom(r.p.B.IPv4, 9000)
	pay := make([]byte, 1400)
	const n = 6000 // 8.4 MB of payload
	for i := range n {
		if _, err := c.WriteToUDPAddrPort(pay, dst); err != nil {
			t.Fatal(err)
		}
		if i%256 == 255 {
			time.Sleep(time.Millisecond) // within what A's and B's queues hold
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	st := r.eng.Stats()
	for ; st.Totals.Delivered+st.Totals.Drops["fifo-full"] < n && time.Now().Before(deadline); st = r.eng.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	full := st.Totals.Drops["fifo-full"]
	t.Logf("delivered %d, fifo-full %d, full yields %d, rx %d", st.Totals.Delivered, full, st.Totals.FullYields, st.Totals.Rx)
	if st.Totals.Delivered+full != n || full == 0 {
		t.Fatalf("delivered %d + fifo-full %d, want %d with some full", st.Totals.Delivered, full, n)
	}
	if st.Totals.FullYields == 0 || st.Totals.FullYields > full {
		t.Fatalf("full yields %d for %d fifo-full drops", st.Totals.FullYields, full)
	}
}
