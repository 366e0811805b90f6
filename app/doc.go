// Package app is the library applications link to use xsessiond: Attach to
// the daemon, then Listen, ListenPacket and Dial, returning the standard
// net.Listener, net.PacketConn and net.Conn, plus a zero-copy batch API for
// line-rate consumers (PacketConn.ReadBatch).
//
// # Objects and what to close
//
// Attach connects to the daemon's control socket, attaches the app to a
// namespace and maps the segments and event queue the daemon passes. The
// App must be closed: Close closes every listener and connection made from
// it, detaches, and unmaps the shared memory. Each PacketConn, Conn and
// Listener should be closed too (it unbinds or disconnects); closing the App
// does it for those left open. Close of a TCP session on the wire marks its
// tx fifo and returns without waiting for the daemon, which sends what was
// written, then FIN, as close(2) lets the kernel do; and as there, data the
// app left unread, or that the peer sends after the Close, resets the
// connection instead (CloseWrite first, then read to io.EOF, for a close
// that loses nothing). A cut-through TCP session closed with data unread
// likewise ends in ECONNRESET for the peer, once it read what was queued.
// SetLinger(0) makes Close reset a TCP session at once, what was not sent
// dropped, as a zero SO_LINGER does; CloseRead makes reads return io.EOF
// where they would wait, as shutdown(SHUT_RD) does on Linux. A session the
// peer reset keeps its fifos in the app's memory until it is closed. A
// second Close of a Conn, Listener or PacketConn fails with an error
// wrapping net.ErrClosed, as do its setters (deadlines, linger, keepalive,
// don't fragment) after Close. A Listener's SetDeadline bounds Accept, as a
// net.TCPListener's does. Keepalive is the daemon's TCP's: SetKeepAlive,
// SetKeepAlivePeriod and SetKeepAliveConfig of a cut-through session (or a
// UDP one) fail with flow.ErrNotSupported. Urgent data a wire peer sends
// (MSG_OOB) is read in the stream, as from a Linux socket with
// SO_OOBINLINE set: the daemon's TCP has no urgent mode (RFC 6093 asks
// programs that use urgent data to read it inline).
//
// # Data
//
// Data never crosses the control socket: it goes through fifos in shared
// memory. A UDP listener made by ListenPacket has a fifo pair filled and
// drained by a datapath worker (datagrams from and to the wire) and, in
// addition, receives the cut-through sessions other apps of the host open to
// it, each with a fifo pair of its own in a segment shared with that app;
// ReadFrom returns a *CutThroughAddr for those, and WriteTo answers them
// when given one. ReadFromUDPAddrPort and WriteToUDPAddrPort, as on a
// net.UDPConn, allocate nothing (ReadFrom's net.Addr costs two allocations
// a datagram); they serve the wire, and give a cut-through datagram the
// zero netip.AddrPort, which WriteToUDPAddrPort refuses. Dial returns a
// connected session: cut-through when the destination is another app of
// the host, a datapath session otherwise. Listen accepts TCP sessions from
// the wire (the daemon's TCP stack) and cut-through sessions of other apps
// alike. A cut-through session costs the app one descriptor (the eventfd
// that wakes its peer); one that comes while the app is at its descriptor
// limit (ulimit -n) cannot be taken and ends (a Dial of it fails with
// syscall.EMFILE), the app and its other sessions going on as they were.
// UDP sessions carry datagrams (one Read per datagram, excess bytes
// dropped, as with a UDP socket). A UDP session whose cut-through peer is
// gone is as a kernel UDP socket whose loopback peer's port closed: a Write
// succeeds and the next call fails with syscall.ECONNREFUSED (with
// flow.ErrFifoCorrupt too when the peer broke the shared fifo). A Write of
// a UDP session to another app of the host whose rx fifo is full waits for
// room, as a unix datagram socket's does, losing nothing; a kernel UDP
// socket's would succeed and its loopback peer drop the datagram. A
// program that must not wait for a peer that stopped reading sets a write
// deadline. A PacketConn's WriteTo to such a peer drops the datagram
// (PeerDrops counts it), as one writer to many must not wait on one.
//
// TCP sessions carry a byte stream: Read returns io.EOF after the peer's
// FIN, and CloseWrite sends ours (on the wire and cut-through alike); a
// write after it fails with syscall.EPIPE, as does one after the peer
// closed. A session that ends otherwise reports why once, as a kernel
// socket reports its error: the first read or write fails with
// syscall.ECONNRESET after a reset; with syscall.ETIMEDOUT after a timeout
// (retransmissions, or the keepalive probes of SetKeepAlive,
// SetKeepAlivePeriod or SetKeepAliveConfig, unanswered); with an error that
// is both syscall.ECONNRESET and flow.ErrFifoCorrupt after the daemon reset
// a connection whose fifo indices were found corrupt (or this end a
// cut-through session whose peer left them so). The reads after it return
// io.EOF and the writes syscall.EPIPE. The data a wire session received
// before its reset is read first, as from a kernel socket; a write, a
// blocked one too, fails at once (a writer waiting for room is not left
// waiting while its reads have data).
// These errors are *os.SyscallError ("read", "write") in the *net.OpError,
// as the net package's. A reset that follows the peer's FIN (its answer to
// what was sent after it closed) fails the writes with syscall.EPIPE and
// leaves the reads at io.EOF, as on Linux. CloseWrite and CloseRead of a
// session that is over fail with syscall.ENOTCONN, as shutdown(2) does. A
// refused connect fails with flow.ErrRefused, which wraps
// syscall.ECONNREFUSED, as does flow.ErrLocalConnect, a connect to a
// loopback address no app listens on (and no kernel socket of the app's
// process's namespace: Dial reaches one of those, and a kernel socket of
// the host's own address when the app runs in the interface's namespace,
// with a kernel socket of the app's process, as net.Dial would); a
// connect the peer reset as its
// handshake completed fails with flow.ErrReset, which wraps
// syscall.ECONNRESET.
//
// A wire session's LocalAddr and RemoteAddr are *net.TCPAddr
// (*net.UDPAddr) with the addresses the peer sees the other way round: an
// accept on a wildcard listener has the address the peer reached. A
// wildcard address is one family's, as on a kernel socket with
// IPV6_V6ONLY set: tcp://0.0.0.0:80 takes IPv4 alone and tcp://[::]:80
// IPv6 alone (flow.ParseURI). Listen and ListenPacket take a URI with no
// address, tcp://:80, as both families, as net.Listen("tcp", ":80") does:
// a bind of each on one port, its address [::]:80. A listener on a
// loopback address (tcp://127.0.0.1:80) serves the other apps of the host
// alone, cut-through, as a kernel listener there serves local peers; a
// host name (tcp://localhost:80) binds one of its addresses, the first
// IPv4 one, as net.Listen does. The port may be a service name
// (tcp://:http, udp://10.0.0.7:domain), looked up as net.Listen and
// net.Dial look it up (net.LookupPort). Dial of no address or an
// unspecified one dials the loopback address of its family, as net.Dial
// dials the local system. A link-local IPv6 address
// may carry a zone naming the interface of the app's namespace
// (tcp://[fe80::1%eth0]:80), as net.Dial takes it; the daemon refuses
// another. A link-local peer's address, as ReadFrom and a listener's
// connections give it, carries a zone as a kernel socket's does: the zone
// the listener's URI gave, or else the index of the namespace's interface
// (the app's netns need not be the one where the interface has its name),
// which the daemon takes back as it takes the name.
//
// SetDontFragment on a PacketConn or UDP Conn asks that datagrams to the
// wire go out unfragmented (IP_PMTUDISC_DO on a kernel socket). A datagram
// whose IP packet exceeds the path MTU fails its WriteTo or Write with an
// error wrapping syscall.EMSGSIZE, and nothing is sent. The daemon knows
// the path MTU (the interface's, lowered by the route's): the library asks
// it once per destination, only for packets larger than 576 bytes (IPv4)
// or 1,280 (IPv6), and keeps the answer for 10 seconds. A path MTU that
// shrinks after that is caught by the daemon, which drops the datagram
// and reports EMSGSIZE asynchronously, and the library asks the path MTU
// again: the next read or write of a Conn returns it, once, as a connected
// kernel UDP socket returns the peer's ICMP errors (ECONNREFUSED and the
// like); a PacketConn, unconnected, fails no call for it, as an
// unconnected kernel socket reports no asynchronous error, and its next
// WriteTo of a datagram too large for the new path MTU fails. As on a
// kernel UDP socket, the errno of a UDP call's error (EMSGSIZE, ECONNREFUSED, EINVAL for port 0,
// ENETUNREACH for an address of the other family) is an *os.SyscallError
// in the *net.OpError naming the call the net package names: "read" and
// "write" for a Conn's Read and Write, "recvfrom" and "sendto" for a
// PacketConn's ReadFrom and WriteTo (and their AddrPort forms); errors
// that are no errno (net.ErrClosed, os.ErrDeadlineExceeded) are not
// wrapped so.
//
// SetReadBuffer and SetWriteBuffer on a PacketConn are *net.UDPConn's, for
// programs that size a net.PacketConn's buffers when it has them: its
// buffers are its rx and tx fifos, sized when the app attaches
// (Options.RxFifoSize, TxFifoSize). A size up to the fifo's passes; a
// larger one fails with an error wrapping syscall.ENOBUFS that names the
// option, where a kernel socket would clamp it at net.core.rmem_max (or
// wmem_max) without a word. A Conn has them too (*net.TCPConn's and
// *net.UDPConn's): its rx fifo is sized by the app's Options.RxFifoSize,
// its tx fifo by Options.TxFifoSize, or, in a session with another app of
// the host, by that app's RxFifoSize (the tx fifo is the peer's rx fifo).
//
// JoinGroup and LeaveGroup on a PacketConn make it a member of a
// multicast group, as golang.org/x/net/ipv4's and ipv6's PacketConn do a
// kernel UDP socket: the daemon's kernel socket holding the listener's
// port joins, on the interface of that name in the namespace's netns (nil:
// the one the route to the group takes), and ReadFrom returns the group's
// datagrams with their senders' addresses until the leave or Close.
// ListenPacket of a multicast address binds the wildcard of its family
// on that port, as net.ListenPacket does, and joins no group. A refused
// Listen or ListenPacket carries the errno bind(2) would give
// (EADDRINUSE, EADDRNOTAVAIL, EINVAL) in an *os.SyscallError named
// "bind", as net.Listen's errors do; a failed Dial's errno (ECONNREFUSED,
// ENETUNREACH, ETIMEDOUT; EHOSTUNREACH, EACCES or EINVAL for a route of
// type unreachable, prohibit or blackhole, as the kernel's) is in an
// *os.SyscallError named "connect", as net.Dial's. A port out of range
// fails Listen, ListenPacket and Dial with a *net.AddrError ("invalid
// port"), as net.Listen and net.Dial do.
//
// # Waiting and signalling
//
// Blocking calls sleep until the app is signalled: one goroutine per App
// watches the epoll set the daemon passed at Attach through the runtime
// poller (an edge per signal, nothing to read), drains the event queue, and
// wakes the callers waiting. A reader clears the fifo's event flag before
// its last look and only then sleeps, so a producer that queued data after
// that look sees the flag clear and signals: no wake-up is lost. (A
// datapath worker receiving at full rate holds that signal back for up to
// 200 µs, or until the fifo is a quarter full, so that a reader wakes once
// for several of its batches.) A writer
// that queued data and whose SetEvent returned true writes the eventfd of
// the fifo's consumer: the owning worker's kick eventfd, or, for a
// cut-through session, the eventfd the daemon made for it in the peer
// app's epoll set. A worker's eventfd is written only
// while the worker sleeps in poll, as the daemon's sleep flags page
// (api.SleepFlags, mapped read-only at Attach) tells: an awake worker
// finds the event flag by itself, so a busy queue costs its writers no
// system call per write. A writer waiting for room asks the
// consumer for a dequeue notification; for fifos whose consumer is a
// datapath worker it also looks again every few milliseconds.
//
// Before it sleeps, a read that found nothing yields its CPU
// (sched_yield) and looks again, for up to Options.ReadSpin (50 µs by
// default): where the producer (the worker, or the peer app) shares the
// reader's CPU, the yield runs it, and the reader finds the data without
// a sleep and a wake-up. Yields that ran nobody (as short as the shortest
// the App timed) end the spin after two, so a reader whose producer runs
// elsewhere pays two system calls, and the spin never holds a CPU another
// thread asked for. A read of a TCP session over the datapath sleeps at
// once: its bytes come through several goroutines of the daemon, which
// the yields do not hasten (spin.go). App.ReadStats counts the spins, the
// spins that found data and the sleeps.
//
// Deadlines (SetDeadline, SetReadDeadline, SetWriteDeadline) work as on
// kernel sockets: calls past them fail with an error that wraps
// os.ErrDeadlineExceeded and whose Timeout method reports true.
//
// # Errors
//
// Failures the daemon reports are the sentinels of package flow, which
// this package re-exports (ErrWrongSecret is flow.ErrWrongSecret):
// errors.Is(err, flow.ErrWrongSecret), flow.ErrAddressInUse and so on work
// on what Attach, ListenPacket, Listen and Dial return, and their Error text is
// one line a person understands. When the daemon goes away (it stops, or
// dies), every call blocked on the App returns promptly with an error that
// wraps net.ErrClosed, and so does every later call; cut-through sessions
// end too (what their fifos held unread is lost, as on a reset), and the
// Close of a Listener, PacketConn or Conn returns nil: the daemon let go
// of everything of the app's as its connection ended.
//
// # Concurrency
//
// An App, PacketConn, Conn and Listener are safe for concurrent use, as the
// net interfaces require; calls of one kind (reads, writes) on one object
// are serialized. Slices returned by ReadBatch are valid until the next
// ReadBatch, ReadFrom (or ReadFromUDPAddrPort), Release or Close of that
// PacketConn.
package app
