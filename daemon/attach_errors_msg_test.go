package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/app"
	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

func init() {
	// attach-error attaches and prints the error: the test runs it as
	// another user.
	childApps["attach-error"] = func(sock, _ string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		a, err := app.Attach(ctx, app.Options{Socket: sock, Name: "denied"})
		if err == nil {
			a.Close()
			fmt.Println("attached")
			return 1
		}
		fmt.Println(err)
		if !errors.Is(err, fs.ErrPermission) {
			return 1
		}
		return 0
	}
}

// needRootHere skips t unless it runs as root, or fails it under
// XSESSIOND_PRIVILEGED=require.
func needRootHere(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv(nstest.PrivilegedEnv) == "require" {
		t.Fatalf("%s, and %s=require: run the tests as root (go test -exec sudo)", why, nstest.PrivilegedEnv)
	}
	t.Skip(why)
}

// binaryForNobody copies the test binary into a directory of its own that
// uid 65534 may enter and run it from (the test's temporary directories
// are root's alone), removed when the test ends; it returns both.
func binaryForNobody(t *testing.T) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "xw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "daemon.test")
	copyFile(t, os.Args[0], bin)
	return dir, bin
}

// TestAttachPermissionDeniedSaysWhatToDo: an app of uid 65534 attaching to
// a daemon whose socket is root's alone (mode 0600, group root: no
// socket_group) is told to run as root or to set socket_group; one whose
// socket's directory it may not cross is told that.
func TestAttachPermissionDeniedSaysWhatToDo(t *testing.T) {
	needRootHere(t, "needs root to run an app as another user")
	dir, bin := binaryForNobody(t)
	sock := filepath.Join(dir, "api.sock")
	startDaemon(t, func(c *Config) { c.Socket, c.SocketMode = sock, 0o600 })
	closed := filepath.Join(t.TempDir(), "api.sock") // under a directory of mode 0700
	startDaemon(t, func(c *Config) { c.Socket = closed })

	for _, c := range []struct{ sock, want string }{
		{sock, "cannot connect to " + sock + ": permission denied: the socket is root's (no socket_group in the daemon's config): " +
			"run the app as root (sudo, or go run -exec sudo), or set socket_group in the daemon's config to a group your user is in"},
		{closed, "cannot reach " + closed + ": permission denied on its directory " + filepath.Dir(closed) +
			", which must let your user through (mode 0755; the socket's own mode and group say who may connect)"},
	} {
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = append(os.Environ(), childAppEnv+"=attach-error", childSockEnv+"="+c.sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		got := strings.TrimSpace(string(out))
		if err != nil || got != c.want {
			t.Errorf("attach as uid 65534 to %s: %v\n got %q\nwant %q", c.sock, err, got, c.want)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestExamplesSayTheDaemonWentAway: udpecho, tcpecho and httpd attached to
// a daemon that stops exit 1 saying the daemon went away and to start
// them again once it runs.
func TestExamplesSayTheDaemonWentAway(t *testing.T) {
	bins := t.TempDir()
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	for _, c := range []struct{ name, listen, ready string }{
		{"udpecho", "udp://0.0.0.0:19471", "udpecho: echoing on"},
		{"tcpecho", "tcp://0.0.0.0:19472", "tcpecho: echoing on"},
		{"httpd", "tcp://0.0.0.0:19473", "httpd: serving on"},
		{"udpsink", "udp://0.0.0.0:19474", "udpsink: receiving on"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := exec.Command(gobin, "build", "-o", bins, "github.com/xsessiond/xsessiond/examples/"+c.name).CombinedOutput()
			if err != nil {
				t.Fatalf("go build %s: %v\n%s", c.name, err, out)
			}
			d := startDaemon(t)
			cmd := exec.Command(filepath.Join(bins, c.name), "--socket", d.Socket(), "--listen", c.listen)
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill() })
			line, err := bufio.NewReader(stdout).ReadString('\n')
			if !strings.HasPrefix(line, c.ready) {
				t.Fatalf("%s: %q %v, want %q", c.name, line, err, c.ready)
			}
			d.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("%s still runs 10 s after the daemon stopped", c.name)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Errorf("%s: %v, want exit status 1", c.name, err)
			}
			want := c.name + ": the daemon at " + d.Socket() + " went away (xsessiond is shutting down): start " + c.name + " again once xsessiond runs"
			if got := strings.TrimSpace(stderr.String()); got != want {
				t.Errorf("%s:\n got %q\nwant %q", c.name, got, want)
			}
		})
	}
}

// TestExamplesNameTheirFlags: udpecho's attach errors name its --socket
// and --secret flags where the app library names Options fields.
func TestExamplesNameTheirFlags(t *testing.T) {
	bins := t.TempDir()
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bins, "github.com/xsessiond/xsessiond/examples/udpecho").CombinedOutput()
	if err != nil {
		t.Fatalf("go build udpecho: %v\n%s", err, out)
	}
	d := startDaemon(t)
	if err := d.AddNamespace("blue", 42, "lo", ""); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nobody.sock")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--socket", missing}, "udpecho: no daemon at " + missing + ": is xsessiond run going? Start it, or give --socket the socket a running daemon's run --socket was given (/run/xsessiond/api.sock when not given)"},
		{[]string{"--socket", bins}, "udpecho: " + bins + " is a directory, not a socket: give --socket the daemon's control socket (xsessiond run --socket, /run/xsessiond/api.sock when not given)"},
		{[]string{"--socket", d.Socket(), "--ns", "blue", "--secret", "41"}, `udpecho: wrong secret for namespace "blue": give --secret the namespace's secret (the --secret of xsessiond ctl ns add, or of ctl ns set-secret)`},
		{[]string{"--socket", d.Socket(), "--ns", "nosuch"}, `udpecho: no namespace "nosuch" in the daemon: xsessiond ctl show namespaces lists those it has`},
	} {
		out, err := exec.Command(filepath.Join(bins, "udpecho"), c.args...).CombinedOutput()
		if got := strings.TrimSpace(string(out)); err == nil || got != c.want {
			t.Errorf("udpecho %v: %v\n got %q\nwant %q", c.args, err, got, c.want)
		}
	}
}
