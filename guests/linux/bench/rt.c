/*
 * popek-bench's runtime: entry, system call wrappers, formatting. See rt.h.
 */
#include "rt.h"

int main(int argc, char **argv, char **envp);

/* The system call stub for kernels that pass no AT_SYSINFO. */
__asm__(".globl rt_int80\n"
	"rt_int80:\n\t"
	"int $0x80\n\t"
	"ret\n");
void rt_int80(void);

u32 rt_vsyscall = (u32)rt_int80;

enum { AT_NULL = 0, AT_SYSINFO = 32 };

/* Called by _start with the initial stack: argc, argv[], NULL, envp[],
 * NULL, then the aux vector's (type, value) pairs up to AT_NULL. */
void __attribute__((noreturn, used)) rt_start(u32 *sp)
{
	int argc = (int)sp[0];
	char **argv = (char **)(sp + 1);
	char **envp = argv + argc + 1;
	char **e = envp;
	while (*e)
		e++;
	for (u32 *aux = (u32 *)(e + 1); aux[0] != AT_NULL; aux += 2)
		if (aux[0] == AT_SYSINFO)
			rt_vsyscall = aux[1];
	sys_exit(main(argc, argv, envp));
}

/*
 * The kernel enters with ESP at argc and no alignment promise beyond 4;
 * gcc's code assumes a 16-byte aligned stack at every call.
 */
__asm__(".globl _start\n"
	"_start:\n\t"
	"movl %esp, %eax\n\t"
	"andl $-16, %esp\n\t"
	"subl $12, %esp\n\t"
	"pushl %eax\n\t"
	"call rt_start\n\t"
	"hlt\n");

long sys_fork(void)
{
	return sys0(NR_fork);
}

long sys_wait4(long pid, int *status)
{
	return sys4(NR_wait4, pid, (long)status, 0, 0);
}

long sys_pipe(int fds[2])
{
	return sys1(NR_pipe, (long)fds);
}

long sys_read(int fd, void *buf, u32 len)
{
	return sys3(NR_read, fd, (long)buf, (long)len);
}

long sys_write(int fd, const void *buf, u32 len)
{
	return sys3(NR_write, fd, (long)buf, (long)len);
}

long sys_close(int fd)
{
	return sys1(NR_close, fd);
}

long sys_execve(const char *path, char *const argv[], char *const envp[])
{
	return sys3(NR_execve, (long)path, (long)argv, (long)envp);
}

long sys_access(const char *path, int mode)
{
	return sys2(NR_access, (long)path, mode);
}

long sys_mmap(void *addr, u32 len, int prot, int flags)
{
	long r;
	/* The sixth argument (the page offset) travels in EBP, which gcc
	 * cannot take as an operand: save it, zero it, restore it. */
	__asm__ volatile("pushl %%ebp\n\t"
			 "xorl %%ebp, %%ebp\n\t"
			 "call *rt_vsyscall\n\t"
			 "popl %%ebp"
			 : "=a"(r)
			 : "a"(NR_mmap2), "b"(addr), "c"(len), "d"(prot), "S"(flags), "D"(-1)
			 : "memory");
	return r;
}

long sys_munmap(void *addr, u32 len)
{
	return sys2(NR_munmap, (long)addr, (long)len);
}

long sys_madvise(void *addr, u32 len, int advice)
{
	return sys3(NR_madvise, (long)addr, (long)len, advice);
}

enum { FUTEX_WAIT = 0, FUTEX_WAKE = 1 };

long sys_futex_wait(u32 *addr, u32 val)
{
	return sys4(NR_futex, (long)addr, FUTEX_WAIT, (long)val, 0);
}

long sys_futex_wake(u32 *addr, u32 count)
{
	return sys3(NR_futex, (long)addr, FUTEX_WAKE, (long)count);
}

long pin_to_cpu(u32 cpu)
{
	/* Big enough for any host's CPU count: the kernel refuses a mask
	 * shorter than its nr_cpu_ids bits. */
	u32 mask[256];
	memset(mask, 0, sizeof mask);
	mask[cpu / 32] = 1u << (cpu % 32);
	return sys3(NR_sched_setaffinity, 0, sizeof mask, (long)mask);
}

void sys_exit(int code)
{
	for (;;)
		sys1(NR_exit_group, code);
}

u64 div_u64(u64 v, u32 d)
{
	u32 hi = (u32)(v >> 32), lo = (u32)v, qhi = hi / d, r = hi % d, qlo;
	__asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
	return ((u64)qhi << 32) | qlo;
}

u32 parse_u32(const char *s)
{
	u32 v = 0;
	if (!*s)
		return 0;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return 0;
		u32 digit = (u32)(*s - '0');
		if (v > (0xFFFFFFFFu - digit) / 10)
			return 0;
		v = v * 10 + digit;
	}
	return v;
}

u32 str_len(const char *s)
{
	u32 n = 0;
	while (s[n])
		n++;
	return n;
}

int str_eq(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static char line[512];
static u32 line_len;

void out_char(char c)
{
	/* Keep room for the newline out_flush adds. */
	if (line_len < sizeof line - 1)
		line[line_len++] = c;
}

void out_str(const char *s)
{
	while (*s)
		out_char(*s++);
}

char *put_dec(char *p, u64 v)
{
	char digits[24];
	int n = 0;
	do {
		u64 q = div_u64(v, 10);
		digits[n++] = (char)('0' + (u32)(v - q * 10));
		v = q;
	} while (v);
	while (n)
		*p++ = digits[--n];
	return p;
}

char *put_str(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

void out_dec(u64 v)
{
	char digits[24];
	*put_dec(digits, v) = 0;
	out_str(digits);
}

void out_flush(void)
{
	line[line_len++] = '\n';
	sys_write(1, line, line_len);
	line_len = 0;
}
