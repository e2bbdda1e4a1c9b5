//! The API server against clients that misbehave, over real sockets with
//! the real binary (`overpass api-only`, the same server code as `run`):
//! a stop with hundreds of half-open connections finishes within bounds,
//! connections beyond `api.max_connections` are refused while admitted
//! clients are still answered, half-sent requests and stalled bodies are
//! closed by the header and idle timeouts, and a loopback listener answers
//! only loopback `Host` names (DNS rebinding).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

mod common;

use common::{Proc, Scratch, TOKEN};
use overpass_testkit::testbed::wait_until;
use serde_json::Value;

/// A running `overpass api-only` with its scratch dir.
struct Gateway {
    proc: Proc,
    addr: String,
    scratch: Scratch,
}

/// Starts `overpass api-only` on a free loopback port; `api_extra` is
/// added to the `[api]` section.
fn start(name: &str, api_extra: &str) -> Gateway {
    let scratch = Scratch::new(&format!("apisrv-{name}"));
    let cfg = scratch.path("overpass.toml");
    let state = scratch.path("state");
    std::fs::write(
        &cfg,
        scratch.config_with(false, Some((&state, "")), api_extra),
    )
    .unwrap();
    let mut proc = Proc::spawn(
        &["api-only"],
        &cfg,
        &scratch.path("overpass.log"),
        &[("RUST_LOG", "info,overpass::api::server=debug")],
    );
    let url = proc.url(Duration::from_secs(30));
    let addr = url
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("unexpected API URL {url:?}"))
        .to_string();
    Gateway {
        proc,
        addr,
        scratch,
    }
}

impl Gateway {
    fn port(&self) -> u16 {
        self.addr.rsplit_once(':').unwrap().1.parse().unwrap()
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).expect("connecting to the API");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    }

    /// One request on a new connection, with `Host` set to the listener's
    /// address.
    fn get(&self, path: &str) -> Response {
        let mut s = self.connect();
        request(&mut s, "GET", path, &self.addr, &[], "").expect("an answer")
    }

    /// A gauge or counter from `/metrics`.
    fn metric(&self, name: &str) -> u64 {
        let r = self.get("/metrics");
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{}", r.body))
            .trim()
            .parse()
            .unwrap()
    }

    /// The open descriptors of the gateway process that are sockets.
    fn sockets(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.proc.pid()))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

#[derive(Debug)]
struct Response {
    status: u16,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// Sends one HTTP/1.1 request on `s` (kept alive) and reads the answer.
fn request(
    s: &mut TcpStream,
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    read_response(s)
}

/// Reads one response (Content-Length framed, as the API answers).
fn read_response(s: &mut TcpStream) -> std::io::Result<Response> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("closed after {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no content-length in {head:?}"));
    let mut body = vec![0; len];
    s.read_exact(&mut body)?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// Waits (bounded) until the server closes `s`: reads to EOF or a reset,
/// returning what it sent first and how long that took.
fn wait_closed(s: &mut TcpStream, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => break,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!(
                    "the server kept the connection open for {:?} (got {:?})",
                    start.elapsed(),
                    String::from_utf8_lossy(&got)
                )
            }
            Err(e) => panic!("reading: {e}"),
        }
        assert!(
            start.elapsed() < within,
            "the server kept the connection open"
        );
    }
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

/// Half a request: the request line and one header, never the blank line.
const HALF_REQUEST: &[u8] = b"GET /api/v1/routes HTTP/1.1\r\nHost: 127.0.0.1\r\n";

#[test]
fn sigint_stops_the_gateway_within_bounds_with_400_half_open_connections() {
    const HELD: usize = 400;
    // Room for all of them (the default cap is 256).
    let gw = start("stop", "max_connections = 512");
    let before = gw.sockets();
    let mut held = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut s = gw.connect();
        s.write_all(HALF_REQUEST).unwrap();
        held.push(s);
    }
    wait_until(
        "the gateway holds all the half-open connections",
        Duration::from_secs(10),
        || gw.sockets() >= before + HELD,
    );
    // Still answering beside them.
    assert_eq!(gw.get("/healthz").status, 200);
    let mut gw = gw;
    let t0 = Instant::now();
    gw.proc.signal(libc::SIGINT);
    let status = loop {
        if let Some(status) = gw.proc.exited() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "overpass api-only did not stop within 10 s of SIGINT with {HELD} half-open API connections; log:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    assert!(status.success(), "{status}; log:\n{}", gw.proc.log_text());
    let log = gw.proc.log_text();
    let server_side = log
        .lines()
        .find(|l| l.contains("API stopped"))
        .unwrap_or_default();
    eprintln!(
        "clean stop with {HELD} half-open API connections held: SIGINT to exit {:.3} s; {server_side}",
        took.as_secs_f64()
    );
    // The held connections were closed by the server, not left dangling.
    for s in &mut held {
        wait_closed(s, Duration::from_secs(5));
    }
}

#[test]
fn a_stop_lets_a_request_in_progress_finish_and_cuts_a_stuck_one_at_the_shutdown_timeout() {
    let mut gw = start(
        "graceful",
        "shutdown_timeout = 3\nheader_timeout = 120\nidle_timeout = 120",
    );
    // A and B: route creations whose bodies are still on their way. A will
    // finish during the stop, B never does.
    let body = |n: u8| {
        format!(
            r#"{{"prefix":"10.244.{n}.0/24","node":{{"name":"n{n}","underlay_ip":"198.18.0.{n}","vtep_mac":"02:00:00:00:01:{n:02x}"}}}}"#
        )
    };
    let begin = |body: &str| {
        let mut s = gw.connect();
        s.write_all(
            format!(
                "POST /api/v1/routes HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n{}",
                gw.addr,
                body.len(),
                &body[..20]
            )
            .as_bytes(),
        )
        .unwrap();
        // hyper sends 100 Continue once the handler reads the body.
        let mut cont = [0u8; 25];
        s.read_exact(&mut cont).unwrap();
        assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
        s
    };
    let (body_a, body_b) = (body(9), body(8));
    let mut a = begin(&body_a);
    let mut b = begin(&body_b);

    let t0 = Instant::now();
    gw.proc.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        gw.proc.exited().is_none(),
        "stopped with a request in progress"
    );
    // A finishes its request during the stop and gets its answer.
    a.write_all(&body_a.as_bytes()[20..]).unwrap();
    let r = read_response(&mut a).unwrap();
    assert_eq!(r.status, 201, "{}", r.body);
    let status = loop {
        if let Some(status) = gw.proc.exited() {
            break status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "not stopped within 10 s of SIGINT (api.shutdown_timeout = 3); log:\n{}",
            gw.proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    assert!(status.success(), "{status}; log:\n{}", gw.proc.log_text());
    // B held the stop until the timeout, then was closed, unapplied.
    assert!(
        took >= Duration::from_millis(2500),
        "stopped after {took:?}"
    );
    wait_closed(&mut b, Duration::from_secs(5));
    wait_closed(&mut a, Duration::from_secs(5));
    assert!(
        gw.proc.log_text().contains("api.shutdown_timeout"),
        "{}",
        gw.proc.log_text()
    );
    // What was acknowledged is persisted.
    let persisted = std::fs::read_to_string(gw.scratch.path("state/routes.json")).unwrap();
    assert!(persisted.contains("10.244.9.0/24"), "{persisted}");
    assert!(!persisted.contains("10.244.8.0/24"), "{persisted}");
    eprintln!(
        "stop with a request stuck in its body: {:.3} s (api.shutdown_timeout = 3)",
        took.as_secs_f64()
    );
}

#[test]
fn connections_beyond_the_cap_are_refused_while_admitted_clients_are_answered() {
    let gw = start("cap", "max_connections = 4\nheader_timeout = 120");
    // An admitted client that keeps its connection.
    let mut client = gw.connect();
    let r = request(&mut client, "GET", "/healthz", &gw.addr, &[], "").unwrap();
    assert_eq!(r.status, 200);
    // Three more admitted connections that say nothing: the cap is reached.
    let idlers: Vec<TcpStream> = (0..3).map(|_| gw.connect()).collect();
    let open = |client: &mut TcpStream| {
        let r = request(client, "GET", "/metrics", &gw.addr, &[], "").unwrap();
        r.body
            .lines()
            .find_map(|l| l.strip_prefix("overpass_api_connections "))
            .map(|v| v.trim().parse::<u64>().unwrap())
            .unwrap_or_else(|| panic!("no overpass_api_connections in:\n{}", r.body))
    };
    wait_until("four connections admitted", Duration::from_secs(10), || {
        open(&mut client) == 4
    });
    // The fifth: answered 503 naming the key, and closed.
    for _ in 0..3 {
        let mut extra = gw.connect();
        let (said, _) = wait_closed(&mut extra, Duration::from_secs(5));
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 503"),
            "{said:?}"
        );
        if !said.is_empty() {
            assert!(said.contains("api.max_connections"), "{said}");
            assert!(said.contains(r#""field":"connection""#), "{said}");
        }
    }
    // The admitted client is still answered, on its own connection.
    let r = request(&mut client, "GET", "/api/v1/routes", &gw.addr, &[], "").unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["routes"].as_array().unwrap().len(), 1);
    let r = request(&mut client, "GET", "/metrics", &gw.addr, &[], "").unwrap();
    assert!(
        r.body
            .contains("overpass_api_connections_refused_total 3\n"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("overpass_api_connections_max 4\n"),
        "{}",
        r.body
    );
    // A freed slot is served again.
    drop(idlers);
    drop(client);
    wait_until("a freed slot admits again", Duration::from_secs(10), || {
        let mut s = gw.connect();
        request(&mut s, "GET", "/healthz", &gw.addr, &[], "").is_ok_and(|r| r.status == 200)
    });
}

#[test]
fn a_half_request_and_a_quiet_kept_alive_connection_are_closed_after_the_header_timeout() {
    let gw = start("header", "header_timeout = 1");
    let mut half = gw.connect();
    half.write_all(HALF_REQUEST).unwrap();
    let mut quiet = gw.connect();
    let r = request(&mut quiet, "GET", "/healthz", &gw.addr, &[], "").unwrap();
    assert_eq!(r.status, 200);
    let (said, after) = wait_closed(&mut half, Duration::from_secs(10));
    assert!(
        said.is_empty() || said.starts_with("HTTP/1.1 408"),
        "{said:?}"
    );
    assert!(
        after >= Duration::from_millis(500),
        "closed before the timeout: {after:?}"
    );
    wait_closed(&mut quiet, Duration::from_secs(10));
    // Counted (the server may count just after the client saw the close).
    wait_until("both timeouts counted", Duration::from_secs(5), || {
        gw.metric("overpass_api_connections_timed_out_total") >= 2
    });
}

#[test]
fn a_stalled_request_body_is_closed_after_the_idle_timeout() {
    let gw = start("idle", "idle_timeout = 1");
    let mut s = gw.connect();
    let auth = format!("Bearer {TOKEN}");
    let head = format!(
        "POST /api/v1/routes HTTP/1.1\r\nHost: {}\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"prefix\":",
        gw.addr
    );
    s.write_all(head.as_bytes()).unwrap();
    let (said, after) = wait_closed(&mut s, Duration::from_secs(10));
    assert!(
        after >= Duration::from_millis(500),
        "closed before the timeout: {after:?} ({said:?})"
    );
    eprintln!("stalled body: closed after {after:?}, the server said {said:?}");
    // The route set is unchanged.
    let r = gw.get("/api/v1/routes");
    assert_eq!(
        r.json()["routes"].as_array().unwrap().len(),
        1,
        "{}",
        r.body
    );
    assert_eq!(gw.metric("overpass_api_connections_timed_out_total"), 1);
}

#[test]
fn a_loopback_listener_answers_only_loopback_host_names() {
    let gw = start("host", "");
    let port = gw.port();
    for path in ["/api/v1/routes", "/metrics", "/", "/healthz", "/nope"] {
        for host in [
            "evil.example".to_string(),
            format!("evil.example:{port}"),
            format!("localhost:{}", port.wrapping_add(1)),
        ] {
            let mut s = gw.connect();
            let r = request(&mut s, "GET", path, &host, &[], "").unwrap();
            assert_eq!(r.status, 421, "{path} with Host {host}: {}", r.body);
            let e = r.json();
            assert_eq!(e["error"]["field"], "host", "{}", r.body);
            assert!(
                e["error"]["message"].as_str().unwrap().contains(&host),
                "{}",
                r.body
            );
        }
    }
    for host in [
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_string(),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
    ] {
        let mut s = gw.connect();
        let r = request(&mut s, "GET", "/api/v1/routes", &host, &[], "").unwrap();
        assert_eq!(r.status, 200, "Host {host}: {}", r.body);
    }
    // An absolute-form target names the host too.
    let mut s = gw.connect();
    s.write_all(
        format!("GET http://evil.example/metrics HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(read_response(&mut s).unwrap().status, 421);
    // A refused mutation changes nothing.
    let auth = format!("Bearer {TOKEN}");
    let mut s = gw.connect();
    let r = request(
        &mut s,
        "DELETE",
        "/api/v1/routes/10.244.1.0/24",
        "evil.example",
        &[("Authorization", &auth)],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 421);
    let r = gw.get("/api/v1/routes");
    assert_eq!(
        r.json()["routes"].as_array().unwrap().len(),
        1,
        "{}",
        r.body
    );
}

#[test]
fn allowed_hosts_admit_a_proxy_name() {
    let gw = start(
        "allowed",
        r#"allowed_hosts = ["gw.example", "proxy.example:8443"]"#,
    );
    for (host, status) in [
        ("gw.example", 200),
        ("gw.example:443", 200),
        ("proxy.example:8443", 200),
        ("proxy.example", 421),
        ("evil.example", 421),
    ] {
        let mut s = gw.connect();
        let r = request(&mut s, "GET", "/healthz", host, &[], "").unwrap();
        assert_eq!(r.status, status, "Host {host}: {}", r.body);
    }
}
