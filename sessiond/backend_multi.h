/* backend_multi.h — several independent backends ("groups", e.g. several
 * Redis master/replica sets) behind one backend, each key on exactly one
 * group, chosen by rendezvous (highest random weight) hashing.
 *
 * Placement depends only on the group NAMES (the targets as written, e.g.
 * "redis://10.0.0.1:6379") and the key, never on the order of the groups on
 * the command line, so every node given the same set of names agrees on
 * where each key lives. Removing a group moves only the keys that were on
 * it; adding one moves only the keys it wins (about 1/N of them). See
 * backend_multi.c for the hash and its cost.
 */
#ifndef SESSIOND_BACKEND_MULTI_H
#define SESSIOND_BACKEND_MULTI_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Takes n >= 1 groups and their names (distinct, non-empty; copied) and
 * OWNS the groups from then on, whatever the outcome: on success
 * backend_free of the multi frees them, on failure they are freed before
 * returning NULL (with a one-line reason in err: bad arguments, a duplicate
 * name, no memory), so a caller never has a cleanup of its own to do. Each
 * group's invalidate hook is set to forward to the multi's own hook, which
 * the owner sets afterwards with backend_set_invalidate. */
backend *backend_multi_new(backend **groups, const char *const *group_names, size_t n, char *err,
                           size_t err_cap);

/* Groups whose stats say up. For a backend that is not a multi: 1 if it is
 * up, else 0, so callers need not know which kind they hold. */
size_t backend_multi_groups_up(const backend *b);

/* Number of groups (1 for a backend that is not a multi). */
size_t backend_multi_group_count(const backend *b);

/* The index (in creation order) of the group that holds key; 0 for a bad
 * key or a backend that is not a multi. */
size_t backend_multi_place(const backend *b, const uint8_t *key, size_t key_len);

/* Group i and its name, borrowed (NULL if i is out of range or b is not a
 * multi). For per-group stats and tests. */
backend *backend_multi_group(const backend *b, size_t i);
const char *backend_multi_group_name(const backend *b, size_t i);

/* The rendezvous score of key on the group called group_name: the group
 * with the highest score holds the key. Exposed so tests and operator tools
 * can compute placement without a running daemon. */
uint64_t backend_multi_score(const char *group_name, const uint8_t *key, size_t key_len);

/* SipHash-2-4 of data under a 128-bit key (the reference algorithm; the
 * key's first 8 bytes are k0, little-endian). Exposed for the tests, which
 * check it against OpenSSL's EVP_MAC "SIPHASH". */
uint64_t backend_multi_siphash(const uint8_t key[16], const uint8_t *data, size_t len);

#endif
