//! Network namespaces: enter one for set-up, come back, or run a closure in
//! one. Namespace membership is per thread: threads spawned inside a
//! namespace stay there, so the gateway enters the dataplane's namespace
//! only while it spawns its worker and control threads.

use std::fs::File;
use std::io;

/// Moves the calling thread into the network namespace `name`
/// (`/var/run/netns/NAME`, as created by `ip netns add`). Threads spawned
/// afterwards inherit it. Returns a handle to the previous namespace so the
/// caller can go back.
pub fn enter_netns(name: &str) -> io::Result<File> {
    let prev = File::open("/proc/thread-self/ns/net")?;
    let target = File::open(format!("/var/run/netns/{name}"))
        .map_err(|e| io::Error::new(e.kind(), format!("network namespace {name:?}: {e}")))?;
    setns(&target)?;
    Ok(prev)
}

/// Moves the calling thread into the namespace `ns` refers to.
pub fn setns(ns: &File) -> io::Result<()> {
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(io::Error::from)
}

/// Runs `f` inside the network namespace `name` (or where the caller is,
/// for `None`) and returns the calling thread to its namespace, also when
/// `f` fails.
pub fn in_netns<T>(name: Option<&str>, f: impl FnOnce() -> T) -> io::Result<T> {
    let Some(name) = name else {
        return Ok(f());
    };
    let prev = enter_netns(name)?;
    let out = f();
    setns(&prev)?;
    Ok(out)
}
