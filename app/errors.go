package app

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
	"strings"
	"syscall"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// Errors of this package besides the sessions sentinels.
var (
	// ErrNoDatapath is returned by WriteTo to a wire address on a listener
	// that has no datapath fifo (the daemon runs without a datapath).
	ErrNoDatapath = errors.New("app: the listener has no datapath fifo: the daemon runs without a datapath")
	// ErrMessageTooLong is returned by writes of datagrams that can never
	// fit in the fifo.
	ErrMessageTooLong = errors.New("app: datagram larger than the fifo")
	// ErrProtocol is returned when the daemon sends something this library
	// cannot use (a segment or fifo that does not validate).
	ErrProtocol = errors.New("app: bad reply from the daemon")
)

// errFDsLost is why a reply or notice came without its descriptors: the
// kernel had no room for them in this process (MSG_CTRUNC), which is at
// its descriptor limit (ulimit -n). It is syscall.EMFILE, as a call that
// opens a descriptor there fails.
var errFDsLost = fmt.Errorf("the daemon's descriptors did not arrive: this process is at its descriptor limit (ulimit -n): %w", syscall.EMFILE)

// Error is an error with a one-line text for people, wrapping the error it
// came from (a sessions sentinel through api.RemoteError, net.ErrClosed,
// api.ErrNoDaemon, ...), so errors.Is sees through it.
type Error struct {
	Msg string
	Err error
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the error is a timeout (a deadline or a
// context's, or ETIMEDOUT). With Temporary it makes an Error a net.Error,
// as the *net.OpError of net.Dial and net.Listen is: a program that asks
// err.(net.Error) for Timeout gets its answer.
func (e *Error) Timeout() bool {
	return errors.Is(e.Err, os.ErrDeadlineExceeded) || errors.Is(e.Err, context.DeadlineExceeded) ||
		errors.Is(e.Err, syscall.ETIMEDOUT)
}

// Temporary is Timeout, as net.OpError's is for the errors a dial returns.
//
// Deprecated: as net.Error's Temporary; use Timeout, or errors.Is.
func (e *Error) Temporary() bool { return e.Timeout() }

var _ net.Error = (*Error)(nil)

// attachError explains a failed Attach: what went wrong and what to do,
// naming the Options field to change (Options.Socket, Options.Secret).
func attachError(err error, o *Options) error {
	ns := o.Namespace
	var msg string
	switch {
	case errors.Is(err, api.ErrNoDaemon) || errors.Is(err, syscall.ENOTDIR):
		if what := api.NotSocket(o.Socket); what != "" {
			msg = fmt.Sprintf("%s: give Options.Socket the daemon's control socket (xsessiond run --socket, %s when not given)", what, DefaultSocket)
		} else {
			msg = fmt.Sprintf("no daemon at %s: is xsessiond run going? Start it, or give Options.Socket the socket a running daemon's run --socket was given (%s when not given)", o.Socket, DefaultSocket)
		}
	case errors.Is(err, fs.ErrPermission):
		msg = permissionText(o.Socket)
	case errors.Is(err, flow.ErrWrongSecret):
		msg = fmt.Sprintf("wrong secret for namespace %q: give Options.Secret the namespace's secret (the --secret of xsessiond ctl ns add, or of ctl ns set-secret)", ns)
	case errors.Is(err, flow.ErrInvalidNamespace):
		msg = fmt.Sprintf("no namespace %q in the daemon: xsessiond ctl show namespaces lists those it has", ns)
	case errors.Is(err, api.ErrVersion):
		msg = fmt.Sprintf("the daemon at %s speaks another protocol version: %v", o.Socket, err)
	case errors.Is(err, context.DeadlineExceeded):
		msg = fmt.Sprintf("the daemon at %s did not answer in time", o.Socket)
	default:
		msg = "attach: " + remoteText(err)
	}
	return &Error{Msg: msg, Err: err}
}

// permissionText explains a connect to socket refused for permission: a
// directory on the way this user may not cross, a socket of root's alone
// (its group root's: the daemon's config names no socket_group), or one
// whose group the user is not in.
func permissionText(socket string) string {
	fi, err := os.Stat(socket)
	if errors.Is(err, fs.ErrPermission) {
		return fmt.Sprintf("cannot reach %s: permission denied on its directory %s, which must let your user through (mode 0755; the socket's own mode and group say who may connect)", socket, filepath.Dir(socket))
	}
	st, ok := statOf(fi)
	if err != nil || !ok {
		return fmt.Sprintf("cannot connect to %s: permission denied (is your user in the socket's group?)", socket)
	}
	if st.Gid == 0 {
		return fmt.Sprintf("cannot connect to %s: permission denied: the socket is root's (no socket_group in the daemon's config): run the app as root (sudo, or go run -exec sudo), or set socket_group in the daemon's config to a group your user is in", socket)
	}
	group := strconv.FormatUint(uint64(st.Gid), 10)
	if g, err := user.LookupGroupId(group); err == nil {
		group = g.Name
	}
	return fmt.Sprintf("cannot connect to %s: permission denied (is your user in the socket's group %s? usermod -aG %s USER, then log in again; or run the app as root)", socket, group, group)
}

// statOf returns fi's stat_t.
func statOf(fi fs.FileInfo) (*syscall.Stat_t, bool) {
	if fi == nil {
		return nil, false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return st, ok
}

// opError explains a failed bind or connect of uri.
func opError(op, uri string, err error) error {
	var msg string
	switch {
	case errors.Is(err, net.ErrClosed):
		return &Error{Msg: fmt.Sprintf("%s %s: %v", op, uri, err), Err: err}
	case errors.Is(err, flow.ErrAddressInUse):
		// As the kernel's bind says it, too.
		return &Error{Msg: fmt.Sprintf("%s: address already in use", uri), Err: errors.Join(err, syscall.EADDRINUSE)}
	case errors.Is(err, flow.ErrNotInNamespace):
		msg = fmt.Sprintf("%s: the address is not one of the namespace's", uri)
	case errors.Is(err, flow.ErrInvalidURI):
		// What is wrong with it, as the parser (here or the daemon's)
		// says it, naming the URI once, and the forms wanted once.
		text := remoteText(err)
		if !strings.Contains(text, fmt.Sprintf("%q", uri)) {
			text = uri + ": " + text
		}
		if !strings.Contains(text, "(want ") {
			text += " (want tcp://ADDR:PORT or udp://ADDR:PORT)"
		}
		msg = op + " " + text
	case strings.HasPrefix(remoteText(err), "connect "):
		msg = remoteText(err) // the daemon's, which names the connect and its address already
	case errors.Is(err, flow.ErrConnect):
		msg = fmt.Sprintf("connect %s: %s", uri, remoteText(err))
	default:
		msg = fmt.Sprintf("%s %s: %s", op, uri, remoteText(err))
	}
	return &Error{Msg: msg, Err: err}
}

// dialError is the error of a failed Dial of uri, as net.Dial's: a
// *net.OpError with Op "dial", the network of the URI's scheme ("tcp",
// "udp") and raddr, the address dialed (nil when there is none: a URI
// that does not parse, a name that does not resolve), wrapping opError's
// *Error. The OpError's text says "dial tcp ADDR: ", so the wrapped one
// goes on without the verb, naming the URI and what went wrong.
func dialError(uri string, raddr net.Addr, err error) error {
	inner := opError("dial", uri, err)
	if e, ok := inner.(*Error); ok {
		e.Msg = strings.TrimPrefix(e.Msg, "dial ")
	}
	network, _, ok := strings.Cut(uri, "://")
	if !ok {
		network = ""
	}
	return &net.OpError{Op: "dial", Net: strings.ToLower(network), Addr: raddr, Err: inner}
}

// listenError is the error of a failed Listen or ListenPacket of uri, as
// net.Listen's: a *net.OpError with Op "listen", the network of the URI's
// scheme and the address asked for (nil for a URI that names none, a host
// name, both families), wrapping the library's *Error, whose text then
// goes on without the verb, and without the URI when the OpError names
// its address: "listen udp 0.0.0.0:9000: address already in use".
func listenError(uri string, err error) error {
	e, _ := err.(*Error)
	if e != nil {
		e.Msg = strings.TrimPrefix(e.Msg, "listen ")
	}
	network, _, ok := strings.Cut(uri, "://")
	if !ok {
		network = ""
	}
	var laddr net.Addr
	plain, zone := flow.SplitZone(uri)
	if ep, perr := flow.ParseURI(plain); perr == nil {
		laddr = zonedAddr(endpointAddr(ep), zone)
		if e != nil {
			e.Msg = strings.TrimPrefix(e.Msg, uri+": ")
		}
	}
	return &net.OpError{Op: "listen", Net: strings.ToLower(network), Addr: laddr, Err: err}
}

// remoteText is the text of err, the daemon's own for a remote error.
func remoteText(err error) string {
	var re *api.RemoteError
	if errors.As(err, &re) {
		return re.Error()
	}
	return err.Error()
}

// closedError is the error of an App that stopped: it wraps net.ErrClosed.
func closedError(reason string) error {
	return &Error{Msg: "xsession: " + reason, Err: net.ErrClosed}
}

// netError wraps an error of a data call as the net package does, with
// the network of the session's own address ("tcp" or "udp" on the wire,
// as a kernel socket's error names it; "xsession" cut-through).
func netError(op string, local, remote net.Addr, err error) error {
	if err == nil {
		return nil
	}
	network := "xsession"
	if local != nil {
		network = local.Network() // the library's own addresses: safe on a nil pointer
	}
	return &net.OpError{Op: op, Net: network, Source: local, Addr: remote, Err: err}
}

// addrError wraps an error of a call about one address as the net
// package does for a listener's calls and a connection's deadline
// setters: the address in Addr, no Source.
func addrError(op string, addr net.Addr, err error) error {
	network := "xsession"
	if addr != nil {
		network = addr.Network() // the library's own addresses: safe on a nil pointer
	}
	return &net.OpError{Op: op, Net: network, Addr: addr, Err: err}
}

// errTimeout is returned by calls past their deadline.
var errTimeout = os.ErrDeadlineExceeded
