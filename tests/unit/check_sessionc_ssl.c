/* check_sessionc_ssl.c — libsessionc plugged into OpenSSL: real TLS
 * handshakes between SSL_CTXs that share sessions through real sessiond
 * processes on loopback.
 *
 * What is covered: sessions resume across two SSL_CTXs with their own
 * clients (TLS 1.2 IDs and TLS 1.3 stateful tickets, plain and sealed v2);
 * the event-loop mode (plain and sealed) behind a relay that adds latency
 * (every lookup suspends the handshake, no server call waits, all resume),
 * and with a dead server (a full handshake after the timeout, never
 * blocking); an SSL_CTX's sessions live in its declared context's
 * namespace; sc_detach keeping SSL_CTX_free from removing sessions
 * cluster-wide.
 *
 * Waiting: no sleeps as synchronisation. Fire-and-forget puts are ordered
 * before the next get because both go out on the same per-thread socket to
 * the same daemon. The only time-based wait is the relay's added
 * latency, which shapes timing only.
 *
 * Shared helpers (daemons, silent sockets, clients, keys) live in
 * tests/lib/sessionc_fixture.c. Needs SESSIOND in the environment
 * (tests/run.sh sets it).
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/rand.h>

#include "harness.h"
#include "proto.h"
#include "proto_v2.h"
#include "sc_internal.h"
#include "sessionc.h"
#include "sessionc_fixture.h"
#include "tls_util.h"

/* A UDP relay in front of a daemon that holds every GET for delay_ms before
 * passing it on: network latency, so that an asynchronous lookup is still in
 * flight when the ClientHello callback first looks for its answer (on
 * loopback the daemon often answers within that very call). The delay
 * shapes timing only; nothing waits on it for correctness. */
typedef struct relay {
    int front;   /* the library sends here */
    int back;    /* connected to the daemon */
    int stop_fd; /* eventfd: the test is done */
    int port;
    int delay_ms;
    _Atomic unsigned gets;
    pthread_t thread;
} relay;

/* Long enough that no single server call, even under valgrind, comes close. */
#define RELAY_DELAY_MS 100

static void *relay_run(void *arg)
{
    relay *r = arg;
    static uint8_t buf[PROTO_MAX_DATAGRAM];

    for (;;) {
        struct pollfd p[2] = {{.fd = r->front, .events = POLLIN},
                              {.fd = r->stop_fd, .events = POLLIN}};
        struct sockaddr_storage from;
        socklen_t from_len = sizeof(from);
        ssize_t n;

        if (poll(p, 2, -1) < 0 || (p[1].revents & POLLIN))
            return NULL;
        n = recvfrom(r->front, buf, sizeof(buf), 0, (struct sockaddr *)&from, &from_len);
        if (n < 2)
            continue;
        if (!sf_is_get(buf, (size_t)n)) {
            send(r->back, buf, (size_t)n, 0); /* PUT, REMOVE: straight on */
            continue;
        }
        poll(NULL, 0, r->delay_ms);
        atomic_fetch_add(&r->gets, 1);
        send(r->back, buf, (size_t)n, 0);
        p[0].fd = r->back;
        if (poll(p, 1, 5000) == 1 && (n = recv(r->back, buf, sizeof(buf), 0)) > 0)
            sendto(r->front, buf, (size_t)n, 0, (struct sockaddr *)&from, from_len);
    }
}

static void relay_start(relay *r, int daemon_port, int delay_ms)
{
    r->front = sf_silent_socket(&r->port);
    r->back = th_udp_connect(daemon_port);
    ck_assert_int_ge(r->back, 0);
    r->stop_fd = eventfd(0, EFD_CLOEXEC);
    ck_assert_int_ge(r->stop_fd, 0);
    r->delay_ms = delay_ms;
    atomic_init(&r->gets, 0);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, relay_run, r), 0);
}

static void relay_stop(relay *r)
{
    uint64_t one = 1;

    ck_assert_int_eq(write(r->stop_fd, &one, sizeof(one)), (int)sizeof(one));
    ck_assert_int_eq(pthread_join(r->thread, NULL), 0);
    close(r->front);
    close(r->back);
    close(r->stop_fd);
}

/* ------------------------------------------------------------------ */
/* OpenSSL */

static tu_cred server_cred;

static void tls_setup(void)
{
    ck_assert_int_eq(tu_cred_make(&server_cred, TU_KEY_EC, TU_ROLE_SERVER, "localhost", NULL), 0);
}

static void tls_teardown(void)
{
    tu_cred_free(&server_cred);
}

static SSL_CTX *server_ctx(int version, int internal_cache)
{
    tu_server_opts so;
    SSL_CTX *ctx;

    memset(&so, 0, sizeof(so));
    so.version = version;
    so.no_ticket = 1;
    so.no_internal_cache = !internal_cache;
    ctx = tu_server_ctx(&server_cred, &so);
    ck_assert_ptr_nonnull(ctx);
    return ctx;
}

/* Two servers, each with its own SSL_CTX and client: every reconnection
 * after the first resumes on the other server. */
static void cross_server_resumption(int version, int async_b, int keyed)
{
    enum { HANDSHAKES = 10 };
    char dir[256], kpath[300];
    uint8_t key[32];
    const char *args[] = {"--key-file", kpath, NULL};
    th_daemon d;
    sc_client *ca, *cb;
    SSL_CTX *a = server_ctx(version, 0), *b = server_ctx(version, 0);
    SSL_CTX *client = tu_client_ctx(version, NULL);
    SSL_SESSION *sess = NULL;
    unsigned resumed = 0, suspended = 0;
    relay slow;
    sc_stats st;

    ck_assert_ptr_nonnull(client);
    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    if (keyed) {
        sf_write_key_file(dir, "key", 0600, key, kpath, sizeof(kpath));
        sf_start_daemon_args(&d, args);
    } else {
        sf_start_daemon(&d);
    }
    if (async_b) {
        /* Both through the relay: one FIFO path, so B's new tickets reach the
         * daemon before A's next lookup, as they would over one link. */
        relay_start(&slow, d.port, RELAY_DELAY_MS);
        ca = sf_client_keyed(slow.port, keyed ? kpath : NULL, NULL, SF_LIVE_TIMEOUT_MS);
        cb = sf_client_keyed(slow.port, keyed ? kpath : NULL, NULL, SF_LIVE_TIMEOUT_MS);
    } else {
        ca = sf_client_keyed(d.port, keyed ? kpath : NULL, NULL, SF_LIVE_TIMEOUT_MS);
        cb = sf_client_keyed(d.port, keyed ? kpath : NULL, NULL, SF_LIVE_TIMEOUT_MS);
    }
    ck_assert_int_eq(sc_attach(ca, a, 0), 0);
    ck_assert_int_eq(sc_attach(cb, b, async_b ? SC_ATTACH_ASYNC : 0), 0);
    ck_assert(SSL_CTX_get_session_cache_mode(a) & SSL_SESS_CACHE_SERVER);
    ck_assert(SSL_CTX_get_session_cache_mode(a) & SSL_SESS_CACHE_NO_INTERNAL);

    for (unsigned i = 0; i < HANDSHAKES; i++) {
        tu_hs_result res;

        memset(&res, 0, sizeof(res));
        ck_assert_msg(tu_handshake(client, i % 2 ? b : a, sess, &res) == 0, "round %u: %s", i,
                      res.error);
        ck_assert_int_eq(res.version, version);
        resumed += res.resumed && res.server_resumed;
        suspended += res.pending;
        if (i % 2 && async_b)
            ck_assert_msg(res.max_server_call_us < RELAY_DELAY_MS * 800, /* never waited */
                          "a server call blocked for %ld us in async mode", res.max_server_call_us);
        SSL_SESSION_free(sess);
        sess = res.session;
        res.session = NULL;
        ck_assert_ptr_nonnull(sess);
    }
    ck_assert_uint_eq(resumed, HANDSHAKES - 1);
    if (async_b) {
        /* Every B handshake was suspended and waited on the lookup's fd. */
        ck_assert_uint_ge(suspended, HANDSHAKES / 2);
        ck_assert_uint_eq(atomic_load(&slow.gets), HANDSHAKES - 1); /* A's and B's lookups */
    }
    sc_get_stats(cb, &st);
    ck_assert_uint_eq(st.hits, HANDSHAKES / 2);
    ck_assert_uint_eq(st.errors + st.timeouts + st.auth_failures, 0);
    if (keyed)
        ck_assert_int_ge(sf_daemon_stat(&d, "sealed"), HANDSHAKES);
    SSL_SESSION_free(sess);
    sc_detach(a);
    sc_detach(b);
    SSL_CTX_free(a);
    SSL_CTX_free(b);
    SSL_CTX_free(client);
    sc_client_free(ca);
    sc_client_free(cb);
    if (async_b)
        relay_stop(&slow);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
    th_rmtree(dir);
}

START_TEST(test_tls12_across_servers)
{
    cross_server_resumption(TLS1_2_VERSION, 0, _i);
}
END_TEST

START_TEST(test_tls13_across_servers)
{
    cross_server_resumption(TLS1_3_VERSION, 0, _i);
}
END_TEST

START_TEST(test_async_across_servers)
{
    /* _i: bit 0 the version, bit 1 sealed. */
    cross_server_resumption(_i % 2 == 0 ? TLS1_2_VERSION : TLS1_3_VERSION, 1, _i / 2);
}
END_TEST

/* Async mode with a server that never answers: the handshake is suspended
 * until the timeout, then completes as a full one. */
START_TEST(test_async_timeout)
{
    int port, fd = sf_silent_socket(&port);
    sc_client *c = sf_client_one(port, 100), *ca;
    SSL_CTX *a = server_ctx(TLS1_2_VERSION, 0), *b = server_ctx(TLS1_2_VERSION, 0);
    SSL_CTX *client = tu_client_ctx(TLS1_2_VERSION, NULL);
    th_daemon d;
    tu_hs_result res;
    sc_stats st;
    int gets;

    sf_start_daemon(&d);
    ca = sf_client_one(d.port, SF_LIVE_TIMEOUT_MS);
    ck_assert_int_eq(sc_attach(ca, a, 0), 0);
    ck_assert_int_eq(sc_attach(c, b, SC_ATTACH_ASYNC), 0);
    memset(&res, 0, sizeof(res));
    ck_assert_int_eq(tu_handshake(client, a, NULL, &res), 0);
    ck_assert_ptr_nonnull(res.session);

    {
        SSL_SESSION *sess = res.session;
        tu_hs_result again;

        memset(&again, 0, sizeof(again));
        ck_assert_msg(tu_handshake(client, b, sess, &again) == 0, "%s", again.error);
        ck_assert_int_eq(again.resumed, 0);
        ck_assert_uint_ge(again.pending, 1);
        ck_assert_msg(again.elapsed_us >= 100000, "done after %ld us", again.elapsed_us);
        ck_assert_msg(again.max_server_call_us < 50000, "blocked %ld us", again.max_server_call_us);
        tu_hs_result_clear(&again);
    }
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.lookups, 1);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.stores, 1); /* B's new session after the full handshake */
    ck_assert_int_eq(sf_drain_count_gets(fd, &gets), 2);
    ck_assert_int_eq(gets, 1);
    tu_hs_result_clear(&res);
    SSL_CTX_free(a); /* no internal cache here: nothing to remove */
    SSL_CTX_free(b);
    SSL_CTX_free(client);
    sc_client_free(c);
    sc_client_free(ca);
    close(fd);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* An SSL_CTX's sessions live in the namespace of its declared session-ID
 * context: readable there, invisible from the default namespace and from
 * another context's, and another context's server does not find them. */
START_TEST(test_ssl_namespace)
{
    th_daemon d;
    SSL_CTX *one = server_ctx(TLS1_2_VERSION, 0), *two = server_ctx(TLS1_2_VERSION, 0);
    SSL_CTX *client = tu_client_ctx(TLS1_2_VERSION, NULL);
    sc_client *c1, *c2, *raw_one, *raw_two, *raw_zero;
    uint8_t key[32], buf[4096];
    size_t key_len, len = 0;
    tu_hs_result res, again;
    sc_options opt;
    sc_stats st;

    sf_start_daemon(&d);
    c1 = sf_client_one(d.port, SF_LIVE_TIMEOUT_MS);
    c2 = sf_client_one(d.port, SF_LIVE_TIMEOUT_MS);
    /* Declared before and after attaching: both count; the last one wins. */
    ck_assert_int_eq(sc_set_session_id_context(one, (const unsigned char *)"other", 5), 0);
    ck_assert_int_eq(sc_attach(c1, one, 0), 0);
    ck_assert_int_eq(sc_set_session_id_context(one, (const unsigned char *)"svc-one", 7), 0);
    ck_assert_int_eq(sc_attach(c2, two, 0), 0);
    ck_assert_int_eq(sc_set_session_id_context(two, (const unsigned char *)"svc-two", 7), 0);
    ck_assert_int_eq(sc_set_session_id_context(two, NULL, 33), -1);

    memset(&res, 0, sizeof(res));
    ck_assert_int_eq(tu_handshake(client, one, NULL, &res), 0);
    key_len = tu_session_server_key(res.session, key);
    ck_assert_uint_eq(key_len, 32);

    sc_options_init(&opt);
    opt.timeout_ms = SF_LIVE_TIMEOUT_MS;
    ck_assert_int_eq(sc_namespace_from_context("svc-one", 7, opt.default_namespace), 0);
    raw_one = sf_client_opts(d.port, &opt);
    ck_assert_int_eq(sc_namespace_from_context("svc-two", 7, opt.default_namespace), 0);
    raw_two = sf_client_opts(d.port, &opt);
    raw_zero = sf_client_one(d.port, SF_LIVE_TIMEOUT_MS);
    ck_assert_int_eq(sc_get(raw_one, key, key_len, buf, sizeof(buf), &len), SC_OK);
    ck_assert_uint_gt(len, 100);
    ck_assert_int_eq(sc_get(raw_two, key, key_len, buf, sizeof(buf), &len), SC_NOT_FOUND);
    ck_assert_int_eq(sc_get(raw_zero, key, key_len, buf, sizeof(buf), &len), SC_NOT_FOUND);

    /* The other service's server looks in its own namespace: a miss. */
    memset(&again, 0, sizeof(again));
    ck_assert_int_eq(tu_handshake(client, two, res.session, &again), 0);
    ck_assert_int_eq(again.resumed, 0);
    sc_get_stats(c2, &st);
    ck_assert_uint_eq(st.lookups, 1);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_uint_eq(st.hits, 0);
    /* ...while its own server resumes it (no internal cache: through sessiond). */
    tu_hs_result_clear(&again);
    ck_assert_int_eq(tu_handshake(client, one, res.session, &again), 0);
    ck_assert_int_eq(again.resumed, 1);

    tu_hs_result_clear(&again);
    tu_hs_result_clear(&res);
    sc_detach(one);
    sc_detach(two);
    SSL_CTX_free(one);
    SSL_CTX_free(two);
    SSL_CTX_free(client);
    sc_client_free(c1);
    sc_client_free(c2);
    sc_client_free(raw_one);
    sc_client_free(raw_two);
    sc_client_free(raw_zero);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* OpenSSL calls the remove callback for every session in an SSL_CTX's own
 * cache when the SSL_CTX is freed; sc_detach first keeps them in sessiond. */
START_TEST(test_detach_before_free)
{
    th_daemon d;
    sc_client *c;
    SSL_CTX *client = tu_client_ctx(TLS1_2_VERSION, NULL);
    uint8_t key[32], buf[4096];
    size_t len;

    sf_start_daemon(&d);
    c = sf_client_one(d.port, SF_LIVE_TIMEOUT_MS);
    for (int detach = 0; detach <= 1; detach++) {
        SSL_CTX *ctx = server_ctx(TLS1_2_VERSION, 1);
        tu_hs_result res;
        size_t key_len;

        ck_assert_int_eq(sc_attach(c, ctx, 0), 0);
        memset(&res, 0, sizeof(res));
        ck_assert_int_eq(tu_handshake(client, ctx, NULL, &res), 0);
        key_len = tu_session_server_key(res.session, key);
        ck_assert_uint_eq(key_len, 32);
        if (detach) {
            ck_assert_int_eq(sc_detach(ctx), 0);
            ck_assert_int_eq(sc_detach(ctx), -1); /* not attached any more */
        }
        SSL_CTX_free(ctx);
        /* Same thread, same socket: the get is ordered after any remove. */
        ck_assert_int_eq(sc_get(c, key, key_len, buf, sizeof(buf), &len),
                         detach ? SC_OK : SC_NOT_FOUND);
        tu_hs_result_clear(&res);
    }
    ck_assert_int_eq(sf_daemon_stat(&d, "removes"), 1);
    SSL_CTX_free(client);
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

static Suite *sessionc_ssl_suite(void)
{
    Suite *s = suite_create("sessionc_ssl");
    TCase *tc;

    tc = tcase_create("openssl");
    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
    tcase_add_loop_test(tc, test_tls12_across_servers, 0, 2); /* _i: sealed */
    tcase_add_loop_test(tc, test_tls13_across_servers, 0, 2);
    tcase_add_loop_test(tc, test_async_across_servers, 0, 4);
    tcase_add_test(tc, test_ssl_namespace);
    tcase_add_test(tc, test_async_timeout);
    tcase_add_test(tc, test_detach_before_free);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sessionc_ssl_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
