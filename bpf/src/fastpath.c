// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Strata's pod fast path. Two tc ingress programs:
//
//   from_pod     on the host side of every pod veth (traffic leaving a pod)
//   from_netdev  on the uplink / VXLAN device (traffic arriving for pods)
//
// A packet to a pod on this node goes straight into that pod's namespace with
// bpf_redirect_peer. A packet from a pod to anywhere else is forwarded after a
// FIB lookup with bpf_redirect_neigh. Everything else (ARP, fragments, TTL
// expiry, unknown sources, no route, MTU trouble, local delivery) is handed
// to the kernel stack unchanged: the programs never drop.
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <stddef.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "fastpath.h"

char __license[] SEC("license") = "Dual BSD/GPL";

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#ifndef PACKET_HOST
#define PACKET_HOST 0
#endif

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
#define NEXTHDR_FRAGMENT 44
#define TCP_FLAGS_OFF 13 // the flags byte of the TCP header
#define TCP_FLAG_SYN 0x02

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint);
} endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct endpoint_key);
	__type(value, struct pod_stats);
} pod_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PATH_MAX_ID);
	__type(key, __u32);
	__type(value, struct counter);
} path_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} settings SEC(".maps");

// The cluster's pod prefixes: only destinations inside them are forwarded by
// FIB lookup. Anything else (ClusterIPs that kube-proxy DNATs, the internet
// that gets masqueraded) needs the stack's netfilter hooks.
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct pod_prefix);
	__type(value, __u8);
} pod_prefixes SEC(".maps");

// nat_cache remembers conntrack's NAT verdict for TCP flows, so a packet in
// the middle of a connection costs one hash lookup instead of a conntrack
// lookup. A flow's NAT state is fixed when conntrack creates its entry, at
// the connection's first packet, so the verdict is re-read from conntrack
// on every SYN (and SYN-ACK): each new connection on a reused tuple starts
// with one in both directions, and a stale verdict can never outlive the
// handshake that replaced it. A miss (eviction, a restarted agent) asks
// conntrack too. UDP has no handshake and always asks conntrack. Shared,
// not per-CPU: a verdict refreshed on one CPU holds on all.
struct flow_key {
	__u32 saddr[4];
	__u32 daddr[4];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct flow_key);
	__type(value, __u8);
} nat_cache SEC(".maps");

// Conntrack kfuncs (nf_conntrack's BPF interface, Linux 6.0+). A flow with
// NAT state must go through the stack so replies are un-NATed: that is how
// kube-proxy's service replies keep working with the fast path on.
struct nf_conn {
	unsigned long status;
} __attribute__((preserve_access_index));

struct bpf_ct_opts___local {
	__s32 netns_id;
	__s32 error;
	__u8 l4proto;
	__u8 dir;
	__u8 reserved[2];
};

#define IPS_SRC_NAT (1 << 4)
#define IPS_DST_NAT (1 << 5)
#define CT_OPTS_SZ 12

extern struct nf_conn *bpf_skb_ct_lookup(struct __sk_buff *, struct bpf_sock_tuple *, __u32,
					 struct bpf_ct_opts___local *, __u32) __ksym;
extern void bpf_ct_release(struct nf_conn *) __ksym;

static __always_inline void count_path(__u32 path, __u64 bytes)
{
	struct counter *c = bpf_map_lookup_elem(&path_counters, &path);
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline void count_pod(struct endpoint_key *src, __u32 slot, __u64 bytes)
{
	struct pod_stats *s = bpf_map_lookup_elem(&pod_counters, src);
	if (!s) {
		struct pod_stats zero = {};
		bpf_map_update_elem(&pod_counters, src, &zero, BPF_NOEXIST);
		s = bpf_map_lookup_elem(&pod_counters, src);
		if (!s)
			return;
	}
	if (slot < POD_SLOTS) {
		s->c[slot].packets++;
		s->c[slot].bytes += bytes;
	}
}

static __always_inline int enabled(void)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&settings, &zero);
	return cfg && cfg->enabled;
}

static __always_inline void key4(struct endpoint_key *k, __be32 addr)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->addr[2] = bpf_htonl(0xffff);
	k->addr[3] = addr;
}

static __always_inline void key6(struct endpoint_key *k, const struct in6_addr *a)
{
	__builtin_memcpy(k->addr, a->in6_u.u6_addr32, 16);
}

// pass hands the packet to the stack and counts why.
static __always_inline int pass(__u32 path, __u64 bytes, struct endpoint_key *src)
{
	count_path(path, bytes);
	if (src)
		count_pod(src, POD_SLOT_STACK, bytes);
	return TC_ACT_OK;
}

// dec_ttl4 does what IP forwarding does to the header (the kernel's
// ip_decrease_ttl): the checksum is patched incrementally in place. Direct
// writes instead of bpf_l3_csum_replace and bpf_skb_store_bytes spare three
// helper calls per packet; the verifier's prologue has already made the
// header private (unshared with TCP's retransmit clone) for direct writes.
static __always_inline void dec_ttl4(struct iphdr *ip)
{
	__u32 check = (__u32)ip->check;
	check += (__u32)bpf_htons(0x0100);
	ip->check = (__sum16)(check + (check >= 0xFFFF));
	ip->ttl--;
}

// has_nat looks the TCP/UDP flow up in conntrack; true if it is NATed.
static __always_inline int has_nat(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen, __u8 proto)
{
	struct bpf_ct_opts___local opts = {.netns_id = -1, .l4proto = proto};
	struct nf_conn *ct = bpf_skb_ct_lookup(skb, t, tlen, &opts, CT_OPTS_SZ);
	if (!ct)
		return 0;
	int nat = (ct->status & (IPS_SRC_NAT | IPS_DST_NAT)) != 0;
	bpf_ct_release(ct);
	return nat;
}

// flow_natted answers has_nat, through nat_cache for TCP (see there).
static __always_inline int flow_natted(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 tlen, __u8 proto,
				       __u8 tcp_flags, struct endpoint_key *src, struct endpoint_key *dst)
{
	if (proto != IPPROTO_TCP)
		return has_nat(skb, t, tlen, proto);
	struct flow_key k = {.sport = t->ipv4.sport, .dport = t->ipv4.dport, .proto = proto};
	if (tlen == sizeof(t->ipv6)) {
		k.sport = t->ipv6.sport;
		k.dport = t->ipv6.dport;
	}
	__builtin_memcpy(k.saddr, src->addr, 16);
	__builtin_memcpy(k.daddr, dst->addr, 16);
	if (!(tcp_flags & TCP_FLAG_SYN)) {
		__u8 *v = bpf_map_lookup_elem(&nat_cache, &k);
		if (v)
			return *v;
	}
	__u8 nat = has_nat(skb, t, tlen, proto);
	bpf_map_update_elem(&nat_cache, &k, &nat, BPF_ANY);
	return nat;
}

static __always_inline int handle(struct __sk_buff *skb, int from_pod)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u64 bytes = skb->len;
	struct ethhdr *eth = data;
	struct endpoint_key src = {}, dst = {};
	struct bpf_fib_lookup fib = {};
	struct endpoint *sep, *dep;
	struct iphdr *ip = NULL;
	struct ipv6hdr *ip6 = NULL;
	__u16 proto;
	int ipv6;

	if (!enabled())
		return pass(PATH_DISABLED, bytes, NULL);
	if ((void *)(eth + 1) > end)
		return pass(PATH_STACK_MALFORMED, bytes, NULL);
	proto = eth->h_proto;

	if (proto == bpf_htons(ETH_P_IP)) {
		ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > end || ip->ihl < 5)
			return pass(PATH_STACK_MALFORMED, bytes, NULL);
		ipv6 = 0;
		key4(&src, ip->saddr);
		key4(&dst, ip->daddr);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > end)
			return pass(PATH_STACK_MALFORMED, bytes, NULL);
		ipv6 = 1;
		key6(&src, &ip6->saddr);
		key6(&dst, &ip6->daddr);
	} else {
		return pass(PATH_STACK_NOT_IP, bytes, NULL);
	}
	// Only frames sent to this host are ours to forward: the stack drops
	// frames for other MACs (flooded on a bridge, or spoofed by a pod), and
	// leaves broadcast and multicast to their handlers.
	if (skb->pkt_type != PACKET_HOST)
		return pass(PATH_STACK_OTHER_HOST, bytes, NULL);

	// From a pod, only a registered source on its own veth is fast-pathed:
	// anything else (spoofing, a pod not yet written) takes the normal path.
	sep = NULL;
	if (from_pod) {
		sep = bpf_map_lookup_elem(&endpoints, &src);
		if (!sep || sep->ifindex != skb->ifindex)
			return pass(PATH_STACK_UNKNOWN_SOURCE, bytes, NULL);
	}
	struct endpoint_key *srck = from_pod ? &src : NULL;

	if (!ipv6) {
		if (ip->frag_off & bpf_htons(IP_MF | IP_OFFSET))
			return pass(PATH_STACK_FRAGMENT, bytes, srck);
		if (ip->ttl <= 1)
			return pass(PATH_STACK_TTL, bytes, srck);
	} else {
		if (ip6->nexthdr == NEXTHDR_FRAGMENT)
			return pass(PATH_STACK_FRAGMENT, bytes, srck);
		if (ip6->hop_limit <= 1)
			return pass(PATH_STACK_TTL, bytes, srck);
		// Link-local and multicast (neighbour discovery) belong to the stack.
		__u8 d0 = ((__u8 *)&ip6->daddr)[0], d1 = ((__u8 *)&ip6->daddr)[1];
		if (d0 == 0xff || (d0 == 0xfe && (d1 & 0xc0) == 0x80))
			return pass(PATH_STACK_LINK_LOCAL, bytes, srck);
	}

	// Flows that conntrack NATs (kube-proxy services, masquerade) must keep
	// going through netfilter in both directions.
	struct bpf_sock_tuple tup = {};
	__u32 tlen = 0;
	__u8 l4, tcp_flags = 0;
	if (!ipv6) {
		l4 = ip->protocol;
		if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP) {
			__be16 *ports = (void *)ip + ip->ihl * 4;
			if ((void *)(ports + 2) > end)
				return pass(PATH_STACK_MALFORMED, bytes, srck);
			if (l4 == IPPROTO_TCP) {
				if ((void *)ports + TCP_FLAGS_OFF + 1 > end)
					return pass(PATH_STACK_MALFORMED, bytes, srck);
				tcp_flags = *((__u8 *)ports + TCP_FLAGS_OFF);
			}
			tup.ipv4.saddr = ip->saddr;
			tup.ipv4.daddr = ip->daddr;
			tup.ipv4.sport = ports[0];
			tup.ipv4.dport = ports[1];
			tlen = sizeof(tup.ipv4);
		}
	} else {
		l4 = ip6->nexthdr;
		if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP) {
			__be16 *ports = (void *)(ip6 + 1);
			if ((void *)(ports + 2) > end)
				return pass(PATH_STACK_MALFORMED, bytes, srck);
			if (l4 == IPPROTO_TCP) {
				if ((void *)ports + TCP_FLAGS_OFF + 1 > end)
					return pass(PATH_STACK_MALFORMED, bytes, srck);
				tcp_flags = *((__u8 *)ports + TCP_FLAGS_OFF);
			}
			__builtin_memcpy(tup.ipv6.saddr, src.addr, 16);
			__builtin_memcpy(tup.ipv6.daddr, dst.addr, 16);
			tup.ipv6.sport = ports[0];
			tup.ipv6.dport = ports[1];
			tlen = sizeof(tup.ipv6);
		} else if (l4 != IPPROTO_ICMPV6) {
			return pass(PATH_STACK_IPV6_EXT, bytes, srck);
		}
	}
	if (tlen && flow_natted(skb, &tup, tlen, l4, tcp_flags, &src, &dst))
		return pass(PATH_STACK_NAT, bytes, srck);

	dep = bpf_map_lookup_elem(&endpoints, &dst);
	if (dep) {
		if (dep->ifindex == skb->ifindex)
			return pass(PATH_STACK_HAIRPIN, bytes, srck);
		__u32 ifindex = dep->ifindex;
		if (!ipv6)
			dec_ttl4(ip);
		else
			ip6->hop_limit--;
		__builtin_memcpy(eth->h_dest, dep->pod_mac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, dep->host_mac, ETH_ALEN);
		count_path(PATH_LOCAL, bytes);
		if (srck)
			count_pod(srck, POD_SLOT_LOCAL, bytes);
		return bpf_redirect_peer(ifindex, 0);
	}

	// Not a local pod. Traffic arriving on the uplink for somewhere else is
	// the stack's business; traffic from a pod is forwarded by FIB lookup.
	if (!from_pod)
		return pass(PATH_STACK_NOT_LOCAL, bytes, NULL);
	struct pod_prefix pk = {.prefixlen = 128};
	__builtin_memcpy(pk.addr, dst.addr, 16);
	if (!bpf_map_lookup_elem(&pod_prefixes, &pk))
		return pass(PATH_STACK_NOT_POD, bytes, srck);

	// tot_len stays 0: the kernel then checks the skb against the egress MTU
	// itself, GSO-aware. A non-zero tot_len would compare a GSO super-packet's
	// full length with the MTU and send every large TCP send to the stack.
	fib.ifindex = skb->ifindex;
	if (!ipv6) {
		fib.family = AF_INET;
		fib.tos = ip->tos;
		fib.l4_protocol = ip->protocol;
		fib.ipv4_src = ip->saddr;
		fib.ipv4_dst = ip->daddr;
	} else {
		fib.family = AF_INET6;
		fib.l4_protocol = ip6->nexthdr;
		__builtin_memcpy(fib.ipv6_src, ip6->saddr.in6_u.u6_addr32, 16);
		__builtin_memcpy(fib.ipv6_dst, ip6->daddr.in6_u.u6_addr32, 16);
	}

	// SKIP_NEIGH: bpf_redirect_neigh resolves the next hop itself (and queues
	// behind an unresolved neighbour), so the first packet is not lost.
	long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_SKIP_NEIGH);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS)
		return pass(PATH_STACK_NO_ROUTE, bytes, srck);
	if (fib.ifindex == skb->ifindex)
		return pass(PATH_STACK_HAIRPIN, bytes, srck);

	struct bpf_redir_neigh nh = {};
	if (!ipv6) {
		dec_ttl4(ip);
		nh.nh_family = AF_INET;
		nh.ipv4_nh = fib.ipv4_dst;
	} else {
		ip6->hop_limit--;
		nh.nh_family = AF_INET6;
		__builtin_memcpy(nh.ipv6_nh, fib.ipv6_dst, 16);
	}
	count_path(PATH_REMOTE, bytes);
	count_pod(&src, POD_SLOT_REMOTE, bytes);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

SEC("tc")
int from_pod(struct __sk_buff *skb)
{
	return handle(skb, 1);
}

SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	return handle(skb, 0);
}
