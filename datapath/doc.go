// Package datapath runs the packet path of one interface: the XDP program
// (package loader), one AF_XDP socket (package datapath/xsk) and one worker
// goroutine per NIC queue, the UDP transport (package datapath/udp) and the
// TCP transport (package datapath/tcp, gVisor's TCP, one Stack per Engine).
//
// An Engine serves one interface. New loads and attaches the program inside
// the interface's network namespace and opens the sockets. The daemon hands
// Engine.Datapath to sessions.New, then calls Start, which mirrors the
// layer's change feed into the program's maps and starts worker q on the
// layer's shard FirstWorker+q. Close stops the workers, closes the sockets,
// detaches the program and removes its pins; it does not close Config.Netns.
// Detach apps before Close: fifo memory the layer releases after Close is
// never freed.
//
// Rx: a worker first reads the first two cache lines of every frame of a
// batch (frame.Warm): the CPU that ran the XDP program wrote them, so each
// first read misses, and misses that do not wait on each other overlap.
// Decoding frame after frame paid one miss each: go run ./perf --quick
// --only udp64, three interleaved runs, machine CPU per datagram
// 1,617–1,647 ns with the warm-up against 1,737–1,938 ns without; in the
// worker's CPU profile (--cpuprofile), decoding took 0.47 s of 0.83 s
// before, the warm-up and decoding 0.11 s of 0.51 s after. It then
// decodes the batch (package datapath/frame, checksums
// verified; a UDP checksum field holding the pseudo-header sum, which a
// sender of this host with checksum offload leaves through a veth, is
// accepted per Config.Checksum: see ChecksumAuto. The kernel's XDP
// metadata kfuncs report rx hash, timestamp and VLAN tag only, no rx
// checksum status, so the choice is made per interface), finds each datagram's udp.Target by 5-tuple in the Engine's
// table of connected sessions, else in the layer's listener snapshot, and
// queues the payload behind a fifo.DgramHeader in the target's rx fifo. A
// full fifo drops and counts; it never blocks. Each app is signalled once
// per batch. Tx: a worker drains the tx fifos of the targets it owns into
// frames built from cached header templates; a resolver goroutine finds
// next hops through nsbind, and a datagram whose neighbour is not resolved
// yet is held (bounded per worker and per target, for at most a second;
// a listener at its bound drops its datagrams for next hops the kernel is
// still probing, so that its other peers are not held up).
// A worker that drained datagrams from a tx fifo whose writer asked for
// dequeue notifications (the app library does while the fifo is full)
// signals the app (its event queue's eventfd) after the drain's flush, so the writer goes on
// as soon as there is room. The per-batch path allocates nothing.
//
// Connected UDP: Datapath.Open reserves the local port with a kernel UDP
// socket connected to the peer (udp.Reservation) and the session is claimed
// at once on a worker chosen round robin. An ICMP error the kernel reports
// on that socket (port, host or network unreachable) goes to the app as a
// fifo.EventError with the errno; the session stays open, as a connected
// kernel UDP socket does.
//
// Ports: every served UDP port, a listener's or a connected session's, is
// held by a kernel socket bound to it (udp.Reservation; ports.go), so the
// kernel gives it to nobody else, and port 0 is the kernel's ephemeral
// pick. A datagram larger than one frame arrives in fragments, which the
// worker reassembles when the XDP program steers them to it (those whose
// first fragment came first: fragment.go); the kernel reassembles the
// others (a reordered datagram) and hands the datagram to that socket,
// which the Engine reads (the kernel path, kernelpath.go). On send, such a
// datagram goes through that socket, which fragments it to the path MTU,
// except a datagram queued with fifo.DgramFlagDontFragment: that
// one goes out whole (IPv4: DF set), or, larger than the path MTU, is
// dropped (tx-dont-fragment) and reported to the app as a fifo.EventError
// with EMSGSIZE for the listener's or session's handle. Engine.PathMTU
// gives the path MTU (the interface's, lowered by the route's, read from
// the kernel) so that the app's library refuses most such datagrams in the
// write itself (api.PathMTU); the drop and its report remain for a path
// MTU that shrank after the app asked, or that the workers' view of the
// route (the resolver's, refreshed within seconds) still holds smaller.
//
// TCP: the Engine's tcp.Stack has the interface's addresses (followed at
// each change Config.Addrs announces, else every second: followAddrs).
// Global TCP listeners and the 5-tuples of active opens are in
// the program's maps; every other TCP packet stays with the kernel. A
// worker hands the TCP frames it receives to the Stack (Ethernet header
// stripped, LinkEndpoint.Inject), a batch at a time, its pure SYNs after
// the batch's other packets and those of different ports in turn, from a
// bounded queue (tcp_syn.go: a SYN flood holds up neither established
// connections nor other listeners); the Stack's packets go to a bounded queue
// per worker (TCPConfig.TxQueue, chosen by destination; it holds the
// packets themselves, whose payload the Stack keeps for retransmission
// anyway, and grows as needed: a drop there costs a connection a
// retransmit timeout, since gVisor does not take it as congestion), which the worker
// drains each loop, woken by the first packet queued, with the resolver's
// next-hop MAC (a packet whose next hop still resolves is set aside, at
// most tcpParkedMax and for at most a second, so that it holds up no packet
// to another next hop; packets to one next hop keep their order): into a
// packet socket on the interface that lets the
// kernel segment and checksum packets of up to 64 KiB (tcp_gso.go), or,
// with TCPConfig.NoGSO or when that socket cannot be opened, into its tx
// ring one MTU-sized frame each. A listener's or active open's port is
// reserved in the kernel by a bound, non-listening TCP socket. Each
// connection is a session owned by a worker (round robin): the worker
// kicks its Conn when the app set the tx fifo's event flag or freed room
// in a full rx fifo (fifo.TakeDeqNotify). Handler events become the
// layer's stream events (sessions.StreamConnected, StreamAccepted,
// StreamPeerClosed, StreamReset, StreamClosed, StreamCloseRequested, each
// naming its session by sessions.StreamRef; ConnectFailed with
// flow.ErrRefused and the like). The Engine is the layer's
// sessions.StreamKeeper: fifo memory of a connection is freed only after
// its Handler.Closed (a graceful close still sends what the app queued);
// a detaching app's connections are reset. A connect to a remote peer of
// another transport fails with flow.ErrNotSupported.
//
// A worker that found nothing to do sleeps in poll(2) on its socket, its
// kick eventfd and the kick eventfds of the apps (Engine.AppKicks: one per
// app and worker; an app whose kicks find nothing to send is paused, see
// kick.go), so one app's kick spam wakes the worker a bounded number of
// times and nobody else's. Apps kick a worker only while it sleeps there:
// it sets its word of the sleep flags page (Engine.SleepFlagsFD,
// sleepflags.go), which apps map read-only, before its last look at the
// fifos, and clears it when it wakes.
//
// # Tables
//
// The Engine owns the one table that finds a session by 5-tuple: an
// immutable map of connected sessions (Local = this host), replaced whole
// under Engine.mu and read by every worker without a lock. Listeners are
// the layer's snapshot plus the Engine's map of their targets by handle,
// replaced the same way. The control plane reaches a worker through its
// sessions.Shard mailbox, which the worker drains at the top of its loop.
//
// # Concurrency and the daemon's lock order
//
// Engine methods are safe for concurrent use. The sessions.Datapath it
// returns runs under the session layer's lock and never waits for a
// worker.
//
// The daemon has one lock order, outermost first; a goroutine holding one
// of these locks takes only locks below it:
//
//  1. Engine.closeMu (Close, Stats). Close drains the shards' mailboxes
//     with it held, and what the layer posted there takes 2.
//  2. sessions.Layer.mu, the control plane's lock. The layer calls its
//     Datapath, its apps' memory and Shard.Post with it held, and its
//     Notifier after releasing it. The daemon's own lock, taken in
//     Notify, is never held while calling into the layer or the Engine.
//  3. Engine.mu. The Engine releases it before it calls into the layer
//     (claims, peer errors).
//     The TCP glue (tcpPath.mu) sits at this level too: Handler calls
//     take no lock of the Engine while calling into the layer.
//  4. udp.Target.mu, sessions.Shard.mu, sessions.Layer.reclaimMu (taken
//     by posted frees, with neither 2 nor 3 held), the resolver's lock,
//     an app memory's lock of the events it postponed for a full queue
//     (sessions' fifoApp.mu): none is held while taking another of this
//     row.
//  5. package fifo's: Manager.mu, then Segment.mu; an EventQueue's locks.
package datapath
