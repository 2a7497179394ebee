/* backend_redis_sentinel.c — finding the Redis master through Redis
 * Sentinel ("sentinel://H:P[,H:P...]/NAME") and following it when it moves.
 *
 * The sentinel hosts are resolved once at creation (backend_redis.c). One
 * connection at a time goes to a sentinel: it asks SENTINEL
 * get-master-addr-by-name NAME and, pipelined on the same connection,
 * SUBSCRIBEs to +switch-master, so no switch can slip between the answer
 * and the subscription. A sentinel that refuses, times out or does not know
 * NAME is skipped for the next one; when all failed, the round is retried
 * with the reconnect back-off. On an answer or a +switch-master for NAME
 * naming another address, the data connection is dropped (its pending ops
 * complete UNAVAILABLE), the invalidation subscription follows, and both
 * reconnect to the new master; stats.failovers counts the moves. The
 * sentinels are asked again (a new connection) whenever the data
 * connection is lost or fails to come up (after the back-off delay), and
 * when a command gets READONLY or MASTERDOWN (an old master back as a
 * replica). A watched sentinel that goes away is replaced by the next one
 * after backoff_min_ms, the data connection untouched.
 *
 * Log lines: "backend sentinel NAME: master at H:P" each time a new master
 * is found (the data connection's label becomes redis://H:P), and one
 * warning per outage when no sentinel answered.
 *
 * Limits: the master's address must be numeric (sentinel resolve-hostnames
 * no, the default): resolving a name would block the loop, so a hostname
 * answer is logged and treated as a failed sentinel. Sentinels are asked
 * without a password (sentinel requirepass is not supported).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_redis_int.h"
#include "log.h"

/* "H:P", or "[H]:P" for an IPv6 address. */
static void format_hostport(char *out, size_t cap, const char *host, int port)
{
    if (strchr(host, ':'))
        snprintf(out, cap, "[%s]:%d", host, port);
    else
        snprintf(out, cap, "%s:%d", host, port);
}

void br_sentinel_drop(backend_redis *r)
{
    redisAsyncContext *ac = r->sn_ac;
    evtimer_del(r->sn_timer);
    r->sn_state = SN_IDLE;
    if (!ac)
        return;
    r->sn_ac = NULL;
    redisAsyncFree(ac);
}

/* The master is `to` (a sentinel said so). Moves the data connection and
 * the subscription if it changed; else makes sure a connection is coming. */
static void set_master(backend_redis *r, const endpoint *to)
{
    if (r->have_master && strcmp(r->master.host, to->host) == 0 && r->master.port == to->port) {
        if (r->state == ST_DOWN && !r->ac)
            br_start_connect(r);
        if (r->inv_state == ST_DOWN && !r->inv_ac && !evtimer_pending(r->inv_timer, NULL))
            br_inv_start(r);
        return;
    }
    if (r->have_master)
        r->stats.failovers++;
    br_drop_connection(r, "master moved");
    br_inv_drop(r);
    r->master = *to;
    r->have_master = 1;
    char hp[HOST_MAX + 10];
    format_hostport(hp, sizeof(hp), to->host, to->port);
    snprintf(r->label, sizeof(r->label), "redis://%s", hp);
    r->reported = REPORT_NONE;
    log_msg(LOG_INFO, "backend sentinel %s: master at %s", r->master_name, hp);
    evtimer_del(r->reconnect_timer);
    r->backoff_ms = r->cfg.backoff_min_ms;
    r->inv_backoff_ms = r->cfg.backoff_min_ms;
    br_start_connect(r);
    br_inv_start(r);
}

/* host/port strings from a sentinel into a numeric endpoint; -1 if not. */
static int parse_endpoint(const char *host, size_t host_len, const char *port, endpoint *out)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (host_len == 0 || host_len >= sizeof(out->host))
        return -1;
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    if (inet_pton(AF_INET, out->host, buf) != 1 && inet_pton(AF_INET6, out->host, buf) != 1)
        return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(port, &end, 10);
    if (port[0] < '0' || port[0] > '9' || errno || !end || (*end && *end != ' ') || v < 1 ||
        v > 65535)
        return -1;
    out->port = (int)v;
    return 0;
}

/* This sentinel did not help: try the next one now, or after the back-off
 * when every one failed in a row. */
static void sentinel_failed(backend_redis *r, const char *why)
{
    br_sentinel_drop(r);
    if (r->freeing)
        return;
    r->sn_index = (r->sn_index + 1) % r->n_sentinels;
    if (++r->sn_failed < r->n_sentinels) {
        br_arm_timer(r->sn_timer, 0);
        return;
    }
    r->sn_failed = 0;
    if (!r->sn_warned)
        log_msg(LOG_WARNING, "backend sentinel %s: no sentinel answered (last: %s)", r->master_name,
                why);
    r->sn_warned = 1;
    br_schedule_reconnect(r);
}

static void on_sentinel_addr(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    redisReply *reply = reply_ptr;
    backend_redis *r = ac->data;
    endpoint to;
    if (!reply || r->sn_ac != ac)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        parse_endpoint(reply->element[0]->str, reply->element[0]->len, reply->element[1]->str,
                       &to) != 0) {
        if (reply->type != REDIS_REPLY_NIL)
            r->stats.errors++;
        sentinel_failed(r, reply->type == REDIS_REPLY_NIL ? "master unknown" : "unusable answer");
        return;
    }
    r->sn_state = SN_WATCHING;
    r->sn_failed = 0;
    r->sn_warned = 0;
    evtimer_del(r->sn_timer);
    set_master(r, &to);
}

/* "+switch-master" payload: "NAME old-ip old-port new-ip new-port". */
static void on_sentinel_event(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    redisReply *reply = reply_ptr;
    backend_redis *r = ac->data;
    if (!reply || r->sn_ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *p = reply->element[2]->str, *f[5];
    size_t flen[5], n = 0;
    while (n < 5 && *p) {
        size_t l = strcspn(p, " ");
        f[n] = p;
        flen[n++] = l;
        p += l;
        p += strspn(p, " ");
    }
    endpoint to;
    if (n != 5 || flen[0] != strlen(r->master_name) || memcmp(f[0], r->master_name, flen[0]) != 0)
        return; /* another master's switch, or junk */
    if (parse_endpoint(f[3], flen[3], f[4], &to) != 0) {
        r->stats.errors++;
        return;
    }
    set_master(r, &to);
}

static void on_sentinel_connect(const redisAsyncContext *ac, int status)
{
    backend_redis *r = ac->data;
    if (r->sn_ac != ac || status == REDIS_OK)
        return;
    r->sn_ac = NULL; /* hiredis frees it */
    sentinel_failed(r, ac->errstr);
}

static void on_sentinel_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    backend_redis *r = ac->data;
    if (r->sn_ac != ac)
        return;
    r->sn_ac = NULL;
    if (r->sn_state == SN_ASKING) {
        sentinel_failed(r, ac->errstr[0] ? ac->errstr : "connection closed");
        return;
    }
    /* Lost the watch (the sentinel went away): ask the next one soon. The
     * short delay keeps a sentinel that answers and then hangs up from
     * turning this into a busy loop. */
    r->sn_state = SN_IDLE;
    r->sn_index = (r->sn_index + 1) % r->n_sentinels;
    r->sn_failed = 0;
    br_arm_timer(r->sn_timer, r->cfg.backoff_min_ms);
}

/* Connects to the current sentinel, asks for the master and subscribes to
 * +switch-master, pipelined. */
void br_sentinel_ask(backend_redis *r)
{
    char why[128];
    br_sentinel_drop(r);
    if (r->freeing)
        return;
    redisAsyncContext *ac = br_open_async(r, &r->sentinels[r->sn_index], on_sentinel_connect,
                                          on_sentinel_disconnect, why, sizeof(why));
    if (!ac) {
        sentinel_failed(r, why);
        return;
    }
    r->sn_ac = ac;
    r->sn_state = SN_ASKING;
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", r->master_name};
    size_t lens[3] = {8, 23, strlen(r->master_name)};
    if (redisAsyncCommandArgv(ac, on_sentinel_addr, NULL, 3, argv, lens) != REDIS_OK ||
        redisAsyncCommand(ac, on_sentinel_event, NULL, "SUBSCRIBE +switch-master") != REDIS_OK) {
        sentinel_failed(r, "cannot queue the query");
        return;
    }
    br_arm_timer(r->sn_timer, r->cfg.connect_timeout_ms);
}

void br_on_sentinel_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->sn_state == SN_ASKING)
        sentinel_failed(r, "no answer in time");
    else if (r->sn_state == SN_IDLE)
        br_sentinel_ask(r);
}

/* Asks again (a fresh connection, starting with the sentinel that answered
 * last), unless a question is already out. */
void br_sentinel_requery(backend_redis *r)
{
    if (r->sn_state == SN_ASKING)
        return;
    r->sn_failed = 0;
    br_sentinel_ask(r);
}
