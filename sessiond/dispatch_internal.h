/* dispatch_internal.h — what dispatch.c and dispatch_shared.c share: the
 * part of a request an answer needs, and the answer builder. Not for the
 * rest of the daemon, which sees only dispatch.h.
 */
#ifndef SESSIOND_DISPATCH_INTERNAL_H
#define SESSIOND_DISPATCH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "dispatch.h"

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

/* The answer to request r with `status` and, for a found GET or TAKE, the
 * value (NULL otherwise), written to out[0..cap) sealed if r was; its length,
 * or 0 if none could be built (dispatch.c). */
size_t dispatch_answer(dispatch_ctx *ctx, const dispatch_req *r, uint8_t status,
                       const uint8_t *value, size_t value_len, uint8_t *out, size_t cap,
                       uint64_t wall_ms);

/* Hands request r (cache key ck, for ADD its value and TTL; for DEL whether
 * the local cache had it) to the shared store. Returns the answer's length
 * when the store answered at once, else 0: deferred, answered later through
 * send_late to src's address (dispatch_shared.c). */
size_t dispatch_ask_shared(dispatch_ctx *ctx, const dispatch_req *r, const uint8_t *ck,
                           size_t ck_len, const uint8_t *value, size_t value_len, uint64_t ttl_ms,
                           int local_found, const dispatch_src *src, uint8_t *out, size_t cap);

#endif
