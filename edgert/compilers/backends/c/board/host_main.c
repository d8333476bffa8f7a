/* A host test main written against model.h alone (what a user's firmware would do):
 * reads input.bin (uint32 count N, then N * EDGERT_INPUT_SIZE float32), resets the model, runs each
 * record (a time step, for a stateful model) and writes output.bin (N * EDGERT_OUTPUT_SIZE float32).
 * Files are named on the command line: host_main INPUT OUTPUT. */
#include <stdint.h>
#include <stdio.h>
#include "model.h"

static float in[EDGERT_INPUT_SIZE], out[EDGERT_OUTPUT_SIZE];

int main(int argc, char **argv) {
  FILE *fi, *fo;
  uint32_t n, i;
  if (argc != 3) return 2;
  fi = fopen(argv[1], "rb");
  fo = fopen(argv[2], "wb");
  if (!fi || !fo || fread(&n, sizeof n, 1, fi) != 1) return 3;
  edgert_model_reset();
  for (i = 0; i < n; i++) {
    if (fread(in, sizeof(float), EDGERT_INPUT_SIZE, fi) != EDGERT_INPUT_SIZE) return 4;
    if (edgert_model_run(in, out) != 0) return 5;
    if (fwrite(out, sizeof(float), EDGERT_OUTPUT_SIZE, fo) != EDGERT_OUTPUT_SIZE) return 6;
  }
  fclose(fi);
  return fclose(fo) == 0 ? 0 : 7;
}
