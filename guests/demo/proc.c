/*
 * Processes: the table, the round-robin scheduler, and fork, exec, wait,
 * exit and sbrk.
 *
 * Each process has its own page directory and an 8 KiB kernel stack (its
 * slot in kstacks). Entering the kernel from user mode, the CPU switches to
 * TSS.ESP0, the top of that stack, so the interrupt frame of a process in
 * the kernel is always at the top of its stack (proc_frame). A process
 * switch saves the callee-saved registers and ESP (swtch in boot.S), sets
 * TSS.ESP0 for the next process and loads its CR3.
 */
#include "kernel.h"

static struct proc procs[NPROC];
struct proc *current;
static struct proc *init_proc;
static int next_pid = 1;

struct frame *proc_frame(struct proc *p)
{
	return (struct frame *)(kstacks[p - procs] + KSTACK_SIZE) - 1;
}

static struct proc *proc_alloc(void)
{
	for (int i = 0; i < NPROC; i++) {
		struct proc *p = &procs[i];
		if (p->state == UNUSED) {
			memset(p, 0, sizeof(*p));
			p->pid = next_pid++;
			return p;
		}
	}
	return NULL;
}

/* Prepares p's kernel stack so that switching to it leaves through
 * trapret with the frame at the top of the stack. */
static void proc_prepare_stack(struct proc *p)
{
	u32 *sp = (u32 *)proc_frame(p);
	*--sp = (u32)trapret;
	for (int i = 0; i < 4; i++)
		*--sp = 0; /* EBP, EBX, ESI, EDI for swtch to pop */
	p->kesp = (u32)sp;
}

static void switch_to(struct proc *next)
{
	struct proc *prev = current;
	current = next;
	next->state = RUNNING;
	kstats.switches++;
	tss.esp0 = (u32)(kstacks[next - procs] + KSTACK_SIZE);
	if (next->pd != prev->pd)
		write_cr3(V2P(next->pd));
	swtch(&prev->kesp, next->kesp);
}

/* The next runnable process after current, round robin (current itself
 * last), or NULL. */
static struct proc *pick_next(void)
{
	int me = current - procs;
	for (int k = 1; k <= NPROC; k++) {
		struct proc *p = &procs[(me + k) % NPROC];
		if (p->state == RUNNABLE)
			return p;
	}
	return NULL;
}

/* Runs the next runnable process; current has already set its own state
 * (RUNNABLE to take turns, SLEEPING, ZOMBIE). */
static void schedule(void)
{
	struct proc *next = pick_next();
	/* Nothing waits on time or devices: with nobody runnable, nobody
	 * ever will be. */
	if (!next)
		panic("deadlock: every process is blocked");
	if (next == current)
		next->state = RUNNING;
	else
		switch_to(next);
}

void preempt(void)
{
	current->state = RUNNABLE;
	if (pick_next() != current)
		kstats.preemptions++;
	schedule();
}

void sleep(void *chan)
{
	current->chan = chan;
	current->state = SLEEPING;
	schedule();
	current->chan = NULL;
}

void wakeup(void *chan)
{
	for (int i = 0; i < NPROC; i++) {
		if (procs[i].state == SLEEPING && procs[i].chan == chan)
			procs[i].state = RUNNABLE;
	}
}

/* ---- exec --------------------------------------------------------------- */

struct elf_header {
	u8 ident[16];
	u16 type, machine;
	u32 version, entry, phoff, shoff, flags;
	u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};

struct elf_phdr {
	u32 type, offset, vaddr, paddr, filesz, memsz, flags, align;
};

#define PT_LOAD 1
#define PF_W 2
#define MAX_ARGS 16
#define MAX_ARG_BYTES 512

static const struct program *find_program(const char *name)
{
	for (u32 i = 0; i < program_count; i++) {
		if (!strcmp(programs[i].name, name))
			return &programs[i];
	}
	return NULL;
}

/* Maps the program's PT_LOAD segments into pd; returns the entry point and
 * the end of the image, or 0 if the ELF is not one we can run. */
static u32 load_elf(u32 *pd, const struct program *prog, u32 *image_end)
{
	const struct elf_header *eh = (const void *)prog->elf;
	if (prog->size < sizeof(*eh) || memcmp(eh->ident, "\177ELF\1\1", 6) || eh->machine != 3 ||
	    eh->phentsize != sizeof(struct elf_phdr) ||
	    eh->phoff + (u32)eh->phnum * sizeof(struct elf_phdr) > prog->size)
		return 0;
	const struct elf_phdr *ph = (const void *)(prog->elf + eh->phoff);
	*image_end = 0;
	for (u32 i = 0; i < eh->phnum; i++, ph++) {
		if (ph->type != PT_LOAD || !ph->memsz)
			continue;
		u32 end = ph->vaddr + ph->memsz;
		if (ph->vaddr < USER_MIN || end < ph->vaddr || end > USER_TOP - USER_STACK_MAX ||
		    ph->filesz > ph->memsz || ph->offset + ph->filesz > prog->size ||
		    ph->offset + ph->filesz < ph->offset)
			return 0;
		u32 flags = (ph->flags & PF_W) ? PTE_W : 0;
		for (u32 va = PAGE_DOWN(ph->vaddr); va < end; va += PAGE_SIZE) {
			u32 *pte = pd_pte(pd, va, 0);
			if (pte && (*pte & PTE_P))
				*pte |= flags; /* a page two segments share */
			else if (map_new_page(pd, va, flags) < 0)
				return 0;
		}
		/* The file bytes; the rest of memsz stays zero. */
		for (u32 done = 0; done < ph->filesz;) {
			u32 va = ph->vaddr + done;
			u32 chunk = MIN(ph->filesz - done, PAGE_SIZE - (va & (PAGE_SIZE - 1)));
			u8 *page = P2V(*pd_pte(pd, va, 0) & ~0xFFFu);
			copy_bytes(page + (va & (PAGE_SIZE - 1)), prog->elf + ph->offset + done, chunk);
			done += chunk;
		}
		if (end > *image_end)
			*image_end = end;
	}
	return *image_end ? eh->entry : 0;
}

/*
 * Replaces p's program with the embedded program `name`, arguments argv
 * (kernel strings). Until the new image is complete nothing of the old one
 * is touched, so a failed exec returns -1 to a process that carries on.
 */
static int exec_into(struct proc *p, const char *name, char *const *argv, int argc)
{
	const struct program *prog = find_program(name);
	if (!prog)
		return -1;
	u32 *pd = pd_create();
	if (!pd)
		return -1;
	u32 image_end;
	u32 entry = load_elf(pd, prog, &image_end);
	if (!entry || map_new_page(pd, USER_TOP - PAGE_SIZE, PTE_W) < 0) {
		pd_destroy(pd);
		return -1;
	}

	/* The stack: argument strings at the top, then argv[], then what a
	 * cdecl call of _start(argc, argv) leaves (ESP % 16 == 12). */
	u32 base = USER_TOP - PAGE_SIZE;
	u8 *stack = P2V(*pd_pte(pd, base, 0) & ~0xFFFu);
	u32 sp = USER_TOP, uargv[MAX_ARGS + 1];
	for (int i = argc - 1; i >= 0; i--) {
		u32 len = strlen(argv[i]) + 1;
		sp -= len;
		memcpy(stack + (sp - base), argv[i], len);
		uargv[i] = sp;
	}
	uargv[argc] = 0;
	sp = (sp & ~15u) - (argc + 1) * 4;
	u32 argv_at = sp;
	memcpy(stack + (sp - base), uargv, (argc + 1) * 4);
	sp = ((sp - 24) & ~15u) + 12;
	u32 call[3] = { 0, (u32)argc, argv_at }; /* return address, argc, argv */
	memcpy(stack + (sp - base), call, sizeof(call));

	u32 *old = p->pd;
	p->pd = pd;
	if (p == current)
		write_cr3(V2P(pd));
	if (old)
		pd_destroy(old);
	p->heap_start = p->brk = PAGE_UP(image_end);
	u32 n = MIN(strlen(name), sizeof(p->name) - 1);
	memcpy(p->name, name, n);
	p->name[n] = 0;

	struct frame *f = proc_frame(p);
	memset(f, 0, sizeof(*f));
	f->gs = f->fs = f->es = f->ds = SEL_UDATA_RPL3;
	f->eip = entry;
	f->cs = SEL_UCODE_RPL3;
	f->eflags = EFLAGS_FIXED | EFLAGS_IF;
	f->user_esp = sp;
	f->user_ss = SEL_UDATA_RPL3;
	kstats.execs++;
	return 0;
}

/* Kernel copies of exec's name and arguments (the kernel does not sleep
 * in exec, so one buffer serves every process). */
static char exec_name[32];
static char exec_strings[MAX_ARG_BYTES];
static char *exec_argv[MAX_ARGS + 1];

int proc_exec(u32 uname, u32 uargv)
{
	struct proc *p = current;
	if (copyinstr(p, exec_name, uname, sizeof(exec_name)) < 0)
		return -1;
	int argc = 0;
	u32 used = 0;
	for (;;) {
		u32 arg;
		if (argc > MAX_ARGS || copyin(p, &arg, uargv + 4 * argc, 4) < 0)
			return -1;
		if (!arg)
			break;
		if (argc == MAX_ARGS)
			return -1;
		int len = copyinstr(p, exec_strings + used, arg, MAX_ARG_BYTES - used);
		if (len < 0)
			return -1;
		exec_argv[argc++] = exec_strings + used;
		used += len + 1;
	}
	exec_argv[argc] = NULL;
	return exec_into(p, exec_name, exec_argv, argc);
}

/* ---- the first process -------------------------------------------------- */

void proc_start_init(const char *const *argv, int argc)
{
	struct proc *p = proc_alloc();
	init_proc = p;
	files_init_console(p);
	if (exec_into(p, "init", (char *const *)argv, argc) < 0)
		panic("cannot start init");
	proc_prepare_stack(p);

	/* Leave the boot stack for good. */
	static struct proc boot;
	boot.pd = kernel_pd;
	current = &boot;
	outb(0x80, MARK_INIT);
	switch_to(p);
	panic("returned to the boot stack");
}

/* ---- fork, wait, exit, sbrk --------------------------------------------- */

int proc_fork(struct frame *f)
{
	struct proc *p = current, *c = proc_alloc();
	if (!c)
		return -1;
	c->state = SLEEPING; /* claimed, not runnable yet */
	c->pd = pd_create();
	if (!c->pd || pd_fork(p->pd, c->pd) < 0) {
		if (c->pd)
			pd_destroy(c->pd);
		write_cr3(V2P(p->pd));
		c->state = UNUSED;
		return -1;
	}
	/* The parent's writable pages just became read-only. */
	write_cr3(V2P(p->pd));

	c->parent = p;
	c->heap_start = p->heap_start;
	c->brk = p->brk;
	memcpy(c->name, p->name, sizeof(c->name));
	for (int fd = 0; fd < NOFILE; fd++)
		c->files[fd] = p->files[fd] ? file_dup(p->files[fd]) : NULL;
	struct frame *cf = proc_frame(c);
	*cf = *f;
	cf->eax = 0; /* fork returns 0 in the child */
	proc_prepare_stack(c);
	c->state = RUNNABLE;
	kstats.forks++;
	return c->pid;
}

int proc_wait(u32 ustatus)
{
	struct proc *p = current;
	for (;;) {
		int children = 0;
		for (int i = 0; i < NPROC; i++) {
			struct proc *c = &procs[i];
			if (c->state == UNUSED || c->parent != p)
				continue;
			children++;
			if (c->state != ZOMBIE)
				continue;
			int pid = c->pid, code = c->exit_code;
			pd_destroy(c->pd); /* its user part went at exit */
			c->state = UNUSED;
			if (ustatus && copyout(p, ustatus, &code, sizeof(code)) < 0)
				return -1;
			return pid;
		}
		if (!children)
			return -1;
		sleep(p);
	}
}

void proc_exit(int code)
{
	struct proc *p = current;
	if (p == init_proc)
		shutdown(code);
	for (int fd = 0; fd < NOFILE; fd++) {
		if (p->files[fd]) {
			file_close(p->files[fd]);
			p->files[fd] = NULL;
		}
	}
	/* Its memory goes now; the directory (whose kernel part this code is
	 * still running on) goes when the parent reaps it. */
	pd_clear_user(p->pd);
	for (int i = 0; i < NPROC; i++) {
		if (procs[i].state != UNUSED && procs[i].parent == p) {
			procs[i].parent = init_proc;
			if (procs[i].state == ZOMBIE)
				wakeup(init_proc);
		}
	}
	p->exit_code = code;
	p->state = ZOMBIE;
	wakeup(p->parent);
	schedule();
	panic("a zombie ran");
}

int proc_sbrk(int delta)
{
	struct proc *p = current;
	u32 old = p->brk, new = old + (u32)delta;
	if (delta > 0 && (new < old || new > USER_TOP - USER_STACK_MAX))
		return -1;
	if (delta < 0 && (new > old || new < p->heap_start))
		return -1;
	for (u32 va = PAGE_UP(old); va < PAGE_UP(new); va += PAGE_SIZE) {
		if (map_new_page(p->pd, va, PTE_W) < 0) {
			for (u32 undo = PAGE_UP(old); undo < va; undo += PAGE_SIZE)
				unmap_page(p->pd, undo);
			return -1;
		}
	}
	for (u32 va = PAGE_UP(new); va < PAGE_UP(old); va += PAGE_SIZE)
		unmap_page(p->pd, va);
	p->brk = new;
	return (int)old;
}
