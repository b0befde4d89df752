/*
 * Shared by hostile.c and user.S (plain defines only: the assembler
 * includes it too).
 */
#ifndef HOSTILE_H
#define HOSTILE_H

/*
 * The guest's own descriptor tables. The GDT has five entries, so a
 * selector with index 5 or more (the host Linux's 0x2b user data and 0x33
 * 64-bit code) is beyond its limit, and index 4 (the host's 0x23 32-bit
 * code) is the guest's LDT descriptor, a system descriptor no segment
 * register or far jump accepts. The user segments live in the LDT.
 */
/* GDT 1 and 2 are the runtime's SEL_KCODE 0x08 and SEL_KDATA 0x10 (popek.h). */
#define TSS_SEL 0x18        /* GDT 3: the TSS */
#define LDT_SEL 0x20        /* GDT 4: the LDT */
#define HOSTILE_GDT_ENTRIES 5
#define UCODE_SEL 0x07      /* LDT 0: code, DPL 3, base 0, limit 3 GiB */
#define UDATA_SEL 0x0F      /* LDT 1: data, DPL 3, base 0, limit 3 GiB */
#define UFLAT_SEL 0x17      /* LDT 2: data, DPL 3, base 0, limit 4 GiB */
#define HOSTILE_LDT_ENTRIES 3

/* The host Linux x86-64 GDT's user selectors (arch/x86/include/asm/segment.h). */
#define HOST_USER32_CS 0x23
#define HOST_USER_DS 0x2b
#define HOST_USER_CS 0x33

/* Where popek's BT engine keeps its own region (design.md section 4). */
#define MONITOR_ADDR 0xFFC00000

/* Faulting sites in user.S, by number (hostile.c describes each). */
#define SITE_A_DS_2B 0
#define SITE_A_READ 1
#define SITE_A_WRITE 2
#define SITE_A_ES_23 3
#define SITE_A_ES_READ 4
#define SITE_A_SS_2B 5
#define SITE_A_FS_2B 6
#define SITE_A_GS_33 7
#define SITE_A_LDS_2B 8
#define SITE_B_WRPKRU 9
#define SITE_B_RDPKRU 10
#define SITE_B_XRSTOR 11
#define SITE_C_LJMP_33 12
#define SITE_C_LCALL_33 13
#define SITE_C_LRET_33 14
#define SITE_E_IRET_33 15
#define SITE_E_LJMP_23 16
#define SITE_F_LJMP_33 17
#define SITE_G_LJMP_33 18
#define SITE_H_LJMP_33 19
#define SITE_I_LJMP_33 20
#define SITE_F_HLT 21
#define SITE_J_REGION 22
#define SITE_J_PAGE0 23
#define SITE_COUNT 24

/* user_results[] slots the user code fills. */
#define R_B_READ 0      /* first read of MONITOR_ADDR through SEL_UFLAT */
#define R_B_REREAD 1    /* the same after writing HOSTILE_MARK there */
#define R_B_READ_TOP 2  /* read of the monitor region's last dword */
#define R_D_OPEN 3      /* what int 0x80 returned for eax=5 */
#define R_D_WRITE 4     /* ... eax=4 */
#define R_D_KILL 5      /* ... eax=37 */
#define R_K_RESULT 6    /* what int 0x80 returned with NT set (scenario k) */
#define R_K_FLAGS 7     /* EFLAGS right after it */
#define R_COUNT 8

#define HOSTILE_MARK 0x54534F48 /* "HOST" */

/* Scenario f: what 64-bit code read (f64_seen[] qword slots). */
#define F_GPR 0         /* RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 */
#define F_RFLAGS 16
#define F_FSBASE 17
#define F_GSBASE 18
#define F_XMM8 19       /* XMM8..XMM15: 16 qwords */
#define F_YMM_HI 35     /* YMM0..15 upper halves: 32 qwords */
#define F_K 67          /* k0..k7: 8 qwords */
#define F_ZMM_HI 75     /* ZMM0..15 bits 256-511: 64 qwords */
#define F_ZMM16 139     /* ZMM16..31: 128 qwords */
#define F_SLOTS 267

/* host_features bits, from the command line (the test harness probes the host). */
#define HOST_FSGSBASE 1
#define HOST_AVX 2
#define HOST_AVX512 4   /* AVX-512 F and BW */

/* What the guest kernel fills its user stack with (scenario f). */
#define STACK_FILL 0x5A5A5A5A

/* Linux i386 system call numbers the user code issues in scenario d. */
#define I386_EXIT 1
#define I386_WRITE 4
#define I386_OPEN 5
#define I386_KILL 37
#define I386_GETPID 20
#define EFLAGS_NT_BIT 0x4000
#define O_WRONLY_CREAT 0x41 /* O_WRONLY | O_CREAT */
#define SIGKILL 9

#endif
