//! The small I/O trait the worker drives, and an in-memory implementation.
//!
//! A [`PacketIo`] owns frames and rings. The worker hands it a handler; the
//! I/O layer calls the handler once per received frame with the frame's
//! buffer (whole capacity, packet at the start) and its length, and acts on
//! the returned [`Verdict`]: queue the same buffer for transmission on a
//! port, or recycle it. The handler never sees a descriptor, so the pure
//! pipeline cannot leak or double-use a frame, and the AF_XDP layer keeps
//! all of its `unsafe` to itself.
//!
//! A handler that must send more than one frame for a received one (IPv4
//! fragmentation, the only case) asks the [`Spare`] it is handed for free
//! frames: each is filled by a callback and queued before the received
//! frame's own verdict, so the frames leave in the order they were made.

use std::collections::VecDeque;

use crate::counters::DropReason;
use crate::fib::PortId;

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the first `len` bytes of the buffer on `port`.
    Tx { port: PortId, len: usize },
    /// Recycle the frame. The pipeline has counted the reason already;
    /// the I/O layer counts only what it decides itself (a full TX ring).
    Drop(DropReason),
}

/// Copies a frame that crosses between UMEM classes (the underlay's and the
/// pods' own, see docs/design.md "UMEM classes") into a free frame of the
/// other class, `dst` being that frame's whole capacity. False, copying
/// nothing, when it does not fit. The one copy such a frame gets; the AF_XDP
/// layer and the instruction profile (`pipeline-prof … split`) both use it.
#[inline]
pub fn cross_umem_copy(dst: &mut [u8], src: &[u8]) -> bool {
    match dst.get_mut(..src.len()) {
        Some(to) => {
            to.copy_from_slice(src);
            true
        }
        None => false,
    }
}

/// Free frames a handler may fill and send besides the one it was handed.
///
/// Off the fast path: only a packet that must be fragmented uses it.
pub trait Spare {
    /// How many frames [`Spare::send`] can still queue on `port` during
    /// this call of the handler (leaving room for the received frame's
    /// own verdict).
    fn available(&self, port: PortId) -> usize;

    /// Takes a free frame, lets `fill` write a packet into its buffer
    /// (whole capacity, the same as the received frame's) and return the
    /// packet's length, and queues it for
    /// transmission on `port` ahead of the received frame. A length of 0
    /// recycles the frame unsent. Returns false, having called nothing, when
    /// [`Spare::available`] is 0.
    fn send(&mut self, port: PortId, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool;
}

/// A [`Spare`] with no frames, for callers that never fragment (benchmark
/// loops, profiles): a packet that would need one is dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoSpare;

impl Spare for NoSpare {
    fn available(&self, _port: PortId) -> usize {
        0
    }

    fn send(&mut self, _port: PortId, _fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        false
    }
}

/// The handler [`PacketIo::poll`] calls per received frame: `(port, buf,
/// len, spare)` where `buf` is the frame's whole buffer with the packet in
/// `buf[..len]`.
pub trait Handler: FnMut(PortId, &mut [u8], usize, &mut dyn Spare) -> Verdict {}
impl<F: FnMut(PortId, &mut [u8], usize, &mut dyn Spare) -> Verdict> Handler for F {}

/// Frame I/O for one worker.
pub trait PacketIo {
    /// Receives up to one batch from every port, calling `handler(port,
    /// buf, len, spare)` for each frame, then flushes transmissions and
    /// refills receive rings. Returns the number of frames received.
    fn poll(&mut self, handler: impl Handler) -> usize;

    /// Number of ports (underlay first).
    fn ports(&self) -> usize;

    /// Blocks until traffic may have arrived, at most `timeout_ms`
    /// (an idle worker's sleep; never called while traffic flows).
    fn wait(&mut self, timeout_ms: i32);

    /// Whether transmissions are still queued or in flight.
    fn tx_pending(&self) -> bool {
        false
    }

    /// Folds drop counts kept outside the process (the kernel's socket
    /// statistics) into the worker's counters. Called every
    /// [`KERNEL_SYNC`], never per packet.
    fn sync_kernel_counters(&mut self) {}
}

/// How often a worker folds the kernel's drop counts into its counters.
pub const KERNEL_SYNC: std::time::Duration = std::time::Duration::from_millis(100);

/// An in-memory [`PacketIo`] for tests and benchmarks: frames are pushed
/// into per-port input queues and transmitted frames collected per port.
#[derive(Debug)]
pub struct MemIo {
    frame_size: usize,
    input: Vec<VecDeque<Vec<u8>>>,
    /// Frames transmitted per port, in order.
    pub output: Vec<Vec<Vec<u8>>>,
    /// Verdicts in the order frames were handled: (rx port, verdict).
    pub verdicts: Vec<(PortId, Verdict)>,
    /// Spare frames a handler may still take (unlimited by default).
    pub spare_frames: usize,
    batch: usize,
}

impl MemIo {
    /// `frame_size` is the capacity each buffer offers the handler
    /// (mirrors the AF_XDP frame's data capacity).
    pub fn new(ports: usize, frame_size: usize) -> MemIo {
        MemIo {
            frame_size,
            input: vec![VecDeque::new(); ports],
            output: vec![Vec::new(); ports],
            verdicts: Vec::new(),
            spare_frames: usize::MAX,
            batch: 64,
        }
    }

    /// Queues a received frame on `port`.
    pub fn push(&mut self, port: PortId, frame: &[u8]) {
        assert!(
            frame.len() <= self.frame_size,
            "frame larger than the buffer"
        );
        self.input[port as usize].push_back(frame.to_vec());
    }
}

/// [`MemIo`]'s spare frames: fresh 0xa5-filled buffers appended to the
/// output as they are sent.
struct MemSpare<'a> {
    frame_size: usize,
    left: &'a mut usize,
    output: &'a mut [Vec<Vec<u8>>],
}

impl Spare for MemSpare<'_> {
    fn available(&self, _port: PortId) -> usize {
        *self.left
    }

    fn send(&mut self, port: PortId, fill: &mut dyn FnMut(&mut [u8]) -> usize) -> bool {
        if *self.left == 0 {
            return false;
        }
        *self.left -= 1;
        let mut buf = vec![0xa5u8; self.frame_size];
        let len = fill(&mut buf);
        if len > 0 {
            buf.truncate(len);
            self.output[port as usize].push(buf);
        }
        true
    }
}

impl PacketIo for MemIo {
    fn poll(&mut self, mut handler: impl Handler) -> usize {
        let mut n = 0;
        // A buffer pre-filled with 0xa5 so bytes the pipeline forgets to
        // write show up in the output.
        let mut buf = vec![0xa5u8; self.frame_size];
        for port in 0..self.input.len() {
            for _ in 0..self.batch {
                let Some(frame) = self.input[port].pop_front() else {
                    break;
                };
                n += 1;
                buf.fill(0xa5);
                buf[..frame.len()].copy_from_slice(&frame);
                let mut spare = MemSpare {
                    frame_size: self.frame_size,
                    left: &mut self.spare_frames,
                    output: &mut self.output,
                };
                let v = handler(port as PortId, &mut buf, frame.len(), &mut spare);
                if let Verdict::Tx { port: out, len } = v {
                    self.output[out as usize].push(buf[..len].to_vec());
                }
                self.verdicts.push((port as PortId, v));
            }
        }
        n
    }

    fn ports(&self) -> usize {
        self.input.len()
    }

    fn wait(&mut self, _timeout_ms: i32) {}
}
