/* The remote-control example of the Vuer docs, in C: 200 SET_POSITION
 * events at 60 Hz along x = 2 sin(0.05 i), y = 0.5 + 0.3 sin(0.1 i), z = 0,
 * every one delivered; exits 0 when all were written.
 *
 *   cargo build --release -p vuer-client-c
 *   cc -std=c11 -Icapi/include examples/c/set_position.c \
 *      target/release/libvuer_client_c.a -lpthread -ldl -lm -o set_position
 *   python examples/server.py &     # or any Vuer server; VUER_CLIENT_URI chooses it
 *   ./set_position
 */
#define _POSIX_C_SOURCE 199309L
#include <math.h>
#include <stdio.h>
#include <time.h>

#include "vuer_client.h"

static void sleep_ms(long ms) {
  struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

int main(void) {
  vuer_client *client = NULL;
  /* NULL URI: VUER_CLIENT_URI, else ws://localhost:8012. */
  if (vuer_connect(NULL, NULL, &client) != VUER_OK) {
    fprintf(stderr, "connect: %s\n", vuer_last_error());
    return 1;
  }
  int sent = 0;
  for (int i = 0; i < 200; i++) {
    float t = (float)i * 0.05f;
    float pos[3] = {sinf(t) * 2.0f, 0.5f + sinf(t * 2.0f) * 0.3f, 0.0f};
    vuer_status s;
    /* Every position delivered (reliable = 1): wait while the queue is full. */
    while ((s = vuer_publish_floats(client, "SET_POSITION", NULL, pos, 3, 1)) == VUER_ERR_FULL) {
      sleep_ms(1);
    }
    if (s != VUER_OK) {
      fprintf(stderr, "publish: %s\n", vuer_last_error());
      vuer_free(client);
      return 1;
    }
    sent++;
    sleep_ms(16); /* ~60 FPS */
  }
  if (vuer_flush(client, 5000) != VUER_OK) {
    fprintf(stderr, "flush: %s\n", vuer_last_error());
  }
  /* What the server sent back (the scene, an UPSERT per position). */
  int received = 0;
  vuer_event *ev = NULL;
  while (vuer_recv(client, 1000, &ev) == VUER_OK) {
    received++;
    vuer_event_free(ev);
  }
  vuer_stats st;
  vuer_get_stats(client, &st);
  vuer_status closed = vuer_close(client);
  if (closed != VUER_OK) fprintf(stderr, "close: %s\n", vuer_last_error());
  vuer_free(client);
  printf("sent %d SET_POSITION events (%llu written); received %d server events\n", sent,
         (unsigned long long)st.sent, received);
  return (closed == VUER_OK && st.sent >= 200) ? 0 : 2;
}
