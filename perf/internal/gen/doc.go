// Package gen is the perf harness's traffic generator: pre-built
// Ethernet/IPv4/UDP frames sent through an AF_PACKET socket with a
// TPACKET_V2 transmit ring and PACKET_QDISC_BYPASS.
//
// Frames are built once, at setup, with gopacket (checksums computed there)
// and written into every slot of the memory-mapped ring; sending a packet
// then costs two stores into the ring and a share of one sendto(2) per batch.
// Flows differ in their UDP source port only, so a multi-queue receiver
// spreads them by its flow hash.
//
// A Generator must be created inside the network namespace it sends from
// (the socket and its bind belong to that namespace) and closed by its
// owner. Run is called by one goroutine at a time; Sent and Errors may be
// read from any goroutine while Run is going.
package gen
