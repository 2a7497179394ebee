/* sessionctl.c — look at and change what a sessiond holds, from the shell.
 *
 *   sessionctl [-s servers] [-t timeout_ms] [-x] get ID
 *   sessionctl [-s servers] put ID [FILE|-] [-T ttl]
 *   sessionctl [-s servers] del ID
 *
 * A thin front end on libsessionc: one client, one operation, an exit code
 * a script can branch on (0 found/sent, 1 not found, 2 no usable answer,
 * 64 usage, 65 bad input data, 66 unreadable input file, 74 output error).
 * ID is the session ID in hex (1 to 32 bytes), as OpenSSL prints it.
 * Values are session bytes, i.e. secrets: they go only where asked (stdout
 * or the datagram) and are wiped from memory before exit.
 *
 * v1 has no acknowledgement: put and del exit 0 once the datagram is sent,
 * which does not prove a daemon stored or removed anything (use get).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "proto.h"
#include "sessionc.h"

#define EXIT_FOUND     0
#define EXIT_NOT_FOUND 1
#define EXIT_NO_ANSWER 2
#define EXIT_USAGE     64
#define EXIT_DATAERR   65
#define EXIT_NOINPUT   66
#define EXIT_IOERR     74

#define SC_ID_MAX 32
#define MAX_TTL   64800u

static const char usage_text[] =
    "usage: sessionctl [-s servers] [-t timeout_ms] [-x] get ID\n"
    "       sessionctl [-s servers] put ID [FILE|-] [-T ttl]\n"
    "       sessionctl [-s servers] del ID\n"
    "       sessionctl -h | -V\n"
    "\n"
    "  -s, --servers LIST   host[:port][,host[:port]...] (default 127.0.0.1:54321)\n"
    "  -t, --timeout MS     how long get waits for an answer (default 200)\n"
    "  -x, --hex            get: print the value in hex instead of raw bytes\n"
    "  -T, --ttl SECONDS    put: lifetime, 0..64800 (default 0: the daemon's maximum)\n"
    "  -h, --help           this text\n"
    "  -V, --version        the version\n"
    "\n"
    "ID is 1 to 32 bytes in hex. Exit: 0 found/sent, 1 not found, 2 no answer,\n"
    "64 usage, 65 bad input data, 66 unreadable input, 74 output error.\n"
    "put and del get no acknowledgement in v1: 0 means sent.\n";

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

static int parse_id(const char *hex, uint8_t *id, size_t *id_len)
{
    size_t len = strlen(hex);

    if (len == 0 || len % 2 != 0 || len / 2 > SC_ID_MAX)
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
    size_t cap = PROTO_V1_MAX_VALUE, len = 0;
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
        fprintf(stderr, "sessionctl: value too large (at most %u bytes in one datagram)\n",
                (unsigned)PROTO_V1_MAX_VALUE);
        rc = EXIT_DATAERR;
    }
    if (in != stdin)
        fclose(in);
    *len = n;
    return rc;
}

static int do_put(sc_client *client, const uint8_t *id, size_t id_len, const char *path,
                  unsigned ttl)
{
    size_t cap = PROTO_V1_MAX_VALUE + 1, len = 0;
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
    r = sc_put(client, id, id_len, buf, len, ttl);
    rc = r == SC_OK ? EXIT_FOUND : report("put", r, 0);

done:
    OPENSSL_cleanse(buf, cap);
    free(buf);
    return rc;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"servers", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'},
        {"hex", no_argument, NULL, 'x'},
        {"ttl", required_argument, NULL, 'T'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *servers = "127.0.0.1:54321", *cmd, *ttl_arg = NULL;
    unsigned long timeout_ms = 200, ttl = 0;
    uint8_t id[SC_ID_MAX];
    size_t id_len = 0;
    int hex = 0, opt, rc, nargs;
    sc_options options;
    sc_client *client;
    char err[256];

    opterr = 0; /* our own one-line messages */
    while ((opt = getopt_long(argc, argv, ":s:t:xT:hV", longopts, NULL)) != -1) {
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
        return usage_error("missing command: get, put or del");
    cmd = argv[optind];
    nargs = argc - optind - 1;
    if (strcmp(cmd, "get") != 0 && strcmp(cmd, "put") != 0 && strcmp(cmd, "del") != 0)
        return usage_error("unknown command '%s'", cmd);
    if (nargs < 1)
        return usage_error("missing ID after %s", cmd);
    if (nargs > (strcmp(cmd, "put") == 0 ? 2 : 1))
        return usage_error("too many arguments for %s", cmd);
    if (hex && strcmp(cmd, "get") != 0)
        return usage_error("-x only applies to get");
    if (ttl_arg != NULL && strcmp(cmd, "put") != 0)
        return usage_error("-T only applies to put");
    if (parse_id(argv[optind + 1], id, &id_len) < 0)
        return usage_error("bad ID '%s': 1 to 32 bytes in hex", argv[optind + 1]);

    sc_options_init(&options);
    options.timeout_ms = (unsigned)timeout_ms;
    client = sc_client_new(servers, &options, err, sizeof(err));
    if (client == NULL) {
        fprintf(stderr, "sessionctl: %s\n", err);
        return EXIT_USAGE;
    }
    if (strcmp(cmd, "get") == 0) {
        rc = do_get(client, id, id_len, hex, (unsigned)timeout_ms);
    } else if (strcmp(cmd, "put") == 0) {
        rc = do_put(client, id, id_len, nargs == 2 ? argv[optind + 2] : NULL, (unsigned)ttl);
    } else {
        sc_result r = sc_remove(client, id, id_len);

        rc = r == SC_OK ? EXIT_FOUND : report("del", r, 0);
    }
    sc_client_free(client);
    OPENSSL_cleanse(id, sizeof(id));
    return rc;
}
