//go:build !race

package fifo_test

const raceEnabled = false
