// Package udp is xsessiond's UDP transport: the per-fifo state the workers
// of package datapath deliver datagrams into and drain datagrams from
// (Target: a global listener in datagram mode, or a connected UDP session),
// the datagram header written for each received datagram, and the
// reservation of connected sessions' local ports in the kernel
// (Reservation).
//
// # Datagram mode
//
// A global UDP listener has one fifo pair (sessions.Listener.Pair). Every
// datagram received for it is queued in its Rx fifo as one fifo datagram
// record whose header names the remote address and port (the sender) and
// the local address and port (the destination the sender used); the app
// writes datagrams to send into Tx with the header naming the destination
// (Remote, RemotePort) and, optionally, the source address (Local; zero
// means the route's source address, or the listener's address when it is
// bound to one). A connected session's pair carries the same records; on
// Tx its app may leave the addresses zero.
//
// # Concurrency
//
// A Target's Rx fifo may be fed by several workers (RSS spreads a
// listener's remotes over queues), so producers serialize on the Target's
// mutex (Lock/Unlock, held by a worker across a run of datagrams of one
// batch, which DeliverBatch queues and publishes together). Its Tx fifo is
// drained by one worker, the owner. Counters are atomic. Kill marks a Target dead under its mutex: no datagram is queued
// after it returns.
//
// A Reservation holds a kernel UDP socket bound to a listener's or a
// connected session's local address and port, so the kernel never hands
// the port out; it drops whatever the kernel delivers to it (a socket
// filter) until Open, after which Recv reads it (datagrams the kernel
// reassembled from fragments) and Send sends through it (datagrams larger
// than a frame, which the kernel fragments). It must be closed when the
// session ends. Connected to the peer (Connect), it
// collects the peer's ICMP errors: its fd polls with POLLERR and Err
// returns the error.
package udp
