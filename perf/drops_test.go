package main

import "testing"

// A receive repetition does not count veth A's tx_dropped as lost (the
// generator sends a refused frame again) but shows it in the breakdown;
// the echo, whose sender is a socket, counts it.
func TestRigCountersSince(t *testing.T) {
	before := rigCounters{aTxDropped: 10, bRxDropped: 5, bTxDropped: 1, aRxDropped: 2}
	after := rigCounters{aTxDropped: 13512, bRxDropped: 151, bTxDropped: 4, aRxDropped: 9}
	after.b.inErrors, after.b.noPorts = 7, 3

	recv := after.since(before, false)
	if got, want := recv.Sum(), uint64(146+7+3); got != want {
		t.Errorf("receive rows counted %d (%s), want %d", got, recv, want)
	}
	if _, ok := recv["veth-a-tx-dropped"]; ok {
		t.Errorf("receive rows count veth A's tx_dropped: %s", recv)
	}
	if r := after.genRetried(before)["veth-a-tx-retried"]; r != 13502 {
		t.Errorf("veth-a-tx-retried = %d, want 13502", r)
	}

	echo := after.since(before, true)
	if got, want := echo.Sum(), uint64(13502+146+7+3+3+7); got != want {
		t.Errorf("echo rows counted %d (%s), want %d", got, echo, want)
	}
}

// unretried takes the generator's refused frames, counted on both ends
// when B receives in its backlog, out of B's rx_dropped.
func TestRigCountersUnretried(t *testing.T) {
	before := rigCounters{aTxDropped: 10, bRxDropped: 5}
	for _, c := range []struct {
		aTx, bRx, want uint64
	}{
		{10, 5, 0},          // nothing
		{12051, 12046, 0},   // every B drop a refused frame
		{12051, 12146, 100}, // 100 of B's own
		{20, 5, 0},          // refused before B counted (native mode's ring)
	} {
		after := rigCounters{aTxDropped: c.aTx, bRxDropped: c.bRx}
		if got := after.unretried(before); got != c.want {
			t.Errorf("A tx_dropped %d, B rx_dropped %d: unretried %d, want %d", c.aTx, c.bRx, got, c.want)
		}
	}
}
