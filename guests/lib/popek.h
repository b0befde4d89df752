/*
 * popek guest runtime: the small library every test guest links against.
 *
 * It gives a guest serial output, a printf-like formatter, the standard
 * descriptor tables, an interrupt stub table with a C dispatcher, and the
 * check/finish helpers that make every guest print the same kind of report:
 *
 *     ok   <what was checked>
 *     FAIL <what> (got 0x.., want 0x..)
 *     PASS n/n        (or FAIL k/n: k of n checks passed)
 *
 * and leave the VM through the isa-debug-exit port (0 = pass, 1 = fail).
 */
#ifndef POPEK_H
#define POPEK_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef int s32;

#define NULL ((void *)0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- port I/O ---------------------------------------------------------- */

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port)
{
	u8 v;
	__asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
	return v;
}

/* ---- the machine's devices (see crates/machine/src/devices) ------------ */

#define COM1 0x3F8           /* 16550A UART */
#define UART_LSR (COM1 + 5)  /* line status register */
#define UART_LSR_THRE 0x20   /* transmit holding register empty */
#define UART_SCR (COM1 + 7)  /* scratch register */
#define PIC1_CMD 0x20
#define PIC1_DATA 0x21
#define PIC2_CMD 0xA0
#define PIC2_DATA 0xA1
#define PIC_EOI 0x20
#define IRQ_BASE 0x20        /* vector of IRQ 0 after pic_init() */
#define PIT_CH0 0x40
#define PIT_CMD 0x43
#define PIT_HZ 1193182
#define CMOS_INDEX 0x70
#define CMOS_DATA 0x71
#define DEBUG_EXIT 0xF4      /* isa-debug-exit: value v ends the VM with status (v<<1)|1 */

/* ---- output ------------------------------------------------------------ */

void uart_init(void);
void putchar(char c);
void puts(const char *s); /* no newline added */
/* %c %s %d %u %x %X with optional '0' flag and width, 'll' for %llx. */
void kprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Like kprintf into buf (always NUL-terminated); returns the length. */
int ksnprintf(char *buf, u32 size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- checks ------------------------------------------------------------ */

/* Prints "ok   what" or "FAIL what". */
void check(const char *what, int passed);
/* Prints "ok   what" or "FAIL what (got 0x.., want 0x..)". */
void check_eq(const char *what, u32 got, u32 want);
/* Prints "ok   what" or "FAIL what (got "..", want "..")". */
void check_str(const char *what, const char *got, const char *want);
/* Prints PASS n/n or FAIL k/n; returns whether every check passed (for a
 * guest that leaves the VM some other way). */
int verdict(void);
/* Prints PASS n/n or FAIL k/n and leaves the VM through port 0xF4. */
void finish(void) __attribute__((noreturn));
/* Stops the CPU for good (used if the exit port did not stop the VM). */
void halt_forever(void) __attribute__((noreturn));

/* ---- strings (gcc may call these itself even when freestanding) ------- */

void *memset(void *d, int c, u32 n);
void *memcpy(void *d, const void *s, u32 n);
int memcmp(const void *a, const void *b, u32 n);
u32 strlen(const char *s);
int strcmp(const char *a, const char *b);
const char *strstr(const char *hay, const char *needle);

/* ---- descriptor tables ------------------------------------------------- */

/*
 * The standard GDT every multiboot guest loads (gdt_init). Indices 6 and up
 * are free for a guest's own descriptors (gdt_set). All standard
 * descriptors are created with the accessed bit already set, so the CPU
 * never writes them and their LAR values are fixed.
 */
#define GDT_ENTRIES 16
#define SEL_KCODE 0x08 /* flat 32-bit code, DPL 0 */
#define SEL_KDATA 0x10 /* flat data, DPL 0 */
#define SEL_UCODE 0x18 /* flat 32-bit code, DPL 3 (use with RPL 3: 0x1B) */
#define SEL_UDATA 0x20 /* flat data, DPL 3 (use with RPL 3: 0x23) */
#define SEL_TSS 0x28   /* the 32-bit TSS (tss_init) */

/* Access bytes (P, DPL, S, type). */
#define ACC_CODE_R 0x9B  /* present, DPL 0, code, execute/read, accessed */
#define ACC_DATA_W 0x93  /* present, DPL 0, data, read/write, accessed */
#define ACC_DPL(n) ((n) << 5)
#define ACC_TSS 0x89     /* present, DPL 0, 32-bit TSS, available */
#define ACC_LDT 0x82     /* present, DPL 0, LDT */
/* Flags nibble (G, D/B, L, AVL). */
#define FLAGS_4K_32 0xC  /* 4 KiB granularity, 32-bit */
#define FLAGS_BYTE_32 0x4 /* byte granularity, 32-bit */
#define FLAGS_SYS 0x0

extern u64 gdt[GDT_ENTRIES];
extern u64 idt[256];

struct __attribute__((packed)) dtr {
	u16 limit;
	u32 base;
};

u64 make_desc(u32 base, u32 limit, u8 access, u8 flags);
void gdt_set(int index, u32 base, u32 limit, u8 access, u8 flags);
/* Loads the standard GDT and reloads CS=0x08, DS=ES=FS=GS=SS=0x10. */
void gdt_init(void);
/* Points every IDT vector at its stub (interrupt gates, DPL 0) and loads it. */
void idt_init(void);
/* Gate attribute byte for vector: e.g. 0x8E (interrupt gate, DPL 0),
 * 0xEE (interrupt gate, DPL 3), 0x8F (trap gate, DPL 0). */
void idt_set_attr(int vector, u8 attr);

/* A 32-bit TSS (Intel SDM vol. 3 figure 8-2). */
struct __attribute__((packed)) tss {
	u32 link, esp0, ss0, esp1, ss1, esp2, ss2, cr3, eip, eflags;
	u32 eax, ecx, edx, ebx, esp, ebp, esi, edi;
	u32 es, cs, ss, ds, fs, gs, ldt;
	u16 trap, iomap_base;
};
extern struct tss tss;
/* Fills the TSS (SS0 = kernel data, ESP0 = esp0, I/O map base past the
 * limit so every port faults at CPL 3 with IOPL 0) and its descriptor. */
void tss_setup(u32 esp0);
/* tss_setup, then LTR. */
void tss_init(u32 esp0);

/* ---- interrupts -------------------------------------------------------- */

/*
 * What the stubs in isr.S save, lowest address first: the segment
 * registers, PUSHA's registers, the vector and error code, then the frame
 * the CPU pushed. user_esp/user_ss exist only when the interrupt came from
 * ring 3 (cs & 3). Handlers may change any field (eip to resume elsewhere).
 */
struct frame {
	u32 gs, fs, es, ds;
	u32 edi, esi, ebp, esp_pusha, ebx, edx, ecx, eax;
	u32 vector, error;
	u32 eip, cs, eflags;
	u32 user_esp, user_ss;
};

/* The stubs push this in place of an error code for vectors without one. */
#define NO_ERROR_CODE 0xFFFFFFFFu

typedef void (*handler_t)(struct frame *f);
void set_handler(int vector, handler_t h);

/* Remaps the PICs to vectors 0x20/0x28 and masks every line. */
void pic_init(void);
void pic_unmask(int irq);
void pic_mask(int irq);
void pic_eoi(int irq);

#define EFLAGS_CF 0x001
#define EFLAGS_FIXED 0x002 /* bit 1 always reads 1 */
#define EFLAGS_ZF 0x040
#define EFLAGS_TF 0x100
#define EFLAGS_IF 0x200
#define EFLAGS_OF 0x800
#define EFLAGS_IOPL 0x3000

static inline u32 read_eflags(void)
{
	u32 f;
	__asm__ volatile("pushfl; popl %0" : "=r"(f));
	return f;
}
static inline void cli(void) { __asm__ volatile("cli" ::: "memory"); }
static inline void sti(void) { __asm__ volatile("sti" ::: "memory"); }

/* ---- multiboot v1 (the loader's information structure) ----------------- */

#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define MBI_FLAG_MEM (1u << 0)
#define MBI_FLAG_CMDLINE (1u << 2)
#define MBI_FLAG_MODS (1u << 3)
#define MBI_FLAG_MMAP (1u << 6)
#define MBI_FLAG_LOADER_NAME (1u << 9)

struct multiboot_info {
	u32 flags, mem_lower, mem_upper, boot_device, cmdline;
	u32 mods_count, mods_addr, syms[4];
	u32 mmap_length, mmap_addr, drives_length, drives_addr;
	u32 config_table, boot_loader_name;
};

/* Every multiboot guest defines this; rt_start calls it after setting up
 * the UART, GDT, IDT and PIC, and calls finish() if it returns. */
void kmain(u32 magic, struct multiboot_info *mbi);

/* Whether `word` stands on the multiboot command line as a word of its own
 * ("xattack=a" does not hold "attack=a"). */
int cmdline_has_word(struct multiboot_info *mbi, const char *word);

/* Linker symbols. */
extern char __image_start[], __end[];

#endif
