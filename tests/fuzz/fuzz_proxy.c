/* Fuzz target: the proxy's two parsers. The first byte picks one:
 * - even: the proxy URL (the rest of the input as a string); a URL that
 *   parses must give a host without control characters and a port, and an
 *   error must never repeat the password; the CONNECT head built from it
 *   must be one request head, ending at its first blank line;
 * - odd: the proxy's answer, fed in pieces whose size comes from the byte;
 *   the parser must never claim more than it was given, and a reason must
 *   hold no control character. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_url(const uint8_t *data, size_t size)
{
	char url[1024];
	if (size >= sizeof(url))
		size = sizeof(url) - 1;
	memcpy(url, data, size);
	url[size] = '\0';
	struct proxy p;
	memset(&p, 0, sizeof(p));
	char err[256];
	if (proxy_parse_url(url, &p, err, sizeof(err)) != 0) {
		if (strlen(err) == 0)
			__builtin_trap(); /* a refusal says why */
		/* The password (after "user:", up to the last '@') is never
		 * echoed; short ones could match by chance. */
		const char *at = strrchr(url, '@');
		const char *scheme = strstr(url, "://");
		const char *user = scheme != NULL && (at == NULL || scheme < at) ? scheme + 3 : url;
		const char *colon = at != NULL ? memchr(user, ':', (size_t)(at - user)) : NULL;
		if (colon != NULL && at - colon > 8) {
			char pw[1024];
			size_t n = (size_t)(at - colon - 1);
			memcpy(pw, colon + 1, n);
			pw[n] = '\0';
			if (strstr(err, pw) != NULL)
				__builtin_trap();
		}
		return;
	}
	for (const char *c = p.host; *c; c++)
		if ((unsigned char)*c < 0x21 || *c == 0x7f)
			__builtin_trap();
	if (p.port == 0)
		__builtin_trap();
	char head[2048];
	int n = proxy_build_connect(head, sizeof(head), &p, "gateway.example", 443);
	if (n > 0 && (size_t)n < sizeof(head)) {
		const char *end = strstr(head, "\r\n\r\n");
		if (end == NULL || (size_t)(end + 4 - head) != (size_t)n)
			__builtin_trap(); /* one head, and nothing after it */
	}
	proxy_finish(&p);
}

static void fuzz_answer(size_t piece, const uint8_t *data, size_t size)
{
	static struct proxy_answer a;
	memset(&a, 0, sizeof(a));
	size_t off = 0;
	int rc = 0;
	while (off < size && rc == 0) {
		size_t n = size - off < piece ? size - off : piece;
		size_t used = 0;
		int status = 0;
		char reason[128];
		reason[0] = '\0';
		rc = proxy_answer_feed(&a, data + off, n, &used, &status, reason, sizeof(reason));
		if (used > n)
			__builtin_trap();
		if (rc == 0 && used != n)
			__builtin_trap(); /* it takes everything while it needs more */
		if (rc == 1) {
			if (status < 100 || status > 599)
				__builtin_trap();
			for (const char *c = reason; *c; c++)
				if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7f)
					__builtin_trap();
			proxy_refusal_hint(status);
		}
		off += used;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	uint8_t pick = data[0];
	if (pick % 2 == 0)
		fuzz_url(data + 1, size - 1);
	else
		fuzz_answer((size_t)(pick >> 1) + 1, data + 1, size - 1);
	return 0;
}
