/* check_antireplay.c — 0-RTT anti-replay across TLS servers (libsessionc's
 * opt.anti_replay) against a real sessiond, with real OpenSSL handshakes.
 *
 * The attack: a client resumes with a ticket and sends early data (0-RTT)
 * to server A; an attacker who recorded the client's first flight
 * (ClientHello + early data) sends the same bytes to server B, or to A
 * again. RFC 8446 section 8 wants such early data accepted at most once.
 *
 * How it is staged: client and servers talk through memory BIOs, so the
 * client's first flight can be recorded byte for byte and fed, unchanged,
 * to a fresh server SSL (the replay). A replayer cannot finish the
 * handshake (it lacks the client's keys), so for a replay the test checks
 * what the server did with the flight: whether it handed the early data
 * to the application (SSL_read_early_data) or rejected it, and that it
 * went on with the handshake (resumed, its own flight written, waiting for
 * the client's Finished) rather than failing. A real second client reusing
 * the same ticket (a copy of the session) shows the handshake completing
 * with the early data rejected.
 *
 * A and B are separate SSL_CTXs with separate sc_clients, as two server
 * processes would be, sharing ticket keys through sessiond. They must be:
 * OpenSSL's own replay protection (SSL_OP_NO_ANTI_REPLAY clear) works per
 * SSL_CTX and only for stateful tickets, so on one SSL_CTX it would hide
 * what the cluster-wide check does.
 *
 * Cases:
 * - stateless tickets (SSL_OP_NO_ANTI_REPLAY set, so OpenSSL issues them,
 *   and OpenSSL itself then checks nothing): with anti_replay the early
 *   data is accepted once on A; the replay is rejected on B and on A, the
 *   ticket still resumes; a second client with the same ticket completes
 *   its handshake on B with the early data rejected; a fresh ticket is
 *   accepted (the record is per ticket). Without anti_replay the replay's
 *   early data is read by B: the hole this closes;
 * - stateful tickets (OpenSSL's default with max_early_data set): A's
 *   ticket used first on B, which takes (PROTO_V2_TAKE) the session from
 *   sessiond; the replay to B finds nothing (a full handshake), the replay
 *   to A finds the session in A's own cache and is stopped by the "seen"
 *   record;
 * - stateful tickets without early data, blocking and event-loop mode:
 *   with anti_replay a ticket resumes once in the cluster (its session is
 *   taken), without it a copy of the ticket resumes again elsewhere;
 * - sessiond stopped: early data is rejected (never accepted unchecked),
 *   the handshake still resumes with the ring libsessionc kept.
 */
#include <check.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "checks.h"
#include "harness.h"
#include "sessionc.h"
#include "tls_util.h"
#include "v2ops.h"

#define LIVE_TIMEOUT_MS 1000
#define MAX_EARLY       4096
#define EARLY_MSG       "GET /pay?amount=100 HTTP/1.1\r\n\r\n"

static tu_cred g_cred;
static char g_dir[256], g_key[300];
static th_daemon g_d;

static void setup(void)
{
    uint8_t key[32];
    char rotate[] = "60", lifetime[] = "120";
    const char *args[] = {"--key-file",      g_key,  "--ticket-keys",
                          "--ticket-rotate", rotate, "--ticket-lifetime",
                          lifetime,          NULL};

    ck_assert_int_eq(tu_cred_make(&g_cred, TU_KEY_EC, TU_ROLE_SERVER, "localhost", NULL), 0);
    ck_assert_int_eq(th_tmpdir(g_dir, sizeof(g_dir)), 0);
    snprintf(g_key, sizeof(g_key), "%s/cluster.key", g_dir);
    ck_assert_int_eq(RAND_bytes(key, sizeof(key)), 1);
    v2t_write_key_file(g_key, key, 0600);
    tc_start(&g_d, args);
    ck_assert_msg(th_daemon_wait_log(&g_d, "ticket keys ready", 0, 10000) == 0, "no ring: %s",
                  g_d.log);
}

static void teardown(void)
{
    if (g_d.pid > 0)
        tc_stop_ok(&g_d);
    tu_cred_free(&g_cred);
    th_rmtree(g_dir);
}

/* --- a TLS server of the cluster --- */

typedef struct server {
    SSL_CTX *ctx;
    sc_client *sc;
} server;

/* stateful: OpenSSL's default with early data (stateful tickets stored in
 * sessiond through sc_attach); else stateless tickets with the cluster's
 * ticket keys. */
static void server_open(server *s, int anti_replay, int stateful)
{
    /* OpenSSL's own replay protection (stateful tickets) only lets early
     * data through for a session it could remove from its internal cache,
     * so that cache stays on there; stateless tickets need no cache. */
    tu_server_opts o = {.version = TLS1_3_VERSION, .no_internal_cache = !stateful};
    char servers[64], err[256];
    sc_options opt;

    s->ctx = tu_server_ctx(&g_cred, &o);
    ck_assert_ptr_nonnull(s->ctx);
    /* The application's part: allow early data at all. */
    ck_assert_int_eq(SSL_CTX_set_max_early_data(s->ctx, MAX_EARLY), 1);
    sc_options_init(&opt);
    opt.key_file = g_key;
    opt.timeout_ms = LIVE_TIMEOUT_MS;
    opt.anti_replay = anti_replay;
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", g_d.port);
    s->sc = sc_client_new(servers, &opt, err, sizeof(err));
    ck_assert_msg(s->sc != NULL, "%s", err);
    if (stateful) {
        ck_assert_int_eq(sc_attach(s->sc, s->ctx, 0), 0);
    } else {
        SSL_CTX_set_options(s->ctx, SSL_OP_NO_ANTI_REPLAY);
        ck_assert_int_eq(sc_attach_ticket_keys(s->sc, s->ctx), 0);
    }
}

static void server_close(server *s)
{
    sc_detach(s->ctx);
    SSL_CTX_free(s->ctx);
    sc_client_free(s->sc);
}

/* --- TLS over memory BIOs --- */

static SSL *mem_ssl(SSL_CTX *ctx, int is_server)
{
    SSL *ssl = SSL_new(ctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());

    ck_assert(ssl != NULL && rbio != NULL && wbio != NULL);
    BIO_set_mem_eof_return(rbio, -1); /* empty: "try again", not EOF */
    BIO_set_mem_eof_return(wbio, -1);
    SSL_set_bio(ssl, rbio, wbio);
    if (is_server)
        SSL_set_accept_state(ssl);
    else
        SSL_set_connect_state(ssl);
    return ssl;
}

/* Appends what `from` has written to buf (may be NULL) and to `to`'s input
 * (may be NULL). Returns the bytes moved. */
static size_t mem_move(SSL *from, SSL *to, uint8_t *buf, size_t cap, size_t *len)
{
    uint8_t chunk[4096];
    size_t total = 0;
    int n;

    while ((n = BIO_read(SSL_get_wbio(from), chunk, sizeof(chunk))) > 0) {
        if (to != NULL)
            ck_assert_int_eq(BIO_write(SSL_get_rbio(to), chunk, n), n);
        if (buf != NULL) {
            ck_assert_uint_le(*len + (size_t)n, cap);
            memcpy(buf + *len, chunk, (size_t)n);
            *len += (size_t)n;
        }
        total += (size_t)n;
    }
    return total;
}

static void feed(SSL *ssl, const uint8_t *bytes, size_t len)
{
    ck_assert_int_eq(BIO_write(SSL_get_rbio(ssl), bytes, (int)len), (int)len);
}

/* Reads early data on a server until OpenSSL says it is over (1) or needs
 * more input (0); appends what it read to data. */
static int read_early(SSL *ssl, char *data, size_t cap, size_t *got)
{
    for (;;) {
        size_t n = 0;
        int rc = SSL_read_early_data(ssl, data + *got, cap - *got, &n);

        if (rc == SSL_READ_EARLY_DATA_SUCCESS) {
            *got += n;
            continue;
        }
        if (rc == SSL_READ_EARLY_DATA_FINISH)
            return 1;
        ck_assert_msg(SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ, "SSL_read_early_data: %s",
                      ERR_error_string(ERR_get_error(), NULL));
        return 0;
    }
}

/* A step of a handshake that may need the peer: 1 done, 0 wants I/O. */
static int step(SSL *ssl)
{
    int rc = SSL_do_handshake(ssl);
    int err;

    if (rc == 1)
        return 1;
    err = SSL_get_error(ssl, rc);
    ck_assert_msg(err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE,
                  "handshake failed: %d %s", err, ERR_error_string(ERR_get_error(), NULL));
    return 0;
}

/* What a server did with one client's first flight. */
typedef struct early_result {
    char data[MAX_EARLY];
    size_t got;        /* early data handed to the application */
    int status;        /* SSL_get_early_data_status on the server */
    int resumed;       /* the server accepted the ticket */
    int completed;     /* the whole handshake completed (a real client only) */
    int client_status; /* SSL_get_early_data_status on the client (real client only) */
} early_result;

/* A real client: offers sess with early data to a fresh server SSL on ctx,
 * recording its first flight into flight (when not NULL), and completes the
 * handshake. Returns the client's newest session (a new ticket) when
 * want_session, else NULL. */
static SSL_SESSION *client_early(SSL_CTX *client_ctx, SSL_CTX *server_ctx, SSL_SESSION *sess,
                                 uint8_t *flight, size_t cap, size_t *flight_len, early_result *res)
{
    SSL *c = mem_ssl(client_ctx, 0), *s = mem_ssl(server_ctx, 1);
    size_t written = 0, scratch = 0;
    int early_done = 0, c_done = 0, s_done = 0;
    SSL_SESSION *out;
    char byte = 0;

    memset(res, 0, sizeof(*res));
    ck_assert_int_eq(SSL_set_session(c, sess), 1);
    ck_assert_int_eq(SSL_write_early_data(c, EARLY_MSG, strlen(EARLY_MSG), &written), 1);
    ck_assert_uint_eq(written, strlen(EARLY_MSG));
    mem_move(c, s, flight, cap, flight != NULL ? flight_len : &scratch);
    for (int round = 0; round < 50 && !(c_done && s_done); round++) {
        if (!early_done)
            early_done = read_early(s, res->data, sizeof(res->data), &res->got);
        if (early_done && !s_done)
            s_done = step(s);
        mem_move(s, c, NULL, 0, NULL);
        if (!c_done)
            c_done = step(c);
        mem_move(c, s, NULL, 0, NULL);
    }
    ck_assert_msg(c_done && s_done, "the handshake did not complete");
    res->completed = 1;
    res->status = SSL_get_early_data_status(s);
    res->client_status = SSL_get_early_data_status(c);
    res->resumed = SSL_session_reused(s);
    /* One byte from the server so the client processes the tickets sent. */
    ck_assert_int_eq(SSL_write(s, "x", 1), 1);
    mem_move(s, c, NULL, 0, NULL);
    ck_assert_int_eq(SSL_read(c, &byte, 1), 1);
    out = SSL_get1_session(c);
    SSL_free(c);
    SSL_free(s);
    return out;
}

/* A replay: the recorded flight, unchanged, to a fresh server SSL on ctx. */
static void replay(SSL_CTX *server_ctx, const uint8_t *flight, size_t len, early_result *res)
{
    SSL *s = mem_ssl(server_ctx, 1);
    int done;

    memset(res, 0, sizeof(*res));
    feed(s, flight, len);
    done = read_early(s, res->data, sizeof(res->data), &res->got);
    if (done)
        ck_assert_int_eq(step(s), 0); /* waits for a Finished that never comes */
    res->status = SSL_get_early_data_status(s);
    res->resumed = SSL_session_reused(s);
    /* It answered with its flight: the handshake went on, it did not fail. */
    ck_assert_uint_gt(BIO_ctrl_pending(SSL_get_wbio(s)), 0);
    SSL_free(s);
}

/* A TLS 1.3 session from a full handshake with A that allows early data. */
static SSL_SESSION *ticket_from(SSL_CTX *client_ctx, SSL_CTX *server_ctx)
{
    tu_hs_result r;
    SSL_SESSION *sess;

    ck_assert_msg(tu_handshake(client_ctx, server_ctx, NULL, &r) == 0, "%s", r.error);
    sess = r.session;
    ck_assert_ptr_nonnull(sess);
    ck_assert_uint_eq(SSL_SESSION_get_max_early_data(sess), MAX_EARLY);
    return sess;
}

static void assert_accepted(const early_result *r)
{
    ck_assert_int_eq(r->status, SSL_EARLY_DATA_ACCEPTED);
    ck_assert_uint_eq(r->got, strlen(EARLY_MSG));
    ck_assert_mem_eq(r->data, EARLY_MSG, strlen(EARLY_MSG));
}

static void assert_rejected(const early_result *r)
{
    ck_assert_int_eq(r->status, SSL_EARLY_DATA_REJECTED);
    ck_assert_uint_eq(r->got, 0);
}

/* Stateless tickets: the "seen" record. */
START_TEST(test_stateless)
{
    static uint8_t flight[16384];
    size_t flight_len = 0;
    SSL_CTX *cctx = tu_client_ctx(TLS1_3_VERSION, NULL);
    SSL_SESSION *sess, *again, *fresh, *next;
    server a, b, a2, b2;
    early_result r;
    sc_stats sa, sb;
    long long exists_before = tc_stat_of(&g_d, "add_exists");

    ck_assert_ptr_nonnull(cctx);
    ck_assert_int_ge(exists_before, 0);
    server_open(&a, 1, 0);
    server_open(&b, 1, 0);
    sess = ticket_from(cctx, a.ctx);
    again = SSL_SESSION_dup(sess); /* the same ticket, for a second real client */
    fresh = ticket_from(cctx, a.ctx);

    /* The client: early data accepted on A, once. */
    next = client_early(cctx, a.ctx, sess, flight, sizeof(flight), &flight_len, &r);
    assert_accepted(&r);
    ck_assert(r.resumed && r.client_status == SSL_EARLY_DATA_ACCEPTED);
    SSL_SESSION_free(next);

    /* The replay to B, then to A: the ticket resumes, its early data does not. */
    replay(b.ctx, flight, flight_len, &r);
    assert_rejected(&r);
    ck_assert(r.resumed);
    replay(a.ctx, flight, flight_len, &r);
    assert_rejected(&r);
    ck_assert(r.resumed);

    /* A second real client with the same ticket: handshake done, 0-RTT refused. */
    next = client_early(cctx, b.ctx, again, NULL, 0, NULL, &r);
    ck_assert(r.completed && r.resumed);
    assert_rejected(&r);
    ck_assert_int_eq(r.client_status, SSL_EARLY_DATA_REJECTED);
    SSL_SESSION_free(next);

    /* Another ticket is another record: accepted on B. */
    next = client_early(cctx, b.ctx, fresh, NULL, 0, NULL, &r);
    assert_accepted(&r);
    SSL_SESSION_free(next);

    sc_get_stats(a.sc, &sa);
    sc_get_stats(b.sc, &sb);
    ck_assert_uint_eq(sa.early_accepted, 1);
    ck_assert_uint_eq(sa.early_replayed, 1);
    ck_assert_uint_eq(sb.early_accepted, 1);
    ck_assert_uint_eq(sb.early_replayed, 2);
    ck_assert_uint_eq(sa.early_unavailable + sb.early_unavailable, 0);
    /* The daemon saw the same: three first sightings refused as replays. */
    ck_assert_int_eq(tc_stat_of(&g_d, "add_exists") - exists_before, 3);
    fprintf(stderr,
            "check_antireplay: stateless, anti-replay on: accepted A=%llu B=%llu, "
            "rejected as replays A=%llu B=%llu\n",
            (unsigned long long)sa.early_accepted, (unsigned long long)sb.early_accepted,
            (unsigned long long)sa.early_replayed, (unsigned long long)sb.early_replayed);

    /* Without anti-replay (the same ring, other servers): B reads the replay. */
    server_open(&a2, 0, 0);
    server_open(&b2, 0, 0);
    SSL_SESSION_free(sess);
    sess = ticket_from(cctx, a2.ctx);
    flight_len = 0;
    next = client_early(cctx, a2.ctx, sess, flight, sizeof(flight), &flight_len, &r);
    assert_accepted(&r);
    SSL_SESSION_free(next);
    replay(b2.ctx, flight, flight_len, &r);
    assert_accepted(&r);
    replay(a2.ctx, flight, flight_len, &r);
    assert_accepted(&r);
    fprintf(stderr, "check_antireplay: stateless, anti-replay off: the replay's early data was "
                    "read on B and again on A\n");

    SSL_SESSION_free(sess);
    SSL_SESSION_free(again);
    SSL_SESSION_free(fresh);
    server_close(&a);
    server_close(&b);
    server_close(&a2);
    server_close(&b2);
    SSL_CTX_free(cctx);
}
END_TEST

/* Stateful tickets: the session is taken, once in the cluster. The ticket
 * is A's, first used on B (which takes it from sessiond); the replay to A
 * finds the session in A's own internal cache (A issued it), where no take
 * can reach: there the "seen" record, checked for stateful tickets too,
 * refuses the early data. The replay to B finds nothing left. */
START_TEST(test_stateful)
{
    static uint8_t flight[16384];
    size_t flight_len = 0;
    SSL_CTX *cctx = tu_client_ctx(TLS1_3_VERSION, NULL);
    SSL_SESSION *sess, *next;
    server a, b;
    early_result r;
    sc_stats sa, sb;

    ck_assert_ptr_nonnull(cctx);
    server_open(&a, 1, 1);
    server_open(&b, 1, 1);
    sess = ticket_from(cctx, a.ctx);

    next = client_early(cctx, b.ctx, sess, flight, sizeof(flight), &flight_len, &r);
    assert_accepted(&r);
    ck_assert(r.resumed);
    SSL_SESSION_free(next);
    sc_get_stats(b.sc, &sb);
    ck_assert_uint_eq(sb.takes, 1);
    ck_assert_uint_eq(sb.hits, 1);

    replay(a.ctx, flight, flight_len, &r);
    assert_rejected(&r);
    replay(b.ctx, flight, flight_len, &r);
    assert_rejected(&r);
    ck_assert(!r.resumed); /* taken: nothing left to resume on B */

    sc_get_stats(a.sc, &sa);
    sc_get_stats(b.sc, &sb);
    ck_assert_uint_eq(sb.early_accepted, 1);
    ck_assert_uint_eq(sa.early_accepted, 0);
    ck_assert_uint_eq(sa.early_replayed, 1);
    ck_assert_uint_ge(sb.takes, 2);
    ck_assert_uint_eq(sb.hits, 1);
    fprintf(stderr, "check_antireplay: stateful, anti-replay on: accepted once (B), replay "
                    "rejected on A (seen record) and on B (taken)\n");

    SSL_SESSION_free(sess);
    server_close(&a);
    server_close(&b);
    SSL_CTX_free(cctx);
}
END_TEST

/* Stateful tickets without early data: with anti_replay each one resumes
 * once in the cluster (a take), blocking and event-loop mode alike;
 * without it, a ticket can be used again on another server. _i: bit 0
 * event-loop mode, bit 1 anti_replay off. */
START_TEST(test_take_once)
{
    int async = _i & 1, anti_replay = !(_i & 2);
    tu_server_opts o = {.version = TLS1_3_VERSION, .no_ticket = 1, .no_internal_cache = 1};
    SSL_CTX *cctx = tu_client_ctx(TLS1_3_VERSION, NULL), *ctx[2];
    sc_client *sc[2];
    SSL_SESSION *sess, *copy;
    char servers[64], err[256];
    sc_options opt;
    tu_hs_result r;
    sc_stats st;

    ck_assert_ptr_nonnull(cctx);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", g_d.port);
    sc_options_init(&opt);
    opt.key_file = g_key;
    opt.timeout_ms = LIVE_TIMEOUT_MS;
    opt.anti_replay = anti_replay;
    for (int i = 0; i < 2; i++) {
        ctx[i] = tu_server_ctx(&g_cred, &o);
        ck_assert_ptr_nonnull(ctx[i]);
        sc[i] = sc_client_new(servers, &opt, err, sizeof(err));
        ck_assert_msg(sc[i] != NULL, "%s", err);
        ck_assert_int_eq(sc_attach(sc[i], ctx[i], async ? SC_ATTACH_ASYNC : 0), 0);
    }

    ck_assert_msg(tu_handshake(cctx, ctx[0], NULL, &r) == 0, "%s", r.error);
    sess = r.session;
    copy = SSL_SESSION_dup(sess); /* the client uses a TLS 1.3 ticket once; a replayer would not */
    ck_assert_ptr_nonnull(copy);
    ck_assert_msg(tu_handshake(cctx, ctx[1], sess, &r) == 0, "%s", r.error);
    ck_assert(r.resumed && r.server_resumed);
    tu_hs_result_clear(&r);
    ck_assert_msg(tu_handshake(cctx, ctx[0], copy, &r) == 0, "%s", r.error);
    if (anti_replay)
        ck_assert_msg(!r.resumed, "a stateful ticket resumed twice");
    else
        ck_assert_msg(r.resumed, "without anti-replay the ticket should resume again");
    tu_hs_result_clear(&r);
    sc_get_stats(sc[1], &st);
    ck_assert_uint_eq(st.takes, anti_replay ? 1 : 0);
    ck_assert_uint_eq(st.hits, 1);
    sc_get_stats(sc[0], &st);
    ck_assert_uint_eq(st.takes, anti_replay ? 1 : 0);
    ck_assert_uint_eq(st.hits, anti_replay ? 0 : 1);

    SSL_SESSION_free(sess);
    SSL_SESSION_free(copy);
    for (int i = 0; i < 2; i++) {
        sc_detach(ctx[i]);
        SSL_CTX_free(ctx[i]);
        sc_client_free(sc[i]);
    }
    SSL_CTX_free(cctx);
}
END_TEST

/* sessiond unreachable: early data refused, the handshake still resumes. */
START_TEST(test_daemon_down)
{
    SSL_CTX *cctx = tu_client_ctx(TLS1_3_VERSION, NULL);
    SSL_SESSION *sess, *next;
    early_result r;
    server a;
    sc_stats st;

    ck_assert_ptr_nonnull(cctx);
    server_open(&a, 1, 0);
    sess = ticket_from(cctx, a.ctx);
    tc_stop_ok(&g_d);
    g_d.pid = 0;

    next = client_early(cctx, a.ctx, sess, NULL, 0, NULL, &r);
    ck_assert(r.completed && r.resumed);
    assert_rejected(&r);
    SSL_SESSION_free(next);
    sc_get_stats(a.sc, &st);
    ck_assert_uint_eq(st.early_unavailable, 1);
    ck_assert_uint_eq(st.early_accepted, 0);

    SSL_SESSION_free(sess);
    server_close(&a);
    SSL_CTX_free(cctx);
}
END_TEST

static Suite *antireplay_suite(void)
{
    Suite *s = suite_create("antireplay");
    TCase *tc = tcase_create("early");

    tcase_set_timeout(tc, 60);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_stateless);
    tcase_add_test(tc, test_stateful);
    tcase_add_loop_test(tc, test_take_once, 0, 4);
    tcase_add_test(tc, test_daemon_down);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(antireplay_suite());
}
