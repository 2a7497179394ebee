/* backend_redis.c — the backend vtable on a shared Redis, via hiredis' async
 * API attached to the daemon's libevent base.
 *
 * Commands (one data connection, replies in order):
 *   put  SET name sealed PX ttl         add  SET name sealed NX PX ttl
 *   get  GET name                       take GETDEL name (Redis >= 6.2)
 *   del  DEL name
 * del and take are each followed by PUBLISH sd:inv (see Invalidation).
 *
 * Nothing usable in Redis. Two subkeys come from the 32-byte cluster key by
 * HKDF-Expand (RFC 5869, SHA-256, one block: HMAC(cluster_key, info || 0x01);
 * the Extract step is skipped because the cluster key is already uniformly
 * random), with info "sessiond redis name v1" and "sessiond redis seal v1":
 *   - name = "sd:" + hex(HMAC-SHA256(name_subkey, key))[:32]: Redis never sees
 *     a session ID or namespace; 128 bits keep collisions out of reach.
 *   - sealed value = 0x01 | key ID (4) | salt (16) | AES-256-GCM ciphertext |
 *     tag (16). Each value gets its own AES key, HMAC-SHA256(seal_subkey,
 *     salt) with a random salt, and a zero nonce (the key is never reused, so
 *     the nonce need not vary). Why not one key with random 96-bit nonces:
 *     a busy fleet seals 2^32 values in days, where random GCM nonces stop
 *     being safe; the per-value HMAC costs about a microsecond, nothing next
 *     to a round trip. The associated data is the 21-byte header and the
 *     Redis name, so a value moved to another name (or junk written by
 *     anyone with Redis access) fails to open: counted as corrupt, completed
 *     ERROR. The v2 datagram sealer was not reused because its output is a
 *     valid datagram under the same key (a blob read from Redis could be
 *     replayed as an answer) and its timestamp window does not fit TTLs.
 *
 * Invalidation (near-cache coherence). Each node keeps near copies (the
 * daemon's local cache); a del or take on one node must not be undone by
 * another node answering from its stale copy. So del and take also PUBLISH
 * on channel "sd:inv" a message = node ID (8 random bytes drawn at creation)
 * | the key sealed as above, with the channel name and the node ID as the
 * associated data instead of a Redis name: Redis and a sniffer see neither
 * the session ID nor the namespace. A second connection SUBSCRIBEs to the
 * channel (same address, same AUTH, its own back-off); a message from
 * another node that opens goes to the owner's invalidate hook; one that
 * does not open is counted corrupt and dropped; our own are ignored.
 * put does not publish: session IDs are fresh random values, so a put
 * almost never replaces a live entry another node holds, and a replaced
 * value elsewhere is bounded by the near-cache lifetime rule dispatch
 * applies (see dispatch.c). Limits: Redis pub/sub is fire-and-forget, so
 * a message sent while a node's subscription is down is lost to that node
 * (the same lifetime rule bounds the damage); a replayed message only
 * costs a near-cache miss; the publish is pipelined right behind the del or
 * take, and sent whatever they found (an entry gone from Redis may still be
 * near elsewhere).
 *
 * Sentinel ("sentinel://H:P[,H:P...]/NAME"). The sentinel hosts are
 * resolved once at creation. One connection at a time goes to a sentinel:
 * it asks SENTINEL get-master-addr-by-name NAME and, pipelined on the same
 * connection, SUBSCRIBEs to +switch-master, so no switch can slip between
 * the answer and the subscription. A sentinel that refuses, times out or
 * does not know NAME is skipped for the next one; when all failed, the
 * round is retried with the reconnect back-off. On an answer or a
 * +switch-master for NAME naming another address, the data connection is
 * dropped (its pending ops complete UNAVAILABLE), the subscription follows,
 * and both reconnect to the new master; stats.failovers counts the moves.
 * The sentinels are asked again (a new connection) whenever the data
 * connection is lost or fails to come up (after the back-off delay), and
 * when a command gets READONLY or MASTERDOWN (an old master back as a
 * replica). The master's address must be numeric (sentinel
 * resolve-hostnames no, the default): resolving a name would block the
 * loop, so a hostname answer is logged and treated as a failed sentinel.
 *
 * Failure rules (the daemon must stay fast when Redis is not):
 *   - While not connected (or not yet authenticated) every op completes
 *     UNAVAILABLE synchronously. Nothing is queued for later, and writes
 *     missed while down are not replayed: a session written during an outage
 *     only lives in the writer's near-cache, which is what a single-node
 *     daemon would have given anyway; replaying could resurrect a session
 *     deleted or taken meanwhile on another node.
 *   - At most max_inflight ops are sent and unanswered; beyond, UNAVAILABLE.
 *   - Each op completes UNAVAILABLE if Redis has not answered within
 *     op_timeout_ms; its late reply is then discarded (the op stays counted
 *     in flight until it comes, so a hung Redis fills the cap and then costs
 *     nothing). One timer serves all ops: they are sent in order, so their
 *     deadlines are in order.
 *   - If the oldest op has waited stall_ms, the connection is dropped, which
 *     completes everything still pending, and a new one is made.
 *   - Reconnects back off exponentially from backoff_min_ms to
 *     backoff_max_ms (no jitter yet: with many nodes a shared outage ends in
 *     a synchronised reconnect burst, harmless at this size). hiredis 0.14
 *     has no connect timeout, so a timer bounds connect + AUTH.
 *   - HOST is resolved once at creation; hiredis then gets a numeric address,
 *     so a reconnect never blocks on DNS. A moved host needs a restart (or
 *     Sentinel, which is the intended way to follow a failover).
 *   - Log lines (INFO, once per transition, not per retry):
 *     "backend redis://H:P up", "backend redis://H:P down: REASON", and with
 *     Sentinel "backend sentinel NAME: master at H:P" each time a new master
 *     is found (redis://H:P is then the master's address).
 *
 * Stats: the latency histogram counts replies that arrived in time (sent ->
 * reply, microseconds), so the sum of its buckets equals the completions
 * that carry an answer from Redis. A late reply (its op already timed out)
 * is not in it: it is counted as a timeout. Counting late replies too would
 * show how slow a sick Redis is, at the price of a histogram that no longer
 * matches what callers saw.
 *
 * Limits: one data connection (Redis pipelines, so one connection carries
 * tens of thousands of ops per second); one cluster key (no rollover: a new
 * key changes every name, so a key change empties the shared store); no TLS
 * to Redis (values and names are protected anyway; AUTH's password is
 * not); sentinels are asked without a password (sentinel requirepass is not
 * supported); hiredis asserts on some malformed pub/sub replies, so a
 * hostile process on the Redis port can crash the daemon (it can also
 * delete every session: Redis must be trusted not to be hostile).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis.h>
#include <async.h>
#include <adapters/libevent.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "backend_redis.h"
#include "log.h"

#define SEAL_FORMAT     0x01
#define SEAL_KEY_ID     4
#define SEAL_SALT       16
#define SEAL_TAG        16
#define SEAL_HEADER     (1 + SEAL_KEY_ID + SEAL_SALT)
#define SUBKEY_LEN      32
#define CLUSTER_KEY     32
#define NAME_HEX        32
#define NAME_PREFIX     "sd:"
#define HOST_MAX        (BACKEND_REDIS_MAX_HOST + 1)
#define NODE_ID_LEN     8
#define INV_CHANNEL     BACKEND_REDIS_INV_CHANNEL
#define INV_CHANNEL_LEN (sizeof(INV_CHANNEL) - 1)
#define INV_AAD_LEN     (INV_CHANNEL_LEN + NODE_ID_LEN)
#define INV_MAX         (NODE_ID_LEN + BACKEND_REDIS_SEAL_OVERHEAD + BACKEND_MAX_KEY)
#define LABEL_MAX       (HOST_MAX + 24)

enum redis_op_kind { OP_GET, OP_PUT, OP_DEL, OP_TAKE, OP_ADD };
enum conn_state { ST_DOWN, ST_CONNECTING, ST_UP };
/* The sentinel connection: none, asking for the master, watching switches. */
enum sentinel_state { SN_IDLE, SN_ASKING, SN_WATCHING };
/* What the log last said about the data connection. */
enum report_state { REPORT_NONE, REPORT_UP, REPORT_DOWN };

typedef struct backend_redis backend_redis;

typedef struct redis_op {
    struct redis_op *prev, *next; /* in send order */
    backend_redis *owner;
    backend_done_fn done;
    void *arg;
    int kind;
    int completed; /* the caller has been told (timed out, or answered) */
    uint64_t sent_us;
    uint64_t deadline_ms;
    char name[BACKEND_REDIS_NAME_LEN + 1]; /* the AAD when opening the reply */
} redis_op;

typedef struct endpoint {
    char host[HOST_MAX]; /* numeric */
    int port;
} endpoint;

struct backend_redis {
    backend base; /* first: a backend_redis is a backend */
    struct event_base *evbase;
    int freeing;
    char *password;
    backend_redis_config cfg; /* timings only; target/key/password pointers cleared */
    uint8_t name_key[SUBKEY_LEN];
    uint8_t seal_key[SUBKEY_LEN];
    uint8_t key_id[SEAL_KEY_ID];
    uint8_t node_id[NODE_ID_LEN];
    EVP_CIPHER_CTX *cipher;
    backend_stats stats;

    /* The data connection, to the store (with Sentinel: the master). */
    endpoint master;
    int have_master;       /* plain: always; Sentinel: once a sentinel named one */
    char label[LABEL_MAX]; /* "redis://H:P", for the log */
    redisAsyncContext *ac;
    int state;
    int ever_up;
    int reported;
    redis_op *head, *tail;
    struct event *op_timer;
    uint64_t op_timer_at; /* when op_timer fires, if pending */
    struct event *connect_timer;
    struct event *reconnect_timer; /* Sentinel: asks the sentinels again */
    uint32_t backoff_ms;

    /* The invalidation subscription, to the same address. */
    redisAsyncContext *inv_ac;
    int inv_state;
    struct event *inv_timer; /* connect timeout while connecting, else reconnect */
    uint32_t inv_backoff_ms;

    /* Sentinel mode. */
    int sentinel_mode;
    char master_name[BACKEND_REDIS_MAX_MASTER_NAME + 1];
    endpoint sentinels[BACKEND_REDIS_MAX_SENTINELS];
    int n_sentinels;
    int sn_index;  /* the sentinel asked or watched */
    int sn_failed; /* sentinels that failed in a row */
    int sn_warned; /* "no sentinel answered" logged since the last answer */
    redisAsyncContext *sn_ac;
    int sn_state;
    struct event *sn_timer; /* answer timeout while asking, else "ask the next" */
};

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_ms(void)
{
    return now_us() / 1000u;
}

static void ms_to_tv(uint64_t ms, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ms / 1000u);
    tv->tv_usec = (suseconds_t)((ms % 1000u) * 1000u);
}

static void arm_timer(struct event *ev, uint64_t ms)
{
    struct timeval tv;
    ms_to_tv(ms, &tv);
    evtimer_add(ev, &tv);
}

__attribute__((format(printf, 3, 4))) static void set_err(char *err, size_t cap, const char *fmt,
                                                          ...)
{
    if (!err || !cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, cap, fmt, ap);
    va_end(ap);
}

/* "H:P", or "[H]:P" for an IPv6 address. */
static void format_hostport(char *out, size_t cap, const char *host, int port)
{
    if (strchr(host, ':'))
        snprintf(out, cap, "[%s]:%d", host, port);
    else
        snprintf(out, cap, "%s:%d", host, port);
}

static uint32_t next_backoff(uint32_t cur, uint32_t max)
{
    return cur >= max / 2 ? max : cur * 2;
}

/* --- keys, names and sealing ------------------------------------------- */

/* HKDF-Expand with a 32-byte output: T(1) = HMAC(prk, info || 0x01). */
static int derive_subkey(const uint8_t *prk, const char *info, uint8_t out[SUBKEY_LEN])
{
    uint8_t msg[64];
    size_t n = strlen(info);
    if (n + 1 > sizeof(msg))
        return -1;
    memcpy(msg, info, n);
    msg[n] = 0x01;
    unsigned int out_len = 0;
    if (!HMAC(EVP_sha256(), prk, CLUSTER_KEY, msg, n + 1, out, &out_len) || out_len != SUBKEY_LEN)
        return -1;
    return 0;
}

static int make_name(const backend_redis *r, const uint8_t *key, size_t key_len,
                     char out[BACKEND_REDIS_NAME_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    uint8_t mac[SHA256_DIGEST_LENGTH];
    unsigned int mac_len = 0;
    if (!HMAC(EVP_sha256(), r->name_key, SUBKEY_LEN, key, key_len, mac, &mac_len))
        return -1;
    memcpy(out, NAME_PREFIX, 3);
    for (size_t i = 0; i < NAME_HEX / 2; i++) {
        out[3 + 2 * i] = hex[mac[i] >> 4];
        out[3 + 2 * i + 1] = hex[mac[i] & 15];
    }
    out[BACKEND_REDIS_NAME_LEN] = '\0';
    return 0;
}

/* AES-256-GCM under HMAC(seal_key, salt), zero nonce; AAD = header || aad
 * (the Redis name of a value, or channel || node ID of an invalidation). */
static int gcm_run(backend_redis *r, int encrypt, const uint8_t *header, const void *aad,
                   size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
    static const uint8_t zero_nonce[12];
    uint8_t msg_key[SUBKEY_LEN];
    unsigned int mk_len = 0;
    int ok = 0, n = 0;
    if (len > INT32_MAX || aad_len > INT32_MAX)
        goto fail;
    if (!HMAC(EVP_sha256(), r->seal_key, SUBKEY_LEN, header + 1 + SEAL_KEY_ID, SEAL_SALT, msg_key,
              &mk_len))
        goto fail;
    if (EVP_CipherInit_ex(r->cipher, EVP_aes_256_gcm(), NULL, msg_key, zero_nonce, encrypt) != 1)
        goto fail;
    if (EVP_CipherUpdate(r->cipher, NULL, &n, header, SEAL_HEADER) != 1 ||
        EVP_CipherUpdate(r->cipher, NULL, &n, aad, (int)aad_len) != 1)
        goto fail;
    if (len > 0 && EVP_CipherUpdate(r->cipher, out, &n, in, (int)len) != 1)
        goto fail;
    if (!encrypt && EVP_CIPHER_CTX_ctrl(r->cipher, EVP_CTRL_GCM_SET_TAG, SEAL_TAG, tag) != 1)
        goto fail;
    if (EVP_CipherFinal_ex(r->cipher, out + len, &n) != 1)
        goto fail;
    if (encrypt && EVP_CIPHER_CTX_ctrl(r->cipher, EVP_CTRL_GCM_GET_TAG, SEAL_TAG, tag) != 1)
        goto fail;
    ok = 1;
fail:
    OPENSSL_cleanse(msg_key, sizeof(msg_key));
    return ok ? 0 : -1;
}

/* out must hold len + BACKEND_REDIS_SEAL_OVERHEAD bytes. */
static int seal_bytes(backend_redis *r, const void *aad, size_t aad_len, const uint8_t *value,
                      size_t len, uint8_t *out)
{
    out[0] = SEAL_FORMAT;
    memcpy(out + 1, r->key_id, SEAL_KEY_ID);
    if (RAND_bytes(out + 1 + SEAL_KEY_ID, SEAL_SALT) != 1)
        return -1;
    return gcm_run(r, 1, out, aad, aad_len, value, len, out + SEAL_HEADER, out + SEAL_HEADER + len);
}

/* Opens a sealed blob into plain (room for blob_len - overhead + SEAL_TAG
 * bytes: Final's empty output). Returns the plaintext length, or -1 if the
 * blob was not sealed under this AAD and key. */
static long open_bytes(backend_redis *r, const void *aad, size_t aad_len, const uint8_t *blob,
                       size_t blob_len, uint8_t *plain)
{
    size_t len = blob_len - BACKEND_REDIS_SEAL_OVERHEAD;
    uint8_t tag[SEAL_TAG];
    memcpy(tag, blob + SEAL_HEADER + len, SEAL_TAG);
    if (gcm_run(r, 0, blob, aad, aad_len, blob + SEAL_HEADER, len, plain, tag) != 0) {
        OPENSSL_cleanse(plain, len);
        return -1;
    }
    return (long)len;
}

static int sealed_shape_ok(const backend_redis *r, const uint8_t *blob, size_t blob_len,
                           size_t max_plain)
{
    return blob_len > BACKEND_REDIS_SEAL_OVERHEAD &&
           blob_len - BACKEND_REDIS_SEAL_OVERHEAD <= max_plain && blob[0] == SEAL_FORMAT &&
           memcmp(blob + 1, r->key_id, SEAL_KEY_ID) == 0;
}

/* Returns a malloc'd plaintext (the caller wipes and frees it), or NULL if
 * the blob is not a value sealed under this name and key. */
static uint8_t *open_value(backend_redis *r, const char *name, const uint8_t *blob, size_t blob_len,
                           size_t *out_len)
{
    if (!sealed_shape_ok(r, blob, blob_len, BACKEND_MAX_VALUE))
        return NULL;
    size_t len = blob_len - BACKEND_REDIS_SEAL_OVERHEAD;
    uint8_t *plain = malloc(len + SEAL_TAG);
    if (!plain)
        return NULL;
    if (open_bytes(r, name, BACKEND_REDIS_NAME_LEN, blob, blob_len, plain) < 0) {
        free(plain);
        return NULL;
    }
    *out_len = len;
    return plain;
}

/* channel || node ID: what an invalidation message is bound to. */
static void inv_aad(const uint8_t node_id[NODE_ID_LEN], uint8_t out[INV_AAD_LEN])
{
    memcpy(out, INV_CHANNEL, INV_CHANNEL_LEN);
    memcpy(out + INV_CHANNEL_LEN, node_id, NODE_ID_LEN);
}

/* --- log lines ------------------------------------------------------------ */

static void report_up(backend_redis *r)
{
    if (r->reported != REPORT_UP)
        log_msg(LOG_INFO, "backend %s up", r->label);
    r->reported = REPORT_UP;
}

static void report_down(backend_redis *r, const char *reason)
{
    if (r->freeing || !reason)
        return;
    if (r->reported != REPORT_DOWN)
        log_msg(LOG_INFO, "backend %s down: %s", r->label, reason[0] ? reason : "unknown");
    r->reported = REPORT_DOWN;
}

/* --- ops ---------------------------------------------------------------- */

static void complete(backend_redis *r, backend_done_fn done, void *arg, backend_status status,
                     const uint8_t *value, size_t len)
{
    r->stats.by_status[status]++;
    if (done)
        done(arg, status, status == BACKEND_OK ? value : NULL, status == BACKEND_OK ? len : 0);
}

static void op_unlink(backend_redis *r, redis_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        r->head = op->next;
    if (op->next)
        op->next->prev = op->prev;
    else
        r->tail = op->prev;
    r->stats.inflight--;
}

static void arm_op_timer(backend_redis *r, uint64_t at)
{
    uint64_t now = now_ms();
    arm_timer(r->op_timer, at > now ? at - now : 0);
    r->op_timer_at = at;
}

static void record_latency(backend_redis *r, uint64_t us)
{
    size_t i = 0;
    while (i < BACKEND_LATENCY_BUCKETS - 1 && us > backend_latency_bounds_us[i])
        i++;
    r->stats.latency_buckets[i]++;
    r->stats.latency_sum_us += us;
}

static void drop_connection(backend_redis *r, const char *reason);
static void schedule_reconnect(backend_redis *r);

/* Times out overdue ops, drops a stalled connection, re-arms for the next. */
static void on_op_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    uint64_t now = now_ms();
    for (redis_op *op = r->head; op; op = op->next) {
        if (op->completed)
            continue;
        if (op->deadline_ms > now)
            break;
        op->completed = 1;
        r->stats.timeouts++;
        complete(r, op->done, op->arg, BACKEND_UNAVAILABLE, NULL, 0);
    }
    if (r->head && now - r->head->sent_us / 1000u >= r->cfg.stall_ms && r->state == ST_UP) {
        drop_connection(r, "stalled, no reply in time");
        schedule_reconnect(r);
        return;
    }
    uint64_t next = UINT64_MAX;
    if (r->head)
        next = r->head->sent_us / 1000u + r->cfg.stall_ms;
    for (redis_op *op = r->head; op; op = op->next) {
        if (!op->completed) {
            if (op->deadline_ms < next)
                next = op->deadline_ms;
            break;
        }
    }
    if (next != UINT64_MAX)
        arm_op_timer(r, next);
}

/* An error that says this address is no longer a usable master. */
static int is_not_master_error(const redisReply *reply)
{
    return reply->type == REDIS_REPLY_ERROR &&
           (strncmp(reply->str, "READONLY", 8) == 0 || strncmp(reply->str, "MASTERDOWN", 10) == 0);
}

static void on_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    redisReply *reply = reply_ptr;
    redis_op *op = privdata;
    backend_redis *r = op->owner;
    int not_master = 0;
    /* reply NULL: the connection is going. hiredis refuses new commands on
     * it meanwhile, so a completion that starts an op gets UNAVAILABLE. */
    if (!op->completed) {
        op->completed = 1;
        backend_status st = BACKEND_ERROR;
        uint8_t *plain = NULL;
        size_t plain_len = 0;
        if (reply)
            record_latency(r, now_us() - op->sent_us);
        if (!reply) {
            st = BACKEND_UNAVAILABLE;
        } else if (reply->type == REDIS_REPLY_ERROR) {
            r->stats.errors++;
            if (is_not_master_error(reply)) {
                st = BACKEND_UNAVAILABLE;
                not_master = 1;
            }
        } else if (op->kind == OP_GET || op->kind == OP_TAKE) {
            if (reply->type == REDIS_REPLY_NIL) {
                st = BACKEND_NOT_FOUND;
            } else if (reply->type == REDIS_REPLY_STRING) {
                plain =
                    open_value(r, op->name, (const uint8_t *)reply->str, reply->len, &plain_len);
                if (plain)
                    st = BACKEND_OK;
                else
                    r->stats.corrupt++;
            } else {
                r->stats.errors++;
            }
        } else if (op->kind == OP_DEL) {
            if (reply->type == REDIS_REPLY_INTEGER)
                st = reply->integer > 0 ? BACKEND_OK : BACKEND_NOT_FOUND;
            else
                r->stats.errors++;
        } else { /* PUT, ADD */
            if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0)
                st = BACKEND_OK;
            else if (op->kind == OP_ADD && reply->type == REDIS_REPLY_NIL)
                st = BACKEND_EXISTS;
            else
                r->stats.errors++;
        }
        complete(r, op->done, op->arg, st, plain, plain_len);
        if (plain) {
            OPENSSL_cleanse(plain, plain_len);
            free(plain);
        }
    } else if (reply && reply->type == REDIS_REPLY_ERROR && is_not_master_error(reply)) {
        not_master = 1; /* a late reply still tells us where we are */
    }
    op_unlink(r, op);
    free(op);
    /* With Sentinel, a replica (an old master back from the dead) means the
     * sentinels know better: drop (hiredis frees after this callback) and
     * ask them. A plain target has nowhere else to go. */
    if (not_master && r->sentinel_mode && r->ac == ac) {
        drop_connection(r, "not a master any more");
        schedule_reconnect(r);
    }
}

static void on_publish(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)ac;
    redisReply *reply = reply_ptr;
    backend_redis *r = privdata;
    if (reply && reply->type != REDIS_REPLY_INTEGER)
        r->stats.errors++;
}

/* Pipelines PUBLISH sd:inv (node ID | sealed key) behind a del or take. A
 * failure costs only the other nodes' coherence: counted, not reported. */
static void publish_invalidation(backend_redis *r, const uint8_t *key, size_t key_len)
{
    uint8_t msg[INV_MAX], aad[INV_AAD_LEN];
    size_t len = NODE_ID_LEN + key_len + BACKEND_REDIS_SEAL_OVERHEAD;
    memcpy(msg, r->node_id, NODE_ID_LEN);
    inv_aad(r->node_id, aad);
    if (seal_bytes(r, aad, sizeof(aad), key, key_len, msg + NODE_ID_LEN) != 0) {
        r->stats.errors++;
        return;
    }
    const char *argv[3] = {"PUBLISH", INV_CHANNEL, (const char *)msg};
    size_t lens[3] = {7, INV_CHANNEL_LEN, len};
    if (redisAsyncCommandArgv(r->ac, on_publish, r, 3, argv, lens) == REDIS_OK)
        r->stats.invalidations_sent++;
}

static int key_ok(const uint8_t *key, size_t key_len)
{
    return key != NULL && key_len > 0 && key_len <= BACKEND_MAX_KEY;
}

/* Common path of all five ops: checks, then one command. value is sealed
 * for PUT and ADD. */
static void submit(backend *b, int kind, const uint8_t *key, size_t key_len, const uint8_t *value,
                   size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    backend_redis *r = (backend_redis *)b;
    int writes = kind == OP_PUT || kind == OP_ADD;
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    redis_op *op = NULL;
    backend_status st = BACKEND_ERROR;
    r->stats.ops++;
    if (!key_ok(key, key_len) ||
        (writes && (!value || value_len == 0 || value_len > BACKEND_MAX_VALUE || ttl_ms == 0)))
        goto fail;
    st = BACKEND_UNAVAILABLE;
    if (r->state != ST_UP || !r->ac)
        goto fail;
    if (r->stats.inflight >= r->cfg.max_inflight) {
        r->stats.rejected_busy++;
        goto fail;
    }
    st = BACKEND_ERROR;
    op = calloc(1, sizeof(*op));
    if (!op || make_name(r, key, key_len, op->name) != 0)
        goto fail;
    if (writes) {
        sealed_len = value_len + BACKEND_REDIS_SEAL_OVERHEAD;
        sealed = malloc(sealed_len);
        if (!sealed ||
            seal_bytes(r, op->name, BACKEND_REDIS_NAME_LEN, value, value_len, sealed) != 0)
            goto fail;
    }
    char ttl[24];
    snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
    const char *argv[7];
    size_t lens[7];
    int argc = 0;
#define ARG(s, n) (argv[argc] = (const char *)(s), lens[argc] = (n), argc++)
    switch (kind) {
    case OP_GET:
        ARG("GET", 3);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        break;
    case OP_TAKE:
        ARG("GETDEL", 6);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        break;
    case OP_DEL:
        ARG("DEL", 3);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        break;
    default: /* PUT, ADD */
        ARG("SET", 3);
        ARG(op->name, BACKEND_REDIS_NAME_LEN);
        ARG(sealed, sealed_len);
        if (kind == OP_ADD)
            ARG("NX", 2);
        ARG("PX", 2);
        ARG(ttl, strlen(ttl));
        break;
    }
#undef ARG
    op->owner = r;
    op->kind = kind;
    op->done = done;
    op->arg = arg;
    st = BACKEND_UNAVAILABLE;
    /* hiredis copies the formatted command into its output buffer. */
    if (redisAsyncCommandArgv(r->ac, on_reply, op, argc, argv, lens) != REDIS_OK)
        goto fail;
    if (sealed) {
        OPENSSL_cleanse(sealed, sealed_len);
        free(sealed);
    }
    op->sent_us = now_us();
    op->deadline_ms = op->sent_us / 1000u + r->cfg.op_timeout_ms;
    op->prev = r->tail;
    if (r->tail)
        r->tail->next = op;
    else
        r->head = op;
    r->tail = op;
    r->stats.inflight++;
    if (!evtimer_pending(r->op_timer, NULL) || op->deadline_ms < r->op_timer_at)
        arm_op_timer(r, op->deadline_ms);
    if (kind == OP_DEL || kind == OP_TAKE)
        publish_invalidation(r, key, key_len);
    return;
fail:
    if (sealed) {
        OPENSSL_cleanse(sealed, sealed_len);
        free(sealed);
    }
    free(op);
    complete(r, done, arg, st, NULL, 0);
}

static void redis_get(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                      void *arg)
{
    submit(b, OP_GET, key, key_len, NULL, 0, 0, done, arg);
}

static void redis_put(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                      size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    submit(b, OP_PUT, key, key_len, value, value_len, ttl_ms, done, arg);
}

static void redis_del(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                      void *arg)
{
    submit(b, OP_DEL, key, key_len, NULL, 0, 0, done, arg);
}

static void redis_take(backend *b, const uint8_t *key, size_t key_len, backend_done_fn done,
                       void *arg)
{
    submit(b, OP_TAKE, key, key_len, NULL, 0, 0, done, arg);
}

static void redis_add(backend *b, const uint8_t *key, size_t key_len, const uint8_t *value,
                      size_t value_len, uint64_t ttl_ms, backend_done_fn done, void *arg)
{
    submit(b, OP_ADD, key, key_len, value, value_len, ttl_ms, done, arg);
}

/* --- the data connection ---------------------------------------------------- */

/* A new async connection on the loop, or NULL with the reason in why. */
static redisAsyncContext *open_async(backend_redis *r, const endpoint *to,
                                     redisConnectCallback *on_conn,
                                     redisDisconnectCallback *on_disc, char *why, size_t why_cap)
{
    redisAsyncContext *ac = redisAsyncConnect(to->host, to->port);
    snprintf(why, why_cap, "out of memory");
    if (!ac)
        return NULL;
    if (ac->err) { /* e.g. refused at once on loopback */
        snprintf(why, why_cap, "%s", ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->evbase) != REDIS_OK) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    return ac;
}

static void become_up(backend_redis *r)
{
    r->state = ST_UP;
    evtimer_del(r->connect_timer);
    r->backoff_ms = r->cfg.backoff_min_ms;
    if (r->ever_up)
        r->stats.reconnects++;
    r->ever_up = 1;
    report_up(r);
}

/* Forgets the context first, so the callbacks hiredis runs while freeing
 * (pending replies with NULL, then the disconnect callback) see it gone.
 * reason NULL: no log line (shutdown). */
static void drop_connection(backend_redis *r, const char *reason)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    if (r->state == ST_UP)
        r->stats.disconnects++;
    r->ac = NULL;
    r->state = ST_DOWN;
    evtimer_del(r->connect_timer);
    report_down(r, reason);
    redisAsyncFree(ac);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    backend_redis *r = ac->data;
    if (r->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        r->ac = NULL;
        r->state = ST_DOWN;
        evtimer_del(r->connect_timer);
        report_down(r, ac->errstr);
        schedule_reconnect(r);
        return;
    }
    if (!r->password)
        become_up(r);
    /* else on_auth decides */
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    backend_redis *r = ac->data;
    if (r->ac != ac) /* we dropped it ourselves */
        return;
    if (r->state == ST_UP)
        r->stats.disconnects++;
    r->ac = NULL;
    r->state = ST_DOWN;
    evtimer_del(r->connect_timer);
    report_down(r, ac->errstr[0] ? ac->errstr : "connection closed");
    schedule_reconnect(r);
}

/* AUTH's reply on any of our connections: 1 if accepted. A refusal (wrong
 * password, or no password set on the server) disconnects: the owner's
 * disconnect callback retries later. hiredis defers the disconnect until
 * the callback returns. */
static int auth_accepted(backend_redis *r, redisAsyncContext *ac, const redisReply *reply)
{
    if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0)
        return 1;
    r->stats.errors++;
    redisAsyncDisconnect(ac);
    return 0;
}

static void on_auth(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    backend_redis *r = ac->data;
    if (!reply_ptr || r->ac != ac)
        return;
    if (auth_accepted(r, ac, reply_ptr))
        become_up(r);
    else
        report_down(r, "AUTH refused");
}

/* Queues AUTH (sent once the socket connects) if a password is set. */
static int send_auth(backend_redis *r, redisAsyncContext *ac, redisCallbackFn *fn)
{
    if (!r->password)
        return 0;
    const char *argv[2] = {"AUTH", r->password};
    size_t lens[2] = {4, strlen(r->password)};
    return redisAsyncCommandArgv(ac, fn, NULL, 2, argv, lens) == REDIS_OK ? 0 : -1;
}

static void start_connect(backend_redis *r)
{
    char why[128];
    if (r->freeing || !r->have_master || r->ac)
        return;
    redisAsyncContext *ac = open_async(r, &r->master, on_connect, on_disconnect, why, sizeof(why));
    if (!ac) {
        report_down(r, why);
        schedule_reconnect(r);
        return;
    }
    r->ac = ac;
    r->state = ST_CONNECTING;
    if (send_auth(r, ac, on_auth) != 0) {
        drop_connection(r, "cannot queue AUTH");
        schedule_reconnect(r);
        return;
    }
    arm_timer(r->connect_timer, r->cfg.connect_timeout_ms);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->state != ST_CONNECTING)
        return;
    drop_connection(r, "connect timeout");
    schedule_reconnect(r);
}

static void sentinel_requery(backend_redis *r);

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->sentinel_mode)
        sentinel_requery(r); /* its answer (re)connects */
    else if (r->state == ST_DOWN && !r->ac)
        start_connect(r);
}

static void schedule_reconnect(backend_redis *r)
{
    if (r->freeing || evtimer_pending(r->reconnect_timer, NULL))
        return;
    arm_timer(r->reconnect_timer, r->backoff_ms);
    r->backoff_ms = next_backoff(r->backoff_ms, r->cfg.backoff_max_ms);
}

/* --- the invalidation subscription ---------------------------------------- */

static void inv_schedule(backend_redis *r)
{
    if (r->freeing)
        return;
    arm_timer(r->inv_timer, r->inv_backoff_ms);
    r->inv_backoff_ms = next_backoff(r->inv_backoff_ms, r->cfg.backoff_max_ms);
}

static void drop_inv(backend_redis *r)
{
    redisAsyncContext *ac = r->inv_ac;
    evtimer_del(r->inv_timer);
    r->inv_state = ST_DOWN;
    if (!ac)
        return;
    r->inv_ac = NULL;
    redisAsyncFree(ac);
}

/* One message from the channel: node ID | sealed key. */
static void inv_deliver(backend_redis *r, const uint8_t *msg, size_t len)
{
    uint8_t aad[INV_AAD_LEN], key[BACKEND_MAX_KEY + SEAL_TAG];
    if (len < NODE_ID_LEN ||
        !sealed_shape_ok(r, msg + NODE_ID_LEN, len - NODE_ID_LEN, BACKEND_MAX_KEY)) {
        r->stats.corrupt++;
        return;
    }
    if (memcmp(msg, r->node_id, NODE_ID_LEN) == 0)
        return; /* our own: the caller already dropped its near copy */
    inv_aad(msg, aad);
    long key_len = open_bytes(r, aad, sizeof(aad), msg + NODE_ID_LEN, len - NODE_ID_LEN, key);
    if (key_len <= 0) {
        r->stats.corrupt++;
        return;
    }
    r->stats.invalidations_received++;
    if (r->base.invalidate)
        r->base.invalidate(r->base.invalidate_arg, key, (size_t)key_len);
    OPENSSL_cleanse(key, sizeof(key));
}

static void on_inv_message(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    redisReply *reply = reply_ptr;
    backend_redis *r = ac->data;
    if (!reply || r->inv_ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    if (strcmp(kind, "subscribe") == 0) {
        r->inv_state = ST_UP;
        evtimer_del(r->inv_timer);
        r->inv_backoff_ms = r->cfg.backoff_min_ms;
    } else if (strcmp(kind, "message") == 0 && reply->element[2]->type == REDIS_REPLY_STRING) {
        inv_deliver(r, (const uint8_t *)reply->element[2]->str, reply->element[2]->len);
    }
}

static void on_inv_auth(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    backend_redis *r = ac->data;
    if (reply_ptr && r->inv_ac == ac)
        auth_accepted(r, ac, reply_ptr);
}

static void on_inv_connect(const redisAsyncContext *ac, int status)
{
    backend_redis *r = ac->data;
    if (r->inv_ac != ac || status == REDIS_OK)
        return;
    r->inv_ac = NULL; /* hiredis frees it */
    r->inv_state = ST_DOWN;
    evtimer_del(r->inv_timer);
    inv_schedule(r);
}

static void on_inv_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    backend_redis *r = ac->data;
    if (r->inv_ac != ac)
        return;
    r->inv_ac = NULL;
    r->inv_state = ST_DOWN;
    evtimer_del(r->inv_timer);
    inv_schedule(r);
}

static void inv_start(backend_redis *r)
{
    char why[128];
    if (r->freeing || !r->have_master || r->inv_ac)
        return;
    redisAsyncContext *ac =
        open_async(r, &r->master, on_inv_connect, on_inv_disconnect, why, sizeof(why));
    if (!ac) {
        inv_schedule(r);
        return;
    }
    r->inv_ac = ac;
    r->inv_state = ST_CONNECTING;
    if (send_auth(r, ac, on_inv_auth) != 0 ||
        redisAsyncCommand(ac, on_inv_message, NULL, "SUBSCRIBE %s", INV_CHANNEL) != REDIS_OK) {
        drop_inv(r);
        inv_schedule(r);
        return;
    }
    arm_timer(r->inv_timer, r->cfg.connect_timeout_ms);
}

static void on_inv_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->inv_state == ST_CONNECTING) { /* no subscription in time */
        drop_inv(r);
        inv_schedule(r);
    } else if (r->inv_state == ST_DOWN && !r->inv_ac) {
        inv_start(r);
    }
}

/* --- Sentinel ------------------------------------------------------------- */

static void drop_sentinel(backend_redis *r)
{
    redisAsyncContext *ac = r->sn_ac;
    evtimer_del(r->sn_timer);
    r->sn_state = SN_IDLE;
    if (!ac)
        return;
    r->sn_ac = NULL;
    redisAsyncFree(ac);
}

/* The master is `to` (a sentinel said so). Moves the data connection and
 * the subscription if it changed; else makes sure a connection is coming. */
static void set_master(backend_redis *r, const endpoint *to)
{
    if (r->have_master && strcmp(r->master.host, to->host) == 0 && r->master.port == to->port) {
        if (r->state == ST_DOWN && !r->ac)
            start_connect(r);
        if (r->inv_state == ST_DOWN && !r->inv_ac && !evtimer_pending(r->inv_timer, NULL))
            inv_start(r);
        return;
    }
    if (r->have_master)
        r->stats.failovers++;
    drop_connection(r, "master moved");
    drop_inv(r);
    r->master = *to;
    r->have_master = 1;
    char hp[HOST_MAX + 10];
    format_hostport(hp, sizeof(hp), to->host, to->port);
    snprintf(r->label, sizeof(r->label), "redis://%s", hp);
    r->reported = REPORT_NONE;
    log_msg(LOG_INFO, "backend sentinel %s: master at %s", r->master_name, hp);
    evtimer_del(r->reconnect_timer);
    r->backoff_ms = r->cfg.backoff_min_ms;
    r->inv_backoff_ms = r->cfg.backoff_min_ms;
    start_connect(r);
    inv_start(r);
}

/* host/port strings from a sentinel into a numeric endpoint; -1 if not. */
static int parse_endpoint(const char *host, size_t host_len, const char *port, endpoint *out)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (host_len == 0 || host_len >= sizeof(out->host))
        return -1;
    memcpy(out->host, host, host_len);
    out->host[host_len] = '\0';
    if (inet_pton(AF_INET, out->host, buf) != 1 && inet_pton(AF_INET6, out->host, buf) != 1)
        return -1;
    char *end = NULL;
    errno = 0;
    long v = strtol(port, &end, 10);
    if (port[0] < '0' || port[0] > '9' || errno || !end || (*end && *end != ' ') || v < 1 ||
        v > 65535)
        return -1;
    out->port = (int)v;
    return 0;
}

/* This sentinel did not help: try the next one now, or after the back-off
 * when every one failed in a row. */
static void sentinel_failed(backend_redis *r, const char *why)
{
    drop_sentinel(r);
    if (r->freeing)
        return;
    r->sn_index = (r->sn_index + 1) % r->n_sentinels;
    if (++r->sn_failed < r->n_sentinels) {
        arm_timer(r->sn_timer, 0);
        return;
    }
    r->sn_failed = 0;
    if (!r->sn_warned)
        log_msg(LOG_WARNING, "backend sentinel %s: no sentinel answered (last: %s)", r->master_name,
                why);
    r->sn_warned = 1;
    schedule_reconnect(r);
}

static void on_sentinel_addr(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    redisReply *reply = reply_ptr;
    backend_redis *r = ac->data;
    endpoint to;
    if (!reply || r->sn_ac != ac)
        return;
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING ||
        parse_endpoint(reply->element[0]->str, reply->element[0]->len, reply->element[1]->str,
                       &to) != 0) {
        if (reply->type != REDIS_REPLY_NIL)
            r->stats.errors++;
        sentinel_failed(r, reply->type == REDIS_REPLY_NIL ? "master unknown" : "unusable answer");
        return;
    }
    r->sn_state = SN_WATCHING;
    r->sn_failed = 0;
    r->sn_warned = 0;
    evtimer_del(r->sn_timer);
    set_master(r, &to);
}

/* "+switch-master" payload: "NAME old-ip old-port new-ip new-port". */
static void on_sentinel_event(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    redisReply *reply = reply_ptr;
    backend_redis *r = ac->data;
    if (!reply || r->sn_ac != ac || reply->type != REDIS_REPLY_ARRAY || reply->elements != 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(reply->element[0]->str, "message") != 0 ||
        reply->element[2]->type != REDIS_REPLY_STRING)
        return;
    const char *p = reply->element[2]->str, *f[5];
    size_t flen[5], n = 0;
    while (n < 5 && *p) {
        size_t l = strcspn(p, " ");
        f[n] = p;
        flen[n++] = l;
        p += l;
        p += strspn(p, " ");
    }
    endpoint to;
    if (n != 5 || flen[0] != strlen(r->master_name) || memcmp(f[0], r->master_name, flen[0]) != 0)
        return; /* another master's switch, or junk */
    if (parse_endpoint(f[3], flen[3], f[4], &to) != 0) {
        r->stats.errors++;
        return;
    }
    set_master(r, &to);
}

static void on_sentinel_connect(const redisAsyncContext *ac, int status)
{
    backend_redis *r = ac->data;
    if (r->sn_ac != ac || status == REDIS_OK)
        return;
    r->sn_ac = NULL; /* hiredis frees it */
    sentinel_failed(r, ac->errstr);
}

static void on_sentinel_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    backend_redis *r = ac->data;
    if (r->sn_ac != ac)
        return;
    r->sn_ac = NULL;
    if (r->sn_state == SN_ASKING) {
        sentinel_failed(r, ac->errstr[0] ? ac->errstr : "connection closed");
        return;
    }
    /* Lost the watch (the sentinel went away): ask the next one soon. The
     * short delay keeps a sentinel that answers and then hangs up from
     * turning this into a busy loop. */
    r->sn_state = SN_IDLE;
    r->sn_index = (r->sn_index + 1) % r->n_sentinels;
    r->sn_failed = 0;
    arm_timer(r->sn_timer, r->cfg.backoff_min_ms);
}

/* Connects to the current sentinel, asks for the master and subscribes to
 * +switch-master, pipelined. */
static void sentinel_ask(backend_redis *r)
{
    char why[128];
    drop_sentinel(r);
    if (r->freeing)
        return;
    redisAsyncContext *ac = open_async(r, &r->sentinels[r->sn_index], on_sentinel_connect,
                                       on_sentinel_disconnect, why, sizeof(why));
    if (!ac) {
        sentinel_failed(r, why);
        return;
    }
    r->sn_ac = ac;
    r->sn_state = SN_ASKING;
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name", r->master_name};
    size_t lens[3] = {8, 23, strlen(r->master_name)};
    if (redisAsyncCommandArgv(ac, on_sentinel_addr, NULL, 3, argv, lens) != REDIS_OK ||
        redisAsyncCommand(ac, on_sentinel_event, NULL, "SUBSCRIBE +switch-master") != REDIS_OK) {
        sentinel_failed(r, "cannot queue the query");
        return;
    }
    arm_timer(r->sn_timer, r->cfg.connect_timeout_ms);
}

static void on_sentinel_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->sn_state == SN_ASKING)
        sentinel_failed(r, "no answer in time");
    else if (r->sn_state == SN_IDLE)
        sentinel_ask(r);
}

/* Asks again (a fresh connection, starting with the sentinel that answered
 * last), unless a question is already out. */
static void sentinel_requery(backend_redis *r)
{
    if (r->sn_state == SN_ASKING)
        return;
    r->sn_failed = 0;
    sentinel_ask(r);
}

/* --- lifecycle ------------------------------------------------------------ */

static void redis_get_stats(const backend *b, backend_stats *out)
{
    const backend_redis *r = (const backend_redis *)b;
    *out = r->stats;
    out->up = r->state == ST_UP;
}

static void redis_free(backend *b)
{
    backend_redis *r = (backend_redis *)b;
    r->freeing = 1;
    if (r->sn_timer)
        drop_sentinel(r);
    if (r->inv_timer)
        drop_inv(r);
    drop_connection(r, NULL); /* completes every pending op UNAVAILABLE and frees it */
    while (r->head) {         /* none expected: hiredis ran every pending callback */
        redis_op *op = r->head;
        op_unlink(r, op);
        free(op);
    }
    struct event *timers[] = {r->op_timer, r->connect_timer, r->reconnect_timer, r->inv_timer,
                              r->sn_timer};
    for (size_t i = 0; i < sizeof(timers) / sizeof(timers[0]); i++)
        if (timers[i])
            event_free(timers[i]);
    if (r->cipher)
        EVP_CIPHER_CTX_free(r->cipher);
    if (r->password) {
        OPENSSL_cleanse(r->password, strlen(r->password));
        free(r->password);
    }
    OPENSSL_cleanse(r, sizeof(*r));
    free(r);
}

static const backend_ops redis_ops = {
    .name = "redis",
    .get = redis_get,
    .put = redis_put,
    .del = redis_del,
    .take = redis_take,
    .add = redis_add,
    .get_stats = redis_get_stats,
    .free = redis_free,
};

/* --- targets ---------------------------------------------------------------- */

/* "HOST:PORT" or "[V6]:PORT" of exactly n bytes. 0, or -1. */
static int parse_hostport(const char *s, size_t n, char *host, size_t host_cap, int *port)
{
    const char *end = s + n, *host_start = s, *host_end, *colon;
    if (n == 0)
        return -1;
    if (*s == '[') {
        host_end = memchr(s, ']', n);
        if (!host_end || host_end + 1 >= end || host_end[1] != ':')
            return -1;
        host_start = s + 1;
        colon = host_end + 1;
    } else {
        colon = NULL;
        for (const char *p = s; p < end; p++)
            if (*p == ':')
                colon = p;
        if (!colon || memchr(s, ':', (size_t)(colon - s)))
            return -1; /* no port, or an IPv6 address without brackets */
        host_end = colon;
    }
    size_t host_len = (size_t)(host_end - host_start);
    size_t digits = (size_t)(end - colon - 1);
    if (host_len == 0 || host_len >= host_cap || digits == 0 || digits > 5)
        return -1;
    long v = 0;
    for (const char *p = colon + 1; p < end; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    *port = (int)v;
    return 0;
}

int backend_redis_parse_target(const char *target, char *host, size_t host_cap, int *port,
                               char *err, size_t err_cap)
{
    static const char scheme[] = "redis://";
    if (!target || strncmp(target, scheme, sizeof(scheme) - 1) != 0) {
        set_err(err, err_cap, "backend '%s': expected redis://HOST:PORT", target ? target : "");
        return -1;
    }
    const char *p = target + sizeof(scheme) - 1;
    if (parse_hostport(p, strlen(p), host, host_cap, port) != 0) {
        set_err(err, err_cap, "backend '%s': expected redis://HOST:PORT (port 1-65535)", target);
        return -1;
    }
    return 0;
}

int backend_redis_parse_sentinel(const char *target, backend_redis_sentinels *out, char *err,
                                 size_t err_cap)
{
    static const char scheme[] = "sentinel://";
    const char *p, *slash, *name;
    memset(out, 0, sizeof(*out));
    if (!target || strncmp(target, scheme, sizeof(scheme) - 1) != 0) {
        set_err(err, err_cap, "backend '%s': expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER",
                target ? target : "");
        return -1;
    }
    p = target + sizeof(scheme) - 1;
    slash = strchr(p, '/');
    if (!slash)
        goto bad;
    name = slash + 1;
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > BACKEND_REDIS_MAX_MASTER_NAME ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
            name_len)
        goto bad;
    while (p <= slash) {
        const char *comma = memchr(p, ',', (size_t)(slash - p));
        const char *item_end = comma ? comma : slash;
        if (out->count == BACKEND_REDIS_MAX_SENTINELS) {
            set_err(err, err_cap, "backend '%s': more than %d sentinels", target,
                    BACKEND_REDIS_MAX_SENTINELS);
            return -1;
        }
        if (parse_hostport(p, (size_t)(item_end - p), out->host[out->count], sizeof(out->host[0]),
                           &out->port[out->count]) != 0)
            goto bad;
        out->count++;
        p = item_end + 1;
    }
    memcpy(out->master_name, name, name_len + 1);
    return 0;
bad:
    set_err(err, err_cap,
            "backend '%s': expected sentinel://HOST:PORT[,HOST:PORT...]/MASTER (port 1-65535, "
            "MASTER of letters, digits, '.', '_', '-')",
            target);
    return -1;
}

int backend_redis_check_target(const char *target, char *err, size_t err_cap)
{
    if (target && strncmp(target, "sentinel://", 11) == 0) {
        backend_redis_sentinels s;
        return backend_redis_parse_sentinel(target, &s, err, err_cap);
    }
    if (target && strncmp(target, "redis://", 8) == 0) {
        char host[HOST_MAX];
        int port;
        return backend_redis_parse_target(target, host, sizeof(host), &port, err, err_cap);
    }
    set_err(err, err_cap,
            "backend '%s': expected redis://HOST:PORT or "
            "sentinel://HOST:PORT[,HOST:PORT...]/MASTER",
            target ? target : "");
    return -1;
}

/* HOST -> a numeric address (the one blocking step, at creation only). */
static int resolve(const char *host, int port, endpoint *out, char *err, size_t err_cap)
{
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0 || !res) {
        set_err(err, err_cap, "backend: cannot resolve '%s'", host);
        return -1;
    }
    int rc = getnameinfo(res->ai_addr, res->ai_addrlen, out->host, sizeof(out->host), NULL, 0,
                         NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) {
        set_err(err, err_cap, "backend: cannot use the address of '%s'", host);
        return -1;
    }
    out->port = port;
    return 0;
}

backend *backend_redis_new(struct event_base *base, const backend_redis_config *cfg, char *err,
                           size_t err_cap)
{
    backend_redis *r = NULL;
    backend_redis_sentinels *sn = NULL;
    char host[HOST_MAX];
    int port = 0;
    if (!base || !cfg || !cfg->cluster_key) {
        set_err(err, err_cap, "backend redis: no event base or no cluster key");
        return NULL;
    }
    if (backend_redis_check_target(cfg->target, err, err_cap) != 0)
        return NULL;
    r = calloc(1, sizeof(*r));
    if (!r)
        goto oom;
    r->base.ops = &redis_ops;
    r->evbase = base;
    if (strncmp(cfg->target, "sentinel://", 11) == 0) {
        sn = malloc(sizeof(*sn));
        if (!sn)
            goto oom;
        if (backend_redis_parse_sentinel(cfg->target, sn, err, err_cap) != 0)
            goto fail;
        r->sentinel_mode = 1;
        r->n_sentinels = sn->count;
        memcpy(r->master_name, sn->master_name, sizeof(r->master_name));
        for (int i = 0; i < sn->count; i++)
            if (resolve(sn->host[i], sn->port[i], &r->sentinels[i], err, err_cap) != 0)
                goto fail;
        snprintf(r->label, sizeof(r->label), "sentinel %s", r->master_name);
    } else {
        if (backend_redis_parse_target(cfg->target, host, sizeof(host), &port, err, err_cap) != 0 ||
            resolve(host, port, &r->master, err, err_cap) != 0)
            goto fail;
        r->have_master = 1;
        snprintf(r->label, sizeof(r->label), "%s", cfg->target);
    }
    r->cfg = *cfg;
    r->cfg.target = NULL;
    r->cfg.cluster_key = NULL;
    r->cfg.password = NULL;
#define DEFAULT(f, d) (r->cfg.f = r->cfg.f ? r->cfg.f : (d))
    DEFAULT(op_timeout_ms, BACKEND_REDIS_DEFAULT_OP_TIMEOUT_MS);
    DEFAULT(max_inflight, BACKEND_REDIS_DEFAULT_MAX_INFLIGHT);
    DEFAULT(connect_timeout_ms, BACKEND_REDIS_DEFAULT_CONNECT_TIMEOUT_MS);
    DEFAULT(backoff_min_ms, BACKEND_REDIS_DEFAULT_BACKOFF_MIN_MS);
    DEFAULT(backoff_max_ms, BACKEND_REDIS_DEFAULT_BACKOFF_MAX_MS);
    DEFAULT(stall_ms, BACKEND_REDIS_DEFAULT_STALL_MS);
#undef DEFAULT
    if (r->cfg.backoff_max_ms < r->cfg.backoff_min_ms)
        r->cfg.backoff_max_ms = r->cfg.backoff_min_ms;
    r->backoff_ms = r->cfg.backoff_min_ms;
    r->inv_backoff_ms = r->cfg.backoff_min_ms;
    if (cfg->password && cfg->password[0] && !(r->password = strdup(cfg->password)))
        goto oom;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    if (derive_subkey(cfg->cluster_key, "sessiond redis name v1", r->name_key) != 0 ||
        derive_subkey(cfg->cluster_key, "sessiond redis seal v1", r->seal_key) != 0 ||
        !SHA256(cfg->cluster_key, CLUSTER_KEY, digest) ||
        RAND_bytes(r->node_id, NODE_ID_LEN) != 1) {
        set_err(err, err_cap, "backend: key derivation failed");
        goto fail;
    }
    memcpy(r->key_id, digest, SEAL_KEY_ID);
    r->cipher = EVP_CIPHER_CTX_new();
    r->op_timer = evtimer_new(base, on_op_timer, r);
    r->connect_timer = evtimer_new(base, on_connect_timeout, r);
    r->reconnect_timer = evtimer_new(base, on_reconnect_timer, r);
    r->inv_timer = evtimer_new(base, on_inv_timer, r);
    r->sn_timer = evtimer_new(base, on_sentinel_timer, r);
    if (!r->cipher || !r->op_timer || !r->connect_timer || !r->reconnect_timer || !r->inv_timer ||
        !r->sn_timer)
        goto oom;
    free(sn);
    if (r->sentinel_mode) {
        sentinel_ask(r);
    } else {
        start_connect(r);
        inv_start(r);
    }
    return &r->base;
oom:
    set_err(err, err_cap, "backend: out of memory");
fail:
    free(sn);
    if (r)
        redis_free(&r->base);
    return NULL;
}

int backend_redis_is_up(const backend *b)
{
    return b && b->ops == &redis_ops && ((const backend_redis *)b)->state == ST_UP;
}

int backend_redis_key_name(const backend *b, const uint8_t *key, size_t key_len,
                           char out[BACKEND_REDIS_NAME_LEN + 1])
{
    if (!b || b->ops != &redis_ops || !key_ok(key, key_len))
        return -1;
    return make_name((const backend_redis *)b, key, key_len, out);
}
