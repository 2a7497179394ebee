/* check_cache_random.c — randomized and size tests of the session store
 * (sessiond/cache.c).
 *
 * What is covered: a model-checked run of 10k random operations (byte
 * budget never exceeded, every answer and every counter as predicted); a
 * random run with small sweeps in between (cursor safety, under
 * ASan/valgrind); one entry, and 100k entries (CHECK_CACHE_MANY overrides
 * the count, e.g. for a -DCACHE_DEBUG build, which is O(n) per op). Every
 * run uses a fixed-seed PRNG, so a failure repeats.
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
    cache_stats st = cf_stats_of(c);

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
    uint64_t now = CF_T0;
    uint8_t key[CACHE_MAX_KEY];
    uint8_t value[3000], expect[3000];
    uint8_t *big;
    cf_free_log log;
    cache *c;
    int op;

    memset(&m, 0, sizeof(m));
    m.max_bytes = 40000;
    big = calloc(1, m.max_bytes);
    ck_assert_ptr_nonnull(big);
    c = cf_new_cache(m.max_bytes, &log);
    for (op = 0; op < MODEL_OPS; op++) {
        uint64_t r = cf_rnd_next(&rng);
        uint32_t id = (uint32_t)(cf_rnd_next(&rng) % MODEL_KEYS);
        size_t key_len = model_key(id, key);
        model_entry *e = &m.e[id];

        now += cf_rnd_next(&rng) % 40;
        if (r % 100 < 55 && r % 50 == 0) {
            /* Larger than the whole budget: refused, nothing changes. */
            ck_assert_int_eq(cache_put(c, key, key_len, big, m.max_bytes, CF_LONG, now), -1);
            m.st.rejected++;
        } else if (r % 100 < 55) {
            size_t len = 1 + cf_rnd_next(&rng) % 3000;
            uint64_t ttl = 1 + cf_rnd_next(&rng) % 5000;
            size_t cost = cache_entry_cost(key_len, len);

            cf_fill_value(value, len, id * 1000u + e->version + 1);
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
                cf_fill_value(expect, e->value_len, id * 1000u + e->version);
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
    uint64_t now = CF_T0;
    uint8_t key[CACHE_MAX_KEY];
    uint8_t value[1000];
    cf_free_log log;
    cache *c = cf_new_cache(max_bytes, &log);
    size_t dropped = 0;
    uint32_t id;
    int op;

    memset(value, 0x3c, sizeof(value));
    for (op = 0; op < MODEL_OPS; op++) {
        uint64_t r = cf_rnd_next(&rng);
        size_t key_len;

        id = (uint32_t)(cf_rnd_next(&rng) % 128);
        key_len = model_key(id, key);
        now += cf_rnd_next(&rng) % 20;
        if (r % 4 == 0)
            cache_put(c, key, key_len, value, 1 + cf_rnd_next(&rng) % sizeof(value),
                      1 + cf_rnd_next(&rng) % 2000, now);
        else if (r % 4 == 1)
            cache_get(c, key, key_len, now, NULL);
        else if (r % 4 == 2)
            cache_remove(c, key, key_len);
        else
            dropped += cache_sweep(c, now, cf_rnd_next(&rng) % 4);
        ck_assert_uint_le(cf_stats_of(c).bytes, max_bytes);
    }
    ck_assert_uint_gt(dropped, 10);
    /* Far in the future, one full sweep empties the cache. */
    cache_sweep(c, now + 10000, SIZE_MAX);
    ck_assert_uint_eq(cf_stats_of(c).entries, 0);
    ck_assert_uint_eq(cf_stats_of(c).bytes, 0);
    ck_assert_uint_eq(log.calls, cf_stats_of(c).puts);
    ck_assert_uint_eq(log.dirty, 0);
    cache_free(c);
}
END_TEST

/* ---- sizes: one entry, many entries ------------------------------------- */

START_TEST(test_one_entry)
{
    const size_t cost = cache_entry_cost(CF_KEY_LEN, 100);
    cf_free_log log;
    cache *c = cf_new_cache(cost, &log);
    int i;

    ck_assert_int_eq(cf_put_id(c, 1, 100, CF_LONG, CF_T0), 0);
    for (i = 0; i < 3; i++) /* a hit on the only entry: head and tail at once */
        ck_assert(cf_has_id(c, 1, 100, CF_T0));
    ck_assert_int_eq(cf_put_id(c, 2, 100, CF_LONG, CF_T0), 0); /* evicts 1 */
    ck_assert(!cf_has_id(c, 1, 100, CF_T0));
    ck_assert(cf_has_id(c, 2, 100, CF_T0));
    ck_assert_int_eq(cf_put_id(c, 2, 100, 10, CF_T0), 0); /* replaces itself */
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 9, 1), 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 10, 1), 1);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 10, 1), 0);
    ck_assert_int_eq(cf_put_id(c, 3, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_remove_id(c, 3), 1);
    CF_ASSERT_STATS(c, 5, 4, 1, 4, 1, 1, 1, 0, 0, 0);
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
    const size_t cost = cache_entry_cost(CF_KEY_LEN, 64);
    cf_free_log log;
    cache *c = cf_new_cache((size_t)n * cost, &log);
    uint32_t id, calls = 0;
    size_t dropped = 0;

    for (id = 0; id < n; id++)
        CF_FAST_EQ(cf_put_id(c, id, 64, id % 2 == 0 ? 1000 : CF_LONG, CF_T0), 0);
    CF_ASSERT_STATS(c, 0, 0, 0, n, 0, 0, 0, 0, n, (size_t)n * cost);
    for (id = 0; id < n; id++)
        CF_FAST_ASSERT(cf_has_id(c, id, 64, CF_T0 + 1));
    for (id = 1; id < n; id += 4)
        CF_FAST_EQ(cf_remove_id(c, id), 1);
    /* Bounded sweeps: 1000 entries a call, until a full pass is done. */
    while (calls++ <= n / 1000 + 1)
        dropped += cache_sweep(c, CF_T0 + 1000, 1000);
    CF_FAST_EQ(dropped, n / 2);
    CF_FAST_EQ(cf_stats_of(c).entries, n - n / 2 - n / 4);
    for (id = 0; id < n; id++)
        CF_FAST_EQ(cf_has_id(c, id, 64, CF_T0 + 1000), id % 4 == 3);
    /* Fill past the budget by n/4: the survivors, now the least recently
     * used, are exactly what goes. */
    for (id = n; id < 2 * n; id++)
        CF_FAST_EQ(cf_put_id(c, id, 64, CF_LONG, CF_T0 + 1000), 0);
    CF_FAST_EQ(cf_stats_of(c).entries, n);
    CF_FAST_EQ(cf_stats_of(c).evicted, n / 4);
    CF_FAST_ASSERT(!cf_has_id(c, 3, 64, CF_T0 + 1000));
    CF_FAST_ASSERT(!cf_has_id(c, n - 1, 64, CF_T0 + 1000));
    CF_FAST_ASSERT(cf_has_id(c, n, 64, CF_T0 + 1000));
    CF_FAST_ASSERT(cf_has_id(c, 2 * n - 1, 64, CF_T0 + 1000));
    cache_free(c);
    CF_FAST_EQ(log.calls, 2 * (size_t)n);
    CF_FAST_EQ(log.dirty, 0);
}
END_TEST

static Suite *cache_random_suite(void)
{
    Suite *s = suite_create("cache_random");
    TCase *random = tcase_create("random");
    TCase *sizes = tcase_create("sizes");

    tcase_add_test(random, test_random_model);
    tcase_add_test(random, test_random_sweeps);
    tcase_set_timeout(random, 120);
    suite_add_tcase(s, random);

    tcase_add_test(sizes, test_one_entry);
    tcase_add_test(sizes, test_many_entries);
    tcase_set_timeout(sizes, 300);
    suite_add_tcase(s, sizes);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cache_random_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
