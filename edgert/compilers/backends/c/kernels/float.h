/* edgert float kernels: batch 1, NCHW, float32. Pointers may alias where a comment says so.
 * Shapes are fixed by the emitter at compile time; weight layouts are the emitter's (ops_float.py). */
#ifndef EDGERT_KERNELS_FLOAT_H
#define EDGERT_KERNELS_FLOAT_H

#include <math.h>

/* An activation fused into a kernel's epilogue (a relu or clip the emitter folded into its producer). */
#define EK_ACT_NONE 0
#define EK_ACT_MAX 1   /* y = max(y, lo): relu is lo = 0 */
#define EK_ACT_CLAMP 2 /* y = min(max(y, lo), hi) */

/* Geometry of a conv (and, with c == o, of a depthwise conv): input c x h x w, output o x oh x ow,
 * kernel kh x kw, stride, dilation, the top and left padding (bottom and right follow from oh, ow). */
typedef struct {
  int c, h, w, o, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, groups;
} ek_conv_geom;

/* Geometry of a pool: c planes of h x w -> oh x ow. */
typedef struct {
  int c, h, w, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl;
} ek_pool_geom;

/* Output pixels per block of ek_conv2d: its scratch holds EK_CONV_PIXELS * c/groups * kh * kw floats. */
#define EK_CONV_PIXELS 6

/* y = max(x, 0); y may be x */
void ek_relu(const float *x, float *y, int n);
/* y = min(max(x, lo), hi); y may be x */
void ek_clip(const float *x, float *y, int n, float lo, float hi);
/* y = 1 / (1 + exp(-x)); y may be x */
void ek_sigmoid(const float *x, float *y, int n);
/* y = tanh(x); y may be x */
void ek_tanh(const float *x, float *y, int n);
/* y = x: n floats (nothing to do when y is x) */
void ek_copy(const float *x, float *y, int n);

/* conv2d as blocked matrix products: w is [groups][ceil(o/groups/4)][cg*kh*kw][4] (output channels in
 * fours, zero-padded; k = (c*kh + i)*kw + j), b is [groups][ceil(o/groups/4)*4] or NULL. patch is
 * scratch of EK_CONV_PIXELS * cg*kh*kw floats. */
void ek_conv2d(const float *x, const float *w, const float *b, float *y, float *patch,
               const ek_conv_geom *g, int act, float lo, float hi);
/* depthwise conv (groups == c, o = c * multiplier): w is [o][kh*kw], b is [o] or NULL; zero is
 * scratch of w floats (it stands for the rows in the padding), NULL for the 3x3 stride-1 pad-1 case */
void ek_dwconv2d(const float *x, const float *w, const float *b, float *y, float *zero, const ek_conv_geom *g,
                 int act, float lo, float hi);
/* y[r][o] = b[o] + x[r] . W[o] for rows r of k values: w is W re-laid [ceil(o/16)][k][16], b is
 * [ceil(o/16)*16], both zero-padded; b may be NULL */
void ek_linear(const float *x, const float *w, const float *b, float *y, int rows, int k, int o,
               int act, float lo, float hi);
/* y = x * scale[c] + shift[c] over planes of `inner` values */
void ek_scale_shift(const float *x, const float *scale, const float *shift, float *y, int c, int inner);

void ek_max_pool2d(const float *x, float *y, const ek_pool_geom *g);
/* div is [oh*ow]: the count each output is divided by (PyTorch's rule, computed by the emitter) */
void ek_avg_pool2d(const float *x, float *y, const ek_pool_geom *g, const float *div);
void ek_adaptive_avg_pool2d(const float *x, float *y, int c, int h, int w, int oh, int ow);

/* y = a + b over `rank` dims (NumPy broadcasting): sa, sb are the element strides of a and b along
 * each output dim, 0 where it broadcasts; y may be a (when a has y's shape) */
void ek_add(const float *a, const float *b, float *y, int rank, const int *dims, const int *sa,
            const int *sb);
/* one input of a concat: `outer` chunks of `chunk` bytes from x, to y every `stride` bytes */
void ek_concat_part(const void *x, void *y, int outer, int chunk, int stride);
/* softmax over the middle of [outer][n][inner] */
void ek_softmax(const float *x, float *y, int outer, int n, int inner);

/* y = a * b, a - b, a / b: broadcasting as ek_add; y may be a (when a has y's shape) */
void ek_mul(const float *a, const float *b, float *y, int rank, const int *dims, const int *sa,
            const int *sb);
void ek_sub(const float *a, const float *b, float *y, int rank, const int *dims, const int *sa,
            const int *sb);
void ek_div(const float *a, const float *b, float *y, int rank, const int *dims, const int *sa,
            const int *sb);
/* activations; y may be x in each */
void ek_silu(const float *x, float *y, int n);                  /* x * sigmoid(x) */
void ek_hardswish(const float *x, float *y, int n);             /* x * min(max(x + 3, 0), 6) / 6 */
void ek_hardsigmoid(const float *x, float *y, int n, float alpha, float beta);  /* clamp(a x + b, 0, 1) */
void ek_gelu(const float *x, float *y, int n);                  /* x * (1 + erf(x / sqrt 2)) / 2 */
void ek_gelu_tanh(const float *x, float *y, int n);             /* PyTorch's tanh approximation */
void ek_leaky_relu(const float *x, float *y, int n, float slope);
/* y = x >= 0 ? x : slope[p % c] * x over planes p of `inner` values (c = 1: one slope) */
void ek_prelu(const float *x, const float *slope, float *y, int planes, int c, int inner);

/* y[...] = x permuted: y is walked in order over `rank` dims, `strides` are x's element strides along
 * them; y is not x */
void ek_permute(const float *x, float *y, int rank, const int *dims, const int *strides);
/* y (n_out floats) = value, then x (dims, C order) written at y + offset, stepping y by ys per dim;
 * y is not x */
void ek_pad(const float *x, float *y, float value, int n_out, int rank, const int *dims, const int *ys,
            int offset);
/* y (n_out floats) = scale * sums of x (dims, C order) into y + sum(index * ys): ys is 0 along the
 * reduced dims; y is not x */
void ek_reduce_sum(const float *x, float *y, int n_out, int rank, const int *dims, const int *ys, float scale);
/* layer norm over rows of n values: (x - mean) / sqrt(var + eps) * gamma + beta; gamma and beta are
 * [n] or NULL; y may be x */
void ek_layer_norm(const float *x, const float *gamma, const float *beta, float *y, int rows, int n, float eps);

/* transposed conv (groups 1, dilation 1) as a gather per output pixel: w is [o][kh*kw][c] (re-laid from
 * PyTorch's [c][o][kh][kw]), b is [o] or NULL; g->pt, g->pl are the padding cropped off the top and
 * left (g->dh, g->dw and g->groups are unused) */
void ek_conv_transpose2d(const float *x, const float *w, const float *b, float *y, const ek_conv_geom *g);
/* resize c planes of h x w to oh x ow: row i reads source rows h0[i], h1[i] blended by fh[i]
 * (y = r0 * (1 - f) + r1 * f), columns likewise; fh and fw NULL: nearest (h0, w0 only); y is not x */
void ek_upsample(const float *x, float *y, int c, int h, int w, int oh, int ow, const int *h0, const int *h1,
                 const float *fh, const int *w0, const int *w1, const float *fw);
/* y[t] = a[t] @ b[t] for t < batch: a[t] is m x k, b[t] is k x n, y[t] is m x n; y is neither */
void ek_matmul(const float *a, const float *b, float *y, int batch, int m, int k, int n);

#endif
