/*
 * The probe accesses of paging.h: each faulting instruction has a label
 * the #PF catcher (paging.c) knows, and resumes after it with
 * EAX = PF_POISON. Every probe is an ordinary cdecl function.
 */
#define PF_POISON 0xBADF00D5

	.section .text.paging_probe, "ax"

/* u32 probe_read(u32 addr) */
	.globl probe_read, probe_read_fault, probe_read_resume
probe_read:
	movl 4(%esp), %ecx
probe_read_fault:
	movl (%ecx), %eax
probe_read_resume:
	ret

/* void probe_write(u32 addr, u32 value) */
	.globl probe_write, probe_write_fault, probe_write_resume
probe_write:
	movl 4(%esp), %ecx
	movl 8(%esp), %edx
probe_write_fault:
	movl %edx, (%ecx)
probe_write_resume:
	ret

/* u32 probe_call(u32 addr): calls addr. If fetching addr faults, the
 * catcher resumes at probe_exec_landing, which returns from that call on
 * the callee's behalf (the CALL's return address is on top of the stack). */
	.globl probe_call, probe_exec_landing
probe_call:
	movl 4(%esp), %ecx
	call *%ecx
	ret
probe_exec_landing:
	movl $PF_POISON, %eax
	ret

	.section .note.GNU-stack, "", @progbits
