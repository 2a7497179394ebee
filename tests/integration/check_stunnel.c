/* check_stunnel.c — other TLS servers, in other processes, resume each
 * other's sessions through a real sessiond: stock stunnel (Debian's
 * stunnel4) with its `sessiond =` option, and contrib/sessionc-echo built on
 * libsessionc. The client is the stock `openssl s_client` (-sess_out on one
 * server, -sess_in on the other, "Reused" expected), and for longer runs and
 * TLS 1.3 the in-process client of tests/lib/tls_util.c over TCP.
 *
 * How it works: every server runs as a child process whose stdout and stderr
 * go to a log file in a temporary directory (tests/lib/proc.c). Readiness
 * is a line in that log ("Accepting new connections" for stunnel,
 * "listening on" for sessionc-echo), waited for with inotify and a pidfd,
 * bounded, never by sleeping. stunnel forwards each connection to a TCP
 * "sink" socket that this test listens on and never accepts from: the
 * kernel completes the connection, and nothing here needs the plaintext
 * side.
 *
 * What stunnel 5.68 does (pinned down by these tests): it sends NEW for
 * TLS 1.2 sessions and for TLS 1.3 stateful tickets, and GET when its own
 * cache misses. With sessiond configured it keeps in its own cache only the
 * sessions it negotiated (SSL_SESS_CACHE_NO_INTERNAL_STORE, then an explicit
 * SSL_CTX_add_session after each full handshake), never those it fetched.
 * Its session-ID context is the service
 * name, so both stunnels name their service alike. It waits for the answer
 * one kernel tick only, so a GET answered late is a miss: the alternating
 * runs allow a couple of those rather than fail on a loaded machine.
 *
 * With a cluster key (v2): stunnel cannot seal, so a daemon with --key-file
 * serves it only with --allow-plaintext and a matching --allow (here
 * 127.0.0.1/32), while sessionc-echo servers seal with the same key on the
 * same daemon; without --allow-plaintext stunnel's datagrams are dropped
 * and counted (denied), and its sessions no longer cross servers.
 */
#include <check.h>

#include "checks.h"
#include "harness.h"
#include "proc.h"
#include "tls_util.h"

#include <openssl/rand.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define READY_TIMEOUT_MS  10000
#define ALTERNATIONS      20
#define ALLOWED_LATE_GETS 2 /* stunnel's one-tick GET wait, see the top */
#define SESSION_WAIT_MS   2000

static tu_cred g_server;

/* ---- the test bed ------------------------------------------------------- */

typedef struct bed {
    char dir[256]; /* short, so every path built from it fits PATH_MAX */
    char cert[PATH_MAX];
    char key[PATH_MAX];
    char cluster_key[PATH_MAX]; /* the cluster key file, when the daemon has one */
    th_daemon d;
    int sink_fd;
    int sink_port;
    int port[2];
    tp_proc server[2];
    const char *names[2];
} bed;

/* How the daemon of a test bed is set up. */
enum policy {
    POLICY_OPEN,            /* no key: plaintext (v1, plain v2) from loopback */
    POLICY_KEY_PLAINTEXT,   /* --key-file, --allow-plaintext --allow 127.0.0.1/32 */
    POLICY_KEY_SEALED_ONLY, /* --key-file alone: plaintext refused */
};

/* A random cluster key in hex, mode 0600. */
static void write_cluster_key(const char *path)
{
    unsigned char key[32];
    FILE *f;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);

    ck_assert_int_ge(fd, 0);
    f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(RAND_bytes(key, sizeof(key)), 1);
    for (size_t i = 0; i < sizeof(key); i++)
        fprintf(f, "%02x", key[i]);
    fputc('\n', f);
    ck_assert_int_eq(fclose(f), 0);
}

static void bed_open(bed *b, enum policy policy)
{
    const char *args[6] = {NULL};

    memset(b, 0, sizeof(*b));
    ck_assert_int_eq(th_tmpdir(b->dir, sizeof(b->dir)), 0);
    snprintf(b->cert, sizeof(b->cert), "%s/cert.pem", b->dir);
    snprintf(b->key, sizeof(b->key), "%s/key.pem", b->dir);
    ck_assert_int_eq(tu_cred_write_pem(&g_server, b->cert, b->key), 0);
    if (policy != POLICY_OPEN) {
        snprintf(b->cluster_key, sizeof(b->cluster_key), "%s/cluster.key", b->dir);
        write_cluster_key(b->cluster_key);
        args[0] = "--key-file";
        args[1] = b->cluster_key;
        if (policy == POLICY_KEY_PLAINTEXT) {
            args[2] = "--allow-plaintext";
            args[3] = "--allow";
            args[4] = "127.0.0.1/32";
        }
    }
    ck_assert_int_eq(th_daemon_start(&b->d, args), 0);

    b->sink_fd = tp_tcp_sink(&b->sink_port);
}

static void bed_close(bed *b)
{
    for (int i = 0; i < 2; i++)
        if (b->server[i].pid > 0)
            tp_stop(&b->server[i]);
    close(b->sink_fd);
    ck_assert_int_eq(th_daemon_stop(&b->d), 0);
    th_rmtree(b->dir);
}

static void bed_fail(bed *b, const char *why)
{
    for (int i = 0; i < 2; i++)
        if (b->server[i].pid > 0)
            tp_dump(&b->server[i], b->names[i]);
    ck_abort_msg("%s", why);
}

/* Two stunnel processes, one service each, both named "shared" (see
 * tp_stunnel_start). */
static void bed_start_stunnels(bed *b)
{
    for (int i = 0; i < 2; i++) {
        b->names[i] = i == 0 ? "stunnel A" : "stunnel B";
        b->port[i] =
            tp_stunnel_start(&b->server[i], b->dir, i, b->cert, b->key, b->sink_port, b->d.port);
        if (b->port[i] < 0)
            bed_fail(b, "stunnel did not start (is Debian's stunnel4 installed?)");
    }
}

/* The sessionc-echo binary sits next to the sessiond under test. */
static void echo_path(char *buf, size_t cap)
{
    const char *env = getenv("SESSIONC_ECHO");
    const char *sessiond = getenv("SESSIOND");
    const char *slash;

    if (env != NULL && *env != '\0') {
        snprintf(buf, cap, "%s", env);
        return;
    }
    ck_assert_msg(sessiond != NULL, "SESSIOND is not set");
    slash = strrchr(sessiond, '/');
    snprintf(buf, cap, "%.*ssessionc-echo", slash != NULL ? (int)(slash - sessiond + 1) : 0,
             sessiond);
}

static void bed_start_echoes(bed *b)
{
    char bin[PATH_MAX];
    char servers[64];

    echo_path(bin, sizeof(bin));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", b->d.port);
    for (int i = 0; i < 2; i++) {
        char log[PATH_MAX];
        char line[512];
        const char *colon;
        const char *argv[] = {bin,
                              "-c",
                              b->cert,
                              "-k",
                              b->key,
                              "-p",
                              "0",
                              "-s",
                              servers,
                              "--no-tickets",
                              "-v",
                              b->cluster_key[0] != '\0' ? "-K" : NULL,
                              b->cluster_key,
                              NULL};

        b->names[i] = i == 0 ? "sessionc-echo A" : "sessionc-echo B";
        snprintf(log, sizeof(log), "%s/echo%d.log", b->dir, i);
        tp_start(&b->server[i], argv, log);
        if (tp_wait_log(&b->server[i], "listening on ", 0, line, sizeof(line), READY_TIMEOUT_MS) !=
            0)
            bed_fail(b, "sessionc-echo did not start");
        colon = strrchr(line, ':');
        ck_assert_ptr_nonnull(colon);
        b->port[i] = atoi(colon + 1);
        ck_assert_int_gt(b->port[i], 0);
    }
}

/* openssl s_client to server i with -sess_out or -sess_in FILE; returns its
 * output in out. */
static void s_client(bed *b, int i, const char *version_flag, const char *sess_flag, char *out,
                     size_t cap)
{
    char connect[32];
    char sess[PATH_MAX];
    const char *argv[] = {"openssl",    "s_client", "-connect", connect, version_flag,
                          "-no_ticket", sess_flag,  sess,       NULL};
    int status;

    snprintf(connect, sizeof(connect), "127.0.0.1:%d", b->port[i]);
    snprintf(sess, sizeof(sess), "%s/session.pem", b->dir);
    status = th_run(argv, out, cap);
    if (status != 0) {
        fprintf(stderr, "s_client exited %d:\n%s\n", status, out);
        bed_fail(b, "openssl s_client failed");
    }
}

/* Full handshake on A with -sess_out, then -sess_in on B: "Reused". B gets
 * `attempts` tries, each offering the same session again: a stock stunnel
 * counts a GET answered after its one-tick wait as a miss. Returns the
 * attempt that reused it; with expect_reuse 0, checks that none did and
 * returns 0. */
static int s_client_try(bed *b, const char *version_flag, const char *version_name, int attempts,
                        int expect_reuse)
{
    char out[65536];
    char want_new[32];
    char want_reused[32];

    snprintf(want_new, sizeof(want_new), "New, %s,", version_name);
    snprintf(want_reused, sizeof(want_reused), "Reused, %s,", version_name);
    s_client(b, 0, version_flag, "-sess_out", out, sizeof(out));
    if (strstr(out, want_new) == NULL) {
        fprintf(stderr, "s_client to A:\n%s\n", out);
        bed_fail(b, "the first handshake was not a new TLS session");
    }
    for (int attempt = 1; attempt <= attempts; attempt++) {
        s_client(b, 1, version_flag, "-sess_in", out, sizeof(out));
        if (strstr(out, want_reused) != NULL) {
            if (!expect_reuse) {
                fprintf(stderr, "s_client to B:\n%s\n", out);
                bed_fail(b, "the session from A was reused on B, and should not have been");
            }
            return attempt;
        }
        if (!expect_reuse && strstr(out, want_new) == NULL) {
            fprintf(stderr, "s_client to B:\n%s\n", out);
            bed_fail(b, "the handshake with B failed");
        }
    }
    if (!expect_reuse)
        return 0;
    fprintf(stderr, "last s_client to B:\n%s\n", out);
    bed_fail(b, "the session from A was not reused on B");
    return -1;
}

static int s_client_reuse(bed *b, const char *version_flag, const char *version_name, int attempts)
{
    return s_client_try(b, version_flag, version_name, attempts, 1);
}

/* A full handshake with A over TCP, then `count` reconnections alternating
 * B, A, ... each offering the newest session. Returns how many resumed. */
static int tcp_alternate(bed *b, int version, int count)
{
    SSL_CTX *client_ctx = tu_client_ctx(version, NULL);
    SSL_SESSION *sess;
    tu_hs_result res;
    int resumed = 0;

    ck_assert_ptr_nonnull(client_ctx);
    if (tu_tcp_handshake(client_ctx, b->port[0], NULL, SESSION_WAIT_MS, &res) != 0) {
        fprintf(stderr, "first handshake: %s\n", res.error);
        bed_fail(b, "TLS handshake with A failed");
    }
    sess = res.session;
    for (int i = 0; i < count; i++) {
        int which = i % 2 == 0 ? 1 : 0;

        if (tu_tcp_handshake(client_ctx, b->port[which], sess, SESSION_WAIT_MS, &res) != 0) {
            fprintf(stderr, "reconnection %d: %s\n", i, res.error);
            bed_fail(b, "TLS handshake failed");
        }
        ck_assert_int_eq(res.version, version);
        resumed += res.resumed;
        SSL_SESSION_free(sess);
        sess = res.session;
    }
    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    return resumed;
}

static void assert_daemon_saw(bed *b, long long min_puts, long long min_hits)
{
    char line[2048];

    ck_assert_int_eq(th_daemon_stats(&b->d, line, sizeof(line)), 0);
    ck_assert_msg(th_stat(line, "puts") >= min_puts, "want puts >= %lld: %s", min_puts, line);
    ck_assert_msg(th_stat(line, "hits") >= min_hits, "want hits >= %lld: %s", min_hits, line);
}

/* The acceptance test, word for word: two stunnel servers, s_client
 * -tls1_2 -no_ticket -sess_out on one and -sess_in on the other: Reused. */
START_TEST(test_stunnel_s_client_tls12)
{
    bed b;
    int attempts;

    bed_open(&b, POLICY_OPEN);
    bed_start_stunnels(&b);
    attempts = s_client_reuse(&b, "-tls1_2", "TLSv1.2", 1 + ALLOWED_LATE_GETS);
    fprintf(stderr, "stunnel: s_client session reused on the other stunnel (attempt %d)\n",
            attempts);
    assert_daemon_saw(&b, 1, 1);
    bed_close(&b);
}
END_TEST

/* Longer runs against stunnel, TLS 1.2 session IDs and TLS 1.3 stateful
 * tickets, with an in-process client (s_client may exit before a TLS 1.3
 * ticket arrives, so it cannot save one reliably). */
START_TEST(test_stunnel_alternating)
{
    int version = _i == 0 ? TLS1_2_VERSION : TLS1_3_VERSION;
    bed b;
    int resumed;

    bed_open(&b, POLICY_OPEN);
    bed_start_stunnels(&b);
    resumed = tcp_alternate(&b, version, ALTERNATIONS);
    fprintf(stderr, "stunnel TLS %s: %d of %d reconnections resumed across the two stunnels\n",
            version == TLS1_3_VERSION ? "1.3" : "1.2", resumed, ALTERNATIONS);
    if (resumed < ALTERNATIONS - ALLOWED_LATE_GETS)
        bed_fail(&b, "too few resumptions across the stunnels");
    /* At least every resumption on B came from sessiond. (stunnel adds the
     * sessions it negotiated itself to its own cache, so with TLS 1.2 A
     * resumes its own session locally; TLS 1.3 makes a new ticket at every
     * resumption, so there both sides look up.) */
    assert_daemon_saw(&b, 1, ALTERNATIONS / 2 - ALLOWED_LATE_GETS);
    bed_close(&b);
}
END_TEST

/* contrib/sessionc-echo: two processes, s_client across them, then TLS 1.3
 * stateful tickets with the in-process client; libsessionc waits up to its
 * timeout for an answer, so nothing is allowed to miss here. */
START_TEST(test_sessionc_echo)
{
    bed b;
    char line[512];
    char stats[2048];
    int resumed;

    /* _i 0: plain v2 from loopback; 1: sealed v2 with a key-only daemon. */
    bed_open(&b, _i == 0 ? POLICY_OPEN : POLICY_KEY_SEALED_ONLY);
    bed_start_echoes(&b);
    ck_assert_int_eq(s_client_reuse(&b, "-tls1_2", "TLSv1.2", 1), 1);
    resumed = tcp_alternate(&b, TLS1_3_VERSION, 10);
    fprintf(stderr, "sessionc-echo TLS 1.3: %d of 10 reconnections resumed\n", resumed);
    if (resumed != 10)
        bed_fail(&b, "TLS 1.3 stateful tickets did not resume across sessionc-echo servers");
    assert_daemon_saw(&b, 3, 11);
    ck_assert_int_eq(th_daemon_stats(&b.d, stats, sizeof(stats)), 0);
    ck_assert_msg(th_stat(stats, "v1") == 0 && th_stat(stats, "v2") > 0 &&
                      th_stat(stats, "sealed") == (_i == 0 ? 0 : th_stat(stats, "v2")) &&
                      th_stat(stats, "denied") + th_stat(stats, "auth_failed") == 0,
                  "%s", stats);

    /* A clean exit on SIGTERM, with its counters: B resumed 1 + 5. */
    ck_assert_int_eq(tp_stop(&b.server[1]), 0);
    ck_assert_int_eq(tp_wait_log(&b.server[1], "connections=", 0, line, sizeof(line), 1000), 0);
    ck_assert_msg(strstr(line, " resumed=6 ") != NULL, "B: %s", line);
    bed_close(&b);
}
END_TEST

/* A daemon with a cluster key that still lets stunnel's plaintext v1 in
 * from loopback (--allow-plaintext --allow 127.0.0.1/32): stock stunnels
 * resume each other's sessions, and sealed libsessionc traffic shares the
 * daemon (a sessionc-echo pair with the key). */
START_TEST(test_stunnel_key_allow_plaintext)
{
    bed b;
    char stats[2048];
    int attempts, resumed;

    bed_open(&b, POLICY_KEY_PLAINTEXT);
    bed_start_stunnels(&b);
    attempts = s_client_reuse(&b, "-tls1_2", "TLSv1.2", 1 + ALLOWED_LATE_GETS);
    fprintf(stderr, "stunnel, keyed daemon with --allow-plaintext: reused (attempt %d)\n",
            attempts);
    resumed = tcp_alternate(&b, TLS1_3_VERSION, ALTERNATIONS);
    fprintf(stderr, "stunnel TLS 1.3, keyed daemon: %d of %d resumed\n", resumed, ALTERNATIONS);
    if (resumed < ALTERNATIONS - ALLOWED_LATE_GETS)
        bed_fail(&b, "too few resumptions across the stunnels");
    ck_assert_int_eq(th_daemon_stats(&b.d, stats, sizeof(stats)), 0);
    ck_assert_msg(th_stat(stats, "v1") > 0 && th_stat(stats, "denied") == 0, "%s", stats);

    /* The same daemon serves sealed v2 to libsessionc servers with the key. */
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(tp_stop(&b.server[i]), 0);
    bed_start_echoes(&b);
    ck_assert_int_eq(s_client_reuse(&b, "-tls1_2", "TLSv1.2", 1), 1);
    ck_assert_int_eq(th_daemon_stats(&b.d, stats, sizeof(stats)), 0);
    ck_assert_msg(th_stat(stats, "sealed") >= 2 && th_stat(stats, "denied") == 0, "%s", stats);
    bed_close(&b);
}
END_TEST

/* With a key and without --allow-plaintext, stunnel's v1 is refused: the
 * daemon drops (and counts) every datagram, and a session made on one
 * stunnel is not resumed on the other. */
START_TEST(test_stunnel_key_refused)
{
    bed b;
    char stats[2048];

    bed_open(&b, POLICY_KEY_SEALED_ONLY);
    bed_start_stunnels(&b);
    ck_assert_int_eq(s_client_try(&b, "-tls1_2", "TLSv1.2", 2, 0), 0);
    ck_assert_int_eq(th_daemon_stats(&b.d, stats, sizeof(stats)), 0);
    fprintf(stderr, "stunnel, keyed daemon without --allow-plaintext: not reused; %s\n", stats);
    ck_assert_msg(th_stat(stats, "denied") >= 3, "%s", stats); /* 1 NEW + 2 GETs at least */
    ck_assert_msg(th_stat(stats, "puts") == 0 && th_stat(stats, "gets") == 0, "%s", stats);
    bed_close(&b);
}
END_TEST

static Suite *stunnel_suite(void)
{
    Suite *s = suite_create("interop");
    TCase *tc = tcase_create("processes");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_stunnel_s_client_tls12);
    tcase_add_loop_test(tc, test_stunnel_alternating, 0, 2);
    tcase_add_loop_test(tc, test_sessionc_echo, 0, 2);
    tcase_add_test(tc, test_stunnel_key_allow_plaintext);
    tcase_add_test(tc, test_stunnel_key_refused);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite_with_server(stunnel_suite(), &g_server);
}
