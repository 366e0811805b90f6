// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * xsessiond's XDP program.
 *
 * Per packet, in this order: an established 5-tuple hit, a listener hit on
 * (ifindex, proto, family, destination address, port), a listener hit on the
 * same with the zero address. A hit is redirected to the AF_XDP socket of
 * the receiving queue (xsks[rx_queue_index]); when that queue has no socket
 * bpf_redirect_map falls back to XDP_PASS. Everything else, including every
 * malformed or unparsed packet and every fragment that is not UDP, goes to
 * the kernel (XDP_PASS): the program never drops.
 *
 * A port index (see xsession.h) says which of the three lookups can hit for
 * the packet's transport, local port and family; the others are skipped.
 *
 * UDP fragments (IPv4 with MF or an offset, IPv6 with a fragment header
 * whose offset or M flag is set) go where the fragments map says their
 * datagram goes, so that all fragments of one datagram end up in one place
 * (the socket reassembles what it gets, the kernel what it gets):
 *  - the first fragment (offset 0) carries the UDP header: unless a fresh
 *    entry already gave the datagram to the kernel, the three lookups above
 *    decide, and a hit records the datagram as ours and is redirected;
 *  - a later fragment follows a fresh entry; without one (it came before
 *    the first) the datagram is recorded as the kernel's and passed, and
 *    so is its first fragment when it comes. An IPv6 later fragment is
 *    taken as UDP's whatever next header its fragment header names, as
 *    the kernel's reassembly takes the datagram's from the first fragment.
 * Entries expire after xs_frag_ttl_ns (the loader sets it to the daemon's
 * reassembly timeout; by default the kernel's, XS_FRAG_TTL_NS), and an
 * entry of ours XS_FRAG_GRACE_NS after its datagram's last fragment came:
 * a later datagram under the same identification is then decided afresh.
 *
 * Multi-buffer frames (xdp.frags): the headers are read from the first
 * buffer (a frame whose headers go past it is passed as truncated), the IP
 * length fields are checked against the whole frame. In generic mode on a
 * veth they are the segments of up to 64 KiB the peer's segmentation
 * offload builds: TCP ones are steered like any other (the AF_XDP socket
 * takes them as chains of descriptors), UDP ones go to the kernel
 * (udp_multi_buffer), which alone knows where each datagram ends.
 *
 * Parsed: Ethernet, up to two 802.1Q/802.1ad tags, IPv4 (any IHL >= 5),
 * IPv6 with up to XS_MAX_EXT hop-by-hop/routing/destination options
 * headers and then a fragment header, UDP and TCP. All loops are bounded
 * and unrolled.
 */
#include "xsession.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define XS_MAX_VLAN 2
#define XS_MAX_EXT 4

/* Sizes here are defaults; the loader sets them before creating the maps. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct xs_lst_key);
	__type(value, struct xs_value);
} listeners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct xs_est_key);
	__type(value, struct xs_value);
} established SEC(".maps");

/* The namespace's own addresses, when xs_check_local is set: a packet to
 * a wildcard listener's port whose destination is none of them is not for
 * this host (routed through it, or a broadcast, which the kernel hands the
 * port's reservation): the kernel's. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct xs_local_key);
	__type(value, __u32);
} locals SEC(".maps");

volatile const __u8 xs_check_local;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XS_PORT_ENTRIES);
	__type(key, __u32);
	__type(value, __u32);
} ports SEC(".maps");

/* Where the fragments of a UDP datagram go (struct xs_frag_value). LRU:
 * entries are never deleted, the oldest make room for new datagrams. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, struct xs_frag_key);
	__type(value, struct xs_frag_value);
} fragments SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xs_counters);
} counters SEC(".maps");

static __always_inline int xs_pass(struct xs_counters *cnt, __u32 reason)
{
	if (reason >= XS_C_MAX)
		reason = XS_C_MALFORMED;
	XS_COUNT(cnt, XS_C_PASS);
	XS_COUNT(cnt, reason);
	if (reason >= XS_C_FIRST_MALFORMED && reason <= XS_C_LAST_MALFORMED)
		XS_COUNT(cnt, XS_C_MALFORMED);
	return XDP_PASS;
}

static __always_inline int xs_hit(struct xdp_md *ctx, struct xs_counters *cnt, __u32 reason)
{
	if (reason >= XS_C_MAX)
		reason = XS_C_MALFORMED;
	XS_COUNT(cnt, reason);
	if (bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS) == XDP_REDIRECT) {
		XS_COUNT(cnt, XS_C_REDIRECT);
		return XDP_REDIRECT;
	}
	XS_COUNT(cnt, XS_C_NO_XSK);
	XS_COUNT(cnt, XS_C_PASS);
	return XDP_PASS;
}

/* Extension headers the program does not walk: their packets go to the
 * kernel, counted as XS_C_EXT_HEADER. */
static __always_inline int xs_ip6_other_ext(__u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING || nh == IPPROTO_DSTOPTS ||
	       nh == IPPROTO_AH || nh == IPPROTO_ESP || nh == IPPROTO_MH || nh == IPPROTO_HIP ||
	       nh == IPPROTO_SHIM6 || nh == IPPROTO_EXP1 || nh == IPPROTO_EXP2;
}

/* xs_ip6_addrs fills k's addresses and family from an IPv6 header. */
static __always_inline void xs_ip6_addrs(struct xs_est_key *k, struct xs_ip6 *ip6)
{
	__u32 *lo = (__u32 *)&k->local[0];
	__u32 *re = (__u32 *)&k->remote[0];

	lo[0] = ip6->daddr[0];
	lo[1] = ip6->daddr[1];
	lo[2] = ip6->daddr[2];
	lo[3] = ip6->daddr[3];
	re[0] = ip6->saddr[0];
	re[1] = ip6->saddr[1];
	re[2] = ip6->saddr[2];
	re[3] = ip6->saddr[3];
	k->family = XS_FAMILY6;
}

/*
 * The lookups of a parsed packet whose key k is filled in: returns the
 * reason counter of the hit, or XS_C_NO_MATCH.
 */
static __always_inline __u32 xs_match(struct xs_est_key *k)
{
	struct xs_lst_key lk;

	/* Which lookups can hit: the port index's bits for this family. */
	__u32 pidx = XS_PORT_INDEX(k->proto, k->local_port);
	__u32 *pbits = bpf_map_lookup_elem(&ports, &pidx);
	__u32 bits = pbits ? *pbits : ~0U;
	if (k->family == XS_FAMILY6)
		bits >>= 1;

	if ((bits & XS_PORT_EST4) && bpf_map_lookup_elem(&established, k))
		return XS_C_EST_HIT;
	if (!(bits & (XS_PORT_EXACT4 | XS_PORT_WILD4)))
		return XS_C_NO_MATCH;

	__u32 *la = (__u32 *)&lk.addr[0];
	__u32 *ka = (__u32 *)&k->local[0];
	lk.ifindex = k->ifindex;
	la[0] = ka[0];
	la[1] = ka[1];
	la[2] = ka[2];
	la[3] = ka[3];
	lk.port = k->local_port;
	lk.proto = k->proto;
	lk.family = k->family;
	/* A zero destination would look up the wildcard entry as exact. */
	if ((bits & XS_PORT_EXACT4) && (ka[0] | ka[1] | ka[2] | ka[3]) &&
	    bpf_map_lookup_elem(&listeners, &lk))
		return XS_C_LST_EXACT_HIT;
	if (!(bits & XS_PORT_WILD4))
		return XS_C_NO_MATCH;

	la[0] = 0;
	la[1] = 0;
	la[2] = 0;
	la[3] = 0;
	if (!bpf_map_lookup_elem(&listeners, &lk))
		return XS_C_NO_MATCH;
	if (xs_check_local) {
		struct xs_local_key lo = {.family = k->family};
		__u32 *loa = (__u32 *)&lo.addr[0];

		loa[0] = ka[0];
		loa[1] = ka[1];
		loa[2] = ka[2];
		loa[3] = ka[3];
		if (!bpf_map_lookup_elem(&locals, &lo))
			return XS_C_NOT_LOCAL;
	}
	return XS_C_LST_WILDCARD_HIT;
}

/* xs_is_hit reports whether a verdict of xs_match steers the packet. */
static __always_inline int xs_is_hit(__u32 reason)
{
	return reason != XS_C_NO_MATCH && reason != XS_C_NOT_LOCAL;
}

/* The interface's MAC (set by the loader, and by the daemon again when
 * the interface's changes: a variable, not a constant; all zero: not
 * looked at). A unicast frame to another MAC is another host's, which the
 * kernel drops or hands to a bridge or a macvlan on this interface: never
 * steered. */
volatile __u8 xs_mac[6];

/* xs_other_host reports whether d, a frame's destination MAC, is another
 * host's unicast address. */
static __always_inline int xs_other_host(const __u8 *d)
{
	if (d[0] & 1)
		return 0; /* broadcast, multicast */
	if (!(xs_mac[0] | xs_mac[1] | xs_mac[2] | xs_mac[3] | xs_mac[4] | xs_mac[5]))
		return 0;
	return (d[0] ^ xs_mac[0]) | (d[1] ^ xs_mac[1]) | (d[2] ^ xs_mac[2]) | (d[3] ^ xs_mac[3]) |
	       (d[4] ^ xs_mac[4]) | (d[5] ^ xs_mac[5]);
}

/* How long a verdict of the fragments map holds (set by the loader). */
volatile const __u64 xs_frag_ttl_ns = XS_FRAG_TTL_NS;

/* xs_frag_set records where the datagram of fk goes; 0 on success. */
static __always_inline long xs_frag_set(struct xs_frag_key *fk, __u64 now, __u32 verdict)
{
	struct xs_frag_value v = {.seen_ns = now, .verdict = verdict};

	return bpf_map_update_elem(&fragments, fk, &v, BPF_ANY);
}

/*
 * A UDP fragment. k holds its addresses and family; id is the datagram's
 * identification in host order; later is set when the fragment's offset is
 * not zero, last when no fragment follows it (MF clear). For a first
 * fragment, l4 is its UDP header, l4len the bytes
 * from there to the end of the IP payload, and len_bad says that an IP
 * length field disagrees with the frame.
 */
static __always_inline int xs_frag(struct xdp_md *ctx, struct xs_counters *cnt, struct xs_est_key *k,
				   __u32 id, int later, int last, void *l4, void *end, int len_bad, __u32 l4len)
{
	struct xs_frag_key fk;
	struct xs_frag_value *e;
	__u32 verdict = 0, reason;
	__u64 now;

	__builtin_memset(&fk, 0, sizeof(fk));
	__u32 *fs = (__u32 *)&fk.src[0];
	__u32 *fd = (__u32 *)&fk.dst[0];
	__u32 *kr = (__u32 *)&k->remote[0];
	__u32 *kl = (__u32 *)&k->local[0];
	fs[0] = kr[0];
	fs[1] = kr[1];
	fs[2] = kr[2];
	fs[3] = kr[3];
	fd[0] = kl[0];
	fd[1] = kl[1];
	fd[2] = kl[2];
	fd[3] = kl[3];
	fk.id = id;
	fk.ifindex = ctx->ingress_ifindex;
	fk.family = k->family;
	fk.proto = IPPROTO_UDP;

	now = bpf_ktime_get_ns();
	e = bpf_map_lookup_elem(&fragments, &fk);
	if (e && now - e->seen_ns < xs_frag_ttl_ns)
		verdict = e->verdict;

	if (later) {
		if (verdict == XS_FRAG_OURS) {
			/* The datagram's last fragment: what is still to come
			 * of it is late, so the entry lives XS_FRAG_GRACE_NS
			 * more at most, and a later datagram under the same
			 * identification (IPv4's 16 bits wrap) is decided by
			 * its own first fragment, not taken for this one. */
			if (e && last && now - e->seen_ns + XS_FRAG_GRACE_NS < xs_frag_ttl_ns)
				e->seen_ns = now - xs_frag_ttl_ns + XS_FRAG_GRACE_NS;
			return xs_hit(ctx, cnt, XS_C_FRAGMENT_HIT);
		}
		/* Ahead of its first fragment, or of a datagram the kernel
		 * has: the kernel's. A failed update changes nothing here. */
		if (verdict != XS_FRAG_KERNEL)
			xs_frag_set(&fk, now, XS_FRAG_KERNEL);
		return xs_pass(cnt, XS_C_FRAGMENT);
	}
	if (verdict == XS_FRAG_KERNEL)
		return xs_pass(cnt, XS_C_FRAGMENT);

	/* The first fragment decides by its UDP header. Its length field is
	 * the whole datagram's, beyond this fragment: only ulen < 8 is bad. */
	struct xs_udp *u = l4;
	if ((void *)(u + 1) > end) {
		reason = XS_C_TRUNC_UDP;
	} else if (len_bad || l4len < sizeof(*u) || bpf_ntohs(u->len) < sizeof(*u)) {
		reason = XS_C_BAD_LENGTH;
	} else {
		k->local_port = u->dport;
		k->remote_port = u->sport;
		k->proto = IPPROTO_UDP;
		k->ifindex = ctx->ingress_ifindex;
		reason = XS_C_FRAGMENT;
		/* A failed update passes: no later fragment could follow. */
		if (xs_is_hit(xs_match(k)) && xs_frag_set(&fk, now, XS_FRAG_OURS) == 0)
			return xs_hit(ctx, cnt, XS_C_FRAGMENT_HIT);
	}
	/*
	 * Passed, so the later fragments must go to the kernel too. Only a
	 * fresh "ours" entry would send them elsewhere, so only that one is
	 * overwritten; without an entry (or with a stale one) the next later
	 * fragment records the kernel's verdict itself. The kernel's own
	 * datagrams thus cost one map update each, made by their second
	 * fragment, and none when only the first fragment arrives.
	 */
	if (verdict == XS_FRAG_OURS)
		xs_frag_set(&fk, now, XS_FRAG_KERNEL);
	return xs_pass(cnt, reason);
}

/* xs_past returns the bytes of a frame of flen bytes past offset off. The
 * barrier keeps the compiler from folding the subtraction into pointer
 * arithmetic on the frame, which the verifier refuses with flen unbounded. */
static __always_inline __u64 xs_past(__u64 flen, __u64 off)
{
	asm volatile("" : "+r"(off));
	return flen - off;
}

/* xs_ip6_big reports whether the extension headers (extlen bytes of them)
 * of an IPv6 packet whose payload length is 0 are those of a BIG TCP
 * segment: none (as recent Linux sends one), or one hop-by-hop header of 8
 * bytes holding the jumbo payload option (as Linux did before). */
static __always_inline int xs_ip6_big(struct xs_ip6 *ip6, __u32 extlen, void *end)
{
	__u8 *h = (__u8 *)(ip6 + 1);

	if (extlen == 0)
		return 1;
	if (extlen != 8 || ip6->nexthdr != IPPROTO_HOPOPTS || (void *)(h + 8) > end)
		return 0;
	return h[1] == 0 && h[2] == XS_IP6_OPT_JUMBO && h[3] == 4;
}

SEC("xdp.frags")
int xsession_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	/* The whole frame: a multi-buffer one's fragments are not between
	 * data and end, which hold its headers. */
	__u64 flen = bpf_xdp_get_buff_len(ctx);
	__u32 zero = 0;
	struct xs_counters *cnt;
	struct xs_est_key k;
	__u32 l4len = 0; /* bytes from the L4 header to the end of the IP payload */
	int len_bad = 0; /* an IP length field disagrees with the frame */
	__u32 reason;
	__u8 proto;
	void *p, *l4;
	__be16 h_proto;
	int i;

	cnt = bpf_map_lookup_elem(&counters, &zero);
	if (!cnt)
		return XDP_PASS;

	struct xs_eth *eth = data;
	if ((void *)(eth + 1) > end)
		return xs_pass(cnt, XS_C_TRUNC_ETH);
	if (xs_other_host(eth->dst))
		return xs_pass(cnt, XS_C_OTHER_HOST);
	h_proto = eth->proto;
	p = eth + 1;

#pragma unroll
	for (i = 0; i < XS_MAX_VLAN; i++) {
		if (h_proto != bpf_htons(ETH_P_8021Q) && h_proto != bpf_htons(ETH_P_8021AD))
			break;
		struct xs_vlan *v = p;
		if ((void *)(v + 1) > end)
			return xs_pass(cnt, XS_C_TRUNC_VLAN);
		/* A VLAN's frame is for its VLAN device, which the daemon does
		 * not serve on this one; a priority tag (id 0) is this one's. */
		if (v->tci & bpf_htons(0x0fff))
			return xs_pass(cnt, XS_C_OTHER_HOST);
		h_proto = v->proto;
		p = v + 1;
	}
	if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD))
		return xs_pass(cnt, XS_C_VLAN_DEPTH);

	__builtin_memset(&k, 0, sizeof(k));

	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct xs_ip4 *ip = p;
		__u32 ihl, tot;
		int frag = 0;

		if ((void *)(ip + 1) > end)
			return xs_pass(cnt, XS_C_TRUNC_IP4);
		if ((ip->ver_ihl >> 4) != 4)
			return xs_pass(cnt, XS_C_BAD_VERSION);
		ihl = (__u32)(ip->ver_ihl & 0x0f) << 2;
		if (ihl < sizeof(*ip))
			return xs_pass(cnt, XS_C_BAD_IHL);
		if (p + ihl > end)
			return xs_pass(cnt, XS_C_TRUNC_IP4);
		proto = ip->proto;
		if (ip->frag_off & bpf_htons(XS_IP4_MF | XS_IP4_OFFSET)) {
			if (proto != IPPROTO_UDP)
				return xs_pass(cnt, XS_C_FRAGMENT);
			frag = 1;
		} else if (proto != IPPROTO_UDP && proto != IPPROTO_TCP) {
			return xs_pass(cnt, XS_C_NOT_L4);
		}
		tot = bpf_ntohs(ip->tot_len);
		if (tot == 0 && proto == IPPROTO_TCP && !frag && xs_past(flen, p - data) > XS_IP_MAX_LEN)
			/* BIG TCP: a segment longer than the field holds says 0;
			 * the frame's length is the packet's. */
			l4len = xs_past(flen, p - data) - ihl;
		else if (tot < ihl || (__u64)(p - data) + tot > flen)
			len_bad = 1;
		else
			l4len = tot - ihl;
		*(__u32 *)&k.local[0] = ip->daddr;
		*(__u32 *)&k.remote[0] = ip->saddr;
		k.family = XS_FAMILY4;
		l4 = p + ihl;
		if (frag)
			return xs_frag(ctx, cnt, &k, bpf_ntohs(ip->id), !!(ip->frag_off & bpf_htons(XS_IP4_OFFSET)),
				       !(ip->frag_off & bpf_htons(XS_IP4_MF)),
				       l4, end, len_bad, l4len);
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct xs_ip6 *ip6 = p;
		__u32 plen, extlen = 0;
		__u8 nh;

		if ((void *)(ip6 + 1) > end)
			return xs_pass(cnt, XS_C_TRUNC_IP6);
		if ((ip6->ver_tc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000))
			return xs_pass(cnt, XS_C_BAD_VERSION);
		plen = bpf_ntohs(ip6->payload_len);
		nh = ip6->nexthdr;
		l4 = ip6 + 1;
#pragma unroll
		for (i = 0; i < XS_MAX_EXT; i++) {
			struct xs_ip6_ext *e = l4;
			__u32 elen;

			if (nh != IPPROTO_HOPOPTS && nh != IPPROTO_ROUTING && nh != IPPROTO_DSTOPTS)
				break;
			if (l4 + 8 > end)
				return xs_pass(cnt, XS_C_TRUNC_EXT);
			elen = ((__u32)e->hdrlen + 1) << 3;
			if (l4 + elen > end)
				return xs_pass(cnt, XS_C_TRUNC_EXT);
			nh = e->nexthdr;
			l4 += elen;
			extlen += elen;
		}
		if (nh == IPPROTO_FRAGMENT) {
			struct xs_ip6_frag *f = l4;

			if ((void *)(f + 1) > end)
				return xs_pass(cnt, XS_C_TRUNC_EXT);
			/* An atomic fragment (offset 0, M clear) is the
			 * kernel's, as is a first fragment that is not UDP. A
			 * later fragment's next header is not looked at: the
			 * kernel's reassembly takes the datagram's from its
			 * first fragment, so a later one goes where its first
			 * goes whatever it says. */
			if (!(f->frag_off & bpf_htons(XS_IP6_OFFSET | XS_IP6_MF)) ||
			    (!(f->frag_off & bpf_htons(XS_IP6_OFFSET)) && f->nexthdr != IPPROTO_UDP))
				return xs_pass(cnt, XS_C_FRAGMENT);
			extlen += sizeof(*f);
			if ((__u64)((void *)(ip6 + 1) - data) + plen > flen || extlen > plen)
				len_bad = 1;
			else
				l4len = plen - extlen;
			xs_ip6_addrs(&k, ip6);
			return xs_frag(ctx, cnt, &k, bpf_ntohl(f->id), !!(f->frag_off & bpf_htons(XS_IP6_OFFSET)),
				       !(f->frag_off & bpf_htons(XS_IP6_MF)),
				       f + 1, end, len_bad, l4len);
		}
		if (nh != IPPROTO_UDP && nh != IPPROTO_TCP)
			return xs_pass(cnt, xs_ip6_other_ext(nh) ? XS_C_EXT_HEADER : XS_C_NOT_L4);
		proto = nh;
		if (plen == 0 && nh == IPPROTO_TCP && xs_ip6_big(ip6, extlen, end) &&
		    xs_past(flen, (void *)(ip6 + 1) - data) > XS_IP_MAX_LEN)
			/* BIG TCP: payload length 0, the frame's length is the
			 * packet's. */
			l4len = xs_past(flen, l4 - data);
		else if ((__u64)((void *)(ip6 + 1) - data) + plen > flen || extlen > plen)
			len_bad = 1;
		else
			l4len = plen - extlen;
		xs_ip6_addrs(&k, ip6);
	} else {
		return xs_pass(cnt, XS_C_NOT_IP);
	}

	/* Header presence first (truncated-*), then the length fields. */
	if (proto == IPPROTO_UDP) {
		struct xs_udp *u = l4;
		__u32 ulen;

		if ((void *)(u + 1) > end)
			return xs_pass(cnt, XS_C_TRUNC_UDP);
		ulen = bpf_ntohs(u->len);
		if (len_bad || ulen < sizeof(*u) || ulen > l4len)
			return xs_pass(cnt, XS_C_BAD_LENGTH);
		/* A segmentation offload burst (several datagrams under one
		 * header, which no longer says where each ends) or a datagram
		 * longer than a frame: the kernel segments the one and
		 * delivers both to the port's socket, the daemon's
		 * reservation, which reads them into the app's fifo. */
		if (flen > (__u64)(end - data))
			return xs_pass(cnt, XS_C_UDP_MULTI_BUFFER);
		k.local_port = u->dport;
		k.remote_port = u->sport;
	} else {
		struct xs_tcp *t = l4;
		__u32 doff;

		if ((void *)(t + 1) > end)
			return xs_pass(cnt, XS_C_TRUNC_TCP);
		if (len_bad || l4len < sizeof(*t))
			return xs_pass(cnt, XS_C_BAD_LENGTH);
		doff = (__u32)(t->doff_res >> 4) << 2;
		if (doff < sizeof(*t) || doff > l4len)
			return xs_pass(cnt, XS_C_BAD_TCP_OFFSET);
		k.local_port = t->dport;
		k.remote_port = t->sport;
	}
	k.proto = proto;
	k.ifindex = ctx->ingress_ifindex;

	reason = xs_match(&k);
	if (!xs_is_hit(reason))
		return xs_pass(cnt, reason);
	return xs_hit(ctx, cnt, reason);
}

char _license[] SEC("license") = "Dual BSD/GPL";
