/* proto_v2_fixture.h — helpers shared by the v2 codec's unit tests
 * (tests/unit/check_proto_v2*.c), built independently of proto_v2.c. See
 * proto_v2_fixture.c. Call them only from inside a Check test: they assert
 * with Check.
 */
#ifndef PROTO_V2_FIXTURE_H
#define PROTO_V2_FIXTURE_H

#include <stddef.h>
#include <stdint.h>

#include "proto_v2.h"

/* A byte no field of a test datagram uses, to see what an encoder wrote. */
#define PV_FILL            0xAA
#define PV_SEALED_OVERHEAD PROTO_V2_OVERHEAD_MAX
/* An arbitrary "now" for sealed tests: 2023-11-14 22:13:20 UTC. */
#define PV_T0 1700000000000ULL

/* Two cluster keys: 00..1f and b0..cf. */
extern const uint8_t pv_key_a[32];
extern const uint8_t pv_key_b[32];

/* A big-endian 16-bit field. */
void pv_put16(uint8_t *p, unsigned v);
/* Writes a 16-byte header by hand, independently of the encoder. */
void pv_put_header(uint8_t *p, uint8_t op, uint8_t flags, uint8_t status, uint32_t request_id,
                   uint32_t ttl, unsigned key_len, unsigned value_len);
/* Key bytes 0x40 + i, value bytes 0x10 + i (both wrap). */
void pv_put_body(uint8_t *body, size_t key_len, size_t value_len);
/* A plain datagram of exactly 16 + k + v bytes on the heap (free it). */
uint8_t *pv_make_plain(uint8_t op, uint8_t flags, uint8_t status, size_t k, size_t v);

/* The key ID of PROTOCOL.md: the first 4 bytes of SHA-256(key). */
void pv_ref_key_id(const uint8_t key[32], uint8_t id[4]);
/* The sealing construction of PROTOCOL.md on one-shot EVP calls: `hdr` is
 * the header exactly as it is to appear, `body` key || value. Returns the
 * datagram length. */
size_t pv_ref_seal(const uint8_t key[32], const uint8_t hdr[16], uint64_t ts,
                   const uint8_t nonce[12], const uint8_t *body, size_t body_len, uint8_t *out);
/* A sealed datagram made by pv_ref_seal with the pv_put_body pattern, on an
 * exact heap buffer (free it); its length goes to *len. */
uint8_t *pv_make_sealed(const uint8_t key[32], uint8_t op, uint8_t flags, uint8_t status, size_t k,
                        size_t v, uint64_t ts, size_t *len);
/* proto_v2_sealer_new, or the test fails. */
proto_v2_sealer *pv_new_sealer(const uint8_t *key, const uint8_t *next);

/* Parses buf and checks the status; a refusal must leave the message as it
 * was. */
void pv_expect_parse(const uint8_t *buf, size_t len, int answer, int want);
/* Opens a copy of buf and checks the status; a refusal must leave the
 * message as it was, and wipe whatever it decrypted. */
void pv_expect_open(proto_v2_sealer *s, const uint8_t *buf, size_t len, int answer, uint64_t now,
                    uint64_t window, int want);

/* PROTOCOL.md's rules for a malformed datagram, restated: the status the
 * fields of a header call for, and that of a whole plain datagram. */
int pv_model_fields(int answer, unsigned op, unsigned flags, unsigned status, size_t k, size_t v);
int pv_model_plain(int answer, const uint8_t *buf, size_t len);

/* Every field of two messages equal, key and value bytes included. */
void pv_assert_msg_eq(const proto_v2_msg *got, const proto_v2_msg *want);

#endif
