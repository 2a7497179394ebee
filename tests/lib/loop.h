/* loop.h — helpers for tests that drive a backend (backend.h) and the
 * libevent loop it runs on, without sleeping.
 *
 * A test issues an op with tl_record as its completion and a tl_result as
 * the argument, then runs the loop in short bounded slices until a
 * condition holds (tl_run_until: the completion came, the backend is up, a
 * hook was called) or a deadline passes. Synchronous backends (the memory
 * backend) complete before the op returns, so the same recorder serves
 * them: the test just asserts calls == 1 at once. Invalidations are
 * recorded the same way (tl_inv_log). Everything that asserts (tl_wait_*,
 * tl_random_key) fails the calling Check test, so it is for START_TEST
 * bodies and the helpers they call only.
 *
 * Each of these was a private copy in check_backend_redis.c,
 * check_sentinel.c, check_backend_multi.c and check_backend_mem.c.
 */
#ifndef SESSIOND_TEST_LOOP_H
#define SESSIOND_TEST_LOOP_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

struct event_base;

/* Values larger than this are counted but not copied (value_len still
 * says how long they were). */
#define TL_VALUE_MAX 2048
/* A v2-like cache key: tag byte, 16-byte namespace, 32-byte session ID. */
#define TL_KEY_LEN 49

/* The monotonic clock, in milliseconds (th_now_ms, unsigned). */
uint64_t tl_now_ms(void);

/* What the completions of one op (or of several, the last wins) said. */
typedef struct tl_result {
    int calls;
    backend_status status;
    uint8_t value[TL_VALUE_MAX];
    size_t value_len;
    uint64_t done_ms; /* tl_now_ms() at the last completion */
} tl_result;

/* A backend_done_fn; arg is a tl_result. */
void tl_record(void *arg, backend_status status, const uint8_t *value, size_t value_len);

typedef int (*tl_cond_fn)(void *arg);

/* Runs base in slices of at most 2 ms until cond(arg) holds: 0, or -1 if
 * timeout_ms passed first. */
int tl_run_until(struct event_base *base, tl_cond_fn cond, void *arg, int timeout_ms);

/* Runs base for about ms milliseconds (between retries of a condition that
 * is not a callback, e.g. a count read from Redis). */
void tl_pump(struct event_base *base, int ms);

/* Conditions for tl_run_until: the tl_result has a completion; the Redis
 * backend (backend_redis_new) is up. */
int tl_has_calls(void *arg);
int tl_redis_up(void *arg);

/* Runs base until r has a completion (failing the test after timeout_ms),
 * then asserts it has exactly one. */
void tl_wait_done(struct event_base *base, tl_result *r, int timeout_ms);

/* Fills key with a v2-like key: tag byte 2, then 48 random bytes. */
void tl_random_key(uint8_t key[TL_KEY_LEN]);

/* What an invalidate hook (backend_set_invalidate) was called with. */
typedef struct tl_inv_log {
    int calls;
    uint8_t key[BACKEND_MAX_KEY];
    size_t key_len;
} tl_inv_log;

/* A backend_invalidate_fn; arg is a tl_inv_log. */
void tl_on_invalidate(void *arg, const uint8_t *key, size_t key_len);
/* Condition: the tl_inv_log has a call. */
int tl_inv_called(void *arg);

/* Subscribers to the invalidation channel on the Redis at port, or -1. */
long long tl_numsub(int port);
/* Runs base until exactly n subscribe there, failing the test after
 * timeout_ms. */
void tl_wait_subscribers(struct event_base *base, int port, long long n, int timeout_ms);

#endif
