/* The server fixture of tests/test_serve.h. The child asks to be killed when the test process dies, so a
 * failing test never leaves a server behind. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "test_serve.h"

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void server_start(test_server *s, const char *model, const char *flags) {
    char port_file[4096], log[4096], cmd[16384];
    snprintf(port_file, sizeof port_file, "%s", test_tmp("server.port"));
    snprintf(log, sizeof log, "%s", test_tmp("server.log"));
    unlink(port_file);
    snprintf(cmd, sizeof cmd, "exec %s serve -m '%s' --host 127.0.0.1 --port 0 --port-file '%s' --timeout 60 %s 2>'%s'",
             test_kiln_bin(), model, port_file, flags, log);
    pid_t parent = getpid();
    s->pid = fork();
    if (s->pid < 0) test_fail(__FILE__, __LINE__, "fork failed");
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) {
        int st;
        if (waitpid(s->pid, &st, WNOHANG) == s->pid)
            test_fail(__FILE__, __LINE__, "kiln serve exited at start (status %d): see %s", st, log);
        FILE *f = fopen(port_file, "r");
        if (f) {
            int ok = fscanf(f, "%d", &s->port) == 1;
            fclose(f);
            if (ok) {
                snprintf(s->url, sizeof s->url, "http://127.0.0.1:%d", s->port);
                char *out = NULL;
                int code = server_curl(s, "/health", "", &out);
                free(out);
                if (code == 200) return;
            }
        }
        sleep_ms(50);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
    test_fail(__FILE__, __LINE__, "kiln serve did not come up within 20 s: see %s", log);
}

int server_stop(test_server *s) {
    int st = 0;
    kill(s->pid, SIGTERM);
    for (int i = 0; i < 100; i++) {
        if (waitpid(s->pid, &st, WNOHANG) == s->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        sleep_ms(50);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &st, 0);
    return 128 + SIGKILL;
}

int server_curl(const test_server *s, const char *path, const char *args, char **out) {
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "curl -s -m 60 -o '%s' -w '%%{http_code}' %s '%s%s'", test_tmp("curl.body"), args,
             s->url, path);
    char *code = NULL;
    test_run(cmd, &code, NULL);
    int c = code ? atoi(code) : 0;
    free(code);
    if (out) {
        FILE *f = fopen(test_tmp("curl.body"), "r");
        size_t cap = 1 << 16, n = 0, got;
        char *b = malloc(cap);
        while (f && (got = fread(b + n, 1, cap - n - 1, f)) > 0)
            if ((n += got) + 1 >= cap) b = realloc(b, cap *= 2);
        b[n] = 0;
        if (f) fclose(f);
        *out = b;
    }
    return c;
}
