package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/daemon"
	"github.com/xsessiond/xsessiond/datapath"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func newDemoCmd() *cobra.Command {
	var dur time.Duration
	var window int
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build a two-host netns rig, run xsessiond and an echo app, and send UDP and TCP from the kernel at it",
		Long: `The quickstart: build two hosts (network namespaces joined by a veth pair),
start the daemon in this process on host B's veth, attach an echo app through
the library over the control socket, and send UDP datagrams from a kernel
socket on host A for --duration, then 16 MiB over a kernel TCP connection
through the app's TCP listener (gVisor's TCP in the daemon). Every echo is
checked byte for byte; the summary gives the rate and round-trip times.
Everything is removed at the end. It needs root (network namespaces, XDP,
AF_XDP). Exit status 0 means every datagram and every TCP byte came back
intact.`,
		Args: noArgs(""),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dur <= 0 {
				return usagef("--duration %v: want a positive duration, like 3s (how long UDP is sent)", dur)
			}
			if window < 1 {
				return usagef("--window %d: want 1 or more (the datagrams in flight at most)", window)
			}
			// Ctrl-C or SIGTERM ends the demo early through its
			// clean-up (the rig, the daemon's XDP program and pins);
			// a second one kills it.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			context.AfterFunc(ctx, stop)
			return runDemo(ctx, cmd.OutOrStdout(), dur, window)
		},
	}
	cmd.Flags().DurationVar(&dur, "duration", 3*time.Second, "how long to send")
	cmd.Flags().IntVar(&window, "window", 32, "datagrams in flight at most")
	return cmd
}

// errDemoInterrupted ends a demo stopped by a signal.
var errDemoInterrupted = errors.New("demo interrupted: the rig, the daemon's XDP program and its pins are removed")

func runDemo(ctx context.Context, out io.Writer, dur time.Duration, window int) (err error) {
	if problem := privilegeProblem(true); problem != "" {
		return fmt.Errorf("demo: not privileged: %s; run it as root (go run -exec sudo ./cmd/xsessiond demo from the repository, or sudo ./xsessiond demo with a built binary)", problem)
	}
	rig, err := nstest.NewPairNoTest(nstest.Options{})
	if err != nil {
		return fmt.Errorf("demo: build the rig: %w", err)
	}
	defer func() {
		if cerr := rig.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("demo: remove the rig: %w", cerr)
		}
	}()
	fmt.Fprintf(out, "rig: host A %s (%s) <-> host B %s (%s), veth %s/%s\n",
		rig.A.Name, rig.A.IPv4, rig.B.Name, rig.B.IPv4, rig.A.Link, rig.B.Link)
	dir, err := os.MkdirTemp("", "xsessiond-demo-")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	defer os.RemoveAll(dir)
	d, err := daemon.New(daemon.Config{
		Datapath: datapath.Config{IfName: rig.B.Link, NetnsName: rig.B.Name},
		Socket:   filepath.Join(dir, "api.sock"), Version: buildVersion(),
	})
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if err := d.Start(); err != nil {
		return fmt.Errorf("demo: start the daemon: %w", err)
	}
	defer func() {
		if cerr := d.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("demo: stop the daemon: %w", cerr)
		}
	}()
	st := d.EngineStats()
	fmt.Fprintf(out, "daemon: on %s in netns %s, %d worker(s), datapath %s (xdp %s), socket %s\n",
		rig.B.Link, rig.B.Name, d.Workers(), st.Datapath, st.XDPMode, d.Socket())

	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a, err := app.Attach(actx, app.Options{Socket: d.Socket(), Name: "demo-echo"})
	cancel()
	if err != nil {
		return fmt.Errorf("demo: attach the echo app: %w", err)
	}
	defer a.Close()
	pc, err := a.ListenPacket("udp://0.0.0.0:9000")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, addr, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], addr)
		}
	}()
	fmt.Fprintf(out, "echo app: attached as app %d, echoing on %s\n", a.Index(), pc.LocalAddr())

	var conn *net.UDPConn
	if err := rig.A.Do(func() error {
		var err error
		conn, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: 9000})
		return err
	}); err != nil {
		return fmt.Errorf("demo: kernel socket on host A: %w", err)
	}
	defer conn.Close()
	if err := warmUp(ctx, conn); err != nil {
		return err
	}
	fmt.Fprintf(out, "client: kernel UDP socket on host A %s -> %s:9000, %v, %d in flight\n", conn.LocalAddr(), rig.B.IPv4, dur, window)
	res := runClient(ctx, out, conn, dur, window)
	res.print(out)
	if ctx.Err() != nil {
		return errDemoInterrupted
	}
	if res.sent == 0 || res.echoed != res.sent || res.corrupt != 0 {
		return fmt.Errorf("demo failed: %d of %d datagrams echoed intact (%d lost, %d corrupt)", res.echoed, res.sent, res.lost, res.corrupt)
	}
	if err := runDemoTCP(ctx, out, a, rig, func() map[string]uint64 { return d.EngineStats().Totals.Drops }); err != nil {
		return err
	}
	fmt.Fprintln(out, "demo passed: every datagram and every TCP byte came back intact (the rig goes away as the demo ends)")
	return nil
}

// demoResult is what the demo's client saw.
type demoResult struct {
	sent, echoed, lost, corrupt int
	elapsed                     time.Duration
	rtts                        []time.Duration
}

func (r *demoResult) print(out io.Writer) {
	fmt.Fprintf(out, "sent %d, echoed %d, lost %d, corrupt %d in %v", r.sent, r.echoed, r.lost, r.corrupt, r.elapsed.Round(time.Millisecond))
	if s := r.elapsed.Seconds(); s > 0 {
		fmt.Fprintf(out, ": %.0f datagrams/s", float64(r.echoed)/s)
	}
	if len(r.rtts) > 0 {
		slices.Sort(r.rtts)
		p := func(q float64) time.Duration { return r.rtts[int(q*float64(len(r.rtts)-1))] }
		fmt.Fprintf(out, ", rtt p50 %v p99 %v", p(0.50).Round(time.Microsecond), p(0.99).Round(time.Microsecond))
	}
	fmt.Fprintln(out)
}

// isTerminal reports whether w is a terminal (for \r progress lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// warmUp sends a first datagram every 200 ms until one comes back (at
// most 10 s): the first waits for the neighbours to resolve, which the
// measured run, where a datagram not back within a second is lost,
// should not count.
func warmUp(ctx context.Context, conn *net.UDPConn) error {
	warm := []byte("warm-up")
	buf := make([]byte, 64)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); {
		if ctx.Err() != nil {
			return errDemoInterrupted
		}
		if _, err := conn.Write(warm); err != nil {
			return fmt.Errorf("demo failed: first datagram: %w", err)
		}
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		if n, err := conn.Read(buf); err == nil && bytes.Equal(buf[:n], warm) {
			return nil
		}
	}
	return errors.New("demo failed: no echo of a first datagram in 10 s")
}

// runClient sends datagrams (a sequence number, then random bytes) for
// dur with at most window in flight, checks every echo against what was
// sent, and prints progress; it stops sending early when ctx ends.
func runClient(ctx context.Context, out io.Writer, conn *net.UDPConn, dur time.Duration, window int) demoResult {
	type inflight struct {
		payload []byte
		at      time.Time
	}
	var (
		mu      sync.Mutex
		pending = map[uint64]inflight{}
		res     demoResult
		room    = make(chan struct{}, window)
	)
	for range window {
		room <- struct{}{}
	}
	start := time.Now()
	stopRecv := make(chan struct{})
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		buf := make([]byte, 65536)
		for {
			conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			n, err := conn.Read(buf)
			now := time.Now()
			mu.Lock()
			if err == nil && n >= 8 {
				seq := binary.BigEndian.Uint64(buf)
				if f, ok := pending[seq]; ok {
					delete(pending, seq)
					if bytes.Equal(buf[:n], f.payload) {
						res.echoed++
						res.rtts = append(res.rtts, now.Sub(f.at))
					} else {
						res.corrupt++
					}
					room <- struct{}{}
				}
			}
			// Datagrams not back within a second are lost.
			for seq, f := range pending {
				if now.Sub(f.at) > time.Second {
					delete(pending, seq)
					res.lost++
					room <- struct{}{}
				}
			}
			idle := len(pending) == 0
			mu.Unlock()
			if idle {
				select {
				case <-stopRecv:
					return
				default:
				}
			}
		}
	}()
	tty := isTerminal(out)
	rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), 7))
	lastReport := start
	var seq uint64
	for time.Since(start) < dur && ctx.Err() == nil {
		select {
		case <-room:
		case <-time.After(100 * time.Millisecond):
			continue
		}
		p := make([]byte, 8+rng.IntN(1024))
		binary.BigEndian.PutUint64(p, seq)
		for i := 8; i < len(p); i++ {
			p[i] = byte(rng.Uint32())
		}
		mu.Lock()
		pending[seq] = inflight{payload: p, at: time.Now()}
		res.sent++
		mu.Unlock()
		if _, err := conn.Write(p); err != nil {
			mu.Lock()
			delete(pending, seq)
			res.lost++
			mu.Unlock()
			room <- struct{}{}
		}
		seq++
		if now := time.Now(); (tty && now.Sub(lastReport) >= 200*time.Millisecond) || now.Sub(lastReport) >= time.Second {
			mu.Lock()
			s, e, l := res.sent, res.echoed, res.lost
			mu.Unlock()
			rate := float64(e) / now.Sub(start).Seconds()
			if tty {
				fmt.Fprintf(out, "\rsent %d  echoed %d  lost %d  %.0f datagrams/s   ", s, e, l, rate)
			} else {
				fmt.Fprintf(out, "sent %d, echoed %d, lost %d, %.0f datagrams/s\n", s, e, l, rate)
			}
			lastReport = now
		}
	}
	close(stopRecv)
	<-recvDone
	if tty {
		fmt.Fprintln(out)
	}
	res.elapsed = time.Since(start)
	return res
}
