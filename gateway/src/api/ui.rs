//! The web dashboard: the static files of `web-ui/`, embedded in the
//! binary at build time (`include_bytes!`, so a changed file rebuilds the
//! binary) and served at `/` by the API server itself. No second server, no
//! CDN, no build step: plain ES modules that work on an air-gapped gateway.
//!
//! The page talks to the same origin's `/api/v1` only; a strict
//! Content-Security-Policy (no inline script, no other origin) backs that
//! up, so the bearer token the operator types stays in this origin.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file: URL path, content type, bytes.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $ty:expr) => {
        Asset {
            path: concat!("/", $path),
            content_type: $ty,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web-ui/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file the dashboard consists of (a unit test checks that this list
/// and `web-ui/` agree).
pub const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/fmt.js", JS),
    asset!("js/plot.js", JS),
    asset!("js/routes.js", JS),
    asset!("js/latency.js", JS),
];

/// Same origin only; no inline script; data: for nothing but images.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; \
                   form-action 'self'";

fn serve(asset: &'static Asset) -> Response {
    let mut resp = asset.body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    // Revalidate every load: after an upgrade the page and its modules
    // must come from the same build.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

/// The routes serving the dashboard: `/` (the page) and each asset.
pub fn router() -> Router {
    let mut r = Router::new();
    for asset in ASSETS {
        r = r.route(asset.path, get(move || async move { serve(asset) }));
        if asset.path == "/index.html" {
            r = r.route("/", get(move || async move { serve(asset) }));
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    /// The files under web-ui/ that belong to the page (not its tests or
    /// their npm packages).
    fn page_files(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                if !["tests", "node_modules"].contains(&rel.as_str()) {
                    page_files(&p, root, out);
                }
            } else if !rel.starts_with("package") && !rel.ends_with(".md") {
                out.push(format!("/{rel}"));
            }
        }
    }

    #[test]
    fn every_page_file_is_embedded() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../web-ui");
        let mut files = vec![];
        page_files(&root, &root, &mut files);
        files.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_string()).collect();
        embedded.sort();
        assert_eq!(files, embedded, "web-ui/ and api::ui::ASSETS differ");
    }

    #[test]
    fn serves_the_page_and_its_modules_with_a_strict_policy() {
        use tower::ServiceExt;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (path, ty) in [
            ("/", "text/html; charset=utf-8"),
            ("/js/app.js", JS),
            ("/style.css", "text/css; charset=utf-8"),
        ] {
            let req = axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .unwrap();
            let resp = rt.block_on(router().oneshot(req)).unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            let h = resp.headers();
            assert_eq!(h[header::CONTENT_TYPE], ty, "{path}");
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(
                csp.contains("script-src 'self'") && !csp.contains("unsafe"),
                "{csp}"
            );
        }
        let index = ASSETS.iter().find(|a| a.path == "/index.html").unwrap();
        let html = std::str::from_utf8(index.body).unwrap();
        // No inline script, nothing from another origin.
        assert!(
            !html.contains("<script>") && !html.contains("http://") && !html.contains("https://")
        );
    }

    #[test]
    fn modules_import_only_embedded_files() {
        // Every relative import of a module must be served.
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            let text = std::str::from_utf8(a.body).unwrap();
            for line in text
                .lines()
                .filter(|l| l.trim_start().starts_with("import "))
            {
                let Some(spec) = line.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let dir = Path::new(a.path).parent().unwrap();
                let target = dir.join(spec);
                let target = target.to_string_lossy().replace("/./", "/");
                assert!(
                    ASSETS.iter().any(|b| b.path == target),
                    "{} imports {spec} ({target}), which is not embedded",
                    a.path
                );
            }
        }
    }
}
