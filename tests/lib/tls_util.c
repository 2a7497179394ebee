/* tls_util.c — certificates, SSL_CTXs and handshakes for the tests.
 *
 * How it works: see tls_util.h. Everything here is built from OpenSSL 3's
 * public API; nothing is cached between calls, so every function may run in
 * several threads at once (the thread test does). Waits are bounded: a
 * handshake that makes no progress for TU_HANDSHAKE_TIMEOUT_MS fails rather
 * than hangs, and the in-process loop never sleeps — each turn calls the
 * side that can move, and the only blocking call is the poll() on a pending
 * session lookup, bounded by the library's own timeout.
 */
#include "tls_util.h"

#include "sessionc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#define TU_HANDSHAKE_TIMEOUT_MS 10000
#define TU_DEFAULT_SID_CTX      "sessiond-test"
#define TU_CERT_DAYS            30

static int64_t tu_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Appends OpenSSL's error queue (or `what` alone) to res->error. */
static void tu_set_error(tu_hs_result *res, const char *what)
{
    unsigned long e;
    size_t len;

    snprintf(res->error, sizeof(res->error), "%s", what);
    while ((e = ERR_get_error()) != 0) {
        len = strlen(res->error);
        if (len + 2 >= sizeof(res->error))
            break;
        res->error[len++] = ':';
        res->error[len++] = ' ';
        res->error[len] = '\0';
        ERR_error_string_n(e, res->error + len, sizeof(res->error) - len);
    }
}

/* ---- certificates ------------------------------------------------------ */

static int tu_add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    int ok;

    X509V3_set_ctx(&v3, issuer, cert, NULL, NULL, 0);
    ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return -1;
    ok = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* A non-critical extension of `len` filler bytes under a private OID: a
 * verifier ignores it, and it makes the certificate (and any session that
 * carries it) exactly that much larger. */
static int tu_add_padding(X509 *cert, size_t len)
{
    ASN1_OBJECT *oid = OBJ_txt2obj("1.3.6.1.4.1.99999.7.1", 1);
    ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    unsigned char *filler = malloc(len > 0 ? len : 1);
    int ok = 0;

    if (oid == NULL || value == NULL || filler == NULL || len > INT32_MAX)
        goto done;
    memset(filler, 'p', len);
    if (!ASN1_OCTET_STRING_set(value, filler, (int)len))
        goto done;
    ext = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value);
    ok = ext != NULL && X509_add_ext(cert, ext, -1);

done:
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(oid);
    free(filler);
    return ok ? 0 : -1;
}

int tu_cred_make(tu_cred *out, tu_key_type type, tu_cert_role role, const char *common_name,
                 const tu_cred *issuer)
{
    return tu_cred_make_padded(out, type, role, common_name, issuer, 0);
}

int tu_cred_make_padded(tu_cred *out, tu_key_type type, tu_cert_role role, const char *common_name,
                        const tu_cred *issuer, size_t pad_bytes)
{
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    X509 *signer_cert;
    EVP_PKEY *signer_key;
    uint64_t serial = 0;
    int rc = -1;

    out->key = NULL;
    out->cert = NULL;
    if (role == TU_ROLE_CLIENT && (issuer == NULL || issuer->cert == NULL)) {
        fprintf(stderr, "tls_util: a client certificate needs an issuer\n");
        return -1;
    }
    key = type == TU_KEY_RSA ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    cert = X509_new();
    if (key == NULL || cert == NULL)
        goto fail;
    /* Only distinctness matters for a serial here; a positive 63-bit value. */
    if (RAND_bytes((unsigned char *)&serial, sizeof(serial)) != 1)
        goto fail;
    serial &= INT64_MAX;
    if (!X509_set_version(cert, X509_VERSION_3) ||
        !ASN1_INTEGER_set_int64(X509_get_serialNumber(cert), (int64_t)serial) ||
        X509_gmtime_adj(X509_getm_notBefore(cert), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(cert), 86400L * TU_CERT_DAYS) == NULL ||
        !X509_set_pubkey(cert, key) ||
        !X509_NAME_add_entry_by_txt(X509_get_subject_name(cert), "CN", MBSTRING_ASC,
                                    (const unsigned char *)common_name, -1, -1, 0))
        goto fail;

    signer_cert = role == TU_ROLE_CLIENT ? issuer->cert : cert;
    signer_key = role == TU_ROLE_CLIENT ? issuer->key : key;
    if (!X509_set_issuer_name(cert, X509_get_subject_name(signer_cert)))
        goto fail;
    switch (role) {
    case TU_ROLE_CA:
        if (tu_add_ext(cert, signer_cert, NID_basic_constraints, "critical,CA:TRUE") != 0 ||
            tu_add_ext(cert, signer_cert, NID_key_usage, "critical,keyCertSign,cRLSign") != 0)
            goto fail;
        break;
    case TU_ROLE_SERVER:
        if (tu_add_ext(cert, signer_cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
            tu_add_ext(cert, signer_cert, NID_ext_key_usage, "serverAuth") != 0 ||
            tu_add_ext(cert, signer_cert, NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1") != 0)
            goto fail;
        break;
    case TU_ROLE_CLIENT:
        if (tu_add_ext(cert, signer_cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
            tu_add_ext(cert, signer_cert, NID_key_usage, "critical,digitalSignature") != 0 ||
            tu_add_ext(cert, signer_cert, NID_ext_key_usage, "clientAuth") != 0)
            goto fail;
        break;
    }
    if (pad_bytes > 0 && tu_add_padding(cert, pad_bytes) != 0)
        goto fail;
    if (X509_sign(cert, signer_key, EVP_sha256()) <= 0)
        goto fail;
    out->key = key;
    out->cert = cert;
    key = NULL;
    cert = NULL;
    rc = 0;

fail:
    if (rc != 0) {
        fprintf(stderr, "tls_util: cannot make a certificate for %s: %s\n", common_name,
                ERR_error_string(ERR_get_error(), NULL));
        ERR_clear_error();
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

void tu_cred_free(tu_cred *cred)
{
    if (cred == NULL)
        return;
    EVP_PKEY_free(cred->key);
    X509_free(cred->cert);
    cred->key = NULL;
    cred->cert = NULL;
}

int tu_cred_write_pem(const tu_cred *cred, const char *cert_path, const char *key_path)
{
    FILE *cert_file = NULL;
    FILE *key_file = NULL;
    int key_fd;
    int rc = -1;

    cert_file = fopen(cert_path, "w");
    if (cert_file == NULL || !PEM_write_X509(cert_file, cred->cert))
        goto fail;
    key_fd = open(key_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (key_fd < 0)
        goto fail;
    key_file = fdopen(key_fd, "w");
    if (key_file == NULL) {
        close(key_fd);
        goto fail;
    }
    if (!PEM_write_PrivateKey(key_file, cred->key, NULL, NULL, 0, NULL, NULL))
        goto fail;
    rc = 0;

fail:
    if (cert_file != NULL && fclose(cert_file) != 0)
        rc = -1;
    if (key_file != NULL && fclose(key_file) != 0)
        rc = -1;
    if (rc != 0)
        fprintf(stderr, "tls_util: cannot write %s / %s\n", cert_path, key_path);
    return rc;
}

/* ---- contexts ---------------------------------------------------------- */

SSL_CTX *tu_server_ctx(const tu_cred *cred, const tu_server_opts *opts)
{
    const char *sid_ctx = opts->sid_ctx != NULL ? opts->sid_ctx : TU_DEFAULT_SID_CTX;
    long mode = SSL_SESS_CACHE_SERVER;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

    if (ctx == NULL)
        goto fail;
    if (!SSL_CTX_set_min_proto_version(ctx, opts->version) ||
        !SSL_CTX_set_max_proto_version(ctx, opts->version) ||
        SSL_CTX_use_certificate(ctx, cred->cert) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, cred->key) != 1 || SSL_CTX_check_private_key(ctx) != 1 ||
        !SSL_CTX_set_session_id_context(ctx, (const unsigned char *)sid_ctx,
                                        (unsigned)strlen(sid_ctx)))
        goto fail;
    if (opts->no_ticket)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    if (opts->no_internal_cache)
        mode |= SSL_SESS_CACHE_NO_INTERNAL;
    SSL_CTX_set_session_cache_mode(ctx, mode);
    if (opts->verify_ca != NULL) {
        if (X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), opts->verify_ca->cert) != 1 ||
            SSL_CTX_add_client_CA(ctx, opts->verify_ca->cert) != 1)
            goto fail;
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    return ctx;

fail:
    fprintf(stderr, "tls_util: cannot make a server SSL_CTX: %s\n",
            ERR_error_string(ERR_get_error(), NULL));
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* The client keeps its newest session in a slot the SSL's app data points
 * to. Returning 1 tells OpenSSL we took the reference. */
static int tu_client_new_session(SSL *ssl, SSL_SESSION *sess)
{
    SSL_SESSION **slot = SSL_get_app_data(ssl);

    if (slot == NULL)
        return 0;
    SSL_SESSION_free(*slot);
    *slot = sess;
    return 1;
}

SSL_CTX *tu_client_ctx(int version, const tu_cred *client_cred)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (ctx == NULL)
        goto fail;
    if (version != 0 && (!SSL_CTX_set_min_proto_version(ctx, version) ||
                         !SSL_CTX_set_max_proto_version(ctx, version)))
        goto fail;
    if (client_cred != NULL && (SSL_CTX_use_certificate(ctx, client_cred->cert) != 1 ||
                                SSL_CTX_use_PrivateKey(ctx, client_cred->key) != 1))
        goto fail;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, tu_client_new_session);
    return ctx;

fail:
    fprintf(stderr, "tls_util: cannot make a client SSL_CTX: %s\n",
            ERR_error_string(ERR_get_error(), NULL));
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
}

/* ---- handshakes -------------------------------------------------------- */

static int tu_want_io(int err)
{
    return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
}

/* The server suspended its handshake for a session lookup. OpenSSL 3 has no
 * SSL_ERROR_PENDING_SESSION (a BoringSSL extension); a library can suspend
 * through the ClientHello callback (SSL_ERROR_WANT_CLIENT_HELLO_CB) or an
 * ASYNC job (SSL_ERROR_WANT_ASYNC). Accept whichever the build offers. */
static int tu_is_pending(int err)
{
#ifdef SSL_ERROR_PENDING_SESSION
    if (err == SSL_ERROR_PENDING_SESSION)
        return 1;
#endif
    return err == SSL_ERROR_WANT_CLIENT_HELLO_CB || err == SSL_ERROR_WANT_ASYNC;
}

/* What an event loop would do: wait for the lookup's socket to become
 * readable, at most as long as the library says the lookup has left. */
static void tu_wait_pending(const SSL *server)
{
    int fd = sc_ssl_pending_fd(server);
    int left = sc_ssl_pending_timeout_ms(server);
    struct pollfd pfd = {.fd = fd, .events = POLLIN};

    if (fd < 0 || left <= 0)
        return;
    while (poll(&pfd, 1, left) < 0 && errno == EINTR)
        ;
}

static const char *tu_ssl_error_name(int err)
{
    switch (err) {
    case SSL_ERROR_SSL:
        return "SSL_ERROR_SSL";
    case SSL_ERROR_SYSCALL:
        return "SSL_ERROR_SYSCALL";
    case SSL_ERROR_ZERO_RETURN:
        return "SSL_ERROR_ZERO_RETURN";
    default:
        return "unexpected SSL error";
    }
}

/* Calls each side in turn until both have finished the handshake. */
static int tu_drive(SSL *client, SSL *server, tu_pending_fn on_pending, void *arg,
                    tu_hs_result *res)
{
    int64_t deadline = tu_now_us() + (int64_t)TU_HANDSHAKE_TIMEOUT_MS * 1000;
    int client_done = 0;
    int server_done = 0;
    char what[96];

    while (!client_done || !server_done) {
        if (tu_now_us() > deadline) {
            tu_set_error(res, "handshake timed out");
            return -1;
        }
        if (!client_done) {
            int rc;

            ERR_clear_error();
            rc = SSL_do_handshake(client);
            if (rc == 1) {
                client_done = 1;
            } else {
                int err = SSL_get_error(client, rc);

                if (!tu_want_io(err)) {
                    snprintf(what, sizeof(what), "client handshake: %s", tu_ssl_error_name(err));
                    tu_set_error(res, what);
                    return -1;
                }
            }
        }
        if (!server_done) {
            int64_t t0 = tu_now_us();
            long took;
            int rc;

            ERR_clear_error();
            rc = SSL_do_handshake(server);
            took = (long)(tu_now_us() - t0);
            if (took > res->max_server_call_us)
                res->max_server_call_us = took;
            if (rc == 1) {
                server_done = 1;
            } else {
                int err = SSL_get_error(server, rc);

                if (tu_is_pending(err)) {
                    res->pending++;
                    if (on_pending != NULL)
                        on_pending(server, arg);
                    tu_wait_pending(server);
                } else if (!tu_want_io(err)) {
                    snprintf(what, sizeof(what), "server handshake: %s", tu_ssl_error_name(err));
                    tu_set_error(res, what);
                    return -1;
                }
            }
        }
    }
    return 0;
}

/* One byte from server to client: by the time the client has read it, it
 * has processed every NewSessionTicket the server sent before it. */
static int tu_pump_byte(SSL *client, SSL *server, tu_hs_result *res)
{
    int64_t deadline = tu_now_us() + (int64_t)TU_HANDSHAKE_TIMEOUT_MS * 1000;
    int wrote = 0;
    unsigned char byte = 'x';

    for (;;) {
        int rc;

        if (tu_now_us() > deadline) {
            tu_set_error(res, "post-handshake byte timed out");
            return -1;
        }
        if (!wrote) {
            ERR_clear_error();
            rc = SSL_write(server, &byte, 1);
            if (rc == 1) {
                wrote = 1;
            } else if (!tu_want_io(SSL_get_error(server, rc))) {
                tu_set_error(res, "server write");
                return -1;
            }
        }
        ERR_clear_error();
        rc = SSL_read(client, &byte, 1);
        if (rc == 1)
            return 0;
        if (!tu_want_io(SSL_get_error(client, rc))) {
            tu_set_error(res, "client read");
            return -1;
        }
    }
}

static void tu_finish(SSL *ssl)
{
    if (ssl == NULL)
        return;
    ERR_clear_error();
    SSL_shutdown(ssl); /* sends close_notify: keeps the session resumable */
    ERR_clear_error();
}

int tu_handshake(SSL_CTX *client_ctx, SSL_CTX *server_ctx, SSL_SESSION *offer, tu_hs_result *res)
{
    return tu_handshake_hooked(client_ctx, server_ctx, offer, NULL, NULL, res);
}

int tu_handshake_hooked(SSL_CTX *client_ctx, SSL_CTX *server_ctx, SSL_SESSION *offer,
                        tu_pending_fn on_pending, void *arg, tu_hs_result *res)
{
    int64_t start = tu_now_us();
    int sv[2] = {-1, -1};
    SSL *client = NULL;
    SSL *server = NULL;
    SSL_SESSION *latest = NULL;

    memset(res, 0, sizeof(*res));
    ERR_clear_error();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(res->error, sizeof(res->error), "socketpair: %s", strerror(errno));
        goto fail;
    }
    client = SSL_new(client_ctx);
    server = SSL_new(server_ctx);
    if (client == NULL || server == NULL || !SSL_set_fd(client, sv[0]) ||
        !SSL_set_fd(server, sv[1]) || (offer != NULL && !SSL_set_session(client, offer))) {
        tu_set_error(res, "SSL setup");
        goto fail;
    }
    SSL_set_app_data(client, &latest);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    if (tu_drive(client, server, on_pending, arg, res) != 0 ||
        tu_pump_byte(client, server, res) != 0)
        goto fail;
    res->ok = 1;
    res->resumed = SSL_session_reused(client);
    res->server_resumed = SSL_session_reused(server);
    res->server_peer_cert = SSL_get0_peer_certificate(server) != NULL;
    res->version = SSL_version(client);
    tu_finish(client);
    tu_finish(server);
    /* TLS 1.2 resumption makes no new session: keep using the one offered. */
    res->session = latest != NULL ? latest : SSL_get1_session(client);
    latest = NULL;

fail:
    if (client != NULL)
        SSL_set_app_data(client, NULL);
    SSL_SESSION_free(latest);
    SSL_free(client);
    SSL_free(server);
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    res->elapsed_us = (long)(tu_now_us() - start);
    return res->ok ? 0 : -1;
}

static int tu_connect_loopback(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* Blocking connect: on loopback it completes or is refused at once. */
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0 ||
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Waits until fd is ready for what `err` asks, or the deadline. */
static int tu_wait_io(int fd, int err, int64_t deadline)
{
    struct pollfd pfd = {.fd = fd, .events = err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
    int64_t left_ms = (deadline - tu_now_us()) / 1000;
    int rc;

    if (left_ms <= 0)
        return -1;
    do {
        rc = poll(&pfd, 1, (int)left_ms);
    } while (rc < 0 && errno == EINTR);
    return rc > 0 ? 0 : -1;
}

int tu_tcp_handshake(SSL_CTX *client_ctx, int port, SSL_SESSION *offer, int wait_session_ms,
                     tu_hs_result *res)
{
    int64_t start = tu_now_us();
    int64_t deadline = start + (int64_t)TU_HANDSHAKE_TIMEOUT_MS * 1000;
    SSL_SESSION *latest = NULL;
    SSL *client = NULL;
    int fd;

    memset(res, 0, sizeof(*res));
    ERR_clear_error();
    fd = tu_connect_loopback(port);
    if (fd < 0) {
        snprintf(res->error, sizeof(res->error), "connect to port %d: %s", port, strerror(errno));
        goto fail;
    }
    client = SSL_new(client_ctx);
    if (client == NULL || !SSL_set_fd(client, fd) ||
        (offer != NULL && !SSL_set_session(client, offer))) {
        tu_set_error(res, "SSL setup");
        goto fail;
    }
    SSL_set_app_data(client, &latest);
    for (;;) {
        int rc;
        int err;

        ERR_clear_error();
        rc = SSL_connect(client);
        if (rc == 1)
            break;
        err = SSL_get_error(client, rc);
        if (!tu_want_io(err) || tu_wait_io(fd, err, deadline) != 0) {
            tu_set_error(res, tu_want_io(err) ? "handshake timed out" : "client handshake");
            goto fail;
        }
    }
    res->ok = 1;
    res->resumed = SSL_session_reused(client);
    res->version = SSL_version(client);
    /* TLS 1.3 tickets come after the handshake: read (and drop) whatever
     * arrives until the new-session callback has fired, for a bounded time. */
    if (res->version == TLS1_3_VERSION) {
        int64_t ticket_deadline = tu_now_us() + (int64_t)wait_session_ms * 1000;

        while (latest == NULL) {
            unsigned char sink[256];
            int rc;
            int err;

            ERR_clear_error();
            rc = SSL_read(client, sink, sizeof(sink));
            if (rc > 0)
                continue;
            err = SSL_get_error(client, rc);
            /* A ticket is processed inside SSL_read, which then waits for
             * application data and says WANT_READ: look before waiting. */
            if (latest != NULL || !tu_want_io(err) || tu_wait_io(fd, err, ticket_deadline) != 0)
                break;
        }
    }
    tu_finish(client);
    res->session = latest != NULL ? latest : SSL_get1_session(client);
    latest = NULL;

fail:
    if (client != NULL)
        SSL_set_app_data(client, NULL);
    SSL_SESSION_free(latest);
    SSL_free(client);
    if (fd >= 0)
        close(fd);
    res->elapsed_us = (long)(tu_now_us() - start);
    return res->ok ? 0 : -1;
}

void tu_hs_result_clear(tu_hs_result *res)
{
    SSL_SESSION_free(res->session);
    res->session = NULL;
}

size_t tu_session_server_key(const SSL_SESSION *sess, unsigned char out[32])
{
    const unsigned char *bytes;
    size_t len;

    if (sess == NULL)
        return 0;
    if (SSL_SESSION_get_protocol_version(sess) == TLS1_3_VERSION) {
        SSL_SESSION_get0_ticket(sess, &bytes, &len);
    } else {
        unsigned int id_len = 0;

        bytes = SSL_SESSION_get_id(sess, &id_len);
        len = id_len;
    }
    if (bytes == NULL || len == 0 || len > 32)
        return 0;
    memcpy(out, bytes, len);
    return len;
}
