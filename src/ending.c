/* ending: end reasons; see ending.h. */
#include "ending.h"

static const struct {
	const char *text;
	bool clean;
} reasons[] = {
	[END_NONE] = {"done", true},
	[END_LOCAL_CLOSE] = {"local close", true},
	[END_LOCAL_RESET] = {"local reset", false},
	[END_GATEWAY_CLOSED] = {"gateway closed", true},
	[END_GATEWAY_ERROR] = {"gateway closed with an error", false},
	[END_TARGET_UNREACHABLE] = {"gateway could not reach the remote service", false},
	[END_GATEWAY_IDLE] = {"gateway idle timeout", false},
	[END_GATEWAY_LOST] = {"gateway connection lost", false},
	[END_GATEWAY_SILENT] = {"gateway stopped answering", false},
	[END_REFUSED] = {"refused", false},
	[END_UNREACHABLE] = {"gateway unreachable", false},
	[END_PROXY_REFUSED] = {"proxy refused", false},
	[END_TLS_FAILED] = {"TLS failed", false},
	[END_HANDSHAKE_TIMEOUT] = {"handshake timed out", false},
	[END_UPGRADE_FAILED] = {"upgrade failed", false},
	[END_BAD_UPGRADE] = {"bad upgrade answer", false},
	[END_PROTOCOL_ERROR] = {"protocol error", false},
	[END_DRAIN_TIMEOUT] = {"drain timed out", false},
	[END_ENDING_TIMEOUT] = {"ending timed out", false},
	[END_STOPPED] = {"stopped", true},
	[END_NO_MEMORY] = {"out of memory", false},
	[END_INTERNAL] = {"internal error", false},
	[END_DONE] = {"done", true},
};

const char *end_reason_text(enum end_reason r)
{
	return (unsigned)r < sizeof(reasons) / sizeof(reasons[0]) ? reasons[r].text : "?";
}

bool end_reason_clean(enum end_reason r)
{
	return (unsigned)r < sizeof(reasons) / sizeof(reasons[0]) && reasons[r].clean;
}

enum end_reason end_reason_merge(enum end_reason was, enum end_reason now)
{
	if (was == END_NONE || (end_reason_clean(was) && !end_reason_clean(now)))
		return now;
	return was;
}
