/* check_backend_mem.c — unit tests of the memory backend (backend_mem.c):
 * the cache behind the backend vtable.
 *
 * The clock is injected, so TTLs are tested to the millisecond without
 * sleeping. Every completion is recorded (count, status, a copy of the value)
 * so each test asserts that it ran exactly once and synchronously, before
 * the operation returned. Covered: put/get round trip, miss, del (found and
 * not), take (value once, then gone; a completion that writes the same key
 * again is not undone), add (OK then EXISTS; OK again after expiry), TTL
 * boundary, bad arguments completing ERROR, NULL completions, and the stats.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "cache.h"
#include "checks.h"
#include "loop.h"

static uint64_t fake_now;

static uint64_t fake_clock(void *arg)
{
    (void)arg;
    return fake_now;
}

static cache *c;
static backend *b;

static void setup(void)
{
    cache_config cfg = {.max_bytes = 1 << 20};
    fake_now = 1000;
    c = cache_create(&cfg);
    ck_assert_ptr_nonnull(c);
    b = backend_mem_new(c, fake_clock, NULL);
    ck_assert_ptr_nonnull(b);
}

static void teardown(void)
{
    backend_free(b);
    cache_free(c);
}

static const uint8_t key1[] = {1, 'k', 'e', 'y', '1'};
static const uint8_t val1[] = "session-one";

START_TEST(test_put_get_roundtrip)
{
    tl_result r = {0};
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 5000, tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_OK);
    memset(&r, 0, sizeof(r));
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_uint_eq(r.value_len, sizeof(val1));
    ck_assert_mem_eq(r.value, val1, sizeof(val1));
    ck_assert_str_eq(b->ops->name, "memory");
}
END_TEST

START_TEST(test_miss_and_del)
{
    tl_result r = {0};
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
    ck_assert_uint_eq(r.value_len, 0);
    memset(&r, 0, sizeof(r));
    backend_del(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 5000, NULL, NULL);
    memset(&r, 0, sizeof(r));
    backend_del(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_OK);
    memset(&r, 0, sizeof(r));
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
}
END_TEST

START_TEST(test_take_once)
{
    tl_result r = {0};
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 5000, NULL, NULL);
    backend_take(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_mem_eq(r.value, val1, sizeof(val1));
    memset(&r, 0, sizeof(r));
    backend_take(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
    ck_assert_ptr_null(cache_get(c, key1, sizeof(key1), fake_now, &(size_t){0}));
}
END_TEST

/* A take completion that stores the key again: the new entry survives. */
static void put_again(void *arg, backend_status status, const uint8_t *value, size_t value_len)
{
    tl_record(arg, status, value, value_len);
    if (status == BACKEND_OK)
        backend_put(b, key1, sizeof(key1), (const uint8_t *)"new", 3, 5000, NULL, NULL);
}

START_TEST(test_take_reentrant_put)
{
    tl_result r = {0};
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 5000, NULL, NULL);
    backend_take(b, key1, sizeof(key1), put_again, &r);
    ck_assert_int_eq(r.status, BACKEND_OK);
    memset(&r, 0, sizeof(r));
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_uint_eq(r.value_len, 3);
    ck_assert_mem_eq(r.value, "new", 3);
}
END_TEST

START_TEST(test_add_if_absent)
{
    tl_result r = {0};
    backend_add(b, key1, sizeof(key1), val1, sizeof(val1), 100, tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_OK);
    memset(&r, 0, sizeof(r));
    backend_add(b, key1, sizeof(key1), (const uint8_t *)"other", 5, 100, tl_record, &r);
    ck_assert_int_eq(r.calls, 1);
    ck_assert_int_eq(r.status, BACKEND_EXISTS);
    memset(&r, 0, sizeof(r));
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_mem_eq(r.value, val1, sizeof(val1)); /* left alone */
    fake_now += 100;                               /* expired exactly now */
    memset(&r, 0, sizeof(r));
    backend_add(b, key1, sizeof(key1), (const uint8_t *)"other", 5, 100, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_OK);
}
END_TEST

START_TEST(test_ttl_boundary)
{
    tl_result r = {0};
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 250, NULL, NULL);
    fake_now += 249;
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_OK);
    fake_now += 1;
    memset(&r, 0, sizeof(r));
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
    memset(&r, 0, sizeof(r));
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 250, NULL, NULL);
    fake_now += 250;
    backend_take(b, key1, sizeof(key1), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_NOT_FOUND);
}
END_TEST

START_TEST(test_bad_arguments)
{
    uint8_t long_key[BACKEND_MAX_KEY + 1];
    memset(long_key, 7, sizeof(long_key));
    tl_result r = {0};
    backend_put(b, key1, 0, val1, sizeof(val1), 100, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_put(b, long_key, sizeof(long_key), val1, sizeof(val1), 100, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_put(b, key1, sizeof(key1), val1, 0, 100, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 0, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_add(b, key1, sizeof(key1), NULL, 4, 100, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_get(b, NULL, 3, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_take(b, long_key, sizeof(long_key), tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    backend_del(b, key1, 0, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_ERROR);
    ck_assert_int_eq(r.calls, 8);
    /* The longest key is fine. */
    backend_put(b, long_key, BACKEND_MAX_KEY, val1, sizeof(val1), 100, tl_record, &r);
    ck_assert_int_eq(r.status, BACKEND_OK);
    ck_assert_ptr_null(backend_mem_new(NULL, NULL, NULL));
}
END_TEST

START_TEST(test_stats)
{
    tl_result r = {0};
    backend_put(b, key1, sizeof(key1), val1, sizeof(val1), 100, NULL, NULL);
    backend_get(b, key1, sizeof(key1), tl_record, &r);
    backend_add(b, key1, sizeof(key1), val1, sizeof(val1), 100, NULL, NULL);
    backend_del(b, key1, sizeof(key1), NULL, NULL);
    backend_get(b, key1, sizeof(key1), NULL, NULL);
    backend_stats st;
    backend_get_stats(b, &st);
    ck_assert_uint_eq(st.ops, 5);
    ck_assert_uint_eq(st.by_status[BACKEND_OK], 3);
    ck_assert_uint_eq(st.by_status[BACKEND_EXISTS], 1);
    ck_assert_uint_eq(st.by_status[BACKEND_NOT_FOUND], 1);
    ck_assert_uint_eq(st.up, 1);
    ck_assert_str_eq(backend_status_name(BACKEND_UNAVAILABLE), "unavailable");
}
END_TEST

static Suite *backend_mem_suite(void)
{
    Suite *s = suite_create("backend_mem");
    TCase *tc = tcase_create("ops");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_put_get_roundtrip);
    tcase_add_test(tc, test_miss_and_del);
    tcase_add_test(tc, test_take_once);
    tcase_add_test(tc, test_take_reentrant_put);
    tcase_add_test(tc, test_add_if_absent);
    tcase_add_test(tc, test_ttl_boundary);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_stats);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return tc_run_suite(backend_mem_suite());
}
