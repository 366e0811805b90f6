//go:build race

package daemon

// raceEnabled scales the TCP volumes down under the race detector, which
// slows gVisor's packet handling in the workers by an order of magnitude.
const raceEnabled = true
