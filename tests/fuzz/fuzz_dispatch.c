/* fuzz_dispatch.c — libFuzzer harness for the daemon's dispatch
 * (sessiond/dispatch.c) on a real cache with a small budget.
 *
 * Input format: one config byte, then records until the input ends:
 *
 *   config  bit 0     a cluster key is configured (the sealer below)
 *           bit 1     --allow-plaintext
 *           bits 2-3  answer buffer: 65508 (the server's), 4096, 100 or 16 bytes
 *           bit 4     cache budget 8 KiB instead of 64 KiB
 *           bits 5-6  --max-ttl 1, 60, 3600 or 86400 s
 *   record  ctl:1  length:2 (big-endian)  bytes:length (cut at the end of input)
 *           ctl bit 0  the source matched the allow rules
 *               bit 1  the source is loopback
 *               bit 2  "seal it": if the bytes are a valid plain v2 request,
 *                      seal them with the harness key before dispatching, so
 *                      the fuzzer reaches every sealed operation without
 *                      having to forge GCM tags
 *               bit 3  answer in place (out == in), as the server does
 *               bit 4  with bit 2: seal with a timestamp 60 s old (stale)
 *               bits 5-7  advance the monotonic clock by n * 700 ms first
 *
 * The wall clock is fixed at NOW_MS, the timestamp of PROTOCOL.md's sealed
 * test vectors, and the key is theirs (00..1f), so the seeds' sealed
 * datagrams open. Invariants checked after every record (abort on failure):
 *   - the answer fits the buffer and one datagram;
 *   - each datagram moves exactly one of v1, v2, malformed, denied,
 *     auth_failed, stale, unknown_key by one, and `datagrams` by one;
 *   - an answer only for an accepted request, and `answers` counts them;
 *   - plaintext that the policy refuses is counted denied and unanswered;
 *   - every answer parses as an answer (v1) or parses/opens (v2) with the
 *     request's op | 0x80 and request ID, sealed exactly when the request
 *     was; a v1 answer echoes the request's key;
 *   - no amplification: a plaintext v2 answer to a non-loopback source is
 *     no larger than its request;
 *   - the cache's bytes never exceed its budget.
 *
 * Build and run: `make build/fuzz/fuzz_dispatch`, `make fuzz-smoke`.
 */
#include "backend.h"
#include "cache.h"
#include "dispatch.h"
#include "proto.h"
#include "proto_v2.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW_MS   1700000000000ULL
#define IN_SIZE  (PROTO_MAX_DATAGRAM + 1) /* the server's receive buffer */
#define MAX_RECS 64                       /* bounds one input's work */

static const uint8_t fuzz_key[PROTO_V2_CLUSTER_KEY_LEN] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};

static const size_t caps[4] = {IN_SIZE, 4096, 100, 16};
static const size_t budgets[2] = {64 * 1024, 8 * 1024};
static const uint32_t max_ttls[4] = {1, 60, 3600, 86400};

static uint8_t in_buf[IN_SIZE];
static uint8_t out_buf[IN_SIZE];
static uint8_t check_buf[IN_SIZE];

static proto_v2_sealer *fuzz_sealer(void)
{
    static proto_v2_sealer *sealer;

    if (sealer == NULL) {
        sealer = proto_v2_sealer_new(fuzz_key, NULL);
        if (sealer == NULL)
            abort();
    }
    return sealer;
}

static void require(int condition)
{
    if (!condition)
        abort();
}

static uint64_t accepted(const dispatch_counters *n)
{
    return n->v1 + n->v2;
}

static uint64_t refused(const dispatch_counters *n)
{
    return n->malformed + n->denied + n->auth_failed + n->stale + n->unknown_key;
}

/* "Seal it": replaces in_buf[0..*len) by its sealed form when it is a
 * valid plain v2 request. */
static void seal_in_place(size_t *len, int stale)
{
    static uint8_t plain[IN_SIZE];
    proto_v2_msg m;
    size_t sealed_len = 0;

    if (*len > sizeof(plain))
        return;
    memcpy(plain, in_buf, *len);
    if (proto_v2_parse(plain, *len, 0, &m) != PROTO_OK)
        return;
    m.timestamp_ms = stale ? NOW_MS - 60000 : NOW_MS;
    if (proto_v2_seal(fuzz_sealer(), in_buf, sizeof(in_buf), &m, &sealed_len) == PROTO_OK)
        *len = sealed_len;
}

/* Checks one answer against its request's header fields. */
static void check_answer(const uint8_t *answer, size_t answer_len, uint8_t version, int sealed,
                         uint8_t op, uint32_t request_id, const uint8_t *v1_key, size_t request_len,
                         unsigned source)
{
    memcpy(check_buf, answer, answer_len);
    if (version == PROTO_V1_VERSION) {
        proto_v1_msg m;

        require(proto_v1_parse_answer(check_buf, answer_len, &m) == PROTO_OK);
        require(memcmp(m.key, v1_key, PROTO_V1_KEY_LEN) == 0);
        return;
    }
    require(version == PROTO_V2_VERSION);
    {
        proto_v2_msg m;
        int rc = sealed ? proto_v2_open(fuzz_sealer(), check_buf, answer_len, 1, NOW_MS,
                                        PROTO_V2_DEFAULT_WINDOW_MS, &m)
                        : proto_v2_parse(check_buf, answer_len, 1, &m);

        require(rc == PROTO_OK);
        require(m.op == (op | PROTO_V2_ANSWER));
        require(m.request_id == request_id);
        require(((answer[2] & PROTO_V2_F_SEALED) != 0) == (sealed != 0));
    }
    if (!sealed && !(source & DISPATCH_SOURCE_LOOPBACK))
        require(answer_len <= request_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cache_config cc;
    cache *c, *shared_cache = NULL;
    backend *shared = NULL;
    dispatch_ctx ctx;
    dispatch_time t = {.now_ms = 1000, .wall_ms = NOW_MS};
    size_t pos = 1, cap;
    uint8_t config;
    int records = 0;

    if (size < 1)
        return 0;
    config = data[0];
    memset(&cc, 0, sizeof(cc));
    cc.max_bytes = budgets[(config >> 4) & 1];
    c = cache_create(&cc);
    if (c == NULL)
        return 0;
    dispatch_init(&ctx, c, max_ttls[(config >> 5) & 3]);
    if (config & 1)
        dispatch_set_security(&ctx, fuzz_sealer(), (config >> 1) & 1, PROTO_V2_DEFAULT_WINDOW_MS);
    /* A shared store behind the cache (the memory backend: its completions
     * are synchronous, so every answer still comes back from the call). */
    if (config & 0x80) {
        shared_cache = cache_create(&cc);
        shared = shared_cache != NULL ? backend_mem_new(shared_cache, NULL, NULL) : NULL;
        if (shared == NULL || dispatch_set_shared(&ctx, shared, NULL, NULL) != 0)
            abort();
    }
    cap = caps[(config >> 2) & 3];

    while (pos + 3 <= size && records++ < MAX_RECS) {
        uint8_t ctl = data[pos];
        size_t len = (size_t)data[pos + 1] << 8 | data[pos + 2];
        unsigned source = ctl & (DISPATCH_SOURCE_ALLOWED | DISPATCH_SOURCE_LOOPBACK);
        int in_place = (ctl & 0x08) != 0;
        dispatch_counters before = ctx.counters;
        uint8_t version, op = 0, v1_key[PROTO_V1_KEY_LEN];
        uint32_t request_id = 0;
        int sealed, plaintext_ok;
        size_t answer_len, this_cap = in_place ? IN_SIZE : cap;
        cache_stats cs;

        pos += 3;
        if (len > size - pos)
            len = size - pos;
        memcpy(in_buf, data + pos, len);
        pos += len;
        if ((ctl & 0x04) && (config & 1))
            seal_in_place(&len, (ctl & 0x10) != 0);
        t.now_ms += (uint64_t)(ctl >> 5) * 700;

        /* What the request says, read before dispatch opens it in place. */
        version = len > 0 ? in_buf[0] : 0;
        sealed = version == PROTO_V2_VERSION && len > 2 && (in_buf[2] & PROTO_V2_F_SEALED);
        if (len >= 8) {
            op = in_buf[1];
            request_id = (uint32_t)in_buf[4] << 24 | (uint32_t)in_buf[5] << 16 |
                         (uint32_t)in_buf[6] << 8 | in_buf[7];
        }
        if (len >= PROTO_V1_HEADER_LEN)
            memcpy(v1_key, in_buf + 4, PROTO_V1_KEY_LEN);
        plaintext_ok = (source & DISPATCH_SOURCE_ALLOWED) && (!(config & 1) || (config & 2));

        answer_len =
            dispatch_datagram(&ctx, in_buf, len, source, in_place ? in_buf : out_buf, this_cap, &t);

        require(answer_len <= this_cap && answer_len <= PROTO_MAX_DATAGRAM);
        require(ctx.counters.datagrams == before.datagrams + 1);
        require(accepted(&ctx.counters) + refused(&ctx.counters) ==
                accepted(&before) + refused(&before) + 1);
        require(ctx.counters.unsent == before.unsent);
        if (answer_len > 0) {
            require(accepted(&ctx.counters) == accepted(&before) + 1);
            require(ctx.counters.answers == before.answers + 1);
            check_answer(in_place ? in_buf : out_buf, answer_len, version, sealed, op, request_id,
                         v1_key, len, source);
        } else {
            require(ctx.counters.answers == before.answers);
        }
        if (len > 0 && len <= PROTO_MAX_DATAGRAM && !sealed && !plaintext_ok &&
            (version == PROTO_V1_VERSION || version == PROTO_V2_VERSION)) {
            require(ctx.counters.denied == before.denied + 1);
            require(answer_len == 0);
        }
        if (sealed && !(config & 1))
            require(answer_len == 0); /* nobody to open it with */
        cache_get_stats(c, &cs);
        require(cs.bytes <= cc.max_bytes);
    }
    dispatch_release(&ctx);
    backend_free(shared);
    cache_free(shared_cache);
    cache_free(c);
    return 0;
}
