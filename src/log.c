/* log: env_logger-style or JSON lines on stderr; see log.h. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#define LOG_TARGET "otoroshictl::tunnels::tcp"
/* A human line, newline included, is cut to this; so is a JSON line's
 * message before it is encoded. */
#define LOG_HUMAN_MAX 2048
/* A JSON line, newline included: room for a whole message of control
 * characters, each escaped in six bytes. */
#define LOG_JSON_MAX 16384

static enum log_level current_level = LOG_INFO;
static bool use_colour;
static bool level_from_env;
static enum log_format format = LOG_FORMAT_HUMAN;
static bool timestamps;

/* Where lines go: standard error itself, or a non-blocking description of
 * its own (see log_stream_setup), and what could not be written yet. */
static int out_fd = STDERR_FILENO;
static bool out_socket;
static char backlog[LOG_BACKLOG];
static size_t backlog_len;
static unsigned long dropped;
static void (*backlog_hook)(void *data);
static void *backlog_data;

static const char *const level_names[] = {
	[LOG_ERROR] = "ERROR", [LOG_WARN] = "WARN ", [LOG_INFO] = "INFO ",
	[LOG_DEBUG] = "DEBUG", [LOG_TRACE] = "TRACE",
};

/* In JSON, without the padding that aligns the human lines. */
static const char *const json_levels[] = {
	[LOG_ERROR] = "ERROR", [LOG_WARN] = "WARN", [LOG_INFO] = "INFO",
	[LOG_DEBUG] = "DEBUG", [LOG_TRACE] = "TRACE",
};

/* The colours env_logger gives each level. */
static const char *const level_colours[] = {
	[LOG_ERROR] = "\033[31m", [LOG_WARN] = "\033[33m", [LOG_INFO] = "\033[32m",
	[LOG_DEBUG] = "\033[34m", [LOG_TRACE] = "\033[36m",
};

enum log_level log_level_parse(const char *name)
{
	static const char *const names[] = {
		[LOG_ERROR] = "error", [LOG_WARN] = "warn", [LOG_INFO] = "info",
		[LOG_DEBUG] = "debug", [LOG_TRACE] = "trace",
	};
	for (int l = LOG_ERROR; l <= LOG_TRACE; l++)
		if (strcasecmp(name, names[l]) == 0)
			return (enum log_level)l;
	return 0;
}

int log_init(void)
{
	int bad = 0;
	const char *style = getenv("OTOROSHICTL_LOG_STYLE");
	use_colour = isatty(STDERR_FILENO);
	if (style != NULL && strcasecmp(style, "always") == 0)
		use_colour = true;
	else if (style != NULL && strcasecmp(style, "never") == 0)
		use_colour = false;
	else if (style != NULL && style[0] != '\0' && strcasecmp(style, "auto") != 0)
		bad |= LOG_INIT_BAD_STYLE;
	const char *no_colour = getenv("NO_COLOR");
	if (no_colour != NULL && no_colour[0] != '\0')
		use_colour = false;
	const char *fmt = getenv("OTOROSHICTL_LOG_FORMAT");
	if (fmt != NULL && fmt[0] != '\0' && log_format_parse(fmt, &format) != 0)
		bad |= LOG_INIT_BAD_FORMAT;
	const char *env = getenv("OTOROSHICTL");
	if (env == NULL || env[0] == '\0')
		return bad;
	enum log_level l = log_level_parse(env);
	if (l == 0)
		return bad | LOG_INIT_BAD_LEVEL;
	current_level = l;
	level_from_env = true;
	return bad;
}

int log_format_parse(const char *name, enum log_format *out)
{
	if (strcasecmp(name, "human") == 0)
		*out = LOG_FORMAT_HUMAN;
	else if (strcasecmp(name, "json") == 0)
		*out = LOG_FORMAT_JSON;
	else
		return -1;
	return 0;
}

void log_set_format(enum log_format f)
{
	format = f;
}

enum log_format log_get_format(void)
{
	return format;
}

void log_set_timestamps(bool on)
{
	timestamps = on;
}

size_t log_format_time(uint64_t unix_ms, char *out, size_t outlen)
{
	if (outlen == 0)
		return 0;
	out[0] = '\0';
	time_t secs = (time_t)(unix_ms / 1000);
	struct tm tm;
	if (outlen < LOG_TIME_LEN + 1 || gmtime_r(&secs, &tm) == NULL)
		return 0;
	/* Years past 9999 would not fit the format. */
	if (strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm) != LOG_TIME_LEN - 5) {
		out[0] = '\0';
		return 0;
	}
	snprintf(out + LOG_TIME_LEN - 5, 6, ".%03uZ", (unsigned)(unix_ms % 1000));
	return LOG_TIME_LEN;
}

static uint64_t now_unix_ms(void)
{
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void log_default(enum log_level level)
{
	if (!level_from_env)
		current_level = level;
}

void log_raise(enum log_level level)
{
	if (level > current_level)
		current_level = level;
}

bool log_enabled(enum log_level level)
{
	return level <= current_level;
}

void log_stream_setup(void)
{
	struct stat st;
	if (fstat(STDERR_FILENO, &st) != 0 || S_ISREG(st.st_mode))
		return; /* a file never keeps a writer waiting */
	if (S_ISSOCK(st.st_mode)) {
		out_socket = true; /* send() takes MSG_DONTWAIT */
		return;
	}
	/* A pipe, a FIFO or a terminal: opened anew, the description is ours,
	 * and O_NONBLOCK on it changes nothing for the processes we share
	 * standard error with. */
	int fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0)
		out_fd = fd;
}

void log_set_backlog_hook(void (*hook)(void *data), void *data)
{
	backlog_hook = hook;
	backlog_data = data;
}

static ssize_t put(const char *p, size_t n)
{
	ssize_t w;
	do {
		w = out_socket ? send(out_fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL) : write(out_fd, p, n);
	} while (w < 0 && errno == EINTR);
	return w;
}

/* Writes what it can of the backlog; false while some of it waits. */
static bool drain(void)
{
	while (backlog_len > 0) {
		ssize_t w = put(backlog, backlog_len);
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return false;
		if (w <= 0) {
			backlog_len = 0; /* standard error is gone: nothing will take it */
			dropped = 0;
			return true;
		}
		memmove(backlog, backlog + w, backlog_len - (size_t)w);
		backlog_len -= (size_t)w;
	}
	return true;
}

static void emit(const char *line, size_t len);

static void format_line(enum log_level level, char *line, size_t cap, size_t *len, const char *fmt, va_list ap)
{
	char ts[LOG_TIME_LEN + 2] = "";
	if (timestamps && log_format_time(now_unix_ms(), ts, sizeof(ts)) > 0)
		strcat(ts, " ");
	int n;
	if (use_colour)
		n = snprintf(line, cap, "[%s%s%s\033[0m " LOG_TARGET "] ", ts, level_colours[level], level_names[level]);
	else
		n = snprintf(line, cap, "[%s%s " LOG_TARGET "] ", ts, level_names[level]);
	int m = vsnprintf(line + n, cap - (size_t)n - 1, fmt, ap);
	size_t l = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (l > cap - 2)
		l = cap - 2;
	line[l++] = '\n';
	*len = l;
}

/* The length of the well-formed UTF-8 sequence at p (1 to 4 bytes), or,
 * negated, the length of the ill-formed start of one (Unicode's "maximal
 * subpart", which becomes one U+FFFD). */
static int utf8_sequence(const unsigned char *p, size_t left)
{
	unsigned char lo = 0x80, hi = 0xBF;
	int need;
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xC2 && p[0] <= 0xDF) {
		need = 1;
	} else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
		need = 2;
		if (p[0] == 0xE0)
			lo = 0xA0; /* overlong */
		else if (p[0] == 0xED)
			hi = 0x9F; /* surrogates */
	} else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
		need = 3;
		if (p[0] == 0xF0)
			lo = 0x90; /* overlong */
		else if (p[0] == 0xF4)
			hi = 0x8F; /* past U+10FFFF */
	} else {
		return -1;
	}
	for (int i = 1; i <= need; i++) {
		if ((size_t)i >= left || p[i] < lo || p[i] > hi)
			return -i;
		lo = 0x80;
		hi = 0xBF;
	}
	return need + 1;
}

/* A JSON string of s. jansson takes only UTF-8, so bytes that are not are
 * replaced by U+FFFD first. NULL when out of memory. */
static json_t *json_text(const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len = strlen(s), i = 0;
	while (i < len && utf8_sequence(u + i, len - i) > 0)
		i += (size_t)utf8_sequence(u + i, len - i);
	if (i == len)
		return json_stringn(s, len);
	char *clean = malloc(3 * len + 1); /* a replacement takes at most 3 bytes a byte */
	if (clean == NULL)
		return NULL;
	size_t o = 0;
	for (i = 0; i < len;) {
		int n = utf8_sequence(u + i, len - i);
		if (n > 0) {
			memcpy(clean + o, s + i, (size_t)n);
			o += (size_t)n;
			i += (size_t)n;
		} else {
			memcpy(clean + o, "\xEF\xBF\xBD", 3);
			o += 3;
			i += (size_t)-n;
		}
	}
	json_t *j = json_stringn(clean, o);
	free(clean);
	return j;
}

/* The JSON line, newline included; 0 when it cannot be made (out of
 * memory, or longer than cap). Fields never replace the four keys. */
static size_t json_line(enum log_level level, const char *ts, const char *msg, const struct log_field *fields,
			size_t n, char *line, size_t cap)
{
	json_t *o = json_object();
	if (o == NULL)
		return 0;
	bool ok = json_object_set_new(o, "timestamp", json_string(ts)) == 0 &&
		  json_object_set_new(o, "level", json_string(json_levels[level])) == 0 &&
		  json_object_set_new(o, "target", json_string(LOG_TARGET)) == 0 &&
		  json_object_set_new(o, "message", json_text(msg)) == 0;
	for (size_t i = 0; ok && i < n; i++) {
		const struct log_field *f = &fields[i];
		if ((f->type == LOG_FIELD_STR && f->str == NULL) || json_object_get(o, f->key) != NULL)
			continue;
		ok = json_object_set_new(o, f->key, f->type == LOG_FIELD_INT ? json_integer(f->num) : json_text(f->str)) == 0;
	}
	size_t len = 0;
	if (ok) {
		size_t need = json_dumpb(o, line, cap - 1, JSON_COMPACT);
		if (need > 0 && need < cap) {
			line[need] = '\n';
			len = need + 1;
		}
	}
	json_decref(o);
	return len;
}

/* What goes out when jansson cannot make the line: still one valid JSON
 * object, without the fields, the message kept to its printable ASCII
 * ('?' for any other byte, quotes and backslashes included). */
static size_t json_fallback(enum log_level level, const char *ts, const char *msg, char *line, size_t cap)
{
	int n = snprintf(line, cap, "{\"timestamp\":\"%s\",\"level\":\"%s\",\"target\":\"" LOG_TARGET "\",\"message\":\"",
			 ts, json_levels[level]);
	size_t l = n < 0 ? 0 : (size_t)n;
	for (const unsigned char *p = (const unsigned char *)msg; *p != '\0' && l + 4 < cap; p++)
		line[l++] = *p < 0x20 || *p >= 0x7f || *p == '"' || *p == '\\' ? '?' : (char)*p;
	memcpy(line + l, "\"}\n", 3);
	return l + 3;
}

/* One line in the chosen format into line (cap bytes, at least
 * LOG_JSON_MAX for a JSON line); returns its length, newline included. */
static size_t build_line(enum log_level level, const struct log_field *fields, size_t n, char *line, size_t cap,
			 const char *fmt, va_list ap)
{
	size_t len;
	if (format == LOG_FORMAT_HUMAN) {
		format_line(level, line, cap < LOG_HUMAN_MAX ? cap : LOG_HUMAN_MAX, &len, fmt, ap);
		return len;
	}
	char msg[LOG_HUMAN_MAX];
	if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
		msg[0] = '\0';
	char ts[LOG_TIME_LEN + 1];
	log_format_time(now_unix_ms(), ts, sizeof(ts));
	len = json_line(level, ts, msg, fields, n, line, cap);
	return len > 0 ? len : json_fallback(level, ts, msg, line, cap);
}

static size_t make_line(char *line, size_t cap, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static size_t make_line(char *line, size_t cap, enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	size_t len = build_line(level, NULL, 0, line, cap, fmt, ap);
	va_end(ap);
	return len;
}

/* Once standard error takes lines again, it hears how many it missed. */
static void say_dropped(void)
{
	if (dropped == 0)
		return;
	unsigned long n = dropped;
	dropped = 0;
	char line[LOG_JSON_MAX];
	emit(line, make_line(line, sizeof(line), LOG_WARN, "%lu log line%s dropped while standard error could take no more",
			     n, n == 1 ? " was" : "s were"));
}

bool log_flush(void)
{
	if (!drain())
		return false;
	say_dropped();
	return backlog_len == 0;
}

/* One line, whole or not at all: what standard error cannot take now
 * waits in the backlog; past it, lines are dropped and counted. */
static void emit(const char *line, size_t len)
{
	if (len == 0)
		return;
	bool waiting = !drain();
	if (!waiting) {
		ssize_t w = put(line, len);
		if (w == (ssize_t)len)
			return;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return;
		if (w > 0) {
			/* Half a line went out: the rest must follow, over the limit
			 * if need be, or the next line would be glued to it. */
			line += w;
			len -= (size_t)w;
			size_t take = len < sizeof(backlog) - backlog_len ? len : sizeof(backlog) - backlog_len;
			memcpy(backlog + backlog_len, line, take);
			backlog_len += take;
			if (backlog_hook)
				backlog_hook(backlog_data);
			return;
		}
	}
	if (backlog_len + len > sizeof(backlog)) {
		dropped++;
		return;
	}
	bool was_empty = backlog_len == 0;
	memcpy(backlog + backlog_len, line, len);
	backlog_len += len;
	if (was_empty && backlog_hook)
		backlog_hook(backlog_data);
}

static void log_line(enum log_level level, const struct log_field *fields, size_t n, const char *fmt, va_list ap)
{
	/* One write per line, so that lines from concurrent processes sharing
	 * the terminal never interleave mid-line. */
	char line[LOG_JSON_MAX];
	size_t len = build_line(level, fields, n, line, sizeof(line), fmt, ap);
	if (backlog_len == 0 && dropped > 0)
		say_dropped();
	emit(line, len);
}

/* The message of the last error or warning, whatever the level shown. */
static char last_problem[1024];

static void keep_problem(enum log_level level, const char *fmt, va_list ap)
{
	if (level > LOG_WARN)
		return;
	va_list copy;
	va_copy(copy, ap);
	vsnprintf(last_problem, sizeof(last_problem), fmt, copy);
	va_end(copy);
}

const char *log_last_problem(void)
{
	return last_problem;
}

void log_forget_problem(void)
{
	last_problem[0] = '\0';
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	keep_problem(level, fmt, ap);
	if (log_enabled(level))
		log_line(level, NULL, 0, fmt, ap);
	va_end(ap);
}

void log_fields(enum log_level level, const struct log_field *fields, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	keep_problem(level, fmt, ap);
	if (log_enabled(level))
		log_line(level, fields, n, fmt, ap);
	va_end(ap);
}

void log_report(const struct log_field *fields, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_line(LOG_INFO, fields, n, fmt, ap);
	va_end(ap);
}
