/* v1ops.h — v1 (stunnel) requests to a real sessiond, checked with Check:
 * the shared vocabulary of check_daemon.c and check_lifecycle.c.
 *
 * Every GET's answer lands in the global v1t_answer, which tests may read
 * after v1t_get_expect returns (it is overwritten by the next GET). A
 * global rather than a caller's buffer because answers can be 64 kB and the
 * tests used one static buffer each anyway. All functions fail the calling
 * test on any mismatch.
 */
#ifndef SESSIOND_TEST_V1OPS_H
#define SESSIOND_TEST_V1OPS_H

#include <stddef.h>
#include <stdint.h>

#include "proto.h"

/* How long a GET waits for its answer. */
#define V1T_ANSWER_TIMEOUT_MS 3000

/* The last answer received by v1t_get_expect. */
extern uint8_t v1t_answer[PROTO_MAX_DATAGRAM + 64];

/* A distinct 32-byte key per (tag, n), all bytes non-zero. */
void v1t_make_key(uint8_t key[PROTO_V1_KEY_LEN], unsigned tag, unsigned n);

/* Encodes a v1 request (type, timeout, key, value) and sends it on fd. */
void v1t_send_op(int fd, uint8_t type, uint16_t timeout, const uint8_t key[PROTO_V1_KEY_LEN],
                 const uint8_t *value, size_t value_len);

/* GETs key and checks the answer's frame: version, the key echoed, and
 * the type (and, for NOT_FOUND, no value). Returns the answer's length. */
size_t v1t_get_expect(int fd, const uint8_t key[PROTO_V1_KEY_LEN], uint8_t type);

/* GETs key and checks it is found with exactly value_len bytes of value. */
void v1t_expect_hit(int fd, const uint8_t key[PROTO_V1_KEY_LEN], const uint8_t *value,
                    size_t value_len);

#endif
