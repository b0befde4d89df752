//! Inline CLI, STI, PUSHF, POPF and the reads of selectors and control
//! registers run for real: a block of guest kernel
//! code is translated, entered through the monitor and must leave the
//! virtual CPU's flags exactly as the instructions define them, without
//! letting a guest system bit reach the host EFLAGS. `tc_round_trip_cost`
//! measures one world switch into translated code and back. One scenario
//! per child process, as in `direct_exec.rs`: the monitor is process-wide.

use std::process::Command;

use bt::cache::{
    BlockId, BlockKey, CodeBuffer, Context, GuestPage, IndirectTable, TranslationCache,
};
use bt::contract::{ExitReason, Layout};
use bt::monitor::{Monitor, TcExit};
use bt::translate::{self, Translator};
use machine::GuestMemory;
use x86::state::{cr0, flags};
use x86::{CpuState, Segment};

const CHILD_ENV: &str = "POPEK_BT_CHILD";
const RAM: u64 = 4 << 20;
const CODE: u32 = 0x10_0000;
const STACK_TOP: u32 = 0x3F_F000;

/// Runs `body` in a fresh child process (this test binary, filtered to
/// `name`) and fails if the child fails.
fn in_child(name: &str, body: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        body();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("spawn the child test process");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "child for {name} failed: {}",
        out.status
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "the child did not run {name}"
    );
}

/// A monitor with a translation cache, and `code` translated as one block
/// at [`CODE`] (CPL 0, flat, 32-bit).
struct Rig {
    monitor: Monitor,
    cache: TranslationCache,
    id: BlockId,
    host: u32,
    mem: GuestMemory,
}

impl Rig {
    fn new(code: &[u8]) -> Rig {
        Rig::with_layout(code, Layout::DEFAULT)
    }

    /// The rig with the monitor region where `layout` puts it.
    fn with_layout(code: &[u8], layout: Layout) -> Rig {
        let mut mem = GuestMemory::new(RAM).unwrap();
        mem.write(u64::from(CODE), code).unwrap();
        let mut monitor = Monitor::with_layout(&mem, layout).unwrap();
        let (table, buf) = monitor.translation_regions(64 << 10).unwrap();
        let miss = monitor
            .install_stub_code(&translate::miss_handler(0))
            .unwrap();
        let mut cache =
            TranslationCache::new(CodeBuffer::new(buf), IndirectTable::new(table, miss));
        let key = kernel_key(CODE);
        let t = Translator::new(miss)
            .translate(key, code, GuestPage(CODE >> 12), cache.next_host_addr())
            .unwrap();
        let id = cache.insert(t.block, &t.code).unwrap();
        let host = cache.host_addr(id).unwrap();
        Rig {
            monitor,
            cache,
            id,
            host,
            mem,
        }
    }

    /// Runs the block from its start with `eflags` and an interrupt waiting
    /// or not; returns (exit reason, its guest EIP argument, the CPU).
    fn run(&mut self, eflags: u32, irq_pending: bool) -> (ExitReason, u32, CpuState) {
        self.run_from(kernel_state(eflags), irq_pending)
    }

    /// Runs the block from its start with the guest state `cpu`.
    fn run_from(&mut self, mut cpu: CpuState, irq_pending: bool) -> (ExitReason, u32, CpuState) {
        self.monitor.set_irq_pending(irq_pending);
        let exit = self
            .monitor
            .run_translated(&mut cpu, self.host, None)
            .unwrap();
        let TcExit::Exit { reason, arg } = exit else {
            panic!("not a TC exit: {exit:?}");
        };
        (ExitReason::from_code(reason).unwrap(), arg, cpu)
    }

    /// Host address of the translation of the guest instruction at `eip`.
    fn host_of(&self, eip: u32) -> u32 {
        let b = self.cache.block(self.id).unwrap();
        let m = b.insns().iter().find(|m| m.guest_eip == eip).unwrap();
        self.host + m.host_offset
    }
}

/// The key of a block at `eip` in flat 32-bit CPL 0 code, paging off.
fn kernel_key(eip: u32) -> BlockKey {
    BlockKey {
        eip,
        ctx: Context {
            cs_base: 0,
            cpl: 0,
            code32: true,
            paging: false,
            step: false,
        },
    }
}

/// Guest kernel state: CPL 0, flat segments, a stack in RAM.
fn kernel_state(eflags: u32) -> CpuState {
    CpuState {
        eip: CODE,
        esp: STACK_TOP,
        eflags: eflags | flags::FIXED1,
        cs: Segment::flat_code32(0x08),
        ss: Segment::flat_data32(0x10),
        ds: Segment::flat_data32(0x10),
        es: Segment::flat_data32(0x10),
        cr0: cr0::PE,
        ..CpuState::default()
    }
}

/// `push imm32`.
fn push(v: u32) -> Vec<u8> {
    let mut c = vec![0x68];
    c.extend(v.to_le_bytes());
    c
}

const ARITH: u32 = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF | flags::OF;
const HLT: u8 = 0xF4;

#[test]
fn popf_then_pushf_round_trips_every_flag_and_the_host_never_sees_ac() {
    in_child(
        "popf_then_pushf_round_trips_every_flag_and_the_host_never_sees_ac",
        || {
            // Everything POPF may set at CPL 0 except IF and TF (those leave).
            let v =
                flags::FIXED1 | ARITH | flags::DF | flags::IOPL | flags::NT | flags::AC | flags::ID;
            let mut code = push(v);
            code.push(0x9D); // popfd
                             // A misaligned load: it would raise #AC (SIGBUS) if the guest's
                             // AC had reached the host EFLAGS (Linux sets CR0.AM).
            code.extend([0x8B, 0x44, 0x24, 0x01]); // mov eax, [esp+1]
            code.extend([0x9C, 0x5B]); // pushfd; pop ebx
            code.push(HLT);
            let hlt = CODE + code.len() as u32 - 1;
            let mut rig = Rig::new(&code);
            // The VIF/VIP bits POPF keeps, and an interrupt waiting (IF stays
            // clear, so no exit for it).
            let (reason, arg, cpu) = rig.run(flags::VIF | flags::VIP, true);
            assert_eq!((reason, arg), (ExitReason::Callout, hlt));
            let want = v | flags::VIF | flags::VIP;
            assert_eq!(cpu.ebx, want, "PUSHF image {:#x}", cpu.ebx);
            assert_eq!(cpu.eflags, want, "EFLAGS {:#x}", cpu.eflags);
            assert_eq!(cpu.esp, STACK_TOP);
            assert_eq!(rig.monitor.inlined(), [0, 0, 1, 1, 0, 0, 0]);
        },
    );
}

#[test]
fn translated_code_runs_with_the_monitor_region_elsewhere() {
    in_child(
        "translated_code_runs_with_the_monitor_region_elsewhere",
        || {
            // Emitted code reaches the region only through GS: the same
            // bytes run with the region 4 MiB lower than its default.
            let layout = Layout::at(0xFF80_0000).unwrap();
            let code = [0x9C, 0x5B, 0xFA, 0x9C, 0x59, HLT]; // pushfd; pop ebx; cli; pushfd; pop ecx; hlt
            let mut rig = Rig::with_layout(&code, layout);
            assert_eq!(rig.monitor.layout(), layout);
            assert_eq!(rig.host, layout.tc());
            let (reason, arg, cpu) = rig.run(flags::IF | flags::ZF, false);
            assert_eq!((reason, arg), (ExitReason::Callout, CODE + 5));
            assert_eq!(cpu.ebx, flags::FIXED1 | flags::IF | flags::ZF);
            assert_eq!(cpu.ecx, flags::FIXED1 | flags::ZF);
            assert_eq!(cpu.eflags & flags::IF, 0);
            assert_eq!(rig.monitor.inlined(), [1, 0, 2, 0, 0, 0, 0]);
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            assert!(
                maps.lines()
                    .any(|l| l.starts_with("ff800000-ffc00000 rwxp")),
                "the region is one mapping at its base:\n{maps}"
            );
        },
    );
}

#[test]
fn popf_of_2_clears_everything_it_may() {
    in_child("popf_of_2_clears_everything_it_may", || {
        let mut code = push(2);
        code.extend([0x9D, 0x9C, 0x5B, HLT]); // popfd; pushfd; pop ebx; hlt
        let mut rig = Rig::new(&code);
        let all = ARITH | flags::DF | flags::IF | flags::IOPL | flags::NT | flags::AC | flags::ID;
        let (reason, _, cpu) = rig.run(all | flags::RF, true);
        assert_eq!(reason, ExitReason::Callout);
        assert_eq!(cpu.ebx, 2);
        // RF is no business of POPF's inline form (the callout path clears
        // it after every emulated instruction); everything else is clear.
        assert_eq!(cpu.eflags & !flags::RF, 2);
    });
}

#[test]
fn popf_setting_if_with_an_interrupt_waiting_leaves_before_the_next_instruction() {
    in_child(
        "popf_setting_if_with_an_interrupt_waiting_leaves_before_the_next_instruction",
        || {
            let mut code = push(flags::FIXED1 | flags::IF | flags::CF | flags::DF);
            code.extend([0x9D, 0x90, HLT]); // popfd; nop; hlt
            let nop = CODE + 6;
            let mut rig = Rig::new(&code);
            let (reason, arg, cpu) = rig.run(0, true);
            assert_eq!((reason, arg), (ExitReason::IrqWindow, nop));
            assert_eq!(
                cpu.eflags,
                flags::FIXED1 | flags::IF | flags::CF | flags::DF
            );
            assert_eq!(cpu.esp, STACK_TOP);
            // No interrupt waiting: straight on to the HLT.
            let (reason, _, cpu) = rig.run(0, false);
            assert_eq!(reason, ExitReason::Callout);
            assert_ne!(cpu.eflags & flags::IF, 0);
            // IF already set and kept: an interrupt waiting (the monitor
            // could not deliver it yet) is let in right after, too.
            let (reason, arg, _) = rig.run(flags::IF, true);
            assert_eq!((reason, arg), (ExitReason::IrqWindow, nop));
        },
    );
}

#[test]
fn popf_setting_tf_leaves_before_the_next_instruction() {
    in_child("popf_setting_tf_leaves_before_the_next_instruction", || {
        let mut code = push(flags::FIXED1 | flags::TF);
        code.extend([0x9D, 0x90, HLT]); // popfd; nop; hlt
        let mut rig = Rig::new(&code);
        let (reason, arg, cpu) = rig.run(0, false);
        assert_eq!((reason, arg), (ExitReason::IrqWindow, CODE + 6));
        assert_eq!(cpu.eflags, flags::FIXED1 | flags::TF);
    });
}

#[test]
fn sti_with_an_interrupt_waiting_leaves_inside_its_shadow() {
    in_child(
        "sti_with_an_interrupt_waiting_leaves_inside_its_shadow",
        || {
            // stc; sti; nop; hlt
            let code = [0xF9, 0xFB, 0x90, HLT];
            let mut rig = Rig::new(&code);
            let (reason, arg, cpu) = rig.run(0, true);
            assert_eq!((reason, arg), (ExitReason::StiShadow, CODE + 2));
            assert_eq!(cpu.eflags, flags::FIXED1 | flags::IF | flags::CF);
            // Nothing waiting: on to the HLT, with the NOP's host address
            // named as the instruction in STI's shadow.
            let (reason, _, cpu) = rig.run(0, false);
            assert_eq!(reason, ExitReason::Callout);
            assert_eq!(cpu.eflags, flags::FIXED1 | flags::IF | flags::CF);
            assert_eq!(rig.monitor.sti_shadow_at(), rig.host_of(CODE + 2));
            // IF already set: STI opens no window (and has no shadow).
            let (reason, _, _) = rig.run(flags::IF, true);
            assert_eq!(reason, ExitReason::Callout);
            assert_eq!(rig.monitor.inlined()[1], 3);
        },
    );
}

#[test]
fn cli_and_pushf_keep_the_arithmetic_flags() {
    in_child("cli_and_pushf_keep_the_arithmetic_flags", || {
        // stc; std; cli; pushfd; pop ebx; hlt
        let code = [0xF9, 0xFD, 0xFA, 0x9C, 0x5B, HLT];
        let mut rig = Rig::new(&code);
        let (reason, _, cpu) = rig.run(flags::IF | flags::AC | flags::ZF, false);
        assert_eq!(reason, ExitReason::Callout);
        let want = flags::FIXED1 | flags::CF | flags::DF | flags::ZF | flags::AC;
        assert_eq!(cpu.ebx, want, "PUSHF image {:#x}", cpu.ebx);
        assert_eq!(cpu.eflags, want);
        assert_eq!(rig.monitor.inlined(), [1, 0, 1, 0, 0, 0, 0]);
    });
}

#[test]
fn selector_and_control_register_reads_see_the_guest_values() {
    in_child(
        "selector_and_control_register_reads_see_the_guest_values",
        || {
            let mut code = vec![0xB8, 0x11, 0x11, 0x11, 0x11]; // mov eax, 0x11111111
            code.extend([0xBA, 0x00, 0x00, 0x22, 0x22]); // mov edx, 0x22220000
            code.extend([0x66, 0x8C, 0xD0]); // mov ax, ss
            code.extend([0x8C, 0xCB]); // mov ebx, cs
            code.extend([0x1E, 0x59]); // push ds; pop ecx
            code.extend([0x66, 0x06, 0x66, 0x5A]); // o16 push es; o16 pop dx
            code.extend([0x0F, 0x20, 0xD6]); // mov esi, cr2
            code.extend([0x0F, 0x20, 0xDF]); // mov edi, cr3
            code.extend([0x0F, 0x20, 0xE5]); // mov ebp, cr4
            code.push(HLT);
            let hlt = CODE + code.len() as u32 - 1;
            let mut rig = Rig::new(&code);
            let mut cpu = kernel_state(0);
            cpu.es = Segment::flat_data32(0x18);
            cpu.cr2 = 0xDEAD_B000;
            cpu.cr3 = 0x0012_3000;
            cpu.cr4 = 0x10;
            let (reason, arg, cpu) = rig.run_from(cpu, false);
            assert_eq!((reason, arg), (ExitReason::Callout, hlt));
            // The guest's selectors, never the host's shadows; a 16-bit
            // destination keeps its upper half.
            assert_eq!(cpu.eax, 0x1111_0010, "mov ax, ss");
            assert_eq!(cpu.ebx, 0x08, "mov ebx, cs");
            assert_eq!(cpu.ecx, 0x10, "push ds");
            assert_eq!(cpu.edx, 0x2222_0018, "o16 push es");
            assert_eq!(cpu.esp, STACK_TOP, "every push was popped");
            assert_eq!(
                (cpu.esi, cpu.edi, cpu.ebp),
                (0xDEAD_B000, 0x0012_3000, 0x10)
            );
            assert_eq!(rig.monitor.inlined(), [0, 0, 0, 0, 2, 2, 3]);
        },
    );
}

#[test]
fn translated_code_runs_after_user_code_closed_the_monitor_region() {
    in_child(
        "translated_code_runs_after_user_code_closed_the_monitor_region",
        || {
            // stc; sti; nop; hlt
            let code = [0xF9, 0xFB, 0x90, HLT];
            let mut rig = Rig::new(&code);
            // Guest user code (flat, DPL 3): one HLT, a #GP exit.
            const USER: u32 = 0x20_0000;
            rig.mem.write(u64::from(USER), &[HLT]).unwrap();
            let user = |seg: fn(u16) -> Segment, sel: u16| Segment { dpl: 3, ..seg(sel) };
            let mut ucpu = CpuState {
                eip: USER,
                esp: STACK_TOP,
                eflags: flags::FIXED1 | flags::IF,
                cs: user(Segment::flat_code32, 0x1B),
                ss: user(Segment::flat_data32, 0x23),
                ds: user(Segment::flat_data32, 0x23),
                es: user(Segment::flat_data32, 0x23),
                cr0: cr0::PE,
                ..CpuState::default()
            };
            for round in 1..=2u64 {
                ucpu.eip = USER;
                let exit = rig.monitor.run_user(&mut ucpu).unwrap();
                assert!(
                    matches!(exit, bt::monitor::DirectExit::Fault { vector: 13, .. }),
                    "{exit:?}"
                );
                let s = rig.monitor.region_stats();
                assert_eq!((s.opens, s.closes), (round - 1, round));
                // Set while the region is closed: kept for the next run,
                // which opens the region.
                rig.monitor.set_irq_pending(true);
                assert_eq!(rig.monitor.region_stats().opens, round - 1);
                let (reason, arg, _) = rig.run(0, true);
                assert_eq!((reason, arg), (ExitReason::StiShadow, CODE + 2));
                assert_eq!(rig.monitor.region_stats().opens, round);
            }
            // The cache reopens the region itself: a block translated and
            // stored while it is closed runs.
            ucpu.eip = USER;
            rig.monitor.run_user(&mut ucpu).unwrap();
            let key = kernel_key(CODE + 2);
            let miss = rig.cache.table().miss_addr();
            let t = Translator::new(miss)
                .translate(
                    key,
                    &code[2..],
                    GuestPage(CODE >> 12),
                    rig.cache.next_host_addr(),
                )
                .unwrap();
            let id = rig.cache.insert(t.block, &t.code).unwrap();
            assert_eq!(rig.monitor.region_stats().opens, 3);
            let host = rig.cache.host_addr(id).unwrap();
            let mut cpu = kernel_state(flags::IF);
            let exit = rig.monitor.run_translated(&mut cpu, host, None).unwrap();
            let TcExit::Exit { reason, arg } = exit else {
                panic!("not a TC exit: {exit:?}");
            };
            assert_eq!(
                (ExitReason::from_code(reason), arg),
                (Some(ExitReason::Callout), CODE + 3)
            );
            assert_eq!(rig.monitor.inlined()[1], 2);
        },
    );
}

/// The cost of one world switch without a signal: enter translated code
/// (`iretq`), run one block that leaves at once (a HLT callout, through
/// the TC exit stub) and come back to the monitor. Measured, never
/// asserted on; docs/bt.md quotes it (`cargo test --release -p popek-bt
/// --test inline_flags -- --nocapture tc_round_trip_cost`).
#[test]
fn tc_round_trip_cost() {
    in_child("tc_round_trip_cost", || {
        let mut rig = Rig::new(&[HLT]);
        const N: u32 = 100_000;
        let mut cpu = kernel_state(0);
        // Warm up the shadows, the region and the caches.
        for _ in 0..1000 {
            rig.monitor
                .run_translated(&mut cpu, rig.host, None)
                .unwrap();
        }
        // Five batches: the host is shared, so the fastest batch says most
        // about the code and the median about what a run sees.
        let mut batches: Vec<u128> = (0..5)
            .map(|_| {
                let start = std::time::Instant::now();
                for _ in 0..N {
                    let exit = rig
                        .monitor
                        .run_translated(&mut cpu, rig.host, None)
                        .unwrap();
                    assert!(matches!(exit, TcExit::Exit { .. }), "{exit:?}");
                }
                start.elapsed().as_nanos() / u128::from(N)
            })
            .collect();
        batches.sort_unstable();
        println!(
            "translated-code round trip (TC exit stub, no signal): {} ns fastest batch, {} ns median",
            batches[0], batches[2]
        );
    });
}

/// A data descriptor (present, DPL 0, read-write, accessed, 4 KiB
/// granularity, 32-bit) over the whole space at `base`.
fn data_descriptor(base: u32) -> u64 {
    let b = u64::from(base);
    0xFFFF | (b & 0xFF_FFFF) << 16 | 0x93 << 40 | 0xC_F << 48 | (b >> 24) << 56
}

/// Where the segment tests' GDT lives, and the selector they load.
const GDT: u32 = 0x5000;
const SEL: u16 = 0x18;

/// A rig running `code`, whose GDT entry `SEL` is a data segment at
/// 0x20_0000 where `marker` waits; the segment as the emulator would load
/// it, and the GDTR.
fn data_segment_rig(code: &[u8], marker: u32) -> (Rig, Segment, x86::TableRegister) {
    let mut rig = Rig::new(code);
    rig.mem
        .write(
            u64::from(GDT) + u64::from(SEL),
            &data_descriptor(0x20_0000).to_le_bytes(),
        )
        .unwrap();
    rig.mem.write(0x20_0000, &marker.to_le_bytes()).unwrap();
    let mut seg = Segment::flat_data32(SEL);
    seg.base = 0x20_0000;
    seg.typ = 3;
    let gdtr = x86::TableRegister {
        base: GDT,
        limit: 0xFF,
    };
    (rig, seg, gdtr)
}

#[test]
fn data_segment_loads_run_inline_while_the_gdt_keeps_the_cached_descriptor() {
    in_child(
        "data_segment_loads_run_inline_while_the_gdt_keeps_the_cached_descriptor",
        || {
            let code = [
                0x66, 0xB8, 0x18, 0x00, // mov ax, 0x18
                0x8E, 0xD8, // mov ds, eax
                0x8B, 0x1D, 0x00, 0x00, 0x00, 0x00, // mov ebx, [0]
                0x8E, 0xD0, // mov ss, eax: SS loads stay callouts
            ];
            let mov_ds = CODE + 4;
            let mov_ss = CODE + 12;
            // The descriptor puts DS at 0x20_0000, where a marker waits.
            let (mut rig, seg, gdtr) = data_segment_rig(&code, 0xC0FF_EE11);
            let mut cpu = kernel_state(0);
            cpu.gdtr = gdtr;
            // Not cached yet: the load leaves as a callout.
            let (reason, arg, _) = rig.run_from(cpu.clone(), false);
            assert_eq!((reason, arg), (ExitReason::Callout, mov_ds));
            rig.monitor
                .cache_segment(gdtr, &seg, GDT + 0x18, data_descriptor(0x20_0000))
                .unwrap();
            // Cached: translated code loads DS itself and reads through it;
            // the monitor takes the segment over at the exit.
            let (reason, arg, after) = rig.run_from(cpu.clone(), false);
            assert_eq!((reason, arg), (ExitReason::Callout, mov_ss));
            assert_eq!(after.ebx, 0xC0FF_EE11);
            assert_eq!((after.ds.selector, after.ds.base), (SEL, 0x20_0000));
            // The guest rewrites its descriptor: the cached one no longer
            // matches, and the load is a callout again, registers intact.
            rig.mem
                .write(
                    u64::from(GDT) + 0x18,
                    &data_descriptor(0x30_0000).to_le_bytes(),
                )
                .unwrap();
            cpu.eax = 0x1234_0000;
            cpu.ebx = 0x55;
            cpu.edx = 0x66;
            let (reason, arg, after) = rig.run_from(cpu, false);
            assert_eq!((reason, arg), (ExitReason::Callout, mov_ds));
            assert_eq!((after.eax, after.ebx, after.edx), (0x1234_0018, 0x55, 0x66));
            assert_eq!(after.ds.selector, 0x10);
        },
    );
}

#[test]
fn null_data_segment_loads_run_inline() {
    in_child("null_data_segment_loads_run_inline", || {
        let code = [
            0x31, 0xC0, // xor eax, eax
            0x8E, 0xE0, // mov fs, eax
            0x6A, 0x03, // push 3
            0x07, // pop es
            0x8E, 0xD0, // mov ss, eax: a callout, to leave
        ];
        let mut rig = Rig::new(&code);
        let mut cpu = kernel_state(0);
        cpu.fs = Segment::flat_data32(0x10);
        let (reason, arg, after) = rig.run_from(cpu, false);
        assert_eq!((reason, arg), (ExitReason::Callout, CODE + 7));
        let null = |selector| Segment {
            selector,
            ..Segment::unusable()
        };
        assert_eq!(after.fs, null(0));
        assert_eq!(after.es, null(3));
        assert_eq!(after.esp, STACK_TOP);
    });
}

#[test]
fn a_gs_load_runs_inline_and_gs_overrides_read_through_it() {
    in_child(
        "a_gs_load_runs_inline_and_gs_overrides_read_through_it",
        || {
            let code = [
                0x6A, 0x18, // push 0x18
                0x0F, 0xA9, // pop gs
                0x65, 0x8B, 0x1D, 0x00, 0x00, 0x00, 0x00, // mov ebx, gs:[0]
                0x8E, 0xD0, // mov ss, eax: a callout, to leave
            ];
            let pop_gs = CODE + 2;
            let mov_ss = CODE + 11;
            let (mut rig, seg, gdtr) = data_segment_rig(&code, 0xC0FF_EE22);
            let mut cpu = kernel_state(0);
            cpu.gdtr = gdtr;
            let (reason, arg, _) = rig.run_from(cpu.clone(), false);
            assert_eq!((reason, arg), (ExitReason::Callout, pop_gs));
            rig.monitor
                .cache_segment(gdtr, &seg, GDT + 0x18, data_descriptor(0x20_0000))
                .unwrap();
            // Cached: GS is the guest's now, though translated code's own GS
            // still reaches the vCPU area. GS held the same selector with
            // another base before (a process switch: Linux rewrites its
            // TLS descriptor and reloads the selector): the new base counts.
            let mut before = seg;
            before.base = 0x30_0000;
            cpu.gs = before;
            let (reason, arg, after) = rig.run_from(cpu, false);
            assert_eq!((reason, arg), (ExitReason::Callout, mov_ss));
            assert_eq!(after.ebx, 0xC0FF_EE22);
            assert_eq!((after.gs.selector, after.gs.base), (SEL, 0x20_0000));
            assert_eq!(after.esp, STACK_TOP);
        },
    );
}

#[test]
fn a_run_resumed_inside_an_inline_load_keeps_the_half_recorded_selector() {
    in_child(
        "a_run_resumed_inside_an_inline_load_keeps_the_half_recorded_selector",
        || {
            // A kick between an inline load's write of the guest selector
            // and its `sel_loaded` mark: the exit takes nothing over (no
            // mark), and the resumed run writes the mark. Linux lost its
            // per-CPU FS this way at a system call's entry.
            let code = [
                0x66, 0xB8, 0x18, 0x00, // mov ax, 0x18
                0x8E, 0xE0, // mov fs, eax
                0x8B, 0x1D, 0x00, 0x00, 0xF0, 0x00, // mov ebx, [0xF00000]: past RAM
                0x8E, 0xD0, // mov ss, eax: a callout
            ];
            let (mut rig, seg, gdtr) = data_segment_rig(&code, 0);
            rig.monitor
                .cache_segment(gdtr, &seg, GDT + 0x18, data_descriptor(0x20_0000))
                .unwrap();
            let mut cpu = kernel_state(0);
            cpu.gdtr = gdtr;
            // The load runs inline; the read past RAM stops the run with
            // the host selectors live then.
            rig.monitor.set_irq_pending(false);
            let exit = rig
                .monitor
                .run_translated(&mut cpu, rig.host, None)
                .unwrap();
            let TcExit::Signal { sels, .. } = exit else {
                panic!("not a signal exit: {exit:?}");
            };
            assert_eq!(cpu.fs.selector, SEL);
            // The vCPU area as the kick leaves it: selector written, no
            // mark (a fresh run that leaves at once resets the marks and
            // takes the selectors from `cpu`), and the monitor's FS still
            // the one before the load.
            let mut fresh = cpu.clone();
            let exit = rig
                .monitor
                .run_translated(&mut fresh, rig.host_of(CODE + 12), None)
                .unwrap();
            assert!(matches!(exit, TcExit::Exit { .. }), "{exit:?}");
            let mut stale = cpu.clone();
            stale.fs = Segment {
                selector: 0,
                ..Segment::unusable()
            };
            // Resume at the mark: `gs mov byte [sel_loaded + 4], 1`.
            let mark = {
                let mut m = vec![0x65, 0xC6, 0x05];
                m.extend((bt::contract::gs::SEL_LOADED + 4).to_le_bytes());
                m.push(1);
                m
            };
            let len = (rig.host_of(CODE + 12) - rig.host) as usize;
            // SAFETY: the block's code lies in the translation cache, mapped
            // and open between runs.
            let bytes = unsafe { std::slice::from_raw_parts(rig.host as *const u8, len) };
            let at = bytes
                .windows(mark.len())
                .position(|w| w == mark.as_slice())
                .expect("the FS load's mark") as u32;
            let exit = rig
                .monitor
                .run_translated(&mut stale, rig.host + at, Some(sels))
                .unwrap();
            assert!(matches!(exit, TcExit::Signal { .. }), "{exit:?}");
            assert_eq!((stale.fs.selector, stale.fs.base), (SEL, 0x20_0000));
        },
    );
}
