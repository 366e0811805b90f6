package main

import (
	"errors"
	"net/netip"

	"github.com/xsessiond/xsessiond/nsbind/nstest"
)

// ErrNotAvailable is returned by an implementation that cannot run yet (or
// on this machine). Its rows are skipped with a visible note, never filled
// with a number.
var ErrNotAvailable = errors.New("not available")

// Env is where a receiver, echo server or local pair runs: the receiving
// host of the rig (host B), or the local machine in the remote modes.
type Env struct {
	// Rig is the netns rig, or nil in the remote modes.
	Rig *nstest.Pair `json:"-"`
	// Do runs fn inside the receiving host's network namespace (on a
	// locked thread); sockets and attachments are made there.
	Do func(fn func() error) error `json:"-"`
	// NetNS is the receiving namespace's name under /run/netns ("" for the
	// current one), for implementations that start a process there.
	NetNS   string
	IfName  string
	IfIndex int
	Addr    netip.Addr // the receiving address
	Port    uint16     // the UDP port traffic is sent to
	Queues  int        // rx queues of the receiving interface
	Flows   int        // flows the generator spreads over
	Payload int        // UDP payload bytes
}

// Receiver consumes the generator's UDP traffic on the receiving host and
// counts what it delivered. Delivered may be called from any goroutine
// between Start and Stop (and after Stop, for the final count).
type Receiver interface {
	Name() string
	Start(env *Env) error
	Delivered() uint64
	Stop() error
}

// Echoer answers every UDP datagram on env.Addr:env.Port with the same bytes.
type Echoer interface {
	Name() string
	Start(env *Env) error
	Stop() error
}

// LocalPair moves messages between two local apps (a writer and a reader)
// flat out. Sent and Delivered count messages.
type LocalPair interface {
	Name() string
	Start(payload int) error
	Sent() uint64
	Delivered() uint64
	Stop() error
}

// Implementation names used in the scenario table and the results.
const (
	ImplKernel          = "kernel"
	ImplKernelReuseport = "kernel-reuseport"
	ImplXDPDrop         = "xdp-drop"
	ImplXsessiond       = "xsessiond"
	ImplGenOnly         = "gen-only"
	ImplSocketpair      = "socketpair"
)

// newReceiver makes the receiver an implementation name stands for.
func newReceiver(impl string, queues int) (Receiver, error) {
	switch impl {
	case ImplKernel:
		return NewKernelRecvmmsg(1), nil
	case ImplKernelReuseport:
		return NewKernelRecvmmsg(queues), nil
	case ImplXDPDrop:
		return NewXDPDrop(), nil
	case ImplXsessiond:
		return NewXsessiondReceiver()
	}
	return nil, errors.New("unknown receiver " + impl)
}

func newEchoer(impl string) (Echoer, error) {
	switch impl {
	case ImplKernel:
		return NewKernelEcho(), nil
	case ImplXsessiond:
		return NewXsessiondEcho()
	}
	return nil, errors.New("unknown echo server " + impl)
}

// localPairs are the LocalPair implementations by name.
var localPairs = map[string]func() (LocalPair, error){
	ImplSocketpair: func() (LocalPair, error) { return NewSocketpair(), nil },
	ImplXsessiond:  NewXsessiondCutThrough,
}

func newLocalPair(impl string) (LocalPair, error) {
	if mk := localPairs[impl]; mk != nil {
		return mk()
	}
	return nil, errors.New("unknown local pair " + impl)
}
