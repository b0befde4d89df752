//! A small protected-mode machine for the emulator's unit tests: flat
//! memory with a GDT, LDT, IDT and TSS, and a platform that logs port I/O.

use std::collections::VecDeque;

use super::{execute, fetch, Effects, Failure, Platform};
use crate::cpuid::CpuidModel;
use crate::descriptor::{tss32, Descriptor, Gate, GateKind};
use crate::interrupt::testing::Flat;
use crate::interrupt::{Exception, LinearMemory};
use crate::msr::MsrFile;
use crate::state::{cr0, flags, CpuState, Segment, TableRegister};

pub use crate::interrupt::vector;

/// Where the tables sit.
pub const GDT: u32 = 0x1000;
pub const IDT: u32 = 0x2000;
pub const TSS: u32 = 0x3000;
pub const TSS2: u32 = 0x3800;
pub const LDT: u32 = 0x4000;
/// Where test code runs.
pub const CODE: u32 = 0x6000;
/// Initial ESP.
pub const STACK: u32 = 0x8000;
/// Handler entry of vector v is HANDLERS + 16 * v.
pub const HANDLERS: u32 = 0x5000;

/// GDT selectors.
pub const KCODE: u16 = 0x08;
pub const KDATA: u16 = 0x10;
pub const UCODE: u16 = 0x1B;
pub const UDATA: u16 = 0x23;
pub const TSS_BUSY: u16 = 0x28;
pub const TSS_AVAIL: u16 = 0x30;
pub const LDT_SEL: u16 = 0x38;
pub const RODATA: u16 = 0x40;
pub const NOT_PRESENT: u16 = 0x48;
pub const CONFORMING: u16 = 0x50;
pub const CODE16: u16 = 0x58;
pub const CALL_GATE: u16 = 0x60;
pub const XONLY: u16 = 0x68;
pub const UCODE_NP: u16 = 0x73;
pub const GDT_ENTRIES: u32 = 15;
/// LDT selectors: a DPL-0 data segment and a DPL-3 one.
pub const LDATA0: u16 = 0x04;
pub const LDATA3: u16 = 0x0F;
/// Offset of the I/O bitmap inside the current TSS.
pub const IOMAP: u32 = 0x68;

pub use crate::interrupt::testing::flat;

/// A byte-granular system descriptor.
pub fn system(typ: u8, base: u32, limit: u32) -> Descriptor {
    Descriptor {
        base,
        limit,
        typ,
        s: false,
        dpl: 0,
        present: true,
        avl: false,
        l: false,
        db: false,
        g: false,
    }
}

/// Writes descriptor `d` into the GDT slot `sel` names.
pub fn set_gdt(m: &mut Flat, sel: u16, d: Descriptor) {
    m.write(GDT + u32::from(sel & !7), &d.to_bytes()).unwrap();
}

/// The descriptor in the GDT slot `sel` names.
pub fn gdt_entry(m: &mut Flat, sel: u16) -> Descriptor {
    let mut b = [0; 8];
    m.read(GDT + u32::from(sel & !7), &mut b).unwrap();
    Descriptor::from_bytes(b)
}

pub fn read32(m: &mut Flat, at: u32) -> u32 {
    let mut b = [0; 4];
    m.read(at, &mut b).unwrap();
    u32::from_le_bytes(b)
}

pub fn read16(m: &mut Flat, at: u32) -> u16 {
    let mut b = [0; 2];
    m.read(at, &mut b).unwrap();
    u16::from_le_bytes(b)
}

pub fn poke(m: &mut Flat, at: u32, bytes: &[u8]) {
    m.write(at, bytes).unwrap();
}

pub fn write32(m: &mut Flat, at: u32, v: u32) {
    m.write(at, &v.to_le_bytes()).unwrap();
}

pub fn write16(m: &mut Flat, at: u32, v: u16) {
    m.write(at, &v.to_le_bytes()).unwrap();
}

/// A CPL-0 protected-mode CPU over the tables above, IF set, EIP at CODE.
pub fn machine() -> (CpuState, Flat) {
    let mut m = Flat(vec![0; 0x30000]);
    let mut not_present = flat(0x2, 0);
    not_present.present = false;
    let mut code16 = flat(0xA, 0);
    code16.base = 0x10000;
    code16.limit = 0xFFFF;
    code16.g = false;
    code16.db = false;
    let call_gate = Gate {
        kind: GateKind::Call,
        size32: true,
        selector: KCODE,
        offset: 0x1234,
        dpl: 3,
        present: true,
        param_count: 0,
    };
    let mut ucode_np = flat(0xA, 3);
    ucode_np.present = false;
    let entries: [u64; GDT_ENTRIES as usize] = [
        0,
        flat(0xA, 0).to_u64(),
        flat(0x2, 0).to_u64(),
        flat(0xA, 3).to_u64(),
        flat(0x2, 3).to_u64(),
        system(0xB, TSS, IOMAP + 0x80).to_u64(),
        system(0x9, TSS2, 0x67).to_u64(),
        system(0x2, LDT, 0xF).to_u64(),
        flat(0x0, 0).to_u64(),
        not_present.to_u64(),
        flat(0xE, 0).to_u64(),
        code16.to_u64(),
        call_gate.to_u64(),
        flat(0x8, 0).to_u64(),
        ucode_np.to_u64(),
    ];
    for (i, e) in entries.iter().enumerate() {
        m.write(GDT + 8 * i as u32, &e.to_le_bytes()).unwrap();
    }
    m.write(LDT, &flat(0x2, 0).to_bytes()).unwrap();
    m.write(LDT + 8, &flat(0x2, 3).to_bytes()).unwrap();
    for v in 0..=255u32 {
        let mut g = Gate::interrupt32(KCODE, HANDLERS + v * 16, 0);
        if v == 0x80 || v == 3 || v == 4 {
            g.kind = GateKind::Trap;
            g.dpl = 3;
        }
        m.write(IDT + 8 * v, &g.to_bytes()).unwrap();
    }
    write32(&mut m, TSS + tss32::ESP0 as u32, 0x9000);
    write32(&mut m, TSS + tss32::SS0 as u32, u32::from(KDATA));
    write16(&mut m, TSS + tss32::IOMAP_BASE as u32, IOMAP as u16);
    // Every port denied except 0x3F8-0x3FF.
    m.write(TSS + IOMAP, &[0xFF; 0x81]).unwrap();
    m.write(TSS + IOMAP + 0x3F8 / 8, &[0]).unwrap();

    let mut cpu = CpuState::reset();
    cpu.cr0 = cr0::PE | cr0::ET;
    cpu.gdtr = TableRegister {
        base: GDT,
        limit: (GDT_ENTRIES * 8 - 1) as u16,
    };
    cpu.idtr = TableRegister {
        base: IDT,
        limit: 256 * 8 - 1,
    };
    cpu.tr = system(0xB, TSS, IOMAP + 0x80).to_segment(TSS_BUSY);
    cpu.ldtr = system(0x2, LDT, 0xF).to_segment(LDT_SEL);
    cpu.cs = Segment::flat_code32(KCODE);
    cpu.ss = Segment::flat_data32(KDATA);
    cpu.ds = cpu.ss;
    cpu.es = cpu.ss;
    cpu.fs = cpu.ss;
    cpu.gs = cpu.ss;
    cpu.esp = STACK;
    cpu.eip = CODE;
    cpu.eflags = flags::FIXED1 | flags::IF;
    (cpu, m)
}

/// The same machine running at CPL 3 with user segments.
pub fn user_machine() -> (CpuState, Flat) {
    let (mut cpu, m) = machine();
    cpu.cs = flat(0xB, 3).to_segment(UCODE);
    cpu.ss = flat(0x3, 3).to_segment(UDATA);
    cpu.ds = cpu.ss;
    cpu.es = cpu.ss;
    cpu.fs = cpu.ss;
    cpu.gs = cpu.ss;
    (cpu, m)
}

/// A platform with a port log, a queue of IN values and a fixed TSC.
pub struct TestPlatform {
    pub model: CpuidModel,
    pub msrs: MsrFile,
    pub apic_base: u64,
    pub tsc: u64,
    pub tsc_set: Option<u64>,
    /// OUTs as (port, size, value).
    pub outs: Vec<(u16, u8, u32)>,
    /// INs as (port, size).
    pub ins: Vec<(u16, u8)>,
    /// Values INs return, in order; all ones when empty (a floating bus).
    pub inputs: VecDeque<u32>,
}

impl Default for TestPlatform {
    fn default() -> Self {
        TestPlatform {
            model: CpuidModel::default(),
            msrs: MsrFile::default(),
            apic_base: crate::msr::apic_base::RESET,
            tsc: 0x0123_4567_89AB_CDEF,
            tsc_set: None,
            outs: Vec::new(),
            ins: Vec::new(),
            inputs: VecDeque::new(),
        }
    }
}

impl Platform for TestPlatform {
    fn io_in(&mut self, port: u16, size: u8) -> u32 {
        self.ins.push((port, size));
        self.inputs.pop_front().unwrap_or(u32::MAX) & super::operand::mask(size.into())
    }

    fn io_out(&mut self, port: u16, size: u8, value: u32) {
        self.outs.push((port, size, value));
    }

    fn tsc(&mut self) -> u64 {
        self.tsc
    }

    fn set_tsc(&mut self, value: u64) {
        self.tsc_set = Some(value);
    }

    fn cpuid(&self) -> &CpuidModel {
        &self.model
    }

    fn msrs(&mut self) -> &mut MsrFile {
        &mut self.msrs
    }

    fn apic_base(&mut self) -> u64 {
        self.apic_base
    }

    fn set_apic_base(&mut self, value: u64) {
        self.apic_base = value;
        self.model.apic = value & crate::msr::apic_base::EN != 0;
    }
}

/// Places `code` (one instruction) at CS:EIP, decodes and executes it.
pub fn run(
    cpu: &mut CpuState,
    m: &mut Flat,
    p: &mut TestPlatform,
    code: &[u8],
) -> Result<Effects, Failure> {
    m.write(cpu.linear_ip(), code).unwrap();
    let insn = fetch(cpu, m).unwrap();
    assert_eq!(insn.len(), code.len(), "test code must be one instruction");
    execute(cpu, m, p, &insn)
}

/// Runs `code` on a default platform.
pub fn run1(cpu: &mut CpuState, m: &mut Flat, code: &[u8]) -> Result<Effects, Failure> {
    run(cpu, m, &mut TestPlatform::default(), code)
}

/// Runs `code` expecting a fault: checks the state did not change and
/// returns the exception.
pub fn fault(cpu: &mut CpuState, m: &mut Flat, code: &[u8]) -> Exception {
    let before = cpu.clone();
    match run1(cpu, m, code) {
        Err(Failure::Fault(e)) => {
            assert_eq!(*cpu, before, "a fault leaves the state unchanged");
            e
        }
        other => panic!("expected a fault, got {other:?}"),
    }
}

/// Runs `code` expecting success and returns the effects.
pub fn ok(cpu: &mut CpuState, m: &mut Flat, code: &[u8]) -> Effects {
    run1(cpu, m, code).unwrap_or_else(|e| panic!("{e:?}"))
}

/// #GP(code).
pub fn gp(code: u16) -> Exception {
    Exception::gp(u32::from(code))
}

/// #UD.
pub fn ud() -> Exception {
    Exception::plain(vector::UD)
}
