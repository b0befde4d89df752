/*
 * The demo kernel's internal interfaces.
 *
 * The kernel runs with interrupts disabled (every gate is an interrupt
 * gate; only user mode runs with IF=1), on one CPU, so it needs no locks:
 * a process leaves the kernel only by sleeping, exiting or being
 * preempted on its way back to user mode.
 */
#ifndef DEMO_KERNEL_H
#define DEMO_KERNEL_H

#include "popek.h"
#include "kernel_defs.h"

#define P2V(pa) ((void *)((u32)(pa) + KERNEL_BASE))
#define V2P(va) ((u32)(va) - KERNEL_BASE)
#define PAGE_DOWN(a) ((u32)(a) & ~(PAGE_SIZE - 1))
#define PAGE_UP(a) (((u32)(a) + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1))
#define MIN(a, b) ((a) < (b) ? (a) : (b))

#define SEL_UCODE_RPL3 (SEL_UCODE | 3)
#define SEL_UDATA_RPL3 (SEL_UDATA | 3)

/* ---- main.c ------------------------------------------------------------- */

extern volatile u32 ticks;

/* What the kernel counts, printed at shutdown. */
struct kstats {
	u32 syscalls, page_faults, cow_copies, cow_reuses, demand_pages, switches, preemptions, forks, execs;
};
extern struct kstats kstats;

#define panic(...)                                  \
	do {                                        \
		kprintf("demo: panic: " __VA_ARGS__); \
		panic_stop();                       \
	} while (0)
void panic_stop(void) __attribute__((noreturn));
/* Ends the VM through isa-debug-exit: value 0 if init exited with 0. */
void shutdown(int init_status) __attribute__((noreturn));

static inline void write_cr3(u32 pa) { __asm__ volatile("movl %0, %%cr3" : : "r"(pa) : "memory"); }
static inline u32 read_cr2(void)
{
	u32 v;
	__asm__ volatile("movl %%cr2, %0" : "=r"(v));
	return v;
}
static inline void invlpg(u32 va) { __asm__ volatile("invlpg (%0)" : : "r"(va) : "memory"); }

/* Word-at-a-time page operations (one REP instruction each). */
static inline void page_zero(void *p)
{
	u32 d, c;
	__asm__ volatile("rep stosl" : "=D"(d), "=c"(c) : "0"(p), "1"(PAGE_SIZE / 4), "a"(0) : "memory");
}
static inline void page_copy(void *dst, const void *src)
{
	u32 d, s, c;
	__asm__ volatile("rep movsl" : "=D"(d), "=S"(s), "=c"(c) : "0"(dst), "1"(src), "2"(PAGE_SIZE / 4) : "memory");
}

static inline void copy_bytes(void *dst, const void *src, u32 n)
{
	u32 d, s, c;
	__asm__ volatile("rep movsb" : "=D"(d), "=S"(s), "=c"(c) : "0"(dst), "1"(src), "2"(n) : "memory");
}

/* ---- mm.c: physical pages and address spaces ---------------------------- */

extern u32 kernel_pd[1024];

struct mem_range {
	u32 start, end; /* physical, page aligned */
};

/* Maps RAM up to ram_end at KERNEL_BASE and drops the boot identity map. */
void paging_init(u32 ram_end);
/* Hands the pages of `ranges` to the allocator. */
void pages_init(const struct mem_range *ranges, int count);
/* A page (physical address, reference count 1), or 0 when memory is out. */
u32 page_alloc(void);
void page_ref(u32 pa);
void page_unref(u32 pa); /* frees the page when the count drops to 0 */
u32 pages_free(void);

/* A new page directory: empty user half, the kernel's upper quarter. */
u32 *pd_create(void);
/* Frees every user page and page table of pd (the directory stays). */
void pd_clear_user(u32 *pd);
/* pd_clear_user, then frees the directory itself. */
void pd_destroy(u32 *pd);
/* The PTE for va in pd (NULL if there is no page table); with create,
 * makes the page table if needed (NULL if memory is out). */
u32 *pd_pte(u32 *pd, u32 va, int create);
/* Maps a new zeroed page at va; 0 on success. */
int map_new_page(u32 *pd, u32 va, u32 flags);
/* Unmaps va (if mapped) and drops its page. */
void unmap_page(u32 *pd, u32 va);
/* Shares every user page of parent with child: writable ones become
 * read-only + PTE_COW in both. The caller flushes the parent's TLB. */
int pd_fork(u32 *parent, u32 *child);

struct proc;
/*
 * Makes user address va accessible the way a user access (write or not)
 * would find it: allocates a demand-zero stack page, or copies a shared
 * copy-on-write page. Returns the page's PTE, or NULL if the access is a
 * segmentation fault or memory ran out.
 */
u32 *user_page(struct proc *p, u32 va, int write);
/* Copies to/from p's user memory; 0 or -1 (bad address). */
int copyout(struct proc *p, u32 uva, const void *src, u32 n);
int copyin(struct proc *p, void *dst, u32 uva, u32 n);
/* Copies a NUL-terminated string of at most max-1 chars; its length or -1. */
int copyinstr(struct proc *p, char *dst, u32 uva, u32 max);

/* ---- proc.c: processes and the scheduler -------------------------------- */

enum proc_state { UNUSED, RUNNABLE, RUNNING, SLEEPING, ZOMBIE };

#define NOFILE 16

struct file;

struct proc {
	int pid;
	enum proc_state state;
	struct proc *parent;
	u32 *pd;          /* page directory (virtual address) */
	u32 kesp;         /* saved kernel ESP while switched out */
	u32 heap_start;   /* end of the program image, page aligned */
	u32 brk;          /* the program break (sbrk) */
	void *chan;       /* what it sleeps on */
	int exit_code;
	struct file *files[NOFILE];
	char name[16];
};

extern struct proc *current;

/* The frame through which p entered the kernel from user mode: always at
 * the top of its kernel stack. */
struct frame *proc_frame(struct proc *p);
void proc_start_init(const char *const *argv, int argc) __attribute__((noreturn));
/* From the timer interrupt: lets the next runnable process have the CPU. */
void preempt(void);
void sleep(void *chan);
void wakeup(void *chan);
int proc_fork(struct frame *f);
/* On success the frame at the top of the stack enters the new program. */
int proc_exec(u32 uname, u32 uargv);
int proc_wait(u32 ustatus);
void proc_exit(int code) __attribute__((noreturn));
int proc_sbrk(int delta);

/* ---- syscall.c: system calls, files and pipes --------------------------- */

void syscall(struct frame *f);
/* The console on fds 0, 1 and 2 of init. */
void files_init_console(struct proc *p);
struct file *file_dup(struct file *f);
void file_close(struct file *f);

/* ---- embedded user programs (generated by build.rs) --------------------- */

struct program {
	const char *name;
	const u8 *elf;
	u32 size;
};
extern const struct program programs[];
extern const u32 program_count;

/* ---- boot.S ------------------------------------------------------------- */

void swtch(u32 *save_esp, u32 esp);
void trapret(void);
extern u8 kstacks[NPROC][KSTACK_SIZE];
extern char boot_stack_top[];
/* Set at boot where the CPU has SYSENTER (CPUID SEP) and the kernel set
 * up its entry: SYS_FASTCALL tells user code. */
extern u32 sysenter_ready;

#endif
