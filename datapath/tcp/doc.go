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
//     passes its packets through gVisor's generic receive offload, which
//     coalesces in-order segments of a connection before TCP sees them.
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
//     leaves the data in the tx fifo. Events go to a Handler.
//   - Listener and Dial: passive and active opens producing Conns. Ports
//     are the caller's to reserve in the kernel (so the kernel never hands
//     them to a socket of its own); Dial with port 0 takes one of gVisor's
//     ephemeral ports, which the kernel knows nothing of.
//
// # Options chosen
//
// SACK is on. Everything else is gVisor's default unless an Options field
// says otherwise: congestion control reno, RACK loss detection, 1 MiB send
// and receive buffers (receive buffer moderation on), TIME-WAIT and
// FIN-WAIT-2 60s, no Nagle delay, no keepalive. The IPv4/IPv6 protocols
// run with zero options: no DAD, router solicitation, SLAAC, MLD or IGMP
// (the kernel does those for the host).
//
// Offloads, from measurements (BenchmarkBulk, back to back, MTU 1500, on
// a 2-core machine at load average 6-15: there the wall-clock rate
// follows the CPU share the process gets, so what was compared is the CPU
// time per MiB, the benchmarks' cpu-ms/MiB):
//
//   - Receive: InjectBatch runs gVisor's GRO over each batch. gVisor's TCP
//     costs per segment (its dispatcher queues, locks and wakes a
//     processor for every one, and acknowledges), so coalescing the
//     MSS-sized packets of a batch pays. gVisor's GRO rewrites the
//     headers of what it merges without fixing their checksums, and
//     gVisor's NIC takes RXChecksumValidated from the link's capabilities
//     alone; so the link always reports RX checksum offload and, unless
//     Options.RXChecksumOffload says the link checked them, Inject and
//     InjectBatch verify the IPv4 header and TCP checksums themselves (one
//     pass, which gVisor no longer makes).
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
//   - Kept as they were, measured no better: RACK off, and earlier cubic
//     and a 4 MiB receive buffer. The retransmissions and SACK recoveries
//     (most marked spurious) seen on the lossless test wire are not
//     drops: nothing was dropped anywhere (link, wire, gVisor's segment
//     queue and its memory accounting, IP), the wire reordered nothing,
//     and every retransmitted segment was the highest one sent. That
//     matches RACK's tail loss probe, whose timeout is twice the smoothed
//     RTT with no floor in gVisor, so that a scheduling delay of a
//     fraction of a millisecond on a loaded machine fires it. Turning
//     RACK off did not lower the CPU per MiB.
//   - On an impaired wire, RACK costs time and is kept anyway. Through
//     the test rig's relay losing 1% of the frames, delaying the others
//     2 ms and sending 5% of those ahead (netem's "loss 1% delay 2ms
//     reorder 5%", each way), 100 MiB each way between an app and a
//     kernel echo server (TestTCPLossKernel, quiet machine, two
//     interleaved rounds) took 36-39 s with the default, 19-21 s with
//     RACK off (tcpip.TCPRecovery 0: three duplicate ACKs and SACK
//     recovery, more segments retransmitted, 1,600-1,700 against
//     ~930), 22-33 s with RACK without the duplicate-ACK rule, no
//     better with cubic; the kernel at both ends took 8.4 s. Without
//     RACK gVisor sends no tail loss probe (shouldSchedulePTO), so a
//     request or reply whose last segment is lost would wait for the
//     retransmission timeout, 200 ms at least, instead of about two
//     round trips.
//
// Limits: Options.MaxConns, MaxConnsPerOwner (ErrTooManyConns on Dial; an
// accepted connection over the limit is reset), MaxBacklog,
// ConnectTimeout, CloseTimeout.
//
// Known defect: a peer whose receive window ends before gVisor's next
// sequence number (one that shrank it) can stall a connection for good.
// gVisor sends a bare acknowledgement with its next
// sequence number (sender.sendAck), where Linux sends the lesser of that
// and the right edge of the peer's window (tcp_acceptable_seq). Seen with
// a Linux peer whose receive queue was full (it echoed what it read, and
// its own sending waited): it offered 1 KiB past what it had received,
// gVisor's next sequence number was 7.8 KiB past it, and it dropped every
// acknowledgement of gVisor's as out of window (its
// TcpExtTCPACKSkippedSeq counted them),
// and every retransmission too, as a segment reaching past its window
// with its receive queue not empty (tcp_sequence). It never learned that
// its own data had arrived, and backed its retransmissions off for ever.
// It needs data both ways on one connection, loss, and a peer that does
// not read while it cannot write; about one in nine runs of such an echo
// on the impaired test wire (nstest's relay), under load.
//
// The test wire delivers in batches of up to 64 packets (InjectBatch), as
// a worker delivers what one poll of its rx ring gave; the GRO gain
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
// one pump is the only producer of a Conn's rx fifo and the only consumer
// of its tx fifo, and every Handler call for a Conn comes from that pump,
// one at a time.
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
// called concurrently from gVisor's goroutines and the pumps.
package tcp
