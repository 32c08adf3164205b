/* Cost of vuer_publish_floats (a 3-float pose, latest value wins) from a
 * plain C thread: rounds of 100 000 publishes, ns per call, median of the
 * rounds. Run by capi/bench/run.sh beside the Rust publish.
 *
 *   publish_c URI ROUNDS REALTIME(0/1)
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "vuer_client.h"

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 4) return 2;
  int rounds = atoi(argv[2]);
  vuer_options o;
  vuer_options_init(&o);
  if (atoi(argv[3])) {
    o.realtime_poll_us = 500;
    o.max_queued_bytes = 1 << 20;
  }
  vuer_client *c = NULL;
  if (vuer_connect(argv[1], &o, &c) != VUER_OK) {
    fprintf(stderr, "connect: %s\n", vuer_last_error());
    return 1;
  }
  const long n = 100000;
  double per[64];
  if (rounds > 64) rounds = 64;
  float pose[3] = {0.f, 0.5f, 0.f};
  for (int r = -1; r < rounds; r++) { /* round -1 warms up */
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
      pose[0] = (float)i * 1e-6f;
      if (vuer_publish_floats(c, "SET_POSITION", "box", pose, 3, 0) != VUER_OK) {
        fprintf(stderr, "publish: %s\n", vuer_last_error());
        return 1;
      }
    }
    if (r >= 0) per[r] = (now_ns() - t0) / (double)n;
  }
  qsort(per, rounds, sizeof per[0], cmp);
  printf("%.1f\n", per[rounds / 2]);
  vuer_close(c);
  vuer_free(c);
  return 0;
}
