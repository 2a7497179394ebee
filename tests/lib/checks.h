/* checks.h — asserting shorthands the tests share: harness calls that fail
 * the Check test instead of returning -1, the wall clock for v2 timestamps,
 * deterministic filler bytes, and exactly-sized heap buffers and the check
 * of their contents.
 *
 * Each was a private copy in several tests/unit and tests/integration
 * files; kept here so a fix reaches all of them. Everything but the suite
 * runners fails the calling test with ck_assert, so it is for use inside
 * START_TEST bodies (and the helpers they call) only, never from a test
 * binary's main. The suite runners (tc_run_suite*) are the other way round:
 * they are what a test binary's main calls.
 * The monotonic clock for deadlines is th_now_ms in harness.h.
 */
#ifndef SESSIOND_TEST_CHECKS_H
#define SESSIOND_TEST_CHECKS_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "harness.h"
#include "tls_util.h"

/* th_daemon_start, failing the test if the daemon does not come up. */
void tc_start(th_daemon *d, const char *const *extra);

/* th_daemon_stop, failing the test unless the daemon exits with status 0. */
void tc_stop_ok(th_daemon *d);

/* A UDP socket connected to the daemon on 127.0.0.1; fails the test if
 * there is none. */
int tc_connect_v4(th_daemon *d);

/* The value of `name=` in a stats line; fails the test if it is absent. */
long long tc_field(const char *line, const char *name);

/* Asks the daemon for a stats line (SIGUSR1) into line (cap bytes); fails
 * the test if none comes. */
void tc_get_stats(th_daemon *d, char *line, size_t cap);

/* Asks the daemon for a stats line (SIGUSR1) and returns `name=` from it;
 * fails the test if either step fails. */
long long tc_stat_of(th_daemon *d, const char *name);

/* send() of the whole datagram on a connected socket, retried on EINTR;
 * fails the test on an error or a short send. */
void tc_send_all(int fd, const void *buf, size_t len);

/* CLOCK_REALTIME in milliseconds since the epoch, for v2 timestamps. */
uint64_t tc_wall_ms(void);

/* len pseudo-random bytes (xorshift32) determined by seed, so a value can
 * be rebuilt later to compare with what comes back. */
void tc_fill_value(uint8_t *value, size_t len, unsigned seed);

/* A heap buffer of exactly len bytes filled with byte, so AddressSanitizer
 * flags any access one byte past it; free() it. malloc(0) may return NULL,
 * so 0 gets one byte. */
uint8_t *tc_exact_buf(size_t len, uint8_t byte);

/* Whether all len bytes at p equal byte (1) or not (0). */
int tc_all_bytes_are(const uint8_t *p, size_t len, uint8_t byte);

/* Runs every test of s in a Check SRunner (CK_NORMAL, so tests/run.sh can
 * parse the summary line) and frees it: EXIT_SUCCESS if all passed, else
 * EXIT_FAILURE, ready to be a test binary's exit status. */
int tc_run_suite(Suite *s);

/* tc_run_suite with a self-signed EC server credential for "localhost"
 * made into *server before the run (so every forked test inherits it) and
 * freed after. EXIT_FAILURE without running anything if it cannot be made. */
int tc_run_suite_with_server(Suite *s, tu_cred *server);

#endif
