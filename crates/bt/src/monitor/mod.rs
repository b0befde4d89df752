//! The monitor: host setup and the world switch for running guest CPL-3
//! code directly on the host CPU in compatibility mode.
//!
//! Process model (design.md section 4): the low 4 GiB, the LDT, the signal
//! handlers and the seccomp filter are process-wide, so a process holds at
//! most one [`Monitor`], created and used on the vCPU thread.
//!
//! The exit stub lives in the host's text, not in the monitor region: an
//! exit by a signal reaches it from the handler (a jump, or sigreturn,
//! which restores a full 64-bit RIP). Only the
//! signal-free exit of translated code (a far jump from 32-bit code back to
//! the host's 64-bit CS) goes through a stub below 4 GiB, in the monitor
//! region.
//!
//! Isolation from guest user code: the state the world switch needs lives
//! above 4 GiB ([`switch::HostArea`]), and the monitor region below 4 GiB
//! is PROT_NONE whenever guest user code runs ([`gate`]), so user code
//! that loads the host's flat selector 0x2b faults at the region's first
//! byte it touches.
//!
//! Host facts found while building this (they extend design.md section 3):
//! - the host page-fault error code's P bit reflects the host PTE, which is
//!   absent until first touch: a write to a read-only page never read
//!   before reports "not present". Guest error codes must come from the
//!   guest's page tables, never from the host's.
//! - the kernel enters a signal handler with the interrupted EFLAGS.AC, so
//!   after a guest #AC (SIGBUS, trapno 17) the handler must clear AC before
//!   touching memory (see the trampoline).
//! - exit cost depends on the kind: #GP (SIGSEGV) ~3.5 µs per round trip,
//!   `int 0x80` (seccomp SIGSYS) ~8 µs, #UD (SIGILL) ~8.5-10 µs (measured
//!   by the `round_trip_cost` test on a loaded 2-core host).
//! - the 64-bit sigcontext has no DS/ES fields: the handler reads all four
//!   data selectors from the CPU, where the kernel left them.

pub mod address_space;
mod error;
pub mod frame_copies;
pub mod gate;
pub mod host_vdso;
pub mod ldt;
pub mod region;
pub mod seccomp;
pub mod seg_cache;
pub mod switch;
mod user_space;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::contract::{self, Inline, Layout, TRANSLATED_FLAGS, VIRTUAL_SYSTEM_FLAGS};
use region::Region;
use std::sync::atomic::{AtomicBool, Ordering};

use machine::GuestMemory;
use x86::state::flags;
use x86::{CpuState, Segment};

pub use address_space::{AddressSpace, Prot, PAGE_SIZE};
pub use error::MonitorError;
use frame_copies::FrameCopies;
use gate::Gate;
pub use gate::RegionStats;
use ldt::{Slot, UserDesc, View};
use seg_cache::SegCache;
use user_space::{Op, UserSpace};

/// Why direct execution of guest user code stopped. The guest registers at
/// the exit are in the `CpuState` given to [`Monitor::run_user`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectExit {
    /// A CPU exception. EIP is at the faulting instruction for faults and
    /// after it for traps (#BP, #OF, single-step #DB).
    Fault {
        /// Exception vector.
        vector: u8,
        /// The error code, for vectors that push one.
        error_code: Option<u32>,
        /// The faulting linear address, for #PF.
        cr2: Option<u32>,
    },
    /// `INT n` (n other than 3 and 0x80: the host's gate is DPL 0, so it
    /// arrived as #GP). EIP is at the INT instruction; the guest's IDT
    /// decides between delivering vector n (EIP past the INT) and #GP.
    SoftwareInterrupt {
        /// The interrupt number n.
        vector: u8,
    },
    /// `int 0x80`, trapped by seccomp. EIP is after the instruction.
    Syscall,
    /// SYSENTER (hosts that take it from 32-bit code: Intel's) or SYSCALL
    /// (AMD's), which the host's own fast system-call path took and its
    /// seccomp filter trapped. That path keeps no EIP, and SYSENTER's no ESP
    /// either (it takes EBP for the stack pointer and loads EBP from there,
    /// as the vDSO's convention has it): EIP is 0, after SYSENTER ESP and
    /// EBP are the guest's EBP, after SYSCALL ECX is (docs/bt.md).
    FastSystemCall {
        /// SYSENTER; else SYSCALL.
        sysenter: bool,
    },
    /// A kick (timer signal) interrupted the guest.
    Interrupted,
    /// SIGBUS other than #AC: guest RAM behind the faulting address is
    /// missing.
    HostBus {
        /// The faulting address.
        addr: u32,
    },
    /// Guest code left our shadow CS (a far jump or SYSENTER to a selector
    /// of the host's GDT) and faulted there. The VM cannot continue: its
    /// code ran outside any segment the monitor controls.
    ForeignCode {
        /// The host code selector the guest was running on.
        selector: u16,
        /// Host signal.
        signal: i32,
    },
    /// Guest user code loaded data segment registers with selectors that
    /// are not the monitor's shadows (the host's GDT answered the load, as
    /// it does for 0x23, 0x2b, 0x33 and 0x7b). The exit that followed is
    /// kept for [`Monitor::take_deferred_exit`]: the engine first redoes
    /// the loads against the guest's tables (lazy fix-up).
    ForeignSelectors {
        /// The selector now in DS, ES, FS and GS, where it is foreign.
        sels: [Option<u16>; 4],
    },
    /// A signal the monitor cannot attribute.
    Unknown {
        /// Host signal.
        signal: i32,
        /// Host trap number.
        trapno: u32,
        /// Host error code.
        error_code: u32,
    },
}

fn merge_flags(virt: u32, host: u32, owned: u32) -> u32 {
    (host & owned) | (virt & !owned) | flags::FIXED1
}

/// The guest's EFLAGS after translated code ran: the arithmetic flags from
/// the host's `host`, IF and the other system bits from the vCPU area's
/// `vif` and `vsys` (which inline CLI, STI and POPF may have changed), and
/// the rest (RF, VM, reserved bits) as they were in `before`.
fn translated_flags_back(before: u32, host: u32, vsys: u32, vif: u16) -> u32 {
    let merged = merge_flags(before, host, TRANSLATED_FLAGS);
    let system = VIRTUAL_SYSTEM_FLAGS | flags::IF;
    (merged & !system) | (vsys & VIRTUAL_SYSTEM_FLAGS) | (u32::from(vif) & flags::IF)
}

/// What translated code is entered with for guest EFLAGS `eflags`: the
/// host EFLAGS (the arithmetic flags, IF set as the host requires, no
/// system bit of the guest's) and the area's `vsys` and `vif`.
fn translated_flags_in(eflags: u32) -> (u32, u32, u16) {
    (
        (eflags & TRANSLATED_FLAGS) | flags::IF | flags::FIXED1,
        eflags & VIRTUAL_SYSTEM_FLAGS,
        (eflags & flags::IF) as u16,
    )
}

/// The vCPU area's view of the guest's segments for a fresh run of
/// translated code from `cpu`: its selectors, the host selectors of its
/// FS and GS shadows (`fs`, `gs`), and no inline load yet. A resumed run
/// keeps the area as the interrupted code left it instead: a kick between
/// an inline load's write of the selector and its `sel_loaded` mark left
/// the load half recorded, and refilling the selectors from `cpu` (which
/// only completed loads reach) made the mark, written after the resume,
/// take the old selector's segment. Linux then lost its per-CPU FS at a
/// system call's entry, about once in tens of millions of calls.
fn set_segments(v: &mut contract::VcpuArea, cpu: &CpuState, fs: u16, gs: u16) {
    v.guest_fs = fs;
    v.guest_gs = gs;
    v.guest_sel =
        [&cpu.cs, &cpu.ss, &cpu.ds, &cpu.es, &cpu.fs, &cpu.gs].map(|s| u32::from(s.selector));
    v.sel_loaded = [0; 8];
}

/// How [`Monitor::enter_guest`] came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Left {
    /// A kick was pending: the guest never ran.
    NotEntered,
    /// Translated code jumped out through the TC exit stub.
    TcExit,
    /// A host signal stopped the guest.
    Signal,
}

/// How a run of translated code ended. The guest registers at the exit
/// are in the `CpuState` given to [`Monitor::run_translated`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcExit {
    /// Translated code jumped out through the TC exit stub.
    Exit {
        /// The reason code it stored.
        reason: u32,
        /// The reason's argument.
        arg: u32,
    },
    /// A host signal stopped translated code at `host_eip`.
    Signal {
        /// Host address of the interrupted or faulting instruction (after
        /// it, for traps).
        host_eip: u32,
        /// The exit as direct execution would report it.
        exit: DirectExit,
        /// The host selectors loaded when the signal came.
        sels: [u16; 6],
    },
    /// A kick arrived before translated code ran.
    Interrupted,
}

/// EFLAGS bits guest user code really owns on the host CPU; the others (IF,
/// IOPL, VM, VIF, VIP) are virtual and kept by the monitor.
pub const USER_FLAGS: u32 = flags::UNPRIVILEGED;

static CREATED: AtomicBool = AtomicBool::new(false);

/// Size of the signal stack: a signal frame with AVX-512 state is ~3.5 KiB,
/// and the handler is small, but nested signals must fit too.
const ALTSTACK_SIZE: usize = 256 * 1024;

/// Sends the kick signal to the vCPU thread from any thread.
#[derive(Debug, Clone, Copy)]
pub struct Kicker {
    tid: i32,
}

impl Kicker {
    /// Interrupts the guest (or makes the next entry return at once).
    pub fn kick(&self) {
        switch::tgkill(self.tid, switch::KICK_SIGNAL);
    }
}

/// The process's direct-execution monitor.
///
/// It stays on the thread that made it (its signal state, LDT and host
/// area are that thread's), which the compiler checks:
///
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<bt::monitor::Monitor>();
/// ```
#[derive(Debug)]
pub struct Monitor {
    space: AddressSpace,
    /// Where the monitor region lies.
    layout: Layout,
    ram: OwnedFd,
    ram_size: u64,
    tid: i32,
    /// Per view and slot, the guest segment last shadowed there and the
    /// LDT entry written for it.
    loaded: [[Option<(Segment, UserDesc)>; 6]; 2],
    /// Bytes of the stub page in use.
    stub_used: u32,
    /// The translation regions were handed out.
    tc_mapped: bool,
    /// The exit behind a `ForeignSelectors` report.
    deferred: Option<DirectExit>,
    /// Opens and closes the monitor region; shared with the translation
    /// cache's regions.
    gate: Arc<Gate>,
    /// KiB of the monitor region backed by huge pages at set-up.
    huge_kb: u64,
    /// `irq_pending` for the vCPU area at the next run of translated code.
    irq_pending: u16,
    /// The next run of translated code goes without the guest's vector
    /// state ([`Monitor::set_vector_lazy`]).
    vector_lazy: bool,
    /// The process guest user code runs in, if not this one
    /// ([`Monitor::with_user_process`]).
    user: Option<UserSpace>,
    /// Frame copies the user-code process maps in place of guest frames
    /// (with a user-code process only).
    copies: Option<FrameCopies>,
    /// Descriptors translated code loads into DS, ES, FS and GS by itself.
    segs: SegCache,
    // The areas, signal state and LDT belong to the creating thread:
    // not Send, so every run is on it (no check at run time).
    _not_send: std::marker::PhantomData<*mut ()>,
}

fn gettid() -> i32 {
    // SAFETY: gettid has no memory effects.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

fn install_altstack() -> Result<(), MonitorError> {
    let p = address_space::map_above_4g(ALTSTACK_SIZE, false, "the signal stack")?.cast();
    let ss = libc::stack_t {
        ss_sp: p,
        ss_flags: 0,
        ss_size: ALTSTACK_SIZE,
    };
    // SAFETY: the stack is a private mapping that is never unmapped (the
    // Monitor lives until the process ends). It replaces the one Rust's
    // runtime installed for stack-overflow reports, which is only freed at
    // thread exit and then only disables the alternate stack.
    if unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) } != 0 {
        return Err(MonitorError::Host(format!(
            "sigaltstack: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn install_handlers() -> Result<(), MonitorError> {
    switch::note_text_base();
    for sig in switch::HANDLED_SIGNALS {
        // SAFETY: a zeroed sigaction is a valid starting point; the fields we
        // set follow sigaction(2). The handler is the asm trampoline, which
        // runs on the alternate stack (SA_ONSTACK), as a signal taken in
        // compatibility mode requires.
        let r = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = switch::trampoline_address();
            // Nothing blocked while a handler runs, so that a handler may
            // leave its frame behind (jump to the exit stub rather than
            // sigreturn) without a mask to restore. A kick that interrupts
            // a handler finds host code and only sets pending_kick; a
            // fault in a handler is a monitor bug either way.
            sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if r != 0 {
            return Err(MonitorError::Host(format!(
                "sigaction({sig}): {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    Ok(())
}

impl Monitor {
    /// [`Monitor::with_layout`] with the monitor region at its default
    /// place ([`Layout::DEFAULT`]).
    pub fn new(mem: &GuestMemory) -> Result<Monitor, MonitorError> {
        Monitor::with_layout(mem, Layout::DEFAULT)
    }

    /// [`Monitor::new`], with guest user code run in a child process of
    /// its own (user_space.rs): this process then keeps the kernel view of
    /// guest memory for good, the child only ever the user view, and a
    /// switch between the two is a hand-off instead of re-protecting
    /// pages. Call it before any other thread starts: the child is forked.
    pub fn with_user_process(mem: &GuestMemory) -> Result<Monitor, MonitorError> {
        let mut monitor = Monitor::new(mem)?;
        // Before the fork: the child maps the copies from the same memfd.
        monitor.copies = Some(FrameCopies::new()?);
        monitor.user = Some(UserSpace::spawn(&mut monitor)?);
        // Nothing here joins protection changes across unmapped pages
        // (only the one-process mode's view switches do, over the
        // reservation): guest pages can go into holes, as in the child.
        monitor.space.punch_reservation()?;
        Ok(monitor)
    }

    /// Lets the user-code process start on the view changes queued so
    /// far now, while this process goes on (none without one).
    pub fn publish_user_ops(&mut self) -> Result<(), MonitorError> {
        match &mut self.user {
            Some(u) => u.publish(),
            None => Ok(()),
        }
    }

    /// Whether guest user code runs in a process of its own.
    pub fn has_user_process(&self) -> bool {
        self.user.is_some()
    }

    /// The user-code process's id, if there is one.
    pub fn user_process_id(&self) -> Option<i32> {
        self.user.as_ref().map(UserSpace::pid)
    }

    /// Hand-offs to the user-code process so far (0 without one).
    pub fn handoffs(&self) -> u64 {
        self.user.as_ref().map_or(0, UserSpace::handoffs)
    }

    /// The child's set-up, in the child: the monitor region closed for
    /// good, the reservation turned into holes (guest pages map into them
    /// more cheaply) and the process confined as the monitor's own is
    /// later.
    fn become_user_process(&mut self) -> Result<(), MonitorError> {
        use std::os::fd::AsRawFd;
        self.gate.close()?;
        self.space.punch_reservation()?;
        let mut fds = vec![self.ram.as_raw_fd()];
        fds.extend(self.copies.as_ref().map(FrameCopies::raw_fd));
        seccomp::confine_user_process(&fds)
    }

    /// Sets up direct execution for this process on the calling thread:
    /// reserves the low 4 GiB, maps the monitor region where `layout` puts
    /// it and the host area,
    /// maps guest RAM 1:1 at
    /// [4 KiB, RAM size) read-write-execute (the non-paged case: linear ==
    /// physical; page 0 stays unmapped because of mmap_min_addr), installs
    /// the signal handlers, the sigaltstack and the seccomp filter.
    ///
    /// Only the default layout is in use: with a region below the top of
    /// the 32-bit space, shadow segments and the paging-off identity map
    /// would still stop at its base.
    pub fn with_layout(mem: &GuestMemory, layout: Layout) -> Result<Monitor, MonitorError> {
        if CREATED.swap(true, Ordering::SeqCst) {
            return Err(MonitorError::AlreadyCreated);
        }
        let ram = mem
            .fd()
            .try_clone_to_owned()
            .map_err(|e| MonitorError::Host(format!("dup of the guest RAM memfd: {e}")))?;
        let mut space = AddressSpace::reserve(layout)?;
        let region = space.map_monitor_region()?;
        debug_assert_eq!(region as u32, layout.base());
        let why = match host_vdso::park_landing_pad(layout.base()) {
            host_vdso::Parked::At(at) if *at as u32 == layout.base() => None,
            host_vdso::Parked::At(at) => Some(format!("moved for another region: {at:#x}")),
            host_vdso::Parked::Left(why) => Some(why.clone()),
        };
        if let Some(why) = why {
            tracing::warn!(
                "the host's vDSO is not where the monitor needs it ({why}): a guest \
                 SYSENTER whose EBP the host cannot read may run guest code on the \
                 host's segment"
            );
        }
        ldt::install_monitor_segments(layout)?;
        let tid = gettid();
        // SAFETY: the monitor region was just mapped read-write, this is
        // the process's only Monitor, and nothing else uses the region.
        let host_area = unsafe { switch::init_area(tid, layout)? };
        let stub = switch::patched_tc_exit_stub(host_area);
        assert!(stub.len() as u32 <= contract::STUB_SIZE);
        // SAFETY: the stub page lies in the region mapped read-write above;
        // the stub is far shorter than the page.
        unsafe {
            std::ptr::copy_nonoverlapping(
                stub.as_ptr(),
                layout.stub() as usize as *mut u8,
                stub.len(),
            )
        };
        // SAFETY: the region was just mapped read-write; nothing uses the
        // table yet.
        unsafe { SegCache::clear_table(layout) };
        let huge_kb = address_space::monitor_region_huge_kb().unwrap_or(0);
        // SAFETY: the region is mapped for the life of the process; Rust
        // code reaches it only through raw pointers (the vCPU area, between
        // runs, with the gate opened first) and gated regions.
        let gate =
            Arc::new(unsafe { Gate::new(layout.base() as usize, contract::REGION_SIZE as usize) });
        let mut monitor = Monitor {
            space,
            layout,
            ram,
            ram_size: mem.size(),
            tid,
            loaded: [[None; 6]; 2],
            stub_used: stub.len() as u32,
            tc_mapped: false,
            deferred: None,
            gate,
            huge_kb,
            irq_pending: 0,
            vector_lazy: false,
            user: None,
            copies: None,
            segs: SegCache::new(),
            _not_send: std::marker::PhantomData,
        };
        monitor.map_identity()?;
        install_altstack()?;
        install_handlers()?;
        seccomp::install()?;
        Ok(monitor)
    }

    /// Maps guest RAM at guest physical `phys` to guest linear `linear`
    /// (with `populate`, host page tables filled at once).
    pub fn map(
        &mut self,
        linear: u32,
        phys: u64,
        len: u32,
        prot: Prot,
        populate: bool,
    ) -> Result<(), MonitorError> {
        self.map_views(linear, phys, len, Some(prot), Some(prot), populate)
    }

    /// [`Monitor::map`] with protection `here` in this process and `user`
    /// in the user-code process (where there is one); None leaves that
    /// process's mapping as it is.
    pub fn map_views(
        &mut self,
        linear: u32,
        phys: u64,
        len: u32,
        here: Option<Prot>,
        user: Option<Prot>,
        populate: bool,
    ) -> Result<(), MonitorError> {
        if let Some(prot) = here {
            self.space.map_ram(
                (self.ram.as_fd(), self.ram_size),
                linear,
                phys,
                len,
                prot,
                populate,
            )?;
        }
        if let (Some(u), Some(user)) = (&mut self.user, user) {
            u.push(Op::Map {
                linear,
                len,
                phys,
                prot: user,
                populate,
            })?;
        }
        Ok(())
    }

    /// The page of frame copy `slot` (below [`frame_copies::SLOTS`]),
    /// which the user-code process shares; None without one.
    pub fn frame_copy(&mut self, slot: u32) -> Option<&mut [u8]> {
        self.copies.as_mut().map(|c| c.page(slot))
    }

    /// Maps frame copy `slot` at guest linear page `linear` in the
    /// user-code process only, with `prot`; this process keeps the frame
    /// itself (see [`Self::frame_copy`]).
    pub fn map_copy_for_user(
        &mut self,
        linear: u32,
        slot: u32,
        prot: Prot,
    ) -> Result<(), MonitorError> {
        match &mut self.user {
            Some(u) => u.push(Op::MapCopy { linear, slot, prot }),
            None => Err(MonitorError::Host(
                "a frame copy without a user-code process".into(),
            )),
        }
    }

    /// In the user-code process: carries out [`Op::MapCopy`].
    fn map_copy(&mut self, linear: u32, slot: u32, prot: Prot) -> Result<(), MonitorError> {
        let Some(copies) = &self.copies else {
            return Err(MonitorError::Host("no frame copies in this process".into()));
        };
        self.space.map_ram(
            copies.backing(),
            linear,
            u64::from(slot * PAGE_SIZE),
            PAGE_SIZE,
            prot,
            true,
        )
    }

    /// Where the monitor region lies.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// One past the last page of RAM that paging-off guests see at linear
    /// = physical (RAM stops there, or the monitor region starts).
    pub fn identity_top(&self) -> u32 {
        self.ram_size.min(u64::from(self.layout.base())) as u32
    }

    /// Maps all of RAM at linear = physical, read-write-execute, as a
    /// guest with paging off sees it (page 0 stays unmapped: mmap_min_addr).
    pub fn map_identity(&mut self) -> Result<(), MonitorError> {
        let top = self.identity_top();
        if top > PAGE_SIZE {
            self.map(
                PAGE_SIZE,
                u64::from(PAGE_SIZE),
                top - PAGE_SIZE,
                Prot::RWX,
                false,
            )?;
        }
        Ok(())
    }

    /// Drops the mapping [`Monitor::map_identity`] made.
    pub fn unmap_identity(&mut self) -> Result<(), MonitorError> {
        let top = self.identity_top();
        if top > PAGE_SIZE {
            self.unmap(PAGE_SIZE, top - PAGE_SIZE)?;
        }
        Ok(())
    }

    /// Unmaps a guest linear range (accesses then fault with #PF).
    pub fn unmap(&mut self, linear: u32, len: u32) -> Result<(), MonitorError> {
        self.unmap_views(linear, len, true, true)
    }

    /// [`Monitor::unmap`] in this process (`here`) and in the user-code
    /// process (`user`, where there is one).
    pub fn unmap_views(
        &mut self,
        linear: u32,
        len: u32,
        here: bool,
        user: bool,
    ) -> Result<(), MonitorError> {
        if here {
            self.space.unmap(linear, len)?;
        }
        if let (Some(u), true) = (&mut self.user, user) {
            u.push(Op::Unmap { linear, len })?;
        }
        Ok(())
    }

    /// Makes a mapped guest linear range inaccessible here (`here`) and in
    /// the user-code process (`user`) but leaves its frames behind it:
    /// showing it again is an `mprotect` (~2 k cycles here), where an
    /// unmap and a new map are two `mmap`s (~8 k and ~12 k).
    pub fn hide_views(
        &mut self,
        linear: u32,
        len: u32,
        here: bool,
        user: bool,
    ) -> Result<(), MonitorError> {
        self.protect_views(
            linear,
            len,
            here.then_some(Prot::NONE),
            user.then_some(Prot::NONE),
        )
    }

    /// Changes the protections of a mapped guest linear range.
    pub fn protect(&mut self, linear: u32, len: u32, prot: Prot) -> Result<(), MonitorError> {
        self.protect_views(linear, len, Some(prot), Some(prot))
    }

    /// [`Monitor::protect`] with `here` in this process (None: leave it,
    /// the range is not mapped here) and `user` in the user-code process
    /// (where there is one).
    pub fn protect_views(
        &mut self,
        linear: u32,
        len: u32,
        here: Option<Prot>,
        user: Option<Prot>,
    ) -> Result<(), MonitorError> {
        if let Some(prot) = here {
            self.space.protect(linear, len, prot)?;
        }
        if let (Some(u), Some(user)) = (&mut self.user, user) {
            u.push(Op::Protect {
                linear,
                len,
                prot: user,
            })?;
        }
        Ok(())
    }

    /// Confines the whole process to the system calls the monitor needs
    /// (design.md section 4, [`seccomp::allowlist`]): call once every
    /// thread has started and finished its own start-up.
    pub fn confine(&self) -> Result<(), MonitorError> {
        use std::os::fd::AsRawFd;
        seccomp::confine(self.ram.as_raw_fd(), self.user.as_ref().map(UserSpace::pid))
    }

    /// A handle other threads (timers) use to interrupt the guest.
    pub fn kicker(&self) -> Kicker {
        Kicker { tid: self.tid }
    }

    fn load_shadow(&mut self, slot: Slot, view: View, seg: &Segment) -> Result<u16, MonitorError> {
        let nullable = !matches!(slot, Slot::Cs | Slot::Ss);
        if nullable && (seg.selector & !3 == 0 || !seg.present) {
            return Ok(0);
        }
        let loaded = &mut self.loaded[view as usize][slot as usize];
        // The same segment as last time: its entry is in place (every run
        // of translated code shadows FS and GS, nearly always unchanged).
        if matches!(loaded, Some((last, _)) if last == seg) {
            return Ok(slot.selector(view));
        }
        let desc = ldt::shadow_descriptor(slot, view, seg, self.layout)?;
        // modify_ldt is a system call and makes the kernel reload the LDT on
        // every CPU running this process: skip it when nothing changed.
        if loaded.map(|(_, d)| d) != Some(desc) {
            ldt::write_entry(&desc)?;
        }
        *loaded = Some((*seg, desc));
        Ok(slot.selector(view))
    }

    /// Copies `code` (32-bit routines shared by all translations, such as
    /// the indirect-branch miss handler) into the stub page and returns its
    /// host address.
    pub fn install_stub_code(&mut self, code: &[u8]) -> Result<u32, MonitorError> {
        let at = (self.stub_used + 15) & !15;
        if at + code.len() as u32 > contract::STUB_SIZE {
            return Err(MonitorError::Host("the stub page is full".into()));
        }
        self.open_region()?;
        let addr = self.layout.stub() + at;
        // SAFETY: the region is open (read-write) and [at, at+len) lies
        // inside the stub page (checked above); no Rust reference points
        // into it.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), addr as usize as *mut u8, code.len())
        };
        self.stub_used = at + code.len() as u32;
        Ok(addr)
    }

    /// Hands the indirect-branch table and a code buffer of `tc_size` bytes
    /// in the monitor region to the translation cache (as regions that open
    /// the monitor region when the cache touches them). Only once per
    /// process.
    pub fn translation_regions(&mut self, tc_size: u32) -> Result<(Region, Region), MonitorError> {
        if self.tc_mapped {
            return Err(MonitorError::Host(
                "translation regions already mapped".into(),
            ));
        }
        if tc_size == 0 || tc_size > contract::TC_MAX || !tc_size.is_multiple_of(PAGE_SIZE) {
            return Err(MonitorError::Host(format!(
                "translation cache size {tc_size:#x}: must be a multiple of 4 KiB, at most {:#x}",
                contract::TC_MAX
            )));
        }
        let table_len = contract::TABLE_SIZE;
        self.tc_mapped = true;
        // SAFETY: both ranges lie in the monitor region, mapped for the life
        // of the process, inside the gate's range; nothing else refers to
        // them; the gate is closed only by `run_user`, never while the
        // cache holds a slice.
        unsafe {
            Ok((
                Region::gated(self.layout.table(), table_len, self.gate.clone()),
                Region::gated(self.layout.tc(), tc_size, self.gate.clone()),
            ))
        }
    }

    /// Makes the monitor region accessible if `run_user` closed it.
    fn open_region(&self) -> Result<(), MonitorError> {
        self.gate.try_open()
    }

    /// The vCPU area (translated code's fields), with the monitor region
    /// opened first.
    fn vcpu(&self) -> &contract::VcpuArea {
        self.gate.open();
        // SAFETY: the area is initialised, the region is open and the
        // guest is not running (we hold &self on the vCPU thread between
        // runs); the reference ends before the region can close again
        // (only `run_user`, which needs &mut self, closes it).
        unsafe { switch::vcpu() }
    }

    /// What the monitor region's gate did, and whether huge pages back it.
    pub fn region_stats(&self) -> RegionStats {
        let (opens, closes) = self.gate.counts();
        RegionStats {
            opens,
            closes,
            huge_kb: self.huge_kb,
        }
    }

    /// Enters guest code at `eip` with `cpu`'s registers, `eflags` as the
    /// hardware should hold them and host selectors `sels`, and returns how
    /// it left, with the guest registers at the exit copied into `cpu`
    /// (unless it never entered). The caller reads the rest of the exit
    /// from the returned area.
    fn enter_guest(
        &mut self,
        cpu: &mut CpuState,
        eip: u32,
        eflags: u32,
        sels: [u16; 6],
    ) -> Result<(Left, &'static mut switch::HostArea), MonitorError> {
        // From the selectors this monitor chose: user code's GS is always
        // a shadow of ours.
        let lazy = sels[5] == ldt::MONITOR_GS_LAZY;
        if !lazy {
            if let Some(u) = &mut self.user {
                // Translated code with the guest's vector state (user code
                // runs in the child, never here).
                u.image_for_monitor();
            }
        }
        {
            // SAFETY: Monitor::new initialised the host area; this Monitor
            // is the only one and we are on its thread; the reference ends
            // before `enter`.
            let area = unsafe { switch::area() };
            area.gpr = [
                cpu.eax, cpu.ecx, cpu.edx, cpu.ebx, cpu.esp, cpu.ebp, cpu.esi, cpu.edi,
            ];
            area.eip = eip;
            area.eflags = eflags;
            area.sel = sels;
            area.vec_lazy = u32::from(lazy);
            area.exit_signal = 0;
            area.exit_at_entry = 0;
            area.tc_exit = 0;
        }
        // SAFETY: the callers loaded `sels` (CS a code and SS a writable
        // data shadow or the monitor's segments; the others shadows or
        // null); handlers, sigaltstack and seccomp were installed by `new`
        // on this thread.
        unsafe { switch::enter() };
        // SAFETY: as above; the guest is not running any more, and the
        // area lives (mapped, at a fixed address) as long as the process.
        let area = unsafe { switch::area() };
        let left = if area.tc_exit != 0 {
            // A kick that arrived in the TC exit stub needs no exit of its
            // own: the run loop checks the timers at every exit anyway.
            area.pending_kick = 0;
            Left::TcExit
        } else if area.exit_signal == 0 || area.exit_signal == switch::KICK_SIGNAL as u32 {
            area.pending_kick = 0;
            if area.exit_signal == 0 || area.exit_at_entry != 0 {
                return Ok((Left::NotEntered, area));
            }
            Left::Signal
        } else if area.exit_at_entry != 0 {
            return Err(MonitorError::EntryFault {
                signal: area.exit_signal as i32,
                trapno: area.exit_trapno,
                error_code: area.exit_err,
            });
        } else {
            Left::Signal
        };
        [
            cpu.eax, cpu.ecx, cpu.edx, cpu.ebx, cpu.esp, cpu.ebp, cpu.esi, cpu.edi,
        ] = area.gpr;
        Ok((left, area))
    }

    /// Runs translated code from host address `host_eip` with the guest
    /// registers, data segments and arithmetic flags of `cpu` until it
    /// leaves, and writes the guest state at the exit back into `cpu`.
    ///
    /// Translated code runs on the monitor's flat code segment with GS on
    /// the monitor region; the guest's own DS, ES, FS and SS are shadowed
    /// as for direct execution. `cpu.eip` is left alone: only the caller
    /// can map a host address back to a guest EIP.
    ///
    /// `live` resumes code a signal interrupted inside a rewrite: the
    /// host selectors it had (see [`TcExit::Signal`]) replace the shadows,
    /// since the rewrite may have borrowed FS, and the vCPU area's
    /// selectors and inline-load marks stay as the rewrite left them
    /// (see `set_segments`).
    pub fn run_translated(
        &mut self,
        cpu: &mut CpuState,
        host_eip: u32,
        live: Option<[u16; 6]>,
    ) -> Result<TcExit, MonitorError> {
        // The child applies what the guest kernel's path so far changed
        // while this run goes on.
        self.publish_user_ops()?;
        // A resumed run takes its selectors, and the area its shadows'
        // selectors, from the interrupted code: no shadow to load.
        let (sels, shadows) = match live {
            Some(s) => (s, None),
            None => {
                let fs = self.load_shadow(Slot::Fs, View::Kernel, &cpu.fs)?;
                let gs = self.load_shadow(Slot::Gs, View::Kernel, &cpu.gs)?;
                let sels = [
                    ldt::MONITOR_CS,
                    self.load_shadow(Slot::Ss, View::Kernel, &cpu.ss)?,
                    self.load_shadow(Slot::Ds, View::Kernel, &cpu.ds)?,
                    self.load_shadow(Slot::Es, View::Kernel, &cpu.es)?,
                    fs,
                    if self.vector_lazy {
                        ldt::MONITOR_GS_LAZY
                    } else {
                        ldt::MONITOR_GS
                    },
                ];
                (sels, Some((fs, gs)))
            }
        };
        let (eflags, vsys, vif) = translated_flags_in(cpu.eflags);
        self.open_region()?;
        if self.segs.gdt().is_some_and(|g| g != cpu.gdtr) {
            // SAFETY: the region is open; translated code is not running.
            unsafe { self.segs.clear(self.layout) };
        }
        {
            // SAFETY: as in `enter_guest`, and the region is open; the
            // reference ends before `enter_guest`.
            let v = unsafe { switch::vcpu() };
            v.vsys = vsys;
            v.vif = vif;
            v.irq_pending = self.irq_pending;
            v.sti_shadow_at = 0;
            v.guest_cr = [cpu.cr0, 0, cpu.cr2, cpu.cr3, cpu.cr4];
            if let Some((fs, gs)) = shadows {
                set_segments(v, cpu, fs, gs);
            }
        }
        let (left, area) = self.enter_guest(cpu, host_eip, eflags, sels)?;
        if left == Left::NotEntered {
            return Ok(TcExit::Interrupted);
        }
        // SAFETY: translated code left and the region is still open (only
        // `run_user` closes it).
        let v = unsafe { switch::vcpu() };
        cpu.eflags = translated_flags_back(cpu.eflags, area.eflags, v.vsys, v.vif);
        // Segments translated code loaded by itself (seg_cache.rs).
        for (i, seg) in [
            (2, &mut cpu.ds),
            (3, &mut cpu.es),
            (4, &mut cpu.fs),
            (5, &mut cpu.gs),
        ] {
            let sel = v.guest_sel[i] as u16;
            if v.sel_loaded[i] != 0 {
                *seg = self.segs.segment(sel).ok_or_else(|| {
                    MonitorError::Host(format!(
                        "translated code loaded selector {sel:#x}, which the segment cache lacks"
                    ))
                })?;
            }
        }
        match left {
            Left::NotEntered | Left::Signal => {}
            Left::TcExit => {
                return Ok(TcExit::Exit {
                    reason: v.tc_reason,
                    arg: v.tc_arg,
                })
            }
        }
        let exit = if area.sel[0] != ldt::MONITOR_CS {
            DirectExit::ForeignCode {
                selector: area.sel[0],
                signal: area.exit_signal as i32,
            }
        } else {
            area_exit(area)
        };
        Ok(TcExit::Signal {
            host_eip: area.eip,
            exit,
            sels: area.sel,
        })
    }

    /// How many indirect branches translated code resolved inline.
    pub fn inline_hits(&self) -> u32 {
        self.vcpu().inline_hits
    }

    /// How often translated code ran each inline rewrite, in
    /// [`Inline`] order.
    pub fn inlined(&self) -> [u32; Inline::ALL.len()] {
        self.vcpu().inlined
    }

    /// Host address of the instruction after the last inline STI that
    /// translated code ran since it was entered (0 if none): a signal that
    /// stops the guest right there came inside STI's interrupt shadow.
    pub fn sti_shadow_at(&self) -> u32 {
        self.vcpu().sti_shadow_at
    }

    /// Sets whether the next run of translated code (not a resumed one,
    /// which keeps what it had) goes without the guest's vector state
    /// (`lazy`). Then GS is the segment that stops below the vector gate:
    /// the first instruction of a block that touches vector state faults
    /// there first, and the engine runs it again with the state
    /// ([`crate::contract::VECTOR_GATE_OFFSET`]).
    pub fn set_vector_lazy(&mut self, lazy: bool) {
        self.vector_lazy = lazy;
    }

    /// Tells the next runs of translated code whether an external interrupt
    /// waits for the guest's IF: then an inline STI or POPF that sets IF
    /// leaves translated code so that the monitor can deliver it.
    pub fn set_irq_pending(&mut self, pending: bool) {
        // Kept here and written at the next run: the region may be closed.
        self.irq_pending = if pending { flags::IF as u16 } else { 0 };
    }

    /// The vCPU area's scratch slots as translated code last left them
    /// (saved guest EAX and ECX, jump target, exit source).
    pub fn scratch(&self) -> [u32; 4] {
        self.vcpu().scratch
    }

    /// Lets translated code load `seg` (just loaded into DS, ES, FS or GS at
    /// CPL 0 from the guest's GDT `gdtr`, its descriptor `desc` at linear
    /// `desc_at`) by itself from now on (seg_cache.rs).
    pub fn cache_segment(
        &mut self,
        gdtr: x86::TableRegister,
        seg: &Segment,
        desc_at: u32,
        desc: u64,
    ) -> Result<(), MonitorError> {
        if u64::from(desc_at) + 8 > u64::from(self.layout.base()) {
            // The inline check reads it through the monitor's flat CS:
            // never the monitor region.
            return Ok(());
        }
        self.open_region()?;
        // SAFETY: the region is open and only this thread uses the table,
        // between runs of translated code.
        unsafe { self.segs.insert(self.layout, gdtr, seg, desc_at, desc) }
    }

    /// The exit that followed a [`DirectExit::ForeignSelectors`], once.
    pub fn take_deferred_exit(&mut self) -> Option<DirectExit> {
        self.deferred.take()
    }

    /// Runs guest user (CPL 3) code directly from `cpu` until the first
    /// exit, and writes the guest state at the exit back into `cpu`.
    ///
    /// The virtual IF and IOPL in `cpu.eflags` are kept as they were: the
    /// hardware IF is always set while guest user code runs.
    ///
    /// The monitor region is closed (PROT_NONE) first and stays closed
    /// after the exit, until something needs it again: guest user code that
    /// loads a host selector reaching the region faults at its first access
    /// there (a #PF exit) instead of reading or writing the monitor's data.
    pub fn run_user(&mut self, cpu: &mut CpuState) -> Result<DirectExit, MonitorError> {
        if let Some(u) = &mut self.user {
            if switch::take_pending_kick() {
                return Ok(DirectExit::Interrupted);
            }
            let (exit, deferred) = u.run(cpu)?;
            self.deferred = deferred;
            return Ok(exit);
        }
        if cpu.cpl() != 3 || cpu.eflags & flags::VM != 0 {
            return Err(MonitorError::NotUserMode(format!(
                "CPL {} EFLAGS {:#x}",
                cpu.cpl(),
                cpu.eflags
            )));
        }
        if !cpu.cs.is_code() {
            return Err(MonitorError::NotUserMode("CS is not a code segment".into()));
        }
        let sels = [
            self.load_shadow(Slot::Cs, View::User, &cpu.cs)?,
            self.load_shadow(Slot::Ss, View::User, &cpu.ss)?,
            self.load_shadow(Slot::Ds, View::User, &cpu.ds)?,
            self.load_shadow(Slot::Es, View::User, &cpu.es)?,
            self.load_shadow(Slot::Fs, View::User, &cpu.fs)?,
            self.load_shadow(Slot::Gs, View::User, &cpu.gs)?,
        ];
        let eflags = (cpu.eflags & USER_FLAGS) | flags::IF | flags::FIXED1;
        self.gate.close()?;
        let (left, area) = self.enter_guest(cpu, cpu.eip, eflags, sels)?;
        if left == Left::NotEntered {
            return Ok(DirectExit::Interrupted);
        }
        // The host's fast system-call path leaves its own 32-bit CS and a
        // return address above 4 GiB (the landing pad in its vDSO, the
        // SIGSYS's call address); `int 0x80`, even from a host segment
        // the guest jumped to, leaves an address below 4 GiB.
        // Some(whether it was SYSENTER) for such a call.
        let fast_call = (area.sel[0] == HOST_USER32_CS
            && ((area.exit_signal == libc::SIGSYS as u32 && area.exit_addr >> 32 != 0)
                || host_fast_call_faulted(area)))
        .then(host_fast_call_is_sysenter);
        if area.sel[0] != sels[0] && fast_call.is_none() {
            cpu.eip = area.eip;
            return Ok(DirectExit::ForeignCode {
                selector: area.sel[0],
                signal: area.exit_signal as i32,
            });
        }
        if let Some(sysenter) = fast_call {
            // Both paths load EBP from [ESP] before the filter runs (the
            // vDSO's convention). SYSENTER took EBP for ESP, so the guest's
            // EBP is the host's stack pointer; SYSCALL (AMD) kept ESP and
            // stashed EBP in ECX, which SYSCALL itself clobbers.
            cpu.ebp = if sysenter { cpu.esp } else { cpu.ecx };
            cpu.eip = 0;
        } else {
            cpu.eip = area.eip;
        }
        cpu.eflags = merge_flags(cpu.eflags, area.eflags, USER_FLAGS);
        let mut foreign = [None; 4];
        for (i, (seg, (&now, &was))) in [&mut cpu.ds, &mut cpu.es, &mut cpu.fs, &mut cpu.gs]
            .into_iter()
            .zip(area.sel[2..].iter().zip(&sels[2..]))
            .enumerate()
        {
            if now == was {
                continue;
            }
            if now & !3 == 0 {
                // The guest loaded a null selector, which CPL 3 may do.
                *seg = Segment {
                    selector: now,
                    ..Segment::unusable()
                };
            } else {
                // The guest loaded a selector of the host's GDT (or of our
                // LDT): the host's descriptor, not the guest's, answered,
                // and a flat host selector reaches the monitor region.
                foreign[i] = Some(now);
            }
        }
        let exit = fast_call.map_or_else(
            || area_exit(area),
            |sysenter| DirectExit::FastSystemCall { sysenter },
        );
        if foreign.iter().any(Option::is_some) {
            self.deferred = Some(exit);
            return Ok(DirectExit::ForeignSelectors { sels: foreign });
        }
        Ok(exit)
    }
}

/// [`decode_exit`] of the signal the host area recorded.
fn area_exit(area: &switch::HostArea) -> DirectExit {
    decode_exit(
        area.exit_signal as i32,
        area.exit_trapno,
        area.exit_err,
        area.exit_addr,
    )
}

/// The code selector Linux gives 32-bit code of a 64-bit process
/// (`__USER32_CS`), which its fast system-call paths return to.
const HOST_USER32_CS: u16 = 0x23;

/// Whether an exit on the host's 32-bit CS is the host's fast system-call
/// path failing to read the word at the guest's EBP (which it loads into
/// EBP, as the vDSO's convention has it) before its filter could trap the
/// call: it then returns -EFAULT in EAX to its vDSO landing pad, an
/// address above 4 GiB that compatibility mode cuts to 32 bits, and the
/// fetch there faults: [`host_vdso`] moved the vDSO so that the alias lies
/// in the monitor region, closed while guest user code runs. (Where it
/// could not, guest code mapped at the alias runs on the host's segment,
/// and the VM stops as after any far jump to one.) The call's number is
/// lost with EAX.
fn host_fast_call_faulted(area: &switch::HostArea) -> bool {
    const EFAULT: u32 = (-14i32) as u32;
    const PF_FETCH: u32 = 1 << 4;
    area.exit_signal == libc::SIGSEGV as u32
        && area.exit_trapno == 14
        && area.exit_err & PF_FETCH != 0
        && area.exit_addr == u64::from(area.eip)
        && area.gpr[0] == EFAULT
        // Where the vDSO was moved, only its landing pad's alias: guest
        // code that jumps to the host's CS elsewhere, EAX -EFAULT or not,
        // is stopped as foreign code.
        && host_vdso::landing_alias().is_none_or(|alias| alias.contains(&area.eip))
}

/// Whether the host's fast system-call path from 32-bit code is SYSENTER
/// (Intel and the others) rather than SYSCALL (AMD and Hygon, where
/// SYSENTER in compatibility mode raises #UD and SYSCALL does not).
/// Asked once: CPUID exits to the hypervisor on a VM host (~10 µs here).
pub fn host_fast_call_is_sysenter() -> bool {
    static SYSENTER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SYSENTER.get_or_init(|| {
        let l0 = core::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [l0.ebx, l0.edx, l0.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        !matches!(&vendor[..], b"AuthenticAMD" | b"HygonGenuine")
    })
}

/// Maps a host signal with its trap number and error code to the guest's
/// view of the exit.
pub fn decode_exit(signal: i32, trapno: u32, err: u32, addr: u64) -> DirectExit {
    let fault = |vector: u8, error_code: Option<u32>| DirectExit::Fault {
        vector,
        error_code,
        cr2: None,
    };
    match signal {
        libc::SIGSYS => DirectExit::Syscall,
        s if s == switch::KICK_SIGNAL => DirectExit::Interrupted,
        libc::SIGILL => fault(6, None),
        // With CR0.AM set by Linux, guest EFLAGS.AC enables #AC at CPL 3.
        libc::SIGBUS if trapno == 17 => fault(17, Some(err)),
        libc::SIGBUS => DirectExit::HostBus { addr: addr as u32 },
        libc::SIGSEGV => match trapno {
            // Bit 1 (IDT) of the error code: the #GP came from the gate of
            // an `INT n` whose host DPL is 0.
            13 if err & 7 == 2 => DirectExit::SoftwareInterrupt {
                vector: (err >> 3) as u8,
            },
            14 => DirectExit::Fault {
                vector: 14,
                error_code: Some(err),
                cr2: Some(addr as u32),
            },
            8 | 10..=13 | 17 | 21 => fault(trapno as u8, Some(err)),
            0..=31 => fault(trapno as u8, None),
            _ => DirectExit::Unknown {
                signal,
                trapno,
                error_code: err,
            },
        },
        libc::SIGFPE | libc::SIGTRAP if trapno < 32 => fault(trapno as u8, None),
        _ => DirectExit::Unknown {
            signal,
            trapno,
            error_code: err,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_system_flags_never_reach_the_host() {
        let all = !0u32;
        let (host, vsys, vif) = translated_flags_in(all);
        assert_eq!(host, TRANSLATED_FLAGS | flags::IF | flags::FIXED1);
        assert_eq!(vsys, VIRTUAL_SYSTEM_FLAGS);
        assert_eq!(u32::from(vif), flags::IF);
        let (host, vsys, vif) = translated_flags_in(flags::FIXED1 | flags::AC | flags::TF);
        assert_eq!(host, flags::IF | flags::FIXED1, "no AC or TF on the host");
        assert_eq!((vsys, vif), (flags::AC | flags::TF, 0));
    }

    #[test]
    fn flags_come_back_from_host_area_and_the_old_value() {
        let before = flags::FIXED1 | flags::IF | flags::RF | flags::ZF | (3 << 12);
        // Translated code ran CLI, set AC through POPF, and left CF set.
        let host = flags::FIXED1 | flags::IF | flags::CF;
        let after = translated_flags_back(before, host, flags::AC | (1 << 12), 0);
        assert_eq!(
            after,
            flags::FIXED1 | flags::RF | flags::CF | flags::AC | (1 << 12)
        );
        // Nothing changed: the round trip is exact.
        let (h, v, i) = translated_flags_in(before);
        assert_eq!(translated_flags_back(before, h, v, i), before);
    }

    #[test]
    fn int_n_decodes_from_the_gp_error_code() {
        assert_eq!(
            decode_exit(libc::SIGSEGV, 13, (0x21 << 3) | 2, 0),
            DirectExit::SoftwareInterrupt { vector: 0x21 }
        );
        assert_eq!(
            decode_exit(libc::SIGSEGV, 13, 0, 0),
            DirectExit::Fault {
                vector: 13,
                error_code: Some(0),
                cr2: None
            }
        );
        assert_eq!(
            decode_exit(libc::SIGSEGV, 14, 6, 0x1234),
            DirectExit::Fault {
                vector: 14,
                error_code: Some(6),
                cr2: Some(0x1234)
            }
        );
        assert_eq!(decode_exit(libc::SIGSYS, 0, 0, 0), DirectExit::Syscall);
        assert_eq!(
            decode_exit(libc::SIGFPE, 0, 0, 0),
            DirectExit::Fault {
                vector: 0,
                error_code: None,
                cr2: None
            }
        );
    }
}
