/* check_proto_v2.c — unit tests of the v2 wire codec's parser
 * (proto/proto_v2.c).
 *
 * What is covered: every header field decoded (with values whose byte order
 * shows), every refusal of the parser with its status, each way the lengths
 * can disagree with the datagram, truncation at every length, requests
 * against answers; parse and encode compared with a model of PROTOCOL.md's
 * rules, restated independently, over every op byte and a spread of flags,
 * statuses and lengths; and the status names.
 *
 * Encoding and the spec's test vectors are tested in
 * check_proto_v2_encode.c, sealing in check_proto_v2_seal.c, opening sealed
 * datagrams in check_proto_v2_open.c.
 *
 * The helpers shared with the other check_proto_v2*.c files (hand-built
 * headers and bodies, a reference sealer built directly on one-shot EVP
 * calls, parse and open checks that also prove a refusal leaves the
 * caller's message alone, and a model of PROTOCOL.md's rules) are in
 * tests/lib/proto_v2_fixture.c.
 */
#include "proto_v2.h"

#include "checks.h"
#include "proto_v2_fixture.h"
#include "vectors.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/evp.h>

/* ---- parse: fields ---------------------------------------------------- */

START_TEST(test_parse_put_fields)
{
    /* Asymmetric values: a little-endian or misplaced read shows. */
    uint8_t *buf = pv_make_plain(PROTO_V2_PUT, 0, 0, 48, 3);
    proto_v2_msg msg;

    ck_assert_int_eq(proto_v2_parse(buf, 16 + 48 + 3, 0, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.op, PROTO_V2_PUT);
    ck_assert_uint_eq(msg.flags, 0);
    ck_assert_uint_eq(msg.status, 0);
    ck_assert_uint_eq(msg.request_id, 0x11223344);
    ck_assert_uint_eq(msg.ttl, 0x0a0b0c0d);
    ck_assert_ptr_eq(msg.key, buf + 16);
    ck_assert_uint_eq(msg.key_len, 48);
    ck_assert_uint_eq(msg.key[47], 0x40 + 47);
    ck_assert_ptr_eq(msg.value, buf + 16 + 48);
    ck_assert_uint_eq(msg.value_len, 3);
    ck_assert_uint_eq(msg.value[2], 0x12);
    ck_assert_uint_eq(msg.timestamp_ms, 0);

    /* The TTL is not capped by the codec (that is the daemon's --max-ttl). */
    memset(buf + 8, 0xff, 4);
    buf[2] = PROTO_V2_F_NO_REPLY;
    ck_assert_int_eq(proto_v2_parse(buf, 16 + 48 + 3, 0, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.ttl, 0xffffffffu);
    ck_assert_uint_eq(msg.flags, PROTO_V2_F_NO_REPLY);
    free(buf);
}
END_TEST

START_TEST(test_parse_other_requests)
{
    static const struct {
        uint8_t op, flags;
        size_t k;
    } ok[] = {
        {PROTO_V2_GET, 0, 1},  {PROTO_V2_GET, 0, 64},  {PROTO_V2_DEL, 0, 48}, {PROTO_V2_DEL, 2, 48},
        {PROTO_V2_PING, 0, 0}, {PROTO_V2_STATS, 0, 0}, {PROTO_V2_PUT, 0, 64},
    };
    size_t i;

    for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t v = ok[i].op == PROTO_V2_PUT ? 1 : 0, len = 16 + ok[i].k + v;
        uint8_t *buf = pv_make_plain(ok[i].op, ok[i].flags, 0, ok[i].k, v);
        proto_v2_msg msg;

        ck_assert_int_eq(proto_v2_parse(buf, len, 0, &msg), PROTO_OK);
        ck_assert_uint_eq(msg.op, ok[i].op);
        ck_assert_uint_eq(msg.flags, ok[i].flags);
        ck_assert_uint_eq(msg.request_id, 0x11223344);
        ck_assert_uint_eq(msg.key_len, ok[i].k);
        if (ok[i].k)
            ck_assert_ptr_eq(msg.key, buf + 16);
        else
            ck_assert_ptr_null(msg.key);
        ck_assert_uint_eq(msg.value_len, v);
        if (!v)
            ck_assert_ptr_null(msg.value);
        free(buf);
    }
}
END_TEST

START_TEST(test_parse_answers)
{
    static const struct {
        uint8_t op, status;
        size_t k, v;
    } ok[] = {
        {0x81, PROTO_V2_ST_OK, 48, 0},        {0x81, PROTO_V2_ST_REFUSED, 48, 0},
        {0x82, PROTO_V2_ST_OK, 48, 5},        {0x82, PROTO_V2_ST_NOT_FOUND, 48, 0},
        {0x82, PROTO_V2_ST_REFUSED, 1, 0},    {0x83, PROTO_V2_ST_OK, 64, 0},
        {0x83, PROTO_V2_ST_NOT_FOUND, 48, 0}, {0x84, PROTO_V2_ST_OK, 0, 0},
        {0x85, PROTO_V2_ST_OK, 0, 300},       {0x85, PROTO_V2_ST_OK, 0, 0},
        {0x85, PROTO_V2_ST_REFUSED, 0, 0},
    };
    size_t i;

    for (i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t len = 16 + ok[i].k + ok[i].v;
        uint8_t *buf = pv_make_plain(ok[i].op, 0, ok[i].status, ok[i].k, ok[i].v);
        proto_v2_msg msg;

        ck_assert_int_eq(proto_v2_parse(buf, len, 1, &msg), PROTO_OK);
        ck_assert_uint_eq(msg.op, ok[i].op);
        ck_assert_uint_eq(msg.status, ok[i].status);
        ck_assert_uint_eq(msg.key_len, ok[i].k);
        ck_assert_uint_eq(msg.value_len, ok[i].v);
        if (ok[i].v)
            ck_assert_ptr_eq(msg.value, buf + 16 + ok[i].k);
        /* An answer is never a request. */
        pv_expect_parse(buf, len, 0, PROTO_ERR_TYPE);
        free(buf);
    }
}
END_TEST

/* ---- parse: each refusal ---------------------------------------------- */

START_TEST(test_parse_too_long)
{
    size_t len = PROTO_MAX_DATAGRAM + 1;
    uint8_t *buf = pv_make_plain(PROTO_V2_PUT, 0, 0, 48, len - 16 - 48);

    pv_expect_parse(buf, len, 0, PROTO_ERR_TOO_LONG);
    buf[0] = 1; /* checked first, whatever the version */
    pv_expect_parse(buf, len, 0, PROTO_ERR_TOO_LONG);
    pv_expect_parse(buf, len, 1, PROTO_ERR_TOO_LONG);
    free(buf);
}
END_TEST

START_TEST(test_parse_short)
{
    size_t len;

    pv_expect_parse(NULL, 0, 0, PROTO_ERR_SHORT);
    pv_expect_parse(NULL, 0, 1, PROTO_ERR_SHORT);
    for (len = 0; len < PROTO_V2_HEADER_LEN; len++) {
        uint8_t *buf = pv_make_plain(PROTO_V2_PING, 0, 0, 0, 0);
        uint8_t *cut = tc_exact_buf(len, 0);

        memcpy(cut, buf, len);
        pv_expect_parse(cut, len, 0, PROTO_ERR_SHORT);
        pv_expect_parse(cut, len, 1, PROTO_ERR_SHORT);
        free(cut);
        free(buf);
    }
}
END_TEST

START_TEST(test_parse_version)
{
    const uint8_t versions[] = {0x00, 0x01, 0x03, 0x82, 0xff};
    uint8_t *buf = pv_make_plain(PROTO_V2_PING, 0, 0, 0, 0);
    size_t i;

    for (i = 0; i < sizeof versions; i++) {
        buf[0] = versions[i];
        pv_expect_parse(buf, 16, 0, PROTO_ERR_VERSION);
    }
    free(buf);
}
END_TEST

START_TEST(test_parse_flags)
{
    uint8_t *buf = pv_make_plain(PROTO_V2_GET, 0, 0, 48, 0);
    unsigned bit, status, op;

    /* Every reserved bit, alone. */
    for (bit = 0x04; bit <= 0x80; bit <<= 1) {
        buf[2] = (uint8_t)bit;
        pv_expect_parse(buf, 64, 0, PROTO_ERR_FLAGS);
        pv_expect_parse(buf, 64, 1, PROTO_ERR_FLAGS);
    }
    /* SEALED: that datagram is for proto_v2_open. */
    buf[2] = PROTO_V2_F_SEALED;
    pv_expect_parse(buf, 64, 0, PROTO_ERR_FLAGS);
    /* NO_REPLY on a GET, PING or STATS is useless, hence refused. */
    buf[2] = PROTO_V2_F_NO_REPLY;
    pv_expect_parse(buf, 64, 0, PROTO_ERR_FLAGS);
    free(buf);
    for (op = PROTO_V2_PING; op <= PROTO_V2_STATS; op++) {
        buf = pv_make_plain((uint8_t)op, PROTO_V2_F_NO_REPLY, 0, 0, 0);
        pv_expect_parse(buf, 16, 0, PROTO_ERR_FLAGS);
        free(buf);
    }
    /* ... and in any answer. */
    buf = pv_make_plain(0x81, PROTO_V2_F_NO_REPLY, 0, 48, 0);
    pv_expect_parse(buf, 64, 1, PROTO_ERR_FLAGS);
    free(buf);

    /* A request's status must be 0; an answer's 0..4. */
    buf = pv_make_plain(PROTO_V2_DEL, 0, 0, 48, 0);
    for (status = 1; status <= 0xff; status++) {
        buf[3] = (uint8_t)status;
        pv_expect_parse(buf, 64, 0, PROTO_ERR_FLAGS);
    }
    buf[1] = 0x83;
    for (status = 0; status <= 0xff; status++) {
        buf[3] = (uint8_t)status;
        pv_expect_parse(buf, 64, 1, status <= 4 ? PROTO_OK : PROTO_ERR_FLAGS);
    }
    free(buf);
}
END_TEST

START_TEST(test_parse_length)
{
    /* A PUT of 48 + 5 bytes is 69 long; every way its lengths can lie. */
    static const struct {
        unsigned k, v;
    } lies[] = {{47, 5}, {49, 5}, {48, 4}, {48, 6},    {0, 5},      {48, 0},
                {0, 0},  {53, 0}, {0, 53}, {65535, 5}, {48, 65535}, {65535, 65535}};
    uint8_t *buf = pv_make_plain(PROTO_V2_PUT, 0, 0, 48, 5), *longer;
    size_t i;

    for (i = 0; i < sizeof lies / sizeof lies[0]; i++) {
        pv_put16(buf + 12, lies[i].k);
        pv_put16(buf + 14, lies[i].v);
        /* {53, 0} and {0, 53} add up to 53 too, but the op rules then
         * refuse them: the length rule itself passes. */
        if (lies[i].k + lies[i].v == 53)
            pv_expect_parse(buf, 69, 0, lies[i].k == 53 ? PROTO_ERR_EMPTY_VALUE : PROTO_ERR_KEY);
        else
            pv_expect_parse(buf, 69, 0, PROTO_ERR_LENGTH);
    }
    pv_put16(buf + 12, 48);
    pv_put16(buf + 14, 5);
    /* The datagram one byte shorter or longer than its header says. */
    pv_expect_parse(buf, 68, 0, PROTO_ERR_LENGTH);
    longer = tc_exact_buf(70, 0x99);
    memcpy(longer, buf, 69);
    pv_expect_parse(longer, 70, 0, PROTO_ERR_LENGTH);
    free(longer);
    free(buf);
}
END_TEST

START_TEST(test_parse_key)
{
    static const uint8_t needs_key[] = {PROTO_V2_PUT, PROTO_V2_GET, PROTO_V2_DEL};
    size_t i;

    for (i = 0; i < sizeof needs_key; i++) {
        size_t v = needs_key[i] == PROTO_V2_PUT ? 1 : 0;
        uint8_t *buf = pv_make_plain(needs_key[i], 0, 0, 0, v);

        pv_expect_parse(buf, 16 + v, 0, PROTO_ERR_KEY);
        free(buf);
        buf = pv_make_plain(needs_key[i], 0, 0, 65, v);
        pv_expect_parse(buf, 16 + 65 + v, 0, PROTO_ERR_KEY);
        free(buf);
        buf = pv_make_plain(needs_key[i], 0, 0, 64, v);
        pv_expect_parse(buf, 16 + 64 + v, 0, PROTO_OK);
        free(buf);
        /* The answer echoes the key: same rules. */
        buf = pv_make_plain((uint8_t)(needs_key[i] | 0x80), 0, PROTO_V2_ST_NOT_FOUND, 0, 0);
        pv_expect_parse(buf, 16, 1, PROTO_ERR_KEY);
        free(buf);
    }
    for (i = PROTO_V2_PING; i <= PROTO_V2_STATS; i++) {
        uint8_t *buf = pv_make_plain((uint8_t)i, 0, 0, 1, 0);

        pv_expect_parse(buf, 17, 0, PROTO_ERR_KEY);
        buf[1] |= 0x80;
        pv_expect_parse(buf, 17, 1, PROTO_ERR_KEY);
        free(buf);
    }
}
END_TEST

START_TEST(test_parse_type)
{
    uint8_t *buf = pv_make_plain(0, 0, 0, 48, 0);
    unsigned op;

    for (op = 0; op <= 0xff; op++) {
        unsigned base = op & 0x7f;
        int known = (base >= 1 && base <= 7) || base == 0x10;
        size_t k = base == 4 || base == 5 || base == 0x10 ? 0 : 48;

        buf[1] = (uint8_t)op;
        pv_put16(buf + 12, (unsigned)k);
        /* A PUT or ADD without a value is refused later, as empty_value: the
         * type passed; so is a found GET, TAKE or KEYS answer. */
        if (!known || (op & 0x80))
            pv_expect_parse(buf, 16 + k, 0, PROTO_ERR_TYPE);
        else
            pv_expect_parse(buf, 16 + k, 0,
                            op == PROTO_V2_PUT || op == PROTO_V2_ADD ? PROTO_ERR_EMPTY_VALUE
                                                                     : PROTO_OK);
        if (!known || !(op & 0x80))
            pv_expect_parse(buf, 16 + k, 1, PROTO_ERR_TYPE);
        else
            pv_expect_parse(buf, 16 + k, 1,
                            op == 0x82 || op == 0x86 || op == 0x90 ? PROTO_ERR_EMPTY_VALUE
                                                                   : PROTO_OK);
    }
    free(buf);
}
END_TEST

START_TEST(test_parse_value)
{
    uint8_t *buf;
    unsigned op;
    proto_v2_msg msg;

    buf = pv_make_plain(PROTO_V2_PUT, 0, 0, 48, 0);
    pv_expect_parse(buf, 64, 0, PROTO_ERR_EMPTY_VALUE);
    free(buf);
    for (op = PROTO_V2_GET; op <= PROTO_V2_STATS; op++) {
        size_t k = op >= PROTO_V2_PING ? 0 : 48;

        buf = pv_make_plain((uint8_t)op, 0, 0, k, 1);
        pv_expect_parse(buf, 16 + k + 1, 0, PROTO_ERR_TRAILING);
        free(buf);
    }
    /* Answers: a found GET needs a value, anything but OK GET/STATS has none. */
    buf = pv_make_plain(0x82, 0, PROTO_V2_ST_OK, 48, 0);
    pv_expect_parse(buf, 64, 1, PROTO_ERR_EMPTY_VALUE);
    free(buf);
    buf = pv_make_plain(0x82, 0, PROTO_V2_ST_NOT_FOUND, 48, 1);
    pv_expect_parse(buf, 65, 1, PROTO_ERR_TRAILING);
    free(buf);
    buf = pv_make_plain(0x85, 0, PROTO_V2_ST_REFUSED, 0, 1);
    pv_expect_parse(buf, 17, 1, PROTO_ERR_TRAILING);
    free(buf);
    for (op = 0x81; op <= 0x84; op++) {
        size_t k = op == 0x84 ? 0 : 48;

        if (op == 0x82)
            continue;
        buf = pv_make_plain((uint8_t)op, 0, PROTO_V2_ST_OK, k, 1);
        pv_expect_parse(buf, 16 + k + 1, 1, PROTO_ERR_TRAILING);
        free(buf);
    }

    /* The value limit, with the longest key: exactly the largest datagram
     * would be sealed; plain it is 40 bytes shorter. */
    buf = pv_make_plain(PROTO_V2_PUT, 0, 0, 64, PROTO_V2_MAX_VALUE);
    ck_assert_int_eq(proto_v2_parse(buf, 16 + 64 + PROTO_V2_MAX_VALUE, 0, &msg), PROTO_OK);
    ck_assert_uint_eq(msg.value_len, 65387);
    free(buf);
    /* One byte more is too long even though the plain datagram would fit. */
    buf = pv_make_plain(PROTO_V2_PUT, 0, 0, 1, PROTO_V2_MAX_VALUE + 1);
    pv_expect_parse(buf, 16 + 1 + PROTO_V2_MAX_VALUE + 1, 0, PROTO_ERR_TOO_LONG);
    free(buf);
}
END_TEST

START_TEST(test_parse_truncated_every_length)
{
    size_t full = 16 + 48 + 40, len;
    uint8_t *buf = pv_make_plain(PROTO_V2_PUT, 0, 0, 48, 40);

    ck_assert_int_eq(pv_model_plain(0, buf, full), PROTO_OK);
    for (len = 0; len < full; len++) {
        uint8_t *cut = tc_exact_buf(len, 0);

        memcpy(cut, buf, len);
        pv_expect_parse(cut, len, 0, len < 16 ? PROTO_ERR_SHORT : PROTO_ERR_LENGTH);
        free(cut);
    }
    free(buf);
}
END_TEST

/* The parser against the model over every op byte, flags, statuses and
 * lengths around each boundary; and encode against the same model (it must
 * refuse what the parser refuses, with the same status). */
START_TEST(test_parse_encode_matrix)
{
    static const uint8_t flag_set[] = {0, 1, 2, 3, 4, 0x80};
    static const struct {
        size_t k, v;
    } lens[] = {{0, 0},  {1, 0},  {0, 1}, {48, 0}, {48, 5},    {64, 0},
                {65, 0}, {64, 1}, {1, 1}, {0, 9},  {1, 65387}, {1, 65388}};
    uint8_t *buf = tc_exact_buf(65508, 0x33), *out = tc_exact_buf(65508, 0);
    unsigned op, status;
    size_t f, l;

    pv_put_body(buf + 16, 64, 65508 - 16 - 64);
    for (op = 0; op <= 0xff; op++)
        for (f = 0; f < sizeof flag_set; f++)
            for (status = 0; status <= 5; status++)
                for (l = 0; l < sizeof lens / sizeof lens[0]; l++) {
                    size_t k = lens[l].k, v = lens[l].v, len = 16 + k + v;
                    int answer;

                    pv_put_header(buf, (uint8_t)op, flag_set[f], (uint8_t)status, 7, 9, (unsigned)k,
                                  (unsigned)v);
                    for (answer = 0; answer <= 1; answer++) {
                        proto_v2_msg msg = {0};
                        int want = pv_model_plain(answer, buf, len), got;

                        got = proto_v2_parse(buf, len, answer, &msg);
                        ck_assert_msg(got == want, "op 0x%02x flags %u st %u k %zu v %zu %s: %s/%s",
                                      op, flag_set[f], status, k, v, answer ? "ans" : "req",
                                      proto_v2_status_name(got), proto_v2_status_name(want));
                    }
                    {
                        /* encode decides request or answer from the op. */
                        proto_v2_msg msg = {.op = (uint8_t)op,
                                            .flags = flag_set[f],
                                            .status = (uint8_t)status,
                                            .request_id = 7,
                                            .ttl = 9,
                                            .key = k ? buf + 16 : NULL,
                                            .key_len = k,
                                            .value = v ? buf + 16 + k : NULL,
                                            .value_len = v};
                        size_t out_len = 0;
                        int want = pv_model_plain((op & 0x80) != 0, buf, len);
                        int got = proto_v2_encode(out, 65508, &msg, &out_len);

                        ck_assert_msg(got == want,
                                      "encode op 0x%02x flags %u st %u k %zu v %zu: %s/%s", op,
                                      flag_set[f], status, k, v, proto_v2_status_name(got),
                                      proto_v2_status_name(want));
                        if (got == PROTO_OK) {
                            ck_assert_uint_eq(out_len, len);
                            ck_assert_mem_eq(out, buf, len);
                        }
                    }
                }
    free(buf);
    free(out);
}
END_TEST

/* ---- status names ----------------------------------------------------- */

START_TEST(test_status_names)
{
    int i, j;

    for (i = 0; i < PROTO_V2_STATUS_COUNT; i++) {
        const char *name = proto_v2_status_name(i);

        ck_assert_ptr_nonnull(name);
        ck_assert_msg(name[0] != '\0', "status %d has an empty name", i);
        ck_assert_str_ne(name, "unknown");
        for (j = 0; j < i; j++)
            ck_assert_msg(strcmp(name, proto_v2_status_name(j)) != 0,
                          "statuses %d and %d share the name \"%s\"", j, i, name);
    }
    ck_assert_str_eq(proto_v2_status_name(PROTO_OK), "ok");
    ck_assert_str_eq(proto_v2_status_name(PROTO_ERR_SHORT), "short");
    ck_assert_str_eq(proto_v2_status_name(PROTO_ERR_LENGTH), "length");
    ck_assert_str_eq(proto_v2_status_name(PROTO_ERR_AUTH), "auth");
    ck_assert_str_eq(proto_v2_status_name(PROTO_ERR_STALE), "stale");
    ck_assert_str_eq(proto_v2_status_name(PROTO_ERR_UNKNOWN_KEY), "unknown_key");
    ck_assert_str_eq(proto_v2_status_name(PROTO_V2_STATUS_COUNT), "unknown");
    ck_assert_str_eq(proto_v2_status_name(-1), "unknown");
}
END_TEST

static Suite *proto_v2_suite(void)
{
    Suite *s = suite_create("proto_v2");
    TCase *tc;

    tc = tcase_create("parse");
    tcase_add_test(tc, test_parse_put_fields);
    tcase_add_test(tc, test_parse_other_requests);
    tcase_add_test(tc, test_parse_answers);
    tcase_add_test(tc, test_parse_too_long);
    tcase_add_test(tc, test_parse_short);
    tcase_add_test(tc, test_parse_version);
    tcase_add_test(tc, test_parse_flags);
    tcase_add_test(tc, test_parse_length);
    tcase_add_test(tc, test_parse_key);
    tcase_add_test(tc, test_parse_type);
    tcase_add_test(tc, test_parse_value);
    tcase_add_test(tc, test_parse_truncated_every_length);
    tcase_add_test(tc, test_parse_encode_matrix);
    tcase_set_timeout(tc, 60); /* the matrix, under the sanitizers */
    suite_add_tcase(s, tc);

    tc = tcase_create("names");
    tcase_add_test(tc, test_status_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_v2_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
