/*
 * Descriptor tables, the TSS, the 8259A PICs and the interrupt dispatcher.
 */
#include "popek.h"

u64 gdt[GDT_ENTRIES] __attribute__((aligned(8)));
u64 idt[256] __attribute__((aligned(8)));
struct tss tss __attribute__((aligned(16)));

static handler_t handlers[256];

/* Packs a segment descriptor (Intel SDM vol. 3 figure 3-8). */
u64 make_desc(u32 base, u32 limit, u8 access, u8 flags)
{
	u32 lo = (limit & 0xFFFF) | (base << 16);
	u32 hi = ((base >> 16) & 0xFF) | ((u32)access << 8) | (limit & 0xF0000) |
		 ((u32)(flags & 0xF) << 20) | (base & 0xFF000000);
	return ((u64)hi << 32) | lo;
}

void gdt_set(int index, u32 base, u32 limit, u8 access, u8 flags)
{
	gdt[index] = make_desc(base, limit, access, flags);
}

void gdt_init(void)
{
	gdt[0] = 0;
	gdt_set(SEL_KCODE >> 3, 0, 0xFFFFF, ACC_CODE_R, FLAGS_4K_32);
	gdt_set(SEL_KDATA >> 3, 0, 0xFFFFF, ACC_DATA_W, FLAGS_4K_32);
	gdt_set(SEL_UCODE >> 3, 0, 0xFFFFF, ACC_CODE_R | ACC_DPL(3), FLAGS_4K_32);
	gdt_set(SEL_UDATA >> 3, 0, 0xFFFFF, ACC_DATA_W | ACC_DPL(3), FLAGS_4K_32);

	struct dtr d = { sizeof(gdt) - 1, (u32)gdt };
	/* The loader's selectors may differ from ours: reload every one. */
	__asm__ volatile("lgdt %0\n\t"
			 "ljmp %1, $1f\n"
			 "1:\n\t"
			 "movw %w2, %%ds\n\t"
			 "movw %w2, %%es\n\t"
			 "movw %w2, %%fs\n\t"
			 "movw %w2, %%gs\n\t"
			 "movw %w2, %%ss"
			 :
			 : "m"(d), "i"(SEL_KCODE), "r"(SEL_KDATA)
			 : "memory");
}

/* The stubs in isr.S, 16 bytes apart. */
extern char isr_stubs[];

static u64 make_gate(u32 offset, u16 selector, u8 attr)
{
	u32 lo = (offset & 0xFFFF) | ((u32)selector << 16);
	u32 hi = (offset & 0xFFFF0000) | ((u32)attr << 8);
	return ((u64)hi << 32) | lo;
}

void idt_init(void)
{
	for (int v = 0; v < 256; v++)
		idt[v] = make_gate((u32)isr_stubs + 16 * v, SEL_KCODE, 0x8E);
	struct dtr d = { sizeof(idt) - 1, (u32)idt };
	__asm__ volatile("lidt %0" : : "m"(d));
}

void idt_set_attr(int vector, u8 attr)
{
	idt[vector] = make_gate((u32)isr_stubs + 16 * vector, SEL_KCODE, attr);
}

void set_handler(int vector, handler_t h)
{
	handlers[vector] = h;
}

void tss_setup(u32 esp0)
{
	memset(&tss, 0, sizeof(tss));
	tss.ss0 = SEL_KDATA;
	tss.esp0 = esp0;
	/* Past the limit: no I/O permission bitmap, so at CPL 3 with IOPL 0
	 * every IN/OUT raises #GP(0). */
	tss.iomap_base = sizeof(tss);
	gdt_set(SEL_TSS >> 3, (u32)&tss, sizeof(tss) - 1, ACC_TSS, FLAGS_SYS);
}

void tss_init(u32 esp0)
{
	tss_setup(esp0);
	__asm__ volatile("ltr %w0" : : "r"(SEL_TSS) : "memory");
}

void pic_init(void)
{
	/* ICW1: edge triggered, cascade, ICW4 follows. */
	outb(PIC1_CMD, 0x11);
	outb(PIC2_CMD, 0x11);
	/* ICW2: vector bases, clear of the CPU's exception vectors. */
	outb(PIC1_DATA, IRQ_BASE);
	outb(PIC2_DATA, IRQ_BASE + 8);
	/* ICW3: slave on master input 2; slave identity 2. */
	outb(PIC1_DATA, 0x04);
	outb(PIC2_DATA, 0x02);
	/* ICW4: 8086 mode, normal EOI. */
	outb(PIC1_DATA, 0x01);
	outb(PIC2_DATA, 0x01);
	/* Mask everything; guests unmask what they test. */
	outb(PIC1_DATA, 0xFF);
	outb(PIC2_DATA, 0xFF);
}

void pic_unmask(int irq)
{
	u16 port = irq < 8 ? PIC1_DATA : PIC2_DATA;
	outb(port, inb(port) & ~(1 << (irq & 7)));
}

void pic_mask(int irq)
{
	u16 port = irq < 8 ? PIC1_DATA : PIC2_DATA;
	outb(port, inb(port) | (1 << (irq & 7)));
}

void pic_eoi(int irq)
{
	if (irq >= 8)
		outb(PIC2_CMD, PIC_EOI);
	outb(PIC1_CMD, PIC_EOI);
}

/* Called by isr_common for every interrupt and exception. */
void isr_dispatch(struct frame *f)
{
	if (handlers[f->vector]) {
		handlers[f->vector](f);
		return;
	}
	/* A spurious IRQ 7 or 15 is no error: the PIC says "nothing". */
	if (f->vector == IRQ_BASE + 7)
		return;
	if (f->vector == IRQ_BASE + 15) {
		outb(PIC1_CMD, PIC_EOI);
		return;
	}
	char what[96];
	ksnprintf(what, sizeof(what), "unexpected vector %u at %04x:%08x, error code %x",
		  f->vector, f->cs & 0xFFFF, f->eip, f->error);
	check(what, 0);
	finish();
}
