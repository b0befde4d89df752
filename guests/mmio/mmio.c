/*
 * mmio: loads and stores, paging off, to popek's MMIO test device (the
 * scratch device: crates/machine/src/devices/scratch.rs, one 4 KiB page at
 * 0xFEB00000, outside RAM) in every width, with zero extension and a
 * read-modify-write, then to the page after it, which no device claims.
 *
 * Every access is one instruction written out in assembly, so the device's
 * access counters have exact expected values whatever the compiler does.
 */
#include "popek.h"

#define DEV 0xFEB00000u
#define REG_ID 0x00
#define REG_SCRATCH 0x04
#define REG_READS 0x08  /* reads answered before this one */
#define REG_WRITES 0x0C /* writes seen, ignored ones included */
#define ID_POPK 0x6B706F70u /* "popk" in address order */
#define NOBODY (DEV + 0x1000) /* the page after the device */

static u32 rd32(u32 a)
{
	u32 v;
	__asm__ volatile("movl (%1), %0" : "=r"(v) : "r"(a) : "memory");
	return v;
}

static u32 rd16(u32 a)
{
	u16 v;
	__asm__ volatile("movw (%1), %0" : "=r"(v) : "r"(a) : "memory");
	return v;
}

static u32 rd8(u32 a)
{
	u8 v;
	__asm__ volatile("movb (%1), %0" : "=q"(v) : "r"(a) : "memory");
	return v;
}

/* MOVZX from memory: a byte load zero-extended to 32 bits. */
static u32 rd8_zx(u32 a)
{
	u32 v;
	__asm__ volatile("movzbl (%1), %0" : "=r"(v) : "r"(a) : "memory");
	return v;
}

static void wr32(u32 a, u32 v) { __asm__ volatile("movl %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
static void wr16(u32 a, u16 v) { __asm__ volatile("movw %0, (%1)" : : "r"(v), "r"(a) : "memory"); }
static void wr8(u32 a, u8 v) { __asm__ volatile("movb %0, (%1)" : : "q"(v), "r"(a) : "memory"); }

/* OR with a memory destination: one instruction, one read and one write. */
static void or32(u32 a, u32 v) { __asm__ volatile("orl %0, (%1)" : : "r"(v), "r"(a) : "memory"); }

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;
	kprintf("mmio: the scratch device at 0x%x, paging off\n", DEV);

	/* The first accesses to the device: nothing touched it before. */
	check_eq("READS is 0 before the first read", rd32(DEV + REG_READS), 0);
	check_eq("WRITES is 0 before the first write", rd32(DEV + REG_WRITES), 0);

	check_eq("ID reads as \"popk\" (32-bit load)", rd32(DEV + REG_ID), ID_POPK);
	char id[5];
	for (int i = 0; i < 4; i++)
		id[i] = (char)rd8(DEV + REG_ID + i);
	id[4] = 0;
	check_str("ID byte by byte", id, "popk");
	check_eq("ID's high half (16-bit load)", rd16(DEV + REG_ID + 2), 0x6B70);

	check_eq("SCRATCH is 0 at power-on", rd32(DEV + REG_SCRATCH), 0);
	wr32(DEV + REG_SCRATCH, 0x12345678);
	check_eq("SCRATCH keeps a 32-bit store", rd32(DEV + REG_SCRATCH), 0x12345678);
	wr8(DEV + REG_SCRATCH + 1, 0xAB);
	check_eq("a byte store changes one byte", rd32(DEV + REG_SCRATCH), 0x1234AB78);
	wr16(DEV + REG_SCRATCH + 2, 0xCDEF);
	check_eq("a 16-bit store reads back", rd16(DEV + REG_SCRATCH + 2), 0xCDEF);
	check_eq("and leaves the low half", rd32(DEV + REG_SCRATCH), 0xCDEFAB78);
	check_eq("MOVZX of the top byte", rd8_zx(DEV + REG_SCRATCH + 3), 0xCD);
	or32(DEV + REG_SCRATCH, 0x00000007);
	check_eq("OR to memory reads, ORs and writes", rd32(DEV + REG_SCRATCH), 0xCDEFAB7F);

	wr32(DEV + REG_ID, 0);
	check_eq("ID ignores stores", rd32(DEV + REG_ID), ID_POPK);

	u32 r0 = rd32(DEV + REG_READS);
	rd32(DEV + REG_ID);
	rd8(DEV + REG_ID + 3);
	check_eq("READS counts each load once", rd32(DEV + REG_READS) - r0, 3);
	u32 w0 = rd32(DEV + REG_WRITES);
	wr32(DEV + REG_SCRATCH, 1);
	wr8(DEV + REG_SCRATCH, 2);
	wr32(DEV + REG_ID, 3);
	check_eq("WRITES counts each store once", rd32(DEV + REG_WRITES) - w0, 3);

	u32 w1 = rd32(DEV + REG_WRITES);
	u32 r1 = rd32(DEV + REG_READS);
	check_eq("the page after the device reads as all ones", rd32(NOBODY), 0xFFFFFFFF);
	wr32(NOBODY, 0);
	check_eq("and drops stores", rd32(NOBODY), 0xFFFFFFFF);
	check_eq("the device saw no load of that page", rd32(DEV + REG_READS) - r1, 1);
	check_eq("nor a store", rd32(DEV + REG_WRITES) - w1, 0);
}
