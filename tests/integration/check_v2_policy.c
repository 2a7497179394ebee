/* check_v2_policy.c — who may send what to a real sessiond on loopback:
 * plaintext versus sealed, by source address and flags, key rollover, and
 * the separation of namespaces.
 *
 * Each test starts its own daemon, with a cluster key written by the test
 * (tests/lib/v2daemon.c) or without one, and builds v1 datagrams with
 * proto_v1_encode and v2 ones with the v2 codec, as stunnel and
 * libsessionc would.
 *
 * What is covered:
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
 *     namespaces never meet.
 *
 * Synchronisation without sleeps: the daemon handles one socket's
 * datagrams in order, so the answer to a sealed PING sent last
 * (v2d_sync_ping) proves every earlier datagram was handled, and, being
 * the first answer back, that none of them was answered.
 */
#include <arpa/inet.h>
#include <check.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cache.h"
#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "proto_v2.h"
#include "v2daemon.h"

/* ---- policy ------------------------------------------------------------- */

/* Encodes a v1 datagram into v2d_req; returns its length. */
static size_t v1_build(uint8_t type, const uint8_t *id, const uint8_t *value, size_t value_len)
{
    size_t len = 0;

    ck_assert_int_eq(
        proto_v1_encode(v2d_req, V2D_BUF, type, 0, id, PROTO_V1_KEY_LEN, value, value_len, &len),
        PROTO_OK);
    return len;
}

START_TEST(test_plaintext_refused_with_key)
{
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[100];
    char line[V2D_STATS_LINE];
    size_t len;
    v2d_keyed t;

    v2d_keyed_start(&t, NULL);
    ck_assert_int_eq(th_daemon_wait_log(&t.d, "plaintext refused", 0, 1000), 0);
    v2d_make_key(key, 10, 1);
    tc_fill_value(value, sizeof(value), 10);
    len = v1_build(PROTO_V1_NEW, key, value, sizeof(value));
    tc_send_all(t.fd, v2d_req, len);
    len = v1_build(PROTO_V1_GET, key, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    len = v1_build(PROTO_V1_REMOVE, key, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    len = v2d_build(NULL, v2d_req, PROTO_V2_PUT, 0, 1, 0, key, V2D_KEY_LEN, value, sizeof(value));
    tc_send_all(t.fd, v2d_req, len);
    len = v2d_build(NULL, v2d_req, PROTO_V2_GET, 0, 2, 0, key, V2D_KEY_LEN, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    len = v2d_build(NULL, v2d_req, PROTO_V2_PING, 0, 3, 0, NULL, 0, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    len = v2d_build(NULL, v2d_req, PROTO_V2_STATS, 0, 4, 0, NULL, 0, NULL, 0);
    tc_send_all(t.fd, v2d_req, len);
    v2d_sync_ping(t.fd, t.k.sealer);
    v2d_expect_miss(t.fd, t.k.sealer, key);
    v2d_expect_nothing_pending(t.fd);

    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.denied = 7});
    ck_assert_int_eq(tc_field(line, "puts"), 0);
    ck_assert_int_eq(tc_field(line, "entries"), 0);
    ck_assert_int_eq(tc_field(line, "v1"), 0);
    ck_assert_int_eq(tc_field(line, "v2"), 2);
    v2d_keyed_stop(&t);
}
END_TEST

/* --allow-plaintext --allow 127.0.0.1/32: plaintext from 127.0.0.1 is
 * served (answers in plaintext), from 127.0.0.2 denied (loopback is not
 * implied with a key); sealed datagrams are served from both. */
START_TEST(test_allow_plaintext)
{
    const char *const more[] = {"--allow-plaintext", "--allow", "127.0.0.1/32", NULL};
    uint8_t id[PROTO_V1_KEY_LEN];
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[180];
    char line[V2D_STATS_LINE];
    ssize_t n;
    size_t len;
    v2d_keyed t;
    int other;

    v2d_keyed_start(&t, more);
    ck_assert_int_eq(th_daemon_wait_log(&t.d, "plaintext from 127.0.0.1/32", 0, 1000), 0);
    memset(id, 0x31, sizeof(id));
    v2d_make_key(key, 11, 1);
    tc_fill_value(value, sizeof(value), 11);

    /* v1 from 127.0.0.1, as stunnel would. */
    len = v1_build(PROTO_V1_NEW, id, value, sizeof(value));
    tc_send_all(t.fd, v2d_req, len);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(t.fd, v2d_req, len, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(value));
    ck_assert_int_eq(v2d_ans[1], PROTO_V1_FOUND);
    ck_assert_mem_eq(v2d_ans + PROTO_V1_HEADER_LEN, value, sizeof(value));
    /* Plain v2 from 127.0.0.1, answered plainly. */
    v2d_call(t.fd, NULL, PROTO_V2_PUT, 1, 0, key, V2D_KEY_LEN, value, sizeof(value), PROTO_V2_ST_OK,
             NULL, 0);
    v2d_call(t.fd, NULL, PROTO_V2_GET, 2, 0, key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value,
             sizeof(value));
    v2d_call(t.fd, NULL, PROTO_V2_PING, 3, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    /* Sealed still works, and sees the same v2 entry. */
    v2d_expect_hit(t.fd, t.k.sealer, key, value, sizeof(value));

    /* 127.0.0.2: plaintext denied, sealed served. */
    other = th_udp_connect_from("127.0.0.2", t.d.port);
    ck_assert_int_ge(other, 0);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    tc_send_all(other, v2d_req, len);
    len = v2d_build(NULL, v2d_req, PROTO_V2_GET, 0, 4, 0, key, V2D_KEY_LEN, NULL, 0);
    tc_send_all(other, v2d_req, len);
    v2d_sync_ping(other, t.k.sealer);
    v2d_expect_hit(other, t.k.sealer, key, value, sizeof(value));
    v2d_expect_nothing_pending(other);
    close(other);

    tc_get_stats(&t.d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.denied = 2});
    ck_assert_int_eq(tc_field(line, "v1"), 2);
    ck_assert_int_eq(tc_field(line, "v2"), 6);
    ck_assert_int_eq(tc_field(line, "sealed"), 3);
    v2d_keyed_stop(&t);
}
END_TEST

/* Without a key: plaintext from all of loopback; a sealed datagram cannot
 * be opened and is counted as unknown_key, unanswered. */
START_TEST(test_no_key_policy)
{
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[90];
    char dir[256];
    char line[V2D_STATS_LINE];
    v2d_cluster_key k;
    th_daemon d;
    size_t len;
    int fd, other;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    v2d_cluster_key_make(&k, dir, "unused.key", 0600);
    tc_start(&d, NULL);
    ck_assert_int_eq(th_daemon_wait_log(&d, "plaintext from loopback", 0, 1000), 0);
    fd = tc_connect_v4(&d);
    other = th_udp_connect_from("127.0.0.2", d.port);
    ck_assert_int_ge(other, 0);
    v2d_make_key(key, 12, 1);
    tc_fill_value(value, sizeof(value), 12);
    v2d_call(fd, NULL, PROTO_V2_PUT, 1, 0, key, V2D_KEY_LEN, value, sizeof(value), PROTO_V2_ST_OK,
             NULL, 0);
    v2d_call(other, NULL, PROTO_V2_GET, 2, 0, key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value,
             sizeof(value));
    len = v2d_build(k.sealer, v2d_req, PROTO_V2_GET, 0, 3, 0, key, V2D_KEY_LEN, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    v2d_sync_ping(fd, NULL);
    v2d_expect_nothing_pending(fd);

    tc_get_stats(&d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.unknown_key = 1});
    ck_assert_int_eq(tc_field(line, "v2"), 3);
    ck_assert_int_eq(tc_field(line, "sealed"), 0);
    close(fd);
    close(other);
    tc_stop_ok(&d);
    v2d_cluster_key_free(&k);
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
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[200];
    char line[V2D_STATS_LINE];
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
    v2d_make_key(key, 14, 1);
    tc_fill_value(value, sizeof(value), 14);
    {
        const char *const args[] = {"-l", ip, NULL};

        tc_start(&d, args);
    }
    fd = udp_from_to(ip, ip, d.port);
    lo = udp_from_to("127.0.0.1", ip, d.port);
    len = v2d_build(NULL, v2d_req, PROTO_V2_PING, 0, 1, 0, NULL, 0, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    v2d_sync_ping(lo, NULL);
    v2d_expect_nothing_pending(fd);
    tc_get_stats(&d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.denied = 2});
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
    v2d_call(fd, NULL, PROTO_V2_PUT, 1, 0, key, V2D_KEY_LEN, value, sizeof(value), PROTO_V2_ST_OK,
             NULL, 0);
    len = v2d_build(NULL, v2d_req, PROTO_V2_GET, 0, 2, 0, key, V2D_KEY_LEN, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    n = th_udp_recv(fd, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, (ssize_t)len); /* no larger than the request */
    ck_assert_int_eq(proto_v2_parse(v2d_ans, (size_t)n, 1, &a), PROTO_OK);
    ck_assert_int_eq(a.status, PROTO_V2_ST_REFUSED);
    ck_assert_int_eq(a.request_id, 2);
    len = v2d_build(NULL, v2d_req, PROTO_V2_STATS, 0, 3, 0, NULL, 0, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    n = th_udp_recv(fd, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V2_HEADER_LEN);
    ck_assert_int_eq(v2d_ans[3], PROTO_V2_ST_REFUSED);
    v2d_call(fd, NULL, PROTO_V2_PING, 4, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    /* v1: the exception, stunnel cannot seal. */
    len = v1_build(PROTO_V1_NEW, id, value, sizeof(value));
    tc_send_all(fd, v2d_req, len);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, v2d_req, len, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(value));
    ck_assert_int_eq(v2d_ans[1], PROTO_V1_FOUND);
    /* Loopback: the full answer. */
    v2d_call(lo, NULL, PROTO_V2_GET, 5, 0, key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value,
             sizeof(value));
    tc_get_stats(&d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){0, 0, 0, 0, 0});
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
    char line[V2D_STATS_LINE];
    v2d_cluster_key k1, k2;
    uint8_t id1[PROTO_V2_KEY_ID_LEN];
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[256];
    proto_v2_sealer *both;
    proto_v2_msg a;
    th_daemon d;
    ssize_t n;
    size_t len;
    int fd;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    v2d_cluster_key_make(&k1, dir, "k1", 0600);
    v2d_cluster_key_make(&k2, dir, "k2", 0600);
    ck_assert_int_eq(proto_v2_key_id(k1.bytes, id1), 0);
    v2d_make_key(key, 13, 1);
    tc_fill_value(value, sizeof(value), 13);
    {
        const char *const args[] = {"--key-file", k1.path, "--next-key-file", k2.path, NULL};

        tc_start(&d, args);
    }
    fd = tc_connect_v4(&d);
    /* A sender already on K2: the daemon opens it and answers with K1. */
    len = v2d_build(k2.sealer, v2d_req, PROTO_V2_PUT, 0, 1, 0, key, V2D_KEY_LEN, value,
                    sizeof(value));
    tc_send_all(fd, v2d_req, len);
    n = th_udp_recv(fd, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_gt(n, 40);
    ck_assert_mem_eq(v2d_ans + 16, id1, sizeof(id1));
    /* Opening the answer: K2 alone cannot, K1 can. */
    {
        static uint8_t copy[V2D_BUF];

        memcpy(copy, v2d_ans, (size_t)n);
        ck_assert_int_eq(proto_v2_open(k2.sealer, copy, (size_t)n, 1, tc_wall_ms(),
                                       PROTO_V2_DEFAULT_WINDOW_MS, &a),
                         PROTO_ERR_UNKNOWN_KEY);
    }
    ck_assert_int_eq(proto_v2_open(k1.sealer, v2d_ans, (size_t)n, 1, tc_wall_ms(),
                                   PROTO_V2_DEFAULT_WINDOW_MS, &a),
                     PROTO_OK);
    ck_assert_int_eq(a.status, PROTO_V2_ST_OK);
    /* A sender still on K1 reads what the K2 sender stored. */
    v2d_expect_hit(fd, k1.sealer, key, value, sizeof(value));
    /* A receiver that holds both (K1 current, K2 next) reads the answers
     * to K2-sealed requests. */
    both = proto_v2_sealer_new(k1.bytes, k2.bytes);
    ck_assert_ptr_nonnull(both);
    len = v2d_build(k2.sealer, v2d_req, PROTO_V2_GET, 0, 2, 0, key, V2D_KEY_LEN, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    v2d_recv_answer(fd, both, &a);
    ck_assert_int_eq(a.request_id, 2);
    ck_assert_uint_eq(a.value_len, sizeof(value));
    proto_v2_sealer_free(both);
    tc_get_stats(&d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){0, 0, 0, 0, 0});
    ck_assert_int_eq(tc_field(line, "sealed"), 3);
    close(fd);
    tc_stop_ok(&d);

    /* Without --next-key-file, K2 is just an unknown key. */
    {
        const char *const args[] = {"--key-file", k1.path, NULL};

        tc_start(&d, args);
    }
    fd = tc_connect_v4(&d);
    len = v2d_build(k2.sealer, v2d_req, PROTO_V2_GET, 0, 3, 0, key, V2D_KEY_LEN, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    v2d_sync_ping(fd, k1.sealer);
    tc_get_stats(&d, line, V2D_STATS_LINE);
    v2d_expect_refusals(line, (v2d_refusals){.unknown_key = 1});
    close(fd);
    tc_stop_ok(&d);
    v2d_cluster_key_free(&k1);
    v2d_cluster_key_free(&k2);
    th_rmtree(dir);
}
END_TEST

/* ---- namespaces --------------------------------------------------------- */

/* The same 32 bytes as a v1 ID and as a v2 key name two different entries. */
START_TEST(test_v1_v2_separated)
{
    uint8_t id[PROTO_V1_KEY_LEN];
    uint8_t v1_value[100], v2_value[120];
    char line[V2D_STATS_LINE];
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
    tc_send_all(fd, v2d_req, len);
    v2d_call(fd, NULL, PROTO_V2_GET, 1, 0, id, sizeof(id), NULL, 0, PROTO_V2_ST_NOT_FOUND, NULL, 0);
    v2d_call(fd, NULL, PROTO_V2_PUT, 2, 0, id, sizeof(id), v2_value, sizeof(v2_value),
             PROTO_V2_ST_OK, NULL, 0);
    v2d_call(fd, NULL, PROTO_V2_GET, 3, 0, id, sizeof(id), NULL, 0, PROTO_V2_ST_OK, v2_value,
             sizeof(v2_value));
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, v2d_req, len, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(v1_value));
    ck_assert_mem_eq(v2d_ans + PROTO_V1_HEADER_LEN, v1_value, sizeof(v1_value));
    /* Deleting one leaves the other. */
    v2d_call(fd, NULL, PROTO_V2_DEL, 4, 0, id, sizeof(id), NULL, 0, PROTO_V2_ST_OK, NULL, 0);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, v2d_req, len, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN + (ssize_t)sizeof(v1_value));
    len = v1_build(PROTO_V1_REMOVE, id, NULL, 0);
    tc_send_all(fd, v2d_req, len);
    v2d_call(fd, NULL, PROTO_V2_PUT, 5, 0, id, sizeof(id), v2_value, sizeof(v2_value),
             PROTO_V2_ST_OK, NULL, 0);
    len = v1_build(PROTO_V1_GET, id, NULL, 0);
    n = th_udp_roundtrip(fd, v2d_req, len, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    ck_assert_int_eq(n, PROTO_V1_HEADER_LEN);
    ck_assert_int_eq(v2d_ans[1], PROTO_V1_NOT_FOUND);
    tc_get_stats(&d, line, V2D_STATS_LINE);
    ck_assert_int_eq(tc_field(line, "entries"), 1);
    ck_assert_int_eq(tc_field(line, "bytes"),
                     (long long)cache_entry_cost(1 + sizeof(id), sizeof(v2_value)));
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_two_namespaces_separated)
{
    uint8_t a_key[V2D_KEY_LEN], b_key[V2D_KEY_LEN];
    uint8_t a_value[150], b_value[160];
    v2d_keyed t;

    v2d_keyed_start(&t, NULL);
    v2d_make_key(a_key, 20, 1);
    memcpy(b_key, a_key, V2D_KEY_LEN);
    b_key[0] = 21; /* same session ID, another namespace */
    tc_fill_value(a_value, sizeof(a_value), 20);
    tc_fill_value(b_value, sizeof(b_value), 21);
    v2d_put(t.fd, t.k.sealer, a_key, a_value, sizeof(a_value));
    v2d_expect_miss(t.fd, t.k.sealer, b_key);
    v2d_put(t.fd, t.k.sealer, b_key, b_value, sizeof(b_value));
    v2d_expect_hit(t.fd, t.k.sealer, a_key, a_value, sizeof(a_value));
    v2d_expect_hit(t.fd, t.k.sealer, b_key, b_value, sizeof(b_value));
    v2d_call(t.fd, t.k.sealer, PROTO_V2_DEL, 1, 0, b_key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_OK,
             NULL, 0);
    v2d_expect_hit(t.fd, t.k.sealer, a_key, a_value, sizeof(a_value));
    v2d_expect_miss(t.fd, t.k.sealer, b_key);
    v2d_keyed_stop(&t);
}
END_TEST

static Suite *v2_policy_suite(void)
{
    Suite *s = suite_create("v2_policy");
    TCase *tc;

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
    return s;
}

int main(void)
{
    return tc_run_suite(v2_policy_suite());
}
