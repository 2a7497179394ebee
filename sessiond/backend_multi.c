/* backend_multi.c — several independent backend groups behind one backend,
 * keys placed by rendezvous hashing.
 *
 * Rendezvous (highest random weight) hashing: every group gets a score for
 * the key, score(group, key) = SipHash-2-4 keyed by the group's name, over
 * the key; the highest score holds the key. Each group's 128-bit SipHash key
 * is derived once, at creation, from its name: two SipHash-2-4 values of the
 * name under two fixed public constants. So a score is a 64-bit hash of
 * (group name, key), with the name length-unambiguous (no "ab"+"c" vs
 * "a"+"bc"), and computing it costs one pass over the key, not over
 * name + key. Properties that follow, and that the tests check:
 *   - Placement depends on the set of names and the key only: the order of
 *     --backend flags does not matter, and every node agrees.
 *   - Removing a group moves exactly the keys it held (every other key's
 *     winner is still in the set and still wins); adding one moves only the
 *     keys it wins, ~1/N of them. A ring (consistent hashing) gives the same
 *     with virtual nodes and a sorted table; rendezvous needs neither, at
 *     the price of N hashes per operation (linear in N: fine for the tens of
 *     groups a fleet has; hundreds would want a two-level "skeleton").
 *   - Equal scores (one chance in 2^64 per pair) go to the smaller name, so
 *     even a tie does not depend on the order.
 *
 * Why SipHash with PUBLIC constants: placement only has to spread keys
 * evenly and be computable by anyone with the names (operators, tools,
 * tests: backend_multi_score), not to be secret. Keys are session IDs (or
 * ticket-derived names) that the TLS servers generate at random, so an
 * attacker cannot pick stored keys to load one group; a client can offer
 * made-up IDs for lookup, but those are single reads routed to one group,
 * no worse than the same lookups on one group. Inside Redis the names are
 * an HMAC under the cluster key anyway (backend_redis.c). Keying with the
 * cluster key was the alternative; it would tie placement to the key (a key
 * change would reshuffle every session) and make it uncomputable offline.
 *
 * Why a local SipHash and not OpenSSL's EVP_MAC "SIPHASH" (same function,
 * no new dependency either way): measured on the 2-vCPU bench VM, 33-byte
 * key, 64-bit output, per hash: local ~25 ns; EVP_MAC_CTX_new + init +
 * update + final ~100 ns; dup of a keyed context + update + final ~72 ns;
 * re-init of one kept context ~45 ns (and N kept contexts to manage). With
 * N hashes per operation the local code is 2-4x cheaper, and 4 groups cost
 * ~0.1 us per operation, next to a Redis round trip of tens of us. The unit
 * test checks the local code against OpenSSL's on every length 0..80.
 *
 * Known limit: a group's identity is its target string exactly as written,
 * so every node must spell it the same way. "redis://10.0.0.1:6379" and
 * "redis://host-a:6379" are different groups, and a sentinel target names
 * its sentinel list: adding a sentinel to "sentinel://s1,s2/m" renames that
 * group and moves about 2/N of all keys (its own, and others' it now wins).
 * A move costs one miss per moved session, nothing more. Naming sentinel
 * groups by master name alone would avoid that, but a master name alone does
 * not say which deployment it is (two pools may both call theirs
 * "sessions"), and the target as written is what operators see and type.
 *
 * Operations are forwarded unchanged (completion, argument and all) to the
 * chosen group, so the backend contract (exactly one completion, sync or
 * later) holds because each group keeps it. Stats are summed over groups,
 * except `up`, which is 1 only if every group is up
 * (backend_multi_groups_up counts them). Invalidations from any group are
 * forwarded to the multi's own hook, read at call time, so the owner may set
 * it after creation. Not thread-safe, like every backend.
 */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_multi.h"

#define MULTI_HASH_KEY_LEN 16

typedef struct multi_group {
    backend *b;
    char *name;
    uint8_t hash_key[MULTI_HASH_KEY_LEN]; /* SipHash key derived from name */
} multi_group;

typedef struct backend_multi {
    backend base; /* first: a backend_multi is a backend */
    size_t n;
    multi_group *groups;
} backend_multi;

/* Fixed, public: they only make the derived per-group keys differ from a
 * plain SipHash of the name under some other application's constant. */
static const uint8_t multi_derive_k0[MULTI_HASH_KEY_LEN] = "sessiond-hrw-k0.";
static const uint8_t multi_derive_k1[MULTI_HASH_KEY_LEN] = "sessiond-hrw-k1.";

static const backend_ops multi_ops;

/* ---- SipHash-2-4 (Aumasson & Bernstein, 2012), from the paper's
 * description: 2 compression rounds per 8-byte word, 4 finalisation rounds,
 * 64-bit output. ---- */

static uint64_t sip_rotl(uint64_t x, unsigned b)
{
    return (x << b) | (x >> (64 - b));
}

/* memcpy + le64toh compiles to one load on little-endian machines (a byte
 * loop did not, and cost ~2x the whole hash). */
static uint64_t sip_load_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return le64toh(v);
}

typedef struct sip_state {
    uint64_t v0, v1, v2, v3;
} sip_state;

static void sip_round(sip_state *s)
{
    s->v0 += s->v1;
    s->v1 = sip_rotl(s->v1, 13);
    s->v1 ^= s->v0;
    s->v0 = sip_rotl(s->v0, 32);
    s->v2 += s->v3;
    s->v3 = sip_rotl(s->v3, 16);
    s->v3 ^= s->v2;
    s->v0 += s->v3;
    s->v3 = sip_rotl(s->v3, 21);
    s->v3 ^= s->v0;
    s->v2 += s->v1;
    s->v1 = sip_rotl(s->v1, 17);
    s->v1 ^= s->v2;
    s->v2 = sip_rotl(s->v2, 32);
}

static void sip_absorb(sip_state *s, uint64_t m)
{
    s->v3 ^= m;
    sip_round(s);
    sip_round(s);
    s->v0 ^= m;
}

uint64_t backend_multi_siphash(const uint8_t key[16], const uint8_t *data, size_t len)
{
    uint64_t k0 = sip_load_le64(key);
    uint64_t k1 = sip_load_le64(key + 8);
    sip_state s = {
        .v0 = k0 ^ 0x736f6d6570736575ULL,
        .v1 = k1 ^ 0x646f72616e646f6dULL,
        .v2 = k0 ^ 0x6c7967656e657261ULL,
        .v3 = k1 ^ 0x7465646279746573ULL,
    };
    size_t whole = len - len % 8;
    for (size_t i = 0; i < whole; i += 8)
        sip_absorb(&s, sip_load_le64(data + i));
    /* Last word: the remaining 0..7 bytes, little-endian, and len mod 256
     * in the top byte. */
    uint64_t last = (uint64_t)(len & 0xff) << 56;
    for (size_t i = 0; i < len % 8; i++)
        last |= (uint64_t)data[whole + i] << (8 * i);
    sip_absorb(&s, last);
    s.v2 ^= 0xff;
    for (int i = 0; i < 4; i++)
        sip_round(&s);
    return s.v0 ^ s.v1 ^ s.v2 ^ s.v3;
}

/* ---- placement ---- */

static void multi_derive_key(const char *name, uint8_t out[MULTI_HASH_KEY_LEN])
{
    size_t len = strlen(name);
    uint64_t k0 = backend_multi_siphash(multi_derive_k0, (const uint8_t *)name, len);
    uint64_t k1 = backend_multi_siphash(multi_derive_k1, (const uint8_t *)name, len);
    for (int i = 0; i < 8; i++) {
        out[i] = (uint8_t)(k0 >> (8 * i));
        out[8 + i] = (uint8_t)(k1 >> (8 * i));
    }
}

uint64_t backend_multi_score(const char *group_name, const uint8_t *key, size_t key_len)
{
    uint8_t hash_key[MULTI_HASH_KEY_LEN];
    if (!group_name || (!key && key_len > 0))
        return 0;
    multi_derive_key(group_name, hash_key);
    return backend_multi_siphash(hash_key, key, key_len);
}

static int multi_key_ok(const uint8_t *key, size_t key_len)
{
    return key != NULL && key_len > 0 && key_len <= BACKEND_MAX_KEY;
}

/* The winning group's index. A bad key goes to group 0, whose own argument
 * check completes it ERROR and counts it. */
static size_t multi_pick(const backend_multi *m, const uint8_t *key, size_t key_len)
{
    if (m->n == 1 || !multi_key_ok(key, key_len))
        return 0;
    size_t best = 0;
    uint64_t best_score = backend_multi_siphash(m->groups[0].hash_key, key, key_len);
    for (size_t i = 1; i < m->n; i++) {
        uint64_t score = backend_multi_siphash(m->groups[i].hash_key, key, key_len);
        if (score > best_score ||
            (score == best_score && strcmp(m->groups[i].name, m->groups[best].name) < 0)) {
            best = i;
            best_score = score;
        }
    }
    return best;
}

static backend *multi_group_for(backend *b, const uint8_t *key, size_t key_len)
{
    const backend_multi *m = (const backend_multi *)b;
    return m->groups[multi_pick(m, key, key_len)].b;
}

/* ---- the vtable: straight forwards ---- */

static void multi_get(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                      void *arg)
{
    backend_get(multi_group_for(b, key, key_len), key, key_len, done, arg);
}

static void multi_put(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                      size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    backend_put(multi_group_for(b, key, key_len), key, key_len, value, value_len, ttl_ms, done,
                arg);
}

static void multi_del(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                      void *arg)
{
    backend_del(multi_group_for(b, key, key_len), key, key_len, done, arg);
}

static void multi_take(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                       void *arg)
{
    backend_take(multi_group_for(b, key, key_len), key, key_len, done, arg);
}

static void multi_add(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                      size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    backend_add(multi_group_for(b, key, key_len), key, key_len, value, value_len, ttl_ms, done,
                arg);
}

/* Every field is summed; a field added to backend_stats must be added here
 * too, which this assertion makes impossible to forget. */
_Static_assert(sizeof(backend_stats) ==
                   (13 + BACKEND_STATUS_COUNT + BACKEND_LATENCY_BUCKETS) * sizeof(uint64_t),
               "backend_stats changed: update multi_get_stats");

static void multi_get_stats(const backend *b, backend_stats *out)
{
    const backend_multi *m = (const backend_multi *)b;
    memset(out, 0, sizeof(*out));
    out->up = 1;
    for (size_t i = 0; i < m->n; i++) {
        backend_stats g;
        backend_get_stats(m->groups[i].b, &g);
        out->ops += g.ops;
        for (int s = 0; s < BACKEND_STATUS_COUNT; s++)
            out->by_status[s] += g.by_status[s];
        out->timeouts += g.timeouts;
        out->rejected_busy += g.rejected_busy;
        out->errors += g.errors;
        out->corrupt += g.corrupt;
        out->reconnects += g.reconnects;
        out->disconnects += g.disconnects;
        out->inflight += g.inflight;
        out->failovers += g.failovers;
        out->invalidations_sent += g.invalidations_sent;
        out->invalidations_received += g.invalidations_received;
        for (int k = 0; k < BACKEND_LATENCY_BUCKETS; k++)
            out->latency_buckets[k] += g.latency_buckets[k];
        out->latency_sum_us += g.latency_sum_us;
        if (!g.up)
            out->up = 0;
    }
}

static void multi_release(backend_multi *m, int free_groups)
{
    for (size_t i = 0; i < m->n; i++) {
        if (free_groups)
            backend_free(m->groups[i].b);
        free(m->groups[i].name);
    }
    free(m->groups);
    free(m);
}

static void multi_free(backend *b)
{
    multi_release((backend_multi *)b, 1);
}

static const backend_ops multi_ops = {
    .name = "multi",
    .get = multi_get,
    .put = multi_put,
    .del = multi_del,
    .take = multi_take,
    .add = multi_add,
    .get_stats = multi_get_stats,
    .free = multi_free,
};

/* A group's hook: hand the key to whoever the multi's owner registered (if
 * anyone yet). Any group's invalidation is forwarded, not only the key's own
 * group's: dropping a near copy is always safe, and nodes briefly configured
 * with different group sets (a rolling change) still hear each other. */
static void multi_forward_invalidate(void *arg, const uint8_t *key, size_t key_len)
{
    backend_multi *m = arg;
    if (m->base.invalidate)
        m->base.invalidate(m->base.invalidate_arg, key, key_len);
}

static void multi_err(char *err, size_t err_cap, const char *what)
{
    if (err && err_cap > 0)
        snprintf(err, err_cap, "backend groups: %s", what);
}

/* Failure path of backend_multi_new: the groups are ours, free them. */
static backend *multi_refuse(backend **groups, size_t n)
{
    if (groups)
        for (size_t i = 0; i < n; i++)
            backend_free(groups[i]);
    return NULL;
}

backend *backend_multi_new(backend **groups, const char *const *group_names, size_t n, char *err,
                           size_t err_cap)
{
    backend_multi *m = NULL;
    if (!groups || !group_names || n == 0) {
        multi_err(err, err_cap, "none given");
        return multi_refuse(groups, n);
    }
    for (size_t i = 0; i < n; i++) {
        if (!groups[i] || !group_names[i] || group_names[i][0] == '\0') {
            multi_err(err, err_cap, "a group without a backend or a name");
            return multi_refuse(groups, n);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(group_names[i], group_names[j]) == 0) {
                if (err && err_cap > 0)
                    snprintf(err, err_cap, "backend %s is given twice", group_names[i]);
                return multi_refuse(groups, n);
            }
        }
    }
    m = calloc(1, sizeof(*m));
    if (!m)
        goto fail;
    m->base.ops = &multi_ops;
    m->groups = calloc(n, sizeof(*m->groups));
    if (!m->groups)
        goto fail;
    for (size_t i = 0; i < n; i++) {
        m->groups[i].name = strdup(group_names[i]);
        m->n = i + 1; /* release frees the names made so far */
        if (!m->groups[i].name)
            goto fail;
        m->groups[i].b = groups[i];
        multi_derive_key(group_names[i], m->groups[i].hash_key);
    }
    for (size_t i = 0; i < n; i++)
        backend_set_invalidate(groups[i], multi_forward_invalidate, m);
    return &m->base;

fail:
    if (m)
        multi_release(m, 0); /* names only: the groups are freed just below */
    multi_err(err, err_cap, "out of memory");
    return multi_refuse(groups, n);
}

static const backend_multi *multi_of(const backend *b)
{
    return b && b->ops == &multi_ops ? (const backend_multi *)b : NULL;
}

size_t backend_multi_groups_up(const backend *b)
{
    const backend_multi *m = multi_of(b);
    backend_stats st;
    size_t up = 0;
    if (!m) {
        if (!b)
            return 0;
        backend_get_stats(b, &st);
        return st.up ? 1 : 0;
    }
    for (size_t i = 0; i < m->n; i++) {
        backend_get_stats(m->groups[i].b, &st);
        if (st.up)
            up++;
    }
    return up;
}

size_t backend_multi_group_count(const backend *b)
{
    const backend_multi *m = multi_of(b);
    return m ? m->n : 1;
}

size_t backend_multi_place(const backend *b, const uint8_t *key, size_t key_len)
{
    const backend_multi *m = multi_of(b);
    return m ? multi_pick(m, key, key_len) : 0;
}

backend *backend_multi_group(const backend *b, size_t i)
{
    const backend_multi *m = multi_of(b);
    return m && i < m->n ? m->groups[i].b : NULL;
}

const char *backend_multi_group_name(const backend *b, size_t i)
{
    const backend_multi *m = multi_of(b);
    return m && i < m->n ? m->groups[i].name : NULL;
}
