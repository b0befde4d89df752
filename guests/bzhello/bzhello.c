/*
 * bzhello: a tiny kernel in Linux bzImage format. It checks the 32-bit
 * boot protocol's entry state and prints what the loader put into
 * boot_params (the "zero page"): the copied setup header, the e820 memory
 * map, the command line and the initrd.
 */
#include "popek.h"

extern u32 entry_esi, entry_ebx, entry_ebp, entry_edi;
extern u32 entry_cs, entry_ds, entry_es, entry_ss, entry_eflags;

/* Offsets in boot_params (arch/x86/include/uapi/asm/bootparam.h). */
#define BP_E820_ENTRIES 0x1E8   /* u8 */
#define BP_BOOT_FLAG 0x1FE      /* u16, 0xAA55 */
#define BP_HEADER 0x202         /* u32, "HdrS" */
#define BP_VERSION 0x206        /* u16 */
#define BP_TYPE_OF_LOADER 0x210 /* u8 */
#define BP_LOADFLAGS 0x211      /* u8 */
#define BP_CODE32_START 0x214   /* u32 */
#define BP_RAMDISK_IMAGE 0x218  /* u32 */
#define BP_RAMDISK_SIZE 0x21C   /* u32 */
#define BP_CMD_LINE_PTR 0x228   /* u32 */
#define BP_CMDLINE_SIZE 0x238   /* u32 */
#define BP_E820_TABLE 0x2D0     /* 128 entries of 20 bytes */
#define E820_MAX 128
#define LOADED_HIGH 0x01
#define HDRS_MAGIC 0x53726448   /* "HdrS" */
#define KERNEL_START 0x100000

/* Entries are 4-byte aligned at best: read fields by bytes. */
static u32 rd(const u8 *bp, u32 off, u32 size)
{
	u32 v = 0;
	for (u32 i = 0; i < size; i++)
		v |= (u32)bp[off + i] << (8 * i);
	return v;
}

static u64 rd64(const u8 *bp, u32 off)
{
	return rd(bp, off, 4) | ((u64)rd(bp, off + 4, 4) << 32);
}

static const char *e820_name(u32 type)
{
	switch (type) {
	case 1: return "usable";
	case 2: return "reserved";
	case 3: return "ACPI data";
	case 4: return "ACPI NVS";
	case 5: return "unusable";
	default: return "other";
	}
}

/* Is [start, end) inside one usable e820 region? */
static int in_usable_ram(const u8 *bp, u32 n, u64 start, u64 end)
{
	for (u32 i = 0; i < n; i++) {
		u32 e = BP_E820_TABLE + 20 * i;
		u64 base = rd64(bp, e), size = rd64(bp, e + 8);
		if (rd(bp, e + 16, 4) == 1 && base <= start && end <= base + size)
			return 1;
	}
	return 0;
}

/*
 * Additive checksum of the bytes, four at a time: add the even and odd
 * bytes of each word into two 16-bit lanes (at most 0xFF * 128 per lane
 * before folding), which executes a quarter of the guest instructions a
 * byte loop would.
 */
static u32 byte_sum(const u8 *p, u32 n)
{
	u32 sum = 0;
	while (n >= 4) {
		u32 lanes = 0;
		u32 words = n / 4 < 128 ? n / 4 : 128;
		const u32 *w = (const u32 *)p;
		for (u32 i = 0; i < words; i++)
			lanes += (w[i] & 0x00FF00FF) + ((w[i] >> 8) & 0x00FF00FF);
		sum += (lanes & 0xFFFF) + (lanes >> 16);
		p += 4 * words;
		n -= 4 * words;
	}
	while (n--)
		sum += *p++;
	return sum;
}

void bz_main(void);

void bz_main(void)
{
	const u8 *bp = (const u8 *)entry_esi;

	uart_init();
	kprintf("hello from a popek bzImage guest\n");

	check_eq("entry CS is __BOOT_CS 0x10", entry_cs, 0x10);
	check_eq("entry DS is __BOOT_DS 0x18", entry_ds, 0x18);
	check_eq("entry ES is __BOOT_DS 0x18", entry_es, 0x18);
	check_eq("entry SS is __BOOT_DS 0x18", entry_ss, 0x18);
	check("entry EFLAGS has IF clear", !(entry_eflags & EFLAGS_IF));
	check("entry EBX, EBP and EDI are zero", !entry_ebx && !entry_ebp && !entry_edi);
	check("entry ESI points at boot_params (nonzero)", entry_esi != 0);

	check_eq("boot_params boot_flag is 0xAA55", rd(bp, BP_BOOT_FLAG, 2), 0xAA55);
	check_eq("boot_params header magic is \"HdrS\"", rd(bp, BP_HEADER, 4), HDRS_MAGIC);
	check_eq("boot_params protocol version is our 2.15", rd(bp, BP_VERSION, 2), 0x020F);
	check("type_of_loader was filled in (nonzero)", rd(bp, BP_TYPE_OF_LOADER, 1) != 0);
	check("loadflags has LOADED_HIGH", rd(bp, BP_LOADFLAGS, 1) & LOADED_HIGH);
	check_eq("code32_start is 0x100000", rd(bp, BP_CODE32_START, 4), KERNEL_START);

	u32 n = rd(bp, BP_E820_ENTRIES, 1);
	check("e820 table has 1..128 entries", n > 0 && n <= E820_MAX);
	if (n > E820_MAX)
		n = E820_MAX;
	for (u32 i = 0; i < n; i++) {
		u32 e = BP_E820_TABLE + 20 * i;
		u64 start = rd64(bp, e), size = rd64(bp, e + 8);
		u32 type = rd(bp, e + 16, 4);
		kprintf("e820: 0x%016llx-0x%016llx %s\n", start, start + size - 1, e820_name(type));
	}
	check("a usable e820 region holds the kernel at 0x100000",
	      in_usable_ram(bp, n, KERNEL_START, (u32)__end));

	/* An empty command line prints like a missing one. */
	u32 cmdline = rd(bp, BP_CMD_LINE_PTR, 4);
	if (cmdline && *(const char *)cmdline) {
		const char *s = (const char *)cmdline;
		u32 max = rd(bp, BP_CMDLINE_SIZE, 4);
		u32 len = 0;
		while (len <= max && s[len])
			len++;
		check("command line is NUL-terminated within cmdline_size", len <= max);
		puts("cmdline: ");
		for (u32 i = 0; i < len && i <= max; i++)
			putchar(s[i]);
		putchar('\n');
	} else {
		kprintf("cmdline: (none)\n");
	}

	u32 image = rd(bp, BP_RAMDISK_IMAGE, 4), size = rd(bp, BP_RAMDISK_SIZE, 4);
	if (image && size) {
		check("initrd lies in usable RAM", in_usable_ram(bp, n, image, (u64)image + size));
		check("initrd does not overlap the kernel", image >= (u32)__end || image + size <= KERNEL_START);
		kprintf("initrd: %u bytes, sum 0x%08x\n", size, byte_sum((const u8 *)image, size));
	} else {
		kprintf("initrd: (none)\n");
	}

	finish();
}
