/* check_v2.c — wire format v2, sealing and the source policy, through real
 * sessiond processes on loopback.
 *
 * Every test starts its own daemon, most with a cluster key written by the
 * test (32 random bytes as hex, mode 0600, in a th_tmpdir), and builds its
 * datagrams with the v2 codec (proto_v2_seal / proto_v2_encode) and a sealer
 * holding the same key, as libsessionc would.
 *
 * What is covered:
 *   - sealed PUT/GET/DEL/PING/STATS round trips, answers sealed with the
 *     daemon's key, request IDs and keys echoed, NO_REPLY honoured, TTLs
 *     (0 = --max-ttl, larger capped), the largest value with the longest
 *     key, and many
 *     requests in flight on one socket matched by ID;
 *   - refusals, each unanswered and counted under exactly its reason:
 *     tampered (ciphertext, header, tag), wrong key (auth_failed), unknown
 *     key ID, stale timestamps (past and future), a replay after the window
 *     (and, documented as a limit, a replay inside it served again), and
 *     truncated datagrams (malformed_short, malformed_length);
 *   - policy: with a key, plaintext v1 and v2 denied; with --allow-plaintext
 *     --allow 127.0.0.1/32 plaintext served from 127.0.0.1 only (not from
 *     127.0.0.2: loopback is not implied); without a key, plaintext served
 *     from all of loopback and sealed datagrams counted as unknown_key, and
 *     from a non-loopback source (this host's own non-loopback address)
 *     denied without --allow; with it, no amplification: a plaintext v2
 *     answer is never larger than its request (GET hits and STATS answered
 *     REFUSED) while v1 GET hits are answered in full;
 *   - rollover: --key-file K1 --next-key-file K2 opens datagrams sealed with
 *     either and answers with K1; without the next key, K2 is unknown;
 *   - namespaces: v1 and v2 entries with the same bytes never meet; two v2
 *     namespaces never meet;
 *   - key files with group/other permissions or the wrong size: the daemon
 *     exits 1 with one line naming the file;
 *   - -u nobody as root: the daemon runs as nobody (/proc/PID/status), with
 *     no group 0 and the key file closed, yet serves sealed requests with a
 *     key file only root can read (it was read before the switch).
 *
 * Synchronisation without sleeps: the daemon handles one socket's
 * datagrams in order, so the answer to a sealed PING sent last proves every
 * earlier datagram was handled, and, being the first answer back, that none
 * of them was answered. The one wait for time to pass (the replay after a
 * 1 s window) polls the wall clock with a bounded deadline, like the expiry
 * tests.
 */
#include <arpa/inet.h>
#include <check.h>
#include <dirent.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <errno.h>
#include <limits.h>
#include <openssl/rand.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"
#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "proto_v2.h"
#include "v2ops.h"

#define ANSWER_TIMEOUT_MS 3000
#define STATS_LINE        2048
#define BUF               (PROTO_MAX_DATAGRAM + 64)
#define NS_LEN            PROTO_V2_NAMESPACE_LEN
#define ID_LEN            32
#define KEY_LEN           (NS_LEN + ID_LEN)

static uint8_t req[BUF];
static uint8_t ans[BUF];
static uint32_t sync_id = 0x5e000000;

/* ---- keys and datagrams ------------------------------------------------- */

typedef struct test_key {
    uint8_t bytes[PROTO_V2_CLUSTER_KEY_LEN];
    char path[PATH_MAX];
    proto_v2_sealer *sealer;
} test_key;

/* A fresh random key, written to dir/name as 64 hex digits and a newline
 * with `mode`, and a sealer holding it. */
static void key_make(test_key *k, const char *dir, const char *name, mode_t mode)
{
    ck_assert_int_eq(RAND_bytes(k->bytes, sizeof(k->bytes)), 1);
    snprintf(k->path, sizeof(k->path), "%s/%s", dir, name);
    v2t_write_key_file(k->path, k->bytes, mode);
    k->sealer = proto_v2_sealer_new(k->bytes, NULL);
    ck_assert_ptr_nonnull(k->sealer);
}

static void key_free(test_key *k)
{
    proto_v2_sealer_free(k->sealer);
    k->sealer = NULL;
}

/* A v2 key: a 16-byte namespace made from `ns` and a 32-byte session ID
 * made from `n`. */
static void make_key(uint8_t key[KEY_LEN], unsigned ns, unsigned n)
{
    for (unsigned i = 0; i < KEY_LEN; i++)
        key[i] = (uint8_t)(1 + (ns * 97u + n * 13u + i * 7u) % 251u);
    key[0] = (uint8_t)ns;
    key[NS_LEN] = (uint8_t)n;
    key[NS_LEN + 1] = (uint8_t)(n >> 8);
}

/* A request stamped with the current wall-clock time, into a BUF-sized out. */
static size_t build(proto_v2_sealer *s, uint8_t *out, uint8_t op, uint8_t flags, uint32_t id,
                    uint32_t ttl, const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len)
{
    return v2t_build(s, out, BUF, op, flags, id, ttl, key, key_len, value, value_len, tc_wall_ms());
}

/* Receives one answer and opens it with `s` (or parses it, plain, when s
 * is NULL) into *a, pointing into the global `ans`. */
static void recv_answer(int fd, proto_v2_sealer *s, proto_v2_msg *a)
{
    ssize_t n = th_udp_recv(fd, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    int rc;

    ck_assert_msg(n > 0, "no answer within %d ms (%zd)", ANSWER_TIMEOUT_MS, n);
    ck_assert_int_eq(ans[0], PROTO_V2_VERSION);
    if (s != NULL) {
        ck_assert_msg(ans[2] & PROTO_V2_F_SEALED, "a sealed request got a plain answer");
        rc = proto_v2_open(s, ans, (size_t)n, 1, tc_wall_ms(), PROTO_V2_DEFAULT_WINDOW_MS, a);
    } else {
        ck_assert_msg(!(ans[2] & PROTO_V2_F_SEALED), "a plain request got a sealed answer");
        rc = proto_v2_parse(ans, (size_t)n, 1, a);
    }
    ck_assert_msg(rc == PROTO_OK, "answer does not open/parse: %s", proto_v2_status_name(rc));
}

/* One request and its answer, checked: op, request ID, key echoed, status
 * and (want_value non-NULL) the value. */
static void call(int fd, proto_v2_sealer *s, uint8_t op, uint32_t id, uint32_t ttl,
                 const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
                 uint8_t want_status, const uint8_t *want_value, size_t want_len)
{
    proto_v2_msg a;
    size_t len = build(s, req, op, 0, id, ttl, key, key_len, value, value_len);

    tc_send_all(fd, req, len);
    recv_answer(fd, s, &a);
    ck_assert_int_eq(a.op, op | PROTO_V2_ANSWER);
    ck_assert_msg(a.request_id == id, "request ID 0x%08x echoed as 0x%08x", id, a.request_id);
    ck_assert_uint_eq(a.key_len, key_len);
    if (key_len > 0)
        ck_assert_mem_eq(a.key, key, key_len);
    ck_assert_msg(a.status == want_status, "op 0x%02x: status %u, want %u", op, a.status,
                  want_status);
    if (want_value != NULL) {
        ck_assert_uint_eq(a.value_len, want_len);
        ck_assert_msg(memcmp(a.value, want_value, want_len) == 0, "value of %zu bytes differs",
                      want_len);
    }
}

static void put(int fd, proto_v2_sealer *s, const uint8_t *key, const uint8_t *value, size_t len)
{
    call(fd, s, PROTO_V2_PUT, 0x1000, 0, key, KEY_LEN, value, len, PROTO_V2_ST_OK, NULL, 0);
}

static void expect_hit(int fd, proto_v2_sealer *s, const uint8_t *key, const uint8_t *value,
                       size_t len)
{
    call(fd, s, PROTO_V2_GET, 0x2000, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value, len);
}

static void expect_miss(int fd, proto_v2_sealer *s, const uint8_t *key)
{
    call(fd, s, PROTO_V2_GET, 0x3000, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_NOT_FOUND, NULL, 0);
}

/* A PING whose answer must be the first datagram back: everything sent
 * before it was handled and none of it answered. */
static void sync_ping(int fd, proto_v2_sealer *s)
{
    uint32_t id = ++sync_id;

    call(fd, s, PROTO_V2_PING, id, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
}

/* Nothing more is waiting on fd. */
static void expect_nothing_pending(int fd)
{
    ssize_t n = recv(fd, ans, sizeof(ans), MSG_DONTWAIT);

    ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                  "an unexpected datagram of %zd bytes is waiting", n);
}

/* ---- daemons and stats -------------------------------------------------- */

/* The refusal counters all at once: each must equal its expectation. */
typedef struct refusals {
    long long malformed, denied, auth_failed, stale, unknown_key;
} refusals;

static void expect_refusals(const char *line, refusals want)
{
    ck_assert_int_eq(tc_field(line, "malformed"), want.malformed);
    ck_assert_int_eq(tc_field(line, "denied"), want.denied);
    ck_assert_int_eq(tc_field(line, "auth_failed"), want.auth_failed);
    ck_assert_int_eq(tc_field(line, "stale"), want.stale);
    ck_assert_int_eq(tc_field(line, "unknown_key"), want.unknown_key);
}

static const char *sessiond_path(void)
{
    const char *bin = getenv("SESSIOND");

    ck_assert_msg(bin != NULL && *bin != '\0', "SESSIOND is not set");
    return bin;
}

/* A keyed daemon: its tmpdir, key, and the daemon itself. */
typedef struct keyed {
    char dir[256];
    test_key k;
    th_daemon d;
    int fd;
} keyed;

/* Starts sessiond --key-file K plus `more` (NULL-terminated, may be NULL). */
static void keyed_start(keyed *t, const char *const *more)
{
    const char *args[16] = {"--key-file"};
    size_t n = 2;

    ck_assert_int_eq(th_tmpdir(t->dir, sizeof(t->dir)), 0);
    key_make(&t->k, t->dir, "cluster.key", 0600);
    args[1] = t->k.path;
    for (size_t i = 0; more != NULL && more[i] != NULL; i++)
        args[n++] = more[i];
    args[n] = NULL;
    tc_start(&t->d, args);
    t->fd = tc_connect_v4(&t->d);
}

static void keyed_stop(keyed *t)
{
    close(t->fd);
    tc_stop_ok(&t->d);
    key_free(&t->k);
    th_rmtree(t->dir);
}

/* ---- sealed round trips ------------------------------------------------- */

START_TEST(test_sealed_roundtrips)
{
    uint8_t key[KEY_LEN], other[KEY_LEN];
    uint8_t value[950], second[140];
    char line[STATS_LINE];
    proto_v2_msg a;
    keyed t;
    size_t len;

    keyed_start(&t, NULL);
    make_key(key, 1, 1);
    make_key(other, 1, 2);
    tc_fill_value(value, sizeof(value), 1);
    tc_fill_value(second, sizeof(second), 2);

    call(t.fd, t.k.sealer, PROTO_V2_PUT, 0xA1B2C3D4, 300, key, KEY_LEN, value, sizeof(value),
         PROTO_V2_ST_OK, NULL, 0);
    call(t.fd, t.k.sealer, PROTO_V2_GET, 0xA1B2C3D5, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_OK,
         value, sizeof(value));
    expect_miss(t.fd, t.k.sealer, other);
    /* Replacing, then deleting (found, then not found). */
    put(t.fd, t.k.sealer, key, second, sizeof(second));
    expect_hit(t.fd, t.k.sealer, key, second, sizeof(second));
    call(t.fd, t.k.sealer, PROTO_V2_DEL, 7, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    call(t.fd, t.k.sealer, PROTO_V2_DEL, 8, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_NOT_FOUND, NULL,
         0);
    expect_miss(t.fd, t.k.sealer, key);
    /* PING: OK, no key, no value. */
    call(t.fd, t.k.sealer, PROTO_V2_PING, 0xFFFFFFFF, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    ck_assert_uint_eq(ans[14] << 8 | ans[15], 0); /* value length in the header */

    /* NO_REPLY: PUT and DEL act without answering; the PING's answer is
     * the first back. */
    len = build(t.k.sealer, req, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, 11, 0, other, KEY_LEN, value,
                sizeof(value));
    tc_send_all(t.fd, req, len);
    sync_ping(t.fd, t.k.sealer);
    expect_hit(t.fd, t.k.sealer, other, value, sizeof(value));
    len = build(t.k.sealer, req, PROTO_V2_DEL, PROTO_V2_F_NO_REPLY, 12, 0, other, KEY_LEN, NULL, 0);
    tc_send_all(t.fd, req, len);
    sync_ping(t.fd, t.k.sealer);
    expect_miss(t.fd, t.k.sealer, other);
    expect_nothing_pending(t.fd);

    /* STATS: the stats line, sealed, with the counters so far. */
    len = build(t.k.sealer, req, PROTO_V2_STATS, 0, 99, 0, NULL, 0, NULL, 0);
    tc_send_all(t.fd, req, len);
    recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.op, PROTO_V2_STATS | PROTO_V2_ANSWER);
    ck_assert_int_eq(a.status, PROTO_V2_ST_OK);
    ck_assert_int_eq(a.request_id, 99);
    ck_assert_uint_gt(a.value_len, 0);
    {
        char text[STATS_LINE];

        ck_assert_uint_lt(a.value_len, sizeof(text));
        memcpy(text, a.value, a.value_len);
        text[a.value_len] = '\0';
        ck_assert_msg(strncmp(text, "gets=", 5) == 0, "STATS value: %s", text);
        ck_assert_int_eq(th_stat(text, "puts"), 3);
        ck_assert_int_eq(th_stat(text, "sealed"), 16); /* this STATS is counted already */
        ck_assert_int_eq(th_stat(text, "v2"), 16);
        ck_assert_int_eq(th_stat(text, "v1"), 0);
    }

    tc_get_stats(&t.d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "puts"), 3);
    ck_assert_int_eq(tc_field(line, "hits"), 3);
    ck_assert_int_eq(tc_field(line, "misses"), 3);
    ck_assert_int_eq(tc_field(line, "removes"), 2);
    ck_assert_int_eq(tc_field(line, "sealed"), 16);
    ck_assert_int_eq(tc_field(line, "answers"), 14); /* 16 less the two NO_REPLY */
    ck_assert_int_eq(tc_field(line, "datagrams"), 16);
    ck_assert_int_eq(tc_field(line, "entries"), 0);
    expect_refusals(line, (refusals){0, 0, 0, 0, 0});
    keyed_stop(&t);
}
END_TEST

/* The largest value a sealed datagram carries, under the longest key; and
 * a value one byte longer is refused by the codec before it is sent. */
START_TEST(test_largest_value)
{
    static uint8_t value[PROTO_V2_MAX_VALUE + 1];
    uint8_t key[PROTO_V2_MAX_KEY];
    proto_v2_msg m;
    size_t len = 0;
    keyed t;

    keyed_start(&t, NULL);
    memset(key, 0x42, sizeof(key));
    tc_fill_value(value, PROTO_V2_MAX_VALUE, 3);
    call(t.fd, t.k.sealer, PROTO_V2_PUT, 1, 0, key, sizeof(key), value, PROTO_V2_MAX_VALUE,
         PROTO_V2_ST_OK, NULL, 0);
    call(t.fd, t.k.sealer, PROTO_V2_GET, 2, 0, key, sizeof(key), NULL, 0, PROTO_V2_ST_OK, value,
         PROTO_V2_MAX_VALUE);
    memset(&m, 0, sizeof(m));
    m.op = PROTO_V2_PUT;
    m.key = key;
    m.key_len = sizeof(key);
    m.value = value;
    m.value_len = PROTO_V2_MAX_VALUE + 1;
    ck_assert_int_ne(proto_v2_seal(t.k.sealer, req, BUF, &m, &len), PROTO_OK);
    keyed_stop(&t);
}
END_TEST

/* The index of `id` in ids[0..n), or -1. */
static int find_id(const uint32_t *ids, int n, uint32_t id)
{
    for (int i = 0; i < n; i++) {
        if (ids[i] == id)
            return i;
    }
    return -1;
}

/* Many requests in flight on one socket, each answered once with its ID. */
START_TEST(test_request_ids_echoed)
{
    enum { N = 64 };
    uint8_t key[KEY_LEN];
    uint8_t value[200];
    uint32_t ids[N];
    uint32_t base;
    int seen[N];
    keyed t;

    keyed_start(&t, NULL);
    ck_assert_int_eq(RAND_bytes((uint8_t *)&base, sizeof(base)), 1);
    tc_fill_value(value, sizeof(value), 4);
    for (unsigned i = 0; i < N; i += 2) {
        make_key(key, 4, i);
        put(t.fd, t.k.sealer, key, value, sizeof(value));
    }
    for (unsigned i = 0; i < N; i++) {
        size_t len;

        ids[i] = base + i * 0x01000193u; /* distinct, and not in order */
        make_key(key, 4, i);
        len = build(t.k.sealer, req, PROTO_V2_GET, 0, ids[i], 0, key, KEY_LEN, NULL, 0);
        tc_send_all(t.fd, req, len);
        seen[i] = 0;
    }
    for (unsigned got = 0; got < N; got++) {
        proto_v2_msg a;
        int i;

        recv_answer(t.fd, t.k.sealer, &a);
        i = find_id(ids, N, a.request_id);
        ck_assert_msg(i >= 0, "answer with unknown request ID 0x%08x", a.request_id);
        ck_assert_int_eq(seen[i], 0);
        seen[i] = 1;
        make_key(key, 4, (unsigned)i);
        ck_assert_mem_eq(a.key, key, KEY_LEN);
        ck_assert_int_eq(a.status, i % 2 == 0 ? PROTO_V2_ST_OK : PROTO_V2_ST_NOT_FOUND);
    }
    expect_nothing_pending(t.fd);
    keyed_stop(&t);
}
END_TEST

/* TTL 0 means --max-ttl, a larger one is capped by it. (REFUSED cannot be
 * provoked over the wire: the largest entry a datagram makes, 65509 bytes
 * with its overhead, fits the smallest budget, 64 KiB; the fuzz harness
 * covers it with a smaller cache.) */
START_TEST(test_ttl)
{
    const char *const more[] = {"--max-ttl", "1", NULL};
    uint8_t key[KEY_LEN], capped[KEY_LEN];
    uint8_t value[100];
    char line[STATS_LINE];
    uint64_t sent, deadline;
    int gone = 0;
    keyed t;

    keyed_start(&t, more);
    make_key(key, 5, 1);
    make_key(capped, 5, 2);
    tc_fill_value(value, sizeof(value), 5);
    sent = tc_wall_ms();
    call(t.fd, t.k.sealer, PROTO_V2_PUT, 1, 0, key, KEY_LEN, value, sizeof(value), PROTO_V2_ST_OK,
         NULL, 0);
    call(t.fd, t.k.sealer, PROTO_V2_PUT, 2, 3600, capped, KEY_LEN, value, sizeof(value),
         PROTO_V2_ST_OK, NULL, 0);
    expect_hit(t.fd, t.k.sealer, capped, value, sizeof(value));
    /* Both gone within a bounded wait, and not before 1 s. */
    deadline = sent + 5000;
    while (!gone && tc_wall_ms() < deadline) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        proto_v2_msg a;
        size_t len = build(t.k.sealer, req, PROTO_V2_GET, 0, 3, 0, capped, KEY_LEN, NULL, 0);

        tc_send_all(t.fd, req, len);
        recv_answer(t.fd, t.k.sealer, &a);
        gone = a.status == PROTO_V2_ST_NOT_FOUND;
        if (!gone)
            nanosleep(&pause, NULL);
    }
    ck_assert_msg(gone, "a TTL of 3600 s was not capped to --max-ttl 1");
    ck_assert_uint_ge(tc_wall_ms() - sent, 990);
    expect_miss(t.fd, t.k.sealer, key);
    tc_get_stats(&t.d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "expired"), 2);
    ck_assert_int_eq(tc_field(line, "entries"), 0);
    keyed_stop(&t);
}
END_TEST

/* ---- refusals ----------------------------------------------------------- */

START_TEST(test_tampered_and_wrong_keys)
{
    uint8_t key[KEY_LEN];
    uint8_t value[300];
    uint8_t our_id[PROTO_V2_KEY_ID_LEN];
    char other_dir[256];
    char line[STATS_LINE];
    test_key other;
    size_t len;
    keyed t;

    keyed_start(&t, NULL);
    ck_assert_int_eq(th_tmpdir(other_dir, sizeof(other_dir)), 0);
    key_make(&other, other_dir, "other.key", 0600);
    ck_assert_int_eq(proto_v2_key_id(t.k.bytes, our_id), 0);
    make_key(key, 6, 1);
    tc_fill_value(value, sizeof(value), 6);

    /* Tampered PUTs: a ciphertext byte, a header byte (associated data),
     * the timestamp, the tag. Each must be refused as auth_failed, and
     * store nothing. */
    for (int which = 0; which < 4; which++) {
        static const size_t offsets[] = {40 + 5, 8, 27, 0};
        size_t at;

        len = build(t.k.sealer, req, PROTO_V2_PUT, 0, 100 + (uint32_t)which, 0, key, KEY_LEN, value,
                    sizeof(value));
        at = which == 3 ? len - 1 : offsets[which];
        req[at] ^= 0x01;
        tc_send_all(t.fd, req, len);
    }
    /* Wrong key: sealed with another key but carrying our key ID. */
    len = build(other.sealer, req, PROTO_V2_PUT, 0, 200, 0, key, KEY_LEN, value, sizeof(value));
    memcpy(req + 16, our_id, sizeof(our_id));
    tc_send_all(t.fd, req, len);
    /* Unknown key ID: sealed with another key, its own ID. */
    len = build(other.sealer, req, PROTO_V2_GET, 0, 201, 0, key, KEY_LEN, NULL, 0);
    tc_send_all(t.fd, req, len);
    /* Our datagram with the key ID changed: unknown too. */
    len = build(t.k.sealer, req, PROTO_V2_GET, 0, 202, 0, key, KEY_LEN, NULL, 0);
    req[16] ^= 0x80;
    tc_send_all(t.fd, req, len);

    sync_ping(t.fd, t.k.sealer);
    expect_miss(t.fd, t.k.sealer, key);
    expect_nothing_pending(t.fd);
    tc_get_stats(&t.d, line, STATS_LINE);
    expect_refusals(line, (refusals){.auth_failed = 5, .unknown_key = 2});
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    ck_assert_int_eq(tc_field(line, "answers"), 2);
    ck_assert_int_eq(tc_field(line, "datagrams"), 9);
    key_free(&other);
    th_rmtree(other_dir);
    keyed_stop(&t);
}
END_TEST

/* Timestamps outside the window, either side, are stale; inside it (even
 * 20 s off, within the default 30 s) they are served. */
START_TEST(test_stale_timestamps)
{
    uint8_t key[KEY_LEN];
    uint8_t value[64];
    char line[STATS_LINE];
    proto_v2_msg a;
    uint64_t now;
    size_t len;
    keyed t;

    keyed_start(&t, NULL);
    make_key(key, 7, 1);
    tc_fill_value(value, sizeof(value), 7);
    now = tc_wall_ms();
    len = v2t_build(t.k.sealer, req, BUF, PROTO_V2_PUT, 0, 1, 0, key, KEY_LEN, value, sizeof(value),
                    now - 60000);
    tc_send_all(t.fd, req, len);
    len = v2t_build(t.k.sealer, req, BUF, PROTO_V2_PUT, 0, 2, 0, key, KEY_LEN, value, sizeof(value),
                    now + 60000);
    tc_send_all(t.fd, req, len);
    len = v2t_build(t.k.sealer, req, BUF, PROTO_V2_GET, 0, 3, 0, key, KEY_LEN, NULL, 0, 0);
    tc_send_all(t.fd, req, len);
    sync_ping(t.fd, t.k.sealer);
    expect_miss(t.fd, t.k.sealer, key);

    len = v2t_build(t.k.sealer, req, BUF, PROTO_V2_PING, 0, 4, 0, NULL, 0, NULL, 0, now - 20000);
    tc_send_all(t.fd, req, len);
    recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.request_id, 4);

    tc_get_stats(&t.d, line, STATS_LINE);
    expect_refusals(line, (refusals){.stale = 3});
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    keyed_stop(&t);
}
END_TEST

/* A captured datagram replayed: inside the window it is served again (the
 * documented limit: there is no memory of nonces), after it, stale. */
START_TEST(test_replay_after_window)
{
    const char *const more[] = {"--window", "1", NULL};
    uint8_t key[KEY_LEN];
    uint8_t captured[256];
    char line[STATS_LINE];
    uint64_t ts, deadline;
    proto_v2_msg a;
    size_t len;
    keyed t;

    keyed_start(&t, more);
    make_key(key, 8, 1);
    ts = tc_wall_ms();
    len = v2t_build(t.k.sealer, captured, BUF, PROTO_V2_GET, 0, 77, 0, key, KEY_LEN, NULL, 0, ts);
    tc_send_all(t.fd, captured, len);
    recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.request_id, 77);
    tc_send_all(t.fd, captured, len);
    recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.request_id, 77);

    /* Wait (bounded) until the 1 s window has passed for that timestamp. */
    deadline = ts + 5000;
    while (tc_wall_ms() <= ts + 1000 + 50 && tc_wall_ms() < deadline) {
        struct timespec pause = {0, 20 * 1000 * 1000};

        nanosleep(&pause, NULL);
    }
    tc_send_all(t.fd, captured, len);
    sync_ping(t.fd, t.k.sealer);
    expect_nothing_pending(t.fd);
    tc_get_stats(&t.d, line, STATS_LINE);
    expect_refusals(line, (refusals){.stale = 1});
    ck_assert_int_eq(tc_field(line, "gets"), 2);
    keyed_stop(&t);
}
END_TEST

START_TEST(test_truncated)
{
    uint8_t key[KEY_LEN];
    uint8_t value[500];
    static uint8_t full[BUF];
    char line[STATS_LINE];
    size_t len;
    static const size_t short_cuts[] = {3, 10, 15};
    long long shorts = 0, lengths = 0;
    keyed t;

    keyed_start(&t, NULL);
    make_key(key, 9, 1);
    tc_fill_value(value, sizeof(value), 9);
    len = build(t.k.sealer, full, PROTO_V2_PUT, 0, 1, 0, key, KEY_LEN, value, sizeof(value));
    /* Shorter than the header: short. */
    for (size_t i = 0; i < sizeof(short_cuts) / sizeof(short_cuts[0]); i++, shorts++)
        tc_send_all(t.fd, full, short_cuts[i]);
    /* A header, but fewer bytes than it announces: length. */
    for (size_t cut = 16; cut < len; cut += 37, lengths++)
        tc_send_all(t.fd, full, cut);
    tc_send_all(t.fd, full, len - 1);
    lengths++;
    /* One byte too many is a length error as well. */
    full[len] = 0;
    tc_send_all(t.fd, full, len + 1);
    lengths++;
    sync_ping(t.fd, t.k.sealer);
    expect_miss(t.fd, t.k.sealer, key);
    expect_nothing_pending(t.fd);

    tc_get_stats(&t.d, line, STATS_LINE);
    expect_refusals(line, (refusals){.malformed = shorts + lengths});
    ck_assert_int_eq(tc_field(line, "malformed_short"), shorts);
    ck_assert_int_eq(tc_field(line, "malformed_length"), lengths);
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    keyed_stop(&t);
}
END_TEST

/* ---- policy ------------------------------------------------------------- */

/* Encodes a v1 datagram into req; returns its length. */
static size_t v1_build(uint8_t type, const uint8_t *id, const uint8_t *value, size_t value_len)
{
    size_t len = 0;

    ck_assert_int_eq(
        proto_v1_encode(req, BUF, type, 0, id, PROTO_V1_KEY_LEN, value, value_len, &len), PROTO_OK);
    return len;
}

START_TEST(test_plaintext_refused_with_key)
{
    uint8_t key[KEY_LEN];
    uint8_t value[100];
    char line[STATS_LINE];
    size_t len;
    keyed t;

    keyed_start(&t, NULL);
    ck_assert_int_eq(th_daemon_wait_log(&t.d, "plaintext refused", 0, 1000), 0);
    make_key(key, 10, 1);
    tc_fill_value(value, sizeof(value), 10);
    len = v1_build(PROTO_V1_NEW, key, value, sizeof(value));
    tc_send_all(t.fd, req, len);
    len = v1_build(PROTO_V1_GET, key, NULL, 0);
    tc_send_all(t.fd, req, len);
    len = v1_build(PROTO_V1_REMOVE, key, NULL, 0);
    tc_send_all(t.fd, req, len);
    len = build(NULL, req, PROTO_V2_PUT, 0, 1, 0, key, KEY_LEN, value, sizeof(value));
    tc_send_all(t.fd, req, len);
    len = build(NULL, req, PROTO_V2_GET, 0, 2, 0, key, KEY_LEN, NULL, 0);
    tc_send_all(t.fd, req, len);
    len = build(NULL, req, PROTO_V2_PING, 0, 3, 0, NULL, 0, NULL, 0);
    tc_send_all(t.fd, req, len);
    len = build(NULL, req, PROTO_V2_STATS, 0, 4, 0, NULL, 0, NULL, 0);
    tc_send_all(t.fd, req, len);
    sync_ping(t.fd, t.k.sealer);
    expect_miss(t.fd, t.k.sealer, key);
    expect_nothing_pending(t.fd);

    tc_get_stats(&t.d, line, STATS_LINE);
    expect_refusals(line, (refusals){.denied = 7});
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    ck_assert_int_eq(tc_field(line, "entries"), 0);
    ck_assert_int_eq(tc_field(line, "v1"), 0);
    ck_assert_int_eq(tc_field(line, "v2"), 2);
    keyed_stop(&t);
}
END_TEST

/* --allow-plaintext --allow 127.0.0.1/32: plaintext from 127.0.0.1 is
 * served (answers in plaintext), from 127.0.0.2 denied (loopback is not
 * implied with a key); sealed datagrams are served from both. */
START_TEST(test_allow_plaintext)
{
    const char *const more[] = {"--allow-plaintext", "--allow", "127.0.0.1/32", NULL};
    uint8_t id[PROTO_V1_KEY_LEN];
    uint8_t key[KEY_LEN];
    uint8_t value[180];
    char line[STATS_LINE];
    ssize_t n;
    size_t len;
    keyed t;
    int other;

    keyed_start(&t, more);
    ck_assert_int_eq(th_daemon_wait_log(&t.d, "plaintext from 127.0.0.1/32", 0, 1000), 0);
    memset(id, 0x31, sizeof(id));
    make_key(key, 11, 1);
    tc_fill_value(value, sizeof(value), 11);

    /* v1 from 127.0.0.1, as stunnel would. */
    len = v1_build(PROTO_V1_NEW, id, value, sizeof(value));
    tc_send_all(t.fd, req, len);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(t.fd, req, len, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(value));
    ck_assert_int_eq(ans[1], PROTO_V1_FOUND);
    ck_assert_mem_eq(ans + PROTO_V1_HEADER_LEN, value, sizeof(value));
    /* Plain v2 from 127.0.0.1, answered plainly. */
    call(t.fd, NULL, PROTO_V2_PUT, 1, 0, key, KEY_LEN, value, sizeof(value), PROTO_V2_ST_OK, NULL,
         0);
    call(t.fd, NULL, PROTO_V2_GET, 2, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value,
         sizeof(value));
    call(t.fd, NULL, PROTO_V2_PING, 3, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    /* Sealed still works, and sees the same v2 entry. */
    expect_hit(t.fd, t.k.sealer, key, value, sizeof(value));

    /* 127.0.0.2: plaintext denied, sealed served. */
    other = th_udp_connect_from("127.0.0.2", t.d.port);
    ck_assert_int_ge(other, 0);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    tc_send_all(other, req, len);
    len = build(NULL, req, PROTO_V2_GET, 0, 4, 0, key, KEY_LEN, NULL, 0);
    tc_send_all(other, req, len);
    sync_ping(other, t.k.sealer);
    expect_hit(other, t.k.sealer, key, value, sizeof(value));
    expect_nothing_pending(other);
    close(other);

    tc_get_stats(&t.d, line, STATS_LINE);
    expect_refusals(line, (refusals){.denied = 2});
    ck_assert_int_eq(tc_field(line, "v1"), 2);
    ck_assert_int_eq(tc_field(line, "v2"), 6);
    ck_assert_int_eq(tc_field(line, "sealed"), 3);
    keyed_stop(&t);
}
END_TEST

/* Without a key: plaintext from all of loopback; a sealed datagram cannot
 * be opened and is counted as unknown_key, unanswered. */
START_TEST(test_no_key_policy)
{
    uint8_t key[KEY_LEN];
    uint8_t value[90];
    char dir[256];
    char line[STATS_LINE];
    test_key k;
    th_daemon d;
    size_t len;
    int fd, other;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    key_make(&k, dir, "unused.key", 0600);
    tc_start(&d, NULL);
    ck_assert_int_eq(th_daemon_wait_log(&d, "plaintext from loopback", 0, 1000), 0);
    fd = tc_connect_v4(&d);
    other = th_udp_connect_from("127.0.0.2", d.port);
    ck_assert_int_ge(other, 0);
    make_key(key, 12, 1);
    tc_fill_value(value, sizeof(value), 12);
    call(fd, NULL, PROTO_V2_PUT, 1, 0, key, KEY_LEN, value, sizeof(value), PROTO_V2_ST_OK, NULL, 0);
    call(other, NULL, PROTO_V2_GET, 2, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value,
         sizeof(value));
    len = build(k.sealer, req, PROTO_V2_GET, 0, 3, 0, key, KEY_LEN, NULL, 0);
    tc_send_all(fd, req, len);
    sync_ping(fd, NULL);
    expect_nothing_pending(fd);

    tc_get_stats(&d, line, STATS_LINE);
    expect_refusals(line, (refusals){.unknown_key = 1});
    ck_assert_int_eq(tc_field(line, "v2"), 3);
    ck_assert_int_eq(tc_field(line, "sealed"), 0);
    close(fd);
    close(other);
    tc_stop_ok(&d);
    key_free(&k);
    th_rmtree(dir);
}
END_TEST

/* A non-loopback IPv4 address of this host into buf, or -1 if none. */
static int non_loopback_ipv4(char *buf, size_t cap)
{
    struct ifaddrs *list, *ifa;
    int found = -1;

    if (getifaddrs(&list) != 0)
        return -1;
    for (ifa = list; ifa != NULL && found != 0; ifa = ifa->ifa_next) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ifa->ifa_addr;

        if (sin == NULL || sin->sin_family != AF_INET || !(ifa->ifa_flags & IFF_UP) ||
            (ifa->ifa_flags & IFF_LOOPBACK) || (ntohl(sin->sin_addr.s_addr) >> 24) == 127)
            continue;
        if (inet_ntop(AF_INET, &sin->sin_addr, buf, (socklen_t)cap) != NULL)
            found = 0;
    }
    freeifaddrs(list);
    return found;
}

/* A UDP socket bound to src, connected to dst:port. */
static int udp_from_to(const char *src, const char *dst, int port)
{
    struct sockaddr_in local, remote;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&local, 0, sizeof(local));
    local.sin_family = AF_INET;
    ck_assert_int_eq(inet_pton(AF_INET, src, &local.sin_addr), 1);
    memset(&remote, 0, sizeof(remote));
    remote.sin_family = AF_INET;
    remote.sin_port = htons((uint16_t)port);
    ck_assert_int_eq(inet_pton(AF_INET, dst, &remote.sin_addr), 1);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&local, sizeof(local)), 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&remote, sizeof(remote)), 0);
    return fd;
}

/* Senders that are not loopback, using this host's own non-loopback
 * address (the datagrams still travel over lo, but their source is not
 * 127.0.0.0/8). Without a key and without --allow they are denied; with
 * --allow they are served, but a plaintext v2 answer is never larger than
 * its request (GET hit and STATS answered REFUSED, no value), while v1 GET
 * hits are answered in full (the documented exception) and loopback
 * senders get everything. */
START_TEST(test_non_loopback_source)
{
    char ip[INET_ADDRSTRLEN], rule[INET_ADDRSTRLEN + 4];
    uint8_t id[PROTO_V1_KEY_LEN];
    uint8_t key[KEY_LEN];
    uint8_t value[200];
    char line[STATS_LINE];
    proto_v2_msg a;
    th_daemon d;
    ssize_t n;
    size_t len;
    int fd, lo;

    if (non_loopback_ipv4(ip, sizeof(ip)) != 0) {
        fprintf(stderr, "test_non_loopback_source: skipped: no non-loopback IPv4 address\n");
        return;
    }
    memset(id, 0x44, sizeof(id));
    make_key(key, 14, 1);
    tc_fill_value(value, sizeof(value), 14);
    {
        const char *const args[] = {"-l", ip, NULL};

        tc_start(&d, args);
    }
    fd = udp_from_to(ip, ip, d.port);
    lo = udp_from_to("127.0.0.1", ip, d.port);
    len = build(NULL, req, PROTO_V2_PING, 0, 1, 0, NULL, 0, NULL, 0);
    tc_send_all(fd, req, len);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    tc_send_all(fd, req, len);
    sync_ping(lo, NULL);
    expect_nothing_pending(fd);
    tc_get_stats(&d, line, STATS_LINE);
    expect_refusals(line, (refusals){.denied = 2});
    close(fd);
    close(lo);
    tc_stop_ok(&d);

    snprintf(rule, sizeof(rule), "%s/32", ip);
    {
        const char *const args[] = {"-l", ip, "--allow", rule, NULL};

        tc_start(&d, args);
    }
    fd = udp_from_to(ip, ip, d.port);
    lo = udp_from_to("127.0.0.1", ip, d.port);
    call(fd, NULL, PROTO_V2_PUT, 1, 0, key, KEY_LEN, value, sizeof(value), PROTO_V2_ST_OK, NULL, 0);
    len = build(NULL, req, PROTO_V2_GET, 0, 2, 0, key, KEY_LEN, NULL, 0);
    tc_send_all(fd, req, len);
    n = th_udp_recv(fd, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, (ssize_t)len); /* no larger than the request */
    ck_assert_int_eq(proto_v2_parse(ans, (size_t)n, 1, &a), PROTO_OK);
    ck_assert_int_eq(a.status, PROTO_V2_ST_REFUSED);
    ck_assert_int_eq(a.request_id, 2);
    len = build(NULL, req, PROTO_V2_STATS, 0, 3, 0, NULL, 0, NULL, 0);
    tc_send_all(fd, req, len);
    n = th_udp_recv(fd, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V2_HEADER_LEN);
    ck_assert_int_eq(ans[3], PROTO_V2_ST_REFUSED);
    call(fd, NULL, PROTO_V2_PING, 4, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    /* v1: the exception, stunnel cannot seal. */
    len = v1_build(PROTO_V1_NEW, id, value, sizeof(value));
    tc_send_all(fd, req, len);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, req, len, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(value));
    ck_assert_int_eq(ans[1], PROTO_V1_FOUND);
    /* Loopback: the full answer. */
    call(lo, NULL, PROTO_V2_GET, 5, 0, key, KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value, sizeof(value));
    tc_get_stats(&d, line, STATS_LINE);
    expect_refusals(line, (refusals){0, 0, 0, 0, 0});
    ck_assert_int_eq(tc_field(line, "hits"), 3);
    close(fd);
    close(lo);
    tc_stop_ok(&d);
}
END_TEST

/* ---- key rollover ------------------------------------------------------- */

START_TEST(test_rollover)
{
    char dir[256];
    char line[STATS_LINE];
    test_key k1, k2;
    uint8_t id1[PROTO_V2_KEY_ID_LEN];
    uint8_t key[KEY_LEN];
    uint8_t value[256];
    proto_v2_sealer *both;
    proto_v2_msg a;
    th_daemon d;
    ssize_t n;
    size_t len;
    int fd;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    key_make(&k1, dir, "k1", 0600);
    key_make(&k2, dir, "k2", 0600);
    ck_assert_int_eq(proto_v2_key_id(k1.bytes, id1), 0);
    make_key(key, 13, 1);
    tc_fill_value(value, sizeof(value), 13);
    {
        const char *const args[] = {"--key-file", k1.path, "--next-key-file", k2.path, NULL};

        tc_start(&d, args);
    }
    fd = tc_connect_v4(&d);
    /* A sender already on K2: the daemon opens it and answers with K1. */
    len = build(k2.sealer, req, PROTO_V2_PUT, 0, 1, 0, key, KEY_LEN, value, sizeof(value));
    tc_send_all(fd, req, len);
    n = th_udp_recv(fd, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_gt(n, 40);
    ck_assert_mem_eq(ans + 16, id1, sizeof(id1));
    /* Opening the answer: K2 alone cannot, K1 can. */
    {
        static uint8_t copy[BUF];

        memcpy(copy, ans, (size_t)n);
        ck_assert_int_eq(proto_v2_open(k2.sealer, copy, (size_t)n, 1, tc_wall_ms(),
                                       PROTO_V2_DEFAULT_WINDOW_MS, &a),
                         PROTO_ERR_UNKNOWN_KEY);
    }
    ck_assert_int_eq(
        proto_v2_open(k1.sealer, ans, (size_t)n, 1, tc_wall_ms(), PROTO_V2_DEFAULT_WINDOW_MS, &a),
        PROTO_OK);
    ck_assert_int_eq(a.status, PROTO_V2_ST_OK);
    /* A sender still on K1 reads what the K2 sender stored. */
    expect_hit(fd, k1.sealer, key, value, sizeof(value));
    /* A receiver that holds both (K1 current, K2 next) reads the answers
     * to K2-sealed requests. */
    both = proto_v2_sealer_new(k1.bytes, k2.bytes);
    ck_assert_ptr_nonnull(both);
    len = build(k2.sealer, req, PROTO_V2_GET, 0, 2, 0, key, KEY_LEN, NULL, 0);
    tc_send_all(fd, req, len);
    recv_answer(fd, both, &a);
    ck_assert_int_eq(a.request_id, 2);
    ck_assert_uint_eq(a.value_len, sizeof(value));
    proto_v2_sealer_free(both);
    tc_get_stats(&d, line, STATS_LINE);
    expect_refusals(line, (refusals){0, 0, 0, 0, 0});
    ck_assert_int_eq(tc_field(line, "sealed"), 3);
    close(fd);
    tc_stop_ok(&d);

    /* Without --next-key-file, K2 is just an unknown key. */
    {
        const char *const args[] = {"--key-file", k1.path, NULL};

        tc_start(&d, args);
    }
    fd = tc_connect_v4(&d);
    len = build(k2.sealer, req, PROTO_V2_GET, 0, 3, 0, key, KEY_LEN, NULL, 0);
    tc_send_all(fd, req, len);
    sync_ping(fd, k1.sealer);
    tc_get_stats(&d, line, STATS_LINE);
    expect_refusals(line, (refusals){.unknown_key = 1});
    close(fd);
    tc_stop_ok(&d);
    key_free(&k1);
    key_free(&k2);
    th_rmtree(dir);
}
END_TEST

/* ---- namespaces --------------------------------------------------------- */

/* The same 32 bytes as a v1 ID and as a v2 key name two different entries. */
START_TEST(test_v1_v2_separated)
{
    uint8_t id[PROTO_V1_KEY_LEN];
    uint8_t v1_value[100], v2_value[120];
    char line[STATS_LINE];
    th_daemon d;
    ssize_t n;
    size_t len;
    int fd;

    tc_start(&d, NULL);
    fd = tc_connect_v4(&d);
    memset(id, 0x77, sizeof(id));
    tc_fill_value(v1_value, sizeof(v1_value), 14);
    tc_fill_value(v2_value, sizeof(v2_value), 15);
    len = v1_build(PROTO_V1_NEW, id, v1_value, sizeof(v1_value));
    tc_send_all(fd, req, len);
    call(fd, NULL, PROTO_V2_GET, 1, 0, id, sizeof(id), NULL, 0, PROTO_V2_ST_NOT_FOUND, NULL, 0);
    call(fd, NULL, PROTO_V2_PUT, 2, 0, id, sizeof(id), v2_value, sizeof(v2_value), PROTO_V2_ST_OK,
         NULL, 0);
    call(fd, NULL, PROTO_V2_GET, 3, 0, id, sizeof(id), NULL, 0, PROTO_V2_ST_OK, v2_value,
         sizeof(v2_value));
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, req, len, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(v1_value));
    ck_assert_mem_eq(ans + PROTO_V1_HEADER_LEN, v1_value, sizeof(v1_value));
    /* Deleting one leaves the other. */
    call(fd, NULL, PROTO_V2_DEL, 4, 0, id, sizeof(id), NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, req, len, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(v1_value));
    len = v1_build(PROTO_V1_REMOVE, id, NULL, 0);
    tc_send_all(fd, req, len);
    call(fd, NULL, PROTO_V2_PUT, 5, 0, id, sizeof(id), v2_value, sizeof(v2_value), PROTO_V2_ST_OK,
         NULL, 0);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, req, len, ans, sizeof(ans), ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN);
    ck_assert_int_eq(ans[1], PROTO_V1_NOT_FOUND);
    tc_get_stats(&d, line, STATS_LINE);
    ck_assert_int_eq(tc_field(line, "entries"), 1);
    ck_assert_int_eq(tc_field(line, "bytes"),
                     (long long)cache_entry_cost(1 + sizeof(id), sizeof(v2_value)));
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_two_namespaces_separated)
{
    uint8_t a_key[KEY_LEN], b_key[KEY_LEN];
    uint8_t a_value[150], b_value[160];
    keyed t;

    keyed_start(&t, NULL);
    make_key(a_key, 20, 1);
    memcpy(b_key, a_key, KEY_LEN);
    b_key[0] = 21; /* same session ID, another namespace */
    tc_fill_value(a_value, sizeof(a_value), 20);
    tc_fill_value(b_value, sizeof(b_value), 21);
    put(t.fd, t.k.sealer, a_key, a_value, sizeof(a_value));
    expect_miss(t.fd, t.k.sealer, b_key);
    put(t.fd, t.k.sealer, b_key, b_value, sizeof(b_value));
    expect_hit(t.fd, t.k.sealer, a_key, a_value, sizeof(a_value));
    expect_hit(t.fd, t.k.sealer, b_key, b_value, sizeof(b_value));
    call(t.fd, t.k.sealer, PROTO_V2_DEL, 1, 0, b_key, KEY_LEN, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    expect_hit(t.fd, t.k.sealer, a_key, a_value, sizeof(a_value));
    expect_miss(t.fd, t.k.sealer, b_key);
    keyed_stop(&t);
}
END_TEST

/* ---- key files and privileges ------------------------------------------- */

/* Runs sessiond with one key file and expects status 1 and one line naming
 * the file. */
static void expect_bad_key_file(const char *flag, const char *path, const char *good)
{
    const char *argv[12] = {sessiond_path(), "-f", "-l", "127.0.0.1", "-p", "0"};
    size_t n = 6;
    char out[4096];
    char *newline;
    int rc;

    if (good != NULL) {
        argv[n++] = "--key-file";
        argv[n++] = good;
    }
    argv[n++] = flag;
    argv[n++] = path;
    argv[n] = NULL;
    rc = th_run(argv, out, sizeof(out));
    newline = strchr(out, '\n');
    ck_assert_msg(rc == 1, "%s %s: status %d: %s", flag, path, rc, out);
    ck_assert_msg(newline != NULL && newline[1] == '\0', "%s: expected one line: %s", path, out);
    ck_assert_msg(strstr(out, path) != NULL, "message does not name %s: %s", path, out);
    ck_assert_msg(strstr(out, flag) != NULL, "message does not name %s: %s", flag, out);
}

START_TEST(test_bad_key_files)
{
    static const char hex64[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char dir[256], path[300], good[300];
    uint8_t raw[40];

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    snprintf(good, sizeof(good), "%s/good.key", dir);
    ck_assert_int_eq(th_write_file(good, hex64, 64, 0600), 0);
    memset(raw, 0xA5, sizeof(raw));

    snprintf(path, sizeof(path), "%s/world.key", dir);
    ck_assert_int_eq(th_write_file(path, hex64, 64, 0644), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/group.key", dir);
    ck_assert_int_eq(th_write_file(path, hex64, 64, 0640), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/short.key", dir);
    ck_assert_int_eq(th_write_file(path, raw, 31, 0600), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/long.key", dir);
    ck_assert_int_eq(th_write_file(path, raw, 40, 0600), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/empty.key", dir);
    ck_assert_int_eq(th_write_file(path, raw, 0, 0600), 0);
    expect_bad_key_file("--key-file", path, NULL);
    /* The next key is held to the same rules. */
    snprintf(path, sizeof(path), "%s/next-world.key", dir);
    ck_assert_int_eq(th_write_file(path, hex64, 64, 0604), 0);
    expect_bad_key_file("--next-key-file", path, good);
    th_rmtree(dir);
}
END_TEST

/* Counts the files under `prefix` the process has open (the key file's
 * directory: the key must have been read and closed). Files inherited from
 * the test runner are not the daemon's doing and are not counted. */
static int files_open_under(pid_t pid, const char *prefix)
{
    char path[64];
    struct dirent *e;
    int count = 0;
    DIR *dir;

    snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
    dir = opendir(path);
    ck_assert_ptr_nonnull(dir);
    while ((e = readdir(dir)) != NULL) {
        char link[PATH_MAX + 64], target[PATH_MAX];
        ssize_t n;

        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, prefix, strlen(prefix)) == 0) {
            fprintf(stderr, "open file: %s\n", target);
            count++;
        }
    }
    closedir(dir);
    return count;
}

/* As root: -u nobody. The key file is readable by root only, in a
 * directory only root can enter; the daemon reads it before switching,
 * then runs as nobody (all four uids and gids), without group 0 and with
 * the key file closed, and serves sealed requests. */
START_TEST(test_user_nobody)
{
    const struct passwd *pw = getpwnam("nobody");
    uint8_t key[KEY_LEN];
    uint8_t value[333];
    char status_path[64];
    char status[4096];
    char want[64];
    uid_t nobody_uid;
    gid_t nobody_gid;
    keyed t;
    FILE *f;
    size_t n;

    if (geteuid() != 0 || pw == NULL) {
        fprintf(stderr, "test_user_nobody: skipped: needs root and user nobody\n");
        return;
    }
    nobody_uid = pw->pw_uid;
    nobody_gid = pw->pw_gid;
    {
        const char *const more[] = {"-u", "nobody", NULL};

        keyed_start(&t, more);
    }
    {
        struct stat st;

        /* Only root can reach and read the key. */
        ck_assert_int_eq(stat(t.dir, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0700);
        ck_assert_int_eq(st.st_uid, 0);
        ck_assert_int_eq(stat(t.k.path, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0600);
        ck_assert_int_eq(st.st_uid, 0);
    }
    ck_assert_int_eq(th_daemon_wait_log(&t.d, "running as user nobody", 0, 2000), 0);
    ck_assert_int_eq(th_proc_status(t.d.pid, "Uid"), (long long)nobody_uid);
    ck_assert_int_eq(th_proc_status(t.d.pid, "Gid"), (long long)nobody_gid);
    snprintf(status_path, sizeof(status_path), "/proc/%ld/status", (long)t.d.pid);
    f = fopen(status_path, "r");
    ck_assert_ptr_nonnull(f);
    n = fread(status, 1, sizeof(status) - 1, f);
    fclose(f);
    status[n] = '\0';
    /* Real, effective, saved and filesystem IDs all switched. */
    snprintf(want, sizeof(want), "Uid:\t%u\t%u\t%u\t%u\n", (unsigned)nobody_uid,
             (unsigned)nobody_uid, (unsigned)nobody_uid, (unsigned)nobody_uid);
    ck_assert_msg(strstr(status, want) != NULL, "want %s in:\n%s", want, status);
    snprintf(want, sizeof(want), "Gid:\t%u\t%u\t%u\t%u\n", (unsigned)nobody_gid,
             (unsigned)nobody_gid, (unsigned)nobody_gid, (unsigned)nobody_gid);
    ck_assert_msg(strstr(status, want) != NULL, "want %s in:\n%s", want, status);
    ck_assert_msg(strstr(status, "Groups:\t0 ") == NULL && strstr(status, "Groups:\t0\n") == NULL,
                  "still in group 0:\n%s", status);
    ck_assert_int_eq(files_open_under(t.d.pid, t.dir), 0);

    make_key(key, 30, 1);
    tc_fill_value(value, sizeof(value), 30);
    put(t.fd, t.k.sealer, key, value, sizeof(value));
    expect_hit(t.fd, t.k.sealer, key, value, sizeof(value));
    keyed_stop(&t);
}
END_TEST

static Suite *v2_suite(void)
{
    Suite *s = suite_create("v2");
    TCase *tc;

    tc = tcase_create("sealed");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_sealed_roundtrips);
    tcase_add_test(tc, test_largest_value);
    tcase_add_test(tc, test_request_ids_echoed);
    tcase_add_test(tc, test_ttl);
    suite_add_tcase(s, tc);

    tc = tcase_create("refusals");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_tampered_and_wrong_keys);
    tcase_add_test(tc, test_stale_timestamps);
    tcase_add_test(tc, test_replay_after_window);
    tcase_add_test(tc, test_truncated);
    suite_add_tcase(s, tc);

    tc = tcase_create("policy");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_plaintext_refused_with_key);
    tcase_add_test(tc, test_allow_plaintext);
    tcase_add_test(tc, test_no_key_policy);
    tcase_add_test(tc, test_non_loopback_source);
    tcase_add_test(tc, test_rollover);
    suite_add_tcase(s, tc);

    tc = tcase_create("namespaces");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_v1_v2_separated);
    tcase_add_test(tc, test_two_namespaces_separated);
    suite_add_tcase(s, tc);

    tc = tcase_create("keys_and_privileges");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_bad_key_files);
    tcase_add_test(tc, test_user_nobody);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(v2_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
