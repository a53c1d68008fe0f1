/* Shared by tests/test_serve_*.c: a `kiln serve` child on a free loopback port that dies with the test. */
#ifndef KILN_TEST_SERVE_H
#define KILN_TEST_SERVE_H

#include <sys/types.h>

typedef struct {
    pid_t pid;
    int port;
    char url[64];           /* http://127.0.0.1:PORT */
} test_server;

/* Starts build/kiln serve on MODEL with extra flags FLAGS (may be ""), bound to 127.0.0.1 on a free
 * port, and waits (at most 20 s) until it answers /health. Fails the test otherwise. */
void server_start(test_server *s, const char *model, const char *flags);
/* Stops it (SIGTERM, then SIGKILL after 5 s) and returns its exit status. */
int server_stop(test_server *s);
/* curl -s with ARGS against PATH of the server; the body goes to *OUT, the status code is returned. */
int server_curl(const test_server *s, const char *path, const char *args, char **out);

#endif
