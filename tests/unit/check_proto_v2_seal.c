/* check_proto_v2_seal.c — unit tests of the v2 codec's sealing side:
 * proto_v2_seal with AES-256-GCM and a cluster key (proto/proto_v2.c).
 *
 * What is covered: round trips; sealing checked byte for byte against a
 * reference built directly on one-shot EVP calls; seal refusing exactly
 * what the parser refuses (the model of PROTOCOL.md's rules over every op
 * byte); the largest datagram; an answer sealed in place in the buffer of
 * the request it answers; unique nonces, also across fork; the sealer's
 * constructor and key IDs.
 *
 * Opening (tampering, truncation, keys, the freshness window) is tested in
 * check_proto_v2_open.c.
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

/* ---- sealing ---------------------------------------------------------- */

START_TEST(test_seal_round_trip)
{
    static const struct {
        uint8_t op, flags, status;
        size_t k, v;
    } msgs[] = {
        {PROTO_V2_PUT, 0, 0, 1, 1},  {PROTO_V2_PUT, 2, 0, 64, 2000},
        {PROTO_V2_GET, 0, 0, 48, 0}, {PROTO_V2_DEL, 2, 0, 48, 0},
        {PROTO_V2_PING, 0, 0, 0, 0}, {PROTO_V2_STATS, 0, 0, 0, 0},
        {0x81, 0, 0, 48, 0},         {0x82, 0, 0, 48, 950},
        {0x82, 0, 1, 48, 0},         {0x83, 0, 0, 48, 0},
        {0x84, 0, 0, 0, 0},          {0x85, 0, 0, 0, 64},
    };
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t value[2000], key[64];
    size_t i;

    pv_put_body(key, 64, 0);
    for (i = 0; i < sizeof value; i++)
        value[i] = (uint8_t)(i * 13 + 1);
    for (i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        proto_v2_msg in = {.op = msgs[i].op,
                           .flags = msgs[i].flags,
                           .status = msgs[i].status,
                           .request_id = 0xa5a5a500u + (uint32_t)i,
                           .ttl = 300,
                           .key = msgs[i].k ? key : NULL,
                           .key_len = msgs[i].k,
                           .value = msgs[i].v ? value : NULL,
                           .value_len = msgs[i].v,
                           .timestamp_ms = PV_T0 + i};
        size_t total = PV_SEALED_OVERHEAD + msgs[i].k + msgs[i].v, out_len = 0;
        uint8_t *out = tc_exact_buf(total, PV_FILL), *again = tc_exact_buf(total, PV_FILL);
        proto_v2_msg back;
        int answer = (in.op & 0x80) != 0;

        ck_assert_int_eq(proto_v2_seal(s, out, total, &in, &out_len), PROTO_OK);
        ck_assert_uint_eq(out_len, total);
        ck_assert_uint_eq(out[2], in.flags | PROTO_V2_F_SEALED);
        /* Neither the key nor the value appears in clear. */
        if (msgs[i].k >= 8)
            ck_assert(memmem(out, total, key, 8) == NULL);
        /* A fresh nonce every time: the same message seals differently. */
        ck_assert_int_eq(proto_v2_seal(s, again, total, &in, &out_len), PROTO_OK);
        ck_assert(memcmp(out + 28, again + 28, 12) != 0);
        ck_assert(memcmp(out + 40, again + 40, total - 40) != 0);

        ck_assert_int_eq(
            proto_v2_open(s, out, total, answer, PV_T0, PROTO_V2_DEFAULT_WINDOW_MS, &back),
            PROTO_OK);
        pv_assert_msg_eq(&back, &in);
        ck_assert_uint_eq(back.flags, in.flags | PROTO_V2_F_SEALED);
        ck_assert_uint_eq(back.timestamp_ms, PV_T0 + i);
        if (msgs[i].k)
            ck_assert_ptr_eq(back.key, out + 40);
        /* And it is not a plain datagram. */
        pv_expect_parse(again, total, answer, PROTO_ERR_FLAGS);
        free(out);
        free(again);
    }
    proto_v2_sealer_free(s);
}
END_TEST

/* Our seal, byte for byte, against the reference construction with the
 * nonce it chose. */
START_TEST(test_seal_matches_reference)
{
    static const size_t ks[] = {1, 48, 64}, vs[] = {1, 15, 16, 17, 200, 4096};
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, pv_key_b);
    uint8_t key[64], *value = tc_exact_buf(4096, 0), *out = tc_exact_buf(8192, 0);
    uint8_t *ref = tc_exact_buf(8192, 0), *body = tc_exact_buf(8192, 0);
    size_t a, b;

    pv_put_body(key, 64, 0);
    for (a = 0; a < 4096; a++)
        value[a] = (uint8_t)(a ^ 0x5a);
    for (a = 0; a < sizeof ks / sizeof ks[0]; a++)
        for (b = 0; b < sizeof vs / sizeof vs[0]; b++) {
            proto_v2_msg in = {.op = PROTO_V2_PUT,
                               .flags = PROTO_V2_F_NO_REPLY,
                               .request_id = 0x01020304,
                               .ttl = 86400,
                               .key = key,
                               .key_len = ks[a],
                               .value = value,
                               .value_len = vs[b],
                               .timestamp_ms = 0x0102030405060708ULL};
            uint8_t hdr[16];
            size_t len = 0, ref_len;

            ck_assert_int_eq(proto_v2_seal(s, out, 8192, &in, &len), PROTO_OK);
            pv_put_header(hdr, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY | PROTO_V2_F_SEALED, 0, 0x01020304,
                          86400, (unsigned)ks[a], (unsigned)vs[b]);
            memcpy(body, key, ks[a]);
            memcpy(body + ks[a], value, vs[b]);
            ref_len =
                pv_ref_seal(pv_key_a, hdr, in.timestamp_ms, out + 28, body, ks[a] + vs[b], ref);
            ck_assert_uint_eq(len, ref_len);
            ck_assert_mem_eq(out, ref, len);
            /* The timestamp's byte order, by hand. */
            ck_assert_uint_eq(out[20], 0x01);
            ck_assert_uint_eq(out[27], 0x08);
        }
    free(value);
    free(out);
    free(ref);
    free(body);
    proto_v2_sealer_free(s);
}
END_TEST

START_TEST(test_seal_refuses_like_encode)
{
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t key[48], value[5] = {1, 2, 3, 4, 5}, out[PV_SEALED_OVERHEAD + 48 + 5 + 1];
    proto_v2_msg msg = {
        .op = PROTO_V2_PUT, .key = key, .key_len = 48, .value = value, .value_len = 5};
    size_t cap, out_len = 999;
    unsigned op, bit;

    pv_put_body(key, 48, 0);
    for (cap = 0; cap < PV_SEALED_OVERHEAD + 48 + 5; cap++) {
        memset(out, PV_FILL, sizeof out);
        ck_assert_int_eq(proto_v2_seal(s, out, cap, &msg, &out_len), PROTO_ERR_NOSPACE);
        ck_assert(tc_all_bytes_are(out, sizeof out, PV_FILL));
    }
    ck_assert_int_eq(proto_v2_seal(NULL, out, sizeof out, &msg, &out_len), PROTO_ERR_INVALID);
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, NULL, &out_len), PROTO_ERR_INVALID);
    ck_assert_uint_eq(out_len, 999);

    /* The same verdicts as the parser, op by op (values sized for a PUT). */
    memset(out, PV_FILL, sizeof out);
    for (op = 0; op <= 0xff; op++) {
        int want;

        msg.op = (uint8_t)op;
        want = pv_model_fields((op & 0x80) != 0, op, 0, 0, 48, 5);
        ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &out_len), want);
        if (want != PROTO_OK)
            ck_assert(tc_all_bytes_are(out, sizeof out, PV_FILL));
        memset(out, PV_FILL, sizeof out);
    }
    msg.op = PROTO_V2_PUT;
    for (bit = 0x04; bit <= 0x80; bit <<= 1) {
        msg.flags = (uint8_t)bit;
        ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &out_len), PROTO_ERR_FLAGS);
    }
    msg.flags = PROTO_V2_F_SEALED; /* allowed: seal sets it anyway */
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &out_len), PROTO_OK);
    msg.flags = 0;
    msg.status = 1;
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &out_len), PROTO_ERR_FLAGS);
    msg.status = 0;
    msg.value_len = 0;
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &out_len), PROTO_ERR_EMPTY_VALUE);
    msg.value_len = PROTO_V2_MAX_VALUE + 1;
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &out_len), PROTO_ERR_TOO_LONG);
    msg.value_len = 5;
    msg.key_len = 65;
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &out_len), PROTO_ERR_KEY);
    proto_v2_sealer_free(s);
}
END_TEST

/* The largest sealed datagram is exactly the largest UDP payload. */
START_TEST(test_seal_max_size)
{
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t key[64], *value = tc_exact_buf(PROTO_V2_MAX_VALUE, 0x42);
    uint8_t *out = tc_exact_buf(PROTO_MAX_DATAGRAM, 0);
    proto_v2_msg msg = {.op = 0x82,
                        .key = key,
                        .key_len = 64,
                        .value = value,
                        .value_len = PROTO_V2_MAX_VALUE,
                        .timestamp_ms = PV_T0},
                 back;
    size_t len = 0;

    pv_put_body(key, 64, 0);
    ck_assert_int_eq(proto_v2_seal(s, out, PROTO_MAX_DATAGRAM, &msg, &len), PROTO_OK);
    ck_assert_uint_eq(len, 65507);
    ck_assert_int_eq(proto_v2_open(s, out, len, 1, PV_T0, 0, &back), PROTO_OK);
    pv_assert_msg_eq(&back, &msg);
    free(value);
    free(out);
    proto_v2_sealer_free(s);
}
END_TEST
/* The daemon opens a sealed GET in place and seals the answer in the same
 * buffer, the key staying where the open left it (offset 40). */
START_TEST(test_seal_in_place_answer)
{
    proto_v2_sealer *client = pv_new_sealer(pv_key_a, NULL),
                    *daemon = pv_new_sealer(pv_key_b, pv_key_a);
    uint8_t key[48], buf[PV_SEALED_OVERHEAD + 48 + 950], stored[950];
    proto_v2_msg req = {.op = PROTO_V2_GET,
                        .request_id = 77,
                        .key = key,
                        .key_len = 48,
                        .timestamp_ms = PV_T0},
                 got, ans;
    size_t len = 0;

    pv_put_body(key, 48, 0);
    memset(stored, 0xd7, sizeof stored);
    ck_assert_int_eq(proto_v2_seal(client, buf, sizeof buf, &req, &len), PROTO_OK);
    ck_assert_int_eq(proto_v2_open(daemon, buf, len, 0, PV_T0 + 5, 30000, &got), PROTO_OK);
    ck_assert_ptr_eq(got.key, buf + 40);

    ans = got;
    ans.op = PROTO_V2_GET | PROTO_V2_ANSWER;
    ans.flags = 0;
    ans.status = PROTO_V2_ST_OK;
    ans.value = stored;
    ans.value_len = sizeof stored;
    ans.timestamp_ms = PV_T0 + 6;
    ck_assert_int_eq(proto_v2_seal(daemon, buf, sizeof buf, &ans, &len), PROTO_OK);
    ck_assert_uint_eq(len, sizeof buf);
    /* Sealed with the daemon's current key B, which the client does not
     * hold: the client is still at the old key. Then with a client that
     * has B as its next key, as in step 1 of a rollover. */
    pv_expect_open(client, buf, len, 1, PV_T0, 30000, PROTO_ERR_UNKNOWN_KEY);
    proto_v2_sealer_free(client);
    client = pv_new_sealer(pv_key_a, pv_key_b);
    ck_assert_int_eq(proto_v2_open(client, buf, len, 1, PV_T0, 30000, &got), PROTO_OK);
    ck_assert_uint_eq(got.request_id, 77);
    ck_assert_mem_eq(got.key, key, 48);
    ck_assert_uint_eq(got.value_len, sizeof stored);
    ck_assert_mem_eq(got.value, stored, sizeof stored);
    proto_v2_sealer_free(client);
    proto_v2_sealer_free(daemon);
}
END_TEST

static int nonce_cmp(const void *a, const void *b)
{
    return memcmp(a, b, PROTO_V2_NONCE_LEN);
}

/* Nonces never repeat, across many refills of the sealer's batch. */
START_TEST(test_seal_nonces_unique)
{
    enum { N = 2000 };
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t(*nonces)[PROTO_V2_NONCE_LEN] = malloc(N * PROTO_V2_NONCE_LEN);
    uint8_t out[PV_SEALED_OVERHEAD];
    proto_v2_msg msg = {.op = PROTO_V2_PING, .timestamp_ms = PV_T0};
    size_t len = 0, i;

    ck_assert_ptr_nonnull(nonces);
    for (i = 0; i < N; i++) {
        ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
        memcpy(nonces[i], out + 28, PROTO_V2_NONCE_LEN);
    }
    qsort(nonces, N, PROTO_V2_NONCE_LEN, nonce_cmp);
    for (i = 1; i < N; i++)
        ck_assert_msg(memcmp(nonces[i - 1], nonces[i], PROTO_V2_NONCE_LEN) != 0, "nonce repeated");
    free(nonces);
    proto_v2_sealer_free(s);
}
END_TEST

/* A forked child must not reuse the parent's nonces: with a pool copied
 * into the child, the next nonce of both would be the same. */
START_TEST(test_seal_nonces_after_fork)
{
    proto_v2_sealer *s = pv_new_sealer(pv_key_a, NULL);
    uint8_t out[PV_SEALED_OVERHEAD], child_nonces[3][PROTO_V2_NONCE_LEN];
    uint8_t parent_nonces[3][PROTO_V2_NONCE_LEN];
    proto_v2_msg msg = {.op = PROTO_V2_PING, .timestamp_ms = PV_T0};
    size_t len = 0, i, j, got;
    int fds[2], status = 0;
    ssize_t n;
    pid_t pid;

    /* Draw one so a batch is in memory when we fork. */
    ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        for (i = 0; i < 3; i++) {
            if (proto_v2_seal(s, out, sizeof out, &msg, &len) != PROTO_OK)
                _exit(2);
            if (write(fds[1], out + 28, PROTO_V2_NONCE_LEN) != PROTO_V2_NONCE_LEN)
                _exit(3);
        }
        _exit(0);
    }
    close(fds[1]);
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(proto_v2_seal(s, out, sizeof out, &msg, &len), PROTO_OK);
        memcpy(parent_nonces[i], out + 28, PROTO_V2_NONCE_LEN);
    }
    for (got = 0; got < sizeof child_nonces; got += (size_t)n) {
        n = read(fds[0], (uint8_t *)child_nonces + got, sizeof child_nonces - got);
        ck_assert_int_gt(n, 0); /* EOF early: the child failed */
    }
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    for (i = 0; i < 3; i++)
        for (j = 0; j < 3; j++)
            ck_assert_msg(memcmp(parent_nonces[i], child_nonces[j], PROTO_V2_NONCE_LEN) != 0,
                          "parent and child sealed with the same nonce");
    proto_v2_sealer_free(s);
}
END_TEST

START_TEST(test_sealer_and_key_id)
{
    uint8_t id[4], ref[4];

    ck_assert_ptr_null(proto_v2_sealer_new(NULL, pv_key_b));
    proto_v2_sealer_free(NULL); /* a no-op */
    ck_assert_int_eq(proto_v2_key_id(pv_key_a, id), 0);
    pv_ref_key_id(pv_key_a, ref);
    ck_assert_mem_eq(id, ref, 4);
    ck_assert_int_eq(proto_v2_key_id(NULL, id), -1);
    ck_assert_int_eq(proto_v2_key_id(pv_key_a, NULL), -1);
}
END_TEST

static Suite *proto_v2_seal_suite(void)
{
    Suite *s = suite_create("proto_v2_seal");
    TCase *tc;

    tc = tcase_create("seal");
    tcase_add_test(tc, test_seal_round_trip);
    tcase_add_test(tc, test_seal_matches_reference);
    tcase_add_test(tc, test_seal_refuses_like_encode);
    tcase_add_test(tc, test_seal_max_size);
    tcase_add_test(tc, test_seal_in_place_answer);
    tcase_add_test(tc, test_seal_nonces_unique);
    tcase_add_test(tc, test_seal_nonces_after_fork);
    tcase_add_test(tc, test_sealer_and_key_id);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(proto_v2_seal_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
