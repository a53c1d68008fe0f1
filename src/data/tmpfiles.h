/* Temporary files that do not outlive their process: a private directory (mkdtemp) whose files are
 * unlinked as soon as they are created (the kernel frees them with their descriptor, however the
 * process ends), and an output being written under a temporary name. While a session is open, SIGINT,
 * SIGTERM, SIGHUP and SIGPIPE remove that name and the directory, then end the process as they would
 * have; SIGXFSZ is ignored, so that a file size limit is a write error. One session at a time. */
#ifndef KILN_DATA_TMPFILES_H
#define KILN_DATA_TMPFILES_H

#include "base/file.h"

/* Installs the handlers and creates PARENT/kiln-NAME-XXXXXX. Returns 0, or -1 with an error naming PARENT
 * (the handlers are then restored). */
int kiln_tmp_begin(const char *parent, const char *name);
/* The private directory (for messages). */
const char *kiln_tmp_dir(void);
/* A new file in the directory, open for reading and writing and already unlinked: a descriptor, or -1
 * with an error. */
int kiln_tmp_file(void);
/* kiln_atomic_open, with the temporary name removed on a signal until kiln_tmp_end. */
int kiln_tmp_atomic_open(kiln_atomic *a, const char *path);
/* Removes the directory and restores the handlers. */
void kiln_tmp_end(void);

#endif
