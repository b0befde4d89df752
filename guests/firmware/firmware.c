/*
 * firmware: the tables a PC's firmware leaves for the OS, and the timers
 * they describe, paging off.
 *
 * Finds the ACPI RSDP the way an OS does (the EBDA's first KiB, then
 * 0xE0000-0xFFFFF), checks the checksum of every table the RSDT lists and
 * of the DSDT and FACS the FADT names, then what this guest relies on:
 * the FADT's PM blocks and SCI, the MADT's local APIC, I/O APIC and
 * interrupt source overrides, the HPET table against the HPET's own
 * capabilities, \_S5 in the DSDT; the Intel MP table likewise. Then the
 * devices: the HPET counter and the ACPI PM timer measured against the
 * TSC (itself calibrated on PIT channel 2), an HPET one-shot and a
 * periodic interrupt through the legacy replacement route and I/O APIC
 * pin 2, a level-triggered HPET interrupt on a routed pin with its
 * status bit, remote IRR and EOI, and at the end an ACPI S5 power-off
 * through PM1a_CNT (the debug port only if that did not stop the VM).
 *
 * QEMU 7.2 TCG is the reference for what a PC guarantees; its tables are
 * SeaBIOS's and differ from popek's, so the checks of popek's own
 * choices (the FADT revision and boot flags, the HPET's exact
 * capabilities and routes) run only where the hypervisor leaf says popek,
 * and say so.
 */
#include "popek.h"

/* ---- the devices ----------------------------------------------------------- */

#define LAPIC 0xFEE00000u
#define APIC_ID 0x020
#define APIC_EOI 0x0B0
#define APIC_SVR 0x0F0
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_DIVIDE 0x3E0
#define LVT_MASKED 0x10000
#define DIVIDE_BY_1 0xB

#define IOAPIC 0xFEC00000u
#define IOREGSEL 0x00
#define IOWIN 0x10
#define IOAPIC_REDIRECTION 0x10
#define RTE_REMOTE_IRR (1u << 14)
#define RTE_LEVEL (1u << 15)
#define RTE_MASKED (1u << 16)

#define HPET_CAP 0x000
#define HPET_CONFIG 0x010
#define HPET_STATUS 0x020
#define HPET_COUNTER 0x0F0
#define HPET_TCONFIG(n) (0x100 + 0x20 * (n))
#define HPET_TCMP(n) (0x108 + 0x20 * (n))
#define HPET_ENABLE 0x1
#define HPET_LEGACY 0x2
#define CAP_COUNT_64 (1u << 13)
#define CAP_LEGACY (1u << 15)
#define TN_LEVEL (1u << 1)
#define TN_INT_ENABLE (1u << 2)
#define TN_PERIODIC (1u << 3)
#define TN_PERIODIC_CAP (1u << 4)
#define TN_SET_VALUE (1u << 6)
#define TN_32BIT (1u << 8)
#define TN_ROUTE_SHIFT 9

#define PIT_CH2 0x42
#define PORT_B 0x61
#define PM_TIMER_HZ 3579545u
#define SLP_EN (1u << 13)
#define SCI_EN 1u

/* ---- vectors this guest uses ------------------------------------------------ */

#define V_ONESHOT 0x60
#define V_PERIODIC 0x61
#define V_LEVEL 0x62
#define V_WATCHDOG 0x6F
#define V_SPURIOUS 0xFF

/* ---- accessors ---------------------------------------------------------------- */

static u32 mmio_rd(u32 a) { return *(volatile u32 *)a; }
static void mmio_wr(u32 a, u32 v) { *(volatile u32 *)a = v; }
static u8 rd8(u32 a) { return *(volatile u8 *)a; }
static u16 rd16(u32 a) { return *(volatile u16 *)a; }
static u32 rd32(u32 a) { return *(volatile u32 *)a; }
static u32 lapic_rd(u32 reg) { return mmio_rd(LAPIC + reg); }
static void lapic_wr(u32 reg, u32 v) { mmio_wr(LAPIC + reg, v); }
static u32 hpet_base = 0xFED00000u;
static u32 hpet_rd(u32 reg) { return mmio_rd(hpet_base + reg); }
static void hpet_wr(u32 reg, u32 v) { mmio_wr(hpet_base + reg, v); }

/* The first page is where gcc sees a null pointer: read the BDA through
 * an asm operand instead of a constant address. */
static u16 bda16(u32 a)
{
	u16 v;
	__asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a));
	return v;
}

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

static void route_pin(u32 pin, u32 low)
{
	ioapic_wr(IOAPIC_REDIRECTION + 2 * pin + 1, (lapic_rd(APIC_ID) >> 24) << 24);
	ioapic_wr(IOAPIC_REDIRECTION + 2 * pin, low);
}

static inline u32 inl(u16 port)
{
	u32 v;
	__asm__ volatile("inl %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline u16 inw(u16 port)
{
	u16 v;
	__asm__ volatile("inw %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

static void cpuid(u32 leaf, u32 r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(0));
}

/* n / d with two 32-bit DIVs (no libgcc); the quotient must fit 32 bits. */
static u32 div64(u64 n, u32 d)
{
	u32 hi = (u32)(n >> 32), lo = (u32)n, q_hi, q_lo, r;
	__asm__("divl %4" : "=a"(q_hi), "=d"(r) : "a"(hi), "d"(0), "rm"(d));
	__asm__("divl %4" : "=a"(q_lo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
	return q_hi ? 0xFFFFFFFFu : q_lo;
}

static u8 sum(u32 addr, u32 len)
{
	u8 s = 0;
	for (u32 i = 0; i < len; i++)
		s += rd8(addr + i);
	return s;
}

/* ---- popek or QEMU ---------------------------------------------------------- */

static int on_popek;

static void popek_only(const char *what)
{
	kprintf("note %s: checked under popek only (QEMU's tables and HPET differ)\n", what);
}

/* ---- interrupts ---------------------------------------------------------------- */

static volatile u32 count[256];
static volatile u32 arrived[8]; /* the HPET counter's low half at each arrival */
static volatile u32 stop_after;

void wait_for_irq(void);
__asm__(".text\n"
	".globl wait_for_irq\n"
	"wait_for_irq:\n"
	"\tsti\n"
	"\thlt\n"
	"\tcli\n"
	"\tret\n");

static void on_spurious(struct frame *f) { count[f->vector]++; }

static void on_watchdog(struct frame *f)
{
	count[f->vector]++;
	lapic_wr(APIC_EOI, 0);
}

static void on_oneshot(struct frame *f)
{
	u32 n = count[f->vector]++;
	if (n < ARRAY_SIZE(arrived))
		arrived[n] = hpet_rd(HPET_COUNTER);
	lapic_wr(APIC_EOI, 0);
}

static void on_periodic(struct frame *f)
{
	u32 n = count[f->vector]++;
	if (n < ARRAY_SIZE(arrived))
		arrived[n] = hpet_rd(HPET_COUNTER);
	if (n + 1 == stop_after)
		hpet_wr(HPET_TCONFIG(0), TN_32BIT);
	lapic_wr(APIC_EOI, 0);
}

/* The level-triggered pass: the first interrupt ends without clearing the
 * timer's status bit, so the I/O APIC must deliver it again at the EOI;
 * the second clears it first. */
static volatile u32 level_pin, level_status[2], level_remote[2], level_remote_after;

static void on_level(struct frame *f)
{
	u32 n = count[f->vector]++;
	u32 rte = IOAPIC_REDIRECTION + 2 * level_pin;
	if (n < 2) {
		level_status[n] = hpet_rd(HPET_STATUS) & (1u << 2);
		level_remote[n] = ioapic_rd(rte) & RTE_REMOTE_IRR;
	}
	if (n >= 1)
		hpet_wr(HPET_STATUS, 1u << 2);
	if (n >= 3) /* a storm: stop it */
		ioapic_wr(rte, RTE_MASKED | RTE_LEVEL | V_LEVEL);
	lapic_wr(APIC_EOI, 0);
	if (n == 1)
		level_remote_after = ioapic_rd(rte) & RTE_REMOTE_IRR;
}

/* Waits in HLT until `*n` reaches `target`, for at most `ms` (the local
 * APIC timer, counting at 1 GHz under popek and QEMU alike, is the
 * watchdog). */
static int wait_for(volatile u32 *n, u32 target, u32 ms)
{
	u32 fired = count[V_WATCHDOG];
	lapic_wr(APIC_TIMER_DIVIDE, DIVIDE_BY_1);
	lapic_wr(APIC_LVT_TIMER, V_WATCHDOG);
	lapic_wr(APIC_TIMER_INITIAL, ms * 1000000u);
	while (*n < target && count[V_WATCHDOG] == fired)
		wait_for_irq();
	lapic_wr(APIC_TIMER_INITIAL, 0);
	lapic_wr(APIC_LVT_TIMER, LVT_MASKED | V_WATCHDOG);
	return *n >= target;
}

/* ---- the TSC as the yardstick -------------------------------------------------- */

static u32 tsc_khz;

/* One reading of `read` with the TSC around it at most `limit` cycles
 * apart (a host preempting us in between would skew a rate), its TSC the
 * midpoint; the tightest of up to 20 tries. */
static u32 sample(u32 (*read)(void), u64 *tsc, u64 limit)
{
	u64 best = ~0ull;
	u32 v = 0;
	for (int i = 0; i < 20 && best >= limit; i++) {
		u64 a = rdtsc();
		u32 x = read();
		u64 b = rdtsc();
		if (b - a < best) {
			best = b - a;
			v = x;
			*tsc = a + ((b - a) >> 1);
		}
	}
	return v;
}

/* PIT channel 2's count, latched (it counts down at PIT_HZ). */
static u32 pit2_count(void)
{
	outb(PIT_CMD, 0x80);
	u32 lo = inb(PIT_CH2);
	return (u32)inb(PIT_CH2) << 8 | lo;
}

/* TSC kHz from 40 ms of PIT channel 2 (mode 0 from 0xFFFF, gated on
 * through port 0x61), read at both ends with the TSC close around it:
 * PIT ticks against TSC cycles between the two readings. */
static u32 calibrate_once(void)
{
	const u64 tight = 400000; /* cycles: 100-400 us on a 1-4 GHz TSC */
	outb(PORT_B, (inb(PORT_B) & ~0x02) | 0x01);
	outb(PIT_CMD, 0xB0);
	outb(PIT_CH2, 0xFF);
	outb(PIT_CH2, 0xFF);
	u64 t0 = 0, t1 = 0;
	u32 c0 = sample(pit2_count, &t0, tight);
	while (((c0 - pit2_count()) & 0xFFFF) < PIT_HZ / 25)
		;
	u32 c1 = sample(pit2_count, &t1, tight);
	outb(PORT_B, inb(PORT_B) & ~0x01);
	u32 ticks = (c0 - c1) & 0xFFFF;
	return ticks ? div64((t1 - t0) * PIT_HZ, ticks * 1000) : 0;
}

/* The median of three calibrations: one a busy host disturbed is out. */
static u32 calibrate_tsc(void)
{
	u32 a = calibrate_once(), b = calibrate_once(), c = calibrate_once(), t;
	if (a > b)
		t = a, a = b, b = t;
	if (b > c)
		t = b, b = c, c = t;
	if (a > b)
		t = a, a = b, b = t;
	return b;
}

/* Whether `read` (counting modulo mask + 1) runs at `hz` within 2%,
 * measured over 100 ms of TSC with readings bracketed within 100 us; up
 * to three tries, the TSC calibrated again before each retry. */
static int rate_ok(u32 (*read)(void), u32 mask, u32 hz, u32 *measured_khz)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		u64 t0 = 0, t1 = 0;
		u32 v0 = sample(read, &t0, tsc_khz / 10);
		while (rdtsc() - t0 < (u64)tsc_khz * 100)
			;
		u32 v1 = sample(read, &t1, tsc_khz / 10);
		u64 ticks = (v1 - v0) & mask;
		u64 cycles = t1 - t0;
		/* ticks / (cycles / tsc) against hz, multiplied out. */
		u64 got = ticks * tsc_khz * 1000ull;
		u64 want = cycles * hz;
		u64 diff = got > want ? got - want : want - got;
		*measured_khz = div64(ticks * tsc_khz, (u32)cycles);
		if (diff * 50 <= want)
			return 1;
		tsc_khz = calibrate_tsc();
	}
	return 0;
}

/* ---- ACPI tables ------------------------------------------------------------------ */

/* Table header fields. */
#define SDT_LENGTH 4
#define SDT_REVISION 8
#define SDT_HEADER 36

static u32 rsdp, rsdt, fadt, madt, hpet_tbl, dsdt, facs;

static u32 scan(u32 from, u32 len, const char *sig, u32 sig_len, u32 check_len)
{
	for (u32 a = from; a + check_len <= from + len; a += 16)
		if (!memcmp((const void *)a, sig, sig_len) && sum(a, check_len) == 0)
			return a;
	return 0;
}

static int table_ok(u32 a, const char *sig)
{
	return a && !memcmp((const void *)a, sig, 4) && rd32(a + SDT_LENGTH) >= SDT_HEADER &&
	       sum(a, rd32(a + SDT_LENGTH)) == 0;
}

static void test_rsdp_and_rsdt(void)
{
	u32 ebda = (u32)bda16(0x40E) << 4;
	rsdp = ebda ? scan(ebda, 1024, "RSD PTR ", 8, 20) : 0;
	if (!rsdp)
		rsdp = scan(0xE0000, 0x20000, "RSD PTR ", 8, 20);
	check("RSDP found (EBDA or 0xE0000-0xFFFFF, 16-byte aligned, checksum)", rsdp != 0);
	if (!rsdp)
		return;
	if (rd8(rsdp + 15) >= 2)
		check("RSDP: extended checksum", sum(rsdp, rd32(rsdp + 20)) == 0);
	rsdt = rd32(rsdp + 16);
	check("RSDT: signature and checksum", table_ok(rsdt, "RSDT"));
	u32 n = (rd32(rsdt + SDT_LENGTH) - SDT_HEADER) / 4, good = 0;
	for (u32 i = 0; i < n; i++) {
		u32 t = rd32(rsdt + SDT_HEADER + 4 * i);
		if (t && sum(t, rd32(t + SDT_LENGTH)) == 0)
			good++;
		if (!memcmp((const void *)t, "FACP", 4))
			fadt = t;
		else if (!memcmp((const void *)t, "APIC", 4))
			madt = t;
		else if (!memcmp((const void *)t, "HPET", 4))
			hpet_tbl = t;
	}
	char what[80];
	ksnprintf(what, sizeof(what), "every table the RSDT lists has a good checksum (%u tables)", n);
	check_eq(what, good, n);
	check("the RSDT lists a FADT, a MADT and an HPET table", fadt && madt && hpet_tbl);
}

/* What the FADT says of the PM registers. */
static u16 pm1a_evt, pm1a_cnt, pm_tmr;
static u32 sci_irq, slp_typ_s5 = 0xFFFFFFFF;

static void test_fadt(void)
{
	if (!fadt)
		return;
	u32 len = rd32(fadt + SDT_LENGTH);
	facs = rd32(fadt + 36);
	dsdt = rd32(fadt + 40);
	if (len >= 148 && rd32(fadt + 140))
		dsdt = rd32(fadt + 140); /* X_DSDT, low half: everything is below 4 GiB */
	check("DSDT: signature and checksum", table_ok(dsdt, "DSDT"));
	check("FACS: signature, 64-byte aligned, at least 64 bytes",
	      facs && !memcmp((const void *)facs, "FACS", 4) && facs % 64 == 0 && rd32(facs + 4) >= 64);
	sci_irq = rd16(fadt + 46);
	pm1a_evt = (u16)rd32(fadt + 56);
	pm1a_cnt = (u16)rd32(fadt + 64);
	pm_tmr = (u16)rd32(fadt + 76);
	check_eq("FADT: SCI on ISA IRQ 9", sci_irq, 9);
	check("FADT: a PM1a event block of 4 bytes", pm1a_evt && rd8(fadt + 88) == 4);
	check("FADT: a PM1a control block of 2 bytes", pm1a_cnt && rd8(fadt + 89) == 2);
	check("FADT: a PM timer block of 4 bytes, 24-bit (TMR_VAL_EXT clear)",
	      pm_tmr && rd8(fadt + 91) == 4 && !(rd32(fadt + 112) & (1u << 8)));
	u32 smi_cmd = rd32(fadt + 48);
	check("PM1a_CNT: in ACPI mode (SCI_EN), or an SMI command to get there",
	      (inw(pm1a_cnt) & SCI_EN) || (smi_cmd && rd8(fadt + 52)));
	if (on_popek) {
		check_eq("FADT revision 3 (ACPI 2.0, 244 bytes)", rd8(fadt + SDT_REVISION) << 16 | len,
			 3 << 16 | 244);
		check_eq("FADT: IA-PC boot flags: legacy devices, 8042, no VGA, no MSI", rd16(fadt + 109), 0xF);
		check("FADT: no SMI command port, always in ACPI mode", !smi_cmd && (inw(pm1a_cnt) & SCI_EN));
		check("FADT: X_PM1a_EVT, X_PM1a_CNT, X_PM_TMR repeat the 32-bit blocks in I/O space",
		      rd8(fadt + 148) == 1 && rd32(fadt + 152) == pm1a_evt && rd8(fadt + 172) == 1 &&
			      rd32(fadt + 176) == pm1a_cnt && rd8(fadt + 208) == 1 &&
			      rd32(fadt + 212) == pm_tmr);
	} else {
		popek_only("FADT revision, boot flags and X_ fields");
	}
}

/* \_S5's SLP_TYPa, read from the DSDT's byte code: Name (_S5_, Package
 * (n) { SLP_TYPa, ... }), the name with or without a root prefix. */
static void test_dsdt(void)
{
	if (!dsdt)
		return;
	u32 end = dsdt + rd32(dsdt + SDT_LENGTH);
	for (u32 a = dsdt + SDT_HEADER; a + 12 < end; a++) {
		if (memcmp((const void *)a, "_S5_", 4))
			continue;
		if (rd8(a - 1) != 0x08 && !(rd8(a - 1) == '\\' && rd8(a - 2) == 0x08))
			continue;
		u32 p = a + 4;
		if (rd8(p) != 0x12) /* PackageOp */
			continue;
		p += 1 + 1 + (rd8(p + 1) >> 6); /* PkgLength */
		p++;                             /* NumElements */
		u8 op = rd8(p);
		slp_typ_s5 = op == 0x00 ? 0 : op == 0x01 ? 1 : op == 0x0A ? rd8(p + 1) : 0xFFFFFFFF;
		break;
	}
	check("DSDT: \\_S5 names SLP_TYPa", slp_typ_s5 <= 7);
}

static void test_madt(void)
{
	if (!madt)
		return;
	u32 len = rd32(madt + SDT_LENGTH);
	u32 my_id = lapic_rd(APIC_ID) >> 24;
	int cpu = 0, ioapic = 0, irq0 = 0, sci = 0, nmi = 0, walked = 1;
	for (u32 a = madt + 44; a < madt + len;) {
		u8 type = rd8(a), l = rd8(a + 1);
		if (l < 2) {
			walked = 0;
			break;
		}
		if (type == 0 && rd8(a + 3) == my_id && (rd32(a + 4) & 1))
			cpu = 1;
		if (type == 1 && rd32(a + 4) == IOAPIC && rd32(a + 8) == 0)
			ioapic = 1;
		if (type == 2 && rd8(a + 2) == 0 && rd8(a + 3) == 0 && rd32(a + 4) == 2)
			irq0 = 1;
		if (type == 2 && rd8(a + 3) == 9 && rd32(a + 4) == 9 && (rd16(a + 8) & 0xF) == 0xD)
			sci = 1;
		if (type == 4 && (rd8(a + 2) == 0xFF || rd8(a + 2) == 0) && rd8(a + 5) == 1)
			nmi = 1;
		a += l;
	}
	check("MADT: the entries walk to its end", walked);
	check_eq("MADT: local APIC address", rd32(madt + 36), LAPIC);
	check("MADT: PCAT_COMPAT (an 8259A pair as well)", rd32(madt + 40) & 1);
	check("MADT: this CPU's local APIC, enabled", cpu);
	check("MADT: the I/O APIC at 0xFEC00000, GSI base 0", ioapic);
	check("MADT: ISA IRQ 0 overridden to GSI 2", irq0);
	check("MADT: ISA IRQ 9 (the SCI) level-triggered, active high", sci);
	check("MADT: NMI on LINT1", nmi);
}

static void test_hpet_table(void)
{
	if (!hpet_tbl)
		return;
	check("HPET table: the block in system memory", rd8(hpet_tbl + 40) == 0 && rd32(hpet_tbl + 48) == 0);
	hpet_base = rd32(hpet_tbl + 44);
	check_eq("HPET table: event timer block ID = the capabilities register's low half",
		 rd32(hpet_tbl + 36), hpet_rd(HPET_CAP));
}

/* ---- the MP table ----------------------------------------------------------------- */

static void test_mp_table(void)
{
	u32 ebda = (u32)bda16(0x40E) << 4;
	u32 base_end = (u32)bda16(0x413) * 1024;
	u32 fp = ebda ? scan(ebda, 1024, "_MP_", 4, 16) : 0;
	if (!fp)
		fp = scan(base_end - 1024, 1024, "_MP_", 4, 16);
	if (!fp)
		fp = scan(0xF0000, 0x10000, "_MP_", 4, 16);
	check("MP floating pointer found, checksum", fp != 0);
	if (!fp)
		return;
	u32 t = rd32(fp + 4);
	check("MP configuration table: PCMP, checksum",
	      t && !memcmp((const void *)t, "PCMP", 4) && sum(t, rd16(t + 4)) == 0);
	check_eq("MP configuration table: local APIC address", rd32(t + 36), LAPIC);
	u32 my_id = lapic_rd(APIC_ID) >> 24, isa_bus = 0xFF;
	int bsp = 0, ioapic = 0, irq0 = 0, extint = 0, nmi = 0;
	u32 a = t + 44;
	for (u32 i = 0; i < rd16(t + 34); i++) {
		u8 type = rd8(a);
		if (type == 0) {
			bsp |= rd8(a + 1) == my_id && (rd8(a + 3) & 3) == 3;
			a += 20;
			continue;
		}
		if (type == 1 && !memcmp((const void *)(a + 2), "ISA   ", 6))
			isa_bus = rd8(a + 1);
		if (type == 2 && (rd8(a + 3) & 1) && rd32(a + 4) == IOAPIC)
			ioapic = 1;
		if (type == 3 && rd8(a + 1) == 0 && rd8(a + 4) == isa_bus && rd8(a + 5) == 0 && rd8(a + 7) == 2)
			irq0 = 1;
		if (type == 4 && rd8(a + 1) == 3 && rd8(a + 7) == 0)
			extint = 1;
		if (type == 4 && rd8(a + 1) == 1 && rd8(a + 7) == 1)
			nmi = 1;
		a += 8;
	}
	check("MP: the bootstrap processor, enabled", bsp);
	check("MP: an ISA bus", isa_bus != 0xFF);
	check("MP: the I/O APIC at 0xFEC00000, enabled", ioapic);
	check("MP: ISA IRQ 0 on I/O APIC pin 2", irq0);
	check("MP: ExtINT on LINT0 and NMI on LINT1", extint && nmi);
}

/* ---- the HPET and the PM timer ------------------------------------------------------ */

static u32 hpet_ticks_per_ms, hpet_hz;

static u32 read_hpet(void) { return hpet_rd(HPET_COUNTER); }
static u32 read_pm_timer(void) { return inl(pm_tmr); }

static void test_counters(void)
{
	u32 cap = hpet_rd(HPET_CAP), period = hpet_rd(HPET_CAP + 4);
	check("HPET: period at most 100 ns (10 MHz or faster)", period && period <= 100000000u);
	check("HPET: legacy replacement route, 64-bit counter", (cap & CAP_LEGACY) && (cap & CAP_COUNT_64));
	check("HPET: at least 3 timers, timer 0 periodic-capable",
	      ((cap >> 8) & 0x1F) >= 2 && (hpet_rd(HPET_TCONFIG(0)) & TN_PERIODIC_CAP));
	if (on_popek) {
		check_eq("HPET: 10 ns period (100 MHz), as QEMU's", period, 10000000);
		check_eq("HPET: ID 0x8086A201 (Intel, 3 timers, 64-bit, legacy route)", cap, 0x8086A201);
		check_eq("HPET: timers route to I/O APIC pins 16-23", hpet_rd(HPET_TCONFIG(2) + 4), 0x00FF0000);
	} else {
		popek_only("the HPET's exact capabilities");
	}
	hpet_hz = div64(1000000000000000ull, period);
	hpet_ticks_per_ms = hpet_hz / 1000;
	hpet_wr(HPET_CONFIG, 0);
	hpet_wr(HPET_COUNTER, 0x1000);
	hpet_wr(HPET_COUNTER + 4, 0);
	u32 a = hpet_rd(HPET_COUNTER);
	for (volatile int i = 0; i < 1000; i++)
		;
	check("HPET: a halted counter stays where it was written", a == 0x1000 && hpet_rd(HPET_COUNTER) == 0x1000);
	hpet_wr(HPET_CONFIG, HPET_ENABLE);

	tsc_khz = calibrate_tsc();
	kprintf("info TSC %u kHz (PIT channel 2)\n", tsc_khz);
	check("TSC calibrated on PIT channel 2", tsc_khz > 10000);
	u32 khz = 0;
	check("HPET: the counter advances at its period against the TSC (2%)",
	      rate_ok(read_hpet, 0xFFFFFFFF, hpet_hz, &khz));
	kprintf("info HPET %u kHz\n", khz);
	if (!pm_tmr)
		return;
	u32 max = 0;
	for (int i = 0; i < 100; i++) {
		u32 v = inl(pm_tmr);
		max = v > max ? v : max;
	}
	check("PM timer: 24 bits", max <= 0xFFFFFF);
	check("PM timer: 3.579545 MHz against the TSC (2%)", rate_ok(read_pm_timer, 0xFFFFFF, PM_TIMER_HZ, &khz));
	kprintf("info PM timer %u kHz\n", khz);
	hpet_wr(HPET_CONFIG, 0);
}

static u64 hpet_counter64(void)
{
	u32 hi, lo;
	do {
		hi = hpet_rd(HPET_COUNTER + 4);
		lo = hpet_rd(HPET_COUNTER);
	} while (hi != hpet_rd(HPET_COUNTER + 4));
	return ((u64)hi << 32) | lo;
}

/* Runs with interrupts on while the (running) HPET counts `ticks`: every
 * counter read is an exit at which an engine can deliver. */
static void spin_with_interrupts(u32 ticks)
{
	u32 until = hpet_rd(HPET_COUNTER) + ticks;
	sti();
	while ((s32)(hpet_rd(HPET_COUNTER) - until) < 0)
		;
	cli();
}

static void reset_counts(void)
{
	for (int i = 0; i < 256; i++)
		count[i] = 0;
}

static void test_oneshot(void)
{
	reset_counts();
	hpet_wr(HPET_CONFIG, HPET_LEGACY);
	hpet_wr(HPET_TCONFIG(0), TN_INT_ENABLE);
	u64 cmp = hpet_counter64() + 2 * hpet_ticks_per_ms;
	hpet_wr(HPET_TCMP(0), (u32)cmp);
	hpet_wr(HPET_TCMP(0) + 4, (u32)(cmp >> 32));
	route_pin(2, V_ONESHOT);
	hpet_wr(HPET_CONFIG, HPET_LEGACY | HPET_ENABLE);
	check("HPET timer 0 one-shot, legacy route to I/O APIC pin 2: the interrupt comes",
	      wait_for(&count[V_ONESHOT], 1, 500));
	check("HPET one-shot: not before its comparator", (s32)(arrived[0] - (u32)cmp) >= 0);
	spin_with_interrupts(5 * hpet_ticks_per_ms);
	check_eq("HPET one-shot: once", count[V_ONESHOT], 1);
	hpet_wr(HPET_TCONFIG(0), 0);
	hpet_wr(HPET_CONFIG, 0);
	route_pin(2, RTE_MASKED | V_ONESHOT);
}

static void test_periodic(void)
{
	reset_counts();
	u32 period = 2 * hpet_ticks_per_ms;
	/* As Linux's hpet_clkevt_set_state_periodic: halted, 32-bit, the
	 * first comparator write with SETVAL sets the next match, the second
	 * the period. */
	hpet_wr(HPET_CONFIG, HPET_LEGACY);
	hpet_wr(HPET_TCONFIG(0), TN_INT_ENABLE | TN_PERIODIC | TN_SET_VALUE | TN_32BIT);
	u32 first = hpet_rd(HPET_COUNTER) + period;
	hpet_wr(HPET_TCMP(0), first);
	hpet_wr(HPET_TCMP(0), period);
	stop_after = 5;
	route_pin(2, V_PERIODIC);
	hpet_wr(HPET_CONFIG, HPET_LEGACY | HPET_ENABLE);
	check("HPET timer 0 periodic (32-bit, as Linux sets it): five interrupts",
	      wait_for(&count[V_PERIODIC], 5, 1000));
	check("HPET periodic: the first not before its comparator", (s32)(arrived[0] - first) >= 0);
	/* Each interrupt comes at or after its match; a late one may be
	 * followed by the next on time, so only the matches bound them. */
	check("HPET periodic: the fifth not before the fifth match", (s32)(arrived[4] - (first + 4 * period)) >= 0);
	u32 cmp = hpet_rd(HPET_TCMP(0));
	check("HPET periodic: the comparator moved on by whole periods",
	      cmp != first && (cmp - first) % period == 0);
	/* The handler disabled the timer at the fifth; one more match may
	 * have been pending by then. After that, nothing. */
	spin_with_interrupts(3 * period);
	u32 settled = count[V_PERIODIC];
	spin_with_interrupts(3 * period);
	check("HPET periodic: disabling its interrupt stops it",
	      settled <= 6 && count[V_PERIODIC] == settled);
	hpet_wr(HPET_TCONFIG(0), 0);
	hpet_wr(HPET_CONFIG, 0);
	route_pin(2, RTE_MASKED | V_PERIODIC);
}

static void test_level(void)
{
	reset_counts();
	u32 cap = hpet_rd(HPET_TCONFIG(2) + 4);
	u32 pin = 31;
	while (pin && !(cap & (1u << pin)))
		pin--;
	check("HPET timer 2 may be routed to an I/O APIC pin", cap != 0);
	if (!cap)
		return;
	level_pin = pin;
	/* The legacy route stays on: timer 0 is off, and a PC's HPET then
	 * cuts the PIT off IRQ 0, which QEMU routes to pin 2 as well, the one
	 * pin its timer 2 may use. */
	hpet_wr(HPET_CONFIG, HPET_LEGACY);
	hpet_wr(HPET_TCONFIG(2), TN_LEVEL | TN_INT_ENABLE | pin << TN_ROUTE_SHIFT);
	check_eq("HPET timer 2: its route sticks", (hpet_rd(HPET_TCONFIG(2)) >> TN_ROUTE_SHIFT) & 0x1F, pin);
	u64 cmp = hpet_counter64() + hpet_ticks_per_ms;
	hpet_wr(HPET_TCMP(2), (u32)cmp);
	hpet_wr(HPET_TCMP(2) + 4, (u32)(cmp >> 32));
	route_pin(pin, RTE_LEVEL | V_LEVEL);
	hpet_wr(HPET_CONFIG, HPET_LEGACY | HPET_ENABLE);
	check("HPET timer 2 level-triggered: the interrupt comes, and again at its EOI",
	      wait_for(&count[V_LEVEL], 2, 500));
	check("HPET level: its status bit is set in the handler", level_status[0] && level_status[1]);
	check("HPET level: the I/O APIC entry's remote IRR is set until the EOI",
	      level_remote[0] && level_remote[1] && !level_remote_after);
	spin_with_interrupts(2 * hpet_ticks_per_ms);
	check_eq("HPET level: clearing the status bit ends it", count[V_LEVEL], 2);
	check_eq("HPET level: status clear", hpet_rd(HPET_STATUS) & 4, 0);
	hpet_wr(HPET_TCONFIG(2), 0);
	hpet_wr(HPET_CONFIG, 0);
	route_pin(pin, RTE_MASKED | RTE_LEVEL | V_LEVEL);
}

/* ---- power off ------------------------------------------------------------------------ */

/* Whether the FADT and the DSDT say how to enter S5. */
static int can_power_off(void) { return pm1a_cnt && slp_typ_s5 <= 7; }

static void power_off(void)
{
	outw(pm1a_cnt, (u16)(slp_typ_s5 << 10 | SLP_EN));
	/* A machine still here 100 ms later did not power off. */
	u64 t = rdtsc();
	while (rdtsc() - t < (u64)tsc_khz * 100)
		;
	kprintf("FAIL ACPI S5 did not power the machine off\n");
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	u32 r[4];
	cpuid(0x40000000, r);
	on_popek = !memcmp(&r[1], "PopekPopekVM", 12);
	kprintf("firmware: ACPI and MP tables, HPET, PM timer, paging off (%s)\n",
		on_popek ? "popek" : "not popek");
	set_handler(V_SPURIOUS, on_spurious);
	set_handler(V_WATCHDOG, on_watchdog);
	set_handler(V_ONESHOT, on_oneshot);
	set_handler(V_PERIODIC, on_periodic);
	set_handler(V_LEVEL, on_level);
	lapic_wr(APIC_SVR, 0x100 | V_SPURIOUS);

	test_rsdp_and_rsdt();
	test_fadt();
	test_dsdt();
	test_madt();
	test_hpet_table();
	test_mp_table();
	test_counters();
	test_oneshot();
	test_periodic();
	test_level();
	check_eq("no spurious interrupts", count[V_SPURIOUS], 0);

	/* Said before the verdict, which is the last line of a passing run. */
	if (can_power_off())
		kprintf("then power-off: SLP_TYP %u | SLP_EN to PM1a_CNT 0x%x (S5)\n", slp_typ_s5, pm1a_cnt);
	if (verdict() && can_power_off())
		power_off();
	outb(DEBUG_EXIT, 1);
	halt_forever();
}
