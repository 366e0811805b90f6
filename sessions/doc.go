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
// # Handles
//
// A Handle names its owner worker and an index. Pseudo-workers mark entries
// no datapath worker owns: ListenerWorker (global listeners),
// CutThroughWorker and HalfOpenWorker. Local-table listeners have
// LocalHandleBit set and encode their endpoint (LocalListenerHandle,
// ParseLocalListenerHandle).
package sessions
