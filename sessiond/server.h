/* server.h — the daemon's network side: the UDP socket, the libevent loop,
 * signals and the periodic sweep. Datagrams are handed to dispatch.
 *
 * server_create binds the socket before main() daemonizes, so an address in
 * use is reported on the terminal; the event base is made in server_run,
 * after the fork, because an epoll base does not survive fork().
 */
#ifndef SESSIOND_SERVER_H
#define SESSIOND_SERVER_H

#include <stddef.h>
#include "config.h"
#include "proto_v2.h"

typedef struct server server;

/* What main() read from the key and password files before dropping
 * privileges. server_create takes it over: it owns the sealer, copies the
 * key and the password and wipes its copies once the stores are set up;
 * the caller wipes its own struct. */
typedef struct server_secrets {
    proto_v2_sealer *sealer; /* NULL without --key-file */
    uint8_t cluster_key[PROTO_V2_CLUSTER_KEY_LEN];
    int have_cluster_key;
    char backend_password[512]; /* empty: no AUTH */
} server_secrets;

/* Binds cfg->listen_addr:cfg->port, creates the cache, builds the source
 * rules from cfg (loopback implied only when `sealer` is NULL), logs a
 * "policy:" line and then "listening on ADDR:PORT" (the real port when
 * cfg->port is 0). Takes ownership of `sealer` (the cluster key, or NULL),
 * also on failure. On failure returns NULL with a one-line reason in err. */
server *server_create(const config *cfg, server_secrets *secrets, char *err, size_t errlen);

/* Runs until SIGTERM or SIGINT. SIGHUP reopens the logs, SIGUSR1 logs the
 * stats line. Logs the stats line once more on the way out. Returns 0, or -1
 * if the loop could not run. */
int server_run(server *srv);

void server_free(server *srv);

#endif
