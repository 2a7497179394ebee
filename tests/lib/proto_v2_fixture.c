/* proto_v2_fixture.c — helpers shared by the v2 codec's unit tests
 * (tests/unit/check_proto_v2*.c).
 *
 * Everything here is built independently of proto/proto_v2.c, so that the
 * tests compare the codec with a second reading of PROTOCOL.md rather than
 * with itself: headers and bodies written by hand, a reference sealer made
 * of one-shot EVP calls on a fresh context, and the spec's rules for a
 * malformed datagram restated as a model. The checks (expect_parse,
 * expect_open) also prove that a refusal leaves the caller's message
 * untouched and that every decrypted byte is wiped. Assertions are
 * Check's, so call these only from inside a Check test.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "checks.h"
#include "proto_v2.h"
#include "proto_v2_fixture.h"

const uint8_t pv_key_a[32] = {0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
                              0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15,
                              0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f};
const uint8_t pv_key_b[32] = {0xb0, 0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba,
                              0xbb, 0xbc, 0xbd, 0xbe, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xc5,
                              0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xcb, 0xcc, 0xcd, 0xce, 0xcf};

void pv_put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void pv_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void pv_put64(uint8_t *p, uint64_t v)
{
    pv_put32(p, (uint32_t)(v >> 32));
    pv_put32(p + 4, (uint32_t)v);
}

/* Writes a 16-byte header by hand, independently of the encoder. */
void pv_put_header(uint8_t *p, uint8_t op, uint8_t flags, uint8_t status, uint32_t request_id,
                   uint32_t ttl, unsigned key_len, unsigned value_len)
{
    p[0] = PROTO_V2_VERSION;
    p[1] = op;
    p[2] = flags;
    p[3] = status;
    pv_put32(p + 4, request_id);
    pv_put32(p + 8, ttl);
    pv_put16(p + 12, key_len);
    pv_put16(p + 14, value_len);
}

/* Key bytes 0x40 + i, value bytes 0x10 + i (both wrap). */
void pv_put_body(uint8_t *body, size_t key_len, size_t value_len)
{
    size_t i;

    for (i = 0; i < key_len; i++)
        body[i] = (uint8_t)(0x40 + i);
    for (i = 0; i < value_len; i++)
        body[key_len + i] = (uint8_t)(0x10 + i);
}

/* A plain datagram of exactly 16 + k + v bytes on the heap. */
uint8_t *pv_make_plain(uint8_t op, uint8_t flags, uint8_t status, size_t k, size_t v)
{
    uint8_t *buf = tc_exact_buf(PROTO_V2_HEADER_LEN + k + v, 0);

    pv_put_header(buf, op, flags, status, 0x11223344, 0x0a0b0c0d, (unsigned)k, (unsigned)v);
    pv_put_body(buf + PROTO_V2_HEADER_LEN, k, v);
    return buf;
}

void pv_ref_key_id(const uint8_t key[32], uint8_t id[4])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int len = 0;

    ck_assert_int_eq(EVP_Digest(key, 32, digest, &len, EVP_sha256(), NULL), 1);
    memcpy(id, digest, 4);
}

/* The sealing construction of PROTOCOL.md, built with one-shot EVP calls on
 * a fresh context, independently of proto_v2.c: `hdr` is the 16-byte header
 * exactly as it is to appear (flags included), `body` key || value. Returns
 * the datagram length. */
size_t pv_ref_seal(const uint8_t key[32], const uint8_t hdr[16], uint64_t ts,
                   const uint8_t nonce[12], const uint8_t *body, size_t body_len, uint8_t *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0;

    ck_assert_ptr_nonnull(ctx);
    memcpy(out, hdr, 16);
    pv_ref_key_id(key, out + 16);
    pv_put64(out + 20, ts);
    memcpy(out + 28, nonce, 12);
    ck_assert_int_eq(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, nonce), 1);
    ck_assert_int_eq(EVP_EncryptUpdate(ctx, NULL, &n, out, 40), 1);
    if (body_len) {
        ck_assert_int_eq(EVP_EncryptUpdate(ctx, out + 40, &n, body, (int)body_len), 1);
        ck_assert_int_eq(n, (int)body_len);
    }
    ck_assert_int_eq(EVP_EncryptFinal_ex(ctx, out + 40 + body_len, &n), 1);
    ck_assert_int_eq(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out + 40 + body_len), 1);
    EVP_CIPHER_CTX_free(ctx);
    return 56 + body_len;
}

/* A sealed datagram built by pv_ref_seal with the given header fields and the
 * pv_put_body pattern, on an exact heap buffer. */
uint8_t *pv_make_sealed(const uint8_t key[32], uint8_t op, uint8_t flags, uint8_t status, size_t k,
                        size_t v, uint64_t ts, size_t *len)
{
    uint8_t hdr[16], nonce[12], *body = tc_exact_buf(k + v, 0);
    uint8_t *buf = tc_exact_buf(PV_SEALED_OVERHEAD + k + v, 0);

    memset(nonce, 0x3c, sizeof nonce);
    pv_put_header(hdr, op, flags, status, 0x11223344, 0x0a0b0c0d, (unsigned)k, (unsigned)v);
    pv_put_body(body, k, v);
    *len = pv_ref_seal(key, hdr, ts, nonce, body, k + v, buf);
    free(body);
    return buf;
}

proto_v2_sealer *pv_new_sealer(const uint8_t *key, const uint8_t *next)
{
    proto_v2_sealer *s = proto_v2_sealer_new(key, next);

    ck_assert_ptr_nonnull(s);
    return s;
}

/* A message whose every field is recognisable, to prove a failed parse
 * leaves the caller's struct alone. */
static const uint8_t pv_sentinel_byte = 0x5C;
static void pv_set_sentinel(proto_v2_msg *msg)
{
    memset(msg, 0x77, sizeof *msg);
    msg->key = &pv_sentinel_byte;
    msg->value = &pv_sentinel_byte;
}

static void pv_assert_sentinel(const proto_v2_msg *msg)
{
    ck_assert_uint_eq(msg->op, 0x77);
    ck_assert_uint_eq(msg->request_id, 0x77777777);
    ck_assert_ptr_eq(msg->key, &pv_sentinel_byte);
    ck_assert_ptr_eq(msg->value, &pv_sentinel_byte);
    ck_assert_uint_eq(msg->key_len, (size_t)0x7777777777777777ULL);
}

void pv_expect_parse(const uint8_t *buf, size_t len, int answer, int want)
{
    proto_v2_msg msg;
    int got;

    pv_set_sentinel(&msg);
    got = proto_v2_parse(buf, len, answer, &msg);
    ck_assert_msg(got == want, "%s of %zu bytes (op 0x%02x flags 0x%02x): got %s, want %s",
                  answer ? "answer" : "request", len, len > 1 ? buf[1] : 0, len > 2 ? buf[2] : 0,
                  proto_v2_status_name(got), proto_v2_status_name(want));
    if (want != PROTO_OK)
        pv_assert_sentinel(&msg);
}

/* Whether open got past the framing (size, version, flags, lengths): only
 * then may it have decrypted anything. */
static int pv_framing_passes(const uint8_t *buf, size_t len)
{
    return buf != NULL && len >= 16 && len <= PROTO_MAX_DATAGRAM && buf[0] == 2 &&
           (buf[2] & ~3u) == 0 && (buf[2] & 1) &&
           56 + ((size_t)buf[12] << 8 | buf[13]) + ((size_t)buf[14] << 8 | buf[15]) == len;
}

/* Opens a copy of buf (open works in place) and checks the status; when it
 * fails after decrypting, checks that every decrypted byte was wiped. */
void pv_expect_open(proto_v2_sealer *s, const uint8_t *buf, size_t len, int answer, uint64_t now,
                    uint64_t window, int want)
{
    uint8_t *copy = NULL;
    proto_v2_msg msg;
    int got;

    if (buf != NULL) {
        copy = tc_exact_buf(len, 0);
        memcpy(copy, buf, len);
    }
    pv_set_sentinel(&msg);
    got = proto_v2_open(s, copy, len, answer, now, window, &msg);
    ck_assert_msg(got == want, "open %zu bytes: got %s, want %s", len, proto_v2_status_name(got),
                  proto_v2_status_name(want));
    if (want != PROTO_OK)
        pv_assert_sentinel(&msg);
    if (got != PROTO_OK && got != PROTO_ERR_UNKNOWN_KEY && pv_framing_passes(buf, len))
        ck_assert_msg(tc_all_bytes_are(copy + 40, len - PV_SEALED_OVERHEAD, 0),
                      "%s: decrypted bytes not wiped", proto_v2_status_name(got));
    free(copy);
}

/* The rules of PROTOCOL.md ("Receiving: malformed datagrams"), restated
 * independently of proto_v2.c, for a plain datagram of len bytes whose
 * header says op, flags, status, k and v. `sealed` skips the framing of the
 * flags byte (for seal, which sets SEALED itself). */
int pv_model_fields(int answer, unsigned op, unsigned flags, unsigned status, size_t k, size_t v)
{
    unsigned base = op & 0x7f;
    int known = (base >= 1 && base <= 7) || base == 0x10;
    int value_wanted = 0, value_allowed = 0;

    if (!known || (answer && !(op & 0x80)) || (!answer && (op & 0x80)))
        return PROTO_ERR_TYPE;
    if (!answer && status != 0)
        return PROTO_ERR_FLAGS;
    if (!answer && (flags & 2) && base != 1 && base != 3)
        return PROTO_ERR_FLAGS;
    if (answer && (status > 4 || (flags & 2)))
        return PROTO_ERR_FLAGS;
    if (base == 4 || base == 5 || base == 0x10 ? k != 0 : (k < 1 || k > 64))
        return PROTO_ERR_KEY;
    if (v > 65387)
        return PROTO_ERR_TOO_LONG;
    if (!answer && (base == 1 || base == 7)) /* PUT, ADD */
        value_wanted = value_allowed = 1;
    if (answer && status == 0 && (base == 2 || base == 6 || base == 0x10)) /* GET, TAKE, KEYS */
        value_wanted = value_allowed = 1;
    if (answer && status == 0 && base == 5)
        value_allowed = 1;
    if (value_wanted && v == 0)
        return PROTO_ERR_EMPTY_VALUE;
    if (!value_allowed && v != 0)
        return PROTO_ERR_TRAILING;
    return PROTO_OK;
}

int pv_model_plain(int answer, const uint8_t *buf, size_t len)
{
    size_t k, v;

    if (len > 65507)
        return PROTO_ERR_TOO_LONG;
    if (len < 16)
        return PROTO_ERR_SHORT;
    if (buf[0] != 2)
        return PROTO_ERR_VERSION;
    if (buf[2] & ~3u || buf[2] & 1)
        return PROTO_ERR_FLAGS;
    k = (size_t)buf[12] << 8 | buf[13];
    v = (size_t)buf[14] << 8 | buf[15];
    if (16 + k + v != len)
        return PROTO_ERR_LENGTH;
    return pv_model_fields(answer, buf[1], buf[2], buf[3], k, v);
}

void pv_assert_msg_eq(const proto_v2_msg *got, const proto_v2_msg *want)
{
    ck_assert_uint_eq(got->op, want->op);
    ck_assert_uint_eq(got->status, want->status);
    ck_assert_uint_eq(got->request_id, want->request_id);
    ck_assert_uint_eq(got->ttl, want->ttl);
    ck_assert_uint_eq(got->key_len, want->key_len);
    ck_assert_uint_eq(got->value_len, want->value_len);
    if (want->key_len)
        ck_assert_mem_eq(got->key, want->key, want->key_len);
    else
        ck_assert_ptr_null(got->key);
    if (want->value_len)
        ck_assert_mem_eq(got->value, want->value, want->value_len);
    else
        ck_assert_ptr_null(got->value);
}
