/* systemd: what the service manager hands over (sockets, by socket
 * activation) and what it wants to hear (readiness, status, watchdog),
 * through libsystemd when the build has it; without it, no sockets are
 * passed and nothing is said.
 *
 * Ownership: systemd_sockets hands over the descriptors and an array the
 * caller frees. */
#ifndef OTOROSHICTL_SYSTEMD_H
#define OTOROSHICTL_SYSTEMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct systemd_socket {
	int fd;
	char name[256]; /* FileDescriptorName=, or "" */
};

/* The listening sockets passed by socket activation, with their names;
 * the LISTEN_* variables are unset so that no child sees them. Returns
 * their count (0 when none were passed) with *out allocated, or -1 with
 * err when the variables are malformed. */
int systemd_sockets(struct systemd_socket **out, char *err, size_t errlen);

/* Sends state ("READY=1", "STATUS=...", "STOPPING=1", "WATCHDOG=1") to the
 * service manager when NOTIFY_SOCKET names one; nothing otherwise. */
void systemd_notify(const char *state);

/* The interval at which the manager expects WATCHDOG=1 (WATCHDOG_USEC for
 * this process), in microseconds; 0 when no watchdog is set. */
uint64_t systemd_watchdog_usec(void);

/* True when the build speaks to systemd at all. */
bool systemd_built_in(void);

#endif
