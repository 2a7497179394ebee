/* sc_tickets.c — shared session-ticket keys: the ticket-key ring fetched
 * from sessiond, kept fresh by a background thread, and the OpenSSL
 * ticket-key callback that encrypts and decrypts with it.
 *
 * The ring (proto/ticket_ring.h) travels only in a sealed v2 KEYS answer.
 * sc_fetch_ticket_ring asks the first server of the list the breakers let
 * through (a server that has no ring yet, answers UNAVAILABLE, or fails
 * with a socket error passes the question on to the next; a timeout ends
 * it, as in every other operation), and sc_attach_ticket_keys installs a
 * callback with SSL_CTX_set_tlsext_ticket_key_evp_cb:
 *
 * - encrypt: the key that encrypts now (ticket_ring_current: not_before <=
 *   now < not_after), a random IV, AES-256-CBC and HMAC-SHA256 with the
 *   key's two halves; no such key (no ring yet, or the daemon unreachable
 *   for so long that every key of the last ring has stopped encrypting):
 *   return 0, OpenSSL issues no ticket. Never a throwaway local key: a
 *   ticket no other server can read is worse than none, and a key nobody
 *   else holds would also outlive our control of it.
 * - decrypt: the key named in the ticket (ticket_ring_find: any key that
 *   still decrypts); the current one returns 1, an old or a next one 2
 *   (OpenSSL re-issues the ticket under the current key), and in TLS 1.3
 *   every key returns 2 (see sc_ticket_key_cb); an unknown name returns 0
 *   (a full handshake).
 *
 * With the daemon unreachable the last ring stays in use, so keys keep
 * changing on schedule: a ring holds the current key and the next one
 * (published before it encrypts, so every server has it), and encryption
 * stops when the last key of the ring reaches not_after (one to two
 * rotation periods after the last successful fetch).
 *
 * Sharing the ring with handshakes: the ring in use is an immutable
 * snapshot, swapped whole. A handshake takes a reference (a mutex held only
 * to read the pointer and bump its count, never across I/O or crypto) and
 * drops it when done; a snapshot is wiped and unmapped when its last
 * reference goes, so a refresh never waits for handshakes and a handshake
 * never waits for a refresh. The cheaper-looking alternatives were not
 * taken: a read-write lock costs the same atomic per handshake and lets a
 * writer stall readers; a lock-free pointer swap needs deferred reclamation
 * (hazard pointers or an epoch scheme) to know when an old ring may be
 * wiped, which is a lot of code to save one uncontended lock.
 *
 * Snapshots live in their own mmap'ed pages, mlock'ed (best effort: an
 * unprivileged RLIMIT_MEMLOCK may refuse) and marked MADV_DONTDUMP, so the
 * keys are neither swapped out nor written into a core dump; they are
 * wiped with OPENSSL_cleanse before the pages go back.
 *
 * The refresh thread: one per client, started by the first
 * sc_attach_ticket_keys and stopped by sc_client_free, which signals a
 * condition variable the thread waits on with a timeout (so the stop is
 * immediate; the timed wait is the refresh schedule, not synchronisation).
 * Period: opt.ticket_refresh_ms, or a quarter of the ring's rotation, at
 * most 60 s and at least 100 ms; after a failure, at most 1 s, so a daemon
 * that comes back is noticed quickly. Its signals are blocked: the
 * application's handlers run on its own threads.
 *
 * Which client a handshake uses: OpenSSL calls the ticket callback of the
 * SSL_CTX the SSL was created from (its session_ctx), even after an SNI
 * callback switched SSL_get_SSL_CTX to another one, and the callback has no
 * argument. So the client is recorded in the SSL itself when it is created,
 * by the new-callback of an SSL ex_data index (at SSL_new, SSL_get_SSL_CTX
 * is still the SSL_CTX passed to it); the switched-to SSL_CTX need not know
 * about ticket keys at all. SSLs made before sc_attach_ticket_keys fall
 * back to the client of SSL_get_SSL_CTX.
 *
 * Clock: ring times are Unix seconds compared with this host's wall clock.
 * A server whose clock runs ahead starts the next key early (the others
 * already hold it: it was published a rotation ahead) and one running
 * behind keeps the previous key a little longer (still decrypted
 * everywhere until the lifetime has passed), so skews smaller than the
 * publication lead cost nothing.
 */
#include "sc_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "ticket_ring.h"

/* Refresh period bounds, and the retry after a failure. */
#define SC_REFRESH_MIN_MS   100u
#define SC_REFRESH_MAX_MS   60000u
#define SC_REFRESH_RETRY_MS 1000u

struct sc_ring_snap {
    _Atomic unsigned refs;
    size_t map_len; /* bytes mapped for this snapshot */
    int locked;     /* mlock succeeded */
    ticket_ring ring;
};

/* --- ex_data: which client an SSL_CTX / an SSL issues tickets for --- */

static pthread_once_t sc_ticket_once = PTHREAD_ONCE_INIT;
static int sc_ctx_ticket_index = -1; /* SSL_CTX -> sc_client */
static int sc_ssl_ticket_index = -1; /* SSL -> sc_client, set at SSL_new */

/* Runs for every SSL the process creates: records the client of the
 * SSL_CTX it is created from, if that one shares ticket keys. */
static void sc_ssl_ticket_new(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                              void *argp)
{
    SSL *ssl = parent;
    SSL_CTX *ctx = ssl != NULL ? SSL_get_SSL_CTX(ssl) : NULL;
    sc_client *client = ctx != NULL ? SSL_CTX_get_ex_data(ctx, sc_ctx_ticket_index) : NULL;

    (void)ptr;
    (void)argl;
    (void)argp;
    if (client != NULL)
        CRYPTO_set_ex_data(ad, idx, client);
}

static void sc_ticket_index_init(void)
{
    sc_ctx_ticket_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    sc_ssl_ticket_index = SSL_get_ex_new_index(0, NULL, sc_ssl_ticket_new, NULL, NULL);
}

static int sc_ticket_indexes_ready(void)
{
    pthread_once(&sc_ticket_once, sc_ticket_index_init);
    return sc_ctx_ticket_index >= 0 && sc_ssl_ticket_index >= 0;
}

static sc_client *sc_ticket_client(SSL *ssl)
{
    sc_client *client;

    if (!sc_ticket_indexes_ready())
        return NULL;
    client = SSL_get_ex_data(ssl, sc_ssl_ticket_index);
    if (client == NULL)
        client = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc_ctx_ticket_index);
    return client;
}

/* --- snapshots --- */

static sc_ring_snap *sc_snap_new(void)
{
    long page = sysconf(_SC_PAGESIZE);
    size_t len = sizeof(sc_ring_snap);
    sc_ring_snap *snap;
    void *map;

    if (page > 0)
        len = (len + (size_t)page - 1) & ~((size_t)page - 1);
    map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return NULL;
    /* Best effort both: keys out of swap and out of core dumps. */
    (void)madvise(map, len, MADV_DONTDUMP);
    snap = map;
    snap->locked = mlock(map, len) == 0;
    snap->map_len = len;
    atomic_init(&snap->refs, 1);
    return snap;
}

static void sc_snap_destroy(sc_ring_snap *snap)
{
    size_t len = snap->map_len;
    int locked = snap->locked;

    OPENSSL_cleanse(snap, len);
    if (locked)
        munlock(snap, len);
    munmap(snap, len);
}

static void sc_snap_release(sc_ring_snap *snap)
{
    if (snap != NULL && atomic_fetch_sub_explicit(&snap->refs, 1, memory_order_acq_rel) == 1)
        sc_snap_destroy(snap);
}

/* The ring in use with a reference taken, or NULL. */
static sc_ring_snap *sc_snap_acquire(sc_client *client)
{
    sc_ring_snap *snap;

    pthread_mutex_lock(&client->tickets.lock);
    snap = client->tickets.snap;
    if (snap != NULL)
        atomic_fetch_add_explicit(&snap->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&client->tickets.lock);
    return snap;
}

/* Makes snap (whose reference the client takes over) the ring in use. */
static void sc_snap_install(sc_client *client, sc_ring_snap *snap)
{
    sc_ring_snap *old;

    pthread_mutex_lock(&client->tickets.lock);
    old = client->tickets.snap;
    client->tickets.snap = snap;
    pthread_mutex_unlock(&client->tickets.lock);
    sc_snap_release(old);
}

/* --- fetching --- */

/* The KEYS request: to `server`, or (SIZE_MAX) to the first server of the
 * list the breakers let through, moving on past socket errors and servers
 * that have no ring; a timeout ends it. One deadline for the whole walk. */
static sc_result sc_ring_request(sc_client *client, size_t server, sc_reply *reply)
{
    int64_t now = sc_now_ns();
    int64_t deadline = now + (int64_t)client->opt.timeout_ms * 1000000;
    sc_result result = SC_SKIPPED;
    int saved_errno = 0;

    memset(reply, 0, sizeof(*reply));
    if (server != SIZE_MAX)
        return sc_call_server(client, server, PROTO_V2_KEYS, deadline, reply, NULL);
    for (size_t i = 0; i < client->nservers && now < deadline; i++) {
        sc_breaker *breaker = &client->servers[i].breaker;
        sc_admit how = sc_breaker_admit(breaker, now, 1);

        if (how == SC_ADMIT_SKIP) {
            sc_count_client(client, SC_C_SKIPPED);
            continue;
        }
        result = sc_call_server(client, i, PROTO_V2_KEYS, deadline, reply, NULL);
        saved_errno = errno;
        now = sc_now_ns();
        switch (result) {
        case SC_OK:
        case SC_REFUSED:
            sc_breaker_success(breaker, how, &client->opt);
            return result;
        case SC_UNAVAILABLE:
            sc_breaker_success(breaker, how, &client->opt); /* it answered: no ring yet */
            continue;
        case SC_TIMEOUT:
            sc_breaker_failure(breaker, how, now, &client->opt);
            return result;
        default:
            if (result == SC_ERR_SYSTEM && sc_errno_blames_server(saved_errno))
                sc_breaker_failure(breaker, how, now, &client->opt);
            else
                sc_breaker_release(breaker, how);
            continue;
        }
    }
    errno = saved_errno;
    return result;
}

sc_result sc_fetch_ticket_ring(sc_client *client, size_t server, uint8_t *buf, size_t cap,
                               size_t *len)
{
    sc_reply reply;
    sc_result r;

    if (client == NULL || len == NULL || (buf == NULL && cap > 0))
        return SC_ERR_ARG;
    *len = 0;
    /* Keys travel sealed only: without a cluster key there is nothing to ask. */
    if (!client->has_key || client->opt.protocol == 1 ||
        (server != SIZE_MAX && server >= client->nservers))
        return SC_ERR_ARG;
    r = sc_ring_request(client, server, &reply);
    if (r == SC_OK) {
        *len = reply.value_len;
        if (reply.value_len > cap)
            r = SC_ERR_TOO_LARGE;
        else
            memcpy(buf, reply.value, reply.value_len);
    }
    sc_reply_done(&reply);
    return r;
}

/* Fetches the ring and installs it, decoding straight from the receive
 * buffer (no other copy of the keys is made). Counts a refresh or a
 * failure; returns SC_OK, the fetch's failure, or SC_REFUSED for a ring
 * that does not decode (or no memory for it). */
static sc_result sc_ring_refresh(sc_client *client)
{
    sc_ring_snap *snap = NULL;
    sc_reply reply;
    sc_result r = sc_ring_request(client, SIZE_MAX, &reply);

    if (r != SC_OK)
        goto fail;
    snap = sc_snap_new();
    if (snap == NULL || ticket_ring_decode(reply.value, reply.value_len, &snap->ring) != PROTO_OK) {
        if (snap != NULL)
            sc_count_client(client, SC_C_ERRORS); /* a ring we cannot read */
        r = SC_REFUSED;
        goto fail;
    }
    sc_reply_done(&reply);
    sc_snap_install(client, snap);
    sc_count_client(client, SC_C_RING_REFRESHES);
    return SC_OK;

fail:
    sc_reply_done(&reply);
    if (snap != NULL)
        sc_snap_release(snap);
    sc_count_client(client, SC_C_RING_REFRESH_FAILURES);
    return r;
}

/* --- the refresh thread --- */

/* How long to wait before the next fetch. */
static unsigned sc_refresh_wait_ms(sc_client *client, int last_ok)
{
    unsigned period = client->opt.ticket_refresh_ms;

    if (period == 0) {
        sc_ring_snap *snap = sc_snap_acquire(client);

        period = snap != NULL ? (unsigned)((uint64_t)snap->ring.rotate_s * 1000 / 4)
                              : SC_REFRESH_RETRY_MS;
        sc_snap_release(snap);
        if (period > SC_REFRESH_MAX_MS)
            period = SC_REFRESH_MAX_MS;
    }
    if (period < SC_REFRESH_MIN_MS)
        period = SC_REFRESH_MIN_MS;
    if (!last_ok && period > SC_REFRESH_RETRY_MS)
        period = SC_REFRESH_RETRY_MS;
    return period;
}

/* The monotonic time wait_ms from now, for pthread_cond_timedwait. */
static struct timespec sc_monotonic_in(unsigned wait_ms)
{
    struct timespec at;

    clock_gettime(CLOCK_MONOTONIC, &at);
    at.tv_sec += (time_t)(wait_ms / 1000);
    at.tv_nsec += (long)(wait_ms % 1000) * 1000000;
    if (at.tv_nsec >= 1000000000) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000;
    }
    return at;
}

typedef struct sc_refresh_start {
    sc_client *client;
    int last_ok; /* how the fetch in sc_attach_ticket_keys went */
} sc_refresh_start;

static void *sc_refresh_run(void *arg)
{
    sc_client *client = ((sc_refresh_start *)arg)->client;
    int last_ok = ((sc_refresh_start *)arg)->last_ok;
    sc_tickets *tk = &client->tickets;

    free(arg);
    for (;;) {
        struct timespec until = sc_monotonic_in(sc_refresh_wait_ms(client, last_ok));
        int stop;

        pthread_mutex_lock(&tk->lock);
        while (!tk->stop && pthread_cond_timedwait(&tk->wake, &tk->lock, &until) != ETIMEDOUT)
            ;
        stop = tk->stop;
        pthread_mutex_unlock(&tk->lock);
        if (stop)
            break;
        last_ok = sc_ring_refresh(client) == SC_OK;
    }
    return NULL;
}

/* Starts the refresh thread with every signal blocked (the mask is
 * inherited), so the application's handlers never run on it. Called with
 * tk->lock held. Returns 0 or -1. */
static int sc_refresh_start_thread(sc_client *client, int last_ok)
{
    sc_refresh_start *start = malloc(sizeof(*start));
    sigset_t all, saved;
    int rc;

    if (start == NULL)
        return -1;
    start->client = client;
    start->last_ok = last_ok;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &saved);
    rc = pthread_create(&client->tickets.thread, NULL, sc_refresh_run, start);
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    if (rc != 0) {
        free(start);
        errno = rc;
        return -1;
    }
    return 0;
}

int sc_tickets_init(sc_client *client)
{
    sc_tickets *tk = &client->tickets;
    pthread_condattr_t attr;
    int rc;

    if (pthread_condattr_init(&attr) != 0)
        return -1;
    rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&tk->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        return -1;
    if (pthread_mutex_init(&tk->lock, NULL) != 0) {
        pthread_cond_destroy(&tk->wake);
        return -1;
    }
    tk->snap = NULL;
    tk->started = tk->stop = 0;
    return 0;
}

void sc_tickets_shutdown(sc_client *client)
{
    sc_tickets *tk = &client->tickets;
    int started;

    pthread_mutex_lock(&tk->lock);
    tk->stop = 1;
    started = tk->started;
    pthread_cond_signal(&tk->wake);
    pthread_mutex_unlock(&tk->lock);
    if (started)
        pthread_join(tk->thread, NULL);
    sc_snap_install(client, NULL); /* the last reference: wiped and unmapped */
    pthread_cond_destroy(&tk->wake);
    pthread_mutex_destroy(&tk->lock);
}

/* --- the OpenSSL callback --- */

/* HMAC-SHA256 with the key's HMAC half. */
static int sc_ticket_mac_init(EVP_MAC_CTX *hctx, const ticket_key *key)
{
    static char digest[] = "SHA256";
    OSSL_PARAM params[3];

    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)key->hmac_key,
                                                  sizeof(key->hmac_key));
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

static int sc_ticket_encrypt(sc_client *client, const ticket_ring *ring, uint64_t now,
                             unsigned char key_name[TICKET_NAME_LEN], unsigned char *iv,
                             EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx)
{
    const ticket_key *key = ring != NULL ? ticket_ring_current(ring, now) : NULL;
    const EVP_CIPHER *cipher = EVP_aes_256_cbc();

    if (key == NULL) {
        sc_count_client(client, SC_C_TICKETS_NO_KEY);
        return 0; /* no ticket rather than one nobody else can read */
    }
    memcpy(key_name, key->name, TICKET_NAME_LEN);
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(cipher)) != 1 ||
        EVP_EncryptInit_ex(cctx, cipher, NULL, key->aes_key, iv) != 1 ||
        sc_ticket_mac_init(hctx, key) != 1) {
        sc_count_client(client, SC_C_ERRORS);
        return 0;
    }
    sc_count_client(client, SC_C_TICKETS_ISSUED);
    return 1;
}

/* tls13: the handshake is TLS 1.3, where a ticket is re-issued after every
 * resumption (see the callback). */
static int sc_ticket_decrypt(sc_client *client, const ticket_ring *ring, uint64_t now, int tls13,
                             const unsigned char key_name[TICKET_NAME_LEN], const unsigned char *iv,
                             EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx)
{
    const ticket_key *key = ring != NULL ? ticket_ring_find(ring, key_name, now) : NULL;
    ticket_key_state state;

    if (key == NULL) {
        sc_count_client(client, SC_C_TICKETS_UNKNOWN);
        return 0; /* a full handshake */
    }
    if (sc_ticket_mac_init(hctx, key) != 1 ||
        EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), NULL, key->aes_key, iv) != 1) {
        sc_count_client(client, SC_C_ERRORS);
        return 0;
    }
    state = ticket_key_state_at(ring, key, now);
    if (state == TICKET_KEY_CURRENT) {
        sc_count_client(client, SC_C_TICKETS_CURRENT);
        return tls13 ? 2 : 1;
    }
    sc_count_client(client, state == TICKET_KEY_NEXT ? SC_C_TICKETS_NEXT : SC_C_TICKETS_OLD);
    sc_count_client(client, SC_C_TICKETS_RENEWED);
    return 2; /* decrypted; re-issue under the current key */
}

/* SSL_CTX_set_tlsext_ticket_key_evp_cb's callback. In TLS 1.3 a decrypt
 * always returns 2: clients use a TLS 1.3 ticket once (RFC 8446 C.4; OpenSSL's
 * client does), and OpenSSL 3.0 sends a NewSessionTicket after a resumption
 * only when the callback asked for a renewal (its own keys always get one),
 * so returning 1 would leave the client with nothing to resume next time.
 * Only renewals for an old or next key are counted as renewals. */
static int sc_ticket_key_cb(SSL *ssl, unsigned char key_name[TICKET_NAME_LEN], unsigned char *iv,
                            EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    sc_client *client = sc_ticket_client(ssl);
    uint64_t now = (uint64_t)time(NULL);
    sc_ring_snap *snap;
    int rc;

    if (client == NULL)
        return 0;
    snap = sc_snap_acquire(client);
    if (enc)
        rc = sc_ticket_encrypt(client, snap != NULL ? &snap->ring : NULL, now, key_name, iv, cctx,
                               hctx);
    else
        rc = sc_ticket_decrypt(client, snap != NULL ? &snap->ring : NULL, now,
                               SSL_version(ssl) == TLS1_3_VERSION, key_name, iv, cctx, hctx);
    sc_snap_release(snap);
    return rc;
}

/* The first fetch, within the client's timeout. A daemon that answers
 * UNAVAILABLE may be between two rotation steps (right after a key starts
 * encrypting it has no next key until its next tick, 100 ms at most) or
 * still starting: asked again every SC_FIRST_RETRY_MS while the timeout
 * lasts, so that a server does not start without tickets for a second
 * because of that moment. Returns 1 when a ring is installed. */
#define SC_FIRST_RETRY_MS 25

static int sc_first_ring(sc_client *client)
{
    int64_t deadline = sc_now_ns() + (int64_t)client->opt.timeout_ms * 1000000;
    sc_result r;

    while ((r = sc_ring_refresh(client)) == SC_UNAVAILABLE &&
           sc_now_ns() + (int64_t)SC_FIRST_RETRY_MS * 1000000 < deadline) {
        struct timespec pause = {0, SC_FIRST_RETRY_MS * 1000000L};

        nanosleep(&pause, NULL); /* a retry interval, not a synchronisation */
    }
    return r == SC_OK;
}

int sc_attach_ticket_keys(sc_client *client, SSL_CTX *ctx)
{
    sc_tickets *tk;
    int need_thread, last_ok = 1, rc = 0;

    if (client == NULL || ctx == NULL || !client->has_key || client->opt.protocol == 1 ||
        !sc_ticket_indexes_ready())
        return -1;
    tk = &client->tickets;
    pthread_mutex_lock(&tk->lock);
    need_thread = !tk->started && !tk->stop;
    pthread_mutex_unlock(&tk->lock);
    if (need_thread) {
        /* The first ring, waiting up to the timeout; without it no tickets
         * until the refresh thread has one. Two first attaches racing may
         * both fetch: harmless. */
        last_ok = sc_first_ring(client);
        pthread_mutex_lock(&tk->lock);
        if (!tk->started && !tk->stop) {
            rc = sc_refresh_start_thread(client, last_ok);
            tk->started = rc == 0;
        }
        pthread_mutex_unlock(&tk->lock);
        if (rc < 0)
            return -1;
    }
    if (!SSL_CTX_set_ex_data(ctx, sc_ctx_ticket_index, client) ||
        !SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, sc_ticket_key_cb))
        return -1;
    if (client->opt.anti_replay && sc_antireplay_install(client, ctx) < 0)
        return -1;
    return 0;
}

int sc_tickets_detach(SSL_CTX *ctx)
{
    if (ctx == NULL || !sc_ticket_indexes_ready() ||
        SSL_CTX_get_ex_data(ctx, sc_ctx_ticket_index) == NULL)
        return -1;
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, NULL);
    SSL_CTX_set_ex_data(ctx, sc_ctx_ticket_index, NULL);
    return 0;
}
