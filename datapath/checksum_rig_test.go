package datapath_test

import (
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestChecksumModes: a kernel client on a default veth (tx offload on)
// sends datagrams with partial checksums. Auto (a veth) and
// accept-partial deliver and echo every one, counted as partial-csum;
// verify drops every one as bad-udp-csum.
func TestChecksumModes(t *testing.T) {
	for _, mode := range []string{"", datapath.ChecksumAcceptPartial, datapath.ChecksumVerify} {
		name := mode
		if name == "" {
			name = "auto"
		}
		t.Run(name, func(t *testing.T) {
			r := newEngineRigWith(t, 1, 1520, func(c *datapath.Config) { c.Checksum = mode })
			st := r.eng.Stats()
			wantMode := map[string]string{"": "accept-partial (auto, driver veth)", datapath.ChecksumAcceptPartial: "accept-partial",
				datapath.ChecksumVerify: "verify"}[mode]
			if st.Checksum != wantMode {
				t.Fatalf("checksum mode %q, want %q", st.Checksum, wantMode)
			}
			a := r.attach(t)
			r.listenEcho(t, a, "udp://0.0.0.0:9000")
			r.listenEcho(t, a, "udp://[::]:9000")
			const n = 2000
			total := 0
			for _, fam := range []struct{ src, dst netip.Addr }{{r.p.A.IPv4, r.p.B.IPv4}, {r.p.A.IPv6, r.p.B.IPv6}} {
				k := n
				if mode == datapath.ChecksumVerify {
					k = 200 // nothing comes back: each costs the client's read timeout once, at the end
				}
				window := 32
				if mode == datapath.ChecksumVerify {
					window = 0
				}
				res := runClient(t, r.p.A, netip.AddrPortFrom(fam.src, 0), netip.AddrPortFrom(fam.dst, 9000), k, 1472, window, 3)
				total += k
				want := k
				if mode == datapath.ChecksumVerify {
					want = -1 // the few the kernel completed come back
				}
				if res.sent != k || (want >= 0 && res.received != want) || (want < 0 && res.received > k/10) || res.mismatched != 0 {
					// The engine's counts tell a loss it saw (fill ring,
					// rx ring, fifo) from one it never saw.
					st := r.eng.Stats()
					for _, q := range st.Queues {
						t.Logf("queue %d: %+v xsk %+v", q.Queue, q.Counts, q.XSK)
					}
					logHostDrops(t, r.p.A)
					t.Fatalf("%v: sent %d received %d mismatched %d, want %d back; engine totals %+v", fam.dst, res.sent, res.received, res.mismatched, want, st.Totals)
				}
			}
			// A worker publishes its counters every few loops and when it
			// goes idle, so the last replies can reach the client before
			// the counts of their datagrams are visible: wait for them
			// (bounded) before judging.
			deadline := time.Now().Add(5 * time.Second)
			for st = r.eng.Stats(); st.Totals.Rx < uint64(total) && time.Now().Before(deadline); st = r.eng.Stats() {
				time.Sleep(10 * time.Millisecond)
			}
			t.Logf("mode %s: totals %+v", st.Checksum, st.Totals)
			if mode == datapath.ChecksumVerify {
				if st.Totals.PartialCsum != 0 || st.Totals.Drops["bad-udp-csum"] < uint64(total)*9/10 || st.Totals.Delivered+st.Totals.Drops["bad-udp-csum"] != uint64(total) {
					t.Fatalf("verify: partial %d, drops %v, delivered %d; want %d bad-udp-csum", st.Totals.PartialCsum, st.Totals.Drops, st.Totals.Delivered, total)
				}
				if _, ok := st.Totals.Drops["partial-csum"]; ok {
					t.Fatal("partial-csum counted as a drop")
				}
				return
			}
			// Most datagrams carry partial checksums; the kernel completes
			// an odd one in software.
			if st.Totals.PartialCsum < uint64(total)*9/10 || st.Totals.Delivered != uint64(total) || st.Totals.Dropped != 0 {
				t.Fatalf("partial %d delivered %d drops %v, want %d delivered, most partial, no drop", st.Totals.PartialCsum, st.Totals.Delivered, st.Totals.Drops, total)
			}
			if strings.Contains(st.Checksum, "verify") {
				t.Fatalf("mode %q", st.Checksum)
			}
		})
	}
}

// logHostDrops logs what host h's kernel counted against UDP and its
// links (the UDP and UDP6 lines of its SNMP counters, its interfaces'
// drops) and the machine's softnet drops: where a reply the engine put on
// its tx ring may have been lost.
func logHostDrops(t *testing.T, h *nstest.Host) {
	t.Helper()
	_ = h.Do(func() error {
		for _, f := range []string{"/proc/thread-self/net/snmp", "/proc/thread-self/net/snmp6", "/proc/thread-self/net/dev"} {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Logf("%s: %v", f, err)
				continue
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.HasPrefix(l, "Udp") || strings.HasPrefix(l, "Ip") || strings.Contains(l, ":") && strings.Contains(f, "/dev") {
					t.Logf("%s %s: %s", h.Name, f[len("/proc/thread-self/net/"):], l)
				}
			}
		}
		return nil
	})
	if b, err := os.ReadFile("/proc/net/softnet_stat"); err == nil {
		t.Logf("softnet_stat (processed, dropped, squeezed ... per CPU):\n%s", b)
	}
}
