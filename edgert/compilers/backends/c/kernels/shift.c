/* Built with -ffp-contract=off: the output is (float)acc * scale, then + bias, two roundings as in the
 * NumPy reference; a fused multiply-add would round once. */
#include <math.h>
#include "shift.h"

/* ---- the packed code stream -------------------------------------------------------------------- */

/* Code i occupies stream bits [i*bits, (i+1)*bits), bit j of the stream being bit j%8 of byte j/8. */
typedef struct {
  const uint8_t *p; /* next byte to load */
  uint32_t buf;     /* loaded bits not yet consumed, the oldest in bit 0 */
  int n;            /* how many */
} ek__reader;

static void ek__seek(ek__reader *r, const uint8_t *codes, uint32_t bit) {
  int skip = (int)(bit & 7u);
  r->p = codes + (bit >> 3);
  r->buf = 0;
  r->n = 0;
  if (skip) { /* the first code starts inside a byte */
    r->buf = (uint32_t)*r->p++ >> skip;
    r->n = 8 - skip;
  }
}

/* The next code. One byte load per 8/bits codes; never loads a byte past the code's own (bits <= 8). */
static uint32_t ek__next(ek__reader *r, int bits, uint32_t mask) {
  uint32_t code;
  if (r->n < bits) {
    r->buf |= (uint32_t)*r->p++ << r->n;
    r->n += 8;
  }
  code = r->buf & mask;
  r->buf >>= bits;
  r->n -= bits;
  return code;
}

/* lut[code] = the integer multiplier ±2^e (edgert.ops.shift.codes.decode): the top bit is the sign,
 * the rest the exponent; with zero, the top exponent means 0. A table lookup and a multiply per weight
 * is as cheap as a shift and a conditional negate on Cortex-M (MLA is one cycle). */
static void ek__lut(int32_t lut[32], int bits, int zero) {
  int half = 1 << (bits - 1), code;
  for (code = 0; code < 2 * half; code++) {
    int e = code & (half - 1);
    int32_t m = (int32_t)1 << e;
    lut[code] = (zero && e == half - 1) ? 0 : (code & half) ? -m : m;
  }
}

/* acc += the dot product of x[0..7] with the multipliers of the 8 codes in the `bits` bytes at p.
 * 8 codes fill whole bytes, so every 8th code starts a byte and a group decodes with constant shifts
 * (the dense layer's fast path). A macro, unrolled by hand: it must inline into the kernels' loops
 * (compilers at -O2 keep a loop over the 8 and call a function this size). */
#define EK__DOT8(AT, acc, x8, p, bits, lut)                                                        \
  do {                                                                                             \
    uint32_t w_ = (uint32_t)(p)[0] | (uint32_t)(p)[1] << 8 | (uint32_t)(p)[2] << 16;               \
    if ((bits) == 3) {                                                                             \
      EK__T(AT, acc, x8, lut, 0, w_ & 7u), EK__T(AT, acc, x8, lut, 1, (w_ >> 3) & 7u);             \
      EK__T(AT, acc, x8, lut, 2, (w_ >> 6) & 7u), EK__T(AT, acc, x8, lut, 3, (w_ >> 9) & 7u);      \
      EK__T(AT, acc, x8, lut, 4, (w_ >> 12) & 7u), EK__T(AT, acc, x8, lut, 5, (w_ >> 15) & 7u);    \
      EK__T(AT, acc, x8, lut, 6, (w_ >> 18) & 7u), EK__T(AT, acc, x8, lut, 7, w_ >> 21);           \
    } else if ((bits) == 4) {                                                                      \
      w_ |= (uint32_t)(p)[3] << 24;                                                                \
      EK__T(AT, acc, x8, lut, 0, w_ & 15u), EK__T(AT, acc, x8, lut, 1, (w_ >> 4) & 15u);           \
      EK__T(AT, acc, x8, lut, 2, (w_ >> 8) & 15u), EK__T(AT, acc, x8, lut, 3, (w_ >> 12) & 15u);   \
      EK__T(AT, acc, x8, lut, 4, (w_ >> 16) & 15u), EK__T(AT, acc, x8, lut, 5, (w_ >> 20) & 15u);  \
      EK__T(AT, acc, x8, lut, 6, (w_ >> 24) & 15u), EK__T(AT, acc, x8, lut, 7, w_ >> 28);          \
    } else { /* 5 bits: 40 in all, code 6 straddles bytes 3 and 4 */                               \
      const uint32_t b4_ = (p)[4];                                                                 \
      w_ |= (uint32_t)(p)[3] << 24;                                                                \
      EK__T(AT, acc, x8, lut, 0, w_ & 31u), EK__T(AT, acc, x8, lut, 1, (w_ >> 5) & 31u);           \
      EK__T(AT, acc, x8, lut, 2, (w_ >> 10) & 31u), EK__T(AT, acc, x8, lut, 3, (w_ >> 15) & 31u);  \
      EK__T(AT, acc, x8, lut, 4, (w_ >> 20) & 31u), EK__T(AT, acc, x8, lut, 5, (w_ >> 25) & 31u);  \
      EK__T(AT, acc, x8, lut, 6, ((w_ >> 30) | b4_ << 2) & 31u);                                   \
      EK__T(AT, acc, x8, lut, 7, b4_ >> 3);                                                        \
    }                                                                                              \
  } while (0)
#define EK__T(AT, acc, x8, lut, i, code) (acc += (AT)(x8)[i] * (lut)[code])

/* filt[i] = multiplier of code first + i, for count codes: one by one up to the first whole group of
 * 8 codes, then a group at a time (constant shifts, as EK__DOT8), then the rest one by one. */
static void ek__decode(const uint8_t *codes, uint32_t first, int count, int bits, const int32_t *lut,
                       int32_t *filt) {
  const uint32_t mask = (1u << bits) - 1u, to_group = (0u - first) & 7u;
  const int head = (int)to_group < count ? (int)to_group : count;
  const uint8_t *p = codes + ((first + (uint32_t)head) >> 3) * (uint32_t)bits;
  ek__reader r;
  int i;
  ek__seek(&r, codes, first * (uint32_t)bits);
  for (i = 0; i < head; i++) filt[i] = lut[ek__next(&r, bits, mask)];
  for (; i + 8 <= count; i += 8, p += bits) {
    uint32_t w = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16;
    int32_t *f = filt + i;
    if (bits == 3) {
      f[0] = lut[w & 7u], f[1] = lut[(w >> 3) & 7u], f[2] = lut[(w >> 6) & 7u], f[3] = lut[(w >> 9) & 7u];
      f[4] = lut[(w >> 12) & 7u], f[5] = lut[(w >> 15) & 7u], f[6] = lut[(w >> 18) & 7u], f[7] = lut[w >> 21];
    } else if (bits == 4) {
      w |= (uint32_t)p[3] << 24;
      f[0] = lut[w & 15u], f[1] = lut[(w >> 4) & 15u], f[2] = lut[(w >> 8) & 15u];
      f[3] = lut[(w >> 12) & 15u], f[4] = lut[(w >> 16) & 15u], f[5] = lut[(w >> 20) & 15u];
      f[6] = lut[(w >> 24) & 15u], f[7] = lut[w >> 28];
    } else {
      w |= (uint32_t)p[3] << 24;
      f[0] = lut[w & 31u], f[1] = lut[(w >> 5) & 31u], f[2] = lut[(w >> 10) & 31u];
      f[3] = lut[(w >> 15) & 31u], f[4] = lut[(w >> 20) & 31u], f[5] = lut[(w >> 25) & 31u];
      f[6] = lut[((w >> 30) | (uint32_t)p[4] << 2) & 31u], f[7] = lut[(uint32_t)p[4] >> 3];
    }
  }
  if (i < count) ek__seek(&r, codes, (first + (uint32_t)i) * (uint32_t)bits);
  for (; i < count; i++) filt[i] = lut[ek__next(&r, bits, mask)];
}

/* ---- fixed-point input ------------------------------------------------------------------------- */

/* rintf rounds half to even in the default rounding mode, as np.rint; rounding before or after the
 * clamp is the same, the bounds being integers. x * scale is exact (scale is a power of two). */
static float ek__fixed(float x, float scale, float lo, float hi) {
  float v = rintf(x * scale);
  return v >= lo ? (v <= hi ? v : hi) : lo; /* NaN fails v >= lo */
}

/* The conv's zero padding is written here, around each channel, so conv windows never leave the
 * buffer and the conv kernel has no bounds checks (the reference pads x_q with 0 too). */
#define EK__QUANTIZE(NAME, QT)                                                                     \
  void NAME(EK_SHIFT_QUANTIZE_ARGS(QT)) {                                                          \
    const float hi = (float)((1 << (act_bits - 1)) - 1), lo = -hi - 1.0f;                          \
    const int wp = pl + w + pr;                                                                    \
    int ci, i, j;                                                                                  \
    for (ci = 0; ci < c; ci++) {                                                                   \
      for (i = 0; i < pt * wp; i++) *q++ = 0;                                                      \
      for (i = 0; i < h; i++) {                                                                    \
        for (j = 0; j < pl; j++) *q++ = 0;                                                         \
        for (j = 0; j < w; j++) *q++ = (QT)ek__fixed(*x++, scale, lo, hi);                         \
        for (j = 0; j < pr; j++) *q++ = 0;                                                         \
      }                                                                                            \
      for (i = 0; i < pb * wp; i++) *q++ = 0;                                                      \
    }                                                                                              \
  }

EK__QUANTIZE(ek_shift_quantize_q8, int8_t)
EK__QUANTIZE(ek_shift_quantize_q16, int16_t)

/* ---- conv -------------------------------------------------------------------------------------- */

/* col[(ci * kh + ky) * kw + kx] = the (padded) input under tap (ci, ky, kx) of the window whose top
 * left is (iy, ix): the window laid out like a filter, gathered once for a block of output channels. */
#define EK__GATHER(NAME, QT)                                                                       \
  static void NAME(const QT *xg, QT *col, int cg, int hp, int wp, int kh, int kw, int iy, int ix,  \
                   int dh, int dw) {                                                               \
    int ci, ky, kx;                                                                                \
    for (ci = 0; ci < cg; ci++)                                                                    \
      for (ky = 0; ky < kh; ky++, col += kw) {                                                     \
        const QT *row = xg + (ci * hp + iy + ky * dh) * wp + ix;                                   \
        if (kw == 3 && dw == 1) { /* the common 3x3 kernel, unrolled */                           \
          col[0] = row[0], col[1] = row[1], col[2] = row[2];                                       \
          continue;                                                                                \
        }                                                                                          \
        for (kx = 0; kx < kw; kx++) col[kx] = row[kx * dw];                                        \
      }                                                                                            \
  }

EK__GATHER(ek__gather_q8, int8_t)
EK__GATHER(ek__gather_q16, int16_t)

/* acc = the dot products of windows c0, c1 with filters f0, f1 (n taps): a00, a01 (c1 with f0), a10,
 * a11. The conv's inner loop: two windows times two filters, so each value loaded feeds two
 * multiply-adds (a 2x2 register block: more accumulators would not fit a Cortex-M's registers). */
#define EK__DOT2X2(NAME, QT, AT)                                                                   \
  static void NAME(const QT *c0, const QT *c1, const int32_t *f0, const int32_t *f1, int n,       \
                   AT acc[4]) {                                                                    \
    AT a00 = 0, a01 = 0, a10 = 0, a11 = 0;                                                         \
    int j = 0;                                                                                     \
    for (; j + 2 <= n; j += 2) {                                                                   \
      const AT x0 = c0[j], x1 = c1[j], y0 = c0[j + 1], y1 = c1[j + 1];                             \
      const int32_t w0 = f0[j], w1 = f1[j], v0 = f0[j + 1], v1 = f1[j + 1];                        \
      a00 += x0 * w0, a01 += x1 * w0, a10 += x0 * w1, a11 += x1 * w1;                              \
      a00 += y0 * v0, a01 += y1 * v0, a10 += y0 * v1, a11 += y1 * v1;                              \
    }                                                                                              \
    if (j < n) {                                                                                   \
      const AT x0 = c0[j], x1 = c1[j];                                                             \
      a00 += x0 * f0[j], a01 += x1 * f0[j], a10 += x0 * f1[j], a11 += x1 * f1[j];                  \
    }                                                                                              \
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;                                        \
  }

EK__DOT2X2(ek__dot_q8_a32, int8_t, int32_t)
EK__DOT2X2(ek__dot_q8_a64, int8_t, int64_t)
EK__DOT2X2(ek__dot_q16_a32, int16_t, int32_t)
EK__DOT2X2(ek__dot_q16_a64, int16_t, int64_t)

/* y = (float)acc * scale (+ bias): two roundings, as the reference (this file has no FMA contraction). */
static float ek__out(float acc, float scale, const float *bias, int channel) {
  const float v = acc * scale;
  return bias ? v + bias[channel] : v;
}

/* Output channels in blocks of ob (within a group): the block's filters are decoded once into filt
 * (ob * taps int32, consecutive in the code stream); then output pixels go two at a time (p, q),
 * their windows gathered into col (2 * taps values) and dotted with the block's filters two at a
 * time (b, b1). An odd last pixel or filter pairs with itself and its duplicate result is dropped. */
#define EK_SHIFT_CONV2D(NAME, QT, AT, GATHER, DOT)                                                 \
  void NAME(EK_SHIFT_CONV2D_ARGS(QT)) {                                                            \
    int32_t lut[32];                                                                               \
    const int cg = c / groups, og = o / groups, taps = cg * kh * kw, ohw = oh * ow;                \
    QT *const col1 = col + taps;                                                                   \
    int o0, nb, b, p;                                                                              \
    ek__lut(lut, bits, zero);                                                                      \
    for (o0 = 0; o0 < o; o0 += nb) {                                                               \
      const QT *xg = xq + (o0 / og) * cg * hp * wp; /* the input channels of this block's group */ \
      nb = og - o0 % og < ob ? og - o0 % og : ob;                                                  \
      ek__decode(codes, (uint32_t)o0 * (uint32_t)taps, nb * taps, bits, lut, filt);               \
      for (p = 0; p < ohw; p += 2) {                                                               \
        const int q = p + 1 < ohw ? p + 1 : p;                                                     \
        GATHER(xg, col, cg, hp, wp, kh, kw, p / ow * sh, p % ow * sw, dh, dw);                     \
        if (q != p) GATHER(xg, col1, cg, hp, wp, kh, kw, q / ow * sh, q % ow * sw, dh, dw);        \
        for (b = 0; b < nb; b += 2) {                                                              \
          const int b1 = b + 1 < nb ? b + 1 : b;                                                   \
          float *y0 = y + (o0 + b) * ohw, *y1 = y + (o0 + b1) * ohw;                               \
          AT acc[4];                                                                               \
          DOT(col, q != p ? col1 : col, filt + b * taps, filt + b1 * taps, taps, acc);             \
          y0[p] = ek__out((float)acc[0], scale, bias, o0 + b);                                     \
          y0[q] = ek__out((float)acc[1], scale, bias, o0 + b);                                     \
          y1[p] = ek__out((float)acc[2], scale, bias, o0 + b1);                                    \
          y1[q] = ek__out((float)acc[3], scale, bias, o0 + b1);                                    \
        }                                                                                          \
      }                                                                                            \
    }                                                                                              \
  }

EK_SHIFT_CONV2D(ek_shift_conv2d_q8_a32, int8_t, int32_t, ek__gather_q8, ek__dot_q8_a32)
EK_SHIFT_CONV2D(ek_shift_conv2d_q8_a64, int8_t, int64_t, ek__gather_q8, ek__dot_q8_a64)
EK_SHIFT_CONV2D(ek_shift_conv2d_q16_a32, int16_t, int32_t, ek__gather_q16, ek__dot_q16_a32)
EK_SHIFT_CONV2D(ek_shift_conv2d_q16_a64, int16_t, int64_t, ek__gather_q16, ek__dot_q16_a64)

/* ---- dense ------------------------------------------------------------------------------------- */

/* Each weight is used once per row, so codes are decoded in the dot product itself (no scratch): the
 * codes up to the row's first whole group one by one, then 8 at a time (EK__DOT8), then the rest. */
#define EK_SHIFT_LINEAR(NAME, QT, AT)                                                              \
  void NAME(EK_SHIFT_LINEAR_ARGS(QT)) {                                                            \
    int32_t lut[32];                                                                               \
    const uint32_t mask = (1u << bits) - 1u;                                                       \
    int r, oc, k;                                                                                  \
    ek__lut(lut, bits, zero);                                                                      \
    for (r = 0; r < rows; r++) {                                                                   \
      const QT *xr = xq + r * in;                                                                  \
      for (oc = 0; oc < out; oc++) {                                                               \
        const uint32_t start = (uint32_t)oc * (uint32_t)in; /* the row's first code */            \
        const int to_group = (int)((0u - start) & 7u); /* codes before the next group starts */     \
        const int head = to_group < in ? to_group : in;                                            \
        const uint8_t *p = codes + ((start + (uint32_t)head) >> 3) * (uint32_t)bits;               \
        ek__reader rd;                                                                             \
        AT acc = 0;                                                                                \
        float v;                                                                                   \
        ek__seek(&rd, codes, start * (uint32_t)bits);                                              \
        for (k = 0; k < head; k++) acc += (AT)xr[k] * lut[ek__next(&rd, bits, mask)];              \
        for (; k + 8 <= in; k += 8, p += bits) {                                                   \
          const QT *x8 = xr + k;                                                                   \
          EK__DOT8(AT, acc, x8, p, bits, lut);                                                     \
        }                                                                                          \
        if (k < in) ek__seek(&rd, codes, (start + (uint32_t)k) * (uint32_t)bits);                  \
        for (; k < in; k++) acc += (AT)xr[k] * lut[ek__next(&rd, bits, mask)];                     \
        v = (float)acc * scale;                                                                    \
        y[r * out + oc] = bias ? v + bias[oc] : v;                                                 \
      }                                                                                            \
    }                                                                                              \
  }

EK_SHIFT_LINEAR(ek_shift_linear_q8_a32, int8_t, int32_t)
EK_SHIFT_LINEAR(ek_shift_linear_q8_a64, int8_t, int64_t)
EK_SHIFT_LINEAR(ek_shift_linear_q16_a32, int16_t, int32_t)
EK_SHIFT_LINEAR(ek_shift_linear_q16_a64, int16_t, int64_t)
