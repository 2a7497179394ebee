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
 *   STATS (OK + the stats line). PUT and DEL with NO_REPLY get no answer.
 *   v2 answers echo the request ID and the key.
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

#include <stdio.h>
#include <string.h>

#include "log.h"

_Static_assert(CACHE_MAX_KEY >= DISPATCH_MAX_CACHE_KEY, "the cache must take a tag and a v2 key");

/* The stats line, also a STATS answer's value. */
#define DISPATCH_STATS_LINE 2048

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

/* ---- v1 ------------------------------------------------------------------ */

static void dispatch_v1_new(dispatch_ctx *ctx, const proto_v1_msg *msg, const uint8_t *ck,
                            size_t ck_len, uint64_t now_ms)
{
    uint64_t ttl_ms = dispatch_ttl_ms(ctx, msg->timeout);
    int rc = cache_put(ctx->cache, ck, ck_len, msg->value, msg->value_len, ttl_ms, now_ms);

    /* A refused put is already counted by the cache as `rejected`. */
    if (log_debug_enabled())
        log_msg(LOG_DEBUG, "NEW value_len=%zu ttl_ms=%llu%s", msg->value_len,
                (unsigned long long)ttl_ms, rc == 0 ? "" : " refused");
}

static size_t dispatch_v1_get(dispatch_ctx *ctx, const proto_v1_msg *msg, const uint8_t *ck,
                              size_t ck_len, uint8_t *out, size_t cap, uint64_t now_ms)
{
    size_t value_len = 0;
    const uint8_t *value = cache_get(ctx->cache, ck, ck_len, now_ms, &value_len);
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
    /* msg->key may sit exactly where the header goes (out == in): the
     * encoder moves it, and the value comes from the cache, elsewhere. */
    if (proto_v1_encode_answer_header(out, cap, type, msg->key) != PROTO_OK)
        return 0;
    if (type == PROTO_V1_FOUND)
        memcpy(out + PROTO_V1_HEADER_LEN, value, value_len);
    ctx->counters.answers++;
    if (log_debug_enabled())
        log_msg(LOG_DEBUG, "GET %s value_len=%zu", type == PROTO_V1_FOUND ? "hit" : "miss",
                answer_len - PROTO_V1_HEADER_LEN);
    return answer_len;
}

static size_t dispatch_v1(dispatch_ctx *ctx, const uint8_t *in, size_t len, uint8_t *out,
                          size_t cap, uint64_t now_ms)
{
    uint8_t ck[DISPATCH_MAX_CACHE_KEY];
    size_t ck_len;
    proto_v1_msg msg;
    proto_status status = proto_v1_parse_request(in, len, &msg);

    if (status != PROTO_OK)
        return dispatch_refuse(ctx, status, len);
    ctx->counters.v1++;
    ck_len = dispatch_cache_key(ck, DISPATCH_TAG_V1, msg.key, PROTO_V1_KEY_LEN);
    switch (msg.type) {
    case PROTO_V1_NEW:
        dispatch_v1_new(ctx, &msg, ck, ck_len, now_ms);
        return 0;
    case PROTO_V1_GET:
        return dispatch_v1_get(ctx, &msg, ck, ck_len, out, cap, now_ms);
    case PROTO_V1_REMOVE: {
        int found = cache_remove(ctx->cache, ck, ck_len);

        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "REMOVE %s", found ? "found" : "absent");
        return 0;
    }
    default:
        return 0; /* the parser accepts only the three request types */
    }
}

/* ---- v2 ------------------------------------------------------------------ */

/* Bytes an answer of these lengths takes on the wire. */
static size_t dispatch_v2_answer_size(int sealed, size_t key_len, size_t value_len)
{
    return (sealed ? PROTO_V2_OVERHEAD_MAX : PROTO_V2_HEADER_LEN) + key_len + value_len;
}

/* Writes answer `a`, sealed if the request was. Returns its length, or 0
 * if it could not be built (no room; or sealing failed, counted unsent). */
static size_t dispatch_v2_send(dispatch_ctx *ctx, proto_v2_msg *a, int sealed, uint8_t *out,
                               size_t cap, const dispatch_time *t)
{
    size_t answer_len = 0;
    int rc;

    if (sealed) {
        a->timestamp_ms = t->wall_ms;
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

static size_t dispatch_v2(dispatch_ctx *ctx, const proto_v2_msg *msg, int sealed, int small_only,
                          size_t request_len, uint8_t *out, size_t cap, const dispatch_time *t)
{
    size_t limit = cap < PROTO_MAX_DATAGRAM ? cap : PROTO_MAX_DATAGRAM;
    size_t small = small_only ? request_len : PROTO_MAX_DATAGRAM;
    uint8_t ck[DISPATCH_MAX_CACHE_KEY];
    char stats[DISPATCH_STATS_LINE];
    size_t ck_len = 0;
    proto_v2_msg a;
    int no_reply = (msg->flags & PROTO_V2_F_NO_REPLY) != 0;

    memset(&a, 0, sizeof(a));
    a.op = (uint8_t)(msg->op | PROTO_V2_ANSWER);
    a.request_id = msg->request_id;
    a.key = msg->key;
    a.key_len = msg->key_len;
    a.status = PROTO_V2_ST_OK;
    if (msg->key_len > 0)
        ck_len = dispatch_cache_key(ck, DISPATCH_TAG_V2, msg->key, msg->key_len);

    switch (msg->op) {
    case PROTO_V2_PUT: {
        uint64_t ttl_ms = dispatch_ttl_ms(ctx, msg->ttl);

        if (cache_put(ctx->cache, ck, ck_len, msg->value, msg->value_len, ttl_ms, t->now_ms) != 0)
            a.status = PROTO_V2_ST_REFUSED;
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 PUT%s value_len=%zu ttl_ms=%llu%s", sealed ? " sealed" : "",
                    msg->value_len, (unsigned long long)ttl_ms,
                    a.status == PROTO_V2_ST_OK ? "" : " refused");
        if (no_reply)
            return 0;
        break;
    }
    case PROTO_V2_GET: {
        size_t value_len = 0;
        const uint8_t *value = cache_get(ctx->cache, ck, ck_len, t->now_ms, &value_len);

        if (value != NULL && dispatch_v2_answer_size(sealed, a.key_len, value_len) > small) {
            a.status = PROTO_V2_ST_REFUSED; /* would amplify: see the top of the file */
        } else if (value != NULL &&
                   dispatch_v2_answer_size(sealed, a.key_len, value_len) <= limit) {
            a.value = value;
            a.value_len = value_len;
        } else {
            if (value != NULL)
                ctx->counters.answer_misfit++;
            a.status = PROTO_V2_ST_NOT_FOUND;
        }
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 GET%s %s value_len=%zu", sealed ? " sealed" : "",
                    a.value != NULL                   ? "hit"
                    : a.status == PROTO_V2_ST_REFUSED ? "hit refused (plaintext, not loopback)"
                                                      : "miss",
                    a.value_len);
        break;
    }
    case PROTO_V2_DEL: {
        int found = cache_remove(ctx->cache, ck, ck_len);

        if (!found)
            a.status = PROTO_V2_ST_NOT_FOUND;
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 DEL%s %s", sealed ? " sealed" : "", found ? "found" : "absent");
        if (no_reply)
            return 0;
        break;
    }
    case PROTO_V2_STATS: {
        int n = dispatch_stats_line(ctx, stats, sizeof(stats));

        if (n > 0) {
            a.value = (const uint8_t *)stats;
            a.value_len = (size_t)n < sizeof(stats) ? (size_t)n : sizeof(stats) - 1;
        }
        if (dispatch_v2_answer_size(sealed, 0, a.value_len) > small) {
            a.status = PROTO_V2_ST_REFUSED; /* would amplify */
            a.value_len = 0;
        }
        if (dispatch_v2_answer_size(sealed, 0, a.value_len) > limit)
            a.value_len = 0; /* only with a tiny caller's cap */
        if (a.value_len == 0)
            a.value = NULL;
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 STATS%s", sealed ? " sealed" : "");
        break;
    }
    case PROTO_V2_PING:
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "v2 PING%s", sealed ? " sealed" : "");
        break;
    default:
        return 0; /* the parser accepts only the five request ops */
    }
    return dispatch_v2_send(ctx, &a, sealed, out, cap, t);
}

/* ---- the entry point --------------------------------------------------- */

size_t dispatch_datagram(dispatch_ctx *ctx, uint8_t *in, size_t len, unsigned source, uint8_t *out,
                         size_t cap, const dispatch_time *t)
{
    int plaintext_ok =
        (source & DISPATCH_SOURCE_ALLOWED) && (ctx->sealer == NULL || ctx->allow_plaintext);
    proto_v2_msg msg;
    int status;

    ctx->counters.datagrams++;
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
        return dispatch_v1(ctx, in, len, out, cap, t->now_ms);
    case PROTO_V2_VERSION:
        /* The flags byte decides; a datagram too short to have one is
         * plaintext as far as policy goes (and short for the parser). */
        if (len > 2 && (in[2] & PROTO_V2_F_SEALED)) {
            status = proto_v2_open(ctx->sealer, in, len, 0, t->wall_ms, ctx->window_ms, &msg);
            if (status != PROTO_OK)
                return dispatch_refuse(ctx, status, len);
            ctx->counters.v2++;
            ctx->counters.sealed++;
            return dispatch_v2(ctx, &msg, 1, 0, len, out, cap, t);
        }
        if (!plaintext_ok)
            return dispatch_refuse(ctx, PROTO_ERR_SEALED_REQUIRED, len);
        status = proto_v2_parse(in, len, 0, &msg);
        if (status != PROTO_OK)
            return dispatch_refuse(ctx, status, len);
        ctx->counters.v2++;
        return dispatch_v2(ctx, &msg, 0, !(source & DISPATCH_SOURCE_LOOPBACK), len, out, cap, t);
    default:
        return dispatch_refuse(ctx, PROTO_ERR_VERSION, len);
    }
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
    return total;
}
