/* proc.c — server processes with a log file, for the process-level tests;
 * the API and its rules are in proc.h.
 *
 * How it works: tp_start forks, and the child (before exec) takes a death
 * signal from the test, stdin from /dev/null and the log file as stdout and
 * stderr. The parent keeps a pidfd of the child, so every wait can poll two
 * things at once with one deadline: an inotify watch on the log file (it
 * grew) and the pidfd (the process exited, so nothing more will come).
 * tp_wait_log re-reads the whole file at each wakeup: test logs are small
 * (kilobytes), and re-reading is simpler than tracking a read offset that
 * must survive the server reopening or appending to the file itself.
 *
 * Known limit: PR_SET_PDEATHSIG follows the thread that forked, so start
 * processes from the test's main thread, as with th_daemon_start.
 */
#include "proc.h"

#include <check.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define TP_STOP_TIMEOUT_MS    10000
#define TP_STUNNEL_READY_MS   10000
#define TP_STUNNEL_READY_LINE "Accepting new connections"

void tp_start(tp_proc *p, const char *const *argv, const char *log_path)
{
    pid_t parent = getpid();
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);

    ck_assert_msg(log_fd >= 0, "open %s: %s", log_path, strerror(errno));
    snprintf(p->log_path, sizeof(p->log_path), "%s", log_path);
    p->pid = fork();
    ck_assert_int_ge(p->pid, 0);
    if (p->pid == 0) {
        /* Only async-signal-safe calls: the test may have other threads. */
        int devnull = open("/dev/null", O_RDONLY);

        /* Dies with the test, even when an assertion ends it early. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        if (devnull >= 0)
            dup2(devnull, STDIN_FILENO);
        dup2(log_fd, STDOUT_FILENO);
        dup2(log_fd, STDERR_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(log_fd);
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    ck_assert_msg(p->pidfd >= 0, "pidfd_open: %s", strerror(errno));
}

char *tp_log(const tp_proc *p, size_t *len)
{
    FILE *f = fopen(p->log_path, "r");
    struct stat st;
    char *buf = NULL;
    size_t n = 0;

    if (f == NULL || fstat(fileno(f), &st) != 0)
        goto done;
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL)
        goto done;
    n = fread(buf, 1, (size_t)st.st_size, f);
    buf[n] = '\0';

done:
    if (f != NULL)
        fclose(f);
    if (len != NULL)
        *len = n;
    return buf;
}

size_t tp_log_size(const tp_proc *p)
{
    struct stat st;

    return stat(p->log_path, &st) == 0 ? (size_t)st.st_size : 0;
}

/* Whether a complete line of the log after `from` holds needle; if so,
 * copies it into line[0..cap). */
static int tp_find_line(const tp_proc *p, const char *needle, size_t from, char *line, size_t cap)
{
    size_t len = 0;
    char *log = tp_log(p, &len);
    char *hit = log != NULL && len > from ? strstr(log + from, needle) : NULL;
    char *end = hit != NULL ? strchr(hit, '\n') : NULL;
    char *start = hit;
    size_t n;

    if (end == NULL) {
        free(log);
        return 0;
    }
    while (start > log + from && start[-1] != '\n')
        start--;
    n = (size_t)(end - start);
    if (cap > 0) {
        if (n >= cap)
            n = cap - 1;
        memcpy(line, start, n);
        line[n] = '\0';
    }
    free(log);
    return 1;
}

int tp_wait_log(const tp_proc *p, const char *needle, size_t from, char *line, size_t cap,
                int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    int in = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    int exited = p->pid <= 0; /* a stopped process writes nothing more */
    int rc = -1;

    if (in < 0 || inotify_add_watch(in, p->log_path, IN_MODIFY) < 0)
        goto done;
    for (;;) {
        struct pollfd pfd[2] = {{.fd = in, .events = POLLIN},
                                {.fd = exited ? -1 : p->pidfd, .events = POLLIN}};
        char drain[4096];
        int64_t left = deadline - th_now_ms();

        /* Looked at after the watch is set, so no write falls between. */
        if (tp_find_line(p, needle, from, line, cap)) {
            rc = 0;
            goto done;
        }
        if (exited || left <= 0)
            goto done;
        if (poll(pfd, 2, (int)left) < 0 && errno != EINTR)
            goto done;
        while (read(in, drain, sizeof(drain)) > 0)
            ;
        if (pfd[1].revents != 0)
            exited = 1; /* one last look at the log, then give up */
    }

done:
    if (in >= 0)
        close(in);
    return rc;
}

int tp_stop(tp_proc *p)
{
    struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
    int64_t deadline = th_now_ms() + TP_STOP_TIMEOUT_MS;
    int status = 0, exited = 0;

    if (p->pid <= 0)
        return -1;
    kill(p->pid, SIGTERM);
    for (;;) {
        int64_t left = deadline - th_now_ms();
        int ready;

        if (left <= 0)
            break;
        ready = poll(&pfd, 1, (int)left);
        if (ready > 0) {
            exited = 1;
            break;
        }
        if (ready < 0 && errno != EINTR)
            break;
    }
    if (!exited)
        kill(p->pid, SIGKILL);
    while (waitpid(p->pid, &status, 0) < 0 && errno == EINTR)
        ;
    close(p->pidfd);
    p->pid = 0;
    p->pidfd = -1;
    if (!exited)
        return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void tp_dump(const tp_proc *p, const char *name)
{
    char *log = tp_log(p, NULL);

    fprintf(stderr, "---- %s log (%s)\n%s---- end of %s log\n", name, p->log_path,
            log != NULL ? log : "(unreadable)\n", name);
    free(log);
}

int tp_tcp_sink(int *port)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(fd, 128), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    *port = ntohs(sin.sin_port);
    return fd;
}

int tp_stunnel_start(tp_proc *p, const char *dir, int i, const char *cert, const char *key,
                     int connect_port, int sessiond_port)
{
    char conf[PATH_MAX], log[PATH_MAX];
    const char *argv[] = {"stunnel4", conf, NULL};
    int port = th_free_tcp_port();
    FILE *f;

    ck_assert_int_gt(port, 0);
    snprintf(conf, sizeof(conf), "%s/stunnel%d.conf", dir, i);
    snprintf(log, sizeof(log), "%s/stunnel%d.log", dir, i);
    f = fopen(conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f,
            "foreground = yes\n"
            "syslog = no\n"
            "debug = 7\n"
            "pid = %s/stunnel%d.pid\n"
            "[shared]\n"
            "accept = 127.0.0.1:%d\n"
            "connect = 127.0.0.1:%d\n"
            "cert = %s\n"
            "key = %s\n"
            "sessiond = 127.0.0.1:%d\n"
            "options = NO_TICKET\n"
            "sslVersionMin = TLSv1.2\n",
            dir, i, port, connect_port, cert, key, sessiond_port);
    ck_assert_int_eq(fclose(f), 0);
    tp_start(p, argv, log);
    if (tp_wait_log(p, TP_STUNNEL_READY_LINE, 0, NULL, 0, TP_STUNNEL_READY_MS) != 0)
        return -1;
    return port;
}
