package sessions

import "net/netip"

// OpenRequest asks the datapath to open a session to a remote endpoint.
type OpenRequest struct {
	HalfOpen Handle // the half-open entry's handle
	App      AppID  // the connecting app
	// Namespace is the app's namespace id ("" the default), for the
	// datapath's counts by namespace.
	Namespace string
	Remote    Endpoint // destination, IfIndex and FIB from the app's namespace
	Opaque    uint32
}

// Datapath is what the session layer needs of the datapath; the daemon
// fills it in. Calls are made with the session layer's control-plane lock
// held: implementations must not block and must not call back into the
// Layer.
type Datapath interface {
	// Open starts opening a session and returns the local address and
	// port chosen for it (a route's source address, an ephemeral port).
	Open(req OpenRequest) (local netip.AddrPort, err error)
	// Listen is told of a new global listener before it is published; an
	// error refuses the bind.
	Listen(l Listener) error
	// Unlisten is told of a removed global listener.
	Unlisten(l Listener)
	// Close is told that an established or half-open session was closed
	// by its app.
	Close(h Handle, t FiveTuple)
}

// NamespaceForgetter is a Datapath that keeps something by app namespace
// id (counts of the namespace's ended connections): DelNamespace tells it,
// under the layer's lock, once the namespace is gone, so that it forgets
// the namespace. Every Open and Listen of the namespace came before (they
// need an attached app, and a namespace is deleted without one); a
// namespace added again with the same id is a new one. It must not block
// or call back into the Layer.
type NamespaceForgetter interface {
	NamespaceDeleted(id string)
}

// WorkerDatapath is a Datapath whose worker goroutines read and write app
// fifos (the daemon's AF_XDP engine). When Config.Datapath implements it:
//
//   - the worker owning a global UDP listener's fifo pair is the one
//     ListenerWorker returns (called under the control-plane lock, before
//     Listen; it must not block or call back into the Layer);
//   - fifo memory is freed only once every shard has drained its mailbox
//     past the change that released it: the fifo pairs of closed sessions
//     and unbound listeners, and an app's whole memory at detach. A worker
//     that was delivering into a fifo when the control plane dropped it
//     thus finishes its batch before the memory goes away.
//
// Without it, listeners' workers are spread by handle index and memory is
// freed at once (no worker touches fifos then).
type WorkerDatapath interface {
	Datapath
	ListenerWorker(l Listener) uint32
}
