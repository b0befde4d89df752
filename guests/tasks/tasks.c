/*
 * tasks: hardware task switching, as a 32-bit protected-mode kernel that
 * uses it would (Linux i386 takes double faults through a task gate).
 *
 * The running ("main") task is the runtime's TSS at 0x28. Other tasks
 * start at task_body (switch.S), which records the registers it finds,
 * runs a hook and leaves with known registers, by JMP or by IRET with NT.
 * Each check compares registers, EFLAGS, selectors, TR, busy bits and back
 * links with what the SDM says a switch saves and loads:
 *
 *   - JMP to a TSS and JMP back; CALL through a task gate and IRET back
 *     (NT, back link, busy bits), and a second CALL that resumes the task
 *     after its IRET with the registers it left with;
 *   - INT n through a task gate in the IDT, from ring 0 and from ring 3;
 *   - faults before the switch (busy TSS #GP, short TSS #TS, absent TSS
 *     #NP, IRET with NT and no busy back link #TS), and a bad data segment
 *     in the new task, which faults in the new task's context;
 *   - a double fault through a task gate (error code on the new stack);
 *   - the T bit's debug trap (popek; QEMU ignores the bit);
 *   - with paging on, a task with its own CR3, seen through a mapping the
 *     two page directories disagree on.
 *
 * `--append nopaging`, `nouser` and `nodf` skip parts a host cannot run
 * (kvm-pvm runs no paged guest and turns a ring-3 INT into #UD).
 */
#include "popek.h"
#include "paging.h"

/* GDT selectors (indices 6-15). Ring 3 only ever names USER_GATE (index
 * 9): indices 4 and 6 are the host's own ring-3 code segments, which a
 * far transfer from directly executed user code would reach. */
#define SEL_TSS_A 0x30
#define SEL_TSS_B 0x38
#define SEL_GATE_A 0x40   /* task gate to TSS A, DPL 0 */
#define SEL_USER_GATE 0x48 /* task gate to TSS A, DPL 3 */
#define SEL_TSS_DF 0x50
#define SEL_TSS_SHORT 0x58 /* limit 0x40: too short */
#define SEL_TSS_P 0x60    /* its own CR3 */
#define SEL_LDT_B 0x68
#define SEL_TSS_NP 0x70   /* not present */
#define SEL_TSS_BAD 0x78  /* a DS past the GDT limit */
#define BAD_DS 0x7FF8

#define V_TASK 0x50
#define V_USER_TASK 0x51
#define V_SYSCALL 0x80

#define TYPE_TSS_AVAIL 0x9
#define TYPE_TSS_BUSY 0xB
#define EFLAGS_NT 0x4000
#define EFLAGS_ARITH 0x8D5 /* CF PF AF ZF SF OF */
#define EXIT_FLAGS 0x887
#define DR6_BT (1u << 15)
#define CR0_TS (1u << 3)

#define V_TS 10
#define V_NP 11
#define V_GP 13
#define V_DB 1

struct regs {
	u32 eax, ecx, edx, ebx, esp, ebp, esi, edi, eflags;
	u32 cs, ss, ds, es, fs, gs, tr;
};

/* switch.S */
void task_go_jmp(const struct regs *in, struct regs *out);
void task_go_call(const struct regs *in, struct regs *out);
void task_go_int(const struct regs *in, struct regs *out);
void task_go_user(const struct regs *in, struct regs *out);
void task_body(void), df_task(void), user_done(void);
extern char task_resume_jmp[], task_resume_iret[];
extern struct __attribute__((packed)) far {
	u32 offset;
	u16 selector;
} go_far, task_exit_far;
extern u32 go_esp, task_runs, task_exit_iret;
extern void (*task_hook)(void);
extern struct regs task_seen;
extern u32 df_esp, df_error, df_flags, df_tr, df_runs;
void df_repair(void);

static struct tss tss_a, tss_df, tss_short, tss_p, tss_bad;
static u8 stack_a[4096] __attribute__((aligned(16)));
static u8 stack_df[4096] __attribute__((aligned(16)));
static u8 kernel_stack[4096] __attribute__((aligned(16)));
static u64 ldt_b[2] __attribute__((aligned(8)));
#define TOP(s) ((u32)(s) + sizeof(s))

static int on_popek;

static void popek_only(const char *what)
{
	kprintf("note %s: checked under popek only (QEMU 7.2 TCG does not)\n", what);
}

static u32 desc_type(u16 sel)
{
	return (u32)(gdt[sel >> 3] >> 40) & 0xF;
}

static void clts(void)
{
	__asm__ volatile("clts");
}

/* A task that starts at task_body with the registers below. */
static void task_init(struct tss *t, u32 esp, u32 tag)
{
	memset(t, 0, sizeof(*t));
	t->eip = (u32)task_body;
	t->esp = esp;
	t->eflags = EFLAGS_FIXED | EFLAGS_CF | EFLAGS_ZF;
	t->eax = tag | 1;
	t->ecx = tag | 2;
	t->edx = tag | 3;
	t->ebx = tag | 4;
	t->ebp = tag | 6;
	t->esi = tag | 7;
	t->edi = tag | 8;
	t->cs = SEL_KCODE;
	t->ss = t->ds = t->es = t->gs = SEL_KDATA;
	t->fs = 0;
	t->cr3 = read_cr3();
	t->iomap_base = sizeof(*t);
}

static void tss_desc(u16 sel, struct tss *t, u32 limit)
{
	gdt_set(sel >> 3, (u32)t, limit, ACC_TSS, FLAGS_SYS);
}

static u64 task_gate_desc(u16 tss, u8 dpl)
{
	u32 hi = (0x85u | ((u32)dpl << 5)) << 8;
	return ((u64)hi << 32) | ((u32)tss << 16);
}

/* ---- faults the checks expect ---------------------------------------- */

static volatile struct {
	u32 count, vector, error, eip, cs, tr;
	u32 resume;   /* where to go on, if set */
	int fix_segs; /* reload DS/ES/FS/GS with the kernel's on return */
} fault;

static void on_fault(struct frame *f)
{
	u16 tr;
	__asm__ volatile("strw %0" : "=m"(tr));
	fault.count++;
	fault.vector = f->vector;
	fault.error = f->error;
	fault.eip = f->eip;
	fault.cs = f->cs & 0xFFFF;
	fault.tr = tr;
	if (fault.fix_segs)
		f->ds = f->es = f->fs = f->gs = SEL_KDATA;
	if (fault.resume) {
		f->eip = fault.resume;
		fault.resume = 0;
	}
}

static void expect_fault(void)
{
	memset((void *)&fault, 0, sizeof(fault));
}

static void check_fault(const char *what, u32 vector, u32 error)
{
	char buf[112];
	ksnprintf(buf, sizeof(buf), "%s: one fault", what);
	check_eq(buf, fault.count, 1);
	ksnprintf(buf, sizeof(buf), "%s: vector", what);
	check_eq(buf, fault.vector, vector);
	ksnprintf(buf, sizeof(buf), "%s: error code", what);
	check_eq(buf, fault.error, error);
}

/* ---- register comparisons -------------------------------------------- */

static void check_regs(const char *who, const struct regs *got, const struct regs *want)
{
	static const char *names[] = { "EAX", "ECX", "EDX", "EBX", "ESP", "EBP", "ESI", "EDI",
				       "EFLAGS", "CS", "SS", "DS", "ES", "FS", "GS", "TR" };
	const u32 *g = (const u32 *)got, *w = (const u32 *)want;
	u32 bad = 0;
	for (u32 i = 0; i < ARRAY_SIZE(names); i++) {
		if (g[i] != w[i]) {
			char buf[96];
			ksnprintf(buf, sizeof(buf), "%s: %s", who, names[i]);
			check_eq(buf, g[i], w[i]);
			bad++;
		}
	}
	char buf[112];
	ksnprintf(buf, sizeof(buf), "%s: all registers, EFLAGS, selectors and TR exact", who);
	check(buf, bad == 0);
}

/* The main task's registers going out (ESP is whatever it is). */
static struct regs main_in(u32 tag)
{
	struct regs r = {
		.eax = tag | 0x11, .ecx = tag | 0x22, .edx = tag | 0x33, .ebx = tag | 0x44,
		.ebp = tag | 0x55, .esi = tag | 0x66, .edi = tag | 0x77,
		.eflags = EFLAGS_FIXED | EFLAGS_CF | 0x4 | 0x80, /* CF PF SF */
	};
	return r;
}

/* What the main task must find when it runs again: what it left with. */
static struct regs main_back(const struct regs *in)
{
	struct regs r = *in;
	r.esp = go_esp;
	r.cs = SEL_KCODE;
	r.ss = r.ds = r.es = r.fs = r.gs = SEL_KDATA;
	r.tr = SEL_TSS;
	return r;
}

/* What task_body records on a task's first run from `t`. */
static struct regs first_run(const struct tss *t, u16 tr, u32 extra_flags)
{
	struct regs r = {
		.eax = t->eax, .ecx = t->ecx, .edx = t->edx, .ebx = t->ebx, .esp = t->esp,
		.ebp = t->ebp, .esi = t->esi, .edi = t->edi, .eflags = t->eflags | extra_flags,
		.cs = t->cs, .ss = t->ss, .ds = t->ds, .es = t->es, .fs = t->fs, .gs = t->gs,
		.tr = tr,
	};
	return r;
}

/* What task_body records when resumed after leaving with load_exit_regs. */
static struct regs resumed(const struct tss *t, u16 tr, u32 flags)
{
	struct regs r = first_run(t, tr, 0);
	r.eax = 0x7A5C0001;
	r.ecx = 0x7A5C0002;
	r.edx = 0x7A5C0003;
	r.ebx = 0x7A5C0004;
	r.ebp = 0x7A5C0006;
	r.esi = 0x7A5C0007;
	r.edi = 0x7A5C0008;
	r.eflags = flags;
	return r;
}

/* ---- what the tasks look at while they run --------------------------- */

static volatile struct {
	u32 main_type, a_type, link, cr0_ts;
	u16 ldt;
} inside;

static void look_inside(void)
{
	inside.main_type = desc_type(SEL_TSS);
	inside.a_type = desc_type(SEL_TSS_A);
	inside.link = tss_a.link;
	inside.cr0_ts = read_cr0() & CR0_TS;
	__asm__ volatile("sldt %0" : "=m"(inside.ldt));
}

static u16 sldt(void)
{
	u16 v;
	__asm__ volatile("sldt %0" : "=m"(v));
	return v;
}

/* ---- the checks -------------------------------------------------------- */

static void test_jmp(void)
{
	task_init(&tss_a, TOP(stack_a), 0xA0000000);
	task_hook = look_inside;
	task_exit_iret = 0;
	task_exit_far.selector = SEL_TSS;
	go_far.selector = SEL_TSS_A;
	clts();
	struct regs in = main_in(0x10000000), out = { 0 };
	struct regs want = first_run(&tss_a, SEL_TSS_A, 0);
	task_runs = 0;
	task_go_jmp(&in, &out);
	check_eq("JMP to a TSS: the task ran once", task_runs, 1);
	check_regs("JMP to a TSS: the new task starts with its TSS's state", &task_seen, &want);
	check_eq("JMP: the new task is busy", inside.a_type, TYPE_TSS_BUSY);
	check_eq("JMP: the old task is no longer busy", inside.main_type, TYPE_TSS_AVAIL);
	check_eq("JMP: no back link", inside.link, 0);
	check("JMP: the switch set CR0.TS", inside.cr0_ts != 0);
	want = main_back(&in);
	check_regs("JMP back: the main task resumes exactly as it left", &out, &want);
	check_eq("JMP back: the main task is busy again", desc_type(SEL_TSS), TYPE_TSS_BUSY);
	check_eq("JMP back: the other task is free", desc_type(SEL_TSS_A), TYPE_TSS_AVAIL);
	check_eq("JMP back: the task's EIP was saved after its JMP", tss_a.eip,
		 (u32)task_resume_jmp);
}

static void test_call_iret(void)
{
	task_init(&tss_a, TOP(stack_a), 0xB0000000);
	tss_a.ldt = SEL_LDT_B;
	task_hook = look_inside;
	task_exit_iret = 1;
	go_far.selector = SEL_GATE_A;
	struct regs in = main_in(0x20000000), out = { 0 };
	struct regs want = first_run(&tss_a, SEL_TSS_A, EFLAGS_NT);
	task_runs = 0;
	task_go_call(&in, &out);
	check_eq("CALL through a task gate: the task ran", task_runs, 1);
	check_regs("CALL: the new task starts with its TSS's state and NT", &task_seen, &want);
	check_eq("CALL: back link to the caller", inside.link, SEL_TSS);
	check_eq("CALL: the caller stays busy", inside.main_type, TYPE_TSS_BUSY);
	check_eq("CALL: the callee is busy", inside.a_type, TYPE_TSS_BUSY);
	check_eq("CALL: the callee's LDT is loaded", inside.ldt, SEL_LDT_B);
	want = main_back(&in);
	check_regs("IRET with NT: the caller resumes exactly as it left", &out, &want);
	check_eq("IRET with NT: the callee is free again", desc_type(SEL_TSS_A), TYPE_TSS_AVAIL);
	check_eq("IRET with NT: the callee's saved EFLAGS have NT clear", tss_a.eflags, EXIT_FLAGS);
	check_eq("IRET with NT: the callee's saved EAX", tss_a.eax, 0x7A5C0001);
	check_eq("IRET with NT: the callee resumes after its IRET", tss_a.eip,
		 (u32)task_resume_iret);
	check_eq("IRET with NT: the caller's LDT (none) is back", sldt(), 0);

	/* A second CALL, to the TSS itself, resumes the task after its IRET. */
	go_far.selector = SEL_TSS_A;
	in = main_in(0x30000000);
	task_go_call(&in, &out);
	check_eq("a second CALL resumes the task", task_runs, 2);
	want = resumed(&tss_a, SEL_TSS_A, EXIT_FLAGS | EFLAGS_NT);
	check_regs("the resumed task has the registers it left with", &task_seen, &want);
	want = main_back(&in);
	check_regs("and the caller comes back exactly again", &out, &want);
}

static void test_int_gate(void)
{
	task_init(&tss_a, TOP(stack_a), 0xC0000000);
	task_hook = look_inside;
	task_exit_iret = 1;
	struct regs in = main_in(0x40000000), out = { 0 };
	struct regs want = first_run(&tss_a, SEL_TSS_A, EFLAGS_NT);
	task_runs = 0;
	task_go_int(&in, &out);
	check_eq("INT n through a task gate in the IDT: the task ran", task_runs, 1);
	check_regs("INT n: the task starts with its TSS's state and NT (nothing pushed)", &task_seen,
		   &want);
	check_eq("INT n: back link", inside.link, SEL_TSS);
	want = main_back(&in);
	check_regs("INT n, IRET: the interrupted task resumes after the INT", &out, &want);
}

static struct regs *user_out;

static void on_syscall(struct frame *f)
{
	u16 tr;
	__asm__ volatile("strw %0" : "=m"(tr));
	user_out->cs = f->cs & 0xFFFF;
	user_out->ss = f->user_ss & 0xFFFF;
	user_out->ds = f->ds & 0xFFFF;
	user_out->es = f->es & 0xFFFF;
	user_out->fs = f->fs & 0xFFFF;
	user_out->gs = f->gs & 0xFFFF;
	user_out->tr = tr;
	/* Back to the kernel side of task_go_user, at ring 0. */
	f->eip = (u32)user_done;
	f->cs = SEL_KCODE;
	f->eflags = EFLAGS_FIXED;
}

static void test_user_int_gate(void)
{
	task_init(&tss_a, TOP(stack_a), 0xD0000000);
	task_hook = look_inside;
	task_exit_iret = 1;
	struct regs in = main_in(0x50000000), out = { 0 };
	/* Ring 3 runs with IF set (POPF there cannot change it). */
	in.eflags |= EFLAGS_IF;
	task_runs = 0;
	user_out = &out;
	struct regs want = first_run(&tss_a, SEL_TSS_A, EFLAGS_NT);
	task_go_user(&in, &out);
	check_eq("ring 3: INT n through a DPL-3 task gate runs the ring-0 task", task_runs, 1);
	check_regs("ring 3 INT n: the ring-0 task starts with its TSS's state", &task_seen, &want);
	want = in;
	want.esp = go_esp;
	want.eflags = in.eflags;
	want.cs = SEL_UCODE | 3;
	want.ss = want.ds = want.es = want.fs = want.gs = SEL_UDATA | 3;
	want.tr = SEL_TSS;
	check_regs("IRET with NT from ring 0 back to the ring-3 task", &out, &want);
}

static u32 gp_idt_saved_hi;
static volatile u32 df_saved_eip, df_main_type;

void df_repair(void)
{
	df_saved_eip = tss.eip;
	df_main_type = desc_type(SEL_TSS);
	/* The #GP gate was made not present to turn a #GP into a #DF. */
	((u32 *)&idt[V_GP])[1] = gp_idt_saved_hi;
	/* Resume the interrupted task past the faulting instruction. */
	tss.eip = fault.resume;
}

static void test_double_fault(void)
{
	memset(&tss_df, 0, sizeof(tss_df));
	tss_df.eip = (u32)df_task;
	tss_df.esp = TOP(stack_df);
	tss_df.eflags = EFLAGS_FIXED;
	tss_df.cs = SEL_KCODE;
	tss_df.ss = tss_df.ds = tss_df.es = tss_df.fs = tss_df.gs = SEL_KDATA;
	tss_df.cr3 = read_cr3();
	tss_df.iomap_base = sizeof(tss_df);
	tss_desc(SEL_TSS_DF, &tss_df, sizeof(tss_df) - 1);
	idt[8] = task_gate_desc(SEL_TSS_DF, 0);
	gp_idt_saved_hi = ((u32 *)&idt[V_GP])[1];
	((u32 *)&idt[V_GP])[1] &= ~0x8000u; /* not present */
	expect_fault();
	u32 fault_at;
	/* A #GP whose gate is absent: #NP delivering a #GP is a double fault. */
	__asm__ volatile("movl $1f, %0\n\t"
			 "movl $2f, %1\n"
			 "2:\n\t"
			 "movw %w2, %%ds\n"
			 "1:"
			 : "=m"(fault.resume), "=m"(fault_at)
			 : "r"(BAD_DS)
			 : "memory");
	check_eq("#DF through a task gate: the double-fault task ran", df_runs, 1);
	check_eq("#DF: its error code (0) is on the new task's stack", df_error, 0);
	check_eq("#DF: the error code is all it pushed", df_esp, TOP(stack_df) - 4);
	check("#DF: NT set in the double-fault task", (df_flags & EFLAGS_NT) != 0);
	check_eq("#DF: TR is the double-fault TSS", df_tr & 0xFFFF, SEL_TSS_DF);
	check_eq("#DF: back link to the faulting task", tss_df.link, SEL_TSS);
	check_eq("#DF: the faulting task stays busy meanwhile", df_main_type, TYPE_TSS_BUSY);
	check_eq("#DF: its saved EIP is the faulting instruction", df_saved_eip, fault_at);
	check_eq("#DF: after IRET the double-fault task is free", desc_type(SEL_TSS_DF),
		 TYPE_TSS_AVAIL);
	u32 ds;
	__asm__ volatile("movl %%ds, %0" : "=r"(ds));
	check_eq("#DF: the faulting task resumes with its DS", ds & 0xFFFF, SEL_KDATA);
}

static void test_faults(void)
{
	/* JMP to the busy main TSS. */
	expect_fault();
	__asm__ volatile("movl $1f, %0\n\t"
			 "ljmp $0x28, $0\n"
			 "1:" : "=m"(fault.resume)::"memory");
	check_fault("JMP to a busy TSS", V_GP, SEL_TSS);
	/* A TSS whose limit is below 0x67. */
	expect_fault();
	__asm__ volatile("movl $1f, %0\n\t"
			 "ljmp $0x58, $0\n"
			 "1:" : "=m"(fault.resume)::"memory");
	check_fault("JMP to a TSS with a limit below 0x67", V_TS, SEL_TSS_SHORT);
	check_eq("#TS before the switch: TR is still the old task", fault.tr, SEL_TSS);
	/* A TSS that is not present. */
	expect_fault();
	__asm__ volatile("movl $1f, %0\n\t"
			 "lcall $0x70, $0\n"
			 "1:" : "=m"(fault.resume)::"memory");
	check_fault("CALL to a not-present TSS", V_NP, SEL_TSS_NP);
	/* IRET with NT and a null back link. */
	tss.link = 0;
	expect_fault();
	__asm__ volatile("movl $1f, %0\n\t"
			 "pushfl\n\t"
			 "orl $0x4000, (%%esp)\n\t"
			 "popfl\n\t"
			 "iretl\n"
			 "1:\n\t"
			 "pushfl\n\t"
			 "andl $~0x4000, (%%esp)\n\t"
			 "popfl" : "=m"(fault.resume)::"memory");
	check_fault("IRET with NT and a null back link", V_TS, 0);
}

static void test_bad_segment_in_new_task(void)
{
	if (!on_popek) {
		/* QEMU 7.2 delivers the #TS, then faults at the new task's first
		 * instruction with #GP(its TSS) for ever. */
		popek_only("a bad segment faulting in the new task's context");
		return;
	}
	task_init(&tss_bad, TOP(stack_a), 0xE0000000);
	tss_bad.ds = BAD_DS;
	tss_desc(SEL_TSS_BAD, &tss_bad, sizeof(tss_bad) - 1);
	task_hook = 0;
	task_exit_iret = 0;
	task_exit_far.selector = SEL_TSS;
	go_far.selector = SEL_TSS_BAD;
	expect_fault();
	fault.fix_segs = 1;
	struct regs in = main_in(0x60000000), out = { 0 };
	task_runs = 0;
	task_go_jmp(&in, &out);
	check_fault("a DS past the GDT limit in the new TSS", V_TS, BAD_DS);
	check_eq("that #TS is raised in the new task (TR)", fault.tr, SEL_TSS_BAD);
	check_eq("before its first instruction (saved EIP)", fault.eip, (u32)task_body);
	check_eq("then the task ran with the handler's DS", task_runs, 1);
	check_eq("  and its DS is the one the handler put", task_seen.ds, SEL_KDATA);
	struct regs want = main_back(&in);
	check_regs("and the main task came back exactly", &out, &want);
}

static volatile u32 db_count, db_dr6, db_eip, db_tr;

static void on_db(struct frame *f)
{
	u32 dr6;
	u16 tr;
	__asm__ volatile("movl %%dr6, %0" : "=r"(dr6));
	__asm__ volatile("strw %0" : "=m"(tr));
	db_count++;
	db_dr6 = dr6;
	db_eip = f->eip;
	db_tr = tr;
	__asm__ volatile("movl %0, %%dr6" : : "r"(0u));
}

static void test_trap_bit(void)
{
	task_init(&tss_a, TOP(stack_a), 0xF0000000);
	tss_a.trap = 1;
	task_hook = 0;
	task_exit_iret = 0;
	task_exit_far.selector = SEL_TSS;
	go_far.selector = SEL_TSS_A;
	set_handler(V_DB, on_db);
	struct regs in = main_in(0x70000000), out = { 0 };
	task_go_jmp(&in, &out);
	tss_a.trap = 0;
	if (!on_popek) {
		popek_only("the TSS T bit's debug trap");
		return;
	}
	check_eq("T bit: a debug trap on entering the task", db_count, 1);
	check("T bit: DR6.BT set", (db_dr6 & DR6_BT) != 0);
	check_eq("T bit: before the task's first instruction", db_eip, (u32)task_body);
	check_eq("T bit: in the new task", db_tr, SEL_TSS_A);
}

/* ---- CR3 with paging on ------------------------------------------------- */

#define WINDOW 0x00800000u
#define PHYS_1 0x00800000u
#define PHYS_2 0x00C00000u
static u32 pd1[1024] __attribute__((aligned(4096)));
static u32 pd2[1024] __attribute__((aligned(4096)));
static volatile u32 seen_window, seen_cr3;

static void look_at_window(void)
{
	seen_window = *(volatile u32 *)WINDOW;
	seen_cr3 = read_cr3();
}

static void test_cr3(void)
{
	*(volatile u32 *)PHYS_1 = 0x11111111;
	*(volatile u32 *)PHYS_2 = 0x22222222;
	/* Both map the first 4 MiB one to one; the window differs. */
	pd1[0] = pd2[0] = 0 | PTE_PS | PTE_W | PTE_P;
	pd1[WINDOW >> 22] = PHYS_1 | PTE_PS | PTE_W | PTE_P;
	pd2[WINDOW >> 22] = PHYS_2 | PTE_PS | PTE_W | PTE_P;
	write_cr4(read_cr4() | CR4_PSE);
	write_cr3((u32)pd1);
	write_cr0(read_cr0() | CR0_PG);
	check_eq("paging on: the window shows page 1", *(volatile u32 *)WINDOW, 0x11111111);
	task_init(&tss_p, TOP(stack_a), 0x90000000);
	tss_p.cr3 = (u32)pd2;
	tss_desc(SEL_TSS_P, &tss_p, sizeof(tss_p) - 1);
	/* A switch back loads the main task's CR3 from its TSS. */
	tss.cr3 = (u32)pd1;
	task_hook = look_at_window;
	task_exit_iret = 1;
	go_far.selector = SEL_TSS_P;
	struct regs in = main_in(0x80000000), out = { 0 };
	task_go_call(&in, &out);
	check_eq("CALL to a task with its own CR3: CR3 switched", seen_cr3, (u32)pd2);
	check_eq("the task sees its own mapping of the window", seen_window, 0x22222222);
	check_eq("IRET back: CR3 is the main task's again", read_cr3(), (u32)pd1);
	check_eq("IRET back: the window shows page 1 again", *(volatile u32 *)WINDOW, 0x11111111);
	struct regs want = main_back(&in);
	check_regs("IRET back with paging on: the caller resumes exactly", &out, &want);
	write_cr0(read_cr0() & ~CR0_PG);
}

/* ---- setup ------------------------------------------------------------- */

static u32 cpuid_sig(u32 r[4])
{
	__asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(0x40000000), "c"(0));
	return r[0];
}

void kmain(u32 magic, struct multiboot_info *mbi)
{
	(void)magic;
	u32 r[4];
	cpuid_sig(r);
	on_popek = !memcmp(&r[1], "PopekPopekVM", 12);
	kprintf("tasks: hardware task switches (%s)\n", on_popek ? "popek" : "not popek");

	tss_init(TOP(kernel_stack));
	tss.cr3 = read_cr3();
	task_init(&tss_a, TOP(stack_a), 0xA0000000);
	tss_desc(SEL_TSS_A, &tss_a, sizeof(tss_a) - 1);
	gdt[SEL_GATE_A >> 3] = task_gate_desc(SEL_TSS_A, 0);
	gdt[SEL_USER_GATE >> 3] = task_gate_desc(SEL_TSS_A, 3);
	tss_desc(SEL_TSS_SHORT, &tss_short, 0x40);
	tss_desc(SEL_TSS_NP, &tss_a, sizeof(tss_a) - 1);
	gdt[SEL_TSS_NP >> 3] &= ~(1ull << 47);
	/* An LDT in the GDT for TSS A's LDT field (empty, but loaded). */
	ldt_b[0] = 0;
	gdt_set(SEL_LDT_B >> 3, (u32)ldt_b, sizeof(ldt_b) - 1, ACC_LDT, FLAGS_SYS);
	idt[V_TASK] = task_gate_desc(SEL_TSS_A, 0);
	idt[V_USER_TASK] = task_gate_desc(SEL_TSS_A, 3);
	idt_set_attr(V_SYSCALL, 0xEE);
	set_handler(V_SYSCALL, on_syscall);
	set_handler(V_GP, on_fault);
	set_handler(V_TS, on_fault);
	set_handler(V_NP, on_fault);

	test_jmp();
	test_call_iret();
	test_int_gate();
	test_faults();
	test_bad_segment_in_new_task();
	test_trap_bit();
	if (cmdline_has_word(mbi, "nouser"))
		kprintf("note ring-3 INT n through a task gate: skipped (nouser)\n");
	else
		test_user_int_gate();
	if (cmdline_has_word(mbi, "nodf"))
		kprintf("note double fault through a task gate: skipped (nodf)\n");
	else
		test_double_fault();
	if (cmdline_has_word(mbi, "nopaging"))
		kprintf("note CR3 switched by a task switch: skipped (nopaging)\n");
	else
		test_cr3();
}
