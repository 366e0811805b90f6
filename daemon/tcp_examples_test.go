package daemon

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// buildExample builds examples/name into dir and returns the binary.
func buildExample(t *testing.T, dir, name string) string {
	t.Helper()
	bin := filepath.Join(dir, name)
	cmd := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../examples/"+name)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, out)
	}
	return bin
}

// startExample runs an example app against d until the test ends and
// waits for its first line of output.
func startExample(t *testing.T, d *Daemon, bin string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--socket", d.Socket()}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(bin), err)
	}
	t.Logf("%s", strings.TrimSpace(line))
	go io.Copy(io.Discard, out)
	return cmd
}

// inHost runs a command inside host h's namespace.
func inHost(h *nstest.Host, name string, args ...string) ([]byte, error) {
	var out []byte
	err := h.Do(func() error {
		var err error
		cmd := exec.Command(name, args...)
		cmd.Stderr = os.Stderr
		out, err = cmd.Output()
		return err
	})
	return out, err
}

// TestTCPExamples runs the built tcpecho and httpd examples on host B
// against the kernel's TCP on host A: echo over IPv4 and IPv6 with a half
// close, curl downloads and uploads with every byte checked, the reserved
// ports in the kernel's socket table, and the peer's reset when the app
// dies mid-transfer.
func TestTCPExamples(t *testing.T) {
	dir := t.TempDir()
	echoBin := buildExample(t, dir, "tcpecho")
	httpBin := buildExample(t, dir, "httpd")
	rig, d := tcpRig(t)
	echo := startExample(t, d, echoBin, "--listen", "tcp://0.0.0.0:7000")
	startExample(t, d, echoBin, "--listen", "tcp://[::]:7000", "--name", "tcpecho6")
	startExample(t, d, httpBin, "--listen", "tcp://0.0.0.0:8080")

	// The ports are held in B's kernel by bound, non-listening sockets:
	// the kernel's socket diagnostics list them as bound and inactive
	// (ss -tanB), and no kernel socket can take them.
	bound := boundTCPPorts(t, rig.B)
	for _, p := range []uint16{7000, 8080} {
		if !bound[p] {
			t.Errorf("port %d is not among B's bound TCP sockets (%v)", p, bound)
		}
	}
	for _, p := range []string{"0.0.0.0:7000", "[::]:7000", "0.0.0.0:8080", "127.0.0.1:8080"} {
		err := rig.B.Do(func() error {
			l, err := net.Listen("tcp", p)
			if err == nil {
				l.Close()
			}
			return err
		})
		if !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("a kernel listener on %s of host B: %v, want EADDRINUSE", p, err)
		}
	}
	// A kernel client on host B itself reaches the kernel, not the XDP
	// program of B's veth: the reservation, not listening, refuses it.
	err := rig.B.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7000).String(), 3*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("a kernel client on host B to its own port 7000: %v, want ECONNREFUSED", err)
	}

	data := make([]byte, 1<<20)
	rand.Read(data)
	for _, dst := range []netip.Addr{rig.B.IPv4, rig.B.IPv6} {
		// Half close: the client sends everything, closes its half, reads
		// the echo to the echo app's FIN.
		err := rig.A.Do(func() error {
			c, err := net.DialTimeout("tcp", netip.AddrPortFrom(dst, 7000).String(), 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := c.Write(data); err != nil {
				return err
			}
			if err := c.(*net.TCPConn).CloseWrite(); err != nil {
				return err
			}
			got, err := io.ReadAll(c)
			if err != nil {
				return fmt.Errorf("read to EOF: %w", err)
			}
			if !bytes.Equal(got, data) {
				return fmt.Errorf("%d bytes back, %w", len(got), errEcho)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("tcpecho on %v: %v", dst, err)
		}
	}

	// curl: a download of a known pattern, an upload echoed.
	url := "http://" + netip.AddrPortFrom(rig.B.IPv4, 8080).String()
	if out, err := inHost(rig.A, "curl", "-sS", "--max-time", "10", url+"/healthz"); err != nil || string(out) != "ok\n" {
		t.Fatalf("healthz: %q, %v", out, err)
	}
	const n = 100 << 20
	start := time.Now()
	out, err := inHost(rig.A, "curl", "-sS", "--max-time", "120", url+fmt.Sprintf("/bytes/%d", n))
	if err != nil {
		t.Fatalf("curl /bytes/%d: %v", n, err)
	}
	took := time.Since(start)
	want := make([]byte, n)
	for i := range want {
		want[i] = byte(i % 251)
	}
	if len(out) != n || sha256.Sum256(out) != sha256.Sum256(want) {
		t.Fatalf("curl /bytes/%d: %d bytes, sha256 %x", n, len(out), sha256.Sum256(out))
	}
	t.Logf("curl /bytes/%d: sha256 %s in %v (%.0f MB/s)", n, hex.EncodeToString(func() []byte { s := sha256.Sum256(out); return s[:] }()), took, float64(n)/took.Seconds()/1e6)
	up := filepath.Join(dir, "upload")
	body := make([]byte, 8<<20)
	rand.Read(body)
	if err := os.WriteFile(up, body, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = inHost(rig.A, "curl", "-sS", "--max-time", "60", "--data-binary", "@"+up, url+"/echo")
	if err != nil || !bytes.Equal(out, body) {
		t.Fatalf("curl --data-binary to /echo: %d bytes back of %d, %v", len(out), len(body), err)
	}

	// The echo app dies mid-transfer: the kernel peer sees a reset within
	// a second.
	err = rig.A.Do(func() error {
		c, err := net.DialTimeout("tcp", netip.AddrPortFrom(rig.B.IPv4, 7000).String(), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(data[:4096]); err != nil {
			return err
		}
		buf := make([]byte, 4096)
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		killed := time.Now()
		echo.Process.Kill()
		for {
			if _, err := c.Write(data[:4096]); err != nil {
				if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, syscall.EPIPE) {
					return fmt.Errorf("after the kill: %w, want a reset", err)
				}
				break
			}
			if _, err := c.Read(buf); err != nil {
				if !errors.Is(err, syscall.ECONNRESET) {
					return fmt.Errorf("after the kill: %w, want a reset", err)
				}
				break
			}
		}
		if took := time.Since(killed); took > time.Second {
			return fmt.Errorf("reset %v after the kill, want within a second", took)
		}
		t.Logf("reset %v after the kill", time.Since(killed).Round(time.Millisecond))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
