//go:build race

package udp

// raceEnabled: the race detector's runtime allocates, and its sync.Pool
// drops some of what is put back.
const raceEnabled = true
