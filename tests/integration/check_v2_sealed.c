/* check_v2_sealed.c — wire format v2 and sealing, through real sessiond
 * processes on loopback: what a sealed request gets, and what a damaged,
 * foreign or old one does not.
 *
 * Every test starts its own daemon with a cluster key written by the test
 * (32 random bytes as hex, mode 0600, in a th_tmpdir), and builds its
 * datagrams with the v2 codec (proto_v2_seal) and a sealer holding the
 * same key, as libsessionc would (tests/lib/v2daemon.c).
 *
 * What is covered:
 *   - sealed PUT/GET/DEL/PING/STATS round trips, answers sealed with the
 *     daemon's key, request IDs and keys echoed, NO_REPLY honoured, TTLs
 *     (0 = --max-ttl, larger capped), the largest value with the longest
 *     key, and many requests in flight on one socket matched by ID;
 *   - refusals, each unanswered and counted under exactly its reason:
 *     tampered (ciphertext, header, tag), wrong key (auth_failed), unknown
 *     key ID, stale timestamps (past and future), a replay after the window
 *     (and, documented as a limit, a replay inside it served again), and
 *     truncated datagrams (malformed_short, malformed_length).
 *
 * Who may send what is check_v2_policy.c; key files and -u are
 * check_v2_keys.c.
 *
 * Synchronisation without sleeps: the daemon handles one socket's
 * datagrams in order, so the answer to a sealed PING sent last
 * (v2d_sync_ping) proves every earlier datagram was handled, and, being
 * the first answer back, that none of them was answered. The waits for time to pass (a TTL of 1 s,
 * the replay after a 1 s window) poll the wall clock with a bounded deadline, like the expiry
 * tests.
 */
#include <check.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "proto_v2.h"
#include "v2daemon.h"
#include "v2ops.h"

/* ---- sealed round trips ------------------------------------------------- */

START_TEST(test_sealed_roundtrips)
{
    uint8_t key[V2D_KEY_LEN], other[V2D_KEY_LEN];
    uint8_t value[950], second[140];
    char line[V2D_STATS_LINE];
    proto_v2_msg a;
    v2d_keyed t;
    size_t len;

    v2d_keyed_start(&t, NULL);
    v2d_make_key(key, 1, 1);
    v2d_make_key(other, 1, 2);
    tc_fill_value(value, sizeof(value), 1);
    tc_fill_value(second, sizeof(second), 2);

    v2d_call(t.fd, t.k.sealer, PROTO_V2_PUT, 0xA1B2C3D4, 300, key, V2D_KEY_LEN, value,
             sizeof(value), PROTO_V2_ST_OK, NULL, 0);
    v2d_call(t.fd, t.k.sealer, PROTO_V2_GET, 0xA1B2C3D5, 0, key, V2D_KEY_LEN, NULL, 0,
             PROTO_V2_ST_OK, value, sizeof(value));
    v2d_expect_miss(t.fd, t.k.sealer, other);
    /* Replacing, then deleting (found, then not found). */
    v2d_put(t.fd, t.k.sealer, key, second, sizeof(second));
    v2d_expect_hit(t.fd, t.k.sealer, key, second, sizeof(second));
    v2d_call(t.fd, t.k.sealer, PROTO_V2_DEL, 7, 0, key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_OK, NULL,
             0);
    v2d_call(t.fd, t.k.sealer, PROTO_V2_DEL, 8, 0, key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_NOT_FOUND,
             NULL, 0);
    v2d_expect_miss(t.fd, t.k.sealer, key);
    /* PING: OK, no key, no value. */
    v2d_call(t.fd, t.k.sealer, PROTO_V2_PING, 0xFFFFFFFF, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL,
             0);
    ck_assert_uint_eq(v2d_ans[14] << 8 | v2d_ans[15], 0); /* value length in the header */

    /* NO_REPLY: PUT and DEL act without answering; the PING's answer is
     * the first back. */
    len = v2d_build(t.k.sealer, v2d_req, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, 11, 0, other,
                    V2D_KEY_LEN, value, sizeof(value));
    tc_send_all(t.fd, v2d_req, len);
    v2d_sync_ping(t.fd, t.k.sealer);
    v2d_expect_hit(t.fd, t.k.sealer, other, value, sizeof(value));
    len = v2d_build(t.k.sealer, v2d_req, PROTO_V2_DEL, PROTO_V2_F_NO_REPLY, 12, 0, other,
                    V2D_KEY_LEN, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    v2d_sync_ping(t.fd, t.k.sealer);
    v2d_expect_miss(t.fd, t.k.sealer, other);
    v2d_expect_nothing_pending(t.fd);

    /* STATS: the stats line, sealed, with the counters so far. */
    len = v2d_build(t.k.sealer, v2d_req, PROTO_V2_STATS, 0, 99, 0, NULL, 0, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    v2d_recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.op, PROTO_V2_STATS | PROTO_V2_ANSWER);
    ck_assert_int_eq(a.status, PROTO_V2_ST_OK);
    ck_assert_int_eq(a.request_id, 99);
    ck_assert_uint_gt(a.value_len, 0);
    {
        char text[V2D_STATS_LINE];

        ck_assert_uint_lt(a.value_len, sizeof(text));
        memcpy(text, a.value, a.value_len);
        text[a.value_len] = '\0';
        ck_assert_msg(strncmp(text, "gets=", 5) == 0, "STATS value: %s", text);
        ck_assert_int_eq(th_stat(text, "puts"), 3);
        ck_assert_int_eq(th_stat(text, "sealed"), 16); /* this STATS is counted already */
        ck_assert_int_eq(th_stat(text, "v2"), 16);
        ck_assert_int_eq(th_stat(text, "v1"), 0);
    }

    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    ck_assert_int_eq(tc_field(line, "puts"), 3);
    ck_assert_int_eq(tc_field(line, "hits"), 3);
    ck_assert_int_eq(tc_field(line, "misses"), 3);
    ck_assert_int_eq(tc_field(line, "removes"), 2);
    ck_assert_int_eq(tc_field(line, "sealed"), 16);
    ck_assert_int_eq(tc_field(line, "answers"), 14); /* 16 less the two NO_REPLY */
    ck_assert_int_eq(tc_field(line, "datagrams"), 16);
    ck_assert_int_eq(tc_field(line, "entries"), 0);
    v2d_expect_refusals(line, (v2d_refusals){0, 0, 0, 0, 0});
    v2d_keyed_stop(&t);
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
    v2d_keyed t;

    v2d_keyed_start(&t, NULL);
    memset(key, 0x42, sizeof(key));
    tc_fill_value(value, PROTO_V2_MAX_VALUE, 3);
    v2d_call(t.fd, t.k.sealer, PROTO_V2_PUT, 1, 0, key, sizeof(key), value, PROTO_V2_MAX_VALUE,
             PROTO_V2_ST_OK, NULL, 0);
    v2d_call(t.fd, t.k.sealer, PROTO_V2_GET, 2, 0, key, sizeof(key), NULL, 0, PROTO_V2_ST_OK, value,
             PROTO_V2_MAX_VALUE);
    memset(&m, 0, sizeof(m));
    m.op = PROTO_V2_PUT;
    m.key = key;
    m.key_len = sizeof(key);
    m.value = value;
    m.value_len = PROTO_V2_MAX_VALUE + 1;
    ck_assert_int_ne(proto_v2_seal(t.k.sealer, v2d_req, V2D_BUF, &m, &len), PROTO_OK);
    v2d_keyed_stop(&t);
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
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[200];
    uint32_t ids[N];
    uint32_t base;
    int seen[N];
    v2d_keyed t;

    v2d_keyed_start(&t, NULL);
    ck_assert_int_eq(RAND_bytes((uint8_t *)&base, sizeof(base)), 1);
    tc_fill_value(value, sizeof(value), 4);
    for (unsigned i = 0; i < N; i += 2) {
        v2d_make_key(key, 4, i);
        v2d_put(t.fd, t.k.sealer, key, value, sizeof(value));
    }
    for (unsigned i = 0; i < N; i++) {
        size_t len;

        ids[i] = base + i * 0x01000193u; /* distinct, and not in order */
        v2d_make_key(key, 4, i);
        len = v2d_build(t.k.sealer, v2d_req, PROTO_V2_GET, 0, ids[i], 0, key, V2D_KEY_LEN, NULL, 0);
        tc_send_all(t.fd, v2d_req, len);
        seen[i] = 0;
    }
    for (unsigned got = 0; got < N; got++) {
        proto_v2_msg a;
        int i;

        v2d_recv_answer(t.fd, t.k.sealer, &a);
        i = find_id(ids, N, a.request_id);
        ck_assert_msg(i >= 0, "answer with unknown request ID 0x%08x", a.request_id);
        ck_assert_int_eq(seen[i], 0);
        seen[i] = 1;
        v2d_make_key(key, 4, (unsigned)i);
        ck_assert_mem_eq(a.key, key, V2D_KEY_LEN);
        ck_assert_int_eq(a.status, i % 2 == 0 ? PROTO_V2_ST_OK : PROTO_V2_ST_NOT_FOUND);
    }
    v2d_expect_nothing_pending(t.fd);
    v2d_keyed_stop(&t);
}
END_TEST

/* TTL 0 means --max-ttl, a larger one is capped by it. (REFUSED cannot be
 * provoked over the wire: the largest entry a datagram makes, 65509 bytes
 * with its overhead, fits the smallest budget, 64 KiB; the fuzz harness
 * covers it with a smaller cache.) */
START_TEST(test_ttl)
{
    const char *const more[] = {"--max-ttl", "1", NULL};
    uint8_t key[V2D_KEY_LEN], capped[V2D_KEY_LEN];
    uint8_t value[100];
    char line[V2D_STATS_LINE];
    uint64_t sent, deadline;
    int gone = 0;
    v2d_keyed t;

    v2d_keyed_start(&t, more);
    v2d_make_key(key, 5, 1);
    v2d_make_key(capped, 5, 2);
    tc_fill_value(value, sizeof(value), 5);
    sent = tc_wall_ms();
    v2d_call(t.fd, t.k.sealer, PROTO_V2_PUT, 1, 0, key, V2D_KEY_LEN, value, sizeof(value),
             PROTO_V2_ST_OK, NULL, 0);
    v2d_call(t.fd, t.k.sealer, PROTO_V2_PUT, 2, 3600, capped, V2D_KEY_LEN, value, sizeof(value),
             PROTO_V2_ST_OK, NULL, 0);
    v2d_expect_hit(t.fd, t.k.sealer, capped, value, sizeof(value));
    /* Both gone within a bounded wait, and not before 1 s. */
    deadline = sent + 5000;
    while (!gone && tc_wall_ms() < deadline) {
        struct timespec pause = {0, 50 * 1000 * 1000};
        proto_v2_msg a;
        size_t len =
            v2d_build(t.k.sealer, v2d_req, PROTO_V2_GET, 0, 3, 0, capped, V2D_KEY_LEN, NULL, 0);

        tc_send_all(t.fd, v2d_req, len);
        v2d_recv_answer(t.fd, t.k.sealer, &a);
        gone = a.status == PROTO_V2_ST_NOT_FOUND;
        if (!gone)
            nanosleep(&pause, NULL);
    }
    ck_assert_msg(gone, "a TTL of 3600 s was not capped to --max-ttl 1");
    ck_assert_uint_ge(tc_wall_ms() - sent, 990);
    v2d_expect_miss(t.fd, t.k.sealer, key);
    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    ck_assert_int_eq(tc_field(line, "expired"), 2);
    ck_assert_int_eq(tc_field(line, "entries"), 0);
    v2d_keyed_stop(&t);
}
END_TEST

/* ---- refusals ----------------------------------------------------------- */

START_TEST(test_tampered_and_wrong_keys)
{
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[300];
    uint8_t our_id[PROTO_V2_KEY_ID_LEN];
    char other_dir[256];
    char line[V2D_STATS_LINE];
    v2d_cluster_key other;
    size_t len;
    v2d_keyed t;

    v2d_keyed_start(&t, NULL);
    ck_assert_int_eq(th_tmpdir(other_dir, sizeof(other_dir)), 0);
    v2d_cluster_key_make(&other, other_dir, "other.key", 0600);
    ck_assert_int_eq(proto_v2_key_id(t.k.bytes, our_id), 0);
    v2d_make_key(key, 6, 1);
    tc_fill_value(value, sizeof(value), 6);

    /* Tampered PUTs: a ciphertext byte, a header byte (associated data),
     * the timestamp, the tag. Each must be refused as auth_failed, and
     * store nothing. */
    for (int which = 0; which < 4; which++) {
        static const size_t offsets[] = {40 + 5, 8, 27, 0};
        size_t at;

        len = v2d_build(t.k.sealer, v2d_req, PROTO_V2_PUT, 0, 100 + (uint32_t)which, 0, key,
                        V2D_KEY_LEN, value, sizeof(value));
        at = which == 3 ? len - 1 : offsets[which];
        v2d_req[at] ^= 0x01;
        tc_send_all(t.fd, v2d_req, len);
    }
    /* Wrong key: sealed with another key but carrying our key ID. */
    len = v2d_build(other.sealer, v2d_req, PROTO_V2_PUT, 0, 200, 0, key, V2D_KEY_LEN, value,
                    sizeof(value));
    memcpy(v2d_req + 16, our_id, sizeof(our_id));
    tc_send_all(t.fd, v2d_req, len);
    /* Unknown key ID: sealed with another key, its own ID. */
    len = v2d_build(other.sealer, v2d_req, PROTO_V2_GET, 0, 201, 0, key, V2D_KEY_LEN, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    /* Our datagram with the key ID changed: unknown too. */
    len = v2d_build(t.k.sealer, v2d_req, PROTO_V2_GET, 0, 202, 0, key, V2D_KEY_LEN, NULL, 0);
    v2d_req[16] ^= 0x80;
    tc_send_all(t.fd, v2d_req, len);

    v2d_sync_ping(t.fd, t.k.sealer);
    v2d_expect_miss(t.fd, t.k.sealer, key);
    v2d_expect_nothing_pending(t.fd);
    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.auth_failed = 5, .unknown_key = 2});
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    ck_assert_int_eq(tc_field(line, "answers"), 2);
    ck_assert_int_eq(tc_field(line, "datagrams"), 9);
    v2d_cluster_key_free(&other);
    th_rmtree(other_dir);
    v2d_keyed_stop(&t);
}
END_TEST

/* Timestamps outside the window, either side, are stale; inside it (even
 * 20 s off, within the default 30 s) they are served. */
START_TEST(test_stale_timestamps)
{
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[64];
    char line[V2D_STATS_LINE];
    proto_v2_msg a;
    uint64_t now;
    size_t len;
    v2d_keyed t;

    v2d_keyed_start(&t, NULL);
    v2d_make_key(key, 7, 1);
    tc_fill_value(value, sizeof(value), 7);
    now = tc_wall_ms();
    len = v2t_build(t.k.sealer, v2d_req, V2D_BUF, PROTO_V2_PUT, 0, 1, 0, key, V2D_KEY_LEN, value,
                    sizeof(value), now - 60000);
    tc_send_all(t.fd, v2d_req, len);
    len = v2t_build(t.k.sealer, v2d_req, V2D_BUF, PROTO_V2_PUT, 0, 2, 0, key, V2D_KEY_LEN, value,
                    sizeof(value), now + 60000);
    tc_send_all(t.fd, v2d_req, len);
    len = v2t_build(t.k.sealer, v2d_req, V2D_BUF, PROTO_V2_GET, 0, 3, 0, key, V2D_KEY_LEN, NULL, 0,
                    0);
    tc_send_all(t.fd, v2d_req, len);
    v2d_sync_ping(t.fd, t.k.sealer);
    v2d_expect_miss(t.fd, t.k.sealer, key);

    len = v2t_build(t.k.sealer, v2d_req, V2D_BUF, PROTO_V2_PING, 0, 4, 0, NULL, 0, NULL, 0,
                    now - 20000);
    tc_send_all(t.fd, v2d_req, len);
    v2d_recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.request_id, 4);

    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.stale = 3});
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    v2d_keyed_stop(&t);
}
END_TEST

/* A captured datagram replayed: inside the window it is served again (the
 * documented limit: there is no memory of nonces), after it, stale. */
START_TEST(test_replay_after_window)
{
    const char *const more[] = {"--window", "1", NULL};
    uint8_t key[V2D_KEY_LEN];
    uint8_t captured[256];
    char line[V2D_STATS_LINE];
    uint64_t ts, deadline;
    proto_v2_msg a;
    size_t len;
    v2d_keyed t;

    v2d_keyed_start(&t, more);
    v2d_make_key(key, 8, 1);
    ts = tc_wall_ms();
    len = v2t_build(t.k.sealer, captured, V2D_BUF, PROTO_V2_GET, 0, 77, 0, key, V2D_KEY_LEN, NULL,
                    0, ts);
    tc_send_all(t.fd, captured, len);
    v2d_recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.request_id, 77);
    tc_send_all(t.fd, captured, len);
    v2d_recv_answer(t.fd, t.k.sealer, &a);
    ck_assert_int_eq(a.request_id, 77);

    /* Wait (bounded) until the 1 s window has passed for that timestamp. */
    deadline = ts + 5000;
    while (tc_wall_ms() <= ts + 1000 + 50 && tc_wall_ms() < deadline) {
        struct timespec pause = {0, 20 * 1000 * 1000};

        nanosleep(&pause, NULL);
    }
    tc_send_all(t.fd, captured, len);
    v2d_sync_ping(t.fd, t.k.sealer);
    v2d_expect_nothing_pending(t.fd);
    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.stale = 1});
    ck_assert_int_eq(tc_field(line, "gets"), 2);
    v2d_keyed_stop(&t);
}
END_TEST

START_TEST(test_truncated)
{
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[500];
    static uint8_t full[V2D_BUF];
    char line[V2D_STATS_LINE];
    size_t len;
    static const size_t short_cuts[] = {3, 10, 15};
    long long shorts = 0, lengths = 0;
    v2d_keyed t;

    v2d_keyed_start(&t, NULL);
    v2d_make_key(key, 9, 1);
    tc_fill_value(value, sizeof(value), 9);
    len =
        v2d_build(t.k.sealer, full, PROTO_V2_PUT, 0, 1, 0, key, V2D_KEY_LEN, value, sizeof(value));
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
    v2d_sync_ping(t.fd, t.k.sealer);
    v2d_expect_miss(t.fd, t.k.sealer, key);
    v2d_expect_nothing_pending(t.fd);

    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.malformed = shorts + lengths});
    ck_assert_int_eq(tc_field(line, "malformed_short"), shorts);
    ck_assert_int_eq(tc_field(line, "malformed_length"), lengths);
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    v2d_keyed_stop(&t);
}
END_TEST

static Suite *v2_sealed_suite(void)
{
    Suite *s = suite_create("v2_sealed");
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
    return s;
}

int main(void)
{
    return tc_run_suite(v2_sealed_suite());
}
