/*
 * The computations the tc guest runs, as plain C with no runtime
 * dependencies, so the same code compiled for the host gives the values
 * tc.c checks against (the constants there were obtained that way).
 *
 * gcc -O2 would fold, inline or turn much of this into loops without
 * calls; the attributes and empty asm statements keep the control flow a
 * translation cache is meant to see:
 *  - NOIPA: a real CALL and RET every time, no constant propagation into
 *    the callee, no cloning;
 *  - OPAQUE(x): after a recursive call, x is "changed" by an empty asm, so
 *    the call is not a tail call and cannot become a loop;
 *  - loop bounds come from volatile variables (in tc.c), so no loop is
 *    computed at compile time.
 */
#ifndef TC_WORK_H
#define TC_WORK_H

#define NOIPA __attribute__((noipa))
#define OPAQUE(x) __asm__("" : "+r"(x))

/* ---- phase 1: loops ---------------------------------------------------- */

/* xorshift32, n rounds, summing every state. */
static u32 loop_xorshift(u32 n)
{
	u32 x = 0x12345678, sum = 0;
	for (u32 i = 0; i < n; i++) {
		x ^= x << 13;
		x ^= x >> 17;
		x ^= x << 5;
		sum += x;
	}
	return sum ^ x;
}

/* Two nested counted loops. */
static u32 loop_nested(u32 rows, u32 cols)
{
	u32 s = 0;
	for (u32 i = 0; i < rows; i++)
		for (u32 j = 0; j < cols; j++)
			s += (i * j) ^ (i + j);
	return s;
}

NOIPA u32 mix(u32 a, u32 i);
NOIPA u32 mix(u32 a, u32 i)
{
	return (a * 31) ^ i;
}

/* A loop whose body is a call to a small function. */
static u32 loop_calls(u32 n)
{
	u32 a = 1;
	for (u32 i = 0; i < n; i++)
		a = mix(a, i);
	return a;
}

/* Data-dependent branches: total Collatz steps of 1..n. */
static u32 loop_collatz(u32 n)
{
	u32 total = 0;
	for (u32 k = 1; k <= n; k++) {
		u32 v = k;
		while (v != 1) {
			if (v & 1)
				v = 3 * v + 1;
			else
				v >>= 1;
			total++;
		}
	}
	return total;
}

/* ---- phase 2: call/ret chains ------------------------------------------ */

/* Linear recursion, n deep: 1 + 2 + ... + n. */
NOIPA u32 sum_down(u32 n);
NOIPA u32 sum_down(u32 n)
{
	if (!n)
		return 0;
	u32 r = sum_down(n - 1);
	OPAQUE(r);
	return r + n;
}

/* Mutual recursion, n deep. */
NOIPA u32 is_odd(u32 n);
NOIPA u32 is_even(u32 n);
NOIPA u32 is_even(u32 n)
{
	if (!n)
		return 1;
	u32 r = is_odd(n - 1);
	OPAQUE(r);
	return r;
}
NOIPA u32 is_odd(u32 n)
{
	if (!n)
		return 0;
	u32 r = is_even(n - 1);
	OPAQUE(r);
	return r;
}

/* Tree recursion: two calls per level. */
NOIPA u32 fib(u32 n);
NOIPA u32 fib(u32 n)
{
	if (n < 2)
		return n;
	u32 a = fib(n - 1);
	OPAQUE(a);
	u32 b = fib(n - 2);
	OPAQUE(b);
	return a + b;
}

/* Ackermann: recursion whose depth and call count grow fast. */
NOIPA u32 ackermann(u32 m, u32 n);
NOIPA u32 ackermann(u32 m, u32 n)
{
	if (!m)
		return n + 1;
	if (!n) {
		u32 r = ackermann(m - 1, 1);
		OPAQUE(r);
		return r;
	}
	u32 inner = ackermann(m, n - 1);
	OPAQUE(inner);
	u32 r = ackermann(m - 1, inner);
	OPAQUE(r);
	return r;
}

/* One callee, four call sites: each RET goes back somewhere else. */
NOIPA u32 step(u32 x);
NOIPA u32 step(u32 x)
{
	return x * 3 + 1;
}

static u32 many_return_sites(u32 n)
{
	u32 a = 0, b = 1, c = 2, d = 3;
	for (u32 i = 0; i < n; i++) {
		a = step(a ^ i);
		b = step(b + a);
		c = step(c - b);
		d = step(d ^ c);
	}
	return a ^ b ^ c ^ d;
}

/* ---- phase 3: indirect jumps ------------------------------------------- */

/*
 * A bytecode interpreter: the dense switch over 16 opcodes compiles to a
 * jump table (gcc 12 at -O2 emits `jmp *table(,%ecx,4)`, checked with
 * objdump -d tc.elf), and each opcode jumps back to it.
 */
enum {
	OP_PUSH, /* imm: push imm */
	OP_ADD,  /* a b -> a+b */
	OP_SUB,  /* a b -> a-b */
	OP_MUL,  /* a b -> a*b */
	OP_DUP,  /* a -> a a */
	OP_SWAP, /* a b -> b a */
	OP_DROP, /* a -> */
	OP_LOAD, /* r: push reg[r] */
	OP_STORE, /* r: reg[r] = pop */
	OP_JNZ,  /* t: if pop != 0, go to t */
	OP_JMP,  /* t: go to t */
	OP_DEC,  /* a -> a-1 */
	OP_XOR,  /* a b -> a^b */
	OP_SHL,  /* n: a -> a<<n */
	OP_OVER, /* a b -> a b a */
	OP_HALT, /* return the top of the stack */
};

static u32 interpret(const u32 *code)
{
	u32 stack[16], reg[4] = { 0, 0, 0, 0 };
	u32 sp = 0, pc = 0;

	for (;;) {
		u32 op = code[pc++];
		switch (op) {
		case OP_PUSH:
			stack[sp++] = code[pc++];
			break;
		case OP_ADD:
			sp--;
			stack[sp - 1] += stack[sp];
			break;
		case OP_SUB:
			sp--;
			stack[sp - 1] -= stack[sp];
			break;
		case OP_MUL:
			sp--;
			stack[sp - 1] *= stack[sp];
			break;
		case OP_DUP:
			stack[sp] = stack[sp - 1];
			sp++;
			break;
		case OP_SWAP: {
			u32 t = stack[sp - 1];
			stack[sp - 1] = stack[sp - 2];
			stack[sp - 2] = t;
			break;
		}
		case OP_DROP:
			sp--;
			break;
		case OP_LOAD:
			stack[sp++] = reg[code[pc++] & 3];
			break;
		case OP_STORE:
			reg[code[pc++] & 3] = stack[--sp];
			break;
		case OP_JNZ: {
			u32 target = code[pc++];
			if (stack[--sp])
				pc = target;
			break;
		}
		case OP_JMP:
			pc = code[pc];
			break;
		case OP_DEC:
			stack[sp - 1]--;
			break;
		case OP_XOR:
			sp--;
			stack[sp - 1] ^= stack[sp];
			break;
		case OP_SHL:
			stack[sp - 1] <<= code[pc++] & 31;
			break;
		case OP_OVER:
			stack[sp] = stack[sp - 2];
			sp++;
			break;
		case OP_HALT:
		default:
			return sp ? stack[sp - 1] : 0;
		}
	}
}

/* Sum of the squares 1..100 = 338350. */
static const u32 prog_squares[] = {
	OP_PUSH, 100, OP_STORE, 0,       /* 0: r0 = 100 */
	OP_PUSH, 0, OP_STORE, 1,         /* 4: r1 = 0 */
	OP_LOAD, 0, OP_DUP, OP_MUL,      /* 8: r0 * r0 */
	OP_LOAD, 1, OP_ADD, OP_STORE, 1, /* 12: r1 += it */
	OP_LOAD, 0, OP_DEC, OP_DUP,      /* 17: r0 - 1, twice */
	OP_STORE, 0, OP_JNZ, 8,          /* 21: r0 = it; loop while nonzero */
	OP_LOAD, 1, OP_HALT,             /* 25: r1 */
};

/* The other opcodes: a hash of 0..49 with a forward jump in the loop. */
static const u32 prog_mixed[] = {
	OP_PUSH, 50, OP_STORE, 2,                  /* 0: r2 = 50 (count) */
	OP_PUSH, 7,                                /* 4: h = 7 */
	OP_DUP, OP_SHL, 5, OP_SWAP, OP_SUB,        /* 6: h = (h << 5) - h */
	OP_LOAD, 2, OP_XOR,                        /* 11: h ^= r2 */
	OP_JMP, 18, OP_PUSH, 0xBAD,                /* 14: skip the 0xBAD */
	OP_PUSH, 0x9E37, OP_OVER, OP_ADD, OP_SWAP, /* 18: t = h + 0x9E37 below h */
	OP_DROP,                                   /* 23: keep h + 0x9E37 */
	OP_LOAD, 2, OP_DEC, OP_DUP, OP_STORE, 2,   /* 24: r2 -= 1 */
	OP_JNZ, 6,                                 /* 30: loop while r2 */
	OP_HALT,                                   /* 32 */
};

/*
 * A second dense switch (12 cases of different arithmetic, which gcc
 * cannot turn into a table of constants), hit in a varying order.
 */
static u32 switch_walk(u32 n)
{
	u32 x = 0x2468ACE1;
	for (u32 i = 0; i < n; i++) {
		switch ((x ^ i) % 12) {
		case 0: x = x * 5 + 1; break;
		case 1: x ^= x >> 3; break;
		case 2: x += 0x1234567; break;
		case 3: x = (x << 7) | (x >> 25); break;
		case 4: x -= i; break;
		case 5: x ^= 0xA5A5A5A5; break;
		case 6: x = ~x; break;
		case 7: x += x >> 11; break;
		case 8: x *= 0x01000193; break;
		case 9: x ^= i << 9; break;
		case 10: x = (x >> 5) | (x << 27); break;
		case 11: x += 77; break;
		}
	}
	return x;
}

/* Calls through an array of function pointers, target chosen by data. */
NOIPA u32 op_add(u32 a, u32 b);
NOIPA u32 op_add(u32 a, u32 b) { return a + b; }
NOIPA u32 op_sub(u32 a, u32 b);
NOIPA u32 op_sub(u32 a, u32 b) { return a - b; }
NOIPA u32 op_xor(u32 a, u32 b);
NOIPA u32 op_xor(u32 a, u32 b) { return a ^ b; }
NOIPA u32 op_mul(u32 a, u32 b);
NOIPA u32 op_mul(u32 a, u32 b) { return a * (b | 1); }
NOIPA u32 op_rol(u32 a, u32 b);
NOIPA u32 op_rol(u32 a, u32 b) { return (a << (b & 31)) | (a >> ((32 - (b & 31)) & 31)); }
NOIPA u32 op_or(u32 a, u32 b);
NOIPA u32 op_or(u32 a, u32 b) { return (a | b) + 1; }
NOIPA u32 op_and(u32 a, u32 b);
NOIPA u32 op_and(u32 a, u32 b) { return (a & b) ^ 0x5555; }
NOIPA u32 op_neg(u32 a, u32 b);
NOIPA u32 op_neg(u32 a, u32 b) { return b - a; }

static u32 (*const ops[8])(u32, u32) = { op_add, op_sub, op_xor, op_mul,
					 op_rol, op_or,  op_and, op_neg };

static u32 call_table(u32 n)
{
	u32 acc = 0x13579BDF;
	for (u32 i = 0; i < n; i++)
		acc = ops[(acc ^ i) & 7](acc, i);
	return acc;
}

/* What jump_table_dispatch's handler op & 7 computes (flow.S). */
static u32 handler_model(u32 op, u32 x)
{
	switch (op & 7) {
	case 0: return x + 1;
	case 1: return x * 3;
	case 2: return x ^ 0x5A5A5A5A;
	case 3: return (x << 7) | (x >> 25);
	case 4: return ~x;
	case 5: return x >> 3;
	case 6: return -x;
	default: return x + 0x1000;
	}
}

#endif
