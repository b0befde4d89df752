/*
 * The demo kernel: boot, traps and shutdown.
 *
 * kmain runs on the boot stack with paging on (boot.S): it reads what the
 * multiboot loader passed (memory map, command line) while the boot
 * mapping still covers it, maps all RAM at KERNEL_BASE, starts the page
 * allocator, sets up the GDT, IDT, TSS, PICs and the PIT, and starts init
 * (proc.c). From then on the kernel only runs on behalf of processes:
 * system calls (INT 0x80), exceptions and the timer interrupt.
 */
#include "kernel.h"

#define TIMER_HZ 100
#define MAX_INIT_ARGS 12

volatile u32 ticks;
struct kstats kstats;

static char cmdline[256];
static const char *init_argv[MAX_INIT_ARGS + 1];

void panic_stop(void)
{
	kprintf("\n");
	outb(0x80, MARK_HALT);
	outb(DEBUG_EXIT, 2);
	halt_forever();
}

void shutdown(int status)
{
	kprintf("demo: init exited with status %d\n", status);
	kprintf("demo: kernel counted %u system calls, %u forks, %u execs, %u context switches "
		"(%u by the timer), %u timer ticks\n",
		kstats.syscalls, kstats.forks, kstats.execs, kstats.switches, kstats.preemptions, ticks);
	kprintf("demo: kernel counted %u page faults: %u copy-on-write copies, %u copy-on-write "
		"reuses, %u demand-zero pages\n",
		kstats.page_faults, kstats.cow_copies, kstats.cow_reuses, kstats.demand_pages);
	kprintf(status == 0 ? "demo: all steps passed\n" : "demo: FAILED\n");
	outb(0x80, MARK_HALT);
	if (status == 0) {
		/*
		 * Success ends as a PC's power-off would for a user: popek (and
		 * QEMU with -no-reboot) stop at a reset and exit 0. The debug
		 * port is kept for failures, whose status must be nonzero.
		 */
		outb(0x64, 0xFE);
		/* QEMU resets a moment later; popek stops at the OUT. */
		halt_forever();
	}
	outb(DEBUG_EXIT, 1);
	halt_forever();
}

/* ---- traps -------------------------------------------------------------- */

static const char *const exception_names[32] = {
	"divide error", "debug", "NMI", "breakpoint", "overflow", "bound range",
	"invalid opcode", "device not available", "double fault", "coprocessor overrun",
	"invalid TSS", "segment not present", "stack fault", "general protection fault",
	"page fault", "reserved", "x87 error", "alignment check", "machine check", "SIMD error",
};

static void on_exception(struct frame *f)
{
	const char *name = exception_names[f->vector] ? exception_names[f->vector] : "exception";
	u32 addr = f->vector == 14 ? read_cr2() : 0;
	if ((f->cs & 3) != 3)
		panic("%s (vector %u) in the kernel at eip %x, error code %x, cr2 %x", name, f->vector,
		      f->eip, f->error, addr);
	if (f->vector == 14) {
		kstats.page_faults++;
		/* Error code: bit 0 present (a protection fault), bit 1 write.
		 * The only protection fault we resolve is a write to a COW page. */
		int write = (f->error & 2) != 0;
		if ((!(f->error & 1) || write) && user_page(current, addr, write))
			return;
		kprintf("demo: pid %d (%s) killed: page fault at eip %x, address %x, error code %x\n",
			current->pid, current->name, f->eip, addr, f->error);
	} else {
		kprintf("demo: pid %d (%s) killed: %s at eip %x, error code %x\n", current->pid,
			current->name, name, f->eip, f->error);
	}
	proc_exit(EXIT_KILLED + (int)f->vector);
}

static void on_timer(struct frame *f)
{
	ticks++;
	outb(PIC1_CMD, PIC_EOI);
	/* The kernel runs with IF=0, so this interrupted user mode: its
	 * time slice (one tick) is over. */
	if ((f->cs & 3) == 3)
		preempt();
}

static void on_syscall(struct frame *f)
{
	kstats.syscalls++;
	syscall(f);
}

u32 sysenter_ready;

static void wrmsr(u32 msr, u32 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"(v), "d"(0));
}

/* SYSENTER where the CPU has it: user code asks (SYS_FASTCALL) before it
 * uses it instead of INT 0x80, as Linux's vDSO picks its entry. */
static void sysenter_init(void)
{
	void sysenter_entry(void);
	u32 a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	if (!(d & (1u << 11)))
		return;
	wrmsr(0x174, SEL_KCODE);         /* IA32_SYSENTER_CS */
	wrmsr(0x175, (u32)&tss.esp0);    /* IA32_SYSENTER_ESP: see sysenter_entry */
	wrmsr(0x176, (u32)sysenter_entry); /* IA32_SYSENTER_EIP */
	sysenter_ready = 1;
}

static void timer_init(void)
{
	u32 divisor = (PIT_HZ + TIMER_HZ / 2) / TIMER_HZ;
	outb(PIT_CMD, 0x34); /* channel 0, lobyte/hibyte, mode 2 (rate generator) */
	outb(PIT_CH0, divisor & 0xFF);
	outb(PIT_CH0, divisor >> 8);
	set_handler(IRQ_BASE + 0, on_timer);
	pic_unmask(0);
}

/* ---- boot --------------------------------------------------------------- */

/* A multiboot structure: physical, and still covered by the boot mapping. */
static const void *boot_ptr(u32 pa, u32 size)
{
	if (pa + size < pa || pa + size > (BOOT_MAP_MB << 20))
		panic("multiboot data at %x is beyond the boot mapping", pa);
	return P2V(pa);
}

struct mmap_entry {
	u32 size;
	u32 base_lo, base_hi, len_lo, len_hi;
	u32 type;
} __attribute__((packed));

/* Usable RAM above the kernel image (and modules), from the multiboot
 * memory map or else mem_upper. Returns how many ranges. */
static int read_memory(const struct multiboot_info *mbi, struct mem_range *out, int max)
{
	u32 reserved = PAGE_UP(V2P(__end));
	if (mbi->flags & MBI_FLAG_MODS) {
		const u32 *mods = boot_ptr(mbi->mods_addr, mbi->mods_count * 16);
		for (u32 i = 0; i < mbi->mods_count; i++) {
			if (mods[4 * i + 1] > reserved)
				reserved = PAGE_UP(mods[4 * i + 1]);
		}
	}
	int n = 0;
	if (mbi->flags & MBI_FLAG_MMAP) {
		const u8 *at = boot_ptr(mbi->mmap_addr, mbi->mmap_length);
		const u8 *end = at + mbi->mmap_length;
		while (at < end && n < max) {
			const struct mmap_entry *e = (const void *)at;
			at += e->size + 4;
			if (e->type != 1 || e->base_hi)
				continue;
			u64 top = (u64)e->base_lo + (((u64)e->len_hi << 32) | e->len_lo);
			u32 start = PAGE_UP(e->base_lo > reserved ? e->base_lo : reserved);
			u32 stop = PAGE_DOWN(top > DIRECT_MAP_MAX ? DIRECT_MAP_MAX : (u32)top);
			if (start < stop)
				out[n++] = (struct mem_range){ start, stop };
		}
	} else if (mbi->flags & MBI_FLAG_MEM) {
		u32 top = 0x100000 + MIN(mbi->mem_upper, DIRECT_MAP_MAX / 1024) * 1024;
		top = PAGE_DOWN(MIN(top, DIRECT_MAP_MAX));
		if (reserved < top)
			out[n++] = (struct mem_range){ reserved, top };
	}
	return n;
}

/* The command line's key=value words become init's arguments. */
static int init_arguments(void)
{
	int argc = 0;
	init_argv[argc++] = "init";
	char *s = cmdline;
	while (*s) {
		while (*s == ' ')
			*s++ = 0;
		if (!*s)
			break;
		char *word = s;
		while (*s && *s != ' ')
			s++;
		int has_equals = 0;
		for (char *c = word; c < s; c++)
			has_equals |= *c == '=';
		if (has_equals && argc < MAX_INIT_ARGS)
			init_argv[argc++] = word;
	}
	init_argv[argc] = NULL;
	return argc;
}

void kmain(u32 magic, struct multiboot_info *mbi_pa)
{
	uart_init();
	gdt_init();
	idt_init();
	pic_init();

	if (magic != MULTIBOOT_BOOTLOADER_MAGIC)
		panic("not started by a multiboot loader (EAX %x)", magic);
	const struct multiboot_info *mbi = boot_ptr((u32)mbi_pa, sizeof(*mbi));
	if (mbi->flags & MBI_FLAG_CMDLINE) {
		const char *c = boot_ptr(mbi->cmdline, 1);
		u32 i = 0;
		for (; c[i] && i < sizeof(cmdline) - 1; i++)
			cmdline[i] = c[i];
		cmdline[i] = 0;
	}
	struct mem_range ranges[16];
	int nranges = read_memory(mbi, ranges, ARRAY_SIZE(ranges));
	u32 ram_end = 0;
	for (int i = 0; i < nranges; i++)
		ram_end = ranges[i].end > ram_end ? ranges[i].end : ram_end;

	/* From here on the multiboot data is out of reach. */
	paging_init(ram_end);
	pages_init(ranges, nranges);

	tss_init((u32)boot_stack_top);
	for (int v = 0; v < 32; v++)
		set_handler(v, on_exception);
	set_handler(0x80, on_syscall);
	idt_set_attr(0x80, 0xEE); /* interrupt gate, DPL 3: INT 0x80 from user mode */
	sysenter_init();
	timer_init();

	kprintf("demo: kernel at %x-%x, %u MiB of RAM mapped at %x, %u pages free, timer at %u Hz\n",
		(u32)__image_start, (u32)__end, ram_end >> 20, KERNEL_BASE, pages_free(), TIMER_HZ);
	kprintf("demo: command line \"%s\"\n", cmdline);
	int argc = init_arguments();
	kprintf("demo: %u embedded programs:", program_count);
	for (u32 i = 0; i < program_count; i++)
		kprintf(" %s", programs[i].name);
	kprintf("; starting init\n");
	proc_start_init(init_argv, argc);
}
