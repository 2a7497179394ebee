/* tls_util.h — real TLS for the tests: certificates made in memory, server
 * and client SSL_CTXs, and handshakes driven in-process or over TCP.
 *
 * Certificates are generated at run time with OpenSSL 3 (EVP_EC_gen,
 * EVP_RSA_gen, X509 built by hand), so no key material is checked in. EC
 * P-256 is the fast default; RSA-2048 is there for tests where the size of
 * the certificate matters (with an RSA-2048 client certificate a session is
 * ~900 bytes).
 * PEM files are written only when another process needs them (stunnel,
 * openssl s_client, contrib/sessionc-echo).
 *
 * tu_handshake runs a client SSL and a server SSL in one thread over a
 * socketpair, both non-blocking, calling each side in turn until both are
 * done: no threads, no network, real OpenSSL state machines. When the server
 * side suspends because an asynchronous session lookup is in flight (the
 * event-loop mode of libsessionc), it waits with poll() on
 * sc_ssl_pending_fd() for at most sc_ssl_pending_timeout_ms() and goes on.
 *
 * Sessions are taken from the client's new-session callback (TLS 1.3 gives
 * them after the handshake, in NewSessionTicket messages, so the server
 * writes one byte after the handshake and the client reads it: every ticket
 * sent before that byte has been processed by then). Connections end with
 * SSL_shutdown: OpenSSL marks a session not resumable when its SSL is freed
 * without one.
 */
#ifndef SESSIOND_TEST_TLS_UTIL_H
#define SESSIOND_TEST_TLS_UTIL_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

/* A private key and the certificate for it. */
typedef struct tu_cred {
    EVP_PKEY *key;
    X509 *cert;
} tu_cred;

typedef enum tu_key_type {
    TU_KEY_EC,  /* P-256: fast to make and to use */
    TU_KEY_RSA, /* RSA-2048 */
} tu_key_type;

typedef enum tu_cert_role {
    TU_ROLE_SERVER, /* self-signed, CN and SAN localhost/127.0.0.1, serverAuth */
    TU_ROLE_CA,     /* self-signed CA:TRUE, keyCertSign */
    TU_ROLE_CLIENT, /* issued by a CA, clientAuth */
} tu_cert_role;

/* Makes a key of `type` and a certificate for `role` with the given common
 * name. TU_ROLE_CLIENT needs `issuer` (a TU_ROLE_CA credential); the others
 * are self-signed and ignore it. Returns 0, or -1 with the reason on stderr. */
int tu_cred_make(tu_cred *out, tu_key_type type, tu_cert_role role, const char *common_name,
                 const tu_cred *issuer);

/* tu_cred_make with a non-critical extension of pad_bytes filler bytes
 * (private OID) in the certificate: for sessions of a chosen size. */
int tu_cred_make_padded(tu_cred *out, tu_key_type type, tu_cert_role role, const char *common_name,
                        const tu_cred *issuer, size_t pad_bytes);
void tu_cred_free(tu_cred *cred);

/* Writes the certificate and the key (mode 0600) as PEM files. Returns 0 or -1. */
int tu_cred_write_pem(const tu_cred *cred, const char *cert_path, const char *key_path);

typedef struct tu_server_opts {
    int version;              /* TLS1_2_VERSION or TLS1_3_VERSION: min = max = this */
    int no_ticket;            /* SSL_OP_NO_TICKET: session IDs (1.2), stateful tickets (1.3) */
    int no_internal_cache;    /* SSL_SESS_CACHE_NO_INTERNAL: every resumption goes through
                                 the get-session callback, none through OpenSSL's own cache */
    const char *sid_ctx;      /* session-ID context; NULL means "sessiond-test" */
    const tu_cred *verify_ca; /* non-NULL: require a client certificate issued by it */
} tu_server_opts;

/* A server SSL_CTX using `cred`, or NULL (reason on stderr). */
SSL_CTX *tu_server_ctx(const tu_cred *cred, const tu_server_opts *opts);

/* A client SSL_CTX pinned to `version` (0: any), presenting `client_cred`
 * when it is not NULL; it does not verify the server (the tests are about
 * resumption, and the server certificates are self-signed). NULL on error. */
SSL_CTX *tu_client_ctx(int version, const tu_cred *client_cred);

/* What one handshake did. */
typedef struct tu_hs_result {
    int ok;                  /* both sides completed the handshake */
    int resumed;             /* SSL_session_reused() on the client */
    int server_resumed;      /* the same on the server (in-process only) */
    int server_peer_cert;    /* the server holds a client certificate (in-process only) */
    int version;             /* negotiated protocol version */
    unsigned pending;        /* times the server suspended for a session lookup */
    long max_server_call_us; /* the longest single server SSL_do_handshake call */
    long elapsed_us;         /* wall time of the whole exchange */
    SSL_SESSION *session;    /* the client's newest session; the caller frees it */
    char error[256];         /* why, when !ok */
} tu_hs_result;

/* One handshake between a fresh client SSL (offering `offer`, may be NULL)
 * and a fresh server SSL over a socketpair, then one byte from server to
 * client, then close_notify both ways. Fills *res; returns 0 when the
 * handshake completed, -1 otherwise. Thread-safe: everything is local. */
int tu_handshake(SSL_CTX *client_ctx, SSL_CTX *server_ctx, SSL_SESSION *offer, tu_hs_result *res);

/* Called each time the server suspends for a session lookup, before the
 * wait on sc_ssl_pending_fd: a test can, say, let a stopped daemon go on
 * here, to prove the answer arriving later is what wakes the handshake. */
typedef void (*tu_pending_fn)(const SSL *server, void *arg);

/* tu_handshake with a hook for suspensions (on_pending may be NULL). */
int tu_handshake_hooked(SSL_CTX *client_ctx, SSL_CTX *server_ctx, SSL_SESSION *offer,
                        tu_pending_fn on_pending, void *arg, tu_hs_result *res);

/* A client handshake with a TLS server in another process, on
 * 127.0.0.1:port. After the handshake it waits up to wait_session_ms for the
 * server's session (TLS 1.3 tickets arrive after the handshake) without
 * needing any application data. Fills the client-side fields of *res;
 * returns 0 when the handshake completed, -1 otherwise. */
int tu_tcp_handshake(SSL_CTX *client_ctx, int port, SSL_SESSION *offer, int wait_session_ms,
                     tu_hs_result *res);

/* Frees res->session (if any) and clears it. */
void tu_hs_result_clear(tu_hs_result *res);

/* The key a server stored the client's session under: the session ID for
 * TLS 1.2, the stateful ticket for TLS 1.3 (OpenSSL's stateful ticket is the
 * server's session ID, while the client's own "ID" for a 1.3 session is a
 * hash of the ticket). Returns its length (1..32), or 0. */
size_t tu_session_server_key(const SSL_SESSION *sess, unsigned char out[32]);

#endif
