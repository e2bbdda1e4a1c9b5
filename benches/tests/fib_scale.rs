//! `fib-scale` measures what it says on small sets of every shape, and its
//! table has a row per measurement (no timing is asserted).

use overpass_benches::fib_scale::{self, Shape};

#[test]
fn measures_every_shape_and_tabulates() {
    let dir = std::env::temp_dir().join(format!("overpass-fib-scale-test-{}", std::process::id()));
    let mut samples = vec![];
    for shape in Shape::ALL {
        let _ = std::fs::remove_dir_all(&dir);
        let s = fib_scale::measure(shape, 2000, 2, Some(&dir)).unwrap();
        assert_eq!(
            (s.routes, s.build_ms.len(), s.change_ms.len()),
            (2000, 2, 2)
        );
        assert!(s.table_bytes > s.lpm_bytes && s.lpm_bytes >= 256 << 10);
        assert!(s.persist_bytes > 0);
        samples.push(s);
    }
    let _ = std::fs::remove_dir_all(&dir);
    // The trie's memory follows the shape: 256 KiB of level 1, then 1 KiB
    // per level-2 chunk (a /16 in use) and per level-3 chunk (a /24
    // holding a /26 — four per /24 — or a /32, one per /24).
    let kib: Vec<usize> = samples.iter().map(|s| s.lpm_bytes >> 10).collect();
    assert_eq!(kib, [256 + 8, 256 + 2 + 500, 256 + 8 + 2000]);
    let md = fib_scale::markdown("header", &samples);
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| 2000 |")).count(),
        3,
        "{md}"
    );
}
