/* sessionc.c — the libsessionc client: per-thread sockets, the raw
 * get/put/remove operations, and the counters.
 *
 * Sockets: every thread that uses a client gets its own connected,
 * non-blocking UDP socket per server, opened on first use and kept until the
 * thread exits (a pthread_key_t per client, whose destructor closes them) or
 * the client is freed. So the hot path never creates a socket (stunnel's
 * one-socket-per-request costs a socket(), a connect() and a close() on
 * every lookup), no two threads ever share a socket (an answer can only be
 * read by the thread that asked), and the kernel filters out datagrams from
 * any other address because the socket is connected. One socket per thread
 * is also what v2's request IDs need: a per-thread counter, no locking.
 * Cost: one descriptor per (thread, server); a server with 1000 threads
 * holds 1000 of them per listed server. The cheaper alternative not taken,
 * one socket shared by all threads with a demultiplexing reader, needs a
 * lock or a reader thread on the hot path.
 *
 * A lookup: build the 36-byte GET header, hash the key once, walk the
 * servers in the key's rendezvous order skipping those the breaker has
 * backed off, send, then ppoll() until the deadline and read answers with a
 * scatter recvmsg (header on the stack, value straight into the caller's
 * buffer: no copy). An answer for another key (a late answer to an earlier
 * lookup that timed out on this socket) is discarded and the wait goes on.
 * A timeout ends the lookup (trying the next server would double the worst
 * case); a socket error (ECONNREFUSED: an ICMP port unreachable, i.e. no
 * daemon) moves on to the next server within the same deadline. Both count
 * as breaker failures.
 *
 * Puts and removes are fire and forget: one non-blocking sendmsg (header
 * and value as two iovecs), no answer in v1. A value that does not fit one
 * datagram is refused and counted (too_large), never truncated.
 *
 * Counters live in the thread records (single writer, relaxed atomics, no
 * shared cache line on the hot path) and are summed under the list lock by
 * sc_get_stats; an exiting thread folds its counts into client->retired.
 *
 * Known limits: sc_client_free must not race with threads that used the
 * client exiting (their destructor would touch the freed client); each
 * client takes one of the process's PTHREAD_KEYS_MAX (1024) keys; after
 * fork() a child reopens its sockets on first use (the check is a getpid()
 * per call), the parent's copies are closed in the child.
 */
#include "sc_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

void sc_options_init(sc_options *opt)
{
    opt->timeout_ms = 200;
    opt->breaker_failures = 3;
    opt->backoff_min_ms = 1000;
    opt->backoff_max_ms = 30000;
}

const char *sc_result_name(sc_result result)
{
    switch (result) {
    case SC_OK:
        return "ok";
    case SC_NOT_FOUND:
        return "not found";
    case SC_TIMEOUT:
        return "timeout";
    case SC_SKIPPED:
        return "skipped";
    case SC_ERR_TOO_LARGE:
        return "too large";
    case SC_ERR_ARG:
        return "bad argument";
    case SC_ERR_SYSTEM:
        return "system error";
    }
    return "unknown";
}

/* --- per-thread state --- */

static void sc_thread_close_fds(sc_thread *t)
{
    for (size_t i = 0; i < t->client->nservers; i++) {
        if (t->fds[i] >= 0)
            close(t->fds[i]);
        t->fds[i] = -1;
    }
}

/* pthread key destructor: the thread is exiting. */
static void sc_thread_exit(void *arg)
{
    sc_thread *t = arg;
    sc_client *client = t->client;

    pthread_mutex_lock(&client->threads_lock);
    for (int c = 0; c < SC_C_COUNT; c++)
        client->retired[c] += atomic_load_explicit(&t->counters[c], memory_order_relaxed);
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        client->threads = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    pthread_mutex_unlock(&client->threads_lock);
    sc_thread_close_fds(t);
    free(t);
}

sc_thread *sc_thread_get(sc_client *client)
{
    sc_thread *t = pthread_getspecific(client->thread_key);
    int rc;

    if (t != NULL) {
        if (t->pid != getpid()) {
            /* A forked child: these sockets are shared with the parent,
             * which would read our answers. Close our copies, start over. */
            sc_thread_close_fds(t);
            t->pid = getpid();
        }
        return t;
    }
    t = calloc(1, sizeof(*t) + client->nservers * sizeof(t->fds[0]));
    if (t == NULL)
        return NULL;
    t->client = client;
    t->pid = getpid();
    for (int c = 0; c < SC_C_COUNT; c++)
        atomic_init(&t->counters[c], 0);
    for (size_t i = 0; i < client->nservers; i++)
        t->fds[i] = -1;
    rc = pthread_setspecific(client->thread_key, t);
    if (rc != 0) {
        free(t);
        errno = rc;
        return NULL;
    }
    pthread_mutex_lock(&client->threads_lock);
    t->next = client->threads;
    if (t->next != NULL)
        t->next->prev = t;
    client->threads = t;
    pthread_mutex_unlock(&client->threads_lock);
    return t;
}

void sc_count_client(sc_client *client, enum sc_counter c)
{
    sc_thread *t = sc_thread_get(client);

    if (t != NULL)
        sc_count(t, c);
}

/* The thread's socket to server i, opened on first use. */
static int sc_thread_fd(sc_thread *t, size_t i)
{
    if (t->fds[i] < 0)
        t->fds[i] = sc_udp_open(&t->client->servers[i]);
    return t->fds[i];
}

/* Errors that say something about the path to the server, not about this
 * socket: keep the socket. Anything else (EBADF...) gets a fresh one. */
static int sc_errno_is_transient(int err)
{
    return err == ECONNREFUSED || err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS ||
           err == EHOSTUNREACH || err == ENETUNREACH || err == EINTR;
}

/* Errors that blame the server (or the way to it) for the breaker. */
static int sc_errno_blames_server(int err)
{
    return err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH;
}

static void sc_thread_socket_failed(sc_thread *t, size_t i, int err)
{
    if (!sc_errno_is_transient(err) && t->fds[i] >= 0) {
        close(t->fds[i]);
        t->fds[i] = -1;
    }
}

/* --- client --- */

static void sc_set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void sc_set_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

sc_client *sc_client_new(const char *servers, const sc_options *opt, char *err, size_t errlen)
{
    sc_client *client = NULL;
    sc_options defaults;
    int rc;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (opt == NULL) {
        sc_options_init(&defaults);
        opt = &defaults;
    }
    if (opt->timeout_ms == 0) {
        sc_set_error(err, errlen, "timeout_ms must be at least 1");
        return NULL;
    }
    if (opt->breaker_failures > 0 &&
        (opt->backoff_min_ms == 0 || opt->backoff_max_ms < opt->backoff_min_ms)) {
        sc_set_error(err, errlen, "backoff_min_ms must be at least 1 and at most backoff_max_ms");
        return NULL;
    }
    client = calloc(1, sizeof(*client));
    if (client == NULL) {
        sc_set_error(err, errlen, "out of memory");
        return NULL;
    }
    client->opt = *opt;
    if (sc_servers_parse(servers, opt, &client->servers, &client->nservers, err, errlen) < 0) {
        free(client);
        return NULL;
    }
    rc = pthread_key_create(&client->thread_key, sc_thread_exit);
    if (rc != 0) {
        sc_set_error(err, errlen, "pthread_key_create: %s", strerror(rc));
        sc_servers_free(client->servers, client->nservers);
        free(client);
        return NULL;
    }
    pthread_mutex_init(&client->threads_lock, NULL);
    return client;
}

void sc_client_free(sc_client *client)
{
    sc_thread *t, *next;

    if (client == NULL)
        return;
    /* Deleting the key first means no destructor runs for it any more; the
     * records still listed belong to threads that are alive (or gone
     * without a destructor) and are freed here. */
    pthread_key_delete(client->thread_key);
    pthread_mutex_lock(&client->threads_lock);
    for (t = client->threads; t != NULL; t = next) {
        next = t->next;
        sc_thread_close_fds(t);
        free(t);
    }
    client->threads = NULL;
    pthread_mutex_unlock(&client->threads_lock);
    pthread_mutex_destroy(&client->threads_lock);
    sc_servers_free(client->servers, client->nservers);
    free(client);
}

void sc_get_stats(sc_client *client, sc_stats *out)
{
    uint64_t sum[SC_C_COUNT];

    memset(out, 0, sizeof(*out));
    if (client == NULL)
        return;
    pthread_mutex_lock(&client->threads_lock);
    for (int c = 0; c < SC_C_COUNT; c++)
        sum[c] = client->retired[c];
    for (const sc_thread *t = client->threads; t != NULL; t = t->next)
        for (int c = 0; c < SC_C_COUNT; c++)
            sum[c] += atomic_load_explicit(&t->counters[c], memory_order_relaxed);
    pthread_mutex_unlock(&client->threads_lock);
    out->lookups = sum[SC_C_LOOKUPS];
    out->hits = sum[SC_C_HITS];
    out->misses = sum[SC_C_MISSES];
    out->timeouts = sum[SC_C_TIMEOUTS];
    out->errors = sum[SC_C_ERRORS];
    out->skipped = sum[SC_C_SKIPPED];
    out->stores = sum[SC_C_STORES];
    out->removes = sum[SC_C_REMOVES];
    out->too_large = sum[SC_C_TOO_LARGE];
}

/* --- the wire: one datagram out, answers in --- */

int sc_udp_open(const sc_server *server)
{
    int fd = socket(server->addr.ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int saved;

    if (fd < 0)
        return -1;
    if (connect(fd, (const struct sockaddr *)&server->addr, server->addr_len) < 0) {
        saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int sc_send_datagram(int fd, const uint8_t *header, const uint8_t *value, size_t value_len,
                     int *stale_refusal)
{
    struct iovec iov[2];
    struct msghdr mh;
    int attempts = 0;

    memset(&mh, 0, sizeof(mh));
    iov[0].iov_base = (void *)header;
    iov[0].iov_len = PROTO_V1_HEADER_LEN;
    iov[1].iov_base = (void *)value;
    iov[1].iov_len = value_len;
    mh.msg_iov = iov;
    mh.msg_iovlen = value_len > 0 ? 2 : 1;
    *stale_refusal = 0;
    for (;;) {
        if (sendmsg(fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
            return 0; /* UDP: the whole datagram or nothing */
        if (errno == EINTR)
            continue;
        if (errno != ECONNREFUSED || ++attempts > 1)
            return -1;
        *stale_refusal = 1;
    }
}

sc_answer sc_recv_answer(int fd, const uint8_t key[SC_KEY_LEN], uint8_t *dst, size_t cap,
                         size_t *value_len)
{
    uint8_t header[PROTO_V1_HEADER_LEN];
    struct iovec iov[2];
    struct msghdr mh;
    proto_v1_msg msg;
    size_t len, landed;
    ssize_t n;
    sc_answer verdict;

    memset(&mh, 0, sizeof(mh));
    iov[0].iov_base = header;
    iov[0].iov_len = sizeof(header);
    iov[1].iov_base = dst;
    iov[1].iov_len = cap;
    mh.msg_iov = iov;
    mh.msg_iovlen = cap > 0 ? 2 : 1;
    /* MSG_TRUNC: the return value is the datagram's real length even when
     * it did not fit, which is how a too-small buffer is told apart. */
    n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? SC_ANS_AGAIN
                                                                         : SC_ANS_ERROR;
    len = (size_t)n;
    landed = len > sizeof(header) ? len - sizeof(header) : 0;
    if (landed > cap)
        landed = cap;
    if (len > PROTO_MAX_DATAGRAM ||
        proto_v1_parse_answer(header, len < sizeof(header) ? len : sizeof(header), &msg) !=
            PROTO_OK) {
        verdict = SC_ANS_MALFORMED;
    } else if (memcmp(msg.key, key, SC_KEY_LEN) != 0) {
        verdict = SC_ANS_STALE;
    } else if (msg.type == PROTO_V1_NOT_FOUND) {
        /* The parser saw only the header; the trailing-bytes rule is ours. */
        verdict = len == sizeof(header) ? SC_ANS_NOT_FOUND : SC_ANS_MALFORMED;
    } else {
        *value_len = len - sizeof(header);
        verdict = *value_len <= cap ? SC_ANS_FOUND : SC_ANS_TOO_LARGE;
    }
    if (verdict != SC_ANS_FOUND && landed > 0)
        OPENSSL_cleanse(dst, landed); /* someone's session bytes we will not use */
    return verdict;
}

/* Sends the GET on fd and waits for our answer until deadline_ns. Returns
 * FOUND, NOT_FOUND, TOO_LARGE, AGAIN (timed out) or ERROR (errno set). */
static sc_answer sc_exchange(sc_thread *t, int fd, const uint8_t *request, uint8_t *buf, size_t cap,
                             size_t *value_len, int64_t deadline_ns)
{
    const uint8_t *key = request + 4;
    int stale_refusal;

    if (sc_send_datagram(fd, request, NULL, 0, &stale_refusal) < 0)
        return SC_ANS_ERROR;
    for (;;) {
        int64_t left = deadline_ns - sc_now_ns();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        struct timespec ts;
        int rc;

        if (left <= 0)
            return SC_ANS_AGAIN;
        ts.tv_sec = (time_t)(left / 1000000000);
        ts.tv_nsec = (long)(left % 1000000000);
        rc = ppoll(&pfd, 1, &ts, NULL);
        if (rc < 0 && errno != EINTR)
            return SC_ANS_ERROR;
        if (rc <= 0)
            continue; /* interrupted, or time is up: the top of the loop decides */
        /* Drain what is queued: late answers for other keys come first. */
        for (;;) {
            sc_answer a = sc_recv_answer(fd, key, buf, cap, value_len);

            if (a == SC_ANS_STALE)
                continue;
            if (a == SC_ANS_MALFORMED) {
                sc_count(t, SC_C_ERRORS);
                continue;
            }
            if (a == SC_ANS_AGAIN)
                break;
            return a;
        }
    }
}

sc_result sc_get(sc_client *client, const uint8_t *id, size_t id_len, uint8_t *buf, size_t cap,
                 size_t *value_len)
{
    uint8_t request[PROTO_V1_HEADER_LEN], order[SC_MAX_SERVERS];
    sc_result result = SC_SKIPPED;
    int64_t now, deadline;
    int saved_errno = 0;
    sc_thread *t;
    size_t n;

    if (client == NULL || id == NULL || id_len == 0 || id_len > SC_KEY_LEN || value_len == NULL ||
        (buf == NULL && cap > 0))
        return SC_ERR_ARG;
    *value_len = 0;
    if (proto_v1_encode(request, sizeof(request), PROTO_V1_GET, 0, id, id_len, NULL, 0, NULL) !=
        PROTO_OK)
        return SC_ERR_ARG;
    t = sc_thread_get(client);
    if (t == NULL)
        return SC_ERR_SYSTEM;
    sc_count(t, SC_C_LOOKUPS);
    n = sc_servers_order(client, sc_key_hash(request + 4), order);
    now = sc_now_ns();
    deadline = now + (int64_t)client->opt.timeout_ms * 1000000;

    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        sc_breaker *breaker = &client->servers[i].breaker;
        sc_admit how = sc_breaker_admit(breaker, now, 1);
        sc_answer answer;
        int fd;

        if (how == SC_ADMIT_SKIP) {
            sc_count(t, SC_C_SKIPPED);
            continue;
        }
        if (result == SC_ERR_SYSTEM && now >= deadline) {
            sc_breaker_release(breaker, how); /* an earlier server's error used the time up */
            break;
        }
        fd = sc_thread_fd(t, i);
        if (fd < 0) {
            saved_errno = errno; /* a local failure (EMFILE...): not the server's fault */
            sc_breaker_release(breaker, how);
            sc_count(t, SC_C_ERRORS);
            result = SC_ERR_SYSTEM;
            continue;
        }
        answer = sc_exchange(t, fd, request, buf, cap, value_len, deadline);
        now = sc_now_ns();
        switch (answer) {
        case SC_ANS_FOUND:
            sc_breaker_success(breaker, how, &client->opt);
            sc_count(t, SC_C_HITS);
            return SC_OK;
        case SC_ANS_NOT_FOUND:
            sc_breaker_success(breaker, how, &client->opt);
            sc_count(t, SC_C_MISSES);
            return SC_NOT_FOUND;
        case SC_ANS_TOO_LARGE:
            /* The server has it; the caller's buffer is short (*value_len says how short). */
            sc_breaker_success(breaker, how, &client->opt);
            sc_count(t, SC_C_HITS);
            return SC_ERR_TOO_LARGE;
        case SC_ANS_AGAIN:
            sc_breaker_failure(breaker, how, now, &client->opt);
            sc_count(t, SC_C_TIMEOUTS);
            return SC_TIMEOUT;
        default:
            saved_errno = errno;
            if (sc_errno_blames_server(saved_errno))
                sc_breaker_failure(breaker, how, now, &client->opt);
            else
                sc_breaker_release(breaker, how);
            sc_thread_socket_failed(t, i, saved_errno);
            sc_count(t, SC_C_ERRORS);
            result = SC_ERR_SYSTEM;
            break;
        }
    }
    errno = saved_errno;
    return result;
}

/* PUT and REMOVE: one datagram to the first server the breaker lets
 * through, no answer awaited. */
static sc_result sc_send_oneway(sc_client *client, sc_thread *t, const uint8_t *header,
                                const uint8_t *value, size_t value_len, enum sc_counter sent)
{
    uint8_t order[SC_MAX_SERVERS];
    sc_result result = SC_SKIPPED;
    int saved_errno = 0;
    int64_t now = sc_now_ns();
    size_t n = sc_servers_order(client, sc_key_hash(header + 4), order);

    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        sc_breaker *breaker = &client->servers[i].breaker;
        int fd, stale_refusal, rc;

        if (sc_breaker_admit(breaker, now, 0) == SC_ADMIT_SKIP) {
            sc_count(t, SC_C_SKIPPED);
            continue;
        }
        fd = sc_thread_fd(t, i);
        if (fd < 0) {
            saved_errno = errno;
            sc_count(t, SC_C_ERRORS);
            result = SC_ERR_SYSTEM;
            continue;
        }
        rc = sc_send_datagram(fd, header, value, value_len, &stale_refusal);
        if (stale_refusal) {
            /* An earlier datagram to this server was refused: the only news
             * fire-and-forget traffic ever gets that nobody listens. */
            sc_count(t, SC_C_ERRORS);
            sc_breaker_failure(breaker, SC_ADMIT_NORMAL, now, &client->opt);
        }
        if (rc == 0) {
            sc_count(t, sent);
            return SC_OK;
        }
        saved_errno = errno;
        if (sc_errno_blames_server(saved_errno) && !stale_refusal)
            sc_breaker_failure(breaker, SC_ADMIT_NORMAL, now, &client->opt);
        sc_thread_socket_failed(t, i, saved_errno);
        sc_count(t, SC_C_ERRORS);
        result = SC_ERR_SYSTEM;
    }
    errno = saved_errno;
    return result;
}

sc_result sc_put(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                 size_t value_len, unsigned ttl_seconds)
{
    uint8_t header[PROTO_V1_HEADER_LEN];
    sc_thread *t;

    if (client == NULL || id == NULL || id_len == 0 || id_len > SC_KEY_LEN || value == NULL ||
        value_len == 0)
        return SC_ERR_ARG;
    t = sc_thread_get(client);
    if (t == NULL)
        return SC_ERR_SYSTEM;
    if (value_len > PROTO_V1_MAX_VALUE) {
        sc_count(t, SC_C_TOO_LARGE);
        return SC_ERR_TOO_LARGE;
    }
    if (ttl_seconds > SC_MAX_TTL)
        ttl_seconds = SC_MAX_TTL;
    if (proto_v1_encode(header, sizeof(header), PROTO_V1_NEW, (uint16_t)ttl_seconds, id, id_len,
                        NULL, 0, NULL) != PROTO_OK)
        return SC_ERR_ARG;
    return sc_send_oneway(client, t, header, value, value_len, SC_C_STORES);
}

sc_result sc_remove(sc_client *client, const uint8_t *id, size_t id_len)
{
    uint8_t header[PROTO_V1_HEADER_LEN];
    sc_thread *t;

    if (client == NULL || id == NULL || id_len == 0 || id_len > SC_KEY_LEN)
        return SC_ERR_ARG;
    if (proto_v1_encode(header, sizeof(header), PROTO_V1_REMOVE, 0, id, id_len, NULL, 0, NULL) !=
        PROTO_OK)
        return SC_ERR_ARG;
    t = sc_thread_get(client);
    if (t == NULL)
        return SC_ERR_SYSTEM;
    return sc_send_oneway(client, t, header, NULL, 0, SC_C_REMOVES);
}
