/*
 * apic: the local APIC, the I/O APIC and the MSRs a PC guest touches,
 * paging off.
 *
 * The local APIC's base MSR, the CPUID bit, its registers as firmware
 * leaves them (SeaBIOS under QEMU: software-enabled, LINT0 ExtINT, LINT1
 * NMI), TPR/PPR, self-IPIs with their EOI, priority order and masking by
 * TPR, the timer in one-shot and periodic mode waking HLT, the PIT routed
 * through the I/O APIC (ISA IRQ 0 on pin 2) edge- and level-triggered, the
 * 8259A reaching the CPU through LINT0 (virtual wire) and straight while
 * the APIC is off, then MISC_ENABLE, the MTRRs and the PAT. The global
 * disable comes last: QEMU cannot turn the APIC back on.
 *
 * QEMU 7.2 TCG is the reference: every check passes there too, except the
 * ones that need popek's CPU (checks of architectural #GPs QEMU does not
 * raise, and of the registers following a relocated base, which QEMU does
 * not move); the guest runs those only where the hypervisor leaf says
 * popek, and says so.
 */
#include "popek.h"

/* ---- the local APIC (Intel SDM vol. 3 table 10-1) ----------------------- */

#define LAPIC 0xFEE00000u
#define LAPIC_MOVED 0xFEF00000u
#define APIC_ID 0x020
#define APIC_VERSION 0x030
#define APIC_TPR 0x080
#define APIC_APR 0x090
#define APIC_PPR 0x0A0
#define APIC_EOI 0x0B0
#define APIC_LDR 0x0D0
#define APIC_DFR 0x0E0
#define APIC_SVR 0x0F0
#define APIC_ISR 0x100
#define APIC_TMR 0x180
#define APIC_IRR 0x200
#define APIC_ESR 0x280
#define APIC_ICR_LOW 0x300
#define APIC_ICR_HIGH 0x310
#define APIC_LVT_TIMER 0x320
#define APIC_LVT_THERMAL 0x330
#define APIC_LVT_PERF 0x340
#define APIC_LVT_LINT0 0x350
#define APIC_LVT_LINT1 0x360
#define APIC_LVT_ERROR 0x370
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_CURRENT 0x390
#define APIC_TIMER_DIVIDE 0x3E0

#define SVR_ENABLE 0x100
#define LVT_MASKED 0x10000
#define LVT_PERIODIC 0x20000
#define ICR_SELF (1u << 18)
#define ICR_LOGICAL (1u << 11)
#define DIVIDE_BY_1 0xB
#define DIVIDE_BY_16 0x3

/* ---- the I/O APIC --------------------------------------------------------- */

#define IOAPIC 0xFEC00000u
#define IOREGSEL 0x00
#define IOWIN 0x10
#define IOAPIC_VERSION 0x01
#define IOAPIC_REDIRECTION 0x10
#define RTE_REMOTE_IRR (1u << 14)
#define RTE_LEVEL (1u << 15)
#define RTE_MASKED (1u << 16)
#define PIT_PIN 2 /* ISA IRQ 0 */

/* ---- MSRs ----------------------------------------------------------------- */

#define MSR_APIC_BASE 0x1B
#define MSR_TSC_ADJUST 0x3B
#define MSR_PLATFORM_INFO 0xCE
#define MSR_MTRRCAP 0xFE
#define MSR_MISC_ENABLE 0x1A0
#define MSR_MTRR_PHYSBASE0 0x200
#define MSR_MTRR_PHYSMASK0 0x201
#define MSR_MTRR_FIX64K_00000 0x250
#define MSR_PAT 0x277
#define MSR_MTRR_DEF_TYPE 0x2FF
#define MSR_TSC_DEADLINE 0x6E0
#define APIC_BASE_BSP 0x100
#define APIC_BASE_EN 0x800
#define CPUID1_EDX_APIC (1u << 9)

/* ---- vectors this guest uses ---------------------------------------------- */

#define V_SPURIOUS 0xFF
#define V_ONESHOT 0x50
#define V_PERIODIC 0x51
#define V_IOAPIC_EDGE 0x40
#define V_IOAPIC_LEVEL 0x41

/* ---- accessors ------------------------------------------------------------ */

static u32 apic_base_addr = LAPIC;

static u32 mmio_rd(u32 a) { return *(volatile u32 *)a; }
static void mmio_wr(u32 a, u32 v) { *(volatile u32 *)a = v; }
static u32 lapic_rd(u32 reg) { return mmio_rd(apic_base_addr + reg); }
static void lapic_wr(u32 reg, u32 v) { mmio_wr(apic_base_addr + reg, v); }

static u32 ioapic_rd(u32 reg)
{
	mmio_wr(IOAPIC + IOREGSEL, reg);
	return mmio_rd(IOAPIC + IOWIN);
}

static void ioapic_wr(u32 reg, u32 v)
{
	mmio_wr(IOAPIC + IOREGSEL, reg);
	mmio_wr(IOAPIC + IOWIN, v);
}

/* Bit `v` of a 256-bit register (ISR, TMR, IRR). */
static int vec_bit(u32 reg, u32 v) { return (lapic_rd(reg + 0x10 * (v / 32)) >> (v % 32)) & 1; }

static void cpuid(u32 leaf, u32 r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}

/* RDMSR and WRMSR that report a #GP instead of dying of it. */
static volatile u32 gp_count;

static void on_gp(struct frame *f)
{
	gp_count++;
	f->eip += 2; /* both are 0F xx */
}

static int rdmsr_safe(u32 index, u64 *value)
{
	u32 lo = 0, hi = 0, before = gp_count;
	__asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(index) : "memory");
	*value = ((u64)hi << 32) | lo;
	return gp_count == before;
}

static int wrmsr_safe(u32 index, u64 value)
{
	u32 before = gp_count;
	__asm__ volatile("wrmsr" : : "a"((u32)value), "d"((u32)(value >> 32)), "c"(index) : "memory");
	return gp_count == before;
}

/* RDMSR of an MSR that must exist: a #GP is a failed check of its own. */
static u64 rdmsr(u32 index)
{
	u64 v = 0;
	if (!rdmsr_safe(index, &v)) {
		char what[48];
		ksnprintf(what, sizeof(what), "RDMSR 0x%x without #GP", index);
		check(what, 0);
	}
	return v;
}

/* ---- waiting: HLT until an interrupt, as in the interrupts guest ------ */

void wait_for_irq(void);
extern char hlt_resume[];
__asm__(".text\n"
	".globl wait_for_irq, hlt_resume\n"
	"wait_for_irq:\n"
	"\tsti\n"
	"\thlt\n"
	"hlt_resume:\n"
	"\tcli\n"
	"\tret\n");

/*
 * Interrupts this guest expects are taken in HLT (sti; hlt; cli): an
 * interrupt already pending wakes it at once, the one expected next
 * wakes it when it comes, and whatever else is deliverable then arrives
 * right after (at hlt_resume, before the CLI). A window of NOPs after STI
 * would do on a CPU, but an engine only delivers between exits, and
 * kvm-pvm's instruction emulator takes none for NOPs.
 */

static void pit_start_1khz(void)
{
	outb(PIT_CMD, 0x34); /* channel 0, lobyte/hibyte, mode 2 */
	outb(PIT_CH0, 1193 & 0xFF);
	outb(PIT_CH0, 1193 >> 8);
}

static void pit_stop(void)
{
	outb(PIT_CMD, 0x30); /* mode 0 with no count written: OUT stays low */
}

/* ---- interrupt bookkeeping ------------------------------------------------ */

/* What each handled interrupt saw: its vector, whether it interrupted
 * HLT, whether its ISR bit was set and the PPR inside the handler. */
struct seen {
	u32 vector, at_hlt, in_isr, ppr;
};
static struct seen log[64];
static volatile u32 logged;
static volatile u32 count[256];
static volatile u32 stop_after; /* for the timer tests: mask once reached */

static void record(struct frame *f)
{
	u32 v = f->vector;
	count[v]++;
	if (logged < ARRAY_SIZE(log)) {
		struct seen *s = &log[logged++];
		s->vector = v;
		s->at_hlt = f->eip == (u32)hlt_resume;
		s->in_isr = vec_bit(APIC_ISR, v);
		s->ppr = lapic_rd(APIC_PPR);
	}
}

static void reset_log(void)
{
	logged = 0;
	for (int i = 0; i < 256; i++)
		count[i] = 0;
}

/* A local APIC interrupt: record, end it. */
static void on_lapic_irq(struct frame *f)
{
	record(f);
	lapic_wr(APIC_EOI, 0);
}

static void on_spurious(struct frame *f)
{
	/* No EOI: a spurious interrupt is not in service. */
	count[f->vector]++;
}

static void on_periodic(struct frame *f)
{
	record(f);
	if (count[V_PERIODIC] == stop_after)
		lapic_wr(APIC_LVT_TIMER, LVT_MASKED | LVT_PERIODIC | V_PERIODIC);
	lapic_wr(APIC_EOI, 0);
}

static void on_pit_ioapic(struct frame *f)
{
	record(f);
	if (count[V_IOAPIC_EDGE] == stop_after)
		ioapic_wr(IOAPIC_REDIRECTION + 2 * PIT_PIN, RTE_MASKED | V_IOAPIC_EDGE);
	lapic_wr(APIC_EOI, 0);
}

/* The level-triggered pass: what the entry and TMR say around the EOI. */
static volatile u32 level_remote_before, level_tmr, level_remote_after;

static void on_pit_level(struct frame *f)
{
	record(f);
	u32 rte = IOAPIC_REDIRECTION + 2 * PIT_PIN;
	level_remote_before = ioapic_rd(rte) & RTE_REMOTE_IRR;
	level_tmr = vec_bit(APIC_TMR, V_IOAPIC_LEVEL);
	/* Masked before the EOI: a line still high (QEMU's PIT keeps OUT high
	 * most of the period) would otherwise come straight back. */
	ioapic_wr(rte, RTE_MASKED | RTE_LEVEL | V_IOAPIC_LEVEL);
	lapic_wr(APIC_EOI, 0);
	level_remote_after = ioapic_rd(rte) & RTE_REMOTE_IRR;
}

static void on_pic_timer(struct frame *f)
{
	record(f);
	if (count[IRQ_BASE] == stop_after)
		pic_mask(0);
	pic_eoi(0);
}

/* ---- popek or QEMU -------------------------------------------------------- */

static int on_popek;

static void popek_only(const char *what)
{
	kprintf("note %s: checked under popek only (QEMU 7.2 TCG does not)\n", what);
}

/* ---- the tests ------------------------------------------------------------ */

static void test_base_and_cpuid(void)
{
	u32 r[4];
	cpuid(1, r);
	check("CPUID.1:EDX.APIC is set", r[3] & CPUID1_EDX_APIC);
	check_eq("CPUID.1:EBX[31:24]: initial APIC ID 0", r[1] >> 24, 0);
	u64 base = rdmsr(MSR_APIC_BASE);
	check_eq("IA32_APIC_BASE: 0xFEE00000, BSP, enabled", (u32)base, LAPIC | APIC_BASE_BSP | APIC_BASE_EN);
	check_eq("IA32_APIC_BASE high half", (u32)(base >> 32), 0);
}

static void test_reset_values(void)
{
	u32 version = lapic_rd(APIC_VERSION);
	check_eq("version: integrated APIC 0x14", version & 0xFF, 0x14);
	check_eq("version: max LVT entry 5", (version >> 16) & 0xFF, 5);
	check_eq("ID 0", lapic_rd(APIC_ID) >> 24, 0);
	static const struct {
		const char *name;
		u32 reg, value;
	} regs[] = {
		{ "TPR 0", APIC_TPR, 0 },
		{ "APR 0", APIC_APR, 0 },
		{ "PPR 0", APIC_PPR, 0 },
		{ "LDR 0", APIC_LDR, 0 },
		{ "DFR flat (all ones)", APIC_DFR, 0xFFFFFFFF },
		{ "SVR software-enabled, spurious vector 0xFF (firmware)", APIC_SVR, 0x1FF },
		{ "LVT timer masked", APIC_LVT_TIMER, LVT_MASKED },
		{ "LVT thermal masked", APIC_LVT_THERMAL, LVT_MASKED },
		{ "LVT performance masked", APIC_LVT_PERF, LVT_MASKED },
		{ "LVT LINT0 ExtINT, unmasked: virtual wire (firmware)", APIC_LVT_LINT0, 0x8700 },
		{ "LVT LINT1 NMI (firmware)", APIC_LVT_LINT1, 0x8400 },
		{ "LVT error masked", APIC_LVT_ERROR, LVT_MASKED },
		{ "timer initial count 0", APIC_TIMER_INITIAL, 0 },
		{ "timer current count 0", APIC_TIMER_CURRENT, 0 },
		{ "timer divide configuration 0", APIC_TIMER_DIVIDE, 0 },
	};
	char what[96];
	for (u32 i = 0; i < ARRAY_SIZE(regs); i++) {
		ksnprintf(what, sizeof(what), "reset: %s", regs[i].name);
		check_eq(what, lapic_rd(regs[i].reg), regs[i].value);
	}
	u32 any = 0;
	for (u32 i = 0; i < 8; i++)
		any |= lapic_rd(APIC_ISR + 0x10 * i) | lapic_rd(APIC_IRR + 0x10 * i) |
		       lapic_rd(APIC_TMR + 0x10 * i);
	check_eq("reset: ISR, IRR and TMR all clear", any, 0);
	lapic_wr(APIC_ESR, 0);
	check_eq("ESR 0 after a write latches it", lapic_rd(APIC_ESR), 0);
}

static void test_registers(void)
{
	lapic_wr(APIC_TPR, 0x20);
	check_eq("TPR reads back 0x20", lapic_rd(APIC_TPR), 0x20);
	check_eq("PPR follows TPR with nothing in service", lapic_rd(APIC_PPR), 0x20);
	lapic_wr(APIC_TPR, 0);
	lapic_wr(APIC_VERSION, 0);
	check_eq("version is read-only", lapic_rd(APIC_VERSION) & 0xFF, 0x14);
	lapic_wr(APIC_LDR, 0x01000000);
	check_eq("LDR reads back", lapic_rd(APIC_LDR), 0x01000000);
	lapic_wr(APIC_DFR, 0x0FFFFFFF);
	check_eq("DFR: cluster model", lapic_rd(APIC_DFR), 0x0FFFFFFF);
	lapic_wr(APIC_DFR, 0xFFFFFFFF);
	lapic_wr(APIC_TIMER_DIVIDE, DIVIDE_BY_16);
	check_eq("timer divide configuration reads back", lapic_rd(APIC_TIMER_DIVIDE), DIVIDE_BY_16);
}

static void self_ipi(u32 vector) { lapic_wr(APIC_ICR_LOW, ICR_SELF | vector); }

static void test_self_ipi(void)
{
	reset_log();
	set_handler(0x60, on_lapic_irq);
	self_ipi(0x60);
	check("self-IPI 0x60 with IF clear: requested (IRR)", vec_bit(APIC_IRR, 0x60));
	check("self-IPI 0x60: not yet in service", !vec_bit(APIC_ISR, 0x60));
	check_eq("ICR delivery status idle", lapic_rd(APIC_ICR_LOW) & (1u << 12), 0);
	wait_for_irq();
	check_eq("self-IPI 0x60 delivered once IF was set", count[0x60], 1);
	check("it woke HLT", log[0].at_hlt);
	check("in the handler: 0x60 in service (ISR)", log[0].in_isr);
	check_eq("in the handler: PPR is its class", log[0].ppr, 0x60);
	check("after EOI: ISR clear", !vec_bit(APIC_ISR, 0x60));
	check("after delivery: IRR clear", !vec_bit(APIC_IRR, 0x60));

	/* Physical destination: our own ID; ID 1 is nobody. What must not
	 * arrive has the higher vector, so that it would come first. */
	reset_log();
	set_handler(0x62, on_lapic_irq);
	lapic_wr(APIC_ICR_HIGH, 1u << 24);
	lapic_wr(APIC_ICR_LOW, 0x62);
	lapic_wr(APIC_ICR_HIGH, 0);
	lapic_wr(APIC_ICR_LOW, 0x60);
	wait_for_irq();
	check_eq("physical IPI to APIC 0 delivered", count[0x60], 1);
	check_eq("physical IPI to APIC 1 not", count[0x62], 0);
	/* Logical, flat model: LDR bit 0 is ours (set in test_registers). */
	lapic_wr(APIC_ICR_HIGH, 0x02u << 24);
	lapic_wr(APIC_ICR_LOW, ICR_LOGICAL | 0x62);
	lapic_wr(APIC_ICR_HIGH, 0x01u << 24);
	lapic_wr(APIC_ICR_LOW, ICR_LOGICAL | 0x60);
	wait_for_irq();
	check_eq("logical IPI to set 0x01 delivered", count[0x60], 2);
	check_eq("logical IPI to set 0x02 not", count[0x62], 0);
	lapic_wr(APIC_LDR, 0);
	lapic_wr(APIC_ICR_HIGH, 0);
}

static void test_priorities(void)
{
	reset_log();
	set_handler(0x61, on_lapic_irq);
	set_handler(0x91, on_lapic_irq);
	self_ipi(0x61);
	self_ipi(0x91);
	wait_for_irq();
	check_eq("two pending: two delivered", logged, 2);
	check_eq("the higher vector first", log[0].vector, 0x91);
	check_eq("then the lower one", log[1].vector, 0x61);

	reset_log();
	set_handler(0x65, on_lapic_irq);
	set_handler(0x85, on_lapic_irq);
	lapic_wr(APIC_TPR, 0x70);
	self_ipi(0x65);
	self_ipi(0x85);
	wait_for_irq();
	check_eq("TPR 0x70: vector 0x85 (class 8) delivered", count[0x85], 1);
	check_eq("TPR 0x70: vector 0x65 (class 6) held", count[0x65], 0);
	check("TPR 0x70: 0x65 waits in IRR", vec_bit(APIC_IRR, 0x65));
	check_eq("PPR is TPR", lapic_rd(APIC_PPR), 0x70);
	lapic_wr(APIC_TPR, 0);
	wait_for_irq();
	check_eq("TPR 0: vector 0x65 delivered", count[0x65], 1);
	check("nothing left in IRR or ISR", !vec_bit(APIC_IRR, 0x65) && !vec_bit(APIC_ISR, 0x65));
}

#define ONESHOT_COUNTS 20000000u

static void test_timer(void)
{
	reset_log();
	set_handler(V_ONESHOT, on_lapic_irq);
	set_handler(V_PERIODIC, on_periodic);

	/* One-shot, 2 ms at 1 GHz / 1. */
	lapic_wr(APIC_TIMER_DIVIDE, DIVIDE_BY_1);
	lapic_wr(APIC_LVT_TIMER, V_ONESHOT);
	/* 20 ms at 1 GHz: long enough that a host which deschedules the
	 * vCPU thread between these accesses (a loaded CI machine) does not
	 * let it expire before the first read; 2 ms did, once. */
	lapic_wr(APIC_TIMER_INITIAL, ONESHOT_COUNTS);
	u32 c1 = lapic_rd(APIC_TIMER_CURRENT);
	u32 c2 = lapic_rd(APIC_TIMER_CURRENT);
	check("one-shot: the current count starts below the initial count",
	      c1 > 0 && c1 <= ONESHOT_COUNTS);
	check("one-shot: and counts down", c2 <= c1);
	while (count[V_ONESHOT] == 0)
		wait_for_irq();
	check_eq("one-shot fired at its vector", log[0].vector, V_ONESHOT);
	check("one-shot woke HLT", log[0].at_hlt);
	check_eq("one-shot: the current count stays 0", lapic_rd(APIC_TIMER_CURRENT), 0);

	/* Periodic, 1 ms: 62500 counts at 1 GHz / 16; five of them, then
	 * the handler masks it. */
	reset_log();
	stop_after = 5;
	lapic_wr(APIC_TIMER_DIVIDE, DIVIDE_BY_16);
	lapic_wr(APIC_LVT_TIMER, LVT_PERIODIC | V_PERIODIC);
	lapic_wr(APIC_TIMER_INITIAL, 62500);
	while (count[V_PERIODIC] < 5)
		wait_for_irq();
	/* Masked now; let three more periods go by (the count reloads while
	 * masked). A sixth interrupt may have been pending already when the
	 * fifth's handler masked the timer: a handler more than a period
	 * late (a loaded host) sees the next one requested, and the CPU
	 * delivers it. Any more means masking did not stop the timer. */
	for (u32 reloads = 0, last = lapic_rd(APIC_TIMER_CURRENT); reloads < 3;) {
		u32 now = lapic_rd(APIC_TIMER_CURRENT);
		if (now > last)
			reloads++;
		last = now;
	}
	u32 at_hlt = 0;
	for (u32 i = 0; i < logged && i < 5; i++)
		at_hlt += log[i].at_hlt;
	check("periodic: 5 interrupts at its vector (6 if one was pending when masked)",
	      count[V_PERIODIC] == 5 || count[V_PERIODIC] == 6);
	check_eq("periodic: the five woke HLT", at_hlt, 5);
	check_eq("the one-shot did not fire again", count[V_ONESHOT], 0);
	u32 c = lapic_rd(APIC_TIMER_CURRENT);
	check("periodic: the count reloads (masked, still counting)", c > 0 && c <= 62500);
	lapic_wr(APIC_TIMER_INITIAL, 0);
	check_eq("initial count 0 stops the timer", lapic_rd(APIC_TIMER_CURRENT), 0);
	lapic_wr(APIC_LVT_TIMER, LVT_MASKED);
}

/* Starts a one-shot on V_ONESHOT in `ms` ms: a wake-up for HLT in tests
 * that wait for interrupts that should not come. */
static void alarm_in_ms(u32 ms)
{
	lapic_wr(APIC_TIMER_DIVIDE, DIVIDE_BY_16);
	lapic_wr(APIC_LVT_TIMER, V_ONESHOT);
	lapic_wr(APIC_TIMER_INITIAL, 62500 * ms);
}

static void sleep_ms(u32 ms)
{
	u32 before = count[V_ONESHOT];
	alarm_in_ms(ms);
	while (count[V_ONESHOT] == before)
		wait_for_irq();
}

static void test_ioapic(void)
{
	u32 v = ioapic_rd(IOAPIC_VERSION);
	check_eq("I/O APIC version 0x20", v & 0xFF, 0x20);
	check_eq("I/O APIC: 24 redirection entries", ((v >> 16) & 0xFF) + 1, 24);
	u32 unmasked = 0;
	for (u32 pin = 0; pin < 24; pin++)
		unmasked += !(ioapic_rd(IOAPIC_REDIRECTION + 2 * pin) & RTE_MASKED);
	check_eq("I/O APIC: every entry masked", unmasked, 0);

	/* The PIT through pin 2, edge-triggered, to APIC 0; the PIC's IRQ 0
	 * stays masked. */
	reset_log();
	set_handler(V_IOAPIC_EDGE, on_pit_ioapic);
	stop_after = 5;
	u32 rte = IOAPIC_REDIRECTION + 2 * PIT_PIN;
	ioapic_wr(rte + 1, 0);
	ioapic_wr(rte, V_IOAPIC_EDGE);
	check_eq("pin 2 entry reads back", ioapic_rd(rte), V_IOAPIC_EDGE);
	pit_start_1khz();
	while (count[V_IOAPIC_EDGE] < 5)
		wait_for_irq();
	/* As with the local APIC's periodic timer: a sixth may have been
	 * pending in IRR when the fifth's handler masked the pin. */
	sleep_ms(5);
	u32 edges = count[V_IOAPIC_EDGE];
	check("PIT (ISA IRQ 0) through pin 2: 5 interrupts at vector 0x40 (6 if one was pending when masked)",
	      edges == 5 || edges == 6);
	u32 at_hlt = 0, seen = 0;
	for (u32 i = 0; i < logged && seen < 5; i++) {
		if (log[i].vector != V_IOAPIC_EDGE)
			continue;
		seen++;
		at_hlt += log[i].at_hlt;
	}
	check_eq("the five woke HLT", at_hlt, 5);
	check_eq("no PIC vector came", count[IRQ_BASE], 0);
	sleep_ms(5);
	check_eq("masked pin 2: nothing more in 5 ms", count[V_IOAPIC_EDGE], edges);

	/* Level-triggered: remote IRR until the EOI the local APIC
	 * broadcasts, and the vector's TMR bit. */
	reset_log();
	set_handler(V_IOAPIC_LEVEL, on_pit_level);
	ioapic_wr(rte, RTE_LEVEL | V_IOAPIC_LEVEL);
	while (count[V_IOAPIC_LEVEL] == 0)
		wait_for_irq();
	check("level: remote IRR set while in service", level_remote_before);
	check("level: the vector's TMR bit is set", level_tmr);
	check("level: the EOI broadcast cleared remote IRR", !level_remote_after);
	ioapic_wr(rte, RTE_MASKED);
	pit_stop();
}

static void test_pic_paths(void)
{
	set_handler(IRQ_BASE, on_pic_timer);

	/* LINT0 masked: the PIC's requests do not reach the CPU. */
	reset_log();
	stop_after = 3;
	lapic_wr(APIC_LVT_LINT0, LVT_MASKED | 0x8700);
	pit_start_1khz();
	pic_unmask(0);
	sleep_ms(5);
	check_eq("LINT0 masked: no PIC interrupt in 5 ms", count[IRQ_BASE], 0);
	lapic_wr(APIC_LVT_LINT0, 0x8700);
	while (count[IRQ_BASE] < 3)
		wait_for_irq();
	check_eq("LINT0 ExtINT again: the PIC's timer interrupts arrive", count[IRQ_BASE], 3);

	/* Software-disabled APIC: LINT0 still ExtINT, the PIC still works;
	 * the APIC's own requests wait. */
	reset_log();
	lapic_wr(APIC_SVR, 0xFF);
	check_eq("SVR: software-disabled", lapic_rd(APIC_SVR), 0xFF);
	set_handler(0x70, on_lapic_irq);
	self_ipi(0x70);
	pic_unmask(0);
	while (count[IRQ_BASE] < 3)
		wait_for_irq();
	check_eq("software-disabled APIC: the PIC's interrupts arrive", count[IRQ_BASE], 3);
	check_eq("software-disabled APIC: its self-IPI is held", count[0x70], 0);
	lapic_wr(APIC_SVR, SVR_ENABLE | V_SPURIOUS);
	wait_for_irq();
	check_eq("software-enabled again: the self-IPI arrives", count[0x70], 1);
	pit_stop();
}

static void test_relocation(void)
{
	check("WRMSR IA32_APIC_BASE: move to 0xFEF00000",
	      wrmsr_safe(MSR_APIC_BASE, LAPIC_MOVED | APIC_BASE_EN));
	u64 base = rdmsr(MSR_APIC_BASE);
	check_eq("IA32_APIC_BASE reads the new base (BSP is read-only)", (u32)base,
		 LAPIC_MOVED | APIC_BASE_BSP | APIC_BASE_EN);
	if (on_popek) {
		check_eq("the registers answer at the new base", mmio_rd(LAPIC_MOVED + APIC_VERSION) & 0xFF,
			 0x14);
		check_eq("and not at the old one", mmio_rd(LAPIC + APIC_VERSION), 0xFFFFFFFF);
	} else {
		popek_only("registers follow a relocated base");
	}
	wrmsr_safe(MSR_APIC_BASE, LAPIC | APIC_BASE_EN);
	check_eq("moved back: version at 0xFEE00030", lapic_rd(APIC_VERSION) & 0xFF, 0x14);
}

static void test_msrs(void)
{
	u64 misc = rdmsr(MSR_MISC_ENABLE);
	check("MISC_ENABLE: fast strings on", misc & 1);
	check("MISC_ENABLE: writing back what was read", wrmsr_safe(MSR_MISC_ENABLE, misc));
	wrmsr_safe(MSR_MISC_ENABLE, misc & ~1ull);
	check_eq("MISC_ENABLE: fast strings cleared", (u32)rdmsr(MSR_MISC_ENABLE) & 1, 0);
	wrmsr_safe(MSR_MISC_ENABLE, misc);

	/* 3 GiB up uncacheable: what firmware does for the PCI hole. */
	check("MTRR PHYSBASE0 write", wrmsr_safe(MSR_MTRR_PHYSBASE0, 0xC0000000));
	check("MTRR PHYSMASK0 write", wrmsr_safe(MSR_MTRR_PHYSMASK0, 0xFC0000800ull));
	check_eq("MTRR PHYSBASE0 reads back", (u32)rdmsr(MSR_MTRR_PHYSBASE0), 0xC0000000);
	u64 mask = rdmsr(MSR_MTRR_PHYSMASK0);
	check("MTRR PHYSMASK0 reads back", mask == 0xFC0000800ull);
	u64 fix = 0x0606060606060606ull;
	check("fixed MTRR 0-512K write (all WB)", wrmsr_safe(MSR_MTRR_FIX64K_00000, fix));
	check("fixed MTRR reads back", rdmsr(MSR_MTRR_FIX64K_00000) == fix);
	u64 def = rdmsr(MSR_MTRR_DEF_TYPE);
	check("MTRR default type: enable, fixed enable, WB", wrmsr_safe(MSR_MTRR_DEF_TYPE, 0xC06));
	check_eq("MTRR default type reads back", (u32)rdmsr(MSR_MTRR_DEF_TYPE), 0xC06);
	wrmsr_safe(MSR_MTRR_DEF_TYPE, def);

	u64 pat = rdmsr(MSR_PAT);
	check("PAT after reset: WB WT UC- UC, twice", pat == 0x0007040600070406ull);
	u64 linux_pat = 0x0407050600070106ull;
	check("PAT: Linux's value", wrmsr_safe(MSR_PAT, linux_pat));
	check("PAT reads back", rdmsr(MSR_PAT) == linux_pat);
	wrmsr_safe(MSR_PAT, pat);

	if (!on_popek) {
		popek_only("MTRRcap, #GP for reserved values and missing MSRs");
		return;
	}
	u64 cap = rdmsr(MSR_MTRRCAP);
	check_eq("MTRRcap: 8 variable ranges, fixed ranges, WC", (u32)cap, 0x508);
	u64 v;
	const struct {
		const char *name;
		u32 index;
		u64 value;
	} bad_writes[] = {
		{ "PAT with reserved type 2", MSR_PAT, 0x0007040600070402ull },
		{ "PAT with type 8", MSR_PAT, 0x0007040600070408ull },
		{ "MTRR PHYSBASE0 with reserved type 2", MSR_MTRR_PHYSBASE0, 0xC0000002 },
		{ "MTRR PHYSBASE0 with reserved bit 8", MSR_MTRR_PHYSBASE0, 0xC0000100 },
		{ "fixed MTRR with a reserved type", MSR_MTRR_FIX64K_00000, 0x0606060606060603ull },
		{ "MTRR default type UC- (PAT only)", MSR_MTRR_DEF_TYPE, 0xC07 },
		{ "MISC_ENABLE reserved bit 40", MSR_MISC_ENABLE, misc | (1ull << 40) },
		{ "IA32_APIC_BASE reserved bit 0", MSR_APIC_BASE, LAPIC | APIC_BASE_EN | 1 },
		{ "IA32_APIC_BASE x2APIC enable (no x2APIC)", MSR_APIC_BASE, LAPIC | APIC_BASE_EN | 0x400 },
	};
	char what[96];
	for (u32 i = 0; i < ARRAY_SIZE(bad_writes); i++) {
		ksnprintf(what, sizeof(what), "#GP: WRMSR %s", bad_writes[i].name);
		check(what, !wrmsr_safe(bad_writes[i].index, bad_writes[i].value));
	}
	check("after the refusals: PAT unchanged", rdmsr(MSR_PAT) == pat);
	check("after the refusals: PHYSBASE0 unchanged", rdmsr(MSR_MTRR_PHYSBASE0) == 0xC0000000);
	static const struct {
		const char *name;
		u32 index;
	} absent[] = {
		{ "MSR_PLATFORM_INFO (0xCE)", MSR_PLATFORM_INFO },
		{ "IA32_TSC_ADJUST (CPUID leaf 7 is absent)", MSR_TSC_ADJUST },
		{ "IA32_TSC_DEADLINE (no TSC-deadline timer)", MSR_TSC_DEADLINE },
	};
	for (u32 i = 0; i < ARRAY_SIZE(absent); i++) {
		ksnprintf(what, sizeof(what), "#GP: RDMSR %s", absent[i].name);
		check(what, !rdmsr_safe(absent[i].index, &v));
	}

	/* An IPI with a vector below 16 is refused and logged in ESR. */
	lapic_wr(APIC_ESR, 0);
	self_ipi(5);
	lapic_wr(APIC_ESR, 0);
	check_eq("ESR: send illegal vector", lapic_rd(APIC_ESR), 1u << 5);
	lapic_wr(APIC_ESR, 0);
}

static void test_global_disable(void)
{
	check("WRMSR IA32_APIC_BASE: disable", wrmsr_safe(MSR_APIC_BASE, LAPIC));
	check_eq("IA32_APIC_BASE: EN clear, BSP kept", (u32)rdmsr(MSR_APIC_BASE), LAPIC | APIC_BASE_BSP);
	u32 r[4];
	cpuid(1, r);
	check("CPUID.1:EDX.APIC is clear while the APIC is disabled", !(r[3] & CPUID1_EDX_APIC));
	if (on_popek)
		check_eq("the registers are gone", mmio_rd(LAPIC + APIC_VERSION), 0xFFFFFFFF);
	else
		popek_only("a disabled APIC's registers are gone");

	reset_log();
	stop_after = 3;
	pit_start_1khz();
	pic_unmask(0);
	while (count[IRQ_BASE] < 3)
		wait_for_irq();
	check_eq("APIC disabled: the PIC's timer interrupts reach the CPU directly", count[IRQ_BASE], 3);
	pit_stop();
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	u32 r[4];
	cpuid(0x40000000, r);
	on_popek = !memcmp(&r[1], "PopekPopekVM", 12);
	kprintf("apic: local APIC at 0x%x, I/O APIC at 0x%x, paging off (%s)\n", LAPIC, IOAPIC,
		on_popek ? "popek" : "not popek");
	set_handler(13, on_gp);
	set_handler(V_SPURIOUS, on_spurious);

	test_base_and_cpuid();
	test_reset_values();
	test_registers();
	test_self_ipi();
	test_priorities();
	test_timer();
	test_ioapic();
	test_pic_paths();
	test_relocation();
	test_msrs();
	test_global_disable();
	check_eq("no spurious interrupts", count[V_SPURIOUS], 0);
}
