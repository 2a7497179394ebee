/* check_sessionc.c — tests of libsessionc's configuration and raw
 * operations, the latter against a real sessiond on loopback.
 *
 * What is covered:
 * - the server list: good strings (default port, IPv6 with and without
 *   brackets, blanks, names, 64 servers) and every refusal, each a single
 *   line naming the problem; option checks;
 * - rendezvous order: deterministic, independent of list order, spread,
 *   and minimal disruption when a server is removed;
 * - the breaker state machine with explicit clock values (threshold, one
 *   probe, doubling up to the cap, reset on success, puts never probe);
 * - raw put/get/remove round trips (v2, the default, and v1), not found,
 *   short buffers, bad arguments, too-large values refused and counted, the
 *   largest value that fits, the daemon's per-version counters;
 * - timeouts against a socket that never answers: bounded both ways.
 *
 * The breaker end to end, several servers and threads are in
 * check_sessionc_cluster.c; keys, sealing, namespaces and sessionctl in
 * check_sessionc_v2.c; OpenSSL and the event-loop mode in
 * check_sessionc_ssl.c.
 *
 * Waiting: no sleeps as synchronisation. Fire-and-forget puts are ordered
 * before the next get because both go out on the same per-thread socket to
 * the same daemon.
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

/* ------------------------------------------------------------------ */
/* server list */

static const char *server_name(const sc_client *c, size_t i)
{
    ck_assert_uint_lt(i, c->nservers);
    return c->servers[i].name;
}

START_TEST(test_parse_good)
{
    char err[256];
    sc_client *c;

    c = sc_client_new("127.0.0.1", NULL, err, sizeof(err));
    ck_assert_ptr_nonnull(c);
    ck_assert_uint_eq(c->nservers, 1);
    ck_assert_str_eq(server_name(c, 0), "127.0.0.1:54321"); /* the default port */
    ck_assert_uint_eq(c->opt.timeout_ms, 200);              /* NULL opt: defaults */
    ck_assert_uint_eq(c->opt.breaker_failures, 3);
    ck_assert_uint_eq(c->opt.backoff_min_ms, 1000);
    ck_assert_uint_eq(c->opt.backoff_max_ms, 30000);
    ck_assert_uint_eq(c->opt.protocol, 2); /* v2 by default, unsealed without a key */
    ck_assert_uint_eq(c->opt.window_ms, PROTO_V2_DEFAULT_WINDOW_MS);
    ck_assert_int_eq(c->has_key, 0);
    for (int i = 0; i < SC_NAMESPACE_LEN; i++)
        ck_assert_uint_eq(c->opt.default_namespace[i], 0);
    ck_assert_uint_eq(sc_server_count(c), 1);
    ck_assert_str_eq(sc_server_name(c, 0), "127.0.0.1:54321");
    ck_assert_ptr_null(sc_server_name(c, 1));
    sc_client_free(c);

    c = sc_client_new(" 127.0.0.1:1234 ,\t[::1]:5000,::1,[::2], 127.0.0.2 ", NULL, err,
                      sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->nservers, 5);
    ck_assert_str_eq(server_name(c, 0), "127.0.0.1:1234");
    ck_assert_str_eq(server_name(c, 1), "[::1]:5000");
    ck_assert_str_eq(server_name(c, 2), "[::1]:54321"); /* a bare IPv6 literal */
    ck_assert_str_eq(server_name(c, 3), "[::2]:54321");
    ck_assert_str_eq(server_name(c, 4), "127.0.0.2:54321");
    ck_assert_int_eq(c->servers[1].addr.ss_family, AF_INET6);
    ck_assert_int_eq(c->servers[4].addr.ss_family, AF_INET);
    sc_client_free(c);
}
END_TEST

START_TEST(test_parse_names_and_limits)
{
    char err[256], list[64 * 20];
    sc_client *c;
    size_t len = 0;

    /* A name is resolved once, to a numeric identity. */
    c = sc_client_new("localhost:7000", NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_msg(strcmp(server_name(c, 0), "127.0.0.1:7000") == 0 ||
                      strcmp(server_name(c, 0), "[::1]:7000") == 0,
                  "localhost resolved to %s", server_name(c, 0));
    sc_client_free(c);

    /* SC_MAX_SERVERS entries are fine, one more is refused. */
    for (int i = 1; i <= SC_MAX_SERVERS + 1; i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s127.0.0.1:%d", i > 1 ? "," : "",
                                1000 + i);
    c = sc_client_new(list, NULL, err, sizeof(err));
    ck_assert_ptr_null(c);
    ck_assert_msg(strstr(err, "too many servers") != NULL, "%s", err);
    *strrchr(list, ',') = '\0';
    c = sc_client_new(list, NULL, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_uint_eq(c->nservers, SC_MAX_SERVERS);
    sc_client_free(c);
}
END_TEST

static const struct {
    const char *list;
    const char *reason;
} bad_lists[] = {
    {"", "empty server list"},
    {"   ", "empty server list"},
    {"127.0.0.1:", "bad port '' in server list"},
    {"127.0.0.1:x", "bad port 'x' in server list"},
    {"127.0.0.1:0", "bad port '0' in server list"},
    {"127.0.0.1:65536", "bad port '65536' in server list"},
    {"127.0.0.1:99999999999999999999", "bad port '99999999999999999999'"},
    {"127.0.0.1:12ab", "bad port '12ab' in server list"},
    {"127.0.0.1:-1", "bad port '-1' in server list"},
    {"[::1", "missing ']'"},
    {"[::1]x", "after ']'"},
    {"[::1]:", "bad port ''"},
    {"[127.0.0.1]:80", "cannot resolve '127.0.0.1'"},
    {":54321", "empty host"},
    {"[]:54321", "empty host"},
    {"127.0.0.1,,127.0.0.2", "empty entry in server list"},
    {"127.0.0.1,", "empty entry in server list"},
    {",127.0.0.1", "empty entry in server list"},
    {"no-such-host.invalid", "cannot resolve 'no-such-host.invalid': "},
    {"127.0.0.1,127.0.0.1:54321", "server 127.0.0.1:54321 listed twice"},
    {"127.0.0.1\n", "control character in server list"},
};

START_TEST(test_parse_bad)
{
    const char *list = bad_lists[_i].list, *reason = bad_lists[_i].reason;
    char err[256];
    sc_client *c;

    memset(err, 'x', sizeof(err));
    c = sc_client_new(list, NULL, err, sizeof(err));
    ck_assert_msg(c == NULL, "'%s' was accepted", list);
    ck_assert_msg(strstr(err, reason) != NULL, "'%s': got \"%s\", want \"%s\"", list, err, reason);
    ck_assert_msg(strchr(err, '\n') == NULL, "'%s': message is not one line", list);
    /* NULL err is allowed. */
    ck_assert_ptr_null(sc_client_new(list, NULL, NULL, 0));
}
END_TEST

START_TEST(test_options_bad)
{
    sc_client *c;
    sc_options opt;
    char err[256];

    ck_assert_ptr_null(sc_client_new(NULL, NULL, err, sizeof(err)));
    ck_assert_str_eq(err, "empty server list");

    sc_options_init(&opt);
    opt.timeout_ms = 0;
    ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
    ck_assert_msg(strstr(err, "timeout_ms") != NULL, "%s", err);

    sc_options_init(&opt);
    opt.backoff_min_ms = 5000;
    opt.backoff_max_ms = 1000;
    ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
    ck_assert_msg(strstr(err, "backoff_min_ms") != NULL, "%s", err);

    /* failures 0 disables the breaker; then back-off values do not matter. */
    opt.breaker_failures = 0;
    c = sc_client_new("127.0.0.1", &opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    sc_client_free(c);
    sc_options_init(&opt);
    opt.protocol = 3;
    ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
    ck_assert_str_eq(err, "protocol must be 1 or 2, not 3");
    sc_options_init(&opt);
    opt.window_ms = 0;
    ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
    ck_assert_msg(strstr(err, "window_ms") != NULL, "%s", err);
    sc_options_init(&opt);
    opt.next_key_file = "/nonexistent";
    ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
    ck_assert_str_eq(err, "next_key_file needs key_file");
    sc_options_init(&opt);
    opt.protocol = 1;
    opt.key_file = "/nonexistent";
    ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
    ck_assert_msg(strstr(err, "protocol 1 cannot be sealed") != NULL, "%s", err);

    ck_assert_str_eq(sc_result_name(SC_TIMEOUT), "timeout");
    ck_assert_str_eq(sc_result_name(SC_REFUSED), "refused");
    ck_assert_str_eq(sc_result_name((sc_result)99), "unknown");
}
END_TEST

/* ------------------------------------------------------------------ */
/* rendezvous order */

static size_t first_server(const sc_client *c, const uint8_t key[32])
{
    uint8_t order[SC_MAX_SERVERS];

    sc_servers_order(c, sc_key_hash(key, 32), order);
    return order[0];
}

START_TEST(test_rendezvous)
{
    sc_client *abc = sf_client_for("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 200, 3, 1000, 30000);
    sc_client *cba = sf_client_for("127.0.0.1:3,127.0.0.1:2,127.0.0.1:1", 200, 3, 1000, 30000);
    sc_client *ab = sf_client_for("127.0.0.1:1,127.0.0.1:2", 200, 3, 1000, 30000);
    unsigned wins[3] = {0, 0, 0}, moved = 0, kept_c = 0;
    const unsigned keys = 3000;

    for (unsigned k = 0; k < keys; k++) {
        uint8_t key[32], order[SC_MAX_SERVERS], again[SC_MAX_SERVERS];
        unsigned seen = 0;
        size_t i_abc, i_ab;

        sf_make_key(key, k, 7);
        ck_assert_uint_eq(sc_servers_order(abc, sc_key_hash(key, 32), order), 3);
        sc_servers_order(abc, sc_key_hash(key, 32), again);
        ck_assert_mem_eq(order, again, 3); /* deterministic */
        for (int i = 0; i < 3; i++)
            seen |= 1u << order[i];
        ck_assert_uint_eq(seen, 7); /* a permutation */

        i_abc = first_server(abc, key);
        /* Same servers listed in another order: same server chosen. */
        ck_assert_str_eq(abc->servers[i_abc].name, cba->servers[first_server(cba, key)].name);
        wins[i_abc]++;

        /* Remove server 3: only its keys move. */
        i_ab = first_server(ab, key);
        if (i_abc == 2)
            moved++;
        else if (strcmp(abc->servers[i_abc].name, ab->servers[i_ab].name) == 0)
            kept_c++;
    }
    for (int i = 0; i < 3; i++)
        ck_assert_msg(wins[i] > keys / 3 - keys / 10 && wins[i] < keys / 3 + keys / 10,
                      "server %d first for %u of %u keys", i, wins[i], keys);
    ck_assert_uint_eq(moved + kept_c, keys);
    sc_client_free(abc);
    sc_client_free(cba);
    sc_client_free(ab);
}
END_TEST

/* ------------------------------------------------------------------ */
/* breaker state machine, clock injected */

START_TEST(test_breaker_states)
{
    sc_options opt;
    sc_breaker b;
    const int64_t ms = 1000000;
    int64_t t = 1000 * ms;

    sc_options_init(&opt);
    opt.breaker_failures = 3;
    opt.backoff_min_ms = 100;
    opt.backoff_max_ms = 400;
    sc_breaker_init(&b, &opt);

    ck_assert_int_eq(sc_breaker_admit(&b, t, 1), SC_ADMIT_NORMAL);
    sc_breaker_failure(&b, SC_ADMIT_NORMAL, t, &opt);
    sc_breaker_failure(&b, SC_ADMIT_NORMAL, t, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t, 1), SC_ADMIT_NORMAL);
    /* A success resets the count: failures must be consecutive. */
    sc_breaker_success(&b, SC_ADMIT_NORMAL, &opt);
    sc_breaker_failure(&b, SC_ADMIT_NORMAL, t, &opt);
    sc_breaker_failure(&b, SC_ADMIT_NORMAL, t, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t, 1), SC_ADMIT_NORMAL);
    sc_breaker_failure(&b, SC_ADMIT_NORMAL, t, &opt); /* third: backed off 100 ms */
    ck_assert_int_eq(sc_breaker_admit(&b, t, 1), SC_ADMIT_SKIP);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 99 * ms, 1), SC_ADMIT_SKIP);
    /* Back-off over: puts never probe, exactly one lookup does. */
    ck_assert_int_eq(sc_breaker_admit(&b, t + 100 * ms, 0), SC_ADMIT_SKIP);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 100 * ms, 1), SC_ADMIT_PROBE);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 100 * ms, 1), SC_ADMIT_SKIP);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 150 * ms, 1), SC_ADMIT_SKIP);

    /* Failed probes double the back-off: 200, 400, then capped at 400. */
    t += 100 * ms;
    sc_breaker_failure(&b, SC_ADMIT_PROBE, t, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 199 * ms, 1), SC_ADMIT_SKIP);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 200 * ms, 1), SC_ADMIT_PROBE);
    t += 200 * ms;
    sc_breaker_failure(&b, SC_ADMIT_PROBE, t, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 399 * ms, 1), SC_ADMIT_SKIP);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 400 * ms, 1), SC_ADMIT_PROBE);
    t += 400 * ms;
    sc_breaker_failure(&b, SC_ADMIT_PROBE, t, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 399 * ms, 1), SC_ADMIT_SKIP);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 400 * ms, 1), SC_ADMIT_PROBE);

    /* A probe that ends without a verdict lets the next caller probe. */
    sc_breaker_release(&b, SC_ADMIT_PROBE);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 400 * ms, 1), SC_ADMIT_PROBE);

    /* A successful probe closes the breaker and resets the back-off. */
    sc_breaker_success(&b, SC_ADMIT_PROBE, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 400 * ms, 0), SC_ADMIT_NORMAL);
    t += 1000 * ms;
    for (int i = 0; i < 3; i++)
        sc_breaker_failure(&b, SC_ADMIT_NORMAL, t, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 99 * ms, 1), SC_ADMIT_SKIP);
    ck_assert_int_eq(sc_breaker_admit(&b, t + 100 * ms, 1), SC_ADMIT_PROBE);
    sc_breaker_destroy(&b);

    /* failures = 0: the breaker never opens. */
    opt.breaker_failures = 0;
    sc_breaker_init(&b, &opt);
    for (int i = 0; i < 10; i++)
        sc_breaker_failure(&b, SC_ADMIT_NORMAL, t, &opt);
    ck_assert_int_eq(sc_breaker_admit(&b, t, 1), SC_ADMIT_NORMAL);
    sc_breaker_destroy(&b);
}
END_TEST

/* ------------------------------------------------------------------ */
/* raw operations against a daemon */

/* _i 0: v2 (the default), 1: v1. */
START_TEST(test_roundtrip)
{
    unsigned protocol = _i == 0 ? 2 : 1;
    size_t id_max = protocol == 2 ? SC_MAX_ID_LEN : 32;
    uint8_t key[SC_MAX_ID_LEN + 1], value[300], buf[4096];
    size_t len = 0;
    th_daemon d;
    sc_client *c;
    sc_stats st;

    sf_start_daemon(&d);
    c = sf_client_proto(d.port, protocol);
    sf_make_key(key, 1, 1);
    RAND_bytes(value, sizeof(value));

    ck_assert_int_eq(sc_put(c, key, 32, value, sizeof(value), 60), SC_OK);
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_uint_eq(len, sizeof(value));
    ck_assert_mem_eq(buf, value, sizeof(value));

    /* A buffer too small: refused, with the size needed. */
    ck_assert_int_eq(sc_get(c, key, 32, buf, 10, &len), SC_ERR_TOO_LARGE);
    ck_assert_uint_eq(len, sizeof(value));
    /* cap 0 with a NULL buffer: a size query. */
    ck_assert_int_eq(sc_get(c, key, 32, NULL, 0, &len), SC_ERR_TOO_LARGE);
    ck_assert_uint_eq(len, sizeof(value));

    /* Short IDs (zero-padded in v1) are distinct from the 32-byte key. */
    ck_assert_int_eq(sc_put(c, (const uint8_t *)"\x01", 1, value, 5, 0), SC_OK);
    ck_assert_int_eq(sc_get(c, (const uint8_t *)"\x01", 1, buf, sizeof(buf), &len), SC_OK);
    ck_assert_uint_eq(len, 5);

    ck_assert_int_eq(sc_remove(c, key, 32), SC_OK);
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_NOT_FOUND);
    sf_make_key(key, 2, 2);
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_NOT_FOUND);

    /* Bad arguments are refused before anything is sent or counted. */
    ck_assert_int_eq(sc_get(c, key, 0, buf, sizeof(buf), &len), SC_ERR_ARG);
    ck_assert_int_eq(sc_get(c, key, id_max + 1, buf, sizeof(buf), &len), SC_ERR_ARG);
    ck_assert_int_eq(sc_get(c, NULL, 3, buf, sizeof(buf), &len), SC_ERR_ARG);
    ck_assert_int_eq(sc_get(c, key, 32, NULL, 10, &len), SC_ERR_ARG);
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), NULL), SC_ERR_ARG);
    ck_assert_int_eq(sc_put(c, key, 32, value, 0, 0), SC_ERR_ARG);
    ck_assert_int_eq(sc_put(c, key, id_max + 1, value, 1, 0), SC_ERR_ARG);
    ck_assert_int_eq(sc_remove(c, key, 0), SC_ERR_ARG);
    ck_assert_int_eq(sc_get(NULL, key, 32, buf, sizeof(buf), &len), SC_ERR_ARG);

    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.lookups, 6);
    ck_assert_uint_eq(st.hits, 4); /* the two short-buffer answers were hits too */
    ck_assert_uint_eq(st.misses, 2);
    ck_assert_uint_eq(st.stores, 2);
    ck_assert_uint_eq(st.removes, 1);
    ck_assert_uint_eq(st.timeouts + st.errors + st.skipped + st.too_large, 0);
    ck_assert_uint_eq(st.auth_failures + st.late_answers, 0);

    ck_assert_int_eq(sf_daemon_stat(&d, "puts"), 2);
    ck_assert_int_eq(sf_daemon_stat(&d, "removes"), 1);
    ck_assert_int_eq(sf_daemon_stat(&d, "gets"), 6);
    ck_assert_int_eq(sf_daemon_stat(&d, protocol == 2 ? "v2" : "v1"), 9);
    ck_assert_int_eq(sf_daemon_stat(&d, protocol == 2 ? "v1" : "v2"), 0);

    /* Acknowledged puts and removes exist in v2 only. */
    sf_make_key(key, 1, 2);
    if (protocol == 2) {
        ck_assert_int_eq(sc_put_wait(c, key, id_max, value, 7, 60), SC_OK);
        ck_assert_int_eq(sc_get(c, key, id_max, buf, sizeof(buf), &len), SC_OK);
        ck_assert_uint_eq(len, 7);
        ck_assert_int_eq(sc_remove_wait(c, key, id_max), SC_OK);
        ck_assert_int_eq(sc_remove_wait(c, key, id_max), SC_NOT_FOUND);
    } else {
        ck_assert_int_eq(sc_put_wait(c, key, 32, value, 7, 60), SC_ERR_ARG);
        ck_assert_int_eq(sc_remove_wait(c, key, 32), SC_ERR_ARG);
        ck_assert_int_eq(sc_ping(c, 0, NULL), SC_ERR_ARG);
    }
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* _i 0: v2, 1: v1, each with its own limit. */
START_TEST(test_too_large)
{
    unsigned protocol = _i == 0 ? 2 : 1;
    size_t big = (protocol == 2 ? PROTO_V2_MAX_VALUE : PROTO_V1_MAX_VALUE) + 1, len = 0;
    uint8_t key[32], *value = malloc(big), *buf = malloc(big);
    th_daemon d;
    sc_client *c;
    sc_stats st;

    ck_assert_ptr_nonnull(value);
    ck_assert_ptr_nonnull(buf);
    sf_start_daemon(&d);
    c = sf_client_proto(d.port, protocol);
    sf_make_key(key, 3, 3);
    RAND_bytes(value, (int)big);

    ck_assert_int_eq(sc_put(c, key, 32, value, big, 60), SC_ERR_TOO_LARGE);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.too_large, 1);
    ck_assert_uint_eq(st.stores, 0);
    ck_assert_int_eq(sf_daemon_stat(&d, "datagrams"), 0); /* nothing truncated went out */

    /* The largest value that fits one datagram goes through whole. */
    ck_assert_int_eq(sc_put(c, key, 32, value, big - 1, 60), SC_OK);
    ck_assert_int_eq(sc_get(c, key, 32, buf, big, &len), SC_OK);
    ck_assert_uint_eq(len, big - 1);
    ck_assert_mem_eq(buf, value, big - 1);
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
    free(value);
    free(buf);
}
END_TEST

START_TEST(test_timeout)
{
    uint8_t key[32], buf[64];
    size_t len;
    int port, fd = sf_silent_socket(&port);
    sc_client *c = sf_client_one(port, 150);
    int64_t t0, elapsed;
    sc_stats st;

    sf_make_key(key, 4, 4);
    t0 = th_now_ms();
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    elapsed = th_now_ms() - t0;
    ck_assert_msg(elapsed >= 150 && elapsed < 1150, "timed out after %lld ms", (long long)elapsed);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.lookups, 1);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_int_eq(sf_drain_count(fd), 1); /* the GET did go out */
    sc_client_free(c);
    close(fd);
}
END_TEST

static Suite *sessionc_suite(void)
{
    Suite *s = suite_create("sessionc");
    TCase *tc;

    tc = tcase_create("parse");
    tcase_add_test(tc, test_parse_good);
    tcase_add_test(tc, test_parse_names_and_limits);
    tcase_add_loop_test(tc, test_parse_bad, 0, (int)(sizeof(bad_lists) / sizeof(bad_lists[0])));
    tcase_add_test(tc, test_options_bad);
    tcase_add_test(tc, test_rendezvous);
    tcase_add_test(tc, test_breaker_states);
    suite_add_tcase(s, tc);

    tc = tcase_create("daemon");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_roundtrip, 0, 2);
    tcase_add_loop_test(tc, test_too_large, 0, 2);
    tcase_add_test(tc, test_timeout);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(sessionc_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
