/* check_dispatch_shared.c — dispatch with a shared store behind the local
 * cache, and the v2 TAKE, ADD and KEYS operations.
 *
 * Two dispatch contexts, each with its own cache, play two sessiond nodes;
 * a memory backend over a third cache plays the shared store (Redis in
 * production: check_cluster.c runs the same rules against real processes).
 * The memory backend completes synchronously, so every answer comes back
 * from dispatch_datagram itself; the deferred path (answers sent later) is
 * exercised against a real Redis by the integration tests.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cache.h"
#include "dispatch.h"
#include "proto.h"
#include "proto_v2.h"
#include "v2ops.h"

#define NOW_MS  1000000u
#define WALL_MS 1700000000000ull

typedef struct node {
    cache *local;
    dispatch_ctx ctx;
} node;

static cache *store_cache;
static backend *store;
static node a, b;
static uint8_t out[PROTO_MAX_DATAGRAM + 1];

static void node_init(node *n)
{
    cache_config cc = {.max_bytes = 1 << 20};

    n->local = cache_create(&cc);
    ck_assert_ptr_nonnull(n->local);
    dispatch_init(&n->ctx, n->local, 3600);
    ck_assert_int_eq(dispatch_set_shared(&n->ctx, store, NULL, NULL), 0);
}

static void setup(void)
{
    cache_config cc = {.max_bytes = 1 << 20};

    store_cache = cache_create(&cc);
    ck_assert_ptr_nonnull(store_cache);
    store = backend_mem_new(store_cache, NULL, NULL);
    ck_assert_ptr_nonnull(store);
    node_init(&a);
    node_init(&b);
}

static void teardown(void)
{
    dispatch_release(&a.ctx);
    dispatch_release(&b.ctx);
    backend_free(store);
    cache_free(a.local);
    cache_free(b.local);
    cache_free(store_cache);
}

/* Sends one plain v2 request from loopback to node n at time now_ms;
 * returns the answer's length (0: none) and parses it into *ans. */
static size_t ask(node *n, uint8_t op, uint8_t flags, const char *key, const char *value,
                  uint64_t now_ms, proto_v2_msg *ans)
{
    uint8_t req[PROTO_MAX_DATAGRAM + 1];
    dispatch_time t = {.now_ms = now_ms, .wall_ms = WALL_MS};
    size_t len =
        v2t_build(NULL, req, sizeof(req), op, flags, 7, 0, (const uint8_t *)key,
                  key ? strlen(key) : 0, (const uint8_t *)value, value ? strlen(value) : 0, 0);
    size_t answer_len =
        dispatch_datagram(&n->ctx, req, len, DISPATCH_SOURCE_ALLOWED | DISPATCH_SOURCE_LOOPBACK,
                          out, sizeof(out), &t);

    if (answer_len > 0 && ans != NULL)
        ck_assert_int_eq(proto_v2_parse(out, answer_len, 1, ans), PROTO_OK);
    return answer_len;
}

START_TEST(test_put_writes_through_and_get_fetches_near_copy)
{
    proto_v2_msg ans;
    size_t len;

    ck_assert_uint_gt(ask(&a, PROTO_V2_PUT, 0, "ns-and-session-1", "DER-1", NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    /* In A's cache and in the store, not in B's. */
    ck_assert_ptr_nonnull(
        cache_get(a.local, (const uint8_t *)"\2ns-and-session-1", 17, NOW_MS, &len));
    ck_assert_ptr_nonnull(
        cache_get(store_cache, (const uint8_t *)"\2ns-and-session-1", 17, NOW_MS, &len));
    ck_assert_ptr_null(cache_get(b.local, (const uint8_t *)"\2ns-and-session-1", 17, NOW_MS, &len));

    /* B misses locally, finds it in the store, answers it and keeps a near copy. */
    ck_assert_uint_gt(ask(&b, PROTO_V2_GET, 0, "ns-and-session-1", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_uint_eq(ans.value_len, 5);
    ck_assert_mem_eq(ans.value, "DER-1", 5);
    ck_assert_uint_eq(b.ctx.counters.backend_hits, 1);
    ck_assert_ptr_nonnull(
        cache_get(b.local, (const uint8_t *)"\2ns-and-session-1", 17, NOW_MS, &len));
    /* A second GET on B is a local hit: the store is not asked again. */
    ck_assert_uint_gt(ask(&b, PROTO_V2_GET, 0, "ns-and-session-1", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_uint_eq(b.ctx.counters.backend_hits, 1);

    /* The near copy lives DISPATCH_NEAR_TTL_S, not the entry's hour. */
    ck_assert_ptr_nonnull(cache_get(b.local, (const uint8_t *)"\2ns-and-session-1", 17,
                                    NOW_MS + DISPATCH_NEAR_TTL_S * 1000u - 1, &len));
    ck_assert_ptr_null(cache_get(b.local, (const uint8_t *)"\2ns-and-session-1", 17,
                                 NOW_MS + DISPATCH_NEAR_TTL_S * 1000u, &len));

    /* Nowhere: a miss, counted as such. */
    ck_assert_uint_gt(ask(&b, PROTO_V2_GET, 0, "ns-and-session-2", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_NOT_FOUND);
    ck_assert_uint_eq(b.ctx.counters.backend_misses, 1);
}
END_TEST

START_TEST(test_del_reaches_the_store)
{
    proto_v2_msg ans;
    size_t len;

    ask(&a, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, "ns-and-session-3", "DER-3", NOW_MS, NULL);
    /* B never had it locally, yet its DEL removes it for everyone. */
    ck_assert_uint_gt(ask(&b, PROTO_V2_DEL, 0, "ns-and-session-3", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_ptr_null(
        cache_get(store_cache, (const uint8_t *)"\2ns-and-session-3", 17, NOW_MS, &len));
    /* A's own copy is A's until an invalidation (from Redis) or its DEL. */
    ck_assert_uint_gt(ask(&a, PROTO_V2_DEL, 0, "ns-and-session-3", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_uint_gt(ask(&a, PROTO_V2_DEL, 0, "ns-and-session-3", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_NOT_FOUND);
    /* NO_REPLY: nothing is answered, the store still forgets. */
    ask(&a, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, "ns-and-session-4", "DER-4", NOW_MS, NULL);
    ck_assert_uint_eq(
        ask(&b, PROTO_V2_DEL, PROTO_V2_F_NO_REPLY, "ns-and-session-4", NULL, NOW_MS, NULL), 0);
    ck_assert_ptr_null(
        cache_get(store_cache, (const uint8_t *)"\2ns-and-session-4", 17, NOW_MS, &len));
}
END_TEST

START_TEST(test_take_succeeds_once_across_nodes)
{
    proto_v2_msg ans;
    int ok = 0, not_found = 0;

    ask(&a, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, "ns-and-ticket-1", "STATE", NOW_MS, NULL);
    for (int i = 0; i < 4; i++) {
        node *n = i % 2 ? &b : &a;

        ck_assert_uint_gt(ask(n, PROTO_V2_TAKE, 0, "ns-and-ticket-1", NULL, NOW_MS, &ans), 0);
        if (ans.status == PROTO_V2_ST_OK) {
            ok++;
            ck_assert_uint_eq(ans.value_len, 5);
            ck_assert_mem_eq(ans.value, "STATE", 5);
        } else {
            ck_assert_uint_eq(ans.status, PROTO_V2_ST_NOT_FOUND);
            not_found++;
        }
    }
    ck_assert_int_eq(ok, 1);
    ck_assert_int_eq(not_found, 3);
    ck_assert_uint_eq(a.ctx.counters.take_hits + b.ctx.counters.take_hits, 1);
    /* The taker's own near copy went too: a GET anywhere now misses. */
    ck_assert_uint_gt(ask(&a, PROTO_V2_GET, 0, "ns-and-ticket-1", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_NOT_FOUND);
    ck_assert_uint_eq(a.ctx.counters.takes, 2);
}
END_TEST

START_TEST(test_add_is_first_writer_wins)
{
    proto_v2_msg ans;

    ck_assert_uint_gt(ask(&a, PROTO_V2_ADD, 0, "ns-and-seen-1", "1", NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_uint_gt(ask(&b, PROTO_V2_ADD, 0, "ns-and-seen-1", "2", NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_EXISTS);
    ck_assert_uint_gt(ask(&a, PROTO_V2_ADD, 0, "ns-and-seen-1", "3", NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_EXISTS);
    ck_assert_uint_eq(a.ctx.counters.add_exists, 1);
    ck_assert_uint_eq(b.ctx.counters.add_exists, 1);
    /* The first value stayed. */
    ck_assert_uint_gt(ask(&b, PROTO_V2_GET, 0, "ns-and-seen-1", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_mem_eq(ans.value, "1", 1);
}
END_TEST

/* Without a shared store the node's memory is the whole cluster. */
START_TEST(test_take_and_add_locally)
{
    proto_v2_msg ans;

    dispatch_release(&a.ctx);
    dispatch_init(&a.ctx, a.local, 3600);
    ask(&a, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, "ns-and-ticket-2", "STATE", NOW_MS, NULL);
    ck_assert_uint_gt(ask(&a, PROTO_V2_TAKE, 0, "ns-and-ticket-2", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_mem_eq(ans.value, "STATE", 5);
    ck_assert_uint_gt(ask(&a, PROTO_V2_TAKE, 0, "ns-and-ticket-2", NULL, NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_NOT_FOUND);
    ck_assert_uint_gt(ask(&a, PROTO_V2_ADD, 0, "ns-and-seen-2", "1", NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_uint_gt(ask(&a, PROTO_V2_ADD, 0, "ns-and-seen-2", "1", NOW_MS, &ans), 0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_EXISTS);
    ck_assert_uint_eq(a.ctx.counters.add_exists, 1);
    ck_assert_uint_eq(a.ctx.counters.take_hits, 1);
    /* An added entry expires like any other. */
    ck_assert_uint_gt(ask(&a, PROTO_V2_ADD, 0, "ns-and-seen-2", "1", NOW_MS + 3600u * 1000u, &ans),
                      0);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_OK);
    ck_assert_uint_eq(store_cache != NULL, 1);
    ck_assert_ptr_null(
        cache_get(store_cache, (const uint8_t *)"\2ns-and-seen-2", 14, NOW_MS, &(size_t){0}));
}
END_TEST

START_TEST(test_keys_only_sealed)
{
    uint8_t key[PROTO_V2_CLUSTER_KEY_LEN], req[256];
    proto_v2_sealer *s;
    proto_v2_msg ans;
    dispatch_time t = {.now_ms = NOW_MS, .wall_ms = WALL_MS};
    size_t len, answer_len;

    /* Plaintext KEYS from loopback: refused as denied, never answered. */
    ck_assert_uint_eq(ask(&a, PROTO_V2_KEYS, 0, NULL, NULL, NOW_MS, NULL), 0);
    ck_assert_uint_eq(a.ctx.counters.denied, 1);
    ck_assert_uint_eq(a.ctx.counters.keys_requests, 0);

    /* Sealed, but this node serves no ring: UNAVAILABLE, sealed. */
    memset(key, 0x5a, sizeof(key));
    s = proto_v2_sealer_new(key, NULL);
    ck_assert_ptr_nonnull(s);
    dispatch_set_security(&a.ctx, s, 0, PROTO_V2_DEFAULT_WINDOW_MS);
    len = v2t_build(s, req, sizeof(req), PROTO_V2_KEYS, 0, 9, 0, NULL, 0, NULL, 0, WALL_MS);
    answer_len = dispatch_datagram(&a.ctx, req, len, 0, out, sizeof(out), &t);
    ck_assert_uint_gt(answer_len, 0);
    ck_assert_int_eq(
        proto_v2_open(s, out, answer_len, 1, WALL_MS, PROTO_V2_DEFAULT_WINDOW_MS, &ans), PROTO_OK);
    ck_assert_uint_eq(ans.op, PROTO_V2_KEYS | PROTO_V2_ANSWER);
    ck_assert_uint_eq(ans.status, PROTO_V2_ST_UNAVAILABLE);
    ck_assert_uint_eq(ans.value_len, 0);
    ck_assert_uint_eq(a.ctx.counters.keys_requests, 1);
    dispatch_set_security(&a.ctx, NULL, 0, PROTO_V2_DEFAULT_WINDOW_MS);
    proto_v2_sealer_free(s);
}
END_TEST

START_TEST(test_v1_through_the_store)
{
    uint8_t req[PROTO_MAX_DATAGRAM], key[PROTO_V1_KEY_LEN];
    dispatch_time t = {.now_ms = NOW_MS, .wall_ms = WALL_MS};
    unsigned src = DISPATCH_SOURCE_ALLOWED | DISPATCH_SOURCE_LOOPBACK;
    size_t len, answer_len;

    memset(key, 0, sizeof(key));
    memcpy(key, "stunnel-session", 15);
    /* NEW through A. */
    req[0] = PROTO_V1_VERSION;
    req[1] = PROTO_V1_NEW;
    req[2] = 0;
    req[3] = 60;
    memcpy(req + 4, key, sizeof(key));
    memcpy(req + 36, "DER", 3);
    ck_assert_uint_eq(dispatch_datagram(&a.ctx, req, 39, src, out, sizeof(out), &t), 0);
    /* GET through B: found, from the store. */
    req[1] = PROTO_V1_GET;
    req[2] = req[3] = 0;
    len = PROTO_V1_HEADER_LEN;
    answer_len = dispatch_datagram(&b.ctx, req, len, src, out, sizeof(out), &t);
    ck_assert_uint_eq(answer_len, PROTO_V1_HEADER_LEN + 3);
    ck_assert_uint_eq(out[1], PROTO_V1_FOUND);
    ck_assert_mem_eq(out + PROTO_V1_HEADER_LEN, "DER", 3);
    /* REMOVE through B reaches the store; a GET through a third view misses. */
    req[1] = PROTO_V1_REMOVE;
    ck_assert_uint_eq(dispatch_datagram(&b.ctx, req, len, src, out, sizeof(out), &t), 0);
    ck_assert_ptr_null(
        cache_get(store_cache, (const uint8_t *)"\1stunnel-session", 16, NOW_MS, &(size_t){0}));
}
END_TEST

START_TEST(test_stats_line_names_the_store)
{
    char line[4096];

    ask(&b, PROTO_V2_GET, 0, "ns-and-session-9", NULL, NOW_MS, NULL);
    dispatch_stats_line(&b.ctx, line, sizeof(line));
    ck_assert_ptr_nonnull(strstr(line, " backend_misses=1"));
    ck_assert_ptr_nonnull(strstr(line, " backend_up=1"));
    ck_assert_ptr_nonnull(strstr(line, " takes=0"));
    /* Memory only: no backend fields at all. */
    dispatch_release(&a.ctx);
    dispatch_init(&a.ctx, a.local, 3600);
    dispatch_stats_line(&a.ctx, line, sizeof(line));
    ck_assert_ptr_null(strstr(line, "backend_"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dispatch_shared");
    TCase *tc = tcase_create("shared");
    SRunner *sr;
    int failed;

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_put_writes_through_and_get_fetches_near_copy);
    tcase_add_test(tc, test_del_reaches_the_store);
    tcase_add_test(tc, test_take_succeeds_once_across_nodes);
    tcase_add_test(tc, test_add_is_first_writer_wins);
    tcase_add_test(tc, test_take_and_add_locally);
    tcase_add_test(tc, test_keys_only_sealed);
    tcase_add_test(tc, test_v1_through_the_store);
    tcase_add_test(tc, test_stats_line_names_the_store);
    suite_add_tcase(s, tc);
    sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
