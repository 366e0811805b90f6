// Package daemon is xsessiond as a library: the wiring of the session layer,
// the datapath engine of one interface (with its XDP program and map
// mirrors), the control socket and the metrics endpoint. The command
// (cmd/xsessiond run and demo), the tests and the benchmark harness (perf)
// all run this, so what they exercise is what ships.
//
// # Objects and what to close
//
// New checks a Config and returns a Daemon that touches nothing; Start
// opens the interface's network namespace (Config.Datapath.NetnsName),
// takes the interface's instance lock (with a datapath; ErrInstanceRunning
// while another daemon serves it) and the control socket (refusing to go
// on when another daemon owns it), both before it touches the interface,
// starts the datapath engine (datapath.Engine; with Config.NoDatapath the
// control plane runs alone: binds and cut-through sessions work, connects
// to remote peers fail with flow.ErrConnect), builds the session layer
// over it, applies the configured namespaces and rules, and serves the
// control socket (package api) and, if asked, Prometheus metrics. A
// started Daemon must be closed: Close first detaches XDP (the interface
// goes back to the kernel before it waits for anything), then sends every
// connection a Shutdown notice, waits briefly for the apps to hang up,
// closes the rest, detaches every app, stops the datapath (removing its
// pins), and releases the namespaces. A Start that fails undoes what it
// did; Close is idempotent. InterfaceLost tells the owner when the
// interface left its namespace under the daemon (xsessiond run then stops
// with an error).
//
// # Clients
//
// Each control connection is served by a client on its own goroutine: an
// app attaches (it gets its segments, the epoll set that wakes it, watching
// an eventfd only the daemon holds, and the workers' kick eventfds), binds, connects, disconnects; the CLI shows state
// and adds namespaces and rules. A connection that ends, however the process
// behind it ended, detaches its app, which frees its listeners, sessions,
// rules and memory. The session layer's Notifier passes what event queues
// cannot carry (segment descriptors); cut-through sessions are reference
// counted (daemonMemory) so that both apps get their segment even when one
// of them goes away meanwhile.
//
// # Concurrency
//
// A Daemon's methods are safe for concurrent use once Start returned. The
// accessors (Layer, Engine, Stats, Socket, MetricsAddr) read state that
// Start set and does not change until Close.
//
// Lock order: Daemon.mu is never held while calling into the session
// layer; the layer calls Notify without its own lock, and Notify takes
// Daemon.mu.
package daemon
