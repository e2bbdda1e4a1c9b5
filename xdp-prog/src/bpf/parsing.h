/* SPDX-License-Identifier: GPL-2.0 OR Apache-2.0 */
/*
 * Cursor-style header parsers (after xdp-tutorial / Katran). Each parser
 * reads the header at the cursor, bounds-checks it against data_end before
 * any access (the verifier rejects the program otherwise), advances the
 * cursor past it and returns the next-protocol field, or -1 when the header
 * does not fit or is not valid.
 */
#ifndef OVERPASS_PARSING_H
#define OVERPASS_PARSING_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct hdr_cursor {
	void *pos;
};

/* Returns the ethertype in network byte order. VLAN tags are not walked:
 * neither Flannel nor Calico tag overlay traffic, so a tagged frame is
 * simply "not IPv4" and goes to the kernel. */
static __always_inline int parse_ethhdr(struct hdr_cursor *nh, void *data_end,
					struct ethhdr **ethhdr)
{
	struct ethhdr *eth = nh->pos;

	if ((void *)(eth + 1) > data_end)
		return -1;

	nh->pos = eth + 1;
	*ethhdr = eth;
	return eth->h_proto;
}

/* Returns the IPv4 protocol number. Rejects ihl < 5 (shorter than the fixed
 * header), version != 4, and headers whose options run past data_end. */
static __always_inline int parse_iphdr(struct hdr_cursor *nh, void *data_end,
				       struct iphdr **iphdr)
{
	struct iphdr *iph = nh->pos;
	int hdrsize;

	if ((void *)(iph + 1) > data_end)
		return -1;
	if (iph->version != 4)
		return -1;
	if (iph->ihl < 5)
		return -1;

	/* ihl is 4 bits, so hdrsize <= 60: the verifier can bound the
	 * variable offset from this. */
	hdrsize = iph->ihl * 4;
	if (nh->pos + hdrsize > data_end)
		return -1;

	nh->pos += hdrsize;
	*iphdr = iph;
	return iph->protocol;
}

/* Non-zero when this is a non-first fragment (fragment offset != 0): such a
 * packet carries no transport header to inspect. */
static __always_inline int ip_is_later_fragment(const struct iphdr *iph)
{
	return (iph->frag_off & bpf_htons(0x1fff)) != 0;
}

/* Returns the UDP destination port in host byte order. */
static __always_inline int parse_udphdr(struct hdr_cursor *nh, void *data_end,
					struct udphdr **udphdr)
{
	struct udphdr *udph = nh->pos;

	if ((void *)(udph + 1) > data_end)
		return -1;

	nh->pos = udph + 1;
	*udphdr = udph;
	return bpf_ntohs(udph->dest);
}

#endif /* OVERPASS_PARSING_H */
