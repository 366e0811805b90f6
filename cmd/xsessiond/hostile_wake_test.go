package main

import (
	"context"
	"encoding/binary"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/fifo/fifotest"
	"github.com/xsessiond/xsessiond/flow"
)

// fdKind is what descriptor fd of this process is ("anon_inode:[eventfd]",
// "anon_inode:[eventpoll]", ...).
func fdKind(t *testing.T, fd int) string {
	t.Helper()
	l, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestHostileWakeDescriptors runs a hostile app against the daemon binary:
// it does to every eventfd it is given what a holder can (empty it, make
// its open file blocking, fill it to the limit and keep it full), the one
// that wakes the honest app it opened a cut-through session to included,
// while a kernel client on host A echoes through that honest app. The
// daemon passes no app an eventfd it writes itself: the app's wake-up
// descriptor is an epoll set, and the honest app's echoes all come back.
// (When the eventfd a peer got was the honest app's own, which the daemon
// writes too, each of the daemon's signals to it waited until the honest
// app's read won a race against the refill: the echoes still came back,
// at six times the p99.)
func TestHostileWakeDescriptors(t *testing.T) {
	rig, sock, _ := startRigDaemon(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	honest, err := app.Attach(ctx, app.Options{Socket: sock, Name: "honest", Scope: flow.ScopeLocal | flow.ScopeGlobal})
	if err != nil {
		t.Fatal(err)
	}
	defer honest.Close()
	echoServer(t, honest, 9000)
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Fatal(err)
	}

	r := dialRaw(t, sock)
	rep, fds, err := r.callFDs(&api.Attach{Name: "hostile", Scope: flow.ScopeLocal | flow.ScopeGlobal})
	if err != nil {
		t.Fatalf("hostile attach: %v", err)
	}
	defer api.CloseFDs(fds)
	ar := rep.(*api.AttachReply)
	wake := fds[len(ar.Segments)]
	if k := fdKind(t, wake); k != "anon_inode:[eventpoll]" {
		t.Fatalf("the app's wake-up descriptor is %s, want an epoll set", k)
	}
	for _, k := range fds[len(ar.Segments)+1:] {
		fifotest.PoisonEventfd(t, k) // its kick eventfds, which workers read
	}
	rep, cfds, err := r.callFDs(&api.Connect{URI: "udp://127.0.0.1:9000"})
	if err != nil {
		t.Fatalf("hostile connect: %v", err)
	}
	defer api.CloseFDs(cfds)
	if cr := rep.(*api.ConnectReply); !cr.CutThrough || len(cfds) != 2 {
		t.Fatalf("connect: cut-through %v with %d descriptors, want a cut-through session with 2", cr.CutThrough, len(cfds))
	}
	if k := fdKind(t, cfds[1]); k != "anon_inode:[eventfd]" {
		t.Fatalf("the descriptor that wakes the peer is %s, want an eventfd", k)
	}
	// It keeps the counter full: each time a reader empties it, the
	// blocked write below fills it again. Only the honest app's reads
	// could empty it, and it has nothing to read.
	fifotest.PoisonEventfd(t, cfds[1])
	var stop atomic.Bool
	refilled := make(chan struct{})
	go func() {
		defer close(refilled)
		var most [8]byte
		binary.NativeEndian.PutUint64(most[:], 1<<64-2)
		for !stop.Load() {
			if _, err := unix.Write(cfds[1], most[:]); err != nil {
				return
			}
		}
	}()
	defer func() {
		stop.Store(true)
		var b [8]byte
		unix.Read(cfds[1], b[:]) // lets the blocked write end
		<-refilled
	}()

	rtts, lost := echoRTTs(t, rig, 9000, 1000, 3*time.Second)
	t.Logf("honest app's echo beside the hostile one: %d echoes, %d lost, p99 %v", len(rtts), lost, pct(rtts, .99))
	if lost > 0 || len(rtts) == 0 {
		t.Fatalf("the honest app lost %d of %d echoes", lost, len(rtts)+lost)
	}
}
