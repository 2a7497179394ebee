/* checks.c — asserting shorthands for the tests (see checks.h).
 *
 * Thin on purpose: each wraps one harness call or libc call and turns its
 * failure into a Check failure with a message naming what failed, so the
 * tests read as a list of steps. The harness itself (harness.c) stays free
 * of Check so that test mains can use it before the SRunner exists.
 *
 * tc_run_suite is the one copy of every test binary's main: Check forks
 * each test (CK_FORK, its default), so whatever main sets up before the run
 * (a credential, a key file) is shared by every test without being rebuilt.
 */
#include "checks.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define STATS_LINE 8192

void tc_start(th_daemon *d, const char *const *extra)
{
    ck_assert_msg(th_daemon_start(d, extra) == 0, "sessiond did not start (is SESSIOND set?)");
}

void tc_stop_ok(th_daemon *d)
{
    ck_assert_int_eq(th_daemon_stop(d), 0);
}

int tc_connect_v4(th_daemon *d)
{
    int fd = th_udp_connect(d->port);

    ck_assert_int_ge(fd, 0);
    return fd;
}

long long tc_field(const char *line, const char *name)
{
    long long v = th_stat(line, name);

    ck_assert_msg(v >= 0, "no %s= in \"%s\"", name, line);
    return v;
}

void tc_get_stats(th_daemon *d, char *line, size_t cap)
{
    ck_assert_int_eq(th_daemon_stats(d, line, cap), 0);
}

long long tc_stat_of(th_daemon *d, const char *name)
{
    char line[STATS_LINE];

    ck_assert_int_eq(th_daemon_stats(d, line, sizeof(line)), 0);
    return tc_field(line, name);
}

void tc_send_all(int fd, const void *buf, size_t len)
{
    ssize_t n;

    do {
        n = send(fd, buf, len, 0);
    } while (n < 0 && errno == EINTR);
    ck_assert_msg(n == (ssize_t)len, "send of %zu bytes: %zd (%s)", len, n, strerror(errno));
}

uint64_t tc_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tc_fill_value(uint8_t *value, size_t len, unsigned seed)
{
    uint32_t x = 2463534242u ^ seed;

    for (size_t i = 0; i < len; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        value[i] = (uint8_t)x;
    }
}

uint8_t *tc_exact_buf(size_t len, uint8_t byte)
{
    uint8_t *buf = malloc(len ? len : 1);

    ck_assert_ptr_nonnull(buf);
    memset(buf, byte, len ? len : 1);
    return buf;
}

int tc_all_bytes_are(const uint8_t *p, size_t len, uint8_t byte)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != byte)
            return 0;
    return 1;
}

int tc_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

int tc_run_suite_with_server(Suite *s, tu_cred *server)
{
    int status;

    if (tu_cred_make(server, TU_KEY_EC, TU_ROLE_SERVER, "localhost", NULL) != 0) {
        /* Check has no public suite_free: an SRunner is what frees a suite. */
        srunner_free(srunner_create(s));
        return EXIT_FAILURE;
    }
    status = tc_run_suite(s);
    tu_cred_free(server);
    return status;
}
