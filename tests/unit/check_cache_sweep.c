/* check_cache_sweep.c — unit tests of the session store's incremental
 * sweep, its counters, and the wiping of every block it frees
 * (sessiond/cache.c).
 *
 * What is covered: the incremental sweep (bounded per call, resuming from
 * its cursor, wrapping once, and a cursor entry removed, evicted, replaced,
 * hit or expired between two calls); every counter; wipe-on-free on each
 * path that frees.
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

/* ---- sweep ------------------------------------------------------------- */

START_TEST(test_sweep_bounded)
{
    cache *c = cf_new_cache(1 << 20, NULL);
    uint32_t id;

    ck_assert_uint_eq(cache_sweep(c, CF_T0, 100), 0); /* empty */
    for (id = 0; id < 10; id++)
        ck_assert_int_eq(cf_put_id(c, id, 50, 100, CF_T0), 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 0), 0); /* budget 0 */
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 3);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 3);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 3);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 1);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 0);
    CF_ASSERT_STATS(c, 0, 0, 0, 10, 0, 10, 0, 0, 0, 0);
    cache_free(c);
}
END_TEST

/* Live entries first, expired ones after: a sweep that restarted at the head
 * every time would never reach them. */
START_TEST(test_sweep_resumes)
{
    cf_free_log log;
    cache *c = cf_new_cache(1 << 20, &log);
    uint32_t id;

    for (id = 0; id < 10; id++)
        ck_assert_int_eq(cf_put_id(c, id, 50, id >= 5 ? 100 : CF_LONG, CF_T0), 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 0); /* 0 1 2 */
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 1); /* 3 4 5 */
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 3); /* 6 7 8 */
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 3), 1); /* 9, wrap, 0 1 */
    ck_assert_uint_eq(log.calls, 5);
    ck_assert_uint_eq(log.dirty, 0);
    ck_assert_uint_eq(cf_stats_of(c).entries, 5);
    ck_assert_uint_eq(cf_stats_of(c).expired, 5);
    for (id = 0; id < 5; id++)
        ck_assert(cf_has_id(c, id, 50, CF_T0 + 100));
    cache_free(c);
}
END_TEST

/* One call never examines an entry twice, and wraps from the cursor. */
START_TEST(test_sweep_wraps_once)
{
    cache *c = cf_new_cache(1 << 20, NULL);
    uint32_t id;

    for (id = 0; id < 10; id++)
        ck_assert_int_eq(cf_put_id(c, id, 50, 100, CF_T0), 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 50, 4), 0); /* cursor at 4 */
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, SIZE_MAX), 10);
    ck_assert_uint_eq(cf_stats_of(c).entries, 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, SIZE_MAX), 0);
    /* The cursor survives the cache emptying and filling again. */
    ck_assert_int_eq(cf_put_id(c, 20, 50, 10, CF_T0 + 200), 0);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 210, 1), 1);
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
    const size_t cost = cache_entry_cost(CF_KEY_LEN, 50);
    const uint64_t now = CF_T0 + 200;
    cf_free_log log;
    cache *c = cf_new_cache(10 * cost, &log);
    uint32_t id;
    size_t frees;

    for (id = 0; id < 10; id++) {
        uint64_t ttl = (id >= 4 && id <= 6) || (id == 3 && mode == CURSOR_EXPIRED) ? 100 : CF_LONG;

        ck_assert_int_eq(cf_put_id(c, id, 50, ttl, CF_T0), 0);
    }
    ck_assert_uint_eq(cache_sweep(c, now, 3), 0); /* 0 1 2; cursor on 3 */
    frees = log.calls;
    switch (mode) {
    case CURSOR_KEPT:
        break;
    case CURSOR_REMOVED:
        ck_assert_int_eq(cf_remove_id(c, 3), 1);
        break;
    case CURSOR_EVICTED:
        /* Make 3 the LRU head (3 .. 9 0 1 2), then push one entry out. */
        ck_assert(cf_has_id(c, 0, 50, now));
        ck_assert(cf_has_id(c, 1, 50, now));
        ck_assert(cf_has_id(c, 2, 50, now));
        ck_assert_int_eq(cf_put_id(c, 50, 50, CF_LONG, now), 0);
        ck_assert_uint_eq(cf_stats_of(c).evicted, 1);
        ck_assert(!cf_has_id(c, 3, 50, now));
        break;
    case CURSOR_REPLACED:
        ck_assert_int_eq(cf_put_id(c, 3, 50, CF_LONG, now), 0);
        break;
    case CURSOR_HIT:
        ck_assert(cf_has_id(c, 3, 50, now));
        break;
    case CURSOR_EXPIRED:
        ck_assert(!cf_has_id(c, 3, 50, now));
        ck_assert_uint_eq(cf_stats_of(c).expired, 1);
        break;
    default:
        ck_abort();
    }
    if (mode != CURSOR_KEPT && mode != CURSOR_HIT)
        ck_assert_uint_eq(log.calls, frees + 1);
    /* Kept: 3 4 5 -> 2 dropped; otherwise 4 5 6 -> 3. */
    ck_assert_uint_eq(cache_sweep(c, now, 3), mode == CURSOR_KEPT ? 2 : 3);
    ck_assert_uint_eq(cache_sweep(c, now, SIZE_MAX), mode == CURSOR_KEPT ? 1 : 0);
    ck_assert_uint_eq(cf_stats_of(c).entries,
                      mode == CURSOR_REMOVED || mode == CURSOR_EXPIRED ? 6 : 7);
    cache_free(c);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

/* ---- counters and wipes -------------------------------------------------- */

START_TEST(test_stats_counters)
{
    const size_t cost = cache_entry_cost(CF_KEY_LEN, 100);
    cache *c = cf_new_cache(3 * cost, NULL);
    uint8_t key[CF_KEY_LEN];

    CF_ASSERT_STATS(c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
    ck_assert_int_eq(cf_put_id(c, 1, 100, 100, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 100, CF_LONG, CF_T0), 0);
    CF_ASSERT_STATS(c, 0, 0, 0, 2, 0, 0, 0, 0, 2, 2 * cost);
    ck_assert(cf_has_id(c, 2, 100, CF_T0));  /* hit */
    ck_assert(!cf_has_id(c, 9, 100, CF_T0)); /* miss */
    CF_ASSERT_STATS(c, 2, 1, 1, 2, 0, 0, 0, 0, 2, 2 * cost);
    ck_assert(!cf_has_id(c, 1, 100, CF_T0 + 100)); /* expired: a miss too */
    CF_ASSERT_STATS(c, 3, 1, 2, 2, 0, 1, 0, 0, 1, cost);
    ck_assert_int_eq(cf_put_id(c, 2, 100, CF_LONG, CF_T0), 0); /* replace: a put */
    CF_ASSERT_STATS(c, 3, 1, 2, 3, 0, 1, 0, 0, 1, cost);
    ck_assert_int_eq(cf_put_id(c, 3, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 4, 100, CF_LONG, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 5, 100, CF_LONG, CF_T0), 0); /* evicts 2 */
    CF_ASSERT_STATS(c, 3, 1, 2, 6, 0, 1, 1, 0, 3, 3 * cost);
    ck_assert_int_eq(cf_remove_id(c, 3), 1);
    ck_assert_int_eq(cf_remove_id(c, 3), 0); /* not counted */
    CF_ASSERT_STATS(c, 3, 1, 2, 6, 1, 1, 1, 0, 2, 2 * cost);
    ck_assert_int_eq(cache_put(c, cf_key_of(6, key), CF_KEY_LEN, key, CF_KEY_LEN, 0, CF_T0), -1);
    CF_ASSERT_STATS(c, 3, 1, 2, 6, 1, 1, 1, 1, 2, 2 * cost);
    ck_assert_uint_eq(cache_sweep(c, CF_T0 + 2 * CF_LONG, 100), 2);
    CF_ASSERT_STATS(c, 3, 1, 2, 6, 1, 3, 1, 1, 0, 0);
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
    const size_t cost = cache_entry_cost(CF_KEY_LEN, 200);
    cf_free_log log;
    cache *c = cf_new_cache(2 * cost, &log);

    ck_assert_int_eq(cf_put_id(c, 1, 200, 100, CF_T0), 0);
    ck_assert_int_eq(cf_put_id(c, 2, 200, CF_LONG, CF_T0), 0);
    ck_assert_uint_eq(log.calls, 0);
    switch (path) {
    case WIPE_REMOVE:
        ck_assert_int_eq(cf_remove_id(c, 1), 1);
        break;
    case WIPE_REPLACE:
        ck_assert_int_eq(cf_put_id(c, 1, 200, CF_LONG, CF_T0), 0);
        break;
    case WIPE_EVICT:
        ck_assert_int_eq(cf_put_id(c, 3, 200, CF_LONG, CF_T0), 0);
        ck_assert_uint_eq(cf_stats_of(c).evicted, 1);
        break;
    case WIPE_EXPIRE:
        ck_assert(!cf_has_id(c, 1, 200, CF_T0 + 100));
        break;
    case WIPE_SWEEP:
        ck_assert_uint_eq(cache_sweep(c, CF_T0 + 100, 10), 1);
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
    ck_assert_uint_ge(log.last_size, CF_KEY_LEN + 200);
    ck_assert_uint_lt(log.last_size, cost);
    cache_free(c);
    ck_assert_uint_eq(log.dirty, 0);
}
END_TEST

static Suite *cache_sweep_suite(void)
{
    Suite *s = suite_create("cache_sweep");
    TCase *sweep = tcase_create("sweep");
    TCase *wipe = tcase_create("stats_wipe");

    tcase_add_test(sweep, test_sweep_bounded);
    tcase_add_test(sweep, test_sweep_resumes);
    tcase_add_test(sweep, test_sweep_wraps_once);
    tcase_add_loop_test(sweep, test_sweep_cursor_fixup, CURSOR_KEPT, CURSOR_EXPIRED + 1);
    suite_add_tcase(s, sweep);

    tcase_add_test(wipe, test_stats_counters);
    tcase_add_loop_test(wipe, test_wipe_on_free, 0, WIPE_PATHS);
    suite_add_tcase(s, wipe);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cache_sweep_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
