/* handshake.c — the TLS handshake benchmark of `make bench` (issue 5 part
 * 2): what a shared session cache buys a cluster of TLS servers, and what
 * it costs the server per resumed handshake, next to the alternatives, all
 * in one process and one run so the figures can be read as ratios.
 *
 *   handshake [-n N] [-d SECONDS] [-t 1.2|1.3|both] [-c CASE,...]
 *             [--wire v2|sealed|v1] [--pin none|same|split] [--csv FILE]
 *
 * Two TLS servers A and B are two independent server SSL_CTXs with the same
 * RSA-2048 certificate (TLS 1.2 then negotiates ECDHE-RSA, the common case)
 * and the same session-ID context, behind a chooser (round-robin A/B, random,
 * or always A). One client reconnects N times, each time offering the
 * session it got from the previous connection (SSL_set_session). The cases:
 *   a-nocache          SSL_SESS_CACHE_OFF, no tickets: every handshake full
 *   b-local-same       own internal cache, no tickets, always server A: every
 *                      resumption is a local-cache hit (the baseline)
 *   b-local-rr/random  own internal cache only: resumes only when the client
 *                      lands on the server that issued its session
 *   c-sessiond         both servers sc_attach'ed to one real sessiond, no
 *                      tickets, internal cache kept on (the usual
 *                      deployment): a local hit when the server has the
 *                      session, else a lookup in sessiond
 *   c-sessiond-only    the same with SSL_SESS_CACHE_NO_INTERNAL_LOOKUP: every
 *                      resumption is a lookup in sessiond (the target's case)
 *   c-sessiond-nostore the same with SSL_SESS_CACHE_NO_INTERNAL (no internal
 *                      store either): what OpenSSL's own cache costs on top
 *   d-tickets-own      tickets with per-SSL_CTX keys (OpenSSL's default)
 *   d-tickets-shared   (d): both SSL_CTXs given the same 80 bytes of ticket
 *                      keys by hand
 *   d-tickets-sessiond (d): both SSL_CTXs given sessiond's ticket-key ring
 *                      with sc_attach_ticket_keys (a second sessiond, sealed,
 *                      --ticket-keys): what the ticket-key service costs
 *                      next to keys copied by hand
 * TLS 1.3 runs the no-ticket cases with SSL_OP_NO_TICKET, i.e. stateful
 * tickets, which OpenSSL stores and looks up like 1.2 session IDs.
 *
 * How it measures: client and server run in this one thread over a
 * non-blocking socketpair, called in turn (each call finds the other side's
 * flight waiting, so no call is wasted). Server CPU is
 * CLOCK_THREAD_CPUTIME_ID read around every server-side SSL_do_handshake
 * call and summed per handshake: client work, SSL_new/SSL_free and the
 * shutdown are not counted, and while the server waits for sessiond's
 * answer it is not on the CPU, so what is counted for a sessiond lookup is
 * the library's own work plus its system calls (send, poll, receive, and the
 * sleep and wake-up). sessiond's own CPU is read from /proc/PID/schedstat
 * and reported per lookup. In the sessiond cases the library's session
 * callbacks are wrapped (same behaviour, timed) to tell a resumption served
 * by sessiond from a local-cache hit and to time the lookup and the store
 * alone; the clock readings the wrappers add are measured at start and
 * taken out. A bare UDP round trip to the same daemon is timed too (the
 * floor under any lookup). Handshakes/s is wall time of the whole exchange
 * (client included) in one thread: a pace, not a server capacity (that is
 * one second divided by the server CPU per handshake).
 *
 * The cases run in rounds (-R), a slice of each per round, so a neighbour's
 * burst of load on a shared machine lands on all of them alike. On a VM the
 * placement of sessiond matters most (waking it on the other vCPU costs the
 * waker far more than on its own), hence --pin.
 *
 * Output: a table per TLS version, one `result name=value ...` line per
 * case (as loadgen's, for scripts), the target (server CPU of a
 * handshake resumed through sessiond / one resumed from the local cache,
 * <= 1.2) per version, and with --csv one CSV line per case.
 *
 * Known limits: one client, so in c-sessiond with TLS 1.2 both servers soon
 * hold the client's one session locally (a session fetched from sessiond is
 * added to the internal cache) and most resumptions become local hits;
 * c-sessiond-only is the case that measures the lookup. One thread: no lock
 * contention is measured. The cheaper alternative not taken, timing the
 * contrib server over TCP from outside, would count the kernel's TCP work
 * and the event loop in every handshake and hide a ~10 µs lookup in noise.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "harness.h"
#include "proto.h"
#include "sessionc.h"
#include "tls_util.h"

#define HS_SID_CTX         "bench"
#define HS_TICKET_KEY_LEN  80 /* 16 name + 32 HMAC + 32 AES: SSL_CTX_set_tlsext_ticket_keys */
#define HS_TURNS_MAX       64 /* client+server turns before a handshake counts as stuck */
#define HS_TARGET_RATIO    1.2
#define HS_DEFAULT_N       2000
#define HS_DEFAULT_SECONDS 10.0
#define HS_DEFAULT_WARMUP  10
#define HS_DEFAULT_ROUNDS  10
#define HS_FLOOR_COUNT     1000
#define HS_FLOOR_GAP_NS    500000 /* about one handshake's worth of other work */

typedef enum hs_store {
    HS_NO_CACHE,         /* SSL_SESS_CACHE_OFF, SSL_OP_NO_TICKET */
    HS_LOCAL,            /* internal cache only, SSL_OP_NO_TICKET */
    HS_SESSIOND,         /* internal cache + sessiond, SSL_OP_NO_TICKET */
    HS_SESSIOND_NOLOCAL, /* sessiond, no internal lookups, SSL_OP_NO_TICKET */
    HS_SESSIOND_NOSTORE, /* sessiond, no internal cache at all, SSL_OP_NO_TICKET */
    HS_TICKETS_OWN,      /* tickets, each SSL_CTX its own random keys */
    HS_TICKETS_SHARED,   /* tickets, both SSL_CTXs the same keys */
    HS_TICKETS_SESSIOND, /* tickets, keys from sessiond's ring (sc_attach_ticket_keys) */
} hs_store;

typedef enum hs_chooser {
    HS_RR,     /* A, B, A, B... */
    HS_RANDOM, /* A or B with equal odds */
    HS_SAME,   /* always A */
} hs_chooser;

static const char *const hs_chooser_names[] = {"rr", "random", "same"};

typedef struct hs_case_def {
    const char *name;  /* for -c, the CSV and the result lines */
    const char *label; /* for the table */
    hs_store store;
    hs_chooser chooser;
} hs_case_def;

static const hs_case_def hs_cases[] = {
    {"a-nocache", "(a) no cache", HS_NO_CACHE, HS_RR},
    {"b-local-same", "(b) own cache, same server", HS_LOCAL, HS_SAME},
    {"b-local-rr", "(b) own cache", HS_LOCAL, HS_RR},
    {"b-local-random", "(b) own cache", HS_LOCAL, HS_RANDOM},
    {"c-sessiond", "(c) sessiond + own cache", HS_SESSIOND, HS_RR},
    {"c-sessiond-only", "(c) sessiond, no local lookup", HS_SESSIOND_NOLOCAL, HS_RR},
    {"c-sessiond-nostore", "(c) sessiond, no local cache", HS_SESSIOND_NOSTORE, HS_RR},
    {"d-tickets-own", "tickets, own keys (default)", HS_TICKETS_OWN, HS_RR},
    {"d-tickets-shared", "(d) shared ticket keys*", HS_TICKETS_SHARED, HS_RR},
    {"d-tickets-sessiond", "(d) sessiond ticket keys", HS_TICKETS_SESSIOND, HS_RR},
};
#define HS_NCASES        (sizeof(hs_cases) / sizeof(hs_cases[0]))
#define HS_BASELINE_CASE 1 /* b-local-same: resumed from the local cache */
#define HS_SESSIOND_CASE 5 /* c-sessiond-only: resumed through sessiond */
#define HS_NOSTORE_CASE  6 /* c-sessiond-nostore: the same without OpenSSL's own cache */

typedef enum hs_pin {
    HS_PIN_NONE,  /* the scheduler decides */
    HS_PIN_SAME,  /* this thread and sessiond on CPU 0 */
    HS_PIN_SPLIT, /* this thread on CPU 0, sessiond on CPU 1 */
} hs_pin;

static const char *const hs_pin_names[] = {"none", "same", "split"};

typedef enum hs_wire {
    HS_WIRE_V2,     /* libsessionc's default: v2, plaintext */
    HS_WIRE_SEALED, /* v2 sealed with a cluster key (sessiond --key-file) */
    HS_WIRE_V1,     /* stunnel's format */
} hs_wire;

static const char *const hs_wire_names[] = {"v2", "sealed", "v1"};

typedef struct hs_config {
    long handshakes;    /* recorded per case */
    long warmup;        /* unrecorded first handshakes per case */
    long rounds;        /* each case runs in this many slices, interleaved with the others */
    double max_seconds; /* wall cap per case */
    int versions[2];    /* TLS1_2_VERSION / TLS1_3_VERSION, 0 = unused */
    int selected[HS_NCASES];
    uint64_t seed;
    hs_pin pin;
    hs_wire wire;
    const char *csv_path;
} hs_config;

/* What the wrapped session callbacks saw during one handshake. */
typedef struct hs_probe {
    unsigned lookups;     /* get-session calls into libsessionc */
    unsigned lookup_hits; /* ... that returned a session */
    unsigned puts;        /* new-session calls */
    unsigned removes;     /* remove-session calls */
    int64_t lookup_ns;    /* thread CPU inside the get-session callback */
    int64_t put_ns;       /* thread CPU inside the new-session callback */
} hs_probe;

/* One recorded handshake. */
typedef struct hs_sample {
    int64_t cpu_ns;    /* server CPU over its SSL_do_handshake calls */
    int64_t lookup_ns; /* of which in the get-session callback */
    int64_t put_ns;    /* of which in the new-session callback (sessiond cases only) */
    unsigned char resumed;
    unsigned char via_sessiond; /* resumed with a session sessiond returned */
} hs_sample;

typedef struct hs_dist {
    size_t n;
    double mean_us, p50_us, p99_us;
} hs_dist;

typedef struct hs_result {
    const hs_case_def *def;
    int version;
    hs_wire wire;
    size_t n;
    int capped; /* stopped by -d before n */
    double wall_s;
    size_t resumed, via_sessiond;
    hs_dist full, resumed_cpu, sessiond_cpu;
    hs_dist lookup_cpu, put_cpu; /* parts of sessiond_cpu: the two callbacks */
    uint64_t lookups, lookup_hits, puts, removes;
    double sessiond_us_per_lookup; /* sessiond's own CPU, < 0 when not measured */
} hs_result;

/* Everything the cases share: one certificate, one client SSL_CTX per
 * version, one sessiond with one libsessionc client per server. */
typedef struct hs_env {
    tu_cred cred;
    SSL_CTX *client_ctx[2];
    th_daemon daemon;
    int daemon_up;
    sc_client *sc[2];
    unsigned char ticket_keys[HS_TICKET_KEY_LEN];
    char cipher[2][96]; /* what the first full handshake of each version negotiated */
    char key_dir[256];  /* sealed: a temporary directory holding the cluster key file */
    char key_path[300];
    /* d-tickets-sessiond: a sessiond serving ticket keys, a client per server. */
    th_daemon tk_daemon;
    int tk_daemon_up;
    sc_client *tk_sc[2];
} hs_env;

/* ---- clocks ---- */

static int64_t hs_thread_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t hs_mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A process's CPU time (all threads) from /proc/PID/schedstat, or -1. */
static int64_t hs_process_cpu_ns(pid_t pid)
{
    char path[64];
    long long ns = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/schedstat", (long)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    if (fscanf(f, "%lld", &ns) != 1)
        ns = -1;
    fclose(f);
    return ns;
}

/* ---- the wrapped libsessionc callbacks ----
 * sc_attach installs the same three functions on every SSL_CTX, so one saved
 * copy serves both servers. The wrappers only time and count. */

static SSL_SESSION *(*hs_orig_get)(SSL *, const unsigned char *, int, int *);
static int (*hs_orig_new)(SSL *, SSL_SESSION *);
static void (*hs_orig_remove)(SSL_CTX *, SSL_SESSION *);
static hs_probe *hs_current; /* the handshake in progress, NULL between them */
/* What one CLOCK_THREAD_CPUTIME_ID reading costs (measured at start): the
 * two readings a wrapper adds around a lookup or a store are taken out of
 * the handshake's figure, and one of them (the part inside the interval)
 * out of the lookup's or the store's, so the instrument adds ~nothing. */
static int64_t hs_clock_ns;

static SSL_SESSION *hs_get_cb(SSL *ssl, const unsigned char *id, int id_len, int *copy)
{
    int64_t t0 = hs_thread_ns();
    SSL_SESSION *sess = hs_orig_get(ssl, id, id_len, copy);

    if (hs_current != NULL) {
        hs_current->lookup_ns += hs_thread_ns() - t0;
        hs_current->lookups++;
        hs_current->lookup_hits += sess != NULL;
    }
    return sess;
}

static int hs_new_cb(SSL *ssl, SSL_SESSION *sess)
{
    int64_t t0 = hs_thread_ns();
    int kept = hs_orig_new(ssl, sess);

    if (hs_current != NULL) {
        hs_current->put_ns += hs_thread_ns() - t0;
        hs_current->puts++;
    }
    return kept;
}

static void hs_remove_cb(SSL_CTX *ctx, SSL_SESSION *sess)
{
    if (hs_current != NULL)
        hs_current->removes++;
    hs_orig_remove(ctx, sess);
}

static int hs_wrap_callbacks(SSL_CTX *ctx)
{
    SSL_SESSION *(*get)(SSL *, const unsigned char *, int, int *) = SSL_CTX_sess_get_get_cb(ctx);
    int (*new_cb)(SSL *, SSL_SESSION *) = SSL_CTX_sess_get_new_cb(ctx);
    void (*remove)(SSL_CTX *, SSL_SESSION *) = SSL_CTX_sess_get_remove_cb(ctx);

    if (get == NULL || new_cb == NULL || remove == NULL)
        return -1;
    if (hs_orig_get == NULL) {
        hs_orig_get = get;
        hs_orig_new = new_cb;
        hs_orig_remove = remove;
    } else if (get != hs_orig_get || new_cb != hs_orig_new || remove != hs_orig_remove) {
        return -1; /* not the functions saved from the first SSL_CTX */
    }
    SSL_CTX_sess_set_get_cb(ctx, hs_get_cb);
    SSL_CTX_sess_set_new_cb(ctx, hs_new_cb);
    SSL_CTX_sess_set_remove_cb(ctx, hs_remove_cb);
    return 0;
}

/* ---- one handshake ---- */

static int hs_want_io(int err)
{
    return err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE;
}

/* One connection from a fresh client SSL (offering *session) to a fresh
 * server SSL over a socketpair. On success replaces *session with the
 * client's newest one and fills *out and *probe (what the session callbacks
 * did); returns 0, or -1 with the reason in why. cipher (may be NULL, else
 * filled once) receives what a full handshake negotiated. */
static int hs_connect(SSL_CTX *client_ctx, SSL_CTX *server_ctx, SSL_SESSION **session,
                      hs_sample *out, hs_probe *probe, char *cipher, size_t cipher_cap, char *why,
                      size_t why_cap)
{
    SSL_SESSION *latest = NULL;
    SSL *client = NULL;
    SSL *server = NULL;
    int sv[2] = {-1, -1};
    int client_done = 0, server_done = 0;
    int turns = 0;
    int rc = -1;
    unsigned char sink[64];

    memset(out, 0, sizeof(*out));
    memset(probe, 0, sizeof(*probe));
    ERR_clear_error();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) {
        snprintf(why, why_cap, "socketpair: %s", strerror(errno));
        goto fail;
    }
    client = SSL_new(client_ctx);
    server = SSL_new(server_ctx);
    if (client == NULL || server == NULL || !SSL_set_fd(client, sv[0]) ||
        !SSL_set_fd(server, sv[1]) || (*session != NULL && !SSL_set_session(client, *session))) {
        snprintf(why, why_cap, "SSL setup: %s", ERR_error_string(ERR_get_error(), NULL));
        goto fail;
    }
    SSL_set_app_data(client, &latest); /* tu_client_ctx's new-session callback fills it */
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);

    hs_current = probe;
    while (!client_done || !server_done) {
        int r, err;

        if (++turns > HS_TURNS_MAX) {
            snprintf(why, why_cap, "handshake made no progress in %d turns", HS_TURNS_MAX);
            goto fail;
        }
        if (!client_done) {
            r = SSL_do_handshake(client);
            if (r == 1) {
                client_done = 1;
            } else if (!hs_want_io(err = SSL_get_error(client, r))) {
                snprintf(why, why_cap, "client handshake: error %d: %s", err,
                         ERR_error_string(ERR_get_error(), NULL));
                goto fail;
            }
        }
        if (!server_done) {
            int64_t t0 = hs_thread_ns();

            r = SSL_do_handshake(server);
            out->cpu_ns += hs_thread_ns() - t0;
            if (r == 1) {
                server_done = 1;
            } else if (!hs_want_io(err = SSL_get_error(server, r))) {
                snprintf(why, why_cap, "server handshake: error %d: %s", err,
                         ERR_error_string(ERR_get_error(), NULL));
                goto fail;
            }
        }
    }
    hs_current = NULL;

    /* TLS 1.3 tickets were written by the server's last call and wait in the
     * socket: reading until WANT_READ hands them to the new-session callback.
     * For TLS 1.2 there is nothing to read. */
    while (SSL_read(client, sink, sizeof(sink)) > 0)
        ;
    ERR_clear_error();
    out->resumed = (unsigned char)SSL_session_reused(server);
    if (SSL_session_reused(client) != out->resumed) {
        snprintf(why, why_cap, "client and server disagree on resumption");
        goto fail;
    }
    out->via_sessiond = out->resumed && probe->lookup_hits > 0;
    out->cpu_ns -= (int64_t)(probe->lookups + probe->puts) * 2 * hs_clock_ns;
    out->lookup_ns = probe->lookup_ns - (int64_t)probe->lookups * hs_clock_ns;
    out->put_ns = probe->put_ns - (int64_t)probe->puts * hs_clock_ns;
    if (cipher != NULL && cipher[0] == '\0' && !out->resumed) {
        const char *group = "?";
#ifdef SSL_get_negotiated_group
        int nid = SSL_get_negotiated_group(server);

        if (nid > 0 && OBJ_nid2sn(nid) != NULL)
            group = OBJ_nid2sn(nid);
#endif
        snprintf(cipher, cipher_cap, "%s, %s", SSL_get_cipher_name(server), group);
    }
    /* close_notify both ways: OpenSSL drops a session from the cache when
     * its SSL is freed without one. Not timed: not handshake work. */
    SSL_shutdown(client);
    SSL_shutdown(server);
    ERR_clear_error();
    if (latest == NULL)
        latest = SSL_get1_session(client); /* TLS 1.2 resumption: the same session */
    SSL_SESSION_free(*session);
    *session = latest;
    latest = NULL;
    rc = 0;

fail:
    hs_current = NULL;
    if (client != NULL)
        SSL_set_app_data(client, NULL);
    SSL_SESSION_free(latest);
    SSL_free(client);
    SSL_free(server);
    if (sv[0] >= 0)
        close(sv[0]);
    if (sv[1] >= 0)
        close(sv[1]);
    return rc;
}

/* ---- statistics ---- */

static int hs_cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return (x > y) - (x < y);
}

/* Mean and nearest-rank percentiles of v[0..n) (sorted in place), in µs. */
static hs_dist hs_distribution(int64_t *v, size_t n)
{
    hs_dist d = {.n = n};
    double sum = 0;

    if (n == 0)
        return d;
    qsort(v, n, sizeof(v[0]), hs_cmp_i64);
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    d.mean_us = sum / (double)n / 1000.0;
    d.p50_us = (double)v[(n + 1) / 2 - 1] / 1000.0;
    d.p99_us = (double)v[(size_t)((double)n * 0.99 + 0.999999) - 1] / 1000.0;
    return d;
}

typedef enum hs_field { HS_F_HANDSHAKE, HS_F_LOOKUP, HS_F_PUT } hs_field;

/* The distribution of one figure over the samples keep() says yes to. */
static hs_dist hs_select(const hs_sample *s, size_t n, int (*keep)(const hs_sample *),
                         hs_field field, int64_t *scratch)
{
    size_t k = 0;

    for (size_t i = 0; i < n; i++)
        if (keep(&s[i]))
            scratch[k++] = field == HS_F_LOOKUP ? s[i].lookup_ns
                           : field == HS_F_PUT  ? s[i].put_ns
                                                : s[i].cpu_ns;
    return hs_distribution(scratch, k);
}

static int hs_is_full(const hs_sample *s)
{
    return !s->resumed;
}

static int hs_is_resumed(const hs_sample *s)
{
    return s->resumed;
}

static int hs_is_via_sessiond(const hs_sample *s)
{
    return s->via_sessiond;
}

/* ---- one case ---- */

static int hs_version_index(int version)
{
    return version == TLS1_3_VERSION ? 1 : 0;
}

static const char *hs_version_name(int version)
{
    return version == TLS1_3_VERSION ? "1.3" : "1.2";
}

static int hs_uses_sessiond(hs_store store)
{
    return store == HS_SESSIOND || store == HS_SESSIOND_NOLOCAL || store == HS_SESSIOND_NOSTORE;
}

/* xorshift64*: the random chooser, reproducible from --seed. */
static uint64_t hs_random(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Server `which` (0 = A, 1 = B) for the case, or NULL (reason on stderr). */
static SSL_CTX *hs_server_ctx(hs_env *env, const hs_case_def *def, int version, int which)
{
    tu_server_opts opts = {.version = version, .sid_ctx = HS_SID_CTX};
    long mode;
    SSL_CTX *ctx;

    opts.no_ticket = def->store != HS_TICKETS_OWN && def->store != HS_TICKETS_SHARED &&
                     def->store != HS_TICKETS_SESSIOND;
    ctx = tu_server_ctx(&env->cred, &opts);
    if (ctx == NULL)
        return NULL;
    switch (def->store) {
    case HS_NO_CACHE:
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        break;
    case HS_SESSIOND_NOLOCAL:
    case HS_SESSIOND_NOSTORE:
        SSL_CTX_set_session_cache_mode(ctx, SSL_CTX_get_session_cache_mode(ctx) |
                                                (def->store == HS_SESSIOND_NOSTORE
                                                     ? SSL_SESS_CACHE_NO_INTERNAL
                                                     : SSL_SESS_CACHE_NO_INTERNAL_LOOKUP));
        /* fall through */
    case HS_SESSIOND:
        /* The v2 namespace comes from the session-ID context, declared
         * through the library (OpenSSL has no getter for it). */
        if (sc_set_session_id_context(ctx, (const unsigned char *)HS_SID_CTX,
                                      (unsigned)strlen(HS_SID_CTX)) != 0 ||
            sc_attach(env->sc[which], ctx, 0) != 0 || hs_wrap_callbacks(ctx) != 0) {
            fprintf(stderr, "handshake: cannot attach libsessionc to server %c\n", 'A' + which);
            goto fail;
        }
        break;
    case HS_TICKETS_SHARED:
        if (SSL_CTX_set_tlsext_ticket_keys(ctx, env->ticket_keys, sizeof(env->ticket_keys)) != 1) {
            fprintf(stderr, "handshake: cannot set the ticket keys\n");
            goto fail;
        }
        break;
    case HS_TICKETS_SESSIOND:
        if (sc_attach_ticket_keys(env->tk_sc[which], ctx) != 0) {
            fprintf(stderr, "handshake: cannot attach sessiond's ticket keys to server %c\n",
                    'A' + which);
            goto fail;
        }
        break;
    case HS_LOCAL:
    case HS_TICKETS_OWN:
        break;
    }
    mode = SSL_CTX_get_session_cache_mode(ctx);
    if ((def->store == HS_NO_CACHE) != (mode == SSL_SESS_CACHE_OFF) ||
        (def->store == HS_SESSIOND_NOLOCAL || def->store == HS_SESSIOND_NOSTORE) !=
            ((mode & SSL_SESS_CACHE_NO_INTERNAL_LOOKUP) != 0) ||
        (def->store == HS_SESSIOND_NOSTORE) != ((mode & SSL_SESS_CACHE_NO_INTERNAL_STORE) != 0)) {
        fprintf(stderr, "handshake: unexpected session cache mode %#lx for %s\n", mode, def->name);
        goto fail;
    }
    return ctx;

fail:
    if (hs_uses_sessiond(def->store))
        sc_detach(ctx);
    SSL_CTX_free(ctx);
    return NULL;
}

static void hs_free_server(SSL_CTX *ctx, const hs_case_def *def)
{
    if (ctx == NULL)
        return;
    /* Detach first: freeing the SSL_CTX calls the remove callback for every
     * session in its cache, which would delete them in sessiond. */
    if (hs_uses_sessiond(def->store))
        sc_detach(ctx);
    SSL_CTX_free(ctx);
}

/* A case in progress: its two servers, the client's session and what has
 * been recorded so far. Cases are run in rounds, a slice of each per round
 * (see main), so a case keeps its state from one slice to the next. */
typedef struct hs_case_run {
    const hs_case_def *def;
    int version;
    SSL_CTX *server[2];
    SSL_SESSION *session;
    hs_sample *samples;
    long done;           /* handshakes made, warm-up included: the round-robin parity */
    uint64_t rng;        /* the random chooser's state */
    int64_t wall_ns;     /* wall time of the recorded handshakes */
    int64_t sessiond_ns; /* sessiond's CPU over the recorded handshakes */
    int sessiond_cpu_ok;
    hs_result res;
} hs_case_run;

/* Makes the case's servers. Returns 0, or -1 (reason on stderr). */
static int hs_case_open(hs_case_run *run, const hs_config *cfg, hs_env *env, const hs_case_def *def,
                        int version)
{
    memset(run, 0, sizeof(*run));
    run->def = def;
    run->version = version;
    run->rng = cfg->seed;
    run->sessiond_cpu_ok = hs_uses_sessiond(def->store);
    run->res.def = def;
    run->res.version = version;
    run->res.wire = cfg->wire;
    run->res.sessiond_us_per_lookup = -1;
    run->samples = calloc((size_t)cfg->handshakes, sizeof(*run->samples));
    if (run->samples == NULL) {
        fprintf(stderr, "handshake: out of memory\n");
        return -1;
    }
    if (hs_uses_sessiond(def->store) && !env->daemon_up) {
        fprintf(stderr, "handshake: %s needs sessiond, which is not running\n", def->name);
        return -1;
    }
    for (int i = 0; i < 2; i++)
        if ((run->server[i] = hs_server_ctx(env, def, version, i)) == NULL)
            return -1;
    return 0;
}

/* Makes `count` more handshakes (the warm-up ones first, unrecorded), or
 * fewer once the case has used its -d seconds. Returns 0, or -1 if a
 * handshake failed (reason on stderr). */
static int hs_case_slice(hs_case_run *run, const hs_config *cfg, hs_env *env, long count)
{
    SSL_CTX *client_ctx = env->client_ctx[hs_version_index(run->version)];
    char *cipher = env->cipher[hs_version_index(run->version)];
    hs_result *res = &run->res;
    int64_t sessiond0 = run->sessiond_cpu_ok ? hs_process_cpu_ns(env->daemon.pid) : -1;
    int64_t slice_start = hs_mono_ns();
    int64_t recorded_start = 0;
    char why[512];

    for (long k = 0; k < count && !res->capped; k++) {
        hs_sample sample;
        hs_probe probe;
        int which;

        if (run->done == cfg->warmup)
            recorded_start = hs_mono_ns();
        switch (run->def->chooser) {
        case HS_RR:
            which = (int)(run->done & 1);
            break;
        case HS_RANDOM:
            which = (int)(hs_random(&run->rng) >> 63);
            break;
        case HS_SAME:
        default:
            which = 0;
            break;
        }
        if (hs_connect(client_ctx, run->server[which], &run->session, &sample, &probe, cipher,
                       sizeof(env->cipher[0]), why, sizeof(why)) != 0) {
            fprintf(stderr, "handshake: %s TLS %s, handshake %ld on server %c failed: %s\n",
                    run->def->name, hs_version_name(run->version), run->done, 'A' + which, why);
            return -1;
        }
        if (run->done++ < cfg->warmup)
            continue;
        run->samples[res->n++] = sample;
        res->resumed += sample.resumed;
        res->via_sessiond += sample.via_sessiond;
        res->lookups += probe.lookups;
        res->lookup_hits += probe.lookup_hits;
        res->puts += probe.puts;
        res->removes += probe.removes;
        if ((double)(run->wall_ns + hs_mono_ns() - slice_start) > cfg->max_seconds * 1e9)
            res->capped = res->n < (size_t)cfg->handshakes;
    }
    if (recorded_start == 0 && run->done > cfg->warmup)
        recorded_start = slice_start; /* the whole slice was recorded */
    if (recorded_start != 0)
        run->wall_ns += hs_mono_ns() - recorded_start;
    if (sessiond0 >= 0) {
        int64_t sessiond1 = hs_process_cpu_ns(env->daemon.pid);

        if (sessiond1 >= sessiond0)
            run->sessiond_ns += sessiond1 - sessiond0; /* warm-up slices count a little extra */
        else
            run->sessiond_cpu_ok = 0;
    }
    return 0;
}

/* Turns the samples into figures, frees the servers. */
static void hs_case_close(hs_case_run *run)
{
    hs_result *res = &run->res;
    int64_t *scratch = calloc(res->n > 0 ? res->n : 1, sizeof(*scratch));

    res->wall_s = (double)run->wall_ns / 1e9;
    if (run->sessiond_cpu_ok && res->lookups > 0)
        res->sessiond_us_per_lookup = (double)run->sessiond_ns / 1000.0 / (double)res->lookups;
    if (scratch != NULL) {
        res->full = hs_select(run->samples, res->n, hs_is_full, HS_F_HANDSHAKE, scratch);
        res->resumed_cpu = hs_select(run->samples, res->n, hs_is_resumed, HS_F_HANDSHAKE, scratch);
        res->sessiond_cpu =
            hs_select(run->samples, res->n, hs_is_via_sessiond, HS_F_HANDSHAKE, scratch);
        res->lookup_cpu = hs_select(run->samples, res->n, hs_is_via_sessiond, HS_F_LOOKUP, scratch);
        res->put_cpu = hs_select(run->samples, res->n, hs_is_via_sessiond, HS_F_PUT, scratch);
    }
    free(scratch);
    free(run->samples);
    run->samples = NULL;
    SSL_SESSION_free(run->session);
    run->session = NULL;
    for (int i = 0; i < 2; i++) {
        if (run->server[i] != NULL)
            hs_free_server(run->server[i], run->def);
        run->server[i] = NULL;
    }
}

/* ---- output ---- */

static double hs_pct(size_t part, size_t whole)
{
    return whole > 0 ? 100.0 * (double)part / (double)whole : 0;
}

static double hs_per_hs(uint64_t count, size_t n)
{
    return n > 0 ? (double)count / (double)n : 0;
}

/* "%8.1f" or a dash when there is no sample. */
static const char *hs_fmt(char *buf, size_t cap, size_t n, double v)
{
    if (n == 0)
        snprintf(buf, cap, "%8s", "-");
    else
        snprintf(buf, cap, "%8.1f", v);
    return buf;
}

static void hs_print_header(void)
{
    printf("%-31s %-6s %-3s %7s %8s | %-26s | %-26s | %7s\n", "case", "chooser", "TLS", "hs/s",
           "resumed", "   full: server CPU us", " resumed: server CPU us", "resumed");
    printf("%-31s %-6s %-3s %7s %8s | %8s %8s %8s | %8s %8s %8s | %7s\n", "", "", "", "", "",
           "mean", "p50", "p99", "mean", "p50", "p99", "x local");
}

static void hs_print_row(const hs_result *r, const hs_result *baseline)
{
    char a[16], b[16], c[16], d[16], e[16], f[16], ratio[16] = "      -";

    if (baseline != NULL && baseline->resumed_cpu.n > 0 && r->resumed_cpu.n > 0)
        snprintf(ratio, sizeof(ratio), "%7.2f",
                 r->resumed_cpu.p50_us / baseline->resumed_cpu.p50_us);
    printf("%-31s %-7s %-3s %7.0f %7.1f%% | %s %s %s | %s %s %s | %s%s\n", r->def->label,
           hs_chooser_names[r->def->chooser], hs_version_name(r->version),
           r->wall_s > 0 ? (double)r->n / r->wall_s : 0, hs_pct(r->resumed, r->n),
           hs_fmt(a, sizeof(a), r->full.n, r->full.mean_us),
           hs_fmt(b, sizeof(b), r->full.n, r->full.p50_us),
           hs_fmt(c, sizeof(c), r->full.n, r->full.p99_us),
           hs_fmt(d, sizeof(d), r->resumed_cpu.n, r->resumed_cpu.mean_us),
           hs_fmt(e, sizeof(e), r->resumed_cpu.n, r->resumed_cpu.p50_us),
           hs_fmt(f, sizeof(f), r->resumed_cpu.n, r->resumed_cpu.p99_us), ratio,
           r->capped ? " (capped by -d)" : "");
    if (!hs_uses_sessiond(r->def->store))
        return;
    if (r->via_sessiond == 0) {
        printf("    via sessiond: none of %zu resumed (all local-cache hits); per handshake %.2f "
               "lookups, %.2f puts, %.2f removes\n",
               r->resumed, hs_per_hs(r->lookups, r->n), hs_per_hs(r->puts, r->n),
               hs_per_hs(r->removes, r->n));
        return;
    }
    printf("    via sessiond: %zu of %zu resumed (%.1f%%): server CPU mean %.1f p50 %.1f p99 %.1f "
           "us, of which lookup mean %.1f p50 %.1f, new-session (PUT) mean %.1f p50 %.1f; "
           "sessiond %.1f us CPU per lookup; per handshake %.2f lookups, %.2f puts, %.2f "
           "removes\n",
           r->via_sessiond, r->resumed, hs_pct(r->via_sessiond, r->resumed),
           r->sessiond_cpu.mean_us, r->sessiond_cpu.p50_us, r->sessiond_cpu.p99_us,
           r->lookup_cpu.mean_us, r->lookup_cpu.p50_us, r->put_cpu.mean_us, r->put_cpu.p50_us,
           r->sessiond_us_per_lookup, hs_per_hs(r->lookups, r->n), hs_per_hs(r->puts, r->n),
           hs_per_hs(r->removes, r->n));
}

/* The fields of a result: the CSV columns and the result line's names. */
static const char *const hs_field_names[] = {
    "case",
    "chooser",
    "tls",
    "wire",
    "n",
    "capped",
    "wall_s",
    "hs_per_s",
    "resumed_pct",
    "via_sessiond_pct",
    "full_n",
    "full_mean_us",
    "full_p50_us",
    "full_p99_us",
    "resumed_n",
    "resumed_mean_us",
    "resumed_p50_us",
    "resumed_p99_us",
    "sessiond_resumed_n",
    "sessiond_resumed_mean_us",
    "sessiond_resumed_p50_us",
    "sessiond_resumed_p99_us",
    "lookup_mean_us",
    "lookup_p50_us",
    "put_mean_us",
    "put_p50_us",
    "lookups_per_hs",
    "puts_per_hs",
    "removes_per_hs",
    "sessiond_cpu_us_per_lookup",
};
#define HS_NFIELDS (sizeof(hs_field_names) / sizeof(hs_field_names[0]))

static void hs_print_csv_header(FILE *out)
{
    for (size_t i = 0; i < HS_NFIELDS; i++)
        fprintf(out, "%s%s", i > 0 ? "," : "", hs_field_names[i]);
    fputc('\n', out);
}

/* A result's fields, comma-separated (the CSV line) or as name=value pairs
 * (named: the result line, a dash for a figure not measured). */
static void hs_print_fields(FILE *out, const hs_result *r, int named)
{
    char v[HS_NFIELDS][32];
    size_t k = 0;

    snprintf(v[k++], 32, "%s", r->def->name);
    snprintf(v[k++], 32, "%s", hs_chooser_names[r->def->chooser]);
    snprintf(v[k++], 32, "%s", hs_version_name(r->version));
    snprintf(v[k++], 32, "%s", hs_uses_sessiond(r->def->store) ? hs_wire_names[r->wire] : "");
    snprintf(v[k++], 32, "%zu", r->n);
    snprintf(v[k++], 32, "%d", r->capped);
    snprintf(v[k++], 32, "%.3f", r->wall_s);
    snprintf(v[k++], 32, "%.1f", r->wall_s > 0 ? (double)r->n / r->wall_s : 0);
    snprintf(v[k++], 32, "%.2f", hs_pct(r->resumed, r->n));
    snprintf(v[k++], 32, "%.2f", hs_pct(r->via_sessiond, r->n));
    snprintf(v[k++], 32, "%zu", r->full.n);
    snprintf(v[k++], 32, "%.2f", r->full.mean_us);
    snprintf(v[k++], 32, "%.2f", r->full.p50_us);
    snprintf(v[k++], 32, "%.2f", r->full.p99_us);
    snprintf(v[k++], 32, "%zu", r->resumed_cpu.n);
    snprintf(v[k++], 32, "%.2f", r->resumed_cpu.mean_us);
    snprintf(v[k++], 32, "%.2f", r->resumed_cpu.p50_us);
    snprintf(v[k++], 32, "%.2f", r->resumed_cpu.p99_us);
    snprintf(v[k++], 32, "%zu", r->sessiond_cpu.n);
    snprintf(v[k++], 32, "%.2f", r->sessiond_cpu.mean_us);
    snprintf(v[k++], 32, "%.2f", r->sessiond_cpu.p50_us);
    snprintf(v[k++], 32, "%.2f", r->sessiond_cpu.p99_us);
    snprintf(v[k++], 32, "%.2f", r->lookup_cpu.mean_us);
    snprintf(v[k++], 32, "%.2f", r->lookup_cpu.p50_us);
    snprintf(v[k++], 32, "%.2f", r->put_cpu.mean_us);
    snprintf(v[k++], 32, "%.2f", r->put_cpu.p50_us);
    snprintf(v[k++], 32, "%.3f", hs_per_hs(r->lookups, r->n));
    snprintf(v[k++], 32, "%.3f", hs_per_hs(r->puts, r->n));
    snprintf(v[k++], 32, "%.3f", hs_per_hs(r->removes, r->n));
    if (r->sessiond_us_per_lookup >= 0)
        snprintf(v[k++], 32, "%.2f", r->sessiond_us_per_lookup);
    else
        v[k++][0] = '\0';
    for (size_t i = 0; i < k; i++) {
        if (named)
            fprintf(out, " %s=%s", hs_field_names[i], v[i][0] != '\0' ? v[i] : "-");
        else
            fprintf(out, "%s%s", i > 0 ? "," : "", v[i]);
    }
    fputc('\n', out);
}

/* The target for one version: CPU of a handshake resumed through
 * sessiond (c-sessiond-only, or another sessiond case) over one resumed from
 * the local cache (b-local-same). Judged on the medians, which a busy
 * neighbour moves least; the means are printed next to them. */
static void hs_print_target(const hs_result *local, const hs_result *via)
{
    double r50, rmean;

    if (local == NULL || via == NULL || local->resumed_cpu.n == 0 || via->sessiond_cpu.n == 0) {
        printf("target: not measured (needs b-local-same and c-sessiond-only with "
               "resumptions)\n");
        return;
    }
    r50 = via->sessiond_cpu.p50_us / local->resumed_cpu.p50_us;
    rmean = via->sessiond_cpu.mean_us / local->resumed_cpu.mean_us;
    printf("target TLS %s, %s: server CPU resumed through sessiond / resumed from the local "
           "cache: p50 %.1f / %.1f us = %.2fx, mean %.1f / %.1f us = %.2fx (target <= %.1fx): "
           "%s; the lookup itself p50 %.1f us, the PUT of the new session p50 %.1f us\n",
           hs_version_name(local->version), via->def->name, via->sessiond_cpu.p50_us,
           local->resumed_cpu.p50_us, r50, via->sessiond_cpu.mean_us, local->resumed_cpu.mean_us,
           rmean, HS_TARGET_RATIO, r50 <= HS_TARGET_RATIO ? "met" : "NOT met",
           via->lookup_cpu.p50_us, via->put_cpu.p50_us);
    printf("ratio tls=%s case=%s local_p50_us=%.2f sessiond_p50_us=%.2f ratio_p50=%.3f "
           "local_mean_us=%.2f sessiond_mean_us=%.2f ratio_mean=%.3f lookup_p50_us=%.2f "
           "put_p50_us=%.2f target=%.1f met=%d\n",
           hs_version_name(local->version), via->def->name, local->resumed_cpu.p50_us,
           via->sessiond_cpu.p50_us, r50, local->resumed_cpu.mean_us, via->sessiond_cpu.mean_us,
           rmean, via->lookup_cpu.p50_us, via->put_cpu.p50_us, HS_TARGET_RATIO,
           r50 <= HS_TARGET_RATIO);
}

/* The cost of one CLOCK_THREAD_CPUTIME_ID reading (a system call on most
 * kernels): every server call is bracketed by two, the lookup by two more. */
static double hs_clock_cost_ns(void)
{
    volatile int64_t sink = 0;
    int64_t best = INT64_MAX;

    /* The fastest of 20 batches: a batch the scheduler interrupted would
     * overstate the cost, and the figure is subtracted from samples. */
    for (int batch = 0; batch < 20; batch++) {
        int64_t t0 = hs_mono_ns();

        for (int i = 0; i < 100; i++)
            sink += hs_thread_ns();
        if (hs_mono_ns() - t0 < best)
            best = hs_mono_ns() - t0;
    }
    (void)sink;
    return (double)best / 100.0;
}

/* The floor under any lookup over UDP on this machine: the thread CPU of a
 * bare v1 GET round trip to the same sessiond (one send, one blocking recv,
 * an answer the size of a TLS 1.2 session), with none of libsessionc's or
 * OpenSSL's work. What a lookup costs beyond it is the library's. The round
 * trips are spaced by HS_FLOOR_GAP_NS of busy waiting, as lookups are by
 * handshakes: back to back, sessiond's CPU has not gone idle yet and waking
 * it is much cheaper (on the VM this was written on, ~9 µs against ~35 µs
 * when sessiond runs on the other vCPU). Returns 0, or -1 (reason on
 * stderr). */
static int hs_udp_floor(const th_daemon *daemon, long count, hs_dist *out)
{
    static const uint8_t id[32] = "handshake-bench-udp-floor-probe";
    uint8_t value[140], put[PROTO_V1_HEADER_LEN + sizeof(value)], get[PROTO_V1_HEADER_LEN];
    uint8_t ans[512];
    struct timeval tv = {.tv_sec = 1};
    int64_t *cpu = calloc((size_t)count, sizeof(*cpu));
    size_t put_len, get_len;
    int fd = th_udp_connect(daemon->port);
    int64_t gap_until = 0;
    int rc = -1;

    memset(value, 0x5a, sizeof(value));
    if (cpu == NULL || fd < 0 || setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
        proto_v1_encode(put, sizeof(put), PROTO_V1_NEW, 600, id, sizeof(id), value, sizeof(value),
                        &put_len) != PROTO_OK ||
        proto_v1_encode(get, sizeof(get), PROTO_V1_GET, 0, id, sizeof(id), NULL, 0, &get_len) !=
            PROTO_OK) {
        fprintf(stderr, "handshake: UDP floor: setup failed\n");
        goto fail;
    }
    /* 50 unrecorded round trips first; they also store the value again if
     * the first NEW was lost (NEW is never answered). */
    for (long i = -50; i < count; i++) {
        proto_v1_msg msg;
        int64_t t0;
        ssize_t got;
        int found;

        if (i < 0 && send(fd, put, put_len, 0) != (ssize_t)put_len)
            goto io_fail;
        while (hs_mono_ns() < gap_until)
            ;
        t0 = hs_thread_ns();
        if (send(fd, get, get_len, 0) != (ssize_t)get_len)
            goto io_fail;
        got = recv(fd, ans, sizeof(ans), 0);
        found = got > 0 && proto_v1_parse_answer(ans, (size_t)got, &msg) == PROTO_OK &&
                msg.type == PROTO_V1_FOUND && msg.value_len == sizeof(value);
        if (i >= 0 && !found)
            goto io_fail;
        if (i >= 0)
            cpu[i] = hs_thread_ns() - t0 - hs_clock_ns;
        gap_until = hs_mono_ns() + HS_FLOOR_GAP_NS;
    }
    *out = hs_distribution(cpu, (size_t)count);
    rc = 0;
    goto fail;

io_fail:
    fprintf(stderr, "handshake: UDP floor: no answer from sessiond, or not the value stored\n");
fail:
    if (fd >= 0)
        close(fd);
    free(cpu);
    return rc;
}

/* ---- setup ---- */

static int hs_usage(FILE *out, int rc)
{
    fprintf(out,
            "usage: handshake [options]\n"
            "  -n, --handshakes N   recorded handshakes per case (%d)\n"
            "  -w, --warmup N       unrecorded handshakes first, per case (%d)\n"
            "  -R, --rounds R       slices each case is cut into, interleaved with the\n"
            "                       other cases' (%d)\n"
            "  -d, --max-seconds S  wall-time cap per case (%.0f)\n"
            "  -t, --tls V          1.2, 1.3 or both (both)\n"
            "  -c, --cases LIST     comma-separated case names, or all (all):\n"
            "                       a-nocache b-local-same b-local-rr b-local-random c-sessiond\n"
            "                       c-sessiond-only c-sessiond-nostore d-tickets-own\n"
            "                       d-tickets-shared\n"
            "  --wire v2|sealed|v1  libsessionc's wire format: v2 plaintext (the library's\n"
            "                       default), v2 sealed with a fresh cluster key, or v1 (v2)\n"
            "  --pin none|same|split  where this thread and sessiond run: as the scheduler\n"
            "                       decides (none), both on CPU 0, or CPU 0 and CPU 1\n"
            "  --sessiond PATH      the daemon for the c- cases ($SESSIOND, else ../sessiond\n"
            "                       next to this binary)\n"
            "  --seed N             seed of the random chooser (1)\n"
            "  --csv FILE           also write one CSV line per case to FILE\n",
            HS_DEFAULT_N, HS_DEFAULT_WARMUP, HS_DEFAULT_ROUNDS, HS_DEFAULT_SECONDS);
    return rc;
}

static int hs_bad(const char *what)
{
    fprintf(stderr, "handshake: %s (try --help)\n", what);
    return 2;
}

static int hs_parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int hs_parse_cases(const char *list, int *selected)
{
    char buf[512];
    char *save = NULL;

    if (strcmp(list, "all") == 0) {
        for (size_t i = 0; i < HS_NCASES; i++)
            selected[i] = 1;
        return 0;
    }
    if (strlen(list) >= sizeof(buf))
        return -1;
    strcpy(buf, list);
    memset(selected, 0, HS_NCASES * sizeof(*selected));
    for (char *name = strtok_r(buf, ",", &save); name != NULL; name = strtok_r(NULL, ",", &save)) {
        size_t i;

        for (i = 0; i < HS_NCASES; i++)
            if (strcmp(name, hs_cases[i].name) == 0)
                break;
        if (i == HS_NCASES)
            return -1;
        selected[i] = 1;
    }
    return 0;
}

/* Points $SESSIOND at the daemon unless it is set: --sessiond, else the
 * sessiond of the build directory this binary lives in. */
static int hs_find_sessiond(const char *given)
{
    char exe[PATH_MAX], path[PATH_MAX + 16];
    ssize_t len;
    char *slash;

    if (given != NULL)
        return setenv("SESSIOND", given, 1);
    if (getenv("SESSIOND") != NULL)
        return 0;
    len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len <= 0)
        return -1;
    exe[len] = '\0';
    slash = strrchr(exe, '/'); /* .../BUILD/bench/handshake */
    if (slash == NULL)
        return -1;
    *slash = '\0';
    slash = strrchr(exe, '/');
    if (slash == NULL)
        return -1;
    *slash = '\0';
    snprintf(path, sizeof(path), "%s/sessiond", exe);
    return setenv("SESSIOND", path, 1);
}

/* Binds the calling thread (and what it forks later) to one CPU. */
static int hs_pin_to(int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
        fprintf(stderr, "handshake: cannot pin to CPU %d: %s\n", cpu, strerror(errno));
        return -1;
    }
    return 0;
}

/* Sealed mode: a fresh random cluster key in a 0600 file of a temporary
 * directory, as `openssl rand -hex 32 > key` would make. Returns 0 or -1. */
static int hs_make_key_file(hs_env *env)
{
    unsigned char key[32];
    char hex[2 * sizeof(key) + 2];
    int fd = -1, rc = -1;

    if (th_tmpdir(env->key_dir, sizeof(env->key_dir)) != 0)
        return -1;
    snprintf(env->key_path, sizeof(env->key_path), "%s/key", env->key_dir);
    if (RAND_bytes(key, sizeof(key)) != 1)
        goto fail;
    for (size_t i = 0; i < sizeof(key); i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    hex[2 * sizeof(key)] = '\n';
    fd = open(env->key_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, hex, 2 * sizeof(key) + 1) != (ssize_t)(2 * sizeof(key) + 1))
        goto fail;
    rc = 0;

fail:
    if (fd >= 0 && close(fd) != 0)
        rc = -1;
    if (rc != 0)
        fprintf(stderr, "handshake: cannot write a key file in %s\n", env->key_dir);
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(hex, sizeof(hex));
    return rc;
}

/* The ticket-key daemon of d-tickets-sessiond: sealed (keys never travel
 * in plaintext), ready once its log says so, and a client per server. */
static int hs_env_tickets(hs_env *env)
{
    const char *args[] = {"--key-file", NULL, "--ticket-keys", NULL};
    sc_options opt;
    char port[32], err[256];

    if (env->key_path[0] == '\0' && hs_make_key_file(env) != 0)
        return -1;
    args[1] = env->key_path;
    if (th_daemon_start(&env->tk_daemon, args) != 0) {
        fprintf(stderr, "handshake: cannot start the ticket-key sessiond\n");
        return -1;
    }
    env->tk_daemon_up = 1;
    if (th_daemon_wait_log(&env->tk_daemon, "ticket keys ready", 0, 5000) != 0) {
        fprintf(stderr, "handshake: sessiond never had its ticket keys ready\n");
        return -1;
    }
    snprintf(port, sizeof(port), "127.0.0.1:%d", env->tk_daemon.port);
    sc_options_init(&opt);
    opt.key_file = env->key_path;
    for (int i = 0; i < 2; i++)
        if ((env->tk_sc[i] = sc_client_new(port, &opt, err, sizeof(err))) == NULL) {
            fprintf(stderr, "handshake: sc_client_new: %s\n", err);
            return -1;
        }
    return 0;
}

static int hs_env_init(hs_env *env, const hs_config *cfg, int need_sessiond, int need_tickets)
{
    /* Sealed: the floor's v1 probe is plaintext, so loopback may send it. */
    const char *sealed_args[] = {"--key-file", NULL,           "--allow-plaintext",
                                 "--allow",    "127.0.0.1/32", NULL};
    char err[256];

    memset(env, 0, sizeof(*env));
    if (tu_cred_make(&env->cred, TU_KEY_RSA, TU_ROLE_SERVER, "localhost", NULL) != 0)
        return -1;
    for (int i = 0; i < 2; i++)
        if (cfg->versions[i] != 0 &&
            (env->client_ctx[i] = tu_client_ctx(cfg->versions[i], NULL)) == NULL)
            return -1;
    if (RAND_bytes(env->ticket_keys, sizeof(env->ticket_keys)) != 1) {
        fprintf(stderr, "handshake: RAND_bytes failed\n");
        return -1;
    }
    /* sessiond inherits the affinity it is forked with. */
    if (cfg->pin != HS_PIN_NONE && hs_pin_to(cfg->pin == HS_PIN_SPLIT && need_sessiond) != 0)
        return -1;
    if (need_sessiond) {
        char port[32];

        sc_options opt;

        if (cfg->wire == HS_WIRE_SEALED) {
            if (hs_make_key_file(env) != 0)
                return -1;
            sealed_args[1] = env->key_path;
        }
        if (th_daemon_start(&env->daemon, cfg->wire == HS_WIRE_SEALED ? sealed_args : NULL) != 0) {
            fprintf(stderr, "handshake: cannot start sessiond (%s)\n", getenv("SESSIOND"));
            return -1;
        }
        env->daemon_up = 1;
        if (cfg->pin == HS_PIN_SPLIT && hs_pin_to(0) != 0)
            return -1;
        snprintf(port, sizeof(port), "127.0.0.1:%d", env->daemon.port);
        sc_options_init(&opt);
        if (cfg->wire == HS_WIRE_V1)
            opt.protocol = 1;
        if (cfg->wire == HS_WIRE_SEALED)
            opt.key_file = env->key_path;
        /* One client per server, as two server processes would have. */
        for (int i = 0; i < 2; i++)
            if ((env->sc[i] = sc_client_new(port, &opt, err, sizeof(err))) == NULL) {
                fprintf(stderr, "handshake: sc_client_new: %s\n", err);
                return -1;
            }
    }
    if (need_tickets && hs_env_tickets(env) != 0)
        return -1;
    return 0;
}

static void hs_env_free(hs_env *env)
{
    sc_stats st;

    for (int i = 0; i < 2; i++) {
        if (env->sc[i] != NULL) {
            sc_get_stats(env->sc[i], &st);
            printf("libsessionc server %c: lookups %" PRIu64 " hits %" PRIu64 " misses %" PRIu64
                   " timeouts %" PRIu64 " errors %" PRIu64 " stores %" PRIu64 " removes %" PRIu64
                   "\n",
                   'A' + i, st.lookups, st.hits, st.misses, st.timeouts, st.errors, st.stores,
                   st.removes);
            sc_client_free(env->sc[i]);
        }
        SSL_CTX_free(env->client_ctx[i]);
    }
    for (int i = 0; i < 2; i++) {
        if (env->tk_sc[i] != NULL) {
            sc_get_stats(env->tk_sc[i], &st);
            printf("libsessionc ticket keys %c: issued %" PRIu64 " no key %" PRIu64
                   " decrypted current %" PRIu64 " old %" PRIu64 " next %" PRIu64
                   " unknown %" PRIu64 " ring refreshes %" PRIu64 "\n",
                   'A' + i, st.tickets_issued, st.tickets_no_key, st.tickets_current,
                   st.tickets_old, st.tickets_next, st.tickets_unknown, st.ring_refreshes);
            sc_client_free(env->tk_sc[i]);
        }
    }
    if (env->tk_daemon_up)
        th_daemon_stop(&env->tk_daemon);
    if (env->daemon_up)
        th_daemon_stop(&env->daemon);
    if (env->key_dir[0] != '\0')
        th_rmtree(env->key_dir);
    OPENSSL_cleanse(env->ticket_keys, sizeof(env->ticket_keys));
    tu_cred_free(&env->cred);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"handshakes", required_argument, NULL, 'n'},
        {"warmup", required_argument, NULL, 'w'},
        {"rounds", required_argument, NULL, 'R'},
        {"max-seconds", required_argument, NULL, 'd'},
        {"tls", required_argument, NULL, 't'},
        {"cases", required_argument, NULL, 'c'},
        {"sessiond", required_argument, NULL, 'S'},
        {"seed", required_argument, NULL, 'r'},
        {"csv", required_argument, NULL, 'o'},
        {"pin", required_argument, NULL, 'P'},
        {"wire", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    hs_config cfg = {
        .handshakes = HS_DEFAULT_N,
        .warmup = HS_DEFAULT_WARMUP,
        .rounds = HS_DEFAULT_ROUNDS,
        .max_seconds = HS_DEFAULT_SECONDS,
        .versions = {TLS1_2_VERSION, TLS1_3_VERSION},
        .seed = 1,
    };
    static hs_case_run runs[2][HS_NCASES];
    int opened[2][HS_NCASES] = {{0}};
    const char *sessiond_path = NULL;
    int need_sessiond = 0, need_tickets = 0;
    FILE *csv = NULL;
    hs_env env;
    int rc = 1;
    int ch;
    long v;

    for (size_t i = 0; i < HS_NCASES; i++)
        cfg.selected[i] = 1;
    while ((ch = getopt_long(argc, argv, "n:w:d:t:c:R:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n':
            if (hs_parse_long(optarg, 1, 10000000, &v) != 0)
                return hs_bad("--handshakes must be an integer in 1..10000000");
            cfg.handshakes = v;
            break;
        case 'R':
            if (hs_parse_long(optarg, 1, 1000, &v) != 0)
                return hs_bad("--rounds must be an integer in 1..1000");
            cfg.rounds = v;
            break;
        case 'w':
            if (hs_parse_long(optarg, 0, 100000, &v) != 0)
                return hs_bad("--warmup must be an integer in 0..100000");
            cfg.warmup = v;
            break;
        case 'd': {
            char *end;

            errno = 0;
            cfg.max_seconds = strtod(optarg, &end);
            if (*optarg == '\0' || *end != '\0' || errno != 0 ||
                !(cfg.max_seconds > 0 && cfg.max_seconds <= 3600))
                return hs_bad("--max-seconds must be a number in (0, 3600]");
            break;
        }
        case 't':
            if (strcmp(optarg, "1.2") == 0) {
                cfg.versions[0] = TLS1_2_VERSION;
                cfg.versions[1] = 0;
            } else if (strcmp(optarg, "1.3") == 0) {
                cfg.versions[0] = 0;
                cfg.versions[1] = TLS1_3_VERSION;
            } else if (strcmp(optarg, "both") == 0) {
                cfg.versions[0] = TLS1_2_VERSION;
                cfg.versions[1] = TLS1_3_VERSION;
            } else {
                return hs_bad("--tls must be 1.2, 1.3 or both");
            }
            break;
        case 'c':
            if (hs_parse_cases(optarg, cfg.selected) != 0)
                return hs_bad("--cases: unknown case name in the list");
            break;
        case 'S':
            sessiond_path = optarg;
            break;
        case 'r':
            if (hs_parse_long(optarg, 1, LONG_MAX, &v) != 0)
                return hs_bad("--seed must be a positive integer");
            cfg.seed = (uint64_t)v;
            break;
        case 'o':
            cfg.csv_path = optarg;
            break;
        case 'W':
            if (strcmp(optarg, "v2") == 0)
                cfg.wire = HS_WIRE_V2;
            else if (strcmp(optarg, "sealed") == 0)
                cfg.wire = HS_WIRE_SEALED;
            else if (strcmp(optarg, "v1") == 0)
                cfg.wire = HS_WIRE_V1;
            else
                return hs_bad("--wire must be v2, sealed or v1");
            break;
        case 'P':
            if (strcmp(optarg, "none") == 0)
                cfg.pin = HS_PIN_NONE;
            else if (strcmp(optarg, "same") == 0)
                cfg.pin = HS_PIN_SAME;
            else if (strcmp(optarg, "split") == 0)
                cfg.pin = HS_PIN_SPLIT;
            else
                return hs_bad("--pin must be none, same or split");
            if (cfg.pin == HS_PIN_SPLIT && sysconf(_SC_NPROCESSORS_ONLN) < 2)
                return hs_bad("--pin split needs two CPUs");
            break;
        case 'h':
            return hs_usage(stdout, 0);
        default:
            return hs_usage(stderr, 2);
        }
    }
    if (optind < argc)
        return hs_bad("unexpected argument");
    for (size_t i = 0; i < HS_NCASES; i++)
        if (cfg.selected[i] && hs_uses_sessiond(hs_cases[i].store))
            need_sessiond = 1;
        else if (cfg.selected[i] && hs_cases[i].store == HS_TICKETS_SESSIOND)
            need_tickets = 1;
    if ((need_sessiond || need_tickets) && hs_find_sessiond(sessiond_path) != 0) {
        fprintf(stderr, "handshake: cannot tell where sessiond is; use --sessiond PATH\n");
        return 2;
    }
    if ((need_sessiond || need_tickets) && access(getenv("SESSIOND"), X_OK) != 0) {
        fprintf(stderr, "handshake: sessiond %s: %s\n", getenv("SESSIOND"), strerror(errno));
        return 2;
    }
    if (cfg.csv_path != NULL && (csv = fopen(cfg.csv_path, "w")) == NULL) {
        fprintf(stderr, "handshake: %s: %s\n", cfg.csv_path, strerror(errno));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (hs_env_init(&env, &cfg, need_sessiond, need_tickets) != 0)
        goto fail;
    printf("handshake benchmark: %ld handshakes per case (+%ld warm-up, at most %.0f s) in %ld "
           "interleaved rounds; RSA-2048 certificate, servers A/B share it and the session-ID "
           "context\n",
           cfg.handshakes, cfg.warmup, cfg.max_seconds, cfg.rounds);
    printf("placement (--pin %s): %s\n", hs_pin_names[cfg.pin],
           cfg.pin == HS_PIN_NONE   ? "the scheduler decides"
           : cfg.pin == HS_PIN_SAME ? "this thread and sessiond on CPU 0"
                                    : "this thread on CPU 0, sessiond on CPU 1");
    if (need_sessiond)
        printf("libsessionc wire (--wire %s): %s\n", hs_wire_names[cfg.wire],
               cfg.wire == HS_WIRE_V2       ? "v2, plaintext (the library's default)"
               : cfg.wire == HS_WIRE_SEALED ? "v2 sealed with a cluster key (AES-256-GCM)"
                                            : "v1 (stunnel's format)");
    hs_clock_ns = (int64_t)hs_clock_cost_ns();
    printf("server CPU: CLOCK_THREAD_CPUTIME_ID around each server SSL_do_handshake call "
           "(one reading costs %" PRId64 " ns)\n",
           hs_clock_ns);
    if (env.daemon_up) {
        hs_dist floor;

        if (hs_udp_floor(&env.daemon, HS_FLOOR_COUNT, &floor) != 0)
            goto fail;
        printf("UDP floor: a bare v1 GET round trip to sessiond (send + blocking recv, 140-byte "
               "value, %d us apart) costs this thread mean %.1f p50 %.1f p99 %.1f us of CPU\n",
               HS_FLOOR_GAP_NS / 1000, floor.mean_us, floor.p50_us, floor.p99_us);
        printf("floor mean_us=%.2f p50_us=%.2f p99_us=%.2f\n", floor.mean_us, floor.p50_us,
               floor.p99_us);
    }
    if (csv != NULL)
        hs_print_csv_header(csv);

    for (int vi = 0; vi < 2; vi++)
        for (size_t i = 0; i < HS_NCASES; i++) {
            if (cfg.versions[vi] == 0 || !cfg.selected[i])
                continue;
            opened[vi][i] = 1;
            if (hs_case_open(&runs[vi][i], &cfg, &env, &hs_cases[i], cfg.versions[vi]) != 0)
                goto fail;
        }
    /* Rounds: every case gets a slice of its handshakes per round, so a
     * neighbour's burst of load lands on all of them alike, and the ratios
     * compare handshakes made seconds apart, not a minute apart. */
    for (long r = 0; r < cfg.rounds; r++) {
        long slice = cfg.handshakes / cfg.rounds + (r < cfg.handshakes % cfg.rounds);

        for (int vi = 0; vi < 2; vi++)
            for (size_t i = 0; i < HS_NCASES; i++)
                if (opened[vi][i] &&
                    hs_case_slice(&runs[vi][i], &cfg, &env, slice + (r == 0 ? cfg.warmup : 0)) != 0)
                    goto fail;
    }
    for (int vi = 0; vi < 2; vi++) {
        const hs_result *baseline = NULL;

        if (cfg.versions[vi] == 0)
            continue;
        for (size_t i = 0; i < HS_NCASES; i++)
            if (opened[vi][i]) {
                opened[vi][i] = 0;
                hs_case_close(&runs[vi][i]);
            }
        if (cfg.selected[HS_BASELINE_CASE])
            baseline = &runs[vi][HS_BASELINE_CASE].res;
        printf("\n== TLS %s\n", hs_version_name(cfg.versions[vi]));
        hs_print_header();
        for (size_t i = 0; i < HS_NCASES; i++)
            if (cfg.selected[i])
                hs_print_row(&runs[vi][i].res, baseline);
        printf("negotiated (full handshakes): %s\n", env.cipher[vi]);
        for (size_t i = 0; i < HS_NCASES; i++) {
            if (!cfg.selected[i])
                continue;
            printf("result");
            hs_print_fields(stdout, &runs[vi][i].res, 1);
            if (csv != NULL)
                hs_print_fields(csv, &runs[vi][i].res, 0);
        }
        hs_print_target(baseline,
                        cfg.selected[HS_SESSIOND_CASE] ? &runs[vi][HS_SESSIOND_CASE].res : NULL);
        if (cfg.selected[HS_NOSTORE_CASE])
            hs_print_target(baseline, &runs[vi][HS_NOSTORE_CASE].res);
    }
    printf("\n* (d) ticket keys set by hand with SSL_CTX_set_tlsext_ticket_keys; \"sessiond ticket "
           "keys\" gets them from sessiond's ring (sc_attach_ticket_keys).\n");
    rc = 0;

fail:
    for (int vi = 0; vi < 2; vi++)
        for (size_t i = 0; i < HS_NCASES; i++)
            if (opened[vi][i])
                hs_case_close(&runs[vi][i]);
    hs_env_free(&env);
    if (csv != NULL && fclose(csv) != 0) {
        fprintf(stderr, "handshake: %s: write failed\n", cfg.csv_path);
        rc = 1;
    }
    return rc;
}
