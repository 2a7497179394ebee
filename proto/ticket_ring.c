/* ticket_ring.c — the ticket-key ring's wire encoding, and where each key
 * stands at a given time.
 *
 * How it works: a ring is a 20-byte header (format, reserved, key count,
 * rotate, lifetime, generated_at) followed by fixed 96-byte entries, all
 * integers big-endian (layout in ticket_ring.h). Both directions run the
 * same rule check (ring_check): at most TICKET_RING_MAX_KEYS keys, each with
 * not_before < not_after, ordered by not_before (equal values allowed), and
 * no two keys with the same name. So a ring that encodes also decodes, and
 * a round trip is an identity.
 *
 * Decoding is strict because the ring is network input: it travels sealed
 * (the daemon answers KEYS only to sealed requests), but a sealed answer is
 * only as good as every holder of the cluster key, and a bad ring would be
 * installed on every TLS server of the fleet. The frame is checked first
 * (size, format, reserved byte, N against the length), then the rules. On
 * any failure the caller's ring is wiped with OPENSSL_cleanse: it may
 * already hold key bytes copied out of the buffer.
 *
 * Encoding validates before it writes, so a refused ring leaves no key bytes
 * in the output buffer.
 *
 * Duplicate names are refused although the header's list of rules does not
 * need it for framing: with two keys of one name, a TLS server would pick
 * one of them to decrypt a ticket that the other encrypted. The check is
 * quadratic (at most 256 * 255 / 2 16-byte compares, a few microseconds,
 * once per ring fetch); sorting a copy of the names would be n log n but
 * needs scratch space this allocation-free module does not have.
 *
 * Time arithmetic saturates: not_after + lifetime near UINT64_MAX means
 * "never expires", never a wrap into the past.
 */
#include "ticket_ring.h"

#include <string.h>

#include <openssl/crypto.h>

#include "proto.h"
#include "proto_v2.h"

#define OFF_FORMAT     0
#define OFF_RESERVED   1
#define OFF_COUNT      2
#define OFF_ROTATE     4
#define OFF_LIFETIME   8
#define OFF_GENERATED  12
#define ENTRY_OFF_AES  TICKET_NAME_LEN
#define ENTRY_OFF_HMAC (ENTRY_OFF_AES + TICKET_AES_LEN)
#define ENTRY_OFF_NB   (ENTRY_OFF_HMAC + TICKET_HMAC_LEN)
#define ENTRY_OFF_NA   (ENTRY_OFF_NB + 8)

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | p[i];
    return v;
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

static uint64_t add_saturating(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/* The rules shared by encode and decode. PROTO_OK or PROTO_ERR_INVALID. */
static int ring_check(const ticket_ring *ring)
{
    if (ring->n_keys > TICKET_RING_MAX_KEYS)
        return PROTO_ERR_INVALID;
    for (size_t i = 0; i < ring->n_keys; i++) {
        const ticket_key *k = &ring->keys[i];
        if (k->not_before >= k->not_after)
            return PROTO_ERR_INVALID;
        if (i > 0 && ring->keys[i - 1].not_before > k->not_before)
            return PROTO_ERR_INVALID;
        for (size_t j = 0; j < i; j++)
            if (memcmp(ring->keys[j].name, k->name, TICKET_NAME_LEN) == 0)
                return PROTO_ERR_INVALID;
    }
    return PROTO_OK;
}

int ticket_ring_encode(const ticket_ring *ring, uint8_t *out, size_t cap, size_t *out_len)
{
    if (ring == NULL || out_len == NULL)
        return PROTO_ERR_INVALID;
    int rc = ring_check(ring);
    if (rc != PROTO_OK)
        return rc;
    size_t need = TICKET_RING_HEADER_LEN + ring->n_keys * TICKET_RING_ENTRY_LEN;
    if (out == NULL || cap < need)
        return PROTO_ERR_NOSPACE;

    out[OFF_FORMAT] = TICKET_RING_FORMAT;
    out[OFF_RESERVED] = 0;
    put_u16(out + OFF_COUNT, (uint16_t)ring->n_keys);
    put_u32(out + OFF_ROTATE, ring->rotate_s);
    put_u32(out + OFF_LIFETIME, ring->lifetime_s);
    put_u64(out + OFF_GENERATED, ring->generated_at);
    uint8_t *e = out + TICKET_RING_HEADER_LEN;
    for (size_t i = 0; i < ring->n_keys; i++, e += TICKET_RING_ENTRY_LEN) {
        const ticket_key *k = &ring->keys[i];
        memcpy(e, k->name, TICKET_NAME_LEN);
        memcpy(e + ENTRY_OFF_AES, k->aes_key, TICKET_AES_LEN);
        memcpy(e + ENTRY_OFF_HMAC, k->hmac_key, TICKET_HMAC_LEN);
        put_u64(e + ENTRY_OFF_NB, k->not_before);
        put_u64(e + ENTRY_OFF_NA, k->not_after);
    }
    *out_len = need;
    return PROTO_OK;
}

int ticket_ring_decode(const uint8_t *buf, size_t len, ticket_ring *ring)
{
    int rc;

    if (ring == NULL)
        return PROTO_ERR_INVALID;
    if (buf == NULL || len < TICKET_RING_HEADER_LEN) {
        rc = PROTO_ERR_SHORT;
        goto fail;
    }
    if (buf[OFF_FORMAT] != TICKET_RING_FORMAT) {
        rc = PROTO_ERR_VERSION;
        goto fail;
    }
    if (buf[OFF_RESERVED] != 0) {
        rc = PROTO_ERR_INVALID;
        goto fail;
    }
    size_t n = get_u16(buf + OFF_COUNT);
    if (len != TICKET_RING_HEADER_LEN + n * TICKET_RING_ENTRY_LEN) {
        rc = PROTO_ERR_LENGTH;
        goto fail;
    }
    if (n > TICKET_RING_MAX_KEYS) {
        rc = PROTO_ERR_INVALID;
        goto fail;
    }

    ring->rotate_s = get_u32(buf + OFF_ROTATE);
    ring->lifetime_s = get_u32(buf + OFF_LIFETIME);
    ring->generated_at = get_u64(buf + OFF_GENERATED);
    ring->n_keys = n;
    const uint8_t *e = buf + TICKET_RING_HEADER_LEN;
    for (size_t i = 0; i < n; i++, e += TICKET_RING_ENTRY_LEN) {
        ticket_key *k = &ring->keys[i];
        memcpy(k->name, e, TICKET_NAME_LEN);
        memcpy(k->aes_key, e + ENTRY_OFF_AES, TICKET_AES_LEN);
        memcpy(k->hmac_key, e + ENTRY_OFF_HMAC, TICKET_HMAC_LEN);
        k->not_before = get_u64(e + ENTRY_OFF_NB);
        k->not_after = get_u64(e + ENTRY_OFF_NA);
    }
    rc = ring_check(ring);
    if (rc != PROTO_OK)
        goto fail;
    return PROTO_OK;

fail:
    OPENSSL_cleanse(ring, sizeof(*ring));
    return rc;
}

const ticket_key *ticket_ring_current(const ticket_ring *ring, uint64_t now)
{
    const ticket_key *best = NULL;

    if (ring == NULL)
        return NULL;
    size_t n = ring->n_keys < TICKET_RING_MAX_KEYS ? ring->n_keys : TICKET_RING_MAX_KEYS;
    /* Oldest first, so the last match has the latest not_before; ties go to
     * the later entry, which is the one a daemon appended last. */
    for (size_t i = 0; i < n; i++) {
        const ticket_key *k = &ring->keys[i];
        if (k->not_before <= now && now < k->not_after &&
            (best == NULL || k->not_before >= best->not_before))
            best = k;
    }
    return best;
}

ticket_key_state ticket_key_state_at(const ticket_ring *ring, const ticket_key *key, uint64_t now)
{
    if (ring == NULL || key == NULL)
        return TICKET_KEY_EXPIRED;
    if (now < key->not_before)
        return TICKET_KEY_NEXT;
    if (now < key->not_after) {
        /* Inside its window but overlapped by a later key of the ring: that
         * one encrypts, this one only decrypts. Compared by name, so a copy
         * of a ring entry is judged like the entry itself. */
        const ticket_key *cur = ticket_ring_current(ring, now);
        if (cur == NULL || memcmp(cur->name, key->name, TICKET_NAME_LEN) == 0)
            return TICKET_KEY_CURRENT;
        return TICKET_KEY_OLD;
    }
    if (now < add_saturating(key->not_after, ring->lifetime_s))
        return TICKET_KEY_OLD;
    return TICKET_KEY_EXPIRED;
}

const ticket_key *ticket_ring_find(const ticket_ring *ring, const uint8_t name[TICKET_NAME_LEN],
                                   uint64_t now)
{
    if (ring == NULL || name == NULL)
        return NULL;
    size_t n = ring->n_keys < TICKET_RING_MAX_KEYS ? ring->n_keys : TICKET_RING_MAX_KEYS;
    for (size_t i = 0; i < n; i++) {
        const ticket_key *k = &ring->keys[i];
        if (memcmp(k->name, name, TICKET_NAME_LEN) == 0)
            return ticket_key_state_at(ring, k, now) == TICKET_KEY_EXPIRED ? NULL : k;
    }
    return NULL;
}

const char *ticket_key_state_name(ticket_key_state state)
{
    switch (state) {
    case TICKET_KEY_NEXT:
        return "next";
    case TICKET_KEY_CURRENT:
        return "current";
    case TICKET_KEY_OLD:
        return "old";
    case TICKET_KEY_EXPIRED:
        return "expired";
    }
    return "?";
}
