/* ending: why a tunnel ended, as one enum with one table of texts (the
 * words of the close summary, see the man page's LOGS) and whether the end
 * is clean: either side closing, or a stop asked for.
 *
 * Ownership: nothing allocated. */
#ifndef OTOROSHICTL_ENDING_H
#define OTOROSHICTL_ENDING_H

#include <stdbool.h>

enum end_reason {
	END_NONE = 0,
	END_LOCAL_CLOSE,
	END_LOCAL_RESET,
	END_GATEWAY_CLOSED,
	END_GATEWAY_ERROR,
	END_TARGET_UNREACHABLE,
	END_GATEWAY_IDLE,
	END_GATEWAY_LOST,
	END_GATEWAY_SILENT,
	END_REFUSED,
	END_UNREACHABLE,
	END_PROXY_REFUSED,
	END_TLS_FAILED,
	END_HANDSHAKE_TIMEOUT,
	END_UPGRADE_FAILED,
	END_BAD_UPGRADE,
	END_PROTOCOL_ERROR,
	END_DRAIN_TIMEOUT,
	END_ENDING_TIMEOUT,
	END_STOPPED,
	END_NO_MEMORY,
	END_INTERNAL,
	END_DONE,
};

/* The summary's words: "local close", "gateway idle timeout"... */
const char *end_reason_text(enum end_reason r);
/* Either side closing, a stop asked for, or nothing said. */
bool end_reason_clean(enum end_reason r);
/* The first cause of an end, except that a failure outranks a clean end
 * that came before it (a client that sent and closed before the gateway
 * refused was refused all the same): what `was` becomes when `now` is
 * said too. */
enum end_reason end_reason_merge(enum end_reason was, enum end_reason now);

#endif
