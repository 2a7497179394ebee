/* check_nginx_haproxy.c — `sessionctl keys` against a real sessiond, and the
 * key files it writes fed to real nginx and HAProxy (Debian's nginx-light
 * and haproxy): a TLS session made on one server instance resumes on
 * another, also after a key rotation and a reload.
 *
 * The daemon runs with --ticket-keys and seconds-scale settings (rotate
 * ROTATE_S, lifetime LIFETIME_S). Each server instance has its own key
 * files, written by its own `sessionctl keys --format ...` run, as on
 * separate hosts. The client is the stock `openssl s_client` (-sess_out on
 * A, -sess_in on B, "Reused" expected) for TLS 1.2, where the ticket comes
 * inside the handshake; for TLS 1.3 the ticket arrives after it and
 * s_client with stdin at EOF may quit before reading it, so TLS 1.3 uses
 * the in-process client of tests/lib/tls_util.c, which waits for it.
 *
 * What is checked besides "Reused": the ticket a server issues carries the
 * name of the key sessionctl placed at the server's encrypting position
 * (nginx: the first file listed; HAProxy: the penultimate line), read back
 * from the session's ticket; after a rotation and `--reload`, the server
 * issues tickets under the new current key (so the reload really loaded
 * the new files) and still resumes the session made under the previous key.
 * Also: the listing shows names, states and times and never a key's bytes;
 * files are rewritten and the reload command run only on a change; a failed
 * reload is retried by the next run; an unreachable daemon or one without
 * ticket keys leaves existing files untouched with a non-zero exit.
 *
 * Processes: nginx in its normal master/worker mode in the foreground
 * (`daemon off`; single-process mode does not survive a reload), reloaded
 * with `nginx -s reload`; HAProxy in master-worker mode in the foreground
 * (-W -db), reloaded with SIGUSR2 to the master. Readiness and reload
 * completion are log lines (the old worker's exit, so no connection can
 * reach a worker with the old keys), waited for with inotify, bounded
 * (tests/lib/proc.c). Waiting for a rotation polls `sessionctl keys`
 * (bounded). Every process dies with the test (PR_SET_PDEATHSIG) and is
 * stopped at the end.
 */
#include <check.h>

#include "checks.h"
#include "harness.h"
#include "proc.h"
#include "tls_util.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Short enough for a rotation within a test, long enough that a rewrite,
 * a reload and a handshake fit in one period on a loaded machine (HAProxy
 * only keeps the key that encrypted just before the current one). */
#define ROTATE_S   "5"
#define LIFETIME_S "10"
/* nginx files for these settings: current, next, ceil(10 / 5) old. */
#define NGINX_FILES 4

#define READY_TIMEOUT_MS    10000
#define ROTATION_TIMEOUT_MS 12000 /* two rotate periods and some */
#define SESSION_WAIT_MS     2000
#define OUT_MAX             65536

/* sessionctl's exit codes (client/sessionctl.c). */
#define CTL_OK       0
#define CTL_NOANSWER 2
#define CTL_REFUSED  3
#define CTL_USAGE    64
#define CTL_TEMPFAIL 75

/* ---- the test bed ------------------------------------------------------- */

typedef enum server_kind { SERVER_NGINX, SERVER_HAPROXY } server_kind;

typedef struct bed {
    char dir[256];
    char cluster_key[PATH_MAX];
    char cert[PATH_MAX];
    char key[PATH_MAX];
    char pem[PATH_MAX]; /* cert + key in one file, for HAProxy */
    char servers[64];   /* the daemon, for sessionctl -s */
    th_daemon d;
    int daemon_up;
    server_kind kind;
    tp_proc srv[2];
    int port[2];
    char conf[2][PATH_MAX];
    char keys[2][PATH_MAX]; /* --out PATH of each instance */
} bed;

static tu_cred g_server;

static void bed_fail(bed *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bed_fail(bed *b, const char *fmt, ...)
{
    char why[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    for (int i = 0; i < 2; i++)
        if (b->srv[i].pid > 0)
            tp_dump(&b->srv[i], i == 0 ? "server A" : "server B");
    ck_abort_msg("%s", why);
}

/* A random cluster key in hex, mode 0600. */
static void write_cluster_key(const char *path)
{
    unsigned char key[32];
    char hex[66];

    ck_assert_int_eq(RAND_bytes(key, sizeof(key)), 1);
    for (size_t i = 0; i < sizeof(key); i++)
        snprintf(hex + 2 * i, 3, "%02x", key[i]);
    hex[64] = '\n';
    ck_assert_int_eq(th_write_file(path, hex, 65, 0600), 0);
}

/* Appends the contents of `from` to the file `to`. */
static void append_file(const char *to, const char *from)
{
    char buf[8192];
    FILE *in = fopen(from, "r"), *out = fopen(to, "a");
    size_t n;

    ck_assert_ptr_nonnull(in);
    ck_assert_ptr_nonnull(out);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
    fclose(in);
    ck_assert_int_eq(fclose(out), 0);
}

/* A daemon with ticket keys (or without, for the refusal test), waiting
 * for its first ring. */
static void bed_open(bed *b, server_kind kind, int ticket_keys)
{
    const char *with_keys[] = {
        "--key-file", b->cluster_key,      "--ticket-keys", "--ticket-rotate",
        ROTATE_S,     "--ticket-lifetime", LIFETIME_S,      NULL};
    const char *without_keys[] = {"--key-file", b->cluster_key, NULL};

    char dir[sizeof(b->dir)];

    memset(b, 0, sizeof(*b));
    b->kind = kind;
    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    memcpy(b->dir, dir, sizeof(dir));
    snprintf(b->cluster_key, sizeof(b->cluster_key), "%s/cluster.key", dir);
    snprintf(b->cert, sizeof(b->cert), "%s/cert.pem", dir);
    snprintf(b->key, sizeof(b->key), "%s/key.pem", dir);
    snprintf(b->pem, sizeof(b->pem), "%s/server.pem", dir);
    write_cluster_key(b->cluster_key);
    ck_assert_int_eq(tu_cred_write_pem(&g_server, b->cert, b->key), 0);
    ck_assert_int_eq(th_write_file(b->pem, "", 0, 0600), 0);
    append_file(b->pem, b->cert);
    append_file(b->pem, b->key);
    for (int i = 0; i < 2; i++) {
        snprintf(b->keys[i], sizeof(b->keys[i]), "%s/%s%c.keys", dir,
                 kind == SERVER_NGINX ? "nginx" : "haproxy", 'A' + i);
        snprintf(b->conf[i], sizeof(b->conf[i]), "%s/%s%c.conf", dir,
                 kind == SERVER_NGINX ? "nginx" : "haproxy", 'A' + i);
    }
    ck_assert_int_eq(th_daemon_start(&b->d, ticket_keys ? with_keys : without_keys), 0);
    b->daemon_up = 1;
    snprintf(b->servers, sizeof(b->servers), "127.0.0.1:%d", b->d.port);
    if (ticket_keys)
        ck_assert_msg(th_daemon_wait_log(&b->d, "ticket keys ready", 0, READY_TIMEOUT_MS) == 0,
                      "sessiond did not log \"ticket keys ready\"");
}

static void bed_close(bed *b)
{
    for (int i = 0; i < 2; i++)
        tp_stop(&b->srv[i]);
    if (b->daemon_up)
        ck_assert_int_eq(th_daemon_stop(&b->d), 0);
    th_rmtree(b->dir);
}

/* ---- sessionctl --------------------------------------------------------- */

/* Runs $SESSIONCTL -s <daemon> -k <key> followed by the NULL-terminated
 * arguments (a later -t overrides ours); its output (stdout and stderr) in
 * out. Returns its status. */
static int ctl(bed *b, char *out, size_t cap, ...)
{
    /* A generous timeout: the sanitizer build of the daemon can be slow to answer. */
    const char *argv[20] = {getenv("SESSIONCTL"), "-s", b->servers, "-k",
                            b->cluster_key,       "-t", "2000"};
    size_t n = 7;
    const char *arg;
    va_list ap;

    ck_assert_msg(argv[0] != NULL, "SESSIONCTL is not set (tests/run.sh sets it)");
    va_start(ap, cap);
    while ((arg = va_arg(ap, const char *)) != NULL && n < 19)
        argv[n++] = arg;
    va_end(ap);
    argv[n] = NULL;
    return th_run(argv, out, cap);
}

/* The sessiond ring lacks its next key for a moment after each rotation
 * (until its next tick), and answers UNAVAILABLE then: retried, bounded. */
static int ctl_write(bed *b, int i, const char *reload, char *out, size_t cap)
{
    const char *format = b->kind == SERVER_NGINX ? "nginx" : "haproxy";
    int64_t deadline = th_now_ms() + 3000;
    int rc;

    for (;;) {
        rc = reload != NULL
                 ? ctl(b, out, cap, "keys", "--format", format, "--out", b->keys[i], "--reload",
                       reload, (char *)NULL)
                 : ctl(b, out, cap, "keys", "--format", format, "--out", b->keys[i], (char *)NULL);
        if (rc != CTL_REFUSED || th_now_ms() > deadline)
            return rc;
        poll(NULL, 0, 50);
    }
}

/* The 8-hex-digit name of the key the listing calls current; 0, or -1. */
static int current_name(bed *b, char name[9])
{
    char out[OUT_MAX];
    const char *line;

    if (ctl(b, out, sizeof(out), "keys", (char *)NULL) != CTL_OK)
        return -1;
    for (line = out; line != NULL && *line != '\0'; line = strchr(line, '\n'), line += !!line)
        if (strncmp(line + 8, " current ", 9) == 0) {
            memcpy(name, line, 8);
            name[8] = '\0';
            return 0;
        }
    return -1;
}

/* Polls the listing until the current key is no longer `from` (bounded).
 * The daemon answers between rotations, so this is a wait on a condition. */
static void wait_rotation(bed *b, const char *from, char to[9])
{
    int64_t deadline = th_now_ms() + ROTATION_TIMEOUT_MS;
    char was[9];

    snprintf(was, sizeof(was), "%s", from); /* from and to may be one buffer */
    for (;;) {
        if (current_name(b, to) == 0 && strcmp(to, was) != 0)
            return;
        if (th_now_ms() > deadline)
            bed_fail(b, "no key rotation within %d ms (current %s)", ROTATION_TIMEOUT_MS, was);
        poll(NULL, 0, 100);
    }
}

static size_t read_file(const char *path, void *buf, size_t cap)
{
    FILE *f = fopen(path, "rb");
    size_t n;

    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    n = fread(buf, 1, cap, f);
    fclose(f);
    return n;
}

static void hex8(const unsigned char *name, char out[9])
{
    snprintf(out, 9, "%02x%02x%02x%02x", name[0], name[1], name[2], name[3]);
}

/* The short name of the key at the server's encrypting position in the
 * files of instance i: nginx's PATH.0, HAProxy's penultimate line. */
static void encrypting_name(bed *b, int i, char out[9])
{
    char path[PATH_MAX + 16];
    unsigned char raw[96];

    if (b->kind == SERVER_NGINX) {
        snprintf(path, sizeof(path), "%s.0", b->keys[i]);
        ck_assert_uint_eq(read_file(path, raw, sizeof(raw)), 80);
    } else {
        char text[1024];
        size_t len = read_file(b->keys[i], text, sizeof(text) - 1);

        ck_assert_uint_eq(len, 3 * 109);
        ck_assert_int_eq(EVP_DecodeBlock(raw, (unsigned char *)text + 109, 108), 81);
    }
    hex8(raw, out);
    OPENSSL_cleanse(raw, sizeof(raw));
}

/* The short name of the key a TLS 1.2 session's ticket was sealed with
 * (OpenSSL's ticket starts with the 16-byte key name). */
static void ticket_name(const SSL_SESSION *sess, char out[9])
{
    const unsigned char *tick = NULL;
    size_t len = 0;

    SSL_SESSION_get0_ticket(sess, &tick, &len);
    ck_assert_uint_ge(len, 16);
    hex8(tick, out);
}

static SSL_SESSION *read_session(const char *path)
{
    FILE *f = fopen(path, "r");
    SSL_SESSION *sess;

    ck_assert_msg(f != NULL, "open %s: %s", path, strerror(errno));
    sess = PEM_read_SSL_SESSION(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_ptr_nonnull(sess);
    return sess;
}

/* ---- servers ------------------------------------------------------------ */

static const char *program(const char *env, const char *fallback)
{
    const char *p = getenv(env);

    return p != NULL && *p != '\0' ? p : fallback;
}

static void nginx_conf(bed *b, int i)
{
    FILE *f;

    f = fopen(b->conf[i], "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "daemon off;\n"
            "worker_processes 1;\n"
            "pid %s/nginx%c.pid;\n"
            "error_log %s notice;\n"
            "events { worker_connections 64; }\n"
            "http {\n"
            "    access_log off;\n"
            "    client_body_temp_path %s/body%c;\n"
            "    proxy_temp_path %s/proxy%c;\n"
            "    fastcgi_temp_path %s/fastcgi%c;\n"
            "    uwsgi_temp_path %s/uwsgi%c;\n"
            "    scgi_temp_path %s/scgi%c;\n"
            "    server {\n"
            "        listen 127.0.0.1:%d ssl;\n"
            "        server_name localhost;\n"
            "        ssl_certificate %s;\n"
            "        ssl_certificate_key %s;\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;\n"
            "        ssl_session_timeout 1h;\n",
            b->dir, 'A' + i, b->srv[i].log_path, b->dir, 'A' + i, b->dir, 'A' + i, b->dir, 'A' + i,
            b->dir, 'A' + i, b->dir, 'A' + i, b->port[i], b->cert, b->key);
    /* The first file listed encrypts: sessionctl puts the current key in .0. */
    for (int k = 0; k < NGINX_FILES; k++)
        fprintf(f, "        ssl_session_ticket_key %s.%d;\n", b->keys[i], k);
    fprintf(f, "        location / { return 200 \"ok\\n\"; }\n"
               "    }\n"
               "}\n");
    ck_assert_int_eq(fclose(f), 0);
}

static void haproxy_conf(bed *b, int i)
{
    FILE *f;

    f = fopen(b->conf[i], "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "defaults\n"
            "    mode http\n"
            "    timeout connect 1s\n"
            "    timeout client 5s\n"
            "    timeout server 5s\n"
            "frontend fe\n"
            "    bind 127.0.0.1:%d ssl crt %s tls-ticket-keys %s\n"
            "    http-request return status 200 content-type text/plain string ok\n",
            b->port[i], b->pem, b->keys[i]);
    ck_assert_int_eq(fclose(f), 0);
}

/* The reload command sessionctl runs for instance i. */
static void reload_command(bed *b, int i, char *cmd, size_t cap)
{
    if (b->kind == SERVER_NGINX)
        snprintf(cmd, cap, "%s -p %s -c %s -e %s -s reload", program("NGINX", "/usr/sbin/nginx"),
                 b->dir, b->conf[i], b->srv[i].log_path);
    else
        snprintf(cmd, cap, "kill -USR2 %d", (int)b->srv[i].pid);
}

/* The worker serving now, from the newest "started" line after `from`. */
static pid_t worker_pid(bed *b, int i, size_t from)
{
    const char *needle = b->kind == SERVER_NGINX ? "start worker process " : "New worker (";
    char line[512];
    const char *p;

    if (tp_wait_log(&b->srv[i], needle, from, line, sizeof(line), READY_TIMEOUT_MS) != 0)
        bed_fail(b, "server %c did not start a worker (is %s installed?)", 'A' + i,
                 b->kind == SERVER_NGINX ? "nginx-light" : "haproxy");
    p = strstr(line, needle);
    return (pid_t)atoi(p + strlen(needle));
}

/* Writes instance i's key files and starts it; returns its worker's pid. */
static pid_t server_start(bed *b, int i)
{
    char out[OUT_MAX], log[PATH_MAX];
    const char *nginx = program("NGINX", "/usr/sbin/nginx");
    const char *haproxy = program("HAPROXY", "/usr/sbin/haproxy");
    int rc;

    ck_assert_msg(access(b->kind == SERVER_NGINX ? nginx : haproxy, X_OK) == 0,
                  "%s not installed (tests/deps.sh installs nginx-light and haproxy)",
                  b->kind == SERVER_NGINX ? nginx : haproxy);
    rc = ctl_write(b, i, NULL, out, sizeof(out));
    ck_assert_msg(rc == CTL_OK && strstr(out, "written") != NULL, "sessionctl keys: %d: %s", rc,
                  out);
    b->port[i] = th_free_tcp_port();
    ck_assert_int_gt(b->port[i], 0);
    snprintf(log, sizeof(log), "%s/server%c.log", b->dir, 'A' + i);
    snprintf(b->srv[i].log_path, sizeof(b->srv[i].log_path), "%s", log);
    if (b->kind == SERVER_NGINX) {
        const char *argv[] = {nginx, "-p", b->dir, "-c", b->conf[i], "-e", log, NULL};

        nginx_conf(b, i);
        tp_start(&b->srv[i], argv, log);
    } else {
        const char *argv[] = {haproxy, "-W", "-db", "-f", b->conf[i], NULL};

        haproxy_conf(b, i);
        tp_start(&b->srv[i], argv, log);
    }
    return worker_pid(b, i, 0);
}

/* Rewrites instance i's files through sessionctl with --reload, and waits
 * until the worker that had the old keys is gone. Returns the new worker. */
static pid_t server_rewrite_reload(bed *b, int i, pid_t old_worker)
{
    char out[OUT_MAX], cmd[PATH_MAX * 4], needle[64];
    size_t from = tp_log_size(&b->srv[i]);
    int rc;

    reload_command(b, i, cmd, sizeof(cmd));
    rc = ctl_write(b, i, cmd, out, sizeof(out));
    if (rc != CTL_OK || strstr(out, "written") == NULL || strstr(out, "reloaded") == NULL)
        bed_fail(b, "sessionctl keys --reload: exit %d: %s", rc, out);
    if (b->kind == SERVER_NGINX)
        snprintf(needle, sizeof(needle), "worker process %d exited", (int)old_worker);
    else
        snprintf(needle, sizeof(needle), "Former worker (%d) exited", (int)old_worker);
    if (tp_wait_log(&b->srv[i], needle, from, NULL, 0, READY_TIMEOUT_MS) != 0)
        bed_fail(b, "server %c: the reload did not complete", 'A' + i);
    return worker_pid(b, i, from);
}

/* openssl s_client -tls1_2 to instance i with -sess_out or -sess_in FILE;
 * 1 when it printed `want` ("New" or "Reused"). */
static int s_client(bed *b, int i, const char *sess_flag, const char *sess_path, const char *want)
{
    char connect[32], out[OUT_MAX], expect[32];
    const char *argv[] = {"openssl", "s_client", "-connect",    connect,     "-tls1_2",
                          sess_flag, sess_path,  "-servername", "localhost", NULL};
    int status;

    snprintf(connect, sizeof(connect), "127.0.0.1:%d", b->port[i]);
    snprintf(expect, sizeof(expect), "%s, TLSv1.2,", want);
    status = th_run(argv, out, sizeof(out));
    if (status != 0)
        bed_fail(b, "s_client to %c exited %d:\n%s", 'A' + i, status, out);
    if (strstr(out, expect) == NULL) {
        fprintf(stderr, "s_client to %c, wanted \"%s\":\n%s\n", 'A' + i, expect, out);
        return 0;
    }
    return 1;
}

/* TLS 1.3 in-process: a full handshake with A, then the session offered to
 * B. Returns 1 when B resumed it. */
static int tls13_resumes(bed *b)
{
    SSL_CTX *client_ctx = tu_client_ctx(TLS1_3_VERSION, NULL);
    tu_hs_result first, second;
    int resumed;

    ck_assert_ptr_nonnull(client_ctx);
    if (tu_tcp_handshake(client_ctx, b->port[0], NULL, SESSION_WAIT_MS, &first) != 0)
        bed_fail(b, "TLS 1.3 handshake with A: %s", first.error);
    ck_assert_msg(first.session != NULL, "no TLS 1.3 ticket from A");
    if (tu_tcp_handshake(client_ctx, b->port[1], first.session, SESSION_WAIT_MS, &second) != 0)
        bed_fail(b, "TLS 1.3 handshake with B: %s", second.error);
    ck_assert_int_eq(second.version, TLS1_3_VERSION);
    resumed = second.resumed;
    tu_hs_result_clear(&first);
    tu_hs_result_clear(&second);
    SSL_CTX_free(client_ctx);
    return resumed;
}

/* The acceptance test for one server kind:
 *   1. A and B start on their own files; a TLS 1.2 session from A carries
 *      the ticket name of A's encrypting position and is "Reused" on B;
 *      a TLS 1.3 session from A resumes on B.
 *   2. After a rotation, B's files are rewritten and B reloaded: B now
 *      issues tickets under the new current key, and the session made on A
 *      under the previous key still resumes on B (and is renewed under the
 *      new key). */
static void run_servers(server_kind kind)
{
    char sess1[PATH_MAX], name_a[9], name_tick[9], cur_before[9], cur_after[9], name_b[9];
    SSL_CTX *client_ctx;
    SSL_SESSION *sess;
    tu_hs_result res;
    pid_t worker_b;
    bed b;

    bed_open(&b, kind, 1);
    /* Start right after a rotation, so the whole test fits in two periods. */
    ck_assert_int_eq(current_name(&b, cur_before), 0);
    wait_rotation(&b, cur_before, cur_before);
    server_start(&b, 0);
    worker_b = server_start(&b, 1);

    snprintf(sess1, sizeof(sess1), "%s/session1.pem", b.dir);
    if (!s_client(&b, 0, "-sess_out", sess1, "New"))
        bed_fail(&b, "TLS 1.2 handshake with A was not a new session");
    sess = read_session(sess1);
    ticket_name(sess, name_tick);
    SSL_SESSION_free(sess);
    encrypting_name(&b, 0, name_a);
    ck_assert_msg(strcmp(name_tick, name_a) == 0,
                  "A sealed its ticket with key %s, its encrypting position holds %s", name_tick,
                  name_a);
    if (!s_client(&b, 1, "-sess_in", sess1, "Reused"))
        bed_fail(&b, "the TLS 1.2 session from A was not reused on B");
    ck_assert_msg(tls13_resumes(&b), "the TLS 1.3 session from A was not resumed on B");
    fprintf(stderr, "%s: A's ticket (key %s) reused on B; TLS 1.3 resumed on B\n",
            kind == SERVER_NGINX ? "nginx" : "haproxy", name_tick);

    /* Rotation: the key of A's ticket stops encrypting. */
    wait_rotation(&b, name_tick, cur_after);
    (void)server_rewrite_reload(&b, 1, worker_b);
    encrypting_name(&b, 1, name_b);
    ck_assert_msg(strcmp(name_b, cur_after) == 0,
                  "B's encrypting position holds %s, the daemon's current key is %s", name_b,
                  cur_after);
    if (!s_client(&b, 1, "-sess_in", sess1, "Reused"))
        bed_fail(&b, "after rotation and reload, the session from A (key %s) was not reused on B",
                 name_tick);

    /* B resumed it under a key it no longer encrypts with: the ticket is
     * renewed, under B's new encrypting key. */
    client_ctx = tu_client_ctx(TLS1_2_VERSION, NULL);
    ck_assert_ptr_nonnull(client_ctx);
    sess = read_session(sess1);
    if (tu_tcp_handshake(client_ctx, b.port[1], sess, SESSION_WAIT_MS, &res) != 0)
        bed_fail(&b, "TLS 1.2 handshake with B: %s", res.error);
    ck_assert_msg(res.resumed, "in-process client: A's session not resumed on B");
    ck_assert_ptr_nonnull(res.session);
    ticket_name(res.session, name_tick);
    ck_assert_msg(strcmp(name_tick, name_b) == 0, "B renewed the ticket under %s, expected %s",
                  name_tick, name_b);
    tu_hs_result_clear(&res);
    SSL_SESSION_free(sess);
    SSL_CTX_free(client_ctx);
    fprintf(stderr, "%s: after rotation (%s -> %s) and reload, reused on B, renewed under %s\n",
            kind == SERVER_NGINX ? "nginx" : "haproxy", name_a, cur_after, name_b);
    bed_close(&b);
}

START_TEST(test_nginx)
{
    run_servers(SERVER_NGINX);
}
END_TEST

START_TEST(test_haproxy)
{
    run_servers(SERVER_HAPROXY);
}
END_TEST

/* ---- sessionctl keys on its own ----------------------------------------- */

static int is_iso_time(const char *s)
{
    /* 2026-11-24T19:00:00Z */
    static const char shape[] = "dddd-dd-ddTdd:dd:ddZ";

    for (size_t i = 0; i < sizeof(shape) - 1; i++)
        if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
            return 0;
    return 1;
}

/* The listing: one line per key, "NAME8 STATE NOT_BEFORE NOT_AFTER", one
 * current and one next, times in order; and no key bytes anywhere (checked
 * against the nginx files written from the same ring). */
START_TEST(test_list)
{
    char out[OUT_MAX], name[9], files_out[OUT_MAX], path[PATH_MAX + 16];
    int current = 0, next = 0, lines = 0;
    unsigned char raw[80];
    bed b;

    bed_open(&b, SERVER_NGINX, 1);
    ck_assert_int_eq(current_name(&b, name), 0);
    wait_rotation(&b, name, name); /* a full ring period ahead: stable */
    ck_assert_int_eq(ctl(&b, out, sizeof(out), "keys", (char *)NULL), CTL_OK);
    ck_assert_int_eq(ctl_write(&b, 0, NULL, files_out, sizeof(files_out)), CTL_OK);
    for (char *line = out; *line != '\0';) {
        char *end = strchr(line, '\n');
        char state[16] = "";

        ck_assert_ptr_nonnull(end);
        *end = '\0';
        ck_assert_msg(strspn(line, "0123456789abcdef") == 8 && line[8] == ' ', "line: %s", line);
        ck_assert_int_eq(sscanf(line + 9, "%15s", state), 1);
        current += strcmp(state, "current") == 0;
        next += strcmp(state, "next") == 0;
        ck_assert_msg(strcmp(state, "current") == 0 || strcmp(state, "next") == 0 ||
                          strcmp(state, "old") == 0,
                      "state: %s", line);
        ck_assert_msg(is_iso_time(line + 17) && line[37] == ' ' && is_iso_time(line + 38) &&
                          line[58] == '\0',
                      "times: %s", line);
        ck_assert_msg(strncmp(line + 17, line + 38, 20) < 0, "not_before >= not_after: %s", line);
        lines++;
        line = end + 1;
    }
    ck_assert_int_eq(current, 1);
    ck_assert_int_eq(next, 1);
    ck_assert_int_ge(lines, 2);
    ck_assert_int_le(lines, NGINX_FILES);
    /* No key bytes are printed: not the full name, and not even the first
     * 4 bytes of the HMAC or AES key (nginx file: name, HMAC, AES). */
    for (int k = 0; k < NGINX_FILES; k++) {
        static const struct {
            int off, len;
        } field[] = {{0, 16}, {16, 4}, {48, 4}};

        snprintf(path, sizeof(path), "%s.%d", b.keys[0], k);
        ck_assert_uint_eq(read_file(path, raw, sizeof(raw)), 80);
        for (size_t f = 0; f < sizeof(field) / sizeof(field[0]); f++) {
            char hex[33];

            for (int j = 0; j < field[f].len; j++)
                snprintf(hex + 2 * j, 3, "%02x", raw[field[f].off + j]);
            ck_assert_msg(strstr(out, hex) == NULL, "key bytes in the listing:\n%s", out);
            OPENSSL_cleanse(hex, sizeof(hex));
        }
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    bed_close(&b);
}
END_TEST

static int file_exists(const char *path)
{
    return access(path, F_OK) == 0;
}

/* Written once (mode 0600, 80 bytes each), then unchanged: no rewrite, no
 * reload; a failing reload exits 75 and is retried by the next run even
 * though nothing changed; a success clears the retry. HAProxy's file: three
 * base64 lines. */
START_TEST(test_write_only_on_change)
{
    char out[OUT_MAX], name[9], marker[PATH_MAX + 16], pending[PATH_MAX + 32], path[PATH_MAX + 16];
    char touch[PATH_MAX + 32];
    struct stat st, st2;
    bed b;

    bed_open(&b, SERVER_NGINX, 1);
    snprintf(marker, sizeof(marker), "%s/reloaded", b.dir);
    snprintf(pending, sizeof(pending), "%s.reload-pending", b.keys[0]);
    snprintf(touch, sizeof(touch), "touch %s", marker);
    ck_assert_int_eq(current_name(&b, name), 0);
    wait_rotation(&b, name, name);

    ck_assert_int_eq(ctl_write(&b, 0, touch, out, sizeof(out)), CTL_OK);
    ck_assert_msg(strstr(out, "4 of 4 files written") != NULL, "%s", out);
    ck_assert_msg(file_exists(marker), "the reload command did not run after a change");
    ck_assert(!file_exists(pending));
    for (int k = 0; k < NGINX_FILES; k++) {
        snprintf(path, sizeof(path), "%s.%d", b.keys[0], k);
        ck_assert_int_eq(stat(path, &st), 0);
        ck_assert_int_eq(st.st_mode & 07777, 0600);
        ck_assert_int_eq(st.st_size, 80);
    }
    snprintf(path, sizeof(path), "%s.0", b.keys[0]);
    ck_assert_int_eq(stat(path, &st), 0);

    unlink(marker);
    ck_assert_int_eq(ctl_write(&b, 0, touch, out, sizeof(out)), CTL_OK);
    ck_assert_msg(strstr(out, "unchanged") != NULL, "%s", out);
    ck_assert_msg(!file_exists(marker), "the reload command ran without a change");
    ck_assert_int_eq(stat(path, &st2), 0);
    ck_assert_msg(st.st_ino == st2.st_ino, "an unchanged file was replaced");

    /* A file changed behind our back (or lost its mode) is rewritten. */
    ck_assert_int_eq(chmod(path, 0644), 0);
    ck_assert_int_eq(ctl_write(&b, 0, NULL, out, sizeof(out)), CTL_OK);
    ck_assert_msg(strstr(out, "1 of 4 files written") != NULL, "%s", out);
    ck_assert_int_eq(stat(path, &st2), 0);
    ck_assert_int_eq(st2.st_mode & 07777, 0600);

    /* A reload that fails: exit 75, retried next time although unchanged. */
    ck_assert_int_eq(chmod(path, 0644), 0);
    ck_assert_int_eq(ctl_write(&b, 0, "exit 3", out, sizeof(out)), CTL_TEMPFAIL);
    ck_assert_msg(strstr(out, "reload command failed") != NULL, "%s", out);
    ck_assert(file_exists(pending));
    ck_assert_int_eq(ctl_write(&b, 0, touch, out, sizeof(out)), CTL_OK);
    ck_assert_msg(strstr(out, "unchanged") != NULL && strstr(out, "reloaded") != NULL, "%s", out);
    ck_assert_msg(file_exists(marker), "a pending reload was not retried");
    ck_assert(!file_exists(pending));

    /* HAProxy: one file of three base64 lines, mode 0600. */
    b.kind = SERVER_HAPROXY;
    ck_assert_int_eq(ctl_write(&b, 1, NULL, out, sizeof(out)), CTL_OK);
    ck_assert_int_eq(stat(b.keys[1], &st), 0);
    ck_assert_int_eq(st.st_mode & 07777, 0600);
    ck_assert_int_eq(st.st_size, 3 * 109);
    bed_close(&b);
}
END_TEST

/* Nothing usable from the daemon: a non-zero exit with one line, and the
 * files as they were (same inode, same bytes), no reload. */
START_TEST(test_failures_leave_files)
{
    char out[OUT_MAX], marker[PATH_MAX + 16], touch[PATH_MAX + 32], path[PATH_MAX + 16];
    unsigned char before[80], after[80];
    struct stat st, st2;
    bed b, off;

    bed_open(&b, SERVER_NGINX, 1);
    snprintf(marker, sizeof(marker), "%s/reloaded", b.dir);
    snprintf(touch, sizeof(touch), "touch %s", marker);
    ck_assert_int_eq(ctl_write(&b, 0, NULL, out, sizeof(out)), CTL_OK);
    snprintf(path, sizeof(path), "%s.0", b.keys[0]);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(read_file(path, before, sizeof(before)), 80);

    /* Without -k: usage error, before anything is sent. */
    {
        const char *argv[] = {getenv("SESSIONCTL"), "-s", b.servers, "keys", NULL};

        ck_assert_int_eq(th_run(argv, out, sizeof(out)), CTL_USAGE);
        ck_assert_msg(strstr(out, "--key-file") != NULL, "%s", out);
    }

    /* The daemon gone: no answer. */
    ck_assert_int_eq(th_daemon_stop(&b.d), 0);
    b.daemon_up = 0;
    ck_assert_int_eq(ctl(&b, out, sizeof(out), "-t", "100", "keys", "--format", "nginx", "--out",
                         b.keys[0], "--reload", touch, (char *)NULL),
                     CTL_NOANSWER);
    ck_assert_msg(strchr(out, '\n') == strrchr(out, '\n'), "more than one line: %s", out);

    /* A daemon without ticket keys: refused, with the reason. */
    bed_open(&off, SERVER_NGINX, 0);
    snprintf(b.servers, sizeof(b.servers), "%s", off.servers);
    snprintf(b.cluster_key, sizeof(b.cluster_key), "%s", off.cluster_key);
    ck_assert_int_eq(ctl(&b, out, sizeof(out), "keys", "--format", "nginx", "--out", b.keys[0],
                         "--reload", touch, (char *)NULL),
                     CTL_REFUSED);
    ck_assert_msg(strstr(out, "no ticket ring") != NULL, "%s", out);
    bed_close(&off);

    ck_assert_int_eq(stat(path, &st2), 0);
    ck_assert(st.st_ino == st2.st_ino && st.st_mtime == st2.st_mtime);
    ck_assert_uint_eq(read_file(path, after, sizeof(after)), 80);
    ck_assert_mem_eq(before, after, sizeof(before));
    ck_assert_msg(!file_exists(marker), "reload ran although nothing was written");
    OPENSSL_cleanse(before, sizeof(before));
    OPENSSL_cleanse(after, sizeof(after));
    bed_close(&b);
}
END_TEST

static Suite *servers_suite(void)
{
    Suite *s = suite_create("nginx_haproxy");
    TCase *tc = tcase_create("keys");

    /* Each server test waits for up to two rotations of ROTATE_S seconds. */
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_list);
    tcase_add_test(tc, test_write_only_on_change);
    tcase_add_test(tc, test_failures_leave_files);
    tcase_add_test(tc, test_nginx);
    tcase_add_test(tc, test_haproxy);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite_with_server(servers_suite(), &g_server);
}
