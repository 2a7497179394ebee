/* cluster.h — a sessiond cluster on loopback for the scale-out tests
 * (check_cluster.c, check_failover.c): one cluster key file, the Redis
 * processes behind it, several sessiond nodes on one --backend URL that can
 * be killed and restarted on their port, and pairs of libsessionc TLS
 * servers ("A" and "B") attached to chosen nodes.
 *
 * Everything here fails the calling Check test on error (ck_assert), so it
 * is for START_TEST bodies only. Every wait is bounded and waits on a
 * condition (a daemon's log line), never on a sleep.
 */
#ifndef SESSIOND_TEST_CLUSTER_H
#define SESSIOND_TEST_CLUSTER_H

#include <stddef.h>

#include <openssl/ssl.h>

#include "harness.h"
#include "redis_proc.h"
#include "sessionc.h"
#include "tls_util.h"

#define CL_MAX_NODES 2
#define CL_MAX_REDIS 4 /* master, replica, two sentinels */

/* The session-ID context of every TLS server of the cluster (what
 * tu_server_ctx sets), hence the namespace of their sessions. */
#define CL_SID_CTX "sessiond-test"

/* Masks of nodes, for the server lists of libsessionc clients. */
#define CL_NODE1 0x1
#define CL_NODE2 0x2
#define CL_BOTH  (CL_NODE1 | CL_NODE2)

typedef struct cl_bed {
    char dir[256];
    char key_file[300]; /* the cluster key, 32 random bytes in hex, mode 0600 */
    char backend[256];  /* the --backend URL every node gets */
    char up_line[300];  /* the log line saying a node reached its backend ("": no wait) */
    th_daemon node[CL_MAX_NODES];
    int running[CL_MAX_NODES];
    int port[CL_MAX_NODES];      /* UDP port, kept so a restarted node gets the same one */
    rp_proc redis[CL_MAX_REDIS]; /* killed by cl_close */
} cl_bed;

/* A fresh temporary directory with a new cluster key file; no backend yet. */
void cl_open(cl_bed *b);

/* Every node from now on gets `--backend url` and, when up_line is not
 * NULL, is waited for until its log shows up_line. */
void cl_use_backend(cl_bed *b, const char *url, const char *up_line);

/* cl_use_backend("redis://127.0.0.1:PORT", "backend redis://127.0.0.1:PORT up"). */
void cl_use_redis(cl_bed *b, int redis_port);

/* Starts node i (on its earlier port if it ran before) with --key-file,
 * --backend and the NULL-terminated extra arguments (may be NULL), and
 * waits for the backend line. */
void cl_node_start(cl_bed *b, int i, const char *const *extra);

/* SIGKILL, as a crash would: no clean shutdown, nothing flushed. */
void cl_node_kill(cl_bed *b, int i);

/* SIGTERM; fails the test unless the node exits with status 0. */
void cl_node_stop(cl_bed *b, int i);

/* The value of `name=` in node i's stats line; fails the test if absent. */
long long cl_node_stat(cl_bed *b, int i, const char *name);

/* Waits until node i's log holds `needle` (anywhere); 0 or -1. */
int cl_node_wait_log(cl_bed *b, int i, const char *needle, int timeout_ms);

/* Stops the running nodes (a clean exit asserted), kills the Redis
 * processes, removes the directory. */
void cl_close(cl_bed *b);

/* "127.0.0.1:P1,127.0.0.1:P2" for the nodes in mask (CL_NODE1...). */
void cl_servers(const cl_bed *b, int mask, char *buf, size_t cap);

/* sc_options with the cluster key and CL_SID_CTX's namespace as the
 * default one (so raw operations read what the TLS servers stored). */
void cl_options(const cl_bed *b, sc_options *opt);

/* A libsessionc client of the nodes in mask; opt NULL: cl_options. */
sc_client *cl_client(const cl_bed *b, int mask, const sc_options *opt);

/* Two TLS servers of one cluster, A = 0 and B = 1, each with its own
 * SSL_CTX and its own sc_client, as two processes would have. */
typedef struct cl_pair {
    SSL_CTX *ctx[2];
    sc_client *sc[2];
} cl_pair;

/* A's client lists the nodes in mask_a, B's those in mask_b; opt NULL:
 * cl_options. */
void cl_pair_open(cl_pair *p, const cl_bed *b, const tu_cred *cred, const tu_server_opts *tls,
                  int mask_a, int mask_b, const sc_options *opt);

/* Frees the SSL_CTXs (detached first) and then the clients. */
void cl_pair_close(cl_pair *p);

#endif
