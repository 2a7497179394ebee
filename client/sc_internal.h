/* sc_internal.h — what the files of libsessionc share and users never see.
 *
 * The library is split by concern:
 *   sessionc.c    the client object, per-thread sockets, raw get/put/remove,
 *                 counters, and the one pair of send/receive helpers that
 *                 knows how a request and its answer travel;
 *   sc_servers.c  the server list (parsing, resolution), rendezvous order of
 *                 servers for a key, and the per-server circuit breaker;
 *   sc_ssl.c      sc_attach and the blocking OpenSSL session callbacks;
 *   sc_async.c    the event-loop mode (ClientHello callback + pending state).
 *
 * None of this is part of the ABI (the declarations below are hidden from
 * libsessionc.so's symbol table); the unit test links the static archive and
 * includes this header to check the parser, the rendezvous order and the
 * breaker without a network.
 */
#ifndef SESSIONC_INTERNAL_H
#define SESSIONC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "proto.h"
#include "sessionc.h"

/* Everything declared here stays out of libsessionc.so's dynamic symbol
 * table: only sessionc.h is the ABI. (The static archive is unaffected, which
 * is how the unit test reaches these.) */
#pragma GCC visibility push(hidden)

/* Fixed upper bound so a key's server order fits on the stack; a cluster
 * larger than this would want a different placement scheme anyway. */
#define SC_MAX_SERVERS 64

/* "[v6-address]:65535" at most. */
#define SC_SERVER_NAME_MAX 64

/* The session IDs OpenSSL hands us are at most 32 bytes, the v1 key length. */
#define SC_KEY_LEN PROTO_V1_KEY_LEN

/* stunnel caps the v1 timeout field at 18 hours; so do we. */
#define SC_MAX_TTL 64800u

/* Per-thread counters, summed by sc_get_stats. Indexes into sc_thread.counters. */
enum sc_counter {
    SC_C_LOOKUPS,
    SC_C_HITS,
    SC_C_MISSES,
    SC_C_TIMEOUTS,
    SC_C_ERRORS,
    SC_C_SKIPPED,
    SC_C_STORES,
    SC_C_REMOVES,
    SC_C_TOO_LARGE,
    SC_C_COUNT
};

/* Circuit breaker of one server. The fast path (server healthy) is one
 * acquire load of open_until_ns; every state change takes the mutex, which
 * only happens on failures, probes and the first success after a failure. */
typedef struct sc_breaker {
    pthread_mutex_t lock;
    _Atomic int64_t open_until_ns; /* 0: closed; else backed off until then */
    _Atomic unsigned failures;     /* consecutive failures while closed */
    _Atomic int probing;           /* 1 while one thread's probe is in flight */
    unsigned backoff_ms;           /* current back-off period (under lock) */
} sc_breaker;

typedef enum sc_admit {
    SC_ADMIT_SKIP = 0, /* backed off: do not send to this server */
    SC_ADMIT_NORMAL,   /* closed: send */
    SC_ADMIT_PROBE,    /* back-off over and this caller won the probe: send, report */
} sc_admit;

typedef struct sc_server {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char name[SC_SERVER_NAME_MAX]; /* numeric "host:port" / "[v6]:port": identity and messages */
    uint64_t id_hash;              /* hash of name: this server's rendezvous seed */
    sc_breaker breaker;
} sc_server;

/* One thread's state for one client: its connected sockets (one per server,
 * opened on first use, -1 until then) and its counters. Only the owning
 * thread writes the counters; sc_get_stats reads them, so they are atomics
 * accessed with relaxed order (no lock prefix on the writer's side). */
typedef struct sc_thread {
    sc_client *client;
    struct sc_thread *prev, *next; /* client->threads list, under threads_lock */
    pid_t pid;                     /* sockets inherited over fork() are not ours */
    _Atomic uint64_t counters[SC_C_COUNT];
    int fds[]; /* client->nservers entries */
} sc_thread;

struct sc_client {
    sc_options opt;
    size_t nservers;
    sc_server *servers;
    pthread_key_t thread_key; /* -> sc_thread of the calling thread */
    pthread_mutex_t threads_lock;
    sc_thread *threads;           /* every live sc_thread of this client */
    uint64_t retired[SC_C_COUNT]; /* counters of threads that have exited */
};

/* --- sc_servers.c --- */

/* Parses and resolves "host[:port][,host[:port]...]". On success fills
 * *servers (calloc'ed, breakers initialised) and *count and returns 0; on
 * failure returns -1 with a one-line reason in err. */
int sc_servers_parse(const char *list, const sc_options *opt, sc_server **servers, size_t *count,
                     char *err, size_t errlen);
void sc_servers_free(sc_server *servers, size_t count);

/* A 64-bit hash of a v1 key, computed once per request. */
uint64_t sc_key_hash(const uint8_t key[SC_KEY_LEN]);

/* Writes the rendezvous order of the client's servers for a key hash:
 * order[0] is the server with the highest score. Returns the count. */
size_t sc_servers_order(const sc_client *client, uint64_t key_hash, uint8_t *order);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t sc_now_ns(void);

void sc_breaker_init(sc_breaker *b, const sc_options *opt);
void sc_breaker_destroy(sc_breaker *b);
/* may_probe: 0 for requests whose success cannot be observed (put, remove):
 * they never take the probe, so a silent send cannot close the breaker. */
sc_admit sc_breaker_admit(sc_breaker *b, int64_t now_ns, int may_probe);
void sc_breaker_success(sc_breaker *b, sc_admit how, const sc_options *opt);
void sc_breaker_failure(sc_breaker *b, sc_admit how, int64_t now_ns, const sc_options *opt);
/* A probe ended without a verdict (local error, SSL freed while pending). */
void sc_breaker_release(sc_breaker *b, sc_admit how);

/* --- sessionc.c --- */

/* The calling thread's state for this client, created on first use; NULL
 * (errno set) only when memory or the pthread key fails. */
sc_thread *sc_thread_get(sc_client *client);

static inline void sc_count(sc_thread *t, enum sc_counter c)
{
    atomic_store_explicit(&t->counters[c],
                          atomic_load_explicit(&t->counters[c], memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Counts on the calling thread's record; a no-op if it cannot be had. */
void sc_count_client(sc_client *client, enum sc_counter c);

/* A non-blocking UDP socket connected to the server, or -1 (errno set). */
int sc_udp_open(const sc_server *server);

/* Sends header (+ value) as one datagram without blocking. A send refused
 * with ECONNREFUSED reports an ICMP error left by an earlier datagram, and
 * this one was not sent: it is retried once. Returns 0 or -1 (errno set);
 * *stale_refusal is set when the first attempt was refused that way. */
int sc_send_datagram(int fd, const uint8_t *header, const uint8_t *value, size_t value_len,
                     int *stale_refusal);

typedef enum sc_answer {
    SC_ANS_FOUND,     /* our key, found: value in dst[0..*value_len) */
    SC_ANS_NOT_FOUND, /* our key, not found */
    SC_ANS_TOO_LARGE, /* our key, found, but the value needs *value_len > cap bytes */
    SC_ANS_STALE,     /* a well-formed answer for another key: discarded */
    SC_ANS_MALFORMED, /* not a v1 answer: discarded */
    SC_ANS_AGAIN,     /* nothing queued */
    SC_ANS_ERROR,     /* recv failed (errno set; ECONNREFUSED: nobody listens) */
} sc_answer;

/* Receives one queued datagram without blocking and classifies it. The
 * header lands on the stack and the value straight in dst (scatter read, no
 * copy). Anything not ours that reached dst is wiped. */
sc_answer sc_recv_answer(int fd, const uint8_t key[SC_KEY_LEN], uint8_t *dst, size_t cap,
                         size_t *value_len);

/* --- sc_ssl.c --- */

/* The SSL ex_data index of the event-loop mode's pending state, or -1. */
int sc_ssl_pending_index(void);

/* The client attached to the SSL's SSL_CTX, or NULL. */
sc_client *sc_ssl_client(const SSL *ssl);

/* Decodes a DER session that came back for `id`; NULL (counted as an error)
 * if it does not decode or belongs to another session ID. */
SSL_SESSION *sc_session_decode(sc_client *client, const uint8_t *der, size_t der_len,
                               const uint8_t *id, size_t id_len);

/* --- sc_async.c --- */

/* The event-loop mode's get-session callback: hands over what the
 * ClientHello callback fetched, never blocks. */
SSL_SESSION *sc_async_get_session_cb(SSL *ssl, const unsigned char *id, int id_len, int *copy);

/* Allocates the SSL ex_data index of the pending state (under the same
 * pthread_once as the SSL_CTX index); returns it, or -1. */
int sc_async_new_index(void);

#pragma GCC visibility pop

#endif
