/*
 * sensitive: at CPL 0, every sensitive-unprivileged and privileged
 * instruction of design.md section 4 gives its architecturally defined
 * result. These are exactly the instructions a binary translator must
 * rewrite (and a hardware-assisted engine may have to emulate), so each
 * check compares against a value the architecture fixes, not against
 * whatever the engine happens to return.
 *
 * Not tested here: SYSENTER/SYSEXIT (the usermode guest checks them, from
 * ring 3 where they matter) and INVD (it throws away dirty cache lines,
 * which no well-behaved kernel does).
 */
#include "popek.h"

/* Extra GDT entries (the standard ones are in lib/popek.h). */
#define SEL_DATA2 0x30     /* second flat data segment */
#define SEL_BASED 0x38     /* data segment based at probe[], limit 0xFFF */
#define SEL_CODE2 0x40     /* second flat code segment */
#define SEL_LDT 0x48       /* an LDT descriptor */
#define SEL_XONLY 0x50     /* execute-only code */
#define SEL_RONLY 0x58     /* read-only data */
#define SEL_PAST_LIMIT 0x400

#define CR0_PE 0x00000001
#define CR0_MP 0x00000002
#define CR0_TS 0x00000008
#define CR0_PG 0x80000000
#define CR4_PSE 0x00000010
#define CR4_PGE 0x00000080

#define MSR_TSC 0x10
#define MSR_SYSENTER_CS 0x174

static u8 probe[0x1000] __attribute__((aligned(16)));
static u64 ldt_table[2];

#define READ_CR(n)                                               \
	({                                                       \
		u32 v_;                                          \
		__asm__ volatile("movl %%cr" #n ", %0" : "=r"(v_)); \
		v_;                                              \
	})
#define WRITE_CR(n, v) __asm__ volatile("movl %0, %%cr" #n : : "r"((u32)(v)) : "memory")
#define READ_SEG(s)                                               \
	({                                                        \
		u32 v_ = 0;                                       \
		__asm__ volatile("movw %%" #s ", %w0" : "+r"(v_)); \
		v_;                                               \
	})
#define WRITE_SEG(s, v) __asm__ volatile("movw %w0, %%" #s : : "r"((u32)(v)) : "memory")

/* ---- EFLAGS.IF: PUSHF/POPF/CLI/STI ------------------------------------- */
/* The PICs are fully masked, so STI lets no interrupt in. */

static void test_flags(void)
{
	u32 f;

	__asm__ volatile("sti; pushfl; cli; popfl; pushfl; popl %0; cli" : "=r"(f));
	check("PUSHF; CLI; POPF brings IF back", f & EFLAGS_IF);
	__asm__ volatile("sti; pushl $2; popfl; pushfl; popl %0" : "=r"(f));
	check_eq("POPF of 0x2 at CPL 0 clears IF (EFLAGS reads 0x2)", f, 0x2);
	__asm__ volatile("sti; pushfl; popl %0; cli" : "=r"(f));
	check("PUSHF after STI shows IF set", f & EFLAGS_IF);
	__asm__ volatile("cli; pushfl; popl %0" : "=r"(f));
	check("PUSHF after CLI shows IF clear", !(f & EFLAGS_IF));
}

/* ---- descriptor-table registers: SGDT/SIDT/SLDT/STR, LLDT/LTR ---------- */

static void test_tables(void)
{
	struct dtr d = { 0, 0 };

	__asm__ volatile("sgdt %0" : "=m"(d));
	check_eq("SGDT limit is what LGDT loaded", d.limit, sizeof(gdt) - 1);
	check_eq("SGDT base is what LGDT loaded", d.base, (u32)gdt);
	__asm__ volatile("sidt %0" : "=m"(d));
	check_eq("SIDT limit is what LIDT loaded", d.limit, sizeof(idt) - 1);
	check_eq("SIDT base is what LIDT loaded", d.base, (u32)idt);

	u32 sel = 0xFFFF;
	__asm__ volatile("lldt %w1; sldt %w0" : "+r"(sel) : "r"(SEL_LDT));
	check_eq("SLDT after LLDT 0x48 reads 0x48", sel & 0xFFFF, SEL_LDT);
	__asm__ volatile("lldt %w1; sldt %w0" : "+r"(sel) : "r"(0));
	check_eq("SLDT after LLDT 0 reads 0", sel & 0xFFFF, 0);

	tss_setup((u32)probe + sizeof(probe));
	check_eq("TSS descriptor type is 0x9 (available) before LTR", (u32)(gdt[SEL_TSS >> 3] >> 40) & 0xF, 0x9);
	__asm__ volatile("ltr %w0" : : "r"(SEL_TSS) : "memory");
	check_eq("LTR marks the TSS descriptor busy (type 0xB)", (u32)(gdt[SEL_TSS >> 3] >> 40) & 0xF, 0xB);
	sel = 0xFFFF;
	__asm__ volatile("str %w0" : "+r"(sel));
	check_eq("STR after LTR 0x28 reads 0x28", sel & 0xFFFF, SEL_TSS);
}

/* ---- LAR/LSL/VERR/VERW ------------------------------------------------- */

/* Each returns ZF: 1 if the descriptor passed the instruction's checks. */
static int lar(u32 sel, u32 *out)
{
	u8 ok;
	__asm__ volatile("larl %w2, %0; setz %1" : "+r"(*out), "=q"(ok) : "r"(sel) : "cc");
	return ok;
}
static int lsl(u32 sel, u32 *out)
{
	u8 ok;
	__asm__ volatile("lsll %w2, %0; setz %1" : "+r"(*out), "=q"(ok) : "r"(sel) : "cc");
	return ok;
}
static int verr(u32 sel)
{
	u8 ok;
	__asm__ volatile("verr %w1; setz %0" : "=q"(ok) : "r"(sel) : "cc");
	return ok;
}
static int verw(u32 sel)
{
	u8 ok;
	__asm__ volatile("verw %w1; setz %0" : "=q"(ok) : "r"(sel) : "cc");
	return ok;
}

/*
 * LAR with a 32-bit operand gives descriptor bytes 4-7 masked with
 * 0x00FxFF00: bits 19:16 (limit 19:16) are undefined, so we mask them off.
 */
#define LAR_MASK 0x00F0FF00

static void check_lar(const char *what, u32 sel, u32 want)
{
	u32 ar = 0xDEADBEEF;
	int ok = lar(sel, &ar);
	char line[96];
	ksnprintf(line, sizeof(line), "LAR %s: ZF set", what);
	check(line, ok);
	ksnprintf(line, sizeof(line), "LAR %s: access rights 0x%08x", what, want);
	check_eq(line, ar & LAR_MASK, want);
}

static void check_lsl(const char *what, u32 sel, u32 want)
{
	u32 limit = 0xDEADBEEF;
	int ok = lsl(sel, &limit);
	char line[96];
	ksnprintf(line, sizeof(line), "LSL %s: ZF set, limit 0x%x", what, want);
	check_eq(line, ok ? limit : 0xDEADBEEF, want);
}

static void test_lar_lsl_verr_verw(void)
{
	u32 v = 0x12345678;

	check_lar("kernel code 0x08", SEL_KCODE, 0x00C09B00);
	check_lar("kernel data 0x10", SEL_KDATA, 0x00C09300);
	check_lar("DPL-3 data 0x23", SEL_UDATA | 3, 0x00C0F300);
	check_lar("byte-granular data 0x38", SEL_BASED, 0x00409300);
	check_lar("busy TSS 0x28", SEL_TSS, 0x00008B00);
	check_lar("LDT descriptor 0x48", SEL_LDT, 0x00008200);
	check("LAR null selector: ZF clear, destination unchanged", !lar(0, &v) && v == 0x12345678);
	check("LAR selector past the GDT limit: ZF clear", !lar(SEL_PAST_LIMIT, &v) && v == 0x12345678);
	check("LAR DPL-0 data with RPL 3 (0x13): ZF clear", !lar(SEL_KDATA | 3, &v) && v == 0x12345678);

	check_lsl("flat code 0x08 (4 KiB granular)", SEL_KCODE, 0xFFFFFFFF);
	check_lsl("byte-granular data 0x38", SEL_BASED, 0xFFF);
	check_lsl("TSS 0x28", SEL_TSS, sizeof(struct tss) - 1);
	check("LSL null selector: ZF clear", !lsl(0, &v) && v == 0x12345678);

	check("VERR readable code 0x08: ZF set", verr(SEL_KCODE));
	check("VERW code 0x08: ZF clear", !verw(SEL_KCODE));
	check("VERR data 0x10: ZF set", verr(SEL_KDATA));
	check("VERW data 0x10: ZF set", verw(SEL_KDATA));
	check("VERR execute-only code 0x50: ZF clear", !verr(SEL_XONLY));
	check("VERW read-only data 0x58: ZF clear", !verw(SEL_RONLY));
	check("VERR read-only data 0x58: ZF set", verr(SEL_RONLY));
	check("VERR DPL-3 data 0x23: ZF set", verr(SEL_UDATA | 3));
	check("VERR null selector: ZF clear", !verr(0));
	check("VERR selector past the GDT limit: ZF clear", !verr(SEL_PAST_LIMIT));
}

/* ---- control and debug registers, SMSW/LMSW/CLTS ----------------------- */

static void test_control_registers(void)
{
	u32 cr0 = READ_CR(0);
	check("CR0: PE set, PG clear", (cr0 & CR0_PE) && !(cr0 & CR0_PG));

	u32 msw = 0xFFFF0000;
	__asm__ volatile("smsw %w0" : "+r"(msw));
	check_eq("SMSW equals the low 16 bits of CR0", msw & 0xFFFF, cr0 & 0xFFFF);

	/* Paging is off, so CR3 and CR2 are plain registers here. */
	u32 cr3 = READ_CR(3);
	WRITE_CR(3, 0x00123000);
	check_eq("MOV CR3 reads back what was written", READ_CR(3), 0x00123000);
	WRITE_CR(3, cr3);
	WRITE_CR(2, 0xDEADB000);
	check_eq("MOV CR2 reads back what was written", READ_CR(2), 0xDEADB000);

	u32 cr4 = READ_CR(4);
	WRITE_CR(4, cr4 | CR4_PSE | CR4_PGE);
	check_eq("CR4 PSE and PGE read back set", READ_CR(4) & (CR4_PSE | CR4_PGE), CR4_PSE | CR4_PGE);
	WRITE_CR(4, cr4);
	check_eq("CR4 restored", READ_CR(4), cr4);

	WRITE_CR(0, cr0 | CR0_TS);
	check("MOV CR0 sets TS", READ_CR(0) & CR0_TS);
	__asm__ volatile("clts");
	check("CLTS clears CR0.TS", !(READ_CR(0) & CR0_TS));

	u32 lmsw_value = (cr0 & 0xFFFF) | CR0_MP;
	__asm__ volatile("lmsw %w0" : : "r"(lmsw_value));
	check_eq("LMSW sets CR0.MP (and keeps PE)", READ_CR(0) & (CR0_MP | CR0_PE), CR0_MP | CR0_PE);
	WRITE_CR(0, cr0);
	check_eq("CR0 restored", READ_CR(0), cr0);

	__asm__ volatile("movl %0, %%dr0" : : "r"(0x00123456));
	u32 dr = 0;
	__asm__ volatile("movl %%dr0, %0" : "=r"(dr));
	check_eq("MOV DR0 reads back what was written", dr, 0x00123456);
	__asm__ volatile("movl %0, %%dr7" : : "r"(0));
	__asm__ volatile("movl %%dr7, %0" : "=r"(dr));
	check_eq("DR7 written with 0 reads 0x400 (bit 10 is fixed to 1)", dr, 0x400);
}

/* ---- segment registers ------------------------------------------------- */

static void test_segments(void)
{
	check_eq("MOV from CS reads 0x08", READ_SEG(cs), SEL_KCODE);
	check_eq("MOV from DS reads 0x10", READ_SEG(ds), SEL_KDATA);
	check_eq("MOV from SS reads 0x10", READ_SEG(ss), SEL_KDATA);

	WRITE_SEG(es, SEL_DATA2);
	check_eq("MOV ES <- 0x30 reads back 0x30", READ_SEG(es), SEL_DATA2);
	__asm__ volatile("pushl %%ds; popl %%es" : : : "memory");
	check_eq("PUSH DS; POP ES leaves ES = 0x10", READ_SEG(es), SEL_KDATA);

	static volatile u32 flat_word = 0xCAFEF00D;
	u32 got;
	WRITE_SEG(fs, SEL_DATA2);
	check_eq("MOV FS <- second data selector 0x30 reads back 0x30", READ_SEG(fs), SEL_DATA2);
	__asm__ volatile("movl %%fs:(%1), %0" : "=r"(got) : "r"(&flat_word));
	check_eq("a load through FS = 0x30 (flat) reads the word", got, 0xCAFEF00D);

	/* The segment base is honoured: GS:0x10 is probe[0x10]. */
	probe[0x10] = 0x5A;
	probe[0x11] = 0xA5;
	WRITE_SEG(gs, SEL_BASED);
	u32 b = 0;
	__asm__ volatile("movzwl %%gs:0x10, %0" : "=r"(b));
	check_eq("GS = 0x38 (base = probe[]): GS:0x10 reads probe[0x10..0x11]", b, 0xA55A);
	WRITE_SEG(gs, SEL_KDATA);
	WRITE_SEG(fs, SEL_KDATA);

	/* The operand-size forms: a 16-bit destination keeps its upper half, a
	 * 32-bit one gets the selector zero-extended, a 16-bit push moves ESP
	 * by 2, and a store to memory writes 16 bits only. */
	u32 r = 0xAAAA5555;
	__asm__ volatile("movw %%ss, %w0" : "+r"(r));
	check_eq("MOV AX, SS keeps EAX's upper half", r, 0xAAAA0010);
	r = 0xAAAA5555;
	__asm__ volatile("movl %%cs, %0" : "+r"(r));
	check_eq("MOV EAX, CS zero-extends", r, SEL_KCODE);
	u32 moved = 0;
	__asm__ volatile("movl %%esp, %0; pushw %%cs; subl %%esp, %0; popw %%ax"
			 : "+r"(moved) : : "eax", "memory");
	check_eq("PUSH CS with a 16-bit operand moves ESP by 2", moved, 2);
	static volatile u32 stored = 0xBBBBBBBB;
	__asm__ volatile("movw %%ds, %0" : "=m"(stored));
	check_eq("MOV [m16], DS writes 16 bits", stored, 0xBBBB0010);
}

/* ---- far CALL/JMP/RET --------------------------------------------------- */

void farcall_test(void);
void farjmp_test(void);
extern char farcall_return[];
extern u32 cs_after_call, cs_inside_call, pushed_eip, pushed_cs, cs_inside_jmp, cs_after_jmp;

static void test_far_transfers(void)
{
	farcall_test();
	check_eq("far CALL 0x40: CS inside is 0x40", cs_inside_call, SEL_CODE2);
	check_eq("far CALL pushed the return EIP", pushed_eip, (u32)farcall_return);
	check_eq("far CALL pushed CS 0x08", pushed_cs & 0xFFFF, SEL_KCODE);
	check_eq("far RET: CS after is 0x08", cs_after_call, SEL_KCODE);
	farjmp_test();
	check_eq("far JMP 0x40: CS is 0x40", cs_inside_jmp, SEL_CODE2);
	check_eq("far JMP back: CS is 0x08", cs_after_jmp, SEL_KCODE);
}

/* ---- software interrupts: INT n, INTO, INT3 (IRET to return) ----------- */

void do_int_n(void);
void do_into_overflow(void);
void do_into_no_overflow(void);
void do_int3(void);
extern char int_n_after[], into_after[], int3_after[];

static volatile u32 sw_vector, sw_eip, sw_cs, sw_count;

static void on_software_interrupt(struct frame *f)
{
	sw_vector = f->vector;
	sw_eip = f->eip;
	sw_cs = f->cs & 0xFFFF;
	sw_count++;
}

static void test_software_interrupts(void)
{
	set_handler(0x41, on_software_interrupt);
	set_handler(4, on_software_interrupt);
	set_handler(3, on_software_interrupt);

	sw_count = 0;
	do_int_n();
	check_eq("INT 0x41 arrives on vector 0x41", sw_vector, 0x41);
	check_eq("INT 0x41 saved EIP is the next instruction", sw_eip, (u32)int_n_after);
	check_eq("INT 0x41 saved CS is 0x08", sw_cs, SEL_KCODE);
	do_into_overflow();
	check_eq("INTO with OF set raises vector 4", sw_vector, 4);
	check_eq("INTO saved EIP is the next instruction", sw_eip, (u32)into_after);
	do_into_no_overflow();
	check_eq("INTO with OF clear does nothing", sw_count, 2);
	do_int3();
	check_eq("INT3 raises vector 3", sw_vector, 3);
	check_eq("INT3 saved EIP is the next instruction", sw_eip, (u32)int3_after);
	check_eq("IRET returned from all three", sw_count, 3);
}

/* ---- port I/O: IN/OUT/INS/OUTS ----------------------------------------- */

static void test_io(void)
{
	outb(CMOS_INDEX, 0x0D);
	check("IN: CMOS register 0x0D has bit 7 (valid RAM and time) set", inb(CMOS_DATA) & 0x80);

	outb(UART_SCR, 0x5A);
	check_eq("OUT/IN: UART scratch register keeps 0x5A", inb(UART_SCR), 0x5A);

	static u8 src = 0xA5, dst;
	const u8 *s = &src;
	u8 *d = &dst;
	__asm__ volatile("outsb" : "+S"(s) : "d"(UART_SCR) : "memory");
	__asm__ volatile("insb" : "+D"(d) : "d"(UART_SCR) : "memory");
	check_eq("OUTSB/INSB: UART scratch register round trip", dst, 0xA5);
	check("OUTSB/INSB advance ESI/EDI by 1", s == &src + 1 && d == &dst + 1);
}

/* ---- MSRs, TSC, CPUID -------------------------------------------------- */

static u64 rdmsr(u32 msr)
{
	u32 lo, hi;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
	return ((u64)hi << 32) | lo;
}
static void wrmsr(u32 msr, u64 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"((u32)v), "d"((u32)(v >> 32)));
}
static u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}
static void cpuid(u32 leaf, u32 r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}

static void test_msr_tsc_cpuid(void)
{
	u64 old = rdmsr(MSR_SYSENTER_CS);
	wrmsr(MSR_SYSENTER_CS, SEL_KCODE);
	check_eq("WRMSR/RDMSR IA32_SYSENTER_CS round trip", (u32)rdmsr(MSR_SYSENTER_CS), SEL_KCODE);
	wrmsr(MSR_SYSENTER_CS, old);

	u64 t0 = rdmsr(MSR_TSC);
	u64 t1 = rdtsc();
	u64 t2 = rdtsc();
	check("RDMSR IA32_TIME_STAMP_COUNTER is nonzero and RDTSC after it is larger", t0 && t1 > t0);
	check("RDTSC is monotonic (second read larger)", t2 > t1);

	u32 r[4];
	char vendor[13];
	cpuid(0, r);
	memcpy(vendor, &r[1], 4);
	memcpy(vendor + 4, &r[3], 4);
	memcpy(vendor + 8, &r[2], 4);
	vendor[12] = 0;
	check_str("CPUID leaf 0 vendor", vendor, "GenuineIntel");

	cpuid(0x80000000, r);
	check("CPUID 0x80000000: brand string leaves present", r[0] >= 0x80000004);
	char brand[49];
	for (u32 i = 0; i < 3; i++) {
		cpuid(0x80000002 + i, r);
		memcpy(brand + 16 * i, r, 16);
	}
	brand[48] = 0;
	check_str("CPUID brand string mentions popek", strstr(brand, "popek") ? "popek" : brand, "popek");
}

/* ---- cache/TLB maintenance and HLT ------------------------------------- */

void wait_for_irq(void);
extern char hlt_resume[];
static volatile u32 irq0_count, irq0_eip;

static void on_irq0(struct frame *f)
{
	irq0_count++;
	irq0_eip = f->eip;
	pic_eoi(0);
}

static void test_misc(void)
{
	/* With paging off these do nothing visible; they must not fault. */
	__asm__ volatile("invlpg (%0)" : : "r"(probe) : "memory");
	__asm__ volatile("wbinvd" : : : "memory");
	check("INVLPG and WBINVD execute without an exception", 1);

	/* PIT channel 0, mode 0 (interrupt on terminal count, one shot),
	 * 1193 ticks = 1 ms; then sleep in HLT with only IRQ 0 unmasked. */
	set_handler(IRQ_BASE + 0, on_irq0);
	outb(PIT_CMD, 0x30);
	outb(PIT_CH0, 1193 & 0xFF);
	outb(PIT_CH0, 1193 >> 8);
	pic_unmask(0);
	while (!irq0_count)
		wait_for_irq();
	pic_mask(0);
	check_eq("HLT with IF=1 wakes on one PIT interrupt (mode 0)", irq0_count, 1);
	check_eq("the PIT interrupt's saved EIP is after the HLT", irq0_eip, (u32)hlt_resume);
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;

	kprintf("sensitive: privileged and sensitive instructions at CPL 0\n");

	gdt_set(SEL_DATA2 >> 3, 0, 0xFFFFF, ACC_DATA_W, FLAGS_4K_32);
	gdt_set(SEL_BASED >> 3, (u32)probe, sizeof(probe) - 1, ACC_DATA_W, FLAGS_BYTE_32);
	gdt_set(SEL_CODE2 >> 3, 0, 0xFFFFF, ACC_CODE_R, FLAGS_4K_32);
	gdt_set(SEL_LDT >> 3, (u32)ldt_table, sizeof(ldt_table) - 1, ACC_LDT, FLAGS_SYS);
	gdt_set(SEL_XONLY >> 3, 0, 0xFFFFF, 0x99, FLAGS_4K_32); /* execute-only, accessed */
	gdt_set(SEL_RONLY >> 3, 0, 0xFFFFF, 0x91, FLAGS_4K_32); /* read-only, accessed */

	test_flags();
	test_tables();
	test_lar_lsl_verr_verw();
	test_control_registers();
	test_segments();
	test_far_transfers();
	test_software_interrupts();
	test_io();
	test_msr_tsc_cpuid();
	test_misc();
}
