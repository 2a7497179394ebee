/* metrics.h — sessiond's Prometheus endpoint (--metrics ADDR:PORT): an
 * evhttp server on the daemon's own event base answering GET /metrics in
 * the text exposition format, version 0.0.4.
 *
 * Two halves, so the text can be tested without a socket:
 *   - metrics_format turns a stats line (dispatch_stats_line) into the
 *     exposition text: a pure function.
 *   - metrics_listen / metrics_start / metrics_free run the listener. The
 *     socket is bound by server_create (before the daemon detaches, so a
 *     busy port reaches the terminal, and before -u drops privileges); the
 *     evhttp server is attached in server_run, once the event base exists.
 */
#ifndef SESSIOND_METRICS_H
#define SESSIOND_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "dispatch.h"

struct event_base;
typedef struct metrics metrics;

/* The value of the Content-Type header of a /metrics answer. */
#define METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Writes the exposition text for `stats_line` (name=value fields separated
 * by spaces, as dispatch_stats_line writes them) to buf[0..cap), with
 * snprintf semantics: returns the length of the whole text, which was
 * truncated (and NUL-terminated) if that is >= cap; buf may be NULL when
 * cap is 0. Every field becomes sessiond_<name>_total (a counter), except
 * entries and bytes, which become the gauges sessiond_entries and
 * sessiond_bytes; then come sessiond_max_memory_bytes (max_memory),
 * sessiond_up 1 and sessiond_build_info{version="..."} 1. A field whose
 * name is not [a-z0-9_]+ or whose value is not decimal digits is left out. */
int metrics_format(const char *stats_line, uint64_t max_memory, const char *version, char *buf,
                   size_t cap);

/* Binds a listening TCP socket to the numeric address `addr` (IPv4 or
 * IPv6, without brackets) and `port` (0: the kernel picks). Writes the
 * bound address as "127.0.0.1:9100" or "[::1]:9100", with the real port,
 * to bound. Returns the socket, or -1 with a one-line reason in err. */
int metrics_listen(const char *addr, int port, char *bound, size_t boundlen, char *err,
                   size_t errlen);

/* Serves the listening socket `fd` on `base`, reading the counters from
 * `dispatch` (which must outlive the server) at every request. Takes
 * ownership of fd, also on failure (it is closed). Returns NULL on failure. */
metrics *metrics_start(struct event_base *base, int fd, const dispatch_ctx *dispatch,
                       uint64_t max_memory);

/* Closes the listener and every open connection. NULL is a no-op. Call it
 * before freeing the event base. */
void metrics_free(metrics *m);

#endif
