/* check_cache_index.c — unit tests of the session store's hash index
 * (sessiond/cache.c).
 *
 * The hooks let these tests replace the keyed hash (to force collisions),
 * fix the SipHash key (so a run is repeatable), look at the index, and run
 * cache.c's own invariant check (every listed entry indexed under its key,
 * every slot's tag and probe distance right, clusters in Robin Hood order,
 * counts, bytes, the sweep cursor).
 *
 * What is covered: SipHash-2-4 against the reference vectors; growth
 * through a dozen doublings with every key looked up (and the invariants
 * checked) as each incremental migration starts and ends; removals,
 * expiries, evictions and sweeps while a migration is half done; 300k
 * random puts, removes and gets over a growing key space (backward-shift
 * deletion, no lost or resurrected keys); remove/put cycles at a fixed
 * size; forced hash collisions (every key on one hash, which also saturates
 * the probe-distance field; one tag on many homes; many tags on one home; a
 * few homes); tag collisions arising naturally among 100k keys; and the
 * per-entry overhead by the allocator's own account.
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

#include <check.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache_fixture.h"

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
    uint8_t key[CF_KEY_LEN];
    uint64_t hash = cache_hash(c, cf_key_of(id, key), CF_KEY_LEN);

    if (cache_index_find(c, &c->live, hash, key, CF_KEY_LEN) != CACHE_NOWHERE)
        return 1;
    if (cache_index_find(c, &c->old, hash, key, CF_KEY_LEN) != CACHE_NOWHERE)
        return 2;
    return 0;
}

static int migrating(const cache *c)
{
    return c->old.slots != NULL;
}

/* Forced hashes for the collision tests, from the id cf_key_of() writes into
 * the key's first 4 bytes. */
static uint32_t hook_id(const uint8_t *key, size_t key_len)
{
    CF_FAST_EQ(key_len, CF_KEY_LEN);
    return (uint32_t)key[0] << 24 | (uint32_t)key[1] << 16 | (uint32_t)key[2] << 8 | key[3];
}

static uint64_t hook_mix(uint64_t x)
{
    return cf_rnd_next(&x);
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
        if (!cf_has_id(c, id, value_len, CF_T0))
            ck_abort_msg("id %u lost", id);
    for (id = end; id < end + 50; id++)
        CF_FAST_ASSERT(!cf_has_id(c, id, value_len, CF_T0));
}

/* A dozen doublings from 16 slots: at the start, the middle and the end of
 * each incremental migration, every key is looked up (some then sit in the
 * old table, some in the live one). */
START_TEST(test_index_growth)
{
    const uint32_t n = 40000;
    cf_free_log log;
    cache *c = cf_new_cache((size_t)1 << 30, &log);
    unsigned growths = 0, split_seen = 0;
    size_t half = 0;
    cache_stats st;
    uint32_t id;

    for (id = 0; id < n; id++) {
        int was_migrating = migrating(c);
        unsigned bits = c->live.bits;

        CF_FAST_EQ(cf_put_id(c, id, 24, CF_LONG, CF_T0), 0);
        if (c->live.bits != bits && bits != 0) {
            uint32_t in_old = 0, in_live = 0, k;

            growths++;
            CF_FAST_EQ(c->live.bits, bits + 1);
            for (k = 0; k <= id; k++) {
                int where = table_of(c, k);

                CF_FAST_ASSERT(where != 0);
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
    st = cf_stats_of(c);
    CF_FAST_EQ(st.puts, n);
    CF_FAST_EQ(st.entries, n);
    CF_FAST_EQ(st.bytes, (size_t)n * cache_entry_cost(CF_KEY_LEN, 24));
    CF_FAST_EQ(st.removes + st.expired + st.evicted + st.rejected, 0);
    cache_free(c);
    CF_FAST_EQ(log.calls, n);
    CF_FAST_EQ(log.dirty, 0);
}
END_TEST

/* Removals, expiries (through get and the sweep), evictions and
 * replacements of entries that still sit in the old table while a migration
 * is half done. */
START_TEST(test_changes_while_migrating)
{
    const size_t cost = cache_entry_cost(CF_KEY_LEN, 40);
    const uint32_t n = 1024 * 4 / 5; /* the put that grows a 1024-slot table */
    cf_free_log log;
    cache *c = cf_new_cache((size_t)(n + 1) * cost, &log);
    uint32_t id, next_id = n + 1, in_old_hits = 0;
    size_t dropped = 0, puts;
    int round;

    fix_hash_key(c);
    /* Every 5th id lives 100 ms, the rest long. */
    for (id = 0; id <= n; id++)
        CF_FAST_EQ(cf_put_id(c, id, 40, id % 5 == 0 ? 100 : CF_LONG, CF_T0), 0);
    CF_FAST_ASSERT(migrating(c));
    CF_FAST_EQ(c->old.bits, 10);
    ck_assert_uint_gt(c->old.count, n / 2);
    assert_invariants(c);
    for (round = 0; migrating(c) && round < 200; round++) {
        uint32_t victim = (uint32_t)(round * 7 + 1) % n;

        in_old_hits += table_of(c, victim) == 2;
        switch (round % 5) {
        case 0: /* remove */
            cf_remove_id(c, victim);
            CF_FAST_EQ(table_of(c, victim), 0);
            break;
        case 1: /* expire through get (ids that are multiples of 5) */
            victim = victim / 5 * 5;
            in_old_hits += table_of(c, victim) == 2;
            CF_FAST_ASSERT(!cf_has_id(c, victim, 40, CF_T0 + 100));
            CF_FAST_EQ(table_of(c, victim), 0);
            break;
        case 2: /* expire through a small sweep */
            dropped += cache_sweep(c, CF_T0 + 100, 3);
            break;
        case 3: /* replace (not the short-lived ids case 1 expects to expire) */
            if (victim % 5 != 0 && table_of(c, victim) != 0) {
                CF_FAST_EQ(cf_put_id(c, victim, 40, CF_LONG, CF_T0), 0);
                CF_FAST_EQ(table_of(c, victim), 1);
                CF_FAST_ASSERT(cf_has_id(c, victim, 40, CF_T0 + 100));
            }
            break;
        default: { /* new entries, until the budget evicts a live LRU head */
            uint64_t evicted = cf_stats_of(c).evicted;

            while (cf_stats_of(c).evicted == evicted) {
                uint32_t head = hook_id(cache_entry_key(c->lru_head), CF_KEY_LEN);

                in_old_hits += table_of(c, head) == 2; /* the head goes next */
                CF_FAST_EQ(cf_put_id(c, next_id, 40, CF_LONG, CF_T0 + 100), 0);
                CF_FAST_ASSERT(cf_has_id(c, next_id, 40, CF_T0 + 100));
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
    ck_assert_uint_gt(cf_stats_of(c).evicted, 0);
    ck_assert_uint_gt(cf_stats_of(c).removes, 0);
    /* Whatever is listed is found, and only that. */
    cache_sweep(c, CF_T0 + 100, SIZE_MAX);
    CF_FAST_ASSERT(!migrating(c));
    assert_invariants(c);
    for (id = 0; id < next_id; id++)
        if (table_of(c, id) != 0)
            CF_FAST_ASSERT(cf_has_id(c, id, 40, CF_T0 + 100));
    puts = cf_stats_of(c).puts;
    cache_free(c);
    CF_FAST_EQ(log.calls, puts);
    CF_FAST_EQ(log.dirty, 0);
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
    uint8_t key[CF_KEY_LEN], value[64], expect[64];
    uint32_t id, limit = 500;
    unsigned growths = 0, old_removes = 0, full_checks = 0;
    size_t live_count = 0, puts;
    cf_free_log log;
    cache *c = cf_new_cache((size_t)1 << 30, &log);
    int op;

    memset(present, 0, sizeof(present));
    memset(version, 0, sizeof(version));
    memset(length, 0, sizeof(length));
    for (op = 0; op < CHURN_OPS; op++) {
        uint64_t r = cf_rnd_next(&rng) % 100;
        int was_migrating = migrating(c);

        limit = 500 + (uint32_t)op / 8;
        id = (uint32_t)(cf_rnd_next(&rng) % limit);
        cf_key_of(id, key);
        if (r < 45) {
            size_t len = 1 + cf_rnd_next(&rng) % sizeof(value);

            version[id]++;
            cf_fill_value(value, len, id * 1000u + version[id]);
            CF_FAST_EQ(cache_put(c, key, CF_KEY_LEN, value, len, CF_LONG, CF_T0), 0);
            live_count += !present[id];
            present[id] = 1;
            length[id] = (uint8_t)len;
        } else if (r < 80) {
            old_removes += present[id] && table_of(c, id) == 2;
            CF_FAST_EQ(cache_remove(c, key, CF_KEY_LEN), present[id]);
            live_count -= present[id];
            present[id] = 0;
        } else {
            size_t got_len = 0;
            const uint8_t *got = cache_get(c, key, CF_KEY_LEN, CF_T0, &got_len);

            CF_FAST_EQ(got != NULL, present[id]);
            if (got != NULL) {
                CF_FAST_EQ(got_len, length[id]);
                cf_fill_value(expect, got_len, id * 1000u + version[id]);
                CF_FAST_ASSERT(memcmp(got, expect, got_len) == 0);
            }
        }
        growths += !was_migrating && migrating(c);
        CF_FAST_EQ(cf_stats_of(c).entries, live_count);
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
        CF_FAST_EQ(cf_remove_id(c, id), present[id]);
    CF_FAST_EQ(cf_stats_of(c).entries, 0);
    CF_FAST_EQ(c->live.count + c->old.count, 0);
    assert_invariants(c);
    CF_FAST_EQ(cf_put_id(c, 1, 10, CF_LONG, CF_T0), 0);
    CF_FAST_ASSERT(cf_has_id(c, 1, 10, CF_T0));
    puts = cf_stats_of(c).puts;
    cache_free(c);
    CF_FAST_EQ(log.calls, puts);
    CF_FAST_EQ(log.dirty, 0);
}
END_TEST

/* A fixed population, half of it removed and put back 40 times: the table
 * no longer grows, so this is backward-shift deletion alone. */
START_TEST(test_remove_put_cycles)
{
    const uint32_t n = 5000;
    uint64_t rng = 5;
    cache *c = cf_new_cache((size_t)1 << 30, NULL);
    unsigned bits;
    uint32_t id;
    int cycle;

    for (id = 0; id < n; id++)
        CF_FAST_EQ(cf_put_id(c, id, 30, CF_LONG, CF_T0), 0);
    cache_sweep(c, CF_T0, SIZE_MAX); /* finishes any migration */
    bits = c->live.bits;
    for (cycle = 0; cycle < 40; cycle++) {
        static uint8_t gone[5000];

        memset(gone, 0, sizeof(gone));
        for (id = 0; id < n / 2; id++) {
            uint32_t victim = (uint32_t)(cf_rnd_next(&rng) % n);

            CF_FAST_EQ(cf_remove_id(c, victim), !gone[victim]);
            gone[victim] = 1;
        }
        for (id = 0; id < n; id++)
            CF_FAST_EQ(cf_has_id(c, id, 30, CF_T0), !gone[id]);
        for (id = 0; id < n; id++)
            if (gone[id])
                CF_FAST_EQ(cf_put_id(c, id, 30, CF_LONG, CF_T0), 0);
        if (cycle % 8 == 0)
            assert_invariants(c);
    }
    verify_ids(c, 0, n, 30);
    CF_FAST_EQ(c->live.bits, bits);
    CF_FAST_ASSERT(!migrating(c));
    CF_FAST_EQ(c->live.count, n);
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
    cf_free_log log;
    cache *c = cf_new_cache((size_t)1 << 30, &log);
    static uint8_t gone[600];
    size_t saturated = 0, puts, pos;
    uint32_t id, k;

    c->test_hash = collision_hashes[_i];
    memset(gone, 0, sizeof(gone));
    for (id = 0; id < n; id++) {
        CF_FAST_EQ(cf_put_id(c, id, 20 + id % 50, CF_LONG, CF_T0), 0);
        if (id % 100 == 99)
            assert_invariants(c);
    }
    for (id = 0; id < n; id++)
        CF_FAST_ASSERT(cf_has_id(c, id, 20 + id % 50, CF_T0));
    for (id = n; id < n + 50; id++)
        CF_FAST_ASSERT(!cf_has_id(c, id, 20, CF_T0));
    for (pos = 0; pos < ((size_t)1 << c->live.bits); pos++)
        saturated +=
            c->live.slots[pos] != 0 && cache_slot_raw_dist(c->live.slots[pos]) == CACHE_DIST_SAT;
    if (collision_hashes[_i] == hash_all_equal || collision_hashes[_i] == hash_one_home)
        ck_assert_uint_gt(saturated, n / 4);

    for (k = 0; k < n / 2; k++) {
        id = (uint32_t)(cf_rnd_next(&rng) % n);
        CF_FAST_EQ(cf_remove_id(c, id), !gone[id]);
        gone[id] = 1;
        if (k % 50 == 0)
            assert_invariants(c);
    }
    for (id = 0; id < n; id++)
        CF_FAST_EQ(cf_has_id(c, id, 20 + id % 50, CF_T0), !gone[id]);
    /* Back in, odd ones for 100 ms, with other lengths. */
    for (id = 0; id < n; id++)
        if (gone[id])
            CF_FAST_EQ(cf_put_id(c, id, 10 + id % 30, id % 2 ? 100 : CF_LONG, CF_T0), 0);
    assert_invariants(c);
    for (id = 0; id < n; id++)
        CF_FAST_ASSERT(cf_has_id(c, id, gone[id] ? 10 + id % 30 : 20 + id % 50, CF_T0));
    cache_sweep(c, CF_T0 + 100, SIZE_MAX); /* drops entries found through their key */
    assert_invariants(c);
    for (id = 0; id < n; id++)
        CF_FAST_EQ(cf_has_id(c, id, gone[id] ? 10 + id % 30 : 20 + id % 50, CF_T0 + 100),
                   !gone[id] || id % 2 == 0);
    puts = cf_stats_of(c).puts;
    cache_free(c);
    CF_FAST_EQ(log.calls, puts);
    CF_FAST_EQ(log.dirty, 0);
}
END_TEST

/* With the real hash, 100k keys: some neighbours share home and tag (only
 * the key comparison tells them apart), and every lookup still finds its
 * own entry, and 100k absent keys find nothing. */
START_TEST(test_natural_tag_collisions)
{
    const uint32_t n = 100000;
    cache *c = cf_new_cache((size_t)1 << 30, NULL);
    size_t mask, pos, twins = 0;
    uint32_t id;

    fix_hash_key(c);
    for (id = 0; id < n; id++)
        CF_FAST_EQ(cf_put_id(c, id, 8, CF_LONG, CF_T0), 0);
    cache_sweep(c, CF_T0, SIZE_MAX); /* finishes any migration */
    CF_FAST_ASSERT(!migrating(c));
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
        CF_FAST_ASSERT(cf_has_id(c, id, 8, CF_T0));
    for (id = n; id < 2 * n; id++)
        CF_FAST_ASSERT(!cf_has_id(c, id, 8, CF_T0));
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
    const size_t charged = cache_entry_cost(CF_KEY_LEN, 0) - CF_KEY_LEN;
    cache *c = cf_new_cache((size_t)1 << 34, NULL);
    size_t heap = 0, payload = 0, index, per_entry;
    const cache_entry *e;
    uint32_t id;

    for (id = 0; id < n; id++)
        CF_FAST_EQ(cf_put_id(c, id, 140 + id % 161, CF_LONG, CF_T0), 0);
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

static Suite *cache_index_suite(void)
{
    Suite *s = suite_create("cache_index");
    TCase *index = tcase_create("index");

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
    SRunner *sr = srunner_create(cache_index_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
