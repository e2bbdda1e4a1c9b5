//! `overpass-cni`: a CNI plugin (spec 1.1.0) that wires pods to a running
//! Overpass gateway.
//!
//! ADD creates a veth pair (host end `ovp` + 12 hex digits of a hash of the
//! container ID and interface name; the peer created directly in
//! `CNI_NETNS` as `CNI_IFNAME`), both ends at the gateway's tunnel MTU (or
//! the config's `mtu`), gets an address from the IPAM plugin named in
//! `ipam.type` (delegated as the spec says: same environment, the network
//! config on stdin, at the newest spec version the IPAM plugin supports),
//! configures the pod Calico-style (address /32, 169.254.1.1 as its
//! on-link default gateway with a permanent neighbour entry for the host
//! end's MAC, TX checksum offload off), registers the pod with the gateway
//! over its local socket (`socket`, default `/run/overpass/cni.sock`), and
//! prints the result. A failed ADD removes what it made (veth, IPAM
//! reservation). DEL is idempotent; CHECK verifies interface, address,
//! route and attachment against `prevResult`; GC detaches and removes
//! attachments not in `cni.dev/valid-attachments`; STATUS asks whether
//! the gateway is ready.
//!
//! Links and addresses are set with iproute2 (`ip`), the pod side through
//! `nsenter --net`, checksum offload with `ethtool`, as on every node.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// The versions this plugin reads configurations of and writes results in.
const SUPPORTED: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
const LATEST: &str = "1.1.0";
const DEFAULT_SOCKET: &str = "/run/overpass/cni.sock";
/// The pod's default gateway: an on-link link-local address, as Calico.
const POD_GATEWAY: &str = "169.254.1.1";

/// A spec error: `{cniVersion, code, msg, details}` on stdout, exit 1.
#[derive(Debug)]
struct CniError {
    code: u32,
    msg: String,
    details: String,
}

fn err(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError {
        code,
        msg: msg.into(),
        details: details.into(),
    }
}

// The spec's well-known codes.
const E_INCOMPATIBLE_VERSION: u32 = 1;
const E_UNKNOWN_CONTAINER: u32 = 3;
const E_INVALID_ENV: u32 = 4;
const E_IO: u32 = 5;
const E_DECODE: u32 = 6;
const E_INVALID_CONFIG: u32 = 7;
const E_TRY_LATER: u32 = 11;
const E_NOT_AVAILABLE: u32 = 50;
// Plugin-specific codes (100+).
/// Creating or configuring the veth pair failed.
const E_LINK: u32 = 100;
/// The gateway refused the attachment.
const E_GATEWAY: u32 = 101;
/// CHECK found the pod's network not as ADD left it.
const E_CHECK: u32 = 102;

fn main() -> ExitCode {
    let mut stdin = String::new();
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let command = std::env::var("CNI_COMMAND").unwrap_or_default();
    // Errors are reported in the config's version when it has a known one.
    let version = serde_json::from_str::<Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| LATEST.to_string());
    match run(&command, &stdin) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            let body = json!({
                "cniVersion": version,
                "code": e.code,
                "msg": e.msg,
                "details": e.details,
            });
            println!("{body}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: &str, stdin: &str) -> Result<Option<Value>, CniError> {
    if command == "VERSION" {
        let v = serde_json::from_str::<Value>(stdin)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .unwrap_or_else(|| LATEST.to_string());
        return Ok(Some(
            json!({"cniVersion": v, "supportedVersions": SUPPORTED}),
        ));
    }
    let conf = NetConf::parse(stdin)?;
    match command {
        "ADD" => add(&conf).map(Some),
        "DEL" => del(&conf).map(|()| None),
        "CHECK" => check(&conf).map(|()| None),
        "GC" => gc(&conf).map(|()| None),
        "STATUS" => status(&conf).map(|()| None),
        "" => Err(err(E_INVALID_ENV, "CNI_COMMAND is not set", "")),
        other => Err(err(
            E_INVALID_ENV,
            format!("CNI_COMMAND: unknown command {other:?}"),
            "expected ADD, DEL, CHECK, GC, STATUS or VERSION",
        )),
    }
}

/// The network configuration (stdin).
#[derive(Debug)]
struct NetConf {
    version: String,
    raw: Value,
    socket: PathBuf,
    mtu: Option<u32>,
}

impl NetConf {
    fn parse(stdin: &str) -> Result<NetConf, CniError> {
        let raw: Value = serde_json::from_str(stdin).map_err(|e| {
            err(
                E_DECODE,
                "failed to decode the network configuration",
                e.to_string(),
            )
        })?;
        if !raw.is_object() {
            return Err(err(
                E_DECODE,
                "failed to decode the network configuration",
                "not a JSON object",
            ));
        }
        let version = match raw.get("cniVersion") {
            Some(Value::String(v)) => v.clone(),
            Some(_) => {
                return Err(err(E_INVALID_CONFIG, "cniVersion: must be a string", ""));
            }
            None => return Err(err(E_INVALID_CONFIG, "cniVersion: missing", "")),
        };
        if !SUPPORTED.contains(&version.as_str()) {
            return Err(err(
                E_INCOMPATIBLE_VERSION,
                format!("cniVersion: incompatible CNI version {version:?}"),
                format!("this plugin supports {}", SUPPORTED.join(", ")),
            ));
        }
        match raw.get("name") {
            Some(Value::String(n)) if !n.is_empty() => {}
            _ => {
                return Err(err(
                    E_INVALID_CONFIG,
                    "name: missing or not a non-empty string",
                    "",
                ));
            }
        }
        let socket = match raw.get("socket") {
            None => PathBuf::from(DEFAULT_SOCKET),
            Some(Value::String(s)) if s.starts_with('/') => PathBuf::from(s),
            Some(_) => {
                return Err(err(
                    E_INVALID_CONFIG,
                    "socket: must be an absolute path (the gateway's attach.socket)",
                    "",
                ));
            }
        };
        let mtu = match raw.get("mtu") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(m) if (576..=9000).contains(&m) => Some(m as u32),
                _ => {
                    return Err(err(
                        E_INVALID_CONFIG,
                        "mtu: must be a number from 576 to 9000",
                        "",
                    ));
                }
            },
        };
        Ok(NetConf {
            version,
            raw,
            socket,
            mtu,
        })
    }

    fn ipam_type(&self) -> Result<String, CniError> {
        match self.raw.get("ipam").and_then(|i| i.get("type")) {
            Some(Value::String(t)) if !t.is_empty() && !t.contains('/') => Ok(t.clone()),
            Some(_) => Err(err(
                E_INVALID_CONFIG,
                "ipam.type: must be a plugin name",
                "",
            )),
            None => Err(err(
                E_INVALID_CONFIG,
                "ipam.type: missing (an IPAM plugin such as host-local)",
                "",
            )),
        }
    }
}

fn env(name: &str) -> Result<String, CniError> {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Ok(v),
        _ => Err(err(E_INVALID_ENV, format!("{name} is not set"), "")),
    }
}

/// The host end's name: `ovp` + 12 hex digits of FNV-1a-64 over the
/// container ID and the pod's interface name (15 characters, IFNAMSIZ − 1).
fn host_ifname(container_id: &str, ifname: &str) -> String {
    format!("ovp{:012x}", fnv1a(container_id, ifname) >> 16)
}

/// FNV-1a-64 over the container ID, a zero byte and the interface name.
fn fnv1a(container_id: &str, ifname: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Runs a program; its stderr (or stdout) is the error.
fn sh(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if msg.is_empty() {
            msg = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        Err(format!("{program} {}: {msg}", args.join(" ")))
    }
}

/// Runs `ip -batch -` with `commands` (one per line), in the network
/// namespace at `netns` when given: one process for many changes.
fn ip_batch(netns: Option<&str>, commands: &str) -> Result<(), String> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={ns}")).arg("ip");
            c
        }
        None => Command::new("ip"),
    };
    let mut child = cmd
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("ip -batch: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(commands.as_bytes())
            .map_err(|e| format!("ip -batch: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("ip -batch: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip -batch ({}): {}",
            commands.trim().replace('\n', "; "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a program in the network namespace at `netns`.
fn in_ns(netns: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let net = format!("--net={netns}");
    let mut all = vec![net.as_str(), program];
    all.extend_from_slice(args);
    sh("nsenter", &all)
}

/// `ip -j link show` of one link: its JSON object.
fn link_json(out: &str) -> Option<Value> {
    serde_json::from_str::<Value>(out).ok()?.get(0).cloned()
}

fn link_exists(ifname: &str) -> bool {
    sh("ip", &["link", "show", "dev", ifname]).is_ok()
}

// ---------------------------------------------------------------- gateway

/// One request to the gateway's local socket.
fn gateway(conf: &NetConf, request: &Value) -> Result<Value, CniError> {
    let unreachable = |e: String| {
        err(
            E_TRY_LATER,
            format!(
                "socket: the Overpass gateway does not answer on {} (is it running with an [attach] section?)",
                conf.socket.display()
            ),
            e,
        )
    };
    let mut s = UnixStream::connect(&conf.socket).map_err(|e| unreachable(e.to_string()))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(5)));
    let mut line = serde_json::to_vec(request).expect("requests serialise");
    line.push(b'\n');
    s.write_all(&line).map_err(|e| unreachable(e.to_string()))?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)
        .map_err(|e| unreachable(e.to_string()))?;
    let v: Value = serde_json::from_str(answer.trim())
        .map_err(|e| unreachable(format!("unreadable answer: {e}")))?;
    if let Some(ok) = v.get("ok") {
        return Ok(ok.clone());
    }
    let e = v.get("error").cloned().unwrap_or(Value::Null);
    let field = e.get("field").and_then(Value::as_str).unwrap_or("");
    let message = e.get("message").and_then(Value::as_str).unwrap_or("");
    let kind = e.get("kind").and_then(Value::as_str).unwrap_or("");
    let code = if kind == "unavailable" {
        E_TRY_LATER
    } else {
        E_GATEWAY
    };
    Err(CniError {
        code,
        msg: format!("the gateway refused: {field}: {message}"),
        details: kind.to_string(),
    })
}

fn gateway_status(conf: &NetConf) -> Result<Value, CniError> {
    gateway(conf, &json!({"op": "status"}))
}

// ------------------------------------------------------------------- IPAM

/// Compares dotted versions numerically.
fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

fn ipam_binary(ipam: &str) -> Result<PathBuf, CniError> {
    let path = env("CNI_PATH")?;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(ipam))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            err(
                E_INVALID_CONFIG,
                format!("ipam.type: no plugin {ipam:?} in CNI_PATH"),
                path.clone(),
            )
        })
}

/// Runs the IPAM plugin for `command` with this process's environment
/// (CNI_COMMAND and, for GC's clean-ups, the container's identity
/// replaced) and `conf` on stdin, at the newest version both support.
fn ipam_exec(
    conf: &NetConf,
    command: &str,
    identity: Option<(&str, &str)>,
) -> Result<Value, CniError> {
    let ipam = conf.ipam_type()?;
    let bin = ipam_binary(&ipam)?;
    let exec = |command: &str, stdin: &[u8]| -> Result<(bool, String), CniError> {
        let mut cmd = Command::new(&bin);
        cmd.env("CNI_COMMAND", command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((id, ifname)) = identity {
            cmd.env("CNI_CONTAINERID", id)
                .env("CNI_IFNAME", ifname)
                .env("CNI_NETNS", "");
        }
        let mut child = cmd.spawn().map_err(|e| {
            err(
                E_IO,
                format!("ipam.type: running {}", bin.display()),
                e.to_string(),
            )
        })?;
        if let Some(mut i) = child.stdin.take() {
            let _ = i.write_all(stdin);
        }
        let out = child.wait_with_output().map_err(|e| {
            err(
                E_IO,
                format!("ipam.type: running {}", bin.display()),
                e.to_string(),
            )
        })?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    };
    // The delegate speaks its own set of versions (Debian's host-local:
    // up to 1.0.0): ask it, and hand it the config at the newest version
    // both sides support.
    let (ok, out) = exec("VERSION", br#"{"cniVersion":"0.4.0"}"#)?;
    let supported: Vec<String> = ok
        .then(|| serde_json::from_str::<Value>(&out).ok())
        .flatten()
        .and_then(|v| {
            v.get("supportedVersions")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
        })
        .unwrap_or_default();
    let ours = version_key(&conf.version);
    let version = supported
        .iter()
        .filter(|v| version_key(v) <= ours)
        .max_by_key(|v| version_key(v))
        .cloned()
        .ok_or_else(|| {
            err(
                E_INCOMPATIBLE_VERSION,
                format!(
                    "ipam.type: {ipam} supports none of the versions up to {}",
                    conf.version
                ),
                supported.join(", "),
            )
        })?;
    let mut delegated = conf.raw.clone();
    delegated["cniVersion"] = json!(version);
    if let Some(prev) = delegated.get_mut("prevResult") {
        prev["cniVersion"] = json!(version);
    }
    let stdin = serde_json::to_vec(&delegated).expect("config serialises");
    let (ok, out) = exec(command, &stdin)?;
    let v: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    if ok {
        return Ok(v);
    }
    // The delegate's own error, passed through.
    Err(CniError {
        code: v
            .get("code")
            .and_then(Value::as_u64)
            .map_or(E_IO, |c| c as u32),
        msg: format!(
            "ipam.type: {ipam} {command} failed: {}",
            v.get("msg").and_then(Value::as_str).unwrap_or(out.trim())
        ),
        details: v
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
    })
}

/// The first IPv4 address of an IPAM result.
fn ipam_address(result: &Value) -> Option<String> {
    result
        .get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .find(|a| !a.contains(':'))
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
}

// -------------------------------------------------------------------- ADD

fn add(conf: &NetConf) -> Result<Value, CniError> {
    let container_id = env("CNI_CONTAINERID")?;
    let netns = env("CNI_NETNS")?;
    let ifname = env("CNI_IFNAME")?;
    env("CNI_PATH")?;
    conf.ipam_type()?;
    if ifname.len() > 15 || ifname.contains(['/', ' ']) {
        return Err(err(
            E_INVALID_ENV,
            format!("CNI_IFNAME: {ifname:?} is not an interface name"),
            "",
        ));
    }
    if !Path::new(&netns).exists() {
        return Err(err(
            E_UNKNOWN_CONTAINER,
            format!("CNI_NETNS: {netns} does not exist"),
            "",
        ));
    }
    let status = gateway(conf, &json!({"op": "ready"}))?;
    if status.get("ready").and_then(Value::as_bool) != Some(true) {
        return Err(err(E_TRY_LATER, "socket: the gateway is not ready", ""));
    }
    let workers = status.get("workers").and_then(Value::as_u64).unwrap_or(1);
    let mtu = conf.mtu.unwrap_or_else(|| {
        status
            .get("tunnel_mtu")
            .and_then(Value::as_u64)
            .unwrap_or(1450) as u32
    });
    let host = host_ifname(&container_id, &ifname);
    let (host_mac, pod_mac) = macs(&container_id, &ifname);
    // The pair first (its name is the container's: creating it fails if
    // this container was added already, and then nothing is undone).
    let (mtu_s, q) = (mtu.to_string(), workers.to_string());
    if let Err(e) = ip_batch(
        None,
        &format!(
            "link add {host} address {host_mac} mtu {mtu_s} numtxqueues {q} numrxqueues {q} type veth peer name {ifname} address {pod_mac} mtu {mtu_s} numtxqueues {q} numrxqueues {q} netns {netns}\nlink set dev {host} up\n"
        ),
    ) {
        if e.contains("File exists") && link_exists(&host) {
            return Err(err(
                E_LINK,
                format!(
                    "{host} exists already: {container_id}/{ifname} is already added (DEL it first)"
                ),
                e,
            ));
        }
        let _ = sh("ip", &["link", "del", "dev", &host]);
        return Err(err(
            E_LINK,
            format!("creating the veth pair {host}/{ifname}"),
            e,
        ));
    }
    let undo_link = || {
        let _ = sh("ip", &["link", "del", "dev", &host]);
    };
    let ipam = match ipam_exec(conf, "ADD", None) {
        Ok(r) => r,
        Err(e) => {
            undo_link();
            return Err(e);
        }
    };
    let Some(ip) = ipam_address(&ipam) else {
        let _ = ipam_exec(conf, "DEL", None);
        undo_link();
        return Err(err(
            E_INVALID_CONFIG,
            "ipam: the IPAM plugin gave no IPv4 address",
            ipam.to_string(),
        ));
    };
    let pod = Pod {
        container_id: &container_id,
        netns: &netns,
        ifname: &ifname,
        host: &host,
        host_mac: &host_mac,
        pod_mac: &pod_mac,
        ip: &ip,
        mtu,
    };
    match wire(conf, &pod) {
        Ok(result) => Ok(result),
        Err(e) => {
            // Leave nothing half-made: the veth (its peer goes with it) and
            // the address reservation.
            undo_link();
            let _ = ipam_exec(conf, "DEL", None);
            Err(e)
        }
    }
}

/// The pair's MACs, derived from the container's identity (locally
/// administered unicast: 0a:… for the host end, 0e:… for the pod's).
fn macs(container_id: &str, ifname: &str) -> (String, String) {
    let h = fnv1a(container_id, ifname).to_be_bytes();
    let mac = |first: u8| {
        format!(
            "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            h[0], h[1], h[2], h[3], h[4]
        )
    };
    (mac(0x0a), mac(0x0e))
}

/// One pod being wired.
struct Pod<'a> {
    container_id: &'a str,
    netns: &'a str,
    ifname: &'a str,
    host: &'a str,
    host_mac: &'a str,
    pod_mac: &'a str,
    ip: &'a str,
    mtu: u32,
}

/// Configures the pod's side and registers it with the gateway; the
/// result to print.
fn wire(conf: &NetConf, pod: &Pod<'_>) -> Result<Value, CniError> {
    let Pod {
        container_id,
        netns,
        ifname,
        host,
        host_mac,
        pod_mac,
        ip,
        mtu,
    } = *pod;
    let link = |e: String| {
        err(
            E_LINK,
            format!("setting up the veth pair {host}/{ifname}"),
            e,
        )
    };
    let addr = format!("{ip}/32");
    // Pod side, Calico-style, in one `ip -batch` in the pod's namespace.
    ip_batch(
        Some(netns),
        &format!(
            "link set dev {ifname} up\n\
             addr add {addr} dev {ifname}\n\
             route add {POD_GATEWAY} dev {ifname} scope link\n\
             route add default via {POD_GATEWAY} dev {ifname}\n\
             neigh replace {POD_GATEWAY} lladdr {host_mac} dev {ifname} nud permanent\n"
        ),
    )
    .map_err(link)?;
    // Frames the pod sends reach the gateway's AF_XDP sockets with no one
    // to finish a partial checksum.
    in_ns(netns, "ethtool", &["-K", ifname, "tx", "off"]).map_err(link)?;
    gateway(
        conf,
        &json!({"op": "attach", "pod": {
            "container_id": container_id,
            "ifname": ifname,
            "interface": host,
            "ip": ip,
            "mac": pod_mac,
            "mtu": mtu,
        }}),
    )?;
    let mut pod_if = json!({"name": ifname, "mac": pod_mac, "sandbox": netns});
    if conf.version == "1.1.0" {
        pod_if["mtu"] = json!(mtu);
    }
    let mut ipcfg = json!({"address": addr, "gateway": POD_GATEWAY, "interface": 1});
    if version_key(&conf.version) < version_key("1.0.0") {
        ipcfg["version"] = json!("4");
    }
    Ok(json!({
        "cniVersion": conf.version,
        "interfaces": [{"name": host, "mac": host_mac}, pod_if],
        "ips": [ipcfg],
        "routes": [{"dst": "0.0.0.0/0", "gw": POD_GATEWAY}],
        "dns": {},
    }))
}

// -------------------------------------------------------------------- DEL

fn del(conf: &NetConf) -> Result<(), CniError> {
    let container_id = env("CNI_CONTAINERID")?;
    let ifname = env("CNI_IFNAME")?;
    env("CNI_PATH")?;
    conf.ipam_type()?;
    let host = host_ifname(&container_id, &ifname);
    remove(conf, &host, None)
}

/// Detaches `host` from the gateway, deletes the veth and releases the
/// address (for `identity`, or this invocation's container). Whatever is
/// already gone is not an error; a gateway that does not answer is
/// reported on stderr (a restarted gateway drops attachments whose veth
/// is gone).
fn remove(conf: &NetConf, host: &str, identity: Option<(&str, &str)>) -> Result<(), CniError> {
    match gateway(conf, &json!({"op": "detach", "interface": host})) {
        Ok(_) => {}
        Err(e) if e.details == "not-found" => {}
        Err(e) => eprintln!("overpass-cni: detaching {host}: {}: {}", e.msg, e.details),
    }
    if let Err(e) = sh("ip", &["link", "del", "dev", host])
        && link_exists(host)
    {
        return Err(err(E_LINK, format!("deleting {host}"), e));
    }
    ipam_exec(conf, "DEL", identity).map(|_| ())
}

// ------------------------------------------------------------------ CHECK

fn check(conf: &NetConf) -> Result<(), CniError> {
    let container_id = env("CNI_CONTAINERID")?;
    let netns = env("CNI_NETNS")?;
    let ifname = env("CNI_IFNAME")?;
    env("CNI_PATH")?;
    let prev = conf.raw.get("prevResult").ok_or_else(|| {
        err(
            E_INVALID_CONFIG,
            "prevResult: missing (CHECK needs ADD's result)",
            "",
        )
    })?;
    let ip = ipam_address(prev)
        .ok_or_else(|| err(E_INVALID_CONFIG, "prevResult.ips: no IPv4 address", ""))?;
    let host = host_ifname(&container_id, &ifname);
    let bad = |what: String| err(E_CHECK, what, "");
    if !link_exists(&host) {
        return Err(bad(format!("interface {host} (host end) is missing")));
    }
    if !Path::new(&netns).exists() {
        return Err(err(
            E_UNKNOWN_CONTAINER,
            format!("CNI_NETNS: {netns} does not exist"),
            "",
        ));
    }
    let addrs = in_ns(&netns, "ip", &["-j", "addr", "show", "dev", &ifname])
        .map_err(|e| bad(format!("interface {ifname} in {netns}: {e}")))?;
    let has_addr = link_json(&addrs)
        .and_then(|l| l.get("addr_info")?.as_array().cloned())
        .is_some_and(|a| {
            a.iter().any(|i| {
                i.get("local").and_then(Value::as_str) == Some(ip.as_str())
                    && i.get("prefixlen").and_then(Value::as_u64) == Some(32)
            })
        });
    if !has_addr {
        return Err(bad(format!("address {ip}/32 is not on {ifname}")));
    }
    let routes =
        in_ns(&netns, "ip", &["-j", "route", "show", "default"]).map_err(|e| bad(e.to_string()))?;
    let has_route = serde_json::from_str::<Value>(&routes)
        .ok()
        .and_then(|r| r.as_array().cloned())
        .is_some_and(|r| {
            r.iter().any(|r| {
                r.get("gateway").and_then(Value::as_str) == Some(POD_GATEWAY)
                    && r.get("dev").and_then(Value::as_str) == Some(ifname.as_str())
            })
        });
    if !has_route {
        return Err(bad(format!(
            "no default route via {POD_GATEWAY} dev {ifname}"
        )));
    }
    let status = gateway_status(conf)?;
    let attached = status
        .get("attachments")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|a| {
                a.get("interface").and_then(Value::as_str) == Some(host.as_str())
                    && a.get("ip").and_then(Value::as_str) == Some(ip.as_str())
                    && a.get("container_id").and_then(Value::as_str) == Some(container_id.as_str())
            })
        });
    if !attached {
        return Err(bad(format!(
            "the gateway has no attachment of {host} with {ip}"
        )));
    }
    ipam_exec(conf, "CHECK", None).map(|_| ())
}

// --------------------------------------------------------------------- GC

fn gc(conf: &NetConf) -> Result<(), CniError> {
    env("CNI_PATH")?;
    conf.ipam_type()?;
    let valid: Vec<(String, String)> = match conf.raw.get("cni.dev/valid-attachments") {
        None => vec![],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                let id = v.get("containerID").and_then(Value::as_str);
                let ifname = v.get("ifname").and_then(Value::as_str);
                match (id, ifname) {
                    (Some(i), Some(n)) => Ok((i.to_string(), n.to_string())),
                    _ => Err(err(
                        E_INVALID_CONFIG,
                        "cni.dev/valid-attachments: entries need containerID and ifname",
                        v.to_string(),
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(err(
                E_INVALID_CONFIG,
                "cni.dev/valid-attachments: must be an array",
                "",
            ));
        }
    };
    let status = gateway_status(conf)?;
    let attachments = status
        .get("attachments")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for a in attachments {
        let s = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let (id, ifname, host) = (s("container_id"), s("ifname"), s("interface"));
        if valid.iter().any(|(i, n)| *i == id && *n == ifname) {
            continue;
        }
        remove(conf, &host, Some((&id, &ifname)))?;
    }
    Ok(())
}

// ----------------------------------------------------------------- STATUS

fn status(conf: &NetConf) -> Result<(), CniError> {
    let not_available = |e: CniError| {
        err(
            E_NOT_AVAILABLE,
            format!("the plugin cannot add pods: {}", e.msg),
            e.details,
        )
    };
    let s = gateway(conf, &json!({"op": "ready"})).map_err(not_available)?;
    if s.get("ready").and_then(Value::as_bool) != Some(true) {
        return Err(err(E_NOT_AVAILABLE, "the gateway is not ready", ""));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_stable_and_fit() {
        let a = host_ifname("abc", "eth0");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("ovp"));
        assert_eq!(a, host_ifname("abc", "eth0"));
        assert_ne!(a, host_ifname("abc", "eth1"));
        assert_ne!(a, host_ifname("abd", "eth0"));
    }

    #[test]
    fn config_errors_name_the_field() {
        let e = NetConf::parse("{").unwrap_err();
        assert_eq!(e.code, E_DECODE);
        let e = NetConf::parse(r#"{"cniVersion":"9.9.9","name":"x"}"#).unwrap_err();
        assert_eq!(e.code, E_INCOMPATIBLE_VERSION);
        assert!(e.msg.starts_with("cniVersion"), "{}", e.msg);
        let e = NetConf::parse(r#"{"cniVersion":"1.1.0"}"#).unwrap_err();
        assert_eq!(e.code, E_INVALID_CONFIG);
        assert!(e.msg.starts_with("name"), "{}", e.msg);
        let e = NetConf::parse(r#"{"cniVersion":"1.1.0","name":"n","socket":"rel"}"#).unwrap_err();
        assert!(e.msg.starts_with("socket"), "{}", e.msg);
        let c = NetConf::parse(r#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap();
        assert!(c.ipam_type().unwrap_err().msg.starts_with("ipam.type"));
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("1.0.0") < version_key("1.1.0"));
        assert!(version_key("0.4.0") < version_key("1.0.0"));
        assert!(version_key("0.10.0") > version_key("0.4.0"));
    }
}
