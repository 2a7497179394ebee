/* backend_redis.c — the backend vtable on a shared Redis, via hiredis' async
 * API attached to the daemon's libevent base.
 *
 * Commands (one connection, replies in order):
 *   put  SET name sealed PX ttl         add  SET name sealed NX PX ttl
 *   get  GET name                       take GETDEL name (Redis >= 6.2)
 *   del  DEL name
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
 *
 * Limits: one connection (Redis pipelines, so one connection carries tens of
 * thousands of ops per second); one cluster key (no rollover: a new key
 * changes every name, so a key change empties the shared store); no TLS to
 * Redis (values and names are protected anyway; AUTH's password is not).
 */
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

#define SEAL_FORMAT 0x01
#define SEAL_KEY_ID 4
#define SEAL_SALT   16
#define SEAL_TAG    16
#define SEAL_HEADER (1 + SEAL_KEY_ID + SEAL_SALT)
#define SUBKEY_LEN  32
#define CLUSTER_KEY 32
#define NAME_HEX    32
#define NAME_PREFIX "sd:"
#define HOST_MAX    256

enum redis_op_kind { OP_GET, OP_PUT, OP_DEL, OP_TAKE, OP_ADD };
enum redis_state { ST_DOWN, ST_CONNECTING, ST_UP };

typedef struct backend_redis backend_redis;

typedef struct redis_op {
    struct redis_op *prev, *next; /* in send order */
    backend_redis *owner;
    backend_done_fn done;
    void *arg;
    int kind;
    int completed; /* the caller has been told (timed out, or answered) */
    uint64_t sent_ms;
    uint64_t deadline_ms;
    char name[BACKEND_REDIS_NAME_LEN + 1]; /* the AAD when opening the reply */
} redis_op;

struct backend_redis {
    backend base; /* first: a backend_redis is a backend */
    struct event_base *evbase;
    redisAsyncContext *ac;
    int state;
    int ever_up;
    int freeing;
    char host[HOST_MAX]; /* numeric */
    int port;
    char *password;
    backend_redis_config cfg; /* timings only; target/key/password pointers cleared */
    uint8_t name_key[SUBKEY_LEN];
    uint8_t seal_key[SUBKEY_LEN];
    uint8_t key_id[SEAL_KEY_ID];
    EVP_CIPHER_CTX *cipher;
    redis_op *head, *tail;
    struct event *op_timer;
    uint64_t op_timer_at; /* when op_timer fires, if pending */
    struct event *connect_timer;
    struct event *reconnect_timer;
    uint32_t backoff_ms;
    backend_stats stats;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void ms_to_tv(uint64_t ms, struct timeval *tv)
{
    tv->tv_sec = (time_t)(ms / 1000u);
    tv->tv_usec = (suseconds_t)((ms % 1000u) * 1000u);
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

/* AES-256-GCM under HMAC(seal_key, salt), zero nonce; AAD = header || name. */
static int gcm_run(backend_redis *r, int encrypt, const uint8_t *header, const char *name,
                   const uint8_t *in, size_t len, uint8_t *out, uint8_t *tag)
{
    static const uint8_t zero_nonce[12];
    uint8_t msg_key[SUBKEY_LEN];
    unsigned int mk_len = 0;
    int ok = 0, n = 0;
    if (len > INT32_MAX)
        goto fail;
    if (!HMAC(EVP_sha256(), r->seal_key, SUBKEY_LEN, header + 1 + SEAL_KEY_ID, SEAL_SALT, msg_key,
              &mk_len))
        goto fail;
    if (EVP_CipherInit_ex(r->cipher, EVP_aes_256_gcm(), NULL, msg_key, zero_nonce, encrypt) != 1)
        goto fail;
    if (EVP_CipherUpdate(r->cipher, NULL, &n, header, SEAL_HEADER) != 1 ||
        EVP_CipherUpdate(r->cipher, NULL, &n, (const uint8_t *)name, BACKEND_REDIS_NAME_LEN) != 1)
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
static int seal_value(backend_redis *r, const char *name, const uint8_t *value, size_t len,
                      uint8_t *out)
{
    out[0] = SEAL_FORMAT;
    memcpy(out + 1, r->key_id, SEAL_KEY_ID);
    if (RAND_bytes(out + 1 + SEAL_KEY_ID, SEAL_SALT) != 1)
        return -1;
    return gcm_run(r, 1, out, name, value, len, out + SEAL_HEADER, out + SEAL_HEADER + len);
}

/* Returns a malloc'd plaintext (the caller wipes and frees it), or NULL if
 * the blob is not a value sealed under this name and key. */
static uint8_t *open_value(backend_redis *r, const char *name, const uint8_t *blob, size_t blob_len,
                           size_t *out_len)
{
    if (blob_len <= BACKEND_REDIS_SEAL_OVERHEAD || blob[0] != SEAL_FORMAT ||
        memcmp(blob + 1, r->key_id, SEAL_KEY_ID) != 0)
        return NULL;
    size_t len = blob_len - BACKEND_REDIS_SEAL_OVERHEAD;
    if (len > BACKEND_MAX_VALUE)
        return NULL;
    uint8_t tag[SEAL_TAG];
    memcpy(tag, blob + SEAL_HEADER + len, SEAL_TAG);
    uint8_t *plain = malloc(len + SEAL_TAG); /* room for Final's (empty) output */
    if (!plain)
        return NULL;
    if (gcm_run(r, 0, blob, name, blob + SEAL_HEADER, len, plain, tag) != 0) {
        OPENSSL_cleanse(plain, len);
        free(plain);
        return NULL;
    }
    *out_len = len;
    return plain;
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
    struct timeval tv;
    ms_to_tv(at > now ? at - now : 0, &tv);
    evtimer_add(r->op_timer, &tv);
    r->op_timer_at = at;
}

static void drop_connection(backend_redis *r);
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
    if (r->head && now - r->head->sent_ms >= r->cfg.stall_ms && r->state == ST_UP) {
        drop_connection(r);
        schedule_reconnect(r);
        return;
    }
    uint64_t next = UINT64_MAX;
    if (r->head)
        next = r->head->sent_ms + r->cfg.stall_ms;
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

static void on_reply(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)ac;
    redisReply *reply = reply_ptr;
    redis_op *op = privdata;
    backend_redis *r = op->owner;
    /* reply NULL: the connection is going. hiredis refuses new commands on
     * it meanwhile, so a completion that starts an op gets UNAVAILABLE. */
    if (!op->completed) {
        op->completed = 1;
        backend_status st = BACKEND_ERROR;
        uint8_t *plain = NULL;
        size_t plain_len = 0;
        if (!reply) {
            st = BACKEND_UNAVAILABLE;
        } else if (reply->type == REDIS_REPLY_ERROR) {
            r->stats.errors++;
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
    }
    op_unlink(r, op);
    free(op);
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
        if (!sealed || seal_value(r, op->name, value, value_len, sealed) != 0)
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
    op->sent_ms = now_ms();
    op->deadline_ms = op->sent_ms + r->cfg.op_timeout_ms;
    op->prev = r->tail;
    if (r->tail)
        r->tail->next = op;
    else
        r->head = op;
    r->tail = op;
    r->stats.inflight++;
    if (!evtimer_pending(r->op_timer, NULL) || op->deadline_ms < r->op_timer_at)
        arm_op_timer(r, op->deadline_ms);
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

/* --- connection ---------------------------------------------------------- */

static void become_up(backend_redis *r)
{
    r->state = ST_UP;
    evtimer_del(r->connect_timer);
    r->backoff_ms = r->cfg.backoff_min_ms;
    if (r->ever_up)
        r->stats.reconnects++;
    r->ever_up = 1;
}

/* Forgets the context first, so the callbacks hiredis runs while freeing
 * (pending replies with NULL, then the disconnect callback) see it gone. */
static void drop_connection(backend_redis *r)
{
    redisAsyncContext *ac = r->ac;
    if (!ac)
        return;
    if (r->state == ST_UP)
        r->stats.disconnects++;
    r->ac = NULL;
    r->state = ST_DOWN;
    evtimer_del(r->connect_timer);
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
    schedule_reconnect(r);
}

static void on_auth(redisAsyncContext *ac, void *reply_ptr, void *privdata)
{
    (void)privdata;
    redisReply *reply = reply_ptr;
    backend_redis *r = ac->data;
    if (!reply || r->ac != ac)
        return;
    if (reply->type == REDIS_REPLY_STATUS && strcmp(reply->str, "OK") == 0) {
        become_up(r);
        return;
    }
    /* Wrong password (or no AUTH configured on the server): retry later;
     * hiredis defers the disconnect until this callback returns. */
    r->stats.errors++;
    redisAsyncDisconnect(ac);
}

static void start_connect(backend_redis *r)
{
    redisAsyncContext *ac = redisAsyncConnect(r->host, r->port);
    if (!ac || ac->err) {
        if (ac)
            redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    ac->data = r;
    if (redisLibeventAttach(ac, r->evbase) != REDIS_OK) {
        redisAsyncFree(ac);
        schedule_reconnect(r);
        return;
    }
    r->ac = ac;
    r->state = ST_CONNECTING;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (r->password) {
        const char *argv[2] = {"AUTH", r->password};
        size_t lens[2] = {4, strlen(r->password)};
        /* Buffered by hiredis and sent once the socket is connected. */
        if (redisAsyncCommandArgv(ac, on_auth, NULL, 2, argv, lens) != REDIS_OK) {
            drop_connection(r);
            schedule_reconnect(r);
            return;
        }
    }
    struct timeval tv;
    ms_to_tv(r->cfg.connect_timeout_ms, &tv);
    evtimer_add(r->connect_timer, &tv);
}

static void on_connect_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->state != ST_CONNECTING)
        return;
    drop_connection(r);
    schedule_reconnect(r);
}

static void on_reconnect_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->state == ST_DOWN && !r->ac)
        start_connect(r);
}

static void schedule_reconnect(backend_redis *r)
{
    if (r->freeing || evtimer_pending(r->reconnect_timer, NULL))
        return;
    struct timeval tv;
    ms_to_tv(r->backoff_ms, &tv);
    evtimer_add(r->reconnect_timer, &tv);
    r->backoff_ms =
        r->backoff_ms >= r->cfg.backoff_max_ms / 2 ? r->cfg.backoff_max_ms : r->backoff_ms * 2;
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
    drop_connection(r); /* completes every pending op UNAVAILABLE and frees it */
    while (r->head) {   /* none expected: hiredis ran every pending callback */
        redis_op *op = r->head;
        op_unlink(r, op);
        free(op);
    }
    if (r->op_timer)
        event_free(r->op_timer);
    if (r->connect_timer)
        event_free(r->connect_timer);
    if (r->reconnect_timer)
        event_free(r->reconnect_timer);
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

int backend_redis_parse_target(const char *target, char *host, size_t host_cap, int *port,
                               char *err, size_t err_cap)
{
    static const char scheme[] = "redis://";
    const char *p, *host_end, *colon;
    if (!target || strncmp(target, scheme, sizeof(scheme) - 1) != 0) {
        set_err(err, err_cap, "backend '%s': expected redis://HOST:PORT", target ? target : "");
        return -1;
    }
    p = target + sizeof(scheme) - 1;
    if (*p == '[') {
        host_end = strchr(p, ']');
        if (!host_end || host_end[1] != ':')
            goto bad;
        p++;
        colon = host_end + 1;
    } else {
        colon = strrchr(p, ':');
        if (!colon || memchr(p, ':', (size_t)(colon - p)))
            goto bad; /* no port, or an IPv6 address without brackets */
        host_end = colon;
    }
    size_t host_len = (size_t)(host_end - p);
    if (host_len == 0 || host_len >= host_cap)
        goto bad;
    char *end = NULL;
    errno = 0;
    long v = strtol(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || errno || *end != '\0' || v < 1 || v > 65535)
        goto bad;
    memcpy(host, p, host_len);
    host[host_len] = '\0';
    *port = (int)v;
    return 0;
bad:
    set_err(err, err_cap, "backend '%s': expected redis://HOST:PORT (port 1-65535)", target);
    return -1;
}

backend *backend_redis_new(struct event_base *base, const backend_redis_config *cfg, char *err,
                           size_t err_cap)
{
    char host[HOST_MAX];
    int port = 0;
    struct addrinfo hints, *res = NULL;
    backend_redis *r = NULL;
    if (!base || !cfg || !cfg->cluster_key) {
        set_err(err, err_cap, "backend redis: no event base or no cluster key");
        return NULL;
    }
    if (backend_redis_parse_target(cfg->target, host, sizeof(host), &port, err, err_cap) != 0)
        return NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0 || !res) {
        set_err(err, err_cap, "backend: cannot resolve '%s'", host);
        goto fail;
    }
    r = calloc(1, sizeof(*r));
    if (!r)
        goto oom;
    r->base.ops = &redis_ops;
    r->evbase = base;
    r->port = port;
    if (getnameinfo(res->ai_addr, res->ai_addrlen, r->host, sizeof(r->host), NULL, 0,
                    NI_NUMERICHOST) != 0) {
        set_err(err, err_cap, "backend: cannot use the address of '%s'", host);
        goto fail;
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
    if (cfg->password && cfg->password[0] && !(r->password = strdup(cfg->password)))
        goto oom;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    if (derive_subkey(cfg->cluster_key, "sessiond redis name v1", r->name_key) != 0 ||
        derive_subkey(cfg->cluster_key, "sessiond redis seal v1", r->seal_key) != 0 ||
        !SHA256(cfg->cluster_key, CLUSTER_KEY, digest)) {
        set_err(err, err_cap, "backend: key derivation failed");
        goto fail;
    }
    memcpy(r->key_id, digest, SEAL_KEY_ID);
    r->cipher = EVP_CIPHER_CTX_new();
    r->op_timer = evtimer_new(base, on_op_timer, r);
    r->connect_timer = evtimer_new(base, on_connect_timeout, r);
    r->reconnect_timer = evtimer_new(base, on_reconnect_timer, r);
    if (!r->cipher || !r->op_timer || !r->connect_timer || !r->reconnect_timer)
        goto oom;
    freeaddrinfo(res);
    start_connect(r);
    return &r->base;
oom:
    set_err(err, err_cap, "backend: out of memory");
fail:
    if (res)
        freeaddrinfo(res);
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
