/* sessionc.h — libsessionc: share an OpenSSL server's TLS sessions through
 * sessiond, so every server of a cluster resumes every other's sessions.
 *
 * Usage (a TLS server; error handling trimmed):
 *
 *     #include <sessionc.h>
 *
 *     sc_options opt;
 *     char err[256];
 *     sc_options_init(&opt);               // v2, 200 ms lookup timeout, breaker defaults
 *     opt.key_file = "/etc/sessiond/key";  // seal every datagram with the cluster key
 *     sc_client *sc = sc_client_new("10.0.0.5,10.0.0.6:54321", &opt, err, sizeof err);
 *     if (sc == NULL)
 *         errx(1, "sessionc: %s", err);
 *     sc_set_session_id_context(ctx, (const unsigned char *)"web", 3); // + the namespace
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
 * Wire format: version 2 by default. Keys are a 16-byte namespace followed by
 * the session ID; the namespace of an SSL_CTX is the first 16 bytes of
 * SHA-256 over its session-ID context, declared with
 * sc_set_session_id_context (OpenSSL has no getter for a context set with
 * SSL_CTX_set_session_id_context, so the library cannot find it by itself);
 * an SSL_CTX that declares none, and the raw operations, use
 * opt.default_namespace. Each thread matches answers to its requests by a
 * request ID. With a key file every datagram is sealed (AES-256-GCM, sender
 * timestamp checked against a window) and an answer that does not open is
 * dropped. Version 1 (stunnel's format: the session ID zero-padded to 32
 * bytes, no namespace, no sealing) is there for stunnel-era daemons.
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

/* Bytes of a v2 namespace, and the longest ID the raw operations take in v2
 * (the key, namespace included, is at most 64 bytes); v1 takes 32. */
#define SC_NAMESPACE_LEN 16
#define SC_MAX_ID_LEN    48

/* Results of the raw operations. */
typedef enum sc_result {
    SC_OK = 0,            /* get: found; put/remove: sent (the _wait forms: done) */
    SC_NOT_FOUND = 1,     /* get, remove_wait: the server answered that it has no such entry */
    SC_TIMEOUT = 2,       /* no answer within the timeout */
    SC_SKIPPED = 3,       /* every server for this key is backed off by the breaker */
    SC_ERR_TOO_LARGE = 4, /* the value does not fit one datagram (or the caller's buffer) */
    SC_ERR_ARG = 5,       /* bad argument: empty or over-long key, NULL pointer; or a
                             v2-only call (_wait, ping, stats) in v1 mode */
    SC_ERR_SYSTEM = 6,    /* a socket call failed (errno tells) */
    SC_REFUSED = 7,       /* v2: put_wait not stored; get: a hit the daemon will not send
                             in plaintext to a non-loopback source (seal) */
    SC_EXISTS = 8,        /* add: an entry was already there, nothing written */
    SC_UNAVAILABLE = 9,   /* take/add/ticket ring: the daemon cannot answer now (its shared
                             store is unreachable; no ticket ring yet; ticket keys off) */
} sc_result;

typedef struct sc_options {
    unsigned timeout_ms;       /* lookup wait, default 200 */
    unsigned breaker_failures; /* consecutive failures that back a server off, default 3 */
    unsigned backoff_min_ms;   /* first back-off period, default 1000 */
    unsigned backoff_max_ms;   /* the back-off doubles up to this, default 30000 */
    /* Added with protocol version 2 (at the end, so the fields above keep
     * their offsets); sc_options_init sets them. */
    unsigned protocol;         /* 2 (default), or 1 for a stunnel-era daemon */
    const char *key_file;      /* cluster key: every v2 datagram is sealed; NULL: plaintext */
    const char *next_key_file; /* rollover: answers sealed with this key are accepted too */
    unsigned window_ms;        /* sealed answers further from our clock are dropped, 30000 */
    /* v2 namespace of the raw operations and of SSL_CTXs that declared no
     * session-ID context with sc_set_session_id_context; default all zero. */
    uint8_t default_namespace[SC_NAMESPACE_LEN];
    /* Added with ticket keys and 0-RTT anti-replay (default 0: off). With
     * anti_replay, sc_attach makes TLS 1.3 lookups atomic takes (a stateful
     * ticket resumes once in the whole cluster) and installs an early-data
     * callback that accepts 0-RTT only after a cluster-wide first sighting of
     * the ticket (sc_add); an unreachable daemon means early data is refused. */
    int anti_replay;
    unsigned ticket_refresh_ms; /* ticket ring refresh period; 0: derived from the ring's
                                   rotate (a quarter of it, at most 60 s) */
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
    /* Added with protocol version 2. */
    uint64_t auth_failures; /* answers dropped: did not open with our keys, outside the
                               window, or plaintext while a key is configured */
    uint64_t late_answers;  /* answers to earlier requests (timed out), discarded */
    /* Added with ticket keys and anti-replay. */
    uint64_t tickets_issued;        /* tickets encrypted with the ring's current key */
    uint64_t tickets_no_key;        /* tickets not issued: no current key (ring missing/expired) */
    uint64_t tickets_current;       /* tickets decrypted with the current key */
    uint64_t tickets_old;           /* ... with an older key (re-issued) */
    uint64_t tickets_next;          /* ... with the next key (re-issued) */
    uint64_t tickets_unknown;       /* tickets whose key name is not in the ring: full handshake */
    uint64_t tickets_renewed;       /* decrypts that asked OpenSSL to re-issue (old or next key) */
    uint64_t ring_refreshes;        /* ticket rings fetched and installed */
    uint64_t ring_refresh_failures; /* fetches that failed (timeout, refused, bad ring) */
    uint64_t early_accepted;        /* 0-RTT accepted after a first cluster-wide sighting */
    uint64_t early_replayed;        /* 0-RTT refused: the ticket was seen before */
    uint64_t early_unavailable;     /* 0-RTT refused: the daemon could not be asked */
    uint64_t takes;                 /* atomic takes sent (anti-replay lookups) */
} sc_stats;

typedef struct sc_client sc_client;

/* Fills *opt with the defaults above. */
void sc_options_init(sc_options *opt);

/* Creates a client for `servers`, "host[:port][,host[:port]...]" with IPv6
 * literals in brackets ("[::1]:54321"); names are resolved once, here. NULL
 * opt means the defaults. The key files (if any) are read here, with
 * keyfile_load's rules: 32 bytes raw or 64 hex digits, mode 0600 or
 * stricter; the client keeps the keys (wiped when it is freed), not the
 * paths. On failure returns NULL and writes a one-line reason into err (when
 * err is not NULL). */
sc_client *sc_client_new(const char *servers, const sc_options *opt, char *err, size_t errlen);

/* Frees the client. Every SSL_CTX it is attached to must be freed first. */
void sc_client_free(sc_client *client);

/* The v2 namespace of a session-ID context: the first 16 bytes of SHA-256
 * over its `len` bytes (len may be 0). Returns 0, or -1 if hashing failed. */
int sc_namespace_from_context(const void *sid_ctx, size_t len, uint8_t ns[SC_NAMESPACE_LEN]);

/* SSL_CTX_set_session_id_context, plus: the SSL_CTX's sessions are stored
 * in sessiond under the namespace of this context (v2). Call it instead of
 * OpenSSL's function, before or after sc_attach, while configuring (not
 * while handshakes run on ctx). A context changed later with OpenSSL's own
 * setter is not seen: the namespace stays the declared one (OpenSSL still
 * refuses a session whose context differs, so this can cost misses, never
 * a wrong resumption). Returns 0, or -1 (len over 32, or out of memory). */
int sc_set_session_id_context(SSL_CTX *ctx, const unsigned char *sid_ctx, unsigned int len);

/* Flags for sc_attach. */
#define SC_ATTACH_ASYNC 0x1 /* event-loop mode, see sc_ssl_pending_fd */

/* Plugs the client into an SSL_CTX: installs the new, get and remove session
 * callbacks and adds SSL_SESS_CACHE_SERVER to the cache mode; nothing else of
 * the SSL_CTX changes (its internal cache stays as it was). Sessions are
 * stored in the namespace declared with sc_set_session_id_context (else the
 * client's default_namespace), new ones and removals without waiting.
 * Returns 0, or -1.
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

/* Undoes sc_attach and sc_attach_ticket_keys: removes the three session
 * callbacks (and the ClientHello callback in async mode), the ticket-key and
 * early-data callbacks, and forgets the client. Call it before
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

/* Raw operations on an ID of 1..48 bytes in v2 (in the client's
 * default_namespace), 1..32 in v1 (zero-padded on the wire). A put is fire
 * and forget (v2 flag NO_REPLY): SC_OK means sent. ttl_seconds 0 means the
 * daemon's maximum; v1 caps it at 64800. Values: 1..65387 bytes in v2,
 * 1..65471 in v1; larger ones are SC_ERR_TOO_LARGE, counted, never cut. */
sc_result sc_put(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                 size_t value_len, unsigned ttl_seconds);
/* On SC_OK writes the value into buf[0..cap) and its length into *value_len;
 * a value larger than cap is SC_ERR_TOO_LARGE (and *value_len the size needed). */
sc_result sc_get(sc_client *client, const uint8_t *id, size_t id_len, uint8_t *buf, size_t cap,
                 size_t *value_len);
sc_result sc_remove(sc_client *client, const uint8_t *id, size_t id_len);

/* v2 only: sc_put and sc_remove that wait (up to the timeout) for the
 * daemon's answer. Put: SC_OK stored, SC_REFUSED not stored. Remove: SC_OK
 * removed, SC_NOT_FOUND there was nothing. Both: SC_TIMEOUT, SC_SKIPPED,
 * SC_ERR_*; SC_ERR_ARG in v1 mode (v1 has no acknowledgement). */
sc_result sc_put_wait(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                      size_t value_len, unsigned ttl_seconds);
sc_result sc_remove_wait(sc_client *client, const uint8_t *id, size_t id_len);

/* The servers of the client, in the order of the list it was created from,
 * by numeric name ("127.0.0.1:54321", "[::1]:54321"); NULL past the end. */
size_t sc_server_count(const sc_client *client);
const char *sc_server_name(const sc_client *client, size_t server);

/* v2 only, for tools: one PING to server number `server`, whatever its
 * breaker says; on SC_OK *rtt_ns is the round-trip time. */
sc_result sc_ping(sc_client *client, size_t server, uint64_t *rtt_ns);

/* v2 only, for tools: the daemon's stats line ("gets=... hits=..."), written
 * NUL-terminated into buf[0..cap); *len is its length without the NUL. A
 * line that does not fit is SC_ERR_TOO_LARGE (*len: the length needed). */
sc_result sc_server_stats(sc_client *client, size_t server, char *buf, size_t cap, size_t *len);

/* v2 only: atomic get-and-delete. Of concurrent takes of one ID anywhere
 * in the cluster (one shared store), at most one gets SC_OK with the value;
 * the others SC_NOT_FOUND. Buffer rules as sc_get, except that a value too
 * large for buf is lost (SC_ERR_TOO_LARGE): the daemon has already deleted
 * it. SC_UNAVAILABLE when the daemon's shared store cannot be asked. */
sc_result sc_take(sc_client *client, const uint8_t *id, size_t id_len, uint8_t *buf, size_t cap,
                  size_t *value_len);

/* v2 only: atomic add-if-absent, waiting for the answer: SC_OK stored,
 * SC_EXISTS an entry was there (left alone), SC_UNAVAILABLE the daemon's
 * shared store cannot be asked, or SC_TIMEOUT/SC_SKIPPED/SC_ERR_*. */
sc_result sc_add(sc_client *client, const uint8_t *id, size_t id_len, const uint8_t *value,
                 size_t value_len, unsigned ttl_seconds);

/* v2, sealed only (the client needs a key_file): fetches the ticket-key
 * ring from the first server up (or server number `server` when it is not
 * SIZE_MAX), the encoded form of proto/ticket_ring.h, into buf[0..cap).
 * SC_UNAVAILABLE: the daemon has ticket keys off or no ring yet. The bytes
 * are secret: wipe them (OPENSSL_cleanse) after use. */
sc_result sc_fetch_ticket_ring(sc_client *client, size_t server, uint8_t *buf, size_t cap,
                               size_t *len);

/* Shares session-ticket keys across the cluster: installs a ticket-key
 * callback (SSL_CTX_set_tlsext_ticket_key_evp_cb) on ctx that encrypts with
 * the ring's current key, decrypts with any key of the ring (asking OpenSSL
 * to re-issue the ticket when it was not the current key), and sends an
 * unknown key name to a full handshake. The first ring is fetched here
 * (waiting up to the timeout; without it the call still succeeds and no
 * tickets are issued until a fetch succeeds); then a background thread
 * refreshes it well before the next key is due and swaps it in without
 * blocking handshakes. With the daemon unreachable the last ring is kept
 * until its current key's not_after, then no tickets are issued. Install it
 * on the SSL_CTX passed to SSL_new (OpenSSL uses that one for tickets even
 * after an SNI switch). Needs a key_file (keys travel only sealed). Returns
 * 0, or -1 (no key file, ctx NULL, out of memory, thread not started). */
int sc_attach_ticket_keys(sc_client *client, SSL_CTX *ctx);

/* A snapshot of the counters, summed over all threads. */
void sc_get_stats(sc_client *client, sc_stats *out);

/* A constant name for a result ("ok", "not found", "timeout"...). */
const char *sc_result_name(sc_result result);

#ifdef __cplusplus
}
#endif

#endif
