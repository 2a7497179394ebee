/* config.c — sessiond's command line: defaults, getopt_long, validation.
 *
 * How it works: config_parse fills a config with the defaults, then walks
 * argv with getopt_long in "return in order" mode (optstring prefix '-'), so
 * a bare argument arrives in its place among the flags. That gives the rule
 * for the port: -p/--port and the bare port argument (stunnel-era usage,
 * `sessiond 54321`) are the same setting, and whichever comes last on the
 * command line wins, as with a repeated flag; `make run RUN_ARGS=1234` can
 * therefore override the Makefile's -p. A second bare argument is an error.
 *
 * Every refusal is one line written to `err`, naming the flag and the value
 * as given, and the parser never prints or exits: main() decides what to do,
 * and the unit tests call it again and again. getopt's own messages are off
 * (opterr = 0 and the ':' optstring prefix, which also makes a missing
 * argument return ':' rather than '?'), and its state is reset with
 * optind = 0, which glibc treats as "start over" (optind = 1 would keep a
 * half-scanned cluster such as "-fd" from a previous call).
 *
 * Limits chosen, and why:
 *   --max-memory  64k .. 1024g. Below 64 KiB a few hundred sessions fill the
 *                 cache and the daemon is useless; 1 TiB is far beyond any
 *                 session cache and keeps the cache's byte arithmetic far
 *                 from overflow. Suffixes k/m/g are powers of 1024.
 *   --max-ttl     1 .. 604800 s (7 days, TLS 1.3's limit on a ticket's
 *                 lifetime: no session is worth resuming after that).
 *                 stunnel itself never asks for more than 64800 s.
 *   --listen      numeric addresses only (inet_pton): no name lookups at
 *                 startup, so a DNS outage never stops the daemon. Known
 *                 limit: an IPv6 scope (fe80::1%eth0) is not accepted.
 *   --allow       a CIDR block (acl.c parses it, strictly), repeatable up to
 *                 ACL_MAX_RULES times per address family.
 *   --window      1 .. 3600 s. The window is how long a captured sealed
 *                 datagram can be replayed; with NTP-synchronised clocks a
 *                 few seconds would do, 30 s (the default) leaves room for
 *                 a sloppy clock, and over an hour is no protection at all.
 *   --metrics     ADDR:PORT with a numeric address, IPv6 in brackets
 *                 ("[::1]:9100"), port 0 to 65535 (0: the kernel picks,
 *                 and the daemon logs the real one). Brackets are required
 *                 for IPv6 because "::1:9100" is itself a valid address.
 *   --backend     the scheme only (redis:// or sentinel://), no password in
 *                 the URL (ps shows it; use --backend-password-file); the
 *                 rest is parsed by the Redis backend at startup. Up to 16.
 *   --backend-timeout  1 .. 10000 ms: past the client's patience (stunnel
 *                 waits ~4 ms, libsessionc 200 ms) waiting is pointless.
 *   --ticket-rotate 1 .. 86400 s; --ticket-lifetime 1 .. 604800 s (TLS 1.3
 *                 caps a ticket's lifetime at 7 days); the ring they imply
 *                 must fit TICKET_RING_MAX_KEYS keys.
 *   --user        looked up here (getpwnam) so an unknown user is a command
 *                 line error like any other; the switch itself happens in
 *                 main.c, after binding and reading the keys.
 *
 * Combinations refused after the loop, because each is a security setting
 * that would silently do nothing: --next-key-file or --allow-plaintext
 * without --key-file, and --allow-plaintext without any --allow (with a key,
 * loopback is not implied, so it would admit no one). --backend and
 * --ticket-keys need --key-file too: Redis must hold only sealed values, and
 * ticket keys only travel sealed.
 *
 * Known limit: RETURN_IN_ORDER is a GNU getopt extension (glibc and musl
 * have it); the cheaper alternative, permuting and reading the bare port
 * after the loop, would lose the "last one wins" order.
 */
#include "config.h"
#include "backend_redis.h"
#include "ticket_keys.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Values of the long-only options: above any char, so getopt cannot mix
 * them up with a short option. */
enum {
    OPT_MAX_MEMORY = 256,
    OPT_MAX_TTL,
    OPT_PIDFILE,
    OPT_KEY_FILE,
    OPT_NEXT_KEY_FILE,
    OPT_ALLOW,
    OPT_ALLOW_PLAINTEXT,
    OPT_WINDOW,
    OPT_METRICS,
    OPT_BACKEND,
    OPT_BACKEND_PASSWORD_FILE,
    OPT_BACKEND_TIMEOUT,
    OPT_TICKET_KEYS,
    OPT_TICKET_ROTATE,
    OPT_TICKET_LIFETIME,
};

/* '-': bare arguments come back in order as option 1; ':': quiet getopt,
 * and a missing argument returns ':'. */
static const char config_optstring[] = "-:p:l:fdhVu:";

static const struct option config_options[] = {
    {"port", required_argument, NULL, 'p'},
    {"listen", required_argument, NULL, 'l'},
    {"foreground", no_argument, NULL, 'f'},
    {"debug", no_argument, NULL, 'd'},
    {"max-memory", required_argument, NULL, OPT_MAX_MEMORY},
    {"max-ttl", required_argument, NULL, OPT_MAX_TTL},
    {"pidfile", required_argument, NULL, OPT_PIDFILE},
    {"key-file", required_argument, NULL, OPT_KEY_FILE},
    {"next-key-file", required_argument, NULL, OPT_NEXT_KEY_FILE},
    {"allow", required_argument, NULL, OPT_ALLOW},
    {"allow-plaintext", no_argument, NULL, OPT_ALLOW_PLAINTEXT},
    {"window", required_argument, NULL, OPT_WINDOW},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"backend-password-file", required_argument, NULL, OPT_BACKEND_PASSWORD_FILE},
    {"backend-timeout", required_argument, NULL, OPT_BACKEND_TIMEOUT},
    {"ticket-keys", no_argument, NULL, OPT_TICKET_KEYS},
    {"ticket-rotate", required_argument, NULL, OPT_TICKET_ROTATE},
    {"ticket-lifetime", required_argument, NULL, OPT_TICKET_LIFETIME},
    {"user", required_argument, NULL, 'u'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};

static const char config_usage_text[] =
    "Usage: sessiond [options] [port]\n"
    "A UDP session cache for TLS servers (stunnel's sessiond protocol).\n"
    "\n"
    "  -p, --port N          UDP port, 0 to 65535 (default 54321; 0 lets the kernel\n"
    "                        pick a free one); a bare port argument is the same, and\n"
    "                        the last one given wins\n"
    "  -l, --listen ADDR     numeric IPv4 or IPv6 address to bind (default 127.0.0.1);\n"
    "                        v1 has no authentication: keep it on a trusted interface\n"
    "  -f, --foreground      stay in the foreground and log to stderr\n"
    "                        (default: detach and log to syslog)\n"
    "  -d, --debug           log each request too (never session contents)\n"
    "      --max-memory N    cache budget in bytes, suffix k, m or g (powers of 1024),\n"
    "                        from 64k to 1024g (default 64m)\n"
    "      --max-ttl S       longest a session is kept, seconds, 1 to 604800; also the\n"
    "                        lifetime of a session stored with timeout 0 (default 86400)\n"
    "      --pidfile PATH    write the daemon's pid to PATH, removed on exit\n"
    "      --key-file FILE   cluster key (32 bytes, raw or 64 hex digits, mode 0600):\n"
    "                        sealed v2 is accepted from anywhere and answered sealed;\n"
    "                        plaintext (v1, plain v2) is refused unless --allow-plaintext\n"
    "      --next-key-file FILE  the next cluster key during a rollover: accepted\n"
    "                        for opening, never used to seal\n"
    "      --allow CIDR      a source allowed to use plaintext, e.g. 10.0.0.0/8 or\n"
    "                        fd00::/8 (repeatable); without a key, loopback is\n"
    "                        always allowed too\n"
    "      --allow-plaintext with --key-file: accept plaintext from --allow sources\n"
    "                        (for stunnel); loopback is then not implied\n"
    "      --window S        accepted clock difference for sealed datagrams, seconds,\n"
    "                        1 to 3600 (default 30)\n"
    "      --metrics ADDR:PORT  serve Prometheus metrics over HTTP at\n"
    "                        http://ADDR:PORT/metrics, e.g. 127.0.0.1:9100 or [::1]:9100\n"
    "                        (port 0: any free port; default: off)\n"
    "      --backend URL     share sessions through Redis: redis://HOST:PORT or\n"
    "                        sentinel://HOST:PORT[,HOST:PORT...]/MASTER; repeat for\n"
    "                        independent groups (keys spread by rendezvous hashing);\n"
    "                        needs --key-file (values in Redis are sealed)\n"
    "      --backend-password-file FILE  Redis AUTH password (first line, mode 0600)\n"
    "      --backend-timeout MS  a Redis operation not answered by then counts as\n"
    "                        unavailable, 1 to 10000 (default 50)\n"
    "      --ticket-keys     generate, rotate and serve TLS session-ticket keys\n"
    "                        (sealed v2 only; needs --key-file)\n"
    "      --ticket-rotate S a new ticket key encrypts every S seconds, 1 to 86400\n"
    "                        (default 3600)\n"
    "      --ticket-lifetime S  tickets stay decryptable S seconds after their key\n"
    "                        stopped encrypting, 1 to 604800 (default 43200)\n"
    "  -u, --user USER       when started as root, switch to USER after binding and\n"
    "                        reading the keys\n"
    "  -h, --help            print this help and exit\n"
    "  -V, --version         print the version and exit\n"
    "\n"
    "Signals: TERM or INT stop, HUP reopens the logs, USR1 logs the statistics.\n"
    "Exit status: 0 stopped cleanly, 1 runtime failure, 2 bad command line.\n";

const char *config_usage(void)
{
    return config_usage_text;
}

static void config_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void config_error(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Parses a plain decimal number: digits only, no sign, no spaces (strtoull
 * alone would take " 12", "+12" and "-12", the last as a huge number). */
static int config_parse_decimal(const char *text, unsigned long long max, unsigned long long *out)
{
    unsigned long long value;
    char *end;

    if (text == NULL || !isdigit((unsigned char)text[0]))
        return -1;
    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || value > max)
        return -1;
    *out = value;
    return 0;
}

int config_parse_size(const char *text, size_t *out)
{
    unsigned long long value;
    unsigned shift = 0;
    char *end;

    if (text == NULL || !isdigit((unsigned char)text[0]))
        return -1;
    errno = 0;
    value = strtoull(text, &end, 10);
    if (errno != 0)
        return -1;
    switch (*end) {
    case '\0':
        break;
    case 'k':
    case 'K':
        shift = 10;
        break;
    case 'm':
    case 'M':
        shift = 20;
        break;
    case 'g':
    case 'G':
        shift = 30;
        break;
    default:
        return -1;
    }
    if (shift != 0 && end[1] != '\0')
        return -1;
    if (value > (unsigned long long)SIZE_MAX >> shift)
        return -1;
    *out = (size_t)(value << shift);
    return 0;
}

static int config_set_port(config *cfg, const char *text)
{
    unsigned long long port;

    if (config_parse_decimal(text, 65535, &port) != 0)
        return -1;
    cfg->port = (int)port;
    return 0;
}

static int config_set_listen(config *cfg, const char *text)
{
    struct in_addr v4;
    struct in6_addr v6;

    if (inet_pton(AF_INET, text, &v4) != 1 && inet_pton(AF_INET6, text, &v6) != 1)
        return -1;
    cfg->listen_addr = text;
    return 0;
}

static int config_set_max_memory(config *cfg, const char *text)
{
    size_t bytes;

    if (config_parse_size(text, &bytes) != 0)
        return -1;
    if (bytes < CONFIG_MIN_MAX_MEMORY || (unsigned long long)bytes > CONFIG_MAX_MAX_MEMORY)
        return -1;
    cfg->max_memory = bytes;
    return 0;
}

static int config_set_window(config *cfg, const char *text)
{
    unsigned long long seconds;

    if (config_parse_decimal(text, CONFIG_MAX_WINDOW, &seconds) != 0 || seconds == 0)
        return -1;
    cfg->window_s = (uint32_t)seconds;
    return 0;
}

/* "127.0.0.1:9100" or "[::1]:9100" into cfg->metrics_addr and
 * metrics_port. Returns 0, or -1 with the reason (no flag, no value) in
 * why: the caller adds both. */
static int config_set_metrics(config *cfg, const char *text, const char **why)
{
    char host[INET6_ADDRSTRLEN];
    const char *host_start = text;
    const char *port_text;
    size_t host_len;
    unsigned long long port;
    int v6 = text[0] == '[';
    struct in6_addr addr6;
    struct in_addr addr4;

    if (v6) {
        const char *bracket = strchr(text, ']');

        if (bracket == NULL || bracket[1] != ':') {
            *why = "expected [IPv6]:PORT";
            return -1;
        }
        host_start = text + 1;
        host_len = (size_t)(bracket - host_start);
        port_text = bracket + 2;
    } else {
        const char *colon = strrchr(text, ':');

        if (colon == NULL) {
            *why = "expected ADDR:PORT";
            return -1;
        }
        if (memchr(text, ':', (size_t)(colon - text)) != NULL) {
            *why = "an IPv6 address goes in brackets, e.g. [::1]:9100";
            return -1;
        }
        host_len = (size_t)(colon - text);
        port_text = colon + 1;
    }
    if (host_len == 0 || host_len >= sizeof(host)) {
        *why = "not a numeric IPv4 or [IPv6] address";
        return -1;
    }
    memcpy(host, host_start, host_len);
    host[host_len] = '\0';
    if (v6 ? inet_pton(AF_INET6, host, &addr6) != 1 : inet_pton(AF_INET, host, &addr4) != 1) {
        *why = v6 ? "not a numeric IPv6 address in the brackets"
                  : "not a numeric IPv4 or [IPv6] address";
        return -1;
    }
    if (config_parse_decimal(port_text, 65535, &port) != 0) {
        *why = "the port is not a number from 0 to 65535";
        return -1;
    }
    memcpy(cfg->metrics_addr, host, host_len + 1);
    cfg->metrics_port = (int)port;
    cfg->metrics = text;
    return 0;
}

/* Resolves the user now, so an unknown name is refused with the other
 * flag errors. getpwnam returns NULL both for "no such user" and for a
 * lookup failure; errno tells them apart when it is set. */
static int config_set_user(config *cfg, const char *text, const char *name, char *err,
                           size_t errlen)
{
    const struct passwd *pw;

    if (text[0] == '\0') {
        config_error(err, errlen, "invalid %s '': empty user name", name);
        return -1;
    }
    errno = 0;
    pw = getpwnam(text);
    if (pw == NULL) {
        if (errno != 0 && errno != ENOENT && errno != ESRCH)
            config_error(err, errlen, "%s '%s': cannot look the user up: %s", name, text,
                         strerror(errno));
        else
            config_error(err, errlen, "%s '%s': no such user", name, text);
        return -1;
    }
    cfg->user = text;
    cfg->user_uid = pw->pw_uid;
    cfg->user_gid = pw->pw_gid;
    return 0;
}

static int config_set_allow(config *cfg, const char *text, char *err, size_t errlen)
{
    char why[192];
    size_t same_family = 0;
    acl_rule rule;

    if (acl_parse_rule(text, &rule, why, sizeof(why)) != 0) {
        config_error(err, errlen, "invalid --allow %s", why);
        return -1;
    }
    for (size_t i = 0; i < cfg->n_allow; i++)
        same_family += cfg->allow[i].family == rule.family;
    if (same_family >= ACL_MAX_RULES || cfg->n_allow >= ACL_MAX_RULES) {
        config_error(err, errlen, "too many --allow rules at '%s': at most %d", text,
                     ACL_MAX_RULES);
        return -1;
    }
    cfg->allow[cfg->n_allow++] = rule;
    return 0;
}

/* "redis://..." or "sentinel://...", checked fully here (no DNS: names
 * are resolved when the daemon starts). */
static int config_add_backend(config *cfg, const char *text, char *err, size_t errlen)
{
    char why[256];

    if (strncmp(text, "redis://", 8) != 0 && strncmp(text, "sentinel://", 11) != 0) {
        config_error(err, errlen,
                     "invalid --backend '%s': expected redis://HOST:PORT or "
                     "sentinel://HOST:PORT[,HOST:PORT...]/MASTER",
                     text);
        return -1;
    }
    if (strchr(text, '@') != NULL) {
        config_error(err, errlen,
                     "invalid --backend '%s': no password in the URL (it would show in ps); "
                     "use --backend-password-file",
                     text);
        return -1;
    }
    if (backend_redis_check_target(text, why, sizeof(why)) != 0) {
        config_error(err, errlen, "invalid --backend: %s", why);
        return -1;
    }
    for (size_t i = 0; i < cfg->n_backends; i++) {
        if (strcmp(cfg->backends[i], text) == 0) {
            config_error(err, errlen, "--backend '%s' given twice", text);
            return -1;
        }
    }
    if (cfg->n_backends >= CONFIG_MAX_BACKENDS) {
        config_error(err, errlen, "too many --backend groups at '%s': at most %d", text,
                     CONFIG_MAX_BACKENDS);
        return -1;
    }
    cfg->backends[cfg->n_backends++] = text;
    return 0;
}

/* A number of seconds (or ms) from 1 to max for a flag, or a one-line error. */
static int config_set_u32(const char *flag, const char *text, unsigned long long max,
                          const char *unit, uint32_t *out, char *err, size_t errlen)
{
    unsigned long long v;

    if (config_parse_decimal(text, max, &v) != 0 || v == 0) {
        config_error(err, errlen, "invalid %s '%s': not a number of %s from 1 to %llu", flag, text,
                     unit, max);
        return -1;
    }
    *out = (uint32_t)v;
    return 0;
}

/* The rules between flags, checked once all are known. */
static int config_check_combinations(const config *cfg, char *err, size_t errlen)
{
    if (cfg->n_backends > 0 && cfg->key_file == NULL) {
        config_error(err, errlen,
                     "--backend needs --key-file (values and names in Redis are sealed with the "
                     "cluster key)");
        return -1;
    }
    if (cfg->backend_password_file != NULL && cfg->n_backends == 0) {
        config_error(err, errlen, "--backend-password-file needs --backend");
        return -1;
    }
    if (cfg->ticket_keys && cfg->key_file == NULL) {
        config_error(err, errlen,
                     "--ticket-keys needs --key-file (ticket keys only travel sealed)");
        return -1;
    }
    if (cfg->ticket_keys &&
        (cfg->ticket_lifetime_s + cfg->ticket_rotate_s - 1) / cfg->ticket_rotate_s + 2 >
            TICKET_RING_MAX_KEYS) {
        config_error(err, errlen,
                     "--ticket-lifetime %u / --ticket-rotate %u needs more than %d keys in the "
                     "ring: rotate less often",
                     (unsigned)cfg->ticket_lifetime_s, (unsigned)cfg->ticket_rotate_s,
                     TICKET_RING_MAX_KEYS);
        return -1;
    }
    if (cfg->next_key_file != NULL && cfg->key_file == NULL) {
        config_error(err, errlen, "--next-key-file needs --key-file (the key that seals)");
        return -1;
    }
    if (cfg->allow_plaintext && cfg->key_file == NULL) {
        config_error(err, errlen,
                     "--allow-plaintext needs --key-file (without a key, plaintext is already "
                     "accepted from loopback and --allow sources)");
        return -1;
    }
    if (cfg->allow_plaintext && cfg->n_allow == 0) {
        config_error(err, errlen,
                     "--allow-plaintext needs at least one --allow (with a key, loopback is "
                     "not implied)");
        return -1;
    }
    return 0;
}

static int config_set_max_ttl(config *cfg, const char *text)
{
    unsigned long long seconds;

    if (config_parse_decimal(text, CONFIG_MAX_MAX_TTL, &seconds) != 0 || seconds == 0)
        return -1;
    cfg->max_ttl = (uint32_t)seconds;
    return 0;
}

/* The long option `token` ("--name" or "--name=value") names, or NULL;
 * *matches counts the options it could abbreviate, as getopt_long allows. */
static const struct option *config_find_long(const char *token, int *matches)
{
    const char *name = token + 2;
    size_t len = strcspn(name, "=");
    const struct option *found = NULL;

    *matches = 0;
    for (const struct option *o = config_options; o->name != NULL; o++) {
        if (strncmp(o->name, name, len) != 0)
            continue;
        if (strlen(o->name) == len) { /* exact match beats abbreviations */
            *matches = 1;
            return o;
        }
        found = o;
        (*matches)++;
    }
    return found;
}

/* The name to print for option value `val` as the user wrote it: "--port"
 * if `token` was a long option, else "-p". */
static void config_option_name(int val, const char *token, char *buf, size_t cap)
{
    if (token != NULL && strncmp(token, "--", 2) == 0) {
        for (const struct option *o = config_options; o->name != NULL; o++) {
            if (o->val == val) {
                snprintf(buf, cap, "--%s", o->name);
                return;
            }
        }
    }
    snprintf(buf, cap, "-%c", val);
}

/* getopt returned '?': an unknown option, an ambiguous abbreviation, or an
 * argument given to a flag that takes none ("--foreground=1"). `token` is
 * the argv element before optind: the one that failed for a long option
 * (getopt has stepped over it), but possibly an earlier one for a short
 * flag inside a cluster ("-xf"), which is why optopt decides first. */
static void config_explain_unknown(const char *token, char *err, size_t errlen)
{
    int is_long = token != NULL && strncmp(token, "--", 2) == 0;
    int matches = 0;
    const struct option *o = is_long ? config_find_long(token, &matches) : NULL;
    int len = is_long ? (int)strcspn(token, "=") : 0;

    /* glibc: optopt is 0 for an unknown or ambiguous long option, and the
     * option's value for "--flag=value" on a flag without argument. */
    if (is_long && optopt == 0) {
        if (matches > 1)
            config_error(err, errlen, "ambiguous option '%.*s'", len, token);
        else
            config_error(err, errlen, "unknown option '%.*s'", len, token);
    } else if (is_long && o != NULL && o->val == optopt && token[len] == '=') {
        config_error(err, errlen, "option '--%s' takes no argument", o->name);
    } else if (optopt > 0 && optopt < 256 && isprint(optopt)) {
        config_error(err, errlen, "unknown option '-%c'", optopt);
    } else {
        config_error(err, errlen, "unknown option");
    }
}

/* The argv element getopt just worked on, to tell "--port" from "-p" in a
 * message. getopt has moved optind past it, and past its argument too when
 * that was a separate element. Inside a cluster of short flags ("-xf")
 * optind may still point at it, so this is then an earlier element: for
 * short options the callers trust optopt, not this. */
static const char *config_current_token(int argc, char **argv)
{
    int i = optind - 1;

    if (optarg != NULL && i >= 1 && i < argc && optarg == argv[i])
        i--;
    return i >= 0 && i < argc ? argv[i] : NULL;
}

config_result config_parse(config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    int bare_args = 0;

    cfg->listen_addr = CONFIG_DEFAULT_LISTEN;
    cfg->port = CONFIG_DEFAULT_PORT;
    cfg->foreground = 0;
    cfg->debug = 0;
    cfg->max_memory = CONFIG_DEFAULT_MAX_MEMORY;
    cfg->max_ttl = CONFIG_DEFAULT_MAX_TTL;
    cfg->pidfile = NULL;
    cfg->key_file = NULL;
    cfg->next_key_file = NULL;
    cfg->n_allow = 0;
    cfg->allow_plaintext = 0;
    cfg->window_s = CONFIG_DEFAULT_WINDOW;
    cfg->user = NULL;
    cfg->user_uid = 0;
    cfg->user_gid = 0;
    cfg->metrics = NULL;
    cfg->metrics_addr[0] = '\0';
    cfg->metrics_port = 0;
    cfg->n_backends = 0;
    cfg->backend_password_file = NULL;
    cfg->backend_timeout_ms = CONFIG_DEFAULT_BACKEND_TIMEOUT_MS;
    cfg->ticket_keys = 0;
    cfg->ticket_rotate_s = TICKET_KEYS_DEFAULT_ROTATE;
    cfg->ticket_lifetime_s = TICKET_KEYS_DEFAULT_LIFETIME;
    if (err != NULL && errlen > 0)
        err[0] = '\0';

    opterr = 0;
    optind = 0; /* glibc: a full reset, see the top of the file */
    for (;;) {
        int opt = getopt_long(argc, argv, config_optstring, config_options, NULL);
        const char *token = config_current_token(argc, argv);
        char name[32];

        if (opt == -1)
            break;
        switch (opt) {
        case 1: /* a bare argument: the port */
            if (++bare_args > 1) {
                config_error(err, errlen, "unexpected argument '%s': only one port may be given",
                             optarg);
                return CONFIG_ERROR;
            }
            if (config_set_port(cfg, optarg) != 0) {
                config_error(err, errlen,
                             "invalid port argument '%s': not a number from 0 to 65535", optarg);
                return CONFIG_ERROR;
            }
            break;
        case 'p':
            if (config_set_port(cfg, optarg) != 0) {
                config_option_name('p', token, name, sizeof(name));
                config_error(err, errlen, "invalid %s '%s': not a number from 0 to 65535", name,
                             optarg);
                return CONFIG_ERROR;
            }
            break;
        case 'l':
            if (config_set_listen(cfg, optarg) != 0) {
                config_option_name('l', token, name, sizeof(name));
                config_error(err, errlen, "%s '%s': not a numeric IPv4 or IPv6 address", name,
                             optarg);
                return CONFIG_ERROR;
            }
            break;
        case 'f':
            cfg->foreground = 1;
            break;
        case 'd':
            cfg->debug = 1;
            break;
        case OPT_MAX_MEMORY:
            if (config_set_max_memory(cfg, optarg) != 0) {
                config_error(err, errlen,
                             "invalid --max-memory '%s': not a size from 64k to 1024g "
                             "(bytes, or a number with suffix k, m or g)",
                             optarg);
                return CONFIG_ERROR;
            }
            break;
        case OPT_MAX_TTL:
            if (config_set_max_ttl(cfg, optarg) != 0) {
                config_error(err, errlen,
                             "invalid --max-ttl '%s': not a number of seconds from 1 to %u", optarg,
                             (unsigned)CONFIG_MAX_MAX_TTL);
                return CONFIG_ERROR;
            }
            break;
        case OPT_PIDFILE:
            if (optarg[0] == '\0') {
                config_error(err, errlen, "invalid --pidfile '': empty path");
                return CONFIG_ERROR;
            }
            cfg->pidfile = optarg;
            break;
        case OPT_KEY_FILE:
        case OPT_NEXT_KEY_FILE:
            if (optarg[0] == '\0') {
                config_error(err, errlen, "invalid %s '': empty path",
                             opt == OPT_KEY_FILE ? "--key-file" : "--next-key-file");
                return CONFIG_ERROR;
            }
            if (opt == OPT_KEY_FILE)
                cfg->key_file = optarg;
            else
                cfg->next_key_file = optarg;
            break;
        case OPT_ALLOW:
            if (config_set_allow(cfg, optarg, err, errlen) != 0)
                return CONFIG_ERROR;
            break;
        case OPT_ALLOW_PLAINTEXT:
            cfg->allow_plaintext = 1;
            break;
        case OPT_WINDOW:
            if (config_set_window(cfg, optarg) != 0) {
                config_error(err, errlen,
                             "invalid --window '%s': not a number of seconds from 1 to %u", optarg,
                             (unsigned)CONFIG_MAX_WINDOW);
                return CONFIG_ERROR;
            }
            break;
        case OPT_METRICS: {
            const char *why = "";

            if (config_set_metrics(cfg, optarg, &why) != 0) {
                config_error(err, errlen, "invalid --metrics '%s': %s", optarg, why);
                return CONFIG_ERROR;
            }
            break;
        }
        case OPT_BACKEND:
            if (config_add_backend(cfg, optarg, err, errlen) != 0)
                return CONFIG_ERROR;
            break;
        case OPT_BACKEND_PASSWORD_FILE:
            if (*optarg == '\0') {
                config_error(err, errlen, "invalid --backend-password-file: empty path");
                return CONFIG_ERROR;
            }
            cfg->backend_password_file = optarg;
            break;
        case OPT_BACKEND_TIMEOUT:
            if (config_set_u32("--backend-timeout", optarg, CONFIG_MAX_BACKEND_TIMEOUT_MS,
                               "milliseconds", &cfg->backend_timeout_ms, err, errlen) != 0)
                return CONFIG_ERROR;
            break;
        case OPT_TICKET_KEYS:
            cfg->ticket_keys = 1;
            break;
        case OPT_TICKET_ROTATE:
            if (config_set_u32("--ticket-rotate", optarg, CONFIG_MAX_TICKET_ROTATE, "seconds",
                               &cfg->ticket_rotate_s, err, errlen) != 0)
                return CONFIG_ERROR;
            break;
        case OPT_TICKET_LIFETIME:
            if (config_set_u32("--ticket-lifetime", optarg, TICKET_KEYS_MAX_LIFETIME,
                               "seconds (at most 7 days, the TLS 1.3 limit)",
                               &cfg->ticket_lifetime_s, err, errlen) != 0)
                return CONFIG_ERROR;
            break;
        case 'u':
            config_option_name('u', token, name, sizeof(name));
            if (config_set_user(cfg, optarg, name, err, errlen) != 0)
                return CONFIG_ERROR;
            break;
        case 'h':
            return CONFIG_HELP;
        case 'V':
            return CONFIG_VERSION;
        case ':':
            config_option_name(optopt, token, name, sizeof(name));
            config_error(err, errlen, "option '%s' needs an argument", name);
            return CONFIG_ERROR;
        default: /* '?' */
            config_explain_unknown(token, err, errlen);
            return CONFIG_ERROR;
        }
    }
    /* Only what follows "--" is left over: more bare ports. */
    for (; optind < argc; optind++) {
        if (++bare_args > 1) {
            config_error(err, errlen, "unexpected argument '%s': only one port may be given",
                         argv[optind]);
            return CONFIG_ERROR;
        }
        if (config_set_port(cfg, argv[optind]) != 0) {
            config_error(err, errlen, "invalid port argument '%s': not a number from 0 to 65535",
                         argv[optind]);
            return CONFIG_ERROR;
        }
    }
    if (config_check_combinations(cfg, err, errlen) != 0)
        return CONFIG_ERROR;
    return CONFIG_RUN;
}
