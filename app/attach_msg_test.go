package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/flow"
)

// attachTo attaches to socket, which must fail, and returns the error.
func attachTo(t *testing.T, socket string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	a, err := Attach(ctx, Options{Socket: socket})
	if err == nil {
		a.Close()
		t.Fatalf("Attach(%s) succeeded", socket)
	}
	return err
}

// TestAttachNoDaemonSaysWhatToDo: with nothing listening on the socket,
// Attach says to start the daemon or to give Options.Socket the socket it
// runs on, and the error is still api.ErrNoDaemon.
func TestAttachNoDaemonSaysWhatToDo(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "nope", "api.sock")
	err := attachTo(t, sock)
	want := "no daemon at " + sock + ": is xsessiond run going? Start it, or give Options.Socket the socket a running daemon's run --socket was given (" + DefaultSocket + " when not given)"
	if err.Error() != want {
		t.Errorf("Attach:\n got %q\nwant %q", err, want)
	}
	if !errors.Is(err, api.ErrNoDaemon) {
		t.Errorf("Attach: %v is not api.ErrNoDaemon", err)
	}
}

// TestAttachNotSocketSaysWhatThePathIs: a file or a directory given as the
// socket is named as such, in ctl's words, with Options.Socket to change;
// the error is still api.ErrNoDaemon.
func TestAttachNotSocketSaysWhatThePathIs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fix := ": give Options.Socket the daemon's control socket (xsessiond run --socket, " + DefaultSocket + " when not given)"
	for _, c := range []struct{ path, want string }{
		{file, file + " is not a socket but a file" + fix},
		{dir, dir + " is a directory, not a socket" + fix},
	} {
		err := attachTo(t, c.path)
		if err.Error() != c.want {
			t.Errorf("Attach(%s):\n got %q\nwant %q", c.path, err, c.want)
		}
		if !errors.Is(err, api.ErrNoDaemon) {
			t.Errorf("Attach(%s): %v is not api.ErrNoDaemon", c.path, err)
		}
	}
}

// TestAttachPermissionSaysWhatToDo: a connect refused for permission on a
// socket of root's group says to run as root or to set socket_group; on a
// socket of another group, it names the group.
func TestAttachPermissionSaysWhatToDo(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unixpacket", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	denied := fmt.Errorf("api: dial %s: %w", sock, syscall.EACCES)
	o := &Options{Socket: sock}
	if os.Geteuid() != 0 {
		t.Skip("needs root to give the socket root's group and another")
	}
	if err := os.Chown(sock, 0, 0); err != nil {
		t.Fatal(err)
	}
	err = attachError(denied, o)
	want := "cannot connect to " + sock + ": permission denied: the socket is root's (no socket_group in the daemon's config): run the app as root (sudo, or go run -exec sudo), or set socket_group in the daemon's config to a group your user is in"
	if err.Error() != want {
		t.Errorf("root's socket:\n got %q\nwant %q", err, want)
	}
	if !errors.Is(err, syscall.EACCES) {
		t.Errorf("%v is not EACCES", err)
	}
	if err := os.Chown(sock, 0, 65534); err != nil {
		t.Fatal(err)
	}
	if got := attachError(denied, o).Error(); !strings.HasPrefix(got, "cannot connect to "+sock+": permission denied (is your user in the socket's group ") ||
		strings.Contains(got, "socket_group") {
		t.Errorf("group's socket: got %q", got)
	}
}

// TestAttachNamespaceErrorsSayWhatToDo: a wrong secret names
// Options.Secret and the ctl commands that set it; an unknown namespace
// names the ctl command that lists them. errors.Is sees the sentinels.
func TestAttachNamespaceErrorsSayWhatToDo(t *testing.T) {
	for _, c := range []struct {
		ns       string
		code     flow.Code
		sentinel error
		want     string
	}{
		{"blue", flow.CodeWrongSecret, flow.ErrWrongSecret,
			`wrong secret for namespace "blue": give Options.Secret the namespace's secret (the --secret of xsessiond ctl ns add, or of ctl ns set-secret)`},
		{"nosuch", flow.CodeInvalidNamespace, flow.ErrInvalidNamespace,
			`no namespace "nosuch" in the daemon: xsessiond ctl show namespaces lists those it has`},
	} {
		remote := &api.RemoteError{Code: c.code, Message: fmt.Sprintf("namespace %q: %v", c.ns, c.sentinel)}
		err := attachError(remote, &Options{Socket: DefaultSocket, Namespace: c.ns})
		if err.Error() != c.want {
			t.Errorf("namespace %q:\n got %q\nwant %q", c.ns, err, c.want)
		}
		if !errors.Is(err, c.sentinel) {
			t.Errorf("namespace %q: %v is not %v", c.ns, err, c.sentinel)
		}
	}
}

// TestURIErrorsWantOnce: a URI without a scheme is told the forms wanted
// once, without sctp://, which the daemon does not serve (ListenPacket's
// alone, udp://), and is named once.
func TestURIErrorsWantOnce(t *testing.T) {
	a := new(App)
	const uri = "0.0.0.0:9000"
	want := `invalid URI "0.0.0.0:9000": missing scheme (want tcp://ADDR:PORT or udp://ADDR:PORT)`
	_, lerr := a.Listen(uri)
	_, perr := a.ListenPacket(uri)
	_, derr := a.Dial(context.Background(), uri)
	for _, c := range []struct {
		call string
		err  error
		want string
	}{
		{"Listen", lerr, "listen: " + want},
		{"ListenPacket", perr, "listen: " + strings.Replace(want, "tcp://ADDR:PORT or udp://ADDR:PORT", "udp://ADDR:PORT", 1)},
		{"Dial", derr, "dial: " + want},
	} {
		if c.err == nil || c.err.Error() != c.want {
			t.Errorf("%s(%q):\n got %v\nwant %s", c.call, uri, c.err, c.want)
		}
		if !errors.Is(c.err, flow.ErrInvalidURI) {
			t.Errorf("%s(%q): %v is not ErrInvalidURI", c.call, uri, c.err)
		}
	}
}
