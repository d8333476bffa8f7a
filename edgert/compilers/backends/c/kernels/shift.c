/* Built with -ffp-contract=off: the output is (float)acc * scale, then + bias, two roundings as in the
 * NumPy reference; a fused multiply-add would round once. */
#include <math.h>
#include <string.h>
#include "shift.h"
#if defined(__ARM_FEATURE_SIMD32) && __ARM_FEATURE_SIMD32
#include <arm_acle.h> /* __smlad: Armv7E-M (Cortex-M4, M7) */
#define EK_SMLAD 1
#else
#define EK_SMLAD 0
#endif

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

/* Eight codes fill `bits` whole bytes, so every 8th code starts a byte: a group of 8 decodes with
 * constant shifts. EK__GROUP(T) applies T(i, code) to the 8 codes of the group at p (one 32-bit word,
 * 5 bits a fifth byte); unrolled by hand, as compilers at -O2 keep a loop over the 8. */
#define EK__GROUP(T, p, bits)                                                                       \
  do {                                                                                              \
    uint32_t w_ = (uint32_t)(p)[0] | (uint32_t)(p)[1] << 8 | (uint32_t)(p)[2] << 16;                \
    if ((bits) == 3) {                                                                              \
      T(0, w_ & 7u); T(1, (w_ >> 3) & 7u); T(2, (w_ >> 6) & 7u); T(3, (w_ >> 9) & 7u);              \
      T(4, (w_ >> 12) & 7u); T(5, (w_ >> 15) & 7u); T(6, (w_ >> 18) & 7u); T(7, w_ >> 21);          \
    } else if ((bits) == 4) {                                                                       \
      w_ |= (uint32_t)(p)[3] << 24;                                                                 \
      T(0, w_ & 15u); T(1, (w_ >> 4) & 15u); T(2, (w_ >> 8) & 15u); T(3, (w_ >> 12) & 15u);         \
      T(4, (w_ >> 16) & 15u); T(5, (w_ >> 20) & 15u); T(6, (w_ >> 24) & 15u); T(7, w_ >> 28);       \
    } else { /* 5 bits: 40 in all, code 6 straddles bytes 3 and 4 */                                \
      const uint32_t b4_ = (p)[4];                                                                  \
      w_ |= (uint32_t)(p)[3] << 24;                                                                 \
      T(0, w_ & 31u); T(1, (w_ >> 5) & 31u); T(2, (w_ >> 10) & 31u); T(3, (w_ >> 15) & 31u);        \
      T(4, (w_ >> 20) & 31u); T(5, (w_ >> 25) & 31u); T(6, ((w_ >> 30) | b4_ << 2) & 31u);          \
      T(7, b4_ >> 3);                                                                               \
    }                                                                                               \
  } while (0)

/* filt[i] = lut[code first + i] for count codes of BITS bits (FT: the filter type): one by one up to
 * the first whole group, then a group at a time, then the rest one by one. */
#define EK__DECODE(NAME, FT, BITS)                                                                  \
  void NAME(const uint8_t *codes, uint32_t first, int count, const FT *lut, FT *filt) {             \
    const int bits = BITS;                                                                          \
    const uint32_t mask = (1u << bits) - 1u, to_group = (0u - first) & 7u;                          \
    const int head = (int)to_group < count ? (int)to_group : count;                                 \
    const uint8_t *p = codes + ((first + (uint32_t)head) >> 3) * (uint32_t)bits;                    \
    ek__reader r;                                                                                   \
    int i;                                                                                          \
    ek__seek(&r, codes, first * (uint32_t)bits);                                                    \
    for (i = 0; i < head; i++) filt[i] = lut[ek__next(&r, bits, mask)];                             \
    for (; i + 8 <= count; i += 8, p += bits) {                                                     \
      FT *f_ = filt + i;                                                                            \
      EK__GROUP(EK__PUT, p, bits);                                                                  \
    }                                                                                               \
    if (i < count) ek__seek(&r, codes, (first + (uint32_t)i) * (uint32_t)bits);                     \
    for (; i < count; i++) filt[i] = lut[ek__next(&r, bits, mask)];                                 \
  }

#define EK__PUT(i, code) (f_[i] = lut[code]) /* f_ and lut are the decoder's */

EK__DECODE(ek_shift_decode32_b3, int32_t, 3)
EK__DECODE(ek_shift_decode32_b4, int32_t, 4)
EK__DECODE(ek_shift_decode32_b5, int32_t, 5)
EK__DECODE(ek_shift_decode16_b3, int16_t, 3)
EK__DECODE(ek_shift_decode16_b4, int16_t, 4)
EK__DECODE(ek_shift_decode16_b5, int16_t, 5)

/* ---- fixed-point input ------------------------------------------------------------------------- */

/* rintf rounds half to even in the default rounding mode, as np.rint; rounding before or after the
 * clamp is the same, the bounds being integers. x * scale is exact (scale is a power of two). */
static float ek__fixed(float x, float scale, float lo, float hi) {
  float v = rintf(x * scale);
  return v >= lo ? (v <= hi ? v : hi) : lo; /* NaN fails v >= lo */
}

/* The conv's zero padding is written here, around each channel, so conv windows never leave the
 * buffer and the conv kernel has no bounds checks (the reference pads x_q with 0 too). */
#define EK__QUANTIZE(NAME, QT)                                                                      \
  void NAME(EK_SHIFT_QUANTIZE_ARGS(QT)) {                                                           \
    const float hi = (float)((1 << (act_bits - 1)) - 1), lo = -hi - 1.0f;                           \
    const int wp = pl + w + pr;                                                                     \
    int ci, i, j;                                                                                   \
    for (ci = 0; ci < c; ci++) {                                                                    \
      for (i = 0; i < pt * wp; i++) *q++ = 0;                                                       \
      for (i = 0; i < h; i++) {                                                                     \
        for (j = 0; j < pl; j++) *q++ = 0;                                                          \
        for (j = 0; j < w; j++) *q++ = (QT)ek__fixed(*x++, scale, lo, hi);                          \
        for (j = 0; j < pr; j++) *q++ = 0;                                                          \
      }                                                                                             \
      for (i = 0; i < pb * wp; i++) *q++ = 0;                                                       \
    }                                                                                               \
  }

EK__QUANTIZE(ek_shift_quantize_q8, int8_t)
EK__QUANTIZE(ek_shift_quantize_q16, int16_t)

/* ---- conv -------------------------------------------------------------------------------------- */

/* col[(ci * kh + ky) * kw + kx] = the (padded) input under tap (ci, ky, kx) of the window whose top
 * left is (iy, ix): the window laid out like a filter, gathered once for a block of output channels. */
#define EK__GATHER(NAME, QT, CT)                                                                    \
  static void NAME(const QT *xg, CT *col, int cg, int hp, int wp, int kh, int kw, int iy, int ix,   \
                   int dh, int dw) {                                                                \
    int ci, ky, kx;                                                                                 \
    for (ci = 0; ci < cg; ci++)                                                                     \
      for (ky = 0; ky < kh; ky++, col += kw) {                                                      \
        const QT *row = xg + (ci * hp + iy + ky * dh) * wp + ix;                                    \
        if (kw == 3 && dw == 1) { /* the common 3x3 kernel, unrolled */                             \
          col[0] = row[0], col[1] = row[1], col[2] = row[2];                                        \
          continue;                                                                                 \
        }                                                                                           \
        for (kx = 0; kx < kw; kx++) col[kx] = row[kx * dw];                                         \
      }                                                                                             \
  }

EK__GATHER(ek__gather_q8, int8_t, int8_t)
EK__GATHER(ek__gather_q16, int16_t, int16_t)
EK__GATHER(ek__gather_q8_h, int8_t, int16_t)

/* acc = the dot products of windows c0, c1 with filters f0, f1 (n taps, n even): a00, a01 (c1 with
 * f0), a10, a11. The conv's inner loop: two windows times two filters, so each value loaded feeds two
 * multiply-adds (a 2x2 register block: more accumulators would not fit a Cortex-M's registers). */
#define EK__DOT2X2(NAME, CT, FT, AT)                                                                \
  static void NAME(const CT *c0, const CT *c1, const FT *f0, const FT *f1, int n, AT acc[4]) {      \
    AT a00 = 0, a01 = 0, a10 = 0, a11 = 0;                                                          \
    int j;                                                                                          \
    for (j = 0; j < n; j += 2) {                                                                    \
      const AT x0 = c0[j], x1 = c1[j], y0 = c0[j + 1], y1 = c1[j + 1];                              \
      const AT w0 = f0[j], w1 = f1[j], v0 = f0[j + 1], v1 = f1[j + 1];                              \
      a00 += x0 * w0, a01 += x1 * w0, a10 += x0 * w1, a11 += x1 * w1;                               \
      a00 += y0 * v0, a01 += y1 * v0, a10 += y0 * v1, a11 += y1 * v1;                               \
    }                                                                                               \
    acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;                                         \
  }

EK__DOT2X2(ek__dot_q8_a32, int8_t, int32_t, int32_t)
EK__DOT2X2(ek__dot_q8_a64, int8_t, int32_t, int64_t)
EK__DOT2X2(ek__dot_q16_a32, int16_t, int32_t, int32_t)
EK__DOT2X2(ek__dot_q16_a64, int16_t, int32_t, int64_t)

#if EK_SMLAD
/* 16-bit windows and filters: SMLAD does both multiply-adds of a pair of taps in one instruction
 * (the pair's sum and the accumulator are exact: the emitter proved int32 holds every partial sum). */
static void ek__dot_h(const int16_t *c0, const int16_t *c1, const int16_t *f0, const int16_t *f1, int n,
                      int32_t acc[4]) {
  int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0;
  int j;
  for (j = 0; j < n; j += 2) {
    int16x2_t x0, x1, w0, w1; /* taps j (bottom half) and j + 1 (top half) */
    memcpy(&x0, c0 + j, 4), memcpy(&x1, c1 + j, 4), memcpy(&w0, f0 + j, 4), memcpy(&w1, f1 + j, 4);
    a00 = __smlad(x0, w0, a00), a01 = __smlad(x1, w0, a01);
    a10 = __smlad(x0, w1, a10), a11 = __smlad(x1, w1, a11);
  }
  acc[0] = a00, acc[1] = a01, acc[2] = a10, acc[3] = a11;
}
#else
EK__DOT2X2(ek__dot_h, int16_t, int16_t, int32_t)
#endif

/* y = acc * scale (+ bias): two roundings, as the reference (this file has no FMA contraction). */
static float ek__out(float acc, float scale, const float *bias, int channel) {
  const float v = acc * scale;
  return bias ? v + bias[channel] : v;
}

/* Output channels in blocks of ob (within a group): the block's filters are decoded once into filt
 * by `decode` (the code width's decoder; ob filters of ts = taps rounded up to even entries, the pad
 * entry 0). Output pixels then go two at a time (p, q): their windows are gathered into col (2 * ts
 * entries) and dotted with the block's filters two at a time (b, b1). An odd last pixel or filter
 * pairs with itself and its duplicate result is dropped. CT, FT: the window and filter types. */
#define EK_SHIFT_CONV2D(NAME, QT, CT, FT, AT, GATHER, DOT)                                          \
  void NAME(EK_SHIFT_CONV2D_ARGS(QT, CT, FT)) {                                                     \
    int32_t lut32[32];                                                                              \
    FT lut[32];                                                                                     \
    const int cg = c / groups, og = o / groups, taps = cg * kh * kw, ohw = oh * ow;                 \
    const int ts = taps + (taps & 1);                                                               \
    CT *const col1 = col + ts;                                                                      \
    int o0, nb, b, p;                                                                               \
    ek__lut(lut32, bits, zero);                                                                     \
    for (b = 0; b < 1 << bits; b++) lut[b] = (FT)lut32[b]; /* FT holds every one: the emitter checks */ \
    col[ts - 1] = col1[ts - 1] = 0; /* the pad tap, if any: the gathers never write it */           \
    for (o0 = 0; o0 < o; o0 += nb) {                                                                \
      const QT *xg = xq + (o0 / og) * cg * hp * wp; /* the input channels of this block's group */  \
      nb = og - o0 % og < ob ? og - o0 % og : ob;                                                   \
      for (b = 0; b < nb; b++) {                                                                    \
        filt[b * ts + ts - 1] = 0;                                                                  \
        decode(codes, (uint32_t)(o0 + b) * (uint32_t)taps, taps, lut, filt + b * ts);               \
      }                                                                                             \
      for (p = 0; p < ohw; p += 2) {                                                                \
        const int q = p + 1 < ohw ? p + 1 : p;                                                      \
        GATHER(xg, col, cg, hp, wp, kh, kw, p / ow * sh, p % ow * sw, dh, dw);                      \
        if (q != p) GATHER(xg, col1, cg, hp, wp, kh, kw, q / ow * sh, q % ow * sw, dh, dw);         \
        for (b = 0; b < nb; b += 2) {                                                               \
          const int b1 = b + 1 < nb ? b + 1 : b;                                                    \
          float *y0 = y + (o0 + b) * ohw, *y1 = y + (o0 + b1) * ohw;                                \
          AT acc[4];                                                                                \
          DOT(col, q != p ? col1 : col, filt + b * ts, filt + b1 * ts, ts, acc);                    \
          y0[p] = ek__out((float)acc[0], scale, bias, o0 + b);                                      \
          y0[q] = ek__out((float)acc[1], scale, bias, o0 + b);                                      \
          y1[p] = ek__out((float)acc[2], scale, bias, o0 + b1);                                     \
          y1[q] = ek__out((float)acc[3], scale, bias, o0 + b1);                                     \
        }                                                                                           \
      }                                                                                             \
    }                                                                                               \
  }

EK_SHIFT_CONV2D(ek_shift_conv2d_q8_a32, int8_t, int8_t, int32_t, int32_t, ek__gather_q8, ek__dot_q8_a32)
EK_SHIFT_CONV2D(ek_shift_conv2d_q8_a64, int8_t, int8_t, int32_t, int64_t, ek__gather_q8, ek__dot_q8_a64)
EK_SHIFT_CONV2D(ek_shift_conv2d_q16_a32, int16_t, int16_t, int32_t, int32_t, ek__gather_q16, ek__dot_q16_a32)
EK_SHIFT_CONV2D(ek_shift_conv2d_q16_a64, int16_t, int16_t, int32_t, int64_t, ek__gather_q16, ek__dot_q16_a64)
EK_SHIFT_CONV2D(ek_shift_conv2d_q8_h, int8_t, int16_t, int16_t, int32_t, ek__gather_q8_h, ek__dot_h)
EK_SHIFT_CONV2D(ek_shift_conv2d_q16_h, int16_t, int16_t, int16_t, int32_t, ek__gather_q16, ek__dot_h)

/* ---- dense ------------------------------------------------------------------------------------- */

/* acc[0], acc[1] = the dot products of x with w0 and with w1 (n even): two output rows share each
 * load of x. */
#define EK__DOT1X2(NAME, CT, FT, AT)                                                                \
  static void NAME(const CT *x, const FT *w0, const FT *w1, int n, AT acc[2]) {                     \
    AT a0 = 0, a1 = 0;                                                                              \
    int j;                                                                                          \
    for (j = 0; j < n; j += 2) {                                                                    \
      const AT x0 = x[j], x1 = x[j + 1];                                                            \
      a0 += x0 * w0[j], a1 += x0 * w1[j], a0 += x1 * w0[j + 1], a1 += x1 * w1[j + 1];               \
    }                                                                                               \
    acc[0] = a0, acc[1] = a1;                                                                       \
  }

EK__DOT1X2(ek__dot1x2_q8_a32, int8_t, int32_t, int32_t)
EK__DOT1X2(ek__dot1x2_q8_a64, int8_t, int32_t, int64_t)
EK__DOT1X2(ek__dot1x2_q16_a32, int16_t, int32_t, int32_t)
EK__DOT1X2(ek__dot1x2_q16_a64, int16_t, int32_t, int64_t)

#if EK_SMLAD
static void ek__dot1x2_h(const int16_t *x, const int16_t *w0, const int16_t *w1, int n, int32_t acc[2]) {
  int32_t a0 = 0, a1 = 0;
  int j;
  for (j = 0; j < n; j += 2) {
    int16x2_t xj, v0, v1;
    memcpy(&xj, x + j, 4), memcpy(&v0, w0 + j, 4), memcpy(&v1, w1 + j, 4);
    a0 = __smlad(xj, v0, a0), a1 = __smlad(xj, v1, a1);
  }
  acc[0] = a0, acc[1] = a1;
}
#else
EK__DOT1X2(ek__dot1x2_h, int16_t, int16_t, int32_t)
#endif

/* The input goes in chunks of up to ch values (ch even), copied into xc (so a pair's second value
 * exists: an odd chunk is padded with 0); for each chunk, output rows two at a time get that chunk
 * of their weights decoded into wc (2 * ch) and dotted with it, the sums kept in acc (out). Each
 * input value is loaded once per row pair and each code decoded once. */
#define EK_SHIFT_LINEAR(NAME, QT, CT, FT, AT, DOT)                                                  \
  void NAME(EK_SHIFT_LINEAR_ARGS(QT, CT, FT, AT)) {                                                 \
    int32_t lut32[32];                                                                              \
    FT lut[32];                                                                                     \
    FT *const wc1 = wc + ch;                                                                        \
    int r, oc, k0, k;                                                                               \
    ek__lut(lut32, bits, zero);                                                                     \
    for (k = 0; k < 1 << bits; k++) lut[k] = (FT)lut32[k];                                          \
    for (r = 0; r < rows; r++) {                                                                    \
      const QT *xr = xq + r * in;                                                                   \
      for (oc = 0; oc < out; oc++) acc[oc] = 0;                                                     \
      for (k0 = 0; k0 < in; k0 += ch) {                                                             \
        const int n = in - k0 < ch ? in - k0 : ch, odd = n & 1;                                     \
        for (k = 0; k < n; k++) xc[k] = xr[k0 + k];                                                 \
        if (odd) xc[n] = 0, wc[n] = wc1[n] = 0; /* the decoder writes n entries: the pad stays 0 */ \
        for (oc = 0; oc < out; oc += 2) {                                                           \
          const int o1 = oc + 1 < out ? oc + 1 : oc;                                                \
          AT a[2];                                                                                  \
          decode(codes, (uint32_t)oc * (uint32_t)in + (uint32_t)k0, n, lut, wc);                    \
          if (o1 != oc) decode(codes, (uint32_t)o1 * (uint32_t)in + (uint32_t)k0, n, lut, wc1);     \
          DOT(xc, wc, o1 != oc ? wc1 : wc, n + odd, a);                                             \
          acc[oc] += a[0];                                                                          \
          if (o1 != oc) acc[o1] += a[1];                                                            \
        }                                                                                           \
      }                                                                                             \
      for (oc = 0; oc < out; oc++) y[r * out + oc] = ek__out((float)acc[oc], scale, bias, oc);      \
    }                                                                                               \
  }

EK_SHIFT_LINEAR(ek_shift_linear_q8_a32, int8_t, int8_t, int32_t, int32_t, ek__dot1x2_q8_a32)
EK_SHIFT_LINEAR(ek_shift_linear_q8_a64, int8_t, int8_t, int32_t, int64_t, ek__dot1x2_q8_a64)
EK_SHIFT_LINEAR(ek_shift_linear_q16_a32, int16_t, int16_t, int32_t, int32_t, ek__dot1x2_q16_a32)
EK_SHIFT_LINEAR(ek_shift_linear_q16_a64, int16_t, int16_t, int32_t, int64_t, ek__dot1x2_q16_a64)
EK_SHIFT_LINEAR(ek_shift_linear_q8_h, int8_t, int16_t, int16_t, int32_t, ek__dot1x2_h)
EK_SHIFT_LINEAR(ek_shift_linear_q16_h, int16_t, int16_t, int16_t, int32_t, ek__dot1x2_h)
