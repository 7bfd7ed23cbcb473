/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The harness's scratch folder: a test process's temp files and sockets go into one folder under
 * $TMPDIR that is gone once the process exits, so a test run leaves nothing behind in /tmp (they
 * used to pile up there as /tmp/loki-test-XXXXXX.csv, one set per run).
 */
#include "harness.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* Role "user": use the folder the way tests do, print its path, exit. */
static int user(void)
{
    const char *f = loki_test_write_tmp("minute,requests\n0,1\n", ".csv");
    if (!f)
        return 2;
    char file[PATH_MAX];
    snprintf(file, sizeof(file), "%s", f);
    /* a socket a server bound and did not unlink, and a folder with a file in it */
    const char *sock = loki_test_tmp_path("server.sock");
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (!sock || strlen(sock) >= sizeof(a.sun_path))
        return 3;
    snprintf(a.sun_path, sizeof(a.sun_path), "%s", sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
        return 4;
    close(fd);
    if (mkdir(loki_test_tmp_path("sub"), 0700) < 0)
        return 5;
    FILE *fp = fopen(loki_test_tmp_path("sub/out.json"), "w");
    if (!fp)
        return 6;
    fputs("{}\n", fp);
    fclose(fp);
    /* a forked child that exits leaves the folder to its maker */
    pid_t pid = fork();
    if (pid == 0)
        exit(0);
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || access(file, F_OK) < 0)
        return 7;
    printf("%s\n%s\n", loki_test_tmpdir(), file);
    return 0;
}

static int entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
    closedir(d);
    return n;
}

static void test_tmpdir_removed_at_exit(void **state)
{
    (void)state;
    /* the user process gets a TMPDIR of its own, inside ours */
    char base[PATH_MAX];
    snprintf(base, sizeof(base), "%s", loki_test_tmp_path("base"));
    assert_int_equal(mkdir(base, 0700), 0);
    char self[PATH_MAX], cmd[2 * PATH_MAX + 32], out[PATH_MAX] = "", file[PATH_MAX] = "";
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    assert_true(n > 0);
    self[n] = 0;
    snprintf(cmd, sizeof(cmd), "TMPDIR='%s' '%s' user", base, self);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    if (!fgets(out, sizeof(out), p) || !fgets(file, sizeof(file), p))
        out[0] = 0;
    assert_int_equal(pclose(p), 0);
    out[strcspn(out, "\n")] = 0;
    file[strcspn(file, "\n")] = 0;
    /* it worked under $TMPDIR, and left nothing there */
    char want[PATH_MAX + 16];
    snprintf(want, sizeof(want), "%s/loki-test-", base);
    assert_true(!strncmp(out, want, strlen(want)));
    assert_true(!strncmp(file, want, strlen(want)));
    struct stat st;
    assert_int_not_equal(stat(out, &st), 0);
    assert_int_not_equal(stat(file, &st), 0);
    assert_int_equal(entries(base), 0);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "user"))
        return user();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tmpdir_removed_at_exit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
