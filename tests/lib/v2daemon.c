/* v2daemon.c — v2 round trips with a real sessiond for the integration
 * tests (see v2daemon.h).
 *
 * Synchronisation without sleeps: the daemon handles one socket's
 * datagrams in order, so the answer to a sealed PING sent last
 * (v2d_sync_ping) proves every earlier datagram was handled, and, being
 * the first answer back, that none of them was answered. Request IDs of
 * those PINGs come from one counter, so a stray answer to an earlier one
 * cannot be mistaken for the current one.
 */
#include "v2daemon.h"

#include <check.h>
#include <errno.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checks.h"
#include "v2ops.h"

uint8_t v2d_req[V2D_BUF];
uint8_t v2d_ans[V2D_BUF];
static uint32_t sync_id = 0x5e000000;

/* ---- keys and datagrams ------------------------------------------------- */

/* A fresh random key, written to dir/name as 64 hex digits and a newline
 * with `mode`, and a sealer holding it. */
void v2d_cluster_key_make(v2d_cluster_key *k, const char *dir, const char *name, mode_t mode)
{
    ck_assert_int_eq(RAND_bytes(k->bytes, sizeof(k->bytes)), 1);
    snprintf(k->path, sizeof(k->path), "%s/%s", dir, name);
    v2t_write_key_file(k->path, k->bytes, mode);
    k->sealer = proto_v2_sealer_new(k->bytes, NULL);
    ck_assert_ptr_nonnull(k->sealer);
}

void v2d_cluster_key_free(v2d_cluster_key *k)
{
    proto_v2_sealer_free(k->sealer);
    k->sealer = NULL;
}

/* A v2 key: a 16-byte namespace made from `ns` and a 32-byte session ID
 * made from `n`. */
void v2d_make_key(uint8_t key[V2D_KEY_LEN], unsigned ns, unsigned n)
{
    for (unsigned i = 0; i < V2D_KEY_LEN; i++)
        key[i] = (uint8_t)(1 + (ns * 97u + n * 13u + i * 7u) % 251u);
    key[0] = (uint8_t)ns;
    key[V2D_NS_LEN] = (uint8_t)n;
    key[V2D_NS_LEN + 1] = (uint8_t)(n >> 8);
}

/* A request stamped with the current wall-clock time, into a V2D_BUF-sized out. */
size_t v2d_build(proto_v2_sealer *s, uint8_t *out, uint8_t op, uint8_t flags, uint32_t id,
                 uint32_t ttl, const uint8_t *key, size_t key_len, const uint8_t *value,
                 size_t value_len)
{
    return v2t_build(s, out, V2D_BUF, op, flags, id, ttl, key, key_len, value, value_len,
                     tc_wall_ms());
}

/* Receives one answer and opens it with `s` (or parses it, plain, when s
 * is NULL) into *a, pointing into v2d_ans. */
void v2d_recv_answer(int fd, proto_v2_sealer *s, proto_v2_msg *a)
{
    ssize_t n = th_udp_recv(fd, v2d_ans, sizeof(v2d_ans), V2D_ANSWER_TIMEOUT_MS);
    int rc;

    ck_assert_msg(n > 0, "no answer within %d ms (%zd)", V2D_ANSWER_TIMEOUT_MS, n);
    ck_assert_int_eq(v2d_ans[0], PROTO_V2_VERSION);
    if (s != NULL) {
        ck_assert_msg(v2d_ans[2] & PROTO_V2_F_SEALED, "a sealed request got a plain answer");
        rc = proto_v2_open(s, v2d_ans, (size_t)n, 1, tc_wall_ms(), PROTO_V2_DEFAULT_WINDOW_MS, a);
    } else {
        ck_assert_msg(!(v2d_ans[2] & PROTO_V2_F_SEALED), "a plain request got a sealed answer");
        rc = proto_v2_parse(v2d_ans, (size_t)n, 1, a);
    }
    ck_assert_msg(rc == PROTO_OK, "answer does not open/parse: %s", proto_v2_status_name(rc));
}

/* One request and its answer, checked: op, request ID, key echoed, status
 * and (want_value non-NULL) the value. */
void v2d_call(int fd, proto_v2_sealer *s, uint8_t op, uint32_t id, uint32_t ttl, const uint8_t *key,
              size_t key_len, const uint8_t *value, size_t value_len, uint8_t want_status,
              const uint8_t *want_value, size_t want_len)
{
    proto_v2_msg a;
    size_t len = v2d_build(s, v2d_req, op, 0, id, ttl, key, key_len, value, value_len);

    tc_send_all(fd, v2d_req, len);
    v2d_recv_answer(fd, s, &a);
    ck_assert_int_eq(a.op, op | PROTO_V2_ANSWER);
    ck_assert_msg(a.request_id == id, "request ID 0x%08x echoed as 0x%08x", id, a.request_id);
    ck_assert_uint_eq(a.key_len, key_len);
    if (key_len > 0)
        ck_assert_mem_eq(a.key, key, key_len);
    ck_assert_msg(a.status == want_status, "op 0x%02x: status %u, want %u", op, a.status,
                  want_status);
    if (want_value != NULL) {
        ck_assert_uint_eq(a.value_len, want_len);
        ck_assert_msg(memcmp(a.value, want_value, want_len) == 0, "value of %zu bytes differs",
                      want_len);
    }
}

void v2d_put(int fd, proto_v2_sealer *s, const uint8_t *key, const uint8_t *value, size_t len)
{
    v2d_call(fd, s, PROTO_V2_PUT, 0x1000, 0, key, V2D_KEY_LEN, value, len, PROTO_V2_ST_OK, NULL, 0);
}

void v2d_expect_hit(int fd, proto_v2_sealer *s, const uint8_t *key, const uint8_t *value,
                    size_t len)
{
    v2d_call(fd, s, PROTO_V2_GET, 0x2000, 0, key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_OK, value, len);
}

void v2d_expect_miss(int fd, proto_v2_sealer *s, const uint8_t *key)
{
    v2d_call(fd, s, PROTO_V2_GET, 0x3000, 0, key, V2D_KEY_LEN, NULL, 0, PROTO_V2_ST_NOT_FOUND, NULL,
             0);
}

/* A PING whose answer must be the first datagram back: everything sent
 * before it was handled and none of it answered. */
void v2d_sync_ping(int fd, proto_v2_sealer *s)
{
    uint32_t id = ++sync_id;

    v2d_call(fd, s, PROTO_V2_PING, id, 0, NULL, 0, NULL, 0, PROTO_V2_ST_OK, NULL, 0);
}

/* Nothing more is waiting on fd. */
void v2d_expect_nothing_pending(int fd)
{
    ssize_t n = recv(fd, v2d_ans, sizeof(v2d_ans), MSG_DONTWAIT);

    ck_assert_msg(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                  "an unexpected datagram of %zd bytes is waiting", n);
}

/* ---- daemons and stats -------------------------------------------------- */

void v2d_expect_refusals(const char *line, v2d_refusals want)
{
    ck_assert_int_eq(tc_field(line, "malformed"), want.malformed);
    ck_assert_int_eq(tc_field(line, "denied"), want.denied);
    ck_assert_int_eq(tc_field(line, "auth_failed"), want.auth_failed);
    ck_assert_int_eq(tc_field(line, "stale"), want.stale);
    ck_assert_int_eq(tc_field(line, "unknown_key"), want.unknown_key);
}

/* Starts sessiond --key-file K plus `more` (NULL-terminated, may be NULL). */
void v2d_keyed_start(v2d_keyed *t, const char *const *more)
{
    const char *args[16] = {"--key-file"};
    size_t n = 2;

    ck_assert_int_eq(th_tmpdir(t->dir, sizeof(t->dir)), 0);
    v2d_cluster_key_make(&t->k, t->dir, "cluster.key", 0600);
    args[1] = t->k.path;
    for (size_t i = 0; more != NULL && more[i] != NULL; i++)
        args[n++] = more[i];
    args[n] = NULL;
    tc_start(&t->d, args);
    t->fd = tc_connect_v4(&t->d);
}

void v2d_keyed_stop(v2d_keyed *t)
{
    close(t->fd);
    tc_stop_ok(&t->d);
    v2d_cluster_key_free(&t->k);
    th_rmtree(t->dir);
}
