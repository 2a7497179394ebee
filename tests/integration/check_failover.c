/* check_failover.c — pieces of a Redis-backed sessiond cluster die under
 * handshake load, and TLS servers notice nothing worse than a few misses:
 * a sessiond node killed (its clients' circuit breakers move its keys to
 * the other node, which finds them in Redis), and the Redis master killed
 * while Sentinel runs (a replica is promoted and both nodes follow it).
 *
 * How it works: real redis-server, redis-sentinel and sessiond processes
 * on free loopback ports (tests/lib/redis_proc.c, tests/lib/cluster.c);
 * two in-process libsessionc TLS servers A and B (OpenSSL's internal cache
 * off, TLS 1.2 session IDs) and one client that keeps its last sessions
 * in a ring. Each step of the load is a pair of handshakes: a full one on A
 * or B (a new session, stored), then the resumption of the session made a
 * ring's length of steps earlier, on the server that did NOT make it.
 * Resuming older sessions matters: those made before the kill are resumed
 * after it, so the test sees whether what the dead part held survived.
 *
 * Every resumption attempt is filed by the phase its session was made in
 * (before the kill, during the transition, after it) and by whether it
 * resumed; handshakes that fail outright are counted separately and must
 * be zero. The figures are printed to stdout, one line per test, for the
 * closing note ("failover: N lookups, M misses, took T ms").
 *
 * The load is bounded in steps and in time; waits are on conditions (log
 * lines, roles, counters) with deadlines, never sleeps.
 */
#include <check.h>

#include "checks.h"
#include "cluster.h"
#include "harness.h"
#include "redis_proc.h"
#include "sessionc.h"
#include "tls_util.h"

#include <hiredis.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The kill test's ring is longer than the breakers' transition (about a
 * dozen steps here), so sessions made before the kill are still being
 * resumed after the keys moved. */
#define RING_MAX         64
#define KILL_RING        64
#define SENTINEL_RING    16
#define KILL_MAX_STEPS   400   /* handshake pairs */
#define KILL_MAX_MS      20000 /* ...or this long, whichever comes first */
#define KILL_AT_STEP     100
#define SENTINEL_WARMUP  40
#define SENTINEL_AFTER   100 /* steps once both nodes follow the new master */
#define SENTINEL_MAX_MS  30000
#define SENTINEL_STEPS   20000
#define DOWN_AFTER_MS    1000 /* Sentinel's down-after-milliseconds */
#define FAILOVER_TIMEOUT 3000
#define MASTER_NAME      "mymaster"

static tu_cred g_server;

enum phase { BEFORE, TRANSITION, AFTER, PHASES };
static const char *const g_phase_name[PHASES] = {"before", "during", "after"};

typedef struct slot {
    SSL_SESSION *sess;
    int made_on; /* 0: A, 1: B */
    int phase;   /* when it was made */
} slot;

typedef struct load {
    SSL_CTX *client_ctx;
    const cl_pair *pair;
    slot ring[RING_MAX];
    int ring_size; /* a session is resumed this many steps after it was made */
    long steps;
    long failed;                   /* handshakes that did not complete */
    long attempts[PHASES][PHASES]; /* [phase made][phase resumed in] */
    long resumed[PHASES][PHASES];
} load;

static void load_open(load *l, const cl_pair *pair, int ring_size)
{
    ck_assert_int_le(ring_size, RING_MAX);
    memset(l, 0, sizeof(*l));
    l->pair = pair;
    l->ring_size = ring_size;
    l->client_ctx = tu_client_ctx(TLS1_2_VERSION, NULL);
    ck_assert_ptr_nonnull(l->client_ctx);
}

static void load_close(load *l)
{
    for (int i = 0; i < RING_MAX; i++)
        SSL_SESSION_free(l->ring[i].sess);
    SSL_CTX_free(l->client_ctx);
}

/* One pair: a full handshake on A or B, then the resumption of the
 * session made ring_size steps ago on the other server. */
static void load_step(load *l, int phase)
{
    slot *s = &l->ring[l->steps % l->ring_size];
    int server = (int)(l->steps % 2);
    tu_hs_result res;

    if (tu_handshake(l->client_ctx, l->pair->ctx[server], NULL, &res) != 0) {
        fprintf(stderr, "step %ld: full handshake on %c failed: %s\n", l->steps, "AB"[server],
                res.error);
        l->failed++;
        tu_hs_result_clear(&res); /* res.session is NULL from here */
    }
    if (s->sess != NULL) {
        tu_hs_result again;
        int other = 1 - s->made_on;

        l->attempts[s->phase][phase]++;
        if (tu_handshake(l->client_ctx, l->pair->ctx[other], s->sess, &again) != 0) {
            fprintf(stderr, "step %ld: resumption on %c failed: %s\n", l->steps, "AB"[other],
                    again.error);
            l->failed++;
        } else {
            l->resumed[s->phase][phase] += again.resumed;
            tu_hs_result_clear(&again);
        }
        SSL_SESSION_free(s->sess);
    }
    s->sess = res.session;
    s->made_on = server;
    s->phase = phase;
    l->steps++;
}

static long sum_attempts(const load *l, int made_from, int made_to, int in)
{
    long n = 0;

    for (int m = made_from; m <= made_to; m++)
        n += l->attempts[m][in];
    return n;
}

static long sum_resumed(const load *l, int made_from, int made_to, int in)
{
    long n = 0;

    for (int m = made_from; m <= made_to; m++)
        n += l->resumed[m][in];
    return n;
}

static void load_print(const load *l, const char *label)
{
    for (int in = 0; in < PHASES; in++)
        for (int m = 0; m <= in; m++)
            if (l->attempts[m][in] > 0)
                fprintf(stderr, "%s: sessions made %s, resumed %s: %ld/%ld\n", label,
                        g_phase_name[m], g_phase_name[in], l->resumed[m][in], l->attempts[m][in]);
}

/* Kill sessiond node 1 under load; A and B both list both nodes. The
 * transition ends when both clients' breakers have opened on node 1
 * (their `skipped` counters move). Until then a store sent to the dead
 * node is lost (fire and forget: the refusal only shows on the next send),
 * so sessions made during the transition are reported, not held to the
 * 99 %: the claim is about what the breaker moved, i.e. sessions made
 * before the kill (which node 2 must find in Redis) and after the move. */
START_TEST(test_kill_node_under_load)
{
    tu_server_opts tls = {.version = TLS1_2_VERSION, .no_ticket = 1, .no_internal_cache = 1};
    cl_bed b;
    cl_pair p;
    load l;
    int64_t start, killed_at = 0, moved_at = 0;
    long long node2_backend_hits;
    long moved_step = -1, after_attempts, after_resumed, lookups, misses;
    int phase = BEFORE;

    cl_open(&b);
    ck_assert_int_eq(rp_redis_start(&b.redis[0], NULL, 0), 0);
    cl_use_redis(&b, b.redis[0].port);
    cl_node_start(&b, 0, NULL);
    cl_node_start(&b, 1, NULL);
    cl_pair_open(&p, &b, &g_server, &tls, CL_BOTH, CL_BOTH, NULL);
    load_open(&l, &p, KILL_RING);

    start = th_now_ms();
    while (l.steps < KILL_MAX_STEPS && th_now_ms() - start < KILL_MAX_MS) {
        if (l.steps == KILL_AT_STEP) {
            ck_assert_msg(cl_node_stat(&b, 0, "puts") > 0,
                          "node 1 stored nothing: killing it would prove nothing");
            cl_node_kill(&b, 0);
            killed_at = th_now_ms();
            phase = TRANSITION;
        }
        if (phase == TRANSITION) {
            sc_stats a, bs;

            sc_get_stats(p.sc[0], &a);
            sc_get_stats(p.sc[1], &bs);
            if (a.skipped > 0 && bs.skipped > 0) {
                moved_at = th_now_ms();
                moved_step = l.steps;
                phase = AFTER;
            }
        }
        load_step(&l, phase);
    }
    node2_backend_hits = cl_node_stat(&b, 1, "backend_hits");

    after_attempts = l.attempts[BEFORE][AFTER] + l.attempts[AFTER][AFTER];
    after_resumed = l.resumed[BEFORE][AFTER] + l.resumed[AFTER][AFTER];
    lookups = sum_attempts(&l, BEFORE, AFTER, TRANSITION) + sum_attempts(&l, BEFORE, AFTER, AFTER);
    misses = lookups - sum_resumed(&l, BEFORE, AFTER, TRANSITION) -
             sum_resumed(&l, BEFORE, AFTER, AFTER);
    load_print(&l, "node kill");
    printf("node kill: %ld handshake pairs in %lld ms, %ld failed handshakes; the breakers moved "
           "the keys %lld ms (%ld pairs) after the kill; after that %ld/%ld reconnections "
           "resumed (%.1f %%; %ld/%ld of sessions made before the kill); all %ld lookups after "
           "the kill: %ld misses (%ld/%ld sessions stored during the transition lost); "
           "node2 backend_hits=%lld\n",
           l.steps, (long long)(th_now_ms() - start), l.failed,
           (long long)(moved_at > 0 ? moved_at - killed_at : -1),
           moved_step >= 0 ? moved_step - KILL_AT_STEP : -1, after_resumed, after_attempts,
           after_attempts > 0 ? 100.0 * (double)after_resumed / (double)after_attempts : 0.0,
           l.resumed[BEFORE][AFTER], l.attempts[BEFORE][AFTER], lookups, misses,
           sum_attempts(&l, TRANSITION, TRANSITION, AFTER) -
               sum_resumed(&l, TRANSITION, TRANSITION, AFTER),
           sum_attempts(&l, TRANSITION, TRANSITION, AFTER), node2_backend_hits);
    fflush(stdout);

    ck_assert_int_eq(l.failed, 0);
    ck_assert_msg(phase == AFTER, "the breakers never moved the keys off the dead node");
    /* Before the kill nothing is lost. */
    ck_assert_int_gt(l.attempts[BEFORE][BEFORE], 0);
    ck_assert_int_eq(l.resumed[BEFORE][BEFORE], l.attempts[BEFORE][BEFORE]);
    /* Enough of both kinds after the move to make 99 % mean something. */
    ck_assert_int_ge(l.attempts[BEFORE][AFTER], KILL_RING / 4);
    ck_assert_int_ge(l.attempts[AFTER][AFTER], 100);
    ck_assert_msg(after_resumed * 100 >= after_attempts * 99, "only %ld/%ld resumed", after_resumed,
                  after_attempts);
    /* Node 1's share of them came back from Redis through node 2. */
    ck_assert_int_gt(node2_backend_hits, 0);

    load_close(&l);
    cl_pair_close(&p);
    cl_close(&b);
}
END_TEST

/* Kill the Redis master with two Sentinels watching: the replica is
 * promoted, both nodes follow, handshakes never fail. _i 0: A is on node 1
 * only and B on node 2 only (one sessiond per host), so every resumption
 * crosses Redis and the failover's misses show in full; _i 1: both list
 * both nodes, so a key's store and lookups go to one node and its near
 * cache rides out the failover. */
START_TEST(test_sentinel_failover)
{
    tu_server_opts tls = {.version = TLS1_2_VERSION, .no_ticket = 1, .no_internal_cache = 1};
    cl_bed b;
    cl_pair p;
    load l;
    char url[160], up[160], follow[160], sdir[2][300];
    rp_proc *master = &b.redis[0], *replica = &b.redis[1];
    int64_t start, took, killed_at = 0, followed_at[2] = {0, 0};
    long steps_after = 0;
    long long failovers[2];
    long lookups, misses, after_attempts, after_resumed;
    int phase = BEFORE;

    cl_open(&b);
    ck_assert_int_eq(rp_redis_start(master, NULL, 0), 0);
    ck_assert_int_eq(rp_redis_start(replica, NULL, master->port), 0);
    ck_assert_int_eq(rp_wait_role(replica->port, "slave", 10000), 0);
    for (int i = 0; i < 2; i++) {
        snprintf(sdir[i], sizeof(sdir[i]), "%s/sentinel%d", b.dir, i);
        ck_assert_int_eq(mkdir(sdir[i], 0700), 0);
        /* Quorum 1, and the second sentinel slower to call the master
         * down: the first then asks for votes alone and wins at once,
         * instead of both standing at the same moment, splitting the vote
         * and retrying only after twice the failover timeout. */
        ck_assert_int_eq(rp_sentinel_start(&b.redis[2 + i], sdir[i], MASTER_NAME, master->port, 1,
                                           DOWN_AFTER_MS * (1 + 2 * i), FAILOVER_TIMEOUT),
                         0);
    }
    /* A sentinel can only promote a replica it has discovered, and the two
     * must know each other, or each may run a failover of its own. */
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(rp_sentinel_wait_known(b.redis[2 + i].port, MASTER_NAME, 1, 1, 10000), 0);
    snprintf(url, sizeof(url), "sentinel://127.0.0.1:%d,127.0.0.1:%d/%s", b.redis[2].port,
             b.redis[3].port, MASTER_NAME);
    snprintf(up, sizeof(up), "backend sentinel %s: master at 127.0.0.1:%d", MASTER_NAME,
             master->port);
    snprintf(follow, sizeof(follow), "backend sentinel %s: master at 127.0.0.1:%d", MASTER_NAME,
             replica->port);
    cl_use_backend(&b, url, up);
    cl_node_start(&b, 0, NULL);
    cl_node_start(&b, 1, NULL);
    cl_pair_open(&p, &b, &g_server, &tls, _i == 0 ? CL_NODE1 : CL_BOTH,
                 _i == 0 ? CL_NODE2 : CL_BOTH, NULL);
    load_open(&l, &p, SENTINEL_RING);

    start = th_now_ms();
    while (l.steps < SENTINEL_STEPS && th_now_ms() - start < SENTINEL_MAX_MS &&
           steps_after < SENTINEL_AFTER) {
        if (l.steps == SENTINEL_WARMUP) {
            rp_kill(master);
            killed_at = th_now_ms();
            phase = TRANSITION;
        }
        if (phase == TRANSITION) {
            for (int i = 0; i < 2; i++)
                if (followed_at[i] == 0 && cl_node_wait_log(&b, i, follow, 0) == 0)
                    followed_at[i] = th_now_ms();
            if (followed_at[0] > 0 && followed_at[1] > 0)
                phase = AFTER;
        }
        load_step(&l, phase);
        steps_after += phase == AFTER;
    }
    for (int i = 0; i < 2; i++)
        failovers[i] = cl_node_stat(&b, i, "backend_failovers");

    lookups = sum_attempts(&l, BEFORE, TRANSITION, TRANSITION);
    misses = lookups - sum_resumed(&l, BEFORE, TRANSITION, TRANSITION);
    after_attempts = l.attempts[AFTER][AFTER];
    after_resumed = l.resumed[AFTER][AFTER];
    load_print(&l, "sentinel failover");
    took = phase == AFTER
               ? (followed_at[0] > followed_at[1] ? followed_at[0] : followed_at[1]) - killed_at
               : -1;
    printf("failover: %ld lookups, %ld misses, took %lld ms (Redis master killed; %s; node1 "
           "followed after %lld ms, node2 after %lld ms; down-after %d ms); %ld failed "
           "handshakes; afterwards %ld/%ld resumed; backend_failovers node1=%lld node2=%lld\n",
           lookups, misses, (long long)took,
           _i == 0 ? "A on node 1, B on node 2" : "A and B on both nodes",
           (long long)(followed_at[0] > 0 ? followed_at[0] - killed_at : -1),
           (long long)(followed_at[1] > 0 ? followed_at[1] - killed_at : -1), DOWN_AFTER_MS,
           l.failed, after_resumed, after_attempts, failovers[0], failovers[1]);
    fflush(stdout);

    ck_assert_int_eq(l.failed, 0);
    ck_assert_int_eq(l.resumed[BEFORE][BEFORE], l.attempts[BEFORE][BEFORE]);
    ck_assert_int_gt(l.attempts[BEFORE][BEFORE], 0);
    ck_assert_msg(phase == AFTER, "the nodes did not follow the new master (node1 %s, node2 %s)",
                  followed_at[0] > 0 ? "did" : "did not", followed_at[1] > 0 ? "did" : "did not");
    ck_assert_int_eq(rp_wait_role(replica->port, "master", 1000), 0);
    ck_assert_int_eq(rp_sentinel_master_port(b.redis[2].port, MASTER_NAME), replica->port);
    ck_assert_int_ge(after_attempts, SENTINEL_AFTER - SENTINEL_RING);
    ck_assert_msg(after_resumed * 100 >= after_attempts * 99, "after the failover only %ld/%ld",
                  after_resumed, after_attempts);
    ck_assert_int_ge(failovers[0], 1);
    ck_assert_int_ge(failovers[1], 1);

    load_close(&l);
    cl_pair_close(&p);
    cl_close(&b);
}
END_TEST

static Suite *failover_suite(void)
{
    Suite *s = suite_create("failover");
    TCase *tc = tcase_create("under load");

    /* Generous: the sanitizer build is several times slower. */
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_kill_node_under_load);
    tcase_add_loop_test(tc, test_sentinel_failover, 0, 2);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite_with_server(failover_suite(), &g_server);
}
