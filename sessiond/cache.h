/* cache.h — the session store: a hash table with TTL expiry, LRU order and a
 * byte budget. It knows nothing of the network or the wire format.
 *
 * Time is passed in by the caller on every call (milliseconds of any
 * monotonic clock), so tests drive expiry with an injected clock and the
 * daemon reads the clock once per batch of datagrams.
 *
 * Keys are opaque byte strings of 1..CACHE_MAX_KEY bytes (the daemon puts a
 * 1-byte protocol tag before the wire key, so v1 and v2 entries never meet:
 * 33 bytes for a v1 session ID, up to 65 for a v2 key). Values are
 * opaque bytes (DER sessions); they are secrets, so every entry is wiped with
 * OPENSSL_cleanse before its memory is freed.
 */
#ifndef SESSIOND_CACHE_H
#define SESSIOND_CACHE_H

#include <stddef.h>
#include <stdint.h>

#define CACHE_MAX_KEY 65

typedef struct cache cache;

typedef struct cache_stats {
    uint64_t gets;     /* lookups */
    uint64_t hits;     /* lookups that found a live entry */
    uint64_t misses;   /* lookups that found nothing, or only an expired entry */
    uint64_t puts;     /* entries stored (new or replacing) */
    uint64_t removes;  /* entries deleted on request */
    uint64_t expired;  /* entries dropped because their TTL passed */
    uint64_t evicted;  /* entries dropped to stay within the byte budget */
    uint64_t rejected; /* puts refused: bad key, empty value, larger than the budget, no memory */
    uint64_t entries;  /* entries stored now */
    uint64_t bytes;    /* bytes charged now: keys + values + per-entry overhead */
} cache_stats;

/* Frees one entry's memory after it has been wiped; `size` is what was
 * allocated. NULL means free(3). Tests use it to observe the wipe. */
typedef void (*cache_free_fn)(void *ptr, size_t size, void *arg);

typedef struct cache_config {
    size_t max_bytes; /* byte budget, counting keys, values and overhead */
    cache_free_fn free_fn;
    void *free_arg;
} cache_config;

/* NULL on allocation failure. */
cache *cache_create(const cache_config *config);
/* Wipes and frees every entry, then the cache. NULL is a no-op. */
void cache_free(cache *c);

/* Stores a copy of value under key until now_ms + ttl_ms, replacing any entry
 * with the same key. The entry is live while the clock is < now_ms + ttl_ms:
 * at exactly now_ms + ttl_ms it has expired. Evicts least-recently-used
 * entries while the budget would be exceeded. Returns 0, or -1 when refused
 * (counted in `rejected`): key length 0 or over CACHE_MAX_KEY, value_len 0 or
 * over 16 MiB - 1, ttl_ms 0, an entry larger than the whole budget, or no
 * memory. A refusal for size or arguments leaves an existing entry alone. */
int cache_put(cache *c, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
              uint64_t ttl_ms, uint64_t now_ms);

/* Returns the live entry's value and marks it most recently used, or NULL.
 * The pointer is valid until the next call that changes the cache; no copy
 * is made, so a daemon can send straight from it. An expired entry found
 * here is dropped and counted as expired, and the lookup as a miss. */
const uint8_t *cache_get(cache *c, const uint8_t *key, size_t key_len, uint64_t now_ms,
                         size_t *value_len);

/* Deletes the entry. Returns 1 if one was there, else 0. */
int cache_remove(cache *c, const uint8_t *key, size_t key_len);

/* Drops expired entries, examining at most `budget` entries from where the
 * previous sweep stopped, so each call has a bounded cost. Returns the number
 * dropped. */
size_t cache_sweep(cache *c, uint64_t now_ms, size_t budget);

void cache_get_stats(const cache *c, cache_stats *out);

/* Bytes charged for an entry with these lengths: what the budget counts. */
size_t cache_entry_cost(size_t key_len, size_t value_len);

#endif
