/* SPDX-License-Identifier: Apache-2.0 */
/* loki_strerror(): one table for project codes, strerror_r() for errno values. */
#include "loki/error.h"

#include <string.h>

const char *loki_strerror(int err)
{
    static const char *const msgs[] = {
#define LOKI_ERR_MSG_(name, msg) msg,
        LOKI_ERRORS(LOKI_ERR_MSG_)
#undef LOKI_ERR_MSG_
    };
    if (err == 0)
        return "success";
    if (err > LOKI_ERROR_BASE_ && err < LOKI_ERROR_END_)
        return msgs[err - LOKI_ERROR_BASE_ - 1];
    if (err < 0 && err > -4096)
        return strerrordesc_np(-err) ? strerrordesc_np(-err) : "unknown errno";
    return "unknown error";
}
