/* v2ops.c — v2 datagrams and key files for the integration tests (see
 * v2ops.h).
 *
 * The key file is written through th_write_file so its mode is exact (not
 * filtered by the umask): the daemon refuses key files that group or
 * others can read, and some tests rely on that refusal. The hex copy of
 * the key is wiped after writing, like every other copy of a key.
 */
#include "v2ops.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "harness.h"

size_t v2t_build(proto_v2_sealer *s, uint8_t *out, size_t cap, uint8_t op, uint8_t flags,
                 uint32_t id, uint32_t ttl, const uint8_t *key, size_t key_len,
                 const uint8_t *value, size_t value_len, uint64_t ts)
{
    proto_v2_msg m;
    size_t len = 0;
    int rc;

    memset(&m, 0, sizeof(m));
    m.op = op;
    m.flags = flags;
    m.request_id = id;
    m.ttl = ttl;
    m.key = key;
    m.key_len = key_len;
    m.value = value;
    m.value_len = value_len;
    m.timestamp_ms = ts;
    rc = s != NULL ? proto_v2_seal(s, out, cap, &m, &len) : proto_v2_encode(out, cap, &m, &len);
    ck_assert_msg(rc == PROTO_OK, "building a request: %s", proto_v2_status_name(rc));
    return len;
}

void v2t_write_key_file(const char *path, const uint8_t key[PROTO_V2_CLUSTER_KEY_LEN], mode_t mode)
{
    char hex[2 * PROTO_V2_CLUSTER_KEY_LEN + 2];
    int rc;

    for (size_t i = 0; i < PROTO_V2_CLUSTER_KEY_LEN; i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    hex[2 * PROTO_V2_CLUSTER_KEY_LEN] = '\n';
    hex[2 * PROTO_V2_CLUSTER_KEY_LEN + 1] = '\0';
    rc = th_write_file(path, hex, 2 * PROTO_V2_CLUSTER_KEY_LEN + 1, mode);
    OPENSSL_cleanse(hex, sizeof(hex));
    ck_assert_int_eq(rc, 0);
}
