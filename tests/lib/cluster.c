/* cluster.c — a sessiond cluster on loopback for the scale-out tests; the
 * API and its rules are in cluster.h.
 *
 * How it works: cl_open makes a temporary directory holding the cluster key
 * (32 random bytes, hex, mode 0600: the format --key-file and libsessionc's
 * key_file read). Each node is a real sessiond started through the harness
 * (th_daemon_start, `-p 0` the first time so it picks a free port; the
 * port is remembered, and a restart passes it again so clients that list
 * the node find it where they left it). A node is ready when its log shows
 * the backend line the test names ("backend redis://H:P up", or Sentinel's
 * "master at" line): only then can a test expect sessions to cross nodes.
 *
 * The Redis processes a test starts are parked in the bed (cl_bed.redis)
 * so cl_close kills them even when they are not the test's concern any
 * more; they also die with the test process if an assertion ends it early
 * (redis_proc.c sets PR_SET_PDEATHSIG).
 */
#include "cluster.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "proto_v2.h"
#include "v2ops.h"

#define CL_UP_TIMEOUT_MS 10000

void cl_open(cl_bed *b)
{
    uint8_t key[PROTO_V2_CLUSTER_KEY_LEN];

    memset(b, 0, sizeof(*b));
    ck_assert_int_eq(th_tmpdir(b->dir, sizeof(b->dir)), 0);
    snprintf(b->key_file, sizeof(b->key_file), "%s/cluster.key", b->dir);
    ck_assert_int_eq(RAND_bytes(key, sizeof(key)), 1);
    v2t_write_key_file(b->key_file, key, 0600);
    OPENSSL_cleanse(key, sizeof(key));
}

void cl_use_backend(cl_bed *b, const char *url, const char *up_line)
{
    ck_assert_uint_lt(strlen(url), sizeof(b->backend));
    snprintf(b->backend, sizeof(b->backend), "%s", url);
    snprintf(b->up_line, sizeof(b->up_line), "%s", up_line != NULL ? up_line : "");
}

void cl_use_redis(cl_bed *b, int redis_port)
{
    char url[64];
    char up[96];

    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", redis_port);
    snprintf(up, sizeof(up), "backend %s up", url);
    cl_use_backend(b, url, up);
}

void cl_node_start(cl_bed *b, int i, const char *const *extra)
{
    const char *args[32];
    char port_arg[16];
    int n = 0;

    ck_assert_int_lt(i, CL_MAX_NODES);
    ck_assert_msg(!b->running[i], "node %d is already running", i + 1);
    args[n++] = "--key-file";
    args[n++] = b->key_file;
    if (b->backend[0] != '\0') {
        args[n++] = "--backend";
        args[n++] = b->backend;
    }
    if (b->port[i] > 0) {
        snprintf(port_arg, sizeof(port_arg), "%d", b->port[i]);
        args[n++] = "-p";
        args[n++] = port_arg;
    }
    for (size_t k = 0; extra != NULL && extra[k] != NULL; k++) {
        ck_assert_int_lt(n, 31);
        args[n++] = extra[k];
    }
    args[n] = NULL;
    ck_assert_msg(th_daemon_start(&b->node[i], args) == 0, "node %d did not start", i + 1);
    b->running[i] = 1;
    if (b->port[i] > 0)
        ck_assert_int_eq(b->node[i].port, b->port[i]);
    b->port[i] = b->node[i].port;
    if (b->up_line[0] != '\0' &&
        th_daemon_wait_log(&b->node[i], b->up_line, 0, CL_UP_TIMEOUT_MS) != 0) {
        /* Stopping it prints its log, which says why. */
        th_daemon_stop(&b->node[i]);
        b->running[i] = 0;
        ck_abort_msg("node %d never logged \"%s\"", i + 1, b->up_line);
    }
}

void cl_node_kill(cl_bed *b, int i)
{
    ck_assert_msg(b->running[i], "node %d is not running", i + 1);
    ck_assert_int_eq(kill(b->node[i].pid, SIGKILL), 0);
    /* Reaps it; a killed daemon "exits" 128 + 9, and the harness prints
     * its log for any non-zero status: expected noise here. */
    ck_assert_int_eq(th_daemon_stop(&b->node[i]), 128 + SIGKILL);
    b->running[i] = 0;
}

void cl_node_stop(cl_bed *b, int i)
{
    ck_assert_msg(b->running[i], "node %d is not running", i + 1);
    b->running[i] = 0;
    ck_assert_int_eq(th_daemon_stop(&b->node[i]), 0);
}

long long cl_node_stat(cl_bed *b, int i, const char *name)
{
    char line[4096];
    long long v;

    ck_assert_msg(b->running[i], "node %d is not running", i + 1);
    ck_assert_int_eq(th_daemon_stats(&b->node[i], line, sizeof(line)), 0);
    v = th_stat(line, name);
    ck_assert_msg(v >= 0, "node %d: no %s= in \"%s\"", i + 1, name, line);
    return v;
}

int cl_node_wait_log(cl_bed *b, int i, const char *needle, int timeout_ms)
{
    if (!b->running[i])
        return -1;
    return th_daemon_wait_log(&b->node[i], needle, 0, timeout_ms);
}

void cl_close(cl_bed *b)
{
    int clean = 1;

    for (int i = 0; i < CL_MAX_NODES; i++) {
        if (!b->running[i])
            continue;
        b->running[i] = 0;
        if (th_daemon_stop(&b->node[i]) != 0)
            clean = 0;
    }
    for (int i = 0; i < CL_MAX_REDIS; i++)
        rp_kill(&b->redis[i]);
    th_rmtree(b->dir);
    ck_assert_msg(clean, "a node did not exit cleanly (its log is above)");
}

void cl_servers(const cl_bed *b, int mask, char *buf, size_t cap)
{
    size_t used = 0;

    ck_assert_uint_gt(cap, 0);
    buf[0] = '\0';
    for (int i = 0; i < CL_MAX_NODES; i++) {
        int n;

        if (!(mask & (1 << i)))
            continue;
        ck_assert_msg(b->port[i] > 0, "node %d has never run", i + 1);
        n = snprintf(buf + used, cap - used, "%s127.0.0.1:%d", used > 0 ? "," : "", b->port[i]);
        ck_assert(n > 0 && (size_t)n < cap - used);
        used += (size_t)n;
    }
    ck_assert_uint_gt(used, 0);
}

void cl_options(const cl_bed *b, sc_options *opt)
{
    sc_options_init(opt);
    opt->key_file = b->key_file;
    ck_assert_int_eq(
        sc_namespace_from_context(CL_SID_CTX, strlen(CL_SID_CTX), opt->default_namespace), 0);
}

sc_client *cl_client(const cl_bed *b, int mask, const sc_options *opt)
{
    char servers[128];
    char err[512];
    sc_options own;
    sc_client *c;

    if (opt == NULL) {
        cl_options(b, &own);
        opt = &own;
    }
    cl_servers(b, mask, servers, sizeof(servers));
    c = sc_client_new(servers, opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "sc_client_new(%s): %s", servers, err);
    return c;
}

void cl_pair_open(cl_pair *p, const cl_bed *b, const tu_cred *cred, const tu_server_opts *tls,
                  int mask_a, int mask_b, const sc_options *opt)
{
    for (int i = 0; i < 2; i++) {
        p->ctx[i] = tu_server_ctx(cred, tls);
        ck_assert_ptr_nonnull(p->ctx[i]);
        ck_assert_int_eq(sc_set_session_id_context(p->ctx[i], (const unsigned char *)CL_SID_CTX,
                                                   strlen(CL_SID_CTX)),
                         0);
        p->sc[i] = cl_client(b, i == 0 ? mask_a : mask_b, opt);
        ck_assert_int_eq(sc_attach(p->sc[i], p->ctx[i], 0), 0);
    }
}

void cl_pair_close(cl_pair *p)
{
    for (int i = 0; i < 2; i++) {
        /* Detached first: freeing an attached SSL_CTX would remove its
         * cached sessions cluster-wide. */
        sc_detach(p->ctx[i]);
        SSL_CTX_free(p->ctx[i]);
        sc_client_free(p->sc[i]);
        p->ctx[i] = NULL;
        p->sc[i] = NULL;
    }
}
