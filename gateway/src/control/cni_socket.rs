//! The local Unix socket `overpass-cni` talks to (`attach.socket`, mode
//! 0600: only root, the user container runtimes run plugins as, can attach).
//!
//! One JSON request per connection, answered with one JSON line:
//! `{"op":"attach","pod":{…AttachRequest}}`, `{"op":"detach","interface":"…"}`,
//! `{"op":"ready"}` (cheap: readiness, worker count, tunnel MTU) or
//! `{"op":"status"}` (everything `GET /api/v1/attachments` shows); the answer is `{"ok":…}` or
//! `{"error":{"kind","field","message"}}`. The same operations as the REST
//! API's `/api/v1/attachments`, without HTTP or a token (the plugin is a
//! short-lived process on the same host).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::control::attach::{AttachError, AttachErrorKind, AttachRequest, Attacher};

/// A request on the socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum LocalRequest {
    Attach { pod: AttachRequest },
    Detach { interface: String },
    Status,
    Ready,
}

/// The error half of an answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalError {
    /// invalid, conflict, not-found, full, unavailable, failed, bad-request.
    pub kind: String,
    pub field: String,
    pub message: String,
}

impl From<AttachError> for LocalError {
    fn from(e: AttachError) -> Self {
        LocalError {
            kind: match e.kind {
                AttachErrorKind::Invalid => "invalid",
                AttachErrorKind::Conflict => "conflict",
                AttachErrorKind::NotFound => "not-found",
                AttachErrorKind::Full => "full",
                AttachErrorKind::Unavailable => "unavailable",
                AttachErrorKind::Failed => "failed",
            }
            .into(),
            field: e.field,
            message: e.message,
        }
    }
}

/// The serving thread; stopped (and the socket file removed) on drop.
#[derive(Debug)]
pub struct LocalServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LocalServer {
    /// Binds `path` (its directory created 0755 if missing, a stale socket
    /// file replaced) and serves `attacher` on it.
    pub fn start(path: &Path, attacher: Attacher) -> anyhow::Result<LocalServer> {
        use anyhow::Context;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("attach.socket: creating {}", dir.display()))?;
        }
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                anyhow::bail!(
                    "attach.socket: {} exists and is not a socket",
                    path.display()
                );
            }
            if UnixStream::connect(path).is_ok() {
                anyhow::bail!(
                    "attach.socket: {} is served by another process (another gateway?)",
                    path.display()
                );
            }
            std::fs::remove_file(path)
                .with_context(|| format!("attach.socket: removing stale {}", path.display()))?;
        }
        let listener = UnixListener::bind(path)
            .with_context(|| format!("attach.socket: binding {}", path.display()))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("attach.socket: chmod {}", path.display()))?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("overpass-cni-sock".into())
                .spawn(move || serve(&listener, &attacher, &stop))?
        };
        tracing::info!(socket = %path.display(), "serving pod attachments on the local socket");
        Ok(LocalServer {
            path: path.to_path_buf(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: &UnixListener, attacher: &Attacher, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, attacher) {
                    tracing::debug!("attach socket client: {e}");
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                tracing::warn!("attach socket accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(stream: UnixStream, attacher: &Attacher) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(64 * 1024)).read_line(&mut line)?;
    let reply = match serde_json::from_str::<LocalRequest>(line.trim()) {
        Err(e) => serde_json::json!({"error": LocalError {
            kind: "bad-request".into(),
            field: "body".into(),
            message: e.to_string(),
        }}),
        Ok(LocalRequest::Attach { pod }) => match attacher.attach(pod) {
            Ok(a) => serde_json::json!({ "ok": a }),
            Err(e) => serde_json::json!({ "error": LocalError::from(e) }),
        },
        Ok(LocalRequest::Detach { interface }) => match attacher.detach(&interface) {
            Ok(r) => serde_json::json!({ "ok": r }),
            Err(e) => serde_json::json!({ "error": LocalError::from(e) }),
        },
        Ok(LocalRequest::Ready) => match attacher.ready() {
            Some(s) => serde_json::json!({ "ok": s }),
            None => serde_json::json!({"error": LocalError {
                kind: "unavailable".into(),
                field: "gateway".into(),
                message: "the gateway is stopping".into(),
            }}),
        },
        Ok(LocalRequest::Status) => match attacher.status() {
            Some(s) => serde_json::json!({ "ok": s }),
            None => serde_json::json!({"error": LocalError {
                kind: "unavailable".into(),
                field: "gateway".into(),
                message: "the gateway is stopping".into(),
            }}),
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(std::io::Error::other)?;
    out.push(b'\n');
    (&stream).write_all(&out)
}
