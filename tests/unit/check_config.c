/* check_config.c — unit tests of sessiond's command-line parser
 * (sessiond/config.c).
 *
 * What is covered: the defaults; every flag in its short and long form; the
 * bare port argument and its "last one wins" rule with -p; size suffixes and
 * every refusal of config_parse_size (junk, overflow, negative, empty); the
 * bounds of --port, --max-memory and --max-ttl on both sides; --listen with
 * IPv4, IPv6 and non-numeric input; unknown, ambiguous and argument-less
 * options; help and version; and repeated calls, which only work if the
 * parser resets getopt's state. The v2 flags: --key-file, --next-key-file,
 * --allow (repeatable, parsed into rules; the CIDR syntax itself is
 * check_acl.c's), --allow-plaintext, --window and -u/--user, each accepted
 * and each bad value refused, the combinations refused (next key or
 * --allow-plaintext without a key, --allow-plaintext without --allow), and
 * the cap on the number of rules. Every refusal must be CONFIG_ERROR with a
 * single-line message that names the flag (or the offending text).
 *
 * Process-level behaviour (exit status, the one line on stderr) is tested
 * in tests/integration/check_daemon.c.
 */
#include "config.h"

#include <arpa/inet.h>
#include <check.h>
#include <stdint.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 160 /* room for ACL_MAX_RULES + 1 --allow flags */

/* The words after "sessiond" for one call, as a NULL-ended array. */
#define WORDS(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NO_WORDS   ((const char *const[]){NULL})

/* argv for one call: "sessiond" followed by the words. The words are
 * copied into writable storage, as a real argv is. */
typedef struct args {
    int argc;
    char *argv[MAX_ARGS + 2];
    char storage[MAX_ARGS + 1][128];
} args;

static void args_build(args *a, const char *const *words)
{
    a->argc = 0;
    snprintf(a->storage[0], sizeof(a->storage[0]), "sessiond");
    a->argv[a->argc++] = a->storage[0];
    for (; *words != NULL; words++) {
        ck_assert_int_lt(a->argc, MAX_ARGS + 1);
        snprintf(a->storage[a->argc], sizeof(a->storage[0]), "%s", *words);
        a->argv[a->argc] = a->storage[a->argc];
        a->argc++;
    }
    a->argv[a->argc] = NULL;
}

/* Parses "sessiond <words...>" into *cfg; err receives the message. The
 * args live in a static so pointers into argv (listen_addr, pidfile) stay
 * valid for the caller's assertions. */
static config_result parse(config *cfg, char *err, size_t errlen, const char *const *words)
{
    static args a;

    args_build(&a, words);
    return config_parse(cfg, a.argc, a.argv, err, errlen);
}

/* Asserts the words are refused with a one-line message containing both
 * needles. */
static void expect_error(const char *needle1, const char *needle2, const char *const *words)
{
    static args a;
    config cfg;
    char err[256];
    config_result rc;

    args_build(&a, words);
    memset(err, 'X', sizeof(err));
    rc = config_parse(&cfg, a.argc, a.argv, err, sizeof(err));
    ck_assert_msg(rc == CONFIG_ERROR, "'%s %s' not refused (result %d)", a.argv[1],
                  a.argc > 2 ? a.argv[2] : "", (int)rc);
    ck_assert_msg(strlen(err) > 0 && strlen(err) < sizeof(err) - 1, "no message or no NUL");
    ck_assert_msg(strchr(err, '\n') == NULL, "message is more than one line: %s", err);
    ck_assert_msg(strstr(err, needle1) != NULL, "message does not name '%s': %s", needle1, err);
    ck_assert_msg(strstr(err, needle2) != NULL, "message does not name '%s': %s", needle2, err);
}

/* ---- defaults and flags ----------------------------------------------- */

START_TEST(test_defaults)
{
    config cfg;
    char err[256];

    memset(&cfg, 0x5a, sizeof(cfg));
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), NO_WORDS), CONFIG_RUN);
    ck_assert_str_eq(cfg.listen_addr, "127.0.0.1");
    ck_assert_int_eq(cfg.port, 54321);
    ck_assert_int_eq(cfg.foreground, 0);
    ck_assert_int_eq(cfg.debug, 0);
    ck_assert_uint_eq(cfg.max_memory, 64u * 1024 * 1024);
    ck_assert_uint_eq(cfg.max_ttl, 86400);
    ck_assert_ptr_null(cfg.pidfile);
    ck_assert_ptr_null(cfg.key_file);
    ck_assert_ptr_null(cfg.next_key_file);
    ck_assert_uint_eq(cfg.n_allow, 0);
    ck_assert_int_eq(cfg.allow_plaintext, 0);
    ck_assert_uint_eq(cfg.window_s, 30);
    ck_assert_ptr_null(cfg.user);
    ck_assert_str_eq(err, "");
}
END_TEST

START_TEST(test_long_flags)
{
    config cfg;
    char err[256];

    ck_assert_int_eq(
        parse(&cfg, err, sizeof(err),
              WORDS("--port", "1234", "--listen", "10.1.2.3", "--foreground", "--debug",
                    "--max-memory", "2m", "--max-ttl", "300", "--pidfile", "/run/sessiond.pid")),
        CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 1234);
    ck_assert_str_eq(cfg.listen_addr, "10.1.2.3");
    ck_assert_int_eq(cfg.foreground, 1);
    ck_assert_int_eq(cfg.debug, 1);
    ck_assert_uint_eq(cfg.max_memory, 2u * 1024 * 1024);
    ck_assert_uint_eq(cfg.max_ttl, 300);
    ck_assert_str_eq(cfg.pidfile, "/run/sessiond.pid");
}
END_TEST

START_TEST(test_short_flags_and_equals)
{
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-p", "0", "-l", "0.0.0.0", "-f", "-d")),
                     CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 0);
    ck_assert_str_eq(cfg.listen_addr, "0.0.0.0");
    ck_assert_int_eq(cfg.foreground, 1);
    ck_assert_int_eq(cfg.debug, 1);

    /* Clustered short flags, attached arguments and --flag=value. */
    ck_assert_int_eq(
        parse(&cfg, err, sizeof(err),
              WORDS("-fdp65535", "--max-ttl=604800", "--max-memory=64k", "--listen=::1")),
        CONFIG_RUN);
    ck_assert_int_eq(cfg.foreground, 1);
    ck_assert_int_eq(cfg.debug, 1);
    ck_assert_int_eq(cfg.port, 65535);
    ck_assert_uint_eq(cfg.max_ttl, 604800);
    ck_assert_uint_eq(cfg.max_memory, 64u * 1024);
    ck_assert_str_eq(cfg.listen_addr, "::1");

    /* An unambiguous abbreviation, as getopt_long allows. */
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--fore", "--pid", "x.pid")), CONFIG_RUN);
    ck_assert_int_eq(cfg.foreground, 1);
    ck_assert_str_eq(cfg.pidfile, "x.pid");
}
END_TEST

START_TEST(test_ipv6_listen)
{
    static const char *const good[] = {"::1", "::", "fe80::1", "2001:db8::42", "::ffff:127.0.0.1"};
    config cfg;
    char err[256];

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-l", good[i])), CONFIG_RUN);
        ck_assert_str_eq(cfg.listen_addr, good[i]);
    }
}
END_TEST

/* ---- the port ---------------------------------------------------------- */

START_TEST(test_bare_port)
{
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("4433")), CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 4433);
    /* Among flags, in any position. */
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-f", "4434", "-d")), CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 4434);
    ck_assert_int_eq(cfg.foreground, 1);
    ck_assert_int_eq(cfg.debug, 1);
    /* After "--". */
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-f", "--", "4435")), CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 4435);
}
END_TEST

START_TEST(test_port_last_one_wins)
{
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-p", "1000", "2000")), CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 2000);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("2000", "-p", "1000")), CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 1000);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-p", "1", "--port", "2", "-p3")),
                     CONFIG_RUN);
    ck_assert_int_eq(cfg.port, 3);
}
END_TEST

START_TEST(test_bad_port)
{
    expect_error("--port", "abc", WORDS("--port", "abc"));
    expect_error("-p", "65536", WORDS("-p", "65536"));
    expect_error("-p", "-1", WORDS("-p", "-1"));
    expect_error("--port", "'+5'", WORDS("--port=+5"));
    expect_error("--port", "' 5'", WORDS("--port", " 5"));
    expect_error("--port", "'5 '", WORDS("--port", "5 "));
    expect_error("--port", "0x10", WORDS("--port", "0x10"));
    expect_error("--port", "99999999999999999999999", WORDS("--port", "99999999999999999999999"));
    expect_error("--port", "''", WORDS("--port", ""));
    expect_error("port argument", "http", WORDS("http"));
    expect_error("port argument", "70000", WORDS("-f", "70000"));
    /* Two bare ports: the second is refused rather than silently dropped. */
    expect_error("unexpected argument", "'2'", WORDS("1", "2"));
    expect_error("unexpected argument", "'2'", WORDS("1", "--", "2"));
}
END_TEST

/* ---- sizes ------------------------------------------------------------- */

START_TEST(test_parse_size)
{
    size_t out = 0;

    ck_assert_int_eq(config_parse_size("0", &out), 0);
    ck_assert_uint_eq(out, 0);
    ck_assert_int_eq(config_parse_size("123", &out), 0);
    ck_assert_uint_eq(out, 123);
    ck_assert_int_eq(config_parse_size("64k", &out), 0);
    ck_assert_uint_eq(out, 64u * 1024);
    ck_assert_int_eq(config_parse_size("64K", &out), 0);
    ck_assert_uint_eq(out, 64u * 1024);
    ck_assert_int_eq(config_parse_size("3m", &out), 0);
    ck_assert_uint_eq(out, 3u * 1024 * 1024);
    ck_assert_int_eq(config_parse_size("3M", &out), 0);
    ck_assert_uint_eq(out, 3u * 1024 * 1024);
    ck_assert_int_eq(config_parse_size("2g", &out), 0);
    ck_assert_uint_eq(out, (size_t)2 * 1024 * 1024 * 1024);
    ck_assert_int_eq(config_parse_size("1G", &out), 0);
    ck_assert_uint_eq(out, (size_t)1024 * 1024 * 1024);
}
END_TEST

START_TEST(test_parse_size_refusals)
{
    static const char *const bad[] = {
        "",
        "k",
        "-1",
        "-1k",
        "+1",
        " 1",
        "1 ",
        "1x",
        "12x",
        "1kb",
        "1KiB",
        "1t",
        "1.5m",
        "0x10",
        "1k1",
        "1kk",
        "m1",
        "1 k",
        "18446744073709551616",    /* 2^64 */
        "99999999999999999999999", /* far beyond */
        "17179869184g",            /* 2^34 g = 2^64: overflows only after the shift */
        "18014398509481984k",      /* 2^54 k = 2^64 */
    };
    size_t out = 4242;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ck_assert_msg(config_parse_size(bad[i], &out) == -1, "'%s' accepted", bad[i]);
        ck_assert_uint_eq(out, 4242); /* untouched on failure */
    }
    ck_assert_int_eq(config_parse_size(NULL, &out), -1);
    /* The largest value that fits is still accepted. */
    ck_assert_int_eq(config_parse_size("17179869183g", &out), 0);
    ck_assert_uint_eq(out, (size_t)17179869183u << 30);
}
END_TEST

START_TEST(test_max_memory_bounds)
{
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--max-memory", "65536")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.max_memory, CONFIG_MIN_MAX_MEMORY);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--max-memory", "1024g")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.max_memory, (size_t)CONFIG_MAX_MAX_MEMORY);

    expect_error("--max-memory", "'0'", WORDS("--max-memory", "0"));
    expect_error("--max-memory", "65535", WORDS("--max-memory", "65535"));
    expect_error("--max-memory", "63k", WORDS("--max-memory", "63k"));
    expect_error("--max-memory", "1025g", WORDS("--max-memory", "1025g"));
    expect_error("--max-memory", "12x", WORDS("--max-memory", "12x"));
    expect_error("--max-memory", "-64m", WORDS("--max-memory=-64m"));
    expect_error("--max-memory", "99999999999999999999g",
                 WORDS("--max-memory", "99999999999999999999g"));
}
END_TEST

/* ---- ttl, listen, pidfile --------------------------------------------- */

START_TEST(test_max_ttl_bounds)
{
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--max-ttl", "1")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.max_ttl, 1);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--max-ttl", "604800")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.max_ttl, CONFIG_MAX_MAX_TTL);

    expect_error("--max-ttl", "'0'", WORDS("--max-ttl", "0"));
    expect_error("--max-ttl", "604801", WORDS("--max-ttl", "604801"));
    expect_error("--max-ttl", "soon", WORDS("--max-ttl", "soon"));
    expect_error("--max-ttl", "-5", WORDS("--max-ttl", "-5"));
    expect_error("--max-ttl", "1h", WORDS("--max-ttl", "1h"));
    expect_error("--max-ttl", "4294967297", WORDS("--max-ttl", "4294967297")); /* 2^32 + 1 */
}
END_TEST

START_TEST(test_backend_and_ticket_flags)
{
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--key-file", "/k")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.n_backends, 0);
    ck_assert_uint_eq(cfg.backend_timeout_ms, 50);
    ck_assert_int_eq(cfg.ticket_keys, 0);
    ck_assert_uint_eq(cfg.ticket_rotate_s, 3600);
    ck_assert_uint_eq(cfg.ticket_lifetime_s, 43200);

    ck_assert_int_eq(
        parse(&cfg, err, sizeof(err),
              WORDS("--key-file", "/k", "--backend", "redis://10.0.0.1:6379", "--backend",
                    "sentinel://10.0.0.2:26379,10.0.0.3:26379/main", "--backend-password-file",
                    "/pw", "--backend-timeout", "20", "--ticket-keys", "--ticket-rotate", "60",
                    "--ticket-lifetime", "600")),
        CONFIG_RUN);
    ck_assert_uint_eq(cfg.n_backends, 2);
    ck_assert_str_eq(cfg.backends[0], "redis://10.0.0.1:6379");
    ck_assert_str_eq(cfg.backends[1], "sentinel://10.0.0.2:26379,10.0.0.3:26379/main");
    ck_assert_str_eq(cfg.backend_password_file, "/pw");
    ck_assert_uint_eq(cfg.backend_timeout_ms, 20);
    ck_assert_int_eq(cfg.ticket_keys, 1);
    ck_assert_uint_eq(cfg.ticket_rotate_s, 60);
    ck_assert_uint_eq(cfg.ticket_lifetime_s, 600);
}
END_TEST

START_TEST(test_backend_and_ticket_refusals)
{
    expect_error("--backend", "needs --key-file", WORDS("--backend", "redis://127.0.0.1:6379"));
    expect_error("--backend", "http://x", WORDS("--key-file", "/k", "--backend", "http://x"));
    expect_error("--backend", "password",
                 WORDS("--key-file", "/k", "--backend", "redis://:secret@127.0.0.1:6379"));
    expect_error("--backend", "twice",
                 WORDS("--key-file", "/k", "--backend", "redis://a:1", "--backend", "redis://a:1"));
    expect_error("--backend", "redis://10.0.0.1",
                 WORDS("--key-file", "/k", "--backend", "redis://10.0.0.1"));
    expect_error("--backend", "sentinel://10.0.0.1:26379",
                 WORDS("--key-file", "/k", "--backend", "sentinel://10.0.0.1:26379"));
    expect_error("--backend-password-file", "needs --backend",
                 WORDS("--backend-password-file", "/pw"));
    expect_error("--backend-timeout", "'0'",
                 WORDS("--key-file", "/k", "--backend", "redis://a:1", "--backend-timeout", "0"));
    expect_error("--backend-timeout", "10001", WORDS("--backend-timeout", "10001"));
    expect_error("--ticket-keys", "needs --key-file", WORDS("--ticket-keys"));
    expect_error("--ticket-lifetime", "604801", WORDS("--ticket-lifetime", "604801"));
    expect_error("--ticket-lifetime", "7 days", WORDS("--ticket-lifetime", "999999"));
    expect_error("--ticket-rotate", "'0'", WORDS("--ticket-rotate", "0"));
    expect_error("--ticket-rotate", "1h", WORDS("--ticket-rotate", "1h"));
    /* 604800 / 60 = 10080 keys: more than a ring holds. */
    expect_error("--ticket-lifetime", "rotate less often",
                 WORDS("--key-file", "/k", "--ticket-keys", "--ticket-rotate", "60",
                       "--ticket-lifetime", "604800"));
}
END_TEST

START_TEST(test_bad_listen)
{
    expect_error("--listen", "1.2.3", WORDS("--listen", "1.2.3"));
    expect_error("-l", "localhost", WORDS("-l", "localhost"));
    expect_error("-l", "256.0.0.1", WORDS("-l", "256.0.0.1"));
    expect_error("--listen", "[::1]", WORDS("--listen", "[::1]"));
    expect_error("--listen", "::1::2", WORDS("--listen", "::1::2"));
    expect_error("--listen", "''", WORDS("--listen", ""));
    expect_error("--listen", "1.2.3.4:80", WORDS("--listen=1.2.3.4:80"));
}
END_TEST

START_TEST(test_bad_pidfile)
{
    expect_error("--pidfile", "empty", WORDS("--pidfile", ""));
}
END_TEST

/* ---- the v2 security flags --------------------------------------------- */

START_TEST(test_security_flags)
{
    static const uint8_t ten[4] = {10, 0, 0, 0};
    static const uint8_t fd00[16] = {0xfd};
    config cfg;
    char err[256];

    ck_assert_int_eq(
        parse(&cfg, err, sizeof(err),
              WORDS("--key-file", "/etc/sessiond/k1", "--next-key-file", "/etc/sessiond/k2",
                    "--allow", "10.0.0.0/8", "--allow", "fd00::/8", "--allow", "127.0.0.1",
                    "--allow-plaintext", "--window", "5", "-u", "root")),
        CONFIG_RUN);
    ck_assert_str_eq(cfg.key_file, "/etc/sessiond/k1");
    ck_assert_str_eq(cfg.next_key_file, "/etc/sessiond/k2");
    ck_assert_uint_eq(cfg.n_allow, 3);
    ck_assert_int_eq(cfg.allow[0].family, AF_INET);
    ck_assert_uint_eq(cfg.allow[0].prefix, 8);
    ck_assert_mem_eq(cfg.allow[0].addr, ten, 4);
    ck_assert_int_eq(cfg.allow[1].family, AF_INET6);
    ck_assert_uint_eq(cfg.allow[1].prefix, 8);
    ck_assert_mem_eq(cfg.allow[1].addr, fd00, 16);
    ck_assert_int_eq(cfg.allow[2].family, AF_INET);
    ck_assert_uint_eq(cfg.allow[2].prefix, 32); /* a bare address is a /32 */
    ck_assert_int_eq(cfg.allow_plaintext, 1);
    ck_assert_uint_eq(cfg.window_s, 5);
    ck_assert_str_eq(cfg.user, "root");
    ck_assert_int_eq(cfg.user_uid, 0);
    ck_assert_int_eq(cfg.user_gid, 0);

    /* --flag=value, abbreviations, bounds of --window. */
    ck_assert_int_eq(
        parse(&cfg, err, sizeof(err),
              WORDS("--key-file=/k", "--allow=::1", "--allow-p", "--window=3600", "--user=root")),
        CONFIG_RUN);
    ck_assert_str_eq(cfg.key_file, "/k");
    ck_assert_uint_eq(cfg.n_allow, 1);
    ck_assert_uint_eq(cfg.allow[0].prefix, 128);
    ck_assert_int_eq(cfg.allow_plaintext, 1);
    ck_assert_uint_eq(cfg.window_s, CONFIG_MAX_WINDOW);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--window", "1")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.window_s, 1);
    /* A key alone, rules alone: both fine. */
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--key-file", "k")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.n_allow, 0);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--allow", "0.0.0.0/0")), CONFIG_RUN);
    ck_assert_uint_eq(cfg.allow[0].prefix, 0);
}
END_TEST

START_TEST(test_bad_security_flags)
{
    expect_error("--allow", "10.0.0.1/8", WORDS("--allow", "10.0.0.1/8"));
    expect_error("--allow", "10.0.0.0/33", WORDS("--allow", "10.0.0.0/33"));
    expect_error("--allow", "fd00::/129", WORDS("--allow", "fd00::/129"));
    expect_error("--allow", "10.1", WORDS("--allow", "10.1"));
    expect_error("--allow", "::ffff:127.0.0.1", WORDS("--allow", "::ffff:127.0.0.1"));
    expect_error("--allow", "''", WORDS("--allow", ""));
    expect_error("--window", "'0'", WORDS("--window", "0"));
    expect_error("--window", "3601", WORDS("--window", "3601"));
    expect_error("--window", "30s", WORDS("--window", "30s"));
    expect_error("--window", "-1", WORDS("--window", "-1"));
    expect_error("--key-file", "empty path", WORDS("--key-file", ""));
    expect_error("--next-key-file", "empty path", WORDS("--key-file", "k", "--next-key-file", ""));
    expect_error("-u", "no-such-user-sessiond", WORDS("-u", "no-such-user-sessiond"));
    expect_error("--user", "no such user", WORDS("--user", "no-such-user-sessiond"));
    expect_error("--user", "empty", WORDS("--user", ""));
    /* Combinations that would silently do nothing. */
    expect_error("--next-key-file", "--key-file", WORDS("--next-key-file", "k2"));
    expect_error("--allow-plaintext", "--key-file", WORDS("--allow-plaintext", "--allow", "::1"));
    expect_error("--allow-plaintext", "--allow", WORDS("--key-file", "k", "--allow-plaintext"));
    /* Missing arguments. */
    expect_error("needs an argument", "'--key-file'", WORDS("--key-file"));
    expect_error("needs an argument", "'--allow'", WORDS("--allow"));
    expect_error("needs an argument", "'--window'", WORDS("--window"));
    expect_error("needs an argument", "'-u'", WORDS("-u"));
    expect_error("takes no argument", "--allow-plaintext", WORDS("--allow-plaintext=yes"));
}
END_TEST

/* At most ACL_MAX_RULES rules per family: one more is refused by name. */
START_TEST(test_too_many_rules)
{
    static char texts[ACL_MAX_RULES + 1][32];
    const char *words[2 * (ACL_MAX_RULES + 1) + 1];
    config cfg;
    char err[256];
    size_t n = 0;

    for (int i = 0; i <= ACL_MAX_RULES; i++) {
        snprintf(texts[i], sizeof(texts[i]), "10.%d.0.0/16", i);
        words[n++] = "--allow";
        words[n++] = texts[i];
    }
    words[n] = NULL;
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), words), CONFIG_ERROR);
    ck_assert_msg(strstr(err, "too many --allow") != NULL, "message: %s", err);
    ck_assert_msg(strstr(err, "10.64.0.0/16") != NULL, "message: %s", err);
    /* Exactly the maximum is fine. */
    words[n - 2] = NULL;
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), words), CONFIG_RUN);
    ck_assert_uint_eq(cfg.n_allow, ACL_MAX_RULES);
}
END_TEST

/* ---- getopt-level errors ---------------------------------------------- */

START_TEST(test_unknown_options)
{
    expect_error("unknown option", "'--frob'", WORDS("--frob"));
    expect_error("unknown option", "'--frob'", WORDS("-f", "--frob=3"));
    expect_error("unknown option", "'-x'", WORDS("-x"));
    /* Inside a cluster, after a long option: still the right letter. */
    expect_error("unknown option", "'-x'", WORDS("--debug", "-xf"));
    expect_error("unknown option", "'-x'", WORDS("--debug", "-fx"));
    expect_error("ambiguous option", "'--max'", WORDS("--max", "5"));
    expect_error("takes no argument", "--foreground", WORDS("--foreground=1"));
    expect_error("takes no argument", "--debug", WORDS("--deb=yes"));
}
END_TEST

START_TEST(test_missing_argument)
{
    expect_error("needs an argument", "'-p'", WORDS("-p"));
    expect_error("needs an argument", "'-l'", WORDS("-fl"));
    expect_error("needs an argument", "'--port'", WORDS("--port"));
    expect_error("needs an argument", "'--max-memory'", WORDS("--max-memory"));
    expect_error("needs an argument", "'--max-ttl'", WORDS("--max-t"));
    expect_error("needs an argument", "'--pidfile'", WORDS("-d", "--pidfile"));
}
END_TEST

START_TEST(test_help_and_version)
{
    static const char *const flags[] = {"--port",
                                        "--listen",
                                        "--foreground",
                                        "--debug",
                                        "--max-memory",
                                        "--max-ttl",
                                        "--pidfile",
                                        "--help",
                                        "--version",
                                        "--key-file",
                                        "--next-key-file",
                                        "--allow",
                                        "--allow-plaintext",
                                        "--window",
                                        "--user"};
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-h")), CONFIG_HELP);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--help")), CONFIG_HELP);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-f", "--help", "--frob")), CONFIG_HELP);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-V")), CONFIG_VERSION);
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--version")), CONFIG_VERSION);
    /* Flags are taken in order: an error before --help wins. */
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--frob", "--help")), CONFIG_ERROR);

    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        ck_assert_msg(strstr(config_usage(), flags[i]) != NULL, "usage lacks %s", flags[i]);
    ck_assert_ptr_nonnull(strstr(config_usage(), "Usage: sessiond"));
}
END_TEST

START_TEST(test_repeated_calls)
{
    config cfg;
    char err[256];

    /* A call that stops inside a cluster ("-fx": error at x, f consumed)
     * must not leave getopt half-way through it for the next call. */
    for (int round = 0; round < 3; round++) {
        ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-xd")), CONFIG_ERROR);
        ck_assert_ptr_nonnull(strstr(err, "'-x'"));
        ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-p")), CONFIG_ERROR);
        ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("-d", "7")), CONFIG_RUN);
        ck_assert_int_eq(cfg.port, 7);
        ck_assert_int_eq(cfg.debug, 1);
        ck_assert_int_eq(cfg.foreground, 0);
        /* Defaults come back: nothing leaks from the previous call. */
        ck_assert_int_eq(parse(&cfg, err, sizeof(err), NO_WORDS), CONFIG_RUN);
        ck_assert_int_eq(cfg.port, CONFIG_DEFAULT_PORT);
        ck_assert_int_eq(cfg.debug, 0);
        /* Rules do not pile up across calls either. */
        ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--allow", "::1")), CONFIG_RUN);
        ck_assert_uint_eq(cfg.n_allow, 1);
        ck_assert_str_eq(err, "");
    }
}
END_TEST

START_TEST(test_small_error_buffer)
{
    config cfg;
    char err[8];

    memset(err, 'X', sizeof(err));
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), WORDS("--port", "abcdefghijkl")), CONFIG_ERROR);
    ck_assert_uint_eq(strlen(err), sizeof(err) - 1); /* truncated, still a string */
    ck_assert_int_eq(parse(&cfg, NULL, 0, WORDS("--port", "abc")), CONFIG_ERROR);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("parse");

    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_long_flags);
    tcase_add_test(tc, test_short_flags_and_equals);
    tcase_add_test(tc, test_ipv6_listen);
    tcase_add_test(tc, test_bare_port);
    tcase_add_test(tc, test_port_last_one_wins);
    tcase_add_test(tc, test_bad_port);
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_parse_size_refusals);
    tcase_add_test(tc, test_max_memory_bounds);
    tcase_add_test(tc, test_max_ttl_bounds);
    tcase_add_test(tc, test_bad_listen);
    tcase_add_test(tc, test_bad_pidfile);
    tcase_add_test(tc, test_security_flags);
    tcase_add_test(tc, test_bad_security_flags);
    tcase_add_test(tc, test_too_many_rules);
    tcase_add_test(tc, test_unknown_options);
    tcase_add_test(tc, test_missing_argument);
    tcase_add_test(tc, test_help_and_version);
    tcase_add_test(tc, test_repeated_calls);
    tcase_add_test(tc, test_backend_and_ticket_flags);
    tcase_add_test(tc, test_backend_and_ticket_refusals);
    tcase_add_test(tc, test_small_error_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    int failed;

    /* No fork: the repeated-call test must see getopt's state carry over
     * between tests in one process, as it would in a real one. */
    srunner_set_fork_status(sr, CK_NOFORK);
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
