/* sessionc.h — libsessionc: share an OpenSSL server's TLS sessions through
 * sessiond, so every server of a cluster resumes every other's sessions.
 *
 * Usage (a TLS server; error handling trimmed):
 *
 *     #include <sessionc.h>
 *
 *     sc_options opt;
 *     char err[256];
 *     sc_options_init(&opt);               // 200 ms lookup timeout, breaker defaults
 *     sc_client *sc = sc_client_new("10.0.0.5,10.0.0.6:54321", &opt, err, sizeof err);
 *     if (sc == NULL)
 *         errx(1, "sessionc: %s", err);
 *     SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"web", 3);
 *     sc_attach(sc, ctx, 0);               // new/get/remove callbacks installed
 *     ...                                  // serve; handshakes now resume cluster-wide
 *     sc_detach(ctx);                      // so freeing ctx removes nothing cluster-wide
 *     SSL_CTX_free(ctx);
 *     sc_client_free(sc);                  // after every SSL_CTX using it is gone
 *
 * Link with `pkg-config --cflags --libs libsessionc`.
 *
 * Behaviour: a lookup waits at most the timeout and then reports a miss, so
 * the handshake goes on as a full one; stores and removes never wait. A server
 * that keeps failing is skipped for a growing back-off (a circuit breaker),
 * then one probe request tests it again. With several servers each key has
 * its own order of servers (rendezvous hashing): the first one up is used.
 * Every function is safe to call from many threads at once; the library has
 * no global state beyond OpenSSL ex_data indexes allocated once.
 *
 * Wire format: version 1 (stunnel's), the key being the session ID
 * zero-padded to 32 bytes.
 */
#ifndef SESSIONC_H
#define SESSIONC_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SC_DEFAULT_PORT 54321

/* Results of the raw operations. */
typedef enum sc_result {
    SC_OK = 0,            /* get: found; put/remove: sent */
    SC_NOT_FOUND = 1,     /* get: the server answered that it has no such entry */
    SC_TIMEOUT = 2,       /* get: no answer within the timeout */
    SC_SKIPPED = 3,       /* every server for this key is backed off by the breaker */
    SC_ERR_TOO_LARGE = 4, /* the value does not fit one datagram (or the caller's buffer) */
    SC_ERR_ARG = 5,       /* bad argument: empty or over-long key, NULL pointer */
    SC_ERR_SYSTEM = 6,    /* a socket call failed (errno tells) */
} sc_result;

typedef struct sc_options {
    unsigned timeout_ms;       /* lookup wait, default 200 */
    unsigned breaker_failures; /* consecutive failures that back a server off, default 3 */
    unsigned backoff_min_ms;   /* first back-off period, default 1000 */
    unsigned backoff_max_ms;   /* the back-off doubles up to this, default 30000 */
} sc_options;

typedef struct sc_stats {
    uint64_t lookups;   /* gets attempted (raw and from handshakes) */
    uint64_t hits;      /* found */
    uint64_t misses;    /* answered not found */
    uint64_t timeouts;  /* no answer in time */
    uint64_t errors;    /* socket errors, malformed or undecodable answers */
    uint64_t skipped;   /* requests not sent because the breaker had the server backed off */
    uint64_t stores;    /* puts sent */
    uint64_t removes;   /* removes sent */
    uint64_t too_large; /* sessions not shared because they do not fit a datagram */
} sc_stats;

typedef struct sc_client sc_client;

/* Fills *opt with the defaults above. */
void sc_options_init(sc_options *opt);

/* Creates a client for `servers`, "host[:port][,host[:port]...]" with IPv6
 * literals in brackets ("[::1]:54321"); names are resolved once, here. NULL
 * opt means the defaults. On failure returns NULL and writes a one-line
 * reason into err (when err is not NULL). */
sc_client *sc_client_new(const char *servers, const sc_options *opt, char *err, size_t errlen);

/* Frees the client. Every SSL_CTX it is attached to must be freed first. */
void sc_client_free(sc_client *client);

/* Flags for sc_attach. */
#define SC_ATTACH_ASYNC 0x1 /* event-loop mode, see sc_ssl_pending_fd */

/* Plugs the client into an SSL_CTX: installs the new, get and remove session
 * callbacks and adds SSL_SESS_CACHE_SERVER to the cache mode; nothing else of
 * the SSL_CTX changes (its internal cache stays as it was). Returns 0, or -1.
 *
 * With SC_ATTACH_ASYNC nothing blocks. OpenSSL (3.0 and earlier) has no
 * SSL_magic_pending_session_ptr()/SSL_ERROR_PENDING_SESSION (those are
 * BoringSSL's), so the lookup is started from a ClientHello callback
 * (sc_client_hello_cb, installed here) that returns SSL_CLIENT_HELLO_RETRY:
 * SSL_accept/SSL_do_handshake fails with SSL_ERROR_WANT_CLIENT_HELLO_CB while
 * sc_ssl_pending_fd(ssl) is not -1. Wait until that fd is readable or
 * sc_ssl_pending_timeout_ms(ssl) has passed, then call the handshake function
 * again: it resumes with the answer, or goes on as a full handshake after the
 * timeout. The get callback then only hands over what was fetched. */
int sc_attach(sc_client *client, SSL_CTX *ctx, int flags);

/* Undoes sc_attach: removes the three session callbacks (and the ClientHello
 * callback in async mode) and forgets the client. Call it before
 * SSL_CTX_free: OpenSSL calls the remove callback for every session left in
 * the SSL_CTX's own cache when it is freed, which would remove them from
 * sessiond for the whole cluster. Returns 0, or -1 if ctx was not attached. */
int sc_detach(SSL_CTX *ctx);

/* The ClientHello callback of the async mode, with SSL_CTX_set_client_hello_cb's
 * signature (arg is unused). sc_attach installs it; an application that needs
 * its own ClientHello callback installs that instead and calls this one from
 * it, returning its result when it is not SSL_CLIENT_HELLO_SUCCESS. */
int sc_client_hello_cb(SSL *ssl, int *alert, void *arg);

/* Event-loop mode: the descriptor to wait on for readability while a lookup
 * for this SSL is pending, or -1 when none is. */
int sc_ssl_pending_fd(const SSL *ssl);

/* Event-loop mode: milliseconds left before the pending lookup counts as a
 * miss (0 when it has timed out, -1 when no lookup is pending). */
int sc_ssl_pending_timeout_ms(const SSL *ssl);

/* Raw operations on a session ID of 1..32 bytes (zero-padded on the wire). */
sc_result sc_put(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                 size_t value_len, unsigned ttl_seconds);
/* On SC_OK writes the value into buf[0..cap) and its length into *value_len;
 * a value larger than cap is SC_ERR_TOO_LARGE (and *value_len the size needed). */
sc_result sc_get(sc_client *client, const uint8_t *id, size_t id_len, uint8_t *buf, size_t cap,
                 size_t *value_len);
sc_result sc_remove(sc_client *client, const uint8_t *id, size_t id_len);

/* A snapshot of the counters, summed over all threads. */
void sc_get_stats(sc_client *client, sc_stats *out);

/* A constant name for a result ("ok", "not found", "timeout"...). */
const char *sc_result_name(sc_result result);

#ifdef __cplusplus
}
#endif

#endif
