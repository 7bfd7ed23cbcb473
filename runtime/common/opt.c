/* SPDX-License-Identifier: Apache-2.0 */
/*
 * One-line descriptions of getopt_long()'s rejections (loki/opt.h). With
 * opterr = 0 getopt prints nothing and leaves the rejected element at
 * argv[optind - 1] and, for short options or known long ones, its code in optopt.
 */
#include "loki/opt.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

char *loki_opt_error(int c, char *const argv[], char *buf, size_t len)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "";
    /*
     * A long option's own element is at optind - 1. A short option may sit inside a
     * cluster ("-qx"), where getopt has not moved optind past it yet: then optopt is the
     * character and the element at optind - 1 is an earlier one, so a "--" there names
     * the long option only when getopt could not have been inside a cluster: an unknown
     * long name (optopt 0), a missing value, or "--name=value" for a flag.
     */
    bool is_long = !strncmp(arg, "--", 2) && (optopt == 0 || c == ':' || strchr(arg, '='));
    if (is_long) {
        int n = (int)strcspn(arg, "=");
        if (c == ':')
            snprintf(buf, len, "option '%.*s' needs a value", n, arg);
        else if (optopt)
            snprintf(buf, len, "option '%.*s' takes no value", n, arg);
        else
            snprintf(buf, len, "unknown option '%.*s'", n, arg);
    } else if (c == ':') {
        snprintf(buf, len, "option '-%c' needs a value", optopt);
    } else if (optopt > 0x20 && optopt < 0x7f) {
        snprintf(buf, len, "unknown option '-%c'", optopt);
    } else {
        snprintf(buf, len, "unknown option '%s'", arg);
    }
    return buf;
}
