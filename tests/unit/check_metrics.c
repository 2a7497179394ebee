/* check_metrics.c — unit tests of the Prometheus exposition text
 * (metrics_format in sessiond/metrics.c) and of the --metrics flag's
 * parsing (sessiond/config.c).
 *
 * What is covered: every field of a stats line becomes a counter
 * sessiond_<name>_total, except entries and bytes (gauges), each with HELP
 * and TYPE right before its sample; the fixed metrics (max memory, up,
 * build info) and the escaping of the version label; fields that are not
 * name=value with a plain name and decimal value are left out; the text is
 * well formed line by line (comment or "name value"); snprintf semantics
 * (same length at any cap, NUL-terminated, a NULL buffer only measures);
 * and a real stats line from dispatch_stats_line, whose every field must
 * show up. Config: --metrics off by default, IPv4 and bracketed IPv6
 * accepted with ports 0 and 65535, the last one given wins, and bad values
 * (no port, bad port, names, unbracketed IPv6, bad brackets) refused as
 * CONFIG_ERROR with one line naming --metrics and the value.
 *
 * These config tests live here rather than in check_config.c so the two
 * files can change independently.
 */
#include "metrics.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"
#include "config.h"
#include "dispatch.h"

#define TEXT_CAP 16384

static char text[TEXT_CAP];

static int format(const char *line, uint64_t max_memory, const char *version)
{
    int n = metrics_format(line, max_memory, version, text, sizeof(text));

    ck_assert_int_ge(n, 0);
    ck_assert_int_lt(n, (int)sizeof(text));
    ck_assert_uint_eq(strlen(text), (size_t)n);
    return n;
}

/* The text holds exactly "# HELP name ...\n# TYPE name type\nname value\n". */
static void expect_metric(const char *name, const char *type, const char *value)
{
    char type_line[160];
    char sample[160];
    char help_start[160];
    const char *help;
    const char *type_at;

    snprintf(help_start, sizeof(help_start), "# HELP %s ", name);
    snprintf(type_line, sizeof(type_line), "\n# TYPE %s %s\n%s %s\n", name, type, name, value);
    snprintf(sample, sizeof(sample), "\n%s %s\n", name, value);
    help = strstr(text, help_start);
    ck_assert_msg(help != NULL, "no HELP for %s in:\n%s", name, text);
    ck_assert_msg(help == text || help[-1] == '\n', "HELP of %s not at a line start", name);
    type_at = strchr(help, '\n');
    ck_assert_msg(type_at != NULL && strncmp(type_at, type_line, strlen(type_line)) == 0,
                  "%s: expected TYPE %s and value %s after its HELP", name, type, value);
}

static void expect_absent(const char *fragment)
{
    ck_assert_msg(strstr(text, fragment) == NULL, "unexpected '%s' in:\n%s", fragment, text);
}

/* Every line is a comment or "name[{labels}] value" (an integer, or a
 * decimal with one point), and the text ends with a newline. */
static void expect_well_formed(void)
{
    const char *line = text;

    ck_assert_uint_gt(strlen(text), 0);
    ck_assert_int_eq(text[strlen(text) - 1], '\n');
    while (*line != '\0') {
        const char *end = strchr(line, '\n');
        size_t len = (size_t)(end - line);

        ck_assert_ptr_nonnull(end);
        ck_assert_uint_gt(len, 0);
        if (strncmp(line, "# HELP sessiond_", 16) != 0 &&
            strncmp(line, "# TYPE sessiond_", 16) != 0) {
            const char *space = memchr(line, ' ', len);

            ck_assert_msg(strncmp(line, "sessiond_", 9) == 0, "bad line: %.*s", (int)len, line);
            ck_assert_msg(space != NULL && space + 1 < end, "no value: %.*s", (int)len, line);
            int points = 0;

            for (const char *p = space + 1; p < end; p++) {
                points += *p == '.';
                ck_assert_msg((*p >= '0' && *p <= '9') || (*p == '.' && points == 1 && p + 1 < end),
                              "bad value: %.*s", (int)len, line);
            }
        }
        line = end + 1;
    }
}

START_TEST(test_counters_and_gauges)
{
    format("gets=3 hits=1 misses=2 entries=5 bytes=700 malformed_short=4 v1=3 "
           "some_new_field=18446744073709551615",
           65536, "1.2.3");
    expect_metric("sessiond_gets_total", "counter", "3");
    expect_metric("sessiond_hits_total", "counter", "1");
    expect_metric("sessiond_misses_total", "counter", "2");
    expect_metric("sessiond_entries", "gauge", "5");
    expect_metric("sessiond_bytes", "gauge", "700");
    expect_metric("sessiond_malformed_short_total", "counter", "4");
    expect_metric("sessiond_v1_total", "counter", "3");
    expect_metric("sessiond_some_new_field_total", "counter", "18446744073709551615");
    expect_metric("sessiond_max_memory_bytes", "gauge", "65536");
    expect_metric("sessiond_up", "gauge", "1");
    ck_assert_ptr_nonnull(strstr(text, "\n# TYPE sessiond_build_info gauge\n"
                                       "sessiond_build_info{version=\"1.2.3\"} 1\n"));
    expect_absent("sessiond_entries_total");
    expect_absent("sessiond_bytes_total");
    expect_absent("sessiond_gets_total_total");
    expect_well_formed();
}
END_TEST

/* The shared store's fields: gauges where they are levels, and the latency
 * buckets turned into one cumulative histogram in seconds. */
START_TEST(test_backend_fields_and_histogram)
{
    format("hits=4 backend_hits=2 backend_up=1 backend_inflight=3 backend_failovers=1 "
           "backend_latency_le_100us=5 backend_latency_le_250us=0 backend_latency_le_1000us=2 "
           "backend_latency_le_inf=1 backend_latency_sum_us=2500123 ticket_keys=14",
           65536, "1.2.3");
    expect_metric("sessiond_hits_total", "counter", "4");
    expect_metric("sessiond_backend_hits_total", "counter", "2");
    expect_metric("sessiond_backend_up", "gauge", "1");
    expect_metric("sessiond_backend_inflight", "gauge", "3");
    expect_metric("sessiond_backend_failovers_total", "counter", "1");
    expect_metric("sessiond_ticket_keys", "gauge", "14");
    ck_assert_ptr_nonnull(strstr(text,
                                 "# TYPE sessiond_backend_latency_seconds histogram\n"
                                 "sessiond_backend_latency_seconds_bucket{le=\"0.000100\"} 5\n"
                                 "sessiond_backend_latency_seconds_bucket{le=\"0.000250\"} 5\n"
                                 "sessiond_backend_latency_seconds_bucket{le=\"0.001000\"} 7\n"
                                 "sessiond_backend_latency_seconds_bucket{le=\"+Inf\"} 8\n"
                                 "sessiond_backend_latency_seconds_sum 2.500123\n"
                                 "sessiond_backend_latency_seconds_count 8\n"));
    expect_absent("sessiond_backend_latency_le_100us_total");
    expect_absent("sessiond_backend_up_total");
    expect_well_formed();
}
END_TEST

START_TEST(test_junk_fields_skipped)
{
    format("  gets=1  Bad=2 sp-ace=3 neg=-4 hex=0x5 empty= =6 noeq big=18446744073709551616 "
           "v2=7 ",
           1024, "x");
    expect_metric("sessiond_gets_total", "counter", "1");
    expect_metric("sessiond_v2_total", "counter", "7");
    expect_absent("Bad");
    expect_absent("sp-ace");
    expect_absent("neg");
    expect_absent("hex");
    expect_absent("empty");
    expect_absent("noeq");
    expect_absent("sessiond_big");
    expect_absent("sessiond__total");
}
END_TEST

START_TEST(test_version_label_escaped)
{
    format("gets=1", 1, "a\"b\\c\nd");
    ck_assert_ptr_nonnull(strstr(text, "sessiond_build_info{version=\"a\\\"b\\\\c\\nd\"} 1\n"));
    format("", 1, "");
    ck_assert_ptr_nonnull(strstr(text, "sessiond_build_info{version=\"\"} 1\n"));
    expect_absent("_total");
}
END_TEST

START_TEST(test_truncation)
{
    const char *line = "gets=3 hits=1 entries=2";
    int full = format(line, 4096, "0.1.0");
    char small[40];
    char copy[TEXT_CAP];

    memcpy(copy, text, (size_t)full + 1);
    ck_assert_int_eq(metrics_format(line, 4096, "0.1.0", NULL, 0), full);
    memset(small, 'Z', sizeof(small));
    ck_assert_int_eq(metrics_format(line, 4096, "0.1.0", small, sizeof(small)), full);
    ck_assert_uint_eq(strlen(small), sizeof(small) - 1);
    ck_assert_int_eq(memcmp(small, copy, sizeof(small) - 1), 0);
    /* Exactly one byte short: everything but the final newline. */
    ck_assert_int_eq(metrics_format(line, 4096, "0.1.0", text, (size_t)full), full);
    ck_assert_uint_eq(strlen(text), (size_t)full - 1);
    ck_assert_int_eq(memcmp(text, copy, (size_t)full - 1), 0);
}
END_TEST

/* The real line: every field of it must become a metric. */
START_TEST(test_real_stats_line)
{
    cache_config cc = {.max_bytes = 1 << 20};
    cache *c = cache_create(&cc);
    dispatch_ctx ctx;
    char line[4096];
    char *save = NULL;
    int fields = 0;
    static const uint8_t key[3] = {1, 2, 3};

    ck_assert_ptr_nonnull(c);
    dispatch_init(&ctx, c, 60);
    ck_assert_int_eq(cache_put(c, key, sizeof(key), key, sizeof(key), 1000, 0), 0);
    ctx.counters.denied = 9;
    ck_assert_int_lt(dispatch_stats_line(&ctx, line, sizeof(line)), (int)sizeof(line));
    format(line, 1 << 20, SESSIOND_VERSION);
    expect_well_formed();
    expect_metric("sessiond_puts_total", "counter", "1");
    expect_metric("sessiond_entries", "gauge", "1");
    expect_metric("sessiond_denied_total", "counter", "9");
    expect_metric("sessiond_max_memory_bytes", "gauge", "1048576");
    for (char *field = strtok_r(line, " ", &save); field != NULL;
         field = strtok_r(NULL, " ", &save)) {
        char name[128];
        char *eq = strchr(field, '=');

        ck_assert_ptr_nonnull(eq);
        *eq = '\0';
        if (strcmp(field, "entries") == 0 || strcmp(field, "bytes") == 0)
            snprintf(name, sizeof(name), "\nsessiond_%s %s\n", field, eq + 1);
        else
            snprintf(name, sizeof(name), "\nsessiond_%s_total %s\n", field, eq + 1);
        ck_assert_msg(strstr(text, name) != NULL, "field %s missing from the metrics", field);
        fields++;
    }
    ck_assert_int_ge(fields, 24);
    cache_free(c);
}
END_TEST

/* ---- --metrics ------------------------------------------------------- */

typedef struct args {
    int argc;
    char *argv[8];
    char store[8][64];
} args;

static config_result parse(config *cfg, char *err, size_t errlen, const char *a, const char *b,
                           const char *c)
{
    static args x;
    const char *words[] = {"sessiond", a, b, c};

    memset(&x, 0, sizeof(x));
    for (size_t i = 0; i < 4 && words[i] != NULL; i++) {
        snprintf(x.store[i], sizeof(x.store[i]), "%s", words[i]);
        x.argv[x.argc++] = x.store[i];
    }
    return config_parse(cfg, x.argc, x.argv, err, errlen);
}

START_TEST(test_config_metrics_good)
{
    static const struct {
        const char *text;
        const char *addr;
        int port;
    } good[] = {
        {"127.0.0.1:9100", "127.0.0.1", 9100}, {"0.0.0.0:0", "0.0.0.0", 0},
        {"[::1]:65535", "::1", 65535},         {"[::]:0", "::", 0},
        {"[fd00::1:2]:80", "fd00::1:2", 80},   {"10.1.2.3:00080", "10.1.2.3", 80},
    };
    config cfg;
    char err[256];

    ck_assert_int_eq(parse(&cfg, err, sizeof(err), NULL, NULL, NULL), CONFIG_RUN);
    ck_assert_ptr_null(cfg.metrics);
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        ck_assert_int_eq(parse(&cfg, err, sizeof(err), "--metrics", good[i].text, NULL),
                         CONFIG_RUN);
        ck_assert_str_eq(cfg.metrics, good[i].text);
        ck_assert_str_eq(cfg.metrics_addr, good[i].addr);
        ck_assert_int_eq(cfg.metrics_port, good[i].port);
    }
    ck_assert_int_eq(
        parse(&cfg, err, sizeof(err), "--metrics=127.0.0.1:1", "--metrics=[::1]:2", NULL),
        CONFIG_RUN);
    ck_assert_str_eq(cfg.metrics_addr, "::1");
    ck_assert_int_eq(cfg.metrics_port, 2);
    /* A later parse without the flag starts from "off" again. */
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), "-p", "0", NULL), CONFIG_RUN);
    ck_assert_ptr_null(cfg.metrics);
}
END_TEST

START_TEST(test_config_metrics_bad)
{
    static const char *const bad[] = {
        "",
        "127.0.0.1",
        "127.0.0.1:",
        ":9100",
        "127.0.0.1:65536",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:80x",
        "127.0.0.1: 80",
        "localhost:9100",
        "1.2.3:9100",
        "::1:9100",
        "::1",
        "[::1]",
        "[::1]:",
        "[::1:9100",
        "[::1]9100",
        "[]:9100",
        "[127.0.0.1]:9100",
        "[::1]:99999",
        "[fe80::1%lo]:9100",
        "127.0.0.1:9100:1",
    };
    config cfg;
    char err[256];
    char expect[128];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ck_assert_msg(parse(&cfg, err, sizeof(err), "--metrics", bad[i], NULL) == CONFIG_ERROR,
                      "--metrics '%s' accepted", bad[i]);
        snprintf(expect, sizeof(expect), "invalid --metrics '%s': ", bad[i]);
        ck_assert_msg(strncmp(err, expect, strlen(expect)) == 0, "message for '%s': %s", bad[i],
                      err);
        ck_assert_uint_gt(strlen(err), strlen(expect));
        ck_assert_ptr_null(strchr(err, '\n'));
    }
    ck_assert_int_eq(parse(&cfg, err, sizeof(err), "--metrics", NULL, NULL), CONFIG_ERROR);
    ck_assert_ptr_nonnull(strstr(err, "--metrics"));
}
END_TEST

static Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");
    TCase *tc = tcase_create("core");

    tcase_add_test(tc, test_counters_and_gauges);
    tcase_add_test(tc, test_junk_fields_skipped);
    tcase_add_test(tc, test_backend_fields_and_histogram);
    tcase_add_test(tc, test_version_label_escaped);
    tcase_add_test(tc, test_truncation);
    tcase_add_test(tc, test_real_stats_line);
    tcase_add_test(tc, test_config_metrics_good);
    tcase_add_test(tc, test_config_metrics_bad);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(metrics_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
