// Package fifo owns the shared memory between xsessiond and its apps: memfd
// segments, the per-app segment manager, the single-producer single-consumer
// fifo and its byte layout (a documented ABI), datagram framing, the app event
// queue, and eventfd signalling.
package fifo
