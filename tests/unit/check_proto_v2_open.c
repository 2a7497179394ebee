/* check_proto_v2_open.c — unit tests of the v2 codec's receiving side for
 * sealed datagrams: proto_v2_open (proto/proto_v2.c).
 *
 * What is covered: every single byte of a sealed datagram tampered with
 * (refused, and the decrypted bytes wiped); truncation at every length;
 * wrong keys and forged key IDs; the next key of a rollover; stale
 * timestamps on both sides of the window edge, with the decrypted bytes of
 * a stale datagram wiped; fields checked only after authentication; the
 * framing; requests against answers.
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

/* ---- opening ---------------------------------------------------------- */

/* The status expected when byte i of a sealed datagram (single-key
 * receiver) is XORed with mask. */
static int tamper_verdict(size_t i, uint8_t mask, uint8_t flags)
{
    if (i == 0)
        return PROTO_ERR_VERSION;
    if (i == 2) {
        uint8_t f = flags ^ mask;

        if ((f & ~3u) || !(f & PROTO_V2_F_SEALED))
            return PROTO_ERR_FLAGS;
        return PROTO_ERR_AUTH; /* NO_REPLY toggled: authenticated header */
    }
    if (i >= 12 && i < 16)
        return PROTO_ERR_LENGTH;
    if (i >= 16 && i < 20)
        return PROTO_ERR_UNKNOWN_KEY;
    return PROTO_ERR_AUTH;
}

START_TEST(test_open_tamper_every_byte)
{
    static const uint8_t masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff};
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t key[48], value[20];
    proto_v2_msg msg = {.op = PROTO_V2_PUT,
                        .request_id = 42,
                        .ttl = 300,
                        .key = key,
                        .key_len = sizeof key,
                        .value = value,
                        .value_len = sizeof value,
                        .timestamp_ms = PV_T0};
    size_t len = 0, i, m, total = PV_SEALED_OVERHEAD + 48 + 20;
    uint8_t *good = tc_exact_buf(total, 0), *bad = tc_exact_buf(total, 0);

    pv_put_body(key, 48, 0);
    pv_put_body(value, 0, 20);
    ck_assert_int_eq(proto_v2_seal(s, good, total, &msg, &len), PROTO_OK);
    pv_expect_open(s, good, len, 0, PV_T0, PROTO_V2_DEFAULT_WINDOW_MS, PROTO_OK);
    for (i = 0; i < len; i++)
        for (m = 0; m < sizeof masks; m++) {
            memcpy(bad, good, len);
            bad[i] ^= masks[m];
            pv_expect_open(s, bad, len, 0, PV_T0, PROTO_V2_DEFAULT_WINDOW_MS,
                           tamper_verdict(i, masks[m], good[2]));
        }
    /* A failed open leaves the sealer usable. */
    pv_expect_open(s, good, len, 0, PV_T0, PROTO_V2_DEFAULT_WINDOW_MS, PROTO_OK);
    free(good);
    free(bad);
    proto_v2_sealer_free(s);
}
END_TEST

START_TEST(test_open_truncated_every_length)
{
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t key[48], value[30];
    proto_v2_msg msg = {.op = 0x82,
                        .key = key,
                        .key_len = 48,
                        .value = value,
                        .value_len = 30,
                        .timestamp_ms = PV_T0};
    size_t total = PV_SEALED_OVERHEAD + 48 + 30, len = 0, n;
    uint8_t *good = tc_exact_buf(total, 0), *longer = tc_exact_buf(total + 1, 0);

    pv_put_body(key, 48, 0);
    pv_put_body(value, 0, 30);
    ck_assert_int_eq(proto_v2_seal(s, good, total, &msg, &len), PROTO_OK);
    for (n = 0; n < len; n++)
        pv_expect_open(s, good, n, 1, PV_T0, PROTO_V2_DEFAULT_WINDOW_MS,
                       n < 16 ? PROTO_ERR_SHORT : PROTO_ERR_LENGTH);
    memcpy(longer, good, len);
    pv_expect_open(s, longer, len + 1, 1, PV_T0, PROTO_V2_DEFAULT_WINDOW_MS, PROTO_ERR_LENGTH);
    pv_expect_open(s, NULL, 0, 1, PV_T0, PROTO_V2_DEFAULT_WINDOW_MS, PROTO_ERR_SHORT);
    free(good);
    free(longer);
    proto_v2_sealer_free(s);
}
END_TEST

START_TEST(test_open_wrong_key)
{
    proto_v2_sealer *a = pv_new_sealer(pv_key_a, NULL), *b = pv_new_sealer(pv_key_b, NULL);
    uint8_t key[48], out[PV_SEALED_OVERHEAD + 48], id_b[4];
    proto_v2_msg msg = {.op = PROTO_V2_GET, .key = key, .key_len = 48, .timestamp_ms = PV_T0};
    size_t len = 0;

    pv_put_body(key, 48, 0);
    ck_assert_int_eq(proto_v2_seal(a, out, sizeof out, &msg, &len), PROTO_OK);
    pv_expect_open(b, out, len, 0, PV_T0, 1000, PROTO_ERR_UNKNOWN_KEY);
    pv_expect_open(NULL, out, len, 0, PV_T0, 1000, PROTO_ERR_UNKNOWN_KEY);
    /* A forged key ID gets as far as the tag, which fails. */
    pv_ref_key_id(pv_key_b, id_b);
    memcpy(out + 16, id_b, 4);
    pv_expect_open(b, out, len, 0, PV_T0, 1000, PROTO_ERR_AUTH);
    proto_v2_sealer_free(a);
    proto_v2_sealer_free(b);
}
END_TEST

/* The rollover of PROTOCOL.md: step 1 (A, next B), step 2 (B, next A),
 * step 3 (B alone). */
START_TEST(test_open_next_key)
{
    proto_v2_sealer *old = pv_new_sealer(pv_key_a, NULL),
                    *step1 = pv_new_sealer(pv_key_a, pv_key_b);
    proto_v2_sealer *step2 = pv_new_sealer(pv_key_b, pv_key_a),
                    *step3 = pv_new_sealer(pv_key_b, NULL);
    proto_v2_sealer *same = pv_new_sealer(pv_key_a, pv_key_a);
    uint8_t key[48], out[PV_SEALED_OVERHEAD + 48], ida[4], idb[4];
    proto_v2_msg msg = {.op = PROTO_V2_GET, .key = key, .key_len = 48, .timestamp_ms = PV_T0};
    size_t len = 0;

    pv_put_body(key, 48, 0);
    pv_ref_key_id(pv_key_a, ida);
    pv_ref_key_id(pv_key_b, idb);

    ck_assert_int_eq(proto_v2_seal(step1, out, sizeof out, &msg, &len), PROTO_OK);
    ck_assert_mem_eq(out + 16, ida, 4); /* sends with the first key */
    pv_expect_open(old, out, len, 0, PV_T0, 0, PROTO_OK);
    pv_expect_open(step2, out, len, 0, PV_T0, 0, PROTO_OK); /* through its next key */
    pv_expect_open(step3, out, len, 0, PV_T0, 0, PROTO_ERR_UNKNOWN_KEY);

    ck_assert_int_eq(proto_v2_seal(step2, out, sizeof out, &msg, &len), PROTO_OK);
    ck_assert_mem_eq(out + 16, idb, 4);
    pv_expect_open(step1, out, len, 0, PV_T0, 0, PROTO_OK); /* through its next key */
    pv_expect_open(step3, out, len, 0, PV_T0, 0, PROTO_OK);
    pv_expect_open(old, out, len, 0, PV_T0, 0, PROTO_ERR_UNKNOWN_KEY);
    pv_expect_open(same, out, len, 0, PV_T0, 0, PROTO_ERR_UNKNOWN_KEY);

    /* The same key twice is one key. */
    ck_assert_int_eq(proto_v2_seal(same, out, sizeof out, &msg, &len), PROTO_OK);
    pv_expect_open(old, out, len, 0, PV_T0, 0, PROTO_OK);
    pv_expect_open(same, out, len, 0, PV_T0, 0, PROTO_OK);

    proto_v2_sealer_free(old);
    proto_v2_sealer_free(step1);
    proto_v2_sealer_free(step2);
    proto_v2_sealer_free(step3);
    proto_v2_sealer_free(same);
}
END_TEST

START_TEST(test_open_stale_window)
{
    static const uint64_t windows[] = {0, 1, 30000, 86400000};
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t out[PV_SEALED_OVERHEAD];
    proto_v2_msg msg = {.op = PROTO_V2_PING, .timestamp_ms = PV_T0};
    size_t len = 0, w;

    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
    for (w = 0; w < sizeof windows / sizeof windows[0]; w++) {
        uint64_t win = windows[w];

        /* Receiver's clock behind the sender's, then ahead of it. */
        pv_expect_open(s, out, len, 0, PV_T0 - win, win, PROTO_OK);
        pv_expect_open(s, out, len, 0, PV_T0 - win - 1, win, PROTO_ERR_STALE);
        pv_expect_open(s, out, len, 0, PV_T0 + win, win, PROTO_OK);
        pv_expect_open(s, out, len, 0, PV_T0 + win + 1, win, PROTO_ERR_STALE);
    }
    /* Far apart in both directions: no wrap-around into the window. */
    pv_expect_open(s, out, len, 0, 0, PROTO_V2_DEFAULT_WINDOW_MS, PROTO_ERR_STALE);
    pv_expect_open(s, out, len, 0, UINT64_MAX, PROTO_V2_DEFAULT_WINDOW_MS, PROTO_ERR_STALE);
    msg.timestamp_ms = UINT64_MAX;
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
    pv_expect_open(s, out, len, 0, 0, PROTO_V2_DEFAULT_WINDOW_MS, PROTO_ERR_STALE);
    pv_expect_open(s, out, len, 0, UINT64_MAX, 0, PROTO_OK);
    pv_expect_open(s, out, len, 0, 0, UINT64_MAX, PROTO_OK);
    proto_v2_sealer_free(s);
}
END_TEST

/* A stale datagram with a body: the authenticated plaintext is wiped too. */
START_TEST(test_open_stale_wipes)
{
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t key[48], value[10], out[PV_SEALED_OVERHEAD + 58];
    proto_v2_msg msg = {.op = PROTO_V2_PUT,
                        .key = key,
                        .key_len = 48,
                        .value = value,
                        .value_len = 10,
                        .timestamp_ms = PV_T0};
    size_t len = 0;

    pv_put_body(key, 48, 0);
    pv_put_body(value, 0, 10);
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
    pv_expect_open(s, out, len, 0, PV_T0 + 30001, 30000, PROTO_ERR_STALE); /* checks the wipe */
    proto_v2_sealer_free(s);
}
END_TEST

/* Field rules come after the tag: a sealed datagram with valid crypto but
 * bad fields (built by the reference sealer, since proto_v2_seal refuses to)
 * is refused by the same rule as plain, and wiped. */
START_TEST(test_open_fields_after_auth)
{
    static const struct {
        uint8_t op, flags, status;
        size_t k, v;
        int answer, want;
    } cases[] = {
        {0x08, 1, 0, 48, 0, 0, PROTO_ERR_TYPE},
        {0x82, 1, 0, 48, 5, 0, PROTO_ERR_TYPE},
        {0x02, 1, 0, 48, 0, 1, PROTO_ERR_TYPE},
        {0x02, 1, 1, 48, 0, 0, PROTO_ERR_FLAGS},
        {0x02, 3, 0, 48, 0, 0, PROTO_ERR_FLAGS},
        {0x82, 1, 5, 48, 0, 1, PROTO_ERR_FLAGS},
        {0x02, 1, 0, 0, 0, 0, PROTO_ERR_KEY},
        {0x02, 1, 0, 65, 0, 0, PROTO_ERR_KEY},
        {0x04, 1, 0, 4, 0, 0, PROTO_ERR_KEY},
        {0x01, 1, 0, 48, 0, 0, PROTO_ERR_EMPTY_VALUE},
        {0x02, 1, 0, 48, 3, 0, PROTO_ERR_TRAILING},
        {0x82, 1, 0, 48, 0, 1, PROTO_ERR_EMPTY_VALUE},
        {0x01, 1, 0, 1, 65388, 0, PROTO_ERR_TOO_LONG},
        {0x01, 3, 0, 48, 5, 0, PROTO_OK},
        {0x85, 1, 0, 0, 7, 1, PROTO_OK},
    };
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len = 0;
        uint8_t *buf = pv_make_sealed(pv_key_a, cases[i].op, cases[i].flags, cases[i].status,
                                      cases[i].k, cases[i].v, PV_T0, &len);

        pv_expect_open(s, buf, len, cases[i].answer, PV_T0, 1000, cases[i].want);
        /* With the wrong key the same datagram is only ever unknown_key. */
        free(buf);
        buf = pv_make_sealed(pv_key_b, cases[i].op, cases[i].flags, cases[i].status, cases[i].k,
                             cases[i].v, PV_T0, &len);
        pv_expect_open(s, buf, len, cases[i].answer, PV_T0, 1000, PROTO_ERR_UNKNOWN_KEY);
        free(buf);
    }
    proto_v2_sealer_free(s);
}
END_TEST

START_TEST(test_open_framing)
{
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t *plain = pv_make_plain(PROTO_V2_GET, 0, 0, 48, 0), *big;
    size_t len = 0;

    /* A plain datagram is not opened, even if its length happened to fit. */
    pv_expect_open(s, plain, 64, 0, PV_T0, 1000, PROTO_ERR_FLAGS);
    free(plain);
    big = pv_make_sealed(pv_key_a, PROTO_V2_PUT, 1, 0, 48, 5, PV_T0, &len);
    big[0] = 1;
    pv_expect_open(s, big, len, 0, PV_T0, 1000, PROTO_ERR_VERSION);
    big[0] = 2;
    big[2] = 0x05;
    pv_expect_open(s, big, len, 0, PV_T0, 1000, PROTO_ERR_FLAGS);
    free(big);
    big = tc_exact_buf(PROTO_MAX_DATAGRAM + 1, 0);
    pv_put_header(big, PROTO_V2_PUT, 1, 0, 0, 0, 48, PROTO_MAX_DATAGRAM + 1 - 56 - 48);
    pv_expect_open(s, big, PROTO_MAX_DATAGRAM + 1, 0, PV_T0, 1000, PROTO_ERR_TOO_LONG);
    free(big);
    proto_v2_sealer_free(s);
}
END_TEST

/* Requests and answers are not interchangeable, sealed or not: a sealed
 * request reflected back to its sender is refused. */
START_TEST(test_open_request_vs_answer)
{
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t key[48], out[PV_SEALED_OVERHEAD + 48];
    proto_v2_msg msg = {.op = PROTO_V2_DEL, .key = key, .key_len = 48, .timestamp_ms = PV_T0};
    size_t len = 0;

    pv_put_body(key, 48, 0);
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
    pv_expect_open(s, out, len, 1, PV_T0, 1000, PROTO_ERR_TYPE);
    pv_expect_open(s, out, len, 0, PV_T0, 1000, PROTO_OK);
    msg.op = 0x83;
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
    pv_expect_open(s, out, len, 0, PV_T0, 1000, PROTO_ERR_TYPE);
    pv_expect_open(s, out, len, 1, PV_T0, 1000, PROTO_OK);
    proto_v2_sealer_free(s);
}
END_TEST

static Suite *proto_v2_open_suite(void)
{
    Suite *s = suite_create("proto_v2_open");
    TCase *tc;

    tc = tcase_create("open");
    tcase_add_test(tc, test_open_tamper_every_byte);
    tcase_add_test(tc, test_open_truncated_every_length);
    tcase_add_test(tc, test_open_wrong_key);
    tcase_add_test(tc, test_open_next_key);
    tcase_add_test(tc, test_open_stale_window);
    tcase_add_test(tc, test_open_stale_wipes);
    tcase_add_test(tc, test_open_fields_after_auth);
    tcase_add_test(tc, test_open_framing);
    tcase_add_test(tc, test_open_request_vs_answer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_v2_open_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
