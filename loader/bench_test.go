package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/flow"
)

// BenchmarkXDPProgram times the program in the kernel with
// BPF_PROG_TEST_RUN's repeat loop and reports the kernel's mean ns per
// packet as ns/op. The baseline "reference" is bpf/reference.c on the
// packets of listener-hit and established-hit: the least a steering
// program does (parse to the ports, one hash lookup on the 5-tuple, the
// redirect), so listener-hit/reference and established-hit/reference are
// what the program costs over that. "floor" is an XDP_PASS-only program:
// the cost of the test-run loop and program dispatch, which every case
// includes.
//
// All cases use UDP over IPv4 frames (60 bytes with padding). Hits go to slot 0 of the
// xsks map, which holds an (unbound) AF_XDP socket, so bpf_redirect_map
// succeeds and the program returns XDP_REDIRECT; the test run does not
// deliver the frame, so the cost of the actual redirect is not included.
//
// Every case runs on one CPU, the same for all (onOneCPU): the test run
// measures on its caller's CPU, and a VM's vCPUs may differ in speed.
func BenchmarkXDPProgram(b *testing.B) {
	// As the datapath loads it: the MAC and the local addresses checked
	// (a wildcard hit pays the locals lookup).
	o := progEnvWith(b, ObjectsOptions{Queues: 4, MAC: macLocal, CheckLocal: true})
	if err := o.Locals.Set([]netip.Addr{v4Local, v6Local}); err != nil {
		b.Fatal(err)
	}
	floor := passProgram(b, "floor")
	// Port 9020: an exact listener and an established session, so a
	// listener hit pays for the established lookup first (a TCP server's
	// port). Port 9010: entries of every kind, all on another interface.
	for _, err := range []error{
		o.Listeners.Put(testIfindex, listener(17, v4Local, 9020), Value{}),
		o.Established.Put(testIfindex, tuple(17, v4Local, 9020, v4Remote, 5557), Value{}),
		o.Listeners.Put(otherIfindex, listener(17, v4Local, 9010), Value{}),
		o.Listeners.Put(otherIfindex, listener(17, zero4, 9010), Value{}),
		o.Established.Put(otherIfindex, tuple(17, v4Local, 9010, v4Remote, 5556), Value{}),
	} {
		if err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range []struct {
		name string
		pkt  []byte
		want uint32
		hit  func(*Counters)
	}{
		// A listener hit on the exact address; no session uses the port,
		// so the established lookup is skipped.
		{"listener-hit", udp4Frame(b, 5556, 9000), xdpRedirect, exactHit},
		// An established miss, then a listener hit on the exact address.
		{"listener-hit-shared-port", udp4Frame(b, 5556, 9020), xdpRedirect, exactHit},
		// An established miss (port 9001 has a session), no exact
		// listener on the port, a wildcard hit.
		{"listener-wildcard-hit", udp4Frame(b, 5556, 9001), xdpRedirect, wildHit},
		// An established hit.
		{"established-hit", udp4Frame(b, 5555, 9001), xdpRedirect, estHit},
		// A port nothing is bound to: no hash lookup.
		{"miss", udp4Frame(b, 5556, 9999), xdpPass, noMatch},
		// Three lookups, all missing.
		{"miss-all-lookups", udp4Frame(b, 5556, 9010), xdpPass, noMatch},
	} {
		b.Run(c.name, func(b *testing.B) {
			onOneCPU(b)
			before, _ := o.Counters.Read()
			if got := runXDP(b, o.Program(), c.pkt); got != c.want {
				b.Fatalf("verdict %d, want %d", got, c.want)
			}
			after, _ := o.Counters.Read()
			var want Counters
			c.hit(&want)
			if d := after.Sub(before); !sameReason(d, want) {
				b.Fatalf("counters moved by%s", fmtCounters(d))
			}
			ret, per, err := o.Program().Benchmark(c.pkt, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if ret != c.want {
				b.Fatalf("verdict %d in the benchmark loop", ret)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/op")
		})
	}
	ref := referenceProgram(b, o, []flow.FiveTuple{
		tuple(17, v4Local, 9000, v4Remote, 5556), // listener-hit's packet
		tuple(17, v4Local, 9001, v4Remote, 5555), // established-hit's packet
	})
	if got := runXDP(b, ref, udp4Frame(b, 5556, 9999)); got != xdpPass {
		b.Fatalf("reference verdict %d on a miss, want %d", got, xdpPass)
	}
	// "reference" on listener-hit's packet, "reference-established-hit" on
	// established-hit's: the same work for the reference, one hit each.
	for _, c := range []struct {
		name string
		pkt  []byte
	}{
		{"reference", udp4Frame(b, 5556, 9000)},
		{"reference-established-hit", udp4Frame(b, 5555, 9001)},
	} {
		b.Run(c.name, func(b *testing.B) {
			onOneCPU(b)
			if got := runXDP(b, ref, c.pkt); got != xdpRedirect {
				b.Fatalf("verdict %d, want %d", got, xdpRedirect)
			}
			ret, per, err := ref.Benchmark(c.pkt, b.N, b.ResetTimer)
			if err != nil {
				b.Fatal(err)
			}
			if ret != xdpRedirect {
				b.Fatalf("verdict %d in the benchmark loop", ret)
			}
			b.ReportMetric(float64(per.Nanoseconds()), "ns/op")
		})
	}
	b.Run("floor", func(b *testing.B) {
		onOneCPU(b)
		ret, per, err := floor.Benchmark(udp4Frame(b, 5556, 9000), b.N, b.ResetTimer)
		if err != nil {
			b.Fatal(err)
		}
		if ret != xdpPass {
			b.Fatalf("verdict %d", ret)
		}
		b.ReportMetric(float64(per.Nanoseconds()), "ns/op")
	})
}

// onOneCPU keeps the rest of benchmark b on the first CPU the process may
// run on, the same for every case: BPF_PROG_TEST_RUN runs the program on
// its caller's CPU, and the vCPUs of a VM may differ in speed (on the
// 2-vCPU VM of docs/perf, one ran these programs 1.7-1.9x slower than the
// other), so cases that ran on different CPUs would compare the CPUs.
func onOneCPU(b *testing.B) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		b.Fatal(err)
	}
	cpu := -1
	for i := 0; i < len(all)*64 && cpu < 0; i++ {
		if all.IsSet(i) {
			cpu = i
		}
	}
	if cpu < 0 {
		b.Fatal("no CPU in the affinity mask")
	}
	runtime.LockOSThread()
	var one unix.CPUSet
	one.Set(cpu)
	if err := unix.SchedSetaffinity(0, &one); err != nil {
		runtime.UnlockOSThread()
		b.Fatal(err)
	}
	b.Cleanup(func() {
		unix.SchedSetaffinity(0, &all)
		runtime.UnlockOSThread()
	})
}

// sameReason reports whether d moved the reason counters of want.
func sameReason(d, want Counters) bool {
	return d.EstablishedHit == want.EstablishedHit && d.ListenerExactHit == want.ListenerExactHit &&
		d.ListenerWildcardHit == want.ListenerWildcardHit && d.NoMatch == want.NoMatch
}

// referenceProgram loads bpf/reference.c with its xsks map replaced by
// o's (so it redirects to the same socket) and hits in its flow map.
func referenceProgram(tb testing.TB, o *Objects, hits []flow.FiveTuple) *ebpf.Program {
	tb.Helper()
	spec, err := loadReference()
	if err != nil {
		tb.Fatal(err)
	}
	spec.Maps["xsks"].MaxEntries = o.XSKs.m.MaxEntries()
	var objs referenceObjects
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{"xsks": o.XSKs.m},
	})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			tb.Fatalf("load reference program: %+v", ve)
		}
		tb.Fatalf("load reference program: %v", err)
	}
	tb.Cleanup(func() { objs.Close() })
	for _, t := range hits {
		k, err := estKey(testIfindex, &t)
		if err != nil {
			tb.Fatal(err)
		}
		if err := objs.Flows.Put(referenceXsEstKey(k), referenceXsValue{Fib: 1}); err != nil {
			tb.Fatal(fmt.Errorf("put reference flow: %w", err))
		}
	}
	return objs.ReferenceXdp
}

// TestReferenceProgram checks the benchmark's baseline steers what it
// claims to: a hit on the 5-tuple of UDP and TCP over IPv4 and IPv6 is
// redirected, anything else passed.
func TestReferenceProgram(t *testing.T) {
	o := progEnv(t)
	ref := referenceProgram(t, o, []flow.FiveTuple{
		tuple(flow.TransportUDP, v4Local, 9000, v4Remote, 5556),
		tuple(flow.TransportTCP, v4Local, 80, v4Remote, 5556),
		tuple(flow.TransportUDP, v6Local, 9000, v6Remote, 5556),
		tuple(flow.TransportTCP, v6Local, 443, v6Remote, 5556),
	})
	for _, c := range []struct {
		name string
		pkt  []byte
		want uint32
	}{
		{"udp4 hit", udp4Frame(t, 5556, 9000), xdpRedirect},
		{"tcp4 hit", tcp4Frame(t, 5556, 80), xdpRedirect},
		{"udp6 hit", udp6Frame(t, 5556, 9000), xdpRedirect},
		{"tcp6 hit", tcp6Frame(t, 5556, 443), xdpRedirect},
		{"udp4 other source port", udp4Frame(t, 5557, 9000), xdpPass},
		{"tcp4 on a udp tuple", tcp4Frame(t, 5556, 9000), xdpPass},
		{"udp6 on a tcp tuple", udp6Frame(t, 5556, 443), xdpPass},
		{"truncated", udp4Frame(t, 5556, 9000)[:14+20+2], xdpPass},
	} {
		if got := runXDP(t, ref, c.pkt); got != c.want {
			t.Errorf("%s: verdict %d, want %d", c.name, got, c.want)
		}
	}
}

// BenchmarkEstablishedDump reads an established map of 10,000 entries, as
// the mirror's periodic check does: "batched" is dumpMap's batched read,
// "iterate" the iteration it replaced (the next key, then the value, two
// system calls per entry), the baseline for the same work.
func BenchmarkEstablishedDump(b *testing.B) {
	const n = 10000
	o := loadObjects(b, ObjectsOptions{Queues: 1, MaxListeners: 8, MaxEstablished: n})
	tu := tuple(flow.TransportTCP, v4Local, 80, v4Remote, 0)
	for i := range n {
		tu.RemotePort = uint16(1 + i)
		if err := o.Established.Put(testIfindex, tu, Value{Handle: flow.Handle(i)}); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("batched", func(b *testing.B) {
		for b.Loop() {
			if m, err := dumpBatched[xsessionXsEstKey](o.Established.m); err != nil || len(m) != n {
				b.Fatalf("%d entries, %v", len(m), err)
			}
		}
	})
	b.Run("iterate", func(b *testing.B) {
		var k xsessionXsEstKey
		var v xsessionXsValue
		for b.Loop() {
			seen := 0
			it := o.Established.m.Iterate()
			for it.Next(&k, &v) {
				seen++
			}
			if it.Err() != nil || seen != n {
				b.Fatalf("%d entries, %v", seen, it.Err())
			}
		}
	})
}
