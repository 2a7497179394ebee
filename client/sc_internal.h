/* sc_internal.h — what the files of libsessionc share and users never see.
 *
 * The library is split by concern:
 *   sessionc.c    the client object, per-thread state (sockets, request
 *                 IDs, sealer, buffers), raw operations, counters;
 *   sc_wire.c     how a request is built (v1, v2 plain or sealed) and how an
 *                 answer is received and judged: the one place of the
 *                 library that knows the wire;
 *   sc_servers.c  the server list (parsing, resolution), rendezvous order of
 *                 servers for a key, and the per-server circuit breaker;
 *   sc_ssl.c      sc_attach and the blocking OpenSSL session callbacks;
 *   sc_async.c    the event-loop mode (ClientHello callback + pending state);
 *   sc_tickets.c  shared session-ticket keys: fetching the ring, the
 *                 refresh thread, the ticket-key callback;
 *   sc_antireplay.c  0-RTT anti-replay: the early-data callback.
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
#include "proto_v2.h"
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

/* The largest request the library builds without a value: a sealed v2
 * header with the longest key (v1's 36-byte header is smaller). */
#define SC_SMALL_DATAGRAM (PROTO_V2_OVERHEAD_MAX + PROTO_V2_MAX_KEY)

/* A receive buffer that holds any datagram, plus one byte to see a longer one. */
#define SC_RECV_CAP (PROTO_MAX_DATAGRAM + 1)

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
    SC_C_AUTH_FAILURES,
    SC_C_LATE_ANSWERS,
    SC_C_TICKETS_ISSUED,
    SC_C_TICKETS_NO_KEY,
    SC_C_TICKETS_CURRENT,
    SC_C_TICKETS_OLD,
    SC_C_TICKETS_NEXT,
    SC_C_TICKETS_UNKNOWN,
    SC_C_TICKETS_RENEWED,
    SC_C_RING_REFRESHES,
    SC_C_RING_REFRESH_FAILURES,
    SC_C_EARLY_ACCEPTED,
    SC_C_EARLY_REPLAYED,
    SC_C_EARLY_UNAVAILABLE,
    SC_C_TAKES,
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
 * opened on first use, -1 until then), its request-ID counter, its sealer
 * (sealers are not thread-safe), its datagram buffers and its counters.
 * Only the owning thread writes the counters; sc_get_stats reads them, so
 * they are atomics accessed with relaxed order (no lock prefix on the
 * writer's side). */
typedef struct sc_thread {
    sc_client *client;
    struct sc_thread *prev, *next; /* client->threads list, under threads_lock */
    unsigned fork_generation;      /* sessionc.c's fork count when the sockets were
                                      opened: after a fork() the copies are not ours */
    unsigned early_misses;         /* consecutive waits whose answer was not yet queued
                                      right after the send (saturates; see sc_wait_answer) */
    unsigned early_skips;          /* waits that skipped the early receive, for the retry */
    uint32_t next_request_id;      /* v2: random start, +1 per request */
    proto_v2_sealer *sealer;       /* with a key: created on first use */
    uint8_t *sbuf;                 /* requests with a value are built here (grown) */
    size_t sbuf_cap;
    uint8_t *rbuf; /* SC_RECV_CAP bytes, allocated on first receive */
    _Atomic uint64_t counters[SC_C_COUNT];
    int fds[]; /* client->nservers entries */
} sc_thread;

/* A key as it goes on the wire: v1, the session ID zero-padded to 32 bytes;
 * v2, namespace || session ID. `hash` places it on a server. */
typedef struct sc_key {
    uint8_t bytes[PROTO_V2_MAX_KEY];
    size_t len;
    uint64_t hash;
} sc_key;

/* What a request expects of its answer. */
typedef struct sc_request {
    uint8_t op;          /* the v2 op (PROTO_V2_GET...), also in v1 mode */
    uint32_t request_id; /* v2 */
    const sc_key *key;   /* NULL for PING and STATS */
} sc_request;

/* A judged answer; value points into the datagram, which sc_reply_done wipes. */
typedef struct sc_reply {
    const uint8_t *value;
    size_t value_len;
    uint8_t *datagram; /* where the answer was received, or NULL */
    size_t datagram_len;
} sc_reply;

/* One immutable ticket-key ring, shared by every handshake that took a
 * reference (sc_tickets.c). */
typedef struct sc_ring_snap sc_ring_snap;

/* The ticket-key state of a client (sc_tickets.c): the lock and condition
 * are set up by sc_client_new, the ring and the refresh thread come with
 * the first sc_attach_ticket_keys. `lock` guards `snap` (held only to copy
 * the pointer and bump its reference count) and the thread's control
 * fields. */
typedef struct sc_tickets {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* signalled by sc_client_free: stop now */
    sc_ring_snap *snap;  /* the ring in use, or NULL before the first fetch */
    pthread_t thread;
    int started; /* the refresh thread runs (under lock) */
    int stop;    /* asked to stop (under lock) */
} sc_tickets;

struct sc_client {
    sc_options opt; /* key_file and next_key_file are NULL: the keys are below */
    uint8_t key[PROTO_V2_CLUSTER_KEY_LEN];
    uint8_t next_key[PROTO_V2_CLUSTER_KEY_LEN];
    int has_key, has_next_key;
    size_t nservers;
    sc_server *servers;
    pthread_key_t thread_key; /* -> sc_thread of the calling thread */
    pthread_mutex_t threads_lock;
    sc_thread *threads;           /* every live sc_thread of this client */
    uint64_t retired[SC_C_COUNT]; /* counters of threads that have exited */
    sc_tickets tickets;
};

/* --- sc_servers.c --- */

/* Parses and resolves "host[:port][,host[:port]...]". On success fills
 * *servers (calloc'ed, breakers initialised) and *count and returns 0; on
 * failure returns -1 with a one-line reason in err. */
int sc_servers_parse(const char *list, const sc_options *opt, sc_server **servers, size_t *count,
                     char *err, size_t errlen);
void sc_servers_free(sc_server *servers, size_t count);

/* A 64-bit hash of a wire key (any length up to 64), computed once per request. */
uint64_t sc_key_hash(const uint8_t *key, size_t len);

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

/* A keyed operation with an explicit namespace: what the SSL callbacks and
 * the raw functions share. op is PROTO_V2_GET, _PUT, _DEL, _TAKE or _ADD;
 * `wait` asks for the answer of a put or delete (v2 only; a get, take or
 * add always waits, and take and add are v2 only). On SC_OK for a get or a
 * take, reply->value points into the thread's receive buffer: use it, then
 * call sc_reply_done before the thread's next operation. */
typedef struct sc_op {
    uint8_t op;
    const uint8_t *ns; /* SC_NAMESPACE_LEN bytes; ignored in v1 */
    const uint8_t *id;
    size_t id_len;
    const uint8_t *value;
    size_t value_len;
    unsigned ttl;
    int wait;
} sc_op;

sc_result sc_run(sc_client *client, const sc_op *op, sc_reply *reply);

/* Wipes what the answer left in the buffer it was received into. */
void sc_reply_done(const sc_reply *reply);

/* A keyless request (PING, STATS, KEYS) to server number `server`, whatever
 * its breaker says, waiting until deadline_ns. SC_OK (reply filled; on
 * success *rtt_ns, when not NULL, is the round trip), SC_TIMEOUT, SC_REFUSED
 * (answered NOT_FOUND or REFUSED), SC_UNAVAILABLE, SC_ERR_ARG (no such
 * server, or v1) or SC_ERR_SYSTEM (errno set). The caller judges the
 * breaker. */
sc_result sc_call_server(sc_client *client, size_t server, uint8_t op, int64_t deadline_ns,
                         sc_reply *reply, uint64_t *rtt_ns);

/* Errors that blame the server (or the way to it) for the breaker. */
int sc_errno_blames_server(int err);

/* --- sc_wire.c --- */

/* The wire key of a namespace and ID (see sc_key). Returns 0, or -1 when
 * the ID is empty or too long for the client's protocol. */
int sc_key_make(const sc_client *client, const uint8_t *ns, const uint8_t *id, size_t id_len,
                sc_key *out);

/* The thread's sealer, created on first use; NULL without a key (and on
 * allocation failure, errno ENOMEM, when with one). */
proto_v2_sealer *sc_thread_sealer(sc_thread *t);

/* Builds one request datagram into out[0..cap) (cap >= SC_SMALL_DATAGRAM
 * + value_len + v2 overhead), v1 or v2 after the client's protocol, sealed
 * when it has a key; v2 requests take the thread's next request ID, which
 * req->request_id receives. flags: PROTO_V2_F_NO_REPLY or 0. Returns SC_OK,
 * SC_ERR_TOO_LARGE (value over the protocol's limit), SC_ERR_ARG or
 * SC_ERR_SYSTEM (sealing failed). */
sc_result sc_build(sc_thread *t, sc_request *req, uint8_t flags, const uint8_t *value,
                   size_t value_len, unsigned ttl, uint8_t *out, size_t cap, size_t *out_len);

/* The largest value the client's protocol carries. */
size_t sc_max_value(const sc_client *client);

/* Bytes sc_build needs for a request with this key and value. */
size_t sc_build_size(const sc_client *client, size_t key_len, size_t value_len);

/* The blocking receive (see sc_wait_answer). The kernel keeps SO_RCVTIMEO
 * in scheduler ticks and rounds it up, so it may wake up to two ticks late
 * (20 ms at HZ=100, the coarsest kernel setting): the socket's SO_RCVTIMEO
 * is the client's timeout less SC_RCVTIMEO_MARGIN_MS, a receive blocks
 * under it only while at least that plus SC_TICK_OVERSHOOT_MS of the
 * deadline is left, and ppoll() keeps the rest of the deadline exactly.
 * Timeouts under SC_RCVTIMEO_MIN_MS leave no room for that: ppoll() only. */
#define SC_RCVTIMEO_MARGIN_MS 25u
#define SC_TICK_OVERSHOOT_MS  20u
#define SC_RCVTIMEO_MIN_MS    50u

/* The SO_RCVTIMEO of a client's sockets, in ms; 0: none (non-blocking). */
static inline unsigned sc_rcvtimeo_ms(unsigned timeout_ms)
{
    return timeout_ms >= SC_RCVTIMEO_MIN_MS ? timeout_ms - SC_RCVTIMEO_MARGIN_MS : 0;
}

/* A UDP socket connected to the server, or -1 (errno set). rcvtimeo_ms 0:
 * non-blocking (the event-loop mode hands it to the application's loop);
 * else blocking with that SO_RCVTIMEO (the thread sockets: every send and
 * every receive but sc_wait_answer's blocking one passes MSG_DONTWAIT). */
int sc_udp_open(const sc_server *server, unsigned rcvtimeo_ms);

/* Sends one datagram without blocking. A send refused with ECONNREFUSED
 * reports an ICMP error left by an earlier datagram, and this one was not
 * sent: it is retried once. Returns 0 or -1 (errno set); *stale_refusal is
 * set when the first attempt was refused that way. */
int sc_send_datagram(int fd, const uint8_t *dgram, size_t len, int *stale_refusal);

typedef enum sc_answer {
    SC_ANS_OK,          /* our answer, status OK (v1: found); reply filled */
    SC_ANS_NOT_FOUND,   /* our answer: no such entry */
    SC_ANS_REFUSED,     /* our answer: the daemon refused (v2 PUT) */
    SC_ANS_EXISTS,      /* our answer: ADD found an entry there */
    SC_ANS_UNAVAILABLE, /* our answer: the daemon cannot answer now (TAKE/ADD/KEYS) */
    SC_ANS_STALE,       /* a genuine answer to an earlier request: discarded */
    SC_ANS_MALFORMED,   /* not an answer we can parse, or not to what we asked */
    SC_ANS_AUTH,        /* did not open with our keys / outside the window / plaintext
                           while we hold a key: discarded */
    SC_ANS_AGAIN,       /* nothing queued (or, from sc_wait_answer, timed out) */
    SC_ANS_ERROR,       /* recv failed (errno set; ECONNREFUSED: nobody listens) */
} sc_answer;

/* Judges one received datagram buf[0..len) against req, opening it in
 * place when sealed (t's sealer). On SC_ANS_OK reply points into buf. */
sc_answer sc_judge(sc_thread *t, const sc_request *req, uint8_t *buf, size_t len, sc_reply *reply);

/* Counts a discarded answer under the counter its verdict calls for. */
void sc_count_discarded(sc_thread *t, sc_answer verdict);

/* Waits until deadline_ns for the answer to req on fd, receiving into the
 * thread's buffer and discarding (counted) whatever is not it. Returns OK,
 * NOT_FOUND, REFUSED, AGAIN (timed out) or ERROR (errno set). */
sc_answer sc_wait_answer(sc_thread *t, int fd, const sc_request *req, sc_reply *reply,
                         int64_t deadline_ns);

/* CLOCK_REALTIME in milliseconds: the v2 timestamp. */
uint64_t sc_wall_ms(void);

/* --- sc_ssl.c --- */

/* The SSL ex_data index of the event-loop mode's pending state, or -1. */
int sc_ssl_pending_index(void);

/* The client attached to the SSL's SSL_CTX, or NULL. */
sc_client *sc_ssl_client(const SSL *ssl);

/* The v2 namespace of an SSL_CTX: the one declared with
 * sc_set_session_id_context, else the client's default_namespace. */
const uint8_t *sc_ctx_namespace(SSL_CTX *ctx, const sc_client *client);

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

/* --- sc_tickets.c --- */

/* Sets up client->tickets (sc_client_new). Returns 0 or -1. */
int sc_tickets_init(sc_client *client);

/* Undoes sc_attach_ticket_keys on ctx (sc_detach). Returns 0, or -1 when
 * ctx had no ticket keys of ours. */
int sc_tickets_detach(SSL_CTX *ctx);

/* Stops and joins the refresh thread (if any), drops the ring (wiped) and
 * destroys the lock and condition: the first thing sc_client_free does. */
void sc_tickets_shutdown(sc_client *client);

/* --- sc_antireplay.c --- */

/* Installs the early-data callback on ctx (anti_replay clients). Returns 0,
 * or -1 (the callback is installed anyway; sc_detach may not remove it). */
int sc_antireplay_install(sc_client *client, SSL_CTX *ctx);

/* Removes it again if it is ours (sc_detach). */
void sc_antireplay_remove(SSL_CTX *ctx);

#pragma GCC visibility pop

#endif
