/* sc_async.c — the event-loop mode (SC_ATTACH_ASYNC): session lookups that
 * never block the thread running the handshake.
 *
 * Why a ClientHello callback and not SSL_magic_pending_session_ptr(): that
 * pointer and SSL_ERROR_PENDING_SESSION exist in BoringSSL and Tongsuo, not
 * in OpenSSL (3.0 has neither). OpenSSL's way to suspend a server handshake
 * early is the ClientHello callback returning SSL_CLIENT_HELLO_RETRY:
 * SSL_do_handshake then fails with SSL_ERROR_WANT_CLIENT_HELLO_CB and runs
 * the callback again on the next call. That callback runs before OpenSSL
 * looks the session up, so it prefetches:
 *
 * 1. first call: work out which ID OpenSSL will look up (below), send the GET
 *    on a socket owned by this SSL's pending state (SSL ex_data, freed by
 *    SSL_free through the index's free callback), return RETRY;
 * 2. later calls: non-blocking receive; the answer (found or not) or the
 *    deadline ends the lookup and the callback returns SUCCESS, otherwise
 *    RETRY again;
 * 3. OpenSSL goes on, calls the get-session callback, which hands over the
 *    prefetched session if the ID matches, else NULL (a full handshake). It
 *    never sends anything itself.
 *
 * Which ID: if the ClientHello offers TLS 1.3 and this SSL allows it, the
 * handshake will be TLS 1.3 and OpenSSL looks up the first pre_shared_key
 * identity, but only a 32-byte one (a stateful ticket: the server sets
 * SSL_OP_NO_TICKET); stateless tickets are longer and never reach the
 * cache. Otherwise (TLS 1.2 and below) it looks up the legacy session ID,
 * unless the client sent a ticket the server will decrypt instead. The
 * guess costs nothing when wrong: the get callback compares IDs.
 *
 * The fd to wait on is the pending state's own connected socket: an event
 * loop can wait on it alone, and only this SSL's answer arrives there.
 * Cost: a socket() + connect() + close() per asynchronous lookup (a few
 * microseconds); sharing the thread's socket would need a demultiplexer
 * that hands answers to the right SSL (v2's request IDs would make that
 * possible; not done, the per-lookup socket is simpler and fast enough).
 *
 * The wire is the blocking mode's (sc_wire.c): v2 by default, the request
 * ID taken from the counter of the thread that starts the lookup, sealed
 * with the key if there is one; answers are judged by sc_judge with the
 * sealer of whichever thread runs the callback at the time (sealers are per
 * thread, and opening needs no state from sealing). An answer is received
 * whole into a buffer of the pending state sized with a MSG_PEEK first, so
 * a session of any size arrives in one round trip.
 *
 * With anti_replay, a lookup for a TLS 1.3 handshake is a TAKE instead of a
 * GET (as in the blocking mode): the entry is gone from the cluster once
 * this handshake has it, even when the handshake then fails.
 *
 * Known limits: OpenSSL has a single ClientHello callback per SSL_CTX, so
 * async mode takes it; an application with its own calls
 * sc_client_hello_cb from it. The internal session cache is still searched
 * by OpenSSL after our prefetch, so a lookup is sent even when it would
 * have hit locally. A lookup is not retried on another server after a
 * timeout (same rule as the blocking mode); after a socket error it is.
 */
#include "sc_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/tls1.h>

enum sc_pending_state {
    SC_PENDING_SENT = 1, /* a GET is out; fd is open */
    SC_PENDING_DONE,     /* answered, timed out or given up; fd is closed */
};

typedef struct sc_pending {
    sc_client *client;
    enum sc_pending_state state;
    int fd;
    int64_t deadline_ns;
    uint8_t id[SC_KEY_LEN]; /* the session ID looked up */
    size_t id_len;
    sc_key key;                         /* its wire key */
    sc_request req;                     /* req.key points at key */
    uint8_t request[SC_SMALL_DATAGRAM]; /* the GET datagram, sent again on failover */
    size_t request_len;
    uint8_t order[SC_MAX_SERVERS]; /* servers in the key's order */
    size_t norder, next;           /* next: the first not yet tried */
    size_t server;                 /* the one asked now */
    sc_admit how;
    int found;
    uint8_t *buf; /* the answer, received whole */
    size_t buf_cap;
    sc_reply reply; /* found: the value inside buf */
} sc_pending;

static void sc_pending_close(sc_pending *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
}

static void sc_pending_destroy(sc_pending *p)
{
    if (p == NULL)
        return;
    if (p->state == SC_PENDING_SENT)
        sc_breaker_release(&p->client->servers[p->server].breaker, p->how);
    sc_pending_close(p);
    if (p->buf != NULL) {
        OPENSSL_cleanse(p->buf, p->buf_cap);
        free(p->buf);
    }
    free(p);
}

static void sc_pending_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                               void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    sc_pending_destroy(ptr);
}

int sc_async_new_index(void)
{
    return SSL_get_ex_new_index(0, NULL, NULL, NULL, sc_pending_free_cb);
}

static void sc_pending_finish(sc_pending *p)
{
    sc_pending_close(p);
    p->state = SC_PENDING_DONE;
}

/* Sends the GET to the next server the breakers let through. Leaves the
 * state SENT, or DONE (a miss) when no server could be asked. */
static void sc_pending_send(sc_pending *p, sc_thread *t)
{
    sc_client *client = p->client;
    int64_t now = sc_now_ns();

    while (p->next < p->norder && now < p->deadline_ns) {
        size_t i = p->order[p->next++];
        sc_breaker *breaker = &client->servers[i].breaker;
        sc_admit how = sc_breaker_admit(breaker, now, 1);
        int stale_refusal, err;

        if (how == SC_ADMIT_SKIP) {
            sc_count(t, SC_C_SKIPPED);
            continue;
        }
        p->fd = sc_udp_open(&client->servers[i], 0);
        if (p->fd >= 0 &&
            sc_send_datagram(p->fd, p->request, p->request_len, &stale_refusal) == 0) {
            p->server = i;
            p->how = how;
            p->state = SC_PENDING_SENT;
            return;
        }
        err = errno;
        sc_count(t, SC_C_ERRORS);
        if (err == ECONNREFUSED || err == EHOSTUNREACH || err == ENETUNREACH)
            sc_breaker_failure(breaker, how, now, &client->opt);
        else
            sc_breaker_release(breaker, how);
        sc_pending_close(p);
    }
    sc_pending_finish(p);
}

/* Receives one queued datagram whole into p->buf and judges it. */
static sc_answer sc_pending_recv(sc_pending *p, sc_thread *t)
{
    ssize_t n = recv(p->fd, NULL, 0, MSG_PEEK | MSG_TRUNC | MSG_DONTWAIT);
    size_t need;
    sc_answer verdict;

    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? SC_ANS_AGAIN
                                                                         : SC_ANS_ERROR;
    need = (size_t)n;
    if (need > PROTO_MAX_DATAGRAM) {
        (void)recv(p->fd, NULL, 0, MSG_DONTWAIT); /* drop it unread */
        return SC_ANS_MALFORMED;
    }
    if (need > p->buf_cap || p->buf == NULL) {
        uint8_t *bigger = malloc(need > 0 ? need : 1);

        if (bigger == NULL) {
            errno = ENOMEM;
            return SC_ANS_ERROR;
        }
        if (p->buf != NULL) {
            OPENSSL_cleanse(p->buf, p->buf_cap);
            free(p->buf);
        }
        p->buf = bigger;
        p->buf_cap = need > 0 ? need : 1;
    }
    n = recv(p->fd, p->buf, p->buf_cap, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? SC_ANS_AGAIN
                                                                         : SC_ANS_ERROR;
    if ((size_t)n > p->buf_cap) /* cannot happen after the peek; kept as a guard */
        return SC_ANS_MALFORMED;
    verdict = sc_judge(t, &p->req, p->buf, (size_t)n, &p->reply);
    if (verdict != SC_ANS_OK) {
        OPENSSL_cleanse(p->buf, (size_t)n);
        memset(&p->reply, 0, sizeof(p->reply));
    }
    return verdict;
}

/* Reads what has arrived for a SENT lookup, without blocking. */
static void sc_pending_poll(sc_pending *p, sc_thread *t)
{
    sc_client *client = p->client;
    sc_breaker *breaker = &client->servers[p->server].breaker;

    for (;;) {
        sc_answer a = sc_pending_recv(p, t);

        switch (a) {
        case SC_ANS_OK:
            sc_breaker_success(breaker, p->how, &client->opt);
            sc_count(t, SC_C_HITS);
            p->found = 1;
            sc_pending_finish(p);
            return;
        case SC_ANS_NOT_FOUND:
        case SC_ANS_REFUSED:     /* no daemon refuses a GET; a miss either way */
        case SC_ANS_EXISTS:      /* not an answer to a lookup; a miss */
        case SC_ANS_UNAVAILABLE: /* a TAKE the daemon could not do: a miss */
            sc_breaker_success(breaker, p->how, &client->opt);
            sc_count(t, SC_C_MISSES);
            sc_pending_finish(p);
            return;
        case SC_ANS_STALE:
        case SC_ANS_MALFORMED:
        case SC_ANS_AUTH:
            sc_count_discarded(t, a);
            continue;
        case SC_ANS_AGAIN:
            if (sc_now_ns() >= p->deadline_ns) {
                sc_breaker_failure(breaker, p->how, sc_now_ns(), &client->opt);
                sc_count(t, SC_C_TIMEOUTS);
                sc_pending_finish(p);
            }
            return;
        case SC_ANS_ERROR:
        default:
            if (errno == ECONNREFUSED || errno == EHOSTUNREACH || errno == ENETUNREACH)
                sc_breaker_failure(breaker, p->how, sc_now_ns(), &client->opt);
            else
                sc_breaker_release(breaker, p->how);
            sc_count(t, SC_C_ERRORS);
            sc_pending_close(p);
            p->state = SC_PENDING_DONE;
            sc_pending_send(p, t); /* the next server, within the same deadline */
            return;
        }
    }
}

static uint16_t sc_be16(const unsigned char *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

/* Will this handshake be TLS 1.3? The client must offer it in
 * supported_versions and this SSL must allow it. */
static int sc_hello_is_tls13(SSL *ssl)
{
    const unsigned char *ext;
    size_t ext_len, list_len;
    long max = SSL_get_max_proto_version(ssl);

    if ((SSL_get_options(ssl) & SSL_OP_NO_TLSv1_3) != 0 || (max != 0 && max < TLS1_3_VERSION))
        return 0;
    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &ext, &ext_len) ||
        ext_len < 1)
        return 0;
    list_len = ext[0];
    if (list_len + 1 > ext_len)
        return 0;
    for (size_t i = 1; i + 1 < list_len + 1; i += 2)
        if (sc_be16(ext + i) == TLS1_3_VERSION)
            return 1;
    return 0;
}

/* The first 32-byte identity of the pre_shared_key extension:
 * identities<7..2^16-1> of { identity<1..2^16-1>, uint32 age }. */
static int sc_hello_psk_id(SSL *ssl, uint8_t id[SC_KEY_LEN], size_t *id_len)
{
    const unsigned char *ext;
    size_t ext_len, end, pos = 2;

    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_psk, &ext, &ext_len) || ext_len < 2)
        return 0;
    end = 2 + (size_t)sc_be16(ext);
    if (end > ext_len)
        return 0;
    while (pos + 2 <= end) {
        size_t len = sc_be16(ext + pos);

        if (pos + 2 + len + 4 > end)
            return 0;
        if (len == SC_KEY_LEN) {
            memcpy(id, ext + pos + 2, len);
            *id_len = len;
            return 1;
        }
        pos += 2 + len + 4;
    }
    return 0;
}

/* The ID OpenSSL is going to look up for this ClientHello, if any, and
 * whether the handshake will be TLS 1.3 (*tls13). */
static int sc_hello_lookup_id(SSL *ssl, uint8_t id[SC_KEY_LEN], size_t *id_len, int *tls13)
{
    const unsigned char *sid, *ext;
    size_t sid_len, ext_len;

    *tls13 = sc_hello_is_tls13(ssl);
    if (*tls13)
        return sc_hello_psk_id(ssl, id, id_len);
    sid_len = SSL_client_hello_get0_session_id(ssl, &sid);
    if (sid_len == 0 || sid_len > SC_KEY_LEN)
        return 0;
    /* A non-empty ticket is decrypted instead of looked up, when tickets are on. */
    if ((SSL_get_options(ssl) & SSL_OP_NO_TICKET) == 0 &&
        SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_session_ticket, &ext, &ext_len) && ext_len > 0)
        return 0;
    memcpy(id, sid, sid_len);
    *id_len = sid_len;
    return 1;
}

/* op: PROTO_V2_GET, or PROTO_V2_TAKE (anti-replay, TLS 1.3). */
static sc_pending *sc_pending_start(sc_client *client, sc_thread *t, uint8_t op, const uint8_t *ns,
                                    const uint8_t *id, size_t id_len)
{
    sc_pending *p = calloc(1, sizeof(*p));

    if (p == NULL)
        return NULL;
    p->client = client;
    p->fd = -1;
    p->state = SC_PENDING_DONE;
    memcpy(p->id, id, id_len);
    p->id_len = id_len;
    p->req.op = op;
    p->req.key = &p->key;
    if (sc_key_make(client, ns, id, id_len, &p->key) < 0 ||
        sc_build(t, &p->req, 0, NULL, 0, 0, p->request, sizeof(p->request), &p->request_len) !=
            SC_OK) {
        sc_count(t, SC_C_ERRORS);
        sc_pending_destroy(p);
        return NULL;
    }
    p->norder = sc_servers_order(client, p->key.hash, p->order);
    p->deadline_ns = sc_now_ns() + (int64_t)client->opt.timeout_ms * 1000000;
    sc_count(t, SC_C_LOOKUPS);
    if (op == PROTO_V2_TAKE)
        sc_count(t, SC_C_TAKES);
    sc_pending_send(p, t);
    return p;
}

int sc_client_hello_cb(SSL *ssl, int *alert, void *arg)
{
    sc_client *client = sc_ssl_client(ssl);
    int index = sc_ssl_pending_index();
    uint8_t id[SC_KEY_LEN];
    size_t id_len = 0;
    int tls13 = 0;
    uint8_t op;
    sc_pending *p;
    sc_thread *t;

    (void)alert;
    (void)arg;
    if (client == NULL || index < 0 || !sc_hello_lookup_id(ssl, id, &id_len, &tls13))
        return SSL_CLIENT_HELLO_SUCCESS; /* nothing OpenSSL will look up */
    t = sc_thread_get(client);
    if (t == NULL)
        return SSL_CLIENT_HELLO_SUCCESS;

    p = SSL_get_ex_data(ssl, index);
    if (p != NULL && (p->id_len != id_len || memcmp(p->id, id, id_len) != 0)) {
        /* A reused SSL (SSL_clear) with a new ClientHello: start over. */
        SSL_set_ex_data(ssl, index, NULL);
        sc_pending_destroy(p);
        p = NULL;
    }
    if (p == NULL) {
        /* Anti-replay: a TLS 1.3 ticket resumes once in the whole cluster. */
        op = client->opt.anti_replay && tls13 ? PROTO_V2_TAKE : PROTO_V2_GET;
        p = sc_pending_start(client, t, op, sc_ctx_namespace(SSL_get_SSL_CTX(ssl), client), id,
                             id_len);
        if (p == NULL)
            return SSL_CLIENT_HELLO_SUCCESS; /* out of memory: a full handshake */
        if (!SSL_set_ex_data(ssl, index, p)) {
            sc_pending_destroy(p);
            return SSL_CLIENT_HELLO_SUCCESS;
        }
    }
    if (p->state == SC_PENDING_SENT)
        sc_pending_poll(p, t);
    /* DONE: answered, timed out, or (after a HelloRetryRequest, same ID) reused. */
    return p->state == SC_PENDING_SENT ? SSL_CLIENT_HELLO_RETRY : SSL_CLIENT_HELLO_SUCCESS;
}

SSL_SESSION *sc_async_get_session_cb(SSL *ssl, const unsigned char *id, int id_len, int *copy)
{
    int index = sc_ssl_pending_index();
    sc_pending *p;

    *copy = 0;
    if (index < 0 || id_len <= 0 || id_len > SC_KEY_LEN)
        return NULL;
    p = SSL_get_ex_data(ssl, index);
    if (p == NULL || p->state != SC_PENDING_DONE || !p->found)
        return NULL;
    if ((size_t)id_len != p->id_len || memcmp(id, p->id, p->id_len) != 0)
        return NULL; /* not the ID we guessed: a miss, never a blocking lookup */
    return sc_session_decode(p->client, p->reply.value, p->reply.value_len, id, (size_t)id_len);
}

int sc_ssl_pending_fd(const SSL *ssl)
{
    int index = sc_ssl_pending_index();
    const sc_pending *p = index >= 0 ? SSL_get_ex_data(ssl, index) : NULL;

    return p != NULL && p->state == SC_PENDING_SENT ? p->fd : -1;
}

int sc_ssl_pending_timeout_ms(const SSL *ssl)
{
    int index = sc_ssl_pending_index();
    const sc_pending *p = index >= 0 ? SSL_get_ex_data(ssl, index) : NULL;
    int64_t left;

    if (p == NULL || p->state != SC_PENDING_SENT)
        return -1;
    left = p->deadline_ns - sc_now_ns();
    if (left <= 0)
        return 0;
    /* Rounded up: a loop that waits this long finds the deadline passed. */
    return (int)((left + 999999) / 1000000);
}
