/* fuzz_ticket_ring.c — libFuzzer harness for the ticket-key ring's decoder
 * (proto/ticket_ring.c), the one parser libsessionc and sessionctl run on
 * what a daemon sends in a KEYS answer.
 *
 * How it works: every input is decoded. What decodes must encode back to the
 * input byte for byte, and the state and lookup functions must agree with
 * each other at a few instants taken from the input itself (the current key
 * is found by name and is in state "current"; a key found by name is not
 * expired). What fails to decode must leave the ring wiped. Any broken rule
 * aborts, which libFuzzer reports with the input.
 *
 * Build and run: `make build/fuzz/fuzz_ticket_ring`, `make fuzz-smoke`.
 */
#include "proto.h"
#include "proto_v2.h"
#include "ticket_ring.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static ticket_ring ring;
static uint8_t out[TICKET_RING_MAX_LEN];

static void require(int condition)
{
    if (!condition)
        abort();
}

static int all_zero(const void *p, size_t len)
{
    const uint8_t *b = p;

    for (size_t i = 0; i < len; i++)
        if (b[i] != 0)
            return 0;
    return 1;
}

/* The lookups agree with the states at `now`. */
static void check_at(uint64_t now)
{
    const ticket_key *cur = ticket_ring_current(&ring, now);

    if (cur != NULL) {
        require(ticket_key_state_at(&ring, cur, now) == TICKET_KEY_CURRENT);
        require(ticket_ring_find(&ring, cur->name, now) == cur);
    }
    for (size_t i = 0; i < ring.n_keys; i++) {
        const ticket_key *k = ticket_ring_find(&ring, ring.keys[i].name, now);

        if (k != NULL)
            require(ticket_key_state_at(&ring, k, now) != TICKET_KEY_EXPIRED);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len = 0;

    memset(&ring, 0xa5, sizeof(ring));
    if (ticket_ring_decode(data, size, &ring) != PROTO_OK) {
        require(all_zero(&ring, sizeof(ring)));
        return 0;
    }
    require(ring.n_keys <= TICKET_RING_MAX_KEYS);
    require(ticket_ring_encode(&ring, out, sizeof(out), &len) == PROTO_OK);
    require(len == size && memcmp(out, data, size) == 0);
    check_at(ring.generated_at);
    for (size_t i = 0; i < ring.n_keys && i < 4; i++) {
        check_at(ring.keys[i].not_before);
        check_at(ring.keys[i].not_after);
        check_at(ring.keys[i].not_after + ring.lifetime_s);
    }
    return 0;
}
