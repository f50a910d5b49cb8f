/* tcpinfo: what the kernel knows of a TCP connection that the program cannot
 * see from above: bytes acknowledged, bytes still to send, the peer's
 * window, unanswered probes (Linux TCP_INFO), and TCP keepalive probing.
 * Kept apart because <linux/tcp.h> and <netinet/tcp.h> cannot meet in one
 * file. Elsewhere the calls report that nothing is known.
 *
 * Ownership: nothing is allocated. */
#ifndef OTOROSHICTL_TCPINFO_H
#define OTOROSHICTL_TCPINFO_H

#include "liveness.h"

/* Fills the kernel's part of s (s->tcp tells whether it could). */
void tcpinfo_sample(int fd, struct liveness_sample *s);
/* Has the kernel probe an idle connection every `seconds`: each answer
 * carries the peer's current window, which tells a gateway that reads what
 * it holds from one that is stuck. Returns 0 or -1. */
int tcpinfo_keepalive(int fd, unsigned seconds);

#endif
