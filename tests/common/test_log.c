/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The logger's JSON lines (runtime/common/log.c), read back from stderr: each
 * is one line that parses, with ts (seconds, millisecond decimals), level and
 * msg in that order; quotes, backslashes, control characters and bytes that
 * are not UTF-8 cannot break a line; the level filter holds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "loki/json.h"
#include "loki/log.h"

/* Run loki_log() calls with stderr in a temporary file; return what they wrote (free it). */
static char *capture(void (*fn)(void))
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), STDERR_FILENO) >= 0);
    fn();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t n = lseek(fileno(tmp), 0, SEEK_END);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fileno(tmp), buf, (size_t)n, 0), n);
    fclose(tmp);
    return buf;
}

static void log_some(void)
{
    loki_log_init(LOKI_LOG_INFO);
    loki_log(LOKI_LOG_INFO, "plain %d", 42);
    loki_log(LOKI_LOG_DEBUG, "filtered out");
    loki_log(LOKI_LOG_WARN, "quote \" backslash \\ newline\n tab\t bell\a end");
    loki_log(LOKI_LOG_ERROR, "not utf-8: \xff\xfe, utf-8: \xc3\xa9");
}

static json_t *line_at(char **cursor)
{
    char *nl = strchr(*cursor, '\n');
    assert_non_null(nl);
    *nl = 0;
    json_error_t e;
    json_t *j = json_loads(*cursor, 0, &e);
    if (!j)
        fail_msg("not a JSON line (%s): %s", e.text, *cursor);
    *cursor = nl + 1;
    const char *keys[] = {"ts", "level", "msg"};
    void *it = json_object_iter(j);
    for (int i = 0; i < 3; i++, it = json_object_iter_next(j, it)) {
        assert_non_null(it);
        assert_string_equal(json_object_iter_key(it), keys[i]);
    }
    assert_null(it);
    return j;
}

static void test_json_lines(void **state)
{
    unsetenv("JOURNAL_STREAM");
    double t0 = (double)time(NULL);
    char *out = capture(log_some), *c = out;
    json_t *j = line_at(&c);
    assert_true(json_is_real(json_object_get(j, "ts")));
    double ts = json_real_value(json_object_get(j, "ts"));
    assert_true(ts >= t0 - 1 && ts <= t0 + 5);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "plain 42");
    json_decref(j);
    j = line_at(&c);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "quote \" backslash \\ newline\n tab\t bell\a end");
    json_decref(j);
    j = line_at(&c);
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    /* each byte that is not UTF-8 is U+FFFD; valid sequences pass */
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "not utf-8: \xef\xbf\xbd\xef\xbf\xbd, utf-8: \xc3\xa9");
    json_decref(j);
    assert_string_equal(c, "");
    free(out);
}

/* The timestamp keeps the old text's precision: seconds with three decimals at most. */
static void test_ts_millis(void **state)
{
    unsetenv("JOURNAL_STREAM");
    char *out = capture(log_some);
    const char *ts = strstr(out, "{\"ts\":");
    assert_non_null(ts);
    ts += 6;
    size_t digits = strspn(ts, "0123456789");
    assert_true(digits >= 10);
    if (ts[digits] == '.')
        assert_true(strspn(ts + digits + 1, "0123456789") <= 3);
    else
        assert_int_equal(ts[digits], ',');
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_lines),
        cmocka_unit_test(test_ts_millis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
