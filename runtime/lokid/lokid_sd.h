/* SPDX-License-Identifier: Apache-2.0 */
/*
 * lokid_sd.h: lokid's side of systemd's notification protocol (Type=notify units,
 * WatchdogSec=). Loop thread only.
 */
#ifndef LOKID_SD_H
#define LOKID_SD_H

struct uv_loop_s;

/* Send @state ("READY=1", "STOPPING=1", ...) to $NOTIFY_SOCKET; nothing without one. */
void lokid_sd_notify(const char *state);
/* With $WATCHDOG_USEC set (for this pid), ping WATCHDOG=1 from @loop at half the interval. */
void lokid_sd_watchdog_start(struct uv_loop_s *loop);
/* Stop pinging (shutdown); close the timer before the loop's last run. */
void lokid_sd_watchdog_stop(void);
void lokid_sd_watchdog_close(void);

#endif
