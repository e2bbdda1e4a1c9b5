//! Loading, configuring and attaching the steering program.

use std::fmt;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, RawFd};

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, MapCore, MapFlags, OpenObject, Program, ProgramInput, Xdp, XdpFlags};

use crate::abi::{COUNTER_MAX, MAX_VXLAN_PORTS, MAX_XSKS, PortCfg, PortRole, SteerCounter};
use crate::skel::{OverpassSkel, OverpassSkelBuilder};

/// How the kernel runs the program on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum XdpMode {
    /// In the driver, before an skb exists (`XDP_ATTACHED_DRV`). veth supports this.
    Native,
    /// After skb allocation, for drivers without XDP support (`XDP_ATTACHED_SKB`):
    /// correct but slow, and AF_XDP is limited to copy mode.
    Generic,
}

impl XdpMode {
    /// `"native"` or `"generic"`, as `ip link` and the API spell it.
    pub const fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Generic => "generic",
        }
    }
}

impl fmt::Display for XdpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, and where.
///
/// The message names the operation and the interface (`ifindex 7 (veth0)`); the
/// underlying libbpf / kernel error is the [`std::error::Error::source`], so print the
/// chain (`{:#}` with anyhow) to see the errno too.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// libbpf could not open the BPF object embedded in this crate.
    #[error("opening the embedded XDP steering object failed")]
    Open(#[source] libbpf_rs::Error),
    /// The kernel refused the program or a map (not root / no CAP_BPF and
    /// CAP_NET_ADMIN, or the verifier rejected it: libbpf prints its log to stderr).
    #[error("loading the XDP steering program into the kernel failed (needs root)")]
    Load(#[source] libbpf_rs::Error),
    /// More VXLAN ports than the `vxlan_ports` map holds.
    #[error("{count} VXLAN UDP ports given, the vxlan_ports map holds at most {max}")]
    TooManyVxlanPorts {
        /// Ports given.
        count: usize,
        /// [`MAX_VXLAN_PORTS`].
        max: u32,
    },
    /// Writing a VXLAN port into `vxlan_ports` failed.
    #[error("adding VXLAN UDP port {port} to the vxlan_ports map failed")]
    VxlanPort {
        /// The port, host byte order.
        port: u16,
        /// The map update error.
        source: libbpf_rs::Error,
    },
    /// Writing or deleting an interface's `ports` entry failed (e.g. the map is full).
    #[error("{action} the ports entry of {iface} failed")]
    Port {
        /// "writing" or "removing".
        action: &'static str,
        /// `ifindex N (name)`.
        iface: String,
        /// The map error.
        source: libbpf_rs::Error,
    },
    /// `attach` was called twice for one interface.
    #[error("the XDP steering program is already attached to {iface}")]
    AlreadyAttached {
        /// `ifindex N (name)`.
        iface: String,
    },
    /// `detach` was called for an interface this `Steering` did not attach to.
    #[error("the XDP steering program is not attached to {iface} by this process")]
    NotAttached {
        /// `ifindex N (name)`.
        iface: String,
    },
    /// Creating the bpf_link failed (no such interface, or another XDP program is
    /// already attached without a link and the kernel refuses to replace it: EBUSY).
    #[error("attaching the XDP steering program to {iface} failed")]
    Attach {
        /// `ifindex N (name)`.
        iface: String,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
    /// Asking the kernel which XDP mode is in use failed.
    #[error("querying the XDP attach mode of {iface} failed")]
    QueryMode {
        /// `ifindex N (name)`.
        iface: String,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
    /// The kernel does not report this program as attached in native or generic mode.
    #[error(
        "the kernel does not report the XDP steering program (id {prog_id}) on {iface}: \
         native id {drv_prog_id}, generic id {skb_prog_id}, offload id {hw_prog_id}"
    )]
    ModeUnknown {
        /// `ifindex N (name)`.
        iface: String,
        /// Our program's id.
        prog_id: u32,
        /// Program id the kernel reports in native mode (0: none).
        drv_prog_id: u32,
        /// Program id the kernel reports in generic mode (0: none).
        skb_prog_id: u32,
        /// Program id the kernel reports offloaded to the NIC (0: none).
        hw_prog_id: u32,
    },
    /// The socket slot is outside the `xsks` map.
    #[error("XSK slot {slot} is outside the xsks map (0..{max})")]
    SlotOutOfRange {
        /// The slot asked for.
        slot: u32,
        /// [`MAX_XSKS`].
        max: u32,
    },
    /// Writing an AF_XDP socket into `xsks` failed (e.g. the fd is not a bound XSK).
    #[error("registering AF_XDP socket fd {fd} in XSK slot {slot} failed")]
    RegisterXsk {
        /// The slot.
        slot: u32,
        /// The socket fd.
        fd: RawFd,
        /// The map update error.
        source: libbpf_rs::Error,
    },
    /// Reading a slot of the `counters` map failed.
    #[error("reading steering counter {counter} failed")]
    Counter {
        /// [`SteerCounter::name`].
        counter: &'static str,
        /// The map lookup error.
        source: libbpf_rs::Error,
    },
    /// BPF_PROG_TEST_RUN failed (the kernel refuses frames shorter than an Ethernet
    /// header, unknown ifindexes and queues the device does not have: EINVAL/ENODEV).
    #[error("test-running the XDP steering program on {iface} queue {rx_queue} failed")]
    TestRun {
        /// `ifindex N (name)`.
        iface: String,
        /// The RX queue given.
        rx_queue: u32,
        /// The libbpf error.
        source: libbpf_rs::Error,
    },
}

/// The loaded steering program, its maps, and the interfaces it is attached to.
///
/// Attachments are bpf_links owned by this value: dropping it (or the process dying)
/// detaches the program from every interface; nothing is left behind in the kernel.
pub struct Steering {
    // Declared first so the links drop before the skeleton (links hold the program).
    links: Vec<(u32, Link)>,
    skel: OverpassSkel<'static>,
}

// The gateway keeps one `Steering` in its control plane and may hand it between threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Steering>();
};

impl fmt::Debug for Steering {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let attached: Vec<u32> = self.links.iter().map(|(ifindex, _)| *ifindex).collect();
        f.debug_struct("Steering")
            .field("attached_ifindexes", &attached)
            .finish_non_exhaustive()
    }
}

impl Steering {
    /// Opens and loads the program (verifier included) and fills `vxlan_ports` with the
    /// UDP destination ports that carry VXLAN on the underlay (e.g. 8472 for Flannel,
    /// 4789 IANA). Attaches nothing.
    pub fn load(vxlan_ports: &[u16]) -> Result<Steering, Error> {
        if vxlan_ports.len() > MAX_VXLAN_PORTS as usize {
            return Err(Error::TooManyVxlanPorts {
                count: vxlan_ports.len(),
                max: MAX_VXLAN_PORTS,
            });
        }

        // The generated skeleton borrows the storage of its `OpenObject` for its whole
        // life (`OverpassSkel<'obj>`). Leaking that storage makes the borrow 'static, so
        // `Steering` needs no self-reference and no unsafe. What leaks is only the
        // pointer-sized `MaybeUninit<OpenObject>` cell, once per `load`: the libbpf
        // object it points to is still closed when the skeleton drops.
        let storage: &'static mut MaybeUninit<OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = OverpassSkelBuilder::default()
            .open(storage)
            .map_err(Error::Open)?;
        let skel = open.load().map_err(Error::Load)?;

        for &port in vxlan_ports {
            skel.maps
                .vxlan_ports
                .update(&port.to_ne_bytes(), &[1u8], MapFlags::ANY)
                .map_err(|source| Error::VxlanPort { port, source })?;
        }

        Ok(Steering {
            links: Vec::new(),
            skel,
        })
    }

    /// Writes `ports[ifindex]` (role, first XSK slot, served RX queues) and attaches the
    /// program to the interface with a bpf_link. Returns the XDP mode the kernel chose:
    /// native where the driver supports it (veth does), generic otherwise.
    ///
    /// RX queues `0..xsk_count` are steered to slots `xsk_base..xsk_base + xsk_count`;
    /// frames the program would steer from any other queue go to the kernel and count
    /// [`SteerCounter::UnservedQueue`].
    ///
    /// The `ports` entry is written first so the very first frame is steered by the
    /// right role; on failure it is removed again.
    pub fn attach(
        &mut self,
        ifindex: u32,
        role: PortRole,
        xsk_base: u32,
        xsk_count: u32,
    ) -> Result<XdpMode, Error> {
        if self.links.iter().any(|(i, _)| *i == ifindex) {
            return Err(Error::AlreadyAttached {
                iface: iface(ifindex),
            });
        }
        self.set_port(ifindex, role, xsk_base, xsk_count)?;

        let attached = self.attach_link(ifindex).and_then(|link| {
            let mode = self.xdp_mode(ifindex)?;
            Ok((link, mode))
        });
        match attached {
            Ok((link, mode)) => {
                self.links.push((ifindex, link));
                Ok(mode)
            }
            Err(err) => {
                // Best effort: the attach error is the one worth reporting.
                let _ = self.remove_port(ifindex);
                Err(err)
            }
        }
    }

    fn attach_link(&self, ifindex: u32) -> Result<Link, Error> {
        let attach_err = |source| Error::Attach {
            iface: iface(ifindex),
            source,
        };
        let ifindex_i32 = i32::try_from(ifindex).map_err(|_| {
            attach_err(libbpf_rs::Error::from(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )))
        })?;
        // Flags 0: the kernel picks native mode when the driver implements ndo_bpf and
        // generic mode otherwise; `xdp_mode` then reports which one it picked.
        self.skel
            .progs
            .overpass_steer
            .attach_xdp(ifindex_i32)
            .map_err(attach_err)
    }

    /// Which mode the kernel runs this program in on `ifindex`, as reported by
    /// `bpf_xdp_query` (the netlink query `ip link` uses).
    pub fn xdp_mode(&self, ifindex: u32) -> Result<XdpMode, Error> {
        let query_err = |source| Error::QueryMode {
            iface: iface(ifindex),
            source,
        };
        let prog = &self.skel.progs.overpass_steer;
        let prog_id = Program::id_from_fd(prog.as_fd()).map_err(query_err)?;
        // An out-of-range ifindex cannot have been attached; the kernel says ENODEV for
        // it like for any missing device.
        let ifindex_i32 = i32::try_from(ifindex).unwrap_or(i32::MAX);
        let info = Xdp::new(prog.as_fd())
            .query(ifindex_i32, XdpFlags::NONE)
            .map_err(query_err)?;
        // Compare program ids rather than trusting `attach_mode` alone: with several
        // programs attached it says XDP_ATTACHED_MULTI and only the ids tell ours apart.
        if info.drv_prog_id == prog_id {
            Ok(XdpMode::Native)
        } else if info.skb_prog_id == prog_id {
            Ok(XdpMode::Generic)
        } else {
            Err(Error::ModeUnknown {
                iface: iface(ifindex),
                prog_id,
                drv_prog_id: info.drv_prog_id,
                skb_prog_id: info.skb_prog_id,
                hw_prog_id: info.hw_prog_id,
            })
        }
    }

    /// Writes `ports[ifindex]` without attaching: for interfaces attached some other way,
    /// and for [`Steering::test_run`], whose ingress interface must be in `ports`. See
    /// [`Steering::attach`] for `xsk_base` and `xsk_count`.
    pub fn set_port(
        &self,
        ifindex: u32,
        role: PortRole,
        xsk_base: u32,
        xsk_count: u32,
    ) -> Result<(), Error> {
        let cfg = PortCfg {
            role: role as u32,
            xsk_base,
            xsk_count,
        };
        self.skel
            .maps
            .ports
            .update(&ifindex.to_ne_bytes(), &cfg.to_bytes(), MapFlags::ANY)
            .map_err(|source| Error::Port {
                action: "writing",
                iface: iface(ifindex),
                source,
            })
    }

    /// Deletes `ports[ifindex]`; frames from that interface are then passed untouched
    /// (`pass_unknown_port`). Deleting a missing entry is not an error.
    pub fn remove_port(&self, ifindex: u32) -> Result<(), Error> {
        match self.skel.maps.ports.delete(&ifindex.to_ne_bytes()) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Port {
                action: "removing",
                iface: iface(ifindex),
                source,
            }),
        }
    }

    /// Puts the AF_XDP socket `fd` into `xsks[slot]`, where slot is the interface's
    /// `xsk_base` plus the RX queue the socket is bound to. The kernel takes its own
    /// reference and drops the entry when the socket closes.
    pub fn register_xsk(&self, slot: u32, fd: RawFd) -> Result<(), Error> {
        if slot >= MAX_XSKS {
            return Err(Error::SlotOutOfRange {
                slot,
                max: MAX_XSKS,
            });
        }
        // XSKMAP values are the socket fd as a u32; the kernel resolves it on update.
        let value = u32::try_from(fd)
            .map_err(|_| Error::RegisterXsk {
                slot,
                fd,
                source: libbpf_rs::Error::from(std::io::Error::from_raw_os_error(9)), // EBADF
            })?
            .to_ne_bytes();
        self.skel
            .maps
            .xsks
            .update(&slot.to_ne_bytes(), &value, MapFlags::ANY)
            .map_err(|source| Error::RegisterXsk { slot, fd, source })
    }

    /// Empties `xsks[slot]` (a socket detached at run time: frames for it
    /// then fall back to the kernel, counted `no_socket`). An empty slot is
    /// not an error.
    pub fn unregister_xsk(&self, slot: u32) -> Result<(), Error> {
        match self.skel.maps.xsks.delete(&slot.to_ne_bytes()) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == libbpf_rs::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::RegisterXsk {
                slot,
                fd: -1,
                source,
            }),
        }
    }

    /// Every counter summed over CPUs, indexed by [`SteerCounter::index`].
    pub fn counters(&self) -> Result<[u64; COUNTER_MAX], Error> {
        let mut out = [0u64; COUNTER_MAX];
        for counter in SteerCounter::ALL {
            let key = (counter as u32).to_ne_bytes();
            let per_cpu = self
                .skel
                .maps
                .counters
                .lookup_percpu(&key, MapFlags::ANY)
                .map_err(|source| Error::Counter {
                    counter: counter.name(),
                    source,
                })?;
            // An array map always has every slot; None cannot happen for key < COUNTER_MAX.
            out[counter.index()] = per_cpu
                .unwrap_or_default()
                .iter()
                .filter_map(|bytes| Some(u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?)))
                .sum();
        }
        Ok(out)
    }

    /// Runs the program once on `frame` with BPF_PROG_TEST_RUN, as if it had arrived on
    /// `ingress_ifindex` queue `rx_queue`, and returns the XDP action
    /// ([`crate::abi::XDP_PASS`], [`crate::abi::XDP_REDIRECT`], ...). Counters count it.
    ///
    /// The kernel resolves `ingress_ifindex` to a real device of the caller's network
    /// namespace and checks `rx_queue` against its queues, so tests use loopback
    /// (ifindex 1, queue 0) registered with [`Steering::set_port`]. It also refuses
    /// frames shorter than 14 bytes (EINVAL). A redirect is only reported, not performed.
    pub fn test_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        rx_queue: u32,
    ) -> Result<u32, Error> {
        let test_err = |source| Error::TestRun {
            iface: iface(ingress_ifindex),
            rx_queue,
            source,
        };
        let frame_len = u32::try_from(frame.len()).map_err(|_| {
            test_err(libbpf_rs::Error::from(std::io::Error::from(
                std::io::ErrorKind::InvalidInput,
            )))
        })?;
        // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
        // egress_ifindex }, all __u32. The kernel insists data == 0, data_meta == 0 and
        // data_end == the frame length.
        let mut ctx = [0u8; 24];
        for (i, field) in [0, frame_len, 0, ingress_ifindex, rx_queue, 0]
            .iter()
            .enumerate()
        {
            ctx[i * 4..i * 4 + 4].copy_from_slice(&field.to_ne_bytes());
        }
        let input = ProgramInput {
            context_in: Some(&mut ctx),
            data_in: Some(frame),
            ..Default::default()
        };
        let output = self
            .skel
            .progs
            .overpass_steer
            .test_run(input)
            .map_err(test_err)?;
        Ok(output.return_value)
    }

    /// Interfaces the program is currently attached to by this value.
    pub fn attached(&self) -> impl Iterator<Item = u32> + '_ {
        self.links.iter().map(|(ifindex, _)| *ifindex)
    }

    /// Detaches the program from one interface (drops its link) and removes its `ports`
    /// entry.
    pub fn detach(&mut self, ifindex: u32) -> Result<(), Error> {
        let pos = self
            .links
            .iter()
            .position(|(i, _)| *i == ifindex)
            .ok_or_else(|| Error::NotAttached {
                iface: iface(ifindex),
            })?;
        // Dropping the link is the detach: the kernel removes the program from the
        // interface when the last reference to the bpf_link goes.
        drop(self.links.swap_remove(pos));
        self.remove_port(ifindex)
    }

    /// Detaches the program from every interface. Infallible: dropping a link cannot
    /// fail, and stale `ports` entries of detached interfaces are harmless.
    pub fn detach_all(&mut self) {
        for (ifindex, link) in self.links.drain(..) {
            drop(link);
            // Best effort, see above.
            let _ = self.skel.maps.ports.delete(&ifindex.to_ne_bytes());
        }
    }
}

impl Drop for Steering {
    fn drop(&mut self) {
        self.detach_all();
    }
}

/// `ifindex N (name)` for error messages. The name comes from the kernel for the
/// caller's network namespace, and is omitted when the interface does not exist there.
fn iface(ifindex: u32) -> String {
    match nix::net::if_::if_indextoname(ifindex) {
        Ok(name) => format!("ifindex {ifindex} ({})", name.to_string_lossy()),
        Err(_) => format!("ifindex {ifindex}"),
    }
}
