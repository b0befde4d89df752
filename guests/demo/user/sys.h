/*
 * The demo's system call ABI, shared by the kernel and the user runtime.
 *
 * A system call is INT 0x80 with the call number in EAX and up to three
 * arguments in EBX, ECX and EDX; the result comes back in EAX (negative:
 * failure). Every other register is preserved. Where SYS_FASTCALL says so,
 * SYSENTER does the same, with the caller's ESP in EBP and the address to
 * return to in ESI (the kernel returns there by IRET); EBP and ESI are
 * then the caller's to save.
 */
#ifndef DEMO_SYS_H
#define DEMO_SYS_H

#define SYS_WRITE 1   /* write(fd, buf, len) -> bytes written */
#define SYS_READ 2    /* read(fd, buf, len) -> bytes read, 0 at end of file */
#define SYS_FORK 3    /* fork() -> child pid in the parent, 0 in the child */
#define SYS_EXEC 4    /* exec(name, argv) -> only returns (-1) on failure */
#define SYS_WAIT 5    /* wait(&status) -> pid of a child that exited, -1: none */
#define SYS_EXIT 6    /* exit(code): does not return */
#define SYS_GETPID 7  /* getpid() -> pid */
#define SYS_SBRK 8    /* sbrk(delta) -> the old program break, -1 on failure */
#define SYS_PIPE 9    /* pipe(fds) -> 0; fds[0] reads, fds[1] writes */
#define SYS_CLOSE 10  /* close(fd) -> 0 */
#define SYS_MARK 11   /* mark(code): writes a phase marker to port 0x80 */
#define SYS_MEMINFO 12 /* meminfo() -> free physical pages */
#define SYS_FASTCALL 13 /* fastcall() -> 1 if SYSENTER may be used, else 0 */

/* Exit status of a process killed by CPU exception v: 128 + v. */
#define EXIT_KILLED 128

/* Phase markers written to port 0x80 (popek --stats splits costs by them). */
#define MARK_BOOT 0x01     /* the kernel starts */
#define MARK_INIT 0x02     /* the kernel starts init */
#define MARK_COMPUTE 0x10  /* init's steps, one marker each */
#define MARK_FORKWAIT 0x20
#define MARK_PIPE 0x30
#define MARK_PREEMPT 0x40
#define MARK_MEMORY 0x50
#define MARK_SUMMARY 0x70  /* init prints its summary */
#define MARK_HALT 0x7F     /* the kernel shuts down */

#endif
