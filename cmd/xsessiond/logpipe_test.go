package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// TestRunSurvivesClosedLogPipe runs the daemon binary with its stdout and
// stderr on a pipe whose reader goes away once the daemon has started, as
// `xsessiond run ... 2>&1 | head -1` does. The log lines of apps attaching
// and detaching then go nowhere; the daemon keeps serving (apps attach,
// ctl answers), and SIGTERM stops it as usual: exit 0, no XDP program, no
// pins and no lock file left.
func TestRunSurvivesClosedLogPipe(t *testing.T) {
	rig := nstest.NewPair(t, nstest.Options{})
	xs, _ := binaries(t)
	sock := filepath.Join(t.TempDir(), "api.sock")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(xs, "run", "--netns", rig.B.Name, "--iface", rig.B.Link, "--socket", sock)
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	// A daemon that dies anyway leaves its program and pins: the rig's
	// teardown (registered before, so run after) then finds a clean
	// interface.
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if out, err := exec.Command(xs, "cleanup", "--netns", rig.B.Name, "--iface", rig.B.Link).CombinedOutput(); err != nil {
			t.Logf("cleanup: %v: %s", err, out)
		}
	})

	started := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "xsessiond started") {
				started <- true
				return
			}
		}
		started <- false
	}()
	select {
	case ok := <-started:
		if !ok {
			t.Fatal("the daemon's output ended before it said it started")
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the daemon did not say it started within 15s")
	}
	r.Close() // the reader goes away: the next log write hits a broken pipe

	attachDetach := func(name string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := app.Attach(ctx, app.Options{Socket: sock, Name: name})
		if err != nil {
			return err
		}
		pc, err := a.ListenPacket("udp://0.0.0.0:9000")
		if err != nil {
			a.Close()
			return err
		}
		pc.Close()
		return a.Close()
	}
	// Each attach and detach logs a line.
	for i, name := range []string{"first", "second", "third"} {
		if err := attachDetach(name); err != nil {
			t.Fatalf("app %d attaching after the log's reader went away: %v", i, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case <-exited:
		t.Fatalf("the daemon exited once its log's reader went away: %v", cmd.ProcessState)
	default:
	}
	if out, err := exec.Command(xs, "ctl", "--socket", sock, "show", "apps").CombinedOutput(); err != nil {
		t.Fatalf("ctl show apps after the log's reader went away: %v: %s", err, out)
	}
	if !xdpAttached(t, rig.B) {
		t.Fatal("no XDP program on the interface while the daemon runs")
	}

	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the daemon did not stop within 10s of SIGTERM")
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Exited() || ws.ExitStatus() != 0 {
		t.Errorf("the daemon's stop on SIGTERM: %v, want exit status 0", cmd.ProcessState)
	}
	if xdpAttached(t, rig.B) {
		t.Error("XDP program left attached after the stop")
	}
	if _, err := os.Stat(pinDir(rig.B)); err == nil {
		t.Errorf("pins left in %s after the stop", pinDir(rig.B))
	}
	if _, err := os.Stat(lockFile(t, rig.B)); err == nil {
		t.Errorf("lock file %s left after the stop", lockFile(t, rig.B))
	}
}
