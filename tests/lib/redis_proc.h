/* redis_proc.h — real redis-server and redis-sentinel processes for tests.
 *
 * Every process listens on 127.0.0.1 on a port that was free a moment ago
 * (th_free_tcp_port), keeps nothing on disk, and is killed by the kernel if
 * the test process dies (PR_SET_PDEATHSIG), so a crashed test leaves no
 * stray Redis behind. Starting returns only once the process answers, and
 * every wait polls a condition with a bounded deadline (never a fixed sleep).
 * See redis_proc.c for the details of each call.
 */
#ifndef SESSIOND_TEST_REDIS_PROC_H
#define SESSIOND_TEST_REDIS_PROC_H

#include <sys/types.h>

typedef struct rp_proc {
    pid_t pid; /* 0: not running */
    int port;
} rp_proc;

/* Starts redis-server on a free port: no persistence, `requirepass` if not
 * NULL, a replica of 127.0.0.1:replica_of_port if that is not 0. Waits (up
 * to 5 s) until it answers PING (or NOAUTH). A replica may still be
 * syncing: use rp_wait_role(port, "slave", ...) to wait for the link.
 * Returns 0, or -1 (p->pid is then 0). */
int rp_redis_start(rp_proc *p, const char *requirepass, int replica_of_port);

/* The same on a given port (0: a free one), e.g. to restart a killed Redis
 * where clients expect it. */
int rp_redis_start_on(rp_proc *p, int port, const char *requirepass, int replica_of_port);

/* Writes DIR/sentinel-PORT.conf (Sentinel rewrites its config, so `dir`
 * must be writable; its log goes to DIR/sentinel-PORT.log) and starts
 * `redis-sentinel CONF --port PORT` on a free port, monitoring
 * 127.0.0.1:master_port as master_name. Waits until it answers PING and
 * knows the master. Returns 0, or -1. */
int rp_sentinel_start(rp_proc *p, const char *dir, const char *master_name, int master_port,
                      int quorum, int down_after_ms, int failover_timeout_ms);

/* Waits up to timeout_ms until the sentinel on sentinel_port knows at least
 * `replicas` replicas of master `name` and `other_sentinels` other
 * sentinels. Sentinels learn about each other through the master's hello
 * channel (every 2 s): until they do, each one alone may start its own
 * failover, so tests wait for this before killing a master. 0, or -1. */
int rp_sentinel_wait_known(int sentinel_port, const char *name, int replicas, int other_sentinels,
                           int timeout_ms);

/* SIGKILL and reap; no-op if p->pid is 0. Sets pid to 0 (port kept). */
void rp_kill(rp_proc *p);

/* SIGSTOP / SIGCONT, to simulate a hung Redis. 0, or -1. */
int rp_stop(rp_proc *p);
int rp_cont(rp_proc *p);

/* One command on a short synchronous connection (200 ms connect/IO
 * timeout), hiredis format string. Returns a redisReply * (the caller
 * calls freeReplyObject), or NULL if unreachable or no reply. An error
 * reply is returned as such (type REDIS_REPLY_ERROR). */
void *rp_command(int port, const char *fmt, ...);

/* Waits up to timeout_ms until ROLE on `port` says `role` ("master" or
 * "slave"); for "slave" the replication link must also be up (state
 * "connected"). 0, or -1 on timeout. */
int rp_wait_role(int port, const char *role, int timeout_ms);

/* What the sentinel on sentinel_port thinks is the port of master `name`
 * (SENTINEL get-master-addr-by-name), or -1 if unknown/unreachable. */
int rp_sentinel_master_port(int sentinel_port, const char *name);

#endif
