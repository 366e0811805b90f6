// Package udp is xsessiond's UDP transport: listeners that accept sessions
// per remote or stay in datagram mode, connected UDP sessions, and the
// reservation of their local ports in the kernel.
package udp
