//! Persistent control-plane state: the route set and the gateway's VTEP MAC.
//!
//! One directory (`[state] dir`) holds:
//! - `routes.json`: `{"version": 1, "generation": N, "routes": [...]}`, the
//!   last route set the RIB accepted. It is written from the RIB's commit
//!   hook, before the new table is published and before the API answers,
//!   so an acknowledged change is on disk, and a refused or failed one is
//!   not;
//! - `vtep_mac.json`: the VTEP MAC generated once when the configuration
//!   does not give one (peers install it as a permanent neighbour, so it
//!   must not change across restarts);
//! - `lock`: an exclusive `flock` held while the store is open, so two
//!   gateways never share one directory.
//!
//! Every file is replaced atomically: write a temporary file, fsync it,
//! rename it over the old one, fsync the directory. After a crash at any
//! point the file is the old version or the new one, never a mix.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use overpass_dataplane::wire::ethernet::MacAddr;

use crate::config::{Config, mac_is_zero};
use crate::control::rib::{RouteSpec, RouteStore};

/// Version of the files' layout; bumped on incompatible changes.
pub const FORMAT_VERSION: u32 = 1;

const ROUTES_FILE: &str = "routes.json";
const VTEP_MAC_FILE: &str = "vtep_mac.json";

/// `routes.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutesFile {
    pub version: u32,
    pub generation: u64,
    pub routes: Vec<RouteSpec>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct VtepMacFile {
    version: u32,
    vtep_mac: MacAddr,
}

/// Fills in `gateway.vtep_mac` from the state dir (generating and saving one
/// the first time) when the file leaves it unset: peers cache the VTEP MAC,
/// so it must outlive restarts.
pub fn resolve_vtep_mac(config: &mut Config, store: Option<&Store>) -> anyhow::Result<()> {
    if !mac_is_zero(&config.gateway.vtep_mac) {
        return Ok(());
    }
    let store = store
        .ok_or_else(|| anyhow::anyhow!("gateway.vtep_mac: required unless [state] dir is set"))?;
    config.gateway.vtep_mac = store.vtep_mac()?;
    Ok(())
}

/// An open state directory (holds its lock until dropped).
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

impl Store {
    /// Opens (creating, mode 0700) `dir` and takes its lock; fails if
    /// another process holds it.
    pub fn open(dir: &Path) -> anyhow::Result<Store> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating state dir {}", dir.display()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))
            .with_context(|| format!("opening {}/lock", dir.display()))?;
        let lock = Flock::lock(lock, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
            anyhow::anyhow!(
                "state dir {} is locked by another process ({e})",
                dir.display()
            )
        })?;
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The persisted route set and its generation; `None` if none was
    /// ever saved. Errors on an unreadable file or an unknown version.
    pub fn load_routes(&self) -> anyhow::Result<Option<RoutesFile>> {
        let path = self.dir.join(ROUTES_FILE);
        let Some(text) = read_if_exists(&path)? else {
            return Ok(None);
        };
        let file: RoutesFile =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if file.version != FORMAT_VERSION {
            bail!(
                "{}: version {} is not supported (this build reads {FORMAT_VERSION})",
                path.display(),
                file.version
            );
        }
        Ok(Some(file))
    }

    /// Saves the route set atomically (returns once it is durable).
    pub fn save_routes(&self, generation: u64, routes: &[RouteSpec]) -> std::io::Result<()> {
        #[derive(Serialize)]
        struct Out<'a> {
            version: u32,
            generation: u64,
            routes: &'a [RouteSpec],
        }
        let bytes = serde_json::to_vec_pretty(&Out {
            version: FORMAT_VERSION,
            generation,
            routes,
        })
        .map_err(std::io::Error::other)?;
        write_atomic(&self.dir, ROUTES_FILE, &bytes)
    }

    /// The persisted VTEP MAC, generating (random, locally administered,
    /// unicast) and saving one on first use.
    pub fn vtep_mac(&self) -> anyhow::Result<MacAddr> {
        let path = self.dir.join(VTEP_MAC_FILE);
        if let Some(text) = read_if_exists(&path)? {
            let f: VtepMacFile = serde_json::from_str(&text)
                .with_context(|| format!("parsing {}", path.display()))?;
            if f.version != FORMAT_VERSION {
                bail!("{}: version {} is not supported", path.display(), f.version);
            }
            return Ok(f.vtep_mac);
        }
        let mut b = [0u8; 6];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .context("reading /dev/urandom")?;
        // Locally administered (bit 1), unicast (bit 0 clear).
        b[0] = (b[0] | 0x02) & !0x01;
        let mac = MacAddr(b);
        let bytes = serde_json::to_vec_pretty(&VtepMacFile {
            version: FORMAT_VERSION,
            vtep_mac: mac,
        })?;
        write_atomic(&self.dir, VTEP_MAC_FILE, &bytes)
            .with_context(|| format!("writing {}", path.display()))?;
        tracing::info!(%mac, path = %path.display(), "generated and saved the gateway's VTEP MAC");
        Ok(mac)
    }
}

fn read_if_exists(path: &Path) -> anyhow::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces `dir/name` with `bytes`: temp file, fsync, rename, fsync dir.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

impl RouteStore for Store {
    fn save_routes(&self, generation: u64, routes: &[RouteSpec]) -> anyhow::Result<()> {
        Store::save_routes(self, generation, routes)
            .with_context(|| format!("writing {}", self.dir.join(ROUTES_FILE).display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("overpass-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn routes_round_trip_and_lock() {
        let d = tmpdir("rt");
        let s = Store::open(&d).unwrap();
        assert!(s.load_routes().unwrap().is_none());
        let routes: Vec<RouteSpec> = serde_json::from_str(
            r#"[{"prefix":"10.244.1.0/24","node":{"name":"n1","underlay_ip":"198.18.0.11","vtep_mac":"02:00:00:00:00:11"}}]"#,
        )
        .unwrap();
        s.save_routes(7, &routes).unwrap();
        let f = s.load_routes().unwrap().unwrap();
        assert_eq!((f.version, f.generation, f.routes), (1, 7, routes));
        assert!(Store::open(&d).is_err(), "a second opener is refused");
        drop(s);
        let s = Store::open(&d).unwrap();
        let mac = s.vtep_mac().unwrap();
        assert!(mac.is_unicast() && mac.0[0] & 2 == 2);
        assert_eq!(s.vtep_mac().unwrap(), mac, "generated once, then stable");
        std::fs::write(
            d.join(ROUTES_FILE),
            r#"{"version":9,"generation":1,"routes":[]}"#,
        )
        .unwrap();
        assert!(s.load_routes().is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
