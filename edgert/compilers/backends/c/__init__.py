"""C backend: an optimized ir.Graph -> portable C99 for microcontrollers (and any C compiler).

What it writes (``emit.emit_c``):

- ``model.h``: the API and the sizes, as macros::

      #define EDGERT_INPUT_SIZE  <floats>   /* all graph inputs, flattened in C order, one after another */
      #define EDGERT_OUTPUT_SIZE <floats>   /* all graph outputs, likewise */
      #define EDGERT_ARENA_BYTES <bytes>    /* the one static activation arena */
      #define EDGERT_STATE_BYTES <bytes>    /* static state kept across steps (spiking neurons) */
      #define EDGERT_STATEFUL    0 or 1
      int  edgert_model_run(const float *input, float *output);   /* 0 on success; batch 1 */
      int  edgert_model_step(const float *input, float *output);  /* one time step (== run) */
      void edgert_model_reset(void);                              /* forget state (no-op if stateless) */

- ``model.c``: the weights as ``const`` arrays (flash), the arena (``static`` and aligned), and one call
  per node into the kernel library. No malloc, no stdio, nothing beyond libm.
- ``kernels/*.c`` and ``kernels/edgert_kernels.h``: the kernel library, one file per op family
  (float, binary, shift, spiking), shipped as source; only the files a model uses are copied.

``firmware.py`` links model + kernels + ``board/`` (startup, linker script, a semihosting test main)
into an ELF for a Cortex-M target with arm-none-eabi-gcc; ``edgert.runtime.emulated`` runs that ELF
under qemu-system-arm. ``host.py`` builds the same sources with the host's cc (tests, export-c).
"""
