/* backend_redis.h — a shared Redis (or Valkey) behind the backend vtable.
 *
 * hiredis' asynchronous API runs on the daemon's libevent base, so nothing
 * ever blocks the loop. A target is one Redis ("redis://HOST:PORT") or a
 * master found and followed through Redis Sentinel
 * ("sentinel://H:P[,H:P...]/NAME"). del and take tell the other nodes
 * through pub/sub (the backend's invalidate hook, see backend.h). The
 * protocol and the failure rules (down or slow Redis completes UNAVAILABLE
 * fast) are in backend_redis.c, names and sealing in backend_redis_seal.c,
 * Sentinel in backend_redis_sentinel.c, invalidations in
 * backend_redis_inv.c.
 */
#ifndef SESSIOND_BACKEND_REDIS_H
#define SESSIOND_BACKEND_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

struct event_base;

/* "sd:" and 32 hex digits (the first 128 bits of the keyed hash). */
#define BACKEND_REDIS_NAME_LEN 35
/* Sealed value = plaintext + this: format byte, key ID, salt, tag. */
#define BACKEND_REDIS_SEAL_OVERHEAD (1 + 4 + 16 + 16)

#define BACKEND_REDIS_DEFAULT_OP_TIMEOUT_MS      50
#define BACKEND_REDIS_DEFAULT_MAX_INFLIGHT       1024
#define BACKEND_REDIS_DEFAULT_CONNECT_TIMEOUT_MS 1000
#define BACKEND_REDIS_DEFAULT_BACKOFF_MIN_MS     50
#define BACKEND_REDIS_DEFAULT_BACKOFF_MAX_MS     2000
#define BACKEND_REDIS_DEFAULT_STALL_MS           1000

/* Sentinel targets: at most this many sentinels, a master name of at most
 * this many characters (letters, digits, '.', '_', '-'). */
#define BACKEND_REDIS_MAX_SENTINELS   16
#define BACKEND_REDIS_MAX_MASTER_NAME 64
#define BACKEND_REDIS_MAX_HOST        255

/* The channel invalidations are published on (see backend_redis_inv.c). */
#define BACKEND_REDIS_INV_CHANNEL "sd:inv"

typedef struct backend_redis_config {
    /* "redis://HOST:PORT" or "sentinel://HOST:PORT[,HOST:PORT...]/MASTER"
     * (HOST may be [IPv6]). */
    const char *target;
    const uint8_t *cluster_key; /* 32 bytes (PROTO_V2_CLUSTER_KEY_LEN); subkeys derived, not kept */
    const char *password;       /* AUTH password, NULL for none; copied and wiped on free */
    /* 0 means the default above, for each of these. */
    uint32_t op_timeout_ms;      /* an op not answered by then completes UNAVAILABLE */
    uint32_t max_inflight;       /* ops sent and unanswered; beyond, UNAVAILABLE at once */
    uint32_t connect_timeout_ms; /* TCP connect + AUTH */
    uint32_t backoff_min_ms;     /* first reconnect delay, doubled per failure ... */
    uint32_t backoff_max_ms;     /* ... up to this */
    uint32_t stall_ms;           /* oldest op unanswered this long: drop and reconnect */
} backend_redis_config;

/* Parses "redis://HOST:PORT". Returns 0, or -1 with a one-line reason in
 * err (naming the target). host gets HOST without brackets. */
int backend_redis_parse_target(const char *target, char *host, size_t host_cap, int *port,
                               char *err, size_t err_cap);

typedef struct backend_redis_sentinels {
    int count;
    char host[BACKEND_REDIS_MAX_SENTINELS][BACKEND_REDIS_MAX_HOST + 1];
    int port[BACKEND_REDIS_MAX_SENTINELS];
    char master_name[BACKEND_REDIS_MAX_MASTER_NAME + 1];
} backend_redis_sentinels;

/* Parses "sentinel://HOST:PORT[,HOST:PORT...]/MASTER". Returns 0, or -1
 * with a one-line reason in err (naming the target). No DNS. */
int backend_redis_parse_sentinel(const char *target, backend_redis_sentinels *out, char *err,
                                 size_t err_cap);

/* Checks either form of target without resolving anything: 0, or -1 with
 * a one-line reason in err (naming the target). For configuration checks. */
int backend_redis_check_target(const char *target, char *err, size_t err_cap);

/* Validates the config, resolves HOST (or every sentinel HOST) once
 * (getaddrinfo: the only blocking call, made here at startup, never in an
 * operation) and starts connecting (or asking the sentinels).
 * Returns the backend, which is usable at once (ops complete UNAVAILABLE
 * until the connection is up), or NULL with a one-line reason in err. */
backend *backend_redis_new(struct event_base *base, const backend_redis_config *cfg, char *err,
                           size_t err_cap);

/* 1 once connected (and authenticated) to the store (with Sentinel: to the
 * current master), else 0. */
int backend_redis_is_up(const backend *b);

/* Writes the Redis key name of `key` (NUL-terminated, BACKEND_REDIS_NAME_LEN
 * characters) into out. For tests and operators (redis-cli). Returns 0, or
 * -1 for a bad key. */
int backend_redis_key_name(const backend *b, const uint8_t *key, size_t key_len,
                           char out[BACKEND_REDIS_NAME_LEN + 1]);

#endif
