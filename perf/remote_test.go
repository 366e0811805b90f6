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
		var out bytes.Buffer
		var sent uint64
		if err := p.A.Do(func() (err error) {
			sent, err = remoteGen(context.Background(), o, &out)
			return err
		}); err != nil {
			t.Fatalf("%s: %v\n%s", kind, err, out.String())
		}
		var arrived uint64
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if arrived = got.Load() - before; arrived >= sent || time.Now().After(deadline) {
				break
			}
		}
		t.Logf("%s: sent %d, arrived %d; output:\n%s", kind, sent, arrived, out.String())
		if sent < 1000 || arrived != sent {
			t.Fatalf("%s: sent %d, arrived %d", kind, sent, arrived)
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
