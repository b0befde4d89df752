//! POST diagnostic port 0x80: kernels write progress codes and use it as an
//! I/O delay. popek's own guests write phase markers here, which the BT
//! engine turns into per-phase statistics, so the port remembers the codes
//! written as well as the last one.
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::BusDevice;

/// The POST code port.
pub const PORT: u16 = 0x80;

/// How many of the latest codes the port keeps. An engine reads them back
/// after each exit that may have written the port, so a handful would do;
/// the bound keeps a kernel that uses the port as a delay from growing it.
pub const HISTORY: usize = 64;

/// What a read returns before any code was written: a floating ISA bus.
const NO_CODE: u8 = 0xFF;

/// Records the POST codes written.
#[derive(Default)]
pub struct PostCode {
    last: Option<u8>,
    /// Codes written since power-on.
    writes: u64,
    /// The latest codes, oldest first, at most [`HISTORY`].
    recent: VecDeque<u8>,
    /// Bumped at every code, for a reader that checks for news without
    /// taking this device's lock ([`PostCode::counting_into`]).
    counter: Option<Arc<AtomicU64>>,
}

impl PostCode {
    /// A port that has seen no code.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same port, bumping `counter` at every code written.
    pub fn counting_into(self, counter: Arc<AtomicU64>) -> Self {
        PostCode {
            counter: Some(counter),
            ..self
        }
    }

    /// The last code written, if any.
    pub fn last(&self) -> Option<u8> {
        self.last
    }

    /// How many codes were written since power-on.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// The codes written after the first `seen`, oldest first: all of them,
    /// or the latest [`HISTORY`] if more were written since.
    pub fn since(&self, seen: u64) -> Vec<u8> {
        let new = self
            .writes
            .saturating_sub(seen)
            .min(self.recent.len() as u64) as usize;
        self.recent
            .range(self.recent.len() - new..)
            .copied()
            .collect()
    }
}

impl BusDevice for PostCode {
    fn read(&mut self, _base: u64, _offset: u64, data: &mut [u8]) {
        // POST cards latch only the low byte; wider reads see it in every lane.
        data.fill(self.last.unwrap_or(NO_CODE));
    }

    fn write(&mut self, _base: u64, _offset: u64, data: &[u8]) {
        if let Some(&code) = data.first() {
            self.last = Some(code);
            self.writes += 1;
            if self.recent.len() == HISTORY {
                self.recent.pop_front();
            }
            self.recent.push_back(code);
            if let Some(c) = &self.counter {
                c.fetch_add(1, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(p: &mut PostCode, code: u8) {
        p.write(PORT.into(), 0, &[code]);
    }

    #[test]
    fn a_counting_port_bumps_its_counter_at_every_code() {
        let counter = Arc::new(AtomicU64::new(0));
        let mut p = PostCode::new().counting_into(counter.clone());
        write(&mut p, 1);
        write(&mut p, 2);
        assert_eq!(counter.load(Ordering::Acquire), 2);
        let mut b = [0u8; 1];
        p.read(PORT.into(), 0, &mut b);
        assert_eq!(counter.load(Ordering::Acquire), 2, "reads are no codes");
    }

    #[test]
    fn reads_float_until_a_code_is_written() {
        let mut p = PostCode::new();
        assert_eq!(p.last(), None);
        let mut b = [0u8; 1];
        p.read(PORT.into(), 0, &mut b);
        assert_eq!(b[0], 0xFF);
    }

    #[test]
    fn the_last_code_written_is_kept_and_read_back() {
        let mut p = PostCode::new();
        write(&mut p, 0x12);
        write(&mut p, 0x34);
        assert_eq!(p.last(), Some(0x34));
        let mut b = [0u8; 1];
        p.read(PORT.into(), 0, &mut b);
        assert_eq!(b[0], 0x34);
    }

    #[test]
    fn a_wide_write_records_its_low_byte() {
        let mut p = PostCode::new();
        p.write(PORT.into(), 0, &0xBEEFu16.to_le_bytes());
        assert_eq!(p.last(), Some(0xEF));
        assert_eq!(p.since(0), vec![0xEF]);
    }

    #[test]
    fn codes_are_read_back_in_order_from_where_a_reader_left_off() {
        let mut p = PostCode::new();
        assert_eq!(p.since(0), Vec::<u8>::new());
        write(&mut p, 1);
        write(&mut p, 2);
        assert_eq!(p.since(0), vec![1, 2]);
        let seen = p.writes();
        write(&mut p, 3);
        assert_eq!(p.since(seen), vec![3]);
        assert_eq!(p.since(p.writes()), Vec::<u8>::new());
    }

    #[test]
    fn only_the_latest_codes_are_kept() {
        let mut p = PostCode::new();
        for i in 0..=255u8 {
            write(&mut p, i);
        }
        assert_eq!(p.writes(), 256);
        let all = p.since(0);
        assert_eq!(all.len(), HISTORY);
        assert_eq!(all[0], (256 - HISTORY) as u8);
        assert_eq!(all[HISTORY - 1], 255);
        assert_eq!(p.since(250), vec![250, 251, 252, 253, 254, 255]);
    }
}
