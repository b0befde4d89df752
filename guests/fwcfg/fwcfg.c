/*
 * fwcfg: QEMU's firmware configuration device, as a guest written for
 * QEMU probes it (docs/specs/fw_cfg.rst in QEMU): a 16-bit selector at
 * port 0x510, data bytes at 0x511.
 *
 * Checks the signature, the ID (traditional interface; no DMA under
 * popek), the RAM size against the multiboot memory map, the CPU counts,
 * the command line against the multiboot one, rewinding and unknown keys,
 * and the file directory (big-endian), whose etc/e820 must describe RAM
 * that holds every usable range of the multiboot map.
 *
 * QEMU fills the command-line keys only for Linux kernels (a multiboot
 * kernel's goes to its option ROM); popek fills them for every kernel, so
 * under QEMU those checks are skipped, and said so.
 */
#include "popek.h"

#define FW_CFG_SELECTOR 0x510
#define FW_CFG_DATA 0x511

#define KEY_SIGNATURE 0x00
#define KEY_ID 0x01
#define KEY_RAM_SIZE 0x03
#define KEY_NB_CPUS 0x05
#define KEY_MAX_CPUS 0x0F
#define KEY_CMDLINE_SIZE 0x14
#define KEY_CMDLINE_DATA 0x15
#define KEY_FILE_DIR 0x19
#define KEY_FILE_FIRST 0x20
#define KEY_UNKNOWN 0x3777

#define ID_TRADITIONAL 0x1
#define ID_DMA 0x2
#define FILE_NAME_LEN 56
#define E820_ENTRY_LEN 20
#define E820_RAM 1
#define MiB (1024u * 1024u)

static inline void outw(u16 port, u16 v) { __asm__ volatile("outw %0, %1" : : "a"(v), "Nd"(port)); }

static void fw_select(u16 key)
{
	outw(FW_CFG_SELECTOR, key);
}

static void fw_read(void *buf, u32 n)
{
	u8 *b = buf;
	for (u32 i = 0; i < n; i++)
		b[i] = inb(FW_CFG_DATA);
}

static u32 fw_u32(u16 key)
{
	u32 v;
	fw_select(key);
	fw_read(&v, 4);
	return v;
}

static u16 fw_u16(u16 key)
{
	u16 v;
	fw_select(key);
	fw_read(&v, 2);
	return v;
}

static u32 be32(const u8 *b)
{
	return ((u32)b[0] << 24) | ((u32)b[1] << 16) | ((u32)b[2] << 8) | b[3];
}

static u16 be16(const u8 *b)
{
	return (u16)((b[0] << 8) | b[1]);
}

static int on_popek;

static void popek_only(const char *what)
{
	kprintf("note %s: checked under popek only (QEMU 7.2 TCG does not)\n", what);
}

/* The multiboot map's usable ranges. */
struct range {
	u64 start, end;
};
static struct range usable[32];
static u32 usable_count;

struct __attribute__((packed)) mmap_entry {
	u32 size;
	u64 addr, len;
	u32 type;
};

static void read_multiboot_map(struct multiboot_info *mbi)
{
	u32 at = mbi->mmap_addr, end = mbi->mmap_addr + mbi->mmap_length;
	while (at < end && usable_count < ARRAY_SIZE(usable)) {
		const struct mmap_entry *e = (const void *)at;
		if (e->type == E820_RAM && e->len) {
			usable[usable_count].start = e->addr;
			usable[usable_count].end = e->addr + e->len;
			usable_count++;
		}
		at += e->size + 4;
	}
}

static void test_signature_and_id(void)
{
	char sig[5] = { 0 };
	fw_select(KEY_SIGNATURE);
	fw_read(sig, 4);
	check_str("signature", sig, "QEMU");

	/* Selecting again rewinds; reading on past the end gives zeros. */
	fw_select(KEY_SIGNATURE);
	fw_read(sig, 2);
	fw_select(KEY_SIGNATURE);
	u8 more[6];
	fw_read(more, 6);
	check("selecting again starts the item over", !memcmp(more, "QEMU", 4));
	check("reads past the item's end are zero", more[4] == 0 && more[5] == 0);
	check_eq("an unknown key reads as zeros", fw_u32(KEY_UNKNOWN), 0);

	u32 id = fw_u32(KEY_ID);
	check("ID: the traditional interface", (id & ID_TRADITIONAL) != 0);
	if (on_popek)
		check_eq("ID: no DMA interface (popek has none)", id & ID_DMA, 0);
	else
		popek_only("ID without DMA");
}

static void test_ram_size(struct multiboot_info *mbi)
{
	u64 ram;
	fw_select(KEY_RAM_SIZE);
	fw_read(&ram, 8);
	kprintf("fw_cfg RAM size %u MiB\n", (u32)(ram / MiB));
	check("the multiboot map has usable RAM", usable_count > 0);
	u64 top = 0;
	for (u32 i = 0; i < usable_count; i++)
		if (usable[i].end > top)
			top = usable[i].end;
	check("RAM size covers every usable range of the multiboot map", ram >= top);
	/* QEMU's firmware reserves a little at the top of RAM for itself. */
	check("RAM size is the map's top of usable RAM, give or take 1 MiB", ram - top < MiB);
	check("RAM size agrees with mem_upper", (ram - MiB) / 1024 >= mbi->mem_upper);
	if (on_popek)
		check("RAM size is exactly the map's top of usable RAM", ram == top);
	else
		popek_only("RAM size exactly the map's top");
}

static void test_cpus(void)
{
	check_eq("CPU count", fw_u16(KEY_NB_CPUS), 1);
	check_eq("maximum CPU count", fw_u16(KEY_MAX_CPUS), 1);
}

static void test_cmdline(struct multiboot_info *mbi)
{
	const char *mb = (mbi->flags & MBI_FLAG_CMDLINE) ? (const char *)mbi->cmdline : "";
	u32 size = fw_u32(KEY_CMDLINE_SIZE);
	if (size == 0 && !on_popek) {
		popek_only("the command line (QEMU gives a multiboot kernel's to its option ROM only)");
		return;
	}
	check_eq("command line size counts the NUL", size, strlen(mb) + 1);
	static char line[1024];
	if (size > sizeof(line))
		size = sizeof(line);
	fw_select(KEY_CMDLINE_DATA);
	fw_read(line, size);
	line[sizeof(line) - 1] = 0;
	check_str("command line is the multiboot one", line, mb);
}

/* A RAM entry of etc/e820 that holds [start, end). */
static u8 e820[E820_ENTRY_LEN * 64];
static u32 e820_len;

static int e820_holds(u64 start, u64 end)
{
	for (u32 at = 0; at + E820_ENTRY_LEN <= e820_len; at += E820_ENTRY_LEN) {
		u64 addr, len;
		u32 type;
		memcpy(&addr, e820 + at, 8);
		memcpy(&len, e820 + at + 8, 8);
		memcpy(&type, e820 + at + 16, 4);
		if (type == E820_RAM && start >= addr && end <= addr + len)
			return 1;
	}
	return 0;
}

static int nul_terminated(const char *name)
{
	for (u32 i = 0; i < FILE_NAME_LEN; i++)
		if (!name[i])
			return 1;
	return 0;
}

static void test_files(void)
{
	u8 word[4];
	fw_select(KEY_FILE_DIR);
	fw_read(word, 4);
	u32 count = be32(word);
	kprintf("fw_cfg file directory: %u files\n", count);
	check("file directory: a count (big-endian) of at least one, not absurd",
	      count >= 1 && count < 0x1000);
	u32 bad = 0, e820_key = 0, e820_size = 0;
	for (u32 i = 0; i < count && i < 0x1000; i++) {
		u8 entry[8 + FILE_NAME_LEN];
		fw_read(entry, sizeof(entry));
		u32 size = be32(entry);
		u16 key = be16(entry + 4);
		const char *name = (const char *)entry + 8;
		int terminated = nul_terminated(name);
		if (key < KEY_FILE_FIRST || !terminated)
			bad++;
		if (terminated && !strcmp(name, "etc/e820")) {
			e820_key = key;
			e820_size = size;
		}
	}
	check_eq("file directory: every entry has a file key and a NUL-terminated name", bad, 0);
	check("file directory names etc/e820", e820_key != 0);
	if (!e820_key)
		return;
	check("etc/e820 holds whole 20-byte entries",
	      e820_size && e820_size % E820_ENTRY_LEN == 0 && e820_size <= sizeof(e820));
	e820_len = e820_size <= sizeof(e820) ? e820_size : 0;
	fw_select((u16)e820_key);
	fw_read(e820, e820_len);
	u32 missing = 0;
	for (u32 i = 0; i < usable_count; i++)
		if (!e820_holds(usable[i].start, usable[i].end))
			missing++;
	check_eq("etc/e820's RAM holds every usable range of the multiboot map", missing, 0);
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	u32 r[4];
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(0x40000000), "c"(0));
	on_popek = !memcmp(&r[1], "PopekPopekVM", 12);
	kprintf("fwcfg: QEMU's firmware configuration at 0x%x (%s)\n", FW_CFG_SELECTOR,
		on_popek ? "popek" : "not popek");
	read_multiboot_map(mbi);
	test_signature_and_id();
	test_ram_size(mbi);
	test_cpus();
	test_cmdline(mbi);
	test_files();
}
