/* proto.h — the sessiond wire format, encode and decode, nothing else.
 *
 * This is the one place that knows the bytes on the wire (see PROTOCOL.md for
 * the spec). It is pure: no sockets, no globals, no allocation. Parsing never
 * copies: a parsed message points into the caller's datagram buffer, so it is
 * valid only as long as that buffer is.
 *
 * Version 1 is stunnel's `sessiond =` format, byte for byte:
 *
 *   offset size field
 *   0      1    version (1)
 *   1      1    type: NEW 0x00, GET 0x01, REMOVE 0x02; answers 0x80, 0x81
 *   2      2    timeout in seconds, network byte order
 *   4      32   session ID, zero-padded
 *   36     n    value (DER session): NEW requests and found-answers only
 */
#ifndef SESSIOND_PROTO_H
#define SESSIOND_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define PROTO_V1_VERSION    1
#define PROTO_V1_KEY_LEN    32
#define PROTO_V1_HEADER_LEN 36
/* The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP). Anything that
 * fits one datagram is accepted, though stunnel itself never sends a value
 * over 512 bytes. */
#define PROTO_MAX_DATAGRAM 65507
#define PROTO_V1_MAX_VALUE (PROTO_MAX_DATAGRAM - PROTO_V1_HEADER_LEN)

enum proto_v1_type {
    PROTO_V1_NEW = 0x00,
    PROTO_V1_GET = 0x01,
    PROTO_V1_REMOVE = 0x02,
    PROTO_V1_NOT_FOUND = 0x80,
    PROTO_V1_FOUND = 0x81,
};

/* Every way a datagram can be refused; each has its own counter in the daemon. */
typedef enum proto_status {
    PROTO_OK = 0,
    PROTO_ERR_SHORT,       /* fewer bytes than the header */
    PROTO_ERR_VERSION,     /* version byte is not one we speak */
    PROTO_ERR_TYPE,        /* unknown type, or an answer type where a request belongs */
    PROTO_ERR_TOO_LONG,    /* larger than PROTO_MAX_DATAGRAM */
    PROTO_ERR_EMPTY_VALUE, /* NEW without a session */
    PROTO_ERR_TRAILING,    /* GET or REMOVE, or a not-found answer, with bytes after the header */
    PROTO_ERR_NOSPACE,     /* encode: the output buffer is too small */
    PROTO_ERR_INVALID,     /* encode: an argument out of range (key too long...) */
    PROTO_STATUS_COUNT
} proto_status;

/* A parsed v1 message. `key` always points at PROTO_V1_KEY_LEN bytes; `value`
 * is NULL when value_len is 0. */
typedef struct proto_v1_msg {
    uint8_t type;
    uint16_t timeout;
    const uint8_t *key;
    const uint8_t *value;
    size_t value_len;
} proto_v1_msg;

/* Parses a datagram a daemon received: NEW, GET or REMOVE. */
proto_status proto_v1_parse_request(const uint8_t *buf, size_t len, proto_v1_msg *msg);

/* Parses a datagram a client received: FOUND (value may be any length, even
 * 0) or NOT_FOUND. The caller compares the echoed key itself. */
proto_status proto_v1_parse_answer(const uint8_t *buf, size_t len, proto_v1_msg *msg);

/* Writes one v1 datagram into out[0..cap): the header, then value_len bytes
 * of value (value may be NULL when value_len is 0). The session ID is copied
 * and zero-padded to 32 bytes; id_len over 32 is PROTO_ERR_INVALID, and so is
 * a type outside enum proto_v1_type. On success *out_len is the datagram length. */
proto_status proto_v1_encode(uint8_t *out, size_t cap, uint8_t type, uint16_t timeout,
                             const uint8_t *id, size_t id_len, const uint8_t *value,
                             size_t value_len, size_t *out_len);

/* Writes only the 36-byte header of an answer, echoing the request's key, so
 * a daemon can place the value right after it without an extra copy. */
proto_status proto_v1_encode_answer_header(uint8_t *out, size_t cap, uint8_t type,
                                           const uint8_t key[PROTO_V1_KEY_LEN]);

/* A short, constant, lowercase name for a status ("short", "version"...). */
const char *proto_status_name(proto_status status);

#endif
