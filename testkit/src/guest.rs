//! The guest tier from Rust: a QEMU guest (TCG) whose NIC can do AF_XDP
//! zero-copy, linked through a tap to a network namespace of the test, in
//! which host binaries run (`deploy/guest/run.sh`; `deploy/guest/install.sh`
//! installs QEMU and the guest kernel).
//!
//! A test makes a [`PeerNs`] (the host side of the link), starts a
//! [`GuestRun`] with a command (e.g. `overpass-guest-probe`, or a test binary
//! of the workspace: the host's root is the guest's, read-only), talks to the
//! guest from the peer namespace while it runs, and reads its output and exit
//! status from [`GuestRun::wait`].

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The repository's root (where `deploy/` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lives in the workspace")
        .to_path_buf()
}

/// Runs `deploy/guest/install.sh` once per process (a no-op in a fraction
/// of a second when QEMU and the guest kernel are in place). Needs root.
pub fn install() -> anyhow::Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let script = repo_root().join("deploy/guest/install.sh");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}): {}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

/// The guest's NIC model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nic {
    /// virtio-net-pci with `disable-legacy=on,iommu_platform=on` (driver
    /// `virtio_net`, zero-copy from Linux 6.13).
    Virtio,
    /// QEMU's igb, an Intel 82576 (driver `igb`, zero-copy from Linux 6.14).
    Igb,
}

impl Nic {
    /// The name `run.sh --nic` takes.
    pub const fn as_str(self) -> &'static str {
        match self {
            Nic::Virtio => "virtio",
            Nic::Igb => "igb",
        }
    }

    /// The guest driver's name, as `ethtool -i` reports it.
    pub const fn driver(self) -> &'static str {
        match self {
            Nic::Virtio => "virtio_net",
            Nic::Igb => "igb",
        }
    }
}

/// How to start a guest.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub nic: Nic,
    /// The (existing) namespace the tap goes into.
    pub netns: String,
    /// The tap's name (at most 15 bytes).
    pub tap: String,
    /// IPv4 address (CIDR) on the tap, if any.
    pub host_addr: Option<String>,
    /// IPv4 address (CIDR) on the guest's NIC (`eth0`), if any.
    pub guest_addr: Option<String>,
    /// The guest NIC's MAC.
    pub mac: String,
    /// The guest is killed after this long.
    pub timeout: Duration,
    /// Guest memory, MiB.
    pub mem_mb: u32,
}

impl GuestSpec {
    /// A guest with `nic` whose tap `ovg{tag}` sits in `netns`, 192.0.2.1/24
    /// on the tap and 192.0.2.2/24 on the guest, MAC 52:54:00:4f:56:02,
    /// 512 MiB, killed after 240 s.
    pub fn new(nic: Nic, netns: &str, tag: &str) -> GuestSpec {
        GuestSpec {
            nic,
            netns: netns.to_string(),
            tap: format!("ovg{tag}"),
            host_addr: Some(HOST_ADDR.to_string() + "/24"),
            guest_addr: Some(GUEST_ADDR.to_string() + "/24"),
            mac: GUEST_MAC.to_string(),
            timeout: Duration::from_secs(240),
            mem_mb: 512,
        }
    }
}

/// The tap's address in [`GuestSpec::new`].
pub const HOST_ADDR: &str = "192.0.2.1";
/// The guest's address in [`GuestSpec::new`].
pub const GUEST_ADDR: &str = "192.0.2.2";
/// The guest NIC's MAC in [`GuestSpec::new`].
pub const GUEST_MAC: &str = "52:54:00:4f:56:02";

/// A guest running one command.
#[derive(Debug)]
pub struct GuestRun {
    child: Option<Child>,
    started: Instant,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

/// What a guest's command printed, and how it ended.
#[derive(Debug)]
pub struct GuestOutput {
    /// The command's exit status as `run.sh` returns it (124: the guest
    /// timed out; 125: the guest failed before or around the command).
    pub status: ExitStatus,
    /// The command's stdout and stderr, merged.
    pub output: String,
    /// `run.sh`'s own messages (the guest console on failure).
    pub stderr: String,
    /// From start to the guest's end: boot, command, power-off.
    pub elapsed: Duration,
}

impl GuestRun {
    /// Starts `deploy/guest/run.sh` for `spec` with `command` (the guest runs
    /// it in the current directory of this process, on the host's root).
    pub fn spawn(spec: &GuestSpec, command: &[&str]) -> anyhow::Result<GuestRun> {
        let script = repo_root().join("deploy/guest/run.sh");
        let mut cmd = Command::new(&script);
        cmd.args(["--nic", spec.nic.as_str()])
            .args(["--netns", &spec.netns])
            .args(["--tap", &spec.tap])
            .args(["--mac", &spec.mac])
            .args(["--mem", &spec.mem_mb.to_string()])
            .args(["--timeout", &spec.timeout.as_secs().to_string()]);
        if let Some(a) = &spec.host_addr {
            cmd.args(["--host-addr", a]);
        }
        if let Some(a) = &spec.guest_addr {
            cmd.args(["--guest-addr", a]);
        }
        cmd.arg("--")
            .args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: dropping a run stops QEMU too.
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let reader = |mut r: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let stdout = child.stdout.take().map(|o| reader(Box::new(o)));
        let stderr = child.stderr.take().map(|e| reader(Box::new(e)));
        Ok(GuestRun {
            child: Some(child),
            started: Instant::now(),
            stdout,
            stderr,
        })
    }

    /// Whether the guest has stopped.
    pub fn finished(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| !matches!(c.try_wait(), Ok(None)))
    }

    /// Waits for the guest to stop and returns what its command printed.
    pub fn wait(mut self) -> anyhow::Result<GuestOutput> {
        let Some(mut child) = self.child.take() else {
            bail!("guest already waited for");
        };
        let status = child.wait().context("waiting for run.sh")?;
        let elapsed = self.started.elapsed();
        let join = |h: Option<std::thread::JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        Ok(GuestOutput {
            status,
            output: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
            elapsed,
        })
    }
}

impl Drop for GuestRun {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child
            && matches!(child.try_wait(), Ok(None))
        {
            // The whole group: run.sh, timeout, QEMU. run.sh's trap removes
            // the tap.
            let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// A network namespace for the host side of a guest's link, `{base}-{pid}`,
/// deleted on drop (with the tap in it). The process id keeps concurrent
/// runs (other checkouts on the machine) apart; namespaces of the same base
/// whose process is gone (a crashed run) are deleted on creation.
#[derive(Debug)]
pub struct PeerNs {
    name: String,
}

impl PeerNs {
    pub fn create(base: &str) -> anyhow::Result<PeerNs> {
        let prefix = format!("{base}-");
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let stale = name
                    .strip_prefix(&prefix)
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
                if stale {
                    let _ = Command::new("ip").args(["netns", "del", &name]).status();
                }
            }
        }
        let name = &format!("{base}-{}", std::process::id());
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .context("ip netns add")?
            .success()
            && Command::new("ip")
                .args(["-n", name, "link", "set", "lo", "up"])
                .status()
                .context("ip link set lo up")?
                .success();
        if !ok {
            bail!("creating network namespace {name}");
        }
        Ok(PeerNs {
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NS ARGS`; true when it succeeded.
    pub fn ip(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PeerNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
    }
}
