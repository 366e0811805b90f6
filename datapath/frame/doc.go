// Package frame decodes and builds the Ethernet frames xsessiond's workers
// see on their AF_XDP sockets: Ethernet with up to two VLAN tags (802.1Q,
// 802.1ad), IPv4 or IPv6, and UDP. A TCP segment decodes as far as its IP
// header (NotUDP, with Proto and L4Off set) for the datapath's TCP path,
// including a BIG TCP segment's, whose IP length field says 0.
//
// Decode is hand-written and allocation-free. It never panics, whatever the
// input; a frame it cannot use is reported with a Reason (truncated headers,
// bad lengths, bad checksums, fragments, not IP, not UDP, ...). Its output,
// Packet, holds addresses in the 16-byte form of flow.FiveTuple and the
// payload as offsets into the frame: nothing in it points into the heap.
//
// Template is a per-session header template (Ethernet, optional VLAN tag,
// IPv4 or IPv6, UDP) prepared once; Build and BuildInPlace then write a frame
// per datagram with the lengths, the IPv4 header checksum (finished from the
// template's precomputed partial sum) and the UDP checksum, without
// allocating.
//
// Sum, Fold and Checksum compute the Internet checksum eight bytes at a time.
//
// Nothing in this package keeps state between calls except a Template's IPv4
// identification counter: a Template belongs to one goroutine at a time; Decode
// and the checksum functions are safe for concurrent use.
package frame
