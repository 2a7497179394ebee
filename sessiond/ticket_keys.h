/* ticket_keys.h — the daemon's ticket-key ring: generation, rotation, and
 * agreement between nodes through the shared backend.
 *
 * Time is cut into slots of `rotate` seconds; the key of slot s encrypts
 * from not_before = s*rotate to not_after = (s+1)*rotate, is published as
 * "next" during slot s-1, and decrypts until not_after + lifetime. At wall
 * time now (slot c) the ring holds the keys of slots c-ceil(lifetime/rotate)
 * .. c+1 that exist.
 *
 * Agreement (with a shared backend): for each slot it lacks, a node asks the
 * backend (get); if nobody stored that slot's key yet and the slot is c or
 * c+1, it draws a random key and offers it with an atomic add-if-absent: the
 * first offer wins, a loser reads the winner's key back and adopts it. A
 * node adopts only what it read from or wrote to the backend: a node cut off
 * from the backend never promotes a key the others may lack (it keeps
 * serving what it has; libsessionc stops issuing tickets once its current
 * key's not_after has passed). Without a backend this node alone is the
 * authority and draws its own keys.
 *
 * Secrets: every key lives in one mmap'ed region, mlock'ed (best effort:
 * RLIMIT_MEMLOCK may refuse; counted, not fatal) and excluded from core
 * dumps (MADV_DONTDUMP), wiped with OPENSSL_cleanse when retired and when
 * freed. Never logged (names are not secret, but are not logged either).
 *
 * Not thread-safe: one instance belongs to the event loop thread. Progress
 * is made only in ticket_keys_tick (the server calls it from its sweep
 * timer, tests with their own clock); backend completions may arrive
 * between ticks.
 */
#ifndef SESSIOND_TICKET_KEYS_H
#define SESSIOND_TICKET_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "ticket_ring.h"

/* Bounds checked by config.c. */
#define TICKET_KEYS_DEFAULT_ROTATE   3600u
#define TICKET_KEYS_DEFAULT_LIFETIME 43200u
#define TICKET_KEYS_MAX_LIFETIME     604800u /* 7 days: the TLS 1.3 ticket limit */
/* The backend key of a slot starts with this tag byte (dispatch uses 1 and 2). */
#define TICKET_KEYS_BACKEND_TAG 3

typedef struct ticket_keys ticket_keys;

typedef struct ticket_keys_stats {
    uint64_t generated;        /* keys drawn here (and, with a backend, won the add) */
    uint64_t adopted;          /* keys read from the backend (drawn by another node) */
    uint64_t lost_races;       /* our offer lost the add: adopted the winner's */
    uint64_t backend_failures; /* backend ops that completed UNAVAILABLE or ERROR */
    uint64_t retired;          /* keys wiped after not_after + lifetime */
    uint64_t served;           /* rings encoded for KEYS answers */
    uint64_t not_ready;        /* KEYS asked before the ring had a current and a next key */
    uint64_t mlock_failed;     /* 1 if the key region could not be locked */
    uint64_t keys;             /* now: keys held */
} ticket_keys_stats;

/* rotate_s >= 1, lifetime_s 1..TICKET_KEYS_MAX_LIFETIME, and
 * ceil(lifetime/rotate) + 2 <= TICKET_RING_MAX_KEYS (else NULL with a one-line
 * reason in err). `shared` (may be NULL: this node is the authority) is not
 * owned and must outlive the instance. */
ticket_keys *ticket_keys_new(uint32_t rotate_s, uint32_t lifetime_s, backend *shared, char *err,
                             size_t err_cap);

/* Wipes every key and frees. NULL is a no-op. Pending backend operations
 * must have completed (free the backend first, or let the loop drain). */
void ticket_keys_free(ticket_keys *tk);

/* Makes progress at wall time now_s (Unix seconds): retires expired keys,
 * asks the backend for missing slots (at most one op per slot in flight),
 * draws keys where this node is the authority. Cheap when nothing is due. */
void ticket_keys_tick(ticket_keys *tk, uint64_t now_s);

/* 1 when the ring has the key of slot c (current) and c+1 (next). */
int ticket_keys_ready(const ticket_keys *tk, uint64_t now_s);

/* Encodes the ring as it stands at now_s (keys that may still decrypt, the
 * current and the next). PROTO_OK, or PROTO_ERR_NOSPACE, or -1 when not
 * ready (answer UNAVAILABLE). */
int ticket_keys_encode(ticket_keys *tk, uint64_t now_s, uint8_t *out, size_t cap, size_t *out_len);

void ticket_keys_get_stats(const ticket_keys *tk, ticket_keys_stats *out);

/* For tests: the secret region (to check its VmFlags in /proc/self/smaps),
 * and a hook called with each key's bytes just before they are wiped
 * (observing that retirement wipes). */
void ticket_keys_region(const ticket_keys *tk, const void **addr, size_t *len);
void ticket_keys_set_wipe_hook(ticket_keys *tk, void (*hook)(void *arg, const ticket_key *key),
                               void *arg);

#endif
