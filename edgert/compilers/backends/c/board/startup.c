/* Minimal Cortex-M startup: vector table, reset, faults, SysTick, stack high-water mark.
 *
 * Written for the emulated boards (QEMU mps2-an500 / mps2-an386), but nothing here is QEMU-specific
 * except that faults and the end of main leave through semihosting, so a broken image ends the
 * emulator with a code instead of spinning forever. Linker symbols come from mem.ld.in.
 */
#include <stdint.h>

#include "semihost.h"

extern uint32_t __data_load[], __data_start[], __data_end[]; /* .data: LMA in flash, VMA in RAM */
extern uint32_t __bss_start[], __bss_end[];
extern uint32_t __stack_limit[], __stack_top[]; /* .stack: the lowest RAM, growing down from top */

int main(void);

#define STACK_PAINT 0xDEADBEEFu /* a word pattern: GCC cannot turn the paint loop into memset */
#define STACK_MARGIN_WORDS 16   /* below the current sp, left unpainted for the painting code */

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SCB_CFSR (*(volatile uint32_t *)0xE000ED28u)
#define SCB_HFSR (*(volatile uint32_t *)0xE000ED2Cu)
#define MPU_CTRL (*(volatile uint32_t *)0xE000ED94u)
#define MPU_RNR (*(volatile uint32_t *)0xE000ED98u)
#define MPU_RBAR (*(volatile uint32_t *)0xE000ED9Cu)
#define MPU_RASR (*(volatile uint32_t *)0xE000EDA0u)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SYST_MAX 0x00FFFFFFu /* the counter is 24 bits */

#define EXIT_STACK_OVERFLOW 6 /* as in main.c */
#define EXIT_FAULT 0x80       /* any other fault: 0x80 + its exception number (HardFault: 131) */

static volatile uint32_t systick_wraps;

void Reset_Handler(void);
void SysTick_Handler(void);
void Fault_Handler(void);

/* Initial sp, then the 15 system exceptions. No interrupt is ever enabled, so no IRQ entries. */
__attribute__((section(".vectors"), used)) const uintptr_t edgert_vectors[16] = {
    (uintptr_t)__stack_top,
    (uintptr_t)Reset_Handler,
    (uintptr_t)Fault_Handler, /* 2 NMI */
    (uintptr_t)Fault_Handler, /* 3 HardFault */
    (uintptr_t)Fault_Handler, /* 4 MemManage */
    (uintptr_t)Fault_Handler, /* 5 BusFault */
    (uintptr_t)Fault_Handler, /* 6 UsageFault */
    0, 0, 0, 0,
    (uintptr_t)Fault_Handler, /* 11 SVCall */
    (uintptr_t)Fault_Handler, /* 12 DebugMonitor */
    0,
    (uintptr_t)Fault_Handler, /* 14 PendSV */
    (uintptr_t)SysTick_Handler,
};

/* Plain loops, not calls to newlib's memcpy and memset (700 bytes of flash for an empty model). */
__attribute__((optimize("no-tree-loop-distribute-patterns"))) void Reset_Handler(void)
{
    /* FPU first: with -mfloat-abi=hard any float instruction before this faults (CP10/CP11 full
       access). */
    SCB_CPACR |= 0xFu << 20;
    /* Stack guard. The stack is the lowest RAM (0x20000000, mem.ld.in), and below it both mps2
       machines map 0x01010000-0x1FFFFFFF to an "unimplemented" device that ignores writes and reads
       zeros: an overflowing stack would go on silently with wrong values. One MPU region, no access,
       over 0x10000000-0x1FFFFFFF (256 MB, so no frame can jump over it) makes it fault instead.
       PRIVDEFENA keeps the default memory map everywhere else. */
    MPU_RNR = 0;
    MPU_RBAR = 0x10000000u;
    MPU_RASR = (1u << 28) | (27u << 1) | 1u; /* XN, AP=0 (no access), SIZE=2^(27+1), ENABLE */
    MPU_CTRL = 5u;                           /* ENABLE | PRIVDEFENA */
    __asm__ volatile("dsb\n\tisb" ::: "memory");

    uint32_t *src = __data_load;
    for (uint32_t *dst = __data_start; dst < __data_end;) {
        *dst++ = *src++;
    }
    for (uint32_t *dst = __bss_start; dst < __bss_end;) {
        *dst++ = 0;
    }

    uint32_t *sp;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (uint32_t *p = __stack_limit; p < sp - STACK_MARGIN_WORDS;) {
        *p++ = STACK_PAINT;
    }

    sh_exit(main());
}

void SysTick_Handler(void)
{
    systick_wraps++;
}

/* Start SysTick from the processor clock, free running, interrupting on each wrap. */
void edgert_ticks_start(void)
{
    SYST_CSR = 0;
    SYST_RVR = SYST_MAX;
    SYST_CVR = 0;
    systick_wraps = 0;
    SYST_CSR = 7; /* ENABLE | TICKINT | CLKSOURCE=processor */
}

/* SysTick ticks since edgert_ticks_start, 64 bits: the wraps counted by the handler on top.
   The counter runs RVR..1, 0 (the 1 -> 0 step raises the interrupt), then reloads: so while it reads
   0 the wrap is already counted and the period is not over yet, hence the "- 2^24". The very first
   0, before the first reload, gives -1 (mod 2^64): differences stay right. */
uint64_t edgert_ticks(void)
{
    uint32_t wraps, value;
    do { /* re-read if a wrap was counted between the two reads */
        wraps = systick_wraps;
        value = SYST_CVR;
    } while (wraps != systick_wraps);
    uint64_t ticks = ((uint64_t)wraps << 24) + (SYST_MAX - value);
    return value == 0 ? ticks - (SYST_MAX + 1u) : ticks;
}

/* The deepest the stack has been since reset, in bytes: the first word, from the bottom, that no
   longer holds the paint. */
uint32_t edgert_stack_high_water(void)
{
    const uint32_t *p = __stack_limit;
    while (p < __stack_top && *p == STACK_PAINT) {
        p++;
    }
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)p);
}

uint32_t edgert_stack_bytes(void)
{
    return (uint32_t)((uintptr_t)__stack_top - (uintptr_t)__stack_limit);
}

static char *put_hex(char *s, uint32_t v)
{
    *s++ = '0';
    *s++ = 'x';
    for (int shift = 28; shift >= 0; shift -= 4) {
        *s++ = "0123456789abcdef"[(v >> shift) & 0xFu];
    }
    return s;
}

static char *put_str(char *s, const char *t)
{
    while (*t != '\0') {
        *s++ = *t++;
    }
    return s;
}

/* Say which exception, where, and the fault status registers on the console (QEMU's stderr), then
   end the emulation. `frame` is the stacked r0-r3, r12, lr, pc, xPSR, unless sp had already left
   the stack: then the fault is the overflow, and the frame (pushed into the guard) is not there. */
__attribute__((used, noreturn)) void edgert_fault_report(const uint32_t *frame)
{
    uint32_t ipsr;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    ipsr &= 0x1FFu;
    int overflow = frame < __stack_limit;
    char msg[160];
    char *s = put_str(msg, "edgert board: fault, exception ");
    s = put_hex(s, ipsr);
    if (overflow) {
        s = put_str(s, ", stack overflow: sp ");
        s = put_hex(s, (uint32_t)frame);
        s = put_str(s, " below the stack's limit ");
        s = put_hex(s, (uint32_t)__stack_limit);
    } else {
        s = put_str(s, " pc ");
        s = put_hex(s, frame[6]);
        s = put_str(s, " lr ");
        s = put_hex(s, frame[5]);
    }
    s = put_str(s, " CFSR ");
    s = put_hex(s, SCB_CFSR);
    s = put_str(s, " HFSR ");
    s = put_hex(s, SCB_HFSR);
    *s++ = '\n';
    *s = '\0';
    sh_write0(msg);
    sh_exit(overflow ? EXIT_STACK_OVERFLOW : EXIT_FAULT + (int)(ipsr < 0x7Fu ? ipsr : 0x7Fu));
}

/* Naked, so msp still points at the exception frame when it is read; then sp is moved back to the
   top of the stack, since after an overflow it points into the guard and the report needs a stack. */
__attribute__((naked)) void Fault_Handler(void)
{
    __asm__ volatile("mrs r0, msp\n\t"
                     "ldr r1, =__stack_top\n\t"
                     "msr msp, r1\n\t"
                     "b edgert_fault_report\n\t"
                     ".ltorg");
}
