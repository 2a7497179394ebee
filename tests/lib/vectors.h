/* vectors.h — the test vectors of proto/PROTOCOL.md, read back out of the
 * spec, and the hex they are written in.
 *
 * The codec tests (check_proto.c for v1, check_proto_v2.c for v2) keep their
 * vectors as hex strings in the test source and also compare them with the
 * copies in PROTOCOL.md, so the spec and the code cannot drift apart. Every
 * function here fails the calling Check test (ck_assert) on malformed input
 * instead of returning an error: a broken vector is a broken test.
 *
 * The spec is found at $PROTOCOL_MD, or proto/PROTOCOL.md relative to the
 * working directory (tests/run.sh runs from the top of the tree).
 */
#ifndef SESSIOND_TEST_VECTORS_H
#define SESSIOND_TEST_VECTORS_H

#include <stddef.h>
#include <stdint.h>

/* Decodes hex pairs separated by blanks or newlines into out (at most cap
 * bytes); fails the test on anything else. Returns the bytes written. */
size_t tv_hex_decode(const char *hex, uint8_t *out, size_t cap);

/* Reads the whole spec into a NUL-terminated heap string (free() it);
 * fails the test if it cannot be read or is larger than 1 MiB. */
char *tv_read_spec(void);

/* The bytes of "vector NAME" in the spec text: lines "OOOO  hh hh ..." up
 * to the closing fence, each offset checked against the bytes read so far.
 * Fails the test if the vector is missing, appears twice or is malformed. */
size_t tv_spec_vector_bytes(const char *text, const char *name, uint8_t *out, size_t cap);

#endif
