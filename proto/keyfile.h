/* keyfile.h — loading the cluster key from a file, with the same rules for
 * the daemon, the library and sessionctl.
 *
 * The one file in proto/ that touches the filesystem: the rules for what a
 * key file may look like are part of the protocol's contract with operators.
 * A key file holds exactly 32 random bytes, raw or as 64 hex digits (an
 * optional trailing newline is allowed), e.g. `openssl rand -hex 32 > key`,
 * and must not be readable or writable by group or others.
 */
#ifndef SESSIOND_KEYFILE_H
#define SESSIOND_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#define KEYFILE_KEY_LEN 32

/* Returns 0 and fills key, or -1 with a one-line reason in err naming the
 * file ("key file /etc/x: readable by group or others (mode 0644); chmod 600 it").
 * Whatever was read is wiped before returning. */
int keyfile_load(const char *path, uint8_t key[KEYFILE_KEY_LEN], char *err, size_t errlen);

#endif
