/*
 * usermode: a kernel that runs code at ring 3.
 *
 * The kernel sets up a TSS (SS0:ESP0 for the stack switch, no I/O bitmap),
 * makes INT 0x80 callable from ring 3 (gate DPL 3) and IRETs into user
 * code. The user code computes a checksum, makes system calls, and tries
 * instructions that must fault at CPL 3 (CLI, HLT, IN, INT to a DPL-0
 * gate) or be silently ignored (POPF clearing IF). This is the ground the
 * BT engine covers with direct execution, so what it checks is exactly
 * what a deprivileged guest must not be able to tell apart from hardware.
 *
 * The PICs stay fully masked, so no interrupt arrives while IF=1.
 */
#include "popek.h"

#define SEL_UCODE_RPL3 (SEL_UCODE | 3)
#define SEL_UDATA_RPL3 (SEL_UDATA | 3)

/* System call numbers (EAX); arguments in EBX, ECX, EDX. */
#define SYS_WRITE 1  /* write(buf, len): the kernel prints it */
#define SYS_GETPID 2 /* returns USER_PID */
#define SYS_PROBE 3  /* registers the kernel checks (user.S) */
#define SYS_EXIT 4   /* exit(code): the kernel reports and ends the VM */
#define USER_PID 42

/* The user checksum: FNV-1a-like over 4000 bytes i & 0xFF. */
#define CHECKSUM_ROUNDS 4000
#define CHECKSUM_WANT 0x986ec8e5

static u8 kernel_stack[4096] __attribute__((aligned(16)));
static u8 user_stack[4096] __attribute__((aligned(16)));
#define KERNEL_STACK_TOP ((u32)kernel_stack + sizeof(kernel_stack))

void enter_user(void (*eip)(void), u32 esp) __attribute__((noreturn));
void user_cli(void), user_hlt(void), user_in(void), user_int81(void);
void user_probe_syscall(void);
extern char user_cli_fault[], user_hlt_fault[], user_in_fault[], user_int81_fault[];
extern u32 probe_user_esp;

/* ---- user side (runs at CPL 3) ------------------------------------------ */

/* What the user code observed, checked by the kernel at exit. */
static struct {
	u32 pid;
	u32 checksum;
	u32 flags_after_popf;
	u32 flags_after_cli;
	u32 write_result;
} seen;

/* Read through a volatile so gcc cannot fold the loop at compile time. */
static volatile u32 checksum_rounds = CHECKSUM_ROUNDS;

static u32 syscall3(u32 nr, u32 a, u32 b, u32 c)
{
	u32 ret;
	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return ret;
}

static void user_main(void)
{
	static const char msg[] = "hello from ring 3";

	seen.write_result = syscall3(SYS_WRITE, (u32)msg, sizeof(msg) - 1, 0);
	seen.pid = syscall3(SYS_GETPID, 0, 0, 0);

	u32 h = 2166136261u, n = checksum_rounds;
	for (u32 i = 0; i < n; i++) {
		h ^= i & 0xFF;
		h *= 16777619u;
	}
	seen.checksum = h;

	user_probe_syscall();

	/* At CPL 3 with IOPL 0, POPF leaves IF alone, silently. */
	u32 f;
	__asm__ volatile("pushfl; andl $~0x200, (%%esp); popfl; pushfl; popl %0" : "=r"(f));
	seen.flags_after_popf = f;

	user_cli();
	seen.flags_after_cli = read_eflags();
	user_hlt();
	user_in();
	user_int81();

	syscall3(SYS_EXIT, 0, 0, 0);
	for (;;)
		; /* not reached: exit ends the VM */
}

/* ---- kernel side ------------------------------------------------------- */

static u32 cpl(void)
{
	u32 cs = 0;
	__asm__ volatile("movw %%cs, %w0" : "+r"(cs));
	return cs & 3;
}

static void check_probe(struct frame *f)
{
	check_eq("syscall arrives at CPL 0", cpl(), 0);
	check_eq("syscall saved CS is the user's 0x1B (RPL 3)", f->cs & 0xFFFF, SEL_UCODE_RPL3);
	check_eq("syscall saved SS is the user's 0x23", f->user_ss & 0xFFFF, SEL_UDATA_RPL3);
	check_eq("syscall saved ESP is the user's ESP at INT 0x80", f->user_esp, probe_user_esp);
	check_eq("the CPU switched to ESP0: the frame ends exactly at ESP0", (u32)(f + 1), KERNEL_STACK_TOP);
	check("syscall saved EFLAGS: IF set, IOPL 0",
	      (f->eflags & EFLAGS_IF) && !(f->eflags & EFLAGS_IOPL));
	check_eq("syscall EAX is the call number", f->eax, SYS_PROBE);
	check_eq("syscall EBX is the user's", f->ebx, 0x11111111);
	check_eq("syscall ECX is the user's", f->ecx, 0x22222222);
	check_eq("syscall EDX is the user's", f->edx, 0x33333333);
	check_eq("syscall ESI is the user's", f->esi, 0x44444444);
	check_eq("syscall EDI is the user's", f->edi, 0x55555555);
	check_eq("syscall DS was the user's 0x23", f->ds & 0xFFFF, SEL_UDATA_RPL3);
}

static void report_and_exit(u32 code)
{
	check_eq("exit code is 0", code, 0);
	check_eq("write returned the length written", seen.write_result, 17);
	check_eq("getpid returned 42 in EAX", seen.pid, USER_PID);
	check_eq("ring-3 checksum loop (4000 rounds)", seen.checksum, CHECKSUM_WANT);
	check("POPF at CPL 3 cannot clear IF", seen.flags_after_popf & EFLAGS_IF);
	check("CLI at CPL 3 left IF set", seen.flags_after_cli & EFLAGS_IF);
	finish();
}

static void on_syscall(struct frame *f)
{
	switch (f->eax) {
	case SYS_WRITE: {
		const char *buf = (const char *)f->ebx;
		puts("user: ");
		for (u32 i = 0; i < f->ecx; i++)
			putchar(buf[i]);
		putchar('\n');
		check_eq("write: saved CS has RPL 3", f->cs & 3, 3);
		f->eax = f->ecx;
		break;
	}
	case SYS_GETPID:
		f->eax = USER_PID;
		break;
	case SYS_PROBE:
		check_probe(f);
		break;
	case SYS_EXIT:
		report_and_exit(f->ebx);
		break;
	default:
		f->eax = (u32)-1;
		break;
	}
}

/* The ring-3 instructions that must raise #GP, and how to skip each. */
static const struct {
	const char *name;
	const char *at;
	u32 length;
	u32 error;
} gp_sites[] = {
	{ "CLI", user_cli_fault, 1, 0 },
	{ "HLT", user_hlt_fault, 1, 0 },
	{ "IN", user_in_fault, 1, 0 },
	{ "INT 0x81 (gate DPL 0)", user_int81_fault, 2, (0x81 << 3) | 2 },
};

static void on_gp(struct frame *f)
{
	char what[96];

	for (u32 i = 0; i < ARRAY_SIZE(gp_sites); i++) {
		if (f->eip != (u32)gp_sites[i].at)
			continue;
		ksnprintf(what, sizeof(what), "%s at CPL 3 raises #GP(0x%x)", gp_sites[i].name, gp_sites[i].error);
		check_eq(what, f->error, gp_sites[i].error);
		ksnprintf(what, sizeof(what), "%s #GP: saved CS 0x1B (RPL 3)", gp_sites[i].name);
		check_eq(what, f->cs & 0xFFFF, SEL_UCODE_RPL3);
		f->eip += gp_sites[i].length;
		return;
	}
	ksnprintf(what, sizeof(what), "#GP at an unexpected place %04x:%08x, error code 0x%x",
		  f->cs & 0xFFFF, f->eip, f->error);
	check(what, 0);
	finish();
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	(void)mbi;

	kprintf("usermode: ring 3, system calls and the TSS stack switch\n");
	tss_init(KERNEL_STACK_TOP);
	idt_set_attr(0x80, 0xEE); /* interrupt gate, DPL 3: INT 0x80 allowed from ring 3 */
	set_handler(0x80, on_syscall);
	set_handler(13, on_gp);
	enter_user(user_main, (u32)user_stack + sizeof(user_stack));
}
