package main

// The xsessiond implementations plug in here. Until the daemon, the app
// library and the datapath are wired into the harness, each constructor
// returns ErrNotAvailable and the harness reports its rows as not available.
//
// Wiring one means: start `xsessiond run --iface env.IfName --queues
// env.Queues` inside env.NetNS (or in-process), attach an app with the app
// library, listen on udp://env.Addr:env.Port, read with the batch API and
// count datagrams into Delivered (or echo them back, or open a cut-through
// pair to a second local app).

// NewXsessiondReceiver returns the receiver that delivers the generator's
// traffic into an app through xsessiond.
func NewXsessiondReceiver() (Receiver, error) {
	return nil, errXsessiondNotWired
}

// NewXsessiondEcho returns the echo server running as an xsessiond app.
func NewXsessiondEcho() (Echoer, error) {
	return nil, errXsessiondNotWired
}

// NewXsessiondCutThrough returns a pair of local xsessiond apps joined by
// cut-through fifos.
func NewXsessiondCutThrough() (LocalPair, error) {
	return nil, errXsessiondNotWired
}

var errXsessiondNotWired = wrapNA("xsessiond is not wired into the harness yet")

type naError struct{ msg string }

func (e naError) Error() string        { return e.msg }
func (e naError) Is(target error) bool { return target == ErrNotAvailable }

// wrapNA is an error that errors.Is ErrNotAvailable, with its own message.
func wrapNA(msg string) error { return naError{msg} }
