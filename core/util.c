/*
 * util.c - clocks and config value parsers (see util.h).
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <plexmq/types.h>

#include "util.h"

int64_t
util_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t
util_monotonic_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int
util_parse_bool(const char *v, int *out)
{
	static const char *yes[] = { "1", "true", "yes", "on" };
	static const char *no[] = { "0", "false", "no", "off" };
	size_t i;

	if (v == NULL)
		return PMQ_ERR_CONFIG;
	for (i = 0; i < UTIL_ARRAY_LEN(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return PMQ_OK;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return PMQ_OK;
		}
	}
	return PMQ_ERR_CONFIG;
}

/* Parse a decimal integer prefix; *end points past it. */
static int
parse_number(const char *v, int64_t *out, const char **end)
{
	char *e;
	long long n;

	if (v == NULL || *v == '\0' || isspace((unsigned char)*v))
		return PMQ_ERR_CONFIG;
	errno = 0;
	n = strtoll(v, &e, 10);
	if (errno != 0 || e == v)
		return PMQ_ERR_CONFIG;
	*out = n;
	*end = e;
	return PMQ_OK;
}

int
util_parse_int(const char *v, int64_t min, int64_t max, int64_t *out)
{
	const char *end;
	int64_t n;

	if (parse_number(v, &n, &end) != PMQ_OK || *end != '\0')
		return PMQ_ERR_CONFIG;
	if (n < min || n > max)
		return PMQ_ERR_CONFIG;
	*out = n;
	return PMQ_OK;
}

int
util_parse_size(const char *v, uint64_t *out)
{
	const char *end;
	int64_t n;
	uint64_t mult = 1;

	if (parse_number(v, &n, &end) != PMQ_OK || n < 0)
		return PMQ_ERR_CONFIG;
	switch (*end) {
	case '\0': break;
	case 'k': case 'K': mult = 1024ULL; end++; break;
	case 'm': case 'M': mult = 1024ULL * 1024; end++; break;
	case 'g': case 'G': mult = 1024ULL * 1024 * 1024; end++; break;
	default: return PMQ_ERR_CONFIG;
	}
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end != '\0')
		return PMQ_ERR_CONFIG;
	if ((uint64_t)n > UINT64_MAX / mult)
		return PMQ_ERR_CONFIG;
	*out = (uint64_t)n * mult;
	return PMQ_OK;
}

int
util_parse_duration_ms(const char *v, int64_t *out)
{
	static const struct { const char *sfx; int64_t ms; } units[] = {
		{ "", 1 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 },
		{ "h", 3600000 }, { "d", 86400000 },
	};
	const char *end;
	int64_t n;
	size_t i;

	if (parse_number(v, &n, &end) != PMQ_OK)
		return PMQ_ERR_CONFIG;
	if (n == -1 && *end == '\0') { /* -1: forever, where allowed */
		*out = -1;
		return PMQ_OK;
	}
	if (n < 0)
		return PMQ_ERR_CONFIG;
	for (i = 0; i < UTIL_ARRAY_LEN(units); i++) {
		if (strcmp(end, units[i].sfx) == 0) {
			if (n > INT64_MAX / units[i].ms)
				return PMQ_ERR_CONFIG;
			*out = n * units[i].ms;
			return PMQ_OK;
		}
	}
	return PMQ_ERR_CONFIG;
}

char *
util_strdup(const char *s)
{
	return s == NULL ? NULL : strdup(s);
}

void
util_strlcpy(char *dst, const char *src, size_t size)
{
	size_t n;

	if (size == 0)
		return;
	n = strlen(src);
	if (n >= size)
		n = size - 1;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

int
util_grow(void *arrp, size_t *cap, size_t need, size_t elem)
{
	void **arr = arrp;
	size_t n = *cap ? *cap : 16;
	void *p;

	if (need <= *cap)
		return PMQ_OK;
	while (n < need) {
		if (n > SIZE_MAX / 2 / elem)
			return PMQ_ERR_NOMEM;
		n *= 2;
	}
	p = realloc(*arr, n * elem);
	if (p == NULL)
		return PMQ_ERR_NOMEM;
	*arr = p;
	*cap = n;
	return PMQ_OK;
}
