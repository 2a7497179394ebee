/* sc_antireplay.c — 0-RTT anti-replay across the cluster: an early-data
 * callback that accepts a ticket's early data only on its first sighting
 * anywhere in the cluster.
 *
 * RFC 8446 section 8 asks a server to accept a given 0-RTT handshake at
 * most once. OpenSSL does that per process only, and only for stateful
 * tickets (with max_early_data set and SSL_OP_NO_ANTI_REPLAY clear, it
 * issues stateful tickets and removes each session from its own cache on
 * first use); a ClientHello replayed to another server of the cluster, or
 * to a server using stateless tickets, is accepted again. libsessionc
 * closes both holes when opt.anti_replay is set:
 *
 * - stateful tickets: the get-session callback takes (atomic get-and-delete,
 *   PROTO_V2_TAKE) instead of getting, for TLS 1.3 (sc_ssl.c, sc_async.c),
 *   so a ticket's session can be had once from sessiond. That is not all:
 *   OpenSSL only accepts early data on a stateful ticket when it can remove
 *   the session from its internal cache, so that cache is on, and the
 *   server that issued a ticket still holds it there, where no take
 *   reaches; the record below catches a replay to that server;
 * - any ticket (stateless or stateful): the callback installed here
 *   with SSL_CTX_set_allow_early_data_cb. OpenSSL calls it only for a
 *   resumed TLS 1.3 handshake whose client offered early data the server
 *   would otherwise accept. It adds (atomic add-if-absent, PROTO_V2_ADD) a
 *   record named after the ticket: SC_OK, the first sighting, accepts;
 *   SC_EXISTS, a replay (to this server or any other), rejects; anything
 *   else (timeout, daemon or its store unreachable) rejects too: early data
 *   is never accepted unchecked. A rejection only drops the early data: the
 *   handshake goes on, and the client sends the data again after it.
 *
 * The record's name: SHA-256 over a label and the resumed session's master
 * key. In TLS 1.3 OpenSSL keeps a ticket's PSK there (derived from the
 * resumption secret and the ticket's own nonce, so it differs between any
 * two tickets, even two issued on one connection), and it is inside the
 * ticket, so every server that decrypts the same ticket computes the same
 * name. Not taken: the ticket bytes (OpenSSL does not expose the received
 * ticket to this callback), the session ID (a TLS 1.3 client's legacy
 * session ID is per ClientHello, not per ticket). The hash is one-way: the
 * name reveals nothing of the PSK. It is stored under a fixed namespace
 * ("sessionc:0-RTT:1", 16 bytes) with a 33-byte ID (0xE0 then the hash), a
 * length no session ID has, so it can never meet a session entry; fixed,
 * so servers configured with different namespaces still share the record.
 * The record lives as long as the session's timeout: OpenSSL accepts early
 * data only for a ticket within its lifetime (and within about ten seconds
 * of the age the client claims, which would allow a much shorter record;
 * not relied on, it is OpenSSL's internal rule).
 *
 * The application still decides whether 0-RTT is on at all:
 * SSL_CTX_set_max_early_data (and SSL_OP_NO_ANTI_REPLAY for stateless
 * tickets, or OpenSSL makes them stateful). The add blocks up to the
 * client's timeout, also in the event-loop mode: OpenSSL cannot suspend a
 * handshake in this callback.
 */
#include "sc_internal.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

/* The record's namespace (its first 16 bytes) and the tag byte of its ID. */
static const char sc_early_namespace[SC_NAMESPACE_LEN + 1] = "sessionc:0-RTT:1";
_Static_assert(sizeof(sc_early_namespace) == SC_NAMESPACE_LEN + 1, "a 16-byte namespace");
#define SC_EARLY_TAG    0xE0
#define SC_EARLY_ID_LEN 33

static const char sc_early_label[] = "libsessionc 0-RTT ticket";

static pthread_once_t sc_early_once = PTHREAD_ONCE_INIT;
static int sc_ctx_early_index = -1; /* SSL_CTX -> sc_client when our callback is installed */

static void sc_early_index_init(void)
{
    sc_ctx_early_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static int sc_early_index(void)
{
    pthread_once(&sc_early_once, sc_early_index_init);
    return sc_ctx_early_index;
}

/* The record ID of the resumed session's ticket. Returns 0 or -1. */
static int sc_early_id(const SSL_SESSION *sess, uint8_t id[SC_EARLY_ID_LEN])
{
    unsigned char master[SSL_MAX_MASTER_KEY_LENGTH];
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_len = 0;
    size_t master_len = SSL_SESSION_get_master_key(sess, master, sizeof(master));
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && master_len > 0 && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(md, sc_early_label, sizeof(sc_early_label)) == 1 &&
             EVP_DigestUpdate(md, master, master_len) == 1 &&
             EVP_DigestFinal_ex(md, digest, &digest_len) == 1 && digest_len == 32;

    OPENSSL_cleanse(master, sizeof(master));
    EVP_MD_CTX_free(md);
    if (!ok)
        return -1;
    id[0] = SC_EARLY_TAG;
    memcpy(id + 1, digest, 32);
    return 0;
}

/* SSL_CTX_set_allow_early_data_cb's callback: 1 accepts the early data. */
static int sc_allow_early_data_cb(SSL *ssl, void *arg)
{
    static const uint8_t seen = 1;
    sc_client *client = arg;
    SSL_SESSION *sess = SSL_get_session(ssl);
    uint8_t id[SC_EARLY_ID_LEN];
    sc_op op = {.op = PROTO_V2_ADD,
                .ns = (const uint8_t *)sc_early_namespace,
                .id = id,
                .id_len = sizeof(id),
                .value = &seen,
                .value_len = 1};
    sc_reply reply;
    sc_result r;
    long timeout;

    if (client == NULL)
        return 0;
    if (sess == NULL || !SSL_session_reused(ssl) || sc_early_id(sess, id) < 0) {
        sc_count_client(client, SC_C_EARLY_UNAVAILABLE);
        return 0;
    }
    timeout = SSL_SESSION_get_timeout(sess);
    op.ttl = timeout < 1 ? 1u : timeout > (long)UINT32_MAX ? UINT32_MAX : (unsigned)timeout;
    r = sc_run(client, &op, &reply);
    sc_reply_done(&reply);
    OPENSSL_cleanse(id, sizeof(id));
    if (r == SC_OK) {
        sc_count_client(client, SC_C_EARLY_ACCEPTED);
        return 1;
    }
    sc_count_client(client, r == SC_EXISTS ? SC_C_EARLY_REPLAYED : SC_C_EARLY_UNAVAILABLE);
    return 0;
}

int sc_antireplay_install(sc_client *client, SSL_CTX *ctx)
{
    int index = sc_early_index();

    /* Installed first: should the bookkeeping fail, early data is still
     * checked (the caller reports the failure). */
    SSL_CTX_set_allow_early_data_cb(ctx, sc_allow_early_data_cb, client);
    return index >= 0 && SSL_CTX_set_ex_data(ctx, index, client) ? 0 : -1;
}

void sc_antireplay_remove(SSL_CTX *ctx)
{
    int index = sc_early_index();

    if (index < 0 || SSL_CTX_get_ex_data(ctx, index) == NULL)
        return;
    SSL_CTX_set_allow_early_data_cb(ctx, NULL, NULL);
    SSL_CTX_set_ex_data(ctx, index, NULL);
}
