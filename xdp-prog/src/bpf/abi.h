/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * ABI shared between the XDP steering program and user space.
 *
 * Everything here is mirrored by hand in `xdp-prog/src/abi.rs` (`#[repr(C)]`
 * structs with size assertions, enums in the same order); a Rust test parses
 * this file to check the counter order. Rules that keep the mirror honest:
 * fixed-width types only, no implicit padding (any padding is an explicit,
 * commented field), and enums only ever append before COUNTER_MAX.
 */
#ifndef OVERPASS_ABI_H
#define OVERPASS_ABI_H

#include <linux/types.h>

/* Role of an interface the program is attached to (port_cfg.role). Any
 * other value is treated like a missing entry (PASS_UNKNOWN_PORT). */
enum port_role {
	/* NIC facing other nodes: only tunnel traffic goes to user space. */
	PORT_ROLE_UNDERLAY = 1,
	/* Host end of a pod veth: every IPv4 packet goes to user space. */
	PORT_ROLE_POD = 2,
};

/*
 * Value of the `ports` map, keyed by __u32 ifindex. 12 bytes, three naturally
 * aligned __u32: no padding.
 */
struct port_cfg {
	/* enum port_role, stored as __u32 so the size does not depend on the
	 * compiler's choice of enum width. */
	__u32 role;
	/* First `xsks` slot of this interface; its RX queue q uses slot
	 * xsk_base + q. */
	__u32 xsk_base;
	/* RX queues of this interface that user space serves: 0..xsk_count
	 * own the slots xsk_base..xsk_base + xsk_count. A frame to steer from
	 * a queue >= xsk_count is passed (UNSERVED_QUEUE): the slot arithmetic
	 * would otherwise land in the next interface's slots. */
	__u32 xsk_count;
};

/*
 * Slots of the per-CPU `counters` array (__u64 each). Exactly one slot other
 * than NO_SOCKET is incremented per packet, naming the decision; NO_SOCKET
 * is counted *in addition* to the STEER_* slot when the XSK slot is empty
 * and bpf_redirect_map() fell back to XDP_PASS.
 */
enum steer_counter {
	STEER_VXLAN = 0,       /* underlay: UDP to a configured VXLAN port, steered */
	STEER_IPIP = 1,        /* underlay: IPv4 protocol 4 (IP-in-IP), steered */
	STEER_POD = 2,         /* pod: any IPv4 packet, steered */
	PASS_ARP = 3,          /* ARP on any role: the kernel owns neighbour resolution */
	PASS_NON_IPV4 = 4,     /* other ethertypes incl. VLAN-tagged and IPv6 */
	PASS_NOT_TUNNEL = 5,   /* underlay IPv4 that is neither IPIP nor to a VXLAN port */
	PASS_FRAGMENT = 6,     /* underlay non-first UDP fragment: no UDP header to read */
	PASS_MALFORMED = 7,    /* truncated Ethernet/IPv4/UDP, ihl < 5 or version != 4 */
	PASS_UNKNOWN_PORT = 8, /* ingress ifindex not in `ports` */
	NO_SOCKET = 9,         /* steered but the XSK slot is empty: fell back to XDP_PASS */
	UNSERVED_QUEUE = 10,   /* would be steered, but rx_queue >= xsk_count: passed instead */
	COUNTER_MAX = 11,      /* number of slots, not a counter */
};

/* Map sizes, mirrored in abi.rs. */
#define MAX_PORTS 256
#define MAX_XSKS 4096
#define MAX_VXLAN_PORTS 16

#endif /* OVERPASS_ABI_H */
