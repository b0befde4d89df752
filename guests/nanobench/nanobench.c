/*
 * nanobench: the nanobenchmarks of Adams and Agesen, "A comparison of
 * software and hardware techniques for x86 virtualization" (ASPLOS 2006),
 * as a small paged kernel of ours. Each one repeats one virtualization-
 * sensitive event in a tight loop and prints its cost, measured with
 * RDTSC, as
 *
 *     nano NAME: CYCLES cycles/iter (ITERS iters)
 *
 * and checks that every iteration really took the path it claims to
 * measure (a benchmark that silently skipped its event would report a
 * very good number). README.md beside this file says what each measures.
 *
 * Command line: iters=N runs every benchmark N times (default: per
 * benchmark, below); only=NAME runs one benchmark.
 *
 * Every loop is first run WARMUP times, untimed: under popek's BT engine
 * the first run translates the kernel code involved and fills the shadow
 * page tables, and the timed run then measures the steady state a kernel
 * that does this often would see, not the one-off cost of translating.
 *
 * Memory is laid out so that no timed loop writes to a page that holds
 * code: a binary translator (popek, QEMU) write-protects pages it has
 * translated code from and invalidates their translations on a write, so
 * a counter that shared a page with a handler would turn every event into
 * a retranslation. Everything the loops write (counters, page tables, the
 * ESP0 stack, user_args) is page-aligned data, which the linker places
 * after all code.
 */
#include "popek.h"
#include "paging.h"

/* Untimed iterations before each timed run. */
#define WARMUP 16

/* ---- the layout ---------------------------------------------------------- */

/*
 * PDE 0      0x00000000  identity map of the first 4 MiB (the image, its
 *                        stacks and tables), supervisor except the user
 *                        pages; page 0 left out
 * PDE 2      0x00800000  pt_win: the two pgfault pages and the ptemod page
 * PDE 0x3FB  0xFEC00000  the local APIC's page, only if CPUID shows one
 */
#define LIN_WIN 0x00800000u
#define PF_PAGE_A (LIN_WIN + 0 * PAGE_SIZE) /* entry.S: 8 KiB aligned, */
#define PF_PAGE_B (LIN_WIN + 1 * PAGE_SIZE) /* so B is A ^ 0x1000 */
#define PTEMOD_PAGE (LIN_WIN + 2 * PAGE_SIZE)
#define APIC_BASE 0xFEE00000u
#define APIC_TPR 0x80
#define PDX(a) ((a) >> 22)
#define PTX(a) (((a) >> 12) & 1023)

#define PAGE_ALIGNED __attribute__((aligned(4096)))
static volatile u32 pd[1024] PAGE_ALIGNED;
static volatile u32 pt_low[1024] PAGE_ALIGNED;
static volatile u32 pt_win[1024] PAGE_ALIGNED;
static volatile u32 pt_apic[1024] PAGE_ALIGNED;

/* Frames behind the benchmark pages: A and B (pgfault) hold their own
 * linear address in word 0, X and Y (ptemod) a marker each. */
enum { FA, FB, FX, FY, NFRAMES };
static volatile u32 frames[NFRAMES][1024] PAGE_ALIGNED;
#define MARK_X 0x7E70D00Au
#define MARK_Y 0x7E70D00Bu

/* What the handlers in entry.S count, and run_user's saved stack pointer
 * (offsets known to entry.S). */
struct counters {
	u32 syscalls;     /* 0: INT 0x80 */
	u32 divzeros;     /* 4: #DE at nano_div_insn */
	u32 faults;       /* 8: #PF on a benchmark page */
	u32 fault_errors; /* 12: of those, with an error code other than a user read of a not-present page */
	u32 kernel_esp;   /* 16 */
	u32 sysenters;    /* 20: SYSENTER */
};
struct counters counters PAGE_ALIGNED;

/* The ring-3 loops' parameters and results (offsets known to entry.S). */
struct user_args {
	u32 iters;  /* 0 */
	u64 t0, t1; /* 4, 12: RDTSC before and after the loop */
	u32 bad;    /* 20: pgfault reads that did not find their page */
};
union user_page {
	struct user_args a;
	u8 page[4096];
};
union user_page user_args PAGE_ALIGNED;
static u8 user_stack[4096] PAGE_ALIGNED;
static u8 esp0_stack[4096] PAGE_ALIGNED;

/* entry.S */
extern char user_text_start[], user_text_end[];
void user_syscall(void), user_sysenter(void), user_pgfault(void);
void run_user(void (*eip)(void), u32 esp);
void nano_return_entry(void), nano_syscall_entry(void), nano_de_entry(void), nano_pf_entry(void);
void nano_sysenter_entry(void);
u32 callret_loop(u32 n);
void divzero_loop(u32 n);
u32 nano_pf(u32 cr2, u32 error);

static u32 phys(const volatile void *p) { return (u32)p; } /* identity-mapped */

/* ---- helpers ------------------------------------------------------------ */

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/* n / d with two 32-bit DIVs (each quotient fits, so neither faults):
 * a freestanding guest has no libgcc for 64-bit division. The result is
 * clamped to 32 bits, which no per-iteration cost comes near. */
static u32 div64(u64 n, u32 d)
{
	u32 hi = (u32)(n >> 32), lo = (u32)n, q_hi, q_lo, r;
	__asm__("divl %4" : "=a"(q_hi), "=d"(r) : "a"(hi), "d"(0), "rm"(d));
	__asm__("divl %4" : "=a"(q_lo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
	return q_hi ? 0xFFFFFFFFu : q_lo;
}

static void report(const char *name, u64 cycles, u32 iters)
{
	kprintf("nano %s: %u cycles/iter (%u iters)\n", name, div64(cycles, iters), iters);
}

/* An interrupt or trap gate to one of entry.S's handlers. */
static void set_gate(int vector, void (*entry)(void), u8 attr)
{
	u32 off = (u32)entry;
	u32 lo = (off & 0xFFFF) | ((u32)SEL_KCODE << 16);
	u32 hi = (off & 0xFFFF0000) | ((u32)attr << 8);
	idt[vector] = ((u64)hi << 32) | lo;
}

#define GATE_KERNEL 0x8E /* interrupt gate, DPL 0 */
#define GATE_USER 0xEE   /* interrupt gate, DPL 3: INT n allowed at CPL 3 */

static void enter_user(void (*eip)(void), u32 iters)
{
	user_args.a.iters = iters;
	user_args.a.t0 = user_args.a.t1 = 0;
	user_args.a.bad = 0;
	run_user(eip, (u32)user_stack + sizeof(user_stack));
}

static u64 user_cycles(void) { return user_args.a.t1 - user_args.a.t0; }

/* ---- the command line ----------------------------------------------------- */

/* The multiboot command line, copied before paging is on (the loader may
 * have put it anywhere). */
static char cmdline[256];

/* The text after "key" (which ends in '=') in a word of the command line
 * that starts with it; its length in *len. NULL if there is none. */
static const char *cmdline_value(const char *key, u32 *len)
{
	u32 n = strlen(key);
	for (const char *at = strstr(cmdline, key); at; at = strstr(at + 1, key)) {
		if (at != cmdline && at[-1] != ' ')
			continue;
		const char *v = at + n, *end = v;
		while (*end && *end != ' ')
			end++;
		*len = (u32)(end - v);
		return v;
	}
	return NULL;
}

/* A decimal number of 1 to 9 digits (so it cannot overflow), or 0. */
static u32 parse_u32(const char *s, u32 len)
{
	u32 v = 0;
	if (len == 0 || len > 9)
		return 0;
	for (u32 i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return 0;
		v = v * 10 + (u32)(s[i] - '0');
	}
	return v;
}

static u32 iters_override; /* iters=N, or 0 */
static const char *only;   /* only=NAME, or NULL */
static u32 only_len;

static int selected(const char *name)
{
	return !only || (strlen(name) == only_len && !memcmp(name, only, only_len));
}

/* ---- paging --------------------------------------------------------------- */

static void build_tables(void)
{
	for (u32 i = 1; i < 1024; i++)
		pt_low[i] = (i * PAGE_SIZE) | PTE_P | PTE_W;
	/* User code read-only, as an OS maps program text (popek runs a hot
	 * int $0x80 there as int3: docs/bt.md). */
	for (u32 a = (u32)user_text_start; a < (u32)user_text_end; a += PAGE_SIZE)
		pt_low[PTX(a)] = (pt_low[PTX(a)] | PTE_U) & ~PTE_W;
	pt_low[PTX((u32)&user_args)] |= PTE_U;
	pt_low[PTX((u32)user_stack)] |= PTE_U;

	frames[FA][0] = PF_PAGE_A;
	frames[FB][0] = PF_PAGE_B;
	frames[FX][0] = MARK_X;
	frames[FY][0] = MARK_Y;
	/* Not present until ring 3 touches them (nano_pf). */
	pt_win[PTX(PF_PAGE_A)] = phys(frames[FA]) | PTE_W | PTE_U;
	pt_win[PTX(PF_PAGE_B)] = phys(frames[FB]) | PTE_W | PTE_U;
	pt_win[PTX(PTEMOD_PAGE)] = phys(frames[FX]) | PTE_P | PTE_W;

	pd[PDX(0)] = phys(pt_low) | PTE_P | PTE_W | PTE_U;
	pd[PDX(LIN_WIN)] = phys(pt_win) | PTE_P | PTE_W | PTE_U;
}

/* MOV to CR0 that sets PG (with PE set) has no architectural reason to
 * fault, but a virtual CPU that cannot page may answer it with #GP
 * (kvm-pvm does): say so in words a test can recognise, and stop. */
static void on_paging_gp(struct frame *f)
{
	char what[128];
	ksnprintf(what, sizeof(what),
		  "turning paging on: MOV to CR0 raised #GP(0x%x) at %08x; this virtual CPU cannot run a paged guest",
		  f->error, f->eip);
	check(what, 0);
	finish();
}

static void enable_paging(void)
{
	set_handler(13, on_paging_gp);
	write_cr3(phys(pd));
	write_cr0(read_cr0() | CR0_PG | CR0_WP);
	set_handler(13, NULL);
}

/* ---- syscall --------------------------------------------------------------- */

static void bench_syscall(u32 n)
{
	counters.syscalls = 0;
	enter_user(user_syscall, WARMUP);
	enter_user(user_syscall, n);
	check_eq("syscall: the INT 0x80 handler ran once per iteration", counters.syscalls, WARMUP + n);
	report("syscall", user_cycles(), n);
}

/* ---- sysenter -------------------------------------------------------------- */

static void wrmsr(u32 msr, u32 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"(v), "d"(0));
}

/* The fast system call the paper's guest used (SYSENTER/SYSEXIT), where
 * the CPU has it. */
static void bench_sysenter(u32 n)
{
	u32 a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	if (!(d & (1u << 11))) {
		kprintf("nano sysenter: n/a (no SEP in CPUID)\n");
		return;
	}
	wrmsr(0x174, SEL_KCODE);
	wrmsr(0x175, (u32)esp0_stack + sizeof(esp0_stack));
	wrmsr(0x176, (u32)nano_sysenter_entry);
	counters.sysenters = 0;
	enter_user(user_sysenter, WARMUP);
	enter_user(user_sysenter, n);
	check_eq("sysenter: the SYSENTER entry ran once per iteration", counters.sysenters, WARMUP + n);
	report("sysenter", user_cycles(), n);
}

/* ---- in ---------------------------------------------------------------- */

/*
 * The port is the UART's scratch register (COM1+7): every 16550A has one,
 * popek and QEMU both model it, and it is plain storage, so reading it has
 * no side effect (the CMOS data port would do too, but a read of some of
 * its registers clears flags or computes the time) and every read can be
 * checked against the value written before the loop.
 */
#define SCR_VALUE 0xA5

static __attribute__((noinline)) u32 in_loop(u32 n)
{
	u32 bad = 0;
	for (u32 i = 0; i < n; i++)
		bad += inb(UART_SCR) != SCR_VALUE;
	return bad;
}

static void bench_in(u32 n)
{
	outb(UART_SCR, SCR_VALUE);
	u32 bad = in_loop(WARMUP);
	u64 t0 = rdtsc();
	bad += in_loop(n);
	u64 t1 = rdtsc();
	check_eq("in: every read of the UART scratch register returned the value written", bad, 0);
	report("in", t1 - t0, n);
}

/* ---- cr8wr --------------------------------------------------------------- */

#define CPUID_APIC (1u << 9)
#define MSR_APIC_BASE 0x1B
#define APIC_BASE_ENABLE (1u << 11)

static inline u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}

static volatile u32 *tpr(void) { return (volatile u32 *)(APIC_BASE + APIC_TPR); }

static __attribute__((noinline)) void tpr_loop(u32 n)
{
	/* Priorities 1 and 0 in turn: with interrupts never pending, no
	 * write unmasks anything, as in Adams and Agesen's test. */
	for (u32 i = 0; i < n; i++)
		*tpr() = (i & 1) << 4;
}

/* Why the TPR cannot be measured here, or NULL if it can. */
static const char *tpr_unavailable(void)
{
	if (!(cpuid_1_edx() & CPUID_APIC))
		return "CR8 exists only in 64-bit mode; its 32-bit counterpart is the local APIC's "
		       "TPR, and CPUID.1:EDX.APIC is clear: this machine has no local APIC";
	u64 base = rdmsr(MSR_APIC_BASE);
	if (!(base & APIC_BASE_ENABLE) || (u32)(base & PAGE_MASK) != APIC_BASE)
		return "CPUID shows a local APIC, but IA32_APIC_BASE does not enable it at 0xFEE00000";
	pd[PDX(APIC_BASE)] = phys(pt_apic) | PTE_P | PTE_W;
	pt_apic[PTX(APIC_BASE)] = APIC_BASE | PTE_P | PTE_W | PTE_PCD | PTE_PWT;
	invlpg(APIC_BASE);
	*tpr() = 0x20;
	u32 got = *tpr() & 0xFF;
	*tpr() = 0;
	if (got != 0x20 || (*tpr() & 0xFF) != 0)
		return "CPUID shows a local APIC, but its TPR at 0xFEE00080 does not read back what was written";
	return NULL;
}

static void bench_cr8wr(u32 n)
{
	const char *why = tpr_unavailable();
	if (why) {
		kprintf("nano cr8wr: n/a (%s)\n", why);
		return;
	}
	tpr_loop(WARMUP);
	u64 t0 = rdtsc();
	tpr_loop(n);
	u64 t1 = rdtsc();
	check_eq("cr8wr: the TPR holds the last value written", *tpr() & 0xFF, ((n - 1) & 1) << 4);
	*tpr() = 0;
	report("cr8wr", t1 - t0, n);
}

/* ---- callret --------------------------------------------------------------- */

static void bench_callret(u32 n)
{
	u32 calls = callret_loop(WARMUP);
	u64 t0 = rdtsc();
	calls += callret_loop(n);
	u64 t1 = rdtsc();
	check_eq("callret: the leaf function ran once per call", calls, WARMUP + n);
	report("callret", t1 - t0, n);
}

/* ---- pgfault --------------------------------------------------------------- */

/*
 * Demand paging between two pages: the fault on one maps it (sets P) and
 * unmaps the other (clears P, INVLPG), so the ring-3 loop that touches
 * them in turn faults on every access, each fault a true one that the
 * guest kernel must see. The faulting page needs no INVLPG: a not-present
 * entry is never cached in the TLB (SDM vol. 3 section 4.10.2.3).
 */
u32 nano_pf(u32 cr2, u32 error)
{
	u32 page = cr2 & PAGE_MASK;
	if (page != PF_PAGE_A && page != PF_PAGE_B)
		return 0;
	if (error != PF_U)
		counters.fault_errors++;
	u32 other = page ^ PAGE_SIZE;
	pt_win[PTX(page)] |= PTE_P;
	pt_win[PTX(other)] &= ~PTE_P;
	invlpg(other);
	counters.faults++;
	return 1;
}

static void unmap_pf_pages(void)
{
	pt_win[PTX(PF_PAGE_A)] &= ~PTE_P;
	pt_win[PTX(PF_PAGE_B)] &= ~PTE_P;
	invlpg(PF_PAGE_A);
	invlpg(PF_PAGE_B);
}

static void bench_pgfault(u32 n)
{
	counters.faults = counters.fault_errors = 0;
	unmap_pf_pages();
	enter_user(user_pgfault, WARMUP);
	u32 bad = user_args.a.bad;
	unmap_pf_pages();
	enter_user(user_pgfault, n);
	bad += user_args.a.bad;
	unmap_pf_pages();
	check_eq("pgfault: one #PF per ring-3 access", counters.faults, WARMUP + n);
	check_eq("pgfault: every #PF was a ring-3 read of a not-present page", counters.fault_errors, 0);
	check_eq("pgfault: every access read its own page's frame", bad, 0);
	report("pgfault", user_cycles(), n);
}

/* ---- divzero --------------------------------------------------------------- */

/* At CPL 0, as Adams and Agesen did: under a translator the DIV then sits
 * in translated code, so the fault has to be traced back to the guest
 * instruction before it is delivered, the path a kernel-mode fault takes. */

static void bench_divzero(u32 n)
{
	counters.divzeros = 0;
	divzero_loop(WARMUP);
	u64 t0 = rdtsc();
	divzero_loop(n);
	u64 t1 = rdtsc();
	check_eq("divzero: one #DE per DIV, each resumed after it", counters.divzeros, WARMUP + n);
	report("divzero", t1 - t0, n);
}

/* ---- ptemod ---------------------------------------------------------------- */

/* Remaps a page between two frames as a kernel changing a mapping does:
 * write the PTE, then INVLPG. Iteration i maps frame Y if i is even. */
static __attribute__((noinline)) void ptemod_loop(u32 n)
{
	for (u32 i = 0; i < n; i++) {
		pt_win[PTX(PTEMOD_PAGE)] = (i & 1 ? phys(frames[FX]) : phys(frames[FY])) | PTE_P | PTE_W;
		invlpg(PTEMOD_PAGE);
	}
}

static void bench_ptemod(u32 n)
{
	volatile u32 *page = (volatile u32 *)PTEMOD_PAGE;
	pt_win[PTX(PTEMOD_PAGE)] = phys(frames[FX]) | PTE_P | PTE_W;
	invlpg(PTEMOD_PAGE);
	u32 before = page[0]; /* now cached: the first INVLPG has work to do */
	ptemod_loop(WARMUP);
	u64 t0 = rdtsc();
	ptemod_loop(n);
	u64 t1 = rdtsc();
	check_eq("ptemod: the page showed frame X before the loop", before, MARK_X);
	check_eq("ptemod: the page shows the frame the last PTE write chose", page[0],
		 (n - 1) & 1 ? MARK_X : MARK_Y);
	report("ptemod", t1 - t0, n);
}

/* ---- main ------------------------------------------------------------------ */

static const struct bench {
	const char *name;
	/* Enough iterations to amortise the RDTSCs and the ring-3 round trip,
	 * few enough that the trap-heavy ones (a few microseconds each under
	 * a user-level monitor) keep the whole run well under a second. */
	u32 default_iters;
	void (*run)(u32 n);
} benches[] = {
	{ "syscall", 4000, bench_syscall },
	{ "sysenter", 4000, bench_sysenter },
	{ "in", 20000, bench_in },
	{ "cr8wr", 20000, bench_cr8wr },
	{ "callret", 1000000, bench_callret },
	{ "pgfault", 2000, bench_pgfault },
	{ "divzero", 10000, bench_divzero },
	{ "ptemod", 20000, bench_ptemod },
};

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	kprintf("nanobench: Adams and Agesen's nanobenchmarks (ASPLOS 2006), RDTSC cycles per "
		"iteration after a %u-iteration warm-up\n",
		WARMUP);

	if ((mbi->flags & MBI_FLAG_CMDLINE) && mbi->cmdline) {
		const char *src = (const char *)mbi->cmdline;
		u32 i = 0;
		for (; src[i] && i < sizeof(cmdline) - 1; i++)
			cmdline[i] = src[i];
		cmdline[i] = 0;
	}
	u32 len;
	const char *v = cmdline_value("iters=", &len);
	if (v) {
		iters_override = parse_u32(v, len);
		check("iters= is a number from 1 to 999999999", iters_override != 0);
		if (!iters_override)
			finish();
	}
	only = cmdline_value("only=", &only_len);
	if (only) {
		int known = 0;
		for (u32 i = 0; i < ARRAY_SIZE(benches); i++)
			known |= selected(benches[i].name);
		check("only= names a benchmark", known);
		if (!known)
			finish();
	}

	check("the image fits in the identity-mapped first 4 MiB", (u32)__end <= 0x400000);
	build_tables();
	tss_init((u32)esp0_stack + sizeof(esp0_stack));
	set_gate(0, nano_de_entry, GATE_KERNEL);
	set_gate(14, nano_pf_entry, GATE_KERNEL);
	set_gate(0x80, nano_syscall_entry, GATE_USER);
	set_gate(0x81, nano_return_entry, GATE_USER);
	enable_paging();

	for (u32 i = 0; i < ARRAY_SIZE(benches); i++)
		if (selected(benches[i].name))
			benches[i].run(iters_override ? iters_override : benches[i].default_iters);
}
