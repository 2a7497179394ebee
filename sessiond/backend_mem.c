/* backend_mem.c — the in-memory cache (cache.h) behind the backend vtable.
 *
 * The embedded default: nothing to install, every operation completes
 * synchronously, before it returns. The cache is borrowed, not owned, so the
 * daemon keeps its own handle for stats and sweeping.
 *
 * take is get + remove, and add is get + put: atomic because one event loop
 * thread owns the cache. take copies the value out before removing it (the
 * cache wipes the entry on removal), and calls the completion after the
 * removal, so a completion that writes the same key again is not undone. The
 * copy costs one allocation per take; takes are rare (0-RTT anti-replay), so
 * the cheaper "complete, then remove" order was not worth its re-entrancy trap.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "backend.h"

typedef struct backend_mem {
    backend base; /* first: a backend_mem is a backend */
    cache *cache;
    backend_clock_fn clock;
    void *clock_arg;
    backend_stats stats;
} backend_mem;

static uint64_t mem_default_clock(void *arg)
{
    (void)arg;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t mem_now(const backend_mem *m)
{
    return m->clock(m->clock_arg);
}

static int mem_key_ok(const uint8_t *key, size_t key_len)
{
    return key != NULL && key_len > 0 && key_len <= BACKEND_MAX_KEY;
}

static void mem_complete(backend_mem *m, backend_done_fn done, void *arg, backend_status status,
                         const uint8_t *value, size_t value_len)
{
    m->stats.by_status[status]++;
    if (done)
        done(arg, status, status == BACKEND_OK ? value : NULL,
             status == BACKEND_OK ? value_len : 0);
}

static void mem_get(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg)
{
    backend_mem *m = (backend_mem *)b;
    m->stats.ops++;
    if (!mem_key_ok(key, key_len)) {
        mem_complete(m, done, arg, BACKEND_ERROR, NULL, 0);
        return;
    }
    size_t len = 0;
    const uint8_t *v = cache_get(m->cache, key, key_len, mem_now(m), &len);
    mem_complete(m, done, arg, v ? BACKEND_OK : BACKEND_NOT_FOUND, v, len);
}

static void mem_put(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    backend_mem *m = (backend_mem *)b;
    m->stats.ops++;
    int ok = mem_key_ok(key, key_len) && value != NULL && value_len > 0 &&
             value_len <= BACKEND_MAX_VALUE && ttl_ms > 0 &&
             cache_put(m->cache, key, key_len, value, value_len, ttl_ms, mem_now(m)) == 0;
    mem_complete(m, done, arg, ok ? BACKEND_OK : BACKEND_ERROR, NULL, 0);
}

static void mem_del(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg)
{
    backend_mem *m = (backend_mem *)b;
    m->stats.ops++;
    if (!mem_key_ok(key, key_len)) {
        mem_complete(m, done, arg, BACKEND_ERROR, NULL, 0);
        return;
    }
    int removed = cache_remove(m->cache, key, key_len);
    mem_complete(m, done, arg, removed ? BACKEND_OK : BACKEND_NOT_FOUND, NULL, 0);
}

static void mem_take(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                     void *arg)
{
    backend_mem *m = (backend_mem *)b;
    m->stats.ops++;
    if (!mem_key_ok(key, key_len)) {
        mem_complete(m, done, arg, BACKEND_ERROR, NULL, 0);
        return;
    }
    size_t len = 0;
    const uint8_t *v = cache_get(m->cache, key, key_len, mem_now(m), &len);
    if (!v) {
        mem_complete(m, done, arg, BACKEND_NOT_FOUND, NULL, 0);
        return;
    }
    uint8_t *copy = malloc(len);
    if (!copy) {
        /* Leave the entry in place: a take that reports failure must not
         * have consumed it. */
        mem_complete(m, done, arg, BACKEND_ERROR, NULL, 0);
        return;
    }
    memcpy(copy, v, len);
    cache_remove(m->cache, key, key_len);
    mem_complete(m, done, arg, BACKEND_OK, copy, len);
    OPENSSL_cleanse(copy, len);
    free(copy);
}

static void mem_add(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                    size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    backend_mem *m = (backend_mem *)b;
    m->stats.ops++;
    if (!mem_key_ok(key, key_len) || value == NULL || value_len == 0 ||
        value_len > BACKEND_MAX_VALUE || ttl_ms == 0) {
        mem_complete(m, done, arg, BACKEND_ERROR, NULL, 0);
        return;
    }
    uint64_t now = mem_now(m);
    size_t len = 0;
    /* A lookup also drops an expired entry, so "absent" means "no live entry". */
    if (cache_get(m->cache, key, key_len, now, &len)) {
        mem_complete(m, done, arg, BACKEND_EXISTS, NULL, 0);
        return;
    }
    int ok = cache_put(m->cache, key, key_len, value, value_len, ttl_ms, now) == 0;
    mem_complete(m, done, arg, ok ? BACKEND_OK : BACKEND_ERROR, NULL, 0);
}

static void mem_get_stats(const backend *b, backend_stats *out)
{
    const backend_mem *m = (const backend_mem *)b;
    *out = m->stats;
    out->up = 1;
}

static void mem_free(backend *b)
{
    free(b);
}

static const backend_ops mem_ops = {
    .name = "memory",
    .get = mem_get,
    .put = mem_put,
    .del = mem_del,
    .take = mem_take,
    .add = mem_add,
    .get_stats = mem_get_stats,
    .free = mem_free,
};

backend *backend_mem_new(cache *c, backend_clock_fn clock, void *clock_arg)
{
    if (!c)
        return NULL;
    backend_mem *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->base.ops = &mem_ops;
    m->cache = c;
    m->clock = clock ? clock : mem_default_clock;
    m->clock_arg = clock_arg;
    return &m->base;
}
