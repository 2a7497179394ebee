/* check_acl.c — unit tests of the source-address rules (sessiond/acl.c).
 *
 * What is covered: parsing CIDR blocks, IPv4 and IPv6, with and without a
 * prefix (a bare address is a /32 or /128), their canonical text form, and
 * every refusal (empty, junk, inet_aton shorthand, bad or out-of-range
 * prefix lengths, bits set after the prefix, IPv4-mapped addresses, zones,
 * over-long text), each with a one-line message naming the text; matching
 * at the edges of byte-aligned and unaligned prefixes, /0 rules (which stay
 * within their family), the built-in loopback rule on and off (all of
 * 127.0.0.0/8 and ::1), IPv4-mapped IPv6 senders (never matched: the
 * daemon's IPv6 socket is IPV6_V6ONLY, so honest IPv4 traffic never arrives
 * in that form), foreign address families, and the rule cap per family.
 */
#include "acl.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

static acl_rule parse_ok(const char *text)
{
    acl_rule rule;
    char err[256] = "";

    ck_assert_msg(acl_parse_rule(text, &rule, err, sizeof(err)) == 0, "'%s' refused: %s", text,
                  err);
    return rule;
}

static void parse_bad(const char *text, const char *needle)
{
    acl_rule rule;
    char err[256];

    memset(&rule, 0x5a, sizeof(rule));
    memset(err, 0, sizeof(err));
    ck_assert_msg(acl_parse_rule(text, &rule, err, sizeof(err)) == -1, "'%s' accepted", text);
    ck_assert_msg(strlen(err) > 0 && strchr(err, '\n') == NULL, "'%s': message \"%s\"", text, err);
    ck_assert_msg(strstr(err, needle) != NULL, "'%s': message does not name '%s': %s", text, needle,
                  err);
    ck_assert_int_eq(rule.prefix, 0x5a5a5a5a); /* untouched on failure */
}

static void expect_format(const char *text, const char *canonical)
{
    acl_rule rule = parse_ok(text);
    char buf[ACL_RULE_TEXT];

    acl_format_rule(&rule, buf, sizeof(buf));
    ck_assert_str_eq(buf, canonical);
}

static void add(acl *a, const char *text)
{
    acl_rule rule = parse_ok(text);

    ck_assert_int_eq(acl_add(a, &rule), 0);
}

static int match4(const acl *a, const char *addr)
{
    struct sockaddr_in sin;

    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(4242);
    ck_assert_int_eq(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
    return acl_match(a, (const struct sockaddr *)&sin);
}

static int match6(const acl *a, const char *addr)
{
    struct sockaddr_in6 sin6;

    memset(&sin6, 0, sizeof(sin6));
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(4242);
    ck_assert_int_eq(inet_pton(AF_INET6, addr, &sin6.sin6_addr), 1);
    return acl_match(a, (const struct sockaddr *)&sin6);
}

/* ---- parsing ------------------------------------------------------------ */

START_TEST(test_parse_ipv4)
{
    static const uint8_t ten[4] = {10, 0, 0, 0};
    acl_rule r = parse_ok("10.0.0.0/8");

    ck_assert_int_eq(r.family, AF_INET);
    ck_assert_uint_eq(r.prefix, 8);
    ck_assert_mem_eq(r.addr, ten, 4);
    r = parse_ok("127.0.0.1");
    ck_assert_uint_eq(r.prefix, 32);
    r = parse_ok("0.0.0.0/0");
    ck_assert_uint_eq(r.prefix, 0);
    r = parse_ok("192.168.1.128/25");
    ck_assert_uint_eq(r.prefix, 25);
    expect_format("10.0.0.0/8", "10.0.0.0/8");
    expect_format("127.0.0.1", "127.0.0.1/32");
    expect_format("10.0.0.0/008", "10.0.0.0/8"); /* three digits at most, leading zeros fine */
}
END_TEST

START_TEST(test_parse_ipv6)
{
    acl_rule r = parse_ok("fd00::/8");

    ck_assert_int_eq(r.family, AF_INET6);
    ck_assert_uint_eq(r.prefix, 8);
    ck_assert_uint_eq(r.addr[0], 0xfd);
    r = parse_ok("::1");
    ck_assert_uint_eq(r.prefix, 128);
    r = parse_ok("::/0");
    ck_assert_uint_eq(r.prefix, 0);
    r = parse_ok("2001:db8::/33");
    ck_assert_uint_eq(r.prefix, 33);
    expect_format("FD00::/8", "fd00::/8");
    expect_format("::1", "::1/128");
    expect_format("2001:0db8:0000::/32", "2001:db8::/32");
}
END_TEST

START_TEST(test_parse_refusals)
{
    char longer[200];

    parse_bad("", "empty");
    parse_bad("/8", "'/8'");
    parse_bad("10.0.0.0/", "prefix length");
    parse_bad("10.0.0.0/33", "from 0 to 32");
    parse_bad("::/129", "from 0 to 128");
    parse_bad("10.0.0.0/+8", "prefix length");
    parse_bad("10.0.0.0/-8", "prefix length");
    parse_bad("10.0.0.0/ 8", "prefix length");
    parse_bad("10.0.0.0/8 ", "prefix length");
    parse_bad("10.0.0.0/0008", "prefix length");
    parse_bad("10.0.0.0/8/8", "prefix length");
    parse_bad("10.0.0.0/0x8", "prefix length");
    parse_bad("10.1/16", "not a numeric");      /* inet_aton shorthand */
    parse_bad("10.0.0.0.0/8", "not a numeric"); /* five parts */
    parse_bad(" 10.0.0.0/8", "not a numeric");
    parse_bad("localhost", "not a numeric");
    parse_bad("[::1]", "not a numeric");
    parse_bad("fe80::1%eth0", "not a numeric");
    parse_bad("10.0.0.1/8", "bits set after the /8");
    parse_bad("192.168.1.129/25", "bits set after the /25");
    parse_bad("fd00::1/8", "bits set after the /8");
    parse_bad("2001:db8:4000::/33", "bits set after the /33");
    parse_ok("2001:db8:8000::/33"); /* bit 33 is inside the prefix */
    parse_bad("::ffff:127.0.0.1", "IPv4-mapped");
    parse_bad("::ffff:10.0.0.0/104", "IPv4-mapped");
    memset(longer, '1', sizeof(longer) - 1);
    longer[sizeof(longer) - 1] = '\0';
    parse_bad(longer, "not an IPv4 or IPv6 address");
}
END_TEST

/* ---- matching ----------------------------------------------------------- */

START_TEST(test_match_ipv4)
{
    acl a;

    acl_init(&a, 0);
    add(&a, "10.0.0.0/8");
    add(&a, "192.168.1.7");
    add(&a, "172.16.0.0/12");
    ck_assert_int_eq(match4(&a, "10.0.0.0"), 1);
    ck_assert_int_eq(match4(&a, "10.255.255.255"), 1);
    ck_assert_int_eq(match4(&a, "11.0.0.0"), 0);
    ck_assert_int_eq(match4(&a, "9.255.255.255"), 0);
    ck_assert_int_eq(match4(&a, "192.168.1.7"), 1);
    ck_assert_int_eq(match4(&a, "192.168.1.8"), 0);
    ck_assert_int_eq(match4(&a, "172.31.255.255"), 1); /* unaligned /12 edges */
    ck_assert_int_eq(match4(&a, "172.32.0.0"), 0);
    ck_assert_int_eq(match4(&a, "172.15.255.255"), 0);
    /* No loopback unless asked for. */
    ck_assert_int_eq(match4(&a, "127.0.0.1"), 0);
    ck_assert_int_eq(match6(&a, "::1"), 0);
}
END_TEST

START_TEST(test_match_ipv6)
{
    acl a;

    acl_init(&a, 0);
    add(&a, "fd00::/8");
    add(&a, "2001:db8::/33");
    add(&a, "2001:db8:ffff::5");
    ck_assert_int_eq(match6(&a, "fd12:3456::1"), 1);
    ck_assert_int_eq(match6(&a, "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), 1);
    ck_assert_int_eq(match6(&a, "fe00::1"), 0);
    ck_assert_int_eq(match6(&a, "fc00::1"), 0);
    ck_assert_int_eq(match6(&a, "2001:db8:7fff:ffff::1"), 1);
    ck_assert_int_eq(match6(&a, "2001:db8:8000::"), 0);
    ck_assert_int_eq(match6(&a, "2001:db8:ffff::5"), 1);
    ck_assert_int_eq(match6(&a, "2001:db8:ffff::6"), 0);
    ck_assert_int_eq(match6(&a, "::1"), 0);
    /* IPv6 rules never match IPv4 senders. */
    ck_assert_int_eq(match4(&a, "10.0.0.1"), 0);
}
END_TEST

START_TEST(test_match_everything_within_family)
{
    acl a;

    acl_init(&a, 0);
    add(&a, "0.0.0.0/0");
    ck_assert_int_eq(match4(&a, "1.2.3.4"), 1);
    ck_assert_int_eq(match4(&a, "255.255.255.255"), 1);
    ck_assert_int_eq(match6(&a, "2001:db8::1"), 0);
    acl_init(&a, 0);
    add(&a, "::/0");
    ck_assert_int_eq(match6(&a, "2001:db8::1"), 1);
    ck_assert_int_eq(match4(&a, "1.2.3.4"), 0);
}
END_TEST

START_TEST(test_builtin_loopback)
{
    acl a;

    acl_init(&a, 1);
    ck_assert_int_eq(match4(&a, "127.0.0.1"), 1);
    ck_assert_int_eq(match4(&a, "127.1.2.3"), 1);
    ck_assert_int_eq(match4(&a, "127.255.255.255"), 1);
    ck_assert_int_eq(match4(&a, "128.0.0.1"), 0);
    ck_assert_int_eq(match4(&a, "126.255.255.255"), 0);
    ck_assert_int_eq(match6(&a, "::1"), 1);
    ck_assert_int_eq(match6(&a, "::2"), 0);
    ck_assert_int_eq(match6(&a, "::"), 0);
    /* Rules add to it. */
    add(&a, "10.0.0.0/8");
    ck_assert_int_eq(match4(&a, "10.1.1.1"), 1);
    ck_assert_int_eq(match4(&a, "127.0.0.1"), 1);
    /* Off: loopback is just another address. */
    acl_init(&a, 0);
    add(&a, "127.0.0.1/32");
    ck_assert_int_eq(match4(&a, "127.0.0.1"), 1);
    ck_assert_int_eq(match4(&a, "127.0.0.2"), 0);
    ck_assert_int_eq(match6(&a, "::1"), 0);
}
END_TEST

/* The daemon's IPv6 socket is IPV6_V6ONLY: IPv4 senders never appear as
 * ::ffff:a.b.c.d, so such a source is forged and matches nothing, not even
 * the loopback rule or ::/0. */
START_TEST(test_v4_mapped_never_matches)
{
    acl a;

    acl_init(&a, 1);
    add(&a, "0.0.0.0/0");
    add(&a, "::/0");
    ck_assert_int_eq(match6(&a, "::ffff:127.0.0.1"), 0);
    ck_assert_int_eq(match6(&a, "::ffff:10.0.0.1"), 0);
    ck_assert_int_eq(match4(&a, "127.0.0.1"), 1);
    ck_assert_int_eq(match6(&a, "2001:db8::1"), 1);
}
END_TEST

START_TEST(test_other_families)
{
    struct sockaddr_un sun;
    acl a;

    acl_init(&a, 1);
    add(&a, "0.0.0.0/0");
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    ck_assert_int_eq(acl_match(&a, (const struct sockaddr *)&sun), 0);
    ck_assert_int_eq(acl_match(&a, NULL), 0);
}
END_TEST

START_TEST(test_rule_cap)
{
    acl_rule v4 = parse_ok("10.0.0.0/8");
    acl_rule v6 = parse_ok("fd00::/8");
    acl_rule bad = v4;
    acl a;

    acl_init(&a, 0);
    for (int i = 0; i < ACL_MAX_RULES; i++) {
        ck_assert_int_eq(acl_add(&a, &v4), 0);
        ck_assert_int_eq(acl_add(&a, &v6), 0);
    }
    ck_assert_int_eq(acl_add(&a, &v4), -1);
    ck_assert_int_eq(acl_add(&a, &v6), -1);
    ck_assert_uint_eq(a.n_v4, ACL_MAX_RULES);
    ck_assert_uint_eq(a.n_v6, ACL_MAX_RULES);
    /* A rule that did not come from the parser is checked too. */
    acl_init(&a, 0);
    bad.prefix = 33;
    ck_assert_int_eq(acl_add(&a, &bad), -1);
    bad.family = AF_UNIX;
    bad.prefix = 8;
    ck_assert_int_eq(acl_add(&a, &bad), -1);
    ck_assert_int_eq(match4(&a, "10.0.0.1"), 0);
}
END_TEST

static Suite *acl_suite(void)
{
    Suite *s = suite_create("acl");
    TCase *tc = tcase_create("parse");

    tcase_add_test(tc, test_parse_ipv4);
    tcase_add_test(tc, test_parse_ipv6);
    tcase_add_test(tc, test_parse_refusals);
    suite_add_tcase(s, tc);
    tc = tcase_create("match");
    tcase_add_test(tc, test_match_ipv4);
    tcase_add_test(tc, test_match_ipv6);
    tcase_add_test(tc, test_match_everything_within_family);
    tcase_add_test(tc, test_builtin_loopback);
    tcase_add_test(tc, test_v4_mapped_never_matches);
    tcase_add_test(tc, test_other_families);
    tcase_add_test(tc, test_rule_cap);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(acl_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
