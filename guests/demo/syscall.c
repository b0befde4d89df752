/*
 * System calls (user/sys.h), open files and pipes.
 *
 * A file is the console or one end of a pipe; descriptors in a process's
 * table point to shared, reference-counted files (fork duplicates the
 * references). A pipe is a 4 KiB ring buffer: readers sleep while it is
 * empty and someone may still write, writers sleep while it is full and
 * someone may still read. Data moves between the ring and user memory
 * with copyin/copyout, which walk the process's page tables.
 */
#include "kernel.h"

enum file_type { FILE_NONE, FILE_CONSOLE, FILE_PIPE_READ, FILE_PIPE_WRITE };

struct pipe {
	u8 *buf; /* one page */
	u32 nread, nwrite; /* bytes ever read and written */
	int readers, writers;
};

struct file {
	enum file_type type;
	int refs;
	struct pipe *pipe;
};

#define NFILES 128
#define NPIPES 32
#define PIPE_SIZE PAGE_SIZE

static struct file files[NFILES];
static struct pipe pipes[NPIPES];
static struct file console = { FILE_CONSOLE, 1, NULL };

static struct file *file_alloc(enum file_type type, struct pipe *pipe)
{
	for (int i = 0; i < NFILES; i++) {
		if (files[i].type == FILE_NONE) {
			files[i] = (struct file){ type, 1, pipe };
			return &files[i];
		}
	}
	return NULL;
}

struct file *file_dup(struct file *f)
{
	f->refs++;
	return f;
}

void file_close(struct file *f)
{
	if (--f->refs > 0)
		return;
	struct pipe *pp = f->pipe;
	if (f->type == FILE_PIPE_READ) {
		pp->readers--;
		wakeup(&pp->nwrite);
	} else if (f->type == FILE_PIPE_WRITE) {
		pp->writers--;
		wakeup(&pp->nread);
	}
	if (pp && !pp->readers && !pp->writers) {
		page_unref(V2P(pp->buf));
		pp->buf = NULL;
	}
	if (f != &console)
		f->type = FILE_NONE;
}

void files_init_console(struct proc *p)
{
	for (int fd = 0; fd < 3; fd++)
		p->files[fd] = file_dup(&console);
}

static int fd_alloc(struct proc *p, struct file *f)
{
	for (int fd = 0; fd < NOFILE; fd++) {
		if (!p->files[fd]) {
			p->files[fd] = f;
			return fd;
		}
	}
	return -1;
}

static struct file *fd_get(struct proc *p, u32 fd)
{
	return fd < NOFILE ? p->files[fd] : NULL;
}

/* ---- pipes -------------------------------------------------------------- */

static int sys_pipe(u32 ufds)
{
	struct proc *p = current;
	struct pipe *pp = NULL;
	for (int i = 0; i < NPIPES && !pp; i++) {
		if (!pipes[i].buf)
			pp = &pipes[i];
	}
	u32 pa = pp ? page_alloc() : 0;
	if (!pa)
		return -1;
	*pp = (struct pipe){ P2V(pa), 0, 0, 0, 0 };
	struct file *r = file_alloc(FILE_PIPE_READ, pp);
	if (!r) {
		page_unref(pa);
		pp->buf = NULL;
		return -1;
	}
	pp->readers = 1;
	struct file *w = file_alloc(FILE_PIPE_WRITE, pp);
	if (!w) {
		file_close(r); /* frees the pipe: no readers, no writers */
		return -1;
	}
	pp->writers = 1;
	int fds[2];
	fds[0] = fd_alloc(p, r);
	fds[1] = fds[0] >= 0 ? fd_alloc(p, w) : -1;
	if (fds[1] < 0 || copyout(p, ufds, fds, sizeof(fds)) < 0) {
		if (fds[0] >= 0)
			p->files[fds[0]] = NULL;
		if (fds[1] >= 0)
			p->files[fds[1]] = NULL;
		file_close(r);
		file_close(w);
		return -1;
	}
	return 0;
}

static int pipe_read(struct pipe *pp, u32 ubuf, u32 len)
{
	while (pp->nread == pp->nwrite && pp->writers > 0)
		sleep(&pp->nread);
	u32 n = MIN(len, pp->nwrite - pp->nread);
	for (u32 done = 0; done < n;) {
		u32 at = pp->nread % PIPE_SIZE;
		u32 chunk = MIN(n - done, PIPE_SIZE - at);
		if (copyout(current, ubuf + done, pp->buf + at, chunk) < 0)
			return -1;
		pp->nread += chunk;
		done += chunk;
	}
	wakeup(&pp->nwrite);
	return (int)n;
}

static int pipe_write(struct pipe *pp, u32 ubuf, u32 len)
{
	u32 done = 0;
	while (done < len) {
		if (!pp->readers)
			return done ? (int)done : -1;
		u32 space = PIPE_SIZE - (pp->nwrite - pp->nread);
		if (!space) {
			wakeup(&pp->nread);
			sleep(&pp->nwrite);
			continue;
		}
		u32 at = pp->nwrite % PIPE_SIZE;
		u32 chunk = MIN(MIN(len - done, space), PIPE_SIZE - at);
		if (copyin(current, pp->buf + at, ubuf + done, chunk) < 0)
			return -1;
		pp->nwrite += chunk;
		done += chunk;
	}
	wakeup(&pp->nread);
	return (int)done;
}

/* ---- read and write ----------------------------------------------------- */

static int console_write(u32 ubuf, u32 len)
{
	char chunk[128];
	for (u32 done = 0; done < len;) {
		u32 n = MIN(len - done, sizeof(chunk));
		if (copyin(current, chunk, ubuf + done, n) < 0)
			return -1;
		for (u32 i = 0; i < n; i++)
			putchar(chunk[i]);
		done += n;
	}
	return (int)len;
}

static int sys_write(u32 fd, u32 ubuf, u32 len)
{
	struct file *f = fd_get(current, fd);
	if (!f)
		return -1;
	if (f->type == FILE_CONSOLE)
		return console_write(ubuf, len);
	if (f->type == FILE_PIPE_WRITE)
		return pipe_write(f->pipe, ubuf, len);
	return -1;
}

static int sys_read(u32 fd, u32 ubuf, u32 len)
{
	struct file *f = fd_get(current, fd);
	if (!f)
		return -1;
	if (f->type == FILE_CONSOLE)
		return 0; /* no keyboard: the console is at end of file */
	if (f->type == FILE_PIPE_READ)
		return pipe_read(f->pipe, ubuf, len);
	return -1;
}

static int sys_close(u32 fd)
{
	struct file *f = fd_get(current, fd);
	if (!f)
		return -1;
	current->files[fd] = NULL;
	file_close(f);
	return 0;
}

/* ---- dispatch ----------------------------------------------------------- */

void syscall(struct frame *f)
{
	u32 a = f->ebx, b = f->ecx, c = f->edx;
	int ret;
	switch (f->eax) {
	case SYS_WRITE:
		ret = sys_write(a, b, c);
		break;
	case SYS_READ:
		ret = sys_read(a, b, c);
		break;
	case SYS_FORK:
		ret = proc_fork(f);
		break;
	case SYS_EXEC:
		ret = proc_exec(a, b);
		break;
	case SYS_WAIT:
		ret = proc_wait(a);
		break;
	case SYS_EXIT:
		proc_exit((int)a);
	case SYS_GETPID:
		ret = current->pid;
		break;
	case SYS_SBRK:
		ret = proc_sbrk((int)a);
		break;
	case SYS_PIPE:
		ret = sys_pipe(a);
		break;
	case SYS_CLOSE:
		ret = sys_close(a);
		break;
	case SYS_MARK:
		outb(0x80, (u8)a);
		ret = 0;
		break;
	case SYS_MEMINFO:
		ret = (int)pages_free();
		break;
	case SYS_FASTCALL:
		ret = (int)sysenter_ready;
		break;
	default:
		ret = -1;
		break;
	}
	f->eax = (u32)ret;
}
