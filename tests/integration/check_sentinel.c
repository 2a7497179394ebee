/* check_sentinel.c — the Redis backend behind Redis Sentinel: real
 * redis-server (a master and a replica) and two redis-sentinel processes on
 * free loopback ports (tests/lib/redis_proc.c).
 *
 * Sentinels run with quorum 1, down-after 500 ms (1500 ms for the second,
 * so that one leads) and failover-timeout 2000 ms, and the test waits until
 * they know each other and the replica: a SIGKILLed master is replaced in
 * one to two seconds. The
 * backend is driven from a libevent loop run in short bounded slices until
 * a condition holds; every wait has a deadline, none is a sleep. The
 * backend's log lines (stderr) go to a file the test reads.
 *
 * Covered: sentinel://S1,S2/NAME finds the master ("master at" logged),
 * put/get work; SIGKILL the master after WAIT confirmed the replica has a
 * value: the replica is promoted, both backends follow (up again,
 * failovers >= 1, the new master logged), the value written before the kill
 * is read back, and every op issued during the failover completed within
 * op timeout + 50 ms; invalidations flow between two backends on the new
 * master. A hung master (SIGSTOP, connection kept open) is left through the
 * +switch-master message alone. A dead first sentinel is skipped for the next one; with every
 * sentinel dead, ops complete UNAVAILABLE at once and nothing hangs. A
 * watched sentinel that dies is replaced by another one, the data connection
 * untouched. A manual SENTINEL FAILOVER (old master alive, then demoted) is followed
 * too. A command answered READONLY (the data connection reaching a replica)
 * completes UNAVAILABLE.
 */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis.h>
#include <openssl/rand.h>

#include "backend.h"
#include "backend_redis.h"
#include "harness.h"
#include "redis_proc.h"
#include "checks.h"
#include "loop.h"

#define WAIT_MS       10000
#define OP_TIMEOUT_MS 50
#define DOWN_AFTER_MS 500
#define FAILOVER_MS   2000
#define MASTER_NAME   "sdmaster"

static struct event_base *evbase;
static uint8_t cluster_key[32];
static char dir[256];
static char log_path[300];
static int saved_stderr = -1;
static rp_proc master, replica, sent1, sent2;

/* The backend's log so far (stderr goes to log_path). */
static int log_has(const char *needle)
{
    char buf[65536];
    FILE *f = fopen(log_path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strstr(buf, needle) != NULL;
}

static backend *make_backend(const char *target)
{
    char err[256] = "";
    backend_redis_config cfg = {.target = target,
                                .cluster_key = cluster_key,
                                .op_timeout_ms = OP_TIMEOUT_MS,
                                .connect_timeout_ms = 300,
                                .backoff_min_ms = 20,
                                .backoff_max_ms = 200};
    backend *b = backend_redis_new(evbase, &cfg, err, sizeof(err));
    ck_assert_msg(b != NULL, "backend_redis_new: %s", err);
    return b;
}

static void target_for(char *out, size_t cap, int port_a, int port_b)
{
    if (port_b)
        snprintf(out, cap, "sentinel://127.0.0.1:%d,127.0.0.1:%d/" MASTER_NAME, port_a, port_b);
    else
        snprintf(out, cap, "sentinel://127.0.0.1:%d/" MASTER_NAME, port_a);
}

static void setup(void)
{
    ck_assert_int_eq(RAND_bytes(cluster_key, sizeof(cluster_key)), 1);
    evbase = event_base_new();
    ck_assert_ptr_nonnull(evbase);
    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    snprintf(log_path, sizeof(log_path), "%s/backend.log", dir);
    int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    fflush(stderr);
    saved_stderr = dup(2);
    dup2(fd, 2);
    close(fd);
    ck_assert_msg(rp_redis_start(&master, NULL, 0) == 0, "master did not start");
    ck_assert_msg(rp_redis_start(&replica, NULL, master.port) == 0, "replica did not start");
    ck_assert_msg(rp_wait_role(replica.port, "slave", WAIT_MS) == 0, "replica never synced");
    ck_assert_msg(rp_sentinel_start(&sent1, dir, MASTER_NAME, master.port, 1, DOWN_AFTER_MS,
                                    FAILOVER_MS) == 0,
                  "sentinel 1 did not start");
    /* The second one slower to call the master down: the first asks for
     * votes alone and wins, instead of both standing at once, splitting the
     * vote and retrying only after twice the failover timeout. */
    ck_assert_msg(rp_sentinel_start(&sent2, dir, MASTER_NAME, master.port, 1, 3 * DOWN_AFTER_MS,
                                    FAILOVER_MS) == 0,
                  "sentinel 2 did not start");
    /* Until they know each other (hello messages, every 2 s), each sentinel
     * would run a failover of its own. */
    ck_assert_msg(rp_sentinel_wait_known(sent1.port, MASTER_NAME, 1, 1, WAIT_MS) == 0 &&
                      rp_sentinel_wait_known(sent2.port, MASTER_NAME, 1, 1, WAIT_MS) == 0,
                  "sentinels do not know each other and the replica");
}

static void teardown(void)
{
    rp_kill(&sent1);
    rp_kill(&sent2);
    rp_kill(&replica);
    rp_kill(&master);
    event_base_free(evbase);
    if (saved_stderr >= 0) {
        fflush(stderr);
        dup2(saved_stderr, 2);
        close(saved_stderr);
        saved_stderr = -1;
    }
    th_rmtree(dir);
}

typedef struct two {
    backend *a, *b;
} two;

/* Both up on the promoted replica, and A has counted the move. */
static int both_followed(void *arg)
{
    const two *t = arg;
    backend_stats st;
    backend_get_stats(t->a, &st);
    return backend_redis_is_up(t->a) && backend_redis_is_up(t->b) && st.failovers >= 1;
}

START_TEST(test_failover_followed)
{
    char target[128], line[128];
    target_for(target, sizeof(target), sent1.port, sent2.port);
    two t = {make_backend(target), make_backend(target)};
    tl_inv_log la = {0}, lb = {0};
    backend_set_invalidate(t.a, tl_on_invalidate, &la);
    backend_set_invalidate(t.b, tl_on_invalidate, &lb);
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, t.a, WAIT_MS) == 0, "A never found the master");
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, t.b, WAIT_MS) == 0, "B never found the master");
    snprintf(line, sizeof(line), "backend sentinel " MASTER_NAME ": master at 127.0.0.1:%d",
             master.port);
    ck_assert_msg(log_has(line), "no '%s' in the log", line);
    snprintf(line, sizeof(line), "backend redis://127.0.0.1:%d up", master.port);
    ck_assert_msg(log_has(line), "no '%s' in the log", line);

    /* Written before the kill, and known to be on the replica. */
    uint8_t key[49], val[100];
    tl_random_key(key);
    ck_assert_int_eq(RAND_bytes(val, sizeof(val)), 1);
    tl_result r = {0};
    backend_put(t.a, key, sizeof(key), val, sizeof(val), 60000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    memset(&r, 0, sizeof(r));
    backend_get(t.b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_mem_eq(r.value, val, sizeof(val));
    redisReply *w = rp_command(master.port, "WAIT 1 2000");
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(w->type, REDIS_REPLY_INTEGER);
    ck_assert_int_eq(w->integer, 1);
    freeReplyObject(w);

    int old_port = master.port;
    uint64_t killed = tl_now_ms();
    rp_kill(&master);
    /* Keep asking through the failover: every op completes, and fast. */
    int ops = 0, unavailable = 0, ok = 0;
    uint64_t worst = 0;
    while (!both_followed(&t) || ok == 0) {
        ck_assert_msg(tl_now_ms() - killed < 20000, "no failover followed in 20 s");
        memset(&r, 0, sizeof(r));
        uint64_t t0 = tl_now_ms();
        backend_get(ops % 2 ? t.b : t.a, key, sizeof(key), tl_record, &r);
        tl_wait_done(evbase, &r, WAIT_MS);
        uint64_t took = r.done_ms - t0;
        worst = took > worst ? took : worst;
        ck_assert_msg(took <= OP_TIMEOUT_MS + 50, "op %d took %llu ms", ops,
                      (unsigned long long)took);
        ops++;
        if (r.status == BACKEND_UNAVAILABLE) {
            unavailable++;
        } else {
            ck_assert_int_eq(r.status, BACKEND_OK);
            ck_assert_mem_eq(r.value, val, sizeof(val));
            ok += both_followed(&t);
        }
        tl_pump(evbase, 10);
    }
    fprintf(stdout, "failover: followed in %llu ms, %d ops, %d unavailable, worst %llu ms\n",
            (unsigned long long)(tl_now_ms() - killed), ops, unavailable,
            (unsigned long long)worst);
    ck_assert_int_eq(rp_wait_role(replica.port, "master", WAIT_MS), 0);
    ck_assert_int_eq(rp_sentinel_master_port(sent1.port, MASTER_NAME), replica.port);
    snprintf(line, sizeof(line), "backend sentinel " MASTER_NAME ": master at 127.0.0.1:%d",
             replica.port);
    ck_assert_msg(log_has(line), "no '%s' in the log", line);
    snprintf(line, sizeof(line), "backend redis://127.0.0.1:%d down", old_port);
    ck_assert_msg(log_has(line), "no '%s' in the log", line);
    backend_stats sa, sb;
    backend_get_stats(t.a, &sa);
    backend_get_stats(t.b, &sb);
    ck_assert_uint_ge(sa.failovers, 1);
    ck_assert_uint_ge(sb.failovers, 1);
    ck_assert_uint_eq(sa.inflight, 0);

    /* Writes land on the new master; invalidations flow there too. */
    uint8_t k2[49];
    tl_random_key(k2);
    memset(&r, 0, sizeof(r));
    backend_put(t.b, k2, sizeof(k2), (const uint8_t *)"new", 3, 60000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    char name[BACKEND_REDIS_NAME_LEN + 1];
    ck_assert_int_eq(backend_redis_key_name(t.b, k2, sizeof(k2), name), 0);
    redisReply *ex = rp_command(replica.port, "EXISTS %s", name);
    ck_assert_ptr_nonnull(ex);
    ck_assert_int_eq(ex->integer, 1);
    freeReplyObject(ex);
    tl_wait_subscribers(evbase, replica.port, 2, WAIT_MS);
    memset(&r, 0, sizeof(r));
    backend_del(t.a, k2, sizeof(k2), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_msg(tl_run_until(evbase, tl_inv_called, &lb, WAIT_MS) == 0,
                  "no invalidation after failover");
    ck_assert_mem_eq(lb.key, k2, sizeof(k2));
    ck_assert_int_eq(la.calls, 0);
    backend_free(t.a);
    backend_free(t.b);
}
END_TEST

START_TEST(test_hung_master_switch_followed)
{
    /* A hung master (SIGSTOP) keeps its connections open and the stall
     * limit is out of reach, so the data connection is never lost: only
     * the +switch-master message can move the backend. */
    char target[128], err[256] = "";
    target_for(target, sizeof(target), sent1.port, sent2.port);
    backend_redis_config cfg = {.target = target,
                                .cluster_key = cluster_key,
                                .op_timeout_ms = OP_TIMEOUT_MS,
                                .stall_ms = 60000,
                                .backoff_min_ms = 20,
                                .backoff_max_ms = 200};
    backend *b = backend_redis_new(evbase, &cfg, err, sizeof(err));
    ck_assert_msg(b != NULL, "%s", err);
    ck_assert(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0);
    ck_assert_int_eq(rp_stop(&master), 0);
    uint64_t end = tl_now_ms() + 20000;
    backend_stats st;
    for (;;) {
        backend_get_stats(b, &st);
        if (st.failovers >= 1 && backend_redis_is_up(b))
            break;
        ck_assert_msg(tl_now_ms() < end, "switch not followed");
        uint8_t key[49];
        tl_random_key(key);
        tl_result r = {0};
        uint64_t t0 = tl_now_ms();
        backend_get(b, key, sizeof(key), tl_record, &r);
        tl_wait_done(evbase, &r, WAIT_MS);
        ck_assert_uint_le(r.done_ms - t0, OP_TIMEOUT_MS + 50);
        tl_pump(evbase, 10);
    }
    /* One move (counted as one disconnect and one reconnect), no loss before. */
    ck_assert_uint_eq(st.disconnects, 1);
    ck_assert_uint_eq(st.reconnects, 1);
    ck_assert_int_eq(rp_sentinel_master_port(sent1.port, MASTER_NAME), replica.port);
    uint8_t key[49];
    tl_random_key(key);
    tl_result r = {0};
    backend_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    /* (Sentinel turns the old master into a replica only some 8 s after it
     * wakes up: too slow for this file.) */
    memset(&r, 0, sizeof(r));
    backend_get(b, key, sizeof(key), tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.failovers, 1);
    backend_free(b);
}
END_TEST

START_TEST(test_manual_failover_followed)
{
    char target[128];
    target_for(target, sizeof(target), sent2.port, 0);
    backend *b = make_backend(target);
    ck_assert(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0);
    /* The old master stays alive and is demoted: the backend must not keep
     * writing to it (READONLY) but follow the switch. */
    redisReply *f = rp_command(sent1.port, "SENTINEL FAILOVER %s", MASTER_NAME);
    ck_assert_ptr_nonnull(f);
    ck_assert_msg(f->type == REDIS_REPLY_STATUS, "SENTINEL FAILOVER: %s", f->str);
    freeReplyObject(f);
    uint64_t end = tl_now_ms() + WAIT_MS;
    backend_stats st;
    int wrote = 0;
    for (;;) {
        backend_get_stats(b, &st);
        if (st.failovers >= 1 && backend_redis_is_up(b)) {
            uint8_t key[49];
            tl_random_key(key);
            tl_result r = {0};
            uint64_t t0 = tl_now_ms();
            backend_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000, tl_record, &r);
            tl_wait_done(evbase, &r, WAIT_MS);
            ck_assert_uint_le(r.done_ms - t0, OP_TIMEOUT_MS + 50);
            if (r.status == BACKEND_OK) {
                wrote = 1;
                break;
            }
        }
        ck_assert_msg(tl_now_ms() < end, "manual failover not followed");
        tl_pump(evbase, 10);
    }
    ck_assert(wrote);
    ck_assert_int_eq(rp_wait_role(replica.port, "master", WAIT_MS), 0);
    backend_free(b);
}
END_TEST

/* Subscribed clients of a sentinel (only backends subscribe to one). */
static int pubsub_clients(int port)
{
    redisReply *r = rp_command(port, "CLIENT LIST TYPE pubsub");
    int n = -1;
    if (r && r->type == REDIS_REPLY_STRING) {
        n = 0;
        for (const char *p = r->str; (p = strstr(p, "sub=1")) != NULL; p++)
            n++;
    }
    if (r)
        freeReplyObject(r);
    return n;
}

START_TEST(test_dead_sentinel_skipped)
{
    /* A port nobody listens on first: the second sentinel answers. */
    int dead = th_free_tcp_port();
    char target[128];
    target_for(target, sizeof(target), dead, sent1.port);
    backend *b = make_backend(target);
    ck_assert_msg(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0,
                  "the live sentinel was not asked");
    uint8_t key[49];
    tl_random_key(key);
    tl_result r = {0};
    backend_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_OK);
    backend_free(b);

    /* The watched sentinel dies: the watch moves to the other one, the
     * data connection is not touched. */
    target_for(target, sizeof(target), sent1.port, sent2.port);
    b = make_backend(target);
    ck_assert(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0);
    ck_assert_int_eq(pubsub_clients(sent2.port), 0);
    rp_kill(&sent1);
    uint64_t end = tl_now_ms() + WAIT_MS;
    while (pubsub_clients(sent2.port) != 1) {
        ck_assert_msg(tl_now_ms() < end, "the watch did not move to sentinel 2");
        tl_pump(evbase, 5);
    }
    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.disconnects, 0);
    ck_assert(backend_redis_is_up(b));
    backend_free(b);

    /* No sentinel at all: unavailable at once, never up, never hangs. */
    rp_kill(&sent2);
    target_for(target, sizeof(target), sent1.port, sent2.port);
    b = make_backend(target);
    for (int i = 0; i < 5; i++) {
        memset(&r, 0, sizeof(r));
        backend_get(b, key, sizeof(key), tl_record, &r);
        ck_assert_int_eq(r.calls, 1);
        ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
        tl_pump(evbase, 30);
    }
    ck_assert(!backend_redis_is_up(b));
    ck_assert_msg(log_has("backend sentinel " MASTER_NAME ": no sentinel answered"),
                  "no warning logged");
    backend_free(b);
}
END_TEST

START_TEST(test_readonly_is_unavailable)
{
    /* A plain target pointed at a replica: writes are refused READONLY. */
    char target[64];
    snprintf(target, sizeof(target), "redis://127.0.0.1:%d", replica.port);
    backend *b = make_backend(target);
    ck_assert(tl_run_until(evbase, tl_redis_up, b, WAIT_MS) == 0);
    uint8_t key[49];
    tl_random_key(key);
    tl_result r = {0};
    backend_put(b, key, sizeof(key), (const uint8_t *)"v", 1, 60000, tl_record, &r);
    tl_wait_done(evbase, &r, WAIT_MS);
    ck_assert_int_eq(r.status, BACKEND_UNAVAILABLE);
    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.errors, 1);
    ck_assert_uint_eq(st.timeouts, 0);
    backend_free(b);
}
END_TEST

static Suite *sentinel_suite(void)
{
    Suite *s = suite_create("sentinel");
    TCase *tc = tcase_create("sentinel");
    tcase_set_timeout(tc, 40);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_failover_followed);
    tcase_add_test(tc, test_hung_master_switch_followed);
    tcase_add_test(tc, test_manual_failover_followed);
    tcase_add_test(tc, test_dead_sentinel_skipped);
    tcase_add_test(tc, test_readonly_is_unavailable);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(sentinel_suite());
}
