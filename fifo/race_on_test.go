//go:build race

package fifo_test

// raceEnabled scales the cross-process volumes down under the race
// detector, which slows the instrumented loops (not the shared memory
// protocol) by an order of magnitude.
const raceEnabled = true
