/* Unit tests for proxy.h: the proxy URL, the CONNECT request, the proxy's
 * answer, NO_PROXY and the environment's proxy variables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

/* ---- the URL -------------------------------------------------------------- */

static void parses(const char *url, const char *host, unsigned port, bool tls, const char *auth)
{
	struct proxy p = {.source = "--proxy"};
	char err[256] = "";
	if (proxy_parse_url(url, &p, err, sizeof(err)) != 0)
		fail_msg("'%s' refused: %s", url, err);
	assert_string_equal(p.host, host);
	assert_int_equal(p.port, port);
	assert_int_equal(p.tls, tls);
	assert_string_equal(p.auth, auth);
	proxy_finish(&p);
}

static void test_url_forms(void **state)
{
	(void)state;
	parses("http://proxy.example:3128", "proxy.example", 3128, false, "");
	parses("http://proxy.example:3128/", "proxy.example", 3128, false, "");
	parses("HTTP://proxy.example", "proxy.example", 1080, false, "");
	parses("https://proxy.example", "proxy.example", 443, true, "");
	parses("HTTPS://proxy.example:8443", "proxy.example", 8443, true, "");
	parses("proxy.example:8080", "proxy.example", 8080, false, "");
	parses("127.0.0.1", "127.0.0.1", 1080, false, "");
	parses("http://[::1]:3128", "::1", 3128, false, "");
	parses("https://[fe80::1]", "fe80::1", 443, true, "");
	/* base64("user:pass"), the password percent-decoded, the last '@'
	 * ending the credentials. */
	parses("http://user:pass@proxy.example:3128", "proxy.example", 3128, false, "dXNlcjpwYXNz");
	parses("http://user:p%40ss@proxy.example", "proxy.example", 1080, false, "dXNlcjpwQHNz");
	parses("http://user:p@ss@proxy.example", "proxy.example", 1080, false, "dXNlcjpwQHNz");
	parses("http://user@proxy.example", "proxy.example", 1080, false, "dXNlcjo=");
}

static void refused(const char *url, const char *needle, const char *secret)
{
	struct proxy p = {.source = "HTTPS_PROXY"};
	char err[256] = "";
	if (proxy_parse_url(url, &p, err, sizeof(err)) == 0)
		fail_msg("'%s' was taken (host '%s', port %u)", url, p.host, (unsigned)p.port);
	if (strstr(err, needle) == NULL)
		fail_msg("'%s': the message '%s' lacks '%s'", url, err, needle);
	if (strncmp(err, "HTTPS_PROXY: ", 13) != 0)
		fail_msg("'%s': the message '%s' does not name its source", url, err);
	if (secret != NULL && strstr(err, secret) != NULL)
		fail_msg("'%s': the message repeats the password: %s", url, err);
	proxy_finish(&p);
}

static void test_url_errors(void **state)
{
	(void)state;
	refused("socks5://127.0.0.1:1080", "only http:// and https://", NULL);
	refused("http://:3128", "names no host", NULL);
	refused("http://user:hunter2-secret@", "names no host", "hunter2-secret");
	refused("http://proxy.example:0", "port is not a number", NULL);
	refused("http://proxy.example:65536", "port is not a number", NULL);
	refused("http://proxy.example:80x", "port is not a number", NULL);
	refused("http://[::1", "closing ']'", NULL);
	refused("http://[::1]x", "after its IPv6 address", NULL);
	refused("http://prox y.example", "holds a space", NULL);
	/* A line break from an environment variable: refused before anything
	 * of the URL can reach a log line or a request head. */
	refused("http://proxy.example\r\nX-Injected: 1", "control character", NULL);
	refused("h\r\r\n\r\n\n//[x:q]\r\n\r\n4", "control character", NULL);
	refused("http://user:s3cr%0at-pass@proxy.example", "control character", "s3cr");
}

/* ---- the CONNECT request --------------------------------------------------- */

static void test_connect_request(void **state)
{
	(void)state;
	struct proxy p = {.source = "--proxy"};
	char err[256], head[1024];
	assert_int_equal(proxy_parse_url("http://proxy.example:3128", &p, err, sizeof(err)), 0);
	int n = proxy_build_connect(head, sizeof(head), &p, "gateway.example", 8443);
	assert_string_equal(head, "CONNECT gateway.example:8443 HTTP/1.1\r\nHost: gateway.example:8443\r\n\r\n");
	assert_int_equal(n, (int)strlen(head));
	/* An IPv6 target in brackets; the credential in Proxy-Authorization. */
	assert_int_equal(proxy_parse_url("http://u:p@proxy.example:3128", &p, err, sizeof(err)), 0);
	proxy_build_connect(head, sizeof(head), &p, "2001:db8::1", 443);
	assert_string_equal(head, "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n"
				  "Proxy-Authorization: Basic dTpw\r\n\r\n");
	/* Too small a buffer: the length it needs, like snprintf. */
	char tiny[8];
	assert_int_equal(proxy_build_connect(tiny, sizeof(tiny), &p, "2001:db8::1", 443), (int)strlen(head));
	proxy_finish(&p);
	assert_string_equal(p.auth, "");
}

/* ---- the answer -------------------------------------------------------------- */

struct answer {
	int rc, status;
	size_t consumed_total;
	char reason[64];
};

/* Feeds text in pieces of `piece` bytes until the parser decides. */
static struct answer feed(const char *text, size_t len, size_t piece)
{
	struct proxy_answer *a = calloc(1, sizeof(*a));
	assert_non_null(a);
	struct answer out = {0};
	size_t off = 0;
	while (off < len && out.rc == 0) {
		size_t n = len - off < piece ? len - off : piece, used = 0;
		out.rc = proxy_answer_feed(a, (const uint8_t *)text + off, n, &used, &out.status, out.reason,
					   sizeof(out.reason));
		assert_true(used <= n);
		if (out.rc == 0)
			assert_int_equal(used, n);
		off += used;
		out.consumed_total = off;
	}
	free(a);
	return out;
}

static void test_answer_split_anywhere(void **state)
{
	(void)state;
	static const char ok[] = "HTTP/1.1 200 Connection established\r\nProxy-Agent: tinyproxy\r\n\r\n\x81\x02hi";
	size_t head_len = strlen("HTTP/1.1 200 Connection established\r\nProxy-Agent: tinyproxy\r\n\r\n");
	for (size_t piece = 1; piece <= sizeof(ok); piece++) {
		struct answer r = feed(ok, sizeof(ok) - 1, piece);
		assert_int_equal(r.rc, 1);
		assert_int_equal(r.status, 200);
		assert_string_equal(r.reason, "Connection established");
		/* The bytes after the head are the tunnel's: not consumed. */
		assert_int_equal(r.consumed_total, head_len);
	}
}

static void test_answer_forms(void **state)
{
	(void)state;
	struct answer r = feed("HTTP/1.0 407 Proxy Authentication Required\n\n", 44, 1000);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.status, 407);
	assert_string_equal(r.reason, "Proxy Authentication Required");
	r = feed("HTTP/1.1 502\r\n\r\n", 16, 3);
	assert_int_equal(r.rc, 1);
	assert_int_equal(r.status, 502);
	assert_string_equal(r.reason, "");
	/* A reason that would reach a log line as it is: printable only. */
	r = feed("HTTP/1.1 403 no\x1b[31m way\xff\r\n\r\n", 29, 1000);
	assert_int_equal(r.rc, 1);
	assert_string_equal(r.reason, "no [31m way?");
}

static void test_answer_malformed(void **state)
{
	(void)state;
	static const struct {
		const char *text;
		size_t len;
	} bad[] = {
		{"SSH-2.0-OpenSSH_9.2\r\n\r\n", 23},
		{"HTTP/2 200\r\n\r\n", 14},
		{"HTTP/1.1 20\r\n\r\n", 15},
		{"HTTP/1.1 062 odd\r\n\r\n", 20},
		{"HTTP/1.1 600 odd\r\n\r\n", 20},
		{"HTTP/1.1 200 OK\r\nX: \0\n\n\r\n\r\n", 27},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		for (size_t piece = 1; piece <= bad[i].len; piece += 3) {
			struct answer r = feed(bad[i].text, bad[i].len, piece);
			if (r.rc != -1)
				fail_msg("case %zu in pieces of %zu: %d (status %d), expected -1", i, piece, r.rc, r.status);
		}
	/* A head that never ends is refused once it passes the limit. */
	char *big = malloc(PROXY_MAX_HEAD + 100);
	assert_non_null(big);
	memcpy(big, "HTTP/1.1 200 OK\r\n", 17);
	memset(big + 17, 'x', PROXY_MAX_HEAD + 83);
	struct answer r = feed(big, PROXY_MAX_HEAD + 100, 4096);
	free(big);
	assert_int_equal(r.rc, -1);
}

/* ---- NO_PROXY and the environment ----------------------------------------------- */

static void test_no_proxy(void **state)
{
	(void)state;
	assert_true(proxy_exempt("*", "gateway.example", 443));
	assert_true(proxy_exempt("example.com, gateway.example", "gateway.example", 443));
	assert_true(proxy_exempt(".example", "gateway.example", 443));
	assert_true(proxy_exempt("example", "gateway.example", 443));
	assert_true(proxy_exempt("gateway.example:443", "gateway.example", 443));
	assert_false(proxy_exempt("gateway.example:8443", "gateway.example", 443));
	assert_false(proxy_exempt("ateway.example", "gateway.example", 443));
	assert_true(proxy_exempt("127.0.0.1", "127.0.0.1", 80));
	assert_false(proxy_exempt("", "gateway.example", 443));
	assert_false(proxy_exempt(NULL, "gateway.example", 443));
}

static void test_env(void **state)
{
	(void)state;
	const char *name = NULL;
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("https_proxy");
	unsetenv("HTTPS_PROXY");
	assert_null(proxy_from_env(false, &name));
	setenv("HTTP_PROXY", "http://upper:1", 1);
	setenv("http_proxy", "http://lower:1", 1);
	setenv("HTTPS_PROXY", "https://secure:1", 1);
	assert_string_equal(proxy_from_env(false, &name), "http://lower:1");
	assert_string_equal(name, "http_proxy");
	assert_string_equal(proxy_from_env(true, &name), "https://secure:1");
	assert_string_equal(name, "HTTPS_PROXY");
	/* An empty variable is no proxy. */
	setenv("http_proxy", "", 1);
	assert_string_equal(proxy_from_env(false, &name), "http://upper:1");
	unsetenv("http_proxy");
	unsetenv("HTTP_PROXY");
	unsetenv("HTTPS_PROXY");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_forms),
		cmocka_unit_test(test_url_errors),
		cmocka_unit_test(test_connect_request),
		cmocka_unit_test(test_answer_split_anywhere),
		cmocka_unit_test(test_answer_forms),
		cmocka_unit_test(test_answer_malformed),
		cmocka_unit_test(test_no_proxy),
		cmocka_unit_test(test_env),
	};
	return cmocka_run_group_tests_name("proxy", tests, NULL, NULL);
}
