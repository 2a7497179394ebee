/* ticket_keys.c — the daemon's ticket-key ring: keys drawn, agreed through
 * the shared backend, rotated, retired and wiped.
 *
 * Time is cut into slots of `rotate` seconds (ticket_keys.h); slot s's key
 * encrypts during [s*rotate, (s+1)*rotate) and decrypts until lifetime
 * seconds later. At wall time now, in slot c, the wanted slots are
 * lo = c - ceil(lifetime/rotate) .. c + 1: every slot whose key can still
 * decrypt, plus the next one (and c + 2 near the end of slot c: see
 * Lookahead below). KEYS serves lo .. c + 1.
 *
 * Where keys live: one mmap'ed region (tk_secrets) holds an array of
 * TICKET_RING_MAX_KEYS keys, the scratch ring encoded for KEYS answers and
 * the 80-byte buffer a value goes to the backend from. Slot s always lives
 * at position s % TICKET_RING_MAX_KEYS: the wanted window is at most
 * TICKET_RING_MAX_KEYS slots wide (checked in ticket_keys_new), so two live
 * slots never share a position, and a key never moves while it lives (no
 * copies left behind by a compaction, and the wipe hook can check the very
 * bytes it was shown). The region is excluded from core dumps
 * (MADV_DONTDUMP, required: creation fails without it) and mlock'ed (best
 * effort: RLIMIT_MEMLOCK may refuse; counted in mlock_failed and logged
 * once). Non-secret bookkeeping (which slot a position holds, what is in
 * flight) stays in the ordinary heap struct.
 *
 * Agreement with a backend. Slot s's key is stored under the backend key
 * TICKET_KEYS_BACKEND_TAG "tk" rotate(4, BE) s(8, BE) with the value
 * name || aes || hmac (80 bytes) and a TTL reaching one rotate past
 * not_after + lifetime; the Redis backend seals values and hashes names, so
 * Redis never holds a usable key. Including rotate in the key keeps nodes
 * configured with different periods from mixing their slots. Per wanted
 * slot this node does not hold, one operation at a time:
 *   get  OK         adopt the stored key;
 *        NOT_FOUND  slot c or newer: draw a candidate, offer it with add;
 *                   an older slot: give up on it (nobody has it, and
 *                   minting a key for a past slot would only mint a key
 *                   that encrypted nothing);
 *   add  OK         our candidate is the slot's key;
 *        EXISTS     another node won: drop the candidate, get again, adopt;
 *   UNAVAILABLE / ERROR (either op)
 *                   counted, retried at a later tick, at most once a second
 *                   per slot. An add that timed out here may still have been
 *                   stored: the later get adopts it, which is right.
 * A node adopts only what it read from or wrote to the backend, so a node
 * cut off from it never promotes a key the others may lack: it serves what
 * it has until slot c+1's key is missing, and then is not ready (KEYS
 * answers UNAVAILABLE) until the backend is back.
 *
 * Verification: a held key of slot c or newer is read back from the backend
 * every verify period (rotate/4, clamped to 1..30 s). Same bytes: nothing.
 * Different bytes: the backend's copy replaces ours (the only way this
 * happens is a backend that lost its data, e.g. a Redis restarted without
 * persistence, after which another node stored a fresh key for the slot;
 * converging on the backend's copy costs the tickets of the replaced key a
 * full handshake, which beats nodes that disagree forever). Absent: we
 * publish ours again with add, so a node that starts after the data loss
 * adopts the keys the running nodes already serve. The cheaper alternative,
 * trusting a key once held, was not taken because of exactly that restart.
 *
 * Lookahead: ready (and so KEYS) needs slot c + 1's key, which at a slot
 * boundary is a slot nobody has asked for yet: the first tick after the
 * boundary would have to fetch it, and KEYS would answer UNAVAILABLE for up
 * to a tick plus a round trip at every rotation. So in the last `lookahead`
 * seconds of slot c (rotate/4, clamped to 1..30 s) slot c + 2 is agreed on
 * too, ahead of time; it is held but not served until it becomes c + 1.
 * The cost: with a ring at the very limit (ceil(lifetime/rotate) + 2 = 256
 * keys) c + 2 would share a position with the oldest slot, so there is no
 * lookahead and such rings have the blip.
 *
 * Without a backend this node is the authority: it draws slot c and newer
 * locally, and never has older keys than its own start.
 *
 * Completions may run synchronously (backend_mem, or Redis when it is down)
 * or later from the loop (Redis answers). Each operation carries a heap
 * record (tk_op) that names its slot; the position's `pending` pointer
 * claims the slot, and a completion whose record is no longer the claim (the
 * position was reused meanwhile) is discarded. Everything a completion needs
 * is set up before the call, and nothing touches a record after handing it
 * to the backend. ticket_keys_free orphans records still in flight (their
 * instance pointer is cleared) instead of freeing them: the backend still
 * holds them and will complete each exactly once, at which point an orphan
 * just frees itself. So the instance and the backend may be freed in either
 * order. Known limit: a backend that is never freed and never completes
 * would leak those records (the backend contract rules that out).
 *
 * Times beyond year 9999 (TK_MAX_TIME) are ignored by tick, so slot
 * arithmetic never overflows.
 */
#include "ticket_keys.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "log.h"
#include "proto.h"

#define TK_POSITIONS    TICKET_RING_MAX_KEYS
#define TK_VALUE_LEN    (TICKET_NAME_LEN + TICKET_AES_LEN + TICKET_HMAC_LEN)
#define TK_KEY_LEN      (1 + 2 + 4 + 8)
#define TK_RETRY_S      1
#define TK_VERIFY_MAX_S 30
#define TK_MAX_TIME     253402300799ull /* 9999-12-31T23:59:59Z */

/* The secret region's layout. */
typedef struct tk_secrets {
    ticket_key keys[TK_POSITIONS]; /* slot s at s % TK_POSITIONS: held key or candidate */
    ticket_ring scratch;           /* the ring being encoded for a KEYS answer */
    uint8_t value[TK_VALUE_LEN];   /* a value on its way to the backend */
} tk_secrets;

enum tk_phase {
    TK_GET,       /* a missing slot: is it stored? */
    TK_ADD,       /* offering our candidate */
    TK_GET_AGAIN, /* lost the add: read the winner's */
    TK_VERIFY,    /* a held key: is the backend's copy still ours? */
    TK_REPUBLISH, /* the backend lost it: store ours again */
};

typedef struct tk_op {
    struct tk_op *prev, *next; /* in the instance's list of ops in flight */
    ticket_keys *tk;           /* NULL once orphaned by ticket_keys_free */
    uint64_t slot;
    int phase;
} tk_op;

/* Bookkeeping of one position; describes slot `slot` when `known`. */
typedef struct tk_slot {
    uint64_t slot;
    uint64_t retry_at;  /* wall seconds: no new op before */
    uint64_t verify_at; /* wall seconds: next read-back of a held key */
    tk_op *pending;     /* the op in flight for this slot, or NULL */
    uint8_t known;
    uint8_t held;     /* keys[pos] is the slot's agreed key */
    uint8_t given_up; /* an older slot nobody stored */
} tk_slot;

struct ticket_keys {
    uint32_t rotate_s;
    uint32_t lifetime_s;
    uint32_t back; /* ceil(lifetime / rotate): older slots kept */
    uint32_t verify_s;
    uint32_t lookahead_s; /* 0: never fetch c + 2 early */
    backend *shared;
    tk_secrets *sec;
    size_t sec_len;
    tk_slot slots[TK_POSITIONS];
    tk_op *ops;     /* in flight */
    uint64_t now_s; /* the last tick's time; completions judge by it */
    int ready_logged;
    ticket_keys_stats stats;
    void (*wipe_hook)(void *arg, const ticket_key *key);
    void *wipe_arg;
};

static void tk_start(ticket_keys *tk, uint64_t slot, int phase);

static uint64_t tk_slot_of(const ticket_keys *tk, uint64_t now_s)
{
    return now_s / tk->rotate_s;
}

static uint64_t tk_window_lo(const ticket_keys *tk, uint64_t c)
{
    return c >= tk->back ? c - tk->back : 0;
}

static int tk_expired(const ticket_keys *tk, uint64_t slot, uint64_t now_s)
{
    return (slot + 1) * tk->rotate_s + tk->lifetime_s <= now_s;
}

/* The newest slot wanted: c + 1, or c + 2 during the last `lookahead`
 * seconds of slot c (see the top comment). */
static uint64_t tk_window_hi(const ticket_keys *tk, uint64_t now_s)
{
    uint64_t c = tk_slot_of(tk, now_s);
    if (tk->lookahead_s > 0 && now_s + tk->lookahead_s >= (c + 1) * tk->rotate_s)
        return c + 2;
    return c + 1;
}

static int tk_in_window(const ticket_keys *tk, uint64_t slot, uint64_t now_s)
{
    uint64_t c = tk_slot_of(tk, now_s);
    return slot >= tk_window_lo(tk, c) && slot <= tk_window_hi(tk, now_s) &&
           !tk_expired(tk, slot, now_s);
}

static void tk_set_times(const ticket_keys *tk, ticket_key *k, uint64_t slot)
{
    k->not_before = slot * tk->rotate_s;
    k->not_after = (slot + 1) * tk->rotate_s;
}

static int tk_holds(const ticket_keys *tk, uint64_t slot)
{
    const tk_slot *st = &tk->slots[slot % TK_POSITIONS];
    return st->known && st->slot == slot && st->held;
}

/* Wipes a held key: the hook sees its bytes first. */
static void tk_retire(ticket_keys *tk, size_t pos)
{
    ticket_key *k = &tk->sec->keys[pos];
    if (tk->wipe_hook)
        tk->wipe_hook(tk->wipe_arg, k);
    OPENSSL_cleanse(k, sizeof(*k));
    tk->slots[pos].held = 0;
    tk->stats.retired++;
}

/* The position of `slot`, reset if it described another slot. */
static tk_slot *tk_slot_for(ticket_keys *tk, uint64_t slot)
{
    size_t pos = slot % TK_POSITIONS;
    tk_slot *st = &tk->slots[pos];
    if (st->known && st->slot == slot)
        return st;
    if (st->held)
        tk_retire(tk, pos);
    else
        OPENSSL_cleanse(&tk->sec->keys[pos], sizeof(ticket_key)); /* a candidate, maybe */
    /* An op still in flight for the old slot is discarded when it completes
     * (it is no longer the position's claim). */
    memset(st, 0, sizeof(*st));
    st->known = 1;
    st->slot = slot;
    return st;
}

static int tk_draw(ticket_key *k)
{
    if (RAND_bytes(k->name, TICKET_NAME_LEN) != 1 || RAND_bytes(k->aes_key, TICKET_AES_LEN) != 1 ||
        RAND_bytes(k->hmac_key, TICKET_HMAC_LEN) != 1) {
        OPENSSL_cleanse(k, sizeof(*k));
        return -1;
    }
    return 0;
}

static void tk_backend_key(const ticket_keys *tk, uint64_t slot, uint8_t out[TK_KEY_LEN])
{
    out[0] = TICKET_KEYS_BACKEND_TAG;
    out[1] = 't';
    out[2] = 'k';
    for (int i = 0; i < 4; i++)
        out[3 + i] = (uint8_t)(tk->rotate_s >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        out[7 + i] = (uint8_t)(slot >> (56 - 8 * i));
}

/* Until one rotate past the end of the key's decrypting life, in ms. */
static uint64_t tk_ttl_ms(const ticket_keys *tk, uint64_t slot)
{
    uint64_t until = (slot + 2) * tk->rotate_s + tk->lifetime_s;
    uint64_t ttl_s = until > tk->now_s ? until - tk->now_s : 1;
    return ttl_s * 1000u;
}

static void tk_maybe_log_ready(ticket_keys *tk)
{
    if (!tk->ready_logged && ticket_keys_ready(tk, tk->now_s)) {
        tk->ready_logged = 1;
        log_msg(LOG_INFO, "ticket keys ready");
    }
}

static void tk_unlink(ticket_keys *tk, tk_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        tk->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

static void tk_failed(ticket_keys *tk, tk_slot *st)
{
    tk->stats.backend_failures++;
    st->retry_at = tk->now_s + TK_RETRY_S;
}

/* A completion for a slot that is still ours and still wanted. */
static void tk_handle(ticket_keys *tk, uint64_t slot, int phase, backend_status status,
                      const uint8_t *value, size_t value_len)
{
    size_t pos = slot % TK_POSITIONS;
    tk_slot *st = &tk->slots[pos];
    ticket_key *k = &tk->sec->keys[pos];
    uint64_t c = tk_slot_of(tk, tk->now_s);
    int fresh = slot >= c && slot <= tk_window_hi(tk, tk->now_s);

    switch (status) {
    case BACKEND_OK:
        if (phase == TK_ADD) {
            st->held = 1;
            st->verify_at = tk->now_s + tk->verify_s;
            tk->stats.generated++;
            break;
        }
        if (phase == TK_REPUBLISH) {
            st->verify_at = tk->now_s + tk->verify_s;
            break;
        }
        if (value == NULL || value_len != TK_VALUE_LEN) {
            /* Not a key of ours (the Redis backend authenticates values,
             * so this is a bug or a foreign writer): never adopt it. */
            tk_failed(tk, st);
            break;
        }
        if (phase == TK_VERIFY) {
            st->verify_at = tk->now_s + tk->verify_s;
            if (CRYPTO_memcmp(k->name, value, TICKET_NAME_LEN) == 0 &&
                CRYPTO_memcmp(k->aes_key, value + TICKET_NAME_LEN, TICKET_AES_LEN) == 0 &&
                CRYPTO_memcmp(k->hmac_key, value + TICKET_NAME_LEN + TICKET_AES_LEN,
                              TICKET_HMAC_LEN) == 0)
                break;
            tk_retire(tk, pos); /* the backend's copy wins (see the top comment) */
        }
        memcpy(k->name, value, TICKET_NAME_LEN);
        memcpy(k->aes_key, value + TICKET_NAME_LEN, TICKET_AES_LEN);
        memcpy(k->hmac_key, value + TICKET_NAME_LEN + TICKET_AES_LEN, TICKET_HMAC_LEN);
        tk_set_times(tk, k, slot);
        st->held = 1;
        st->verify_at = tk->now_s + tk->verify_s;
        tk->stats.adopted++;
        break;

    case BACKEND_NOT_FOUND:
        if (phase == TK_VERIFY) {
            tk_start(tk, slot, TK_REPUBLISH);
        } else if (phase == TK_GET && fresh) {
            if (tk_draw(k) != 0) {
                st->retry_at = tk->now_s + TK_RETRY_S;
                break;
            }
            tk_set_times(tk, k, slot);
            tk_start(tk, slot, TK_ADD);
        } else if (phase == TK_GET) {
            st->given_up = 1;
        } else {
            /* GET_AGAIN: the winner's entry vanished between the add and
             * the get (expiry or a flush). Start over at a later tick rather
             * than loop here. */
            st->retry_at = tk->now_s + TK_RETRY_S;
        }
        break;

    case BACKEND_EXISTS:
        if (phase == TK_ADD) {
            OPENSSL_cleanse(k, sizeof(*k));
            tk->stats.lost_races++;
            tk_start(tk, slot, TK_GET_AGAIN);
        } else if (phase == TK_REPUBLISH) {
            st->verify_at = tk->now_s; /* someone stored one: read it at the next tick */
        } else {
            tk_failed(tk, st);
        }
        break;

    default: /* UNAVAILABLE, ERROR */
        if (phase == TK_ADD)
            OPENSSL_cleanse(k, sizeof(*k));
        tk_failed(tk, st);
        break;
    }
}

static void tk_done(void *arg, backend_status status, const uint8_t *value, size_t value_len)
{
    tk_op *op = arg;
    ticket_keys *tk = op->tk;
    uint64_t slot = op->slot;
    int phase = op->phase;

    if (tk == NULL) { /* orphaned: the instance is gone */
        free(op);
        return;
    }
    tk_unlink(tk, op);
    tk_slot *st = &tk->slots[slot % TK_POSITIONS];
    int ours = st->known && st->slot == slot && st->pending == op;
    free(op);
    if (!ours)
        return;
    st->pending = NULL;
    if (!tk_in_window(tk, slot, tk->now_s)) {
        /* Time moved on while the op was in flight: a candidate is dropped,
         * a read key is not adopted (tick retires what falls out anyway). */
        if (!st->held)
            OPENSSL_cleanse(&tk->sec->keys[slot % TK_POSITIONS], sizeof(ticket_key));
        return;
    }
    tk_handle(tk, slot, phase, status, value, value_len);
    tk_maybe_log_ready(tk);
}

/* One backend op for `slot`. The completion may run before this returns. */
static void tk_start(ticket_keys *tk, uint64_t slot, int phase)
{
    size_t pos = slot % TK_POSITIONS;
    tk_slot *st = &tk->slots[pos];
    uint8_t key[TK_KEY_LEN];

    tk_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        if (phase == TK_ADD)
            OPENSSL_cleanse(&tk->sec->keys[pos], sizeof(ticket_key));
        tk_failed(tk, st);
        return;
    }
    op->tk = tk;
    op->slot = slot;
    op->phase = phase;
    op->next = tk->ops;
    if (tk->ops)
        tk->ops->prev = op;
    tk->ops = op;
    st->pending = op;
    tk_backend_key(tk, slot, key);

    if (phase == TK_ADD || phase == TK_REPUBLISH) {
        const ticket_key *k = &tk->sec->keys[pos];
        uint8_t *v = tk->sec->value;
        memcpy(v, k->name, TICKET_NAME_LEN);
        memcpy(v + TICKET_NAME_LEN, k->aes_key, TICKET_AES_LEN);
        memcpy(v + TICKET_NAME_LEN + TICKET_AES_LEN, k->hmac_key, TICKET_HMAC_LEN);
        /* The backend copies the value during the call; a synchronous
         * completion never starts another add (EXISTS leads to a get), so
         * the buffer is not reused before it is wiped. */
        backend_add(tk->shared, key, sizeof(key), v, TK_VALUE_LEN, tk_ttl_ms(tk, slot), tk_done,
                    op);
        OPENSSL_cleanse(tk->sec->value, TK_VALUE_LEN);
    } else {
        backend_get(tk->shared, key, sizeof(key), tk_done, op);
    }
}

static int tk_region_new(ticket_keys *tk, char *err, size_t err_cap)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t pg = page > 0 ? (size_t)page : 4096;
    size_t len = (sizeof(tk_secrets) + pg - 1) / pg * pg;

    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        snprintf(err, err_cap, "mmap of %zu bytes failed: %s", len, strerror(errno));
        return -1;
    }
    /* Required: a core dump must never carry the keys. */
    if (madvise(p, len, MADV_DONTDUMP) != 0) {
        snprintf(err, err_cap, "madvise(MADV_DONTDUMP) failed: %s", strerror(errno));
        munmap(p, len);
        return -1;
    }
    /* Best effort: keeps the keys out of swap. */
    if (mlock(p, len) != 0) {
        tk->stats.mlock_failed = 1;
        log_msg(LOG_WARNING, "ticket keys: mlock of %zu bytes failed (%s): keys may be swapped",
                len, strerror(errno));
    }
    tk->sec = p;
    tk->sec_len = len;
    return 0;
}

ticket_keys *ticket_keys_new(uint32_t rotate_s, uint32_t lifetime_s, backend *shared, char *err,
                             size_t err_cap)
{
    char dummy[1];
    if (err == NULL || err_cap == 0) {
        err = dummy;
        err_cap = sizeof(dummy);
    }
    if (rotate_s < 1) {
        snprintf(err, err_cap, "rotate must be at least 1 second");
        return NULL;
    }
    if (lifetime_s < 1 || lifetime_s > TICKET_KEYS_MAX_LIFETIME) {
        snprintf(err, err_cap, "lifetime %u out of range 1..%u seconds", lifetime_s,
                 TICKET_KEYS_MAX_LIFETIME);
        return NULL;
    }
    uint32_t back = lifetime_s / rotate_s + (lifetime_s % rotate_s != 0);
    if ((uint64_t)back + 2 > TICKET_RING_MAX_KEYS) {
        snprintf(err, err_cap, "lifetime %u / rotate %u needs %u keys, more than the ring's %u",
                 lifetime_s, rotate_s, back + 2, (unsigned)TICKET_RING_MAX_KEYS);
        return NULL;
    }
    ticket_keys *tk = calloc(1, sizeof(*tk));
    if (tk == NULL) {
        snprintf(err, err_cap, "out of memory");
        return NULL;
    }
    tk->rotate_s = rotate_s;
    tk->lifetime_s = lifetime_s;
    tk->back = back;
    tk->verify_s = rotate_s / 4;
    if (tk->verify_s < 1)
        tk->verify_s = 1;
    if (tk->verify_s > TK_VERIFY_MAX_S)
        tk->verify_s = TK_VERIFY_MAX_S;
    /* Same clamp as verification; and only when slot c + 2 cannot share a
     * position with the oldest wanted slot. */
    if (back + 3 <= TK_POSITIONS)
        tk->lookahead_s = tk->verify_s;
    tk->shared = shared;
    if (tk_region_new(tk, err, err_cap) != 0) {
        free(tk);
        return NULL;
    }
    return tk;
}

void ticket_keys_free(ticket_keys *tk)
{
    if (tk == NULL)
        return;
    for (tk_op *op = tk->ops; op; op = op->next)
        op->tk = NULL; /* freed by its own completion */
    for (size_t pos = 0; pos < TK_POSITIONS; pos++)
        if (tk->slots[pos].held)
            tk_retire(tk, pos);
    OPENSSL_cleanse(tk->sec, tk->sec_len);
    munlock(tk->sec, tk->sec_len);
    munmap(tk->sec, tk->sec_len);
    free(tk);
}

void ticket_keys_tick(ticket_keys *tk, uint64_t now_s)
{
    if (tk == NULL || now_s > TK_MAX_TIME)
        return;
    tk->now_s = now_s;
    uint64_t c = tk_slot_of(tk, now_s);
    uint64_t lo = tk_window_lo(tk, c);

    /* Retire what can no longer decrypt (or lies outside the window after
     * the clock stepped back). */
    for (size_t pos = 0; pos < TK_POSITIONS; pos++) {
        const tk_slot *st = &tk->slots[pos];
        if (st->held && !tk_in_window(tk, st->slot, now_s))
            tk_retire(tk, pos);
    }

    uint64_t hi = tk_window_hi(tk, now_s);
    for (uint64_t s = lo; s <= hi; s++) {
        if (tk_expired(tk, s, now_s))
            continue;
        tk_slot *st = tk_slot_for(tk, s);
        if (st->pending || st->given_up)
            continue;
        if (tk->shared == NULL) {
            if (st->held || s < c)
                continue;
            ticket_key *k = &tk->sec->keys[s % TK_POSITIONS];
            if (tk_draw(k) != 0)
                continue;
            tk_set_times(tk, k, s);
            st->held = 1;
            tk->stats.generated++;
            continue;
        }
        if (st->held) {
            if (s >= c && now_s >= st->verify_at && now_s >= st->retry_at)
                tk_start(tk, s, TK_VERIFY);
            continue;
        }
        if (now_s >= st->retry_at)
            tk_start(tk, s, TK_GET);
    }
    tk_maybe_log_ready(tk);
}

int ticket_keys_ready(const ticket_keys *tk, uint64_t now_s)
{
    if (tk == NULL)
        return 0;
    uint64_t c = tk_slot_of(tk, now_s);
    return tk_holds(tk, c) && tk_holds(tk, c + 1);
}

int ticket_keys_encode(ticket_keys *tk, uint64_t now_s, uint8_t *out, size_t cap, size_t *out_len)
{
    if (tk == NULL)
        return -1;
    if (!ticket_keys_ready(tk, now_s)) {
        tk->stats.not_ready++;
        return -1;
    }
    ticket_ring *ring = &tk->sec->scratch;
    uint64_t c = tk_slot_of(tk, now_s);
    ring->rotate_s = tk->rotate_s;
    ring->lifetime_s = tk->lifetime_s;
    ring->generated_at = now_s;
    ring->n_keys = 0;
    for (uint64_t s = tk_window_lo(tk, c); s <= c + 1; s++)
        if (tk_holds(tk, s) && !tk_expired(tk, s, now_s))
            ring->keys[ring->n_keys++] = tk->sec->keys[s % TK_POSITIONS];
    int rc = ticket_ring_encode(ring, out, cap, out_len);
    OPENSSL_cleanse(ring, sizeof(*ring));
    if (rc == PROTO_OK)
        tk->stats.served++;
    return rc;
}

void ticket_keys_get_stats(const ticket_keys *tk, ticket_keys_stats *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof(*out));
    if (tk == NULL)
        return;
    *out = tk->stats;
    out->keys = 0;
    for (size_t pos = 0; pos < TK_POSITIONS; pos++)
        out->keys += tk->slots[pos].held;
}

void ticket_keys_region(const ticket_keys *tk, const void **addr, size_t *len)
{
    if (addr)
        *addr = tk ? tk->sec : NULL;
    if (len)
        *len = tk ? tk->sec_len : 0;
}

void ticket_keys_set_wipe_hook(ticket_keys *tk, void (*hook)(void *arg, const ticket_key *key),
                               void *arg)
{
    if (tk == NULL)
        return;
    tk->wipe_hook = hook;
    tk->wipe_arg = arg;
}
