/* check_backend_multi.c — unit tests of the multi-group backend
 * (backend_multi.c): keys placed on groups by rendezvous hashing.
 *
 * Groups are real memory backends, each over its own cache, so where an
 * operation landed is read straight from the caches. One test adds a real
 * Redis backend pointed at a closed loopback port, as a group that is down
 * (its event loop never runs, so it never connects). Covered: the local
 * SipHash-2-4 against OpenSSL's EVP_MAC "SIPHASH"; placement deterministic
 * and independent of the order of the groups; spread of 10000 keys over 4
 * groups within 2.5 points of 25 %; removing a group moves exactly the keys
 * it held, adding one moves keys only to it; every operation lands on the
 * key's group and only there; stats summed, up only when every group is up;
 * invalidations forwarded to the hook set after creation; bad arguments
 * refused with a reason, the groups freed all the same (the sanitizer and
 * valgrind runs see a leak or a double free otherwise).
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "backend.h"
#include "backend_multi.h"
#include "backend_redis.h"
#include "cache.h"
#include "harness.h"
#include "checks.h"
#include "loop.h"

#define MAX_GROUPS 8
#define KEY_LEN    33 /* a v1 cache key: tag byte + 32-byte session ID */
#define SPREAD_N   10000

static const char *const names4[] = {"redis://10.0.0.1:6379", "redis://10.0.0.2:6379",
                                     "redis://10.0.0.3:6379", "redis://10.0.0.4:6379"};

typedef struct fixture {
    size_t n;
    cache *caches[MAX_GROUPS];
    backend *multi;
} fixture;

static uint64_t fake_now = 1000;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

/* A multi over memory groups named names[0..n-1]; group i's cache is
 * f->caches[i]. */
static void fixture_make(fixture *f, const char *const *names, size_t n)
{
    backend *groups[MAX_GROUPS];
    char err[256] = "";
    ck_assert_uint_le(n, MAX_GROUPS);
    memset(f, 0, sizeof(*f));
    f->n = n;
    for (size_t i = 0; i < n; i++) {
        cache_config cfg = {.max_bytes = 8u << 20};
        f->caches[i] = cache_create(&cfg);
        ck_assert_ptr_nonnull(f->caches[i]);
        groups[i] = backend_mem_new(f->caches[i], fake_clock, NULL);
        ck_assert_ptr_nonnull(groups[i]);
    }
    f->multi = backend_multi_new(groups, names, n, err, sizeof(err));
    ck_assert_msg(f->multi != NULL, "backend_multi_new: %s", err);
}

static void fixture_free(fixture *f)
{
    backend_free(f->multi); /* frees the groups */
    for (size_t i = 0; i < f->n; i++)
        cache_free(f->caches[i]);
}

/* Key number k: tag byte 1 + 32 bytes that look random (as session IDs do). */
static void make_key(uint32_t k, uint8_t out[KEY_LEN])
{
    uint64_t x = 0x9e3779b97f4a7c15ULL * (k + 1);
    out[0] = 1;
    for (int i = 1; i < KEY_LEN; i++) {
        x ^= x >> 29;
        x *= 0xbf58476d1ce4e5b9ULL;
        x ^= x >> 32;
        out[i] = (uint8_t)x;
    }
}

/* The name of the group that holds key k in f. */
static const char *placed_name(const fixture *f, uint32_t k)
{
    uint8_t key[KEY_LEN];
    make_key(k, key);
    size_t i = backend_multi_place(f->multi, key, sizeof(key));
    ck_assert_uint_lt(i, f->n);
    return backend_multi_group_name(f->multi, i);
}

/* ---- the hash ---- */

static uint64_t openssl_siphash(const uint8_t key[16], const uint8_t *data, size_t len)
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "SIPHASH", NULL);
    ck_assert_ptr_nonnull(mac);
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
    ck_assert_ptr_nonnull(ctx);
    size_t size = 8;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_size_t(OSSL_MAC_PARAM_SIZE, &size),
                           OSSL_PARAM_construct_end()};
    uint8_t out[8];
    size_t out_len = 0;
    ck_assert_int_eq(EVP_MAC_init(ctx, key, 16, params), 1);
    ck_assert_int_eq(EVP_MAC_update(ctx, data, len), 1);
    ck_assert_int_eq(EVP_MAC_final(ctx, out, &out_len, sizeof(out)), 1);
    ck_assert_uint_eq(out_len, 8);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | out[i];
    return v;
}

START_TEST(siphash_matches_openssl)
{
    uint8_t key[16];
    uint8_t data[80];
    /* Every length 0..80 (all tail sizes, several whole words), random
     * keys and data, plus the all-sequential key and message of the
     * SipHash paper's own example. */
    for (size_t len = 0; len <= sizeof(data); len++) {
        ck_assert_int_eq(RAND_bytes(key, sizeof(key)), 1);
        ck_assert_int_eq(RAND_bytes(data, sizeof(data)), 1);
        ck_assert_uint_eq(backend_multi_siphash(key, data, len), openssl_siphash(key, data, len));
    }
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 15; i++)
        data[i] = (uint8_t)i;
    ck_assert_uint_eq(backend_multi_siphash(key, data, 15), 0xa129ca6149be45e5ULL);
    ck_assert_uint_eq(openssl_siphash(key, data, 15), 0xa129ca6149be45e5ULL);
}
END_TEST

START_TEST(score_depends_on_name_and_key)
{
    uint8_t k1[KEY_LEN], k2[KEY_LEN];
    make_key(1, k1);
    make_key(2, k2);
    uint64_t s = backend_multi_score(names4[0], k1, sizeof(k1));
    ck_assert_uint_eq(s, backend_multi_score(names4[0], k1, sizeof(k1)));
    ck_assert_uint_ne(s, backend_multi_score(names4[1], k1, sizeof(k1)));
    ck_assert_uint_ne(s, backend_multi_score(names4[0], k2, sizeof(k2)));
    /* No concatenation ambiguity: the name keys the hash. */
    const uint8_t bc[] = "bc", c[] = "c";
    ck_assert_uint_ne(backend_multi_score("a", bc, 2), backend_multi_score("ab", c, 1));
}
END_TEST

/* ---- placement ---- */

START_TEST(placement_independent_of_order)
{
    const char *const shuffled[] = {names4[2], names4[0], names4[3], names4[1]};
    fixture a, b;
    fixture_make(&a, names4, 4);
    fixture_make(&b, shuffled, 4);
    for (uint32_t k = 0; k < SPREAD_N; k++) {
        const char *na = placed_name(&a, k);
        ck_assert_str_eq(na, placed_name(&b, k));
        ck_assert_str_eq(na, placed_name(&a, k)); /* deterministic */
        /* ... and it is the highest score, computed independently. */
        uint8_t key[KEY_LEN];
        make_key(k, key);
        uint64_t best = backend_multi_score(na, key, sizeof(key));
        for (int i = 0; i < 4; i++)
            ck_assert_uint_le(backend_multi_score(names4[i], key, sizeof(key)), best);
    }
    fixture_free(&a);
    fixture_free(&b);
}
END_TEST

START_TEST(placement_spreads_evenly)
{
    fixture f;
    size_t count[4] = {0};
    fixture_make(&f, names4, 4);
    for (uint32_t k = 0; k < SPREAD_N; k++) {
        uint8_t key[KEY_LEN];
        make_key(k, key);
        count[backend_multi_place(f.multi, key, sizeof(key))]++;
    }
    /* 25 % +- 2.5 points: ~5.8 standard deviations of a fair split. */
    for (int i = 0; i < 4; i++) {
        ck_assert_msg(count[i] >= 2250 && count[i] <= 2750, "group %d got %zu of %d keys", i,
                      count[i], SPREAD_N);
    }
    fixture_free(&f);
}
END_TEST

START_TEST(removing_a_group_moves_only_its_keys)
{
    const char *const three[] = {names4[0], names4[1], names4[3]}; /* names4[2] gone */
    fixture four, after;
    size_t on_removed = 0, moved = 0;
    fixture_make(&four, names4, 4);
    fixture_make(&after, three, 3);
    for (uint32_t k = 0; k < SPREAD_N; k++) {
        const char *before = placed_name(&four, k);
        const char *now = placed_name(&after, k);
        if (strcmp(before, names4[2]) == 0)
            on_removed++;
        else
            ck_assert_str_eq(before, now); /* every other key stays put */
        if (strcmp(before, now) != 0)
            moved++;
    }
    ck_assert_uint_eq(moved, on_removed);
    ck_assert_uint_gt(moved, 0);
    fixture_free(&four);
    fixture_free(&after);
}
END_TEST

START_TEST(adding_a_group_moves_keys_only_to_it)
{
    const char *const five[] = {names4[0], names4[1], names4[2], names4[3],
                                "redis://10.0.0.5:6379"};
    fixture four, after;
    size_t moved = 0;
    fixture_make(&four, names4, 4);
    fixture_make(&after, five, 5);
    for (uint32_t k = 0; k < SPREAD_N; k++) {
        const char *before = placed_name(&four, k);
        const char *now = placed_name(&after, k);
        if (strcmp(before, now) != 0) {
            ck_assert_str_eq(now, five[4]);
            moved++;
        }
    }
    /* ~1/5 of the keys, within 2.5 points. */
    ck_assert_msg(moved >= 1750 && moved <= 2250, "%zu of %d keys moved", moved, SPREAD_N);
    fixture_free(&four);
    fixture_free(&after);
}
END_TEST

/* ---- operations ---- */

START_TEST(ops_land_on_the_key_group)
{
    enum { N = 1000 };
    fixture f;
    size_t expected[4] = {0};
    fixture_make(&f, names4, 4);
    for (uint32_t k = 0; k < N; k++) {
        uint8_t key[KEY_LEN];
        uint8_t value[16];
        tl_result r = {0};
        make_key(k, key);
        memset(value, (int)(k & 0xff), sizeof(value));
        backend_put(f.multi, key, sizeof(key), value, sizeof(value), 60000, tl_record, &r);
        ck_assert_int_eq(r.calls, 1);
        ck_assert_int_eq(r.status, BACKEND_OK);
        size_t g = backend_multi_place(f.multi, key, sizeof(key));
        expected[g]++;
        /* In the key's group's cache, and in no other. */
        for (size_t i = 0; i < 4; i++) {
            size_t len = 0;
            const uint8_t *v = cache_get(f.caches[i], key, sizeof(key), fake_now, &len);
            if (i == g) {
                ck_assert_ptr_nonnull(v);
                ck_assert_uint_eq(len, sizeof(value));
                ck_assert_mem_eq(v, value, sizeof(value));
            } else {
                ck_assert_ptr_null(v);
            }
        }
    }
    for (size_t i = 0; i < 4; i++) {
        cache_stats cs;
        cache_get_stats(f.caches[i], &cs);
        ck_assert_uint_eq(cs.entries, expected[i]);
        ck_assert_uint_gt(cs.entries, 0);
    }

    /* get, add, take, del through the multi reach the same entries. */
    for (uint32_t k = 0; k < N; k++) {
        uint8_t key[KEY_LEN];
        uint8_t value[16];
        tl_result r = {0};
        make_key(k, key);
        memset(value, (int)(k & 0xff), sizeof(value));
        backend_get(f.multi, key, sizeof(key), tl_record, &r);
        ck_assert_int_eq(r.calls, 1);
        ck_assert_int_eq(r.status, BACKEND_OK);
        ck_assert_mem_eq(r.value, value, sizeof(value));

        memset(&r, 0, sizeof(r));
        backend_add(f.multi, key, sizeof(key), value, sizeof(value), 60000, tl_record, &r);
        ck_assert_int_eq(r.status, BACKEND_EXISTS);

        memset(&r, 0, sizeof(r));
        if (k % 2) {
            backend_take(f.multi, key, sizeof(key), tl_record, &r);
            ck_assert_int_eq(r.status, BACKEND_OK);
            ck_assert_mem_eq(r.value, value, sizeof(value));
        } else {
            backend_del(f.multi, key, sizeof(key), tl_record, &r);
            ck_assert_int_eq(r.status, BACKEND_OK);
        }
        memset(&r, 0, sizeof(r));
        backend_get(f.multi, key, sizeof(key), tl_record, &r);
        ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);

        memset(&r, 0, sizeof(r));
        backend_add(f.multi, key, sizeof(key), value, sizeof(value), 60000, tl_record, &r);
        ck_assert_int_eq(r.status, BACKEND_OK);
        size_t len = 0;
        size_t g = backend_multi_place(f.multi, key, sizeof(key));
        ck_assert_ptr_nonnull(cache_get(f.caches[g], key, sizeof(key), fake_now, &len));
    }
    fixture_free(&f);
}
END_TEST

START_TEST(bad_key_completes_error)
{
    fixture f;
    tl_result r = {0};
    uint8_t big[BACKEND_MAX_KEY + 1] = {0};
    fixture_make(&f, names4, 4);
    backend_get(f.multi, NULL, 5, tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_put(f.multi, big, sizeof(big), big, 4, 1000, tl_record, &r);
    ck_assert_int_eq(r.calls, 2);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_del(f.multi, big, 0, NULL, NULL); /* NULL completion: no crash */
    backend_stats st;
    backend_get_stats(f.multi, &st);
    ck_assert_uint_eq(st.by_status[BACKEND_ERROR], 3);
    fixture_free(&f);
}
END_TEST

START_TEST(stats_are_summed)
{
    fixture f;
    fixture_make(&f, names4, 4);
    for (uint32_t k = 0; k < 400; k++) {
        uint8_t key[KEY_LEN];
        const uint8_t v[] = "v";
        make_key(k, key);
        backend_put(f.multi, key, sizeof(key), v, 1, 60000, NULL, NULL);
        make_key(k + 100000, key);
        backend_get(f.multi, key, sizeof(key), NULL, NULL); /* misses */
    }
    backend_stats sum, g;
    uint64_t ops = 0, ok = 0, nf = 0;
    backend_get_stats(f.multi, &sum);
    for (size_t i = 0; i < 4; i++) {
        backend_get_stats(backend_multi_group(f.multi, i), &g);
        ck_assert_uint_gt(g.ops, 0);
        ops += g.ops;
        ok += g.by_status[BACKEND_OK];
        nf += g.by_status[BACKEND_NOT_FOUND];
    }
    ck_assert_uint_eq(sum.ops, 800);
    ck_assert_uint_eq(ops, 800);
    ck_assert_uint_eq(sum.by_status[BACKEND_OK], 400);
    ck_assert_uint_eq(ok, 400);
    ck_assert_uint_eq(sum.by_status[BACKEND_NOT_FOUND], 400);
    ck_assert_uint_eq(nf, 400);
    ck_assert_uint_eq(sum.up, 1);
    ck_assert_uint_eq(backend_multi_groups_up(f.multi), 4);
    ck_assert_uint_eq(backend_multi_group_count(f.multi), 4);
    ck_assert_ptr_null(backend_multi_group(f.multi, 4));
    ck_assert_ptr_null(backend_multi_group_name(f.multi, 4));
    ck_assert_str_eq(backend_multi_group_name(f.multi, 2), names4[2]);
    fixture_free(&f);
}
END_TEST

/* A real Redis backend that cannot connect (nothing listens on its port,
 * and its event loop never runs) is a group that is down: up = 0, and its
 * keys complete UNAVAILABLE while the other group's keys are served. */
START_TEST(a_down_group_makes_the_whole_down)
{
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    cache_config cfg = {.max_bytes = 1u << 20};
    cache *c = cache_create(&cfg);
    ck_assert_ptr_nonnull(c);
    uint8_t cluster_key[32];
    ck_assert_int_eq(RAND_bytes(cluster_key, sizeof(cluster_key)), 1);
    char target[64];
    int port = th_free_tcp_port();
    ck_assert_int_gt(port, 0);
    snprintf(target, sizeof(target), "redis://127.0.0.1:%d", port);
    backend_redis_config rc = {.target = target, .cluster_key = cluster_key};
    char err[256] = "";
    backend *groups[2];
    groups[0] = backend_mem_new(c, fake_clock, NULL);
    groups[1] = backend_redis_new(base, &rc, err, sizeof(err));
    ck_assert_msg(groups[1] != NULL, "backend_redis_new: %s", err);
    const char *const names[] = {"memory", target};
    backend *m = backend_multi_new(groups, names, 2, err, sizeof(err));
    ck_assert_msg(m != NULL, "%s", err);

    backend_stats st;
    backend_get_stats(m, &st);
    ck_assert_uint_eq(st.up, 0);
    ck_assert_uint_eq(backend_multi_groups_up(m), 1);

    int served = 0, unavailable = 0;
    for (uint32_t k = 0; k < 200; k++) {
        uint8_t key[KEY_LEN];
        const uint8_t v[] = "value";
        tl_result r = {0};
        make_key(k, key);
        backend_put(m, key, sizeof(key), v, sizeof(v), 60000, tl_record, &r);
        ck_assert_int_eq(r.calls, 1); /* both complete at once here */
        if (backend_multi_place(m, key, sizeof(key)) == 0) {
            ck_assert_int_eq(r.status, BACKEND_OK);
            served++;
        } else {
            ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
            unavailable++;
        }
    }
    ck_assert_int_gt(served, 0);
    ck_assert_int_gt(unavailable, 0);
    backend_free(m);
    cache_free(c);
    event_base_free(base);
}
END_TEST

START_TEST(invalidations_are_forwarded)
{
    fixture f;
    tl_inv_log log = {0};
    uint8_t key[KEY_LEN];
    make_key(7, key);
    fixture_make(&f, names4, 4);
    /* Each group's hook is the multi's forwarder. Before the owner sets a
     * hook, a group's invalidation goes nowhere (and does not crash). */
    for (size_t i = 0; i < 4; i++) {
        backend *g = backend_multi_group(f.multi, i);
        ck_assert_ptr_nonnull(g->invalidate);
        g->invalidate(g->invalidate_arg, key, sizeof(key));
    }
    backend_set_invalidate(f.multi, tl_on_invalidate, &log);
    for (size_t i = 0; i < 4; i++) {
        backend *g = backend_multi_group(f.multi, i);
        g->invalidate(g->invalidate_arg, key, sizeof(key));
        ck_assert_int_eq(log.calls, (int)i + 1);
        ck_assert_uint_eq(log.key_len, sizeof(key));
        ck_assert_mem_eq(log.key, key, sizeof(key));
    }
    fixture_free(&f);
}
END_TEST

/* ---- creation ---- */

/* Refused creations free their groups: the sanitizer and valgrind runs
 * report a leak if one did not, and a double free if one did twice. */
static void two_groups(cache *c, backend *groups[2])
{
    groups[0] = backend_mem_new(c, fake_clock, NULL);
    groups[1] = backend_mem_new(c, fake_clock, NULL);
    ck_assert_ptr_nonnull(groups[0]);
    ck_assert_ptr_nonnull(groups[1]);
}

START_TEST(bad_arguments_are_refused)
{
    cache_config cfg = {.max_bytes = 1u << 20};
    cache *c = cache_create(&cfg);
    ck_assert_ptr_nonnull(c);
    backend *groups[2];
    char err[256];

    const char *const dup[] = {"redis://a:1", "redis://a:1"};
    two_groups(c, groups);
    err[0] = '\0';
    ck_assert_ptr_null(backend_multi_new(groups, dup, 2, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "redis://a:1"));
    ck_assert_ptr_nonnull(strstr(err, "twice"));

    const char *const empty[] = {"redis://a:1", ""};
    two_groups(c, groups);
    err[0] = '\0';
    ck_assert_ptr_null(backend_multi_new(groups, empty, 2, err, sizeof(err)));
    ck_assert_str_ne(err, "");

    const char *const ok[] = {"redis://a:1", "redis://b:1"};
    two_groups(c, groups);
    err[0] = '\0';
    ck_assert_ptr_null(backend_multi_new(groups, ok, 0, err, sizeof(err))); /* frees none */
    ck_assert_str_ne(err, "");
    backend *with_null[2] = {groups[0], NULL};
    ck_assert_ptr_null(backend_multi_new(with_null, ok, 2, NULL, 0)); /* frees groups[0] */
    ck_assert_ptr_null(backend_multi_new(NULL, ok, 2, err, sizeof(err)));
    backend *last[1] = {groups[1]};
    ck_assert_ptr_null(backend_multi_new(last, NULL, 1, err, sizeof(err))); /* frees groups[1] */

    /* One group is fine: everything goes to it. */
    two_groups(c, groups);
    backend *one = backend_multi_new(groups, ok, 1, err, sizeof(err));
    ck_assert_ptr_nonnull(one);
    ck_assert_ptr_nonnull(groups[0]->invalidate);
    ck_assert_ptr_null(groups[1]->invalidate);
    uint8_t key[KEY_LEN];
    make_key(3, key);
    ck_assert_uint_eq(backend_multi_place(one, key, sizeof(key)), 0);
    backend_free(one); /* frees groups[0] */
    backend_free(groups[1]);
    cache_free(c);

    ck_assert_uint_eq(backend_multi_groups_up(NULL), 0);
}
END_TEST

START_TEST(helpers_on_a_plain_backend)
{
    cache_config cfg = {.max_bytes = 1u << 20};
    cache *c = cache_create(&cfg);
    ck_assert_ptr_nonnull(c);
    backend *b = backend_mem_new(c, fake_clock, NULL);
    ck_assert_ptr_nonnull(b);
    uint8_t key[KEY_LEN];
    make_key(3, key);
    ck_assert_uint_eq(backend_multi_groups_up(b), 1);
    ck_assert_uint_eq(backend_multi_group_count(b), 1);
    ck_assert_uint_eq(backend_multi_place(b, key, sizeof(key)), 0);
    ck_assert_ptr_null(backend_multi_group(b, 0));
    ck_assert_ptr_null(backend_multi_group_name(b, 0));
    backend_free(b);
    cache_free(c);
}
END_TEST

static Suite *backend_multi_suite(void)
{
    Suite *s = suite_create("backend_multi");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, siphash_matches_openssl);
    tcase_add_test(tc, score_depends_on_name_and_key);
    tcase_add_test(tc, placement_independent_of_order);
    tcase_add_test(tc, placement_spreads_evenly);
    tcase_add_test(tc, removing_a_group_moves_only_its_keys);
    tcase_add_test(tc, adding_a_group_moves_keys_only_to_it);
    tcase_add_test(tc, ops_land_on_the_key_group);
    tcase_add_test(tc, bad_key_completes_error);
    tcase_add_test(tc, stats_are_summed);
    tcase_add_test(tc, a_down_group_makes_the_whole_down);
    tcase_add_test(tc, invalidations_are_forwarded);
    tcase_add_test(tc, bad_arguments_are_refused);
    tcase_add_test(tc, helpers_on_a_plain_backend);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(backend_multi_suite());
}
