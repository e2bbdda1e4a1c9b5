//! `overpass check`: a preflight of this host against a configuration.
//!
//! Inspects the kernel (version, build options, BTF, whether the XDP
//! program loads, whether AF_XDP sockets can be created), the privileges
//! and memlock limit of the calling process, every configured interface
//! (inside `gateway.netns` when set: exists, up, native XDP and zero-copy
//! support by driver, queue count against the planned workers, MTU against
//! the encapsulation overhead of every peer, offloads that break tunnels,
//! IRQ placement) and the CPU cores the workers would be pinned to.
//!
//! Every finding is data ([`Finding`]: severity, a stable check name, the
//! subject, what was found, how to fix it), so the rules are testable; the
//! gathering and the rules that need no system access are separate
//! functions ([`kernel_version_findings`], [`mtu_findings`], …). A
//! [`Severity::Blocker`] is something that stops the gateway from starting
//! or from carrying traffic as configured; `overpass check` exits non-zero
//! when there is one. Nothing here changes the system: no XDP program is
//! attached (loading one without attaching is the probe), no setting is
//! written.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::process::Command;

use serde::Serialize;

use overpass_dataplane::fib::Encap;

use crate::afxdp::xsk;
use crate::config::{BindMode, Config};
use crate::control::ports;
use crate::host::netdev::{self, NetdevInfo};
use crate::host::{cpus, ethtool, netns};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// As it should be (the message says what was verified).
    Ok,
    /// Works, but slower, less robust or unverifiable; the fix says how to do better.
    Warn,
    /// The gateway would not start, or would not carry traffic as configured.
    Blocker,
}

impl Severity {
    /// `ok`, `warn` or `BLOCKER`, as printed.
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "warn",
            Severity::Blocker => "BLOCKER",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.label())
    }
}

/// One finding of the preflight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable name of the rule, e.g. `nic.mtu`, `kernel.config`, `cpu.isolation`.
    pub check: String,
    /// What it is about: `kernel`, an interface name, `peer[0]`, `core 1`, …
    pub subject: String,
    /// What was found.
    pub message: String,
    /// What to do about it (absent when nothing needs doing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Finding {
    fn new(
        severity: Severity,
        check: &str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: Option<String>,
    ) -> Finding {
        Finding {
            severity,
            check: check.to_string(),
            subject: subject.into(),
            message: message.into(),
            fix,
        }
    }

    fn ok(check: &str, subject: impl Into<String>, message: impl Into<String>) -> Finding {
        Finding::new(Severity::Ok, check, subject, message, None)
    }

    fn warn(
        check: &str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Warn, check, subject, message, Some(fix.into()))
    }

    fn blocker(
        check: &str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding::new(Severity::Blocker, check, subject, message, Some(fix.into()))
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<8} {:<18} {}: {}",
            self.severity, self.check, self.subject, self.message
        )?;
        if let Some(fix) = &self.fix {
            write!(f, "  => fix: {fix}")?;
        }
        Ok(())
    }
}

/// The findings of one preflight run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// Findings of one severity.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// Whether anything blocks the gateway.
    pub fn has_blockers(&self) -> bool {
        self.count(Severity::Blocker) > 0
    }

    /// Findings of a rule (`check` name), optionally about one subject.
    pub fn find(&self, check: &str, subject: Option<&str>) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.check == check && subject.is_none_or(|s| f.subject == s))
            .collect()
    }

    /// The human-readable report: one line per finding, then a summary.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s += &format!("{f}\n");
        }
        s += &format!(
            "summary: {} ok, {} warn, {} BLOCKER\n",
            self.count(Severity::Ok),
            self.count(Severity::Warn),
            self.count(Severity::Blocker)
        );
        s
    }
}

/// Output format of [`run_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// `overpass check --config FILE`: prints the findings; an error (non-zero
/// exit) when the configuration does not load or something blocks.
pub fn run(config: &Path) -> anyhow::Result<()> {
    run_with(config, Format::Text)
}

/// As [`run`], printing text or JSON (`{"config", "findings", "summary"}`).
pub fn run_with(path: &Path, format: Format) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let report = inspect(&config);
    match format {
        Format::Text => {
            println!("overpass check: {}", path.display());
            print!("{}", report.render());
        }
        Format::Json => {
            let v = serde_json::json!({
                "config": path.display().to_string(),
                "findings": report.findings,
                "summary": {
                    "ok": report.count(Severity::Ok),
                    "warn": report.count(Severity::Warn),
                    "blocker": report.count(Severity::Blocker),
                },
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    let n = report.count(Severity::Blocker);
    if n > 0 {
        anyhow::bail!("{n} blocker(s): the gateway cannot run as configured on this host");
    }
    Ok(())
}

/// Runs every check of this host against `config` (already validated).
pub fn inspect(config: &Config) -> Report {
    let mut out = vec![];
    let release = kernel_release();
    let version = parse_kernel_version(&release);
    out.extend(kernel_version_findings(&release, version));
    out.extend(kernel_config_findings(version.is_some_and(|v| v >= (5, 8))));
    out.push(btf_finding());
    out.push(af_xdp_socket_finding());
    out.push(xdp_load_finding(config));
    out.extend(privilege_findings(read_cap_eff()));
    let umem = umem_bytes_estimate(config);
    if let Some(f) = attach_finding(config, umem) {
        out.push(f);
    }
    out.push(memlock_finding(
        memlock_limit(),
        has_cap(read_cap_eff(), CAP_IPC_LOCK),
        umem,
        version,
    ));
    out.extend(interface_findings(config));
    out.extend(cpu_findings(config));
    Report { findings: out }
}

// ---------------------------------------------------------------------------
// Kernel

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `(major, minor)` of a release string like `6.1.0-18-amd64`.
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Version rules: bpf_link XDP attach needs 5.9, an AF_XDP UMEM shared
/// between different devices and queues (one UMEM per worker) needs 5.10.
pub fn kernel_version_findings(release: &str, version: Option<(u32, u32)>) -> Vec<Finding> {
    let Some(v) = version else {
        return vec![Finding::warn(
            "kernel.version",
            "kernel",
            format!("cannot parse the kernel release {release:?}"),
            "run on Linux 5.10 or later",
        )];
    };
    if v < (5, 10) {
        return vec![Finding::blocker(
            "kernel.version",
            "kernel",
            format!(
                "Linux {release}: XDP bpf_links need 5.9 and an AF_XDP UMEM shared across devices needs 5.10"
            ),
            "upgrade the kernel to 5.10 or later (Debian 12: 6.1)",
        )];
    }
    let mut out = vec![Finding::ok(
        "kernel.version",
        "kernel",
        format!("Linux {release} (bpf_link XDP, shared UMEM across devices)"),
    )];
    if v < (5, 11) {
        out.push(Finding::warn(
            "kernel.version",
            "kernel",
            "before 5.11 BPF maps are charged to RLIMIT_MEMLOCK, not the memory cgroup",
            "keep LimitMEMLOCK=infinity in the unit (deploy/overpass.service has it)",
        ));
    }
    out
}

/// Kernel build options and whether they block: (option, blocker?, why).
const KCONFIG: &[(&str, bool, &str)] = &[
    ("CONFIG_BPF_SYSCALL", true, "the bpf() system call"),
    ("CONFIG_XDP_SOCKETS", true, "AF_XDP sockets"),
    (
        "CONFIG_BPF_JIT",
        false,
        "the BPF JIT (the interpreter is slow)",
    ),
    (
        "CONFIG_DEBUG_INFO_BTF",
        false,
        "kernel BTF (/sys/kernel/btf/vmlinux) for bpftool inspection",
    ),
];

/// Parses `CONFIG_X=y|m|"…"` lines; `# CONFIG_X is not set` lines are absent.
pub fn parse_kconfig(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter(|l| l.starts_with("CONFIG_"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Rules over a parsed kernel configuration (`source` names where it came from).
pub fn kconfig_findings(
    kconfig: &std::collections::HashMap<String, String>,
    source: &str,
    has_cap_bpf: bool,
) -> Vec<Finding> {
    let mut out = vec![];
    for (opt, blocks, why) in KCONFIG {
        match kconfig.get(*opt).map(String::as_str) {
            Some("y") => out.push(Finding::ok(
                "kernel.config",
                *opt,
                format!("=y in {source}: {why}"),
            )),
            other => {
                let msg = format!(
                    "is {} in {source}: no {why}",
                    other.map_or("not set".to_string(), |v| format!("={v}"))
                );
                let fix = format!("use a kernel built with {opt}=y (Debian's stock kernels are)");
                out.push(match blocks {
                    true => Finding::blocker("kernel.config", *opt, msg, fix),
                    false => Finding::warn("kernel.config", *opt, msg, fix),
                });
            }
        }
    }
    if !has_cap_bpf {
        out.push(Finding::ok(
            "kernel.config",
            "CAP_BPF",
            "kernel before 5.8: loading BPF needs CAP_SYS_ADMIN (the unit grants it)",
        ));
    }
    out
}

fn kernel_config_findings(has_cap_bpf: bool) -> Vec<Finding> {
    let release = kernel_release();
    let boot = format!("/boot/config-{release}");
    let text = match std::fs::read_to_string(&boot) {
        Ok(t) => Some((t, boot.clone())),
        Err(_) => Command::new("gzip")
            .args(["-dc", "/proc/config.gz"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| {
                (
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                    "/proc/config.gz".to_string(),
                )
            }),
    };
    match text {
        Some((text, source)) => kconfig_findings(&parse_kconfig(&text), &source, has_cap_bpf),
        None => vec![Finding::warn(
            "kernel.config",
            "kernel",
            format!(
                "neither {boot} nor /proc/config.gz is readable: build options unverified (the probes below still test them)"
            ),
            "install the kernel's config file (Debian ships /boot/config-*) or `modprobe configs`",
        )],
    }
}

fn btf_finding() -> Finding {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Finding::ok(
            "kernel.btf",
            "kernel",
            "/sys/kernel/btf/vmlinux present (bpftool can show the maps' types)",
        )
    } else {
        Finding::warn(
            "kernel.btf",
            "kernel",
            "no /sys/kernel/btf/vmlinux: the program loads (it uses no CO-RE) but bpftool cannot resolve kernel types",
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

fn af_xdp_socket_finding() -> Finding {
    let Err(e) = xsk::af_xdp_available() else {
        return Finding::ok("af_xdp.socket", "kernel", "an AF_XDP socket can be created");
    };
    let fix = match e.raw_os_error() {
        Some(libc::EAFNOSUPPORT) => "use a kernel built with CONFIG_XDP_SOCKETS=y",
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "run with CAP_NET_RAW (root, or the capabilities of deploy/overpass.service)"
        }
        _ => "see the error; AF_XDP needs CONFIG_XDP_SOCKETS=y and CAP_NET_RAW",
    };
    Finding::blocker(
        "af_xdp.socket",
        "kernel",
        format!("socket(AF_XDP): {e}"),
        fix,
    )
}

fn xdp_load_finding(config: &Config) -> Finding {
    let ports = config
        .underlay
        .first()
        .map(|u| u.vxlan_ports.clone())
        .unwrap_or_default();
    match overpass_xdp::Steering::load(&ports) {
        Ok(steering) => {
            drop(steering);
            Finding::ok(
                "xdp.load",
                "kernel",
                "the XDP steering program passes the verifier and loads (not attached)",
            )
        }
        Err(e) => Finding::blocker(
            "xdp.load",
            "kernel",
            format!("loading the XDP program: {e:#}"),
            "run as root (CAP_BPF + CAP_NET_ADMIN, or CAP_SYS_ADMIN before 5.8) on a kernel with CONFIG_BPF_SYSCALL=y; see the verifier log above",
        ),
    }
}

// ---------------------------------------------------------------------------
// Privileges and memlock

const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// What the gateway needs, and why.
const CAPS: &[(u32, &str, &str)] = &[
    (
        CAP_NET_ADMIN,
        "CAP_NET_ADMIN",
        "attach XDP, bind AF_XDP sockets",
    ),
    (CAP_NET_RAW, "CAP_NET_RAW", "create AF_XDP sockets"),
    (
        CAP_IPC_LOCK,
        "CAP_IPC_LOCK",
        "lock UMEM pages beyond RLIMIT_MEMLOCK",
    ),
    (
        CAP_SYS_ADMIN,
        "CAP_SYS_ADMIN",
        "setns() into gateway.netns; bpf() before 5.8",
    ),
    (
        CAP_BPF,
        "CAP_BPF",
        "load the XDP program and its maps (5.8+)",
    ),
];

fn read_cap_eff() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

fn has_cap(eff: Option<u64>, cap: u32) -> bool {
    eff.is_some_and(|e| e & (1 << cap) != 0)
}

/// Missing capabilities are a warning: the check may run as an operator
/// while the service (deploy/overpass.service) gets its own set; the
/// probes that need them fail as blockers of their own.
pub fn privilege_findings(eff: Option<u64>) -> Vec<Finding> {
    let missing: Vec<String> = CAPS
        .iter()
        .filter(|(cap, ..)| !has_cap(eff, *cap))
        .map(|(_, name, why)| format!("{name} ({why})"))
        .collect();
    if missing.is_empty() {
        return vec![Finding::ok(
            "privileges",
            "process",
            "has CAP_NET_ADMIN, CAP_NET_RAW, CAP_IPC_LOCK, CAP_SYS_ADMIN, CAP_BPF",
        )];
    }
    vec![Finding::warn(
        "privileges",
        "process",
        format!(
            "this check runs without {}: probes needing them fail",
            missing.join(", ")
        ),
        "run `overpass check` as root (the service gets these from deploy/overpass.service)",
    )]
}

/// RLIMIT_MEMLOCK soft limit in bytes; `None` = unlimited.
fn memlock_limit() -> Option<u64> {
    let (soft, _) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK).ok()?;
    (soft != libc::RLIM_INFINITY).then_some(soft)
}

/// Bytes of UMEM one worker locks, as `XskIo::open` sizes it
/// ([`xsk::umem_frames`] of the worker's ports, in one UMEM or two). Needs the pod interfaces
/// (their queue counts): falls back to one queue each.
fn umem_bytes_estimate(config: &Config) -> u64 {
    let plan = in_netns(config, || ports::port_plan(config).ok())
        .ok()
        .flatten();
    let worker = match plan.as_ref().and_then(|p| p.specs.first()) {
        Some(worker) => worker.clone(),
        None => {
            let mut specs = vec![ports::underlay_spec(String::new(), 0)];
            specs.extend((0..config.pod.len()).map(|_| ports::pod_spec(String::new(), 0)));
            specs
        }
    };
    // Pods attached at run time: their frames are reserved at start.
    let attach = xsk::AttachCapacity {
        slots: config.attach.as_ref().map_or(0, |a| a.max_pods),
        ring_size: config.attach.as_ref().map_or(0, |a| a.ring_size),
    };
    // The larger of one shared UMEM and the underlay's and the pods' own
    // (what a zero-copy underlay or `pod_umem = "separate"` gets).
    let bytes = |frames: u32, size: u32| u64::from(frames) * u64::from(size);
    let shared = bytes(xsk::umem_frames_with(&worker, attach), xsk::FRAME_SIZE);
    // The underlay's own UMEM has frames a zero-copy driver can take.
    let separate = match worker.split_first() {
        Some((ul, pods)) => {
            bytes(
                xsk::umem_frames(std::slice::from_ref(ul)),
                xsk::ZC_FRAME_SIZE,
            ) + if pods.is_empty() && attach.slots == 0 {
                0
            } else {
                bytes(xsk::umem_frames_with(pods, attach), xsk::FRAME_SIZE)
            }
        }
        None => shared,
    };
    shared.max(separate)
}

/// With `[attach]`: what each pod attached at run time costs and what the
/// workers' UMEMs hold in all (`umem_per_worker` × workers).
fn attach_finding(config: &Config, umem_per_worker: u64) -> Option<Finding> {
    let a = config.attach.as_ref()?;
    let workers = in_netns(config, || ports::port_plan(config).ok())
        .ok()
        .flatten()
        .map_or(1, |p| u64::from(p.workers));
    let per_pod = 2 * u64::from(a.ring_size) * u64::from(xsk::FRAME_SIZE);
    let kib = |b: u64| b / 1024;
    Some(Finding::ok(
        "attach.memory",
        "attach",
        format!(
            "{} pods may be attached at run time (attach.max_pods); each costs {} KiB of UMEM per worker ({} KiB on {workers} worker(s): 2 × attach.ring_size {} frames of {} bytes); UMEM in total: {:.1} MiB ({:.1} MiB per worker, reserved at start)",
            a.max_pods,
            kib(per_pod),
            kib(per_pod * workers),
            a.ring_size,
            xsk::FRAME_SIZE,
            (umem_per_worker * workers) as f64 / f64::from(1 << 20),
            umem_per_worker as f64 / f64::from(1 << 20),
        ),
    ))
}

/// AF_XDP charges UMEM pages to RLIMIT_MEMLOCK unless the process has
/// CAP_IPC_LOCK (every kernel); since 5.11 BPF maps are charged to the
/// memory cgroup instead.
pub fn memlock_finding(
    limit: Option<u64>,
    ipc_lock: bool,
    umem_bytes: u64,
    version: Option<(u32, u32)>,
) -> Finding {
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let bpf_note = match version {
        Some(v) if v >= (5, 11) => "BPF maps are charged to the memory cgroup (5.11+)",
        _ => "BPF maps are charged to RLIMIT_MEMLOCK too (before 5.11)",
    };
    match limit {
        None => Finding::ok(
            "memlock",
            "process",
            format!(
                "RLIMIT_MEMLOCK unlimited (UMEM needs ~{}); {bpf_note}",
                mib(umem_bytes)
            ),
        ),
        Some(_) if ipc_lock => Finding::ok(
            "memlock",
            "process",
            format!(
                "CAP_IPC_LOCK: UMEM (~{}) is not limited by RLIMIT_MEMLOCK; {bpf_note}",
                mib(umem_bytes)
            ),
        ),
        Some(l) if l < umem_bytes + (4 << 20) => Finding::blocker(
            "memlock",
            "process",
            format!(
                "RLIMIT_MEMLOCK is {} but one worker's UMEM locks ~{} (plus rings); {bpf_note}",
                mib(l),
                mib(umem_bytes)
            ),
            "LimitMEMLOCK=infinity in the unit (deploy/overpass.service), or `ulimit -l unlimited` before running by hand",
        ),
        Some(l) => Finding::ok(
            "memlock",
            "process",
            format!(
                "RLIMIT_MEMLOCK {} covers the UMEM (~{}); {bpf_note}",
                mib(l),
                mib(umem_bytes)
            ),
        ),
    }
}

// ---------------------------------------------------------------------------
// Interfaces

/// Runs `f` with the calling thread inside `gateway.netns` (when set), and
/// comes back, as `Gateway::start` does.
fn in_netns<T>(config: &Config, f: impl FnOnce() -> T) -> std::io::Result<T> {
    netns::in_netns(config.gateway.netns.as_deref(), f)
}

/// Drivers with native (in-driver) XDP.
pub const NATIVE_XDP_DRIVERS: &[&str] = &[
    "veth",
    "virtio_net",
    "tun",
    "i40e",
    "ice",
    "idpf",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "mlx4_en",
    "mlx5_core",
    "bnxt_en",
    "nfp",
    "qede",
    "ena",
    "sfc",
    "hv_netvsc",
    "mana",
    "gve",
    "stmmac",
    "mvneta",
    "mvpp2",
    "dpaa2-eth",
    "fec",
    "enetc",
    "tsnep",
    "netsec",
    "atlantic",
    "bonding",
];

/// Drivers with AF_XDP zero-copy, and the first kernel that has it.
pub const ZERO_COPY_DRIVERS: &[(&str, (u32, u32))] = &[
    ("i40e", (4, 18)),
    ("ixgbe", (4, 20)),
    ("mlx5_core", (5, 3)),
    ("ice", (5, 5)),
    ("stmmac", (5, 13)),
    ("igc", (5, 14)),
    ("tsnep", (6, 4)),
    ("gve", (6, 7)),
    ("virtio_net", (6, 11)),
    ("igb", (6, 14)),
];

/// What `ip -j -d link show` and ethtool say about an interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    pub name: String,
    pub exists: bool,
    pub up: bool,
    pub operstate: String,
    pub mtu: u32,
    /// `linkinfo.info_kind` (veth, vxlan, bond, …); empty for plain NICs.
    pub kind: String,
    /// Driver name (ETHTOOL_GDRVINFO), when the device answers.
    pub driver: Option<String>,
    /// What the driver says it can do for XDP and AF_XDP (`xdp-features`,
    /// `xdp-zc-max-segs`), from the kernel's `netdev` generic-netlink family.
    pub netdev: Option<NetdevInfo>,
    /// Why `netdev` is missing (no such family before Linux 6.3, an error).
    pub netdev_error: Option<String>,
    /// Active RX queues (ETHTOOL_GCHANNELS; 1 when not reported).
    pub rx_queues: Option<u32>,
    /// `ethtool -k` features: name → on.
    pub features: std::collections::BTreeMap<String, bool>,
    /// Name of an XDP program already attached, if any.
    pub xdp_prog: Option<String>,
    /// veth: the peer's ifindex and, when it lives in another namespace, its nsid.
    pub peer_ifindex: Option<u32>,
    pub peer_nsid: Option<i64>,
    /// The veth peer's `tx-checksumming`, when the peer could be inspected.
    pub peer_tx_csum: Option<(String, bool)>,
    /// IRQs of the device (from /proc/interrupts) and their CPU lists.
    pub irqs: Vec<(u32, String)>,
    /// n-tuple flow steering rules (`ethtool -n`: "Total N rules").
    pub ntuple_rules: Option<u32>,
}

/// Gathers [`LinkFacts`] in the calling thread's namespace.
pub fn link_facts(name: &str) -> LinkFacts {
    let mut f = LinkFacts {
        name: name.to_string(),
        ..Default::default()
    };
    let Ok(out) = Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", name])
        .output()
    else {
        return f;
    };
    if !out.status.success() {
        return f;
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return f;
    };
    let l = &v[0];
    f.exists = l["ifname"].as_str() == Some(name);
    f.up = l["flags"]
        .as_array()
        .is_some_and(|a| a.iter().any(|x| x == "UP"));
    f.operstate = l["operstate"].as_str().unwrap_or("").to_string();
    f.mtu = l["mtu"].as_u64().unwrap_or(0) as u32;
    f.kind = l["linkinfo"]["info_kind"]
        .as_str()
        .unwrap_or("")
        .to_string();
    f.xdp_prog = l["xdp"]["prog"]["name"]
        .as_str()
        .map(str::to_string)
        .or_else(|| {
            l["xdp"]["prog"]["id"]
                .as_u64()
                .map(|id| format!("prog id {id}"))
        });
    f.peer_ifindex = l["link_index"].as_u64().map(|i| i as u32);
    f.peer_nsid = l["link_netnsid"].as_i64();
    f.driver = ethtool::driver_name(name);
    match l["ifindex"].as_u64().map(|i| netdev::dev_get(i as u32)) {
        Some(Ok(info)) => f.netdev = Some(info),
        Some(Err(e)) => f.netdev_error = Some(netdev_unavailable(&e)),
        None => f.netdev_error = Some("no ifindex in `ip -j link`".to_string()),
    }
    f.rx_queues = ethtool::rx_queue_count(name).ok();
    f.features = ethtool_features(None, name);
    if f.kind == "veth" {
        f.peer_tx_csum = veth_peer_tx_csum(f.peer_ifindex, f.peer_nsid);
    }
    f.irqs = irqs_of(name, l["parentdev"].as_str());
    f.ntuple_rules = Command::new("ethtool")
        .args(["-n", name])
        .output()
        .ok()
        .and_then(|o| parse_ntuple_total(&String::from_utf8_lossy(&o.stdout)));
    f
}

/// Why the kernel could not tell an interface's XDP features.
fn netdev_unavailable(e: &std::io::Error) -> String {
    // host::netdev reports a missing family as Unsupported.
    if e.kind() == std::io::ErrorKind::Unsupported {
        "this kernel has no `netdev` generic-netlink family (Linux 6.3 added it)".to_string()
    } else {
        format!("the kernel's `netdev` family did not answer: {e}")
    }
}

/// XDP and AF_XDP zero-copy support of one interface: from the kernel's
/// `xdp-features` when it reports them, else from the driver lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpSupport {
    pub native: bool,
    pub zero_copy: bool,
    /// Where it came from, for the findings: the feature names, or the
    /// driver and why the kernel was not asked.
    pub source: String,
    /// Why there is no zero-copy (empty when there is).
    pub no_zero_copy: String,
}

/// [`XdpSupport`] of `f` on a kernel of `version`.
pub fn xdp_support(f: &LinkFacts, version: Option<(u32, u32)>) -> XdpSupport {
    let driver = f.driver.clone().unwrap_or_default();
    let shown = if driver.is_empty() {
        "unknown"
    } else {
        driver.as_str()
    };
    let is_veth = f.kind == "veth" || driver == "veth";
    if let Some(nd) = &f.netdev {
        let names = nd.xdp_feature_names();
        let mut source = format!(
            "driver {shown}, xdp-features [{}]",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        );
        if let Some(segs) = nd.xdp_zc_max_segs {
            source += &format!(", xdp-zc-max-segs {segs}");
        }
        let zero_copy = nd.zero_copy();
        return XdpSupport {
            native: nd.xdp_features & netdev::xdp_act::BASIC != 0,
            zero_copy,
            no_zero_copy: if zero_copy {
                String::new()
            } else if is_veth {
                "veth has no AF_XDP zero-copy (no xsk-zerocopy in its xdp-features): copy mode"
                    .to_string()
            } else {
                format!("driver {shown} does not advertise xsk-zerocopy: copy mode")
            },
            source,
        };
    }
    let why = f
        .netdev_error
        .clone()
        .unwrap_or_else(|| "xdp-features not read".to_string());
    let native = is_veth || NATIVE_XDP_DRIVERS.contains(&driver.as_str());
    let since = ZERO_COPY_DRIVERS
        .iter()
        .find(|(d, _)| *d == driver)
        .map(|(_, since)| *since);
    let zero_copy = since.is_some_and(|since| version.is_none_or(|v| v >= since));
    let no_zero_copy = match (since, is_veth) {
        _ if zero_copy => String::new(),
        (Some(since), _) => format!(
            "driver {shown} has AF_XDP zero-copy only from Linux {}.{}",
            since.0, since.1
        ),
        (None, true) => "veth has no AF_XDP zero-copy: copy mode".to_string(),
        (None, false) => {
            format!("driver {shown} is not known to support AF_XDP zero-copy: copy mode")
        }
    };
    XdpSupport {
        native,
        zero_copy,
        source: format!("driver {shown}, judged from a list of drivers ({why})"),
        no_zero_copy,
    }
}

/// The rule count of `ethtool -n` output ("Total 2 rules").
pub fn parse_ntuple_total(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Total "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Parses `ethtool -k` output into feature → on.
pub fn parse_ethtool_features(text: &str) -> std::collections::BTreeMap<String, bool> {
    text.lines()
        .filter_map(|l| l.trim().split_once(": "))
        .map(|(k, v)| (k.to_string(), v.starts_with("on")))
        .collect()
}

/// `ethtool -k` of an interface, in the calling thread's namespace or in
/// the named one. Empty when ethtool is missing or fails.
fn ethtool_features(netns: Option<&str>, ifname: &str) -> std::collections::BTreeMap<String, bool> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, "ethtool", "-k", ifname]);
            c
        }
        None => {
            let mut c = Command::new("ethtool");
            c.args(["-k", ifname]);
            c
        }
    };
    match cmd.output() {
        Ok(o) if o.status.success() => parse_ethtool_features(&String::from_utf8_lossy(&o.stdout)),
        _ => Default::default(),
    }
}

/// Finds a veth's peer (by ifindex, in the namespace with id `nsid` as seen
/// from the calling thread's, when that namespace has a name) and returns
/// (`ns/ifname`, its `tx-checksumming`).
fn veth_peer_tx_csum(ifindex: Option<u32>, nsid: Option<i64>) -> Option<(String, bool)> {
    let ifindex = ifindex?;
    let ns = match nsid {
        None => None,
        Some(id) => {
            let o = Command::new("ip")
                .args(["-j", "netns", "list"])
                .output()
                .ok()?;
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
            let name = v
                .as_array()?
                .iter()
                .find(|n| n["id"].as_i64() == Some(id))?["name"]
                .as_str()?
                .to_string();
            Some(name)
        }
    };
    let mut cmd = Command::new("ip");
    if let Some(ns) = &ns {
        cmd.args(["-n", ns]);
    }
    let o = cmd.args(["-j", "link", "show"]).output().ok()?;
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).ok()?;
    let peer = v
        .as_array()?
        .iter()
        .find(|l| l["ifindex"].as_u64() == Some(u64::from(ifindex)))?["ifname"]
        .as_str()?
        .to_string();
    let features = ethtool_features(ns.as_deref(), &peer);
    let on = *features.get("tx-checksumming")?;
    let label = match &ns {
        Some(ns) => format!("{peer} in netns {ns}"),
        None => peer,
    };
    Some((label, on))
}

/// IRQs whose /proc/interrupts name mentions the interface (or its PCI
/// device), with their `smp_affinity_list`.
fn irqs_of(ifname: &str, parentdev: Option<&str>) -> Vec<(u32, String)> {
    let Ok(text) = std::fs::read_to_string("/proc/interrupts") else {
        return vec![];
    };
    let mut out = vec![];
    for line in text.lines().skip(1) {
        let Some((irq, rest)) = line.trim_start().split_once(':') else {
            continue;
        };
        let Ok(irq) = irq.parse::<u32>() else {
            continue;
        };
        let Some(name) = rest.split_whitespace().last() else {
            continue;
        };
        let matches = name.starts_with(&format!("{ifname}-"))
            || name == ifname
            || parentdev.is_some_and(|p| name.contains(p));
        if matches {
            let aff = std::fs::read_to_string(format!("/proc/irq/{irq}/smp_affinity_list"))
                .unwrap_or_default()
                .trim()
                .to_string();
            out.push((irq, aff));
        }
    }
    out
}

/// Per-interface facts in the gateway's namespace, then the rules.
fn interface_findings(config: &Config) -> Vec<Finding> {
    let facts = in_netns(config, || {
        let ul: Vec<LinkFacts> = config
            .underlay
            .iter()
            .map(|u| link_facts(&u.interface))
            .collect();
        let pods: Vec<LinkFacts> = config
            .pod
            .iter()
            .map(|p| link_facts(&p.interface))
            .collect();
        (ul, pods)
    });
    let (ul, pods) = match facts {
        Ok(f) => f,
        Err(e) => {
            return vec![Finding::blocker(
                "netns",
                config.gateway.netns.clone().unwrap_or_default(),
                format!("cannot enter gateway.netns: {e}"),
                "create it (`ip netns add NAME`, or let the CNI/orchestrator do so) or unset gateway.netns",
            )];
        }
    };
    let mut out = vec![];
    if let Some(ns) = &config.gateway.netns {
        out.push(Finding::ok(
            "netns",
            ns.as_str(),
            "entered gateway.netns to inspect the interfaces",
        ));
    }
    let version = parse_kernel_version(&kernel_release());
    let cores = ports::pick_cores(config.gateway.cores.as_deref(), planned_workers(config))
        .unwrap_or_default();
    for (u, f) in config.underlay.iter().zip(&ul) {
        out.extend(nic_findings(f, Role::Underlay, u.bind_mode, version));
        if f.exists {
            out.extend(queue_findings(f, u.queues));
            out.extend(irq_findings(f, &cores));
        }
    }
    for f in &pods {
        out.extend(nic_findings(f, Role::Pod, BindMode::Auto, version));
    }
    // The socket plan the gateway will use (one worker per underlay queue,
    // each pod veth with as many active queues): its refusal is a blocker.
    if ul.iter().all(|u| u.exists) && pods.iter().all(|p| p.exists) {
        match in_netns(config, || ports::port_plan(config)) {
            Ok(Ok(plan)) => out.push(Finding::ok(
                "dataplane.ports",
                "plan",
                format!(
                    "{} worker(s), {} socket(s) each",
                    plan.workers,
                    plan.specs.first().map_or(0, Vec::len)
                ),
            )),
            Ok(Err(e)) => out.push(Finding::blocker(
                "dataplane.ports",
                "plan",
                format!("{e:#}"),
                "give every pod veth as many active queues as underlay queues are served (ethtool -L), or set underlay.queues",
            )),
            Err(_) => {}
        }
    }
    if let Some(u) = ul.first().filter(|u| u.exists) {
        let pod_mtus: Vec<(String, u32)> = pods
            .iter()
            .filter(|p| p.exists)
            .map(|p| (p.name.clone(), p.mtu))
            .collect();
        out.extend(mtu_findings(config, u.mtu, &pod_mtus));
    }
    out
}

/// The workers `Gateway::start` runs: `underlay[0].queues`, default every
/// active RX queue of the underlay (one worker per queue).
pub fn planned_workers(config: &Config) -> usize {
    let Some(ul) = config.underlay.first() else {
        return 1;
    };
    if let Some(q) = ul.queues {
        return q as usize;
    }
    in_netns(config, || ethtool::rx_queue_count(&ul.interface).ok())
        .ok()
        .flatten()
        .unwrap_or(1) as usize
}

/// What an interface is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Underlay,
    Pod,
}

/// Existence, state, XDP and zero-copy support, offloads of one interface.
pub fn nic_findings(
    f: &LinkFacts,
    role: Role,
    bind: BindMode,
    version: Option<(u32, u32)>,
) -> Vec<Finding> {
    let name = f.name.as_str();
    let what = match role {
        Role::Underlay => "underlay",
        Role::Pod => "pod veth",
    };
    if !f.exists {
        return vec![Finding::blocker(
            "nic.exists",
            name,
            format!("{what} interface does not exist (in the gateway's namespace)"),
            match role {
                Role::Underlay => "fix underlay.interface (see `ip link`) or gateway.netns",
                Role::Pod => {
                    "create the pod's veth pair first, or fix pod.interface / gateway.netns"
                }
            },
        )];
    }
    let mut out = vec![Finding::ok(
        "nic.exists",
        name,
        format!(
            "{what} interface, driver {}, MTU {}",
            f.driver.as_deref().unwrap_or("unknown"),
            f.mtu
        ),
    )];
    if !f.up {
        let fix = format!("ip link set dev {name} up");
        out.push(match role {
            Role::Underlay => Finding::blocker(
                "nic.up",
                name,
                "administratively down: no tunnel traffic arrives",
                fix,
            ),
            Role::Pod => Finding::warn("nic.up", name, "down: this pod is unreachable", fix),
        });
    } else if f.operstate != "UP" && f.operstate != "UNKNOWN" {
        out.push(Finding::warn(
            "nic.up",
            name,
            format!(
                "up but operstate {} (no carrier, or veth peer down)",
                f.operstate
            ),
            "check the cable/switch port, or bring the veth peer up",
        ));
    } else {
        out.push(Finding::ok("nic.up", name, "up"));
    }
    if let Some(prog) = &f.xdp_prog {
        out.push(match prog.as_str() {
            "overpass_steer" => Finding::warn(
                "nic.xdp_attached",
                name,
                "the Overpass program is attached: a gateway already serves this interface",
                "stop it first (`systemctl stop overpass`) before starting another",
            ),
            other => Finding::blocker(
                "nic.xdp_attached",
                name,
                format!("another XDP program is attached ({other}): our bpf_link attach fails with EBUSY"),
                format!("detach it (`ip link set dev {name} xdp off`) or free the interface"),
            ),
        });
    }
    // Native XDP and zero-copy: what the kernel says the driver can do.
    let support = xdp_support(f, version);
    let native = support.native;
    let source = &support.source;
    if native {
        out.push(Finding::ok(
            "nic.xdp_native",
            name,
            format!("runs XDP natively ({source})"),
        ));
    } else {
        let msg = format!("no native XDP: generic (skb) mode, slow and copy-mode only ({source})");
        let fix = "use a NIC with native XDP (i40e, ice, ixgbe, igc, mlx5_core, bnxt_en, …) for the gateway";
        out.push(match (role, bind) {
            (Role::Underlay, BindMode::ZeroCopy) => {
                Finding::blocker("nic.xdp_native", name, msg, fix)
            }
            _ => Finding::warn("nic.xdp_native", name, msg, fix),
        });
    }
    if support.zero_copy {
        out.push(Finding::ok(
            "nic.zero_copy",
            name,
            format!("supports AF_XDP zero-copy (bind_mode {bind:?}; {source})"),
        ));
    } else {
        let why = &support.no_zero_copy;
        out.push(match (role, bind) {
            (_, BindMode::ZeroCopy) => Finding::blocker(
                "nic.zero_copy",
                name,
                format!("{why}, but bind_mode = \"zero-copy\" refuses copy mode ({source})"),
                "set bind_mode = \"auto\" (or \"copy\"), or use a zero-copy NIC (i40e, ice, ixgbe, igc, mlx5_core)",
            ),
            (Role::Pod, _) => Finding::ok(
                "nic.zero_copy",
                name,
                format!("{why} (expected for pod veths)"),
            ),
            (Role::Underlay, BindMode::Copy) => Finding::ok(
                "nic.zero_copy",
                name,
                format!("{why}; bind_mode = \"copy\""),
            ),
            (Role::Underlay, BindMode::Auto) => Finding::warn(
                "nic.zero_copy",
                name,
                format!("{why} (works, at a lower packet rate; {source})"),
                "for full speed use a zero-copy NIC (i40e, ice, ixgbe, igc, mlx5_core) as the underlay",
            ),
        });
    }
    out.push(Finding::ok("nic.plan", name, plan(role, bind, &support)));
    out.extend(offload_findings(f, role, native));
    out
}

/// What the gateway will do with an interface, in one line.
pub fn plan(role: Role, bind: BindMode, support: &XdpSupport) -> String {
    let xdp = if support.native {
        "native XDP"
    } else {
        "generic (skb) XDP"
    };
    match role {
        Role::Underlay => {
            let sockets = match (bind, support.zero_copy) {
                (BindMode::Copy, _) => {
                    "AF_XDP copy mode (bind_mode = \"copy\"), one UMEM shared with the pods unless underlay.pod_umem = \"separate\""
                }
                (_, true) => {
                    "AF_XDP zero-copy on a UMEM of its own (4096-byte frames); the pods in copy mode on theirs, each crossing frame copied once"
                }
                (BindMode::Auto, false) => {
                    "AF_XDP copy mode, one UMEM shared with the pods unless underlay.pod_umem = \"separate\" (frames move between all ports by descriptor)"
                }
                (BindMode::ZeroCopy, false) => "nothing: the start fails (zero-copy refused)",
            };
            format!("plan: {xdp} steering of tunnel traffic to the workers; {sockets}")
        }
        Role::Pod => format!(
            "plan: {xdp} steering of the pod's frames to the workers; AF_XDP copy mode{}",
            if support.zero_copy {
                " or zero-copy (the driver has it)"
            } else {
                ""
            }
        ),
    }
}

/// Offloads that break or slow tunnels.
pub fn offload_findings(f: &LinkFacts, role: Role, native: bool) -> Vec<Finding> {
    let name = f.name.as_str();
    let mut out = vec![];
    let on = |k: &str| f.features.get(k).copied().unwrap_or(false);
    match role {
        Role::Underlay => {
            if f.features.is_empty() {
                out.push(Finding::warn(
                    "nic.offload",
                    name,
                    "offloads not inspected (`ethtool -k` unavailable)",
                    "install ethtool",
                ));
                return out;
            }
            if on("large-receive-offload") {
                out.push(Finding::blocker(
                    "nic.offload",
                    name,
                    "LRO is on: drivers refuse native XDP with LRO, and merged frames do not fit a UMEM frame",
                    format!("ethtool -K {name} lro off"),
                ));
            }
            if on("rx-gro-hw") {
                out.push(Finding::warn(
                    "nic.offload",
                    name,
                    "hardware GRO is on: several drivers refuse XDP with it, merged frames do not fit a UMEM frame",
                    format!("ethtool -K {name} rx-gro-hw off"),
                ));
            }
            if on("rx-udp-gro-forwarding") {
                out.push(Finding::warn(
                    "nic.offload",
                    name,
                    "rx-udp-gro-forwarding is on: the kernel coalesces forwarded UDP (VXLAN) flows it still sees",
                    format!("ethtool -K {name} rx-udp-gro-forwarding off"),
                ));
            }
            if !native && on("generic-receive-offload") {
                out.push(Finding::warn(
                    "nic.offload",
                    name,
                    "GRO is on and XDP would run in generic mode, after GRO: tunnel packets may arrive coalesced",
                    format!("ethtool -K {name} gro off"),
                ));
            }
            if out.is_empty() {
                out.push(Finding::ok(
                    "nic.offload",
                    name,
                    "no LRO / hardware GRO / UDP GRO forwarding in the way",
                ));
            }
        }
        Role::Pod => match &f.peer_tx_csum {
            Some((peer, true)) => out.push(Finding::blocker(
                "pod.tx_checksum",
                name,
                format!(
                    "TX checksum offload is on at the pod end ({peer}): its TCP segments arrive with unfinished checksums and are forwarded broken"
                ),
                format!(
                    "in the pod's namespace: ethtool -K {} tx off (CNI: set it when creating the veth)",
                    peer.split(' ').next().unwrap_or("eth0")
                ),
            )),
            Some((peer, false)) => out.push(Finding::ok(
                "pod.tx_checksum",
                name,
                format!("TX checksum offload off at the pod end ({peer})"),
            )),
            None => out.push(Finding::warn(
                "pod.tx_checksum",
                name,
                "could not inspect the pod end of this veth (namespace without a name?)",
                "make sure the pod end has TX checksum offload off: ethtool -K eth0 tx off in the pod",
            )),
        },
    }
    out
}

/// The underlay's active RX queues against the planned workers.
pub fn queue_findings(f: &LinkFacts, configured: Option<u32>) -> Vec<Finding> {
    let name = f.name.as_str();
    let Some(active) = f.rx_queues else {
        return vec![Finding::warn(
            "nic.queues",
            name,
            "cannot read the RX queue count (ETHTOOL_GCHANNELS)",
            format!("check with `ethtool -l {name}`"),
        )];
    };
    // One worker per served queue; default: every active queue.
    let planned = configured.unwrap_or(active);
    if planned > active {
        return vec![Finding::blocker(
            "nic.queues",
            name,
            format!("underlay.queues = {planned} but only {active} active RX queue(s)"),
            format!("`ethtool -L {name} combined {planned}`, or lower underlay.queues"),
        )];
    }
    // Served queues below the active count: the gateway runs (and logs the
    // same sentence, `ports::unserved_queues`), the XDP program passes what
    // lands on the other queues to the kernel, counted as unserved_queue.
    if let Some(unserved) = ports::unserved_queues(name, active, planned) {
        if let Some(rules) = f.ntuple_rules.filter(|&n| n > 0) {
            return vec![Finding::warn(
                "nic.queues",
                name,
                format!(
                    "{unserved}; {rules} flow steering rule(s) may keep tunnel flows on served queues"
                ),
                format!(
                    "make sure the rules steer every tunnel flow to a served queue (`ethtool -n {name}`: udp4 dst-port 8472/4789, ip4 l4proto 4), or `ethtool -L {name} combined {planned}`"
                ),
            )];
        }
        return vec![Finding::warn(
            "nic.queues",
            name,
            unserved,
            format!(
                "ethtool -L {name} combined {planned} (or rx {planned} on NICs with separate rx/tx channels), or serve every queue (underlay.queues = {active})"
            ),
        )];
    }
    vec![Finding::ok(
        "nic.queues",
        name,
        format!("{active} active RX queue(s), {planned} worker(s)"),
    )]
}

fn irq_findings(f: &LinkFacts, worker_cores: &[usize]) -> Vec<Finding> {
    let name = f.name.as_str();
    if f.irqs.is_empty() {
        return vec![Finding::ok(
            "nic.irq",
            name,
            "no IRQs of its own in /proc/interrupts (virtual device)",
        )];
    }
    let clash: Vec<String> = f
        .irqs
        .iter()
        .filter(|(_, aff)| {
            let cpus = cpus::parse_cpu_list(aff).unwrap_or_default();
            worker_cores.iter().any(|c| cpus.contains(c))
        })
        .map(|(irq, aff)| format!("{irq}→{aff}"))
        .collect();
    if clash.is_empty() {
        vec![Finding::ok(
            "nic.irq",
            name,
            format!(
                "{} IRQ(s), none on a worker core {worker_cores:?}",
                f.irqs.len()
            ),
        )]
    } else {
        vec![Finding::warn(
            "nic.irq",
            name,
            format!(
                "IRQs on worker cores {worker_cores:?}: {} (the driver's NAPI competes with the busy-polling worker)",
                clash.join(", ")
            ),
            "pin the queue IRQs to a housekeeping core: echo CPU > /proc/irq/N/smp_affinity_list (stop irqbalance or ban the worker cores: IRQBALANCE_BANNED_CPULIST)",
        )]
    }
}

/// The largest Ethernet frame (without FCS) an AF_XDP frame holds: the
/// UMEM frame minus the kernel's 256-byte XDP headroom.
pub const MAX_FRAME: u32 = xsk::FRAME_SIZE - 256;

/// MTU rules: the underlay must carry, for every peer, the largest inner
/// packet plus that peer's encapsulation overhead. The largest inner
/// packet is the peer's `mtu` when set, else the largest pod MTU (the
/// cluster's pod MTU). Every frame must also fit a UMEM frame.
pub fn mtu_findings(
    config: &Config,
    underlay_mtu: u32,
    pod_mtus: &[(String, u32)],
) -> Vec<Finding> {
    let ul = config
        .underlay
        .first()
        .map(|u| u.interface.as_str())
        .unwrap_or("underlay");
    let mut out = vec![];
    let largest_pod = pod_mtus.iter().max_by_key(|(_, m)| *m);
    for (i, peer) in config.peer.iter().enumerate() {
        let subject = format!("peer[{i}] {}", peer.name);
        let overhead = u32::from(peer.encap.overhead());
        let (inner, from) = match (peer.mtu, largest_pod) {
            (Some(m), _) => (u32::from(m), format!("its mtu = {m}")),
            (None, Some((pod, m))) => (*m, format!("pod MTU {m} ({pod})")),
            (None, None) => {
                out.push(Finding::ok(
                    "nic.mtu",
                    subject,
                    format!(
                        "no pods and no peer mtu: tunnel MTU = {ul} MTU {underlay_mtu} − {overhead} = {}",
                        underlay_mtu.saturating_sub(overhead)
                    ),
                ));
                continue;
            }
        };
        let need = inner + overhead;
        let enc = match peer.encap {
            Encap::Vxlan => "VXLAN",
            Encap::Ipip => "IP-in-IP",
        };
        if underlay_mtu < need {
            out.push(Finding::blocker(
                "nic.mtu",
                subject,
                format!(
                    "{ul} MTU {underlay_mtu} cannot carry {from} + {overhead} ({enc}) = {need}: larger packets are refused with ICMP fragmentation-needed or black-holed"
                ),
                format!(
                    "raise the underlay MTU: ip link set dev {ul} mtu {need} (switches too), or lower the pod MTU to {}",
                    underlay_mtu.saturating_sub(overhead)
                ),
            ));
        } else {
            out.push(Finding::ok(
                "nic.mtu",
                subject,
                format!("{ul} MTU {underlay_mtu} carries {from} + {overhead} ({enc}) = {need}"),
            ));
        }
        if need + 14 > MAX_FRAME {
            out.push(Finding::blocker(
                "nic.mtu",
                format!("peer[{i}] {}", peer.name),
                format!(
                    "{enc} frames of {} bytes do not fit an AF_XDP frame ({MAX_FRAME} bytes after headroom)",
                    need + 14
                ),
                format!(
                    "keep the inner MTU at most {} for {enc} peers",
                    MAX_FRAME - 14 - overhead
                ),
            ));
        }
    }
    for (pod, m) in pod_mtus {
        if m + 14 > MAX_FRAME {
            out.push(Finding::blocker(
                "nic.mtu",
                pod.as_str(),
                format!(
                    "pod MTU {m}: frames of {} bytes do not fit an AF_XDP frame ({MAX_FRAME} bytes)",
                    m + 14
                ),
                format!("ip link set dev {pod} mtu {} (and the pod end)", MAX_FRAME - 14),
            ));
        }
    }
    if underlay_mtu + 14 > MAX_FRAME {
        out.push(Finding::warn(
            "nic.mtu",
            ul,
            format!(
                "MTU {underlay_mtu}: frames above {MAX_FRAME} bytes cannot be received into an AF_XDP frame and are dropped"
            ),
            format!(
                "ip link set dev {ul} mtu {} unless every peer's packets stay below it",
                MAX_FRAME - 14
            ),
        ));
    }
    out
}

// ---------------------------------------------------------------------------
// CPUs

fn read_cpu_list(path: &str) -> BTreeSet<usize> {
    cpus::read_cpu_list(path).unwrap_or_default()
}

fn irqbalance_running() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "irqbalance")
    })
}

fn cpu_findings(config: &Config) -> Vec<Finding> {
    let picked = ports::pick_cores(config.gateway.cores.as_deref(), planned_workers(config));
    cpu_rules(
        config.gateway.cores.as_deref(),
        picked.map_err(|e| e.to_string()),
        &read_cpu_list("/sys/devices/system/cpu/isolated"),
        &read_cpu_list("/sys/devices/system/cpu/nohz_full"),
        &read_cpu_list("/sys/devices/system/cpu/online"),
        irqbalance_running(),
    )
}

/// CPU rules over gathered facts: the cores `pick_cores` chooses (or its
/// error), the isolated and nohz_full sets, the online CPUs.
pub fn cpu_rules(
    configured: Option<&[usize]>,
    picked: Result<Vec<usize>, String>,
    isolated: &BTreeSet<usize>,
    nohz_full: &BTreeSet<usize>,
    online: &BTreeSet<usize>,
    irqbalance: bool,
) -> Vec<Finding> {
    let cores = match picked {
        Ok(c) => c,
        Err(e) => {
            let isolated_hint = configured
                .unwrap_or_default()
                .iter()
                .any(|c| isolated.contains(c) && online.contains(c));
            return vec![Finding::blocker(
                "cpu.cores",
                "gateway.cores",
                e,
                if isolated_hint {
                    "isolated cores are outside the default CPU affinity: give the service CPUAffinity= covering them (see deploy/GUIDE.md)"
                } else {
                    "list cores that exist and this process may run on (`nproc --all`, taskset -p $$)"
                },
            )];
        }
    };
    let mut out = vec![Finding::ok(
        "cpu.cores",
        "gateway.cores",
        format!(
            "worker(s) pinned to {cores:?}{}",
            if configured.is_none() {
                " (chosen: highest allowed cores)"
            } else {
                ""
            }
        ),
    )];
    for c in &cores {
        let subject = format!("core {c}");
        if *c == 0 && online.len() > 1 {
            out.push(Finding::warn(
                "cpu.isolation",
                subject.clone(),
                "core 0 carries most housekeeping IRQs and timers",
                "pin workers to other cores (gateway.cores)",
            ));
        }
        if isolated.contains(c) {
            let nohz = if nohz_full.contains(c) {
                ", nohz_full"
            } else {
                " (no nohz_full: the tick still interrupts it)"
            };
            out.push(Finding::ok(
                "cpu.isolation",
                subject,
                format!("isolated (isolcpus){nohz}"),
            ));
        } else {
            out.push(Finding::warn(
                "cpu.isolation",
                subject,
                "not isolated: the scheduler puts other tasks on the busy-polling worker's core",
                format!(
                    "kernel command line isolcpus={c} nohz_full={c} rcu_nocbs={c}, then CPUAffinity= in the unit (deploy/GUIDE.md)"
                ),
            ));
        }
    }
    if irqbalance {
        let banned = !isolated.is_empty() && cores.iter().all(|c| isolated.contains(c));
        out.push(match banned {
            true => Finding::ok(
                "cpu.irqbalance",
                "irqbalance",
                "running; it keeps IRQs off isolated cores",
            ),
            false => Finding::warn(
                "cpu.irqbalance",
                "irqbalance",
                "running: it may move NIC IRQs onto the worker cores",
                format!(
                    "IRQBALANCE_BANNED_CPULIST={} in /etc/default/irqbalance, or stop it and pin IRQs by hand",
                    cores
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
[gateway]
pod_cidr = "10.244.0.0/24"
underlay_ip = "198.18.0.1"
vtep_mac = "02:0f:00:00:00:01"

[[underlay]]
interface = "ul0"

[[peer]]
name = "n1"
pod_cidr = "10.244.1.0/24"
underlay_ip = "198.18.0.11"
vtep_mac = "02:0b:00:00:00:01"

[[peer]]
name = "n2"
pod_cidr = "10.244.2.0/24"
underlay_ip = "198.18.0.12"
encap = "ipip"
"#;

    fn sev(fs: &[Finding]) -> Vec<Severity> {
        fs.iter().map(|f| f.severity).collect()
    }

    #[test]
    fn kernel_versions() {
        assert_eq!(parse_kernel_version("6.1.0-18-amd64"), Some((6, 1)));
        assert_eq!(parse_kernel_version("5.10.0"), Some((5, 10)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(
            sev(&kernel_version_findings("4.19.0", Some((4, 19)))),
            vec![Severity::Blocker]
        );
        assert_eq!(
            sev(&kernel_version_findings("5.10.0", Some((5, 10)))),
            vec![Severity::Ok, Severity::Warn]
        );
        assert_eq!(
            sev(&kernel_version_findings("6.1.0", Some((6, 1)))),
            vec![Severity::Ok]
        );
    }

    #[test]
    fn kconfig_rules() {
        let k = parse_kconfig(
            "# comment\nCONFIG_BPF_SYSCALL=y\n# CONFIG_XDP_SOCKETS is not set\nCONFIG_BPF_JIT=y\nCONFIG_DEBUG_INFO_BTF=m\n",
        );
        let f = kconfig_findings(&k, "test", true);
        let by = |opt: &str| f.iter().find(|x| x.subject == opt).unwrap().severity;
        assert_eq!(by("CONFIG_BPF_SYSCALL"), Severity::Ok);
        assert_eq!(by("CONFIG_XDP_SOCKETS"), Severity::Blocker);
        assert_eq!(by("CONFIG_BPF_JIT"), Severity::Ok);
        assert_eq!(by("CONFIG_DEBUG_INFO_BTF"), Severity::Warn);
    }

    #[test]
    fn attach_memory_is_reported() {
        let mut c = Config::from_toml(CONFIG).unwrap();
        assert!(
            attach_finding(&c, 1 << 20).is_none(),
            "no [attach]: nothing to say"
        );
        c.attach = Some(crate::config::AttachConfig::default());
        let f = attach_finding(&c, 70_385_664).unwrap();
        assert_eq!(f.check, "attach.memory");
        assert_eq!(f.severity, Severity::Ok);
        assert!(
            f.message.starts_with("110 pods may be attached"),
            "{}",
            f.message
        );
        assert!(
            f.message.contains("each costs 512 KiB of UMEM per worker"),
            "{}",
            f.message
        );
        assert!(f.message.contains("67.1 MiB per worker"), "{}", f.message);
    }

    #[test]
    fn mtu_rules() {
        let c = Config::from_toml(CONFIG).unwrap();
        let pods = vec![("gwp-a".to_string(), 1450)];
        // 1500 carries 1450 + 50 and 1450 + 20.
        let f = mtu_findings(&c, 1500, &pods);
        assert!(f.iter().all(|x| x.severity == Severity::Ok), "{f:#?}");
        // 1480: VXLAN peer blocked, IP-in-IP peer fine.
        let f = mtu_findings(&c, 1480, &pods);
        assert_eq!(f[0].severity, Severity::Blocker);
        assert_eq!(f[0].subject, "peer[0] n1");
        assert!(f[0].message.contains("= 1500"), "{}", f[0].message);
        assert!(f[0].fix.as_deref().unwrap().contains("mtu 1500"));
        assert_eq!(f[1].severity, Severity::Ok);
        // An explicit peer mtu wins over the pod MTU.
        let mut c2 = c.clone();
        c2.peer[0].mtu = Some(1400);
        assert_eq!(mtu_findings(&c2, 1480, &pods)[0].severity, Severity::Ok);
        // Jumbo pods do not fit a UMEM frame.
        let f = mtu_findings(&c, 9000, &[("gwp-a".to_string(), 8950)]);
        assert!(
            f.iter()
                .any(|x| x.severity == Severity::Blocker && x.message.contains("AF_XDP frame"))
        );
    }

    #[test]
    fn queue_rules() {
        let f = LinkFacts {
            name: "eth1".into(),
            exists: true,
            rx_queues: Some(8),
            ..Default::default()
        };
        assert_eq!(
            queue_findings(&f, None)[0].severity,
            Severity::Ok,
            "one worker per queue"
        );
        let r = queue_findings(&f, Some(4));
        // The gateway runs with queues 4..8 unserved (their tunnel frames go
        // to the kernel): a warning saying what `overpass run` logs.
        assert_eq!(r[0].severity, Severity::Warn, "queues 4..8 unserved");
        assert_eq!(
            Some(r[0].message.as_str()),
            ports::unserved_queues("eth1", 8, 4).as_deref()
        );
        assert!(r[0].fix.as_deref().unwrap().contains("ethtool -L eth1"));
        let one = LinkFacts {
            rx_queues: Some(1),
            ..f.clone()
        };
        assert_eq!(queue_findings(&one, None)[0].severity, Severity::Ok);
        assert_eq!(queue_findings(&one, Some(2))[0].severity, Severity::Blocker);
        let steered = LinkFacts {
            ntuple_rules: parse_ntuple_total(
                "8 RX rings available\nTotal 2 rules\n\nFilter: 1023\n",
            ),
            ..f.clone()
        };
        assert_eq!(steered.ntuple_rules, Some(2));
        assert_eq!(
            queue_findings(&steered, Some(4))[0].severity,
            Severity::Warn
        );
    }

    /// An up 1500-MTU interface `eth1` with no offload in the way.
    fn healthy_nic() -> LinkFacts {
        LinkFacts {
            name: "eth1".into(),
            exists: true,
            up: true,
            operstate: "UP".into(),
            mtu: 1500,
            features: parse_ethtool_features(
                "Features for eth1:\nlarge-receive-offload: off\nrx-gro-hw: off [fixed]\nrx-udp-gro-forwarding: off\n",
            ),
            ..Default::default()
        }
    }

    #[test]
    fn nic_support_comes_from_the_kernel_when_it_reports_it() {
        let base = healthy_nic();
        use netdev::xdp_act::{BASIC, NDO_XMIT, REDIRECT, XSK_ZEROCOPY};
        // A driver on no list, which the kernel says does zero-copy.
        let new_driver = LinkFacts {
            driver: Some("fancy_nic".into()),
            netdev: Some(NetdevInfo {
                xdp_features: BASIC | REDIRECT | XSK_ZEROCOPY,
                xdp_zc_max_segs: Some(1),
                ..Default::default()
            }),
            ..base.clone()
        };
        let s = xdp_support(&new_driver, Some((6, 18)));
        assert!(s.native && s.zero_copy, "{s:?}");
        assert_eq!(
            s.source,
            "driver fancy_nic, xdp-features [basic, redirect, xsk-zerocopy], xdp-zc-max-segs 1"
        );
        let f = nic_findings(
            &new_driver,
            Role::Underlay,
            BindMode::ZeroCopy,
            Some((6, 18)),
        );
        assert!(f.iter().all(|x| x.severity == Severity::Ok), "{f:#?}");
        let plan = f.iter().find(|x| x.check == "nic.plan").expect("a plan");
        assert!(
            plan.message
                .contains("AF_XDP zero-copy on a UMEM of its own"),
            "{plan:?}"
        );
        // A driver on the zero-copy list whose kernel says it has none (an
        // old build, a mode without it): the kernel wins.
        let listed = LinkFacts {
            driver: Some("ixgbe".into()),
            netdev: Some(NetdevInfo {
                xdp_features: BASIC | REDIRECT | NDO_XMIT,
                ..Default::default()
            }),
            ..base.clone()
        };
        let s = xdp_support(&listed, Some((6, 18)));
        assert!(s.native && !s.zero_copy, "{s:?}");
        let f = nic_findings(&listed, Role::Underlay, BindMode::ZeroCopy, Some((6, 18)));
        let zc = f.iter().find(|x| x.check == "nic.zero_copy").unwrap();
        assert_eq!(zc.severity, Severity::Blocker);
        assert!(
            zc.message.contains("does not advertise xsk-zerocopy"),
            "{zc:?}"
        );
        // No native XDP in the features: generic mode.
        let generic = LinkFacts {
            driver: Some("e1000e".into()),
            netdev: Some(NetdevInfo::default()),
            ..base.clone()
        };
        assert!(!xdp_support(&generic, None).native);
        // A kernel without the family: the driver lists, and it says so.
        let old_kernel = LinkFacts {
            driver: Some("ice".into()),
            netdev_error: Some(netdev_unavailable(&std::io::Error::from(
                std::io::ErrorKind::Unsupported,
            ))),
            ..base
        };
        let s = xdp_support(&old_kernel, Some((6, 1)));
        assert!(s.native && s.zero_copy, "{s:?}");
        assert!(
            s.source.contains("judged from a list of drivers")
                && s.source.contains("Linux 6.3 added it"),
            "{s:?}"
        );
    }

    #[test]
    fn nic_rules_by_driver() {
        let base = healthy_nic();
        let ice = LinkFacts {
            driver: Some("ice".into()),
            ..base.clone()
        };
        let f = nic_findings(&ice, Role::Underlay, BindMode::Auto, Some((6, 1)));
        assert!(f.iter().all(|x| x.severity == Severity::Ok), "{f:#?}");
        let e1000 = LinkFacts {
            driver: Some("e1000e".into()),
            ..base.clone()
        };
        let f = nic_findings(&e1000, Role::Underlay, BindMode::ZeroCopy, Some((6, 1)));
        assert!(
            f.iter()
                .any(|x| x.check == "nic.zero_copy" && x.severity == Severity::Blocker)
        );
        assert!(
            f.iter()
                .any(|x| x.check == "nic.xdp_native" && x.severity == Severity::Blocker)
        );
        let lro = LinkFacts {
            driver: Some("ice".into()),
            features: parse_ethtool_features("large-receive-offload: on\n"),
            ..base.clone()
        };
        let f = nic_findings(&lro, Role::Underlay, BindMode::Auto, Some((6, 1)));
        assert!(
            f.iter()
                .any(|x| x.check == "nic.offload" && x.severity == Severity::Blocker)
        );
        let missing = LinkFacts {
            name: "nope0".into(),
            ..Default::default()
        };
        assert_eq!(
            sev(&nic_findings(
                &missing,
                Role::Underlay,
                BindMode::Auto,
                None
            )),
            vec![Severity::Blocker]
        );
    }

    #[test]
    fn cpu_and_memlock_rules() {
        let online = cpus::parse_cpu_list("0-3").unwrap();
        let isolated = cpus::parse_cpu_list("2-3").unwrap();
        let f = cpu_rules(
            Some(&[2]),
            Ok(vec![2]),
            &isolated,
            &isolated,
            &online,
            false,
        );
        assert_eq!(sev(&f), vec![Severity::Ok, Severity::Ok]);
        let f = cpu_rules(
            Some(&[3]),
            Err("gateway.cores[0]: core 3 does not exist or is not allowed".into()),
            &isolated,
            &BTreeSet::new(),
            &online,
            false,
        );
        assert_eq!(f[0].severity, Severity::Blocker);
        assert!(f[0].fix.as_deref().unwrap().contains("CPUAffinity"));
        let f = cpu_rules(
            None,
            Ok(vec![1]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            &online,
            true,
        );
        assert_eq!(sev(&f), vec![Severity::Ok, Severity::Warn, Severity::Warn]);

        let mib = 1 << 20;
        assert_eq!(
            memlock_finding(None, false, 16 * mib, Some((6, 1))).severity,
            Severity::Ok
        );
        assert_eq!(
            memlock_finding(Some(8 * mib), false, 16 * mib, Some((6, 1))).severity,
            Severity::Blocker
        );
        assert_eq!(
            memlock_finding(Some(8 * mib), true, 16 * mib, Some((6, 1))).severity,
            Severity::Ok
        );
    }

    #[test]
    fn renders_one_line_per_finding() {
        let r = Report {
            findings: vec![
                Finding::ok("kernel.version", "kernel", "fine"),
                Finding::blocker("nic.mtu", "peer[0] n1", "too small", "raise it"),
            ],
        };
        let text = r.render();
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().nth(1).unwrap().starts_with("BLOCKER"));
        assert!(text.contains("=> fix: raise it"));
        assert!(text.ends_with("summary: 1 ok, 0 warn, 1 BLOCKER\n"));
        assert!(r.has_blockers());
        let j = serde_json::to_value(&r).unwrap();
        assert_eq!(j["findings"][1]["severity"], "blocker");
    }
}
