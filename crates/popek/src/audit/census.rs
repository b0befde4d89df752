//! The census itself: a linear sweep over one range of 32-bit code,
//! counting what the classifier says about every instruction. No I/O, so
//! the counting is tested on hand-assembled bytes.

use iced_x86::{Code, Decoder, DecoderOptions, Instruction};
use x86::classify::{classify, Class, Kind};

/// How many kinds the classifier knows (`kind as usize` indexes census arrays).
pub const KINDS: usize = Kind::ALL.len();

/// Every class, in the order the report presents them: what traps, what a
/// trap-and-emulate monitor would miss, what a translator rewrites anyway,
/// and what it copies.
pub const CLASSES: [Class; 4] = [
    Class::Privileged,
    Class::SensitiveUnprivileged,
    Class::ControlFlow,
    Class::Innocuous,
];

/// What a linear sweep found in one range of code (or several, added up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Census {
    /// Bytes swept.
    pub bytes: u64,
    /// Instructions that decoded (invalid bytes not included).
    pub instructions: u64,
    /// Bytes that decoded to no instruction; the sweep skipped each one.
    pub invalid_bytes: u64,
    /// INT3s (counted under [`Kind::Int3`]) that no instruction falls
    /// through to: they follow a jump, a return, UD2 or such padding, and
    /// no symbol starts at them.
    /// Compilers and linkers fill the gaps between functions with 0xCC and
    /// put one after indirect jumps against straight-line speculation, so
    /// these are never executed; the report says how many, lest a reader
    /// take them for 17,000 breakpoints in a kernel.
    pub int3_padding: u64,
    counts: [u64; KINDS],
    first: [Option<u64>; KINDS],
}

impl Default for Census {
    fn default() -> Self {
        Census {
            bytes: 0,
            instructions: 0,
            invalid_bytes: 0,
            int3_padding: 0,
            counts: [0; KINDS],
            first: [None; KINDS],
        }
    }
}

impl Census {
    /// Decodes `code`, loaded at `address`, from its first byte to its last.
    ///
    /// A linear sweep cannot tell code from data, so data inside a code
    /// section is counted as whatever it decodes to; this is the usual
    /// price of a static census and the reason it reports "first address"
    /// for a human to check. An undecodable byte (or an instruction cut
    /// off by the end of the range) counts as one invalid byte and the
    /// sweep resumes at the next byte, so one bad byte cannot hide the
    /// instructions after it.
    ///
    /// `starts` (sorted addresses, such as an ELF's symbols; may be empty)
    /// are known to begin instructions: an instruction that would run
    /// across one is data in disguise (a multiboot header before `_start`,
    /// say), so its bytes up to the start count as invalid and the sweep
    /// restarts there, as objdump does.
    pub fn sweep(code: &[u8], address: u64, starts: &[u64]) -> Census {
        let mut census = Census {
            bytes: code.len() as u64,
            ..Census::default()
        };
        let end = address + code.len() as u64;
        let mut starts = starts
            .iter()
            .copied()
            .filter(|&s| s > address && s < end)
            .peekable();
        let mut decoder = Decoder::with_ip(32, code, address, DecoderOptions::NONE);
        let mut instr = Instruction::default();
        // Whether the previous instruction (if contiguous) falls through.
        let mut falls_through = true;
        while decoder.can_decode() {
            let offset = decoder.position();
            let ip = address + offset as u64;
            while let Some(s) = starts.next_if(|&s| s <= ip) {
                // A symbol is somebody's target: what starts there is
                // reachable, whatever precedes it (do_int3: int3, say).
                falls_through |= s == ip;
            }
            decoder.decode_out(&mut instr);
            let skip_to = if instr.code() == Code::INVALID {
                Some(ip + 1)
            } else {
                starts.peek().copied().filter(|&s| s < instr.next_ip())
            };
            if let Some(resume) = skip_to {
                census.invalid_bytes += resume - ip;
                census.note(Kind::Invalid, ip, resume - ip);
                let next = (resume - address) as usize;
                decoder
                    .set_position(next)
                    .expect("the resume point is within the range");
                decoder.set_ip(resume);
                falls_through = true;
                continue;
            }
            census.instructions += 1;
            let kind = classify(&instr).kind;
            census.note(kind, ip, 1);
            falls_through = match kind {
                Kind::Jmp
                | Kind::JmpIndirect
                | Kind::Ret
                | Kind::Ud
                | Kind::FarJmp
                | Kind::FarRet
                | Kind::Iret => false,
                Kind::Int3 if !falls_through => {
                    census.int3_padding += 1;
                    false
                }
                _ => true,
            };
        }
        census
    }

    fn note(&mut self, kind: Kind, address: u64, n: u64) {
        let i = kind as usize;
        self.counts[i] += n;
        self.first[i].get_or_insert(address);
    }

    /// Adds another range's census to this one (the first address of a
    /// kind becomes the lower of the two).
    pub fn add(&mut self, other: &Census) {
        self.bytes += other.bytes;
        self.instructions += other.instructions;
        self.invalid_bytes += other.invalid_bytes;
        self.int3_padding += other.int3_padding;
        for i in 0..KINDS {
            self.counts[i] += other.counts[i];
            self.first[i] = match (self.first[i], other.first[i]) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    /// How many instructions of `kind` were found (for [`Kind::Invalid`],
    /// how many invalid bytes).
    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind as usize]
    }

    /// The lowest address where `kind` was found.
    pub fn first(&self, kind: Kind) -> Option<u64> {
        self.first[kind as usize]
    }

    /// How many decoded instructions belong to `class`. Invalid bytes are
    /// left out: they are not instructions, though the translator would
    /// treat them as a #UD-raising control transfer.
    pub fn class_count(&self, class: Class) -> u64 {
        Kind::ALL
            .iter()
            .filter(|k| k.class() == class && **k != Kind::Invalid)
            .map(|k| self.count(*k))
            .sum()
    }

    /// The kinds of `class` that occur, most frequent first (ties in the
    /// classifier's order), without [`Kind::Invalid`].
    pub fn kinds_in(&self, class: Class) -> Vec<Kind> {
        let mut kinds: Vec<Kind> = Kind::ALL
            .iter()
            .copied()
            .filter(|k| k.class() == class && *k != Kind::Invalid && self.count(*k) > 0)
            .collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(self.count(*k)));
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sweep with no known instruction starts.
    fn of(code: &[u8], address: u64) -> Census {
        Census::sweep(code, address, &[])
    }

    /// The kinds present with their counts, in the classifier's order.
    fn present(c: &Census) -> Vec<(Kind, u64)> {
        Kind::ALL
            .iter()
            .filter(|k| c.count(**k) > 0)
            .map(|k| (*k, c.count(*k)))
            .collect()
    }

    #[test]
    fn each_sensitive_and_privileged_sample_is_one_kind() {
        let code: &[u8] = &[
            0xFA, // cli
            0x9C, // pushf
            0x9D, // popf
            0x0F, 0x01, 0x0D, 0x00, 0x20, 0x00, 0x00, // sidt [0x2000]
            0x0F, 0x01, 0x05, 0x00, 0x20, 0x00, 0x00, // sgdt [0x2000]
            0x0F, 0x01, 0xE0, // smsw eax
            0xCD, 0x80, // int 0x80
            0x0F, 0x22, 0xC0, // mov cr0, eax
            0x0F, 0x20, 0xC0, // mov eax, cr0
            0x0F, 0x02, 0xC1, // lar eax, ecx
            0x8E, 0xD8, // mov ds, eax
            0x8C, 0xC8, // mov eax, cs
            0xE6, 0x80, // out 0x80, al
            0xF4, // hlt
            0x90, // nop
            0x89, 0xC3, // mov ebx, eax
            0xC3, // ret
        ];
        let c = of(code, 0x100000);
        assert_eq!(c.bytes, code.len() as u64);
        assert_eq!(c.instructions, 17);
        assert_eq!(c.invalid_bytes, 0);
        assert_eq!(
            present(&c),
            vec![
                (Kind::Ident, 2),
                (Kind::Ret, 1),
                (Kind::Popf, 1),
                (Kind::Pushf, 1),
                (Kind::Sgdt, 1),
                (Kind::Sidt, 1),
                (Kind::Smsw, 1),
                (Kind::Lar, 1),
                (Kind::MovToSreg, 1),
                (Kind::MovFromSreg, 1),
                (Kind::Int, 1),
                (Kind::Cli, 1),
                (Kind::Hlt, 1),
                (Kind::InOut, 1),
                (Kind::MovCr, 2),
            ]
        );
        assert_eq!(c.class_count(Class::Privileged), 5);
        assert_eq!(c.class_count(Class::SensitiveUnprivileged), 9);
        assert_eq!(c.class_count(Class::ControlFlow), 1);
        assert_eq!(c.class_count(Class::Innocuous), 2);
    }

    #[test]
    fn first_address_is_where_the_kind_first_occurs() {
        // nop; pushf; nop; pushf; cli
        let c = of(&[0x90, 0x9C, 0x90, 0x9C, 0xFA], 0xC000_0000);
        assert_eq!(c.count(Kind::Pushf), 2);
        assert_eq!(c.first(Kind::Pushf), Some(0xC000_0001));
        assert_eq!(c.first(Kind::Cli), Some(0xC000_0004));
        assert_eq!(c.first(Kind::Sti), None);
    }

    #[test]
    fn kinds_are_listed_most_frequent_first() {
        // cli; hlt; hlt; out dx, al; hlt
        let c = of(&[0xFA, 0xF4, 0xF4, 0xEE, 0xF4], 0);
        assert_eq!(
            c.kinds_in(Class::Privileged),
            vec![Kind::Hlt, Kind::Cli, Kind::InOut]
        );
        assert!(c.kinds_in(Class::SensitiveUnprivileged).is_empty());
    }

    #[test]
    fn invalid_bytes_are_skipped_one_at_a_time() {
        // 0F 04 is an undefined opcode.
        let code: &[u8] = &[0x0F, 0x04, 0xFA, 0x9C];
        let c = of(code, 0x1000);
        // 0F 04 is invalid: one byte skipped; then 04 FA is `add al, 0xFA`;
        // then 9C pushf. The resync found the pushf.
        assert_eq!(c.invalid_bytes, 1);
        assert_eq!(c.first(Kind::Invalid), Some(0x1000));
        assert_eq!(c.count(Kind::Ident), 1);
        assert_eq!(c.count(Kind::Pushf), 1);
        assert_eq!(c.first(Kind::Pushf), Some(0x1003));
        assert_eq!(c.instructions, 2);
        assert_eq!(
            c.class_count(Class::ControlFlow),
            0,
            "invalid is not an instruction"
        );
    }

    #[test]
    fn an_instruction_cut_off_at_the_end_counts_as_invalid_bytes() {
        // pushf, then the first two bytes of sidt [disp32].
        let c = of(&[0x9C, 0x0F, 0x01], 0);
        assert_eq!(c.count(Kind::Pushf), 1);
        // 0F 01 alone is cut off; resync at 01, which needs a modrm too.
        assert_eq!(c.invalid_bytes, 2);
        assert_eq!(c.instructions, 1);
    }

    #[test]
    fn a_known_start_cuts_off_the_instruction_running_across_it() {
        // A header's last byte E4 (IN AL, imm8) would swallow the CLI at
        // 0x1001, where a symbol says an instruction starts.
        let code = &[0xE4, 0xFA, 0x9C];
        let blind = of(code, 0x1000);
        assert_eq!(blind.count(Kind::InOut), 1);
        assert_eq!(blind.count(Kind::Cli), 0);
        let c = Census::sweep(code, 0x1000, &[0x0800, 0x1000, 0x1001, 0x1003, 0x9000]);
        assert_eq!(c.count(Kind::InOut), 0);
        assert_eq!(c.count(Kind::Cli), 1);
        assert_eq!(c.first(Kind::Cli), Some(0x1001));
        assert_eq!(c.count(Kind::Pushf), 1);
        assert_eq!(c.invalid_bytes, 1);
        assert_eq!(c.first(Kind::Invalid), Some(0x1000));
        assert_eq!(c.instructions, 2);
    }

    #[test]
    fn a_start_cutting_a_long_instruction_counts_every_byte_before_it() {
        // sidt [0x2000] is 7 bytes; a start 2 bytes in leaves 2 invalid
        // bytes, then 0D 00 20 00 00 decodes as `or eax, 0x2000`.
        let code = &[0x0F, 0x01, 0x0D, 0x00, 0x20, 0x00, 0x00];
        let c = Census::sweep(code, 0, &[2]);
        assert_eq!(c.invalid_bytes, 2);
        assert_eq!(c.count(Kind::Sidt), 0);
        assert_eq!(c.count(Kind::Ident), 1);
    }

    #[test]
    fn int3_after_a_jump_or_return_is_padding() {
        // int3; ret; int3; int3; nop; jmp eax; int3; ud2; int3; int3
        let code = &[
            0xCC, 0xC3, 0xCC, 0xCC, 0x90, 0xFF, 0xE0, 0xCC, 0x0F, 0x0B, 0xCC, 0xCC,
        ];
        let c = of(code, 0);
        assert_eq!(c.count(Kind::Int3), 6);
        assert_eq!(
            c.int3_padding, 5,
            "only the first int3 can be reached in sequence"
        );
        let mut twice = c.clone();
        twice.add(&c);
        assert_eq!(twice.int3_padding, 10);
        // A symbol at the second int3 makes it reachable, and the third
        // with it: a real INT3 returns to the next instruction.
        assert_eq!(Census::sweep(code, 0, &[2]).int3_padding, 3);
    }

    #[test]
    fn empty_code_is_an_empty_census() {
        let c = of(&[], 0);
        assert_eq!(c, Census::default());
    }

    #[test]
    fn adding_censuses_sums_counts_and_keeps_the_lowest_first_address() {
        let mut a = of(&[0x9C, 0xFA], 0x2000); // pushf @0x2000, cli @0x2001
        let b = of(&[0xFA, 0x9D], 0x1000); // cli @0x1000, popf @0x1001
        a.add(&b);
        assert_eq!(a.bytes, 4);
        assert_eq!(a.instructions, 4);
        assert_eq!(a.count(Kind::Cli), 2);
        assert_eq!(a.first(Kind::Cli), Some(0x1000));
        assert_eq!(a.first(Kind::Pushf), Some(0x2000));
        assert_eq!(a.first(Kind::Popf), Some(0x1001));
    }
}
