package datapath

import (
	"errors"
	"fmt"

	"github.com/xsessiond/xsessiond/flow"
)

// Errors returned by this package, wrapped as "verb: %w" with the detail.
var (
	// ErrInvalidConfig: a Config field is unusable.
	ErrInvalidConfig = errors.New("datapath: invalid config")
	// ErrNetns: the interface's network namespace cannot be entered.
	ErrNetns = errors.New("datapath: network namespace not found")
	// ErrClosed: the Engine was closed.
	ErrClosed = errors.New("datapath: engine closed")
	// ErrNotStarted: the Engine was not started, or was started twice.
	ErrNotStarted = errors.New("datapath: engine not started")
	// ErrStarted: Start was called twice.
	ErrStarted = errors.New("datapath: engine already started")
	// ErrOtherInterface: a listener or connect names an interface the
	// Engine does not serve.
	ErrOtherInterface = errors.New("datapath: endpoint on another interface")
	// ErrBusy: the Engine's queue of connects to claim is full.
	ErrBusy = errors.New("datapath: too many connects in progress")
	// ErrSessionTableFull fails a connect whose 5-tuple the XDP
	// program's established map refused (Engine.SteerRefused): a
	// flow.ErrLimit.
	ErrSessionTableFull = fmt.Errorf("the datapath's session table is full (every entry of the XDP program's established map is taken): close sessions first: %w", flow.ErrLimit)
)
