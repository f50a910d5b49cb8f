/* Fuzz target: the upgrade-response parser, fed the input in pieces whose
 * sizes come from the input itself, then the refusal text and hint. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "upgrade.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct upgrade_response r;
	if (size < 1)
		return 0;
	/* The first byte chooses the piece size (1 to 256 bytes). */
	size_t piece = (size_t)data[0] + 1;
	data++;
	size--;
	upgrade_response_init(&r, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
	size_t off = 0;
	int rc = UPGRADE_NEED_MORE;
	while (off < size && rc == UPGRADE_NEED_MORE) {
		size_t n = size - off < piece ? size - off : piece;
		size_t used = 0;
		rc = upgrade_response_feed(&r, data + off, n, &used);
		if (used > n)
			__builtin_trap();
		off += used;
		if (rc == UPGRADE_NEED_MORE && used < n)
			__builtin_trap(); /* it must take everything while it needs more */
	}
	if (rc == UPGRADE_NEED_MORE)
		rc = upgrade_response_eof(&r);
	if (rc == UPGRADE_REFUSED) {
		char text[256];
		upgrade_refusal_text(&r, text, sizeof(text));
		for (const char *p = text; *p; p++)
			if ((unsigned char)*p < 0x20)
				__builtin_trap(); /* control characters must never reach a log */
		upgrade_refusal_hint(r.status, text, ACCESS_APIKEY);
	}
	return 0;
}
