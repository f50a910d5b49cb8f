/* Unit tests for log.h: the human and JSON line formats, the fields of
 * JSON lines, their escaping (control characters, quotes, UTF-8 passed
 * through, bytes that are not UTF-8 replaced), the timestamps, the
 * environment variable, and a JSON line that stays valid when jansson runs
 * out of memory.
 *
 * Standard error is a SOCK_SEQPACKET socket while a test captures it: each
 * write is one record, so every record must be exactly one whole line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"

#define TARGET "otoroshictl::tunnels::tcp"

/* What the lines logged between capture_start and capture_end were. */
struct captured {
	char lines[16][20000];
	size_t len[16];
	size_t n;
};

static int saved_stderr = -1;
static int reader = -1;

static void capture_start(void)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv), 0);
	saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(sv[1], STDERR_FILENO), STDERR_FILENO);
	close(sv[1]);
	reader = sv[0];
}

static void capture_end(struct captured *c)
{
	assert_int_equal(dup2(saved_stderr, STDERR_FILENO), STDERR_FILENO);
	close(saved_stderr);
	memset(c, 0, sizeof(*c));
	for (;;) {
		char buf[20000];
		ssize_t r = recv(reader, buf, sizeof(buf) - 1, 0);
		assert_true(r >= 0);
		if (r == 0)
			break;
		assert_true(c->n < 16);
		/* One write, one line: it ends with its only newline. */
		assert_true(r > 0 && buf[r - 1] == '\n');
		assert_null(memchr(buf, '\n', (size_t)r - 1));
		memcpy(c->lines[c->n], buf, (size_t)r);
		c->lines[c->n][r] = '\0';
		c->len[c->n++] = (size_t)r;
	}
	close(reader);
}

static int setup(void **state)
{
	(void)state;
	log_set_format(LOG_FORMAT_HUMAN);
	log_set_timestamps(false);
	log_raise(LOG_TRACE);
	return 0;
}

/* Parses a captured JSON line; fails unless it is one object whose first
 * keys are the four of every line. */
static json_t *parse_line(const struct captured *c, size_t i)
{
	assert_true(i < c->n);
	assert_int_equal(strncmp(c->lines[i], "{\"timestamp\":\"", 14), 0);
	json_error_t e;
	json_t *o = json_loadb(c->lines[i], c->len[i], 0, &e);
	if (o == NULL)
		fail_msg("not JSON (%s): %s", e.text, c->lines[i]);
	assert_true(json_is_object(o));
	const char *keys[] = {"timestamp", "level", "target", "message"};
	void *it = json_object_iter(o);
	for (size_t k = 0; k < 4; k++, it = json_object_iter_next(o, it)) {
		assert_non_null(it);
		assert_string_equal(json_object_iter_key(it), keys[k]);
		assert_true(json_is_string(json_object_iter_value(it)));
	}
	assert_string_equal(json_string_value(json_object_get(o, "target")), TARGET);
	return o;
}

static const char *str_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		fail_msg("no string '%s'", key);
	return json_string_value(v);
}

/* "2026-12-01T15:43:03.123Z" in shape. */
static void assert_rfc3339(const char *s)
{
	const char *shape = "dddd-dd-ddTdd:dd:dd.dddZ";
	assert_int_equal(strlen(s), strlen(shape));
	for (size_t i = 0; shape[i]; i++) {
		if (shape[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != shape[i])
			fail_msg("'%s' is not RFC 3339 with milliseconds in UTC", s);
	}
}

static void test_format_parse(void **state)
{
	(void)state;
	enum log_format f = LOG_FORMAT_JSON;
	assert_int_equal(log_format_parse("human", &f), 0);
	assert_int_equal(f, LOG_FORMAT_HUMAN);
	assert_int_equal(log_format_parse("JSON", &f), 0);
	assert_int_equal(f, LOG_FORMAT_JSON);
	assert_int_equal(log_format_parse("xml", &f), -1);
	assert_int_equal(log_format_parse("", &f), -1);
	assert_int_equal(log_format_parse("json ", &f), -1);
	assert_int_equal(f, LOG_FORMAT_JSON);
}

static void test_time_format(void **state)
{
	(void)state;
	char out[LOG_TIME_LEN + 1];
	assert_int_equal(log_format_time(0, out, sizeof(out)), LOG_TIME_LEN);
	assert_string_equal(out, "1970-01-01T00:00:00.000Z");
	assert_int_equal(log_format_time(1796139783123ULL, out, sizeof(out)), LOG_TIME_LEN);
	assert_string_equal(out, "2026-12-01T15:43:03.123Z");
	assert_int_equal(log_format_time(951782400007ULL, out, sizeof(out)), LOG_TIME_LEN);
	assert_string_equal(out, "2000-02-29T00:00:00.007Z");
	/* Too small a buffer gets "", and a year past 9999 does not fit. */
	char small[LOG_TIME_LEN];
	assert_int_equal(log_format_time(0, small, sizeof(small)), 0);
	assert_string_equal(small, "");
	assert_int_equal(log_format_time(253402300800000ULL, out, sizeof(out)), 0);
	assert_string_equal(out, "");
	assert_int_equal(log_format_time(0, out, 0), 0);
}

static void test_human_lines_are_unchanged(void **state)
{
	(void)state;
	struct captured c;
	capture_start();
	log_info("New TCP connection from: %s", "127.0.0.1:4000");
	log_warn("w");
	log_error("e %d", 7);
	const struct log_field f[] = {LOG_STR("peer", "127.0.0.1:4000"), LOG_INT("bytes_sent", 12)};
	log_fields(LOG_INFO, f, 2, "Tunnel from %s closed", "127.0.0.1:4000");
	log_trace("t");
	capture_end(&c);
	assert_int_equal(c.n, 5);
	assert_string_equal(c.lines[0], "[INFO  " TARGET "] New TCP connection from: 127.0.0.1:4000\n");
	assert_string_equal(c.lines[1], "[WARN  " TARGET "] w\n");
	assert_string_equal(c.lines[2], "[ERROR " TARGET "] e 7\n");
	/* The fields are for machines: the human line is the message alone. */
	assert_string_equal(c.lines[3], "[INFO  " TARGET "] Tunnel from 127.0.0.1:4000 closed\n");
	assert_string_equal(c.lines[4], "[TRACE " TARGET "] t\n");
}

static void test_human_lines_with_timestamps(void **state)
{
	(void)state;
	struct captured c;
	log_set_timestamps(true);
	capture_start();
	log_info("hello");
	log_error("bad");
	capture_end(&c);
	assert_int_equal(c.n, 2);
	assert_int_equal(c.lines[0][0], '[');
	char ts[LOG_TIME_LEN + 1];
	memcpy(ts, c.lines[0] + 1, LOG_TIME_LEN);
	ts[LOG_TIME_LEN] = '\0';
	assert_rfc3339(ts);
	assert_string_equal(c.lines[0] + 1 + LOG_TIME_LEN, " INFO  " TARGET "] hello\n");
	assert_string_equal(c.lines[1] + 1 + LOG_TIME_LEN, " ERROR " TARGET "] bad\n");
}

static void test_json_line_shape(void **state)
{
	(void)state;
	struct captured c;
	log_set_format(LOG_FORMAT_JSON);
	/* Timestamps change nothing for JSON: it always has one. */
	log_set_timestamps(true);
	capture_start();
	log_info("hello %d", 42);
	log_warn("careful");
	log_error("failed");
	log_debug("details");
	log_trace("more");
	capture_end(&c);
	assert_int_equal(c.n, 5);
	const char *levels[] = {"INFO", "WARN", "ERROR", "DEBUG", "TRACE"};
	const char *messages[] = {"hello 42", "careful", "failed", "details", "more"};
	for (size_t i = 0; i < 5; i++) {
		json_t *o = parse_line(&c, i);
		assert_int_equal(json_object_size(o), 4);
		assert_string_equal(str_of(o, "level"), levels[i]);
		assert_string_equal(str_of(o, "message"), messages[i]);
		assert_rfc3339(str_of(o, "timestamp"));
		json_decref(o);
	}
	/* Compact, and never coloured. */
	assert_non_null(strstr(c.lines[0], "\"level\":\"INFO\",\"target\":\"" TARGET "\",\"message\":\"hello 42\"}\n"));
	assert_null(strchr(c.lines[0], '\033'));
}

static void test_json_escaping(void **state)
{
	(void)state;
	struct captured c;
	log_set_format(LOG_FORMAT_JSON);
	const char *nasty = "say \"no\" \\ twice\nforged [INFO  " TARGET "] line\r\t\x01\x1b[31mred\x7f end";
	const char *utf8 = "caf\xc3\xa9 \xe2\x86\x92 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80";
	capture_start();
	log_error("%s", nasty);
	log_info("%s", utf8);
	capture_end(&c);
	assert_int_equal(c.n, 2);
	/* No control byte in the line but its end. */
	for (size_t i = 0; i + 1 < c.len[0]; i++)
		assert_true((unsigned char)c.lines[0][i] >= 0x20);
	json_t *o = parse_line(&c, 0);
	assert_string_equal(str_of(o, "message"), nasty);
	json_decref(o);
	/* UTF-8 goes through as it is, not as \u escapes. */
	assert_non_null(strstr(c.lines[1], utf8));
	o = parse_line(&c, 1);
	assert_string_equal(str_of(o, "message"), utf8);
	json_decref(o);
}

static void test_json_invalid_utf8_is_replaced(void **state)
{
	(void)state;
	struct captured c;
	log_set_format(LOG_FORMAT_JSON);
	/* A stray byte, a lead byte without its continuation, a surrogate, a
	 * sequence cut short by the end, an overlong '/' and a lone 0xC0. */
	const char *bad = "a\xff" "b\xc3(c\xed\xa0\x80" "d\xc0\xaf" "e\xf4\x90\x80\x80" "f\xf0\x9f\x98";
	const char *want = "a\xef\xbf\xbd" "b\xef\xbf\xbd(c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
			   "d\xef\xbf\xbd\xef\xbf\xbd" "e\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
			   "f\xef\xbf\xbd";
	const struct log_field f[] = {LOG_STR("forward", "db\xfe"), LOG_STR("peer", "127.0.0.1:1")};
	capture_start();
	log_warn("%s", bad);
	log_fields(LOG_INFO, f, 2, "ok \xe2\x82");
	capture_end(&c);
	assert_int_equal(c.n, 2);
	json_t *o = parse_line(&c, 0);
	assert_string_equal(str_of(o, "message"), want);
	json_decref(o);
	o = parse_line(&c, 1);
	assert_string_equal(str_of(o, "message"), "ok \xef\xbf\xbd");
	assert_string_equal(str_of(o, "forward"), "db\xef\xbf\xbd");
	assert_string_equal(str_of(o, "peer"), "127.0.0.1:1");
	json_decref(o);
}

static void test_json_fields(void **state)
{
	(void)state;
	struct captured c;
	log_set_format(LOG_FORMAT_JSON);
	const struct log_field f[] = {
		LOG_STR("peer", "[::1]:51234"),
		LOG_STR("forward", NULL), /* left out */
		LOG_INT("duration_ms", 12408),
		LOG_INT("bytes_sent", 1ULL << 40),
		LOG_INT("bytes_received", 0),
		LOG_STR("reason", "local close"),
		LOG_STR("message", "a field never replaces the message"),
		LOG_INT("level", 3),
		LOG_STR("note", "quote \" and newline \n"),
	};
	capture_start();
	log_fields(LOG_INFO, f, sizeof(f) / sizeof(f[0]), "Tunnel from %s closed", "[::1]:51234");
	/* Below the level, nothing at all. */
	log_fields(LOG_TRACE + 1, f, 1, "never");
	capture_end(&c);
	assert_int_equal(c.n, 1);
	json_t *o = parse_line(&c, 0);
	assert_string_equal(str_of(o, "message"), "Tunnel from [::1]:51234 closed");
	assert_string_equal(str_of(o, "level"), "INFO");
	assert_null(json_object_get(o, "forward"));
	assert_string_equal(str_of(o, "peer"), "[::1]:51234");
	assert_int_equal(json_integer_value(json_object_get(o, "duration_ms")), 12408);
	assert_int_equal(json_integer_value(json_object_get(o, "bytes_sent")), 1LL << 40);
	assert_true(json_is_integer(json_object_get(o, "bytes_received")));
	assert_int_equal(json_integer_value(json_object_get(o, "bytes_received")), 0);
	assert_string_equal(str_of(o, "reason"), "local close");
	assert_string_equal(str_of(o, "note"), "quote \" and newline \n");
	assert_int_equal(json_object_size(o), 10);
	json_decref(o);
	/* In the order given, after the four keys. */
	const char *p = strstr(c.lines[0], "\"peer\"");
	assert_non_null(p);
	assert_true(p < strstr(c.lines[0], "\"duration_ms\""));
	assert_true(strstr(c.lines[0], "\"reason\"") < strstr(c.lines[0], "\"note\""));
}

static void test_json_long_messages(void **state)
{
	(void)state;
	struct captured c;
	log_set_format(LOG_FORMAT_JSON);
	char *big = malloc(5000);
	assert_non_null(big);
	memset(big, 'x', 4999);
	big[4999] = '\0';
	char *ctl = malloc(2100);
	assert_non_null(ctl);
	memset(ctl, '\x01', 2099);
	ctl[2099] = '\0';
	capture_start();
	log_info("%s", big);
	log_info("%s", ctl);
	capture_end(&c);
	assert_int_equal(c.n, 2);
	json_t *o = parse_line(&c, 0);
	assert_int_equal(strlen(str_of(o, "message")), 2047);
	json_decref(o);
	/* Every byte escaped in six still fits one line. */
	o = parse_line(&c, 1);
	assert_int_equal(strlen(str_of(o, "message")), 2047);
	json_decref(o);
	free(big);
	free(ctl);
}

/* jansson's allocator, failing from the Nth call on. */
static int alloc_left;
static void *failing_malloc(size_t n)
{
	if (alloc_left <= 0)
		return NULL;
	alloc_left--;
	return malloc(n);
}

static void test_json_out_of_memory_stays_valid(void **state)
{
	(void)state;
	log_set_format(LOG_FORMAT_JSON);
	const struct log_field f[] = {LOG_STR("peer", "127.0.0.1:9"), LOG_INT("http_status", 401)};
	int fallbacks = 0, whole = 0;
	for (int n = 0; n < 200 && whole < 3; n++) {
		struct captured c;
		json_set_alloc_funcs(failing_malloc, free);
		alloc_left = n;
		capture_start();
		log_fields(LOG_ERROR, f, 2, "refused \"x\" \\ caf\xc3\xa9\n");
		capture_end(&c);
		json_set_alloc_funcs(malloc, free);
		assert_int_equal(c.n, 1);
		json_t *o = parse_line(&c, 0);
		assert_string_equal(str_of(o, "level"), "ERROR");
		const char *m = str_of(o, "message");
		if (json_object_size(o) == 4) {
			/* The fallback: the printable ASCII of the message. */
			assert_string_equal(m, "refused ?x? ? caf???");
			fallbacks++;
		} else {
			whole++;
			assert_string_equal(m, "refused \"x\" \\ caf\xc3\xa9\n");
			assert_int_equal(json_integer_value(json_object_get(o, "http_status")), 401);
		}
		json_decref(o);
	}
	assert_true(fallbacks > 3);
	assert_int_equal(whole, 3);
}

static void test_environment(void **state)
{
	(void)state;
	struct captured c;
	log_set_format(LOG_FORMAT_HUMAN);
	unsetenv("OTOROSHICTL");
	unsetenv("OTOROSHICTL_LOG_STYLE");
	setenv("OTOROSHICTL_LOG_FORMAT", "Json", 1);
	assert_int_equal(log_init(), 0);
	capture_start();
	log_info("from the environment");
	capture_end(&c);
	assert_int_equal(c.n, 1);
	json_decref(parse_line(&c, 0));

	/* An unknown value is reported, and changes nothing. */
	log_set_format(LOG_FORMAT_HUMAN);
	setenv("OTOROSHICTL_LOG_FORMAT", "yaml", 1);
	assert_int_equal(log_init(), LOG_INIT_BAD_FORMAT);
	setenv("OTOROSHICTL_LOG_STYLE", "sometimes", 1);
	assert_int_equal(log_init(), LOG_INIT_BAD_FORMAT | LOG_INIT_BAD_STYLE);
	setenv("OTOROSHICTL_LOG_FORMAT", "", 1);
	unsetenv("OTOROSHICTL_LOG_STYLE");
	assert_int_equal(log_init(), 0);
	capture_start();
	log_info("human");
	capture_end(&c);
	assert_int_equal(c.n, 1);
	assert_string_equal(c.lines[0], "[INFO  " TARGET "] human\n");
	unsetenv("OTOROSHICTL_LOG_FORMAT");
}

int main(void)
{
	/* With standard error a socket at setup, log.c writes with send(), one
	 * record a write, into whichever socket is descriptor 2 at the time. */
	capture_start();
	log_stream_setup();
	struct captured none;
	capture_end(&none);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_format_parse, setup),
		cmocka_unit_test_setup(test_time_format, setup),
		cmocka_unit_test_setup(test_human_lines_are_unchanged, setup),
		cmocka_unit_test_setup(test_human_lines_with_timestamps, setup),
		cmocka_unit_test_setup(test_json_line_shape, setup),
		cmocka_unit_test_setup(test_json_escaping, setup),
		cmocka_unit_test_setup(test_json_invalid_utf8_is_replaced, setup),
		cmocka_unit_test_setup(test_json_fields, setup),
		cmocka_unit_test_setup(test_json_long_messages, setup),
		cmocka_unit_test_setup(test_json_out_of_memory_stays_valid, setup),
		cmocka_unit_test_setup(test_environment, setup),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
