package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// echoHeader is what the echo client puts in front of each request's
// payload: a sequence number and the send time in ns since the client's base.
const echoHeader = 16

// echoClient sends requests at a fixed rate from a kernel UDP socket and
// records the round-trip time of every reply to a request sent inside the
// measurement window.
type echoClient struct {
	conn    *net.UDPConn
	rate    uint64
	payload int
	base    time.Time

	winStart, winEnd atomic.Int64 // ns since base; winEnd 0 = open
	sentWin, recvWin atomic.Uint64
	sentAll, recvAll atomic.Uint64 // requests written and their replies, window or not
	sendErrs         atomic.Uint64
	lastSendErr      atomic.Value // error: the last failed write's
	recvErr          error        // the receiving goroutine's last read error (read after wg.Wait)
	recvErrs         uint64       // and how many it had
	stop             atomic.Bool
	sendDone         chan struct{} // closed when the sending goroutine returned
	procs            int           // GOMAXPROCS before start gave the sender a P
	wg               sync.WaitGroup
	samples          []time.Duration // owned by the receiving goroutine
	// atSocket holds, for the same replies, the time from the request's
	// write to the reply's arrival at the client's socket, by the kernel's
	// receive timestamp (SO_TIMESTAMPNS): the round trip without the
	// client's own wake-up and turn to read it, which both implementations
	// share. Owned by the receiving goroutine; it misses the replies that
	// came without a timestamp.
	atSocket []time.Duration
}

func newEchoClient(conn *net.UDPConn, rate uint64, payload int) *echoClient {
	c := &echoClient{conn: conn, rate: max(1, rate), payload: max(payload, echoHeader), base: time.Now(), sendDone: make(chan struct{})}
	c.winStart.Store(1<<63 - 1)
	c.samples = make([]time.Duration, 0, 1<<16)
	c.atSocket = make([]time.Duration, 0, 1<<16)
	return c
}

func (c *echoClient) inWindow(ts int64) bool {
	end := c.winEnd.Load()
	return ts >= c.winStart.Load() && (end == 0 || ts < end)
}

func (c *echoClient) start() {
	// The sending goroutine sleeps in nanosleep(2) on a thread of its own
	// and holds its P while it does (the runtime hands a P in a system
	// call to others only when sysmon looks, 20 µs to 10 ms later), so it
	// gets a P of its own, as the generators do, and the reading goroutine
	// keeps the Ps it would have without it.
	c.procs = runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	c.wg.Add(2)
	go c.send()
	go c.recv()
}

// send writes the i-th request at base + i/rate, one at a time: between
// two it sleeps in nanosleep(2) with a timer slack of 1 ns, on a thread
// of its own, until the next is due, and writes back to back only those
// a late wake-up made due. Go's timers sleep a millisecond at least
// (time.Sleep(100µs) took 1.08–1.17 ms on the 2-vCPU VM of docs/perf, a
// nanosleep of 100 µs 119–233 µs), so a client sleeping with them sent
// 10,000 requests a second as bursts of 11 every 1.1 ms, and the last of
// a burst waited for the server's turn at the ten before it.
func (c *echoClient) send() {
	defer c.wg.Done()
	defer close(c.sendDone)
	runtime.LockOSThread() // never unlocked: the thread and its timer slack end with the goroutine
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	buf := make([]byte, c.payload)
	for seq := uint64(0); !c.stop.Load(); {
		now := time.Since(c.base)
		if due := time.Duration(seq * uint64(time.Second) / c.rate); now < due {
			// At most 10 ms, so that a low rate still sees stop soon.
			ts := unix.NsecToTimespec(int64(min(due-now, 10*time.Millisecond)))
			_ = unix.Nanosleep(&ts, nil)
			continue
		}
		binary.LittleEndian.PutUint64(buf[0:], seq)
		binary.LittleEndian.PutUint64(buf[8:], uint64(now))
		seq++
		if _, err := c.conn.Write(buf); err != nil {
			c.sendErrs.Add(1)
			c.lastSendErr.Store(err)
			continue
		}
		c.sentAll.Add(1)
		if c.inWindow(int64(now)) {
			c.sentWin.Add(1)
		}
	}
}

func (c *echoClient) recv() {
	defer c.wg.Done()
	buf := make([]byte, max(2048, c.payload))
	oob := make([]byte, 64)
	wallBase := c.base.UnixNano()
	for {
		n, oobn, _, _, err := c.conn.ReadMsgUDPAddrPort(buf, oob)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// A connected UDP socket reports an ICMP error it received
			// on its next read; the replies after it still come.
			c.recvErrs++
			c.recvErr = err
			continue
		}
		now := time.Since(c.base)
		if n < echoHeader {
			continue
		}
		ts := int64(binary.LittleEndian.Uint64(buf[8:]))
		if ts < 0 || ts > int64(now) {
			continue // not ours
		}
		c.recvAll.Add(1)
		if !c.inWindow(ts) {
			continue
		}
		c.recvWin.Add(1)
		c.samples = append(c.samples, now-time.Duration(ts))
		if at, ok := rxTimestamp(oob[:oobn]); ok && at-wallBase >= ts {
			c.atSocket = append(c.atSocket, time.Duration(at-wallBase-ts))
		}
	}
}

// rxTimestamp is the kernel's receive time of a datagram (ns since the
// epoch) in the control messages of its read, as SO_TIMESTAMPNS gives it.
// It allocates nothing: the client reads every reply with it.
func rxTimestamp(oob []byte) (int64, bool) {
	for len(oob) > 0 {
		h, data, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return 0, false
		}
		if h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= 16 {
			sec := int64(binary.NativeEndian.Uint64(data[0:]))
			nsec := int64(binary.NativeEndian.Uint64(data[8:]))
			return sec*1e9 + nsec, true
		}
		oob = rest
	}
	return 0, false
}

// stopSending stops the sending goroutine and waits for it, so that what
// it sent is final before the replies are accounted for.
func (c *echoClient) stopSending() {
	c.stop.Store(true)
	<-c.sendDone
}

// close stops the client after the replies in flight have had drain to
// come back, and returns the sorted samples.
func (c *echoClient) close(drain time.Duration) []time.Duration {
	c.stop.Store(true)
	time.Sleep(drain)
	c.conn.Close()
	c.wg.Wait()
	runtime.GOMAXPROCS(c.procs)
	slices.Sort(c.samples)
	slices.Sort(c.atSocket)
	return c.samples
}

func (r *runner) echoRep(ctx context.Context, s Scenario, rep, reps int) (out Rep, err error) {
	p, err := r.rigs.get(s.Queues)
	if err != nil {
		return Rep{}, err
	}
	restore, err := r.serverPin.place(p)
	if err != nil {
		return Rep{}, err
	}
	defer func() { err = errors.Join(err, restore()) }()
	e := newEchoChild(s.Impl, p.B, r.serverPin.serverCPUs())
	if err := e.Start(envB(p, s.Queues, s.Flows, s.Payload, r.port)); err != nil {
		return Rep{}, fmt.Errorf("start %s echo: %w", s.Impl, err)
	}
	defer func() { err = errors.Join(err, e.Stop()) }()
	unplace, err := r.serverPin.placed(p, s.Impl)
	if err != nil {
		return Rep{}, err
	}
	defer func() { err = errors.Join(err, unplace()) }()
	if r.stats != nil {
		defer func() {
			if line := e.StatsLine(); line != "" {
				r.stats(fmt.Sprintf("%s rep %d: %s", s.Name, rep, line))
			}
		}()
	}
	var conn *net.UDPConn
	raddr := &net.UDPAddr{IP: p.B.IPv4.AsSlice(), Port: int(r.port)}
	if err := p.A.Do(func() (err error) { conn, err = net.DialUDP("udp4", nil, raddr); return err }); err != nil {
		return Rep{}, fmt.Errorf("echo client: %w", err)
	}
	// The client's socket gets the buffer every receiving socket of the
	// rig has, so that a late turn of its reading goroutine on a busy
	// host is not counted as the echo's loss.
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(setRcvBuf)
		_ = rc.Control(func(fd uintptr) { _ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1) })
	}
	native, err := nativeXDP(p.B)
	if err != nil {
		conn.Close()
		return Rep{}, err
	}
	before, err := readRigCounters(p)
	if err != nil {
		conn.Close()
		return Rep{}, err
	}
	c := newEchoClient(conn, s.Rate, s.Payload)
	c.start()
	closed := false
	defer func() {
		if !closed {
			c.close(0)
		}
	}()
	if err := sleepCtx(ctx, r.timing.Warmup); err != nil {
		return Rep{}, err
	}
	c.winStart.Store(int64(time.Since(c.base)))
	a, b, err := r.watch(ctx, s, rep, reps, c.sentWin.Load, c.recvWin.Load)
	if err != nil {
		return Rep{}, err
	}
	c.winEnd.Store(int64(time.Since(c.base)))
	// Stop sending, then wait until every request has its reply or a
	// counted drop (requests and replies both: drops.go).
	c.stop.Store(true)
	var after rigCounters
	drops := func() (Drops, error) {
		var err error
		if after, err = readRigCounters(p); err != nil {
			return nil, err
		}
		d := after.since(before, true, !native)
		maps.Copy(d, e.Drops())
		return d, nil
	}
	// No request may leave after the accounting settled: one sent then
	// would have its reply cut off by the close below and count as lost.
	c.stopSending()
	recv, counted, err := settleAccounted(c.sentAll.Load, c.recvAll.Load, drops, max(r.timing.Drain, 100*time.Millisecond))
	if err != nil {
		return Rep{}, err
	}
	closed = true
	samples := c.close(0)
	out, err = windowRep(a, b)
	out.TotalSent, out.TotalDelivered = c.sentAll.Load(), recv
	out.Drops, out.Counted = counted, counted.Sum()
	out.Unexplained = int64(out.TotalSent) - int64(out.TotalDelivered) - int64(out.Counted)
	out.Breakdown = after.udpDetail(before)
	maps.Copy(out.Breakdown, e.Breakdown())
	if n := c.sendErrs.Load(); n > 0 {
		// Not sent, not counted. A connected UDP socket reports an ICMP
		// error it received on its next write.
		out.Breakdown[fmt.Sprintf("echo-client-send-errors (last: %v)", c.lastSendErr.Load())] = n
	}
	if c.recvErrs > 0 {
		out.Breakdown[fmt.Sprintf("echo-client-read-errors (last: %v)", c.recvErr)] = c.recvErrs
	}
	out.Samples, out.SocketSamples, out.winReplies = samples, c.atSocket, c.recvWin.Load()
	if r.loss != nil {
		r.loss(fmt.Sprintf("%s rep %d: %s (at A's socket: %s); %s", s.Name, rep, latencyLine(samples), latencyLine(c.atSocket), lossLine(out)))
	}
	return out, err
}

// latencyLine gives a repetition's percentiles, so that the rows taking
// turns can be compared repetition by repetition.
func latencyLine(samples []time.Duration) string {
	if len(samples) == 0 {
		return "no replies"
	}
	us := func(q float64) float64 { return float64(Percentile(samples, q)) / 1e3 }
	return fmt.Sprintf("p50 %.1f p99 %.1f p99.9 %.1f µs", us(0.5), us(0.99), us(0.999))
}
