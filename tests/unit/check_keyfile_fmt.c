/* check_keyfile_fmt.c — unit tests of the nginx and HAProxy ticket-key file
 * formatters (client/sc_keyfile_fmt.c).
 *
 * What is covered: the number of nginx files for given rotate/lifetime
 * settings; the exact 80 bytes of an nginx file (name | HMAC | AES) and of
 * an HAProxy line (base64 of name | AES | HMAC, checked against a string
 * computed independently); which key sits at each server's encrypting
 * position (nginx: the first file; HAProxy: the penultimate line, found by
 * replaying HAProxy's own loading rule); the next key always present; old
 * keys newest first, the oldest dropped when they do not fit; a young ring
 * padded with copies of the current key (never a key outside the ring);
 * expired keys skipped; no current key, small buffers and bad arguments
 * refused without output.
 *
 * The ring follows sessiond's slot model (sessiond/ticket_keys.h): the key of
 * slot s encrypts in [s*rotate, (s+1)*rotate). Key bytes are patterns
 * derived from the slot, so every file can be traced back to its key.
 */
#include "sc_keyfile_fmt.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define ROTATE   3
#define LIFETIME 9
#define NOW_SLOT 100
#define NOW      ((uint64_t)NOW_SLOT * ROTATE + 1)

static void make_key(ticket_key *key, unsigned slot)
{
    for (unsigned j = 0; j < TICKET_NAME_LEN; j++)
        key->name[j] = (uint8_t)(slot * 7 + j);
    memset(key->aes_key, 0xa0 ^ (slot & 0xff), TICKET_AES_LEN);
    memset(key->hmac_key, 0xb0 ^ (slot & 0xff), TICKET_HMAC_LEN);
    key->not_before = (uint64_t)slot * ROTATE;
    key->not_after = (uint64_t)(slot + 1) * ROTATE;
}

/* A ring with the keys of slots first..last (oldest first), as the daemon
 * serves it. Heap-allocated: a ring is 25 KB. */
static ticket_ring *make_ring(unsigned first, unsigned last, uint32_t lifetime)
{
    ticket_ring *ring = calloc(1, sizeof(*ring));

    ck_assert_ptr_nonnull(ring);
    ring->rotate_s = ROTATE;
    ring->lifetime_s = lifetime;
    ring->generated_at = NOW;
    for (unsigned s = first; s <= last; s++)
        make_key(&ring->keys[ring->n_keys++], s);
    return ring;
}

/* The nginx bytes of slot's key, built by hand: name, HMAC, AES. */
static void nginx_expected(unsigned slot, uint8_t out[SC_KEYFILE_NGINX_LEN])
{
    for (unsigned j = 0; j < 16; j++)
        out[j] = (uint8_t)(slot * 7 + j);
    memset(out + 16, 0xb0 ^ (slot & 0xff), 32);
    memset(out + 48, 0xa0 ^ (slot & 0xff), 32);
}

/* Decodes one HAProxy line (without its newline) into 80 bytes. */
static void haproxy_decode(const char *line, uint8_t out[SC_KEYFILE_NGINX_LEN])
{
    unsigned char buf[84];

    /* EVP_DecodeBlock counts the '=' padding as data: 81 for 80 bytes. */
    ck_assert_int_eq(EVP_DecodeBlock(buf, (const unsigned char *)line, 108), 81);
    memcpy(out, buf, SC_KEYFILE_NGINX_LEN);
}

START_TEST(test_nginx_slots)
{
    ck_assert_uint_eq(sc_keyfile_nginx_slots(3, 9), 5);
    ck_assert_uint_eq(sc_keyfile_nginx_slots(3, 10), 6);
    ck_assert_uint_eq(sc_keyfile_nginx_slots(3600, 43200), 14);
    ck_assert_uint_eq(sc_keyfile_nginx_slots(3600, 43201), 15);
    ck_assert_uint_eq(sc_keyfile_nginx_slots(60, 0), 2);
    ck_assert_uint_eq(sc_keyfile_nginx_slots(0, 9), 0);
    /* 604800 / 1 + 2 keys: more than a ring holds. */
    ck_assert_uint_eq(sc_keyfile_nginx_slots(1, 604800), 0);
    ck_assert_uint_eq(sc_keyfile_nginx_slots(3600, 604800), 170);
}
END_TEST

/* A full ring (slots 97..101 at slot 100): current first, then next, then
 * old newest first, each file exactly the server's byte order. */
START_TEST(test_nginx_full_ring)
{
    ticket_ring *ring = make_ring(NOW_SLOT - 3, NOW_SLOT + 1, LIFETIME);
    static const unsigned want_slot[5] = {NOW_SLOT, NOW_SLOT + 1, NOW_SLOT - 1, NOW_SLOT - 2,
                                          NOW_SLOT - 3};
    uint8_t out[8 * SC_KEYFILE_NGINX_LEN], want[SC_KEYFILE_NGINX_LEN];
    size_t n = 0, dropped = 99;

    ck_assert_int_eq(sc_keyfile_nginx(ring, NOW, out, sizeof(out), &n, &dropped), SC_KEYFILE_OK);
    ck_assert_uint_eq(n, 5);
    ck_assert_uint_eq(dropped, 0);
    for (size_t i = 0; i < n; i++) {
        nginx_expected(want_slot[i], want);
        ck_assert_msg(memcmp(out + i * SC_KEYFILE_NGINX_LEN, want, sizeof(want)) == 0,
                      "file %zu is not slot %u's key in nginx order", i, want_slot[i]);
    }
    free(ring);
}
END_TEST

/* The nginx layout pinned against bytes computed outside this code
 * (python: name + hmac + aes of slot 100), so a swapped field cannot hide
 * behind a helper that shares the mistake. */
START_TEST(test_nginx_exact_bytes)
{
    static const char want_hex[] =
        "bcbdbebfc0c1c2c3c4c5c6c7c8c9cacb"
        "d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4d4"
        "c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4c4";
    ticket_key key;
    uint8_t out[SC_KEYFILE_NGINX_LEN];
    char hex[2 * SC_KEYFILE_NGINX_LEN + 1];

    make_key(&key, NOW_SLOT);
    sc_keyfile_nginx_key(&key, out);
    for (size_t i = 0; i < sizeof(out); i++)
        snprintf(hex + 2 * i, 3, "%02x", out[i]);
    ck_assert_str_eq(hex, want_hex);
}
END_TEST

/* Just after startup the ring has only the current and the next key: the
 * old slots are copies of the current key, never anything else. */
START_TEST(test_nginx_young_ring_padded)
{
    ticket_ring *ring = make_ring(NOW_SLOT, NOW_SLOT + 1, LIFETIME);
    uint8_t out[5 * SC_KEYFILE_NGINX_LEN], cur[SC_KEYFILE_NGINX_LEN], next[SC_KEYFILE_NGINX_LEN];
    size_t n = 0;

    ck_assert_int_eq(sc_keyfile_nginx(ring, NOW, out, sizeof(out), &n, NULL), SC_KEYFILE_OK);
    ck_assert_uint_eq(n, 5);
    nginx_expected(NOW_SLOT, cur);
    nginx_expected(NOW_SLOT + 1, next);
    ck_assert_mem_eq(out, cur, sizeof(cur));
    ck_assert_mem_eq(out + SC_KEYFILE_NGINX_LEN, next, sizeof(next));
    for (size_t i = 2; i < n; i++)
        ck_assert_mem_eq(out + i * SC_KEYFILE_NGINX_LEN, cur, sizeof(cur));
    free(ring);
}
END_TEST

/* Right at a rotation boundary the old next key becomes file 0. */
START_TEST(test_nginx_rotation_boundary)
{
    ticket_ring *ring = make_ring(NOW_SLOT - 3, NOW_SLOT + 1, LIFETIME);
    uint8_t out[5 * SC_KEYFILE_NGINX_LEN], want[SC_KEYFILE_NGINX_LEN];
    size_t n = 0;

    /* The last second of slot 100: 100 encrypts, 101 is next. */
    ck_assert_int_eq(
        sc_keyfile_nginx(ring, (uint64_t)(NOW_SLOT + 1) * ROTATE - 1, out, sizeof(out), &n, NULL),
        SC_KEYFILE_OK);
    nginx_expected(NOW_SLOT, want);
    ck_assert_mem_eq(out, want, sizeof(want));
    /* The first second of slot 101: 101 encrypts; no next key in this ring,
     * so file 1 is the current key again (a key the ring has, nothing new). */
    ck_assert_int_eq(
        sc_keyfile_nginx(ring, (uint64_t)(NOW_SLOT + 1) * ROTATE, out, sizeof(out), &n, NULL),
        SC_KEYFILE_OK);
    nginx_expected(NOW_SLOT + 1, want);
    ck_assert_mem_eq(out, want, sizeof(want));
    ck_assert_mem_eq(out + SC_KEYFILE_NGINX_LEN, want, sizeof(want));
    nginx_expected(NOW_SLOT, want);
    ck_assert_mem_eq(out + 2 * SC_KEYFILE_NGINX_LEN, want, sizeof(want));
    free(ring);
}
END_TEST

/* Expired keys are left out; old keys that do not fit are dropped oldest
 * first and counted. */
START_TEST(test_order_expired_and_dropped)
{
    ticket_ring *ring = make_ring(NOW_SLOT - 5, NOW_SLOT + 1, LIFETIME);
    const ticket_key *order[6];
    size_t dropped = 99;

    /* Lifetime 9: slots 95 and 96 are past not_after + 9 at NOW (301 > 300). */
    ck_assert_int_eq(sc_keyfile_order(ring, NOW, 6, order, &dropped), SC_KEYFILE_OK);
    ck_assert_uint_eq(dropped, 0);
    ck_assert_uint_eq(order[0]->not_before, NOW_SLOT * ROTATE);
    ck_assert_uint_eq(order[1]->not_before, (NOW_SLOT + 1) * ROTATE);
    ck_assert_uint_eq(order[2]->not_before, (NOW_SLOT - 1) * ROTATE);
    ck_assert_uint_eq(order[3]->not_before, (NOW_SLOT - 2) * ROTATE);
    ck_assert_uint_eq(order[4]->not_before, (NOW_SLOT - 3) * ROTATE);
    ck_assert_ptr_eq(order[5], order[0]); /* padding: the current key */

    /* Three slots: room for one old key; the two older ones are dropped. */
    ck_assert_int_eq(sc_keyfile_order(ring, NOW, 3, order, &dropped), SC_KEYFILE_OK);
    ck_assert_uint_eq(dropped, 2);
    ck_assert_uint_eq(order[2]->not_before, (NOW_SLOT - 1) * ROTATE);
    free(ring);
}
END_TEST

/* With several next keys, the one that encrypts soonest is the next slot. */
START_TEST(test_order_soonest_next)
{
    ticket_ring *ring = make_ring(NOW_SLOT, NOW_SLOT + 3, LIFETIME);
    const ticket_key *order[2];

    ck_assert_int_eq(sc_keyfile_order(ring, NOW, 2, order, NULL), SC_KEYFILE_OK);
    ck_assert_uint_eq(order[1]->not_before, (NOW_SLOT + 1) * ROTATE);
    free(ring);
}
END_TEST

/* No key encrypts at now: nothing is written. */
START_TEST(test_no_current)
{
    ticket_ring *ring = make_ring(NOW_SLOT - 3, NOW_SLOT + 1, LIFETIME);
    uint8_t out[5 * SC_KEYFILE_NGINX_LEN];
    char text[SC_KEYFILE_HAPROXY_LEN];
    size_t n = 77, len = 77;

    memset(out, 0x5a, sizeof(out));
    /* Before every key, and after the newest one stopped encrypting. */
    ck_assert_int_eq(sc_keyfile_nginx(ring, 10, out, sizeof(out), &n, NULL), SC_KEYFILE_NO_CURRENT);
    ck_assert_int_eq(
        sc_keyfile_nginx(ring, (uint64_t)(NOW_SLOT + 2) * ROTATE, out, sizeof(out), &n, NULL),
        SC_KEYFILE_NO_CURRENT);
    ck_assert_int_eq(sc_keyfile_haproxy(ring, 10, text, sizeof(text), &len, NULL),
                     SC_KEYFILE_NO_CURRENT);
    ck_assert_uint_eq(n, 77);
    ck_assert_uint_eq(len, 77);
    for (size_t i = 0; i < sizeof(out); i++)
        ck_assert_uint_eq(out[i], 0x5a);
    ring->n_keys = 0;
    ck_assert_int_eq(sc_keyfile_nginx(ring, NOW, out, sizeof(out), &n, NULL),
                     SC_KEYFILE_NO_CURRENT);
    free(ring);
}
END_TEST

START_TEST(test_bad_arguments)
{
    ticket_ring *ring = make_ring(NOW_SLOT - 3, NOW_SLOT + 1, LIFETIME);
    uint8_t out[5 * SC_KEYFILE_NGINX_LEN];
    char text[SC_KEYFILE_HAPROXY_LEN];
    const ticket_key *order[2];
    size_t n = 0, len = 0;

    ck_assert_int_eq(sc_keyfile_nginx(ring, NOW, out, sizeof(out) - 1, &n, NULL),
                     SC_KEYFILE_NOSPACE);
    ck_assert_int_eq(sc_keyfile_haproxy(ring, NOW, text, sizeof(text) - 1, &len, NULL),
                     SC_KEYFILE_NOSPACE);
    ck_assert_int_eq(sc_keyfile_nginx(NULL, NOW, out, sizeof(out), &n, NULL), SC_KEYFILE_INVALID);
    ck_assert_int_eq(sc_keyfile_haproxy(ring, NOW, NULL, 0, &len, NULL), SC_KEYFILE_INVALID);
    ck_assert_int_eq(sc_keyfile_order(ring, NOW, 1, order, NULL), SC_KEYFILE_INVALID);
    ring->rotate_s = 0;
    ck_assert_int_eq(sc_keyfile_nginx(ring, NOW, out, sizeof(out), &n, NULL), SC_KEYFILE_INVALID);
    free(ring);
}
END_TEST

/* Which line HAProxy encrypts with, by its own rule (cfgparse-ssl.c): line
 * i goes to slot i % TLS_TICKETS_NO, the encrypting slot is that of line
 * count - 2. Returns that line's index among the last three. */
static size_t haproxy_encrypting_line(size_t lines)
{
    size_t enc_slot = (lines - 2) % SC_KEYFILE_HAPROXY_KEYS;

    for (size_t i = lines; i-- > lines - SC_KEYFILE_HAPROXY_KEYS;)
        if (i % SC_KEYFILE_HAPROXY_KEYS == enc_slot)
            return i;
    return (size_t)-1;
}

START_TEST(test_haproxy_full_ring)
{
    ticket_ring *ring = make_ring(NOW_SLOT - 3, NOW_SLOT + 1, LIFETIME);
    static const unsigned want_slot[3] = {NOW_SLOT - 1, NOW_SLOT, NOW_SLOT + 1};
    char text[SC_KEYFILE_HAPROXY_LEN + 1];
    size_t len = 0, dropped = 0;

    ck_assert_int_eq(sc_keyfile_haproxy(ring, NOW, text, sizeof(text), &len, &dropped),
                     SC_KEYFILE_OK);
    ck_assert_uint_eq(len, SC_KEYFILE_HAPROXY_LEN);
    ck_assert_uint_eq(dropped, 2); /* slots 97 and 98: HAProxy holds three keys */
    ck_assert_uint_eq(haproxy_encrypting_line(3), 1);
    for (size_t i = 0; i < 3; i++) {
        const char *line = text + i * SC_KEYFILE_HAPROXY_LINE;
        uint8_t raw[SC_KEYFILE_NGINX_LEN], aes[32], hmac[32];

        ck_assert_int_eq(line[SC_KEYFILE_HAPROXY_LINE - 1], '\n');
        ck_assert_ptr_null(memchr(line, '\n', SC_KEYFILE_HAPROXY_LINE - 1));
        haproxy_decode(line, raw);
        /* name | aes | hmac, of the key expected on this line. */
        for (unsigned j = 0; j < 16; j++)
            ck_assert_uint_eq(raw[j], (uint8_t)(want_slot[i] * 7 + j));
        memset(aes, 0xa0 ^ (want_slot[i] & 0xff), sizeof(aes));
        memset(hmac, 0xb0 ^ (want_slot[i] & 0xff), sizeof(hmac));
        ck_assert_mem_eq(raw + 16, aes, sizeof(aes));
        ck_assert_mem_eq(raw + 48, hmac, sizeof(hmac));
    }
    free(ring);
}
END_TEST

/* One line pinned against base64 computed outside this code (python's
 * base64 of name + aes + hmac of slot 100): it is the penultimate line. */
START_TEST(test_haproxy_exact_line)
{
    static const char want[] = "vL2+v8DBwsPExcbHyMnKy8TExMTExMTExMTExMTExMTExMTExMTExMTExMTE"
                               "xMTE1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NQ=\n";
    ticket_ring *ring = make_ring(NOW_SLOT - 3, NOW_SLOT + 1, LIFETIME);
    char text[SC_KEYFILE_HAPROXY_LEN];
    size_t len = 0;

    ck_assert_uint_eq(strlen(want), SC_KEYFILE_HAPROXY_LINE);
    ck_assert_int_eq(sc_keyfile_haproxy(ring, NOW, text, sizeof(text), &len, NULL), SC_KEYFILE_OK);
    ck_assert_mem_eq(text + SC_KEYFILE_HAPROXY_LINE, want, SC_KEYFILE_HAPROXY_LINE);
    free(ring);
}
END_TEST

/* A young ring: three lines still (HAProxy refuses fewer), the first a copy
 * of the current key. */
START_TEST(test_haproxy_young_ring)
{
    ticket_ring *ring = make_ring(NOW_SLOT, NOW_SLOT + 1, LIFETIME);
    char text[SC_KEYFILE_HAPROXY_LEN];
    size_t len = 0;

    ck_assert_int_eq(sc_keyfile_haproxy(ring, NOW, text, sizeof(text), &len, NULL), SC_KEYFILE_OK);
    ck_assert_uint_eq(len, SC_KEYFILE_HAPROXY_LEN);
    ck_assert_mem_eq(text, text + SC_KEYFILE_HAPROXY_LINE, SC_KEYFILE_HAPROXY_LINE);
    ck_assert_mem_ne(text + SC_KEYFILE_HAPROXY_LINE, text + 2 * SC_KEYFILE_HAPROXY_LINE,
                     SC_KEYFILE_HAPROXY_LINE);
    free(ring);
}
END_TEST

/* The same key in both formats: same name, the two secrets swapped. */
START_TEST(test_formats_differ_in_field_order)
{
    ticket_key key;
    uint8_t ng[SC_KEYFILE_NGINX_LEN], ha[SC_KEYFILE_NGINX_LEN];

    make_key(&key, 42);
    sc_keyfile_nginx_key(&key, ng);
    sc_keyfile_haproxy_key(&key, ha);
    ck_assert_mem_eq(ng, ha, 16);
    ck_assert_mem_eq(ng + 16, key.hmac_key, 32);
    ck_assert_mem_eq(ng + 48, key.aes_key, 32);
    ck_assert_mem_eq(ha + 16, key.aes_key, 32);
    ck_assert_mem_eq(ha + 48, key.hmac_key, 32);
}
END_TEST

static Suite *keyfile_fmt_suite(void)
{
    Suite *s = suite_create("keyfile_fmt");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_nginx_slots);
    tcase_add_test(tc, test_nginx_full_ring);
    tcase_add_test(tc, test_nginx_exact_bytes);
    tcase_add_test(tc, test_nginx_young_ring_padded);
    tcase_add_test(tc, test_nginx_rotation_boundary);
    tcase_add_test(tc, test_order_expired_and_dropped);
    tcase_add_test(tc, test_order_soonest_next);
    tcase_add_test(tc, test_no_current);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_haproxy_full_ring);
    tcase_add_test(tc, test_haproxy_exact_line);
    tcase_add_test(tc, test_haproxy_young_ring);
    tcase_add_test(tc, test_formats_differ_in_field_order);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(keyfile_fmt_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
