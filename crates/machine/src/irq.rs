//! Interrupt lines: how a device asserts an IRQ without knowing who listens,
//! in the spirit of vm-superio's `Trigger`.

use std::sync::{Arc, Mutex};

use crate::devices::pic::PicPair;

/// One interrupt request line into an interrupt controller.
pub trait IrqLine: Send {
    /// Drives the line high (`true`) or low.
    fn set_level(&self, level: bool);

    /// A rising then falling edge: what an edge-triggered ISA device does.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// An IRQ line wired to one input of the 8259A pair.
pub struct PicLine {
    pic: Arc<Mutex<PicPair>>,
    irq: u8,
}

impl PicLine {
    /// Wires `irq` (0..=15) of `pic`.
    pub fn new(pic: Arc<Mutex<PicPair>>, irq: u8) -> Self {
        assert!(irq < 16, "the PIC pair has 16 inputs");
        PicLine { pic, irq }
    }
}

impl IrqLine for PicLine {
    fn set_level(&self, level: bool) {
        self.pic.lock().unwrap().set_irq(self.irq, level);
    }
}

/// A line that records its level, for device unit tests.
#[derive(Clone, Default)]
pub struct TestLine {
    /// Current level.
    pub level: Arc<Mutex<bool>>,
    /// Number of rising edges seen.
    pub edges: Arc<Mutex<u32>>,
}

impl IrqLine for TestLine {
    fn set_level(&self, level: bool) {
        let mut l = self.level.lock().unwrap();
        if level && !*l {
            *self.edges.lock().unwrap() += 1;
        }
        *l = level;
    }
}
