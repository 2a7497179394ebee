/* sc_ssl.c — plugging a client into an OpenSSL SSL_CTX: sc_attach,
 * sc_detach and the new/get/remove session callbacks of the blocking mode.
 *
 * How it works: the SSL_CTX's ex_data holds the client (an index allocated
 * once per process with pthread_once: the library's only global state).
 * - new session: serialise with i2d_SSL_SESSION into a stack buffer (a heap
 *   one for the rare large session), key = session ID zero-padded, PUT with
 *   the session's timeout (capped at 64800 s like stunnel), wipe, return 0:
 *   we kept no reference, so OpenSSL drops the one it took for us.
 * - get session: sc_get (waits at most the timeout), d2i_SSL_SESSION, check
 *   the session really carries the ID asked for (v1 pads IDs with zeros, so
 *   "ab" and "ab\0" share a key), *copy = 0 (the new object is OpenSSL's).
 *   A value larger than the stack buffer is fetched again into a heap buffer
 *   of the size the first answer announced: one more round trip, only for
 *   sessions over 2 KiB (client certificates with big keys).
 * - remove: REMOVE, except for a session whose lifetime is over (OpenSSL's
 *   cache flushes call us for those; the daemon expires them itself).
 *
 * Known limits:
 * - OpenSSL calls the session callbacks of the SSL_CTX the handshake started
 *   on but has no public getter for it; we read the client from
 *   SSL_get_SSL_CTX(ssl), so with an SNI callback that switches contexts,
 *   attach the same client to every SSL_CTX it switches to.
 * - OpenSSL calls the remove callback for every session still in its own
 *   cache when the SSL_CTX is freed, and for sessions its cache evicts when
 *   full. Freed: call sc_detach first, or every server restart removes
 *   sessions the cluster could still resume. Evicted: size the internal
 *   cache (SSL_CTX_sess_set_cache_size) or disable it
 *   (SSL_SESS_CACHE_NO_INTERNAL_STORE).
 */
#include "sc_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

/* Serialised sessions up to this size use a stack buffer: server-side TLS
 * sessions are ~140 bytes, ~950 with an RSA-2048 client certificate. */
#define SC_STACK_DER 2048

static pthread_once_t sc_index_once = PTHREAD_ONCE_INIT;
static int sc_ctx_index = -1;       /* SSL_CTX -> sc_client */
static int sc_ctx_async_index = -1; /* SSL_CTX -> non-NULL when attached in async mode */
static int sc_ssl_index = -1;       /* SSL -> sc_pending (sc_async.c) */

static void sc_index_init(void)
{
    sc_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    sc_ctx_async_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    sc_ssl_index = sc_async_new_index();
}

static int sc_indexes_ready(void)
{
    pthread_once(&sc_index_once, sc_index_init);
    return sc_ctx_index >= 0 && sc_ctx_async_index >= 0 && sc_ssl_index >= 0;
}

int sc_ssl_pending_index(void)
{
    return sc_indexes_ready() ? sc_ssl_index : -1;
}

sc_client *sc_ssl_client(const SSL *ssl)
{
    if (!sc_indexes_ready())
        return NULL;
    return SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), sc_ctx_index);
}

SSL_SESSION *sc_session_decode(sc_client *client, const uint8_t *der, size_t der_len,
                               const uint8_t *id, size_t id_len)
{
    const unsigned char *p = der;
    const unsigned char *sess_id;
    unsigned int sess_id_len;
    SSL_SESSION *sess;

    if (der_len == 0 || der_len > PROTO_V1_MAX_VALUE)
        goto fail;
    sess = d2i_SSL_SESSION(NULL, &p, (long)der_len);
    if (sess == NULL)
        goto fail;
    sess_id = SSL_SESSION_get_id(sess, &sess_id_len);
    if (p != der + der_len || sess_id_len != id_len || memcmp(sess_id, id, id_len) != 0) {
        SSL_SESSION_free(sess);
        goto fail;
    }
    return sess;

fail:
    sc_count_client(client, SC_C_ERRORS); /* an answer we cannot use */
    return NULL;
}

static int sc_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    sc_client *client = sc_ssl_client(ssl);
    uint8_t stack_der[SC_STACK_DER], *der = stack_der;
    const unsigned char *id;
    unsigned int id_len;
    unsigned char *p;
    long timeout;
    int der_len;

    if (client == NULL)
        return 0;
    id = SSL_SESSION_get_id(sess, &id_len);
    if (id_len == 0 || id_len > SC_KEY_LEN)
        return 0;
    der_len = i2d_SSL_SESSION(sess, NULL);
    if (der_len <= 0) {
        sc_count_client(client, SC_C_ERRORS);
        return 0;
    }
    if ((size_t)der_len > PROTO_V1_MAX_VALUE) {
        sc_count_client(client, SC_C_TOO_LARGE); /* not shared, never truncated */
        return 0;
    }
    if ((size_t)der_len > sizeof(stack_der)) {
        der = malloc((size_t)der_len);
        if (der == NULL) {
            sc_count_client(client, SC_C_ERRORS);
            return 0;
        }
    }
    p = der;
    if (i2d_SSL_SESSION(sess, &p) == der_len) {
        timeout = SSL_SESSION_get_timeout(sess);
        if (timeout < 0)
            timeout = 0;
        if (timeout > (long)SC_MAX_TTL)
            timeout = SC_MAX_TTL;
        sc_put(client, id, id_len, der, (size_t)der_len, (unsigned)timeout);
    } else {
        sc_count_client(client, SC_C_ERRORS);
    }
    OPENSSL_cleanse(der, (size_t)der_len);
    if (der != stack_der)
        free(der);
    return 0; /* we hold no reference: OpenSSL frees the one it took */
}

static SSL_SESSION *sc_get_session_cb(SSL *ssl, const unsigned char *id, int id_len, int *copy)
{
    sc_client *client = sc_ssl_client(ssl);
    uint8_t stack_der[SC_STACK_DER], *der = stack_der;
    size_t cap = sizeof(stack_der), der_len = 0;
    SSL_SESSION *sess = NULL;
    sc_result r;

    *copy = 0;
    if (client == NULL || id_len <= 0 || id_len > SC_KEY_LEN)
        return NULL;
    r = sc_get(client, id, (size_t)id_len, der, cap, &der_len);
    if (r == SC_ERR_TOO_LARGE && der_len > cap && der_len <= PROTO_V1_MAX_VALUE) {
        /* Larger than the stack buffer: ask again for exactly that size. */
        der = malloc(der_len);
        if (der == NULL) {
            der = stack_der;
            goto done;
        }
        cap = der_len;
        r = sc_get(client, id, (size_t)id_len, der, cap, &der_len);
    }
    if (r == SC_OK)
        sess = sc_session_decode(client, der, der_len, id, (size_t)id_len);

done:
    OPENSSL_cleanse(der, cap);
    if (der != stack_der)
        free(der);
    return sess;
}

static void sc_remove_session_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
    sc_client *client;
    const unsigned char *id;
    unsigned int id_len;

    if (!sc_indexes_ready())
        return;
    client = SSL_CTX_get_ex_data(ctx, sc_ctx_index);
    if (client == NULL)
        return;
    /* Expired: the daemon drops it on its own; a flush of OpenSSL's cache
     * must not cost one datagram per stale session. */
    if ((time_t)SSL_SESSION_get_time(sess) + (time_t)SSL_SESSION_get_timeout(sess) <= time(NULL))
        return;
    id = SSL_SESSION_get_id(sess, &id_len);
    if (id_len == 0 || id_len > SC_KEY_LEN)
        return;
    sc_remove(client, id, id_len);
}

int sc_attach(sc_client *client, SSL_CTX *ctx, int flags)
{
    int async = (flags & SC_ATTACH_ASYNC) != 0;

    int was_async;

    if (client == NULL || ctx == NULL || (flags & ~SC_ATTACH_ASYNC) != 0 || !sc_indexes_ready())
        return -1;
    was_async = SSL_CTX_get_ex_data(ctx, sc_ctx_async_index) != NULL;
    if (!SSL_CTX_set_ex_data(ctx, sc_ctx_index, client) ||
        !SSL_CTX_set_ex_data(ctx, sc_ctx_async_index, async ? client : NULL))
        return -1;
    SSL_CTX_sess_set_new_cb(ctx, sc_new_session_cb);
    SSL_CTX_sess_set_remove_cb(ctx, sc_remove_session_cb);
    if (async) {
        SSL_CTX_sess_set_get_cb(ctx, sc_async_get_session_cb);
        SSL_CTX_set_client_hello_cb(ctx, sc_client_hello_cb, NULL);
    } else {
        SSL_CTX_sess_set_get_cb(ctx, sc_get_session_cb);
        if (was_async) /* ours, from an earlier async attach: it would look up twice */
            SSL_CTX_set_client_hello_cb(ctx, NULL, NULL);
    }
    SSL_CTX_set_session_cache_mode(ctx,
                                   SSL_CTX_get_session_cache_mode(ctx) | SSL_SESS_CACHE_SERVER);
    return 0;
}

int sc_detach(SSL_CTX *ctx)
{
    if (ctx == NULL || !sc_indexes_ready() || SSL_CTX_get_ex_data(ctx, sc_ctx_index) == NULL)
        return -1;
    SSL_CTX_sess_set_new_cb(ctx, NULL);
    SSL_CTX_sess_set_get_cb(ctx, NULL);
    SSL_CTX_sess_set_remove_cb(ctx, NULL);
    if (SSL_CTX_get_ex_data(ctx, sc_ctx_async_index) != NULL)
        SSL_CTX_set_client_hello_cb(ctx, NULL, NULL);
    SSL_CTX_set_ex_data(ctx, sc_ctx_index, NULL);
    SSL_CTX_set_ex_data(ctx, sc_ctx_async_index, NULL);
    return 0;
}
