/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The logger (loki/log.h): JSON lines built with jansson (loki/json.h), or
 * "<N>message" lines for the journal. Process-wide state: the level and the journal flag
 * are set once before threads start and only read afterwards; the per-query
 * rate limit belongs to the one thread that calls loki_log_query().
 */
#include "loki/log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "loki/clock.h"
#include "loki/json.h"

static const char *const level_name[] = {"debug", "info", "warn", "error"};
static const int level_prio[] = {7, 6, 4, 3}; /* syslog priorities for journald */

static enum loki_log_level min_level = LOKI_LOG_INFO;
static bool journal;

/* loki_log_query()'s rate limit: one second's window, its count, what was swallowed */
static uint64_t q_window_ns;
static unsigned q_n;
static uint64_t q_suppressed, q_suppressed_total;

int loki_log_level_parse(const char *s, enum loki_log_level *out)
{
    static const char *const alias[] = {"debug", "info", "warning", "error"};
    for (int i = 0; i <= LOKI_LOG_ERROR; i++)
        if (!strcmp(s, level_name[i]) || !strcmp(s, alias[i])) {
            *out = (enum loki_log_level)i;
            return 0;
        }
    return -EINVAL;
}

const char *loki_log_level_name(enum loki_log_level lvl)
{
    return lvl >= LOKI_LOG_DEBUG && lvl <= LOKI_LOG_ERROR ? level_name[lvl] : "?";
}

/*
 * Whether stderr is connected to the journal: systemd sets JOURNAL_STREAM to
 * "device:inode" of the stream it gave us; a child that inherited the variable
 * but writes elsewhere must keep JSON lines.
 */
static bool stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st))
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void loki_log_init(enum loki_log_level min)
{
    min_level = min;
    journal = stderr_is_journal();
}

bool loki_log_enabled(enum loki_log_level lvl)
{
    return lvl >= min_level;
}

static void vlog(enum loki_log_level lvl, const char *fmt, va_list ap)
{
    char msg[1024];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (journal) {
        /* journald reads the "<N>" prefix as the priority; it adds its own timestamps */
        for (char *c = msg; *c; c++)
            if (*c == '\n')
                *c = ' ';
        fprintf(stderr, "<%d>%s\n", level_prio[lvl], msg);
        return;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* {"ts":seconds.millis,"level":"info","msg":"..."}, through jansson (loki/json.h) */
    bool oom = false;
    json_t *line = json_object();
    loki_json_set(line, "ts",
                  loki_json_fixed((double)ts.tv_sec + (double)(ts.tv_nsec / 1000000) / 1e3, 3),
                  &oom);
    loki_json_set(line, "level", json_string(level_name[lvl]), &oom);
    loki_json_set(line, "msg", loki_json_str(msg), &oom);
    char out[8192]; /* a 1 KiB message escapes to at most 6 KiB */
    size_t n = oom ? 0 : json_dumpb(line, out, sizeof(out), LOKI_JSON_FLAGS);
    if (n && n < sizeof(out))
        fprintf(stderr, "%.*s\n", (int)n, out);
    else /* no memory for the line: still say something */
        fprintf(stderr, "{\"level\":\"%s\",\"msg\":\"(log line lost: out of memory)\"}\n",
                level_name[lvl]);
    json_decref(line);
}

void loki_log(enum loki_log_level lvl, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, fmt, ap);
    va_end(ap);
}

static void query_flush_at(uint64_t t)
{
    if (q_suppressed)
        loki_log(LOKI_LOG_WARN, "suppressed %llu per-query log messages in the last %.1f s",
                 (unsigned long long)q_suppressed, (double)(t - q_window_ns) / 1e9);
    q_suppressed = 0;
    q_n = 0;
    q_window_ns = t;
}

void loki_log_query_flush(void)
{
    query_flush_at(loki_now_ns());
}

void loki_log_query_tick(void)
{
    uint64_t t = loki_now_ns();
    if (q_suppressed && t - q_window_ns >= 1000000000ull)
        query_flush_at(t);
}

void loki_log_query(enum loki_log_level lvl, const char *fmt, ...)
{
    if (lvl < min_level)
        return;
    uint64_t t = loki_now_ns();
    if (t - q_window_ns >= 1000000000ull)
        query_flush_at(t);
    if (q_n >= LOKI_LOG_QUERY_PER_S) {
        q_suppressed++;
        q_suppressed_total++;
        return;
    }
    q_n++;
    va_list ap;
    va_start(ap, fmt);
    vlog(lvl, fmt, ap);
    va_end(ap);
}

uint64_t loki_log_query_suppressed_total(void)
{
    return q_suppressed_total;
}
