/* loadgen.c — the UDP load generator behind `make bench`: one generator,
 * five targets (the raw echo baseline, sessiond v1, v2 plain and v2 sealed,
 * memcached over UDP), so every figure comes from the same client code and
 * can be read as a ratio.
 *
 *   loadgen --target echo|sessiond-v1|sessiond-v2|sessiond-v2-sealed|memcached
 *           --port P [--key-file FILE] [options]
 *
 * It prints one line of name=value fields ("result target=... ops_per_s=...
 * p99_us=..."), which tests/bench/run.sh parses. `loadgen --help` lists the
 * options; the defaults are the issue's workload: 90 % GET / 10 % PUT,
 * values uniform in 200..2000 bytes, 10000 keys, window 1, 4 sockets, 5 s.
 *
 * How it works: a window of W request slots, spread round-robin over N
 * connected UDP sockets, one thread, epoll. Each slot always has one GET in
 * flight; when its answer arrives (or it is declared lost after
 * --timeout-ms), the latency goes into a log-linear histogram and the slot
 * issues the next GET at once. Sends are queued per socket and leave with
 * one sendmmsg(2) per socket per loop turn; answers are drained with
 * recvmmsg(2), and the clock is read once per batch, so the generator spends
 * as little CPU per request as the servers it measures (it shares the
 * machine with them, and its own CPU use is printed to show whether it was
 * the limit).
 *
 * PUTs: a v1 NEW has no answer (nor does memcached's `set ... noreply`), so
 * a PUT cannot hold a window slot. Before each GET a slot sends a PUT with
 * probability 1 - get-ratio, repeatedly (at most LG_MAX_PUT_RUN in a row):
 * PUTs thus flow at get-ratio's share of all operations and are paced by
 * the GET answers, never faster than the server answers. They count as
 * operations when sent, and stay out of the latency figures.
 *
 * Matching answers to requests:
 *   - sessiond v1 has no request ID: an answer echoes the 32-byte key. A key
 *     is never in flight twice at once (a slot picks the next free key), so
 *     key -> slot is a table lookup; the slot's socket must match too.
 *   - sessiond v2: the request ID carries the slot (low 12 bits) and the
 *     slot's sequence number (the rest), so a late answer is told apart.
 *     Keys are 48 bytes, a 16-byte namespace + the 32-byte ID, as
 *     libsessionc sends them. PUTs carry NO_REPLY, as libsessionc's do, so
 *     they stay fire-and-forget like v1 NEWs. Plain v2 sends the value from
 *     the pool by iovec like v1; sealed v2 must encrypt key || value into
 *     one buffer, so each queued sealed datagram has its own buffer (one
 *     copy-and-encrypt per request: exactly what a real client pays).
 *     Sealed: one proto_v2_sealer for the generator (one thread; a sealer is
 *     per thread), wall-clock ms timestamps, answers opened in place in the
 *     receive buffers with proto_v2_open.
 *   - echo: the request carries the slot and a per-slot sequence number,
 *     and asks udp_echo for an answer as large as sessiond's GET answer for
 *     that key would be (36 + value bytes; see udp_echo.c), and PUTs ask for
 *     no answer, so the baseline moves the same bytes.
 *   - memcached: the 8-byte UDP frame header (request id, sequence number,
 *     datagram count, reserved) + ASCII `get KEY\r\n`, and `set KEY 0 TTL N
 *     noreply\r\n<data>\r\n`. memcached splits an answer over datagrams of
 *     at most 1400 bytes, so an answer with a large value spans two; a GET
 *     is complete when every sequence number of its request id has arrived
 *     (up to 64 datagrams).
 *   A late answer to a request already counted lost, or one that matches
 *   nothing, is counted as stray; a malformed one as bad.
 *
 * Before measuring, every key is stored once (the fill phase), so GETs hit:
 * PUTs in batches of LG_FILL_BATCH, each followed by a GET of the batch's
 * last key, whose answer proves the batch was processed (one socket, one
 * server thread: datagrams are handled in order). --fill-only stores --keys
 * keys that way and exits (the memory benchmark uses it). Then a warm-up
 * (--warmup, not counted) and the measured --duration.
 *
 * Shared-store runs (run.sh's Redis part): `--fill-only --fill-rate R`
 * through node 1 (paced, so its write-through keeps up),
 * then `--no-fill --get-ratio 1 --sequential` against node 2: GETs walk
 * the key space in order, so each asks node 2 for a key it has never seen
 * and its answer needs a round trip to the store (until the walk wraps,
 * reported as wraps=).
 *
 * Known limits: IPv4 only; one file for all targets (a split of the
 * encoders and matchers into their own file would need a Makefile rule:
 * every tests/bench/ source is a binary with its own main); a
 * late answer to a lost v1 GET whose key was reissued on the same socket
 * would be matched to the new request (the key space makes that rare, and
 * losses are reported). The cheaper alternative not taken: one blocking
 * socket per outstanding request with recv timeouts (as stunnel does) is
 * simpler but costs a thread or a syscall pair per request, so the
 * generator would saturate before the servers.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "keyfile.h"
#include "proto.h"
#include "proto_v2.h"

#define LG_MAX_WINDOW     4096
#define LG_MAX_SOCKETS    256
#define LG_MAX_DURATION_S 60.0
#define LG_MAX_KEYS       20000000u
#define LG_MAX_VALUE      60000 /* leaves room for any target's header in one datagram */
#define LG_QUEUE          128   /* datagrams queued per socket before a sendmmsg */
#define LG_HDR_MAX        128   /* the largest request header (memcached's set line) */
#define LG_RECV_BATCH     32
#define LG_RECV_BUF       65536
#define LG_POOL_SIZE      (128 * 1024) /* values are slices of this random pool: no copy */
#define LG_MAX_PUT_RUN    16
#define LG_FILL_BATCH     32
#define LG_SYNC_TRIES     5
#define LG_MC_FRAME       8
#define LG_MC_MAX_PARTS   64
#define LG_ECHO_MAGIC     "ESZ1"
#define LG_ECHO_HDR       36 /* the same request size as a v1 GET */
#define LG_KEY_LEN        PROTO_V1_KEY_LEN
#define LG_MC_KEY_LEN     32 /* hex characters: the same key size on the wire as v1 */
#define LG_V2_KEY_LEN     (PROTO_V2_NAMESPACE_LEN + LG_KEY_LEN)
#define LG_V2_SLOT_BITS   12 /* request ID = seq << 12 | slot: LG_MAX_WINDOW is 4096 */
#define LG_V2_NAMESPACE   "loadgen-bench-ns" /* 16 bytes */

/* The histogram: HdrHistogram-style log-linear buckets over nanoseconds,
 * 2^LG_HIST_SUB_BITS buckets per power of two (under 1 % relative error),
 * values clamped to 2^LG_HIST_MAX_BITS ns (~18 minutes). */
#define LG_HIST_SUB_BITS 7
#define LG_HIST_SUB      (1u << LG_HIST_SUB_BITS)
#define LG_HIST_MAX_BITS 40
#define LG_HIST_BUCKETS  ((LG_HIST_MAX_BITS - LG_HIST_SUB_BITS + 1) * LG_HIST_SUB + LG_HIST_SUB)

typedef enum lg_target { LG_ECHO, LG_V1, LG_MEMCACHED, LG_V2, LG_V2_SEALED } lg_target;

static const char *const lg_target_names[] = {"echo", "sessiond-v1", "memcached", "sessiond-v2",
                                              "sessiond-v2-sealed"};

typedef struct lg_options {
    lg_target target;
    const char *key_file; /* sessiond-v2-sealed: the cluster key */
    struct sockaddr_in addr;
    int sockets;
    int window;
    double duration_s;
    double warmup_s;
    double get_ratio;
    unsigned min_size;
    unsigned max_size;
    uint32_t keys;
    int timeout_ms;
    unsigned ttl_s;
    long server_pid;
    uint64_t seed;
    int fill;         /* store every key before measuring */
    int fill_only;    /* store every key, report, exit */
    int probe;        /* one GET answered within 5 s, or exit 1 */
    int sequential;   /* GETs walk the key space in order instead of at random */
    double fill_rate; /* PUTs per second at most during the fill, 0: no cap */
    int hist;         /* print the histogram's non-empty buckets */
} lg_options;

typedef struct lg_hist {
    uint64_t counts[LG_HIST_BUCKETS];
    uint64_t total;
    uint64_t sum_ns;
    uint64_t max_ns;
} lg_hist;

typedef struct lg_slot {
    uint64_t sent_ns; /* when its request left; 0 while it waits in a send queue */
    uint32_t key;
    uint32_t seq; /* echo: bumped per request, so a late answer is told apart */
    int sock;
    int busy; /* a GET is in flight */
    int hit;  /* the answer said found */
    uint16_t mc_id;
    uint16_t mc_parts; /* datagrams the answer spans, 0 until the first arrives */
    uint64_t mc_seen;  /* bit i: datagram i arrived */
} lg_slot;

typedef struct lg_sock {
    int fd;
    unsigned queued;
    struct mmsghdr msgs[LG_QUEUE];
    struct iovec iov[LG_QUEUE][3];
    uint8_t hdr[LG_QUEUE][LG_HDR_MAX];
    int slot_of[LG_QUEUE]; /* the slot to stamp with the send time, -1 for a PUT */
    uint8_t *sealed;       /* sessiond-v2-sealed: LG_QUEUE buffers of sealed_cap bytes */
} lg_sock;

typedef struct lg_counters {
    uint64_t gets; /* GET answers received while measuring */
    uint64_t hits;
    uint64_t misses;
    uint64_t puts; /* PUTs sent while measuring */
    uint64_t lost; /* GETs unanswered after --timeout-ms while measuring */
    uint64_t stray;
    uint64_t bad;
    uint64_t errors;     /* socket errors (e.g. ECONNREFUSED: nothing listens) */
    uint64_t send_drops; /* datagrams the kernel refused to queue */
} lg_counters;

typedef struct lg {
    lg_options opt;
    lg_slot *slots;
    lg_sock *socks;
    int epfd;
    int32_t *key_slot;  /* keys entries: the slot with a GET of it in flight, or -1 */
    uint16_t *key_size; /* keys entries: the value size last stored */
    int32_t *mc_slot;   /* 65536 entries: memcached request id -> slot, or -1 */
    uint16_t mc_next_id;
    proto_v2_sealer *sealer; /* sessiond-v2-sealed only */
    size_t sealed_cap;
    uint8_t *pool;
    uint8_t *recv_bufs;
    struct mmsghdr recv_msgs[LG_RECV_BATCH];
    struct iovec recv_iov[LG_RECV_BATCH];
    uint64_t rng;
    uint32_t next_key; /* --sequential: the next key to ask for */
    uint64_t wraps;    /* --sequential: walks past the last key */
    int measuring;
    int running; /* completions issue the next request */
    uint64_t end_ns;
    lg_counters c;
    lg_hist hist;
} lg;

/* ---- small helpers ---- */

static uint64_t lg_now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* splitmix64: fast, good enough for picking keys and sizes. */
static uint64_t lg_mix(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15u);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double lg_uniform(lg *g)
{
    return (double)(lg_mix(&g->rng) >> 11) * (1.0 / 9007199254740992.0);
}

static void lg_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t lg_get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t lg_get_be16(const uint8_t *p)
{
    return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

/* Key k's 32 bytes: k big-endian, then 28 pseudo-random bytes derived from
 * k, so the server hashes realistic keys and an answer's key can be checked. */
static void lg_key_bytes(uint32_t k, uint8_t out[LG_KEY_LEN])
{
    uint64_t state = 0x5e55109dULL ^ ((uint64_t)k << 20);

    lg_put_be32(out, k);
    for (int i = 4; i < LG_KEY_LEN; i += 8) {
        uint64_t r = lg_mix(&state);

        for (int j = 0; j < 8 && i + j < LG_KEY_LEN; j++)
            out[i + j] = (uint8_t)(r >> (8 * j));
    }
}

/* memcached's key: the first 16 key bytes in hex, 32 characters. */
static void lg_set_value(lg *g, lg_sock *sock, unsigned q, unsigned size);

static int lg_is_v2(const lg *g)
{
    return g->opt.target == LG_V2 || g->opt.target == LG_V2_SEALED;
}

static uint64_t lg_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A v2 request for `key` into the slot's queue entry q: plain, the header +
 * key in hdr[q] and the value (if any) from the pool by iovec; sealed, the
 * whole datagram sealed into the entry's own buffer. Returns the length of
 * the first iovec. */
static size_t lg_v2_request(lg *g, lg_sock *sock, unsigned q, uint8_t op, uint32_t request_id,
                            uint32_t key, unsigned value_size)
{
    uint8_t key_bytes[LG_V2_KEY_LEN];
    proto_v2_msg msg = {
        .op = op, .request_id = request_id, .key = key_bytes, .key_len = LG_V2_KEY_LEN};
    size_t len = 0;
    int rc;

    memcpy(key_bytes, LG_V2_NAMESPACE, PROTO_V2_NAMESPACE_LEN);
    lg_key_bytes(key, key_bytes + PROTO_V2_NAMESPACE_LEN);
    if (op == PROTO_V2_PUT) {
        msg.flags = PROTO_V2_F_NO_REPLY;
        msg.ttl = g->opt.ttl_s;
    }
    if (g->opt.target == LG_V2_SEALED) {
        uint8_t *out = sock->sealed + (size_t)q * g->sealed_cap;

        if (value_size > 0) {
            size_t offset = (size_t)(lg_mix(&g->rng) % (LG_POOL_SIZE - value_size));

            msg.value = g->pool + offset;
            msg.value_len = value_size;
        }
        msg.timestamp_ms = lg_wall_ms();
        rc = proto_v2_seal(g->sealer, out, g->sealed_cap, &msg, &len);
        sock->iov[q][0].iov_base = out;
    } else {
        /* Header + key only, the value follows by iovec, uncopied. The
         * encoder refuses a PUT without its value, so a PUT's header is
         * written here by hand (proto_v2.h's layout); a GET's by it. */
        uint8_t *hdr = sock->hdr[q];

        if (op == PROTO_V2_PUT) {
            hdr[0] = PROTO_V2_VERSION;
            hdr[1] = op;
            hdr[2] = msg.flags;
            hdr[3] = 0;
            lg_put_be32(hdr + 4, request_id);
            lg_put_be32(hdr + 8, msg.ttl);
            hdr[12] = 0;
            hdr[13] = LG_V2_KEY_LEN;
            hdr[14] = (uint8_t)(value_size >> 8);
            hdr[15] = (uint8_t)value_size;
            memcpy(hdr + PROTO_V2_HEADER_LEN, key_bytes, LG_V2_KEY_LEN);
            len = PROTO_V2_HEADER_LEN + LG_V2_KEY_LEN;
            lg_set_value(g, sock, q, value_size);
            rc = PROTO_OK;
        } else {
            rc = proto_v2_encode(hdr, LG_HDR_MAX, &msg, &len);
        }
    }
    if (rc != PROTO_OK) {
        g->c.errors++; /* never expected: sizes are checked at start */
        len = 0;
    }
    return len;
}

static void lg_mc_key(uint32_t k, char out[LG_MC_KEY_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t bytes[LG_KEY_LEN];

    lg_key_bytes(k, bytes);
    for (int i = 0; i < LG_MC_KEY_LEN / 2; i++) {
        out[2 * i] = hex[bytes[i] >> 4];
        out[2 * i + 1] = hex[bytes[i] & 15];
    }
    out[LG_MC_KEY_LEN] = '\0';
}

/* ---- histogram ---- */

static unsigned lg_hist_index(uint64_t v)
{
    unsigned msb;
    unsigned shift;

    if (v >= (1ULL << LG_HIST_MAX_BITS))
        v = (1ULL << LG_HIST_MAX_BITS) - 1;
    if (v < 2 * LG_HIST_SUB)
        return (unsigned)v;
    msb = 63u - (unsigned)__builtin_clzll(v);
    shift = msb - LG_HIST_SUB_BITS;
    return (shift + 1) * LG_HIST_SUB + (unsigned)((v >> shift) - LG_HIST_SUB);
}

/* The largest value bucket i holds. */
static uint64_t lg_hist_upper(unsigned i)
{
    unsigned shift;
    uint64_t sub;

    if (i < 2 * LG_HIST_SUB)
        return i;
    shift = i / LG_HIST_SUB - 1;
    sub = i % LG_HIST_SUB + LG_HIST_SUB;
    return ((sub + 1) << shift) - 1;
}

static void lg_hist_add(lg_hist *h, uint64_t ns)
{
    h->counts[lg_hist_index(ns)]++;
    h->total++;
    h->sum_ns += ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

/* The value at quantile q (0..1): the upper edge of the first bucket whose
 * cumulative count reaches q of the total. */
static uint64_t lg_hist_quantile(const lg_hist *h, double q)
{
    uint64_t want;
    uint64_t seen = 0;

    if (h->total == 0)
        return 0;
    want = (uint64_t)ceil(q * (double)h->total);
    if (want == 0)
        want = 1;
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want)
            return lg_hist_upper(i) < h->max_ns ? lg_hist_upper(i) : h->max_ns;
    }
    return h->max_ns;
}

static void lg_hist_print(const lg_hist *h)
{
    uint64_t seen = 0;

    printf("# histogram: upper_us count cumulative_fraction\n");
    for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
        if (h->counts[i] == 0)
            continue;
        seen += h->counts[i];
        printf("hist %.3f %" PRIu64 " %.6f\n", (double)lg_hist_upper(i) / 1000.0, h->counts[i],
               (double)seen / (double)h->total);
    }
}

/* ---- building requests ---- */

/* Appends one datagram to socket s's send queue; flushes first when full. */
static void lg_flush(lg *g, int s);

static unsigned lg_enqueue(lg *g, int s, int slot)
{
    lg_sock *sock = &g->socks[s];
    unsigned q;

    if (sock->queued == LG_QUEUE)
        lg_flush(g, s);
    q = sock->queued++;
    sock->slot_of[q] = slot;
    sock->msgs[q].msg_hdr.msg_iov = sock->iov[q];
    sock->msgs[q].msg_hdr.msg_iovlen = 1;
    sock->iov[q][0].iov_base = sock->hdr[q];
    return q;
}

static void lg_set_value(lg *g, lg_sock *sock, unsigned q, unsigned size)
{
    size_t offset = (size_t)(lg_mix(&g->rng) % (LG_POOL_SIZE - size));

    sock->iov[q][1].iov_base = g->pool + offset;
    sock->iov[q][1].iov_len = size;
    sock->msgs[q].msg_hdr.msg_iovlen = 2;
}

static unsigned lg_pick_size(lg *g)
{
    return g->opt.min_size + (unsigned)(lg_mix(&g->rng) % (g->opt.max_size - g->opt.min_size + 1));
}

static void lg_queue_put(lg *g, int s, uint32_t key, unsigned size)
{
    lg_sock *sock = &g->socks[s];
    unsigned q = lg_enqueue(g, s, -1);
    uint8_t *hdr = sock->hdr[q];
    uint8_t key_bytes[LG_KEY_LEN];
    char mc_key[LG_MC_KEY_LEN + 1];
    size_t len = 0;
    int n;

    g->key_size[key] = (uint16_t)size;
    switch (g->opt.target) {
    case LG_V1:
        lg_key_bytes(key, key_bytes);
        proto_v1_encode(hdr, LG_HDR_MAX, PROTO_V1_NEW, (uint16_t)g->opt.ttl_s, key_bytes,
                        LG_KEY_LEN, NULL, 0, &len);
        break;
    case LG_ECHO:
        memset(hdr, 0, LG_ECHO_HDR);
        memcpy(hdr, LG_ECHO_MAGIC, 4); /* asks for no answer: length 0 */
        len = LG_ECHO_HDR;
        break;
    case LG_MEMCACHED:
        lg_mc_key(key, mc_key);
        memset(hdr, 0, LG_MC_FRAME);
        hdr[5] = 1; /* one datagram */
        n = snprintf((char *)hdr + LG_MC_FRAME, LG_HDR_MAX - LG_MC_FRAME,
                     "set %s 0 %u %u noreply\r\n", mc_key, g->opt.ttl_s, size);
        len = LG_MC_FRAME + (size_t)n;
        sock->iov[q][2].iov_base = (void *)"\r\n";
        sock->iov[q][2].iov_len = 2;
        break;
    case LG_V2:
    case LG_V2_SEALED:
        sock->iov[q][0].iov_len = lg_v2_request(g, sock, q, PROTO_V2_PUT, 0, key, size);
        if (g->measuring)
            g->c.puts++;
        return;
    }
    sock->iov[q][0].iov_len = len;
    lg_set_value(g, sock, q, size);
    if (g->opt.target == LG_MEMCACHED)
        sock->msgs[q].msg_hdr.msg_iovlen = 3;
    if (g->measuring)
        g->c.puts++;
}

static void lg_queue_get(lg *g, int slot_index, uint32_t key)
{
    lg_slot *slot = &g->slots[slot_index];
    lg_sock *sock = &g->socks[slot->sock];
    unsigned q = lg_enqueue(g, slot->sock, slot_index);
    uint8_t *hdr = sock->hdr[q];
    uint8_t key_bytes[LG_KEY_LEN];
    char mc_key[LG_MC_KEY_LEN + 1];
    size_t len = 0;
    int n;

    slot->busy = 1;
    slot->key = key;
    slot->sent_ns = 0;
    slot->hit = 0;
    switch (g->opt.target) {
    case LG_V1:
        lg_key_bytes(key, key_bytes);
        proto_v1_encode(hdr, LG_HDR_MAX, PROTO_V1_GET, 0, key_bytes, LG_KEY_LEN, NULL, 0, &len);
        g->key_slot[key] = slot_index;
        break;
    case LG_ECHO:
        memset(hdr, 0, LG_ECHO_HDR);
        memcpy(hdr, LG_ECHO_MAGIC, 4);
        lg_put_be32(hdr + 4, PROTO_V1_HEADER_LEN + (uint32_t)g->key_size[key]);
        lg_put_be32(hdr + 8, (uint32_t)slot_index);
        lg_put_be32(hdr + 12, ++slot->seq);
        len = LG_ECHO_HDR;
        g->key_slot[key] = slot_index;
        break;
    case LG_MEMCACHED:
        /* Skip ids still in flight (possible only after 65536 requests
         * while one waits: never with the window limit, but cheap). */
        while (g->mc_slot[g->mc_next_id] >= 0)
            g->mc_next_id++;
        slot->mc_id = g->mc_next_id++;
        slot->mc_parts = 0;
        slot->mc_seen = 0;
        g->mc_slot[slot->mc_id] = slot_index;
        g->key_slot[key] = slot_index;
        lg_mc_key(key, mc_key);
        hdr[0] = (uint8_t)(slot->mc_id >> 8);
        hdr[1] = (uint8_t)slot->mc_id;
        hdr[2] = 0;
        hdr[3] = 0;
        hdr[4] = 0;
        hdr[5] = 1;
        hdr[6] = 0;
        hdr[7] = 0;
        n = snprintf((char *)hdr + LG_MC_FRAME, LG_HDR_MAX - LG_MC_FRAME, "get %s\r\n", mc_key);
        len = LG_MC_FRAME + (size_t)n;
        break;
    case LG_V2:
    case LG_V2_SEALED:
        ++slot->seq;
        g->key_slot[key] = slot_index;
        len = lg_v2_request(g, sock, q, PROTO_V2_GET,
                            slot->seq << LG_V2_SLOT_BITS | (uint32_t)slot_index, key, 0);
        break;
    }
    sock->iov[q][0].iov_len = len;
}

/* A key with no GET in flight: the window is at most half the key space,
 * so the walk is short. --sequential starts from the key after the last
 * one asked for, so no key is asked twice until the walk wraps (counted):
 * against a node that never stored the keys, every GET misses its near
 * cache and goes to the shared store. */
static uint32_t lg_pick_key(lg *g)
{
    uint32_t k;

    if (g->opt.sequential) {
        k = g->next_key;
    } else {
        k = (uint32_t)(lg_mix(&g->rng) % g->opt.keys);
    }

    while (g->key_slot[k] >= 0)
        k = k + 1 == g->opt.keys ? 0 : k + 1;
    if (g->opt.sequential) {
        g->next_key = k + 1 == g->opt.keys ? 0 : k + 1;
        if (g->next_key == 0)
            g->wraps++;
    }
    return k;
}

/* The slot's next request: maybe some PUTs, then one GET. */
static void lg_issue(lg *g, int slot_index)
{
    lg_slot *slot = &g->slots[slot_index];

    for (int run = 0; run < LG_MAX_PUT_RUN && lg_uniform(g) >= g->opt.get_ratio; run++) {
        uint32_t key = (uint32_t)(lg_mix(&g->rng) % g->opt.keys);

        lg_queue_put(g, slot->sock, key, lg_pick_size(g));
    }
    lg_queue_get(g, slot_index, lg_pick_key(g));
}

static void lg_flush(lg *g, int s)
{
    lg_sock *sock = &g->socks[s];
    uint64_t now = lg_now_ns();
    unsigned sent = 0;

    for (unsigned q = 0; q < sock->queued; q++) {
        if (sock->slot_of[q] >= 0)
            g->slots[sock->slot_of[q]].sent_ns = now;
    }
    while (sent < sock->queued) {
        int n = sendmmsg(sock->fd, sock->msgs + sent, sock->queued - sent, 0);

        if (n > 0) {
            sent += (unsigned)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)) {
            /* Left unsent: their GETs time out and count as lost. */
            g->c.send_drops += sock->queued - sent;
            break;
        } else {
            g->c.errors++;
            sent++;
        }
    }
    sock->queued = 0;
}

static void lg_flush_all(lg *g)
{
    for (int s = 0; s < g->opt.sockets; s++) {
        if (g->socks[s].queued > 0)
            lg_flush(g, s);
    }
}

/* ---- answers ---- */

static void lg_release(lg *g, lg_slot *slot)
{
    g->key_slot[slot->key] = -1;
    if (g->opt.target == LG_MEMCACHED)
        g->mc_slot[slot->mc_id] = -1;
    slot->busy = 0;
}

static void lg_complete(lg *g, int slot_index, uint64_t now)
{
    lg_slot *slot = &g->slots[slot_index];

    lg_release(g, slot);
    if (g->measuring && now < g->end_ns) {
        g->c.gets++;
        if (slot->hit)
            g->c.hits++;
        else
            g->c.misses++;
        lg_hist_add(&g->hist, now - slot->sent_ns);
    }
    if (g->running)
        lg_issue(g, slot_index);
}

static void lg_answer_v1(lg *g, int s, const uint8_t *buf, size_t len, uint64_t now)
{
    uint8_t expect[LG_KEY_LEN];
    proto_v1_msg msg;
    uint32_t key;
    int32_t slot;

    if (proto_v1_parse_answer(buf, len, &msg) != PROTO_OK) {
        g->c.bad++;
        return;
    }
    key = lg_get_be32(msg.key);
    if (key >= g->opt.keys) {
        g->c.bad++;
        return;
    }
    lg_key_bytes(key, expect);
    if (memcmp(expect, msg.key, LG_KEY_LEN) != 0) {
        g->c.bad++;
        return;
    }
    slot = g->key_slot[key];
    if (slot < 0 || g->slots[slot].sock != s) {
        g->c.stray++;
        return;
    }
    if (msg.type == PROTO_V1_FOUND) {
        g->slots[slot].hit = 1;
        if (msg.value_len < g->opt.min_size || msg.value_len > g->opt.max_size)
            g->c.bad++;
    }
    lg_complete(g, slot, now);
}

static void lg_answer_echo(lg *g, int s, const uint8_t *buf, size_t len, uint64_t now)
{
    uint32_t slot;

    if (len < 16 || memcmp(buf, LG_ECHO_MAGIC, 4) != 0) {
        g->c.bad++;
        return;
    }
    slot = lg_get_be32(buf + 8);
    if (slot >= (uint32_t)g->opt.window || !g->slots[slot].busy || g->slots[slot].sock != s ||
        g->slots[slot].seq != lg_get_be32(buf + 12)) {
        g->c.stray++;
        return;
    }
    g->slots[slot].hit = 1;
    lg_complete(g, (int)slot, now);
}

/* A v2 answer, plain or sealed (opened in place): the request ID names the
 * slot and its sequence number; the value size is checked like v1's. */
static void lg_answer_v2(lg *g, int s, uint8_t *buf, size_t len, uint64_t now)
{
    proto_v2_msg msg;
    uint32_t slot;
    int rc;

    if (g->opt.target == LG_V2_SEALED)
        rc = proto_v2_open(g->sealer, buf, len, 1, lg_wall_ms(), PROTO_V2_DEFAULT_WINDOW_MS, &msg);
    else
        rc = proto_v2_parse(buf, len, 1, &msg);
    if (rc != PROTO_OK || msg.op != (PROTO_V2_GET | PROTO_V2_ANSWER)) {
        g->c.bad++;
        return;
    }
    slot = msg.request_id & ((1u << LG_V2_SLOT_BITS) - 1);
    if (slot >= (uint32_t)g->opt.window || !g->slots[slot].busy || g->slots[slot].sock != s ||
        (g->slots[slot].seq << LG_V2_SLOT_BITS | slot) != msg.request_id) {
        g->c.stray++;
        return;
    }
    if (msg.status == PROTO_V2_ST_OK) {
        g->slots[slot].hit = 1;
        if (msg.value_len < g->opt.min_size || msg.value_len > g->opt.max_size)
            g->c.bad++;
    }
    lg_complete(g, (int)slot, now);
}

/* Checks that the payload of the first datagram starts a VALUE for the
 * slot's key, or is END (a miss). */
static int lg_mc_first_part(lg_slot *slot, const uint8_t *p, size_t len)
{
    char mc_key[LG_MC_KEY_LEN + 1];

    if (len >= 5 && memcmp(p, "END\r\n", 5) == 0) {
        slot->hit = 0;
        return 0;
    }
    lg_mc_key(slot->key, mc_key);
    if (len < 6 + LG_MC_KEY_LEN || memcmp(p, "VALUE ", 6) != 0 ||
        memcmp(p + 6, mc_key, LG_MC_KEY_LEN) != 0)
        return -1;
    slot->hit = 1;
    return 0;
}

static void lg_answer_mc(lg *g, int s, const uint8_t *buf, size_t len, uint64_t now)
{
    uint16_t id;
    uint16_t seq;
    uint16_t parts;
    int32_t slot_index;
    lg_slot *slot;

    if (len < LG_MC_FRAME) {
        g->c.bad++;
        return;
    }
    id = lg_get_be16(buf);
    seq = lg_get_be16(buf + 2);
    parts = lg_get_be16(buf + 4);
    slot_index = g->mc_slot[id];
    if (slot_index < 0 || g->slots[slot_index].sock != s) {
        g->c.stray++;
        return;
    }
    slot = &g->slots[slot_index];
    if (parts == 0 || parts > LG_MC_MAX_PARTS || seq >= parts ||
        (slot->mc_parts != 0 && slot->mc_parts != parts)) {
        g->c.bad++;
        return;
    }
    slot->mc_parts = parts;
    if (seq == 0 && lg_mc_first_part(slot, buf + LG_MC_FRAME, len - LG_MC_FRAME) != 0)
        g->c.bad++;
    slot->mc_seen |= 1ULL << seq;
    if (slot->mc_seen == (parts == 64 ? ~0ULL : (1ULL << parts) - 1))
        lg_complete(g, slot_index, now);
}

/* Reads everything socket s has queued. */
static void lg_drain(lg *g, int s)
{
    int fd = g->socks[s].fd;

    for (;;) {
        uint64_t now;
        int n = recvmmsg(fd, g->recv_msgs, LG_RECV_BATCH, MSG_DONTWAIT, NULL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                g->c.errors++; /* ECONNREFUSED: an ICMP error for an earlier send */
            return;
        }
        now = lg_now_ns();
        for (int i = 0; i < n; i++) {
            uint8_t *buf = g->recv_iov[i].iov_base;
            size_t len = g->recv_msgs[i].msg_len;

            if (g->recv_msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                g->c.bad++;
                continue;
            }
            switch (g->opt.target) {
            case LG_V1:
                lg_answer_v1(g, s, buf, len, now);
                break;
            case LG_ECHO:
                lg_answer_echo(g, s, buf, len, now);
                break;
            case LG_MEMCACHED:
                lg_answer_mc(g, s, buf, len, now);
                break;
            case LG_V2:
            case LG_V2_SEALED:
                lg_answer_v2(g, s, buf, len, now);
                break;
            }
        }
        if (n < LG_RECV_BATCH)
            return;
    }
}

/* Declares lost every GET older than the timeout and reissues its slot. */
static void lg_reap_lost(lg *g, uint64_t now)
{
    uint64_t limit = (uint64_t)g->opt.timeout_ms * 1000000u;

    for (int i = 0; i < g->opt.window; i++) {
        lg_slot *slot = &g->slots[i];

        if (!slot->busy || slot->sent_ns == 0 || now - slot->sent_ns < limit)
            continue;
        lg_release(g, slot);
        if (g->measuring)
            g->c.lost++;
        if (g->running)
            lg_issue(g, i);
    }
}

/* ---- phases ---- */

/* Waits until slot 0's GET is answered or timeout_ms passes. Returns 0 when
 * answered, -1 on timeout (the slot is released). */
static int lg_wait_slot0(lg *g, int timeout_ms)
{
    uint64_t deadline = lg_now_ns() + (uint64_t)timeout_ms * 1000000u;
    struct pollfd pfd = {.fd = g->socks[0].fd, .events = POLLIN};

    while (g->slots[0].busy) {
        uint64_t now = lg_now_ns();

        if (now >= deadline) {
            lg_release(g, &g->slots[0]);
            return -1;
        }
        if (poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1) > 0)
            lg_drain(g, 0);
    }
    return 0;
}

/* One GET of `key` on slot 0, retried: 1 = found, 0 = not found, -1 = no
 * answer at all. */
static int lg_sync_get(lg *g, uint32_t key, int tries, int timeout_ms)
{
    for (int t = 0; t < tries; t++) {
        lg_queue_get(g, 0, key);
        lg_flush(g, 0);
        if (lg_wait_slot0(g, timeout_ms) == 0)
            return g->slots[0].hit;
    }
    return -1;
}

/* Stores keys 0..keys-1 over socket 0, a batch at a time, each batch closed
 * by a GET of its last key. Returns 0, or -1 when the server never answers. */
static int lg_fill(lg *g, uint64_t *payload_bytes, uint64_t *barrier_misses)
{
    uint32_t batch_start = 0;
    uint64_t t0 = lg_now_ns();

    *payload_bytes = 0;
    *barrier_misses = 0;
    while (batch_start < g->opt.keys) {
        uint32_t batch_end = batch_start + LG_FILL_BATCH;
        int found;

        if (batch_end > g->opt.keys)
            batch_end = g->opt.keys;
        for (uint32_t k = batch_start; k < batch_end; k++) {
            unsigned size = lg_pick_size(g);

            lg_queue_put(g, 0, k, size);
            *payload_bytes += (lg_is_v2(g) ? LG_V2_KEY_LEN : LG_KEY_LEN) + size;
        }
        found = lg_sync_get(g, batch_end - 1, LG_SYNC_TRIES, 200);
        if (found < 0) {
            fprintf(stderr, "loadgen: %s does not answer during the fill\n",
                    lg_target_names[g->opt.target]);
            return -1;
        }
        if (found == 0)
            (*barrier_misses)++;
        batch_start = batch_end;
        /* --fill-rate: a node that writes through to a shared store drops
         * writes the store cannot take in time (bounded in-flight ops), and
         * the barrier GET above is answered locally, so only pacing keeps
         * the store's copy complete. Pacing, not synchronisation. */
        if (g->opt.fill_rate > 0) {
            uint64_t due = t0 + (uint64_t)((double)batch_end * 1e9 / g->opt.fill_rate);
            uint64_t now = lg_now_ns();

            if (now < due) {
                struct timespec ts = {.tv_sec = (time_t)((due - now) / 1000000000u),
                                      .tv_nsec = (long)((due - now) % 1000000000u)};

                nanosleep(&ts, NULL);
            }
        }
    }
    return 0;
}

/* CPU time of process pid in ns from /proc/PID/stat (utime + stime, in
 * clock ticks: 10 ms resolution). The fallback for lg_server_cpu_ns. */
static int lg_stat_cpu_ns(long pid, uint64_t *ns)
{
    char path[64];
    char buf[1024];
    const char *p;
    unsigned long utime;
    unsigned long stime;
    FILE *f;
    size_t n;

    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The command name may hold spaces and parentheses: fields count from
     * the last ')'. utime and stime are fields 14 and 15, i.e. the 12th
     * and 13th after it. */
    p = strrchr(buf, ')');
    if (p == NULL ||
        sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime) != 2)
        return -1;
    *ns = (uint64_t)((double)(utime + stime) * 1e9 / (double)sysconf(_SC_CLK_TCK));
    return 0;
}

/* CPU time of process pid in ns, all threads (memcached runs several): the
 * sum of the first field of /proc/PID/task/TID/schedstat, exact to the ns.
 * Falls back to /proc/PID/stat when schedstat is missing. */
static int lg_server_cpu_ns(long pid, uint64_t *ns)
{
    char path[300];
    struct dirent *de;
    unsigned long long run_ns;
    DIR *dir;
    int found = 0;

    snprintf(path, sizeof(path), "/proc/%ld/task", pid);
    dir = opendir(path);
    if (dir == NULL)
        return -1;
    *ns = 0;
    while ((de = readdir(dir)) != NULL) {
        FILE *f;

        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%ld/task/%.32s/schedstat", pid, de->d_name);
        f = fopen(path, "r");
        if (f == NULL)
            continue; /* a thread that just exited */
        if (fscanf(f, "%llu", &run_ns) == 1) {
            *ns += run_ns;
            found = 1;
        }
        fclose(f);
    }
    closedir(dir);
    return found ? 0 : lg_stat_cpu_ns(pid, ns);
}

static uint64_t lg_self_cpu_ns(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000u;
}

static void lg_print_result(lg *g, double seconds, double server_cpu_s, double client_cpu_s)
{
    const lg_hist *h = &g->hist;
    uint64_t ops = g->c.gets + g->c.puts;
    double mean_us = h->total ? (double)h->sum_ns / (double)h->total / 1000.0 : 0.0;

    printf("result target=%s window=%d sockets=%d duration_s=%.3f ops=%" PRIu64
           " ops_per_s=%.0f gets_per_s=%.0f puts_per_s=%.0f hits=%" PRIu64 " misses=%" PRIu64
           " lost=%" PRIu64 " stray=%" PRIu64 " bad=%" PRIu64 " errors=%" PRIu64
           " send_drops=%" PRIu64 " mean_us=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f"
           " p999_us=%.1f max_us=%.1f",
           lg_target_names[g->opt.target], g->opt.window, g->opt.sockets, seconds, ops,
           (double)ops / seconds, (double)g->c.gets / seconds, (double)g->c.puts / seconds,
           g->c.hits, g->c.misses, g->c.lost, g->c.stray, g->c.bad, g->c.errors, g->c.send_drops,
           mean_us, (double)lg_hist_quantile(h, 0.50) / 1000.0,
           (double)lg_hist_quantile(h, 0.90) / 1000.0, (double)lg_hist_quantile(h, 0.99) / 1000.0,
           (double)lg_hist_quantile(h, 0.999) / 1000.0, (double)h->max_ns / 1000.0);
    if (server_cpu_s >= 0 && ops > 0)
        printf(" server_cpu_pct=%.1f server_cpu_us_per_op=%.2f", 100.0 * server_cpu_s / seconds,
               server_cpu_s * 1e6 / (double)ops);
    printf(" client_cpu_pct=%.1f", 100.0 * client_cpu_s / seconds);
    if (g->opt.sequential)
        printf(" wraps=%" PRIu64, g->wraps);
    printf("\n");
    if (g->opt.hist)
        lg_hist_print(h);
}

/* Warm-up, then the measured run. Returns 0, or -1 on errors. */
static int lg_run(lg *g)
{
    struct epoll_event events[LG_MAX_SOCKETS];
    uint64_t start = lg_now_ns();
    uint64_t measure_start = start + (uint64_t)(g->opt.warmup_s * 1e9);
    uint64_t last_reap = start;
    uint64_t server_ns0 = 0;
    uint64_t server_ns1 = 0;
    uint64_t client_cpu0 = 0;
    uint64_t measured_from = 0;
    uint64_t stopped_at;
    int server_cpu_ok = 0;
    double server_cpu_s = -1;
    double seconds;

    g->end_ns = measure_start + (uint64_t)(g->opt.duration_s * 1e9);
    g->running = 1;
    for (int i = 0; i < g->opt.window; i++)
        lg_issue(g, i);
    lg_flush_all(g);
    for (;;) {
        uint64_t now = lg_now_ns();
        int n;

        if (!g->measuring && now >= measure_start) {
            g->measuring = 1;
            measured_from = now;
            client_cpu0 = lg_self_cpu_ns();
            server_cpu_ok =
                g->opt.server_pid > 0 && lg_server_cpu_ns(g->opt.server_pid, &server_ns0) == 0;
        }
        if (now >= g->end_ns)
            break;
        n = epoll_wait(g->epfd, events, g->opt.sockets, 5);
        for (int i = 0; i < n; i++)
            lg_drain(g, (int)events[i].data.u32);
        now = lg_now_ns();
        if (now - last_reap >= 2000000u) {
            lg_reap_lost(g, now);
            last_reap = now;
        }
        lg_flush_all(g);
    }
    stopped_at = lg_now_ns();
    g->running = 0;
    if (!g->measuring) /* a zero-length run */
        measured_from = stopped_at;
    seconds = (double)(stopped_at - measured_from) / 1e9;
    if (seconds <= 0)
        seconds = 1e-9;
    if (server_cpu_ok && lg_server_cpu_ns(g->opt.server_pid, &server_ns1) == 0)
        server_cpu_s = (double)(server_ns1 - server_ns0) / 1e9;
    lg_print_result(g, seconds, server_cpu_s, (double)(lg_self_cpu_ns() - client_cpu0) / 1e9);
    return g->c.errors == 0 ? 0 : -1;
}

/* ---- setup ---- */

static int lg_usage(FILE *out, int rc)
{
    fprintf(out, "usage: loadgen --target TARGET --port P [options]\n"
                 "       loadgen --free-port\n"
                 "  TARGET: echo, sessiond-v1, sessiond-v2, sessiond-v2-sealed, memcached\n"
                 "  --key-file FILE   cluster key for sessiond-v2-sealed (32 bytes raw or hex)\n"
                 "  --addr A          server IPv4 address (127.0.0.1)\n"
                 "  -c, --sockets N   client sockets the window is spread over (4)\n"
                 "  -w, --window W    GETs in flight (1)\n"
                 "  -d, --duration S  measured seconds (5, at most 60)\n"
                 "  --warmup S        unmeasured seconds first (0.5)\n"
                 "  --get-ratio R     share of GETs among operations, 0 < R <= 1 (0.9)\n"
                 "  --min-size B, --max-size B   value sizes, uniform (200, 2000)\n"
                 "  --keys K          key space (10000; at least 2 W)\n"
                 "  --timeout-ms T    a GET unanswered this long is lost (100)\n"
                 "  --ttl S           lifetime asked for stored values (3600)\n"
                 "  --server-pid PID  report the server's CPU per operation from /proc\n"
                 "  --seed N          random seed (1)\n"
                 "  --no-fill         skip storing every key before the run\n"
                 "  --sequential      GETs ask for keys in order, not at random: no key twice\n"
                 "                    until the walk wraps (result field wraps=)\n"
                 "  --fill-only       store every key, print the payload size, exit\n"
                 "  --fill-rate R     at most R PUTs per second during the fill (no cap)\n"
                 "  --probe           exit 0 once one GET is answered (5 s at most)\n"
                 "  --hist            print the latency histogram's buckets\n"
                 "  --free-port       print a UDP port of 127.0.0.1 free right now, exit\n");
    return rc;
}

static int lg_bad(const char *what)
{
    fprintf(stderr, "loadgen: %s (try --help)\n", what);
    return 2;
}

static int lg_parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int lg_parse_double(const char *text, double min, double max, double *out)
{
    char *end;
    double v;

    errno = 0;
    v = strtod(text, &end);
    if (*text == '\0' || *end != '\0' || errno != 0 || !(v >= min && v <= max))
        return -1;
    *out = v;
    return 0;
}

static int lg_free_port(void)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int rc = 1;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0) {
        printf("%u\n", (unsigned)ntohs(sin.sin_port));
        rc = 0;
    } else {
        perror("loadgen: --free-port");
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

enum {
    OPT_TARGET = 256,
    OPT_ADDR,
    OPT_PORT,
    OPT_WARMUP,
    OPT_GET_RATIO,
    OPT_MIN_SIZE,
    OPT_MAX_SIZE,
    OPT_KEYS,
    OPT_TIMEOUT,
    OPT_TTL,
    OPT_SERVER_PID,
    OPT_SEED,
    OPT_NO_FILL,
    OPT_FILL_ONLY,
    OPT_PROBE,
    OPT_HIST,
    OPT_FREE_PORT,
    OPT_KEY_FILE,
    OPT_SEQUENTIAL,
    OPT_FILL_RATE,
};

/* Fills *o from argv. Returns -1 to go on, else the exit status. */
static int lg_parse_options(lg_options *o, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"target", required_argument, NULL, OPT_TARGET},
        {"addr", required_argument, NULL, OPT_ADDR},
        {"port", required_argument, NULL, OPT_PORT},
        {"sockets", required_argument, NULL, 'c'},
        {"window", required_argument, NULL, 'w'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, OPT_WARMUP},
        {"get-ratio", required_argument, NULL, OPT_GET_RATIO},
        {"min-size", required_argument, NULL, OPT_MIN_SIZE},
        {"max-size", required_argument, NULL, OPT_MAX_SIZE},
        {"keys", required_argument, NULL, OPT_KEYS},
        {"timeout-ms", required_argument, NULL, OPT_TIMEOUT},
        {"ttl", required_argument, NULL, OPT_TTL},
        {"server-pid", required_argument, NULL, OPT_SERVER_PID},
        {"seed", required_argument, NULL, OPT_SEED},
        {"no-fill", no_argument, NULL, OPT_NO_FILL},
        {"fill-only", no_argument, NULL, OPT_FILL_ONLY},
        {"probe", no_argument, NULL, OPT_PROBE},
        {"hist", no_argument, NULL, OPT_HIST},
        {"free-port", no_argument, NULL, OPT_FREE_PORT},
        {"key-file", required_argument, NULL, OPT_KEY_FILE},
        {"sequential", no_argument, NULL, OPT_SEQUENTIAL},
        {"fill-rate", required_argument, NULL, OPT_FILL_RATE},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int have_target = 0;
    long port = -1;
    long v;
    int ch;

    memset(o, 0, sizeof(*o));
    o->addr.sin_family = AF_INET;
    o->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    o->sockets = 4;
    o->window = 1;
    o->duration_s = 5;
    o->warmup_s = 0.5;
    o->get_ratio = 0.9;
    o->min_size = 200;
    o->max_size = 2000;
    o->keys = 10000;
    o->timeout_ms = 100;
    o->ttl_s = 3600;
    o->seed = 1;
    o->fill = 1;
    while ((ch = getopt_long(argc, argv, "c:w:d:h", longopts, NULL)) != -1) {
        switch (ch) {
        case OPT_TARGET:
            have_target = 1;
            if (strcmp(optarg, "echo") == 0)
                o->target = LG_ECHO;
            else if (strcmp(optarg, "sessiond-v1") == 0)
                o->target = LG_V1;
            else if (strcmp(optarg, "memcached") == 0)
                o->target = LG_MEMCACHED;
            else if (strcmp(optarg, "sessiond-v2") == 0)
                o->target = LG_V2;
            else if (strcmp(optarg, "sessiond-v2-sealed") == 0)
                o->target = LG_V2_SEALED;
            else
                return lg_bad("--target must be echo, sessiond-v1, sessiond-v2, "
                              "sessiond-v2-sealed or memcached");
            break;
        case OPT_ADDR:
            if (inet_pton(AF_INET, optarg, &o->addr.sin_addr) != 1)
                return lg_bad("--addr wants a numeric IPv4 address");
            break;
        case OPT_PORT:
            if (lg_parse_long(optarg, 1, 65535, &port) != 0)
                return lg_bad("--port wants 1..65535");
            break;
        case 'c':
            if (lg_parse_long(optarg, 1, LG_MAX_SOCKETS, &v) != 0)
                return lg_bad("--sockets wants 1..256");
            o->sockets = (int)v;
            break;
        case 'w':
            if (lg_parse_long(optarg, 1, LG_MAX_WINDOW, &v) != 0)
                return lg_bad("--window wants 1..4096");
            o->window = (int)v;
            break;
        case 'd':
            if (lg_parse_double(optarg, 0, LG_MAX_DURATION_S, &o->duration_s) != 0)
                return lg_bad("--duration wants 0..60 seconds");
            break;
        case OPT_WARMUP:
            if (lg_parse_double(optarg, 0, 10, &o->warmup_s) != 0)
                return lg_bad("--warmup wants 0..10 seconds");
            break;
        case OPT_GET_RATIO:
            if (lg_parse_double(optarg, 0, 1, &o->get_ratio) != 0 || o->get_ratio <= 0)
                return lg_bad("--get-ratio wants a number in (0, 1]");
            break;
        case OPT_MIN_SIZE:
            if (lg_parse_long(optarg, 1, LG_MAX_VALUE, &v) != 0)
                return lg_bad("--min-size wants 1..60000");
            o->min_size = (unsigned)v;
            break;
        case OPT_MAX_SIZE:
            if (lg_parse_long(optarg, 1, LG_MAX_VALUE, &v) != 0)
                return lg_bad("--max-size wants 1..60000");
            o->max_size = (unsigned)v;
            break;
        case OPT_KEYS:
            if (lg_parse_long(optarg, 1, LG_MAX_KEYS, &v) != 0)
                return lg_bad("--keys wants 1..20000000");
            o->keys = (uint32_t)v;
            break;
        case OPT_TIMEOUT:
            if (lg_parse_long(optarg, 1, 10000, &v) != 0)
                return lg_bad("--timeout-ms wants 1..10000");
            o->timeout_ms = (int)v;
            break;
        case OPT_TTL:
            if (lg_parse_long(optarg, 1, 65535, &v) != 0)
                return lg_bad("--ttl wants 1..65535 seconds");
            o->ttl_s = (unsigned)v;
            break;
        case OPT_SERVER_PID:
            if (lg_parse_long(optarg, 1, 1L << 30, &o->server_pid) != 0)
                return lg_bad("--server-pid wants a process id");
            break;
        case OPT_SEED:
            if (lg_parse_long(optarg, 0, 1L << 30, &v) != 0)
                return lg_bad("--seed wants a number");
            o->seed = (uint64_t)v;
            break;
        case OPT_NO_FILL:
            o->fill = 0;
            break;
        case OPT_FILL_ONLY:
            o->fill_only = 1;
            break;
        case OPT_PROBE:
            o->probe = 1;
            break;
        case OPT_HIST:
            o->hist = 1;
            break;
        case OPT_FREE_PORT:
            return lg_free_port();
        case OPT_KEY_FILE:
            o->key_file = optarg;
            break;
        case OPT_SEQUENTIAL:
            o->sequential = 1;
            break;
        case OPT_FILL_RATE:
            if (lg_parse_double(optarg, 1, 1e9, &o->fill_rate) != 0)
                return lg_bad("--fill-rate wants PUTs per second, at least 1");
            break;
        case 'h':
            return lg_usage(stdout, 0);
        default:
            return lg_usage(stderr, 2);
        }
    }
    if (optind != argc)
        return lg_bad("unexpected argument");
    if (!have_target || port < 0)
        return lg_bad("--target and --port are required");
    o->addr.sin_port = htons((uint16_t)port);
    if (o->min_size > o->max_size)
        return lg_bad("--min-size is larger than --max-size");
    if ((o->target == LG_V2_SEALED) != (o->key_file != NULL))
        return lg_bad("--key-file is needed by, and only by, --target sessiond-v2-sealed");
    if ((o->target == LG_V2 || o->target == LG_V2_SEALED) &&
        o->max_size > PROTO_V2_MAX_VALUE - LG_V2_KEY_LEN)
        return lg_bad("--max-size is too large for one v2 datagram");
    if (!o->fill_only && o->keys < 2u * (uint32_t)o->window)
        return lg_bad("--keys must be at least twice --window");
    if (o->sockets > o->window)
        o->sockets = o->window; /* an idle socket measures nothing */
    return -1;
}

/* Loads the cluster key, makes the sealer and each socket's buffers. */
static int lg_setup_sealed(lg *g)
{
    uint8_t key[KEYFILE_KEY_LEN];
    char err[256];

    if (keyfile_load(g->opt.key_file, key, err, sizeof(err)) != 0) {
        fprintf(stderr, "loadgen: %s\n", err);
        return -1;
    }
    g->sealer = proto_v2_sealer_new(key, NULL);
    OPENSSL_cleanse(key, sizeof(key));
    g->sealed_cap = PROTO_V2_OVERHEAD_MAX + LG_V2_KEY_LEN + g->opt.max_size;
    for (int s = 0; s < g->opt.sockets; s++) {
        g->socks[s].sealed = malloc(LG_QUEUE * g->sealed_cap);
        if (g->socks[s].sealed == NULL)
            break;
    }
    if (g->sealer == NULL || g->socks[g->opt.sockets - 1].sealed == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return -1;
    }
    return 0;
}

static int lg_setup(lg *g)
{
    uint64_t pool_state;

    g->epfd = -1;
    g->rng = g->opt.seed * 0x2545f4914f6cdd1dULL + 1;
    g->slots = calloc((size_t)g->opt.window, sizeof(*g->slots));
    g->socks = calloc((size_t)g->opt.sockets, sizeof(*g->socks));
    g->key_slot = malloc((size_t)g->opt.keys * sizeof(*g->key_slot));
    g->key_size = calloc(g->opt.keys, sizeof(*g->key_size));
    g->mc_slot = malloc(65536 * sizeof(*g->mc_slot));
    g->pool = malloc(LG_POOL_SIZE);
    g->recv_bufs = malloc((size_t)LG_RECV_BATCH * LG_RECV_BUF);
    if (g->slots == NULL || g->socks == NULL || g->key_slot == NULL || g->key_size == NULL ||
        g->mc_slot == NULL || g->pool == NULL || g->recv_bufs == NULL) {
        fprintf(stderr, "loadgen: out of memory\n");
        return -1;
    }
    memset(g->key_slot, 0xff, (size_t)g->opt.keys * sizeof(*g->key_slot));
    memset(g->mc_slot, 0xff, 65536 * sizeof(*g->mc_slot));
    pool_state = g->opt.seed ^ 0x7a11e5ULL;
    for (size_t i = 0; i < LG_POOL_SIZE; i += 8) {
        uint64_t r = lg_mix(&pool_state);

        memcpy(g->pool + i, &r, 8);
    }
    for (int i = 0; i < LG_RECV_BATCH; i++) {
        g->recv_iov[i].iov_base = g->recv_bufs + (size_t)i * LG_RECV_BUF;
        g->recv_iov[i].iov_len = LG_RECV_BUF;
        g->recv_msgs[i].msg_hdr.msg_iov = &g->recv_iov[i];
        g->recv_msgs[i].msg_hdr.msg_iovlen = 1;
    }
    if (g->opt.target == LG_V2_SEALED && lg_setup_sealed(g) != 0)
        return -1;
    for (int i = 0; i < g->opt.window; i++)
        g->slots[i].sock = i % g->opt.sockets;
    for (int s = 0; s < g->opt.sockets; s++)
        g->socks[s].fd = -1;
    g->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g->epfd < 0) {
        perror("loadgen: epoll_create1");
        return -1;
    }
    for (int s = 0; s < g->opt.sockets; s++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)s};
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int bufsize = 4 * 1024 * 1024;

        g->socks[s].fd = fd;
        if (fd < 0) {
            perror("loadgen: socket");
            return -1;
        }
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsize, sizeof(bufsize));
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof(bufsize));
        if (connect(fd, (struct sockaddr *)&g->opt.addr, sizeof(g->opt.addr)) != 0 ||
            epoll_ctl(g->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            perror("loadgen: connect");
            return -1;
        }
    }
    return 0;
}

static void lg_teardown(lg *g)
{
    if (g->socks != NULL) {
        for (int s = 0; s < g->opt.sockets; s++) {
            if (g->socks[s].fd >= 0)
                close(g->socks[s].fd);
            free(g->socks[s].sealed);
        }
    }
    proto_v2_sealer_free(g->sealer);
    if (g->epfd >= 0)
        close(g->epfd);
    free(g->slots);
    free(g->socks);
    free(g->key_slot);
    free(g->key_size);
    free(g->mc_slot);
    free(g->pool);
    free(g->recv_bufs);
}

int main(int argc, char **argv)
{
    static lg g; /* large (the histogram): static, not on the stack */
    uint64_t payload = 0;
    uint64_t barrier_misses = 0;
    uint64_t t0;
    int rc = 1;

    rc = lg_parse_options(&g.opt, argc, argv);
    if (rc >= 0)
        return rc;
    rc = 1;
    if (lg_setup(&g) != 0)
        goto fail;
    if (g.opt.probe) {
        uint64_t deadline = lg_now_ns() + 5000000000u;

        while (lg_now_ns() < deadline) {
            if (lg_sync_get(&g, 0, 1, 50) >= 0) {
                printf("probe ok target=%s\n", lg_target_names[g.opt.target]);
                rc = 0;
                goto fail;
            }
        }
        fprintf(stderr, "loadgen: %s did not answer within 5 s\n", lg_target_names[g.opt.target]);
        goto fail;
    }
    if (g.opt.fill || g.opt.fill_only) {
        t0 = lg_now_ns();
        if (lg_fill(&g, &payload, &barrier_misses) != 0)
            goto fail;
        if (g.opt.fill_only) {
            double secs = (double)(lg_now_ns() - t0) / 1e9;
            int key_len = lg_is_v2(&g) ? LG_V2_KEY_LEN : LG_KEY_LEN;

            printf("fill target=%s keys=%" PRIu32 " payload_bytes=%" PRIu64
                   " key_bytes=%d mean_value_bytes=%.1f seconds=%.2f puts_per_s=%.0f"
                   " barrier_misses=%" PRIu64 "\n",
                   lg_target_names[g.opt.target], g.opt.keys, payload, key_len,
                   (double)payload / g.opt.keys - key_len, secs, g.opt.keys / secs, barrier_misses);
            rc = 0;
            goto fail;
        }
    }
    rc = lg_run(&g) == 0 ? 0 : 1;

fail:
    lg_teardown(&g);
    return rc;
}
