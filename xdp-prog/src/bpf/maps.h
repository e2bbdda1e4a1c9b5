/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/* BPF maps of the steering program. Key/value layouts live in abi.h. */
#ifndef OVERPASS_MAPS_H
#define OVERPASS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

/* ifindex -> role, first XSK slot and served queue count. Filled by user space before attach;
 * an interface missing here is passed untouched (PASS_UNKNOWN_PORT). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PORTS);
	__type(key, __u32);
	__type(value, struct port_cfg);
} ports SEC(".maps");

/* AF_XDP sockets, slot = port_cfg.xsk_base + rx_queue_index, for
 * rx_queue_index < port_cfg.xsk_count only. */
struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_XSKS);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* UDP destination ports (host byte order) that carry VXLAN: value is 1.
 * A set rather than a constant because Flannel uses 8472, the IANA port is
 * 4789, and operators pick others. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VXLAN_PORTS);
	__type(key, __u16);
	__type(value, __u8);
} vxlan_ports SEC(".maps");

/* One __u64 per enum steer_counter, per CPU so the hot path never shares a
 * cache line; user space sums the CPUs on read. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

#endif /* OVERPASS_MAPS_H */
