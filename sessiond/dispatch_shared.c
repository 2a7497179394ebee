/* dispatch_shared.c — the shared store (--backend) behind the local cache,
 * which becomes its near-cache.
 *
 * Rules:
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
 * The completion (dispatch_on_shared) builds every answer with
 * dispatch_answer, the one builder dispatch.c uses too. The cheaper alternative not taken:
 * answering every local miss "not found" at once and filling the near-cache in the background would
 * spare the record, but would make every first resumption on a node a full
 * handshake.
 */
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "dispatch_internal.h"
#include "log.h"

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

    if (p->req.op == PROTO_V2_TAKE && st == BACKEND_OK)
        ctx->counters.take_hits++;
    if (p->req.op == PROTO_V2_ADD && st == BACKEND_EXISTS)
        ctx->counters.add_exists++;
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
size_t dispatch_ask_shared(dispatch_ctx *ctx, const dispatch_req *r, const uint8_t *ck,
                           size_t ck_len, const uint8_t *value, size_t value_len, uint64_t ttl_ms,
                           int local_found, const dispatch_src *src, uint8_t *out, size_t cap)
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
