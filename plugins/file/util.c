/*
 * util.c - small helpers of the file storage plugin: CRC32C (Castagnoli,
 * the checksum of RecordBatch v2, used here for frames and journal
 * records), little-endian field access, and syscalls wrapped so that EINTR
 * and short transfers never reach the callers.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"

/* Slicing-by-8 tables, built once on first use (pthread_once: the writer
 * threads of several stores may race to it), and whether the CPU has
 * SSE4.2's crc32 instruction.  The core has its own copy (core/batch.c):
 * a plugin links against nothing of the daemon's. */
static uint32_t crc_tab[8][256];
static int crc_hw;
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	uint32_t i, j, c;

	for (i = 0; i < 256; i++) {
		c = i;
		for (j = 0; j < 8; j++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_tab[0][i] = c;
	}
	for (i = 0; i < 256; i++)
		for (j = 1; j < 8; j++)
			crc_tab[j][i] = (crc_tab[j - 1][i] >> 8) ^
			                crc_tab[0][crc_tab[j - 1][i] & 0xff];
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	crc_hw = __builtin_cpu_supports("sse4.2");
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
/* The crc32 instruction is CRC-32C itself: a cold read checks every byte
 * it returns, and the tables cost about a third of the read path's CPU. */
__attribute__((target("sse4.2"))) static uint32_t
crc_sse42(uint32_t crc, const unsigned char *p, size_t len)
{
	uint64_t c = ~crc, w;

	for (; len >= 8; p += 8, len -= 8) {
		memcpy(&w, p, 8); /* little-endian, as the CRC consumes bytes */
		c = __builtin_ia32_crc32di(c, w);
	}
	while (len-- > 0)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

uint32_t fs_crc32c(uint32_t crc, const void *data, size_t len)
{
	const unsigned char *p = data;

	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__) && defined(__GNUC__)
	if (crc_hw)
		return crc_sse42(crc, p, len);
#endif
	crc = ~crc;
	while (len >= 8) {
		uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
		                    (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
		crc = crc_tab[7][a & 0xff] ^ crc_tab[6][(a >> 8) & 0xff] ^
		      crc_tab[5][(a >> 16) & 0xff] ^ crc_tab[4][a >> 24] ^
		      crc_tab[3][p[4]] ^ crc_tab[2][p[5]] ^ crc_tab[1][p[6]] ^
		      crc_tab[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
	return ~crc;
}

void fs_put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
	p[2] = (unsigned char)(v >> 16);
	p[3] = (unsigned char)(v >> 24);
}

void fs_put64(unsigned char *p, uint64_t v)
{
	fs_put32(p, (uint32_t)v);
	fs_put32(p + 4, (uint32_t)(v >> 32));
}

uint32_t fs_get32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

uint64_t fs_get64(const unsigned char *p)
{
	return (uint64_t)fs_get32(p) | (uint64_t)fs_get32(p + 4) << 32;
}

int fs_pwrite_full(int fd, const void *buf, size_t len, off_t off)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -ENOSPC; /* no progress: treat as full */
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

ssize_t fs_pread_full(int fd, void *buf, size_t len, off_t off)
{
	unsigned char *p = buf;
	size_t got = 0;

	while (got < len) {
		ssize_t n = pread(fd, p + got, len - got, off + (off_t)got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

int fs_errno_err(int e)
{
	switch (e) {
	case ENOSPC:
	case EDQUOT:
	case EFBIG:
		return PMQ_ERR_NOSPC;
	case EROFS:
	case EACCES:
	case EPERM:
		return PMQ_ERR_RDONLY;
	case ENOMEM:
		return PMQ_ERR_NOMEM;
	default:
		return PMQ_ERR_IO;
	}
}

int fs_fsync_dir(const char *path)
{
	int fd, rc = 0;

	do
		fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -errno;
	if (fsync(fd) != 0 && errno != EINVAL)
		rc = -errno;
	close(fd);
	return rc;
}

char *fs_path(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *p = malloc(la + lb + 2);

	if (p == NULL)
		return NULL;
	memcpy(p, a, la);
	p[la] = '/';
	memcpy(p + la + 1, b, lb + 1);
	return p;
}

int fs_rmtree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int rc = 0;

	if (d == NULL)
		return errno == ENOENT ? 0 : -errno;
	while ((de = readdir(d)) != NULL) {
		char *p;
		struct stat st;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		p = fs_path(path, de->d_name);
		if (p == NULL) {
			rc = rc ? rc : -ENOMEM;
			continue;
		}
		if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
			int r = fs_rmtree(p);

			rc = rc ? rc : r;
		} else if (unlink(p) != 0 && errno != ENOENT) {
			rc = rc ? rc : -errno;
		}
		free(p);
	}
	closedir(d);
	if (rmdir(path) != 0 && errno != ENOENT)
		rc = rc ? rc : -errno;
	return rc;
}

const unsigned char *fs_rbuf_get(struct fs_rbuf *rb, uint64_t pos, size_t n,
                                 int *err)
{
	ssize_t got;
	size_t want;

	if (pos + n > rb->fsize || pos + n < pos)
		return NULL;
	if ((off_t)pos >= rb->off && pos + n <= (uint64_t)rb->off + rb->len)
		return rb->buf + (pos - (uint64_t)rb->off);
	want = rb->win ? rb->win : 65536;
	if (want < n)
		want = n;
	if (want > rb->fsize - pos)
		want = (size_t)(rb->fsize - pos);
	if (want > rb->cap) {
		unsigned char *nb = realloc(rb->buf, want);

		if (nb == NULL) {
			*err = PMQ_ERR_NOMEM;
			return NULL;
		}
		rb->buf = nb;
		rb->cap = want;
	}
	got = fs_pread_full(rb->fd, rb->buf, want, (off_t)pos);
	if (got < 0) {
		*err = fs_errno_err((int)-got);
		rb->len = 0;
		return NULL;
	}
	rb->off = (off_t)pos;
	rb->len = (size_t)got;
	if ((size_t)got < n)
		return NULL; /* the file shrank under us: treat as EOF */
	return rb->buf;
}

void fs_rbuf_free(struct fs_rbuf *rb)
{
	free(rb->buf);
	rb->buf = NULL;
	rb->cap = rb->len = 0;
}
