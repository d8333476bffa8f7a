#include <math.h>

#include "spiking.h"

/* The neuron updates below are the reference's float32 formulas written out in its order (see
   leaky_step_ref, synaptic_step_ref and rleaky_step_ref); every literal is a float so nothing is
   promoted to double (software-emulated on single-precision FPUs). */

/* snntorch's reset_delay=False branch: reset again at once by d = S/graded - r. S/graded is exactly
   the spike indicator f (graded * 1 / graded = 1, and +-0 / graded = +0), so no division is needed. */
static float ek__instant(float u, float f, float r, float th, int instant) {
  float d = f - r;
  if (instant == EK_RESET_SUBTRACT) return u - d * th;
  if (instant == EK_RESET_ZERO) return u - d * u;
  return u;
}

/* The reset of Synaptic and RLeaky applied to the freshly integrated membrane u, then the spike;
   returns the new membrane and writes the spike (the Numba kernels' _after). */
static float ek__after(float u, float th, float r, int reset, int delay, int instant, float graded,
                       float *spk) {
  float f;
  if (reset == EK_RESET_SUBTRACT) u = u - r * th;
  else if (reset == EK_RESET_ZERO) u = u - r * u;
  f = u > th ? 1.0f : 0.0f;
  *spk = f * graded;
  return delay ? u : ek__instant(u, f, r, th, instant);
}

void ek_leaky(const float *cur, const float *beta, const float *thr, int pstep, float *mem, float *spk,
              int n, int reset, int delay, int instant, float graded) {
  int i;
  for (i = 0; i < n; i++) {
    float th = thr[i * pstep], m = mem[i], u, f;
    float r = m > th ? 1.0f : 0.0f;
    if (reset == EK_RESET_ZERO) m = (1.0f - r) * m;  /* Leaky zeroes the old membrane, before the input */
    u = beta[i * pstep] * m + cur[i];
    if (reset == EK_RESET_SUBTRACT) u = u - r * th;
    f = u > th ? 1.0f : 0.0f;
    spk[i] = f * graded;  /* after the last read of cur[i]: spk may be cur */
    mem[i] = delay ? u : ek__instant(u, f, r, th, instant);
  }
}

void ek_synaptic(const float *cur, const float *alpha, const float *beta, const float *thr, int pstep,
                 float *syn, float *mem, float *spk, int n, int reset, int delay, int instant, float graded) {
  int i;
  for (i = 0; i < n; i++) {
    float th = thr[i * pstep], m = mem[i];
    float r = m > th ? 1.0f : 0.0f;
    float s = alpha[i * pstep] * syn[i] + cur[i];  /* the synaptic current is never reset */
    syn[i] = s;
    mem[i] = ek__after(beta[i * pstep] * m + s, th, r, reset, delay, instant, graded, &spk[i]);
  }
}

void ek_rleaky(const float *cur, const float *rec, const float *v, const float *beta, const float *thr,
               int pstep, float *prev, float *mem, float *spk, int n, int reset, int delay, int instant,
               float graded) {
  int i;
  for (i = 0; i < n; i++) {
    float th = thr[i * pstep], m = mem[i];
    float r = m > th ? 1.0f : 0.0f;
    float q = rec ? rec[i] : prev[i] * v[i * pstep];
    mem[i] = ek__after((beta[i * pstep] * m + cur[i]) + q, th, r, reset, delay, instant, graded, &spk[i]);
    prev[i] = spk[i];
  }
}

void ek_rsynaptic(const float *cur, const float *rec, const float *alpha, const float *beta, const float *thr,
                  int pstep, float *prev, float *syn, float *mem, float *spk, int n, int reset, int delay,
                  int instant, float graded) {
  int i;
  for (i = 0; i < n; i++) {
    float th = thr[i * pstep], m = mem[i];
    float r = m > th ? 1.0f : 0.0f;
    float s = (alpha[i * pstep] * syn[i] + cur[i]) + rec[i];
    syn[i] = s;
    mem[i] = ek__after(beta[i * pstep] * m + s, th, r, reset, delay, instant, graded, &spk[i]);
    prev[i] = spk[i];
  }
}

void ek_leaky_integrator(const float *cur, const float *beta, const float *scale, int pstep, float *mem,
                         float *out, int n) {
  int i;
  for (i = 0; i < n; i++) {
    float m = beta[i * pstep] * mem[i] + scale[i * pstep] * cur[i];
    mem[i] = m;
    out[i] = m;  /* after the last read of cur[i]: out may be cur */
  }
}

void ek_delay(const float *x, float *ring, int32_t *pos, int steps, int n, float *y) {
  float *slot = ring + (long)*pos * n;  /* the oldest input, steps ago */
  int i;
  for (i = 0; i < n; i++) {
    float old = slot[i];
    slot[i] = x[i];
    y[i] = old;
  }
  *pos = *pos + 1 == steps ? 0 : *pos + 1;
}

int ek_count_nonzero(const float *x, int n) {
  int i, c = 0;
  for (i = 0; i < n; i++) c += x[i] != 0.0f;
  return c;
}

/* ---- the synaptic sums -------------------------------------------------------------------------
   The reference sums x @ wt + bias in float64 and rounds once to float32. A plain float32 sum differs
   from that in the last bit most of the time, and a last bit is enough to flip a spike whose membrane
   sits at the threshold. So each sum is kept as an unevaluated pair hi + lo of floats: the product
   x w is split exactly into p + pl (fmaf gives the rounding error of x * w), TwoSum (Knuth: six
   additions, branch-free, exact in round-to-nearest) splits hi + p into the rounded sum and its error,
   and the errors gather in lo. The pair carries about twice float's precision, so hi + lo rounds to the
   reference's float32 unless the exact sum lies all but on a rounding midpoint (none in 10^5 random
   sums of 128 to 784 terms, where a float32 sum differed in 8 of 10). When a spike's input x is exactly 1
   (plain spikes) the product is skipped. This needs float evaluation in float precision
   (FLT_EVAL_METHOD 0: any FPU but the x87) and no reassociation (never -ffast-math).

   Defining EK_SPIKING_FLOAT32_SUMS makes the sums plain float32 (bias first, then the rows in input
   order, as the Numba runtime's event kernel): about a third of the FPU operations per synaptic
   event, with spikes that may then flip against the reference when a membrane sits at the threshold. */

#ifdef EK_SPIKING_FLOAT32_SUMS

static void ek__row_add1(float *hi, float *lo, const float *row, int o) {
  int j;
  (void)lo;
  for (j = 0; j < o; j++) hi[j] = hi[j] + row[j];
}

static void ek__row_addx(float *hi, float *lo, float xv, const float *row, int o) {
  int j;
  (void)lo;
  for (j = 0; j < o; j++) hi[j] = hi[j] + xv * row[j];
}

static float ek__dot(const float *x, int k, const float *wcol, int stride, float bias) {
  float acc = bias;
  int i;
  for (i = 0; i < k; i++) acc = acc + x[i] * wcol[i * stride];
  return acc;
}

#else

/* (hi, lo) += (b, 0): TwoSum of hi + b, its error into lo. */
#define EK__TWO_SUM(hi, lo, b) do { \
    float s_ = (hi) + (b), bb_ = s_ - (hi); \
    (lo) += ((hi) - (s_ - bb_)) + ((b) - bb_); \
    (hi) = s_; \
  } while (0)

static void ek__row_add1(float *hi, float *lo, const float *row, int o) {
  int j;
  for (j = 0; j < o; j++) {
    float h = hi[j], l = lo[j];
    EK__TWO_SUM(h, l, row[j]);
    hi[j] = h;
    lo[j] = l;
  }
}

static void ek__row_addx(float *hi, float *lo, float xv, const float *row, int o) {
  int j;
  for (j = 0; j < o; j++) {
    float h = hi[j], l = lo[j], p = xv * row[j];
    l += fmaf(xv, row[j], -p);  /* the exact rounding error of xv * row[j] */
    EK__TWO_SUM(h, l, p);
    hi[j] = h;
    lo[j] = l;
  }
}

static float ek__dot(const float *x, int k, const float *wcol, int stride, float bias) {
  float h = bias, l = 0.0f;
  int i;
  for (i = 0; i < k; i++) {
    float w = wcol[i * stride], p = x[i] * w;
    l += fmaf(x[i], w, -p);
    EK__TWO_SUM(h, l, p);
  }
  return h + l;
}

#endif

/* Event path: hi (in cur) and lo over all outputs, one contiguous weight row added per nonzero input. */
static void ek__event_current(const float *x, int k, const float *wt, const float *bias, int o, float *cur,
                              float *lo) {
  int i, j;
  for (j = 0; j < o; j++) {
    cur[j] = bias[j];
    lo[j] = 0.0f;
  }
  for (i = 0; i < k; i++) {
    float xv = x[i];
    if (xv == 0.0f) continue;
    if (xv == 1.0f) ek__row_add1(cur, lo, wt + i * o, o);
    else ek__row_addx(cur, lo, xv, wt + i * o, o);
  }
#ifndef EK_SPIKING_FLOAT32_SUMS
  for (j = 0; j < o; j++) cur[j] = cur[j] + lo[j];
#endif
}

/* Dense path: one dot product per output down a column of wt, its sum held in registers (with no
   SIMD, this saves the loads and stores of the event path's accumulators). The same order of
   additions per output as the event path. */
static void ek__dense_current(const float *x, int k, const float *wt, const float *bias, int o, float *cur) {
  int j;
  for (j = 0; j < o; j++) cur[j] = ek__dot(x, k, wt + j, o, bias[j]);
}

void ek_linear_current(const float *x, int k, const float *wt, const float *bias, int o, int event_limit,
                       float *cur, float *lo) {
  if (event_limit > k || ek_count_nonzero(x, k) < event_limit) ek__event_current(x, k, wt, bias, o, cur, lo);
  else ek__dense_current(x, k, wt, bias, o, cur);
}
