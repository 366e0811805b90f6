// Package tcp is xsessiond's TCP transport: gVisor's netstack
// (gvisor.dev/gvisor/pkg/tcpip) as the protocol engine, one Stack per FIB,
// and the glue between its endpoints and the apps' stream fifos. No TCP
// state is kept here: handshakes, retransmission, windows, SACK, timers and
// TIME-WAIT are gVisor's.
//
// # What it owns
//
//   - Stack: a gVisor stack with IPv4, IPv6 and TCP, one NIC whose link is
//     the Stack's LinkEndpoint, the interface addresses the caller adds and
//     removes (AddAddress, RemoveAddress), and a default route per family
//     out of the NIC. Routing and neighbours stay the kernel's: gVisor
//     sends every packet to the NIC and the worker resolves the next hop.
//   - LinkEndpoint: gVisor's stack.LinkEndpoint. Inbound, the workers
//     call Inject/InjectBatch with IP packets (the worker strips the
//     Ethernet header it parsed; no link header is modelled); anything
//     but TCP over IPv4 (no fragments) or IPv6 (no extension headers),
//     and, unless Options.RXChecksumOffload, anything with a bad IPv4
//     header or TCP checksum, is dropped before gVisor sees it; nothing
//     injected can make it panic (FuzzLinkEndpointInject). InjectBatch
//     coalesces the in-order segments of each connection in a batch
//     before TCP sees them (coalesce.go).
//     Outbound, every TCP packet gVisor sends
//     goes to the caller's Writer as an IP packet (Packet.CopyTo), to be
//     framed by the worker; gVisor's goroutines never touch a ring. The
//     NIC has a pass-through queueing discipline, so nothing is queued or
//     allocated between gVisor and the Writer. Non-TCP packets gVisor
//     might emit are discarded and counted.
//   - Conn: one connection. It moves bytes gVisor→rx fifo while the rx
//     fifo has room and tx fifo→gVisor while gVisor's send buffer has
//     room. Backpressure, never loss: a full rx fifo leaves the data in
//     gVisor's receive buffer, whose window closes; a closed peer window
//     leaves the data in the tx fifo. Events go to a Handler. An app
//     may close its session by marking the tx fifo (fifo.RequestClose)
//     rather than on the control socket: the pump hands the mark to the
//     Handler (CloseRequested), which ends the session as a Disconnect
//     would, and every byte queued before the mark still goes out
//     before FIN.
//   - Listener and Dial: passive and active opens producing Conns. Ports
//     are the caller's to reserve in the kernel (so the kernel never hands
//     them to a socket of its own); Dial with port 0 takes one of gVisor's
//     ephemeral ports, which the kernel knows nothing of.
//
// # Options chosen
//
// SACK is on and RACK loss detection off (below). Everything else is
// gVisor's default unless an Options field says otherwise: congestion
// control reno, 1 MiB send and receive buffers (a connection gVisor
// completed and queued for the listener has 128 KiB, Linux's tcp_rmem
// default, until the Listener takes it, so that those queued while an
// app's backlog is full hold little that no bound counts: Listen),
// TIME-WAIT and FIN-WAIT-2 60s, no Nagle delay. Keepalive is on for every connection, dialed or
// accepted, with an idle time and interval of 15 s and 9 probes
// (DefaultKeepalive): what Go's net.Dial and a net.Listener's Accept set
// on a kernel socket, so that a Go program on the app library finds the
// keepalive it had; it goes off as the app's Conn finishes, as Linux's
// orphans and TIME-WAIT sockets send no probes. The receive buffer grows, up to
// gVisor's 4 MiB, by gVisor's receive buffer moderation (Linux's
// autotuning: twice what the reader took in the last round trip, more
// in slow start), which the pump feeds with what it moved into the rx
// fifo (Endpoint.ModerateRecvBuf, as gVisor's own readers do); only a
// connection whose app reads fast grows it, so a peer alone cannot, and
// a connection's memory in gVisor stays bounded by 4 MiB. All
// connections' buffers together, and one group of owners', are bounded too
// (Options.BufferBytes and GroupBufferBytes, buffers.go): an app that
// opens many connections and reads none would otherwise make the daemon
// hold a receive buffer for each (200 such connections, each sent 4 MiB by
// a kernel peer, held 110 MB of the daemon's heap), and a connection its
// app closed keeps what it holds to send accounted while gVisor delivers
// it (an orphan, orphans.go), else an app that fills and closes
// connections to a peer that reads nothing could. Bulk receive in
// perf (--tcp --quick --only tcprecv, three interleaved rounds):
// 3.51-3.58 Gbit/s at 2,452-2,502 ms of host B's CPU per GB without
// it, 4.20-4.22 at 1,954-1,997 with it. The IPv4/IPv6 protocols run with zero options: no DAD,
// router solicitation, SLAAC, MLD or IGMP (the kernel does those for the
// host).
//
// Offloads, from measurements (BenchmarkBulk, back to back, MTU 1500, on
// a 2-core machine at load average 6-15: there the wall-clock rate
// follows the CPU share the process gets, so what was compared is the CPU
// time per MiB, the benchmarks' cpu-ms/MiB):
//
//   - Receive: a BIG TCP segment, longer than an IP length field holds
//     (which says 0; IPv6 with or without a hop-by-hop header holding the
//     jumbo payload option), as a local peer whose interface allows GSO
//     segments over 64 KiB sends them, is cut into segments gVisor's IP
//     takes (deliverBig; Stats.RxBig). InjectBatch coalesces the
//     consecutive in-order segments
//     of each connection in a batch into one segment of up to 64 KiB
//     (coalesce.go), with the rules of Linux's GRO. gVisor's
//     TCP costs per segment (its dispatcher queues, locks and wakes a
//     processor for every one, and acknowledges), so coalescing the
//     MSS-sized packets of a batch pays. The coalesced segment is built
//     in one buffer, each payload copied once out of the frames; gVisor's
//     own GRO (gro.GRO), used before, gave every packet a buffer of its
//     own and chained them, so that TCP, reading, walked and released
//     one pooled chunk per packet. Bulk receive in perf (--tcp --quick,
//     four interleaved rounds): 3.34-4.65 Gbit/s at 1,666-2,370 ms of
//     host B's CPU per GB with gVisor's GRO, 4.05-5.51 at 1,357-1,893
//     with the coalescing; 0.39-0.49 of the kernel's rate against
//     0.48-0.58, round by round 17-26% less CPU per GB. A coalesced segment's
//     TCP checksum is not recomputed, and gVisor's NIC takes
//     RXChecksumValidated from the link's capabilities alone; so the link
//     always reports RX checksum offload and, unless
//     Options.RXChecksumOffload says the link checked them, Inject and
//     InjectBatch verify the IPv4 header and TCP checksums of every packet
//     themselves (one pass, which gVisor no longer makes).
//   - Send: the link reports gVisor GSO (64 KiB). gVisor's TCP sender then
//     builds, queues and times large segments and cuts them into MSS-sized
//     packets just before the link, so the Writer still sees packets of at
//     most the MTU, as the AF_XDP frames need. With Options.HostGSO the
//     link reports the host's GSO instead: the Writer gets the large
//     segments themselves, their TCP checksum partial, and hands them to
//     the kernel with Packet.VirtioNetHdr, which tells it how to cut and
//     checksum them (the datapath's packet socket, TCPConfig.NoGSO).
//   - Measured (cpu-ms/MiB, several runs each, ranges): neither 8.9-12.4,
//     GRO alone 6.2-9.1, GSO alone 6.3-8.3, both 3.6-6.9; in the final
//     A/B with the same test harness, the link before these changes
//     6.9-8.0 and with both 3.0-3.6, and TestTransfer100MB used 1.0-1.2
//     CPU seconds instead of 1.6-1.8 (load average 6-10).
//   - Kept as they were, measured no better: cubic and a fixed 4 MiB
//     receive buffer (before the pump fed the moderation). With RACK on, the lossless test wire saw retransmissions
//     and SACK recoveries (most marked spurious) where nothing was
//     dropped anywhere (link, wire, gVisor's segment queue and its memory
//     accounting, IP) and every retransmitted segment was the highest one
//     sent: RACK's tail loss probe, whose timeout is twice the smoothed
//     RTT with no floor in gVisor, fired on scheduling delays of a
//     fraction of a millisecond. Turning RACK off did not lower the CPU
//     per MiB there.
//   - RACK is off (tcpip.TCPRecovery 0: loss found by three duplicate
//     acknowledgements and the SACK scoreboard, RFC 6675). gVisor's RACK
//     marks segments lost without telling its pipe count (SetPipe counts
//     a segment as in flight unless the SACK scoreboard says it is lost),
//     so after losses that no SACK reveals, the sender finds its
//     congestion window full of segments it knows are gone and sends
//     only what its timers let it: two segments every 200 ms were seen.
//     Measured with each setting (the RACK figures with gVisor's
//     default, tcpip.TCPRACKLossDetection):
//   - Through the test rig's relay losing 1% of the frames, delaying the
//     others 2 ms and sending 5% of those ahead (netem's "loss 1% delay
//     2ms reorder 5%", each way), 100 MiB each way between an app and a
//     kernel echo server, quiet machine, two interleaved rounds: 36-39 s
//     with RACK, 19-21 s without (more segments retransmitted,
//     1,600-1,700 against ~930), 22-33 s with RACK less its
//     duplicate-ACK rule, no better with cubic; the kernel at both ends
//     took 8.4 s.
//   - A kernel peer cutting its socket buffers to 4 KiB in the middle of
//     a 32 MiB echo (TestTCPPeerShrinksWindow): with RACK, 14 of 21
//     runs took 13-88 s and 7 about 1 s (two more were cut off at
//     100 s); without, 1.0-1.4 s in 13 runs; a kernel client in the
//     app's place took 0.7 s.
//   - Request/response of 64 bytes through the relay losing 1% and
//     delaying 2 ms, 2,000 transactions a run, two runs each: p99 216
//     and 218 ms with RACK, 206 and 216 ms without; 40 and 50
//     transactions over 50 ms with RACK, 26 and 41 without. RACK's tail
//     loss probe, which RACK off gives up (shouldSchedulePTO), does not
//     shorten these: with one segment in flight gVisor adds a 200 ms
//     delayed-ACK allowance to the probe's timeout (rack.go), which
//     makes it as long as the retransmission timeout.
//
// Delayed acknowledgements (ack.go): gVisor acknowledges what it
// received as soon as it processed it, so a request's bare
// acknowledgement went out just before the response that could have
// carried it. The link holds a bare acknowledgement of at most one
// segment of new data for up to Options.AckDelay (1 ms) and drops it when
// the connection's next segment carries it, as Linux's delayed
// acknowledgement does (Linux waits 40 ms or more); an acknowledgement of
// more, a duplicate one, one with SACK blocks and every control segment
// go at once. Request/response of 64 bytes in perf (--tcp --quick, two
// interleaved rounds): 32 connections 28,447-29,463 transactions/s at
// 35.7-36.5 µs of host B's CPU each without it, 31,011-31,503 at
// 31.8-32.3 µs with it; one connection's rate did not change (its time
// is the wake-ups of the request's path), its CPU per transaction fell
// from 142-143 to 125-134 µs.
//
// Bare acknowledgements stay inside the peer's window. gVisor sends them
// with its next sequence number (sender.sendAck), and a peer that shrank
// its window below that drops them as out of window. Linux shrinks its
// window to zero when its receive buffer runs out of memory; a Linux
// peer that then waits for an acknowledgement of its own data before it
// reads again (an echo whose sending is blocked) never gets one, and the
// connection stalls for good: seen on the impaired wire, and in 4 of 5
// runs of TestTCPPeerShrinksWindow without this. So the link lowers a
// bare acknowledgement's sequence number to the right edge of the peer's
// last advertised window, as Linux's tcp_acceptable_seq does (windows,
// in window.go), and counts it in Stats.AcksClamped.
//
// Limits: Options.MaxConns, MaxConnsPerOwner, BufferBytes (ErrTooManyConns
// on Dial; an accepted connection over the limit is reset),
// GroupBufferBytes (buffers.go), MaxBacklog,
// ConnectTimeout, CloseTimeout.
//
// The test wire delivers in batches of up to 64 packets (InjectBatch), as
// a worker delivers what one poll of its rx ring gave; the coalescing's gain
// depends on batches holding several segments of one connection.
//
// # Goroutines and events
//
// A Stack runs Options.Pumps goroutines (default min(GOMAXPROCS, 4)), plus
// gVisor's own (its TCP processors and timers). Each Conn and Listener is
// pinned to one pump. gVisor's waiter.Queue notifications (readable,
// writable, hang-up, error) and Conn.Kick only mark the Conn ready on its
// pump (they never block, as gVisor calls them with its locks held); the
// pump then reads the endpoint's state and moves data. Nothing polls. So
// one pump is the only producer of a Conn's rx fifo, and every Handler
// call but Writable for a Conn comes from that pump, one at a time.
//
// One exception, for the tx fifo: Conn.PushTx moves it into gVisor from
// the caller's goroutine (the worker that saw the app's data), under the
// Conn's run lock, which the pump holds while it runs the Conn. It only
// moves bytes (and may call Handler.Writable); it steps back (returns
// false, the caller Kicks) while the pump runs the Conn or when the Conn
// is connecting, closing or aborted, and an error it meets is left to the
// pump, which ends the Conn with it. Request/response of 64 bytes over one
// connection in perf (--tcp --only tcprr64-c1, two interleaved rounds of
// two repetitions): 6,098 and 6,423 transactions/s with it, 4,719 and 4,719
// with every push through the pump; p50 146 against 201 µs.
//
// The fifos speak their own notification protocol (package fifo): after
// queueing into the rx fifo the pump calls SetEvent and, when the app must
// be signalled, Handler.Readable; with the rx fifo full it asks for
// DeqNotifyIfFull. It clears the tx fifo's event flag before draining it
// and, after removing bytes, calls Handler.Writable when DeqNotify says
// the app asked. The daemon calls Conn.Kick when the app queued into the
// tx fifo or dequeued from a full rx fifo.
//
// # Closing and concurrency
//
// Stack.Close must be called: it aborts every Conn and Listener, waits for
// their last Handler calls, stops the pumps and destroys the gVisor stack.
// A Conn ends with exactly one Handler.Closed, after which its fifos are no
// longer touched; Close (FIN once the tx fifo drained), CloseWrite (half
// close) and Abort (RST) only request it. A Listener ends with
// AcceptHandler.ListenerClosed. All exported methods are safe for
// concurrent use and never block on the network; Writer.WritePacket is
// called concurrently from gVisor's goroutines, the pumps, PushTx's
// callers and the link's delayed-acknowledgement timers.
package tcp
