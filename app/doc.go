// Package app is the library applications link to use xsessiond: Attach to
// the daemon, then Listen, ListenPacket and Dial, returning the standard
// net.Listener, net.PacketConn and net.Conn, plus a zero-copy batch API for
// line-rate consumers.
package app
