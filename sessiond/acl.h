/* acl.h — source-address rules: which senders may use plaintext (v1 and
 * unsealed v2).
 *
 * A rule is a CIDR block, IPv4 ("10.0.0.0/8", "127.0.0.1") or IPv6
 * ("fd00::/8", "::1"); a bare address is a /32 or /128. An acl is a fixed
 * array of rules plus one switch, the built-in loopback rule (127.0.0.0/8 and
 * ::1), which the daemon turns on only when no cluster key is configured.
 * Nothing here allocates: an acl lives inside the config and the server.
 *
 * Matching is a linear scan of the rules of the sender's family, a mask and
 * a compare each: with the handful of rules a cluster has, that is a few
 * nanoseconds per datagram. The cheaper alternative for hundreds of rules, a
 * prefix trie, is not worth its code at this size (ACL_MAX_RULES caps it).
 *
 * IPv4-mapped IPv6 sources (::ffff:a.b.c.d) never match, not even loopback:
 * the daemon's IPv6 socket is IPV6_V6ONLY, so real IPv4 traffic never shows
 * up in that form, and one that does was forged. For the same reason a rule
 * written in that form is refused with a hint to write the IPv4 block.
 */
#ifndef SESSIOND_ACL_H
#define SESSIOND_ACL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define ACL_MAX_RULES 64
/* Longest text acl_format_rule writes: an IPv6 address, "/128", the NUL. */
#define ACL_RULE_TEXT 56

typedef struct acl_rule {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16]; /* network byte order; first 4 bytes for IPv4; host bits zero */
    unsigned prefix;  /* 0..32 or 0..128 */
} acl_rule;

typedef struct acl {
    int loopback; /* the built-in rule: 127.0.0.0/8 and ::1 */
    size_t n_v4;
    uint32_t v4_net[ACL_MAX_RULES]; /* host byte order, already masked */
    uint32_t v4_mask[ACL_MAX_RULES];
    size_t n_v6;
    uint8_t v6_net[ACL_MAX_RULES][16];
    uint8_t v6_mask[ACL_MAX_RULES][16];
} acl;

/* Parses one CIDR block. Returns 0, or -1 with a one-line reason in err (not
 * naming the flag: the caller does): not an address, bad prefix length, bits
 * set after the prefix ("10.0.0.1/8"), an IPv4-mapped IPv6 address. */
int acl_parse_rule(const char *text, acl_rule *rule, char *err, size_t errlen);

/* "10.0.0.0/8", "fd00::/8": the canonical form of a rule. */
void acl_format_rule(const acl_rule *rule, char *buf, size_t cap);

/* An acl with no rules; allow_loopback turns on the built-in loopback rule. */
void acl_init(acl *a, int allow_loopback);

/* Adds a rule. Returns 0, or -1 when the acl already holds ACL_MAX_RULES
 * rules of that family or the rule is not a valid one. */
int acl_add(acl *a, const acl_rule *rule);

/* 1 if the sender `sa` (AF_INET or AF_INET6; anything else never matches)
 * matches a rule, else 0. */
int acl_match(const acl *a, const struct sockaddr *sa);

/* 1 if `sa` is a loopback address (127.0.0.0/8 or ::1), whatever the
 * rules: the kernel drops packets from outside that claim such a source, so
 * answers to it cannot be aimed at a third party. */
int acl_is_loopback(const struct sockaddr *sa);

#endif
