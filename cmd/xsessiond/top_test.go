package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/ctlview"
)

func TestTopOnce(t *testing.T) {
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, a, 9000)
	out, err := ctl(t, d.Socket(), "top", "--once", "--interval", "100ms")
	if err != nil {
		t.Fatalf("top --once: %v\n%s", err, out)
	}
	for _, w := range []string{"QUEUE", "APP", "HANDLE", "echo", "listen udp://0.0.0.0:9000"} {
		if !strings.Contains(out, w) {
			t.Errorf("top --once has no %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("top --once prints escapes:\n%q", out)
	}
}

// ptyOutput collects what a program writes to a pseudo-terminal.
type ptyOutput struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (p *ptyOutput) String() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.buf.String()
}

// TestTopTerminal runs ctl top in a pseudo-terminal and checks that it
// draws, leaves on q and on SIGINT, and gives the terminal back as it
// found it: the alternate screen left, the cursor shown, the line
// discipline's modes restored.
func TestTopTerminal(t *testing.T) {
	xs, _ := binaries(t)
	d := startDaemon(t)
	a := attach(t, d, app.Options{Name: "echo"})
	echoServer(t, a, 9000)
	for _, how := range []string{"q", "SIGINT"} {
		t.Run(how, func(t *testing.T) {
			ptmx, tty, err := pty.Open()
			if err != nil {
				t.Fatal(err)
			}
			defer ptmx.Close()
			defer tty.Close()
			if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 160}); err != nil {
				t.Fatal(err)
			}
			before, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(xs, "ctl", "--socket", d.Socket(), "top", "--interval", "200ms")
			cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			var out ptyOutput
			go func() {
				b := make([]byte, 4096)
				for {
					n, err := ptmx.Read(b)
					out.mu.Lock()
					out.buf.Write(b[:n])
					out.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
			deadline := time.Now().Add(10 * time.Second)
			for strings.Count(out.String(), "QUEUE") < 2 {
				if time.Now().After(deadline) {
					cmd.Process.Kill()
					cmd.Wait()
					t.Fatalf("top drew no two frames in 10s:\n%q", out.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			raw, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if raw.Lflag&unix.ICANON != 0 {
				t.Errorf("top runs without raw mode: lflag %#x", raw.Lflag)
			}
			if how == "q" {
				if _, err := io.WriteString(ptmx, "q"); err != nil {
					t.Fatal(err)
				}
			} else if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("top after %s: %v", how, err)
				}
			case <-time.After(5 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Fatalf("top did not exit within 5s of %s:\n%q", how, out.String())
			}
			after, err := unix.IoctlGetTermios(int(tty.Fd()), unix.TCGETS)
			if err != nil {
				t.Fatal(err)
			}
			if *after != *before {
				t.Errorf("terminal modes after top: %+v, before: %+v", after, before)
			}
			time.Sleep(50 * time.Millisecond) // the last bytes through the pty
			s := out.String()
			if !strings.HasPrefix(s, ctlview.EscEnterAlt) {
				t.Errorf("top did not enter the alternate screen first: %q", s[:min(len(s), 40)])
			}
			if i, j := strings.LastIndex(s, ctlview.EscLeaveAlt), strings.LastIndex(s, "QUEUE"); i < 0 || i < j {
				t.Errorf("top did not leave the alternate screen after its last frame: %q", s[max(0, len(s)-200):])
			}
		})
	}
}
