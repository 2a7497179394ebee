/* ticket_ring.h — the ticket-key ring as it travels in a v2 KEYS answer.
 *
 * Pure encode/decode like the rest of proto/: no I/O, no clock, no
 * allocation. The daemon (sessiond/ticket_keys.c) builds a ring and encodes
 * it; libsessionc decodes it and installs it on its SSL_CTXs; sessionctl
 * decodes it to list it or write nginx/HAProxy key files. It only ever
 * travels sealed (the daemon refuses KEYS in plaintext), so the key bytes
 * in it are protected by the cluster key.
 *
 * A ticket key: a random 16-byte name, a 32-byte AES-256 key and a 32-byte
 * HMAC-SHA256 key, and two times in Unix seconds (UTC):
 *   not_before  the key starts encrypting (it is published earlier, as "next");
 *   not_after   the key stops encrypting; it still decrypts until
 *               not_after + lifetime, then it leaves the ring.
 * The key that encrypts at time t is the one with not_before <= t < not_after
 * (the latest not_before wins should two overlap); none: issue no tickets.
 *
 * Encoding (big-endian):
 *   0   1  format (TICKET_RING_FORMAT)
 *   1   1  reserved, 0
 *   2   2  N, number of keys (0..TICKET_RING_MAX_KEYS), oldest first
 *   4   4  rotate, seconds
 *   8   4  lifetime, seconds
 *   12  8  generated_at: the daemon's wall clock, Unix seconds
 *   20  N * 96 bytes: name[16] aes_key[32] hmac_key[32] not_before[8] not_after[8]
 */
#ifndef SESSIOND_TICKET_RING_H
#define SESSIOND_TICKET_RING_H

#include <stddef.h>
#include <stdint.h>

#define TICKET_RING_FORMAT     1
#define TICKET_NAME_LEN        16
#define TICKET_AES_LEN         32
#define TICKET_HMAC_LEN        32
#define TICKET_RING_HEADER_LEN 20
#define TICKET_RING_ENTRY_LEN  (TICKET_NAME_LEN + TICKET_AES_LEN + TICKET_HMAC_LEN + 16)
/* Enough for lifetime/rotate up to 253 plus current and next; 24.6 KB. */
#define TICKET_RING_MAX_KEYS 256
#define TICKET_RING_MAX_LEN  (TICKET_RING_HEADER_LEN + TICKET_RING_MAX_KEYS * TICKET_RING_ENTRY_LEN)

typedef struct ticket_key {
    uint8_t name[TICKET_NAME_LEN];
    uint8_t aes_key[TICKET_AES_LEN];
    uint8_t hmac_key[TICKET_HMAC_LEN];
    uint64_t not_before; /* Unix seconds: starts encrypting */
    uint64_t not_after;  /* Unix seconds: stops encrypting; decrypts until + lifetime */
} ticket_key;

typedef struct ticket_ring {
    uint32_t rotate_s;
    uint32_t lifetime_s;
    uint64_t generated_at;
    size_t n_keys;
    ticket_key keys[TICKET_RING_MAX_KEYS]; /* oldest (smallest not_before) first */
} ticket_ring;

/* Where a key stands at time `now` (Unix seconds). */
typedef enum ticket_key_state {
    TICKET_KEY_NEXT,    /* published, decrypts, not yet encrypting */
    TICKET_KEY_CURRENT, /* encrypts (and decrypts) */
    TICKET_KEY_OLD,     /* decrypts only */
    TICKET_KEY_EXPIRED, /* past not_after + lifetime: unusable */
} ticket_key_state;

/* Writes ring into out[0..cap). Returns PROTO_OK with *out_len set, or
 * PROTO_ERR_NOSPACE / PROTO_ERR_INVALID (more than TICKET_RING_MAX_KEYS, keys
 * not ordered by not_before, not_before >= not_after). */
int ticket_ring_encode(const ticket_ring *ring, uint8_t *out, size_t cap, size_t *out_len);

/* Parses buf[0..len) into *ring. Returns PROTO_OK, or a proto status
 * (PROTO_ERR_SHORT, PROTO_ERR_VERSION for another format, PROTO_ERR_LENGTH
 * when N disagrees with len, PROTO_ERR_INVALID for the rules of encode). On
 * failure *ring is wiped. */
int ticket_ring_decode(const uint8_t *buf, size_t len, ticket_ring *ring);

ticket_key_state ticket_key_state_at(const ticket_ring *ring, const ticket_key *key, uint64_t now);

/* The key that encrypts at `now`, or NULL (then issue no tickets). */
const ticket_key *ticket_ring_current(const ticket_ring *ring, uint64_t now);

/* The key named `name` that may still decrypt at `now`, or NULL. */
const ticket_key *ticket_ring_find(const ticket_ring *ring, const uint8_t name[TICKET_NAME_LEN],
                                   uint64_t now);

/* A constant name for a state: "next", "current", "old", "expired". */
const char *ticket_key_state_name(ticket_key_state state);

#endif
