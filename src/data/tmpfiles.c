#include "data/tmpfiles.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/error.h"

/* What the handler removes. The paths are set with the signals blocked on the session's thread; a
 * signal that lands on another thread (a library's worker: OpenBLAS starts some) is passed on to the
 * session's thread, so that it waits for them too. */
static char sig_out[4096], sig_dir[4096], sig_file[4096 + 8]; /* sig_dir + "/file" */
static pid_t sig_thread;
enum { N_CAUGHT = 4 };
static const int caught[N_CAUGHT] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
static struct sigaction old_actions[N_CAUGHT];
static void (*old_xfsz)(int);

static void on_signal(int sig) {
    if (gettid() != sig_thread) {
        tgkill(getpid(), sig_thread, sig);
        return;
    }
    if (sig_out[0]) unlink(sig_out);
    if (sig_file[0]) unlink(sig_file);
    if (sig_dir[0]) rmdir(sig_dir);
    signal(sig, SIG_DFL);
    raise(sig); /* delivered on return, with the default action: the process ends as it would have */
}

static void block_signals(sigset_t *old) {
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < N_CAUGHT; i++) sigaddset(&set, caught[i]);
    sigprocmask(SIG_BLOCK, &set, old);
}

static void set_path(char *dst, const char *path) {
    sigset_t old;
    block_signals(&old);
    snprintf(dst, 4096, "%s", path);
    sigprocmask(SIG_SETMASK, &old, NULL);
}

static void restore_handlers(void) {
    for (int i = 0; i < N_CAUGHT; i++) sigaction(caught[i], &old_actions[i], NULL);
    signal(SIGXFSZ, old_xfsz);
}

int kiln_tmp_begin(const char *parent, const char *name) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < N_CAUGHT; i++) sigaddset(&sa.sa_mask, caught[i]);
    sig_thread = gettid();
    for (int i = 0; i < N_CAUGHT; i++) {
        sigaction(caught[i], &sa, &old_actions[i]);
        /* A signal ignored on entry stays ignored (a background job's SIGINT, SIGPIPE for EPIPE). */
        if (old_actions[i].sa_handler == SIG_IGN) sigaction(caught[i], &old_actions[i], NULL);
    }
    old_xfsz = signal(SIGXFSZ, SIG_IGN);

    char dir[4096];
    int e = ENAMETOOLONG, ok = 0;
    sigset_t old;
    block_signals(&old);
    if (snprintf(dir, sizeof dir, "%s/kiln-%s-XXXXXX", parent, name) < (int)sizeof dir - 8) {
        ok = mkdtemp(dir) != NULL;
        e = errno;
    }
    if (ok) {
        snprintf(sig_dir, sizeof sig_dir, "%s", dir);
        snprintf(sig_file, sizeof sig_file, "%s/file", dir);
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (!ok) {
        restore_handlers();
        return kiln_fail("%s: cannot create a temporary directory: %s", parent, strerror(e));
    }
    return 0;
}

const char *kiln_tmp_dir(void) { return sig_dir; }

/* Every file is created under the same name and unlinked at once: the handler knows the one name that
 * can exist. */
int kiln_tmp_file(void) {
    int fd = open(sig_file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) return kiln_fail("%s: cannot create a temporary file: %s", sig_dir, strerror(errno));
    unlink(sig_file);
    return fd;
}

int kiln_tmp_atomic_open(kiln_atomic *a, const char *path) {
    sigset_t old;
    block_signals(&old);
    int rc = kiln_atomic_open(a, path);
    if (rc == 0) snprintf(sig_out, sizeof sig_out, "%s", a->tmp);
    sigprocmask(SIG_SETMASK, &old, NULL);
    return rc;
}

void kiln_tmp_end(void) {
    if (sig_dir[0]) rmdir(sig_dir);
    set_path(sig_dir, "");
    set_path(sig_file, "");
    set_path(sig_out, "");
    restore_handlers();
}
