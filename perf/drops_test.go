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
