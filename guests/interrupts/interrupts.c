/*
 * interrupts: the PIC and PIT deliver timer interrupts to an IDT we built,
 * and each exception arrives at its vector with the right error code and
 * the frame the architecture defines.
 *
 * The runtime has already remapped the PICs (IRQ 0-15 -> vectors
 * 0x20-0x2F, all masked) and pointed all 256 vectors at stubs that know
 * which exceptions push an error code.
 */
#include "popek.h"

/* ---- timer interrupts --------------------------------------------------- */

#define TICKS_WANTED 5
/* 1193182 Hz / 1193 = 1000 Hz. */
#define PIT_COUNT_1KHZ 1193

extern char hlt_resume[];
void wait_for_irq(void);

static volatile u32 ticks, ticks_after_hlt, ticks_bad_cs, ticks_if_clear, handler_saw_if;

static void on_timer(struct frame *f)
{
	ticks++;
	if (f->eip == (u32)hlt_resume)
		ticks_after_hlt++;
	if ((f->cs & 0xFFFF) != SEL_KCODE)
		ticks_bad_cs++;
	if (!(f->eflags & EFLAGS_IF))
		ticks_if_clear++;
	/* An interrupt gate clears IF before the handler runs. */
	if (read_eflags() & EFLAGS_IF)
		handler_saw_if++;
	/* Stop after the last wanted tick so the count is exact however late
	 * the loop below notices. */
	if (ticks == TICKS_WANTED)
		pic_mask(0);
	pic_eoi(0);
}

/* The PIC's in-service register (OCW3 "read ISR"). */
static u8 pic_isr(void)
{
	outb(PIC1_CMD, 0x0B);
	u8 isr = inb(PIC1_CMD);
	outb(PIC1_CMD, 0x0A); /* back to reading IRR */
	return isr;
}

static void test_timer(void)
{
	set_handler(IRQ_BASE + 0, on_timer);
	/* Channel 0, lobyte/hibyte, mode 2 (rate generator), binary. */
	outb(PIT_CMD, 0x34);
	outb(PIT_CH0, PIT_COUNT_1KHZ & 0xFF);
	outb(PIT_CH0, PIT_COUNT_1KHZ >> 8);
	pic_unmask(0);

	/* Sleep until the ticks arrive (no busy waiting: it costs too much
	 * under instruction emulation). A machine whose timer never fires
	 * hangs here; the test harness's timeout reports it. */
	while (ticks < TICKS_WANTED)
		wait_for_irq();

	check_eq("5 timer interrupts (PIT mode 2, 1000 Hz) arrived on vector 0x20", ticks, TICKS_WANTED);
	check_eq("each timer interrupt was taken at HLT: saved EIP is the next instruction",
		 ticks_after_hlt, TICKS_WANTED);
	check_eq("each timer interrupt frame has saved CS 0x08", ticks_bad_cs, 0);
	check_eq("each timer interrupt frame has IF set in saved EFLAGS", ticks_if_clear, 0);
	check_eq("the handler ran with IF clear (interrupt gate)", handler_saw_if, 0);
	check_eq("no IRQ in service after EOI", pic_isr(), 0);
	check("EFLAGS.IF is clear again after the wait", !(read_eflags() & EFLAGS_IF));
}

/* ---- exceptions --------------------------------------------------------- */

struct exception_test {
	const char *name;       /* e.g. "#DE (DIV by zero)" */
	u32 vector;
	u32 error;              /* NO_ERROR_CODE if the CPU pushes none */
	void (*trigger)(void);
	const char *fault;      /* the instruction that raises it */
	const char *resume;     /* the instruction after it */
	int trap;               /* saved EIP is `resume` (trap) or `fault` */
};

#define DECLARE(x) \
	void trigger_##x(void); \
	extern char x##_fault[], x##_resume[]
DECLARE(de);
DECLARE(db);
DECLARE(bp);
DECLARE(ud);
DECLARE(np);
DECLARE(gp_limit);
DECLARE(gp_write);
DECLARE(gp_jmp);
#define TEST(x) .trigger = trigger_##x, .fault = x##_fault, .resume = x##_resume

static const struct exception_test tests[] = {
	{ "#DE (DIV by zero)", 0, NO_ERROR_CODE, TEST(de), 0 },
	{ "#DB (single step after POPF set TF)", 1, NO_ERROR_CODE, TEST(db), 1 },
	{ "#BP (INT3)", 3, NO_ERROR_CODE, TEST(bp), 1 },
	{ "#UD (UD2)", 6, NO_ERROR_CODE, TEST(ud), 0 },
	{ "#NP (DS <- not-present segment 0x30)", 11, 0x30, TEST(np), 0 },
	{ "#GP (DS <- selector 0x103 past the GDT limit)", 13, 0x100, TEST(gp_limit), 0 },
	{ "#GP (write through read-only segment)", 13, 0, TEST(gp_write), 0 },
	{ "#GP (far JMP to data segment 0x10)", 13, SEL_KDATA, TEST(gp_jmp), 0 },
};

static const struct exception_test *current;
static struct frame seen;
static u32 seen_count;

static void on_exception(struct frame *f)
{
	seen = *f;
	seen_count++;
	/* Resume after the faulting instruction, and stop single-stepping. */
	f->eip = (u32)current->resume;
	f->eflags &= ~EFLAGS_TF;
}

static void run_exception_test(const struct exception_test *t)
{
	char what[128];

	current = t;
	seen_count = 0;
	memset(&seen, 0xFF, sizeof(seen));
	t->trigger();

	ksnprintf(what, sizeof(what), "%s: delivered once", t->name);
	check_eq(what, seen_count, 1);
	ksnprintf(what, sizeof(what), "%s: vector %u", t->name, t->vector);
	check_eq(what, seen.vector, t->vector);
	if (t->error == NO_ERROR_CODE)
		ksnprintf(what, sizeof(what), "%s: no error code", t->name);
	else
		ksnprintf(what, sizeof(what), "%s: error code 0x%x", t->name, t->error);
	check_eq(what, seen.error, t->error);
	ksnprintf(what, sizeof(what), "%s: saved EIP is %s", t->name,
		  t->trap ? "the next instruction (trap)" : "the faulting instruction");
	check_eq(what, seen.eip, (u32)(t->trap ? t->resume : t->fault));
	ksnprintf(what, sizeof(what), "%s: saved CS is 0x08", t->name);
	check_eq(what, seen.cs & 0xFFFF, SEL_KCODE);
	ksnprintf(what, sizeof(what), "%s: saved EFLAGS has bit 1 set", t->name);
	check(what, seen.eflags != 0xFFFFFFFF && (seen.eflags & EFLAGS_FIXED));
	if (t->vector == 1) {
		ksnprintf(what, sizeof(what), "%s: saved EFLAGS has TF set", t->name);
		check(what, seen.eflags != 0xFFFFFFFF && (seen.eflags & EFLAGS_TF));
	}
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;

	kprintf("interrupts: PIC, PIT and exception delivery\n");
	test_timer();

	/* Descriptors the exception tests need. */
	gdt_set(6, 0, 0xFFFFF, ACC_DATA_W & ~0x80, FLAGS_4K_32); /* P = 0 */
	gdt_set(7, 0, 0xFFFFF, 0x91, FLAGS_4K_32);               /* read-only data */
	for (u32 v = 0; v < 32; v++)
		set_handler(v, on_exception);
	for (u32 i = 0; i < ARRAY_SIZE(tests); i++)
		run_exception_test(&tests[i]);

	check_eq("DS is still 0x10 after the failed loads", ({
			 u32 ds = 0;
			 __asm__ volatile("movw %%ds, %w0" : "+r"(ds));
			 ds;
		 }),
		 SEL_KDATA);
}
