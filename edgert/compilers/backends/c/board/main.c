/* The test main: run the generated model over the records of input.bin, through semihosting.
 *
 *   input.bin   uint32 N (little-endian), then N * EDGERT_INPUT_SIZE float32
 *   output.bin  N * EDGERT_OUTPUT_SIZE float32
 *   calls.bin   N uint64: the SysTick ticks of each call
 *   stats.bin   struct edgert_stats below (edgert/runtime/emulated.py reads it)
 *
 * edgert_model_reset() once, then one edgert_model_run per record: for a stateful model a record is
 * one time step (run == step). Records are read and written one at a time, so RAM holds a single
 * record's input and output whatever N is. Each call is timed with SysTick; the host turns ticks
 * into emulated instructions with the factor calibrated for the machine.
 */
#include <stdint.h>

#include "model.h"
#include "semihost.h"

/* startup.c */
void edgert_ticks_start(void);
uint64_t edgert_ticks(void);
uint32_t edgert_stack_high_water(void);
uint32_t edgert_stack_bytes(void);

/* Exit codes; emulated.py explains each. A fault exits with 0x80 + its exception number. */
#define EXIT_NO_INPUT 2
#define EXIT_SHORT_INPUT 3
#define EXIT_WRITE_FAILED 4
#define EXIT_MODEL_FAILED 5
#define EXIT_STACK_OVERFLOW 6

#define STATS_MAGIC 0x53474445u /* "EDGS" */
#define STATS_VERSION 1u

struct edgert_stats { /* 64 bytes, no padding */
    uint32_t magic;
    uint32_t version;
    uint32_t records;    /* calls made */
    int32_t rc;          /* the first nonzero return of edgert_model_run, else 0 */
    uint64_t ticks_first; /* SysTick ticks per call */
    uint64_t ticks_min;
    uint64_t ticks_max;
    uint64_t ticks_total;
    uint32_t stack_high_water; /* bytes, since reset (startup and main included) */
    uint32_t stack_bytes;      /* the .stack region */
    uint32_t input_size;       /* floats per record */
    uint32_t output_size;
};

static float input[EDGERT_INPUT_SIZE] __attribute__((aligned(8)));
static float output[EDGERT_OUTPUT_SIZE] __attribute__((aligned(8)));
static struct edgert_stats stats;

static int write_stats(void)
{
    int32_t fd = SH_OPEN("stats.bin", SH_MODE_WB);
    if (fd < 0) {
        return -1;
    }
    int32_t left = sh_write(fd, &stats, sizeof stats);
    sh_close(fd);
    return left == 0 ? 0 : -1;
}

int main(void)
{
    int32_t in_fd = SH_OPEN("input.bin", SH_MODE_RB);
    if (in_fd < 0) {
        return EXIT_NO_INPUT;
    }
    uint32_t n = 0;
    if (sh_read(in_fd, &n, sizeof n) != 0) {
        return EXIT_SHORT_INPUT;
    }
    int32_t out_fd = SH_OPEN("output.bin", SH_MODE_WB);
    int32_t calls_fd = SH_OPEN("calls.bin", SH_MODE_WB);
    if (out_fd < 0 || calls_fd < 0) {
        return EXIT_WRITE_FAILED;
    }

    stats.magic = STATS_MAGIC;
    stats.version = STATS_VERSION;
    stats.ticks_min = UINT64_MAX;
    stats.input_size = EDGERT_INPUT_SIZE;
    stats.output_size = EDGERT_OUTPUT_SIZE;
    edgert_ticks_start();
    edgert_model_reset();
    for (uint32_t i = 0; i < n; i++) {
        if (sh_read(in_fd, input, sizeof input) != 0) {
            return EXIT_SHORT_INPUT;
        }
        uint64_t t0 = edgert_ticks();
        int rc = edgert_model_run(input, output);
        uint64_t ticks = edgert_ticks() - t0;
        stats.records++;
        if (i == 0) {
            stats.ticks_first = ticks;
        }
        stats.ticks_min = ticks < stats.ticks_min ? ticks : stats.ticks_min;
        stats.ticks_max = ticks > stats.ticks_max ? ticks : stats.ticks_max;
        stats.ticks_total += ticks;
        if (sh_write(calls_fd, &ticks, sizeof ticks) != 0) {
            return EXIT_WRITE_FAILED;
        }
        if (rc != 0) {
            stats.rc = rc;
            break;
        }
        if (sh_write(out_fd, output, sizeof output) != 0) {
            return EXIT_WRITE_FAILED;
        }
    }
    sh_close(calls_fd);
    sh_close(out_fd);
    sh_close(in_fd);
    if (stats.records == 0) {
        stats.ticks_min = 0;
    }
    stats.stack_high_water = edgert_stack_high_water();
    stats.stack_bytes = edgert_stack_bytes();
    if (write_stats() != 0) {
        return EXIT_WRITE_FAILED;
    }
    if (stats.rc != 0) {
        return EXIT_MODEL_FAILED;
    }
    /* The bottom word overwritten: the stack reached its limit, and likely went past it. */
    if (stats.stack_high_water >= stats.stack_bytes) {
        return EXIT_STACK_OVERFLOW;
    }
    return 0;
}
