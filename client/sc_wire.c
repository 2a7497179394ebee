/* sc_wire.c — the library's side of the wire: building a request (v1, v2
 * plain, v2 sealed) and judging what comes back.
 *
 * Requests: sc_key_make turns a namespace and a session ID into the key the
 * protocol carries (v1: the ID zero-padded to 32 bytes; v2: the 16-byte
 * namespace followed by the ID, so two services sharing a daemon never
 * share a key); sc_build writes the datagram with the proto/ codecs. In v2
 * every request takes the thread's next request ID (a per-thread counter
 * started at a random value: no lock, and a socket reopened on a recycled
 * port is unlikely to see its predecessor's IDs); with a cluster key the
 * datagram is sealed by the thread's own sealer (a proto_v2_sealer is not
 * thread-safe), stamped with the wall clock.
 *
 * Answers: sc_judge decides what one received datagram is, in this order:
 * 1. the version byte must be the client's (a v1 answer on a v2 client is
 *    malformed, and the reverse);
 * 2. with a key, only a sealed answer that opens with one of our keys and
 *    whose timestamp is within the window is looked at any further: a
 *    plaintext answer is refused exactly like a forged one (counted as an
 *    authentication failure), since accepting it would let anyone who can
 *    send us a datagram plant a session. Without a key a sealed answer is
 *    refused the same way;
 * 3. an answer carrying another request ID (v2) or another key (v1) is a
 *    late answer to an earlier request that timed out on this socket:
 *    discarded, counted, and the wait goes on. In v2 this check comes after
 *    authentication, so a forgery can never pass for a late answer;
 * 4. an answer with our ID but another op or another echoed key is
 *    malformed (a confused or hostile daemon), as is any status the codec
 *    does not know (OK, NOT_FOUND, REFUSED, EXISTS, UNAVAILABLE).
 *
 * Every answer lands whole in the thread's receive buffer (SC_RECV_CAP
 * bytes, allocated on first use: 64 KiB of address space per thread and
 * client, resident only as far as answers reach), and a sealed one is
 * opened in place. The cheaper alternative for v1 alone (the header on the
 * stack, the value scattered straight into the caller's buffer) cannot
 * serve sealed answers, which must be contiguous to open; one receive path
 * for both versions was preferred, and the SSL callbacks decode straight
 * from the buffer, so a handshake still copies nothing. Bytes received are
 * wiped as soon as they are judged useless or used.
 */
#include "sc_internal.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

uint64_t sc_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

size_t sc_max_value(const sc_client *client)
{
    return client->opt.protocol == 1 ? PROTO_V1_MAX_VALUE : PROTO_V2_MAX_VALUE;
}

size_t sc_build_size(const sc_client *client, size_t key_len, size_t value_len)
{
    if (client->opt.protocol == 1)
        return PROTO_V1_HEADER_LEN + value_len;
    return PROTO_V2_OVERHEAD_MAX + key_len + value_len;
}

int sc_key_make(const sc_client *client, const uint8_t *ns, const uint8_t *id, size_t id_len,
                sc_key *out)
{
    if (id == NULL || id_len == 0)
        return -1;
    if (client->opt.protocol == 1) {
        if (id_len > SC_KEY_LEN)
            return -1;
        memset(out->bytes, 0, SC_KEY_LEN);
        memcpy(out->bytes, id, id_len);
        out->len = SC_KEY_LEN;
    } else {
        if (ns == NULL || id_len > SC_MAX_ID_LEN)
            return -1;
        memcpy(out->bytes, ns, SC_NAMESPACE_LEN);
        memcpy(out->bytes + SC_NAMESPACE_LEN, id, id_len);
        out->len = SC_NAMESPACE_LEN + id_len;
    }
    out->hash = sc_key_hash(out->bytes, out->len);
    return 0;
}

proto_v2_sealer *sc_thread_sealer(sc_thread *t)
{
    const sc_client *client = t->client;

    if (!client->has_key)
        return NULL;
    if (t->sealer == NULL) {
        t->sealer =
            proto_v2_sealer_new(client->key, client->has_next_key ? client->next_key : NULL);
        if (t->sealer == NULL)
            errno = ENOMEM;
    }
    return t->sealer;
}

/* v1 has no PUT/GET/DEL ops: its types, for the v2 op the caller names. */
static int sc_v1_type(uint8_t op)
{
    switch (op) {
    case PROTO_V2_PUT:
        return PROTO_V1_NEW;
    case PROTO_V2_GET:
        return PROTO_V1_GET;
    case PROTO_V2_DEL:
        return PROTO_V1_REMOVE;
    default:
        return -1;
    }
}

sc_result sc_build(sc_thread *t, sc_request *req, uint8_t flags, const uint8_t *value,
                   size_t value_len, unsigned ttl, uint8_t *out, size_t cap, size_t *out_len)
{
    const sc_client *client = t->client;
    proto_v2_sealer *sealer;
    proto_v2_msg msg;
    int status;

    if (value_len > sc_max_value(client))
        return SC_ERR_TOO_LARGE;
    if (client->opt.protocol == 1) {
        int type = sc_v1_type(req->op);

        if (type < 0 || req->key == NULL)
            return SC_ERR_ARG;
        if (ttl > SC_MAX_TTL)
            ttl = SC_MAX_TTL; /* stunnel's cap, and the field is 16 bits */
        /* The key is already padded: encode it as a 32-byte ID. */
        status = proto_v1_encode(out, cap, (uint8_t)type, (uint16_t)ttl, req->key->bytes,
                                 req->key->len, value, value_len, out_len);
        return status == PROTO_OK ? SC_OK : SC_ERR_ARG;
    }

    memset(&msg, 0, sizeof(msg));
    msg.op = req->op;
    msg.flags = flags;
    msg.request_id = req->request_id = t->next_request_id++;
    msg.ttl = ttl;
    msg.key = req->key != NULL ? req->key->bytes : NULL;
    msg.key_len = req->key != NULL ? req->key->len : 0;
    msg.value = value;
    msg.value_len = value_len;
    if (!client->has_key) {
        status = proto_v2_encode(out, cap, &msg, out_len);
        return status == PROTO_OK ? SC_OK : SC_ERR_ARG;
    }
    sealer = sc_thread_sealer(t);
    if (sealer == NULL)
        return SC_ERR_SYSTEM;
    msg.timestamp_ms = sc_wall_ms();
    status = proto_v2_seal(sealer, out, cap, &msg, out_len);
    if (status == PROTO_ERR_CRYPTO) {
        errno = EIO;
        return SC_ERR_SYSTEM;
    }
    return status == PROTO_OK ? SC_OK : SC_ERR_ARG;
}

int sc_udp_open(const sc_server *server, unsigned rcvtimeo_ms)
{
    int fd = socket(server->addr.ss_family,
                    SOCK_DGRAM | SOCK_CLOEXEC | (rcvtimeo_ms == 0 ? SOCK_NONBLOCK : 0), 0);
    struct timeval tv = {.tv_sec = (time_t)(rcvtimeo_ms / 1000),
                         .tv_usec = (suseconds_t)(rcvtimeo_ms % 1000) * 1000};
    int saved;

    if (fd < 0)
        return -1;
    if (rcvtimeo_ms > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0)
        goto fail;
    if (connect(fd, (const struct sockaddr *)&server->addr, server->addr_len) < 0)
        goto fail;
    return fd;

fail:
    saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int sc_send_datagram(int fd, const uint8_t *dgram, size_t len, int *stale_refusal)
{
    int attempts = 0;

    *stale_refusal = 0;
    for (;;) {
        if (send(fd, dgram, len, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
            return 0; /* UDP: the whole datagram or nothing */
        if (errno == EINTR)
            continue;
        if (errno != ECONNREFUSED || ++attempts > 1)
            return -1;
        *stale_refusal = 1;
    }
}

static sc_answer sc_judge_v1(const sc_request *req, const uint8_t *buf, size_t len, sc_reply *reply)
{
    proto_v1_msg msg;

    if (req->op != PROTO_V2_GET || req->key == NULL ||
        proto_v1_parse_answer(buf, len, &msg) != PROTO_OK)
        return SC_ANS_MALFORMED;
    if (memcmp(msg.key, req->key->bytes, SC_KEY_LEN) != 0)
        return SC_ANS_STALE; /* v1 has no request ID: the key is all there is */
    if (msg.type == PROTO_V1_NOT_FOUND)
        return SC_ANS_NOT_FOUND;
    reply->value = msg.value;
    reply->value_len = msg.value_len;
    return SC_ANS_OK;
}

sc_answer sc_judge(sc_thread *t, const sc_request *req, uint8_t *buf, size_t len, sc_reply *reply)
{
    const sc_client *client = t->client;
    proto_v2_msg msg;
    int status;

    reply->value = NULL;
    reply->value_len = 0;
    reply->datagram = buf;
    reply->datagram_len = len;
    if (len > PROTO_MAX_DATAGRAM || len < 1)
        return SC_ANS_MALFORMED;
    if (client->opt.protocol == 1)
        return buf[0] == PROTO_V1_VERSION ? sc_judge_v1(req, buf, len, reply) : SC_ANS_MALFORMED;
    if (buf[0] != PROTO_V2_VERSION || len < PROTO_V2_HEADER_LEN)
        return SC_ANS_MALFORMED;

    if (((buf[2] & PROTO_V2_F_SEALED) != 0) != client->has_key)
        return SC_ANS_AUTH; /* plaintext while we hold a key, or sealed while we hold none */
    if (client->has_key) {
        proto_v2_sealer *sealer = sc_thread_sealer(t);

        if (sealer == NULL)
            return SC_ANS_MALFORMED; /* cannot open anything: out of memory */
        status = proto_v2_open(sealer, buf, len, 1, sc_wall_ms(), client->opt.window_ms, &msg);
        if (status == PROTO_ERR_UNKNOWN_KEY || status == PROTO_ERR_AUTH ||
            status == PROTO_ERR_STALE)
            return SC_ANS_AUTH;
    } else {
        status = proto_v2_parse(buf, len, 1, &msg);
    }
    if (status != PROTO_OK)
        return SC_ANS_MALFORMED;
    /* Authentic (or no key to check with): now, is it ours? */
    if (msg.request_id != req->request_id)
        return SC_ANS_STALE;
    if (msg.op != (req->op | PROTO_V2_ANSWER))
        return SC_ANS_MALFORMED;
    if (req->key != NULL &&
        (msg.key_len != req->key->len || memcmp(msg.key, req->key->bytes, req->key->len) != 0))
        return SC_ANS_MALFORMED;
    switch (msg.status) {
    case PROTO_V2_ST_OK:
        reply->value = msg.value;
        reply->value_len = msg.value_len;
        return SC_ANS_OK;
    case PROTO_V2_ST_NOT_FOUND:
        return SC_ANS_NOT_FOUND;
    case PROTO_V2_ST_REFUSED:
        return SC_ANS_REFUSED;
    case PROTO_V2_ST_EXISTS:
        return SC_ANS_EXISTS;
    case PROTO_V2_ST_UNAVAILABLE:
        return SC_ANS_UNAVAILABLE;
    default:
        return SC_ANS_MALFORMED; /* the codec admits no other status; kept as a guard */
    }
}

void sc_count_discarded(sc_thread *t, sc_answer verdict)
{
    if (verdict == SC_ANS_STALE)
        sc_count(t, SC_C_LATE_ANSWERS);
    else if (verdict == SC_ANS_AUTH)
        sc_count(t, SC_C_AUTH_FAILURES);
    else if (verdict == SC_ANS_MALFORMED)
        sc_count(t, SC_C_ERRORS);
}

/* Receives one datagram into the thread's buffer and judges it. flags:
 * MSG_DONTWAIT (take what is queued), or 0 (the blocking receive, which
 * reports its SO_RCVTIMEO running out, like an empty queue, as AGAIN). */
static sc_answer sc_recv_judge(sc_thread *t, int fd, const sc_request *req, sc_reply *reply,
                               int flags)
{
    ssize_t n;
    size_t len;
    sc_answer verdict;

    /* MSG_TRUNC: the return value is the datagram's real length even when
     * it did not fit, so an over-long one is seen as such. */
    n = recv(fd, t->rbuf, SC_RECV_CAP, flags | MSG_TRUNC);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? SC_ANS_AGAIN
                                                                         : SC_ANS_ERROR;
    len = (size_t)n;
    if (len > SC_RECV_CAP)
        len = SC_RECV_CAP; /* what landed: judged too long below */
    verdict = sc_judge(t, req, t->rbuf, len, reply);
    if (verdict != SC_ANS_OK) {
        OPENSSL_cleanse(t->rbuf, len); /* someone's session bytes we will not use */
        memset(reply, 0, sizeof(*reply));
    }
    return verdict;
}

/* Receives and judges what is queued on fd until our answer or an empty
 * queue (AGAIN); late, forged and malformed datagrams are discarded,
 * counted, and the draining goes on. */
static sc_answer sc_drain(sc_thread *t, int fd, const sc_request *req, sc_reply *reply)
{
    for (;;) {
        sc_answer a = sc_recv_judge(t, fd, req, reply, MSG_DONTWAIT);

        if (a == SC_ANS_STALE || a == SC_ANS_MALFORMED || a == SC_ANS_AUTH) {
            sc_count_discarded(t, a);
            continue;
        }
        return a;
    }
}

/* The early receive (below) is skipped after this many consecutive waits
 * found nothing yet, except on every SC_EARLY_RETRY-th wait (a power of
 * two), which finds out whether the daemon has become quick again. */
#define SC_EARLY_MISSES 4u
#define SC_EARLY_RETRY  16u

sc_answer sc_wait_answer(sc_thread *t, int fd, const sc_request *req, sc_reply *reply,
                         int64_t deadline_ns)
{
    if (t->rbuf == NULL) {
        t->rbuf = malloc(SC_RECV_CAP);
        if (t->rbuf == NULL) {
            errno = ENOMEM;
            return SC_ANS_ERROR;
        }
    }
    /* The early receive: one non-blocking recv before any ppoll. A daemon
     * on the same CPU has usually answered by the time send() returns (the
     * send wakes it and it preempts us), so the answer is already queued
     * and the lookup costs two system calls (send, recv) instead of three
     * (send, ppoll, recv). A daemon on another CPU (or machine) is not that
     * quick; there the early recv is an extra system call that finds
     * nothing, so after SC_EARLY_MISSES misses in a row the thread stops
     * trying it but for every SC_EARLY_RETRY-th wait. Not taken: spinning
     * on recv for a few µs before sleeping. The CPU a spin burns is the TLS
     * server's, which is what this path must save, and a cross-CPU answer
     * here takes longer than any sensible spin: measured against sleeping,
     * spins of 15, 40 and 80 µs cost 16-26 µs more CPU per lookup (p50).
     * An answer found here is taken even when the deadline has just
     * passed: it has arrived. */
    if (t->early_misses < SC_EARLY_MISSES || (++t->early_skips & (SC_EARLY_RETRY - 1)) == 0) {
        sc_answer a = sc_drain(t, fd, req, reply);

        if (a != SC_ANS_AGAIN) {
            t->early_misses = 0;
            return a;
        }
        if (t->early_misses < SC_EARLY_MISSES)
            t->early_misses++;
    }
    /* The blocking receive: one system call that sleeps until the answer
     * comes, where ppoll() + recv() takes two (measured ~2.5 µs less CPU
     * per lookup with sessiond on another CPU of this 2-vCPU VM). It runs
     * under the socket's SO_RCVTIMEO, which is coarse (see sc_rcvtimeo_ms),
     * so only while that timer cannot outlast the deadline; when it runs
     * out, is interrupted, or a late or bad datagram arrives (discarded and
     * counted), ppoll() below waits out exactly what is left. */
    {
        unsigned rcvtimeo_ms = sc_rcvtimeo_ms(t->client->opt.timeout_ms);

        if (rcvtimeo_ms > 0 &&
            deadline_ns - sc_now_ns() >= (int64_t)(rcvtimeo_ms + SC_TICK_OVERSHOOT_MS) * 1000000) {
            sc_answer a = sc_recv_judge(t, fd, req, reply, 0);

            if (a == SC_ANS_STALE || a == SC_ANS_MALFORMED || a == SC_ANS_AUTH)
                sc_count_discarded(t, a);
            else if (a != SC_ANS_AGAIN)
                return a;
        }
    }
    for (;;) {
        int64_t left = deadline_ns - sc_now_ns();
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        struct timespec ts;
        sc_answer a;
        int rc;

        if (left <= 0)
            return SC_ANS_AGAIN;
        ts.tv_sec = (time_t)(left / 1000000000);
        ts.tv_nsec = (long)(left % 1000000000);
        rc = ppoll(&pfd, 1, &ts, NULL);
        if (rc < 0 && errno != EINTR)
            return SC_ANS_ERROR;
        if (rc <= 0)
            continue; /* interrupted, or time is up: the top of the loop decides */
        /* Late answers to earlier requests may come first. */
        a = sc_drain(t, fd, req, reply);
        if (a != SC_ANS_AGAIN)
            return a;
    }
}
