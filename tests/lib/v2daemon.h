/* v2daemon.h — talking v2 to a real sessiond in the integration tests:
 * cluster keys (file + sealer), one request and its checked answer, the
 * "nothing else was answered" PING, and a daemon started with a fresh key.
 *
 * Shared by check_v2_sealed.c, check_v2_policy.c and check_v2_keys.c,
 * which were one file (check_v2.c) until it grew past 1300 lines. The
 * datagram bytes come from v2ops.h (the codec under test); this layer adds
 * the socket round trips and the assertions, so everything here fails the
 * calling Check test and is for START_TEST bodies only.
 *
 * Requests are built into v2d_req and answers land in v2d_ans: one static
 * buffer each, as the tests read answer bytes straight after a call (e.g.
 * the value-length field of a PING answer). A test binary runs one test per
 * forked process, so the buffers are never shared between tests; the
 * cheaper-looking alternative of stack buffers would put 64 KiB on the
 * stack of every helper call.
 */
#ifndef SESSIOND_TEST_V2DAEMON_H
#define SESSIOND_TEST_V2DAEMON_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "proto.h"
#include "proto_v2.h"

#define V2D_ANSWER_TIMEOUT_MS 3000
#define V2D_STATS_LINE        2048
#define V2D_BUF               (PROTO_MAX_DATAGRAM + 64)
#define V2D_NS_LEN            PROTO_V2_NAMESPACE_LEN
#define V2D_ID_LEN            32
#define V2D_KEY_LEN           (V2D_NS_LEN + V2D_ID_LEN)

/* The request being built and the last answer received (see above). */
extern uint8_t v2d_req[V2D_BUF];
extern uint8_t v2d_ans[V2D_BUF];

/* ---- keys and datagrams ------------------------------------------------- */

/* A cluster key: its bytes, the file it was written to, a sealer holding it. */
typedef struct v2d_cluster_key {
    uint8_t bytes[PROTO_V2_CLUSTER_KEY_LEN];
    char path[PATH_MAX];
    proto_v2_sealer *sealer;
} v2d_cluster_key;

/* A fresh random key, written to dir/name as 64 hex digits and a newline
 * with `mode`, and a sealer holding it. */
void v2d_cluster_key_make(v2d_cluster_key *k, const char *dir, const char *name, mode_t mode);
void v2d_cluster_key_free(v2d_cluster_key *k);

/* A v2 key: a 16-byte namespace made from `ns` and a 32-byte session ID
 * made from `n`. */
void v2d_make_key(uint8_t key[V2D_KEY_LEN], unsigned ns, unsigned n);

/* A request stamped with the current wall-clock time, into a V2D_BUF-sized
 * out: sealed with s, or plain when s is NULL. Returns its length. */
size_t v2d_build(proto_v2_sealer *s, uint8_t *out, uint8_t op, uint8_t flags, uint32_t id,
                 uint32_t ttl, const uint8_t *key, size_t key_len, const uint8_t *value,
                 size_t value_len);

/* Receives one answer and opens it with `s` (or parses it, plain, when s
 * is NULL) into *a, pointing into v2d_ans. */
void v2d_recv_answer(int fd, proto_v2_sealer *s, proto_v2_msg *a);

/* One request and its answer, checked: op, request ID, key echoed, status
 * and (want_value non-NULL) the value. */
void v2d_call(int fd, proto_v2_sealer *s, uint8_t op, uint32_t id, uint32_t ttl, const uint8_t *key,
              size_t key_len, const uint8_t *value, size_t value_len, uint8_t want_status,
              const uint8_t *want_value, size_t want_len);

/* v2d_call shorthands on a V2D_KEY_LEN key: PUT answered OK, GET answered
 * OK with exactly value, GET answered NOT_FOUND. */
void v2d_put(int fd, proto_v2_sealer *s, const uint8_t *key, const uint8_t *value, size_t len);
void v2d_expect_hit(int fd, proto_v2_sealer *s, const uint8_t *key, const uint8_t *value,
                    size_t len);
void v2d_expect_miss(int fd, proto_v2_sealer *s, const uint8_t *key);

/* A PING whose answer must be the first datagram back: everything sent
 * before it was handled and none of it answered. */
void v2d_sync_ping(int fd, proto_v2_sealer *s);

/* Nothing more is waiting on fd. */
void v2d_expect_nothing_pending(int fd);

/* ---- daemons and stats -------------------------------------------------- */

/* The refusal counters all at once: each must equal its expectation. */
typedef struct v2d_refusals {
    long long malformed, denied, auth_failed, stale, unknown_key;
} v2d_refusals;

void v2d_expect_refusals(const char *line, v2d_refusals want);

/* A keyed daemon: its tmpdir, key, and the daemon itself. */
typedef struct v2d_keyed {
    char dir[256];
    v2d_cluster_key k;
    th_daemon d;
    int fd;
} v2d_keyed;

/* Starts sessiond --key-file K plus `more` (NULL-terminated, may be NULL),
 * with a fresh key in a fresh tmpdir, and connects t->fd to it. */
void v2d_keyed_start(v2d_keyed *t, const char *const *more);
/* Closes t->fd, stops the daemon (status 0 required), removes the tmpdir. */
void v2d_keyed_stop(v2d_keyed *t);

#endif
