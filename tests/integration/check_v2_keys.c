/* check_v2_keys.c — cluster key files and privileges of a real sessiond:
 * what it refuses to start with, and what it still holds after -u.
 *
 * What is covered:
 *   - key files with group/other permissions or the wrong size (for
 *     --key-file and --next-key-file): the daemon exits 1 with one line
 *     naming the file and the flag;
 *   - -u nobody as root: the daemon runs as nobody (/proc/PID/status), with
 *     no group 0 and the key file closed, yet serves sealed requests with a
 *     key file only root can read (it was read before the switch). Skipped,
 *     with a line on stderr, when not root or there is no user nobody.
 *
 * Sealed traffic itself is check_v2_sealed.c; who may send what is
 * check_v2_policy.c. The daemon and its key come from tests/lib/v2daemon.c.
 */
#include <check.h>
#include <dirent.h>
#include <limits.h>
#include <pwd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "checks.h"
#include "harness.h"
#include "v2daemon.h"

/* ---- key files and privileges ------------------------------------------- */

static const char *sessiond_path(void)
{
    const char *bin = getenv("SESSIOND");

    ck_assert_msg(bin != NULL && *bin != '\0', "SESSIOND is not set");
    return bin;
}

/* Runs sessiond with one key file and expects status 1 and one line naming
 * the file. */
static void expect_bad_key_file(const char *flag, const char *path, const char *good)
{
    const char *argv[12] = {sessiond_path(), "-f", "-l", "127.0.0.1", "-p", "0"};
    size_t n = 6;
    char out[4096];
    char *newline;
    int rc;

    if (good != NULL) {
        argv[n++] = "--key-file";
        argv[n++] = good;
    }
    argv[n++] = flag;
    argv[n++] = path;
    argv[n] = NULL;
    rc = th_run(argv, out, sizeof(out));
    newline = strchr(out, '\n');
    ck_assert_msg(rc == 1, "%s %s: status %d: %s", flag, path, rc, out);
    ck_assert_msg(newline != NULL && newline[1] == '\0', "%s: expected one line: %s", path, out);
    ck_assert_msg(strstr(out, path) != NULL, "message does not name %s: %s", path, out);
    ck_assert_msg(strstr(out, flag) != NULL, "message does not name %s: %s", flag, out);
}

START_TEST(test_bad_key_files)
{
    static const char hex64[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char dir[256], path[300], good[300];
    uint8_t raw[40];

    ck_assert_int_eq(th_tmpdir(dir, sizeof(dir)), 0);
    snprintf(good, sizeof(good), "%s/good.key", dir);
    ck_assert_int_eq(th_write_file(good, hex64, 64, 0600), 0);
    memset(raw, 0xA5, sizeof(raw));

    snprintf(path, sizeof(path), "%s/world.key", dir);
    ck_assert_int_eq(th_write_file(path, hex64, 64, 0644), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/group.key", dir);
    ck_assert_int_eq(th_write_file(path, hex64, 64, 0640), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/short.key", dir);
    ck_assert_int_eq(th_write_file(path, raw, 31, 0600), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/long.key", dir);
    ck_assert_int_eq(th_write_file(path, raw, 40, 0600), 0);
    expect_bad_key_file("--key-file", path, NULL);
    snprintf(path, sizeof(path), "%s/empty.key", dir);
    ck_assert_int_eq(th_write_file(path, raw, 0, 0600), 0);
    expect_bad_key_file("--key-file", path, NULL);
    /* The next key is held to the same rules. */
    snprintf(path, sizeof(path), "%s/next-world.key", dir);
    ck_assert_int_eq(th_write_file(path, hex64, 64, 0604), 0);
    expect_bad_key_file("--next-key-file", path, good);
    th_rmtree(dir);
}
END_TEST

/* Counts the files under `prefix` the process has open (the key file's
 * directory: the key must have been read and closed). Files inherited from
 * the test runner are not the daemon's doing and are not counted. */
static int files_open_under(pid_t pid, const char *prefix)
{
    char path[64];
    struct dirent *e;
    int count = 0;
    DIR *dir;

    snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
    dir = opendir(path);
    ck_assert_ptr_nonnull(dir);
    while ((e = readdir(dir)) != NULL) {
        char link[PATH_MAX + 64], target[PATH_MAX];
        ssize_t n;

        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        n = readlink(link, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, prefix, strlen(prefix)) == 0) {
            fprintf(stderr, "open file: %s\n", target);
            count++;
        }
    }
    closedir(dir);
    return count;
}

/* As root: -u nobody. The key file is readable by root only, in a
 * directory only root can enter; the daemon reads it before switching,
 * then runs as nobody (all four uids and gids), without group 0 and with
 * the key file closed, and serves sealed requests. */
START_TEST(test_user_nobody)
{
    const struct passwd *pw = getpwnam("nobody");
    uint8_t key[V2D_KEY_LEN];
    uint8_t value[333];
    char status_path[64];
    char status[4096];
    char want[64];
    uid_t nobody_uid;
    gid_t nobody_gid;
    v2d_keyed t;
    FILE *f;
    size_t n;

    if (geteuid() != 0 || pw == NULL) {
        fprintf(stderr, "test_user_nobody: skipped: needs root and user nobody\n");
        return;
    }
    nobody_uid = pw->pw_uid;
    nobody_gid = pw->pw_gid;
    {
        const char *const more[] = {"-u", "nobody", NULL};

        v2d_keyed_start(&t, more);
    }
    {
        struct stat st;

        /* Only root can reach and read the key. */
        ck_assert_int_eq(stat(t.dir, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0700);
        ck_assert_int_eq(st.st_uid, 0);
        ck_assert_int_eq(stat(t.k.path, &st), 0);
        ck_assert_int_eq(st.st_mode & 0777, 0600);
        ck_assert_int_eq(st.st_uid, 0);
    }
    ck_assert_int_eq(th_daemon_wait_log(&t.d, "running as user nobody", 0, 2000), 0);
    ck_assert_int_eq(th_proc_status(t.d.pid, "Uid"), (long long)nobody_uid);
    ck_assert_int_eq(th_proc_status(t.d.pid, "Gid"), (long long)nobody_gid);
    snprintf(status_path, sizeof(status_path), "/proc/%ld/status", (long)t.d.pid);
    f = fopen(status_path, "r");
    ck_assert_ptr_nonnull(f);
    n = fread(status, 1, sizeof(status) - 1, f);
    fclose(f);
    status[n] = '\0';
    /* Real, effective, saved and filesystem IDs all switched. */
    snprintf(want, sizeof(want), "Uid:\t%u\t%u\t%u\t%u\n", (unsigned)nobody_uid,
             (unsigned)nobody_uid, (unsigned)nobody_uid, (unsigned)nobody_uid);
    ck_assert_msg(strstr(status, want) != NULL, "want %s in:\n%s", want, status);
    snprintf(want, sizeof(want), "Gid:\t%u\t%u\t%u\t%u\n", (unsigned)nobody_gid,
             (unsigned)nobody_gid, (unsigned)nobody_gid, (unsigned)nobody_gid);
    ck_assert_msg(strstr(status, want) != NULL, "want %s in:\n%s", want, status);
    ck_assert_msg(strstr(status, "Groups:\t0 ") == NULL && strstr(status, "Groups:\t0\n") == NULL,
                  "still in group 0:\n%s", status);
    ck_assert_int_eq(files_open_under(t.d.pid, t.dir), 0);

    v2d_make_key(key, 30, 1);
    tc_fill_value(value, sizeof(value), 30);
    v2d_put(t.fd, t.k.sealer, key, value, sizeof(value));
    v2d_expect_hit(t.fd, t.k.sealer, key, value, sizeof(value));
    v2d_keyed_stop(&t);
}
END_TEST

static Suite *v2_keys_suite(void)
{
    Suite *s = suite_create("v2_keys");
    TCase *tc;

    tc = tcase_create("keys_and_privileges");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_bad_key_files);
    tcase_add_test(tc, test_user_nobody);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(v2_keys_suite());
}
