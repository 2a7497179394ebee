/* proto_v2.h — wire format version 2: request IDs, namespaced keys, values
 * up to a full datagram, more operations, and optional sealing (AEAD).
 *
 * Pure like proto.h: bytes in, structs out, no sockets, no globals, and no
 * allocation except inside a proto_v2_sealer (its cipher contexts and one
 * page of pre-drawn nonces), which the caller creates and frees. A sealer is
 * not thread-safe: use one per thread. It stays safe across fork(): the
 * child never reuses the parent's nonces.
 *
 * Plain datagram (all integers big-endian):
 *
 *   offset size field
 *   0      1    version (2)
 *   1      1    op: requests 0x01..0x7f, answers op|0x80
 *   2      1    flags: 0x01 SEALED, 0x02 NO_REPLY
 *   3      1    status (answers; 0 in requests)
 *   4      4    request ID, echoed in the answer
 *   8      4    TTL in seconds (PUT; 0 = the daemon's default)
 *   12     2    key length K (0..64)
 *   14     2    value length V
 *   16     K    key: namespace (16 bytes in libsessionc) + session ID
 *   16+K   V    value
 *
 * Sealed datagram (flag SEALED): the same 16-byte header (K and V are the
 * plaintext lengths), then
 *
 *   16     4    key ID: first 4 bytes of SHA-256 over the cluster key
 *   20     8    sender timestamp, milliseconds since the Unix epoch
 *   28     12   nonce, random per datagram
 *   40     K+V  ciphertext of key || value (AES-256-GCM)
 *   40+K+V 16   tag
 *
 * Bytes 0..39 are the associated data, so the header, the key ID and the
 * timestamp are authenticated though not secret. See PROTOCOL.md.
 */
#ifndef SESSIOND_PROTO_V2_H
#define SESSIOND_PROTO_V2_H

#include <stddef.h>
#include <stdint.h>
#include "proto.h"

#define PROTO_V2_VERSION      2
#define PROTO_V2_HEADER_LEN   16
#define PROTO_V2_MAX_KEY      64
#define PROTO_V2_SEAL_LEN     24 /* key ID + timestamp + nonce */
#define PROTO_V2_TAG_LEN      16
#define PROTO_V2_OVERHEAD_MAX (PROTO_V2_HEADER_LEN + PROTO_V2_SEAL_LEN + PROTO_V2_TAG_LEN)
/* The largest value that fits one datagram sealed, with the largest key. */
#define PROTO_V2_MAX_VALUE       (PROTO_MAX_DATAGRAM - PROTO_V2_OVERHEAD_MAX - PROTO_V2_MAX_KEY)
#define PROTO_V2_CLUSTER_KEY_LEN 32
#define PROTO_V2_NAMESPACE_LEN   16
#define PROTO_V2_KEY_ID_LEN      4
#define PROTO_V2_NONCE_LEN       12
/* Default accepted distance between a sealed datagram's timestamp and the receiver's clock. */
#define PROTO_V2_DEFAULT_WINDOW_MS 30000

enum proto_v2_op {
    PROTO_V2_PUT = 0x01,
    PROTO_V2_GET = 0x02,
    PROTO_V2_DEL = 0x03,
    PROTO_V2_PING = 0x04,
    PROTO_V2_STATS = 0x05,
    PROTO_V2_TAKE = 0x06, /* atomic get-and-delete: at most one taker gets the value */
    PROTO_V2_ADD = 0x07,  /* atomic add-if-absent: OK if stored, EXISTS if one was there */
    /* 0x08..0x0f: reserved for cache operations. */
    PROTO_V2_KEYS = 0x10, /* the ticket-key ring (sealed only; value: proto/ticket_ring.h) */
    /* 0x11..0x1f: reserved for ticket keys. 0x20..0x2f: reserved for peers. */
    PROTO_V2_ANSWER = 0x80, /* bit set in every answer's op */
};

enum proto_v2_flag {
    PROTO_V2_F_SEALED = 0x01,
    PROTO_V2_F_NO_REPLY = 0x02, /* PUT/DEL: the sender does not want an answer */
};

enum proto_v2_answer_status {
    PROTO_V2_ST_OK = 0,          /* done; GET: value follows */
    PROTO_V2_ST_NOT_FOUND = 1,   /* GET/DEL: no such entry */
    PROTO_V2_ST_REFUSED = 2,     /* PUT not stored (too large for the budget...) */
    PROTO_V2_ST_EXISTS = 3,      /* ADD: a live entry was there, nothing written */
    PROTO_V2_ST_UNAVAILABLE = 4, /* TAKE/ADD/KEYS: the answer cannot be given now (the
                                    shared store is unreachable; no ticket ring yet) */
};

/* Statuses beyond proto.h's, for v2 parsing and opening. */
enum {
    PROTO_ERR_LENGTH = PROTO_STATUS_COUNT, /* lengths in the header disagree with the datagram */
    PROTO_ERR_KEY,                         /* key length 0 where one is needed, or over 64 */
    PROTO_ERR_FLAGS,                       /* unknown flag bits, or nonzero status in a request */
    PROTO_ERR_UNKNOWN_KEY,                 /* sealed with a key ID we do not hold */
    PROTO_ERR_AUTH,                        /* tag did not verify: tampered or wrong key */
    PROTO_ERR_STALE,                       /* timestamp outside the window */
    PROTO_ERR_SEALED_REQUIRED,             /* (policy, used by the daemon) plaintext refused */
    PROTO_ERR_CRYPTO, /* seal: RAND_bytes or EVP failed (not the input's fault) */
    PROTO_V2_STATUS_COUNT
};

typedef struct proto_v2_msg {
    uint8_t op;
    uint8_t flags;
    uint8_t status;
    uint32_t request_id;
    uint32_t ttl;
    const uint8_t *key; /* NULL when key_len is 0 */
    size_t key_len;
    const uint8_t *value; /* NULL when value_len is 0 */
    size_t value_len;
    uint64_t timestamp_ms; /* sealed only */
} proto_v2_msg;

/* Parses a plain (unsealed) v2 datagram; with `answer` set it expects an
 * answer (op has bit 0x80), else a request with a known op. A datagram with
 * the SEALED flag is PROTO_ERR_FLAGS here: open it with proto_v2_open. */
int proto_v2_parse(const uint8_t *buf, size_t len, int answer, proto_v2_msg *msg);

/* Writes a plain v2 datagram of msg's fields into out[0..cap). Refuses,
 * with the status proto_v2_parse would give, anything the receiver would
 * refuse (so encode then parse is an identity); PROTO_ERR_NOSPACE if cap is
 * too small, PROTO_ERR_INVALID for a NULL msg or a NULL key/value with a
 * nonzero length. Nothing is written unless it succeeds. msg->key and
 * msg->value may already lie exactly where they go (in-place answers),
 * but not elsewhere inside out. An answer is recognised by op & 0x80. */
int proto_v2_encode(uint8_t *out, size_t cap, const proto_v2_msg *msg, size_t *out_len);

typedef struct proto_v2_sealer proto_v2_sealer;

/* A sealer holds up to two cluster keys: `key` seals and opens, `next_key`
 * (may be NULL) only opens, for a rollover where receivers learn the new key
 * before senders use it. NULL on allocation failure. The keys are copied and
 * wiped when the sealer is freed. */
proto_v2_sealer *proto_v2_sealer_new(const uint8_t key[PROTO_V2_CLUSTER_KEY_LEN],
                                     const uint8_t *next_key);
void proto_v2_sealer_free(proto_v2_sealer *s);

/* Writes a sealed datagram of msg's fields (msg->timestamp_ms is the
 * timestamp to send, normally the wall clock now) with the current key. The
 * same refusals as proto_v2_encode (SEALED in msg->flags is allowed, and
 * set anyway); PROTO_ERR_INVALID for a NULL sealer; PROTO_ERR_CRYPTO if
 * OpenSSL failed. The key/value may already sit at out + 40 (where open
 * left them), so a daemon can answer in the request's buffer. */
int proto_v2_seal(proto_v2_sealer *s, uint8_t *out, size_t cap, const proto_v2_msg *msg,
                  size_t *out_len);

/* Opens a sealed datagram in place: decrypts key and value over the
 * ciphertext in buf and points msg into buf. Checks, in order: framing and
 * lengths, key ID (PROTO_ERR_UNKNOWN_KEY; a NULL sealer holds no key), tag
 * (PROTO_ERR_AUTH), then |timestamp - now_ms| <= window_ms
 * (PROTO_ERR_STALE), then the field rules of proto_v2_parse. On any failure
 * buf's contents are unspecified and nothing of them may be used (whatever
 * was decrypted has been wiped). `answer` as for proto_v2_parse. */
int proto_v2_open(proto_v2_sealer *s, uint8_t *buf, size_t len, int answer, uint64_t now_ms,
                  uint64_t window_ms, proto_v2_msg *msg);

/* The key ID of a cluster key: the first 4 bytes of SHA-256 over it. Not
 * secret; logging it lets operators check that nodes hold the same key.
 * Returns 0, or -1 if the digest failed. */
int proto_v2_key_id(const uint8_t key[PROTO_V2_CLUSTER_KEY_LEN], uint8_t id[PROTO_V2_KEY_ID_LEN]);

/* A name for any proto_status or v2 status above. */
const char *proto_v2_status_name(int status);

#endif
