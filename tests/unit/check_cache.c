/* check_cache.c — unit tests of the session store (sessiond/cache.c):
 * its basic operations, LRU order, byte budget and argument checks.
 *
 * What is covered: round trips with key lengths 1, 32 and 65 (CACHE_MAX_KEY);
 * misses; the TTL boundary (live while now < put time + ttl) through get and
 * sweep, huge TTLs and a clock that goes backwards; replace (value, TTL,
 * bytes, counters); remove; exact LRU order (touching the head, the middle
 * and the tail), and expired heads counted as expired rather than evicted;
 * an entry of exactly the budget accepted and one byte more refused; every
 * refused argument; the 16 MiB value limit.
 *
 * The sweep, counters and wipes are in check_cache_sweep.c, the randomized
 * runs and sizes in check_cache_random.c, the index in check_cache_index.c.
 *
 * Like every cache test, this file includes cache.c itself, built with
 * CACHE_TEST_HOOKS, so that the tests can reach cache.c's internals and
 * hooks; the binary still links libsessiond.a, but since every cache_
 * symbol is defined here the linker never pulls cache.o out of it. Time is
 * always injected (the cache takes now_ms on every call), so TTLs are tested
 * to the millisecond without sleeping. The shared helpers (a cache whose
 * free_fn checks every freed byte was wiped, numbered keys and values, the
 * counter assertion, a seeded PRNG) are in tests/lib/cache_fixture.c.
 */
#define CACHE_TEST_HOOKS 1
#include "cache.c" /* with its hooks: see the top */
/* Only check_cache_index.c runs cache.c's invariant check; elsewhere it
 * would be an unused static function (-Werror). */
static const char *cache_invariant_error(const cache *c) __attribute__((unused));

#include <check.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_fixture.h"

/* ---- basic operations -------------------------------------------------- */

START_TEST(test_round_trip)
{
    cf_free_log log;
    cache *c = cf_new_cache(1 << 20, &log);
    uint8_t key1[1] = {0x00};
    uint8_t keymax[CACHE_MAX_KEY];
    uint8_t value[300];
    size_t len = 0;
    const uint8_t *got;

    memset(keymax, 0xee, sizeof(keymax));
    ck_assert_int_eq(cf_put_id(c, 7, 140, 1000, CF_T0), 0);
    ck_assert(cf_has_id(c, 7, 140, CF_T0 + 10));

    cf_fill_value(value, sizeof(value), 99);
    ck_assert_int_eq(cache_put(c, key1, 1, value, 1, 1000, CF_T0), 0);
    ck_assert_int_eq(cache_put(c, keymax, sizeof(keymax), value, sizeof(value), 1000, CF_T0), 0);
    got = cache_get(c, key1, 1, CF_T0, &len);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(len, 1);
    ck_assert_uint_eq(got[0], value[0]);
    got = cache_get(c, keymax, sizeof(keymax), CF_T0, &len);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(len, sizeof(value));
    ck_assert_mem_eq(got, value, sizeof(value));
    /* The cache holds a copy: the caller's buffer may change. */
    value[0] ^= 0xff;
    ck_assert_uint_ne(cache_get(c, keymax, sizeof(keymax), CF_T0, &len)[0], value[0]);
    /* value_len may be NULL. */
    ck_assert_ptr_nonnull(cache_get(c, key1, 1, CF_T0, NULL));

    CF_ASSERT_STATS(c, 5, 5, 0, 3, 0, 0, 0, 0, 3,
                    cache_entry_cost(CF_KEY_LEN, 140) + cache_entry_cost(1, 1) +
                        cache_entry_cost(sizeof(keymax), sizeof(value)));
    cache_free(c);
    ck_assert_uint_eq(log.calls, 3);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

START_TEST(test_get_missing)
{
    cache *c = cf_new_cache(1 << 20, NULL);
    uint8_t key[CF_KEY_LEN];
    size_t len = 777;

    ck_assert_ptr_null(cache_get(c, cf_key_of(1, key), CF_KEY_LEN, CF_T0, &len));
    ck_assert_uint_eq(len, 777); /* untouched on a miss */
    ck_assert_int_eq(cf_put_id(c, 1, 100, 1000, CF_T0), 0);
    ck_assert_ptr_null(cache_get(c, cf_key_of(2, key), CF_KEY_LEN, CF_T0, &len));
    /* Same bytes, shorter: another key. */
    ck_assert_ptr_null(cache_get(c, cf_key_of(1, key), CF_KEY_LEN - 1, CF_T0, &len));
    ck_assert_uint_eq(len, 777);
    CF_ASSERT_STATS(c, 3, 0, 3, 1, 0, 0, 0, 0, 1, cache_entry_cost(CF_KEY_LEN, 100));
    cache_free(c);
}
END_TEST

START_TEST(test_ttl_boundary)
{
    cf_free_log log;
    cache *c = cf_new_cache(1 << 20, &log);

    /* Live while now < put time + ttl; expired at exactly put time + ttl. */
    ck_assert_int_eq(cf_put_id(c, 1, 50, 500, CF_T0 + 1000), 0);
    ck_assert(cf_has_id(c, 1, 50, CF_T0 + 1499));
    ck_assert(!cf_has_id(c, 1, 50, CF_T0 + 1500));
    CF_ASSERT_STATS(c, 2, 1, 1, 1, 0, 1, 0, 0, 0, 0);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    /* Gone for good, also once the clock is earlier again. */
    ck_assert(!cf_has_id(c, 1, 50, CF_T0 + 1000));

    /* The shortest TTL, 1 ms: live at the put's instant only. */
    ck_assert_int_eq(cf_put_id(c, 2, 50, 1, CF_T0 + 2000), 0);
    ck_assert(cf_has_id(c, 2, 50, CF_T0 + 2000));
    ck_assert(!cf_has_id(c, 2, 50, CF_T0 + 2001));

    /* The sweep uses the same boundary. */
    ck_assert_int_eq(cf_put_id(c, 3, 50, 10, CF_T0 + 3000), 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 3009, 100), 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 3010, 100), 1);
    CF_ASSERT_STATS(c, 5, 2, 3, 3, 0, 3, 0, 0, 0, 0);
    cache_free(c);
    ck_assert_uint_eq(log.calls, 3);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

START_TEST(test_ttl_extremes)
{
    const uint64_t year_ms = UINT64_C(365) * 24 * 3600 * 1000;
    cache *c = cf_new_cache(1 << 20, NULL);

    /* A TTL that would overflow the clock saturates instead of wrapping. */
    ck_assert_int_eq(cf_put_id(c, 1, 10, UINT64_MAX, UINT64_MAX - 5), 0);
    ck_assert(cf_has_id(c, 1, 10, UINT64_MAX));
    cache_free(c);

    /* Expiry is kept for 34 years (2^40 ms) after the first put. */
    c = cf_new_cache(1 << 20, NULL);
    ck_assert_int_eq(cf_put_id(c, 1, 10, UINT64_MAX, 0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 10, 30 * year_ms, 0), 0);
    ck_assert_int_eq(cf_put_id(c, 3, 10, UINT64_C(1) << 40, 0), 0); /* just past 40 bits */
    ck_assert(cf_has_id(c, 1, 10, 34 * year_ms));
    ck_assert(cf_has_id(c, 3, 10, 34 * year_ms));
    ck_assert(cf_has_id(c, 2, 10, 30 * year_ms - 1));
    ck_assert(!cf_has_id(c, 2, 10, 30 * year_ms));
    cache_free(c);

    /* A clock that goes backwards never expires anything early. */
    c = cf_new_cache(1 << 20, NULL);
    ck_assert_int_eq(cf_put_id(c, 1, 10, 100, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 10, 100, CF_T0 - 5000), 0);
    ck_assert(cf_has_id(c, 1, 10, CF_T0 - 9000));
    ck_assert(cf_has_id(c, 2, 10, CF_T0 - 9000));
    ck_assert_uint_eq(cache_sweep(c, 0, 100), 0);
    ck_assert_uint_eq(cf_stats_of(c).entries, 2);
    ck_assert(!cf_has_id(c, 1, 10, CF_T0 + 100));
    cache_free(c);
}
END_TEST

START_TEST(test_replace)
{
    cf_free_log log;
    cache *c = cf_new_cache(1 << 20, &log);

    ck_assert_int_eq(cf_put_id(c, 1, 10, 100, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 20, CF_LONG, CF_T0), 0);
    /* New value and new TTL (the old one would have expired at CF_T0 + 100). */
    ck_assert_int_eq(cf_put_id(c, 1, 1000, 1000, CF_T0 + 50), 0);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert_uint_ge(log.last_size, CF_KEY_LEN + 10);
    ck_assert_uint_lt(log.last_size, cache_entry_cost(CF_KEY_LEN, 10));
    ck_assert(cf_has_id(c, 1, 1000, CF_T0 + 500));
    ck_assert(cf_has_id(c, 1, 1000, CF_T0 + 1049));
    ck_assert(!cf_has_id(c, 1, 1000, CF_T0 + 1050));
    /* One put each, no eviction, no removal; bytes follow the new size. */
    CF_ASSERT_STATS(c, 3, 2, 1, 3, 0, 1, 0, 0, 1, cache_entry_cost(CF_KEY_LEN, 20));
    ck_assert_int_eq(cf_put_id(c, 2, 5, CF_LONG, CF_T0), 0);
    CF_ASSERT_STATS(c, 3, 2, 1, 4, 0, 1, 0, 0, 1, cache_entry_cost(CF_KEY_LEN, 5));
    cache_free(c);
    ck_assert_uint_eq(log.calls, 4);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

START_TEST(test_replace_refused_keeps_old)
{
    size_t budget = cache_entry_cost(CF_KEY_LEN, 100);
    cache *c = cf_new_cache(budget, NULL);

    ck_assert_int_eq(cf_put_id(c, 1, 100, CF_LONG, CF_T0), 0);
    /* Too large for the budget, or bad TTL: the old entry is left alone. */
    ck_assert_int_eq(cf_put_id(c, 1, 101, CF_LONG, CF_T0), -1);
    ck_assert_int_eq(cf_put_id(c, 1, 50, 0, CF_T0), -1);
    ck_assert(cf_has_id(c, 1, 100, CF_T0));
    CF_ASSERT_STATS(c, 1, 1, 0, 1, 0, 0, 0, 2, 1, budget);
    cache_free(c);
}
END_TEST

START_TEST(test_remove)
{
    cf_free_log log;
    cache *c = cf_new_cache(1 << 20, &log);
    uint8_t key[CF_KEY_LEN];

    ck_assert_int_eq(cf_put_id(c, 1, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_remove_id(c, 1), 1);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert_int_eq(cf_remove_id(c, 1), 0);
    ck_assert_int_eq(cf_remove_id(c, 3), 0);
    ck_assert_int_eq(cache_remove(c, cf_key_of(2, key), 0), 0);
    ck_assert_int_eq(cache_remove(c, cf_key_of(2, key), CF_KEY_LEN - 1), 0);
    ck_assert_int_eq(cache_remove(c, NULL, CF_KEY_LEN), 0);
    ck_assert(!cf_has_id(c, 1, 100, CF_T0));
    ck_assert(cf_has_id(c, 2, 100, CF_T0));
    CF_ASSERT_STATS(c, 2, 1, 1, 2, 1, 0, 0, 0, 1, cache_entry_cost(CF_KEY_LEN, 100));
    /* No clock here: an expired, unswept entry is still removed (1). */
    ck_assert_int_eq(cf_put_id(c, 3, 100, 1, CF_T0), 0);
    ck_assert_int_eq(cf_remove_id(c, 3), 1);
    ck_assert_int_eq(cf_remove_id(c, 2), 1);
    CF_ASSERT_STATS(c, 2, 1, 1, 3, 3, 0, 0, 0, 0, 0);
    /* The cache emptied and filled again. */
    ck_assert_int_eq(cf_put_id(c, 4, 100, CF_LONG, CF_T0), 0);
    ck_assert(cf_has_id(c, 4, 100, CF_T0));
    cache_free(c);
    ck_assert_uint_eq(log.calls, 4);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

/* ---- LRU and the byte budget ------------------------------------------- */

START_TEST(test_lru_touched_survives)
{
    size_t cost = cache_entry_cost(CF_KEY_LEN, 100);
    cf_free_log log;
    cache *c = cf_new_cache(4 * cost, &log);
    uint32_t id;

    for (id = 0; id < 4; id++)
        ck_assert_int_eq(cf_put_id(c, id, 100, CF_LONG, CF_T0 + id), 0);
    ck_assert(cf_has_id(c, 0, 100, CF_T0 + 10)); /* 0 becomes most recent */
    ck_assert_int_eq(cf_put_id(c, 4, 100, CF_LONG, CF_T0 + 11), 0);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert(!cf_has_id(c, 1, 100, CF_T0 + 12)); /* the untouched oldest went */
    ck_assert(cf_has_id(c, 0, 100, CF_T0 + 12));
    ck_assert(cf_has_id(c, 2, 100, CF_T0 + 12));
    ck_assert(cf_has_id(c, 3, 100, CF_T0 + 12));
    ck_assert(cf_has_id(c, 4, 100, CF_T0 + 12));
    CF_ASSERT_STATS(c, 6, 5, 1, 5, 0, 0, 1, 0, 4, 4 * cost);
    cache_free(c);
}
END_TEST

/* Touch the head, the middle and the tail, then let fillers push everything
 * out one by one: the evictions must come exactly in LRU order. Only the
 * key expected to be gone is probed, and a miss changes no order. */
START_TEST(test_lru_exact_order)
{
    static const uint32_t expect_order[5] = {1, 3, 2, 0, 4};
    size_t cost = cache_entry_cost(CF_KEY_LEN, 64);
    cache *c = cf_new_cache(5 * cost, NULL);
    uint32_t id;

    for (id = 0; id < 5; id++)
        ck_assert_int_eq(cf_put_id(c, id, 64, CF_LONG, CF_T0), 0);
    ck_assert(cf_has_id(c, 2, 64, CF_T0)); /* middle: 0 1 3 4 2 */
    ck_assert(cf_has_id(c, 0, 64, CF_T0)); /* head:   1 3 4 2 0 */
    ck_assert(cf_has_id(c, 4, 64, CF_T0)); /* middle: 1 3 2 0 4 */
    ck_assert(cf_has_id(c, 4, 64, CF_T0)); /* tail, no change */
    for (id = 0; id < 5; id++) {
        ck_assert_int_eq(cf_put_id(c, 100 + id, 64, CF_LONG, CF_T0), 0);
        ck_assert_uint_eq(cf_stats_of(c).evicted, id + 1);
        ck_assert_uint_eq(cf_stats_of(c).entries, 5);
        ck_assert_msg(!cf_has_id(c, expect_order[id], 64, CF_T0), "filler %u should evict %u", id,
                      expect_order[id]);
    }
    for (id = 0; id < 5; id++)
        ck_assert(cf_has_id(c, 100 + id, 64, CF_T0));
    cache_free(c);
}
END_TEST

START_TEST(test_evict_expired_head_counts_expired)
{
    size_t cost = cache_entry_cost(CF_KEY_LEN, 64);
    cache *c = cf_new_cache(2 * cost, NULL);

    ck_assert_int_eq(cf_put_id(c, 1, 64, 10, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 64, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 3, 64, CF_LONG, CF_T0 + 20), 0); /* drops 1: expired */
    CF_ASSERT_STATS(c, 0, 0, 0, 3, 0, 1, 0, 0, 2, 2 * cost);
    ck_assert_int_eq(cf_put_id(c, 4, 64, CF_LONG, CF_T0 + 20), 0); /* drops 2: live */
    CF_ASSERT_STATS(c, 0, 0, 0, 4, 0, 1, 1, 0, 2, 2 * cost);
    cache_free(c);
}
END_TEST

START_TEST(test_budget_edges)
{
    size_t small = cache_entry_cost(1, 20);
    size_t budget = 5 * small + 10;
    size_t fixed = cache_entry_cost(1, 0); /* what the budget adds to key + value */
    uint8_t key = 0;
    uint8_t value[1024];
    cf_free_log log;
    cache *c = cf_new_cache(budget, &log);

    cf_fill_value(value, sizeof(value), 3);
    for (key = 0; key < 5; key++)
        ck_assert_int_eq(cache_put(c, &key, 1, value, 20, CF_LONG, CF_T0), 0);
    ck_assert_uint_eq(cf_stats_of(c).bytes, 5 * small);
    /* One byte over the whole budget: refused, nothing evicted. */
    key = 9;
    ck_assert_int_eq(cache_put(c, &key, 1, value, budget - fixed + 1, CF_LONG, CF_T0), -1);
    CF_ASSERT_STATS(c, 0, 0, 0, 5, 0, 0, 0, 1, 5, 5 * small);
    ck_assert_uint_eq(log.calls, 0);
    /* Exactly the budget: accepted, after evicting everything else. */
    ck_assert_int_eq(cache_put(c, &key, 1, value, budget - fixed, CF_LONG, CF_T0), 0);
    CF_ASSERT_STATS(c, 0, 0, 0, 6, 0, 0, 5, 1, 1, budget);
    ck_assert_uint_eq(log.calls, 5);
    ck_assert_uint_eq(log.dirty, 0);
    cache_free(c);

    /* A zero budget refuses everything. */
    c = cf_new_cache(0, NULL);
    ck_assert_int_eq(cache_put(c, &key, 1, value, 1, CF_LONG, CF_T0), -1);
    ck_assert_uint_eq(cf_stats_of(c).rejected, 1);
    cache_free(c);
}
END_TEST

START_TEST(test_entry_cost)
{
    size_t fixed = cache_entry_cost(1, 1) - 2;

    /* A constant per entry on top of key and value, at least a pointer. */
    ck_assert_uint_ge(fixed, sizeof(void *));
    ck_assert_uint_eq(cache_entry_cost(CF_KEY_LEN, 140), fixed + CF_KEY_LEN + 140);
    ck_assert_uint_eq(cache_entry_cost(CACHE_MAX_KEY, 65507), fixed + CACHE_MAX_KEY + 65507);
    /* Saturates rather than wraps. */
    ck_assert_uint_eq(cache_entry_cost(1, SIZE_MAX), SIZE_MAX);
    ck_assert_uint_eq(cache_entry_cost(SIZE_MAX, 1), SIZE_MAX);
    ck_assert_uint_eq(cache_entry_cost(SIZE_MAX - fixed, SIZE_MAX - fixed), SIZE_MAX);
}
END_TEST

/* ---- refused arguments ------------------------------------------------- */

START_TEST(test_bad_args)
{
    uint8_t key[CACHE_MAX_KEY + 1];
    uint8_t value[16];
    cf_free_log log;
    cache *c = cf_new_cache(1 << 20, &log);
    size_t len = 5;

    memset(key, 0x11, sizeof(key));
    memset(value, 0x22, sizeof(value));
    ck_assert_int_eq(cache_put(c, key, 0, value, 16, CF_LONG, CF_T0), -1);
    ck_assert_int_eq(cache_put(c, key, CACHE_MAX_KEY + 1, value, 16, CF_LONG, CF_T0), -1);
    ck_assert_int_eq(cache_put(c, key, 8, value, 0, CF_LONG, CF_T0), -1);
    ck_assert_int_eq(cache_put(c, key, 8, value, 16, 0, CF_T0), -1);
    ck_assert_int_eq(cache_put(c, NULL, 8, value, 16, CF_LONG, CF_T0), -1);
    ck_assert_int_eq(cache_put(c, key, 8, NULL, 16, CF_LONG, CF_T0), -1);
    CF_ASSERT_STATS(c, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0);
    ck_assert_uint_eq(log.calls, 0); /* refused before anything was allocated */

    /* The limits themselves are fine. */
    ck_assert_int_eq(cache_put(c, key, 1, value, 1, 1, CF_T0), 0);
    ck_assert_int_eq(cache_put(c, key, CACHE_MAX_KEY, value, 16, CF_LONG, CF_T0), 0);

    /* Lookups with a bad key are plain misses. */
    ck_assert_ptr_null(cache_get(c, key, 0, CF_T0, &len));
    ck_assert_ptr_null(cache_get(c, key, CACHE_MAX_KEY + 1, CF_T0, &len));
    ck_assert_ptr_null(cache_get(c, NULL, 8, CF_T0, &len));
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(cache_remove(c, key, CACHE_MAX_KEY + 1), 0);
    CF_ASSERT_STATS(c, 3, 0, 3, 2, 0, 0, 0, 6, 2,
                    cache_entry_cost(1, 1) + cache_entry_cost(CACHE_MAX_KEY, 16));
    cache_free(c);
}
END_TEST

START_TEST(test_value_limit)
{
    const size_t limit = ((size_t)1 << 24) - 1; /* 16 MiB - 1, see cache.h */
    uint8_t *value = malloc(limit + 1);
    uint8_t key = 1;
    size_t len = 0;
    cf_free_log log;
    cache *c = cf_new_cache(2 * cache_entry_cost(1, limit + 1), &log);

    ck_assert_ptr_nonnull(value);
    memset(value, 0x7e, limit + 1);
    ck_assert_int_eq(cache_put(c, &key, 1, value, limit + 1, CF_LONG, CF_T0), -1);
    ck_assert_int_eq(cache_put(c, &key, 1, value, limit, CF_LONG, CF_T0), 0);
    ck_assert_ptr_nonnull(cache_get(c, &key, 1, CF_T0, &len));
    ck_assert_uint_eq(len, limit);
    CF_ASSERT_STATS(c, 1, 1, 0, 1, 0, 0, 0, 1, 1, cache_entry_cost(1, limit));
    cache_free(c);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    free(value);
}
END_TEST

START_TEST(test_create_and_free_edges)
{
    cache *c;

    ck_assert_ptr_null(cache_create(NULL));
    cache_free(NULL);
    /* No free_fn: free(3); ASan and valgrind check that nothing leaks. */
    c = cf_new_cache(1 << 20, NULL);
    ck_assert_int_eq(cf_put_id(c, 1, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 1, 200, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 100, 5, CF_T0), 0);
    ck_assert(!cf_has_id(c, 2, 100, CF_T0 + 5));
    ck_assert_int_eq(cf_put_id(c, 3, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_remove_id(c, 3), 1);
    ck_assert_int_eq(cf_put_id(c, 4, 100, CF_LONG, CF_T0), 0);
    cache_free(c);
    /* An empty cache, and one that was filled and emptied. */
    cache_free(cf_new_cache(100, NULL));
    c = cf_new_cache(1 << 20, NULL);
    ck_assert_int_eq(cf_put_id(c, 1, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_remove_id(c, 1), 1);
    cache_free(c);
}
END_TEST

static Suite *cache_suite(void)
{
    Suite *s = suite_create("cache");
    TCase *basic = tcase_create("basic");
    TCase *lru = tcase_create("lru_budget");
    TCase *args = tcase_create("args");

    tcase_add_test(basic, test_round_trip);
    tcase_add_test(basic, test_get_missing);
    tcase_add_test(basic, test_ttl_boundary);
    tcase_add_test(basic, test_ttl_extremes);
    tcase_add_test(basic, test_replace);
    tcase_add_test(basic, test_replace_refused_keeps_old);
    tcase_add_test(basic, test_remove);
    suite_add_tcase(s, basic);

    tcase_add_test(lru, test_lru_touched_survives);
    tcase_add_test(lru, test_lru_exact_order);
    tcase_add_test(lru, test_evict_expired_head_counts_expired);
    tcase_add_test(lru, test_budget_edges);
    tcase_add_test(lru, test_entry_cost);
    suite_add_tcase(s, lru);

    tcase_add_test(args, test_bad_args);
    tcase_add_test(args, test_value_limit);
    tcase_add_test(args, test_create_and_free_edges);
    tcase_set_timeout(args, 60);
    suite_add_tcase(s, args);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cache_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
