/* harness.c — real processes on loopback for the process-level tests.
 *
 * How it works: th_daemon_start forks and execs $SESSIOND with its stdout
 * and stderr on one pipe; a reader thread appends everything to d->log and
 * signals d->grew. Tests wait on that log (a needle after an offset) with a
 * bounded timeout instead of sleeping. Every wait in this file is bounded:
 * condition waits use CLOCK_MONOTONIC deadlines, child exits are awaited
 * through a pidfd with poll(2), and a child that outlives its deadline is
 * killed with SIGKILL, so a broken daemon fails a test instead of hanging it.
 *
 * Daemons die with the test: the child sets PR_SET_PDEATHSIG before exec, so
 * a test that fails an assertion (Check exits the forked test process) does
 * not leave a sessiond behind. The death signal follows the *thread* that
 * forked, so start daemons from the test's main thread.
 *
 * Set TH_VERBOSE=1 to copy each daemon's output to the test's stderr as it
 * arrives; a daemon that exits non-zero has its log printed anyway (that is
 * where a sanitizer report lands).
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define TH_START_TIMEOUT_MS 10000
#define TH_STOP_TIMEOUT_MS  10000
#define TH_STATS_TIMEOUT_MS 5000
#define TH_RUN_TIMEOUT_MS   30000
#define TH_MAX_ARGS         64

int64_t th_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* In a freshly forked child, before exec: stdin from /dev/null, stdout and
 * stderr to out_fd, and death with the parent (the test), exiting at once
 * if the parent already died between fork and prctl. Only async-signal-safe
 * calls: the parent may have other threads (the log readers). */
static void th_child_setup(pid_t parent, int out_fd)
{
    int devnull = open("/dev/null", O_RDONLY);

    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
}

static void th_deadline(struct timespec *ts, int timeout_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += timeout_ms / 1000;
    ts->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

static int th_status_code(int status)
{
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return -1;
}

/* Waits up to timeout_ms for the child to exit, then reaps it. With
 * kill_late, a child still running at the deadline is killed and reaped
 * (and -1 returned); without it, -1 is returned and the child left alone. */
static int th_wait_child(pid_t pid, int timeout_ms, int kill_late)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    int status = 0;
    pid_t got;

    if (pidfd >= 0) {
        struct pollfd pfd = {.fd = pidfd, .events = POLLIN};
        int64_t end = th_now_ms() + timeout_ms;
        int ready = 0;

        while (ready == 0) {
            int64_t left = end - th_now_ms();

            if (left <= 0)
                break;
            ready = poll(&pfd, 1, (int)left);
            if (ready < 0 && errno == EINTR)
                ready = 0;
            else if (ready < 0)
                break;
        }
        close(pidfd);
        if (ready <= 0) {
            if (!kill_late)
                return -1;
            fprintf(stderr, "harness: pid %d still running after %d ms, killing it\n", (int)pid,
                    timeout_ms);
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
    } else {
        /* No pidfd (old kernel): fall back to a blocking wait, which is
         * bounded only by the child's own behaviour. */
        fprintf(stderr, "harness: pidfd_open: %s; waiting without a timeout\n", strerror(errno));
    }
    do {
        got = waitpid(pid, &status, 0);
    } while (got < 0 && errno == EINTR);
    if (got != pid)
        return -1;
    return th_status_code(status);
}

/* Appends the daemon's output to d->log until EOF. It polls with a short
 * timeout only to notice one case: the daemon was reaped (d->pid <= 0) but
 * something it started still holds the pipe open, which would otherwise
 * block this thread, and th_daemon_stop's join, forever. */
static void *th_reader(void *arg)
{
    th_daemon *d = arg;
    char chunk[4096];
    int verbose = getenv("TH_VERBOSE") != NULL;

    for (;;) {
        struct pollfd pfd = {.fd = d->stderr_fd, .events = POLLIN};
        int ready = poll(&pfd, 1, 200);
        ssize_t n;

        if (ready == 0) {
            int reaped;

            pthread_mutex_lock(&d->lock);
            reaped = d->pid <= 0;
            pthread_mutex_unlock(&d->lock);
            if (reaped)
                break;
            continue;
        }
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            break;
        n = read(d->stderr_fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (verbose)
            fwrite(chunk, 1, (size_t)n, stderr);
        pthread_mutex_lock(&d->lock);
        char *grown = realloc(d->log, d->log_len + (size_t)n + 1);
        if (grown != NULL) {
            d->log = grown;
            memcpy(d->log + d->log_len, chunk, (size_t)n);
            d->log_len += (size_t)n;
            d->log[d->log_len] = '\0';
        }
        pthread_cond_broadcast(&d->grew);
        pthread_mutex_unlock(&d->lock);
    }
    pthread_mutex_lock(&d->lock);
    d->log_closed = 1;
    pthread_cond_broadcast(&d->grew);
    pthread_mutex_unlock(&d->lock);
    return NULL;
}

/* The log from `from` on, or NULL if it is not that long yet. Lock held. */
static const char *th_log_from(const th_daemon *d, size_t from)
{
    return (d->log != NULL && from <= d->log_len) ? d->log + from : NULL;
}

/* Waits for `needle` after `from` and then for the end of the line it is
 * on, so the caller never sees half a line. On success *at is the needle's
 * offset. Lock held by the caller. */
static int th_wait_line_locked(th_daemon *d, const char *needle, size_t from, int timeout_ms,
                               size_t *at)
{
    struct timespec deadline;

    th_deadline(&deadline, timeout_ms);
    for (;;) {
        const char *tail = th_log_from(d, from);
        const char *hit = tail != NULL ? strstr(tail, needle) : NULL;

        if (hit != NULL && strchr(hit, '\n') != NULL) {
            *at = (size_t)(hit - d->log);
            return 0;
        }
        if (d->log_closed && hit != NULL) {
            *at = (size_t)(hit - d->log);
            return 0; /* the last line may lack its newline */
        }
        if (d->log_closed)
            return -1;
        if (pthread_cond_timedwait(&d->grew, &d->lock, &deadline) == ETIMEDOUT)
            return -1;
    }
}

int th_daemon_wait_log(th_daemon *d, const char *needle, size_t from, int timeout_ms)
{
    size_t at;
    int rc;

    pthread_mutex_lock(&d->lock);
    rc = th_wait_line_locked(d, needle, from, timeout_ms, &at);
    pthread_mutex_unlock(&d->lock);
    return rc;
}

static void th_dump_log(th_daemon *d, const char *why)
{
    pthread_mutex_lock(&d->lock);
    fprintf(stderr, "harness: %s; daemon output follows\n%s\n-- end of daemon output\n", why,
            d->log != NULL ? d->log : "");
    pthread_mutex_unlock(&d->lock);
}

/* th_daemon_stop, printing the log when the daemon failed or when the
 * caller already knows something went wrong (dump_why != NULL). */
static int th_daemon_stop_dump(th_daemon *d, const char *dump_why)
{
    pid_t pid = d->pid;
    int status;
    int closed;

    if (pid <= 0)
        return -1;
    /* A daemon whose output already ended has exited (or is exiting):
     * a second signal could kill it mid-shutdown and hide its status. */
    pthread_mutex_lock(&d->lock);
    closed = d->log_closed;
    pthread_mutex_unlock(&d->lock);
    if (!closed)
        kill(pid, SIGTERM);
    status = th_wait_child(pid, TH_STOP_TIMEOUT_MS, 1);
    /* Reaped: tell the reader, which then stops at EOF or, if a child of
     * the daemon still holds the pipe, at its next poll timeout. */
    pthread_mutex_lock(&d->lock);
    d->pid = -1;
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->reader, NULL);
    if (dump_why == NULL && status != 0)
        dump_why = status < 0 ? "the daemon did not stop" : "the daemon exited non-zero";
    if (dump_why != NULL)
        th_dump_log(d, dump_why);
    close(d->stderr_fd);
    d->stderr_fd = -1;
    pthread_cond_destroy(&d->grew);
    pthread_mutex_destroy(&d->lock);
    free(d->log);
    d->log = NULL;
    d->log_len = 0;
    return status;
}

int th_daemon_stop(th_daemon *d)
{
    return th_daemon_stop_dump(d, NULL);
}

int th_daemon_start(th_daemon *d, const char *const *extra_args)
{
    const char *argv[TH_MAX_ARGS];
    const char *bin = getenv("SESSIOND");
    int pipefd[2] = {-1, -1};
    int nargs = 0;
    int sync_inited = 0;
    pthread_condattr_t cattr;
    pid_t parent = getpid();
    size_t at;
    const char *colon;

    memset(d, 0, sizeof(*d));
    d->pid = -1;
    d->stderr_fd = -1;
    if (bin == NULL || *bin == '\0') {
        fprintf(stderr, "harness: SESSIOND is not set; point it at the sessiond binary "
                        "(tests/run.sh does)\n");
        return -1;
    }
    argv[nargs++] = bin;
    argv[nargs++] = "-f";
    argv[nargs++] = "-l";
    argv[nargs++] = "127.0.0.1";
    argv[nargs++] = "-p";
    argv[nargs++] = "0";
    for (size_t i = 0; extra_args != NULL && extra_args[i] != NULL; i++) {
        if (nargs >= TH_MAX_ARGS - 1) {
            fprintf(stderr, "harness: too many daemon arguments\n");
            return -1;
        }
        argv[nargs++] = extra_args[i];
    }
    argv[nargs] = NULL;

    pthread_mutex_init(&d->lock, NULL);
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&d->grew, &cattr);
    pthread_condattr_destroy(&cattr);
    sync_inited = 1;

    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        perror("harness: pipe2");
        goto fail;
    }
    d->pid = fork();
    if (d->pid < 0) {
        perror("harness: fork");
        goto fail;
    }
    if (d->pid == 0) {
        th_child_setup(parent, pipefd[1]);
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);
    pipefd[1] = -1;
    d->stderr_fd = pipefd[0];
    pipefd[0] = -1;
    if (pthread_create(&d->reader, NULL, th_reader, d) != 0) {
        fprintf(stderr, "harness: cannot start the log reader\n");
        goto fail;
    }

    pthread_mutex_lock(&d->lock);
    if (th_wait_line_locked(d, "listening on ", 0, TH_START_TIMEOUT_MS, &at) != 0) {
        pthread_mutex_unlock(&d->lock);
        th_daemon_stop_dump(d, "the daemon did not report \"listening on\" in time");
        return -1;
    }
    /* "listening on 127.0.0.1:PORT" or "[::1]:PORT": the port follows the
     * last colon of that line. */
    {
        const char *line_end = strchr(d->log + at, '\n');
        size_t line_len =
            line_end != NULL ? (size_t)(line_end - (d->log + at)) : strlen(d->log + at);
        char line[256];

        if (line_len >= sizeof(line))
            line_len = sizeof(line) - 1;
        memcpy(line, d->log + at, line_len);
        line[line_len] = '\0';
        colon = strrchr(line, ':');
        d->port = colon != NULL ? atoi(colon + 1) : 0;
    }
    pthread_mutex_unlock(&d->lock);
    if (d->port <= 0 || d->port > 65535) {
        th_daemon_stop_dump(d, "cannot read the port from the \"listening on\" line");
        return -1;
    }
    return 0;

fail:
    if (pipefd[0] >= 0)
        close(pipefd[0]);
    if (pipefd[1] >= 0)
        close(pipefd[1]);
    if (d->pid > 0) {
        kill(d->pid, SIGKILL);
        waitpid(d->pid, NULL, 0);
    }
    if (d->stderr_fd >= 0)
        close(d->stderr_fd);
    if (sync_inited) {
        pthread_cond_destroy(&d->grew);
        pthread_mutex_destroy(&d->lock);
    }
    d->pid = -1;
    d->stderr_fd = -1;
    return -1;
}

/* Copies the line holding offset `at` (without its newline) into buf. */
static void th_copy_line(const th_daemon *d, size_t at, char *buf, size_t cap)
{
    const char *start = d->log + at;
    const char *end;
    size_t len;

    while (start > d->log && start[-1] != '\n')
        start--;
    end = strchr(start, '\n');
    len = end != NULL ? (size_t)(end - start) : strlen(start);
    if (cap == 0)
        return;
    if (len >= cap)
        len = cap - 1;
    memcpy(buf, start, len);
    buf[len] = '\0';
}

int th_daemon_stats(th_daemon *d, char *buf, size_t cap)
{
    size_t from;
    size_t at;
    int rc;

    pthread_mutex_lock(&d->lock);
    from = d->log_len;
    pthread_mutex_unlock(&d->lock);
    if (d->pid <= 0 || kill(d->pid, SIGUSR1) != 0) {
        fprintf(stderr, "harness: cannot signal the daemon\n");
        return -1;
    }
    pthread_mutex_lock(&d->lock);
    rc = th_wait_line_locked(d, "stats: ", from, TH_STATS_TIMEOUT_MS, &at);
    if (rc == 0)
        th_copy_line(d, at, buf, cap);
    pthread_mutex_unlock(&d->lock);
    if (rc != 0)
        fprintf(stderr, "harness: no stats line within %d ms\n", TH_STATS_TIMEOUT_MS);
    return rc;
}

long long th_stat(const char *stats_line, const char *name)
{
    size_t name_len = strlen(name);
    const char *p = stats_line;

    if (stats_line == NULL || name_len == 0)
        return -1;
    while ((p = strstr(p, name)) != NULL) {
        /* Whole field names only: "gets" must not match "xgets=". */
        int starts = p == stats_line || p[-1] == ' ' || p[-1] == ':';

        if (starts && p[name_len] == '=') {
            char *end;
            long long v = strtoll(p + name_len + 1, &end, 10);

            return end != p + name_len + 1 ? v : -1;
        }
        p += name_len;
    }
    return -1;
}

int th_run(const char *const *argv, char *buf, size_t cap)
{
    int pipefd[2] = {-1, -1};
    pid_t pid;
    pid_t parent = getpid();
    size_t len = 0;
    int64_t end = th_now_ms() + TH_RUN_TIMEOUT_MS;
    int status;

    if (cap > 0)
        buf[0] = '\0';
    if (argv == NULL || argv[0] == NULL) {
        fprintf(stderr, "harness: th_run without a program\n");
        return -1;
    }
    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        perror("harness: pipe2");
        return -1;
    }
    pid = fork();
    if (pid < 0) {
        perror("harness: fork");
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid == 0) {
        th_child_setup(parent, pipefd[1]);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(pipefd[1]);

    /* Read until EOF: every holder of the pipe (a daemonizing program's
     * children too) has closed it, or the deadline passed. */
    for (;;) {
        struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
        int64_t left = end - th_now_ms();
        char chunk[4096];
        ssize_t n;
        int ready;

        if (left <= 0) {
            fprintf(stderr, "harness: %s still writing after %d ms\n", argv[0], TH_RUN_TIMEOUT_MS);
            break;
        }
        ready = poll(&pfd, 1, (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            continue; /* timeout: the check above ends the loop */
        n = read(pipefd[0], chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (cap > 0 && len < cap - 1) {
            size_t take = (size_t)n < cap - 1 - len ? (size_t)n : cap - 1 - len;

            memcpy(buf + len, chunk, take);
            len += take;
            buf[len] = '\0';
        }
    }
    close(pipefd[0]);
    {
        int64_t left = end - th_now_ms();

        status = th_wait_child(pid, left > 1000 ? (int)left : 1000, 1);
    }
    return status;
}

int th_udp_connect(int port)
{
    struct sockaddr_in sin;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

ssize_t th_udp_roundtrip(int fd, const void *req, size_t req_len, void *ans, size_t cap,
                         int timeout_ms)
{
    ssize_t n;

    do {
        n = send(fd, req, req_len, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 || (size_t)n != req_len)
        return -1;
    return th_udp_recv(fd, ans, cap, timeout_ms);
}

int th_udp_connect_from(const char *src, int port)
{
    struct sockaddr_in local, remote;
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&local, 0, sizeof(local));
    local.sin_family = AF_INET;
    memset(&remote, 0, sizeof(remote));
    remote.sin_family = AF_INET;
    remote.sin_port = htons((uint16_t)port);
    remote.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (inet_pton(AF_INET, src, &local.sin_addr) != 1 ||
        bind(fd, (struct sockaddr *)&local, sizeof(local)) != 0 ||
        connect(fd, (struct sockaddr *)&remote, sizeof(remote)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

ssize_t th_udp_recv(int fd, void *buf, size_t cap, int timeout_ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    int64_t end = th_now_ms() + timeout_ms;

    for (;;) {
        int64_t left = end - th_now_ms();
        ssize_t n;
        int ready;

        if (left < 0)
            return 0;
        ready = poll(&pfd, 1, (int)left);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready < 0)
            return -1;
        if (ready == 0)
            return 0;
        n = recv(fd, buf, cap, MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        return n;
    }
}

int th_write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    const uint8_t *p = data;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t done = 0;

    if (fd < 0)
        return -1;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return -1;
        }
        done += (size_t)n;
    }
    if (fchmod(fd, mode) != 0) {
        close(fd);
        return -1;
    }
    return close(fd);
}

long long th_proc_status(pid_t pid, const char *field)
{
    char path[64];
    char line[512];
    size_t field_len = strlen(field);
    long long value = -1;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return -1;
    while (fgets(line, sizeof(line), f) != NULL) {
        if (strncmp(line, field, field_len) == 0 && line[field_len] == ':') {
            char *end;
            long long v = strtoll(line + field_len + 1, &end, 10);

            if (end != line + field_len + 1)
                value = v;
            break;
        }
    }
    fclose(f);
    return value;
}

/* A port on 127.0.0.1 of socket type `type` that was free a moment ago. */
static int th_free_port(int type)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, type | SOCK_CLOEXEC, 0);
    int port = -1;

    if (fd < 0)
        return -1;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
        port = ntohs(sin.sin_port);
    close(fd);
    return port;
}

int th_free_tcp_port(void)
{
    return th_free_port(SOCK_STREAM);
}

int th_free_udp_port(void)
{
    return th_free_port(SOCK_DGRAM);
}

int th_tmpdir(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR");
    int n;

    if (base == NULL || *base == '\0')
        base = "/tmp";
    n = snprintf(buf, cap, "%s/sessiond-test.XXXXXX", base);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    return mkdtemp(buf) != NULL ? 0 : -1;
}

static int th_remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0; /* best effort: keep going */
}

void th_rmtree(const char *path)
{
    if (path != NULL && *path != '\0')
        nftw(path, th_remove_one, 16, FTW_DEPTH | FTW_PHYS);
}
