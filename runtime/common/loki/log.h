/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one logger every actor uses (lokid's frontend, router adapter, planner
 * actor, supervisor, metrics, and the worker processes): one line per message
 * on stderr, as JSON ({"ts","level","msg"}) or, when stderr is the systemd
 * journal, as "<N>text" so journald keeps the priority. Libraries (shm,
 * planner, client) never log; runtime code logs once, where it decides.
 */
#ifndef LOKI_LOG_H
#define LOKI_LOG_H

#include <stdbool.h>
#include <stdint.h>

/* Log levels, least severe first; a level logs itself and everything above it. */
enum loki_log_level {
    LOKI_LOG_DEBUG = 0,
    LOKI_LOG_INFO,
    LOKI_LOG_WARN,
    LOKI_LOG_ERROR,
};

/* Per-query messages allowed per second by loki_log_query(); the rest are counted. */
#define LOKI_LOG_QUERY_PER_S 10

/* "debug", "info", "warn" (or "warning"), "error" -> 0 and *@out, else -EINVAL. */
int loki_log_level_parse(const char *s, enum loki_log_level *out);

/* "debug", "info", "warn" or "error". */
const char *loki_log_level_name(enum loki_log_level lvl);

/*
 * Set the least severe level that is written (default LOKI_LOG_INFO) and look
 * whether stderr is the journal (JOURNAL_STREAM). Call once at process start,
 * before other threads log.
 */
void loki_log_init(enum loki_log_level min);

/* Whether a message at @lvl would be written. Any thread. */
bool loki_log_enabled(enum loki_log_level lvl);

/* Write one message (newlines are escaped). Any thread: one fprintf per line. */
void loki_log(enum loki_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * Per-query messages (failures, drops): at most LOKI_LOG_QUERY_PER_S a second,
 * so a failing worker under load cannot flood the log; the rest are counted
 * and summarised as "suppressed K" by the next call after the second ends or
 * by loki_log_query_flush(). One thread only (lokid's loop).
 */
void loki_log_query(enum loki_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Write the "suppressed K" summary now if anything was suppressed. Same thread. */
void loki_log_query_flush(void);

/* As loki_log_query_flush(), but only once the current one-second window is over. */
void loki_log_query_tick(void);

/* Messages loki_log_query() has suppressed since start (for tests and metrics). */
uint64_t loki_log_query_suppressed_total(void);

#endif
