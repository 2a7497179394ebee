/* main.c — sessiond's process lifecycle: parse the command line, bind,
 * detach, write the pidfile, run the loop, clean up, pick the exit status.
 *
 * Order, and why:
 *   1. config_parse. --help/--version print to stdout and exit 0; a bad
 *      command line prints one line to stderr and exits 2.
 *   2. Logging: stderr with -f; otherwise syslog from the start, so a
 *      daemon started from a shell prints nothing on success (everything,
 *      the "listening on" line too, goes to syslog), only errors.
 *   3. The key files (--key-file, --next-key-file) are read with
 *      keyfile_load and turned into a sealer; the raw keys are wiped at
 *      once. This happens before anything else that can fail late, and
 *      while the process may still be root, so a key file readable only by
 *      root works with -u. A bad key file is one line naming it, status 1.
 *      server_create then binds the socket before detaching, so "address in
 *      use" reaches the terminal as one line and exit status 1.
 *   4. Without -f, detach: fork, setsid, fork again (the daemon is then no
 *      session leader and can never acquire a controlling terminal),
 *      chdir("/"), umask(027), stdin/stdout/stderr on /dev/null. The
 *      process that was started waits on a pipe until the daemon has written
 *      its pidfile, and only then exits 0: a script that starts sessiond and
 *      reads the pidfile next never races it, and a pidfile error still
 *      reaches the terminal and the exit status.
 *   5. The pidfile holds the daemon's own pid (written after the forks),
 *      written to a temporary file and renamed, so a reader never sees it
 *      half written. A relative path is made absolute first (the daemon
 *      changes to /). On exit it is removed if it still holds our pid.
 *   6. With -u as root: initgroups, setgid, setuid to the user, then check
 *      that setuid(0) and setgid(0) now fail (if either worked the switch
 *      was not complete, and the daemon refuses to run). Done after the
 *      pidfile (usually in a root-only /run) and before the loop reads a
 *      single datagram. After it the daemon opens no file: logs go to
 *      stderr or the syslog socket it already knows. -u as another user
 *      than root is an error (status 1), unless it names the user the
 *      daemon already runs as, which is accepted as a no-op.
 *   7. server_run until SIGTERM/SIGINT, then server_free.
 * Exit status: 0 clean stop, 1 runtime failure (bind, pidfile, fork, the
 * loop), 2 bad command line.
 *
 * Known limits: an existing pidfile is overwritten without checking whether
 * its pid is alive (a second daemon on the same port fails to bind anyway);
 * after -u the daemon usually cannot remove its pidfile from a root-owned
 * directory, which it logs (service managers clean up after themselves);
 * the daemon is considered started once the pidfile is written, so a
 * failure to create the event loop after that is only in syslog and the
 * exit status of a process nobody waits for.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "keyfile.h"
#include "log.h"
#include "proto_v2.h"
#include "server.h"

#define EXIT_RUNTIME 1
#define EXIT_USAGE   2

/* Makes sure descriptors 0, 1 and 2 are open (on /dev/null if they were
 * closed), so the socket can never land on one of them and later be
 * clobbered by the /dev/null redirection or receive stray printf output. */
static int main_guard_stdio(void)
{
    for (;;) {
        int fd = open("/dev/null", O_RDWR);

        if (fd < 0)
            return -1;
        if (fd > STDERR_FILENO) {
            close(fd);
            return 0;
        }
    }
}

/* Copies `path` into buf, prefixed with the working directory if it is
 * relative. Returns 0, or -1 with a message in err. */
static int main_absolute_path(const char *path, char *buf, size_t cap, char *err, size_t errlen)
{
    char cwd[PATH_MAX];
    int n;

    if (path[0] == '/') {
        n = snprintf(buf, cap, "%s", path);
    } else {
        if (getcwd(cwd, sizeof(cwd)) == NULL) {
            snprintf(err, errlen, "--pidfile '%s': cannot read the working directory: %s", path,
                     strerror(errno));
            return -1;
        }
        n = snprintf(buf, cap, "%s/%s", cwd, path);
    }
    if (n < 0 || (size_t)n >= cap) {
        snprintf(err, errlen, "--pidfile '%s': path too long", path);
        return -1;
    }
    return 0;
}

/* Writes our pid to `path` through PATH.tmp.PID and rename(2). */
static int main_write_pidfile(const char *path, char *err, size_t errlen)
{
    char tmp[PATH_MAX + 32];
    char text[32];
    int fd = -1;
    int len = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
    ssize_t written;

    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof(tmp)) {
        snprintf(err, errlen, "cannot write pidfile %s: path too long", path);
        return -1;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        goto fail;
    written = write(fd, text, (size_t)len);
    if (written != len) {
        if (written >= 0)
            errno = ENOSPC;
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) != 0)
        goto fail;
    return 0;

fail:
    snprintf(err, errlen, "cannot write pidfile %s: %s", path, strerror(errno));
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

/* Removes the pidfile if it still names this process: a pidfile another
 * instance has since taken over is left alone. */
static void main_remove_pidfile(const char *path, int dropped_privileges)
{
    char text[32];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);

    if (fd < 0)
        return;
    n = read(fd, text, sizeof(text) - 1);
    close(fd);
    if (n <= 0)
        return;
    text[n] = '\0';
    if (strtol(text, NULL, 10) == (long)getpid() && unlink(path) != 0) {
        if (dropped_privileges && errno == EACCES)
            log_msg(LOG_INFO, "pidfile %s left in place: no right to remove it after -u", path);
        else
            log_msg(LOG_WARNING, "cannot remove pidfile %s: %s", path, strerror(errno));
    }
}

/* The started process, after the first fork: waits for the daemon's word on
 * the pipe and turns it into this process's output and exit status. A NUL
 * byte means ready; text is an error to print; EOF alone means the daemon
 * died before saying anything. Never returns. */
static void main_wait_for_daemon(int ready_fd, pid_t child)
{
    char msg[512];
    size_t len = 0;
    int status = EXIT_RUNTIME;

    for (;;) {
        ssize_t n = read(ready_fd, msg + len, sizeof(msg) - 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == sizeof(msg) - 1)
            break;
    }
    msg[len] = '\0';
    /* The intermediate child exits as soon as it has forked the daemon. */
    while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
        ;
    if (len >= 1 && msg[0] == '\0')
        status = 0;
    else if (len > 0)
        fprintf(stderr, "sessiond: %s\n", msg);
    else
        fprintf(stderr, "sessiond: the daemon exited during startup (see syslog)\n");
    fflush(stderr);
    /* _exit: this process shares the server's memory and socket with the
     * daemon; it must not run exit handlers or leak checks on them. */
    _exit(status);
}

/* Detaches. Returns in the daemon with *ready_fd set (the write end of the
 * pipe the started process waits on), or -1 with a message in err before
 * anything was forked. */
static int main_daemonize(int *ready_fd, char *err, size_t errlen)
{
    int pipefd[2];
    int devnull;
    pid_t pid;

    if (pipe2(pipefd, O_CLOEXEC) != 0) {
        snprintf(err, errlen, "cannot create a pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL); /* nothing buffered may be written twice */
    pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "cannot fork: %s", strerror(errno));
        close(pipefd[0]);
        close(pipefd[1]);
        return -1;
    }
    if (pid > 0) {
        close(pipefd[1]);
        main_wait_for_daemon(pipefd[0], pid);
    }

    /* First child: a new session without a terminal, then fork again so
     * the daemon is not the session leader. Errors from here on travel up
     * the pipe. */
    close(pipefd[0]);
    if (setsid() < 0) {
        dprintf(pipefd[1], "setsid failed: %s", strerror(errno));
        _exit(EXIT_RUNTIME);
    }
    pid = fork();
    if (pid < 0) {
        dprintf(pipefd[1], "cannot fork: %s", strerror(errno));
        _exit(EXIT_RUNTIME);
    }
    if (pid > 0)
        _exit(0);

    /* The daemon. */
    if (chdir("/") != 0) {
        dprintf(pipefd[1], "cannot change to /: %s", strerror(errno));
        _exit(EXIT_RUNTIME);
    }
    umask(027);
    devnull = open("/dev/null", O_RDWR);
    if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0 || dup2(devnull, STDOUT_FILENO) < 0 ||
        dup2(devnull, STDERR_FILENO) < 0) {
        dprintf(pipefd[1], "cannot redirect stdio to /dev/null: %s", strerror(errno));
        _exit(EXIT_RUNTIME);
    }
    if (devnull > STDERR_FILENO)
        close(devnull);
    *ready_fd = pipefd[1];
    return 0;
}

/* Tells the started process how startup ended: msg NULL for "ready". */
static void main_report_ready(int ready_fd, const char *msg)
{
    if (ready_fd < 0)
        return;
    if (msg == NULL) {
        if (write(ready_fd, "", 1) != 1) {
            /* The started process is gone: nobody to tell. */
        }
    } else {
        dprintf(ready_fd, "%s", msg);
    }
    close(ready_fd);
}

/* Logs a key's ID (public: lets operators check nodes hold the same key). */
static void main_log_key_id(const char *what, const uint8_t key[PROTO_V2_CLUSTER_KEY_LEN])
{
    uint8_t id[PROTO_V2_KEY_ID_LEN];

    if (proto_v2_key_id(key, id) == 0)
        log_msg(LOG_INFO, "%s id %02x%02x%02x%02x", what, id[0], id[1], id[2], id[3]);
}

/* Reads the key files into a sealer (and keeps the cluster key for the
 * Redis backend, which derives its own subkeys from it). Returns 0 (no key
 * configured: secrets->sealer NULL), or -1 with a one-line reason naming
 * the flag and the file. The raw next key is wiped before returning. */
static int main_load_keys(const config *cfg, server_secrets *secrets, char *err, size_t errlen)
{
    uint8_t *key = secrets->cluster_key;
    uint8_t next[KEYFILE_KEY_LEN];
    char why[PATH_MAX + 160];
    int rc = -1;

    _Static_assert(KEYFILE_KEY_LEN == PROTO_V2_CLUSTER_KEY_LEN, "one key size");
    if (cfg->key_file == NULL)
        return 0;
    if (keyfile_load(cfg->key_file, key, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "--key-file: %s", why);
        goto done;
    }
    secrets->have_cluster_key = 1;
    if (cfg->next_key_file != NULL &&
        keyfile_load(cfg->next_key_file, next, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "--next-key-file: %s", why);
        goto done;
    }
    secrets->sealer = proto_v2_sealer_new(key, cfg->next_key_file != NULL ? next : NULL);
    if (secrets->sealer == NULL) {
        snprintf(err, errlen, "cannot set up AES-256-GCM with the cluster key");
        goto done;
    }
    main_log_key_id("cluster key", key);
    if (cfg->next_key_file != NULL)
        main_log_key_id("next cluster key (opening only)", next);
    rc = 0;

done:
    OPENSSL_cleanse(next, sizeof(next));
    return rc;
}

/* --backend-password-file: the first line, from a file only its owner can
 * read (like the key files: a password others can read protects nothing).
 * Returns 0, or -1 with a one-line reason naming the file. */
static int main_load_password(const config *cfg, server_secrets *secrets, char *err, size_t errlen)
{
    char *pw = secrets->backend_password;
    size_t cap = sizeof(secrets->backend_password), len;
    struct stat st;
    FILE *f = NULL;
    int rc = -1;

    if (cfg->backend_password_file == NULL)
        return 0;
    f = fopen(cfg->backend_password_file, "re");
    if (f == NULL) {
        snprintf(err, errlen, "--backend-password-file %s: %s", cfg->backend_password_file,
                 strerror(errno));
        goto done;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "--backend-password-file %s: not a regular file",
                 cfg->backend_password_file);
        goto done;
    }
    if (st.st_mode & (S_IRWXG | S_IRWXO)) {
        snprintf(err, errlen,
                 "--backend-password-file %s: mode %03o lets others read it; chmod 600 it",
                 cfg->backend_password_file, (unsigned)(st.st_mode & 0777));
        goto done;
    }
    if (fgets(pw, (int)cap, f) == NULL) {
        snprintf(err, errlen, "--backend-password-file %s: empty", cfg->backend_password_file);
        goto done;
    }
    len = strcspn(pw, "\r\n");
    if (len == cap - 1) {
        snprintf(err, errlen, "--backend-password-file %s: first line longer than %zu bytes",
                 cfg->backend_password_file, cap - 2);
        goto done;
    }
    pw[len] = '\0';
    if (len == 0) {
        snprintf(err, errlen, "--backend-password-file %s: the first line is empty",
                 cfg->backend_password_file);
        goto done;
    }
    rc = 0;

done:
    if (f != NULL)
        fclose(f);
    if (rc != 0)
        OPENSSL_cleanse(pw, cap);
    return rc;
}

/* -u as someone other than root: accepted only if it changes nothing. */
static int main_check_user(const config *cfg, char *err, size_t errlen)
{
    if (cfg->user == NULL || geteuid() == 0)
        return 0;
    if (cfg->user_uid == geteuid() && cfg->user_gid == getegid())
        return 0;
    snprintf(err, errlen, "-u %s: only root can switch users (running as uid %ld)", cfg->user,
             (long)geteuid());
    return -1;
}

/* Becomes cfg->user for good, then proves it: regaining root must fail. */
static int main_drop_privileges(const config *cfg, char *err, size_t errlen)
{
    if (initgroups(cfg->user, cfg->user_gid) != 0) {
        snprintf(err, errlen, "-u %s: cannot set its groups: %s", cfg->user, strerror(errno));
        return -1;
    }
    if (setgid(cfg->user_gid) != 0) {
        snprintf(err, errlen, "-u %s: cannot set group %ld: %s", cfg->user, (long)cfg->user_gid,
                 strerror(errno));
        return -1;
    }
    if (setuid(cfg->user_uid) != 0) {
        snprintf(err, errlen, "-u %s: cannot set user %ld: %s", cfg->user, (long)cfg->user_uid,
                 strerror(errno));
        return -1;
    }
    if (getuid() != cfg->user_uid || geteuid() != cfg->user_uid || getgid() != cfg->user_gid ||
        getegid() != cfg->user_gid ||
        (cfg->user_uid != 0 && (setuid(0) != -1 || seteuid(0) != -1)) ||
        (cfg->user_gid != 0 && cfg->user_uid != 0 && (setgid(0) != -1 || setegid(0) != -1))) {
        snprintf(err, errlen,
                 "-u %s: the switch did not take (root could be regained); refusing "
                 "to run",
                 cfg->user);
        return -1;
    }
    log_msg(LOG_INFO, "running as user %s (uid %ld, gid %ld)", cfg->user, (long)cfg->user_uid,
            (long)cfg->user_gid);
    return 0;
}

static void main_log_startup(const config *cfg)
{
    int v6 = strchr(cfg->listen_addr, ':') != NULL;
    char window[32] = "", backend[64] = "", tickets[80] = "";

    if (cfg->key_file != NULL)
        snprintf(window, sizeof(window), ", window %u s", (unsigned)cfg->window_s);
    if (cfg->n_backends > 0)
        snprintf(backend, sizeof(backend), ", backend %zu group%s, timeout %u ms", cfg->n_backends,
                 cfg->n_backends > 1 ? "s" : "", (unsigned)cfg->backend_timeout_ms);
    if (cfg->ticket_keys)
        snprintf(tickets, sizeof(tickets), ", ticket keys rotate %u s lifetime %u s",
                 (unsigned)cfg->ticket_rotate_s, (unsigned)cfg->ticket_lifetime_s);
    log_msg(LOG_INFO,
            "sessiond %s started (pid %ld, %s): listen %s%s%s:%d%s, max-memory %zu bytes, "
            "max-ttl %u s%s%s%s%s",
            SESSIOND_VERSION, (long)getpid(), cfg->foreground ? "foreground" : "daemon",
            v6 ? "[" : "", cfg->listen_addr, v6 ? "]" : "", cfg->port,
            cfg->port == 0 ? " (any free port)" : "", cfg->max_memory, (unsigned)cfg->max_ttl,
            window, backend, tickets, cfg->debug ? ", debug" : "");
}

int main(int argc, char **argv)
{
    config cfg;
    char err[PATH_MAX + 256]; /* room for a path in the message */
    char pidfile[PATH_MAX];
    int have_pidfile = 0;
    int dropped = 0;
    int ready_fd = -1;
    int status = EXIT_RUNTIME;
    server *srv = NULL;
    server_secrets secrets;

    memset(&secrets, 0, sizeof(secrets));
    switch (config_parse(&cfg, argc, argv, err, sizeof(err))) {
    case CONFIG_HELP:
        fputs(config_usage(), stdout);
        return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
    case CONFIG_VERSION:
        printf("sessiond %s\n", SESSIOND_VERSION);
        return fflush(stdout) == 0 ? 0 : EXIT_RUNTIME;
    case CONFIG_ERROR:
        fprintf(stderr, "sessiond: %s. Try 'sessiond --help'.\n", err);
        return EXIT_USAGE;
    case CONFIG_RUN:
        break;
    }

    /* Logging to a pipe whose reader left must not kill us (the server
     * ignores SIGPIPE too, but only once its loop starts). */
    signal(SIGPIPE, SIG_IGN);
    if (main_guard_stdio() != 0) {
        fprintf(stderr, "sessiond: cannot open /dev/null: %s\n", strerror(errno));
        return EXIT_RUNTIME;
    }
    log_init(!cfg.foreground, cfg.debug);
    if (cfg.pidfile != NULL) {
        if (main_absolute_path(cfg.pidfile, pidfile, sizeof(pidfile), err, sizeof(err)) != 0)
            goto fail_print;
        have_pidfile = 1;
    }

    if (main_check_user(&cfg, err, sizeof(err)) != 0)
        goto fail_print;
    if (main_load_keys(&cfg, &secrets, err, sizeof(err)) != 0 ||
        main_load_password(&cfg, &secrets, err, sizeof(err)) != 0)
        goto fail_print;
    srv = server_create(&cfg, &secrets, err, sizeof(err)); /* owns the sealer from here */
    OPENSSL_cleanse(secrets.cluster_key, sizeof(secrets.cluster_key));
    OPENSSL_cleanse(secrets.backend_password, sizeof(secrets.backend_password));
    if (srv == NULL)
        goto fail_print;
    if (!cfg.foreground && main_daemonize(&ready_fd, err, sizeof(err)) != 0)
        goto fail_print;
    if (have_pidfile && main_write_pidfile(pidfile, err, sizeof(err)) != 0) {
        have_pidfile = 0;
        goto fail_print;
    }
    if (cfg.user != NULL && geteuid() == 0) {
        if (main_drop_privileges(&cfg, err, sizeof(err)) != 0) {
            if (have_pidfile)
                main_remove_pidfile(pidfile, 0);
            goto fail_print;
        }
        dropped = 1;
    }
    main_report_ready(ready_fd, NULL);
    ready_fd = -1;
    main_log_startup(&cfg);

    status = server_run(srv) == 0 ? 0 : EXIT_RUNTIME;
    server_free(srv);
    if (have_pidfile)
        main_remove_pidfile(pidfile, dropped);
    log_msg(LOG_INFO, "exiting with status %d", status);
    return status;

fail_print:
    /* One line for whoever started us: the terminal, or through the pipe
     * once detached; syslog gets it too when that is where logs go. */
    if (ready_fd >= 0)
        main_report_ready(ready_fd, err);
    else
        fprintf(stderr, "sessiond: %s\n", err);
    if (!cfg.foreground)
        log_msg(LOG_ERR, "%s", err);
    proto_v2_sealer_free(secrets.sealer); /* NULL once a server took it */
    OPENSSL_cleanse(&secrets, sizeof(secrets));
    server_free(srv);
    return EXIT_RUNTIME;
}
