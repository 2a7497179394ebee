/* check_proto.c — unit tests of the v1 wire codec (proto/proto.c).
 *
 * What is covered: every header field decoded (with values whose byte order
 * shows), every refusal status of both parsers and the encoders, the size
 * boundaries (35, 36, 65507 and 65508 bytes) on heap buffers of exactly that
 * size so AddressSanitizer catches a read one byte too far, encode->parse
 * round trips for every type and every ID length, the zero padding of short
 * IDs, in-place answers, and stunnel's bytes: the test vectors are written
 * out by hand from stunnel's packet layout, and the same vectors are read
 * back out of proto/PROTOCOL.md so the spec and the code cannot drift apart.
 *
 * The spec is found at $PROTOCOL_MD, or proto/PROTOCOL.md relative to the
 * working directory (tests/run.sh runs from the top of the tree).
 */
#include "proto.h"

#include "checks.h"
#include "vectors.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A byte no field of a test datagram uses, to see what an encoder wrote. */
#define FILL 0xAA

/* ---- helpers ---------------------------------------------------------- */

/* A heap datagram of len bytes with a v1 header (version, type, timeout,
 * key bytes 0x40 + i) and value bytes 0x10 + i. */
static uint8_t *make_datagram(size_t len, uint8_t version, uint8_t type, uint16_t timeout)
{
    uint8_t *buf = tc_exact_buf(len, 0);
    size_t i;

    for (i = 0; i < len; i++) {
        if (i == 0)
            buf[i] = version;
        else if (i == 1)
            buf[i] = type;
        else if (i == 2)
            buf[i] = (uint8_t)(timeout >> 8);
        else if (i == 3)
            buf[i] = (uint8_t)(timeout & 0xff);
        else if (i < PROTO_V1_HEADER_LEN)
            buf[i] = (uint8_t)(0x40 + i - 4);
        else
            buf[i] = (uint8_t)(0x10 + (i - PROTO_V1_HEADER_LEN));
    }
    return buf;
}

/* A message whose every field is recognisable, to prove a failed parse
 * leaves the caller's struct alone. */
static const uint8_t sentinel_byte = 0x5C;
static void set_sentinel(proto_v1_msg *msg)
{
    msg->type = 0x77;
    msg->timeout = 0x7777;
    msg->key = &sentinel_byte;
    msg->value = &sentinel_byte;
    msg->value_len = 7777;
}

static void assert_sentinel(const proto_v1_msg *msg)
{
    ck_assert_uint_eq(msg->type, 0x77);
    ck_assert_uint_eq(msg->timeout, 0x7777);
    ck_assert_ptr_eq(msg->key, &sentinel_byte);
    ck_assert_ptr_eq(msg->value, &sentinel_byte);
    ck_assert_uint_eq(msg->value_len, 7777);
}

/* Parses buf as an answer (answer != 0) or a request and checks it is
 * refused with `want`, leaving the caller's struct untouched. */
static void expect_refused(int answer, const uint8_t *buf, size_t len, proto_status want)
{
    proto_v1_msg msg;
    proto_status got;

    set_sentinel(&msg);
    got = answer ? proto_v1_parse_answer(buf, len, &msg) : proto_v1_parse_request(buf, len, &msg);
    ck_assert_msg(got == want, "%s of %zu bytes (type 0x%02x): want %s",
                  answer ? "answer" : "request", len, len > 1 ? buf[1] : 0,
                  proto_status_name(want));
    assert_sentinel(&msg);
}

static void expect_request_refused(const uint8_t *buf, size_t len, proto_status want)
{
    expect_refused(0, buf, len, want);
}

static void expect_answer_refused(const uint8_t *buf, size_t len, proto_status want)
{
    expect_refused(1, buf, len, want);
}

/* ---- parse_request ---------------------------------------------------- */

START_TEST(test_request_new_fields)
{
    /* 0x1234 and 0xfeed are asymmetric: a little-endian read shows. */
    uint8_t *buf = make_datagram(PROTO_V1_HEADER_LEN + 3, 1, PROTO_V1_NEW, 0x1234);
    proto_v1_msg msg;

    ck_assert_int_eq(proto_v1_parse_request(buf, PROTO_V1_HEADER_LEN + 3, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.type, PROTO_V1_NEW);
    ck_assert_uint_eq(msg.timeout, 0x1234);
    ck_assert_ptr_eq(msg.key, buf + 4);
    ck_assert_uint_eq(msg.key[0], 0x40);
    ck_assert_uint_eq(msg.key[31], 0x40 + 31);
    ck_assert_ptr_eq(msg.value, buf + 36);
    ck_assert_uint_eq(msg.value_len, 3);
    ck_assert_uint_eq(msg.value[2], 0x12);
    free(buf);

    /* The receiver does not cap: that is the daemon's --max-ttl. */
    buf = make_datagram(PROTO_V1_HEADER_LEN + 1, 1, PROTO_V1_NEW, 0xfeed);
    ck_assert_int_eq(proto_v1_parse_request(buf, PROTO_V1_HEADER_LEN + 1, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.timeout, 0xfeed);
    buf[2] = 0xff;
    buf[3] = 0xff;
    ck_assert_int_eq(proto_v1_parse_request(buf, PROTO_V1_HEADER_LEN + 1, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.timeout, 65535);
    free(buf);
}
END_TEST

START_TEST(test_request_get_remove_fields)
{
    const uint8_t types[] = {PROTO_V1_GET, PROTO_V1_REMOVE};
    size_t i;

    for (i = 0; i < sizeof types; i++) {
        uint8_t *buf = make_datagram(PROTO_V1_HEADER_LEN, 1, types[i], 0x0102);
        proto_v1_msg msg;

        set_sentinel(&msg);
        ck_assert_int_eq(proto_v1_parse_request(buf, PROTO_V1_HEADER_LEN, &msg), PROTO_OK);
        ck_assert_uint_eq(msg.type, types[i]);
        ck_assert_uint_eq(msg.timeout, 0x0102);
        ck_assert_ptr_eq(msg.key, buf + 4);
        ck_assert_ptr_null(msg.value);
        ck_assert_uint_eq(msg.value_len, 0);
        free(buf);
    }
}
END_TEST

START_TEST(test_request_too_long)
{
    size_t len = PROTO_MAX_DATAGRAM + 1;
    uint8_t *buf = make_datagram(len, 1, PROTO_V1_NEW, 300);

    expect_request_refused(buf, len, PROTO_ERR_TOO_LONG);
    /* Checked first: a bad version or type does not change the verdict. */
    buf[0] = 0x02;
    expect_request_refused(buf, len, PROTO_ERR_TOO_LONG);
    buf[0] = 1;
    buf[1] = 0x99;
    expect_request_refused(buf, len, PROTO_ERR_TOO_LONG);
    free(buf);
}
END_TEST

START_TEST(test_request_short)
{
    size_t len;

    expect_request_refused(NULL, 0, PROTO_ERR_SHORT);
    for (len = 0; len < PROTO_V1_HEADER_LEN; len++) {
        uint8_t *buf = make_datagram(len, 1, PROTO_V1_GET, 0);

        expect_request_refused(buf, len, PROTO_ERR_SHORT);
        free(buf);
    }
}
END_TEST

START_TEST(test_request_version)
{
    const uint8_t versions[] = {0x00, 0x02, 0x03, 0x81, 0xff};
    uint8_t *buf = make_datagram(PROTO_V1_HEADER_LEN, 1, PROTO_V1_GET, 0);
    size_t i;

    for (i = 0; i < sizeof versions; i++) {
        buf[0] = versions[i];
        expect_request_refused(buf, PROTO_V1_HEADER_LEN, PROTO_ERR_VERSION);
    }
    free(buf);
}
END_TEST

START_TEST(test_request_type)
{
    /* One byte of value so NEW passes; GET/REMOVE are checked at 36 bytes. */
    uint8_t *buf = make_datagram(PROTO_V1_HEADER_LEN + 1, 1, 0, 0);
    unsigned type;

    for (type = 0; type <= 0xff; type++) {
        proto_v1_msg msg;
        size_t len = type == PROTO_V1_NEW ? PROTO_V1_HEADER_LEN + 1 : PROTO_V1_HEADER_LEN;

        buf[1] = (uint8_t)type;
        if (type <= PROTO_V1_REMOVE) {
            ck_assert_int_eq(proto_v1_parse_request(buf, len, &msg), PROTO_OK);
            ck_assert_uint_eq(msg.type, type);
        } else {
            expect_request_refused(buf, len, PROTO_ERR_TYPE);
        }
    }
    /* Named explicitly: answers sent to a daemon must never be taken. */
    buf[1] = PROTO_V1_FOUND;
    expect_request_refused(buf, PROTO_V1_HEADER_LEN + 1, PROTO_ERR_TYPE);
    buf[1] = PROTO_V1_NOT_FOUND;
    expect_request_refused(buf, PROTO_V1_HEADER_LEN, PROTO_ERR_TYPE);
    free(buf);
}
END_TEST

START_TEST(test_request_empty_value)
{
    uint8_t *buf = make_datagram(PROTO_V1_HEADER_LEN + 1, 1, PROTO_V1_NEW, 300);
    proto_v1_msg msg;

    expect_request_refused(buf, PROTO_V1_HEADER_LEN, PROTO_ERR_EMPTY_VALUE);
    ck_assert_int_eq(proto_v1_parse_request(buf, PROTO_V1_HEADER_LEN + 1, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.value_len, 1);
    ck_assert_ptr_eq(msg.value, buf + 36);
    free(buf);
}
END_TEST

START_TEST(test_request_trailing)
{
    uint8_t *buf = make_datagram(PROTO_MAX_DATAGRAM, 1, PROTO_V1_GET, 0);

    expect_request_refused(buf, PROTO_V1_HEADER_LEN + 1, PROTO_ERR_TRAILING);
    expect_request_refused(buf, PROTO_MAX_DATAGRAM, PROTO_ERR_TRAILING);
    buf[1] = PROTO_V1_REMOVE;
    expect_request_refused(buf, PROTO_V1_HEADER_LEN + 1, PROTO_ERR_TRAILING);
    expect_request_refused(buf, PROTO_MAX_DATAGRAM, PROTO_ERR_TRAILING);
    free(buf);
}
END_TEST

START_TEST(test_request_boundaries)
{
    proto_v1_msg msg;
    uint8_t *buf;

    buf = make_datagram(35, 1, PROTO_V1_GET, 0);
    expect_request_refused(buf, 35, PROTO_ERR_SHORT);
    free(buf);

    buf = make_datagram(36, 1, PROTO_V1_GET, 0);
    ck_assert_int_eq(proto_v1_parse_request(buf, 36, &msg), PROTO_OK);
    free(buf);

    buf = make_datagram(65507, 1, PROTO_V1_NEW, 300);
    ck_assert_int_eq(proto_v1_parse_request(buf, 65507, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.value_len, 65471);
    ck_assert_uint_eq(msg.value_len, PROTO_V1_MAX_VALUE);
    ck_assert_ptr_eq(msg.value, buf + 36);
    free(buf);

    buf = make_datagram(65508, 1, PROTO_V1_NEW, 300);
    expect_request_refused(buf, 65508, PROTO_ERR_TOO_LONG);
    free(buf);
}
END_TEST

/* The rules of PROTOCOL.md ("Receiving"), restated independently and
 * compared with the parsers over every type byte, a spread of versions and
 * the lengths around each boundary. */
static proto_status model_status(int answer, uint8_t version, uint8_t type, size_t len)
{
    if (len > PROTO_MAX_DATAGRAM)
        return PROTO_ERR_TOO_LONG;
    if (len < PROTO_V1_HEADER_LEN)
        return PROTO_ERR_SHORT;
    if (version != 1)
        return PROTO_ERR_VERSION;
    if (!answer && type != 0 && type != 1 && type != 2)
        return PROTO_ERR_TYPE;
    if (answer && type != 0x80 && type != 0x81)
        return PROTO_ERR_TYPE;
    if (!answer && type == 0 && len == 36)
        return PROTO_ERR_EMPTY_VALUE;
    if ((type == 1 || type == 2 || type == 0x80) && len > 36)
        return PROTO_ERR_TRAILING;
    return PROTO_OK;
}

START_TEST(test_parse_matrix)
{
    const uint8_t versions[] = {0, 1, 2, 0xff};
    const size_t lens[] = {0, 1, 4, 35, 36, 37, 548, 549, 65507, 65508};
    uint8_t *buf = tc_exact_buf(65508, 0x33);
    size_t v, l;
    unsigned type;

    for (v = 0; v < sizeof versions; v++) {
        for (type = 0; type <= 0xff; type++) {
            buf[0] = versions[v];
            buf[1] = (uint8_t)type;
            for (l = 0; l < sizeof lens / sizeof lens[0]; l++) {
                proto_v1_msg msg;
                proto_status want = model_status(0, versions[v], (uint8_t)type, lens[l]);

                ck_assert_msg(proto_v1_parse_request(buf, lens[l], &msg) == want,
                              "request v%u type 0x%02x len %zu", versions[v], type, lens[l]);
                want = model_status(1, versions[v], (uint8_t)type, lens[l]);
                ck_assert_msg(proto_v1_parse_answer(buf, lens[l], &msg) == want,
                              "answer v%u type 0x%02x len %zu", versions[v], type, lens[l]);
            }
        }
    }
    free(buf);
}
END_TEST

/* ---- parse_answer ----------------------------------------------------- */

START_TEST(test_answer_found)
{
    uint8_t *buf = make_datagram(PROTO_V1_HEADER_LEN + 4, 1, PROTO_V1_FOUND, 0x0a0b);
    proto_v1_msg msg;

    ck_assert_int_eq(proto_v1_parse_answer(buf, PROTO_V1_HEADER_LEN + 4, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.type, PROTO_V1_FOUND);
    ck_assert_uint_eq(msg.timeout, 0x0a0b);
    ck_assert_ptr_eq(msg.key, buf + 4);
    ck_assert_ptr_eq(msg.value, buf + 36);
    ck_assert_uint_eq(msg.value_len, 4);

    /* A found answer with an empty value is well formed; the caller decides. */
    set_sentinel(&msg);
    ck_assert_int_eq(proto_v1_parse_answer(buf, PROTO_V1_HEADER_LEN, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.type, PROTO_V1_FOUND);
    ck_assert_ptr_null(msg.value);
    ck_assert_uint_eq(msg.value_len, 0);
    free(buf);

    buf = make_datagram(PROTO_MAX_DATAGRAM, 1, PROTO_V1_FOUND, 0);
    ck_assert_int_eq(proto_v1_parse_answer(buf, PROTO_MAX_DATAGRAM, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.value_len, PROTO_V1_MAX_VALUE);
    free(buf);
}
END_TEST

START_TEST(test_answer_not_found)
{
    uint8_t *buf = make_datagram(PROTO_V1_HEADER_LEN + 1, 1, PROTO_V1_NOT_FOUND, 0);
    proto_v1_msg msg;

    set_sentinel(&msg);
    ck_assert_int_eq(proto_v1_parse_answer(buf, PROTO_V1_HEADER_LEN, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.type, PROTO_V1_NOT_FOUND);
    ck_assert_ptr_eq(msg.key, buf + 4);
    ck_assert_ptr_null(msg.value);
    ck_assert_uint_eq(msg.value_len, 0);
    expect_answer_refused(buf, PROTO_V1_HEADER_LEN + 1, PROTO_ERR_TRAILING);
    free(buf);
}
END_TEST

START_TEST(test_answer_malformed)
{
    const uint8_t request_types[] = {PROTO_V1_NEW, PROTO_V1_GET, PROTO_V1_REMOVE, 0x7f, 0x82};
    uint8_t *buf = make_datagram(PROTO_MAX_DATAGRAM + 1, 1, PROTO_V1_FOUND, 0);
    size_t i;

    expect_answer_refused(buf, PROTO_MAX_DATAGRAM + 1, PROTO_ERR_TOO_LONG);
    expect_answer_refused(buf, 35, PROTO_ERR_SHORT);
    expect_answer_refused(NULL, 0, PROTO_ERR_SHORT);
    buf[0] = 2;
    expect_answer_refused(buf, PROTO_V1_HEADER_LEN, PROTO_ERR_VERSION);
    buf[0] = 1;
    for (i = 0; i < sizeof request_types; i++) {
        buf[1] = request_types[i];
        expect_answer_refused(buf, PROTO_V1_HEADER_LEN + 5, PROTO_ERR_TYPE);
    }
    free(buf);
}
END_TEST

/* ---- encode ----------------------------------------------------------- */

START_TEST(test_encode_round_trip)
{
    const uint8_t types[] = {PROTO_V1_NEW, PROTO_V1_GET, PROTO_V1_REMOVE, PROTO_V1_NOT_FOUND,
                             PROTO_V1_FOUND};
    uint8_t id[PROTO_V1_KEY_LEN], value[300], out[PROTO_V1_HEADER_LEN + sizeof value + 1];
    size_t t, id_len, i;

    for (i = 0; i < sizeof id; i++)
        id[i] = (uint8_t)(0xc0 + i);
    for (i = 0; i < sizeof value; i++)
        value[i] = (uint8_t)(i * 7);

    for (t = 0; t < sizeof types; t++) {
        int is_answer = types[t] & 0x80;
        int has_value = types[t] == PROTO_V1_NEW || types[t] == PROTO_V1_FOUND;
        size_t value_len = has_value ? sizeof value : 0;

        for (id_len = 1; id_len <= PROTO_V1_KEY_LEN; id_len++) {
            uint16_t timeout = (uint16_t)(0x0100 * id_len + t);
            size_t out_len = 0;
            proto_v1_msg msg;
            proto_status parsed;

            memset(out, FILL, sizeof out);
            ck_assert_int_eq(proto_v1_encode(out, sizeof out, types[t], timeout, id, id_len,
                                             has_value ? value : NULL, value_len, &out_len),
                             PROTO_OK);
            ck_assert_uint_eq(out_len, PROTO_V1_HEADER_LEN + value_len);
            ck_assert_uint_eq(out[out_len], FILL); /* nothing written past the end */

            parsed = is_answer ? proto_v1_parse_answer(out, out_len, &msg)
                               : proto_v1_parse_request(out, out_len, &msg);
            ck_assert_int_eq(parsed, PROTO_OK);
            ck_assert_uint_eq(out[0], PROTO_V1_VERSION);
            ck_assert_uint_eq(msg.type, types[t]);
            ck_assert_uint_eq(msg.timeout, timeout);
            ck_assert_ptr_eq(msg.key, out + 4);
            ck_assert_mem_eq(msg.key, id, id_len);
            /* Padding: zeros, never the FILL bytes that were there before. */
            ck_assert(tc_all_bytes_are(msg.key + id_len, PROTO_V1_KEY_LEN - id_len, 0));
            ck_assert_uint_eq(msg.value_len, value_len);
            if (has_value)
                ck_assert_mem_eq(msg.value, value, value_len);
            else
                ck_assert_ptr_null(msg.value);
        }
    }
}
END_TEST

START_TEST(test_encode_padding)
{
    const uint8_t id[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                            0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
    uint8_t out[64];
    size_t out_len = 0;

    memset(out, 0xff, sizeof out);
    ck_assert_int_eq(
        proto_v1_encode(out, sizeof out, PROTO_V1_GET, 0, id, sizeof id, NULL, 0, &out_len),
        PROTO_OK);
    ck_assert_uint_eq(out_len, 36);
    ck_assert_mem_eq(out + 4, id, 16);
    ck_assert(tc_all_bytes_are(out + 20, 16, 0));
    ck_assert(tc_all_bytes_are(out + 36, sizeof out - 36, 0xff));

    /* One byte of ID: 31 bytes of padding. */
    memset(out, 0xff, sizeof out);
    ck_assert_int_eq(proto_v1_encode(out, sizeof out, PROTO_V1_GET, 0, id, 1, NULL, 0, &out_len),
                     PROTO_OK);
    ck_assert_uint_eq(out[4], 0xa0);
    ck_assert(tc_all_bytes_are(out + 5, 31, 0));
}
END_TEST

START_TEST(test_encode_byte_order)
{
    const uint8_t id[1] = {0x01};
    uint8_t out[PROTO_V1_HEADER_LEN];

    ck_assert_int_eq(proto_v1_encode(out, sizeof out, PROTO_V1_GET, 0x0102, id, 1, NULL, 0, NULL),
                     PROTO_OK);
    ck_assert_uint_eq(out[2], 0x01);
    ck_assert_uint_eq(out[3], 0x02);
    ck_assert_int_eq(proto_v1_encode(out, sizeof out, PROTO_V1_GET, 64800, id, 1, NULL, 0, NULL),
                     PROTO_OK);
    ck_assert_uint_eq(out[2], 0xfd);
    ck_assert_uint_eq(out[3], 0x20);
}
END_TEST

/* Encodes and expects `want`, with nothing written to out or out_len. */
static void expect_encode_refused(size_t cap, uint8_t type, const uint8_t *id, size_t id_len,
                                  const uint8_t *value, size_t value_len, proto_status want)
{
    uint8_t out[128];
    size_t out_len = 12345;

    ck_assert_uint_le(cap, sizeof out);
    memset(out, FILL, sizeof out);
    ck_assert_msg(proto_v1_encode(out, cap, type, 300, id, id_len, value, value_len, &out_len) ==
                      want,
                  "encode type 0x%02x id_len %zu value_len %zu cap %zu: want %s", type, id_len,
                  value_len, cap, proto_status_name(want));
    ck_assert(tc_all_bytes_are(out, sizeof out, FILL));
    ck_assert_uint_eq(out_len, 12345);
}

START_TEST(test_encode_invalid)
{
    const uint8_t bad_types[] = {0x03, 0x7f, 0x82, 0xff};
    uint8_t id[PROTO_V1_KEY_LEN + 1], value[4] = {1, 2, 3, 4};
    size_t i;

    memset(id, 0x11, sizeof id);
    for (i = 0; i < sizeof bad_types; i++)
        expect_encode_refused(128, bad_types[i], id, 32, NULL, 0, PROTO_ERR_INVALID);
    expect_encode_refused(128, PROTO_V1_GET, id, 0, NULL, 0, PROTO_ERR_INVALID);
    expect_encode_refused(128, PROTO_V1_GET, id, PROTO_V1_KEY_LEN + 1, NULL, 0, PROTO_ERR_INVALID);
    expect_encode_refused(128, PROTO_V1_GET, NULL, 16, NULL, 0, PROTO_ERR_INVALID);
    expect_encode_refused(128, PROTO_V1_NEW, id, 32, NULL, 1, PROTO_ERR_INVALID);
    /* Arguments are judged before the buffer size. */
    expect_encode_refused(0, PROTO_V1_NEW, id, 33, value, sizeof value, PROTO_ERR_INVALID);
}
END_TEST

START_TEST(test_encode_sizes)
{
    uint8_t id[PROTO_V1_KEY_LEN], value[4] = {1, 2, 3, 4};
    uint8_t *big_value = tc_exact_buf(PROTO_V1_MAX_VALUE + 1, 0x42);
    uint8_t *out = tc_exact_buf(PROTO_MAX_DATAGRAM, FILL);
    size_t out_len = 0;
    proto_v1_msg msg;

    memset(id, 0x22, sizeof id);
    /* Too small a buffer, by one byte, then exactly enough. */
    expect_encode_refused(PROTO_V1_HEADER_LEN + 3, PROTO_V1_NEW, id, 32, value, 4,
                          PROTO_ERR_NOSPACE);
    expect_encode_refused(PROTO_V1_HEADER_LEN - 1, PROTO_V1_GET, id, 32, NULL, 0,
                          PROTO_ERR_NOSPACE);
    ck_assert_int_eq(proto_v1_encode(NULL, 0, PROTO_V1_GET, 0, id, 32, NULL, 0, &out_len),
                     PROTO_ERR_NOSPACE);
    ck_assert_int_eq(
        proto_v1_encode(out, PROTO_V1_HEADER_LEN + 4, PROTO_V1_NEW, 0, id, 32, value, 4, &out_len),
        PROTO_OK);
    ck_assert_uint_eq(out_len, 40);

    /* The largest datagram, into a buffer of exactly that size. */
    ck_assert_int_eq(proto_v1_encode(out, PROTO_MAX_DATAGRAM, PROTO_V1_NEW, 0, id, 32, big_value,
                                     PROTO_V1_MAX_VALUE, &out_len),
                     PROTO_OK);
    ck_assert_uint_eq(out_len, 65507);
    ck_assert_int_eq(proto_v1_parse_request(out, out_len, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.value_len, 65471);
    ck_assert_mem_eq(msg.value, big_value, PROTO_V1_MAX_VALUE);

    /* One byte more is too long for any buffer. */
    ck_assert_int_eq(proto_v1_encode(out, PROTO_MAX_DATAGRAM, PROTO_V1_NEW, 0, id, 32, big_value,
                                     PROTO_V1_MAX_VALUE + 1, &out_len),
                     PROTO_ERR_TOO_LONG);
    /* Too long wins over too small a buffer: no buffer could hold it. */
    expect_encode_refused(8, PROTO_V1_NEW, id, 32, big_value, PROTO_V1_MAX_VALUE + 1,
                          PROTO_ERR_TOO_LONG);
    /* A length that would wrap 36 + value_len is refused before any byte of
     * the value is read (so a 4-byte buffer is safe to pass here). */
    expect_encode_refused(128, PROTO_V1_NEW, id, 32, value, SIZE_MAX, PROTO_ERR_TOO_LONG);
    expect_encode_refused(128, PROTO_V1_NEW, id, 32, value, SIZE_MAX - 35, PROTO_ERR_TOO_LONG);
    free(big_value);
    free(out);
}
END_TEST

/* The daemon may answer in the very buffer the GET arrived in: the key
 * echoed from buf + 4 to buf + 4, the value already at buf + 36. */
START_TEST(test_encode_in_place)
{
    uint8_t buf[PROTO_V1_HEADER_LEN + 5], want[sizeof buf];
    const uint8_t id[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                            0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
    const uint8_t value[5] = {0x30, 0x03, 0x02, 0x01, 0x01};
    proto_v1_msg msg;
    size_t out_len = 0;

    ck_assert_int_eq(proto_v1_encode(want, sizeof want, PROTO_V1_FOUND, 0, id, sizeof id, value,
                                     sizeof value, &out_len),
                     PROTO_OK);

    ck_assert_int_eq(
        proto_v1_encode(buf, sizeof buf, PROTO_V1_GET, 0, id, sizeof id, NULL, 0, &out_len),
        PROTO_OK);
    ck_assert_int_eq(proto_v1_parse_request(buf, out_len, &msg), PROTO_OK);
    ck_assert_int_eq(proto_v1_encode_answer_header(buf, sizeof buf, PROTO_V1_FOUND, msg.key),
                     PROTO_OK);
    memcpy(buf + PROTO_V1_HEADER_LEN, value, sizeof value);
    ck_assert_mem_eq(buf, want, sizeof want);

    /* proto_v1_encode with key and value both already in place. */
    ck_assert_int_eq(proto_v1_encode(buf, sizeof buf, PROTO_V1_FOUND, 0, buf + 4, PROTO_V1_KEY_LEN,
                                     buf + 36, sizeof value, &out_len),
                     PROTO_OK);
    ck_assert_mem_eq(buf, want, sizeof want);
}
END_TEST

START_TEST(test_encode_answer_header)
{
    const uint8_t bad_types[] = {PROTO_V1_NEW, PROTO_V1_GET, PROTO_V1_REMOVE, 0x82, 0xff};
    uint8_t key[PROTO_V1_KEY_LEN], out[PROTO_V1_HEADER_LEN + 1];
    size_t i;

    for (i = 0; i < sizeof key; i++)
        key[i] = (uint8_t)(0xf0 - i);

    memset(out, FILL, sizeof out);
    ck_assert_int_eq(proto_v1_encode_answer_header(out, sizeof out, PROTO_V1_NOT_FOUND, key),
                     PROTO_OK);
    ck_assert_uint_eq(out[0], 1);
    ck_assert_uint_eq(out[1], 0x80);
    ck_assert_uint_eq(out[2], 0);
    ck_assert_uint_eq(out[3], 0);
    ck_assert_mem_eq(out + 4, key, 32);
    ck_assert_uint_eq(out[36], FILL);

    ck_assert_int_eq(proto_v1_encode_answer_header(out, PROTO_V1_HEADER_LEN, PROTO_V1_FOUND, key),
                     PROTO_OK);
    ck_assert_uint_eq(out[1], 0x81);

    for (i = 0; i < sizeof bad_types; i++) {
        memset(out, FILL, sizeof out);
        ck_assert_int_eq(proto_v1_encode_answer_header(out, sizeof out, bad_types[i], key),
                         PROTO_ERR_INVALID);
        ck_assert(tc_all_bytes_are(out, sizeof out, FILL));
    }
    ck_assert_int_eq(proto_v1_encode_answer_header(out, sizeof out, PROTO_V1_FOUND, NULL),
                     PROTO_ERR_INVALID);
    ck_assert_int_eq(
        proto_v1_encode_answer_header(out, PROTO_V1_HEADER_LEN - 1, PROTO_V1_FOUND, key),
        PROTO_ERR_NOSPACE);
    ck_assert_int_eq(proto_v1_encode_answer_header(NULL, 0, PROTO_V1_FOUND, key),
                     PROTO_ERR_NOSPACE);
    ck_assert(tc_all_bytes_are(out, sizeof out, FILL));
}
END_TEST

/* ---- stunnel's bytes and the spec's test vectors ---------------------- */

/* Written out by hand from stunnel's packet (version 1, type, htons of the
 * timeout, the ID memcpy'd into a zero-filled 32-byte key, the value), not
 * produced by our encoder. PROTOCOL.md carries the same bytes. */
typedef struct spec_vector {
    const char *name;
    uint8_t type;
    uint16_t timeout;
    uint8_t id[PROTO_V1_KEY_LEN];
    size_t id_len;
    uint8_t value[8];
    size_t value_len;
    const char *hex;
} spec_vector;

#define ID_00_1F                                                                                   \
    {                                                                                              \
        0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e,  \
            0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c,    \
            0x1d, 0x1e, 0x1f                                                                       \
    }
#define ID_A0_AF                                                                                   \
    {                                                                                              \
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae,  \
            0xaf                                                                                   \
    }
#define ID_5A                                                                                      \
    {                                                                                              \
        0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,  \
            0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a, 0x5a,    \
            0x5a, 0x5a, 0x5a                                                                       \
    }

static const spec_vector spec_vectors[] = {
    {"new-id32",
     PROTO_V1_NEW,
     300,
     ID_00_1F,
     32,
     {0x30, 0x03, 0x02, 0x01, 0x01},
     5,
     "01 00 01 2c 00 01 02 03 04 05 06 07 08 09 0a 0b"
     "0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b"
     "1c 1d 1e 1f 30 03 02 01 01"},
    {"new-cap",
     PROTO_V1_NEW,
     64800,
     ID_5A,
     32,
     {0x05, 0x00},
     2,
     "01 00 fd 20 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a"
     "5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a 5a"
     "5a 5a 5a 5a 05 00"},
    {"get-id16",
     PROTO_V1_GET,
     0,
     ID_A0_AF,
     16,
     {0},
     0,
     "01 01 00 00 a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab"
     "ac ad ae af 00 00 00 00 00 00 00 00 00 00 00 00"
     "00 00 00 00"},
    {"found-id16",
     PROTO_V1_FOUND,
     0,
     ID_A0_AF,
     16,
     {0x30, 0x03, 0x02, 0x01, 0x01},
     5,
     "01 81 00 00 a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab"
     "ac ad ae af 00 00 00 00 00 00 00 00 00 00 00 00"
     "00 00 00 00 30 03 02 01 01"},
    {"not-found-id16",
     PROTO_V1_NOT_FOUND,
     0,
     ID_A0_AF,
     16,
     {0},
     0,
     "01 80 00 00 a0 a1 a2 a3 a4 a5 a6 a7 a8 a9 aa ab"
     "ac ad ae af 00 00 00 00 00 00 00 00 00 00 00 00"
     "00 00 00 00"},
    {"remove-id32",
     PROTO_V1_REMOVE,
     0,
     ID_00_1F,
     32,
     {0},
     0,
     "01 02 00 00 00 01 02 03 04 05 06 07 08 09 0a 0b"
     "0c 0d 0e 0f 10 11 12 13 14 15 16 17 18 19 1a 1b"
     "1c 1d 1e 1f"},
};
#define N_SPEC_VECTORS (sizeof spec_vectors / sizeof spec_vectors[0])

START_TEST(test_spec_vector_encode_parse)
{
    const spec_vector *v = &spec_vectors[_i];
    uint8_t want[128], out[128];
    size_t want_len = tv_hex_decode(v->hex, want, sizeof want), out_len = 0;
    uint8_t padded_key[PROTO_V1_KEY_LEN] = {0};
    proto_v1_msg msg;
    proto_status parsed;

    ck_assert_uint_eq(want_len, PROTO_V1_HEADER_LEN + v->value_len);
    ck_assert_int_eq(proto_v1_encode(out, sizeof out, v->type, v->timeout, v->id, v->id_len,
                                     v->value_len ? v->value : NULL, v->value_len, &out_len),
                     PROTO_OK);
    ck_assert_uint_eq(out_len, want_len);
    ck_assert_mem_eq(out, want, want_len);

    memcpy(padded_key, v->id, v->id_len);
    parsed = v->type & 0x80 ? proto_v1_parse_answer(want, want_len, &msg)
                            : proto_v1_parse_request(want, want_len, &msg);
    ck_assert_int_eq(parsed, PROTO_OK);
    ck_assert_uint_eq(msg.type, v->type);
    ck_assert_uint_eq(msg.timeout, v->timeout);
    ck_assert_mem_eq(msg.key, padded_key, PROTO_V1_KEY_LEN);
    ck_assert_uint_eq(msg.value_len, v->value_len);
    if (v->value_len)
        ck_assert_mem_eq(msg.value, v->value, v->value_len);
}
END_TEST

START_TEST(test_spec_vectors_match_protocol_md)
{
    char *text = tv_read_spec();
    size_t i;

    for (i = 0; i < N_SPEC_VECTORS; i++) {
        uint8_t want[128], doc[128];
        size_t want_len = tv_hex_decode(spec_vectors[i].hex, want, sizeof want);
        size_t doc_len = tv_spec_vector_bytes(text, spec_vectors[i].name, doc, sizeof doc);

        ck_assert_msg(doc_len == want_len, "vector %s: %zu bytes in PROTOCOL.md, %zu here",
                      spec_vectors[i].name, doc_len, want_len);
        ck_assert_msg(memcmp(doc, want, want_len) == 0, "vector %s differs from PROTOCOL.md",
                      spec_vectors[i].name);
    }
    free(text);
}
END_TEST

/* stunnel's acceptance of an answer (PROTOCOL.md, "What stunnel does with an
 * answer"), applied to what our encoder builds: a hit hands back the value. */
static int stunnel_accepts(const uint8_t *ans, size_t len, const uint8_t *id, size_t id_len,
                           const uint8_t **value, size_t *value_len)
{
    if (len < 36 || ans[0] != 1 || memcmp(ans + 4, id, id_len) != 0)
        return -1; /* malformed: a miss */
    if (ans[1] != 0x81)
        return 0; /* not found */
    *value = ans + 36;
    *value_len = len - 36;
    return 1;
}

START_TEST(test_stunnel_accepts_our_answers)
{
    const uint8_t id[16] = {0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
                            0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf};
    const uint8_t der[5] = {0x30, 0x03, 0x02, 0x01, 0x01};
    uint8_t get[64], ans[64];
    size_t get_len = 0, ans_len = 0, value_len = 0;
    const uint8_t *value = NULL;
    proto_v1_msg req;

    ck_assert_int_eq(
        proto_v1_encode(get, sizeof get, PROTO_V1_GET, 0, id, sizeof id, NULL, 0, &get_len),
        PROTO_OK);
    ck_assert_int_eq(proto_v1_parse_request(get, get_len, &req), PROTO_OK);

    ck_assert_int_eq(proto_v1_encode_answer_header(ans, sizeof ans, PROTO_V1_FOUND, req.key),
                     PROTO_OK);
    memcpy(ans + PROTO_V1_HEADER_LEN, der, sizeof der);
    ans_len = PROTO_V1_HEADER_LEN + sizeof der;
    ck_assert_int_eq(stunnel_accepts(ans, ans_len, id, sizeof id, &value, &value_len), 1);
    ck_assert_uint_eq(value_len, sizeof der);
    ck_assert_mem_eq(value, der, sizeof der);

    ck_assert_int_eq(proto_v1_encode_answer_header(ans, sizeof ans, PROTO_V1_NOT_FOUND, req.key),
                     PROTO_OK);
    ck_assert_int_eq(stunnel_accepts(ans, PROTO_V1_HEADER_LEN, id, sizeof id, &value, &value_len),
                     0);

    /* An answer for another ID is malformed to stunnel. */
    ans[4] ^= 1;
    ck_assert_int_eq(stunnel_accepts(ans, PROTO_V1_HEADER_LEN, id, sizeof id, &value, &value_len),
                     -1);
}
END_TEST

/* ---- status names ----------------------------------------------------- */

START_TEST(test_status_names)
{
    int i, j;

    for (i = 0; i < PROTO_STATUS_COUNT; i++) {
        const char *name = proto_status_name((proto_status)i);

        ck_assert_ptr_nonnull(name);
        ck_assert_msg(name[0] != '\0', "status %d has an empty name", i);
        ck_assert_str_ne(name, "unknown");
        for (j = 0; j < i; j++)
            ck_assert_msg(strcmp(name, proto_status_name((proto_status)j)) != 0,
                          "statuses %d and %d share the name \"%s\"", j, i, name);
    }
    ck_assert_str_eq(proto_status_name(PROTO_OK), "ok");
    ck_assert_str_eq(proto_status_name(PROTO_ERR_SHORT), "short");
    ck_assert_str_eq(proto_status_name(PROTO_ERR_TOO_LONG), "too_long");
    ck_assert_str_eq(proto_status_name(PROTO_STATUS_COUNT), "unknown");
    ck_assert_str_eq(proto_status_name((proto_status)-1), "unknown");
}
END_TEST

static Suite *proto_suite(void)
{
    Suite *s = suite_create("proto");
    TCase *tc;

    tc = tcase_create("parse_request");
    tcase_add_test(tc, test_request_new_fields);
    tcase_add_test(tc, test_request_get_remove_fields);
    tcase_add_test(tc, test_request_too_long);
    tcase_add_test(tc, test_request_short);
    tcase_add_test(tc, test_request_version);
    tcase_add_test(tc, test_request_type);
    tcase_add_test(tc, test_request_empty_value);
    tcase_add_test(tc, test_request_trailing);
    tcase_add_test(tc, test_request_boundaries);
    tcase_add_test(tc, test_parse_matrix);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse_answer");
    tcase_add_test(tc, test_answer_found);
    tcase_add_test(tc, test_answer_not_found);
    tcase_add_test(tc, test_answer_malformed);
    suite_add_tcase(s, tc);

    tc = tcase_create("encode");
    tcase_add_test(tc, test_encode_round_trip);
    tcase_add_test(tc, test_encode_padding);
    tcase_add_test(tc, test_encode_byte_order);
    tcase_add_test(tc, test_encode_invalid);
    tcase_add_test(tc, test_encode_sizes);
    tcase_add_test(tc, test_encode_in_place);
    tcase_add_test(tc, test_encode_answer_header);
    suite_add_tcase(s, tc);

    tc = tcase_create("stunnel");
    tcase_add_loop_test(tc, test_spec_vector_encode_parse, 0, (int)N_SPEC_VECTORS);
    tcase_add_test(tc, test_spec_vectors_match_protocol_md);
    tcase_add_test(tc, test_stunnel_accepts_our_answers);
    suite_add_tcase(s, tc);

    tc = tcase_create("names");
    tcase_add_test(tc, test_status_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
