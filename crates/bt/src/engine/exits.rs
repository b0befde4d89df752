//! Exits: what each way out of guest code means. Directly executed user
//! code leaves on a host signal ([`DirectExit`]); translated code leaves on
//! purpose through the TC exit stub with an [`ExitReason`], or on a signal
//! ([`TcExit::Signal`]), after which the guest state is recreated here and
//! only here ([`recreate`]).

use machine::memory::GuestLinear;
use machine::{EngineError, Exit, Machine};
use x86::classify::{kind_of, Class, Kind};
use x86::emulate;
use x86::interrupt::{Event, Exception};

use super::vm::{host_err, Next, Vm};
use super::{callouts, faults, int80, interrupts};
use crate::cache::Context;
use crate::contract::{scratch, ExitReason};
use crate::monitor::{DirectExit, TcExit};

/// A link the dispatcher makes after an exit of translated code, with the
/// block at CS:EIP (translated first if need be).
pub(super) enum Link {
    /// Chain the direct exit whose `jmp rel32` sits at this host address
    /// to that block.
    Chain(u32),
    /// Publish that block in the inline indirect-branch table.
    Publish,
}

/// What [`recreate`] made of the host state at a signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Recreated {
    /// The guest's EIP and registers are exact; the block that held the
    /// stop.
    Exact(crate::cache::BlockId),
    /// Translated code resumes where it stopped (a kick mid-sequence).
    Resume,
    /// A fault outside every live translation: nothing to recreate.
    Outside,
}

/// Redoes guest user code's loads of `sels` (DS, ES, FS, GS), which the
/// host's GDT answered, against the guest's tables (design.md's lazy
/// fix-up). A load the guest's CPU would also have accepted is fixed up
/// (glibc loads its TLS selector 0x33, which is the host's 64-bit code
/// segment); one it would have refused is an escape attempt and stops
/// the VM.
///
/// For a segment based at 0, like the host's, every access made through
/// the host's segment before this exit meant what it would have meant.
/// For another base an access did not, but it faulted: the host's
/// segment is flat, so an offset below 4 KiB lands in page 0 and a
/// negative one (TLS variables sit below the thread pointer) in the
/// guest kernel's half, both unmapped while user code runs, and the
/// first such access is the exit that brought us here. An access at an
/// offset between 4 KiB and the kernel's base before any exit would have
/// gone to the wrong address unnoticed (docs/bt.md, known gaps).
fn fix_up_selectors(
    vm: &mut Vm,
    machine: &mut Machine,
    sels: [Option<u16>; 4],
) -> Result<Next, EngineError> {
    vm.stats.exit("user: selector fix-up");
    for (i, sel) in sels.iter().enumerate() {
        let Some(sel) = *sel else { continue };
        let mut mem = GuestLinear::new(&mut machine.memory, &vm.cpu);
        match emulate::data_segment(&vm.cpu, &mut mem, i, sel) {
            Ok(seg) => {
                *[
                    &mut vm.cpu.ds,
                    &mut vm.cpu.es,
                    &mut vm.cpu.fs,
                    &mut vm.cpu.gs,
                ][i] = seg;
            }
            Err(_) => {
                return Ok(Next::End(Exit::Escape(vm.fault(
                    machine,
                    format!(
                        "guest user code loaded the host's selector {sel:#06x} into a segment \
                         register, where its own CPU would have refused the load; the VM was \
                         stopped"
                    ),
                ))))
            }
        }
    }
    match vm.monitor.take_deferred_exit() {
        // A memory fault may have come from the host's segment (a write
        // through the host's 0x23, a code segment; the limit of 0x7b):
        // the instruction runs again with the guest's.
        Some(DirectExit::Fault {
            vector: 11..=14 | 17,
            ..
        })
        | None => Ok(Next::Continue),
        Some(exit) => user_exit(vm, machine, exit),
    }
}

/// Handles an exit of directly executed guest user code.
pub(super) fn user_exit(
    vm: &mut Vm,
    machine: &mut Machine,
    exit: DirectExit,
) -> Result<Next, EngineError> {
    match exit {
        DirectExit::Interrupted => {
            vm.stats.exit("user: interrupted");
            Ok(Next::Continue)
        }
        DirectExit::Syscall => {
            // int 0x80 trapped after the instruction: carry it out with
            // the guest's IDT and its DPL check.
            vm.stats.exit("user: int 0x80");
            int80::trapped(vm, machine)?;
            vm.cpu.eip = vm.cpu.eip.wrapping_sub(2);
            callouts::known(vm, machine, &callouts::INT80)
        }
        DirectExit::Fault { vector: 3, .. } if int80::was_int80(vm) => {
            // The same, from a site run as int3 (engine/int80.rs).
            vm.stats.exit("user: int 0x80 as int3");
            callouts::known(vm, machine, &callouts::INT80)
        }
        DirectExit::FastSystemCall { sysenter } => {
            // The host took it through its own SYSENTER or SYSCALL path
            // and trapped it there: the guest's MSRs and CPUID decide
            // what it does (to CPL 0, or #GP, or #UD).
            vm.stats.exit(if sysenter {
                "user: sysenter"
            } else {
                "user: syscall"
            });
            callouts::fast_system_call(vm, machine, sysenter)
        }
        DirectExit::SoftwareInterrupt { .. } => {
            vm.stats.exit("user: int n");
            callouts::callout(vm, machine)
        }
        DirectExit::Fault { vector, error_code, cr2 } => {
            vm.stats.exit("user: fault");
            user_fault(vm, machine, vector, error_code, cr2)
        }
        DirectExit::HostBus { addr } => Err(vm.unsupported(
            machine,
            format!("guest RAM behind {addr:#x} is missing (host SIGBUS)"),
        )),
        DirectExit::ForeignCode { selector, signal } => Ok(Next::End(Exit::Escape(vm.fault(
            machine,
            format!(
                "guest user code left its code segment for the host's selector {selector:#06x} \
                 (host signal {signal}); the VM was stopped"
            ),
        )))),
        DirectExit::ForeignSelectors { sels } => fix_up_selectors(vm, machine, sels),
        DirectExit::Unknown { signal, trapno, error_code } => Err(vm.unsupported(
            machine,
            format!("unexpected host signal {signal} (trap {trapno}, error {error_code:#x}) in guest user code"),
        )),
    }
}

/// A fault of directly executed user code, as the guest must see it.
fn user_fault(
    vm: &mut Vm,
    machine: &mut Machine,
    vector: u8,
    error_code: Option<u32>,
    cr2: Option<u32>,
) -> Result<Next, EngineError> {
    if let Some(at) = faults::monitor_region_access(vm, machine, vector, error_code) {
        return faults::monitor_region(vm, machine, at);
    }
    match vector {
        // A privileged or IOPL-sensitive instruction (the emulator
        // applies the guest's own CPL and IOPL rules: IN/OUT may be
        // allowed by IOPL 3, otherwise it raises the same #GP), or a
        // segment load or far transfer the host checked against its own
        // tables (our shadows sit at LDT indices guests do not use),
        // which the emulator redoes against the guest's.
        11..=13 if sensitive_at_eip(vm, machine) => callouts::callout(vm, machine),
        // SYSENTER on AMD hosts and SYSCALL on Intel's raise #UD in
        // compatibility mode whatever the guest's CPU would do: the
        // emulator does what the guest's model says.
        6 if sensitive_at_eip(vm, machine) => callouts::callout(vm, machine),
        14 => faults::host_page_fault(vm, machine, cr2.unwrap_or(0), error_code.unwrap_or(0)),
        // INT3 and INTO trap after the instruction and go through the
        // IDT as software interrupts (gate DPL checked).
        3 | 4 => interrupts::deliver(vm, machine, vector, Event::Software),
        _ => interrupts::exception(vm, machine, Exception { vector, error_code }),
    }
}

/// Whether the instruction at CS:EIP is one the callout emulator
/// carries out (privileged, sensitive or a far transfer).
fn sensitive_at_eip(vm: &Vm, machine: &mut Machine) -> bool {
    vm.insn_at_eip(machine)
        .is_some_and(|i| !matches!(kind_of(&i).class(), Class::Innocuous | Class::ControlFlow))
}

/// Handles an exit of translated code; also says whether the guest
/// instruction that ran completed without an exception, and what the
/// dispatcher should link (never in a step block, which is discarded).
pub(super) fn kernel_exit(
    vm: &mut Vm,
    machine: &mut Machine,
    host: u32,
    exit: TcExit,
    resumed: Option<(u32, [u16; 6])>,
    step: bool,
) -> Result<(Next, bool, Option<Link>), EngineError> {
    let cs_base = vm.cpu.cs.base;
    match exit {
        TcExit::Interrupted => {
            // Nothing ran; a mid-sequence resume point stays one.
            vm.stats.exit("kick before entry");
            vm.resume = resumed;
            Ok((Next::Continue, false, None))
        }
        TcExit::Exit { reason, arg } => {
            vm.cpu.eip = arg.wrapping_sub(cs_base);
            match ExitReason::from_code(reason) {
                Some(ExitReason::Branch) => {
                    vm.stats.exit("branch");
                    let link = (!step).then(|| Link::Chain(vm.monitor.scratch()[scratch::FROM]));
                    Ok((Next::Continue, true, link))
                }
                Some(ExitReason::IndirectMiss) => {
                    vm.stats.exit("indirect miss");
                    Ok((Next::Continue, true, (!step).then_some(Link::Publish)))
                }
                Some(ExitReason::Sysexit) => {
                    vm.stats.exit("callout");
                    let n = callouts::sysexit(vm, machine)?;
                    Ok((n, !vm.last_callout_faulted, None))
                }
                Some(reason @ (ExitReason::Callout | ExitReason::Iret)) => {
                    vm.stats.exit("callout");
                    early_refill(vm, machine)?;
                    let n = if reason == ExitReason::Iret {
                        callouts::known(vm, machine, &callouts::IRETD)?
                    } else {
                        callouts::callout(vm, machine)?
                    };
                    Ok((n, !vm.last_callout_faulted, None))
                }
                // An inline POPF or STI completed and opened the window
                // for a waiting interrupt (or set TF): the top of the
                // loop delivers it, after one more instruction for STI.
                Some(ExitReason::IrqWindow) => {
                    vm.stats.exit("irq window");
                    Ok((Next::Continue, true, None))
                }
                Some(ExitReason::StiShadow) => {
                    vm.stats.exit("sti shadow");
                    vm.shadow = true;
                    Ok((Next::Continue, true, None))
                }
                None => Err(host_err(format!(
                    "translated code left with unknown reason {reason}"
                ))),
            }
        }
        TcExit::Signal {
            host_eip,
            exit,
            sels,
        } => translated_signal(vm, machine, host, host_eip, exit, sels).map(|n| (n, false, None)),
    }
}

/// Runs of translated code that load the guest's vector state after one
/// wanted it ([`Vm::vector_runs`]).
const VECTOR_RUNS: u32 = 64;

/// A host signal inside translated code: the guest state is recreated
/// (see [`recreate`]), then a fault goes where a fault of the guest
/// instruction goes.
fn translated_signal(
    vm: &mut Vm,
    machine: &mut Machine,
    entered: u32,
    host_eip: u32,
    exit: DirectExit,
    sels: [u16; 6],
) -> Result<Next, EngineError> {
    match exit {
        DirectExit::Interrupted => {
            vm.stats.exit("kick");
            recreate(vm, machine, host_eip, sels, false);
            Ok(Next::Continue)
        }
        DirectExit::Fault { vector: 13, .. } if vm.cache.is_vector_gate(host_eip) => {
            // The first instruction of a block that touches vector state,
            // in a run without it: the gate opens that instruction's
            // translation, so the state is exact, and the next runs load it.
            vm.stats.exit("vector state");
            recreate(vm, machine, host_eip, sels, true);
            vm.vector_runs = VECTOR_RUNS;
            Ok(Next::Continue)
        }
        DirectExit::Fault {
            vector,
            error_code,
            cr2,
        } => {
            vm.stats.exit("fault in translated code");
            let Recreated::Exact(block) = recreate(vm, machine, host_eip, sels, true) else {
                // A fault recreates exactly or not at all.
                return Err(host_err(format!(
                    "fault {vector} at host {host_eip:#x} outside any translation (entered at {entered:#x})"
                )));
            };
            // An access to a device (Linux maps its local APIC in the
            // monitor region's linear range) makes the instruction a
            // callout in the block's next translation (faults.rs).
            vm.faulting_block = Some(block);
            let next =
                if let Some(at) = faults::monitor_region_access(vm, machine, vector, error_code) {
                    faults::monitor_region(vm, machine, at)
                } else if vector == 14 {
                    faults::host_page_fault(vm, machine, cr2.unwrap_or(0), error_code.unwrap_or(0))
                } else {
                    interrupts::exception(vm, machine, Exception { vector, error_code })
                };
            vm.faulting_block = None;
            next
        }
        DirectExit::HostBus { addr } => {
            recreate_shadow(vm, host_eip);
            Err(vm.unsupported(
                machine,
                format!("guest RAM behind {addr:#x} is missing (host SIGBUS)"),
            ))
        }
        other => {
            recreate_shadow(vm, host_eip);
            Err(host_err(format!(
                "unexpected exit {other:?} from translated code at host {host_eip:#x}"
            )))
        }
    }
}

/// Recreates the guest state where a signal stopped translated code at
/// `host_eip`, with host selectors `sels` live. Every rule that maps
/// the host's state back to the guest's is here:
/// - the cache maps the host PC to the guest instruction whose
///   translation holds it, and says whether the PC is that
///   translation's first byte (a boundary, where the guest's registers
///   are exact) or inside a rewrite, a stub or the miss handler;
/// - a stop right before the instruction after an inline STI
///   (`sti_shadow_at`) is inside STI's interrupt shadow;
/// - for a `fault`, EIP is that instruction's, and if an indirect
///   branch's rewrite faulted after it borrowed EAX and ECX (its
///   operand load or push), the guest's values are in the scratch
///   slots where the rewrite saved them;
/// - for a kick, EIP moves to a boundary; inside a sequence the
///   registers are mid-rewrite, so translated code resumes at
///   `host_eip` with `sels` (it may have borrowed FS) and the next exit
///   sees the interrupt.
fn recreate(
    vm: &mut Vm,
    machine: &mut Machine,
    host_eip: u32,
    sels: [u16; 6],
    fault: bool,
) -> Recreated {
    let cs_base = vm.cpu.cs.base;
    let rec = recreate_shadow(vm, host_eip);
    match rec {
        Some(r) if r.at_boundary => {
            vm.cpu.eip = r.guest_eip.wrapping_sub(cs_base);
            Recreated::Exact(r.block)
        }
        Some(r) if fault => {
            vm.cpu.eip = r.guest_eip.wrapping_sub(cs_base);
            let s = vm.monitor.scratch();
            let ctx = vm.cache.context_of(r.block);
            match borrowed_at_eip(vm, machine, ctx) {
                Borrowed::Two => {
                    vm.cpu.eax = s[scratch::SAVED_EAX];
                    vm.cpu.ecx = s[scratch::SAVED_ECX];
                }
                Borrowed::Four => {
                    vm.cpu.eax = s[scratch::SAVED_EAX];
                    vm.cpu.ecx = s[scratch::SAVED_ECX];
                    vm.cpu.edx = s[scratch::SAVED_EDX];
                    vm.cpu.ebx = s[scratch::SAVED_EBX];
                }
                Borrowed::None => {}
            }
            Recreated::Exact(r.block)
        }
        None if fault => Recreated::Outside,
        _ => {
            vm.resume = Some((host_eip, sels));
            Recreated::Resume
        }
    }
}

/// The cache's mapping of `host_eip` to its guest instruction, noting
/// when the stop is inside an inline STI's interrupt shadow.
fn recreate_shadow(vm: &mut Vm, host_eip: u32) -> Option<crate::cache::Recreated> {
    let rec = vm.cache.recreate(host_eip);
    // Stopped right before the instruction after an inline STI: it is
    // in STI's interrupt shadow and must run before an interrupt.
    if rec.is_some_and(|r| r.at_boundary) && host_eip == vm.monitor.sti_shadow_at() {
        vm.shadow = true;
    }
    rec
}

/// Guest registers a rewrite borrows before its first access that may
/// fault, saved in the scratch slots.
enum Borrowed {
    None,
    /// EAX and ECX: RET and indirect JMP and CALL.
    Two,
    /// EAX, ECX, EDX and EBX: inline loads of DS, ES, FS and GS.
    Four,
}

/// What the rewrite of the guest instruction at CS:EIP borrows.
fn borrowed_at_eip(vm: &Vm, machine: &mut Machine, ctx: Option<Context>) -> Borrowed {
    let Some(i) = vm.insn_at_eip(machine) else {
        return Borrowed::None;
    };
    if matches!(
        kind_of(&i),
        Kind::Ret | Kind::JmpIndirect | Kind::CallIndirect
    ) {
        Borrowed::Two
    } else if ctx.is_some_and(|c| crate::translate::loads_sreg_inline(&i, c)) {
        Borrowed::Four
    } else {
        Borrowed::None
    }
}

/// Maps the page a guest #PF was about (`Vm::refill`) for user code at the
/// guest kernel's first callout after the delivery, usually the IRET back
/// to the faulting code, rather than when user code runs next: the
/// user-code process then makes its host `mmap` (~7 k cycles) while this
/// process carries out the IRET. Where the guest has not mapped the page
/// yet, nothing happens, and the dispatcher tries again before user code
/// runs.
fn early_refill(vm: &mut Vm, machine: &mut Machine) -> Result<(), EngineError> {
    let Some(linear) = vm.refill else {
        return Ok(());
    };
    if !vm.monitor.has_user_process() || !vm.mmu.paging() {
        return Ok(());
    }
    if vm
        .mmu
        .prefill(
            &mut vm.monitor,
            &mut machine.memory,
            linear,
            super::dispatch::USER_READ,
        )
        .map_err(host_err)?
    {
        vm.monitor.publish_user_ops().map_err(host_err)?;
    }
    Ok(())
}
