/* cache.c — the session store: an open-addressing index + TTL + LRU + byte budget.
 *
 * How it works
 * ------------
 * Entries: each entry is ONE allocation, a 25-byte header, then the key bytes,
 * then the value bytes:
 *
 *     [ lru_prev : 8 ][ lru_next : 8 ][ meta : 8 ][ key_len : 1 ][ key ][ value ]
 *
 * `meta` packs the expiry time into 40 bits and the value length into 24. One
 * malloc per entry (rather than a slab of fixed-size slots) keeps the
 * free_fn contract simple: every entry is wiped and handed back on its own,
 * and a 140-byte TLS 1.2 session and a 2 KB one each cost what they weigh.
 *
 * Index: a Robin Hood hash table with linear probing over an array of 64-bit
 * slots. A slot holds everything a probe needs without touching the entry:
 *
 *     bits 63..19  the entry's address / 8   (45 bits: an address < 2^48)
 *     bits 18..11  probe distance from the home slot (0..254; 255 = "255 or more")
 *     bits 10..0   tag: the low 11 bits of the key's hash
 *     0            an empty slot (no entry lives at address 0)
 *
 * The home slot is the top `bits` bits of the 64-bit hash, the tag its low 11
 * bits, so the two never overlap. A lookup walks the slots from the home
 * slot; Robin Hood keeps each cluster sorted by home slot, so it stops at the
 * first slot whose distance is smaller than its own (the key would have been
 * placed before it) or at an empty slot. It only reads the entry (one cache
 * miss) when distance and tag both match: a different key gets that far once
 * in 2048 same-home neighbours. A miss usually costs one cache line of slots
 * and no entry at all. Deletion shifts the rest of the cluster back by one
 * slot (backward shift: no tombstones, so a table never silts up).
 *
 * The distance field saturates: 255 means "at least 255", and whoever needs
 * the exact figure (a lookup or insertion that has itself probed 255 slots, a
 * backward shift decrementing it) recomputes the entry's hash. With a keyed
 * hash and a load of at most 4/5 that never happens (Robin Hood distances at
 * that load stay in the tens); it keeps the table correct, only slow, if
 * every key had the same hash (a test does exactly that).
 *
 * Packing the address into 45 bits assumes that malloc returns 8-byte
 * aligned addresses below 2^48, which holds for Linux user space on x86-64
 * and arm64 (48-bit virtual addresses; 5-level paging hands out higher ones
 * only to mmap calls that ask for them) and trivially for 32-bit targets.
 * cache_put checks every block and refuses the put (counted in `rejected`) if
 * the assumption ever fails, e.g. under pointer tagging (arm64 MTE, HWASan).
 * The alternative not taken, 16-byte slots with a whole pointer, costs 16
 * bytes an entry more at 1M entries and misses the 64-byte goal.
 *
 * Hashing: SipHash-2-4 under a random 128-bit key drawn once per cache. Keys
 * come from unauthenticated network peers (v1 has no authentication); with an
 * unkeyed hash a peer could craft keys with one home slot and turn every
 * lookup into a walk of a cluster as long as the cache. A keyed hash makes
 * such collisions unpredictable.
 *
 * Growth: the table doubles when an insertion would take it past a load of
 * 4/5, so the load stays between 2/5 and 4/5. Growth is incremental: a
 * one-shot rehash reads every entry (a cache miss and a SipHash each) and
 * page-faults the new table in, measured at ~290 ms per million entries on
 * the benchmark VM (where a page fault costs ~20 us), far beyond the
 * daemon's 1 ms p99 goal. Instead the full table becomes `old`, an empty
 * table of twice the size becomes `live`, and every put (and every sweep)
 * moves at least CACHE_MIGRATE_STEP old slots, and then the rest of their
 * cluster, to the live table, recomputing each entry's hash. Because a step
 * starts and stops at an empty old slot, every cluster is either entirely
 * migrated (its slots now empty) or entirely untouched, so a lookup or a
 * deletion in the old table works as if the migrated clusters had never
 * been there. Lookups try the live table and then the old one; insertions go
 * only to the live table; a deletion shifts back within whichever table
 * holds the entry. At 8 slots a put, a table of C slots is migrated within
 * C/8 puts, long before the live table (2C slots, holding 2/5 of C entries
 * when migration starts) can fill to 4/5 and need to grow again; should it,
 * the migration is finished first. The old table is freed as soon as it is
 * empty. The table never shrinks.
 *
 * LRU: a doubly-linked list threaded through the entries (lru_prev/lru_next,
 * 16 bytes an entry): head = least recently used, tail = most recently used.
 * A hit moves the entry to the tail, which writes the entry, its two
 * neighbours and the old tail (hot anyway): two more cache misses on a large
 * cache, overlapped by prefetching both neighbours as soon as the entry is
 * found (measured at 1M entries: a hit costs the same, within noise, with
 * and without the relink; the slot and entry misses dominate). 32-bit indices would halve the links
 * but need entries in an array (a slab), which the one-allocation-per-entry layout above rules out;
 * and a CLOCK bit (no relink on a hit) would save the two misses but give up the exact LRU order
 * that eviction promises and the tests check.
 *
 * Time: callers pass now_ms from any monotonic clock. The first put fixes an
 * epoch; expiry is stored as milliseconds since that epoch in 40 bits. An
 * entry is live while now < put time + ttl: at exactly put time + ttl it has
 * expired. A clock earlier than the epoch counts as the epoch.
 *
 * Budget: cache_entry_cost() = 25-byte header + key + value + 16 for
 * malloc's overhead (glibc: an 8-byte size header, and rounding up to 16
 * bytes, 7.5 on average) + 16 for the index (an 8-byte slot at the typical
 * load of 1/2; it is 10..20 as the load moves between 4/5 and 2/5).
 * Measured (mallinfo2) with 32-byte keys and 140..300-byte values: 51 bytes
 * an entry beyond key and value at 100k entries, 57 at 1M, against 90 and
 * 88 for the uthash table this replaced. `bytes` is the sum over live
 * entries and never exceeds max_bytes: a put evicts from the LRU head until
 * its entry fits. An evicted head that had already expired is counted as
 * expired, not evicted, so `evicted` counts only live sessions lost to the
 * budget.
 *
 * Sweep: a cursor remembers the next entry to examine, in LRU order. Each
 * call examines at most `budget` entries (and never one twice), wrapping from
 * the tail to the head. Whenever an entry leaves the list or moves to the
 * tail, the cursor first moves to its successor, so it never dangles.
 *
 * Freeing: every entry leaves through cache_release(): OPENSSL_cleanse over
 * the whole allocation, then config->free_fn (or free(3)).
 *
 * Debugging: build with -DCACHE_DEBUG to check the list, the index (every
 * slot's tag and distance, Robin Hood order, counts), the bytes and the
 * cursor after every call; O(n) per call. -DCACHE_TEST_HOOKS (the unit test
 * includes this file with it) adds a replaceable hash function to force
 * collisions.
 *
 * Known limits
 * ------------
 * - Every operation is O(1) on average (SipHash over <= 65 bytes, a probe of
 *   a few slots); cache_put may also evict several entries, and while the
 *   index grows each put migrates 8 slots and the rest of their cluster
 *   (~20 slots at load 4/5, a few us). The first puts after a doubling also
 *   fault the new table's pages in: the put that starts a doubling to 2^19
 *   slots took 0.2-0.4 ms on the benchmark VM, where uthash's one-shot
 *   expansion at 1M entries took 70-110 ms.
 * - The put that finishes a migration frees the old table, and unmapping
 *   megabytes is slow on the benchmark VM (each page-table change traps: a
 *   standalone munmap of 8 MB takes ~1 ms there): measured 1.3-1.7 ms for a
 *   4 MB table (2^19 slots, freed at ~450k entries) and 3.6-5.1 ms for 8 MB
 *   (at ~900k entries), once per doubling. Measured and not taken: releasing
 *   the table first in 16-256 KB madvise(MADV_DONTNEED) slices (the final
 *   munmap still cost 2-4 ms), and freeing it on a detached thread (the
 *   stall moved to the next puts, the two sharing 2 vCPUs). Preallocating
 *   the index for the whole budget would avoid it, at the price of holding
 *   that memory for an empty cache.
 * - While the index grows, a lookup that misses probes both tables.
 * - The index is not charged to the budget exactly (a constant 16 an entry
 *   is), and it keeps its peak size when entries go: 8 bytes a slot, at most
 *   20 an entry at the peak.
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
 */
#include "cache.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

/* What malloc adds to each block, and an entry's share of the index: both
 * charged to the budget (see the top). */
#define CACHE_ALLOC_OVERHEAD 16u
#define CACHE_INDEX_OVERHEAD 16u

#define CACHE_TIME_BITS 40u
#define CACHE_LEN_BITS  24u
#define CACHE_TIME_MAX  ((UINT64_C(1) << CACHE_TIME_BITS) - 1u)
#define CACHE_VALUE_MAX ((UINT64_C(1) << CACHE_LEN_BITS) - 1u)

/* Slot layout (see the top). */
#define CACHE_TAG_BITS   11u
#define CACHE_DIST_BITS  8u
#define CACHE_TAG_MASK   ((UINT64_C(1) << CACHE_TAG_BITS) - 1u)
#define CACHE_DIST_SAT   ((size_t)((1u << CACHE_DIST_BITS) - 1u))
#define CACHE_ADDR_SHIFT (CACHE_TAG_BITS + CACHE_DIST_BITS)
#define CACHE_ADDR_ALIGN 8u  /* low address bits dropped: 3 */
#define CACHE_ADDR_BITS  48u /* addresses must be below 2^48 */

/* Index sizes: 16 slots at first; at most 2^40 slots (2^28 on 32-bit). */
#define CACHE_INDEX_MIN_BITS 4u
#define CACHE_INDEX_MAX_BITS (sizeof(size_t) >= 8 ? 40u : 28u)
/* Old slots moved to the live table by each put while the index grows. */
#define CACHE_MIGRATE_STEP 8u

#define CACHE_NOWHERE SIZE_MAX /* "no slot" for positions */

#if defined(__GNUC__) || defined(__clang__)
#define cache_prefetch(addr) __builtin_prefetch(addr)
#else
#define cache_prefetch(addr) ((void)(addr))
#endif

typedef struct cache_entry {
    struct cache_entry *lru_prev; /* less recently used; NULL at the head */
    struct cache_entry *lru_next; /* more recently used; NULL at the tail */
    uint64_t meta;                /* expiry (ms since epoch) << 24 | value length */
    uint8_t key_len;
    uint8_t data[]; /* key bytes, then value bytes */
} cache_entry;

#define CACHE_ENTRY_HEADER offsetof(cache_entry, data)

_Static_assert(CACHE_MAX_KEY <= UINT8_MAX, "key_len is one byte");
_Static_assert(CACHE_ENTRY_HEADER == 2 * sizeof(void *) + sizeof(uint64_t) + 1,
               "the entry header must stay two links, one word and one byte");
_Static_assert(64u - CACHE_ADDR_SHIFT == CACHE_ADDR_BITS - 3u && CACHE_ADDR_ALIGN == 8u,
               "a slot holds address bits 47..3, then distance and tag");

typedef struct cache_index {
    uint64_t *slots; /* 1 << bits slots; NULL when there is no table */
    unsigned bits;
    size_t count; /* occupied slots */
} cache_index;

struct cache {
    cache_index live;   /* where lookups look first and insertions go */
    cache_index old;    /* the table being migrated away while growing */
    size_t migrate_pos; /* next old slot to migrate; always an empty slot between steps */
    cache_entry *lru_head;
    cache_entry *lru_tail;
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
#ifdef CACHE_TEST_HOOKS
    uint64_t (*test_hash)(const uint8_t *key, size_t key_len); /* replaces SipHash if set */
#endif
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

static uint64_t cache_hash(const cache *c, const uint8_t *key, size_t key_len)
{
#ifdef CACHE_TEST_HOOKS
    if (c->test_hash != NULL)
        return c->test_hash(key, key_len);
#endif
    return cache_siphash(c->sip_k0, c->sip_k1, key, key_len);
}

/* ---- entries -------------------------------------------------------- */

static const uint8_t *cache_entry_key(const cache_entry *e)
{
    return e->data;
}

static const uint8_t *cache_entry_value(const cache_entry *e)
{
    return e->data + e->key_len;
}

static size_t cache_entry_value_len(const cache_entry *e)
{
    return (size_t)(e->meta & CACHE_VALUE_MAX);
}

static uint64_t cache_entry_expiry(const cache_entry *e)
{
    return e->meta >> CACHE_LEN_BITS;
}

static uint64_t cache_entry_hash(const cache *c, const cache_entry *e)
{
    return cache_hash(c, cache_entry_key(e), e->key_len);
}

static int cache_entry_has_key(const cache_entry *e, const uint8_t *key, size_t key_len)
{
    return e->key_len == key_len && memcmp(cache_entry_key(e), key, key_len) == 0;
}

/* What is allocated for an entry: what is wiped and handed to free_fn. Never
 * less than the struct, so no compiler or sanitizer sees a short object. */
static size_t cache_alloc_size(size_t key_len, size_t value_len)
{
    size_t size = CACHE_ENTRY_HEADER + key_len + value_len;

    return size < sizeof(cache_entry) ? sizeof(cache_entry) : size;
}

static size_t cache_entry_alloc_size(const cache_entry *e)
{
    return cache_alloc_size(e->key_len, cache_entry_value_len(e));
}

size_t cache_entry_cost(size_t key_len, size_t value_len)
{
    size_t fixed = CACHE_ENTRY_HEADER + CACHE_ALLOC_OVERHEAD + CACHE_INDEX_OVERHEAD;

    /* Saturate rather than wrap, so an absurd length can never look cheap. */
    if (key_len > SIZE_MAX - fixed || value_len > SIZE_MAX - fixed - key_len)
        return SIZE_MAX;
    return fixed + key_len + value_len;
}

static size_t cache_cost_of(const cache_entry *e)
{
    return cache_entry_cost(e->key_len, cache_entry_value_len(e));
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

/* ---- slots ---------------------------------------------------------- */

/* 1 if e's address fits a slot (see the top). */
static int cache_entry_packable(const cache_entry *e)
{
    uint64_t addr = (uint64_t)(uintptr_t)e;

    return addr % CACHE_ADDR_ALIGN == 0 && addr >> CACHE_ADDR_BITS == 0;
}

static cache_entry *cache_slot_entry(uint64_t s)
{
    return (cache_entry *)(uintptr_t)((s >> CACHE_ADDR_SHIFT) * CACHE_ADDR_ALIGN);
}

static size_t cache_slot_raw_dist(uint64_t s)
{
    return (size_t)(s >> CACHE_TAG_BITS) & CACHE_DIST_SAT;
}

static uint64_t cache_slot_with_dist(uint64_t s, size_t dist)
{
    uint64_t field = dist < CACHE_DIST_SAT ? dist : CACHE_DIST_SAT;

    return (s & ~((uint64_t)CACHE_DIST_SAT << CACHE_TAG_BITS)) | field << CACHE_TAG_BITS;
}

static uint64_t cache_slot_make(const cache_entry *e, size_t dist, uint64_t hash)
{
    uint64_t s = (uint64_t)(uintptr_t)e / CACHE_ADDR_ALIGN << CACHE_ADDR_SHIFT;

    return cache_slot_with_dist(s | (hash & CACHE_TAG_MASK), dist);
}

static size_t cache_index_mask(const cache_index *t)
{
    return ((size_t)1 << t->bits) - 1u;
}

static size_t cache_home(uint64_t hash, unsigned bits)
{
    return (size_t)(hash >> (64u - bits));
}

/* The exact probe distance of slot s at pos: the stored one, or, when it is
 * saturated, recomputed from the entry's hash (rare, see the top). */
static size_t cache_slot_dist(const cache *c, const cache_index *t, size_t pos, uint64_t s)
{
    size_t dist = cache_slot_raw_dist(s);

    if (dist < CACHE_DIST_SAT)
        return dist;
    return (pos - cache_home(cache_entry_hash(c, cache_slot_entry(s)), t->bits)) &
           cache_index_mask(t);
}

/* ---- index ---------------------------------------------------------- */

/* Position of the slot holding key in t, or CACHE_NOWHERE. */
static size_t cache_index_find(const cache *c, const cache_index *t, uint64_t hash,
                               const uint8_t *key, size_t key_len)
{
    size_t mask, pos, dist;

    if (t->count == 0)
        return CACHE_NOWHERE;
    mask = cache_index_mask(t);
    pos = cache_home(hash, t->bits);
    for (dist = 0;; dist++, pos = (pos + 1) & mask) {
        uint64_t s = t->slots[pos];
        size_t slot_dist;

        if (s == 0)
            return CACHE_NOWHERE;
        slot_dist = cache_slot_raw_dist(s);
        if (slot_dist == CACHE_DIST_SAT) {
            if (dist < CACHE_DIST_SAT)
                continue; /* its home lies further back than ours */
            slot_dist = cache_slot_dist(c, t, pos, s);
        }
        /* Clusters are sorted by home slot: a slot closer to its home than
         * we are to ours belongs to a later home, and so do all after it. */
        if (slot_dist < dist)
            return CACHE_NOWHERE;
        if (slot_dist == dist && ((s ^ hash) & CACHE_TAG_MASK) == 0 &&
            cache_entry_has_key(cache_slot_entry(s), key, key_len))
            return pos;
    }
}

/* Adds e (whose key is not in t) under hash. t has a free slot. */
static void cache_index_insert(const cache *c, cache_index *t, const cache_entry *e, uint64_t hash)
{
    size_t mask = cache_index_mask(t);
    size_t pos = cache_home(hash, t->bits);
    size_t dist;
    uint64_t carry;

    /* The first slot holding a later home (or an empty one): e goes there,
     * after the entries of its own home, keeping the cluster sorted. */
    for (dist = 0;; dist++, pos = (pos + 1) & mask) {
        uint64_t s = t->slots[pos];
        size_t slot_dist;

        if (s == 0)
            break;
        slot_dist = cache_slot_raw_dist(s);
        if (slot_dist == CACHE_DIST_SAT) {
            if (dist < CACHE_DIST_SAT)
                continue;
            slot_dist = cache_slot_dist(c, t, pos, s);
        }
        if (slot_dist < dist)
            break;
    }
    /* Shift the rest of the cluster one slot on, each one step further
     * from home (a saturated distance stays saturated). */
    carry = cache_slot_make(e, dist, hash);
    for (;;) {
        uint64_t s = t->slots[pos];

        t->slots[pos] = carry;
        if (s == 0)
            break;
        carry = cache_slot_with_dist(s, cache_slot_raw_dist(s) + 1u);
        pos = (pos + 1) & mask;
    }
    t->count++;
}

/* Empties the slot at pos and shifts the rest of its cluster back by one
 * (backward-shift deletion), until an empty slot or one at its home. */
static void cache_index_delete_at(const cache *c, cache_index *t, size_t pos)
{
    size_t mask = cache_index_mask(t);
    size_t next = (pos + 1) & mask;

    for (;;) {
        uint64_t s = t->slots[next];
        size_t dist;

        if (s == 0 || cache_slot_raw_dist(s) == 0)
            break;
        dist = cache_slot_dist(c, t, next, s);
        t->slots[pos] = cache_slot_with_dist(s, dist - 1u);
        pos = next;
        next = (next + 1) & mask;
    }
    t->slots[pos] = 0;
    t->count--;
}

/* The table holding key (live first, then old) with *pos set, or NULL. */
static cache_index *cache_locate(cache *c, uint64_t hash, const uint8_t *key, size_t key_len,
                                 size_t *pos)
{
    *pos = cache_index_find(c, &c->live, hash, key, key_len);
    if (*pos != CACHE_NOWHERE)
        return &c->live;
    *pos = cache_index_find(c, &c->old, hash, key, key_len);
    if (*pos != CACHE_NOWHERE)
        return &c->old;
    return NULL;
}

/* Frees the old table once migration (or deletion) has emptied it. */
static void cache_free_old_if_empty(cache *c)
{
    if (c->old.slots != NULL && c->old.count == 0) {
        free(c->old.slots);
        memset(&c->old, 0, sizeof(c->old));
        c->migrate_pos = 0;
    }
}

/* Moves old slots to the live table: at least min_slots of them, then on to
 * the end of the cluster, so a step always stops on an empty old slot and
 * every cluster is migrated whole (see the top). */
static void cache_migrate(cache *c, size_t min_slots)
{
    cache_index *old = &c->old;
    size_t mask, done = 0;

    if (old->slots == NULL)
        return;
    mask = cache_index_mask(old);
    while (old->count > 0) {
        size_t pos = c->migrate_pos;
        uint64_t s = old->slots[pos];
        uint64_t ahead = old->slots[(pos + 4) & mask];

        if (s == 0 && done >= min_slots)
            break;
        if (ahead != 0)
            cache_prefetch(cache_slot_entry(ahead)); /* its key is hashed soon */
        if (s != 0) {
            const cache_entry *e = cache_slot_entry(s);

            old->slots[pos] = 0;
            old->count--;
            cache_index_insert(c, &c->live, e, cache_entry_hash(c, e));
        }
        c->migrate_pos = (pos + 1) & mask;
        done++;
    }
    cache_free_old_if_empty(c);
}

/* Makes room for one more slot in the live table, growing it if needed.
 * Returns 0, or -1 when the index is full and cannot grow (no memory). */
static int cache_index_reserve(cache *c)
{
    cache_index *live = &c->live;
    size_t cap, pos;
    uint64_t *slots;

    if (live->slots == NULL) {
        live->slots = calloc((size_t)1 << CACHE_INDEX_MIN_BITS, sizeof(uint64_t));
        if (live->slots == NULL)
            return -1;
        live->bits = CACHE_INDEX_MIN_BITS;
        return 0;
    }
    cache_migrate(c, CACHE_MIGRATE_STEP);
    cap = (size_t)1 << live->bits;
    if ((live->count + 1) * 5 <= cap * 4) /* load stays <= 4/5 */
        return 0;

    /* Grow. Migration keeps ahead of the live table (see the top), so the
     * old table is normally gone already; if not, finish it first. */
    cache_migrate(c, SIZE_MAX);
    slots = live->bits < CACHE_INDEX_MAX_BITS ? calloc(cap * 2, sizeof(uint64_t)) : NULL;
    if (slots == NULL)
        return live->count + 1 < cap - cap / 8 ? 0 : -1; /* go on up to 7/8 full */
    c->old = *live;
    live->slots = slots;
    live->bits++;
    live->count = 0;
    /* Start migrating at an empty slot: a cluster boundary. */
    for (pos = 0; c->old.slots[pos] != 0; pos++)
        ;
    c->migrate_pos = pos;
    cache_migrate(c, CACHE_MIGRATE_STEP);
    return 0;
}

/* ---- LRU list and entry removal ------------------------------------- */

static void cache_lru_unlink(cache *c, cache_entry *e)
{
    if (c->sweep_cursor == e)
        c->sweep_cursor = e->lru_next;
    if (e->lru_prev != NULL)
        e->lru_prev->lru_next = e->lru_next;
    else
        c->lru_head = e->lru_next;
    if (e->lru_next != NULL)
        e->lru_next->lru_prev = e->lru_prev;
    else
        c->lru_tail = e->lru_prev;
}

static void cache_lru_append(cache *c, cache_entry *e)
{
    e->lru_prev = c->lru_tail;
    e->lru_next = NULL;
    if (c->lru_tail != NULL)
        c->lru_tail->lru_next = e;
    else
        c->lru_head = e;
    c->lru_tail = e;
}

/* Marks e most recently used. Touches e, its neighbours and the tail only;
 * the index does not change, so this cannot allocate or fail. */
static void cache_touch(cache *c, cache_entry *e)
{
    if (e == c->lru_tail)
        return;
    cache_lru_unlink(c, e);
    cache_lru_append(c, e);
}

/* Takes e (found in t at pos) out of the index, the list and the
 * accounting, and frees it. The one removal path, so the sweep cursor is
 * fixed up here for every caller. */
static void cache_drop_at(cache *c, cache_index *t, size_t pos, cache_entry *e)
{
    cache_index_delete_at(c, t, pos);
    if (t == &c->old)
        cache_free_old_if_empty(c);
    cache_lru_unlink(c, e);
    c->bytes -= cache_cost_of(e);
    c->count--;
    cache_release(c, e);
}

/* Drops e when only the entry is known (LRU eviction, the sweep): its slot
 * is found again through its key. */
static void cache_drop(cache *c, cache_entry *e)
{
    size_t pos = CACHE_NOWHERE;
    cache_index *t = cache_locate(c, cache_entry_hash(c, e), cache_entry_key(e), e->key_len, &pos);

    /* Every listed entry is indexed (cache_check verifies it in debug
     * builds); the test keeps a broken invariant from becoming a crash. */
    if (t != NULL)
        cache_drop_at(c, t, pos, e);
}

#if defined(CACHE_DEBUG) || defined(CACHE_TEST_HOOKS)
/* Debug and test builds only: walks everything, O(n) with a hash per entry.
 * Returns NULL, or what is wrong. */
static const char *cache_invariant_error(const cache *c)
{
    const cache_index *tables[2] = {&c->live, &c->old};
    const cache_entry *e, *prev = NULL;
    uint64_t n = 0;
    size_t bytes = 0;
    int cursor_seen = c->sweep_cursor == NULL;
    unsigned i;

    for (e = c->lru_head; e != NULL; prev = e, e = e->lru_next) {
        uint64_t hash = cache_entry_hash(c, e);
        size_t live_pos = cache_index_find(c, &c->live, hash, cache_entry_key(e), e->key_len);
        size_t old_pos = cache_index_find(c, &c->old, hash, cache_entry_key(e), e->key_len);

        if (e->lru_prev != prev)
            return "LRU list: broken back link";
        if ((live_pos == CACHE_NOWHERE) == (old_pos == CACHE_NOWHERE))
            return "index: a listed entry is in neither table, or in both";
        if (live_pos != CACHE_NOWHERE ? cache_slot_entry(c->live.slots[live_pos]) != e
                                      : cache_slot_entry(c->old.slots[old_pos]) != e)
            return "index: the key's slot holds another entry";
        bytes += cache_cost_of(e);
        n++;
        if (e == c->sweep_cursor)
            cursor_seen = 1;
    }
    if (c->lru_tail != prev)
        return "LRU list: wrong tail";
    if (n != c->count || c->live.count + c->old.count != n)
        return "counts: list, tables and count disagree";
    if (bytes != c->bytes || bytes > c->max_bytes)
        return "bytes: wrong sum, or over the budget";
    if (!cursor_seen)
        return "sweep cursor: not on a listed entry";
    for (i = 0; i < 2; i++) {
        const cache_index *t = tables[i];
        size_t cap, pos, occupied = 0;

        if (t->slots == NULL)
            continue;
        cap = (size_t)1 << t->bits;
        for (pos = 0; pos < cap; pos++) {
            uint64_t s = t->slots[pos];
            uint64_t before = t->slots[(pos - 1) & cache_index_mask(t)];
            uint64_t hash;
            size_t dist;

            if (s == 0)
                continue;
            occupied++;
            hash = cache_entry_hash(c, cache_slot_entry(s));
            dist = (pos - cache_home(hash, t->bits)) & cache_index_mask(t);
            if ((s & CACHE_TAG_MASK) != (hash & CACHE_TAG_MASK))
                return "slot: wrong tag";
            if (cache_slot_raw_dist(s) != (dist < CACHE_DIST_SAT ? dist : CACHE_DIST_SAT))
                return "slot: wrong distance";
            if (dist > 0 && before == 0)
                return "slot: an empty slot between home and entry";
            if (before != 0 &&
                dist > cache_slot_dist(c, t, (pos - 1) & cache_index_mask(t), before) + 1u)
                return "slot: cluster not sorted by home (Robin Hood order)";
        }
        if (occupied != t->count)
            return "table: count disagrees with its slots";
        if (occupied >= cap)
            return "table: no empty slot";
    }
    if (c->old.slots != NULL && (c->old.count == 0 || c->old.slots[c->migrate_pos] != 0))
        return "migration: empty old table kept, or cursor not on an empty slot";
    return NULL;
}
#endif

#ifdef CACHE_DEBUG
#include <assert.h>
static void cache_check(const cache *c)
{
    const char *error = cache_invariant_error(c);

    assert(error == NULL);
    (void)error;
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
    /* The list reaches every entry: no per-entry index work on the way out. */
    for (e = c->lru_head; e != NULL; e = next) {
        next = e->lru_next;
        cache_release(c, e);
    }
    free(c->live.slots);
    free(c->old.slots);
    OPENSSL_cleanse(c, sizeof(*c)); /* the SipHash key */
    free(c);
}

int cache_put(cache *c, const uint8_t *key, size_t key_len, const uint8_t *value, size_t value_len,
              uint64_t ttl_ms, uint64_t now_ms)
{
    cache_entry *fresh = NULL;
    cache_index *t;
    uint64_t rel_now, expiry, hash;
    size_t cost, pos;

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

    fresh = malloc(cache_alloc_size(key_len, value_len));
    if (fresh == NULL)
        goto fail;
    fresh->meta = (expiry << CACHE_LEN_BITS) | (uint64_t)value_len;
    fresh->key_len = (uint8_t)key_len;
    memcpy(fresh->data, key, key_len);
    memcpy(fresh->data + key_len, value, value_len);
    if (!cache_entry_packable(fresh))
        goto fail; /* an address a slot cannot hold (see the top) */

    hash = cache_hash(c, key, key_len);
    t = cache_locate(c, hash, key, key_len, &pos);
    if (t != NULL) /* replaced: counted as the put, nothing else */
        cache_drop_at(c, t, pos, cache_slot_entry(t->slots[pos]));

    /* cost <= max_bytes, so this stops at the latest when the cache is
     * empty; written as a subtraction so it cannot overflow. */
    while (c->lru_head != NULL && c->bytes > c->max_bytes - cost) {
        cache_entry *victim = c->lru_head;

        if (cache_entry_expired(victim, rel_now))
            c->stats.expired++;
        else
            c->stats.evicted++;
        cache_drop(c, victim);
    }

    if (cache_index_reserve(c) != 0)
        goto fail;
    cache_index_insert(c, &c->live, fresh, hash);
    cache_lru_append(c, fresh);
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
    cache_index *t = NULL;
    cache_entry *e;
    size_t pos = CACHE_NOWHERE;

    c->stats.gets++;
    if (key != NULL && key_len != 0 && key_len <= CACHE_MAX_KEY)
        t = cache_locate(c, cache_hash(c, key, key_len), key, key_len, &pos);
    if (t == NULL)
        goto miss;
    e = cache_slot_entry(t->slots[pos]);
    /* Both neighbours are written by cache_touch: start both misses now. */
    cache_prefetch(e->lru_prev);
    cache_prefetch(e->lru_next);
    if (cache_entry_expired(e, cache_rel_time(c, now_ms))) {
        c->stats.expired++;
        cache_drop_at(c, t, pos, e);
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
    cache_index *t = NULL;
    size_t pos = CACHE_NOWHERE;

    if (key != NULL && key_len != 0 && key_len <= CACHE_MAX_KEY)
        t = cache_locate(c, cache_hash(c, key, key_len), key, key_len, &pos);
    if (t == NULL)
        return 0;
    cache_drop_at(c, t, pos, cache_slot_entry(t->slots[pos]));
    c->stats.removes++;
    cache_check(c);
    return 1;
}

size_t cache_sweep(cache *c, uint64_t now_ms, size_t budget)
{
    uint64_t rel_now = cache_rel_time(c, now_ms);
    /* Never examine an entry twice in one call, however large the budget. */
    uint64_t todo = budget < c->count ? budget : c->count;
    cache_entry *e = c->sweep_cursor != NULL ? c->sweep_cursor : c->lru_head;
    size_t dropped = 0;

    for (; todo > 0 && e != NULL; todo--) {
        cache_entry *next = e->lru_next;

        if (cache_entry_expired(e, rel_now)) {
            c->stats.expired++;
            cache_drop(c, e);
            dropped++;
        }
        e = next != NULL ? next : c->lru_head; /* wrap from the tail */
    }
    c->sweep_cursor = e;
    /* The daemon sweeps on a timer: let it carry a growing index along, so
     * the old table goes even when no puts come. */
    cache_migrate(c, budget);
    cache_check(c);
    return dropped;
}

void cache_get_stats(const cache *c, cache_stats *out)
{
    *out = c->stats;
    out->entries = c->count;
    out->bytes = c->bytes;
}
