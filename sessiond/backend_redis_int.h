/* backend_redis_int.h — what the files of the Redis backend share, and
 * nothing else includes: the backend's state (struct backend_redis, one per
 * target) and the functions one part calls in another.
 *
 * The backend is split by concern, all parts working on the one struct:
 *   backend_redis.c           the vtable ops, the data connection, timers,
 *                             stats, targets, create and free;
 *   backend_redis_seal.c      Redis names and value sealing (HKDF subkeys,
 *                             keyed HMAC contexts, AES-256-GCM);
 *   backend_redis_inv.c       invalidation: PUBLISH after del/take, and the
 *                             subscription that hears the other nodes;
 *   backend_redis_sentinel.c  finding the master through Sentinel and
 *                             following +switch-master.
 * Cross-file functions carry the prefix br_. Everything runs on the one
 * libevent thread, so the struct needs no lock. Why one struct rather than
 * a sub-struct per part: the parts read each other's state (the sentinel
 * code moves the data connection and the subscription; the subscription
 * reuses the data connection's address and AUTH), and one flat struct keeps
 * that visible at the cost of every part seeing every field.
 */
#ifndef SESSIOND_BACKEND_REDIS_INT_H
#define SESSIOND_BACKEND_REDIS_INT_H

#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis.h>
#include <async.h>
#include <openssl/evp.h>

#include "backend.h"
#include "backend_redis.h"

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
    /* HMAC-SHA256 contexts keyed once with name_key and seal_key: a one-shot
     * HMAC() fetches the digest and allocates a context per call, which
     * showed as a sixth of the node's CPU on backend GETs. */
    EVP_MAC_CTX *name_mac;
    EVP_MAC_CTX *seal_mac;
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

/* --- backend_redis.c: shared helpers and the data connection ------------- */

__attribute__((format(printf, 3, 4))) void br_set_err(char *err, size_t cap, const char *fmt, ...);
/* Arms the one-shot timer ev to fire in ms milliseconds. */
void br_arm_timer(struct event *ev, uint64_t ms);
/* The next reconnect delay after cur: doubled, at most max. */
uint32_t br_next_backoff(uint32_t cur, uint32_t max);
/* A new async connection to `to` on the loop (ac->data = r), or NULL with
 * the reason in why. */
redisAsyncContext *br_open_async(backend_redis *r, const endpoint *to,
                                 redisConnectCallback *on_conn, redisDisconnectCallback *on_disc,
                                 char *why, size_t why_cap);
/* Queues AUTH on ac (answered to fn) if a password is set: 0, or -1. */
int br_send_auth(backend_redis *r, redisAsyncContext *ac, redisCallbackFn *fn);
/* 1 if AUTH's reply accepts; else counts an error, disconnects ac, 0. */
int br_auth_accepted(backend_redis *r, redisAsyncContext *ac, const redisReply *reply);
/* Drops the data connection (pending ops complete UNAVAILABLE); reason
 * NULL: no log line. */
void br_drop_connection(backend_redis *r, const char *reason);
/* Connects the data connection to r->master unless one exists. */
void br_start_connect(backend_redis *r);
/* Arms the reconnect timer (with Sentinel: ask the sentinels again). */
void br_schedule_reconnect(backend_redis *r);

/* --- backend_redis_seal.c ------------------------------------------------ */

/* Derives the subkeys and key ID from the 32-byte cluster key and sets up
 * the keyed HMAC contexts and the cipher context: 0, or -1 with a one-line
 * reason in err. What it made is freed by br_seal_free, even on failure. */
int br_seal_init(backend_redis *r, const uint8_t *cluster_key, char *err, size_t err_cap);
void br_seal_free(backend_redis *r);
/* The Redis name of key: "sd:" + 32 hex digits, NUL-terminated. */
int br_make_name(const backend_redis *r, const uint8_t *key, size_t key_len,
                 char out[BACKEND_REDIS_NAME_LEN + 1]);
/* Seals value under aad; out must hold len + BACKEND_REDIS_SEAL_OVERHEAD. */
int br_seal_bytes(backend_redis *r, const void *aad, size_t aad_len, const uint8_t *value,
                  size_t len, uint8_t *out);
/* Opens a blob br_sealed_shape_ok accepted into plain (room for blob_len -
 * overhead + SEAL_TAG): the plaintext length, or -1. */
long br_open_bytes(backend_redis *r, const void *aad, size_t aad_len, const uint8_t *blob,
                   size_t blob_len, uint8_t *plain);
/* 1 if blob is long enough, at most max_plain inside, and carries our
 * format byte and key ID. */
int br_sealed_shape_ok(const backend_redis *r, const uint8_t *blob, size_t blob_len,
                       size_t max_plain);
/* A malloc'd plaintext of a value read under name (the caller wipes and
 * frees it), or NULL if it is not one sealed under this name and key. */
uint8_t *br_open_value(backend_redis *r, const char *name, const uint8_t *blob, size_t blob_len,
                       size_t *out_len);

/* --- backend_redis_inv.c ------------------------------------------------- */

/* Subscribes to the channel on r->master unless a subscription exists. */
void br_inv_start(backend_redis *r);
/* Drops the subscription and its timer (no reconnect scheduled). */
void br_inv_drop(backend_redis *r);
/* inv_timer's callback (arg: r). */
void br_on_inv_timer(evutil_socket_t fd, short what, void *arg);
/* Pipelines PUBLISH of key's invalidation on the data connection. */
void br_publish_invalidation(backend_redis *r, const uint8_t *key, size_t key_len);

/* --- backend_redis_sentinel.c -------------------------------------------- */

/* Connects to the current sentinel and asks for the master. */
void br_sentinel_ask(backend_redis *r);
/* Asks again unless a question is already out. */
void br_sentinel_requery(backend_redis *r);
/* Drops the sentinel connection and its timer. */
void br_sentinel_drop(backend_redis *r);
/* sn_timer's callback (arg: r). */
void br_on_sentinel_timer(evutil_socket_t fd, short what, void *arg);

#endif
