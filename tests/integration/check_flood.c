/* check_flood.c — a bounded flood of hostile datagrams at a real sessiond
 * with a cluster key, interleaved with valid sealed traffic.
 *
 * What is sent (FLOOD datagrams, about 20k, from one deterministic PRNG so
 * a failure can be replayed): one in ten a valid sealed GET, one in ten a
 * valid sealed PUT with NO_REPLY and a 2000..6000-byte value (eight times
 * the cache's 1 MiB budget over the run, so eviction is exercised), and the
 * rest bad, in eight kinds, each of which the daemon must count under one
 * known reason:
 *   junk            random bytes, version byte neither 1 nor 2 -> malformed_version
 *   empty           a zero-length datagram                      -> malformed_short
 *   plaintext       random bytes that look like v1 or plain v2  -> denied
 *   truncated long  a valid sealed datagram cut after its header -> malformed_length
 *   truncated short a valid sealed datagram cut inside its header -> malformed_short
 *   bad tag         a valid sealed datagram with one byte flipped -> auth_failed
 *   forged          random body and tag under our key ID         -> auth_failed
 *   foreign         random body and tag under another key ID     -> unknown_key
 *   stale           a valid sealed GET two minutes old           -> stale
 *
 * Pacing, and what is asserted about answers: after every CHUNK datagrams
 * the test sends a sealed PING and waits for its answer (the "paced subset":
 * every one of them must be answered, 100 %). CHUNK is sized from
 * net.core.rmem_max so a chunk always fits the daemon's receive buffer, and
 * the daemon reads its socket in order, so the PING's answer proves the
 * whole chunk was handled. Loopback UDP then drops nothing; the test checks
 * that rather than assuming it: kernel drops D = datagrams sent minus the
 * daemon's `datagrams=` counter. With D = 0 (the expected case) every
 * interleaved GET must have been answered, correctly, and each refusal
 * counter must equal exactly the number of bad datagrams of its kinds.
 * With D > 0 the test says so and asserts the honest bounds instead: GET
 * answers >= GETs sent - D, and bad sent - D <= refusals <= bad sent.
 *
 * Memory: the stats `bytes` must stay <= --max-memory, evictions must have
 * happened, and the daemon's VmRSS may grow by at most RSS_GROWTH_KB over
 * the flood (the cache budget, the 2 MiB of receive buffers and allocator
 * slack; more under AddressSanitizer, whose quarantine holds freed memory).
 *
 * Time: the flood is bounded in count; its duration is printed and must
 * stay under FLOOD_MAX_MS.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "proto_v2.h"
#include "v2ops.h"

#define FLOOD        20000
#define STORED       100 /* keys stored before the flood; GETs ask for 2 * STORED */
#define VALUE_LEN    500
#define MAX_MEMORY   (1024 * 1024)
#define MAX_DGRAM    6200 /* the largest datagram the flood sends */
#define SKB_OVERHEAD 1024 /* what the kernel charges a queued datagram beyond its bytes */
#define FLOOD_MAX_MS 30000
#define ANSWER_MS    3000
#define STATS_LINE   2048
#define KEY_LEN      48
#define BUF          (PROTO_MAX_DATAGRAM + 64)
#if defined(__SANITIZE_ADDRESS__)
#define RSS_GROWTH_KB (128 * 1024)
#else
#define RSS_GROWTH_KB (16 * 1024)
#endif

enum kind {
    K_GET,
    K_PUT,
    K_JUNK,
    K_EMPTY,
    K_PLAINTEXT,
    K_TRUNC_LONG,
    K_TRUNC_SHORT,
    K_BAD_TAG,
    K_FORGED,
    K_FOREIGN,
    K_STALE,
    K_COUNT
};

static const char *const kind_names[K_COUNT] = {
    "get",     "put",    "junk",    "empty", "plaintext", "truncated_long", "truncated_short",
    "bad_tag", "forged", "foreign", "stale"};

static uint8_t dgram[BUF];
static uint8_t ans[BUF];

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static size_t rng_range(size_t lo, size_t hi) /* lo..hi inclusive */
{
    return lo + (size_t)(rng() % (hi - lo + 1));
}

static void rng_fill(uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)rng();
}

static void make_key(uint8_t key[KEY_LEN], unsigned ns, unsigned n)
{
    memset(key, 0, KEY_LEN);
    key[0] = (uint8_t)ns;
    for (unsigned i = 16; i < KEY_LEN; i++)
        key[i] = (uint8_t)(n * 31u + i);
    key[16] = (uint8_t)n;
    key[17] = (uint8_t)(n >> 8);
}

static void make_value(uint8_t *value, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        value[i] = (uint8_t)(seed * 7u + i * 13u);
}

/* A random body under a chosen key ID: framing right, tag wrong. */
static size_t forge(uint8_t *out, const uint8_t key_id[PROTO_V2_KEY_ID_LEN])
{
    size_t value_len = rng_range(0, 400);
    size_t len = PROTO_V2_OVERHEAD_MAX + KEY_LEN + value_len;
    uint64_t ts = tc_wall_ms();

    rng_fill(out, len);
    out[0] = PROTO_V2_VERSION;
    out[1] = value_len > 0 ? PROTO_V2_PUT : PROTO_V2_GET;
    out[2] = PROTO_V2_F_SEALED;
    out[3] = 0;
    out[12] = 0;
    out[13] = KEY_LEN;
    out[14] = (uint8_t)(value_len >> 8);
    out[15] = (uint8_t)value_len;
    memcpy(out + 16, key_id, PROTO_V2_KEY_ID_LEN);
    for (int i = 0; i < 8; i++)
        out[20 + i] = (uint8_t)(ts >> (56 - 8 * i));
    return len;
}

typedef struct flood_state {
    int fd;
    proto_v2_sealer *sealer;
    uint8_t our_id[PROTO_V2_KEY_ID_LEN];
    uint8_t foreign_id[PROTO_V2_KEY_ID_LEN];
    long long sent[K_COUNT];
    long long total_sent; /* everything, valid traffic and syncs included */
    long long get_answers;
    long long get_hits;
    uint32_t next_id;
    uint32_t sync_ids_sent;
    uint32_t sync_ids_answered;
} flood_state;

/* GET request IDs carry this bit and the key number; sync PINGs do not. */
#define GET_ID_BIT 0x80000000u

/* Reads answers until the PING `sync_id` is answered. Every answer must
 * open with our key and be either a GET's (checked against what may be
 * stored) or that PING's. */
static int drain_until(flood_state *st, uint32_t sync_id)
{
    static uint8_t want[VALUE_LEN];

    for (;;) {
        ssize_t n = th_udp_recv(st->fd, ans, sizeof(ans), ANSWER_MS);
        proto_v2_msg a;
        int rc;

        if (n <= 0)
            return -1;
        rc = proto_v2_open(st->sealer, ans, (size_t)n, 1, tc_wall_ms(), PROTO_V2_DEFAULT_WINDOW_MS,
                           &a);
        ck_assert_msg(rc == PROTO_OK, "an answer does not open: %s", proto_v2_status_name(rc));
        if (a.op == (PROTO_V2_PING | PROTO_V2_ANSWER) && a.request_id == sync_id)
            return 0;
        ck_assert_msg(a.op == (PROTO_V2_GET | PROTO_V2_ANSWER) && (a.request_id & GET_ID_BIT),
                      "unexpected answer op 0x%02x id 0x%08x", a.op, a.request_id);
        st->get_answers++;
        if (a.status == PROTO_V2_ST_OK) {
            unsigned n_key = (a.request_id >> 16) & 0x7fff;

            ck_assert_msg(n_key < STORED, "GET of a never-stored key %u answered OK", n_key);
            make_value(want, VALUE_LEN, n_key);
            ck_assert_uint_eq(a.value_len, VALUE_LEN);
            ck_assert_mem_eq(a.value, want, VALUE_LEN);
            st->get_hits++;
        } else {
            ck_assert_int_eq(a.status, PROTO_V2_ST_NOT_FOUND);
        }
    }
}

static void sync_ping(flood_state *st)
{
    uint32_t id = ++st->sync_ids_sent;
    size_t len =
        v2t_build(st->sealer, dgram, BUF, PROTO_V2_PING, 0, id, 0, NULL, 0, NULL, 0, tc_wall_ms());

    tc_send_all(st->fd, dgram, len);
    st->total_sent++;
    if (drain_until(st, id) == 0)
        st->sync_ids_answered++;
}

/* One flood datagram of the kind the index calls for. */
static void send_one(flood_state *st, unsigned i)
{
    static uint8_t value[MAX_DGRAM];
    uint8_t key[KEY_LEN];
    enum kind k;
    size_t len = 0;

    if (i % 10 == 0)
        k = K_GET;
    else if (i % 10 == 5)
        k = K_PUT;
    else
        k = (enum kind)(K_JUNK + rng() % (K_COUNT - K_JUNK));

    switch (k) {
    case K_GET: {
        unsigned n = (unsigned)rng_range(0, 2 * STORED - 1);

        make_key(key, 1, n);
        len = v2t_build(st->sealer, dgram, BUF, PROTO_V2_GET, 0,
                        GET_ID_BIT | (uint32_t)n << 16 | (i & 0xffff), 0, key, KEY_LEN, NULL, 0,
                        tc_wall_ms());
        break;
    }
    case K_PUT: {
        size_t value_len = rng_range(2000, 6000);

        make_key(key, 2, i);
        rng_fill(value, value_len);
        len = v2t_build(st->sealer, dgram, BUF, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, i, 0, key,
                        KEY_LEN, value, value_len, tc_wall_ms());
        break;
    }
    case K_JUNK:
        len = rng_range(1, 600);
        rng_fill(dgram, len);
        while (dgram[0] == PROTO_V1_VERSION || dgram[0] == PROTO_V2_VERSION)
            dgram[0] = (uint8_t)rng();
        break;
    case K_EMPTY:
        len = 0;
        break;
    case K_PLAINTEXT:
        len = rng_range(1, 600);
        rng_fill(dgram, len);
        dgram[0] = rng() & 1 ? PROTO_V1_VERSION : PROTO_V2_VERSION;
        if (len > 2)
            dgram[2] &= (uint8_t)~PROTO_V2_F_SEALED;
        break;
    case K_TRUNC_LONG:
    case K_TRUNC_SHORT: {
        size_t full;

        make_key(key, 3, i);
        make_value(value, 300, i);
        full = v2t_build(st->sealer, dgram, BUF, PROTO_V2_PUT, 0, i, 0, key, KEY_LEN, value, 300,
                         tc_wall_ms());
        len = k == K_TRUNC_LONG ? rng_range(PROTO_V2_HEADER_LEN, full - 1)
                                : rng_range(3, PROTO_V2_HEADER_LEN - 1);
        break;
    }
    case K_BAD_TAG: {
        size_t at;

        make_key(key, 4, i);
        len = v2t_build(st->sealer, dgram, BUF, PROTO_V2_GET, 0, i, 0, key, KEY_LEN, NULL, 0,
                        tc_wall_ms());
        at = rng_range(PROTO_V2_HEADER_LEN + PROTO_V2_SEAL_LEN, len - 1);
        dgram[at] ^= (uint8_t)(1 + rng() % 255);
        break;
    }
    case K_FORGED:
        len = forge(dgram, st->our_id);
        break;
    case K_FOREIGN:
        len = forge(dgram, st->foreign_id);
        break;
    case K_STALE:
        make_key(key, 1, 0);
        len = v2t_build(st->sealer, dgram, BUF, PROTO_V2_GET, 0, i, 0, key, KEY_LEN, NULL, 0,
                        tc_wall_ms() - 120000);
        break;
    default:
        ck_abort_msg("no kind %d", (int)k);
    }
    ck_assert_uint_le(len, MAX_DGRAM);
    tc_send_all(st->fd, dgram, len);
    st->sent[k]++;
    st->total_sent++;
}

/* Datagrams per chunk: what surely fits the daemon's receive buffer. */
static unsigned chunk_size(void)
{
    FILE *f = fopen("/proc/sys/net/core/rmem_max", "r");
    long long rmem_max = 212992;
    long long usable;
    unsigned chunk;

    if (f != NULL) {
        if (fscanf(f, "%lld", &rmem_max) != 1)
            rmem_max = 212992;
        fclose(f);
    }
    /* The daemon asks for 4 MiB, capped at rmem_max; the kernel doubles
     * that for its bookkeeping, which we leave as the safety margin. */
    usable = rmem_max < 4 * 1024 * 1024 ? rmem_max : 4 * 1024 * 1024;
    chunk = (unsigned)(usable / (MAX_DGRAM + SKB_OVERHEAD));
    if (chunk > 256)
        chunk = 256;
    if (chunk < 8)
        chunk = 8;
    return chunk;
}

START_TEST(test_flood)
{
    static uint8_t value[VALUE_LEN];
    char dir[256], key_path[300], max_memory[32];
    uint8_t key_bytes[PROTO_V2_CLUSTER_KEY_LEN];
    uint8_t foreign_bytes[PROTO_V2_CLUSTER_KEY_LEN];
    char line[STATS_LINE];
    flood_state st;
    th_daemon d;
    unsigned chunk = chunk_size();
    long long rss_before, rss_after, drops, bad = 0, refusals, gets_sent;
    int64_t began, took;
    int rcvbuf = 1 << 20;

    memset(&st, 0, sizeof(st));
    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    ck_assert_int_eq(RAND_bytes(key_bytes, sizeof(key_bytes)), 1);
    ck_assert_int_eq(RAND_bytes(foreign_bytes, sizeof(foreign_bytes)), 1);
    snprintf(key_path, sizeof(key_path), "%s/cluster.key", dir);
    v2t_write_key_file(key_path, key_bytes, 0600);
    st.sealer = proto_v2_sealer_new(key_bytes, NULL);
    ck_assert_ptr_nonnull(st.sealer);
    ck_assert_int_eq(proto_v2_key_id(key_bytes, st.our_id), 0);
    ck_assert_int_eq(proto_v2_key_id(foreign_bytes, st.foreign_id), 0);
    ck_assert_int_ne(memcmp(st.our_id, st.foreign_id, PROTO_V2_KEY_ID_LEN), 0);
    snprintf(max_memory, sizeof(max_memory), "%d", MAX_MEMORY);
    {
        const char *const args[] = {"--key-file", key_path, "--max-memory", max_memory, NULL};

        ck_assert_int_eq(th_daemon_start(&d, args), 0);
    }
    st.fd = th_udp_connect(d.port);
    ck_assert_int_ge(st.fd, 0);
    setsockopt(st.fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));

    /* Half of the keys the GETs ask for are stored. */
    for (unsigned n = 0; n < STORED; n++) {
        uint8_t key[KEY_LEN];
        size_t len;

        make_key(key, 1, n);
        make_value(value, sizeof(value), n);
        len = v2t_build(st.sealer, dgram, BUF, PROTO_V2_PUT, PROTO_V2_F_NO_REPLY, n, 0, key,
                        KEY_LEN, value, sizeof(value), tc_wall_ms());
        tc_send_all(st.fd, dgram, len);
        st.total_sent++;
    }
    sync_ping(&st);
    ck_assert_int_eq(st.sync_ids_answered, 1);
    rss_before = th_proc_status(d.pid, "VmRSS");
    ck_assert_int_gt(rss_before, 0);

    began = th_now_ms();
    for (unsigned i = 0; i < FLOOD; i++) {
        send_one(&st, i);
        if ((i + 1) % chunk == 0 || i + 1 == FLOOD)
            sync_ping(&st);
    }
    took = th_now_ms() - began;
    rss_after = th_proc_status(d.pid, "VmRSS");
    ck_assert_int_eq(th_daemon_stats(&d, line, sizeof(line)), 0);

    for (int k = K_JUNK; k < K_COUNT; k++)
        bad += st.sent[k];
    gets_sent = st.sent[K_GET];
    drops = st.total_sent - tc_field(line, "datagrams");
    refusals = tc_field(line, "malformed") + tc_field(line, "denied") +
               tc_field(line, "auth_failed") + tc_field(line, "stale") +
               tc_field(line, "unknown_key");
    fprintf(stderr,
            "flood: %d datagrams (%lld bad) in %lld ms, chunks of %u; kernel drops %lld; "
            "GETs %lld answered %lld (hits %lld); RSS %lld -> %lld kB\n",
            FLOOD, bad, (long long)took, chunk, drops, gets_sent, st.get_answers, st.get_hits,
            rss_before, rss_after);
    for (int k = 0; k < K_COUNT; k++)
        fprintf(stderr, "  %-16s %lld\n", kind_names[k], st.sent[k]);
    fprintf(stderr, "  %s\n", line);

    /* The paced subset: every sync PING answered. */
    ck_assert_uint_eq(st.sync_ids_answered, st.sync_ids_sent);
    ck_assert_int_lt(took, FLOOD_MAX_MS);
    ck_assert_int_ge(drops, 0);
    if (drops == 0) {
        ck_assert_int_eq(st.get_answers, gets_sent);
        ck_assert_int_eq(refusals, bad);
        ck_assert_int_eq(tc_field(line, "malformed_version"), st.sent[K_JUNK]);
        ck_assert_int_eq(tc_field(line, "malformed_short"),
                         st.sent[K_EMPTY] + st.sent[K_TRUNC_SHORT]);
        ck_assert_int_eq(tc_field(line, "malformed_length"), st.sent[K_TRUNC_LONG]);
        ck_assert_int_eq(tc_field(line, "malformed"), st.sent[K_JUNK] + st.sent[K_EMPTY] +
                                                          st.sent[K_TRUNC_SHORT] +
                                                          st.sent[K_TRUNC_LONG]);
        ck_assert_int_eq(tc_field(line, "denied"), st.sent[K_PLAINTEXT]);
        ck_assert_int_eq(tc_field(line, "auth_failed"), st.sent[K_BAD_TAG] + st.sent[K_FORGED]);
        ck_assert_int_eq(tc_field(line, "unknown_key"), st.sent[K_FOREIGN]);
        ck_assert_int_eq(tc_field(line, "stale"), st.sent[K_STALE]);
        ck_assert_int_eq(tc_field(line, "puts"), STORED + st.sent[K_PUT]);
    } else {
        fprintf(stderr, "flood: the kernel dropped %lld datagrams; asserting bounds only\n", drops);
        ck_assert_int_ge(st.get_answers, gets_sent - drops);
        ck_assert_int_ge(refusals, bad - drops);
        ck_assert_int_le(refusals, bad);
    }
    /* Everything the daemon received is accounted for, one way or another. */
    ck_assert_int_eq(tc_field(line, "v1") + tc_field(line, "v2") + refusals,
                     tc_field(line, "datagrams"));
    ck_assert_int_eq(tc_field(line, "unsent"), 0);
    /* Memory: the budget held and eviction did the work. */
    ck_assert_int_le(tc_field(line, "bytes"), MAX_MEMORY);
    ck_assert_int_gt(tc_field(line, "evicted"), 0);
    ck_assert_msg(rss_after - rss_before <= RSS_GROWTH_KB, "VmRSS grew by %lld kB (limit %d)",
                  rss_after - rss_before, RSS_GROWTH_KB);

    close(st.fd);
    ck_assert_int_eq(th_daemon_stop(&d), 0);
    proto_v2_sealer_free(st.sealer);
    th_rmtree(dir);
}
END_TEST

static Suite *flood_suite(void)
{
    Suite *s = suite_create("flood");
    TCase *tc = tcase_create("flood");

    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_flood);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(flood_suite());
}
