/* edgert binary kernels: XNOR-popcount conv and dense on packed signs, batch 1.
 *
 * Packed signs are uint64 words, channels innermost: layout [H][W][words] (or [words] for a vector);
 * bit = 1 means -1, sign(0) = +1, and the unused high bits of a group's last word are 0 (+1). With
 * groups > 1 each group's channels start a fresh word: words = groups * ceil(channels / groups / 64).
 * Conv weights are [O][kh][kw][wpg] (wpg = ceil(C / groups / 64)), dense weights [O][words], their
 * unused bits 0 as well (the emitter clears them at compile time).
 *
 * The dot product of K signs is K - 2 * popcount(x XOR w) summed over the words, in int32 (K is far
 * below 2^31). Outputs are float32 NCHW, y = (float)dot * scale[o] + bias[o] (one rounded multiply,
 * then one rounded add: this file is built with -ffp-contract=off), or packed signs for the next
 * binary layer, bit = (dot < threshold[o]) XOR (flip[o] != 0), split into out_groups word groups.
 */
#ifndef EDGERT_KERNELS_BINARY_H
#define EDGERT_KERNELS_BINARY_H

#include <stdint.h>

/* float x [c][hw] (NCHW, or [c] with hw = 1) -> y [hw][words]; bit = !(x >= 0), so NaN packs as -1 */
void ek_bitpack(const float *x, uint64_t *y, int c, int hw, int groups);

/* y = +1 where x >= 0, else -1; y may be x */
void ek_binary_sign(const float *x, float *y, int n);

/* Binary conv, x [h][w][nw] (nw = groups * wpg), weight [o][kh][kw][wpg] over cg = C / groups
 * channels; stride (sh, sw), padding top pt and left pl (bottom and right follow from oh, ow).
 * wsum NULL: "one" padding (out-of-bounds taps are +1 signs); else "zero" padding (they add nothing)
 * and wsum [o][kh][kw] = cg - 2 * popcount(w[o][ky][kx]), each tap's weight sum. patch: scratch of
 * groups * kh * kw * wpg words. The _float variant writes y [o][oh][ow]; the _bits variant
 * y [oh][ow][words(o, out_groups)]. */
void ek_binary_conv2d_float(const uint64_t *x, const uint64_t *w, const int32_t *wsum, const float *scale,
                            const float *bias, float *y, uint64_t *patch, int h, int wd, int nw, int o,
                            int kh, int kw, int wpg, int cg, int groups, int sh, int sw, int pt, int pl,
                            int oh, int ow);
void ek_binary_conv2d_bits(const uint64_t *x, const uint64_t *w, const int32_t *wsum,
                           const int32_t *threshold, const uint8_t *flip, uint64_t *y, uint64_t *patch,
                           int h, int wd, int nw, int o, int kh, int kw, int wpg, int cg, int groups, int sh,
                           int sw, int pt, int pl, int oh, int ow, int out_groups);

/* Binary dense, x [nw] (k signs), weight [o][nw]: y [o] floats, or y [ceil(o / 64)] packed words */
void ek_binary_dense_float(const uint64_t *x, const uint64_t *w, const float *scale, const float *bias,
                           float *y, int nw, int k, int o);
void ek_binary_dense_bits(const uint64_t *x, const uint64_t *w, const int32_t *threshold,
                          const uint8_t *flip, uint64_t *y, int nw, int k, int o);

/* Max-pool on packed signs x [h][w][nw] -> y [oh][ow][nw]: a -1 bit survives only if every
 * in-bounds bit of its window is -1 (AND of the words; out-of-bounds positions are skipped). */
void ek_binary_max_pool2d(const uint64_t *x, uint64_t *y, int h, int wd, int nw, int kh, int kw, int sh,
                          int sw, int pt, int pl, int oh, int ow);

/* popcount(a[i] ^ b[i]) summed over n words: the inner loop of every kernel above, exposed for the
 * benchmark of the popcount variants (EK_POPCOUNT in binary.c) */
uint32_t ek_popcount_xor(const uint64_t *a, const uint64_t *b, int n);

#endif
