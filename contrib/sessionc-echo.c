/* sessionc-echo.c — the smallest real user of libsessionc: a TLS echo server
 * whose sessions resume on every other sessionc-echo that shares the same
 * sessiond.
 *
 *   sessionc-echo -c cert.pem -k key.pem -p PORT [-l ADDR] [-s SERVERS]
 *                 [-1.2|-1.3] [--no-tickets] [-t TIMEOUT_MS] [-K KEYFILE] [-v]
 *
 * How it works: one process, one connection at a time. It accepts, runs the
 * handshake (libsessionc looks the client's session up in sessiond and
 * stores new ones), echoes what it reads until the client closes, and takes
 * the next connection. The SSL_CTX is configured like any server's; the only
 * sessiond-specific lines are sc_client_new, sc_set_session_id_context (the
 * context every server of the cluster shares, which also names the v2
 * namespace its sessions live in) and sc_attach. -K gives the cluster key
 * file: every datagram to sessiond is then sealed. `-p 0` binds a
 * free port; the line "listening on ADDR:PORT" on stderr names it. SIGTERM or
 * SIGINT ends the loop between connections and prints the counters.
 *
 * Limits, on purpose: blocking sockets and no concurrency, so a client is
 * served at most IO_TIMEOUT_S seconds of silence before it is dropped. A
 * server that must never block would use SC_ATTACH_ASYNC with an event loop;
 * benchmarks that need parallel clients run several instances.
 *
 * TLS 1.2 sessions are shared as session IDs; pass --no-tickets, or the
 * client resumes with a ticket only the issuing process can decrypt. With
 * TLS 1.3, --no-tickets gives stateful tickets, which are shared too.
 */
#include "sessionc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define SID_CONTEXT  "sessionc-echo"
#define IO_TIMEOUT_S 10

static volatile sig_atomic_t stop_requested;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: sessionc-echo -c CERT -k KEY -p PORT [-l ADDR] [-s SERVERS] [-1.2|-1.3]\n"
                 "                     [--no-tickets] [-t TIMEOUT_MS] [-K KEYFILE] [-v]\n");
}

/* The reason of OpenSSL's latest error, never NULL. */
static const char *tls_reason(const char *fallback)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;

    return reason != NULL ? reason : fallback;
}

/* A listening TCP socket on addr:port (numeric, IPv4 or IPv6), or -1. */
static int listen_on(const char *addr, const char *port, char *bound, size_t bound_len)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    struct sockaddr_storage ss;
    socklen_t ss_len = sizeof(ss);
    char host[NI_MAXHOST];
    char serv[NI_MAXSERV];
    int one = 1;
    int fd = -1;
    int gai = getaddrinfo(addr, port, &hints, &ai);

    if (gai != 0) {
        fprintf(stderr, "sessionc-echo: bad address %s port %s: %s\n", addr, port,
                gai_strerror(gai));
        return -1;
    }
    fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &ss_len) != 0 ||
        getnameinfo((struct sockaddr *)&ss, ss_len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        goto fail;
    snprintf(bound, bound_len, ai->ai_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, serv);
    freeaddrinfo(ai);
    return fd;

fail:
    fprintf(stderr, "sessionc-echo: cannot listen on %s port %s: %s\n", addr, port,
            strerror(errno));
    if (fd >= 0)
        close(fd);
    freeaddrinfo(ai);
    return -1;
}

/* One connection: handshake, echo until the client closes, shut down. */
static void serve(SSL_CTX *ctx, int fd, int verbose, unsigned long *resumed)
{
    struct timeval tv = {.tv_sec = IO_TIMEOUT_S};
    char buf[16384];
    SSL *ssl = SSL_new(ctx);
    int n;

    ERR_clear_error();
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (ssl == NULL || !SSL_set_fd(ssl, fd) || SSL_accept(ssl) != 1) {
        if (verbose)
            fprintf(stderr, "sessionc-echo: handshake failed: %s\n",
                    tls_reason("connection closed or timed out"));
        goto done;
    }
    *resumed += (unsigned long)SSL_session_reused(ssl);
    if (verbose)
        fprintf(stderr, "sessionc-echo: %s %s\n", SSL_get_version(ssl),
                SSL_session_reused(ssl) ? "resumed" : "full handshake");
    while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0)
        if (SSL_write(ssl, buf, n) <= 0)
            break;
    SSL_shutdown(ssl);

done:
    SSL_free(ssl);
    close(fd);
}

int main(int argc, char **argv)
{
    static const struct option long_opts[] = {
        {"1.2", no_argument, NULL, '2'},        {"1.3", no_argument, NULL, '3'},
        {"no-tickets", no_argument, NULL, 'n'}, {"key-file", required_argument, NULL, 'K'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    const char *cert = NULL;
    const char *key = NULL;
    const char *port = NULL;
    const char *addr = "127.0.0.1";
    const char *servers = "127.0.0.1";
    int version = 0;
    int no_tickets = 0;
    int verbose = 0;
    unsigned long connections = 0;
    unsigned long resumed = 0;
    char bound[NI_MAXHOST + NI_MAXSERV + 4];
    char err[256];
    sc_options opt;
    sc_client *sc = NULL;
    SSL_CTX *ctx = NULL;
    sc_stats st;
    struct sigaction sa;
    sigset_t stop_set;
    sigset_t wait_set;
    int lfd = -1;
    int status = EXIT_FAILURE;
    int ch;

    sc_options_init(&opt);
    /* getopt_long_only, so that "-1.2" and "-1.3" are options too. */
    while ((ch = getopt_long_only(argc, argv, "c:k:l:p:s:t:K:vh", long_opts, NULL)) != -1) {
        switch (ch) {
        case 'c':
            cert = optarg;
            break;
        case 'k':
            key = optarg;
            break;
        case 'l':
            addr = optarg;
            break;
        case 'p':
            port = optarg;
            break;
        case 's':
            servers = optarg;
            break;
        case 't': {
            char *end;
            unsigned long ms = strtoul(optarg, &end, 10);

            if (*optarg == '\0' || *end != '\0' || ms == 0 || ms > 60000) {
                fprintf(stderr, "sessionc-echo: -t wants 1..60000 milliseconds, not %s\n", optarg);
                return 2;
            }
            opt.timeout_ms = (unsigned)ms;
            break;
        }
        case '2':
            version = TLS1_2_VERSION;
            break;
        case '3':
            version = TLS1_3_VERSION;
            break;
        case 'n':
            no_tickets = 1;
            break;
        case 'K':
            opt.key_file = optarg; /* read and checked by sc_client_new */
            break;
        case 'v':
            verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (cert == NULL || key == NULL || port == NULL || optind != argc) {
        fprintf(stderr, "sessionc-echo: %s\n",
                optind != argc ? "unexpected argument" : "-c, -k and -p are required");
        usage(stderr);
        return 2;
    }

    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL || (version != 0 && (!SSL_CTX_set_min_proto_version(ctx, version) ||
                                         !SSL_CTX_set_max_proto_version(ctx, version)))) {
        fprintf(stderr, "sessionc-echo: cannot set up TLS\n");
        goto done;
    }
    for (int i = 0; i < 2; i++) {
        const char *path = i == 0 ? cert : key;

        if (access(path, R_OK) != 0) {
            fprintf(stderr, "sessionc-echo: %s: %s\n", path, strerror(errno));
            goto done;
        }
    }
    if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        fprintf(stderr, "sessionc-echo: -c %s: %s\n", cert, tls_reason("unreadable or not PEM"));
        goto done;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        fprintf(stderr, "sessionc-echo: -k %s: %s\n", key,
                tls_reason("unreadable, not PEM, or not the certificate's key"));
        goto done;
    }
    if (no_tickets)
        SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    /* sessiond on loopback is the cache, as with stunnel's `sessiond =`.
     * Keeping OpenSSL's own cache as well would save a lookup per local
     * resumption, but freeing the SSL_CTX at exit flushes that cache through
     * the remove callback, which would delete the sessions cluster-wide. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    /* Every server of the cluster must use the same context, or OpenSSL
     * refuses the sessions the others stored; libsessionc files them under
     * its namespace. */
    if (sc_set_session_id_context(ctx, (const unsigned char *)SID_CONTEXT,
                                  sizeof(SID_CONTEXT) - 1) != 0) {
        fprintf(stderr, "sessionc-echo: cannot set the session-ID context\n");
        goto done;
    }

    sc = sc_client_new(servers, &opt, err, sizeof(err));
    if (sc == NULL) {
        fprintf(stderr, "sessionc-echo: %s\n", err);
        goto done;
    }
    if (sc_attach(sc, ctx, 0) != 0) {
        fprintf(stderr, "sessionc-echo: cannot attach libsessionc to the SSL_CTX\n");
        goto done;
    }

    lfd = listen_on(addr, port, bound, sizeof(bound));
    if (lfd < 0)
        goto done;

    /* The stop signals are blocked except inside ppoll, so one arriving
     * between connections can never be lost before the next wait. */
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGTERM);
    sigaddset(&stop_set, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_set, &wait_set);
    sigdelset(&wait_set, SIGTERM);
    sigdelset(&wait_set, SIGINT);

    fprintf(stderr, "sessionc-echo: listening on %s\n", bound);
    while (!stop_requested) {
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        int fd;

        if (ppoll(&pfd, 1, NULL, &wait_set) < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "sessionc-echo: poll: %s\n", strerror(errno));
            goto done;
        }
        fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue; /* the client went away already, or out of descriptors */
        connections++;
        serve(ctx, fd, verbose, &resumed);
    }
    sc_get_stats(sc, &st);
    fprintf(stderr,
            "sessionc-echo: connections=%lu resumed=%lu lookups=%llu hits=%llu misses=%llu "
            "timeouts=%llu skipped=%llu stores=%llu auth_failures=%llu\n",
            connections, resumed, (unsigned long long)st.lookups, (unsigned long long)st.hits,
            (unsigned long long)st.misses, (unsigned long long)st.timeouts,
            (unsigned long long)st.skipped, (unsigned long long)st.stores,
            (unsigned long long)st.auth_failures);
    status = EXIT_SUCCESS;

done:
    if (lfd >= 0)
        close(lfd);
    SSL_CTX_free(ctx); /* before the client it is attached to */
    if (sc != NULL)
        sc_client_free(sc);
    return status;
}
