// Command tcpecho is a small xsessiond app that echoes every byte of every
// TCP connection it accepts back to its peer, wire and cut-through
// connections alike.
package main
