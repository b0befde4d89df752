/*
 * The workloads. Each times its measured rounds with RDTSC and leaves the
 * total in r->cycles; any failure ends the program through fail(). Child
 * processes never print: they report through their exit status, which the
 * parent turns into the one failure line.
 */
#include "bench.h"
#include "compute_kernel.h"

void bench_forkwait(struct run *r)
{
	u64 t0 = rdtsc();
	for (u32 i = 0; i < r->rounds; i++) {
		long pid = sys_fork();
		/* A status that changes each round: the parent checks what the
		 * kernel stores through wait4's pointer. */
		if (pid == 0)
			sys_exit(i & 0x7f);
		if (is_error(pid))
			fail("fork", pid);
		reap(pid, "the child", i & 0x7f);
	}
	r->cycles = rdtsc() - t0;
}

/* getppid in a loop, through `int $0x80` or through the vDSO: inlined
 * with `vdso` constant, so each loop holds only its own way in. */
static inline __attribute__((always_inline)) void getppid_rounds(struct run *r, int vdso)
{
	long ppid = sys0_int80(NR_getppid);
	u32 wrong = 0;
	u64 t0 = rdtsc();
	for (u32 i = 0; i < r->rounds; i++)
		wrong += (vdso ? sys0(NR_getppid) : sys0_int80(NR_getppid)) != ppid;
	r->cycles = rdtsc() - t0;
	if (is_error(ppid) || wrong)
		fail("getppid gave different answers", ppid);
}

void bench_syscall(struct run *r)
{
	getppid_rounds(r, 0);
}

void bench_vsyscall(struct run *r)
{
	getppid_rounds(r, 1);
}

void bench_pipe(struct run *r)
{
	int down[2], up[2];
	long e = sys_pipe(down);
	if (!e)
		e = sys_pipe(up);
	if (e)
		fail("pipe", e);

	long pid = sys_fork();
	if (is_error(pid))
		fail("fork", pid);
	if (pid == 0) {
		sys_close(down[1]);
		sys_close(up[0]);
		for (u32 i = 0; i < r->rounds; i++) {
			u8 b;
			if (sys_read(down[0], &b, 1) != 1)
				sys_exit(2);
			/* Echo a transform, not the byte itself, so the parent
			 * can tell the child's answer from its own byte. */
			b ^= 0xA5;
			if (sys_write(up[1], &b, 1) != 1)
				sys_exit(3);
		}
		sys_exit(0);
	}
	sys_close(down[0]);
	sys_close(up[1]);

	u64 t0 = rdtsc();
	for (u32 i = 0; i < r->rounds; i++) {
		u8 b = (u8)i;
		long n = sys_write(down[1], &b, 1);
		if (n != 1)
			fail("write to the child's pipe", n);
		n = sys_read(up[0], &b, 1);
		if (n != 1)
			fail("read from the child's pipe", n);
		if (b != ((u8)i ^ 0xA5))
			fail("the child echoed a wrong byte", 0);
	}
	r->cycles = rdtsc() - t0;
	reap(pid, "the echoing child", 0);
}

/*
 * Pages per mapping: ROUNDS pages at once could exceed a small guest's
 * RAM (the harness may ask for tens of thousands), so the pages are
 * faulted in regions of at most this many, each unmapped before the next.
 */
#define PGFAULT_REGION_PAGES 1024u

void bench_pgfault(struct run *r)
{
	u64 t0 = rdtsc();
	for (u32 left = r->rounds; left;) {
		u32 pages = left < PGFAULT_REGION_PAGES ? left : PGFAULT_REGION_PAGES;
		u32 len = pages * PAGE_SIZE;
		long p = sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
		if (is_error(p))
			fail("mmap", p);
		/* One fault per 4 KiB page even where transparent huge pages
		 * are on; a kernel without them refuses the advice, harmlessly. */
		sys_madvise((void *)p, len, MADV_NOHUGEPAGE);
		volatile u8 *page = (volatile u8 *)p;
		for (u32 i = 0; i < pages; i++)
			page[i * PAGE_SIZE] = 1;
		long e = sys_munmap((void *)p, len);
		if (e)
			fail("munmap", e);
		left -= pages;
	}
	r->cycles = rdtsc() - t0;
}

/* Hand-offs before the timed window, so the child is up and both
 * processes have run on CPU 0 when timing starts. */
#define CTXSW_WARMUP 16u

/*
 * Passes a turn back and forth with the other process until the counter
 * reaches `end`: a process may only advance an even (parent) or odd
 * (child) counter; having advanced it, it wakes the other and sleeps on
 * the counter until the other advances it in turn.
 *
 * Why a futex and not sched_yield: under popek, Debian's kernel (CFS,
 * Linux 6.1) picked the yielding process again more often than not (7492
 * yields without a switch in 5000 hand-offs), because a yield gives way
 * only to a process whose virtual runtime is within the wakeup
 * granularity (1 ms) and a slow kernel makes runtimes drift by more than
 * that. Sleeping until the other process moves forces a switch at every
 * hand-off under any scheduler and any speed.
 */
static long alternate(volatile u32 *turn, u32 parity, u32 from, u32 end, u64 *t0)
{
	for (;;) {
		u32 v = *turn;
		if (v >= end)
			return 0;
		if ((v & 1) == parity) {
			if (v == from && t0)
				*t0 = rdtsc();
			*turn = v + 1;
			long e = sys_futex_wake((u32 *)turn, 1);
			if (is_error(e))
				return e;
		} else {
			/* Returns at once (EAGAIN) if the counter moved
			 * meanwhile; a signal may also end the wait early. */
			long e = sys_futex_wait((u32 *)turn, v);
			if (e && e != -EAGAIN && e != -EINTR)
				return e;
		}
	}
}

void bench_ctxsw(struct run *r)
{
	/* Pinned before the fork, so the child inherits it: one CPU, as in
	 * the guest, so every hand-off is a switch on that CPU rather than a
	 * wake-up sent to another. */
	long e = pin_to_cpu(0);
	if (e)
		fail("sched_setaffinity to CPU 0", e);
	/* Shared, so the futex is one across fork: keyed by the page, not by
	 * the address space. */
	long p = sys_mmap(NULL, PAGE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS);
	if (is_error(p))
		fail("mmap of the shared page", p);
	volatile u32 *turn = (volatile u32 *)p;
	u32 from = 2 * CTXSW_WARMUP;
	if (r->rounds > 0xFFFFFFFFu - from)
		fail("too many rounds", 0);
	u32 end = from + r->rounds;

	long pid = sys_fork();
	if (is_error(pid))
		fail("fork", pid);
	if (pid == 0)
		sys_exit(alternate(turn, 1, from, end, NULL) ? 2 : 0);
	u64 t0 = 0;
	e = alternate(turn, 0, from, end, &t0);
	r->cycles = rdtsc() - t0;
	if (e)
		fail("futex", e);
	reap(pid, "the child (its futex calls failed)", 0);
}

void bench_compute(struct run *r)
{
	u64 t0 = rdtsc();
	u32 sum = compute(r->rounds);
	r->cycles = rdtsc() - t0;
	/* Only the demo's iteration count has a known answer. */
	if (r->rounds == COMPUTE_DEFAULT_ITERATIONS && sum != COMPUTE_DEFAULT_CHECKSUM)
		fail("wrong checksum: user code computed something else than on the host", 0);
}

/* The path goes into a shell script unquoted: keep it to plain characters. */
static int plain_path(const char *s)
{
	for (; *s; s++) {
		char c = *s;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '/' || c == '.' || c == '_' ||
		      c == '-' || c == '+'))
			return 0;
	}
	return 1;
}

void bench_shell(struct run *r)
{
	const char *busybox = r->extra ? r->extra : "/bin/busybox";
	if (!plain_path(busybox) || str_len(busybox) > 1024)
		fail("the busybox path must be short and of letters, digits and /._+-", 0);
	long e = sys_access(busybox, X_OK);
	if (e) {
		fail_begin();
		out_str("cannot execute ");
		out_str(busybox);
		out_str(" (error ");
		out_dec((u64)-e);
		out_char(')');
		fail_end();
	}

	static char script[1200];
	char *s = put_str(script, "i=0; while [ $i -lt ");
	s = put_dec(s, r->rounds);
	s = put_str(s, " ]; do ");
	s = put_str(s, busybox);
	s = put_str(s, " true; i=$((i+1)); done");
	*s = 0;
	char *argv[] = {"sh", "-c", script, NULL};

	u64 t0 = rdtsc();
	long pid = sys_fork();
	if (is_error(pid))
		fail("fork", pid);
	if (pid == 0) {
		sys_execve(busybox, argv, r->envp);
		sys_exit(127);
	}
	reap(pid, "the shell loop", 0);
	r->cycles = rdtsc() - t0;
}
