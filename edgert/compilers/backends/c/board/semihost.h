/* Raw Arm semihosting: the `bkpt 0xAB` calls QEMU answers with -semihosting-config enable=on.
 *
 * r0 holds the operation, r1 a pointer to its argument block (for SYS_EXIT, the reason itself), and r0
 * comes back with the result. Only the calls the test main needs, as static inline functions, so the
 * image links no newlib stdio and no rdimon: the whole board costs a few hundred bytes of flash.
 * With target=native, QEMU opens files relative to its working directory, and console text goes to
 * its stderr. Reference: Arm "Semihosting for AArch32 and AArch64", v3.0.
 */
#ifndef EDGERT_SEMIHOST_H
#define EDGERT_SEMIHOST_H

#include <stdint.h>

#define SH_SYS_OPEN 0x01u
#define SH_SYS_CLOSE 0x02u
#define SH_SYS_WRITE0 0x04u        /* a NUL-terminated string to the debug console */
#define SH_SYS_WRITE 0x05u
#define SH_SYS_READ 0x06u
#define SH_SYS_EXIT 0x18u          /* angel_SWIreason_ReportException */
#define SH_SYS_EXIT_EXTENDED 0x20u /* the same, with an exit code (semihosting v2) */

#define SH_ADP_STOPPED_APPLICATION_EXIT 0x20026u
#define SH_ADP_STOPPED_RUN_TIME_ERROR 0x20023u

#define SH_MODE_RB 1u /* fopen modes, as indices into "r", "rb", "r+", "r+b", "w", "wb", ... */
#define SH_MODE_WB 5u

static inline int32_t sh_call(uint32_t op, uint32_t arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register uint32_t r1 __asm__("r1") = arg;
    /* "memory": the argument block must be in memory before the host reads it, and buffers the host
       fills must be re-read after. */
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return (int32_t)r0;
}

/* A file handle (>= 0), or -1. The name's length is passed, not counted: a counting loop is
   strlen to GCC, and newlib's costs 220 bytes. SH_OPEN takes a string literal. */
static inline int32_t sh_open(const char *name, uint32_t len, uint32_t mode)
{
    uint32_t args[3] = {(uint32_t)name, mode, len};
    return sh_call(SH_SYS_OPEN, (uint32_t)args);
}
#define SH_OPEN(literal, mode) sh_open(literal, sizeof(literal) - 1, mode)

static inline int32_t sh_close(int32_t fd)
{
    uint32_t args[1] = {(uint32_t)fd};
    return sh_call(SH_SYS_CLOSE, (uint32_t)args);
}

/* Both return the number of bytes NOT transferred: 0 means all of them. */
static inline int32_t sh_write(int32_t fd, const void *buf, uint32_t n)
{
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, n};
    return sh_call(SH_SYS_WRITE, (uint32_t)args);
}

static inline int32_t sh_read(int32_t fd, void *buf, uint32_t n)
{
    uint32_t args[3] = {(uint32_t)fd, (uint32_t)buf, n};
    return sh_call(SH_SYS_READ, (uint32_t)args);
}

static inline void sh_write0(const char *s)
{
    sh_call(SH_SYS_WRITE0, (uint32_t)s);
}

/* Stop the emulator; QEMU exits with `code` (its low 8 bits). */
__attribute__((noreturn)) static inline void sh_exit(int code)
{
    uint32_t args[2] = {SH_ADP_STOPPED_APPLICATION_EXIT, (uint32_t)code};
    sh_call(SH_SYS_EXIT_EXTENDED, (uint32_t)args);
    /* A host without the extended call: plain SYS_EXIT, which can only say success or failure. */
    sh_call(SH_SYS_EXIT, code == 0 ? SH_ADP_STOPPED_APPLICATION_EXIT : SH_ADP_STOPPED_RUN_TIME_ERROR);
    for (;;) {
    }
}

#endif
