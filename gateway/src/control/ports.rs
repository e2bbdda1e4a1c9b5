//! The port plan: which worker serves which queue of which interface, the
//! XSK map slot of each socket, and the cores the workers are pinned to.

use anyhow::{Context, bail};

use crate::afxdp::xsk::PortSpec;
use crate::config::Config;
use crate::host::{cpus, ethtool};

/// RX/TX/fill ring size for the underlay queue sockets.
const UNDERLAY_RING: u32 = 2048;
/// Ring size for pod veth sockets.
const POD_RING: u32 = 512;

/// Which socket serves what. One worker per served underlay RX queue;
/// worker `w` owns, over its own UMEM, a socket on underlay queue `w` and
/// one on queue `w` of every pod veth (a frame only reaches a socket bound
/// to the queue it arrived on, and a worker can only transmit on its own
/// sockets). So every worker has the same port layout — port 0 is its
/// underlay queue, port `1 + i` is pod `i` — and the FIB's pod ports are
/// valid on every worker. XSK map slots: underlay queue `q` at `q`, pod `i`
/// queue `q` at `N + i·N + q`.
#[derive(Debug, Clone)]
pub struct PortPlan {
    /// Number of workers (= served underlay queues).
    pub workers: u32,
    /// Per worker, its sockets in port order.
    pub specs: Vec<Vec<PortSpec>>,
    /// Per worker, the XSK map slot of each port.
    pub slots: Vec<Vec<u32>>,
    /// Per pod, the XSK slot base its XDP attachment uses.
    pub pod_bases: Vec<u32>,
}

/// Plans the ports for `config` from the interfaces' active queue counts.
/// Every pod veth must have as many active queues as there are workers
/// (`ethtool -L`), so whichever queue a pod's frame arrives on, the worker
/// of that queue also owns a socket to answer on.
pub fn port_plan(config: &Config) -> anyhow::Result<PortPlan> {
    let ul = &config.underlay[0];
    let active = ethtool::rx_queue_count(&ul.interface).context("underlay[0].interface")?;
    let n = match ul.queues {
        Some(q) if q > active => bail!(
            "underlay[0].queues: {} has {active} active RX queue(s), {q} requested (ethtool -L {} combined {q})",
            ul.interface,
            ul.interface
        ),
        Some(q) => {
            if q < active {
                tracing::warn!(
                    ifname = %ul.interface, served = q, active,
                    "not every underlay RX queue is served: traffic hashed to the others goes to the kernel"
                );
            }
            q
        }
        None => active,
    };
    for (i, p) in config.pod.iter().enumerate() {
        let pq =
            ethtool::rx_queue_count(&p.interface).with_context(|| format!("pod[{i}].interface"))?;
        if pq != n {
            bail!(
                "pod[{i}].interface: {} has {pq} active RX queue(s); with {n} worker(s) it needs exactly {n} (ethtool -L {} rx {n} tx {n})",
                p.interface,
                p.interface
            );
        }
    }
    let slots_needed = n as usize * (1 + config.pod.len());
    if slots_needed > overpass_xdp::abi::MAX_XSKS as usize {
        bail!(
            "{n} queues × (1 underlay + {} pods) = {slots_needed} sockets, more than the XSK map's {}",
            config.pod.len(),
            overpass_xdp::abi::MAX_XSKS
        );
    }
    let pods = config.pod.len() as u32;
    let mut specs = vec![];
    let mut slots = vec![];
    for w in 0..n {
        let mut s = vec![underlay_spec(ul.interface.clone(), w)];
        let mut sl = vec![w];
        for (i, p) in config.pod.iter().enumerate() {
            s.push(pod_spec(p.interface.clone(), w));
            sl.push(n + i as u32 * n + w);
        }
        specs.push(s);
        slots.push(sl);
    }
    Ok(PortPlan {
        workers: n,
        specs,
        slots,
        pod_bases: (0..pods).map(|i| n + i * n).collect(),
    })
}

/// Chooses `n` cores: the configured ones (each must exist), or by default
/// the highest-numbered cores this process may run on, leaving core 0 to
/// the kernel and the control plane when there is more than one.
pub fn pick_cores(configured: Option<&[usize]>, n: usize) -> anyhow::Result<Vec<usize>> {
    // The cores this thread may run on (the default choice stays inside
    // them, e.g. systemd's CPUAffinity=).
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    if let Some(cores) = configured {
        // Configured cores only have to exist: workers set their own
        // affinity, which may lie outside the starting thread's (isolated
        // cores, or a caller pinned elsewhere).
        let online: Vec<usize> = cpus::online_cpus()
            .map(|c| c.into_iter().collect())
            .unwrap_or_else(|| available.clone());
        for (i, c) in cores.iter().enumerate() {
            if !online.contains(c) {
                bail!("gateway.cores[{i}]: core {c} does not exist (online: {online:?})");
            }
        }
        if cores.len() < n {
            bail!(
                "gateway.cores: {n} workers need {n} cores, {} listed",
                cores.len()
            );
        }
        return Ok(cores[..n].to_vec());
    }
    if available.is_empty() {
        bail!("no CPU cores available to pin workers to");
    }
    Ok((0..n)
        .map(|i| available[(available.len() - 1 - i % available.len()) % available.len()])
        .collect())
}

/// The socket of underlay queue `queue`: the largest budget (every node's
/// traffic arrives here).
pub fn underlay_spec(ifname: String, queue: u32) -> PortSpec {
    PortSpec {
        ifname,
        queue,
        ring_size: UNDERLAY_RING,
    }
}

/// The socket of a pod veth's queue `queue`.
pub fn pod_spec(ifname: String, queue: u32) -> PortSpec {
    PortSpec {
        ifname,
        queue,
        ring_size: POD_RING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_cores_must_exist() {
        let e = pick_cores(Some(&[4096]), 1).unwrap_err().to_string();
        assert!(
            e.starts_with("gateway.cores[0]: core 4096 does not exist"),
            "{e}"
        );
        assert_eq!(pick_cores(Some(&[0]), 1).unwrap(), vec![0]);
        assert!(
            pick_cores(Some(&[0]), 2).is_err(),
            "two workers need two cores"
        );
    }
}
