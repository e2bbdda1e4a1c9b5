//! CPU lists as the kernel writes them (`0-3,8,10-11`): online CPUs,
//! isolated CPUs, IRQ affinities.

use std::collections::BTreeSet;

/// Parses a kernel CPU list (`0-3,8,10-11`, surrounding whitespace
/// ignored). `None` when a part is not a number or a range.
pub fn parse_cpu_list(text: &str) -> Option<BTreeSet<usize>> {
    let mut out = BTreeSet::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => out.extend(a.trim().parse::<usize>().ok()?..=b.trim().parse().ok()?),
            None => {
                out.insert(part.trim().parse().ok()?);
            }
        }
    }
    Some(out)
}

/// The CPU list in the file at `path` (e.g.
/// `/sys/devices/system/cpu/isolated`); `None` when unreadable or malformed.
pub fn read_cpu_list(path: &str) -> Option<BTreeSet<usize>> {
    parse_cpu_list(&std::fs::read_to_string(path).ok()?)
}

/// The online CPUs (`/sys/devices/system/cpu/online`).
pub fn online_cpus() -> Option<BTreeSet<usize>> {
    read_cpu_list("/sys/devices/system/cpu/online")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(
            parse_cpu_list("0-3,6"),
            Some(BTreeSet::from([0, 1, 2, 3, 6]))
        );
        assert_eq!(parse_cpu_list("0"), Some(BTreeSet::from([0])));
        assert_eq!(parse_cpu_list("x"), None);
        assert_eq!(
            parse_cpu_list("0-2,5\n"),
            Some(BTreeSet::from([0, 1, 2, 5]))
        );
        assert_eq!(parse_cpu_list(""), Some(BTreeSet::new()));
        assert!(online_cpus().is_some_and(|c| c.contains(&0)));
    }
}
