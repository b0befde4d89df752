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
 * Where CPUID advertises SEP, a SYSENTER reaches the kernel's entry with
 * the registers as the user left them and comes back by SYSEXIT, and one
 * with IA32_SYSENTER_CS null raises #GP(0); without SEP it must fault.
 * Before that, the kernel's own SYSEXIT with IA32_SYSENTER_CS null raises
 * #GP(0) (#UD without SEP).
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
#define SYS_FAST 5   /* through SYSENTER: the registers the kernel checks */
#define SYS_NO_SYSENTER 6 /* IA32_SYSENTER_CS := 0, so SYSENTER raises #GP */
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
u32 user_sysenter(void);
void sysenter_entry(void);
extern char user_sysenter_return[];
extern u32 sysenter_user_esp;

#define MSR_SYSENTER_CS 0x174
#define MSR_SYSENTER_ESP 0x175
#define MSR_SYSENTER_EIP 0x176
#define CPUID_SEP (1u << 11)
/* What on_sysenter puts in EAX, and what a fault handler puts there when
 * it resumes after a SYSENTER that faulted. */
#define SYSENTER_RESULT 0x5EE
#define SYSENTER_FAULTED 0xFA17

static u8 sysenter_stack[1024] __attribute__((aligned(16)));
#define SYSENTER_STACK_TOP ((u32)sysenter_stack + sizeof(sysenter_stack))

/* Set by the kernel before it enters user code. */
static u32 sep;
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
	u32 sysenter_result;
	u32 no_sysenter_result;
} seen;

/* Whether the next fault of user code may be a SYSENTER's (the last
 * SYSENTER faults either way), and the vector and error code it raised. */
static u32 sysenter_fault_expected, sysenter_fault, sysenter_fault_error;

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

	if (sep) {
		seen.sysenter_result = user_sysenter();
		/* What SYSEXIT loaded shows in the next system call's frame
		 * (read at CPL 3, a selector may show the monitor's). */
		syscall3(SYS_NO_SYSENTER, 0, 0, 0);
	}
	seen.no_sysenter_result = user_sysenter();

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

static void wrmsr(u32 msr, u32 v)
{
	__asm__ volatile("wrmsr" : : "c"(msr), "a"(v), "d"(0));
}

static u32 cpl(void)
{
	u32 cs = 0;
	__asm__ volatile("movw %%cs, %w0" : "+r"(cs));
	return cs & 3;
}

/* EBX, ECX, EDX, ESI and EDI as user_main loaded them before its call
 * (`how`: "syscall" or "SYSENTER"). */
static void check_user_registers(const char *how, u32 ebx, u32 ecx, u32 edx, u32 esi, u32 edi)
{
	static const char *const names[] = { "EBX", "ECX", "EDX", "ESI", "EDI" };
	static const u32 want[] = { 0x11111111, 0x22222222, 0x33333333, 0x44444444, 0x55555555 };
	const u32 got[] = { ebx, ecx, edx, esi, edi };
	char what[64];

	for (u32 i = 0; i < ARRAY_SIZE(names); i++) {
		ksnprintf(what, sizeof(what), "%s %s is the user's", how, names[i]);
		check_eq(what, got[i], want[i]);
	}
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
	check_user_registers("syscall", f->ebx, f->ecx, f->edx, f->esi, f->edi);
	check_eq("syscall DS was the user's 0x23", f->ds & 0xFFFF, SEL_UDATA_RPL3);
}

/* The frame sysenter_entry builds: PUSHAL under PUSHFL. */
struct sysenter_frame {
	u32 edi, esi, ebp, esp, ebx, edx, ecx, eax;
	u32 eflags;
};

void on_sysenter(struct sysenter_frame *f)
{
	u32 cs = 0, ss = 0;
	__asm__ volatile("movw %%cs, %w0; movw %%ss, %w1" : "+r"(cs), "+r"(ss));
	check_eq("SYSENTER arrives at CPL 0 on IA32_SYSENTER_CS", cs, SEL_KCODE);
	check_eq("SYSENTER SS is IA32_SYSENTER_CS + 8", ss, SEL_KDATA);
	check_eq("SYSENTER ESP is IA32_SYSENTER_ESP", (u32)(f + 1), SYSENTER_STACK_TOP);
	check("SYSENTER clears IF", !(f->eflags & EFLAGS_IF));
	check_eq("SYSENTER EAX is the user's", f->eax, SYS_FAST);
	check_user_registers("SYSENTER", f->ebx, f->ecx, f->edx, f->esi, f->edi);
	check_eq("SYSENTER EBP is the user's (its ESP)", f->ebp, sysenter_user_esp);
	f->eax = SYSENTER_RESULT;
}

/* A fault of a SYSENTER that was expected to fault: noted, and user code
 * resumes after it. The saved EIP and ESP are not checked: under popek on
 * Intel hosts the host's SYSENTER path keeps neither (docs/bt.md). */
static int sysenter_faulted(struct frame *f)
{
	if (!sysenter_fault_expected || sysenter_fault)
		return 0;
	sysenter_fault = f->vector;
	sysenter_fault_error = f->error;
	check_eq("the SYSENTER fault came from CPL 3", f->cs & 3, 3);
	f->eip = (u32)user_sysenter_return;
	f->user_esp = sysenter_user_esp;
	f->eax = SYSENTER_FAULTED;
	return 1;
}

/* A SYSEXIT at CPL 0 that must fault (IA32_SYSENTER_CS still null, or
 * no SEP): the handler notes the fault and resumes after it. popek's
 * engine carries SYSEXIT out on a path of its own and hands the faulting
 * case to its general one. */
static volatile u32 ksysexit_expected, ksysexit_vector, ksysexit_error;
extern char ksysexit_at[], ksysexit_after[];

static int ksysexit_faulted(struct frame *f)
{
	if (!ksysexit_expected || f->eip != (u32)ksysexit_at)
		return 0;
	ksysexit_expected = 0;
	ksysexit_vector = f->vector;
	ksysexit_error = f->error;
	f->eip = (u32)ksysexit_after;
	return 1;
}

static void probe_kernel_sysexit(void)
{
	ksysexit_expected = 1;
	__asm__ volatile("xor %%ecx, %%ecx\n\t"
			 "xor %%edx, %%edx\n\t"
			 ".globl ksysexit_at\n"
			 "ksysexit_at:\n\t"
			 "sysexit\n"
			 ".globl ksysexit_after\n"
			 "ksysexit_after:\n"
			 : : : "ecx", "edx", "memory");
	check("SYSEXIT at CPL 0 faulted", !ksysexit_expected && ksysexit_vector);
	if (sep)
		check("SYSEXIT with IA32_SYSENTER_CS null raises #GP(0)",
		      ksysexit_vector == 13 && ksysexit_error == 0);
	else
		/* As for SYSENTER: a CPU that has it anyway raises #GP(0). */
		check("SYSEXIT without SEP raises #UD (or #GP(0))",
		      ksysexit_vector == 6 || (ksysexit_vector == 13 && ksysexit_error == 0));
}

static void on_ud(struct frame *f)
{
	if (ksysexit_faulted(f))
		return;
	if (sysenter_faulted(f))
		return;
	check("#UD at an unexpected place", 0);
	finish();
}

static void report_and_exit(u32 code)
{
	check_eq("exit code is 0", code, 0);
	check_eq("write returned the length written", seen.write_result, 17);
	check_eq("getpid returned 42 in EAX", seen.pid, USER_PID);
	check_eq("ring-3 checksum loop (4000 rounds)", seen.checksum, CHECKSUM_WANT);
	check("POPF at CPL 3 cannot clear IF", seen.flags_after_popf & EFLAGS_IF);
	check("CLI at CPL 3 left IF set", seen.flags_after_cli & EFLAGS_IF);
	if (sep) {
		check_eq("SYSEXIT returns on_sysenter's EAX", seen.sysenter_result, SYSENTER_RESULT);
		check_eq("SYSENTER with IA32_SYSENTER_CS null faulted", seen.no_sysenter_result, SYSENTER_FAULTED);
		check_eq("SYSENTER with IA32_SYSENTER_CS null raises #GP(0)",
			 sysenter_fault == 13 && sysenter_fault_error == 0, 1);
	} else {
		kprintf("CPUID has no SEP: SYSENTER must fault\n");
		check_eq("SYSENTER without SEP faulted", seen.no_sysenter_result, SYSENTER_FAULTED);
		/* #UD as the CPU model has it; a CPU that has SYSENTER anyway
		 * (KVM's) raises #GP(0) for the null IA32_SYSENTER_CS. */
		check("SYSENTER without SEP raises #UD (or #GP(0))",
		      sysenter_fault == 6 || (sysenter_fault == 13 && sysenter_fault_error == 0));
	}
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
	case SYS_NO_SYSENTER:
		check_eq("SYSEXIT CS is IA32_SYSENTER_CS + 16, RPL 3", f->cs & 0xFFFF, SEL_UCODE_RPL3);
		check_eq("SYSEXIT SS is IA32_SYSENTER_CS + 24, RPL 3", f->user_ss & 0xFFFF, SEL_UDATA_RPL3);
		wrmsr(MSR_SYSENTER_CS, 0);
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

	if (ksysexit_faulted(f))
		return;
	if (sysenter_faulted(f))
		return;
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
	set_handler(6, on_ud);
	u32 a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	sep = d & CPUID_SEP;
	probe_kernel_sysexit();
	/* Either way the last SYSENTER faults: without SEP at once, with it
	 * once SYS_NO_SYSENTER has cleared IA32_SYSENTER_CS. */
	sysenter_fault_expected = 1;
	if (sep) {
		wrmsr(MSR_SYSENTER_CS, SEL_KCODE);
		wrmsr(MSR_SYSENTER_ESP, SYSENTER_STACK_TOP);
		wrmsr(MSR_SYSENTER_EIP, (u32)sysenter_entry);
	}
	enter_user(user_main, (u32)user_stack + sizeof(user_stack));
}
