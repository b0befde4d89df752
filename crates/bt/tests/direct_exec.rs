//! Direct execution of guest user code, one scenario per child process: the
//! monitor owns process-wide state (low 4 GiB, LDT, signal handlers,
//! seccomp), so each test re-executes this binary filtered to itself.

use std::arch::asm;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};
use std::time::Instant;

use bt::contract::Layout;
use bt::monitor::{DirectExit, Monitor, Prot};
use machine::GuestMemory;
use x86::state::{cr0, flags};
use x86::{CpuState, Segment};

const CHILD_ENV: &str = "POPEK_BT_CHILD";
const RAM: u64 = 4 << 20;
const CODE: u32 = 0x10_0000;
const STACK_TOP: u32 = 0x3F_F000;
/// The monitor region's base, where `Monitor::new` puts it.
const MONITOR_BASE: u32 = Layout::DEFAULT.base();
/// The TC exit stub in that region.
const STUB_ADDR: u32 = Layout::DEFAULT.stub();

/// True in the child process that runs scenario `name`.
fn is_child(name: &str) -> bool {
    std::env::var(CHILD_ENV).as_deref() == Ok(name)
}

/// Runs this test binary filtered to `name` as a child process.
fn spawn_child(name: &str) -> Output {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, name)
        .output()
        .expect("spawn the child test process");
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Runs `body` in a fresh child process (this test binary, filtered to
/// `name`) and fails if the child fails.
fn in_child(name: &str, body: impl FnOnce()) {
    if is_child(name) {
        body();
        return;
    }
    let out = spawn_child(name);
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

fn user_segment(selector: u16, code: bool) -> Segment {
    let mut s = if code {
        Segment::flat_code32(selector)
    } else {
        Segment::flat_data32(selector)
    };
    s.dpl = 3;
    s
}

/// A CPL-3 flat protected-mode state at `eip` with a stack in RAM.
fn user_state(eip: u32) -> CpuState {
    CpuState {
        eip,
        esp: STACK_TOP,
        eflags: flags::FIXED1 | flags::IF,
        cs: user_segment(0x1B, true),
        ss: user_segment(0x23, false),
        ds: user_segment(0x23, false),
        es: user_segment(0x23, false),
        cr0: cr0::PE,
        ..CpuState::default()
    }
}

/// Guest RAM with `code` at [`CODE`] and a monitor over it.
fn setup(code: &[u8]) -> (GuestMemory, Monitor) {
    let mut mem = GuestMemory::new(RAM).unwrap();
    mem.write(u64::from(CODE), code).unwrap();
    let monitor = Monitor::new(&mem).unwrap();
    (mem, monitor)
}

fn fault(vector: u8, error_code: Option<u32>, cr2: Option<u32>) -> DirectExit {
    DirectExit::Fault {
        vector,
        error_code,
        cr2,
    }
}

#[test]
fn hlt_is_gp0_after_computing() {
    in_child("hlt_is_gp0_after_computing", || {
        let code = [
            0xB8, 6, 0, 0, 0, // mov eax, 6
            0xB9, 7, 0, 0, 0, // mov ecx, 7
            0x0F, 0xAF, 0xC1, // imul eax, ecx
            0x83, 0xC1, 100,  // add ecx, 100
            0xF4, // hlt
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        let exit = m.run_user(&mut cpu).unwrap();
        assert_eq!(exit, fault(13, Some(0), None));
        assert_eq!(cpu.eip, CODE + 16);
        assert_eq!((cpu.eax, cpu.ecx), (42, 107));
        assert_eq!(cpu.esp, STACK_TOP);
        assert_eq!(cpu.cs.selector, 0x1B);
    });
}

#[test]
fn int80_is_a_syscall_exit() {
    in_child("int80_is_a_syscall_exit", || {
        let code = [
            0xB8, 4, 0, 0, 0, // mov eax, 4
            0xBB, 0x78, 0x56, 0x34, 0x12, // mov ebx, 0x12345678
            0xBE, 0xEF, 0xBE, 0xAD, 0xDE, // mov esi, 0xdeadbeef
            0xCD, 0x80, // int 0x80
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        cpu.edi = 0x5555_AAAA;
        cpu.ebp = 0x1234;
        assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
        assert_eq!(cpu.eip, CODE + 17);
        assert_eq!((cpu.eax, cpu.ebx, cpu.esi), (4, 0x1234_5678, 0xDEAD_BEEF));
        assert_eq!((cpu.edi, cpu.ebp), (0x5555_AAAA, 0x1234));
    });
}

#[test]
fn ud2_is_ud() {
    in_child("ud2_is_ud", || {
        let (_mem, mut m) = setup(&[0x90, 0x0F, 0x0B]);
        let mut cpu = user_state(CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(6, None, None));
        assert_eq!(cpu.eip, CODE + 1);
    });
}

#[test]
fn div_by_zero_is_de() {
    in_child("div_by_zero_is_de", || {
        let code = [
            0x31, 0xD2, // xor edx, edx
            0xB8, 1, 0, 0, 0, // mov eax, 1
            0x31, 0xC9, // xor ecx, ecx
            0xF7, 0xF1, // div ecx
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(0, None, None));
        assert_eq!(cpu.eip, CODE + 9);
        assert_eq!(cpu.eax, 1);
    });
}

#[test]
fn int3_is_bp_after_it() {
    in_child("int3_is_bp_after_it", || {
        let (_mem, mut m) = setup(&[0x90, 0xCC, 0x90]);
        let mut cpu = user_state(CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(3, None, None));
        assert_eq!(cpu.eip, CODE + 2);
    });
}

#[test]
fn int_n_is_a_software_interrupt() {
    in_child("int_n_is_a_software_interrupt", || {
        let (_mem, mut m) = setup(&[0x90, 0xCD, 0x21]);
        let mut cpu = user_state(CODE);
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            DirectExit::SoftwareInterrupt { vector: 0x21 }
        );
        assert_eq!(cpu.eip, CODE + 1);
    });
}

#[test]
fn unmapped_accesses_are_page_faults() {
    in_child("unmapped_accesses_are_page_faults", || {
        let code = [
            0xA1, 0x00, 0x00, 0x80, 0x00, // mov eax, [0x800000]
            0xA3, 0x04, 0x00, 0x80, 0x00, // mov [0x800004], eax
            0x8B, 0x0D, 0x10, 0x00, 0x20, 0x00, // mov ecx, [0x200010]
            0xA3, 0x10, 0x00, 0x20, 0x00, // mov [0x200010], eax
            0x8B, 0x0D, 0x10, 0x00, 0x00, 0x00, // mov ecx, [0x10]
        ];
        let (_mem, mut m) = setup(&code);
        m.protect(0x20_0000, 4096, Prot::RX).unwrap();
        let mut cpu = user_state(CODE);
        // Not present, user, read.
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            fault(14, Some(0b100), Some(0x80_0000))
        );
        assert_eq!(cpu.eip, CODE);
        // Not present, user, write.
        cpu.eip = CODE + 5;
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            fault(14, Some(0b110), Some(0x80_0004))
        );
        // Present (read-only, after a read made the host map it), user,
        // write. Before any touch the host reports "not present" even for
        // a mapped page: the host error code's P bit says nothing about
        // the guest's page tables.
        cpu.eip = CODE + 10;
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            fault(14, Some(0b111), Some(0x20_0010))
        );
        // Page 0 is never mapped (mmap_min_addr).
        cpu.eip = CODE + 21;
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            fault(14, Some(0b100), Some(0x10))
        );
        assert_eq!(cpu.eip, CODE + 21);
    });
}

/// User-mode shadows carry the guest's own limits (glibc's TLS offsets
/// wrap around 4 GiB), so what keeps guest user code out of the monitor
/// region is that the region is closed while it runs: a #PF there.
#[test]
fn monitor_region_is_closed_to_user_code() {
    in_child("monitor_region_is_closed_to_user_code", || {
        let mut code = vec![0xA1]; // mov eax, [MONITOR_BASE]
        code.extend_from_slice(&MONITOR_BASE.to_le_bytes());
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            fault(14, Some(0b100), Some(MONITOR_BASE))
        );
        assert_eq!(cpu.eip, CODE);
    });
}

#[test]
fn a_monitor_region_elsewhere_is_guarded_the_same_way() {
    in_child("a_monitor_region_elsewhere_is_guarded_the_same_way", || {
        // The region 4 MiB below its default place: closed to guest user
        // code through its own segments and through a host selector alike.
        let layout = Layout::at(0xFF80_0000).unwrap();
        let base = layout.base();
        let mut code = vec![0xA1]; // mov eax, [base]
        code.extend(base.to_le_bytes());
        code.push(0xF4);
        let host_ds_at = CODE + 0x100;
        let mut h = vec![0x66, 0xB8, 0x2B, 0x00, 0x8E, 0xD8, 0xBE]; // mov ds, 0x2b; mov esi, ...
        h.extend(layout.stub().to_le_bytes());
        let read = host_ds_at + h.len() as u32;
        h.extend([0x8B, 0x06]); // mov eax, [esi]
        let mut mem = GuestMemory::new(RAM).unwrap();
        mem.write(u64::from(CODE), &code).unwrap();
        mem.write(u64::from(host_ds_at), &h).unwrap();
        let mut m = Monitor::with_layout(&mem, layout).unwrap();
        assert_eq!(m.layout(), layout);
        let mut cpu = user_state(CODE);
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            fault(14, Some(0b100), Some(base))
        );
        assert_eq!(cpu.eip, CODE);
        let mut cpu = user_state(host_ds_at);
        assert!(matches!(
            m.run_user(&mut cpu).unwrap(),
            DirectExit::ForeignSelectors { .. }
        ));
        assert_eq!(cpu.eip, read);
        assert_eq!(
            m.take_deferred_exit(),
            Some(fault(14, Some(0b100), Some(layout.stub())))
        );
    });
}

/// `mov ax, 0x2b; mov ds, ax; mov esi, MONITOR_BASE + at`: DS is the
/// host's flat data segment afterwards, which reaches the monitor region.
fn load_host_ds(at: u32) -> Vec<u8> {
    let mut code = vec![0x66, 0xB8, 0x2B, 0x00, 0x8E, 0xD8, 0xBE];
    code.extend((MONITOR_BASE + at).to_le_bytes());
    code
}

/// The dword at `addr` in the monitor region, read by the test (the
/// region must be open).
fn region_dword(addr: u32) -> u32 {
    // SAFETY: the monitor region is mapped for the life of the process and
    // the caller opened it; a volatile read of one aligned dword.
    unsafe { std::ptr::read_volatile(addr as usize as *const u32) }
}

#[test]
fn the_monitor_region_is_closed_while_user_code_runs() {
    in_child("the_monitor_region_is_closed_while_user_code_runs", || {
        const MARK: u32 = 0x5453_4F48;
        let mut code = load_host_ds(0);
        let read = CODE + code.len() as u32;
        code.extend([0x8B, 0x06]); // mov eax, [esi]
        code.extend([0xC7, 0x06]); // mov dword [esi], MARK
        code.extend(MARK.to_le_bytes());
        code.push(0xF4); // hlt
                         // A write first, at the TC exit stub's page, and a read of the
                         // region's last dword.
        let write_at = CODE + 0x100;
        let mut w = load_host_ds(bt::contract::STUB_OFFSET);
        let write = write_at + w.len() as u32;
        w.extend([0xC7, 0x06]);
        w.extend(MARK.to_le_bytes());
        let top_at = CODE + 0x200;
        let mut t = load_host_ds(0x3F_FFFC);
        let top = top_at + t.len() as u32;
        t.extend([0x8B, 0x06]);
        let (mut mem, mut m) = setup(&code);
        mem.write(u64::from(write_at), &w).unwrap();
        mem.write(u64::from(top_at), &t).unwrap();
        let before = m.region_stats();
        assert_eq!((before.opens, before.closes), (0, 0));
        let stub_word = region_dword(STUB_ADDR);
        for (start, at, addr) in [
            (CODE, read, MONITOR_BASE),
            (write_at, write, STUB_ADDR),
            (top_at, top, 0xFFFF_FFFC),
        ] {
            let mut cpu = user_state(start);
            cpu.eax = 0x1234;
            let exit = m.run_user(&mut cpu).unwrap();
            assert_eq!(
                exit,
                DirectExit::ForeignSelectors {
                    sels: [Some(0x2B), None, None, None]
                }
            );
            assert_eq!(cpu.eip, at, "stopped at the first touch");
            let Some(DirectExit::Fault {
                vector: 14,
                error_code: Some(err),
                cr2: Some(cr2),
            }) = m.take_deferred_exit()
            else {
                panic!("not a page fault");
            };
            assert_eq!(cr2, addr);
            assert_eq!(err & 4, 4, "a user-mode access");
            if start == CODE {
                assert_eq!(cpu.eax, 0x2B, "the read never completed");
            }
        }
        // Three user runs in a row closed the region once.
        let after = m.region_stats();
        assert_eq!((after.opens, after.closes), (0, 1));
        // The monitor opens it when it needs it, and nothing was written.
        assert_eq!(m.scratch(), [0; 4]);
        assert_eq!(m.region_stats().opens, 1);
        assert_eq!(region_dword(MONITOR_BASE), 0);
        assert_eq!(region_dword(STUB_ADDR), stub_word);
    });
}

#[test]
fn the_monitor_region_stays_one_mapping_on_huge_pages() {
    in_child("the_monitor_region_stays_one_mapping_on_huge_pages", || {
        let (_mem, mut m) = setup(&[0xF4]);
        let huge = m.region_stats().huge_kb;
        println!("monitor region: {huge} KiB on huge pages");
        for _ in 0..3 {
            let mut cpu = user_state(CODE);
            assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
            m.scratch();
        }
        assert_eq!((m.region_stats().opens, m.region_stats().closes), (3, 3));
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let region: Vec<&str> = maps
            .lines()
            .filter(|l| {
                let start = l.split('-').next().unwrap();
                u64::from_str_radix(start, 16)
                    .is_ok_and(|a| (u64::from(MONITOR_BASE)..1 << 32).contains(&a))
            })
            .collect();
        assert_eq!(region.len(), 1, "one mapping:\n{}", region.join("\n"));
        assert!(
            region[0].starts_with("ffc00000-100000000 rwxp"),
            "{}",
            region[0]
        );
        // Changing the protection of the whole mapping keeps its huge pages.
        assert_eq!(
            bt::monitor::address_space::monitor_region_huge_kb(),
            Some(huge)
        );
    });
}

#[test]
fn the_monitor_region_is_closed_without_huge_pages_too() {
    in_child(
        "the_monitor_region_is_closed_without_huge_pages_too",
        || {
            // SAFETY: prctl with integer arguments; it only changes this
            // process's THP policy.
            assert_eq!(
                unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) },
                0
            );
            let mut code = load_host_ds(0x10_0000);
            let read = CODE + code.len() as u32;
            code.extend([0x8B, 0x06]); // mov eax, [esi]
            let (_mem, mut m) = setup(&code);
            assert_eq!(m.region_stats().huge_kb, 0, "THP is off for this process");
            for _ in 0..2 {
                let mut cpu = user_state(CODE);
                assert!(matches!(
                    m.run_user(&mut cpu).unwrap(),
                    DirectExit::ForeignSelectors { .. }
                ));
                assert_eq!(cpu.eip, read);
                assert_eq!(
                    m.take_deferred_exit(),
                    Some(fault(14, Some(0b100), Some(MONITOR_BASE + 0x10_0000)))
                );
                assert_eq!(m.scratch(), [0; 4]);
            }
            let s = m.region_stats();
            assert_eq!((s.opens, s.closes), (2, 2));
        },
    );
}

#[test]
fn popf_cannot_touch_if() {
    in_child("popf_cannot_touch_if", || {
        let code = [
            0x9C, // pushf
            0x81, 0x24, 0x24, 0xFF, 0xFD, 0xFF, 0xFF, // and dword [esp], ~IF
            0x9D, // popf
            0x9C, // pushf
            0x58, // pop eax
            0x9C, // pushf
            0x81, 0x0C, 0x24, 0x00, 0x32, 0x00, 0x00, // or dword [esp], IF|IOPL3
            0x9D, // popf
            0x9C, // pushf
            0x59, // pop ecx
            0xF9, // stc
            0xFD, // std
            0xF4, // hlt
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
        assert_eq!(cpu.eip, CODE + code.len() as u32 - 1);
        // The hardware IF stays set and IOPL stays 0 whatever POPF does:
        // PUSHF shows the host's IF, a known leak of direct execution.
        assert_eq!(cpu.eax & (flags::IF | flags::IOPL), flags::IF);
        assert_eq!(cpu.ecx & (flags::IF | flags::IOPL), flags::IF);
        // The virtual IF is the monitor's and is kept; CF and DF are the
        // guest's.
        assert_eq!(cpu.eflags & (flags::IF | flags::IOPL), flags::IF);
        assert_ne!(cpu.eflags & flags::CF, 0);
        assert_ne!(cpu.eflags & flags::DF, 0);
        assert_eq!(cpu.esp, STACK_TOP);
        // One Monitor per process.
        let mem = GuestMemory::new(RAM).unwrap();
        assert!(Monitor::new(&mem).is_err());
    });
}

#[test]
fn popf_with_virtual_if_clear() {
    in_child("popf_with_virtual_if_clear", || {
        let code = [
            0x9C, // pushf
            0x58, // pop eax
            0xFA, // cli
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        cpu.eflags = flags::FIXED1;
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
        assert_eq!(cpu.eip, CODE + 2);
        assert_eq!(cpu.eax & flags::IF, flags::IF);
        assert_eq!(cpu.eflags & flags::IF, 0);
    });
}

#[test]
fn round_trip_cost() {
    in_child("round_trip_cost", || {
        let code = [
            0xCD, 0x80, // int 0x80
            0xF4, // hlt
            0x0F, 0x0B, // ud2
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        const N: u32 = 100_000;
        // Warm up the LDT shadows and the page tables.
        assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
        let start = Instant::now();
        for i in 0..N {
            cpu.eip = CODE;
            cpu.eax = i;
            assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
        }
        let ns = start.elapsed().as_nanos() / u128::from(N);
        assert_eq!((cpu.eip, cpu.eax), (CODE + 2, N - 1));
        println!("direct-execution round trip via int 0x80 (SIGSYS): {ns} ns");
        // The cost depends on how the host delivers the exit.
        for (name, eip, vector) in [
            ("hlt (#GP, SIGSEGV)", CODE + 2, 13),
            ("ud2 (#UD, SIGILL)", CODE + 3, 6),
        ] {
            const M: u32 = N / 4;
            let start = Instant::now();
            for _ in 0..M {
                cpu.eip = eip;
                let exit = m.run_user(&mut cpu).unwrap();
                assert!(matches!(exit, DirectExit::Fault { vector: v, .. } if v == vector));
            }
            let ns = start.elapsed().as_nanos() / u128::from(M);
            println!("direct-execution round trip via {name}: {ns} ns");
        }
    });
}

/// Runs user code that another thread kicks after 20 ms: it must come
/// back `Interrupted`.
fn kicked_from_a_thread(m: &mut Monitor, cpu: &mut CpuState) {
    let kicker = m.kicker();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        kicker.kick();
    });
    assert_eq!(m.run_user(cpu).unwrap(), DirectExit::Interrupted);
    t.join().unwrap();
}

#[test]
fn timer_interrupts_an_endless_loop() {
    in_child("timer_interrupts_an_endless_loop", || {
        let code = [
            0x40, // inc eax
            0xEB, 0xFD, // jmp -3
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        for round in 1..=3 {
            let before = cpu.eax;
            let it = libc::itimerval {
                it_interval: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 0,
                },
                it_value: libc::timeval {
                    tv_sec: 0,
                    tv_usec: 20_000,
                },
            };
            // SAFETY: setitimer with a valid itimerval; SIGALRM is the
            // monitor's kick signal.
            assert_eq!(
                unsafe { libc::setitimer(libc::ITIMER_REAL, &it, std::ptr::null_mut()) },
                0
            );
            assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Interrupted);
            assert!((CODE..CODE + 3).contains(&cpu.eip), "eip {:#x}", cpu.eip);
            assert!(cpu.eax > before, "round {round}: the loop made no progress");
            println!("round {round}: loop ran {} iterations", cpu.eax - before);
        }
        // A kick from another thread works too.
        kicked_from_a_thread(&mut m, &mut cpu);
    });
}

#[test]
fn a_fault_in_monitor_code_is_fatal() {
    let name = "a_fault_in_monitor_code_is_fatal";
    if is_child(name) {
        let (_mem, _m) = setup(&[0xF4]);
        // SAFETY: deliberately invalid: page 0 is never mapped, so this
        // faults in host code, which must kill the process.
        let v = unsafe { std::ptr::read_volatile(0x10 as *const u8) };
        println!("survived a host fault, read {v}");
        return;
    }
    let out = spawn_child(name);
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "{:?}", out.status);
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("fatal signal in monitor"))
        .unwrap_or_else(|| panic!("no fatal-signal line in {err}"));
    // Where, in terms addr2line takes afterwards, and what: a user-mode
    // read of a page not present.
    assert!(line.contains(" (binary+0x"), "{line}");
    assert!(line.ends_with("trap 14 err 0x4 addr 0x10"), "{line}");
}

#[test]
fn a_kick_while_in_the_monitor_is_kept() {
    in_child("a_kick_while_in_the_monitor_is_kept", || {
        let (_mem, mut m) = setup(&[0xF4]);
        let mut cpu = user_state(CODE);
        // SAFETY: raise only sends a signal to this thread.
        assert_eq!(unsafe { libc::raise(libc::SIGALRM) }, 0);
        assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Interrupted);
        assert_eq!(cpu.eip, CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
    });
}

#[test]
fn segments_with_bases_and_limits() {
    in_child("segments_with_bases_and_limits", || {
        let code = [
            0xA1, 0x10, 0x00, 0x00, 0x00, // mov eax, [0x10]
            0x8B, 0x1D, 0x00, 0x10, 0x00, 0x00, // mov ebx, [0x1000]
        ];
        let (mut mem, mut m) = setup(&code);
        mem.write_u32(0x20_0010, 0xCAFE_BABE).unwrap();
        let mut cpu = user_state(0);
        cpu.cs.base = CODE;
        cpu.cs.limit = 0xFFFF;
        cpu.ds.base = 0x20_0000;
        cpu.ds.limit = 0xFFF;
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
        assert_eq!(cpu.eip, 5);
        assert_eq!(cpu.eax, 0xCAFE_BABE);
    });
}

#[test]
fn a_null_selector_load_is_seen() {
    in_child("a_null_selector_load_is_seen", || {
        let code = [
            0x31, 0xC0, // xor eax, eax
            0x8E, 0xC0, // mov es, ax
            0xF4, // hlt
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
        assert_eq!(cpu.es.selector, 0);
        assert!(!cpu.es.present);
        assert_eq!(cpu.ds, user_segment(0x23, false));
    });
}

#[test]
fn guest_fpu_modes_do_not_leak_into_the_host() {
    in_child("guest_fpu_modes_do_not_leak_into_the_host", || {
        let code = [
            0x68, 0x80, 0x7F, 0x00, 0x00, // push 0x7f80 (MXCSR: round to zero)
            0x0F, 0xAE, 0x14, 0x24, // ldmxcsr [esp]
            0x68, 0x7F, 0x0C, 0x00, 0x00, // push 0x0c7f (FCW: round to zero)
            0xD9, 0x2C, 0x24, // fldcw [esp]
            0xD9, 0xE8, // fld1
            0xD9, 0xE8, // fld1
            0xF4, // hlt
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
        // Round-to-nearest gives 0x3FB999999999999A, round-to-zero ...99.
        let tenth = std::hint::black_box(1.0f64) / std::hint::black_box(10.0f64);
        assert_eq!(tenth.to_bits(), 0x3FB9_9999_9999_999A);
    });
}

/// `jmp far 0x23:to`: to the host's 32-bit code segment.
fn far_jump_to_host_cs(to: u32) -> Vec<u8> {
    let mut code = vec![0xEA];
    code.extend_from_slice(&to.to_le_bytes());
    code.extend_from_slice(&0x23u16.to_le_bytes());
    code
}

/// Runs `code` at [`CODE`], which must end as foreign code on the host's
/// CS; the state it left.
fn run_to_foreign_code(code: &[u8]) -> CpuState {
    let (_mem, mut m) = setup(code);
    let mut cpu = user_state(CODE);
    assert_eq!(
        m.run_user(&mut cpu).unwrap(),
        DirectExit::ForeignCode {
            selector: 0x23,
            signal: libc::SIGSEGV
        }
    );
    cpu
}

#[test]
fn a_far_jump_to_a_host_segment_ends_the_run() {
    in_child("a_far_jump_to_a_host_segment_ends_the_run", || {
        let mut code = far_jump_to_host_cs(CODE + 7);
        code.push(0xF4); // hlt
        assert_eq!(run_to_foreign_code(&code).eip, CODE + 7);
    });
}

/// What the host's failed fast system call leaves (host CS, EAX -EFAULT,
/// a fetch fault at EIP) can be forged by a far jump to the host's CS;
/// only at the landing pad's alias, in the monitor region, is it taken as
/// the guest's SYSENTER. Elsewhere it is foreign code.
#[test]
fn a_forged_failed_fast_call_away_from_the_landing_pad_is_foreign_code() {
    in_child(
        "a_forged_failed_fast_call_away_from_the_landing_pad_is_foreign_code",
        || {
            let mut code = vec![0xB8]; // mov eax, -EFAULT
            code.extend_from_slice(&(-14i32).to_le_bytes());
            // To page 0, where the fetch faults.
            code.extend(far_jump_to_host_cs(0x10));
            let cpu = run_to_foreign_code(&code);
            assert_eq!((cpu.eip, cpu.eax), (0x10, (-14i32) as u32));
        },
    );
}

#[test]
fn misaligned_access_with_ac_is_ac() {
    in_child("misaligned_access_with_ac_is_ac", || {
        let code = [
            0x9C, // pushf
            0x81, 0x0C, 0x24, 0x00, 0x00, 0x04, 0x00, // or dword [esp], AC
            0x9D, // popf
            0xA1, 0x01, 0x00, 0x20, 0x00, // mov eax, [0x200001]
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(17, Some(0), None));
        assert_eq!(cpu.eip, CODE + 9);
        assert_ne!(cpu.eflags & flags::AC, 0);
    });
}

#[test]
fn trap_flag_single_steps() {
    in_child("trap_flag_single_steps", || {
        let code = [
            0x40, // inc eax
            0x40, // inc eax
            0x40, // inc eax
            0xF4, // hlt
        ];
        let (_mem, mut m) = setup(&code);
        let mut cpu = user_state(CODE);
        cpu.eflags |= flags::TF;
        for step in 1..=3 {
            assert_eq!(m.run_user(&mut cpu).unwrap(), fault(1, None, None));
            assert_eq!((cpu.eip, cpu.eax), (CODE + step, step));
            assert_ne!(cpu.eflags & flags::TF, 0);
        }
        cpu.eflags &= !flags::TF;
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
    });
}

#[test]
fn fs_and_gs_shadows_work_and_host_tls_survives() {
    in_child("fs_and_gs_shadows_work_and_host_tls_survives", || {
        let code = [
            0x64, 0xA1, 0x00, 0x00, 0x00, 0x00, // mov eax, fs:[0]
            0x65, 0x8B, 0x1D, 0x04, 0x00, 0x00, 0x00, // mov ebx, gs:[4]
            0xF4, // hlt
        ];
        let (mut mem, mut m) = setup(&code);
        mem.write_u32(0x20_0000, 0x1111_2222).unwrap();
        mem.write_u32(0x20_1004, 0x3333_4444).unwrap();
        thread_local! {
            static MARK: std::cell::Cell<u32> = const { std::cell::Cell::new(7) };
        }
        let mut cpu = user_state(CODE);
        cpu.fs = user_segment(0x33, false);
        cpu.fs.base = 0x20_0000;
        cpu.fs.limit = 0xFFF;
        cpu.gs = user_segment(0x3B, false);
        cpu.gs.base = 0x20_1000;
        cpu.gs.limit = 0xFFF;
        for _ in 0..3 {
            cpu.eip = CODE;
            assert_eq!(m.run_user(&mut cpu).unwrap(), fault(13, Some(0), None));
            assert_eq!((cpu.eax, cpu.ebx), (0x1111_2222, 0x3333_4444));
            // Thread-locals read through the host FS base.
            MARK.with(|c| c.set(c.get() + 1));
            assert_eq!(cpu.fs.selector, 0x33);
        }
        assert_eq!(MARK.with(|c| c.get()), 10);
        assert!(
            std::thread::spawn(|| MARK.with(|c| c.get()))
                .join()
                .unwrap()
                == 7
        );
    });
}

// What guest code finds in the registers, seen from 64-bit mode: 32-bit
// code can far-jump to the host's 64-bit code segment (0x33), and there it
// can read every register the host has (R8-R15, xmm8-15, the upper halves
// of ymm0-15, zmm16-31, k0-k7, the FS and GS bases). Such a jump ends the
// VM at its next exit (`ForeignCode`), but until then the code runs.

/// Where the 64-bit code dumps what it finds, in guest RAM.
const DUMP: u32 = 0x20_0000;
/// Where it loads its own vector values from.
const PATTERN: u32 = 0x21_0000;
/// Dump layout: RAX, RBX, RCX, RDX, RSI, RDI, RBP, RSP, R8-R15 (8 bytes
/// each); then the FS base, GS base and RFLAGS; the vector registers, 64
/// bytes a slot; k0-k7; an FXSAVE64 image (x87, MXCSR, xmm0-15).
const D_BASES: u32 = 0x80;
const D_VEC: u32 = 0x100;
const D_K: u32 = 0x900;
const D_FX: u32 = 0xA00;
/// The guest's x87 control word and MXCSR in the pattern (round down,
/// 53-bit precision, all exceptions masked; MXCSR round down).
const GUEST_FCW: u16 = 0x067F;
const GUEST_MXCSR: u32 = 0x3F80;

/// The vector registers this host has, as the 64-bit code moves them.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Vec64 {
    /// xmm0-15 (MOVDQU).
    Sse,
    /// ymm0-15 (VMOVDQU).
    Avx,
    /// zmm0-31 and k0-k7 (VMOVDQU64, KMOVQ).
    Avx512,
}

impl Vec64 {
    fn of_host() -> Vec64 {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            Vec64::Avx512
        } else if std::arch::is_x86_feature_detected!("avx") {
            Vec64::Avx
        } else {
            Vec64::Sse
        }
    }

    /// Vector registers and the bytes of each.
    fn shape(self) -> (u32, u32) {
        match self {
            Vec64::Sse => (16, 16),
            Vec64::Avx => (16, 32),
            Vec64::Avx512 => (32, 64),
        }
    }
}

/// 64-bit code: dumps the registers at [`DUMP`], loads the vector
/// registers, k0-k7, FCW and MXCSR from [`PATTERN`], then UD2.
fn dump_and_load_code(at: u32, v: Vec64) -> Vec<u8> {
    use iced_x86::{Code, Encoder, Instruction, MemoryOperand, Register};
    let mem = |base: Register, off: u32| MemoryOperand::with_base_displ(base, i64::from(off));
    let mut insns = vec![
        Instruction::with1(Code::Push_r64, Register::RAX).unwrap(),
        Instruction::with2(Code::Mov_r32_imm32, Register::EAX, DUMP).unwrap(),
        Instruction::with1(Code::Pop_rm64, mem(Register::RAX, 0)).unwrap(),
    ];
    let gprs = [
        Register::RBX,
        Register::RCX,
        Register::RDX,
        Register::RSI,
        Register::RDI,
        Register::RBP,
        Register::RSP,
    ];
    let high = (0..8).map(|i| Register::R8 + i);
    for (i, r) in gprs.into_iter().chain(high).enumerate() {
        let off = 8 * (i as u32 + 1);
        insns.push(Instruction::with2(Code::Mov_rm64_r64, mem(Register::RAX, off), r).unwrap());
    }
    for (i, code) in [Code::Rdfsbase_r64, Code::Rdgsbase_r64]
        .into_iter()
        .enumerate()
    {
        insns.push(Instruction::with1(code, Register::RCX).unwrap());
        let off = D_BASES + 8 * i as u32;
        insns.push(
            Instruction::with2(Code::Mov_rm64_r64, mem(Register::RAX, off), Register::RCX).unwrap(),
        );
    }
    insns.push(Instruction::with(Code::Pushfq));
    insns.push(Instruction::with1(Code::Pop_r64, Register::RCX).unwrap());
    insns.push(
        Instruction::with2(
            Code::Mov_rm64_r64,
            mem(Register::RAX, D_BASES + 16),
            Register::RCX,
        )
        .unwrap(),
    );
    insns.push(Instruction::with1(Code::Fxsave64_m512byte, mem(Register::RAX, D_FX)).unwrap());
    let (count, _) = v.shape();
    let (store, load, first) = match v {
        Vec64::Sse => (
            Code::Movdqu_xmmm128_xmm,
            Code::Movdqu_xmm_xmmm128,
            Register::XMM0,
        ),
        Vec64::Avx => (
            Code::VEX_Vmovdqu_ymmm256_ymm,
            Code::VEX_Vmovdqu_ymm_ymmm256,
            Register::YMM0,
        ),
        Vec64::Avx512 => (
            Code::EVEX_Vmovdqu64_zmmm512_k1z_zmm,
            Code::EVEX_Vmovdqu64_zmm_k1z_zmmm512,
            Register::ZMM0,
        ),
    };
    for i in 0..count {
        let off = D_VEC + 64 * i;
        insns.push(Instruction::with2(store, mem(Register::RAX, off), first + i).unwrap());
    }
    if v == Vec64::Avx512 {
        for i in 0..8 {
            let off = D_K + 8 * i;
            insns.push(
                Instruction::with2(
                    Code::VEX_Kmovq_m64_kr,
                    mem(Register::RAX, off),
                    Register::K0 + i,
                )
                .unwrap(),
            );
        }
    }
    // Now the guest's own values.
    insns.push(Instruction::with2(Code::Mov_r32_imm32, Register::ECX, PATTERN).unwrap());
    for i in 0..count {
        let off = D_VEC + 64 * i;
        insns.push(Instruction::with2(load, first + i, mem(Register::RCX, off)).unwrap());
    }
    if v == Vec64::Avx512 {
        for i in 0..8 {
            let off = D_K + 8 * i;
            insns.push(
                Instruction::with2(
                    Code::VEX_Kmovq_kr_km64,
                    Register::K0 + i,
                    mem(Register::RCX, off),
                )
                .unwrap(),
            );
        }
    }
    insns.push(Instruction::with1(Code::Fldcw_m2byte, mem(Register::RCX, D_FX)).unwrap());
    insns.push(Instruction::with1(Code::Ldmxcsr_m32, mem(Register::RCX, D_FX + 24)).unwrap());
    insns.push(Instruction::with(Code::Ud2));
    let mut enc = Encoder::new(64);
    let mut ip = u64::from(at);
    for i in &insns {
        ip += enc.encode(i, ip).unwrap() as u64;
    }
    enc.take_buffer()
}

/// Fills every vector register the host has with ones (zmm0-31 and k1-k7
/// too on AVX-512 hosts) and leaves a host address in the x87 FIP, as the
/// monitor's own code might: what guest code must never see.
fn dirty_host_registers(v: Vec64) {
    #[target_feature(enable = "avx2")]
    unsafe fn ymm_ones() {
        // SAFETY: writes only the registers it names as clobbered.
        unsafe {
            asm!(
                "vpcmpeqb ymm0, ymm0, ymm0", "vpcmpeqb ymm1, ymm1, ymm1",
                "vpcmpeqb ymm2, ymm2, ymm2", "vpcmpeqb ymm3, ymm3, ymm3",
                "vpcmpeqb ymm4, ymm4, ymm4", "vpcmpeqb ymm5, ymm5, ymm5",
                "vpcmpeqb ymm6, ymm6, ymm6", "vpcmpeqb ymm7, ymm7, ymm7",
                "vpcmpeqb ymm8, ymm8, ymm8", "vpcmpeqb ymm9, ymm9, ymm9",
                "vpcmpeqb ymm10, ymm10, ymm10", "vpcmpeqb ymm11, ymm11, ymm11",
                "vpcmpeqb ymm12, ymm12, ymm12", "vpcmpeqb ymm13, ymm13, ymm13",
                "vpcmpeqb ymm14, ymm14, ymm14", "vpcmpeqb ymm15, ymm15, ymm15",
                out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                options(nomem, nostack),
            );
        }
    }
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn zmm_ones() {
        // SAFETY: writes only the registers it names as clobbered.
        unsafe {
            asm!(
                ".irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
                "vpternlogd zmm\\n, zmm\\n, zmm\\n, 0xff",
                ".endr",
                ".irp n, 1,2,3,4,5,6,7",
                "kxnorq k\\n, k\\n, k\\n",
                ".endr",
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm12") _, out("zmm13") _, out("zmm14") _, out("zmm15") _,
                out("zmm16") _, out("zmm17") _, out("zmm18") _, out("zmm19") _,
                out("zmm20") _, out("zmm21") _, out("zmm22") _, out("zmm23") _,
                out("zmm24") _, out("zmm25") _, out("zmm26") _, out("zmm27") _,
                out("zmm28") _, out("zmm29") _, out("zmm30") _, out("zmm31") _,
                out("k1") _, out("k2") _, out("k3") _, out("k4") _,
                out("k5") _, out("k6") _, out("k7") _,
                options(nomem, nostack),
            );
        }
    }
    let one = 1.0f64;
    // SAFETY: an x87 load and pop of a local leaves the x87 stack as it
    // was; FIP/FDP then point into this function and at its frame.
    unsafe {
        asm!("fld qword ptr [{0}]", "fstp st(0)", in(reg) &one, options(nostack));
    }
    match v {
        Vec64::Sse => {}
        // SAFETY: the host has the features (Vec64::of_host).
        Vec64::Avx => unsafe { ymm_ones() },
        // SAFETY: as above.
        Vec64::Avx512 => unsafe { zmm_ones() },
    }
}

fn dump_u64(mem: &GuestMemory, off: u32) -> u64 {
    let mut b = [0u8; 8];
    mem.read(u64::from(DUMP + off), &mut b).unwrap();
    u64::from_le_bytes(b)
}

fn dump_bytes(mem: &GuestMemory, off: u32, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    mem.read(u64::from(DUMP + off), &mut b).unwrap();
    b
}

/// Asserts that the dump's `what` registers at `off` (slots of `slot`
/// bytes) hold `want`, naming the first register that does not.
fn assert_dump(mem: &GuestMemory, off: u32, want: &[u8], slot: usize, what: &str) {
    let got = dump_bytes(mem, off, want.len());
    for (i, (g, w)) in got.chunks(slot).zip(want.chunks(slot)).enumerate() {
        assert!(
            g == w,
            "{what}: register {i} holds {g:02x?}\n  the guest's value is {w:02x?}"
        );
    }
}

/// The guest's values: distinct, none zero.
fn vector_pattern(v: Vec64) -> (Vec<u8>, Vec<u8>) {
    let (count, bytes) = v.shape();
    let vecs = (0..count * 64)
        .map(|i| {
            if i % 64 < bytes {
                (i % 251) as u8 + 1
            } else {
                0
            }
        })
        .collect();
    let k = if v == Vec64::Avx512 {
        (0..64).map(|i| 0x80 | i as u8).collect()
    } else {
        vec![0; 64]
    };
    (vecs, k)
}

#[test]
fn registers_at_entry_are_the_guests_and_survive_an_exit() {
    in_child(
        "registers_at_entry_are_the_guests_and_survive_an_exit",
        || {
            let v = Vec64::of_host();
            let (count, bytes) = v.shape();
            println!("vector registers checked: {count} of {bytes} bytes ({v:?})");
            const CODE64: u32 = CODE + 0x100;
            let mut code = vec![0xEA]; // jmp far 0x33:CODE64
            code.extend(CODE64.to_le_bytes());
            code.extend(0x33u16.to_le_bytes());
            let (mut mem, mut m) = setup(&code);
            mem.write(u64::from(CODE64), &dump_and_load_code(CODE64, v))
                .unwrap();
            let (vecs, k) = vector_pattern(v);
            mem.write(u64::from(PATTERN + D_VEC), &vecs).unwrap();
            mem.write(u64::from(PATTERN + D_K), &k).unwrap();
            mem.write(u64::from(PATTERN + D_FX), &GUEST_FCW.to_le_bytes())
                .unwrap();
            mem.write(u64::from(PATTERN + D_FX + 24), &GUEST_MXCSR.to_le_bytes())
                .unwrap();
            let ud2 = |m: &mut Monitor, cpu: &mut CpuState| {
                cpu.eip = CODE;
                dirty_host_registers(v);
                assert_eq!(
                    m.run_user(cpu).unwrap(),
                    DirectExit::ForeignCode {
                        selector: 0x33,
                        signal: libc::SIGILL
                    }
                );
            };

            let mut cpu = user_state(CODE);
            cpu.eflags |= flags::CF | flags::DF;
            [
                cpu.eax, cpu.ecx, cpu.edx, cpu.ebx, cpu.ebp, cpu.esi, cpu.edi,
            ] = [0xA1, 0xC1, 0xD1, 0xB1, 0xB9, 0x51, 0xD9];
            ud2(&mut m, &mut cpu);
            // Only the guest's registers, zero-extended, and zeros.
            let gprs: Vec<u64> = (0..16).map(|i| dump_u64(&mem, 8 * i)).collect();
            assert_eq!(
                gprs,
                [
                    0xA1,
                    0xB1,
                    0xC1,
                    0xD1,
                    0x51,
                    0xD9,
                    0xB9,
                    u64::from(STACK_TOP),
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0
                ],
                "RAX RBX RCX RDX RSI RDI RBP RSP R8-R15"
            );
            assert_eq!(
                (dump_u64(&mem, D_BASES), dump_u64(&mem, D_BASES + 8)),
                (0, 0),
                "FS and GS bases (the guest's FS and GS are null)"
            );
            assert_eq!(
                dump_u64(&mem, D_BASES + 16),
                u64::from(flags::FIXED1 | flags::IF | flags::CF | flags::DF),
                "RFLAGS"
            );
            // The architectural init state: FCW 0x37F, MXCSR 0x1F80,
            // everything else zero, FIP and FDP included.
            let fx = dump_bytes(&mem, D_FX, 416);
            let mut init = vec![0u8; 416];
            init[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
            init[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
            let mask = u32::from_le_bytes(fx[28..32].try_into().unwrap());
            init[28..32].copy_from_slice(&mask.to_le_bytes());
            assert_eq!(fx, init, "FXSAVE64 image at the first entry");
            let zero_vecs = vec![0u8; (count * 64) as usize];
            assert_dump(
                &mem,
                D_VEC,
                &zero_vecs,
                64,
                "vector registers at the first entry",
            );
            assert_dump(&mem, D_K, &[0; 64], 8, "k0-k7 at the first entry");

            // The guest's values are its own after the exit, whatever
            // the monitor did with the registers meanwhile.
            ud2(&mut m, &mut cpu);
            assert_dump(&mem, D_VEC, &vecs, 64, "vector registers after an exit");
            assert_dump(&mem, D_K, &k, 8, "k0-k7 after an exit");
            let fx = dump_bytes(&mem, D_FX, 32);
            assert_eq!(fx[0..2], GUEST_FCW.to_le_bytes(), "FCW");
            assert_eq!(fx[24..28], GUEST_MXCSR.to_le_bytes(), "MXCSR");
            assert_eq!(
                (8..16).map(|i| dump_u64(&mem, 8 * i)).collect::<Vec<_>>(),
                [0; 8],
                "R8-R15"
            );
            assert_eq!(
                (dump_u64(&mem, D_BASES), dump_u64(&mem, D_BASES + 8)),
                (0, 0),
                "FS and GS bases"
            );
        },
    );
}

/// Guest RAM with `code` at [`CODE`] and a monitor over it that runs guest
/// user code in a process of its own.
fn setup_user_process(code: &[u8]) -> (GuestMemory, Monitor) {
    let mut mem = GuestMemory::new(RAM).unwrap();
    mem.write(u64::from(CODE), code).unwrap();
    let monitor = Monitor::with_user_process(&mem).unwrap();
    assert!(monitor.has_user_process());
    (mem, monitor)
}

#[test]
fn user_code_runs_in_its_own_process() {
    in_child("user_code_runs_in_its_own_process", || {
        let code = [
            0xB8, 4, 0, 0, 0, // mov eax, 4
            0xBB, 0x78, 0x56, 0x34, 0x12, // mov ebx, 0x12345678
            0xCD, 0x80, // int 0x80
            0x0F, 0x0B, // ud2
        ];
        let (_mem, mut m) = setup_user_process(&code);
        let child = m.user_process_id().unwrap();
        // SAFETY: getpid has no preconditions.
        assert_ne!(child, unsafe { libc::getpid() });
        let mut cpu = user_state(CODE);
        cpu.edi = 0x5555_AAAA;
        assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
        assert_eq!(cpu.eip, CODE + 12);
        assert_eq!((cpu.eax, cpu.ebx, cpu.edi), (4, 0x1234_5678, 0x5555_AAAA));
        assert_eq!(m.run_user(&mut cpu).unwrap(), fault(6, None, None));
        assert_eq!(cpu.eip, CODE + 12);
        assert_eq!(m.handoffs(), 2);
    });
}

#[test]
fn mapping_changes_reach_the_user_process() {
    in_child("mapping_changes_reach_the_user_process", || {
        let code = [
            0xA1, 0x00, 0x00, 0x20, 0x00, // mov eax, [0x200000]
            0xCD, 0x80, // int 0x80
        ];
        let (mut mem, mut m) = setup_user_process(&code);
        mem.write(0x20_0000, &0xCAFE_F00Du32.to_le_bytes()).unwrap();
        // Unmapped after the fork: the child must not see the page.
        m.unmap(0x20_0000, 4096).unwrap();
        let mut cpu = user_state(CODE);
        assert_eq!(
            m.run_user(&mut cpu).unwrap(),
            fault(14, Some(4), Some(0x20_0000))
        );
        assert_eq!(cpu.eip, CODE);
        // Mapped again with user-only rights that differ from this
        // process's: the child reads it; this process keeps no access.
        m.map_views(
            0x20_0000,
            0x20_0000,
            4096,
            Some(Prot::NONE),
            Some(Prot::R),
            false,
        )
        .unwrap();
        assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
        assert_eq!(cpu.eax, 0xCAFE_F00D);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| l.starts_with("00200000-"))
            .expect("the page's line");
        assert!(line.contains(" ---"), "{line}");
    });
}

#[test]
fn vector_state_crosses_to_the_user_process_and_back() {
    in_child("vector_state_crosses_to_the_user_process_and_back", || {
        let code = [
            0x66, 0x0F, 0x6E, 0xC0, // movd xmm0, eax
            0xCD, 0x80, // int 0x80
            0x66, 0x0F, 0x7E, 0xC1, // movd ecx, xmm0
            0xCD, 0x80, // int 0x80
        ];
        let (_mem, mut m) = setup_user_process(&code);
        let mut cpu = user_state(CODE);
        cpu.eax = 0x1357_9BDF;
        assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
        assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
        assert_eq!(cpu.ecx, 0x1357_9BDF);
    });
}

#[test]
fn a_timer_interrupts_user_code_in_its_own_process() {
    in_child("a_timer_interrupts_user_code_in_its_own_process", || {
        let code = [
            0x40, // inc eax
            0xEB, 0xFD, // jmp -3
        ];
        let (_mem, mut m) = setup_user_process(&code);
        let mut cpu = user_state(CODE);
        kicked_from_a_thread(&mut m, &mut cpu);
        assert!((CODE..CODE + 3).contains(&cpu.eip), "eip {:#x}", cpu.eip);
        assert!(cpu.eax > 0, "the loop made no progress");
    });
}

#[test]
fn a_dead_user_process_is_an_error() {
    in_child("a_dead_user_process_is_an_error", || {
        let (_mem, mut m) = setup_user_process(&[0xCD, 0x80]);
        let child = m.user_process_id().unwrap();
        // SAFETY: kill only sends a signal, to our own child.
        assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
        let mut cpu = user_state(CODE);
        let err = m.run_user(&mut cpu).unwrap_err().to_string();
        assert!(
            err.contains("user-code process") && err.contains("signal 9"),
            "{err}"
        );
    });
}

/// The same with kicks every 5 ms, as the engine's timers send them: each
/// cuts the monitor's sleep short, so a check that waited for a sleep to
/// time out never came (a run hung for minutes in the test suite).
#[test]
fn a_dead_user_process_is_noticed_between_kicks() {
    in_child("a_dead_user_process_is_noticed_between_kicks", || {
        let (_mem, mut m) = setup_user_process(&[0xCD, 0x80]);
        let child = m.user_process_id().unwrap();
        // SAFETY: kill only sends a signal, to our own child.
        assert_eq!(unsafe { libc::kill(child, libc::SIGKILL) }, 0);
        let kicker = m.kicker();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        let kicks = std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                kicker.kick();
                std::thread::sleep(std::time::Duration::from_millis(5));
                if start.elapsed().as_secs() >= 10 {
                    // The monitor hangs: fail the child instead of waiting.
                    eprintln!("the monitor did not notice the dead user process in 10 s");
                    std::process::exit(3);
                }
            }
        });
        let start = Instant::now();
        let mut cpu = user_state(CODE);
        let err = loop {
            match m.run_user(&mut cpu) {
                // A kick that came before the hand-off: no run.
                Ok(DirectExit::Interrupted) if start.elapsed().as_secs() < 5 => continue,
                other => break other,
            }
        };
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        kicks.join().unwrap();
        let err = err.unwrap_err().to_string();
        assert!(err.contains("signal 9"), "{err}");
        assert!(
            start.elapsed().as_secs() < 2,
            "noticed after {:?}",
            start.elapsed()
        );
    });
}

/// SYSENTER with the vDSO's convention (EBP = ESP, the caller's EBP in
/// the word there) and known values in every other register.
fn sysenter_code() -> Vec<u8> {
    vec![
        0x68, 0x77, 0x77, 0x77, 0x77, // push 0x77777777
        0x89, 0xE5, // mov ebp, esp
        0xB8, 0x40, 0, 0, 0, // mov eax, 0x40
        0xBB, 0x11, 0x11, 0x11, 0x11, // mov ebx, 0x11111111
        0xB9, 0x22, 0x22, 0x22, 0x22, // mov ecx, 0x22222222
        0xBA, 0x33, 0x33, 0x33, 0x33, // mov edx, 0x33333333
        0xBE, 0x44, 0x44, 0x44, 0x44, // mov esi, 0x44444444
        0xBF, 0x55, 0x55, 0x55, 0x55, // mov edi, 0x55555555
        0xF9, // stc
        0x0F, 0x34, // sysenter
        0xF4, // hlt
    ]
}

/// What the exit of [`sysenter_code`] must be: on Intel hosts the host's
/// SYSENTER path trapped by seccomp, with the guest's registers (EBP its
/// own, not the word the host loaded from the stack); on AMD hosts the #UD
/// compatibility mode raises, at the instruction.
fn check_sysenter_exit(exit: DirectExit, cpu: &CpuState) {
    let ebp = STACK_TOP - 4;
    if bt::monitor::host_fast_call_is_sysenter() {
        assert_eq!(exit, DirectExit::FastSystemCall { sysenter: true });
        assert_eq!(
            [cpu.eax, cpu.ebx, cpu.ecx, cpu.edx, cpu.esi, cpu.edi, cpu.ebp],
            [
                0x40,
                0x1111_1111,
                0x2222_2222,
                0x3333_3333,
                0x4444_4444,
                0x5555_5555,
                ebp
            ]
        );
        assert_eq!(cpu.eip, 0, "the host keeps no EIP for SYSENTER");
    } else {
        println!("AMD host: SYSENTER raises #UD in compatibility mode");
        assert_eq!(exit, fault(6, None, None));
        assert_eq!(cpu.eip, CODE + 38);
        assert_eq!((cpu.ebp, cpu.esp), (ebp, ebp));
    }
    assert_ne!(cpu.eflags & flags::CF, 0, "the guest's flags");
    assert_eq!(cpu.cs.selector, 0x1B);
}

#[test]
fn sysenter_is_a_fast_system_call_exit() {
    in_child("sysenter_is_a_fast_system_call_exit", || {
        let (_mem, mut m) = setup(&sysenter_code());
        let mut cpu = user_state(CODE);
        let exit = m.run_user(&mut cpu).unwrap();
        check_sysenter_exit(exit, &cpu);
    });
}

#[test]
fn sysenter_in_the_user_process_is_a_fast_system_call_exit() {
    in_child(
        "sysenter_in_the_user_process_is_a_fast_system_call_exit",
        || {
            let (_mem, mut m) = setup_user_process(&sysenter_code());
            let mut cpu = user_state(CODE);
            let exit = m.run_user(&mut cpu).unwrap();
            check_sysenter_exit(exit, &cpu);
        },
    );
}

#[test]
fn sysenter_with_an_unreadable_ebp_is_a_fast_system_call_with_efault() {
    in_child(
        "sysenter_with_an_unreadable_ebp_is_a_fast_system_call_with_efault",
        || {
            let code = [
                0xBD, 0x10, 0, 0, 0, // mov ebp, 0x10 (page 0: never mapped)
                0xB8, 0x40, 0, 0, 0, // mov eax, 0x40
                0x0F, 0x34, // sysenter
                0xF4, // hlt
            ];
            let (_mem, mut m) = setup(&code);
            let mut cpu = user_state(CODE);
            let exit = m.run_user(&mut cpu).unwrap();
            if bt::monitor::host_fast_call_is_sysenter() {
                // The host's read of [EBP] failed before its filter ran: it
                // returned -EFAULT to its landing pad, cut to 32 bits in
                // compatibility mode, where the fetch faulted (docs/bt.md).
                assert_eq!(exit, DirectExit::FastSystemCall { sysenter: true });
                assert_eq!((cpu.eax, cpu.ebp, cpu.eip), ((-14i32) as u32, 0x10, 0));
            } else {
                assert_eq!(exit, fault(6, None, None));
                assert_eq!(cpu.eip, CODE + 10);
            }
        },
    );
}

/// The host's fast system-call path returns -EFAULT to its vDSO's
/// landing pad cut to 32 bits, which used to fall anywhere in the guest's
/// 4 GiB (guest code there ran on the host's segment). The monitor moves
/// the vDSO so the alias lies in its region; glibc's calls into the old
/// place (the clock) keep working.
#[test]
fn the_host_vdso_is_parked_with_its_landing_pad_in_the_monitor_region() {
    in_child(
        "the_host_vdso_is_parked_with_its_landing_pad_in_the_monitor_region",
        || {
            let before = std::time::Instant::now();
            let wall = std::time::SystemTime::now();
            // A thread that reads the clock (vDSO code) all through the
            // move: a read in the vDSO's emptied range waits for the copy.
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let reads = {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::black_box(std::time::Instant::now());
                        n += 1;
                    }
                    n
                })
            };
            std::thread::sleep(std::time::Duration::from_millis(20));
            let (_mem, _m) = setup(&[0xF4]);
            std::thread::sleep(std::time::Duration::from_millis(20));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let n = reads
                .join()
                .expect("the clock-reading thread survives the move");
            println!(
                "{n} clock reads, {} held during the move",
                bt::monitor::host_vdso::faults_held()
            );
            assert!(n > 0);
            let parked = bt::monitor::host_vdso::parked();
            let Some(bt::monitor::host_vdso::Parked::At(at)) = parked else {
                panic!("the vDSO was not moved: {parked:?}");
            };
            assert_eq!(*at as u32, MONITOR_BASE, "low 32 bits of {at:#x}");
            let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
            let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
            assert!(line.starts_with(&format!("{at:x}-")), "{line}");
            // Nothing runs it there: no host code at a less random place.
            assert!(line.contains(" ---p "), "{line}");
            // SAFETY: getauxval only reads the auxiliary vector.
            let old = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
            assert_ne!(old, *at);
            // glibc calls the vDSO at its old place: the copy there.
            assert!(before.elapsed() < std::time::Duration::from_secs(60));
            assert!(wall.elapsed().is_ok());
            let mut ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: clock_gettime writes the timespec we own.
            assert_eq!(
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
                0
            );
            assert!(ts.tv_sec > 0 || ts.tv_nsec > 0);
        },
    );
}

#[test]
fn syscall_from_32_bit_code_is_ud_or_a_fast_system_call_exit() {
    in_child(
        "syscall_from_32_bit_code_is_ud_or_a_fast_system_call_exit",
        || {
            let code = [
                0x89, 0xE5, // mov ebp, esp
                0xB8, 0x40, 0, 0, 0, // mov eax, 0x40
                0x0F, 0x05, // syscall
                0xF4, // hlt
            ];
            let (_mem, mut m) = setup(&code);
            let mut cpu = user_state(CODE);
            let exit = m.run_user(&mut cpu).unwrap();
            if bt::monitor::host_fast_call_is_sysenter() {
                // Intel: SYSCALL from compatibility mode is #UD.
                assert_eq!(exit, fault(6, None, None));
                assert_eq!(cpu.eip, CODE + 7);
            } else {
                // AMD: the host's SYSCALL path took it and lost its EIP;
                // the engine gives the guest the #UD its CPU model has.
                assert_eq!(exit, DirectExit::FastSystemCall { sysenter: false });
                assert_eq!((cpu.eip, cpu.eax), (0, 0x40));
                assert_eq!((cpu.ebp, cpu.esp), (STACK_TOP, STACK_TOP));
            }
        },
    );
}

/// Guest user code sets NT with POPF (any CPL may), then exits: the
/// kernel entered the signal handler with the guest's NT, host code kept
/// it, and the next entry's IRETQ raised #GP (IRET with NT is #GP in
/// 64-bit mode): an unprivileged guest process stopped the VM.
fn nt_stays_the_guests(mut m: Monitor) {
    let mut cpu = user_state(CODE);
    assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
    assert_ne!(cpu.eflags & flags::NT, 0, "the guest's NT");
    cpu.eax = 7;
    assert_eq!(m.run_user(&mut cpu).unwrap(), DirectExit::Syscall);
    assert_eq!(cpu.eax, 8);
    assert_ne!(cpu.eflags & flags::NT, 0, "the guest's NT");
}

const NT_CODE: [u8; 14] = [
    0x9C, // pushf
    0x81, 0x0C, 0x24, 0x00, 0x40, 0x00, 0x00, // or dword [esp], NT
    0x9D, // popf
    0xCD, 0x80, // int 0x80
    0x40, // inc eax
    0xCD, 0x80, // int 0x80
];

#[test]
fn nt_set_by_guest_user_code_stays_the_guests() {
    in_child("nt_set_by_guest_user_code_stays_the_guests", || {
        let (_mem, m) = setup(&NT_CODE);
        nt_stays_the_guests(m);
    });
}

#[test]
fn nt_set_by_guest_user_code_stays_the_guests_in_the_user_process() {
    in_child(
        "nt_set_by_guest_user_code_stays_the_guests_in_the_user_process",
        || {
            let (_mem, m) = setup_user_process(&NT_CODE);
            nt_stays_the_guests(m);
        },
    );
}
