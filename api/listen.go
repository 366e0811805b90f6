package api

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// ListenOptions tune Listen.
type ListenOptions struct {
	// Mode is the permission of the socket file; 0 means 0660. Connecting
	// needs write permission.
	Mode os.FileMode
	// Group owns the socket file: a group name or a numeric gid. Empty
	// leaves the process's group.
	Group string
}

// Listener accepts control connections on a unix SOCK_SEQPACKET socket.
// It holds an exclusive lock on path+".lock" for its lifetime, so two
// daemons never both own the socket. Close it to remove the socket file and
// release the lock (the empty lock file stays, so that the lock always
// names one inode). Accept is safe to call from one goroutine while another
// calls Close.
type Listener struct {
	ul   *net.UnixListener
	lock *os.File
	path string
}

// maxSocketPath is the room in sockaddr_un.sun_path, less the terminating
// NUL.
const maxSocketPath = len(unix.RawSockaddrUnix{}.Path) - 1

// Listen creates the socket at path, creating its directory (mode 0755) if
// needed: that one directory, as systemd makes a RuntimeDirectory such as
// /run/xsessiond, never the directories above it (see makeSocketDir). It
// fails with ErrDaemonRunning when a live daemon owns the
// socket (it holds the lock, or accepts a connection on path); a socket
// file left behind by a daemon that died is removed and reused. A file at
// path that is not a socket is never removed.
func Listen(path string, opts ListenOptions) (*Listener, error) {
	if path == "" || len(path) > maxSocketPath {
		return nil, fmt.Errorf("api: listen %q: path empty or longer than %d bytes", path, maxSocketPath)
	}
	mode := opts.Mode.Perm()
	if mode == 0 {
		mode = 0o660
	}
	gid := -1
	if opts.Group != "" {
		g, err := lookupGroup(opts.Group)
		if err != nil {
			return nil, fmt.Errorf("api: listen %s: %w", path, err)
		}
		gid = g
	}
	if err := makeSocketDir(path); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("api: listen %s: %w (lock %s.lock is held)", path, ErrDaemonRunning, path)
		}
		return nil, fmt.Errorf("api: listen %s: lock: %w", path, err)
	}
	ul, err := listenLocked(path)
	if err != nil {
		lock.Close()
		return nil, err
	}
	fail := func(err error) (*Listener, error) {
		ul.Close()
		lock.Close()
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, mode); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Lchown(path, -1, gid); err != nil {
			return fail(err)
		}
	}
	return &Listener{ul: ul, lock: lock, path: path}, nil
}

// makeSocketDir creates the directory of the socket at path (mode 0755)
// when it is missing and its parent exists. A missing parent is refused
// rather than created: it is a mistyped path far more often than a wish
// for a new tree (--socket /nonexistent/dir/api.sock would otherwise make
// /nonexistent/dir). The error names the highest missing directory, says
// how to go on, and wraps fs.ErrNotExist.
func makeSocketDir(path string) error {
	dir := filepath.Dir(path)
	err := os.Mkdir(dir, 0o755)
	if err == nil || errors.Is(err, fs.ErrExist) {
		// An existing file that is not a directory fails at the lock
		// file next, with ENOTDIR.
		return nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("api: listen %s: create its directory: %w", path, err)
	}
	missing := filepath.Dir(dir)
	for {
		up := filepath.Dir(missing)
		if up == missing {
			break
		}
		if _, serr := os.Lstat(up); !errors.Is(serr, fs.ErrNotExist) {
			break
		}
		missing = up
	}
	return fmt.Errorf("api: listen %s: directory %s does not exist, and only the socket's own directory (%s) is created: "+
		"check the path, or create the directories first (mkdir -p %s): %w", path, missing, dir, dir, fs.ErrNotExist)
}

// listenLocked checks what is at path, removes a stale socket, and binds.
// The caller holds the lock.
func listenLocked(path string) (*net.UnixListener, error) {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return nil, fmt.Errorf("api: listen %s: exists and is not a socket: %w", path, unix.EEXIST)
	default:
		c, err := net.DialTimeout("unixpacket", path, time.Second)
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("api: listen %s: %w", path, ErrDaemonRunning)
		}
		var errno unix.Errno
		if !errors.As(err, &errno) || errno != unix.ECONNREFUSED {
			// EAGAIN: a live listener with a full backlog; EPROTOTYPE: a
			// live socket of another type. Either way, not ours to take.
			return nil, fmt.Errorf("api: listen %s: socket is in use: %w: %w", path, ErrDaemonRunning, err)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("api: listen %s: removing stale socket: %w", path, err)
		}
	}
	ul, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("api: listen %s: %w", path, err)
	}
	ul.SetUnlinkOnClose(true)
	return ul, nil
}

func lookupGroup(g string) (int, error) {
	if n, err := strconv.Atoi(g); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("group %q: negative gid", g)
		}
		return n, nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("group %q: %w", g, err)
	}
	return strconv.Atoi(grp.Gid)
}

// Accept waits for the next connection. The returned Conn records the
// peer's credentials (Conn.Peer).
func (l *Listener) Accept() (*Conn, error) {
	uc, err := l.ul.AcceptUnix()
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return nil, fmt.Errorf("api: accept: %w", ErrClosed)
		}
		return nil, fmt.Errorf("api: accept: %w", err)
	}
	return newConn(uc)
}

// Close stops accepting, removes the socket file and releases the lock.
// Connections already accepted stay open.
func (l *Listener) Close() error {
	err := l.ul.Close()
	l.lock.Close()
	if err != nil {
		if errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("api: close: %w", ErrClosed)
		}
		return fmt.Errorf("api: close: %w", err)
	}
	return nil
}

// Path returns the socket's path.
func (l *Listener) Path() string { return l.path }

// Addr returns the listener's address.
func (l *Listener) Addr() net.Addr { return l.ul.Addr() }

// Dial connects to the daemon's socket at path. When nothing listens there
// (no socket file, or a stale one) the error wraps ErrNoDaemon and the
// errno (ENOENT or ECONNREFUSED). The Conn records the daemon's credentials.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unixpacket", path)
	if err != nil {
		var errno unix.Errno
		if errors.As(err, &errno) && (errno == unix.ENOENT || errno == unix.ECONNREFUSED) {
			return nil, fmt.Errorf("api: dial %s: %w: %w", path, ErrNoDaemon, errno)
		}
		return nil, fmt.Errorf("api: dial %s: %w", path, err)
	}
	return newConn(nc.(*net.UnixConn))
}
