/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON output goes through one library, jansson: every document lokid and loki
 * print (the status report, log lines, the CLI's --json outputs) is built as a
 * jansson tree and dumped with LOKI_JSON_FLAGS. These helpers hold the two
 * conventions the hand-written printers had: numbers rounded to a fixed count
 * of decimals (printf's "%.3f": the value a reader parses is the same), and
 * strings that are always valid JSON (invalid UTF-8 becomes U+FFFD).
 * Cost: bench_json renders the status report at 1.6-1.85x the hand-written
 * printer's time (about 29 against 16 us, release; runtime/metrics/README.md),
 * under the 2x that issue 19 allowed. Nothing here keeps state: any thread.
 */
#ifndef LOKI_JSON_H
#define LOKI_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/*
 * Compact (no spaces), keys in insertion order, reals with 15 significant digits: a value
 * rounded to a few decimals prints as that decimal ("0.25", "12.5", integral ones as "3.0").
 */
#define LOKI_JSON_FLAGS (JSON_COMPACT | JSON_REAL_PRECISION(15))

/*
 * A new real: @x rounded to @decimals (0..9) as printf("%.*f") rounds it, so the parsed value
 * equals that of the printf text; with 0 decimals an integer (the text "%.0f" prints is one).
 * A NaN or infinity (which JSON cannot hold) is null.
 * Returns a new reference, or NULL when out of memory.
 */
json_t *loki_json_fixed(double x, int decimals);

/* A new integer (counters): values above INT64_MAX saturate there. NULL when out of memory. */
json_t *loki_json_u64(uint64_t v);

/*
 * A new string holding @s (@n bytes, or up to its NUL for loki_json_str()); bytes that are not
 * valid UTF-8 each become U+FFFD, so the result always dumps. NULL @s gives null. NULL when
 * out of memory.
 */
json_t *loki_json_str(const char *s);
json_t *loki_json_strn(const char *s, size_t n);

/*
 * Set @key (valid UTF-8: a literal or a topology name; not checked) of object @obj to @v, taking
 * ownership of @v (json_object_set_new). A NULL @v or
 * @obj (an earlier allocation failed) sets *@oom; so does a failed insertion. Returns @v, now
 * borrowed from @obj, or NULL on failure.
 */
json_t *loki_json_set(json_t *obj, const char *key, json_t *v, bool *oom);

/* Append @v to array @arr, taking ownership of @v; failures set *@oom. Returns @v (borrowed)
 * or NULL, as loki_json_set(). */
json_t *loki_json_push(json_t *arr, json_t *v, bool *oom);

/*
 * Write @doc with LOKI_JSON_FLAGS and a newline to @f, then release @doc (NULL: nothing is
 * written). Returns 0, or -ENOMEM / -EIO.
 */
int loki_json_print(FILE *f, json_t *doc);

#endif
