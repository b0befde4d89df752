/*
 * vector: the vector registers are the guest's, at every exit.
 *
 * Under popek's BT engine guest code shares the host CPU with the monitor:
 * user code runs directly, kernel code runs translated, and every exit to
 * the monitor (a system call, a fault, port I/O, a timer signal) runs host
 * code on the same registers. The world switch must save all of the
 * guest's register state and give it back, and must never hand the guest
 * what the host left behind. This guest writes distinctive values into
 * every vector register 32-bit code can name, makes the monitor run, and
 * reads them back, in user code (ring 3) and in kernel code (ring 0). Before
 * it writes anything it checks that the registers hold their init state.
 *
 * Which registers depends on the host, which the guest cannot ask: its
 * CPUID (answered by popek) has no AVX, but user code runs on the host CPU
 * with the host's XCR0. The command line says what to use:
 *   (nothing)   xmm0-7 and MXCSR (SSE)
 *   avx=1       ymm0-7 and MXCSR
 *   avx512=1    zmm0-7, k0-k7 and MXCSR (needs AVX-512 F and BW)
 * Outside 64-bit mode there are no xmm8-15, ymm8-15 or zmm8-31; the
 * monitor's own tests (crates/bt/tests/direct_exec.rs) check those from
 * 64-bit code.
 *
 * BT only: the kernel never sets CR4.OSXSAVE or XCR0, which it would have
 * to do on a real CPU or under KVM before its first AVX instruction.
 *
 * Paging is on (4 MiB pages, identity, user-accessible) so that a page the
 * kernel maps on demand gives a #PF; the PIT ticks at 1 kHz.
 */
#include "popek.h"
#include "paging.h"

#define F_AVX 1
#define F_AVX512 2

#define SEL_UCODE_RPL3 (SEL_UCODE | 3)
#define SEL_SMALL 0x30 /* GDT 6: data, 4 KiB limit (kernel_gp in regs.S) */

/* System calls: number in EAX, argument in EBX. */
#define SYS_NOP 1    /* returns at once */
#define SYS_WRITE 2  /* prints the string at EBX (port I/O) */
#define SYS_REPORT 3 /* prints the check described at EBX */
#define SYS_KERNEL 4 /* runs the kernel's half of the test */
#define SYS_EXIT 5   /* ends the run */

/* Every vector register 32-bit code can name (layout: regs.S). */
struct vregs {
	u8 v[8][64];
	u64 k[8];
	u32 mxcsr;
	u32 pad[15];
} __attribute__((aligned(64)));

void vec_load(const struct vregs *r, u32 features);
void vec_store(struct vregs *r, u32 features);
void fx_store(void *area);
void enter_user(void (*eip)(void), u32 esp) __attribute__((noreturn));
void user_in(void), do_ud2(void), kernel_gp(void);
extern char user_in_fault[], user_in_resume[], ud2_fault[], ud2_resume[];
extern char kernel_gp_fault[], kernel_gp_resume[];

static u32 features;
/* "ymm0-7 and MXCSR": what the checks compare, for their names. */
static char regs_name[48];

/* Values the guest writes: user code's, then kernel code's. */
static struct vregs user_values, kernel_values;
#define MXCSR_INIT 0x1F80u   /* reset value: all exceptions masked */
#define MXCSR_USER 0x3F80u   /* round down */
#define MXCSR_KERNEL 0x5F80u /* round up */

/* ---- register images ----------------------------------------------------- */

/* Bytes of each slot the chosen registers have. */
static u32 width(void)
{
	if (features & F_AVX512)
		return 64;
	return features & F_AVX ? 32 : 16;
}

/* A distinctive value for every byte the registers hold, none zero. */
static void make_values(struct vregs *r, u32 seed, u32 mxcsr)
{
	memset(r, 0, sizeof(*r));
	u32 x = seed;
	for (u32 n = 0; n < 8; n++) {
		for (u32 i = 0; i < width(); i += 4) {
			x = x * 1664525u + 1013904223u;
			u32 w = x | 0x01010101u;
			memcpy(&r->v[n][i], &w, 4);
		}
		if (features & F_AVX512) {
			x = x * 1664525u + 1013904223u;
			r->k[n] = ((u64)(x | 0x01010101u) << 32) | (seed ^ (n << 24) ^ 0x10101);
		}
	}
	r->mxcsr = mxcsr;
}

/* What the registers hold, read right away. */
static void read_regs(struct vregs *r)
{
	memset(r, 0, sizeof(*r));
	vec_store(r, features);
}

/* The first difference between two images, for a FAIL line. */
struct diff {
	u32 at; /* byte offset, or sizeof(struct vregs) if none */
	u32 got, want;
};

static struct diff compare(const struct vregs *got, const struct vregs *want)
{
	const u32 *g = (const u32 *)got, *w = (const u32 *)want;
	for (u32 i = 0; i < sizeof(*got) / 4; i++) {
		if (g[i] != w[i])
			return (struct diff){ i * 4, g[i], w[i] };
	}
	return (struct diff){ sizeof(*got), 0, 0 };
}

/* A check whose result user code hands to the kernel to print. */
struct report {
	const char *what;
	struct diff d;
};

static void print_report(const struct report *r)
{
	const struct diff *d = &r->d;
	if (d->at == sizeof(struct vregs)) {
		check(r->what, 1);
		return;
	}
	if (d->at < 512) {
		const char *name = features & F_AVX512 ? "zmm" : features & F_AVX ? "ymm" : "xmm";
		kprintf("     first difference: %s%u bytes %u-%u\n", name, d->at / 64, d->at % 64,
			d->at % 64 + 3);
	} else if (d->at < 576) {
		kprintf("     first difference: k%u bytes %u-%u\n", (d->at - 512) / 8, d->at % 8,
			d->at % 8 + 3);
	} else {
		kprintf("     first difference: MXCSR\n");
	}
	check_eq(r->what, d->got, d->want);
}

/* ---- user side (ring 3, runs directly on the host CPU) -------------------- */

static volatile u32 ticks;
/* The pages the kernel maps on first touch (PDE 4). */
#define DEMAND_BASE 0x01000000u
#define USER_DEMAND (DEMAND_BASE + 0x1000)
#define KERNEL_DEMAND (DEMAND_BASE + 0x5000)

static u32 syscall1(u32 nr, u32 arg)
{
	u32 ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(arg) : "memory");
	return ret;
}

static void spin_ticks(u32 n)
{
	u32 start = ticks;
	while (ticks - start < n)
		;
}

static struct vregs user_seen;
static char user_what[8][112];

/* Reads the registers first, then compares with `want` and has the kernel
 * print "<regs> <what>". */
static void user_check(u32 i, const struct vregs *want, const char *what)
{
	read_regs(&user_seen);
	struct report r = { user_what[i], compare(&user_seen, want) };
	ksnprintf(user_what[i], sizeof(user_what[i]), "user: %s %s", regs_name, what);
	syscall1(SYS_REPORT, (u32)&r);
}

static void user_main(void)
{
	static const struct vregs init = { .mxcsr = MXCSR_INIT };
	static const char msg[] = "user: a line through the kernel's UART (port I/O)\n";

	user_check(0, &init, "read as zero before any write, MXCSR 0x1F80 (init state)");
	vec_load(&user_values, features);
	user_check(1, &user_values, "read back what user code wrote");
	syscall1(SYS_NOP, 0);
	user_check(2, &user_values, "kept across an int 0x80 system call");
	user_in();
	user_check(3, &user_values, "kept across a #GP the kernel handled (IN at CPL 3)");
	do_ud2();
	user_check(4, &user_values, "kept across a #UD the kernel handled (UD2 at CPL 3)");
	*(volatile u32 *)USER_DEMAND = 0x600D;
	user_check(5, &user_values, "kept across a #PF the kernel handled (a page mapped on demand)");
	syscall1(SYS_WRITE, (u32)msg);
	user_check(6, &user_values, "kept across a system call that wrote to the UART");
	spin_ticks(3);
	user_check(7, &user_values, "kept across 3 timer interrupts while spinning");
	syscall1(SYS_KERNEL, 0);
	user_check(0, &kernel_values, "hold what kernel code wrote");
	syscall1(SYS_EXIT, 0);
	for (;;)
		; /* not reached */
}

/* ---- kernel side (ring 0, runs translated) --------------------------------- */

static struct vregs kernel_seen;

static void kernel_check(const struct vregs *want, const char *what)
{
	read_regs(&kernel_seen);
	char name[112];
	ksnprintf(name, sizeof(name), "kernel: %s %s", regs_name, what);
	struct report r = { name, compare(&kernel_seen, want) };
	print_report(&r);
}

/* xmm0-7 and MXCSR as FXSAVE stores them (no upper halves, no k0-k7):
 * under BT the first vector instruction of a kernel run may be an FXSAVE,
 * which must see the guest's registers, not the monitor's. */
static void kernel_fx_check(const struct vregs *want, const char *what)
{
	static u8 area[512] __attribute__((aligned(16)));
	static struct vregs seen, want16;
	fx_store(area);
	memset(&seen, 0, sizeof(seen));
	memset(&want16, 0, sizeof(want16));
	for (u32 n = 0; n < 8; n++) {
		memcpy(seen.v[n], &area[160 + 16 * n], 16);
		memcpy(want16.v[n], want->v[n], 16);
	}
	memcpy(&seen.mxcsr, &area[24], 4);
	want16.mxcsr = want->mxcsr;
	char name[112];
	ksnprintf(name, sizeof(name), "kernel: xmm0-7 and MXCSR by FXSAVE %s", what);
	struct report r = { name, compare(&seen, &want16) };
	print_report(&r);
}

static void kernel_half(void)
{
	kernel_fx_check(&user_values, "hold what user code wrote");
	kernel_check(&user_values, "hold what user code wrote");
	vec_load(&kernel_values, features);
	kernel_check(&kernel_values, "read back what kernel code wrote");
	outb(UART_SCR, 0x5A);
	(void)inb(UART_SCR);
	kernel_check(&kernel_values, "kept across port I/O (the UART's scratch register)");
	do_ud2();
	kernel_check(&kernel_values, "kept across a #UD it handled (UD2 at CPL 0)");
	kernel_gp();
	kernel_check(&kernel_values, "kept across a #GP it handled (a read past FS's limit)");
	*(volatile u32 *)KERNEL_DEMAND = 0x600D;
	kernel_check(&kernel_values, "kept across a #PF it handled (a page mapped on demand)");
	sti();
	spin_ticks(3);
	cli();
	kernel_check(&kernel_values, "kept across 3 timer interrupts while spinning with IF set");
}

static void on_syscall(struct frame *f)
{
	switch (f->eax) {
	case SYS_NOP:
		break;
	case SYS_WRITE:
		puts((const char *)f->ebx);
		break;
	case SYS_REPORT:
		print_report((const struct report *)f->ebx);
		break;
	case SYS_KERNEL:
		kernel_half();
		break;
	case SYS_EXIT:
		finish();
	default:
		check_eq("a known system call", f->eax, SYS_NOP);
		finish();
	}
}

static const struct {
	const char *fault, *resume;
} sites[] = {
	{ user_in_fault, user_in_resume },
	{ ud2_fault, ud2_resume },
	{ kernel_gp_fault, kernel_gp_resume },
};

/* #GP and #UD: the fault sites above resume after the instruction. */
static void on_fault(struct frame *f)
{
	for (u32 i = 0; i < ARRAY_SIZE(sites); i++) {
		if (f->eip == (u32)sites[i].fault) {
			f->eip = (u32)sites[i].resume;
			return;
		}
	}
	char what[96];
	ksnprintf(what, sizeof(what), "exception %u at %04x:%08x (error code 0x%x) was expected",
		  f->vector, f->cs & 0xFFFF, f->eip, f->error);
	check(what, 0);
	finish();
}

#define PAGE_ALIGNED __attribute__((aligned(4096)))
static volatile u32 pd[1024] PAGE_ALIGNED;
static volatile u32 pt_demand[1024] PAGE_ALIGNED;
static u8 demand_frames[8][4096] PAGE_ALIGNED;

/* #PF: a page of the demand area gets its frame; anything else is a bug. */
static void on_page_fault(struct frame *f)
{
	u32 cr2 = read_cr2();
	if (cr2 - DEMAND_BASE < sizeof(demand_frames)) {
		u32 i = (cr2 - DEMAND_BASE) / PAGE_SIZE;
		pt_demand[i] = (u32)demand_frames[i] | PTE_P | PTE_W | PTE_U;
		invlpg(cr2);
		return;
	}
	char what[96];
	ksnprintf(what, sizeof(what), "#PF at %08x (CR2 %08x, error code 0x%x) was expected", f->eip,
		  cr2, f->error);
	check(what, 0);
	finish();
}

static void on_timer(struct frame *f)
{
	(void)f;
	ticks++;
	pic_eoi(0);
}

/* Identity-maps the first 16 MiB with 4 MiB user pages, except PDE 4: the
 * demand area's page table, empty. */
static void paging_init(void)
{
	for (u32 i = 0; i < 4; i++)
		pd[i] = (i << 22) | PTE_P | PTE_W | PTE_U | PTE_PS;
	pd[DEMAND_BASE >> 22] = (u32)pt_demand | PTE_P | PTE_W | PTE_U;
	write_cr4(read_cr4() | CR4_PSE);
	write_cr3((u32)pd);
	write_cr0(read_cr0() | CR0_PG);
}

static u8 kernel_stack[8192] __attribute__((aligned(16)));
static u8 user_stack[8192] __attribute__((aligned(16)));

#define CR4_OSFXSR (1u << 9)
#define CR4_OSXMMEXCPT (1u << 10)
#define PIT_COUNT_1KHZ 1193

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;

	if (cmdline_has_word(mbi, "avx512=1"))
		features = F_AVX | F_AVX512;
	else if (cmdline_has_word(mbi, "avx=1"))
		features = F_AVX;
	ksnprintf(regs_name, sizeof(regs_name), "%s and MXCSR",
		  features & F_AVX512 ? "zmm0-7, k0-k7" : features & F_AVX ? "ymm0-7" : "xmm0-7");
	kprintf("vector: %s across exits, in user and kernel code (avx=1, avx512=1 widen)\n",
		regs_name);

	/* SSE is architecturally off until the OS says it saves the state. */
	write_cr4(read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT);

	/* Before anything has touched them. */
	static const struct vregs init = { .mxcsr = MXCSR_INIT };
	kernel_check(&init, "read as zero before any write, MXCSR 0x1F80 (init state)");
	make_values(&user_values, 0x5EED0001u, MXCSR_USER);
	make_values(&kernel_values, 0x5EED0002u, MXCSR_KERNEL);

	gdt_set(SEL_SMALL >> 3, 0, 0xFFF, ACC_DATA_W, FLAGS_BYTE_32);
	tss_init((u32)kernel_stack + sizeof(kernel_stack));
	idt_set_attr(0x80, 0xEE); /* interrupt gate, DPL 3 */
	set_handler(0x80, on_syscall);
	set_handler(6, on_fault);
	set_handler(13, on_fault);
	set_handler(14, on_page_fault);
	set_handler(IRQ_BASE + 0, on_timer);
	paging_init();

	outb(PIT_CMD, 0x34); /* channel 0, lobyte/hibyte, mode 2 */
	outb(PIT_CH0, PIT_COUNT_1KHZ & 0xFF);
	outb(PIT_CH0, PIT_COUNT_1KHZ >> 8);
	pic_unmask(0);
	enter_user(user_main, (u32)user_stack + sizeof(user_stack));
}
