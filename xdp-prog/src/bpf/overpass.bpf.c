// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/*
 * Overpass XDP steering program.
 *
 * Decides, per received frame, whether the Overpass data plane (AF_XDP
 * sockets in user space) or the kernel gets it:
 *
 *   underlay role: IPv4 protocol 4 (IP-in-IP)            -> XSK  (STEER_IPIP)
 *                  IPv4/UDP to a port in `vxlan_ports`   -> XSK  (STEER_VXLAN)
 *                  anything else                         -> kernel
 *   pod role:      any IPv4                              -> XSK  (STEER_POD)
 *                  anything else (ARP, IPv6, ...)        -> kernel
 *
 * "Kernel" is always XDP_PASS, never XDP_DROP: ARP, SSH, the control plane
 * and anything we do not understand keep working when the gateway runs, and
 * a malformed frame is the kernel's to judge. Every frame increments exactly
 * one counter naming the decision, plus NO_SOCKET when a steered frame found
 * no socket in its XSK slot (see abi.h). A frame that would be steered but
 * arrived on an RX queue user space does not serve is passed and counted
 * UNSERVED_QUEUE instead of its STEER_* counter.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "abi.h"
#include "maps.h"
#include "parsing.h"

#ifndef IPPROTO_IPIP
#define IPPROTO_IPIP 4
#endif
#ifndef IPPROTO_UDP
#define IPPROTO_UDP 17
#endif

static __always_inline void count(__u32 counter)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &counter);

	/* Per-CPU slot: no other CPU writes it, so a plain increment is
	 * enough (no atomic needed). The NULL check is for the verifier;
	 * every counter < COUNTER_MAX exists. */
	if (value)
		*value += 1;
}

/* Count the decision, then hand the frame to the socket bound to this
 * interface's RX queue. bpf_redirect_map() returns its flags' low bits
 * (XDP_PASS) when the slot is empty, so a frame never vanishes because the
 * gateway has not bound a socket yet: the kernel gets it instead.
 *
 * Only queues 0..xsk_count have slots of this interface. A frame on a
 * higher queue (the NIC has more active queues than user space serves)
 * goes to the kernel, counted as UNSERVED_QUEUE: xsk_base + queue would be
 * another interface's slot, whose socket is bound to another device, and
 * the kernel would drop the frame there without a trace. */
static __always_inline int steer(struct xdp_md *ctx,
				 const struct port_cfg *cfg, __u32 counter)
{
	__u32 queue = ctx->rx_queue_index;
	__u32 slot;
	int action;

	if (queue >= cfg->xsk_count) {
		count(UNSERVED_QUEUE);
		return XDP_PASS;
	}
	slot = cfg->xsk_base + queue;
	count(counter);
	action = bpf_redirect_map(&xsks, slot, XDP_PASS);
	if (action == XDP_PASS)
		count(NO_SOCKET);
	return action;
}

static __always_inline int pass(__u32 counter)
{
	count(counter);
	return XDP_PASS;
}

SEC("xdp")
int overpass_steer(struct xdp_md *ctx)
{
	void *data_end = (void *)(long)ctx->data_end;
	void *data = (void *)(long)ctx->data;
	struct hdr_cursor nh = { .pos = data };
	__u32 ifindex = ctx->ingress_ifindex;
	const struct port_cfg *cfg;
	struct ethhdr *eth;
	struct iphdr *iph;
	struct udphdr *udph;
	int eth_type, ip_proto, dport;
	__u16 port_key;

	cfg = bpf_map_lookup_elem(&ports, &ifindex);
	if (!cfg)
		return pass(PASS_UNKNOWN_PORT);
	if (cfg->role != PORT_ROLE_UNDERLAY && cfg->role != PORT_ROLE_POD)
		return pass(PASS_UNKNOWN_PORT);

	eth_type = parse_ethhdr(&nh, data_end, &eth);
	if (eth_type < 0)
		return pass(PASS_MALFORMED);
	/* ARP before "not IPv4" so its counter says the kernel kept resolving
	 * neighbours, which the control plane relies on. */
	if (eth_type == bpf_htons(ETH_P_ARP))
		return pass(PASS_ARP);
	if (eth_type != bpf_htons(ETH_P_IP))
		return pass(PASS_NON_IPV4);

	ip_proto = parse_iphdr(&nh, data_end, &iph);
	if (ip_proto < 0)
		return pass(PASS_MALFORMED);

	/* A pod speaks only to the overlay through us: all its IPv4 goes to
	 * user space, which routes it (or drops it with a named reason). */
	if (cfg->role == PORT_ROLE_POD)
		return steer(ctx, cfg, STEER_POD);

	/* Underlay. IP-in-IP is recognised from the outer header alone, so
	 * fragments are steered too and user space decides what to do. */
	if (ip_proto == IPPROTO_IPIP)
		return steer(ctx, cfg, STEER_IPIP);
	if (ip_proto != IPPROTO_UDP)
		return pass(PASS_NOT_TUNNEL);

	/* A later fragment starts with payload, not a UDP header: reading
	 * "ports" there would steer by garbage. The kernel reassembles. */
	if (ip_is_later_fragment(iph))
		return pass(PASS_FRAGMENT);

	dport = parse_udphdr(&nh, data_end, &udph);
	if (dport < 0)
		return pass(PASS_MALFORMED);

	port_key = (__u16)dport;
	if (bpf_map_lookup_elem(&vxlan_ports, &port_key))
		return steer(ctx, cfg, STEER_VXLAN);

	return pass(PASS_NOT_TUNNEL);
}

/* The kernel only offers its GPL-only helpers (bpf_trace_printk and the
 * tracing helpers one reaches for when debugging this program) to programs
 * declaring a GPL-compatible license, and refuses the load otherwise. The
 * helpers used today (map lookup, redirect_map) are not GPL-only, but a
 * debug build should not turn into a load failure. */
char LICENSE[] SEC("license") = "GPL";
