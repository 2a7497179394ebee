/* dispatch.h — what the daemon does with one datagram: apply the source
 * policy, parse (or open) it, act on the cache, maybe build an answer. No
 * sockets, no clock reads, no globals: the caller hands in the bytes,
 * whether the sender matched the allow rules, the time and the output
 * buffer, so the same code runs under the event loop, in unit tests and
 * under a fuzzer on a bare cache.
 *
 * Policy (the whole of it lives in dispatch_datagram):
 *   - sealed v2 (flag SEALED) is opened with the sealer and accepted from any
 *     source: the cluster key is the authentication. Without a sealer it
 *     cannot be opened and is counted as unknown_key.
 *   - plaintext (v1, unsealed v2) is accepted only from a source flagged
 *     DISPATCH_SOURCE_ALLOWED and, if a sealer is set, only with
 *     allow_plaintext; otherwise it is dropped and counted as denied, before
 *     it is parsed. The caller decides what "allowed" means (server.c: the
 *     --allow rules, plus loopback when no key is configured).
 *   - sealed requests are answered sealed (current key, the caller's wall
 *     clock as timestamp); plaintext requests plainly.
 *   - no amplification: a plaintext v2 answer is never larger than its
 *     request unless the source is loopback (DISPATCH_SOURCE_LOOPBACK: a
 *     loopback source cannot be forged from another host); a GET hit or a
 *     STATS that would be is answered REFUSED without a value instead. v1 GET
 *     answers to allowed sources are the one exception (stunnel cannot
 *     seal). Sealed requests are answered in full.
 *   - nothing refused is ever answered.
 *
 * Cache keys: one tag byte (DISPATCH_TAG_V1 or DISPATCH_TAG_V2) followed by
 * the protocol's key, so v1 and v2 entries never see each other; a v2 key
 * starts with its own namespace, so namespaces are separated by the key
 * itself.
 *
 * Counters live in the dispatch_ctx; together with the cache's own stats
 * they make the daemon's "stats:" log line (dispatch_stats_line), which is
 * also the value of a v2 STATS answer.
 */
#ifndef SESSIOND_DISPATCH_H
#define SESSIOND_DISPATCH_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "cache.h"
#include "proto.h"
#include "proto_v2.h"
#include "ticket_keys.h"

#define DISPATCH_TAG_V1 1
#define DISPATCH_TAG_V2 2
/* Longest cache key dispatch builds: the tag and a v2 key. */
#define DISPATCH_MAX_CACHE_KEY (1 + PROTO_V2_MAX_KEY)

typedef struct dispatch_counters {
    uint64_t datagrams; /* handed to dispatch_datagram */
    uint64_t malformed; /* dropped unanswered because they did not parse: sum of malformed_by[] */
    uint64_t malformed_by[PROTO_V2_STATUS_COUNT]; /* indexed by the parser's status */
    uint64_t answers;                             /* answers built */
    uint64_t answer_misfit; /* GET hits answered "not found": the answer would not fit */
    /* Filled in by the transport (server.c), kept here so one line says it all;
     * dispatch adds the rare answer it could not seal (a crypto failure). */
    uint64_t unsent;      /* answers built but not sent (socket buffer full, send error) */
    uint64_t recv_errors; /* receive calls that failed other than "no more data" */
    /* Refusals that are not parse errors, each dropped unanswered. */
    uint64_t denied;      /* plaintext from a source the policy does not allow */
    uint64_t auth_failed; /* sealed, tag did not verify: tampered or another key */
    uint64_t stale;       /* sealed and authentic, but the timestamp is outside the window */
    uint64_t unknown_key; /* sealed with a key ID we do not hold (or no key configured) */
    /* Requests accepted (passed policy and parsing), by version. */
    uint64_t v1;
    uint64_t v2;     /* plain and sealed */
    uint64_t sealed; /* the sealed part of v2 */
    /* With a shared store (dispatch_set_shared). */
    uint64_t backend_hits;        /* local misses answered from the shared store */
    uint64_t backend_misses;      /* local misses the shared store did not have either */
    uint64_t backend_unavailable; /* shared store not asked or not answering in time */
    uint64_t deferred;            /* requests answered later, when the shared store replied */
    uint64_t invalidated;         /* near copies dropped on another node's delete or take */
    uint64_t takes;               /* v2 TAKE requests */
    uint64_t take_hits;           /* ... that took a value (a stateful ticket's one use) */
    uint64_t adds;                /* v2 ADD requests */
    uint64_t add_exists;          /* ... answered EXISTS (with anti-replay: a 0-RTT replay) */
    uint64_t keys_requests;       /* v2 KEYS requests (sealed) */
} dispatch_counters;

typedef struct dispatch_pending dispatch_pending;

/* Sends an answer built after dispatch_datagram_from returned (a deferred
 * request the shared store has now answered) to the peer recorded then. */
typedef void (*dispatch_send_fn)(void *arg, const void *peer, size_t peer_len, const uint8_t *buf,
                                 size_t len);

typedef struct dispatch_ctx {
    cache *cache;
    uint32_t max_ttl_s;      /* a request's timeout 0 means this; larger ones are capped to it */
    proto_v2_sealer *sealer; /* NULL without a key; not owned */
    int allow_plaintext;     /* with a sealer: plaintext from allowed sources is accepted */
    uint64_t window_ms;      /* accepted |timestamp - wall clock| of sealed datagrams */
    dispatch_counters counters;
    /* The shared store (dispatch_set_shared), or NULL: memory only. */
    backend *shared;
    dispatch_send_fn send_late;
    void *send_arg;
    uint64_t near_ttl_ms;               /* lifetime of a near copy fetched from the shared store */
    dispatch_pending *pending;          /* requests waiting for the shared store */
    uint8_t *late_buf;                  /* where deferred answers are built */
    ticket_keys *tickets;               /* --ticket-keys, or NULL; not owned */
    uint8_t *ring_buf;                  /* an encoded ring, wiped after each KEYS answer */
    uint64_t last_now_ms, last_wall_ms; /* the latest clocks handed in */
} dispatch_ctx;

/* What the transport knows about a datagram's sender (bits). */
enum dispatch_source {
    DISPATCH_SOURCE_ALLOWED = 0x01,  /* matched the allow rules: may use plaintext */
    DISPATCH_SOURCE_LOOPBACK = 0x02, /* a loopback address: cannot be forged from outside */
};

/* The two clocks of one datagram (read once per batch by the caller). */
typedef struct dispatch_time {
    uint64_t now_ms;  /* monotonic, milliseconds: the cache's clock */
    uint64_t wall_ms; /* Unix time, milliseconds: sealed timestamps */
} dispatch_time;

/* No key: plaintext from allowed sources only, sealed datagrams unknown_key. */
void dispatch_init(dispatch_ctx *ctx, cache *c, uint32_t max_ttl_s);

/* Sets the cluster key's sealer (NULL: none), --allow-plaintext and the
 * window. The sealer must outlive the context. */
void dispatch_set_security(dispatch_ctx *ctx, proto_v2_sealer *sealer, int allow_plaintext,
                           uint64_t window_ms);

/* A lifetime of near copies fetched from the shared store, seconds: the
 * bound on how long a node may serve a copy another node deleted while the
 * invalidation channel was down (see dispatch.c). */
#define DISPATCH_NEAR_TTL_S 60

/* Puts a shared store behind the local cache (see dispatch.c for the
 * rules): writes go to both, local misses are asked of the store and
 * answered later through send_late, TAKE and ADD go to the store. Sets the
 * store's invalidate hook. `shared` is not owned; free the context
 * (dispatch_release) before it. Returns 0, or -1 out of memory. */
int dispatch_set_shared(dispatch_ctx *ctx, backend *shared, dispatch_send_fn send_late,
                        void *send_arg);

/* Serves the ticket-key ring to sealed KEYS requests. Returns 0, or -1 out
 * of memory. */
int dispatch_set_tickets(dispatch_ctx *ctx, ticket_keys *tickets);

/* Forgets requests still waiting (their answers are never sent) and frees
 * what the setters allocated. Call it after the shared store is freed, or
 * before if its completions can no longer arrive. */
void dispatch_release(dispatch_ctx *ctx);

/* dispatch_datagram for a transport that can answer later: peer[0..peer_len)
 * (at most sizeof(struct sockaddr_storage) bytes, copied) is handed back to
 * send_late with a deferred answer. Returns 0 when the request was deferred. */
size_t dispatch_datagram_from(dispatch_ctx *ctx, uint8_t *in, size_t len, unsigned source,
                              const void *peer, size_t peer_len, uint8_t *out, size_t cap,
                              const dispatch_time *t);

/* Handles one received datagram in[0..len). A len over PROTO_MAX_DATAGRAM
 * means the datagram was too long (the transport passes a truncated
 * datagram's length as more than the limit). `source` holds the
 * enum dispatch_source bits of the sender. Returns the length of the answer
 * written to out[0..cap), or 0 when nothing is to be sent: v1 NEW and
 * REMOVE, v2 PUT and DEL with NO_REPLY, and everything refused.
 *
 * `in` is not const: a sealed datagram is opened (decrypted) in place. `out`
 * may be `in` itself (answering in the receive buffer saves a buffer per
 * datagram), or a separate buffer; any other overlap is not allowed. An
 * answer is never longer than PROTO_MAX_DATAGRAM, so a cap of that size
 * always suffices; with less, a GET hit that does not fit is answered "not
 * found" (counted as answer_misfit). */
size_t dispatch_datagram(dispatch_ctx *ctx, uint8_t *in, size_t len, unsigned source, uint8_t *out,
                         size_t cap, const dispatch_time *t);

/* Writes the counters as one line of space-separated name=value fields:
 *   gets=N hits=N misses=N puts=N removes=N expired=N evicted=N rejected=N
 *   entries=N bytes=N malformed=N oversized=N datagrams=N answers=N
 *   answer_misfit=N unsent=N recv_errors=N malformed_<reason>=N...
 *   denied=N auth_failed=N stale=N unknown_key=N v1=N v2=N sealed=N
 * (one malformed_<reason> per parser refusal, named by proto_v2_status_name;
 * oversized is malformed_too_long, also counted in malformed). The first
 * twelve fields keep this order; later fields may be added. Every datagram
 * is either accepted (v1 + v2) or refused in exactly one of malformed,
 * denied, auth_failed, stale and unknown_key. Returns what snprintf would
 * (the line is truncated to cap). */
int dispatch_stats_line(const dispatch_ctx *ctx, char *buf, size_t cap);

#endif
