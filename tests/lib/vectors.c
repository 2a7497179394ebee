/* vectors.c — reading the test vectors of proto/PROTOCOL.md and decoding
 * their hex, shared by the v1 and v2 codec tests (see vectors.h).
 *
 * The vectors sit in the spec as fenced blocks introduced by a line
 * "vector NAME", each line an offset of four hex digits and then hex byte
 * pairs. The parser is strict on purpose (offsets must count up exactly, a
 * name must appear once) so a hand edit of the spec that garbles a vector
 * fails the tests instead of comparing against fewer bytes. The whole file
 * is read into memory (it is a few tens of kB) rather than streamed: simpler,
 * and the 1 MiB cap says so if that ever stops being true.
 */
#include "vectors.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t tv_hex_decode(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;

    while (*hex) {
        int hi, lo;

        if (*hex == ' ' || *hex == '\n') {
            hex++;
            continue;
        }
        hi = hex_digit(hex[0]);
        lo = hex[1] ? hex_digit(hex[1]) : -1;
        ck_assert_msg(hi >= 0 && lo >= 0, "bad hex near \"%.8s\"", hex);
        ck_assert_uint_lt(n, cap);
        out[n++] = (uint8_t)(hi << 4 | lo);
        hex += 2;
    }
    return n;
}

char *tv_read_spec(void)
{
    const char *path = getenv("PROTOCOL_MD") ? getenv("PROTOCOL_MD") : "proto/PROTOCOL.md";
    FILE *f = fopen(path, "r");
    size_t cap = 1 << 20, len;
    char *text;

    ck_assert_msg(f != NULL, "cannot open %s (run from the top of the tree or set PROTOCOL_MD)",
                  path);
    text = malloc(cap);
    ck_assert_ptr_nonnull(text);
    len = fread(text, 1, cap - 1, f);
    ck_assert_msg(!ferror(f) && feof(f), "%s: read error or larger than 1 MiB", path);
    fclose(f);
    text[len] = '\0';
    return text;
}

size_t tv_spec_vector_bytes(const char *text, const char *name, uint8_t *out, size_t cap)
{
    char marker[64];
    const char *p;
    size_t n = 0;

    snprintf(marker, sizeof marker, "\nvector %s\n", name);
    p = strstr(text, marker);
    ck_assert_msg(p != NULL, "PROTOCOL.md has no \"vector %s\"", name);
    ck_assert_msg(strstr(p + 1, marker) == NULL, "PROTOCOL.md has \"vector %s\" twice", name);
    p += strlen(marker);
    while (strncmp(p, "```", 3) != 0) {
        const char *eol = strchr(p, '\n');
        unsigned long offset;
        char line[128], *end;

        ck_assert_msg(eol != NULL && (size_t)(eol - p) < sizeof line,
                      "vector %s: unterminated or overlong line", name);
        memcpy(line, p, (size_t)(eol - p));
        line[eol - p] = '\0';
        offset = strtoul(line, &end, 16);
        ck_assert_msg(end == line + 4 && offset == n, "vector %s: bad offset in \"%s\"", name,
                      line);
        n += tv_hex_decode(end, out + n, cap - n);
        p = eol + 1;
    }
    return n;
}
