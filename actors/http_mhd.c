/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libmicrohttpd, opened at run time (see "Loading" in http_front.c): the table every MHD_
 * call of the front door goes through, filled once by dlopen and dlsym.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>

#define LOKI_HF_MHD_LOADER /* MHD_ names here are the library's own, not the table's */
#include "http_front_internal.h"

struct loki__mhd_table loki__mhd;
static pthread_once_t mhd_once = PTHREAD_ONCE_INIT;
static char mhd_error[256]; /* empty once loaded */

static void mhd_load(void)
{
    static const char *const names[] = {"libmicrohttpd.so.12", "libmicrohttpd.so"};
    void *h = NULL;
    for (size_t i = 0; !h && i < sizeof(names) / sizeof(names[0]); i++)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL); /* kept for the process's life */
    if (!h) {
        snprintf(mhd_error, sizeof(mhd_error), "cannot load libmicrohttpd: %s", dlerror());
        return;
    }
#define MHD_SYM(n)                                                                                 \
    if (!(*(void **)&loki__mhd.n = dlsym(h, #n))) {                                                \
        snprintf(mhd_error, sizeof(mhd_error), "libmicrohttpd has no %s", #n);                     \
        return;                                                                                    \
    }
    MHD_FNS(MHD_SYM)
#undef MHD_SYM
}

/* Load libmicrohttpd once (any thread); NULL, or why it cannot be used. */
const char *loki__hf_mhd_open(void)
{
    pthread_once(&mhd_once, mhd_load);
    return mhd_error[0] ? mhd_error : NULL;
}
