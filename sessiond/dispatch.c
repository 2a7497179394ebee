/* dispatch.c — one datagram in, at most one answer out.
 *
 * How it works: the version byte picks the path. Plaintext (v1, and v2
 * without the SEALED flag) first passes the source policy, and only then
 * the parser: a sender the policy refuses never gets to exercise the parser
 * or the cache. Sealed v2 goes to proto_v2_open, which checks framing, key
 * ID, tag and timestamp and decrypts in place. Each refusal is counted under
 * exactly one reason (malformed_<reason>, denied, auth_failed, stale,
 * unknown_key) and dropped without an answer: answering garbage would turn
 * the daemon into a reflector, and a refusal tells a prober nothing.
 *
 * Operations:
 *   v1 NEW/GET/REMOVE as stunnel speaks them (NEW and REMOVE unanswered).
 *   v2 PUT (TTL 0 means --max-ttl, larger is capped; OK or REFUSED),
 *   GET (OK + value, or NOT_FOUND), DEL (OK or NOT_FOUND), PING (OK),
 *   STATS (OK + the stats line), TAKE (OK + value once, then NOT_FOUND),
 *   ADD (OK, or EXISTS), KEYS (the ticket-key ring; sealed only, refused as
 *   denied in plaintext whatever the policy). PUT and DEL with NO_REPLY get
 *   no answer. v2 answers echo the request ID and the key.
 *
 * A shared store (--backend; dispatch_set_shared), behind the local cache
 * which becomes its near-cache:
 *   - PUT/NEW store locally and write through, without waiting (the store's
 *     outcome is not the client's problem: a lost write costs one miss).
 *   - GET answers a local hit at once; a local miss is asked of the store
 *     and answered when it replies (or times out: the backend's
 *     --backend-timeout), and a found value is kept locally for at most
 *     DISPATCH_NEAR_TTL_S. That bound is the coherence rule's safety net:
 *     DEL and TAKE on any node publish an invalidation that drops near
 *     copies everywhere (backend_redis.c), but an invalidation missed while
 *     a node's subscription was down can leave a stale copy, served for at
 *     most that long (a locally written entry keeps its full TTL: the
 *     writer's copy is the one most likely to be asked for again).
 *   - DEL/REMOVE delete both; a DEL that wants an answer waits for the store
 *     (OK if either had it).
 *   - TAKE and ADD are decided by the store alone (that is what makes them
 *     cluster-wide); a store that cannot be asked answers UNAVAILABLE, never
 *     a guess from local memory. TAKE also drops the local copy.
 *   - The store may complete synchronously (down, saturated: UNAVAILABLE at
 *     once; or the memory backend in tests): the answer is then built in the
 *     datagram's own buffer and returned as usual. Otherwise the request is
 *     kept as a dispatch_pending (its key, request ID and the sender's
 *     address, ~250 bytes, the only allocation on any path) and answered
 *     through send_late. The backend caps requests in flight (1024), which
 *     bounds this memory.
 *
 * No amplification: a plaintext v2 request from a source that is not
 * loopback gets an answer no larger than itself. PUT, DEL, PING and a GET
 * miss are that small anyway; a GET hit or STATS would not be, and is
 * answered REFUSED without a value, so the client learns to seal instead of
 * seeing a false miss. Without this, one forged-source GET for a stored key
 * from an allowed network would reflect up to 64 KiB at a victim. v1 GET
 * hits to allowed sources are exempt (stunnel cannot seal; keep --allow
 * narrow), and so are sealed requests (only key holders can make them).
 *
 * The GET hit path allocates nothing and copies the value once: v1 writes
 * the 36-byte header (proto_v1_encode_answer_header) and copies the value
 * straight from the cache entry behind it; v2 hands the cache's pointer to
 * proto_v2_encode/proto_v2_seal, which place it in the answer buffer (and,
 * sealed, encrypt it there in place). The only other copy is the key, at
 * most 65 bytes, into a stack buffer with the namespace tag in front; the
 * cheaper alternative, a cache API taking the tag and key as two pieces,
 * would spread the tag convention into the cache for ~20 ns.
 *
 * Answering in place (out == in): a v1 answer's key sits where the
 * request's was; a v2 answer's key sits where the request's plaintext key
 * is (offset 16 plain, 40 sealed, after opening in place), which the v2
 * encoders allow. Values come from the cache or a stack buffer, never from
 * `in`.
 *
 * Secrets: keys and values are never logged. Debug lines say only the
 * operation, lengths and outcome, and are formatted only when debug logging
 * is on, so the hot path pays one branch for them.
 *
 * Known limits: a sealed request replayed within the window is served again
 * (there is no memory of nonces seen; see sessiond.8); a GET hit whose
 * answer would not fit `cap` or one datagram is answered "not found"
 * (answer_misfit) rather than truncated, which with the daemon's buffers
 * and the v2 value limit cannot happen.
 */
#include "dispatch.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"

_Static_assert(CACHE_MAX_KEY >= DISPATCH_MAX_CACHE_KEY, "the cache must take a tag and a v2 key");

/* The stats line, also a STATS answer's value. */
#define DISPATCH_STATS_LINE 4096

void dispatch_init(dispatch_ctx *ctx, cache *c, uint32_t max_ttl_s)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->cache = c;
    ctx->max_ttl_s = max_ttl_s;
    ctx->window_ms = PROTO_V2_DEFAULT_WINDOW_MS;
}

void dispatch_set_security(dispatch_ctx *ctx, proto_v2_sealer *sealer, int allow_plaintext,
                           uint64_t window_ms)
{
    ctx->sealer = sealer;
    ctx->allow_plaintext = allow_plaintext != 0;
    ctx->window_ms = window_ms;
}

static uint64_t dispatch_ttl_ms(const dispatch_ctx *ctx, uint32_t ttl_s)
{
    if (ttl_s == 0 || ttl_s > ctx->max_ttl_s)
        ttl_s = ctx->max_ttl_s;
    return (uint64_t)ttl_s * 1000u;
}

/* tag || key into buf (DISPATCH_MAX_CACHE_KEY bytes); returns the length. */
static size_t dispatch_cache_key(uint8_t *buf, uint8_t tag, const uint8_t *key, size_t key_len)
{
    buf[0] = tag;
    memcpy(buf + 1, key, key_len);
    return 1 + key_len;
}

/* Counts a refusal under its reason. Always returns 0: no answer. */
static size_t dispatch_refuse(dispatch_ctx *ctx, int status, size_t len)
{
    dispatch_counters *n = &ctx->counters;

    switch (status) {
    case PROTO_ERR_SEALED_REQUIRED:
        n->denied++;
        break;
    case PROTO_ERR_AUTH:
        n->auth_failed++;
        break;
    case PROTO_ERR_STALE:
        n->stale++;
        break;
    case PROTO_ERR_UNKNOWN_KEY:
        n->unknown_key++;
        break;
    default:
        if (status <= PROTO_OK || status >= PROTO_V2_STATUS_COUNT)
            status = PROTO_ERR_INVALID; /* cannot happen; keeps the index in range */
        n->malformed++;
        n->malformed_by[status]++;
        break;
    }
    if (log_debug_enabled())
        log_msg(LOG_DEBUG, "dropped datagram of %zu bytes: %s", len,
                status == PROTO_ERR_SEALED_REQUIRED ? "denied" : proto_v2_status_name(status));
    return 0;
}

/* A v1 GET answer: FOUND with value, or NOT_FOUND when value is NULL. */
static size_t dispatch_v1_answer(dispatch_ctx *ctx, const uint8_t *key, const uint8_t *value,
                                 size_t value_len, uint8_t *out, size_t cap)
{
    size_t limit = cap < PROTO_MAX_DATAGRAM ? cap : PROTO_MAX_DATAGRAM;
    size_t answer_len = PROTO_V1_HEADER_LEN;
    uint8_t type = PROTO_V1_NOT_FOUND;

    if (limit < PROTO_V1_HEADER_LEN)
        return 0;
    if (value != NULL && value_len <= limit - PROTO_V1_HEADER_LEN) {
        type = PROTO_V1_FOUND;
        answer_len += value_len;
    } else if (value != NULL) {
        ctx->counters.answer_misfit++;
    }
    /* key may sit exactly where the header goes (out == in): the encoder
     * moves it, and the value comes from the cache, elsewhere. */
    if (proto_v1_encode_answer_header(out, cap, type, key) != PROTO_OK)
        return 0;
    if (type == PROTO_V1_FOUND)
        memcpy(out + PROTO_V1_HEADER_LEN, value, value_len);
    ctx->counters.answers++;
    if (log_debug_enabled())
        log_msg(LOG_DEBUG, "GET %s value_len=%zu", type == PROTO_V1_FOUND ? "hit" : "miss",
                answer_len - PROTO_V1_HEADER_LEN);
    return answer_len;
}

/* ---- answers -------------------------------------------------------------- */

/* Who sent the datagram, for an answer sent later. */
typedef struct dispatch_src {
    const void *peer;
    size_t peer_len;
} dispatch_src;

/* What an answer needs to know of its request: kept in a pending record
 * when the answer comes later. */
typedef struct dispatch_req {
    uint8_t version; /* 1 or 2 */
    uint8_t op;      /* v2 op; PROTO_V1_GET for v1 */
    uint8_t sealed;
    uint8_t no_reply;
    size_t small; /* the largest answer allowed (no amplification) */
    uint32_t request_id;
    const uint8_t *key;
    size_t key_len;
} dispatch_req;

/* Bytes an answer of these lengths takes on the wire. */
static size_t dispatch_v2_answer_size(int sealed, size_t key_len, size_t value_len)
{
    return (sealed ? PROTO_V2_OVERHEAD_MAX : PROTO_V2_HEADER_LEN) + key_len + value_len;
}

/* Writes answer `a`, sealed if the request was. Returns its length, or 0
 * if it could not be built (no room; or sealing failed, counted unsent). */
static size_t dispatch_v2_send(dispatch_ctx *ctx, proto_v2_msg *a, int sealed, uint8_t *out,
                               size_t cap, uint64_t wall_ms)
{
    size_t answer_len = 0;
    int rc;

    if (sealed) {
        a->timestamp_ms = wall_ms;
        rc = proto_v2_seal(ctx->sealer, out, cap, a, &answer_len);
    } else {
        rc = proto_v2_encode(out, cap, a, &answer_len);
    }
    if (rc != PROTO_OK) {
        /* NOSPACE only with a caller's cap below one header plus key;
         * CRYPTO is RAND_bytes or EVP failing: rare, and not the peer's
         * fault, so it is logged. */
        if (rc == PROTO_ERR_CRYPTO) {
            ctx->counters.unsent++;
            log_msg(LOG_WARNING, "cannot seal an answer");
        }
        return 0;
    }
    ctx->counters.answers++;
    return answer_len;
}

/* The answer to request r with `status` and, for a found GET or TAKE, the
 * value (NULL otherwise). A value that would amplify is answered REFUSED
 * without it, one that does not fit `cap` NOT_FOUND (answer_misfit). For v1
 * only FOUND/NOT_FOUND exist: any status but OK is "not found". */
static size_t dispatch_answer(dispatch_ctx *ctx, const dispatch_req *r, uint8_t status,
                              const uint8_t *value, size_t value_len, uint8_t *out, size_t cap,
                              uint64_t wall_ms)
{
    size_t limit = cap < PROTO_MAX_DATAGRAM ? cap : PROTO_MAX_DATAGRAM;
    proto_v2_msg a;

    if (r->version == PROTO_V1_VERSION)
        return dispatch_v1_answer(ctx, r->key, status == PROTO_V2_ST_OK ? value : NULL, value_len,
                                  out, cap);
    memset(&a, 0, sizeof(a));
    a.op = (uint8_t)(r->op | PROTO_V2_ANSWER);
    a.request_id = r->request_id;
    a.key = r->key;
    a.key_len = r->key_len;
    a.status = status;
    if (value != NULL && status == PROTO_V2_ST_OK) {
        size_t size = dispatch_v2_answer_size(r->sealed, a.key_len, value_len);

        if (size > r->small) {
            a.status = PROTO_V2_ST_REFUSED; /* would amplify: see the top of the file */
        } else if (size > limit) {
            ctx->counters.answer_misfit++;
            a.status = PROTO_V2_ST_NOT_FOUND;
        } else {
            a.value = value;
            a.value_len = value_len;
        }
    }
    return dispatch_v2_send(ctx, &a, r->sealed, out, cap, wall_ms);
}

/* ---- the shared store ----------------------------------------------------
 *
 * A request that needs the shared store becomes a dispatch_pending: a copy
 * of what its answer needs and of the sender's address. The store's
 * completion builds the answer: into the datagram's own buffer when it runs
 * synchronously (store down, saturated, or the memory backend), else into
 * late_buf, handed to send_late. The record is the only allocation on this
 * path; a local hit never gets here. */

struct dispatch_pending {
    dispatch_pending *prev, *next;
    dispatch_ctx *ctx;
    dispatch_req req;
    uint8_t key[PROTO_V2_MAX_KEY];
    uint8_t ck[DISPATCH_MAX_CACHE_KEY];
    size_t ck_len;
    int local_found; /* DEL: the near cache had it */
    int in_call;     /* the store's call has not returned yet */
    uint8_t *out;    /* in_call: the datagram's answer buffer */
    size_t cap;
    size_t answer_len; /* in_call: what the completion wrote */
    size_t peer_len;
    uint8_t peer[sizeof(struct sockaddr_storage)];
};

static void dispatch_pending_free(dispatch_pending *p)
{
    OPENSSL_cleanse(p, sizeof(*p)); /* a session ID and an address */
    free(p);
}

/* The answer status for a store's outcome, per operation. */
static uint8_t dispatch_shared_status(const dispatch_pending *p, backend_status st)
{
    switch (p->req.op) {
    case PROTO_V2_ADD:
        return st == BACKEND_OK       ? PROTO_V2_ST_OK
               : st == BACKEND_EXISTS ? PROTO_V2_ST_EXISTS
                                      : PROTO_V2_ST_UNAVAILABLE;
    case PROTO_V2_TAKE:
        return st == BACKEND_OK          ? PROTO_V2_ST_OK
               : st == BACKEND_NOT_FOUND ? PROTO_V2_ST_NOT_FOUND
                                         : PROTO_V2_ST_UNAVAILABLE;
    case PROTO_V2_DEL:
        /* Deleted in either place is deleted; an unreachable store leaves
         * only the local answer to give. */
        return st == BACKEND_OK || p->local_found ? PROTO_V2_ST_OK : PROTO_V2_ST_NOT_FOUND;
    default: /* GET, v1 GET: a store that cannot answer is a miss */
        return st == BACKEND_OK ? PROTO_V2_ST_OK : PROTO_V2_ST_NOT_FOUND;
    }
}

static void dispatch_on_shared(void *arg, backend_status st, const uint8_t *value, size_t value_len)
{
    dispatch_pending *p = arg;
    dispatch_ctx *ctx = p->ctx;
    uint8_t status = dispatch_shared_status(p, st);
    int is_get = p->req.op == PROTO_V2_GET || p->req.version == PROTO_V1_VERSION;
    uint8_t *out = p->in_call ? p->out : ctx->late_buf;
    size_t cap = p->in_call ? p->cap : PROTO_MAX_DATAGRAM + 1;
    size_t len = 0;

    if (st == BACKEND_UNAVAILABLE || st == BACKEND_ERROR)
        ctx->counters.backend_unavailable++;
    else if (is_get)
        *(st == BACKEND_OK ? &ctx->counters.backend_hits : &ctx->counters.backend_misses) += 1;
    /* A fetched copy lives near for a bounded time (see the top of the file). */
    if (is_get && st == BACKEND_OK)
        cache_put(ctx->cache, p->ck, p->ck_len, value, value_len, ctx->near_ttl_ms,
                  ctx->last_now_ms);
    if (!p->req.no_reply && out != NULL)
        len = dispatch_answer(ctx, &p->req, status, st == BACKEND_OK ? value : NULL, value_len, out,
                              cap, ctx->last_wall_ms);
    if (log_debug_enabled())
        log_msg(LOG_DEBUG, "shared %s: %s%s", p->req.version == PROTO_V1_VERSION ? "v1 GET" : "v2",
                backend_status_name(st), p->in_call ? "" : " (late)");
    if (p->in_call) {
        p->answer_len = len;
        p->in_call = 0; /* tells the caller the completion has run */
        return;
    }
    if (len > 0 && ctx->send_late != NULL && p->peer_len > 0)
        ctx->send_late(ctx->send_arg, p->peer, p->peer_len, out, len);
    if (out != NULL)
        OPENSSL_cleanse(out, len);
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        ctx->pending = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    dispatch_pending_free(p);
}

/* Hands request r to the shared store. Returns the answer's length when
 * the store answered at once, else 0 (deferred, or nothing to answer). */
static size_t dispatch_ask_shared(dispatch_ctx *ctx, const dispatch_req *r, const uint8_t *ck,
                                  size_t ck_len, const uint8_t *value, size_t value_len,
                                  uint64_t ttl_ms, int local_found, const dispatch_src *src,
                                  uint8_t *out, size_t cap)
{
    dispatch_pending *p = calloc(1, sizeof(*p));
    size_t len;

    if (p == NULL) {
        /* Out of memory: answer as if the store were down. */
        dispatch_pending stack;

        memset(&stack, 0, sizeof(stack));
        stack.ctx = ctx;
        stack.req = *r;
        stack.local_found = local_found;
        stack.in_call = 1;
        stack.out = out;
        stack.cap = cap;
        dispatch_on_shared(&stack, BACKEND_UNAVAILABLE, NULL, 0);
        return stack.answer_len;
    }
    p->ctx = ctx;
    p->req = *r;
    memcpy(p->key, r->key, r->key_len);
    p->req.key = p->key;
    memcpy(p->ck, ck, ck_len);
    p->ck_len = ck_len;
    p->local_found = local_found;
    if (src->peer != NULL && src->peer_len <= sizeof(p->peer)) {
        memcpy(p->peer, src->peer, src->peer_len);
        p->peer_len = src->peer_len;
    }
    p->in_call = 1;
    p->out = out;
    p->cap = cap;
    switch (r->op) {
    case PROTO_V2_TAKE:
        backend_take(ctx->shared, ck, ck_len, dispatch_on_shared, p);
        break;
    case PROTO_V2_ADD:
        backend_add(ctx->shared, ck, ck_len, value, value_len, ttl_ms, dispatch_on_shared, p);
        break;
    case PROTO_V2_DEL:
        backend_del(ctx->shared, ck, ck_len, dispatch_on_shared, p);
        break;
    default:
        backend_get(ctx->shared, ck, ck_len, dispatch_on_shared, p);
        break;
    }
    if (!p->in_call) { /* completed synchronously */
        len = p->answer_len;
        dispatch_pending_free(p);
        return len;
    }
    p->in_call = 0;
    p->out = NULL;
    p->next = ctx->pending;
    if (ctx->pending != NULL)
        ctx->pending->prev = p;
    ctx->pending = p;
    ctx->counters.deferred++;
    return 0;
}

static void dispatch_on_invalidate(void *arg, const uint8_t *key, size_t key_len)
{
    dispatch_ctx *ctx = arg;

    if (cache_remove(ctx->cache, key, key_len))
        ctx->counters.invalidated++;
}

int dispatch_set_shared(dispatch_ctx *ctx, backend *shared, dispatch_send_fn send_late,
                        void *send_arg)
{
    if (ctx->late_buf == NULL)
        ctx->late_buf = malloc(PROTO_MAX_DATAGRAM + 1);
    if (ctx->late_buf == NULL)
        return -1;
    ctx->shared = shared;
    ctx->send_late = send_late;
    ctx->send_arg = send_arg;
    ctx->near_ttl_ms = (uint64_t)DISPATCH_NEAR_TTL_S * 1000u;
    if (shared != NULL)
        backend_set_invalidate(shared, dispatch_on_invalidate, ctx);
    return 0;
}

int dispatch_set_tickets(dispatch_ctx *ctx, ticket_keys *tickets)
{
    if (ctx->ring_buf == NULL)
        ctx->ring_buf = malloc(TICKET_RING_MAX_LEN);
    if (ctx->ring_buf == NULL)
        return -1;
    ctx->tickets = tickets;
    return 0;
}

void dispatch_release(dispatch_ctx *ctx)
{
    while (ctx->pending != NULL) {
        dispatch_pending *p = ctx->pending;

        ctx->pending = p->next;
        dispatch_pending_free(p);
    }
    if (ctx->late_buf != NULL)
        OPENSSL_cleanse(ctx->late_buf, PROTO_MAX_DATAGRAM + 1);
    free(ctx->late_buf);
    if (ctx->ring_buf != NULL)
        OPENSSL_cleanse(ctx->ring_buf, TICKET_RING_MAX_LEN);
    free(ctx->ring_buf);
    ctx->late_buf = ctx->ring_buf = NULL;
    ctx->shared = NULL;
    ctx->tickets = NULL;
}

/* ---- v1 ------------------------------------------------------------------ */

static size_t dispatch_v1(dispatch_ctx *ctx, const uint8_t *in, size_t len, const dispatch_src *src,
                          uint8_t *out, size_t cap, const dispatch_time *t)
{
    uint8_t ck[DISPATCH_MAX_CACHE_KEY];
    size_t ck_len, value_len = 0;
    const uint8_t *value;
    proto_v1_msg msg;
    dispatch_req r;
    proto_status status = proto_v1_parse_request(in, len, &msg);

    if (status != PROTO_OK)
        return dispatch_refuse(ctx, status, len);
    ctx->counters.v1++;
    ck_len = dispatch_cache_key(ck, DISPATCH_TAG_V1, msg.key, PROTO_V1_KEY_LEN);
    switch (msg.type) {
    case PROTO_V1_NEW: {
        uint64_t ttl_ms = dispatch_ttl_ms(ctx, msg.timeout);
        int rc = cache_put(ctx->cache, ck, ck_len, msg.value, msg.value_len, ttl_ms, t->now_ms);

        /* A refused put is already counted by the cache as `rejected`. */
        if (ctx->shared != NULL)
            backend_put(ctx->shared, ck, ck_len, msg.value, msg.value_len, ttl_ms, NULL, NULL);
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "NEW value_len=%zu ttl_ms=%llu%s", msg.value_len,
                    (unsigned long long)ttl_ms, rc == 0 ? "" : " refused");
        return 0;
    }
    case PROTO_V1_GET:
        value = cache_get(ctx->cache, ck, ck_len, t->now_ms, &value_len);
        memset(&r, 0, sizeof(r));
        r.version = PROTO_V1_VERSION;
        r.op = PROTO_V1_GET;
        r.key = msg.key;
        r.key_len = PROTO_V1_KEY_LEN;
        if (value == NULL && ctx->shared != NULL)
            return dispatch_ask_shared(ctx, &r, ck, ck_len, NULL, 0, 0, 0, src, out, cap);
        return dispatch_v1_answer(ctx, msg.key, value, value_len, out, cap);
    case PROTO_V1_REMOVE: {
        int found = cache_remove(ctx->cache, ck, ck_len);

        if (ctx->shared != NULL)
            backend_del(ctx->shared, ck, ck_len, NULL, NULL);
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "REMOVE %s", found ? "found" : "absent");
        return 0;
    }
    default:
        return 0; /* the parser accepts only the three request types */
    }
}

/* ---- v2 ------------------------------------------------------------------ */

/* KEYS: the ticket-key ring, only ever sealed (checked by the caller). */
static size_t dispatch_v2_keys(dispatch_ctx *ctx, const dispatch_req *r, uint8_t *out, size_t cap,
                               const dispatch_time *t)
{
    size_t ring_len = 0, len;
    int ok;

    ctx->counters.keys_requests++;
    ok = ctx->tickets != NULL && ticket_keys_encode(ctx->tickets, t->wall_ms / 1000u, ctx->ring_buf,
                                                    TICKET_RING_MAX_LEN, &ring_len) == PROTO_OK;
    len = dispatch_answer(ctx, r, ok ? PROTO_V2_ST_OK : PROTO_V2_ST_UNAVAILABLE,
                          ok ? ctx->ring_buf : NULL, ring_len, out, cap, t->wall_ms);
    if (ok)
        OPENSSL_cleanse(ctx->ring_buf, ring_len);
    if (log_debug_enabled())
        log_msg(LOG_DEBUG, "v2 KEYS %s", ok ? "served" : "unavailable");
    return len;
}

static size_t dispatch_v2(dispatch_ctx *ctx, const proto_v2_msg *msg, int sealed, int small_only,
                          size_t request_len, const dispatch_src *src, uint8_t *out, size_t cap,
                          const dispatch_time *t)
{
    uint8_t ck[DISPATCH_MAX_CACHE_KEY];
    char stats[DISPATCH_STATS_LINE];
    size_t ck_len = 0, value_len = 0;
    const uint8_t *value;
    dispatch_req r;
    uint8_t status = PROTO_V2_ST_OK;

    memset(&r, 0, sizeof(r));
    r.version = PROTO_V2_VERSION;
    r.op = msg->op;
    r.sealed = (uint8_t)sealed;
    r.no_reply = (msg->flags & PROTO_V2_F_NO_REPLY) != 0;
    r.small = small_only ? request_len : PROTO_MAX_DATAGRAM;
    r.request_id = msg->request_id;
    r.key = msg->key;
    r.key_len = msg->key_len;
    if (msg->key_len > 0)
        ck_len = dispatch_cache_key(ck, DISPATCH_TAG_V2, msg->key, msg->key_len);

    switch (msg->op) {
    case PROTO_V2_PUT: {
        uint64_t ttl_ms = dispatch_ttl_ms(ctx, msg->ttl);

        if (cache_put(ctx->cache, ck, ck_len, msg->value, msg->value_len, ttl_ms, t->now_ms) != 0)
            status = PROTO_V2_ST_REFUSED;
        if (ctx->shared != NULL)
            backend_put(ctx->shared, ck, ck_len, msg->value, msg->value_len, ttl_ms, NULL, NULL);
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 PUT%s value_len=%zu ttl_ms=%llu%s", sealed ? " sealed" : "",
                    msg->value_len, (unsigned long long)ttl_ms,
                    status == PROTO_V2_ST_OK ? "" : " refused");
        if (r.no_reply)
            return 0;
        return dispatch_answer(ctx, &r, status, NULL, 0, out, cap, t->wall_ms);
    }
    case PROTO_V2_GET:
        value = cache_get(ctx->cache, ck, ck_len, t->now_ms, &value_len);
        if (value == NULL && ctx->shared != NULL)
            return dispatch_ask_shared(ctx, &r, ck, ck_len, NULL, 0, 0, 0, src, out, cap);
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 GET%s %s value_len=%zu", sealed ? " sealed" : "",
                    value != NULL ? "hit" : "miss", value_len);
        return dispatch_answer(ctx, &r, value != NULL ? PROTO_V2_ST_OK : PROTO_V2_ST_NOT_FOUND,
                               value, value_len, out, cap, t->wall_ms);
    case PROTO_V2_DEL: {
        int found = cache_remove(ctx->cache, ck, ck_len);

        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 DEL%s %s", sealed ? " sealed" : "", found ? "found" : "absent");
        if (ctx->shared != NULL && r.no_reply) {
            backend_del(ctx->shared, ck, ck_len, NULL, NULL);
            return 0;
        }
        if (ctx->shared != NULL)
            return dispatch_ask_shared(ctx, &r, ck, ck_len, NULL, 0, 0, found, src, out, cap);
        if (r.no_reply)
            return 0;
        return dispatch_answer(ctx, &r, found ? PROTO_V2_ST_OK : PROTO_V2_ST_NOT_FOUND, NULL, 0,
                               out, cap, t->wall_ms);
    }
    case PROTO_V2_TAKE: {
        size_t len;

        ctx->counters.takes++;
        if (ctx->shared != NULL) {
            /* The store decides who takes; a near copy must not outlive it. */
            cache_remove(ctx->cache, ck, ck_len);
            return dispatch_ask_shared(ctx, &r, ck, ck_len, NULL, 0, 0, 0, src, out, cap);
        }
        value = cache_get(ctx->cache, ck, ck_len, t->now_ms, &value_len);
        len = dispatch_answer(ctx, &r, value != NULL ? PROTO_V2_ST_OK : PROTO_V2_ST_NOT_FOUND,
                              value, value_len, out, cap, t->wall_ms);
        /* Taken only if the value went out: a refused (amplifying) answer
         * leaves it for a sealed retry. */
        if (value != NULL && len > 0 && out[3] == PROTO_V2_ST_OK)
            cache_remove(ctx->cache, ck, ck_len);
        return len;
    }
    case PROTO_V2_ADD: {
        uint64_t ttl_ms = dispatch_ttl_ms(ctx, msg->ttl);

        ctx->counters.adds++;
        if (ctx->shared != NULL)
            return dispatch_ask_shared(ctx, &r, ck, ck_len, msg->value, msg->value_len, ttl_ms, 0,
                                       src, out, cap);
        if (cache_get(ctx->cache, ck, ck_len, t->now_ms, &value_len) != NULL)
            status = PROTO_V2_ST_EXISTS;
        else if (cache_put(ctx->cache, ck, ck_len, msg->value, msg->value_len, ttl_ms, t->now_ms) !=
                 0)
            status = PROTO_V2_ST_REFUSED;
        return dispatch_answer(ctx, &r, status, NULL, 0, out, cap, t->wall_ms);
    }
    case PROTO_V2_STATS: {
        int n = dispatch_stats_line(ctx, stats, sizeof(stats));
        size_t limit = cap < PROTO_MAX_DATAGRAM ? cap : PROTO_MAX_DATAGRAM;
        proto_v2_msg a;

        memset(&a, 0, sizeof(a));
        a.op = (uint8_t)(msg->op | PROTO_V2_ANSWER);
        a.request_id = msg->request_id;
        if (n > 0) {
            a.value = (const uint8_t *)stats;
            a.value_len = (size_t)n < sizeof(stats) ? (size_t)n : sizeof(stats) - 1;
        }
        if (dispatch_v2_answer_size(sealed, 0, a.value_len) > r.small) {
            a.status = PROTO_V2_ST_REFUSED; /* would amplify */
            a.value_len = 0;
        }
        if (dispatch_v2_answer_size(sealed, 0, a.value_len) > limit)
            a.value_len = 0; /* only with a tiny caller's cap */
        if (a.value_len == 0)
            a.value = NULL;
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 STATS%s", sealed ? " sealed" : "");
        return dispatch_v2_send(ctx, &a, sealed, out, cap, t->wall_ms);
    }
    case PROTO_V2_KEYS:
        return dispatch_v2_keys(ctx, &r, out, cap, t);
    case PROTO_V2_PING:
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 PING%s", sealed ? " sealed" : "");
        return dispatch_answer(ctx, &r, PROTO_V2_ST_OK, NULL, 0, out, cap, t->wall_ms);
    default:
        return 0; /* the parser accepts only the request ops */
    }
}

/* ---- the entry point --------------------------------------------------- */

size_t dispatch_datagram_from(dispatch_ctx *ctx, uint8_t *in, size_t len, unsigned source,
                              const void *peer, size_t peer_len, uint8_t *out, size_t cap,
                              const dispatch_time *t)
{
    int plaintext_ok =
        (source & DISPATCH_SOURCE_ALLOWED) && (ctx->sealer == NULL || ctx->allow_plaintext);
    dispatch_src src = {peer, peer_len};
    proto_v2_msg msg;
    int status;

    ctx->counters.datagrams++;
    ctx->last_now_ms = t->now_ms;
    ctx->last_wall_ms = t->wall_ms;
    /* Checked here as well as in the parsers so "oversized" means exactly
     * that whatever order a parser applies its rules in. */
    if (len > PROTO_MAX_DATAGRAM)
        return dispatch_refuse(ctx, PROTO_ERR_TOO_LONG, len);
    if (len == 0)
        return dispatch_refuse(ctx, PROTO_ERR_SHORT, len);

    switch (in[0]) {
    case PROTO_V1_VERSION:
        if (!plaintext_ok)
            return dispatch_refuse(ctx, PROTO_ERR_SEALED_REQUIRED, len);
        return dispatch_v1(ctx, in, len, &src, out, cap, t);
    case PROTO_V2_VERSION:
        /* The flags byte decides; a datagram too short to have one is
         * plaintext as far as policy goes (and short for the parser). */
        if (len > 2 && (in[2] & PROTO_V2_F_SEALED)) {
            status = proto_v2_open(ctx->sealer, in, len, 0, t->wall_ms, ctx->window_ms, &msg);
            if (status != PROTO_OK)
                return dispatch_refuse(ctx, status, len);
            ctx->counters.v2++;
            ctx->counters.sealed++;
            return dispatch_v2(ctx, &msg, 1, 0, len, &src, out, cap, t);
        }
        if (!plaintext_ok)
            return dispatch_refuse(ctx, PROTO_ERR_SEALED_REQUIRED, len);
        status = proto_v2_parse(in, len, 0, &msg);
        if (status != PROTO_OK)
            return dispatch_refuse(ctx, status, len);
        /* Ticket keys never travel in plaintext, whatever the policy. */
        if (msg.op == PROTO_V2_KEYS)
            return dispatch_refuse(ctx, PROTO_ERR_SEALED_REQUIRED, len);
        ctx->counters.v2++;
        return dispatch_v2(ctx, &msg, 0, !(source & DISPATCH_SOURCE_LOOPBACK), len, &src, out, cap,
                           t);
    default:
        return dispatch_refuse(ctx, PROTO_ERR_VERSION, len);
    }
}

size_t dispatch_datagram(dispatch_ctx *ctx, uint8_t *in, size_t len, unsigned source, uint8_t *out,
                         size_t cap, const dispatch_time *t)
{
    return dispatch_datagram_from(ctx, in, len, source, NULL, 0, out, cap, t);
}

/* ---- statistics --------------------------------------------------------- */

/* Statuses that can come out of parsing or opening and are counted as
 * malformed: encoder-only statuses and the ones with counters of their own
 * are left out of the line rather than printed as always 0. */
static int dispatch_is_parse_reason(int status)
{
    switch (status) {
    case PROTO_OK:
    case PROTO_ERR_NOSPACE:
    case PROTO_ERR_INVALID:
    case PROTO_ERR_UNKNOWN_KEY:
    case PROTO_ERR_AUTH:
    case PROTO_ERR_STALE:
    case PROTO_ERR_SEALED_REQUIRED:
    case PROTO_ERR_CRYPTO:
        return 0;
    default:
        return 1;
    }
}

/* Appends to a line being built with snprintf semantics: *total is what the
 * whole line would take; buf is written only up to cap. */
static void dispatch_append(char *buf, size_t cap, int *total, const char *name, uint64_t value)
{
    size_t used;
    int more;

    if (*total < 0)
        return;
    used = (size_t)*total < cap ? (size_t)*total : cap;
    more = snprintf(buf + used, cap - used, " %s=%llu", name, (unsigned long long)value);
    *total = more < 0 ? more : *total + more;
}

int dispatch_stats_line(const dispatch_ctx *ctx, char *buf, size_t cap)
{
    const dispatch_counters *n = &ctx->counters;
    cache_stats cs;
    int total;

    memset(&cs, 0, sizeof(cs));
    if (ctx->cache != NULL)
        cache_get_stats(ctx->cache, &cs);
    total = snprintf(
        buf, cap,
        "gets=%llu hits=%llu misses=%llu puts=%llu removes=%llu expired=%llu "
        "evicted=%llu rejected=%llu entries=%llu bytes=%llu malformed=%llu "
        "oversized=%llu datagrams=%llu answers=%llu answer_misfit=%llu unsent=%llu "
        "recv_errors=%llu",
        (unsigned long long)cs.gets, (unsigned long long)cs.hits, (unsigned long long)cs.misses,
        (unsigned long long)cs.puts, (unsigned long long)cs.removes, (unsigned long long)cs.expired,
        (unsigned long long)cs.evicted, (unsigned long long)cs.rejected,
        (unsigned long long)cs.entries, (unsigned long long)cs.bytes,
        (unsigned long long)n->malformed, (unsigned long long)n->malformed_by[PROTO_ERR_TOO_LONG],
        (unsigned long long)n->datagrams, (unsigned long long)n->answers,
        (unsigned long long)n->answer_misfit, (unsigned long long)n->unsent,
        (unsigned long long)n->recv_errors);
    for (int status = 0; status < PROTO_V2_STATUS_COUNT; status++) {
        char name[48];

        if (!dispatch_is_parse_reason(status))
            continue;
        snprintf(name, sizeof(name), "malformed_%s", proto_v2_status_name(status));
        dispatch_append(buf, cap, &total, name, n->malformed_by[status]);
    }
    dispatch_append(buf, cap, &total, "denied", n->denied);
    dispatch_append(buf, cap, &total, "auth_failed", n->auth_failed);
    dispatch_append(buf, cap, &total, "stale", n->stale);
    dispatch_append(buf, cap, &total, "unknown_key", n->unknown_key);
    dispatch_append(buf, cap, &total, "v1", n->v1);
    dispatch_append(buf, cap, &total, "v2", n->v2);
    dispatch_append(buf, cap, &total, "sealed", n->sealed);
    dispatch_append(buf, cap, &total, "takes", n->takes);
    dispatch_append(buf, cap, &total, "adds", n->adds);
    dispatch_append(buf, cap, &total, "keys_requests", n->keys_requests);
    if (ctx->shared != NULL) {
        backend_stats bs;

        backend_get_stats(ctx->shared, &bs);
        dispatch_append(buf, cap, &total, "backend_hits", n->backend_hits);
        dispatch_append(buf, cap, &total, "backend_misses", n->backend_misses);
        dispatch_append(buf, cap, &total, "backend_unavailable", n->backend_unavailable);
        dispatch_append(buf, cap, &total, "backend_deferred", n->deferred);
        dispatch_append(buf, cap, &total, "backend_invalidated", n->invalidated);
        dispatch_append(buf, cap, &total, "backend_up", bs.up);
        dispatch_append(buf, cap, &total, "backend_ops", bs.ops);
        dispatch_append(buf, cap, &total, "backend_inflight", bs.inflight);
        dispatch_append(buf, cap, &total, "backend_timeouts", bs.timeouts);
        dispatch_append(buf, cap, &total, "backend_rejected_busy", bs.rejected_busy);
        dispatch_append(buf, cap, &total, "backend_errors", bs.errors);
        dispatch_append(buf, cap, &total, "backend_corrupt", bs.corrupt);
        dispatch_append(buf, cap, &total, "backend_reconnects", bs.reconnects);
        dispatch_append(buf, cap, &total, "backend_failovers", bs.failovers);
        for (int i = 0; i < BACKEND_LATENCY_BUCKETS; i++) {
            char name[48];

            if (i < BACKEND_LATENCY_BUCKETS - 1)
                snprintf(name, sizeof(name), "backend_latency_le_%uus",
                         (unsigned)backend_latency_bounds_us[i]);
            else
                snprintf(name, sizeof(name), "backend_latency_le_inf");
            dispatch_append(buf, cap, &total, name, bs.latency_buckets[i]);
        }
        dispatch_append(buf, cap, &total, "backend_latency_sum_us", bs.latency_sum_us);
    }
    if (ctx->tickets != NULL) {
        ticket_keys_stats ts;

        ticket_keys_get_stats(ctx->tickets, &ts);
        dispatch_append(buf, cap, &total, "ticket_keys", ts.keys);
        dispatch_append(buf, cap, &total, "ticket_generated", ts.generated);
        dispatch_append(buf, cap, &total, "ticket_adopted", ts.adopted);
        dispatch_append(buf, cap, &total, "ticket_backend_failures", ts.backend_failures);
        dispatch_append(buf, cap, &total, "ticket_retired", ts.retired);
        dispatch_append(buf, cap, &total, "ticket_served", ts.served);
        dispatch_append(buf, cap, &total, "ticket_not_ready", ts.not_ready);
    }
    return total;
}
