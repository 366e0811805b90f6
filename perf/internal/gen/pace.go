package gen

import "time"

// pacer spreads frames over time at a rate: Run loops ask it how many of
// their next batch may go now.
type pacer struct {
	start     time.Time
	rate      uint64 // frames per second; 0: flat out
	submitted uint64 // frames allowed so far
}

func newPacer(rate uint64) *pacer { return &pacer{start: time.Now(), rate: rate} }

// allow returns how many of n frames may go now and counts them as
// submitted. Flat out that is n; paced, when none is due yet, it sleeps
// until the next one is and returns 0.
func (p *pacer) allow(n uint64) uint64 {
	if p.rate == 0 {
		p.submitted += n
		return n
	}
	elapsed := uint64(time.Since(p.start))
	due := elapsed / uint64(time.Millisecond) * p.rate / 1000
	due += elapsed % uint64(time.Millisecond) * p.rate / uint64(time.Second)
	if due <= p.submitted {
		next := time.Duration((p.submitted + 1) * uint64(time.Second) / p.rate)
		time.Sleep(next - time.Duration(elapsed))
		return 0
	}
	n = min(n, due-p.submitted)
	p.submitted += n
	return n
}
