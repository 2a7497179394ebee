/* sc_keyfile_fmt.c — nginx and HAProxy ticket-key files from a ticket ring.
 *
 * sessionctl fetches the ring from sessiond and hands it here with its own
 * clock; this file only decides which key goes where and lays the bytes out.
 * No I/O, so the exact bytes are unit-tested (tests/unit/check_keyfile_fmt.c).
 *
 * What the servers expect (read in their sources; nginx 1.22 as in Debian 12
 * and current master, src/event/ngx_event_openssl.c; HAProxy 2.6 and current
 * master, src/cfgparse-ssl.c bind_parse_tls_ticket_keys and src/ssl_sock.c
 * ssl_tlsext_ticket_key_cb, include/haproxy/ssl_sock-t.h):
 *
 * nginx, `ssl_session_ticket_key FILE;` (repeatable). Each file is one key
 * of exactly 48 or 80 bytes (any other size fails the configuration). An
 * 80-byte file is name[16] | hmac_key[32] | aes_key[32] (AES-256-CBC,
 * HMAC-SHA256). Beware: a 48-byte file is name | aes | hmac, the other
 * order; we only write 80-byte files. The keys form an array in the order
 * the directives are listed; key[0] (the first file listed) encrypts every
 * ticket; any key whose name matches decrypts, and a ticket decrypted with
 * a key other than key[0] (or any ticket in TLS 1.3) is renewed under
 * key[0]. Files are read when the configuration is loaded: a new ring takes
 * effect on `nginx -s reload`.
 *
 * HAProxy, `bind ... ssl crt PEM tls-ticket-keys FILE`. The file holds one
 * key per line in base64; each decodes to 48 or 80 bytes and all must have
 * the same size. The 80-byte layout is struct tls_sess_key_256:
 * name[16] | aes_key[32] | hmac_key[32] — NOT nginx's order. (The
 * configuration manual does not spell the order out; the struct does.) At
 * least TLS_TICKETS_NO (3 in a stock build) lines are required; line i is
 * stored in slot i % 3, so only the last three lines survive, and the
 * encrypting slot is that of the penultimate line ("i -= 2"). Decryption
 * tries the three slots, returning 2 (renew) for any but the encrypting one.
 * Read when the configuration is loaded: a new ring takes effect on reload.
 *
 * Mapping a rotating ring onto a fixed configuration:
 *   - nginx lists its files in its configuration, so their number must not
 *     change from one rotation to the next: we always write
 *     2 + ceil(lifetime / rotate) files, the most keys the daemon's ring
 *     holds (sessiond/ticket_keys.h: slots c - ceil(lifetime/rotate) .. c+1).
 *     PATH.0 is the current key, so it must be the first directive; PATH.1
 *     the next key (decrypt-only: a server that reloaded late still reads
 *     tickets from one that switched already); PATH.2.. old keys newest
 *     first. A slot with no key (a young ring, or no next key) holds a copy
 *     of the current key: never a made-up key, so whichever file an
 *     operator lists first, a server only ever encrypts with a key every
 *     other server has. (Random filler would be a key nobody else knows, and
 *     would change the files on every run, reloading nginx for nothing.)
 *   - HAProxy keeps three keys, so the file is exactly three lines: the
 *     newest old key (or a copy of the current), the current (penultimate
 *     line: encrypts), the next (last line). HAProxy therefore decrypts a
 *     ticket only while its key is current or just retired: between one and
 *     two rotate periods after it was issued (1-2 h with the defaults), not
 *     the ring's lifetime. Raise --ticket-rotate for longer HAProxy
 *     resumption, or build HAProxy with a larger TLS_TICKETS_NO (then the
 *     layout here would need more lines; not done, a stock build is the
 *     target).
 *   - Which key is current is judged by the caller's clock. A little skew
 *     against the daemon is harmless: the next key is in every file at
 *     least one refresh before it encrypts anywhere.
 */
#include "sc_keyfile_fmt.h"

#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

size_t sc_keyfile_nginx_slots(uint32_t rotate_s, uint32_t lifetime_s)
{
    uint64_t old_keys, slots;

    if (rotate_s == 0)
        return 0;
    old_keys = ((uint64_t)lifetime_s + rotate_s - 1) / rotate_s;
    slots = old_keys + 2;
    return slots > SC_KEYFILE_NGINX_MAX_SLOTS ? 0 : (size_t)slots;
}

int sc_keyfile_order(const ticket_ring *ring, uint64_t now, size_t slots, const ticket_key **out,
                     size_t *dropped)
{
    const ticket_key *current, *next = NULL;
    size_t filled = 2, lost = 0;

    if (ring == NULL || out == NULL || slots < 2 || ring->n_keys > TICKET_RING_MAX_KEYS)
        return SC_KEYFILE_INVALID;
    current = ticket_ring_current(ring, now);
    if (current == NULL)
        return SC_KEYFILE_NO_CURRENT;
    /* The ring is ordered oldest first, so walking it backwards yields the
     * old keys newest first; the soonest next key is the last one seen. */
    for (size_t i = ring->n_keys; i-- > 0;) {
        const ticket_key *key = &ring->keys[i];

        switch (ticket_key_state_at(ring, key, now)) {
        case TICKET_KEY_NEXT:
            next = key;
            break;
        case TICKET_KEY_OLD:
            if (filled < slots)
                out[filled++] = key;
            else
                lost++;
            break;
        default: /* the current key (placed below) and expired ones */
            break;
        }
    }
    out[0] = current;
    out[1] = next != NULL ? next : current;
    while (filled < slots)
        out[filled++] = current;
    if (dropped != NULL)
        *dropped = lost;
    return SC_KEYFILE_OK;
}

void sc_keyfile_nginx_key(const ticket_key *key, uint8_t out[SC_KEYFILE_NGINX_LEN])
{
    memcpy(out, key->name, TICKET_NAME_LEN);
    memcpy(out + TICKET_NAME_LEN, key->hmac_key, TICKET_HMAC_LEN);
    memcpy(out + TICKET_NAME_LEN + TICKET_HMAC_LEN, key->aes_key, TICKET_AES_LEN);
}

void sc_keyfile_haproxy_key(const ticket_key *key, uint8_t out[SC_KEYFILE_NGINX_LEN])
{
    memcpy(out, key->name, TICKET_NAME_LEN);
    memcpy(out + TICKET_NAME_LEN, key->aes_key, TICKET_AES_LEN);
    memcpy(out + TICKET_NAME_LEN + TICKET_AES_LEN, key->hmac_key, TICKET_HMAC_LEN);
}

int sc_keyfile_nginx(const ticket_ring *ring, uint64_t now, uint8_t *out, size_t cap,
                     size_t *n_files, size_t *dropped)
{
    const ticket_key *order[SC_KEYFILE_NGINX_MAX_SLOTS];
    size_t slots;
    int rc;

    if (ring == NULL || out == NULL || n_files == NULL)
        return SC_KEYFILE_INVALID;
    slots = sc_keyfile_nginx_slots(ring->rotate_s, ring->lifetime_s);
    if (slots == 0)
        return SC_KEYFILE_INVALID;
    if (cap < slots * SC_KEYFILE_NGINX_LEN)
        return SC_KEYFILE_NOSPACE;
    rc = sc_keyfile_order(ring, now, slots, order, dropped);
    if (rc != SC_KEYFILE_OK)
        return rc;
    for (size_t i = 0; i < slots; i++)
        sc_keyfile_nginx_key(order[i], out + i * SC_KEYFILE_NGINX_LEN);
    *n_files = slots;
    return SC_KEYFILE_OK;
}

int sc_keyfile_haproxy(const ticket_ring *ring, uint64_t now, char *out, size_t cap, size_t *len,
                       size_t *dropped)
{
    /* Line order: the slot of sc_keyfile_order that goes on each line. */
    static const size_t line_slot[SC_KEYFILE_HAPROXY_KEYS] = {2, 0, 1};
    const ticket_key *order[SC_KEYFILE_HAPROXY_KEYS];
    uint8_t raw[SC_KEYFILE_NGINX_LEN];
    /* EVP_EncodeBlock writes 4 * ceil(80 / 3) = 108 characters and a NUL. */
    unsigned char line[SC_KEYFILE_HAPROXY_LINE + 3];
    int rc;

    if (ring == NULL || out == NULL || len == NULL)
        return SC_KEYFILE_INVALID;
    if (cap < SC_KEYFILE_HAPROXY_LEN)
        return SC_KEYFILE_NOSPACE;
    rc = sc_keyfile_order(ring, now, SC_KEYFILE_HAPROXY_KEYS, order, dropped);
    if (rc != SC_KEYFILE_OK)
        return rc;
    for (size_t i = 0; i < SC_KEYFILE_HAPROXY_KEYS; i++) {
        sc_keyfile_haproxy_key(order[line_slot[i]], raw);
        EVP_EncodeBlock(line, raw, (int)sizeof(raw));
        memcpy(out + i * SC_KEYFILE_HAPROXY_LINE, line, SC_KEYFILE_HAPROXY_LINE - 1);
        out[(i + 1) * SC_KEYFILE_HAPROXY_LINE - 1] = '\n';
    }
    OPENSSL_cleanse(raw, sizeof(raw));
    OPENSSL_cleanse(line, sizeof(line));
    *len = SC_KEYFILE_HAPROXY_LEN;
    return SC_KEYFILE_OK;
}
