// Command udpecho is a small xsessiond app that echoes every UDP datagram it
// receives back to its sender.
package main
