/* dispatch.c — one datagram in, at most one answer out.
 *
 * How it works: proto_v1_parse_request validates the datagram and points into
 * it (no copy); NEW stores the value with a TTL from the request's timeout
 * (0 = the daemon's maximum, anything larger capped to it); GET looks the key
 * up and writes the answer: the 36-byte header by
 * proto_v1_encode_answer_header, then the value copied once, straight from
 * the cache entry into the output buffer (the only copy on the hit path, and
 * no allocation); REMOVE deletes. A refused datagram is counted under the
 * parser's reason and dropped without an answer: answering garbage would
 * turn the daemon into a reflector, and stunnel never needs one.
 *
 * Secrets: keys and values are never logged. Debug lines say only the
 * operation and lengths, and are formatted only when debug logging is on,
 * so the hot path pays one branch for them.
 *
 * Known limit: a GET hit whose value does not fit the caller's buffer is
 * answered "not found" (counted as answer_misfit) rather than truncated;
 * with the daemon's PROTO_MAX_DATAGRAM-sized buffers it cannot happen,
 * because a stored value came in a datagram of at most that size.
 */
#include "dispatch.h"

#include <stdio.h>
#include <string.h>

#include "log.h"

void dispatch_init(dispatch_ctx *ctx, cache *c, uint32_t max_ttl_s)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->cache = c;
    ctx->max_ttl_s = max_ttl_s;
}

static uint64_t dispatch_ttl_ms(const dispatch_ctx *ctx, uint16_t timeout_s)
{
    uint32_t ttl_s = timeout_s;

    if (ttl_s == 0 || ttl_s > ctx->max_ttl_s)
        ttl_s = ctx->max_ttl_s;
    return (uint64_t)ttl_s * 1000u;
}

static void dispatch_new(dispatch_ctx *ctx, const proto_v1_msg *msg, uint64_t now_ms)
{
    uint64_t ttl_ms = dispatch_ttl_ms(ctx, msg->timeout);
    int rc = cache_put(ctx->cache, msg->key, PROTO_V1_KEY_LEN, msg->value, msg->value_len, ttl_ms,
                       now_ms);

    /* A refused put is already counted by the cache as `rejected`. */
    if (log_debug_enabled())
        log_msg(LOG_DEBUG, "NEW value_len=%zu ttl_ms=%llu%s", msg->value_len,
                (unsigned long long)ttl_ms, rc == 0 ? "" : " refused");
}

static size_t dispatch_get(dispatch_ctx *ctx, const proto_v1_msg *msg, uint8_t *out, size_t cap,
                           uint64_t now_ms)
{
    size_t value_len = 0;
    const uint8_t *value = cache_get(ctx->cache, msg->key, PROTO_V1_KEY_LEN, now_ms, &value_len);
    size_t answer_len = PROTO_V1_HEADER_LEN;
    uint8_t type = PROTO_V1_NOT_FOUND;

    if (value != NULL && value_len <= cap - PROTO_V1_HEADER_LEN) {
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

size_t dispatch_datagram(dispatch_ctx *ctx, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
                         uint64_t now_ms)
{
    proto_v1_msg msg;
    proto_status status;

    ctx->counters.datagrams++;
    /* Checked here as well as in the parser so "oversized" means exactly
     * that whatever order the parser applies its rules in. */
    status = len > PROTO_MAX_DATAGRAM ? PROTO_ERR_TOO_LONG : proto_v1_parse_request(in, len, &msg);
    if (status != PROTO_OK) {
        if ((unsigned)status >= PROTO_STATUS_COUNT)
            status = PROTO_ERR_INVALID; /* cannot happen; keeps the index in range */
        ctx->counters.malformed++;
        ctx->counters.malformed_by[status]++;
        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "dropped datagram of %zu bytes: %s", len, proto_status_name(status));
        return 0;
    }
    switch (msg.type) {
    case PROTO_V1_NEW:
        dispatch_new(ctx, &msg, now_ms);
        return 0;
    case PROTO_V1_GET:
        if (cap < PROTO_V1_HEADER_LEN)
            return 0;
        return dispatch_get(ctx, &msg, out, cap, now_ms);
    case PROTO_V1_REMOVE: {
        int found = cache_remove(ctx->cache, msg.key, PROTO_V1_KEY_LEN);

        if (log_debug_enabled())
            log_msg(LOG_DEBUG, "REMOVE %s", found ? "found" : "absent");
        return 0;
    }
    default:
        return 0; /* the parser accepts only the three request types */
    }
}

/* Encoder-only statuses never come out of the request parser: leave them
 * out of the line rather than print counters that are always 0. */
static int dispatch_is_parse_reason(int status)
{
    return status != PROTO_OK && status != PROTO_ERR_NOSPACE && status != PROTO_ERR_INVALID;
}

int dispatch_stats_line(const dispatch_ctx *ctx, char *buf, size_t cap)
{
    const dispatch_counters *n = &ctx->counters;
    cache_stats cs;
    size_t used;
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
    for (int status = 0; total >= 0 && status < PROTO_STATUS_COUNT; status++) {
        int more;

        if (!dispatch_is_parse_reason(status))
            continue;
        used = (size_t)total < cap ? (size_t)total : cap;
        more = snprintf(buf + used, cap - used, " malformed_%s=%llu",
                        proto_status_name((proto_status)status),
                        (unsigned long long)n->malformed_by[status]);
        total = more < 0 ? more : total + more;
    }
    return total;
}
