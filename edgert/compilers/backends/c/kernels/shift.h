/* edgert shift kernels: batch 1, NCHW. Weights are w = m * 2^scale_exp with m = ±2^e (or 0), stored
 * as the packed code stream of edgert.ops.shift.codes (``bits`` bits per weight, little-endian across
 * bytes, in the weights' own [O, C/groups, kh, kw] or [out, in] order): the kernels decode it as they
 * go, so flash holds bits/8 bytes per weight.
 *
 * A layer runs in two calls: ek_shift_quantize* turns the float input into fixed point,
 * x_q = clamp(round_half_even(x * 2^frac_bits), -2^(act_bits-1), 2^(act_bits-1) - 1), into a scratch
 * buffer (int8 when act_bits <= 8, else int16); the layer kernel then forms exact integer sums of
 * x_q * m and writes y = (float)acc * 2^(scale_exp - frac_bits) (+ bias[channel]).
 * Kernel names end in _q8/_q16 (the x_q type) and _a32/_a64 (the accumulator): the emitter picks
 * int32 when the layer's weights prove no sum can overflow it (int64 is slow on Cortex-M). */
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
 * Output channels go in blocks of ob (1 <= ob): scratch filt holds a block's decoded filters
 * (ob * C/groups * kh * kw int32), col one input window (C/groups * kh * kw values). */
#define EK_SHIFT_CONV2D_ARGS(QT)                                                                   \
  const QT *xq, const uint8_t *codes, const float *bias, float *y, int32_t *filt, QT *col, int ob, \
  int c, int hp, int wp, int o, int oh, int ow, int kh, int kw, int groups, int sh, int sw, int dh, \
  int dw, int bits, int zero, float scale
void ek_shift_conv2d_q8_a32(EK_SHIFT_CONV2D_ARGS(int8_t));
void ek_shift_conv2d_q8_a64(EK_SHIFT_CONV2D_ARGS(int8_t));
void ek_shift_conv2d_q16_a32(EK_SHIFT_CONV2D_ARGS(int16_t));
void ek_shift_conv2d_q16_a64(EK_SHIFT_CONV2D_ARGS(int16_t));

/* y[rows, out] = xq[rows, in] @ m[out, in].T * scale (+ bias[out]); bias may be 0. */
#define EK_SHIFT_LINEAR_ARGS(QT)                                                                   \
  const QT *xq, const uint8_t *codes, const float *bias, float *y, int rows, int in, int out, int bits, \
  int zero, float scale
void ek_shift_linear_q8_a32(EK_SHIFT_LINEAR_ARGS(int8_t));
void ek_shift_linear_q8_a64(EK_SHIFT_LINEAR_ARGS(int8_t));
void ek_shift_linear_q16_a32(EK_SHIFT_LINEAR_ARGS(int16_t));
void ek_shift_linear_q16_a64(EK_SHIFT_LINEAR_ARGS(int16_t));

#endif
