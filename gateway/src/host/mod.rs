//! The host: what the gateway asks the kernel about its machine, outside the
//! packet path. Network namespaces, interface facts, the ethtool ioctl, CPU
//! lists, the drivers' XDP features (the `netdev` generic-netlink family), one
//! netlink request and its replies.
//! Used at start-up, by the control thread and by `overpass check`.

pub mod cpus;
pub mod ethtool;
pub mod iface;
pub mod netdev;
pub mod netlink;
pub mod netns;
