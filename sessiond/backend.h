/* backend.h — where sessions live, behind one small asynchronous interface.
 *
 * Dispatch talks to a `backend` through a vtable of five operations (get,
 * put, del, take = atomic get-and-delete, add = atomic add-if-absent) and
 * never learns which store answers: the in-memory cache (backend_mem.c, the
 * default) or a shared Redis (backend_redis.c).
 *
 * Contract, the same for every implementation:
 *   - Every operation calls its completion `done` EXACTLY ONCE, with a
 *     backend_status. `done` may be NULL (fire-and-forget writes).
 *   - The completion may run SYNCHRONOUSLY, before the operation returns (the
 *     memory backend always does; Redis does when it is down or saturated),
 *     or LATER from the event loop (Redis answers). Callers must be ready for
 *     both: set up whatever state the completion needs BEFORE calling.
 *   - A backend NEVER blocks: no network round trip, no DNS, no disk inside
 *     an operation. A store it cannot reach completes BACKEND_UNAVAILABLE.
 *   - Ownership: key and value are borrowed only for the duration of the
 *     call (the backend copies what it keeps). The value handed to a get or
 *     take completion belongs to the backend and is valid only during the
 *     completion, and only until the completion calls into the same backend
 *     again; copy it to keep it. It is a secret: do not log it.
 *   - A completion may start new operations on the same backend, but must not
 *     free it. backend_free completes every pending operation with
 *     BACKEND_UNAVAILABLE (those completions must not call the backend).
 *   - Not thread-safe: one backend belongs to one event loop thread.
 *
 * Keys are opaque byte strings of 1..BACKEND_MAX_KEY bytes (dispatch's cache
 * keys: a tag byte and the wire key); values 1..BACKEND_MAX_VALUE bytes.
 * TTLs are milliseconds and must be > 0. An argument out of range completes
 * BACKEND_ERROR (and is counted), it never crashes.
 */
#ifndef SESSIOND_BACKEND_H
#define SESSIOND_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"

#define BACKEND_MAX_KEY   CACHE_MAX_KEY
#define BACKEND_MAX_VALUE (64 * 1024)

typedef enum backend_status {
    BACKEND_OK = 0,      /* done; get/take: the value is passed */
    BACKEND_NOT_FOUND,   /* get/take/del: no live entry */
    BACKEND_EXISTS,      /* add: a live entry was already there, nothing written */
    BACKEND_UNAVAILABLE, /* the store could not be asked in time (down, slow, saturated) */
    BACKEND_ERROR,       /* bad argument, store error, or a stored value that did not open */
    BACKEND_STATUS_COUNT
} backend_status;

/* One completion. value/value_len are set only for BACKEND_OK of get and
 * take (NULL/0 otherwise). */
typedef void (*backend_done_fn)(void *arg, backend_status status, const uint8_t *value,
                                size_t value_len);

/* Milliseconds of a monotonic clock (tests inject their own). */
typedef uint64_t (*backend_clock_fn)(void *arg);

#define BACKEND_LATENCY_BUCKETS 11

typedef struct backend_stats {
    uint64_t ops;                             /* operations started */
    uint64_t by_status[BACKEND_STATUS_COUNT]; /* completions, by status */
    uint64_t timeouts;      /* completed UNAVAILABLE because the store did not answer in time */
    uint64_t rejected_busy; /* completed UNAVAILABLE because too many were in flight */
    uint64_t errors;        /* store errors: error replies, unexpected reply types */
    uint64_t corrupt;       /* stored values that failed to open (tampered, junk, other key) */
    uint64_t reconnects;    /* connections established after the first */
    uint64_t disconnects;   /* connections lost or dropped */
    uint64_t inflight;      /* now: operations sent and not yet answered */
    uint64_t up;            /* now: 1 if the store is reachable (always 1 for memory) */
    /* Added for Redis scale-out. */
    uint64_t failovers; /* Sentinel: master changes followed (+switch-master or re-query) */
    uint64_t invalidations_sent;     /* invalidation messages published (del, take) */
    uint64_t invalidations_received; /* from other nodes, handed to the invalidate hook */
    /* Latency of answered operations (sent -> reply), a cumulative-free
     * histogram: latency_buckets[i] counts replies with latency <=
     * backend_latency_bounds_us[i] and above the previous bound; the last
     * bucket counts everything slower than the last bound. */
    uint64_t latency_buckets[BACKEND_LATENCY_BUCKETS];
    uint64_t latency_sum_us;
} backend_stats;

/* Upper bounds of the latency buckets, microseconds (the last is +Inf). */
static const uint32_t backend_latency_bounds_us[BACKEND_LATENCY_BUCKETS - 1] = {
    100, 250, 500, 1000, 2000, 4000, 10000, 25000, 50000, 100000};

/* Another node deleted, took or replaced `key`: drop any near copy of it.
 * Called from the event loop; key borrowed for the call. */
typedef void (*backend_invalidate_fn)(void *arg, const uint8_t *key, size_t key_len);

typedef struct backend backend;

typedef struct backend_ops {
    const char *name; /* "memory", "redis" */
    void (*get)(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg);
    void (*put)(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg);
    void (*del)(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg);
    void (*take)(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg);
    void (*add)(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg);
    void (*get_stats)(const backend *b, backend_stats *out);
    void (*free)(backend *b);
} backend_ops;

/* Every implementation's struct starts with this. */
struct backend {
    const backend_ops *ops;
    /* Set by the owner (backend_set_invalidate); a shared store calls it when
     * another node changed a key, so near copies can be dropped. The memory
     * backend never calls it (it is not shared between processes). */
    backend_invalidate_fn invalidate;
    void *invalidate_arg;
};

/* The calls dispatch makes: thin inline forwards to the vtable, so callers
 * read naturally and the header stays the single place of the contract. */
static inline void backend_get(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                               void *arg)
{
    b->ops->get(b, key, key_len, done, arg);
}

/* Stores (or replaces) key for ttl_ms. OK, or ERROR/UNAVAILABLE. */
static inline void backend_put(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                               size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    b->ops->put(b, key, key_len, value, value_len, ttl_ms, done, arg);
}

/* OK if an entry was deleted, NOT_FOUND if none was there. */
static inline void backend_del(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                               void *arg)
{
    b->ops->del(b, key, key_len, done, arg);
}

/* Atomic get-and-delete: of concurrent takes of one key (from any node on
 * the same store), at most one completes OK with the value. */
static inline void backend_take(backend *b, const uint8_t *key, size_t key_len,
                                backend_done_fn done, void *arg)
{
    b->ops->take(b, key, key_len, done, arg);
}

/* Atomic add-if-absent: OK if stored, EXISTS if a live entry was there (and
 * is left alone). */
static inline void backend_add(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                               size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    b->ops->add(b, key, key_len, value, value_len, ttl_ms, done, arg);
}

static inline void backend_get_stats(const backend *b, backend_stats *out)
{
    b->ops->get_stats(b, out);
}

static inline void backend_set_invalidate(backend *b, backend_invalidate_fn fn, void *arg)
{
    b->invalidate = fn;
    b->invalidate_arg = arg;
}

/* NULL is a no-op. */
static inline void backend_free(backend *b)
{
    if (b)
        b->ops->free(b);
}

static inline const char *backend_status_name(backend_status s)
{
    static const char *const names[BACKEND_STATUS_COUNT] = {"ok", "not_found", "exists",
                                                            "unavailable", "error"};
    return (unsigned)s < BACKEND_STATUS_COUNT ? names[s] : "?";
}

/* --- the memory backend (backend_mem.c) -------------------------------- */

/* Wraps an existing cache (NOT owned: it must outlive the backend, and the
 * daemon keeps reading its stats). Every operation completes synchronously.
 * `clock` gives now_ms for the cache's TTLs (NULL: CLOCK_MONOTONIC). NULL
 * on allocation failure. */
backend *backend_mem_new(cache *c, backend_clock_fn clock, void *clock_arg);

#endif
