//! The `Host` check against DNS rebinding.
//!
//! A page on `evil.example` whose name is re-pointed at 127.0.0.1 makes the
//! browser send same-origin requests to a loopback listener, with
//! `Host: evil.example`. So on a loopback listener only loopback names are
//! answered: `localhost`, 127.0.0.0/8 and `[::1]`, with the listener's port or
//! none, plus the operator's `api.allowed_hosts` (e.g. the name a reverse
//! proxy forwards). Another listener is reachable by its own address anyway;
//! there the Host is checked only when `api.allowed_hosts` is set.
//!
//! Every route is covered (the layer wraps the whole router, fallbacks,
//! `/metrics` and the dashboard included); a refused request gets 421
//! Misdirected Request naming the field `host`.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// One `api.allowed_hosts` entry: a host, and a port or any port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// Parses `name`, `name:port`, `1.2.3.4[:port]` or `[v6][:port]`; the
    /// error says what is wrong (the caller names the key).
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let (host, port) = split_host_port(text).map_err(|why| {
            format!("{text:?} is not a host name or address with an optional :port ({why})")
        })?;
        Ok(HostPattern { host, port })
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host && (self.port.is_none() || self.port == port)
    }
}

/// Splits `host[:port]` (IPv6 in brackets) into the lower-cased host and
/// the port; refuses anything else (user info, paths, bad ports).
fn split_host_port(text: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if text.starts_with('[') {
        let end = text.find(']').ok_or("an unclosed [")?;
        let v6 = &text[1..end];
        v6.parse::<Ipv6Addr>()
            .map_err(|_| "not an IPv6 address in the brackets")?;
        let rest = &text[end + 1..];
        let port = match rest {
            "" => None,
            _ => Some(rest.strip_prefix(':').ok_or("junk after ]")?),
        };
        (&text[..=end], port)
    } else {
        match text.split_once(':') {
            Some((h, p)) => {
                if p.contains(':') {
                    return Err("an IPv6 address goes in brackets");
                }
                (h, Some(p))
            }
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err("no host");
    }
    if !host.starts_with('[')
        && !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        return Err("a host name has letters, digits, '-', '.' and '_' only");
    }
    let port = match port {
        None => None,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(p.parse::<u16>().map_err(|_| "the port is above 65535")?)
        }
        Some(_) => return Err("the port is not a number"),
    };
    Ok((host.to_ascii_lowercase(), port))
}

/// What the listener answers to.
#[derive(Debug, Clone)]
pub struct HostPolicy {
    /// Check at all (a loopback listener, or allowed hosts given).
    enforce: bool,
    port: u16,
    allowed: Vec<HostPattern>,
}

impl HostPolicy {
    /// The policy for a listener bound to `addr`, with the operator's
    /// `allowed_hosts` (already validated by the configuration).
    pub fn new(addr: SocketAddr, allowed_hosts: &[String]) -> Result<HostPolicy, String> {
        let allowed = allowed_hosts
            .iter()
            .enumerate()
            .map(|(i, h)| HostPattern::parse(h).map_err(|e| format!("api.allowed_hosts[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HostPolicy {
            enforce: addr.ip().is_loopback() || !allowed.is_empty(),
            port: addr.port(),
            allowed,
        })
    }

    /// `Ok` when a request with this `Host` (or absolute-form authority)
    /// may be answered; otherwise what to tell the client.
    pub fn check(&self, authority: Option<&str>) -> Result<(), String> {
        if !self.enforce {
            return Ok(());
        }
        let Some(raw) = authority else {
            return Err("a Host header is required".to_string());
        };
        let refuse = || {
            let mut allowed = format!(
                "localhost, 127.0.0.0/8 or [::1], with port {} or none",
                self.port
            );
            if !self.allowed.is_empty() {
                allowed.push_str(" (and api.allowed_hosts)");
            }
            format!("{raw:?} is not a name of this server; it answers {allowed}")
        };
        let (host, port) = split_host_port(raw).map_err(|_| refuse())?;
        if is_loopback_name(&host) && port.is_none_or(|p| p == self.port) {
            return Ok(());
        }
        if self.allowed.iter().any(|p| p.matches(&host, port)) {
            return Ok(());
        }
        Err(refuse())
    }
}

/// `localhost`, an address in 127.0.0.0/8, or `[::1]`.
fn is_loopback_name(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<Ipv6Addr>().is_ok_and(|a| a.is_loopback());
    }
    host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// The middleware: refuses a request whose Host the policy does not allow.
pub async fn check_host(
    State(policy): State<Arc<HostPolicy>>,
    req: Request,
    next: Next,
) -> Response {
    // An absolute-form target (`GET http://name/ HTTP/1.1`) takes the place
    // of Host (RFC 9112 §3.2.2); both are checked when both are present.
    let from_uri = req.uri().authority().map(|a| a.as_str().to_string());
    let from_header = match req.headers().get_all(header::HOST).iter().count() {
        0 => None,
        1 => match req.headers().get(header::HOST).map(|v| v.to_str()) {
            Some(Ok(v)) => Some(v.to_string()),
            _ => {
                return misdirected("the Host header is not visible ASCII".to_string());
            }
        },
        _ => return misdirected("more than one Host header".to_string()),
    };
    let verdict = match (&from_uri, &from_header) {
        (None, h) => policy.check(h.as_deref()),
        (Some(u), None) => policy.check(Some(u)),
        (Some(u), Some(h)) => policy.check(Some(u)).and_then(|()| policy.check(Some(h))),
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(message) => misdirected(message),
    }
}

fn misdirected(message: String) -> Response {
    ApiError::new(StatusCode::MISDIRECTED_REQUEST, "host", message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(port: u16, allowed: &[&str]) -> HostPolicy {
        let allowed: Vec<String> = allowed.iter().map(|s| s.to_string()).collect();
        HostPolicy::new(SocketAddr::from(([127, 0, 0, 1], port)), &allowed).unwrap()
    }

    #[test]
    fn loopback_listener_answers_loopback_names_only() {
        let p = loopback(9180, &[]);
        for ok in [
            "localhost",
            "LOCALHOST:9180",
            "127.0.0.1",
            "127.0.0.1:9180",
            "127.1.2.3:9180",
            "[::1]",
            "[::1]:9180",
        ] {
            assert_eq!(p.check(Some(ok)), Ok(()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9180",
            "localhost:80",
            "127.0.0.1:9181",
            "localhost.evil.example",
            "10.0.0.1:9180",
            "[::2]:9180",
            "[::1",
            "user@localhost",
            "localhost:99999",
            "",
        ] {
            let e = p.check(Some(bad)).unwrap_err();
            assert!(e.contains("9180"), "{bad}: {e}");
        }
        assert!(
            p.check(None)
                .unwrap_err()
                .contains("Host header is required")
        );
    }

    #[test]
    fn allowed_hosts_add_names_with_or_without_port() {
        let p = loopback(9180, &["gw.example", "proxy.example:8443", "[fd00::1]"]);
        assert_eq!(p.check(Some("gw.example")), Ok(()));
        assert_eq!(p.check(Some("GW.example:1234")), Ok(()));
        assert_eq!(p.check(Some("proxy.example:8443")), Ok(()));
        assert!(p.check(Some("proxy.example")).is_err());
        assert!(p.check(Some("proxy.example:9180")).is_err());
        assert_eq!(p.check(Some("[fd00::1]:9180")), Ok(()));
        assert!(p.check(Some("evil.example")).is_err());
    }

    #[test]
    fn other_listeners_check_only_with_allowed_hosts() {
        let any = SocketAddr::from(([0, 0, 0, 0], 9180));
        let p = HostPolicy::new(any, &[]).unwrap();
        assert_eq!(p.check(Some("evil.example")), Ok(()));
        assert_eq!(p.check(None), Ok(()));
        let p = HostPolicy::new(any, &["gw.example".to_string()]).unwrap();
        assert_eq!(p.check(Some("gw.example:9180")), Ok(()));
        assert_eq!(p.check(Some("localhost:9180")), Ok(()));
        assert!(p.check(Some("evil.example")).is_err());
    }

    #[test]
    fn patterns_are_validated() {
        for ok in [
            "gw.example",
            "gw.example:8443",
            "10.0.0.1",
            "[fd00::1]:80",
            "[::1]",
        ] {
            assert!(HostPattern::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "gw.example:",
            "gw.example:http",
            "gw.example:70000",
            "fd00::1",
            "http://gw.example",
            "user@gw.example",
            "gw.example/x",
            "gw example",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
