package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/datapath/xsk/xsktest"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// binaries builds xsessiond and udpecho once per test process.
func binaries(t testing.TB) (xsessiond, udpecho string) {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "xsessiond-bin-")
		if buildErr != nil {
			return
		}
		gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
		for _, pkg := range []string{"github.com/xsessiond/xsessiond/cmd/xsessiond", "github.com/xsessiond/xsessiond/examples/udpecho"} {
			out, err := exec.Command(gobin, "build", "-o", buildDir, pkg).CombinedOutput()
			if err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "xsessiond"), filepath.Join(buildDir, "udpecho")
}

// process is a started binary whose output is collected.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed once Wait returned and every line of output was collected
	mu     sync.Mutex
	out    bytes.Buffer
	line   chan string
}

// startRigDaemon makes a rig with host A's transmit checksum offload off
// (so that an AF_XDP receiver sees complete UDP checksums) and starts the
// daemon binary on host B's interface, with its control socket in a
// directory of the test's; it returns once the daemon said it started.
func startRigDaemon(t testing.TB) (rig *nstest.Pair, sock string, d *process) {
	t.Helper()
	rig = nstest.NewPair(t, nstest.Options{})
	if err := xsktest.DisableTxOffload(rig.A); err != nil {
		t.Fatal(err)
	}
	xs, _ := binaries(t)
	sock = filepath.Join(t.TempDir(), "api.sock")
	d = startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	d.waitLine(t, "xsessiond started", 15*time.Second)
	return rig, sock, d
}

func startProcess(t testing.TB, name string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(name, args...), line: make(chan string, 100), exited: make(chan struct{})}
	r, w := io.Pipe()
	p.cmd.Stdout = w
	p.cmd.Stderr = w
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			select {
			case p.line <- sc.Text():
			default:
			}
		}
	}()
	go func() {
		p.cmd.Wait()
		w.Close()
		// Wait returns once the last write into the pipe was read, which
		// may be before the scanner has added that line to out: a test
		// that reads the output once the process exited must find it.
		<-scanned
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			// SIGTERM first: the daemon then detaches and unpins.
			p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.exited:
			case <-time.After(5 * time.Second):
				p.cmd.Process.Kill()
				<-p.exited
			}
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", filepath.Base(name), p.output())
		}
	})
	return p
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// waitLine waits for a line containing s.
func (p *process) waitLine(t testing.TB, s string, d time.Duration) string {
	t.Helper()
	timeout := time.After(d)
	for {
		select {
		case l := <-p.line:
			if strings.Contains(l, s) {
				return l
			}
		case <-timeout:
			t.Fatalf("no line with %q within %v; output:\n%s", s, d, p.output())
		}
	}
}

// stop sends SIGTERM and waits for the exit; it returns the exit code.
func (p *process) stop(t testing.TB) int {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		t.Fatalf("%s did not stop within 10s of SIGTERM", p.cmd.Path)
	}
	return p.cmd.ProcessState.ExitCode()
}

func waitSocket(t testing.TB, sock string, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for {
		c, err := api.Dial(context.Background(), sock)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Fatalf("no daemon on %s after %v: %v", sock, d, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestEndToEnd runs the daemon and the echo example as separate processes
// in a two-host rig, the daemon on host B's veth inside B's netns, and
// checks from a kernel UDP socket on host A that every datagram comes back
// byte for byte.
func TestEndToEnd(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, echo := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	d := startProcess(t, xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	waitSocket(t, sock, 15*time.Second)
	e := startProcess(t, echo, "--socket", sock, "--listen", "udp://0.0.0.0:9000")
	e.waitLine(t, "echoing on", 10*time.Second)

	const n = 500
	err := rig.A.Do(func() error {
		c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: rig.B.IPv4.AsSlice(), Port: 9000})
		if err != nil {
			return err
		}
		defer c.Close()
		rng := rand.New(rand.NewPCG(1, 2))
		buf := make([]byte, 2048)
		for i := range n {
			msg := make([]byte, 1+rng.IntN(1400))
			for j := range msg {
				msg[j] = byte(rng.Uint32())
			}
			var got []byte
			for try := 0; try < 3 && got == nil; try++ { // the first ones may wait for ARP
				if _, err := c.Write(msg); err != nil {
					return fmt.Errorf("datagram %d: %w", i, err)
				}
				c.SetReadDeadline(time.Now().Add(time.Second))
				m, err := c.Read(buf)
				if err != nil {
					if ne, ok := err.(net.Error); ok && ne.Timeout() {
						continue
					}
					return fmt.Errorf("datagram %d: %w", i, err)
				}
				got = buf[:m]
			}
			if got == nil {
				return fmt.Errorf("datagram %d (%d bytes): no echo after 3 tries", i, len(msg))
			}
			if !bytes.Equal(got, msg) {
				return fmt.Errorf("datagram %d: echo of %d bytes differs from the %d sent", i, len(got), len(msg))
			}
		}
		return nil
	})
	if err != nil {
		out, _ := exec.Command(xs, "ctl", "--socket", sock, "show", "stats", "--json").CombinedOutput()
		t.Fatalf("%v\nstats: %s", err, out)
	}
	if code := e.stop(t); code != 0 {
		t.Errorf("udpecho exited %d", code)
	}
	if code := d.stop(t); code != 0 {
		t.Errorf("xsessiond exited %d", code)
	}
	if _, err := os.Stat(sock); err == nil {
		t.Errorf("socket %s left behind", sock)
	}
}
