/* sc_servers.c — which server a request goes to: the server list, the
 * rendezvous order of servers for a key, and each server's circuit breaker.
 *
 * Server list: "host[:port][,host[:port]...]", IPv6 literals in brackets
 * ("[::1]:54321"; a bare "::1" is accepted too, it cannot carry a port),
 * default port SC_DEFAULT_PORT. Every entry is resolved once, here, with
 * getaddrinfo, to its first address: the hot path never resolves, and a
 * name that later moves is not followed (restart the TLS server, or list
 * addresses). A server's identity is its numeric "address:port", so two
 * clients that spell a server differently still agree on where keys go.
 *
 * Rendezvous (highest random weight) hashing: the key is hashed once, then
 * each server scores mix64(key_hash ^ server_hash) and the servers are
 * tried highest score first. Adding or removing a server moves only the
 * keys that server wins or loses, and every client with the same list
 * computes the same order without sharing any state. The hash is not
 * cryptographic (a splitmix64 finalizer over the key's 64-bit words, the
 * length mixed into the seed; FNV-1a for server names): keys are random
 * session IDs, and an attacker who steers keys to one server gains nothing
 * he could not get by sending to that server directly. Cost: n
 * multiplications and an insertion sort of n entries per request, n being a
 * handful; a ring with virtual nodes would be O(log n) but needs a table,
 * and the lists here are short.
 *
 * Circuit breaker: `breaker_failures` consecutive failures (timeouts or
 * socket errors) back a server off for backoff_min_ms; when that has passed
 * exactly one request (the first to win a compare-and-swap) is let through
 * as a probe while the others keep skipping; a failed probe doubles the
 * back-off up to backoff_max_ms, a success closes the breaker and resets it.
 * The healthy path costs one acquire load; state changes take a per-server
 * mutex, which only failures and recoveries reach. Only lookups probe: a
 * put or remove gets no answer, so its success proves nothing.
 */
#include "sc_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SC_HOST_MAX 256

int64_t sc_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* splitmix64's finalizer: a cheap bijective mix with full avalanche. */
static uint64_t sc_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t sc_load_le64(const uint8_t *p)
{
    uint64_t v = 0;

    /* Byte by byte so every machine of a cluster, whatever its byte order,
     * sends a key to the same server. */
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

uint64_t sc_key_hash(const uint8_t *key, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)len;
    uint8_t tail[8];

    for (; len >= 8; key += 8, len -= 8)
        h = sc_mix64(h ^ sc_load_le64(key));
    if (len > 0) {
        memset(tail, 0, sizeof(tail));
        memcpy(tail, key, len);
        h = sc_mix64(h ^ sc_load_le64(tail));
    }
    return h;
}

static uint64_t sc_fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;

    for (; *s != '\0'; s++) {
        h ^= (uint8_t)*s;
        h *= 0x100000001b3ull;
    }
    return h;
}

size_t sc_servers_order(const sc_client *client, uint64_t key_hash, uint8_t *order)
{
    uint64_t score[SC_MAX_SERVERS];
    size_t n = client->nservers;

    /* Insertion sort, highest score first; ties (a 2^-64 event) keep list order. */
    for (size_t i = 0; i < n; i++) {
        uint64_t s = sc_mix64(key_hash ^ client->servers[i].id_hash);
        size_t j = i;

        while (j > 0 && score[j - 1] < s) {
            score[j] = score[j - 1];
            order[j] = order[j - 1];
            j--;
        }
        score[j] = s;
        order[j] = (uint8_t)i;
    }
    return n;
}

/* --- circuit breaker --- */

void sc_breaker_init(sc_breaker *b, const sc_options *opt)
{
    pthread_mutex_init(&b->lock, NULL);
    atomic_init(&b->open_until_ns, 0);
    atomic_init(&b->failures, 0);
    atomic_init(&b->probing, 0);
    b->backoff_ms = opt->backoff_min_ms;
}

void sc_breaker_destroy(sc_breaker *b)
{
    pthread_mutex_destroy(&b->lock);
}

sc_admit sc_breaker_admit(sc_breaker *b, int64_t now_ns, int may_probe)
{
    int64_t until = atomic_load_explicit(&b->open_until_ns, memory_order_acquire);
    int expected = 0;

    if (until == 0)
        return SC_ADMIT_NORMAL;
    if (!may_probe || now_ns < until)
        return SC_ADMIT_SKIP;
    if (atomic_compare_exchange_strong(&b->probing, &expected, 1))
        return SC_ADMIT_PROBE;
    return SC_ADMIT_SKIP; /* another thread's probe is in flight */
}

void sc_breaker_success(sc_breaker *b, sc_admit how, const sc_options *opt)
{
    /* Healthy and nothing to undo: no lock, no write to a shared line. */
    if (how != SC_ADMIT_PROBE && atomic_load_explicit(&b->failures, memory_order_relaxed) == 0 &&
        atomic_load_explicit(&b->open_until_ns, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&b->lock);
    atomic_store(&b->failures, 0);
    atomic_store(&b->open_until_ns, 0);
    b->backoff_ms = opt->backoff_min_ms;
    if (how == SC_ADMIT_PROBE)
        atomic_store(&b->probing, 0);
    pthread_mutex_unlock(&b->lock);
}

void sc_breaker_failure(sc_breaker *b, sc_admit how, int64_t now_ns, const sc_options *opt)
{
    if (opt->breaker_failures == 0)
        return; /* breaker disabled */
    pthread_mutex_lock(&b->lock);
    if (how == SC_ADMIT_PROBE) {
        unsigned next =
            b->backoff_ms > opt->backoff_max_ms / 2 ? opt->backoff_max_ms : b->backoff_ms * 2;

        b->backoff_ms = next < opt->backoff_min_ms ? opt->backoff_min_ms : next;
        atomic_store(&b->open_until_ns, now_ns + (int64_t)b->backoff_ms * 1000000);
        atomic_store(&b->probing, 0);
    } else {
        unsigned failures = atomic_load(&b->failures) + 1;

        atomic_store(&b->failures, failures);
        /* A straggler admitted before the breaker opened changes nothing. */
        if (failures >= opt->breaker_failures && atomic_load(&b->open_until_ns) == 0)
            atomic_store(&b->open_until_ns, now_ns + (int64_t)b->backoff_ms * 1000000);
    }
    pthread_mutex_unlock(&b->lock);
}

void sc_breaker_release(sc_breaker *b, sc_admit how)
{
    if (how == SC_ADMIT_PROBE)
        atomic_store(&b->probing, 0);
}

/* --- server list --- */

static int sc_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sc_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* Splits one trimmed entry into host and port. */
static int sc_split_entry(const char *entry, char *host, size_t hostcap, unsigned *port,
                          int *bracketed, char *err, size_t errlen)
{
    const char *host_start = entry, *host_end, *port_str = NULL;
    size_t host_len;

    *bracketed = 0;
    if (entry[0] == '[') {
        host_start = entry + 1;
        host_end = strchr(host_start, ']');
        if (host_end == NULL)
            return sc_fail(err, errlen, "missing ']' in server '%s'", entry);
        if (host_end[1] == ':')
            port_str = host_end + 2;
        else if (host_end[1] != '\0')
            return sc_fail(err, errlen, "unexpected text after ']' in server '%s'", entry);
        *bracketed = 1;
    } else {
        const char *colon = strchr(entry, ':');

        if (colon != NULL && strchr(colon + 1, ':') != NULL) {
            host_end = entry + strlen(entry); /* bare IPv6 literal: no port */
        } else if (colon != NULL) {
            host_end = colon;
            port_str = colon + 1;
        } else {
            host_end = entry + strlen(entry);
        }
    }
    host_len = (size_t)(host_end - host_start);
    if (host_len == 0)
        return sc_fail(err, errlen, "empty host in server '%s'", entry);
    if (host_len >= hostcap)
        return sc_fail(err, errlen, "host name too long in server list");
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';

    *port = SC_DEFAULT_PORT;
    if (port_str != NULL) {
        unsigned long value = 0;
        const char *p = port_str;

        for (; *p >= '0' && *p <= '9' && value <= 65535; p++)
            value = value * 10 + (unsigned long)(*p - '0');
        if (p == port_str || *p != '\0' || value == 0 || value > 65535)
            return sc_fail(err, errlen, "bad port '%s' in server list", port_str);
        *port = (unsigned)value;
    }
    return 0;
}

static int sc_resolve(const char *host, unsigned port, int bracketed, sc_server *server, char *err,
                      size_t errlen)
{
    struct addrinfo hints, *res = NULL;
    char addr[SC_SERVER_NAME_MAX];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = bracketed ? AF_INET6 : AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    hints.ai_flags = bracketed ? AI_NUMERICHOST : 0;
    rc = getaddrinfo(host, NULL, &hints, &res);
    if (rc != 0)
        return sc_fail(err, errlen, "cannot resolve '%s': %s", host,
                       rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
    if (res == NULL || res->ai_addrlen > sizeof(server->addr)) {
        freeaddrinfo(res);
        return sc_fail(err, errlen, "cannot resolve '%s': no usable address", host);
    }
    memcpy(&server->addr, res->ai_addr, res->ai_addrlen);
    server->addr_len = res->ai_addrlen;
    freeaddrinfo(res);

    if (server->addr.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&server->addr)->sin6_port = htons((uint16_t)port);
    else if (server->addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&server->addr)->sin_port = htons((uint16_t)port);
    else
        return sc_fail(err, errlen, "cannot resolve '%s': not an IP address", host);

    rc = getnameinfo((struct sockaddr *)&server->addr, server->addr_len, addr, sizeof(addr), NULL,
                     0, NI_NUMERICHOST);
    if (rc != 0)
        return sc_fail(err, errlen, "cannot print the address of '%s': %s", host, gai_strerror(rc));
    snprintf(server->name, sizeof(server->name),
             server->addr.ss_family == AF_INET6 ? "[%s]:%u" : "%s:%u", addr, port);
    server->id_hash = sc_fnv1a64(server->name);
    return 0;
}

void sc_servers_free(sc_server *servers, size_t count)
{
    if (servers == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        sc_breaker_destroy(&servers[i].breaker);
    free(servers);
}

int sc_servers_parse(const char *list, const sc_options *opt, sc_server **servers_out,
                     size_t *count_out, char *err, size_t errlen)
{
    char host[SC_HOST_MAX], entry[SC_HOST_MAX + 16];
    sc_server *servers = NULL;
    size_t count = 0;
    const char *p;

    if (list == NULL || list[strspn(list, " \t")] == '\0')
        return sc_fail(err, errlen, "empty server list");
    for (p = list; *p != '\0'; p++)
        if (((unsigned char)*p < 0x20 && *p != '\t') || *p == 0x7f)
            return sc_fail(err, errlen, "control character in server list");
    servers = calloc(SC_MAX_SERVERS, sizeof(*servers));
    if (servers == NULL)
        return sc_fail(err, errlen, "out of memory");

    p = list;
    for (;;) {
        const char *end = strchr(p, ',');
        size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
        unsigned port;
        int bracketed;

        /* Trim blanks around the entry: "a, b" is a common way to write a list. */
        while (len > 0 && (*p == ' ' || *p == '\t')) {
            p++;
            len--;
        }
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
            len--;
        if (len == 0) {
            sc_fail(err, errlen, "empty entry in server list");
            goto fail;
        }
        if (len >= sizeof(entry)) {
            sc_fail(err, errlen, "server name too long in server list");
            goto fail;
        }
        if (count == SC_MAX_SERVERS) {
            sc_fail(err, errlen, "too many servers in server list (at most %d)", SC_MAX_SERVERS);
            goto fail;
        }
        memcpy(entry, p, len);
        entry[len] = '\0';
        if (sc_split_entry(entry, host, sizeof(host), &port, &bracketed, err, errlen) < 0 ||
            sc_resolve(host, port, bracketed, &servers[count], err, errlen) < 0)
            goto fail;
        for (size_t i = 0; i < count; i++) {
            if (strcmp(servers[i].name, servers[count].name) == 0) {
                sc_fail(err, errlen, "server %s listed twice", servers[count].name);
                goto fail;
            }
        }
        sc_breaker_init(&servers[count].breaker, opt);
        count++;
        if (end == NULL)
            break;
        p = end + 1;
    }
    *servers_out = servers;
    *count_out = count;
    return 0;

fail:
    sc_servers_free(servers, count);
    return -1;
}
