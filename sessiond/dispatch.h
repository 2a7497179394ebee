/* dispatch.h — what the daemon does with one datagram: parse, act on the
 * cache, maybe build an answer. No sockets, no clock, no globals: the caller
 * hands in the bytes, the time and the output buffer, so the same code runs
 * under the event loop, in unit tests and under a fuzzer on a bare cache.
 *
 * Counters live in the dispatch_ctx; together with the cache's own stats
 * they make the daemon's "stats:" log line (dispatch_stats_line).
 */
#ifndef SESSIOND_DISPATCH_H
#define SESSIOND_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "cache.h"
#include "proto.h"

typedef struct dispatch_counters {
    uint64_t datagrams;                        /* handed to dispatch_datagram */
    uint64_t malformed;                        /* dropped unanswered: the sum of malformed_by[] */
    uint64_t malformed_by[PROTO_STATUS_COUNT]; /* indexed by the parser's proto_status */
    uint64_t answers;                          /* answers built */
    uint64_t answer_misfit; /* GET hits answered "not found": the value did not fit `cap` */
    /* Filled in by the transport (server.c), kept here so one line says it all. */
    uint64_t unsent;      /* answers built but not sent (socket buffer full, send error) */
    uint64_t recv_errors; /* receive calls that failed other than "no more data" */
} dispatch_counters;

typedef struct dispatch_ctx {
    cache *cache;
    uint32_t max_ttl_s; /* a request's timeout 0 means this; larger ones are capped to it */
    dispatch_counters counters;
} dispatch_ctx;

void dispatch_init(dispatch_ctx *ctx, cache *c, uint32_t max_ttl_s);

/* Handles one received datagram `in[0..len)` at time now_ms (any monotonic
 * clock, milliseconds; the cache's clock). A len over PROTO_MAX_DATAGRAM
 * means the datagram was too long (the transport passes a truncated
 * datagram's length as more than the limit). Returns the length of the answer
 * written to out[0..cap), or 0 when nothing is to be sent: NEW, REMOVE and
 * malformed datagrams are never answered.
 *
 * `out` may be `in` itself (answering in the receive buffer saves a buffer
 * per datagram), or a separate buffer; any other overlap is not allowed. A
 * GET answer is 36 bytes plus the value, so a cap of PROTO_MAX_DATAGRAM
 * always suffices. */
size_t dispatch_datagram(dispatch_ctx *ctx, const uint8_t *in, size_t len, uint8_t *out, size_t cap,
                         uint64_t now_ms);

/* Writes the counters as one line of space-separated name=value fields:
 *   gets=N hits=N misses=N puts=N removes=N expired=N evicted=N rejected=N
 *   entries=N bytes=N malformed=N oversized=N datagrams=N answers=N
 *   answer_misfit=N unsent=N recv_errors=N malformed_<reason>=N...
 * (one malformed_<reason> per parser refusal, named by proto_status_name;
 * oversized is malformed_too_long, also counted in malformed). The first
 * twelve fields keep this order; later fields may be added. Returns what
 * snprintf would (the line is truncated to cap). */
int dispatch_stats_line(const dispatch_ctx *ctx, char *buf, size_t cap);

#endif
