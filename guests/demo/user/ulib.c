/* The demo's user runtime (see ulib.h). */
#include "ulib.h"

/* ---- entry ------------------------------------------------------------- */

/*
 * exec leaves ESP pointing at a zero return address followed by argc and
 * argv, exactly what a cdecl call would leave, so _start is plain C.
 */
void _start(int argc, char **argv) __attribute__((noreturn, section(".text.start")));
/* ---- system calls ------------------------------------------------------ */

/* SYSENTER for system calls: what SYS_FASTCALL said at start. */
static int fast;

static inline int syscall3(u32 nr, u32 a, u32 b, u32 c)
{
	int ret;
	if (fast)
		__asm__ volatile("pushl %%ebp\n\t"
				 "pushl %%esi\n\t"
				 "movl %%esp, %%ebp\n\t"
				 "movl $1f, %%esi\n\t"
				 "sysenter\n"
				 "1:\n\t"
				 "popl %%esi\n\t"
				 "popl %%ebp"
				 : "=a"(ret)
				 : "a"(nr), "b"(a), "c"(b), "d"(c)
				 : "memory", "cc");
	else
		__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return ret;
}

void _start(int argc, char **argv)
{
	fast = syscall3(SYS_FASTCALL, 0, 0, 0) == 1;
	exit(main(argc, argv));
}

int write(int fd, const void *buf, u32 len) { return syscall3(SYS_WRITE, fd, (u32)buf, len); }
int read(int fd, void *buf, u32 len) { return syscall3(SYS_READ, fd, (u32)buf, len); }
int fork(void) { return syscall3(SYS_FORK, 0, 0, 0); }
int exec(const char *name, char *const argv[]) { return syscall3(SYS_EXEC, (u32)name, (u32)argv, 0); }
int wait(int *status) { return syscall3(SYS_WAIT, (u32)status, 0, 0); }
int getpid(void) { return syscall3(SYS_GETPID, 0, 0, 0); }
void *sbrk(int delta) { return (void *)syscall3(SYS_SBRK, (u32)delta, 0, 0); }
int pipe(int fds[2]) { return syscall3(SYS_PIPE, (u32)fds, 0, 0); }
int close(int fd) { return syscall3(SYS_CLOSE, fd, 0, 0); }
void mark(u8 code) { syscall3(SYS_MARK, code, 0, 0); }
u32 meminfo(void) { return (u32)syscall3(SYS_MEMINFO, 0, 0, 0); }

void exit(int code)
{
	syscall3(SYS_EXIT, code, 0, 0);
	for (;;)
		; /* not reached */
}

/* ---- helpers ----------------------------------------------------------- */

u64 divmod64(u64 v, u32 d, u32 *rem)
{
	u32 hi = (u32)(v >> 32), lo = (u32)v, qhi = hi / d, r = hi % d, qlo;
	__asm__("divl %4" : "=a"(qlo), "=d"(r) : "a"(lo), "d"(r), "rm"(d));
	if (rem)
		*rem = r;
	return ((u64)qhi << 32) | qlo;
}

int strncmp(const char *a, const char *b, u32 n)
{
	for (; n; n--, a++, b++) {
		if (*a != *b || !*a)
			return (u8)*a - (u8)*b;
	}
	return 0;
}

u32 parse_u32(const char *s)
{
	u32 v = 0;
	if (*s < '0' || *s > '9')
		return 0;
	while (*s >= '0' && *s <= '9')
		v = v * 10 + (u32)(*s++ - '0');
	return *s ? 0 : v;
}

/* ---- formatting -------------------------------------------------------- */

struct sink {
	char *buf;
	u32 size, len;
};

static void emit(struct sink *s, char c)
{
	if (s->len + 1 < s->size)
		s->buf[s->len] = c;
	s->len++;
}

static void emit_number(struct sink *s, u64 v, u32 base, int width, char pad, int negative)
{
	char digits[24];
	int n = 0;
	do {
		u32 r;
		v = divmod64(v, base, &r);
		digits[n++] = "0123456789abcdef"[r];
	} while (v);
	if (negative)
		width--;
	if (negative && pad == '0')
		emit(s, '-');
	for (int i = n; i < width; i++)
		emit(s, pad);
	if (negative && pad != '0')
		emit(s, '-');
	while (n)
		emit(s, digits[--n]);
}

int vsnprintf(char *buf, u32 size, const char *fmt, __builtin_va_list ap)
{
	struct sink s = { buf, size, 0 };
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			emit(&s, *fmt);
			continue;
		}
		fmt++;
		char pad = ' ';
		int width = 0, longlong = 0;
		if (*fmt == '0') {
			pad = '0';
			fmt++;
		}
		while (*fmt >= '0' && *fmt <= '9')
			width = width * 10 + (*fmt++ - '0');
		if (fmt[0] == 'l' && fmt[1] == 'l') {
			longlong = 1;
			fmt += 2;
		}
		switch (*fmt) {
		case 'c':
			emit(&s, (char)__builtin_va_arg(ap, int));
			break;
		case 's': {
			const char *str = __builtin_va_arg(ap, const char *);
			for (int i = (int)strlen(str); i < width; i++)
				emit(&s, ' ');
			while (*str)
				emit(&s, *str++);
			break;
		}
		case 'd': {
			s32 v = __builtin_va_arg(ap, s32);
			emit_number(&s, v < 0 ? -(u32)v : (u32)v, 10, width, pad, v < 0);
			break;
		}
		case 'u':
		case 'x': {
			u64 v = longlong ? __builtin_va_arg(ap, u64) : __builtin_va_arg(ap, u32);
			emit_number(&s, v, *fmt == 'u' ? 10 : 16, width, pad, 0);
			break;
		}
		case '%':
			emit(&s, '%');
			break;
		case '\0':
			fmt--;
			break;
		default:
			emit(&s, '%');
			emit(&s, *fmt);
			break;
		}
	}
	if (size)
		buf[s.len < size ? s.len : size - 1] = '\0';
	return (int)s.len;
}

int snprintf(char *buf, u32 size, const char *fmt, ...)
{
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	int n = vsnprintf(buf, size, fmt, ap);
	__builtin_va_end(ap);
	return n;
}

int printf(const char *fmt, ...)
{
	char buf[256];
	__builtin_va_list ap;
	__builtin_va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof(buf), fmt, ap);
	__builtin_va_end(ap);
	if (n > (int)sizeof(buf) - 1)
		n = sizeof(buf) - 1;
	return write(1, buf, (u32)n);
}
