/* v2ops.h — building v2 datagrams and cluster key files for the
 * integration tests (check_v2_*.c via v2daemon.c, check_flood.c).
 *
 * Datagrams are built with the codec under test (proto_v2_seal and
 * proto_v2_encode), as libsessionc would; the codec's bytes are checked on
 * their own in check_proto_v2*.c. Functions fail the calling test (Check)
 * on error.
 */
#ifndef SESSIOND_TEST_V2OPS_H
#define SESSIOND_TEST_V2OPS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "proto_v2.h"

/* Builds a request into out (cap bytes): sealed with `s` at timestamp
 * `ts` (ms since the epoch), or plain when s is NULL. Returns its length. */
size_t v2t_build(proto_v2_sealer *s, uint8_t *out, size_t cap, uint8_t op, uint8_t flags,
                 uint32_t id, uint32_t ttl, const uint8_t *key, size_t key_len,
                 const uint8_t *value, size_t value_len, uint64_t ts);

/* Writes key to path as 64 lower-case hex digits and a newline (the
 * format --key-file reads), with exactly `mode`. */
void v2t_write_key_file(const char *path, const uint8_t key[PROTO_V2_CLUSTER_KEY_LEN], mode_t mode);

#endif
