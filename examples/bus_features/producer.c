/*
 * bus_features producer: connects to a kiln bus listener and pushes feature frames, f32[256] each, written in
 * place in the shared ring (zero copy): frame i holds i in element 0 and (j % 7) * 0.5 in element j > 0.
 *
 *   bus_feature_producer SOCKET [FRAMES]      (default 100000 frames)
 *
 * Exit status: 0 when every frame was delivered to the ring, 1 on error (message on stderr).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/bus.h"

#define DIM 256

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s SOCKET [FRAMES]\n", argv[0]);
    return 2;
  }
  long long frames = argc > 2 ? atoll(argv[2]) : 100000;
  if (frames <= 0 || frames > (1ll << 24)) { /* element 0 holds the index exactly as a float */
    fprintf(stderr, "bus_feature_producer: FRAMES must be in [1, 2^24]\n");
    return 2;
  }
  kiln_bus_opts o = {.batch = 32, .spin = -1};
  kiln_bus_chan *ch;
  int rc = kiln_bus_connect(&ch, argv[1], &o, 5000000000ll);
  if (rc != KILN_OK) {
    fprintf(stderr, "bus_feature_producer: %s\n", kiln_last_error());
    return 1;
  }
  float feat[DIM]; /* stands in for features computed elsewhere */
  for (int j = 1; j < DIM; j++) feat[j] = (float)(j % 7) * 0.5f;
  for (long long i = 0; i < frames; i++) {
    kiln_rec *rec;
    rc = kiln_bus_acquire(ch, DIM * sizeof(float), &rec, 5000000000ll);
    if (rc != KILN_OK) break;
    float *f = kiln_rec_data(rec);
    feat[0] = (float)i;
    memcpy(f, feat, sizeof feat); /* written straight into the shared ring */
    rc = kiln_bus_commit(ch, rec, DIM * sizeof(float), 1, (uint64_t)i);
    if (rc != KILN_OK) break;
  }
  if (rc == KILN_OK) rc = kiln_bus_flush(ch);
  if (rc != KILN_OK) fprintf(stderr, "bus_feature_producer: %s\n", kiln_last_error());
  kiln_bus_chan_close(ch);
  return rc == KILN_OK ? 0 : 1;
}
