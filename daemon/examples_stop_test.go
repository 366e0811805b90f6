package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// exampleProc is an example app run by a test: its stdout and stderr.
type exampleProc struct {
	cmd    *exec.Cmd
	stdout *bufio.Reader
	mu     sync.Mutex
	stderr strings.Builder
	done   chan struct{}
	rest   strings.Builder // stdout after the first line, once done is closed
	err    error           // cmd.Wait's, once done is closed
}

func (p *exampleProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.Write(b)
}

func (p *exampleProc) errText() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// runExampleProc starts bin against d, waits for its first line (which
// must start with ready) and kills it when the test ends.
func runExampleProc(t *testing.T, d *Daemon, bin, ready string, args ...string) *exampleProc {
	t.Helper()
	p := &exampleProc{cmd: exec.Command(bin, append([]string{"--socket", d.Socket()}, args...)...), done: make(chan struct{})}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.stdout = bufio.NewReader(out)
	line, err := p.stdout.ReadString('\n')
	go func() {
		// Wait only after stdout is read to its end.
		io.Copy(&p.rest, p.stdout)
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
	})
	if !strings.HasPrefix(line, ready) {
		t.Fatalf("%s: first line %q (%v), want %q; stderr %q", bin, line, err, ready, p.errText())
	}
	return p
}

// exited waits up to within for p to exit and returns its exit status
// (-1 if it did not exit).
func (p *exampleProc) exited(within time.Duration) int {
	select {
	case <-p.done:
	case <-time.After(within):
		return -1
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		return -2
	}
	return 0
}

// TestTCPEchoStopsWithConnectionsOpen: SIGTERM stops tcpecho while a
// kernel client's connection is open and idle: the client reads EOF, and
// tcpecho exits 0 within a few seconds, quietly.
func TestTCPEchoStopsWithConnectionsOpen(t *testing.T) {
	bin := buildExample(t, t.TempDir(), "tcpecho")
	rig, d := tcpRig(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			p := runExampleProc(t, d, bin, "tcpecho: echoing on", "--listen", "tcp://0.0.0.0:7000")
			err := rig.A.Do(func() error {
				c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7000).String(), 3*time.Second)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write([]byte("hello")); err != nil {
					return err
				}
				buf := make([]byte, 5)
				if _, err := io.ReadFull(c, buf); err != nil {
					return err
				}
				p.cmd.Process.Signal(sig)
				if st := p.exited(5 * time.Second); st != 0 {
					return fmt.Errorf("tcpecho after %v with a connection open: exit status %d (-1: still running 5 s later), stderr %q", sig, st, p.errText())
				}
				if n, err := c.Read(buf); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
					return fmt.Errorf("the client's read after tcpecho stopped: %d, %v, want EOF", n, err)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if s := p.errText(); s != "" {
				t.Errorf("tcpecho's stderr: %q, want nothing", s)
			}
		})
	}
}

// TestHTTPDStopFinishesResponses: SIGTERM stops httpd after the response
// it is sending is complete (a kernel client reads every byte of it, in
// order, then EOF), and httpd exits 0.
func TestHTTPDStopFinishesResponses(t *testing.T) {
	bin := buildExample(t, t.TempDir(), "httpd")
	rig, d := tcpRig(t)
	p := runExampleProc(t, d, bin, "httpd: serving on", "--listen", "tcp://0.0.0.0:8080")
	const n = 16 << 20
	err := rig.A.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 8080).String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "GET /bytes/%d HTTP/1.1\r\nHost: x\r\n\r\n", n)
		br := bufio.NewReaderSize(c, 4096)
		head, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(head, "HTTP/1.1 200") {
			return fmt.Errorf("response: %q, %v", head, err)
		}
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return err
			}
			if l == "\r\n" {
				break
			}
		}
		// The first bytes of the body, then the signal, then the rest.
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body[:4096]); err != nil {
			return err
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		time.Sleep(200 * time.Millisecond)
		got, err := io.ReadFull(br, body[4096:])
		if err != nil {
			return fmt.Errorf("the body after SIGTERM: %d of %d bytes, %w", 4096+got, n, err)
		}
		for i, b := range body {
			if b != byte(i%251) {
				return fmt.Errorf("byte %d of the body is %d, want %d", i, b, i%251)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := p.exited(10 * time.Second); st != 0 {
		t.Fatalf("httpd after SIGTERM: exit status %d (-1: still running), stderr %q", st, p.errText())
	}
}
