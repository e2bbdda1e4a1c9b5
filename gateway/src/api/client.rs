//! A small blocking client of the gateway's API, for the `overpass routes`
//! and `overpass stats` subcommands (and tests).
//!
//! The API address comes from `--api` or `OVERPASS_API` (default
//! `http://127.0.0.1:9180`); the token from `--token-file`,
//! `OVERPASS_TOKEN_FILE` or `OVERPASS_TOKEN` (in that order).

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::ErrorBody;
use crate::control::rib::RouteSpec;

/// Default API base URL.
pub const DEFAULT_API: &str = "http://127.0.0.1:9180";

/// An API client.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A response: status, ETag generation (if any), body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub etag: Option<u64>,
    pub body: String,
}

impl Reply {
    /// The body as `T` if the status is 2xx, else an error naming the
    /// field the gateway complained about.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        if !(200..300).contains(&self.status) {
            match serde_json::from_str::<ErrorBody>(&self.body) {
                Ok(e) => bail!(
                    "HTTP {}: {}: {}",
                    self.status,
                    e.error.field,
                    e.error.message
                ),
                Err(_) => bail!("HTTP {}: {}", self.status, self.body.trim()),
            }
        }
        serde_json::from_str(&self.body)
            .with_context(|| format!("unexpected response body: {}", self.body))
    }
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// From flags, falling back to the environment.
    pub fn from_args(api: Option<&str>, token_file: Option<&Path>) -> anyhow::Result<Client> {
        let env_api = std::env::var("OVERPASS_API").ok();
        let base = api.or(env_api.as_deref()).unwrap_or(DEFAULT_API);
        let file = token_file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("OVERPASS_TOKEN_FILE").map(Into::into));
        let token = match file {
            Some(f) => Some(
                std::fs::read_to_string(&f)
                    .with_context(|| format!("reading token file {}", f.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("OVERPASS_TOKEN").ok(),
        };
        Ok(Client::new(base, token))
    }

    /// One request. `body` is sent as JSON.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        if_match: Option<u64>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(g) = if_match {
            req = req.header("If-Match", format!("\"{g}\""));
        }
        let resp = match body {
            Some(b) => {
                let req = req
                    .header("Content-Type", "application/json")
                    .body(b.to_string())?;
                self.agent.run(req)
            }
            None => self.agent.run(req.body(())?),
        }
        .with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim_matches('"').parse().ok());
        let body = resp
            .into_body()
            .read_to_string()
            .with_context(|| format!("{method} {url}: reading the response"))?;
        Ok(Reply { status, etag, body })
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request("GET", path, None, None)?.json()
    }

    fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &impl Serialize,
        if_match: Option<u64>,
    ) -> anyhow::Result<T> {
        let text = serde_json::to_string(body)?;
        self.request(method, path, Some(&text), if_match)?.json()
    }

    /// `GET /api/v1/routes`.
    pub fn routes(&self) -> anyhow::Result<crate::api::RouteSet> {
        self.get("/api/v1/routes")
    }

    /// `PUT /api/v1/routes` (whole set), optionally a dry run.
    pub fn replace_routes(
        &self,
        routes: &[RouteSpec],
        if_match: Option<u64>,
        dry_run: bool,
    ) -> anyhow::Result<crate::api::ReplaceResult> {
        #[derive(Serialize)]
        struct Body<'a> {
            routes: &'a [RouteSpec],
        }
        let path = if dry_run {
            "/api/v1/routes?dry_run=true"
        } else {
            "/api/v1/routes"
        };
        self.send("PUT", path, &Body { routes }, if_match)
    }

    /// `POST /api/v1/routes`.
    pub fn add_route(&self, route: &RouteSpec) -> anyhow::Result<crate::api::RouteResult> {
        self.send("POST", "/api/v1/routes", route, None)
    }

    /// `PUT /api/v1/routes/{prefix}`.
    pub fn put_route(&self, route: &RouteSpec) -> anyhow::Result<crate::api::RouteResult> {
        self.send(
            "PUT",
            &format!("/api/v1/routes/{}", route.prefix),
            route,
            None,
        )
    }

    /// `DELETE /api/v1/routes/{prefix}`.
    pub fn delete_route(&self, prefix: &ipnet::Ipv4Net) -> anyhow::Result<crate::api::RouteResult> {
        self.request("DELETE", &format!("/api/v1/routes/{prefix}"), None, None)?
            .json()
    }
}
