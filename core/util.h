/*
 * util.h - small helpers shared by core modules: clocks and the parsers for
 * config values (booleans, integers, sizes, durations).
 *
 * Threads: all functions are pure or read clocks; any thread may call them.
 */
#ifndef PMQ_CORE_UTIL_H
#define PMQ_CORE_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wall clock and monotonic clock, in milliseconds. */
int64_t util_now_ms(void);
int64_t util_monotonic_ms(void);

/* Value parsers: PMQ_OK, or PMQ_ERR_CONFIG when value is not valid. */
int util_parse_bool(const char *value, int *out);        /* true/false yes/no on/off 1/0 */
int util_parse_int(const char *value, int64_t min, int64_t max, int64_t *out);
int util_parse_size(const char *value, uint64_t *out);   /* 123, 64k, 16M, 1G (1024-based) */
int util_parse_duration_ms(const char *value, int64_t *out); /* 250ms 10s 5m 1h 7d; bare = ms */

/* strdup that returns NULL on NULL input; result owned by the caller. */
char *util_strdup(const char *s);
/* Like snprintf into a fixed buffer; never overflows, always terminates. */
void util_strlcpy(char *dst, const char *src, size_t size);

/* Make the array at *arrp (elem-sized items, capacity *cap) hold at least
 * need items, doubling; the array stays the caller's.  PMQ_OK or
 * PMQ_ERR_NOMEM (the old array is untouched). */
int util_grow(void *arrp, size_t *cap, size_t need, size_t elem);

#define UTIL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
