package sessions_test

import (
	"testing"

	"github.com/xsessiond/xsessiond/sessions"
	"github.com/xsessiond/xsessiond/sessions/sessionstest"
)

func TestListenerPair_UDPOnly(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	b := r.attach(0)
	uh := r.bind(a, "udp://10.0.0.1:53")
	th := r.bind(a, "tcp://10.0.0.1:80")
	p, w, err := r.l.ListenerPair(a, uh)
	wantErr(t, err, nil)
	if p.Rx == nil || p.Tx == nil || p.Segment == nil {
		t.Fatalf("udp listener pair %+v", p)
	}
	if int(w) >= r.l.Workers() {
		t.Fatalf("worker %d of %d", w, r.l.Workers())
	}
	_, _, err = r.l.ListenerPair(a, th)
	wantErr(t, err, sessions.ErrNotSupported)
	_, _, err = r.l.ListenerPair(b, uh)
	wantErr(t, err, sessions.ErrNotOwner)
	_, _, err = r.l.ListenerPair(a, sessions.MakeHandle(sessions.ListenerWorker, 999))
	wantErr(t, err, sessions.ErrAddressNotInUse)
	_, _, err = r.l.ListenerPair(999, uh)
	wantErr(t, err, sessions.ErrNotAttached)

	// The datapath saw the pair, its worker and the app's memory at Listen.
	_, listens, _, _ := r.dp.Calls()
	var seen *sessions.Listener
	for i := range listens {
		if listens[i].Handle == uh {
			seen = &listens[i]
		}
	}
	if seen == nil || seen.Pair.Rx != p.Rx || seen.Worker != w || seen.Memory == nil {
		t.Fatalf("Listen got %+v", seen)
	}
	if _, pairs, _, _ := r.mem.Live(); pairs != 1 {
		t.Fatalf("%d pairs live, want 1", pairs)
	}
	wantErr(t, r.l.Unbind(a, uh), nil)
	if _, pairs, _, _ := r.mem.Live(); pairs != 0 {
		t.Fatalf("%d pairs live after unbind", pairs)
	}
	_, _, err = r.l.ListenerPair(a, uh)
	wantErr(t, err, sessions.ErrAddressNotInUse)
}

func TestListenerPair_FreedAtDetach(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	r.bind(a, "udp://0.0.0.0:53")
	r.bind(a, "udp://[::]:53")
	if _, pairs, _, _ := r.mem.Live(); pairs != 2 {
		t.Fatalf("%d pairs live, want 2", pairs)
	}
	wantErr(t, r.l.Detach(a), nil)
	if apps, pairs, _, _ := r.mem.Live(); pairs != 0 || apps != 0 {
		t.Fatalf("after detach: %d apps, %d pairs live", apps, pairs)
	}
}

func TestListenerPair_NoMemoryRefusesBind(t *testing.T) {
	r := newRig(t)
	a := r.attachOpts(sessions.AttachOptions{MaxFifoMemory: sessions.DefaultFifoSize})
	_, err := r.l.BindURI(a, "udp://10.0.0.1:53")
	wantErr(t, err, sessions.ErrNoMemory)
	if len(r.l.Listeners()) != 0 {
		t.Fatal("listener published without its fifos")
	}
	// Nothing is left in the tables: a TCP bind of the same port works.
	r.bind(a, "tcp://10.0.0.1:53")
}

func TestListenerPair_ListenFailureFreesPair(t *testing.T) {
	r := newRig(t)
	a := r.attach(0)
	r.dp.SetFail(false, true)
	_, err := r.l.BindURI(a, "udp://10.0.0.1:53")
	wantErr(t, err, sessionstest.ErrInjected)
	if _, pairs, _, _ := r.mem.Live(); pairs != 0 {
		t.Fatalf("%d pairs live after a refused listen", pairs)
	}
}

// workerDP is a WorkerDatapath that puts every listener on one worker.
type workerDP struct {
	*sessionstest.Datapath
	worker uint32
}

func (d workerDP) ListenerWorker(sessions.Listener) uint32 { return d.worker }

func newWorkerRig(t *testing.T, worker uint32) *rig {
	t.Helper()
	r := newRig(t)
	l, err := sessions.New(sessions.Config{
		View: r.view, Memory: r.mem, Datapath: workerDP{r.dp, worker}, Notifier: r.note, Workers: 2,
		Default: sessions.NamespaceConfig{IfIndex: 2, FIB4: 1, FIB6: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	r.l = l
	return r
}

func TestWorkerDatapath_ChoosesWorker(t *testing.T) {
	r := newWorkerRig(t, 1)
	a := r.attach(0)
	for _, uri := range []string{"udp://10.0.0.1:53", "udp://10.0.0.1:54", "udp://[fd00::1]:53"} {
		_, w, err := r.l.ListenerPair(a, r.bind(a, uri))
		wantErr(t, err, nil)
		if w != 1 {
			t.Fatalf("%s: worker %d, want the datapath's choice 1", uri, w)
		}
	}
	bad := newWorkerRig(t, 7)
	b := bad.attach(0)
	_, err := bad.l.BindURI(b, "udp://10.0.0.1:53")
	wantErr(t, err, sessions.ErrInvalidValue)
	if _, pairs, _, _ := bad.mem.Live(); pairs != 0 {
		t.Fatal("pair allocated for a refused bind")
	}
}

// With a WorkerDatapath, fifo memory outlives the control-plane change
// until every shard drained its mailbox.
func TestWorkerDatapath_DeferredFree(t *testing.T) {
	r := newWorkerRig(t, 0)
	a := r.attach(0)
	lh := r.bind(a, "udp://10.0.0.1:53")
	h := r.established(a, 1, "udp://192.0.2.7:1000")
	r.drainShards()
	if _, pairs, _, _ := r.mem.Live(); pairs != 2 {
		t.Fatalf("%d pairs, want 2", pairs)
	}
	wantErr(t, r.l.Disconnect(a, h), nil)
	wantErr(t, r.l.Unbind(a, lh), nil)
	if _, pairs, _, _ := r.mem.Live(); pairs != 2 {
		t.Fatalf("%d pairs live before the shards drained, want 2", pairs)
	}
	r.l.Shard(0).Drain()
	if _, pairs, _, _ := r.mem.Live(); pairs != 2 {
		t.Fatalf("%d pairs live with one shard drained, want 2", pairs)
	}
	r.l.Shard(1).Drain()
	if _, pairs, _, _ := r.mem.Live(); pairs != 0 {
		t.Fatalf("%d pairs live after both shards drained", pairs)
	}

	// Detach: the memory closes after the drain, with the pairs in it.
	b := r.attach(0)
	r.bind(b, "udp://10.0.0.1:54")
	wantErr(t, r.l.Detach(b), nil)
	if r.memOf(b).Closed() {
		t.Fatal("app memory closed before the shards drained")
	}
	r.drainShards()
	if !r.memOf(b).Closed() {
		t.Fatal("app memory not closed after the shards drained")
	}
}
