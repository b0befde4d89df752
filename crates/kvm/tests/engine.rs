//! The KVM engine on short hand-assembled snippets: port I/O (single and
//! string), the debug-exit status, HLT, triple fault, and this host's
//! paging limitation. Each test skips, saying why, where /dev/kvm is absent.

use std::io::Write;
use std::sync::{Arc, Mutex};

use kvm::{Flavour, KvmEngine};
use machine::{Engine, EngineError, Exit, MachineBuilder};
use x86::{CpuState, Segment};

const LOAD: u32 = 0x10_0000;

/// An engine without the sandbox: these tests run engines on the test
/// harness's threads, and confining would confine the harness too (the
/// sandbox is tested on the popek binary, tests/sandbox.rs).
fn engine() -> Option<KvmEngine> {
    match KvmEngine::new() {
        Ok(e) => Some(e.without_sandbox()),
        Err(e) => {
            eprintln!("skipped: {e}");
            None
        }
    }
}

/// Flat 32-bit protected mode at LOAD, interrupts off, no tables in memory.
fn entry() -> CpuState {
    let mut s = CpuState::reset();
    s.cr0 = x86::state::cr0::PE | x86::state::cr0::ET;
    s.cs = Segment::flat_code32(0x10);
    for seg in [&mut s.ds, &mut s.es, &mut s.ss, &mut s.fs, &mut s.gs] {
        *seg = Segment::flat_data32(0x18);
    }
    s.eip = LOAD;
    s.esp = 0x8000;
    s.eflags = x86::state::flags::FIXED1;
    s.idtr.limit = 0;
    s
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run(code: &[u8]) -> Option<(Result<Exit, EngineError>, String)> {
    let mut engine = engine()?;
    let out = Captured::default();
    let mut m = MachineBuilder::new()
        .memory_mib(16)
        .console(Box::new(out.clone()))
        .raw_image(u64::from(LOAD), code.to_vec(), entry())
        .build()
        .unwrap();
    let r = engine.run(&mut m);
    let text = String::from_utf8_lossy(&out.0.lock().unwrap()).into_owned();
    Some((r, text))
}

/// mov dx, 0xF4; mov eax, v; out dx, eax
fn debug_exit(v: u8) -> Vec<u8> {
    vec![0x66, 0xBA, 0xF4, 0x00, 0xB8, v, 0, 0, 0, 0xEF]
}

#[test]
fn uart_output_and_debug_exit_status() {
    let mut code = vec![
        0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3F8
        0xB0, b'H', 0xEE, // mov al, 'H'; out dx, al
        0xB0, b'i', 0xEE, // mov al, 'i'; out dx, al
        0xB0, b'\n', 0xEE,
    ];
    code.extend(debug_exit(0x21));
    let Some((r, out)) = run(&code) else { return };
    assert_eq!(out, "Hi\n");
    let exit = r.unwrap();
    assert!(matches!(exit, Exit::DebugExit(0x21)), "{exit:?}");
    assert_eq!(exit.exit_status(), 0x43);
}

#[test]
fn rep_outsb_is_split_into_bytes() {
    // The string sits at LOAD + 0x40; ESI points at it, ECX = 5.
    let mut code = vec![
        0xBE, 0x40, 0x00, 0x10, 0x00, // mov esi, LOAD+0x40
        0xB9, 0x05, 0x00, 0x00, 0x00, // mov ecx, 5
        0x66, 0xBA, 0xF8, 0x03, // mov dx, 0x3F8
        0xFC, // cld
        0xF3, 0x6E, // rep outsb
    ];
    code.extend(debug_exit(0));
    code.resize(0x40, 0x90);
    code.extend(b"abcd\n");
    let Some((r, out)) = run(&code) else { return };
    assert_eq!(out, "abcd\n");
    assert!(matches!(r, Ok(Exit::DebugExit(0))));
}

#[test]
fn hlt_with_interrupts_off_is_final() {
    let Some((r, _)) = run(&[0xFA, 0xF4]) else {
        return;
    };
    match r {
        Ok(Exit::Halted(state)) => assert_eq!(state.eip, LOAD + 2),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ud2_without_an_idt_triple_faults() {
    let Some((r, _)) = run(&[0x90, 0x0F, 0x0B, 0xF4]) else {
        return;
    };
    match r {
        Ok(Exit::Shutdown(fault)) => {
            assert!(fault.what.contains("triple"), "{}", fault.what);
            assert_eq!(Exit::Shutdown(fault).exit_status(), 6);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn int3_without_an_idt_triple_faults() {
    // On kvm-pvm this goes through popek's own INT3 (KVM's emulator has
    // none in protected mode): #GP past the IDT limit, #DF, shutdown.
    let Some((r, _)) = run(&[0x90, 0xCC, 0xF4]) else {
        return;
    };
    match r {
        Ok(Exit::Shutdown(fault)) => {
            assert!(fault.what.contains("triple"), "{}", fault.what);
            assert_eq!(fault.state.eip, LOAD + 1, "reported at the INT3");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn paging_on_a_pvm_host_is_explained() {
    let Some(engine) = engine() else { return };
    let code = [
        0x0F, 0x20, 0xC0, // mov eax, cr0
        0x0D, 0, 0, 0, 0x80, // or eax, 0x80000000
        0x0F, 0x22, 0xC0, // mov cr0, eax
        0xF4,
    ];
    let Some((r, _)) = run(&code) else { return };
    if engine.host().flavour != Flavour::Pvm {
        eprintln!("not a kvm-pvm host: paging is expected to work here");
        return;
    }
    match r {
        Err(EngineError::GuestUnsupported(fault)) => {
            assert!(fault.what.contains("kvm-pvm"), "{}", fault.what);
            assert!(fault.what.contains("EIP=00100008"), "{}", fault.what);
            assert_eq!(&fault.bytes[..3], &[0x0F, 0x22, 0xC0]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn compute_loop_keeps_registers() {
    // mov ecx, 50000; xor eax, eax; l: add eax, ecx; dec ecx; jnz l;
    // then exit with the low byte of the sum: sum(1..=50000) = 1250025000 = 0x4A81DE28.
    let code = [
        0xB9, 0x50, 0xC3, 0x00, 0x00, // mov ecx, 50000
        0x31, 0xC0, // xor eax, eax
        0x01, 0xC8, // add eax, ecx
        0x49, // dec ecx
        0x75, 0xFB, // jnz -5
        0x66, 0xBA, 0xF4, 0x00, // mov dx, 0xF4
        0xEF, // out dx, eax
    ];
    let Some((r, _)) = run(&code) else { return };
    match r {
        Ok(Exit::DebugExit(v)) => assert_eq!(v, 0x4A81_DE28),
        other => panic!("{other:?}"),
    }
}
