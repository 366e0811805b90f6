package main

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestRemoteGen runs perf gen's sender, with each generator, in host A of
// the rig as on a generator machine (paced at 20,000 frames/s for 300 ms,
// 4 flows) into a UDP socket of host B: what it reports as sent arrives,
// and its output says so.
func TestRemoteGen(t *testing.T) {
	p := nstest.NewPair(t, nstest.Options{})
	restore, err := xsktest.EnableGRO(p.B) // XDP frames need NAPI at B's veth
	if err != nil {
		t.Fatal(err)
	}
	defer restore()
	const port = 9100
	conn, err := p.B.ListenUDP(netip.AddrPortFrom(p.B.IPv4, port), 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var got atomic.Uint64
	go func() {
		buf := make([]byte, 2048)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			if n == 64 {
				got.Add(1)
			}
		}
	}()
	for _, kind := range []string{genPacket, genXDP} {
		o := remoteGenOpts{iface: p.A.Link, gen: kind, dstMAC: p.B.MAC, dst: p.B.IPv4, port: port,
			payload: 64, flows: 4, rate: 20000, dur: 300 * time.Millisecond}
		before := got.Load()
		// What B drops for want of room (its socket buffer full, as the
		// reader may be held off a loaded machine's CPUs for long enough;
		// its veth's backlog) is counted, and explains a frame that did
		// not arrive.
		dropped := func() uint64 {
			u, err := readUDP(p.B)
			if err != nil {
				t.Fatal(err)
			}
			ls, err := linkStats(p.B)
			if err != nil {
				t.Fatal(err)
			}
			return u.rcvbufErrors + ls.RxDropped
		}
		dropsBefore := dropped()
		var out bytes.Buffer
		var sent uint64
		if err := p.A.Do(func() (err error) {
			sent, err = remoteGen(context.Background(), o, &out)
			return err
		}); err != nil {
			t.Fatalf("%s: %v\n%s", kind, err, out.String())
		}
		var arrived, lost uint64
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			arrived, lost = got.Load()-before, dropped()-dropsBefore
			if arrived+lost >= sent || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("%s: sent %d, arrived %d, dropped and counted by B %d; output:\n%s", kind, sent, arrived, lost, out.String())
		if sent < 1000 || arrived+lost != sent || arrived < sent/2 {
			t.Fatalf("%s: sent %d, arrived %d, dropped and counted %d", kind, sent, arrived, lost)
		}
		if !strings.Contains(out.String(), "sent ") {
			t.Fatalf("%s: no total in the output:\n%s", kind, out.String())
		}
	}
	o := remoteGenOpts{iface: p.A.Link, gen: "bogus", dur: time.Millisecond}
	if _, err := remoteGen(context.Background(), o, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "want packet or xdp") {
		t.Fatalf("--gen bogus: %v", err)
	}
}
