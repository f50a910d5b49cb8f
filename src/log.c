/* log: env_logger-style lines on stderr; see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static enum log_level current_level = LOG_INFO;
static bool use_colour;
static bool level_from_env;

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

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	/* One write per line, so that lines from concurrent processes sharing
	 * the terminal never interleave mid-line. */
	char line[2048];
	int n;
	if (use_colour)
		n = snprintf(line, sizeof(line), "[%s%s\033[0m otoroshictl::tunnels::tcp] ",
			     level_colours[level], level_names[level]);
	else
		n = snprintf(line, sizeof(line), "[%s otoroshictl::tunnels::tcp] ", level_names[level]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	line[len++] = '\n';
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}
