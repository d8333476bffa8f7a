/* edgert spiking kernels: snntorch's Leaky, Synaptic, RLeaky and RSynaptic, and Linear fused with Leaky, batch 1.

One call is one time step. The state arrays (membrane, synaptic current, previous spikes) belong to
the caller (static in model.c), start at zero and are updated in place. The neuron updates use the
float32 operations of the reference (edgert/ops/spiking/kernels.py) in the same order, so this file
must be compiled without FMA contraction (-ffp-contract=off) and never with -ffast-math.

Parameters (beta, alpha, threshold, V) are read as p[i * pstep]: pstep 1 for one value per neuron,
0 for one value shared by all. */
#ifndef EDGERT_KERNELS_SPIKING_H
#define EDGERT_KERNELS_SPIKING_H

#include <stdint.h>

/* reset mechanisms (RESET_CODE in edgert/ops/spiking/nodes.py) */
#define EK_RESET_SUBTRACT 0
#define EK_RESET_ZERO 1
#define EK_RESET_NONE 2

/* Leaky: spk = graded * [U > thr] with U = beta U' + cur, reset as `reset` (delay: 1 = reset_delay,
   instant: the mechanism of the reset_delay=0 branch). spk may be cur. */
void ek_leaky(const float *cur, const float *beta, const float *thr, int pstep, float *mem, float *spk,
              int n, int reset, int delay, int instant, float graded);

/* Synaptic: syn = alpha syn' + cur, U = beta U' + syn, then reset; spk may be cur. */
void ek_synaptic(const float *cur, const float *alpha, const float *beta, const float *thr, int pstep,
                 float *syn, float *mem, float *spk, int n, int reset, int delay, int instant, float graded);

/* RLeaky: U = (beta U' + cur) + rec, rec the recurrent current of the previous spikes `prev`:
   rec[i] given (all_to_all, from ek_linear_current; rec may be spk) or, with rec NULL, prev[i] v[i]
   (v read with pstep). prev is state: it receives spk. */
void ek_rleaky(const float *cur, const float *rec, const float *v, const float *beta, const float *thr,
               int pstep, float *prev, float *mem, float *spk, int n, int reset, int delay, int instant,
               float graded);

/* RSynaptic: syn = (alpha syn' + cur) + rec, U = beta U' + syn, then reset; rec the all-to-all
   recurrent current of the previous spikes `prev` (from ek_linear_current; rec may be spk). prev is
   state: it receives spk. */
void ek_rsynaptic(const float *cur, const float *rec, const float *alpha, const float *beta, const float *thr,
                  int pstep, float *prev, float *syn, float *mem, float *spk, int n, int reset, int delay,
                  int instant, float graded);

/* Leaky integrator (no spikes): mem = beta mem' + scale cur, out = mem; out may be cur. */
void ek_leaky_integrator(const float *cur, const float *beta, const float *scale, int pstep, float *mem,
                         float *out, int n);

/* Delay by `steps` calls: y = the x of `steps` calls ago (zero before); ring [steps][n] and pos are
   state. y must not be x. */
void ek_delay(const float *x, float *ring, int32_t *pos, int steps, int n, float *y);

/* Number of nonzero entries of x[n]. */
int ek_count_nonzero(const float *x, int n);

/* cur[o] = bias[o] + sum over i of x[i] wt[i][o] (wt is [k][o] row-major: the Linear weight
   transposed), rounded once to float32 like the reference's float64 sum. Fewer than event_limit
   nonzero inputs: the event path (only the rows of nonzero inputs are read; lo[o] is scratch);
   otherwise the dense path (lo unused). Both give the same bits. */
void ek_linear_current(const float *x, int k, const float *wt, const float *bias, int o, int event_limit,
                       float *cur, float *lo);

#endif
