package main

import "testing"

// A receive repetition does not count veth A's tx_dropped as lost (the
// generator sends a refused frame again) but shows it in the breakdown;
// the echo, whose sender is a socket, counts it.
func TestRigCountersSince(t *testing.T) {
	before := rigCounters{aTxDropped: 10, bRxDropped: 5, bTxDropped: 1, aRxDropped: 2}
	after := rigCounters{aTxDropped: 13512, bRxDropped: 151, bTxDropped: 4, aRxDropped: 9}
	after.b.inErrors, after.b.noPorts = 7, 3

	recv := after.since(before, false, false)
	if got, want := recv.Sum(), uint64(146+7+3); got != want {
		t.Errorf("receive rows counted %d (%s), want %d", got, recv, want)
	}
	if _, ok := recv["veth-a-tx-dropped"]; ok {
		t.Errorf("receive rows count veth A's tx_dropped: %s", recv)
	}
	if r := after.genRetried(before)["veth-a-tx-retried"]; r != 13502 {
		t.Errorf("veth-a-tx-retried = %d, want 13502", r)
	}

	// A's rx_dropped (7) less B's tx_dropped (3): the replies A's
	// backlog refused are counted once, as B's.
	echo := after.since(before, true, false)
	if got, want := echo.Sum(), uint64(13502+146+7+3+3+4); got != want {
		t.Errorf("echo rows counted %d (%s), want %d", got, echo, want)
	}
}

// A backlog receiver counts the frames it refuses in its rx_dropped, which
// the sender's tx_dropped counts too: since takes them out once, for B
// with backlogB and for A (the echo's replies) always.
func TestRigCountersBacklog(t *testing.T) {
	before := rigCounters{aTxDropped: 10, bRxDropped: 5}
	for _, c := range []struct {
		aTx, bRx, want uint64
	}{
		{10, 5, 0},          // nothing
		{12051, 12046, 0},   // every B drop a refused frame
		{12051, 12146, 100}, // 100 of B's own
		{20, 5, 0},          // more refused than B counted
	} {
		after := rigCounters{aTxDropped: c.aTx, bRxDropped: c.bRx}
		if got := after.since(before, false, true)["veth-b-rx-dropped"]; got != c.want {
			t.Errorf("A tx_dropped %d, B rx_dropped %d: counted %d of B's, want %d", c.aTx, c.bRx, got, c.want)
		}
		// Native XDP: veth's refusals never reach B's counters.
		if got, want := after.since(before, false, false)["veth-b-rx-dropped"], c.bRx-5; got != want {
			t.Errorf("native: A tx_dropped %d, B rx_dropped %d: counted %d of B's, want %d", c.aTx, c.bRx, got, want)
		}
	}
	// The echo: A's tx_dropped is lost (a socket sent it), B's backlog
	// drop of the same frames is not counted again, and A's rx_dropped
	// less B's tx_dropped (the replies A's backlog refused).
	after := rigCounters{aTxDropped: 110, bRxDropped: 105, bTxDropped: 7, aRxDropped: 9}
	echo := after.since(before, true, true)
	if got, want := echo.Sum(), uint64(100+0+7+2); got != want {
		t.Errorf("echo counted %d (%s), want %d", got, echo, want)
	}
}

// XDP frames B's ring refused are in both A's tx_dropped and B's
// rx_dropped; a receive row of XDP frames (B not receiving in its backlog)
// counts them once, as B's, and shows A's count in the breakdown. A kernel
// receive row at 13:28 UTC read veth-a-xdp-xmit-dropped=24156 and
// veth-b-rx-dropped=24156 as two counted drops, unexplained -24156, when
// both were counted.
func TestRigCountersXDPFrames(t *testing.T) {
	before := rigCounters{aTxDropped: 10, bRxDropped: 5}
	after := rigCounters{aTxDropped: 24166, bRxDropped: 24161}
	after.b.inErrors = 13789
	d := after.since(before, false, false)
	if got, want := d.Sum(), uint64(24156+13789); got != want {
		t.Errorf("counted %d (%s), want %d", got, d, want)
	}
	if r := after.xdpGenRefused(before)["veth-a-xdp-xmit-err"]; r != 24156 {
		t.Errorf("veth-a-xdp-xmit-err = %d, want 24156", r)
	}
}
