package loader

import (
	"testing"
)

// FuzzXDPProgram runs the program on arbitrary frames and checks the
// invariants of its verdicts and counters: every frame is passed or
// redirected, counted once as such and under exactly one reason, malformed
// frames are counted as malformed, and only hits are redirected. The reason
// must be the one a Go model of the parsing rules gives (modelRun), from
// the maps as they were before the run, and a UDP fragment must leave its
// datagram's entry in the fragments map as the model says.
func FuzzXDPProgram(f *testing.F) {
	o := progEnv(f)
	for _, c := range progCases(f) {
		f.Add(c.pkt)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		// BPF_PROG_TEST_RUN takes frames from an Ethernet header to a
		// page (less head- and tailroom).
		if len(pkt) < 14 || len(pkt) > 3000 {
			return
		}
		model, err := modelRun(o, testIfindex, pkt)
		if err != nil {
			t.Fatal(err)
		}
		before, err := o.Counters.Read()
		if err != nil {
			t.Fatal(err)
		}
		ret := runXDP(t, o.Program(), pkt)
		after, err := o.Counters.Read()
		if err != nil {
			t.Fatal(err)
		}
		d := after.Sub(before)
		hits := d.EstablishedHit + d.ListenerExactHit + d.ListenerWildcardHit + d.FragmentHit
		bad := d.TruncEth + d.TruncVLAN + d.TruncIPv4 + d.TruncIPv6 + d.TruncExt + d.TruncUDP + d.TruncTCP +
			d.BadVersion + d.BadIHL + d.BadLength + d.BadTCPOffset
		reasons := hits + bad + d.NotIP + d.VLANDepth + d.Fragment + d.ExtHeader + d.NotL4 + d.NoMatch + d.OtherHost + d.NotLocal
		switch {
		case ret != xdpPass && ret != xdpRedirect:
			t.Fatalf("verdict %d", ret)
		case d.Pass+d.Redirect != 1 || (ret == xdpRedirect) != (d.Redirect == 1):
			t.Fatalf("verdict %d counted as%s", ret, fmtCounters(d))
		case reasons != 1:
			t.Fatalf("%d reasons:%s", reasons, fmtCounters(d))
		case d.Malformed != bad:
			t.Fatalf("malformed miscounted:%s", fmtCounters(d))
		case (ret == xdpRedirect) != (hits == 1) || d.NoXSK != 0:
			t.Fatalf("verdict %d for%s", ret, fmtCounters(d))
		}
		if got := reasonOf(d); got != model.reason {
			t.Fatalf("reason %q, the model says %q", got, model.reason)
		}
		if err := model.check(o); err != nil {
			t.Fatal(err)
		}
	})
}
