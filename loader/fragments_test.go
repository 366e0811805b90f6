package loader

import (
	"errors"
	"testing"

	"github.com/gopacket/gopacket/layers"

	"github.com/xsessiond/xsessiond/flow"
)

// put writes the record of k as the program would.
func (f *FragmentMap) put(k FragmentKey, fr Fragment) error {
	rk, err := k.raw()
	if err != nil {
		return err
	}
	return f.m.Put(&rk, &xsessionXsFragValue{SeenNs: fr.SeenNs, Verdict: uint32(fr.Verdict)})
}

// fragKey is the fragments map's key of the test packets' datagram id.
func fragKey(family uint8, id uint32) FragmentKey {
	k := FragmentKey{IfIndex: testIfindex, Family: family, Proto: flow.TransportUDP, ID: id}
	if family == flow.Family4 {
		k.Src, k.Dst = flow.AddrBytes(v4Remote), flow.AddrBytes(v4Local)
	} else {
		k.Src, k.Dst = flow.AddrBytes(v6Remote), flow.AddrBytes(v6Local)
	}
	return k
}

// TestProgramFragments runs the fragments of UDP datagrams through the
// program and checks the verdicts, the counters and the fragments map
// after each, and that the model agrees.
func TestProgramFragments(t *testing.T) {
	o := progEnv(t)
	body := make([]byte, 64)
	head := func(dport uint16) []byte { return udpHead(5556, dport, 3000, body) }
	f4 := func(id uint16, off uint16, more bool, b []byte) []byte {
		return frag4Frame(t, layers.IPProtocolUDP, id, off, more, b)
	}
	f6 := func(id uint32, off uint16, more bool, b []byte) []byte {
		return frag6Frame(t, layers.IPProtocolUDP, id, off, more, b, 0)
	}
	k4 := func(id uint16) FragmentKey { return fragKey(flow.Family4, uint32(id)) }
	k6 := func(id uint32) FragmentKey { return fragKey(flow.Family6, id) }
	long := uint64(DefaultFragmentTTL) + 1e9 // older than the TTL by a second

	type step struct {
		name  string
		setup func() error // before the packet, if set
		pkt   []byte
		want  uint32
		cnt   Counters
		key   FragmentKey
		entry FragmentVerdict // the entry's verdict after the packet; 0: none
	}
	steps := []step{
		{name: "udp4 first fragment to a listener", pkt: f4(1, 0, true, head(9000)),
			want: xdpRedirect, cnt: redirected(fragHit), key: k4(1), entry: FragmentOurs},
		{name: "udp4 its next fragment", pkt: f4(1, 9, true, body),
			want: xdpRedirect, cnt: redirected(fragHit), key: k4(1), entry: FragmentOurs},
		{name: "udp4 its last fragment", pkt: f4(1, 17, false, body),
			want: xdpRedirect, cnt: redirected(fragHit), key: k4(1), entry: FragmentOurs},
		{name: "udp6 first fragment to a listener", pkt: f6(1, 0, true, head(9000)),
			want: xdpRedirect, cnt: redirected(fragHit), key: k6(1), entry: FragmentOurs},
		{name: "udp6 its last fragment", pkt: f6(1, 9, false, body),
			want: xdpRedirect, cnt: redirected(fragHit), key: k6(1), entry: FragmentOurs},

		{name: "udp4 later fragment of an unknown datagram", pkt: f4(2, 9, false, body),
			want: xdpPass, cnt: passed(fragment), key: k4(2), entry: FragmentKernel},
		{name: "udp4 then its first fragment, to a listener", pkt: f4(2, 0, true, head(9000)),
			want: xdpPass, cnt: passed(fragment), key: k4(2), entry: FragmentKernel},
		{name: "udp6 later fragment of an unknown datagram", pkt: f6(2, 9, false, body),
			want: xdpPass, cnt: passed(fragment), key: k6(2), entry: FragmentKernel},
		{name: "udp6 then its first fragment, to a listener", pkt: f6(2, 0, true, head(9000)),
			want: xdpPass, cnt: passed(fragment), key: k6(2), entry: FragmentKernel},

		{name: "udp4 first fragment to an unbound port writes nothing", pkt: f4(3, 0, true, head(9999)),
			want: xdpPass, cnt: passed(fragment), key: k4(3)},
		{name: "udp4 its later fragment", pkt: f4(3, 9, false, body),
			want: xdpPass, cnt: passed(fragment), key: k4(3), entry: FragmentKernel},

		{name: "tcp4 fragment to a listener", pkt: frag4Frame(t, layers.IPProtocolTCP, 4, 0, true, tcp4Frame(t, 5556, 80)[34:]),
			want: xdpPass, cnt: passed(fragment), key: k4(4)},
		{name: "udp4 first fragment whose udp length exceeds it", pkt: f4(5, 0, true, udpHead(5556, 9000, 65000, body)),
			want: xdpRedirect, cnt: redirected(fragHit), key: k4(5), entry: FragmentOurs},

		{name: "udp4 stale kernel entry, first fragment hits",
			setup: func() error {
				return o.Fragments.put(k4(6), Fragment{Verdict: FragmentKernel, SeenNs: monoNow() - long})
			},
			pkt: f4(6, 0, true, head(9000)), want: xdpRedirect, cnt: redirected(fragHit), key: k4(6), entry: FragmentOurs},
		{name: "udp6 stale kernel entry, first fragment hits",
			setup: func() error {
				return o.Fragments.put(k6(6), Fragment{Verdict: FragmentKernel, SeenNs: monoNow() - long})
			},
			pkt: f6(6, 0, true, head(9000)), want: xdpRedirect, cnt: redirected(fragHit), key: k6(6), entry: FragmentOurs},
		{name: "udp4 stale ours entry, later fragment",
			setup: func() error { return o.Fragments.put(k4(7), Fragment{Verdict: FragmentOurs, SeenNs: monoNow() - long}) },
			pkt:   f4(7, 9, false, body), want: xdpPass, cnt: passed(fragment), key: k4(7), entry: FragmentKernel},
		{name: "udp4 fresh kernel entry, first fragment to a listener",
			setup: func() error { return o.Fragments.put(k4(8), Fragment{Verdict: FragmentKernel, SeenNs: monoNow()}) },
			pkt:   f4(8, 0, true, head(9000)), want: xdpPass, cnt: passed(fragment), key: k4(8), entry: FragmentKernel},
		{name: "udp4 unknown verdict counts as none",
			setup: func() error { return o.Fragments.put(k4(9), Fragment{Verdict: 7, SeenNs: monoNow()}) },
			pkt:   f4(9, 9, false, body), want: xdpPass, cnt: passed(fragment), key: k4(9), entry: FragmentKernel},

		{name: "udp4 fresh ours entry, exact listener gone, the wildcard hits",
			setup: func() error {
				if err := o.Fragments.put(k4(10), Fragment{Verdict: FragmentOurs, SeenNs: monoNow()}); err != nil {
					return err
				}
				return o.Listeners.Delete(testIfindex, listener(flow.TransportUDP, v4Local, 9000))
			},
			pkt: f4(10, 0, true, head(9000)), want: xdpRedirect, cnt: redirected(fragHit), key: k4(10), entry: FragmentOurs},
		{name: "udp4 fresh ours entry, first fragment misses (all listeners gone)",
			setup: func() error {
				if err := o.Fragments.put(k4(11), Fragment{Verdict: FragmentOurs, SeenNs: monoNow()}); err != nil {
					return err
				}
				return o.Listeners.Delete(testIfindex, listener(flow.TransportUDP, zero4, 9000))
			},
			pkt: f4(11, 0, true, head(9000)), want: xdpPass, cnt: passed(fragment), key: k4(11), entry: FragmentKernel},
		{name: "udp4 its later fragment", pkt: f4(11, 9, false, body),
			want: xdpPass, cnt: passed(fragment), key: k4(11), entry: FragmentKernel},
		{name: "udp4 fresh ours entry, malformed first fragment",
			setup: func() error { return o.Fragments.put(k4(12), Fragment{Verdict: FragmentOurs, SeenNs: monoNow()}) },
			pkt:   f4(12, 0, true, udpHead(5556, 9001, 7, body)), want: xdpPass, cnt: malformed(badLength), key: k4(12), entry: FragmentKernel},

		// The kernel's IPv6 reassembly takes the datagram's next header
		// from its first fragment: a later one goes with it whatever its
		// own says.
		{name: "udp6 first fragment to a listener, its later ones naming others", pkt: f6(13, 0, true, head(9000)),
			want: xdpRedirect, cnt: redirected(fragHit), key: k6(13), entry: FragmentOurs},
		{name: "udp6 a later fragment naming tcp", pkt: frag6Frame(t, layers.IPProtocolTCP, 13, 9, true, body, 0),
			want: xdpRedirect, cnt: redirected(fragHit), key: k6(13), entry: FragmentOurs},
		{name: "udp6 the last naming no next header", pkt: frag6Frame(t, layers.IPProtocolNoNextHeader, 13, 17, false, body, 0),
			want: xdpRedirect, cnt: redirected(fragHit), key: k6(13), entry: FragmentOurs},
		{name: "udp6 a later fragment naming tcp, its datagram unknown", pkt: frag6Frame(t, layers.IPProtocolTCP, 14, 9, false, body, 0),
			want: xdpPass, cnt: passed(fragment), key: k6(14), entry: FragmentKernel},
		{name: "udp6 then its first fragment, to a listener", pkt: f6(14, 0, true, head(9000)),
			want: xdpPass, cnt: passed(fragment), key: k6(14), entry: FragmentKernel},
		{name: "tcp6 first fragment to a listener writes nothing", pkt: frag6Frame(t, layers.IPProtocolTCP, 15, 0, true, head(9000), 0),
			want: xdpPass, cnt: passed(fragment), key: k6(15)},
	}
	for _, s := range steps {
		if s.setup != nil {
			if err := s.setup(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
		}
		model, err := modelRun(o, testIfindex, s.pkt)
		if err != nil {
			t.Fatalf("%s: model: %v", s.name, err)
		}
		before, _ := o.Counters.Read()
		got := runXDP(t, o.Program(), s.pkt)
		after, _ := o.Counters.Read()
		if got != s.want {
			t.Errorf("%s: verdict %d, want %d", s.name, got, s.want)
		}
		if d := after.Sub(before); d != s.cnt {
			t.Errorf("%s: counters moved by%s, want%s", s.name, fmtCounters(d), fmtCounters(s.cnt))
		}
		fr, err := o.Fragments.Lookup(s.key)
		switch {
		case s.entry == 0 && !errors.Is(err, ErrNotFound):
			t.Errorf("%s: entry %+v (%v), want none", s.name, fr, err)
		case s.entry != 0 && (err != nil || fr.Verdict != s.entry):
			t.Errorf("%s: entry %+v (%v), want %v", s.name, fr, err, s.entry)
		case s.entry != 0 && !fr.Fresh(monoNow(), DefaultFragmentTTL):
			t.Errorf("%s: entry %+v is stale", s.name, fr)
		}
		if model.reason != reasonOf(s.cnt) {
			t.Errorf("%s: the model says %q, the step %q", s.name, model.reason, reasonOf(s.cnt))
		} else if err := model.check(o); err != nil {
			t.Errorf("%s: %v", s.name, err)
		}
	}
}

// TestFragmentKeyByteOrder checks the identification's byte order in the
// key: host order, as a number, for both families.
func TestFragmentKeyByteOrder(t *testing.T) {
	o := progEnv(t)
	runXDP(t, o.Program(), frag4Frame(t, layers.IPProtocolUDP, 0x1234, 0, true, udpHead(5556, 9000, 3000, nil)))
	runXDP(t, o.Program(), frag6Frame(t, layers.IPProtocolUDP, 0x12345678, 0, true, udpHead(5556, 9000, 3000, nil), 0))
	es, err := o.Fragments.Entries()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uint8]uint32{}
	for _, e := range es {
		if e.Key.IfIndex != testIfindex || e.Key.Proto != flow.TransportUDP || e.Fragment.Verdict != FragmentOurs {
			t.Errorf("entry %+v", e)
		}
		ids[e.Key.Family] = e.Key.ID
	}
	if len(es) != 2 || ids[flow.Family4] != 0x1234 || ids[flow.Family6] != 0x12345678 {
		t.Errorf("entries %+v", es)
	}
}

// TestFragmentMapSize checks that MaxFragments sizes the map.
func TestFragmentMapSize(t *testing.T) {
	o := loadObjects(t, ObjectsOptions{MaxFragments: 100})
	if n := o.objs.Fragments.MaxEntries(); n != 100 {
		t.Errorf("%d entries, want 100", n)
	}
	o = loadObjects(t, ObjectsOptions{})
	if n := o.objs.Fragments.MaxEntries(); n != DefaultMaxFragments {
		t.Errorf("%d entries by default, want %d", n, DefaultMaxFragments)
	}
	if _, err := o.Fragments.Lookup(FragmentKey{IfIndex: 1, Family: 5}); !errors.Is(err, ErrInvalidKey) {
		t.Errorf("lookup of family 5: %v, want ErrInvalidKey", err)
	}
}
