//! CMOS RAM and MC146818 real-time clock (0x70 index, 0x71 data).
//!
//! The clock is read from the host on every access rather than ticked, so it
//! never drifts and never shows an update in progress. Writes to the time
//! registers are accepted and forgotten: the host clock stays authoritative.
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bus::BusDevice;

/// Index port (bit 7 is the NMI mask).
pub const INDEX: u16 = 0x70;
/// Data port.
pub const DATA: u16 = 0x71;

/// Index port bit 7: NMI disabled while set.
pub const NMI_DISABLE: u8 = 0x80;

/// RTC seconds.
pub const RTC_SECONDS: u8 = 0x00;
/// RTC minutes.
pub const RTC_MINUTES: u8 = 0x02;
/// RTC hours.
pub const RTC_HOURS: u8 = 0x04;
/// RTC day of week, 1 = Sunday.
pub const RTC_DAY_OF_WEEK: u8 = 0x06;
/// RTC day of month.
pub const RTC_DAY_OF_MONTH: u8 = 0x07;
/// RTC month.
pub const RTC_MONTH: u8 = 0x08;
/// RTC year within the century.
pub const RTC_YEAR: u8 = 0x09;
/// Status register A: update in progress (bit 7), divider and rate.
pub const REG_A: u8 = 0x0A;
/// Status register B: mode bits.
pub const REG_B: u8 = 0x0B;
/// Status register C: interrupt flags, cleared by reading.
pub const REG_C: u8 = 0x0C;
/// Status register D: bit 7 = RAM and time valid.
pub const REG_D: u8 = 0x0D;
/// Base memory in KiB, low byte (high byte at 0x16).
pub const BASE_MEM_LO: u8 = 0x15;
/// Extended memory above 1 MiB in KiB, low byte (high byte at 0x18).
pub const EXT_MEM_LO: u8 = 0x17;
/// Checksum over 0x10..=0x2D, high byte (low byte at 0x2F).
pub const CHECKSUM_HI: u8 = 0x2E;
/// Extended memory as counted by POST, low byte (high byte at 0x31).
pub const POST_EXT_MEM_LO: u8 = 0x30;
/// Century.
pub const RTC_CENTURY: u8 = 0x32;
/// Memory above 16 MiB in 64 KiB units, low byte (high byte at 0x35).
pub const HIGH_MEM_LO: u8 = 0x34;

/// Register A: update in progress.
pub const REG_A_UIP: u8 = 0x80;
/// Register B: updates inhibited while the guest sets the clock.
pub const REG_B_SET: u8 = 0x80;
/// Register B: binary (rather than BCD) data mode.
pub const REG_B_DM_BINARY: u8 = 0x04;
/// Register B: 24-hour (rather than 12-hour) mode.
pub const REG_B_24H: u8 = 0x02;
/// Register D: valid RAM and time (battery good).
pub const REG_D_VRT: u8 = 0x80;
/// Hours register in 12-hour mode: PM flag.
pub const HOURS_PM: u8 = 0x80;

/// Register A at power-on: 32.768 kHz time base, 1024 Hz periodic rate.
const REG_A_DEFAULT: u8 = 0x26;
/// Register B at power-on: 24-hour, BCD, no interrupts.
const REG_B_DEFAULT: u8 = REG_B_24H;
/// First and last byte covered by the standard checksum.
const CHECKSUM_RANGE: std::ops::RangeInclusive<u8> = 0x10..=0x2D;

/// Bytes of CMOS RAM (the index is 7 bits).
const CMOS_SIZE: usize = 128;
/// The index bits that select a byte.
const INDEX_MASK: u8 = 0x7F;

/// Conventional memory reported below 1 MiB, in KiB.
const BASE_MEM_KIB: u64 = 640;
const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const SECONDS_PER_DAY: i64 = 86_400;

/// A civil date and time in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct DateTime {
    year: i64,
    month: u8,
    day: u8,
    weekday: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl DateTime {
    /// Splits Unix seconds into a proleptic Gregorian date and time of day.
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(SECONDS_PER_DAY);
        let tod = secs.rem_euclid(SECONDS_PER_DAY);
        let (year, month, day) = days_to_civil(days);
        DateTime {
            year,
            month,
            day,
            // 1970-01-01 was a Thursday; the RTC counts Sunday as 1.
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
            hour: (tod / 3600) as u8,
            minute: (tod / 60 % 60) as u8,
            second: (tod % 60) as u8,
        }
    }
}

/// Howard Hinnant's days_from_civil inverse: days since 1970-01-01 to (y, m, d).
fn days_to_civil(days: i64) -> (i64, u8, u8) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year,
    // then work in 400-year eras of 146097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn to_bcd(v: u8) -> u8 {
    (v / 10) << 4 | (v % 10)
}

/// CMOS RAM with the RTC.
pub struct Cmos {
    index: u8,
    nmi_disabled: bool,
    ram: [u8; CMOS_SIZE],
    now: Box<dyn Fn() -> i64 + Send>,
}

impl Cmos {
    /// CMOS reporting `ram_bytes` of RAM, the RTC reading `now()` (Unix seconds, UTC).
    pub fn new(ram_bytes: u64, now: Box<dyn Fn() -> i64 + Send>) -> Self {
        let mut ram = [0u8; CMOS_SIZE];
        ram[usize::from(REG_A)] = REG_A_DEFAULT;
        ram[usize::from(REG_B)] = REG_B_DEFAULT;
        ram[usize::from(REG_D)] = REG_D_VRT;

        let base_kib = (ram_bytes / KIB).min(BASE_MEM_KIB);
        let ext_kib = (ram_bytes.saturating_sub(MIB) / KIB).min(0xFFFF);
        let high_64k = (ram_bytes.saturating_sub(16 * MIB) / (64 * KIB)).min(0xFFFF);
        let mut put16 = |at: u8, v: u64| {
            ram[usize::from(at)..usize::from(at) + 2].copy_from_slice(&(v as u16).to_le_bytes());
        };
        put16(BASE_MEM_LO, base_kib);
        put16(EXT_MEM_LO, ext_kib);
        put16(POST_EXT_MEM_LO, ext_kib);
        put16(HIGH_MEM_LO, high_64k);

        let mut cmos = Cmos {
            index: 0,
            nmi_disabled: false,
            ram,
            now,
        };
        cmos.update_checksum();
        cmos
    }

    /// The host's wall clock in Unix seconds.
    pub fn host_time() -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_secs() as i64,
            Err(e) => -(e.duration().as_secs() as i64),
        }
    }

    /// True while the guest has NMIs masked through bit 7 of the index port.
    pub fn nmi_disabled(&self) -> bool {
        self.nmi_disabled
    }

    fn update_checksum(&mut self) {
        let sum: u16 = CHECKSUM_RANGE
            .map(|i| u16::from(self.ram[usize::from(i)]))
            .sum();
        let at = usize::from(CHECKSUM_HI);
        self.ram[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }

    /// A time field in the data mode register B selects.
    fn encode(&self, v: u8) -> u8 {
        if self.ram[usize::from(REG_B)] & REG_B_DM_BINARY != 0 {
            v
        } else {
            to_bcd(v)
        }
    }

    fn encode_hours(&self, hour: u8) -> u8 {
        if self.ram[usize::from(REG_B)] & REG_B_24H != 0 {
            return self.encode(hour);
        }
        // 12-hour mode: 12 AM is midnight, and the PM flag sits above the
        // (binary or BCD) hour.
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour >= 12 { HOURS_PM } else { 0 };
        self.encode(h12) | pm
    }

    fn read_register(&mut self, index: u8) -> u8 {
        let time = || DateTime::from_unix((self.now)());
        match index {
            RTC_SECONDS => self.encode(time().second),
            RTC_MINUTES => self.encode(time().minute),
            RTC_HOURS => self.encode_hours(time().hour),
            RTC_DAY_OF_WEEK => self.encode(time().weekday),
            RTC_DAY_OF_MONTH => self.encode(time().day),
            RTC_MONTH => self.encode(time().month),
            RTC_YEAR => self.encode(time().year.rem_euclid(100) as u8),
            RTC_CENTURY => self.encode(time().year.div_euclid(100).clamp(0, 99) as u8),
            // The time is computed on demand, so no update is ever under way.
            REG_A => self.ram[usize::from(REG_A)] & !REG_A_UIP,
            REG_C => std::mem::take(&mut self.ram[usize::from(REG_C)]),
            _ => self.ram[usize::from(index)],
        }
    }

    fn write_register(&mut self, index: u8, value: u8) {
        match index {
            RTC_SECONDS | RTC_MINUTES | RTC_HOURS | RTC_DAY_OF_WEEK | RTC_DAY_OF_MONTH
            | RTC_MONTH | RTC_YEAR | RTC_CENTURY => {}
            REG_A => self.ram[usize::from(REG_A)] = value & !REG_A_UIP,
            REG_C | REG_D => {}
            _ => {
                self.ram[usize::from(index)] = value;
                if CHECKSUM_RANGE.contains(&index) {
                    self.update_checksum();
                }
            }
        }
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        // A wide access is a run of byte cycles on consecutive ports.
        for (p, byte) in (super::port(base, offset)..).zip(data.iter_mut()) {
            *byte = match p {
                INDEX => self.index | if self.nmi_disabled { NMI_DISABLE } else { 0 },
                DATA => self.read_register(self.index),
                _ => 0xFF,
            };
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        for (p, &byte) in (super::port(base, offset)..).zip(data) {
            match p {
                INDEX => {
                    self.index = byte & INDEX_MASK;
                    self.nmi_disabled = byte & NMI_DISABLE != 0;
                }
                DATA => self.write_register(self.index, byte),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-21 19:30:45 UTC, a Saturday.
    const SATURDAY_EVENING: i64 = 1_795_289_445;

    fn cmos_at(secs: i64) -> Cmos {
        Cmos::new(256 * MIB, Box::new(move || secs))
    }

    fn get(c: &mut Cmos, index: u8) -> u8 {
        c.write(INDEX.into(), 0, &[index]);
        let mut b = [0u8; 1];
        c.read(INDEX.into(), 1, &mut b);
        b[0]
    }

    fn set(c: &mut Cmos, index: u8, value: u8) {
        c.write(INDEX.into(), 0, &[index]);
        c.write(INDEX.into(), 1, &[value]);
    }

    fn get16(c: &mut Cmos, lo: u8) -> u16 {
        u16::from_le_bytes([get(c, lo), get(c, lo + 1)])
    }

    #[test]
    fn days_to_civil_handles_epoch_leap_days_and_before_1970() {
        assert_eq!(days_to_civil(0), (1970, 1, 1));
        assert_eq!(days_to_civil(951_782_400 / SECONDS_PER_DAY), (2000, 2, 29));
        assert_eq!(days_to_civil(-1), (1969, 12, 31));
        let t = DateTime::from_unix(-1);
        assert_eq!((t.hour, t.minute, t.second, t.weekday), (23, 59, 59, 4));
    }

    #[test]
    fn bcd_time_by_default() {
        let mut c = cmos_at(SATURDAY_EVENING);
        assert_eq!(get(&mut c, RTC_SECONDS), 0x45);
        assert_eq!(get(&mut c, RTC_MINUTES), 0x30);
        assert_eq!(get(&mut c, RTC_HOURS), 0x19);
        assert_eq!(get(&mut c, RTC_DAY_OF_WEEK), 7);
        assert_eq!(get(&mut c, RTC_DAY_OF_MONTH), 0x21);
        assert_eq!(get(&mut c, RTC_MONTH), 0x11);
        assert_eq!(get(&mut c, RTC_YEAR), 0x26);
        assert_eq!(get(&mut c, RTC_CENTURY), 0x20);
    }

    #[test]
    fn binary_mode_is_honoured() {
        let mut c = cmos_at(SATURDAY_EVENING);
        set(&mut c, REG_B, REG_B_24H | REG_B_DM_BINARY);
        assert_eq!(get(&mut c, RTC_SECONDS), 45);
        assert_eq!(get(&mut c, RTC_MINUTES), 30);
        assert_eq!(get(&mut c, RTC_HOURS), 19);
        assert_eq!(get(&mut c, RTC_DAY_OF_MONTH), 21);
        assert_eq!(get(&mut c, RTC_MONTH), 11);
        assert_eq!(get(&mut c, RTC_YEAR), 26);
        assert_eq!(get(&mut c, RTC_CENTURY), 20);
    }

    #[test]
    fn twelve_hour_mode_sets_the_pm_flag() {
        let mut c = cmos_at(SATURDAY_EVENING);
        set(&mut c, REG_B, 0);
        assert_eq!(get(&mut c, RTC_HOURS), HOURS_PM | 0x07);
        set(&mut c, REG_B, REG_B_DM_BINARY);
        assert_eq!(get(&mut c, RTC_HOURS), HOURS_PM | 7);

        let mut midnight = cmos_at(SATURDAY_EVENING - (19 * 3600 + 30 * 60 + 45));
        set(&mut midnight, REG_B, 0);
        assert_eq!(get(&mut midnight, RTC_HOURS), 0x12);
        let mut noon = cmos_at(SATURDAY_EVENING - (7 * 3600 + 30 * 60 + 45));
        set(&mut noon, REG_B, 0);
        assert_eq!(get(&mut noon, RTC_HOURS), HOURS_PM | 0x12);
    }

    #[test]
    fn the_clock_follows_the_time_source() {
        let now = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(SATURDAY_EVENING));
        let src = now.clone();
        let mut c = Cmos::new(
            256 * MIB,
            Box::new(move || src.load(std::sync::atomic::Ordering::SeqCst)),
        );
        assert_eq!(get(&mut c, RTC_SECONDS), 0x45);
        now.fetch_add(10, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(get(&mut c, RTC_SECONDS), 0x55);
    }

    #[test]
    fn status_registers() {
        let mut c = cmos_at(SATURDAY_EVENING);
        assert_eq!(get(&mut c, REG_A) & REG_A_UIP, 0);
        set(&mut c, REG_A, 0xA6);
        assert_eq!(get(&mut c, REG_A), 0x26, "UIP is read-only and never stuck");
        assert_eq!(get(&mut c, REG_B), REG_B_24H);
        assert_eq!(get(&mut c, REG_C), 0);
        assert_eq!(get(&mut c, REG_D), REG_D_VRT);
        set(&mut c, REG_D, 0);
        assert_eq!(get(&mut c, REG_D), REG_D_VRT);
    }

    #[test]
    fn memory_fields_for_256_mib() {
        let mut c = cmos_at(0);
        assert_eq!(get16(&mut c, BASE_MEM_LO), 640);
        assert_eq!(get16(&mut c, EXT_MEM_LO), 0xFFFF);
        assert_eq!(get16(&mut c, POST_EXT_MEM_LO), 0xFFFF);
        assert_eq!(get16(&mut c, HIGH_MEM_LO), (240 * MIB / (64 * KIB)) as u16);
    }

    #[test]
    fn memory_fields_for_small_ram() {
        let mut c = Cmos::new(8 * MIB, Box::new(|| 0));
        assert_eq!(get16(&mut c, BASE_MEM_LO), 640);
        assert_eq!(get16(&mut c, EXT_MEM_LO), 7 * 1024);
        assert_eq!(get16(&mut c, HIGH_MEM_LO), 0);
    }

    #[test]
    fn the_checksum_covers_0x10_to_0x2d() {
        let mut c = cmos_at(0);
        let sum = |c: &mut Cmos| CHECKSUM_RANGE.map(|i| u16::from(get(c, i))).sum::<u16>();
        let stored =
            |c: &mut Cmos| u16::from_be_bytes([get(c, CHECKSUM_HI), get(c, CHECKSUM_HI + 1)]);
        assert_eq!(stored(&mut c), sum(&mut c));
        set(&mut c, 0x20, 0x5A);
        assert_eq!(stored(&mut c), sum(&mut c));
    }

    #[test]
    fn ram_bytes_read_back() {
        let mut c = cmos_at(0);
        for (i, index) in [0x0E, 0x40, 0x7F].into_iter().enumerate() {
            set(&mut c, index, 0xA0 + i as u8);
        }
        assert_eq!(get(&mut c, 0x0E), 0xA0);
        assert_eq!(get(&mut c, 0x40), 0xA1);
        assert_eq!(get(&mut c, 0x7F), 0xA2);
    }

    #[test]
    fn time_writes_do_not_change_the_clock() {
        let mut c = cmos_at(SATURDAY_EVENING);
        set(&mut c, RTC_MINUTES, 0x01);
        assert_eq!(get(&mut c, RTC_MINUTES), 0x30);
    }

    #[test]
    fn nmi_disable_bit_is_not_part_of_the_index() {
        let mut c = cmos_at(SATURDAY_EVENING);
        c.write(INDEX.into(), 0, &[NMI_DISABLE | RTC_MINUTES]);
        assert!(c.nmi_disabled());
        let mut b = [0u8; 1];
        c.read(INDEX.into(), 1, &mut b);
        assert_eq!(b[0], 0x30);
        c.write(INDEX.into(), 0, &[RTC_SECONDS]);
        assert!(!c.nmi_disabled());
    }

    #[test]
    fn a_word_write_sets_index_then_data() {
        let mut c = cmos_at(0);
        c.write(INDEX.into(), 0, &[0x50, 0x77]);
        assert_eq!(get(&mut c, 0x50), 0x77);
    }

    #[test]
    fn host_time_is_after_2020() {
        assert!(Cmos::host_time() > 1_577_836_800);
    }
}
