/* check_ticket_cluster.c — three real sessiond nodes agreeing on one
 * ticket-key ring through one real redis-server on loopback.
 *
 * Every node runs with --key-file, --backend, --ticket-keys,
 * --ticket-rotate 2 and --ticket-lifetime 6, so keys rotate every two
 * seconds and a ring holds at most five keys. Rings are fetched the way a
 * TLS server's libsessionc would: a sealed v2 KEYS request (tests/lib
 * v2ops.h), the answer opened with the cluster key and decoded with
 * proto/ticket_ring.c.
 *
 * What every fetch is held to (assert_consistent): all rings answered OK at
 * about the same moment agree on every slot they share (same name and key
 * bytes for the same not_before), and the key each one would encrypt with
 * is in every other one. That is "no node serves a current key the others
 * lack", checked on every sample of every test, outages included.
 *
 * Tests:
 *   - convergence, restart and outage: nodes started at different times (the
 *     third after a rotation) serve the same ring, the third including the
 *     old keys it never saw drawn; a node killed and restarted while Redis is
 *     stopped (SIGSTOP) answers UNAVAILABLE the whole time; the running nodes
 *     stop answering at a slot boundary rather than make up keys; after
 *     SIGCONT all three converge again;
 *   - one node cut off: its connection to Redis runs through a TCP relay in
 *     this process that can be frozen (nothing read or accepted, exactly what
 *     a stopped Redis looks like to that node alone); the other two rotate on,
 *     the cut-off node draws nothing and goes UNAVAILABLE at a boundary, and
 *     adopts the others' keys once the relay thaws.
 * Waits are bounded and poll conditions (an answer, a log line); the only
 * pauses are the 20 ms between two samples of a condition.
 */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "proto_v2.h"
#include "redis_proc.h"
#include "ticket_ring.h"
#include "v2ops.h"

#define NODES    3
#define ROTATE   2
#define LIFETIME 6
#define READY_MS 10000
#define PACE_MS  20

/* --- a freezable TCP relay ---------------------------------------------- */

#define RELAY_PAIRS 16

typedef struct relay {
    int listen_fd;
    int port;
    int target_port;
    atomic_int frozen;
    atomic_int stop;
    pthread_t thread;
    int client[RELAY_PAIRS]; /* accepted from sessiond */
    int server[RELAY_PAIRS]; /* to Redis */
    int pairs;
} relay;

static void relay_drop(relay *r, int i)
{
    close(r->client[i]);
    close(r->server[i]);
    r->pairs--;
    r->client[i] = r->client[r->pairs];
    r->server[i] = r->server[r->pairs];
}

static int relay_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

/* Copies what is readable on `from` to `to`. 0, or -1 on EOF or error. */
static int relay_copy(int from, int to)
{
    char buf[16384];
    ssize_t n = read(from, buf, sizeof(buf));
    if (n <= 0)
        return -1;
    for (ssize_t off = 0; off < n;) {
        ssize_t w = write(to, buf + off, (size_t)(n - off));
        if (w <= 0)
            return -1;
        off += w;
    }
    return 0;
}

static void *relay_main(void *arg)
{
    relay *r = arg;
    while (!atomic_load(&r->stop)) {
        if (atomic_load(&r->frozen)) {
            /* Frozen: nothing is read, written or accepted; the kernel
             * still completes handshakes and buffers, as for a stopped
             * process. Polling nothing, just a bounded nap per round. */
            poll(NULL, 0, 10);
            continue;
        }
        struct pollfd p[1 + 2 * RELAY_PAIRS];
        int n = 0;
        p[n++] = (struct pollfd){.fd = r->listen_fd, .events = POLLIN};
        for (int i = 0; i < r->pairs; i++) {
            p[n++] = (struct pollfd){.fd = r->client[i], .events = POLLIN};
            p[n++] = (struct pollfd){.fd = r->server[i], .events = POLLIN};
        }
        if (poll(p, (nfds_t)n, 10) <= 0)
            continue;
        for (int i = r->pairs - 1; i >= 0; i--) {
            short ce = p[1 + 2 * i].revents, se = p[2 + 2 * i].revents;
            if (((ce & (POLLIN | POLLHUP | POLLERR)) &&
                 relay_copy(r->client[i], r->server[i]) != 0) ||
                ((se & (POLLIN | POLLHUP | POLLERR)) &&
                 relay_copy(r->server[i], r->client[i]) != 0))
                relay_drop(r, i);
        }
        if (p[0].revents & POLLIN) {
            int c = accept(r->listen_fd, NULL, NULL);
            if (c < 0)
                continue;
            int s = relay_connect(r->target_port);
            if (s < 0 || r->pairs == RELAY_PAIRS) {
                close(c);
                if (s >= 0)
                    close(s);
                continue;
            }
            r->client[r->pairs] = c;
            r->server[r->pairs] = s;
            r->pairs++;
        }
    }
    return NULL;
}

static void relay_start(relay *r, int target_port)
{
    memset(r, 0, sizeof(*r));
    r->target_port = target_port;
    r->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(r->listen_fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(bind(r->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(listen(r->listen_fd, 16), 0);
    ck_assert_int_eq(getsockname(r->listen_fd, (struct sockaddr *)&sa, &sl), 0);
    r->port = ntohs(sa.sin_port);
    ck_assert_int_eq(pthread_create(&r->thread, NULL, relay_main, r), 0);
}

static void relay_close(relay *r)
{
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    while (r->pairs > 0)
        relay_drop(r, 0);
    close(r->listen_fd);
}

/* --- the cluster ---------------------------------------------------------- */

typedef struct bed {
    char dir[256];
    char key_path[300];
    uint8_t key[PROTO_V2_CLUSTER_KEY_LEN];
    proto_v2_sealer *sealer;
    rp_proc redis;
    char url[NODES][64]; /* each node's --backend */
    th_daemon node[NODES];
    int running[NODES];
} bed;

static void bed_open(bed *b)
{
    memset(b, 0, sizeof(*b));
    ck_assert_int_eq(th_tmpdir(b->dir, sizeof(b->dir)), 0);
    snprintf(b->key_path, sizeof(b->key_path), "%s/cluster.key", b->dir);
    ck_assert_int_eq(RAND_bytes(b->key, sizeof(b->key)), 1);
    v2t_write_key_file(b->key_path, b->key, 0600);
    b->sealer = proto_v2_sealer_new(b->key, NULL);
    ck_assert_ptr_nonnull(b->sealer);
    ck_assert_int_eq(rp_redis_start(&b->redis, NULL, 0), 0);
    for (int i = 0; i < NODES; i++)
        snprintf(b->url[i], sizeof(b->url[i]), "redis://127.0.0.1:%d", b->redis.port);
}

static void bed_node_start(bed *b, int i)
{
    const char *args[] = {
        "--key-file",      b->key_path, "--backend",         b->url[i], "--ticket-keys",
        "--ticket-rotate", "2",         "--ticket-lifetime", "6",       NULL};
    ck_assert_int_eq(th_daemon_start(&b->node[i], args), 0);
    b->running[i] = 1;
}

static void bed_node_wait_ready(bed *b, int i)
{
    ck_assert_msg(th_daemon_wait_log(&b->node[i], "ticket keys ready", 0, READY_MS) == 0,
                  "node %d: no \"ticket keys ready\" within %d ms", i, READY_MS);
}

static void bed_node_kill(bed *b, int i)
{
    ck_assert_int_eq(kill(b->node[i].pid, SIGKILL), 0);
    ck_assert_int_eq(th_daemon_stop(&b->node[i]), 128 + SIGKILL);
    b->running[i] = 0;
}

static long long bed_stat(bed *b, int i, const char *name)
{
    char line[4096];
    ck_assert_int_eq(th_daemon_stats(&b->node[i], line, sizeof(line)), 0);
    long long v = th_stat(line, name);
    ck_assert_msg(v >= 0, "node %d: no %s in \"%s\"", i, name, line);
    return v;
}

static void bed_close(bed *b)
{
    for (int i = 0; i < NODES; i++)
        if (b->running[i])
            ck_assert_int_eq(th_daemon_stop(&b->node[i]), 0);
    rp_cont(&b->redis);
    rp_kill(&b->redis);
    proto_v2_sealer_free(b->sealer);
    th_rmtree(b->dir);
}

/* --- fetching and judging rings ------------------------------------------ */

static uint32_t next_id = 1;

/* Checks what any served ring must be, with these settings. */
static void check_shape(const ticket_ring *r)
{
    uint64_t wall_s = tc_wall_ms() / 1000u;
    ck_assert_uint_eq(r->rotate_s, ROTATE);
    ck_assert_uint_eq(r->lifetime_s, LIFETIME);
    ck_assert_uint_ge(r->n_keys, 2);
    ck_assert_uint_le(r->n_keys, LIFETIME / ROTATE + 2);
    ck_assert(r->generated_at + 2 >= wall_s && r->generated_at <= wall_s + 2);
    for (size_t k = 0; k < r->n_keys; k++) {
        ck_assert_uint_eq(r->keys[k].not_after - r->keys[k].not_before, ROTATE);
        ck_assert_uint_eq(r->keys[k].not_before % ROTATE, 0);
        ck_assert_int_ne(ticket_key_state_at(r, &r->keys[k], r->generated_at), TICKET_KEY_EXPIRED);
    }
    const ticket_key *cur = ticket_ring_current(r, r->generated_at);
    ck_assert_ptr_nonnull(cur);
    ck_assert_uint_eq(cur->not_before, r->generated_at / ROTATE * ROTATE);
    /* The next key is published. */
    ck_assert_ptr_eq(cur, &r->keys[r->n_keys - 2]);
    ck_assert_uint_eq(r->keys[r->n_keys - 1].not_before, cur->not_after);
}

/* One sealed KEYS to node i. Returns PROTO_V2_ST_OK (ring filled) or
 * PROTO_V2_ST_UNAVAILABLE; fails the test on no answer or anything else. */
static int fetch_ring(bed *b, int i, ticket_ring *ring)
{
    static uint8_t req[512], ans[PROTO_MAX_DATAGRAM];
    uint32_t id = next_id++;
    int fd = th_udp_connect(b->node[i].port);
    ck_assert_int_ge(fd, 0);
    size_t len = v2t_build(b->sealer, req, sizeof(req), PROTO_V2_KEYS, 0, id, 0, NULL, 0, NULL, 0,
                           tc_wall_ms());
    ssize_t n = th_udp_roundtrip(fd, req, len, ans, sizeof(ans), 2000);
    close(fd);
    ck_assert_msg(n > 0, "node %d: no answer to KEYS", i);
    proto_v2_msg m;
    ck_assert_int_eq(
        proto_v2_open(b->sealer, ans, (size_t)n, 1, tc_wall_ms(), PROTO_V2_DEFAULT_WINDOW_MS, &m),
        PROTO_OK);
    ck_assert_uint_eq(m.op, PROTO_V2_KEYS | PROTO_V2_ANSWER);
    ck_assert_uint_eq(m.request_id, id);
    if (m.status == PROTO_V2_ST_OK) {
        ck_assert_int_eq(ticket_ring_decode(m.value, m.value_len, ring), PROTO_OK);
        check_shape(ring);
    } else {
        ck_assert_int_eq(m.status, PROTO_V2_ST_UNAVAILABLE);
        ck_assert_uint_eq(m.value_len, 0);
    }
    return m.status;
}

static int same_keys(const ticket_ring *a, const ticket_ring *b)
{
    return a->n_keys == b->n_keys && memcmp(a->keys, b->keys, a->n_keys * sizeof(ticket_key)) == 0;
}

/* Rings served at about the same moment never contradict each other. */
static void assert_consistent(const ticket_ring *rings, const int *ok, int n)
{
    for (int i = 0; i < n; i++) {
        if (!ok[i])
            continue;
        const ticket_key *cur = ticket_ring_current(&rings[i], rings[i].generated_at);
        for (int j = 0; j < n; j++) {
            if (!ok[j] || j == i)
                continue;
            for (size_t a = 0; a < rings[i].n_keys; a++)
                for (size_t c = 0; c < rings[j].n_keys; c++) {
                    const ticket_key *ka = &rings[i].keys[a], *kc = &rings[j].keys[c];
                    if (ka->not_before == kc->not_before)
                        ck_assert_msg(memcmp(ka, kc, sizeof(*ka)) == 0,
                                      "nodes %d and %d disagree on slot %llu", i, j,
                                      (unsigned long long)(ka->not_before / ROTATE));
                    else
                        ck_assert(memcmp(ka->name, kc->name, TICKET_NAME_LEN) != 0);
                }
            /* i's encrypting key is one j can decrypt with. */
            const ticket_key *found = ticket_ring_find(&rings[j], cur->name, rings[j].generated_at);
            ck_assert_msg(found != NULL, "node %d encrypts with a key node %d lacks", i, j);
            ck_assert_mem_eq(found, cur, sizeof(*cur));
        }
    }
}

typedef struct sample {
    ticket_ring ring[NODES];
    int status[NODES]; /* -1: not asked (node not running or not in the mask) */
} sample;

/* Asks every running node in mask and checks the answers together. */
static void take_sample(bed *b, int mask, sample *s)
{
    int ok[NODES];
    for (int i = 0; i < NODES; i++) {
        s->status[i] = -1;
        if (b->running[i] && (mask & (1 << i)))
            s->status[i] = fetch_ring(b, i, &s->ring[i]);
        ok[i] = s->status[i] == PROTO_V2_ST_OK;
    }
    assert_consistent(s->ring, ok, NODES);
}

/* Waits until every node in mask serves the same keys (samples checked on
 * the way). A sample can straddle a second at which a key expires or a
 * node rotates, so it takes a few tries near a boundary. */
static void wait_same_ring(bed *b, int mask, sample *s, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    for (;;) {
        take_sample(b, mask, s);
        int all = 1, first = -1;
        for (int i = 0; i < NODES; i++) {
            if (!(mask & (1 << i)))
                continue;
            if (s->status[i] != PROTO_V2_ST_OK) {
                all = 0;
                break;
            }
            if (first < 0)
                first = i;
            else if (!same_keys(&s->ring[first], &s->ring[i]))
                all = 0;
        }
        if (all)
            return;
        ck_assert_msg(th_now_ms() < end, "nodes 0x%x did not converge within %d ms", mask,
                      timeout_ms);
        poll(NULL, 0, PACE_MS);
    }
}

#define ALL ((1 << NODES) - 1)

/* The current key's not_before in node i's ring (it must answer OK). */
static uint64_t current_slot_start(bed *b, int i)
{
    static ticket_ring r;
    ck_assert_int_eq(fetch_ring(b, i, &r), PROTO_V2_ST_OK);
    return ticket_ring_current(&r, r.generated_at)->not_before;
}

/* --- tests ------------------------------------------------------------------ */

START_TEST(test_converge_restart_outage)
{
    static bed b;
    static sample s, early;
    bed_open(&b);

    bed_node_start(&b, 0);
    bed_node_wait_ready(&b, 0);
    bed_node_start(&b, 1);
    bed_node_wait_ready(&b, 1);
    wait_same_ring(&b, 0x3, &early, 5000);

    /* Node 2 joins after a rotation: it must adopt the keys drawn before. */
    uint64_t first_slot =
        ticket_ring_current(&early.ring[0], early.ring[0].generated_at)->not_before;
    int64_t end = th_now_ms() + 5000;
    while (current_slot_start(&b, 0) == first_slot) {
        ck_assert(th_now_ms() < end);
        poll(NULL, 0, PACE_MS);
    }
    bed_node_start(&b, 2);
    bed_node_wait_ready(&b, 2);
    wait_same_ring(&b, ALL, &s, 5000);
    const ticket_key *before = ticket_ring_current(&early.ring[0], early.ring[0].generated_at);
    const ticket_key *seen = ticket_ring_find(&s.ring[2], before->name, s.ring[2].generated_at);
    ck_assert_msg(seen != NULL, "node 2 lacks the key that was current before it started");
    ck_assert_mem_eq(seen, before, sizeof(*before));
    ck_assert_int_ge(bed_stat(&b, 2, "ticket_adopted"), 2);

    /* Node 1 crashes; Redis hangs; node 1 comes back without a store. */
    bed_node_kill(&b, 1);
    ck_assert_int_eq(rp_stop(&b.redis), 0);
    bed_node_start(&b, 1);
    /* Until the running nodes have crossed a boundary they cannot cover
     * (they hold at most the slot after next), sample everyone: node 1
     * never answers OK, the others never contradict each other. */
    end = th_now_ms() + 4 * ROTATE * 1000 + 2000;
    int unavailable_seen[NODES] = {0};
    int samples = 0;
    while (!(unavailable_seen[0] && unavailable_seen[2])) {
        ck_assert_msg(th_now_ms() < end, "nodes 0 and 2 kept serving a ring without Redis");
        take_sample(&b, ALL, &s);
        samples++;
        ck_assert_int_eq(s.status[1], PROTO_V2_ST_UNAVAILABLE);
        for (int i = 0; i < NODES; i++)
            unavailable_seen[i] |= s.status[i] == PROTO_V2_ST_UNAVAILABLE;
        poll(NULL, 0, PACE_MS);
    }
    ck_assert_int_gt(samples, 1);
    ck_assert_int_gt(bed_stat(&b, 0, "ticket_backend_failures"), 0);
    ck_assert_int_gt(bed_stat(&b, 0, "ticket_not_ready"), 0);
    ck_assert_int_eq(bed_stat(&b, 1, "ticket_keys"), 0);

    ck_assert_int_eq(rp_cont(&b.redis), 0);
    bed_node_wait_ready(&b, 1);
    wait_same_ring(&b, ALL, &s, READY_MS);
    bed_close(&b);
}
END_TEST

START_TEST(test_one_node_cut_off)
{
    static bed b;
    static sample s;
    static relay r;
    bed_open(&b);
    relay_start(&r, b.redis.port);
    snprintf(b.url[2], sizeof(b.url[2]), "redis://127.0.0.1:%d", r.port);
    for (int i = 0; i < NODES; i++)
        bed_node_start(&b, i);
    for (int i = 0; i < NODES; i++)
        bed_node_wait_ready(&b, i);
    wait_same_ring(&b, ALL, &s, 5000);
    long long generated_before = bed_stat(&b, 2, "ticket_generated");

    atomic_store(&r.frozen, 1);
    /* Nodes 0 and 1 rotate on, always ready; node 2 goes UNAVAILABLE
     * within two rotations and stays so; nothing ever contradicts. */
    int64_t end = th_now_ms() + 4 * ROTATE * 1000 + 2000;
    int64_t off_since = 0;
    uint64_t rotations_while_off = 0, last_slot = 0;
    while (rotations_while_off < 2) {
        ck_assert_msg(th_now_ms() < end, "node 2 did not go unavailable, or 0/1 did not rotate");
        take_sample(&b, ALL, &s);
        ck_assert_int_eq(s.status[0], PROTO_V2_ST_OK);
        ck_assert_int_eq(s.status[1], PROTO_V2_ST_OK);
        if (off_since == 0 && s.status[2] == PROTO_V2_ST_UNAVAILABLE) {
            off_since = th_now_ms();
            end = off_since + 3 * ROTATE * 1000 + 2000;
        }
        if (off_since != 0) {
            ck_assert_int_eq(s.status[2], PROTO_V2_ST_UNAVAILABLE); /* stays off */
            uint64_t slot = ticket_ring_current(&s.ring[0], s.ring[0].generated_at)->not_before;
            if (last_slot != 0 && slot != last_slot)
                rotations_while_off++;
            last_slot = slot;
        }
        poll(NULL, 0, PACE_MS);
    }
    ck_assert_int_eq(bed_stat(&b, 2, "ticket_generated"), generated_before);
    ck_assert_int_gt(bed_stat(&b, 2, "ticket_backend_failures"), 0);

    atomic_store(&r.frozen, 0);
    wait_same_ring(&b, ALL, &s, READY_MS);
    bed_close(&b);
    relay_close(&r);
}
END_TEST

START_TEST(test_keys_refused_in_plaintext)
{
    static bed b;
    static uint8_t req[64], ans[PROTO_MAX_DATAGRAM];
    bed_open(&b);
    bed_node_start(&b, 0);
    bed_node_wait_ready(&b, 0);
    int fd = th_udp_connect(b.node[0].port);
    ck_assert_int_ge(fd, 0);
    size_t len =
        v2t_build(NULL, req, sizeof(req), PROTO_V2_KEYS, 0, 9, 0, NULL, 0, NULL, 0, tc_wall_ms());
    ck_assert_int_eq(th_udp_roundtrip(fd, req, len, ans, sizeof(ans), 300), 0);
    close(fd);
    static ticket_ring ring;
    ck_assert_int_eq(fetch_ring(&b, 0, &ring), PROTO_V2_ST_OK); /* sealed: served */
    bed_close(&b);
}
END_TEST

static Suite *ticket_cluster_suite(void)
{
    Suite *s = suite_create("ticket_cluster");
    TCase *tc = tcase_create("cluster");
    tcase_set_timeout(tc, 90);
    tcase_add_test(tc, test_converge_restart_outage);
    tcase_add_test(tc, test_one_node_cut_off);
    tcase_add_test(tc, test_keys_refused_in_plaintext);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    return tc_run_suite(ticket_cluster_suite());
}
