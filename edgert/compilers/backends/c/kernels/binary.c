#include "binary.h"

/* ---- popcount ----
 *
 * Cortex-M4 and M7 have no popcount instruction (GCC's __builtin_popcount becomes a call into
 * libgcc), so the count is software. EK_POPCOUNT picks the variant (-DEK_POPCOUNT=n to compare):
 *   1  SWAR on each 32-bit half (the classic bit-twiddling count, one multiply per half)
 *   2  SWAR with the halves merged once their nibble counts are formed (one multiply per word)
 *   3  as 2, but the byte counts of up to 15 words are summed before they are folded
 *   4  a 256-entry byte table (8 loads per word)
 *   5  a 65536-entry halfword table (4 loads per word, 64 KB of flash)
 *   6  __builtin_popcount on each half (GCC or clang; a libgcc call on Cortex-M; else variant 1)
 *   7  as 3, with the masks held in registers so that Thumb-2 folds each shift into its AND
 *      (GCC or clang on Arm; else variant 3): the default
 * Emulated instructions (QEMU -icount, arm-none-eabi-gcc 12.2 -O2) per 64-bit word: of a binary
 * dense layer's dot products, 9 words a row (the slope from 16 to 80 outputs: per-call costs cancel,
 * per-output costs stay), and of a whole 3x3 conv model, 64 -> 64 channels on 8x8, "one" padding
 * (bitpack and the float epilogue included):
 *
 *                     1     2     3     4     5     6     7
 *   M7 dense word   36.5  34.7  34.1  36.5  24.4  45.6  30.6
 *   M7 conv word    39.2  37.4  36.9  39.3  27.2  48.3  33.4
 *   M4F: the same to 0.1 except variant 1 (37.6 and 40.4).
 *
 * The inner loop of 7 is 23 instructions a word (4 loads, 2 XORs, 15 of SWAR, the add and the loop
 * branch). The 16-bit table executes fewer instructions but costs 64 KB of flash and a random flash
 * read per halfword: bigger than the Cortex-M7's data cache, flash wait states on either core, so it
 * is slower on a chip than its count says; it stays an option (-DEK_POPCOUNT=5) for fast-memory
 * parts. Reproduce: python -m tests.compilers.backends.c.test_binary cortex-m7 cortex-m4.
 */
#ifndef EK_POPCOUNT
#define EK_POPCOUNT 7
#endif

#if EK_POPCOUNT == 6 && !(defined(__GNUC__) || defined(__clang__))
#undef EK_POPCOUNT
#define EK_POPCOUNT 1
#endif
#if EK_POPCOUNT == 7 && !((defined(__GNUC__) || defined(__clang__)) && defined(__arm__))
#undef EK_POPCOUNT
#define EK_POPCOUNT 3
#endif

#define EK_M1 0x55555555u
#define EK_M2 0x33333333u
#define EK_M4 0x0f0f0f0fu

#if EK_POPCOUNT <= 3 || EK_POPCOUNT == 7
/* 2-bit, then 4-bit field counts of a 32-bit word: each nibble ends holding at most 4 */
static inline uint32_t ek__nibbles_m(uint32_t v, uint32_t m1, uint32_t m2) {
  v -= (v >> 1) & m1;
  return (v & m2) + ((v >> 2) & m2);
}
#define ek__nibbles(v) ek__nibbles_m((v), EK_M1, EK_M2)
#endif

#if EK_POPCOUNT == 4
#define EK_B2(n) n, n + 1, n + 1, n + 2
#define EK_B4(n) EK_B2(n), EK_B2(n + 1), EK_B2(n + 1), EK_B2(n + 2)
#define EK_B6(n) EK_B4(n), EK_B4(n + 1), EK_B4(n + 1), EK_B4(n + 2)
#define EK_B8(n) EK_B6(n), EK_B6(n + 1), EK_B6(n + 1), EK_B6(n + 2)
static const uint8_t ek__lut8[256] = {EK_B8(0)};
#elif EK_POPCOUNT == 5
#define EK_B2(n) n, n + 1, n + 1, n + 2
#define EK_B4(n) EK_B2(n), EK_B2(n + 1), EK_B2(n + 1), EK_B2(n + 2)
#define EK_B6(n) EK_B4(n), EK_B4(n + 1), EK_B4(n + 1), EK_B4(n + 2)
#define EK_B8(n) EK_B6(n), EK_B6(n + 1), EK_B6(n + 1), EK_B6(n + 2)
#define EK_B10(n) EK_B8(n), EK_B8(n + 1), EK_B8(n + 1), EK_B8(n + 2)
#define EK_B12(n) EK_B10(n), EK_B10(n + 1), EK_B10(n + 1), EK_B10(n + 2)
#define EK_B14(n) EK_B12(n), EK_B12(n + 1), EK_B12(n + 1), EK_B12(n + 2)
#define EK_B16(n) EK_B14(n), EK_B14(n + 1), EK_B14(n + 1), EK_B14(n + 2)
static const uint8_t ek__lut16[65536] = {EK_B16(0)};
#endif

/* popcount of one 64-bit word */
static inline uint32_t ek__pc64(uint64_t v) {
  uint32_t lo = (uint32_t)v, hi = (uint32_t)(v >> 32);
#if EK_POPCOUNT == 1
  lo = ek__nibbles(lo);
  hi = ek__nibbles(hi);
  lo = (lo + (lo >> 4)) & EK_M4;
  hi = (hi + (hi >> 4)) & EK_M4;
  return ((lo * 0x01010101u) >> 24) + ((hi * 0x01010101u) >> 24);
#elif EK_POPCOUNT == 4
  return (uint32_t)ek__lut8[lo & 0xff] + ek__lut8[(lo >> 8) & 0xff] + ek__lut8[(lo >> 16) & 0xff] +
         ek__lut8[lo >> 24] + ek__lut8[hi & 0xff] + ek__lut8[(hi >> 8) & 0xff] +
         ek__lut8[(hi >> 16) & 0xff] + ek__lut8[hi >> 24];
#elif EK_POPCOUNT == 5
  return (uint32_t)ek__lut16[lo & 0xffff] + ek__lut16[lo >> 16] + ek__lut16[hi & 0xffff] +
         ek__lut16[hi >> 16];
#elif EK_POPCOUNT == 6
  return (uint32_t)__builtin_popcount(lo) + (uint32_t)__builtin_popcount(hi);
#else /* 2, 3 and 7: merge the halves while every nibble still fits (4 + 4 <= 15) */
  uint32_t s = ek__nibbles(lo) + ek__nibbles(hi);
  s = (s & EK_M4) + ((s >> 4) & EK_M4); /* bytes <= 16 */
  return (s * 0x01010101u) >> 24;      /* the sum of the bytes, <= 64, lands in the top byte */
#endif
}

/* popcount(a[i] ^ b[i]) summed over n words; inlined into the kernels */
static inline uint32_t ek__pc_run(const uint64_t *a, const uint64_t *b, int n) {
  uint32_t total = 0;
#if EK_POPCOUNT == 3 || EK_POPCOUNT == 7
  uint32_t m1 = EK_M1, m2 = EK_M2, m4 = EK_M4;
#if EK_POPCOUNT == 7
  /* hide the masks' values: GCC then keeps them in registers, and Thumb-2 folds each shift into
     its AND (and r, m1, v, lsr #1), one instruction instead of a shift and an AND with an immediate */
  __asm__("" : "+r"(m1), "+r"(m2), "+r"(m4));
#endif
  while (n > 0) {
    /* bytes grow by at most 16 a word: 15 words stay below 256, then the 4 bytes are folded */
    int m = n < 15 ? n : 15;
    uint32_t acc = 0;
    n -= m;
    do {
      uint64_t v = *a++ ^ *b++;
      uint32_t s = ek__nibbles_m((uint32_t)v, m1, m2) + ek__nibbles_m((uint32_t)(v >> 32), m1, m2);
      acc += (s & m4) + ((s >> 4) & m4);
    } while (--m);
    acc = (acc & 0x00ff00ffu) + ((acc >> 8) & 0x00ff00ffu);
    total += (acc & 0xffffu) + (acc >> 16);
  }
#else
  int i;
  for (i = 0; i < n; i++) total += ek__pc64(a[i] ^ b[i]);
#endif
  return total;
}

uint32_t ek_popcount_xor(const uint64_t *a, const uint64_t *b, int n) { return ek__pc_run(a, b, n); }

/* ---- bitpack and sign ---- */

void ek_bitpack(const float *x, uint64_t *y, int c, int hw, int groups) {
  int cg = c / groups, wpg = (cg + 63) / 64;
  int p, g, wi, b;
  for (p = 0; p < hw; p++) {
    for (g = 0; g < groups; g++) {
      const float *xg = x + (g * cg) * hw + p;
      for (wi = 0; wi < wpg; wi++) {
        /* a word as two 32-bit halves: 64-bit shifts cost a call or several instructions on M4/M7 */
        const float *xw = xg + (wi * 64) * hw;
        int n = cg - wi * 64 < 64 ? cg - wi * 64 : 64;
        uint32_t lo = 0, hi = 0;
        for (b = 0; b < n && b < 32; b++) lo |= (uint32_t)!(xw[b * hw] >= 0.0f) << b;
        for (b = 32; b < n; b++) hi |= (uint32_t)!(xw[b * hw] >= 0.0f) << (b - 32);
        *y++ = (uint64_t)hi << 32 | lo;
      }
    }
  }
}

void ek_binary_sign(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = x[i] >= 0.0f ? 1.0f : -1.0f;
}

/* ---- conv ----
 *
 * Per output pixel, the window's words are gathered into the patch [groups][kh][kw][wpg], the layout of
 * a weight row, with 0 words (+1 signs) at out-of-bounds taps: then every output channel's dot product
 * is one contiguous run, K - 2 * popcount(patch XOR w_o), exact for "one" padding. For "zero" padding
 * an out-of-bounds tap must add nothing rather than its +1-input value sum(w) = wsum[o][tap], so the
 * border pixels subtract those (the reference's per-position correction, here from a table of
 * o * kh * kw ints made at compile time). A 1x1 conv reads its in-bounds pixels in place.
 */

typedef struct {
  const uint64_t *x, *w;
  const int32_t *wsum; /* NULL: "one" padding */
  uint64_t *patch;
  int h, wd, nw, kh, kw, wpg, cg, og, groups, sh, sw, pt, pl;
  int dense; /* one channel per group: the input packs 64 channels to a word, the patch a word per group */
  const uint64_t *src;    /* the current pixel's window: the patch, or the input pixel itself */
  int ky0, ky1, kx0, kx1; /* its in-bounds taps: ky0 <= ky < ky1, kx0 <= kx < kx1 */
  int border;             /* some tap is out of bounds */
} ek__conv;

static int ek__clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Gather the window of output pixel (oy, ox) */
static void ek__window(ek__conv *c, int oy, int ox) {
  int iy0 = oy * c->sh - c->pt, ix0 = ox * c->sw - c->pl, run = c->kh * c->kw * c->wpg;
  int ky, kx, g, i;
  c->ky0 = ek__clamp(-iy0, 0, c->kh);
  c->ky1 = ek__clamp(c->h - iy0, c->ky0, c->kh);
  c->kx0 = ek__clamp(-ix0, 0, c->kw);
  c->kx1 = ek__clamp(c->wd - ix0, c->kx0, c->kw);
  c->border = c->ky0 > 0 || c->ky1 < c->kh || c->kx0 > 0 || c->kx1 < c->kw;
  if (c->kh * c->kw == 1 && !c->border && !c->dense) { /* the pixel's words are the patch already */
    c->src = c->x + (iy0 * c->wd + ix0) * c->nw;
    return;
  }
  for (ky = 0; ky < c->kh; ky++) {
    for (kx = 0; kx < c->kw; kx++) {
      uint64_t *pp = c->patch + (ky * c->kw + kx) * c->wpg;
      if (ky >= c->ky0 && ky < c->ky1 && kx >= c->kx0 && kx < c->kx1) {
        const uint64_t *xp = c->x + ((iy0 + ky) * c->wd + ix0 + kx) * c->nw;
        if (c->dense) {
          for (g = 0; g < c->groups; g++) { /* the group's bit: 32-bit halves (no 64-bit shift on M4/M7) */
            uint32_t half = (g & 32) ? (uint32_t)(xp[g >> 6] >> 32) : (uint32_t)xp[g >> 6];
            pp[g * run] = (half >> (g & 31)) & 1u;
          }
        } else {
          for (g = 0; g < c->groups; g++) {
            for (i = 0; i < c->wpg; i++) pp[g * run + i] = xp[g * c->wpg + i];
          }
        }
      } else {
        for (g = 0; g < c->groups; g++) {
          for (i = 0; i < c->wpg; i++) pp[g * run + i] = 0;
        }
      }
    }
  }
  c->src = c->patch;
}

/* sum of wsum over the out-of-bounds taps of output channel o ("zero" padding, border pixels) */
static int32_t ek__outside(const ek__conv *c, int o) {
  const int32_t *ws = c->wsum + o * (c->kh * c->kw);
  int32_t sum = 0;
  int ky, kx;
  for (ky = 0; ky < c->kh; ky++) {
    for (kx = 0; kx < c->kw; kx++) {
      if (ky < c->ky0 || ky >= c->ky1 || kx < c->kx0 || kx >= c->kx1) sum += ws[ky * c->kw + kx];
    }
  }
  return sum;
}

/* The dot product of output channel o over the current window */
static int32_t ek__conv_dot(const ek__conv *c, int o) {
  int run = c->kh * c->kw * c->wpg;
  uint32_t pc = ek__pc_run(c->src + (o / c->og) * run, c->w + o * run, run); /* 1x1: run = wpg */
  int32_t dot = (int32_t)(c->kh * c->kw * c->cg) - 2 * (int32_t)pc;
  return c->wsum && c->border ? dot - ek__outside(c, o) : dot;
}

static void ek__conv_init(ek__conv *c, const uint64_t *x, const uint64_t *w, const int32_t *wsum,
                          uint64_t *patch, int h, int wd, int nw, int o, int kh, int kw, int wpg, int cg,
                          int groups, int sh, int sw, int pt, int pl) {
  c->x = x;
  c->w = w;
  c->wsum = wsum;
  c->patch = patch;
  c->h = h;
  c->wd = wd;
  c->nw = nw;
  c->kh = kh;
  c->kw = kw;
  c->wpg = wpg;
  c->cg = cg;
  c->og = o / groups;
  c->groups = groups;
  c->dense = cg == 1 && groups > 1;
  c->sh = sh;
  c->sw = sw;
  c->pt = pt;
  c->pl = pl;
}

void ek_binary_conv2d_float(const uint64_t *x, const uint64_t *w, const int32_t *wsum, const float *scale,
                            const float *bias, float *y, uint64_t *patch, int h, int wd, int nw, int o,
                            int kh, int kw, int wpg, int cg, int groups, int sh, int sw, int pt, int pl,
                            int oh, int ow) {
  ek__conv c;
  int oy, ox, j, plane = oh * ow;
  ek__conv_init(&c, x, w, wsum, patch, h, wd, nw, o, kh, kw, wpg, cg, groups, sh, sw, pt, pl);
  for (oy = 0; oy < oh; oy++) {
    for (ox = 0; ox < ow; ox++) {
      ek__window(&c, oy, ox);
      for (j = 0; j < o; j++) {
        /* float32(dot) * scale, rounded, then + bias, rounded: the reference's two NumPy steps */
        y[j * plane + oy * ow + ox] = (float)ek__conv_dot(&c, j) * scale[j] + bias[j];
      }
    }
  }
}

/* The packed signs of the current pixel: bit = (dot < threshold) XOR flip, channels split into
 * out_groups word-aligned groups; returns y past the pixel's words */
static uint64_t *ek__conv_pack(const ek__conv *c, const int32_t *threshold, const uint8_t *flip,
                               uint64_t *y, int o, int out_groups) {
  int ogo = o / out_groups, wpo = (ogo + 63) / 64, g, wi, b;
  for (g = 0; g < out_groups; g++) {
    for (wi = 0; wi < wpo; wi++) {
      int base = g * ogo + wi * 64;
      int n = ogo - wi * 64 < 64 ? ogo - wi * 64 : 64;
      uint32_t half[2] = {0, 0};
      for (b = 0; b < n; b++) {
        int j = base + b;
        uint32_t bit = (uint32_t)(ek__conv_dot(c, j) < threshold[j]) ^ (uint32_t)(flip[j] != 0);
        half[b >> 5] |= bit << (b & 31);
      }
      *y++ = (uint64_t)half[1] << 32 | half[0];
    }
  }
  return y;
}

void ek_binary_conv2d_bits(const uint64_t *x, const uint64_t *w, const int32_t *wsum,
                           const int32_t *threshold, const uint8_t *flip, uint64_t *y, uint64_t *patch,
                           int h, int wd, int nw, int o, int kh, int kw, int wpg, int cg, int groups, int sh,
                           int sw, int pt, int pl, int oh, int ow, int out_groups) {
  ek__conv c;
  int oy, ox;
  ek__conv_init(&c, x, w, wsum, patch, h, wd, nw, o, kh, kw, wpg, cg, groups, sh, sw, pt, pl);
  for (oy = 0; oy < oh; oy++) {
    for (ox = 0; ox < ow; ox++) {
      ek__window(&c, oy, ox);
      y = ek__conv_pack(&c, threshold, flip, y, o, out_groups);
    }
  }
}

/* ---- dense: a 1x1 conv over a 1x1 image whose one group holds all k signs (no patch needed) ---- */

void ek_binary_dense_float(const uint64_t *x, const uint64_t *w, const float *scale, const float *bias,
                           float *y, int nw, int k, int o) {
  ek_binary_conv2d_float(x, w, 0, scale, bias, y, 0, 1, 1, nw, o, 1, 1, nw, k, 1, 1, 1, 0, 0, 1, 1);
}

void ek_binary_dense_bits(const uint64_t *x, const uint64_t *w, const int32_t *threshold,
                          const uint8_t *flip, uint64_t *y, int nw, int k, int o) {
  ek_binary_conv2d_bits(x, w, 0, threshold, flip, y, 0, 1, 1, nw, o, 1, 1, nw, k, 1, 1, 1, 0, 0, 1, 1, 1);
}

/* ---- max-pool ---- */

void ek_binary_max_pool2d(const uint64_t *x, uint64_t *y, int h, int wd, int nw, int kh, int kw, int sh,
                          int sw, int pt, int pl, int oh, int ow) {
  int oy, ox, iy, ix, c;
  for (oy = 0; oy < oh; oy++) {
    int y0 = oy * sh - pt, y1 = y0 + kh;
    if (y0 < 0) y0 = 0;
    if (y1 > h) y1 = h;
    for (ox = 0; ox < ow; ox++) {
      int x0 = ox * sw - pl, x1 = x0 + kw;
      if (x0 < 0) x0 = 0;
      if (x1 > wd) x1 = wd;
      for (c = 0; c < nw; c++) y[c] = ~(uint64_t)0; /* AND's identity, as np.bitwise_and.reduce's */
      for (iy = y0; iy < y1; iy++) {
        for (ix = x0; ix < x1; ix++) {
          const uint64_t *xp = x + (iy * wd + ix) * nw;
          for (c = 0; c < nw; c++) y[c] &= xp[c];
        }
      }
      y += nw;
    }
  }
}
