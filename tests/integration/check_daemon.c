/* check_daemon.c — a real sessiond process, driven over loopback UDP with
 * the v1 (stunnel) protocol and no cluster key.
 *
 * Every test starts its own daemon ($SESSIOND, through tests/lib/harness.c)
 * on an ephemeral port, so counters start at zero and tests never collide.
 * What is covered: NEW then GET returns the same bytes (1 byte up to the
 * largest value a datagram carries); unknown keys answer 0x80 with the key
 * echoed; REMOVE; NEW replacing; TTL expiry (request timeout and the
 * --max-ttl cap); every malformed case and oversized datagrams dropped
 * unanswered and counted by reason while valid GETs keep being answered; the
 * stats line after a known sequence; the byte budget (each v1 entry is
 * charged for the 33-byte cache key: the namespace tag and the 32-byte ID);
 * two clients interleaved; a pipelined burst; that debug logs never carry
 * keys or values; and that without a key, loopback senders other than
 * 127.0.0.1 (all of 127.0.0.0/8) are served.
 *
 * The command line, signals, pidfile and daemon mode are in
 * check_lifecycle.c; v2 and sealing in check_v2_sealed.c, the source
 * policy with a key in check_v2_policy.c, key files in check_v2_keys.c;
 * the flood in check_flood.c.
 *
 * Synchronisation without sleeps: the daemon reads its one socket in order,
 * so after sending anything on a socket, a GET on the same socket (or any
 * socket, sent later) is answered only after everything before it was
 * handled. A "sync" GET therefore proves earlier NEWs were stored and earlier
 * bad datagrams were counted (and, as its answer is the first datagram to
 * come back, that none of them was answered). Only the expiry test and the
 * daemon-mode test wait for a condition by polling, with bounds.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "v1ops.h"

#define ANSWER_TIMEOUT_MS 3000
#define STATS_LINE        2048
#define BIG               (PROTO_MAX_DATAGRAM + 64)
/* What the cache charges a v1 entry's key for: dispatch's namespace tag
 * byte and the 32-byte ID (dispatch.h). */
#define V1_CACHE_KEY_LEN (1 + PROTO_V1_KEY_LEN)

static uint8_t request[BIG];

/* ---- helpers ---------------------------------------------------------- */

static void expect_miss(int fd, const uint8_t key[PROTO_V1_KEY_LEN])
{
    v1t_get_expect(fd, key, PROTO_V1_NOT_FOUND);
}

/* A GET of a key never stored: its answer proves everything sent before it
 * was handled, and, being the first datagram back, that none of it was
 * answered. */
static void sync_get(int fd)
{
    uint8_t key[PROTO_V1_KEY_LEN];

    v1t_make_key(key, 0xEE, 0xEEE);
    expect_miss(fd, key);
}

static int log_contains(th_daemon *d, const char *needle)
{
    int found;

    pthread_mutex_lock(&d->lock);
    found = d->log != NULL && strstr(d->log, needle) != NULL;
    pthread_mutex_unlock(&d->lock);
    return found;
}

/* Receives one datagram within ANSWER_TIMEOUT_MS: its length, or -1. */
static ssize_t recv_answer(int fd, uint8_t *buf, size_t cap)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    if (poll(&pfd, 1, ANSWER_TIMEOUT_MS) != 1)
        return -1;
    return recv(fd, buf, cap, 0);
}

static int ipv6_loopback_works(void)
{
    struct sockaddr_in6 sin6;
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    int ok;

    if (fd < 0)
        return 0;
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = in6addr_loopback;
    ok = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
    close(fd);
    return ok;
}

static int udp6_connect(int port)
{
    struct sockaddr_in6 sin6;
    int fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_addr = in6addr_loopback;
    sin6.sin6_port = htons((uint16_t)port);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin6, sizeof(sin6)), 0);
    return fd;
}

/* ---- the protocol through a real daemon -------------------------------- */

START_TEST(test_new_get_roundtrip)
{
    static const size_t sizes[] = {1, 140, 512, 950, 2000, 65000, PROTO_V1_MAX_VALUE};
    static uint8_t value[PROTO_V1_MAX_VALUE];
    uint8_t key[PROTO_V1_KEY_LEN];
    char line[STATS_LINE];
    size_t n_sizes = sizeof(sizes) / sizeof(sizes[0]);
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    for (size_t i = 0; i < n_sizes; i++) {
        v1t_make_key(key, 1, (unsigned)i);
        tc_fill_value(value, sizes[i], (unsigned)i);
        v1t_send_op(fd, PROTO_V1_NEW, 300, key, value, sizes[i]);
        v1t_expect_hit(fd, key, value, sizes[i]);
    }
    /* Each value again, after all were stored: none overwrote another. */
    for (size_t i = 0; i < n_sizes; i++) {
        v1t_make_key(key, 1, (unsigned)i);
        tc_fill_value(value, sizes[i], (unsigned)i);
        v1t_expect_hit(fd, key, value, sizes[i]);
    }
    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "puts"), (long long)n_sizes);
    ck_assert_int_eq(tc_field(line, "hits"), 2 * (long long)n_sizes);
    ck_assert_int_eq(tc_field(line, "entries"), (long long)n_sizes);
    ck_assert_int_eq(tc_field(line, "answers"), 2 * (long long)n_sizes);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_unknown_key)
{
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t short_id[16];
    uint8_t get[PROTO_V1_HEADER_LEN];
    size_t len = 0;
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    v1t_make_key(key, 2, 1);
    expect_miss(fd, key);

    /* A short session ID travels zero-padded and comes back the same way. */
    memset(short_id, 0x5a, sizeof(short_id));
    ck_assert_int_eq(proto_v1_encode(get, sizeof(get), PROTO_V1_GET, 0, short_id, sizeof(short_id),
                                     NULL, 0, &len),
                     PROTO_OK);
    ck_assert_int_eq(
        th_udp_roundtrip(fd, get, len, v1t_answer, sizeof(v1t_answer), ANSWER_TIMEOUT_MS),
        PROTO_V1_HEADER_LEN);
    ck_assert_int_eq(v1t_answer[1], PROTO_V1_NOT_FOUND);
    ck_assert_mem_eq(v1t_answer + 4, get + 4, PROTO_V1_KEY_LEN);

    ck_assert_int_eq(tc_stat_of(&d, "misses"), 2);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_remove)
{
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t other[PROTO_V1_KEY_LEN];
    uint8_t value[300];
    char line[STATS_LINE];
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    v1t_make_key(key, 3, 1);
    v1t_make_key(other, 3, 2);
    tc_fill_value(value, sizeof(value), 3);
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));
    v1t_send_op(fd, PROTO_V1_NEW, 0, other, value, sizeof(value));
    v1t_expect_hit(fd, key, value, sizeof(value));
    v1t_send_op(fd, PROTO_V1_REMOVE, 0, key, NULL, 0);
    expect_miss(fd, key);
    /* Removing removes that key only, and twice is harmless. */
    v1t_expect_hit(fd, other, value, sizeof(value));
    v1t_send_op(fd, PROTO_V1_REMOVE, 0, key, NULL, 0);
    sync_get(fd);

    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "removes"), 1);
    ck_assert_int_eq(tc_field(line, "entries"), 1);
    ck_assert_int_eq(tc_field(line, "bytes"), (long long)cache_entry_cost(V1_CACHE_KEY_LEN, 300));
    ck_assert_int_eq(tc_field(line, "malformed"), 0);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_new_replaces)
{
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t first[100];
    uint8_t second[700];
    char line[STATS_LINE];
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    v1t_make_key(key, 4, 1);
    tc_fill_value(first, sizeof(first), 41);
    tc_fill_value(second, sizeof(second), 42);
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, first, sizeof(first));
    v1t_expect_hit(fd, key, first, sizeof(first));
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, second, sizeof(second));
    v1t_expect_hit(fd, key, second, sizeof(second));

    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "puts"), 2);
    ck_assert_int_eq(tc_field(line, "entries"), 1);
    ck_assert_int_eq(tc_field(line, "bytes"),
                     (long long)cache_entry_cost(V1_CACHE_KEY_LEN, sizeof(second)));
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

/* GETs key every 50 ms until it misses or the deadline passes (a bounded
 * wait for a condition). Returns the time of the miss, or -1. */
static int64_t poll_until_miss(int fd, const uint8_t key[PROTO_V1_KEY_LEN], int64_t deadline)
{
    uint8_t get[PROTO_V1_HEADER_LEN];
    size_t len = 0;

    ck_assert_int_eq(
        proto_v1_encode(get, sizeof(get), PROTO_V1_GET, 0, key, PROTO_V1_KEY_LEN, NULL, 0, &len),
        PROTO_OK);
    while (th_now_ms() < deadline) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        ssize_t n =
            th_udp_roundtrip(fd, get, len, v1t_answer, sizeof(v1t_answer), ANSWER_TIMEOUT_MS);

        ck_assert_int_ge(n, PROTO_V1_HEADER_LEN);
        ck_assert_mem_eq(v1t_answer + 4, key, PROTO_V1_KEY_LEN);
        if (v1t_answer[1] == PROTO_V1_NOT_FOUND)
            return th_now_ms();
        ck_assert_int_eq(v1t_answer[1], PROTO_V1_FOUND);
        nanosleep(&pause, NULL);
    }
    return -1;
}

START_TEST(test_expiry)
{
    const char *const args[] = {"--max-ttl", "2", NULL};
    uint8_t short_key[PROTO_V1_KEY_LEN];   /* timeout 1 s */
    uint8_t default_key[PROTO_V1_KEY_LEN]; /* timeout 0: the daemon's max, 2 s */
    uint8_t capped_key[PROTO_V1_KEY_LEN];  /* timeout 3600 s, capped to 2 s */
    uint8_t value[200];
    char line[STATS_LINE];
    int64_t sent_at, short_gone, default_gone, capped_gone;
    th_daemon d;
    int fd;

    tc_start(&d, args);
    fd = tc_connect_v4(&d);
    v1t_make_key(short_key, 5, 1);
    v1t_make_key(default_key, 5, 2);
    v1t_make_key(capped_key, 5, 3);
    tc_fill_value(value, sizeof(value), 5);
    sent_at = th_now_ms();
    v1t_send_op(fd, PROTO_V1_NEW, 1, short_key, value, sizeof(value));
    v1t_send_op(fd, PROTO_V1_NEW, 0, default_key, value, sizeof(value));
    v1t_send_op(fd, PROTO_V1_NEW, 3600, capped_key, value, sizeof(value));
    v1t_expect_hit(fd, short_key, value, sizeof(value));
    v1t_expect_hit(fd, default_key, value, sizeof(value));
    v1t_expect_hit(fd, capped_key, value, sizeof(value));

    short_gone = poll_until_miss(fd, short_key, sent_at + 5000);
    ck_assert_msg(short_gone > 0, "a 1 s entry was still there after 5 s");
    /* 1 s on the daemon's millisecond clock: allow its truncation. */
    ck_assert_int_ge(short_gone - sent_at, 990);
    /* The longer-lived entries outlive the short one: the request's
     * timeout counts, not only the maximum. */
    if (th_now_ms() - sent_at < 1900)
        v1t_expect_hit(fd, default_key, value, sizeof(value));

    default_gone = poll_until_miss(fd, default_key, sent_at + 7000);
    capped_gone = poll_until_miss(fd, capped_key, sent_at + 7000);
    ck_assert_msg(default_gone > 0 && capped_gone > 0, "2 s entries still there after 7 s");
    ck_assert_int_ge(default_gone - sent_at, 1990);
    ck_assert_int_ge(capped_gone - sent_at, 1990);
    /* The cap held: a 3600 s request lived about as long as --max-ttl. */
    ck_assert_int_lt(capped_gone - sent_at, 6000);

    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "expired"), 3);
    ck_assert_int_eq(tc_field(line, "entries"), 0);
    ck_assert_int_eq(tc_field(line, "bytes"), 0);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

/* ---- what the network must not be able to do -------------------------- */

START_TEST(test_malformed_dropped_and_counted)
{
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t planted[PROTO_V1_KEY_LEN];
    uint8_t value[64];
    uint8_t dgram[PROTO_V1_HEADER_LEN + 64];
    char line[STATS_LINE];
    size_t len = 0;
    th_daemon d;
    int fd;
    struct {
        const char *reason;
        int expected;
    } reasons[] = {{"short", 3},    {"version", 2},     {"type", 3},
                   {"trailing", 2}, {"empty_value", 1}, {"too_long", 0}};
    int total = 0;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    v1t_make_key(key, 6, 1);
    v1t_make_key(planted, 6, 2);
    tc_fill_value(value, sizeof(value), 6);
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));

    /* short: empty, 1 byte, one byte less than a header */
    ck_assert_int_eq(proto_v1_encode(dgram, sizeof(dgram), PROTO_V1_GET, 0, key, PROTO_V1_KEY_LEN,
                                     NULL, 0, &len),
                     PROTO_OK);
    tc_send_all(fd, dgram, 0);
    tc_send_all(fd, dgram, 1);
    tc_send_all(fd, dgram, PROTO_V1_HEADER_LEN - 1);
    total += 3;
    /* version: a NEW with version 3, the first one not spoken (it must not
     * be stored), a GET with 0 */
    ck_assert_int_eq(proto_v1_encode(dgram, sizeof(dgram), PROTO_V1_NEW, 0, planted,
                                     PROTO_V1_KEY_LEN, value, sizeof(value), &len),
                     PROTO_OK);
    dgram[0] = 3;
    tc_send_all(fd, dgram, len);
    ck_assert_int_eq(proto_v1_encode(dgram, sizeof(dgram), PROTO_V1_GET, 0, key, PROTO_V1_KEY_LEN,
                                     NULL, 0, &len),
                     PROTO_OK);
    dgram[0] = 0;
    tc_send_all(fd, dgram, len);
    total += 2;
    /* type: unknown 0x03, and the two answer types sent as requests */
    dgram[0] = PROTO_V1_VERSION;
    dgram[1] = 0x03;
    tc_send_all(fd, dgram, len);
    dgram[1] = PROTO_V1_NOT_FOUND;
    tc_send_all(fd, dgram, len);
    ck_assert_int_eq(proto_v1_encode(dgram, sizeof(dgram), PROTO_V1_FOUND, 0, key, PROTO_V1_KEY_LEN,
                                     value, sizeof(value), &len),
                     PROTO_OK);
    tc_send_all(fd, dgram, len);
    total += 3;
    /* trailing: a GET and a REMOVE with bytes after the header */
    ck_assert_int_eq(proto_v1_encode(dgram, sizeof(dgram), PROTO_V1_GET, 0, key, PROTO_V1_KEY_LEN,
                                     value, 1, &len),
                     PROTO_OK);
    tc_send_all(fd, dgram, len);
    ck_assert_int_eq(proto_v1_encode(dgram, sizeof(dgram), PROTO_V1_REMOVE, 0, key,
                                     PROTO_V1_KEY_LEN, value, 10, &len),
                     PROTO_OK);
    tc_send_all(fd, dgram, len);
    total += 2;
    /* empty_value: a NEW with nothing to store */
    ck_assert_int_eq(proto_v1_encode(dgram, sizeof(dgram), PROTO_V1_NEW, 0, planted,
                                     PROTO_V1_KEY_LEN, NULL, 0, &len),
                     PROTO_OK);
    tc_send_all(fd, dgram, len);
    total += 1;

    /* None was answered (the sync GET's answer comes back first), the
     * daemon still answers, the bad REMOVE removed nothing, and the bad
     * NEWs stored nothing. */
    sync_get(fd);
    v1t_expect_hit(fd, key, value, sizeof(value));
    expect_miss(fd, planted);

    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "malformed"), total);
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        char name[64];

        snprintf(name, sizeof(name), "malformed_%s", reasons[i].reason);
        ck_assert_msg(tc_field(line, name) == reasons[i].expected, "%s: %lld, expected %d", name,
                      tc_field(line, name), reasons[i].expected);
    }
    ck_assert_int_eq(tc_field(line, "oversized"), 0);
    ck_assert_int_eq(tc_field(line, "puts"), 1);
    ck_assert_int_eq(tc_field(line, "answers"), 3);
    ck_assert_int_eq(tc_field(line, "datagrams"), total + 4);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

/* IPv4 cannot carry a UDP payload over 65507 bytes, so the sender's kernel
 * refuses one; IPv6 carries up to 65527, which is how a too-long datagram
 * reaches a daemon. */
START_TEST(test_oversized_ipv6)
{
    const char *const args[] = {"-l", "::1", NULL};
    static uint8_t big[65527];
    uint8_t key[PROTO_V1_KEY_LEN];
    char line[STATS_LINE];
    size_t len = 0;
    th_daemon d;
    int fd;

    if (!ipv6_loopback_works()) {
        fprintf(stderr, "test_oversized_ipv6: skipped: no IPv6 loopback here\n");
        return;
    }
    tc_start(&d, args);
    ck_assert_msg(log_contains(&d, "listening on [::1]:"), "IPv6 address not logged as [::1]");
    fd = udp6_connect(d.port);
    v1t_make_key(key, 7, 1);
    /* Valid headers, so only the length is wrong. */
    tc_fill_value(big, sizeof(big), 7);
    ck_assert_int_eq(proto_v1_encode(big, sizeof(big), PROTO_V1_NEW, 0, key, PROTO_V1_KEY_LEN,
                                     big + PROTO_V1_HEADER_LEN, PROTO_V1_MAX_VALUE, &len),
                     PROTO_OK);
    tc_send_all(fd, big, PROTO_MAX_DATAGRAM + 1);
    tc_send_all(fd, big, sizeof(big));
    sync_get(fd);
    expect_miss(fd, key);

    /* The largest valid datagram is still accepted over IPv6. */
    tc_send_all(fd, big, PROTO_MAX_DATAGRAM);
    v1t_expect_hit(fd, key, big + PROTO_V1_HEADER_LEN, PROTO_V1_MAX_VALUE);

    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "oversized"), 2);
    ck_assert_int_eq(tc_field(line, "malformed"), 2);
    ck_assert_int_eq(tc_field(line, "malformed_too_long"), 2);
    ck_assert_int_eq(tc_field(line, "puts"), 1);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_ipv4_refuses_oversized_send)
{
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    /* Documents why the oversized case runs over IPv6. */
    errno = 0;
    ck_assert_int_lt(send(fd, request, PROTO_MAX_DATAGRAM + 1, 0), 0);
    ck_assert_int_eq(errno, EMSGSIZE);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

/* ---- counters and limits ------------------------------------------------ */

START_TEST(test_stats_sequence)
{
    uint8_t keys[3][PROTO_V1_KEY_LEN];
    uint8_t unknown[PROTO_V1_KEY_LEN];
    uint8_t value[500];
    uint8_t replacement[250];
    char line[STATS_LINE];
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "gets"), 0);
    ck_assert_int_eq(tc_field(line, "entries"), 0);

    for (unsigned i = 0; i < 3; i++)
        v1t_make_key(keys[i], 8, i);
    v1t_make_key(unknown, 8, 99);
    tc_fill_value(value, sizeof(value), 8);
    tc_fill_value(replacement, sizeof(replacement), 9);
    for (unsigned i = 0; i < 3; i++)
        v1t_send_op(fd, PROTO_V1_NEW, 0, keys[i], value, sizeof(value));         /* puts 3 */
    v1t_send_op(fd, PROTO_V1_NEW, 0, keys[2], replacement, sizeof(replacement)); /* puts 4 */
    v1t_expect_hit(fd, keys[0], value, sizeof(value));             /* gets 1, hits 1 */
    v1t_expect_hit(fd, keys[2], replacement, sizeof(replacement)); /* gets 2, hits 2 */
    expect_miss(fd, unknown);                                      /* gets 3, misses 1 */
    v1t_send_op(fd, PROTO_V1_REMOVE, 0, keys[1], NULL, 0);         /* removes 1 */
    v1t_send_op(fd, PROTO_V1_REMOVE, 0, unknown, NULL, 0);         /* absent: not counted */
    expect_miss(fd, keys[1]);                                      /* gets 4, misses 2 */

    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "gets"), 4);
    ck_assert_int_eq(tc_field(line, "hits"), 2);
    ck_assert_int_eq(tc_field(line, "misses"), 2);
    ck_assert_int_eq(tc_field(line, "puts"), 4);
    ck_assert_int_eq(tc_field(line, "removes"), 1);
    ck_assert_int_eq(tc_field(line, "expired"), 0);
    ck_assert_int_eq(tc_field(line, "evicted"), 0);
    ck_assert_int_eq(tc_field(line, "rejected"), 0);
    ck_assert_int_eq(tc_field(line, "entries"), 2);
    ck_assert_int_eq(tc_field(line, "bytes"),
                     (long long)(cache_entry_cost(V1_CACHE_KEY_LEN, sizeof(value)) +
                                 cache_entry_cost(V1_CACHE_KEY_LEN, sizeof(replacement))));
    ck_assert_int_eq(tc_field(line, "malformed"), 0);
    ck_assert_int_eq(tc_field(line, "oversized"), 0);
    ck_assert_int_eq(tc_field(line, "datagrams"), 10);
    ck_assert_int_eq(tc_field(line, "answers"), 4);
    ck_assert_int_eq(tc_field(line, "unsent"), 0);
    /* The fields added with v2: every datagram here was v1 and accepted. */
    ck_assert_int_eq(tc_field(line, "v1"), 10);
    ck_assert_int_eq(tc_field(line, "v2"), 0);
    ck_assert_int_eq(tc_field(line, "sealed"), 0);
    ck_assert_int_eq(tc_field(line, "denied"), 0);
    ck_assert_int_eq(tc_field(line, "auth_failed"), 0);
    ck_assert_int_eq(tc_field(line, "stale"), 0);
    ck_assert_int_eq(tc_field(line, "unknown_key"), 0);
    /* The line keeps its documented shape: these twelve first, in order. */
    ck_assert_msg(strstr(line, "stats: gets=4 hits=2 misses=2 puts=4 removes=1 expired=0 "
                               "evicted=0 rejected=0 entries=2 bytes=") != NULL,
                  "stats line shape changed: %s", line);
    ck_assert_ptr_nonnull(strstr(line, " malformed=0 oversized=0"));
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_byte_budget)
{
    const char *const args[] = {"--max-memory", "65536", NULL};
    enum { STORED = 100, SIZE = 2000 };
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t value[SIZE];
    char line[STATS_LINE];
    long long entries, evicted, bytes;
    th_daemon d;
    int fd;

    tc_start(&d, args);
    fd = tc_connect_v4(&d);
    for (unsigned i = 0; i < STORED; i++) {
        v1t_make_key(key, 9, i);
        tc_fill_value(value, sizeof(value), i);
        v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));
    }
    sync_get(fd);
    tc_get_stats(&d, line, STATS_LINE);
    entries = tc_field(line, "entries");
    evicted = tc_field(line, "evicted");
    bytes = tc_field(line, "bytes");
    ck_assert_int_eq(tc_field(line, "puts"), STORED);
    ck_assert_int_gt(evicted, 0);
    ck_assert_int_gt(entries, 0);
    ck_assert_int_eq(entries + evicted, STORED);
    ck_assert_int_le(bytes, 65536);
    ck_assert_int_eq(bytes, entries * (long long)cache_entry_cost(V1_CACHE_KEY_LEN, SIZE));

    /* Least recently used went first: the newest is there, the oldest not. */
    v1t_make_key(key, 9, STORED - 1);
    tc_fill_value(value, sizeof(value), STORED - 1);
    v1t_expect_hit(fd, key, value, sizeof(value));
    v1t_make_key(key, 9, 0);
    expect_miss(fd, key);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

/* ---- several clients, many requests ----------------------------------- */

START_TEST(test_two_clients_interleaved)
{
    enum { ROUNDS = 100 };
    uint8_t key_a[PROTO_V1_KEY_LEN], key_b[PROTO_V1_KEY_LEN];
    uint8_t value[180];
    uint8_t get_a[PROTO_V1_HEADER_LEN], get_b[PROTO_V1_HEADER_LEN];
    uint8_t ans_a[PROTO_V1_HEADER_LEN + 200], ans_b[PROTO_V1_HEADER_LEN + 200];
    size_t len = 0;
    th_daemon d;
    int a, b;

    tc_start(&d, NULL);
    a = tc_connect_v4(&d);
    b = tc_connect_v4(&d);
    for (unsigned i = 0; i < ROUNDS; i++) {
        /* What one client stores, the other reads and removes. */
        v1t_make_key(key_a, 13, i);
        tc_fill_value(value, sizeof(value), i);
        v1t_send_op(a, PROTO_V1_NEW, 0, key_a, value, sizeof(value));
        v1t_expect_hit(b, key_a, value, sizeof(value));
        v1t_send_op(b, PROTO_V1_REMOVE, 0, key_a, NULL, 0);
        expect_miss(a, key_a);
    }
    /* Both ask at once; each gets its own answer. */
    v1t_make_key(key_a, 14, 1);
    v1t_make_key(key_b, 14, 2);
    tc_fill_value(value, sizeof(value), 14);
    v1t_send_op(a, PROTO_V1_NEW, 0, key_a, value, sizeof(value));
    ck_assert_int_eq(proto_v1_encode(get_a, sizeof(get_a), PROTO_V1_GET, 0, key_a, PROTO_V1_KEY_LEN,
                                     NULL, 0, &len),
                     PROTO_OK);
    ck_assert_int_eq(proto_v1_encode(get_b, sizeof(get_b), PROTO_V1_GET, 0, key_b, PROTO_V1_KEY_LEN,
                                     NULL, 0, &len),
                     PROTO_OK);
    tc_send_all(a, get_a, sizeof(get_a));
    tc_send_all(b, get_b, sizeof(get_b));
    ck_assert_int_eq(recv_answer(b, ans_b, sizeof(ans_b)), PROTO_V1_HEADER_LEN);
    ck_assert_int_eq(ans_b[1], PROTO_V1_NOT_FOUND);
    ck_assert_mem_eq(ans_b + 4, key_b, PROTO_V1_KEY_LEN);
    ck_assert_int_eq(recv_answer(a, ans_a, sizeof(ans_a)),
                     PROTO_V1_HEADER_LEN + (ssize_t)sizeof(value));
    ck_assert_int_eq(ans_a[1], PROTO_V1_FOUND);
    ck_assert_mem_eq(ans_a + 4, key_a, PROTO_V1_KEY_LEN);
    ck_assert_mem_eq(ans_a + PROTO_V1_HEADER_LEN, value, sizeof(value));

    ck_assert_int_eq(tc_stat_of(&d, "hits"), ROUNDS + 1);
    close(a);
    close(b);
    tc_stop_ok(&d);
}
END_TEST

/* Many requests in flight at once: the daemon's batched receive and send
 * must answer each, in order, to the right key. */
START_TEST(test_pipelined_burst)
{
    enum { STORED = 100, KEYSPACE = 200, TOTAL = 2000, WINDOW = 48 };
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t value[220];
    uint8_t get[PROTO_V1_HEADER_LEN];
    char line[STATS_LINE];
    size_t len = 0;
    unsigned sent = 0, received = 0;
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    for (unsigned i = 0; i < STORED; i++) {
        v1t_make_key(key, 15, i);
        tc_fill_value(value, sizeof(value), i);
        v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));
    }
    sync_get(fd);
    while (received < TOTAL) {
        ssize_t n;
        unsigned want;

        while (sent < TOTAL && sent - received < WINDOW) {
            v1t_make_key(key, 15, sent % KEYSPACE);
            ck_assert_int_eq(proto_v1_encode(get, sizeof(get), PROTO_V1_GET, 0, key,
                                             PROTO_V1_KEY_LEN, NULL, 0, &len),
                             PROTO_OK);
            tc_send_all(fd, get, len);
            sent++;
        }
        n = recv_answer(fd, v1t_answer, sizeof(v1t_answer));
        ck_assert_msg(n >= PROTO_V1_HEADER_LEN, "answer %u of %u lost", received, TOTAL);
        want = received % KEYSPACE;
        v1t_make_key(key, 15, want);
        ck_assert_mem_eq(v1t_answer + 4, key, PROTO_V1_KEY_LEN);
        if (want < STORED) {
            tc_fill_value(value, sizeof(value), want);
            ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(value));
            ck_assert_int_eq(v1t_answer[1], PROTO_V1_FOUND);
            ck_assert_mem_eq(v1t_answer + PROTO_V1_HEADER_LEN, value, sizeof(value));
        } else {
            ck_assert_int_eq(n, PROTO_V1_HEADER_LEN);
            ck_assert_int_eq(v1t_answer[1], PROTO_V1_NOT_FOUND);
        }
        received++;
    }
    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "answers"), TOTAL + 1);
    ck_assert_int_eq(tc_field(line, "hits"), TOTAL / 2);
    ck_assert_int_eq(tc_field(line, "unsent"), 0);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

/* -d logs every operation, and never a key or a value. */
START_TEST(test_debug_log_has_no_secrets)
{
    const char *const args[] = {"-d", NULL};
    static const char secret_id[PROTO_V1_KEY_LEN + 1] = "SECRETID-0123456789abcdefghijklm";
    static const char secret_value[] = "MASTERKEY-zyxwvutsrqponmlkjihgfedcba-9876543210";
    static const char *const leaks[] = {"SECRETID",     "MASTERKEY",    "534543524554",
                                        "736563726574", "4d4153544552", "6d6173746572"};
    const uint8_t *key = (const uint8_t *)secret_id;
    th_daemon d;
    int fd;

    tc_start(&d, args);
    fd = tc_connect_v4(&d);
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, (const uint8_t *)secret_value, sizeof(secret_value));
    v1t_expect_hit(fd, key, (const uint8_t *)secret_value, sizeof(secret_value));
    v1t_send_op(fd, PROTO_V1_REMOVE, 0, key, NULL, 0);
    expect_miss(fd, key);
    /* A malformed datagram full of secrets, too. */
    memcpy(request, "\x07\x00\x00\x00", 4);
    memcpy(request + 4, secret_id, PROTO_V1_KEY_LEN);
    memcpy(request + PROTO_V1_HEADER_LEN, secret_value, sizeof(secret_value));
    tc_send_all(fd, request, PROTO_V1_HEADER_LEN + sizeof(secret_value));
    sync_get(fd);
    ck_assert_int_eq(tc_stat_of(&d, "malformed"), 1);

    ck_assert_msg(log_contains(&d, "value_len="), "-d did not log the operations");
    for (size_t i = 0; i < sizeof(leaks) / sizeof(leaks[0]); i++)
        ck_assert_msg(!log_contains(&d, leaks[i]), "the log contains %s", leaks[i]);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

/* Without a key, the built-in rule admits all of loopback (127.0.0.0/8),
 * not only 127.0.0.1: a sender bound to 127.0.0.2 is served. */
START_TEST(test_loopback_sources_allowed)
{
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t value[120];
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    fd = th_udp_connect_from("127.0.0.2", d.port);
    ck_assert_int_ge(fd, 0);
    v1t_make_key(key, 17, 1);
    tc_fill_value(value, sizeof(value), 17);
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));
    v1t_expect_hit(fd, key, value, sizeof(value));
    ck_assert_int_eq(tc_stat_of(&d, "denied"), 0);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_ipv6_roundtrip)
{
    const char *const args[] = {"-l", "::1", NULL};
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t value[400];
    th_daemon d;
    int fd;

    if (!ipv6_loopback_works()) {
        fprintf(stderr, "test_ipv6_roundtrip: skipped: no IPv6 loopback here\n");
        return;
    }
    tc_start(&d, args);
    fd = udp6_connect(d.port);
    v1t_make_key(key, 16, 1);
    tc_fill_value(value, sizeof(value), 16);
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));
    v1t_expect_hit(fd, key, value, sizeof(value));
    close(fd);
    /* IPV6_V6ONLY: the IPv4 loopback does not reach it. */
    fd = tc_connect_v4(&d);
    v1t_make_key(key, 16, 2);
    ck_assert_int_eq(proto_v1_encode(request, sizeof(request), PROTO_V1_GET, 0, key,
                                     PROTO_V1_KEY_LEN, NULL, 0, NULL),
                     PROTO_OK);
    ck_assert_int_le(
        th_udp_roundtrip(fd, request, PROTO_V1_HEADER_LEN, v1t_answer, sizeof(v1t_answer), 200), 0);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

static Suite *daemon_suite(void)
{
    Suite *s = suite_create("daemon");
    TCase *tc;

    tc = tcase_create("protocol");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_new_get_roundtrip);
    tcase_add_test(tc, test_unknown_key);
    tcase_add_test(tc, test_remove);
    tcase_add_test(tc, test_new_replaces);
    tcase_add_test(tc, test_expiry);
    tcase_add_test(tc, test_ipv6_roundtrip);
    tcase_add_test(tc, test_loopback_sources_allowed);
    suite_add_tcase(s, tc);

    tc = tcase_create("hostile_input");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_malformed_dropped_and_counted);
    tcase_add_test(tc, test_oversized_ipv6);
    tcase_add_test(tc, test_ipv4_refuses_oversized_send);
    tcase_add_test(tc, test_debug_log_has_no_secrets);
    suite_add_tcase(s, tc);

    tc = tcase_create("counters_and_limits");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_stats_sequence);
    tcase_add_test(tc, test_byte_budget);
    tcase_add_test(tc, test_two_clients_interleaved);
    tcase_add_test(tc, test_pipelined_burst);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return tc_run_suite(daemon_suite());
}
