/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON helpers of loki/json.h over jansson. The fixed-decimals rounding
 * goes through printf and strtod so that it is exactly printf's (round half to
 * even on the binary value), not an approximation by multiplying.
 */
#include "loki/json.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/*
 * @x rounded to @decimals as printf("%.*f") then strtod() would give. printf rounds the exact
 * binary value of x * 10^d to an integer r (half to even) and prints r / 10^d; strtod returns
 * the double nearest that decimal, and so does the division r / 10^d (r and 10^d are exact
 * doubles, division is correctly rounded). So only r needs care: nearbyint(x * 10^d) is r
 * unless the product's own rounding moved it across a .5, which is possible only when it
 * lands within a hair of one; those few values (and huge ones) take printf's path.
 */
static double round_fixed(double x, int d)
{
    static const double p10[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
    double f = x * p10[d];
    if (fabs(f) < 4503599627370496.0) { /* 2^52: integers and halves are exact below */
        double fl = floor(f);
        /* the product is off by at most 2^-53 |f|: a margin of 1e-15 |f| is safe */
        if (fabs(f - fl - 0.5) > 1e-15 * fabs(f) + 1e-12)
            return nearbyint(f) / p10[d];
    }
    char buf[512];
    snprintf(buf, sizeof(buf), "%.*f", d, x);
    return strtod(buf, NULL);
}

json_t *loki_json_fixed(double x, int decimals)
{
    if (!isfinite(x))
        return json_null();
    double r = round_fixed(x, decimals < 0 ? 0 : decimals > 9 ? 9 : decimals);
    /* "%.0f" prints no decimal point: the text is an integer */
    if (decimals <= 0 && fabs(r) < 9.2e18)
        return json_integer((json_int_t)r);
    return json_real(r);
}

json_t *loki_json_u64(uint64_t v)
{
    return json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v);
}

/* Length of the valid UTF-8 sequence at @s (@n bytes left), or 0 when it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp;
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xc2 && s[0] <= 0xdf) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if (s[0] >= 0xe0 && s[0] <= 0xef) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if (s[0] >= 0xf0 && s[0] <= 0xf4) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    /* overlong forms, UTF-16 surrogates, beyond U+10FFFF */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

json_t *loki_json_strn(const char *s, size_t n)
{
    if (!s)
        return json_null();
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    /* not UTF-8 (or out of memory: the copy then fails too) */
    char *fixed = malloc(n * 3 + 1);
    if (!fixed)
        return NULL;
    size_t k = 0;
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(u + i, n - i);
        if (l) {
            memcpy(fixed + k, u + i, l);
            k += l;
            i += l;
        } else {
            memcpy(fixed + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
        }
    }
    j = json_stringn(fixed, k);
    free(fixed);
    return j;
}

json_t *loki_json_str(const char *s)
{
    return loki_json_strn(s, s ? strlen(s) : 0);
}

json_t *loki_json_set(json_t *obj, const char *key, json_t *v, bool *oom)
{
    if (!obj || !v) {
        json_decref(v);
        *oom = true;
        return NULL;
    }
    if (json_object_set_new_nocheck(obj, key, v)) {
        *oom = true;
        return NULL;
    }
    return v;
}

json_t *loki_json_push(json_t *arr, json_t *v, bool *oom)
{
    if (!arr || !v) {
        json_decref(v);
        *oom = true;
        return NULL;
    }
    if (json_array_append_new(arr, v)) {
        *oom = true;
        return NULL;
    }
    return v;
}

int loki_json_print(FILE *f, json_t *doc)
{
    if (!doc)
        return -ENOMEM;
    int rc = json_dumpf(doc, f, LOKI_JSON_FLAGS);
    json_decref(doc);
    if (rc || fputc('\n', f) == EOF)
        return -EIO;
    return 0;
}
