/*
 * The register-exact halves of the task switches tasks.c checks.
 *
 * struct regs (tasks.c) is, by offset: eax 0, ecx 4, edx 8, ebx 12, esp 16,
 * ebp 20, esi 24, edi 28, eflags 32, cs 36, ss 40, ds 44, es 48, fs 52,
 * gs 56, tr 60 (selectors stored as words into zeroed fields).
 *
 * The main task leaves through task_go_jmp / _call / _int / _user with
 * every general register and EFLAGS loaded from a struct regs, and when it
 * runs again (at the instruction after the switch) stores what it finds
 * into another. A task entered at task_body records its registers on
 * entry the same way, calls task_hook, loads known values and leaves by
 * JMP through task_exit_far or by IRET (NT set): when switched to again it
 * resumes there and records those values.
 */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UCODE_RPL3 0x1B
#define SEL_UDATA_RPL3 0x23
#define EFLAGS_NT 0x4000
/* EFLAGS a task leaves with: CF PF SF OF (and NT for IRET). */
#define EXIT_FLAGS 0x887

/* Stores the general registers but EAX and ESP into the struct regs at EAX. */
.macro STORE_GPRS
	movl %ecx, 4(%eax)
	movl %edx, 8(%eax)
	movl %ebx, 12(%eax)
	movl %ebp, 20(%eax)
	movl %esi, 24(%eax)
	movl %edi, 28(%eax)
.endm

/* STORE_GPRS, and the selectors and TR (ring 0 only: popek's ring 3 runs
 * on the host, where reading them shows the host's, docs/bt.md). */
.macro STORE_REST
	STORE_GPRS
	movw %cs, 36(%eax)
	movw %ss, 40(%eax)
	movw %ds, 44(%eax)
	movw %es, 48(%eax)
	movw %fs, 52(%eax)
	movw %gs, 56(%eax)
	strw 60(%eax)
.endm

/* Loads EFLAGS and every register but ESP from the struct regs at EAX. */
.macro LOAD_ALL
	pushl 32(%eax)
	popfl
	movl 4(%eax), %ecx
	movl 8(%eax), %edx
	movl 12(%eax), %ebx
	movl 20(%eax), %ebp
	movl 24(%eax), %esi
	movl 28(%eax), %edi
	movl 0(%eax), %eax
.endm

	.text

/*
 * task_go_<how>(const struct regs *in, struct regs *out): one switch away
 * and back. ESP is not loaded: out->esp shows whether the task came back
 * with the stack it left with.
 */
.macro GO name, insn
	.globl \name
\name:
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl 20(%esp), %eax
	movl 24(%esp), %edx
	movl %edx, go_out
	movl %esp, go_esp
	LOAD_ALL
	\insn
	jmp go_resume
.endm

	GO task_go_jmp, "ljmp *go_far"
	GO task_go_call, "lcall *go_far"
	GO task_go_int, "int $0x50"

go_resume:
	movl %esp, go_esp_back
	movl %eax, go_eax
	pushfl
	popl go_flags
	movl go_out, %eax
	STORE_REST
	movl go_esp_back, %ecx
	movl %ecx, 16(%eax)
	movl go_eax, %ecx
	movl %ecx, 0(%eax)
	movl go_flags, %ecx
	movl %ecx, 32(%eax)
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

/*
 * task_body: where the tasks start. Records, calls the hook, leaves with
 * known registers; resumed, it starts over and records those.
 */
	.globl task_body
task_body:
	movl %eax, task_eax
	pushfl
	popl task_flags
	movl $task_seen, %eax
	STORE_REST
	movl %esp, 16(%eax)
	movl task_eax, %ecx
	movl %ecx, 0(%eax)
	movl task_flags, %ecx
	movl %ecx, 32(%eax)
	incl task_runs
	movl task_hook, %eax
	testl %eax, %eax
	jz 1f
	call *%eax
1:	cmpl $0, task_exit_iret
	jne 2f
	pushl $EXIT_FLAGS
	popfl
	call load_exit_regs
	ljmp *task_exit_far
	.globl task_resume_jmp
task_resume_jmp:
	jmp task_body
2:	pushl $(EXIT_FLAGS | EFLAGS_NT)
	popfl
	call load_exit_regs
	iretl
	.globl task_resume_iret
task_resume_iret:
	jmp task_body

/* The registers a task leaves with (flags untouched: MOV only). */
load_exit_regs:
	movl $0x7A5C0001, %eax
	movl $0x7A5C0002, %ecx
	movl $0x7A5C0003, %edx
	movl $0x7A5C0004, %ebx
	movl $0x7A5C0006, %ebp
	movl $0x7A5C0007, %esi
	movl $0x7A5C0008, %edi
	ret

/*
 * The double-fault task: records what the CPU gave it (its stack holds the
 * error code), lets the C side repair the cause, and returns with IRET.
 */
	.globl df_task
df_task:
	movl %esp, df_esp
	movl (%esp), %eax
	movl %eax, df_error
	pushfl
	popl df_flags
	strw df_tr
	incl df_runs
	call df_repair
	addl $4, %esp		/* the error code */
	iretl
	jmp df_task

/*
 * task_go_user(const struct regs *in, struct regs *out): IRET to ring 3,
 * where user code loads *in, raises INT 0x51 (a DPL-3 task gate), stores
 * what it finds afterwards into *out and comes back through INT 0x80,
 * whose handler (tasks.c) fills in the selectors and TR from the kernel's
 * side and resumes at user_done.
 */
	.globl task_go_user, user_done
task_go_user:
	pushl %ebp
	pushl %ebx
	pushl %esi
	pushl %edi
	movl 20(%esp), %eax
	movl %eax, user_in
	movl 24(%esp), %eax
	movl %eax, go_out
	movl %esp, kernel_esp
	movl $SEL_UDATA_RPL3, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	pushl $SEL_UDATA_RPL3
	pushl $user_stack_top
	pushl $0x202		/* IF: ring 3 could not change it anyway */
	pushl $SEL_UCODE_RPL3
	pushl $user_side
	iretl
user_done:
	movl kernel_esp, %esp
	movl $SEL_KDATA, %eax
	movw %ax, %ds
	movw %ax, %es
	movw %ax, %fs
	movw %ax, %gs
	popl %edi
	popl %esi
	popl %ebx
	popl %ebp
	ret

user_side:
	movl user_in, %eax
	movl %esp, go_esp
	LOAD_ALL
	int $0x51
	movl %esp, go_esp_back
	movl %eax, go_eax
	pushfl
	popl go_flags
	movl go_out, %eax
	STORE_GPRS
	movl go_esp_back, %ecx
	movl %ecx, 16(%eax)
	movl go_eax, %ecx
	movl %ecx, 0(%eax)
	movl go_flags, %ecx
	movl %ecx, 32(%eax)
	int $0x80
	jmp user_side		/* not reached */

	.data
	.balign 4
	.globl go_far, go_esp, task_exit_far, task_seen, task_runs, task_hook
	.globl task_exit_iret, df_esp, df_error, df_flags, df_tr, df_runs
go_far:		.long 0
		.word 0
	.balign 4
task_exit_far:	.long 0
		.word 0
	.balign 4
go_out:		.long 0
go_esp:		.long 0
go_esp_back:	.long 0
go_eax:		.long 0
go_flags:	.long 0
task_eax:	.long 0
task_flags:	.long 0
task_seen:	.fill 16, 4, 0
task_runs:	.long 0
task_hook:	.long 0
task_exit_iret:	.long 0
df_esp:		.long 0
df_error:	.long 0
df_flags:	.long 0
df_tr:		.long 0
df_runs:	.long 0
kernel_esp:	.long 0
user_in:	.long 0

	.section .stack, "aw", @nobits
	.balign 16
	.space 4096
user_stack_top:

	.section .note.GNU-stack, "", @progbits
