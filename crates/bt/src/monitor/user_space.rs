//! Guest user code in a host process of its own (issue 15, docs/perf.md).
//!
//! In one process, every switch between guest user code and the guest
//! kernel re-protected each supervisor page the kernel had used: Debian's
//! kernel made that ~50 `mprotect` calls per system call, more than half of
//! its cost. Here the monitor's process keeps the kernel view of guest
//! memory for good (translated kernel code runs there), and guest user code
//! runs in a child forked at set-up whose low 4 GiB only ever hold the user
//! view: supervisor pages are never accessible there and the monitor region
//! is closed for good. A user/kernel transition is a hand-off through one
//! shared mapping (registers, vector state, the exit) instead.
//!
//! The child is a copy of the monitor taken at fork, running the same
//! direct-execution code ([`Monitor::run_user`] with no child of its own):
//! its own LDT, signal handlers, alternate stack and host area. Changes to
//! guest mappings meant for it are queued ([`Op`]); the child applies them
//! while it waits for its turn, if it is still polling, so that its host
//! calls overlap the guest kernel's path in the monitor, and the rest
//! right before it next runs the guest.
//!
//! Kicks (timer signals) go to the monitor's thread as before; while the
//! child runs the guest, the monitor's wait passes them on. The child dies
//! with the monitor's thread (PR_SET_PDEATHSIG), and the monitor notices a
//! dead child when a sleep for it ends without its turn (`waitpid`: a
//! timeout every 100 ms, or a kick).

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, Ordering};

use x86::CpuState;

use super::{switch, DirectExit, Monitor, MonitorError, Prot};

/// Queued mapping changes before the monitor hands the child a batch of
/// its own (a CR3 switch of a large process queues one unmap per run).
const MAX_OPS: usize = 4096;

/// Room for the guest's XSAVE image (AVX-512 needs ~2.7 KiB; the AMX tiles
/// are left out of the image, see switch.rs).
const MAX_IMAGE: usize = 16 * 1024;

/// Polls of the shared turn word before a side sleeps in the kernel: a
/// hand-off to a waiter that is still polling costs no wake-up, which on
/// this VM host takes ~10 µs. A Linux getppid round trip took 105 k cycles
/// with no polling, 101 k with 100 polls, 59 k with 1,000 and 56-58 k with
/// 5,000 or 20,000 (docs/perf.md); fewer polls leave more of the second
/// core to other work.
const SPIN: u32 = 5_000;

/// Whose turn it is, in [`Channel::turn`].
const MONITOR_TURN: u32 = 0;
const CHILD_TURN: u32 = 1;

/// What the child does on its turn, in [`Channel::kind`].
const APPLY: u32 = 0;
const RUN: u32 = 1;

/// One change to the child's guest mappings.
#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    Map {
        linear: u32,
        len: u32,
        phys: u64,
        prot: Prot,
        populate: bool,
    },
    Protect {
        linear: u32,
        len: u32,
        prot: Prot,
    },
    Unmap {
        linear: u32,
        len: u32,
    },
    /// One page of a frame copy (monitor/frame_copies.rs).
    MapCopy {
        linear: u32,
        slot: u32,
        prot: Prot,
    },
}

impl Op {
    fn range(&self) -> (u32, u32) {
        match *self {
            Op::Map { linear, len, .. }
            | Op::Protect { linear, len, .. }
            | Op::Unmap { linear, len } => (linear, len),
            Op::MapCopy { linear, .. } => (linear, super::PAGE_SIZE),
        }
    }

    /// One op doing what `self` then `next` do, where there is one: a map
    /// or unmap replaces whatever was queued for the same range (the
    /// child's MAP_FIXED replaces a mapping in one call), a change of
    /// protection joins the map it follows and replaces the change before
    /// it. A COW fault queued the unmap of the old page and the map of the
    /// new one, two `mmap`s of ~3 µs; it now hides the page and shows it
    /// again, one `mprotect`.
    fn then(self, next: Op) -> Option<Op> {
        if self.range() != next.range() {
            return None;
        }
        match (self, next) {
            (_, Op::Map { .. } | Op::Unmap { .. } | Op::MapCopy { .. })
            | (Op::Protect { .. }, Op::Protect { .. }) => Some(next),
            (
                Op::Map {
                    linear,
                    len,
                    phys,
                    populate,
                    ..
                },
                Op::Protect { prot, .. },
            ) => Some(Op::Map {
                linear,
                len,
                phys,
                prot,
                populate,
            }),
            (Op::MapCopy { linear, slot, .. }, Op::Protect { prot, .. }) => {
                Some(Op::MapCopy { linear, slot, prot })
            }
            _ => None,
        }
    }
}

/// How the child's turn ended.
// It lives in the shared mapping, where nothing can be boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy)]
enum Reply {
    Exit {
        exit: DirectExit,
        /// The exit behind a `ForeignSelectors` report.
        deferred: Option<DirectExit>,
    },
    NotRun,
    Failed {
        msg: [u8; 240],
        len: u8,
    },
}

/// The one mapping both processes share (above 4 GiB, out of reach of
/// guest code).
#[repr(C)]
struct Channel {
    /// [`MONITOR_TURN`] or [`CHILD_TURN`]; a futex word.
    turn: AtomicU32,
    /// Non-zero while the side waiting for turn `i` sleeps on `turn` (else
    /// passing it that turn needs no wake-up call: it is polling). One
    /// word per side: a shared one let a side that woke up clear the
    /// other's announcement, and both slept for good.
    sleeping: [AtomicU32; 2],
    kind: u32,
    /// Ops published so far this turn: the monitor stores it (Release)
    /// after writing the op, the child reads it while it polls and sets it
    /// back to 0 at the end of its turn. The monitor keeps its own count
    /// (`UserSpace::published`) and never reads this one back.
    ops_len: AtomicU32,
    ops: [MaybeUninit<Op>; MAX_OPS],
    cpu: MaybeUninit<CpuState>,
    reply: MaybeUninit<Reply>,
    /// Non-zero when the monitor wrote a newer guest image for this run
    /// (else the child's own is current).
    image_sent: u32,
    /// Non-zero when the child's run changed the image, which it then
    /// wrote back (else `image` is what the child ran from).
    image_changed: u32,
    image_len: u32,
    image: [u8; MAX_IMAGE],
}

/// The monitor's handle on its child.
#[derive(Debug)]
pub(super) struct UserSpace {
    pid: i32,
    ch: *mut Channel,
    /// Ops written to the channel and published since the child's last
    /// turn.
    published: u32,
    /// The last op, kept back so that the next one for the same range
    /// can still join it ([`Op::then`]): a published op may already be
    /// applied.
    held: Option<Op>,
    /// Hand-offs so far (`--stats`).
    handoffs: u64,
    /// The channel's guest image is the newest (the child has it too): a
    /// run need not send the monitor's.
    channel_current: bool,
    /// The monitor's guest image is older than the channel's: the child's
    /// last run changed it ([`UserSpace::image_for_monitor`]).
    monitor_stale: bool,
}

fn futex(word: &AtomicU32, op: libc::c_int, val: u32, timeout: Option<&libc::timespec>) -> i64 {
    // SAFETY: `word` is a live, aligned u32 in a shared mapping (no
    // FUTEX_PRIVATE_FLAG: two processes use it); the timeout, if any, lives
    // for the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            timeout.map_or(std::ptr::null(), |t| t as *const libc::timespec),
            0,
            0,
        )
    }
}

/// Waits until `turn` holds `want`: polls first, then sleeps in the kernel.
/// `on_spin` runs at each poll and says whether it did work (which starts
/// the polls afresh: the other side is busy), `on_poll` every thousand
/// polls and after each sleep, `on_timeout` after a sleep that ended with
/// the turn still not ours (it timed out, or a signal cut it short); an
/// error from it ends the wait.
fn wait_turn(
    turn: &AtomicU32,
    sleeping: &[AtomicU32; 2],
    want: u32,
    timeout: Option<&libc::timespec>,
    mut on_spin: impl FnMut() -> bool,
    mut on_poll: impl FnMut(),
    mut on_timeout: impl FnMut() -> Result<(), MonitorError>,
) -> Result<(), MonitorError> {
    let mut polls = 0u32;
    loop {
        let now = turn.load(Ordering::Acquire);
        if now == want {
            return Ok(());
        }
        if polls < SPIN {
            polls += 1;
            if on_spin() {
                polls = 0;
            }
            if polls.is_multiple_of(1024) {
                on_poll();
            }
            std::hint::spin_loop();
            continue;
        }
        // SeqCst pairs with `pass_turn`: either the passer sees `sleeping`
        // or the futex call sees the new turn (and returns at once).
        let mine = &sleeping[want as usize];
        mine.store(1, Ordering::SeqCst);
        let slept = if turn.load(Ordering::SeqCst) == now {
            futex(turn, libc::FUTEX_WAIT, now, timeout)
        } else {
            0
        };
        // Not only a timeout: the monitor's kicks (every 10 ms at most)
        // cut its sleeps short, and a sleep that never timed out never
        // noticed a dead child (a run hung for minutes in the test suite).
        let woken_early = slept < 0
            && matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::ETIMEDOUT | libc::EINTR)
            );
        mine.store(0, Ordering::SeqCst);
        on_poll();
        if woken_early && turn.load(Ordering::Acquire) != want {
            on_timeout()?;
        }
    }
}

fn pass_turn(turn: &AtomicU32, sleeping: &[AtomicU32; 2], to: u32) {
    turn.store(to, Ordering::SeqCst);
    if sleeping[to as usize].load(Ordering::SeqCst) != 0 {
        futex(turn, libc::FUTEX_WAKE, 1, None);
    }
}

impl UserSpace {
    /// Forks the child from `monitor` (which must have no child yet, its
    /// handlers, alternate stack and filter installed) and returns the
    /// monitor's handle. In the child this never returns: it serves the
    /// monitor until the monitor's thread ends.
    pub(super) fn spawn(monitor: &mut Monitor) -> Result<UserSpace, MonitorError> {
        let len = std::mem::size_of::<Channel>().next_multiple_of(4096);
        // Zeroed, which is a valid Channel (turn MONITOR_TURN, no ops).
        let p = super::address_space::map_above_4g(len, true, "the user-process channel")?;
        let ch = p.cast::<Channel>();
        // SAFETY: getpid has no memory effects.
        let parent = unsafe { libc::getpid() };
        // SAFETY: fork duplicates only this thread. The child touches no
        // lock another thread may hold: it runs the monitor's own code
        // (system calls, its copy of this Monitor, glibc's malloc, which
        // glibc keeps usable across fork) and never returns from `serve`.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(host_error("fork of the user-code process"));
        }
        if pid == 0 {
            serve(monitor, ch, parent);
        }
        Ok(UserSpace::on_channel(pid, ch))
    }

    /// The monitor's side of `ch`, with the child `pid` behind it, before
    /// any turn.
    fn on_channel(pid: i32, ch: *mut Channel) -> UserSpace {
        UserSpace {
            pid,
            ch,
            published: 0,
            held: None,
            handoffs: 0,
            channel_current: false,
            monitor_stale: false,
        }
    }

    /// The child's process id.
    pub(super) fn pid(&self) -> i32 {
        self.pid
    }

    /// Hand-offs to the child so far.
    pub(super) fn handoffs(&self) -> u64 {
        self.handoffs
    }

    fn channel(&mut self) -> &mut Channel {
        // SAFETY: the mapping lives as long as the process; on the
        // monitor's turn the child touches only the atomics and reads the
        // published ops, which the monitor writes through raw pointers
        // (`publish`), and `&mut self` makes this the only reference on
        // the monitor's side.
        unsafe { &mut *self.ch }
    }

    /// Queues a change of the child's mappings. It joins the op held back
    /// where it can; otherwise the held op is published (a full queue is
    /// handed over first) and this one is held.
    pub(super) fn push(&mut self, op: Op) -> Result<(), MonitorError> {
        if let Some(joined) = self.held.and_then(|h| h.then(op)) {
            self.held = Some(joined);
            return Ok(());
        }
        self.publish()?;
        self.held = Some(op);
        Ok(())
    }

    /// Publishes the op held back, for the child to apply as soon as it
    /// sees it: the monitor calls this before it runs the guest kernel, so
    /// that the child's host calls overlap that run.
    pub(super) fn publish(&mut self) -> Result<(), MonitorError> {
        let Some(op) = self.held.take() else {
            return Ok(());
        };
        if self.published as usize == MAX_OPS {
            self.handoff(APPLY)?;
            self.take_reply()?;
        }
        let n = self.published;
        // SAFETY: the mapping lives as long as the process and `n` is in
        // bounds; the child reads only the entries below the count it was
        // given, and this one is above it until the store below.
        unsafe {
            std::ptr::addr_of_mut!((*self.ch).ops[n as usize]).write(MaybeUninit::new(op));
            (*self.ch).ops_len.store(n + 1, Ordering::Release);
        }
        self.published = n + 1;
        Ok(())
    }

    /// Runs guest user code in the child from `cpu` (its vector state from
    /// this process's host area) and brings the exit, the registers and the
    /// vector state back: what [`Monitor::run_user`] does in one process.
    pub(super) fn run(
        &mut self,
        cpu: &mut CpuState,
    ) -> Result<(DirectExit, Option<DirectExit>), MonitorError> {
        // The guest image goes across only where it changed: translated
        // code runs without the guest's vector state nearly always (Linux's
        // kernel paths use none), and user code leaves it as it was in 99.7%
        // of runs, while each 832-byte copy (AVX; 2.7 KiB with AVX-512) is
        // cache lines moving between the two processes' cores both ways.
        let send = !self.channel_current;
        {
            let ch = self.channel();
            ch.cpu = MaybeUninit::new(cpu.clone());
            ch.image_sent = u32::from(send);
            if send {
                // SAFETY: the monitor's host area and its guest image are
                // ours between runs; the image is no larger than the
                // channel's.
                let image = unsafe { switch::guest_image() };
                ch.image_len = image.len() as u32;
                ch.image[..image.len()].copy_from_slice(image);
            }
        }
        self.handoff(RUN)?;
        let r = self.take_reply();
        let ch = self.channel();
        // SAFETY: the child wrote back the state it was given, run or not.
        let got = unsafe { ch.cpu.assume_init_read() };
        accept_user_state(cpu, &got);
        let changed = ch.image_changed != 0;
        self.channel_current = true;
        self.monitor_stale |= changed;
        match r? {
            Some(exit) => Ok(exit),
            None => Ok((DirectExit::Interrupted, None)),
        }
    }

    /// Brings the monitor's guest image up to date before a run of
    /// translated code with the guest's vector state, which may change
    /// it: the channel's is no longer the newest after that.
    pub(super) fn image_for_monitor(&mut self) {
        if self.monitor_stale {
            // SAFETY: the monitor's host area and its guest image are ours
            // between runs.
            let image = unsafe { switch::guest_image() };
            // Our own length, never the channel's: guest code in the child
            // may have written the channel (the flag it set only decides
            // which of the guest's own states the guest gets).
            let len = image.len();
            image.copy_from_slice(&self.channel().image[..len]);
            self.monitor_stale = false;
        }
        self.channel_current = false;
    }

    fn take_reply(&mut self) -> Result<Option<(DirectExit, Option<DirectExit>)>, MonitorError> {
        // SAFETY: the child wrote a reply before passing the turn back.
        match unsafe { self.channel().reply.assume_init_read() } {
            Reply::Exit { exit, deferred } => Ok(Some((exit, deferred))),
            Reply::NotRun => Ok(None),
            Reply::Failed { msg, len } => Err(MonitorError::Host(format!(
                "in the user-code process: {}",
                String::from_utf8_lossy(&msg[..usize::from(len)])
            ))),
        }
    }

    /// Gives the child its turn and waits for it to end, passing kicks on
    /// and noticing a dead child.
    fn handoff(&mut self, kind: u32) -> Result<(), MonitorError> {
        if self.held.is_some() {
            self.publish()?;
        }
        self.handoffs += 1;
        let pid = self.pid;
        let ch = self.channel();
        ch.kind = kind;
        pass_turn(&ch.turn, &ch.sleeping, CHILD_TURN);
        let timeout = libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        };
        // SAFETY: the turn words live as long as the mapping; only atomics
        // touch them.
        let (turn, sleeping) = unsafe { (&(*self.ch).turn, &(*self.ch).sleeping) };
        wait_turn(
            turn,
            sleeping,
            MONITOR_TURN,
            Some(&timeout),
            || false,
            || {
                if switch::take_pending_kick() {
                    // SAFETY: tgkill only sends a signal to our child.
                    unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, switch::KICK_SIGNAL) };
                }
            },
            || child_alive(pid),
        )?;
        // The child set the channel's count back to 0 on its turn.
        self.published = 0;
        Ok(())
    }
}

/// Takes from `got`, the state the child sends back, only what guest
/// user code can change: the general registers, EIP, the flags user code
/// owns, and null selectors it loaded into DS, ES, FS or GS. The child
/// runs guest code, which could have reached 64-bit mode and rewritten
/// the channel: nothing else it says is believed.
fn accept_user_state(cpu: &mut CpuState, got: &CpuState) {
    [
        cpu.eax, cpu.ecx, cpu.edx, cpu.ebx, cpu.esp, cpu.ebp, cpu.esi, cpu.edi, cpu.eip,
    ] = [
        got.eax, got.ecx, got.edx, got.ebx, got.esp, got.ebp, got.esi, got.edi, got.eip,
    ];
    cpu.eflags = super::merge_flags(cpu.eflags, got.eflags, super::USER_FLAGS);
    for (seg, new) in [&mut cpu.ds, &mut cpu.es, &mut cpu.fs, &mut cpu.gs]
        .into_iter()
        .zip([got.ds, got.es, got.fs, got.gs])
    {
        if new.selector != seg.selector && new.selector & !3 == 0 {
            *seg = x86::Segment {
                selector: new.selector,
                ..x86::Segment::unusable()
            };
        }
    }
}

/// An error unless the child still runs.
fn child_alive(pid: i32) -> Result<(), MonitorError> {
    let mut status = 0;
    // SAFETY: waitpid writes only `status`.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if r == pid {
        let how = if libc::WIFSIGNALED(status) {
            format!("killed by signal {}", libc::WTERMSIG(status))
        } else {
            format!("exited with status {}", libc::WEXITSTATUS(status))
        };
        return Err(MonitorError::Host(format!(
            "the user-code process {pid} {how}"
        )));
    }
    Ok(())
}

fn host_error(what: &str) -> MonitorError {
    MonitorError::Host(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// Takes this thread's restartable-sequences area (which glibc registers
/// at start) away from the kernel: every signal delivered to a thread with
/// one updates it on the way back to user mode, and this process takes a
/// signal at each exit of guest user code (`__rseq_handle_notify_resume`
/// and its callees were ~2.5% of its samples in a getppid loop). Nothing here uses rseq; glibc's
/// `sched_getcpu` falls back to the system call without it. Best effort:
/// where glibc registered none, or exports no area, nothing changes.
fn unregister_rseq() {
    /// RSEQ_SIG on x86, the signature glibc registered the area with.
    const RSEQ_SIG: u32 = 0x5305_3053;
    /// RSEQ_FLAG_UNREGISTER.
    const UNREGISTER: i32 = 1;
    // SAFETY: dlsym with NUL-terminated names only looks symbols up.
    let (offset, size) = unsafe {
        (
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_offset".as_ptr()),
            libc::dlsym(libc::RTLD_DEFAULT, c"__rseq_size".as_ptr()),
        )
    };
    if offset.is_null() || size.is_null() {
        return;
    }
    // SAFETY: glibc exports these two as `ptrdiff_t` and `unsigned int`
    // (sys/rseq.h), constant once the process has started.
    let (offset, size) = unsafe { (*offset.cast::<isize>(), *size.cast::<u32>()) };
    if size == 0 {
        return;
    }
    let tp: usize;
    // SAFETY: on x86-64 the word at FS:0 is the thread pointer itself
    // (the TCB's self pointer, which glibc sets up for every thread).
    unsafe { std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly)) };
    let area = tp.wrapping_add_signed(offset);
    // SAFETY: unregistering names the area and signature glibc registered;
    // the kernel only compares them and stops updating the area. glibc
    // registers at least the original ABI's 32 bytes, even where it exports
    // a smaller feature size; a length that does not match only makes the
    // call fail, and the area stays registered.
    unsafe {
        libc::syscall(libc::SYS_rseq, area, size.max(32), UNREGISTER, RSEQ_SIG);
    }
}

/// The child's life: set up, then on each turn apply the queued mapping
/// changes and, if asked, run guest user code once.
fn serve(monitor: &mut Monitor, ch: *mut Channel, parent: i32) -> ! {
    // SAFETY: prctl with integer arguments; getppid has no memory effects.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_NAME, c"popek-user".as_ptr());
    }
    // SAFETY: this process has one thread, the child's copy of the
    // monitor's, and no run is under way.
    unsafe { switch::area().vcpu_tid = libc::getpid() };
    unregister_rseq();
    let setup = monitor.become_user_process();
    // SAFETY: the mapping lives as long as the process; these three are
    // atomics, which both sides may touch at any time.
    let (turn, sleeping, ops_len) = unsafe { (&(*ch).turn, &(*ch).sleeping, &(*ch).ops_len) };
    // Ops applied so far this turn, and the first error doing so while
    // waiting (reported at the turn).
    let mut applied = 0u32;
    let mut failed: Result<(), MonitorError> = Ok(());
    loop {
        // Without a timeout, the wait cannot fail.
        let _ = wait_turn(
            turn,
            sleeping,
            CHILD_TURN,
            None,
            || {
                let len = ops_len.load(Ordering::Acquire);
                if len == applied || failed.is_err() {
                    return false;
                }
                failed = apply_ops(monitor, ch, applied, len);
                applied = len;
                true
            },
            || {},
            || Ok(()),
        );
        let len = ops_len.load(Ordering::Acquire);
        let res = std::mem::replace(&mut failed, Ok(()))
            .and(setup.clone())
            .and_then(|()| apply_ops(monitor, ch, applied, len));
        applied = 0;
        ops_len.store(0, Ordering::Relaxed);
        // SAFETY: it is our turn: the monitor does not touch the channel.
        let c = unsafe { &mut *ch };
        let reply = match res.and_then(|()| turn_work(monitor, c)) {
            Ok(r) => r,
            Err(e) => {
                let s = e.to_string();
                let mut msg = [0u8; 240];
                let len = s.len().min(msg.len());
                msg[..len].copy_from_slice(&s.as_bytes()[..len]);
                Reply::Failed {
                    msg,
                    len: len as u8,
                }
            }
        };
        c.reply = MaybeUninit::new(reply);
        pass_turn(turn, sleeping, MONITOR_TURN);
    }
}

/// Applies the published ops `from..to` (a count the child read from the
/// channel, Acquire: the monitor wrote them before it).
fn apply_ops(
    monitor: &mut Monitor,
    ch: *mut Channel,
    from: u32,
    to: u32,
) -> Result<(), MonitorError> {
    // A count the monitor never published (guest code in this process may
    // have written the channel) applies nothing past the array.
    for i in from..to.min(MAX_OPS as u32) {
        // SAFETY: the monitor wrote entry `i` before publishing a count
        // above it and does not write it again before this turn ends.
        let op = unsafe {
            std::ptr::addr_of!((*ch).ops[i as usize])
                .read()
                .assume_init()
        };
        match op {
            Op::Map {
                linear,
                len,
                phys,
                prot,
                populate,
            } => monitor.map(linear, phys, len, prot, populate)?,
            Op::Protect { linear, len, prot } => monitor.protect(linear, len, prot)?,
            Op::Unmap { linear, len } => monitor.unmap(linear, len)?,
            Op::MapCopy { linear, slot, prot } => monitor.map_copy(linear, slot, prot)?,
        }
    }
    Ok(())
}

/// One turn of the child, its ops applied.
fn turn_work(monitor: &mut Monitor, c: &mut Channel) -> Result<Reply, MonitorError> {
    if c.kind != RUN {
        return Ok(Reply::NotRun);
    }
    // SAFETY: the monitor wrote the state for a RUN.
    let mut cpu = unsafe { c.cpu.assume_init_read() };
    let len = c.image_len as usize;
    // SAFETY: our host area's image is ours between runs.
    let image = unsafe { switch::guest_image() };
    if c.image_sent != 0 {
        image.copy_from_slice(&c.image[..len]);
    }
    let r = monitor.run_user(&mut cpu);
    let deferred = monitor.take_deferred_exit();
    c.cpu = MaybeUninit::new(cpu);
    // The channel holds what this run started from (sent now, or this
    // process's own from an earlier turn): compared here, in this core's
    // cache, it goes back only if the run changed it.
    let changed = image[..] != c.image[..len];
    if changed {
        c.image[..len].copy_from_slice(image);
    }
    c.image_changed = u32::from(changed);
    let exit = r?;
    Ok(Reply::Exit { exit, deferred })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(linear: u32, prot: Prot) -> Op {
        Op::Map {
            linear,
            len: 0x1000,
            phys: 0x5000,
            prot,
            populate: true,
        }
    }

    /// A handle on a channel with no child behind it: enough for the
    /// queue, which only hands over when it is full.
    fn childless() -> UserSpace {
        let len = std::mem::size_of::<Channel>().next_multiple_of(4096);
        let p = super::super::address_space::map_above_4g(len, true, "test channel").unwrap();
        UserSpace::on_channel(0, p.cast())
    }

    fn published(u: &UserSpace) -> Vec<(u32, Option<Prot>)> {
        // SAFETY: the channel lives for the test; the first `ops_len`
        // entries were written.
        let n = unsafe { (*u.ch).ops_len.load(Ordering::Acquire) };
        (0..n as usize)
            .map(|i| match unsafe { (*u.ch).ops[i].assume_init() } {
                Op::Map { linear, prot, .. }
                | Op::Protect { linear, prot, .. }
                | Op::MapCopy { linear, prot, .. } => (linear, Some(prot)),
                Op::Unmap { linear, .. } => (linear, None),
            })
            .collect()
    }

    #[test]
    fn the_last_op_is_held_back_until_another_range_or_a_publish() {
        let mut u = childless();
        u.push(map(0x1000, Prot::RW)).unwrap();
        // Joins the held map: nothing the child could apply yet.
        u.push(Op::Protect {
            linear: 0x1000,
            len: 0x1000,
            prot: Prot::R,
        })
        .unwrap();
        assert_eq!(published(&u), []);
        // Another range publishes the joined op and holds the new one.
        u.push(map(0x3000, Prot::RW)).unwrap();
        assert_eq!(published(&u), [(0x1000, Some(Prot::R))]);
        u.publish().unwrap();
        assert_eq!(
            published(&u),
            [(0x1000, Some(Prot::R)), (0x3000, Some(Prot::RW))]
        );
        // A published op is never rewritten: a later change of its range
        // is an op of its own.
        u.push(Op::Unmap {
            linear: 0x3000,
            len: 0x1000,
        })
        .unwrap();
        u.publish().unwrap();
        assert_eq!(published(&u)[2], (0x3000, None));
        assert_eq!(u.published, 3);
    }

    #[test]
    fn ops_on_one_range_join_into_the_last_whole_change() {
        let unmap = Op::Unmap {
            linear: 0x1000,
            len: 0x1000,
        };
        let protect = Op::Protect {
            linear: 0x1000,
            len: 0x1000,
            prot: Prot::R,
        };
        assert!(matches!(
            unmap.then(map(0x1000, Prot::RW)),
            Some(Op::Map { prot: Prot::RW, .. })
        ));
        assert!(matches!(
            map(0x1000, Prot::RW).then(unmap),
            Some(Op::Unmap { .. })
        ));
        assert!(matches!(
            map(0x1000, Prot::RW).then(protect),
            Some(Op::Map {
                prot: Prot::R,
                phys: 0x5000,
                ..
            })
        ));
        assert!(matches!(
            protect.then(Op::Protect {
                linear: 0x1000,
                len: 0x1000,
                prot: Prot::RW,
            }),
            Some(Op::Protect { prot: Prot::RW, .. })
        ));
        // A protection change after an unmap stays (it fails there, as it
        // would have), and other ranges never join.
        assert!(unmap.then(protect).is_none());
        assert!(map(0x2000, Prot::RW).then(unmap).is_none());
        assert!(Op::Unmap {
            linear: 0x1000,
            len: 0x2000
        }
        .then(map(0x1000, Prot::R))
        .is_none());
    }
}
