/* check_keyfile.c — unit tests of the cluster-key file loader (proto/keyfile.c).
 *
 * What is covered: the accepted formats (32 raw bytes; 64 hex digits, lower
 * or upper case, with or without one trailing newline), every refusal with
 * the exact one-line reason naming the file (wrong sizes either side of each
 * accepted one, bad hex, a 65th byte that is not a newline, 32 hex digits,
 * an all-zero key, modes open to group or others, a symbolic link, a
 * missing file, a directory, a FIFO, which must not block), the caller's key
 * buffer zeroed on failure, and a short error buffer truncated safely.
 *
 * Files live in a fresh directory from th_tmpdir, removed at the end of each
 * test. The mode checks read st_mode, so they hold when run as root too.
 */
#include "harness.h"
#include "keyfile.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[256];

static void setup(void)
{
    ck_assert_int_eq(th_tmpdir(dir, sizeof dir), 0);
}

static void teardown(void)
{
    th_rmtree(dir);
}

/* Writes len bytes to dir/name with the given mode (set after creation, so
 * the umask does not interfere); returns the path in a static buffer. */
static const char *write_file(const char *name, const void *data, size_t len, mode_t mode)
{
    static char path[512];
    int fd;

    snprintf(path, sizeof path, "%s/%s", dir, name);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_msg(fd >= 0, "create %s: %s", path, strerror(errno));
    ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
    ck_assert_int_eq(fchmod(fd, mode), 0);
    close(fd);
    return path;
}

static const uint8_t raw_key[32] = {
    0x9a, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0xff};
static const char hex_key[] = "9a0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1eff";

/* Loads path expecting failure; checks the message is exactly
 * "key file PATH: reason" on one line, and the key was zeroed. */
static void expect_refused(const char *path, const char *reason)
{
    uint8_t key[32], zero[32] = {0};
    char err[512], want[600];

    memset(key, 0xee, sizeof key);
    memset(err, 'x', sizeof err);
    ck_assert_int_eq(keyfile_load(path, key, err, sizeof err), -1);
    snprintf(want, sizeof want, "key file %s: %s", path, reason);
    ck_assert_str_eq(err, want);
    ck_assert_ptr_null(strchr(err, '\n'));
    ck_assert_mem_eq(key, zero, sizeof key);
}

static void expect_loaded(const char *path, const uint8_t want[32])
{
    uint8_t key[32];
    char err[256] = "untouched";

    memset(key, 0xee, sizeof key);
    ck_assert_msg(keyfile_load(path, key, err, sizeof err) == 0, "%s", err);
    ck_assert_mem_eq(key, want, 32);
}

START_TEST(test_raw)
{
    expect_loaded(write_file("raw", raw_key, 32, 0600), raw_key);
    expect_loaded(write_file("raw400", raw_key, 32, 0400), raw_key);
    expect_loaded(write_file("raw700", raw_key, 32, 0700), raw_key); /* owner bits are free */
}
END_TEST

START_TEST(test_hex)
{
    char text[66], upper[66];
    size_t i;

    memcpy(text, hex_key, 64);
    expect_loaded(write_file("hex", text, 64, 0600), raw_key);
    text[64] = '\n';
    expect_loaded(write_file("hexnl", text, 65, 0600), raw_key);
    for (i = 0; i < 65; i++)
        upper[i] = (char)(text[i] >= 'a' && text[i] <= 'f' ? text[i] - 32 : text[i]);
    expect_loaded(write_file("HEX", upper, 65, 0600), raw_key);
}
END_TEST

START_TEST(test_wrong_size)
{
    static const size_t sizes[] = {0, 1, 31, 33, 63, 66, 96, 4096};
    uint8_t *data = malloc(4096);
    char reason[128];
    size_t i;

    ck_assert_ptr_nonnull(data);
    memset(data, 'a', 4096); /* hex digits: only the size can be wrong */
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const char *path = write_file("sized", data, sizes[i], 0600);

        snprintf(reason, sizeof reason, "%zu bytes, want 32 raw bytes or 64 hex digits", sizes[i]);
        expect_refused(path, reason);
    }
    free(data);
}
END_TEST

START_TEST(test_bad_hex)
{
    char text[65];

    memcpy(text, hex_key, 64);
    text[10] = 'g';
    expect_refused(write_file("g", text, 64, 0600),
                   "not a hex digit at offset 10; want 64 hex digits");
    memcpy(text, hex_key, 64);
    text[63] = ' ';
    expect_refused(write_file("sp", text, 64, 0600),
                   "not a hex digit at offset 63; want 64 hex digits");
    /* 65 bytes: the last must be a newline, not a 65th digit. */
    memcpy(text, hex_key, 64);
    text[64] = '0';
    expect_refused(write_file("d65", text, 65, 0600),
                   "65 bytes but byte 65 is not a newline; want 64 hex digits");
}
END_TEST

START_TEST(test_mistakes)
{
    uint8_t zero[32] = {0};

    /* `openssl rand -hex 16` with the newline stripped: a 16-byte key. */
    expect_refused(write_file("hex16", hex_key, 32, 0600),
                   "32 hex digits (a 16-byte key); want 64 hex digits (openssl rand -hex 32)");
    expect_refused(write_file("zero", zero, 32, 0600),
                   "the key is all zero bytes; generate one with openssl rand");
    expect_refused(write_file("zerohex",
                              "0000000000000000000000000000000000000000000000000000000000000000",
                              64, 0600),
                   "the key is all zero bytes; generate one with openssl rand");
}
END_TEST

START_TEST(test_modes)
{
    static const struct {
        mode_t mode;
        const char *reason;
    } bad[] = {
        {0644, "readable by group or others (mode 0644); chmod 600 it"},
        {0640, "readable by group or others (mode 0640); chmod 600 it"},
        {0604, "readable by group or others (mode 0604); chmod 600 it"},
        {0620, "writable by group or others (mode 0620); chmod 600 it"},
        {0602, "writable by group or others (mode 0602); chmod 600 it"},
        {0610, "accessible by group or others (mode 0610); chmod 600 it"},
        {0601, "accessible by group or others (mode 0601); chmod 600 it"},
        {0666, "readable by group or others (mode 0666); chmod 600 it"},
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_refused(write_file("moded", raw_key, 32, bad[i].mode), bad[i].reason);
}
END_TEST

START_TEST(test_symlink)
{
    char link_path[512], target[512];

    snprintf(target, sizeof target, "%s", write_file("target", raw_key, 32, 0600));
    expect_loaded(target, raw_key);
    snprintf(link_path, sizeof link_path, "%s/link", dir);
    ck_assert_int_eq(symlink(target, link_path), 0);
    expect_refused(link_path, "is a symbolic link; name the file itself");
}
END_TEST

START_TEST(test_missing_directory_fifo)
{
    char path[512];

    snprintf(path, sizeof path, "%s/absent", dir);
    expect_refused(path, "No such file or directory");
    expect_refused(dir, "not a regular file");
    snprintf(path, sizeof path, "%s/fifo", dir);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    /* With no writer, a blocking open would hang here forever. */
    expect_refused(path, "not a regular file");
    expect_refused("/dev/null", "not a regular file");
}
END_TEST

START_TEST(test_error_buffer)
{
    const char *path = write_file("short-err", raw_key, 31, 0600);
    uint8_t key[32];
    char err[16];

    memset(err, 'x', sizeof err);
    ck_assert_int_eq(keyfile_load(path, key, err, sizeof err), -1);
    ck_assert_uint_eq(strlen(err), sizeof err - 1); /* truncated, terminated */
    ck_assert(strncmp(err, "key file ", 9) == 0);
    ck_assert_int_eq(keyfile_load(path, key, NULL, 0), -1);
    ck_assert_int_eq(keyfile_load(path, key, err, 0), -1);
    ck_assert_int_eq(keyfile_load(NULL, key, err, sizeof err), -1);
    path = write_file("good", raw_key, 32, 0600);
    ck_assert_int_eq(keyfile_load(path, NULL, err, sizeof err), -1);
    ck_assert_int_eq(keyfile_load(path, key, NULL, 0), 0);
    ck_assert_mem_eq(key, raw_key, 32);
}
END_TEST

static Suite *keyfile_suite(void)
{
    Suite *s = suite_create("keyfile");
    TCase *tc = tcase_create("load");

    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_raw);
    tcase_add_test(tc, test_hex);
    tcase_add_test(tc, test_wrong_size);
    tcase_add_test(tc, test_bad_hex);
    tcase_add_test(tc, test_mistakes);
    tcase_add_test(tc, test_modes);
    tcase_add_test(tc, test_symlink);
    tcase_add_test(tc, test_missing_directory_fifo);
    tcase_add_test(tc, test_error_buffer);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(keyfile_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
