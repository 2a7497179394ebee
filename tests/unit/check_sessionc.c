/* check_sessionc.c — tests of libsessionc and sessionctl against real
 * sessiond processes on loopback.
 *
 * What is covered:
 * - the server list: good strings (default port, IPv6 with and without
 *   brackets, blanks, names, 64 servers) and every refusal, each a single
 *   line naming the problem; option checks;
 * - rendezvous order: deterministic, independent of list order, spread,
 *   and minimal disruption when a server is removed;
 * - the breaker state machine with explicit clock values (threshold, one
 *   probe, doubling up to the cap, reset on success, puts never probe);
 * - raw put/get/remove round trips, not found, short buffers, bad
 *   arguments, too-large values refused and counted, the largest value that
 *   fits;
 * - timeouts against a socket that never answers: bounded both ways;
 * - the breaker end to end: 1000 lookups on a dead server cost 3 timeouts;
 *   recovery through one probe after the back-off (with stale answers to
 *   earlier lookups discarded on the way); 8 threads racing when the
 *   back-off ends let exactly one probe through;
 * - two servers: keys spread over both, a second client with the list
 *   reversed finds every key; failover past a silent server and past a
 *   refused port;
 * - 8 threads on one client, counters of exited threads kept;
 * - OpenSSL: sessions resume across two SSL_CTXs with their own clients
 *   (TLS 1.2 IDs and TLS 1.3 stateful tickets, plain and sealed v2); the
 *   event-loop mode (plain and sealed) behind a relay that adds latency
 *   (every lookup suspends the handshake, no server call waits, all
 *   resume), and with a dead server (a full
 *   handshake after the timeout, never blocking); sc_detach keeping
 *   SSL_CTX_free from removing sessions cluster-wide;
 * - v2 (the default) and v1 (loop tests): round trips, acknowledged puts
 *   and removes, per-version value limits, the daemon's per-version
 *   counters; option and key-file refusals, one line each;
 * - sealing: a daemon with --key-file serves a client with the key (ping,
 *   stats, acknowledged operations), drops plaintext and wrong-key
 *   requests (the client times out, counted as a timeout), and a rollover
 *   with the next key works both ways; a fake server proves the client
 *   takes only a sealed, fresh answer to its own request (plaintext,
 *   wrong-key and replayed answers counted as auth failures, an earlier
 *   request's answer as late);
 * - request IDs: a stopped daemon answers a timed-out GET after a PUT
 *   changed the value; the next GET gets its own answer, not the stale one;
 * - namespaces: the same ID in two namespaces, v1 apart from both; an
 *   SSL_CTX's sessions live in its declared context's namespace;
 * - sessionctl: get/put/del/ping/stats, hex output, -1/-2, -n/-C, key
 *   files, every exit code (3 from a fake daemon that refuses), one-line
 *   errors.
 *
 * Waiting: no sleeps as synchronisation. Fire-and-forget puts are ordered
 * before the next get because both go out on the same per-thread socket to
 * the same daemon. The only time-based waits are for the breaker's back-off
 * to pass (polled with bounded loops) and the relay's added latency.
 *
 * Needs SESSIOND and SESSIONCTL in the environment (tests/run.sh sets them).
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
#include "tls_util.h"

#define LIVE_TIMEOUT_MS 2000 /* generous: the sanitizer build is slow */

static void start_daemon(th_daemon *d)
{
    ck_assert_msg(th_daemon_start(d, NULL) == 0, "sessiond did not start (SESSIOND=%s)",
                  getenv("SESSIOND") ? getenv("SESSIOND") : "unset");
}

/* A UDP socket bound on loopback that nobody ever reads: a server that is
 * up as far as the kernel knows but never answers. */
static int silent_socket(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A loopback port nobody listens on (bound, read, closed): datagrams to it
 * come back as ICMP port unreachable, i.e. ECONNREFUSED. */
static int refused_port(void)
{
    int port, fd = silent_socket(&port);

    close(fd);
    return port;
}

/* A GET request of either protocol version (v1 type 0x01 is v2's PUT). */
static int is_get(const uint8_t *buf, size_t len)
{
    return len >= 2 && ((buf[0] == PROTO_V1_VERSION && buf[1] == PROTO_V1_GET) ||
                        (buf[0] == PROTO_V2_VERSION && buf[1] == PROTO_V2_GET));
}

/* Datagrams queued on a silent socket; *gets (if not NULL) counts the GETs. */
static int drain_count_gets(int fd, int *gets)
{
    uint8_t buf[PROTO_MAX_DATAGRAM];
    ssize_t len;
    int n = 0;

    if (gets != NULL)
        *gets = 0;
    while ((len = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) >= 0) {
        n++;
        if (gets != NULL && is_get(buf, (size_t)len))
            (*gets)++;
    }
    return n;
}

static int drain_count(int fd)
{
    return drain_count_gets(fd, NULL);
}

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
        if (!is_get(buf, (size_t)n)) {
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
    r->front = silent_socket(&r->port);
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

static sc_client *client_for(const char *servers, unsigned timeout_ms, unsigned failures,
                             unsigned backoff_min, unsigned backoff_max)
{
    sc_options opt;
    char err[256];
    sc_client *c;

    sc_options_init(&opt);
    opt.timeout_ms = timeout_ms;
    opt.breaker_failures = failures;
    opt.backoff_min_ms = backoff_min;
    opt.backoff_max_ms = backoff_max;
    c = sc_client_new(servers, &opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "sc_client_new(%s): %s", servers, err);
    return c;
}

static sc_client *client_one(int port, unsigned timeout_ms)
{
    char list[64];

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    return client_for(list, timeout_ms, 3, 1000, 30000);
}

/* A client of one server with explicit options (timeout LIVE_TIMEOUT_MS
 * unless set). */
static sc_client *client_opts(int port, sc_options *opt)
{
    char list[64], err[512];
    sc_client *c;

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = sc_client_new(list, opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "sc_client_new(%s): %s", list, err);
    return c;
}

/* A client speaking `protocol` to one server. */
static sc_client *client_proto(int port, unsigned protocol)
{
    sc_options opt;

    sc_options_init(&opt);
    opt.timeout_ms = LIVE_TIMEOUT_MS;
    opt.protocol = protocol;
    return client_opts(port, &opt);
}

static long long daemon_stat(th_daemon *d, const char *name)
{
    char line[2048];

    ck_assert_int_eq(th_daemon_stats(d, line, sizeof(line)), 0);
    return th_stat(line, name);
}

static void make_key(uint8_t key[32], unsigned a, unsigned b)
{
    memset(key, 0, 32);
    snprintf((char *)key, 32, "k-%u-%u-", a, b);
    key[31] = (uint8_t)(a ^ b ^ 0x5a); /* full 32 bytes, like OpenSSL's IDs */
}

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
    sc_client *abc = client_for("127.0.0.1:1,127.0.0.1:2,127.0.0.1:3", 200, 3, 1000, 30000);
    sc_client *cba = client_for("127.0.0.1:3,127.0.0.1:2,127.0.0.1:1", 200, 3, 1000, 30000);
    sc_client *ab = client_for("127.0.0.1:1,127.0.0.1:2", 200, 3, 1000, 30000);
    unsigned wins[3] = {0, 0, 0}, moved = 0, kept_c = 0;
    const unsigned keys = 3000;

    for (unsigned k = 0; k < keys; k++) {
        uint8_t key[32], order[SC_MAX_SERVERS], again[SC_MAX_SERVERS];
        unsigned seen = 0;
        size_t i_abc, i_ab;

        make_key(key, k, 7);
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

    start_daemon(&d);
    c = client_proto(d.port, protocol);
    make_key(key, 1, 1);
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
    make_key(key, 2, 2);
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

    ck_assert_int_eq(daemon_stat(&d, "puts"), 2);
    ck_assert_int_eq(daemon_stat(&d, "removes"), 1);
    ck_assert_int_eq(daemon_stat(&d, "gets"), 6);
    ck_assert_int_eq(daemon_stat(&d, protocol == 2 ? "v2" : "v1"), 9);
    ck_assert_int_eq(daemon_stat(&d, protocol == 2 ? "v1" : "v2"), 0);

    /* Acknowledged puts and removes exist in v2 only. */
    make_key(key, 1, 2);
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
    start_daemon(&d);
    c = client_proto(d.port, protocol);
    make_key(key, 3, 3);
    RAND_bytes(value, (int)big);

    ck_assert_int_eq(sc_put(c, key, 32, value, big, 60), SC_ERR_TOO_LARGE);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.too_large, 1);
    ck_assert_uint_eq(st.stores, 0);
    ck_assert_int_eq(daemon_stat(&d, "datagrams"), 0); /* nothing truncated went out */

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
    int port, fd = silent_socket(&port);
    sc_client *c = client_one(port, 150);
    int64_t t0, elapsed;
    sc_stats st;

    make_key(key, 4, 4);
    t0 = th_now_ms();
    ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    elapsed = th_now_ms() - t0;
    ck_assert_msg(elapsed >= 150 && elapsed < 1150, "timed out after %lld ms", (long long)elapsed);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.lookups, 1);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_int_eq(drain_count(fd), 1); /* the GET did go out */
    sc_client_free(c);
    close(fd);
}
END_TEST

/* A dead daemon costs a few timeouts, not one per lookup. */
START_TEST(test_breaker_dead_server)
{
    uint8_t key[32], buf[64];
    unsigned timeouts = 0, skipped = 0;
    size_t len;
    char list[64];
    int port, fd = silent_socket(&port);
    sc_client *c;
    int64_t t0, elapsed;
    sc_stats st;

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = client_for(list, 50, 3, 60000, 60000);
    t0 = th_now_ms();
    for (unsigned i = 0; i < 1000; i++) {
        sc_result r;

        make_key(key, 5, i);
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
    ck_assert_int_eq(drain_count(fd), 3); /* skipped lookups never hit the wire */

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

    start_daemon(&d);
    snprintf(list, sizeof(list), "127.0.0.1:%d", d.port);
    c = client_for(list, 50, 3, 100, 1000);
    RAND_bytes(value, sizeof(value));

    ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
    make_key(key, 6, 100);
    ck_assert_int_eq(sc_put(c, key, 32, value, sizeof(value), 60), SC_OK); /* queued */
    for (unsigned i = 0; i < 3; i++) {
        uint8_t other[32];

        make_key(other, 6, i);
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

    make_key(key, 50, r->id);
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
    int port, fd = silent_socket(&port);
    unsigned timeouts = 0, skipped = 0;
    int64_t until, deadline;
    sc_client *c;

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = client_for(list, 100, 2, 50, 50);
    for (unsigned i = 0; i < 2; i++) {
        make_key(key, 49, i);
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
    ck_assert_int_eq(drain_count(fd), 3); /* 2 failures + 1 probe on the wire */
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

    start_daemon(&d1);
    start_daemon(&d2);
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", d1.port, d2.port);
    snprintf(reversed, sizeof(reversed), "127.0.0.1:%d,127.0.0.1:%d", d2.port, d1.port);
    c = client_for(list, LIVE_TIMEOUT_MS, 3, 1000, 30000);
    r = client_for(reversed, LIVE_TIMEOUT_MS, 3, 1000, 30000);
    for (unsigned i = 0; i < KEYS; i++) {
        make_key(key, 7, i);
        memset(value, (int)i, sizeof(value));
        ck_assert_int_eq(sc_put(c, key, 32, value, sizeof(value), 60), SC_OK);
    }
    for (unsigned i = 0; i < KEYS; i++) {
        make_key(key, 7, i);
        memset(value, (int)i, sizeof(value));
        ck_assert_int_eq(sc_get(c, key, 32, buf, sizeof(buf), &len), SC_OK);
        ck_assert_mem_eq(buf, value, sizeof(value));
        /* Another client, servers listed the other way round, agrees. */
        ck_assert_int_eq(sc_get(r, key, 32, buf, sizeof(buf), &len), SC_OK);
    }
    p1 = daemon_stat(&d1, "puts");
    p2 = daemon_stat(&d2, "puts");
    ck_assert_int_eq(p1 + p2, KEYS);
    ck_assert_msg(p1 >= KEYS / 5 && p2 >= KEYS / 5, "spread %lld/%lld", p1, p2);
    ck_assert_int_eq(daemon_stat(&d1, "gets") + daemon_stat(&d2, "gets"), 2 * KEYS);
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
    int port, fd = silent_socket(&port);
    unsigned ok = 0, timeouts = 0;
    uint8_t key[32], value[32], buf[64];
    size_t len;
    sc_client *c;

    start_daemon(&d);
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", port, d.port);
    c = client_for(list, 50, 3, 60000, 60000);
    for (unsigned i = 0; i < KEYS; i++) {
        sc_result r;

        make_key(key, 8, i);
        memset(value, (int)i, sizeof(value));
        ck_assert_int_eq(sc_put(c, key, 32, value, sizeof(value), 60), SC_OK);
        r = sc_get(c, key, 32, buf, sizeof(buf), &len);
        ck_assert_msg(r == SC_OK || r == SC_TIMEOUT, "key %u: %s", i, sc_result_name(r));
        ok += r == SC_OK;
        timeouts += r == SC_TIMEOUT;
    }
    ck_assert_uint_eq(timeouts, 3);
    ck_assert_uint_eq(ok, KEYS - 3);
    ck_assert_int_ge(drain_count(fd), 6); /* 3 puts and 3 gets reached the silent one */
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

    start_daemon(&d);
    snprintf(list, sizeof(list), "127.0.0.1:%d,127.0.0.1:%d", refused_port(), d.port);
    c = client_for(list, 5000, 3, 60000, 60000);
    t0 = th_now_ms();
    for (unsigned i = 0; i < KEYS; i++) {
        sc_result r;

        make_key(key, 9, i);
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

        make_key(key, 100 + w->id, i);
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

    start_daemon(&d);
    c = client_one(d.port, LIVE_TIMEOUT_MS);
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

/* ------------------------------------------------------------------ */
/* v2: keys, sealing, request IDs, namespaces */

/* Writes a random cluster key as 64 hex digits into dir/name with `mode`;
 * the key and the path are handed back. */
static void write_key_file(const char *dir, const char *name, mode_t mode, uint8_t key[32],
                           char *path, size_t cap)
{
    FILE *f;
    int fd;

    snprintf(path, cap, "%s/%s", dir, name);
    ck_assert_int_eq(RAND_bytes(key, 32), 1);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fchmod(fd, mode), 0); /* whatever the umask did */
    f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 32; i++)
        fprintf(f, "%02x", key[i]);
    fputc('\n', f);
    ck_assert_int_eq(fclose(f), 0);
}

static void start_daemon_args(th_daemon *d, const char *const *args)
{
    ck_assert_msg(th_daemon_start(d, args) == 0, "sessiond did not start (SESSIOND=%s)",
                  getenv("SESSIOND") ? getenv("SESSIOND") : "unset");
}

/* A client of one server with a key file (and maybe a next key file). */
static sc_client *client_keyed(int port, const char *key_file, const char *next_key_file,
                               unsigned timeout_ms)
{
    sc_options opt;

    sc_options_init(&opt);
    opt.timeout_ms = timeout_ms;
    opt.key_file = key_file;
    opt.next_key_file = next_key_file;
    return client_opts(port, &opt);
}

/* Key files the library refuses, each with one line naming the file. */
START_TEST(test_key_files)
{
    char dir[256], good[300], loose[300], shortf[300], err[512];
    uint8_t key[32], other[32];
    sc_options opt;
    sc_client *c;
    FILE *f;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    write_key_file(dir, "good", 0600, key, good, sizeof(good));
    write_key_file(dir, "loose", 0644, other, loose, sizeof(loose));
    snprintf(shortf, sizeof(shortf), "%s/short", dir);
    f = fopen(shortf, "w");
    ck_assert_ptr_nonnull(f);
    fputs("0011223344\n", f);
    fclose(f);
    ck_assert_int_eq(chmod(shortf, 0600), 0);

    sc_options_init(&opt);
    opt.key_file = good;
    c = sc_client_new("127.0.0.1", &opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "%s", err);
    ck_assert_int_eq(c->has_key, 1);
    ck_assert_mem_eq(c->key, key, 32);
    ck_assert_ptr_null(c->opt.key_file); /* the path is not kept */
    sc_client_free(c);

    const char *bad[] = {loose, shortf, "/nonexistent/key"};
    const char *why[] = {"by group or others", "want 32 raw bytes", "No such file"};
    for (int i = 0; i < 3; i++) {
        sc_options_init(&opt);
        opt.key_file = bad[i];
        memset(err, 0, sizeof(err));
        ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
        ck_assert_msg(strstr(err, bad[i]) != NULL && strstr(err, why[i]) != NULL, "%s", err);
        ck_assert_ptr_null(strchr(err, '\n'));
        /* The same checks for the next key. */
        opt.key_file = good;
        opt.next_key_file = bad[i];
        ck_assert_ptr_null(sc_client_new("127.0.0.1", &opt, err, sizeof(err)));
        ck_assert_msg(strstr(err, bad[i]) != NULL, "%s", err);
    }
    th_rmtree(dir);
}
END_TEST

/* Sealed v2 through a daemon with --key-file: round trips, acknowledged
 * operations, ping and stats; a plaintext client and a wrong-key client get
 * nothing (the daemon drops them silently: a timeout, counted as such); a
 * rollover where the daemon already holds the next key. */
START_TEST(test_sealed)
{
    char dir[256], k1[300], k2[300], line[4096];
    uint8_t key1[32], key2[32], id[32], value[500], buf[1024];
    const char *args1[] = {"--key-file", k1, NULL};
    const char *args2[] = {"--key-file", k1, "--next-key-file", k2, NULL};
    size_t len = 0;
    uint64_t rtt = 0;
    th_daemon d, d2;
    sc_client *c, *plain, *wrong, *rolled;
    sc_stats st;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    write_key_file(dir, "k1", 0600, key1, k1, sizeof(k1));
    write_key_file(dir, "k2", 0600, key2, k2, sizeof(k2));
    start_daemon_args(&d, args1);
    c = client_keyed(d.port, k1, NULL, LIVE_TIMEOUT_MS);
    make_key(id, 20, 1);
    RAND_bytes(value, sizeof(value));

    ck_assert_int_eq(sc_put(c, id, 32, value, sizeof(value), 60), SC_OK);
    ck_assert_int_eq(sc_get(c, id, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_uint_eq(len, sizeof(value));
    ck_assert_mem_eq(buf, value, sizeof(value));
    ck_assert_int_eq(sc_put_wait(c, id, 32, value, 100, 60), SC_OK);
    ck_assert_int_eq(sc_get(c, id, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_uint_eq(len, 100);
    ck_assert_int_eq(sc_remove_wait(c, id, 32), SC_OK);
    ck_assert_int_eq(sc_remove_wait(c, id, 32), SC_NOT_FOUND);
    ck_assert_int_eq(sc_get(c, id, 32, buf, sizeof(buf), &len), SC_NOT_FOUND);
    ck_assert_int_eq(sc_ping(c, 0, &rtt), SC_OK);
    ck_assert_uint_gt(rtt, 0);
    ck_assert_int_eq(sc_server_stats(c, 0, line, sizeof(line), &len), SC_OK);
    ck_assert_msg(strstr(line, "sealed=") != NULL && strlen(line) == len, "%s", line);
    ck_assert_int_eq(sc_server_stats(c, 0, line, 5, &len), SC_ERR_TOO_LARGE);
    ck_assert_uint_gt(len, 5);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.hits, 2);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_uint_eq(st.timeouts + st.errors + st.auth_failures + st.late_answers, 0);
    /* 10 requests, all sealed; nothing refused. */
    ck_assert_int_eq(daemon_stat(&d, "sealed"), 10);
    ck_assert_int_eq(daemon_stat(&d, "denied") + daemon_stat(&d, "auth_failed") +
                         daemon_stat(&d, "unknown_key"),
                     0);

    /* Plaintext to a daemon with a key: dropped, never answered. */
    plain = client_one(d.port, 100);
    ck_assert_int_eq(sc_get(plain, id, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    ck_assert_int_eq(sc_put_wait(plain, id, 32, value, 10, 60), SC_TIMEOUT);
    sc_get_stats(plain, &st);
    ck_assert_uint_eq(st.timeouts, 2);
    ck_assert_int_eq(daemon_stat(&d, "denied"), 2);

    /* Another key: dropped silently too; the client sees a timeout. */
    wrong = client_keyed(d.port, k2, NULL, 100);
    ck_assert_int_eq(sc_get(wrong, id, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    sc_get_stats(wrong, &st);
    ck_assert_uint_eq(st.lookups, 1);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.errors + st.auth_failures, 0);
    ck_assert_int_eq(daemon_stat(&d, "unknown_key"), 1);
    ck_assert_int_eq(daemon_stat(&d, "puts"), 2); /* nothing of theirs was stored */

    /* Rollover: a daemon that holds k1 and already accepts k2; a client that
     * seals with k2 and still accepts k1 (the daemon answers with k1). */
    start_daemon_args(&d2, args2);
    rolled = client_keyed(d2.port, k2, k1, LIVE_TIMEOUT_MS);
    ck_assert_int_eq(sc_put_wait(rolled, id, 32, value, sizeof(value), 60), SC_OK);
    ck_assert_int_eq(sc_get(rolled, id, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_mem_eq(buf, value, sizeof(value));
    sc_get_stats(rolled, &st);
    ck_assert_uint_eq(st.auth_failures + st.timeouts, 0);

    sc_client_free(c);
    sc_client_free(plain);
    sc_client_free(wrong);
    sc_client_free(rolled);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
    ck_assert_int_eq(th_daemon_stop(&d2), 0);
    th_rmtree(dir);
}
END_TEST

/* A fake server on a silent socket that answers one sealed GET with a
 * sequence of datagrams: only the last is the genuine answer. */
typedef struct forger {
    int fd;
    uint8_t key[32], other_key[32];
    int sent;
} forger;

static void forger_send(forger *f, proto_v2_sealer *s, const proto_v2_msg *m, int sealed)
{
    uint8_t out[512];
    size_t len = 0;

    if (sealed)
        ck_assert_int_eq(proto_v2_seal(s, out, sizeof(out), m, &len), PROTO_OK);
    else
        ck_assert_int_eq(proto_v2_encode(out, sizeof(out), m, &len), PROTO_OK);
    ck_assert_int_eq(send(f->fd, out, len, 0), (ssize_t)len);
    f->sent++;
}

static void *forger_run(void *arg)
{
    forger *f = arg;
    proto_v2_sealer *good = proto_v2_sealer_new(f->key, NULL);
    proto_v2_sealer *bad = proto_v2_sealer_new(f->other_key, NULL);
    struct pollfd pfd = {.fd = f->fd, .events = POLLIN};
    struct sockaddr_storage from;
    socklen_t from_len = sizeof(from);
    uint8_t req[512], key[PROTO_V2_MAX_KEY];
    proto_v2_msg m, ans;
    ssize_t n;
    uint64_t now;

    if (good == NULL || bad == NULL || poll(&pfd, 1, 5000) != 1)
        goto done;
    n = recvfrom(f->fd, req, sizeof(req), 0, (struct sockaddr *)&from, &from_len);
    if (n <= 0 || connect(f->fd, (struct sockaddr *)&from, from_len) != 0)
        goto done;
    now = (uint64_t)time(NULL) * 1000;
    if (proto_v2_open(good, req, (size_t)n, 0, now, 60000, &m) != PROTO_OK || m.op != PROTO_V2_GET)
        goto done;
    memcpy(key, m.key, m.key_len);
    memset(&ans, 0, sizeof(ans));
    ans.op = PROTO_V2_GET | PROTO_V2_ANSWER;
    ans.request_id = m.request_id;
    ans.key = key;
    ans.key_len = m.key_len;
    ans.value = (const uint8_t *)"planted";
    ans.value_len = 7;
    ans.timestamp_ms = now;
    forger_send(f, good, &ans, 0);   /* plaintext, right ID: a plant */
    forger_send(f, bad, &ans, 1);    /* sealed with a key the client lacks */
    ans.timestamp_ms = now - 120000; /* genuine key, two minutes old: a replay */
    forger_send(f, good, &ans, 1);
    ans.timestamp_ms = now;
    ans.request_id = m.request_id - 1; /* genuine but for an earlier request */
    forger_send(f, good, &ans, 1);
    ans.request_id = m.request_id;
    ans.value = (const uint8_t *)"genuine";
    forger_send(f, good, &ans, 1);

done:
    proto_v2_sealer_free(good);
    proto_v2_sealer_free(bad);
    return NULL;
}

/* With a key, the client takes only a sealed, fresh answer to its own
 * request: a plaintext answer, another key's, a replayed one and a late
 * one are all discarded and counted, and the wait goes on. */
START_TEST(test_forged_answers)
{
    char dir[256], kpath[300], other[300];
    uint8_t id[32], buf[64];
    size_t len = 0;
    forger f;
    pthread_t tid;
    int port;
    sc_client *c;
    sc_stats st;

    memset(&f, 0, sizeof(f));
    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    write_key_file(dir, "k", 0600, f.key, kpath, sizeof(kpath));
    write_key_file(dir, "o", 0600, f.other_key, other, sizeof(other));
    f.fd = silent_socket(&port);
    ck_assert_int_eq(pthread_create(&tid, NULL, forger_run, &f), 0);
    c = client_keyed(port, kpath, NULL, LIVE_TIMEOUT_MS);
    make_key(id, 21, 1);
    ck_assert_int_eq(sc_get(c, id, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_int_eq(pthread_join(tid, NULL), 0);
    ck_assert_int_eq(f.sent, 5);
    ck_assert_uint_eq(len, 7);
    ck_assert_mem_eq(buf, "genuine", 7);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.auth_failures, 3);
    ck_assert_uint_eq(st.late_answers, 1);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.errors, 0);
    sc_client_free(c);
    close(f.fd);
    th_rmtree(dir);
}
END_TEST

/* Answers are matched by request ID: the daemon is stopped, a GET times
 * out, the value changes, and once the daemon goes on it answers the stale
 * GET first (with the old value); the next GET must get its own answer. */
START_TEST(test_late_answer)
{
    uint8_t id[32], v1[40], v2[40], buf[64];
    size_t len = 0;
    th_daemon d;
    sc_client *c;
    sc_stats st;
    int status = 0;

    start_daemon(&d);
    c = client_one(d.port, 100); /* one timeout stays under the breaker's 3 */
    make_key(id, 22, 1);
    memset(v1, '1', sizeof(v1));
    memset(v2, '2', sizeof(v2));
    ck_assert_int_eq(sc_put_wait(c, id, 32, v1, sizeof(v1), 60), SC_OK);

    ck_assert_int_eq(kill(d.pid, SIGSTOP), 0);
    ck_assert_int_eq(waitpid(d.pid, &status, WUNTRACED), d.pid);
    ck_assert(WIFSTOPPED(status));
    ck_assert_int_eq(sc_get(c, id, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    ck_assert_int_eq(sc_put(c, id, 32, v2, sizeof(v2), 60), SC_OK); /* queued behind it */
    ck_assert_int_eq(kill(d.pid, SIGCONT), 0);

    ck_assert_int_eq(sc_get(c, id, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_uint_eq(len, sizeof(v2));
    ck_assert_mem_eq(buf, v2, sizeof(v2)); /* not the stale answer's v1 */
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.late_answers, 1);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.errors + st.auth_failures, 0);
    ck_assert_int_eq(daemon_stat(&d, "gets"), 2); /* the stale one was answered */
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* The same ID in two namespaces is two entries; v1 sees neither. */
START_TEST(test_namespaces)
{
    uint8_t id[32], buf[64], ns_a[SC_NAMESPACE_LEN], ns_b[SC_NAMESPACE_LEN];
    size_t len = 0;
    sc_options opt;
    sc_client *a, *b, *v1;
    th_daemon d;

    start_daemon(&d);
    ck_assert_int_eq(sc_namespace_from_context("svc-a", 5, ns_a), 0);
    ck_assert_int_eq(sc_namespace_from_context("svc-b", 5, ns_b), 0);
    ck_assert(memcmp(ns_a, ns_b, SC_NAMESPACE_LEN) != 0);
    sc_options_init(&opt);
    opt.timeout_ms = LIVE_TIMEOUT_MS;
    memcpy(opt.default_namespace, ns_a, SC_NAMESPACE_LEN);
    a = client_opts(d.port, &opt);
    memcpy(opt.default_namespace, ns_b, SC_NAMESPACE_LEN);
    b = client_opts(d.port, &opt);
    v1 = client_proto(d.port, 1);
    make_key(id, 23, 1);

    ck_assert_int_eq(sc_put_wait(a, id, 32, (const uint8_t *)"value-a", 7, 60), SC_OK);
    ck_assert_int_eq(sc_get(b, id, 32, buf, sizeof(buf), &len), SC_NOT_FOUND);
    ck_assert_int_eq(sc_put_wait(b, id, 32, (const uint8_t *)"value-b", 7, 60), SC_OK);
    ck_assert_int_eq(sc_get(a, id, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_mem_eq(buf, "value-a", 7);
    ck_assert_int_eq(sc_get(b, id, 32, buf, sizeof(buf), &len), SC_OK);
    ck_assert_mem_eq(buf, "value-b", 7);
    ck_assert_int_eq(sc_get(v1, id, 32, buf, sizeof(buf), &len), SC_NOT_FOUND);
    ck_assert_int_eq(sc_remove_wait(b, id, 32), SC_OK);
    ck_assert_int_eq(sc_get(a, id, 32, buf, sizeof(buf), &len), SC_OK); /* untouched */
    ck_assert_int_eq(daemon_stat(&d, "entries"), 1);

    /* The hash is SHA-256's first 16 bytes: the empty context included. */
    ck_assert_int_eq(sc_namespace_from_context(NULL, 0, ns_a), 0);
    ck_assert_mem_eq(ns_a, "\xe3\xb0\xc4\x42\x98\xfc\x1c\x14\x9a\xfb\xf4\xc8\x99\x6f\xb9\x24",
                     SC_NAMESPACE_LEN);
    ck_assert_int_eq(sc_namespace_from_context(NULL, 3, ns_a), -1);
    sc_client_free(a);
    sc_client_free(b);
    sc_client_free(v1);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

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
        write_key_file(dir, "key", 0600, key, kpath, sizeof(kpath));
        start_daemon_args(&d, args);
    } else {
        start_daemon(&d);
    }
    if (async_b) {
        /* Both through the relay: one FIFO path, so B's new tickets reach the
         * daemon before A's next lookup, as they would over one link. */
        relay_start(&slow, d.port, RELAY_DELAY_MS);
        ca = client_keyed(slow.port, keyed ? kpath : NULL, NULL, LIVE_TIMEOUT_MS);
        cb = client_keyed(slow.port, keyed ? kpath : NULL, NULL, LIVE_TIMEOUT_MS);
    } else {
        ca = client_keyed(d.port, keyed ? kpath : NULL, NULL, LIVE_TIMEOUT_MS);
        cb = client_keyed(d.port, keyed ? kpath : NULL, NULL, LIVE_TIMEOUT_MS);
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
        ck_assert_int_ge(daemon_stat(&d, "sealed"), HANDSHAKES);
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
    int port, fd = silent_socket(&port);
    sc_client *c = client_one(port, 100), *ca;
    SSL_CTX *a = server_ctx(TLS1_2_VERSION, 0), *b = server_ctx(TLS1_2_VERSION, 0);
    SSL_CTX *client = tu_client_ctx(TLS1_2_VERSION, NULL);
    th_daemon d;
    tu_hs_result res;
    sc_stats st;
    int gets;

    start_daemon(&d);
    ca = client_one(d.port, LIVE_TIMEOUT_MS);
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
    ck_assert_int_eq(drain_count_gets(fd, &gets), 2);
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

    start_daemon(&d);
    c1 = client_one(d.port, LIVE_TIMEOUT_MS);
    c2 = client_one(d.port, LIVE_TIMEOUT_MS);
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
    opt.timeout_ms = LIVE_TIMEOUT_MS;
    ck_assert_int_eq(sc_namespace_from_context("svc-one", 7, opt.default_namespace), 0);
    raw_one = client_opts(d.port, &opt);
    ck_assert_int_eq(sc_namespace_from_context("svc-two", 7, opt.default_namespace), 0);
    raw_two = client_opts(d.port, &opt);
    raw_zero = client_one(d.port, LIVE_TIMEOUT_MS);
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

    start_daemon(&d);
    c = client_one(d.port, LIVE_TIMEOUT_MS);
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
    ck_assert_int_eq(daemon_stat(&d, "removes"), 1);
    SSL_CTX_free(client);
    sc_client_free(c);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* ------------------------------------------------------------------ */
/* sessionctl */

static int ctl(char *out, size_t cap, const char *const *args)
{
    const char *argv[16];
    int n = 0;

    argv[n++] = getenv("SESSIONCTL");
    ck_assert_msg(argv[0] != NULL, "SESSIONCTL is not set");
    for (; *args != NULL && n < 15; args++)
        argv[n++] = *args;
    argv[n] = NULL;
    return th_run(argv, out, cap);
}

#define CTL(out, ...) ctl(out, sizeof(out), (const char *const[]){__VA_ARGS__, NULL})

/* One line on stderr (th_run merges it with stdout) that contains `want`. */
static void assert_one_line(const char *out, const char *want)
{
    const char *nl = strchr(out, '\n');

    ck_assert_msg(strstr(out, want) != NULL, "output \"%s\" lacks \"%s\"", out, want);
    ck_assert_msg(nl != NULL && nl[1] == '\0', "not exactly one line: \"%s\"", out);
}

/* Writes `n` bytes of `c` to path. */
static void write_file(const char *path, int c, size_t n)
{
    FILE *f = fopen(path, "wb");

    ck_assert_ptr_nonnull(f);
    for (size_t i = 0; i < n; i++)
        fputc(c, f);
    ck_assert_int_eq(fclose(f), 0);
}

START_TEST(test_sessionctl)
{
    char dir[256], file[300], big[300], empty[300], servers[64], silent[64], out[4096];
    const char *id = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    th_daemon d;
    FILE *f;
    int port, fd = silent_socket(&port);

    start_daemon(&d);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    snprintf(silent, sizeof(silent), "127.0.0.1:%d", port);
    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    snprintf(file, sizeof(file), "%s/value", dir);
    snprintf(big, sizeof(big), "%s/big", dir);
    snprintf(empty, sizeof(empty), "%s/empty", dir);
    f = fopen(file, "wb");
    ck_assert_ptr_nonnull(f);
    fputs("session bytes\x01\x02", f);
    fclose(f);
    write_file(big, 'b', PROTO_V1_MAX_VALUE + 1); /* too large for either version */
    write_file(empty, 'e', 0);

    /* v2 (the default): put and del are acknowledged. */
    ck_assert_int_eq(CTL(out, "-s", servers, "put", id, file, "-T", "60"), 0);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(CTL(out, "-s", servers, "get", id), 0);
    ck_assert_str_eq(out, "session bytes\x01\x02"); /* raw by default */
    ck_assert_int_eq(CTL(out, "--servers", servers, "-x", "get", id), 0);
    ck_assert_str_eq(out, "73657373696f6e20627974657301"
                          "02\n");
    ck_assert_int_eq(CTL(out, "-s", servers, "del", id), 0);
    ck_assert_int_eq(CTL(out, "-s", servers, "del", id), 1); /* nothing left to delete */
    assert_one_line(out, "not found");
    ck_assert_int_eq(CTL(out, "-s", servers, "get", id), 1);
    assert_one_line(out, "not found");
    ck_assert_int_eq(CTL(out, "-s", servers, "get", "ab"), 1);
    ck_assert_int_eq(daemon_stat(&d, "puts"), 1);
    ck_assert_int_eq(daemon_stat(&d, "removes"), 1); /* entries actually removed */

    /* ping and stats. */
    ck_assert_int_eq(CTL(out, "-s", servers, "ping"), 0);
    ck_assert_msg(strncmp(out, servers, strlen(servers)) == 0 && strstr(out, " ms\n") != NULL, "%s",
                  out);
    ck_assert_int_eq(CTL(out, "-s", servers, "stats"), 0);
    ck_assert_msg(strncmp(out, "gets=", 5) == 0 && strstr(out, " puts=1 ") != NULL, "%s", out);

    /* Namespaces: -C derives what a server with that context uses, -n names it. */
    ck_assert_int_eq(CTL(out, "-s", servers, "-C", "web", "put", id, file), 0);
    ck_assert_int_eq(CTL(out, "-s", servers, "get", id), 1);
    ck_assert_int_eq(CTL(out, "-s", servers, "-n", "4eb5b2e2c1dc8ffd8dbb0e6d47d7b5c1", "get", id),
                     1);
    {
        uint8_t ns[SC_NAMESPACE_LEN];
        char hexns[2 * SC_NAMESPACE_LEN + 1];

        ck_assert_int_eq(sc_namespace_from_context("web", 3, ns), 0);
        for (int i = 0; i < SC_NAMESPACE_LEN; i++)
            snprintf(hexns + 2 * i, 3, "%02x", ns[i]);
        ck_assert_int_eq(CTL(out, "-s", servers, "-n", hexns, "get", id), 0);
        ck_assert_str_eq(out, "session bytes\x01\x02");
    }

    /* v1: no acknowledgement, and a key space of its own. */
    ck_assert_int_eq(CTL(out, "-1", "-s", servers, "put", id, file), 0);
    ck_assert_int_eq(CTL(out, "-1", "-s", servers, "get", id), 0);
    ck_assert_str_eq(out, "session bytes\x01\x02");
    ck_assert_int_eq(CTL(out, "-s", servers, "get", id), 1);
    ck_assert_int_eq(CTL(out, "-1", "-s", servers, "del", id), 0);
    ck_assert_int_eq(CTL(out, "-1", "-s", servers, "get", id), 1);

    /* No answer: 2, after about the timeout; in v2 that includes put. */
    ck_assert_int_eq(CTL(out, "-s", silent, "-t", "100", "get", id), 2);
    assert_one_line(out, "no answer within 100 ms");
    ck_assert_int_eq(CTL(out, "-s", silent, "-t", "100", "put", id, file), 2);
    assert_one_line(out, "put: no answer within 100 ms");
    ck_assert_int_eq(CTL(out, "-s", silent, "-t", "100", "ping"), 2);
    assert_one_line(out, "no answer within 100 ms");
    ck_assert_int_eq(CTL(out, "-1", "-s", silent, "put", id, file), 0); /* sent: no ack in v1 */

    /* Bad input data: 65. */
    ck_assert_int_eq(CTL(out, "-s", servers, "put", id, big), 65);
    assert_one_line(out, "too large");
    ck_assert_int_eq(CTL(out, "-1", "-s", servers, "put", id, big), 65);
    ck_assert_int_eq(CTL(out, "-s", servers, "put", id, empty), 65);
    assert_one_line(out, "empty value");
    ck_assert_int_eq(CTL(out, "-s", servers, "put", id), 65); /* stdin is /dev/null */
    ck_assert_int_eq(CTL(out, "-s", servers, "put", id, "/nonexistent/x"), 66);
    assert_one_line(out, "cannot open '/nonexistent/x'");
    ck_assert_int_eq(daemon_stat(&d, "puts"), 3);

    /* Usage: 64, one line each. */
    ck_assert_int_eq(CTL(out, "get"), 64);
    assert_one_line(out, "missing ID");
    ck_assert_int_eq(CTL(out, "fetch", id), 64);
    assert_one_line(out, "unknown command 'fetch'");
    ck_assert_int_eq(CTL(out, "get", "abc"), 64);
    assert_one_line(out, "bad ID 'abc'");
    ck_assert_int_eq(CTL(out, "get", "zz"), 64);
    assert_one_line(out, "bad ID 'zz'");
    ck_assert_int_eq(CTL(out, "-1", "get",
                         "00112233445566778899aabbccddeeff00112233445566778899aabb"
                         "ccddeeff00"),
                     64); /* 33 bytes: v1 takes 32 */
    assert_one_line(out, "1 to 32 bytes");
    ck_assert_int_eq(CTL(out, "get",
                         "00112233445566778899aabbccddeeff00112233445566778899aabbccdd"
                         "eeff00112233445566778899aabbccddeeff00"),
                     64); /* 49 bytes: v2 takes 48 */
    assert_one_line(out, "1 to 48 bytes");
    ck_assert_int_eq(CTL(out, "-q", "get", id), 64);
    assert_one_line(out, "unknown option '-q'");
    ck_assert_int_eq(CTL(out, "-t", "0", "get", id), 64);
    assert_one_line(out, "bad timeout '0'");
    ck_assert_int_eq(CTL(out, "-t"), 64);
    assert_one_line(out, "missing value for option '-t'");
    ck_assert_int_eq(CTL(out, "put", id, file, "-T", "70000"), 64);
    assert_one_line(out, "bad ttl '70000'");
    ck_assert_int_eq(CTL(out, "-T", "5", "get", id), 64);
    ck_assert_int_eq(CTL(out, "-x", "del", id), 64);
    ck_assert_int_eq(CTL(out, "get", id, "extra"), 64);
    assert_one_line(out, "too many arguments");
    ck_assert_int_eq(CTL(out, "ping", "extra"), 64);
    assert_one_line(out, "too many arguments for ping");
    ck_assert_int_eq(CTL(out, "-1", "stats"), 64);
    assert_one_line(out, "stats needs protocol 2");
    ck_assert_int_eq(CTL(out, "-n", "0011", "get", id), 64);
    assert_one_line(out, "bad namespace '0011'");
    ck_assert_int_eq(CTL(out, "-n", "00112233445566778899aabbccddeeff", "-C", "x", "get", id), 64);
    assert_one_line(out, "give one");
    ck_assert_int_eq(CTL(out, "-1", "-C", "x", "get", id), 64);
    assert_one_line(out, "no namespaces");
    ck_assert_int_eq(CTL(out, "-1", "-k", file, "get", id), 64);
    assert_one_line(out, "no sealing");
    ck_assert_int_eq(CTL(out, "--next-key-file", file, "get", id), 64);
    assert_one_line(out, "needs --key-file");
    ck_assert_int_eq(CTL(out, "-s", "127.0.0.1:x", "get", id), 64);
    assert_one_line(out, "bad port 'x' in server list");
    ck_assert_int_eq(ctl(out, sizeof(out), (const char *const[]){NULL}), 64);
    assert_one_line(out, "missing command");

    ck_assert_int_eq(CTL(out, "-h"), 0);
    ck_assert_msg(strstr(out, "usage: sessionctl") != NULL, "%s", out);
    ck_assert_int_eq(CTL(out, "-V"), 0);
    ck_assert_msg(strncmp(out, "sessionctl ", 11) == 0, "%s", out);

    th_rmtree(dir);
    close(fd);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

/* A fake daemon: opens one sealed PUT and answers it REFUSED. */
typedef struct refuser {
    int fd, port, answered;
    uint8_t key[32];
} refuser;

static void *refuser_run(void *arg)
{
    refuser *r = arg;
    proto_v2_sealer *s = proto_v2_sealer_new(r->key, NULL);
    struct pollfd pfd = {.fd = r->fd, .events = POLLIN};
    struct sockaddr_storage from;
    socklen_t from_len = sizeof(from);
    static uint8_t req[PROTO_MAX_DATAGRAM];
    uint8_t out[256];
    proto_v2_msg m, ans;
    size_t len = 0;
    ssize_t n;

    if (s == NULL || poll(&pfd, 1, 5000) != 1)
        goto done;
    n = recvfrom(r->fd, req, sizeof(req), 0, (struct sockaddr *)&from, &from_len);
    if (n <= 0 ||
        proto_v2_open(s, req, (size_t)n, 0, (uint64_t)time(NULL) * 1000, 60000, &m) != PROTO_OK ||
        m.op != PROTO_V2_PUT)
        goto done;
    memset(&ans, 0, sizeof(ans));
    ans.op = PROTO_V2_PUT | PROTO_V2_ANSWER;
    ans.status = PROTO_V2_ST_REFUSED;
    ans.request_id = m.request_id;
    ans.key = m.key;
    ans.key_len = m.key_len;
    ans.timestamp_ms = (uint64_t)time(NULL) * 1000;
    if (proto_v2_seal(s, out, sizeof(out), &ans, &len) == PROTO_OK &&
        sendto(r->fd, out, len, 0, (struct sockaddr *)&from, from_len) == (ssize_t)len)
        r->answered = 1;

done:
    proto_v2_sealer_free(s);
    return NULL;
}

/* sessionctl with a cluster key, and the daemon's refusal (exit 3). */
START_TEST(test_sessionctl_sealed)
{
    char dir[256], kpath[300], loose[300], file[300], servers[64], fake[64], out[4096];
    const char *id = "0a0b0c0d";
    uint8_t key[32], other[32];
    const char *args[] = {"--key-file", kpath, NULL};
    refuser r;
    pthread_t tid;
    th_daemon d;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    write_key_file(dir, "key", 0600, key, kpath, sizeof(kpath));
    write_key_file(dir, "loose", 0640, other, loose, sizeof(loose));
    snprintf(file, sizeof(file), "%s/value", dir);
    write_file(file, 'v', 100);
    start_daemon_args(&d, args);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);

    ck_assert_int_eq(CTL(out, "-s", servers, "-k", kpath, "put", id, file), 0);
    ck_assert_int_eq(CTL(out, "-s", servers, "--key-file", kpath, "-x", "get", id), 0);
    ck_assert_uint_eq(strlen(out), 201);
    ck_assert_int_eq(CTL(out, "-s", servers, "-k", kpath, "ping"), 0);
    ck_assert_int_eq(CTL(out, "-s", servers, "-k", kpath, "stats"), 0);
    ck_assert_msg(strstr(out, " sealed=") != NULL, "%s", out);
    /* Refused: 3 (a fake daemon that refuses every PUT). */
    memset(&r, 0, sizeof(r));
    memcpy(r.key, key, sizeof(key));
    r.fd = silent_socket(&r.port);
    snprintf(fake, sizeof(fake), "127.0.0.1:%d", r.port);
    ck_assert_int_eq(pthread_create(&tid, NULL, refuser_run, &r), 0);
    ck_assert_int_eq(CTL(out, "-s", fake, "-k", kpath, "put", id, file), 3);
    assert_one_line(out, "put: refused by the daemon");
    ck_assert_int_eq(pthread_join(tid, NULL), 0);
    ck_assert_int_eq(r.answered, 1);
    close(r.fd);
    /* Without the key the daemon says nothing at all. */
    ck_assert_int_eq(CTL(out, "-s", servers, "-t", "100", "get", id), 2);
    ck_assert_int_eq(CTL(out, "-1", "-s", servers, "-t", "100", "get", id), 2);
    ck_assert_int_eq(daemon_stat(&d, "denied"), 2);
    /* A key file the library would refuse: 66, one line naming it. */
    ck_assert_int_eq(CTL(out, "-s", servers, "-k", loose, "get", id), 66);
    assert_one_line(out, loose);
    ck_assert_int_eq(CTL(out, "-s", servers, "-k", "/nonexistent/key", "get", id), 66);
    assert_one_line(out, "key file /nonexistent/key: ");
    th_rmtree(dir);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
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
    tcase_add_test(tc, test_breaker_dead_server);
    tcase_add_test(tc, test_breaker_recovery);
    tcase_add_test(tc, test_breaker_one_probe);
    tcase_add_test(tc, test_two_servers);
    tcase_add_test(tc, test_failover_silent);
    tcase_add_test(tc, test_failover_refused);
    tcase_add_test(tc, test_threads);
    tcase_add_test(tc, test_key_files);
    tcase_add_test(tc, test_sealed);
    tcase_add_test(tc, test_forged_answers);
    tcase_add_test(tc, test_late_answer);
    tcase_add_test(tc, test_namespaces);
    suite_add_tcase(s, tc);

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

    tc = tcase_create("sessionctl");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sessionctl);
    tcase_add_test(tc, test_sessionctl_sealed);
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
