/* SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause */
/*
 * Types shared by the XDP program and its loader: the UAPI pieces the
 * program needs (so that no kernel or arch header is required), the wire
 * headers it parses, and the layouts of its map keys, values and counters.
 *
 * The map layouts are an ABI with package loader, which reads them through
 * bpf2go-generated Go types. Change them together.
 */
#ifndef XSESSION_H
#define XSESSION_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

/* ---- UAPI (include/uapi/linux/bpf.h); these values are kernel ABI ---- */

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP,
	XDP_PASS,
	XDP_TX,
	XDP_REDIRECT,
};

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_PERCPU_ARRAY 6
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_XSKMAP 17

#define BPF_F_NO_PREALLOC (1U << 0)

#define BPF_ANY 0

/* ---- wire headers ---- */

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define IPPROTO_HOPOPTS 0
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ROUTING 43
#define IPPROTO_FRAGMENT 44
#define IPPROTO_ESP 50
#define IPPROTO_AH 51
#define IPPROTO_DSTOPTS 60
#define IPPROTO_MH 135
#define IPPROTO_HIP 139
#define IPPROTO_SHIM6 140
#define IPPROTO_EXP1 253
#define IPPROTO_EXP2 254

struct xs_eth {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
} __attribute__((packed));

struct xs_vlan {
	__be16 tci;
	__be16 proto;
};

struct xs_ip4 {
	__u8 ver_ihl;
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 proto;
	__be16 check;
	__be32 saddr;
	__be32 daddr;
};

#define XS_IP4_MF 0x2000
#define XS_IP4_OFFSET 0x1fff
/* The most an IP length field holds: BIG TCP segments are longer and say 0. */
#define XS_IP_MAX_LEN 0xffff
/* The IPv6 jumbo payload option (RFC 2675), in the hop-by-hop header of
 * BIG TCP segments as older Linux sends them. */
#define XS_IP6_OPT_JUMBO 0xc2

struct xs_ip6 {
	__be32 ver_tc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

/* The common head of hop-by-hop, routing and destination options headers;
 * each is (hdrlen + 1) * 8 bytes long, so at least 8. */
struct xs_ip6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
};

/* The IPv6 fragment header: frag_off holds the offset in 8-byte units in
 * its upper 13 bits, two reserved bits and the M (more fragments) flag. */
struct xs_ip6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

#define XS_IP6_MF 0x0001
#define XS_IP6_OFFSET 0xfff8

struct xs_udp {
	__be16 sport;
	__be16 dport;
	__be16 len;
	__be16 check;
};

struct xs_tcp {
	__be16 sport;
	__be16 dport;
	__be32 seq;
	__be32 ack;
	__u8 doff_res; /* data offset in the upper 4 bits, in 32-bit words */
	__u8 flags;
	__be16 window;
	__be16 check;
	__be16 urg;
};

/* ---- map layouts (ABI with package loader) ---- */

/* Address families in keys, as sessions.Family4 / sessions.Family6. */
#define XS_FAMILY4 4
#define XS_FAMILY6 6

/*
 * Key of the established map: a session's 5-tuple as the receiving host
 * sees it (local = the packet's destination), plus the interface it
 * arrives on.
 *
 * Addresses take 16 bytes; an IPv4 address fills the first 4 and the rest
 * is zero. Ports are in network byte order (as on the wire). pad is zero.
 * ifindex is the receiving interface (ctx->ingress_ifindex): the same
 * 5-tuple on two interfaces (two namespaces sharing one set of maps) names
 * two sessions.
 */
struct xs_est_key {
	__u8 local[16];
	__u8 remote[16];
	__be16 local_port;
	__be16 remote_port;
	__u8 proto;
	__u8 family;
	__u16 pad;
	__u32 ifindex;
};

/*
 * Key of the locals map: an address of the namespace (IPv4 in the first
 * four bytes), family XS_FAMILY4 or XS_FAMILY6, pad zero.
 */
struct xs_local_key {
	__u8 addr[16];
	__u8 family;
	__u8 pad[3];
};

/*
 * Key of the listener map: (ifindex, address, port, proto, family) with
 * the same conventions as xs_est_key. A wildcard listener has the zero
 * address.
 */
struct xs_lst_key {
	__u32 ifindex;
	__u8 addr[16];
	__be16 port;
	__u8 proto;
	__u8 family;
};

/*
 * Value of both maps: the session or listener handle, the FIB the entry
 * belongs to, and flags (none defined: written as zero, ignored by the
 * program). The program only tests presence.
 */
struct xs_value {
	__u64 handle;
	__u32 fib;
	__u32 flags;
};

/*
 * The port index: an array with one u32 of XS_PORT_* bits per (transport,
 * local port), at index XS_PORT_INDEX(proto, port) with the port in network
 * byte order, as every port of every map (and as the packet carries it). A bit is set while at least one entry of its kind and family
 * with that transport and local port exists in the listener or established
 * map, on any interface. The program skips the lookups whose bit is clear:
 * packets to ports nothing is bound to cost no hash lookup, and a listener
 * port without established sessions costs one. The loader sets a bit
 * before it inserts the first entry and clears it after it deleted the
 * last, so a clear bit never hides an entry.
 */
#define XS_PORT_EST4 (1U << 0)
#define XS_PORT_EST6 (1U << 1)
#define XS_PORT_EXACT4 (1U << 2)
#define XS_PORT_EXACT6 (1U << 3)
#define XS_PORT_WILD4 (1U << 4)
#define XS_PORT_WILD6 (1U << 5)
#define XS_PORT_ENTRIES (2U << 16)
#define XS_PORT_INDEX(proto, port) ((((proto) == IPPROTO_TCP) ? (1U << 16) : 0U) | (__u32)(port))

/*
 * Key of the fragments map: one fragmented UDP datagram, as the receiving
 * host sees it (src = the packet's source). Addresses follow the
 * conventions of xs_est_key. id is the datagram's identification in host
 * byte order, as a number: IPv4's 16-bit field zero-extended, IPv6's
 * 32-bit field of the fragment header. ifindex is the receiving interface,
 * family XS_FAMILY4 or XS_FAMILY6, proto IPPROTO_UDP, pad zero.
 */
struct xs_frag_key {
	__u8 src[16];
	__u8 dst[16];
	__u32 id;
	__u32 ifindex;
	__u8 family;
	__u8 proto;
	__u16 pad;
};

/*
 * Value of the fragments map: where the datagram's fragments go, and
 * bpf_ktime_get_ns() (CLOCK_MONOTONIC) when that was decided. An entry
 * older than xs_frag_ttl_ns counts as absent, as does a verdict other than
 * XS_FRAG_OURS or XS_FRAG_KERNEL.
 */
struct xs_frag_value {
	__u64 seen_ns;
	__u32 verdict;
	__u32 pad;
};

#define XS_FRAG_OURS 1	 /* redirected to the queue's AF_XDP socket */
#define XS_FRAG_KERNEL 2 /* given to the kernel */

/* Linux's default ipfrag_time (and ip6frag_time): how long the kernel
 * waits for the rest of a datagram. The program's default for how long a
 * verdict holds; the loader sets it (xs_frag_ttl_ns). */
#define XS_FRAG_TTL_NS (30ULL * 1000000000ULL)

/* How long an entry of ours lives on after its datagram's last fragment:
 * time for fragments reordered behind it. */
#define XS_FRAG_GRACE_NS (100ULL * 1000000ULL)

/*
 * Counters, one set per CPU. Every packet adds one to exactly one of
 * pass and redirect and to exactly one reason counter; a hit adds its hit
 * counter (fragment_hit for a fragment) and, when the queue has no socket,
 * no_xsk. Malformed packets (the reasons trunc_eth to bad_tcp_offset) also
 * add malformed.
 *
 * The counters are named fields, so that bpftool map dump shows their
 * names; enum xs_counter numbers them in field order for the program,
 * which counts through XS_COUNT. Append new counters at the end of both
 * and name them in package loader.
 */
enum xs_counter {
	XS_C_PASS = 0,
	XS_C_REDIRECT,
	XS_C_MALFORMED,
	XS_C_NOT_IP,
	XS_C_VLAN_DEPTH,
	XS_C_FRAGMENT,
	XS_C_EXT_HEADER,
	XS_C_NOT_L4,
	XS_C_NO_MATCH,
	XS_C_EST_HIT,
	XS_C_LST_EXACT_HIT,
	XS_C_LST_WILDCARD_HIT,
	XS_C_NO_XSK,
	XS_C_TRUNC_ETH,
	XS_C_TRUNC_VLAN,
	XS_C_TRUNC_IP4,
	XS_C_TRUNC_IP6,
	XS_C_TRUNC_EXT,
	XS_C_TRUNC_UDP,
	XS_C_TRUNC_TCP,
	XS_C_BAD_VERSION,
	XS_C_BAD_IHL,
	XS_C_BAD_LENGTH,
	XS_C_BAD_TCP_OFFSET,
	XS_C_FRAGMENT_HIT,
	XS_C_UDP_MULTI_BUFFER,
	XS_C_OTHER_HOST,
	XS_C_NOT_LOCAL,
	XS_C_MAX,
};

/* The malformed reasons: XS_C_TRUNC_ETH up to XS_C_BAD_TCP_OFFSET. */
#define XS_C_FIRST_MALFORMED XS_C_TRUNC_ETH
#define XS_C_LAST_MALFORMED XS_C_BAD_TCP_OFFSET

struct xs_counters {
	__u64 pass;			/* given to the kernel */
	__u64 redirect;			/* redirected to the queue's AF_XDP socket */
	__u64 malformed;		/* broken headers; given to the kernel */
	__u64 not_ip;			/* neither IPv4 nor IPv6 (ARP, LLDP, ...) */
	__u64 vlan_depth;		/* more than two VLAN tags */
	__u64 fragment;			/* fragment passed: not UDP, IPv6 atomic, or the kernel's datagram */
	__u64 ext_header;		/* IPv6 extension header not walked, or too many */
	__u64 not_l4;			/* IP, but neither UDP nor TCP (ICMP, ...) */
	__u64 no_match;			/* UDP or TCP without an entry */
	__u64 established_hit;		/* established 5-tuple hit */
	__u64 listener_exact_hit;	/* listener hit on the destination address */
	__u64 listener_wildcard_hit;	/* listener hit on the zero address */
	__u64 no_xsk;			/* a hit whose queue has no socket: passed */
	__u64 truncated_eth;		/* frame shorter than an Ethernet header */
	__u64 truncated_vlan;		/* VLAN tag cut */
	__u64 truncated_ipv4;		/* IPv4 header or its options cut */
	__u64 truncated_ipv6;		/* IPv6 fixed header cut */
	__u64 truncated_ext;		/* IPv6 extension header cut */
	__u64 truncated_udp;		/* UDP header cut */
	__u64 truncated_tcp;		/* TCP fixed header cut */
	__u64 bad_version;		/* IP version field does not match the ethertype */
	__u64 bad_ihl;			/* IPv4 IHL below 5 */
	__u64 bad_length;		/* an IP or UDP length field disagrees with the frame */
	__u64 bad_tcp_offset;		/* TCP data offset below 5 or beyond the segment */
	__u64 fragment_hit;		/* UDP fragment of a datagram steered to the socket */
	__u64 udp_multi_buffer;		/* UDP in more than one buffer (a segmentation offload burst,
					 * or a datagram longer than a frame): given to the kernel */
	__u64 other_host;		/* to another unicast MAC than the interface's, or tagged
					 * with a VLAN id: given to the kernel */
	__u64 not_local;		/* a wildcard listener's port, to an address not the
					 * namespace's (routed through, a broadcast): given to
					 * the kernel */
};

_Static_assert(sizeof(struct xs_counters) == XS_C_MAX * sizeof(__u64), "enum xs_counter numbers every field of xs_counters");

/* XS_COUNT adds one to counter c (an enum xs_counter) of cnt. */
#define XS_COUNT(cnt, c) (((__u64 *)(cnt))[(c)]++)

#endif /* XSESSION_H */
