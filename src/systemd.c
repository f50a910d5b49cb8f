/* systemd: socket activation and sd_notify; see systemd.h. */
#include "systemd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>

int systemd_sockets(struct systemd_socket **out, char *err, size_t errlen)
{
	*out = NULL;
	char **names = NULL;
	int n = sd_listen_fds_with_names(1, &names);
	if (n < 0) {
		snprintf(err, errlen, "the sockets passed by systemd (LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES) cannot "
			 "be read: %s", strerror(-n));
		return -1;
	}
	if (n == 0) {
		free(names);
		return 0;
	}
	struct systemd_socket *s = calloc((size_t)n, sizeof(*s));
	if (s == NULL) {
		for (int i = 0; names != NULL && i < n; i++)
			free(names[i]);
		free(names);
		snprintf(err, errlen, "out of memory for the sockets passed by systemd");
		return -1;
	}
	for (int i = 0; i < n; i++) {
		s[i].fd = SD_LISTEN_FDS_START + i;
		/* systemd names an unnamed socket "unknown" (or after its unit):
		 * either way the name is only a hint, the address decides. */
		if (names != NULL && names[i] != NULL)
			snprintf(s[i].name, sizeof(s[i].name), "%s", names[i]);
		if (names != NULL)
			free(names[i]);
	}
	free(names);
	*out = s;
	return n;
}

void systemd_notify(const char *state)
{
	sd_notify(0, state);
}

uint64_t systemd_watchdog_usec(void)
{
	uint64_t usec = 0;
	return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

bool systemd_built_in(void)
{
	return true;
}

#else

int systemd_sockets(struct systemd_socket **out, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	*out = NULL;
	return 0;
}

void systemd_notify(const char *state)
{
	(void)state;
}

uint64_t systemd_watchdog_usec(void)
{
	return 0;
}

bool systemd_built_in(void)
{
	return false;
}

#endif
