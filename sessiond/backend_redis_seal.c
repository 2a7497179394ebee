/* backend_redis_seal.c — what the Redis backend stores, made useless to
 * anyone who reads Redis: key names and sealed values (and the sealed keys
 * of invalidation messages, see backend_redis_inv.c).
 *
 * Nothing usable in Redis. Two subkeys come from the 32-byte cluster key by
 * HKDF-Expand (RFC 5869, SHA-256, one block: HMAC(cluster_key, info || 0x01);
 * the Extract step is skipped because the cluster key is already uniformly
 * random), with info "sessiond redis name v1" and "sessiond redis seal v1":
 *   - name = "sd:" + hex(HMAC-SHA256(name_subkey, key))[:32]: Redis never sees
 *     a session ID or namespace; 128 bits keep collisions out of reach.
 *   - sealed value = 0x01 | key ID (4) | salt (16) | AES-256-GCM ciphertext |
 *     tag (16). Each value gets its own AES key, HMAC-SHA256(seal_subkey,
 *     salt) with a random salt, and a zero nonce (the key is never reused, so
 *     the nonce need not vary). Why not one key with random 96-bit nonces:
 *     a busy fleet seals 2^32 values in days, where random GCM nonces stop
 *     being safe; the per-value HMAC costs about a microsecond, nothing next
 *     to a round trip. The associated data is the 21-byte header and the
 *     Redis name, so a value moved to another name (or junk written by
 *     anyone with Redis access) fails to open: counted as corrupt, completed
 *     ERROR. The v2 datagram sealer was not reused because its output is a
 *     valid datagram under the same key (a blob read from Redis could be
 *     replayed as an answer) and its timestamp window does not fit TTLs.
 *
 * The two HMACs run on EVP_MAC contexts keyed once at creation (name_mac,
 * seal_mac) and re-initialised per use with the key kept: the one-shot
 * HMAC() fetched the digest and allocated a context on every call, a sixth
 * of a node's CPU on backend GETs. The key ID is the first 4 bytes of
 * SHA-256(cluster key): a value sealed under another cluster key is told
 * apart before any decryption is tried.
 *
 * Limits: one cluster key (no rollover: a new key changes every name, so a
 * key change empties the shared store); the contexts make sealing and
 * opening single-threaded, which the one event-loop thread already is.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "backend_redis_int.h"

/* HKDF-Expand with a 32-byte output: T(1) = HMAC(prk, info || 0x01). */
static int derive_subkey(const uint8_t *prk, const char *info, uint8_t out[SUBKEY_LEN])
{
    uint8_t msg[64];
    size_t n = strlen(info);
    if (n + 1 > sizeof(msg))
        return -1;
    memcpy(msg, info, n);
    msg[n] = 0x01;
    unsigned int out_len = 0;
    if (!HMAC(EVP_sha256(), prk, CLUSTER_KEY, msg, n + 1, out, &out_len) || out_len != SUBKEY_LEN)
        return -1;
    return 0;
}

/* A context for HMAC-SHA256 under key, or NULL. */
static EVP_MAC_CTX *mac_new(const uint8_t key[SUBKEY_LEN])
{
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac != NULL ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
                           OSSL_PARAM_construct_end()};

    EVP_MAC_free(mac); /* the context keeps its own reference */
    if (ctx != NULL && EVP_MAC_init(ctx, key, SUBKEY_LEN, params) != 1) {
        EVP_MAC_CTX_free(ctx);
        ctx = NULL;
    }
    return ctx;
}

/* HMAC of in[0..len) with ctx's key (re-initialised, the key kept). */
static int mac_run(EVP_MAC_CTX *ctx, const uint8_t *in, size_t len,
                   uint8_t out[SHA256_DIGEST_LENGTH])
{
    size_t out_len = 0;

    if (EVP_MAC_init(ctx, NULL, 0, NULL) != 1 || EVP_MAC_update(ctx, in, len) != 1 ||
        EVP_MAC_final(ctx, out, &out_len, SHA256_DIGEST_LENGTH) != 1)
        return -1;
    return out_len == SHA256_DIGEST_LENGTH ? 0 : -1;
}

int br_make_name(const backend_redis *r, const uint8_t *key, size_t key_len,
                 char out[BACKEND_REDIS_NAME_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t mac[SHA256_DIGEST_LENGTH];
    if (mac_run(r->name_mac, key, key_len, mac) != 0)
        return -1;
    memcpy(out, NAME_PREFIX, 3);
    for (size_t i = 0; i < NAME_HEX / 2; i++) {
        out[3 + 2 * i] = hex[mac[i] >> 4];
        out[3 + 2 * i + 1] = hex[mac[i] & 15];
    }
    out[BACKEND_REDIS_NAME_LEN] = '\0';
    return 0;
}

/* AES-256-GCM under HMAC(seal_key, salt), zero nonce; AAD = header || aad
 * (the Redis name of a value, or channel || node ID of an invalidation). */
static int gcm_run(backend_redis *r, int encrypt, const uint8_t *header, const void *aad,
                   size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
    static const uint8_t zero_nonce[12];
    uint8_t msg_key[SUBKEY_LEN];
    int ok = 0, n = 0;
    if (len > INT32_MAX || aad_len > INT32_MAX)
        goto fail;
    if (mac_run(r->seal_mac, header + 1 + SEAL_KEY_ID, SEAL_SALT, msg_key) != 0)
        goto fail;
    if (EVP_CipherInit_ex(r->cipher, EVP_aes_256_gcm(), NULL, msg_key, zero_nonce, encrypt) != 1)
        goto fail;
    if (EVP_CipherUpdate(r->cipher, NULL, &n, header, SEAL_HEADER) != 1 ||
        EVP_CipherUpdate(r->cipher, NULL, &n, aad, (int)aad_len) != 1)
        goto fail;
    if (len > 0 && EVP_CipherUpdate(r->cipher, out, &n, in, (int)len) != 1)
        goto fail;
    if (!encrypt && EVP_CIPHER_CTX_ctrl(r->cipher, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, tag) != 1)
        goto fail;
    if (EVP_CipherFinal_ex(r->cipher, out + len, &n) != 1)
        goto fail;
    if (encrypt && EVP_CIPHER_CTX_ctrl(r->cipher, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, tag) != 1)
        goto fail;
    ok = 1;
fail:
    OPENSSL_cleanse(msg_key, sizeof(msg_key));
    return ok ? 0 : -1;
}

/* out must hold len + BACKEND_REDIS_SEAL_OVERHEAD bytes. */
int br_seal_bytes(backend_redis *r, const void *aad, size_t aad_len, const uint8_t *value,
                  size_t len, uint8_t *out)
{
    out[0] = SEAL_FORMAT;
    memcpy(out + 1, r->key_id, SEAL_KEY_ID);
    if (RAND_bytes(out + 1 + SEAL_KEY_ID, SEAL_SALT) != 1)
        return -1;
    return gcm_run(r, 1, out, aad, aad_len, value, len, out + SEAL_HEADER, out + SEAL_HEADER + len);
}

/* Opens a sealed blob into plain (room for blob_len - overhead + SEAL_TAG
 * bytes: Final's empty output). Returns the plaintext length, or -1 if the
 * blob was not sealed under this AAD and key. */
long br_open_bytes(backend_redis *r, const void *aad, size_t aad_len, const uint8_t *blob,
                   size_t blob_len, uint8_t *plain)
{
    size_t len = blob_len - BACKEND_REDIS_SEAL_OVERHEAD;
    uint8_t tag[SEAL_TAG];
    memcpy(tag, blob + SEAL_HEADER + len, SEAL_TAG);
    if (gcm_run(r, 0, blob, aad, aad_len, blob + SEAL_HEADER, len, plain, tag) != 0) {
        OPENSSL_cleanse(plain, len);
        return -1;
    }
    return (long)len;
}

int br_sealed_shape_ok(const backend_redis *r, const uint8_t *blob, size_t blob_len,
                       size_t max_plain)
{
    return blob_len > BACKEND_REDIS_SEAL_OVERHEAD &&
           blob_len - BACKEND_REDIS_SEAL_OVERHEAD <= max_plain && blob[0] == SEAL_FORMAT &&
           memcmp(blob + 1, r->key_id, SEAL_KEY_ID) == 0;
}

/* Returns a malloc'd plaintext (the caller wipes and frees it), or NULL if
 * the blob is not a value sealed under this name and key. */
uint8_t *br_open_value(backend_redis *r, const char *name, const uint8_t *blob, size_t blob_len,
                       size_t *out_len)
{
    if (!br_sealed_shape_ok(r, blob, blob_len, BACKEND_MAX_VALUE))
        return NULL;
    size_t len = blob_len - BACKEND_REDIS_SEAL_OVERHEAD;
    uint8_t *plain = malloc(len + SEAL_TAG);
    if (!plain)
        return NULL;
    if (br_open_bytes(r, name, BACKEND_REDIS_NAME_LEN, blob, blob_len, plain) < 0) {
        free(plain);
        return NULL;
    }
    *out_len = len;
    return plain;
}

int br_seal_init(backend_redis *r, const uint8_t *cluster_key, char *err, size_t err_cap)
{
    uint8_t digest[SHA256_DIGEST_LENGTH];
    if (derive_subkey(cluster_key, "sessiond redis name v1", r->name_key) != 0 ||
        derive_subkey(cluster_key, "sessiond redis seal v1", r->seal_key) != 0 ||
        !SHA256(cluster_key, CLUSTER_KEY, digest)) {
        br_set_err(err, err_cap, "backend: key derivation failed");
        return -1;
    }
    memcpy(r->key_id, digest, SEAL_KEY_ID);
    r->name_mac = mac_new(r->name_key);
    r->seal_mac = mac_new(r->seal_key);
    if (r->name_mac == NULL || r->seal_mac == NULL) {
        br_set_err(err, err_cap, "backend: cannot set up HMAC-SHA256");
        return -1;
    }
    r->cipher = EVP_CIPHER_CTX_new();
    if (!r->cipher) {
        br_set_err(err, err_cap, "backend: out of memory");
        return -1;
    }
    return 0;
}

void br_seal_free(backend_redis *r)
{
    if (r->cipher)
        EVP_CIPHER_CTX_free(r->cipher);
    EVP_MAC_CTX_free(r->name_mac); /* frees (and wipes) the keyed state */
    EVP_MAC_CTX_free(r->seal_mac);
    r->cipher = NULL;
    r->name_mac = NULL;
    r->seal_mac = NULL;
}
