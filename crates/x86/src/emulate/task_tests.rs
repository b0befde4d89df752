//! Task switches through the emulator: far JMP and CALL to a TSS and
//! through task gates, IRET with NT, INT n and exceptions through task
//! gates in the IDT (x86::task does the switch).

use super::testing::*;
use super::{Failure, Unsupported};
use crate::descriptor::{tss32, Descriptor, Gate, GateKind, Tss32};
use crate::interrupt::{deliver_event, Event, Exception, LinearMemory};
use crate::state::{cr0, flags, CpuState};
use crate::task::DR6_BT;
use crate::Segment;

/// A task gate (DPL 0) to the available TSS.
const GATE: u16 = 0x78;
/// A TSS whose limit is below 0x67.
const SHORT_TSS: u16 = 0x80;
/// A 16-bit available TSS.
const TSS16: u16 = 0x88;
/// A task gate usable from CPL 3, to the available TSS.
const USER_GATE: u16 = 0x90;
/// A not-present available TSS.
const TSS_NP: u16 = 0x98;
const ENTRIES: u32 = 20;
/// Where the new task starts.
const TASK_EIP: u32 = 0x6100;
const TASK_ESP: u32 = 0xA000;
const SPARE_TSS: u32 = 0x3C00;

fn task_gate(tss: u16, dpl: u8) -> Descriptor {
    let g = Gate {
        kind: GateKind::Task,
        size32: true,
        selector: tss,
        offset: 0,
        dpl,
        present: true,
        param_count: 0,
    };
    Descriptor::from_bytes(g.to_bytes())
}

/// The test machine with a second task in the available TSS (TSS2) and
/// distinct registers in the running one.
fn tasks() -> (CpuState, crate::interrupt::testing::Flat) {
    let (mut cpu, mut m) = machine();
    cpu.gdtr.limit = (ENTRIES * 8 - 1) as u16;
    set_gdt(&mut m, GATE, task_gate(TSS_AVAIL, 0));
    set_gdt(&mut m, SHORT_TSS, system(0x9, SPARE_TSS, 0x50));
    set_gdt(&mut m, TSS16, system(0x1, SPARE_TSS, 0x2B));
    set_gdt(&mut m, USER_GATE, task_gate(TSS_AVAIL, 3));
    let mut np = system(0x9, SPARE_TSS, 0x67);
    np.present = false;
    set_gdt(&mut m, TSS_NP, np);
    let new = Tss32 {
        cr3: 0x0001_2000,
        eip: TASK_EIP,
        eflags: flags::FIXED1 | flags::CF,
        eax: 0xA1,
        ecx: 0xC1,
        edx: 0xD1,
        ebx: 0xB1,
        esp: TASK_ESP,
        ebp: 0xBB,
        esi: 0x51,
        edi: 0xD7,
        es: KDATA,
        cs: KCODE,
        ss: KDATA,
        ds: KDATA,
        fs: 0,
        gs: KDATA,
        ldt: LDT_SEL,
        ..Tss32::default()
    };
    m.write(TSS2, &new.to_bytes()).unwrap();
    // A switch never stores the LDT selector: the running task's TSS holds it.
    write16(&mut m, TSS + tss32::LDT as u32, LDT_SEL);
    cpu.eax = 0x11;
    cpu.ecx = 0x22;
    cpu.edx = 0x33;
    cpu.ebx = 0x44;
    cpu.ebp = 0x55;
    cpu.esi = 0x66;
    cpu.edi = 0x77;
    cpu.eflags |= flags::ZF;
    (cpu, m)
}

fn tss(m: &mut crate::interrupt::testing::Flat, base: u32) -> Tss32 {
    let mut b = [0; 104];
    m.read(base, &mut b).unwrap();
    Tss32::from_bytes(&b).unwrap()
}

/// Checks that the new task's registers are loaded.
fn in_new_task(cpu: &CpuState) {
    assert_eq!(cpu.tr.selector, TSS_AVAIL);
    assert_eq!(
        (cpu.tr.base, cpu.tr.typ),
        (TSS2, 0xB),
        "TR caches the busy TSS"
    );
    assert_eq!(cpu.eip, TASK_EIP);
    assert_eq!(
        [cpu.eax, cpu.ecx, cpu.edx, cpu.ebx, cpu.esp, cpu.ebp, cpu.esi, cpu.edi],
        [0xA1, 0xC1, 0xD1, 0xB1, TASK_ESP, 0xBB, 0x51, 0xD7]
    );
    assert_eq!(cpu.cs, flat(0xB, 0).to_segment(KCODE));
    assert_eq!(cpu.ss, flat(0x3, 0).to_segment(KDATA));
    assert_eq!(cpu.fs, Segment::unusable());
    assert_eq!(cpu.ldtr.selector, LDT_SEL);
    assert!(cpu.ldtr.present);
    assert_ne!(cpu.cr0 & cr0::TS, 0, "a switch sets CR0.TS");
}

/// Checks that the old task's state went to its TSS, resuming at `eip`.
fn saved(m: &mut crate::interrupt::testing::Flat, before: &CpuState, eip: u32, eflags: u32) {
    let t = tss(m, TSS);
    assert_eq!(t.eip, eip);
    assert_eq!(t.eflags, eflags);
    assert_eq!(
        [t.eax, t.ecx, t.edx, t.ebx, t.esp, t.ebp, t.esi, t.edi],
        [
            before.eax, before.ecx, before.edx, before.ebx, before.esp, before.ebp, before.esi,
            before.edi
        ]
    );
    assert_eq!(
        [t.es, t.cs, t.ss, t.ds, t.fs, t.gs],
        [KDATA, KCODE, KDATA, KDATA, KDATA, KDATA]
    );
}

#[test]
fn jmp_to_a_tss_saves_the_old_task_and_loads_the_new() {
    let (mut cpu, mut m) = tasks();
    let before = cpu.clone();
    let eff = ok(
        &mut cpu,
        &mut m,
        &[0xEA, 0x78, 0x56, 0x34, 0x12, 0x30, 0x00],
    );
    in_new_task(&cpu);
    assert_eq!(
        cpu.eflags,
        flags::FIXED1 | flags::CF,
        "EFLAGS as the TSS has them, no NT"
    );
    assert_eq!(cpu.cr3, before.cr3, "paging off: CR3 is not loaded");
    saved(&mut m, &before, CODE + 7, before.eflags);
    assert_eq!(
        gdt_entry(&mut m, TSS_BUSY).typ,
        0x9,
        "JMP frees the old task"
    );
    assert_eq!(gdt_entry(&mut m, TSS_AVAIL).typ, 0xB, "the new one is busy");
    assert_eq!(tss(&mut m, TSS2).link, 0, "no back link");
    // Same CS base and CPL: the translation context does not change.
    assert!(eff.branched && eff.segments_changed && eff.tables_changed);
    assert_eq!(eff.delivered, None);
}

#[test]
fn call_through_a_task_gate_nests_and_iret_returns() {
    let (mut cpu, mut m) = tasks();
    let before = cpu.clone();
    ok(&mut cpu, &mut m, &[0x9A, 0, 0, 0, 0, 0x78, 0x00]);
    in_new_task(&cpu);
    assert_ne!(cpu.eflags & flags::NT, 0, "CALL sets NT");
    assert_eq!(tss(&mut m, TSS2).link, TSS_BUSY, "back link to the caller");
    assert_eq!(
        gdt_entry(&mut m, TSS_BUSY).typ,
        0xB,
        "the caller stays busy"
    );
    saved(&mut m, &before, CODE + 7, before.eflags);
    // The new task changes a register and returns.
    cpu.eax = 0xFEED;
    let eff = ok(&mut cpu, &mut m, &[0xCF]);
    assert_eq!(cpu.tr.selector, TSS_BUSY);
    assert_eq!(cpu.eip, CODE + 7);
    assert_eq!(cpu.eflags, before.eflags);
    assert_eq!(
        (cpu.eax, cpu.esp, cpu.edi),
        (before.eax, before.esp, before.edi)
    );
    assert_eq!(cpu.ldtr, before.ldtr, "the TSS's LDT, the same one");
    assert_eq!(
        gdt_entry(&mut m, TSS_AVAIL).typ,
        0x9,
        "IRET frees the callee"
    );
    let callee = tss(&mut m, TSS2);
    assert_eq!(
        callee.eip,
        TASK_EIP + 1,
        "the callee resumes after its IRET"
    );
    assert_eq!(callee.eax, 0xFEED);
    assert_eq!(callee.eflags & flags::NT, 0, "its saved NT is clear");
    assert!(eff.tables_changed && eff.branched);
    // Calling it again starts after its IRET.
    ok(&mut cpu, &mut m, &[0x9A, 0, 0, 0, 0, 0x30, 0x00]);
    assert_eq!((cpu.eip, cpu.eax), (TASK_EIP + 1, 0xFEED));
}

#[test]
fn a_switch_loads_cr3_with_paging_on() {
    let (mut cpu, mut m) = tasks();
    cpu.cr0 |= cr0::PG;
    let eff = ok(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x30, 0x00]);
    assert_eq!(cpu.cr3, 0x0001_2000);
    assert!(eff.cr3_written);
}

#[test]
fn busy_privileged_short_and_absent_tsses_fault_before_the_switch() {
    let (mut cpu, mut m) = tasks();
    assert_eq!(
        fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x28, 0]),
        gp(TSS_BUSY)
    );
    assert_eq!(
        fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, SHORT_TSS as u8, 0]),
        Exception::with_code(vector::TS, u32::from(SHORT_TSS))
    );
    assert_eq!(
        fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, TSS_NP as u8, 0]),
        Exception::with_code(vector::NP, u32::from(TSS_NP))
    );
    // RPL 3 above the TSS's DPL 0.
    assert_eq!(
        fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x33, 0]),
        gp(TSS_AVAIL)
    );
    assert_eq!(
        run1(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, TSS16 as u8, 0]),
        Err(Failure::Unsupported(Unsupported::Feature(
            "task switch to a 16-bit TSS"
        )))
    );
    let (mut cpu, mut m) = tasks();
    let ucode = flat(0xB, 3).to_segment(UCODE);
    cpu.cs = ucode;
    assert_eq!(
        fault(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x78, 0]),
        gp(GATE)
    );
    // A DPL-3 gate lets CPL 3 in; the new task runs at the CPL its CS says.
    ok(
        &mut cpu,
        &mut m,
        &[0xEA, 0, 0, 0, 0, USER_GATE as u8 | 3, 0],
    );
    assert_eq!((cpu.tr.selector, cpu.cpl()), (TSS_AVAIL, 0));
}

#[test]
fn a_bad_segment_in_the_new_task_faults_in_its_context() {
    let (mut cpu, mut m) = tasks();
    write16(&mut m, TSS2 + tss32::DS as u32, NOT_PRESENT);
    let eff = ok(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x30, 0x00]);
    let np = Exception::with_code(vector::NP, u32::from(NOT_PRESENT));
    assert_eq!(eff.delivered, Some(np));
    assert_eq!(cpu.tr.selector, TSS_AVAIL, "the switch is done");
    assert_eq!(cpu.eip, HANDLERS + 11 * 16);
    assert_eq!(cpu.esp, TASK_ESP - 16, "on the new task's stack");
    assert_eq!(read32(&mut m, cpu.esp), u32::from(NOT_PRESENT));
    assert_eq!(
        read32(&mut m, cpu.esp + 4),
        TASK_EIP,
        "before its first instruction"
    );
    assert_eq!(
        cpu.ds.selector, NOT_PRESENT,
        "the selector, with no segment"
    );
    assert!(!cpu.ds.present);
}

#[test]
fn the_t_bit_raises_a_debug_trap_in_the_new_task() {
    let (mut cpu, mut m) = tasks();
    m.write(TSS2 + tss32::TRAP as u32, &[1]).unwrap();
    let eff = ok(&mut cpu, &mut m, &[0xEA, 0, 0, 0, 0, 0x30, 0x00]);
    assert_eq!(eff.delivered, Some(Exception::plain(vector::DB)));
    assert_ne!(cpu.dr[6] & DR6_BT, 0);
    assert_eq!(cpu.eip, HANDLERS + 16);
    assert_eq!(read32(&mut m, cpu.esp), TASK_EIP);
}

#[test]
fn int_n_through_a_task_gate_nests() {
    let (mut cpu, mut m) = tasks();
    let g = Gate::from_bytes(task_gate(TSS_AVAIL, 0).to_bytes()).unwrap();
    m.write(IDT + 8 * 0x40, &g.to_bytes()).unwrap();
    let before = cpu.clone();
    ok(&mut cpu, &mut m, &[0xCD, 0x40]);
    in_new_task(&cpu);
    assert_eq!(cpu.esp, TASK_ESP, "INT n pushes nothing on the new stack");
    assert_ne!(cpu.eflags & flags::NT, 0);
    assert_eq!(tss(&mut m, TSS2).link, TSS_BUSY);
    saved(&mut m, &before, CODE + 2, before.eflags);
}

#[test]
fn a_double_fault_through_a_task_gate_pushes_its_error_code() {
    let (mut cpu, mut m) = tasks();
    let g = Gate::from_bytes(task_gate(TSS_AVAIL, 0).to_bytes()).unwrap();
    m.write(IDT + 8 * 8, &g.to_bytes()).unwrap();
    let at = cpu.eip;
    deliver_event(&mut cpu, &mut m, vector::DF, Event::Exception(Some(0))).unwrap();
    assert_eq!(cpu.tr.selector, TSS_AVAIL);
    assert_eq!(cpu.eip, TASK_EIP);
    assert_eq!(cpu.esp, TASK_ESP - 4);
    assert_eq!(read32(&mut m, cpu.esp), 0, "the #DF error code");
    assert_eq!(
        tss(&mut m, TSS).eip,
        at,
        "the old task resumes at the fault"
    );
}

#[test]
fn iret_with_nt_to_a_free_task_is_ts() {
    let (mut cpu, mut m) = tasks();
    cpu.eflags |= flags::NT;
    write16(&mut m, TSS + tss32::LINK as u32, TSS_AVAIL);
    assert_eq!(
        fault(&mut cpu, &mut m, &[0xCF]),
        Exception::with_code(vector::TS, u32::from(TSS_AVAIL))
    );
    write16(&mut m, TSS + tss32::LINK as u32, 0);
    assert_eq!(
        fault(&mut cpu, &mut m, &[0xCF]),
        Exception::with_code(vector::TS, 0)
    );
}
