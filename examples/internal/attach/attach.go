// Package attach holds what the examples share: the flags that name the
// daemon, the app namespace and the app, the attach they make, in a
// context that ends on SIGINT or SIGTERM, and the words of their errors,
// which name these flags where the app library names Options fields.
package attach

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/api"
	"github.com/xsessiond/xsessiond/app"
)

// Flags are the attach flags of an example (--socket, --ns, --secret,
// --name).
type Flags struct {
	socket, ns, secret, name *string
	prog                     string // the example's name, for Gone

	// FifoSize, when not 0, is the size of the rx and tx fifo of each of
	// the app's sessions (the daemon's default otherwise).
	FifoSize uint32
}

// Register defines the attach flags on fs, with name as the default app
// name, and makes fs's usage text say what the example does (about).
func Register(fs *flag.FlagSet, name, about string) *Flags {
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: %s [flags]\n\n%s\n\nFlags:\n", name, about)
		fs.PrintDefaults()
	}
	return &Flags{
		socket: fs.String("socket", app.DefaultSocket, "the daemon's control socket (xsessiond run --socket)"),
		ns:     fs.String("ns", "", "the app namespace to attach to (default: the default namespace)"),
		secret: fs.String("secret", "", "the namespace's secret (xsessiond ctl ns add --secret; not checked for the default namespace); default $"+api.SecretEnv+", which other users cannot read in ps, or 0"),
		name:   fs.String("name", name, "the app's name in the daemon (xsessiond ctl show apps)"),
		prog:   name,
	}
}

// ListenUsage is the usage text of an example's --listen flag, for
// endpoints of scheme (tcp or udp).
func ListenUsage(scheme, what string) string {
	return fmt.Sprintf("the %s endpoint to %s, %s://ADDR:PORT (%[3]s://0.0.0.0:PORT every IPv4 address, %[3]s://[::]:PORT every IPv6 one, %[3]s://:PORT both)",
		strings.ToUpper(scheme), what, scheme)
}

// CheckArgs checks what fs parsed before the example attaches: no
// arguments beyond the flags, and a --listen URI of scheme (tcp or udp).
// The library says what else is wrong with the URI when it binds it.
func CheckArgs(fs *flag.FlagSet, listen, scheme string) error {
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: every setting is a flag (--help lists them)", fs.Args())
	}
	s, rest, ok := strings.Cut(listen, "://")
	if !ok || !strings.EqualFold(s, scheme) || rest == "" {
		eg := ""
		if l := fs.Lookup("listen"); l != nil {
			eg = ", e.g. " + l.DefValue
		}
		return fmt.Errorf("--listen %q: want %s://ADDR:PORT%s", listen, scheme, eg)
	}
	return nil
}

// Attach checks the flags and attaches (within 10 s). It returns the app
// and a context that ends on SIGINT or SIGTERM; stop releases both.
func (f *Flags) Attach() (a *app.App, ctx context.Context, stop func(), err error) {
	secret, from := api.SecretArg(*f.secret)
	if secret == "" {
		secret = "0"
	}
	sec, err := api.ParseSecret(secret)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s %q: %w", from, secret, err)
	}
	for _, v := range []struct{ flag, val string }{{"--ns", *f.ns}, {"--name", *f.name}} {
		if len(v.val) > api.MaxNameLen {
			return nil, nil, nil, fmt.Errorf("%s %q: %d bytes, the daemon takes at most %d", v.flag, v.val, len(v.val), api.MaxNameLen)
		}
	}
	ctx, cancelSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a, err = app.Attach(actx, app.Options{Socket: *f.socket, Name: *f.name, Namespace: *f.ns, Secret: sec,
		RxFifoSize: f.FifoSize, TxFifoSize: f.FifoSize})
	cancel()
	if err != nil {
		cancelSignals()
		return nil, nil, nil, flagWords(err)
	}
	return a, ctx, func() { a.Close(); cancelSignals() }, nil
}

// optionFlags are the Options fields the app library's errors name, and
// the flags that set them here.
var optionFlags = strings.NewReplacer("Options.Socket", "--socket", "Options.Secret", "--secret")

// flagWords returns err with its text naming the example's flags instead
// of the Options fields they set; errors.Is and errors.As see the same
// chain.
func flagWords(err error) error {
	var e *app.Error
	if errors.As(err, &e) {
		e.Msg = optionFlags.Replace(e.Msg)
	}
	return err
}

// Gone explains err, an error of a call on a, when the daemon went away
// (it stopped or died: a's calls fail with net.ErrClosed though the
// example did not close a): the example exits, and is to be started again
// once the daemon runs. Any other err comes back as it is.
func (f *Flags) Gone(a *app.App, err error) error {
	if err == nil || !errors.Is(err, net.ErrClosed) {
		return err
	}
	why := a.Err()
	if why == nil {
		return err // the example closed the object, not the daemon
	}
	return fmt.Errorf("the daemon at %s went away (%s): start %s again once xsessiond runs",
		*f.socket, strings.TrimPrefix(why.Error(), "xsession: "), f.prog)
}

// DatagramFifoSize is the fifo size of the UDP examples: a fifo holds a
// datagram with its header, and the daemon's default (64 KiB) cannot hold
// the largest UDP carries (65,507 bytes over IPv4, 65,527 over IPv6).
// 256 KiB holds three of those, about what a kernel UDP socket's default
// receive buffer (net.core.rmem_default, 208 KiB) takes before it drops:
// with 128 KiB a second one that came before the app read the first was
// dropped (fifo_full), where the kernel's socket kept both.
const DatagramFifoSize = 256 << 10
