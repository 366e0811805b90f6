package datapath

// The poll policy of a worker: what a loop that found nothing to do does
// next (nap, spin or sleep), the AF_XDP ring sizes that bound how long a
// worker may be away before the kernel drops, and the sockets' busy-poll
// options.
//
// # What an idle loop does
//
//   - Nap (Config.IdleNap) while frames arrive fast (napHot frames per
//     napWindow, the last less than napWindow ago): a timed sleep, so the
//     kernel wakes nobody per frame and the next loop takes what came
//     meanwhile as one batch. This is the full-rate regime; it costs up to
//     one nap of latency per frame. In it, the worker also holds back the
//     rx signal of an app asleep on an empty fifo for up to signalHold
//     (worker.go), so that the app wakes once for several batches, not
//     once per batch; a fifo a quarter full is signalled at once, and
//     every held signal is sent before the worker spins, sleeps or leaves
//     the regime.
//   - Spin (Config.IdleSpin) while the datagram path was busy recently:
//     until IdleSpin has passed since the last loop that delivered
//     datagrams to an app or sent an app's datagrams, check the rx ring,
//     the tx fifos' event flags, the TCP sessions' flags, the wake-up
//     flag and the mailbox without a system call. A request and its reply
//     (an app answering within IdleSpin) then cost no wake-up of the
//     worker; at a steady rate with gaps shorter than IdleSpin the worker
//     never sleeps, which trades a CPU for latency. TCP work alone does
//     not start a spin: between a request and its reply gVisor's
//     processor, the connection's pump and the app run, so a spin there
//     holds a CPU they want (go run ./perf --tcp --only tcprr64-c1, 1
//     connection, two repetitions each: p50 203 µs without spinning,
//     254–268 µs spinning after TCP work); it did not pay either once
//     the worker took the app's reply into gVisor itself (PushTx): three
//     interleaved rounds of go run ./perf --tcp --quick, 2026-12-04,
//     request/response over one connection 0.57–0.79 of the kernel's
//     rate at 3.49–3.83× its B CPU per transaction spinning against
//     0.66–0.76 at 2.04–2.76 not, 32 connections 0.61–0.69 at 1.56–2.07
//     against 0.53–0.94 at 1.14–2.00.
//     The spinner yields its CPU (sched_yield) every spinCheckEvery
//     checks, so that a thread waiting for that CPU runs at once: the app
//     the worker just signalled is usually one, because the kernel wakes
//     a thread on its waker's CPU when no cache is shared with another
//     (as on a VM whose vCPUs show no common LLC). Without the yield the
//     app waited for the spin to end, which then missed its reply: echo
//     64 B at 10,000/s (go run ./perf --only echo64) had p50 246 µs
//     spinning, 175 µs not spinning and 118–125 µs spinning with yields,
//     the kernel's 98–100 µs, on a 2-vCPU VM.
//     The spin adapts to the sender (pollState.adapt): when the worker
//     slept and the next datagram work came less than
//     Config.IdleSpinMax after the last, the spin grows to a quarter more
//     than that gap; a longer gap halves it, down to IdleSpin. perf's echo
//     client at 10,000/s sent bursts 1–2 ms apart (Go's timers) before it
//     paced each request, so a 120 µs spin missed nearly every burst (the
//     worker slept about 1,700 times in a repetition of 23,000 echoes,
//     after gaps of 1–2 ms);
//     grown to 2 ms, the echo had p50 65–67 µs and p99
//     187–188 µs against the kernel's 98–100 and 192–199 µs, for 121,000
//     ns of machine CPU per round trip against 46,500 (kernel
//     30,000–40,000).
//     A yield that took yieldStolen or longer ran a thread that held the
//     CPU for its slice (SpinsStolen): the spin ends. A second within
//     stolenBackoff is taken for a CPU-bound program's: no spin starts for
//     stolenBackoff, so that the worker sleeps in poll, where an arriving
//     frame wakes it and it preempts that thread, instead of handing it
//     one slice per yield (an echo at 10,000/s beside such a thread: p50
//     1.75–1.82 ms before, 0.32–0.36 ms after, the kernel's 0.20–0.23 ms).
//     The first alone does not stop the spins: on the VM of docs/perf the
//     machine's agent process ran up to 4.5 ms on the server's CPU about
//     once a second, and the 50 ms that followed each such yield, a sleep and two
//     wake-ups per request, made the echo's slowest 1% (docs/perf: "One
//     stolen yield is not a busy program").
//     Spinning is for hosts with CPU to spare, so it is held back: at most
//     maxSpinners(baseProcs()) workers of an Engine spin at once
//     (GOMAXPROCS before the workers' reservation, procs.go, less one, at
//     least 1: a CPU for the rest of the process and the host); the yields
//     give the CPU to any other thread that wants it, so a spinner takes
//     from the host only CPU time nobody else asked for.
//   - Otherwise sleep in poll(2) on the socket and the kick eventfd.
//
// # Rings
//
// A worker that is not running (descheduled on a loaded host, or between
// two naps) leaves the kernel only the frames on its fill ring: once they
// are used up, the socket drops (rx_dropped, counted as fill ring empty in
// copy mode, or rx_ring_full). DefaultRingSize is chosen from
// measurements on a loaded 2-vCPU veth rig (go run ./perf --quick --rate
// 200000 --xs-ring N, load average 14–15, UDP 64 bytes, 1 queue): lost
// 7.4–7.7% with 2048 entries, 0.4–22% with 4096, 0–2.9% with 8192 (two to
// five runs each), every loss counted by rx_dropped and rx_ring_full. 8192
// frames are 8 ms of traffic at 1 Mpps. The UMEM has a quarter more frames
// than the fill ring takes, for transmit: 10240 frames of 2 KiB, 20 MiB
// per queue, locked memory.
//
// # Busy polling
//
// setBusyPoll sets SO_PREFER_BUSY_POLL, SO_BUSY_POLL_BUDGET and
// SO_BUSY_POLL on each AF_XDP socket. The kernel busy-polls the device's
// NAPI context (the socket learns it from the first frame redirected to
// it) in the socket's recvfrom and sendto, which the worker calls to wake
// the kernel for the fill ring and to kick transmission. On veth the
// options are accepted and do nothing: the socket never learns a NAPI id
// from veth's frames (SO_INCOMING_NAPI_ID read 0 after 1,000 frames in
// native mode), and veth's NAPI ran in its thread or in the sender's
// softirq, never in the worker's calls (docs/perf: "Where the echo's
// microseconds go"). On a NIC driver with interrupt deferral
// (napi_defer_hard_irqs, gro_flush_timeout) they are meant to let the
// worker's calls drive the queue instead of interrupts; no such NIC was
// at hand to measure it.

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/datapath/xsk"
)

// Ring sizes of the Engine's AF_XDP sockets when Config.XSK leaves them 0.
const (
	DefaultRingSize  = 8192
	DefaultNumFrames = DefaultRingSize + DefaultRingSize/4
)

// DefaultIdleSpin is Config.IdleSpin's default: longer than a local app
// takes to answer a datagram, so an echo's reply finds the worker
// spinning, and a little longer than the gaps of a queue at 10,000 frames
// per second.
const DefaultIdleSpin = 120 * time.Microsecond

// DefaultIdleSpinMax is Config.IdleSpinMax's default: the longest spin the
// adaptation grows to. It covers the gaps of a sender that writes every
// millisecond or so (Go's timers, for one, sleep in whole milliseconds
// when a process is otherwise idle: perf's echo client at 10,000/s sent
// bursts 1–2 ms apart before it paced its requests with nanosleep).
const DefaultIdleSpinMax = 2 * time.Millisecond

// Busy-poll options set on each socket.
const (
	busyPollUsecs  = 20 // SO_BUSY_POLL: how long one busy poll may loop
	busyPollBudget = 64 // SO_BUSY_POLL_BUDGET: frames per NAPI poll (DefaultBatch)
)

// withRingDefaults fills the ring sizes the Engine chooses.
func withRingDefaults(o xsk.Options) xsk.Options {
	if o.RingSize == 0 {
		o.RingSize = DefaultRingSize
	}
	if o.NumFrames == 0 {
		o.NumFrames = o.RingSize + o.RingSize/4
	}
	return o
}

// setBusyPoll sets the busy-poll options on an AF_XDP socket, skipping
// those the kernel does not know (ENOPROTOOPT) or does not support on it
// (EOPNOTSUPP).
func setBusyPoll(fd int) error {
	for _, o := range []struct {
		name     string
		opt, val int
	}{
		{"SO_PREFER_BUSY_POLL", unix.SO_PREFER_BUSY_POLL, 1},
		{"SO_BUSY_POLL_BUDGET", unix.SO_BUSY_POLL_BUDGET, busyPollBudget},
		{"SO_BUSY_POLL", unix.SO_BUSY_POLL, busyPollUsecs},
	} {
		err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, o.opt, o.val)
		if err != nil && !errors.Is(err, unix.ENOPROTOOPT) && !errors.Is(err, unix.EOPNOTSUPP) {
			return fmt.Errorf("set %s: %w", o.name, err)
		}
	}
	return nil
}

// An idle worker naps instead of spinning or sleeping while it receives
// at least napHot frames per napWindow (measured over windows of at least
// napWindow) and received one within the last napWindow; napSlack is the
// timer slack of its thread.
const (
	napWindow = time.Millisecond
	napHot    = 32
	napSlack  = 2 * time.Microsecond
)

// idleAction is what a loop that found nothing to do does next.
type idleAction uint8

const (
	idleSleep idleAction = iota // poll(2) on the socket and the kick eventfd
	idleNap                     // a timed sleep (frames keep arriving)
	idleSpin                    // check for work without a system call
)

// maxSpinners is how many workers of an Engine may spin at once with
// procs Ps (GOMAXPROCS without the workers' own, baseProcs).
func maxSpinners(procs int) int32 { return int32(max(1, procs-1)) }

// pollState is a worker's recent traffic, as its idle policy sees it.
// Only the worker's goroutine touches it, but for spinners.
type pollState struct {
	nap, spin time.Duration // Config.IdleNap, Config.IdleSpin; <= 0: never
	spinMax   time.Duration // Config.IdleSpinMax; <= spin: no adaptation
	budget    time.Duration // the spin's length now, spin to spinMax
	slept     bool          // the worker slept after a spin that missed, or with no spin

	spinners    *atomic.Int32 // the Engine's workers spinning now (shared)
	maxSpinners int32

	lastDgram time.Time // the last loop that delivered or sent datagrams of an app
	lastRx    time.Time // the last loop that received
	winStart  time.Time // the current rate window
	winFrames int       // frames received in it
	hot       bool      // the last window had napHot frames per napWindow
	spun      bool      // an idle spin found nothing since the last loop that did work
	// noSpinUntil: no idle spin before then (yields were stolen, stole)
	noSpinUntil time.Time
	lastStolen  time.Time // the last stolen yield (stole)
	// slackSet: the worker's thread has napSlack; false after the worker
	// yielded its thread and may have come back on another.
	slackSet bool
}

// start prepares the worker's thread (timer slack for naps) and returns
// what undoes it.
func (p *pollState) start() func() {
	if p.nap <= 0 {
		return func() {}
	}
	old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	if err != nil {
		return func() {}
	}
	p.onThread()
	return func() { _ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0) }
}

// onThread gives the worker's current thread the naps' timer slack, at
// start and before a nap after the worker yielded its thread (moved): a
// worker that yields and then sleeps in poll, as on a request/response
// connection, makes no system call for it.
func (p *pollState) onThread() {
	if p.nap > 0 && !p.slackSet {
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(napSlack), 0, 0, 0)
		p.slackSet = true
	}
}

// moved notes that the worker yielded its thread (worker.run) and may
// have come back on another, without the naps' timer slack.
func (p *pollState) moved() { p.slackSet = false }

// worked records a loop that did work, rx of it frames received; dgram:
// it delivered datagrams to an app or sent an app's datagrams.
func (p *pollState) worked(rx int, dgram bool) {
	now := time.Now()
	p.spun = false
	if dgram {
		if p.slept {
			p.adapt(now.Sub(p.lastDgram))
		}
		p.slept = false
		p.lastDgram = now
	}
	if rx == 0 {
		return
	}
	p.lastRx = now
	if d := now.Sub(p.winStart); d >= napWindow {
		// napHot frames per napWindow on average over the window (which a
		// preempted worker may see last longer).
		p.hot = d < time.Second && time.Duration(p.winFrames)*napWindow >= napHot*d
		p.winStart, p.winFrames = now, 0
	}
	p.winFrames += rx
}

// idle says what a loop that found nothing to do does, and for how long
// (a nap's length, a spin's budget).
func (p *pollState) idle() (idleAction, time.Duration) {
	now := time.Now()
	if p.nap > 0 && p.hot && now.Sub(p.lastRx) < napWindow {
		return idleNap, p.nap
	}
	if p.spin > 0 && !p.spun && !now.Before(p.noSpinUntil) {
		if left := max(p.spin, p.budget) - now.Sub(p.lastDgram); left > 0 && p.beginSpin() {
			return idleSpin, left
		}
	}
	return idleSleep, 0
}

// sleeping notes that the worker goes to sleep in poll.
func (p *pollState) sleeping() { p.slept = true }

// adapt sets the spin's length from gap, the time from the last datagram
// work to the next after the worker slept: a gap the spin could have
// covered (up to spinMax) lengthens it to a quarter more than the gap; a
// longer one halves it, down to spin. A steady sender whose gaps are
// longer than IdleSpin then finds the worker spinning, and a queue that
// goes quiet soon spins only IdleSpin again.
func (p *pollState) adapt(gap time.Duration) {
	if p.spinMax <= p.spin {
		return
	}
	if gap < p.spinMax {
		p.budget = min(p.spinMax, max(p.budget, gap+gap/4))
		return
	}
	p.budget = max(p.spin, p.budget/2)
}

// beginSpin takes a spinner's place, if one is free.
func (p *pollState) beginSpin() bool {
	if p.spinners.Add(1) > p.maxSpinners {
		p.spinners.Add(-1)
		return false
	}
	return true
}

// endSpin gives the spinner's place back after a spin that found work or
// not (missed: the next idle loop sleeps, until a loop does work again).
func (p *pollState) endSpin(missed bool) {
	p.spinners.Add(-1)
	p.spun = missed
}

// yieldStolen: a spinner's yield that took this long ran a thread that
// held the CPU for it, longer than an app takes to answer a request (tens
// of microseconds here), about as long as the scheduler's slice of a
// thread that does not block (0.75 ms and more). That thread may be any
// program's, and while it runs a spinner that yields to it sees nothing
// of what arrives: each yield gives it another slice. So the spin ends and
// the worker sleeps in poll, where an arriving frame wakes it.
const yieldStolen = 500 * time.Microsecond

// stolenBackoff is how long a worker does not spin after a second stolen
// yield within stolenBackoff of the first: the thread that held its CPU
// twice (a CPU-bound program) is likely to hold it again, and each spin's
// first yield would hand it another slice. A single stolen yield only ends
// its spin: a thread that ran once for a few milliseconds (a host's
// housekeeping, once a second on the VM of docs/perf) is gone by the next
// spin, and a worker that sleeps in poll for 50 ms after it answers each
// request through two wake-ups instead of none.
const stolenBackoff = 50 * time.Millisecond

// stole notes a spin's yield that another thread held the CPU through
// (yieldStolen): the spin ends, and after the second within stolenBackoff
// the worker sleeps instead of spinning for stolenBackoff.
func (p *pollState) stole(now time.Time) {
	if !p.lastStolen.IsZero() && now.Sub(p.lastStolen) < stolenBackoff {
		p.noSpinUntil = now.Add(stolenBackoff)
	}
	p.lastStolen = now
}

// yield lets a thread waiting for the spinner's CPU run.
func yield() { _, _, _ = unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }
