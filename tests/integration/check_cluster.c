/* check_cluster.c — two sessiond nodes on one Redis behave as one cache:
 * TLS servers attached to different nodes resume each other's sessions,
 * Redis holds nothing usable, a restarted node serves what was made while
 * it was down, a dead Redis costs no more than the backend's budget, a take
 * succeeds once across nodes, and a delete on one node reaches the other's
 * near-cache.
 *
 * How it works: every test builds its own bed (tests/lib/cluster.c): a
 * temporary directory with a cluster key, a real redis-server on a free
 * loopback port (tests/lib/redis_proc.c), and two real sessiond processes
 * started with `--key-file K --backend redis://127.0.0.1:PORT`, each waited
 * for until it logs "backend redis://127.0.0.1:PORT up". TLS servers are
 * either stock stunnel4 processes (one per node, started by
 * tests/lib/proc.c as in check_stunnel.c, speaking v1, so their node also
 * gets --allow-plaintext --allow 127.0.0.1/32) or in-process libsessionc
 * servers over sealed v2: server A's client lists node 1 only and server
 * B's node 2 only, the one-sessiond-per-host deployment, so every session
 * crossing servers has to cross Redis. OpenSSL's internal cache is off on
 * the libsessionc servers, so a resumption can only come from sessiond.
 *
 * Redis is inspected as an operator (or an attacker with its port) would:
 * SCAN every key, GET every value (DUMP for a non-string), and search the
 * key names and values for each session's ID (raw and in hex), its master
 * secret, and every 16-byte window of the DER that sessiond serves back.
 * The scanner is checked to find a planted window, so a silent scanner
 * cannot pass the test.
 *
 * Waits are bounded and on conditions: daemon log lines, process logs seen
 * through inotify, Redis' key count polled with a deadline. Figures
 * (resumptions, backend hits, latencies) are printed to stderr as evidence.
 */
#include <check.h>

#include "checks.h"
#include "cluster.h"
#include "harness.h"
#include "proc.h"
#include "redis_proc.h"
#include "sessionc.h"
#include "tls_util.h"

#include <hiredis.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define SESSION_WAIT_MS       2000
#define STUNNEL_ALTERNATIONS  20
#define ALLOWED_LATE_GETS     2 /* stunnel waits one kernel tick for an answer */
#define RECONNECTIONS         100
#define RESTART_SESSIONS      50
#define UNREACHABLE_MISSES    200
#define UNREACHABLE_OP_MS     30 /* --backend-timeout for those tests */
#define UNREACHABLE_SLACK_MS  20 /* what the bound allows on top of it */
#define TAKE_KEYS             50
#define COHERENCE_TIMEOUT_MS  2000
#define REDIS_POLL_TIMEOUT_MS 3000

static tu_cred g_server;

static const char *const g_plaintext_args[] = {"--allow-plaintext", "--allow", "127.0.0.1/32",
                                               NULL};

static int64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* A short pause inside a bounded poll loop, so polling Redis or a daemon
 * does not take a CPU from the processes it waits for. */
static void poll_pause(void)
{
    poll(NULL, 0, 2);
}

/* A bed with a fresh Redis and two nodes on it (extra: each node's extra
 * arguments, may be NULL). */
static void bed_two_nodes(cl_bed *b, const char *const *extra)
{
    cl_open(b);
    ck_assert_int_eq(rp_redis_start(&b->redis[0], NULL, 0), 0);
    cl_use_redis(b, b->redis[0].port);
    cl_node_start(b, 0, extra);
    cl_node_start(b, 1, extra);
}

/* ---- what must not be in Redis ----------------------------------------- */

typedef struct secret {
    uint8_t bytes[96];
    size_t len;
    char what[48];
} secret;

typedef struct secrets {
    secret *item;
    size_t count, cap;
} secrets;

static void secrets_add(secrets *s, const void *p, size_t len, const char *what)
{
    ck_assert_uint_gt(len, 0);
    ck_assert_uint_le(len, sizeof(s->item[0].bytes));
    if (s->count == s->cap) {
        size_t cap = s->cap == 0 ? 256 : 2 * s->cap;
        secret *grown = realloc(s->item, cap * sizeof(*grown));

        ck_assert_ptr_nonnull(grown);
        s->item = grown;
        s->cap = cap;
    }
    memcpy(s->item[s->count].bytes, p, len);
    s->item[s->count].len = len;
    snprintf(s->item[s->count].what, sizeof(s->item[s->count].what), "%s", what);
    s->count++;
}

/* The session's ID as the server stored it (raw, lower and upper hex) and
 * its master secret. */
static void secrets_add_session(secrets *s, const SSL_SESSION *sess)
{
    unsigned char id[32];
    unsigned char master[SSL_MAX_MASTER_KEY_LENGTH];
    char hex[2 * sizeof(id) + 1];
    size_t id_len = tu_session_server_key(sess, id);
    size_t master_len = SSL_SESSION_get_master_key(sess, master, sizeof(master));

    ck_assert_uint_gt(id_len, 0);
    secrets_add(s, id, id_len, "a session ID");
    for (size_t i = 0; i < id_len; i++)
        snprintf(hex + 2 * i, 3, "%02x", id[i]);
    secrets_add(s, hex, 2 * id_len, "a session ID in hex");
    for (size_t i = 0; i < id_len; i++)
        snprintf(hex + 2 * i, 3, "%02X", id[i]);
    secrets_add(s, hex, 2 * id_len, "a session ID in upper-case hex");
    ck_assert_uint_ge(master_len, 16);
    secrets_add(s, master, master_len, "a master secret");
    OPENSSL_cleanse(master, sizeof(master));
}

/* Every 16-byte window of a session's DER. */
static void secrets_add_der(secrets *s, const uint8_t *der, size_t len)
{
    ck_assert_uint_ge(len, 16);
    for (size_t off = 0; off + 16 <= len; off++)
        secrets_add(s, der + off, 16, "16 bytes of session DER");
}

static void secrets_free(secrets *s)
{
    if (s->item != NULL)
        OPENSSL_cleanse(s->item, s->cap * sizeof(*s->item));
    free(s->item);
    memset(s, 0, sizeof(*s));
}

typedef struct scan_result {
    long keys;
    long value_bytes;
    long hits;
    char first_hit[160];
} scan_result;

static void scan_look(const secrets *s, const char *where, const char *buf, size_t len,
                      scan_result *r)
{
    for (size_t i = 0; i < s->count; i++) {
        if (memmem(buf, len, s->item[i].bytes, s->item[i].len) == NULL)
            continue;
        if (r->hits++ == 0)
            snprintf(r->first_hit, sizeof(r->first_hit), "%s found in a %s", s->item[i].what,
                     where);
    }
}

/* SCANs every key of the Redis on `port` and searches each name and value
 * for every secret. */
static void redis_scan(int port, const secrets *s, scan_result *r)
{
    char cursor[32] = "0";
    int rounds = 0;

    memset(r, 0, sizeof(*r));
    do {
        redisReply *reply = rp_command(port, "SCAN %s COUNT 1000", cursor);

        ck_assert_msg(reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 2,
                      "SCAN failed");
        snprintf(cursor, sizeof(cursor), "%s", reply->element[0]->str);
        for (size_t k = 0; k < reply->element[1]->elements; k++) {
            const redisReply *name = reply->element[1]->element[k];
            redisReply *value = rp_command(port, "GET %b", name->str, (size_t)name->len);

            r->keys++;
            scan_look(s, "key name", name->str, (size_t)name->len, r);
            ck_assert_ptr_nonnull(value);
            if (value->type != REDIS_REPLY_STRING) {
                /* Not a string: read its serialized form instead. */
                freeReplyObject(value);
                value = rp_command(port, "DUMP %b", name->str, (size_t)name->len);
                ck_assert_ptr_nonnull(value);
            }
            if (value->type == REDIS_REPLY_STRING) {
                r->value_bytes += (long)value->len;
                scan_look(s, "value", value->str, (size_t)value->len, r);
            }
            freeReplyObject(value);
        }
        freeReplyObject(reply);
        ck_assert_int_lt(++rounds, 10000);
    } while (strcmp(cursor, "0") != 0);
}

/* The scan finds nothing; then, as a control, a planted copy of the last
 * secret (a DER window when there are any) is found. */
static void assert_redis_clean(int port, const secrets *s, const char *label)
{
    const secret *planted = &s->item[s->count - 1];
    scan_result r;
    redisReply *reply;

    redis_scan(port, s, &r);
    fprintf(stderr, "%s: Redis holds %ld keys, %ld value bytes; %zu secrets searched, %ld found\n",
            label, r.keys, r.value_bytes, s->count, r.hits);
    ck_assert_msg(r.hits == 0, "%s: %s", label, r.first_hit);
    ck_assert_int_gt(r.keys, 0);

    reply = rp_command(port, "SET cluster-test-control %b", planted->bytes, planted->len);
    ck_assert_ptr_nonnull(reply);
    freeReplyObject(reply);
    redis_scan(port, s, &r);
    ck_assert_msg(r.hits >= 1, "the scanner missed a planted copy of %s", planted->what);
    reply = rp_command(port, "DEL cluster-test-control");
    ck_assert_ptr_nonnull(reply);
    freeReplyObject(reply);
}

/* Polls Redis' key count until it is `want` (at_least: or more), bounded;
 * returns the last count seen. */
static long redis_wait_dbsize(int port, long want, int at_least)
{
    int64_t deadline = th_now_ms() + REDIS_POLL_TIMEOUT_MS;

    for (;;) {
        redisReply *reply = rp_command(port, "DBSIZE");
        long size;

        ck_assert_ptr_nonnull(reply);
        size = reply->type == REDIS_REPLY_INTEGER ? (long)reply->integer : -1;
        freeReplyObject(reply);
        if (size == want || (at_least && size > want) || th_now_ms() >= deadline)
            return size;
        poll_pause();
    }
}

/* How many SETs Redis has executed (INFO commandstats), or -1. */
static long long redis_set_calls(int port)
{
    redisReply *reply = rp_command(port, "INFO commandstats");
    long long calls = -1;
    const char *at;

    ck_assert_ptr_nonnull(reply);
    if (reply->type == REDIS_REPLY_STRING) {
        at = strstr(reply->str, "cmdstat_set:calls=");
        calls = at != NULL ? strtoll(at + strlen("cmdstat_set:calls="), NULL, 10) : 0;
    }
    freeReplyObject(reply);
    return calls;
}

/* Waits (bounded) until Redis has executed as many SETs as the pair's
 * servers have sent stores: the nodes write through without waiting, so a
 * client reconnecting to the other node within a millisecond can get there
 * before the write does. That race is real (a miss, never an error) and
 * counted in *raced; waiting for it keeps the test about sharing. */
static void wait_written_through(int redis_port, const cl_pair *p, int *raced)
{
    int64_t deadline = th_now_ms() + REDIS_POLL_TIMEOUT_MS;
    sc_stats a, b;
    long long want;

    sc_get_stats(p->sc[0], &a);
    sc_get_stats(p->sc[1], &b);
    want = (long long)(a.stores + b.stores);
    if (redis_set_calls(redis_port) >= want)
        return;
    (*raced)++;
    while (redis_set_calls(redis_port) < want) {
        ck_assert_msg(th_now_ms() < deadline, "Redis never got %lld SETs", want);
        poll_pause();
    }
}

/* stunnel number i on a free port (tp_stunnel_start), its sessiond the
 * node's port; the bed's certificate is written by the first call. */
static int stunnel_start(tp_proc *p, const cl_bed *b, int i, int node_port, int sink_port)
{
    char cert[PATH_MAX], key[PATH_MAX];
    int port;

    snprintf(cert, sizeof(cert), "%s/cert.pem", b->dir);
    snprintf(key, sizeof(key), "%s/key.pem", b->dir);
    if (access(cert, R_OK) != 0)
        ck_assert_int_eq(tu_cred_write_pem(&g_server, cert, key), 0);
    port = tp_stunnel_start(p, b->dir, i, cert, key, sink_port, node_port);
    ck_assert_msg(port > 0, "stunnel %d did not start (is Debian's stunnel4 installed?)", i);
    return port;
}

/* ---- the tests ------------------------------------------------------------ */

/* A stock stunnel on node 1 and another on node 2 resume each other's
 * sessions through Redis: TLS 1.2 session IDs (_i 0) and TLS 1.3 stateful
 * tickets (_i 1), with an in-process client over TCP alternating B, A, B...
 * Then Redis is searched for the sessions' IDs and master secrets. */
START_TEST(test_stunnel_across_nodes)
{
    int version = _i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    cl_bed b;
    tp_proc st[2];
    int port[2];
    int sink_port, sink;
    secrets s = {0};
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    tu_hs_result res;
    int resumed = 0;
    long long backend_hits[2];

    bed_two_nodes(&b, g_plaintext_args);
    sink = tp_tcp_sink(&sink_port);
    for (int i = 0; i < 2; i++)
        port[i] = stunnel_start(&st[i], &b, i, b.port[i], sink_port);

    client_ctx = tu_client_ctx(version, NULL);
    ck_assert_ptr_nonnull(client_ctx);
    ck_assert_msg(tu_tcp_handshake(client_ctx, port[0], NULL, SESSION_WAIT_MS, &res) == 0,
                  "first handshake: %s", res.error);
    ck_assert_ptr_nonnull(res.session);
    sess = res.session;
    secrets_add_session(&s, sess);
    for (int i = 0; i < STUNNEL_ALTERNATIONS; i++) {
        int which = i % 2 == 0 ? 1 : 0;

        ck_assert_msg(tu_tcp_handshake(client_ctx, port[which], sess, SESSION_WAIT_MS, &res) == 0,
                      "reconnection %d: %s", i, res.error);
        ck_assert_int_eq(res.version, version);
        resumed += res.resumed;
        ck_assert_ptr_nonnull(res.session);
        SSL_SESSION_free(sess);
        sess = res.session;
        secrets_add_session(&s, sess);
    }
    for (int i = 0; i < 2; i++)
        backend_hits[i] = cl_node_stat(&b, i, "backend_hits");
    fprintf(stderr,
            "stunnel TLS %s across nodes: %d of %d reconnections resumed; backend_hits node1=%lld "
            "node2=%lld\n",
            version == TLS1_3_VERSION ? "1.3" : "1.2", resumed, STUNNEL_ALTERNATIONS,
            backend_hits[0], backend_hits[1]);
    ck_assert_int_ge(resumed, STUNNEL_ALTERNATIONS - ALLOWED_LATE_GETS);
    /* Node 2 never saw a NEW for A's session: its hits came from Redis.
     * With TLS 1.3 each resumption makes a ticket on the other node, so
     * both nodes fetch about one per reconnection of theirs. */
    ck_assert_int_ge(backend_hits[1], 1);
    if (version == TLS1_3_VERSION) {
        ck_assert_int_ge(backend_hits[0], STUNNEL_ALTERNATIONS / 2 - ALLOWED_LATE_GETS);
        ck_assert_int_ge(backend_hits[1], STUNNEL_ALTERNATIONS / 2 - ALLOWED_LATE_GETS);
    }
    assert_redis_clean(b.redis[0].port, &s, "stunnel");

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    secrets_free(&s);
    for (int i = 0; i < 2; i++)
        tp_stop(&st[i]);
    close(sink);
    cl_close(&b);
}
END_TEST

/* libsessionc servers over sealed v2: A on node 1 only, B on node 2 only,
 * OpenSSL's internal cache off; 100 reconnections alternating B, A, ...
 * all resume. Then Redis holds none of the sessions' IDs, master secrets,
 * or any 16 bytes of the DER sessiond serves for the newest session. */
START_TEST(test_sessionc_across_nodes)
{
    int version = _i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    tu_server_opts tls = {.version = version, .no_ticket = 1, .no_internal_cache = 1};
    cl_bed b;
    cl_pair p;
    secrets s = {0};
    sc_stats st[2];
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    tu_hs_result res;
    sc_client *raw;
    static uint8_t der[65536];
    unsigned char key[32];
    size_t key_len, der_len = 0;
    int resumed = 0, failed = 0, raced = 0;
    long long backend_hits[2];

    bed_two_nodes(&b, NULL);
    cl_pair_open(&p, &b, &g_server, &tls, CL_NODE1, CL_NODE2, NULL);
    client_ctx = tu_client_ctx(version, NULL);
    ck_assert_ptr_nonnull(client_ctx);

    ck_assert_msg(tu_handshake(client_ctx, p.ctx[0], NULL, &res) == 0, "full: %s", res.error);
    ck_assert_int_eq(res.resumed, 0);
    sess = res.session;
    secrets_add_session(&s, sess);
    for (int i = 0; i < RECONNECTIONS; i++) {
        int which = i % 2 == 0 ? 1 : 0;

        wait_written_through(b.redis[0].port, &p, &raced);
        if (tu_handshake(client_ctx, p.ctx[which], sess, &res) != 0) {
            fprintf(stderr, "reconnection %d to %c failed: %s\n", i, "AB"[which], res.error);
            failed++;
            continue;
        }
        if (!res.resumed)
            fprintf(stderr, "reconnection %d to %c did not resume\n", i, "AB"[which]);
        resumed += res.resumed;
        SSL_SESSION_free(sess);
        sess = res.session;
        secrets_add_session(&s, sess);
    }
    sc_get_stats(p.sc[0], &st[0]);
    sc_get_stats(p.sc[1], &st[1]);
    for (int i = 0; i < 2; i++)
        backend_hits[i] = cl_node_stat(&b, i, "backend_hits");
    fprintf(stderr,
            "libsessionc TLS %s across nodes: %d of %d resumed; hits A=%llu B=%llu; "
            "backend_hits node1=%lld node2=%lld; %d reconnections waited for the write-through\n",
            version == TLS1_3_VERSION ? "1.3" : "1.2", resumed, RECONNECTIONS,
            (unsigned long long)st[0].hits, (unsigned long long)st[1].hits, backend_hits[0],
            backend_hits[1], raced);
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(resumed, RECONNECTIONS);
    ck_assert_int_eq(SSL_CTX_sess_number(p.ctx[0]), 0);
    ck_assert_int_eq(SSL_CTX_sess_number(p.ctx[1]), 0);
    ck_assert_uint_eq(st[0].hits, RECONNECTIONS / 2);
    ck_assert_uint_eq(st[1].hits, RECONNECTIONS / 2);
    ck_assert_uint_eq(st[0].timeouts + st[1].timeouts + st[0].errors + st[1].errors, 0);
    /* B's node never got a store for A's session: Redis served it. */
    ck_assert_int_ge(backend_hits[1], 1);
    if (version == TLS1_3_VERSION) {
        /* Every reconnection used a ticket the other node stored. */
        ck_assert_int_ge(backend_hits[0], RECONNECTIONS / 2);
        ck_assert_int_ge(backend_hits[1], RECONNECTIONS / 2);
    }

    /* The DER sessiond serves for the newest session, read back raw
     * through node 2 (from Redis or its near copy: the same bytes). */
    key_len = tu_session_server_key(sess, key);
    ck_assert_uint_gt(key_len, 0);
    raw = cl_client(&b, CL_NODE2, NULL);
    ck_assert_int_eq(sc_get(raw, key, key_len, der, sizeof(der), &der_len), SC_OK);
    secrets_add_der(&s, der, der_len);
    OPENSSL_cleanse(der, der_len);
    sc_client_free(raw);
    assert_redis_clean(b.redis[0].port, &s, "libsessionc");

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    secrets_free(&s);
    cl_pair_close(&p);
    cl_close(&b);
}
END_TEST

/* Node 2 is killed; 50 sessions are made on server A (node 1) meanwhile;
 * node 2 comes back on its port and server B (node 2 only) resumes all 50
 * at once: they come from Redis, no miss storm after a restart. */
START_TEST(test_restarted_node_serves_sessions)
{
    int version = _i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    tu_server_opts tls = {.version = version, .no_ticket = 1, .no_internal_cache = 1};
    cl_bed b;
    cl_pair p;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess[RESTART_SESSIONS];
    sc_stats st;
    long long backend_hits;
    long stored;
    int resumed = 0;

    bed_two_nodes(&b, NULL);
    cl_pair_open(&p, &b, &g_server, &tls, CL_NODE1, CL_NODE2, NULL);
    client_ctx = tu_client_ctx(version, NULL);
    ck_assert_ptr_nonnull(client_ctx);

    cl_node_kill(&b, 1);
    for (int i = 0; i < RESTART_SESSIONS; i++) {
        tu_hs_result res;

        ck_assert_msg(tu_handshake(client_ctx, p.ctx[0], NULL, &res) == 0, "full %d: %s", i,
                      res.error);
        ck_assert_int_eq(res.resumed, 0);
        sess[i] = res.session;
    }
    /* Every session is in Redis before node 2 returns (TLS 1.3: two
     * tickets per full handshake). */
    stored = RESTART_SESSIONS * (version == TLS1_3_VERSION ? 2 : 1);
    ck_assert_int_ge(redis_wait_dbsize(b.redis[0].port, stored, 1), stored);
    cl_node_start(&b, 1, NULL);

    for (int i = 0; i < RESTART_SESSIONS; i++) {
        tu_hs_result res;

        ck_assert_msg(tu_handshake(client_ctx, p.ctx[1], sess[i], &res) == 0, "resume %d: %s", i,
                      res.error);
        resumed += res.resumed;
        tu_hs_result_clear(&res);
        SSL_SESSION_free(sess[i]);
    }
    sc_get_stats(p.sc[1], &st);
    backend_hits = cl_node_stat(&b, 1, "backend_hits");
    fprintf(stderr,
            "restart, TLS %s: %d/%d resumed on the restarted node; B misses=%llu timeouts=%llu; "
            "node2 backend_hits=%lld\n",
            version == TLS1_3_VERSION ? "1.3" : "1.2", resumed, RESTART_SESSIONS,
            (unsigned long long)st.misses, (unsigned long long)st.timeouts, backend_hits);
    ck_assert_int_eq(resumed, RESTART_SESSIONS);
    ck_assert_uint_eq(st.misses + st.timeouts + st.errors, 0);
    ck_assert_int_ge(backend_hits, RESTART_SESSIONS);

    SSL_CTX_free(client_ctx);
    cl_pair_close(&p);
    cl_close(&b);
}
END_TEST

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Redis unreachable: _i 0, a closed port from the start; _i 1, a Redis
 * that stops answering (SIGSTOP) after the node connected. The node still
 * serves PUT/GET from memory, and GET misses (each asks Redis) are
 * answered within the backend timeout plus a margin (p99 over 200; every
 * one before the client's 200 ms timeout), and counted unavailable. */
START_TEST(test_redis_unreachable)
{
    char timeout_arg[16];
    const char *extra[] = {"--backend-timeout", timeout_arg, NULL};
    cl_bed b;
    sc_client *c;
    static int64_t took_us[UNREACHABLE_MISSES];
    uint8_t value[300], got[300];
    size_t got_len;
    long long unavailable, up;

    snprintf(timeout_arg, sizeof(timeout_arg), "%d", UNREACHABLE_OP_MS);
    cl_open(&b);
    if (_i == 0) {
        char url[64];
        int closed = th_free_tcp_port();

        ck_assert_int_gt(closed, 0);
        snprintf(url, sizeof(url), "redis://127.0.0.1:%d", closed);
        cl_use_backend(&b, url, NULL); /* it never comes up */
    } else {
        ck_assert_int_eq(rp_redis_start(&b.redis[0], NULL, 0), 0);
        cl_use_redis(&b, b.redis[0].port);
    }
    cl_node_start(&b, 0, extra);
    if (_i == 1)
        ck_assert_int_eq(rp_stop(&b.redis[0]), 0);
    c = cl_client(&b, CL_NODE1, NULL);

    /* Memory still serves: 20 puts, each read back. */
    for (unsigned i = 0; i < 20; i++) {
        uint8_t id[8] = {'l', 'o', 'c', 'a', 'l', 0, 0, (uint8_t)i};

        RAND_bytes(value, sizeof(value));
        ck_assert_int_eq(sc_put_wait(c, id, sizeof(id), value, sizeof(value), 60), SC_OK);
        ck_assert_int_eq(sc_get(c, id, sizeof(id), got, sizeof(got), &got_len), SC_OK);
        ck_assert_uint_eq(got_len, sizeof(value));
        ck_assert_mem_eq(got, value, sizeof(value));
    }
    /* Misses: each one asks the backend, which must not hold it up. */
    for (int i = 0; i < UNREACHABLE_MISSES; i++) {
        uint8_t id[16];
        int64_t start = now_us();
        sc_result r;

        RAND_bytes(id, sizeof(id));
        r = sc_get(c, id, sizeof(id), got, sizeof(got), &got_len);
        took_us[i] = now_us() - start;
        ck_assert_msg(r == SC_NOT_FOUND, "miss %d: %s", i, sc_result_name(r));
    }
    qsort(took_us, UNREACHABLE_MISSES, sizeof(took_us[0]), cmp_i64);
    unavailable = cl_node_stat(&b, 0, "backend_unavailable");
    up = cl_node_stat(&b, 0, "backend_up");
    fprintf(stderr,
            "Redis %s: %d GET misses, p50 %lld us, p99 %lld us, p100 %lld us (backend timeout "
            "%d ms); backend_unavailable=%lld backend_up=%lld\n",
            _i == 0 ? "unreachable from the start" : "stopped", UNREACHABLE_MISSES,
            (long long)took_us[UNREACHABLE_MISSES / 2],
            (long long)took_us[UNREACHABLE_MISSES * 99 / 100],
            (long long)took_us[UNREACHABLE_MISSES - 1], UNREACHABLE_OP_MS, unavailable, up);
    /* p99, not p100, against the budget: on a shared machine one miss in
     * 200 can lose the CPU for tens of ms (seen: 72 and 131 ms under load,
     * while its neighbours took 33). The slowest is still bounded, by the
     * client's timeout: a late answer would have been SC_TIMEOUT above. */
    ck_assert_int_lt(took_us[UNREACHABLE_MISSES * 99 / 100],
                     (int64_t)(UNREACHABLE_OP_MS + UNREACHABLE_SLACK_MS) * 1000);
    ck_assert_int_gt(unavailable, 0);
    if (_i == 0)
        ck_assert_int_eq(up, 0);

    sc_client_free(c);
    if (_i == 1)
        ck_assert_int_eq(rp_cont(&b.redis[0]), 0);
    cl_close(&b);
}
END_TEST

typedef struct taker {
    sc_client *c;
    pthread_barrier_t *barrier;
    sc_result result[TAKE_KEYS];
    uint8_t value[TAKE_KEYS][64];
} taker;

static void take_key_id(int k, uint8_t id[12])
{
    memcpy(id, "take-key-", 9);
    id[9] = (uint8_t)k;
    id[10] = 't';
    id[11] = '!';
}

/* Each key taken by both threads at once (a barrier per key). */
static void *taker_main(void *arg)
{
    taker *t = arg;

    for (int k = 0; k < TAKE_KEYS; k++) {
        uint8_t id[12];
        size_t len = 0;

        take_key_id(k, id);
        pthread_barrier_wait(t->barrier);
        t->result[k] = sc_take(t->c, id, sizeof(id), t->value[k], sizeof(t->value[k]), &len);
        if (t->result[k] == SC_OK && len != sizeof(t->value[k]))
            t->result[k] = SC_ERR_TOO_LARGE; /* wrong size: counted as a failure below */
    }
    return NULL;
}

/* Anti-replay through Redis: 50 keys put through node 1, each taken at
 * the same moment through node 1 and node 2: exactly one take per key
 * gets it, with the value that was put. */
START_TEST(test_take_once_across_nodes)
{
    cl_bed b;
    taker t[2];
    pthread_t tid[2];
    pthread_barrier_t barrier;
    uint8_t value[TAKE_KEYS][64];
    int wins[2] = {0, 0};

    bed_two_nodes(&b, NULL);
    for (int i = 0; i < 2; i++)
        t[i].c = cl_client(&b, i == 0 ? CL_NODE1 : CL_NODE2, NULL);
    for (int k = 0; k < TAKE_KEYS; k++) {
        uint8_t id[12];

        take_key_id(k, id);
        RAND_bytes(value[k], sizeof(value[k]));
        ck_assert_int_eq(sc_put_wait(t[0].c, id, sizeof(id), value[k], sizeof(value[k]), 60),
                         SC_OK);
    }
    /* Written through before the race starts, so node 2 can see them. */
    ck_assert_int_eq(redis_wait_dbsize(b.redis[0].port, TAKE_KEYS, 0), TAKE_KEYS);

    ck_assert_int_eq(pthread_barrier_init(&barrier, NULL, 2), 0);
    for (int i = 0; i < 2; i++) {
        t[i].barrier = &barrier;
        ck_assert_int_eq(pthread_create(&tid[i], NULL, taker_main, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(tid[i], NULL);
    pthread_barrier_destroy(&barrier);

    for (int k = 0; k < TAKE_KEYS; k++) {
        int ok = 0;

        for (int i = 0; i < 2; i++) {
            ck_assert_msg(t[i].result[k] == SC_OK || t[i].result[k] == SC_NOT_FOUND,
                          "key %d, node %d: %s", k, i + 1, sc_result_name(t[i].result[k]));
            if (t[i].result[k] == SC_OK) {
                ok++;
                wins[i]++;
                ck_assert_mem_eq(t[i].value[k], value[k], sizeof(value[k]));
            }
        }
        ck_assert_msg(ok == 1, "key %d taken %d times", k, ok);
    }
    fprintf(stderr, "take race: %d keys, each taken once (node1 won %d, node2 won %d)\n", TAKE_KEYS,
            wins[0], wins[1]);
    /* Taken means gone, everywhere. */
    ck_assert_int_eq(redis_wait_dbsize(b.redis[0].port, 0, 0), 0);

    for (int i = 0; i < 2; i++)
        sc_client_free(t[i].c);
    cl_close(&b);
}
END_TEST

/* Gets through c until the answer is `want` (a value, or NULL: not found),
 * bounded. Returns the milliseconds it took, or -1. */
static int64_t wait_get(sc_client *c, const uint8_t *id, size_t id_len, const uint8_t *want,
                        size_t want_len)
{
    int64_t start = th_now_ms();
    uint8_t got[256];
    size_t got_len = 0;

    for (;;) {
        sc_result r = sc_get(c, id, id_len, got, sizeof(got), &got_len);

        if (want == NULL && r == SC_NOT_FOUND)
            return th_now_ms() - start;
        if (want != NULL && r == SC_OK && got_len == want_len && memcmp(got, want, want_len) == 0)
            return th_now_ms() - start;
        if (th_now_ms() - start > COHERENCE_TIMEOUT_MS)
            return -1;
        poll_pause();
    }
}

/* Near-cache coherence: put through node 1, get through node 2 (which now
 * holds a near copy), delete through node 1: node 2 gets the invalidation
 * and stops answering it, and keeps not answering. (A replaced value is not
 * published, by design: backend_redis.c; the near-cache lifetime bounds
 * it, too long to wait for here.) */
START_TEST(test_near_cache_coherence)
{
    static const uint8_t id[] = "coherence-key";
    cl_bed b;
    sc_client *c[2];
    uint8_t v1[100], got[256];
    size_t got_len;
    int64_t took_put, took_delete;
    long long hits_before, hits_after, invalidated;

    bed_two_nodes(&b, NULL);
    c[0] = cl_client(&b, CL_NODE1, NULL);
    c[1] = cl_client(&b, CL_NODE2, NULL);
    RAND_bytes(v1, sizeof(v1));

    ck_assert_int_eq(sc_put_wait(c[0], id, sizeof(id), v1, sizeof(v1), 60), SC_OK);
    took_put = wait_get(c[1], id, sizeof(id), v1, sizeof(v1));
    ck_assert_int_ge(took_put, 0);
    /* Node 2 got it from Redis and now answers from its near copy. */
    hits_before = cl_node_stat(&b, 1, "backend_hits");
    ck_assert_int_ge(hits_before, 1);
    for (int i = 0; i < 5; i++) {
        ck_assert_int_eq(sc_get(c[1], id, sizeof(id), got, sizeof(got), &got_len), SC_OK);
        ck_assert_mem_eq(got, v1, sizeof(v1));
    }
    hits_after = cl_node_stat(&b, 1, "backend_hits");
    ck_assert_int_eq(cl_node_stat(&b, 1, "backend_invalidated"), 0);

    ck_assert_int_eq(sc_remove_wait(c[0], id, sizeof(id)), SC_OK);
    took_delete = wait_get(c[1], id, sizeof(id), NULL, 0);
    ck_assert_msg(took_delete >= 0, "node 2 kept serving a deleted entry for %d ms",
                  COHERENCE_TIMEOUT_MS);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(sc_get(c[1], id, sizeof(id), got, sizeof(got), &got_len), SC_NOT_FOUND);
    ck_assert_int_eq(sc_get(c[0], id, sizeof(id), got, sizeof(got), &got_len), SC_NOT_FOUND);
    invalidated = cl_node_stat(&b, 1, "backend_invalidated");
    fprintf(stderr,
            "near-cache coherence: node 2 saw the put after %lld ms and the delete after %lld ms; "
            "node2 backend_hits %lld -> %lld over 5 near gets, backend_invalidated=%lld\n",
            (long long)took_put, (long long)took_delete, hits_before, hits_after, invalidated);
    ck_assert_int_ge(invalidated, 1);

    sc_client_free(c[0]);
    sc_client_free(c[1]);
    cl_close(&b);
}
END_TEST

static Suite *cluster_suite(void)
{
    Suite *s = suite_create("cluster");
    TCase *tc = tcase_create("two nodes on one Redis");

    /* Generous: the sanitizer build is several times slower. */
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_stunnel_across_nodes, 0, 2);
    tcase_add_loop_test(tc, test_sessionc_across_nodes, 0, 2);
    tcase_add_loop_test(tc, test_restarted_node_serves_sessions, 0, 2);
    tcase_add_loop_test(tc, test_redis_unreachable, 0, 2);
    tcase_add_test(tc, test_take_once_across_nodes);
    tcase_add_test(tc, test_near_cache_coherence);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite_with_server(cluster_suite(), &g_server);
}
