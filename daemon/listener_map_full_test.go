package daemon

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/loader"
)

// TestBindRefusedWhenListenerMapFull: once the XDP program's listener map
// is full, a bind fails with a limit error that says so, and leaves no
// listener behind, rather than answer OK for a listener the program never
// steers (its datagrams went to the kernel's slow path, a TCP peer got a
// reset from the port's reservation); one listener closed, a bind works
// again.
func TestBindRefusedWhenListenerMapFull(t *testing.T) {
	_, d := tcpRig(t)
	// Small fifos, so that one app's segments hold as many listeners.
	a := attach(t, d, app.Options{Name: "many", RxFifoSize: 4096, TxFifoSize: 4096})
	var pcs []interface{ Close() error }
	var err error
	// The daemon's listeners before the binds (base) and after the last
	// one that succeeded (before).
	base := len(d.layer.Listeners())
	before := base
	for range loader.DefaultMaxListeners + 1 {
		var pc interface{ Close() error }
		if pc, err = a.ListenPacket("udp://0.0.0.0:0"); err != nil {
			break
		}
		pcs = append(pcs, pc)
		before = len(d.layer.Listeners())
	}
	if len(pcs) != loader.DefaultMaxListeners || !errors.Is(err, flow.ErrLimit) || !strings.Contains(err.Error(), "listener table is full") {
		t.Fatalf("%d binds, then %v; want %d, then a limit error saying the listener table is full", len(pcs), err, loader.DefaultMaxListeners)
	}
	if before < base+len(pcs) {
		t.Fatalf("%d listeners in the daemon after %d binds, %d before them", before, len(pcs), base)
	}
	if _, err := a.ListenPacket("udp://0.0.0.0:0"); err == nil {
		t.Fatal("a second bind past the map's room succeeded")
	}
	// Neither refused bind leaves a listener: the count comes back to
	// what it was (within a second, were one to go late) and stays.
	after := len(d.layer.Listeners())
	for end := time.Now().Add(time.Second); after != before && time.Now().Before(end); after = len(d.layer.Listeners()) {
		time.Sleep(10 * time.Millisecond)
	}
	for end := time.Now().Add(200 * time.Millisecond); after == before && time.Now().Before(end); after = len(d.layer.Listeners()) {
		time.Sleep(10 * time.Millisecond)
	}
	if after != before {
		t.Fatalf("listeners %d after two refused binds, %d after the last bind that succeeded: a refused one stayed", after, before)
	}
	if err := pcs[0].Close(); err != nil {
		t.Fatal(err)
	}
	pc, err := a.ListenPacket("udp://0.0.0.0:0")
	if err != nil {
		t.Fatalf("a bind once a listener closed: %v", err)
	}
	pc.Close()
}
