/* check_sessionc_cluster.c — libsessionc's failure handling and spreading
 * over several servers, against real sessiond processes on loopback.
 *
 * What is covered:
 * - the breaker end to end: 1000 lookups on a dead server cost 3 timeouts;
 *   recovery through one probe after the back-off (with stale answers to
 *   earlier lookups discarded on the way); 8 threads racing when the
 *   back-off ends let exactly one probe through;
 * - two servers: keys spread over both, a second client with the list
 *   reversed finds every key; failover past a silent server and past a
 *   refused port;
 * - 8 threads on one client, counters of exited threads kept.
 *
 * Waiting: no sleeps as synchronisation. Fire-and-forget puts are ordered
 * before the next get because both go out on the same per-thread socket to
 * the same daemon. The only time-based waits are for the breaker's
 * back-off to pass (polled with bounded loops).
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

/* A dead daemon costs a few timeouts, not one per lookup. */
START_TEST(test_breaker_dead_server)
{
    uint8_t key[32], buf[64];
    unsigned timeouts = 0, skipped = 0;
    size_t len;
    char list[64];
    int port, fd = sf_silent_socket(&port);
    sc_client *c;
    int64_t t0, elapsed;
    sc_stats st;

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = sf_client_for(list, 50, 3, 60000, 60000);
    t0 = th_now_ms();
    for (unsigned i = 0; i < 1000; i++) {
        sc_result r;

        sf_make_key(key, 5, i);
        r = sc_get(c, key, 32, buf, sizeof(buf), &len);
        ck_assert_msg(r == SC_TIMEOUT || r == SC_SKIPPED, "lookup %u: %s", i, sc_result_name(r));
        timeouts += r == SC_TIMEOUT;
        skipped += r == SC_SKIPPED;
    }
    elapsed = th_now_ms() - t0;
    ck_assert_uint_le(timeouts, 5);
    ck_assert_uint_eq(timeouts, 3); /* exactly breaker_failures */
    ck_assert_uint_eq(skipped, 997);
    ck_assert_msg(elapsed < 3000, "1000 lookups took %lld ms", (long long)elapsed);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.timeouts, 3);
    ck_assert_uint_eq(st.skipped, 997);
    ck_assert_uint_eq(st.lookups, 1000);
    ck_assert_int_eq(sf_drain_count(fd), 3); /* skipped lookups never hit the wire */

    /* Puts skip a backed-off server too. */
    ck_assert_int_eq(sc_put(c, key, 32, buf, 10, 0), SC_SKIPPED);
    sc_client_free(c);
    close(fd);
}
END_TEST

/* The breaker opens on a stopped daemon and closes through one probe after
 * the back-off once the daemon runs again. The stopped daemon answers the
 * lookups that timed out as soon as it resumes: those late answers (for
 * other keys) reach the probe's socket first and must be skipped. */
START_TEST(test_breaker_recovery)
{
    uint8_t key[32], value[100], buf[256];
    size_t len = 0;
    th_daemon d;
    sc_client *c;
    char list[64];
    int64_t opened, probed = 0, deadline;
    sc_result r = SC_SKIPPED;
    sc_stats st;

    sf_start_daemon(&d);
    snprintf(list, sizeof(list), "127.0.0.1:%d", d.port);
    c = sf_client_for(list, 50, 3, 100, 1000);
    RAND_bytes(value, sizeof(value));

    ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
    sf_make_key(key, 6, 100);
    ck_assert_int_eq(sc_put(c, key, 32, value, sizeof(value), 60), SC_OK); /* queued */
    for (unsigned i = 0; i < 3; i++) {
        uint8_t other[32];

        sf_make_key(other, 6, i);
        ck_assert_int_eq(sc_get(c, other, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    }
    opened = th_now_ms();
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_SKIPPED);
    ck_assert_int_eq(kill(d.pid, SIGCONT), 0);

    /* Wait for the back-off to pass: the condition is the breaker letting a
     * lookup through; polled every 2 ms, bounded at 3 s. */
    deadline = opened + 3000;
    while (th_now_ms() < deadline) {
        r = sc_get(c, key, 32, buf, sizeof(buf), &len);
        if (r != SC_SKIPPED) {
            probed = th_now_ms();
            break;
        }
        poll(NULL, 0, 2);
    }
    ck_assert_msg(r == SC_OK, "probe: %s", sc_result_name(r));
    ck_assert_uint_eq(len, sizeof(value));
    ck_assert_mem_eq(buf, value, sizeof(value));
    ck_assert_msg(probed - opened >= 90, "probe after %lld ms, back-off is 100",
                  (long long)(probed - opened));
    /* Closed again: the next lookup goes straight through. */
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_OK);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.timeouts, 3);
    ck_assert_uint_eq(st.hits, 2);
    ck_assert_uint_ge(st.skipped, 1);
    ck_assert_uint_eq(st.errors, 0);
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* When the back-off ends, threads racing for a dead server let exactly one
 * probe through; the others skip instead of each waiting out a timeout. */
enum { RACERS = 8 };

typedef struct racer {
    sc_client *client;
    pthread_barrier_t *start;
    unsigned id;
    sc_result result;
} racer;

static void *racer_run(void *arg)
{
    racer *r = arg;
    uint8_t key[32], buf[64];
    size_t len;

    sf_make_key(key, 50, r->id);
    pthread_barrier_wait(r->start);
    r->result = sc_get(r->client, key, 32, buf, sizeof(buf), &len);
    return NULL;
}

START_TEST(test_breaker_one_probe)
{
    pthread_barrier_t start;
    pthread_t tid[RACERS];
    racer r[RACERS];
    uint8_t key[32], buf[64];
    size_t len;
    char list[64];
    int port, fd = sf_silent_socket(&port);
    unsigned timeouts = 0, skipped = 0;
    int64_t until, deadline;
    sc_client *c;

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = sf_client_for(list, 100, 2, 50, 50);
    for (unsigned i = 0; i < 2; i++) {
        sf_make_key(key, 49, i);
        ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    }
    /* Wait (bounded) until the back-off is over: the condition is the
     * breaker's own deadline, read without consuming the probe. */
    until = atomic_load(&c->servers[0].breaker.open_until_ns);
    ck_assert(until != 0);
    deadline = th_now_ms() + 3000;
    while (sc_now_ns() < until && th_now_ms() < deadline)
        poll(NULL, 0, 5);
    ck_assert(sc_now_ns() >= until);

    ck_assert_int_eq(pthread_barrier_init(&start, NULL, RACERS), 0);
    for (unsigned i = 0; i < RACERS; i++) {
        r[i].client = c;
        r[i].start = &start;
        r[i].id = i;
        ck_assert_int_eq(pthread_create(&tid[i], NULL, racer_run, &r[i]), 0);
    }
    for (unsigned i = 0; i < RACERS; i++) {
        ck_assert_int_eq(pthread_join(tid[i], NULL), 0);
        timeouts += r[i].result == SC_TIMEOUT;
        skipped += r[i].result == SC_SKIPPED;
    }
    ck_assert_uint_eq(timeouts, 1);
    ck_assert_uint_eq(skipped, RACERS - 1);
    ck_assert_int_eq(sf_drain_count(fd), 3); /* 2 failures + 1 probe on the wire */
    pthread_barrier_destroy(&start);
    sc_client_free(c);
    close(fd);
}
END_TEST

/* ------------------------------------------------------------------ */
/* several servers */

START_TEST(test_two_servers)
{
    enum { KEYS = 200 };
    th_daemon d1, d2;
    char list[128], reversed[128];
    sc_client *c, *r;
    uint8_t key[32], value[64], buf[256];
    size_t len;
    long long p1, p2;

    sf_start_daemon(&d1);
    sf_start_daemon(&d2);
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", d1.port, d2.port);
    snprintf(reversed, sizeof(reversed), "127.0.0.1:%d,127.0.0.1:%d", d2.port, d1.port);
    c = sf_client_for(list, SF_LIVE_TIMEOUT_MS, 3, 1000, 30000);
    r = sf_client_for(reversed, SF_LIVE_TIMEOUT_MS, 3, 1000, 30000);
    for (unsigned i = 0; i < KEYS; i++) {
        sf_make_key(key, 7, i);
        memset(value, (int)i, sizeof(value));
        ck_assert_int_eq(sc_put(c, key, 32, value, sizeof(value), 60), SC_OK);
    }
    for (unsigned i = 0; i < KEYS; i++) {
        sf_make_key(key, 7, i);
        memset(value, (int)i, sizeof(value));
        ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_OK);
        ck_assert_mem_eq(buf, value, sizeof(value));
        /* Another client, servers listed the other way round, agrees. */
        ck_assert_int_eq(sc_get(r, key, 32, buf, sizeof(buf), &len), SC_OK);
    }
    p1 = sf_daemon_stat(&d1, "puts");
    p2 = sf_daemon_stat(&d2, "puts");
    ck_assert_int_eq(p1 + p2, KEYS);
    ck_assert_msg(p1 >= KEYS / 5 && p2 >= KEYS / 5, "spread %lld/%lld", p1, p2);
    ck_assert_int_eq(sf_daemon_stat(&d1, "gets") + sf_daemon_stat(&d2, "gets"), 2 * KEYS);
    sc_client_free(c);
    sc_client_free(r);
    ck_assert_int_eq(th_daemon_stop(&d1), 0);
    ck_assert_int_eq(th_daemon_stop(&d2), 0);
}
END_TEST

/* One of two servers never answers: its keys cost breaker_failures timeouts
 * in all, then go to the other server. */
START_TEST(test_failover_silent)
{
    enum { KEYS = 100 };
    th_daemon d;
    char list[128];
    int port, fd = sf_silent_socket(&port);
    unsigned ok = 0, timeouts = 0;
    uint8_t key[32], value[32], buf[64];
    size_t len;
    sc_client *c;

    sf_start_daemon(&d);
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", port, d.port);
    c = sf_client_for(list, 50, 3, 60000, 60000);
    for (unsigned i = 0; i < KEYS; i++) {
        sc_result r;

        sf_make_key(key, 8, i);
        memset(value, (int)i, sizeof(value));
        ck_assert_int_eq(sc_put(c, key, 32, value, sizeof(value), 60), SC_OK);
        r = sc_get(c, key, 32, buf, sizeof(buf), &len);
        ck_assert_msg(r == SC_OK || r == SC_TIMEOUT, "key %u: %s", i, sc_result_name(r));
        ok += r == SC_OK;
        timeouts += r == SC_TIMEOUT;
    }
    ck_assert_uint_eq(timeouts, 3);
    ck_assert_uint_eq(ok, KEYS - 3);
    ck_assert_int_ge(sf_drain_count(fd), 6); /* 3 puts and 3 gets reached the silent one */
    sc_client_free(c);
    close(fd);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* A refused port (no daemon at all): the lookup moves on to the next server
 * at once, within the same deadline, and never waits out a timeout. */
START_TEST(test_failover_refused)
{
    enum { KEYS = 60 };
    th_daemon d;
    char list[128];
    uint8_t key[32], value[32], buf[64];
    unsigned ok_tail = 0;
    size_t len;
    sc_client *c;
    int64_t t0, elapsed;
    sc_stats st;

    sf_start_daemon(&d);
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", sf_refused_port(), d.port);
    c = sf_client_for(list, 5000, 3, 60000, 60000);
    t0 = th_now_ms();
    for (unsigned i = 0; i < KEYS; i++) {
        sc_result r;

        sf_make_key(key, 9, i);
        memset(value, (int)i, sizeof(value));
        sc_put(c, key, 32, value, sizeof(value), 60);
        r = sc_get(c, key, 32, buf, sizeof(buf), &len);
        /* Early keys owned by the dead port were put there and are lost. */
        ck_assert_msg(r == SC_OK || r == SC_NOT_FOUND, "key %u: %s", i, sc_result_name(r));
        if (i >= KEYS - 20)
            ok_tail += r == SC_OK;
    }
    elapsed = th_now_ms() - t0;
    ck_assert_msg(elapsed < 5000, "took %lld ms: a timeout was waited out", (long long)elapsed);
    ck_assert_uint_eq(ok_tail, 20); /* the breaker has moved every key by then */
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.timeouts, 0);
    ck_assert_uint_ge(st.errors, 1);
    ck_assert_uint_ge(st.skipped, 1);
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* threads */

enum { THREADS = 8, ROUNDS = 250 };

typedef struct worker {
    sc_client *client;
    unsigned id;
    unsigned failures;
    char what[128];
} worker;

static void *worker_run(void *arg)
{
    worker *w = arg;

    for (unsigned i = 0; i < ROUNDS && w->failures == 0; i++) {
        uint8_t key[32], value[200], buf[512];
        size_t len = 0;
        sc_result r;

        sf_make_key(key, 100 + w->id, i);
        memset(value, (int)(w->id * 31 + i), sizeof(value));
        if (sc_put(w->client, key, 32, value, sizeof(value), 60) != SC_OK) {
            snprintf(w->what, sizeof(w->what), "put %u failed", i);
            w->failures++;
        }
        r = sc_get(w->client, key, 32, buf, sizeof(buf), &len);
        if (r != SC_OK || len != sizeof(value) || memcmp(buf, value, len) != 0) {
            snprintf(w->what, sizeof(w->what), "get %u: %s len %zu", i, sc_result_name(r), len);
            w->failures++;
        }
        if (i % 5 == 0) {
            sc_remove(w->client, key, 32);
            r = sc_get(w->client, key, 32, buf, sizeof(buf), &len);
            if (r != SC_NOT_FOUND) {
                snprintf(w->what, sizeof(w->what), "get after remove %u: %s", i, sc_result_name(r));
                w->failures++;
            }
        }
    }
    return NULL;
}

START_TEST(test_threads)
{
    pthread_t tid[THREADS];
    worker w[THREADS];
    th_daemon d;
    sc_client *c;
    sc_stats st;

    sf_start_daemon(&d);
    c = sf_client_one(d.port, SF_LIVE_TIMEOUT_MS);
    for (unsigned i = 0; i < THREADS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].client = c;
        w[i].id = i;
        ck_assert_int_eq(pthread_create(&tid[i], NULL, worker_run, &w[i]), 0);
    }
    for (unsigned i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_join(tid[i], NULL), 0);
    for (unsigned i = 0; i < THREADS; i++)
        ck_assert_msg(w[i].failures == 0, "thread %u: %s", i, w[i].what);
    /* The threads have exited: their counters were folded into the client. */
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.lookups, THREADS * (ROUNDS + ROUNDS / 5));
    ck_assert_uint_eq(st.hits, THREADS * ROUNDS);
    ck_assert_uint_eq(st.misses, THREADS * ROUNDS / 5);
    ck_assert_uint_eq(st.stores, THREADS * ROUNDS);
    ck_assert_uint_eq(st.removes, THREADS * ROUNDS / 5);
    ck_assert_uint_eq(st.timeouts + st.errors + st.skipped, 0);
    ck_assert_ptr_null(c->threads);
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

static Suite *sessionc_cluster_suite(void)
{
    Suite *s = suite_create("sessionc_cluster");
    TCase *tc;

    tc = tcase_create("daemon");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_breaker_dead_server);
    tcase_add_test(tc, test_breaker_recovery);
    tcase_add_test(tc, test_breaker_one_probe);
    tcase_add_test(tc, test_two_servers);
    tcase_add_test(tc, test_failover_silent);
    tcase_add_test(tc, test_failover_refused);
    tcase_add_test(tc, test_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sessionc_cluster_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
