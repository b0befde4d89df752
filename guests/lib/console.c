/*
 * Serial console (COM1) and a tiny printf.
 *
 * Output goes byte by byte to the UART's transmit holding register after
 * polling LSR bit 5, as real hardware needs. Lines end in a bare "\n" so the
 * captured output is byte-identical whatever the terminal.
 */
#include <stdarg.h>
#include "popek.h"

void uart_init(void)
{
	/* No UART interrupts: the guests poll. Keep the default line setup. */
	outb(COM1 + 1, 0x00);
	/* 8 data bits, no parity, one stop bit (DLAB clear). */
	outb(COM1 + 3, 0x03);
}

void putchar(char c)
{
	while (!(inb(UART_LSR) & UART_LSR_THRE))
		;
	outb(COM1, (u8)c);
}

void puts(const char *s)
{
	while (*s)
		putchar(*s++);
}

/* Where formatted output goes: the UART, or a buffer for ksnprintf. */
struct sink {
	char *buf; /* NULL: the UART */
	u32 size, len;
};

static void emit(struct sink *s, char c)
{
	if (!s->buf)
		putchar(c);
	else if (s->len + 1 < s->size)
		s->buf[s->len] = c;
	s->len++;
}

/* Prints v in base 10 or 16, at least width digits wide, padded with pad. */
static void emit_number(struct sink *s, u64 v, unsigned base, int upper, int width, char pad, int negative)
{
	char digits[24];
	const char *set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	int n = 0;

	/*
	 * Base 10 only ever sees 32-bit values (no %llu): 64-bit division
	 * would need libgcc, which freestanding guests do not link.
	 */
	if (base == 10) {
		u32 w = (u32)v;
		do {
			digits[n++] = set[w % 10];
			w /= 10;
		} while (w);
	} else {
		do {
			digits[n++] = set[v & 15];
			v >>= 4;
		} while (v);
	}
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

static void format(struct sink *s, const char *fmt, va_list ap)
{
	for (; *fmt; fmt++) {
		if (*fmt != '%') {
			emit(s, *fmt);
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
			emit(s, (char)va_arg(ap, int));
			break;
		case 's': {
			const char *str = va_arg(ap, const char *);
			int len = (int)strlen(str);
			for (int i = len; i < width; i++)
				emit(s, ' ');
			while (*str)
				emit(s, *str++);
			break;
		}
		case 'd': {
			s32 v = va_arg(ap, s32);
			u32 mag = v < 0 ? -(u32)v : (u32)v;
			emit_number(s, mag, 10, 0, width, pad, v < 0);
			break;
		}
		case 'u':
			emit_number(s, va_arg(ap, u32), 10, 0, width, pad, 0);
			break;
		case 'x':
		case 'X': {
			u64 v = longlong ? va_arg(ap, u64) : va_arg(ap, u32);
			emit_number(s, v, 16, *fmt == 'X', width, pad, 0);
			break;
		}
		case '%':
			emit(s, '%');
			break;
		case '\0':
			return;
		default: /* unknown conversion: show it as written */
			emit(s, '%');
			emit(s, *fmt);
			break;
		}
	}
}

void kprintf(const char *fmt, ...)
{
	struct sink s = { NULL, 0, 0 };
	va_list ap;
	va_start(ap, fmt);
	format(&s, fmt, ap);
	va_end(ap);
}

int ksnprintf(char *buf, u32 size, const char *fmt, ...)
{
	struct sink s = { buf, size, 0 };
	va_list ap;
	va_start(ap, fmt);
	format(&s, fmt, ap);
	va_end(ap);
	if (size)
		buf[s.len < size ? s.len : size - 1] = '\0';
	return (int)s.len;
}
