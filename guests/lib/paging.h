/*
 * Paging helpers for the MMU test guests: control registers, TLB
 * invalidation, page-table entry bits, and a page-fault catcher with
 * "probe" accesses that survive a #PF.
 *
 * A probe is a read, write or call whose faulting instruction is known to
 * the #PF handler (pf_install). When it faults, the handler records CR2,
 * the error code and the saved EIP/CS in pf_last, counts the fault in
 * pf_count, and resumes after the access with EAX = PF_POISON instead of
 * retrying it. A guest tells whether an access faulted by comparing
 * pf_count before and after it. Any other #PF is reported as a FAIL and
 * ends the run.
 *
 * Everything here is for guests that turn paging on themselves; nothing
 * in the rest of the runtime depends on it.
 */
#ifndef POPEK_PAGING_H
#define POPEK_PAGING_H

#include "popek.h"

/* ---- control registers (Intel SDM vol. 3 section 2.5) ------------------ */

#define CR0_PE (1u << 0)
#define CR0_WP (1u << 16)
#define CR0_PG (1u << 31)
#define CR4_PSE (1u << 4)
#define CR4_PAE (1u << 5)
#define CR4_PGE (1u << 7)

static inline u32 read_cr0(void)
{
	u32 v;
	__asm__ volatile("movl %%cr0, %0" : "=r"(v));
	return v;
}
static inline void write_cr0(u32 v) { __asm__ volatile("movl %0, %%cr0" : : "r"(v) : "memory"); }
static inline u32 read_cr2(void)
{
	u32 v;
	__asm__ volatile("movl %%cr2, %0" : "=r"(v));
	return v;
}
static inline u32 read_cr3(void)
{
	u32 v;
	__asm__ volatile("movl %%cr3, %0" : "=r"(v));
	return v;
}
/* MOV to CR3 also flushes every non-global TLB entry and the
 * paging-structure caches (SDM vol. 3 section 4.10.4.1). */
static inline void write_cr3(u32 v) { __asm__ volatile("movl %0, %%cr3" : : "r"(v) : "memory"); }
static inline u32 read_cr4(void)
{
	u32 v;
	__asm__ volatile("movl %%cr4, %0" : "=r"(v));
	return v;
}
/* Changing CR4.PGE flushes the whole TLB, global entries too; so does a
 * change of CR4.PAE for the current PCID. A CR4.PSE change is not listed
 * as flushing anything (SDM vol. 3 section 4.10.4.1). */
static inline void write_cr4(u32 v) { __asm__ volatile("movl %0, %%cr4" : : "r"(v) : "memory"); }
/* Invalidates the TLB entries (global ones too) for the page holding addr,
 * however large that page is, and the paging-structure caches. */
static inline void invlpg(u32 addr) { __asm__ volatile("invlpg (%0)" : : "r"(addr) : "memory"); }
/* Flushes every non-global TLB entry: CR3 written with its own value. */
static inline void flush_tlb(void) { write_cr3(read_cr3()); }

/* CPUID leaf 1 EDX feature bits for paging. */
#define CPUID_PSE (1u << 3)
#define CPUID_PAE (1u << 6)
#define CPUID_PGE (1u << 13)

static inline u32 cpuid_1_edx(void)
{
	u32 a = 1, b, c = 0, d;
	__asm__ volatile("cpuid" : "+a"(a), "=b"(b), "+c"(c), "=d"(d));
	return d;
}

/* ---- paging-structure entries (SDM vol. 3 tables 4-4 to 4-20) ---------- */

#define PTE_P (1u << 0)   /* present */
#define PTE_W (1u << 1)   /* read/write */
#define PTE_U (1u << 2)   /* user/supervisor */
#define PTE_PWT (1u << 3)
#define PTE_PCD (1u << 4)
#define PTE_A (1u << 5)   /* accessed */
#define PTE_D (1u << 6)   /* dirty (PTEs and large-page PDEs only) */
#define PTE_PS (1u << 7)  /* page size (PDEs only: 4 MiB, or 2 MiB with PAE) */
#define PTE_G (1u << 8)   /* global (PTEs and large-page PDEs, with CR4.PGE) */
#define PAGE_SIZE 4096u
#define PAGE_MASK 0xFFFFF000u

/* Page-fault error code (SDM vol. 3 figure 4-12). */
#define PF_P (1u << 0)    /* 0: not present; 1: protection violation */
#define PF_W (1u << 1)    /* write access */
#define PF_U (1u << 2)    /* access at CPL 3 */
#define PF_RSVD (1u << 3) /* reserved bit set in an entry */
#define PF_I (1u << 4)    /* instruction fetch (only with NX or SMEP) */

/* ---- the page-fault catcher -------------------------------------------- */

/* What the handler puts in EAX when it skips a faulting probe access. */
#define PF_POISON 0xBADF00D5u

/* The last page fault the handler saw. */
struct pf_record {
	u32 cr2;   /* CR2 read at the start of the handler */
	u32 error; /* error code pushed by the CPU */
	u32 eip;   /* saved EIP: the faulting instruction */
	u32 cs;    /* saved CS */
};
extern volatile u32 pf_count;
extern volatile struct pf_record pf_last;

/* Routes vector 14 to the catcher. */
void pf_install(void);
/* Registers one more faulting instruction (e.g. in a guest's ring-3
 * code): a #PF whose saved EIP is `fault` resumes at `resume` with
 * EAX = PF_POISON. A handful of sites fit. */
void pf_add_site(const void *fault, const void *resume);
/* Arms an instruction-fetch probe: a #PF whose saved EIP is `target` (a
 * fetch fault at a CALL's destination) resumes at `landing`, which must
 * return to the caller of that CALL. probe_exec arms it for itself; a
 * guest arms it for ring-3 calls. pf_arm_exec(0, 0) disarms. */
void pf_arm_exec(u32 target, const void *landing);

/* Reads the u32 at addr (PF_POISON if it faulted). */
u32 probe_read(u32 addr);
/* Writes value to the u32 at addr (skipped if it faulted). */
void probe_write(u32 addr, u32 value);
/* Calls the code at addr and returns its EAX (PF_POISON if fetching its
 * first instruction faulted). The code must return with RET and may
 * clobber only EAX, ECX and EDX. */
u32 probe_exec(u32 addr);
/* The probes' faulting instructions: the saved EIP of their #PF. */
extern char probe_read_fault[], probe_write_fault[];

/* ---- checking faults --------------------------------------------------- */

/* Starts counting page faults for the next check. */
void pf_begin(void);
/* Page faults since pf_begin(). */
u32 pf_since_begin(void);
/* Checks that no #PF came since pf_begin(). */
void pf_check_none(const char *what);
/* Checks that exactly one #PF came since pf_begin(), with this error code
 * and CR2 (and saved EIP, unless eip is 0). */
void pf_check(const char *what, u32 error, u32 cr2, u32 eip);

#endif
