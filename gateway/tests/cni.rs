//! `overpass-cni` driven as a container runtime drives it (environment
//! variables, the network config on stdin, `prevResult` for CHECK), with
//! Debian's real `host-local` IPAM plugin, against a running `overpass run`
//! on the test bed: every verb with its exact result and exit code, bad
//! input leaving nothing behind, 110 pods on one worker, churn under
//! traffic, and a restart.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{Proc, Scratch, client};
use overpass::config::{ApiConfig, AttachConfig, Config, StateConfig};
use overpass_testkit::testbed::{Ns, PingOpts, Testbed, TestbedSpec, require_root, wait_until};
use serde_json::{Value, json};

const CNI_PATH: &str = "/usr/lib/cni";

/// `args` as a command confined to CPU 0 when there is more than one: as on
/// a production gateway, the control plane's work (here the runtime, the
/// plugin and its children, and the traffic tools) stays off the cores the
/// workers are pinned to (the highest-numbered ones by default), so what is
/// measured is the dataplane, not CPU contention with the test's own
/// processes.
fn control_cpu(args: &[&str]) -> Command {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = if cpus > 1 {
        let mut c = Command::new("taskset");
        c.args(["-c", "0"]).arg(args[0]);
        c
    } else {
        Command::new(args[0])
    };
    cmd.args(&args[1..]);
    cmd
}

/// The plugin binary, built once per test process (the same profile as
/// this test).
fn plugin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let overpass = Path::new(env!("CARGO_BIN_EXE_overpass"));
        let release = overpass.components().any(|c| c.as_os_str() == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "overpass-cni"]);
        if release {
            cmd.arg("--release");
        }
        let st = cmd.status().expect("cargo build -p overpass-cni");
        assert!(st.success(), "building overpass-cni failed");
        let bin = overpass.with_file_name("overpass-cni");
        assert!(bin.is_file(), "{} missing", bin.display());
        bin
    })
}

/// One plugin invocation's outcome.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    #[allow(dead_code)] // shown in failure messages (Debug)
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Exit 0, nothing on stdout.
    fn ok_empty(&self, what: &str) {
        assert_eq!(self.code, 0, "{what}: {self:?}");
        assert_eq!(self.stdout.trim(), "", "{what}: {self:?}");
    }

    /// Exit 1 and a spec error with `code`; returns its msg.
    fn spec_error(&self, what: &str, code: u64, version: &str) -> String {
        assert_eq!(self.code, 1, "{what}: {self:?}");
        let v = self.json();
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            BTreeSet::from(["cniVersion", "code", "msg", "details"]),
            "{what}: {v}"
        );
        assert_eq!(v["cniVersion"], version, "{what}: {v}");
        assert_eq!(v["code"], code, "{what}: {v}");
        v["msg"].as_str().unwrap().to_string()
    }
}

/// The runtime side: where the plugin runs (the gateway's namespace, the
/// host of a real node), its network config, the IPAM data dir.
#[derive(Clone)]
struct Runtime {
    gw_ns: String,
    socket: PathBuf,
    ipam_dir: PathBuf,
}

impl Runtime {
    fn conf(&self, version: &str) -> Value {
        self.conf_range(version, "10.244.0.10", "10.244.0.250")
    }

    fn conf_range(&self, version: &str, start: &str, end: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "overpass",
            "type": "overpass-cni",
            "socket": self.socket,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": "10.244.0.0/24", "rangeStart": start, "rangeEnd": end}]],
                "dataDir": self.ipam_dir,
            },
        })
    }

    /// Runs the plugin with `command`, the container's identity and `conf`.
    fn run(&self, command: &str, id: &str, netns: Option<&str>, ifname: &str, conf: &str) -> Run {
        let mut cmd = control_cpu(&["ip", "netns", "exec", &self.gw_ns]);
        cmd.arg(plugin())
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", CNI_PATH)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ns) = netns {
            cmd.env("CNI_NETNS", format!("/var/run/netns/{ns}"));
        }
        let mut child = cmd.spawn().expect("spawning overpass-cni");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        let out: Output = child.wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn add(&self, id: &str, netns: &str) -> Run {
        self.run(
            "ADD",
            id,
            Some(netns),
            "eth0",
            &self.conf("1.1.0").to_string(),
        )
    }

    fn del(&self, id: &str, netns: Option<&str>) -> Run {
        self.run("DEL", id, netns, "eth0", &self.conf("1.1.0").to_string())
    }

    /// Host ends of pod veths in the gateway's namespace.
    fn host_links(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.gw_ns, "-j", "link", "show"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["ifname"].as_str())
            .filter(|n| n.starts_with("ovp"))
            .map(str::to_string)
            .collect()
    }

    /// Addresses host-local has reserved (its files in the data dir).
    fn reserved(&self) -> Vec<String> {
        let dir = self.ipam_dir.join("overpass");
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .filter(|n| n.starts_with("10."))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn netns_add(name: &str) {
    let st = Command::new("ip")
        .args(["netns", "add", name])
        .status()
        .unwrap();
    assert!(st.success(), "ip netns add {name}");
    let _ = Command::new("ip")
        .args(["-n", name, "link", "set", "lo", "up"])
        .status();
}

fn netns_del(name: &str) {
    let _ = Command::new("ip").args(["netns", "del", name]).status();
}

/// A running gateway on a test bed with `[attach]`, `[api]`, `[state]`.
struct Bed {
    bed: Testbed,
    s: Scratch,
    cfg: PathBuf,
    rt: Runtime,
    proc: Option<Proc>,
    url: String,
}

impl Bed {
    fn new(tag: &str) -> Bed {
        Bed::with_queues(tag, 1)
    }

    /// A bed whose underlay (and configured pods) have `queues` queues:
    /// one worker each.
    fn with_queues(tag: &str, queues: u32) -> Bed {
        let bed = Testbed::create(&TestbedSpec {
            tag: tag.to_string(),
            underlay_queues: queues,
        })
        .expect("building the test bed");
        if queues > 1 {
            let q = queues.to_string();
            for pod in ['a', 'b'] {
                let dev = bed.local_pod_iface(pod);
                bed.exec(
                    &bed.ns(Ns::Gateway),
                    &["ethtool", "-L", &dev, "rx", &q, "tx", &q],
                )
                .unwrap();
                bed.exec(
                    &bed.ns(Ns::LocalPod(pod)),
                    &["ethtool", "-L", "eth0", "rx", &q, "tx", &q],
                )
                .unwrap();
            }
        }
        let s = Scratch::new(&format!("cni-{tag}"));
        let mut config: Config = bed.gateway_config();
        config.api = Some(ApiConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_file: Some(s.path("token")),
            ..ApiConfig::default()
        });
        config.state = Some(StateConfig::new(s.path("state")));
        config.attach = Some(AttachConfig {
            socket: s.path("cni.sock"),
            ..AttachConfig::default()
        });
        let cfg = s.path("overpass.toml");
        std::fs::write(&cfg, config.to_toml()).unwrap();
        let rt = Runtime {
            gw_ns: bed.ns(Ns::Gateway),
            socket: s.path("cni.sock"),
            ipam_dir: s.path("ipam"),
        };
        let mut b = Bed {
            bed,
            s,
            cfg,
            rt,
            proc: None,
            url: String::new(),
        };
        b.start();
        b
    }

    fn start(&mut self) {
        let n = std::fs::read_dir(&self.s.dir).map_or(0, |d| d.count());
        let mut p = Proc::spawn(
            &["run"],
            &self.cfg,
            &self.s.path(&format!("gw{n}.log")),
            &[],
        );
        self.url = p.url(Duration::from_secs(30));
        self.proc = Some(p);
        let url = self.url.clone();
        wait_until("the local socket serves", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&self.rt.socket).is_ok()
                && client(&url).get::<Value>("/api/v1/attachments").is_ok()
        });
    }

    fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            let log = p.log.clone();
            let st = p.terminate(Duration::from_secs(20));
            assert!(
                st.success(),
                "{st}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    fn log(&self) -> String {
        self.proc.as_ref().map(|p| p.log_text()).unwrap_or_default()
    }

    fn status(&self) -> Value {
        client(&self.url)
            .get::<Value>("/api/v1/attachments")
            .expect("GET /api/v1/attachments")
    }

    /// The process's open descriptors, by what they are; TCP sockets (the
    /// API's connections, which clients open and close) left out.
    fn open_fds(&self) -> Vec<String> {
        let pid = self.proc.as_ref().unwrap().pid();
        let mut tcp = BTreeSet::new();
        for f in ["tcp", "tcp6"] {
            let t = std::fs::read_to_string(format!("/proc/{pid}/net/{f}")).unwrap_or_default();
            for l in t.lines().skip(1) {
                if let Some(inode) = l.split_whitespace().nth(9) {
                    tcp.insert(format!("socket:[{inode}]"));
                }
            }
        }
        let mut v: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .map(|t| t.display().to_string())
            .filter(|t| !tcp.contains(t))
            // socket:[inode] → socket (the inode is new per socket).
            .map(|t| t.split(":[").next().unwrap_or(&t).to_string())
            .collect();
        v.sort();
        v
    }

    /// (free frames per worker and pool, XSK slots in use, open fds).
    fn accounting(&self) -> (Vec<Value>, u64, Vec<String>) {
        let s = self.status();
        let free = s["per_worker"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["free_frames"].clone())
            .collect();
        (
            free,
            s["xsk_slots_in_use"].as_u64().unwrap(),
            self.open_fds(),
        )
    }

    fn ping_ok(&self, ns: &str, count: u32) -> bool {
        self.bed
            .ping(
                ns,
                self.bed.remote_pod_ip(1),
                count,
                &PingOpts {
                    interval: 0.2,
                    timeout_s: 2,
                    ..PingOpts::default()
                },
            )
            .map(|r| r.all_received())
            .unwrap_or(false)
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("gateway log:\n{}", self.log());
        }
    }
}

/// Namespaces of the test's pods (`ovp-{tag}-c{i}`: the bed removes any a
/// failed run leaves).
fn pod_ns(tag: &str, i: usize) -> String {
    format!("ovp-{tag}-c{i}")
}

fn link_mac(ns: Option<&str>, ifname: &str) -> String {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    let out = cmd
        .args(["-j", "link", "show", "dev", ifname])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v[0]["address"].as_str().unwrap().to_string()
}

#[test]
fn verbs_as_a_runtime_drives_them() {
    if !require_root("overpass-cni verbs (network namespaces, XDP, host-local)") {
        return;
    }
    let tag = "cn1";
    let mut b = Bed::new(tag);
    let rt = b.rt.clone();
    let rt = &rt;
    let before = b.accounting();

    // VERSION: exact.
    let v = rt.run("VERSION", "", None, "", r#"{"cniVersion":"1.1.0"}"#);
    assert_eq!(v.code, 0, "{v:?}");
    assert_eq!(
        v.json(),
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    // STATUS: ready, no output.
    rt.run("STATUS", "", None, "", &rt.conf("1.1.0").to_string())
        .ok_empty("STATUS");

    // ADD: the exact result.
    let ns1 = pod_ns(tag, 1);
    netns_add(&ns1);
    let add = rt.add("c1", &ns1);
    assert_eq!(add.code, 0, "{add:?}");
    let result = add.json();
    let host = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(host.starts_with("ovp") && host.len() == 15, "{result}");
    let expected = json!({
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": host, "mac": link_mac(Some(&rt.gw_ns), &host)},
            {"name": "eth0", "mac": link_mac(Some(&ns1), "eth0"), "mtu": 1450,
             "sandbox": format!("/var/run/netns/{ns1}")},
        ],
        "ips": [{"address": "10.244.0.10/32", "gateway": "169.254.1.1", "interface": 1}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
        "dns": {},
    });
    assert_eq!(result, expected);
    assert_eq!(rt.reserved(), vec!["10.244.0.10"]);
    // Inside the pod: the tunnel MTU, TX checksum offload off, the /32, the
    // on-link gateway and its permanent neighbour entry.
    let pod = |args: &[&str]| {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns1])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        pod(&["ethtool", "-k", "eth0"]).contains("tx-checksumming: off"),
        "{}",
        pod(&["ethtool", "-k", "eth0"])
    );
    assert!(pod(&["ip", "link", "show", "eth0"]).contains("mtu 1450"));
    assert!(pod(&["ip", "-4", "addr", "show", "eth0"]).contains("inet 10.244.0.10/32"));
    assert!(
        pod(&["ip", "route"]).contains("default via 169.254.1.1 dev eth0"),
        "{}",
        pod(&["ip", "route"])
    );
    let neigh = pod(&["ip", "neigh", "show", "169.254.1.1"]);
    assert!(
        neigh.contains(&link_mac(Some(&rt.gw_ns), &host)) && neigh.contains("PERMANENT"),
        "{neigh}"
    );
    // The pod reaches a remote node's pod through the gateway.
    wait_until("pod c1 pings node 1's pod", Duration::from_secs(10), || {
        b.ping_ok(&ns1, 3)
    });
    let st = b.status();
    assert_eq!(st["attachments"][0]["interface"], host.as_str(), "{st}");
    assert_eq!(st["attachments"][0]["ip"], "10.244.0.10", "{st}");
    assert_eq!(st["attachments"][0]["container_id"], "c1", "{st}");

    // CHECK with prevResult.
    let mut conf = rt.conf("1.1.0");
    conf["prevResult"] = result.clone();
    rt.run("CHECK", "c1", Some(&ns1), "eth0", &conf.to_string())
        .ok_empty("CHECK");
    // CHECK notices a missing route.
    Command::new("ip")
        .args(["-n", &ns1, "route", "del", "default"])
        .status()
        .unwrap();
    let msg = rt
        .run("CHECK", "c1", Some(&ns1), "eth0", &conf.to_string())
        .spec_error("CHECK without the route", 102, "1.1.0");
    assert!(msg.contains("default route"), "{msg}");
    // CHECK without prevResult: a config error naming it.
    let msg = rt
        .run(
            "CHECK",
            "c1",
            Some(&ns1),
            "eth0",
            &rt.conf("1.1.0").to_string(),
        )
        .spec_error("CHECK without prevResult", 7, "1.1.0");
    assert!(msg.starts_with("prevResult"), "{msg}");

    // DEL, then DEL again: both succeed; everything is gone.
    rt.del("c1", Some(&ns1)).ok_empty("DEL");
    assert!(rt.host_links().is_empty(), "{:?}", rt.host_links());
    assert!(rt.reserved().is_empty(), "{:?}", rt.reserved());
    assert_eq!(b.status()["attachments"], json!([]));
    rt.del("c1", Some(&ns1)).ok_empty("DEL again");
    rt.del("c1", None).ok_empty("DEL without a netns");

    // GC: two pods, one of them still valid.
    let (ns2, ns3) = (pod_ns(tag, 2), pod_ns(tag, 3));
    netns_add(&ns2);
    netns_add(&ns3);
    assert_eq!(rt.add("c2", &ns2).code, 0);
    assert_eq!(rt.add("c3", &ns3).code, 0);
    assert_eq!(rt.host_links().len(), 2);
    let mut gc = rt.conf("1.1.0");
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "c2", "ifname": "eth0"}]);
    rt.run("GC", "", None, "", &gc.to_string()).ok_empty("GC");
    let st = b.status();
    let left: Vec<&str> = st["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["container_id"].as_str().unwrap())
        .collect();
    assert_eq!(left, vec!["c2"], "{st}");
    assert_eq!(rt.host_links().len(), 1);
    assert_eq!(rt.reserved().len(), 1, "{:?}", rt.reserved());
    wait_until("pod c2 still pings", Duration::from_secs(10), || {
        b.ping_ok(&ns2, 2)
    });
    rt.del("c2", Some(&ns2)).ok_empty("DEL c2");

    // Everything returned: frames, slots, descriptors.
    let after = b.accounting();
    assert_eq!(
        before, after,
        "(free frames, XSK slots, fds) before and after"
    );
    for ns in [&ns1, &ns2, &ns3] {
        netns_del(ns);
    }
    // STATUS of a stopped gateway: not available.
    b.stop();
    let msg = rt
        .run("STATUS", "", None, "", &rt.conf("1.1.0").to_string())
        .spec_error("STATUS, gateway stopped", 50, "1.1.0");
    assert!(msg.contains("socket"), "{msg}");
}

/// Two workers: the plugin makes the veth with two queues, each worker
/// binds one, both pods reach the remote node, and detaching returns both
/// workers' frames and sockets.
#[test]
fn two_workers_each_bind_an_attached_pod() {
    if !require_root("overpass-cni with two workers (network namespaces, XDP, host-local)") {
        return;
    }
    let tag = "cn5";
    let b = Bed::with_queues(tag, 2);
    let before = b.accounting();
    let st = b.status();
    assert_eq!(st["workers"], 2, "{st}");
    let nss = add_pods(&b.rt, tag, 0..4);
    let st = b.status();
    // 2 workers × (underlay + 2 configured pods + 4 attached).
    assert_eq!(st["xsk_slots_in_use"], 14, "{}", st["per_worker"]);
    // The pod's veth has one active queue per worker.
    let q = Command::new("ip")
        .args(["netns", "exec", &nss[0], "ethtool", "-l", "eth0"])
        .output()
        .unwrap();
    let q = String::from_utf8_lossy(&q.stdout).into_owned();
    let current = q.split("Current hardware settings:").nth(1).unwrap_or("");
    assert!(current.contains("RX:\t\t2"), "{q}");
    let failed = ping_all(&b, &nss);
    assert!(failed.is_empty(), "{failed:#?}");
    for (i, ns) in nss.iter().enumerate() {
        b.rt.del(&format!("pod{i}"), Some(ns)).ok_empty("DEL");
        netns_del(ns);
    }
    assert_eq!(before, b.accounting(), "(free frames, XSK slots, fds)");
}

#[test]
fn bad_input_is_a_spec_error_and_leaves_nothing() {
    if !require_root("overpass-cni bad input (network namespaces, XDP, host-local)") {
        return;
    }
    let tag = "cn2";
    let mut b = Bed::new(tag);
    let rt = b.rt.clone();
    let rt = &rt;
    let ns1 = pod_ns(tag, 1);
    netns_add(&ns1);
    let nothing_left = |what: &str| {
        assert!(rt.host_links().is_empty(), "{what}: {:?}", rt.host_links());
        assert!(rt.reserved().is_empty(), "{what}: {:?}", rt.reserved());
        assert_eq!(b.status()["attachments"], json!([]), "{what}");
    };
    // Malformed config.
    let r = rt.run("ADD", "x1", Some(&ns1), "eth0", "{\"cniVersion\": ");
    r.spec_error("malformed config", 6, "1.1.0");
    nothing_left("malformed config");
    // Unknown cniVersion.
    let r = rt.run(
        "ADD",
        "x1",
        Some(&ns1),
        "eth0",
        &rt.conf("9.9.9").to_string(),
    );
    let msg = r.spec_error("unknown cniVersion", 1, "1.1.0");
    assert!(msg.starts_with("cniVersion"), "{msg}");
    nothing_left("unknown cniVersion");
    // No ipam.type.
    let mut c = rt.conf("1.1.0");
    c.as_object_mut().unwrap().remove("ipam");
    let msg = rt
        .run("ADD", "x1", Some(&ns1), "eth0", &c.to_string())
        .spec_error("no ipam", 7, "1.1.0");
    assert!(msg.starts_with("ipam.type"), "{msg}");
    // Missing netns.
    let msg = rt
        .add("x1", &pod_ns(tag, 99))
        .spec_error("missing netns", 3, "1.1.0");
    assert!(msg.starts_with("CNI_NETNS"), "{msg}");
    nothing_left("missing netns");
    // CNI_NETNS unset.
    let msg = rt
        .run("ADD", "x1", None, "eth0", &rt.conf("1.1.0").to_string())
        .spec_error("CNI_NETNS unset", 4, "1.1.0");
    assert!(msg.starts_with("CNI_NETNS"), "{msg}");
    // An older version's result shape (0.4.0: ips carry "version").
    let r = rt.run(
        "ADD",
        "v4",
        Some(&ns1),
        "eth0",
        &rt.conf("0.4.0").to_string(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    assert_eq!(r.json()["cniVersion"], "0.4.0");
    assert_eq!(r.json()["ips"][0]["version"], "4");
    assert!(r.json()["interfaces"][1].get("mtu").is_none());
    rt.run(
        "DEL",
        "v4",
        Some(&ns1),
        "eth0",
        &rt.conf("0.4.0").to_string(),
    )
    .ok_empty("DEL 0.4.0");
    nothing_left("0.4.0 ADD/DEL");
    // Exhausted IPAM range: one address, two pods.
    let one = rt
        .conf_range("1.1.0", "10.244.0.200", "10.244.0.200")
        .to_string();
    let ns2 = pod_ns(tag, 2);
    netns_add(&ns2);
    let r = rt.run("ADD", "x1", Some(&ns1), "eth0", &one);
    assert_eq!(r.code, 0, "{r:?}");
    let r = rt.run("ADD", "x2", Some(&ns2), "eth0", &one);
    assert_eq!(r.code, 1, "{r:?}");
    let e = r.json();
    assert!(e["code"].as_u64().unwrap() > 0, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(msg.starts_with("ipam.type: host-local ADD failed"), "{msg}");
    assert!(msg.contains("no IP addresses available"), "{msg}");
    assert_eq!(rt.host_links().len(), 1, "only x1's veth");
    assert_eq!(rt.reserved(), vec!["10.244.0.200"]);
    assert_eq!(
        Command::new("ip")
            .args(["-n", &ns2, "link", "show", "eth0"])
            .output()
            .unwrap()
            .status
            .code(),
        Some(1),
        "no eth0 in the second pod"
    );
    rt.run("DEL", "x1", Some(&ns1), "eth0", &one)
        .ok_empty("DEL x1");
    nothing_left("exhausted range");
    // The gateway refuses (an address it already routes: a configured
    // pod's): the veth and the reservation are undone.
    let taken = rt
        .conf_range("1.1.0", "10.244.0.2", "10.244.0.2")
        .to_string();
    let msg =
        rt.run("ADD", "x3", Some(&ns1), "eth0", &taken)
            .spec_error("address routed", 101, "1.1.0");
    assert!(msg.contains("ip"), "{msg}");
    nothing_left("gateway refused");
    // Stopped gateway.
    b.stop();
    let msg = rt
        .add("x4", &ns1)
        .spec_error("stopped gateway", 11, "1.1.0");
    assert!(msg.starts_with("socket"), "{msg}");
    assert!(rt.host_links().is_empty());
    assert!(rt.reserved().is_empty(), "{:?}", rt.reserved());
    netns_del(&ns1);
    netns_del(&ns2);
}

/// `count` pods through the plugin (namespaces `ovp-{tag}-c{i}`).
fn add_pods(rt: &Runtime, tag: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range
        .map(|i| {
            let ns = pod_ns(tag, i);
            netns_add(&ns);
            let r = rt.add(&format!("pod{i}"), &ns);
            assert_eq!(r.code, 0, "ADD pod{i}: {r:?}");
            ns
        })
        .collect()
}

/// Every namespace pings node 1's pod at the same time; returns those
/// that lost any probe.
fn ping_all(b: &Bed, nss: &[String]) -> Vec<String> {
    let dst = b.bed.remote_pod_ip(1).to_string();
    let children: Vec<_> = nss
        .iter()
        .map(|ns| {
            Command::new("ip")
                .args([
                    "netns", "exec", ns, "ping", "-q", "-c", "5", "-i", "0.2", "-W", "3", &dst,
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    nss.iter()
        .zip(children)
        .filter_map(|(ns, c)| {
            let out = c.wait_with_output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            (!text.contains("5 packets transmitted, 5 received")).then(|| format!("{ns}: {text}"))
        })
        .collect()
}

#[test]
fn one_hundred_ten_pods_and_a_restart() {
    if !require_root("110 pods through overpass-cni (network namespaces, XDP, host-local)") {
        return;
    }
    let tag = "cn3";
    let mut b = Bed::new(tag);
    let t0 = Instant::now();
    let nss = add_pods(&b.rt, tag, 0..110);
    let added = t0.elapsed();
    let st = b.status();
    assert_eq!(st["attachments"].as_array().unwrap().len(), 110);
    assert_eq!(st["workers"], 1);
    // 1 underlay + 2 configured pods + 110 attached, on one worker.
    assert_eq!(st["xsk_slots_in_use"], 113, "{}", st["per_worker"]);
    // Retry the first round: a fresh pod's first probe may race its ARP-less
    // start; every pod must then get all its replies.
    let mut failed = ping_all(&b, &nss);
    if !failed.is_empty() {
        eprintln!("first round: {} pods lost probes; again", failed.len());
        failed = ping_all(&b, &nss);
    }
    assert!(
        failed.is_empty(),
        "{} pods lost replies: {failed:#?}",
        failed.len()
    );
    eprintln!(
        "110 pods: ADD took {added:?} ({:?} per pod); UMEM {} bytes in all, {} bytes per pod per worker",
        added / 110,
        st["umem_bytes_total"],
        st["bytes_per_pod_per_worker"]
    );
    // The 111th does not fit: a spec error, nothing left behind.
    let ns = pod_ns(tag, 110);
    netns_add(&ns);
    let r = b.rt.add("pod110", &ns);
    let msg = r.spec_error("111th pod", 101, "1.1.0");
    assert!(msg.contains("attach.max_pods"), "{msg}");
    assert_eq!(b.rt.host_links().len(), 110);
    assert_eq!(b.rt.reserved().len(), 110);
    netns_del(&ns);

    // Keep 20, restart: all 20 come back with traffic.
    for (i, ns) in nss.iter().enumerate().skip(20) {
        b.rt.del(&format!("pod{i}"), Some(ns)).ok_empty("DEL");
        netns_del(ns);
    }
    let keep = &nss[..20];
    b.stop();
    let t1 = Instant::now();
    b.start();
    let st = b.status();
    assert_eq!(
        st["attachments"].as_array().unwrap().len(),
        20,
        "{}",
        st["attachments"]
    );
    assert_eq!(st["not_restored"], json!([]));
    let failed = ping_all(&b, keep);
    assert!(failed.is_empty(), "after the restart: {failed:#?}");
    eprintln!(
        "restart with 20 attached pods: serving again after {:?}",
        t1.elapsed()
    );
    // A pod whose veth went while the gateway was down is reported, and
    // its route dropped.
    b.stop();
    netns_del(&keep[19]);
    // The kernel removes a deleted namespace's devices in the background:
    // wait until the pod's host end is gone too.
    wait_until("pod19's veth is gone", Duration::from_secs(10), || {
        b.rt.host_links().len() == 19
    });
    b.start();
    let st = b.status();
    assert_eq!(st["attachments"].as_array().unwrap().len(), 19);
    assert_eq!(st["not_restored"].as_array().unwrap().len(), 1, "{st}");
    let routes = common::prefixes(&b.url);
    assert!(
        !routes.iter().any(|p| p == "10.244.0.29/32"),
        "the lost pod's route is gone: {routes:?}"
    );
    for (i, ns) in keep.iter().enumerate() {
        b.rt.del(&format!("pod{i}"), Some(ns)).ok_empty("DEL");
    }
}

#[test]
fn churn_under_traffic_loses_nothing_and_returns_everything() {
    if !require_root("overpass-cni churn under traffic (network namespaces, XDP, host-local)") {
        return;
    }
    const CYCLES: usize = 500;
    let tag = "cn4";
    let b = Bed::new(tag);
    let pa = b.bed.ns(Ns::LocalPod('a'));
    let pb = b.bed.ns(Ns::LocalPod('b'));
    wait_until("pod a pings", Duration::from_secs(10), || b.ping_ok(&pa, 1));
    let ns = pod_ns(tag, 1);
    netns_add(&ns);
    // Warm up once so lazily created state (host-local's dir) is in the
    // baseline.
    assert_eq!(b.rt.add("warm", &ns).code, 0);
    b.rt.del("warm", Some(&ns)).ok_empty("DEL warm");
    // The worker runs as on a gateway whose dataplane core is its own: a
    // real-time thread (on this two-core machine the churn's processes and
    // the kernel work they cause would otherwise take the worker's core for
    // tens of milliseconds at a time).
    let pid = b.proc.as_ref().unwrap().pid();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if comm.trim().starts_with("overpass-w") {
            let tid = t.file_name().unwrap().to_string_lossy().into_owned();
            let st = Command::new("chrt")
                .args(["-f", "-p", "10", &tid])
                .status()
                .unwrap();
            assert!(st.success(), "chrt -f -p 10 {tid}");
        }
    }
    let before = b.accounting();
    let drops_before = gateway_drops(&b.url);

    let done = Arc::new(AtomicBool::new(false));
    // Steady traffic: pod a pings node 1's pod every 10 ms (in batches of
    // 200 that each end on their own, so no probe is cut off in flight);
    // pod b runs iperf3 TCP transfers (paced at 50 Mbit/s) to node 2's
    // pod, both through the gateway. The measuring tools run SCHED_FIFO on
    // CPU 0: the churn's processes must not starve them into losses of
    // their own.
    let pinger = {
        let dst = b.bed.remote_pod_ip(1).to_string();
        let pa = pa.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut tx, mut rx) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let out = control_cpu(&[
                    "ip", "netns", "exec", &pa, "chrt", "-f", "20", "ping", "-q", "-c", "200",
                    "-i", "0.01", "-W", "2", &dst,
                ])
                .output()
                .unwrap();
                let (t, r) = ping_counts(&String::from_utf8_lossy(&out.stdout));
                tx += t;
                rx += r;
            }
            (tx, rx)
        })
    };
    let iperf = {
        let bed_ns2 = b.bed.ns(Ns::NodePod(2));
        let ip2 = b.bed.remote_pod_ip(2);
        let pb = pb.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let mut runs = vec![];
            while !done.load(Ordering::Relaxed) {
                runs.push(iperf_tcp(&bed_ns2, ip2, &pb, 5));
            }
            runs
        })
    };
    let t0 = Instant::now();
    for i in 0..CYCLES {
        let id = format!("churn{i}");
        let r = b.rt.add(&id, &ns);
        assert_eq!(r.code, 0, "cycle {i} ADD: {r:?}");
        let r = b.rt.del(&id, Some(&ns));
        r.ok_empty(&format!("cycle {i} DEL"));
    }
    let took = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    let runs = iperf.join().unwrap();
    let (tx, rx) = pinger.join().unwrap();
    eprintln!(
        "{CYCLES} ADD/DEL cycles in {took:?} ({:?} per cycle); ping: {tx} sent, {rx} received; iperf3 TCP runs (bytes sent, received, retransmits): {runs:?}",
        took / CYCLES as u32,
    );
    // The gateway's own drops over the churn (every reason, the kernel's
    // AF_XDP ring drops included): reported.
    let drops_after = gateway_drops(&b.url);
    let retransmits: u64 = runs.iter().flatten().map(|(_, _, r)| r).sum();
    eprintln!(
        "gateway drops before {drops_before:?}, after {drops_after:?}; iperf3 TCP retransmits {retransmits}"
    );
    assert!(tx >= 1000, "{tx} pings");
    assert_eq!(tx, rx, "ping lost replies during the churn");
    assert!(!runs.is_empty());
    for r in &runs {
        let (sent, received, _) = r.as_ref().expect("iperf3 run");
        // Each 5-s transfer ran at its paced rate; what the receiver had not
        // read when iperf3 stopped is at most what the socket buffers hold.
        assert!(*received > 20_000_000, "{runs:?}");
        assert!(
            sent - received <= 4 << 20,
            "iperf3: {sent} bytes sent, {received} received: {runs:?}"
        );
    }
    let after = b.accounting();
    assert_eq!(
        before, after,
        "(free frames, XSK slots, fds) before and after"
    );
    netns_del(&ns);
}

/// The gateway's non-zero drop counters, by reason.
fn gateway_drops(url: &str) -> Vec<(String, u64)> {
    let counters: Value = client(url).get("/api/v1/counters").unwrap();
    counters["drops"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| Some((d["name"].as_str()?.to_string(), d["value"].as_u64()?)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// `transmitted, received` of ping's summary.
fn ping_counts(text: &str) -> (u64, u64) {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary: {text}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    (n[0], n[1])
}

/// A TCP iperf3 run of `seconds` paced at 50 Mbit/s: (bytes sent, bytes
/// received, retransmits).
fn iperf_tcp(
    server_ns: &str,
    server_ip: std::net::Ipv4Addr,
    client_ns: &str,
    seconds: u32,
) -> Result<(u64, u64, u64), String> {
    let ip = server_ip.to_string();
    let mut server = overpass_testkit::testbed::KillOnDrop(
        control_cpu(&[
            "ip", "netns", "exec", server_ns, "chrt", "-f", "20", "iperf3", "-s", "-1", "-B", &ip,
            "-p", "5299",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?,
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = Command::new("ip")
            .args(["netns", "exec", server_ns, "ss", "-Htln", "sport = :5299"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.stdout.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err("iperf3 server not listening".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = seconds.to_string();
    let out = control_cpu(&[
        "ip", "netns", "exec", client_ns, "iperf3", "-c", &ip, "-p", "5299", "-b", "50M", "-t",
        &secs, "-J",
    ])
    .output()
    .map_err(|e| e.to_string())?;
    let _ = server.0.wait();
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let (sent, recv) = (&v["end"]["sum_sent"], &v["end"]["sum_received"]);
    match (sent["bytes"].as_u64(), recv["bytes"].as_u64()) {
        (Some(s), Some(r)) => Ok((s, r, sent["retransmits"].as_u64().unwrap_or(0))),
        _ => Err(format!("no TCP summary: {}", v["error"])),
    }
}
