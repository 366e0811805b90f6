// Command xsessiond is the xsessiond daemon and its command line: run starts
// the daemon, ctl talks to a running one, demo runs the quickstart.
//
// # The daemon
//
// A daemon (newDaemon, Start, Close) runs in-process as well as under run:
// demo and the tests use it directly. Start opens the interface's network
// namespace (--netns), takes the control socket (refusing to go on when
// another daemon owns it, before it touches the interface), starts the
// datapath engine (datapath.Engine behind the engine interface; without one
// the control plane runs alone: binds and cut-through sessions work, connects
// to remote peers fail with flow.ErrConnect), builds the session layer
// over it, applies the configured namespaces and rules, and serves the
// control socket (package api) and, if asked, Prometheus metrics.
//
// Each control connection is served by a conn on its own goroutine: an app
// attaches (it gets its segments, its event queue's eventfd and the workers'
// kick eventfds), binds, connects, disconnects; the CLI shows state and adds
// namespaces and rules. A connection that ends, however the process behind it
// ended, detaches its app, which frees its listeners, sessions, rules and
// memory. The session layer's Notifier passes what event queues cannot carry
// (segment descriptors); cut-through sessions are reference counted
// (daemonMemory) so that both apps get their segment even when one of them
// goes away meanwhile.
//
// Close sends every connection a Shutdown notice, waits briefly for the apps
// to hang up, closes the rest, detaches every app, stops the datapath
// (detaching XDP and removing its pins), and releases the namespaces.
//
// Lock order: daemon.mu is never held while calling into the session layer;
// the layer calls Notify without its own lock, and Notify takes daemon.mu.
package main
