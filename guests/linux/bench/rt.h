/*
 * popek-bench's runtime: no C library (this machine has no i386 libc.a,
 * and the same static binary must run on the host, in Debian's initramfs
 * and under QEMU without depending on either's libraries). System calls go
 * where the C libraries send them: to `__kernel_vsyscall` in the vDSO,
 * whose address the kernel passes in the aux vector (AT_SYSINFO), with
 * the i386 Linux numbers; the kernel picks its fastest entry there
 * (SYSENTER, SYSCALL on AMD under a 64-bit kernel, or `int $0x80`). The
 * `syscall` workload alone uses `int $0x80` itself (sys0_int80).
 */
#ifndef RT_H
#define RT_H

typedef unsigned char u8;
typedef unsigned int u32;
typedef int s32;
typedef unsigned long long u64;

#define NULL ((void *)0)

/* i386 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl). */
enum {
	NR_fork = 2,
	NR_read = 3,
	NR_write = 4,
	NR_close = 6,
	NR_execve = 11,
	NR_access = 33,
	NR_pipe = 42,
	NR_getppid = 64,
	NR_munmap = 91,
	NR_wait4 = 114,
	NR_mmap2 = 192,
	NR_madvise = 219,
	NR_futex = 240,
	NR_sched_setaffinity = 241,
	NR_exit_group = 252,
};

enum {
	PROT_READ = 1,
	PROT_WRITE = 2,
	MAP_SHARED = 0x01,
	MAP_PRIVATE = 0x02,
	MAP_ANONYMOUS = 0x20,
	MADV_NOHUGEPAGE = 15,
	X_OK = 1,
	EINTR = 4,
	EAGAIN = 11,
	PAGE_SIZE = 4096,
};

/* A raw result in [-4095, -1] is -errno, as the kernel returns it. */
static inline int is_error(long r)
{
	return (unsigned long)r > -4096UL;
}

/* __kernel_vsyscall from AT_SYSINFO, or rt_int80 (an `int $0x80; ret`)
 * where the kernel gave none. */
extern u32 rt_vsyscall;

/* A system call through `int $0x80` itself, whatever AT_SYSINFO says. */
static inline long sys0_int80(long n)
{
	long r;
	__asm__ volatile("int $0x80" : "=a"(r) : "a"(n) : "memory");
	return r;
}

static inline long sys0(long n)
{
	long r;
	__asm__ volatile("call *rt_vsyscall" : "=a"(r) : "a"(n) : "memory");
	return r;
}

static inline long sys1(long n, long a)
{
	long r;
	__asm__ volatile("call *rt_vsyscall" : "=a"(r) : "a"(n), "b"(a) : "memory");
	return r;
}

static inline long sys2(long n, long a, long b)
{
	long r;
	__asm__ volatile("call *rt_vsyscall" : "=a"(r) : "a"(n), "b"(a), "c"(b) : "memory");
	return r;
}

static inline long sys3(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("call *rt_vsyscall" : "=a"(r) : "a"(n), "b"(a), "c"(b), "d"(c) : "memory");
	return r;
}

static inline long sys4(long n, long a, long b, long c, long d)
{
	long r;
	__asm__ volatile("call *rt_vsyscall"
			 : "=a"(r)
			 : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d)
			 : "memory");
	return r;
}

static inline long sys5(long n, long a, long b, long c, long d, long e)
{
	long r;
	__asm__ volatile("call *rt_vsyscall"
			 : "=a"(r)
			 : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
			 : "memory");
	return r;
}

static inline u64 rdtsc(void)
{
	u32 lo, hi;
	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((u64)hi << 32) | lo;
}

/* Wrappers; each returns the raw kernel result (-errno on failure). */
long sys_fork(void);
long sys_wait4(long pid, int *status);
long sys_pipe(int fds[2]);
long sys_read(int fd, void *buf, u32 len);
long sys_write(int fd, const void *buf, u32 len);
long sys_close(int fd);
long sys_execve(const char *path, char *const argv[], char *const envp[]);
long sys_access(const char *path, int mode);
/* mmap2 with file offset 0, the only one anonymous mappings need. */
long sys_mmap(void *addr, u32 len, int prot, int flags);
long sys_munmap(void *addr, u32 len);
long sys_madvise(void *addr, u32 len, int advice);
/* Shared (not FUTEX_PRIVATE) futexes: they work across fork on a
 * MAP_SHARED page. wait sleeps while *addr == val. */
long sys_futex_wait(u32 *addr, u32 val);
long sys_futex_wake(u32 *addr, u32 count);
/* Pins the calling process to CPU `cpu`. */
long pin_to_cpu(u32 cpu);
void sys_exit(int code) __attribute__((noreturn));

/* v / d, without libgcc's __udivdi3 (there is no libgcc here). */
u64 div_u64(u64 v, u32 d);

/* Parses a decimal u32; returns 0 if s is not one, or on overflow. */
u32 parse_u32(const char *s);
u32 str_len(const char *s);
/* Write v in decimal, or s, at p (no NUL); return the end. */
char *put_dec(char *p, u64 v);
char *put_str(char *p, const char *s);
int str_eq(const char *a, const char *b);

/*
 * One output line, built in a buffer and written with a single write(2),
 * so a line never interleaves with another process's output.
 */
void out_str(const char *s);
void out_dec(u64 v);
void out_char(char c);
/* Writes the buffered line to stdout and empties the buffer. */
void out_flush(void);

/* The compiler may emit calls to these even in freestanding code; they
 * come from the guests' guests/lib/string.c. */
void *memset(void *d, int c, u32 n);
void *memcpy(void *d, const void *s, u32 n);

#endif
