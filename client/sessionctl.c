/* sessionctl.c — look at and change what a sessiond holds, from the shell.
 *
 *   sessionctl [options] get ID
 *   sessionctl [options] put ID [FILE|-]
 *   sessionctl [options] del ID
 *   sessionctl [options] ping | stats
 *
 * A thin front end on libsessionc: one client, one operation, an exit code
 * a script can branch on (0 found/stored/removed/answered, 1 not found,
 * 2 no usable answer, 3 refused by the daemon, 64 usage, 65 bad input data,
 * 66 unreadable input or key file, 74 output error). ID is the session ID
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
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "keyfile.h"
#include "proto.h"
#include "proto_v2.h"
#include "sessionc.h"

#define EXIT_FOUND     0
#define EXIT_NOT_FOUND 1
#define EXIT_NO_ANSWER 2
#define EXIT_REFUSED   3
#define EXIT_USAGE     64
#define EXIT_DATAERR   65
#define EXIT_NOINPUT   66
#define EXIT_IOERR     74

#define SC_ID_MAX_V1 32
#define MAX_TTL      64800u
#define STATS_MAX    4096

static const char usage_text[] =
    "usage: sessionctl [options] get ID\n"
    "       sessionctl [options] put ID [FILE|-]\n"
    "       sessionctl [options] del ID\n"
    "       sessionctl [options] ping | stats\n"
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
    "  -h, --help              this text\n"
    "  -V, --version           the version\n"
    "\n"
    "ID is 1 to 48 bytes in hex (1 to 32 with -1). Exit: 0 found/stored/removed/\n"
    "answered, 1 not found, 2 no answer, 3 refused by the daemon, 64 usage,\n"
    "65 bad input data, 66 unreadable input or key file, 74 output error.\n"
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
    static const char *const commands[] = {"get", "put", "del", "ping", "stats"};

    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(cmd, commands[i]) == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    enum { OPT_NEXT_KEY = 256 };
    static const struct option longopts[] = {
        {"servers", required_argument, NULL, 's'},
        {"timeout", required_argument, NULL, 't'},
        {"hex", no_argument, NULL, 'x'},
        {"ttl", required_argument, NULL, 'T'},
        {"key-file", required_argument, NULL, 'k'},
        {"next-key-file", required_argument, NULL, OPT_NEXT_KEY},
        {"namespace", required_argument, NULL, 'n'},
        {"context", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *servers = "127.0.0.1:54321", *cmd, *ttl_arg = NULL;
    const char *key_file = NULL, *next_key_file = NULL, *ns_arg = NULL, *context = NULL;
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
        return usage_error("missing command: get, put, del, ping or stats");
    cmd = argv[optind];
    nargs = argc - optind - 1;
    if (!is_command(cmd))
        return usage_error("unknown command '%s'", cmd);
    wants_id = strcmp(cmd, "ping") != 0 && strcmp(cmd, "stats") != 0;
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
    else
        rc = do_stats(client, (unsigned)timeout_ms);
    sc_client_free(client);
    OPENSSL_cleanse(id, sizeof(id));
    return rc;
}
