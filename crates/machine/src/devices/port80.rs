//! POST diagnostic port 0x80: kernels write progress codes and use it as an I/O delay.
use crate::BusDevice;

/// The POST code port.
pub const PORT: u16 = 0x80;

/// What a read returns before any code was written: a floating ISA bus.
const NO_CODE: u8 = 0xFF;

/// Records the last POST code.
#[derive(Default)]
pub struct PostCode {
    last: Option<u8>,
}

impl PostCode {
    /// A port that has seen no code.
    pub fn new() -> Self {
        Self::default()
    }

    /// The last code written, if any.
    pub fn last(&self) -> Option<u8> {
        self.last
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        p.write(PORT.into(), 0, &[0x12]);
        p.write(PORT.into(), 0, &[0x34]);
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
    }
}
