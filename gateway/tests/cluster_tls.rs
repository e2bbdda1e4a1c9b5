//! `[[cluster]]` over TLS (flanneld's `--etcd-cafile`, `--etcd-certfile`,
//! `--etcd-keyfile` as `ca_file`, `cert_file`, `key_file`) against a real
//! etcd (Debian's etcd-server) that serves clients over TLS only and
//! demands a client certificate (`overpass_testkit::etcd::Etcd::start_tls`:
//! a throw-away CA, server and client certificates made with `openssl`).
//!
//! Datastore only: no namespaces, no root; etcd and `openssl` are needed
//! (under CI=true the test fails rather than skips without them).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use overpass::cluster;
use overpass::config::Config;
use overpass::control::rib::Rib;
use overpass_testkit::etcd::{Etcd, TlsFiles, throwaway_ca};
use overpass_testkit::fixtures::{LOCAL_CIDR, small_context};
use overpass_testkit::flannel::network_config;
use overpass_testkit::testbed::wait_until;

const PREFIX: &str = "/coreos.com/network";

fn config(endpoint: &str, tls: &TlsFiles) -> Config {
    Config::from_toml(&format!(
        r#"
[gateway]
underlay_ip = "198.18.0.1"
vtep_mac = "02:00:00:00:00:02"
pod_cidr = "{LOCAL_CIDR}"

[[underlay]]
interface = "ul0"

[[cluster]]
endpoints = ["{endpoint}"]
ca_file = "{}"
cert_file = "{}"
key_file = "{}"
"#,
        tls.ca.display(),
        tls.cert.display(),
        tls.key.display()
    ))
    .expect("a valid configuration")
}

/// Tries to join with `tls` as a second gateway (its own PublicIP, no
/// pinned subnet); stops the join after 4 s and returns its error.
fn refused(etcd: &Etcd, tls: &TlsFiles, what: &str) -> String {
    refused_config(config(&etcd.endpoint(), tls), what)
}

fn refused_config(mut c: Config, what: &str) -> String {
    c.gateway.underlay_ip = "198.18.0.9".parse().unwrap();
    c.gateway.pod_cidr = overpass::config::unset_pod_cidr();
    let stop = AtomicBool::new(false);
    let t = Instant::now();
    let err = std::thread::scope(|s| {
        let j = s.spawn(|| cluster::join_all_until(&mut c, None, &stop));
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, Ordering::Relaxed);
        j.join().unwrap()
    })
    .map(|m| m.len())
    .expect_err("must not join");
    let err = format!("{err:#}");
    println!("{what}: stopped after {:?}: {err}", t.elapsed());
    err
}

/// A gateway with the right CA and client certificate joins (reads
/// `<prefix>/config`, takes its subnet lease: the key is read back over
/// TLS), and learns a lease another node writes (a route in the RIB).
/// With a second, unrelated CA as `ca_file` the join never gets through:
/// it is stopped with an error saying the server's certificate is not
/// trusted; without a client certificate etcd refuses it. Either way etcd
/// holds no new key.
#[test]
fn tls_join_and_a_wrong_ca() {
    let t0 = Instant::now();
    let etcd = match Etcd::start_tls("ct1") {
        Ok(e) => e,
        Err(e) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "etcd and openssl are needed under CI: {e:#}"
            );
            eprintln!("SKIPPED (needs etcd and openssl): {e:#}");
            return;
        }
    };
    let tls = etcd.tls().expect("a TLS etcd").clone();
    assert!(etcd.endpoint().starts_with("https://127.0.0.1:"));
    let kv = etcd.kv().expect("a TLS client");
    kv.put(&format!("{PREFIX}/config"), &network_config(), None)
        .unwrap();
    println!("TLS etcd up in {:?}", t0.elapsed());

    // The right CA: joined, our lease in etcd.
    let t = Instant::now();
    let mut c = config(&etcd.endpoint(), &tls);
    c.validate().expect("valid");
    let member = cluster::join(&mut c, None)
        .expect("joining over TLS")
        .expect("a [[cluster]]");
    println!("joined over TLS in {:?}", t.elapsed());
    assert_eq!(member.subnet().to_string(), LOCAL_CIDR);
    let (value, lease) = kv
        .get(&format!("{PREFIX}/subnets/10.244.0.0-24"))
        .unwrap()
        .expect("our subnet lease in etcd");
    assert!(value.contains("\"198.18.0.1\""), "{value}");
    assert!(lease != 0, "held by an etcd lease");

    // Another node's lease becomes a route.
    let rib = Rib::new(small_context(), vec![], 1).unwrap();
    let handle = member.run(rib.clone()).unwrap();
    kv.put(
        &format!("{PREFIX}/subnets/10.244.7.0-24"),
        r#"{"PublicIP":"198.18.0.7","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:07"}}"#,
        None,
    )
    .unwrap();
    let has_route = || {
        rib.routes().1.iter().any(|r| {
            r.prefix.to_string() == "10.244.7.0/24"
                && r.node
                    .as_ref()
                    .is_some_and(|n| n.underlay_ip.to_string() == "198.18.0.7")
        })
    };
    wait_until(
        "the lease's route over TLS",
        Duration::from_secs(15),
        || has_route() && handle.status().synced.load(Ordering::Relaxed),
    );
    handle.stop();

    // A wrong CA: a second throw-away CA that did not sign etcd's
    // certificate. The join retries (etcd trouble is never fatal) until
    // stopped; the error says why.
    let other: PathBuf = etcd.dir().join("other-ca");
    std::fs::create_dir_all(&other).unwrap();
    let wrong = TlsFiles {
        ca: throwaway_ca(&other, "other").unwrap(),
        ..tls.clone()
    };
    let before = kv.list("/").unwrap();
    let err = refused(&etcd, &wrong, "wrong CA");
    assert!(
        err.contains("cluster[0] (flannel)")
            && err.contains("invalid peer certificate")
            && err.contains("UnknownIssuer"),
        "the error must say etcd's certificate is not trusted: {err}"
    );
    // The right CA but no client certificate: etcd refuses the client
    // (`--client-cert-auth`), so cert_file and key_file are what let the
    // gateway in above.
    let mut c = config(&etcd.endpoint(), &tls);
    c.cluster[0].cert_file = None;
    c.cluster[0].key_file = None;
    c.validate().expect("ca_file alone is valid");
    let err = refused_config(c, "no client certificate");
    // In TLS 1.3 the server checks the client's certificate after the
    // client has finished its handshake: the client sees etcd's
    // CertificateRequired alert, a closed connection or a broken pipe,
    // whichever wins the race. Either way its first call is refused at
    // the transport.
    assert!(
        err.contains("cluster[0] (flannel)")
            && err.contains("etcd get")
            && err.to_lowercase().contains("transport"),
        "the error must show etcd refusing the connection: {err}"
    );
    assert_eq!(kv.list("/").unwrap(), before, "nothing changed in etcd");
    println!("total {:?}", t0.elapsed());
}
