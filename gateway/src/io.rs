//! The small I/O trait the worker drives, and an in-memory implementation.
//!
//! A [`PacketIo`] owns frames and rings. The worker hands it a handler; the
//! I/O layer calls the handler once per received frame with the frame's
//! buffer (whole capacity, packet at the start) and its length, and acts on
//! the returned [`Verdict`]: queue the same buffer for transmission on a
//! port, or recycle it. The handler never sees a descriptor, so the pure
//! pipeline cannot leak or double-use a frame, and the AF_XDP layer keeps
//! all of its `unsafe` to itself.

use std::collections::VecDeque;

use crate::route::PortId;
use crate::stats::DropReason;

/// What to do with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the first `len` bytes of the buffer on `port`.
    Tx { port: PortId, len: usize },
    /// Recycle the frame; the reason is counted by the caller.
    Drop(DropReason),
}

/// Frame I/O for one worker.
pub trait PacketIo {
    /// Receives up to one batch from every port, calling `handler(port,
    /// buf, len)` for each frame, then flushes transmissions and refills
    /// receive rings. Returns the number of frames received.
    fn poll(&mut self, handler: impl FnMut(PortId, &mut [u8], usize) -> Verdict) -> usize;

    /// Number of ports (underlay first).
    fn ports(&self) -> usize;
}

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

impl PacketIo for MemIo {
    fn poll(&mut self, mut handler: impl FnMut(PortId, &mut [u8], usize) -> Verdict) -> usize {
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
                let v = handler(port as PortId, &mut buf, frame.len());
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
}
