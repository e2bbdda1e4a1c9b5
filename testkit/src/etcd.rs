//! A real etcd (Debian's `etcd-server`, `/usr/bin/etcd`) for tests and
//! the demo: its own data directory under the temp dir, free loopback
//! ports, killed (and the directory removed) on drop. [`Etcd::stop`] and
//! [`Etcd::start_again`] take it away and bring it back on the same ports
//! with the same data, for the datastore-loss tests. [`Etcd::start_tls`]
//! serves clients over TLS only and demands a client certificate, all of
//! it signed by a throw-away CA made with the `openssl` CLI in the data
//! directory ([`TlsFiles`]; [`throwaway_ca`] makes another, for a wrong
//! CA). [`Kv`] is a small blocking client (etcd-client on a runtime of its
//! own) for what tests write and read, over TLS too.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use etcd_client::{Certificate, Client, GetOptions, Identity, PutOptions, TlsOptions};

use crate::testbed::KillOnDrop;

/// The etcd binary (Debian's etcd-server package).
pub const ETCD: &str = "/usr/bin/etcd";

/// The `openssl` CLI (Debian's openssl package).
pub const OPENSSL: &str = "openssl";

/// A running etcd.
#[derive(Debug)]
pub struct Etcd {
    child: Option<KillOnDrop>,
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    tls: Option<ServerTls>,
}

/// What a client of a TLS etcd needs: the CA that signed the server's
/// certificate, and a client certificate and key the server accepts (PEM
/// files, flanneld's `--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug)]
struct ServerTls {
    client: TlsFiles,
    server_cert: PathBuf,
    server_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(OPENSSL)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {OPENSSL} (install Debian's openssl)"))?;
    if !out.status.success() {
        bail!(
            "{OPENSSL} {}: {}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A throw-away CA in `dir`: `<name>.pem` (certificate) and `<name>.key`
/// (its EC P-256 key), valid for two days. Returns the certificate's path.
pub fn throwaway_ca(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=overpass test CA {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    Ok(dir.join(pem))
}

/// A certificate `<name>.pem` and key `<name>.key` in `dir`, signed by the
/// CA `ca` (made by [`throwaway_ca`] in the same dir) with `extensions`
/// (an OpenSSL extension section: SAN, extended key usage).
fn issue(dir: &Path, ca: &str, name: &str, serial: u32, extensions: &str) -> anyhow::Result<()> {
    let ext = format!("{name}.ext");
    std::fs::write(dir.join(&ext), extensions)?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &format!("{name}.pem"),
        ],
    )
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

impl Etcd {
    /// Starts etcd with a fresh data dir (`name` makes it unique among
    /// this process's instances) and waits until it answers.
    pub fn start(name: &str) -> anyhow::Result<Etcd> {
        Etcd::start_with(name, false)
    }

    /// As [`Etcd::start`], serving clients over TLS only (`https://`) and
    /// requiring a client certificate (`--client-cert-auth`): a throw-away
    /// CA, a server certificate for 127.0.0.1 and a client certificate,
    /// made with `openssl` in its directory. [`Etcd::tls`] gives the
    /// client's files.
    pub fn start_tls(name: &str) -> anyhow::Result<Etcd> {
        Etcd::start_with(name, true)
    }

    fn start_with(name: &str, tls: bool) -> anyhow::Result<Etcd> {
        if !Path::new(ETCD).exists() {
            bail!("{ETCD} not found: install Debian's etcd-server (deploy/install-deps.sh)");
        }
        let dir = std::env::temp_dir().join(format!("overpass-etcd-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let tls = if tls {
            let certs = dir.join("tls");
            std::fs::create_dir_all(&certs)?;
            throwaway_ca(&certs, "ca")?;
            issue(
                &certs,
                "ca",
                "server",
                1,
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            )?;
            issue(&certs, "ca", "client", 2, "extendedKeyUsage=clientAuth\n")?;
            Some(ServerTls {
                client: TlsFiles {
                    ca: certs.join("ca.pem"),
                    cert: certs.join("client.pem"),
                    key: certs.join("client.key"),
                },
                server_cert: certs.join("server.pem"),
                server_key: certs.join("server.key"),
            })
        } else {
            None
        };
        let mut etcd = Etcd {
            child: None,
            dir,
            client_port: free_port()?,
            peer_port: free_port()?,
            tls,
        };
        etcd.start_again()?;
        Ok(etcd)
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// A client's CA, certificate and key for an etcd started with
    /// [`Etcd::start_tls`].
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref().map(|t| &t.client)
    }

    /// The data and log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills etcd (SIGKILL: a crash or a partition, no goodbye). Its data
    /// stays for [`Etcd::start_again`].
    pub fn stop(&mut self) {
        self.child = None; // KillOnDrop
    }

    /// (Re)starts etcd on the same ports with the same data, and waits
    /// (up to 20 s) until it answers.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))?;
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut tls_args: Vec<String> = vec![];
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--cert-file", &t.server_cert),
                ("--key-file", &t.server_key),
                ("--trusted-ca-file", &t.client.ca),
            ] {
                tls_args.push(flag.into());
                tls_args.push(path.to_string_lossy().into_owned());
            }
            tls_args.push("--client-cert-auth".into());
        }
        let child = Command::new(ETCD)
            .args(tls_args)
            .args([
                "--name",
                "overpass-test",
                "--data-dir",
                &self.dir.join("data").to_string_lossy(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("overpass-test={peer}"),
                // Small and quick: a test instance.
                "--heartbeat-interval",
                "50",
                "--election-timeout",
                "500",
                "--log-level",
                "warn",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {ETCD}"))?;
        self.child = Some(KillOnDrop(child));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if !self.running() {
                bail!(
                    "etcd exited at start; its log:\n{}",
                    std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
                );
            }
            if let Ok(kv) = self.kv()
                && kv.get("/health-probe").is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("etcd at {} did not answer within 20 s", self.endpoint());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A client of this etcd (over TLS with the client certificate for an
    /// etcd started with [`Etcd::start_tls`]).
    pub fn kv(&self) -> anyhow::Result<Kv> {
        Kv::connect_with(&self.endpoint(), self.tls())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A blocking etcd client for tests.
pub struct Kv {
    rt: tokio::runtime::Runtime,
    client: Client,
}

impl std::fmt::Debug for Kv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kv")
    }
}

impl Kv {
    pub fn connect(endpoint: &str) -> anyhow::Result<Kv> {
        Kv::connect_with(endpoint, None)
    }

    /// As [`Kv::connect`]; with `tls`, over TLS trusting `tls.ca` and
    /// presenting `tls.cert`.
    pub fn connect_with(endpoint: &str, tls: Option<&TlsFiles>) -> anyhow::Result<Kv> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        if let Some(t) = tls {
            let read =
                |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            options = options.with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(read(&t.ca)?))
                    .identity(Identity::from_pem(read(&t.cert)?, read(&t.key)?)),
            );
        }
        let client = rt
            .block_on(Client::connect([endpoint], Some(options)))
            .map_err(|e| anyhow!("connecting to {endpoint}: {e}"))?;
        Ok(Kv { rt, client })
    }

    /// Puts `key` = `value`; with `ttl` (seconds), under a new etcd lease.
    /// Returns the revision of the write.
    pub fn put(&self, key: &str, value: &str, ttl: Option<i64>) -> anyhow::Result<i64> {
        let mut c = self.client.clone();
        self.rt
            .block_on(async {
                let opts = match ttl {
                    Some(t) => {
                        Some(PutOptions::new().with_lease(c.lease_grant(t, None).await?.id()))
                    }
                    None => None,
                };
                let r = c.put(key, value, opts).await?;
                Ok::<_, etcd_client::Error>(r.header().map_or(0, |h| h.revision()))
            })
            .map_err(|e| anyhow!("put {key}: {e}"))
    }

    /// Deletes `key`; returns how many keys went.
    pub fn delete(&self, key: &str) -> anyhow::Result<i64> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.delete(key, None))
            .map(|r| r.deleted())
            .map_err(|e| anyhow!("delete {key}: {e}"))
    }

    /// The value of `key` and the ID of the etcd lease holding it (0: none).
    pub fn get(&self, key: &str) -> anyhow::Result<Option<(String, i64)>> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.get(key, None))
            .map_err(|e| anyhow!("get {key}: {e}"))?;
        Ok(r.kvs()
            .first()
            .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())))
    }

    /// Every key under `prefix` with its value.
    pub fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, String)>> {
        let mut c = self.client.clone();
        let r = self
            .rt
            .block_on(c.get(prefix, Some(GetOptions::new().with_prefix())))
            .map_err(|e| anyhow!("list {prefix}: {e}"))?;
        Ok(r.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect())
    }

    /// Seconds left on etcd lease `id` (-1: expired or unknown).
    pub fn lease_ttl(&self, id: i64) -> anyhow::Result<i64> {
        let mut c = self.client.clone();
        self.rt
            .block_on(c.lease_time_to_live(id, None))
            .map(|r| r.ttl())
            .map_err(|e| anyhow!("lease ttl {id:x}: {e}"))
    }

    /// Compacts the history up to the current revision; returns it.
    pub fn compact_all(&self) -> anyhow::Result<i64> {
        let mut c = self.client.clone();
        self.rt
            .block_on(async {
                let rev = c.get("/", None).await?.header().map_or(0, |h| h.revision());
                c.compact(rev, None).await?;
                Ok::<_, etcd_client::Error>(rev)
            })
            .map_err(|e| anyhow!("compact: {e}"))
    }
}
