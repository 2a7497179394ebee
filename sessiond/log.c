/* log.c — sessiond's log lines, to stderr in the foreground or to syslog.
 *
 * How it works: log_msg formats the message into one stack buffer, turns
 * any control character into a space (a line is a line, whatever a caller
 * passes in, so a log reader can never be fooled by an embedded newline),
 * and then either hands it to syslog(3) (which adds its own time, tag and
 * pid) or writes "2026-11-24T15:48:28Z sessiond[1234] info: text\n" to
 * stderr with a single write(2), so lines from several processes sharing a
 * pipe never interleave mid-line.
 *
 * Lines are cut at LOG_LINE_MAX bytes; nothing sessiond logs comes close.
 * The time is UTC to the second (ISO 8601), the pid is read on every line,
 * so a line written after the daemon forked carries the right one.
 *
 * Not async-signal-safe (vsnprintf, gmtime_r, syslog): it is never called
 * from a signal handler; signals reach sessiond through libevent, which runs
 * their callbacks from the loop.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048 /* message bytes per line, before the prefix */

static int log_to_syslog;
static int log_debug;
static int log_syslog_open;

static void log_open_syslog(void)
{
    /* LOG_NDELAY: connect now, before chdir/chroot-like changes and before
     * the first message, so a later failure to reach /dev/log is not
     * silently deferred to the first line that matters. */
    openlog("sessiond", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    log_syslog_open = 1;
}

static void log_close_syslog(void)
{
    if (log_syslog_open) {
        closelog();
        log_syslog_open = 0;
    }
}

void log_init(int to_syslog, int debug)
{
    log_debug = debug;
    log_to_syslog = to_syslog;
    if (to_syslog) {
        log_close_syslog();
        log_open_syslog();
    } else {
        log_close_syslog();
    }
}

void log_reopen(void)
{
    /* stderr is whatever the caller's redirection made it: nothing to
     * reopen. syslog is reconnected, which is what a restarted syslog
     * daemon (a new /dev/log socket) needs. */
    if (log_to_syslog) {
        log_close_syslog();
        log_open_syslog();
    }
}

int log_debug_enabled(void)
{
    return log_debug;
}

static const char *log_priority_name(int priority)
{
    switch (LOG_PRI(priority)) {
    case LOG_EMERG:
        return "emerg";
    case LOG_ALERT:
        return "alert";
    case LOG_CRIT:
        return "crit";
    case LOG_ERR:
        return "error";
    case LOG_WARNING:
        return "warning";
    case LOG_NOTICE:
        return "notice";
    case LOG_INFO:
        return "info";
    default:
        return "debug";
    }
}

/* Writes all of buf to fd, retrying after a signal; other errors (a closed
 * pipe, a full disk) lose the line: there is nowhere left to report them. */
static void log_write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

void log_msg(int priority, const char *fmt, ...)
{
    char text[LOG_LINE_MAX];
    char line[LOG_LINE_MAX + 96];
    char stamp[32];
    struct tm tm;
    time_t now;
    va_list ap;
    int saved_errno = errno; /* callers may log between a failure and strerror */
    int len;

    if (LOG_PRI(priority) == LOG_DEBUG && !log_debug)
        return;
    va_start(ap, fmt);
    len = vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (len < 0)
        snprintf(text, sizeof(text), "(unprintable log message)");
    for (char *p = text; *p != '\0'; p++) {
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = ' ';
    }

    if (log_to_syslog) {
        syslog(priority, "%s", text);
        errno = saved_errno;
        return;
    }
    now = time(NULL);
    if (gmtime_r(&now, &tm) == NULL ||
        strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(stamp, sizeof(stamp), "-");
    len = snprintf(line, sizeof(line), "%s sessiond[%ld] %s: %s\n", stamp, (long)getpid(),
                   log_priority_name(priority), text);
    if (len > 0) {
        size_t n = (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1;

        if (line[n - 1] != '\n') /* cut: still end the line */
            line[n - 1] = '\n';
        log_write_all(STDERR_FILENO, line, n);
    }
    errno = saved_errno;
}
