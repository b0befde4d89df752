/*
 * lowload: a multiboot kernel linked at 0x10000 (guests/build.rs,
 * LINK_ADDRESSES), below 1 MiB, as small test kernels often are (not at
 * 0x8000: QEMU keeps its multiboot information at 0x9000). Its
 * initialised data reaches past 0x30000, over the block where popek's
 * loader keeps its boot data by default (0x1000..0x30000), so the loader
 * has to put that data somewhere else.
 *
 * Checks that the kernel runs where it was linked, that none of its bytes
 * were overwritten (a large pattern in .data), that every piece of boot
 * data the information structure points to (itself, the memory map, the
 * command line, the loader name, the module list and modules) lies in
 * usable RAM of the map, clear of the kernel image and of the BIOS data
 * area, and that the kernel works there (an exception through its IDT).
 */
#include "popek.h"

#define LINK_BASE 0x10000u
/* The loader's default boot-data block. */
#define DEFAULT_AREA_END 0x30000u
/* The IVT and the BIOS data area. */
#define FIRMWARE_LOW_END 0x500u
#define E820_RAM 1

/* 160 KiB of a known word: the image then runs past 0x30000. */
#define PATTERN 0x5AA5C33Cu
#define PATTERN_WORDS (160 * 1024 / 4)
static volatile u32 pattern[PATTERN_WORDS] = { [0 ... PATTERN_WORDS - 1] = PATTERN };

struct __attribute__((packed)) mmap_entry {
	u32 size;
	u64 addr, len;
	u32 type;
};

struct __attribute__((packed)) module {
	u32 start, end, string, reserved;
};

static struct multiboot_info *info;

/* Whether [start, end) lies in one usable range of the multiboot map. */
static int in_usable_ram(u32 start, u32 end)
{
	u32 at = info->mmap_addr, stop = info->mmap_addr + info->mmap_length;
	while (at < stop) {
		const struct mmap_entry *e = (const void *)at;
		if (e->type == E820_RAM && start >= e->addr && (u64)end <= e->addr + e->len)
			return 1;
		at += e->size + 4;
	}
	return 0;
}

/* Checks that the loader's [start, start + len) is in usable RAM, clear
 * of the kernel image and the BIOS data area. */
static void check_placed(const char *what, u32 start, u32 len)
{
	u32 end = start + len;
	u32 image_start = (u32)__image_start, image_end = (u32)__end;
	char buf[112];
	ksnprintf(buf, sizeof(buf), "%s (%08x..%08x) is clear of the kernel (%08x..%08x)", what,
		  start, end, image_start, image_end);
	check(buf, end <= image_start || start >= image_end);
	ksnprintf(buf, sizeof(buf), "%s is in usable RAM above the BIOS data area", what);
	check(buf, start >= FIRMWARE_LOW_END && in_usable_ram(start, end));
}

static volatile u32 breakpoints, breakpoint_eip;
extern char after_int3[];

static void on_breakpoint(struct frame *f)
{
	breakpoints++;
	breakpoint_eip = f->eip;
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	info = mbi;
	kprintf("lowload: a multiboot kernel at 0x%x..0x%x\n", (u32)__image_start, (u32)__end);
	check_eq("multiboot magic", magic, MULTIBOOT_BOOTLOADER_MAGIC);
	check_eq("linked and loaded at 0x10000", (u32)__image_start, LINK_BASE);
	check("running below 1 MiB", (u32)kmain < 0x100000);
	check("the image covers the loader's default boot data block",
	      (u32)__end > DEFAULT_AREA_END);
	u32 changed = 0;
	for (u32 i = 0; i < PATTERN_WORDS; i++)
		changed += pattern[i] != PATTERN;
	check_eq("no word of the kernel's data was overwritten", changed, 0);

	check("the information structure has a memory map", (mbi->flags & MBI_FLAG_MMAP) != 0);
	check_placed("the information structure", (u32)mbi, sizeof(*mbi));
	check_placed("the memory map", mbi->mmap_addr, mbi->mmap_length);
	check("the kernel lies in usable RAM of the map",
	      in_usable_ram((u32)__image_start, (u32)__end));
	if (mbi->flags & MBI_FLAG_CMDLINE) {
		const char *cmdline = (const char *)mbi->cmdline;
		check_placed("the command line", mbi->cmdline, strlen(cmdline) + 1);
	}
	if (mbi->flags & MBI_FLAG_LOADER_NAME) {
		const char *name = (const char *)mbi->boot_loader_name;
		check_placed("the boot loader name", mbi->boot_loader_name, strlen(name) + 1);
	}
	if ((mbi->flags & MBI_FLAG_MODS) && mbi->mods_count) {
		const struct module *m = (const void *)mbi->mods_addr;
		check_placed("the module list", mbi->mods_addr, mbi->mods_count * sizeof(*m));
		check_placed("the first module", m->start, m->end - m->start);
	}
	check("mem_lower says 639 KiB or so", mbi->mem_lower >= 600 && mbi->mem_lower <= 640);

	set_handler(3, on_breakpoint);
	__asm__ volatile("int3\n\t.globl after_int3\nafter_int3:" ::: "memory");
	check_eq("an exception through the IDT of a kernel below 1 MiB", breakpoints, 1);
	check_eq("its frame's EIP is the one after INT3", breakpoint_eip, (u32)after_int3);
}
