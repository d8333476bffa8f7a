/* edgert shift kernels: batch 1, NCHW. Weights are w = m * 2^scale_exp with m = ±2^e (or 0), stored
 * as the packed code stream of edgert.ops.shift.codes (``bits`` bits per weight, little-endian across
 * bytes, in the weights' own [O, C/groups, kh, kw] or [out, in] order): the kernels decode it as they
 * go, so flash holds bits/8 bytes per weight.
 *
 * A layer runs in two calls: ek_shift_quantize* turns the float input into fixed point,
 * x_q = clamp(round_half_even(x * 2^frac_bits), -2^(act_bits-1), 2^(act_bits-1) - 1), into a scratch
 * buffer (int8 when act_bits <= 8, else int16); the layer kernel then forms exact integer sums of
 * x_q * m and writes y = (float)acc * 2^(scale_exp - frac_bits) (+ bias[channel]).
 * Kernel names end in _q8/_q16 (the x_q type), _a32/_a64 (the accumulator; the emitter picks int32
 * when the layer's weights prove no sum can overflow it: int64 is slow on Cortex-M) or _h (below),
 * and the conv and dense kernels take the code width's decoder (ek_shift_decode*_b3/_b4/_b5) as an
 * argument, so a model links only the widths its layers use. */
#ifndef EDGERT_KERNELS_SHIFT_H
#define EDGERT_KERNELS_SHIFT_H

#include <stdint.h>

/* q = x_q of x[C, H, W], each channel zero-padded by pt rows above, pb below, pl columns left and
 * pr right (a dense layer's input: C = H = 1, no padding); scale = 2^frac_bits (exact in float).
 * NaN becomes the lower bound. */
#define EK_SHIFT_QUANTIZE_ARGS(QT)                                                                 \
  const float *x, QT *q, int c, int h, int w, int pt, int pl, int pb, int pr, float scale, int act_bits
void ek_shift_quantize_q8(EK_SHIFT_QUANTIZE_ARGS(int8_t));
void ek_shift_quantize_q16(EK_SHIFT_QUANTIZE_ARGS(int16_t));

/* y[O, OH, OW] = conv(xq, m[O, C/groups, kh, kw]) * scale (+ bias[O]), xq the zero-padded input
 * [C, HP, WP] (ek_shift_quantize_*); bias may be 0; zero: the top exponent code means m = 0.
 * Output channels go in blocks of ob (1 <= ob). Scratch: filt, a block's decoded filters (ob * ts
 * multipliers, ts = C/groups * kh * kw rounded up to even), col, two input windows (2 * ts values).
 * _h kernels: 16-bit windows and filters (bits <= 4, or zero: every |m| <= 2^14) and int32 sums,
 * two taps per SMLAD on Armv7E-M; the others: int32 filters, the x_q type's windows. */
#define EK_SHIFT_CONV2D_ARGS(QT, CT, FT)                                                            \
  const QT *xq, const uint8_t *codes, void (*decode)(const uint8_t *, uint32_t, int, const FT *, FT *), \
  const float *bias, float *y, FT *filt, CT *col, int ob, int c, int hp, int wp, int o, int oh, int ow, \
  int kh, int kw, int groups, int sh, int sw, int dh, int dw, int bits, int zero, float scale
void ek_shift_conv2d_q8_a32(EK_SHIFT_CONV2D_ARGS(int8_t, int8_t, int32_t));
void ek_shift_conv2d_q8_a64(EK_SHIFT_CONV2D_ARGS(int8_t, int8_t, int32_t));
void ek_shift_conv2d_q16_a32(EK_SHIFT_CONV2D_ARGS(int16_t, int16_t, int32_t));
void ek_shift_conv2d_q16_a64(EK_SHIFT_CONV2D_ARGS(int16_t, int16_t, int32_t));
void ek_shift_conv2d_q8_h(EK_SHIFT_CONV2D_ARGS(int8_t, int16_t, int16_t));
void ek_shift_conv2d_q16_h(EK_SHIFT_CONV2D_ARGS(int16_t, int16_t, int16_t));

/* The kernels' decode argument: filt[i] = lut[code first + i] for count codes of 3, 4 or 5 bits,
 * into int32 or int16 filters; one function per code width, so its shifts are constants. */
#define EK_SHIFT_DECODE_ARGS(FT) const uint8_t *codes, uint32_t first, int count, const FT *lut, FT *filt
void ek_shift_decode32_b3(EK_SHIFT_DECODE_ARGS(int32_t));
void ek_shift_decode32_b4(EK_SHIFT_DECODE_ARGS(int32_t));
void ek_shift_decode32_b5(EK_SHIFT_DECODE_ARGS(int32_t));
void ek_shift_decode16_b3(EK_SHIFT_DECODE_ARGS(int16_t));
void ek_shift_decode16_b4(EK_SHIFT_DECODE_ARGS(int16_t));
void ek_shift_decode16_b5(EK_SHIFT_DECODE_ARGS(int16_t));

/* y[rows, out] = xq[rows, in] @ m[out, in].T * scale (+ bias[out]); bias may be 0. Scratch: wc, two
 * rows' decoded weights for a chunk of ch inputs (2 * ch, ch even), xc, the chunk (ch), acc, the
 * sums (out). _h, _a32, _a64 and decode as for the conv. */
#define EK_SHIFT_LINEAR_ARGS(QT, CT, FT, AT)                                                        \
  const QT *xq, const uint8_t *codes, void (*decode)(const uint8_t *, uint32_t, int, const FT *, FT *), \
  const float *bias, float *y, FT *wc, CT *xc, AT *acc, int ch, int rows, int in, int out, int bits,  \
  int zero, float scale
void ek_shift_linear_q8_a32(EK_SHIFT_LINEAR_ARGS(int8_t, int8_t, int32_t, int32_t));
void ek_shift_linear_q8_a64(EK_SHIFT_LINEAR_ARGS(int8_t, int8_t, int32_t, int64_t));
void ek_shift_linear_q16_a32(EK_SHIFT_LINEAR_ARGS(int16_t, int16_t, int32_t, int32_t));
void ek_shift_linear_q16_a64(EK_SHIFT_LINEAR_ARGS(int16_t, int16_t, int32_t, int64_t));
void ek_shift_linear_q8_h(EK_SHIFT_LINEAR_ARGS(int8_t, int16_t, int16_t, int32_t));
void ek_shift_linear_q16_h(EK_SHIFT_LINEAR_ARGS(int16_t, int16_t, int16_t, int32_t));

#endif
