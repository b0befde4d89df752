/*
 * Constants the demo kernel's C and assembly share (no C syntax here).
 */
#ifndef DEMO_KERNEL_DEFS_H
#define DEMO_KERNEL_DEFS_H

#include "user/sys.h"

/* Virtual memory map (see README.md). */
#define KERNEL_BASE 0xC0000000     /* all RAM is mapped from here (4 MiB pages) */
#define USER_TOP 0xC0000000        /* user addresses are below */
#define USER_MIN 0x00001000        /* page 0 stays unmapped */
#define USER_STACK_MAX 0x00100000  /* the stack grows on demand, up to 1 MiB */
#define BOOT_MAP_MB 16             /* mapped by boot.S before kmain runs */
#define DIRECT_MAP_MAX 0x38000000  /* 896 MiB: RAM above is not used */

#define PAGE_SIZE 4096

/* Page table entry bits. */
#define PTE_P 0x001     /* present */
#define PTE_W 0x002     /* writable */
#define PTE_U 0x004     /* user */
#define PTE_A 0x020     /* accessed */
#define PTE_D 0x040     /* dirty */
#define PTE_PS 0x080    /* 4 MiB page (in a PDE) */
#define PTE_G 0x100     /* global: survives CR3 loads (CR4.PGE) */
#define PTE_COW 0x200   /* software: read-only because shared copy-on-write */

#define CR0_WP 0x00010000
#define CR0_PG 0x80000000
#define CR4_PSE 0x10
#define CR4_PGE 0x80

/* Processes. */
#define NPROC 64
#define KSTACK_SIZE 8192

#endif
