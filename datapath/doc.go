// Package datapath runs xsessiond's per-queue workers: each owns one NIC
// queue and its AF_XDP socket (package datapath/xsk), parses frames, looks
// sessions up in its shard of the tables, hands them to a transport
// (package datapath/udp) and delivers payloads into app fifos; on the way out
// it drains app tx fifos into frames built from per-session templates.
//
// # Engine
//
// An Engine serves one interface. New loads the XDP program (package
// loader), attaches it inside the interface's network namespace, and opens
// one AF_XDP socket per queue, registered in the program's xsks map. The
// daemon hands Engine.Datapath to sessions.New, then calls Start, which
// mirrors the layer's change feed into the program's maps (loader.Mirror,
// resynced after an overflow and compared every few seconds) and starts
// one worker goroutine per queue, locked to its OS thread, serving shard
// FirstWorker+q. Close stops everything, closes the sockets, detaches the
// program and removes its pins; it does not close Config.Netns. Detach apps
// before Close: with the Engine's datapath the layer frees fifo memory only
// after every worker drained its mailbox, and Close drains once more after
// stopping the workers; memory released after Close is never freed.
//
// # Workers
//
// A worker loops: drain its shard's mailbox, receive a batch (Config.Batch,
// 64 by default), deliver it, refill, drain the tx fifos whose event flag
// is set, reap completions, retry held datagrams. When a loop did nothing
// it sleeps in poll(2) on its socket, its kick eventfd (KickFDs) and the
// kick eventfds of the apps (AppKicks: one per app and worker, so that an
// app that kicks without queueing anything is paused, kick.go); a
// goroutine per worker turns the shard's wake channel into a kick, so posts
// to the mailbox wake it too. Config.BusyPoll never sleeps. Under load (at
// least 32 frames a millisecond, the last within a millisecond) an idle
// loop naps on a timer for Config.IdleNap (50µs by default, with a 2µs
// timer slack on the worker's thread) instead: with no poll waiter the
// kernel's rx path wakes nobody, and the next loop takes what arrived
// meanwhile as one batch, instead of a wakeup every few frames; the price
// is up to IdleNap of added latency under load. Config.IdleSpin (off by
// default) makes an idle worker first check its rx ring, its tx fifos'
// event flags and its mailbox without a system call for that long before
// it sleeps: lower latency for sparse traffic, at the price of the CPU it
// spins.
//
// Rx: a frame is decoded (frame.Decode, checksums verified); its 5-tuple
// is looked up among the connected UDP sessions of every worker (an
// immutable map swapped on change, the worker's own included, behind a
// bitmap of their local ports so that a listener's datagram skips it),
// then in the layer's listener snapshot (the last answer is reused for the
// rest of the batch while the local end matches). The payloads of a run
// of datagrams to the same target within a batch are queued in its rx
// fifo with one fifo.EnqueueDgrams (each with a fifo.DgramHeader naming
// the remote), under one acquisition of the udp.Target lock that
// serializes the fifo's producers: several workers may feed one
// listener's rx fifo (RSS spreads remotes over queues), and the lock is
// never contended with a single queue. A full fifo drops and counts,
// never blocks. After the batch
// each touched fifo's event flag is set and, where it was clear, an EventRx
// record (the session's or listener's handle) is pushed to the app's event
// queue; each app's eventfd is written once per batch. The per-batch path
// allocates nothing.
//
// Tx: a worker drains the tx fifos of the Targets it owns (a listener's
// worker is chosen round robin, sessions.Listener.Worker; a connected
// session's is the worker that claimed it), reading each datagram straight
// into a UMEM frame behind room for the headers. The next hop's MAC comes
// from a resolver: each worker keeps its own cache (map, no lock), and on a
// miss or after an entry's lifetime asks the Engine's resolver under one
// small mutex; the resolver queues a request that a resolver goroutine
// serves off the worker's path (nsbind RouteGet, Neighbour, and on a miss
// ResolveNeighbour + WaitNeighbour, up to eight at a time). Results live 5 s
// (failures 0.5 s) and stay usable while they are refreshed. A datagram
// whose next hop is not known yet is held (up to 256 per worker and 64 per
// session or listener, for at most a second; then counted as
// no-neighbour); while every hold slot, or the session's share of them, is
// taken the worker leaves its datagrams in the fifo (back-pressure) instead
// of dropping them, so an app sending to unreachable peers cannot stall the
// transmits of the others. Held datagrams go out before newer ones to the
// same next hop, so a flow is not reordered while its neighbour resolves.
// Headers come from frame.Templates cached per (source, destination, ports,
// MAC).
//
// Connected UDP: Datapath.Open takes the route's source address and an
// ephemeral port reserved by binding a kernel UDP socket in the namespace
// (udp.Reservation, closed with the session). UDP has no handshake, so the
// half-open session is claimed at once by a claim goroutine
// (sessions.Layer.Connected) on a worker chosen round robin, not by the
// queue of a first reply: the app can send before anything comes back. The
// 5-tuple is in the bpf maps from the half-open state on, so replies are
// steered; a reply on another queue than the owner's is delivered by that
// queue's worker through the session's Target lock. The reservation
// socket is connected to the peer: the XDP program leaves ICMP to the
// kernel, which reports the peer's port, host or network unreachable to
// that socket; a goroutine polling the claimed sessions' sockets then
// closes the session and tells its app (sessions.Layer.Closed, an
// EventDisconnected; Stats.PeerClosed counts them).
//
// # Other transports
//
// The datapath serves UDP only. A global listener of another transport
// (TCP, SCTP) is accepted for cut-through: an app of this host that
// connects to a local address with such a listener gets a cut-through
// session from the layer, no packet involved. Its traffic from the wire
// stays with the kernel: the feed→mirror path keeps every listener and
// session of a transport the datapath does not serve out of the XDP
// program's maps (snapshots leave them out; a live change of theirs is
// handed to the mirror as another interface's, which it skips while
// keeping its sequence), so nothing on that port is steered to a worker
// or black-holed. A connect to a remote peer over another transport fails
// at once with flow.ErrNotSupported.
//
// # Counters
//
// Stats returns per-queue counters (rx, delivered, tx, drops by reason:
// the decoder's reasons and no-session, fifo-full, too-big, fifo-corrupt,
// no-neighbour, no-route, tx-bad-header, tx-too-long, tx-no-frame,
// tx-fifo-corrupt), the AF_XDP sockets' kernel counters, per-Target
// counters, the XDP program's counters, the mirror's and the resolver's.
// Workers count privately and publish every 16 busy loops and whenever a
// loop found nothing to do, so Stats lags a busy worker by a few loops and
// is exact once it is idle.
//
// # Concurrency
//
// Engine methods are safe for concurrent use. The sessions.Datapath it
// returns is called under the layer's control-plane lock: it takes the
// Engine's lock and a Target's lock briefly, makes a route lookup and a
// socket bind and connect (Open), posts to shards, and never waits for a
// worker. Lock order: sessions.Layer.mu, Engine.mu, udp.Target.
package datapath
