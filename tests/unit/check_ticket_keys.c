/* check_ticket_keys.c — unit tests of the daemon's ticket-key ring
 * (sessiond/ticket_keys.c).
 *
 * Time is injected: every test calls ticket_keys_tick with the wall seconds
 * it chooses, and the memory backends' TTL clock follows the same value, so
 * rotation and retirement are tested to the second without sleeping.
 *
 * Covered:
 *   - creation bounds (rotate, lifetime, ring size);
 *   - without a backend: ready after the first tick, "ticket keys ready"
 *     logged exactly once and no key name or byte in the log, rotation
 *     moves next to current, old keys kept exactly `lifetime` after
 *     not_after, then retired with the wipe hook seeing them and the bytes
 *     zero afterwards, ring of 256 keys encoded to the byte;
 *   - sharing one store (two backend_mem over one cache): two nodes converge
 *     on byte-identical rings whichever ticks first, a third started later
 *     adopts the same old keys, a store that lost its data is repaired from
 *     the running nodes (or they adopt a restarted node's keys);
 *   - a real Redis backend pointing at a closed loopback port (its ops
 *     complete UNAVAILABLE while not connected): never ready, never draws;
 *   - the secret region carries the "dd" VmFlag (and "lo" unless mlock
 *     failed, then mlock_failed is 1).
 * The memory backend completes synchronously, so it cannot interleave two
 * nodes' operations the way Redis answers do. A small deferring backend
 * (dq_*, below) queues operations and runs them against a backend_mem when
 * the test says so; it drives the asynchronous paths: the lost add race,
 * a node cut off from the store that must not promote a key, and an
 * instance freed with operations in flight (and the backend freed first).
 */
#include <check.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "backend.h"
#include "backend_redis.h"
#include "cache.h"
#include "proto.h"
#include "ticket_keys.h"
#include "ticket_ring.h"

/* AddressSanitizer intercepts mlock and makes it a successful no-op, so
 * under it the region is never locked although nothing failed. */
#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define ROT  60u
#define LIFE 180u
/* A slot boundary: 1800000000 = 30000000 * 60. */
#define NOW0 1800000000ull

static uint64_t fake_ms;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_ms;
}

static void set_now(uint64_t now_s)
{
    fake_ms = now_s * 1000u;
}

/* Ticks the instances in order at now_s (the store clock follows). */
static void tick(ticket_keys *tk, uint64_t now_s)
{
    set_now(now_s);
    ticket_keys_tick(tk, now_s);
}

static uint8_t enc_buf[TICKET_RING_MAX_LEN];

/* The ring tk serves at now_s, decoded into *out; fails the test if none. */
static void ring_of(ticket_keys *tk, uint64_t now_s, ticket_ring *out)
{
    size_t len = 0;
    ck_assert_int_eq(ticket_keys_encode(tk, now_s, enc_buf, sizeof(enc_buf), &len), PROTO_OK);
    ck_assert_int_eq(ticket_ring_decode(enc_buf, len, out), PROTO_OK);
    ck_assert_uint_eq(out->generated_at, now_s);
    ck_assert_uint_eq(out->rotate_s, ROT);
    ck_assert_uint_eq(out->lifetime_s, LIFE);
}

static void assert_same_keys(const ticket_ring *a, const ticket_ring *b)
{
    ck_assert_uint_eq(a->n_keys, b->n_keys);
    for (size_t i = 0; i < a->n_keys; i++)
        ck_assert_mem_eq(&a->keys[i], &b->keys[i], sizeof(ticket_key));
}

static void assert_same_ring(ticket_keys *a, ticket_keys *b, uint64_t now_s)
{
    static ticket_ring ra, rb;
    ring_of(a, now_s, &ra);
    ring_of(b, now_s, &rb);
    assert_same_keys(&ra, &rb);
}

static ticket_keys *new_tk(backend *shared)
{
    char err[200] = "";
    ticket_keys *tk = ticket_keys_new(ROT, LIFE, shared, err, sizeof(err));
    ck_assert_msg(tk != NULL, "ticket_keys_new: %s", err);
    return tk;
}

static ticket_keys_stats stats_of(const ticket_keys *tk)
{
    ticket_keys_stats st;
    ticket_keys_get_stats(tk, &st);
    return st;
}

/* --- the wipe hook ------------------------------------------------------ */

typedef struct wipe_log {
    int calls;
    int all_nonzero; /* every key shown had nonzero bytes */
    const ticket_key *where[8];
    uint8_t names[8][TICKET_NAME_LEN];
} wipe_log;

static int all_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return 0;
    return 1;
}

static void on_wipe(void *arg, const ticket_key *key)
{
    wipe_log *w = arg;
    if (all_zero(key->aes_key, TICKET_AES_LEN) || all_zero(key->name, TICKET_NAME_LEN))
        w->all_nonzero = 0;
    if (w->calls < 8) {
        w->where[w->calls] = key;
        memcpy(w->names[w->calls], key->name, TICKET_NAME_LEN);
    }
    w->calls++;
}

/* --- a deferring backend over backend_mem ------------------------------- */

#define DQ_MAX 64

typedef struct dq_op {
    int is_add;
    uint8_t key[BACKEND_MAX_KEY];
    size_t key_len;
    uint8_t value[128];
    size_t value_len;
    uint64_t ttl_ms;
    backend_done_fn done;
    void *arg;
} dq_op;

typedef struct deferred {
    backend base;
    backend *inner;
    int down; /* ops complete UNAVAILABLE, as Redis does while unreachable */
    size_t n;
    dq_op q[DQ_MAX];
} deferred;

static void dq_enqueue(deferred *d, int is_add, const uint8_t *key, size_t key_len,
                       const uint8_t *value, size_t value_len, uint64_t ttl_ms,
                       backend_done_fn done, void *arg)
{
    if (d->down || d->n == DQ_MAX || key_len > BACKEND_MAX_KEY || value_len > 128) {
        if (done)
            done(arg, BACKEND_UNAVAILABLE, NULL, 0);
        return;
    }
    dq_op *op = &d->q[d->n++];
    memset(op, 0, sizeof(*op));
    op->is_add = is_add;
    memcpy(op->key, key, key_len);
    op->key_len = key_len;
    if (value_len)
        memcpy(op->value, value, value_len);
    op->value_len = value_len;
    op->ttl_ms = ttl_ms;
    op->done = done;
    op->arg = arg;
}

static void dq_get(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg)
{
    dq_enqueue((deferred *)b, 0, key, key_len, NULL, 0, 0, done, arg);
}

static void dq_add(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    dq_enqueue((deferred *)b, 1, key, key_len, value, value_len, ttl_ms, done, arg);
}

static void dq_put(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    backend_put(((deferred *)b)->inner, key, key_len, value, value_len, ttl_ms, done, arg);
}

static void dq_del(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg)
{
    backend_del(((deferred *)b)->inner, key, key_len, done, arg);
}

static void dq_take(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done, void *arg)
{
    backend_take(((deferred *)b)->inner, key, key_len, done, arg);
}

static void dq_get_stats(const backend *b, backend_stats *out)
{
    backend_get_stats(((const deferred *)b)->inner, out);
}

static void dq_free(backend *b)
{
    deferred *d = (deferred *)b;
    /* The contract: pending operations complete UNAVAILABLE. */
    while (d->n > 0) {
        dq_op op = d->q[0];
        memmove(&d->q[0], &d->q[1], (d->n - 1) * sizeof(dq_op));
        d->n--;
        if (op.done)
            op.done(op.arg, BACKEND_UNAVAILABLE, NULL, 0);
    }
    free(d);
}

static const backend_ops dq_ops = {
    .name = "deferred",
    .get = dq_get,
    .put = dq_put,
    .del = dq_del,
    .take = dq_take,
    .add = dq_add,
    .get_stats = dq_get_stats,
    .free = dq_free,
};

static deferred *dq_new(backend *inner)
{
    deferred *d = calloc(1, sizeof(*d));
    ck_assert_ptr_nonnull(d);
    d->base.ops = &dq_ops;
    d->inner = inner;
    return d;
}

/* Answers the operations queued now (not those their completions queue). */
static size_t dq_run(deferred *d)
{
    size_t batch = d->n;
    for (size_t i = 0; i < batch; i++) {
        dq_op op = d->q[0];
        memmove(&d->q[0], &d->q[1], (d->n - 1) * sizeof(dq_op));
        d->n--;
        if (d->down) {
            op.done(op.arg, BACKEND_UNAVAILABLE, NULL, 0);
        } else if (op.is_add) {
            backend_add(d->inner, op.key, op.key_len, op.value, op.value_len, op.ttl_ms, op.done,
                        op.arg);
        } else {
            backend_get(d->inner, op.key, op.key_len, op.done, op.arg);
        }
    }
    return batch;
}

static void dq_drain(deferred *d)
{
    for (int rounds = 0; d->n > 0; rounds++) {
        ck_assert_int_lt(rounds, 20);
        dq_run(d);
    }
}

/* --- fixtures ------------------------------------------------------------ */

static cache *store;

static cache *new_store(void)
{
    cache_config cfg = {.max_bytes = 1 << 20};
    cache *c = cache_create(&cfg);
    ck_assert_ptr_nonnull(c);
    return c;
}

static backend *mem_over(cache *c)
{
    backend *b = backend_mem_new(c, fake_clock, NULL);
    ck_assert_ptr_nonnull(b);
    return b;
}

/* The store key of slot s, as ticket_keys.c builds it (header comment). */
static void slot_key(uint64_t slot, uint8_t out[15])
{
    out[0] = TICKET_KEYS_BACKEND_TAG;
    out[1] = 't';
    out[2] = 'k';
    for (int i = 0; i < 4; i++)
        out[3 + i] = (uint8_t)(ROT >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        out[7 + i] = (uint8_t)(slot >> (56 - 8 * i));
}

/* --- tests --------------------------------------------------------------- */

START_TEST(test_new_bounds)
{
    char err[200];
    err[0] = 0;
    ck_assert_ptr_null(ticket_keys_new(0, 100, NULL, err, sizeof(err)));
    ck_assert(strstr(err, "rotate") != NULL);
    err[0] = 0;
    ck_assert_ptr_null(ticket_keys_new(60, 0, NULL, err, sizeof(err)));
    ck_assert(strstr(err, "lifetime") != NULL);
    ck_assert_ptr_null(ticket_keys_new(3600, TICKET_KEYS_MAX_LIFETIME + 1, NULL, err, sizeof(err)));
    /* 255 older slots + current + next = 257 > 256. */
    err[0] = 0;
    ck_assert_ptr_null(ticket_keys_new(1, 255, NULL, err, sizeof(err)));
    ck_assert(strstr(err, "257") != NULL);
    ck_assert_ptr_null(ticket_keys_new(1, 255, NULL, NULL, 0)); /* no err buffer: fine */

    ticket_keys *tk = ticket_keys_new(1, 254, NULL, err, sizeof(err));
    ck_assert_ptr_nonnull(tk);
    ticket_keys_free(tk);
    tk = ticket_keys_new(3600, TICKET_KEYS_MAX_LIFETIME, NULL, err, sizeof(err));
    ck_assert_ptr_nonnull(tk);
    ticket_keys_free(tk);
    ticket_keys_free(NULL);
}
END_TEST

/* Sends fd 2 to a temporary file until capture_stderr_end reads it back. */
static void capture_stderr_begin(int *saved, FILE **tmp)
{
    fflush(stderr);
    *tmp = tmpfile();
    ck_assert_ptr_nonnull(*tmp);
    *saved = dup(2);
    ck_assert_int_ge(*saved, 0);
    ck_assert_int_ge(dup2(fileno(*tmp), 2), 0);
}

static size_t capture_stderr_end(int saved, FILE *tmp, char *out, size_t cap)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(out, 1, cap - 1, tmp);
    out[n] = 0;
    fclose(tmp);
    return n;
}

static int count_of(const char *hay, size_t hay_len, const void *needle, size_t needle_len)
{
    int count = 0;
    for (size_t i = 0; i + needle_len <= hay_len; i++)
        if (memcmp(hay + i, needle, needle_len) == 0)
            count++;
    return count;
}

START_TEST(test_no_backend_ready_and_log)
{
    static char log[8192];
    static ticket_ring r;
    int saved;
    FILE *tmp;
    capture_stderr_begin(&saved, &tmp);

    ticket_keys *tk = new_tk(NULL);
    size_t len = 0;
    ck_assert(!ticket_keys_ready(tk, NOW0));
    ck_assert_int_eq(ticket_keys_encode(tk, NOW0, enc_buf, sizeof(enc_buf), &len), -1);
    ck_assert_uint_eq(stats_of(tk).not_ready, 1);
    tick(tk, NOW0);
    ck_assert(ticket_keys_ready(tk, NOW0));
    tick(tk, NOW0 + 1);
    tick(tk, NOW0 + ROT);
    ring_of(tk, NOW0 + ROT, &r);

    size_t n = capture_stderr_end(saved, tmp, log, sizeof(log));
    ck_assert_int_eq(count_of(log, n, "ticket keys ready", 17), 1);
    /* No key name, raw or in hex, and no AES key bytes reached the log. */
    for (size_t i = 0; i < r.n_keys; i++) {
        char hex[2 * TICKET_NAME_LEN + 1];
        for (size_t j = 0; j < TICKET_NAME_LEN; j++)
            snprintf(hex + 2 * j, 3, "%02x", r.keys[i].name[j]);
        ck_assert_int_eq(count_of(log, n, hex, 2 * TICKET_NAME_LEN), 0);
        ck_assert_int_eq(count_of(log, n, r.keys[i].name, TICKET_NAME_LEN), 0);
        ck_assert_int_eq(count_of(log, n, r.keys[i].aes_key, 8), 0);
    }
    ticket_keys_free(tk);
}
END_TEST

START_TEST(test_rotation)
{
    static ticket_ring r0, r1;
    ticket_keys *tk = new_tk(NULL);
    tick(tk, NOW0);
    ring_of(tk, NOW0, &r0);
    ck_assert_uint_eq(r0.n_keys, 2);
    ck_assert_uint_eq(r0.keys[0].not_before, NOW0);
    ck_assert_uint_eq(r0.keys[0].not_after, NOW0 + ROT);
    ck_assert_uint_eq(r0.keys[1].not_before, NOW0 + ROT);
    ck_assert_ptr_eq(ticket_ring_current(&r0, NOW0), &r0.keys[0]);
    ck_assert_int_eq(ticket_key_state_at(&r0, &r0.keys[1], NOW0), TICKET_KEY_NEXT);
    ck_assert(memcmp(r0.keys[0].aes_key, r0.keys[1].aes_key, TICKET_AES_LEN) != 0);

    /* Until 15 s (rotate/4) before the boundary nothing changes, and the
     * next slot would not be ready: it needs a key nobody drew yet. */
    tick(tk, NOW0 + ROT - 16);
    ck_assert_uint_eq(stats_of(tk).keys, 2);
    ck_assert(!ticket_keys_ready(tk, NOW0 + ROT));
    /* Lookahead: from 15 s before, slot c0+2 is drawn (held, not served),
     * so the next slot is ready the moment it starts. */
    tick(tk, NOW0 + ROT - 15);
    ck_assert_uint_eq(stats_of(tk).keys, 3);
    ring_of(tk, NOW0 + ROT - 1, &r1);
    assert_same_keys(&r0, &r1);
    ck_assert(ticket_keys_ready(tk, NOW0 + ROT));

    tick(tk, NOW0 + ROT);
    ring_of(tk, NOW0 + ROT, &r1);
    ck_assert_uint_eq(r1.n_keys, 3);
    ck_assert_mem_eq(&r1.keys[0], &r0.keys[0], sizeof(ticket_key));
    ck_assert_mem_eq(&r1.keys[1], &r0.keys[1], sizeof(ticket_key));
    ck_assert_int_eq(ticket_key_state_at(&r1, &r1.keys[0], NOW0 + ROT), TICKET_KEY_OLD);
    ck_assert_ptr_eq(ticket_ring_current(&r1, NOW0 + ROT), &r1.keys[1]); /* next became current */
    ck_assert_int_eq(ticket_key_state_at(&r1, &r1.keys[2], NOW0 + ROT), TICKET_KEY_NEXT);
    ck_assert_uint_eq(r1.keys[2].not_before, NOW0 + 2 * ROT);
    ticket_keys_stats st = stats_of(tk);
    ck_assert_uint_eq(st.generated, 3);
    ck_assert_uint_eq(st.keys, 3);
    ck_assert_uint_eq(st.served, 3);
    ck_assert_uint_eq(st.adopted, 0);
    ticket_keys_free(tk);
}
END_TEST

START_TEST(test_retention_and_wipe)
{
    static ticket_ring r, first;
    wipe_log w = {.all_nonzero = 1};
    ticket_keys *tk = new_tk(NULL);
    ticket_keys_set_wipe_hook(tk, on_wipe, &w);
    tick(tk, NOW0);
    ring_of(tk, NOW0, &first); /* first.keys[0]: not_after NOW0+60, decrypts until +180 */
    for (uint64_t t = NOW0 + ROT; t < NOW0 + ROT + LIFE; t += ROT)
        tick(tk, t);

    uint64_t last = NOW0 + ROT + LIFE - 1;
    tick(tk, last);
    ring_of(tk, last, &r);
    ck_assert_uint_eq(r.n_keys, 5); /* slots c0 .. c0+4 */
    ck_assert_mem_eq(&r.keys[0], &first.keys[0], sizeof(ticket_key));
    ck_assert_int_eq(ticket_key_state_at(&r, &r.keys[0], last), TICKET_KEY_OLD);
    ck_assert_ptr_nonnull(ticket_ring_find(&r, first.keys[0].name, last));
    ck_assert_int_eq(w.calls, 0);
    ck_assert_uint_eq(stats_of(tk).retired, 0);

    tick(tk, last + 1);
    ck_assert_int_eq(w.calls, 1);
    ck_assert(w.all_nonzero);
    ck_assert_mem_eq(w.names[0], first.keys[0].name, TICKET_NAME_LEN);
    ck_assert(all_zero(w.where[0], sizeof(ticket_key))); /* wiped in place */
    ring_of(tk, last + 1, &r);
    ck_assert_uint_eq(r.n_keys, 5); /* c0+1 .. c0+5: one retired, one drawn */
    ck_assert_ptr_null(ticket_ring_find(&r, first.keys[0].name, last + 1));
    ck_assert_mem_eq(&r.keys[0], &first.keys[1], sizeof(ticket_key));
    ticket_keys_stats st = stats_of(tk);
    ck_assert_uint_eq(st.retired, 1);
    ck_assert_uint_eq(st.keys, 5);

    /* The region lies where the hook pointed. */
    const void *addr;
    size_t len;
    ticket_keys_region(tk, &addr, &len);
    ck_assert((const uint8_t *)w.where[0] >= (const uint8_t *)addr &&
              (const uint8_t *)(w.where[0] + 1) <= (const uint8_t *)addr + len);
    ticket_keys_free(tk);
}
END_TEST

START_TEST(test_ring_size_bounds)
{
    static ticket_ring r;
    const uint64_t t0 = 1700000000;
    size_t len = 0;
    ticket_keys *tk = ticket_keys_new(1, 254, NULL, NULL, 0);
    ck_assert_ptr_nonnull(tk);
    for (uint64_t t = t0; t <= t0 + 254; t++)
        ticket_keys_tick(tk, t);
    /* Slots t0 .. t0+255: the oldest still decrypts (not_after t0+1, +254). */
    ck_assert_int_eq(ticket_keys_encode(tk, t0 + 254, enc_buf, sizeof(enc_buf), &len), PROTO_OK);
    ck_assert_uint_eq(len, TICKET_RING_MAX_LEN);
    ck_assert_int_eq(ticket_ring_decode(enc_buf, len, &r), PROTO_OK);
    ck_assert_uint_eq(r.n_keys, TICKET_RING_MAX_KEYS);
    ck_assert_uint_eq(r.keys[0].not_before, t0);
    ck_assert_uint_eq(r.keys[255].not_before, t0 + 255);
    ck_assert_int_eq(ticket_keys_encode(tk, t0 + 254, enc_buf, TICKET_RING_MAX_LEN - 1, &len),
                     PROTO_ERR_NOSPACE);
    ticket_keys_tick(tk, t0 + 255);
    ticket_keys_stats st = stats_of(tk);
    ck_assert_uint_eq(st.keys, TICKET_RING_MAX_KEYS);
    ck_assert_uint_eq(st.retired, 1);
    ck_assert_uint_eq(st.generated, 257);
    ticket_keys_free(tk);
}
END_TEST

/* Two nodes on one store converge, whichever ticks first (_i: the order). */
START_TEST(test_shared_converge)
{
    store = new_store();
    backend *ba = mem_over(store), *bb = mem_over(store);
    ticket_keys *a = new_tk(ba), *b = new_tk(bb);
    ticket_keys *first = _i == 0 ? a : b, *second = _i == 0 ? b : a;

    tick(first, NOW0);
    ck_assert(ticket_keys_ready(first, NOW0));
    ck_assert(!ticket_keys_ready(second, NOW0));
    tick(second, NOW0);
    ck_assert(ticket_keys_ready(second, NOW0));
    assert_same_ring(a, b, NOW0);
    ck_assert_uint_eq(stats_of(first).generated, 2);
    ck_assert_uint_eq(stats_of(first).adopted, 0);
    ck_assert_uint_eq(stats_of(second).generated, 0);
    ck_assert_uint_eq(stats_of(second).adopted, 2);

    /* Next slot: this time the other one ticks first and draws. */
    tick(second, NOW0 + ROT);
    tick(first, NOW0 + ROT);
    assert_same_ring(a, b, NOW0 + ROT);
    ck_assert_uint_eq(stats_of(second).generated, 1);
    ck_assert_uint_eq(stats_of(first).adopted, 1);
    ck_assert_uint_eq(stats_of(a).backend_failures, 0);

    ticket_keys_free(a);
    ticket_keys_free(b);
    backend_free(ba);
    backend_free(bb);
    cache_free(store);
}
END_TEST

START_TEST(test_third_node_adopts_old_keys)
{
    static ticket_ring ra, rc;
    store = new_store();
    backend *ba = mem_over(store), *bb = mem_over(store), *bc = mem_over(store);
    ticket_keys *a = new_tk(ba), *b = new_tk(bb);
    for (uint64_t t = NOW0; t <= NOW0 + 2 * ROT; t += ROT) {
        tick(a, t);
        tick(b, t);
    }
    /* c starts two slots later: it must pick up c0 and c0+1 (old now). */
    uint64_t now = NOW0 + 2 * ROT;
    ticket_keys *c = new_tk(bc);
    tick(c, now);
    ck_assert(ticket_keys_ready(c, now));
    ring_of(a, now, &ra);
    ring_of(c, now, &rc);
    ck_assert_uint_eq(ra.n_keys, 4);
    assert_same_keys(&ra, &rc);
    assert_same_ring(a, b, now);
    ck_assert_int_eq(ticket_key_state_at(&rc, &rc.keys[0], now), TICKET_KEY_OLD);
    ck_assert_int_eq(ticket_key_state_at(&rc, &rc.keys[1], now), TICKET_KEY_OLD);
    ck_assert_ptr_eq(ticket_ring_current(&rc, now), &rc.keys[2]);
    ticket_keys_stats st = stats_of(c);
    ck_assert_uint_eq(st.generated, 0);
    ck_assert_uint_eq(st.adopted, 4);

    ticket_keys_free(a);
    ticket_keys_free(b);
    ticket_keys_free(c);
    backend_free(ba);
    backend_free(bb);
    backend_free(bc);
    cache_free(store);
}
END_TEST

/* The store lost its data (a Redis restarted without persistence).
 * _i == 0: a restarted node draws fresh keys first; the running nodes
 * verify, see the difference and adopt the stored ones.
 * _i == 1: a running node verifies first and publishes its keys again;
 * the restarted node adopts them. */
START_TEST(test_store_data_loss)
{
    wipe_log w = {.all_nonzero = 1};
    store = new_store();
    backend *ba = mem_over(store), *bb = mem_over(store), *bc = mem_over(store);
    ticket_keys *a = new_tk(ba), *b = new_tk(bb);
    ticket_keys_set_wipe_hook(a, on_wipe, &w);
    tick(a, NOW0);
    tick(b, NOW0);
    for (uint64_t s = NOW0 / ROT; s <= NOW0 / ROT + 1; s++) {
        uint8_t k[15];
        slot_key(s, k);
        ck_assert_int_eq(cache_remove(store, k, sizeof(k)), 1);
    }
    /* Verification runs every rotate/4 = 15 s. */
    uint64_t later = NOW0 + 20;
    ticket_keys *c = new_tk(bc);
    if (_i == 0) {
        tick(c, later);
        ck_assert_uint_eq(stats_of(c).generated, 2);
        tick(a, later);
        tick(b, later);
        ck_assert_int_eq(w.calls, 2); /* a's two replaced keys were wiped */
        ck_assert(w.all_nonzero);
    } else {
        tick(a, later);
        tick(c, later);
        tick(b, later);
        ck_assert_uint_eq(stats_of(c).generated, 0);
        ck_assert_uint_eq(stats_of(c).adopted, 2);
        ck_assert_int_eq(w.calls, 0);
    }
    assert_same_ring(a, c, later);
    assert_same_ring(b, c, later);

    ticket_keys_free(a);
    ticket_keys_free(b);
    ticket_keys_free(c);
    backend_free(ba);
    backend_free(bb);
    backend_free(bc);
    cache_free(store);
}
END_TEST

/* Both nodes miss, both offer: one wins, the other adopts the winner's. */
START_TEST(test_async_lost_race)
{
    store = new_store();
    backend *ma = mem_over(store), *mb = mem_over(store);
    deferred *da = dq_new(ma), *db = dq_new(mb);
    ticket_keys *a = new_tk(&da->base), *b = new_tk(&db->base);
    tick(a, NOW0);
    tick(b, NOW0);
    ck_assert_uint_eq(da->n, 5); /* slots c0-3 .. c0+1, one get each */
    tick(a, NOW0);               /* nothing new while those are in flight */
    ck_assert_uint_eq(da->n, 5);
    dq_run(da);
    dq_run(db); /* both gets missed: both have an add queued */
    ck_assert_uint_eq(da->n, 2);
    ck_assert_uint_eq(db->n, 2);
    ck_assert(!ticket_keys_ready(a, NOW0));
    dq_run(da);
    ck_assert(ticket_keys_ready(a, NOW0));
    dq_run(db); /* EXISTS: b reads the winner's back */
    ck_assert(!ticket_keys_ready(b, NOW0));
    dq_drain(db);
    ck_assert(ticket_keys_ready(b, NOW0));
    assert_same_ring(a, b, NOW0);
    ticket_keys_stats sa = stats_of(a), sb = stats_of(b);
    ck_assert_uint_eq(sa.generated, 2);
    ck_assert_uint_eq(sb.generated, 0);
    ck_assert_uint_eq(sb.lost_races, 2);
    ck_assert_uint_eq(sb.adopted, 2);

    ticket_keys_free(a);
    ticket_keys_free(b);
    backend_free(&da->base);
    backend_free(&db->base);
    backend_free(ma);
    backend_free(mb);
    cache_free(store);
}
END_TEST

/* A node cut off from the store never promotes a key of its own. */
START_TEST(test_partition_no_promotion)
{
    store = new_store();
    backend *ma = mem_over(store), *mb = mem_over(store);
    deferred *da = dq_new(ma), *db = dq_new(mb);
    ticket_keys *a = new_tk(&da->base), *b = new_tk(&db->base);
    tick(a, NOW0);
    dq_drain(da);
    tick(b, NOW0);
    dq_drain(db);
    assert_same_ring(a, b, NOW0);

    da->down = 1;
    uint64_t t1 = NOW0 + ROT;
    for (uint64_t t = t1; t < t1 + 5; t++) {
        tick(a, t);
        dq_drain(da);
        tick(a, t); /* the same second again: no new attempt */
        dq_drain(da);
        tick(b, t);
        dq_drain(db);
        ck_assert(!ticket_keys_ready(a, t));
        ck_assert(ticket_keys_ready(b, t));
    }
    size_t len;
    ck_assert_int_eq(ticket_keys_encode(a, t1, enc_buf, sizeof(enc_buf), &len), -1);
    ticket_keys_stats sa = stats_of(a);
    ck_assert_uint_eq(sa.generated + sa.adopted, 2); /* nothing new since the cut */
    ck_assert_uint_eq(sa.keys, 2);                   /* and it kept what it had */
    /* Per second, one failed op per slot it asks about (the missing next key,
     * and the read-back of the current one), although it ticked twice. */
    ck_assert_uint_eq(sa.backend_failures, 2 * 5);

    da->down = 0;
    tick(a, t1 + 5);
    dq_drain(da);
    ck_assert(ticket_keys_ready(a, t1 + 5));
    assert_same_ring(a, b, t1 + 5);
    ck_assert_uint_eq(stats_of(a).generated, sa.generated); /* b's next key, adopted */
    ck_assert_uint_eq(stats_of(a).adopted, sa.adopted + 1);

    ticket_keys_free(a);
    ticket_keys_free(b);
    backend_free(&da->base);
    backend_free(&db->base);
    backend_free(ma);
    backend_free(mb);
    cache_free(store);
}
END_TEST

/* Either may go first: the instance (ops orphaned) or the backend (ops
 * completed UNAVAILABLE). AddressSanitizer checks the rest. */
START_TEST(test_free_with_ops_in_flight)
{
    store = new_store();
    backend *m = mem_over(store);
    deferred *d1 = dq_new(m), *d2 = dq_new(m);
    ticket_keys *a = new_tk(&d1->base), *b = new_tk(&d2->base);

    tick(a, NOW0);
    ck_assert_uint_eq(d1->n, 5);
    ticket_keys_free(a);
    dq_drain(d1); /* completions reach orphaned records: they free themselves */
    ck_assert_uint_eq(d1->n, 0);

    tick(b, NOW0);
    dq_run(d2);
    ck_assert_uint_eq(d2->n, 2); /* two adds in flight, candidates staged */
    backend_free(&d2->base);
    ticket_keys_stats sb = stats_of(b);
    ck_assert_uint_eq(sb.backend_failures, 2);
    ck_assert(!ticket_keys_ready(b, NOW0));
    ticket_keys_free(b);

    backend_free(&d1->base);
    backend_free(m);
    cache_free(store);
}
END_TEST

/* A real Redis backend that cannot connect: every op UNAVAILABLE. */
START_TEST(test_unavailable_backend)
{
    /* A port bound but not listening: connections are refused. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char target[64];
    snprintf(target, sizeof(target), "redis://127.0.0.1:%u", ntohs(sa.sin_port));

    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    uint8_t cluster_key[32];
    memset(cluster_key, 0x5A, sizeof(cluster_key));
    backend_redis_config cfg = {.target = target, .cluster_key = cluster_key};
    char err[256] = "";
    backend *r = backend_redis_new(base, &cfg, err, sizeof(err));
    ck_assert_msg(r != NULL, "backend_redis_new: %s", err);

    ticket_keys *tk = new_tk(r);
    for (uint64_t t = NOW0; t < NOW0 + 2 * ROT; t += 7) {
        ticket_keys_tick(tk, t);
        ticket_keys_tick(tk, t); /* the same second: no second attempt */
        event_base_loop(base, EVLOOP_NONBLOCK);
        ck_assert(!ticket_keys_ready(tk, t));
        ck_assert(!backend_redis_is_up(r));
    }
    size_t len;
    ck_assert_int_eq(ticket_keys_encode(tk, NOW0, enc_buf, sizeof(enc_buf), &len), -1);
    ticket_keys_stats st = stats_of(tk);
    ck_assert_uint_eq(st.generated, 0);
    ck_assert_uint_eq(st.adopted, 0);
    ck_assert_uint_eq(st.keys, 0);
    /* 18 ticks of distinct seconds, 5 wanted slots each (c-3 .. c+1), and
     * one more (c+2) for the 5 ticks in the last 15 s of a slot (offsets 49,
     * 56, 105, 112, 119). */
    ck_assert_uint_eq(st.backend_failures, 18 * 5 + 5);
    ck_assert_uint_eq(st.not_ready, 1);

    ticket_keys_free(tk);
    backend_free(r);
    event_base_free(base);
    close(fd);
}
END_TEST

START_TEST(test_region_flags)
{
    ticket_keys *tk = new_tk(NULL);
    tick(tk, NOW0);
    const void *addr = NULL;
    size_t len = 0;
    ticket_keys_region(tk, &addr, &len);
    ck_assert_ptr_nonnull(addr);
    ck_assert_uint_ge(len, TICKET_RING_MAX_KEYS * sizeof(ticket_key));
    ck_assert_uint_eq(len % (size_t)sysconf(_SC_PAGESIZE), 0);

    FILE *f = fopen("/proc/self/smaps", "r");
    ck_assert_ptr_nonnull(f);
    char line[512];
    int inside = 0, found = 0;
    char flags[512] = "";
    uintptr_t a = (uintptr_t)addr;
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        char sep;
        if (sscanf(line, "%lx-%lx%c", &lo, &hi, &sep) == 3 && sep == ' ') {
            inside = a >= lo && a + len <= hi;
            continue;
        }
        if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(flags, sizeof(flags), "%s", line + 8);
            found = 1;
            break;
        }
    }
    fclose(f);
    ck_assert_msg(found, "region not found in smaps");
    ck_assert_msg(strstr(flags, " dd") != NULL, "no dd in VmFlags:%s", flags);
    if (stats_of(tk).mlock_failed)
        ck_assert_uint_eq(stats_of(tk).mlock_failed, 1);
    else if (!UNDER_ASAN)
        ck_assert_msg(strstr(flags, " lo") != NULL, "no lo in VmFlags:%s", flags);
    ticket_keys_free(tk);
}
END_TEST

static Suite *ticket_keys_suite(void)
{
    Suite *s = suite_create("ticket_keys");
    TCase *tc = tcase_create("alone");
    tcase_add_test(tc, test_new_bounds);
    tcase_add_test(tc, test_no_backend_ready_and_log);
    tcase_add_test(tc, test_rotation);
    tcase_add_test(tc, test_retention_and_wipe);
    tcase_add_test(tc, test_ring_size_bounds);
    tcase_add_test(tc, test_region_flags);
    suite_add_tcase(s, tc);
    tc = tcase_create("shared");
    tcase_add_loop_test(tc, test_shared_converge, 0, 2);
    tcase_add_test(tc, test_third_node_adopts_old_keys);
    tcase_add_loop_test(tc, test_store_data_loss, 0, 2);
    tcase_add_test(tc, test_async_lost_race);
    tcase_add_test(tc, test_partition_no_promotion);
    tcase_add_test(tc, test_free_with_ops_in_flight);
    tcase_add_test(tc, test_unavailable_backend);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ticket_keys_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
