/* backend_redis_inv.c — near-cache coherence between nodes sharing a Redis:
 * del and take on one node make the other nodes drop their near copies.
 *
 * Each node keeps near copies (the daemon's local cache); a del or take on
 * one node must not be undone by another node answering from its stale
 * copy. So del and take also PUBLISH on channel "sd:inv" a message = node
 * ID (8 random bytes drawn at creation) | the key sealed as a value is (see
 * backend_redis_seal.c), with the channel name and the node ID as the
 * associated data instead of a Redis name: Redis and a sniffer see neither
 * the session ID nor the namespace. A second connection SUBSCRIBEs to the
 * channel (same address, same AUTH, its own back-off); a message from
 * another node that opens goes to the owner's invalidate hook; one that
 * does not open is counted corrupt and dropped; our own are ignored.
 *
 * put does not publish: session IDs are fresh random values, so a put
 * almost never replaces a live entry another node holds, and a replaced
 * value elsewhere is bounded by the near-cache lifetime rule dispatch
 * applies (see dispatch.c).
 *
 * Limits: Redis pub/sub is fire-and-forget, so a message sent while a
 * node's subscription is down is lost to that node (the same lifetime rule
 * bounds the damage); a replayed message only costs a near-cache miss; the
 * publish is pipelined right behind the del or take on the data connection,
 * and sent whatever they found (an entry gone from Redis may still be near
 * elsewhere). A failed publish costs only the other nodes' coherence: it
 * is counted as an error, not reported to the caller.
 */
#include <string.h>

#include <openssl/crypto.h>

#include "backend_redis_int.h"

/* channel || node ID: what an invalidation message is bound to. */
static void inv_aad(const uint8_t node_id[NODE_ID_LEN], uint8_t out[INV_AAD_LEN])
{
    memcpy(out, INV_CHANNEL, INV_CHANNEL_LEN);
    memcpy(out + INV_CHANNEL_LEN, node_id, NODE_ID_LEN);
}

/* --- publishing ---------------------------------------------------------- */

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
void br_publish_invalidation(backend_redis *r, const uint8_t *key, size_t key_len)
{
    uint8_t msg[INV_MAX], aad[INV_AAD_LEN];
    size_t len = NODE_ID_LEN + key_len + BACKEND_REDIS_SEAL_OVERHEAD;
    memcpy(msg, r->node_id, NODE_ID_LEN);
    inv_aad(r->node_id, aad);
    if (br_seal_bytes(r, aad, sizeof(aad), key, key_len, msg + NODE_ID_LEN) != 0) {
        r->stats.errors++;
        return;
    }
    const char *argv[3] = {"PUBLISH", INV_CHANNEL, (const char *)msg};
    size_t lens[3] = {7, INV_CHANNEL_LEN, len};
    if (redisAsyncCommandArgv(r->ac, on_publish, r, 3, argv, lens) == REDIS_OK)
        r->stats.invalidations_sent++;
}

/* --- the invalidation subscription ---------------------------------------- */

static void inv_schedule(backend_redis *r)
{
    if (r->freeing)
        return;
    br_arm_timer(r->inv_timer, r->inv_backoff_ms);
    r->inv_backoff_ms = br_next_backoff(r->inv_backoff_ms, r->cfg.backoff_max_ms);
}

void br_inv_drop(backend_redis *r)
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
        !br_sealed_shape_ok(r, msg + NODE_ID_LEN, len - NODE_ID_LEN, BACKEND_MAX_KEY)) {
        r->stats.corrupt++;
        return;
    }
    if (memcmp(msg, r->node_id, NODE_ID_LEN) == 0)
        return; /* our own: the caller already dropped its near copy */
    inv_aad(msg, aad);
    long key_len = br_open_bytes(r, aad, sizeof(aad), msg + NODE_ID_LEN, len - NODE_ID_LEN, key);
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
        br_auth_accepted(r, ac, reply_ptr);
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

void br_inv_start(backend_redis *r)
{
    char why[128];
    if (r->freeing || !r->have_master || r->inv_ac)
        return;
    redisAsyncContext *ac =
        br_open_async(r, &r->master, on_inv_connect, on_inv_disconnect, why, sizeof(why));
    if (!ac) {
        inv_schedule(r);
        return;
    }
    r->inv_ac = ac;
    r->inv_state = ST_CONNECTING;
    if (br_send_auth(r, ac, on_inv_auth) != 0 ||
        redisAsyncCommand(ac, on_inv_message, NULL, "SUBSCRIBE %s", INV_CHANNEL) != REDIS_OK) {
        br_inv_drop(r);
        inv_schedule(r);
        return;
    }
    br_arm_timer(r->inv_timer, r->cfg.connect_timeout_ms);
}

void br_on_inv_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    backend_redis *r = arg;
    if (r->inv_state == ST_CONNECTING) { /* no subscription in time */
        br_inv_drop(r);
        inv_schedule(r);
    } else if (r->inv_state == ST_DOWN && !r->inv_ac) {
        br_inv_start(r);
    }
}
