/* sessionc_fixture.c — helpers shared by the libsessionc tests
 * (tests/unit/check_sessionc*.c): starting daemons, sockets that never
 * answer or refuse, clients with given options, daemon counters, and
 * random key files.
 *
 * Every helper asserts with Check, so it must run inside a Check test: a
 * failure ends the test that called it, as if the assert were inline. Kept
 * as plain functions rather than a Check fixture because the tests need
 * different daemons (with and without key files) and clients per test.
 */
#include <check.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <openssl/rand.h>

#include "harness.h"
#include "proto.h"
#include "proto_v2.h"
#include "sessionc.h"
#include "sessionc_fixture.h"

void sf_start_daemon(th_daemon *d)
{
    ck_assert_msg(th_daemon_start(d, NULL) == 0, "sessiond did not start (SESSIOND=%s)",
                  getenv("SESSIOND") ? getenv("SESSIOND") : "unset");
}

/* A UDP socket bound on loopback that nobody ever reads: a server that is
 * up as far as the kernel knows but never answers. */
int sf_silent_socket(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* A loopback port nobody listens on (bound, read, closed): datagrams to it
 * come back as ICMP port unreachable, i.e. ECONNREFUSED. */
int sf_refused_port(void)
{
    int port, fd = sf_silent_socket(&port);

    close(fd);
    return port;
}

/* A GET request of either protocol version (v1 type 0x01 is v2's PUT). */
int sf_is_get(const uint8_t *buf, size_t len)
{
    return len >= 2 && ((buf[0] == PROTO_V1_VERSION && buf[1] == PROTO_V1_GET) ||
                        (buf[0] == PROTO_V2_VERSION && buf[1] == PROTO_V2_GET));
}

/* Datagrams queued on a silent socket; *gets (if not NULL) counts the GETs. */
int sf_drain_count_gets(int fd, int *gets)
{
    uint8_t buf[PROTO_MAX_DATAGRAM];
    ssize_t len;
    int n = 0;

    if (gets != NULL)
        *gets = 0;
    while ((len = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) >= 0) {
        n++;
        if (gets != NULL && sf_is_get(buf, (size_t)len))
            (*gets)++;
    }
    return n;
}

int sf_drain_count(int fd)
{
    return sf_drain_count_gets(fd, NULL);
}

sc_client *sf_client_for(const char *servers, unsigned timeout_ms, unsigned failures,
                         unsigned backoff_min, unsigned backoff_max)
{
    sc_options opt;
    char err[256];
    sc_client *c;

    sc_options_init(&opt);
    opt.timeout_ms = timeout_ms;
    opt.breaker_failures = failures;
    opt.backoff_min_ms = backoff_min;
    opt.backoff_max_ms = backoff_max;
    c = sc_client_new(servers, &opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "sc_client_new(%s): %s", servers, err);
    return c;
}

sc_client *sf_client_one(int port, unsigned timeout_ms)
{
    char list[64];

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    return sf_client_for(list, timeout_ms, 3, 1000, 30000);
}

/* A client of one server with explicit options (timeout SF_LIVE_TIMEOUT_MS
 * unless set). */
sc_client *sf_client_opts(int port, sc_options *opt)
{
    char list[64], err[512];
    sc_client *c;

    snprintf(list, sizeof(list), "127.0.0.1:%d", port);
    c = sc_client_new(list, opt, err, sizeof(err));
    ck_assert_msg(c != NULL, "sc_client_new(%s): %s", list, err);
    return c;
}

/* A client speaking `protocol` to one server. */
sc_client *sf_client_proto(int port, unsigned protocol)
{
    sc_options opt;

    sc_options_init(&opt);
    opt.timeout_ms = SF_LIVE_TIMEOUT_MS;
    opt.protocol = protocol;
    return sf_client_opts(port, &opt);
}

long long sf_daemon_stat(th_daemon *d, const char *name)
{
    char line[2048];

    ck_assert_int_eq(th_daemon_stats(d, line, sizeof(line)), 0);
    return th_stat(line, name);
}

void sf_make_key(uint8_t key[32], unsigned a, unsigned b)
{
    memset(key, 0, 32);
    snprintf((char *)key, 32, "k-%u-%u-", a, b);
    key[31] = (uint8_t)(a ^ b ^ 0x5a); /* full 32 bytes, like OpenSSL's IDs */
}

/* Writes a random cluster key as 64 hex digits into dir/name with `mode`;
 * the key and the path are handed back. */
void sf_write_key_file(const char *dir, const char *name, mode_t mode, uint8_t key[32], char *path,
                       size_t cap)
{
    FILE *f;
    int fd;

    snprintf(path, cap, "%s/%s", dir, name);
    ck_assert_int_eq(RAND_bytes(key, 32), 1);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fchmod(fd, mode), 0); /* whatever the umask did */
    f = fdopen(fd, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 32; i++)
        fprintf(f, "%02x", key[i]);
    fputc('\n', f);
    ck_assert_int_eq(fclose(f), 0);
}

void sf_start_daemon_args(th_daemon *d, const char *const *args)
{
    ck_assert_msg(th_daemon_start(d, args) == 0, "sessiond did not start (SESSIOND=%s)",
                  getenv("SESSIOND") ? getenv("SESSIOND") : "unset");
}

/* A client of one server with a key file (and maybe a next key file). */
sc_client *sf_client_keyed(int port, const char *key_file, const char *next_key_file,
                           unsigned timeout_ms)
{
    sc_options opt;

    sc_options_init(&opt);
    opt.timeout_ms = timeout_ms;
    opt.key_file = key_file;
    opt.next_key_file = next_key_file;
    return sf_client_opts(port, &opt);
}
