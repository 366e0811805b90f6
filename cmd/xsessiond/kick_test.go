package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/fifo"
	"github.com/xsessiond/xsessiond/flow"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// spamEnv makes the test binary run kickSpammer instead of the tests.
const spamEnv = "XSESSIOND_TEST_KICKSPAM"

// kickSpammer is a hostile app: it attaches over a bare connection, binds
// a UDP listener and leaves bytes in its tx fifo without the event flag
// (which the worker does not drain: no work, whatever the fifo holds),
// and writes its kick eventfds as fast as it can for the given time, then
// prints how many writes it made.
func kickSpammer(arg string) int {
	var p struct {
		Sock string
		For  time.Duration
		Hog  bool // spin without writing: the same CPU load, no kicks
	}
	if err := json.Unmarshal([]byte(arg), &p); err != nil {
		fmt.Println(err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := api.Dial(ctx, p.Sock)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	defer c.Close()
	call := func(id uint32, m api.Message) (api.Message, []int, error) {
		if err := c.SendID(id, m); err != nil {
			return nil, nil, err
		}
		for {
			rid, rep, fds, err := c.RecvID()
			if err != nil {
				return nil, nil, err
			}
			if rid == id {
				if e, ok := rep.(*api.Error); ok {
					return nil, nil, e.Err()
				}
				return rep, fds, nil
			}
			api.CloseFDs(fds)
		}
	}
	if _, _, err := call(1, &api.Hello{Major: api.VersionMajor, Minor: api.VersionMinor, Name: "spammer"}); err != nil {
		fmt.Println(err)
		return 1
	}
	rep, fds, err := call(2, &api.Attach{Name: "spammer", Scope: flow.ScopeGlobal})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ar := rep.(*api.AttachReply)
	kicks := fds[len(ar.Segments)+1:]
	if !p.Hog {
		rep, _, err := call(3, &api.Bind{URI: "udp://0.0.0.0:0"})
		if err != nil {
			fmt.Println(err)
			return 1
		}
		br := rep.(*api.BindReply)
		i := slices.IndexFunc(ar.Segments, func(s api.Segment) bool { return s.Index == br.Tx.Segment })
		if i < 0 {
			fmt.Println("the listener's tx fifo is in no segment of the attach reply")
			return 1
		}
		seg, err := fifo.MapSegment(fds[i])
		if err != nil {
			fmt.Println(err)
			return 1
		}
		tx, err := seg.FifoAt(br.Tx.Offset)
		if err != nil {
			fmt.Println(err)
			return 1
		}
		if _, err := tx.Enqueue(make([]byte, 256)); err != nil {
			fmt.Println(err)
			return 1
		}
	}
	var one [8]byte
	one[0] = 1
	n := 0
	for end := time.Now().Add(p.For); time.Now().Before(end); {
		for range 256 {
			for _, k := range kicks {
				if p.Hog {
					unix.Getpid()
				} else {
					unix.Write(k, one[:])
				}
				n++
			}
		}
	}
	fmt.Println(n)
	return 0
}

// echoRTTs sends one datagram at a time from host A to the echo app on
// host B at about rate a second for d and returns the round trip times
// of those that came back, and how many did not.
func echoRTTs(t *testing.T, rig *nstest.Pair, port, rate int, d time.Duration) (rtts []time.Duration, lost int) {
	t.Helper()
	err := rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: port})
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 256)
		msg := make([]byte, 64)
		gap := time.Second / time.Duration(rate)
		next := time.Now()
		for end := time.Now().Add(d); time.Now().Before(end); {
			if w := time.Until(next); w > 0 {
				time.Sleep(w)
			}
			next = next.Add(gap)
			t0 := time.Now()
			copy(msg, strconv.FormatInt(t0.UnixNano(), 10))
			if _, err := c.Write(msg); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			for {
				n, err := c.Read(buf)
				if err != nil {
					lost++
					break
				}
				if string(buf[:n]) == string(msg) {
					rtts = append(rtts, time.Since(t0))
					break
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return rtts, lost
}

func pct(rtts []time.Duration, p float64) time.Duration {
	if len(rtts) == 0 {
		return 0
	}
	s := slices.Clone(rtts)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// kickCounts are the daemon's counts of kick wakeups.
type kickCounts struct {
	worker                 uint64 // every kick that woke a worker
	wakes, spurious, muted uint64 // by apps' own eventfds
}

// workerKicks reads the kick wakeups of the daemon's workers.
func workerKicks(t *testing.T, xs, sock string) kickCounts {
	t.Helper()
	out, err := exec.Command(xs, "ctl", "--socket", sock, "show", "stats", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("show stats: %v\n%s", err, out)
	}
	var st struct {
		Queues []struct {
			Kicks uint64 `json:"kicks"`
			Loops uint64 `json:"loops"`
		} `json:"queues"`
		Kicks struct {
			Wakes    uint64 `json:"wakes"`
			Spurious uint64 `json:"spurious"`
			Muted    uint64 `json:"muted"`
		} `json:"kicks"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	k := kickCounts{wakes: st.Kicks.Wakes, spurious: st.Kicks.Spurious, muted: st.Kicks.Muted}
	for _, q := range st.Queues {
		k.worker += q.Kicks
	}
	return k
}

// TestKickSpam measures another app's echo round trips from a kernel
// client on host A, at 5k datagrams a second, without and then with a
// hostile app writing its kick eventfds in a loop for 10 s, and logs the
// p50/p99 of both runs and the worker's kick wakeups. Every echo must
// come back in both runs.
func TestKickSpam(t *testing.T) {
	rig, sock, _ := startRigDaemon(t)
	xs, echo := binaries(t)
	e := startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:9000")
	e.waitLine(t, "echoing on", 10*time.Second)
	if err := echoOnce(t, rig, 9000); err != nil {
		t.Fatal(err)
	}
	const rate, spamFor = 5000, 10 * time.Second
	k0 := workerKicks(t, xs, sock)
	base, baseLost := echoRTTs(t, rig, 9000, rate, 4*time.Second)
	k1 := workerKicks(t, xs, sock)

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// hostile runs the hostile app for spamFor and measures the echo
	// meanwhile.
	hostile := func(hog bool) (rtts []time.Duration, lost int, k0, k1 kickCounts, out []byte) {
		arg, _ := json.Marshal(map[string]any{"Sock": sock, "For": spamFor, "Hog": hog})
		spam := exec.Command(self)
		spam.Env = append(os.Environ(), spamEnv+"="+string(arg))
		done := make(chan []byte, 1)
		go func() {
			out, err := spam.CombinedOutput()
			if err != nil {
				out = append(out, []byte(err.Error())...)
			}
			done <- out
		}()
		time.Sleep(500 * time.Millisecond)
		k0 = workerKicks(t, xs, sock)
		rtts, lost = echoRTTs(t, rig, 9000, rate, spamFor-2*time.Second)
		k1 = workerKicks(t, xs, sock)
		return rtts, lost, k0, k1, <-done
	}
	hog, hogLost, _, _, _ := hostile(true)
	under, underLost, k2, k3, out := hostile(false)
	t.Logf("echo, CPU hog:   %d echoes, %d lost, p50 %v p99 %v (a process spinning as the spammer does, without writes)",
		len(hog), hogLost, pct(hog, .5), pct(hog, .99))
	secs := uint64((spamFor - 2*time.Second) / time.Second)
	t.Logf("echo, quiet:     %d echoes, %d lost, p50 %v p99 %v; worker kick wakeups %d/s (apps' %d/s, spurious %d/s)",
		len(base), baseLost, pct(base, .5), pct(base, .99), (k1.worker-k0.worker)/4, (k1.wakes-k0.wakes)/4, (k1.spurious-k0.spurious)/4)
	t.Logf("echo, kick spam: %d echoes, %d lost, p50 %v p99 %v; worker kick wakeups %d/s (apps' %d/s, spurious %d/s, %d pauses); spammer wrote %s",
		len(under), underLost, pct(under, .5), pct(under, .99), (k3.worker-k2.worker)/secs, (k3.wakes-k2.wakes)/secs,
		(k3.spurious-k2.spurious)/secs, k3.muted-k2.muted, strings.TrimSpace(string(out)))
	// The echo app kicks only after it queued a reply; a worker that took
	// the reply while it spun reads that kick later, and it is no spam.
	if k1.muted != k0.muted {
		t.Errorf("the echo app alone was paused %d times (%d of its %d kicks counted spurious)",
			k1.muted-k0.muted, k1.spurious-k0.spurious, k1.wakes-k0.wakes)
	}
	if baseLost+underLost+hogLost > 0 {
		t.Errorf("echoes lost: %d quiet, %d under spam, %d beside a CPU hog", baseLost, underLost, hogLost)
	}
	// The spammer's eventfd is paused kickMuteMax after every kickStrikes
	// spurious kicks: it cannot wake a worker more than 8 times per 10 ms,
	// whatever it writes.
	if k3.muted == k2.muted {
		t.Errorf("the spamming app was never paused")
	}
	if s := (k3.spurious - k2.spurious) / secs; s > 2000 {
		t.Errorf("%d spurious kick wakeups a second under spam; the pauses allow at most about 800", s)
	}
}
