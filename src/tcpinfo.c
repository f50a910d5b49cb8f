/* tcpinfo: TCP_INFO and keepalive probing; see tcpinfo.h. */
#include "tcpinfo.h"

#include <stddef.h>
#include <string.h>
#include <sys/socket.h>

#ifdef __linux__
#include <linux/tcp.h>
#include <netinet/in.h>
#endif

void tcpinfo_sample(int fd, struct liveness_sample *s)
{
	s->tcp = false;
	s->has_window = false;
#ifdef __linux__
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return;
	/* Older kernels fill a shorter structure: use only what they filled. */
	if (len < offsetof(struct tcp_info, tcpi_notsent_bytes) + sizeof(ti.tcpi_notsent_bytes))
		return;
	s->tcp = true;
	s->acked = ti.tcpi_bytes_acked;
	s->unacked = ti.tcpi_unacked;
	s->notsent = ti.tcpi_notsent_bytes;
	s->probes = ti.tcpi_probes;
	if (len >= offsetof(struct tcp_info, tcpi_snd_wnd) + sizeof(ti.tcpi_snd_wnd)) {
		s->window = ti.tcpi_snd_wnd;
		s->has_window = true;
	}
#else
	(void)fd;
#endif
}

int tcpinfo_keepalive(int fd, unsigned seconds)
{
	int on = 1, secs = seconds > 0 ? (int)seconds : 1;
	if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) != 0)
		return -1;
#ifdef __linux__
	if (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &secs, sizeof(secs)) != 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &secs, sizeof(secs)) != 0)
		return -1;
#endif
	return 0;
}
