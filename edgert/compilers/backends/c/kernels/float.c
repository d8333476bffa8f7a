#include "float.h"

void ek_relu(const float *x, float *y, int n) {
  int i;
  for (i = 0; i < n; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}
