/* sessionctl.c — look at and change what a sessiond holds, from the shell.
 *
 *   sessionctl [options] get ID
 *   sessionctl [options] put ID [FILE|-]
 *   sessionctl [options] del ID
 *   sessionctl [options] ping | stats
 *   sessionctl [options] keys [--format nginx|haproxy --out PATH [--reload CMD]]
 *
 * A thin front end on libsessionc: one client, one operation, an exit code
 * a script can branch on (0 found/stored/removed/answered, 1 not found,
 * 2 no usable answer, 3 refused by the daemon, 64 usage, 65 bad input data,
 * 66 unreadable input or key file, 74 output error, 75 reload command
 * failed). ID is the session ID
 * in hex, as OpenSSL prints it. Values are session bytes, i.e. secrets: they
 * go only where asked (stdout or the datagram) and are wiped from memory
 * before exit.
 *
 * Protocol 2 (the default) acknowledges: put and del wait for the daemon's
 * answer, so their exit codes say what happened. Keys there live in a
 * namespace: -n gives it in hex, -C derives it from a session-ID context the
 * way libsessionc does for an SSL_CTX, so an operator can look up exactly
 * what a server stored; neither means the all-zero namespace. With -1
 * (stunnel's protocol) put and del are fire and forget: 0 means sent.
 *
 * keys fetches the daemon's session-ticket key ring (sealed only) and either
 * lists it (names shortened, states, times: never key bytes) or writes it as
 * nginx or HAProxy key files (client/sc_keyfile_fmt.c decides the layout).
 * Writing is made for a timer: each file is replaced atomically (temp file
 * in the same directory, fsync, rename, mode 0600) and only when its bytes
 * changed, and the reload command runs only after a change. A reload that
 * failed leaves PATH.reload-pending behind, so the next run retries it even
 * though the files are unchanged by then (else a server could keep stale
 * keys until the next rotation). A fetch that fails leaves every file as it
 * was. The ring is a secret: it is wiped before exit, and the process makes
 * itself non-dumpable while it holds it.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "keyfile.h"
#include "proto.h"
#include "proto_v2.h"
#include "sc_keyfile_fmt.h"
#include "sessionc.h"
#include "ticket_ring.h"

#define EXIT_FOUND     0
#define EXIT_NOT_FOUND 1
#define EXIT_NO_ANSWER 2
#define EXIT_REFUSED   3
#define EXIT_USAGE     64
#define EXIT_DATAERR   65
#define EXIT_NOINPUT   66
#define EXIT_IOERR     74
#define EXIT_TEMPFAIL  75

#define SC_ID_MAX_V1 32
#define MAX_TTL      64800u
#define STATS_MAX    4096

static const char usage_text[] =
    "usage: sessionctl [options] get ID\n"
    "       sessionctl [options] put ID [FILE|-]\n"
    "       sessionctl [options] del ID\n"
    "       sessionctl [options] ping | stats\n"
    "       sessionctl -k FILE [options] keys [--format nginx|haproxy --out PATH\n"
    "                                          [--reload COMMAND]]\n"
    "       sessionctl -h | -V\n"
    "\n"
    "  -s, --servers LIST      host[:port][,host[:port]...] (default 127.0.0.1:54321)\n"
    "  -t, --timeout MS        how long to wait for an answer (default 200)\n"
    "  -k, --key-file FILE     cluster key: seal every datagram (protocol 2)\n"
    "      --next-key-file FILE  during a rollover: also accept answers sealed with it\n"
    "  -n, --namespace HEX     namespace, 16 bytes in hex (default: all zero)\n"
    "  -C, --context STRING    namespace of this session-ID context (as libsessionc)\n"
    "  -1, -2                  protocol 1 (stunnel's: no namespace, no key, no\n"
    "                          acknowledgement) or 2 (default)\n"
    "  -x, --hex               get: print the value in hex instead of raw bytes\n"
    "  -T, --ttl SECONDS       put: lifetime, 0..64800 (default 0: the daemon's maximum)\n"
    "      --format FORMAT     keys: write the ring as nginx or haproxy key files\n"
    "      --out PATH          keys: where (nginx: PATH.0 current, PATH.1 next, ...)\n"
    "      --reload COMMAND    keys: run with /bin/sh -c after the files changed\n"
    "  -h, --help              this text\n"
    "  -V, --version           the version\n"
    "\n"
    "ID is 1 to 48 bytes in hex (1 to 32 with -1). Exit: 0 found/stored/removed/\n"
    "answered, 1 not found, 2 no answer, 3 refused by the daemon, 64 usage,\n"
    "65 bad input data, 66 unreadable input or key file, 74 output error,\n"
    "75 reload command failed.\n"
    "With -1, put and del get no acknowledgement: 0 means sent.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* One line on stderr naming the problem, and the usage exit code. */
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fputs("sessionctl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs(" (try -h)\n", stderr);
    return EXIT_USAGE;
}

/* How getopt's offending option was spelled: "-q" for a short one (which
 * may sit inside a group like "-xq"), the word itself for a long one. */
static const char *option_name(int short_opt, const char *word)
{
    static char name[3];

    if (short_opt == 0)
        return word;
    name[0] = '-';
    name[1] = (char)short_opt;
    name[2] = '\0';
    return name;
}

/* Parses a decimal number in [0, max]; 0 on success. */
static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > max)
            return -1;
    }
    if (p == s || *p != '\0')
        return -1;
    *out = v;
    return 0;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Parses 1..max bytes of hex. */
static int parse_hex(const char *hex, uint8_t *id, size_t max, size_t *id_len)
{
    size_t len = strlen(hex);

    if (len == 0 || len % 2 != 0 || len / 2 > max)
        return -1;
    for (size_t i = 0; i < len / 2; i++) {
        int hi = hex_digit(hex[2 * i]), lo = hex_digit(hex[2 * i + 1]);

        if (hi < 0 || lo < 0)
            return -1;
        id[i] = (uint8_t)(hi << 4 | lo);
    }
    *id_len = len / 2;
    return 0;
}

/* Exit code and message for a result that is not a success. */
static int report(const char *op, sc_result r, unsigned timeout_ms)
{
    switch (r) {
    case SC_NOT_FOUND:
        fprintf(stderr, "sessionctl: not found\n");
        return EXIT_NOT_FOUND;
    case SC_TIMEOUT:
        fprintf(stderr, "sessionctl: %s: no answer within %u ms\n", op, timeout_ms);
        return EXIT_NO_ANSWER;
    case SC_SKIPPED:
        fprintf(stderr, "sessionctl: %s: every server is backed off\n", op);
        return EXIT_NO_ANSWER;
    case SC_ERR_SYSTEM:
        fprintf(stderr, "sessionctl: %s: %s\n", op, strerror(errno));
        return EXIT_NO_ANSWER;
    case SC_ERR_TOO_LARGE:
        fprintf(stderr, "sessionctl: %s: value too large for one datagram\n", op);
        return EXIT_DATAERR;
    case SC_REFUSED:
        fprintf(stderr, "sessionctl: %s: refused by the daemon\n", op);
        return EXIT_REFUSED;
    default:
        fprintf(stderr, "sessionctl: %s: %s\n", op, sc_result_name(r));
        return EXIT_NO_ANSWER;
    }
}

static int write_all(const uint8_t *buf, size_t len, int hex)
{
    static const char digits[] = "0123456789abcdef";

    if (hex) {
        for (size_t i = 0; i < len; i++)
            if (putchar(digits[buf[i] >> 4]) == EOF || putchar(digits[buf[i] & 15]) == EOF)
                return -1;
        if (putchar('\n') == EOF)
            return -1;
    } else if (len > 0 && fwrite(buf, 1, len, stdout) != len) {
        return -1;
    }
    return fflush(stdout) == 0 ? 0 : -1;
}

static int do_get(sc_client *client, const uint8_t *id, size_t id_len, int hex, unsigned timeout_ms)
{
    size_t cap = PROTO_MAX_DATAGRAM, len = 0;
    uint8_t *buf = malloc(cap);
    sc_result r;
    int rc;

    if (buf == NULL) {
        fprintf(stderr, "sessionctl: out of memory\n");
        return EXIT_NO_ANSWER;
    }
    r = sc_get(client, id, id_len, buf, cap, &len);
    if (r != SC_OK) {
        rc = report("get", r, timeout_ms);
        goto done;
    }
    rc = EXIT_FOUND;
    if (write_all(buf, len, hex) < 0) {
        fprintf(stderr, "sessionctl: cannot write the value: %s\n", strerror(errno));
        rc = EXIT_IOERR;
    }

done:
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return rc;
}

/* Reads the whole value from path ("-" or NULL: stdin). One byte more than
 * fits a datagram is read, so a too-large input is refused, not cut. */
static int read_value(const char *path, uint8_t *buf, size_t cap, size_t *len)
{
    FILE *in = stdin;
    size_t n = 0, got;
    int rc = 0;

    if (path != NULL && strcmp(path, "-") != 0) {
        in = fopen(path, "rb");
        if (in == NULL) {
            fprintf(stderr, "sessionctl: cannot open '%s': %s\n", path, strerror(errno));
            return EXIT_NOINPUT;
        }
    }
    while (n < cap && (got = fread(buf + n, 1, cap - n, in)) > 0)
        n += got;
    if (ferror(in)) {
        fprintf(stderr, "sessionctl: cannot read '%s': %s\n", path != NULL ? path : "-",
                strerror(errno));
        rc = EXIT_NOINPUT;
    } else if (n == 0) {
        fprintf(stderr, "sessionctl: empty value\n");
        rc = EXIT_DATAERR;
    } else if (n == cap) {
        fprintf(stderr, "sessionctl: value too large (at most %zu bytes in one datagram)\n",
                cap - 1);
        rc = EXIT_DATAERR;
    }
    if (in != stdin)
        fclose(in);
    *len = n;
    return rc;
}

/* put: v2 waits for the daemon's verdict, v1 only sends. */
static int do_put(sc_client *client, const uint8_t *id, size_t id_len, const char *path,
                  unsigned ttl, int protocol, unsigned timeout_ms)
{
    size_t max = protocol == 1 ? PROTO_V1_MAX_VALUE : PROTO_V2_MAX_VALUE;
    size_t cap = max + 1, len = 0;
    uint8_t *buf = malloc(cap);
    sc_result r;
    int rc;

    if (buf == NULL) {
        fprintf(stderr, "sessionctl: out of memory\n");
        return EXIT_NO_ANSWER;
    }
    rc = read_value(path, buf, cap, &len);
    if (rc != 0)
        goto done;
    r = protocol == 1 ? sc_put(client, id, id_len, buf, len, ttl)
                      : sc_put_wait(client, id, id_len, buf, len, ttl);
    rc = r == SC_OK ? EXIT_FOUND : report("put", r, timeout_ms);

done:
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return rc;
}

static int do_del(sc_client *client, const uint8_t *id, size_t id_len, int protocol,
                  unsigned timeout_ms)
{
    sc_result r =
        protocol == 1 ? sc_remove(client, id, id_len) : sc_remove_wait(client, id, id_len);

    return r == SC_OK ? EXIT_FOUND : report("del", r, timeout_ms);
}

/* ping: every listed server, one line each; 0 only if all answered. */
static int do_ping(sc_client *client, unsigned timeout_ms)
{
    int rc = EXIT_FOUND;

    for (size_t i = 0; i < sc_server_count(client); i++) {
        uint64_t rtt_ns = 0;
        sc_result r = sc_ping(client, i, &rtt_ns);

        if (r == SC_OK) {
            if (printf("%s: %.3f ms\n", sc_server_name(client, i), (double)rtt_ns / 1e6) < 0 ||
                fflush(stdout) != 0) {
                fprintf(stderr, "sessionctl: cannot write: %s\n", strerror(errno));
                return EXIT_IOERR;
            }
            continue;
        }
        fprintf(stderr, "sessionctl: ping %s: ", sc_server_name(client, i));
        if (r == SC_TIMEOUT)
            fprintf(stderr, "no answer within %u ms\n", timeout_ms);
        else
            fprintf(stderr, "%s\n", r == SC_ERR_SYSTEM ? strerror(errno) : sc_result_name(r));
        rc = EXIT_NO_ANSWER;
    }
    return rc;
}

/* stats: the daemon's stats line; prefixed with the server when several. */
static int do_stats(sc_client *client, unsigned timeout_ms)
{
    size_t n = sc_server_count(client);
    char line[STATS_MAX];
    int rc = EXIT_FOUND;

    for (size_t i = 0; i < n; i++) {
        size_t len = 0;
        sc_result r = sc_server_stats(client, i, line, sizeof(line), &len);

        if (r != SC_OK) {
            fprintf(stderr, "sessionctl: stats %s: ", sc_server_name(client, i));
            if (r == SC_TIMEOUT)
                fprintf(stderr, "no answer within %u ms\n", timeout_ms);
            else
                fprintf(stderr, "%s\n", r == SC_ERR_SYSTEM ? strerror(errno) : sc_result_name(r));
            rc = EXIT_NO_ANSWER;
            continue;
        }
        if ((n > 1 && printf("%s: ", sc_server_name(client, i)) < 0) || printf("%s\n", line) < 0 ||
            fflush(stdout) != 0) {
            fprintf(stderr, "sessionctl: cannot write: %s\n", strerror(errno));
            return EXIT_IOERR;
        }
    }
    return rc;
}

/* ---- keys: list the ticket ring, or write it as server key files ---- */

typedef enum key_format { FORMAT_NONE, FORMAT_NGINX, FORMAT_HAPROXY } key_format;

/* A key's name shortened for people: its first 4 bytes in hex. Names are
 * not secret (they travel in clear in every ticket), but 32 hex digits per
 * line would drown the states and times the operator wants to read. */
static void name_fingerprint(const ticket_key *key, char out[9])
{
    snprintf(out, 9, "%02x%02x%02x%02x", key->name[0], key->name[1], key->name[2], key->name[3]);
}

/* ISO-8601 UTC ("2026-11-24T19:00:00Z"); the plain number if gmtime fails. */
static void format_time(uint64_t t, char *out, size_t cap)
{
    time_t tt = (time_t)t;
    struct tm tm;

    if ((uint64_t)tt != t || gmtime_r(&tt, &tm) == NULL ||
        strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(out, cap, "%llu", (unsigned long long)t);
}

/* One line per key, oldest first: fingerprint, state, not_before, not_after. */
static int list_ring(const ticket_ring *ring, uint64_t now)
{
    for (size_t i = 0; i < ring->n_keys; i++) {
        const ticket_key *key = &ring->keys[i];
        char name[9], from[32], until[32];

        name_fingerprint(key, name);
        format_time(key->not_before, from, sizeof(from));
        format_time(key->not_after, until, sizeof(until));
        if (printf("%s %-7s %s %s\n", name,
                   ticket_key_state_name(ticket_key_state_at(ring, key, now)), from, until) < 0)
            goto fail;
    }
    if (fflush(stdout) == 0)
        return EXIT_FOUND;
fail:
    fprintf(stderr, "sessionctl: cannot write: %s\n", strerror(errno));
    return EXIT_IOERR;
}

/* 1 when path is a regular file of mode 0600 holding exactly data[0..len). */
static int file_matches(const char *path, const void *data, size_t len)
{
    uint8_t *buf = NULL;
    struct stat st;
    ssize_t got = 0;
    int fd, same = 0;

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return 0;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (st.st_mode & 07777) != 0600 ||
        (size_t)st.st_size != len)
        goto done;
    buf = malloc(len + 1);
    if (buf == NULL)
        goto done;
    /* One byte more than expected, so a file that grew meanwhile differs. */
    for (size_t n = 0; n <= len; n += (size_t)got) {
        got = read(fd, buf + n, len + 1 - n);
        if (got < 0 && errno == EINTR) {
            got = 0;
            continue;
        }
        if (got <= 0) {
            same = got == 0 && n == len && CRYPTO_memcmp(buf, data, len) == 0;
            break;
        }
    }

done:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, len + 1);
        free(buf);
    }
    close(fd);
    return same;
}

/* fsync of the directory holding path, so the rename survives a crash. */
static int sync_parent_dir(const char *path)
{
    char dir[4096];
    const char *slash = strrchr(path, '/');
    int fd, rc;

    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else if (slash == path)
        snprintf(dir, sizeof(dir), "/");
    else
        snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    rc = fsync(fd);
    close(fd);
    return rc;
}

/* Replaces path with data[0..len) atomically: a temporary file in the same
 * directory (so rename stays on one file system), mode 0600 from its
 * creation on, written, fsync'ed, then renamed over path. Readers see the
 * old file or the new one, never a part. Returns 0, or -1 with one line on
 * stderr (and no temporary file left behind). */
static int write_atomically(const char *path, const void *data, size_t len)
{
    char tmp[4096];
    const uint8_t *p = data;
    size_t done = 0;
    int fd = -1;

    if (snprintf(tmp, sizeof(tmp), "%s.tmpXXXXXX", path) >= (int)sizeof(tmp)) {
        fprintf(stderr, "sessionctl: keys: path too long: %s\n", path);
        return -1;
    }
    fd = mkstemp(tmp); /* O_EXCL, mode 0600 */
    if (fd < 0) {
        fprintf(stderr, "sessionctl: keys: cannot create a file next to %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    if (fchmod(fd, 0600) < 0)
        goto fail;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            goto fail;
        done += (size_t)n;
    }
    if (fsync(fd) < 0)
        goto fail;
    if (close(fd) < 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0)
        goto fail;
    if (sync_parent_dir(path) < 0) {
        fprintf(stderr, "sessionctl: keys: cannot sync the directory of %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    return 0;

fail:
    fprintf(stderr, "sessionctl: keys: cannot write %s: %s\n", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

/* Runs command with /bin/sh -c; its output goes where ours does. Returns
 * the exit status, or -1 when it could not run or died of a signal. */
static int run_command(const char *command)
{
    pid_t pid;
    int status;

    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", command, (char *)NULL);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The files of one output: nginx PATH.0 .. PATH.n-1, HAProxy PATH. */
typedef struct key_files {
    size_t count;
    size_t size;   /* bytes of each file */
    uint8_t *data; /* count * size bytes, secret */
    size_t cap;
} key_files;

static void file_path(const char *out, key_format format, size_t i, char *path, size_t cap)
{
    if (format == FORMAT_NGINX)
        snprintf(path, cap, "%s.%zu", out, i);
    else
        snprintf(path, cap, "%s", out);
}

/* Lays the ring out for the server. Returns 0, or an exit code. */
static int format_ring(const ticket_ring *ring, uint64_t now, key_format format, key_files *files)
{
    size_t dropped = 0, len = 0;
    int rc;

    files->cap = format == FORMAT_NGINX ? SC_KEYFILE_NGINX_MAX_SLOTS * SC_KEYFILE_NGINX_LEN
                                        : SC_KEYFILE_HAPROXY_LEN;
    files->data = malloc(files->cap);
    if (files->data == NULL) {
        fprintf(stderr, "sessionctl: out of memory\n");
        return EXIT_NO_ANSWER;
    }
    if (format == FORMAT_NGINX) {
        rc = sc_keyfile_nginx(ring, now, files->data, files->cap, &files->count, &dropped);
        files->size = SC_KEYFILE_NGINX_LEN;
        /* The ring never holds more old keys than the slots, unless the
         * daemon keeps keys longer than its settings say: say so. */
        if (rc == SC_KEYFILE_OK && dropped > 0)
            fprintf(stderr, "sessionctl: keys: warning: %zu old keys left out (no slot)\n",
                    dropped);
    } else {
        rc = sc_keyfile_haproxy(ring, now, (char *)files->data, files->cap, &len, &dropped);
        files->count = 1;
        files->size = len;
    }
    if (rc == SC_KEYFILE_NO_CURRENT) {
        fprintf(stderr, "sessionctl: keys: no key of the ring encrypts at this host's time "
                        "(clock far from the daemon's?); files left as they were\n");
        return EXIT_NO_ANSWER;
    }
    if (rc != SC_KEYFILE_OK) {
        fprintf(stderr,
                "sessionctl: keys: ring settings out of range (rotate %u s, lifetime %u s)\n",
                ring->rotate_s, ring->lifetime_s);
        return EXIT_NO_ANSWER;
    }
    return 0;
}

/* Writes the files that differ (the encrypting one, nginx's PATH.0, last,
 * so a reload racing with us sees the new current key only once the keys
 * beside it are in place), then runs the reload command if anything
 * changed or an earlier reload failed. */
static int write_ring(const ticket_ring *ring, uint64_t now, key_format format, const char *out,
                      const char *reload)
{
    key_files files = {0};
    char path[4096], pending[4096];
    size_t changed = 0;
    int rc, must_reload;

    if (snprintf(pending, sizeof(pending), "%s.reload-pending", out) >= (int)sizeof(pending)) {
        fprintf(stderr, "sessionctl: keys: path too long: %s\n", out);
        return EXIT_USAGE;
    }
    rc = format_ring(ring, now, format, &files);
    if (rc != 0)
        goto done;
    for (size_t i = files.count; i-- > 0;) {
        const uint8_t *data = files.data + i * files.size;

        file_path(out, format, i, path, sizeof(path));
        if (file_matches(path, data, files.size))
            continue;
        if (write_atomically(path, data, files.size) < 0) {
            rc = EXIT_IOERR;
            goto done;
        }
        changed++;
    }
    must_reload = reload != NULL && (changed > 0 || access(pending, F_OK) == 0);
    /* Marked before the command runs, so a crash in between retries too. */
    if (must_reload && write_atomically(pending, "", 0) < 0) {
        rc = EXIT_IOERR;
        goto done;
    }
    {
        const ticket_key *cur = ticket_ring_current(ring, now);
        char name[9];

        name_fingerprint(cur, name);
        if (changed > 0)
            printf("%s: %zu of %zu file%s written, current key %s\n", out, changed, files.count,
                   files.count == 1 ? "" : "s", name);
        else
            printf("%s: unchanged, current key %s\n", out, name);
    }
    rc = EXIT_FOUND;
    if (must_reload) {
        int status = run_command(reload);

        if (status != 0) {
            fprintf(stderr, "sessionctl: keys: reload command failed (%s); retried next run\n",
                    status < 0 ? "did not run or was killed" : "non-zero exit");
            rc = EXIT_TEMPFAIL;
            goto done;
        }
        unlink(pending);
        printf("%s: reloaded\n", out);
    }
    if (fflush(stdout) != 0) {
        fprintf(stderr, "sessionctl: cannot write: %s\n", strerror(errno));
        rc = EXIT_IOERR;
    }

done:
    if (files.data != NULL) {
        OPENSSL_cleanse(files.data, files.cap);
        free(files.data);
    }
    return rc;
}

/* keys: fetch, decode, then list or write. Nothing is written unless a
 * whole, decodable ring with a current key came back. */
static int do_keys(sc_client *client, key_format format, const char *out, const char *reload,
                   unsigned timeout_ms)
{
    uint8_t *buf = malloc(TICKET_RING_MAX_LEN);
    ticket_ring *ring = malloc(sizeof(*ring));
    uint64_t now = (uint64_t)time(NULL);
    size_t len = 0;
    sc_result r;
    int rc;

    /* No core dump of a process holding ticket keys (best effort). */
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    if (buf == NULL || ring == NULL) {
        fprintf(stderr, "sessionctl: out of memory\n");
        rc = EXIT_NO_ANSWER;
        goto done;
    }
    r = sc_fetch_ticket_ring(client, SIZE_MAX, buf, TICKET_RING_MAX_LEN, &len);
    if (r == SC_UNAVAILABLE) {
        fprintf(stderr, "sessionctl: keys: the daemon has no ticket ring (ticket keys off, or "
                        "not ready yet)\n");
        rc = EXIT_REFUSED;
        goto done;
    }
    if (r != SC_OK) {
        rc = report("keys", r, timeout_ms);
        goto done;
    }
    rc = ticket_ring_decode(buf, len, ring);
    if (rc != PROTO_OK) {
        fprintf(stderr, "sessionctl: keys: undecodable ticket ring (%s)\n",
                proto_status_name((proto_status)rc));
        rc = EXIT_NO_ANSWER;
        goto done;
    }
    rc = format == FORMAT_NONE ? list_ring(ring, now) : write_ring(ring, now, format, out, reload);

done:
    if (buf != NULL) {
        OPENSSL_cleanse(buf, TICKET_RING_MAX_LEN);
        free(buf);
    }
    if (ring != NULL) {
        OPENSSL_cleanse(ring, sizeof(*ring));
        free(ring);
    }
    return rc;
}

/* Reads a key file only to judge it, so a bad one gets its own exit code. */
static int check_key_file(const char *path)
{
    uint8_t key[KEYFILE_KEY_LEN];
    char err[512];
    int rc = keyfile_load(path, key, err, sizeof(err));

    OPENSSL_cleanse(key, sizeof(key));
    if (rc < 0) {
        fprintf(stderr, "sessionctl: %s\n", err);
        return EXIT_NOINPUT;
    }
    return 0;
}

static int is_command(const char *cmd)
{
    static const char *const commands[] = {"get", "put", "del", "ping", "stats", "keys"};

    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(cmd, commands[i]) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_NEXT_KEY = 256, OPT_FORMAT, OPT_OUT, OPT_RELOAD };
    static const struct option longopts[] = {
        {"servers", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'},
        {"hex", no_argument, NULL, 'x'},
        {"ttl", required_argument, NULL, 'T'},
        {"key-file", required_argument, NULL, 'k'},
        {"next-key-file", required_argument, NULL, OPT_NEXT_KEY},
        {"namespace", required_argument, NULL, 'n'},
        {"context", required_argument, NULL, 'C'},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"out", required_argument, NULL, OPT_OUT},
        {"reload", required_argument, NULL, OPT_RELOAD},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *servers = "127.0.0.1:54321", *cmd, *ttl_arg = NULL;
    const char *key_file = NULL, *next_key_file = NULL, *ns_arg = NULL, *context = NULL;
    const char *out_path = NULL, *reload = NULL;
    key_format format = FORMAT_NONE;
    unsigned long timeout_ms = 200, ttl = 0;
    uint8_t id[SC_MAX_ID_LEN];
    size_t id_len = 0, ns_len = 0;
    int hex = 0, protocol = 2, opt, rc, nargs, wants_id;
    sc_options options;
    sc_client *client;
    char err[512];

    sc_options_init(&options);
    opterr = 0; /* our own one-line messages */
    while ((opt = getopt_long(argc, argv, ":s:t:xT:k:n:C:12hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 's':
            servers = optarg;
            break;
        case 't':
            if (parse_uint(optarg, 3600000, &timeout_ms) < 0 || timeout_ms == 0)
                return usage_error("bad timeout '%s': 1..3600000 ms", optarg);
            break;
        case 'x':
            hex = 1;
            break;
        case 'T':
            if (parse_uint(optarg, MAX_TTL, &ttl) < 0)
                return usage_error("bad ttl '%s': 0..64800 s", optarg);
            ttl_arg = optarg;
            break;
        case 'k':
            key_file = optarg;
            break;
        case OPT_NEXT_KEY:
            next_key_file = optarg;
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "nginx") == 0)
                format = FORMAT_NGINX;
            else if (strcmp(optarg, "haproxy") == 0)
                format = FORMAT_HAPROXY;
            else
                return usage_error("bad format '%s': nginx or haproxy", optarg);
            break;
        case OPT_OUT:
            if (optarg[0] == '\0')
                return usage_error("empty --out path");
            out_path = optarg;
            break;
        case OPT_RELOAD:
            reload = optarg;
            break;
        case 'n':
            ns_arg = optarg;
            if (parse_hex(optarg, options.default_namespace, SC_NAMESPACE_LEN, &ns_len) < 0 ||
                ns_len != SC_NAMESPACE_LEN)
                return usage_error("bad namespace '%s': 16 bytes in hex (32 digits)", optarg);
            break;
        case 'C':
            context = optarg;
            if (strlen(optarg) > 32)
                return usage_error("context '%s' too long: OpenSSL takes at most 32 bytes", optarg);
            break;
        case '1':
        case '2':
            protocol = opt - '0';
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        case 'V':
            printf("sessionctl %s\n", SESSIOND_VERSION);
            return 0;
        case ':':
            return usage_error("missing value for option '%s'",
                               option_name(optopt, argv[optind - 1]));
        default:
            return usage_error("unknown option '%s'", option_name(optopt, argv[optind - 1]));
        }
    }
    if (optind >= argc)
        return usage_error("missing command: get, put, del, ping, stats or keys");
    cmd = argv[optind];
    nargs = argc - optind - 1;
    if (!is_command(cmd))
        return usage_error("unknown command '%s'", cmd);
    wants_id = strcmp(cmd, "ping") != 0 && strcmp(cmd, "stats") != 0 && strcmp(cmd, "keys") != 0;
    if (wants_id && nargs < 1)
        return usage_error("missing ID after %s", cmd);
    if (nargs > (strcmp(cmd, "put") == 0 ? 2 : wants_id ? 1 : 0))
        return usage_error("too many arguments for %s", cmd);
    if (hex && strcmp(cmd, "get") != 0)
        return usage_error("-x only applies to get");
    if (ttl_arg != NULL && strcmp(cmd, "put") != 0)
        return usage_error("-T only applies to put");
    if (ns_arg != NULL && context != NULL)
        return usage_error("-n and -C both name a namespace: give one");
    if (next_key_file != NULL && key_file == NULL)
        return usage_error("--next-key-file needs --key-file");
    if ((format != FORMAT_NONE || out_path != NULL || reload != NULL) && strcmp(cmd, "keys") != 0)
        return usage_error("--format, --out and --reload only apply to keys");
    if (format != FORMAT_NONE && out_path == NULL)
        return usage_error("--format needs --out PATH");
    if (out_path != NULL && format == FORMAT_NONE)
        return usage_error("--out needs --format nginx or haproxy");
    if (reload != NULL && format == FORMAT_NONE)
        return usage_error("--reload needs --format and --out");
    if (strcmp(cmd, "keys") == 0 && protocol == 2 && key_file == NULL)
        return usage_error("keys needs --key-file: ticket keys travel only sealed");
    if (protocol == 1) {
        if (key_file != NULL)
            return usage_error("protocol 1 has no sealing: -1 and --key-file exclude each other");
        if (ns_arg != NULL || context != NULL)
            return usage_error("protocol 1 has no namespaces: -1 and -n/-C exclude each other");
        if (!wants_id)
            return usage_error("%s needs protocol 2", cmd);
    }
    if (wants_id &&
        parse_hex(argv[optind + 1], id, protocol == 1 ? SC_ID_MAX_V1 : SC_MAX_ID_LEN, &id_len) < 0)
        return usage_error("bad ID '%s': 1 to %d bytes in hex", argv[optind + 1],
                           protocol == 1 ? SC_ID_MAX_V1 : SC_MAX_ID_LEN);
    if (context != NULL &&
        sc_namespace_from_context(context, strlen(context), options.default_namespace) < 0) {
        fprintf(stderr, "sessionctl: cannot hash the context\n");
        return EXIT_NO_ANSWER;
    }
    if (key_file != NULL && (rc = check_key_file(key_file)) != 0)
        return rc;
    if (next_key_file != NULL && (rc = check_key_file(next_key_file)) != 0)
        return rc;

    options.timeout_ms = (unsigned)timeout_ms;
    options.protocol = (unsigned)protocol;
    options.key_file = key_file;
    options.next_key_file = next_key_file;
    client = sc_client_new(servers, &options, err, sizeof(err));
    if (client == NULL) {
        fprintf(stderr, "sessionctl: %s\n", err);
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "get") == 0)
        rc = do_get(client, id, id_len, hex, (unsigned)timeout_ms);
    else if (strcmp(cmd, "put") == 0)
        rc = do_put(client, id, id_len, nargs == 2 ? argv[optind + 2] : NULL, (unsigned)ttl,
                    protocol, (unsigned)timeout_ms);
    else if (strcmp(cmd, "del") == 0)
        rc = do_del(client, id, id_len, protocol, (unsigned)timeout_ms);
    else if (strcmp(cmd, "ping") == 0)
        rc = do_ping(client, (unsigned)timeout_ms);
    else if (strcmp(cmd, "keys") == 0)
        rc = do_keys(client, format, out_path, reload, (unsigned)timeout_ms);
    else
        rc = do_stats(client, (unsigned)timeout_ms);
    sc_client_free(client);
    OPENSSL_cleanse(id, sizeof(id));
    return rc;
}
