package api

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/xsessiond/xsessiond/internal/leakcheck"
	"golang.org/x/sys/unix"
)

func sockPath(t testing.TB) string {
	// t.TempDir can be too long for sun_path; keep it short.
	dir, err := os.MkdirTemp("", "xsapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "run", "api.sock")
}

func TestListenDialAccept(t *testing.T) {
	leakcheck.AtCleanup(t, leakcheck.Options{FDs: true}) // the set of fds at cleanup
	path := sockPath(t)
	l, err := Listen(path, ListenOptions{Group: strconv.Itoa(os.Getgid())})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v", fi.Mode())
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != os.Getgid() {
		t.Fatalf("socket gid %d", st.Gid)
	}
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range []*Conn{c, s} {
		if p := x.Peer(); int(p.PID) != os.Getpid() || int(p.UID) != os.Getuid() {
			t.Errorf("peer %+v", p)
		}
	}
	fds := memfds(t, 1)
	if err := s.Send(&SegmentAdded{Segments: []Segment{{Index: 1, Size: 4096}}}, fds...); err != nil {
		t.Fatal(err)
	}
	m, rfds, err := c.Recv()
	if err != nil || m.Type() != TypeSegmentAdded || len(rfds) != 1 || !sameFile(t, rfds[0], fds[0]) {
		t.Fatalf("recv %v %v %v", m, rfds, err)
	}
	closeFDs(rfds)
	c.Close()
	s.Close()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left after Close: %v", err)
	}
	if _, err := l.Accept(); !errors.Is(err, ErrClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}

func TestListenRefusesLiveDaemon(t *testing.T) {
	path := sockPath(t)
	l, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l2, err := Listen(path, ListenOptions{}); !errors.Is(err, ErrDaemonRunning) {
		if l2 != nil {
			l2.Close()
		}
		t.Fatalf("second Listen: %v", err)
	}
	// The first listener is untouched.
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatalf("dial after refused Listen: %v", err)
	}
	c.Close()
	l.Close()
	// Reusable once the first daemon is gone.
	l, err = Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
}

func TestListenRefusesLiveSocketWithoutLock(t *testing.T) {
	path := sockPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	// A listener that does not take the lock, as an older daemon might.
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	if l, err := Listen(path, ListenOptions{}); !errors.Is(err, ErrDaemonRunning) {
		if l != nil {
			l.Close()
		}
		t.Fatalf("Listen over a live socket: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("live socket removed: %v", err)
	}
}

// staleSocket leaves a socket file nobody listens on, as a daemon that was
// killed does.
func staleSocket(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
}

func TestListenReclaimsStaleSocket(t *testing.T) {
	path := sockPath(t)
	staleSocket(t, path)
	l, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	defer l.Close()
	c, err := Dial(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

func TestListenKeepsOtherFiles(t *testing.T) {
	path := sockPath(t)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("precious"), 0o644); err != nil {
		t.Fatal(err)
	}
	if l, err := Listen(path, ListenOptions{}); err == nil {
		l.Close()
		t.Fatal("Listen replaced a regular file")
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "precious" {
		t.Fatalf("file damaged: %q %v", b, err)
	}
}

func TestDialNoDaemon(t *testing.T) {
	path := sockPath(t)
	_, err := Dial(context.Background(), path)
	if !errors.Is(err, ErrNoDaemon) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("no socket: %v", err)
	}
	staleSocket(t, path)
	_, err = Dial(context.Background(), path)
	if !errors.Is(err, ErrNoDaemon) || !errors.Is(err, unix.ECONNREFUSED) {
		t.Fatalf("stale socket: %v", err)
	}
}

// TestListenSocketDirectory listens on paths whose directory is missing:
// the socket's own directory is created (mode 0755) when its parent
// exists, as /run/xsessiond under /run; a path with a missing directory
// above it (a mistyped --socket) is refused with an error that names the
// highest missing directory and what to do, and nothing is created.
func TestListenSocketDirectory(t *testing.T) {
	path := sockPath(t) // TMP/xsapiN/run/api.sock: run is missing, its parent exists
	l, err := Listen(path, ListenOptions{})
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	if fi, err := os.Stat(filepath.Dir(path)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Fatalf("socket directory: %v %v", fi, err)
	}

	base := filepath.Dir(filepath.Dir(path))
	for _, c := range []struct {
		path, missing string
	}{
		{filepath.Join(base, "nonexistent", "dir", "api.sock"), filepath.Join(base, "nonexistent")},
		{filepath.Join(base, "a", "b", "c", "api.sock"), filepath.Join(base, "a")},
		{filepath.Join(base, "run", "sub", "api.sock"), ""}, // run exists now: sub is made
	} {
		l, err := Listen(c.path, ListenOptions{})
		if c.missing == "" {
			if err != nil {
				t.Errorf("Listen(%s): %v", c.path, err)
				continue
			}
			l.Close()
			continue
		}
		if err == nil {
			l.Close()
			t.Errorf("Listen(%s): no error", c.path)
			continue
		}
		if !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Listen(%s): %v, want an error that wraps fs.ErrNotExist", c.path, err)
		}
		want := "directory " + c.missing + " does not exist"
		if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "mkdir -p "+filepath.Dir(c.path)) {
			t.Errorf("Listen(%s): %q\nwant it to say %q and mkdir -p %s", c.path, msg, want, filepath.Dir(c.path))
		}
		if _, err := os.Lstat(c.missing); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Listen(%s) created %s: %v", c.path, c.missing, err)
		}
	}
}
