/*
 * logger.c - levelled log lines to stderr or a file (see logger.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "logger.h"
#include "util.h"

static int log_level = PMQ_LOG_INFO;
static int log_fd = 2;
static char *log_path;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *level_names[] = { "error", "warn", "info", "debug" };

int
logger_level_from_name(const char *name)
{
	size_t i;

	for (i = 0; i < UTIL_ARRAY_LEN(level_names); i++)
		if (strcasecmp(name, level_names[i]) == 0)
			return (int)i;
	return -1;
}

void
logger_set_level(int level)
{
	log_level = level;
}

int
logger_get_level(void)
{
	return log_level;
}

int
logger_open(const char *path)
{
	int fd;

	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd == -1) {
		logger_log(NULL, PMQ_LOG_ERROR, "log file %s: %s", path,
		    strerror(errno));
		return PMQ_ERR_IO;
	}
	pthread_mutex_lock(&log_lock);
	if (log_fd != 2)
		close(log_fd);
	log_fd = fd;
	free(log_path);
	log_path = strdup(path);
	pthread_mutex_unlock(&log_lock);
	return PMQ_OK;
}

void
logger_reopen(void)
{
	char *path;

	if (log_path == NULL)
		return;
	path = strdup(log_path);
	if (path == NULL)
		return;
	logger_open(path);
	free(path);
}

void
logger_close(void)
{
	pthread_mutex_lock(&log_lock);
	if (log_fd != 2)
		close(log_fd);
	log_fd = 2;
	free(log_path);
	log_path = NULL;
	pthread_mutex_unlock(&log_lock);
}

void
logger_vlog(const char *who, int level, const char *fmt, va_list ap)
{
	char line[2048];
	struct timespec ts;
	struct tm tm;
	int n, m;

	if (level > log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s%s",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
	    level_names[level < 0 ? 0 : level > 3 ? 3 : level],
	    who ? who : "", who ? ": " : "");
	if (n < 0)
		return;
	m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
	if (m < 0)
		return;
	n += m;
	if (n > (int)sizeof line - 2)
		n = (int)sizeof line - 2;
	line[n++] = '\n';
	pthread_mutex_lock(&log_lock);
	/* A short or failed log write has nowhere better to be reported. */
	if (write(log_fd, line, (size_t)n) < 0) {
		/* ignored */
	}
	pthread_mutex_unlock(&log_lock);
}

void
logger_log(const char *who, int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	logger_vlog(who, level, fmt, ap);
	va_end(ap);
}
