// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The reference steering program: the least any XDP program that steers
 * bound flows to AF_XDP sockets must do per packet, as the baseline of
 * loader's BenchmarkXDPProgram. It is never attached by the daemon.
 *
 * Parsed: Ethernet, IPv4 (any IHL >= 5, fragments passed), IPv6 (fixed
 * header only), and the two ports of UDP or TCP. Then ONE hash lookup on
 * the 5-tuple, in the key layout of xsession.c's established map (so the
 * hash covers the same bytes), and on a hit a redirect to the AF_XDP socket
 * of the receiving queue; everything else is XDP_PASS. No VLAN tags, no
 * IPv6 extension headers, no length checks beyond what is read, no port
 * index, no listener lookups, no counters.
 */
#include "xsession.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct xs_est_key);
	__type(value, struct xs_value);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

SEC("xdp")
int reference_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct xs_est_key k;
	struct xs_udp *ports; /* the first 4 bytes of UDP and TCP are the ports */
	void *p;

	struct xs_eth *eth = data;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	p = eth + 1;

	__builtin_memset(&k, 0, sizeof(k));

	if (eth->proto == bpf_htons(ETH_P_IP)) {
		struct xs_ip4 *ip = p;
		__u32 ihl;

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		ihl = (__u32)(ip->ver_ihl & 0x0f) << 2;
		if (ihl < sizeof(*ip))
			return XDP_PASS;
		if (ip->frag_off & bpf_htons(XS_IP4_MF | XS_IP4_OFFSET))
			return XDP_PASS;
		k.proto = ip->proto;
		*(__u32 *)&k.local[0] = ip->daddr;
		*(__u32 *)&k.remote[0] = ip->saddr;
		k.family = XS_FAMILY4;
		ports = p + ihl;
	} else if (eth->proto == bpf_htons(ETH_P_IPV6)) {
		struct xs_ip6 *ip6 = p;

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		k.proto = ip6->nexthdr;
		__builtin_memcpy(k.local, ip6->daddr, 16);
		__builtin_memcpy(k.remote, ip6->saddr, 16);
		k.family = XS_FAMILY6;
		ports = (void *)(ip6 + 1);
	} else {
		return XDP_PASS;
	}
	if (k.proto != IPPROTO_UDP && k.proto != IPPROTO_TCP)
		return XDP_PASS;
	if ((void *)ports + 4 > end)
		return XDP_PASS;
	k.local_port = ports->dport;
	k.remote_port = ports->sport;
	k.ifindex = ctx->ingress_ifindex;

	if (!bpf_map_lookup_elem(&flows, &k))
		return XDP_PASS;
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
