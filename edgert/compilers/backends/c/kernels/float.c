/* edgert float kernels (see float.h). Written for a scalar core with a single-precision FPU and 32
 * float registers (Cortex-M7/M4F): the hot loops keep their accumulators in registers, read every
 * weight and input once per block, and never branch on a bound; float only, never double.
 * Compiled with -ffp-contract=fast (ops_float.FLAGS) so each multiply-add is one vfma. */
#include <string.h>
#include "float.h"

/* max/min with the NaN rule of fmaxf/fminf (a NaN operand gives the other one) */
#if defined(__ARM_ARCH_7EM__) && defined(__ARM_FP) && (__ARM_FP & 8)
/* FPv5 (Cortex-M7 with the double-precision FPU): fmaxf/fminf are single instructions, vmaxnm/vminnm */
#define EK_MAX(a, b) fmaxf(a, b)
#define EK_MIN(a, b) fminf(a, b)
#else
/* elsewhere fmaxf may be a library call; a compare and select is as fast as it gets */
#define EK_MAX(a, b) ((a) > (b) ? (a) : (b))
#define EK_MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

#define EK_NP EK_CONV_PIXELS

#if defined(__GNUC__)
#define EK_INLINE static inline __attribute__((always_inline))
#define EK_NOINLINE static __attribute__((noinline))
#else
#define EK_INLINE static inline
#define EK_NOINLINE static
#endif

static int ek_imin(int a, int b) { return a < b ? a : b; }

EK_INLINE float ek_act(float v, int act, float lo, float hi) {
  if (act == EK_ACT_MAX) return EK_MAX(v, lo);
  if (act == EK_ACT_CLAMP) return EK_MIN(EK_MAX(v, lo), hi);
  return v;
}

/* ---- elementwise ---- */

void ek_relu(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = EK_MAX(x[i], 0.0f);  /* a NaN gives 0 */
}

void ek_clip(const float *x, float *y, int n, float lo, float hi) {
  int i;
  for (i = 0; i < n; i++) y[i] = EK_MIN(EK_MAX(x[i], lo), hi);
}

void ek_sigmoid(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i]));  /* exp overflow gives 1/inf = 0 */
}

void ek_tanh(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = tanhf(x[i]);
}

void ek_copy(const float *x, float *y, int n) {
  if (x != y) memcpy(y, x, (size_t)n * sizeof(float));
}

/* ---- conv2d: blocks of 4 output channels x EK_NP (6) pixels ----
 * 24 accumulators + 6 inputs + 1 weight stay in the 32 float registers: per input channel (or tap)
 * 10 loads feed 24 fused multiply-adds. Unrolling further makes GCC spill. */

#define EK_ACC_DECL(o) float a##o##0 = b##o, a##o##1 = b##o, a##o##2 = b##o, a##o##3 = b##o, \
  a##o##4 = b##o, a##o##5 = b##o;
#define EK_ACC_FMA(o) { const float wv = w[o]; a##o##0 += wv * x0; a##o##1 += wv * x1; \
  a##o##2 += wv * x2; a##o##3 += wv * x3; a##o##4 += wv * x4; a##o##5 += wv * x5; }
#define EK_ACC_MAP(o, F) a##o##0 = F(a##o##0); a##o##1 = F(a##o##1); a##o##2 = F(a##o##2); \
  a##o##3 = F(a##o##3); a##o##4 = F(a##o##4); a##o##5 = F(a##o##5);
#define EK_ACC_STORE(o) { float *yo = y + (o) * ys; yo[0] = a##o##0; yo[1] = a##o##1; yo[2] = a##o##2; \
  yo[3] = a##o##3; yo[4] = a##o##4; yo[5] = a##o##5; }
#define EK_ACC_ROW(o) { a##o##0, a##o##1, a##o##2, a##o##3, a##o##4, a##o##5 }
#define EK_F_MAX(v) EK_MAX(v, lo)
#define EK_F_CLAMP(v) EK_MIN(EK_MAX(v, lo), hi)

/* y[o*ys + q] = act(b[o] + sum_k w[k*4 + o] * x[k*xs + q]) for o < no, q < np (the block is computed
 * whole: w is zero-padded past no, x past np) */
static void ek_block4x6(const float *w, const float *x, int xs, int k, const float *b, float *y, int ys,
                        int no, int np, int act, float lo, float hi) {
  const float b0 = b ? b[0] : 0.0f, b1 = b ? b[1] : 0.0f, b2 = b ? b[2] : 0.0f, b3 = b ? b[3] : 0.0f;
  EK_ACC_DECL(0) EK_ACC_DECL(1) EK_ACC_DECL(2) EK_ACC_DECL(3)
  for (; k > 0; k--) {
    const float x0 = x[0], x1 = x[1], x2 = x[2], x3 = x[3], x4 = x[4], x5 = x[5];
    EK_ACC_FMA(0) EK_ACC_FMA(1) EK_ACC_FMA(2) EK_ACC_FMA(3)
    x += xs;
    w += 4;
  }
  if (act == EK_ACT_MAX) {
    EK_ACC_MAP(0, EK_F_MAX) EK_ACC_MAP(1, EK_F_MAX) EK_ACC_MAP(2, EK_F_MAX) EK_ACC_MAP(3, EK_F_MAX)
  } else if (act == EK_ACT_CLAMP) {
    EK_ACC_MAP(0, EK_F_CLAMP) EK_ACC_MAP(1, EK_F_CLAMP) EK_ACC_MAP(2, EK_F_CLAMP) EK_ACC_MAP(3, EK_F_CLAMP)
  }
  if (no == 4 && np == EK_NP) {
    EK_ACC_STORE(0) EK_ACC_STORE(1) EK_ACC_STORE(2) EK_ACC_STORE(3)
  } else {
    const float r[4][EK_NP] = {EK_ACC_ROW(0), EK_ACC_ROW(1), EK_ACC_ROW(2), EK_ACC_ROW(3)};
    int o, q;
    for (o = 0; o < no; o++)
      for (q = 0; q < np; q++) y[o * ys + q] = r[o][q];
  }
}

/* taps i of a window starting at s (stride d) that land in [0, n): [*i0, *i1) */
static void ek_taps(int s, int d, int k, int n, int *i0, int *i1) {
  *i0 = s < 0 ? (-s + d - 1) / d : 0;
  *i1 = n - s <= 0 ? 0 : ek_imin(k, (n - s + d - 1) / d);
  if (*i0 > *i1) *i0 = *i1;
}

/* patch[k*EK_NP + q] = the input under tap k of output pixel p0 + q: 0 in the padding and for q >= np.
 * Pixel by pixel: the kernel rows and columns inside the input are worked out once, so the copies
 * test nothing; a pixel whose window has every column inside (most) copies whole kernel rows, a 3-tap
 * row with constant offsets. Not inlined into ek_conv2d: the copy loops need the registers. */
EK_NOINLINE void ek_gather(const float *x, const ek_conv_geom *g, int cg, int p0, int np, float *patch) {
  const int h = g->h, w = g->w, kh = g->kh, kw = g->kw, dh = g->dh, dw = g->dw, hw = h * w;
  const int rs = dh * w, ks = kw * EK_NP;  /* input step between kernel rows; patch step likewise */
  int q, c, i, j;
  for (q = 0; q < EK_NP; q++) {
    float *const dq = patch + q;
    if (q >= np) {
      for (i = cg * kh * kw - 1; i >= 0; i--) dq[i * EK_NP] = 0.0f;
      continue;
    }
    {
      const int p = p0 + q, oy = p / g->ow, ox = p - oy * g->ow;
      const int iy0 = oy * g->sh - g->pt, ix0 = ox * g->sw - g->pl;
      int r0, r1, c0, c1;
      ek_taps(iy0, dh, kh, h, &r0, &r1);
      ek_taps(ix0, dw, kw, w, &c0, &c1);
      if (kh == 3 && kw == 3 && dw == 1 && r0 == 0 && r1 == 3 && c0 == 0 && c1 == 3) {
        /* a 3x3 window wholly inside: three row pointers, every offset a constant */
        const float *const s = x + iy0 * w + ix0;
        float *d = dq;
        for (c = 0; c < cg; c++, d += 9 * EK_NP) {
          const float *const s0 = s + c * hw, *const s1 = s0 + rs, *const s2 = s1 + rs;
          d[0] = s0[0];
          d[EK_NP] = s0[1];
          d[2 * EK_NP] = s0[2];
          d[3 * EK_NP] = s1[0];
          d[4 * EK_NP] = s1[1];
          d[5 * EK_NP] = s1[2];
          d[6 * EK_NP] = s2[0];
          d[7 * EK_NP] = s2[1];
          d[8 * EK_NP] = s2[2];
        }
        continue;
      }
      for (c = 0; c < cg; c++) {
        float *d = dq + c * kh * ks;
        for (i = 0; i < r0 * kw; i++, d += EK_NP) *d = 0.0f;  /* kernel rows in the top padding */
        if (r1 > r0) {
          const float *s0 = x + c * hw + (iy0 + r0 * dh) * w + ix0 + c0 * dw;  /* tap (r0, c0) */
          if (c0 == 0 && c1 == kw && kw == 3 && dw == 1) {
            for (i = 0; i < r1 - r0; i++, d += ks) {
              const float *s = s0 + i * rs;
              d[0] = s[0];
              d[EK_NP] = s[1];
              d[2 * EK_NP] = s[2];
            }
          } else {
            for (i = 0; i < r1 - r0; i++) {
              const float *s = s0 + i * rs;
              for (j = 0; j < c0; j++, d += EK_NP) *d = 0.0f;
              for (; j < c1; j++, d += EK_NP) *d = s[(j - c0) * dw];
              for (; j < kw; j++, d += EK_NP) *d = 0.0f;
            }
          }
        }
        for (i = (kh - r1) * kw; i > 0; i--, d += EK_NP) *d = 0.0f;  /* and in the bottom */
      }
    }
  }
}

void ek_conv2d(const float *x, const float *w, const float *b, float *y, float *patch,
               const ek_conv_geom *g, int act, float lo, float hi) {
  const int cg = g->c / g->groups, og = g->o / g->groups, nob = (og + 3) / 4;
  const int k = cg * g->kh * g->kw, hw = g->h * g->w, ohw = g->oh * g->ow;
  /* a 1x1 conv at stride 1 without padding reads its pixels straight from x */
  const int direct = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->pt == 0 && g->pl == 0 &&
                     g->oh == g->h && g->ow == g->w;
  int grp, p0, ob;
  for (grp = 0; grp < g->groups; grp++) {
    const float *xg = x + grp * cg * hw, *wg = w + grp * nob * k * 4;
    const float *bg = b ? b + grp * nob * 4 : NULL;
    float *yg = y + grp * og * ohw;
    for (p0 = 0; p0 < ohw; p0 += EK_NP) {
      const int np = ek_imin(EK_NP, ohw - p0);
      const float *src = patch;
      int xs = EK_NP;
      if (direct && np == EK_NP) {
        src = xg + p0;
        xs = hw;
      } else if (direct) {  /* the last pixels: copied, zero-padded to a whole block */
        int kk, q;
        for (kk = 0; kk < k; kk++)
          for (q = 0; q < EK_NP; q++) patch[kk * EK_NP + q] = q < np ? xg[kk * hw + p0 + q] : 0.0f;
      } else {
        ek_gather(xg, g, cg, p0, np, patch);
      }
      for (ob = 0; ob < nob; ob++)
        ek_block4x6(wg + ob * k * 4, src, xs, k, bg ? bg + ob * 4 : NULL, yg + ob * 4 * ohw + p0, ohw,
                    ek_imin(4, og - ob * 4), np, act, lo, hi);
    }
  }
}

/* ---- depthwise conv ---- */

/* Multiply-adds are written one per statement: `a += x*k` is one vfma, while `a += x*k + y*l` would
 * round the products' sum first (a vmul, a vfma and a vadd). */
#define EK_MAC3(a, q, k0, k1, k2) { a += (q)[0] * (k0); a += (q)[1] * (k1); a += (q)[2] * (k2); }
#define EK_MAC2(a, q, k0, k1) { a += (q)[0] * (k0); a += (q)[1] * (k1); }

/* 3x3, stride 1, padding 1 all round, on an h x w plane (h, w >= 2): no padded copy, no zero taps.
 * The plane is cut into vertical strips: the two edge columns (each has two input columns; the
 * padding drops a weight column), and interior strips of three output columns (five input columns).
 * A strip slides down the rows: each input row is loaded once and feeds the three output rows it
 * touches (weight rows 2, 1, 0 of output rows i-1, i, i+1); output row i-1 is then complete. The
 * slide is unrolled three times so the three accumulator sets rotate by name, not by moves; the top
 * and bottom padding are the slide's first and last steps. Interior strip: 5 loads feed 27
 * multiply-adds. The strips are inlined into one copy per activation kind (none, clamp: relu is a
 * clamp to [0, inf]), so no output tests it. */

#define EK_CL(v) (act ? EK_MIN(EK_MAX(v, lo), hi) : (v))

/* the slide over rows 0..h-1 of one strip, given its per-set steps:
 * INIT(A) sets A to the bias, LOAD loads input row r, ADD(A, t) adds the row under weight row t,
 * STORE(A) writes A at yo */
#define EK_SLIDE(INIT, LOAD, ADD, STORE)                                   \
  {                                                                        \
    const float *r = x, *const rlast = x + (h - 1) * w;                    \
    float *yo = y;                                                         \
    INIT(A) INIT(B) LOAD ADD(A, 1) ADD(B, 0)                               \
    r += w;                                                                \
    for (;;) {                                                             \
      if (r == rlast) { LOAD ADD(A, 2) ADD(B, 1) STORE(A) yo += w; STORE(B) break; } \
      INIT(C) LOAD ADD(A, 2) ADD(B, 1) ADD(C, 0) STORE(A) r += w; yo += w; \
      if (r == rlast) { LOAD ADD(B, 2) ADD(C, 1) STORE(B) yo += w; STORE(C) break; } \
      INIT(A) LOAD ADD(B, 2) ADD(C, 1) ADD(A, 0) STORE(B) r += w; yo += w; \
      if (r == rlast) { LOAD ADD(C, 2) ADD(A, 1) STORE(C) yo += w; STORE(A) break; } \
      INIT(B) LOAD ADD(C, 2) ADD(A, 1) ADD(B, 0) STORE(C) r += w; yo += w; \
    }                                                                      \
  }

/* weight row t of k, as three registers kt0, kt1, kt2 */
#define EK_K9 const float k00 = k[0], k01 = k[1], k02 = k[2], k10 = k[3], k11 = k[4], k12 = k[5], \
  k20 = k[6], k21 = k[7], k22 = k[8];

/* interior strip: output columns 0..2 of x, y (input columns -1..3) */
#define EK_S3_INIT(A) A##0 = bias; A##1 = bias; A##2 = bias;
#define EK_S3_LOAD e0 = r[-1]; e1 = r[0]; e2 = r[1]; e3 = r[2]; e4 = r[3];
#define EK_S3_ADD(A, t)                                                              \
  A##0 += e0 * k##t##0; A##1 += e1 * k##t##0; A##2 += e2 * k##t##0;                 \
  A##0 += e1 * k##t##1; A##1 += e2 * k##t##1; A##2 += e3 * k##t##1;                 \
  A##0 += e2 * k##t##2; A##1 += e3 * k##t##2; A##2 += e4 * k##t##2;
#define EK_S3_STORE(A) yo[0] = EK_CL(A##0); yo[1] = EK_CL(A##1); yo[2] = EK_CL(A##2);

EK_INLINE void ek_dw3_strip3(const float *x, int h, int w, const float *k, float bias, float *y, int act,
                             float lo, float hi) {
  EK_K9
  float A0, A1, A2, B0, B1, B2, C0, C1, C2, e0, e1, e2, e3, e4;
  EK_SLIDE(EK_S3_INIT, EK_S3_LOAD, EK_S3_ADD, EK_S3_STORE)
}

/* interior strip of one output column (input columns -1..1) */
#define EK_S1_INIT(A) A = bias;
#define EK_S1_LOAD e0 = r[-1]; e1 = r[0]; e2 = r[1];
#define EK_S1_ADD(A, t) A += e0 * k##t##0; A += e1 * k##t##1; A += e2 * k##t##2;
#define EK_S1_STORE(A) yo[0] = EK_CL(A);

EK_INLINE void ek_dw3_strip1(const float *x, int h, int w, const float *k, float bias, float *y, int act,
                             float lo, float hi) {
  EK_K9
  float A, B, C, e0, e1, e2;
  EK_SLIDE(EK_S1_INIT, EK_S1_LOAD, EK_S1_ADD, EK_S1_STORE)
}

/* an edge column: input columns 0, 1 under weight columns c, c + 1 (the padding has the third) */
#define EK_E_LOAD e0 = r[0]; e1 = r[1];
#define EK_E_ADD(A, t) A += e0 * k##t##0; A += e1 * k##t##1;

EK_INLINE void ek_dw3_edge(const float *x, int h, int w, const float *kf, int c, float bias, float *y,
                           int act, float lo, float hi) {
  const float k00 = kf[c], k01 = kf[c + 1], k10 = kf[3 + c], k11 = kf[4 + c], k20 = kf[6 + c],
              k21 = kf[7 + c];
  float A, B, C, e0, e1;
  EK_SLIDE(EK_S1_INIT, EK_E_LOAD, EK_E_ADD, EK_S1_STORE)
}

EK_INLINE void ek_dw3x3_pad1_act(const float *x, int h, int w, const float *k, float bias, float *y,
                                 int act, float lo, float hi) {
  int c;
  ek_dw3_edge(x, h, w, k, 1, bias, y, act, lo, hi);  /* column 0: weight columns 1, 2 */
  for (c = 1; c + 3 <= w - 1; c += 3) ek_dw3_strip3(x + c, h, w, k, bias, y + c, act, lo, hi);
  for (; c < w - 1; c++) ek_dw3_strip1(x + c, h, w, k, bias, y + c, act, lo, hi);
  ek_dw3_edge(x + w - 2, h, w, k, 0, bias, y + w - 1, act, lo, hi);  /* the last: weight columns 0, 1 */
}

static void ek_dw3x3_pad1(const float *x, int h, int w, const float *k, float bias, float *y, int act,
                          float lo, float hi) {
  if (act == EK_ACT_NONE) {
    ek_dw3x3_pad1_act(x, h, w, k, bias, y, 0, lo, hi);
  } else {
    if (act == EK_ACT_MAX) hi = INFINITY;
    ek_dw3x3_pad1_act(x, h, w, k, bias, y, 1, lo, hi);
  }
}

/* The general depthwise plane, one output row at a time: each kernel row reads an input row, or a
 * row of zeros where it falls in the padding; the columns whose window lies inside the input run
 * without tests (a 3x3 window at stride 1 or 2 two outputs at a time, sharing the input columns they
 * overlap: 12 or 15 loads feed 18 multiply-adds), the border columns clip their windows. No padded
 * copy of the plane: at stride 2 it would cost more than the taps it saves. */

#define EK_DW_MAXK 16  /* kernel rows of the row-pointer path; taller kernels clip every window */

/* [*o0, *o1): the outputs along an axis (n inputs, k taps, stride s, dilation d, padding p before)
 * whose window lies inside the input */
static void ek_inside(int n, int out, int k, int s, int d, int p, int *o0, int *o1) {
  const int last = n - 1 - (k - 1) * d + p;  /* the window of o is inside while o*s <= last */
  *o0 = ek_imin((p + s - 1) / s, out);
  *o1 = last < 0 ? 0 : ek_imin(last / s + 1, out);
  if (*o1 < *o0) *o1 = *o0;
}

/* input row r under weight row t, for outputs a0 (columns c..c+2) and a1 (at stride 1 or 2) */
#define EK_DW_S1(r, t) { const float *q = (r) + c; const float e0 = q[0], e1 = q[1], e2 = q[2], e3 = q[3]; \
  a0 += e0 * k##t##0; a1 += e1 * k##t##0; a0 += e1 * k##t##1; a1 += e2 * k##t##1;                     \
  a0 += e2 * k##t##2; a1 += e3 * k##t##2; }
#define EK_DW_S2(r, t) { const float *q = (r) + c; const float e0 = q[0], e1 = q[1], e2 = q[2], e3 = q[3], \
  e4 = q[4]; a0 += e0 * k##t##0; a1 += e2 * k##t##0; a0 += e1 * k##t##1; a1 += e3 * k##t##1;         \
  a0 += e2 * k##t##2; a1 += e4 * k##t##2; }
#define EK_DW_1(r, t) { const float *q = (r) + c; a0 += q[0] * k##t##0; a0 += q[1] * k##t##1; \
  a0 += q[2] * k##t##2; }

/* output (oy, ox) with its window clipped to the input (kernels too tall for the row pointers) */
static float ek_dw_clipped(const float *x, const float *k, float bias, const ek_conv_geom *g, int oy, int ox) {
  const int iy0 = oy * g->sh - g->pt, ix0 = ox * g->sw - g->pl;
  int i0, i1, j0, j1, i, j;
  float a = bias;
  ek_taps(iy0, g->dh, g->kh, g->h, &i0, &i1);
  ek_taps(ix0, g->dw, g->kw, g->w, &j0, &j1);
  for (i = i0; i < i1; i++) {
    const float *row = x + (iy0 + i * g->dh) * g->w;
    for (j = j0; j < j1; j++) a += row[ix0 + j * g->dw] * k[i * g->kw + j];
  }
  return a;
}

/* border column ox of an output row: its window clipped to the input's columns */
static float ek_dw_edge(const float *const *rp, const float *k, float bias, const ek_conv_geom *g, int ox) {
  const int ix0 = ox * g->sw - g->pl;
  int j0, j1, i, j;
  float a = bias;
  ek_taps(ix0, g->dw, g->kw, g->w, &j0, &j1);
  for (i = 0; i < g->kh; i++)
    for (j = j0; j < j1; j++) a += rp[i][ix0 + j * g->dw] * k[i * g->kw + j];
  return a;
}

/* one plane; zero is a row of g->w zeros; the columns [ox0, ox1) have their windows inside */
EK_INLINE void ek_dw_plane_act(const float *x, const float *k, float bias, float *y, const ek_conv_geom *g,
                               const float *zero, int ox0, int ox1, int act, float lo, float hi) {
  const int kh = g->kh, kw = g->kw, sw = g->sw, dw = g->dw, w = g->w, ow = g->ow;
  const float *rp[EK_DW_MAXK];
  int oy, ox, i, j;
  const int k33 = kh == 3 && kw == 3 && dw == 1;
  float k9[9] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f}, k00, k01, k02, k10, k11, k12, k20,
        k21, k22;
  if (k33) memcpy(k9, k, sizeof k9);  /* copied to registers: the stores to y cannot change them */
  k00 = k9[0], k01 = k9[1], k02 = k9[2], k10 = k9[3], k11 = k9[4], k12 = k9[5], k20 = k9[6], k21 = k9[7];
  k22 = k9[8];
  for (oy = 0; oy < g->oh; oy++, y += ow) {
    for (i = 0; i < kh; i++) {
      const int iy = oy * g->sh - g->pt + i * g->dh;
      rp[i] = iy >= 0 && iy < g->h ? x + iy * w : zero;
    }
    for (ox = 0; ox < ox0; ox++) y[ox] = ek_act(ek_dw_edge(rp, k, bias, g, ox), act, lo, hi);
    if (k33) {
      const float *const r0 = rp[0], *const r1 = rp[1], *const r2 = rp[2];
      if (sw == 1) {
        for (; ox + 1 < ox1; ox += 2) {
          const int c = ox - g->pl;
          float a0 = bias, a1 = bias;
          EK_DW_S1(r0, 0) EK_DW_S1(r1, 1) EK_DW_S1(r2, 2)
          y[ox] = ek_act(a0, act, lo, hi);
          y[ox + 1] = ek_act(a1, act, lo, hi);
        }
      } else if (sw == 2) {
        for (; ox + 1 < ox1; ox += 2) {
          const int c = 2 * ox - g->pl;
          float a0 = bias, a1 = bias;
          EK_DW_S2(r0, 0) EK_DW_S2(r1, 1) EK_DW_S2(r2, 2)
          y[ox] = ek_act(a0, act, lo, hi);
          y[ox + 1] = ek_act(a1, act, lo, hi);
        }
      }
      for (; ox < ox1; ox++) {
        const int c = ox * sw - g->pl;
        float a0 = bias;
        EK_DW_1(r0, 0) EK_DW_1(r1, 1) EK_DW_1(r2, 2)
        y[ox] = ek_act(a0, act, lo, hi);
      }
    } else {
      for (; ox < ox1; ox++) {
        const int c = ox * sw - g->pl;
        float a = bias;
        for (i = 0; i < kh; i++)
          for (j = 0; j < kw; j++) a += rp[i][c + j * dw] * k[i * kw + j];
        y[ox] = ek_act(a, act, lo, hi);
      }
    }
    for (ox = ox1 > ox0 ? ox1 : ox0; ox < ow; ox++) y[ox] = ek_act(ek_dw_edge(rp, k, bias, g, ox), act, lo, hi);
  }
}

static void ek_dw_plane(const float *x, const float *k, float bias, float *y, const ek_conv_geom *g,
                        const float *zero, int act, float lo, float hi) {
  int ox0, ox1, oy, ox;
  if (g->kh > EK_DW_MAXK) {
    for (oy = 0; oy < g->oh; oy++)
      for (ox = 0; ox < g->ow; ox++) *y++ = ek_act(ek_dw_clipped(x, k, bias, g, oy, ox), act, lo, hi);
    return;
  }
  ek_inside(g->w, g->ow, g->kw, g->sw, g->dw, g->pl, &ox0, &ox1);
  if (act == EK_ACT_MAX)
    ek_dw_plane_act(x, k, bias, y, g, zero, ox0, ox1, EK_ACT_MAX, lo, hi);
  else if (act == EK_ACT_CLAMP)
    ek_dw_plane_act(x, k, bias, y, g, zero, ox0, ox1, EK_ACT_CLAMP, lo, hi);
  else
    ek_dw_plane_act(x, k, bias, y, g, zero, ox0, ox1, EK_ACT_NONE, lo, hi);
}

void ek_dwconv2d(const float *x, const float *w, const float *b, float *y, float *zero, const ek_conv_geom *g,
                 int act, float lo, float hi) {
  const int m = g->o / g->c, taps = g->kh * g->kw, hw = g->h * g->w, ohw = g->oh * g->ow;
  const int pad1 = g->kh == 3 && g->kw == 3 && g->sh == 1 && g->sw == 1 && g->dh == 1 && g->dw == 1 &&
                   g->pt == 1 && g->pl == 1 && g->oh == g->h && g->ow == g->w && g->h >= 2 && g->w >= 2;
  int o;
  if (zero) memset(zero, 0, (size_t)g->w * sizeof(float));
  for (o = 0; o < g->o; o++) {  /* output channel o reads input channel o / m */
    const float *src = x + (o / m) * hw;
    const float bias = b ? b[o] : 0.0f;
    if (pad1)
      ek_dw3x3_pad1(src, g->h, g->w, w + o * taps, bias, y + o * ohw, act, lo, hi);
    else
      ek_dw_plane(src, w + o * taps, bias, y + o * ohw, g, zero, act, lo, hi);
  }
}

/* ---- linear: blocks of 16 outputs (17 loads per 16 multiply-adds; every weight is read once) ---- */

#define EK_L16(F) F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13) F(14) F(15)
#define EK_L_DECL(i) float a##i = bb ? bb[i] : 0.0f;
#define EK_L_FMA(i) a##i += wb[i] * v;
#define EK_L_ROW(i) a##i,

void ek_linear(const float *x, const float *w, const float *b, float *y, int rows, int k, int o,
               int act, float lo, float hi) {
  const int nob = (o + 15) / 16;
  int r, ob, i;
  for (r = 0; r < rows; r++, x += k, y += o) {
    const float *wb = w;
    for (ob = 0; ob < nob; ob++) {
      const float *bb = b ? b + ob * 16 : NULL;
      const int no = ek_imin(16, o - ob * 16);
      EK_L16(EK_L_DECL)
      for (i = 0; i < k; i++, wb += 16) {
        const float v = x[i];
        EK_L16(EK_L_FMA)
      }
      {
        const float acc[16] = {EK_L16(EK_L_ROW)};
        float *yb = y + ob * 16;
        for (i = 0; i < no; i++) yb[i] = ek_act(acc[i], act, lo, hi);
      }
    }
  }
}

void ek_scale_shift(const float *x, const float *scale, const float *shift, float *y, int c, int inner) {
  int ci, i;
  for (ci = 0; ci < c; ci++) {
    const float s = scale[ci], t = shift[ci];
    for (i = 0; i < inner; i++) *y++ = *x++ * s + t;
  }
}

/* ---- pools ---- */

void ek_max_pool2d(const float *x, float *y, const ek_pool_geom *g) {
  int c, oy, ox, i, j;
  for (c = 0; c < g->c; c++, x += g->h * g->w)
    for (oy = 0; oy < g->oh; oy++) {
      const int iy0 = oy * g->sh - g->pt;
      int i0, i1;
      ek_taps(iy0, g->dh, g->kh, g->h, &i0, &i1);
      for (ox = 0; ox < g->ow; ox++) {
        const int ix0 = ox * g->sw - g->pl;
        int j0, j1;
        float m = -INFINITY;  /* padding is -inf: a window entirely in it gives -inf, as PyTorch */
        ek_taps(ix0, g->dw, g->kw, g->w, &j0, &j1);
        for (i = i0; i < i1; i++) {
          const float *row = x + (iy0 + i * g->dh) * g->w;
          for (j = j0; j < j1; j++) m = EK_MAX(row[ix0 + j * g->dw], m);
        }
        *y++ = m;
      }
    }
}

/* the sum of n floats, in four running sums */
static float ek_sum(const float *p, int n) {
  float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
  int i;
  for (i = 0; i + 4 <= n; i += 4) {
    s0 += p[i];
    s1 += p[i + 1];
    s2 += p[i + 2];
    s3 += p[i + 3];
  }
  for (; i < n; i++) s0 += p[i];
  return (s0 + s1) + (s2 + s3);
}

void ek_avg_pool2d(const float *x, float *y, const ek_pool_geom *g, const float *div) {
  int c, oy, ox, i;
  for (c = 0; c < g->c; c++, x += g->h * g->w)
    for (oy = 0; oy < g->oh; oy++) {
      const int iy0 = oy * g->sh - g->pt;
      const int ya = iy0 < 0 ? 0 : iy0, yb = ek_imin(iy0 + g->kh, g->h);
      for (ox = 0; ox < g->ow; ox++) {
        const int ix0 = ox * g->sw - g->pl;
        const int xa = ix0 < 0 ? 0 : ix0, xb = ek_imin(ix0 + g->kw, g->w);
        float s = 0.0f;
        if (xa == 0 && xb == g->w)  /* whole rows: one run */
          s = ek_sum(x + ya * g->w, (yb - ya) * g->w);
        else
          for (i = ya; i < yb; i++) s += ek_sum(x + i * g->w + xa, xb - xa);
        *y++ = s / div[oy * g->ow + ox];
      }
    }
}

void ek_adaptive_avg_pool2d(const float *x, float *y, int c, int h, int w, int oh, int ow) {
  int ci, oy, ox, i;
  for (ci = 0; ci < c; ci++, x += h * w)
    for (oy = 0; oy < oh; oy++) {
      const int ya = oy * h / oh, yb = ((oy + 1) * h + oh - 1) / oh;
      for (ox = 0; ox < ow; ox++) {
        const int xa = ox * w / ow, xb = ((ox + 1) * w + ow - 1) / ow;
        float s = 0.0f;
        for (i = ya; i < yb; i++) s += ek_sum(x + i * w + xa, xb - xa);
        *y++ = s / (float)((yb - ya) * (xb - xa));
      }
    }
}

/* ---- add, concat, softmax ---- */

#define EK_MAX_RANK 8

void ek_add(const float *a, const float *b, float *y, int rank, const int *dims, const int *sa,
            const int *sb) {
  /* the last dim runs contiguous (stride 1) or broadcast (stride 0) in each input; the outer dims
   * step an odometer */
  const int n = dims[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];
  int idx[EK_MAX_RANK] = {0};
  int outer = 1, t, d, i, oa = 0, ob = 0;
  for (d = 0; d < rank - 1; d++) outer *= dims[d];
  for (t = 0; t < outer; t++, y += n) {
    const float *pa = a + oa, *pb = b + ob;
    if (ia && ib) {
      for (i = 0; i < n; i++) y[i] = pa[i] + pb[i];
    } else if (ia) {
      const float v = pb[0];
      for (i = 0; i < n; i++) y[i] = pa[i] + v;
    } else if (ib) {
      const float v = pa[0];
      for (i = 0; i < n; i++) y[i] = v + pb[i];
    } else {
      const float v = pa[0] + pb[0];
      for (i = 0; i < n; i++) y[i] = v;
    }
    for (d = rank - 2; d >= 0; d--) {
      oa += sa[d];
      ob += sb[d];
      if (++idx[d] < dims[d]) break;
      oa -= sa[d] * dims[d];
      ob -= sb[d] * dims[d];
      idx[d] = 0;
    }
  }
}

void ek_concat_part(const void *x, void *y, int outer, int chunk, int stride) {
  const unsigned char *src = (const unsigned char *)x;
  unsigned char *dst = (unsigned char *)y;
  int t;
  for (t = 0; t < outer; t++, src += chunk, dst += stride) memcpy(dst, src, (size_t)chunk);
}

void ek_softmax(const float *x, float *y, int outer, int n, int inner) {
  int t, i, j;
  for (t = 0; t < outer; t++, x += n * inner, y += n * inner)
    for (i = 0; i < inner; i++) {
      float m = x[i], s = 0.0f;
      for (j = 1; j < n; j++) m = EK_MAX(x[i + j * inner], m);
      for (j = 0; j < n; j++) {
        const float e = expf(x[i + j * inner] - m);  /* <= 1: the max subtracted, no overflow */
        y[i + j * inner] = e;
        s += e;
      }
      for (j = 0; j < n; j++) y[i + j * inner] /= s;
    }
}

/* ---- mul, sub, div: the odometer of ek_add, one operation per kernel ---- */

#define EK_BINARY(name, OP)                                                                            \
  void name(const float *a, const float *b, float *y, int rank, const int *dims, const int *sa,        \
            const int *sb) {                                                                           \
    const int n = dims[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];                                \
    int idx[EK_MAX_RANK] = {0};                                                                        \
    int outer = 1, t, d, i, oa = 0, ob = 0;                                                            \
    for (d = 0; d < rank - 1; d++) outer *= dims[d];                                                   \
    for (t = 0; t < outer; t++, y += n) {                                                              \
      const float *pa = a + oa, *pb = b + ob;                                                          \
      for (i = 0; i < n; i++) y[i] = OP(pa[i * ia], pb[i * ib]);                                       \
      for (d = rank - 2; d >= 0; d--) {                                                                \
        oa += sa[d];                                                                                   \
        ob += sb[d];                                                                                   \
        if (++idx[d] < dims[d]) break;                                                                 \
        oa -= sa[d] * dims[d];                                                                         \
        ob -= sb[d] * dims[d];                                                                         \
        idx[d] = 0;                                                                                    \
      }                                                                                                \
    }                                                                                                  \
  }

#define EK_MUL_OP(p, q) ((p) * (q))
#define EK_SUB_OP(p, q) ((p) - (q))
#define EK_DIV_OP(p, q) ((p) / (q))
EK_BINARY(ek_mul, EK_MUL_OP)
EK_BINARY(ek_sub, EK_SUB_OP)
EK_BINARY(ek_div, EK_DIV_OP)

/* ---- activations ---- */

void ek_silu(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = x[i] / (1.0f + expf(-x[i]));  /* exp overflow gives x/inf = -0 */
}

void ek_hardswish(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = x[i] * EK_MIN(EK_MAX(x[i] + 3.0f, 0.0f), 6.0f) / 6.0f;
}

void ek_hardsigmoid(const float *x, float *y, int n, float alpha, float beta) {
  int i;
  for (i = 0; i < n; i++) y[i] = EK_MIN(EK_MAX(alpha * x[i] + beta, 0.0f), 1.0f);
}

void ek_gelu(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void ek_gelu_tanh(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) {
    const float v = x[i];
    y[i] = 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)));
  }
}

void ek_leaky_relu(const float *x, float *y, int n, float slope) {
  int i;
  for (i = 0; i < n; i++) y[i] = x[i] >= 0.0f ? x[i] : slope * x[i];
}

void ek_prelu(const float *x, const float *slope, float *y, int planes, int c, int inner) {
  int p, i;
  for (p = 0; p < planes; p++, x += inner, y += inner) {
    const float s = slope[p % c];
    for (i = 0; i < inner; i++) y[i] = x[i] >= 0.0f ? x[i] : s * x[i];
  }
}

/* ---- layout: permute, pad; reductions; layer norm ---- */

/* the odometer step shared below: advance idx over dims[0..rank-2], moving *off by the strides */
EK_INLINE void ek_step(int rank, const int *dims, const int *st, int *idx, int *off) {
  int d;
  for (d = rank - 2; d >= 0; d--) {
    *off += st[d];
    if (++idx[d] < dims[d]) return;
    *off -= st[d] * dims[d];
    idx[d] = 0;
  }
}

static int ek_outer(int rank, const int *dims) {
  int d, outer = 1;
  for (d = 0; d < rank - 1; d++) outer *= dims[d];
  return outer;
}

void ek_permute(const float *x, float *y, int rank, const int *dims, const int *strides) {
  const int n = dims[rank - 1], s = strides[rank - 1], outer = ek_outer(rank, dims);
  int idx[EK_MAX_RANK] = {0};
  int t, i, off = 0;
  for (t = 0; t < outer; t++, y += n) {
    for (i = 0; i < n; i++) y[i] = x[off + i * s];
    ek_step(rank, dims, strides, idx, &off);
  }
}

void ek_pad(const float *x, float *y, float value, int n_out, int rank, const int *dims, const int *ys,
            int offset) {
  const int n = dims[rank - 1], outer = ek_outer(rank, dims);
  int idx[EK_MAX_RANK] = {0};
  int t, i, off = offset;
  for (i = 0; i < n_out; i++) y[i] = value;
  for (t = 0; t < outer; t++, x += n) {
    memcpy(y + off, x, (size_t)n * sizeof(float));  /* the last dim is contiguous in both */
    ek_step(rank, dims, ys, idx, &off);
  }
}

void ek_reduce_sum(const float *x, float *y, int n_out, int rank, const int *dims, const int *ys, float scale) {
  const int n = dims[rank - 1], s = ys[rank - 1], outer = ek_outer(rank, dims);
  int idx[EK_MAX_RANK] = {0};
  int t, i, off = 0;
  for (i = 0; i < n_out; i++) y[i] = 0.0f;
  for (t = 0; t < outer; t++, x += n) {
    if (s) {
      for (i = 0; i < n; i++) y[off + i] += x[i];
    } else {
      float acc = 0.0f;
      for (i = 0; i < n; i++) acc += x[i];
      y[off] += acc;
    }
    ek_step(rank, dims, ys, idx, &off);
  }
  if (scale != 1.0f)
    for (i = 0; i < n_out; i++) y[i] *= scale;
}

void ek_layer_norm(const float *x, const float *gamma, const float *beta, float *y, int rows, int n, float eps) {
  int r, i;
  for (r = 0; r < rows; r++, x += n, y += n) {
    float mean = 0.0f, var = 0.0f, inv;
    for (i = 0; i < n; i++) mean += x[i];
    mean /= (float)n;
    for (i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    inv = 1.0f / sqrtf(var / (float)n + eps);
    for (i = 0; i < n; i++) {
      float v = (x[i] - mean) * inv;
      if (gamma) v *= gamma[i];
      if (beta) v += beta[i];
      y[i] = v;
    }
  }
}

/* ---- conv_transpose2d, upsample ---- */

/* the kernel taps t (and source index i) with out + pad - t = i * s, 0 <= i < n, t < k: the first tap
 * is (out + pad) mod s, then every s-th */
static int ek_tconv_first(int out, int pad, int s, int k, int n, int *i_first) {
  int t = (out + pad) % s, i = (out + pad) / s;
  while (t < k && i >= n) t += s, i--;  /* taps whose source is past the input's end */
  *i_first = i;
  return t;
}

void ek_conv_transpose2d(const float *x, const float *w, const float *b, float *y, const ek_conv_geom *g) {
  const int c = g->c, hw = g->h * g->w, kk = g->kh * g->kw;
  int o, oy, ox, ci;
  for (o = 0; o < g->o; o++) {
    const float *wo = w + (size_t)o * kk * c;
    const float bias = b ? b[o] : 0.0f;
    for (oy = 0; oy < g->oh; oy++) {
      int iy0, ty0 = ek_tconv_first(oy, g->pt, g->sh, g->kh, g->h, &iy0);
      for (ox = 0; ox < g->ow; ox++, y++) {
        int ix0, tx0 = ek_tconv_first(ox, g->pl, g->sw, g->kw, g->w, &ix0);
        float acc = bias;
        int ty, iy, tx, ix;
        for (ty = ty0, iy = iy0; ty < g->kh && iy >= 0; ty += g->sh, iy--) {
          for (tx = tx0, ix = ix0; tx < g->kw && ix >= 0; tx += g->sw, ix--) {
            const float *xp = x + iy * g->w + ix, *wp = wo + (ty * g->kw + tx) * c;
            for (ci = 0; ci < c; ci++) acc += xp[(size_t)ci * hw] * wp[ci];
          }
        }
        *y = acc;
      }
    }
  }
}

void ek_upsample(const float *x, float *y, int c, int h, int w, int oh, int ow, const int *h0, const int *h1,
                 const float *fh, const int *w0, const int *w1, const float *fw) {
  int p, i, j;
  for (p = 0; p < c; p++, x += h * w) {
    for (i = 0; i < oh; i++, y += ow) {
      const float *r0 = x + h0[i] * w;
      if (!fh) {
        for (j = 0; j < ow; j++) y[j] = r0[w0[j]];
      } else {
        const float *r1 = x + h1[i] * w;
        const float a = fh[i], a1 = 1.0f - a;
        for (j = 0; j < ow; j++) {
          const float v0 = r0[w0[j]] * a1 + r1[w0[j]] * a, v1 = r0[w1[j]] * a1 + r1[w1[j]] * a;
          y[j] = v0 * (1.0f - fw[j]) + v1 * fw[j];
        }
      }
    }
  }
}

/* ---- matmul of two activations ---- */

void ek_matmul(const float *a, const float *b, float *y, int batch, int m, int k, int n) {
  int t, i, j, q;
  for (t = 0; t < batch; t++, a += m * k, b += k * n) {
    for (i = 0; i < m; i++, y += n) {
      const float *ar = a + i * k;
      for (j = 0; j < n; j++) y[j] = 0.0f;
      for (q = 0; q < k; q++) {  /* row of b by row: contiguous reads of b and y */
        const float av = ar[q], *br = b + q * n;
        for (j = 0; j < n; j++) y[j] += av * br[j];
      }
    }
  }
}
