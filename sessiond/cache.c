/* cache.c — the session store: uthash table + TTL + LRU + byte budget.
 *
 * How it works
 * ------------
 * Each entry is ONE allocation: the struct below (uthash's handle plus one
 * 64-bit word), then the key bytes, then the value bytes:
 *
 *     [ UT_hash_handle hh : 56 ][ meta : 8 ][ key : 1..64 ][ value : 1.. ]
 *
 * sizeof(cache_entry) is 64 on LP64 (a _Static_assert below keeps it from
 * growing silently). `meta` packs the expiry time into 40 bits and the value
 * length into 24; the key length is the handle's own `keylen`.
 *
 * Hashing: the key is hashed here with SipHash-2-4 under a random 128-bit key
 * drawn once per cache, and handed to uthash's *_BYHASHVALUE macros. Keys come
 * from unauthenticated network peers (v1 has no authentication), and uthash's
 * default hash is unkeyed: a peer who crafts colliding session IDs would put
 * them all in one bucket, uthash would give up expanding ("noexpand"), and
 * every lookup would walk one chain of up to ~250k entries. A keyed hash makes
 * such collisions unpredictable. HASH_FUNCTION is defined to a name that does
 * not exist, so any uthash macro that would hash on its own fails to compile.
 *
 * LRU: uthash keeps every table's entries on a doubly-linked list in
 * application order (hh.prev/hh.next, tail in hh.tbl->tail), and HASH_ADD
 * appends at the tail. That list IS the LRU list: head = least recently
 * used, tail = most recently used, so there are no LRU pointers of our own.
 * A hit splices the entry out of that list and appends it at the tail by
 * relinking four pointers (cache_touch), without touching the buckets.
 * Cost of the choice: it relies on uthash's list representation (the fields
 * are public and documented in uthash.h, HASH_SORT rewrites them the same
 * way). The obvious alternative, HASH_DELETE + HASH_ADD_KEYPTR_BYHASHVALUE,
 * was not taken: the re-add may expand the buckets (an allocation on the GET
 * hit path) and, with HASH_NONFATAL_OOM, a failed expansion unlinks the entry
 * silently; and deleting a table's last entry frees the whole table.
 *
 * Time: callers pass now_ms from any monotonic clock. The first put fixes an
 * epoch; expiry is stored as milliseconds since that epoch in 40 bits. An
 * entry is live while now < put time + ttl: at exactly put time + ttl it has
 * expired. A clock earlier than the epoch counts as the epoch.
 *
 * Budget: cache_entry_cost() = sizeof(cache_entry) + key + value +
 * CACHE_ALLOC_OVERHEAD, where the constant (16) stands for what glibc's
 * malloc adds to each block (an 8-byte size header, and rounding up to 16
 * bytes: 7.5 on average). `bytes` is the sum over live entries and never
 * exceeds max_bytes: a put evicts from the LRU head until its entry fits.
 * An evicted head that had already expired is counted as expired, not
 * evicted, so `evicted` counts only live sessions lost to the budget.
 *
 * Sweep: a cursor remembers the next entry to examine, in LRU order. Each
 * call examines at most `budget` entries (and never one twice), wrapping from
 * the tail to the head. Whenever an entry leaves the list or moves to the tail,
 * cache_unlink/cache_touch first move the cursor to its successor, so the
 * cursor never dangles.
 *
 * Freeing: every entry leaves through cache_release(): OPENSSL_cleanse over
 * the whole allocation, then config->free_fn (or free(3)).
 *
 * Debugging: build with -DCACHE_DEBUG (and uthash's -DHASH_DEBUG) to check
 * the list, the tail, the counts, the bytes and the cursor after every call.
 * Both are O(n) per call.
 *
 * Known limits
 * ------------
 * - Every operation is O(1) on average (SipHash over <= 64 bytes, one bucket
 *   walk); cache_put may also evict several entries and double the bucket
 *   array (O(n) once, amortised).
 * - uthash's bucket array grows (16 bytes a bucket, 8 to 16 bytes an entry
 *   depending on where the last doubling fell) and never shrinks after a
 *   peak; it is not charged to the budget. The table itself is freed when the
 *   last entry goes and reallocated by the next put. Measured heap beyond key
 *   and value, 32-byte keys and 140-byte values: 97 bytes an entry at 100k
 *   entries, 92 at 1M (64 struct + 20 malloc + 8..13 buckets), where the
 *   budget charges 80. The handle alone (56) already makes the 64-byte goal
 *   of the benchmark issue unreachable with uthash (see the alternative below).
 * - The sweep walks LRU order, which hits reorder under it: in one pass an
 *   entry hit meanwhile may be examined twice or not at all. That is harmless
 *   (a hit entry is live, and cache_get drops an expired entry itself), but
 *   the sweep is approximate, not a scan that visits each entry exactly once.
 * - Eviction follows LRU strictly, not expiry: an expired entry deep in the
 *   list keeps its bytes until the sweep reaches it, while the LRU head is
 *   evicted. The sweep's period bounds how long.
 * - Expiry saturates 2^40 ms (34.8 years) after the epoch: an entry whose
 *   expiry would fall later expires then. Values are limited to 2^24 - 1
 *   bytes (16 MiB); longer ones are refused. A datagram carries < 64 KiB.
 * - cache_remove has no clock: it deletes (and reports 1 for) an entry that
 *   has expired but not yet been swept, counting it in `removes`.
 * - A put refused for lack of memory may already have dropped the entry it
 *   was replacing and evicted others.
 * - Not thread-safe: the daemon's single event loop owns the cache.
 *
 * The cheaper alternative not taken: an open-addressing index of 32-bit slot
 * numbers into a slab of entries with 32-bit LRU links and a 32-bit expiry
 * (about 20 bytes an entry plus the slab's size-class rounding) would halve
 * the overhead, at the price of writing and fuzzing our own table; uthash is
 * well known, and at v1 sizes (a 140-byte session, 64 MiB holds ~250k) the
 * overhead is a third of the memory.
 */
#include "cache.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* uthash: report allocation failure instead of calling exit() (the failed
 * entry comes back with hh.tbl == NULL), and never hash on its own. */
#define HASH_NONFATAL_OOM                    1
#define HASH_FUNCTION(keyptr, keylen, hashv) cache_hashes_with_its_own_keyed_hash_only
#include <uthash.h>

/* What malloc adds to each block, charged to the budget (see the top). */
#define CACHE_ALLOC_OVERHEAD 16u

#define CACHE_TIME_BITS 40u
#define CACHE_LEN_BITS  24u
#define CACHE_TIME_MAX  ((UINT64_C(1) << CACHE_TIME_BITS) - 1u)
#define CACHE_VALUE_MAX ((UINT64_C(1) << CACHE_LEN_BITS) - 1u)

typedef struct cache_entry {
    UT_hash_handle hh; /* first: an entry and its handle share an address */
    uint64_t meta;     /* expiry (ms since epoch) << 24 | value length */
    /* key bytes (hh.keylen), then value bytes, follow */
} cache_entry;

_Static_assert(offsetof(cache_entry, hh) == 0, "cache_touch casts handles to entries");
_Static_assert(sizeof(cache_entry) == sizeof(UT_hash_handle) + sizeof(uint64_t),
               "cache_entry must stay the handle plus one word");

struct cache {
    cache_entry *entries;      /* uthash head = LRU head; NULL when empty */
    cache_entry *sweep_cursor; /* next entry the sweep examines; NULL = head */
    size_t max_bytes;
    size_t bytes;
    uint64_t count;
    uint64_t epoch_ms; /* now_ms of the first put */
    int have_epoch;
    uint64_t sip_k0, sip_k1; /* SipHash key, random per cache */
    cache_free_fn free_fn;
    void *free_arg;
    cache_stats stats; /* counters; entries and bytes are filled on read */
};

/* ---- keyed hash ----------------------------------------------------- */

static uint64_t cache_rotl(uint64_t x, unsigned bits)
{
    return (x << bits) | (x >> (64u - bits));
}

static uint64_t cache_load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8u * i);
    return v;
}

static void cache_sip_round(uint64_t v[4])
{
    v[0] += v[1];
    v[1] = cache_rotl(v[1], 13) ^ v[0];
    v[0] = cache_rotl(v[0], 32);
    v[2] += v[3];
    v[3] = cache_rotl(v[3], 16) ^ v[2];
    v[0] += v[3];
    v[3] = cache_rotl(v[3], 21) ^ v[0];
    v[2] += v[1];
    v[1] = cache_rotl(v[1], 17) ^ v[2];
    v[2] = cache_rotl(v[2], 32);
}

/* SipHash-2-4 (Aumasson and Bernstein, 2012), written from the paper. */
static uint64_t cache_siphash(uint64_t k0, uint64_t k1, const uint8_t *data, size_t len)
{
    uint64_t v[4] = {k0 ^ UINT64_C(0x736f6d6570736575), k1 ^ UINT64_C(0x646f72616e646f6d),
                     k0 ^ UINT64_C(0x6c7967656e657261), k1 ^ UINT64_C(0x7465646279746573)};
    uint64_t last = (uint64_t)len << 56;
    size_t off = 0;
    size_t i;

    for (; len - off >= 8; off += 8) {
        uint64_t m = cache_load_le64(data + off);

        v[3] ^= m;
        cache_sip_round(v);
        cache_sip_round(v);
        v[0] ^= m;
    }
    for (i = 0; off + i < len; i++)
        last |= (uint64_t)data[off + i] << (8u * i);
    v[3] ^= last;
    cache_sip_round(v);
    cache_sip_round(v);
    v[0] ^= last;
    v[2] ^= 0xff;
    for (i = 0; i < 4; i++)
        cache_sip_round(v);
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

/* uthash keeps a 32-bit hash; fold the 64 bits rather than drop half. */
static unsigned cache_hash(const cache *c, const uint8_t *key, size_t key_len)
{
    uint64_t h = cache_siphash(c->sip_k0, c->sip_k1, key, key_len);

    return (unsigned)(uint32_t)(h ^ (h >> 32));
}

/* ---- entries -------------------------------------------------------- */

static uint8_t *cache_entry_key(cache_entry *e)
{
    return (uint8_t *)(e + 1);
}

static uint8_t *cache_entry_value(cache_entry *e)
{
    return cache_entry_key(e) + e->hh.keylen;
}

static size_t cache_entry_value_len(const cache_entry *e)
{
    return (size_t)(e->meta & CACHE_VALUE_MAX);
}

static uint64_t cache_entry_expiry(const cache_entry *e)
{
    return e->meta >> CACHE_LEN_BITS;
}

/* What was allocated for the entry: what is wiped and handed to free_fn. */
static size_t cache_entry_alloc_size(const cache_entry *e)
{
    return sizeof(cache_entry) + e->hh.keylen + cache_entry_value_len(e);
}

size_t cache_entry_cost(size_t key_len, size_t value_len)
{
    size_t fixed = sizeof(cache_entry) + CACHE_ALLOC_OVERHEAD;

    /* Saturate rather than wrap, so an absurd length can never look cheap. */
    if (key_len > SIZE_MAX - fixed || value_len > SIZE_MAX - fixed - key_len)
        return SIZE_MAX;
    return fixed + key_len + value_len;
}

/* now_ms as milliseconds since the epoch, clamped to [0, CACHE_TIME_MAX]. */
static uint64_t cache_rel_time(const cache *c, uint64_t now_ms)
{
    uint64_t rel;

    if (!c->have_epoch || now_ms <= c->epoch_ms)
        return 0;
    rel = now_ms - c->epoch_ms;
    return rel > CACHE_TIME_MAX ? CACHE_TIME_MAX : rel;
}

static int cache_entry_expired(const cache_entry *e, uint64_t rel_now)
{
    return rel_now >= cache_entry_expiry(e);
}

/* The one place an entry's memory goes back: wiped first, always. */
static void cache_release(cache *c, cache_entry *e)
{
    size_t size = cache_entry_alloc_size(e);

    OPENSSL_cleanse(e, size);
    if (c->free_fn != NULL)
        c->free_fn(e, size, c->free_arg);
    else
        free(e);
}

/* Takes e off the table and the LRU list, and out of the accounting. The
 * one unlink path, so the sweep cursor is fixed up here for every caller. */
static void cache_unlink(cache *c, cache_entry *e)
{
    if (c->sweep_cursor == e)
        c->sweep_cursor = e->hh.next;
    c->bytes -= cache_entry_cost(e->hh.keylen, cache_entry_value_len(e));
    c->count--;
    HASH_DELETE(hh, c->entries, e);
}

static void cache_drop(cache *c, cache_entry *e)
{
    cache_unlink(c, e);
    cache_release(c, e);
}

/* Marks e most recently used: moves it to the tail of uthash's application
 * list by relinking pointers. Buckets, hash and table size are untouched, so
 * this cannot allocate or fail. Relies on hh being at offset 0. */
static void cache_touch(cache *c, cache_entry *e)
{
    UT_hash_table *tbl = e->hh.tbl;
    cache_entry *prev = e->hh.prev;
    cache_entry *next = e->hh.next;
    cache_entry *tail;

    if (next == NULL)
        return; /* already the tail (and the only entry when prev is NULL) */
    if (c->sweep_cursor == e)
        c->sweep_cursor = next;
    if (prev != NULL)
        prev->hh.next = next;
    else
        c->entries = next;
    next->hh.prev = prev;
    tail = ELMT_FROM_HH(tbl, tbl->tail);
    tail->hh.next = e;
    e->hh.prev = tail;
    e->hh.next = NULL;
    tbl->tail = &e->hh;
}

#ifdef CACHE_DEBUG
#include <assert.h>
/* Debug builds only (-DCACHE_DEBUG): walks everything after each change,
 * O(n); checks what uthash's own HASH_DEBUG does not (tail, our counts). */
static void cache_check(const cache *c)
{
    const cache_entry *e, *prev = NULL;
    uint64_t n = 0;
    size_t bytes = 0;
    int cursor_seen = c->sweep_cursor == NULL;

    for (e = c->entries; e != NULL; prev = e, e = e->hh.next) {
        assert(e->hh.prev == prev);
        assert(e->hh.tbl == c->entries->hh.tbl);
        bytes += cache_entry_cost(e->hh.keylen, cache_entry_value_len(e));
        n++;
        if (e == c->sweep_cursor)
            cursor_seen = 1;
    }
    assert(c->entries == NULL || c->entries->hh.tbl->tail == &prev->hh);
    assert(c->entries == NULL || c->entries->hh.tbl->num_items == n);
    assert(n == c->count && bytes == c->bytes && bytes <= c->max_bytes);
    assert(cursor_seen);
}
#else
#define cache_check(c) ((void)0)
#endif

/* ---- API ------------------------------------------------------------ */

cache *cache_create(const cache_config *config)
{
    uint8_t seed[16];
    cache *c;

    if (config == NULL)
        return NULL;
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    /* Without a secret hash key the table is open to collision flooding. */
    if (RAND_bytes(seed, (int)sizeof(seed)) != 1)
        goto fail;
    c->sip_k0 = cache_load_le64(seed);
    c->sip_k1 = cache_load_le64(seed + 8);
    OPENSSL_cleanse(seed, sizeof(seed));
    c->max_bytes = config->max_bytes;
    c->free_fn = config->free_fn;
    c->free_arg = config->free_arg;
    return c;

fail:
    free(c);
    return NULL;
}

void cache_free(cache *c)
{
    cache_entry *e, *next;

    if (c == NULL)
        return;
    /* Free the table first, then walk the list it leaves behind: no
     * per-entry unlinking, and no table work on the way out. */
    e = c->entries;
    HASH_CLEAR(hh, c->entries);
    for (; e != NULL; e = next) {
        next = e->hh.next;
        cache_release(c, e);
    }
    OPENSSL_cleanse(c, sizeof(*c)); /* the SipHash key */
    free(c);
}

int cache_put(cache *c, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
              uint64_t ttl_ms, uint64_t now_ms)
{
    cache_entry *fresh = NULL;
    cache_entry *old;
    uint64_t rel_now, expiry;
    unsigned hashv;
    size_t cost;

    /* Refused before anything changes (an old entry stays) or is allocated:
     * nothing to undo, so no need for the cleanup path. */
    cost = cache_entry_cost(key_len, value_len);
    if (key == NULL || key_len == 0 || key_len > CACHE_MAX_KEY || value == NULL || value_len == 0 ||
        value_len > CACHE_VALUE_MAX || ttl_ms == 0 || cost > c->max_bytes) {
        c->stats.rejected++;
        return -1;
    }

    if (!c->have_epoch) {
        c->epoch_ms = now_ms;
        c->have_epoch = 1;
    }
    rel_now = cache_rel_time(c, now_ms);
    expiry = ttl_ms > CACHE_TIME_MAX - rel_now ? CACHE_TIME_MAX : rel_now + ttl_ms;

    fresh = malloc(sizeof(cache_entry) + key_len + value_len);
    if (fresh == NULL)
        goto fail;
    memset(&fresh->hh, 0, sizeof(fresh->hh));
    fresh->meta = (expiry << CACHE_LEN_BITS) | (uint64_t)value_len;
    memcpy(cache_entry_key(fresh), key, key_len);
    fresh->hh.keylen = (unsigned)key_len; /* cache_entry_value() reads it */
    memcpy(cache_entry_value(fresh), value, value_len);

    hashv = cache_hash(c, key, key_len);
    HASH_FIND_BYHASHVALUE(hh, c->entries, key, key_len, hashv, old);
    if (old != NULL)
        cache_drop(c, old); /* replaced: counted as the put, nothing else */

    /* cost <= max_bytes, so this stops at the latest when the cache is
     * empty; written as a subtraction so it cannot overflow. */
    while (c->entries != NULL && c->bytes > c->max_bytes - cost) {
        cache_entry *victim = c->entries;

        if (cache_entry_expired(victim, rel_now))
            c->stats.expired++;
        else
            c->stats.evicted++;
        cache_drop(c, victim);
    }

    HASH_ADD_KEYPTR_BYHASHVALUE(hh, c->entries, cache_entry_key(fresh), key_len, hashv, fresh);
    if (fresh->hh.tbl == NULL)
        goto fail; /* uthash could not allocate its table or grow it */
    c->bytes += cost;
    c->count++;
    c->stats.puts++;
    cache_check(c);
    return 0;

fail:
    if (fresh != NULL)
        cache_release(c, fresh);
    c->stats.rejected++;
    cache_check(c);
    return -1;
}

const uint8_t *cache_get(cache *c, const uint8_t *key, size_t key_len, uint64_t now_ms,
                         size_t *value_len)
{
    cache_entry *e = NULL;

    c->stats.gets++;
    if (key != NULL && key_len != 0 && key_len <= CACHE_MAX_KEY) {
        unsigned hashv = cache_hash(c, key, key_len); /* the macro reuses it */

        HASH_FIND_BYHASHVALUE(hh, c->entries, key, key_len, hashv, e);
    }
    if (e == NULL)
        goto miss;
    if (cache_entry_expired(e, cache_rel_time(c, now_ms))) {
        c->stats.expired++;
        cache_drop(c, e);
        goto miss;
    }
    cache_touch(c, e);
    c->stats.hits++;
    if (value_len != NULL)
        *value_len = cache_entry_value_len(e);
    cache_check(c);
    return cache_entry_value(e);

miss:
    c->stats.misses++;
    cache_check(c);
    return NULL;
}

int cache_remove(cache *c, const uint8_t *key, size_t key_len)
{
    cache_entry *e = NULL;

    if (key != NULL && key_len != 0 && key_len <= CACHE_MAX_KEY) {
        unsigned hashv = cache_hash(c, key, key_len); /* the macro reuses it */

        HASH_FIND_BYHASHVALUE(hh, c->entries, key, key_len, hashv, e);
    }
    if (e == NULL)
        return 0;
    cache_drop(c, e);
    c->stats.removes++;
    cache_check(c);
    return 1;
}

size_t cache_sweep(cache *c, uint64_t now_ms, size_t budget)
{
    uint64_t rel_now = cache_rel_time(c, now_ms);
    /* Never examine an entry twice in one call, however large the budget. */
    uint64_t todo = budget < c->count ? budget : c->count;
    cache_entry *e = c->sweep_cursor != NULL ? c->sweep_cursor : c->entries;
    size_t dropped = 0;

    for (; todo > 0 && e != NULL; todo--) {
        cache_entry *next = e->hh.next;

        if (cache_entry_expired(e, rel_now)) {
            c->stats.expired++;
            cache_drop(c, e);
            dropped++;
        }
        e = next != NULL ? next : c->entries; /* wrap from the tail */
    }
    c->sweep_cursor = e;
    cache_check(c);
    return dropped;
}

void cache_get_stats(const cache *c, cache_stats *out)
{
    *out = c->stats;
    out->entries = c->count;
    out->bytes = c->bytes;
}
