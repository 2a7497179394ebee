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
 * A shared store behind the local cache (--backend): see dispatch_shared.c.
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

#include "dispatch_internal.h"
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
size_t dispatch_answer(dispatch_ctx *ctx, const dispatch_req *r, uint8_t status,
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
         * leaves it for a sealed retry. The status is header byte 3, in
         * clear in a sealed answer too. With a shared store the store has
         * already deleted it: a plaintext TAKE from a non-loopback source
         * that would amplify loses the value (seal TAKEs). */
        if (value != NULL && len > 0 && out[3] == PROTO_V2_ST_OK) {
            cache_remove(ctx->cache, ck, ck_len);
            ctx->counters.take_hits++;
        }
        return len;
    }
    case PROTO_V2_ADD: {
        uint64_t ttl_ms = dispatch_ttl_ms(ctx, msg->ttl);

        ctx->counters.adds++;
        if (ctx->shared != NULL)
            return dispatch_ask_shared(ctx, &r, ck, ck_len, msg->value, msg->value_len, ttl_ms, 0,
                                       src, out, cap);
        if (cache_get(ctx->cache, ck, ck_len, t->now_ms, &value_len) != NULL) {
            status = PROTO_V2_ST_EXISTS;
            ctx->counters.add_exists++;
        } else if (cache_put(ctx->cache, ck, ck_len, msg->value, msg->value_len, ttl_ms,
                             t->now_ms) != 0)
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
    dispatch_append(buf, cap, &total, "take_hits", n->take_hits);
    dispatch_append(buf, cap, &total, "adds", n->adds);
    dispatch_append(buf, cap, &total, "add_exists", n->add_exists);
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
