/* cache_fixture.c — helpers shared by the session store's unit tests
 * (tests/unit/check_cache*.c): a cache whose free_fn checks that every
 * freed block was wiped, numbered keys and values, and a fixed-seed PRNG.
 *
 * Only cache.h's public API is used here, so this file does not care that
 * each test binary includes cache.c with its test hooks: the cache_
 * symbols it calls are the test binary's own. Assertions are Check's, so
 * call these only from inside a Check test.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "cache_fixture.h"

static void log_free(void *ptr, size_t size, void *arg)
{
    cf_free_log *log = arg;
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
cache *cf_new_cache(size_t max_bytes, cf_free_log *log)
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

cache_stats cf_stats_of(const cache *c)
{
    cache_stats st;

    cache_get_stats(c, &st);
    return st;
}

/* Key number id: CF_KEY_LEN bytes, the id in front, so distinct ids differ. */
const uint8_t *cf_key_of(uint32_t id, uint8_t *buf)
{
    size_t i;

    for (i = 0; i < CF_KEY_LEN; i++)
        buf[i] = (uint8_t)(0x5a ^ i);
    buf[0] = (uint8_t)(id >> 24);
    buf[1] = (uint8_t)(id >> 16);
    buf[2] = (uint8_t)(id >> 8);
    buf[3] = (uint8_t)id;
    return buf;
}

/* Value bytes that depend on a seed and never are zero (a wipe shows). */
void cf_fill_value(uint8_t *buf, size_t len, uint32_t seed)
{
    size_t i;

    for (i = 0; i < len; i++)
        buf[i] = (uint8_t)(1 + (seed * 131u + i * 7u) % 255u);
}

int cf_put_id(cache *c, uint32_t id, size_t value_len, uint64_t ttl, uint64_t now)
{
    uint8_t key[CF_KEY_LEN];
    uint8_t value[4096];

    CF_FAST_ASSERT(value_len <= sizeof(value));
    cf_fill_value(value, value_len, id);
    return cache_put(c, cf_key_of(id, key), CF_KEY_LEN, value, value_len, ttl, now);
}

/* 1 when id is there with the value cf_put_id stored (this counts as a hit and
 * moves it to MRU), 0 when absent (a miss changes no order). */
int cf_has_id(cache *c, uint32_t id, size_t value_len, uint64_t now)
{
    uint8_t key[CF_KEY_LEN];
    uint8_t expect[4096];
    size_t got_len = 0;
    const uint8_t *got = cache_get(c, cf_key_of(id, key), CF_KEY_LEN, now, &got_len);

    if (got == NULL)
        return 0;
    cf_fill_value(expect, value_len, id);
    CF_FAST_EQ(got_len, value_len);
    CF_FAST_ASSERT(memcmp(got, expect, value_len) == 0);
    return 1;
}

int cf_remove_id(cache *c, uint32_t id)
{
    uint8_t key[CF_KEY_LEN];

    return cache_remove(c, cf_key_of(id, key), CF_KEY_LEN);
}

/* splitmix64: a fixed-seed PRNG, so every run does the same operations. */
uint64_t cf_rnd_next(uint64_t *state)
{
    uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));

    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}
