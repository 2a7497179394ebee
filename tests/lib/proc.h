/* proc.h — server processes other than sessiond for the process-level
 * tests (stunnel, nginx, HAProxy, sessionc-echo...): start one from an
 * argv with its output in a log file, wait (bounded) for a line in that
 * log, stop it (SIGTERM, then SIGKILL), print its log when a test fails.
 *
 * sessiond itself goes through th_daemon_* (harness.h), which reads the
 * daemon's output through a pipe into memory; these servers write to a
 * file instead, because some of them (nginx) open their log file by name
 * themselves, and a file survives for the failure dump after the process.
 *
 * tp_start fails the calling Check test on error (ck_assert), so it is for
 * START_TEST bodies only; the waits return -1 and let the test decide what
 * to print. Every wait is bounded and on a condition, never a sleep.
 */
#ifndef SESSIOND_TEST_PROC_H
#define SESSIOND_TEST_PROC_H

#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

/* A zeroed tp_proc is "not running". */
typedef struct tp_proc {
    pid_t pid; /* > 0 while it runs (not yet reaped) */
    int pidfd; /* pollable: readable once the process exited */
    char log_path[PATH_MAX];
} tp_proc;

/* Starts argv (argv[0] looked up in $PATH unless it holds a '/') with stdin
 * from /dev/null and stdout and stderr on log_path. The file is truncated,
 * then written in append mode, so a server that also opens it by name
 * (nginx's error log) interleaves with its own stderr instead of
 * overwriting it. The process dies with the test (PR_SET_PDEATHSIG). */
void tp_start(tp_proc *p, const char *const *argv, const char *log_path);

/* The whole log, NUL-terminated (free it), or NULL; *len (may be NULL) its
 * length. */
char *tp_log(const tp_proc *p, size_t *len);

/* The log's size now: an offset for tp_wait_log to look only at what the
 * process writes from now on. */
size_t tp_log_size(const tp_proc *p);

/* Waits until a complete line of the log after byte `from` holds `needle`
 * and copies that line (without its newline) into line[0..cap) (line may be
 * NULL with cap 0). 0, or -1 after timeout_ms or when the process exits
 * (or is already stopped) without having written it. */
int tp_wait_log(const tp_proc *p, const char *needle, size_t from, char *line, size_t cap,
                int timeout_ms);

/* SIGTERM, then up to 10 s for it to exit, SIGKILL if it does not; reaps
 * it. Returns its exit status (128 + signal when a signal ended it), or -1
 * if it had to be killed or was not running. */
int tp_stop(tp_proc *p);

/* Prints the log to stderr between markers naming the process. */
void tp_dump(const tp_proc *p, const char *name);

/* A TCP socket on 127.0.0.1 that listens and never accepts, *port its
 * port: a server's plaintext "connect" target when nothing needs the
 * plaintext (the kernel completes the connections). Fails the test on
 * error; close() it. */
int tp_tcp_sink(int *port);

/* Stock stunnel (Debian's stunnel4) number i on a free port: writes
 * DIR/stunnelI.conf for one service, "shared" (stunnel's session-ID
 * context is the service name, so all of a test's stunnels resume each
 * other's sessions), TLS 1.2 and up, no tickets, forwarding to
 * connect_port, with `sessiond = 127.0.0.1:sessiond_port`; logs to
 * DIR/stunnelI.log, and waits for "Accepting new connections". Returns the
 * port it accepts TLS on, or -1 if it did not come up (p is then still
 * set, for tp_dump and tp_stop). */
int tp_stunnel_start(tp_proc *p, const char *dir, int i, const char *cert, const char *key,
                     int connect_port, int sessiond_port);

#endif
