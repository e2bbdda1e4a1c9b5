//! The neighbour-table follower against a real kernel, in a throwaway
//! network namespace (root).

use std::net::Ipv4Addr;

use overpass::control::neigh::{NeighMonitor, neighbours, resolve, route_get};
use overpass::host::iface::ifindex;
use overpass::host::netns::enter_netns;
use overpass_dataplane::wire::ethernet::MacAddr;

fn ip(args: &[&str]) {
    let st = std::process::Command::new("ip")
        .args(args)
        .status()
        .unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// In a throwaway namespace: resolution requests create a probing
/// entry, neighbour changes are seen live through the monitor, and
/// route lookups name the gateway for off-link destinations.
#[test]
fn follows_the_kernel_neighbour_table_live() {
    if !overpass_testkit::testbed::require_root("netlink neighbour test (network namespaces)") {
        return;
    }
    let ns = format!("ovp-nltest-{}", std::process::id());
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .status();
    ip(&["netns", "add", &ns]);
    let result = std::thread::spawn({
        let ns = ns.clone();
        move || {
            enter_netns(&ns).unwrap();
            ip(&[
                "link", "add", "name", "v0", "type", "veth", "peer", "name", "v1",
            ]);
            ip(&["addr", "add", "192.0.2.1/24", "dev", "v0"]);
            ip(&["link", "set", "v0", "up"]);
            ip(&["link", "set", "v1", "up"]);
            ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.254"]);
            let idx = ifindex("v0").unwrap();
            let mut monitor = NeighMonitor::new().unwrap();
            resolve(idx, Ipv4Addr::new(192, 0, 2, 9)).unwrap();
            let t = neighbours(idx).unwrap();
            let probing = t
                .get(&Ipv4Addr::new(192, 0, 2, 9))
                .expect("resolve() created an entry");
            assert!(!probing.complete, "nobody answers for .9");
            ip(&[
                "neigh",
                "replace",
                "192.0.2.7",
                "lladdr",
                "02:00:00:00:00:07",
                "dev",
                "v0",
                "nud",
                "permanent",
            ]);
            assert!(monitor.wait(1000), "the change was announced");
            let t = neighbours(idx).unwrap();
            let n = t[&Ipv4Addr::new(192, 0, 2, 7)];
            assert!(n.complete);
            assert_eq!(n.mac, MacAddr([2, 0, 0, 0, 0, 7]));
            assert_eq!(route_get(Ipv4Addr::new(192, 0, 2, 7)).unwrap(), (None, idx));
            assert_eq!(
                route_get(Ipv4Addr::new(203, 0, 113, 5)).unwrap(),
                (Some(Ipv4Addr::new(192, 0, 2, 254)), idx),
                "off-link: the next hop is the gateway"
            );
        }
    })
    .join();
    ip(&["netns", "del", &ns]);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
