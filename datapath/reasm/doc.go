// Package reasm reassembles fragmented IPv4 and IPv6 datagrams for one
// datapath worker.
//
// A worker hands each fragment to [Reassembler.Add]: its [Key] (addresses,
// identification, interface, family, upper-layer protocol), its offset in
// bytes, its more-fragments flag and its data (the bytes after the IPv4
// header or after the IPv6 fragment header). When the fragment completes a
// datagram, Add returns the whole upper-layer datagram (for UDP, the UDP
// header followed by the payload) with [Done].
//
// # Semantics
//
// The rules are those of the Linux kernel (ip_frag_queue and ip_frag_reasm
// in net/ipv4/ip_fragment.c, ip6_frag_queue in net/ipv6/reassembly.c,
// inet_frag_queue_insert in net/ipv4/inet_fragment.c), so that a datagram is
// delivered here exactly when the kernel would deliver it, with the same
// bytes:
//
//   - An IPv4 fragment with more fragments following whose end is not a
//     multiple of 8 is cut down to a multiple of 8. An IPv6 one is dropped
//     ([BadFragment]); its datagram's queue stays, as in the kernel, which
//     answers with an ICMPv6 parameter problem instead.
//   - A last fragment that ends before data already held, or a second last
//     fragment with another end, or data beyond a known last end, discards
//     the datagram ([Corrupt]); so does an empty fragment.
//   - Fragments are kept as runs: a fragment that starts where the
//     highest fragment ends extends that fragment's run; any other fragment
//     starts a run of its own. A fragment inside one run is a duplicate and
//     is ignored ([Duplicate]); one that overlaps a run otherwise discards
//     the datagram ([Overlap], RFC 5722).
//   - A datagram whose data would end beyond the caller's limit (65,535 less
//     the IPv4 header, or less the IPv6 extension headers before the
//     fragment header) is discarded when its last byte arrives ([TooLong]),
//     as the kernel does when it finds the reassembled packet oversized. An
//     IPv6 fragment that ends beyond 65,535 is dropped at once, its queue
//     kept.
//   - A discarded datagram's queue is gone: a later fragment with the same
//     key starts a new one. So does a fragment arriving after its datagram
//     completed.
//
// What the kernel does beyond these rules is not reproduced: ECN
// consistency between fragments, IPv4's ipfrag_max_dist and its memory
// thresholds (the bounds below take their place).
//
// # Bounds
//
// [Config.MaxDatagrams] queues are in flight at most; a fragment that needs
// a new queue when that many exist evicts the oldest (by creation). Each
// queue holds one 64 KiB buffer, taken from a pool that never grows past
// 2×MaxDatagrams buffers: MaxDatagrams in flight, and as many completed
// datagrams waiting for [Reassembler.Release]. [Reassembler.MemoryBound]
// gives the byte bound. A flood of fragments that never complete thus costs
// MaxDatagrams buffers and keeps evicting its own queues; a datagram whose
// fragments arrive together still completes unless more than MaxDatagrams
// other datagrams start between its first and last fragment (or the worker
// leaves 2×MaxDatagrams completed datagrams unreleased).
// [Config.MaxFragments] limits the fragments of one datagram
// ([TooManyFragments]), and [Config.Timeout] (IPv4) and [Config.Timeout6]
// (IPv6) its lifetime: [Reassembler.Expire] discards queues older than
// their family's.
//
// # Buffers and goroutines
//
// A Reassembler belongs to one goroutine: nothing in it is safe for
// concurrent use. The datagram Add returns lives in a buffer of the
// Reassembler; it stays valid and untouched until the next call to Release,
// which gives the buffers of every datagram completed since the previous
// Release back to the pool. A worker calls Release once the datagrams of a
// batch have been delivered. There is nothing to close: the buffers are
// ordinary Go memory.
//
// Add does not allocate once the pool's buffers exist.
package reasm
