/* server.c — sessiond's network side: one UDP socket, a libevent loop, the
 * signals and the periodic cache sweep. What a datagram means is dispatch's
 * business; this file only moves bytes and keeps time.
 *
 * How it works: when the socket is readable the callback drains it in
 * batches of SRV_BATCH datagrams with one recvmmsg(2) each, reads the clock
 * once per batch, hands every datagram to dispatch_datagram, and sends the
 * batch's answers with one sendmmsg(2) to the addresses they came from. A
 * callback stops after SRV_MAX_BATCHES batches even if more is queued: the
 * socket is level-triggered, so the loop comes straight back, but signals
 * and the sweep timer get their turn first.
 *
 * Answers are built in place, in the buffer the request arrived in: a GET
 * answer is the request's header with its type changed plus the value, and
 * every receive buffer holds PROTO_MAX_DATAGRAM + 1 bytes, so any answer
 * fits. That keeps the whole I/O state at SRV_BATCH such buffers (2 MiB of
 * address space, only touched as big datagrams arrive) with no answer
 * buffers at all. The extra byte detects a datagram too long for the
 * protocol (with MSG_TRUNC, over IPv6, whose datagrams may be larger); it
 * is dropped and counted as oversized.
 *
 * Stunnel waits one clock tick (~4 ms) for a GET answer, so latency under a
 * burst is what matters: the socket asks for a large receive buffer, so a
 * burst queues in the kernel rather than being dropped, and the batch loop
 * costs one system call per 32 datagrams each way instead of two per
 * datagram. The cheaper alternative not taken: recvfrom/sendto per datagram
 * is simpler and as fast at low load, but pays ~2 syscalls per request when
 * load is highest.
 *
 * Signals: SIGTERM and SIGINT stop the loop, SIGHUP reopens the logs,
 * SIGUSR1 logs the stats line. server_create blocks these four until
 * server_run has its handlers in place, so a signal sent as soon as
 * "listening on" appears is held, not fatal (their default action kills).
 *
 * Source policy: every datagram's sender is matched against the acl (the
 * --allow rules, plus loopback when no cluster key is configured) with
 * acl_match, a few compares, and dispatch applies the rest of the policy
 * (see dispatch.h). The wall clock, which sealed timestamps are checked
 * against and answers carry, is read once per batch like the monotonic one.
 *
 * The server owns the sealer handed to server_create (built by main.c from
 * the key files, before privileges are dropped) and frees it.
 *
 * Deferred answers (--backend: a local miss answered when Redis replies)
 * arrive from the store's callbacks, one by one; they are copied into a
 * queue and sent with one sendmmsg when the loop has run its other ready
 * callbacks (an event made active, srv_flush_late), so a read of the Redis
 * socket that completes many GETs costs one system call, not one each.
 *
 * Metrics (--metrics): the TCP socket is bound here in server_create, for
 * the same reasons as the UDP one, and served by metrics.c's evhttp server
 * on this loop from server_run on; it reads the dispatch counters.
 *
 * Known limits: one thread, one UDP socket; link-local IPv6 addresses with a
 * scope (fe80::1%eth0) are not supported.
 */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "acl.h"
#include "backend.h"
#include "backend_multi.h"
#include "backend_redis.h"
#include "cache.h"
#include "dispatch.h"
#include "log.h"
#include "metrics.h"
#include "proto.h"
#include "ticket_keys.h"

#define SRV_BATCH            32 /* datagrams per recvmmsg/sendmmsg call */
#define SRV_MAX_BATCHES      8  /* batches per wake-up before yielding to the loop */
#define SRV_BUF_SIZE         (PROTO_MAX_DATAGRAM + 1)
#define SRV_RCVBUF           (4 * 1024 * 1024) /* asked for; the kernel caps it at rmem_max */
#define SRV_SWEEP_MS         100
#define SRV_SWEEP_BUDGET     1000 /* entries examined per sweep: bounds a tick's cost */
#define SRV_ERROR_LOG_GAP_MS 1000 /* at most one log line per second for I/O errors */
#define SRV_STATS_LINE       4096

static const int srv_signals[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1};
#define SRV_NSIGNALS (sizeof(srv_signals) / sizeof(srv_signals[0]))

struct server {
    int fd;
    cache *cache;
    proto_v2_sealer *sealer; /* NULL without --key-file */
    acl acl;                 /* who may use plaintext */
    dispatch_ctx dispatch;
    sigset_t saved_mask; /* the mask before server_create blocked our signals */
    int signals_blocked;
    struct event_base *base;
    struct event *read_event;
    struct event *sweep_event;
    /* Deferred answers (the shared store replied) queued until the loop has
     * run every ready callback: one sendmmsg for all the replies one read
     * of the Redis socket completed, instead of a sendto each. */
    struct event *late_flush;
    unsigned n_late;
    struct sockaddr_storage late_peers[SRV_BATCH];
    uint8_t *late_bufs[SRV_BATCH];
    struct mmsghdr late_out[SRV_BATCH];
    struct iovec late_iov[SRV_BATCH];
    struct event *signal_events[SRV_NSIGNALS];
    uint64_t last_error_log_ms;
    uint8_t *bufs; /* SRV_BATCH buffers of SRV_BUF_SIZE bytes */
    struct mmsghdr in[SRV_BATCH];
    struct iovec in_iov[SRV_BATCH];
    struct sockaddr_storage peers[SRV_BATCH];
    struct mmsghdr out[SRV_BATCH];
    struct iovec out_iov[SRV_BATCH];
    int metrics_fd;      /* the --metrics listening socket until server_run, or -1 */
    metrics *metrics;    /* its HTTP server while the loop runs, or NULL */
    uint64_t max_memory; /* for the metrics */
    /* --backend: the shared store (one group, or backend_multi over several),
     * created by server_run on its loop; what it needs until then. */
    backend *shared;
    const config *cfg; /* the caller's, alive until server_free */
    uint8_t cluster_key[PROTO_V2_CLUSTER_KEY_LEN];
    char backend_password[512];
    ticket_keys *tickets; /* --ticket-keys, or NULL */
};

static uint64_t srv_clock_ms(clockid_t clock)
{
    struct timespec ts;

    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t srv_now_ms(void)
{
    return srv_clock_ms(CLOCK_MONOTONIC);
}

/* "127.0.0.1:54321" or "[::1]:54321". */
static void srv_format_addr(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, cap, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    } else {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;

        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, cap, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    }
}

/* inet_pton, not getaddrinfo: glibc's numeric parsing accepts inet_aton
 * shorthand ("1.2.3" is 1.2.0.3), which would bind somewhere the user did
 * not write. */
static int srv_parse_addr(const char *text, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

    memset(ss, 0, sizeof(*ss));
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof(*sin);
        return 0;
    }
    if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*sin6);
        return 0;
    }
    return -1;
}

static int srv_bind(const config *cfg, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int fd = -1;
    int one = 1;
    int rcvbuf = SRV_RCVBUF;

    if (cfg->port < 0 || cfg->port > 65535) {
        snprintf(err, errlen, "invalid port %d", cfg->port);
        goto fail;
    }
    if (srv_parse_addr(cfg->listen_addr, cfg->port, &ss, &sslen) != 0) {
        snprintf(err, errlen, "invalid listen address '%s': not a numeric IPv4 or IPv6 address",
                 cfg->listen_addr);
        goto fail;
    }
    fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create a UDP socket for %s: %s", cfg->listen_addr,
                 strerror(errno));
        goto fail;
    }
    /* "::" then means IPv6 only, the same on every system, instead of
     * depending on the bindv6only sysctl. */
    if (ss.ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0) {
        snprintf(err, errlen, "cannot set IPV6_V6ONLY: %s", strerror(errno));
        goto fail;
    }
    /* Best effort: a smaller buffer only means bursts drop sooner. */
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)) != 0)
        log_msg(LOG_WARNING, "cannot enlarge the receive buffer: %s", strerror(errno));
    if (bind(fd, (struct sockaddr *)&ss, sslen) != 0) {
        snprintf(err, errlen, "cannot bind %s port %d: %s", cfg->listen_addr, cfg->port,
                 strerror(errno));
        goto fail;
    }
    return fd;

fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

/* One line on what the daemon accepts, so an operator can check the
 * policy in the log:
 *   "policy: no cluster key; plaintext from loopback, 10.0.0.0/8"
 *   "policy: cluster key; sealed from any source; plaintext refused"
 *   "policy: cluster key; sealed from any source; plaintext from 127.0.0.1/32" */
static void srv_log_policy(const config *cfg, const proto_v2_sealer *sealer)
{
    char rules[512] = "";
    size_t used = 0;
    int plaintext = sealer == NULL || cfg->allow_plaintext;

    if (sealer == NULL)
        used = (size_t)snprintf(rules, sizeof(rules), "loopback");
    for (size_t i = 0; plaintext && i < cfg->n_allow && used < sizeof(rules); i++) {
        char rule[ACL_RULE_TEXT];
        int n;

        acl_format_rule(&cfg->allow[i], rule, sizeof(rule));
        n = snprintf(rules + used, sizeof(rules) - used, "%s%s", used > 0 ? ", " : "", rule);
        used += n > 0 ? (size_t)n : 0;
    }
    log_msg(LOG_INFO, "policy: %s; plaintext %s%s",
            sealer == NULL ? "no cluster key" : "cluster key; sealed from any source",
            plaintext ? "from " : "refused", plaintext ? rules : "");
}

server *server_create(const config *cfg, server_secrets *secrets, char *err, size_t errlen)
{
    proto_v2_sealer *sealer = secrets->sealer;
    server *srv = NULL;
    cache_config cache_cfg;
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof(bound);
    char addr[INET6_ADDRSTRLEN + 16];
    sigset_t ours;

    srv = calloc(1, sizeof(*srv));
    if (srv == NULL) {
        snprintf(err, errlen, "out of memory");
        proto_v2_sealer_free(sealer);
        secrets->sealer = NULL;
        goto fail;
    }
    srv->fd = -1;
    srv->metrics_fd = -1;
    srv->sealer = sealer;
    secrets->sealer = NULL; /* ours now */
    srv->cfg = cfg;
    memcpy(srv->cluster_key, secrets->cluster_key, sizeof(srv->cluster_key));
    memcpy(srv->backend_password, secrets->backend_password, sizeof(srv->backend_password));
    srv->max_memory = cfg->max_memory;
    /* Loopback is implied only without a key: with one, plaintext is for
     * the --allow sources named with --allow-plaintext, nobody else. */
    acl_init(&srv->acl, sealer == NULL);
    for (size_t i = 0; i < cfg->n_allow; i++) {
        if (acl_add(&srv->acl, &cfg->allow[i]) != 0) {
            snprintf(err, errlen, "too many --allow rules");
            goto fail;
        }
    }
    srv->fd = srv_bind(cfg, err, errlen);
    if (srv->fd < 0)
        goto fail;
    if (getsockname(srv->fd, (struct sockaddr *)&bound, &bound_len) != 0) {
        snprintf(err, errlen, "getsockname: %s", strerror(errno));
        goto fail;
    }
    memset(&cache_cfg, 0, sizeof(cache_cfg));
    cache_cfg.max_bytes = cfg->max_memory;
    srv->cache = cache_create(&cache_cfg);
    /* malloc, not calloc: pages are touched only as large datagrams
     * arrive, so 2 MiB of buffers cost little resident memory. */
    srv->bufs = malloc((size_t)SRV_BATCH * SRV_BUF_SIZE);
    if (srv->cache == NULL || srv->bufs == NULL) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    dispatch_init(&srv->dispatch, srv->cache, cfg->max_ttl);
    dispatch_set_security(&srv->dispatch, srv->sealer, cfg->allow_plaintext,
                          (uint64_t)cfg->window_s * 1000u);

    for (int i = 0; i < SRV_BATCH; i++) {
        srv->in_iov[i].iov_base = srv->bufs + (size_t)i * SRV_BUF_SIZE;
        srv->in_iov[i].iov_len = SRV_BUF_SIZE;
        srv->in[i].msg_hdr.msg_iov = &srv->in_iov[i];
        srv->in[i].msg_hdr.msg_iovlen = 1;
        srv->in[i].msg_hdr.msg_name = &srv->peers[i];
        srv->in[i].msg_hdr.msg_namelen = sizeof(srv->peers[i]);
        srv->out[i].msg_hdr.msg_iov = &srv->out_iov[i];
        srv->out[i].msg_hdr.msg_iovlen = 1;
    }

    sigemptyset(&ours);
    for (size_t i = 0; i < SRV_NSIGNALS; i++)
        sigaddset(&ours, srv_signals[i]);
    if (sigprocmask(SIG_BLOCK, &ours, &srv->saved_mask) == 0)
        srv->signals_blocked = 1;

    /* Logged before "listening on", so a test that has seen that line
     * finds this one too. */
    if (cfg->metrics != NULL) {
        char metrics_addr[INET6_ADDRSTRLEN + 16];

        srv->metrics_fd = metrics_listen(cfg->metrics_addr, cfg->metrics_port, metrics_addr,
                                         sizeof(metrics_addr), err, errlen);
        if (srv->metrics_fd < 0)
            goto fail;
        log_msg(LOG_INFO, "metrics on %s", metrics_addr);
    }
    srv_log_policy(cfg, srv->sealer);
    srv_format_addr(&bound, addr, sizeof(addr));
    log_msg(LOG_INFO, "listening on %s", addr);
    return srv;

fail:
    server_free(srv);
    return NULL;
}

static void srv_unblock_signals(server *srv)
{
    if (srv->signals_blocked)
        sigprocmask(SIG_SETMASK, &srv->saved_mask, NULL);
    srv->signals_blocked = 0;
}

static void srv_log_stats(server *srv)
{
    char line[SRV_STATS_LINE];

    dispatch_stats_line(&srv->dispatch, line, sizeof(line));
    log_msg(LOG_INFO, "stats: %s", line);
}

static void srv_io_error(server *srv, const char *what, int err)
{
    uint64_t now = srv_now_ms();

    if (now - srv->last_error_log_ms < SRV_ERROR_LOG_GAP_MS && srv->last_error_log_ms != 0)
        return;
    srv->last_error_log_ms = now;
    log_msg(LOG_WARNING, "%s: %s", what, strerror(err));
}

/* Sends msgs[0..count). A full socket buffer drops the rest of the batch (a
 * late answer is worthless to stunnel, and waiting would stall everyone
 * else); an error belonging to the first message (e.g. EPERM from a firewall
 * rule) drops that one and goes on with the others. */
static void srv_send_answers(server *srv, struct mmsghdr *msgs, unsigned count)
{
    unsigned sent = 0;

    while (sent < count) {
        int n = sendmmsg(srv->fd, msgs + sent, count - sent, 0);

        if (n > 0) {
            sent += (unsigned)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
            srv_io_error(srv, "sendmmsg", errno);
            srv->dispatch.counters.unsent++;
            sent++;
            continue;
        }
        srv->dispatch.counters.unsent += count - sent;
        break;
    }
}

/* The dispatch_source bits of a sender: a few compares (acl.h). */
static unsigned srv_source(const server *srv, const struct sockaddr_storage *peer)
{
    const struct sockaddr *sa = (const struct sockaddr *)peer;

    return (acl_match(&srv->acl, sa) ? DISPATCH_SOURCE_ALLOWED : 0u) |
           (acl_is_loopback(sa) ? DISPATCH_SOURCE_LOOPBACK : 0u);
}

/* One batch: receive up to SRV_BATCH datagrams, dispatch them, send the
 * answers. Returns how many were received; 0 when the socket is empty. */
static int srv_handle_batch(server *srv)
{
    unsigned answers = 0;
    dispatch_time now;
    int n;

    do {
        n = recvmmsg(srv->fd, srv->in, SRV_BATCH, MSG_DONTWAIT, NULL);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            srv->dispatch.counters.recv_errors++;
            srv_io_error(srv, "recvmmsg", errno);
        }
        return 0;
    }
    now.now_ms = srv_now_ms();
    now.wall_ms = srv_clock_ms(CLOCK_REALTIME);
    for (int i = 0; i < n; i++) {
        struct msghdr *hdr = &srv->in[i].msg_hdr;
        uint8_t *buf = srv->in_iov[i].iov_base;
        size_t len = srv->in[i].msg_len;
        size_t answer_len;

        if (hdr->msg_flags & MSG_TRUNC)
            len = SRV_BUF_SIZE; /* larger than the buffer, hence than the protocol allows */
        answer_len =
            dispatch_datagram_from(&srv->dispatch, buf, len, srv_source(srv, &srv->peers[i]),
                                   &srv->peers[i], hdr->msg_namelen, buf, SRV_BUF_SIZE, &now);
        if (answer_len > 0) {
            srv->out_iov[answers].iov_base = buf;
            srv->out_iov[answers].iov_len = answer_len;
            srv->out[answers].msg_hdr.msg_name = &srv->peers[i];
            srv->out[answers].msg_hdr.msg_namelen = hdr->msg_namelen;
            answers++;
        }
    }
    if (answers > 0)
        srv_send_answers(srv, srv->out, answers);
    /* msg_namelen is value-result: restore the capacity for the next call. */
    for (int i = 0; i < n; i++)
        srv->in[i].msg_hdr.msg_namelen = sizeof(srv->peers[i]);
    return n;
}

static void srv_on_readable(evutil_socket_t fd, short what, void *arg)
{
    server *srv = arg;

    (void)fd;
    (void)what;
    for (int batch = 0; batch < SRV_MAX_BATCHES; batch++) {
        /* A short batch means the queue is empty: skip the EAGAIN call. */
        if (srv_handle_batch(srv) < SRV_BATCH)
            return;
    }
}

static void srv_on_sweep(evutil_socket_t fd, short what, void *arg)
{
    server *srv = arg;

    (void)fd;
    (void)what;
    cache_sweep(srv->cache, srv_now_ms(), SRV_SWEEP_BUDGET);
    if (srv->tickets != NULL)
        ticket_keys_tick(srv->tickets, srv_clock_ms(CLOCK_REALTIME) / 1000u);
}

/* Sends the queued deferred answers with srv_send_answers (one sendmmsg
 * for all), and wipes their copies. */
static void srv_flush_late(server *srv)
{
    unsigned count = srv->n_late;

    for (unsigned i = 0; i < count; i++) {
        srv->late_out[i].msg_hdr.msg_iov = &srv->late_iov[i];
        srv->late_out[i].msg_hdr.msg_iovlen = 1;
        srv->late_out[i].msg_hdr.msg_name = &srv->late_peers[i];
    }
    srv_send_answers(srv, srv->late_out, count);
    for (unsigned i = 0; i < count; i++) {
        OPENSSL_cleanse(srv->late_bufs[i], srv->late_iov[i].iov_len);
        free(srv->late_bufs[i]);
        srv->late_bufs[i] = NULL;
    }
    srv->n_late = 0;
}

static void srv_on_late_flush(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    srv_flush_late(arg);
}

/* A deferred answer (dispatch_send_fn): the shared store has replied.
 * Copied into the queue (the caller's buffer is reused at once) and sent
 * when the loop has run the other ready callbacks: libevent runs an event
 * made active here after them, in the same loop iteration. */
static void srv_send_late(void *arg, const void *peer, size_t peer_len, const uint8_t *buf,
                          size_t len)
{
    server *srv = arg;
    uint8_t *copy;
    unsigned i;

    if (peer_len > sizeof(srv->late_peers[0]))
        return;
    if (srv->n_late == SRV_BATCH)
        srv_flush_late(srv);
    copy = malloc(len);
    if (copy == NULL) {
        srv->dispatch.counters.unsent++;
        return;
    }
    memcpy(copy, buf, len);
    i = srv->n_late++;
    srv->late_bufs[i] = copy;
    srv->late_iov[i].iov_base = copy;
    srv->late_iov[i].iov_len = len;
    memcpy(&srv->late_peers[i], peer, peer_len);
    srv->late_out[i].msg_hdr.msg_namelen = (socklen_t)peer_len;
    if (i == 0)
        event_active(srv->late_flush, 0, 0);
}

/* Connects the --backend groups on the loop (nothing blocks but the one
 * name lookup per group, here at startup) and the ticket-key ring. */
static int srv_start_stores(server *srv)
{
    const config *cfg = srv->cfg;
    backend *groups[CONFIG_MAX_BACKENDS];
    size_t n = 0;
    char err[512];

    for (; n < cfg->n_backends; n++) {
        backend_redis_config rc;

        memset(&rc, 0, sizeof(rc));
        rc.target = cfg->backends[n];
        rc.cluster_key = srv->cluster_key;
        rc.password = srv->backend_password[0] != '\0' ? srv->backend_password : NULL;
        rc.op_timeout_ms = cfg->backend_timeout_ms;
        groups[n] = backend_redis_new(srv->base, &rc, err, sizeof(err));
        if (groups[n] == NULL) {
            log_msg(LOG_ERR, "--backend: %s", err);
            goto fail;
        }
    }
    if (n == 1) {
        srv->shared = groups[0];
    } else if (n > 1) {
        srv->shared = backend_multi_new(groups, cfg->backends, n, err, sizeof(err));
        n = 0; /* the multi owns the groups, also when it failed */
        if (srv->shared == NULL) {
            log_msg(LOG_ERR, "--backend: %s", err);
            goto fail;
        }
    }
    if (srv->shared != NULL) {
        srv->late_flush = event_new(srv->base, -1, 0, srv_on_late_flush, srv);
        if (srv->late_flush == NULL ||
            dispatch_set_shared(&srv->dispatch, srv->shared, srv_send_late, srv) != 0)
            goto fail_oom;
    }
    if (cfg->ticket_keys) {
        srv->tickets = ticket_keys_new(cfg->ticket_rotate_s, cfg->ticket_lifetime_s, srv->shared,
                                       err, sizeof(err));
        if (srv->tickets == NULL) {
            log_msg(LOG_ERR, "--ticket-keys: %s", err);
            goto fail;
        }
        if (dispatch_set_tickets(&srv->dispatch, srv->tickets) != 0)
            goto fail_oom;
        ticket_keys_tick(srv->tickets, srv_clock_ms(CLOCK_REALTIME) / 1000u);
    }
    OPENSSL_cleanse(srv->cluster_key, sizeof(srv->cluster_key));
    OPENSSL_cleanse(srv->backend_password, sizeof(srv->backend_password));
    return 0;

fail_oom:
    log_msg(LOG_ERR, "out of memory");
fail:
    while (n > 0)
        backend_free(groups[--n]);
    return -1;
}

static void srv_on_signal(evutil_socket_t signum, short what, void *arg)
{
    server *srv = arg;

    (void)what;
    switch (signum) {
    case SIGTERM:
    case SIGINT:
        log_msg(LOG_INFO, "stopping on %s", signum == SIGTERM ? "SIGTERM" : "SIGINT");
        event_base_loopbreak(srv->base);
        break;
    case SIGHUP:
        log_reopen();
        log_msg(LOG_INFO, "logs reopened on SIGHUP");
        break;
    case SIGUSR1:
        srv_log_stats(srv);
        break;
    default:
        break;
    }
}

/* libevent's own warnings go to our log, not to stderr behind its back. */
static void srv_event_log(int severity, const char *msg)
{
    int priority = LOG_DEBUG;

    if (severity == EVENT_LOG_WARN)
        priority = LOG_WARNING;
    else if (severity == EVENT_LOG_ERR)
        priority = LOG_ERR;
    else if (severity == EVENT_LOG_MSG)
        priority = LOG_INFO;
    log_msg(priority, "libevent: %s", msg);
}

int server_run(server *srv)
{
    struct event_config *ev_cfg = NULL;
    struct timeval sweep_every = {0, SRV_SWEEP_MS * 1000};
    int rc = -1;

    /* UDP never raises SIGPIPE, but a log pipe whose reader died would. */
    signal(SIGPIPE, SIG_IGN);
    event_set_log_callback(srv_event_log);
    ev_cfg = event_config_new();
    if (ev_cfg == NULL)
        goto fail;
    /* One thread: no locks needed inside libevent. */
    event_config_set_flag(ev_cfg, EVENT_BASE_FLAG_NOLOCK);
    srv->base = event_base_new_with_config(ev_cfg);
    if (srv->base == NULL)
        goto fail;
    srv->read_event = event_new(srv->base, srv->fd, EV_READ | EV_PERSIST, srv_on_readable, srv);
    srv->sweep_event = event_new(srv->base, -1, EV_PERSIST, srv_on_sweep, srv);
    if (srv->read_event == NULL || srv->sweep_event == NULL ||
        event_add(srv->read_event, NULL) != 0 || event_add(srv->sweep_event, &sweep_every) != 0)
        goto fail;
    for (size_t i = 0; i < SRV_NSIGNALS; i++) {
        srv->signal_events[i] = evsignal_new(srv->base, srv_signals[i], srv_on_signal, srv);
        if (srv->signal_events[i] == NULL || event_add(srv->signal_events[i], NULL) != 0)
            goto fail;
    }
    if (srv_start_stores(srv) != 0)
        goto fail;
    if (srv->metrics_fd >= 0) {
        srv->metrics = metrics_start(srv->base, srv->metrics_fd, &srv->dispatch, srv->max_memory);
        srv->metrics_fd = -1; /* metrics_start owns it, also on failure */
        if (srv->metrics == NULL)
            goto fail;
    }
    /* Handlers are in place: let held signals through. */
    srv_unblock_signals(srv);

    rc = event_base_dispatch(srv->base) < 0 ? -1 : 0;
    srv_log_stats(srv);

fail:
    if (rc != 0)
        log_msg(LOG_ERR, "the event loop could not run");
    if (ev_cfg != NULL)
        event_config_free(ev_cfg);
    return rc;
}

void server_free(server *srv)
{
    if (srv == NULL)
        return;
    for (size_t i = 0; i < SRV_NSIGNALS; i++) {
        if (srv->signal_events[i] != NULL)
            event_free(srv->signal_events[i]);
    }
    metrics_free(srv->metrics); /* before the base it runs on */
    /* The store completes what is pending as unavailable: nobody to answer
     * at shutdown. Then the ring, which its completions may still touch,
     * and the records dispatch kept. */
    srv->dispatch.send_late = NULL;
    backend_free(srv->shared);
    if (srv->n_late > 0)
        srv_flush_late(srv); /* answers already built: send them */
    if (srv->late_flush != NULL)
        event_free(srv->late_flush);
    srv->shared = NULL;
    ticket_keys_free(srv->tickets);
    srv->tickets = NULL;
    dispatch_release(&srv->dispatch);
    if (srv->metrics_fd >= 0)
        close(srv->metrics_fd);
    if (srv->sweep_event != NULL)
        event_free(srv->sweep_event);
    if (srv->read_event != NULL)
        event_free(srv->read_event);
    if (srv->base != NULL)
        event_base_free(srv->base);
    if (srv->fd >= 0)
        close(srv->fd);
    srv_unblock_signals(srv);
    /* The buffers held NEW values and GET answers: secrets. */
    if (srv->bufs != NULL) {
        OPENSSL_cleanse(srv->bufs, (size_t)SRV_BATCH * SRV_BUF_SIZE);
        free(srv->bufs);
    }
    cache_free(srv->cache);
    proto_v2_sealer_free(srv->sealer);
    OPENSSL_cleanse(srv, sizeof(*srv)); /* the cluster key and password, if never used */
    free(srv);
}
