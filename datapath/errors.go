package datapath

import "errors"

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
)
