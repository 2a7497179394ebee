/* log.h — sessiond's logging: stderr in the foreground, syslog as a daemon.
 *
 * Priorities are syslog's (LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG); debug
 * lines are dropped unless enabled. Callers never pass session bytes or keys.
 */
#ifndef SESSIOND_LOG_H
#define SESSIOND_LOG_H

#include <syslog.h>

/* to_syslog 0: lines go to stderr as "2026-11-24T15:48:28Z sessiond[42] info: text". */
void log_init(int to_syslog, int debug);
/* SIGHUP: reopen the log target (closes and reopens syslog). */
void log_reopen(void);
void log_msg(int priority, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int log_debug_enabled(void);

#endif
