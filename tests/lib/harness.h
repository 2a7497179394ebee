/* harness.h — helpers for tests that drive real processes on loopback.
 *
 * A test starts a real sessiond (the binary named by $SESSIOND) with
 * `-f -p 0`: the daemon binds an ephemeral port, so tests never collide, and
 * logs "listening on ADDR:PORT", which the harness reads to learn the port.
 * A reader thread collects the daemon's stderr into a buffer, and tests wait
 * on that log (th_daemon_wait_log) instead of sleeping: e.g. send SIGUSR1 and
 * wait until the stats line shows the expected counter.
 */
#ifndef SESSIOND_TEST_HARNESS_H
#define SESSIOND_TEST_HARNESS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

typedef struct th_daemon {
    pid_t pid;
    int port;      /* the UDP port it listens on */
    int stderr_fd; /* read end of its stderr pipe */
    pthread_t reader;
    pthread_mutex_t lock;
    pthread_cond_t grew;
    char *log; /* everything it has written to stderr so far, NUL-terminated */
    size_t log_len;
    int log_closed; /* its stderr reached EOF */
} th_daemon;

/* Starts $SESSIOND -f -l 127.0.0.1 -p 0 followed by the NULL-terminated
 * extra arguments (may be NULL), and waits up to 10 s for it to listen.
 * Returns 0, or -1 (with the reason on stderr). */
int th_daemon_start(th_daemon *d, const char *const *extra_args);

/* Sends SIGTERM, reaps the process, joins the reader, frees the log. Returns
 * the exit status (0..255), 128+signal if it died of a signal, -1 on error. */
int th_daemon_stop(th_daemon *d);

/* Waits until the daemon's log contains `needle` (anywhere after byte
 * offset `from`) or timeout_ms passes. Returns 0 when found, -1 otherwise. */
int th_daemon_wait_log(th_daemon *d, const char *needle, size_t from, int timeout_ms);

/* Sends SIGUSR1 and waits for the stats line it produces; copies that line
 * into buf. Returns 0, or -1. */
int th_daemon_stats(th_daemon *d, char *buf, size_t cap);

/* The value of `name=` in a stats line such as "gets=3 hits=2 ...", or -1. */
long long th_stat(const char *stats_line, const char *name);

/* Runs a program to completion with stdin from /dev/null, capturing stdout
 * and stderr together into buf (NUL-terminated, truncated to cap). Returns
 * its exit status (as th_daemon_stop), -1 on error. */
int th_run(const char *const *argv, char *buf, size_t cap);

/* A UDP socket connected to 127.0.0.1:port, or -1. */
int th_udp_connect(int port);

/* Sends req on a connected UDP socket and waits up to timeout_ms for one
 * datagram. Returns its length, 0 if none came in time, -1 on error. */
ssize_t th_udp_roundtrip(int fd, const void *req, size_t req_len, void *ans, size_t cap,
                         int timeout_ms);

/* A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read,
 * close), for servers that cannot be told to pick their own. -1 on error. */
int th_free_tcp_port(void);

/* The same for a UDP port, for a daemon that cannot tell us the port it
 * picked (in daemon mode it logs to syslog, not to the harness). */
int th_free_udp_port(void);

/* A UDP socket bound to the local address `src` (e.g. "127.0.0.2": all of
 * 127.0.0.0/8 is loopback on Linux) and connected to 127.0.0.1:port, so
 * tests can play senders with different source addresses. -1 on error. */
int th_udp_connect_from(const char *src, int port);

/* Waits up to timeout_ms for one datagram on fd. Returns its length, 0 if
 * none came in time, -1 on error. */
ssize_t th_udp_recv(int fd, void *buf, size_t cap, int timeout_ms);

/* Writes len bytes to path (created or truncated) and sets its mode
 * exactly (not filtered by the umask). Returns 0, or -1. */
int th_write_file(const char *path, const void *data, size_t len, mode_t mode);

/* The first number after "field:" in /proc/PID/status (e.g. "VmRSS" in
 * kB, "Uid" the real uid), or -1. */
long long th_proc_status(pid_t pid, const char *field);

/* CLOCK_MONOTONIC in milliseconds, for bounded waits and deadlines. */
int64_t th_now_ms(void);

/* A fresh temporary directory (mkdtemp under $TMPDIR or /tmp), written into
 * buf; removed with th_rmtree. Returns 0, or -1. */
int th_tmpdir(char *buf, size_t cap);
void th_rmtree(const char *path);

#endif
