//! The REST API in process: the real router over a real RIB and store,
//! driven with `tower::ServiceExt::oneshot`. Every endpoint, and every
//! class of bad input with its exact status and error body, plus proof
//! that a refused request changed nothing (in memory and on disk).

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use overpass::afxdp::latency::LatencyShared;
use overpass::api::{ApiState, Auth};
use overpass::control::rib::{Rib, RibContext, RouteSpec};
use overpass::control::store::Store;
use overpass::lifecycle::DataplaneView;
use overpass_dataplane::counters::{CounterKind, DropReason, PeerStat, WorkerCounters};
use overpass_dataplane::pipeline::{Direction, FlowTag};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "test-token-0123456789abcdef";

fn ctx() -> RibContext {
    overpass_testkit::fixtures::small_context()
}

fn node(prefix: &str, ip: u8) -> Value {
    json!({"prefix": prefix, "node": {"name": format!("n{ip}"), "underlay_ip": format!("198.18.0.{ip}"),
        "vtep_mac": format!("02:00:00:00:01:{ip:02x}")}})
}

fn initial() -> Vec<RouteSpec> {
    serde_json::from_value(json!([
        node("10.244.1.0/24", 11),
        node("10.244.2.0/24", 12),
        {"prefix": "10.244.0.2/32", "pod": {"name": "a", "interface": "gwp-a", "mac": "02:0a:00:00:00:02"}}
    ]))
    .unwrap()
}

struct Fixture {
    app: axum::Router,
    rib: Rib,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture_with(name: &str, token: Option<&str>, read_requires_token: bool) -> Fixture {
    fixture_full(
        name,
        token,
        read_requires_token,
        ctx(),
        DataplaneView::offline(),
    )
}

/// The API over `view`'s counters and histograms (the RIB takes its
/// baselines there too), with `ctx`.
fn fixture_on(name: &str, ctx: RibContext, view: DataplaneView) -> Fixture {
    fixture_full(name, Some(TOKEN), false, ctx, view)
}

fn fixture_full(
    name: &str,
    token: Option<&str>,
    read_requires_token: bool,
    ctx: RibContext,
    view: DataplaneView,
) -> Fixture {
    let dir = std::env::temp_dir().join(format!("overpass-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir).unwrap());
    store.save_routes(1, &initial()).unwrap();
    let rib = Rib::new(ctx, initial(), 1)
        .unwrap()
        .with_store(Some(store))
        .with_peer_stats(Arc::new(view.clone()));
    let state = ApiState::new(
        rib.clone(),
        view,
        Auth::new(token.map(str::to_string), read_requires_token),
        4096,
        "api-only",
    );
    Fixture {
        app: overpass::api::router(state),
        rib,
        dir,
    }
}

fn fixture(name: &str) -> Fixture {
    fixture_with(name, Some(TOKEN), false)
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
    text: String,
}

impl Fixture {
    async fn call(
        &self,
        method: &str,
        uri: &str,
        body: Option<String>,
        hdrs: &[(&str, &str)],
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in hdrs {
            req = req.header(*k, *v);
        }
        let req = req.body(body.map_or_else(Body::empty, Body::from)).unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Resp {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    async fn get(&self, uri: &str) -> Resp {
        self.call("GET", uri, None, &[]).await
    }

    /// A mutation with the right token.
    async fn send(&self, method: &str, uri: &str, body: Value, extra: &[(&str, &str)]) -> Resp {
        let auth = format!("Bearer {TOKEN}");
        let mut h = vec![("authorization", auth.as_str())];
        h.extend_from_slice(extra);
        self.call(method, uri, Some(body.to_string()), &h).await
    }

    fn persisted(&self) -> (u64, Vec<RouteSpec>) {
        let s = std::fs::read_to_string(self.dir.join("routes.json")).unwrap();
        let f: overpass::control::store::RoutesFile = serde_json::from_str(&s).unwrap();
        (f.generation, f.routes)
    }

    /// The in-memory set, the published FIB and the file all agree on
    /// `generation`.
    fn assert_at(&self, generation: u64, routes: &[RouteSpec]) {
        assert_eq!(self.rib.routes(), (generation, routes.to_vec()));
        assert_eq!(self.rib.fib().load().generation, generation);
        assert_eq!(self.persisted(), (generation, routes.to_vec()));
    }
}

fn err(r: &Resp) -> (u16, &str, &str) {
    (
        r.status.as_u16(),
        r.body["error"]["field"]
            .as_str()
            .unwrap_or_else(|| panic!("no error body: {}", r.text)),
        r.body["error"]["message"].as_str().unwrap(),
    )
}

#[tokio::test]
async fn routes_crud_and_generations() {
    let f = fixture("crud");
    let r = f.get("/api/v1/routes").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["etag"], "\"1\"");
    assert_eq!(r.body["generation"], 1);
    assert_eq!(r.body["routes"].as_array().unwrap().len(), 3);

    // Create.
    let r = f
        .send("POST", "/api/v1/routes", node("10.245.0.0/16", 13), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["generation"], 2);
    assert_eq!(r.headers["location"], "/api/v1/routes/10.245.0.0/16");
    assert_eq!(f.persisted().0, 2);

    // Get one.
    let r = f.get("/api/v1/routes/10.245.0.0/16").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["route"]["node"]["underlay_ip"], "198.18.0.13");
    assert_eq!(r.body["route"]["node"]["vni"], 1, "defaults filled in");
    let r = f.get("/api/v1/routes/10.246.0.0/16").await;
    assert_eq!(err(&r), (404, "prefix", "no route for 10.246.0.0/16"));

    // Replace one (PUT on an existing prefix: 200; on a new one: 201).
    let r = f
        .send(
            "PUT",
            "/api/v1/routes/10.245.0.0/16",
            node("10.245.0.0/16", 14),
            &[],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["generation"].as_u64()),
        (200, Some(3)),
        "{}",
        r.text
    );
    let r = f
        .send(
            "PUT",
            "/api/v1/routes/10.247.0.0/16",
            node("10.247.0.0/16", 14),
            &[],
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.body["generation"].as_u64()),
        (201, Some(4)),
        "{}",
        r.text
    );

    // Delete.
    let auth = format!("Bearer {TOKEN}");
    let r = f
        .call(
            "DELETE",
            "/api/v1/routes/10.247.0.0/16",
            None,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["generation"], 5);
    assert_eq!(r.body["route"]["prefix"], "10.247.0.0/16");
    let r = f
        .call(
            "DELETE",
            "/api/v1/routes/10.247.0.0/16",
            None,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(err(&r).0, 404);

    // Whole-set replace guarded by If-Match, dry run first.
    let (g, before) = f.rib.routes();
    assert_eq!(g, 5);
    let new = json!({"routes": [node("10.244.1.0/24", 21), node("10.244.3.0/24", 12)]});
    let r = f
        .send(
            "PUT",
            "/api/v1/routes?dry_run=true",
            new.clone(),
            &[("if-match", "\"5\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["dry_run"], true);
    assert_eq!(r.body["generation"], 5);
    assert_eq!(r.body["diff"]["added"][0]["prefix"], "10.244.3.0/24");
    assert_eq!(
        r.body["diff"]["changed"][0]["after"]["node"]["underlay_ip"],
        "198.18.0.21"
    );
    assert_eq!(r.body["diff"]["removed"].as_array().unwrap().len(), 3);
    f.assert_at(5, &before);

    let r = f
        .send(
            "PUT",
            "/api/v1/routes",
            new.clone(),
            &[("if-match", "\"5\"")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["generation"].as_u64(), r.body["dry_run"].as_bool()),
        (Some(6), Some(false))
    );
    assert_eq!(r.headers["etag"], "\"6\"");
    let now: Vec<RouteSpec> = serde_json::from_value(new["routes"].clone()).unwrap();
    f.assert_at(6, &now);
    assert_eq!(f.rib.fib().load().peers.len(), 2);

    // The same If-Match again is now stale: 412, nothing changes.
    let r = f
        .send(
            "PUT",
            "/api/v1/routes",
            json!({"routes": []}),
            &[("if-match", "\"5\"")],
        )
        .await;
    assert_eq!(
        err(&r),
        (412, "If-Match", "stale: expected 5, current is 6")
    );
    f.assert_at(6, &now);
    let r = f
        .send(
            "PUT",
            "/api/v1/routes",
            json!({"routes": []}),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(r.status, 200);
    f.assert_at(7, &[]);
}

/// Every class of bad input: exact status and error body, and nothing
/// changes (memory, FIB, disk).
/// (method, uri, body, extra headers, expected (status, field, message)).
type Case<'a> = (
    &'a str,
    &'a str,
    Option<String>,
    Vec<(&'a str, &'a str)>,
    (u16, &'a str, &'a str),
);

#[tokio::test]
async fn bad_input_is_refused_naming_the_field_and_changes_nothing() {
    let f = fixture("bad");
    let (g0, r0) = f.rib.routes();
    let auth = format!("Bearer {TOKEN}");
    let set = |routes: Vec<Value>| json!({ "routes": routes });
    let mut vni = node("10.244.3.0/24", 13);
    vni["node"]["vni"] = json!(16_777_216);
    let mut encap = node("10.244.3.0/24", 13);
    encap["node"]["encap"] = json!("gre");
    let mut unknown = node("10.244.3.0/24", 13);
    unknown["node"]["vnid"] = json!(5);
    let cases: Vec<Case> = vec![
        (
            "PUT",
            "/api/v1/routes",
            Some(set(vec![node("10.244.3/24", 13)]).to_string()),
            vec![],
            (400, "routes[0].prefix", "invalid IP address syntax"),
        ),
        (
            "POST",
            "/api/v1/routes",
            Some(node("10.244.3.0.0/24", 13).to_string()),
            vec![],
            (400, "prefix", "invalid IP address syntax"),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some(set(vec![node("10.244.1.0/24", 11), node("10.244.3.1/24", 13)]).to_string()),
            vec![],
            (
                422,
                "routes[1].prefix",
                "host bits set in 10.244.3.1/24 (did you mean 10.244.3.0/24?)",
            ),
        ),
        (
            "POST",
            "/api/v1/routes",
            Some(node("10.244.3.1/24", 13).to_string()),
            vec![],
            (
                422,
                "prefix",
                "host bits set in 10.244.3.1/24 (did you mean 10.244.3.0/24?)",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some(set(vec![vni.clone()]).to_string()),
            vec![],
            (
                422,
                "routes[0].node.vni",
                "16777216 is larger than the 24-bit maximum 16777215",
            ),
        ),
        (
            "POST",
            "/api/v1/routes",
            Some(vni.to_string()),
            vec![],
            (
                422,
                "node.vni",
                "16777216 is larger than the 24-bit maximum 16777215",
            ),
        ),
        (
            "POST",
            "/api/v1/routes",
            Some(encap.to_string()),
            vec![],
            (
                400,
                "node.encap",
                "unknown variant `gre`, expected `vxlan` or `ipip`",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some(set(vec![node("10.244.3.0/24", 13), node("10.244.3.0/24", 14)]).to_string()),
            vec![],
            (
                422,
                "routes[1].prefix",
                "10.244.3.0/24 is already routed by routes[0]",
            ),
        ),
        (
            "POST",
            "/api/v1/routes",
            Some(node("10.244.1.0/24", 13).to_string()),
            vec![],
            (
                409,
                "prefix",
                "10.244.1.0/24 is already routed (routes[0]): replace it with PUT /api/v1/routes/10.244.1.0/24",
            ),
        ),
        (
            "POST",
            "/api/v1/routes",
            Some(unknown.to_string()),
            vec![],
            (
                400,
                "node.vnid",
                "unknown field `vnid`, expected one of `name`, `underlay_ip`, `encap`, `vni`, `port`, `vtep_mac`, `mtu`",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some(json!({"routes": [], "generation": 1}).to_string()),
            vec![],
            (
                400,
                "generation",
                "unknown field `generation`, expected `routes`",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some(format!(
                "{{\"routes\": [{}]}}",
                vec![node("10.244.3.0/24", 13).to_string(); 40].join(",")
            )),
            vec![],
            (
                413,
                "body",
                "larger than the 4096-byte limit (api.body_limit)",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some("{\"routes\": [".to_string()),
            vec![],
            (400, "routes", "EOF while parsing a list"),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some(set(vec![]).to_string()),
            vec![("if-match", "\"0\"")],
            (412, "If-Match", "stale: expected 0, current is 1"),
        ),
        (
            "PUT",
            "/api/v1/routes",
            Some(set(vec![]).to_string()),
            vec![("if-match", "seven")],
            (
                400,
                "If-Match",
                "must be a route set generation as returned in ETag, e.g. \"7\", or *",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes?dry_run=maybe",
            Some(set(vec![]).to_string()),
            vec![],
            (400, "dry_run", "\"maybe\" is not a boolean (true or false)"),
        ),
        (
            "PUT",
            "/api/v1/routes?force=1",
            Some(set(vec![]).to_string()),
            vec![],
            (
                400,
                "force",
                "unknown query parameter (allowed: [\"dry_run\"])",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes/10.244.3.0/24",
            Some(node("10.244.4.0/24", 13).to_string()),
            vec![],
            (
                400,
                "prefix",
                "10.244.4.0/24 does not match the path's 10.244.3.0/24",
            ),
        ),
        (
            "PUT",
            "/api/v1/routes/10.244.3.0/33",
            Some(node("10.244.3.0/24", 13).to_string()),
            vec![],
            (400, "prefix", "\"33\" is not a prefix length 0..=32"),
        ),
        (
            "DELETE",
            "/api/v1/routes/10.244.9.0/24",
            None,
            vec![],
            (404, "prefix", "no route for 10.244.9.0/24"),
        ),
    ];
    for (method, uri, body, extra, want) in &cases {
        let mut h = vec![("authorization", auth.as_str())];
        h.extend(extra.iter().copied());
        let r = f.call(method, uri, body.clone(), &h).await;
        assert_eq!(err(&r), *want, "{method} {uri}: {}", r.text);
        f.assert_at(g0, &r0);
    }

    // Authentication: missing, malformed, wrong token.
    let body = Some(set(vec![]).to_string());
    for (hdr, msg) in [
        (None, "missing: send Authorization: Bearer <token>"),
        (
            Some(format!("Basic {TOKEN}")),
            "not a bearer token: send Authorization: Bearer <token>",
        ),
        (Some(format!("Bearer {TOKEN}x")), "wrong token"),
        (Some("Bearer ".to_string()), "wrong token"),
    ] {
        let h: Vec<(&str, &str)> = hdr.iter().map(|v| ("authorization", v.as_str())).collect();
        let r = f.call("PUT", "/api/v1/routes", body.clone(), &h).await;
        assert_eq!(err(&r), (401, "authorization", msg));
        assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"overpass\"");
        f.assert_at(g0, &r0);
        let r = f.call("POST", "/api/v1/latency/reset", None, &h).await;
        assert_eq!(err(&r).0, 401);
    }
    // Authentication happens before the body is even read.
    let r = f
        .call("PUT", "/api/v1/routes", Some("not json".into()), &[])
        .await;
    assert_eq!(err(&r).0, 401);

    // Unknown paths and methods.
    let r = f.get("/api/v1/nope").await;
    assert_eq!(err(&r), (404, "path", "no such endpoint: /api/v1/nope"));
    let r = f.call("PATCH", "/api/v1/routes", None, &[]).await;
    assert_eq!(
        err(&r),
        (405, "method", "PATCH is not allowed on /api/v1/routes")
    );
    f.assert_at(g0, &r0);
}

#[tokio::test]
async fn token_policy() {
    // No token configured: reads work, mutations are refused (403).
    let f = fixture_with("notoken", None, false);
    assert_eq!(f.get("/api/v1/routes").await.status, 200);
    let r = f
        .send("PUT", "/api/v1/routes", json!({"routes": []}), &[])
        .await;
    assert_eq!(
        err(&r),
        (
            403,
            "authorization",
            "this gateway has no api.token_file configured: the API is read-only"
        )
    );
    // Reads protected by configuration; health stays open.
    let f = fixture_with("readtok", Some(TOKEN), true);
    for uri in [
        "/api/v1/routes",
        "/api/v1/peers",
        "/api/v1/counters",
        "/metrics",
        "/api/v1/latency",
    ] {
        assert_eq!(f.get(uri).await.status, 401, "{uri}");
    }
    let auth = format!("Bearer {TOKEN}");
    let r = f
        .call("GET", "/api/v1/routes", None, &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(f.get("/healthz").await.status, 200);
    assert_eq!(f.get("/readyz").await.status, 200);
}

#[tokio::test]
async fn read_endpoints() {
    let f = fixture("read");
    let r = f.get("/api/v1/peers").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let peers = r.body["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 2);
    assert_eq!(peers[0]["mtu"], 1450, "underlay 1500 minus VXLAN overhead");
    assert_eq!(peers[0]["prefixes"][0], "10.244.1.0/24");
    assert_eq!(peers[0]["counters"]["tx_packets"], 0);
    assert_eq!(peers[0]["next_hop_mac"], Value::Null);

    let r = f.get("/api/v1/pods").await;
    assert_eq!(r.body["pods"][0]["ip"], "10.244.0.2");
    assert_eq!(r.body["pods"][0]["host_mac"], "02:00:00:00:00:0a");
    assert_eq!(r.body["pods"][0]["rx_ports"], json!([1, 2]));

    let r = f.get("/api/v1/interfaces").await;
    assert_eq!(r.body["mode"], "api-only");
    assert_eq!(r.body["interfaces"], json!([]));

    let r = f.get("/api/v1/counters").await;
    let drops: Vec<&str> = r.body["drops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = DropReason::all().map(|d| d.name()).collect();
    assert_eq!(drops, want, "every drop reason is listed");
    assert!(r.body["drops"][0]["description"].as_str().unwrap().len() > 5);

    let r = f.get("/api/v1/latency").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["total"]["count"], 0);
    assert_eq!(r.body["directions"].as_array().unwrap().len(), 5);
    let r = f.get("/api/v1/latency/histogram?direction=encap").await;
    assert_eq!((r.status.as_u16(), &r.body["buckets"]), (200, &json!([])));
    let r = f.get("/api/v1/latency/histogram?direction=sideways").await;
    assert_eq!(err(&r).0, 400);
    assert_eq!(err(&r).1, "direction");
    let r = f.get("/api/v1/latency/histogram?peer=198.18.0.99").await;
    assert_eq!(err(&r).0, 404);
    let r = f.get("/api/v1/latency/histogram?peer=198.18.0.11").await;
    assert_eq!(r.status, 200);
    let r = f.get("/api/v1/latency/log").await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("#[StartTime:") && r.text.contains("Tag=total"),
        "{}",
        r.text
    );
    let auth = format!("Bearer {TOKEN}");
    let r = f
        .call(
            "POST",
            "/api/v1/latency/reset",
            None,
            &[("authorization", &auth)],
        )
        .await;
    assert_eq!(r.status, 200);

    let r = f.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for d in DropReason::all() {
        assert!(r.text.contains(&format!(
            "overpass_drops_total{{reason=\"{}\"}} 0",
            d.name()
        )));
    }
    assert!(r.text.contains("overpass_route_generation 1"));
    assert!(
        r.text
            .contains("overpass_peer_mtu_bytes{peer=\"n11\",underlay_ip=\"198.18.0.11\"} 1450")
    );
    assert!(
        r.text
            .contains("overpass_latency_seconds_count{direction=\"encap\"} 0")
    );

    assert_eq!(f.get("/healthz").await.body, json!({"status": "ok"}));
    assert_eq!(f.get("/readyz").await.body, json!({"status": "ready"}));
    let r = f.get("/api/v1/openapi.json").await;
    assert_eq!(r.status, 200);
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/routes",
        "/api/v1/routes/{addr}/{len}",
        "/api/v1/peers",
        "/api/v1/pods",
        "/api/v1/interfaces",
        "/api/v1/counters",
        "/api/v1/latency",
        "/api/v1/latency/histogram",
        "/api/v1/latency/log",
        "/api/v1/latency/reset",
        "/api/v1/attachments",
        "/api/v1/attachments/{interface}",
        "/metrics",
        "/healthz",
        "/readyz",
    ] {
        assert!(
            r.body["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert_eq!(
        r.body["components"]["schemas"]["RouteSpec"]["additionalProperties"],
        false
    );
}

#[tokio::test]
async fn concurrent_single_route_edits_never_lose_each_other() {
    let f = Arc::new(fixture("conc"));
    let mut tasks = vec![];
    for i in 0..20u8 {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let r = f
                .send(
                    "POST",
                    "/api/v1/routes",
                    node(&format!("10.250.{i}.0/24"), 13),
                    &[],
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.text);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (g, routes) = f.rib.routes();
    assert_eq!((g, routes.len()), (21, 23));
    assert_eq!(f.persisted(), (g, routes));
}

/// Issue 15, finding 5: a route set over `gateway.max_routes` is refused
/// with 422 naming `routes` and the key, whether it comes whole (PUT, dry
/// run or not) or one route at a time (POST, PUT of one prefix), and
/// nothing changes.
#[tokio::test]
async fn a_route_set_over_the_limit_is_refused_and_changes_nothing() {
    let mut c = ctx();
    c.max_routes = 4;
    let f = fixture_on("limit", c, DataplaneView::offline());
    let (g0, r0) = f.rib.routes();
    assert_eq!(r0.len(), 3);
    let five = json!({"routes": [node("10.244.1.0/24", 11), node("10.244.2.0/24", 12),
        node("10.244.3.0/24", 13), node("10.244.4.0/24", 14), node("10.244.5.0/24", 15)]});
    let over = (
        422,
        "routes",
        "5 routes are more than the 4 this gateway accepts (gateway.max_routes)",
    );
    for uri in ["/api/v1/routes", "/api/v1/routes?dry_run=true"] {
        let r = f.send("PUT", uri, five.clone(), &[]).await;
        assert_eq!(err(&r), over, "{uri}: {}", r.text);
        f.assert_at(g0, &r0);
    }
    // Up to the limit is fine.
    let r = f
        .send("POST", "/api/v1/routes", node("10.244.3.0/24", 13), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (g1, r1) = f.rib.routes();
    assert_eq!(r1.len(), 4);
    let r = f
        .send("POST", "/api/v1/routes", node("10.244.4.0/24", 14), &[])
        .await;
    assert_eq!(err(&r), over, "{}", r.text);
    let r = f
        .send(
            "PUT",
            "/api/v1/routes/10.244.4.0/24",
            node("10.244.4.0/24", 14),
            &[],
        )
        .await;
    assert_eq!(err(&r), over, "{}", r.text);
    f.assert_at(g1, &r1);
}

/// Issue 15, finding 2: the counter slot of a node that left the route set
/// goes to a later new node, which starts from zero in every reader —
/// /api/v1/peers, /metrics, /api/v1/latency and its histogram — although
/// the old node had traffic, including latency two workers recorded and
/// had not merged yet when the slot changed owner; a node that stays keeps
/// its slot and its counters. (No workers here: counters are written into
/// a worker's block and latency recorded through recorders directly.)
#[tokio::test]
async fn a_reused_slot_starts_from_zero_for_its_new_node() {
    let counters = Arc::new(WorkerCounters::default());
    let latency = Arc::new(LatencyShared::default());
    let f = fixture_on(
        "reuse",
        ctx(),
        DataplaneView::new(vec![counters.clone()], latency.clone()),
    );
    let peer = |body: &Value, ip: u8| -> Value {
        body["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["underlay_ip"] == format!("198.18.0.{ip}"))
            .unwrap_or_else(|| panic!("no peer 198.18.0.{ip}: {body}"))
            .clone()
    };
    let r = f.get("/api/v1/peers").await;
    let (s11, s12) = (
        peer(&r.body, 11)["slot"].as_u64().unwrap() as u16,
        peer(&r.body, 12)["slot"].as_u64().unwrap() as u16,
    );
    let tag = |slot: u16| FlowTag {
        direction: Direction::Encap,
        peer_slot: Some(slot),
    };
    let round = |w: &mut overpass::afxdp::latency::LatencyRecorder, slot: u16, n: usize| {
        for _ in 0..n {
            w.note(tag(slot));
        }
        w.end_round(std::time::Duration::from_micros(5));
    };
    // Traffic of n11 and n12: counters, merged latency, and latency two
    // workers hold unmerged.
    for stat in [PeerStat::RxPackets, PeerStat::TxPackets, PeerStat::Drops] {
        counters.peer(s11, stat, 7);
        counters.peer(s12, stat, 100);
    }
    counters.peer(s12, PeerStat::TxBytes, 6400);
    let (mut w1, mut w2) = (latency.recorder(), latency.recorder());
    round(&mut w1, s11, 1);
    round(&mut w1, s12, 3);
    w1.flush();
    round(&mut w1, s12, 2);
    round(&mut w2, s12, 5);
    let r = f.get("/api/v1/latency/histogram?peer=198.18.0.12").await;
    assert_eq!(r.body["summary"]["count"], 3, "{}", r.text);

    // n12 leaves (n13 arrives: it cannot have n12's slot yet), then n14
    // arrives and gets it.
    let r = f
        .send(
            "PUT",
            "/api/v1/routes",
            json!({"routes": [node("10.244.1.0/24", 11), node("10.244.3.0/24", 13)]}),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = f
        .send("POST", "/api/v1/routes", node("10.244.4.0/24", 14), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = f.get("/api/v1/peers").await;
    assert_ne!(peer(&r.body, 13)["slot"], s12);
    let n14 = peer(&r.body, 14);
    assert_eq!(n14["slot"], s12, "n12's slot is reused: {}", r.text);
    assert_eq!(
        n14["counters"],
        json!({"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0, "drops": 0}),
        "n14 shows none of n12's traffic"
    );
    let n11 = peer(&r.body, 11);
    assert_eq!(
        (
            &n11["slot"],
            &n11["counters"]["tx_packets"],
            &n11["counters"]["drops"]
        ),
        (&json!(s11), &json!(7), &json!(7)),
        "n11 kept its slot and counters"
    );
    // What the workers held for n12 is merged after the slot changed
    // owner: w1 with a new value of n14's, w2 alone.
    round(&mut w1, s12, 1);
    w1.flush();
    w2.flush();
    let r = f.get("/api/v1/latency/histogram?peer=198.18.0.14").await;
    assert_eq!(
        r.body["summary"]["count"], 1,
        "only n14's own value: {}",
        r.text
    );
    let r = f.get("/api/v1/latency/histogram?peer=198.18.0.11").await;
    assert_eq!(r.body["summary"]["count"], 1);
    let r = f.get("/api/v1/latency").await;
    let lat: Vec<(Value, Value)> = r.body["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].clone(), p["summary"]["count"].clone()))
        .collect();
    assert_eq!(
        lat,
        vec![(json!("n11"), json!(1)), (json!("n14"), json!(1))],
        "{}",
        r.text
    );

    // n14's own traffic counts from zero.
    counters.peer(s12, PeerStat::TxPackets, 4);
    let r = f.get("/api/v1/peers").await;
    assert_eq!(peer(&r.body, 14)["counters"]["tx_packets"], 4);
    let r = f.get("/metrics").await;
    for line in [
        "overpass_peer_tx_packets_total{peer=\"n14\",underlay_ip=\"198.18.0.14\"} 4",
        "overpass_peer_tx_bytes_total{peer=\"n14\",underlay_ip=\"198.18.0.14\"} 0",
        "overpass_peer_drops_total{peer=\"n14\",underlay_ip=\"198.18.0.14\"} 0",
        "overpass_peer_tx_packets_total{peer=\"n11\",underlay_ip=\"198.18.0.11\"} 7",
        "overpass_peer_latency_seconds_count{peer=\"n14\",underlay_ip=\"198.18.0.14\"} 1",
    ] {
        assert!(r.text.contains(line), "{line} missing from:\n{}", r.text);
    }
}

/// Without `[attach]` (here: no dataplane) the attachment routes say so,
/// naming the section; bad bodies and missing tokens are refused first, as
/// everywhere. (With a dataplane: gateway/tests/cni.rs.)
#[tokio::test]
async fn attachments_need_the_attach_section() {
    let f = fixture("attach");
    let before = f.rib.routes();
    let r = f.get("/api/v1/attachments").await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "attach");
    let pod = json!({"container_id": "c1", "ifname": "eth0", "interface": "ovp0",
                     "ip": "10.244.0.9", "mac": "02:00:00:00:00:09"});
    let r = f
        .call("POST", "/api/v1/attachments", Some(pod.to_string()), &[])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.text);
    let r = f
        .send(
            "POST",
            "/api/v1/attachments",
            json!({"ip": "10.244.0.9"}),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    let mut bad = pod.clone();
    bad["mac"] = json!("02:00:00:00:00");
    let r = f.send("POST", "/api/v1/attachments", bad, &[]).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "mac", "{}", r.text);
    let r = f.send("POST", "/api/v1/attachments", pod, &[]).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(r.body["error"]["field"], "attach");
    let r = f
        .send("DELETE", "/api/v1/attachments/ovp0", json!(null), &[])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert_eq!(f.rib.routes(), before, "nothing changed");
}
