/* redis_proc.c — start, stop and question real Redis and Sentinel processes.
 *
 * Processes are forked children with stdio on /dev/null and
 * PR_SET_PDEATHSIG=SIGKILL, so they die with the test (Check forks one
 * process per test: they die with that test). Redis gets --save "" and
 * --appendonly no; its dump file name still carries the port
 * (rp-PORT.rdb in /tmp, removed by rp_kill) because a master feeding a
 * replica through disk, or a replica loading one, writes it, and two
 * tests in parallel must not share it (a replica with an empty dataset
 * loads the stream straight from the socket, repl-diskless-load
 * on-empty-db, so usually there is no file at all). repl-diskless-sync-delay
 * is 0: the default waits 5 s for more replicas before the first sync. A
 * Sentinel needs a config file it can rewrite: rp_sentinel_start writes one
 * into the caller's directory (the caller removes the directory).
 *
 * Readiness is a condition polled every 5 ms up to a deadline: the port
 * answers PING, ROLE says what we wait for, the Sentinel knows its master.
 * The cheaper alternative, waiting for a log line, would need a reader on
 * each process' output; a poll of a few milliseconds costs nothing here.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis.h>

#include "harness.h"
#include "redis_proc.h"

#define RP_START_WAIT_MS 5000
#define RP_POLL_MS       5

static uint64_t rp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The pause between two polls of a condition (bounded by the caller's deadline). */
static void rp_poll_pause(void)
{
    struct timespec ts = {0, RP_POLL_MS * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static redisContext *rp_connect(int port)
{
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c && c->err) {
        redisFree(c);
        return NULL;
    }
    if (c)
        redisSetTimeout(c, tv);
    return c;
}

void *rp_command(int port, const char *fmt, ...)
{
    redisContext *c = rp_connect(port);
    if (!c)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    void *reply = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return reply;
}

/* Forks and execs argv with stdio on /dev/null; the child dies with us. */
static pid_t rp_spawn(const char *const *argv)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid; /* parent, or -1 */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int null = open("/dev/null", O_RDWR);
    if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
    }
    execvp(argv[0], (char *const *)argv);
    _exit(127);
}

/* Polls PING until it answers (PONG, or NOAUTH: up but wants a password),
 * the child exits, or the deadline passes. */
static int rp_wait_ping(rp_proc *p)
{
    uint64_t end = rp_now_ms() + RP_START_WAIT_MS;
    while (rp_now_ms() < end) {
        redisReply *r = rp_command(p->port, "PING");
        int ready = r && (r->type == REDIS_REPLY_STATUS ||
                          (r->type == REDIS_REPLY_ERROR && strstr(r->str, "NOAUTH")));
        if (r)
            freeReplyObject(r);
        if (ready)
            return 0;
        if (waitpid(p->pid, NULL, WNOHANG) == p->pid) {
            p->pid = 0;
            return -1;
        }
        rp_poll_pause();
    }
    rp_kill(p);
    return -1;
}

int rp_redis_start_on(rp_proc *p, int port, const char *requirepass, int replica_of_port)
{
    p->pid = 0;
    if (port == 0)
        port = th_free_tcp_port();
    if (port <= 0)
        return -1;
    p->port = port;
    char port_s[16], dbfile[32], master_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    snprintf(dbfile, sizeof(dbfile), "rp-%d.rdb", port);
    snprintf(master_s, sizeof(master_s), "%d", replica_of_port);
    const char *argv[24] = {"redis-server",
                            "--port",
                            port_s,
                            "--bind",
                            "127.0.0.1",
                            "--save",
                            "",
                            "--appendonly",
                            "no",
                            "--dir",
                            "/tmp",
                            "--dbfilename",
                            dbfile,
                            "--repl-diskless-sync-delay",
                            "0",
                            "--repl-diskless-load",
                            "on-empty-db"};
    int n = 17;
    if (requirepass) {
        argv[n++] = "--requirepass";
        argv[n++] = requirepass;
        /* A replica of a protected master would need masterauth too. */
        if (replica_of_port) {
            argv[n++] = "--masterauth";
            argv[n++] = requirepass;
        }
    }
    if (replica_of_port) {
        argv[n++] = "--replicaof";
        argv[n++] = "127.0.0.1";
        argv[n++] = master_s;
    }
    argv[n] = NULL;
    pid_t pid = rp_spawn(argv);
    if (pid < 0)
        return -1;
    p->pid = pid;
    return rp_wait_ping(p);
}

int rp_redis_start(rp_proc *p, const char *requirepass, int replica_of_port)
{
    return rp_redis_start_on(p, 0, requirepass, replica_of_port);
}

int rp_sentinel_start(rp_proc *p, const char *dir, const char *master_name, int master_port,
                      int quorum, int down_after_ms, int failover_timeout_ms)
{
    p->pid = 0;
    int port = th_free_tcp_port();
    if (port <= 0 || !dir || !master_name)
        return -1;
    p->port = port;
    char conf[512], port_s[16];
    snprintf(port_s, sizeof(port_s), "%d", port);
    if (snprintf(conf, sizeof(conf), "%s/sentinel-%d.conf", dir, port) >= (int)sizeof(conf))
        return -1;
    FILE *f = fopen(conf, "w");
    if (!f)
        return -1;
    /* resolve-hostnames off and announce-ip 127.0.0.1: everything is a
     * numeric loopback address, as the sentinels tell each other. */
    fprintf(f,
            "port %d\n"
            "bind 127.0.0.1\n"
            "daemonize no\n"
            "dir %s\n"
            "logfile %s/sentinel-%d.log\n"
            "sentinel resolve-hostnames no\n"
            "sentinel announce-ip 127.0.0.1\n"
            "sentinel announce-port %d\n"
            "sentinel monitor %s 127.0.0.1 %d %d\n"
            "sentinel down-after-milliseconds %s %d\n"
            "sentinel failover-timeout %s %d\n"
            "sentinel parallel-syncs %s 1\n",
            port, dir, dir, port, port, master_name, master_port, quorum, master_name,
            down_after_ms, master_name, failover_timeout_ms, master_name);
    if (fclose(f) != 0)
        return -1;
    const char *argv[] = {"redis-sentinel", conf, "--port", port_s, NULL};
    pid_t pid = rp_spawn(argv);
    if (pid < 0)
        return -1;
    p->pid = pid;
    if (rp_wait_ping(p) != 0)
        return -1;
    uint64_t end = rp_now_ms() + RP_START_WAIT_MS;
    while (rp_sentinel_master_port(port, master_name) != master_port) {
        if (rp_now_ms() >= end) {
            rp_kill(p);
            return -1;
        }
        rp_poll_pause();
    }
    return 0;
}

void rp_kill(rp_proc *p)
{
    if (!p || p->pid <= 0)
        return;
    kill(p->pid, SIGKILL);
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    p->pid = 0;
    char dbfile[64];
    snprintf(dbfile, sizeof(dbfile), "/tmp/rp-%d.rdb", p->port);
    unlink(dbfile); /* usually absent */
}

int rp_stop(rp_proc *p)
{
    return p && p->pid > 0 ? kill(p->pid, SIGSTOP) : -1;
}

int rp_cont(rp_proc *p)
{
    return p && p->pid > 0 ? kill(p->pid, SIGCONT) : -1;
}

/* 1 if ROLE says `role` (and, for a replica, the link is up). */
static int rp_has_role(int port, const char *role)
{
    redisReply *r = rp_command(port, "ROLE");
    int ok = 0;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
        r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, role) == 0) {
        ok = 1;
        if (strcmp(role, "slave") == 0)
            ok = r->elements >= 4 && r->element[3]->type == REDIS_REPLY_STRING &&
                 strcmp(r->element[3]->str, "connected") == 0;
    }
    if (r)
        freeReplyObject(r);
    return ok;
}

int rp_wait_role(int port, const char *role, int timeout_ms)
{
    uint64_t end = rp_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (rp_has_role(port, role))
            return 0;
        if (rp_now_ms() >= end)
            return -1;
        rp_poll_pause();
    }
}

int rp_sentinel_master_port(int sentinel_port, const char *name)
{
    redisReply *r = rp_command(sentinel_port, "SENTINEL get-master-addr-by-name %s", name);
    int port = -1;
    if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[1]->type == REDIS_REPLY_STRING) {
        char *end = NULL;
        long v = strtol(r->element[1]->str, &end, 10);
        if (end && *end == '\0' && v > 0 && v <= 65535)
            port = (int)v;
    }
    if (r)
        freeReplyObject(r);
    return port;
}

/* Entries in the array answered by SENTINEL <what> <name>, or -1. */
static int rp_sentinel_count(int sentinel_port, const char *what, const char *name)
{
    redisReply *r = rp_command(sentinel_port, "SENTINEL %s %s", what, name);
    int n = r && r->type == REDIS_REPLY_ARRAY ? (int)r->elements : -1;
    if (r)
        freeReplyObject(r);
    return n;
}

int rp_sentinel_wait_known(int sentinel_port, const char *name, int replicas, int other_sentinels,
                           int timeout_ms)
{
    uint64_t end = rp_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 0);
    for (;;) {
        if (rp_sentinel_count(sentinel_port, "replicas", name) >= replicas &&
            rp_sentinel_count(sentinel_port, "sentinels", name) >= other_sentinels)
            return 0;
        if (rp_now_ms() >= end)
            return -1;
        rp_poll_pause();
    }
}
