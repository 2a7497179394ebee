/* check_cache.c — unit tests of the session store (sessiond/cache.c).
 *
 * Time is always injected (the cache takes now_ms on every call), so TTLs
 * are tested to the millisecond without sleeping. Freed entries are observed
 * through the config's free_fn: it checks that every byte handed back has
 * been wiped before it frees the block.
 *
 * This file includes cache.c itself, built with CACHE_TEST_HOOKS: the tests
 * can then replace the keyed hash (to force collisions), fix the SipHash key
 * (so a run is repeatable), look at the index, and run cache.c's own
 * invariant check (every listed entry indexed under its key, every slot's
 * tag and probe distance right, clusters in Robin Hood order, counts, bytes,
 * the sweep cursor). The daemon links the same code without the hooks. The
 * test binary still links libsessiond.a, but since every cache_ symbol is
 * defined here, the linker never pulls cache.o out of it.
 *
 * What is covered: round trips with key lengths 1, 32 and 65 (CACHE_MAX_KEY);
 * misses; the TTL boundary (live while now < put time + ttl) through get and
 * sweep, huge TTLs and a clock that goes backwards; replace (value, TTL,
 * bytes, counters); remove; exact LRU order (touching the head, the middle
 * and the tail), and expired heads counted as expired rather than evicted;
 * an entry of exactly the budget accepted and one byte more refused; every
 * refused argument; the 16 MiB value limit; the incremental sweep (bounded
 * per call, resuming from its cursor, wrapping, and a cursor entry removed,
 * evicted, replaced, hit or expired between two calls); every counter;
 * wipe-on-free on each path that frees; a model-checked run of 10k random
 * operations (byte budget never exceeded, every answer and every counter as
 * predicted); a random run with small sweeps in between (cursor safety,
 * under ASan/valgrind); one entry, and 100k entries (CHECK_CACHE_MANY
 * overrides the count, e.g. for a -DCACHE_DEBUG build, which is O(n) per op).
 *
 * The index: SipHash-2-4 against the reference vectors; growth through a
 * dozen doublings with every key looked up (and the invariants checked) as
 * each incremental migration starts and ends; removals, expiries, evictions
 * and sweeps while a migration is half done; 300k random puts, removes and
 * gets over a growing key space (backward-shift deletion, no lost or
 * resurrected keys); remove/put cycles at a fixed size; forced hash
 * collisions (every key on one hash, which also saturates the probe-distance
 * field; one tag on many homes; many tags on one home; a few homes); tag
 * collisions arising naturally among 100k keys; and the per-entry overhead
 * by the allocator's own account.
 */
#define CACHE_TEST_HOOKS 1
#include "cache.c" /* with its hooks: see the top */

#include <check.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_LEN 32     /* the v1 key: a padded 32-byte session ID */
#define T0      100000 /* an arbitrary start for the injected clock, in ms */
#define LONG    1000000u

/* ---- helpers ---------------------------------------------------------- */

/* Check records every passing ck_assert (a write to its pipe, a system
 * call): these assert only on failure, for loops of many thousand checks. */
#define FAST_ASSERT(cond)                                                                          \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg("Assertion '%s' failed", #cond);                                          \
    } while (0)
#define FAST_EQ(a, b)                                                                              \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            ck_abort_msg("Assertion '%s == %s' failed: %lld != %lld", #a, #b, a_, b_);             \
    } while (0)

typedef struct free_log {
    size_t calls; /* blocks handed to free_fn */
    size_t dirty; /* of which not entirely zero: a missed wipe */
    size_t last_size;
} free_log;

static void log_free(void *ptr, size_t size, void *arg)
{
    free_log *log = arg;
    const uint8_t *bytes = ptr;
    size_t i = 0;

    while (i < size && bytes[i] == 0)
        i++;
    if (i != size)
        log->dirty++;
    log->calls++;
    log->last_size = size;
    free(ptr);
}

/* A cache with the given budget; log (if not NULL) observes every free. */
static cache *new_cache(size_t max_bytes, free_log *log)
{
    cache_config cfg;
    cache *c;

    memset(&cfg, 0, sizeof(cfg));
    cfg.max_bytes = max_bytes;
    if (log != NULL) {
        memset(log, 0, sizeof(*log));
        cfg.free_fn = log_free;
        cfg.free_arg = log;
    }
    c = cache_create(&cfg);
    ck_assert_ptr_nonnull(c);
    return c;
}

static cache_stats stats_of(const cache *c)
{
    cache_stats st;

    cache_get_stats(c, &st);
    return st;
}

/* Key number id: KEY_LEN bytes, the id in front, so distinct ids differ. */
static const uint8_t *key_of(uint32_t id, uint8_t *buf)
{
    size_t i;

    for (i = 0; i < KEY_LEN; i++)
        buf[i] = (uint8_t)(0x5a ^ i);
    buf[0] = (uint8_t)(id >> 24);
    buf[1] = (uint8_t)(id >> 16);
    buf[2] = (uint8_t)(id >> 8);
    buf[3] = (uint8_t)id;
    return buf;
}

/* Value bytes that depend on a seed and never are zero (a wipe shows). */
static void fill_value(uint8_t *buf, size_t len, uint32_t seed)
{
    size_t i;

    for (i = 0; i < len; i++)
        buf[i] = (uint8_t)(1 + (seed * 131u + i * 7u) % 255u);
}

static int put_id(cache *c, uint32_t id, size_t value_len, uint64_t ttl, uint64_t now)
{
    uint8_t key[KEY_LEN];
    uint8_t value[4096];

    FAST_ASSERT(value_len <= sizeof(value));
    fill_value(value, value_len, id);
    return cache_put(c, key_of(id, key), KEY_LEN, value, value_len, ttl, now);
}

/* 1 when id is there with the value put_id stored (this counts as a hit and
 * moves it to MRU), 0 when absent (a miss changes no order). */
static int has_id(cache *c, uint32_t id, size_t value_len, uint64_t now)
{
    uint8_t key[KEY_LEN];
    uint8_t expect[4096];
    size_t got_len = 0;
    const uint8_t *got = cache_get(c, key_of(id, key), KEY_LEN, now, &got_len);

    if (got == NULL)
        return 0;
    fill_value(expect, value_len, id);
    FAST_EQ(got_len, value_len);
    FAST_ASSERT(memcmp(got, expect, value_len) == 0);
    return 1;
}

static int remove_id(cache *c, uint32_t id)
{
    uint8_t key[KEY_LEN];

    return cache_remove(c, key_of(id, key), KEY_LEN);
}

#define ASSERT_STATS(c, g, h, m, p, r, x, v, j, n, b)                                              \
    do {                                                                                           \
        cache_stats st_ = stats_of(c);                                                             \
        ck_assert_uint_eq(st_.gets, (g));                                                          \
        ck_assert_uint_eq(st_.hits, (h));                                                          \
        ck_assert_uint_eq(st_.misses, (m));                                                        \
        ck_assert_uint_eq(st_.puts, (p));                                                          \
        ck_assert_uint_eq(st_.removes, (r));                                                       \
        ck_assert_uint_eq(st_.expired, (x));                                                       \
        ck_assert_uint_eq(st_.evicted, (v));                                                       \
        ck_assert_uint_eq(st_.rejected, (j));                                                      \
        ck_assert_uint_eq(st_.entries, (n));                                                       \
        ck_assert_uint_eq(st_.bytes, (b));                                                         \
    } while (0)

/* splitmix64: a fixed-seed PRNG, so every run does the same operations. */
static uint64_t rnd_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* ---- basic operations -------------------------------------------------- */

START_TEST(test_round_trip)
{
    free_log log;
    cache *c = new_cache(1 << 20, &log);
    uint8_t key1[1] = {0x00};
    uint8_t keymax[CACHE_MAX_KEY];
    uint8_t value[300];
    size_t len = 0;
    const uint8_t *got;

    memset(keymax, 0xee, sizeof(keymax));
    ck_assert_int_eq(put_id(c, 7, 140, 1000, T0), 0);
    ck_assert(has_id(c, 7, 140, T0 + 10));

    fill_value(value, sizeof(value), 99);
    ck_assert_int_eq(cache_put(c, key1, 1, value, 1, 1000, T0), 0);
    ck_assert_int_eq(cache_put(c, keymax, sizeof(keymax), value, sizeof(value), 1000, T0), 0);
    got = cache_get(c, key1, 1, T0, &len);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(len, 1);
    ck_assert_uint_eq(got[0], value[0]);
    got = cache_get(c, keymax, sizeof(keymax), T0, &len);
    ck_assert_ptr_nonnull(got);
    ck_assert_uint_eq(len, sizeof(value));
    ck_assert_mem_eq(got, value, sizeof(value));
    /* The cache holds a copy: the caller's buffer may change. */
    value[0] ^= 0xff;
    ck_assert_uint_ne(cache_get(c, keymax, sizeof(keymax), T0, &len)[0], value[0]);
    /* value_len may be NULL. */
    ck_assert_ptr_nonnull(cache_get(c, key1, 1, T0, NULL));

    ASSERT_STATS(c, 5, 5, 0, 3, 0, 0, 0, 0, 3,
                 cache_entry_cost(KEY_LEN, 140) + cache_entry_cost(1, 1) +
                     cache_entry_cost(sizeof(keymax), sizeof(value)));
    cache_free(c);
    ck_assert_uint_eq(log.calls, 3);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

START_TEST(test_get_missing)
{
    cache *c = new_cache(1 << 20, NULL);
    uint8_t key[KEY_LEN];
    size_t len = 777;

    ck_assert_ptr_null(cache_get(c, key_of(1, key), KEY_LEN, T0, &len));
    ck_assert_uint_eq(len, 777); /* untouched on a miss */
    ck_assert_int_eq(put_id(c, 1, 100, 1000, T0), 0);
    ck_assert_ptr_null(cache_get(c, key_of(2, key), KEY_LEN, T0, &len));
    /* Same bytes, shorter: another key. */
    ck_assert_ptr_null(cache_get(c, key_of(1, key), KEY_LEN - 1, T0, &len));
    ck_assert_uint_eq(len, 777);
    ASSERT_STATS(c, 3, 0, 3, 1, 0, 0, 0, 0, 1, cache_entry_cost(KEY_LEN, 100));
    cache_free(c);
}
END_TEST

START_TEST(test_ttl_boundary)
{
    free_log log;
    cache *c = new_cache(1 << 20, &log);

    /* Live while now < put time + ttl; expired at exactly put time + ttl. */
    ck_assert_int_eq(put_id(c, 1, 50, 500, T0 + 1000), 0);
    ck_assert(has_id(c, 1, 50, T0 + 1499));
    ck_assert(!has_id(c, 1, 50, T0 + 1500));
    ASSERT_STATS(c, 2, 1, 1, 1, 0, 1, 0, 0, 0, 0);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    /* Gone for good, also once the clock is earlier again. */
    ck_assert(!has_id(c, 1, 50, T0 + 1000));

    /* The shortest TTL, 1 ms: live at the put's instant only. */
    ck_assert_int_eq(put_id(c, 2, 50, 1, T0 + 2000), 0);
    ck_assert(has_id(c, 2, 50, T0 + 2000));
    ck_assert(!has_id(c, 2, 50, T0 + 2001));

    /* The sweep uses the same boundary. */
    ck_assert_int_eq(put_id(c, 3, 50, 10, T0 + 3000), 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 3009, 100), 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 3010, 100), 1);
    ASSERT_STATS(c, 5, 2, 3, 3, 0, 3, 0, 0, 0, 0);
    cache_free(c);
    ck_assert_uint_eq(log.calls, 3);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

START_TEST(test_ttl_extremes)
{
    const uint64_t year_ms = UINT64_C(365) * 24 * 3600 * 1000;
    cache *c = new_cache(1 << 20, NULL);

    /* A TTL that would overflow the clock saturates instead of wrapping. */
    ck_assert_int_eq(put_id(c, 1, 10, UINT64_MAX, UINT64_MAX - 5), 0);
    ck_assert(has_id(c, 1, 10, UINT64_MAX));
    cache_free(c);

    /* Expiry is kept for 34 years (2^40 ms) after the first put. */
    c = new_cache(1 << 20, NULL);
    ck_assert_int_eq(put_id(c, 1, 10, UINT64_MAX, 0), 0);
    ck_assert_int_eq(put_id(c, 2, 10, 30 * year_ms, 0), 0);
    ck_assert_int_eq(put_id(c, 3, 10, UINT64_C(1) << 40, 0), 0); /* just past 40 bits */
    ck_assert(has_id(c, 1, 10, 34 * year_ms));
    ck_assert(has_id(c, 3, 10, 34 * year_ms));
    ck_assert(has_id(c, 2, 10, 30 * year_ms - 1));
    ck_assert(!has_id(c, 2, 10, 30 * year_ms));
    cache_free(c);

    /* A clock that goes backwards never expires anything early. */
    c = new_cache(1 << 20, NULL);
    ck_assert_int_eq(put_id(c, 1, 10, 100, T0), 0);
    ck_assert_int_eq(put_id(c, 2, 10, 100, T0 - 5000), 0);
    ck_assert(has_id(c, 1, 10, T0 - 9000));
    ck_assert(has_id(c, 2, 10, T0 - 9000));
    ck_assert_uint_eq(cache_sweep(c, 0, 100), 0);
    ck_assert_uint_eq(stats_of(c).entries, 2);
    ck_assert(!has_id(c, 1, 10, T0 + 100));
    cache_free(c);
}
END_TEST

START_TEST(test_replace)
{
    free_log log;
    cache *c = new_cache(1 << 20, &log);

    ck_assert_int_eq(put_id(c, 1, 10, 100, T0), 0);
    ck_assert_int_eq(put_id(c, 2, 20, LONG, T0), 0);
    /* New value and new TTL (the old one would have expired at T0 + 100). */
    ck_assert_int_eq(put_id(c, 1, 1000, 1000, T0 + 50), 0);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert_uint_ge(log.last_size, KEY_LEN + 10);
    ck_assert_uint_lt(log.last_size, cache_entry_cost(KEY_LEN, 10));
    ck_assert(has_id(c, 1, 1000, T0 + 500));
    ck_assert(has_id(c, 1, 1000, T0 + 1049));
    ck_assert(!has_id(c, 1, 1000, T0 + 1050));
    /* One put each, no eviction, no removal; bytes follow the new size. */
    ASSERT_STATS(c, 3, 2, 1, 3, 0, 1, 0, 0, 1, cache_entry_cost(KEY_LEN, 20));
    ck_assert_int_eq(put_id(c, 2, 5, LONG, T0), 0);
    ASSERT_STATS(c, 3, 2, 1, 4, 0, 1, 0, 0, 1, cache_entry_cost(KEY_LEN, 5));
    cache_free(c);
    ck_assert_uint_eq(log.calls, 4);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

START_TEST(test_replace_refused_keeps_old)
{
    size_t budget = cache_entry_cost(KEY_LEN, 100);
    cache *c = new_cache(budget, NULL);

    ck_assert_int_eq(put_id(c, 1, 100, LONG, T0), 0);
    /* Too large for the budget, or bad TTL: the old entry is left alone. */
    ck_assert_int_eq(put_id(c, 1, 101, LONG, T0), -1);
    ck_assert_int_eq(put_id(c, 1, 50, 0, T0), -1);
    ck_assert(has_id(c, 1, 100, T0));
    ASSERT_STATS(c, 1, 1, 0, 1, 0, 0, 0, 2, 1, budget);
    cache_free(c);
}
END_TEST

START_TEST(test_remove)
{
    free_log log;
    cache *c = new_cache(1 << 20, &log);
    uint8_t key[KEY_LEN];

    ck_assert_int_eq(put_id(c, 1, 100, LONG, T0), 0);
    ck_assert_int_eq(put_id(c, 2, 100, LONG, T0), 0);
    ck_assert_int_eq(remove_id(c, 1), 1);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert_int_eq(remove_id(c, 1), 0);
    ck_assert_int_eq(remove_id(c, 3), 0);
    ck_assert_int_eq(cache_remove(c, key_of(2, key), 0), 0);
    ck_assert_int_eq(cache_remove(c, key_of(2, key), KEY_LEN - 1), 0);
    ck_assert_int_eq(cache_remove(c, NULL, KEY_LEN), 0);
    ck_assert(!has_id(c, 1, 100, T0));
    ck_assert(has_id(c, 2, 100, T0));
    ASSERT_STATS(c, 2, 1, 1, 2, 1, 0, 0, 0, 1, cache_entry_cost(KEY_LEN, 100));
    /* No clock here: an expired, unswept entry is still removed (1). */
    ck_assert_int_eq(put_id(c, 3, 100, 1, T0), 0);
    ck_assert_int_eq(remove_id(c, 3), 1);
    ck_assert_int_eq(remove_id(c, 2), 1);
    ASSERT_STATS(c, 2, 1, 1, 3, 3, 0, 0, 0, 0, 0);
    /* The cache emptied and filled again. */
    ck_assert_int_eq(put_id(c, 4, 100, LONG, T0), 0);
    ck_assert(has_id(c, 4, 100, T0));
    cache_free(c);
    ck_assert_uint_eq(log.calls, 4);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

/* ---- LRU and the byte budget ------------------------------------------- */

START_TEST(test_lru_touched_survives)
{
    size_t cost = cache_entry_cost(KEY_LEN, 100);
    free_log log;
    cache *c = new_cache(4 * cost, &log);
    uint32_t id;

    for (id = 0; id < 4; id++)
        ck_assert_int_eq(put_id(c, id, 100, LONG, T0 + id), 0);
    ck_assert(has_id(c, 0, 100, T0 + 10)); /* 0 becomes most recent */
    ck_assert_int_eq(put_id(c, 4, 100, LONG, T0 + 11), 0);
    ck_assert_uint_eq(log.calls, 1);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert(!has_id(c, 1, 100, T0 + 12)); /* the untouched oldest went */
    ck_assert(has_id(c, 0, 100, T0 + 12));
    ck_assert(has_id(c, 2, 100, T0 + 12));
    ck_assert(has_id(c, 3, 100, T0 + 12));
    ck_assert(has_id(c, 4, 100, T0 + 12));
    ASSERT_STATS(c, 6, 5, 1, 5, 0, 0, 1, 0, 4, 4 * cost);
    cache_free(c);
}
END_TEST

/* Touch the head, the middle and the tail, then let fillers push everything
 * out one by one: the evictions must come exactly in LRU order. Only the
 * key expected to be gone is probed, and a miss changes no order. */
START_TEST(test_lru_exact_order)
{
    static const uint32_t expect_order[5] = {1, 3, 2, 0, 4};
    size_t cost = cache_entry_cost(KEY_LEN, 64);
    cache *c = new_cache(5 * cost, NULL);
    uint32_t id;

    for (id = 0; id < 5; id++)
        ck_assert_int_eq(put_id(c, id, 64, LONG, T0), 0);
    ck_assert(has_id(c, 2, 64, T0)); /* middle: 0 1 3 4 2 */
    ck_assert(has_id(c, 0, 64, T0)); /* head:   1 3 4 2 0 */
    ck_assert(has_id(c, 4, 64, T0)); /* middle: 1 3 2 0 4 */
    ck_assert(has_id(c, 4, 64, T0)); /* tail, no change */
    for (id = 0; id < 5; id++) {
        ck_assert_int_eq(put_id(c, 100 + id, 64, LONG, T0), 0);
        ck_assert_uint_eq(stats_of(c).evicted, id + 1);
        ck_assert_uint_eq(stats_of(c).entries, 5);
        ck_assert_msg(!has_id(c, expect_order[id], 64, T0), "filler %u should evict %u", id,
                      expect_order[id]);
    }
    for (id = 0; id < 5; id++)
        ck_assert(has_id(c, 100 + id, 64, T0));
    cache_free(c);
}
END_TEST

START_TEST(test_evict_expired_head_counts_expired)
{
    size_t cost = cache_entry_cost(KEY_LEN, 64);
    cache *c = new_cache(2 * cost, NULL);

    ck_assert_int_eq(put_id(c, 1, 64, 10, T0), 0);
    ck_assert_int_eq(put_id(c, 2, 64, LONG, T0), 0);
    ck_assert_int_eq(put_id(c, 3, 64, LONG, T0 + 20), 0); /* drops 1: expired */
    ASSERT_STATS(c, 0, 0, 0, 3, 0, 1, 0, 0, 2, 2 * cost);
    ck_assert_int_eq(put_id(c, 4, 64, LONG, T0 + 20), 0); /* drops 2: live */
    ASSERT_STATS(c, 0, 0, 0, 4, 0, 1, 1, 0, 2, 2 * cost);
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
    free_log log;
    cache *c = new_cache(budget, &log);

    fill_value(value, sizeof(value), 3);
    for (key = 0; key < 5; key++)
        ck_assert_int_eq(cache_put(c, &key, 1, value, 20, LONG, T0), 0);
    ck_assert_uint_eq(stats_of(c).bytes, 5 * small);
    /* One byte over the whole budget: refused, nothing evicted. */
    key = 9;
    ck_assert_int_eq(cache_put(c, &key, 1, value, budget - fixed + 1, LONG, T0), -1);
    ASSERT_STATS(c, 0, 0, 0, 5, 0, 0, 0, 1, 5, 5 * small);
    ck_assert_uint_eq(log.calls, 0);
    /* Exactly the budget: accepted, after evicting everything else. */
    ck_assert_int_eq(cache_put(c, &key, 1, value, budget - fixed, LONG, T0), 0);
    ASSERT_STATS(c, 0, 0, 0, 6, 0, 0, 5, 1, 1, budget);
    ck_assert_uint_eq(log.calls, 5);
    ck_assert_uint_eq(log.dirty, 0);
    cache_free(c);

    /* A zero budget refuses everything. */
    c = new_cache(0, NULL);
    ck_assert_int_eq(cache_put(c, &key, 1, value, 1, LONG, T0), -1);
    ck_assert_uint_eq(stats_of(c).rejected, 1);
    cache_free(c);
}
END_TEST

START_TEST(test_entry_cost)
{
    size_t fixed = cache_entry_cost(1, 1) - 2;

    /* A constant per entry on top of key and value, at least a pointer. */
    ck_assert_uint_ge(fixed, sizeof(void *));
    ck_assert_uint_eq(cache_entry_cost(KEY_LEN, 140), fixed + KEY_LEN + 140);
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
    free_log log;
    cache *c = new_cache(1 << 20, &log);
    size_t len = 5;

    memset(key, 0x11, sizeof(key));
    memset(value, 0x22, sizeof(value));
    ck_assert_int_eq(cache_put(c, key, 0, value, 16, LONG, T0), -1);
    ck_assert_int_eq(cache_put(c, key, CACHE_MAX_KEY + 1, value, 16, LONG, T0), -1);
    ck_assert_int_eq(cache_put(c, key, 8, value, 0, LONG, T0), -1);
    ck_assert_int_eq(cache_put(c, key, 8, value, 16, 0, T0), -1);
    ck_assert_int_eq(cache_put(c, NULL, 8, value, 16, LONG, T0), -1);
    ck_assert_int_eq(cache_put(c, key, 8, NULL, 16, LONG, T0), -1);
    ASSERT_STATS(c, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0);
    ck_assert_uint_eq(log.calls, 0); /* refused before anything was allocated */

    /* The limits themselves are fine. */
    ck_assert_int_eq(cache_put(c, key, 1, value, 1, 1, T0), 0);
    ck_assert_int_eq(cache_put(c, key, CACHE_MAX_KEY, value, 16, LONG, T0), 0);

    /* Lookups with a bad key are plain misses. */
    ck_assert_ptr_null(cache_get(c, key, 0, T0, &len));
    ck_assert_ptr_null(cache_get(c, key, CACHE_MAX_KEY + 1, T0, &len));
    ck_assert_ptr_null(cache_get(c, NULL, 8, T0, &len));
    ck_assert_uint_eq(len, 5);
    ck_assert_int_eq(cache_remove(c, key, CACHE_MAX_KEY + 1), 0);
    ASSERT_STATS(c, 3, 0, 3, 2, 0, 0, 0, 6, 2,
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
    free_log log;
    cache *c = new_cache(2 * cache_entry_cost(1, limit + 1), &log);

    ck_assert_ptr_nonnull(value);
    memset(value, 0x7e, limit + 1);
    ck_assert_int_eq(cache_put(c, &key, 1, value, limit + 1, LONG, T0), -1);
    ck_assert_int_eq(cache_put(c, &key, 1, value, limit, LONG, T0), 0);
    ck_assert_ptr_nonnull(cache_get(c, &key, 1, T0, &len));
    ck_assert_uint_eq(len, limit);
    ASSERT_STATS(c, 1, 1, 0, 1, 0, 0, 0, 1, 1, cache_entry_cost(1, limit));
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
    c = new_cache(1 << 20, NULL);
    ck_assert_int_eq(put_id(c, 1, 100, LONG, T0), 0);
    ck_assert_int_eq(put_id(c, 1, 200, LONG, T0), 0);
    ck_assert_int_eq(put_id(c, 2, 100, 5, T0), 0);
    ck_assert(!has_id(c, 2, 100, T0 + 5));
    ck_assert_int_eq(put_id(c, 3, 100, LONG, T0), 0);
    ck_assert_int_eq(remove_id(c, 3), 1);
    ck_assert_int_eq(put_id(c, 4, 100, LONG, T0), 0);
    cache_free(c);
    /* An empty cache, and one that was filled and emptied. */
    cache_free(new_cache(100, NULL));
    c = new_cache(1 << 20, NULL);
    ck_assert_int_eq(put_id(c, 1, 100, LONG, T0), 0);
    ck_assert_int_eq(remove_id(c, 1), 1);
    cache_free(c);
}
END_TEST

/* ---- sweep ------------------------------------------------------------- */

START_TEST(test_sweep_bounded)
{
    cache *c = new_cache(1 << 20, NULL);
    uint32_t id;

    ck_assert_uint_eq(cache_sweep(c, T0, 100), 0); /* empty */
    for (id = 0; id < 10; id++)
        ck_assert_int_eq(put_id(c, id, 50, 100, T0), 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 0), 0); /* budget 0 */
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 3);
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 3);
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 3);
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 1);
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 0);
    ASSERT_STATS(c, 0, 0, 0, 10, 0, 10, 0, 0, 0, 0);
    cache_free(c);
}
END_TEST

/* Live entries first, expired ones after: a sweep that restarted at the head
 * every time would never reach them. */
START_TEST(test_sweep_resumes)
{
    free_log log;
    cache *c = new_cache(1 << 20, &log);
    uint32_t id;

    for (id = 0; id < 10; id++)
        ck_assert_int_eq(put_id(c, id, 50, id >= 5 ? 100 : LONG, T0), 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 0); /* 0 1 2 */
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 1); /* 3 4 5 */
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 3); /* 6 7 8 */
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, 3), 1); /* 9, wrap, 0 1 */
    ck_assert_uint_eq(log.calls, 5);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert_uint_eq(stats_of(c).entries, 5);
    ck_assert_uint_eq(stats_of(c).expired, 5);
    for (id = 0; id < 5; id++)
        ck_assert(has_id(c, id, 50, T0 + 100));
    cache_free(c);
}
END_TEST

/* One call never examines an entry twice, and wraps from the cursor. */
START_TEST(test_sweep_wraps_once)
{
    cache *c = new_cache(1 << 20, NULL);
    uint32_t id;

    for (id = 0; id < 10; id++)
        ck_assert_int_eq(put_id(c, id, 50, 100, T0), 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 50, 4), 0); /* cursor at 4 */
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, SIZE_MAX), 10);
    ck_assert_uint_eq(stats_of(c).entries, 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 100, SIZE_MAX), 0);
    /* The cursor survives the cache emptying and filling again. */
    ck_assert_int_eq(put_id(c, 20, 50, 10, T0 + 200), 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 210, 1), 1);
    cache_free(c);
}
END_TEST

enum { CURSOR_KEPT, CURSOR_REMOVED, CURSOR_EVICTED, CURSOR_REPLACED, CURSOR_HIT, CURSOR_EXPIRED };

/* The sweep stops with its cursor on entry 3; then entry 3 is removed,
 * evicted, replaced, hit or dropped as expired by another call. The next
 * sweep must go on with 4 5 6 (the expired ones): not start over at the
 * head (it would find nothing), and not follow a freed entry (ASan). */
START_TEST(test_sweep_cursor_fixup)
{
    const int mode = _i;
    const size_t cost = cache_entry_cost(KEY_LEN, 50);
    const uint64_t now = T0 + 200;
    free_log log;
    cache *c = new_cache(10 * cost, &log);
    uint32_t id;
    size_t frees;

    for (id = 0; id < 10; id++) {
        uint64_t ttl = (id >= 4 && id <= 6) || (id == 3 && mode == CURSOR_EXPIRED) ? 100 : LONG;

        ck_assert_int_eq(put_id(c, id, 50, ttl, T0), 0);
    }
    ck_assert_uint_eq(cache_sweep(c, now, 3), 0); /* 0 1 2; cursor on 3 */
    frees = log.calls;
    switch (mode) {
    case CURSOR_KEPT:
        break;
    case CURSOR_REMOVED:
        ck_assert_int_eq(remove_id(c, 3), 1);
        break;
    case CURSOR_EVICTED:
        /* Make 3 the LRU head (3 .. 9 0 1 2), then push one entry out. */
        ck_assert(has_id(c, 0, 50, now));
        ck_assert(has_id(c, 1, 50, now));
        ck_assert(has_id(c, 2, 50, now));
        ck_assert_int_eq(put_id(c, 50, 50, LONG, now), 0);
        ck_assert_uint_eq(stats_of(c).evicted, 1);
        ck_assert(!has_id(c, 3, 50, now));
        break;
    case CURSOR_REPLACED:
        ck_assert_int_eq(put_id(c, 3, 50, LONG, now), 0);
        break;
    case CURSOR_HIT:
        ck_assert(has_id(c, 3, 50, now));
        break;
    case CURSOR_EXPIRED:
        ck_assert(!has_id(c, 3, 50, now));
        ck_assert_uint_eq(stats_of(c).expired, 1);
        break;
    default:
        ck_abort();
    }
    if (mode != CURSOR_KEPT && mode != CURSOR_HIT)
        ck_assert_uint_eq(log.calls, frees + 1);
    /* Kept: 3 4 5 -> 2 dropped; otherwise 4 5 6 -> 3. */
    ck_assert_uint_eq(cache_sweep(c, now, 3), mode == CURSOR_KEPT ? 2 : 3);
    ck_assert_uint_eq(cache_sweep(c, now, SIZE_MAX), mode == CURSOR_KEPT ? 1 : 0);
    ck_assert_uint_eq(stats_of(c).entries,
                      mode == CURSOR_REMOVED || mode == CURSOR_EXPIRED ? 6 : 7);
    cache_free(c);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

/* ---- counters and wipes -------------------------------------------------- */

START_TEST(test_stats_counters)
{
    const size_t cost = cache_entry_cost(KEY_LEN, 100);
    cache *c = new_cache(3 * cost, NULL);
    uint8_t key[KEY_LEN];

    ASSERT_STATS(c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    ck_assert_int_eq(put_id(c, 1, 100, 100, T0), 0);
    ck_assert_int_eq(put_id(c, 2, 100, LONG, T0), 0);
    ASSERT_STATS(c, 0, 0, 0, 2, 0, 0, 0, 0, 2, 2 * cost);
    ck_assert(has_id(c, 2, 100, T0));  /* hit */
    ck_assert(!has_id(c, 9, 100, T0)); /* miss */
    ASSERT_STATS(c, 2, 1, 1, 2, 0, 0, 0, 0, 2, 2 * cost);
    ck_assert(!has_id(c, 1, 100, T0 + 100)); /* expired: a miss too */
    ASSERT_STATS(c, 3, 1, 2, 2, 0, 1, 0, 0, 1, cost);
    ck_assert_int_eq(put_id(c, 2, 100, LONG, T0), 0); /* replace: a put */
    ASSERT_STATS(c, 3, 1, 2, 3, 0, 1, 0, 0, 1, cost);
    ck_assert_int_eq(put_id(c, 3, 100, LONG, T0), 0);
    ck_assert_int_eq(put_id(c, 4, 100, LONG, T0), 0);
    ck_assert_int_eq(put_id(c, 5, 100, LONG, T0), 0); /* evicts 2 */
    ASSERT_STATS(c, 3, 1, 2, 6, 0, 1, 1, 0, 3, 3 * cost);
    ck_assert_int_eq(remove_id(c, 3), 1);
    ck_assert_int_eq(remove_id(c, 3), 0); /* not counted */
    ASSERT_STATS(c, 3, 1, 2, 6, 1, 1, 1, 0, 2, 2 * cost);
    ck_assert_int_eq(cache_put(c, key_of(6, key), KEY_LEN, key, KEY_LEN, 0, T0), -1);
    ASSERT_STATS(c, 3, 1, 2, 6, 1, 1, 1, 1, 2, 2 * cost);
    ck_assert_uint_eq(cache_sweep(c, T0 + 2 * LONG, 100), 2);
    ASSERT_STATS(c, 3, 1, 2, 6, 1, 3, 1, 1, 0, 0);
    cache_free(c);
}
END_TEST

enum { WIPE_REMOVE, WIPE_REPLACE, WIPE_EVICT, WIPE_EXPIRE, WIPE_SWEEP, WIPE_FREE, WIPE_PATHS };

/* Every path that frees an entry hands free_fn a block that is all zero,
 * of the size allocated: at least key + value (ASan and valgrind would
 * flag a scan past the block), less than what the budget charges. */
START_TEST(test_wipe_on_free)
{
    const int path = _i;
    const size_t cost = cache_entry_cost(KEY_LEN, 200);
    free_log log;
    cache *c = new_cache(2 * cost, &log);

    ck_assert_int_eq(put_id(c, 1, 200, 100, T0), 0);
    ck_assert_int_eq(put_id(c, 2, 200, LONG, T0), 0);
    ck_assert_uint_eq(log.calls, 0);
    switch (path) {
    case WIPE_REMOVE:
        ck_assert_int_eq(remove_id(c, 1), 1);
        break;
    case WIPE_REPLACE:
        ck_assert_int_eq(put_id(c, 1, 200, LONG, T0), 0);
        break;
    case WIPE_EVICT:
        ck_assert_int_eq(put_id(c, 3, 200, LONG, T0), 0);
        ck_assert_uint_eq(stats_of(c).evicted, 1);
        break;
    case WIPE_EXPIRE:
        ck_assert(!has_id(c, 1, 200, T0 + 100));
        break;
    case WIPE_SWEEP:
        ck_assert_uint_eq(cache_sweep(c, T0 + 100, 10), 1);
        break;
    case WIPE_FREE:
        cache_free(c);
        c = NULL;
        break;
    default:
        ck_abort();
    }
    ck_assert_uint_eq(log.calls, path == WIPE_FREE ? 2 : 1);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert_uint_ge(log.last_size, KEY_LEN + 200);
    ck_assert_uint_lt(log.last_size, cost);
    cache_free(c);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

/* ---- random runs --------------------------------------------------------- */

#define MODEL_KEYS 64
#define MODEL_OPS  10000

typedef struct model_entry {
    int present;
    size_t value_len;
    uint32_t version; /* changes the value bytes on every put */
    uint64_t expiry;
    uint64_t used; /* LRU stamp: larger is more recent */
} model_entry;

typedef struct model {
    model_entry e[MODEL_KEYS];
    size_t max_bytes;
    size_t bytes;
    uint64_t stamp;
    cache_stats st;
} model;

/* Key lengths 1..64, first byte = id, so every id is its own key. */
static size_t model_key(uint32_t id, uint8_t *key)
{
    size_t len = 1 + (id * 7u) % CACHE_MAX_KEY;
    size_t i;

    for (i = 0; i < len; i++)
        key[i] = (uint8_t)(id * 31u + i);
    key[0] = (uint8_t)id;
    return len;
}

static size_t model_cost(uint32_t id)
{
    uint8_t key[CACHE_MAX_KEY];

    return cache_entry_cost(model_key(id, key), 0);
}

static void model_drop(model *m, uint32_t id)
{
    m->bytes -= model_cost(id) + m->e[id].value_len;
    m->e[id].present = 0;
    m->st.entries--;
}

static void model_check(const model *m, const cache *c)
{
    cache_stats st = stats_of(c);

    ck_assert_uint_le(st.bytes, m->max_bytes);
    ck_assert_uint_eq(st.bytes, m->bytes);
    ck_assert_uint_eq(st.entries, m->st.entries);
    ck_assert_uint_eq(st.gets, m->st.gets);
    ck_assert_uint_eq(st.hits, m->st.hits);
    ck_assert_uint_eq(st.misses, m->st.misses);
    ck_assert_uint_eq(st.puts, m->st.puts);
    ck_assert_uint_eq(st.removes, m->st.removes);
    ck_assert_uint_eq(st.expired, m->st.expired);
    ck_assert_uint_eq(st.evicted, m->st.evicted);
    ck_assert_uint_eq(st.rejected, m->st.rejected);
}

/* Random puts (some too large), gets, removes and full sweeps with random
 * TTLs and a clock moving forward; a plain model predicts every answer and
 * every counter, so the byte budget, LRU eviction, expiry and replacement
 * are all checked after each of the 10k operations. */
START_TEST(test_random_model)
{
    static model m; /* keep it off the stack */
    uint64_t rng = 42;
    uint64_t now = T0;
    uint8_t key[CACHE_MAX_KEY];
    uint8_t value[3000], expect[3000];
    uint8_t *big;
    free_log log;
    cache *c;
    int op;

    memset(&m, 0, sizeof(m));
    m.max_bytes = 40000;
    big = calloc(1, m.max_bytes);
    ck_assert_ptr_nonnull(big);
    c = new_cache(m.max_bytes, &log);
    for (op = 0; op < MODEL_OPS; op++) {
        uint64_t r = rnd_next(&rng);
        uint32_t id = (uint32_t)(rnd_next(&rng) % MODEL_KEYS);
        size_t key_len = model_key(id, key);
        model_entry *e = &m.e[id];

        now += rnd_next(&rng) % 40;
        if (r % 100 < 55 && r % 50 == 0) {
            /* Larger than the whole budget: refused, nothing changes. */
            ck_assert_int_eq(cache_put(c, key, key_len, big, m.max_bytes, LONG, now), -1);
            m.st.rejected++;
        } else if (r % 100 < 55) {
            size_t len = 1 + rnd_next(&rng) % 3000;
            uint64_t ttl = 1 + rnd_next(&rng) % 5000;
            size_t cost = cache_entry_cost(key_len, len);

            fill_value(value, len, id * 1000u + e->version + 1);
            ck_assert_int_eq(cache_put(c, key, key_len, value, len, ttl, now), 0);
            if (e->present)
                model_drop(&m, id);
            /* Evict least recently used until the new entry fits. */
            while (m.bytes + cost > m.max_bytes) {
                uint32_t victim = 0, i;
                int found = 0;

                for (i = 0; i < MODEL_KEYS; i++)
                    if (m.e[i].present && (!found || m.e[i].used < m.e[victim].used)) {
                        victim = i;
                        found = 1;
                    }
                ck_assert(found);
                if (now >= m.e[victim].expiry)
                    m.st.expired++;
                else
                    m.st.evicted++;
                model_drop(&m, victim);
            }
            e->version++;
            e->present = 1;
            e->value_len = len;
            e->expiry = now + ttl;
            e->used = ++m.stamp;
            m.bytes += cost;
            m.st.entries++;
            m.st.puts++;
        } else if (r % 100 < 85) {
            size_t got_len = 0;
            const uint8_t *got = cache_get(c, key, key_len, now, &got_len);

            m.st.gets++;
            if (e->present && now >= e->expiry) {
                model_drop(&m, id);
                m.st.expired++;
            }
            if (e->present) {
                m.st.hits++;
                e->used = ++m.stamp;
                ck_assert_ptr_nonnull(got);
                ck_assert_uint_eq(got_len, e->value_len);
                fill_value(expect, e->value_len, id * 1000u + e->version);
                ck_assert_mem_eq(got, expect, e->value_len);
            } else {
                m.st.misses++;
                ck_assert_ptr_null(got);
            }
        } else if (r % 100 < 95) {
            ck_assert_int_eq(cache_remove(c, key, key_len), e->present);
            if (e->present) {
                model_drop(&m, id);
                m.st.removes++;
            }
        } else {
            size_t dropped = 0;
            uint32_t i;

            for (i = 0; i < MODEL_KEYS; i++)
                if (m.e[i].present && now >= m.e[i].expiry) {
                    model_drop(&m, i);
                    dropped++;
                }
            m.st.expired += dropped;
            ck_assert_uint_eq(cache_sweep(c, now, SIZE_MAX), dropped);
        }
        model_check(&m, c);
    }
    /* Something of everything happened. */
    ck_assert_uint_gt(m.st.evicted, 1000);
    ck_assert_uint_gt(m.st.expired, 300);
    ck_assert_uint_gt(m.st.rejected, 100);
    ck_assert_uint_gt(m.st.hits, 300);
    ck_assert_uint_gt(m.st.removes, 100);
    cache_free(c);
    free(big);
    /* Each stored entry was freed exactly once, wiped. */
    ck_assert_uint_eq(log.calls, m.st.puts);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

/* Small sweeps between random operations keep the cursor on entries that
 * other calls remove, evict, replace and move; ASan/valgrind watch it. */
START_TEST(test_random_sweeps)
{
    const size_t max_bytes = 20000;
    uint64_t rng = 7;
    uint64_t now = T0;
    uint8_t key[CACHE_MAX_KEY];
    uint8_t value[1000];
    free_log log;
    cache *c = new_cache(max_bytes, &log);
    size_t dropped = 0;
    uint32_t id;
    int op;

    memset(value, 0x3c, sizeof(value));
    for (op = 0; op < MODEL_OPS; op++) {
        uint64_t r = rnd_next(&rng);
        size_t key_len;

        id = (uint32_t)(rnd_next(&rng) % 128);
        key_len = model_key(id, key);
        now += rnd_next(&rng) % 20;
        if (r % 4 == 0)
            cache_put(c, key, key_len, value, 1 + rnd_next(&rng) % sizeof(value),
                      1 + rnd_next(&rng) % 2000, now);
        else if (r % 4 == 1)
            cache_get(c, key, key_len, now, NULL);
        else if (r % 4 == 2)
            cache_remove(c, key, key_len);
        else
            dropped += cache_sweep(c, now, rnd_next(&rng) % 4);
        ck_assert_uint_le(stats_of(c).bytes, max_bytes);
    }
    ck_assert_uint_gt(dropped, 10);
    /* Far in the future, one full sweep empties the cache. */
    cache_sweep(c, now + 10000, SIZE_MAX);
    ck_assert_uint_eq(stats_of(c).entries, 0);
    ck_assert_uint_eq(stats_of(c).bytes, 0);
    ck_assert_uint_eq(log.calls, stats_of(c).puts);
    ck_assert_uint_eq(log.dirty, 0);
    cache_free(c);
}
END_TEST

/* ---- sizes: one entry, many entries ------------------------------------- */

START_TEST(test_one_entry)
{
    const size_t cost = cache_entry_cost(KEY_LEN, 100);
    free_log log;
    cache *c = new_cache(cost, &log);
    int i;

    ck_assert_int_eq(put_id(c, 1, 100, LONG, T0), 0);
    for (i = 0; i < 3; i++) /* a hit on the only entry: head and tail at once */
        ck_assert(has_id(c, 1, 100, T0));
    ck_assert_int_eq(put_id(c, 2, 100, LONG, T0), 0); /* evicts 1 */
    ck_assert(!has_id(c, 1, 100, T0));
    ck_assert(has_id(c, 2, 100, T0));
    ck_assert_int_eq(put_id(c, 2, 100, 10, T0), 0); /* replaces itself */
    ck_assert_uint_eq(cache_sweep(c, T0 + 9, 1), 0);
    ck_assert_uint_eq(cache_sweep(c, T0 + 10, 1), 1);
    ck_assert_uint_eq(cache_sweep(c, T0 + 10, 1), 0);
    ck_assert_int_eq(put_id(c, 3, 100, LONG, T0), 0);
    ck_assert_int_eq(remove_id(c, 3), 1);
    ASSERT_STATS(c, 5, 4, 1, 4, 1, 1, 1, 0, 0, 0);
    cache_free(c);
    ck_assert_uint_eq(log.calls, 4);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

static uint32_t many_count(void)
{
    const char *env = getenv("CHECK_CACHE_MANY");
    long n = env != NULL ? strtol(env, NULL, 10) : 100000;

    /* A multiple of 4, so the halves and quarters below are exact. */
    return n >= 8 && n <= 10000000 ? (uint32_t)n & ~3u : 100000;
}

/* 100k entries: the index doubles many times; everything stays
 * reachable, then LRU eviction and the sweep work at that size. */
START_TEST(test_many_entries)
{
    const uint32_t n = many_count();
    const size_t cost = cache_entry_cost(KEY_LEN, 64);
    free_log log;
    cache *c = new_cache((size_t)n * cost, &log);
    uint32_t id, calls = 0;
    size_t dropped = 0;

    for (id = 0; id < n; id++)
        FAST_EQ(put_id(c, id, 64, id % 2 == 0 ? 1000 : LONG, T0), 0);
    ASSERT_STATS(c, 0, 0, 0, n, 0, 0, 0, 0, n, (size_t)n * cost);
    for (id = 0; id < n; id++)
        FAST_ASSERT(has_id(c, id, 64, T0 + 1));
    for (id = 1; id < n; id += 4)
        FAST_EQ(remove_id(c, id), 1);
    /* Bounded sweeps: 1000 entries a call, until a full pass is done. */
    while (calls++ <= n / 1000 + 1)
        dropped += cache_sweep(c, T0 + 1000, 1000);
    FAST_EQ(dropped, n / 2);
    FAST_EQ(stats_of(c).entries, n - n / 2 - n / 4);
    for (id = 0; id < n; id++)
        FAST_EQ(has_id(c, id, 64, T0 + 1000), id % 4 == 3);
    /* Fill past the budget by n/4: the survivors, now the least recently
     * used, are exactly what goes. */
    for (id = n; id < 2 * n; id++)
        FAST_EQ(put_id(c, id, 64, LONG, T0 + 1000), 0);
    FAST_EQ(stats_of(c).entries, n);
    FAST_EQ(stats_of(c).evicted, n / 4);
    FAST_ASSERT(!has_id(c, 3, 64, T0 + 1000));
    FAST_ASSERT(!has_id(c, n - 1, 64, T0 + 1000));
    FAST_ASSERT(has_id(c, n, 64, T0 + 1000));
    FAST_ASSERT(has_id(c, 2 * n - 1, 64, T0 + 1000));
    cache_free(c);
    FAST_EQ(log.calls, 2 * (size_t)n);
    FAST_EQ(log.dirty, 0);
}
END_TEST

/* ---- the index ------------------------------------------------------------ */

static void assert_invariants(const cache *c)
{
    const char *error = cache_invariant_error(c);

    ck_assert_msg(error == NULL, "cache invariant broken: %s", error != NULL ? error : "");
}

/* A fixed SipHash key (the reference vectors' one), so the slots every key
 * lands in, and hence the collisions, are the same on every run. */
static void fix_hash_key(cache *c)
{
    c->sip_k0 = UINT64_C(0x0706050403020100);
    c->sip_k1 = UINT64_C(0x0f0e0d0c0b0a0908);
}

/* Which table holds id: 1 live, 2 old, 0 neither. */
static int table_of(const cache *c, uint32_t id)
{
    uint8_t key[KEY_LEN];
    uint64_t hash = cache_hash(c, key_of(id, key), KEY_LEN);

    if (cache_index_find(c, &c->live, hash, key, KEY_LEN) != CACHE_NOWHERE)
        return 1;
    if (cache_index_find(c, &c->old, hash, key, KEY_LEN) != CACHE_NOWHERE)
        return 2;
    return 0;
}

static int migrating(const cache *c)
{
    return c->old.slots != NULL;
}

/* Forced hashes for the collision tests, from the id key_of() writes into
 * the key's first 4 bytes. */
static uint32_t hook_id(const uint8_t *key, size_t key_len)
{
    FAST_EQ(key_len, KEY_LEN);
    return (uint32_t)key[0] << 24 | (uint32_t)key[1] << 16 | (uint32_t)key[2] << 8 | key[3];
}

static uint64_t hook_mix(uint64_t x)
{
    return rnd_next(&x);
}

START_TEST(test_siphash_vectors)
{
    /* SipHash-2-4 with key 00..0f over the messages 00, 00 01, ... (the
     * reference implementation's vectors), for lengths that cover an empty
     * message, a partial last word, whole words, and a v2 cache key. */
    static const struct {
        size_t len;
        uint64_t hash;
    } vectors[] = {
        {0, UINT64_C(0x726fdb47dd0e0e31)},  {1, UINT64_C(0x74f839c593dc67fd)},
        {7, UINT64_C(0xab0200f58b01d137)},  {8, UINT64_C(0x93f5f5799a932462)},
        {15, UINT64_C(0xa129ca6149be45e5)}, {32, UINT64_C(0x7127512f72f27cce)},
        {33, UINT64_C(0xa7f32346f95978e3)}, {63, UINT64_C(0x958a324ceb064572)},
    };
    uint8_t message[64];
    size_t i;

    for (i = 0; i < sizeof(message); i++)
        message[i] = (uint8_t)i;
    for (i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        ck_assert_msg(cache_siphash(UINT64_C(0x0706050403020100), UINT64_C(0x0f0e0d0c0b0a0908),
                                    message, vectors[i].len) == vectors[i].hash,
                      "SipHash of %zu bytes", vectors[i].len);
}
END_TEST

/* Every key present so far is found with its value, a few absent ones are
 * not, and the invariants hold. */
static void verify_ids(cache *c, uint32_t first, uint32_t end, size_t value_len)
{
    uint32_t id;

    assert_invariants(c);
    for (id = first; id < end; id++)
        if (!has_id(c, id, value_len, T0))
            ck_abort_msg("id %u lost", id);
    for (id = end; id < end + 50; id++)
        FAST_ASSERT(!has_id(c, id, value_len, T0));
}

/* A dozen doublings from 16 slots: at the start, the middle and the end of
 * each incremental migration, every key is looked up (some then sit in the
 * old table, some in the live one). */
START_TEST(test_index_growth)
{
    const uint32_t n = 40000;
    free_log log;
    cache *c = new_cache((size_t)1 << 30, &log);
    unsigned growths = 0, split_seen = 0;
    size_t half = 0;
    cache_stats st;
    uint32_t id;

    for (id = 0; id < n; id++) {
        int was_migrating = migrating(c);
        unsigned bits = c->live.bits;

        FAST_EQ(put_id(c, id, 24, LONG, T0), 0);
        if (c->live.bits != bits && bits != 0) {
            uint32_t in_old = 0, in_live = 0, k;

            growths++;
            FAST_EQ(c->live.bits, bits + 1);
            for (k = 0; k <= id; k++) {
                int where = table_of(c, k);

                FAST_ASSERT(where != 0);
                in_old += where == 2;
                in_live += where == 1;
            }
            /* Larger tables take several puts to migrate. */
            if (bits >= 8 && in_old > 0 && in_live > 0)
                split_seen++;
            half = c->old.count / 2;
            verify_ids(c, 0, id + 1, 24);
        } else if (migrating(c) && half != 0 && c->old.count <= half) {
            half = 0;
            verify_ids(c, 0, id + 1, 24);
        } else if (was_migrating && !migrating(c)) {
            verify_ids(c, 0, id + 1, 24);
        }
    }
    ck_assert_uint_ge(growths, 12); /* 16 slots to 65536 */
    ck_assert_uint_ge(split_seen, 5);
    verify_ids(c, 0, n, 24);
    st = stats_of(c);
    FAST_EQ(st.puts, n);
    FAST_EQ(st.entries, n);
    FAST_EQ(st.bytes, (size_t)n * cache_entry_cost(KEY_LEN, 24));
    FAST_EQ(st.removes + st.expired + st.evicted + st.rejected, 0);
    cache_free(c);
    FAST_EQ(log.calls, n);
    FAST_EQ(log.dirty, 0);
}
END_TEST

/* Removals, expiries (through get and the sweep), evictions and
 * replacements of entries that still sit in the old table while a migration
 * is half done. */
START_TEST(test_changes_while_migrating)
{
    const size_t cost = cache_entry_cost(KEY_LEN, 40);
    const uint32_t n = 1024 * 4 / 5; /* the put that grows a 1024-slot table */
    free_log log;
    cache *c = new_cache((size_t)(n + 1) * cost, &log);
    uint32_t id, next_id = n + 1, in_old_hits = 0;
    size_t dropped = 0, puts;
    int round;

    fix_hash_key(c);
    /* Every 5th id lives 100 ms, the rest long. */
    for (id = 0; id <= n; id++)
        FAST_EQ(put_id(c, id, 40, id % 5 == 0 ? 100 : LONG, T0), 0);
    FAST_ASSERT(migrating(c));
    FAST_EQ(c->old.bits, 10);
    ck_assert_uint_gt(c->old.count, n / 2);
    assert_invariants(c);
    for (round = 0; migrating(c) && round < 200; round++) {
        uint32_t victim = (uint32_t)(round * 7 + 1) % n;

        in_old_hits += table_of(c, victim) == 2;
        switch (round % 5) {
        case 0: /* remove */
            remove_id(c, victim);
            FAST_EQ(table_of(c, victim), 0);
            break;
        case 1: /* expire through get (ids that are multiples of 5) */
            victim = victim / 5 * 5;
            in_old_hits += table_of(c, victim) == 2;
            FAST_ASSERT(!has_id(c, victim, 40, T0 + 100));
            FAST_EQ(table_of(c, victim), 0);
            break;
        case 2: /* expire through a small sweep */
            dropped += cache_sweep(c, T0 + 100, 3);
            break;
        case 3: /* replace (not the short-lived ids case 1 expects to expire) */
            if (victim % 5 != 0 && table_of(c, victim) != 0) {
                FAST_EQ(put_id(c, victim, 40, LONG, T0), 0);
                FAST_EQ(table_of(c, victim), 1);
                FAST_ASSERT(has_id(c, victim, 40, T0 + 100));
            }
            break;
        default: { /* new entries, until the budget evicts a live LRU head */
            uint64_t evicted = stats_of(c).evicted;

            while (stats_of(c).evicted == evicted) {
                uint32_t head = hook_id(cache_entry_key(c->lru_head), KEY_LEN);

                in_old_hits += table_of(c, head) == 2; /* the head goes next */
                FAST_EQ(put_id(c, next_id, 40, LONG, T0 + 100), 0);
                FAST_ASSERT(has_id(c, next_id, 40, T0 + 100));
                next_id++;
            }
            break;
        }
        }
        assert_invariants(c);
    }
    ck_assert_uint_gt(round, 20); /* the migration spanned many calls */
    ck_assert_uint_gt(in_old_hits, 5);
    ck_assert_uint_gt(dropped, 0);
    ck_assert_uint_gt(stats_of(c).evicted, 0);
    ck_assert_uint_gt(stats_of(c).removes, 0);
    /* Whatever is listed is found, and only that. */
    cache_sweep(c, T0 + 100, SIZE_MAX);
    FAST_ASSERT(!migrating(c));
    assert_invariants(c);
    for (id = 0; id < next_id; id++)
        if (table_of(c, id) != 0)
            FAST_ASSERT(has_id(c, id, 40, T0 + 100));
    puts = stats_of(c).puts;
    cache_free(c);
    FAST_EQ(log.calls, puts);
    FAST_EQ(log.dirty, 0);
}
END_TEST

/* Random puts, removes and gets over a key space that keeps growing, so the
 * index grows (and migrates) while entries come and go; a plain model says
 * which keys must be there. Backward-shift deletion must never lose a key,
 * nor leave one findable after its removal. */
#define CHURN_OPS  300000
#define CHURN_KEYS (500 + CHURN_OPS / 8)

START_TEST(test_churn)
{
    static uint8_t present[CHURN_KEYS];
    static uint16_t version[CHURN_KEYS];
    static uint8_t length[CHURN_KEYS];
    uint64_t rng = 99;
    uint8_t key[KEY_LEN], value[64], expect[64];
    uint32_t id, limit = 500;
    unsigned growths = 0, old_removes = 0, full_checks = 0;
    size_t live_count = 0, puts;
    free_log log;
    cache *c = new_cache((size_t)1 << 30, &log);
    int op;

    memset(present, 0, sizeof(present));
    memset(version, 0, sizeof(version));
    memset(length, 0, sizeof(length));
    for (op = 0; op < CHURN_OPS; op++) {
        uint64_t r = rnd_next(&rng) % 100;
        int was_migrating = migrating(c);

        limit = 500 + (uint32_t)op / 8;
        id = (uint32_t)(rnd_next(&rng) % limit);
        key_of(id, key);
        if (r < 45) {
            size_t len = 1 + rnd_next(&rng) % sizeof(value);

            version[id]++;
            fill_value(value, len, id * 1000u + version[id]);
            FAST_EQ(cache_put(c, key, KEY_LEN, value, len, LONG, T0), 0);
            live_count += !present[id];
            present[id] = 1;
            length[id] = (uint8_t)len;
        } else if (r < 80) {
            old_removes += present[id] && table_of(c, id) == 2;
            FAST_EQ(cache_remove(c, key, KEY_LEN), present[id]);
            live_count -= present[id];
            present[id] = 0;
        } else {
            size_t got_len = 0;
            const uint8_t *got = cache_get(c, key, KEY_LEN, T0, &got_len);

            FAST_EQ(got != NULL, present[id]);
            if (got != NULL) {
                FAST_EQ(got_len, length[id]);
                fill_value(expect, got_len, id * 1000u + version[id]);
                FAST_ASSERT(memcmp(got, expect, got_len) == 0);
            }
        }
        growths += !was_migrating && migrating(c);
        FAST_EQ(stats_of(c).entries, live_count);
        /* Look everything up when a migration starts or ends, and now and then. */
        if (was_migrating != migrating(c) || op % 50000 == 0) {
            uint32_t k;

            assert_invariants(c);
            for (k = 0; k < limit; k++)
                if ((table_of(c, k) != 0) != present[k])
                    ck_abort_msg("key %u wrong after op %d", k, op);
            full_checks++;
        }
    }
    ck_assert_uint_ge(growths, 7);
    ck_assert_uint_gt(old_removes, 100);
    ck_assert_uint_gt(full_checks, 14);
    /* Empty it completely, then use it again. */
    for (id = 0; id < CHURN_KEYS; id++)
        FAST_EQ(remove_id(c, id), present[id]);
    FAST_EQ(stats_of(c).entries, 0);
    FAST_EQ(c->live.count + c->old.count, 0);
    assert_invariants(c);
    FAST_EQ(put_id(c, 1, 10, LONG, T0), 0);
    FAST_ASSERT(has_id(c, 1, 10, T0));
    puts = stats_of(c).puts;
    cache_free(c);
    FAST_EQ(log.calls, puts);
    FAST_EQ(log.dirty, 0);
}
END_TEST

/* A fixed population, half of it removed and put back 40 times: the table
 * no longer grows, so this is backward-shift deletion alone. */
START_TEST(test_remove_put_cycles)
{
    const uint32_t n = 5000;
    uint64_t rng = 5;
    cache *c = new_cache((size_t)1 << 30, NULL);
    unsigned bits;
    uint32_t id;
    int cycle;

    for (id = 0; id < n; id++)
        FAST_EQ(put_id(c, id, 30, LONG, T0), 0);
    cache_sweep(c, T0, SIZE_MAX); /* finishes any migration */
    bits = c->live.bits;
    for (cycle = 0; cycle < 40; cycle++) {
        static uint8_t gone[5000];

        memset(gone, 0, sizeof(gone));
        for (id = 0; id < n / 2; id++) {
            uint32_t victim = (uint32_t)(rnd_next(&rng) % n);

            FAST_EQ(remove_id(c, victim), !gone[victim]);
            gone[victim] = 1;
        }
        for (id = 0; id < n; id++)
            FAST_EQ(has_id(c, id, 30, T0), !gone[id]);
        for (id = 0; id < n; id++)
            if (gone[id])
                FAST_EQ(put_id(c, id, 30, LONG, T0), 0);
        if (cycle % 8 == 0)
            assert_invariants(c);
    }
    verify_ids(c, 0, n, 30);
    FAST_EQ(c->live.bits, bits);
    FAST_ASSERT(!migrating(c));
    FAST_EQ(c->live.count, n);
    cache_free(c);
}
END_TEST

/* One hash for every key: one home, one tag; the cluster outgrows the
 * 8-bit distance field. */
static uint64_t hash_all_equal(const uint8_t *key, size_t key_len)
{
    (void)hook_id(key, key_len);
    return UINT64_C(0x9e3779b97f4a7c15);
}

/* Homes spread out, one tag: every tag compares equal, only keys differ. */
static uint64_t hash_one_tag(const uint8_t *key, size_t key_len)
{
    return (hook_mix(hook_id(key, key_len)) & ~CACHE_TAG_MASK) | 0x2a5u;
}

/* One home (in every table up to 2^24 slots), tags spread out. */
static uint64_t hash_one_home(const uint8_t *key, size_t key_len)
{
    return UINT64_C(0xabcdef) << 40 | (hook_mix(hook_id(key, key_len)) & ((UINT64_C(1) << 40) - 1));
}

/* Five homes a fifth of the table apart: five long clusters that merge. */
static uint64_t hash_five_homes(const uint8_t *key, size_t key_len)
{
    uint32_t id = hook_id(key, key_len);

    return (uint64_t)(id % 5u) * UINT64_C(0x333333) << 40 |
           (hook_mix(id) & ((UINT64_C(1) << 40) - 1));
}

typedef uint64_t (*test_hash_fn)(const uint8_t *key, size_t key_len);

static const test_hash_fn collision_hashes[] = {hash_all_equal, hash_one_tag, hash_one_home,
                                                hash_five_homes};

/* Under each forced hash: 600 keys put, found and missed correctly, half
 * removed in random order, put back with half of them on a short TTL, then
 * swept; the invariants checked along the way. */
START_TEST(test_forced_collisions)
{
    const uint32_t n = 600;
    uint64_t rng = 11;
    free_log log;
    cache *c = new_cache((size_t)1 << 30, &log);
    static uint8_t gone[600];
    size_t saturated = 0, puts, pos;
    uint32_t id, k;

    c->test_hash = collision_hashes[_i];
    memset(gone, 0, sizeof(gone));
    for (id = 0; id < n; id++) {
        FAST_EQ(put_id(c, id, 20 + id % 50, LONG, T0), 0);
        if (id % 100 == 99)
            assert_invariants(c);
    }
    for (id = 0; id < n; id++)
        FAST_ASSERT(has_id(c, id, 20 + id % 50, T0));
    for (id = n; id < n + 50; id++)
        FAST_ASSERT(!has_id(c, id, 20, T0));
    for (pos = 0; pos < ((size_t)1 << c->live.bits); pos++)
        saturated +=
            c->live.slots[pos] != 0 && cache_slot_raw_dist(c->live.slots[pos]) == CACHE_DIST_SAT;
    if (collision_hashes[_i] == hash_all_equal || collision_hashes[_i] == hash_one_home)
        ck_assert_uint_gt(saturated, n / 4);

    for (k = 0; k < n / 2; k++) {
        id = (uint32_t)(rnd_next(&rng) % n);
        FAST_EQ(remove_id(c, id), !gone[id]);
        gone[id] = 1;
        if (k % 50 == 0)
            assert_invariants(c);
    }
    for (id = 0; id < n; id++)
        FAST_EQ(has_id(c, id, 20 + id % 50, T0), !gone[id]);
    /* Back in, odd ones for 100 ms, with other lengths. */
    for (id = 0; id < n; id++)
        if (gone[id])
            FAST_EQ(put_id(c, id, 10 + id % 30, id % 2 ? 100 : LONG, T0), 0);
    assert_invariants(c);
    for (id = 0; id < n; id++)
        FAST_ASSERT(has_id(c, id, gone[id] ? 10 + id % 30 : 20 + id % 50, T0));
    cache_sweep(c, T0 + 100, SIZE_MAX); /* drops entries found through their key */
    assert_invariants(c);
    for (id = 0; id < n; id++)
        FAST_EQ(has_id(c, id, gone[id] ? 10 + id % 30 : 20 + id % 50, T0 + 100),
                !gone[id] || id % 2 == 0);
    puts = stats_of(c).puts;
    cache_free(c);
    FAST_EQ(log.calls, puts);
    FAST_EQ(log.dirty, 0);
}
END_TEST

/* With the real hash, 100k keys: some neighbours share home and tag (only
 * the key comparison tells them apart), and every lookup still finds its
 * own entry, and 100k absent keys find nothing. */
START_TEST(test_natural_tag_collisions)
{
    const uint32_t n = 100000;
    cache *c = new_cache((size_t)1 << 30, NULL);
    size_t mask, pos, twins = 0;
    uint32_t id;

    fix_hash_key(c);
    for (id = 0; id < n; id++)
        FAST_EQ(put_id(c, id, 8, LONG, T0), 0);
    cache_sweep(c, T0, SIZE_MAX); /* finishes any migration */
    FAST_ASSERT(!migrating(c));
    mask = cache_index_mask(&c->live);
    for (pos = 0; pos <= mask; pos++) {
        uint64_t s = c->live.slots[pos];
        uint64_t next = c->live.slots[(pos + 1) & mask];

        /* Same home: the next slot is one further from the same home. */
        if (s != 0 && next != 0 && cache_slot_raw_dist(next) == cache_slot_raw_dist(s) + 1 &&
            (s & CACHE_TAG_MASK) == (next & CACHE_TAG_MASK))
            twins++;
    }
    ck_assert_uint_gt(twins, 0);
    for (id = 0; id < n; id++)
        FAST_ASSERT(has_id(c, id, 8, T0));
    for (id = n; id < 2 * n; id++)
        FAST_ASSERT(!has_id(c, id, 8, T0));
    assert_invariants(c);
    cache_free(c);
}
END_TEST

/* Bytes an entry costs beyond key and value, by the allocator's own account
 * (malloc_usable_size + glibc's 8-byte chunk header) plus the index, at 100k
 * entries of realistic size; the budget's charge must be close to it. (Under
 * ASan or valgrind malloc_usable_size reports the size asked for, so the
 * figure comes out lower there.) The micro-benchmark measures 1M entries. */
START_TEST(test_overhead_per_entry)
{
    const uint32_t n = 100000;
    const size_t charged = cache_entry_cost(KEY_LEN, 0) - KEY_LEN;
    cache *c = new_cache((size_t)1 << 34, NULL);
    size_t heap = 0, payload = 0, index, per_entry;
    const cache_entry *e;
    uint32_t id;

    for (id = 0; id < n; id++)
        FAST_EQ(put_id(c, id, 140 + id % 161, LONG, T0), 0);
    for (e = c->lru_head; e != NULL; e = e->lru_next) {
        heap += malloc_usable_size((void *)(uintptr_t)e) + sizeof(size_t);
        payload += e->key_len + cache_entry_value_len(e);
    }
    index = sizeof(uint64_t) << c->live.bits;
    if (migrating(c))
        index += sizeof(uint64_t) << c->old.bits;
    per_entry = (heap - payload + index) / n;
    ck_assert_msg(per_entry <= 64, "%zu bytes an entry beyond key and value", per_entry);
    ck_assert_msg(charged + 8 >= per_entry, "charged %zu, used %zu", charged, per_entry);
    cache_free(c);
}
END_TEST

static Suite *cache_suite(void)
{
    Suite *s = suite_create("cache");
    TCase *basic = tcase_create("basic");
    TCase *lru = tcase_create("lru_budget");
    TCase *args = tcase_create("args");
    TCase *sweep = tcase_create("sweep");
    TCase *wipe = tcase_create("stats_wipe");
    TCase *random = tcase_create("random");
    TCase *sizes = tcase_create("sizes");
    TCase *index = tcase_create("index");

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

    tcase_add_test(sweep, test_sweep_bounded);
    tcase_add_test(sweep, test_sweep_resumes);
    tcase_add_test(sweep, test_sweep_wraps_once);
    tcase_add_loop_test(sweep, test_sweep_cursor_fixup, CURSOR_KEPT, CURSOR_EXPIRED + 1);
    suite_add_tcase(s, sweep);

    tcase_add_test(wipe, test_stats_counters);
    tcase_add_loop_test(wipe, test_wipe_on_free, 0, WIPE_PATHS);
    suite_add_tcase(s, wipe);

    tcase_add_test(random, test_random_model);
    tcase_add_test(random, test_random_sweeps);
    tcase_set_timeout(random, 120);
    suite_add_tcase(s, random);

    tcase_add_test(sizes, test_one_entry);
    tcase_add_test(sizes, test_many_entries);
    tcase_set_timeout(sizes, 300);
    suite_add_tcase(s, sizes);

    tcase_add_test(index, test_siphash_vectors);
    tcase_add_test(index, test_index_growth);
    tcase_add_test(index, test_changes_while_migrating);
    tcase_add_test(index, test_churn);
    tcase_add_test(index, test_remove_put_cycles);
    tcase_add_loop_test(index, test_forced_collisions, 0,
                        (int)(sizeof(collision_hashes) / sizeof(collision_hashes[0])));
    tcase_add_test(index, test_natural_tag_collisions);
    tcase_add_test(index, test_overhead_per_entry);
    tcase_set_timeout(index, 600);
    suite_add_tcase(s, index);
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
