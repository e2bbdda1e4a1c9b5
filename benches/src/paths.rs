//! The forwarding paths under test besides Overpass itself: B1, the
//! kernel's own overlay (a Flannel-style `flannel.1` VXLAN device plus IP
//! forwarding in the gateway namespace, RPS steering its work to the
//! dataplane core), and B3, raw AF_XDP forwarding (the Overpass steering
//! program and the Overpass AF_XDP rings, frames bounced without decap,
//! lookup or encap).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use anyhow::Context;
use overpass::afxdp::xsk::{BindMode, PortSpec, XskIo};
use overpass_dataplane::counters::{Event, WorkerCounters};
use overpass_dataplane::io::{PacketIo, Verdict};
use overpass_dataplane::wire::ethernet::MacAddr;
use overpass_testkit::testbed::{self, Ns, Testbed};
use overpass_xdp::{PortRole, SteerCounter, Steering};

use crate::netns;

/// The kernel overlay in the gateway namespace, as Flannel would set up a
/// node: `flannel.1` (VNI 1, port 8472, the gateway's VtepMAC), one onlink
/// route, permanent neighbour and FDB entry per remote node, IPv4
/// forwarding on, and RPS on every receiving device steering to `rps_cpu`.
pub fn kernel_up(bed: &Testbed, rps_cpu: usize) -> anyhow::Result<()> {
    let gw = bed.ns(Ns::Gateway);
    let mut s = String::from("set -e\n");
    s += &format!(
        "ip link add flannel.1 address {} mtu {} type vxlan id {} local {} dev {} dstport {} nolearning\n",
        testbed::GATEWAY_VTEP_MAC,
        testbed::OVERLAY_MTU,
        testbed::VXLAN_VNI,
        bed.gateway_underlay_ip(),
        testbed::GATEWAY_UNDERLAY_IF,
        testbed::VXLAN_PORT
    );
    s += "ip addr add 10.244.0.0/32 dev flannel.1\nip link set flannel.1 up\n";
    for n in testbed::NODES {
        let vtep = bed.node_vtep_mac(n);
        s += &format!(
            "ip route add {cidr} via 10.244.{n}.0 dev flannel.1 onlink\n\
             ip neigh add 10.244.{n}.0 lladdr {vtep} dev flannel.1 nud permanent\n\
             bridge fdb append {vtep} dev flannel.1 dst {ip}\n",
            cidr = bed.node_pod_cidr(n),
            ip = bed.node_underlay_ip(n)
        );
    }
    for p in testbed::LOCAL_PODS {
        s += &format!(
            "ip neigh replace {} lladdr {} dev {} nud permanent\n",
            bed.local_pod_ip(p),
            bed.local_pod_mac(p),
            bed.local_pod_iface(p)
        );
    }
    s += "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0\n";
    s += "echo 0 > /proc/sys/net/ipv4/conf/flannel.1/send_redirects\n";
    let mask = format!("{:x}", 1u64 << rps_cpu);
    for dev in rps_devices(bed) {
        s += &format!("echo {mask} > /sys/class/net/{dev}/queues/rx-0/rps_cpus\n");
    }
    netns::sh(&gw, &s)
        .map(drop)
        .context("setting up the kernel overlay (B1)")
}

/// Undoes [`kernel_up`] (best effort, every step attempted).
pub fn kernel_down(bed: &Testbed) -> anyhow::Result<()> {
    let gw = bed.ns(Ns::Gateway);
    let mut s =
        String::from("ip link del flannel.1 2>/dev/null; sysctl -qw net.ipv4.ip_forward=0\n");
    for p in testbed::LOCAL_PODS {
        s += &format!(
            "ip neigh del {} dev {} 2>/dev/null\n",
            bed.local_pod_ip(p),
            bed.local_pod_iface(p)
        );
    }
    for dev in rps_devices(bed) {
        s += &format!("echo 0 > /sys/class/net/{dev}/queues/rx-0/rps_cpus\n");
    }
    s += "true\n";
    netns::sh(&gw, &s).map(drop)
}

fn rps_devices(bed: &Testbed) -> Vec<String> {
    let mut v = vec![testbed::GATEWAY_UNDERLAY_IF.to_string()];
    v.extend(testbed::LOCAL_PODS.iter().map(|&p| bed.local_pod_iface(p)));
    v
}

/// Where B3 sends what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bounce {
    /// Underlay frames out of pod `a`'s veth, untouched (the decap direction).
    UnderlayToPod,
    /// Pod `a`'s frames out of the underlay with Ethernet addresses
    /// rewritten so the switch forwards them to a node (the encap direction).
    PodToUnderlay { dst: MacAddr, src: MacAddr },
    /// Underlay frames back out of the underlay, addresses rewritten (transit).
    UnderlayToUnderlay { dst: MacAddr, src: MacAddr },
}

/// B3: raw AF_XDP forwarding on the gateway's underlay and pod `a`'s veth.
pub struct RawForwarder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    // Dropped after the worker thread is joined (see Drop).
    steering: Option<Steering>,
    counters: Arc<WorkerCounters>,
}

impl std::fmt::Debug for RawForwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawForwarder").finish_non_exhaustive()
    }
}

impl RawForwarder {
    /// Attaches the steering program (underlay role on `ul0`, pod role on
    /// `gwp-a`), opens the Overpass AF_XDP rings on both, and starts a
    /// busy-polling bounce loop pinned to `core`.
    pub fn start(bed: &Testbed, bounce: Bounce, core: usize) -> anyhow::Result<RawForwarder> {
        let gw = bed.ns(Ns::Gateway);
        let pod_if = bed.local_pod_iface('a');
        let counters = Arc::new(WorkerCounters::default());
        let (steering, io) = netns::within(&gw, || {
            let mut steering =
                Steering::load(&[testbed::VXLAN_PORT]).context("loading the steering program")?;
            let ul = overpass::host::iface::ifindex(testbed::GATEWAY_UNDERLAY_IF)?;
            let pod = overpass::host::iface::ifindex(&pod_if)?;
            steering.attach(ul, PortRole::Underlay, 0, 1)?;
            steering.attach(pod, PortRole::Pod, 1, 1)?;
            let specs = [
                PortSpec {
                    ifname: testbed::GATEWAY_UNDERLAY_IF.into(),
                    queue: 0,
                    ring_size: 2048,
                },
                PortSpec {
                    ifname: pod_if.clone(),
                    queue: 0,
                    ring_size: 512,
                },
            ];
            let io = XskIo::open(&specs, BindMode::Copy, counters.clone())
                .context("opening AF_XDP sockets")?;
            for (slot, fd) in io.fds().into_iter().enumerate() {
                steering.register_xsk(slot as u32, fd)?;
            }
            Ok((steering, io))
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("b3-bounce".into())
                .spawn(move || bounce_loop(io, bounce, core, &stop))
                .context("spawning the B3 thread")?
        };
        Ok(RawForwarder {
            stop,
            thread: Some(thread),
            steering: Some(steering),
            counters,
        })
    }

    /// Frames whose transmission completed.
    pub fn tx_completed(&self) -> u64 {
        self.counters.events(Event::TxCompleted)
    }

    /// Frames the steering program redirected to the sockets.
    pub fn steered(&self) -> u64 {
        let Some(Ok(c)) = self.steering.as_ref().map(|s| s.counters()) else {
            return 0;
        };
        (c[SteerCounter::SteerVxlan as usize]
            + c[SteerCounter::SteerIpip as usize]
            + c[SteerCounter::SteerPod as usize])
            .saturating_sub(c[SteerCounter::NoSocket as usize])
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(mut s) = self.steering.take() {
            s.detach_all();
        }
    }
}

impl Drop for RawForwarder {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn bounce_loop(mut io: XskIo, bounce: Bounce, core: usize, stop: &AtomicBool) {
    netns::pin_to(core);
    let rewrite = |buf: &mut [u8], dst: &MacAddr, src: &MacAddr| {
        buf[0..6].copy_from_slice(&dst.0);
        buf[6..12].copy_from_slice(&src.0);
    };
    let mut idle = 0u32;
    while !stop.load(Ordering::Relaxed) {
        let n = io.poll(|port, buf, len, _spare| match (bounce, port) {
            (Bounce::UnderlayToPod, 0) => Verdict::Tx { port: 1, len },
            (Bounce::PodToUnderlay { dst, src }, 1) => {
                rewrite(buf, &dst, &src);
                Verdict::Tx { port: 0, len }
            }
            (Bounce::UnderlayToUnderlay { dst, src }, 0) => {
                rewrite(buf, &dst, &src);
                Verdict::Tx { port: 0, len }
            }
            _ => Verdict::Drop(overpass_dataplane::counters::DropReason::Hairpin),
        });
        if n > 0 {
            idle = 0;
        } else {
            idle = idle.saturating_add(1);
            if idle > 20_000 {
                io.wait(10);
            } else {
                std::hint::spin_loop();
            }
        }
    }
    for _ in 0..64 {
        io.poll(|_, _, _, _| Verdict::Drop(overpass_dataplane::counters::DropReason::Hairpin));
    }
}
