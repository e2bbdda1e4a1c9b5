//! The port plan: which worker serves which queue of which interface, the
//! XSK map slot of each socket, and the cores the workers are pinned to.

use anyhow::{Context, bail};

use crate::afxdp::xsk::{AttachCapacity, PortSpec};
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
    /// Number of workers (= served underlay queues). Also every port's
    /// `xsk_count` in the XDP program: queues `0..workers` are steered.
    pub workers: u32,
    /// Active RX queues of the underlay (ETHTOOL_GCHANNELS); more than
    /// `workers` when `underlay.queues` serves only some of them.
    pub underlay_active: u32,
    /// Per worker, its sockets in port order.
    pub specs: Vec<Vec<PortSpec>>,
    /// Per worker, the XSK map slot of each port.
    pub slots: Vec<Vec<u32>>,
    /// Per pod, the XSK slot base its XDP attachment uses.
    pub pod_bases: Vec<u32>,
    /// Pods the configuration lists (`[[pod]]`): ports `1..=config_pods`.
    pub config_pods: u32,
    /// Pods that may be attached at run time (`attach.max_pods`), in total:
    /// those restored at start ([`PortPlan::add_attached`]) and those free.
    pub max_attached: u32,
    /// The frame budget (ring size) of each attached pod's sockets.
    pub attach_ring: u32,
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
        Some(q) => q,
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
    let attach = config.attach.clone();
    let max_attached = attach.as_ref().map_or(0, |a| a.max_pods);
    let slots_needed = n as usize * (1 + config.pod.len() + max_attached as usize);
    if slots_needed > overpass_xdp::abi::MAX_XSKS as usize {
        bail!(
            "{n} queues × (1 underlay + {} pods + {max_attached} attach.max_pods) = {slots_needed} sockets, more than the XSK map's {}",
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
        underlay_active: active,
        specs,
        slots,
        pod_bases: (0..pods).map(|i| n + i * n).collect(),
        config_pods: pods,
        max_attached,
        attach_ring: attach.map_or(0, |a| a.ring_size),
    })
}

impl PortPlan {
    /// Adds a pod attached at run time, restored at start: its sockets are
    /// opened with the others. Returns its port.
    pub fn add_attached(&mut self, ifname: &str) -> anyhow::Result<u16> {
        let i = self.pod_bases.len() as u32;
        if i >= self.config_pods + self.max_attached {
            bail!("attach.max_pods: all {} are taken", self.max_attached);
        }
        let n = self.workers;
        for w in 0..n {
            self.specs[w as usize].push(PortSpec {
                ifname: ifname.to_string(),
                queue: w,
                ring_size: self.attach_ring,
            });
            self.slots[w as usize].push(n + i * n + w);
        }
        self.pod_bases.push(n + i * n);
        Ok((i + 1) as u16)
    }

    /// Room left for pods attached at run time, after the ones in the plan.
    pub fn attach_capacity(&self) -> AttachCapacity {
        let taken = self.pod_bases.len() as u32 - self.config_pods;
        AttachCapacity {
            slots: self.max_attached - taken,
            ring_size: self.attach_ring,
        }
    }

    /// The XSK slot base of the pod on port `port` (1 + its pod index).
    pub fn slot_base(&self, port: u16) -> u32 {
        let i = u32::from(port) - 1;
        self.workers + i * self.workers
    }

    /// Bytes of UMEM one attached pod costs each worker (its frame budget
    /// twice, see `xsk::umem_frames`).
    pub fn bytes_per_attached_pod(&self) -> u64 {
        2 * u64::from(self.attach_ring) * u64::from(crate::afxdp::xsk::FRAME_SIZE)
    }

    /// What happens to the underlay queues no worker serves, when there are
    /// any: the sentence `overpass run` logs and `overpass check` reports.
    pub fn unserved_queues(&self, ifname: &str) -> Option<String> {
        unserved_queues(ifname, self.underlay_active, self.workers)
    }
}

/// The one description of an underlay with more active RX queues than
/// served ones (`underlay.queues` below the active count), shared by the
/// start-up log and `overpass check` so the two say the same thing. None
/// when every active queue is served.
///
/// What it describes is enforced by the XDP program: the underlay's
/// `xsk_count` is the served count, and a tunnel frame on a higher queue is
/// passed to the kernel and counted `unserved_queue`, never steered into
/// another port's socket slot.
pub fn unserved_queues(ifname: &str, active: u32, served: u32) -> Option<String> {
    if active <= served {
        return None;
    }
    let queues = if active - served == 1 {
        format!("queue {served}")
    } else {
        format!("queues {served}..{}", active - 1)
    };
    Some(format!(
        "{ifname}: {active} active RX queues, {served} served (underlay.queues): tunnel frames RSS puts on {queues} are not forwarded by Overpass; the XDP program passes them to the kernel and counts them as unserved_queue"
    ))
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
    fn unserved_queues_names_them_and_the_counter() {
        assert_eq!(unserved_queues("eth1", 4, 4), None);
        assert_eq!(unserved_queues("eth1", 1, 1), None);
        let one = unserved_queues("ul0", 2, 1).unwrap();
        assert!(
            one.starts_with("ul0: 2 active RX queues, 1 served (underlay.queues)"),
            "{one}"
        );
        assert!(one.contains("on queue 1 are not forwarded"), "{one}");
        assert!(one.contains("passes them to the kernel"), "{one}");
        assert!(one.contains("unserved_queue"), "{one}");
        let many = unserved_queues("eth1", 8, 3).unwrap();
        assert!(many.contains("on queues 3..7 are"), "{many}");
    }

    #[test]
    fn attached_pods_get_the_next_slots_on_every_worker() {
        let mut plan = PortPlan {
            workers: 2,
            underlay_active: 2,
            specs: vec![
                vec![underlay_spec("ul0".into(), 0), pod_spec("a".into(), 0)],
                vec![underlay_spec("ul0".into(), 1), pod_spec("a".into(), 1)],
            ],
            slots: vec![vec![0, 2], vec![1, 3]],
            pod_bases: vec![2],
            config_pods: 1,
            max_attached: 2,
            attach_ring: 128,
        };
        assert_eq!(plan.attach_capacity().slots, 2);
        assert_eq!(plan.add_attached("ovp1").unwrap(), 2);
        assert_eq!(plan.slot_base(2), 4);
        assert_eq!(plan.slots, vec![vec![0, 2, 4], vec![1, 3, 5]]);
        assert_eq!(plan.specs[1][2].queue, 1);
        assert_eq!(plan.specs[1][2].ring_size, 128);
        assert_eq!(plan.attach_capacity().slots, 1);
        plan.add_attached("ovp2").unwrap();
        let e = plan.add_attached("ovp3").unwrap_err().to_string();
        assert!(e.starts_with("attach.max_pods"), "{e}");
        assert_eq!(plan.bytes_per_attached_pod(), 2 * 128 * 2048);
        // The UMEM of one worker: the configured ports' budgets twice, the
        // spare reserve, and two frames per ring entry of every attachable
        // pod, rounded to 64 (the test bed's 110-pod gateway: 34,368).
        let ports = [
            underlay_spec(String::new(), 0),
            pod_spec(String::new(), 0),
            pod_spec(String::new(), 0),
        ];
        let cap = crate::afxdp::xsk::AttachCapacity {
            slots: 110,
            ring_size: 128,
        };
        assert_eq!(crate::afxdp::xsk::umem_frames_with(&ports, cap), 34_368);
        assert_eq!(crate::afxdp::xsk::umem_frames(&ports), 8192);
    }

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
