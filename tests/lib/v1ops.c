/* v1ops.c — v1 requests to a real sessiond, checked (see v1ops.h).
 *
 * Requests are built with the codec under test (proto_v1_encode): the
 * codec has its own byte-level tests in check_proto.c, so here it is only
 * the daemon's behaviour that is being checked. GETs go through
 * th_udp_roundtrip, which waits for one datagram with a bounded timeout.
 */
#include "v1ops.h"

#include <check.h>
#include <string.h>

#include "checks.h"
#include "harness.h"

uint8_t v1t_answer[PROTO_MAX_DATAGRAM + 64];
static uint8_t request[PROTO_MAX_DATAGRAM + 64];

void v1t_make_key(uint8_t key[PROTO_V1_KEY_LEN], unsigned tag, unsigned n)
{
    for (unsigned i = 0; i < PROTO_V1_KEY_LEN; i++)
        key[i] = (uint8_t)(1 + ((tag * 131u + n * 7u + i * 13u + (n >> 8) * 29u) % 251u));
    key[0] = (uint8_t)tag;
    key[1] = (uint8_t)(n & 0xff);
    key[2] = (uint8_t)(n >> 8);
}

void v1t_send_op(int fd, uint8_t type, uint16_t timeout, const uint8_t key[PROTO_V1_KEY_LEN],
                 const uint8_t *value, size_t value_len)
{
    size_t len = 0;

    ck_assert_int_eq(proto_v1_encode(request, sizeof(request), type, timeout, key, PROTO_V1_KEY_LEN,
                                     value, value_len, &len),
                     PROTO_OK);
    tc_send_all(fd, request, len);
}

size_t v1t_get_expect(int fd, const uint8_t key[PROTO_V1_KEY_LEN], uint8_t type)
{
    uint8_t get[PROTO_V1_HEADER_LEN];
    size_t len = 0;
    ssize_t n;

    ck_assert_int_eq(
        proto_v1_encode(get, sizeof(get), PROTO_V1_GET, 0, key, PROTO_V1_KEY_LEN, NULL, 0, &len),
        PROTO_OK);
    n = th_udp_roundtrip(fd, get, len, v1t_answer, sizeof(v1t_answer), V1T_ANSWER_TIMEOUT_MS);
    ck_assert_msg(n >= PROTO_V1_HEADER_LEN, "GET: no answer (%zd)", n);
    ck_assert_int_eq(v1t_answer[0], PROTO_V1_VERSION);
    ck_assert_msg(v1t_answer[1] == type, "GET answered type 0x%02x, expected 0x%02x", v1t_answer[1],
                  type);
    ck_assert_mem_eq(v1t_answer + 4, key, PROTO_V1_KEY_LEN);
    if (type == PROTO_V1_NOT_FOUND)
        ck_assert_int_eq(n, PROTO_V1_HEADER_LEN);
    return (size_t)n;
}

void v1t_expect_hit(int fd, const uint8_t key[PROTO_V1_KEY_LEN], const uint8_t *value,
                    size_t value_len)
{
    size_t n = v1t_get_expect(fd, key, PROTO_V1_FOUND);

    ck_assert_uint_eq(n, PROTO_V1_HEADER_LEN + value_len);
    ck_assert_msg(memcmp(v1t_answer + PROTO_V1_HEADER_LEN, value, value_len) == 0,
                  "value of %zu bytes came back different", value_len);
}
