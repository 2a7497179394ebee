/* acl.c — CIDR rules parsed from the command line and matched against each
 * datagram's source address (see acl.h for the model).
 *
 * Parsing is strict, because a rule that silently means something else than
 * its author thinks opens the cache to the wrong hosts:
 *   - addresses go through inet_pton only (no "10.1" inet_aton shorthand,
 *     no names, no IPv6 zone "%eth0");
 *   - the prefix length is plain decimal digits, at most three, within the
 *     family's range;
 *   - bits set after the prefix ("10.0.0.1/8") are refused rather than
 *     masked off: the author meant a host or a network, and we cannot tell
 *     which;
 *   - IPv4-mapped IPv6 ("::ffff:10.0.0.0/104") is refused: such sources
 *     never reach an IPV6_V6ONLY socket honestly.
 *
 * Matching: IPv4 rules are kept as (network, mask) pairs of host-order
 * 32-bit words; IPv6 ones as 16-byte network and mask arrays compared a
 * byte at a time with early exit. Rules are stored as given; an acl with a
 * /0 rule matches every sender of that family, as written.
 */
#include "acl.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

/* The rule's address part fits this: an IPv6 address is at most 45 chars. */
#define ACL_ADDR_TEXT 64

static void acl_mask_bytes(unsigned prefix, size_t len, uint8_t *mask)
{
    for (size_t i = 0; i < len; i++) {
        unsigned bits = prefix > 8 * i ? prefix - 8 * (unsigned)i : 0;

        mask[i] = bits >= 8 ? 0xff : (uint8_t)(0xff << (8 - bits));
    }
}

/* Decimal digits only, at most three, no sign or spaces. */
static int acl_parse_prefix(const char *text, unsigned max, unsigned *out)
{
    unsigned value = 0;
    size_t len = strlen(text);

    if (len == 0 || len > 3)
        return -1;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)text[i]))
            return -1;
        value = value * 10 + (unsigned)(text[i] - '0');
    }
    if (value > max)
        return -1;
    *out = value;
    return 0;
}

int acl_parse_rule(const char *text, acl_rule *rule, char *err, size_t errlen)
{
    char addr[ACL_ADDR_TEXT];
    const char *slash;
    size_t addr_len, len;
    uint8_t mask[16];
    acl_rule r;

    if (text == NULL || text[0] == '\0') {
        snprintf(err, errlen, "'': empty address");
        return -1;
    }
    slash = strchr(text, '/');
    addr_len = slash != NULL ? (size_t)(slash - text) : strlen(text);
    if (addr_len == 0 || addr_len >= sizeof(addr)) {
        snprintf(err, errlen, "'%s': not an IPv4 or IPv6 address with an optional /prefix", text);
        return -1;
    }
    memcpy(addr, text, addr_len);
    addr[addr_len] = '\0';
    memset(&r, 0, sizeof(r));
    if (inet_pton(AF_INET, addr, r.addr) == 1) {
        r.family = AF_INET;
        len = 4;
    } else if (inet_pton(AF_INET6, addr, r.addr) == 1) {
        r.family = AF_INET6;
        len = 16;
    } else {
        snprintf(err, errlen, "'%s': not a numeric IPv4 or IPv6 address", text);
        return -1;
    }
    if (r.family == AF_INET6 && IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)r.addr)) {
        snprintf(err, errlen,
                 "'%s': an IPv4-mapped IPv6 address never matches (the socket is IPv6-only); "
                 "write the IPv4 form",
                 text);
        return -1;
    }
    r.prefix = (unsigned)(8 * len);
    if (slash != NULL && acl_parse_prefix(slash + 1, (unsigned)(8 * len), &r.prefix) != 0) {
        snprintf(err, errlen, "'%s': the prefix length must be a number from 0 to %u", text,
                 (unsigned)(8 * len));
        return -1;
    }
    acl_mask_bytes(r.prefix, len, mask);
    for (size_t i = 0; i < len; i++) {
        if ((r.addr[i] & (uint8_t)~mask[i]) != 0) {
            snprintf(err, errlen, "'%s': bits set after the /%u prefix; write the network address",
                     text, r.prefix);
            return -1;
        }
    }
    *rule = r;
    return 0;
}

void acl_format_rule(const acl_rule *rule, char *buf, size_t cap)
{
    char addr[INET6_ADDRSTRLEN] = "?";

    inet_ntop(rule->family, rule->addr, addr, sizeof(addr));
    snprintf(buf, cap, "%s/%u", addr, rule->prefix);
}

void acl_init(acl *a, int allow_loopback)
{
    memset(a, 0, sizeof(*a));
    a->loopback = allow_loopback != 0;
}

int acl_add(acl *a, const acl_rule *rule)
{
    if (rule->family == AF_INET && rule->prefix <= 32) {
        uint32_t net;
        uint32_t mask = rule->prefix == 0 ? 0 : 0xffffffffu << (32 - rule->prefix);

        if (a->n_v4 >= ACL_MAX_RULES)
            return -1;
        memcpy(&net, rule->addr, 4);
        a->v4_net[a->n_v4] = ntohl(net) & mask;
        a->v4_mask[a->n_v4] = mask;
        a->n_v4++;
        return 0;
    }
    if (rule->family == AF_INET6 && rule->prefix <= 128) {
        if (a->n_v6 >= ACL_MAX_RULES)
            return -1;
        acl_mask_bytes(rule->prefix, 16, a->v6_mask[a->n_v6]);
        for (size_t i = 0; i < 16; i++)
            a->v6_net[a->n_v6][i] = rule->addr[i] & a->v6_mask[a->n_v6][i];
        a->n_v6++;
        return 0;
    }
    return -1;
}

static int acl_match_v4(const acl *a, uint32_t addr)
{
    if (a->loopback && (addr >> 24) == 127)
        return 1;
    for (size_t i = 0; i < a->n_v4; i++) {
        if ((addr & a->v4_mask[i]) == a->v4_net[i])
            return 1;
    }
    return 0;
}

static int acl_match_v6(const acl *a, const struct in6_addr *in6)
{
    const uint8_t *addr = in6->s6_addr;

    if (IN6_IS_ADDR_V4MAPPED(in6))
        return 0;
    if (a->loopback && IN6_IS_ADDR_LOOPBACK(in6))
        return 1;
    for (size_t i = 0; i < a->n_v6; i++) {
        size_t b = 0;

        while (b < 16 && (addr[b] & a->v6_mask[i][b]) == a->v6_net[i][b])
            b++;
        if (b == 16)
            return 1;
    }
    return 0;
}

int acl_match(const acl *a, const struct sockaddr *sa)
{
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        return acl_match_v4(a, ntohl(sin->sin_addr.s_addr));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        return acl_match_v6(a, &sin6->sin6_addr);
    }
    return 0;
}

int acl_is_loopback(const struct sockaddr *sa)
{
    if (sa == NULL)
        return 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        return IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
    }
    return 0;
}
