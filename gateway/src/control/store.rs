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
//! Every file is replaced atomically: write a temporary file (`.NAME.tmp`),
//! fsync it, rename it over the old one, fsync the directory. After a crash
//! at any point the file is the old version or the new one, never a mix. A
//! write that fails (a full disk, a read-only directory) removes its
//! temporary file and leaves the old file as it was; a temporary file a
//! crash left behind is removed when the store is next opened.
//!
//! A `routes.json` that cannot be used (not JSON, an unknown version) is
//! reported as [`Unusable`], naming the file; the caller decides between
//! refusing to start and [`Store::set_aside`], which renames it to
//! `routes.json.corrupt-<UTC time>` (never deleting it).

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
        let store = Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        };
        store.remove_stale_temp_files();
        Ok(store)
    }

    /// Removes the temporary files (`.NAME.tmp`) of writes a crash
    /// interrupted. Only called with the lock held, so no write of ours is
    /// in progress. Never touches anything else.
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = [ROUTES_FILE, VTEP_MAC_FILE]
                .iter()
                .any(|f| name == temp_name(f));
            if !ours {
                continue;
            }
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => tracing::warn!(
                    path = %path.display(),
                    "removed the temporary file of an interrupted write (the file it was \
                     meant to replace is unchanged)"
                ),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "removing a stale temporary file: {e}")
                }
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `routes.json`'s path.
    pub fn routes_path(&self) -> PathBuf {
        self.dir.join(ROUTES_FILE)
    }

    /// The persisted route set and its generation; `None` if none was
    /// ever saved. A file that is not a route set of this build's format
    /// is an [`Unusable`] error (in the chain); a file that cannot be read
    /// at all (permissions, I/O) is a plain error naming it.
    pub fn load_routes(&self) -> anyhow::Result<Option<RoutesFile>> {
        let path = self.routes_path();
        let Some(text) = read_if_exists(&path)? else {
            return Ok(None);
        };
        let unusable = |problem: String| Unusable {
            path: path.clone(),
            problem,
        };
        let file: RoutesFile =
            serde_json::from_str(&text).map_err(|e| unusable(format!("not a route set: {e}")))?;
        if file.version != FORMAT_VERSION {
            return Err(unusable(format!(
                "version {} is not supported (this build reads version {FORMAT_VERSION})",
                file.version
            ))
            .into());
        }
        Ok(Some(file))
    }

    /// Renames `routes.json` to `routes.json.corrupt-<UTC time>` in the
    /// same directory (never deletes it) and returns the new path. The next
    /// start, without a `routes.json`, uses the configuration's set.
    pub fn set_aside(&self) -> anyhow::Result<PathBuf> {
        let from = self.routes_path();
        let stamp = utc_stamp(std::time::SystemTime::now());
        let mut to = self.dir.join(format!("{ROUTES_FILE}.corrupt-{stamp}"));
        let mut n = 1;
        while to.exists() {
            to = self.dir.join(format!("{ROUTES_FILE}.corrupt-{stamp}.{n}"));
            n += 1;
        }
        std::fs::rename(&from, &to)
            .and_then(|()| File::open(&self.dir)?.sync_all())
            .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
        Ok(to)
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
            // Not set aside like routes.json: peers know the gateway by this
            // MAC, so a new one would cut them off silently.
            const FIX: &str = "peers know this gateway by the MAC it held: restore the file, \
                               or set gateway.vtep_mac to that MAC (a peer's `ip neigh` shows it)";
            let f: VtepMacFile = serde_json::from_str(&text).map_err(|e| {
                anyhow::anyhow!("{}: not a VTEP MAC file ({e}); {FIX}", path.display())
            })?;
            if f.version != FORMAT_VERSION {
                bail!(
                    "{}: version {} is not supported; {FIX}",
                    path.display(),
                    f.version
                );
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

/// A persisted file that cannot be used: which, and what is wrong with it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct Unusable {
    pub path: PathBuf,
    pub problem: String,
}

/// The temporary file [`write_atomic`] writes `name` through.
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// Replaces `dir/name` with `bytes`: temp file, fsync, rename, fsync dir.
/// On failure before the rename, `dir/name` is untouched and the temporary
/// file is removed.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(temp_name(name));
    let written = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if let Err(e) = written {
        // Nothing to remove if even the create failed; never mask `e`.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)?.sync_all()
}

/// `YYYYMMDDTHHMMSSZ` (UTC) of `t`, for file names.
fn utc_stamp(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
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

    #[test]
    fn utc_stamps() {
        let at = |s: u64| utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(951_782_400), "20000229T000000Z");
        assert_eq!(at(1_709_251_199), "20240229T235959Z");
        assert_eq!(at(4_102_444_800), "21000101T000000Z");
    }

    #[test]
    fn unusable_files_are_named_and_set_aside_never_deleted() {
        let d = tmpdir("bad");
        let s = Store::open(&d).unwrap();
        for (text, problem) in [
            ("{not json", "not a route set"),
            (r#"{"version":2,"generation":1,"routes":[]}"#, "version 2"),
        ] {
            std::fs::write(d.join(ROUTES_FILE), text).unwrap();
            let e = s.load_routes().unwrap_err();
            let u = e.downcast_ref::<Unusable>().expect("an Unusable error");
            assert_eq!(u.path, d.join(ROUTES_FILE));
            assert!(e.to_string().contains(problem), "{e}");
            assert!(e.to_string().contains("routes.json"), "{e}");
        }
        let first = s.set_aside().unwrap();
        std::fs::write(d.join(ROUTES_FILE), "also bad").unwrap();
        let second = s.set_aside().unwrap();
        assert_ne!(
            first, second,
            "a second set-aside in the same second keeps both"
        );
        assert!(!d.join(ROUTES_FILE).exists());
        assert!(s.load_routes().unwrap().is_none());
        let name = first.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("routes.json.corrupt-2"), "{name}");
        assert_eq!(
            std::fs::read_to_string(&first).unwrap(),
            r#"{"version":2,"generation":1,"routes":[]}"#
        );
        assert_eq!(std::fs::read_to_string(&second).unwrap(), "also bad");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn stale_temp_files_are_removed_at_open_and_failed_writes_leave_none() {
        let d = tmpdir("tmp");
        let s = Store::open(&d).unwrap();
        s.save_routes(1, &[]).unwrap();
        let before = std::fs::read(d.join(ROUTES_FILE)).unwrap();
        drop(s);
        std::fs::write(d.join(".routes.json.tmp"), "half a write").unwrap();
        std::fs::write(d.join(".vtep_mac.json.tmp"), "").unwrap();
        std::fs::write(d.join("notes.tmp"), "not ours").unwrap();
        let s = Store::open(&d).unwrap();
        assert!(!d.join(".routes.json.tmp").exists());
        assert!(!d.join(".vtep_mac.json.tmp").exists());
        assert!(d.join("notes.tmp").exists(), "only our own temp files go");
        assert_eq!(std::fs::read(d.join(ROUTES_FILE)).unwrap(), before);
        // A write whose rename fails (the target is a non-empty directory)
        // leaves no temp file and the target as it was.
        std::fs::create_dir_all(d.join("blocked.json/x")).unwrap();
        assert!(write_atomic(&d, "blocked.json", b"{}").is_err());
        assert!(!d.join(".blocked.json.tmp").exists());
        assert!(d.join("blocked.json/x").is_dir());
        drop(s);
        let _ = std::fs::remove_dir_all(&d);
    }
}
