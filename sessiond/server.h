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

typedef struct server server;

/* Binds cfg->listen_addr:cfg->port, creates the cache, and logs
 * "listening on ADDR:PORT" (the real port when cfg->port is 0). On failure
 * returns NULL with a one-line reason in err. */
server *server_create(const config *cfg, char *err, size_t errlen);

/* Runs until SIGTERM or SIGINT. SIGHUP reopens the logs, SIGUSR1 logs the
 * stats line. Logs the stats line once more on the way out. Returns 0, or -1
 * if the loop could not run. */
int server_run(server *srv);

void server_free(server *srv);

#endif
