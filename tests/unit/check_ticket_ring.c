/* check_ticket_ring.c — unit tests of the ticket-ring codec and key states
 * (proto/ticket_ring.c).
 *
 * Covered: encode/decode round trip with the exact big-endian bytes of the
 * header and an entry; every malformed input decode must refuse (short,
 * other format, reserved byte, N against the length, too many keys, order,
 * empty interval, duplicate names, every truncation of a valid ring) and
 * that a refused decode leaves the caller's ring zeroed; encode refusals
 * (same rules, buffer too small by one byte, exact fit); 0, 256 and 257
 * keys; key states at the exact second of each boundary, saturation near
 * UINT64_MAX; current-key selection with gaps and overlaps; lookup by name
 * with expiry.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"
#include "proto_v2.h"
#include "ticket_ring.h"

static ticket_ring ring, back;
static uint8_t buf[TICKET_RING_MAX_LEN + 16];

/* n keys of `period` seconds from t0, each with a distinct name and bytes. */
static void make_ring(ticket_ring *r, size_t n, uint64_t t0, uint64_t period, uint32_t lifetime)
{
    memset(r, 0, sizeof(*r));
    r->rotate_s = (uint32_t)period;
    r->lifetime_s = lifetime;
    r->generated_at = t0 + 7;
    r->n_keys = n;
    for (size_t i = 0; i < n; i++) {
        ticket_key *k = &r->keys[i];
        memset(k->name, 0x40, TICKET_NAME_LEN);
        k->name[0] = (uint8_t)(i >> 8);
        k->name[1] = (uint8_t)i;
        memset(k->aes_key, (int)(0x10 + i % 200), TICKET_AES_LEN);
        memset(k->hmac_key, (int)(0x20 + i % 200), TICKET_HMAC_LEN);
        k->not_before = t0 + i * period;
        k->not_after = t0 + (i + 1) * period;
    }
}

static int all_zero(const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < len; i++)
        if (b[i])
            return 0;
    return 1;
}

static void assert_same_ring(const ticket_ring *a, const ticket_ring *b)
{
    ck_assert_uint_eq(a->rotate_s, b->rotate_s);
    ck_assert_uint_eq(a->lifetime_s, b->lifetime_s);
    ck_assert_uint_eq(a->generated_at, b->generated_at);
    ck_assert_uint_eq(a->n_keys, b->n_keys);
    for (size_t i = 0; i < a->n_keys; i++)
        ck_assert_mem_eq(&a->keys[i], &b->keys[i], sizeof(ticket_key));
}

/* Decodes and expects `want`; on failure the ring must come back zeroed. */
static void decode_expect(const uint8_t *b, size_t len, int want)
{
    memset(&back, 0xAA, sizeof(back));
    int rc = ticket_ring_decode(b, len, &back);
    ck_assert_int_eq(rc, want);
    if (want != PROTO_OK)
        ck_assert(all_zero(&back, sizeof(back)));
}

START_TEST(test_roundtrip_bytes)
{
    size_t len = 0;
    make_ring(&ring, 3, 0x0102030405060708ull, 3600, 43200);
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_OK);
    ck_assert_uint_eq(len, TICKET_RING_HEADER_LEN + 3 * TICKET_RING_ENTRY_LEN);
    static const uint8_t header[] = {1,    0,    0,    3,    0x00, 0x00, 0x0e, 0x10, 0x00, 0x00,
                                     0xa8, 0xc0, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x0f};
    ck_assert_mem_eq(buf, header, sizeof(header));
    /* Second entry: name, aes, hmac, then not_before = t0 + 3600 BE. */
    const uint8_t *e = buf + TICKET_RING_HEADER_LEN + TICKET_RING_ENTRY_LEN;
    ck_assert_mem_eq(e, ring.keys[1].name, TICKET_NAME_LEN);
    ck_assert_mem_eq(e + 16, ring.keys[1].aes_key, TICKET_AES_LEN);
    ck_assert_mem_eq(e + 48, ring.keys[1].hmac_key, TICKET_HMAC_LEN);
    static const uint8_t nb[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x15, 0x18};
    static const uint8_t na[] = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x23, 0x28};
    ck_assert_mem_eq(e + 80, nb, 8);
    ck_assert_mem_eq(e + 88, na, 8);

    decode_expect(buf, len, PROTO_OK);
    assert_same_ring(&ring, &back);
}
END_TEST

START_TEST(test_zero_keys)
{
    size_t len = 0;
    make_ring(&ring, 0, 1000, 60, 120);
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, TICKET_RING_HEADER_LEN, &len), PROTO_OK);
    ck_assert_uint_eq(len, TICKET_RING_HEADER_LEN);
    decode_expect(buf, len, PROTO_OK);
    assert_same_ring(&ring, &back);
    ck_assert_ptr_null(ticket_ring_current(&back, 1000));
}
END_TEST

START_TEST(test_max_keys)
{
    size_t len = 0;
    make_ring(&ring, TICKET_RING_MAX_KEYS, 1000, 60, 120);
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, TICKET_RING_MAX_LEN, &len), PROTO_OK);
    ck_assert_uint_eq(len, TICKET_RING_MAX_LEN);
    decode_expect(buf, len, PROTO_OK);
    assert_same_ring(&ring, &back);

    /* 257: refused by encode, and by decode even when the length agrees. */
    ring.n_keys = TICKET_RING_MAX_KEYS + 1;
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_ERR_INVALID);
    static uint8_t big[TICKET_RING_HEADER_LEN + (TICKET_RING_MAX_KEYS + 1) * TICKET_RING_ENTRY_LEN];
    make_ring(&ring, TICKET_RING_MAX_KEYS, 1000, 60, 120);
    ck_assert_int_eq(ticket_ring_encode(&ring, big, sizeof(big), &len), PROTO_OK);
    uint8_t *extra = big + len;
    memcpy(extra, big + len - TICKET_RING_ENTRY_LEN, TICKET_RING_ENTRY_LEN);
    extra[0] = 0xFF; /* a fresh name */
    extra[80 + 7] = 0xFF;
    extra[88 + 6] = 0x7F; /* later times, still ordered */
    big[2] = 0x01;
    big[3] = 0x01;
    decode_expect(big, sizeof(big), PROTO_ERR_INVALID);
}
END_TEST

START_TEST(test_encode_refusals)
{
    size_t len = 0;
    make_ring(&ring, 3, 1000, 60, 120);
    size_t need = TICKET_RING_HEADER_LEN + 3 * TICKET_RING_ENTRY_LEN;

    memset(buf, 0xEE, sizeof(buf));
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, need - 1, &len), PROTO_ERR_NOSPACE);
    ck_assert_uint_eq(buf[0], 0xEE); /* nothing written */
    ck_assert_int_eq(ticket_ring_encode(&ring, NULL, need, &len), PROTO_ERR_NOSPACE);
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, need, &len), PROTO_OK);
    ck_assert_int_eq(ticket_ring_encode(NULL, buf, need, &len), PROTO_ERR_INVALID);
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, need, NULL), PROTO_ERR_INVALID);

    ring.keys[1].not_after = ring.keys[1].not_before;
    memset(buf, 0xEE, sizeof(buf));
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_ERR_INVALID);
    ck_assert(buf[0] == 0xEE && buf[TICKET_RING_HEADER_LEN] == 0xEE);
    ring.keys[1].not_after = ring.keys[1].not_before - 1;
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_ERR_INVALID);

    make_ring(&ring, 3, 1000, 60, 120);
    ring.keys[2].not_before = ring.keys[1].not_before - 1; /* out of order */
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_ERR_INVALID);
    ring.keys[2].not_before = ring.keys[1].not_before; /* equal: allowed */
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_OK);

    make_ring(&ring, 3, 1000, 60, 120);
    memcpy(ring.keys[2].name, ring.keys[0].name, TICKET_NAME_LEN);
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_ERR_INVALID);
}
END_TEST

START_TEST(test_decode_malformed)
{
    size_t len = 0;
    make_ring(&ring, 3, 1000, 60, 120);
    ck_assert_int_eq(ticket_ring_encode(&ring, buf, sizeof(buf), &len), PROTO_OK);
    static uint8_t m[TICKET_RING_MAX_LEN];

    decode_expect(NULL, len, PROTO_ERR_SHORT);
    decode_expect(buf, 0, PROTO_ERR_SHORT);
    decode_expect(buf, TICKET_RING_HEADER_LEN - 1, PROTO_ERR_SHORT);
    ck_assert_int_eq(ticket_ring_decode(buf, len, NULL), PROTO_ERR_INVALID);

    /* Every truncation, and one byte too many. */
    for (size_t cut = 0; cut < len; cut++)
        decode_expect(buf, cut, cut < TICKET_RING_HEADER_LEN ? PROTO_ERR_SHORT : PROTO_ERR_LENGTH);
    memcpy(m, buf, len);
    m[len] = 0;
    decode_expect(m, len + 1, PROTO_ERR_LENGTH);

#define MUTATE(stmt, want)                                                                         \
    do {                                                                                           \
        memcpy(m, buf, len);                                                                       \
        stmt;                                                                                      \
        decode_expect(m, len, want);                                                               \
    } while (0)

    MUTATE(m[0] = 0, PROTO_ERR_VERSION);
    MUTATE(m[0] = 2, PROTO_ERR_VERSION);
    MUTATE(m[1] = 1, PROTO_ERR_INVALID);
    MUTATE(m[3] = 2, PROTO_ERR_LENGTH); /* N says 2, three entries follow */
    MUTATE(m[3] = 4, PROTO_ERR_LENGTH);
    MUTATE(m[2] = 0xFF, PROTO_ERR_LENGTH);
    /* Entry 1's not_after := its not_before (empty interval). */
    uint8_t *e1 = m + TICKET_RING_HEADER_LEN + TICKET_RING_ENTRY_LEN;
    MUTATE(memcpy(e1 + 88, e1 + 80, 8), PROTO_ERR_INVALID);
    /* not_after before not_before. */
    MUTATE((memcpy(e1 + 88, e1 + 80, 8), e1[95]--), PROTO_ERR_INVALID);
    /* Entry 2's not_before before entry 1's. */
    uint8_t *e2 = e1 + TICKET_RING_ENTRY_LEN;
    MUTATE((memcpy(e2 + 80, e1 + 80, 8), e2[87]--), PROTO_ERR_INVALID);
    /* Entry 2 named like entry 0. */
    MUTATE(memcpy(e2, m + TICKET_RING_HEADER_LEN, TICKET_NAME_LEN), PROTO_ERR_INVALID);
#undef MUTATE

    /* Control: the unmutated buffer still decodes. */
    decode_expect(buf, len, PROTO_OK);
}
END_TEST

START_TEST(test_states_boundaries)
{
    make_ring(&ring, 1, 1000, 100, 500);
    const ticket_key *k = &ring.keys[0];
    ck_assert_int_eq(ticket_key_state_at(&ring, k, 0), TICKET_KEY_NEXT);
    ck_assert_int_eq(ticket_key_state_at(&ring, k, 999), TICKET_KEY_NEXT);
    ck_assert_int_eq(ticket_key_state_at(&ring, k, 1000), TICKET_KEY_CURRENT);
    ck_assert_int_eq(ticket_key_state_at(&ring, k, 1099), TICKET_KEY_CURRENT);
    ck_assert_int_eq(ticket_key_state_at(&ring, k, 1100), TICKET_KEY_OLD);
    ck_assert_int_eq(ticket_key_state_at(&ring, k, 1599), TICKET_KEY_OLD);
    ck_assert_int_eq(ticket_key_state_at(&ring, k, 1600), TICKET_KEY_EXPIRED);
    ck_assert_int_eq(ticket_key_state_at(&ring, k, UINT64_MAX), TICKET_KEY_EXPIRED);

    /* not_after + lifetime past UINT64_MAX saturates: old, never wrapped. */
    ring.keys[0].not_before = UINT64_MAX - 10;
    ring.keys[0].not_after = UINT64_MAX - 5;
    ck_assert_int_eq(ticket_key_state_at(&ring, k, UINT64_MAX - 1), TICKET_KEY_OLD);

    ck_assert_str_eq(ticket_key_state_name(TICKET_KEY_NEXT), "next");
    ck_assert_str_eq(ticket_key_state_name(TICKET_KEY_CURRENT), "current");
    ck_assert_str_eq(ticket_key_state_name(TICKET_KEY_OLD), "old");
    ck_assert_str_eq(ticket_key_state_name(TICKET_KEY_EXPIRED), "expired");
    ck_assert_str_eq(ticket_key_state_name((ticket_key_state)42), "?");
}
END_TEST

START_TEST(test_current_selection)
{
    /* Back to back: [1000,1100) [1100,1200). */
    make_ring(&ring, 2, 1000, 100, 300);
    ck_assert_ptr_null(ticket_ring_current(&ring, 999));
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1000), &ring.keys[0]);
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1099), &ring.keys[0]);
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1100), &ring.keys[1]);
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1199), &ring.keys[1]);
    ck_assert_ptr_null(ticket_ring_current(&ring, 1200)); /* none: issue no tickets */
    ck_assert_ptr_null(ticket_ring_current(NULL, 1100));

    /* A gap: [1000,1100) then [1300,1400). */
    ring.keys[1].not_before = 1300;
    ring.keys[1].not_after = 1400;
    ck_assert_ptr_null(ticket_ring_current(&ring, 1200));
    ck_assert_int_eq(ticket_key_state_at(&ring, &ring.keys[1], 1200), TICKET_KEY_NEXT);

    /* Overlap: [1000,1200) and [1100,1300): the later not_before wins. */
    ring.keys[0].not_after = 1200;
    ring.keys[1].not_before = 1100;
    ring.keys[1].not_after = 1300;
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1050), &ring.keys[0]);
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1150), &ring.keys[1]);
    ck_assert_int_eq(ticket_key_state_at(&ring, &ring.keys[0], 1150), TICKET_KEY_OLD);
    ck_assert_int_eq(ticket_key_state_at(&ring, &ring.keys[1], 1150), TICKET_KEY_CURRENT);
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1250), &ring.keys[1]);

    /* Equal not_before: the later entry wins. */
    ring.keys[1].not_before = 1000;
    ck_assert_ptr_eq(ticket_ring_current(&ring, 1000), &ring.keys[1]);
    ck_assert_int_eq(ticket_key_state_at(&ring, &ring.keys[0], 1000), TICKET_KEY_OLD);
}
END_TEST

START_TEST(test_find_by_name)
{
    make_ring(&ring, 3, 1000, 100, 250);
    uint8_t unknown[TICKET_NAME_LEN];
    memset(unknown, 0x99, sizeof(unknown));

    ck_assert_ptr_eq(ticket_ring_find(&ring, ring.keys[2].name, 1000), &ring.keys[2]); /* next */
    ck_assert_ptr_eq(ticket_ring_find(&ring, ring.keys[1].name, 1150), &ring.keys[1]);
    /* keys[0]: not_after 1100, lifetime 250: decrypts until 1349 included. */
    ck_assert_ptr_eq(ticket_ring_find(&ring, ring.keys[0].name, 1349), &ring.keys[0]);
    ck_assert_ptr_null(ticket_ring_find(&ring, ring.keys[0].name, 1350));
    ck_assert_ptr_eq(ticket_ring_find(&ring, ring.keys[1].name, 1350), &ring.keys[1]);
    ck_assert_ptr_null(ticket_ring_find(&ring, unknown, 1000));
    ck_assert_ptr_null(ticket_ring_find(&ring, NULL, 1000));
    ck_assert_ptr_null(ticket_ring_find(NULL, unknown, 1000));
}
END_TEST

static Suite *ticket_ring_suite(void)
{
    Suite *s = suite_create("ticket_ring");
    TCase *tc = tcase_create("codec");
    tcase_add_test(tc, test_roundtrip_bytes);
    tcase_add_test(tc, test_zero_keys);
    tcase_add_test(tc, test_max_keys);
    tcase_add_test(tc, test_encode_refusals);
    tcase_add_test(tc, test_decode_malformed);
    suite_add_tcase(s, tc);
    tc = tcase_create("states");
    tcase_add_test(tc, test_states_boundaries);
    tcase_add_test(tc, test_current_selection);
    tcase_add_test(tc, test_find_by_name);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ticket_ring_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
