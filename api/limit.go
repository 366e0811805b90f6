package api

import (
	"sync"
	"time"
)

// AttemptLimiter rate-limits failed attempts (wrong namespace secrets, say)
// per key with a token bucket: each key starts with Burst tokens, a
// failure takes one, and tokens come back at Rate a second. While a key
// has no token, its attempts are refused without being checked, so a
// client cannot guess faster than Rate a second. The daemon keys it by
// the peer's uid (Request.Peer.UID): pids are cheap to change, uids are
// not. It keeps at most MaxKeys buckets, forgetting full ones first. Safe
// for concurrent use.
type AttemptLimiter struct {
	rate    float64
	burst   float64
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[uint64]bucket // guarded by mu
}

type bucket struct {
	tokens float64
	at     time.Time
}

// NewAttemptLimiter returns a limiter allowing burst failures at once and
// rate a second after that, for at most maxKeys keys (0 means 4096).
func NewAttemptLimiter(rate float64, burst, maxKeys int) *AttemptLimiter {
	if maxKeys <= 0 {
		maxKeys = 4096
	}
	return &AttemptLimiter{rate: rate, burst: float64(max(burst, 1)), maxKeys: maxKeys, now: time.Now,
		buckets: make(map[uint64]bucket)}
}

// Allow reports whether an attempt of key may be checked now, that is
// whether key has a token left. It takes none.
func (l *AttemptLimiter) Allow(key uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.refill(key).tokens >= 1
}

// Fail takes a token from key for a failed attempt. It reports true when
// this failure emptied key's bucket, so that the caller logs the first
// refusal of a burst rather than every one.
func (l *AttemptLimiter) Fail(key uint64) (exhausted bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.refill(key)
	had := b.tokens >= 1
	b.tokens = max(b.tokens-1, 0)
	if _, ok := l.buckets[key]; !ok && len(l.buckets) >= l.maxKeys {
		l.evictLocked()
	}
	l.buckets[key] = b
	return had && b.tokens < 1
}

// refill returns key's bucket topped up to now (not stored).
func (l *AttemptLimiter) refill(key uint64) bucket {
	now := l.now()
	b, ok := l.buckets[key]
	if !ok {
		return bucket{tokens: l.burst, at: now}
	}
	if d := now.Sub(b.at); d > 0 {
		b.tokens = min(b.tokens+d.Seconds()*l.rate, l.burst)
	}
	b.at = now
	return b
}

// evictLocked makes room for a key: full buckets go first (they hold
// nothing a fresh one would not), then an arbitrary one.
func (l *AttemptLimiter) evictLocked() {
	for k := range l.buckets {
		if b := l.refill(k); b.tokens >= l.burst {
			delete(l.buckets, k)
		}
	}
	for k := range l.buckets {
		if len(l.buckets) < l.maxKeys {
			return
		}
		delete(l.buckets, k)
	}
}
