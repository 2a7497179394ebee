/* keyfile.c — reads the 32-byte cluster key from a file, refusing anything
 * an operator most likely did not mean.
 *
 * How it works: the file is opened without following a symbolic link
 * (O_NOFOLLOW) and without blocking (O_NONBLOCK, so a FIFO planted at the
 * path cannot hang the daemon), then judged on its fstat: a regular file,
 * no access for group or others, and a size that is one of the two accepted
 * formats: 32 raw bytes, or 64 hex digits with an optional newline (what
 * `openssl rand -hex 32 > key` writes). Deciding on the size before reading
 * means a wrong file is refused without its bytes ever being in memory.
 * The checks all happen on the open descriptor, so a path swapped between
 * them cannot slip another file in.
 *
 * Two more refusals catch common mistakes: a 32-byte file made only of hex
 * digits is a 16-byte key in hex (`openssl rand -hex 16`, newline stripped),
 * and an all-zero key is a file filled from /dev/zero. A random 32-byte key
 * is all hex digits with probability (22/256)^32, about 1e-34.
 *
 * Every error is one line naming the file and the problem, never showing
 * key bytes. The read buffer and, on failure, the caller's key are wiped.
 *
 * Known limits: O_NOFOLLOW guards only the last path component (a symbolic
 * link to the key's directory is followed), and the file's owner is not
 * checked: the mode check is what stops other users, and a daemon that
 * drops privileges reads the key before it does.
 */
#include "keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define HEX_LEN (2 * KEYFILE_KEY_LEN)

/* "key file PATH: " + the formatted reason, into err (if any). */
static void __attribute__((format(printf, 4, 5)))
set_error(char *err, size_t errlen, const char *path, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (err == NULL || errlen == 0)
        return;
    n = snprintf(err, errlen, "key file %s: ", path);
    if (n < 0 || (size_t)n >= errlen)
        return; /* truncated: snprintf has terminated it */
    va_start(ap, fmt);
    vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
    va_end(ap);
}

static int hex_value(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Reads exactly len bytes; a file that changed size since fstat shows up
 * as a short read here or a non-empty read after. */
static int read_exactly(int fd, uint8_t *buf, size_t len)
{
    size_t got = 0;
    uint8_t extra;

    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        got += (size_t)n;
    }
    return read(fd, &extra, 1) == 0 ? 0 : -1;
}

int keyfile_load(const char *path, uint8_t key[KEYFILE_KEY_LEN], char *err, size_t errlen)
{
    uint8_t buf[HEX_LEN + 1];
    struct stat st;
    size_t size, i;
    int fd = -1, nonzero = 0, all_hex = 1;

    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL || key == NULL) {
        set_error(err, errlen, path ? path : "(null)", "no path or no key buffer given");
        return -1;
    }
    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        if (errno == ELOOP)
            set_error(err, errlen, path, "is a symbolic link; name the file itself");
        else
            set_error(err, errlen, path, "%s", strerror(errno));
        goto fail;
    }
    if (fstat(fd, &st) != 0) {
        set_error(err, errlen, path, "%s", strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        set_error(err, errlen, path, "not a regular file");
        goto fail;
    }
    if ((st.st_mode & 077) != 0) {
        set_error(err, errlen, path, "%s by group or others (mode %04o); chmod 600 it",
                  (st.st_mode & 044)   ? "readable"
                  : (st.st_mode & 022) ? "writable"
                                       : "accessible",
                  (unsigned)(st.st_mode & 07777));
        goto fail;
    }
    size = (size_t)st.st_size;
    if (size != KEYFILE_KEY_LEN && size != HEX_LEN && size != HEX_LEN + 1) {
        set_error(err, errlen, path, "%lld bytes, want %d raw bytes or %d hex digits",
                  (long long)st.st_size, KEYFILE_KEY_LEN, HEX_LEN);
        goto fail;
    }
    errno = 0; /* stays 0 when the size changed rather than read failing */
    if (read_exactly(fd, buf, size) != 0) {
        set_error(err, errlen, path, "%s",
                  errno != 0 ? strerror(errno) : "changed size while being read");
        goto fail;
    }

    if (size == KEYFILE_KEY_LEN) {
        for (i = 0; i < KEYFILE_KEY_LEN; i++) {
            nonzero |= buf[i];
            if (hex_value(buf[i]) < 0)
                all_hex = 0;
        }
        if (all_hex) {
            set_error(err, errlen, path,
                      "32 hex digits (a 16-byte key); want 64 hex digits (openssl rand -hex 32)");
            goto fail;
        }
        memcpy(key, buf, KEYFILE_KEY_LEN);
    } else {
        if (size == HEX_LEN + 1 && buf[HEX_LEN] != '\n') {
            set_error(err, errlen, path,
                      "%zu bytes but byte %d is not a newline; want %d hex digits", size,
                      HEX_LEN + 1, HEX_LEN);
            goto fail;
        }
        for (i = 0; i < KEYFILE_KEY_LEN; i++) {
            int hi = hex_value(buf[2 * i]), lo = hex_value(buf[2 * i + 1]);

            if (hi < 0 || lo < 0) {
                /* The offset, not the byte: the byte may be part of a secret. */
                set_error(err, errlen, path, "not a hex digit at offset %zu; want %d hex digits",
                          2 * i + (hi < 0 ? 0 : 1), HEX_LEN);
                goto fail;
            }
            key[i] = (uint8_t)(hi << 4 | lo);
            nonzero |= key[i];
        }
    }
    if (!nonzero) {
        set_error(err, errlen, path, "the key is all zero bytes; generate one with openssl rand");
        goto fail;
    }
    OPENSSL_cleanse(buf, sizeof buf);
    close(fd);
    return 0;

fail:
    OPENSSL_cleanse(buf, sizeof buf);
    if (key != NULL)
        OPENSSL_cleanse(key, KEYFILE_KEY_LEN);
    if (fd >= 0)
        close(fd);
    return -1;
}
