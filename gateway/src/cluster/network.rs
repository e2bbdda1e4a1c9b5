//! What Flannel keeps in etcd, parsed: the network configuration
//! (`<prefix>/config`) and the subnet leases (`<prefix>/subnets/<a.b.c.d>-<len>`).
//!
//! Pure functions, no I/O: every rule here is unit-tested. Errors are
//! sentences naming what is wrong; the caller names the key.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use overpass_dataplane::fib::Encap;
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_dataplane::wire::vxlan::VNI_MAX;

/// Flannel's VXLAN default UDP port (the Linux default), used when the
/// network's `Backend.Port` is 0 or absent.
pub const FLANNEL_VXLAN_PORT: u16 = 8472;

/// `<prefix>/config` as flanneld reads it (the keys we use; others are
/// ignored, as flanneld ignores keys of other backends).
#[derive(Debug, Clone, Deserialize)]
struct RawNetwork {
    #[serde(rename = "Network")]
    network: Option<String>,
    #[serde(rename = "SubnetLen", default)]
    subnet_len: u8,
    #[serde(rename = "SubnetMin")]
    subnet_min: Option<String>,
    #[serde(rename = "SubnetMax")]
    subnet_max: Option<String>,
    #[serde(rename = "EnableIPv4", default = "yes")]
    enable_ipv4: bool,
    #[serde(rename = "Backend")]
    backend: Option<RawBackend>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
struct RawBackend {
    #[serde(rename = "Type")]
    kind: Option<String>,
    #[serde(rename = "VNI", default)]
    vni: Option<u64>,
    #[serde(rename = "Port", default)]
    port: Option<u64>,
}

/// The backends the gateway can serve, as Flannel names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Vxlan,
    Ipip,
}

impl Backend {
    /// Flannel's `BackendType` string.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::Ipip => "ipip",
        }
    }

    pub fn encap(self) -> Encap {
        match self {
            Backend::Vxlan => Encap::Vxlan,
            Backend::Ipip => Encap::Ipip,
        }
    }

    fn parse(s: &str) -> Option<Backend> {
        match s {
            "vxlan" => Some(Backend::Vxlan),
            "ipip" => Some(Backend::Ipip),
            _ => None,
        }
    }
}

/// A network the gateway can serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub network: Ipv4Net,
    pub subnet_len: u8,
    /// First and last subnet a lease may be taken from.
    pub subnet_min: Ipv4Addr,
    pub subnet_max: Ipv4Addr,
    pub backend: Backend,
    /// VXLAN network identifier (Flannel's default 1).
    pub vni: u32,
    /// VXLAN UDP port (0 in the config means 8472).
    pub port: u16,
}

impl Network {
    /// Parses `<prefix>/config`, refusing (with the reason) a network the
    /// gateway cannot serve. Defaults are flanneld's: SubnetLen 24 (or
    /// Network's length + 2 when that is longer than /22), SubnetMin the
    /// second subnet, SubnetMax the last, Backend.Type `udp` when absent
    /// (refused: not a tunnel the gateway speaks), VNI 1, Port 8472.
    pub fn parse(json: &[u8]) -> Result<Network, String> {
        let raw: RawNetwork =
            serde_json::from_slice(json).map_err(|e| format!("not Flannel's JSON: {e}"))?;
        if !raw.enable_ipv4 {
            return Err("EnableIPv4 is false: the gateway serves IPv4 networks only".into());
        }
        let network: Ipv4Net = raw
            .network
            .as_deref()
            .ok_or("Network is missing (an IPv6-only network is not served)")?
            .parse()
            .map_err(|e| format!("Network: {e}"))?;
        if network.trunc() != network {
            return Err(format!("Network: host bits set in {network}"));
        }
        let subnet_len = match raw.subnet_len {
            0 if network.prefix_len() < 22 => 24,
            0 => network.prefix_len() + 2,
            n => n,
        };
        if subnet_len <= network.prefix_len() || subnet_len > 30 {
            return Err(format!(
                "SubnetLen {subnet_len} must be longer than Network's /{} and at most 30",
                network.prefix_len()
            ));
        }
        let step = 1u32 << (32 - subnet_len);
        let first = u32::from(network.network());
        let last = u32::from(network.broadcast()) - (step - 1);
        let bound = |v: &Option<String>, key: &str, default: u32| -> Result<Ipv4Addr, String> {
            match v {
                None => Ok(Ipv4Addr::from(default)),
                Some(s) => {
                    let a: Ipv4Addr = s.parse().map_err(|e| format!("{key}: {e}"))?;
                    let n = u32::from(a);
                    if !network.contains(&a) || (n - first) % step != 0 {
                        return Err(format!(
                            "{key} {a} is not a /{subnet_len} subnet inside {network}"
                        ));
                    }
                    Ok(a)
                }
            }
        };
        let subnet_min = bound(&raw.subnet_min, "SubnetMin", first + step)?;
        let subnet_max = bound(&raw.subnet_max, "SubnetMax", last)?;
        if subnet_min > subnet_max {
            return Err(format!(
                "SubnetMin {subnet_min} is above SubnetMax {subnet_max}"
            ));
        }
        let backend = raw.backend.unwrap_or(RawBackend {
            kind: None,
            vni: None,
            port: None,
        });
        let kind = backend.kind.as_deref().unwrap_or("udp");
        let backend_type = Backend::parse(kind).ok_or_else(|| {
            format!("Backend.Type {kind:?} is not a tunnel this gateway serves (vxlan or ipip)")
        })?;
        let vni = backend.vni.unwrap_or(1);
        if vni > u64::from(VNI_MAX) {
            return Err(format!(
                "Backend.VNI {vni} is larger than the 24-bit maximum {VNI_MAX}"
            ));
        }
        let port = match backend.port.unwrap_or(0) {
            0 => FLANNEL_VXLAN_PORT,
            p if p > u64::from(u16::MAX) => {
                return Err(format!("Backend.Port {p} is not a UDP port"));
            }
            p => p as u16,
        };
        Ok(Network {
            network,
            subnet_len,
            subnet_min,
            subnet_max,
            backend: backend_type,
            vni: vni as u32,
            port,
        })
    }

    /// Every subnet a lease may take, SubnetMin to SubnetMax.
    pub fn subnets(&self) -> impl Iterator<Item = Ipv4Net> + '_ {
        let step = 1u32 << (32 - self.subnet_len);
        let (min, max) = (u32::from(self.subnet_min), u32::from(self.subnet_max));
        (0..=(max - min) / step).map(move |i| {
            Ipv4Net::new(Ipv4Addr::from(min + i * step), self.subnet_len)
                .expect("subnet_len validated")
        })
    }

    /// Whether `subnet` is one this network hands out (inside Network, of
    /// SubnetLen).
    pub fn holds(&self, subnet: &Ipv4Net) -> bool {
        subnet.prefix_len() == self.subnet_len && self.network.contains(subnet)
    }
}

/// The subnet a lease key names: `10.244.1.0-24` (a dual-stack key,
/// `10.244.1.0-24&fd00::-56`, gives its IPv4 part).
pub fn parse_key(name: &str) -> Result<Ipv4Net, String> {
    let v4 = name.split('&').next().unwrap_or(name);
    let (addr, len) = v4
        .split_once('-')
        .ok_or_else(|| format!("lease key {name:?} is not <a.b.c.d>-<len>"))?;
    let addr: Ipv4Addr = addr
        .parse()
        .map_err(|_| format!("lease key {name:?}: {addr:?} is not an IPv4 address"))?;
    let len: u8 = len
        .parse()
        .map_err(|_| format!("lease key {name:?}: {len:?} is not a prefix length"))?;
    let net = Ipv4Net::new(addr, len)
        .map_err(|_| format!("lease key {name:?}: /{len} is not a prefix length"))?;
    if net.trunc() != net {
        return Err(format!("lease key {name:?}: host bits set"));
    }
    Ok(net)
}

/// The key name of a subnet: `10.244.1.0-24`.
pub fn key_name(subnet: &Ipv4Net) -> String {
    format!("{}-{}", subnet.network(), subnet.prefix_len())
}

/// A lease value as Flannel writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseValue {
    #[serde(rename = "PublicIP")]
    pub public_ip: Ipv4Addr,
    #[serde(rename = "BackendType", default)]
    pub backend_type: String,
    #[serde(
        rename = "BackendData",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_data: Option<serde_json::Value>,
}

/// `BackendData` of a vxlan lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanData {
    #[serde(rename = "VNI", default)]
    pub vni: u64,
    #[serde(rename = "VtepMAC")]
    pub vtep_mac: String,
}

/// The value the gateway publishes for itself.
pub fn own_value(public_ip: Ipv4Addr, network: &Network, vtep_mac: MacAddr) -> Vec<u8> {
    let data = match network.backend {
        Backend::Vxlan => Some(
            serde_json::to_value(VxlanData {
                vni: u64::from(network.vni),
                vtep_mac: vtep_mac.to_string(),
            })
            .expect("serialises"),
        ),
        Backend::Ipip => None,
    };
    serde_json::to_vec(&LeaseValue {
        public_ip,
        backend_type: network.backend.name().to_string(),
        backend_data: data,
    })
    .expect("serialises")
}

/// What a peer's lease means for the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A node to route `subnet` to.
    Node {
        subnet: Ipv4Net,
        public_ip: Ipv4Addr,
        encap: Encap,
        vni: u32,
        port: u16,
        vtep_mac: Option<MacAddr>,
    },
    /// A lease of a backend the gateway does not speak (ignored, counted).
    OtherType(String),
}

/// Interprets a peer's lease (`name` is the key's last part). Errors say
/// what is wrong; the caller logs them with the key and counts them.
pub fn parse_peer(network: &Network, name: &str, value: &[u8]) -> Result<Peer, String> {
    let subnet = parse_key(name)?;
    if !network.holds(&subnet) {
        return Err(format!(
            "subnet {subnet} is not a /{} inside Network {}",
            network.subnet_len, network.network
        ));
    }
    let lease: LeaseValue =
        serde_json::from_slice(value).map_err(|e| format!("value is not a Flannel lease: {e}"))?;
    let ip = lease.public_ip;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
        return Err(format!("PublicIP {ip} is not a unicast node address"));
    }
    match lease.backend_type.as_str() {
        "vxlan" => {
            let data: VxlanData = lease
                .backend_data
                .ok_or("BackendData is missing (VNI, VtepMAC)")
                .and_then(|d| {
                    serde_json::from_value(d).map_err(|_| "BackendData: VtepMAC is missing")
                })
                .map_err(str::to_string)?;
            // flanneld writes VNI 0 for "the network's" in older releases.
            let vni = match data.vni {
                0 => u64::from(network.vni),
                v => v,
            };
            if vni > u64::from(VNI_MAX) {
                return Err(format!(
                    "BackendData.VNI {vni} is larger than the 24-bit maximum {VNI_MAX}"
                ));
            }
            let mac: MacAddr = data
                .vtep_mac
                .parse()
                .map_err(|_| format!("BackendData.VtepMAC {:?} is not a MAC", data.vtep_mac))?;
            if !mac.is_unicast() || mac == MacAddr([0; 6]) {
                return Err(format!("BackendData.VtepMAC {mac} is not a unicast MAC"));
            }
            Ok(Peer::Node {
                subnet,
                public_ip: ip,
                encap: Encap::Vxlan,
                vni: vni as u32,
                port: network.port,
                vtep_mac: Some(mac),
            })
        }
        "ipip" => Ok(Peer::Node {
            subnet,
            public_ip: ip,
            encap: Encap::Ipip,
            vni: 1,
            port: FLANNEL_VXLAN_PORT,
            vtep_mac: None,
        }),
        other => Ok(Peer::OtherType(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(json: &str) -> Result<Network, String> {
        Network::parse(json.as_bytes())
    }

    #[test]
    fn network_defaults_are_flanneld_s() {
        let n = net(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(n.subnet_len, 24);
        assert_eq!(n.subnet_min, Ipv4Addr::new(10, 244, 1, 0));
        assert_eq!(n.subnet_max, Ipv4Addr::new(10, 244, 255, 0));
        assert_eq!((n.vni, n.port, n.backend), (1, 8472, Backend::Vxlan));
        assert_eq!(n.subnets().count(), 255);
        let n = net(r#"{"Network":"10.5.0.0/23","Backend":{"Type":"ipip"}}"#).unwrap();
        assert_eq!(n.subnet_len, 25);
        let n = net(
            r#"{"Network":"10.1.0.0/16","SubnetLen":26,"SubnetMin":"10.1.0.64","SubnetMax":"10.1.1.0","Backend":{"Type":"vxlan","VNI":4096,"Port":4789}}"#,
        )
        .unwrap();
        assert_eq!((n.vni, n.port), (4096, 4789));
        assert_eq!(n.subnets().count(), 4);
    }

    #[test]
    fn unservable_networks_are_refused_with_the_reason() {
        for (json, needle) in [
            (r#"{"Network":"10.244.0.0/16"}"#, "\"udp\""),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"host-gw"}}"#,
                "host-gw",
            ),
            (r#"{"Backend":{"Type":"vxlan"}}"#, "Network is missing"),
            (
                r#"{"Network":"10.244.0.1/16","Backend":{"Type":"vxlan"}}"#,
                "host bits",
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetLen":16,"Backend":{"Type":"vxlan"}}"#,
                "SubnetLen",
            ),
            (
                r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#,
                "VNI",
            ),
            (
                r#"{"Network":"10.244.0.0/16","SubnetMin":"10.245.0.0","Backend":{"Type":"vxlan"}}"#,
                "SubnetMin",
            ),
            (
                r#"{"Network":"10.244.0.0/16","EnableIPv4":false,"Backend":{"Type":"vxlan"}}"#,
                "EnableIPv4",
            ),
            ("{not json", "JSON"),
        ] {
            let e = net(json).unwrap_err();
            assert!(e.contains(needle), "{json}: {e}");
        }
    }

    #[test]
    fn leases_parse_and_bad_ones_say_why() {
        let n = net(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":7}}"#).unwrap();
        let p = parse_peer(
            &n,
            "10.244.1.0-24",
            br#"{"PublicIP":"198.18.0.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:11"}}"#,
        )
        .unwrap();
        assert_eq!(
            p,
            Peer::Node {
                subnet: "10.244.1.0/24".parse().unwrap(),
                public_ip: Ipv4Addr::new(198, 18, 0, 11),
                encap: Encap::Vxlan,
                vni: 1,
                port: 8472,
                vtep_mac: Some(MacAddr([2, 0, 0, 0, 0, 0x11])),
            }
        );
        let p = parse_peer(
            &n,
            "10.244.3.0-24&fd00:3::-56",
            br#"{"PublicIP":"198.18.0.13","BackendType":"ipip"}"#,
        )
        .unwrap();
        assert!(matches!(
            p,
            Peer::Node {
                encap: Encap::Ipip,
                ..
            }
        ));
        let p = parse_peer(
            &n,
            "10.244.4.0-24",
            br#"{"PublicIP":"198.18.0.14","BackendType":"wireguard"}"#,
        )
        .unwrap();
        assert_eq!(p, Peer::OtherType("wireguard".into()));
        for (key, value, needle) in [
            ("10.244.1.0-24", &b"{bad json"[..], "not a Flannel lease"),
            ("10.244.2.0-23", br#"{"PublicIP":"198.18.0.11","BackendType":"ipip"}"#, "/24"),
            ("10.244.1.0", br#"{"PublicIP":"198.18.0.11","BackendType":"ipip"}"#, "not <a.b.c.d>-<len>"),
            ("10.9.1.0-24", br#"{"PublicIP":"198.18.0.11","BackendType":"ipip"}"#, "inside Network"),
            ("10.244.1.0-24", br#"{"PublicIP":"198.18.0.11","BackendType":"vxlan","BackendData":{"VNI":16777216,"VtepMAC":"02:00:00:00:00:11"}}"#, "VNI"),
            ("10.244.1.0-24", br#"{"PublicIP":"198.18.0.11","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"01:00:00:00:00:11"}}"#, "unicast"),
            ("10.244.1.0-24", br#"{"PublicIP":"198.18.0.11","BackendType":"vxlan"}"#, "BackendData"),
            ("10.244.1.0-24", br#"{"PublicIP":"0.0.0.0","BackendType":"ipip"}"#, "PublicIP"),
        ] {
            let e = parse_peer(&n, key, value).unwrap_err();
            assert!(e.contains(needle), "{key} {}: {e}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn own_value_is_flannel_s_layout() {
        let n = net(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        let v = own_value(
            Ipv4Addr::new(198, 18, 0, 1),
            &n,
            MacAddr([2, 0, 0xc6, 0x12, 0, 1]),
        );
        assert_eq!(
            String::from_utf8(v).unwrap(),
            r#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:c6:12:00:01"}}"#
        );
        assert_eq!(key_name(&"10.244.0.0/24".parse().unwrap()), "10.244.0.0-24");
    }
}
