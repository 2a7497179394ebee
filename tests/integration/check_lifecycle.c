/* check_lifecycle.c — sessiond as a process: its command line, signals,
 * pidfile and daemon mode, driven through real processes on loopback.
 *
 * Split from check_daemon.c (which keeps the protocol tests): every test
 * here is about how the daemon starts, stops and refuses to start. What is
 * covered: bad flags, old and new (--allow, --window, --key-file
 * combinations, -u), each refused with exit status 2 (or 1 for runtime
 * failures) and exactly one line naming the problem; a busy port; --help
 * listing every flag and -V; SIGTERM and SIGINT stopping cleanly with a
 * final stats line; SIGHUP and SIGUSR1 keeping it running; the pidfile in
 * the foreground; and daemon mode (double fork, pidfile, syslog).
 *
 * Synchronisation without sleeps, as in check_daemon.c: a GET on a socket
 * is answered only after everything sent before it was handled; the
 * pidfile is awaited with inotify, process exits with a pidfd.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
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
#include <time.h>
#include <unistd.h>

#include "checks.h"
#include "harness.h"
#include "proto.h"
#include "v1ops.h"

#define ANSWER_TIMEOUT_MS 3000
#define STATS_LINE        2048

/* ---- helpers ---------------------------------------------------------- */

static size_t log_length(th_daemon *d)
{
    size_t len;

    pthread_mutex_lock(&d->lock);
    len = d->log_len;
    pthread_mutex_unlock(&d->lock);
    return len;
}

/* Waits (bounded) for the daemon's output to end, i.e. for it to exit. */
static int wait_output_closed(th_daemon *d, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    int closed;

    pthread_mutex_lock(&d->lock);
    while (!d->log_closed && th_now_ms() < end) {
        struct timespec deadline;

        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_nsec += 100 * 1000 * 1000;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&d->grew, &d->lock, &deadline);
    }
    closed = d->log_closed;
    pthread_mutex_unlock(&d->lock);
    return closed ? 0 : -1;
}

/* Reads a pid from a pidfile: > 0, or -1 if absent or not (yet) a number
 * followed by a newline. */
static pid_t read_pidfile(const char *path)
{
    char buf[64];
    FILE *f = fopen(path, "r");
    size_t n;
    char *end;
    long pid;

    if (f == NULL)
        return -1;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    pid = strtol(buf, &end, 10);
    if (end == buf || *end != '\n' || pid <= 0)
        return -1;
    return (pid_t)pid;
}

/* Waits, on inotify events for `dir` (watched by `ifd` since before the
 * daemon started, so no event is missed), until `path` holds a pid. */
static pid_t wait_pidfile(int ifd, const char *path, int timeout_ms)
{
    int64_t end = th_now_ms() + timeout_ms;
    pid_t pid;

    while ((pid = read_pidfile(path)) <= 0) {
        struct pollfd pfd = {.fd = ifd, .events = POLLIN};
        char events[4096];
        int64_t left = end - th_now_ms();

        if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
            return -1;
        if (read(ifd, events, sizeof(events)) < 0 && errno != EINTR)
            return -1;
    }
    return pid;
}

/* Waits for a child's exit through a pidfd (bounded), then reaps it.
 * Returns the exit status as th_daemon_stop does, or -1. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    int pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    struct pollfd pfd;
    int status;

    if (pidfd < 0)
        return -1;
    pfd.fd = pidfd;
    pfd.events = POLLIN;
    if (poll(&pfd, 1, timeout_ms) != 1) {
        close(pidfd);
        return -1;
    }
    close(pidfd);
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    if (WIFEXITED(status))
        return WEXITSTATUS(status);
    return WIFSIGNALED(status) ? 128 + WTERMSIG(status) : -1;
}

/* ---- the command line ------------------------------------------------- */

static const char *sessiond_path(void)
{
    const char *bin = getenv("SESSIOND");

    ck_assert_msg(bin != NULL && *bin != '\0', "SESSIOND is not set");
    return bin;
}

/* Runs sessiond with a bad argument list (after -f -p 0, so a parser bug
 * that lets it start fails by timing out rather than by grabbing a real
 * port) and checks: exit status `want` (2 for a bad command line, 1 for a
 * runtime failure such as an unreadable key file), not a crash, exactly one
 * line of output, which names the problem. */
static void expect_refused_words(const char *const *words, int want, const char *named)
{
    const char *argv[24] = {sessiond_path(), "-f", "-l", "127.0.0.1", "-p", "0"};
    size_t n = 6;
    char out[4096];
    char *newline;
    int rc;

    for (size_t i = 0; words[i] != NULL; i++) {
        ck_assert_uint_lt(n, sizeof(argv) / sizeof(argv[0]) - 1);
        argv[n++] = words[i];
    }
    argv[n] = NULL;
    rc = th_run(argv, out, sizeof(out));
    newline = strchr(out, '\n');
    ck_assert_msg(rc == want, "%s %s: exit status %d (want %d), output: %s", words[0],
                  words[1] ? words[1] : "", rc, want, out);
    ck_assert_msg(newline != NULL && newline[1] == '\0' && newline != out,
                  "%s %s: expected exactly one line, got: \"%s\"", words[0],
                  words[1] ? words[1] : "", out);
    ck_assert_msg(strstr(out, named) != NULL, "%s %s: message does not name '%s': %s", words[0],
                  words[1] ? words[1] : "", named, out);
}

#define REFUSED(want, named, ...)                                                                  \
    expect_refused_words((const char *const[]){__VA_ARGS__, NULL}, want, named)

START_TEST(test_bad_flags)
{
    REFUSED(2, "abc", "--port", "abc");
    REFUSED(2, "frob", "--frob");
    REFUSED(2, "12x", "--max-memory", "12x");
    REFUSED(2, "1.2.3", "-l", "1.2.3");
    REFUSED(2, "70000", "-p", "70000");
    REFUSED(2, "soon", "--max-ttl", "soon");
}
END_TEST

/* The flags added with v2: each bad value or combination is a command-line
 * error (status 2) naming the flag. */
START_TEST(test_bad_security_flags)
{
    REFUSED(2, "--allow", "--allow", "10.0.0.1/8");
    REFUSED(2, "10.0.0.1/8", "--allow", "10.0.0.1/8");
    REFUSED(2, "--allow", "--allow", "10.0.0.0/33");
    REFUSED(2, "--allow", "--allow", "::ffff:127.0.0.1");
    REFUSED(2, "--allow", "--allow", "localhost");
    REFUSED(2, "--window", "--window", "0");
    REFUSED(2, "--window", "--window", "3601");
    REFUSED(2, "--key-file", "--key-file", "");
    REFUSED(2, "--next-key-file", "--next-key-file", "/k2");
    REFUSED(2, "--allow-plaintext", "--allow-plaintext");
    REFUSED(2, "--allow-plaintext", "--key-file", "/k", "--allow-plaintext");
    REFUSED(2, "no-such-user-xyz", "-u", "no-such-user-xyz");
    REFUSED(2, "--user", "--user", "no-such-user-xyz");
}
END_TEST

/* Runtime failures: a key file that cannot be used is status 1 and one line
 * naming the flag and the file (the key file rules themselves are
 * keyfile.c's and tested in check_v2_keys.c). */
START_TEST(test_unreadable_key_files)
{
    static const char hex[] = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n";
    char dir[256];
    char good[300];

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    snprintf(good, sizeof(good), "%s/good.key", dir);
    ck_assert_int_eq(th_write_file(good, hex, sizeof(hex) - 1, 0600), 0);
    REFUSED(1, "/nonexistent/sessiond.key", "--key-file", "/nonexistent/sessiond.key");
    REFUSED(1, "--next-key-file: key file /nonexistent/next.key", "--key-file", good,
            "--next-key-file", "/nonexistent/next.key");
    REFUSED(1, "--key-file: key file /dev/null", "--key-file", "/dev/null");
    th_rmtree(dir);
}
END_TEST

/* -u run by someone who is not root and names another user: refused with
 * status 1 and one line (the documented choice; naming the user the daemon
 * already runs as is a no-op). Needs root to become someone else first. */
START_TEST(test_user_when_not_root)
{
    const struct passwd *pw = getpwnam("nobody");
    const char *bin = sessiond_path();
    char out[4096];
    size_t len = 0;
    int pipefd[2];
    pid_t pid;
    int rc;

    if (geteuid() != 0 || pw == NULL) {
        fprintf(stderr, "test_user_when_not_root: skipped: needs root and user nobody\n");
        return;
    }
    ck_assert_int_eq(pipe2(pipefd, O_CLOEXEC), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pipefd[1], STDOUT_FILENO);
        dup2(pipefd[1], STDERR_FILENO);
        if (setgroups(0, NULL) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0)
            _exit(126);
        execl(bin, bin, "-f", "-l", "127.0.0.1", "-p", "0", "-u", "root", (char *)NULL);
        _exit(127);
    }
    close(pipefd[1]);
    for (;;) {
        struct pollfd pfd = {.fd = pipefd[0], .events = POLLIN};
        ssize_t n;

        if (poll(&pfd, 1, 10000) != 1)
            break;
        n = read(pipefd[0], out + len, sizeof(out) - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof(out) - 1)
            break;
    }
    out[len] = '\0';
    close(pipefd[0]);
    rc = wait_exit(pid, 10000);
    if (rc < 0) {
        kill(pid, SIGKILL);
        wait_exit(pid, 10000);
    }
    ck_assert_msg(rc == 1, "-u root as nobody: status %d, output: %s", rc, out);
    ck_assert_msg(strchr(out, '\n') != NULL && strchr(out, '\n')[1] == '\0',
                  "expected one line: %s", out);
    ck_assert_msg(strstr(out, "only root") != NULL, "message: %s", out);
}
END_TEST

START_TEST(test_port_in_use)
{
    th_daemon d;
    char port[16];
    char out[4096];
    const char *argv[] = {sessiond_path(), "-f", "-l", "127.0.0.1", "-p", port, NULL};
    int rc;

    tc_start(&d, NULL);
    snprintf(port, sizeof(port), "%d", d.port);
    rc = th_run(argv, out, sizeof(out));
    ck_assert_msg(rc > 0 && rc < 128, "second daemon on a busy port: status %d: %s", rc, out);
    ck_assert_msg(strchr(out, '\n') != NULL && strchr(out, '\n')[1] == '\0',
                  "expected one line: %s", out);
    ck_assert_msg(strstr(out, port) != NULL, "message does not name the port: %s", out);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_help_and_version)
{
    const char *help[] = {sessiond_path(), "--help", NULL};
    const char *version[] = {sessiond_path(), "-V", NULL};
    static const char *const flags[] = {"--port",
                                        "--listen",
                                        "--foreground",
                                        "--debug",
                                        "--max-memory",
                                        "--max-ttl",
                                        "--pidfile",
                                        "--help",
                                        "--version",
                                        "--key-file",
                                        "--next-key-file",
                                        "--allow",
                                        "--allow-plaintext",
                                        "--window",
                                        "--user"};
    char out[8192];

    ck_assert_int_eq(th_run(help, out, sizeof(out)), 0);
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        ck_assert_msg(strstr(out, flags[i]) != NULL, "--help does not mention %s", flags[i]);
    ck_assert_int_eq(th_run(version, out, sizeof(out)), 0);
    ck_assert_msg(strstr(out, SESSIOND_VERSION) != NULL, "-V printed: %s", out);
}
END_TEST

/* ---- lifecycle -------------------------------------------------------- */

/* Sends signum, waits for the exit stats line and the end of the output,
 * and returns the stats line. */
static void stop_by_signal(th_daemon *d, int signum, char *stats, size_t cap)
{
    size_t from = log_length(d);
    const char *hit;

    ck_assert_int_eq(kill(d->pid, signum), 0);
    ck_assert_int_eq(th_daemon_wait_log(d, "stats: ", from, 10000), 0);
    pthread_mutex_lock(&d->lock);
    hit = strstr(d->log + from, "stats: ");
    snprintf(stats, cap, "%.*s", (int)strcspn(hit, "\n"), hit);
    pthread_mutex_unlock(&d->lock);
}

START_TEST(test_sigterm_and_sigint)
{
    static const int signals[] = {SIGTERM, SIGINT};
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t value[64];
    char line[STATS_LINE];

    v1t_make_key(key, 10, 1);
    tc_fill_value(value, sizeof(value), 10);
    for (size_t i = 0; i < 2; i++) {
        th_daemon d;
        int fd;

        tc_start(&d, NULL);
        fd = tc_connect_v4(&d);
        v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));
        v1t_expect_hit(fd, key, value, sizeof(value));
        stop_by_signal(&d, signals[i], line, sizeof(line));
        ck_assert_int_eq(tc_field(line, "puts"), 1);
        ck_assert_int_eq(tc_field(line, "hits"), 1);
        /* Once the output has ended, th_daemon_stop sends no second signal
         * that could hit the daemon mid-exit: the status is the daemon's. */
        ck_assert_int_eq(wait_output_closed(&d, 10000), 0);
        tc_stop_ok(&d);
        close(fd);
    }
}
END_TEST

START_TEST(test_sighup_and_sigusr1_keep_running)
{
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t value[64];
    th_daemon d;
    int fd;

    tc_start(&d, NULL);
    /* Signals right after "listening on" must not kill it: they are held
     * until the loop runs. */
    ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
    ck_assert_int_eq(tc_stat_of(&d, "gets"), 0);
    fd = tc_connect_v4(&d);
    v1t_make_key(key, 11, 1);
    tc_fill_value(value, sizeof(value), 11);
    v1t_send_op(fd, PROTO_V1_NEW, 0, key, value, sizeof(value));
    ck_assert_int_eq(kill(d.pid, SIGHUP), 0);
    v1t_expect_hit(fd, key, value, sizeof(value));
    ck_assert_int_eq(tc_stat_of(&d, "hits"), 1);
    ck_assert_int_eq(tc_stat_of(&d, "hits"), 1);
    close(fd);
    tc_stop_ok(&d);
}
END_TEST

START_TEST(test_pidfile_foreground)
{
    char dir[256];
    char path[300];
    const char *args[] = {"--pidfile", path, NULL};
    struct stat st;
    th_daemon d;
    int ifd;
    pid_t pid;

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/sessiond.pid", dir);
    ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    ck_assert_int_ge(ifd, 0);
    ck_assert_int_ge(inotify_add_watch(ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO), 0);
    tc_start(&d, args);
    pid = wait_pidfile(ifd, path, 10000);
    ck_assert_int_eq(pid, d.pid);
    tc_stop_ok(&d);
    ck_assert_msg(stat(path, &st) != 0 && errno == ENOENT, "pidfile left behind");
    close(ifd);
    th_rmtree(dir);
}
END_TEST

/* Without -f: sessiond double-forks, detaches and logs to syslog. This
 * process becomes a subreaper, so the detached daemon is reparented to it
 * and can be waited for. Assertions come after cleanup, so a failure never
 * leaves a daemon running. */
START_TEST(test_daemon_mode)
{
    char dir[256];
    char path[300];
    char port[16];
    char out[4096];
    const char *argv[] = {sessiond_path(), "-l", "127.0.0.1", "-p", port, "--pidfile", path, NULL};
    uint8_t key[PROTO_V1_KEY_LEN];
    uint8_t get[PROTO_V1_HEADER_LEN];
    size_t get_len = 0;
    struct stat st;
    int ifd, fd, launcher_rc, exit_rc = -1, pidfile_gone, udp_port;
    ssize_t answered = -1;
    pid_t pid;

    ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    snprintf(path, sizeof(path), "%s/sessiond.pid", dir);
    udp_port = th_free_udp_port();
    ck_assert_int_gt(udp_port, 0);
    snprintf(port, sizeof(port), "%d", udp_port);
    ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    ck_assert_int_ge(ifd, 0);
    ck_assert_int_ge(inotify_add_watch(ifd, dir, IN_CLOSE_WRITE | IN_MOVED_TO), 0);
    v1t_make_key(key, 12, 1);
    ck_assert_int_eq(proto_v1_encode(get, sizeof(get), PROTO_V1_GET, 0, key, PROTO_V1_KEY_LEN, NULL,
                                     0, &get_len),
                     PROTO_OK);

    launcher_rc = th_run(argv, out, sizeof(out));
    pid = wait_pidfile(ifd, path, 10000);
    if (pid > 0) {
        fd = th_udp_connect(atoi(port));
        if (fd >= 0) {
            answered = th_udp_roundtrip(fd, get, get_len, v1t_answer, sizeof(v1t_answer),
                                        ANSWER_TIMEOUT_MS);
            close(fd);
        }
        kill(pid, SIGTERM);
        exit_rc = wait_exit(pid, 10000);
        if (exit_rc < 0) {
            kill(pid, SIGKILL);
            wait_exit(pid, 10000);
        }
    }
    pidfile_gone = stat(path, &st) != 0 && errno == ENOENT;
    close(ifd);
    th_rmtree(dir);

    ck_assert_msg(launcher_rc == 0, "sessiond (daemon mode) exited %d: %s", launcher_rc, out);
    ck_assert_msg(pid > 0, "no pidfile appeared within 10 s");
    ck_assert_int_eq(answered, PROTO_V1_HEADER_LEN);
    ck_assert_int_eq(v1t_answer[1], PROTO_V1_NOT_FOUND);
    ck_assert_int_eq(exit_rc, 0);
    ck_assert_msg(pidfile_gone, "pidfile left behind");
}
END_TEST

static Suite *lifecycle_suite(void)
{
    Suite *s = suite_create("lifecycle");
    TCase *tc;

    tc = tcase_create("command_line");
    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_bad_flags);
    tcase_add_test(tc, test_bad_security_flags);
    tcase_add_test(tc, test_unreadable_key_files);
    tcase_add_test(tc, test_user_when_not_root);
    tcase_add_test(tc, test_port_in_use);
    tcase_add_test(tc, test_help_and_version);
    suite_add_tcase(s, tc);

    tc = tcase_create("lifecycle");
    /* Longer than th_run's own 30 s limit, so a daemon-mode start that hangs
     * ends in th_run and the test's cleanup, not in Check killing the test
     * process with the detached daemon still running. */
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sigterm_and_sigint);
    tcase_add_test(tc, test_sighup_and_sigusr1_keep_running);
    tcase_add_test(tc, test_pidfile_foreground);
    tcase_add_test(tc, test_daemon_mode);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(lifecycle_suite());
}
