/* sc_ssl.c — plugging a client into an OpenSSL SSL_CTX: sc_attach,
 * sc_detach, the session-ID context and its namespace, and the
 * new/get/remove session callbacks of the blocking mode.
 *
 * How it works: the SSL_CTX's ex_data holds the client (an index allocated
 * once per process with pthread_once: the library's only global state).
 * - new session: serialise with i2d_SSL_SESSION into a stack buffer (a heap
 *   one for the rare large session), key = the SSL_CTX's namespace || the
 *   session ID (v1: the ID zero-padded), PUT with the session's timeout and
 *   flag NO_REPLY, wipe, return 0: we kept no reference, so OpenSSL drops
 *   the one it took for us.
 * - get session: a GET (with anti_replay and TLS 1.3: a TAKE, so a
 *   stateful ticket resumes at most once in the whole cluster) that waits
 *   at most the timeout; the answer is
 *   decoded with d2i_SSL_SESSION straight from the thread's receive buffer
 *   (no copy), checked to carry the ID asked for (v1 pads IDs with zeros,
 *   so "ab" and "ab\0" share a key there), *copy = 0 (the new object is
 *   OpenSSL's).
 * - remove: DEL with NO_REPLY, except for a session whose lifetime is over
 *   (OpenSSL's cache flushes call us for those; the daemon expires them
 *   itself).
 *
 * The namespace: v2 keys start with the first 16 bytes of SHA-256 over the
 * SSL_CTX's session-ID context, so services sharing a daemon never see each
 * other's entries. OpenSSL 3.0 has no getter for the context of an SSL_CTX
 * or an SSL (only for a session's), and at lookup time there is no session
 * yet, so the library cannot read it: sc_set_session_id_context sets the
 * context in OpenSSL and records the namespace in the SSL_CTX's ex_data, in
 * one call, computed once. An SSL_CTX that declared nothing uses the
 * client's default_namespace. Chosen over the alternatives: learning the
 * context from the first new session would make a server's lookups depend
 * on its history (a fresh server could not resume its peers' sessions until
 * it had made one itself); hashing per operation would need the context,
 * which is the very thing that cannot be read. A context changed afterwards
 * with OpenSSL's own setter is not seen; OpenSSL still refuses a session of
 * another context, so that costs misses, never a wrong resumption.
 *
 * Known limits:
 * - OpenSSL calls the session callbacks of the SSL_CTX the handshake started
 *   on but has no public getter for it; we read the client and namespace
 *   from SSL_get_SSL_CTX(ssl), so with an SNI callback that switches
 *   contexts, attach the same client to every SSL_CTX it switches to and
 *   declare the same context on each.
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
#include <openssl/evp.h>

/* Serialised sessions up to this size use a stack buffer: server-side TLS
 * sessions are ~140 bytes, ~950 with an RSA-2048 client certificate. */
#define SC_STACK_DER 2048

static pthread_once_t sc_index_once = PTHREAD_ONCE_INIT;
static int sc_ctx_index = -1;       /* SSL_CTX -> sc_client */
static int sc_ctx_async_index = -1; /* SSL_CTX -> non-NULL when attached in async mode */
static int sc_ctx_ns_index = -1;    /* SSL_CTX -> declared namespace (malloc'ed, 16 bytes) */
static int sc_ssl_index = -1;       /* SSL -> sc_pending (sc_async.c) */

/* Frees a declared namespace with its SSL_CTX. */
static void sc_ns_free_cb(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void sc_index_init(void)
{
    sc_ctx_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    sc_ctx_async_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    sc_ctx_ns_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, sc_ns_free_cb);
    sc_ssl_index = sc_async_new_index();
}

static int sc_indexes_ready(void)
{
    pthread_once(&sc_index_once, sc_index_init);
    return sc_ctx_index >= 0 && sc_ctx_async_index >= 0 && sc_ctx_ns_index >= 0 &&
           sc_ssl_index >= 0;
}

int sc_namespace_from_context(const void *sid_ctx, size_t len, uint8_t ns[SC_NAMESPACE_LEN])
{
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    static const unsigned char empty[1];

    if (ns == NULL || (sid_ctx == NULL && len > 0))
        return -1;
    if (EVP_Digest(len > 0 ? sid_ctx : empty, len, digest, &digest_len, EVP_sha256(), NULL) != 1 ||
        digest_len < SC_NAMESPACE_LEN)
        return -1;
    memcpy(ns, digest, SC_NAMESPACE_LEN);
    return 0;
}

int sc_set_session_id_context(SSL_CTX *ctx, const unsigned char *sid_ctx, unsigned int len)
{
    uint8_t *ns, *old;

    if (ctx == NULL || len > SSL_MAX_SID_CTX_LENGTH || (sid_ctx == NULL && len > 0) ||
        !sc_indexes_ready())
        return -1;
    ns = malloc(SC_NAMESPACE_LEN);
    if (ns == NULL || sc_namespace_from_context(sid_ctx, len, ns) < 0 ||
        SSL_CTX_set_session_id_context(ctx, sid_ctx, len) != 1)
        goto fail;
    old = SSL_CTX_get_ex_data(ctx, sc_ctx_ns_index);
    if (!SSL_CTX_set_ex_data(ctx, sc_ctx_ns_index, ns))
        goto fail;
    free(old);
    return 0;

fail:
    free(ns);
    return -1;
}

const uint8_t *sc_ctx_namespace(SSL_CTX *ctx, const sc_client *client)
{
    const uint8_t *ns = sc_indexes_ready() ? SSL_CTX_get_ex_data(ctx, sc_ctx_ns_index) : NULL;

    return ns != NULL ? ns : client->opt.default_namespace;
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

    if (der_len == 0 || der_len > PROTO_MAX_DATAGRAM)
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
    sc_op op = {.op = PROTO_V2_PUT};
    sc_reply reply;
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
    if ((size_t)der_len > sc_max_value(client)) {
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
        if (timeout > (long)UINT32_MAX)
            timeout = (long)UINT32_MAX;
        op.ns = sc_ctx_namespace(SSL_get_SSL_CTX(ssl), client);
        op.id = id;
        op.id_len = id_len;
        op.value = der;
        op.value_len = (size_t)der_len;
        op.ttl = (unsigned)timeout;
        sc_run(client, &op, &reply); /* counted inside; nothing to do on failure */
        sc_reply_done(&reply);
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
    sc_op op = {.op = PROTO_V2_GET};
    SSL_SESSION *sess = NULL;
    sc_reply reply;

    *copy = 0;
    if (client == NULL || id_len <= 0 || id_len > SC_KEY_LEN)
        return NULL;
    /* By the time OpenSSL looks a TLS 1.3 PSK up, the version is chosen. */
    if (client->opt.anti_replay && SSL_version(ssl) == TLS1_3_VERSION)
        op.op = PROTO_V2_TAKE;
    op.ns = sc_ctx_namespace(SSL_get_SSL_CTX(ssl), client);
    op.id = id;
    op.id_len = (size_t)id_len;
    if (sc_run(client, &op, &reply) == SC_OK) {
        sess = sc_session_decode(client, reply.value, reply.value_len, id, (size_t)id_len);
        sc_reply_done(&reply);
    }
    return sess;
}

static void sc_remove_session_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
    sc_op op = {.op = PROTO_V2_DEL};
    sc_client *client;
    sc_reply reply;
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
    op.ns = sc_ctx_namespace(ctx, client);
    op.id = id;
    op.id_len = id_len;
    sc_run(client, &op, &reply);
    sc_reply_done(&reply);
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
    if (client->opt.anti_replay && sc_antireplay_install(client, ctx) < 0)
        return -1;
    return 0;
}

int sc_detach(SSL_CTX *ctx)
{
    int had_tickets = sc_tickets_detach(ctx) == 0;

    if (ctx == NULL || !sc_indexes_ready() || SSL_CTX_get_ex_data(ctx, sc_ctx_index) == NULL) {
        if (had_tickets)
            sc_antireplay_remove(ctx);
        return had_tickets ? 0 : -1;
    }
    SSL_CTX_sess_set_new_cb(ctx, NULL);
    SSL_CTX_sess_set_get_cb(ctx, NULL);
    SSL_CTX_sess_set_remove_cb(ctx, NULL);
    if (SSL_CTX_get_ex_data(ctx, sc_ctx_async_index) != NULL)
        SSL_CTX_set_client_hello_cb(ctx, NULL, NULL);
    sc_antireplay_remove(ctx);
    SSL_CTX_set_ex_data(ctx, sc_ctx_index, NULL);
    SSL_CTX_set_ex_data(ctx, sc_ctx_async_index, NULL);
    return 0;
}
