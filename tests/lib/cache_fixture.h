/* cache_fixture.h — helpers shared by the session store's unit tests
 * (tests/unit/check_cache*.c). See cache_fixture.c. Call them only from
 * inside a Check test: they assert with Check.
 */
#ifndef CACHE_FIXTURE_H
#define CACHE_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

#define CF_KEY_LEN 32     /* the v1 key: a padded 32-byte session ID */
#define CF_T0      100000 /* an arbitrary start for the injected clock, in ms */
#define CF_LONG    1000000u

/* Check records every passing ck_assert (a write to its pipe, a system
 * call): these assert only on failure, for loops of many thousand checks. */
#define CF_FAST_ASSERT(cond)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            ck_abort_msg("Assertion '%s' failed", #cond);                                          \
    } while (0)
#define CF_FAST_EQ(a, b)                                                                           \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            ck_abort_msg("Assertion '%s == %s' failed: %lld != %lld", #a, #b, a_, b_);             \
    } while (0)

/* Every counter of cache_get_stats at once. */
#define CF_ASSERT_STATS(c, g, h, m, p, r, x, v, j, n, b)                                           \
    do {                                                                                           \
        cache_stats st_ = cf_stats_of(c);                                                          \
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

/* What the cache's free_fn saw. */
typedef struct cf_free_log {
    size_t calls; /* blocks handed to free_fn */
    size_t dirty; /* of which not entirely zero: a missed wipe */
    size_t last_size;
} cf_free_log;

/* A cache with the given budget; log (if not NULL) observes every free. */
cache *cf_new_cache(size_t max_bytes, cf_free_log *log);
cache_stats cf_stats_of(const cache *c);
/* Key number id: CF_KEY_LEN bytes, the id in front, so distinct ids differ. */
const uint8_t *cf_key_of(uint32_t id, uint8_t *buf);
/* Value bytes that depend on a seed and never are zero (a wipe shows). */
void cf_fill_value(uint8_t *buf, size_t len, uint32_t seed);
/* cache_put of key id with the cf_fill_value pattern (value_len <= 4096). */
int cf_put_id(cache *c, uint32_t id, size_t value_len, uint64_t ttl, uint64_t now);
/* 1 when id is there with the value cf_put_id stored (a hit, moved to MRU),
 * 0 when absent (a miss changes no order). */
int cf_has_id(cache *c, uint32_t id, size_t value_len, uint64_t now);
int cf_remove_id(cache *c, uint32_t id);
/* splitmix64: a fixed-seed PRNG, so every run does the same operations. */
uint64_t cf_rnd_next(uint64_t *state);

#endif
