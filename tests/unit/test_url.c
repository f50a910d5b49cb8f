/* Unit tests for url.h: percent-encoding, --host splitting and the upgrade
 * request target. The module is pure, so every case is a table of inputs
 * and the exact output expected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "url.h"

/* A config with nothing optional set, as cli_defaults leaves it. */
static struct tunnel_config base_config(void)
{
	struct tunnel_config cfg;
	cli_defaults(&cfg);
	cfg.host = "gw.example.com";
	return cfg;
}

static void test_encode_unreserved_pass(void **state)
{
	(void)state;
	const char *in = "ABCXYZabcxyz0189-._~";
	char out[64];
	assert_int_equal(url_percent_encode(out, sizeof(out), in), strlen(in));
	assert_string_equal(out, in);
}

static void test_encode_reserved_bytes(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"a&b", "a%26b"},
		{"a#b", "a%23b"},
		{"k=v", "k%3Dv"},
		{"a b", "a%20b"},
		{"a/b", "a%2Fb"},
		{"100%", "100%25"},
		{"?+:@!$'()*,;[]", "%3F%2B%3A%40%21%24%27%28%29%2A%2C%3B%5B%5D"},
		/* UTF-8: each byte on its own, hex in upper case. */
		{"\xc3\xa9t\xc3\xa9", "%C3%A9t%C3%A9"},
		{"\xe2\x82\xac", "%E2%82%AC"},
		{"\xf0\x9f\x98\x80", "%F0%9F%98%80"},
		{"\x01\x7f\xff", "%01%7F%FF"},
		{"", ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[128];
		memset(out, 'Z', sizeof(out));
		size_t n = url_percent_encode(out, sizeof(out), cases[i].in);
		assert_string_equal(out, cases[i].out);
		assert_int_equal(n, strlen(cases[i].out));
	}
}

/* Like snprintf: the full length comes back whatever the room, the
 * output is cut and still NUL-terminated, and nothing past outlen is
 * touched. */
static void test_encode_truncation(void **state)
{
	(void)state;
	const char *in = "a b&c";
	const char *full = "a%20b%26c";
	size_t need = strlen(full);
	assert_int_equal(url_percent_encode(NULL, 0, in), need);
	for (size_t outlen = 1; outlen <= need + 2; outlen++) {
		char out[32];
		memset(out, 'Z', sizeof(out));
		assert_int_equal(url_percent_encode(out, outlen, in), need);
		size_t kept = outlen - 1 < need ? outlen - 1 : need;
		assert_int_equal(strlen(out), kept);
		assert_memory_equal(out, full, kept);
		for (size_t j = outlen; j < sizeof(out); j++)
			assert_int_equal(out[j], 'Z');
	}
	char one[1] = {'Z'};
	assert_int_equal(url_percent_encode(one, 0, in), need);
	assert_int_equal(one[0], 'Z');
}

struct host_case {
	const char *host;
	bool tls;
	int rc;
	const char *name;
	uint16_t port;
};

static void check_host_cases(const struct host_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char name[256] = "unchanged";
		uint16_t port = 1;
		int rc = url_parse_host(cases[i].host, cases[i].tls, name, sizeof(name), &port);
		if (rc != cases[i].rc)
			fail_msg("url_parse_host(\"%s\") returned %d, expected %d", cases[i].host, rc, cases[i].rc);
		if (rc != URL_OK)
			continue;
		assert_string_equal(name, cases[i].name);
		assert_int_equal(port, cases[i].port);
	}
}

static void test_host_valid(void **state)
{
	(void)state;
	static const struct host_case cases[] = {
		{"gw.example.com", false, URL_OK, "gw.example.com", 80},
		{"gw.example.com", true, URL_OK, "gw.example.com", 443},
		{"gw.example.com:9999", false, URL_OK, "gw.example.com", 9999},
		{"gw.example.com:9999", true, URL_OK, "gw.example.com", 9999},
		{"gw:1", false, URL_OK, "gw", 1},
		{"gw:65535", false, URL_OK, "gw", 65535},
		{"10.0.0.1:8080", false, URL_OK, "10.0.0.1", 8080},
		{"[::1]", false, URL_OK, "::1", 80},
		{"[::1]", true, URL_OK, "::1", 443},
		{"[::1]:8443", true, URL_OK, "::1", 8443},
		{"[2001:db8::42]:80", false, URL_OK, "2001:db8::42", 80},
	};
	check_host_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_host_bad_port(void **state)
{
	(void)state;
	static const struct host_case cases[] = {
		{"gw:0", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:65536", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:99999", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:123456", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:http", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:80x", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:-1", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:+80", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw: 80", false, URL_ERR_BAD_PORT, NULL, 0},
		{"gw:", false, URL_ERR_BAD_PORT, NULL, 0},
		{"[::1]:", false, URL_ERR_BAD_PORT, NULL, 0},
		{"[::1]:0", false, URL_ERR_BAD_PORT, NULL, 0},
		{"[::1]:65536", false, URL_ERR_BAD_PORT, NULL, 0},
		{"[::1]:abc", false, URL_ERR_BAD_PORT, NULL, 0},
	};
	check_host_cases(cases, sizeof(cases) / sizeof(cases[0]));
}

static void test_host_bad_shape(void **state)
{
	(void)state;
	static const struct host_case cases[] = {
		{"", false, URL_ERR_EMPTY, NULL, 0},
		{":80", false, URL_ERR_EMPTY, NULL, 0},
		{"[]", false, URL_ERR_EMPTY, NULL, 0},
		{"[]:80", false, URL_ERR_EMPTY, NULL, 0},
		{"[::1", false, URL_ERR_BAD_BRACKET, NULL, 0},
		{"[::1:80", false, URL_ERR_BAD_BRACKET, NULL, 0},
		{"[::1]x", false, URL_ERR_BAD_BRACKET, NULL, 0},
		{"[::1]80", false, URL_ERR_BAD_BRACKET, NULL, 0},
		{"[::1]]", false, URL_ERR_BAD_BRACKET, NULL, 0},
		{"gw example", false, URL_ERR_BAD_CHAR, NULL, 0},
		{"gw/path", false, URL_ERR_PATH, NULL, 0},
		{"gw:8443/", false, URL_ERR_PATH, NULL, 0},
		{"gw?q", false, URL_ERR_PATH, NULL, 0},
		{"gw#frag", false, URL_ERR_PATH, NULL, 0},
		{"ws://gw:8080", false, URL_ERR_SCHEME, NULL, 0},
		{"https://gw/path", true, URL_ERR_SCHEME, NULL, 0},
		/* A bare IPv6 address would go into the Host header unbracketed. */
		{"::1", false, URL_ERR_IPV6_BARE, NULL, 0},
		{"::1:38127", false, URL_ERR_IPV6_BARE, NULL, 0},
		{"2001:db8::1", true, URL_ERR_IPV6_BARE, NULL, 0},
		{"user@gw", false, URL_ERR_BAD_CHAR, NULL, 0},
		{"gw\tx", false, URL_ERR_BAD_CHAR, NULL, 0},
		{"gw\r\nX-Injected: 1", false, URL_ERR_BAD_CHAR, NULL, 0},
		{"gw\x7f", false, URL_ERR_BAD_CHAR, NULL, 0},
		{"gw x:80", false, URL_ERR_BAD_CHAR, NULL, 0},
		{"[::1 ]", false, URL_ERR_BAD_CHAR, NULL, 0},
		{"[::1/64]:80", false, URL_ERR_PATH, NULL, 0},
	};
	check_host_cases(cases, sizeof(cases) / sizeof(cases[0]));
	assert_int_equal(url_parse_host(NULL, false, (char[8]){0}, 8, &(uint16_t){0}), URL_ERR_EMPTY);
}

static void test_host_too_long(void **state)
{
	(void)state;
	char host[512];
	char name[256];
	uint16_t port = 0;

	/* 255 characters and the NUL fill name[256] exactly. */
	memset(host, 'a', 255);
	host[255] = '\0';
	assert_int_equal(url_parse_host(host, false, name, sizeof(name), &port), URL_OK);
	assert_string_equal(name, host);

	memset(host, 'a', 256);
	host[256] = '\0';
	assert_int_equal(url_parse_host(host, false, name, sizeof(name), &port), URL_ERR_TOO_LONG);
	snprintf(host + 256, sizeof(host) - 256, ":80");
	assert_int_equal(url_parse_host(host, false, name, sizeof(name), &port), URL_ERR_TOO_LONG);

	char small[4];
	assert_int_equal(url_parse_host("abc", false, small, sizeof(small), &port), URL_OK);
	assert_string_equal(small, "abc");
	assert_int_equal(url_parse_host("abcd", false, small, sizeof(small), &port), URL_ERR_TOO_LONG);
	assert_int_equal(url_parse_host("[::1]", false, small, sizeof(small), &port), URL_OK);
	assert_int_equal(url_parse_host("[::12]", false, small, sizeof(small), &port), URL_ERR_TOO_LONG);
}

static void test_strerror(void **state)
{
	(void)state;
	const int codes[] = {URL_OK, URL_ERR_EMPTY, URL_ERR_BAD_PORT, URL_ERR_BAD_BRACKET, URL_ERR_TOO_LONG,
			     URL_ERR_BAD_CHAR};
	for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
		assert_non_null(url_strerror(codes[i]));
		assert_true(strlen(url_strerror(codes[i])) > 0);
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(url_strerror(codes[i]), url_strerror(codes[j]));
	}
	assert_non_null(url_strerror(-1000));
}

static void check_target(const struct tunnel_config *cfg, bool redact, const char *expected)
{
	char out[1024];
	memset(out, 'Z', sizeof(out));
	size_t n = url_build_target(out, sizeof(out), cfg, redact);
	assert_string_equal(out, expected);
	assert_int_equal(n, strlen(expected));
	assert_int_equal(url_build_target(NULL, 0, cfg, redact), n);
}

static void test_target_minimal(void **state)
{
	(void)state;
	struct tunnel_config cfg = base_config();
	check_target(&cfg, false, "/.well-known/otoroshi/tunnel?transport=tcp");
	check_target(&cfg, true, "/.well-known/otoroshi/tunnel?transport=tcp");
}

static void test_target_order(void **state)
{
	(void)state;
	struct tunnel_config cfg = base_config();
	cfg.remote_host = "db.internal";
	cfg.remote_port = 5432;
	check_target(&cfg, false, "/.well-known/otoroshi/tunnel?transport=tcp&remoteHost=db.internal&remotePort=5432");

	cfg.access = ACCESS_SESSION;
	cfg.session_token = "tok123";
	check_target(&cfg, false,
		     "/.well-known/otoroshi/tunnel?transport=tcp&remoteHost=db.internal&remotePort=5432"
		     "&pappsToken=tok123");

	/* Each parameter appears only when set. */
	cfg.remote_host = NULL;
	check_target(&cfg, false, "/.well-known/otoroshi/tunnel?transport=tcp&remotePort=5432&pappsToken=tok123");
	cfg.remote_port = 0;
	check_target(&cfg, false, "/.well-known/otoroshi/tunnel?transport=tcp&pappsToken=tok123");
	cfg.remote_host = "h";
	check_target(&cfg, false, "/.well-known/otoroshi/tunnel?transport=tcp&remoteHost=h&pappsToken=tok123");
	cfg.remote_port = 65535;
	cfg.remote_host = NULL;
	cfg.session_token = NULL;
	check_target(&cfg, false, "/.well-known/otoroshi/tunnel?transport=tcp&remotePort=65535");
}

static void test_target_token_only_with_session(void **state)
{
	(void)state;
	const enum access_type others[] = {ACCESS_APIKEY, ACCESS_BEARER, ACCESS_PUBLIC};
	for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		struct tunnel_config cfg = base_config();
		cfg.access = others[i];
		cfg.session_token = "leaked";
		cfg.bearer_token = "bearer-secret";
		cfg.apikey_client_id = "id";
		cfg.apikey_client_secret = "secret";
		cfg.remote_port = 22;
		check_target(&cfg, false, "/.well-known/otoroshi/tunnel?transport=tcp&remotePort=22");
	}
}

static void test_target_encodes_values(void **state)
{
	(void)state;
	struct tunnel_config cfg = base_config();
	cfg.remote_host = "db&x=1#frag \xc3\xa9";
	cfg.access = ACCESS_SESSION;
	cfg.session_token = "a+b/c=d&e";
	check_target(&cfg, false,
		     "/.well-known/otoroshi/tunnel?transport=tcp&remoteHost=db%26x%3D1%23frag%20%C3%A9"
		     "&pappsToken=a%2Bb%2Fc%3Dd%26e");
}

static void test_target_redact(void **state)
{
	(void)state;
	struct tunnel_config cfg = base_config();
	cfg.remote_host = "db.internal";
	cfg.remote_port = 5432;
	cfg.access = ACCESS_SESSION;
	cfg.session_token = "SuperSecretSessionToken";
	check_target(&cfg, true,
		     "/.well-known/otoroshi/tunnel?transport=tcp&remoteHost=db.internal&remotePort=5432"
		     "&pappsToken=<redacted>");

	/* No prefix of the token leaks either, whatever the buffer size. */
	char out[256];
	size_t need = url_build_target(NULL, 0, &cfg, true);
	for (size_t outlen = 1; outlen <= need + 1; outlen++) {
		url_build_target(out, outlen, &cfg, true);
		assert_null(strstr(out, "Super"));
	}
	url_build_target(out, sizeof(out), &cfg, false);
	assert_non_null(strstr(out, "pappsToken=SuperSecretSessionToken"));
}

static void test_target_truncation(void **state)
{
	(void)state;
	struct tunnel_config cfg = base_config();
	cfg.remote_host = "db internal";
	cfg.remote_port = 5432;
	char full[256];
	size_t need = url_build_target(full, sizeof(full), &cfg, false);
	assert_int_equal(need, strlen(full));
	for (size_t outlen = 1; outlen <= need + 1; outlen++) {
		char out[256];
		memset(out, 'Z', sizeof(out));
		assert_int_equal(url_build_target(out, outlen, &cfg, false), need);
		size_t kept = outlen - 1 < need ? outlen - 1 : need;
		assert_int_equal(strlen(out), kept);
		assert_memory_equal(out, full, kept);
		for (size_t j = outlen; j < sizeof(out); j++)
			assert_int_equal(out[j], 'Z');
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_encode_unreserved_pass),
		cmocka_unit_test(test_encode_reserved_bytes),
		cmocka_unit_test(test_encode_truncation),
		cmocka_unit_test(test_host_valid),
		cmocka_unit_test(test_host_bad_port),
		cmocka_unit_test(test_host_bad_shape),
		cmocka_unit_test(test_host_too_long),
		cmocka_unit_test(test_strerror),
		cmocka_unit_test(test_target_minimal),
		cmocka_unit_test(test_target_order),
		cmocka_unit_test(test_target_token_only_with_session),
		cmocka_unit_test(test_target_encodes_values),
		cmocka_unit_test(test_target_redact),
		cmocka_unit_test(test_target_truncation),
	};
	return cmocka_run_group_tests_name("url", tests, NULL, NULL);
}
