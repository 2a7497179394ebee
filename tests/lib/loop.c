/* loop.c — the backend completion recorder and the bounded event-loop
 * runner tests share (see loop.h).
 *
 * tl_run_until runs the loop with event_base_loopexit slices of 2 ms rather
 * than one long dispatch: a condition set by a callback is seen within a
 * slice, and the deadline is checked between slices, so no wait is a sleep
 * and none is unbounded. The cheaper alternative, event_base_loop with
 * EVLOOP_ONCE, blocks until some event fires, which with nothing pending
 * (a backend that never connects) would block past the deadline.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis.h>
#include <openssl/rand.h>

#include "backend_redis.h"
#include "harness.h"
#include "loop.h"
#include "redis_proc.h"

uint64_t tl_now_ms(void)
{
    return (uint64_t)th_now_ms();
}

void tl_record(void *arg, backend_status status, const uint8_t *value, size_t value_len)
{
    tl_result *r = arg;
    r->calls++;
    r->status = status;
    r->value_len = value_len;
    r->done_ms = tl_now_ms();
    if (value && value_len <= sizeof(r->value))
        memcpy(r->value, value, value_len);
}

int tl_run_until(struct event_base *base, tl_cond_fn cond, void *arg, int timeout_ms)
{
    uint64_t end = tl_now_ms() + (uint64_t)timeout_ms;
    while (!cond(arg)) {
        if (tl_now_ms() >= end)
            return -1;
        struct timeval tv = {0, 2000};
        event_base_loopexit(base, &tv);
        event_base_dispatch(base);
    }
    return 0;
}

void tl_pump(struct event_base *base, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

int tl_has_calls(void *arg)
{
    return ((tl_result *)arg)->calls > 0;
}

int tl_redis_up(void *arg)
{
    return backend_redis_is_up(arg);
}

void tl_wait_done(struct event_base *base, tl_result *r, int timeout_ms)
{
    ck_assert_msg(tl_run_until(base, tl_has_calls, r, timeout_ms) == 0,
                  "no completion within %d ms", timeout_ms);
    ck_assert_int_eq(r->calls, 1);
}

void tl_random_key(uint8_t key[TL_KEY_LEN])
{
    key[0] = 2;
    ck_assert_int_eq(RAND_bytes(key + 1, TL_KEY_LEN - 1), 1);
}

void tl_on_invalidate(void *arg, const uint8_t *key, size_t key_len)
{
    tl_inv_log *l = arg;
    l->calls++;
    l->key_len = key_len;
    if (key_len <= sizeof(l->key))
        memcpy(l->key, key, key_len);
}

int tl_inv_called(void *arg)
{
    return ((tl_inv_log *)arg)->calls > 0;
}

long long tl_numsub(int port)
{
    redisReply *r = rp_command(port, "PUBSUB NUMSUB %s", BACKEND_REDIS_INV_CHANNEL);
    long long n = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_INTEGER)
        n = r->element[1]->integer;
    if (r)
        freeReplyObject(r);
    return n;
}

void tl_wait_subscribers(struct event_base *base, int port, long long n, int timeout_ms)
{
    uint64_t end = tl_now_ms() + (uint64_t)timeout_ms;
    while (tl_numsub(port) != n) {
        ck_assert_msg(tl_now_ms() < end, "subscribers on %d: %lld, want %lld", port,
                      tl_numsub(port), n);
        tl_pump(base, 5);
    }
}
