/* check: `tcp-tunnel --check`, a diagnosis of each forward without
 * listening. For each one it opens one tunnel the way the listener would,
 * and reports every step with its time: the name lookup, the TCP
 * connection, the proxy (TLS and CONNECT), TLS to the gateway, the
 * upgrade, and the target, for which it waits up to --check-wait for an
 * early Close (Otoroshi could not reach it) or data; then it sends Close
 * 1000 and waits for the answer, so that no half-open session is left. It
 * never sends data: nothing is written to the target.
 *
 * The checklist goes to standard output, one line per step (one JSON
 * object per step with --log-format json); the failing step carries the
 * message, and hint, that the tunnel would log.
 *
 * Ownership: each check lives on the stack of check_run, on the default
 * loop, one forward after another. */
#ifndef OTOROSHICTL_CHECK_H
#define OTOROSHICTL_CHECK_H

#include <stdbool.h>
#include <stdio.h>

#include "listener.h"

/* Checks every forward of the sources; returns the exit status: 0 when
 * every step of every forward passed, 1 otherwise. */
int check_run(const struct listener_source *srcs, size_t n_srcs, bool json, FILE *out);

#endif
