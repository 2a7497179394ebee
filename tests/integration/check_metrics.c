/* check_metrics.c — the --metrics HTTP endpoint of a real sessiond, spoken
 * to over a plain TCP socket written here (no curl dependency).
 *
 * What is covered: the daemon started with --metrics 127.0.0.1:0 logs
 * "metrics on 127.0.0.1:PORT" with the real port; GET /metrics answers 200
 * with the exposition format's content type and the fixed metrics; the
 * counters move with known traffic (3 v1 GETs of absent keys, then a NEW and
 * a GET hit) and agree with the SIGUSR1 stats line; other paths get 404 and
 * other methods on /metrics 405 with "Allow: GET", a query string is
 * ignored; clients that send garbage, oversized headers, half a request or
 * nothing at all, plus many idle connections, never stop the daemon from
 * answering UDP, garbage and oversized requests get their connection
 * closed, idle ones are closed by the timeout; a bad --metrics value is a
 * one-line usage error (status 2) and a busy port a one-line runtime error
 * (status 1).
 *
 * Synchronisation without sleeps: the daemon's log line gives the port,
 * reads wait on poll with bounded timeouts, and a UDP GET is answered only
 * after everything sent before it on the same socket was handled.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "v1ops.h"

#define HTTP_TIMEOUT_MS  5000
#define HTTP_ANSWER_CAP  65536
#define IDLE_CLOSE_MS    10000 /* the daemon's timeout is 5 s: this leaves margin */
#define IDLE_CONNECTIONS 40

static const char *const metrics_args[] = {"--metrics", "127.0.0.1:0", NULL};

/* The port from the daemon's "metrics on 127.0.0.1:PORT" line. */
static int metrics_port(th_daemon *d)
{
    const char *needle = "metrics on 127.0.0.1:";
    const char *at;
    int port;

    ck_assert_int_eq(th_daemon_wait_log(d, needle, 0, HTTP_TIMEOUT_MS), 0);
    pthread_mutex_lock(&d->lock);
    at = strstr(d->log, needle);
    port = at != NULL ? atoi(at + strlen(needle)) : -1;
    pthread_mutex_unlock(&d->lock);
    ck_assert_int_gt(port, 0);
    ck_assert_int_le(port, 65535);
    ck_assert_int_ne(port, d->port); /* a TCP port of its own, not the UDP one by accident */
    return port;
}

static int tcp_connect(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_msg(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

static void tcp_send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        data += n;
        len -= (size_t)n;
    }
}

/* Reads until the peer closes or timeout_ms passes. Returns the bytes read
 * (NUL-terminated in buf); *closed says whether EOF (or a reset) came. */
static size_t read_until_close(int fd, char *buf, size_t cap, int timeout_ms, int *closed)
{
    int64_t end = th_now_ms() + timeout_ms;
    size_t len = 0;

    *closed = 0;
    for (;;) {
        struct pollfd pfd = {fd, POLLIN, 0};
        int64_t left = end - th_now_ms();
        ssize_t n;

        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            break;
        n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            *closed = 1;
            break;
        }
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    buf[len] = '\0';
    return len;
}

typedef struct http_answer {
    char raw[HTTP_ANSWER_CAP];
    int status;
    const char *body;
} http_answer;

/* Sends one HTTP/1.0 request (the server closes after answering) and reads
 * the whole answer. */
static void http_exchange(int port, const char *request, http_answer *a)
{
    int fd = tcp_connect(port);
    int closed;
    const char *end;

    tcp_send_all(fd, request, strlen(request));
    read_until_close(fd, a->raw, sizeof(a->raw), HTTP_TIMEOUT_MS, &closed);
    close(fd);
    ck_assert_msg(closed, "the server did not close after answering");
    ck_assert_msg(strncmp(a->raw, "HTTP/1.", 7) == 0 && a->raw[8] == ' ', "not HTTP: %.40s",
                  a->raw);
    a->status = atoi(a->raw + 9);
    end = strstr(a->raw, "\r\n\r\n");
    ck_assert_ptr_nonnull(end);
    a->body = end + 4;
}

static void http_get(int port, const char *path, http_answer *a)
{
    char request[256];

    snprintf(request, sizeof(request), "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    http_exchange(port, request, a);
}

/* The value of header `name` (case-insensitive), copied into buf. */
static int http_header(const http_answer *a, const char *name, char *buf, size_t cap)
{
    const char *line = strstr(a->raw, "\r\n");
    size_t name_len = strlen(name);

    while (line != NULL && line + 2 < a->body) {
        const char *next = strstr(line + 2, "\r\n");

        line += 2;
        if (next != NULL && strncasecmp(line, name, name_len) == 0 && line[name_len] == ':') {
            const char *value = line + name_len + 1;

            while (*value == ' ')
                value++;
            snprintf(buf, cap, "%.*s", (int)(next - value), value);
            return 0;
        }
        line = next;
    }
    return -1;
}

/* The value of the sample `name` (a line "name value"), or -1. */
static long long metric(const http_answer *a, const char *name)
{
    char needle[160];
    const char *at;

    snprintf(needle, sizeof(needle), "\n%s ", name);
    at = strstr(a->body - 1, needle); /* the body starts after a newline */
    return at != NULL ? strtoll(at + strlen(needle), NULL, 10) : -1;
}

static void scrape(int port, http_answer *a)
{
    char type[128];

    http_get(port, "/metrics", a);
    ck_assert_int_eq(a->status, 200);
    ck_assert_int_eq(http_header(a, "Content-Type", type, sizeof(type)), 0);
    ck_assert_str_eq(type, "text/plain; version=0.0.4; charset=utf-8");
}

/* ---- tests ------------------------------------------------------------ */

START_TEST(test_counters_move)
{
    static http_answer a;
    th_daemon d;
    uint8_t key[PROTO_V1_KEY_LEN];
    static const uint8_t value[] = "a session";
    int port;
    int fd;

    tc_start(&d, metrics_args);
    port = metrics_port(&d);
    fd = tc_connect_v4(&d);

    scrape(port, &a);
    ck_assert_int_eq(metric(&a, "sessiond_gets_total"), 0);
    ck_assert_int_eq(metric(&a, "sessiond_entries"), 0);
    ck_assert_int_eq(metric(&a, "sessiond_up"), 1);
    ck_assert_int_eq(metric(&a, "sessiond_max_memory_bytes"), 64 * 1024 * 1024);
    ck_assert_ptr_nonnull(strstr(a.body, "\n# TYPE sessiond_gets_total counter\n"));
    ck_assert_ptr_nonnull(strstr(a.body, "\n# TYPE sessiond_entries gauge\n"));
    ck_assert_ptr_nonnull(
        strstr(a.body, "\nsessiond_build_info{version=\"" SESSIOND_VERSION "\"} 1\n"));

    for (unsigned i = 0; i < 3; i++) {
        v1t_make_key(key, 1, i);
        v1t_get_expect(fd, key, PROTO_V1_NOT_FOUND);
    }
    scrape(port, &a);
    ck_assert_int_eq(metric(&a, "sessiond_gets_total"), 3);
    ck_assert_int_eq(metric(&a, "sessiond_misses_total"), 3);
    ck_assert_int_eq(metric(&a, "sessiond_hits_total"), 0);
    ck_assert_int_eq(metric(&a, "sessiond_v1_total"), 3);
    ck_assert_int_eq(metric(&a, "sessiond_datagrams_total"), 3);
    ck_assert_int_eq(metric(&a, "sessiond_answers_total"), 3);

    v1t_make_key(key, 2, 0);
    v1t_send_op(fd, PROTO_V1_NEW, 300, key, value, sizeof(value));
    v1t_expect_hit(fd, key, value, sizeof(value)); /* answered after the NEW was handled */
    scrape(port, &a);
    ck_assert_int_eq(metric(&a, "sessiond_gets_total"), 4);
    ck_assert_int_eq(metric(&a, "sessiond_hits_total"), 1);
    ck_assert_int_eq(metric(&a, "sessiond_puts_total"), 1);
    ck_assert_int_eq(metric(&a, "sessiond_entries"), 1);
    ck_assert_int_gt(metric(&a, "sessiond_bytes"), (long long)sizeof(value));
    /* The same numbers as the stats line. */
    ck_assert_int_eq(tc_stat_of(&d, "gets"), 4);
    ck_assert_int_eq(tc_stat_of(&d, "bytes"), metric(&a, "sessiond_bytes"));

    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_paths_and_methods)
{
    static http_answer a;
    static const char *const not_found[] = {"/", "/nope", "/metricsx", "/metrics/", "/METRICS"};
    static const char *const methods[] = {"POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"};
    char allow[64];
    char request[256];
    th_daemon d;
    int port;

    tc_start(&d, metrics_args);
    port = metrics_port(&d);
    for (size_t i = 0; i < sizeof(not_found) / sizeof(not_found[0]); i++) {
        http_get(port, not_found[i], &a);
        ck_assert_msg(a.status == 404, "GET %s: status %d", not_found[i], a.status);
    }
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        snprintf(request, sizeof(request),
                 "%s /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
                 methods[i]);
        http_exchange(port, request, &a);
        ck_assert_msg(a.status == 405, "%s /metrics: status %d", methods[i], a.status);
        ck_assert_int_eq(http_header(&a, "Allow", allow, sizeof(allow)), 0);
        ck_assert_str_eq(allow, "GET");
    }
    /* A query string does not change the path; HTTP/1.1 works too. */
    scrape(port, &a);
    http_get(port, "/metrics?name[]=sessiond_up", &a);
    ck_assert_int_eq(a.status, 200);
    ck_assert_int_eq(metric(&a, "sessiond_up"), 1);
    http_exchange(port, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", &a);
    ck_assert_int_eq(a.status, 200);
    ck_assert_int_eq(metric(&a, "sessiond_up"), 1);
    tc_stop_ok(&d);
}
END_TEST

/* Garbage, oversized headers, half a request, silence and many idle
 * connections: UDP is answered all along and the daemon stops cleanly. */
START_TEST(test_bad_clients)
{
    static http_answer a;
    static char big[16384];
    static char buf[HTTP_ANSWER_CAP];
    th_daemon d;
    uint8_t key[PROTO_V1_KEY_LEN];
    int idle[IDLE_CONNECTIONS];
    int garbage, oversized, half, silent;
    int closed;
    int64_t started;
    int port;
    int udp;
    size_t n;

    tc_start(&d, metrics_args);
    port = metrics_port(&d);
    udp = tc_connect_v4(&d);

    started = th_now_ms();
    half = tcp_connect(port);
    tcp_send_all(half, "GET /metr", 9);
    silent = tcp_connect(port);
    for (int i = 0; i < IDLE_CONNECTIONS; i++)
        idle[i] = tcp_connect(port);

    garbage = tcp_connect(port);
    tcp_send_all(garbage, "\x01\x02\xff garbage \x7f\r\n\r\n", 16);
    oversized = tcp_connect(port);
    n = (size_t)snprintf(big, sizeof(big), "GET /metrics HTTP/1.0\r\nX-Filler: ");
    memset(big + n, 'a', sizeof(big) - n - 5);
    memcpy(big + sizeof(big) - 5, "\r\n\r\n", 5);
    /* The server may close before reading it all: a failed send is fine. */
    (void)send(oversized, big, sizeof(big) - 1, MSG_NOSIGNAL);

    /* UDP is answered while all of them are open... */
    v1t_make_key(key, 3, 0);
    v1t_get_expect(udp, key, PROTO_V1_NOT_FOUND);
    /* ...and so is a well-behaved scraper. */
    scrape(port, &a);
    ck_assert_int_eq(metric(&a, "sessiond_gets_total"), 1);

    /* Garbage and oversized requests are refused and their connections
     * closed, without waiting for the timeout. */
    read_until_close(garbage, buf, sizeof(buf), HTTP_TIMEOUT_MS, &closed);
    ck_assert_msg(closed, "garbage request: connection still open");
    ck_assert_msg(buf[0] == '\0' || strstr(buf, " 400 ") != NULL, "garbage: %.40s", buf);
    read_until_close(oversized, buf, sizeof(buf), HTTP_TIMEOUT_MS, &closed);
    ck_assert_msg(closed, "oversized headers: connection still open");
    ck_assert_msg(strstr(buf, " 200 ") == NULL, "oversized headers answered: %.40s", buf);

    /* Half a request and silence are closed by the timeout. */
    read_until_close(half, buf, sizeof(buf), IDLE_CLOSE_MS, &closed);
    ck_assert_msg(closed, "half a request: not closed after %d ms", IDLE_CLOSE_MS);
    read_until_close(silent, buf, sizeof(buf), IDLE_CLOSE_MS, &closed);
    ck_assert_msg(closed, "silent client: not closed after %d ms", IDLE_CLOSE_MS);
    ck_assert_str_eq(buf, "");
    ck_assert_int_ge(th_now_ms() - started, 3000); /* by the timeout, not at once */
    for (int i = 0; i < IDLE_CONNECTIONS; i++) {
        read_until_close(idle[i], buf, sizeof(buf), IDLE_CLOSE_MS, &closed);
        ck_assert_msg(closed, "idle connection %d not closed", i);
        close(idle[i]);
    }

    v1t_get_expect(udp, key, PROTO_V1_NOT_FOUND);
    ck_assert_int_eq(tc_stat_of(&d, "gets"), 2);
    close(garbage);
    close(oversized);
    close(half);
    close(silent);
    close(udp);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_bad_flag_and_busy_port)
{
    const char *bin = getenv("SESSIOND");
    char out[4096];
    char addr[64];
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int holder;

    ck_assert_ptr_nonnull(bin);
    {
        const char *argv[] = {bin, "-f", "-p", "0", "--metrics", "localhost:9100", NULL};

        ck_assert_int_eq(th_run(argv, out, sizeof(out)), 2);
        ck_assert_ptr_nonnull(strstr(out, "invalid --metrics 'localhost:9100'"));
        ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
    }
    /* A port someone else listens on: refused at startup, status 1. */
    holder = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(holder, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(holder, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(holder, 1), 0);
    ck_assert_int_eq(getsockname(holder, (struct sockaddr *)&sin, &len), 0);
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
    {
        const char *argv[] = {bin, "-f", "-p", "0", "--metrics", addr, NULL};

        ck_assert_int_eq(th_run(argv, out, sizeof(out)), 1);
        ck_assert_msg(strstr(out, "--metrics: cannot bind 127.0.0.1") != NULL, "output: %s", out);
        ck_assert_ptr_eq(strchr(out, '\n'), out + strlen(out) - 1);
    }
    close(holder);
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("http");

    tcase_add_test(tc, test_counters_move);
    tcase_add_test(tc, test_paths_and_methods);
    tcase_add_test(tc, test_bad_clients);
    tcase_add_test(tc, test_bad_flag_and_busy_port);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(metrics_suite());
}
