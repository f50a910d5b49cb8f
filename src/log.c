/* log: env_logger-style lines on stderr; see log.h. */
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
#include <unistd.h>

static enum log_level current_level = LOG_INFO;
static bool use_colour;
static bool level_from_env;

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
	int n;
	if (use_colour)
		n = snprintf(line, cap, "[%s%s\033[0m otoroshictl::tunnels::tcp] ", level_colours[level],
			     level_names[level]);
	else
		n = snprintf(line, cap, "[%s otoroshictl::tunnels::tcp] ", level_names[level]);
	int m = vsnprintf(line + n, cap - (size_t)n - 1, fmt, ap);
	size_t l = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (l > cap - 2)
		l = cap - 2;
	line[l++] = '\n';
	*len = l;
}

static size_t make_line(char *line, size_t cap, enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static size_t make_line(char *line, size_t cap, enum log_level level, const char *fmt, ...)
{
	size_t len;
	va_list ap;
	va_start(ap, fmt);
	format_line(level, line, cap, &len, fmt, ap);
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
	char line[256];
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

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	/* One write per line, so that lines from concurrent processes sharing
	 * the terminal never interleave mid-line. */
	char line[2048];
	size_t len;
	va_list ap;
	va_start(ap, fmt);
	format_line(level, line, sizeof(line), &len, fmt, ap);
	va_end(ap);
	if (backlog_len == 0 && dropped > 0)
		say_dropped();
	emit(line, len);
}
