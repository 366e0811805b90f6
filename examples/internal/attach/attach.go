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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// Flags are the attach flags of an example (--socket, --ns, --secret,
// --name).
type Flags struct {
	socket, ns, secret, name *string
	prog                     string // the example's name, for Gone
}

// Register defines the attach flags on fs, with name as the default app
// name.
func Register(fs *flag.FlagSet, name string) *Flags {
	return &Flags{
		socket: fs.String("socket", app.DefaultSocket, "the daemon's control socket"),
		ns:     fs.String("ns", "", "the app namespace to attach to (default: the default namespace)"),
		secret: fs.String("secret", "0", "the namespace's secret"),
		name:   fs.String("name", name, "the app's name in the daemon"),
		prog:   name,
	}
}

// Attach checks the flags and attaches (within 10 s). It returns the app
// and a context that ends on SIGINT or SIGTERM; stop releases both.
func (f *Flags) Attach() (a *app.App, ctx context.Context, stop func(), err error) {
	sec, err := strconv.ParseUint(*f.secret, 0, 64)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--secret %q: want a number (0 to 2^64-1)", *f.secret)
	}
	ctx, cancelSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a, err = app.Attach(actx, app.Options{Socket: *f.socket, Name: *f.name, Namespace: *f.ns, Secret: sec})
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
