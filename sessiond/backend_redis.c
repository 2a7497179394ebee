/* backend_redis.c — the backend vtable on a shared Redis, via hiredis' async
 * API attached to the daemon's libevent base: the ops, the data connection
 * with its timers and back-off, the stats, target parsing, create and free.
 *
 * The other parts, sharing struct backend_redis (backend_redis_int.h):
 * backend_redis_seal.c makes the Redis names and seals the values (nothing
 * usable in Redis), backend_redis_inv.c publishes and hears invalidations
 * (near-cache coherence between nodes), backend_redis_sentinel.c finds and
 * follows the master through Redis Sentinel.
 *
 * Commands (one data connection, replies in order):
 *   put  SET name sealed PX ttl         add  SET name sealed NX PX ttl
 *   get  GET name                       take GETDEL name (Redis >= 6.2)
 *   del  DEL name
 * del and take are each followed by PUBLISH sd:inv (backend_redis_inv.c).
 * A reply that does not open under the op's name is counted as corrupt and
 * completes ERROR.
 *
 * Failure rules (the daemon must stay fast when Redis is not):
 *   - While not connected (or not yet authenticated) every op completes
 *     UNAVAILABLE synchronously. Nothing is queued for later, and writes
 *     missed while down are not replayed: a session written during an outage
 *     only lives in the writer's near-cache, which is what a single-node
 *     daemon would have given anyway; replaying could resurrect a session
 *     deleted or taken meanwhile on another node.
 *   - At most max_inflight ops are sent and unanswered; beyond, UNAVAILABLE.
 *   - Each op completes UNAVAILABLE if Redis has not answered within
 *     op_timeout_ms; its late reply is then discarded (the op stays counted
 *     in flight until it comes, so a hung Redis fills the cap and then costs
 *     nothing). One timer serves all ops: they are sent in order, so their
 *     deadlines are in order.
 *   - If the oldest op has waited stall_ms, the connection is dropped, which
 *     completes everything still pending, and a new one is made.
 *   - Reconnects back off exponentially from backoff_min_ms to
 *     backoff_max_ms (no jitter yet: with many nodes a shared outage ends in
 *     a synchronised reconnect burst, harmless at this size). hiredis 0.14
 *     has no connect timeout, so a timer bounds connect + AUTH.
 *   - With Sentinel, a lost data connection (or a READONLY / MASTERDOWN
 *     answer) asks the sentinels again instead of reconnecting blindly.
 *   - HOST is resolved once at creation; hiredis then gets a numeric address,
 *     so a reconnect never blocks on DNS. A moved host needs a restart (or
 *     Sentinel, which is the intended way to follow a failover).
 *   - Log lines (INFO, once per transition, not per retry):
 *     "backend redis://H:P up", "backend redis://H:P down: REASON", and with
 *     Sentinel "backend sentinel NAME: master at H:P" each time a new master
 *     is found (redis://H:P is then the master's address).
 *
 * Stats: the latency histogram counts replies that arrived in time (sent ->
 * reply, microseconds), so the sum of its buckets equals the completions
 * that carry an answer from Redis. A late reply (its op already timed out)
 * is not in it: it is counted as a timeout. Counting late replies too would
 * show how slow a sick Redis is, at the price of a histogram that no longer
 * matches what callers saw.
 *
 * Limits: one data connection (Redis pipelines, so one connection carries
 * tens of thousands of ops per second); no TLS to Redis (values and names
 * are protected anyway; AUTH's password is not); hiredis asserts on some
 * malformed pub/sub replies, so a hostile process on the Redis port can
 * crash the daemon (it can also delete every session: Redis must be
 * trusted not to be hostile). The key and Sentinel limits are in their
 * files.
 */
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis.h>
#include <async.h>
#include <adapters/libevent.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "backend_redis.h"
#include "backend_redis_int.h"
#include "log.h"

/* --- clock, timers, errors ------------------------------------------------ */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_ms(void)
{
    return now_us() / 1000u;
}

static void ms_to_tv(uint64_t ms, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ms / 1000u);
    tv->tv_usec = (suseconds_t)((ms % 1000u) * 1000u);
}

void br_arm_timer(struct event *ev, uint64_t ms)
{
    struct timeval tv;
    ms_to_tv(ms, &tv);
    evtimer_add(ev, &tv);
}

void br_set_err(char *err, size_t cap, const char *fmt, ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

uint32_t br_next_backoff(uint32_t cur, uint32_t max)
{
    return cur >= max / 2 ? max : cur * 2;
}

/* --- log lines ------------------------------------------------------------ */

static void report_up(backend_redis *r)
{
    if (r->reported != REPORT_UP)
        log_msg(LOG_INFO, "backend %s up", r->label);
    r->reported = REPORT_UP;
}

static void report_down(backend_redis *r, const char *reason)
{
    if (r->freeing || !reason)
        return;
    if (r->reported != REPORT_DOWN)
        log_msg(LOG_INFO, "backend %s down: %s", r->label, reason[0] ? reason : "unknown");
    r->reported = REPORT_DOWN;
}

/* --- ops ---------------------------------------------------------------- */

static void complete(backend_redis *r, backend_done_fn done, void *arg, backend_status status,
                     const uint8_t *value, size_t len)
{
    r->stats.by_status[status]++;
    if (done)
        done(arg, status, status == BACKEND_OK ? value : NULL, status == BACKEND_OK ? len : 0);
}

static void op_unlink(backend_redis *r, redis_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        r->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        r->tail = op->prev;
    r->stats.inflight--;
}

static void arm_op_timer(backend_redis *r, uint64_t at)
{
    uint64_t now = now_ms();
    br_arm_timer(r->op_timer, at > now ? at - now : 0);
    r->op_timer_at = at;
}

static void record_latency(backend_redis *r, uint64_t us)
{
    size_t i = 0;
    while (i < BACKEND_LATENCY_BUCKETS - 1 && us > backend_latency_bounds_us[i])
        i++;
    r->stats.latency_buckets[i]++;
    r->stats.latency_sum_us += us;
}

/* Times out overdue ops, drops a stalled connection, re-arms for the next. */
static void on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    uint64_t now = now_ms();
    for (redis_op *op = r->head; op; op = op->next) {
        if (op->completed)
            continue;
        if (op->deadline_ms > now)
            break;
        op->completed = 1;
        r->stats.timeouts++;
        complete(r, op->done, op->arg, BACKEND_UNAVAILABLE, NULL, 0);
    }
    if (r->head && now - r->head->sent_us / 1000u >= r->cfg.stall_ms && r->state == ST_UP) {
        br_drop_connection(r, "stalled, no reply in time");
        br_schedule_reconnect(r);
        return;
    }
    uint64_t next = UINT64_MAX;
    if (r->head)
        next = r->head->sent_us / 1000u + r->cfg.stall_ms;
    for (redis_op *op = r->head; op; op = op->next) {
        if (!op->completed) {
            if (op->deadline_ms < next)
                next = op->deadline_ms;
            break;
        }
    }
    if (next != UINT64_MAX)
        arm_op_timer(r, next);
}

/* An error that says this address is no longer a usable master. */
static int is_not_master_error(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR &&
           (strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "MASTERDOWN", 10) == 0);
}

static void on_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    redisReply *reply = reply_ptr;
    redis_op *op = privdata;
    backend_redis *r = op->owner;
    int not_master = 0;
    /* reply NULL: the connection is going. hiredis refuses new commands on
     * it meanwhile, so a completion that starts an op gets UNAVAILABLE. */
    if (!op->completed) {
        op->completed = 1;
        backend_status st = BACKEND_ERROR;
        uint8_t *plain = NULL;
        size_t plain_len = 0;
        if (reply)
            record_latency(r, now_us() - op->sent_us);
        if (!reply) {
            st = BACKEND_UNAVAILABLE;
        } else if (reply->type == REDIS_REPLY_ERROR) {
            r->stats.errors++;
            if (is_not_master_error(reply)) {
                st = BACKEND_UNAVAILABLE;
                not_master = 1;
            }
        } else if (op->kind == OP_GET || op->kind == OP_TAKE) {
            if (reply->type == REDIS_REPLY_NIL) {
                st = BACKEND_NOT_FOUND;
            } else if (reply->type == REDIS_REPLY_STRING) {
                plain =
                    br_open_value(r, op->name, (const uint8_t *)reply->str, reply->len, &plain_len);
                if (plain)
                    st = BACKEND_OK;
                else
                    r->stats.corrupt++;
            } else {
                r->stats.errors++;
            }
        } else if (op->kind == OP_DEL) {
            if (reply->type == REDIS_REPLY_INTEGER)
                st = reply->integer > 0 ? BACKEND_OK : BACKEND_NOT_FOUND;
            else
                r->stats.errors++;
        } else { /* PUT, ADD */
            if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0)
                st = BACKEND_OK;
            else if (op->kind == OP_ADD && reply->type == REDIS_REPLY_NIL)
                st = BACKEND_EXISTS;
            else
                r->stats.errors++;
        }
        complete(r, op->done, op->arg, st, plain, plain_len);
        if (plain) {
            OPENSSL_cleanse(plain, plain_len);
            free(plain);
        }
    } else if (reply && reply->type == REDIS_REPLY_ERROR && is_not_master_error(reply)) {
        not_master = 1; /* a late reply still tells us where we are */
    }
    op_unlink(r, op);
    free(op);
    /* With Sentinel, a replica (an old master back from the dead) means the
     * sentinels know better: drop (hiredis frees after this callback) and
     * ask them. A plain target has nowhere else to go. */
    if (not_master && r->sentinel_mode && r->ac == ac) {
        br_drop_connection(r, "not a master any more");
        br_schedule_reconnect(r);
    }
}

static int key_ok(const uint8_t *key, size_t key_len)
{
    return key != NULL && key_len > 0 && key_len <= BACKEND_MAX_KEY;
}

/* Common path of all five ops: checks, then one command. value is sealed
 * for PUT and ADD. */
static void submit(backend *b, int kind, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    backend_redis *r = (backend_redis *)b;
    int writes = kind == OP_PUT || kind == OP_ADD;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    redis_op *op = NULL;
    backend_status st = BACKEND_ERROR;
    r->stats.ops++;
    if (!key_ok(key, key_len) ||
        (writes && (!value || value_len == 0 || value_len > BACKEND_MAX_VALUE || ttl_ms == 0)))
        goto fail;
    st = BACKEND_UNAVAILABLE;
    if (r->state != ST_UP || !r->ac)
        goto fail;
    if (r->stats.inflight >= r->cfg.max_inflight) {
        r->stats.rejected_busy++;
        goto fail;
    }
    st = BACKEND_ERROR;
    op = calloc(1, sizeof(*op));
    if (!op || br_make_name(r, key, key_len, op->name) != 0)
        goto fail;
    if (writes) {
        sealed_len = value_len + BACKEND_REDIS_SEAL_OVERHEAD;
        sealed = malloc(sealed_len);
        if (!sealed ||
            br_seal_bytes(r, op->name, BACKEND_REDIS_NAME_LEN, value, value_len, sealed) != 0)
            goto fail;
    }
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
    const char *argv[7];
    size_t lens[7];
    int argc = 0;
#define ARG(s, n) (argv[argc] = (const char *)(s), lens[argc] = (n), argc++)
    switch (kind) {
    case OP_GET:
        ARG("GET", 3);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        break;
    case OP_TAKE:
        ARG("GETDEL", 6);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        break;
    case OP_DEL:
        ARG("DEL", 3);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        break;
    default: /* PUT, ADD */
        ARG("SET", 3);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        ARG(sealed, sealed_len);
        if (kind == OP_ADD)
            ARG("NX", 2);
        ARG("PX", 2);
        ARG(ttl, strlen(ttl));
        break;
    }
#undef ARG
    op->owner = r;
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    st = BACKEND_UNAVAILABLE;
    /* hiredis copies the formatted command into its output buffer. */
    if (redisAsyncCommandArgv(r->ac, on_reply, op, argc, argv, lens) != REDIS_OK)
        goto fail;
    if (sealed) {
        OPENSSL_cleanse(sealed, sealed_len);
        free(sealed);
    }
    op->sent_us = now_us();
    op->deadline_ms = op->sent_us / 1000u + r->cfg.op_timeout_ms;
    op->prev = r->tail;
    if (r->tail)
        r->tail->next = op;
    else
        r->head = op;
    r->tail = op;
    r->stats.inflight++;
    if (!evtimer_pending(r->op_timer, NULL) || op->deadline_ms < r->op_timer_at)
        arm_op_timer(r, op->deadline_ms);
    if (kind == OP_DEL || kind == OP_TAKE)
        br_publish_invalidation(r, key, key_len);
    return;
fail:
    if (sealed) {
        OPENSSL_cleanse(sealed, sealed_len);
        free(sealed);
    }
    free(op);
    complete(r, done, arg, st, NULL, 0);
}

static void redis_get(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                      void *arg)
{
    submit(b, OP_GET, key, key_len, NULL, 0, 0, done, arg);
}

static void redis_put(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                      size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    submit(b, OP_PUT, key, key_len, value, value_len, ttl_ms, done, arg);
}

static void redis_del(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                      void *arg)
{
    submit(b, OP_DEL, key, key_len, NULL, 0, 0, done, arg);
}

static void redis_take(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                       void *arg)
{
    submit(b, OP_TAKE, key, key_len, NULL, 0, 0, done, arg);
}

static void redis_add(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                      size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    submit(b, OP_ADD, key, key_len, value, value_len, ttl_ms, done, arg);
}

/* --- the data connection ---------------------------------------------------- */

/* A new async connection on the loop, or NULL with the reason in why. */
redisAsyncContext *br_open_async(backend_redis *r, const endpoint *to,
                                 redisConnectCallback *on_conn, redisDisconnectCallback *on_disc,
                                 char *why, size_t why_cap)
{
    redisAsyncContext *ac = redisAsyncConnect(to->host, to->port);
    snprintf(why, why_cap, "out of memory");
    if (!ac)
        return NULL;
    if (ac->err) { /* e.g. refused at once on loopback */
        snprintf(why, why_cap, "%s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->evbase) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    return ac;
}

static void become_up(backend_redis *r)
{
    r->state = ST_UP;
    evtimer_del(r->connect_timer);
    r->backoff_ms = r->cfg.backoff_min_ms;
    if (r->ever_up)
        r->stats.reconnects++;
    r->ever_up = 1;
    report_up(r);
}

/* Forgets the context first, so the callbacks hiredis runs while freeing
 * (pending replies with NULL, then the disconnect callback) see it gone.
 * reason NULL: no log line (shutdown). */
void br_drop_connection(backend_redis *r, const char *reason)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    if (r->state == ST_UP)
        r->stats.disconnects++;
    r->ac = NULL;
    r->state = ST_DOWN;
    evtimer_del(r->connect_timer);
    report_down(r, reason);
    redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    backend_redis *r = ac->data;
    if (r->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        r->ac = NULL;
        r->state = ST_DOWN;
        evtimer_del(r->connect_timer);
        report_down(r, ac->errstr);
        br_schedule_reconnect(r);
        return;
    }
    if (!r->password)
        become_up(r);
    /* else on_auth decides */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    backend_redis *r = ac->data;
    if (r->ac != ac) /* we dropped it ourselves */
        return;
    if (r->state == ST_UP)
        r->stats.disconnects++;
    r->ac = NULL;
    r->state = ST_DOWN;
    evtimer_del(r->connect_timer);
    report_down(r, ac->errstr[0] ? ac->errstr : "connection closed");
    br_schedule_reconnect(r);
}

/* AUTH's reply on any of our connections: 1 if accepted. A refusal (wrong
 * password, or no password set on the server) disconnects: the owner's
 * disconnect callback retries later. hiredis defers the disconnect until
 * the callback returns. */
int br_auth_accepted(backend_redis *r, redisAsyncContext *ac, const redisReply *reply)
{
    if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0)
        return 1;
    r->stats.errors++;
    redisAsyncDisconnect(ac);
    return 0;
}

static void on_auth(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    backend_redis *r = ac->data;
    if (!reply_ptr || r->ac != ac)
        return;
    if (br_auth_accepted(r, ac, reply_ptr))
        become_up(r);
    else
        report_down(r, "AUTH refused");
}

/* Queues AUTH (sent once the socket connects) if a password is set. */
int br_send_auth(backend_redis *r, redisAsyncContext *ac, redisCallbackFn *fn)
{
    if (!r->password)
        return 0;
    const char *argv[2] = {"AUTH", r->password};
    size_t lens[2] = {4, strlen(r->password)};
    return redisAsyncCommandArgv(ac, fn, NULL, 2, argv, lens) == REDIS_OK ? 0 : -1;
}

void br_start_connect(backend_redis *r)
{
    char why[128];
    if (r->freeing || !r->have_master || r->ac)
        return;
    redisAsyncContext *ac =
        br_open_async(r, &r->master, on_connect, on_disconnect, why, sizeof(why));
    if (!ac) {
        report_down(r, why);
        br_schedule_reconnect(r);
        return;
    }
    r->ac = ac;
    r->state = ST_CONNECTING;
    if (br_send_auth(r, ac, on_auth) != 0) {
        br_drop_connection(r, "cannot queue AUTH");
        br_schedule_reconnect(r);
        return;
    }
    br_arm_timer(r->connect_timer, r->cfg.connect_timeout_ms);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->state != ST_CONNECTING)
        return;
    br_drop_connection(r, "connect timeout");
    br_schedule_reconnect(r);
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->sentinel_mode)
        br_sentinel_requery(r); /* its answer (re)connects */
    else if (r->state == ST_DOWN && !r->ac)
        br_start_connect(r);
}

void br_schedule_reconnect(backend_redis *r)
{
    if (r->freeing || evtimer_pending(r->reconnect_timer, NULL))
        return;
    br_arm_timer(r->reconnect_timer, r->backoff_ms);
    r->backoff_ms = br_next_backoff(r->backoff_ms, r->cfg.backoff_max_ms);
}

/* --- lifecycle ------------------------------------------------------------ */

static void redis_get_stats(const backend *b, backend_stats *out)
{
    const backend_redis *r = (const backend_redis *)b;
    *out = r->stats;
    out->up = r->state == ST_UP;
}

static void redis_free(backend *b)
{
    backend_redis *r = (backend_redis *)b;
    r->freeing = 1;
    if (r->sn_timer)
        br_sentinel_drop(r);
    if (r->inv_timer)
        br_inv_drop(r);
    br_drop_connection(r, NULL); /* completes every pending op UNAVAILABLE and frees it */
    while (r->head) {            /* none expected: hiredis ran every pending callback */
        redis_op *op = r->head;
        op_unlink(r, op);
        free(op);
    }
    struct event *timers[] = {r->op_timer, r->connect_timer, r->reconnect_timer, r->inv_timer,
                              r->sn_timer};
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
        if (timers[i])
            event_free(timers[i]);
    br_seal_free(r);
    if (r->password) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    OPENSSL_cleanse(r, sizeof(*r));
    free(r);
}

static const backend_ops redis_ops = {
    .name = "redis",
    .get = redis_get,
    .put = redis_put,
    .del = redis_del,
    .take = redis_take,
    .add = redis_add,
    .get_stats = redis_get_stats,
    .free = redis_free,
};

/* --- targets ---------------------------------------------------------------- */

/* "HOST:PORT" or "[V6]:PORT" of exactly n bytes. 0, or -1. */
static int parse_hostport(const char *s, size_t n, char *host, size_t host_cap, int *port)
{
    const char *end = s + n, *host_start = s, *host_end, *colon;
    if (n == 0)
        return -1;
    if (*s == '[') {
        host_end = memchr(s, ']', n);
        if (!host_end || host_end + 1 >= end || host_end[1] != ':')
            return -1;
        host_start = s + 1;
        colon = host_end + 1;
    } else {
        colon = NULL;
        for (const char *p = s; p < end; p++)
            if (*p == ':')
                colon = p;
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return -1; /* no port, or an IPv6 address without brackets */
        host_end = colon;
    }
    size_t host_len = (size_t)(host_end - host_start);
    size_t digits = (size_t)(end - colon - 1);
    if (host_len == 0 || host_len >= host_cap || digits == 0 || digits > 5)
        return -1;
    long v = 0;
    for (const char *p = colon + 1; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    *port = (int)v;
    return 0;
}

int backend_redis_parse_target(const char *target, char *host, size_t host_cap, int *port,
                               char *err, size_t err_cap)
{
    static const char scheme[] = "redis://";
    if (!target || strncmp(target, scheme, sizeof(scheme) - 1) != 0) {
        br_set_err(err, err_cap, "backend '%s': expected redis://HOST:PORT", target ? target : "");
        return -1;
    }
    const char *p = target + sizeof(scheme) - 1;
    if (parse_hostport(p, strlen(p), host, host_cap, port) != 0) {
        br_set_err(err, err_cap, "backend '%s': expected redis://HOST:PORT (port 1-65535)", target);
        return -1;
    }
    return 0;
}

int backend_redis_parse_sentinel(const char *target, backend_redis_sentinels *out, char *err,
                                 size_t err_cap)
{
    static const char scheme[] = "sentinel://";
    const char *p, *slash, *name;
    memset(out, 0, sizeof(*out));
    if (!target || strncmp(target, scheme, sizeof(scheme) - 1) != 0) {
        br_set_err(err, err_cap,
                   "backend '%s': expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER",
                   target ? target : "");
        return -1;
    }
    p = target + sizeof(scheme) - 1;
    slash = strchr(p, '/');
    if (!slash)
        goto bad;
    name = slash + 1;
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > BACKEND_REDIS_MAX_MASTER_NAME ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            name_len)
        goto bad;
    while (p <= slash) {
        const char *comma = memchr(p, ',', (size_t)(slash - p));
        const char *item_end = comma ? comma : slash;
        if (out->count == BACKEND_REDIS_MAX_SENTINELS) {
            br_set_err(err, err_cap, "backend '%s': more than %d sentinels", target,
                       BACKEND_REDIS_MAX_SENTINELS);
            return -1;
        }
        if (parse_hostport(p, (size_t)(item_end - p), out->host[out->count], sizeof(out->host[0]),
                           &out->port[out->count]) != 0)
            goto bad;
        out->count++;
        p = item_end + 1;
    }
    memcpy(out->master_name, name, name_len + 1);
    return 0;
bad:
    br_set_err(err, err_cap,
               "backend '%s': expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER (port 1-65535, "
               "MASTER of letters, digits, '.', '_', '-')",
               target);
    return -1;
}

int backend_redis_check_target(const char *target, char *err, size_t err_cap)
{
    if (target && strncmp(target, "sentinel://", 11) == 0) {
        backend_redis_sentinels s;
        return backend_redis_parse_sentinel(target, &s, err, err_cap);
    }
    if (target && strncmp(target, "redis://", 8) == 0) {
        char host[HOST_MAX];
        int port;
        return backend_redis_parse_target(target, host, sizeof(host), &port, err, err_cap);
    }
    br_set_err(err, err_cap,
               "backend '%s': expected redis://HOST:PORT or "
               "sentinel://HOST:PORT[,HOST:PORT...]/MASTER",
               target ? target : "");
    return -1;
}

/* HOST -> a numeric address (the one blocking step, at creation only). */
static int resolve(const char *host, int port, endpoint *out, char *err, size_t err_cap)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0 || !res) {
        br_set_err(err, err_cap, "backend: cannot resolve '%s'", host);
        return -1;
    }
    int rc = getnameinfo(res->ai_addr, res->ai_addrlen, out->host, sizeof(out->host), NULL, 0,
                         NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) {
        br_set_err(err, err_cap, "backend: cannot use the address of '%s'", host);
        return -1;
    }
    out->port = port;
    return 0;
}

backend *backend_redis_new(struct event_base *base, const backend_redis_config *cfg, char *err,
                           size_t err_cap)
{
    backend_redis *r = NULL;
    backend_redis_sentinels *sn = NULL;
    char host[HOST_MAX];
    int port = 0;
    if (!base || !cfg || !cfg->cluster_key) {
        br_set_err(err, err_cap, "backend redis: no event base or no cluster key");
        return NULL;
    }
    if (backend_redis_check_target(cfg->target, err, err_cap) != 0)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        goto oom;
    r->base.ops = &redis_ops;
    r->evbase = base;
    if (strncmp(cfg->target, "sentinel://", 11) == 0) {
        sn = malloc(sizeof(*sn));
        if (!sn)
            goto oom;
        if (backend_redis_parse_sentinel(cfg->target, sn, err, err_cap) != 0)
            goto fail;
        r->sentinel_mode = 1;
        r->n_sentinels = sn->count;
        memcpy(r->master_name, sn->master_name, sizeof(r->master_name));
        for (int i = 0; i < sn->count; i++)
            if (resolve(sn->host[i], sn->port[i], &r->sentinels[i], err, err_cap) != 0)
                goto fail;
        snprintf(r->label, sizeof(r->label), "sentinel %s", r->master_name);
    } else {
        if (backend_redis_parse_target(cfg->target, host, sizeof(host), &port, err, err_cap) != 0 ||
            resolve(host, port, &r->master, err, err_cap) != 0)
            goto fail;
        r->have_master = 1;
        snprintf(r->label, sizeof(r->label), "%s", cfg->target);
    }
    r->cfg = *cfg;
    r->cfg.target = NULL;
    r->cfg.cluster_key = NULL;
    r->cfg.password = NULL;
#define DEFAULT(f, d) (r->cfg.f = r->cfg.f ? r->cfg.f : (d))
    DEFAULT(op_timeout_ms, BACKEND_REDIS_DEFAULT_OP_TIMEOUT_MS);
    DEFAULT(max_inflight, BACKEND_REDIS_DEFAULT_MAX_INFLIGHT);
    DEFAULT(connect_timeout_ms, BACKEND_REDIS_DEFAULT_CONNECT_TIMEOUT_MS);
    DEFAULT(backoff_min_ms, BACKEND_REDIS_DEFAULT_BACKOFF_MIN_MS);
    DEFAULT(backoff_max_ms, BACKEND_REDIS_DEFAULT_BACKOFF_MAX_MS);
    DEFAULT(stall_ms, BACKEND_REDIS_DEFAULT_STALL_MS);
#undef DEFAULT
    if (r->cfg.backoff_max_ms < r->cfg.backoff_min_ms)
        r->cfg.backoff_max_ms = r->cfg.backoff_min_ms;
    r->backoff_ms = r->cfg.backoff_min_ms;
    r->inv_backoff_ms = r->cfg.backoff_min_ms;
    if (cfg->password && cfg->password[0] && !(r->password = strdup(cfg->password)))
        goto oom;
    if (br_seal_init(r, cfg->cluster_key, err, err_cap) != 0)
        goto fail;
    if (RAND_bytes(r->node_id, NODE_ID_LEN) != 1) {
        br_set_err(err, err_cap, "backend: key derivation failed");
        goto fail;
    }
    r->op_timer = evtimer_new(base, on_op_timer, r);
    r->connect_timer = evtimer_new(base, on_connect_timeout, r);
    r->reconnect_timer = evtimer_new(base, on_reconnect_timer, r);
    r->inv_timer = evtimer_new(base, br_on_inv_timer, r);
    r->sn_timer = evtimer_new(base, br_on_sentinel_timer, r);
    if (!r->op_timer || !r->connect_timer || !r->reconnect_timer || !r->inv_timer || !r->sn_timer)
        goto oom;
    free(sn);
    if (r->sentinel_mode) {
        br_sentinel_ask(r);
    } else {
        br_start_connect(r);
        br_inv_start(r);
    }
    return &r->base;
oom:
    br_set_err(err, err_cap, "backend: out of memory");
fail:
    free(sn);
    if (r)
        redis_free(&r->base);
    return NULL;
}

int backend_redis_is_up(const backend *b)
{
    return b && b->ops == &redis_ops && ((const backend_redis *)b)->state == ST_UP;
}

int backend_redis_key_name(const backend *b, const uint8_t *key, size_t key_len,
                           char out[BACKEND_REDIS_NAME_LEN + 1])
{
    if (!b || b->ops != &redis_ops || !key_ok(key, key_len))
        return -1;
    return br_make_name((const backend_redis *)b, key, key_len, out);
}
