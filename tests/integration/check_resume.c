/* check_resume.c — the proof: two separate TLS servers resume each other's
 * sessions through a real sessiond, with libsessionc.
 *
 * How it works: a real sessiond runs on a free loopback port (the harness).
 * "Server A" and "server B" are two independent server SSL_CTXs with the
 * same certificate and session-ID context, each with its own sc_client, as
 * two processes of a cluster would be. Their internal session caches are
 * switched off (SSL_SESS_CACHE_NO_INTERNAL), so a resumption can only come
 * from a lookup that hit in sessiond, never from OpenSSL's own memory. A
 * client handshakes with A, then reconnects alternately to B and A, each
 * time offering the newest session it holds. Handshakes run in-process over
 * socketpairs (tests/lib/tls_util.c): real OpenSSL on both sides.
 *
 * What OpenSSL 3.0 does, as these tests pin down:
 * - TLS 1.2 with SSL_OP_NO_TICKET: one new-session callback per full
 *   handshake, none per resumption (the session ID stays the same), and the
 *   other SSL_CTX resumes through its get-session callback.
 * - TLS 1.3 with SSL_OP_NO_TICKET: stateful tickets, and they DO go through
 *   the callbacks: two new-session calls per full handshake (two tickets),
 *   one per resumption, each ticket being a 32-byte session ID the other
 *   SSL_CTX looks up. So 1 full + 100 resumptions store 102 sessions.
 * - TLS 1.3 with stateless tickets: never looked up (the ticket carries the
 *   session), so another SSL_CTX, with its own ticket keys, cannot resume.
 * - A session with an RSA-2048 client certificate is ~900 bytes of DER
 *   (901 for TLS 1.2, 904 for TLS 1.3 here): over stunnel's 512-byte limit,
 *   well within one datagram; it resumes across servers with the verified
 *   peer certificate, in both versions.
 * - OpenSSL 3.0 has no SSL_ERROR_PENDING_SESSION (a BoringSSL feature): the
 *   event-loop mode suspends from the ClientHello callback instead, and the
 *   handshake reports SSL_ERROR_WANT_CLIENT_HELLO_CB.
 *
 * Protocol: everything runs over v2 sealed with a cluster key (the daemon
 * is started with --key-file, the clients get the same file), with the
 * session-ID context declared through sc_set_session_id_context, so the
 * entries live in that context's namespace. The basic scenarios (TLS 1.2
 * IDs, TLS 1.3 stateful tickets, client certificates) run once more over v1
 * against a daemon without a key, as a stunnel-era deployment would.
 *
 * The largest session: v2 carries values up to PROTO_V2_MAX_VALUE (65387)
 * bytes, so a client certificate padded with a large private extension
 * makes a TLS 1.2 session of exactly that many bytes of DER (calibrated from
 * a first handshake, since the rest of the session is fixed-size); it
 * resumes across servers, and one byte more is refused by the library
 * (counted too_large) and does not.
 */
#include <check.h>

#include "checks.h"
#include "harness.h"
#include "proto_v2.h"
#include "sessionc.h"
#include "tls_util.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#define RECONNECTIONS    100
#define DOWN_HANDSHAKES  1000
#define THREADS          8
#define PAIRS_PER_THREAD 25 /* 50 handshakes per thread: full, then resumed elsewhere */
#define ASYNC_ROUNDS     20
#define RECOVERY_LIMIT   3000 /* reconnections allowed for the client to recover */
#define RECOVERY_TIME_MS 15000

static tu_cred g_server; /* EC P-256: the size of the server certificate does not matter */
static tu_cred g_ca;     /* RSA-2048 CA for client certificates */
static tu_cred g_client; /* RSA-2048 client certificate issued by g_ca */
static char g_keydir[256];
static char g_key[300]; /* the cluster key file, mode 0600, shared by every test */

#define SID_CTX "sessiond-test" /* what tu_server_ctx sets; declared again below */

/* How a test talks to sessiond. */
enum wire { WIRE_V2_SEALED = 0, WIRE_V1 = 1 };

/* Starts the daemon for `wire` (sealed v2: with --key-file) plus extra args. */
static void start_daemon_for(th_daemon *d, enum wire wire, const char *port_arg)
{
    const char *args[6];
    int n = 0;

    if (wire == WIRE_V2_SEALED) {
        args[n++] = "--key-file";
        args[n++] = g_key;
    }
    if (port_arg != NULL) {
        args[n++] = "-p";
        args[n++] = port_arg;
    }
    args[n] = NULL;
    ck_assert_int_eq(th_daemon_start(d, args), 0);
}

/* Options for `wire`: v2 with the key, or v1. */
static void options_for(sc_options *opt, enum wire wire)
{
    sc_options_init(opt);
    if (wire == WIRE_V2_SEALED)
        opt->key_file = g_key;
    else
        opt->protocol = 1;
}

/* A raw client that reads what the cluster's servers stored: their
 * namespace, their key. */
static sc_client *raw_reader(int port, enum wire wire)
{
    char servers[64], err[512];
    sc_options opt;
    sc_client *c;

    options_for(&opt, wire);
    ck_assert_int_eq(sc_namespace_from_context(SID_CTX, strlen(SID_CTX), opt.default_namespace), 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", port);
    c = sc_client_new(servers, &opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "sc_client_new: %s", err);
    return c;
}

/* Two servers of one cluster: index 0 is A, 1 is B. */
typedef struct cluster {
    SSL_CTX *ctx[2];
    sc_client *sc[2];
} cluster;

/* sopt NULL: the defaults for sealed v2 (the key file). */
static void cluster_open(cluster *cl, int port, const tu_server_opts *opts, const sc_options *sopt,
                         int attach_flags)
{
    char servers[64];
    char err[512];
    sc_options sealed;

    if (sopt == NULL) {
        options_for(&sealed, WIRE_V2_SEALED);
        sopt = &sealed;
    }
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", port);
    for (int i = 0; i < 2; i++) {
        cl->ctx[i] = tu_server_ctx(&g_server, opts);
        ck_assert_ptr_nonnull(cl->ctx[i]);
        ck_assert_int_eq(
            sc_set_session_id_context(cl->ctx[i], (const unsigned char *)SID_CTX, strlen(SID_CTX)),
            0);
        cl->sc[i] = sc_client_new(servers, sopt, err, sizeof(err));
        ck_assert_msg(cl->sc[i] != NULL, "sc_client_new(%s): %s", servers, err);
        ck_assert_int_eq(sc_attach(cl->sc[i], cl->ctx[i], attach_flags), 0);
    }
}

static void cluster_close(cluster *cl)
{
    for (int i = 0; i < 2; i++) {
        SSL_CTX_free(cl->ctx[i]); /* before the client, as sessionc.h requires */
        sc_client_free(cl->sc[i]);
    }
}

static void cluster_stats(const cluster *cl, sc_stats *a, sc_stats *b)
{
    sc_get_stats(cl->sc[0], a);
    sc_get_stats(cl->sc[1], b);
}

/* A full handshake with server `which`; returns the client's session. */
static SSL_SESSION *full_handshake(const cluster *cl, SSL_CTX *client_ctx, int which)
{
    tu_hs_result res;

    ck_assert_msg(tu_handshake(client_ctx, cl->ctx[which], NULL, &res) == 0, "full handshake: %s",
                  res.error);
    ck_assert_int_eq(res.resumed, 0);
    ck_assert_ptr_nonnull(res.session);
    return res.session;
}

typedef struct round_stats {
    int done;      /* handshakes completed */
    int failed;    /* handshakes that did not complete */
    int resumed;   /* ...that resumed (client view) */
    int peer_cert; /* resumed ones where the server holds a client certificate */
} round_stats;

/* `count` reconnections alternating B, A, B..., each offering the newest
 * session (*sess is replaced as new ones arrive). */
static void alternate(const cluster *cl, SSL_CTX *client_ctx, SSL_SESSION **sess, int count,
                      round_stats *st)
{
    memset(st, 0, sizeof(*st));
    for (int i = 0; i < count; i++) {
        tu_hs_result res;
        int which = i % 2 == 0 ? 1 : 0;

        if (tu_handshake(client_ctx, cl->ctx[which], *sess, &res) != 0) {
            fprintf(stderr, "reconnection %d to %c failed: %s\n", i, "AB"[which], res.error);
            st->failed++;
            continue;
        }
        st->done++;
        st->resumed += res.resumed;
        st->peer_cert += res.resumed && res.server_peer_cert;
        SSL_SESSION_free(*sess);
        *sess = res.session;
    }
}

static void stop_daemon(th_daemon *d)
{
    ck_assert_int_eq(th_daemon_stop(d), 0);
}

/* The daemon's view: it stored and served what the clients say they sent. */
static void assert_daemon_saw(th_daemon *d, long long min_puts, long long min_hits)
{
    char line[1024];

    ck_assert_int_eq(th_daemon_stats(d, line, sizeof(line)), 0);
    ck_assert_msg(th_stat(line, "puts") >= min_puts, "want puts >= %lld: %s", min_puts, line);
    ck_assert_msg(th_stat(line, "hits") >= min_hits, "want hits >= %lld: %s", min_hits, line);
}

/* Every datagram the daemon got was of the expected kind. */
static void assert_daemon_wire(th_daemon *d, enum wire wire)
{
    char line[2048];

    ck_assert_int_eq(th_daemon_stats(d, line, sizeof(line)), 0);
    if (wire == WIRE_V2_SEALED)
        ck_assert_msg(th_stat(line, "sealed") > 0 &&
                          th_stat(line, "sealed") == th_stat(line, "v2") &&
                          th_stat(line, "v1") == 0,
                      "%s", line);
    else
        ck_assert_msg(th_stat(line, "v1") > 0 && th_stat(line, "v2") == 0, "%s", line);
    ck_assert_msg(th_stat(line, "auth_failed") + th_stat(line, "denied") +
                          th_stat(line, "unknown_key") + th_stat(line, "stale") ==
                      0,
                  "%s", line);
}

/* The alternating run shared by the TLS 1.2 and 1.3 tests. */
static void check_cross_resumption(int version, uint64_t want_stores, enum wire wire)
{
    tu_server_opts opts = {.version = version, .no_ticket = 1, .no_internal_cache = 1};
    sc_options sopt;
    th_daemon d;
    cluster cl;
    round_stats st;
    sc_stats a;
    sc_stats b;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;

    start_daemon_for(&d, wire, NULL);
    options_for(&sopt, wire);
    cluster_open(&cl, d.port, &opts, &sopt, 0);
    client_ctx = tu_client_ctx(version, NULL);
    ck_assert_ptr_nonnull(client_ctx);

    sess = full_handshake(&cl, client_ctx, 0);
    alternate(&cl, client_ctx, &sess, RECONNECTIONS, &st);
    ck_assert_int_eq(st.failed, 0);
    ck_assert_int_eq(st.resumed, RECONNECTIONS);

    /* B had never seen the client before its first resumption, and neither
     * server keeps sessions itself: every resumption was a sessiond hit. */
    cluster_stats(&cl, &a, &b);
    ck_assert_int_eq(SSL_CTX_sess_number(cl.ctx[0]), 0);
    ck_assert_int_eq(SSL_CTX_sess_number(cl.ctx[1]), 0);
    ck_assert_uint_eq(b.hits, RECONNECTIONS / 2);
    ck_assert_uint_eq(a.hits, RECONNECTIONS / 2);
    ck_assert_uint_eq(a.timeouts + b.timeouts + a.errors + b.errors, 0);
    ck_assert_uint_eq(a.auth_failures + b.auth_failures + a.late_answers + b.late_answers, 0);
    ck_assert_uint_eq(a.stores + b.stores, want_stores);
    assert_daemon_saw(&d, 1, RECONNECTIONS);
    assert_daemon_wire(&d, wire);

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    cluster_close(&cl);
    stop_daemon(&d);
}

START_TEST(test_tls12_session_ids)
{
    /* One stored session, reused by all 100 resumptions. _i: enum wire. */
    check_cross_resumption(TLS1_2_VERSION, 1, (enum wire)_i);
}
END_TEST

START_TEST(test_tls13_stateful_tickets)
{
    /* Two tickets from the full handshake, one from each resumption. */
    check_cross_resumption(TLS1_3_VERSION, 2 + RECONNECTIONS, (enum wire)_i);
}
END_TEST

/* The control for the test above: without SSL_OP_NO_TICKET a TLS 1.3
 * ticket is encrypted state that OpenSSL never looks up, so B (own ticket
 * keys) cannot resume A's tickets and a shared cache would not help. */
START_TEST(test_tls13_stateless_tickets_not_shared)
{
    tu_server_opts opts = {.version = TLS1_3_VERSION, .no_internal_cache = 1};
    th_daemon d;
    cluster cl;
    round_stats st;
    sc_stats a;
    sc_stats b;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;

    start_daemon_for(&d, WIRE_V2_SEALED, NULL);
    cluster_open(&cl, d.port, &opts, NULL, 0);
    client_ctx = tu_client_ctx(TLS1_3_VERSION, NULL);
    ck_assert_ptr_nonnull(client_ctx);
    sess = full_handshake(&cl, client_ctx, 0);
    alternate(&cl, client_ctx, &sess, 10, &st);
    ck_assert_int_eq(st.failed, 0);
    ck_assert_int_eq(st.resumed, 0);
    cluster_stats(&cl, &a, &b);
    ck_assert_uint_eq(a.lookups + b.lookups, 0);

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    cluster_close(&cl);
    stop_daemon(&d);
}
END_TEST

/* A client-certificate session (too big for stunnel) resumes across
 * servers, keeps the verified peer, and is stored whole in sessiond. */
static void check_client_cert(int version, enum wire wire)
{
    tu_server_opts opts = {
        .version = version, .no_ticket = 1, .no_internal_cache = 1, .verify_ca = &g_ca};
    th_daemon d;
    cluster cl;
    round_stats st;
    sc_stats a;
    sc_stats b;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    sc_client *raw;
    sc_options sopt;
    unsigned char key[32];
    size_t key_len;
    static uint8_t value[65536];
    size_t value_len = 0;
    const unsigned char *p = value;
    SSL_SESSION *stored;
    tu_hs_result res;

    start_daemon_for(&d, wire, NULL);
    options_for(&sopt, wire);
    cluster_open(&cl, d.port, &opts, &sopt, 0);
    client_ctx = tu_client_ctx(version, &g_client);
    ck_assert_ptr_nonnull(client_ctx);

    ck_assert_msg(tu_handshake(client_ctx, cl.ctx[0], NULL, &res) == 0, "full: %s", res.error);
    ck_assert_int_eq(res.server_peer_cert, 1);
    sess = res.session;
    alternate(&cl, client_ctx, &sess, 10, &st);
    ck_assert_int_eq(st.failed, 0);
    ck_assert_int_eq(st.resumed, 10);
    ck_assert_int_eq(st.peer_cert, 10);
    cluster_stats(&cl, &a, &b);
    ck_assert_uint_eq(a.too_large + b.too_large, 0);
    ck_assert_uint_eq(a.hits + b.hits, 10);

    /* Read back what the servers stored under the client's session: the
     * whole DER, client certificate included. */
    key_len = tu_session_server_key(sess, key);
    ck_assert_uint_gt(key_len, 0);
    raw = raw_reader(d.port, wire);
    ck_assert_int_eq(sc_get(raw, key, key_len, value, sizeof(value), &value_len), SC_OK);
    fprintf(stderr, "TLS %s client-certificate session over %s: %zu bytes of DER\n",
            version == TLS1_3_VERSION ? "1.3" : "1.2", wire == WIRE_V1 ? "v1" : "sealed v2",
            value_len);
    ck_assert_uint_gt(value_len, 512);
    stored = d2i_SSL_SESSION(NULL, &p, (long)value_len);
    ck_assert_ptr_nonnull(stored);
    ck_assert_ptr_nonnull(SSL_SESSION_get0_peer(stored));
    SSL_SESSION_free(stored);
    OPENSSL_cleanse(value, value_len);
    sc_client_free(raw);

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    cluster_close(&cl);
    stop_daemon(&d);
}

START_TEST(test_client_cert_session)
{
    /* _i: bit 0 the version, bit 1 the wire. */
    check_client_cert(_i % 2 == 0 ? TLS1_2_VERSION : TLS1_3_VERSION, (enum wire)(_i / 2));
}
END_TEST

/* A UDP socket that never answers: a daemon host that is down or
 * unreachable, the case where every lookup would cost the full timeout. */
static int black_hole(int *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

/* How many timeouts a breaker may let through in `ms`: the first
 * breaker_failures, then one probe per back-off period, each period twice
 * the one before. An upper bound: the schedule really starts only after the
 * first failures, and each probe's own timeout delays the next. */
static unsigned long long breaker_allowance(const sc_options *opt, int64_t ms)
{
    unsigned long long allowed = opt->breaker_failures;
    int64_t elapsed = 0;
    unsigned period = opt->backoff_min_ms;

    for (;;) {
        elapsed += period;
        if (elapsed > ms)
            return allowed;
        allowed++;
        period = period > opt->backoff_max_ms / 2 ? opt->backoff_max_ms : period * 2;
    }
}

/* With no daemon answering, every handshake still completes (as a full
 * one), and the circuit breaker keeps the cost to a handful of timeouts
 * instead of one per handshake: 3 + one probe per back-off period, so 5
 * for a run of 3 to 7 seconds. */
START_TEST(test_daemon_down)
{
    tu_server_opts opts = {.version = TLS1_2_VERSION, .no_ticket = 1, .no_internal_cache = 1};
    sc_options sopt;
    cluster cl;
    round_stats st;
    sc_stats a;
    sc_stats b;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    int port;
    int hole = black_hole(&port);
    int64_t start;
    int64_t took;
    unsigned long long allowed;

    options_for(&sopt, WIRE_V2_SEALED);
    sopt.timeout_ms = 100; /* breaker thresholds stay at their defaults */
    cluster_open(&cl, port, &opts, &sopt, 0);
    client_ctx = tu_client_ctx(TLS1_2_VERSION, NULL);
    ck_assert_ptr_nonnull(client_ctx);

    start = th_now_ms();
    sess = full_handshake(&cl, client_ctx, 0);
    alternate(&cl, client_ctx, &sess, DOWN_HANDSHAKES, &st);
    took = th_now_ms() - start;
    cluster_stats(&cl, &a, &b);
    allowed = breaker_allowance(&sopt, took);
    fprintf(stderr,
            "daemon down: %d handshakes in %lld ms; timeouts A=%llu B=%llu (at most %llu "
            "each), skipped A=%llu B=%llu\n",
            DOWN_HANDSHAKES + 1, (long long)took, (unsigned long long)a.timeouts,
            (unsigned long long)b.timeouts, allowed, (unsigned long long)a.skipped,
            (unsigned long long)b.skipped);
    ck_assert_int_eq(st.failed, 0);
    ck_assert_int_eq(st.resumed, 0);
    ck_assert_uint_ge(a.timeouts, sopt.breaker_failures);
    ck_assert_uint_le(a.timeouts, allowed);
    ck_assert_uint_ge(b.timeouts, sopt.breaker_failures);
    ck_assert_uint_le(b.timeouts, allowed);
    ck_assert_uint_gt(a.skipped + b.skipped, 0);
    /* Without the breaker this would be DOWN_HANDSHAKES x 100 ms = 100 s. */
    ck_assert_int_lt(took, 30000);

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    cluster_close(&cl);
    close(hole);
}
END_TEST

/* Kill the daemon mid-run, restart it on the same port: handshakes never
 * fail meanwhile, and once the back-off has passed resumption works again. */
START_TEST(test_daemon_restart)
{
    tu_server_opts opts = {.version = TLS1_2_VERSION, .no_ticket = 1, .no_internal_cache = 1};
    sc_options sopt;
    th_daemon d;
    cluster cl;
    round_stats st;
    sc_stats a;
    sc_stats b;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    char port_arg[16];
    int port;
    int tries = 0;
    int recovered = 0;
    int64_t deadline;

    options_for(&sopt, WIRE_V2_SEALED);
    sopt.timeout_ms = 100;
    sopt.backoff_min_ms = 100;
    sopt.backoff_max_ms = 400;
    start_daemon_for(&d, WIRE_V2_SEALED, NULL);
    port = d.port;
    cluster_open(&cl, port, &opts, &sopt, 0);
    client_ctx = tu_client_ctx(TLS1_2_VERSION, NULL);
    ck_assert_ptr_nonnull(client_ctx);

    sess = full_handshake(&cl, client_ctx, 0);
    alternate(&cl, client_ctx, &sess, 4, &st);
    ck_assert_int_eq(st.resumed, 4);

    stop_daemon(&d);
    alternate(&cl, client_ctx, &sess, 20, &st);
    ck_assert_int_eq(st.failed, 0);
    ck_assert_int_eq(st.resumed, 0);
    cluster_stats(&cl, &a, &b);
    ck_assert_uint_gt(a.timeouts + a.errors + b.timeouts + b.errors, 0);

    snprintf(port_arg, sizeof(port_arg), "%d", port);
    start_daemon_for(&d, WIRE_V2_SEALED, port_arg);
    ck_assert_int_eq(d.port, port);
    /* The restarted daemon is empty and the breakers may still hold the
     * servers off: reconnect until a resumption comes through again. */
    deadline = th_now_ms() + RECOVERY_TIME_MS;
    while (!recovered && tries < RECOVERY_LIMIT && th_now_ms() < deadline) {
        alternate(&cl, client_ctx, &sess, 1, &st);
        ck_assert_int_eq(st.failed, 0);
        recovered = st.resumed;
        tries++;
    }
    fprintf(stderr, "restart: resumed again after %d reconnections\n", tries);
    ck_assert_msg(recovered, "no resumption within %d reconnections", tries);
    /* And it stays recovered, on both servers. */
    alternate(&cl, client_ctx, &sess, 10, &st);
    ck_assert_int_eq(st.resumed, 10);
    assert_daemon_saw(&d, 1, 10);

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    cluster_close(&cl);
    stop_daemon(&d);
}
END_TEST

typedef struct worker {
    const cluster *cl;
    SSL_CTX *client_ctx;
    int full;
    int resumed;
    int failed;
} worker;

/* Each pair: a full handshake on one server, a resumption on the other. */
static void *worker_main(void *arg)
{
    worker *w = arg;

    for (int j = 0; j < PAIRS_PER_THREAD; j++) {
        int first = j % 2;
        tu_hs_result res;
        SSL_SESSION *sess;

        if (tu_handshake(w->client_ctx, w->cl->ctx[first], NULL, &res) != 0) {
            w->failed++;
            continue;
        }
        w->full += !res.resumed;
        sess = res.session;
        if (tu_handshake(w->client_ctx, w->cl->ctx[1 - first], sess, &res) != 0) {
            w->failed++;
        } else {
            w->resumed += res.resumed;
            tu_hs_result_clear(&res);
        }
        SSL_SESSION_free(sess);
    }
    return NULL;
}

START_TEST(test_threads)
{
    tu_server_opts opts = {.version = TLS1_2_VERSION, .no_ticket = 1, .no_internal_cache = 1};
    th_daemon d;
    cluster cl;
    sc_stats a;
    sc_stats b;
    SSL_CTX *client_ctx;
    pthread_t tid[THREADS];
    worker w[THREADS];
    int full = 0;
    int resumed = 0;
    int failed = 0;

    start_daemon_for(&d, WIRE_V2_SEALED, NULL);
    cluster_open(&cl, d.port, &opts, NULL, 0);
    client_ctx = tu_client_ctx(TLS1_2_VERSION, NULL);
    ck_assert_ptr_nonnull(client_ctx);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (worker){.cl = &cl, .client_ctx = client_ctx};
        ck_assert_int_eq(pthread_create(&tid[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(tid[i], NULL);
        full += w[i].full;
        resumed += w[i].resumed;
        failed += w[i].failed;
    }
    cluster_stats(&cl, &a, &b);
    ck_assert_int_eq(failed, 0);
    ck_assert_int_eq(full, THREADS * PAIRS_PER_THREAD);
    ck_assert_int_eq(resumed, THREADS * PAIRS_PER_THREAD);
    ck_assert_uint_eq(a.hits + b.hits, THREADS * PAIRS_PER_THREAD);
    ck_assert_uint_eq(a.stores + b.stores, THREADS * PAIRS_PER_THREAD);
    ck_assert_uint_eq(a.timeouts + b.timeouts + a.errors + b.errors, 0);
    assert_daemon_saw(&d, THREADS * PAIRS_PER_THREAD, THREADS * PAIRS_PER_THREAD);

    SSL_CTX_free(client_ctx);
    cluster_close(&cl);
    stop_daemon(&d);
}
END_TEST

/* Lets a stopped daemon go on at the server's first suspension. */
typedef struct stopped_daemon {
    pid_t pid;
    int stopped;
} stopped_daemon;

static void continue_daemon(const SSL *server, void *arg)
{
    stopped_daemon *sd = arg;

    (void)server;
    if (sd->stopped) {
        kill(sd->pid, SIGCONT);
        sd->stopped = 0;
    }
}

/* Stops the daemon (a child of this process) and waits until it is
 * stopped, so no answer can come before the handshake has suspended. */
static void stop_daemon_process(stopped_daemon *sd)
{
    int status = 0;

    ck_assert_int_eq(kill(sd->pid, SIGSTOP), 0);
    ck_assert_int_eq(waitpid(sd->pid, &status, WUNTRACED), sd->pid);
    ck_assert(WIFSTOPPED(status));
    sd->stopped = 1;
}

/* Event-loop mode against a live daemon. Each round the daemon is stopped
 * first: the lookup cannot be answered, so the server must suspend
 * (SSL_ERROR_WANT_CLIENT_HELLO_CB with OpenSSL 3); at that point the daemon
 * goes on, its answer makes sc_ssl_pending_fd readable, and the next
 * SSL_do_handshake resumes. (With a daemon this fast the answer is often
 * there before the first poll, and the library then does not suspend at
 * all: hence the stop, to make the suspension certain.) */
START_TEST(test_async_resumes)
{
    int version = _i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    tu_server_opts opts = {.version = version, .no_ticket = 1, .no_internal_cache = 1};
    th_daemon d;
    cluster cl;
    stopped_daemon sd;
    sc_stats a;
    sc_stats b;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    unsigned pending = 0;
    int resumed = 0;

    start_daemon_for(&d, WIRE_V2_SEALED, NULL);
    sd.pid = d.pid;
    sd.stopped = 0;
    cluster_open(&cl, d.port, &opts, NULL, SC_ATTACH_ASYNC);
    client_ctx = tu_client_ctx(version, NULL);
    ck_assert_ptr_nonnull(client_ctx);

    sess = full_handshake(&cl, client_ctx, 0);
    for (int i = 0; i < ASYNC_ROUNDS; i++) {
        tu_hs_result res;
        int rc;

        stop_daemon_process(&sd);
        rc = tu_handshake_hooked(client_ctx, cl.ctx[i % 2 == 0 ? 1 : 0], sess, continue_daemon, &sd,
                                 &res);
        continue_daemon(NULL, &sd); /* in case it never suspended */
        ck_assert_msg(rc == 0, "round %d: %s", i, res.error);
        ck_assert_msg(res.pending >= 1, "round %d: the server never suspended", i);
        pending += res.pending;
        resumed += res.resumed;
        SSL_SESSION_free(sess);
        sess = res.session;
    }
    cluster_stats(&cl, &a, &b);
    fprintf(stderr, "async TLS %s: %d/%d resumed, %u suspensions, %llu hits\n",
            version == TLS1_3_VERSION ? "1.3" : "1.2", resumed, ASYNC_ROUNDS, pending,
            (unsigned long long)(a.hits + b.hits));
    ck_assert_int_eq(resumed, ASYNC_ROUNDS);
    ck_assert_uint_eq(a.hits + b.hits, ASYNC_ROUNDS);

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    cluster_close(&cl);
    stop_daemon(&d);
}
END_TEST

/* The non-blocking proof: with a lookup that can only time out (500 ms),
 * a blocking server spends that time inside SSL_do_handshake, while an
 * event-loop server returns at once and the wait happens in poll(). */
START_TEST(test_async_never_blocks)
{
    tu_server_opts opts = {.version = TLS1_2_VERSION, .no_ticket = 1, .no_internal_cache = 1};
    const unsigned timeout_ms = 500;
    sc_options sopt;
    cluster blocking;
    cluster evloop;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    tu_hs_result res;
    int port;
    int hole = black_hole(&port);

    options_for(&sopt, WIRE_V2_SEALED);
    sopt.timeout_ms = timeout_ms;
    cluster_open(&blocking, port, &opts, &sopt, 0);
    cluster_open(&evloop, port, &opts, &sopt, SC_ATTACH_ASYNC);
    client_ctx = tu_client_ctx(TLS1_2_VERSION, NULL);
    ck_assert_ptr_nonnull(client_ctx);
    sess = full_handshake(&blocking, client_ctx, 0);

    /* The control: the measurement does see a blocked call. */
    ck_assert_msg(tu_handshake(client_ctx, blocking.ctx[1], sess, &res) == 0, "%s", res.error);
    ck_assert_int_eq(res.resumed, 0);
    ck_assert_int_ge(res.max_server_call_us, (long)timeout_ms * 800);
    tu_hs_result_clear(&res);

    ck_assert_msg(tu_handshake(client_ctx, evloop.ctx[1], sess, &res) == 0, "%s", res.error);
    fprintf(stderr, "async, no answer: %u suspensions, longest call %ld us, total %ld us\n",
            res.pending, res.max_server_call_us, res.elapsed_us);
    ck_assert_int_eq(res.resumed, 0);
    ck_assert_uint_ge(res.pending, 1);
    ck_assert_int_lt(res.max_server_call_us, 100000);
    ck_assert_int_ge(res.elapsed_us, (long)timeout_ms * 800);
    tu_hs_result_clear(&res);

    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    cluster_close(&evloop);
    cluster_close(&blocking);
    close(hole);
}
END_TEST

/* The cluster key file every test shares, made before Check forks. */
static int make_key_file(void)
{
    unsigned char key[32];
    FILE *f;
    int fd;

    if (th_tmpdir(g_keydir, sizeof(g_keydir)) != 0 || RAND_bytes(key, sizeof(key)) != 1)
        return -1;
    snprintf(g_key, sizeof(g_key), "%s/cluster.key", g_keydir);
    fd = open(g_key, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || (f = fdopen(fd, "w")) == NULL)
        return -1;
    for (size_t i = 0; i < sizeof(key); i++)
        fprintf(f, "%02x", key[i]);
    fputc('\n', f);
    OPENSSL_cleanse(key, sizeof(key));
    return fclose(f) == 0 ? 0 : -1;
}

/* A full handshake with A presenting `cred`; returns the size of the DER
 * sessiond holds for the session (0: nothing stored) and hands back the
 * client's session and context. */
static size_t stored_size(const cluster *cl, sc_client *raw, int version, const tu_cred *cred,
                          SSL_CTX **client_ctx, SSL_SESSION **sess)
{
    static uint8_t value[PROTO_MAX_DATAGRAM];
    unsigned char key[32];
    size_t key_len, len = 0;
    tu_hs_result res;
    sc_result r;

    *client_ctx = tu_client_ctx(version, cred);
    ck_assert_ptr_nonnull(*client_ctx);
    ck_assert_msg(tu_handshake(*client_ctx, cl->ctx[0], NULL, &res) == 0, "full: %s", res.error);
    ck_assert_int_eq(res.server_peer_cert, 1);
    key_len = tu_session_server_key(res.session, key);
    ck_assert_uint_gt(key_len, 0);
    r = sc_get(raw, key, key_len, value, sizeof(value), &len);
    ck_assert_msg(r == SC_OK || r == SC_NOT_FOUND, "raw get: %s", sc_result_name(r));
    OPENSSL_cleanse(value, len);
    *sess = res.session;
    return r == SC_OK ? len : 0;
}

/* The largest session v2 carries resumes across servers. A client
 * certificate padded to make the session exactly PROTO_V2_MAX_VALUE bytes
 * of DER (TLS 1.2, aimed again while the certificate's signature length
 * makes it miss; TLS 1.3 sessions hold a random ticket_age_add whose DER
 * length varies, so there the target leaves 16 bytes of slack); one byte more (TLS 1.2) is refused
 * by the library, counted, and does not resume on the other server. */
START_TEST(test_largest_session)
{
    int version = _i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    size_t slack = version == TLS1_2_VERSION ? 0 : 16, pad0 = 20000, pad, size0, size;
    tu_server_opts opts = {
        .version = version, .no_ticket = 1, .no_internal_cache = 1, .verify_ca = &g_ca};
    th_daemon d;
    cluster cl;
    tu_cred cred;
    sc_client *raw;
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    round_stats st;
    sc_stats a, b;
    uint64_t too_large_before;

    start_daemon_for(&d, WIRE_V2_SEALED, NULL);
    cluster_open(&cl, d.port, &opts, NULL, 0);
    raw = raw_reader(d.port, WIRE_V2_SEALED);

    /* Calibrate: everything in the session but the padding has a fixed size. */
    ck_assert_int_eq(
        tu_cred_make_padded(&cred, TU_KEY_EC, TU_ROLE_CLIENT, "large client", &g_ca, pad0), 0);
    size0 = stored_size(&cl, raw, version, &cred, &client_ctx, &sess);
    ck_assert_uint_gt(size0, pad0);
    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    tu_cred_free(&cred);

    /* The certificate's ECDSA signature (and random serial) vary by a byte
     * or two in DER: aim again, a few times, until the size is exact. */
    pad = pad0 + (PROTO_V2_MAX_VALUE - slack - size0);
    for (int attempt = 0;; attempt++) {
        ck_assert_int_eq(
            tu_cred_make_padded(&cred, TU_KEY_EC, TU_ROLE_CLIENT, "large client", &g_ca, pad), 0);
        size = stored_size(&cl, raw, version, &cred, &client_ctx, &sess);
        if (version != TLS1_2_VERSION || size == PROTO_V2_MAX_VALUE || attempt == 7 || size == 0)
            break;
        pad = pad + PROTO_V2_MAX_VALUE - size;
        SSL_SESSION_free(sess);
        SSL_CTX_free(client_ctx);
        tu_cred_free(&cred);
    }
    if (version == TLS1_2_VERSION)
        ck_assert_uint_eq(size, PROTO_V2_MAX_VALUE);
    else
        ck_assert_msg(size <= PROTO_V2_MAX_VALUE && size + 2 * slack >= PROTO_V2_MAX_VALUE,
                      "TLS 1.3 session of %zu bytes", size);
    alternate(&cl, client_ctx, &sess, 10, &st);
    fprintf(stderr,
            "largest session, TLS %s: %zu bytes of DER (limit %d), %d of 10 reconnections "
            "resumed across servers with the peer certificate\n",
            version == TLS1_3_VERSION ? "1.3" : "1.2", size, PROTO_V2_MAX_VALUE, st.peer_cert);
    ck_assert_int_eq(st.failed, 0);
    ck_assert_int_eq(st.resumed, 10);
    ck_assert_int_eq(st.peer_cert, 10);
    cluster_stats(&cl, &a, &b);
    ck_assert_uint_eq(a.too_large + b.too_large, 0);
    ck_assert_uint_eq(a.hits + b.hits, 10);
    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    tu_cred_free(&cred);

    if (version == TLS1_2_VERSION) {
        /* One byte over: not shared (never truncated), so B cannot resume it. */
        too_large_before = a.too_large;
        ck_assert_int_eq(
            tu_cred_make_padded(&cred, TU_KEY_EC, TU_ROLE_CLIENT, "large client", &g_ca, pad + 1),
            0);
        ck_assert_uint_eq(stored_size(&cl, raw, version, &cred, &client_ctx, &sess), 0);
        cluster_stats(&cl, &a, &b);
        ck_assert_uint_eq(a.too_large, too_large_before + 1);
        alternate(&cl, client_ctx, &sess, 1, &st);
        ck_assert_int_eq(st.failed, 0);
        ck_assert_int_eq(st.resumed, 0);
        SSL_SESSION_free(sess);
        SSL_CTX_free(client_ctx);
        tu_cred_free(&cred);
    }
    sc_client_free(raw);
    cluster_close(&cl);
    stop_daemon(&d);
}
END_TEST

static Suite *resume_suite(void)
{
    Suite *s = suite_create("resume");
    TCase *tc = tcase_create("cross-server");

    /* Generous: the sanitizer build is several times slower. */
    tcase_set_timeout(tc, 180);
    tcase_add_loop_test(tc, test_tls12_session_ids, 0, 2); /* sealed v2, v1 */
    tcase_add_loop_test(tc, test_tls13_stateful_tickets, 0, 2);
    tcase_add_test(tc, test_tls13_stateless_tickets_not_shared);
    tcase_add_loop_test(tc, test_client_cert_session, 0, 4);
    tcase_add_loop_test(tc, test_largest_session, 0, 2);
    tcase_add_test(tc, test_daemon_down);
    tcase_add_test(tc, test_daemon_restart);
    tcase_add_test(tc, test_threads);
    tcase_add_loop_test(tc, test_async_resumes, 0, 2);
    tcase_add_test(tc, test_async_never_blocks);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    int status;

    /* Made once, before Check forks each test, so every test shares them. */
    if (make_key_file() != 0 ||
        tu_cred_make(&g_server, TU_KEY_EC, TU_ROLE_SERVER, "localhost", NULL) != 0 ||
        tu_cred_make(&g_ca, TU_KEY_RSA, TU_ROLE_CA, "sessiond test CA", NULL) != 0 ||
        tu_cred_make(&g_client, TU_KEY_RSA, TU_ROLE_CLIENT, "sessiond test client", &g_ca) != 0)
        return EXIT_FAILURE;
    status = tc_run_suite(resume_suite());
    tu_cred_free(&g_client);
    tu_cred_free(&g_ca);
    tu_cred_free(&g_server);
    th_rmtree(g_keydir);
    return status;
}
