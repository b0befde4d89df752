//! The world switch between the monitor (64-bit host code) and guest user
//! code running directly in compatibility mode.
//!
//! Entry: [`enter`] saves the host's callee-saved registers, stack pointer,
//! FS/GS bases, MXCSR, x87 control word and (with protection
//! keys) PKRU in the host area, loads the guest's vector state (XRSTOR of
//! its image, unless a run of translated code goes without it:
//! [`HostArea::vec_lazy`]), PKRU, shadow data segments and registers, and
//! `iretq`s into the guest's shadow CS.
//!
//! Exit: every way out of guest code is a host signal or, from translated
//! code, a far jump to the TC exit stub. The handler (on the sigaltstack,
//! because the guest's stack is no host stack) copies the guest state from
//! the ucontext into the host area and the guest's vector state out of
//! the signal frame into the guest image, then jumps to the exit stub past
//! its XSAVE (`popek_bt_exit_stub_saved`), leaving the frame behind. Where
//! it cannot (no full XSAVE image in the frame, or a host with protection
//! keys) it rewrites the ucontext so that sigreturn "returns" into the
//! exit stub (`popek_bt_exit_stub`, or `popek_bt_exit_stub_pkru`) in
//! 64-bit mode on the host stack saved at entry. The stub saves the
//! guest's vector state and PKRU, restores the host state and returns from
//! `enter` as if it were an ordinary call.
//!
//! Register state: guest code, which can reach 64-bit mode with a far jump
//! to the host's code segment, must find only its own values or zeros in
//! every register, and keeps its values across exits. The guest's vector
//! state is an XSAVE image of every user component the host enables in
//! XCR0 (see [`Xstate`]), and the exit stub zeroes those registers before
//! host code runs (VZEROALL and FNINIT, or an XRSTOR of the init state
//! where the image holds more than x87, SSE and AVX), so neither side sees
//! the other's data. General registers the guest does not own are zeroed
//! at entry, and so are the FS and GS bases before the guest's selectors
//! are loaded.
//!
//! The state is split in two. The [`HostArea`] holds everything the entry,
//! the exits and the signal handler need; it lives above 4 GiB, where
//! 32-bit code cannot form an address at all, so guest user code cannot
//! reach it whatever segment it loads. The [`VcpuArea`] holds what
//! translated code reads and writes through GS; it lives at the start of
//! the monitor region, below 4 GiB, which is inaccessible while guest user
//! code runs (see [`super::gate`]): nothing on the way in or out of guest
//! user code may touch it.

use core::arch::{asm, global_asm};
use core::mem::offset_of;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

use super::error::MonitorError;
use crate::contract::{self, Layout, VcpuArea};

/// The host side of the vCPU: guest registers in and out, the saved host
/// state and the exit information. One page-aligned mapping above 4 GiB,
/// found by the signal trampoline through a static and by the TC exit stub
/// through an address patched into its copy.
#[repr(C)]
#[derive(Debug, Default)]
pub struct HostArea {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    pub gpr: [u32; 8],
    /// Guest EIP.
    pub eip: u32,
    /// Guest EFLAGS as the hardware holds them (IF set, IOPL 0).
    pub eflags: u32,
    /// Host selectors of the guest's CS, SS, DS, ES, FS, GS.
    pub sel: [u16; 6],
    _pad0: u32,
    /// Host RSP inside `enter`, after the callee-saved registers.
    pub host_rsp: u64,
    /// Host FS base (the thread pointer).
    pub host_fsbase: u64,
    /// Host GS base.
    pub host_gsbase: u64,
    /// Host MXCSR.
    pub host_mxcsr: u32,
    /// Host x87 control word.
    pub host_fcw: u16,
    /// Host CS (the 64-bit code selector, 0x33 on Linux).
    pub host_cs: u16,
    /// Host SS (0x2b on Linux).
    pub host_ss: u16,
    _pad1: u16,
    /// Signal that ended the run, 0 if none (entry aborted for a kick).
    pub exit_signal: u32,
    /// REG_TRAPNO of the exit.
    pub exit_trapno: u32,
    /// REG_ERR of the exit.
    pub exit_err: u32,
    /// Non-zero when the signal arrived before the guest ran (at entry).
    pub exit_at_entry: u32,
    /// si_addr of the exit (CR2 for a page fault).
    pub exit_addr: u64,
    /// Thread id of the vCPU thread, to aim kicks at.
    pub vcpu_tid: i32,
    /// Set by a kick that arrived while the monitor ran.
    pub pending_kick: u32,
    /// Set by the TC exit stub: the exit was a far jump, not a signal.
    pub tc_exit: u32,
    _pad2: u32,
    /// Address of the exit stub in the host's text (`popek_bt_exit_stub`,
    /// or `popek_bt_exit_stub_pkru` with protection keys): where the signal
    /// handler, the kick check at entry and the TC exit stub (copied below
    /// 4 GiB, out of reach of a relative jump) send every exit.
    pub host_exit: u64,
    /// The XSAVE components of the guest's image (the requested-feature
    /// bitmap of every XSAVE and XRSTOR of it, EDX:EAX).
    pub xsave_mask: u64,
    /// Address of the init-state image (XSTATE_BV 0) that the exit stub
    /// loads so that no guest vector data stays in the host's registers.
    pub init_image: u64,
    /// Non-zero when the exit stub saves with XSAVEOPT rather than XSAVE.
    pub xsaveopt: u32,
    /// Host PKRU, saved at entry (hosts with protection keys only).
    pub host_pkru: u32,
    /// The guest's PKRU (hosts with protection keys only; 0, all keys
    /// allowed, at reset). AD and WD of key 0, the key of every page of
    /// the process, are dropped at each exit: the entry and the exit stub
    /// must reach the host area and the host stack under it.
    pub guest_pkru: u32,
    /// Non-zero when the host has protection keys enabled: RDPKRU and
    /// WRPKRU raise #UD without CR4.PKE, so the entry switches PKRU only
    /// then (and `host_exit` is the exit stub that switches it back).
    pub pkru: u32,
    /// Host address of the TC exit stub's copy in the monitor region: the
    /// signal handler treats a signal there as one in host code.
    pub tc_stub: u32,
    /// Host address of the vCPU area, the first page of the monitor region.
    pub vcpu_area: u32,
    /// Non-zero while translated code runs without the guest's vector
    /// state (GS is `ldt::MONITOR_GS_LAZY`): the entry does not restore
    /// it, and the exit neither saves the registers (they hold the
    /// monitor's) nor clears them. Set by the monitor from the selectors
    /// of each run, never from the guest's.
    pub vec_lazy: u32,
}

/// Offset of the guest's XSAVE image from the host area: right after the
/// [`HostArea`], 64-byte aligned as XSAVE wants (the mapping is page
/// aligned). The image is [`Xstate::size`] bytes; the init-state image
/// follows it.
pub const GUEST_IMAGE_OFFSET: usize = std::mem::size_of::<HostArea>().next_multiple_of(64);

/// The XSAVE components the world switch saves and restores, found from
/// the host's XCR0 and CPUID leaf 0xD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xstate {
    /// The user components the host enables in XCR0, except PKRU (saved
    /// apart, see [`HostArea::guest_pkru`]), the AMX tiles (bits 17-18,
    /// 64-bit code only) and any other component XFD governs (an XRSTOR
    /// of it would raise #NM until the process asked the kernel for it).
    pub mask: u64,
    /// Bytes of a standard-format image of those components.
    pub size: u32,
    /// XSAVEOPT is available.
    pub xsaveopt: bool,
    /// The host has protection keys enabled (CR4.PKE, seen as CPUID
    /// OSPKE): RDPKRU and WRPKRU work, and PKRU must be switched.
    pub pkru: bool,
}

/// XCR0 bit of PKRU.
const XFEATURE_PKRU: u64 = 1 << 9;

/// XCR0 bits of AMX tile config (17) and tile data (18).
const XFEATURES_AMX: u64 = 3 << 17;

/// XCR0 bits of x87, SSE and AVX state: with just these in the image, the
/// exit stub clears the registers with VZEROALL and FNINIT (~73 cycles
/// here) instead of an XRSTOR of the init image (~223).
const XFEATURES_X87_SSE_AVX: u64 = 0b111;

impl Xstate {
    /// Reads XCR0 and CPUID leaf 0xD; an error if the host has no XSAVE
    /// enabled (CPUID.1:ECX.OSXSAVE).
    pub fn of_host() -> Result<Xstate, MonitorError> {
        use core::arch::x86_64::__cpuid_count;
        let leaf1 = __cpuid_count(1, 0);
        if leaf1.ecx & (1 << 27) == 0 {
            return Err(MonitorError::Host(
                "the host has no XSAVE enabled (CPUID.1:ECX.OSXSAVE is clear): the world switch \
                 needs it to save the guest's vector registers"
                    .into(),
            ));
        }
        let (lo, hi): (u32, u32);
        // SAFETY: XGETBV with ECX = 0 reads XCR0; it works at any CPL once
        // OSXSAVE is set (checked above) and has no side effects.
        unsafe {
            asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack));
        }
        let xcr0 = u64::from(hi) << 32 | u64::from(lo);
        // AMX tile config and data: their instructions exist only in
        // 64-bit mode, so a 32-bit guest never has state there. The config
        // is not XFD-governed (seen on a Sapphire Rapids host), so the
        // check below would keep it.
        let mut mask = xcr0 & !XFEATURE_PKRU & !XFEATURES_AMX;
        let mut size = 512 + 64;
        for i in 2..64 {
            if mask & (1 << i) == 0 {
                continue;
            }
            let c = __cpuid_count(0xD, i);
            // ECX bit 2: XFD may govern the component (AMX tile data on
            // current CPUs). Without a grant from the kernel an XRSTOR of
            // it raises #NM.
            if c.ecx & (1 << 2) != 0 {
                mask &= !(1 << i);
                continue;
            }
            size = size.max(c.ebx + c.eax);
        }
        let sub1 = __cpuid_count(0xD, 1);
        let leaf7 = __cpuid_count(7, 0);
        Ok(Xstate {
            mask,
            size,
            xsaveopt: sub1.eax & 1 != 0,
            pkru: leaf7.ecx & (1 << 4) != 0,
        })
    }

    /// An image in the architectural init state: XSTATE_BV 0, so that an
    /// XRSTOR of it initialises every component, with the legacy fields
    /// that XRSTOR reads anyway (MXCSR) or that the guest may be shown at
    /// their reset values (FCW 0x37F, MXCSR 0x1F80).
    pub fn init_image(&self) -> Vec<u8> {
        let mut b = vec![0u8; self.size as usize];
        b[0..2].copy_from_slice(&0x037Fu16.to_le_bytes());
        b[24..28].copy_from_slice(&0x1F80u32.to_le_bytes());
        b
    }
}

/// The signal that kicks the vCPU out of guest code (timers aim it at the
/// vCPU thread; a copy that lands on another thread is forwarded).
pub const KICK_SIGNAL: libc::c_int = libc::SIGALRM;

/// Signals the monitor handles.
pub const HANDLED_SIGNALS: [libc::c_int; 7] = [
    libc::SIGSEGV,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGBUS,
    libc::SIGSYS,
    KICK_SIGNAL,
];

/// The host area, set once by [`init_area`] (after it is mapped and
/// initialised, before any handler is installed; null means not ready). The signal trampoline reads it RIP-relative (no thread
/// pointer needed: FS may hold the guest's base when it runs).
static HOST_AREA: AtomicPtr<HostArea> = AtomicPtr::new(std::ptr::null_mut());

/// Placeholder for the host area's address in the TC exit stub's
/// `movabs`, replaced in the copy below 4 GiB.
const STUB_AREA_PLACEHOLDER: u64 = 0x5A5A_A5A5_5A5A_A5A5;

const UC_GREGS: usize =
    offset_of!(libc::ucontext_t, uc_mcontext) + offset_of!(libc::mcontext_t, gregs);
const UC_RIP: usize = UC_GREGS + 8 * libc::REG_RIP as usize;
const UC_CSGSFS: usize = UC_GREGS + 8 * libc::REG_CSGSFS as usize;

global_asm!(
    ".globl popek_bt_enter",
    ".hidden popek_bt_enter",
    ".globl popek_bt_exit_stub",
    ".hidden popek_bt_exit_stub",
    ".globl popek_bt_exit_stub_pkru",
    ".hidden popek_bt_exit_stub_pkru",
    ".globl popek_bt_exit_stub_saved",
    ".hidden popek_bt_exit_stub_saved",
    ".globl popek_bt_enter_critical",
    ".hidden popek_bt_enter_critical",
    ".globl popek_bt_enter_critical_end",
    ".hidden popek_bt_enter_critical_end",
    ".globl popek_bt_signal_trampoline",
    ".hidden popek_bt_signal_trampoline",
    ".p2align 4",
    // extern "C" fn popek_bt_enter(area: *mut HostArea)
    "popek_bt_enter:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "sub rsp, 8",
    "mov [rdi + {host_rsp}], rsp",
    "rdfsbase rax",
    "mov [rdi + {host_fsbase}], rax",
    "rdgsbase rax",
    "mov [rdi + {host_gsbase}], rax",
    "stmxcsr [rdi + {host_mxcsr}]",
    "fnstcw [rdi + {host_fcw}]",
    // With protection keys: keep the host's PKRU for the exit stub and load
    // the guest's, whose key-0 bits are clear (see guest_pkru), so the rest
    // of the entry still reaches the host area and the stack.
    "cmp dword ptr [rdi + {pkru}], 0",
    "je 1f",
    "xor ecx, ecx",
    "rdpkru",
    "mov [rdi + {host_pkru}], eax",
    "mov eax, [rdi + {guest_pkru}]",
    "xor edx, edx",
    "wrpkru",
    "1:",
    // The guest's vector registers, as its last exit saved them (or the
    // init state): every component in the mask, so nothing of the host's
    // stays in them. Translated code that runs without them cannot reach
    // an instruction that would see the host's (the vector gate).
    "cmp dword ptr [rdi + {vec_lazy}], 0",
    "jne 7f",
    "mov eax, [rdi + {xsave_mask}]",
    "mov edx, [rdi + {xsave_mask} + 4]",
    "xrstor64 [rdi + {image}]",
    "7:",
    // From here to the iretq a signal sends the run to the exit stub (the
    // handler knows this range, and restores the host's FS and GS bases in
    // it): a kick is never lost, a fault of the iretq itself becomes an
    // exit at entry.
    "popek_bt_enter_critical:",
    "cmp dword ptr [rdi + {pending}], 0",
    "je 2f",
    "jmp qword ptr [rdi + {host_exit}]",
    "2:",
    // Loading a null selector into FS or GS in 64-bit mode leaves the old
    // base on Intel and on some AMD parts (this one): without this, guest
    // code that reaches 64-bit mode would read the host's thread pointer
    // with RDFSBASE.
    "xor eax, eax",
    "wrfsbase rax",
    "wrgsbase rax",
    "movzx eax, word ptr [rdi + {sel} + 2]",
    "push rax",
    "mov eax, [rdi + {gpr} + 16]",
    "push rax",
    "mov eax, [rdi + {eflags}]",
    "push rax",
    "movzx eax, word ptr [rdi + {sel}]",
    "push rax",
    "mov eax, [rdi + {eip}]",
    "push rax",
    "mov ax, [rdi + {sel} + 4]",
    "mov ds, ax",
    "mov ax, [rdi + {sel} + 6]",
    "mov es, ax",
    "mov ax, [rdi + {sel} + 8]",
    "mov fs, ax",
    "mov ax, [rdi + {sel} + 10]",
    "mov gs, ax",
    "mov eax, [rdi + {gpr}]",
    "mov ecx, [rdi + {gpr} + 4]",
    "mov edx, [rdi + {gpr} + 8]",
    "mov ebx, [rdi + {gpr} + 12]",
    "mov ebp, [rdi + {gpr} + 20]",
    "mov esi, [rdi + {gpr} + 24]",
    "mov edi, [rdi + {gpr} + 28]",
    // Guest code never sees host values: R8-R15 are invisible in
    // compatibility mode but would be readable after a far jump to the
    // host's 64-bit code segment, and the TC exit stub uses R8.
    "xor r8d, r8d",
    "xor r9d, r9d",
    "xor r10d, r10d",
    "xor r11d, r11d",
    "xor r12d, r12d",
    "xor r13d, r13d",
    "xor r14d, r14d",
    "xor r15d, r15d",
    "popek_bt_enter_critical_end:",
    "iretq",
    // Reached by sigreturn with RDI = the host area and RSP = host_rsp, from
    // the pending-kick check above, or from the TC exit stub, always through
    // host_exit (the signal handler's own jump enters further down). With
    // protection keys the guest's PKRU is live and may deny key 0, the key
    // of every page here: until PKRU allows it again, no memory access, the
    // stack included.
    ".p2align 4",
    "popek_bt_exit_stub_pkru:",
    "xor ecx, ecx",
    "rdpkru",
    "mov esi, eax",
    // RDPKRU cleared EDX; ECX is still 0, as WRPKRU wants.
    "xor eax, eax",
    "wrpkru",
    "and esi, -4",
    "mov [rdi + {guest_pkru}], esi",
    "mov eax, [rdi + {host_pkru}]",
    "wrpkru",
    "popek_bt_exit_stub:",
    // The guest's vector state is live (sigreturn restored the one the
    // signal interrupted; a TC exit never touched it): keep it for the next
    // entry. XSAVEOPT skips what the entry's XRSTOR loaded and the guest
    // left alone (and what is in its init state). A run without it left
    // the monitor's own registers: nothing to keep or to clear.
    "cmp dword ptr [rdi + {vec_lazy}], 0",
    "jne 6f",
    "mov eax, [rdi + {xsave_mask}]",
    "mov edx, [rdi + {xsave_mask} + 4]",
    "cmp dword ptr [rdi + {xsaveopt}], 0",
    "je 3f",
    "xsaveopt64 [rdi + {image}]",
    "jmp 4f",
    "3:",
    "xsave64 [rdi + {image}]",
    "4:",
    // Entered here by the signal handler, on the sigaltstack, when it took
    // the guest's vector state from the signal frame itself (no sigreturn:
    // see `image_from_frame`).
    "popek_bt_exit_stub_saved:",
    "cmp dword ptr [rdi + {vec_lazy}], 0",
    "jne 6f",
    // Leave the host no guest data in its vector registers: their init
    // state (zero, empty x87 stack, the default control words; the host's
    // own control words go back below). With x87, SSE and AVX only,
    // VZEROALL zeroes every vector register and FNINIT empties the x87
    // stack at a third of the cost; the x87 data registers keep the
    // guest's values behind empty tags until host code loads its own
    // (host code never shows a register to the guest, and the next entry
    // loads every component from the guest's image).
    "cmp qword ptr [rdi + {xsave_mask}], {x87_sse_avx}",
    "jne 5f",
    "vzeroall",
    "fninit",
    "jmp 6f",
    "5:",
    "mov rsi, [rdi + {init_image}]",
    "xrstor64 [rsi]",
    "6:",
    // DS, ES, FS and GS keep the guest's selectors: 64-bit code ignores
    // the first two, and the host needs only its FS and GS bases back
    // (before any Rust code reads a thread-local), which the host kernel
    // keeps with whatever selector is loaded (it saves and restores both
    // across context switches with FSGSBASE, which the entry needs
    // anyway). Loading the host's null selectors back cost ~105 cycles
    // each on this machine kind (a non-null one ~22): ~420 cycles of
    // every exit.
    "mov rax, [rdi + {host_fsbase}]",
    "wrfsbase rax",
    "mov rax, [rdi + {host_gsbase}]",
    "wrgsbase rax",
    // The ABI wants an empty x87 stack (cleared above) and the host's
    // control words.
    "fldcw [rdi + {host_fcw}]",
    "ldmxcsr [rdi + {host_mxcsr}]",
    "cld",
    "mov rsp, [rdi + {host_rsp}]",
    "add rsp, 8",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    // The sa_sigaction of every handled signal: (sig, info, uc) in
    // RDI, RSI, RDX. If guest code (any CS but the host's, or any RIP below
    // 4 GiB) or the end of `enter` was interrupted, FS/GS bases may be the
    // guest's (or zero): restore the host's before Rust code runs, then tail-call
    // the Rust handler. Handlers are installed only after the host area
    // is, so reading it here is safe; it lives above 4 GiB, so it is
    // readable even while the monitor region is closed.
    ".p2align 4",
    "popek_bt_signal_trampoline:",
    // The kernel enters handlers with the interrupted EFLAGS.AC and NT:
    // after a guest #AC, AC is set and the first misaligned access of the
    // handler would raise a nested, fatal SIGBUS; NT, which guest user code
    // may set with POPF, made the next entry's IRETQ raise #GP (IRET with
    // NT is #GP in 64-bit mode), so an unprivileged guest process could
    // stop the VM.
    "pushfq",
    "and dword ptr [rsp], {not_ac_nt}",
    "popfq",
    "mov rax, qword ptr [rip + {host_area}]",
    "movzx ecx, word ptr [rdx + {uc_csgsfs}]",
    "cmp cx, word ptr [rax + {host_cs}]",
    "jne 2f",
    "mov rax, [rdx + {uc_rip}]",
    "mov rcx, 0x100000000",
    "cmp rax, rcx",
    "jb 2f",
    "lea rcx, [rip + popek_bt_enter_critical]",
    "cmp rax, rcx",
    "jb 3f",
    "lea rcx, [rip + popek_bt_enter_critical_end]",
    "cmp rax, rcx",
    "ja 3f",
    "2:",
    "mov rax, qword ptr [rip + {host_area}]",
    "mov rcx, [rax + {host_fsbase}]",
    "wrfsbase rcx",
    "mov rcx, [rax + {host_gsbase}]",
    "wrgsbase rcx",
    "3:",
    "jmp {handler}",
    image = const GUEST_IMAGE_OFFSET,
    xsave_mask = const offset_of!(HostArea, xsave_mask),
    xsaveopt = const offset_of!(HostArea, xsaveopt),
    vec_lazy = const offset_of!(HostArea, vec_lazy),
    x87_sse_avx = const XFEATURES_X87_SSE_AVX,
    init_image = const offset_of!(HostArea, init_image),
    host_exit = const offset_of!(HostArea, host_exit),
    host_pkru = const offset_of!(HostArea, host_pkru),
    guest_pkru = const offset_of!(HostArea, guest_pkru),
    pkru = const offset_of!(HostArea, pkru),
    host_rsp = const offset_of!(HostArea, host_rsp),
    host_fsbase = const offset_of!(HostArea, host_fsbase),
    host_gsbase = const offset_of!(HostArea, host_gsbase),
    host_mxcsr = const offset_of!(HostArea, host_mxcsr),
    host_fcw = const offset_of!(HostArea, host_fcw),
    host_cs = const offset_of!(HostArea, host_cs),
    pending = const offset_of!(HostArea, pending_kick),
    sel = const offset_of!(HostArea, sel),
    gpr = const offset_of!(HostArea, gpr),
    eflags = const offset_of!(HostArea, eflags),
    eip = const offset_of!(HostArea, eip),
    uc_csgsfs = const UC_CSGSFS,
    uc_rip = const UC_RIP,
    host_area = sym HOST_AREA,
    not_ac_nt = const !((1u32 << 18) | (1u32 << 14)) as i32,
    handler = sym signal_handler,
);

// The TC exit stub. Translated code leaves with `jmp far gs:[exit_far]`,
// landing here in 64-bit mode with the host's CS. The bytes are copied into
// the monitor region (a 32-bit far pointer cannot reach the host's text),
// so they must be position independent: absolute addresses only, through
// R8, which entry zeroed and 32-bit code cannot touch. The host area's
// address (above 4 GiB) is patched into the copy's `movabs`, right before
// `popek_bt_tc_exit_area`. It saves the guest registers, switches to the
// host stack saved at entry and jumps on to `popek_bt_exit_stub`, as a
// signal exit would.
global_asm!(
    ".globl popek_bt_tc_exit",
    ".hidden popek_bt_tc_exit",
    ".globl popek_bt_tc_exit_end",
    ".hidden popek_bt_tc_exit_end",
    ".globl popek_bt_tc_exit_area",
    ".hidden popek_bt_tc_exit_area",
    ".p2align 4",
    "popek_bt_tc_exit:",
    "movabs r8, {placeholder}",
    "popek_bt_tc_exit_area:",
    "mov [r8 + {gpr}], eax",
    "mov [r8 + {gpr} + 4], ecx",
    "mov [r8 + {gpr} + 8], edx",
    "mov [r8 + {gpr} + 12], ebx",
    "mov [r8 + {gpr} + 16], esp",
    "mov [r8 + {gpr} + 20], ebp",
    "mov [r8 + {gpr} + 24], esi",
    "mov [r8 + {gpr} + 28], edi",
    "mov rsp, [r8 + {host_rsp}]",
    "pushfq",
    "pop rax",
    "mov [r8 + {eflags}], eax",
    "mov dword ptr [r8 + {exit_signal}], 0",
    "mov dword ptr [r8 + {tc_exit}], 1",
    "mov rdi, r8",
    "jmp qword ptr [r8 + {host_exit}]",
    "popek_bt_tc_exit_end:",
    placeholder = const STUB_AREA_PLACEHOLDER as i64,
    gpr = const offset_of!(HostArea, gpr),
    host_rsp = const offset_of!(HostArea, host_rsp),
    eflags = const offset_of!(HostArea, eflags),
    exit_signal = const offset_of!(HostArea, exit_signal),
    tc_exit = const offset_of!(HostArea, tc_exit),
    host_exit = const offset_of!(HostArea, host_exit),
);

extern "C" {
    fn popek_bt_enter(area: *mut HostArea);
    fn popek_bt_exit_stub();
    fn popek_bt_exit_stub_pkru();
    fn popek_bt_exit_stub_saved();
    fn popek_bt_enter_critical();
    fn popek_bt_enter_critical_end();
    fn popek_bt_signal_trampoline();
    fn popek_bt_tc_exit();
    fn popek_bt_tc_exit_end();
    fn popek_bt_tc_exit_area();
}

/// The position-independent bytes of the TC exit stub, to copy below 4 GiB.
pub fn tc_exit_stub() -> &'static [u8] {
    let start = popek_bt_tc_exit as *const () as usize;
    let end = popek_bt_tc_exit_end as *const () as usize;
    // SAFETY: both symbols delimit one stretch of this binary's text,
    // which is mapped readable for the life of the process.
    unsafe { std::slice::from_raw_parts(start as *const u8, end - start) }
}

/// The TC exit stub for a copy below 4 GiB: [`tc_exit_stub`] with the
/// address of the host area at `host_area` in its `movabs`.
pub fn patched_tc_exit_stub(host_area: u64) -> Vec<u8> {
    let mut stub = tc_exit_stub().to_vec();
    let at = popek_bt_tc_exit_area as *const () as usize - popek_bt_tc_exit as *const () as usize;
    let imm = at - 8..at;
    assert_eq!(
        stub[imm.clone()],
        STUB_AREA_PLACEHOLDER.to_le_bytes(),
        "the TC exit stub does not start with movabs r8, imm64"
    );
    stub[imm].copy_from_slice(&host_area.to_le_bytes());
    stub
}

/// The host area (null before [`init_area`]).
fn area_ptr() -> *mut HostArea {
    HOST_AREA.load(Ordering::Acquire)
}

/// The vCPU area, at the start of the monitor region.
///
/// # Safety
/// [`init_area`] must have run.
unsafe fn vcpu_ptr() -> *mut VcpuArea {
    // SAFETY: the caller guarantees the host area is initialised, and
    // `vcpu_area` never changes after that.
    unsafe { (*area_ptr()).vcpu_area as usize as *mut VcpuArea }
}

/// Maps and initialises the host area, records the host selectors, the
/// vCPU thread and where `layout` puts the monitor region, initialises the
/// vCPU area, and returns the host area's address (above 4 GiB).
///
/// # Safety
/// Once per process. The vCPU area's page of the monitor region `layout`
/// places must be mapped read-write (the region, open) for the life of
/// the process and used by nothing else.
pub unsafe fn init_area(vcpu_tid: i32, layout: Layout) -> Result<u64, MonitorError> {
    let (cs, ss): (u16, u16);
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!("mov {0:x}, cs", "mov {1:x}, ss", out(reg) cs, out(reg) ss, options(nomem, nostack));
    }
    let xstate = Xstate::of_host()?;
    // Each image 64-byte aligned, as XSAVE and XRSTOR want.
    let image_len = (xstate.size as usize).next_multiple_of(64);
    let len = (GUEST_IMAGE_OFFSET + 2 * image_len).next_multiple_of(4096);
    let p = super::address_space::map_above_4g(len, false, "the host area")?;
    let area = p.cast::<HostArea>();
    let guest_image = p as usize + GUEST_IMAGE_OFFSET;
    let init_image = guest_image + image_len;
    let exit = if xstate.pkru {
        popek_bt_exit_stub_pkru as *const () as usize
    } else {
        popek_bt_exit_stub as *const () as usize
    };
    // SAFETY: the mapping is fresh, page-aligned (so both images are
    // 64-byte aligned) and large enough for the area and both images; it
    // is never unmapped.
    unsafe {
        area.write(HostArea {
            host_cs: cs,
            host_ss: ss,
            vcpu_tid,
            host_exit: exit as u64,
            xsave_mask: xstate.mask,
            init_image: init_image as u64,
            xsaveopt: u32::from(xstate.xsaveopt),
            pkru: u32::from(xstate.pkru),
            tc_stub: layout.stub(),
            vcpu_area: layout.vcpu_area(),
            ..HostArea::default()
        });
        // The guest starts from the init state, as a CPU after reset: its
        // first entry finds zeros (and MXCSR 0x1F80), never host data.
        let init = xstate.init_image();
        for at in [guest_image, init_image] {
            std::ptr::copy_nonoverlapping(init.as_ptr(), at as *mut u8, init.len());
        }
    }
    // SAFETY: the caller guarantees the vCPU area is mapped and ours.
    unsafe {
        (layout.vcpu_area() as usize as *mut VcpuArea).write(VcpuArea::new(layout.stub(), cs));
    }
    HOST_AREA.store(area, Ordering::Release);
    Ok(area as u64)
}

/// Exclusive access to the host area while the guest is not running.
///
/// # Safety
/// [`init_area`] must have run, and the caller must be the only user (the
/// single Monitor of the process, on the vCPU thread).
pub unsafe fn area<'a>() -> &'a mut HostArea {
    // SAFETY: the caller guarantees initialisation and exclusivity.
    unsafe { &mut *area_ptr() }
}

/// The guest's XSAVE image in the host area (what the next entry loads
/// and the last exit saved).
///
/// # Safety
/// As for [`area`].
pub unsafe fn guest_image<'a>() -> &'a mut [u8] {
    let area = area_ptr();
    let at = area as usize + GUEST_IMAGE_OFFSET;
    // SAFETY: the caller guarantees initialisation and exclusivity; the
    // init image follows the guest image, so their distance is its length.
    unsafe {
        let len = (*area).init_image as usize - at;
        std::slice::from_raw_parts_mut(at as *mut u8, len)
    }
}

/// Whether a kick arrived while host code ran since the last check (and
/// forgets it). False before [`init_area`].
pub fn take_pending_kick() -> bool {
    let area = area_ptr();
    if area.is_null() {
        return false;
    }
    // SAFETY: a non-null host area is mapped for the life of the process;
    // the signal handler writes this field with a volatile store on this
    // thread only.
    unsafe {
        let p = core::ptr::addr_of_mut!((*area).pending_kick);
        let was = p.read_volatile() != 0;
        if was {
            p.write_volatile(0);
        }
        was
    }
}

/// Exclusive access to the vCPU area while the guest is not running.
///
/// # Safety
/// As for [`area`], and the monitor region must be open (the vCPU area is
/// inaccessible while it is closed).
pub unsafe fn vcpu<'a>() -> &'a mut VcpuArea {
    // SAFETY: the caller guarantees initialisation, access and exclusivity.
    unsafe { &mut *vcpu_ptr() }
}

/// Runs the guest from the state in the host area until the next exit.
///
/// # Safety
/// The host area must hold valid shadow selectors (CS/SS loadable LDT code and
/// stack selectors, DS..GS loadable or null), the signal handlers and the
/// sigaltstack of this thread must be installed, and no reference into the
/// area may be live.
pub unsafe fn enter() {
    // SAFETY: the asm saves and restores every register the C ABI wants
    // preserved; it only returns through the exit stub, reached from the
    // signal handler (which restores this frame's RSP) or from the kick
    // check. The caller guarantees the entry state is valid.
    unsafe { popek_bt_enter(area_ptr()) }
}

/// The signal handler's entry point to pass to sigaction.
pub fn trampoline_address() -> usize {
    popek_bt_signal_trampoline as *const () as usize
}

fn in_critical(rip: u64) -> bool {
    let start = popek_bt_enter_critical as *const () as usize as u64;
    let end = popek_bt_enter_critical_end as *const () as usize as u64;
    (start..=end).contains(&rip)
}

fn gettid() -> i32 {
    // SAFETY: gettid has no memory effects and is async-signal-safe.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// Sends `sig` to the thread `tid` of this process.
pub fn tgkill(tid: i32, sig: libc::c_int) {
    // SAFETY: tgkill only sends a signal; async-signal-safe.
    unsafe {
        libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, sig);
    }
}

/// Where the object holding the monitor's code is loaded (0: unknown).
static TEXT_BASE: AtomicU64 = AtomicU64::new(0);

/// Notes where the monitor's code is loaded, for the line a fatal signal
/// in host code prints.
pub fn note_text_base() {
    // SAFETY: dladdr reads the loader's tables and fills `info`, which we
    // own; the address is one of our own functions.
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(host_signal as *const () as *const libc::c_void, &mut info) != 0 {
            TEXT_BASE.store(info.dli_fbase as u64, Ordering::Relaxed);
        }
    }
}

/// A signal in host code the monitor does not own: a bug in the monitor.
/// A SIGSYS is the sandbox refusing one of popek's own calls: it is named
/// and the process exits 10. Any other: restore the default action and let
/// the signal kill the process, so the bug is reported by the usual means
/// (core dump, exit status).
fn host_signal(sig: libc::c_int, info: *const libc::siginfo_t, gregs: &[i64]) {
    if sig == libc::SIGSYS {
        // SAFETY: `info` is the kernel's siginfo for this SIGSYS. Returns
        // only for a SIGSYS that no filter raised.
        unsafe { sandbox::report_if_refused(info) };
    }
    // Where: assembled on the stack, since nothing may allocate here.
    let mut line = sandbox::report::Line::new();
    line.push(b"popek-bt: fatal signal in monitor (host) code: signal ");
    line.push_decimal(sig as u32);
    let rip = gregs[libc::REG_RIP as usize] as u64;
    line.push(b" rip ");
    line.push_hex(rip);
    let base = TEXT_BASE.load(Ordering::Relaxed);
    if base != 0 && rip >= base {
        // Against the binary's load address, for addr2line afterwards.
        line.push(b" (binary+");
        line.push_hex(rip - base);
        line.push(b")");
    }
    line.push(b" cs ");
    line.push_hex(gregs[libc::REG_CSGSFS as usize] as u64 & 0xFFFF);
    line.push(b" trap ");
    line.push_decimal(gregs[libc::REG_TRAPNO as usize] as u32);
    line.push(b" err ");
    line.push_hex(gregs[libc::REG_ERR as usize] as u64);
    line.push(b" addr ");
    // SAFETY: `info` is the kernel's siginfo for this signal.
    line.push_hex(unsafe { (*info).si_addr() } as u64);
    line.push(b"\n");
    let msg = line.as_bytes();
    // SAFETY: write, signal and tgkill are async-signal-safe; the message
    // is on this stack. Raw tgkill rather than raise(): raise reads the
    // thread pointer, which may still be the guest's FS base if the fault
    // hit the exit stub.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::signal(sig, libc::SIG_DFL);
    }
    tgkill(gettid(), sig);
}

/// Called from the trampoline with the host FS/GS bases already restored.
///
/// Must stay async-signal-safe and allocation-free: it may interrupt the
/// monitor anywhere.
extern "C" fn signal_handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid ucontext_t to an SA_SIGINFO handler.
    let uc = unsafe { &mut *(ctx as *mut libc::ucontext_t) };
    let frame_fp = uc.uc_mcontext.fpregs as *const u8;
    let gregs = &mut uc.uc_mcontext.gregs;
    let cs = gregs[libc::REG_CSGSFS as usize] as u16;
    let rip = gregs[libc::REG_RIP as usize] as u64;
    let ready = !area_ptr().is_null();
    // SAFETY: a non-null host area is mapped and initialised; host_cs and
    // tc_stub never change.
    let (host_cs, stub) = if ready {
        unsafe { ((*area_ptr()).host_cs, (*area_ptr()).tc_stub) }
    } else {
        (0, 0)
    };
    // Guest code: our LDT selectors, or a host selector the guest loaded
    // with a far jump (host code never runs below 4 GiB: it is reserved).
    // The TC exit stub runs 64-bit with the host's CS below 4 GiB but is
    // the monitor's: a kick there is noted like one in host code.
    let in_stub =
        (u64::from(stub)..u64::from(stub) + u64::from(contract::STUB_SIZE)).contains(&rip);
    let guest = ready && (cs != host_cs || (rip < 1 << 32 && !in_stub));
    let entry = ready && !guest && in_critical(rip);
    if !guest && !entry {
        if ready && sig == KICK_SIGNAL {
            // SAFETY: the host area is mapped once it is set; the fields are
            // plain integers, racing only with this thread's own accesses
            // done with volatile reads in the monitor.
            let area = area_ptr();
            let tid = unsafe { (*area).vcpu_tid };
            if gettid() != tid {
                tgkill(tid, sig);
            } else {
                // SAFETY: as above.
                unsafe { core::ptr::addr_of_mut!((*area).pending_kick).write_volatile(1) };
            }
            return;
        }
        if sig == KICK_SIGNAL {
            return;
        }
        host_signal(sig, info, &gregs[..]);
        return;
    }
    // SAFETY: `ready` guarantees the mapping; the interrupted code is guest
    // code or the tail of `enter`, neither of which holds a reference to it.
    let area = unsafe { &mut *area_ptr() };
    if guest {
        use libc::{
            REG_EFL, REG_RAX, REG_RBP, REG_RBX, REG_RCX, REG_RDI, REG_RDX, REG_RSI, REG_RSP,
        };
        for (i, r) in [
            REG_RAX, REG_RCX, REG_RDX, REG_RBX, REG_RSP, REG_RBP, REG_RSI, REG_RDI,
        ]
        .into_iter()
        .enumerate()
        {
            area.gpr[i] = gregs[r as usize] as u32;
        }
        area.eip = rip as u32;
        area.eflags = gregs[REG_EFL as usize] as u32;
        let csgsfs = gregs[libc::REG_CSGSFS as usize] as u64;
        area.sel[0] = cs;
        area.sel[1] = (csgsfs >> 48) as u16;
        // The 64-bit sigcontext has no DS/ES (and its FS/GS fields are not
        // reliably the live selectors); the kernel left the guest's
        // selectors loaded, so read them from the CPU.
        let (ds, es, fs, gs): (u16, u16, u16, u16);
        // SAFETY: reading segment registers has no side effects.
        unsafe {
            asm!(
                "mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
                out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
                options(nomem, nostack),
            );
        }
        area.sel[2] = ds;
        area.sel[3] = es;
        area.sel[4] = fs;
        area.sel[5] = gs;
    }
    area.exit_signal = sig as u32;
    area.exit_trapno = gregs[libc::REG_TRAPNO as usize] as u32;
    area.exit_err = gregs[libc::REG_ERR as usize] as u32;
    area.exit_at_entry = u32::from(entry);
    // SAFETY: `info` is the kernel's siginfo for this signal.
    area.exit_addr = unsafe { (*info).si_addr() } as u64;

    // SAFETY: the frame is the kernel's for this signal; the image is ours
    // (no run is under way once the guest was interrupted).
    // A run without the guest's vector state left nothing of the guest's
    // in the frame to take.
    if area.pkru == 0
        && (area.vec_lazy != 0 || unsafe { image_from_frame(frame_fp, area.xsave_mask) })
    {
        // SAFETY: the exit stub's tail needs RDI = the host area and no
        // stack until it loads host_rsp; it never returns here. Nothing of
        // this frame needs dropping, and no signal is blocked (handlers
        // are SA_NODEFER with an empty mask), so leaving the frame behind
        // loses nothing.
        unsafe {
            asm!(
                "jmp {stub}",
                stub = sym popek_bt_exit_stub_saved,
                in("rdi") area_ptr(),
                options(noreturn),
            )
        }
    }
    gregs[libc::REG_RIP as usize] = area.host_exit as i64;
    gregs[libc::REG_RSP as usize] = area.host_rsp as i64;
    gregs[libc::REG_RDI as usize] = area_ptr() as i64;
    gregs[libc::REG_EFL as usize] = 0x202;
    gregs[libc::REG_CSGSFS as usize] =
        (u64::from(area.host_cs) | (u64::from(area.host_ss) << 48)) as i64;
}

/// `magic1` of the software-reserved bytes of a signal frame's FXSAVE
/// area: the frame holds an XSAVE image (Linux's `FP_XSTATE_MAGIC1`).
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
/// The word right after a signal frame's XSAVE image (`FP_XSTATE_MAGIC2`).
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// Where the software-reserved bytes sit in the FXSAVE area.
const FP_SW_BYTES: usize = 464;
/// Where XSTATE_BV and XCOMP_BV sit in an XSAVE image.
const XSAVE_HEADER: usize = 512;

/// Copies the guest's vector state from the signal frame into the guest
/// image, where the exit stub's XSAVE would have put it after a
/// sigreturn: the kernel saved the interrupted registers there (XSAVE's
/// standard format, every user component it enables) before it ran the
/// handler. Sparing the sigreturn spares a system call and the kernel's
/// restore of the whole frame (~0.8 µs of every exit by a signal here).
/// False, and nothing copied, if the frame is not a full XSAVE image of
/// the components in `mask` (the handler then returns as before).
///
/// # Safety
/// `fp` must be the `fpregs` of the running handler's ucontext (null or
/// the kernel's frame), the host area initialised, and no run under way.
unsafe fn image_from_frame(fp: *const u8, mask: u64) -> bool {
    if fp.is_null() {
        return false;
    }
    // SAFETY: the kernel's frame: a 512-byte FXSAVE area whose reserved
    // bytes say whether an XSAVE image of `xstate_size` bytes, followed by
    // magic2, is there; each read stays inside what the previous one
    // vouched for.
    unsafe {
        let sw = fp.add(FP_SW_BYTES);
        let magic1 = sw.cast::<u32>().read_unaligned();
        let features = sw.add(8).cast::<u64>().read_unaligned();
        let size = sw.add(16).cast::<u32>().read_unaligned() as usize;
        if magic1 != FP_XSTATE_MAGIC1
            || features & mask != mask
            || size < XSAVE_HEADER + 64
            || fp.add(size).cast::<u32>().read_unaligned() != FP_XSTATE_MAGIC2
            || fp.add(XSAVE_HEADER + 8).cast::<u64>().read_unaligned() != 0
        {
            return false;
        }
        let image = guest_image();
        let n = image.len().min(size);
        std::ptr::copy_nonoverlapping(fp, image.as_mut_ptr(), n);
        // Components the image does not hold (PKRU, saved apart) stay out
        // of its XSTATE_BV, so that no XRSTOR of it is asked to load them.
        let bv = image.as_mut_ptr().add(XSAVE_HEADER).cast::<u64>();
        bv.write_unaligned(bv.read_unaligned() & mask);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xstate_covers_what_the_host_has_and_leaves_out_pkru_and_amx() {
        let x = Xstate::of_host().unwrap();
        assert_eq!(x.mask & 3, 3, "x87 and SSE: {:#x}", x.mask);
        assert_eq!(x.mask & XFEATURE_PKRU, 0, "{:#x}", x.mask);
        assert_eq!(x.mask & XFEATURES_AMX, 0, "AMX tiles: {:#x}", x.mask);
        assert!(x.size >= 576, "{}", x.size);
        if std::arch::is_x86_feature_detected!("avx") {
            assert_ne!(x.mask & 4, 0, "{:#x}", x.mask);
            assert!(x.size >= 576 + 256, "{}", x.size);
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            assert_eq!(
                x.mask & 0xE0,
                0xE0,
                "opmask, ZMM_Hi256, Hi16_ZMM: {:#x}",
                x.mask
            );
            // Where Hi16_ZMM ends differs by vendor: Intel leaves room
            // for MPX before the opmask (2688 bytes), AMD does not (2432).
            let hi16 = core::arch::x86_64::__cpuid_count(0xD, 7);
            assert!(x.size >= hi16.ebx + hi16.eax, "{}", x.size);
            assert!(x.size >= 2432, "{}", x.size);
        }
        // The init image: XSTATE_BV (and XCOMP_BV) 0, MXCSR at reset.
        let init = x.init_image();
        assert_eq!(init.len(), x.size as usize);
        assert!(init[512..576].iter().all(|&b| b == 0));
        assert_eq!(init[24..28], 0x1F80u32.to_le_bytes());
    }
}
