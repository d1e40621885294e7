/*
 * logger.h - the daemon's log: levelled lines to stderr or a file, reopened
 * on SIGHUP.
 *
 * Threads: logger_log may be called from any thread (one write(2) per line).
 */
#ifndef PMQ_CORE_LOGGER_H
#define PMQ_CORE_LOGGER_H

#include <stdarg.h>

#include <plexmq/types.h>

/* Level names: "error", "warn", "info", "debug".  Returns -1 if unknown. */
int logger_level_from_name(const char *name);
void logger_set_level(int level);
int logger_get_level(void);
/* Log to path (appending) instead of stderr; PMQ_OK or PMQ_ERR_IO. */
int logger_open(const char *path);
/* Reopen the file given to logger_open (log rotation); no-op on stderr. */
void logger_reopen(void);
void logger_close(void);

void logger_log(const char *who, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void logger_vlog(const char *who, int level, const char *fmt, va_list ap);

#define log_error(...) logger_log(NULL, PMQ_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) logger_log(NULL, PMQ_LOG_WARN, __VA_ARGS__)
#define log_info(...) logger_log(NULL, PMQ_LOG_INFO, __VA_ARGS__)
#define log_debug(...) logger_log(NULL, PMQ_LOG_DEBUG, __VA_ARGS__)

#endif
