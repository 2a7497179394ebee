/* check_sessionc_v2.c — libsessionc's v2 keys, sealing, request IDs and
 * namespaces, and the sessionctl tool, against real sessiond processes (and
 * fake servers) on loopback.
 *
 * What is covered:
 * - key files: the library's refusals, one line each naming the file;
 * - sealing: a daemon with --key-file serves a client with the key (ping,
 *   stats, acknowledged operations), drops plaintext and wrong-key
 *   requests (the client times out, counted as a timeout), and a rollover
 *   with the next key works both ways; a fake server proves the client
 *   takes only a sealed, fresh answer to its own request (plaintext,
 *   wrong-key and replayed answers counted as auth failures, an earlier
 *   request's answer as late);
 * - request IDs: a stopped daemon answers a timed-out GET after a PUT
 *   changed the value; the next GET gets its own answer, not the stale one;
 * - namespaces: the same ID in two namespaces, v1 apart from both;
 * - sessionctl: get/put/del/ping/stats, hex output, -1/-2, -n/-C, key
 *   files, every exit code (3 from a fake daemon that refuses), one-line
 *   errors.
 *
 * Waiting: no sleeps as synchronisation. Fire-and-forget puts are ordered
 * before the next get because both go out on the same per-thread socket to
 * the same daemon.
 *
 * Shared helpers (daemons, silent sockets, clients, keys) live in
 * tests/lib/sessionc_fixture.c. Needs SESSIOND and SESSIONCTL in the environment
 * (tests/run.sh sets them).
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
/* v2: keys, sealing, request IDs, namespaces */

/* Key files the library refuses, each with one line naming the file. */
START_TEST(test_key_files)
{
    char dir[256], good[300], loose[300], shortf[300], err[512];
    uint8_t key[32], other[32];
    sc_options opt;
    sc_client *c;
    FILE *f;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    sf_write_key_file(dir, "good", 0600, key, good, sizeof(good));
    sf_write_key_file(dir, "loose", 0644, other, loose, sizeof(loose));
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
    sf_write_key_file(dir, "k1", 0600, key1, k1, sizeof(k1));
    sf_write_key_file(dir, "k2", 0600, key2, k2, sizeof(k2));
    sf_start_daemon_args(&d, args1);
    c = sf_client_keyed(d.port, k1, NULL, SF_LIVE_TIMEOUT_MS);
    sf_make_key(id, 20, 1);
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
    ck_assert_int_eq(sf_daemon_stat(&d, "sealed"), 10);
    ck_assert_int_eq(sf_daemon_stat(&d, "denied") + sf_daemon_stat(&d, "auth_failed") +
                         sf_daemon_stat(&d, "unknown_key"),
                     0);

    /* Plaintext to a daemon with a key: dropped, never answered. */
    plain = sf_client_one(d.port, 100);
    ck_assert_int_eq(sc_get(plain, id, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    ck_assert_int_eq(sc_put_wait(plain, id, 32, value, 10, 60), SC_TIMEOUT);
    sc_get_stats(plain, &st);
    ck_assert_uint_eq(st.timeouts, 2);
    ck_assert_int_eq(sf_daemon_stat(&d, "denied"), 2);

    /* Another key: dropped silently too; the client sees a timeout. */
    wrong = sf_client_keyed(d.port, k2, NULL, 100);
    ck_assert_int_eq(sc_get(wrong, id, 32, buf, sizeof(buf), &len), SC_TIMEOUT);
    sc_get_stats(wrong, &st);
    ck_assert_uint_eq(st.lookups, 1);
    ck_assert_uint_eq(st.timeouts, 1);
    ck_assert_uint_eq(st.errors + st.auth_failures, 0);
    ck_assert_int_eq(sf_daemon_stat(&d, "unknown_key"), 1);
    ck_assert_int_eq(sf_daemon_stat(&d, "puts"), 2); /* nothing of theirs was stored */

    /* Rollover: a daemon that holds k1 and already accepts k2; a client that
     * seals with k2 and still accepts k1 (the daemon answers with k1). */
    sf_start_daemon_args(&d2, args2);
    rolled = sf_client_keyed(d2.port, k2, k1, SF_LIVE_TIMEOUT_MS);
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
    sf_write_key_file(dir, "k", 0600, f.key, kpath, sizeof(kpath));
    sf_write_key_file(dir, "o", 0600, f.other_key, other, sizeof(other));
    f.fd = sf_silent_socket(&port);
    ck_assert_int_eq(pthread_create(&tid, NULL, forger_run, &f), 0);
    c = sf_client_keyed(port, kpath, NULL, SF_LIVE_TIMEOUT_MS);
    sf_make_key(id, 21, 1);
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

    sf_start_daemon(&d);
    c = sf_client_one(d.port, 100); /* one timeout stays under the breaker's 3 */
    sf_make_key(id, 22, 1);
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
    ck_assert_int_eq(sf_daemon_stat(&d, "gets"), 2); /* the stale one was answered */
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

    sf_start_daemon(&d);
    ck_assert_int_eq(sc_namespace_from_context("svc-a", 5, ns_a), 0);
    ck_assert_int_eq(sc_namespace_from_context("svc-b", 5, ns_b), 0);
    ck_assert(memcmp(ns_a, ns_b, SC_NAMESPACE_LEN) != 0);
    sc_options_init(&opt);
    opt.timeout_ms = SF_LIVE_TIMEOUT_MS;
    memcpy(opt.default_namespace, ns_a, SC_NAMESPACE_LEN);
    a = sf_client_opts(d.port, &opt);
    memcpy(opt.default_namespace, ns_b, SC_NAMESPACE_LEN);
    b = sf_client_opts(d.port, &opt);
    v1 = sf_client_proto(d.port, 1);
    sf_make_key(id, 23, 1);

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
    ck_assert_int_eq(sf_daemon_stat(&d, "entries"), 1);

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
    int port, fd = sf_silent_socket(&port);

    sf_start_daemon(&d);
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
    ck_assert_int_eq(sf_daemon_stat(&d, "puts"), 1);
    ck_assert_int_eq(sf_daemon_stat(&d, "removes"), 1); /* entries actually removed */

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
    ck_assert_int_eq(sf_daemon_stat(&d, "puts"), 3);

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
    sf_write_key_file(dir, "key", 0600, key, kpath, sizeof(kpath));
    sf_write_key_file(dir, "loose", 0640, other, loose, sizeof(loose));
    snprintf(file, sizeof(file), "%s/value", dir);
    write_file(file, 'v', 100);
    sf_start_daemon_args(&d, args);
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
    r.fd = sf_silent_socket(&r.port);
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
    ck_assert_int_eq(sf_daemon_stat(&d, "denied"), 2);
    /* A key file the library would refuse: 66, one line naming it. */
    ck_assert_int_eq(CTL(out, "-s", servers, "-k", loose, "get", id), 66);
    assert_one_line(out, loose);
    ck_assert_int_eq(CTL(out, "-s", servers, "-k", "/nonexistent/key", "get", id), 66);
    assert_one_line(out, "key file /nonexistent/key: ");
    th_rmtree(dir);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
}
END_TEST

static Suite *sessionc_v2_suite(void)
{
    Suite *s = suite_create("sessionc_v2");
    TCase *tc;

    tc = tcase_create("daemon");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_key_files);
    tcase_add_test(tc, test_sealed);
    tcase_add_test(tc, test_forged_answers);
    tcase_add_test(tc, test_late_answer);
    tcase_add_test(tc, test_namespaces);
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
    SRunner *sr = srunner_create(sessionc_v2_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
