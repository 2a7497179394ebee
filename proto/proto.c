/* proto.c — the v1 wire codec: stunnel's `sessiond =` datagrams, parsed and built.
 *
 * How it works: a v1 datagram is a fixed 36-byte header (version, type,
 * big-endian timeout, 32-byte zero-padded session ID) followed by an optional
 * value. Parsing validates the datagram in a fixed order (length, version,
 * type, then the value rules of that type) and, only when everything holds,
 * fills a proto_v1_msg whose key and value point into the caller's buffer:
 * nothing is copied or allocated, so the daemon's hot path pays for one pass
 * over 4 header bytes. Encoding is the mirror image and writes into a buffer
 * the caller owns.
 *
 * Why the checks come in this order: the daemon counts each refusal under the
 * name of the first rule broken (PROTOCOL.md, "Receiving"), and a datagram
 * too long for any version is refused before we even look at its version
 * byte, so one oversized flood lands in one counter.
 *
 * Aliasing: the daemon may answer in the buffer it received into, so the key
 * (and value) handed to the encoders may already sit exactly where they are
 * to be written. memmove makes that case defined; a key or value lying
 * elsewhere inside the output buffer is not supported.
 *
 * Known limit: the encoder is the mechanism, not the policy. It builds a NEW
 * without a value or a GET carrying one (both of which the parser refuses) so
 * tests can build every malformed datagram the daemon must count; checking
 * that a request makes sense is the sender's job.
 */
#include "proto.h"

#include <string.h>

/* Indexed by proto_status; kept in the enum's order (the unit test checks
 * every entry is present and distinct). */
static const char *const proto_status_names[PROTO_STATUS_COUNT] = {
    [PROTO_OK] = "ok",
    [PROTO_ERR_SHORT] = "short",
    [PROTO_ERR_VERSION] = "version",
    [PROTO_ERR_TYPE] = "type",
    [PROTO_ERR_TOO_LONG] = "too_long",
    [PROTO_ERR_EMPTY_VALUE] = "empty_value",
    [PROTO_ERR_TRAILING] = "trailing",
    [PROTO_ERR_NOSPACE] = "nospace",
    [PROTO_ERR_INVALID] = "invalid",
};

const char *proto_status_name(proto_status status)
{
    /* The cast guards against a value outside the enum (a corrupted or
     * newer status): the caller always gets a printable string. */
    if ((unsigned)status >= PROTO_STATUS_COUNT || proto_status_names[status] == NULL)
        return "unknown";
    return proto_status_names[status];
}

static uint16_t read_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static void write_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)(v & 0xff);
}

/* The rules every v1 datagram obeys whatever its direction: size and
 * version. The type is left to the caller, which knows which ones it
 * expects. */
static proto_status check_v1_frame(const uint8_t *buf, size_t len)
{
    if (len > PROTO_MAX_DATAGRAM)
        return PROTO_ERR_TOO_LONG;
    if (len < PROTO_V1_HEADER_LEN)
        return PROTO_ERR_SHORT;
    if (buf[0] != PROTO_V1_VERSION)
        return PROTO_ERR_VERSION;
    return PROTO_OK;
}

static void fill_v1_msg(const uint8_t *buf, size_t len, proto_v1_msg *msg)
{
    size_t value_len = len - PROTO_V1_HEADER_LEN;

    msg->type = buf[1];
    msg->timeout = read_be16(buf + 2);
    msg->key = buf + 4;
    msg->value = value_len ? buf + PROTO_V1_HEADER_LEN : NULL;
    msg->value_len = value_len;
}

proto_status proto_v1_parse_request(const uint8_t *buf, size_t len, proto_v1_msg *msg)
{
    proto_status status = check_v1_frame(buf, len);

    if (status != PROTO_OK)
        return status;
    switch (buf[1]) {
    case PROTO_V1_NEW:
        /* A NEW without a session would store an empty value that a later
         * GET hands to d2i_SSL_SESSION: refuse it here instead. */
        if (len == PROTO_V1_HEADER_LEN)
            return PROTO_ERR_EMPTY_VALUE;
        break;
    case PROTO_V1_GET:
    case PROTO_V1_REMOVE:
        /* stunnel never sends bytes after a GET or REMOVE header; a datagram
         * that does was built by something else, so we do not guess. */
        if (len != PROTO_V1_HEADER_LEN)
            return PROTO_ERR_TRAILING;
        break;
    default:
        return PROTO_ERR_TYPE; /* answers (0x80, 0x81) included */
    }
    fill_v1_msg(buf, len, msg);
    return PROTO_OK;
}

proto_status proto_v1_parse_answer(const uint8_t *buf, size_t len, proto_v1_msg *msg)
{
    proto_status status = check_v1_frame(buf, len);

    if (status != PROTO_OK)
        return status;
    switch (buf[1]) {
    case PROTO_V1_FOUND:
        break; /* any value length, 0 included: the caller judges the DER */
    case PROTO_V1_NOT_FOUND:
        if (len != PROTO_V1_HEADER_LEN)
            return PROTO_ERR_TRAILING;
        break;
    default:
        return PROTO_ERR_TYPE;
    }
    fill_v1_msg(buf, len, msg);
    return PROTO_OK;
}

static int is_v1_type(uint8_t type)
{
    switch (type) {
    case PROTO_V1_NEW:
    case PROTO_V1_GET:
    case PROTO_V1_REMOVE:
    case PROTO_V1_NOT_FOUND:
    case PROTO_V1_FOUND:
        return 1;
    default:
        return 0;
    }
}

/* Header bytes 0..35. The ID is moved first (it may already be at out + 4)
 * and only then padded, so an in-place echo keeps its bytes. */
static void write_v1_header(uint8_t *out, uint8_t type, uint16_t timeout, const uint8_t *id,
                            size_t id_len)
{
    memmove(out + 4, id, id_len);
    memset(out + 4 + id_len, 0, PROTO_V1_KEY_LEN - id_len);
    out[0] = PROTO_V1_VERSION;
    out[1] = type;
    write_be16(out + 2, timeout);
}

proto_status proto_v1_encode(uint8_t *out, size_t cap, uint8_t type, uint16_t timeout,
                             const uint8_t *id, size_t id_len, const uint8_t *value,
                             size_t value_len, size_t *out_len)
{
    size_t total;

    /* Arguments first, then size: a caller bug is reported as such even
     * when the buffer happens to be small too. Nothing is written unless
     * every check passes. */
    if (!is_v1_type(type))
        return PROTO_ERR_INVALID;
    /* An empty ID would be stored under 32 zero bytes, shared by every
     * other empty ID; stunnel never sends one. */
    if (id == NULL || id_len == 0 || id_len > PROTO_V1_KEY_LEN)
        return PROTO_ERR_INVALID;
    if (value == NULL && value_len != 0)
        return PROTO_ERR_INVALID;
    /* Compared against the value limit, not header + value, so a huge
     * value_len cannot wrap the sum. */
    if (value_len > PROTO_V1_MAX_VALUE)
        return PROTO_ERR_TOO_LONG;
    total = PROTO_V1_HEADER_LEN + value_len;
    if (out == NULL || cap < total)
        return PROTO_ERR_NOSPACE;

    /* The value goes after the header, which never overlaps it: write it
     * first so a value already at out + 36 is simply left in place. */
    if (value_len)
        memmove(out + PROTO_V1_HEADER_LEN, value, value_len);
    write_v1_header(out, type, timeout, id, id_len);
    if (out_len != NULL)
        *out_len = total;
    return PROTO_OK;
}

proto_status proto_v1_encode_answer_header(uint8_t *out, size_t cap, uint8_t type,
                                           const uint8_t key[PROTO_V1_KEY_LEN])
{
    if (type != PROTO_V1_FOUND && type != PROTO_V1_NOT_FOUND)
        return PROTO_ERR_INVALID;
    if (key == NULL)
        return PROTO_ERR_INVALID;
    if (out == NULL || cap < PROTO_V1_HEADER_LEN)
        return PROTO_ERR_NOSPACE;
    /* The timeout of an answer means nothing to stunnel (it never reads
     * it); 0 keeps answers byte-identical for the same entry. */
    write_v1_header(out, type, 0, key, PROTO_V1_KEY_LEN);
    return PROTO_OK;
}
