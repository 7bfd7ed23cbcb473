/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Command-line helpers shared by `loki` and `lokid`: both parse with
 * getopt_long() (opterr = 0, optstring starting with ':') and report a bad
 * option on one line, "PROG: unknown option '--bogus' (try --help)", exit 2.
 * Pure: formats into the caller's buffer, prints nothing.
 */
#ifndef LOKI_OPT_H
#define LOKI_OPT_H

#include <stddef.h>

/*
 * Describe the option getopt_long() just rejected: call right after it returned
 * @c = '?' (unknown option, or a value given to one that takes none) or ':'
 * (missing value), with @argv as passed to it. Writes e.g. "unknown option
 * '--bogus'", "option '--socket' needs a value" into @buf (@len bytes) and
 * returns @buf. Reads getopt's optind and optopt, so only the thread that parses.
 */
char *loki_opt_error(int c, char *const argv[], char *buf, size_t len);

#endif
