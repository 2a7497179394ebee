/* check_backend_redis.c — the Redis backend (backend_redis.c) against a real
 * redis-server on a free loopback port.
 *
 * Each test starts its own redis-server (no persistence, killed with the
 * test process through PR_SET_PDEATHSIG if a test dies), waits for it by
 * polling PING with a bound, and drives the backend from a libevent loop run
 * in short bounded slices until a condition holds (a completion arrived, the
 * backend is up): no sleeps as synchronisation. A plain synchronous hiredis
 * connection plays the operator with redis-cli: it lists and reads what the
 * backend stored, tampers with values, reads TTLs.
 *
 * Covered: put/get/del/take/add round trips with binary keys and values;
 * Redis holds no session ID and no value bytes (every key and value scanned
 * for the raw byte strings), names are "sd:" + 32 hex digits; take from two
 * backends on one Redis succeeds exactly once; add from two, exactly one
 * EXISTS; PTTL within (0, ttl]; Redis killed: ops complete UNAVAILABLE in
 * under 100 ms, and after a restart on the same port the backend reconnects
 * (counted) and works; Redis stopped (SIGSTOP): ops time out UNAVAILABLE,
 * the in-flight cap refuses the excess at once, late replies are dropped;
 * a stalled connection is dropped and remade; junk or a value moved to
 * another name completes ERROR and is counted as corrupt; unreachable from
 * the start; AUTH right and wrong; pending ops completed by backend_free;
 * target parsing (redis:// and sentinel://). Latency histogram: its buckets
 * add up to the answered ops, late replies excluded. Invalidation between
 * two backends on one Redis: a del or take on A calls B's hook with exactly
 * the key and not A's; put publishes nothing; the channel carries no key
 * bytes; forged or junk messages are counted corrupt and ignored; the
 * subscriptions come back after a Redis restart. (Sentinel: check_sentinel.c.)
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis.h>
#include <openssl/rand.h>

#include "backend.h"
#include "backend_redis.h"
#include "harness.h"
#include "redis_proc.h"
#include "checks.h"
#include "loop.h"

#define WAIT_MS 5000

/* A synchronous connection, or NULL. */
static redisContext *sync_connect(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    return c;
}

/* --- the event loop and completions ------------------------------------ */

static struct event_base *evbase;
static rp_proc rp;
static uint8_t cluster_key[32];

static backend *make_backend_cfg(backend_redis_config *cfg)
{
    char target[64], err[256] = "";
    snprintf(target, sizeof(target), "redis://127.0.0.1:%d", rp.port);
    if (!cfg->target)
        cfg->target = target;
    cfg->cluster_key = cluster_key;
    backend *b = backend_redis_new(evbase, cfg, err, sizeof(err));
    ck_assert_msg(b != NULL, "backend_redis_new: %s", err);
    return b;
}

static backend *make_backend(void)
{
    backend_redis_config cfg = {0};
    backend *b = make_backend_cfg(&cfg);
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0, "backend not up");
    return b;
}

static uint64_t histogram_count(const backend_stats *st)
{
    uint64_t n = 0;
    for (int i = 0; i < BACKEND_LATENCY_BUCKETS; i++)
        n += st->latency_buckets[i];
    return n;
}

/* Completions that carried an answer from Redis (not UNAVAILABLE). */
static uint64_t answered(const backend_stats *st)
{
    return st->by_status[BACKEND_OK] + st->by_status[BACKEND_NOT_FOUND] +
           st->by_status[BACKEND_EXISTS] + st->by_status[BACKEND_ERROR];
}

static void setup(void)
{
    ck_assert_int_eq(RAND_bytes(cluster_key, sizeof(cluster_key)), 1);
    evbase = event_base_new();
    ck_assert_ptr_nonnull(evbase);
    ck_assert_msg(rp_redis_start(&rp, NULL, 0) == 0, "redis-server did not start");
}

static void teardown(void)
{
    rp_kill(&rp);
    event_base_free(evbase);
}

static void do_put(backend *b, const uint8_t *key, size_t key_len, const uint8_t *v, size_t n,
                   uint64_t ttl)
{
    tl_result r = {0};
    backend_put(b, key, key_len, v, n, ttl, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
}

START_TEST(test_roundtrip)
{
    backend *b = make_backend();
    uint8_t key[49], val[300];
    tl_random_key(key);
    ck_assert_int_eq(RAND_bytes(val, sizeof(val)), 1);
    tl_result r = {0};
    backend_get(b, key, sizeof(key), tl_record, &r);
    ck_assert_int_eq(r.calls, 0); /* asynchronous while up */
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);

    do_put(b, key, sizeof(key), val, sizeof(val), 10000);
    memset(&r, 0, sizeof(r));
    backend_get(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_uint_eq(r.value_len, sizeof(val));
    ck_assert_mem_eq(r.value, val, sizeof(val));

    memset(&r, 0, sizeof(r));
    backend_del(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    memset(&r, 0, sizeof(r));
    backend_del(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);

    do_put(b, key, sizeof(key), val, 1, 10000);
    memset(&r, 0, sizeof(r));
    backend_take(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_uint_eq(r.value_len, 1);
    ck_assert_int_eq(r.value[0], val[0]);
    memset(&r, 0, sizeof(r));
    backend_take(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);

    memset(&r, 0, sizeof(r));
    backend_add(b, key, sizeof(key), val, sizeof(val), 10000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    memset(&r, 0, sizeof(r));
    backend_add(b, key, sizeof(key), val, 5, 10000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_EXISTS);
    memset(&r, 0, sizeof(r));
    backend_get(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_uint_eq(r.value_len, sizeof(val)); /* the first add's value */

    /* Bad arguments complete ERROR synchronously. */
    memset(&r, 0, sizeof(r));
    backend_put(b, key, 0, val, 1, 100, tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_ERROR);

    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.up, 1);
    ck_assert_uint_eq(st.inflight, 0);
    ck_assert_uint_eq(st.errors + st.corrupt + st.timeouts, 0);
    ck_assert_str_eq(b->ops->name, "redis");
    backend_free(b);
}
END_TEST

START_TEST(test_nothing_usable_in_redis)
{
    backend *b = make_backend();
    enum { N = 20 };
    uint8_t keys[N][49], vals[N][200];
    for (int i = 0; i < N; i++) {
        tl_random_key(keys[i]);
        ck_assert_int_eq(RAND_bytes(vals[i], sizeof(vals[i])), 1);
        do_put(b, keys[i], sizeof(keys[i]), vals[i], sizeof(vals[i]), 60000);
    }
    redisContext *c = sync_connect(rp.port);
    ck_assert_ptr_nonnull(c);
    redisReply *all = redisCommand(c, "KEYS *");
    ck_assert_ptr_nonnull(all);
    ck_assert_int_eq(all->type, REDIS_REPLY_ARRAY);
    ck_assert_uint_eq(all->elements, N);
    for (size_t k = 0; k < all->elements; k++) {
        const redisReply *name = all->element[k];
        ck_assert_uint_eq(name->len, BACKEND_REDIS_NAME_LEN);
        ck_assert(strncmp(name->str, "sd:", 3) == 0);
        ck_assert_uint_eq(strspn(name->str + 3, "0123456789abcdef"), 32);
        redisReply *v = redisCommand(c, "GET %b", name->str, name->len);
        ck_assert_ptr_nonnull(v);
        ck_assert_int_eq(v->type, REDIS_REPLY_STRING);
        ck_assert_uint_eq(v->len, sizeof(vals[0]) + BACKEND_REDIS_SEAL_OVERHEAD);
        for (int i = 0; i < N; i++) {
            /* Session ID (and the whole key), the value, and any 8-byte window of either. */
            ck_assert_ptr_null(memmem(name->str, name->len, keys[i] + 17, 32));
            ck_assert_ptr_null(memmem(v->str, v->len, keys[i] + 17, 32));
            ck_assert_ptr_null(memmem(v->str, v->len, vals[i], sizeof(vals[i])));
            for (size_t off = 0; off + 8 <= sizeof(vals[i]); off += 8)
                ck_assert_ptr_null(memmem(v->str, v->len, vals[i] + off, 8));
            for (size_t off = 0; off + 8 <= 32; off += 8)
                ck_assert_ptr_null(memmem(name->str, name->len, keys[i] + 17 + off, 8));
        }
        freeReplyObject(v);
    }
    /* Each key's name is what backend_redis_key_name says. */
    char name0[BACKEND_REDIS_NAME_LEN + 1];
    ck_assert_int_eq(backend_redis_key_name(b, keys[0], sizeof(keys[0]), name0), 0);
    redisReply *ex = redisCommand(c, "EXISTS %s", name0);
    ck_assert_int_eq(ex->integer, 1);
    freeReplyObject(ex);
    freeReplyObject(all);
    redisFree(c);
    backend_free(b);
}
END_TEST

START_TEST(test_take_exactly_once_across_nodes)
{
    backend *b1 = make_backend(), *b2 = make_backend();
    for (int round = 0; round < 20; round++) {
        uint8_t key[49], val[64];
        tl_random_key(key);
        ck_assert_int_eq(RAND_bytes(val, sizeof(val)), 1);
        do_put(round % 2 ? b1 : b2, key, sizeof(key), val, sizeof(val), 10000);
        tl_result r1 = {0}, r2 = {0};
        backend_take(b1, key, sizeof(key), tl_record, &r1);
        backend_take(b2, key, sizeof(key), tl_record, &r2);
        tl_wait_done(evbase, &r1, WAIT_MS);
        tl_wait_done(evbase, &r2, WAIT_MS);
        ck_assert_int_eq((r1.status == BACKEND_OK) + (r2.status == BACKEND_OK), 1);
        ck_assert_int_eq((r1.status == BACKEND_NOT_FOUND) + (r2.status == BACKEND_NOT_FOUND), 1);
        const tl_result *winner = r1.status == BACKEND_OK ? &r1 : &r2;
        ck_assert_mem_eq(winner->value, val, sizeof(val));
    }
    backend_free(b1);
    backend_free(b2);
}
END_TEST

START_TEST(test_add_exactly_once_across_nodes)
{
    backend *b1 = make_backend(), *b2 = make_backend();
    for (int round = 0; round < 20; round++) {
        uint8_t key[49];
        tl_random_key(key);
        tl_result r1 = {0}, r2 = {0};
        backend_add(b1, key, sizeof(key), (const uint8_t *)"one", 3, 10000, tl_record, &r1);
        backend_add(b2, key, sizeof(key), (const uint8_t *)"two", 3, 10000, tl_record, &r2);
        tl_wait_done(evbase, &r1, WAIT_MS);
        tl_wait_done(evbase, &r2, WAIT_MS);
        ck_assert_int_eq((r1.status == BACKEND_OK) + (r2.status == BACKEND_OK), 1);
        ck_assert_int_eq((r1.status == BACKEND_EXISTS) + (r2.status == BACKEND_EXISTS), 1);
        /* Both nodes read the winner's value (sealed by one, opened by the other). */
        tl_result g = {0};
        backend_get(round % 2 ? b1 : b2, key, sizeof(key), tl_record, &g);
        tl_wait_done(evbase, &g, WAIT_MS);
        ck_assert_int_eq(g.status, BACKEND_OK);
        ck_assert_mem_eq(g.value, r1.status == BACKEND_OK ? "one" : "two", 3);
    }
    backend_free(b1);
    backend_free(b2);
}
END_TEST

START_TEST(test_ttl)
{
    backend *b = make_backend();
    uint8_t key[49];
    tl_random_key(key);
    do_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 5000);
    char name[BACKEND_REDIS_NAME_LEN + 1];
    ck_assert_int_eq(backend_redis_key_name(b, key, sizeof(key), name), 0);
    redisContext *c = sync_connect(rp.port);
    ck_assert_ptr_nonnull(c);
    redisReply *t = redisCommand(c, "PTTL %s", name);
    ck_assert_int_eq(t->type, REDIS_REPLY_INTEGER);
    ck_assert_int_gt(t->integer, 0);
    ck_assert_int_le(t->integer, 5000);
    freeReplyObject(t);
    /* add sets a TTL too. */
    tl_random_key(key);
    tl_result r = {0};
    backend_add(b, key, sizeof(key), (const uint8_t *)"v", 1, 3000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(backend_redis_key_name(b, key, sizeof(key), name), 0);
    t = redisCommand(c, "PTTL %s", name);
    ck_assert_int_gt(t->integer, 0);
    ck_assert_int_le(t->integer, 3000);
    freeReplyObject(t);
    /* A short TTL really expires (Redis' clock; bounded wait on the condition). */
    tl_random_key(key);
    do_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 30);
    ck_assert_int_eq(backend_redis_key_name(b, key, sizeof(key), name), 0);
    uint64_t end = tl_now_ms() + WAIT_MS;
    int gone = 0;
    while (!gone && tl_now_ms() < end) {
        memset(&r, 0, sizeof(r));
        backend_get(b, key, sizeof(key), tl_record, &r);
        tl_wait_done(evbase, &r, WAIT_MS);
        gone = r.status == BACKEND_NOT_FOUND;
    }
    ck_assert(gone);
    redisFree(c);
    backend_free(b);
}
END_TEST

START_TEST(test_redis_killed_and_restarted)
{
    backend *b = make_backend();
    uint8_t key[49];
    tl_random_key(key);
    do_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000);
    int port = rp.port;
    rp_kill(&rp);
    /* Right after the kill, before the loop has seen the EOF. */
    tl_result r = {0};
    uint64_t t0 = tl_now_ms();
    backend_get(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
    ck_assert_uint_lt(r.done_ms - t0, 100);
    /* Once the loss is noticed: synchronous. */
    for (int i = 0; i < 5; i++) {
        memset(&r, 0, sizeof(r));
        t0 = tl_now_ms();
        backend_put(b, key, sizeof(key), (const uint8_t *)"w", 1, 1000, tl_record, &r);
        tl_wait_done(evbase, &r, WAIT_MS);
        ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
        ck_assert_uint_lt(r.done_ms - t0, 100);
    }
    ck_assert(!backend_redis_is_up(b));
    ck_assert_msg(rp_redis_start_on(&rp, port, NULL, 0) == 0, "restart on port %d failed", port);
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0, "no reconnect");
    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_ge(st.reconnects, 1);
    ck_assert_uint_ge(st.disconnects, 1);
    /* Works again (the new Redis is empty: nothing was replayed). */
    memset(&r, 0, sizeof(r));
    backend_get(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
    do_put(b, key, sizeof(key), (const uint8_t *)"x", 1, 60000);
    memset(&r, 0, sizeof(r));
    backend_get(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_int_eq(r.value[0], 'x');
    backend_free(b);
}
END_TEST

START_TEST(test_unreachable_from_start)
{
    int port = rp.port;
    rp_kill(&rp);
    char target[64], err[256] = "";
    snprintf(target, sizeof(target), "redis://127.0.0.1:%d", port);
    backend_redis_config cfg = {.target = target, .cluster_key = cluster_key};
    backend *b = backend_redis_new(evbase, &cfg, err, sizeof(err));
    ck_assert_ptr_nonnull(b);
    uint8_t key[49];
    tl_random_key(key);
    for (int i = 0; i < 3; i++) {
        tl_result r = {0};
        backend_get(b, key, sizeof(key), tl_record, &r);
        ck_assert_int_eq(r.calls, 1); /* synchronously */
        ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
        tl_pump(evbase, 20); /* let a few connect attempts fail in between */
    }
    ck_assert(!backend_redis_is_up(b));
    /* Comes up once Redis does. */
    ck_assert(rp_redis_start_on(&rp, port, NULL, 0) == 0);
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0, "no connect");
    backend_free(b);
}
END_TEST

START_TEST(test_slow_redis_times_out)
{
    backend_redis_config cfg = {.op_timeout_ms = 50, .max_inflight = 4, .stall_ms = 60000};
    backend *b = make_backend_cfg(&cfg);
    ck_assert(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0);
    uint8_t key[49];
    tl_random_key(key);
    do_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000);
    rp_stop(&rp);
    tl_result r[6];
    memset(r, 0, sizeof(r));
    uint64_t t0 = tl_now_ms();
    for (int i = 0; i < 6; i++)
        backend_get(b, key, sizeof(key), tl_record, &r[i]);
    /* Over the cap: refused at once. */
    ck_assert_int_eq(r[4].calls, 1);
    ck_assert_int_eq(r[4].status, BACKEND_UNAVAILABLE);
    ck_assert_int_eq(r[5].status, BACKEND_UNAVAILABLE);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(r[i].calls, 0);
    for (int i = 0; i < 4; i++) {
        tl_wait_done(evbase, &r[i], WAIT_MS);
        ck_assert_int_eq(r[i].status, BACKEND_UNAVAILABLE);
        ck_assert_uint_ge(r[i].done_ms - t0, 45);
        ck_assert_uint_lt(r[i].done_ms - t0, 150);
    }
    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.timeouts, 4);
    ck_assert_uint_eq(st.rejected_busy, 2);
    ck_assert_uint_eq(st.inflight, 4); /* still owed a reply */
    rp_cont(&rp);
    /* The late replies are dropped (no second completion) and free the slots. */
    tl_result g = {0};
    uint64_t end = tl_now_ms() + WAIT_MS;
    for (;;) {
        memset(&g, 0, sizeof(g));
        backend_get(b, key, sizeof(key), tl_record, &g);
        tl_wait_done(evbase, &g, WAIT_MS);
        if (g.status == BACKEND_OK || tl_now_ms() >= end)
            break;
        tl_pump(evbase, 5); /* let the late replies in */
    }
    ck_assert_int_eq(g.status, BACKEND_OK);
    for (int i = 0; i < 6; i++)
        ck_assert_int_eq(r[i].calls, 1);
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.inflight, 0);
    /* Late replies are not in the latency histogram: it counts exactly the
     * completions that carried an answer. */
    ck_assert_uint_eq(histogram_count(&st), answered(&st));
    ck_assert_uint_ge(st.timeouts, 4);
    backend_free(b);
}
END_TEST

START_TEST(test_stalled_connection_is_remade)
{
    backend_redis_config cfg = {.op_timeout_ms = 30, .stall_ms = 150};
    backend *b = make_backend_cfg(&cfg);
    ck_assert(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0);
    uint8_t key[49];
    tl_random_key(key);
    rp_stop(&rp);
    tl_result r = {0};
    backend_get(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
    /* The stall drops the connection; it stays down while Redis is stopped. */
    backend_stats st;
    uint64_t end = tl_now_ms() + WAIT_MS;
    do {
        tl_pump(evbase, 5);
        backend_get_stats(b, &st);
    } while (st.disconnects == 0 && tl_now_ms() < end);
    ck_assert_uint_eq(st.disconnects, 1);
    ck_assert_uint_eq(st.inflight, 0);
    rp_cont(&rp);
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0,
                  "no reconnect after the stall");
    /* Redis has just resumed: allow a few timeouts before it answers in time. */
    tl_result r2 = {0};
    uint64_t end2 = tl_now_ms() + WAIT_MS;
    for (;;) {
        memset(&r2, 0, sizeof(r2));
        backend_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000, tl_record, &r2);
        tl_wait_done(evbase, &r2, WAIT_MS);
        if (r2.status == BACKEND_OK || tl_now_ms() >= end2)
            break;
        tl_pump(evbase, 5);
    }
    ck_assert_int_eq(r2.status, BACKEND_OK);
    backend_free(b);
}
END_TEST

START_TEST(test_corrupt_values)
{
    backend *b = make_backend();
    uint8_t k1[49], k2[49];
    tl_random_key(k1);
    tl_random_key(k2);
    do_put(b, k1, sizeof(k1), (const uint8_t *)"secret-one", 10, 60000);
    char n1[BACKEND_REDIS_NAME_LEN + 1], n2[BACKEND_REDIS_NAME_LEN + 1];
    ck_assert_int_eq(backend_redis_key_name(b, k1, sizeof(k1), n1), 0);
    ck_assert_int_eq(backend_redis_key_name(b, k2, sizeof(k2), n2), 0);
    redisContext *c = sync_connect(rp.port);
    ck_assert_ptr_nonnull(c);
    /* A genuine sealed value copied under another name does not open there. */
    redisReply *v = redisCommand(c, "GET %s", n1);
    ck_assert_int_eq(v->type, REDIS_REPLY_STRING);
    redisReply *s = redisCommand(c, "SET %s %b", n2, v->str, v->len);
    freeReplyObject(s);
    /* A flipped byte in the ciphertext does not open either. */
    v->str[v->len - 20] ^= 1;
    s = redisCommand(c, "SET %s %b", n1, v->str, v->len);
    freeReplyObject(s);
    freeReplyObject(v);
    tl_result r = {0};
    backend_get(b, k2, sizeof(k2), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    memset(&r, 0, sizeof(r));
    backend_take(b, k1, sizeof(k1), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    /* Junk of every short length, and a long one. */
    static const char *junk[] = {"", "x", "junk", "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a",
                                 "0123456789012345678901234567890123456789012345678901234567"};
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
        s = redisCommand(c, "SET %s %b", n1, junk[i], strlen(junk[i]));
        freeReplyObject(s);
        memset(&r, 0, sizeof(r));
        backend_get(b, k1, sizeof(k1), tl_record, &r);
        tl_wait_done(evbase, &r, WAIT_MS);
        ck_assert_int_eq(r.status, BACKEND_ERROR);
    }
    /* A name holding another type: an error reply, counted as an error. */
    s = redisCommand(c, "DEL %s", n1);
    freeReplyObject(s);
    s = redisCommand(c, "LPUSH %s a", n1);
    freeReplyObject(s);
    memset(&r, 0, sizeof(r));
    backend_get(b, k1, sizeof(k1), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.corrupt, 2 + sizeof(junk) / sizeof(junk[0]));
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_eq(st.by_status[BACKEND_ERROR], 3 + sizeof(junk) / sizeof(junk[0]));
    /* Another cluster key cannot read this node's values. */
    do_put(b, k2, sizeof(k2), (const uint8_t *)"secret-two", 10, 60000);
    uint8_t saved[32];
    memcpy(saved, cluster_key, 32);
    cluster_key[0] ^= 0x80;
    backend *other = make_backend();
    memcpy(cluster_key, saved, 32);
    memset(&r, 0, sizeof(r));
    backend_get(other, k2, sizeof(k2), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND); /* other names, too */
    redisFree(c);
    backend_free(other);
    backend_free(b);
}
END_TEST

START_TEST(test_auth)
{
    int port = rp.port;
    rp_kill(&rp);
    ck_assert(rp_redis_start_on(&rp, port, "s3cret-pass", 0) == 0);
    backend_redis_config good = {.password = "s3cret-pass"};
    backend *b = make_backend_cfg(&good);
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0,
                  "not up with the right password");
    uint8_t key[49];
    tl_random_key(key);
    do_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000);
    /* The invalidation subscription authenticates too. */
    redisContext *c = sync_connect(rp.port);
    ck_assert_ptr_nonnull(c);
    redisReply *a = redisCommand(c, "AUTH s3cret-pass");
    ck_assert_ptr_nonnull(a);
    freeReplyObject(a);
    long long subs = -1;
    uint64_t sub_end = tl_now_ms() + WAIT_MS;
    while (subs != 1 && tl_now_ms() < sub_end) {
        tl_pump(evbase, 5);
        redisReply *n = redisCommand(c, "PUBSUB NUMSUB %s", BACKEND_REDIS_INV_CHANNEL);
        ck_assert_ptr_nonnull(n);
        subs = n->type == REDIS_REPLY_ARRAY ? n->element[1]->integer : -1;
        freeReplyObject(n);
    }
    ck_assert_int_eq(subs, 1);
    redisFree(c);
    backend_redis_config bad = {.password = "wrong", .backoff_min_ms = 10, .backoff_max_ms = 20};
    backend *nb = make_backend_cfg(&bad);
    backend_stats st;
    uint64_t end = tl_now_ms() + WAIT_MS;
    do {
        tl_pump(evbase, 5);
        backend_get_stats(nb, &st);
    } while (st.errors < 2 && tl_now_ms() < end);
    ck_assert_uint_ge(st.errors, 2); /* refused, retried, refused */
    ck_assert(!backend_redis_is_up(nb));
    tl_result r = {0};
    backend_get(nb, key, sizeof(key), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
    backend_free(nb);
    backend_free(b);
}
END_TEST

START_TEST(test_free_completes_pending)
{
    backend *b = make_backend();
    uint8_t key[49];
    tl_random_key(key);
    rp_stop(&rp);
    tl_result r[3];
    memset(r, 0, sizeof(r));
    for (int i = 0; i < 3; i++)
        backend_get(b, key, sizeof(key), tl_record, &r[i]);
    ck_assert_int_eq(r[0].calls, 0);
    backend_free(b);
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(r[i].calls, 1);
        ck_assert_int_eq(r[i].status, BACKEND_UNAVAILABLE);
    }
    rp_cont(&rp);
}
END_TEST

START_TEST(test_latency_histogram)
{
    backend *b = make_backend();
    enum { N = 40 };
    uint8_t key[49];
    for (int i = 0; i < N; i++) {
        tl_random_key(key);
        tl_result r = {0};
        switch (i % 4) {
        case 0:
            backend_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 10000, tl_record, &r);
            break;
        case 1:
            backend_get(b, key, sizeof(key), tl_record, &r);
            break;
        case 2:
            backend_add(b, key, sizeof(key), (const uint8_t *)"v", 1, 10000, tl_record, &r);
            break;
        default:
            backend_take(b, key, sizeof(key), tl_record, &r);
            break;
        }
        tl_wait_done(evbase, &r, WAIT_MS);
        ck_assert_int_ne(r.status, BACKEND_UNAVAILABLE);
    }
    /* A bad argument completes at once, without asking Redis: not measured. */
    tl_result bad = {0};
    backend_get(b, key, 0, tl_record, &bad);
    ck_assert_int_eq(bad.status, BACKEND_ERROR);
    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_eq(histogram_count(&st), N);
    ck_assert_uint_eq(answered(&st), N + 1);
    ck_assert_uint_gt(st.latency_sum_us, 0);
    /* Loopback answers well under the last finite bound (100 ms). */
    ck_assert_uint_eq(st.latency_buckets[BACKEND_LATENCY_BUCKETS - 1], 0);
    ck_assert_uint_le(st.latency_sum_us, (uint64_t)N * 100000u);
    backend_free(b);
}
END_TEST

START_TEST(test_invalidation_between_nodes)
{
    backend *a = make_backend(), *b = make_backend();
    tl_inv_log la = {0}, lb = {0};
    backend_set_invalidate(a, tl_on_invalidate, &la);
    backend_set_invalidate(b, tl_on_invalidate, &lb);
    tl_wait_subscribers(evbase, rp.port, 2, WAIT_MS);
    /* An operator's (or sniffer's) view of the channel. */
    redisContext *spy = sync_connect(rp.port);
    ck_assert_ptr_nonnull(spy);
    redisReply *sr = redisCommand(spy, "SUBSCRIBE %s", BACKEND_REDIS_INV_CHANNEL);
    ck_assert_ptr_nonnull(sr);
    freeReplyObject(sr);

    uint8_t k1[49], k2[49];
    tl_random_key(k1);
    tl_random_key(k2);
    do_put(a, k1, sizeof(k1), (const uint8_t *)"v", 1, 60000);
    tl_result r = {0};
    backend_del(a, k1, sizeof(k1), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_msg(tl_run_until(evbase, tl_inv_called, &lb, WAIT_MS) == 0,
                  "B never heard of A's del");
    ck_assert_int_eq(lb.calls, 1);
    ck_assert_uint_eq(lb.key_len, sizeof(k1));
    ck_assert_mem_eq(lb.key, k1, sizeof(k1));
    /* B's take reaches A; A, which got its own del message before (same
     * channel, in order), did not call its hook for it. A take publishes
     * whatever it found (nothing here). */
    memset(&r, 0, sizeof(r));
    backend_take(b, k2, sizeof(k2), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
    ck_assert_msg(tl_run_until(evbase, tl_inv_called, &la, WAIT_MS) == 0,
                  "A never heard of B's take");
    ck_assert_int_eq(la.calls, 1);
    ck_assert_uint_eq(la.key_len, sizeof(k2));
    ck_assert_mem_eq(la.key, k2, sizeof(k2));
    ck_assert_int_eq(lb.calls, 1);

    /* A take that found something, from A: B hears it, A does not. */
    do_put(b, k2, sizeof(k2), (const uint8_t *)"w", 1, 60000);
    memset(&r, 0, sizeof(r));
    lb.calls = 0;
    backend_take(a, k2, sizeof(k2), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert(tl_run_until(evbase, tl_inv_called, &lb, WAIT_MS) == 0);
    ck_assert_mem_eq(lb.key, k2, sizeof(k2));
    /* put does not publish. */
    do_put(a, k1, sizeof(k1), (const uint8_t *)"x", 1, 60000);

    backend_stats sa, sb;
    backend_get_stats(a, &sa);
    backend_get_stats(b, &sb);
    ck_assert_uint_eq(sa.invalidations_sent, 2);
    ck_assert_uint_eq(sb.invalidations_sent, 1);
    ck_assert_uint_eq(sa.invalidations_received, 1);
    ck_assert_uint_eq(sb.invalidations_received, 2);

    /* What went over the channel: 3 messages, none holding the key in clear. */
    redisReply *msgs[3];
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(redisGetReply(spy, (void **)&msgs[i]), REDIS_OK);
        ck_assert_int_eq(msgs[i]->type, REDIS_REPLY_ARRAY);
        ck_assert_uint_eq(msgs[i]->elements, 3);
        const redisReply *payload = msgs[i]->element[2];
        ck_assert_uint_eq(payload->len, 8 + sizeof(k1) + BACKEND_REDIS_SEAL_OVERHEAD);
        for (size_t off = 0; off + 8 <= 48; off += 8) {
            ck_assert_ptr_null(memmem(payload->str, payload->len, k1 + 1 + off, 8));
            ck_assert_ptr_null(memmem(payload->str, payload->len, k2 + 1 + off, 8));
        }
    }
    /* Junk, and a genuine message with another node ID (bound to it), do not
     * open: counted corrupt by both, no hook called. */
    const redisReply *genuine = msgs[0]->element[2];
    char forged[256];
    memcpy(forged, genuine->str, genuine->len);
    forged[0] ^= 1;
    redisReply *pr = rp_command(rp.port, "PUBLISH %s %b", BACKEND_REDIS_INV_CHANNEL, forged,
                                (size_t)genuine->len);
    ck_assert_ptr_nonnull(pr);
    freeReplyObject(pr);
    pr = rp_command(rp.port, "PUBLISH %s junk", BACKEND_REDIS_INV_CHANNEL);
    freeReplyObject(pr);
    memcpy(forged, genuine->str, genuine->len);
    forged[genuine->len - 1] ^= 1; /* the tag */
    pr = rp_command(rp.port, "PUBLISH %s %b", BACKEND_REDIS_INV_CHANNEL, forged,
                    (size_t)genuine->len);
    freeReplyObject(pr);
    uint64_t end = tl_now_ms() + WAIT_MS;
    do {
        tl_pump(evbase, 5);
        backend_get_stats(a, &sa);
        backend_get_stats(b, &sb);
    } while ((sa.corrupt < 2 || sb.corrupt < 3) && tl_now_ms() < end);
    /* The copy with a flipped tag still carries A's ID: A skips it as its own. */
    ck_assert_uint_eq(sa.corrupt, 2);
    ck_assert_uint_eq(sb.corrupt, 3);
    ck_assert_uint_eq(sa.invalidations_received, 1);
    ck_assert_uint_eq(sb.invalidations_received, 2);
    ck_assert_int_eq(la.calls, 1);
    ck_assert_int_eq(lb.calls, 1);
    for (int i = 0; i < 3; i++)
        freeReplyObject(msgs[i]);
    redisFree(spy);
    backend_free(a);
    backend_free(b);
}
END_TEST

START_TEST(test_invalidation_survives_restart)
{
    backend_redis_config cfg = {.backoff_min_ms = 10, .backoff_max_ms = 40};
    backend *a = make_backend_cfg(&cfg);
    backend_redis_config cfg2 = {.backoff_min_ms = 10, .backoff_max_ms = 40};
    backend *b = make_backend_cfg(&cfg2);
    tl_inv_log lb = {0};
    backend_set_invalidate(b, tl_on_invalidate, &lb);
    ck_assert(tl_run_until(evbase, tl_redis_up, a, WAIT_MS) == 0);
    tl_wait_subscribers(evbase, rp.port, 2, WAIT_MS);
    int port = rp.port;
    rp_kill(&rp);
    ck_assert(rp_redis_start_on(&rp, port, NULL, 0) == 0);
    /* Both subscriptions come back by themselves, with the data connections. */
    ck_assert(tl_run_until(evbase, tl_redis_up, a, WAIT_MS) == 0);
    tl_wait_subscribers(evbase, rp.port, 2, WAIT_MS);
    uint8_t key[49];
    tl_random_key(key);
    tl_result r = {0};
    backend_del(a, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert(tl_run_until(evbase, tl_inv_called, &lb, WAIT_MS) == 0);
    ck_assert_mem_eq(lb.key, key, sizeof(key));
    backend_free(a);
    backend_free(b);
}
END_TEST

START_TEST(test_parse_target)
{
    char host[64], err[256];
    int port = 0;
    ck_assert_int_eq(
        backend_redis_parse_target("redis://127.0.0.1:6379", host, sizeof(host), &port, err, 256),
        0);
    ck_assert_str_eq(host, "127.0.0.1");
    ck_assert_int_eq(port, 6379);
    ck_assert_int_eq(
        backend_redis_parse_target("redis://[::1]:7000", host, sizeof(host), &port, err, 256), 0);
    ck_assert_str_eq(host, "::1");
    ck_assert_int_eq(port, 7000);
    ck_assert_int_eq(
        backend_redis_parse_target("redis://cache.local:1", host, sizeof(host), &port, err, 256),
        0);
    static const char *bad[] = {"",
                                "127.0.0.1:6379",
                                "http://h:1",
                                "redis://",
                                "redis://h",
                                "redis://h:",
                                "redis://:6379",
                                "redis://h:0",
                                "redis://h:65536",
                                "redis://h:12x",
                                "redis://h:-1",
                                "redis://::1:6379",
                                "redis://[::1]6379",
                                "redis://[::1",
                                "redis://h:+5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ck_assert_msg(backend_redis_parse_target(bad[i], host, sizeof(host), &port, err, 256) == -1,
                      "accepted '%s'", bad[i]);
        ck_assert_msg(strstr(err, bad[i]) != NULL && strchr(err, '\n') == NULL,
                      "error '%s' does not name '%s'", err, bad[i]);
    }
    ck_assert_int_eq(backend_redis_parse_target(NULL, host, sizeof(host), &port, err, 256), -1);
    /* backend_redis_new reports the same, and a missing key. */
    backend_redis_config cfg = {.target = "redis://h", .cluster_key = cluster_key};
    ck_assert_ptr_null(backend_redis_new(evbase, &cfg, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "redis://h"));
    cfg.target = "redis://127.0.0.1:1";
    cfg.cluster_key = NULL;
    ck_assert_ptr_null(backend_redis_new(evbase, &cfg, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "cluster key"));
    cfg.cluster_key = cluster_key;
    cfg.target = "redis://no-such-host.invalid:6379";
    ck_assert_ptr_null(backend_redis_new(evbase, &cfg, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "no-such-host.invalid"));

    /* Sentinel targets. */
    backend_redis_sentinels sn;
    ck_assert_int_eq(backend_redis_parse_sentinel("sentinel://127.0.0.1:26379,[::1]:26380,s.local:"
                                                  "5/my-master.1_x",
                                                  &sn, err, sizeof(err)),
                     0);
    ck_assert_int_eq(sn.count, 3);
    ck_assert_str_eq(sn.host[0], "127.0.0.1");
    ck_assert_int_eq(sn.port[0], 26379);
    ck_assert_str_eq(sn.host[1], "::1");
    ck_assert_int_eq(sn.port[1], 26380);
    ck_assert_str_eq(sn.host[2], "s.local");
    ck_assert_int_eq(sn.port[2], 5);
    ck_assert_str_eq(sn.master_name, "my-master.1_x");
    ck_assert_int_eq(backend_redis_parse_sentinel("sentinel://h:1/m", &sn, err, sizeof(err)), 0);
    ck_assert_int_eq(sn.count, 1);
    ck_assert_int_eq(backend_redis_check_target("sentinel://h:1/m", err, sizeof(err)), 0);
    ck_assert_int_eq(backend_redis_check_target("redis://h:1", err, sizeof(err)), 0);
    static const char *bad_sn[] = {
        "sentinel://",
        "sentinel://h:1",
        "sentinel://h:1/",
        "sentinel:///m",
        "sentinel://h/m",
        "sentinel://h:0/m",
        "sentinel://h:1,/m",
        "sentinel://,h:1/m",
        "sentinel://h:1,h:70000/m",
        "sentinel://h:1/m n",
        "sentinel://h:1/m/x",
        "sentinel://::1:5/m",
        "sentinel://h:1/"
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "sentinel://a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,a:1,"
        "a:1,a:1,a:1,a:1/m",
        "redis://h:1/m"};
    for (size_t i = 0; i < sizeof(bad_sn) / sizeof(bad_sn[0]); i++) {
        err[0] = '\0';
        ck_assert_msg(backend_redis_parse_sentinel(bad_sn[i], &sn, err, sizeof(err)) == -1,
                      "accepted '%s'", bad_sn[i]);
        ck_assert_msg(strstr(err, bad_sn[i]) != NULL && strchr(err, '\n') == NULL,
                      "error '%s' does not name '%s'", err, bad_sn[i]);
        err[0] = '\0';
        ck_assert_int_eq(backend_redis_check_target(bad_sn[i], err, sizeof(err)), -1);
        ck_assert_ptr_nonnull(strstr(err, bad_sn[i]));
    }
    ck_assert_int_eq(backend_redis_check_target("memcache://h:1", err, sizeof(err)), -1);
    ck_assert_ptr_nonnull(strstr(err, "memcache://h:1"));
    cfg.target = "sentinel://h:1";
    ck_assert_ptr_null(backend_redis_new(evbase, &cfg, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "sentinel://h:1"));
    cfg.target = "sentinel://127.0.0.1:1,no-such-host.invalid:2/m";
    ck_assert_ptr_null(backend_redis_new(evbase, &cfg, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "no-such-host.invalid"));
}
END_TEST

static Suite *backend_redis_suite(void)
{
    Suite *s = suite_create("backend_redis");
    TCase *tc = tcase_create("redis");
    tcase_set_timeout(tc, 30);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_roundtrip);
    tcase_add_test(tc, test_nothing_usable_in_redis);
    tcase_add_test(tc, test_take_exactly_once_across_nodes);
    tcase_add_test(tc, test_add_exactly_once_across_nodes);
    tcase_add_test(tc, test_ttl);
    tcase_add_test(tc, test_redis_killed_and_restarted);
    tcase_add_test(tc, test_unreachable_from_start);
    tcase_add_test(tc, test_slow_redis_times_out);
    tcase_add_test(tc, test_stalled_connection_is_remade);
    tcase_add_test(tc, test_corrupt_values);
    tcase_add_test(tc, test_auth);
    tcase_add_test(tc, test_free_completes_pending);
    tcase_add_test(tc, test_latency_histogram);
    tcase_add_test(tc, test_invalidation_between_nodes);
    tcase_add_test(tc, test_invalidation_survives_restart);
    tcase_add_test(tc, test_parse_target);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(backend_redis_suite());
}
