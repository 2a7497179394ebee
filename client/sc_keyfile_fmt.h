/* sc_keyfile_fmt.h — a decoded ticket-key ring written in nginx's and
 * HAProxy's own ticket-key file formats, for `sessionctl keys --format`.
 *
 * Internal to the tree: this header is not installed and these functions
 * are not part of libsessionc's ABI (they are hidden from libsessionc.so's
 * symbol table; sessionctl and the unit test link the static archive).
 *
 * Pure: no I/O, no clock (the caller passes `now`), no allocation. Writing
 * the files (atomically, only when changed) and reloading the server is
 * sessionctl's job. The output buffers hold key bytes: the caller wipes
 * them with OPENSSL_cleanse.
 *
 * How a rotating ring maps onto a fixed server configuration (details and
 * the servers' source facts in sc_keyfile_fmt.c):
 *   nginx    one 80-byte file per key (name | HMAC key | AES key); the
 *            first ssl_session_ticket_key listed encrypts. We always write
 *            sc_keyfile_nginx_slots(rotate, lifetime) files: slot 0 the
 *            current key, slot 1 the next, slots 2.. the old keys newest
 *            first; empty slots hold a copy of the current key, so every
 *            file is always a real key of the ring and slot 0 is always the
 *            key that encrypts.
 *   HAProxy  one file of base64 lines (name | AES key | HMAC key); the
 *            last TLS_TICKETS_NO (3) lines are kept, the penultimate one
 *            encrypts. We write exactly three lines: the newest old key
 *            (or a copy of the current), the current, the next.
 */
#ifndef SESSIOND_SC_KEYFILE_FMT_H
#define SESSIOND_SC_KEYFILE_FMT_H

#include <stddef.h>
#include <stdint.h>

#include "ticket_ring.h"

#pragma GCC visibility push(hidden)

/* An nginx ssl_session_ticket_key file for AES-256: exactly 80 bytes. */
#define SC_KEYFILE_NGINX_LEN 80
/* HAProxy's TLS_TICKETS_NO in a stock build: the keys it holds. */
#define SC_KEYFILE_HAPROXY_KEYS 3
/* One HAProxy line: base64 of 80 bytes (108 characters) and a newline. */
#define SC_KEYFILE_HAPROXY_LINE 109
#define SC_KEYFILE_HAPROXY_LEN  (SC_KEYFILE_HAPROXY_KEYS * SC_KEYFILE_HAPROXY_LINE)
/* Most nginx files we ever write: a ring's worth. */
#define SC_KEYFILE_NGINX_MAX_SLOTS TICKET_RING_MAX_KEYS

typedef enum sc_keyfile_status {
    SC_KEYFILE_OK = 0,
    SC_KEYFILE_NO_CURRENT = -1, /* no key of the ring encrypts at `now`: write nothing */
    SC_KEYFILE_NOSPACE = -2,    /* the output buffer is too small */
    SC_KEYFILE_INVALID = -3,    /* NULL argument, rotate 0, or too many slots */
} sc_keyfile_status;

/* The number of nginx files for a ring with these settings:
 * 2 + ceil(lifetime / rotate) (current, next, and the old keys the daemon
 * keeps), or 0 when rotate is 0 or the count exceeds
 * SC_KEYFILE_NGINX_MAX_SLOTS. It depends only on the settings, so the
 * nginx configuration stays the same from one rotation to the next. */
size_t sc_keyfile_nginx_slots(uint32_t rotate_s, uint32_t lifetime_s);

/* Orders the ring's usable keys for a server at `now` into out[0..slots):
 * out[0] the current key, out[1] the next one (the soonest, if several;
 * the current when there is none), out[2..] the old keys newest first;
 * slots left empty get the current key. Old keys that do not fit are left
 * out (the oldest first) and counted in *dropped (may be NULL). Expired keys
 * are skipped. slots must be at least 2. Returns an sc_keyfile_status. */
int sc_keyfile_order(const ticket_ring *ring, uint64_t now, size_t slots, const ticket_key **out,
                     size_t *dropped);

/* One nginx key file (80 bytes): name, HMAC key, AES key. */
void sc_keyfile_nginx_key(const ticket_key *key, uint8_t out[SC_KEYFILE_NGINX_LEN]);

/* Every nginx file for the ring at `now`: file i is
 * out[i * SC_KEYFILE_NGINX_LEN .. +SC_KEYFILE_NGINX_LEN), for i in
 * [0, *n_files); *n_files = sc_keyfile_nginx_slots(ring's settings).
 * Returns an sc_keyfile_status. */
int sc_keyfile_nginx(const ticket_ring *ring, uint64_t now, uint8_t *out, size_t cap,
                     size_t *n_files, size_t *dropped);

/* One HAProxy key (80 bytes before base64): name, AES key, HMAC key. */
void sc_keyfile_haproxy_key(const ticket_key *key, uint8_t out[SC_KEYFILE_NGINX_LEN]);

/* The HAProxy tls-ticket-keys file for the ring at `now`: three lines of
 * base64 (old or a copy of current, current, next), SC_KEYFILE_HAPROXY_LEN
 * bytes, not NUL-terminated. Old keys beyond the newest one are counted in
 * *dropped (may be NULL): HAProxy cannot hold them. Returns an
 * sc_keyfile_status. */
int sc_keyfile_haproxy(const ticket_ring *ring, uint64_t now, char *out, size_t cap, size_t *len,
                       size_t *dropped);

#pragma GCC visibility pop

#endif
