/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid and systemd (see lokid_sd.h): sd_notify's datagram protocol written out (READY=1,
 * STOPPING=1, WATCHDOG=1 to $NOTIFY_SOCKET), so lokid needs no libsystemd; without
 * $NOTIFY_SOCKET every call does nothing.
 */
#include "lokid_sd.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

void lokid_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || (path[0] != '/' && path[0] != '@'))
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t n = strlen(path);
    if (n >= sizeof(a.sun_path)) {
        close(fd);
        return;
    }
    memcpy(a.sun_path, path, n);
    if (a.sun_path[0] == '@')
        a.sun_path[0] = 0;
    sendto(fd, state, strlen(state), 0, (struct sockaddr *)&a,
           (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
}

/*
 * systemd's watchdog (WatchdogSec= in the unit): WATCHDOG_USEC is the interval and
 * WATCHDOG_PID, when set, the process it is meant for. Ping from the loop at half the
 * interval, so that a wedged loop stops pinging and systemd restarts lokid.
 */
static uv_timer_t watchdog_timer;
static bool watchdog_on;

static void on_watchdog(uv_timer_t *t)
{
    (void)t;
    lokid_sd_notify("WATCHDOG=1");
}

void lokid_sd_watchdog_start(uv_loop_t *loop)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    unsigned long long us = usec ? strtoull(usec, NULL, 10) : 0;
    if (!us || (pid && strtol(pid, NULL, 10) != (long)getpid()))
        return;
    uint64_t ms = us / 2000 ? us / 2000 : 1;
    uv_timer_init(loop, &watchdog_timer);
    uv_timer_start(&watchdog_timer, on_watchdog, ms, ms);
    watchdog_on = true;
}

void lokid_sd_watchdog_stop(void)
{
    if (watchdog_on)
        uv_timer_stop(&watchdog_timer);
}

void lokid_sd_watchdog_close(void)
{
    if (watchdog_on)
        uv_close((uv_handle_t *)&watchdog_timer, NULL);
    watchdog_on = false;
}
