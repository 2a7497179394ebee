/* config.h — sessiond's settings and the command-line parser that fills them.
 *
 * Parsing is separate from main() so it can be unit-tested: it never prints,
 * never exits, and reports a bad flag as a one-line message in `err`. It
 * reads no files either: the key files are loaded by main() (before it drops
 * privileges); only -u/--user is resolved here, with getpwnam.
 */
#ifndef SESSIOND_CONFIG_H
#define SESSIOND_CONFIG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "acl.h"

#define CONFIG_DEFAULT_PORT       54321
#define CONFIG_DEFAULT_LISTEN     "127.0.0.1"
#define CONFIG_DEFAULT_MAX_MEMORY (64u * 1024 * 1024)
#define CONFIG_DEFAULT_MAX_TTL    86400u
/* Bounds of --max-memory and --max-ttl (see config.c for why). */
#define CONFIG_MIN_MAX_MEMORY (64u * 1024)
#define CONFIG_MAX_MAX_MEMORY (1024ull * 1024 * 1024 * 1024)
#define CONFIG_MAX_MAX_TTL    604800u
/* --window: default and bounds, seconds (see config.c). */
#define CONFIG_DEFAULT_WINDOW 30u
#define CONFIG_MAX_WINDOW     3600u

/* --backend: groups, and the per-operation timeout's default and bounds (ms). */
#define CONFIG_MAX_BACKENDS               16
#define CONFIG_DEFAULT_BACKEND_TIMEOUT_MS 50u
#define CONFIG_MAX_BACKEND_TIMEOUT_MS     10000u
/* --ticket-rotate bound (a day); --ticket-lifetime is bounded by ticket_keys.h. */
#define CONFIG_MAX_TICKET_ROTATE 86400u

typedef struct config {
    const char *listen_addr;   /* numeric IPv4 or IPv6 address (points into argv or a literal) */
    int port;                  /* 0 asks the kernel for a free port */
    int foreground;            /* -f: stay attached, log to stderr */
    int debug;                 /* -d: debug-level logs (never session bytes) */
    size_t max_memory;         /* --max-memory: the cache's byte budget */
    uint32_t max_ttl;          /* --max-ttl: default and cap for a client's timeout, seconds */
    const char *pidfile;       /* --pidfile, or NULL */
    const char *key_file;      /* --key-file: the cluster key, or NULL (no key: v1 rules) */
    const char *next_key_file; /* --next-key-file: accepted for opening only, or NULL */
    acl_rule allow[ACL_MAX_RULES]; /* --allow CIDR, in the order given */
    size_t n_allow;
    int allow_plaintext; /* --allow-plaintext: with a key, plaintext from --allow sources */
    uint32_t window_s;   /* --window: accepted age of a sealed datagram's timestamp */
    const char *user;    /* -u/--user: drop to this user after binding, or NULL */
    uid_t user_uid;      /* its uid and primary gid, looked up while parsing */
    gid_t user_gid;
    /* --metrics ADDR:PORT: the Prometheus endpoint (metrics.h), off when
     * metrics is NULL. metrics_addr holds the address without brackets. */
    const char *metrics;
    char metrics_addr[INET6_ADDRSTRLEN];
    int metrics_port; /* 0 asks the kernel for a free port */
    /* --backend URL (repeatable): shared stores, one per group; none: the
     * in-memory cache alone. Syntax checked here, resolved by the server. */
    const char *backends[CONFIG_MAX_BACKENDS];
    size_t n_backends;
    const char *backend_password_file; /* --backend-password-file, read by main() */
    uint32_t backend_timeout_ms;       /* --backend-timeout */
    int ticket_keys;                   /* --ticket-keys: serve a ticket-key ring */
    uint32_t ticket_rotate_s;          /* --ticket-rotate */
    uint32_t ticket_lifetime_s;        /* --ticket-lifetime */
} config;

typedef enum config_result {
    CONFIG_RUN = 0, /* settings are valid: start the daemon */
    CONFIG_HELP,    /* -h: print config_usage() and exit 0 */
    CONFIG_VERSION, /* -V: print the version and exit 0 */
    CONFIG_ERROR,   /* bad command line: err holds one line, exit non-zero */
} config_result;

/* Fills *cfg with the defaults, then applies argv. getopt state is reset, so
 * it may be called more than once (tests do). */
config_result config_parse(config *cfg, int argc, char **argv, char *err, size_t errlen);

/* The --help text. */
const char *config_usage(void);

/* Parses "123", "64k", "64M", "1g" (powers of 1024) into *out. Returns 0, or
 * -1 for anything else: empty, negative, junk after the number, overflow. */
int config_parse_size(const char *text, size_t *out);

#endif
