/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Project error codes. Functions return 0 or a negative value: either -errno
 * (-EAGAIN, -ENOMEM, ...) or one of the LOKI_E* codes below, which all sit
 * below -4096 so they never collide with errno values.
 */
#ifndef LOKI_ERROR_H
#define LOKI_ERROR_H

#define LOKI_ERRORS(X)                                                                             \
    X(EBADMAGIC, "shared-memory segment has a bad magic or version")                               \
    X(ELAYOUT, "shared-memory layout hash mismatch")                                               \
    X(EPEERDEAD, "peer process died")                                                              \
    X(ECORRUPT, "corrupted record or frame")                                                       \
    X(ETOOBIG, "payload or record exceeds the limit")                                              \
    X(EPARSE, "parse error")                                                                       \
    X(ETOPOLOGY, "invalid topology")                                                               \
    X(EINFEASIBLE, "no feasible plan")                                                             \
    X(ESOLVER, "solver failure")                                                                   \
    X(EPROTO, "protocol error")                                                                    \
    X(EUNKNOWN_PIPELINE, "unknown pipeline")                                                       \
    X(EOVERLOADED, "overloaded")                                                                   \
    X(EDRAINING, "server is draining")                                                             \
    X(EBACKEND, "backend failure")

enum loki_error {
    LOKI_ERROR_BASE_ = -5000,
#define LOKI_ERR_ENUM_(name, msg) LOKI_##name,
    LOKI_ERRORS(LOKI_ERR_ENUM_)
#undef LOKI_ERR_ENUM_
        LOKI_ERROR_END_
};

/* Message for 0, a negative errno or a LOKI_E* code. Never NULL; thread-safe. */
const char *loki_strerror(int err);

#endif
