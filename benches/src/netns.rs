//! Running code and commands inside the test bed's network namespaces.

use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// Runs `f` with the calling thread inside namespace `ns`, then moves the
/// thread back (also when `f` fails). Sockets and XDP links created inside
/// stay bound to that namespace's interfaces.
pub fn within<T>(ns: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    overpass::host::netns::in_netns(Some(ns), f)
        .with_context(|| format!("entering or leaving {ns}"))?
}

/// Runs a shell script inside `ns` (`ip netns exec NS sh -c SCRIPT`); a
/// non-zero exit is an error carrying the script's stderr.
pub fn sh(ns: &str, script: &str) -> anyhow::Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "sh", "-c", script])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running a script in {ns}"))?;
    if !out.status.success() {
        bail!(
            "script in {ns} failed ({}): {}\n--- script ---\n{script}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pins the calling thread (and every process it spawns afterwards) to `core`.
pub fn pin_to(core: usize) -> bool {
    core_affinity::set_for_current(core_affinity::CoreId { id: core })
}

/// Pins every kernel thread whose name starts with `prefix` (threaded NAPI
/// pollers are named `napi/{dev}-{id}`) to `cpu`. Returns how many.
pub fn pin_threads(prefix: &str, cpu: usize) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut n = 0;
    for e in dir.flatten() {
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if !comm.trim_end().starts_with(prefix) {
            continue;
        }
        // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET writes
        // inside it; sched_setaffinity reads `size_of` bytes of it;
        // sched_setscheduler reads one sched_param.
        let rc = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            // Real-time priority: the poller preempts a busy-polling user
            // thread on its CPU, as softirq processing would.
            let param = libc::sched_param { sched_priority: 50 };
            libc::sched_setscheduler(pid, libc::SCHED_FIFO, &param);
            libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if rc == 0 {
            n += 1;
        }
    }
    n
}

/// Lets the calling thread run on every online CPU again.
pub fn unpin() {
    // SAFETY: as in `pin_threads`; pid 0 is the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..num_cpus() {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Online CPUs.
pub fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(
            std::fs::read_to_string("/proc/cpuinfo")
                .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
                .unwrap_or(1),
        )
}
