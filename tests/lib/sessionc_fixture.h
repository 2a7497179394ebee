/* sessionc_fixture.h — helpers shared by the libsessionc tests
 * (tests/unit/check_sessionc*.c). Each asserts with Check, so call them only
 * from inside a Check test. See sessionc_fixture.c for the details.
 */
#ifndef SESSIONC_FIXTURE_H
#define SESSIONC_FIXTURE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "harness.h"
#include "sessionc.h"

#define SF_LIVE_TIMEOUT_MS 2000 /* generous: the sanitizer build is slow */

/* Starts a daemon (with extra arguments, NULL-terminated) or fails the test. */
void sf_start_daemon(th_daemon *d);
void sf_start_daemon_args(th_daemon *d, const char *const *args);

/* A bound loopback UDP socket nobody reads; its port goes to *port. */
int sf_silent_socket(int *port);
/* A loopback port nobody listens on: datagrams to it are refused. */
int sf_refused_port(void);
/* Whether a datagram is a GET request of either protocol version. */
int sf_is_get(const uint8_t *buf, size_t len);
/* Datagrams queued on a silent socket (read and dropped); *gets (if not
 * NULL) counts the GETs among them. */
int sf_drain_count_gets(int fd, int *gets);
int sf_drain_count(int fd);

/* Clients: of a server list with breaker settings; of one loopback port with
 * a timeout; with explicit options; speaking one protocol version; with a
 * key file (and maybe a next key file). Each fails the test if refused. */
sc_client *sf_client_for(const char *servers, unsigned timeout_ms, unsigned failures,
                         unsigned backoff_min, unsigned backoff_max);
sc_client *sf_client_one(int port, unsigned timeout_ms);
sc_client *sf_client_opts(int port, sc_options *opt);
sc_client *sf_client_proto(int port, unsigned protocol);
sc_client *sf_client_keyed(int port, const char *key_file, const char *next_key_file,
                           unsigned timeout_ms);

/* One counter out of the daemon's stats line. */
long long sf_daemon_stat(th_daemon *d, const char *name);
/* A full 32-byte session ID made of a and b. */
void sf_make_key(uint8_t key[32], unsigned a, unsigned b);
/* A random cluster key written as 64 hex digits to dir/name with `mode`;
 * the key and the path are handed back. */
void sf_write_key_file(const char *dir, const char *name, mode_t mode, uint8_t key[32], char *path,
                       size_t cap);

#endif
