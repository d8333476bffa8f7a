/* edgert float kernels: batch 1, NCHW, float32. Pointers may alias where a comment says so. */
#ifndef EDGERT_KERNELS_FLOAT_H
#define EDGERT_KERNELS_FLOAT_H

/* y = max(x, 0); y may be x */
void ek_relu(const float *x, float *y, int n);

#endif
