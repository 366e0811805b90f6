// Package attach holds what the examples share: the flags that name the
// daemon, the app namespace and the app, and the attach they make, in a
// context that ends on SIGINT or SIGTERM.
package attach

import (
	"context"
	"flag"
	"fmt"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/xsessiond/xsessiond/app"
)

// Flags are the attach flags of an example (--socket, --ns, --secret,
// --name).
type Flags struct {
	socket, ns, secret, name *string
}

// Register defines the attach flags on fs, with name as the default app
// name.
func Register(fs *flag.FlagSet, name string) *Flags {
	return &Flags{
		socket: fs.String("socket", app.DefaultSocket, "the daemon's control socket"),
		ns:     fs.String("ns", "", "the app namespace to attach to (default: the default namespace)"),
		secret: fs.String("secret", "0", "the namespace's secret"),
		name:   fs.String("name", name, "the app's name in the daemon"),
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
		return nil, nil, nil, err
	}
	return a, ctx, func() { a.Close(); cancelSignals() }, nil
}
