/* fuzz_proto.c — libFuzzer harness for the wire codec (proto/proto.c and
 * proto/proto_v2.c).
 *
 * How it works: every input is handed to each parser as a datagram: v1
 * request and answer, v2 plain request and answer, and v2 open (request and
 * answer) with a fixed test key, on a private copy since open works in
 * place. Whatever parses must survive the trip back: re-encoding gives the
 * input byte for byte (v1, v2 plain), and an opened datagram re-encodes to
 * its header and decrypted body, and re-seals and opens to the same message.
 * Whatever fails to open after decryption must have had its body wiped.
 * Independently, the input is also read as the fields of a message (op,
 * flags, status, lengths, key and value bytes) for the encoder: whatever it
 * accepts the parser must accept with the same fields, and whatever it
 * refuses the parser must refuse with the same status. Any broken rule
 * aborts, which libFuzzer reports with the input.
 *
 * The clock is the constant NOW_MS, the timestamp of PROTOCOL.md's sealed
 * vectors (the seed corpus), so those open and reach the field checks. The
 * key is the vectors' key 00..1f; a second key is held as the "next" key so
 * the two-key lookup is exercised too.
 *
 * Build and run: `make build/fuzz/fuzz_proto`, `make fuzz-smoke`.
 */
#include "proto.h"
#include "proto_v2.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW_MS 1700000000000ULL

static const uint8_t fuzz_key[PROTO_V2_CLUSTER_KEY_LEN] = {
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
static const uint8_t fuzz_next_key[PROTO_V2_CLUSTER_KEY_LEN] = {
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f,
    0xf0, 0xe1, 0xd2, 0xc3, 0xb4, 0xa5, 0x96, 0x87, 0x78, 0x69, 0x5a, 0x4b, 0x3c, 0x2d, 0x1e, 0x0f};

/* Created once, kept for the life of the process (the sealer is meant to
 * be long-lived; recreating it per input would hide state bugs). */
static proto_v2_sealer *fuzz_sealer(void)
{
    static proto_v2_sealer *sealer;

    if (sealer == NULL) {
        sealer = proto_v2_sealer_new(fuzz_key, fuzz_next_key);
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

/* An exact-size heap copy, so ASan sees any access past the datagram. */
static uint8_t *copy_of(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);

    require(copy != NULL);
    if (size)
        memcpy(copy, data, size);
    return copy;
}

static int same_msg(const proto_v2_msg *a, const proto_v2_msg *b)
{
    return a->op == b->op && a->flags == b->flags && a->status == b->status &&
           a->request_id == b->request_id && a->ttl == b->ttl && a->key_len == b->key_len &&
           a->value_len == b->value_len && a->timestamp_ms == b->timestamp_ms &&
           (a->key_len == 0 || memcmp(a->key, b->key, a->key_len) == 0) &&
           (a->value_len == 0 || memcmp(a->value, b->value, a->value_len) == 0);
}

static void fuzz_v1(const uint8_t *data, size_t size)
{
    uint8_t *out = malloc(size ? size : 1);
    proto_v1_msg msg;
    size_t len = 0;

    require(out != NULL);
    if (proto_v1_parse_request(data, size, &msg) == PROTO_OK) {
        require(proto_v1_encode(out, size, msg.type, msg.timeout, msg.key, PROTO_V1_KEY_LEN,
                                msg.value, msg.value_len, &len) == PROTO_OK);
        require(len == size && memcmp(out, data, size) == 0);
    }
    if (proto_v1_parse_answer(data, size, &msg) == PROTO_OK) {
        require(proto_v1_encode(out, size, msg.type, msg.timeout, msg.key, PROTO_V1_KEY_LEN,
                                msg.value, msg.value_len, &len) == PROTO_OK);
        require(len == size && memcmp(out, data, size) == 0);
    }
    free(out);
}

/* A parsed message sealed and opened again comes back the same. */
static void check_seal_round_trip(const proto_v2_msg *msg, int answer)
{
    size_t cap = PROTO_V2_OVERHEAD_MAX + msg->key_len + msg->value_len, len = 0;
    uint8_t *out = malloc(cap);
    proto_v2_msg in = *msg, back;

    require(out != NULL);
    in.timestamp_ms = NOW_MS;
    require(proto_v2_seal(fuzz_sealer(), out, cap, &in, &len) == PROTO_OK && len == cap);
    require(proto_v2_open(fuzz_sealer(), out, len, answer, NOW_MS, 0, &back) == PROTO_OK);
    in.flags |= PROTO_V2_F_SEALED;
    require(same_msg(&back, &in));
    free(out);
}

static void fuzz_v2_plain(const uint8_t *data, size_t size, int answer)
{
    proto_v2_msg msg;
    uint8_t *out;
    size_t len = 0;

    if (proto_v2_parse(data, size, answer, &msg) != PROTO_OK)
        return;
    out = malloc(size);
    require(out != NULL);
    require(proto_v2_encode(out, size - 1, &msg, &len) == PROTO_ERR_NOSPACE);
    require(proto_v2_encode(out, size, &msg, &len) == PROTO_OK);
    require(len == size && memcmp(out, data, size) == 0);
    free(out);
    check_seal_round_trip(&msg, answer);
}

/* Whether open got past the framing, i.e. may have decrypted the body. */
static int sealed_framing_passes(const uint8_t *data, size_t size)
{
    size_t key_len, value_len;

    if (size < PROTO_V2_HEADER_LEN || size > PROTO_MAX_DATAGRAM || data[0] != PROTO_V2_VERSION ||
        (data[2] & ~(PROTO_V2_F_SEALED | PROTO_V2_F_NO_REPLY)) || !(data[2] & PROTO_V2_F_SEALED))
        return 0;
    key_len = (size_t)data[12] << 8 | data[13];
    value_len = (size_t)data[14] << 8 | data[15];
    return PROTO_V2_OVERHEAD_MAX + key_len + value_len == size;
}

static void fuzz_v2_open(const uint8_t *data, size_t size, int answer)
{
    uint8_t *buf = copy_of(data, size), *plain, *again;
    proto_v2_msg msg, plain_msg, back;
    size_t body_len, len = 0, i;
    int status =
        proto_v2_open(fuzz_sealer(), buf, size, answer, NOW_MS, PROTO_V2_DEFAULT_WINDOW_MS, &msg);

    if (status != PROTO_OK) {
        /* Nothing decrypted may survive a refusal. */
        if (status != PROTO_ERR_UNKNOWN_KEY && sealed_framing_passes(data, size))
            for (i = 40; i < size - PROTO_V2_TAG_LEN; i++)
                require(buf[i] == 0);
        free(buf);
        return;
    }
    body_len = msg.key_len + msg.value_len;
    require(size == PROTO_V2_OVERHEAD_MAX + body_len);

    /* The plain form: same header but the SEALED bit, body = plaintext. */
    plain = malloc(PROTO_V2_HEADER_LEN + body_len);
    require(plain != NULL);
    plain_msg = msg;
    plain_msg.flags &= (uint8_t)~PROTO_V2_F_SEALED;
    require(proto_v2_encode(plain, PROTO_V2_HEADER_LEN + body_len, &plain_msg, &len) == PROTO_OK);
    require(plain[2] == (data[2] & ~PROTO_V2_F_SEALED));
    plain[2] = data[2];
    require(memcmp(plain, data, PROTO_V2_HEADER_LEN) == 0);
    require(memcmp(plain + PROTO_V2_HEADER_LEN, buf + 40, body_len) == 0);
    free(plain);

    /* Sealed again (new nonce, current key): same header, key ID of the
     * current key, opens to the same message. */
    again = malloc(size);
    require(again != NULL);
    require(proto_v2_seal(fuzz_sealer(), again, size, &msg, &len) == PROTO_OK && len == size);
    require(memcmp(again, data, PROTO_V2_HEADER_LEN) == 0);
    require(memcmp(again + 20, data + 20, 8) == 0);
    require(proto_v2_open(fuzz_sealer(), again, size, answer, msg.timestamp_ms, 0, &back) ==
            PROTO_OK);
    require(same_msg(&back, &msg));
    free(again);
    free(buf);
}

/* The input read as message fields for the encoder: 8 bytes of header
 * choices, then key and value bytes. Encode and parse must agree. */
static void fuzz_v2_encode(const uint8_t *data, size_t size)
{
    proto_v2_msg msg = {0}, back;
    uint8_t *out;
    size_t key_len, value_len, avail, total, len = 0;
    int encoded, parsed;

    if (size < 8)
        return;
    avail = size - 8;
    key_len = ((size_t)data[3] << 8 | data[4]) % 80; /* around the 64-byte limit */
    value_len = (size_t)data[5] << 8 | data[6];
    if (key_len > avail)
        return;
    if (value_len > avail - key_len)
        value_len = avail - key_len;
    msg.op = data[0];
    msg.flags = data[1];
    msg.status = data[2];
    msg.request_id = data[7] * 0x01010101u;
    msg.ttl = data[7];
    msg.key = key_len ? data + 8 : NULL;
    msg.key_len = key_len;
    msg.value = value_len ? data + 8 + key_len : NULL;
    msg.value_len = value_len;

    total = PROTO_V2_HEADER_LEN + key_len + value_len;
    out = malloc(total);
    require(out != NULL);
    encoded = proto_v2_encode(out, total, &msg, &len);
    if (encoded == PROTO_OK) {
        require(len == total);
        require(proto_v2_parse(out, len, (msg.op & PROTO_V2_ANSWER) != 0, &back) == PROTO_OK);
        require(same_msg(&back, &msg));
    } else if (total <= PROTO_MAX_DATAGRAM) {
        /* The same fields laid out by hand: the parser must say the same. */
        out[0] = PROTO_V2_VERSION;
        out[1] = msg.op;
        out[2] = msg.flags;
        out[3] = msg.status;
        memset(out + 4, 0, 8);
        out[12] = (uint8_t)(key_len >> 8);
        out[13] = (uint8_t)key_len;
        out[14] = (uint8_t)(value_len >> 8);
        out[15] = (uint8_t)value_len;
        if (key_len + value_len)
            memcpy(out + PROTO_V2_HEADER_LEN, data + 8, key_len + value_len);
        parsed = proto_v2_parse(out, total, (msg.op & PROTO_V2_ANSWER) != 0, &back);
        require(parsed == encoded);
    }
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *exact = copy_of(data, size);

    fuzz_v1(exact, size);
    fuzz_v2_plain(exact, size, 0);
    fuzz_v2_plain(exact, size, 1);
    fuzz_v2_open(exact, size, 0);
    fuzz_v2_open(exact, size, 1);
    fuzz_v2_encode(exact, size);
    free(exact);
    return 0;
}
