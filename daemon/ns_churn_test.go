package daemon

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/internal/testhook"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// nsCountsOf returns the ids the datapath keeps TCP counts of (its
// TCPNamespaceStats: ended connections and closed listeners, plus the live
// ones) that start with prefix.
func nsCountsOf(d *Daemon, prefix string) []string {
	var out []string
	for id := range d.eng.TCPNamespaceStats() {
		if strings.HasPrefix(id, prefix) {
			out = append(out, id)
		}
	}
	return out
}

// TestNamespaceChurnTCPCountsGo: an orchestrator adds and deletes app
// namespaces all day, each with an app that listens on TCP for a while.
// Once a namespace is deleted the datapath keeps nothing of it: 200
// namespaces added, used and deleted leave no TCP counts behind.
func TestNamespaceChurnTCPCountsGo(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	const n = 200
	for i := range n {
		id := fmt.Sprintf("pod-%08x-churn", i)
		if err := d.AddNamespace(id, 42, rig.B.Link, ""); err != nil {
			t.Fatal(err)
		}
		a := attach(t, d, app.Options{Name: "churn", Namespace: id, Secret: 42})
		ln, err := a.Listen(fmt.Sprintf("tcp://0.0.0.0:%d", 7300+i%100))
		if err != nil {
			t.Fatal(err)
		}
		ln.Close()
		a.Close()
		if err := d.DelNamespace(id); err != nil {
			t.Fatalf("namespace %s: %v", id, err)
		}
	}
	// The listeners' ends reach the datapath on gVisor's goroutines: a
	// late one must not bring a deleted namespace back either.
	time.Sleep(200 * time.Millisecond)
	if ids := nsCountsOf(d, "pod-"); len(ids) > 0 {
		t.Errorf("%d namespaces added and deleted, the datapath keeps TCP counts of %d of them (%s ...)", n, len(ids), ids[0])
	}
}

// TestNamespaceDeletedConnsEndAfter: the connections of an app are reset
// when it detaches, and their ends reach the datapath after the app's
// namespace may already be deleted. Such a late end brings no counts of
// the deleted namespace back; a namespace added again with the same id
// counts from zero, as a new one does (its metric series went with the
// old one).
func TestNamespaceDeletedConnsEndAfter(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t, onB(rig))
	const n = 40
	for i := range n {
		id := fmt.Sprintf("pod-%08x-late", i)
		if err := d.AddNamespace(id, 42, rig.B.Link, ""); err != nil {
			t.Fatal(err)
		}
		a := attach(t, d, app.Options{Name: "late", Namespace: id, Secret: 42})
		kc, ac := kernelToApp(t, rig, a, uint16(7500+i))
		if _, err := kc.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		ac.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.ReadFull(ac, buf); err != nil {
			t.Fatal(err)
		}
		// Detached with its connection open: reset by the datapath,
		// on the connection's own goroutine, while the namespace goes.
		a.Close()
		if err := d.DelNamespace(id); err != nil {
			t.Fatalf("namespace %s: %v", id, err)
		}
		kc.Close()
	}
	waitFor(t, "every connection ended", 15*time.Second, func() bool { return len(d.eng.TCPConns()) == 0 })
	if ids := nsCountsOf(d, "pod-"); len(ids) > 0 {
		t.Errorf("%d namespaces deleted, the datapath keeps TCP counts of %d of them (%s ...)", n, len(ids), ids[0])
	}
	id := fmt.Sprintf("pod-%08x-late", 0)
	if err := d.AddNamespace(id, 42, rig.B.Link, ""); err != nil {
		t.Fatal(err)
	}
	defer d.DelNamespace(id)
	if st := d.eng.TCPNamespaceStats()[id]; st != nil && (st.ResetsSent != 0 || st.ResetsReceived != 0 || st.Retransmits != 0) {
		t.Errorf("namespace %s added again counts what the deleted one did: %+v", id, *st)
	}
}

// TestNamespaceAddDelRaceHoldsNoView: an ns add and an ns del of one id
// at the same time leave no reference on the netns's view: the delete
// could come between the layer's add and the daemon's note of the
// reference, find none to drop, and the view (its goroutines, netlink
// sockets and a descriptor of the netns) stayed for good.
func TestNamespaceAddDelRaceHoldsNoView(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	d := startDaemon(t)
	testhook.NamespaceAddPause.Store(int64(20 * time.Millisecond))
	t.Cleanup(func() { testhook.NamespaceAddPause.Store(0) })
	for range 5 {
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := d.AddNamespace("blue", 1, "lo", rig.B.Name); err != nil {
				t.Error(err)
			}
		})
		time.Sleep(5 * time.Millisecond) // into the add's pause
		wg.Go(func() { _ = d.DelNamespace("blue") })
		wg.Wait()
		_ = d.DelNamespace("blue")
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for fib, r := range d.netnss {
		if r.name == rig.B.Name {
			t.Errorf("the view of netns %s (FIB %v) is held by %d references after every namespace of it was deleted", r.name, fib, r.refs)
		}
	}
}
