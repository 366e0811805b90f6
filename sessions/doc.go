// Package sessions is xsessiond's session layer: apps attached to namespaces,
// endpoints and URIs, listener and session tables in local and global scope,
// session rules, bind/unbind/connect/disconnect, cut-through sessions, proxy
// apps, handles, errors, and the change feed the loader mirrors into the XDP
// program's maps.
//
// It is pure logic and makes no system calls; the kernel view it needs
// (addresses of interfaces, which addresses are local) is given to it through
// NetView, which package nsbind satisfies, and the shared memory through
// Memory (FifoMemory, over package fifo, in the daemon; heap fakes in
// package sessionstest).
//
// # Objects and what to close
//
// A Layer (New) owns namespaces, apps and tables. Apps are detached with
// Detach or DetachClient, which frees their memory; a Feed is ended with
// Close. Nothing else needs closing.
//
// # Concurrency
//
// Every Layer method is safe for concurrent use. Control-plane calls
// (attach, bind, connect, rules, ...) serialize on one lock. The datapath
// reads without locks: LookupListener and MatchRule load immutable snapshots
// published with atomic.Pointer. Established sessions are posted to
// per-worker Shards, each owned by one worker goroutine that applies the
// control plane's changes from its mailbox (Drain); the datapath keeps the
// one table that finds a session by 5-tuple.
//
// # Local lookup and the zero address
//
// The local table holds zero-address listeners only (an app with local
// scope binding 0.0.0.0 or ::). Such a listener catches every local-scope
// connect of its namespace to its port and family, whatever the
// destination address: loopback, an address of this host, or a remote one
// (the seed's behaviour; later VPP catches loopback destinations only).
// Apps of a namespace thus reach each other's local listeners by port, and
// a local-scope app that wants a remote peer of the same port gets the
// local listener instead; an allow rule of the local table does not change
// that (allow goes on to the listeners), only a drop or a forward rule
// does. The zero address itself, and its IPv4-mapped form ::ffff:0.0.0.0,
// is never a destination (ErrInvalidValue).
//
// # Rules
//
// Rules (Rule) live in a namespace's local table (consulted by connects of
// local-scope apps) and the global tables of its FIBs (consulted by
// connects of global-scope apps and, through GlobalRules and
// LookupAppListener, by the datapath for packets from the wire that found
// a listener). A forward rule names an app of the rule's own namespace. A
// table matches in time that grows with the number of remote prefix
// lengths that can match a tuple, not with the number of rules. Each rule
// counts its hits (RuleHits), listed by Rules.
//
// # Handles
//
// A Handle names its owner worker and an index. Pseudo-workers mark entries
// no datapath worker owns: ListenerWorker (global listeners),
// CutThroughWorker and HalfOpenWorker. Local-table listeners have
// LocalHandleBit set and encode their endpoint (LocalListenerHandle,
// ParseLocalListenerHandle).
//
// A half-open or cut-through session's handle is the next of a counter and
// comes back only after 2^32 more of them (never while a session has it):
// the datapath refers to a connect by its half-open handle off the layer's
// lock, and an app learns of a cut-through session on its control
// connection but of its end in its event queue. Any other session's handle
// and fifos go back to their pools when the session ends, with one
// exception: a wire TCP session the transport ended (the
// peer's reset, a timeout: StreamClosed, StreamReset) keeps both until its app's
// Disconnect of the handle, as an app may still be writing into the fifos
// when it learns of the end; AppInfo.Ended counts those. Detaching frees
// them with the rest of the app.
//
// # Bounds
//
// Each cut-through session is a segment of its own (a descriptor and a
// mapping where it is made and in both apps): Config.MaxCutThrough bounds
// them all and Config.MaxCutThroughPerApp those one app opened; a connect
// past either fails with ErrLimit. A listening app's sessions count against
// the apps that opened them, so that one client cannot keep others out; so
// do their fifos, both directions, against the opener's fifo memory bound
// (AppMemoryOptions.MaxFifoMemory, through MemoryCharger) until the session
// closes: a connect past it fails with ErrNoMemory.
// The ports the apps of one owner (a uid) hold in the host's stack, their
// global listeners and wire connects with what a PortKeeper keeps after
// them, are bounded by Config.MaxPortsPerOwner (ownerports.go). What apps
// may hold otherwise is bounded by their fifo memory (AppMemory) and by
// the datapath (its connections per app).
package sessions
