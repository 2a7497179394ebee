/* metrics.c — the Prometheus endpoint: GET /metrics over HTTP, answered by
 * libevent's evhttp on the daemon's single event loop.
 *
 * How it works: at every request the handler writes the stats line
 * (dispatch_stats_line, the same line SIGUSR1 logs and a v2 STATS answer
 * carries) and metrics_format turns its name=value fields into the text
 * exposition format. Going through the line rather than the structs keeps
 * one list of counters: a field added to the line shows up here with no
 * change (with a generic HELP text until one is written below). The cost,
 * one snprintf and one parse per scrape, is nothing at scrape intervals.
 *
 * Answers: 200 with the text for GET /metrics (any query string ignored),
 * 404 for any other path, 405 (with "Allow: GET") for another method on
 * /metrics; requests evhttp cannot parse get its own 400 and the connection
 * is closed.
 *
 * Bounds, because this socket may be reachable by more than the scraper and
 * shares the loop that answers stunnel within its 4 ms tick: request
 * headers at most METRICS_MAX_HEADERS bytes, bodies METRICS_MAX_BODY bytes
 * (a scrape has none), and METRICS_TIMEOUT_S seconds to send a request or
 * take an answer, after which evhttp closes the connection. A handler run
 * costs a few microseconds, and evhttp never blocks on a slow client.
 * Known limit: libevent 2.1 has no cap on simultaneous connections, so a
 * client opening thousands at once can use up file descriptors until the
 * timeout reaps them; bind to loopback or a management network (the cheaper
 * alternative, an accept filter of our own, was not worth it for that).
 *
 * Names are sessiond_<field>_total for every counter of the stats line and
 * sessiond_<field> for its gauges, so the two never disagree; the one
 * histogram, the shared store's latency, is rebuilt from its per-bucket
 * fields (metrics_latency_field).
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"

#define METRICS_MAX_HEADERS 4096 /* request line and headers, bytes */
#define METRICS_MAX_BODY    1024 /* a GET has no body; anything else is refused before it grows */
#define METRICS_TIMEOUT_S   5    /* to send a request, or take an answer */
#define METRICS_BACKLOG     128  /* a burst of connections queues, not SYN retries */
#define METRICS_STATS_LINE  4096 /* first try; a longer line gets a heap buffer */

struct metrics {
    struct evhttp *http;
    const dispatch_ctx *dispatch;
    uint64_t max_memory;
};

/* ---- the exposition text --------------------------------------------- */

/* HELP texts of the stats line's fields. A field not listed here still
 * becomes a metric, with a generic HELP. */
static const struct {
    const char *name;
    const char *help;
} metrics_help[] = {
    {"gets", "Cache lookups (v1 GET and v2 GET)."},
    {"hits", "Cache lookups that found a live session."},
    {"misses", "Cache lookups that found nothing or only an expired session."},
    {"puts", "Sessions stored, new or replacing."},
    {"removes", "Sessions deleted on request."},
    {"expired", "Sessions dropped because their timeout passed."},
    {"evicted", "Sessions dropped to stay within --max-memory."},
    {"rejected", "Stores refused: bad key, empty or oversized value, no memory."},
    {"entries", "Sessions stored now."},
    {"bytes", "Bytes charged to the cache budget now: keys, values and overhead."},
    {"malformed", "Datagrams dropped because they did not parse (all reasons)."},
    {"oversized", "Datagrams dropped because they were longer than the protocol allows."},
    {"datagrams", "Datagrams received."},
    {"answers", "Answers built."},
    {"answer_misfit", "GET hits answered not found because the answer would not fit."},
    {"unsent", "Answers built but not sent (socket buffer full or send error)."},
    {"recv_errors", "Receive calls that failed."},
    {"denied", "Plaintext datagrams dropped: the source is not allowed."},
    {"auth_failed", "Sealed datagrams dropped: the tag did not verify."},
    {"stale", "Sealed datagrams dropped: timestamp outside --window."},
    {"unknown_key", "Sealed datagrams dropped: key ID not held."},
    {"v1", "Requests accepted in protocol version 1."},
    {"v2", "Requests accepted in protocol version 2, plain and sealed."},
    {"sealed", "Requests accepted sealed (part of v2)."},
    {"takes", "TAKE requests (atomic get-and-delete)."},
    {"take_hits", "TAKE requests that took a value (a stateful ticket's one use)."},
    {"adds", "ADD requests (atomic add-if-absent)."},
    {"add_exists", "ADD requests answered EXISTS (with anti-replay: 0-RTT replays refused)."},
    {"keys_requests", "KEYS requests (the ticket-key ring), sealed."},
    {"backend_hits", "Local misses found in the shared store (--backend)."},
    {"backend_misses", "Local misses the shared store did not have either."},
    {"backend_unavailable", "Requests the shared store could not answer in time."},
    {"backend_deferred", "Requests answered later, when the shared store replied."},
    {"backend_invalidated", "Near copies dropped on another node's delete or take."},
    {"backend_up", "1 while every shared store group is reachable."},
    {"backend_ops", "Operations sent to the shared store."},
    {"backend_inflight", "Shared store operations sent and not yet answered."},
    {"backend_timeouts", "Shared store operations not answered within --backend-timeout."},
    {"backend_rejected_busy",
     "Shared store operations not sent: too many in flight (writes included: lost)."},
    {"backend_errors", "Error replies from the shared store."},
    {"backend_corrupt", "Values in the shared store that failed to open."},
    {"backend_reconnects", "Connections to the shared store re-established."},
    {"backend_failovers", "Redis master changes followed through Sentinel."},
    {"ticket_keys", "Ticket keys held now (the ring)."},
    {"ticket_generated", "Ticket keys drawn by this node."},
    {"ticket_adopted", "Ticket keys adopted from the shared store."},
    {"ticket_served", "Ticket-key rings served to KEYS requests."},
    {"ticket_not_ready", "KEYS requests answered unavailable: no ring yet."},
};

/* Fields of the stats line that are levels, not counts. */
static int metrics_is_gauge(const char *name)
{
    static const char *const gauges[] = {"entries", "bytes", "backend_up", "backend_inflight",
                                         "ticket_keys"};

    for (size_t i = 0; i < sizeof(gauges) / sizeof(gauges[0]); i++) {
        if (strcmp(name, gauges[i]) == 0)
            return 1;
    }
    return 0;
}

/* The latency histogram travels in the stats line as one field per bucket
 * (backend_latency_le_<us>us, backend_latency_le_inf: counts within each
 * bucket) and backend_latency_sum_us; here it becomes one Prometheus
 * histogram, cumulative, in seconds. */
#define METRICS_LATENCY_PREFIX "backend_latency_"
#define METRICS_MAX_BUCKETS    32

typedef struct metrics_histogram {
    size_t n;
    char le[METRICS_MAX_BUCKETS][24];
    unsigned long long count[METRICS_MAX_BUCKETS];
    unsigned long long sum_us;
    int seen;
} metrics_histogram;

/* A text being built with snprintf semantics: len is what the whole text
 * takes, buf holds as much of it as fits in cap (NUL-terminated). */
typedef struct metrics_text {
    char *buf;
    size_t cap;
    size_t len;
    int failed; /* an snprintf error: the result is unusable */
} metrics_text;

static void metrics_printf(metrics_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void metrics_printf(metrics_text *t, const char *fmt, ...)
{
    size_t used = t->len < t->cap ? t->len : t->cap;
    char *at = t->buf != NULL ? t->buf + used : NULL;
    va_list ap;
    int n;

    /* Once the buffer is full, vsnprintf still counts, into a zero cap. */
    va_start(ap, fmt);
    n = vsnprintf(at, t->cap - used, fmt, ap);
    va_end(ap);
    if (n < 0)
        t->failed = 1;
    else
        t->len += (size_t)n;
}

/* One metric: HELP, TYPE and its sample. `labels` is "" or "{...}". */
static void metrics_sample(metrics_text *t, const char *name, const char *type, const char *help,
                           const char *labels, unsigned long long value)
{
    metrics_printf(t, "# HELP %s %s\n# TYPE %s %s\n%s%s %llu\n", name, help, name, type, name,
                   labels, value);
}

static const char *metrics_find_help(const char *field)
{
    for (size_t i = 0; i < sizeof(metrics_help) / sizeof(metrics_help[0]); i++) {
        if (strcmp(metrics_help[i].name, field) == 0)
            return metrics_help[i].help;
    }
    return NULL;
}

/* Takes a backend_latency_* field into h; returns 1 if it was one. */
static int metrics_latency_field(metrics_histogram *h, const char *name, unsigned long long value)
{
    const char *rest = name + strlen(METRICS_LATENCY_PREFIX);
    unsigned long long us;
    char *end;

    if (strncmp(name, METRICS_LATENCY_PREFIX, strlen(METRICS_LATENCY_PREFIX)) != 0)
        return 0;
    h->seen = 1;
    if (strcmp(rest, "sum_us") == 0) {
        h->sum_us = value;
        return 1;
    }
    if (strncmp(rest, "le_", 3) != 0 || h->n >= METRICS_MAX_BUCKETS)
        return 1;
    rest += 3;
    if (strcmp(rest, "inf") == 0) {
        snprintf(h->le[h->n], sizeof(h->le[h->n]), "+Inf");
    } else {
        us = strtoull(rest, &end, 10);
        if (end == rest || strcmp(end, "us") != 0)
            return 1;
        snprintf(h->le[h->n], sizeof(h->le[h->n]), "%llu.%06llu", us / 1000000u, us % 1000000u);
    }
    h->count[h->n++] = value;
    return 1;
}

static void metrics_histogram_emit(metrics_text *t, const metrics_histogram *h)
{
    unsigned long long total = 0;

    if (!h->seen)
        return;
    metrics_printf(t, "# HELP sessiond_backend_latency_seconds Shared store round trips, sent to "
                      "reply.\n# TYPE sessiond_backend_latency_seconds histogram\n");
    for (size_t i = 0; i < h->n; i++) {
        total += h->count[i];
        metrics_printf(t, "sessiond_backend_latency_seconds_bucket{le=\"%s\"} %llu\n", h->le[i],
                       total);
    }
    metrics_printf(t, "sessiond_backend_latency_seconds_sum %llu.%06llu\n", h->sum_us / 1000000u,
                   h->sum_us % 1000000u);
    metrics_printf(t, "sessiond_backend_latency_seconds_count %llu\n", total);
}

/* One name=value field of the stats line; anything else is skipped. */
static void metrics_field(metrics_text *t, metrics_histogram *h, const char *field, size_t len)
{
    const char *eq = memchr(field, '=', len);
    char name[64];
    char metric[96];
    char help[128] = "";
    const char *known;
    unsigned long long value = 0;
    size_t name_len;
    int gauge;

    if (eq == NULL)
        return;
    name_len = (size_t)(eq - field);
    if (name_len == 0 || name_len >= sizeof(name) || eq + 1 == field + len)
        return;
    for (size_t i = 0; i < name_len; i++) {
        char c = field[i];

        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return;
    }
    for (const char *p = eq + 1; p < field + len; p++) {
        unsigned digit = (unsigned)(*p - '0');

        if (digit > 9 || value > (~0ull - digit) / 10)
            return;
        value = value * 10 + digit;
    }
    memcpy(name, field, name_len);
    name[name_len] = '\0';
    if (metrics_latency_field(h, name, value))
        return;

    known = metrics_find_help(name);
    if (known == NULL && strncmp(name, "malformed_", 10) == 0)
        snprintf(help, sizeof(help), "Datagrams dropped as malformed: %s.", name + 10);
    else if (known == NULL)
        snprintf(help, sizeof(help), "The %s counter of the stats line.", name);
    gauge = metrics_is_gauge(name);
    if (gauge)
        snprintf(metric, sizeof(metric), "sessiond_%s", name);
    else
        snprintf(metric, sizeof(metric), "sessiond_%s_total", name);
    metrics_sample(t, metric, gauge ? "gauge" : "counter", known != NULL ? known : help, "", value);
}

/* A label value: backslash, double quote and newline escaped. */
static void metrics_label_value(metrics_text *t, const char *value)
{
    for (const char *p = value; *p != '\0'; p++) {
        if (*p == '\\' || *p == '"')
            metrics_printf(t, "\\%c", *p);
        else if (*p == '\n')
            metrics_printf(t, "\\n");
        else
            metrics_printf(t, "%c", *p);
    }
}

int metrics_format(const char *stats_line, uint64_t max_memory, const char *version, char *buf,
                   size_t cap)
{
    metrics_text t = {buf, buf != NULL ? cap : 0, 0, 0};
    metrics_histogram h;
    const char *p = stats_line;

    memset(&h, 0, sizeof(h));
    if (t.cap > 0)
        t.buf[0] = '\0';
    while (*p != '\0') {
        size_t len = strcspn(p, " ");

        if (len > 0)
            metrics_field(&t, &h, p, len);
        p += len;
        p += strspn(p, " ");
    }
    metrics_sample(&t, "sessiond_max_memory_bytes", "gauge",
                   "The cache's byte budget (--max-memory).", "", (unsigned long long)max_memory);
    metrics_sample(&t, "sessiond_up", "gauge", "1 while the daemon answers.", "", 1);
    metrics_printf(&t, "# HELP sessiond_build_info The running version, as a label.\n"
                       "# TYPE sessiond_build_info gauge\n"
                       "sessiond_build_info{version=\"");
    metrics_label_value(&t, version);
    metrics_printf(&t, "\"} 1\n");
    metrics_histogram_emit(&t, &h);
    return t.failed ? -1 : (int)t.len;
}

/* ---- the listener ---------------------------------------------------- */

int metrics_listen(const char *addr, int port, char *bound, size_t boundlen, char *err,
                   size_t errlen)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
    socklen_t len;
    char host[INET6_ADDRSTRLEN] = "?";
    int one = 1;
    int fd = -1;

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        len = sizeof(*sin6);
    } else {
        snprintf(err, errlen, "--metrics: '%s' is not a numeric IPv4 or IPv6 address", addr);
        goto fail;
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "--metrics: cannot create a TCP socket: %s", strerror(errno));
        goto fail;
    }
    /* A restarted daemon can bind while old connections sit in TIME_WAIT. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        (ss.ss_family == AF_INET6 &&
         setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)) {
        snprintf(err, errlen, "--metrics: setsockopt: %s", strerror(errno));
        goto fail;
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        snprintf(err, errlen, "--metrics: cannot bind %s port %d: %s", addr, port, strerror(errno));
        goto fail;
    }
    if (listen(fd, METRICS_BACKLOG) != 0) {
        snprintf(err, errlen, "--metrics: cannot listen: %s", strerror(errno));
        goto fail;
    }
    len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(err, errlen, "--metrics: getsockname: %s", strerror(errno));
        goto fail;
    }
    if (ss.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(bound, boundlen, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    } else {
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(bound, boundlen, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    }
    return fd;

fail:
    if (fd >= 0)
        close(fd);
    return -1;
}

static void metrics_reply_text(struct evhttp_request *req, int code, const char *reason,
                               const char *body)
{
    struct evkeyvalq *headers = evhttp_request_get_output_headers(req);
    struct evbuffer *out = evbuffer_new();

    evhttp_add_header(headers, "Content-Type", "text/plain; charset=utf-8");
    if (out != NULL)
        evbuffer_add(out, body, strlen(body));
    evhttp_send_reply(req, code, reason, out);
    if (out != NULL)
        evbuffer_free(out);
}

static void metrics_on_request(struct evhttp_request *req, void *arg)
{
    const metrics *m = arg;
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
    char first[METRICS_STATS_LINE];
    char *line = first;
    char *text = NULL;
    struct evbuffer *out = NULL;
    int line_len;
    int text_len;

    if (path == NULL || strcmp(path, "/metrics") != 0) {
        metrics_reply_text(req, 404, "Not Found", "not found: the metrics are at /metrics\n");
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
        metrics_reply_text(req, 405, "Method Not Allowed", "only GET is allowed\n");
        return;
    }
    line_len = dispatch_stats_line(m->dispatch, first, sizeof(first));
    if (line_len < 0)
        goto fail;
    if ((size_t)line_len >= sizeof(first)) {
        line = malloc((size_t)line_len + 1);
        if (line == NULL)
            goto fail;
        dispatch_stats_line(m->dispatch, line, (size_t)line_len + 1);
    }
    text_len = metrics_format(line, m->max_memory, SESSIOND_VERSION, NULL, 0);
    if (text_len < 0)
        goto fail;
    text = malloc((size_t)text_len + 1);
    out = evbuffer_new();
    if (text == NULL || out == NULL)
        goto fail;
    metrics_format(line, m->max_memory, SESSIOND_VERSION, text, (size_t)text_len + 1);
    if (evbuffer_add(out, text, (size_t)text_len) != 0)
        goto fail;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", METRICS_CONTENT_TYPE);
    evhttp_send_reply(req, 200, "OK", out);
    goto done;

fail:
    metrics_reply_text(req, 500, "Internal Server Error", "out of memory\n");
done:
    if (line != first)
        free(line);
    free(text);
    if (out != NULL)
        evbuffer_free(out);
}

metrics *metrics_start(struct event_base *base, int fd, const dispatch_ctx *dispatch,
                       uint64_t max_memory)
{
    metrics *m = calloc(1, sizeof(*m));

    if (m == NULL)
        goto fail;
    m->dispatch = dispatch;
    m->max_memory = max_memory;
    m->http = evhttp_new(base);
    if (m->http == NULL)
        goto fail;
    evhttp_set_max_headers_size(m->http, METRICS_MAX_HEADERS);
    evhttp_set_max_body_size(m->http, METRICS_MAX_BODY);
    evhttp_set_timeout(m->http, METRICS_TIMEOUT_S);
    /* Every method reaches the handler, so the others get 405 rather than
     * evhttp's 501 for the ones outside its default set. */
    evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                            EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                            EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(m->http, metrics_on_request, m);
    /* From here evhttp owns fd and closes it in evhttp_free. */
    if (evhttp_accept_socket_with_handle(m->http, fd) == NULL)
        goto fail;
    return m;

fail:
    log_msg(LOG_ERR, "--metrics: cannot start the HTTP server");
    close(fd);
    metrics_free(m);
    return NULL;
}

void metrics_free(metrics *m)
{
    if (m == NULL)
        return;
    if (m->http != NULL)
        evhttp_free(m->http);
    free(m);
}
