/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers shared by every test binary: cmocka includes in the right
 * order, source-tree paths, temp files, and the self-spawn trick for
 * cross-process tests (the binary re-executes itself with a role argument).
 */
#ifndef LOKI_TEST_HARNESS_H
#define LOKI_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <sys/types.h>

/* Absolute path of @rel under the source tree (LOKI_SOURCE_DIR or cwd). Static buffer. */
const char *loki_test_src(const char *rel);
/* Absolute path of @rel under the build tree (LOKI_BINARY_DIR or ./build). Static buffer. */
const char *loki_test_bin(const char *rel);
/*
 * This process's scratch folder, ${TMPDIR:-/tmp}/loki-test-PROG-XXXXXX, made on first use and
 * removed with everything in it when the process that made it exits (exit() or a return from
 * main; not a crash or a kill, which leave it for a look). Forked children never remove it.
 * NULL when it cannot be made. Any thread.
 */
const char *loki_test_tmpdir(void);
/* Path of @name in loki_test_tmpdir() (nothing is created). Thread-local buffer; NULL as above. */
const char *loki_test_tmp_path(const char *name);
/* Write @text to a fresh file named *@suffix in loki_test_tmpdir(); its path (thread-local). */
const char *loki_test_write_tmp(const char *text, const char *suffix);
/* Spawn this test binary (/proc/self/exe) with argv[1] = @role and extra args. Returns pid. */
pid_t loki_test_spawn_self(const char *role, const char *arg);

#endif
