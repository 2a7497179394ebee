/* check_tickets.c — libsessionc's atomic operations and shared session-ticket
 * keys against real sessiond processes on loopback, with real OpenSSL
 * handshakes.
 *
 * What is covered:
 * - sc_take and sc_add (v2 TAKE/ADD): take returns a value once, add stores
 *   once and then says EXISTS, a short buffer, argument and v1 refusals,
 *   counters; 8 threads taking one ID at once: exactly one gets it;
 * - sc_fetch_ticket_ring (v2 KEYS): refused without a key (no datagram),
 *   UNAVAILABLE from a daemon without --ticket-keys, a ring that decodes
 *   with the daemon's rotate and lifetime and a current and a next key, a
 *   short buffer, and the walk past a dead server to a live one;
 * - the ring in the client: in a mapping excluded from core dumps
 *   (MADV_DONTDUMP, seen in /proc/self/smaps), gone after sc_client_free;
 * - sc_attach_ticket_keys with two TLS servers (two SSL_CTXs, stateless
 *   tickets, OpenSSL's internal cache off, each with its own sc_client):
 *   TLS 1.2 and TLS 1.3 tickets issued by A resume on B, 100 reconnections
 *   alternating, all resumed, against one sessiond and against two
 *   sessiond nodes that share a Redis (each server asks its own node);
 * - rotation (--ticket-rotate 2 --ticket-lifetime 6): once the key that
 *   sealed a ticket has stopped encrypting, the ticket still resumes and
 *   comes back re-issued under the new key (the first 16 bytes of a ticket
 *   are its key name); once the lifetime has passed too it no longer
 *   resumes (a full handshake, counted as an unknown key);
 * - an SNI callback that switches to an SSL_CTX without ticket keys: the
 *   tickets are still sealed with the cluster's keys (OpenSSL uses the
 *   SSL_CTX the SSL was made from);
 * - the daemon stopped: handshakes go on, tickets sealed before still
 *   resume, tickets are issued until the last key of the last ring stops
 *   encrypting and not after (tickets_no_key grows, refreshes fail).
 *
 * Waiting: on conditions, bounded. Rotation is waited for by polling the
 * daemon's ring until its current key changes (or a key leaves it), and
 * the end of a ring by polling the wall clock past the ring's own times;
 * the polls pause briefly between rounds, which is pacing, not
 * synchronisation.
 */
#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "checks.h"
#include "cluster.h"
#include "harness.h"
#include "proto.h"
#include "sessionc.h"
#include "ticket_ring.h"
#include "tls_util.h"
#include "v2ops.h"

#define LIVE_TIMEOUT_MS 1000
#define ROTATE_S        2
#define LIFETIME_S      6
#define ROUNDS          100

static tu_cred g_cred;

static void tls_setup(void)
{
    ck_assert_int_eq(tu_cred_make(&g_cred, TU_KEY_EC, TU_ROLE_SERVER, "localhost", NULL), 0);
}

static void tls_teardown(void)
{
    tu_cred_free(&g_cred);
}

/* A fresh directory with a random cluster key file in it. */
static void make_key_dir(char *dir, size_t dir_cap, char *key_path, size_t key_cap)
{
    uint8_t key[PROTO_V2_CLUSTER_KEY_LEN];

    ck_assert_int_eq(th_tmpdir(dir, dir_cap), 0);
    snprintf(key_path, key_cap, "%s/cluster.key", dir);
    ck_assert_int_eq(RAND_bytes(key, sizeof(key)), 1);
    v2t_write_key_file(key_path, key, 0600);
    OPENSSL_cleanse(key, sizeof(key));
}

static sc_client *make_client(const char *servers, const char *key_file, int protocol,
                              unsigned timeout_ms)
{
    sc_options opt;
    char err[256];
    sc_client *c;

    sc_options_init(&opt);
    opt.key_file = key_file;
    opt.protocol = (unsigned)protocol;
    opt.timeout_ms = timeout_ms;
    c = sc_client_new(servers, &opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "sc_client_new(%s): %s", servers, err);
    return c;
}

static sc_client *client_of(const th_daemon *d, const char *key_file)
{
    char servers[64];

    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d->port);
    return make_client(servers, key_file, 2, LIVE_TIMEOUT_MS);
}

/* Starts sessiond with the key and ticket keys rotating every ROTATE_S,
 * and waits until it has a ring. */
static void start_ticket_daemon(th_daemon *d, const char *key_file)
{
    char rotate[16], lifetime[16];
    const char *args[] = {"--key-file",      key_file, "--ticket-keys",
                          "--ticket-rotate", rotate,   "--ticket-lifetime",
                          lifetime,          NULL};

    snprintf(rotate, sizeof(rotate), "%d", ROTATE_S);
    snprintf(lifetime, sizeof(lifetime), "%d", LIFETIME_S);
    tc_start(d, args);
    ck_assert_msg(th_daemon_wait_log(d, "ticket keys ready", 0, 10000) == 0,
                  "no \"ticket keys ready\" in: %s", d->log);
}

/* Pacing between polls of a condition. */
static void pause_ms(int ms)
{
    poll(NULL, 0, ms);
}

/* sc_fetch_ticket_ring from a daemon that has ticket keys, asked again
 * while it answers UNAVAILABLE: right after each rotation the daemon has
 * no next key until its next tick (every 100 ms) draws one. Bounded. */
static sc_result fetch_ready(sc_client *c, size_t server, uint8_t *buf, size_t cap, size_t *len)
{
    int64_t deadline = th_now_ms() + 3000;
    sc_result r;

    while ((r = sc_fetch_ticket_ring(c, server, buf, cap, len)) == SC_UNAVAILABLE &&
           th_now_ms() < deadline)
        pause_ms(20);
    return r;
}

/* Fetches and decodes the ring (fails the test otherwise). */
static void fetch_ring(sc_client *c, ticket_ring *ring)
{
    static uint8_t buf[TICKET_RING_MAX_LEN];
    size_t len = 0;
    sc_result r = fetch_ready(c, SIZE_MAX, buf, sizeof(buf), &len);

    ck_assert_msg(r == SC_OK, "fetch: %s", sc_result_name(r));
    ck_assert_int_eq(ticket_ring_decode(buf, len, ring), PROTO_OK);
    OPENSSL_cleanse(buf, len);
}

static uint64_t now_s(void)
{
    return (uint64_t)time(NULL);
}

/* The key name of a session's ticket (its first 16 bytes). */
static void ticket_name(const SSL_SESSION *sess, uint8_t name[TICKET_NAME_LEN])
{
    const unsigned char *tick = NULL;
    size_t len = 0;

    ck_assert_msg(SSL_SESSION_has_ticket(sess), "the session carries no ticket");
    SSL_SESSION_get0_ticket(sess, &tick, &len);
    ck_assert_uint_gt(len, TICKET_NAME_LEN);
    memcpy(name, tick, TICKET_NAME_LEN);
}

/* --- take and add --- */

typedef struct taker {
    sc_client *client;
    pthread_barrier_t *start;
    const uint8_t *id;
    sc_result result;
} taker;

static void *taker_run(void *arg)
{
    taker *t = arg;
    uint8_t buf[64];
    size_t len;

    pthread_barrier_wait(t->start);
    t->result = sc_take(t->client, t->id, 8, buf, sizeof(buf), &len);
    return NULL;
}

START_TEST(test_take_add)
{
    char dir[256], key[300], servers[64], err[256];
    const char *args[] = {"--key-file", key, NULL};
    const uint8_t id[] = "take-me", id2[] = "add-me", id3[] = "too-big", race[] = "racer-id";
    uint8_t value[100], other[100], buf[256];
    size_t len = 0;
    sc_client *c, *v1;
    sc_options opt;
    sc_stats st;
    th_daemon d;

    make_key_dir(dir, sizeof(dir), key, sizeof(key));
    tc_start(&d, args);
    c = client_of(&d, key);
    tc_fill_value(value, sizeof(value), 1);
    tc_fill_value(other, sizeof(other), 2);

    /* Take: the value once, then gone for everyone. */
    ck_assert_int_eq(sc_take(c, id, 7, buf, sizeof(buf), &len), SC_NOT_FOUND);
    ck_assert_int_eq(sc_put_wait(c, id, 7, value, sizeof(value), 60), SC_OK);
    ck_assert_int_eq(sc_take(c, id, 7, buf, sizeof(buf), &len), SC_OK);
    ck_assert_uint_eq(len, sizeof(value));
    ck_assert_mem_eq(buf, value, sizeof(value));
    ck_assert_int_eq(sc_take(c, id, 7, buf, sizeof(buf), &len), SC_NOT_FOUND);
    ck_assert_int_eq(sc_get(c, id, 7, buf, sizeof(buf), &len), SC_NOT_FOUND);

    /* Add: stores once; a second add leaves the first value alone. */
    ck_assert_int_eq(sc_add(c, id2, 6, value, sizeof(value), 60), SC_OK);
    ck_assert_int_eq(sc_add(c, id2, 6, other, sizeof(other), 60), SC_EXISTS);
    ck_assert_int_eq(sc_get(c, id2, 6, buf, sizeof(buf), &len), SC_OK);
    ck_assert_mem_eq(buf, value, sizeof(value));
    ck_assert_str_eq(sc_result_name(SC_EXISTS), "exists");
    ck_assert_str_eq(sc_result_name(SC_UNAVAILABLE), "unavailable");

    /* A take into a short buffer: the size needed is told, and the entry
     * is gone all the same (the daemon deleted it when it answered). */
    ck_assert_int_eq(sc_put_wait(c, id3, 7, value, sizeof(value), 60), SC_OK);
    ck_assert_int_eq(sc_take(c, id3, 7, buf, 10, &len), SC_ERR_TOO_LARGE);
    ck_assert_uint_eq(len, sizeof(value));
    ck_assert_int_eq(sc_get(c, id3, 7, buf, sizeof(buf), &len), SC_NOT_FOUND);

    /* Bad arguments. */
    ck_assert_int_eq(sc_add(c, id2, 6, NULL, 0, 60), SC_ERR_ARG);
    ck_assert_int_eq(sc_add(c, NULL, 0, value, 1, 60), SC_ERR_ARG);
    ck_assert_int_eq(sc_take(c, id, 7, buf, sizeof(buf), NULL), SC_ERR_ARG);
    ck_assert_int_eq(sc_take(NULL, id, 7, buf, sizeof(buf), &len), SC_ERR_ARG);

    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.takes, 4);
    ck_assert_uint_eq(st.lookups, 7); /* 4 takes and 3 gets */
    ck_assert_uint_eq(st.hits, 3);
    ck_assert_uint_eq(st.timeouts + st.errors + st.auth_failures, 0);
    ck_assert_int_eq(tc_stat_of(&d, "takes"), 4);

    /* 8 threads take one ID at the same moment, 20 times: one winner each time. */
    for (int round = 0; round < 20; round++) {
        pthread_barrier_t start;
        pthread_t th[8];
        taker tk[8];
        int winners = 0;

        ck_assert_int_eq(sc_put_wait(c, race, 8, value, 10, 60), SC_OK);
        pthread_barrier_init(&start, NULL, 8);
        for (int i = 0; i < 8; i++) {
            tk[i] = (taker){.client = c, .start = &start, .id = race, .result = SC_ERR_SYSTEM};
            ck_assert_int_eq(pthread_create(&th[i], NULL, taker_run, &tk[i]), 0);
        }
        for (int i = 0; i < 8; i++) {
            pthread_join(th[i], NULL);
            ck_assert_msg(tk[i].result == SC_OK || tk[i].result == SC_NOT_FOUND, "take: %s",
                          sc_result_name(tk[i].result));
            winners += tk[i].result == SC_OK;
        }
        pthread_barrier_destroy(&start);
        ck_assert_int_eq(winners, 1);
    }

    /* v1 has neither; anti-replay needs them, so it needs v2. */
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    v1 = make_client(servers, NULL, 1, LIVE_TIMEOUT_MS);
    ck_assert_int_eq(sc_take(v1, id, 7, buf, sizeof(buf), &len), SC_ERR_ARG);
    ck_assert_int_eq(sc_add(v1, id, 7, value, 1, 60), SC_ERR_ARG);
    sc_client_free(v1);
    sc_options_init(&opt);
    ck_assert_int_eq(opt.anti_replay, 0);
    ck_assert_uint_eq(opt.ticket_refresh_ms, 0);
    opt.protocol = 1;
    opt.anti_replay = 1;
    ck_assert_ptr_null(sc_client_new(servers, &opt, err, sizeof(err)));
    ck_assert_msg(strstr(err, "anti_replay") != NULL && strchr(err, '\n') == NULL, "%s", err);

    sc_client_free(c);
    tc_stop_ok(&d);
    th_rmtree(dir);
}
END_TEST

/* --- fetching the ring --- */

START_TEST(test_fetch_ring)
{
    char dir[256], key[300], servers[128];
    const char *args[] = {"--key-file", key, NULL};
    static uint8_t buf[TICKET_RING_MAX_LEN];
    size_t len = 0, needed;
    th_daemon plain, keyed;
    sc_client *c, *nokey, *walk;
    ticket_ring *ring = calloc(1, sizeof(*ring));
    const ticket_key *cur;
    int has_next = 0;
    sc_stats st;

    ck_assert_ptr_nonnull(ring);
    make_key_dir(dir, sizeof(dir), key, sizeof(key));

    /* No ticket keys configured: the daemon says so. */
    tc_start(&plain, args);
    c = client_of(&plain, key);
    ck_assert_int_eq(sc_fetch_ticket_ring(c, SIZE_MAX, buf, sizeof(buf), &len), SC_UNAVAILABLE);
    ck_assert_int_eq(sc_fetch_ticket_ring(c, 0, buf, sizeof(buf), &len), SC_UNAVAILABLE);
    ck_assert_int_eq(sc_fetch_ticket_ring(c, 1, buf, sizeof(buf), &len), SC_ERR_ARG);
    ck_assert_int_eq(sc_fetch_ticket_ring(c, 0, buf, sizeof(buf), NULL), SC_ERR_ARG);
    sc_client_free(c);

    /* No key, no question asked: keys never travel in plaintext. */
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", plain.port);
    nokey = make_client(servers, NULL, 2, LIVE_TIMEOUT_MS);
    ck_assert_int_eq(sc_fetch_ticket_ring(nokey, SIZE_MAX, buf, sizeof(buf), &len), SC_ERR_ARG);
    ck_assert_int_eq(sc_attach_ticket_keys(nokey, NULL), -1);
    sc_client_free(nokey);
    ck_assert_int_eq(tc_stat_of(&plain, "datagrams"), 2); /* the keyless client sent nothing */
    tc_stop_ok(&plain);

    start_ticket_daemon(&keyed, key);
    c = client_of(&keyed, key);
    ck_assert_int_eq(fetch_ready(c, 0, buf, sizeof(buf), &len), SC_OK);
    ck_assert_int_eq(ticket_ring_decode(buf, len, ring), PROTO_OK);
    ck_assert_uint_eq(ring->rotate_s, ROTATE_S);
    ck_assert_uint_eq(ring->lifetime_s, LIFETIME_S);
    ck_assert_uint_ge(ring->n_keys, 2);
    cur = ticket_ring_current(ring, now_s());
    ck_assert_ptr_nonnull(cur);
    for (size_t i = 0; i < ring->n_keys; i++)
        has_next |= ticket_key_state_at(ring, &ring->keys[i], now_s()) == TICKET_KEY_NEXT;
    ck_assert_msg(has_next, "no next key published");
    needed = len;
    ck_assert_int_eq(fetch_ready(c, 0, buf, 10, &len), SC_ERR_TOO_LARGE);
    ck_assert_uint_eq(len, needed);
    sc_client_free(c);

    /* The first server refuses (nobody listens): the fetch moves on. */
    snprintf(servers, sizeof(servers), "127.0.0.1:%d,127.0.0.1:%d", th_free_udp_port(), keyed.port);
    walk = make_client(servers, key, 2, LIVE_TIMEOUT_MS);
    ck_assert_int_eq(fetch_ready(walk, SIZE_MAX, buf, sizeof(buf), &len), SC_OK);
    ck_assert_int_eq(ticket_ring_decode(buf, len, ring), PROTO_OK);
    sc_get_stats(walk, &st);
    ck_assert_uint_ge(st.errors, 1);
    sc_client_free(walk);

    OPENSSL_cleanse(buf, sizeof(buf));
    OPENSSL_cleanse(ring, sizeof(*ring));
    free(ring);
    tc_stop_ok(&keyed);
    th_rmtree(dir);
}
END_TEST

/* The mappings of this process excluded from core dumps ("dd" in their
 * /proc/self/smaps VmFlags), by address range, and whether each is locked
 * ("lo"). Other code makes such mappings too (AddressSanitizer does), so
 * the test compares sets, not counts. */
#define MAX_MAPS 4096

typedef struct dd_maps {
    char range[MAX_MAPS][40];
    int locked[MAX_MAPS];
    int n;
} dd_maps;

static void read_dd_maps(dd_maps *m)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512], range[40] = "";

    ck_assert_ptr_nonnull(f);
    m->n = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, "VmFlags:", 8) == 0) {
            if (strstr(line, " dd") != NULL && m->n < MAX_MAPS) {
                snprintf(m->range[m->n], sizeof(m->range[0]), "%s", range);
                m->locked[m->n++] = strstr(line, " lo") != NULL;
            }
        } else if (strchr(line, '-') != NULL && strchr(line, '-') < strchr(line, ' ')) {
            sscanf(line, "%39s", range); /* a mapping's first line: "start-end perms ..." */
        }
    }
    fclose(f);
}

/* Whether a range "start-end" is the size of a ring snapshot: a
 * ticket_ring and a few words, rounded up to pages. */
static int ring_sized(const char *range)
{
    unsigned long start = 0, end = 0;
    long page = sysconf(_SC_PAGESIZE);

    if (sscanf(range, "%lx-%lx", &start, &end) != 2 || end <= start)
        return 0;
    return end - start >= sizeof(ticket_ring) &&
           end - start < sizeof(ticket_ring) + 2 * (unsigned long)page;
}

static int dd_has(const dd_maps *m, const char *range)
{
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->range[i], range) == 0)
            return 1;
    return 0;
}

/* The ring a client holds sits in its own mapping, excluded from core
 * dumps (and locked, where RLIMIT_MEMLOCK allows), and that mapping is
 * gone once the client is freed (wiped first: sc_snap_destroy). */
START_TEST(test_ring_memory)
{
    char dir[256], key[300], ring_range[40] = "";
    static dd_maps before, with, after;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    int fresh = 0, locked = 0;
    th_daemon d;
    sc_client *c;
    sc_stats st;

    ck_assert_ptr_nonnull(ctx);
    make_key_dir(dir, sizeof(dir), key, sizeof(key));
    start_ticket_daemon(&d, key);
    c = client_of(&d, key);
    read_dd_maps(&before);
    ck_assert_int_eq(sc_attach_ticket_keys(c, ctx), 0);
    sc_get_stats(c, &st);
    ck_assert_uint_eq(st.ring_refreshes, 1);
    read_dd_maps(&with);
    for (int i = 0; i < with.n; i++)
        if (!dd_has(&before, with.range[i]) && ring_sized(with.range[i])) {
            fresh++;
            locked = with.locked[i];
            snprintf(ring_range, sizeof(ring_range), "%s", with.range[i]);
        }
    ck_assert_int_eq(fresh, 1);
    fprintf(stderr, "check_tickets: ring mapping %s excluded from core dumps; locked: %s\n",
            ring_range, locked ? "yes" : "no (RLIMIT_MEMLOCK, or a sanitizer)");
    ck_assert_int_eq(sc_detach(ctx), 0);
    ck_assert_int_eq(sc_detach(ctx), -1);
    SSL_CTX_free(ctx);
    sc_client_free(c);
    read_dd_maps(&after);
    ck_assert_msg(!dd_has(&after, ring_range), "mapping %s outlived the client", ring_range);
    tc_stop_ok(&d);
    th_rmtree(dir);
}
END_TEST

/* --- two TLS servers sharing ticket keys --- */

typedef struct pair {
    SSL_CTX *ctx[2];
    sc_client *sc[2];
    SSL_CTX *client_ctx;
} pair;

/* Both servers hold a ring (their first fetch may meet the daemon between
 * two rotation steps; the refresh thread then retries within a second). */
static void pair_wait_rings(pair *p)
{
    int64_t deadline = th_now_ms() + 3000;

    for (int i = 0; i < 2; i++) {
        sc_stats st;

        for (;;) {
            sc_get_stats(p->sc[i], &st);
            if (st.ring_refreshes >= 1)
                break;
            ck_assert_msg(th_now_ms() < deadline, "server %d has no ring", i);
            pause_ms(20);
        }
    }
}

/* Server SSL_CTXs with stateless tickets and no internal cache, so a
 * resumption can only come from a ticket one of them decrypted. */
static void pair_open(pair *p, int version, const char *servers_a, const char *servers_b,
                      const char *key_file)
{
    tu_server_opts o = {.version = version, .no_ticket = 0, .no_internal_cache = 1};
    const char *servers[2] = {servers_a, servers_b};

    for (int i = 0; i < 2; i++) {
        p->ctx[i] = tu_server_ctx(&g_cred, &o);
        ck_assert_ptr_nonnull(p->ctx[i]);
        p->sc[i] = make_client(servers[i], key_file, 2, LIVE_TIMEOUT_MS);
        ck_assert_int_eq(sc_attach_ticket_keys(p->sc[i], p->ctx[i]), 0);
    }
    p->client_ctx = tu_client_ctx(version, NULL);
    ck_assert_ptr_nonnull(p->client_ctx);
    pair_wait_rings(p);
}

static void pair_close(pair *p)
{
    SSL_CTX_free(p->client_ctx);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(sc_detach(p->ctx[i]), 0);
        SSL_CTX_free(p->ctx[i]);
        sc_client_free(p->sc[i]);
    }
}

static void handshake(const pair *p, int server, SSL_SESSION *offer, tu_hs_result *r)
{
    ck_assert_msg(tu_handshake(p->client_ctx, p->ctx[server], offer, r) == 0, "handshake: %s",
                  r->error);
}

static int version_of(int i)
{
    return (i & 1) ? TLS1_3_VERSION : TLS1_2_VERSION;
}

/* A's tickets on B and back, ROUNDS times; the pair is open. */
static void alternate(pair *p, const char *label)
{
    SSL_SESSION *sess;
    tu_hs_result r;
    int resumed = 0;
    sc_stats st[2];

    handshake(p, 0, NULL, &r);
    ck_assert(!r.resumed);
    ck_assert(SSL_SESSION_has_ticket(r.session));
    sess = r.session;
    r.session = NULL;
    for (int k = 0; k < ROUNDS; k++) {
        handshake(p, (k + 1) % 2, sess, &r);
        resumed += r.resumed && r.server_resumed;
        SSL_SESSION_free(sess);
        sess = r.session; /* the newest ticket (TLS 1.2 keeps the one offered) */
        r.session = NULL;
    }
    SSL_SESSION_free(sess);
    ck_assert_int_eq(resumed, ROUNDS);
    for (int i = 0; i < 2; i++) {
        sc_get_stats(p->sc[i], &st[i]);
        ck_assert_uint_ge(st[i].ring_refreshes, 1);
        ck_assert_uint_eq(st[i].tickets_unknown + st[i].tickets_no_key, 0);
        ck_assert_uint_eq(st[i].tickets_current + st[i].tickets_old + st[i].tickets_next,
                          ROUNDS / 2);
    }
    ck_assert_uint_ge(st[0].tickets_issued, 1);
    fprintf(stderr, "check_tickets: %s: %d/%d resumed across servers; A issued %llu, B %llu\n",
            label, resumed, ROUNDS, (unsigned long long)st[0].tickets_issued,
            (unsigned long long)st[1].tickets_issued);
}

/* _i: bit 0 TLS 1.3, bit 1 two sessiond nodes sharing a Redis. */
START_TEST(test_resume_across)
{
    int version = version_of(_i);
    char servers_a[64], servers_b[64];
    pair p;

    if ((_i & 2) == 0) {
        char dir[256], key[300];
        th_daemon d;

        make_key_dir(dir, sizeof(dir), key, sizeof(key));
        start_ticket_daemon(&d, key);
        snprintf(servers_a, sizeof(servers_a), "127.0.0.1:%d", d.port);
        pair_open(&p, version, servers_a, servers_a, key);
        alternate(&p, version == TLS1_3_VERSION ? "TLS 1.3, one node" : "TLS 1.2, one node");
        pair_close(&p);
        tc_stop_ok(&d);
        th_rmtree(dir);
    } else {
        char rotate[16], lifetime[16];
        const char *extra[] = {"--ticket-keys",     "--ticket-rotate", rotate,
                               "--ticket-lifetime", lifetime,          NULL};
        cl_bed b;

        snprintf(rotate, sizeof(rotate), "%d", ROTATE_S);
        snprintf(lifetime, sizeof(lifetime), "%d", LIFETIME_S);
        cl_open(&b);
        ck_assert_int_eq(rp_redis_start(&b.redis[0], NULL, 0), 0);
        cl_use_redis(&b, b.redis[0].port);
        cl_node_start(&b, 0, extra);
        cl_node_start(&b, 1, extra);
        for (int i = 0; i < 2; i++)
            ck_assert_msg(cl_node_wait_log(&b, i, "ticket keys ready", 10000) == 0,
                          "node %d has no ring", i);
        cl_servers(&b, CL_NODE1, servers_a, sizeof(servers_a));
        cl_servers(&b, CL_NODE2, servers_b, sizeof(servers_b));
        pair_open(&p, version, servers_a, servers_b, b.key_file);
        alternate(&p, version == TLS1_3_VERSION ? "TLS 1.3, two nodes + Redis"
                                                : "TLS 1.2, two nodes + Redis");
        pair_close(&p);
        cl_close(&b);
    }
}
END_TEST

/* Polls the daemon's ring (through c) until `done` holds, up to timeout_s. */
typedef int (*ring_pred)(const ticket_ring *ring, const uint8_t *name, uint64_t now);

static int key_not_current(const ticket_ring *ring, const uint8_t *name, uint64_t now)
{
    const ticket_key *cur = ticket_ring_current(ring, now);

    return cur != NULL && memcmp(cur->name, name, TICKET_NAME_LEN) != 0;
}

static int key_gone(const ticket_ring *ring, const uint8_t *name, uint64_t now)
{
    return ticket_ring_find(ring, name, now) == NULL;
}

static void wait_ring(sc_client *c, ticket_ring *ring, ring_pred done, const uint8_t *name,
                      int timeout_s)
{
    int64_t deadline = th_now_ms() + (int64_t)timeout_s * 1000;

    for (;;) {
        fetch_ring(c, ring);
        if (done(ring, name, now_s()))
            return;
        ck_assert_msg(th_now_ms() < deadline, "the ring did not change within %d s", timeout_s);
        pause_ms(100);
    }
}

/* Rotation: a ticket of the previous key resumes and is re-issued under the
 * new one; after the lifetime it is a full handshake. _i: bit 0 TLS 1.3. */
START_TEST(test_rotation)
{
    char dir[256], key[300], servers[64];
    uint8_t name0[TICKET_NAME_LEN], name1[TICKET_NAME_LEN];
    ticket_ring *ring = calloc(1, sizeof(*ring));
    SSL_SESSION *old, *spare;
    tu_hs_result r;
    sc_stats st;
    th_daemon d;
    pair p;

    ck_assert_ptr_nonnull(ring);
    make_key_dir(dir, sizeof(dir), key, sizeof(key));
    start_ticket_daemon(&d, key);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    pair_open(&p, version_of(_i), servers, servers, key);

    handshake(&p, 0, NULL, &r);
    old = r.session;
    r.session = NULL;
    ticket_name(old, name0);
    /* OpenSSL's client marks a TLS 1.3 session not resumable once used:
     * a copy, never offered before, for the expiry check. */
    spare = SSL_SESSION_dup(old);
    ck_assert_ptr_nonnull(spare);
    wait_ring(p.sc[1], ring, key_not_current, name0, 3 * ROTATE_S);

    handshake(&p, 1, old, &r);
    ck_assert_msg(r.resumed && r.server_resumed, "a ticket of the previous key did not resume");
    ticket_name(r.session, name1);
    ck_assert_msg(memcmp(name1, name0, TICKET_NAME_LEN) != 0, "the ticket was not re-issued");
    ck_assert_ptr_nonnull(ticket_ring_find(ring, name1, now_s()));
    tu_hs_result_clear(&r);
    sc_get_stats(p.sc[1], &st);
    ck_assert_uint_eq(st.tickets_old, 1);
    ck_assert_uint_eq(st.tickets_renewed, 1);
    ck_assert_uint_ge(st.tickets_issued, 1);

    /* Past not_after + lifetime the key is gone: a full handshake. */
    wait_ring(p.sc[1], ring, key_gone, name0, 2 * ROTATE_S + LIFETIME_S + 3);
    handshake(&p, 1, spare, &r);
    ck_assert_msg(!r.resumed && !r.server_resumed, "an expired ticket resumed");
    tu_hs_result_clear(&r);
    sc_get_stats(p.sc[1], &st);
    ck_assert_uint_eq(st.tickets_unknown, 1);

    SSL_SESSION_free(old);
    SSL_SESSION_free(spare);
    pair_close(&p);
    free(ring);
    tc_stop_ok(&d);
    th_rmtree(dir);
}
END_TEST

/* An SNI callback switching to an SSL_CTX without ticket keys: tickets are
 * still the cluster's (OpenSSL calls the ticket callback of the SSL_CTX the
 * SSL was created from, and the SSL remembers the client). */
static int switch_ctx_cb(SSL *ssl, int *alert, void *arg)
{
    (void)alert;
    SSL_set_SSL_CTX(ssl, arg);
    return SSL_TLSEXT_ERR_OK;
}

START_TEST(test_sni_switch)
{
    char dir[256], key[300], servers[64];
    tu_server_opts o = {.version = TLS1_3_VERSION, .no_internal_cache = 1};
    SSL_CTX *other;
    tu_hs_result r;
    th_daemon d;
    SSL_SESSION *sess;
    sc_stats st;
    pair p;

    make_key_dir(dir, sizeof(dir), key, sizeof(key));
    start_ticket_daemon(&d, key);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    pair_open(&p, TLS1_3_VERSION, servers, servers, key);
    other = tu_server_ctx(&g_cred, &o);
    ck_assert_ptr_nonnull(other);
    SSL_CTX_set_tlsext_servername_callback(p.ctx[0], switch_ctx_cb);
    SSL_CTX_set_tlsext_servername_arg(p.ctx[0], other);

    handshake(&p, 0, NULL, &r); /* the client sends no SNI: tu_client_ctx sets none */
    sess = r.session;
    r.session = NULL;
    handshake(&p, 1, sess, &r);
    ck_assert(r.resumed);
    tu_hs_result_clear(&r);
    SSL_SESSION_free(sess);
    sc_get_stats(p.sc[0], &st);
    ck_assert_uint_ge(st.tickets_issued, 1);

    pair_close(&p);
    SSL_CTX_free(other);
    tc_stop_ok(&d);
    th_rmtree(dir);
}
END_TEST

/* The daemon stopped: handshakes go on; tickets until the last key of the
 * last ring stops encrypting, none after. _i: bit 0 TLS 1.3. */
START_TEST(test_daemon_down)
{
    char dir[256], key[300], servers[64];
    ticket_ring *ring = calloc(1, sizeof(*ring));
    uint64_t end = 0;
    int64_t deadline;
    SSL_SESSION *sealed;
    tu_hs_result r;
    sc_stats before, after;
    th_daemon d;
    pair p;

    ck_assert_ptr_nonnull(ring);
    make_key_dir(dir, sizeof(dir), key, sizeof(key));
    start_ticket_daemon(&d, key);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", d.port);
    pair_open(&p, version_of(_i), servers, servers, key);
    handshake(&p, 0, NULL, &r);
    sealed = r.session;
    r.session = NULL;

    /* The daemon is stopped at a moment when the servers' ring is known to
     * be the one fetched here: early in a key's period (the daemon draws
     * the next key right after a key starts encrypting, and nothing
     * changes the end of its ring until the next start), and after both
     * servers have refreshed. That ring's last not_after is when tickets
     * must stop. */
    for (int attempt = 0;; attempt++) {
        const ticket_key *cur;
        uint64_t now_ms, from_ms, to_ms;
        sc_stats s0, s1, t0, t1;
        int64_t refresh_deadline;

        ck_assert_msg(attempt < 200, "no quiet moment to stop the daemon");
        fetch_ring(p.sc[1], ring);
        cur = ticket_ring_current(ring, now_s());
        ck_assert_ptr_nonnull(cur);
        now_ms = tc_wall_ms();
        from_ms = cur->not_before * 1000;
        to_ms = cur->not_after * 1000;
        if (now_ms < from_ms + 300 || now_ms + 1500 > to_ms) {
            pause_ms(50);
            continue;
        }
        sc_get_stats(p.sc[0], &s0);
        sc_get_stats(p.sc[1], &s1);
        refresh_deadline = th_now_ms() + 2000;
        do {
            pause_ms(20);
            sc_get_stats(p.sc[0], &t0);
            sc_get_stats(p.sc[1], &t1);
        } while (
            (t0.ring_refreshes == s0.ring_refreshes || t1.ring_refreshes == s1.ring_refreshes) &&
            th_now_ms() < refresh_deadline);
        if (t0.ring_refreshes > s0.ring_refreshes && t1.ring_refreshes > s1.ring_refreshes &&
            tc_wall_ms() + 100 < to_ms)
            break;
    }
    for (size_t i = 0; i < ring->n_keys; i++)
        if (ring->keys[i].not_after > end)
            end = ring->keys[i].not_after;
    tc_stop_ok(&d);

    /* Without the daemon a ticket sealed before still resumes. */
    handshake(&p, 1, sealed, &r);
    ck_assert(r.resumed);
    tu_hs_result_clear(&r);
    SSL_SESSION_free(sealed);

    /* Full handshakes until the ring has run out: every one succeeds; a
     * ticket comes with each while a key of the ring still encrypts. */
    deadline = th_now_ms() + (int64_t)(end + 3 - now_s()) * 1000;
    for (;;) {
        uint64_t t0 = now_s();

        handshake(&p, 0, NULL, &r);
        if (t0 > end)
            break;
        if (now_s() < end)
            ck_assert_msg(SSL_SESSION_has_ticket(r.session), "no ticket before not_after");
        tu_hs_result_clear(&r);
        ck_assert_msg(th_now_ms() < deadline, "the ring never ran out");
        pause_ms(200);
    }
    ck_assert_msg(!SSL_SESSION_has_ticket(r.session), "a ticket after the ring ran out");
    tu_hs_result_clear(&r);
    sc_get_stats(p.sc[0], &before);
    ck_assert_uint_ge(before.tickets_no_key, 1);
    ck_assert_uint_ge(before.ring_refresh_failures, 1);
    handshake(&p, 0, NULL, &r);
    ck_assert(r.ok && !SSL_SESSION_has_ticket(r.session));
    tu_hs_result_clear(&r);
    sc_get_stats(p.sc[0], &after);
    ck_assert_uint_gt(after.tickets_no_key, before.tickets_no_key);

    pair_close(&p);
    free(ring);
    th_rmtree(dir);
}
END_TEST

static Suite *tickets_suite(void)
{
    Suite *s = suite_create("tickets");
    TCase *tc;

    tc = tcase_create("ops");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_take_add);
    tcase_add_test(tc, test_fetch_ring);
    tcase_add_test(tc, test_ring_memory);
    suite_add_tcase(s, tc);

    tc = tcase_create("tls");
    tcase_set_timeout(tc, 90);
    tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
    tcase_add_loop_test(tc, test_resume_across, 0, 4);
    tcase_add_loop_test(tc, test_rotation, 0, 2);
    tcase_add_test(tc, test_sni_switch);
    tcase_add_loop_test(tc, test_daemon_down, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(tickets_suite());
}
