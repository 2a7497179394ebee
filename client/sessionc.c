/* sessionc.c — the libsessionc client: per-thread state, the raw
 * operations, and the counters.
 *
 * Sockets: every thread that uses a client gets its own connected,
 * non-blocking UDP socket per server, opened on first use and kept until the
 * thread exits (a pthread_key_t per client, whose destructor closes them) or
 * the client is freed. So the hot path never creates a socket (stunnel's
 * one-socket-per-request costs a socket(), a connect() and a close() on
 * every lookup), no two threads ever share a socket (an answer can only be
 * read by the thread that asked), and the kernel filters out datagrams from
 * any other address because the socket is connected. The same thread record
 * holds what v2 needs per thread without a lock: the request-ID counter, the
 * sealer (not thread-safe), and the datagram buffers. Cost: one descriptor
 * per (thread, server), and 64 KiB of receive buffer address space per
 * thread; the cheaper alternative not taken, one socket shared by all
 * threads with a demultiplexing reader, needs a lock or a reader thread on
 * the hot path.
 *
 * An operation (sc_run): build the wire key (namespace || ID in v2) and hash
 * it once, build the datagram once (sc_wire.c: v1, v2 plain or sealed), walk
 * the servers in the key's rendezvous order skipping those the breaker has
 * backed off, send, and for a get (or an acknowledged v2 put/delete) take
 * the answer (sc_wait_answer: a receive at once, then a blocking receive
 * under SO_RCVTIMEO, then ppoll() until the exact deadline), discarding late
 * answers to earlier requests. A
 * timeout ends the operation (trying the next server would double the worst
 * case); a socket error (ECONNREFUSED: an ICMP port unreachable, i.e. no
 * daemon) moves on to the next server within the same deadline. Both count
 * as breaker failures.
 *
 * Takes (atomic get-and-delete) and adds (add-if-absent), v2 only, always
 * wait for their answer like a get; a daemon whose shared store is down
 * answers UNAVAILABLE, which ends the operation without blaming the daemon
 * (no breaker failure, no other server: they share that store).
 *
 * Puts and removes from the SSL callbacks and the raw sc_put/sc_remove are
 * fire and forget: one non-blocking send, flag NO_REPLY in v2 (v1 has no
 * answer to them at all). A value that does not fit one datagram is refused
 * and counted (too_large), never truncated.
 *
 * Counters live in the thread records (single writer, relaxed atomics, no
 * shared cache line on the hot path) and are summed under the list lock by
 * sc_get_stats; an exiting thread folds its counts into client->retired.
 *
 * Known limits: sc_client_free must not race with threads that used the
 * client exiting (their destructor would touch the freed client); each
 * client takes one of the process's PTHREAD_KEYS_MAX (1024) keys; after
 * fork() a child reopens its sockets on first use, the parent's copies are
 * closed in the child (detected by a pthread_atfork generation counter, so
 * not after a raw clone() or vfork() system call: see sc_thread_get). The cluster keys
 * sit in the client (and in every thread's sealer) in ordinary memory, not
 * mlock()ed: a swapped-out page can hold them.
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
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "keyfile.h"

void sc_options_init(sc_options *opt)
{
    opt->timeout_ms = 200;
    opt->breaker_failures = 3;
    opt->backoff_min_ms = 1000;
    opt->backoff_max_ms = 30000;
    opt->protocol = 2;
    opt->key_file = NULL;
    opt->next_key_file = NULL;
    opt->window_ms = PROTO_V2_DEFAULT_WINDOW_MS;
    memset(opt->default_namespace, 0, sizeof(opt->default_namespace));
    opt->anti_replay = 0;
    opt->ticket_refresh_ms = 0;
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
    case SC_REFUSED:
        return "refused";
    case SC_EXISTS:
        return "exists";
    case SC_UNAVAILABLE:
        return "unavailable";
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

/* Everything a thread record owns; the buffers were wiped after each use. */
static void sc_thread_free(sc_thread *t)
{
    sc_thread_close_fds(t);
    proto_v2_sealer_free(t->sealer);
    free(t->sbuf);
    free(t->rbuf);
    free(t);
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
    sc_thread_free(t);
}

/* Fork detection. A thread record remembers the generation its sockets
 * belong to; the child of every fork() bumps the generation in a
 * pthread_atfork handler (registered once, by the first sc_client_new, so
 * before any record exists), and a record of an older generation closes its
 * sockets, which the parent shares, on its next use. This replaces a
 * getpid() per operation: glibc no longer caches the PID, so that was a
 * system call (~1 µs on a VM) on every lookup and store. Known limit: a
 * child made with a raw clone() or vfork() system call runs no atfork
 * handler; such a child must exec or _exit without using the client (which
 * vfork requires anyway). The handler only does a relaxed atomic increment:
 * async-signal-safe, as a fork from a signal handler needs. */
static _Atomic unsigned sc_fork_generation;
static pthread_once_t sc_atfork_once = PTHREAD_ONCE_INIT;
static int sc_atfork_rc = -1;

static void sc_atfork_child(void)
{
    atomic_fetch_add_explicit(&sc_fork_generation, 1, memory_order_relaxed);
}

static void sc_atfork_register(void)
{
    sc_atfork_rc = pthread_atfork(NULL, NULL, sc_atfork_child);
}

sc_thread *sc_thread_get(sc_client *client)
{
    sc_thread *t = pthread_getspecific(client->thread_key);
    /* Relaxed: in a child the handler ran on this very thread. */
    unsigned generation = atomic_load_explicit(&sc_fork_generation, memory_order_relaxed);
    int rc;

    if (t != NULL) {
        if (t->fork_generation != generation) {
            /* A forked child: these sockets are shared with the parent,
             * which would read our answers. Close our copies, start over. */
            sc_thread_close_fds(t);
            t->fork_generation = generation;
        }
        return t;
    }
    t = calloc(1, sizeof(*t) + client->nservers * sizeof(t->fds[0]));
    if (t == NULL)
        return NULL;
    t->client = client;
    t->fork_generation = generation;
    /* A random start: IDs of a thread that came before on a recycled port
     * are unlikely to match. The clock is a fallback, not a secret. */
    if (RAND_bytes((unsigned char *)&t->next_request_id, sizeof(t->next_request_id)) != 1)
        t->next_request_id = (uint32_t)sc_now_ns();
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
        t->fds[i] = sc_udp_open(&t->client->servers[i], sc_rcvtimeo_ms(t->client->opt.timeout_ms));
    return t->fds[i];
}

/* Errors that say something about the path to the server, not about this
 * socket: keep the socket. Anything else (EBADF...) gets a fresh one. */
static int sc_errno_is_transient(int err)
{
    return err == ECONNREFUSED || err == EAGAIN || err == EWOULDBLOCK || err == ENOBUFS ||
           err == EHOSTUNREACH || err == ENETUNREACH || err == EINTR;
}

int sc_errno_blames_server(int err)
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

/* The option checks that need no file and no network. */
static int sc_options_check(const sc_options *opt, char *err, size_t errlen)
{
    if (opt->timeout_ms == 0) {
        sc_set_error(err, errlen, "timeout_ms must be at least 1");
        return -1;
    }
    if (opt->breaker_failures > 0 &&
        (opt->backoff_min_ms == 0 || opt->backoff_max_ms < opt->backoff_min_ms)) {
        sc_set_error(err, errlen, "backoff_min_ms must be at least 1 and at most backoff_max_ms");
        return -1;
    }
    if (opt->protocol != 1 && opt->protocol != 2) {
        sc_set_error(err, errlen, "protocol must be 1 or 2, not %u", opt->protocol);
        return -1;
    }
    if (opt->protocol == 1 && (opt->key_file != NULL || opt->next_key_file != NULL)) {
        sc_set_error(err, errlen, "protocol 1 cannot be sealed: no key file with protocol 1");
        return -1;
    }
    if (opt->next_key_file != NULL && opt->key_file == NULL) {
        sc_set_error(err, errlen, "next_key_file needs key_file");
        return -1;
    }
    if (opt->window_ms == 0) {
        sc_set_error(err, errlen, "window_ms must be at least 1");
        return -1;
    }
    if (opt->protocol == 1 && opt->anti_replay) {
        sc_set_error(err, errlen, "anti_replay needs protocol 2 (take and add are v2 only)");
        return -1;
    }
    return 0;
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
    if (sc_options_check(opt, err, errlen) < 0)
        return NULL;
    pthread_once(&sc_atfork_once, sc_atfork_register);
    if (sc_atfork_rc != 0) {
        sc_set_error(err, errlen, "pthread_atfork: %s", strerror(sc_atfork_rc));
        return NULL;
    }
    client = calloc(1, sizeof(*client));
    if (client == NULL) {
        sc_set_error(err, errlen, "out of memory");
        return NULL;
    }
    client->opt = *opt;
    client->opt.key_file = client->opt.next_key_file = NULL; /* the caller's strings */
    if (opt->key_file != NULL) {
        if (keyfile_load(opt->key_file, client->key, err, errlen) < 0)
            goto fail;
        client->has_key = 1;
    }
    if (opt->next_key_file != NULL) {
        if (keyfile_load(opt->next_key_file, client->next_key, err, errlen) < 0)
            goto fail;
        client->has_next_key = 1;
    }
    if (sc_servers_parse(servers, opt, &client->servers, &client->nservers, err, errlen) < 0)
        goto fail;
    rc = pthread_key_create(&client->thread_key, sc_thread_exit);
    if (rc != 0) {
        sc_set_error(err, errlen, "pthread_key_create: %s", strerror(rc));
        sc_servers_free(client->servers, client->nservers);
        goto fail;
    }
    if (sc_tickets_init(client) < 0) {
        sc_set_error(err, errlen, "cannot initialise the ticket-key lock");
        pthread_key_delete(client->thread_key);
        sc_servers_free(client->servers, client->nservers);
        goto fail;
    }
    pthread_mutex_init(&client->threads_lock, NULL);
    return client;

fail:
    OPENSSL_cleanse(client->key, sizeof(client->key));
    OPENSSL_cleanse(client->next_key, sizeof(client->next_key));
    free(client);
    return NULL;
}

void sc_client_free(sc_client *client)
{
    sc_thread *t, *next;

    if (client == NULL)
        return;
    /* The refresh thread uses the client like any other thread: it goes
     * first, and its thread record folds into retired when it exits. */
    sc_tickets_shutdown(client);
    /* Deleting the key first means no destructor runs for it any more; the
     * records still listed belong to threads that are alive (or gone
     * without a destructor) and are freed here. */
    pthread_key_delete(client->thread_key);
    pthread_mutex_lock(&client->threads_lock);
    for (t = client->threads; t != NULL; t = next) {
        next = t->next;
        sc_thread_free(t);
    }
    client->threads = NULL;
    pthread_mutex_unlock(&client->threads_lock);
    pthread_mutex_destroy(&client->threads_lock);
    sc_servers_free(client->servers, client->nservers);
    OPENSSL_cleanse(client->key, sizeof(client->key));
    OPENSSL_cleanse(client->next_key, sizeof(client->next_key));
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
    out->auth_failures = sum[SC_C_AUTH_FAILURES];
    out->late_answers = sum[SC_C_LATE_ANSWERS];
    out->tickets_issued = sum[SC_C_TICKETS_ISSUED];
    out->tickets_no_key = sum[SC_C_TICKETS_NO_KEY];
    out->tickets_current = sum[SC_C_TICKETS_CURRENT];
    out->tickets_old = sum[SC_C_TICKETS_OLD];
    out->tickets_next = sum[SC_C_TICKETS_NEXT];
    out->tickets_unknown = sum[SC_C_TICKETS_UNKNOWN];
    out->tickets_renewed = sum[SC_C_TICKETS_RENEWED];
    out->ring_refreshes = sum[SC_C_RING_REFRESHES];
    out->ring_refresh_failures = sum[SC_C_RING_REFRESH_FAILURES];
    out->early_accepted = sum[SC_C_EARLY_ACCEPTED];
    out->early_replayed = sum[SC_C_EARLY_REPLAYED];
    out->early_unavailable = sum[SC_C_EARLY_UNAVAILABLE];
    out->takes = sum[SC_C_TAKES];
}

/* --- operations --- */

/* Room for a request of `need` bytes in the thread's send buffer, grown in
 * 4 KiB steps; the buffer is wiped after each use, so the old one is not. */
static uint8_t *sc_thread_sbuf(sc_thread *t, size_t need)
{
    if (t->sbuf_cap < need) {
        size_t cap = (need + 4095) & ~(size_t)4095;
        uint8_t *bigger = malloc(cap);

        if (bigger == NULL)
            return NULL;
        free(t->sbuf);
        t->sbuf = bigger;
        t->sbuf_cap = cap;
    }
    return t->sbuf;
}

void sc_reply_done(const sc_reply *reply)
{
    if (reply->datagram != NULL)
        OPENSSL_cleanse(reply->datagram, reply->datagram_len);
}

/* Sends the request to the first server the breakers let through and waits
 * for its answer. `sent` is the counter a successful send bumps (SC_C_COUNT:
 * none). */
static sc_result sc_call(sc_client *client, sc_thread *t, const sc_request *req,
                         const uint8_t *dgram, size_t len, enum sc_counter sent, sc_reply *reply)
{
    uint8_t order[SC_MAX_SERVERS];
    sc_result result = SC_SKIPPED;
    int64_t now = sc_now_ns();
    int64_t deadline = now + (int64_t)client->opt.timeout_ms * 1000000;
    int saved_errno = 0;
    size_t n = sc_servers_order(client, req->key->hash, order);
    int lookup = req->op == PROTO_V2_GET || req->op == PROTO_V2_TAKE;

    for (size_t k = 0; k < n; k++) {
        size_t i = order[k];
        sc_breaker *breaker = &client->servers[i].breaker;
        sc_admit how = sc_breaker_admit(breaker, now, 1);
        sc_answer answer;
        int fd, stale_refusal;

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
        if (sc_send_datagram(fd, dgram, len, &stale_refusal) < 0) {
            answer = SC_ANS_ERROR;
        } else {
            if (sent != SC_C_COUNT)
                sc_count(t, sent);
            answer = sc_wait_answer(t, fd, req, reply, deadline);
        }
        now = sc_now_ns();
        switch (answer) {
        case SC_ANS_OK:
            sc_breaker_success(breaker, how, &client->opt);
            if (lookup)
                sc_count(t, SC_C_HITS);
            return SC_OK;
        case SC_ANS_NOT_FOUND:
            sc_breaker_success(breaker, how, &client->opt);
            if (lookup)
                sc_count(t, SC_C_MISSES);
            return SC_NOT_FOUND;
        case SC_ANS_REFUSED:
            /* It answered. A GET is refused only in plaintext from a source
             * that is not loopback (the daemon will not amplify): for a
             * handshake that is a miss. */
            sc_breaker_success(breaker, how, &client->opt);
            if (lookup)
                sc_count(t, SC_C_MISSES);
            return SC_REFUSED;
        case SC_ANS_EXISTS:
            sc_breaker_success(breaker, how, &client->opt);
            return SC_EXISTS;
        case SC_ANS_UNAVAILABLE:
            /* The daemon is fine, its shared store is not: no breaker
             * failure, and no other server either (they share the store
             * that failed, or, without one, do not hold this key). */
            sc_breaker_success(breaker, how, &client->opt);
            if (lookup)
                sc_count(t, SC_C_MISSES);
            return SC_UNAVAILABLE;
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

/* A put or remove nobody waits for: one datagram to the first server the
 * breaker lets through. */
static sc_result sc_send_oneway(sc_client *client, sc_thread *t, const sc_key *key,
                                const uint8_t *dgram, size_t len, enum sc_counter sent)
{
    uint8_t order[SC_MAX_SERVERS];
    sc_result result = SC_SKIPPED;
    int saved_errno = 0;
    int64_t now = sc_now_ns();
    size_t n = sc_servers_order(client, key->hash, order);

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
        rc = sc_send_datagram(fd, dgram, len, &stale_refusal);
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

sc_result sc_run(sc_client *client, const sc_op *op, sc_reply *reply)
{
    int atomic_op = op->op == PROTO_V2_TAKE || op->op == PROTO_V2_ADD;
    int wait = op->op == PROTO_V2_GET || atomic_op || op->wait;
    enum sc_counter sent;
    sc_request req;
    sc_result result;
    sc_key key;
    sc_thread *t;
    uint8_t *dgram;
    size_t len = 0;

    memset(reply, 0, sizeof(*reply));
    if (client == NULL ||
        (op->op != PROTO_V2_GET && op->op != PROTO_V2_PUT && op->op != PROTO_V2_DEL && !atomic_op))
        return SC_ERR_ARG;
    if (wait && op->op != PROTO_V2_GET && client->opt.protocol == 1)
        return SC_ERR_ARG; /* v1 never answers a put or a remove, and has no take or add */
    if ((op->op == PROTO_V2_PUT || op->op == PROTO_V2_ADD) &&
        (op->value == NULL || op->value_len == 0))
        return SC_ERR_ARG;
    if (sc_key_make(client, op->ns, op->id, op->id_len, &key) < 0)
        return SC_ERR_ARG;
    t = sc_thread_get(client);
    if (t == NULL)
        return SC_ERR_SYSTEM;
    if (op->op == PROTO_V2_GET || op->op == PROTO_V2_TAKE)
        sc_count(t, SC_C_LOOKUPS);
    if (op->value_len > sc_max_value(client)) {
        sc_count(t, SC_C_TOO_LARGE);
        return SC_ERR_TOO_LARGE;
    }
    dgram = sc_thread_sbuf(t, sc_build_size(client, key.len, op->value_len));
    if (dgram == NULL) {
        sc_count(t, SC_C_ERRORS);
        errno = ENOMEM;
        return SC_ERR_SYSTEM;
    }
    req.op = op->op;
    req.key = &key;
    req.request_id = 0;
    result = sc_build(t, &req, wait ? 0 : PROTO_V2_F_NO_REPLY, op->value, op->value_len, op->ttl,
                      dgram, t->sbuf_cap, &len);
    if (result != SC_OK) {
        sc_count(t, result == SC_ERR_TOO_LARGE ? SC_C_TOO_LARGE : SC_C_ERRORS);
        return result;
    }
    sent = op->op == PROTO_V2_PUT    ? SC_C_STORES
           : op->op == PROTO_V2_DEL  ? SC_C_REMOVES
           : op->op == PROTO_V2_TAKE ? SC_C_TAKES
                                     : SC_C_COUNT;
    if (wait)
        result = sc_call(client, t, &req, dgram, len, sent, reply);
    else
        result = sc_send_oneway(client, t, &key, dgram, len, sent);
    OPENSSL_cleanse(dgram, len);
    return result;
}

/* --- the public raw operations --- */

/* GET or TAKE into the caller's buffer. */
static sc_result sc_fetch(sc_client *client, uint8_t op_code, const uint8_t *id, size_t id_len,
                          uint8_t *buf, size_t cap, size_t *value_len)
{
    sc_op op = {.op = op_code, .id = id, .id_len = id_len};
    sc_reply reply;
    sc_result r;

    if (client == NULL || value_len == NULL || (buf == NULL && cap > 0))
        return SC_ERR_ARG;
    *value_len = 0;
    op.ns = client->opt.default_namespace;
    r = sc_run(client, &op, &reply);
    if (r != SC_OK)
        return r;
    /* The server has it; a short buffer is the caller's (the size is told). */
    *value_len = reply.value_len;
    if (reply.value_len > cap)
        r = SC_ERR_TOO_LARGE;
    else if (reply.value_len > 0)
        memcpy(buf, reply.value, reply.value_len);
    sc_reply_done(&reply);
    return r;
}

sc_result sc_get(sc_client *client, const uint8_t *id, size_t id_len, uint8_t *buf, size_t cap,
                 size_t *value_len)
{
    return sc_fetch(client, PROTO_V2_GET, id, id_len, buf, cap, value_len);
}

sc_result sc_take(sc_client *client, const uint8_t *id, size_t id_len, uint8_t *buf, size_t cap,
                  size_t *value_len)
{
    return sc_fetch(client, PROTO_V2_TAKE, id, id_len, buf, cap, value_len);
}

static sc_result sc_store(sc_client *client, uint8_t op_code, const uint8_t *id, size_t id_len,
                          const uint8_t *value, size_t value_len, unsigned ttl_seconds, int wait)
{
    sc_op op = {.op = op_code,
                .id = id,
                .id_len = id_len,
                .value = value,
                .value_len = value_len,
                .ttl = ttl_seconds,
                .wait = wait};
    sc_reply reply;
    sc_result r;

    if (client == NULL)
        return SC_ERR_ARG;
    op.ns = client->opt.default_namespace;
    r = sc_run(client, &op, &reply);
    sc_reply_done(&reply);
    return r;
}

sc_result sc_put(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                 size_t value_len, unsigned ttl_seconds)
{
    return sc_store(client, PROTO_V2_PUT, id, id_len, value, value_len, ttl_seconds, 0);
}

sc_result sc_put_wait(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                      size_t value_len, unsigned ttl_seconds)
{
    return sc_store(client, PROTO_V2_PUT, id, id_len, value, value_len, ttl_seconds, 1);
}

sc_result sc_add(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                 size_t value_len, unsigned ttl_seconds)
{
    return sc_store(client, PROTO_V2_ADD, id, id_len, value, value_len, ttl_seconds, 1);
}

static sc_result sc_delete(sc_client *client, const uint8_t *id, size_t id_len, int wait)
{
    sc_op op = {.op = PROTO_V2_DEL, .id = id, .id_len = id_len, .wait = wait};
    sc_reply reply;
    sc_result r;

    if (client == NULL)
        return SC_ERR_ARG;
    op.ns = client->opt.default_namespace;
    r = sc_run(client, &op, &reply);
    sc_reply_done(&reply);
    return r;
}

sc_result sc_remove(sc_client *client, const uint8_t *id, size_t id_len)
{
    return sc_delete(client, id, id_len, 0);
}

sc_result sc_remove_wait(sc_client *client, const uint8_t *id, size_t id_len)
{
    return sc_delete(client, id, id_len, 1);
}

/* --- tools: one server, no breaker --- */

size_t sc_server_count(const sc_client *client)
{
    return client != NULL ? client->nservers : 0;
}

const char *sc_server_name(const sc_client *client, size_t server)
{
    return client != NULL && server < client->nservers ? client->servers[server].name : NULL;
}

/* One keyless request to one server, whatever its breaker says: a tool
 * wants to know how the server is, not to be protected from it (the ticket
 * ring fetch judges the breaker itself). */
sc_result sc_call_server(sc_client *client, size_t server, uint8_t op_code, int64_t deadline_ns,
                         sc_reply *reply, uint64_t *rtt_ns)
{
    uint8_t dgram[SC_SMALL_DATAGRAM];
    sc_request req = {.op = op_code};
    int64_t start;
    size_t len = 0;
    sc_result r;
    sc_answer a;
    sc_thread *t;
    int fd, stale_refusal;

    memset(reply, 0, sizeof(*reply));
    if (client == NULL || server >= client->nservers || client->opt.protocol == 1)
        return SC_ERR_ARG;
    t = sc_thread_get(client);
    if (t == NULL)
        return SC_ERR_SYSTEM;
    fd = sc_thread_fd(t, server);
    if (fd < 0)
        return SC_ERR_SYSTEM;
    r = sc_build(t, &req, 0, NULL, 0, 0, dgram, sizeof(dgram), &len);
    if (r != SC_OK)
        return r;
    start = sc_now_ns();
    if (sc_send_datagram(fd, dgram, len, &stale_refusal) < 0)
        a = SC_ANS_ERROR;
    else
        a = sc_wait_answer(t, fd, &req, reply, deadline_ns);
    OPENSSL_cleanse(dgram, len);
    switch (a) {
    case SC_ANS_OK:
        if (rtt_ns != NULL)
            *rtt_ns = (uint64_t)(sc_now_ns() - start);
        return SC_OK;
    case SC_ANS_AGAIN:
        sc_count(t, SC_C_TIMEOUTS);
        return SC_TIMEOUT;
    case SC_ANS_NOT_FOUND:
    case SC_ANS_REFUSED:
    case SC_ANS_EXISTS: /* no daemon says that to a keyless request; a refusal */
        return SC_REFUSED;
    case SC_ANS_UNAVAILABLE:
        return SC_UNAVAILABLE;
    default: {
        int saved = errno;

        sc_thread_socket_failed(t, server, saved);
        sc_count(t, SC_C_ERRORS);
        errno = saved;
        return SC_ERR_SYSTEM;
    }
    }
}

static int64_t sc_deadline(const sc_client *client)
{
    return sc_now_ns() + (int64_t)client->opt.timeout_ms * 1000000;
}

sc_result sc_ping(sc_client *client, size_t server, uint64_t *rtt_ns)
{
    sc_reply reply;
    sc_result r;

    if (client == NULL)
        return SC_ERR_ARG;
    r = sc_call_server(client, server, PROTO_V2_PING, sc_deadline(client), &reply, rtt_ns);

    sc_reply_done(&reply);
    return r;
}

sc_result sc_server_stats(sc_client *client, size_t server, char *buf, size_t cap, size_t *len)
{
    sc_reply reply;
    sc_result r;

    if (len == NULL || (buf == NULL && cap > 0))
        return SC_ERR_ARG;
    *len = 0;
    if (client == NULL)
        return SC_ERR_ARG;
    r = sc_call_server(client, server, PROTO_V2_STATS, sc_deadline(client), &reply, NULL);
    if (r == SC_OK) {
        *len = reply.value_len;
        if (reply.value_len + 1 > cap) {
            r = SC_ERR_TOO_LARGE;
        } else {
            if (reply.value_len > 0)
                memcpy(buf, reply.value, reply.value_len);
            buf[reply.value_len] = '\0';
        }
    }
    sc_reply_done(&reply);
    return r;
}
