/*
 * segment.c - one log (topic-partition) of the file storage plugin: a
 * directory of segment files, each "<base offset, 20 digits>.log" holding
 * framed batches, with a sparse offset index (.index) and a time index
 * (.timeindex) beside it; the log start offset left by trims in "start".
 * Recovery lives here too: a log's segment tails are checked frame by frame
 * at open, a torn or corrupt tail is cut and logged, a missing or damaged
 * index is rebuilt.  docs/storage-file.md has the formats.
 *
 * Every function but flog_open/flog_free/flog_dirname runs on the store's
 * I/O thread (the writer), the only thread that touches a log's segments
 * while it is in use.
 *
 * Reads: flog_read copies batches out (CRC checked); flog_read_extents
 * (ABI 1.2 log_read_extents) answers with pieces, leaving batches of
 * 64 KiB and more in the segment file (header checked, CRC not: the
 * RecordBatch carries its own) for the host to sendfile(), their pages
 * read into the page cache first.  Both walk the frames the same way
 * (read_walk), so they select the same batches.  Each segment caches one
 * read-only fd (seg->rfd); an extents answer owns one dup of it per
 * segment it touches, so it stays readable after the segment is deleted
 * or the log closed or removed, until the host frees it.
 *
 * A read-only log (l->rdonly: the store is read-only, or a segment could
 * not be opened for writing) opens its files O_RDONLY and changes nothing:
 * recovery still validates every tail, but a torn or corrupt one is only
 * ignored in memory (logged, not cut), indexes are rebuilt in memory only,
 * and appends, trims and removes fail with PMQ_ERR_RDONLY.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"

#define IDX_ENTRY 16        /* .index: offset i64, position u64 */
#define MAX_FRAME (1u << 30) /* larger lengths are garbage, not batches */
#define START_MAGIC 0x53514d50u /* "PMQS" */
/* Cached read fds per log (seg->rfd): enough for a few readers at
 * different places of a log, bounded so thousands of segments read once
 * do not hold thousands of fds. */
#define FS_RFD_MAX 16

/* ---- names ---- */

static int keep_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
}

char *flog_dirname(const char *topic, int32_t partition)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t n = strlen(topic), i, o = 0;
	char *name;

	if (n == 0 || partition < 0)
		return NULL;
	name = malloc(n * 3 + 16);
	if (name == NULL)
		return NULL;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)topic[i];

		if (keep_char(c)) {
			name[o++] = (char)c;
		} else {
			name[o++] = '%';
			name[o++] = hex[c >> 4];
			name[o++] = hex[c & 15];
		}
	}
	/* 255 is the usual name limit; leave room for "-<partition>" and
	 * ".deleting". */
	if (o > 230) {
		free(name);
		return NULL;
	}
	snprintf(name + o, 16, "-%d", (int)partition);
	return name;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int flog_parse_dirname(const char *name, char **topic, int32_t *partition)
{
	const char *dash = strrchr(name, '-');
	const char *p;
	char *t, *o;
	long part = 0;

	if (dash == NULL || dash == name || dash[1] == '\0')
		return -1;
	for (p = dash + 1; *p; p++) {
		if (*p < '0' || *p > '9' || part > 100000000)
			return -1;
		part = part * 10 + (*p - '0');
	}
	t = malloc((size_t)(dash - name) + 1);
	if (t == NULL)
		return -1;
	for (p = name, o = t; p < dash; p++) {
		if (*p == '%') {
			int hi, lo;

			if (dash - p < 3)
				goto bad;
			hi = hexval(p[1]);
			lo = hexval(p[2]);
			if (hi < 0 || lo < 0)
				goto bad;
			*o++ = (char)(hi << 4 | lo);
			p += 2;
		} else if (keep_char((unsigned char)*p)) {
			*o++ = *p;
		} else {
			goto bad;
		}
	}
	*o = '\0';
	if (o == t || strlen(t) != (size_t)(o - t))
		goto bad; /* empty, or an encoded NUL */
	*topic = t;
	*partition = (int32_t)part;
	return 0;
bad:
	free(t);
	return -1;
}

/* "<dir>/<base 20 digits><ext>": a new string or NULL. */
static char *seg_path(const struct flog *l, int64_t base, const char *ext)
{
	size_t n = strlen(l->dir) + 32 + strlen(ext);
	char *p = malloc(n);

	if (p != NULL)
		snprintf(p, n, "%s/%020" PRId64 "%s", l->dir, base, ext);
	return p;
}

/* ---- segments in memory ---- */

static struct seg *seg_new(struct fs *s, int64_t base)
{
	struct seg *g = calloc(1, sizeof(*g));

	if (g == NULL)
		return NULL;
	g->base = g->end = base;
	g->max_ts = INT64_MIN;
	g->id = fs_new_file_id(s);
	g->fd = g->ifd = g->tfd = g->rfd = -1;
	return g;
}

static void seg_close_fds(struct fs *s, struct seg *g, int sync)
{
	if (g->fd >= 0) {
		fs_dirty_close(s, g->id, sync);
		close(g->fd);
	}
	if (g->ifd >= 0)
		close(g->ifd);
	if (g->tfd >= 0)
		close(g->tfd);
	g->fd = g->ifd = g->tfd = -1;
}

/* Drop g's cached read fd.  Answers that hold dups of it keep reading:
 * the open file description lives until its last fd is closed. */
static void seg_close_rfd(struct seg *g)
{
	if (g->rfd >= 0)
		close(g->rfd);
	g->rfd = -1;
}

static void seg_free(struct fs *s, struct seg *g)
{
	if (g == NULL)
		return;
	/* Unsynced data of a closing log is synced as the policy says. */
	seg_close_fds(s, g, 1);
	seg_close_rfd(g);
	free(g->off);
	free(g->pos);
	free(g->tpre);
	free(g);
}

static int idx_push(struct seg *g, int64_t off, uint64_t pos, int64_t tpre)
{
	if (g->n == g->cap) {
		size_t nc = g->cap ? g->cap * 2 : 64;
		int64_t *o = realloc(g->off, nc * sizeof(*o));

		if (o == NULL)
			return PMQ_ERR_NOMEM;
		g->off = o;
		uint64_t *p = realloc(g->pos, nc * sizeof(*p));
		if (p == NULL)
			return PMQ_ERR_NOMEM;
		g->pos = p;
		int64_t *t = realloc(g->tpre, nc * sizeof(*t));
		if (t == NULL)
			return PMQ_ERR_NOMEM;
		g->tpre = t;
		g->cap = nc;
	}
	g->off[g->n] = off;
	g->pos[g->n] = pos;
	g->tpre[g->n] = tpre;
	g->n++;
	return PMQ_OK;
}

/* Write index entry i to the open index files.  A failure only costs
 * speed (recovery rebuilds the index), so it stops index writes for the
 * segment rather than failing the append. */
static void idx_write(struct fs *s, struct flog *l, struct seg *g, size_t i)
{
	unsigned char e[IDX_ENTRY], t[IDX_ENTRY];
	int rc;

	if (g->index_broken || g->ifd < 0 || g->tfd < 0)
		return;
	fs_put64(e, (uint64_t)g->off[i]);
	fs_put64(e + 8, g->pos[i]);
	fs_put64(t, (uint64_t)g->tpre[i]);
	fs_put64(t + 8, g->pos[i]);
	rc = fs_pwrite_full(g->ifd, e, sizeof(e), (off_t)(i * IDX_ENTRY));
	if (rc == 0)
		rc = fs_pwrite_full(g->tfd, t, sizeof(t),
		                    (off_t)(i * IDX_ENTRY));
	if (rc != 0) {
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: index of segment %" PRId64
		            ": %s; recovery will rebuild it",
		            l->dir, g->base, strerror(-rc));
		g->index_broken = 1;
	}
}

/* Open an index file of g (ext ".index"/".timeindex") read-write,
 * creating it; -1 on failure (logged). */
static int idx_open(struct fs *s, struct flog *l, struct seg *g,
                    const char *ext, int trunc)
{
	char *p = seg_path(l, g->base, ext);
	int fd;

	if (p == NULL)
		return -1;
	do
		fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | (trunc ? O_TRUNC : 0),
		          0644);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		fs_api->log(fs_inst(s), PMQ_LOG_WARN, "file storage: %s: %s",
		            p, strerror(errno));
	free(p);
	return fd;
}

/* Rewrite both index files of g from memory (after a rebuild or a cut).
 * Leaves them open in g when keep, else closes them. */
static void idx_store(struct fs *s, struct flog *l, struct seg *g, int keep)
{
	size_t i;

	if (g->ifd >= 0)
		close(g->ifd);
	if (g->tfd >= 0)
		close(g->tfd);
	g->ifd = idx_open(s, l, g, ".index", 1);
	g->tfd = idx_open(s, l, g, ".timeindex", 1);
	g->index_broken = g->ifd < 0 || g->tfd < 0;
	for (i = 0; i < g->n && !g->index_broken; i++)
		idx_write(s, l, g, i);
	if (!keep) {
		if (g->ifd >= 0)
			close(g->ifd);
		if (g->tfd >= 0)
			close(g->tfd);
		g->ifd = g->tfd = -1;
	}
}

/* Read a whole small file into a new buffer; NULL when absent or bad. */
static unsigned char *slurp(const char *path, size_t *len)
{
	struct stat st;
	unsigned char *b;
	ssize_t n;
	int fd;

	do
		fd = open(path, O_RDONLY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) != 0 || st.st_size > (off_t)1 << 30) {
		close(fd);
		return NULL;
	}
	b = malloc((size_t)st.st_size + 1);
	if (b == NULL) {
		close(fd);
		return NULL;
	}
	n = fs_pread_full(fd, b, (size_t)st.st_size, 0);
	close(fd);
	if (n < 0) {
		free(b);
		return NULL;
	}
	*len = (size_t)n;
	return b;
}

/* Load the longest sane prefix of g's index files; returns how many
 * entries the files held (to tell whether they need rewriting). */
static size_t idx_load(struct flog *l, struct seg *g, uint64_t fsize)
{
	char *pi = seg_path(l, g->base, ".index");
	char *pt = seg_path(l, g->base, ".timeindex");
	unsigned char *bi = NULL, *bt = NULL;
	size_t li = 0, lt = 0, n, i;

	if (pi && pt) {
		bi = slurp(pi, &li);
		bt = slurp(pt, &lt);
	}
	free(pi);
	free(pt);
	n = (li < lt ? li : lt) / IDX_ENTRY;
	for (i = 0; bi && bt && i < n; i++) {
		int64_t off = (int64_t)fs_get64(bi + i * IDX_ENTRY);
		uint64_t pos = fs_get64(bi + i * IDX_ENTRY + 8);
		int64_t tpre = (int64_t)fs_get64(bt + i * IDX_ENTRY);

		if (fs_get64(bt + i * IDX_ENTRY + 8) != pos || pos >= fsize)
			break;
		if (i == 0 && (off != g->base || pos != 0))
			break;
		if (i > 0 && (off <= g->off[i - 1] || pos <= g->pos[i - 1] ||
		              tpre < g->tpre[i - 1]))
			break;
		if (idx_push(g, off, pos, tpre) != PMQ_OK)
			break;
	}
	free(bi);
	free(bt);
	return li == lt && li % IDX_ENTRY == 0 ? li / IDX_ENTRY : (size_t)-1;
}

/* ---- frames ---- */

/* Check the frame at pos (expected base: want, or any when want < 0).
 * Returns NULL and *why when it is not a whole good frame; else the frame
 * bytes (valid until the next rbuf call). */
static const unsigned char *frame_at(struct fs_rbuf *rb, uint64_t pos,
                                     int64_t want, int check_crc,
                                     const char **why, int *err)
{
	const unsigned char *h = fs_rbuf_get(rb, pos, FS_FRAME_HDR, err);
	uint32_t len, recs;

	if (h == NULL) {
		*why = *err ? "read error" : "torn frame header";
		return NULL;
	}
	if (fs_get32(h) != FS_FRAME_MAGIC) {
		*why = "bad frame magic (zero-filled or garbage tail)";
		return NULL;
	}
	len = fs_get32(h + 8);
	recs = fs_get32(h + 12);
	if (len == 0 || len > MAX_FRAME || recs == 0) {
		*why = "bad frame length";
		return NULL;
	}
	if (want >= 0 && (int64_t)fs_get64(h + 16) != want) {
		*why = "offset gap";
		return NULL;
	}
	if (pos + FS_FRAME_HDR + len > rb->fsize) {
		*why = "torn batch";
		return NULL;
	}
	if (!check_crc)
		return h;
	h = fs_rbuf_get(rb, pos, FS_FRAME_HDR + (size_t)len, err);
	if (h == NULL) {
		*why = *err ? "read error" : "torn batch";
		return NULL;
	}
	if (fs_crc32c(0, h + 8, FS_FRAME_HDR - 8 + (size_t)len) !=
	    fs_get32(h + 4)) {
		*why = "bad CRC";
		return NULL;
	}
	return h;
}

/*
 * Scan g's frames from index entry `from` (or from 0 with an empty index
 * when from is (size_t)-1) to the end of the file, checking each and
 * adding index entries as appends would.  Sets g->size (the end of the
 * last good frame), g->end and g->max_ts; *why says why it stopped early,
 * NULL when it reached EOF cleanly.
 */
static int seg_scan(struct fs *s, struct seg *g, int fd, uint64_t fsize,
                    size_t from, const char **why)
{
	struct fs_rbuf rb = {.fd = fd, .fsize = fsize};
	uint64_t pos = 0, ivl = fs_index_interval(s);
	int64_t want = g->base, tmax = INT64_MIN;
	int err = 0;

	*why = NULL;
	if (from != (size_t)-1) {
		pos = g->pos[from];
		want = g->off[from];
		tmax = g->tpre[from];
		g->n = from + 1;
	} else {
		g->n = 0;
	}
	g->since = 0;
	while (pos < fsize) {
		const unsigned char *h =
		    frame_at(&rb, pos, want, 1, why, &err);
		uint32_t len;
		int64_t mts;

		if (h == NULL)
			break;
		len = fs_get32(h + 8);
		mts = (int64_t)fs_get64(h + 32);
		if (g->n == 0 || (g->since >= ivl && g->pos[g->n - 1] != pos)) {
			if (idx_push(g, want, pos, tmax) == PMQ_OK)
				g->since = 0;
		}
		if (mts > tmax)
			tmax = mts;
		want += fs_get32(h + 12);
		pos += FS_FRAME_HDR + len;
		g->since += FS_FRAME_HDR + len;
	}
	fs_rbuf_free(&rb);
	g->size = pos;
	g->end = want;
	g->max_ts = tmax;
	return err;
}

/* Cut g's file at g->size (a torn or corrupt tail). */
static int seg_cut(struct fs *s, struct flog *l, struct seg *g, int fd,
                   uint64_t fsize, const char *why)
{
	int rc;

	fs_api->log(fs_inst(s), PMQ_LOG_WARN,
	            "file storage: %s/%020" PRId64 ".log: cut %" PRIu64
	            " bytes at position %" PRIu64 " (%s); log ends at %" PRId64,
	            l->dir, g->base, fsize - g->size, g->size, why, g->end);
	do
		rc = ftruncate(fd, (off_t)g->size);
	while (rc != 0 && errno == EINTR);
	if (rc != 0) {
		rc = -errno;
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: %s: cannot cut segment %" PRId64
		            ": %s", l->dir, g->base, strerror(-rc));
		return fs_errno_err(-rc);
	}
	if (fs_policy(s) != STORECFG_FSYNC_NEVER)
		fs_sync_fd(s, fd);
	return PMQ_OK;
}

/*
 * Load segment g: its index, then a check of its tail from the last index
 * entry (or of everything when the index is missing or does not match the
 * data).  Returns the fd of the .log (open read-write) or -1 with *err.
 * *cut_why is set when the file held more than its good frames (the
 * caller decides: cut the last segment; a damaged middle one ends the
 * log).
 */
static int seg_load(struct fs *s, struct flog *l, struct seg *g,
                    const char **cut_why, uint64_t *fsize_out, int *err)
{
	char *p = seg_path(l, g->base, ".log");
	struct stat st;
	size_t on_disk, loaded;
	const char *why = NULL;
	int fd, rebuilt = 0, rc;

	*cut_why = NULL;
	if (p == NULL) {
		*err = PMQ_ERR_NOMEM;
		return -1;
	}
	do
		fd = open(p, (l->rdonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0 && !l->rdonly && (errno == EROFS || errno == EACCES)) {
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: %s; log %s opened read-only: "
		            "writes to it will fail", p, strerror(errno),
		            l->dir);
		l->rdonly = 1;
		do
			fd = open(p, O_RDONLY | O_CLOEXEC);
		while (fd < 0 && errno == EINTR);
	}
	if (fd < 0 || fstat(fd, &st) != 0) {
		*err = fs_errno_err(errno);
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR, "file storage: %s: %s",
		            p, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(p);
		return -1;
	}
	free(p);
	*fsize_out = (uint64_t)st.st_size;
	on_disk = idx_load(l, g, (uint64_t)st.st_size);
	loaded = g->n;
	rc = seg_scan(s, g, fd, (uint64_t)st.st_size,
	              g->n ? g->n - 1 : (size_t)-1, &why);
	if (why != NULL && g->n > 0 && g->size == g->pos[g->n - 1] &&
	    g->size > 0) {
		/* The frame the index points at is bad, but an index entry is
		 * written only after its frame: the index is what lies.  Scan
		 * everything. */
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: index of segment %" PRId64
		            " does not match the data (%s); rebuilding it",
		            l->dir, g->base, why);
		rc = seg_scan(s, g, fd, (uint64_t)st.st_size, (size_t)-1,
		              &why);
		rebuilt = 1;
	} else if (on_disk != g->n || loaded != g->n) {
		/* Missing, cut short, garbage, or behind the data. */
		rebuilt = 1;
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: index of segment %" PRId64
		            " rebuilt (%zu good entries on disk, %zu wanted)",
		            l->dir, g->base, loaded, g->n);
	}
	if (rc != 0) {
		/* A read error is not damage: refuse this log, keep data. */
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: %s: cannot read segment %" PRId64
		            ": %s", l->dir, g->base, fs_api->strerror(rc));
		close(fd);
		*err = rc;
		return -1;
	}
	if (rebuilt && !l->rdonly)
		idx_store(s, l, g, 0);
	if (why != NULL || g->size < (uint64_t)st.st_size)
		*cut_why = why ? why : "trailing bytes";
	return fd;
}

/* Create an empty segment at base and make it the active one: its files,
 * its directory entry durable (an ack may depend on it). */
static int seg_create(struct fs *s, struct flog *l, int64_t base)
{
	struct seg *g = seg_new(s, base);
	char *p = seg_path(l, base, ".log");
	struct seg **ns;
	int rc = PMQ_OK;

	if (g == NULL || p == NULL) {
		free(p);
		seg_free(s, g);
		return PMQ_ERR_NOMEM;
	}
	if (l->nsegs == l->capsegs) {
		size_t nc = l->capsegs ? l->capsegs * 2 : 8;

		ns = realloc(l->segs, nc * sizeof(*ns));
		if (ns == NULL) {
			free(p);
			seg_free(s, g);
			return PMQ_ERR_NOMEM;
		}
		l->segs = ns;
		l->capsegs = nc;
	}
	do
		g->fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	while (g->fd < 0 && errno == EINTR);
	if (g->fd < 0) {
		rc = -errno;
		goto fail;
	}
	g->ifd = idx_open(s, l, g, ".index", 1);
	g->tfd = idx_open(s, l, g, ".timeindex", 1);
	g->index_broken = g->ifd < 0 || g->tfd < 0;
	rc = fs_sync_dir(s, l->dir);
	if (rc != 0)
		goto fail;
	free(p);
	l->segs[l->nsegs++] = g;
	return PMQ_OK;
fail:
	fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
	            "file storage: %s: cannot create segment: %s", p,
	            strerror(-rc));
	seg_free(s, g);
	unlink(p);
	free(p);
	return fs_errno_err(-rc);
}

/* Delete the files of the segment at base. */
static void seg_unlink(struct fs *s, struct flog *l, int64_t base)
{
	static const char *const ext[] = {".log", ".index", ".timeindex"};
	size_t k;

	for (k = 0; k < 3; k++) {
		char *p = seg_path(l, base, ext[k]);

		if (p != NULL && unlink(p) != 0 && errno != ENOENT)
			fs_api->log(fs_inst(s), PMQ_LOG_WARN,
			            "file storage: %s: %s", p, strerror(errno));
		free(p);
	}
}

/* Delete segment i's files and drop it from the log. */
static void seg_delete(struct fs *s, struct flog *l, size_t i)
{
	struct seg *g = l->segs[i];

	seg_close_fds(s, g, 0);
	if (!l->rdonly) /* read-only: only forgotten */
		seg_unlink(s, l, g->base);
	seg_free(s, g);
	memmove(&l->segs[i], &l->segs[i + 1],
	        (l->nsegs - i - 1) * sizeof(*l->segs));
	l->nsegs--;
}

/* ---- the log start checkpoint ---- */

static int64_t start_load(struct fs *s, const struct flog *l)
{
	char *p = fs_path(l->dir, "start");
	unsigned char *b;
	size_t n = 0;
	int64_t v = -1;

	if (p == NULL)
		return -1;
	b = slurp(p, &n);
	if (b != NULL && n == 16 && fs_get32(b) == START_MAGIC &&
	    fs_get32(b + 4) == fs_crc32c(0, b + 8, 8))
		v = (int64_t)fs_get64(b + 8);
	else if (b != NULL)
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: damaged; the log starts at its "
		            "first segment", p);
	free(b);
	free(p);
	return v;
}

/* Atomic replace: write start.tmp, fsync, rename, fsync the directory. */
static int start_store(struct fs *s, const struct flog *l, int64_t v)
{
	char *tmp = fs_path(l->dir, "start.tmp");
	char *p = fs_path(l->dir, "start");
	unsigned char b[16];
	int fd = -1, rc = 0;

	if (tmp == NULL || p == NULL) {
		rc = -ENOMEM;
		goto out;
	}
	fs_put32(b, START_MAGIC);
	fs_put64(b + 8, (uint64_t)v);
	fs_put32(b + 4, fs_crc32c(0, b + 8, 8));
	do
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		rc = -errno;
		goto out;
	}
	rc = fs_pwrite_full(fd, b, sizeof(b), 0);
	if (rc == 0 && fs_policy(s) != STORECFG_FSYNC_NEVER)
		rc = fs_sync_fd(s, fd);
	close(fd);
	if (rc == 0 && rename(tmp, p) != 0)
		rc = -errno;
	if (rc == 0)
		rc = fs_sync_dir(s, l->dir);
	if (rc != 0)
		unlink(tmp);
out:
	if (rc != 0)
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: %s: cannot store the log start: %s",
		            l->dir, strerror(-rc));
	free(tmp);
	free(p);
	return rc ? fs_errno_err(-rc) : PMQ_OK;
}

/* ---- open and recover ---- */

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

/* The bases of the "<20 digits>.log" files in dir, sorted (new array in
 * *out), removing leftover temporary files. */
static int list_bases(const char *dir, int rdonly, int64_t **out, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int64_t *v = NULL;
	size_t cap = 0;

	*n = 0;
	if (d == NULL)
		return fs_errno_err(errno);
	while ((de = readdir(d)) != NULL) {
		const char *nm = de->d_name;
		size_t len = strlen(nm), i;
		int64_t b = 0;

		if (len > 4 && !strcmp(nm + len - 4, ".tmp")) {
			char *p = rdonly ? NULL : fs_path(dir, nm);

			if (p)
				unlink(p);
			free(p);
			continue;
		}
		if (len != 24 || strcmp(nm + 20, ".log"))
			continue;
		for (i = 0; i < 20 && nm[i] >= '0' && nm[i] <= '9'; i++)
			b = b * 10 + (nm[i] - '0');
		if (i != 20 || b < 0)
			continue;
		if (*n == cap) {
			int64_t *nv;

			cap = cap ? cap * 2 : 16;
			nv = realloc(v, cap * sizeof(*v));
			if (nv == NULL) {
				free(v);
				closedir(d);
				return PMQ_ERR_NOMEM;
			}
			v = nv;
		}
		v[(*n)++] = b;
	}
	closedir(d);
	if (*n)
		qsort(v, *n, sizeof(*v), cmp_i64);
	*out = v;
	return PMQ_OK;
}

struct flog *flog_open(struct fs *s, const char *logs_dir, const char *topic,
                       int32_t partition, int *err)
{
	struct flog *l = calloc(1, sizeof(*l));
	char *name = flog_dirname(topic, partition);
	int64_t *bases = NULL, ckpt;
	size_t nb = 0, i;
	int rc;

	if (l == NULL || name == NULL) {
		if (name == NULL)
			fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
			            "file storage: topic name too long for a "
			            "directory: %.64s...", topic);
		*err = name == NULL && l != NULL ? PMQ_ERR_INVAL
		                                 : PMQ_ERR_NOMEM;
		free(l);
		free(name);
		return NULL;
	}
	l->partition = partition;
	l->topic = strdup(topic);
	l->dir = fs_path(logs_dir, name);
	free(name);
	if (l->topic == NULL || l->dir == NULL) {
		rc = PMQ_ERR_NOMEM;
		goto fail;
	}
	l->rdonly = fs_rdonly(s);
	if (l->rdonly) {
		struct stat st;

		int sr = stat(l->dir, &st);

		if (sr != 0 && errno != ENOENT) {
			rc = fs_errno_err(errno);
			fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
			            "file storage: %s: %s", l->dir,
			            strerror(errno));
			goto fail;
		}
		if (sr != 0 || !S_ISDIR(st.st_mode)) {
			/* A new log cannot be created. */
			rc = PMQ_ERR_RDONLY;
			fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
			            "file storage: %s: cannot create a log: "
			            "the store is read-only", l->dir);
			goto fail;
		}
	} else if (mkdir(l->dir, 0755) == 0) {
		fs_sync_dir(s, logs_dir);
	} else if (errno != EEXIST) {
		rc = fs_errno_err(errno);
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR, "file storage: %s: %s",
		            l->dir, strerror(errno));
		goto fail;
	}
	rc = list_bases(l->dir, l->rdonly, &bases, &nb);
	if (rc != PMQ_OK)
		goto fail;
	ckpt = start_load(s, l);
	for (i = 0; i < nb; i++) {
		struct seg *g = seg_new(s, bases[i]);
		const char *why;
		uint64_t fsize = 0;
		int fd, last = i + 1 == nb;

		if (g == NULL) {
			rc = PMQ_ERR_NOMEM;
			goto fail;
		}
		fd = seg_load(s, l, g, &why, &fsize, &rc);
		if (fd < 0) {
			seg_free(s, g);
			goto fail;
		}
		if (!last && why == NULL && g->end != bases[i + 1])
			why = "the next segment does not follow";
		if (why != NULL) {
			/* A damaged middle segment ends the log there:
			 * offsets after a hole cannot be served. */
			if (!last)
				fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
				            "file storage: %s: segment %" PRId64
				            " is damaged (%s); dropping the %zu "
				            "segment(s) after it%s",
				            l->dir, g->base, why, nb - i - 1,
				            l->rdonly ? " (read-only: ignored, "
				                        "left on disk)" : "");
			if (g->size < fsize && l->rdonly)
				fs_api->log(fs_inst(s), PMQ_LOG_WARN,
				            "file storage: %s/%020" PRId64
				            ".log: ignoring %" PRIu64 " bytes at "
				            "position %" PRIu64 " (%s); log ends at "
				            "%" PRId64 " (read-only: not cut)",
				            l->dir, g->base, fsize - g->size,
				            g->size, why, g->end);
			else if (g->size < fsize)
				seg_cut(s, l, g, fd, fsize, why);
		}
		if (l->nsegs == l->capsegs) {
			size_t nc = l->capsegs ? l->capsegs * 2 : 8;
			struct seg **ns = realloc(l->segs, nc * sizeof(*ns));

			if (ns == NULL) {
				close(fd);
				seg_free(s, g);
				rc = PMQ_ERR_NOMEM;
				goto fail;
			}
			l->segs = ns;
			l->capsegs = nc;
		}
		l->segs[l->nsegs++] = g;
		if (why != NULL && !last) {
			size_t k;

			for (k = i + 1; k < nb && !l->rdonly; k++)
				seg_unlink(s, l, bases[k]);
			last = 1;
			nb = i + 1;
		}
		if (last && l->rdonly) {
			/* Reads only: no index files to keep writing. */
			g->fd = fd;
			g->index_broken = 1;
		} else if (last) {
			g->fd = fd;
			g->ifd = idx_open(s, l, g, ".index", 0);
			g->tfd = idx_open(s, l, g, ".timeindex", 0);
			g->index_broken = g->ifd < 0 || g->tfd < 0;
			if (!g->index_broken) {
				/* Drop entries past a cut. */
				if (ftruncate(g->ifd, (off_t)(g->n * IDX_ENTRY)) ||
				    ftruncate(g->tfd, (off_t)(g->n * IDX_ENTRY)))
					g->index_broken = 1;
			}
		} else {
			close(fd);
		}
	}
	free(bases);
	bases = NULL;
	if (l->nsegs == 0 && l->rdonly) {
		/* An empty log, in memory only. */
		struct seg *g = seg_new(s, ckpt > 0 ? ckpt : 0);
		struct seg **ns = g ? realloc(l->segs, 8 * sizeof(*ns)) : NULL;

		if (ns == NULL) {
			seg_free(s, g);
			rc = PMQ_ERR_NOMEM;
			goto fail;
		}
		l->segs = ns;
		l->capsegs = 8;
		l->segs[l->nsegs++] = g;
	} else if (l->nsegs == 0) {
		rc = seg_create(s, l, ckpt > 0 ? ckpt : 0);
		if (rc != PMQ_OK)
			goto fail;
	}
	l->start = l->segs[0]->base;
	if (ckpt > l->start)
		l->start = ckpt;
	if (l->start > flog_end(l))
		l->start = flog_end(l);
	/* Segments wholly before the start: a trim that stopped short. */
	while (l->nsegs > 1 && l->segs[0]->end <= l->start)
		seg_delete(s, l, 0);
	l->refs = 1;
	*err = PMQ_OK;
	return l;
fail:
	free(bases);
	flog_free(s, l);
	*err = rc;
	return NULL;
}

void flog_free(struct fs *s, struct flog *l)
{
	size_t i;

	if (l == NULL)
		return;
	for (i = 0; i < l->nsegs; i++)
		seg_free(s, l->segs[i]);
	free(l->segs);
	free(l->topic);
	free(l->dir);
	free(l);
}

int64_t flog_end(const struct flog *l)
{
	return l->nsegs ? l->segs[l->nsegs - 1]->end : 0;
}

/* ---- writes ---- */

int flog_append(struct fs *s, struct flog *l, const struct pmq_batch_meta *m,
                unsigned char *frame, size_t len, uint64_t *file_id)
{
	struct seg *g = l->segs[l->nsegs - 1];
	size_t flen = FS_FRAME_HDR + len;
	int rc;

	if (l->failed)
		return l->failed;
	if (l->rdonly)
		return PMQ_ERR_RDONLY;
	if (m->base_offset != g->end) {
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: %s: batch base %" PRId64
		            ", log end %" PRId64, l->dir, m->base_offset,
		            g->end);
		return PMQ_ERR_INVAL;
	}
	if (len > MAX_FRAME)
		return PMQ_ERR_INVAL;
	if (g->size > 0 && g->size + flen > fs_segment_bytes(s)) {
		rc = seg_create(s, l, g->end);
		if (rc != PMQ_OK)
			return rc;
		/* The old segment is complete: sync it before closing so
		 * the group's fsync result covers it. */
		seg_close_fds(s, g, 1);
		g = l->segs[l->nsegs - 1];
	}
	fs_put32(frame, FS_FRAME_MAGIC);
	fs_put32(frame + 8, (uint32_t)len);
	fs_put32(frame + 12, m->records);
	fs_put64(frame + 16, (uint64_t)m->base_offset);
	fs_put64(frame + 24, (uint64_t)m->first_timestamp_ms);
	fs_put64(frame + 32, (uint64_t)m->max_timestamp_ms);
	fs_put32(frame + 4, fs_crc32c(0, frame + 8, flen - 8));
	rc = fs_dirty_add(s, g->id, g->fd);
	if (rc == 0)
		rc = fs_pwrite_full(g->fd, frame, flen, (off_t)g->size);
	if (rc != 0) {
		int t;

		/* Leave nothing of a failed append: later appends and
		 * recovery see the file as it was. */
		do
			t = ftruncate(g->fd, (off_t)g->size);
		while (t != 0 && errno == EINTR);
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: %s: append at %" PRId64 ": %s",
		            l->dir, m->base_offset, strerror(-rc));
		return fs_errno_err(-rc);
	}
	if (g->n == 0 || g->since >= fs_index_interval(s)) {
		if (idx_push(g, m->base_offset, g->size, g->max_ts) ==
		    PMQ_OK) {
			idx_write(s, l, g, g->n - 1);
			g->since = 0;
		}
	}
	g->since += flen;
	g->size += flen;
	g->end = m->base_offset + m->records;
	if (m->max_timestamp_ms > g->max_ts)
		g->max_ts = m->max_timestamp_ms;
	*file_id = g->id;
	return PMQ_OK;
}

/* Index of the segment holding offset (the last with base <= offset). */
static size_t seg_find(const struct flog *l, int64_t offset)
{
	size_t lo = 0, hi = l->nsegs;

	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (l->segs[mid]->base <= offset)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* Index entry to start a scan for offset in g (the last with off <=
 * offset), or (size_t)-1 when g has none. */
static size_t idx_find(const struct seg *g, int64_t offset)
{
	size_t lo = 0, hi = g->n;

	if (g->n == 0)
		return (size_t)-1;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;

		if (g->off[mid] <= offset)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* g's cached read-only fd, opened on first use (writer): -errno when it
 * cannot be opened (logged).  Opening one more than FS_RFD_MAX in the log
 * closes the least recently used other one. */
static int seg_rfd(struct fs *s, struct flog *l, struct seg *g)
{
	struct seg *lru = NULL;
	size_t i, open_n = 0;
	char *p;
	int fd;

	g->rfd_used = ++l->rfd_tick;
	if (g->rfd >= 0)
		return g->rfd;
	for (i = 0; i < l->nsegs; i++) {
		struct seg *o = l->segs[i];

		if (o == g || o->rfd < 0)
			continue;
		open_n++;
		if (lru == NULL || o->rfd_used < lru->rfd_used)
			lru = o;
	}
	if (open_n >= FS_RFD_MAX && lru != NULL)
		seg_close_rfd(lru);
	p = seg_path(l, g->base, ".log");
	if (p == NULL)
		return -ENOMEM;
	do
		fd = open(p, O_RDONLY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	if (fd < 0) {
		fd = -errno;
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR, "file storage: %s: %s",
		            p, strerror(errno));
		free(p);
		return fd;
	}
	free(p);
	/* A fresh descriptor starts the kernel's read-ahead small: say the
	 * reads are sequential so a cold segment is read in big steps.  The
	 * state lives in the open file description, which this cached fd
	 * (and the dups answers hold) keeps from one read to the next.
	 * Advice only: a failure changes nothing. */
	(void)posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	g->rfd = fd;
	return fd;
}

/* The segment's .log for reading: the active segment's own fd (no extra
 * fd for the tail most reads hit), else the cached read fd. */
static int seg_fd(struct fs *s, struct flog *l, struct seg *g)
{
	return g->fd >= 0 ? g->fd : seg_rfd(s, l, g);
}

static void corrupt(struct fs *s, struct flog *l, struct seg *g,
                    uint64_t pos, const char *why)
{
	fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
	            "file storage: %s/%020" PRId64 ".log: position %" PRIu64
	            ": %s", l->dir, g->base, pos, why);
}

/* Bytes of frames (headers included) from position pos of segment si to
 * the end of the log: an upper bound of what a read from there returns. */
static uint64_t log_bytes_from(const struct flog *l, size_t si, uint64_t pos)
{
	uint64_t n = 0;

	for (; si < l->nsegs; si++) {
		uint64_t sz = l->segs[si]->size;

		n += sz > pos ? sz - pos : 0;
		pos = 0;
	}
	return n;
}

/* Frames at least this long are read straight into the result: through
 * the 64 KiB read buffer they would be read (and copied) twice.  In an
 * extents answer (zero_copy = yes) they stay in the file. */
#define READ_DIRECT_MIN 65536u

/* The read window after a big frame: enough for the next header (and a
 * few small frames), without reading 64 KiB of a big frame's data that
 * is read directly, or not at all. */
#define READ_WIN_AFTER_BIG 4096u

/* Copy the data of the frame at pos (header h, already checked but for
 * the CRC) to dst and check the CRC.  A big frame is pread straight into
 * dst; a small one comes through rb, so a run of small batches costs one
 * pread per 64 KiB, not one per batch.  Returns 0, or -1 with *why set
 * as frame_at does (and *err on an I/O error). */
static int frame_copy(struct fs_rbuf *rb, uint64_t pos,
                      const unsigned char *h, unsigned char *dst,
                      const char **why, int *err)
{
	uint32_t len = fs_get32(h + 8), crc;
	ssize_t got;

	if (len < READ_DIRECT_MIN) {
		h = frame_at(rb, pos, (int64_t)fs_get64(h + 16), 1, why, err);
		if (h == NULL)
			return -1;
		memcpy(dst, h + FS_FRAME_HDR, len);
		return 0;
	}
	/* h lives in rb, which the direct pread leaves alone. */
	crc = fs_crc32c(0, h + 8, FS_FRAME_HDR - 8);
	got = fs_pread_full(rb->fd, dst, len, (off_t)(pos + FS_FRAME_HDR));
	if (got < 0) {
		*err = fs_errno_err((int)-got);
		*why = "read error";
		return -1;
	}
	if ((size_t)got < len) { /* the file shrank under us */
		*why = "torn batch";
		return -1;
	}
	if (fs_crc32c(crc, dst, len) != fs_get32(h + 4)) {
		*why = "bad CRC";
		return -1;
	}
	return 0;
}

/* One read in progress: what read_walk hands to the taker of each frame
 * it selects. */
struct rd {
	struct fs *s;
	struct flog *l;
	size_t si;          /* segment of the frame being taken */
	struct fs_rbuf *rb; /* its read window */
	size_t max_bytes;
	size_t total;       /* batch bytes taken so far */
	/* flog_read: the result */
	unsigned char *buf;
	size_t cap;
	/* flog_read_extents: the answer, and the dup of segment dup_si's
	 * read fd its file pieces use (-1: none yet) */
	struct fs_extents *x;
	int dup_fd;
	size_t dup_si;
};

/* Takes the frame at pos (header h, checked but for the CRC): PMQ_OK, or
 * an error with *why set when the frame is bad (logged by the caller). */
typedef int (*take_fn)(struct rd *r, uint64_t pos, const unsigned char *h,
                       const char **why, int *err);

/*
 * The batch selection of log_read, shared by both reads: whole batches from
 * the one holding offset, until one more would pass max_bytes (at least
 * one), never one at or past limit; PMQ_ERR_RANGE outside [start, end];
 * nothing at the end.  Every frame's header is checked on the way (magic,
 * length, records, base offset chain, inside the segment); take() gets
 * the selected ones.
 */
static int read_walk(struct rd *r, int64_t offset, int64_t limit,
                     take_fn take)
{
	struct fs *s = r->s;
	struct flog *l = r->l;
	size_t si;
	int first = 1, rc = PMQ_OK, done = 0;

	if (offset < l->start || offset > flog_end(l))
		return PMQ_ERR_RANGE;
	if (offset == flog_end(l) || offset >= limit)
		return PMQ_OK;
	for (si = seg_find(l, offset); si < l->nsegs && !done; si++) {
		struct seg *g = l->segs[si];
		struct fs_rbuf rb = {.fsize = g->size};
		size_t e = first ? idx_find(g, offset) : (size_t)-1;
		uint64_t pos = e == (size_t)-1 ? 0 : g->pos[e];
		int64_t want = e == (size_t)-1 ? g->base : g->off[e];
		int err = 0, big = 0;

		first = 0;
		if (g->size == 0)
			continue;
		rb.fd = seg_fd(s, l, g);
		if (rb.fd < 0) {
			rc = fs_errno_err(-rb.fd);
			break;
		}
		r->si = si;
		r->rb = &rb;
		while (pos < g->size) {
			const char *why = NULL;
			const unsigned char *h;
			uint32_t len, recs;

			/* A batch at or past the limit is not even looked at
			 * (offset < limit, so it is never one to skip): a bad
			 * frame beyond the high watermark fails no read. */
			if (want >= limit) {
				done = 1;
				break;
			}
			rb.win = big ? READ_WIN_AFTER_BIG : 0;
			/* Skipping costs no CRC: only returned bytes. */
			h = frame_at(&rb, pos, want, 0, &why, &err);
			if (h == NULL) {
				corrupt(s, l, g, pos, why);
				rc = err ? err : PMQ_ERR_CORRUPT;
				done = 1;
				break;
			}
			len = fs_get32(h + 8);
			recs = fs_get32(h + 12);
			big = len >= READ_DIRECT_MIN;
			if (want + recs <= offset) {
				want += recs;
				pos += FS_FRAME_HDR + len;
				continue;
			}
			if (r->total > 0 && r->total + len > r->max_bytes) {
				done = 1;
				break;
			}
			rc = take(r, pos, h, &why, &err);
			if (rc != PMQ_OK) {
				if (why != NULL)
					corrupt(s, l, g, pos, why);
				done = 1;
				break;
			}
			r->total += len;
			want += recs;
			pos += FS_FRAME_HDR + len;
		}
		fs_rbuf_free(&rb);
		r->rb = NULL;
	}
	return rc;
}

/* Make room for need bytes in *buf (capacity *cap) for the frame at pos.
 * The first allocation is sized for the whole answer (at most first, at
 * most what the log holds past pos), so big reads never realloc-copy;
 * later ones double. */
static int rd_grow(struct rd *r, unsigned char **buf, size_t *cap,
                   size_t need, uint64_t pos, size_t first)
{
	size_t nc;
	unsigned char *nb;

	if (need <= *cap)
		return PMQ_OK;
	if (*cap > 0) {
		nc = *cap * 2;
	} else {
		uint64_t rest = log_bytes_from(r->l, r->si, pos);

		nc = (size_t)(rest < first ? rest : first);
	}
	if (nc < need)
		nc = need;
	nb = realloc(*buf, nc);
	if (nb == NULL)
		return PMQ_ERR_NOMEM;
	*buf = nb;
	*cap = nc;
	return PMQ_OK;
}

/* flog_read's taker: copy the frame's data (CRC checked) into r->buf. */
static int take_copy(struct rd *r, uint64_t pos, const unsigned char *h,
                     const char **why, int *err)
{
	uint32_t len = fs_get32(h + 8);

	if (rd_grow(r, &r->buf, &r->cap, r->total + len, pos,
	            r->max_bytes) != PMQ_OK)
		return PMQ_ERR_NOMEM;
	if (frame_copy(r->rb, pos, h, r->buf + r->total, why, err) < 0)
		return *err ? *err : PMQ_ERR_CORRUPT;
	return PMQ_OK;
}

int flog_read(struct fs *s, struct flog *l, int64_t offset, size_t max_bytes,
              int64_t limit, unsigned char **out, size_t *out_len)
{
	struct rd r = {.s = s, .l = l, .max_bytes = max_bytes, .dup_fd = -1};
	int rc;

	*out = NULL;
	*out_len = 0;
	rc = read_walk(&r, offset, limit, take_copy);
	if (rc != PMQ_OK) {
		free(r.buf);
		return rc;
	}
	*out = r.buf;
	*out_len = r.total;
	return PMQ_OK;
}

/* ---- zero-copy reads ---- */

/* A log_read_extents answer.  x comes first: the host is given &x and
 * flog_extents_free gets it back. */
struct fs_extents {
	struct pmq_extents x;
	struct pmq_extent *v; /* x.v; a memory piece's data is an offset
	                         into mem (in pos) until the answer is done */
	size_t nv, capv;
	unsigned char *mem; /* every memory piece's bytes */
	size_t mem_len, mem_cap;
	int *fds; /* owned: one dup per segment with a file piece */
	size_t nfds, capfds;
};

void flog_extents_free(void *p)
{
	struct fs_extents *a = p;
	size_t i;

	if (a == NULL)
		return;
	/* Read-only fds: close cannot lose data, so its result says
	 * nothing worth acting on. */
	for (i = 0; i < a->nfds; i++)
		(void)close(a->fds[i]);
	free(a->fds);
	free(a->v);
	free(a->mem);
	free(a);
}

/* Append a piece (fd < 0: memory at offset pos of a->mem). */
static int x_push(struct fs_extents *a, int fd, uint64_t pos, uint32_t len)
{
	if (a->nv == a->capv) {
		size_t nc = a->capv ? a->capv * 2 : 16;
		struct pmq_extent *nv = realloc(a->v, nc * sizeof(*nv));

		if (nv == NULL)
			return PMQ_ERR_NOMEM;
		a->v = nv;
		a->capv = nc;
	}
	a->v[a->nv].data = NULL;
	a->v[a->nv].pos = (int64_t)pos;
	a->v[a->nv].len = len;
	a->v[a->nv].fd = fd;
	a->nv++;
	return PMQ_OK;
}

/* The answer's dup of segment r->si's read fd: -1 with *rc set when none
 * can be made (PMQ_OK when only fds ran out: the caller copies). */
static int x_dup(struct rd *r, int *rc)
{
	struct fs_extents *a = r->x;
	struct seg *g = r->l->segs[r->si];
	int fd, e;

	*rc = PMQ_OK;
	if (r->dup_fd >= 0 && r->dup_si == r->si)
		return r->dup_fd;
	if (a->nfds == a->capfds) {
		size_t nc = a->capfds ? a->capfds * 2 : 4;
		int *nf = realloc(a->fds, nc * sizeof(*nf));

		if (nf == NULL) {
			*rc = PMQ_ERR_NOMEM;
			return -1;
		}
		a->fds = nf;
		a->capfds = nc;
	}
	fd = seg_rfd(r->s, r->l, g);
	if (fd < 0) {
		*rc = fs_errno_err(-fd);
		return -1;
	}
	/* A dup, not a new open: it shares the open file description, so
	 * the read-ahead state built by earlier reads carries on, and it
	 * keeps the file readable after a trim or remove unlinks it. */
	fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (fd < 0) {
		e = errno;
		if (e == EMFILE || e == ENFILE)
			return -1; /* out of fds: copy this batch instead */
		fs_api->log(fs_inst(r->s), PMQ_LOG_ERROR,
		            "file storage: %s/%020" PRId64 ".log: dup: %s",
		            r->l->dir, g->base, strerror(e));
		*rc = fs_errno_err(e);
		return -1;
	}
	a->fds[a->nfds++] = fd;
	r->dup_fd = fd;
	r->dup_si = r->si;
	return fd;
}

/*
 * Read a file piece's pages into the page cache without copying them:
 * sendfile() to /dev/null makes the kernel read the pages (waiting for
 * the disk here, on the writer) and discard nothing but the pointers.
 * posix_fadvise(WILLNEED) alone would only start the reads and return,
 * leaving the host's sendfile on the loop thread to wait for them; it is
 * the fallback where sendfile from this file system or into /dev/null is
 * not supported (EINVAL, ENOSYS), and then the read goes on anyway.
 * Returns PMQ_OK or an error with *why (read error, or the file shorter
 * than the frame said).
 */
static int warm(struct fs *s, int fd, uint64_t pos, uint32_t len,
                const char **why)
{
	off_t off = (off_t)pos;
	size_t left = len;

	while (left > 0) {
		int dn = fs_devnull(s);
		ssize_t n;

		if (dn < 0) {
			/* Advice: a failure only costs speed. */
			(void)posix_fadvise(fd, off, (off_t)left,
			                    POSIX_FADV_WILLNEED);
			return PMQ_OK;
		}
		n = sendfile(dn, fd, &off, left);
		if (n > 0) {
			left -= (size_t)n; /* sendfile advanced off */
			continue;
		}
		if (n == 0) {
			*why = "torn batch"; /* the file shrank under us */
			return PMQ_ERR_CORRUPT;
		}
		if (errno == EINTR)
			continue;
		if (errno == EINVAL || errno == ENOSYS) {
			fs_devnull_unusable(s, errno);
			continue;
		}
		*why = "read error";
		return fs_errno_err(errno);
	}
	return PMQ_OK;
}

/* flog_read_extents' taker: a big frame (zero_copy) becomes a file piece,
 * its header already checked by read_walk and its CRC left to the
 * client; any other is copied with its CRC checked into a->mem, joining
 * the previous piece when that is memory too. */
static int take_extent(struct rd *r, uint64_t pos, const unsigned char *h,
                       const char **why, int *err)
{
	struct fs_extents *a = r->x;
	uint32_t len = fs_get32(h + 8);
	struct pmq_extent *last;
	int rc;

	if (len >= READ_DIRECT_MIN && fs_zero_copy(r->s)) {
		int fd = x_dup(r, &rc);

		if (fd >= 0) {
			/* Warmed now, between header reads, so the disk sees
			 * one sequential pass. */
			rc = warm(r->s, fd, pos + FS_FRAME_HDR, len, why);
			if (rc == PMQ_OK)
				rc = x_push(a, fd, pos + FS_FRAME_HDR, len);
			return rc;
		}
		if (rc != PMQ_OK)
			return rc;
	}
	/* zero_copy = no: sized for the whole answer at once, as flog_read
	 * does.  Else big frames mostly stay in the file: start small. */
	if (rd_grow(r, &a->mem, &a->mem_cap, a->mem_len + len, pos,
	            fs_zero_copy(r->s) && r->max_bytes > (256u << 10) ?
	            256u << 10 : r->max_bytes) != PMQ_OK)
		return PMQ_ERR_NOMEM;
	if (frame_copy(r->rb, pos, h, a->mem + a->mem_len, why, err) < 0)
		return *err ? *err : PMQ_ERR_CORRUPT;
	last = a->nv ? &a->v[a->nv - 1] : NULL;
	if (last != NULL && last->fd < 0 &&
	    (uint64_t)last->pos + last->len == a->mem_len &&
	    (uint64_t)last->len + len <= UINT32_MAX)
		last->len += len;
	else if ((rc = x_push(a, -1, a->mem_len, len)) != PMQ_OK)
		return rc;
	a->mem_len += len;
	return PMQ_OK;
}

int flog_read_extents(struct fs *s, struct flog *l, int64_t offset,
                      size_t max_bytes, int64_t limit,
                      struct pmq_extents **out, size_t *out_len)
{
	struct rd r = {.s = s, .l = l, .max_bytes = max_bytes, .dup_fd = -1};
	struct fs_extents *a = calloc(1, sizeof(*a));
	size_t i;
	int rc;

	*out = NULL;
	*out_len = 0;
	if (a == NULL)
		return PMQ_ERR_NOMEM;
	r.x = a;
	rc = read_walk(&r, offset, limit, take_extent);
	/* mem is where it will stay: point the memory pieces at it. */
	for (i = 0; rc == PMQ_OK && i < a->nv; i++) {
		if (a->v[i].fd < 0) {
			a->v[i].data = a->mem + a->v[i].pos;
			a->v[i].pos = 0;
		}
	}
	if (rc != PMQ_OK || a->nv == 0) {
		/* Empty: no answer at all, like log_read's. */
		flog_extents_free(a);
		return rc;
	}
	a->x.size = sizeof(a->x);
	a->x.n = (uint32_t)a->nv;
	a->x.v = a->v;
	*out = &a->x;
	*out_len = r.total;
	return PMQ_OK;
}

/* Base of the batch holding offset (start <= offset < end). */
static int batch_base(struct fs *s, struct flog *l, int64_t offset,
                      int64_t *base)
{
	struct seg *g = l->segs[seg_find(l, offset)];
	struct fs_rbuf rb = {.fsize = g->size};
	size_t e = idx_find(g, offset);
	uint64_t pos = e == (size_t)-1 ? 0 : g->pos[e];
	int64_t want = e == (size_t)-1 ? g->base : g->off[e];
	int err = 0, rc = PMQ_ERR_CORRUPT;

	rb.fd = seg_fd(s, l, g);
	if (rb.fd < 0)
		return fs_errno_err(-rb.fd);
	while (pos < g->size) {
		const char *why;
		const unsigned char *h = frame_at(&rb, pos, want, 0, &why, &err);

		if (h == NULL) {
			corrupt(s, l, g, pos, why);
			rc = err ? err : PMQ_ERR_CORRUPT;
			break;
		}
		if (want + fs_get32(h + 12) > offset) {
			*base = want;
			rc = PMQ_OK;
			break;
		}
		want += fs_get32(h + 12);
		pos += FS_FRAME_HDR + fs_get32(h + 8);
	}
	fs_rbuf_free(&rb);
	return rc;
}

int flog_trim(struct fs *s, struct flog *l, int64_t new_start, int64_t *value)
{
	int64_t end = flog_end(l), ns = end;
	struct seg *g;
	size_t before;
	int rc;

	*value = l->start;
	if (l->rdonly)
		return PMQ_ERR_RDONLY;
	if (new_start > end)
		return PMQ_ERR_RANGE;
	if (new_start <= l->start)
		return PMQ_OK;
	if (new_start < end) {
		rc = batch_base(s, l, new_start, &ns);
		if (rc != PMQ_OK)
			return rc;
	}
	if (ns <= l->start)
		return PMQ_OK;
	/* The checkpoint first: a crash before the deletes only leaves
	 * files that the next open deletes. */
	rc = start_store(s, l, ns);
	if (rc != PMQ_OK)
		return rc;
	l->start = ns;
	*value = ns;
	g = l->segs[l->nsegs - 1];
	if (g->end <= ns && g->size > 0) {
		/* Everything goes: an empty segment keeps the end offset. */
		if (seg_create(s, l, g->end) == PMQ_OK)
			seg_close_fds(s, g, 1);
	}
	before = l->nsegs;
	while (l->nsegs > 1 && l->segs[0]->end <= ns)
		seg_delete(s, l, 0);
	if (l->nsegs != before)
		fs_sync_dir(s, l->dir);
	return PMQ_OK;
}

int flog_remove(struct fs *s, struct flog *l)
{
	size_t n = strlen(l->dir);
	char *gone = malloc(n + 10);
	char *parent;
	int rc = 0;

	if (l->rdonly) {
		free(gone);
		return PMQ_ERR_RDONLY;
	}
	if (gone == NULL)
		return PMQ_ERR_NOMEM;
	for (size_t i = 0; i < l->nsegs; i++) {
		seg_close_fds(s, l->segs[i], 0);
		seg_close_rfd(l->segs[i]);
	}
	/* Rename first (atomic), so a crash never leaves half a log that
	 * looks whole; start-up deletes "*.deleting". */
	memcpy(gone, l->dir, n);
	memcpy(gone + n, ".deleting", 10);
	fs_rmtree(gone);
	if (rename(l->dir, gone) != 0) {
		rc = -errno;
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: cannot remove %s: %s", l->dir,
		            strerror(errno));
		free(gone);
		return fs_errno_err(-rc);
	}
	parent = strdup(l->dir);
	if (parent != NULL) {
		char *slash = strrchr(parent, '/');

		if (slash != NULL)
			*slash = '\0';
		fs_sync_dir(s, parent);
		free(parent);
	}
	rc = fs_rmtree(gone);
	if (rc != 0)
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: %s (left for the next start)",
		            gone, strerror(-rc));
	free(gone);
	return PMQ_OK;
}

int flog_time(struct fs *s, struct flog *l, int64_t ts, int64_t *value)
{
	size_t si;

	*value = -1;
	for (si = seg_find(l, l->start); si < l->nsegs; si++) {
		struct seg *g = l->segs[si];
		struct fs_rbuf rb = {.fsize = g->size};
		size_t e = (size_t)-1, k;
		uint64_t pos = 0;
		int64_t want = g->base;
		int err = 0, rc = PMQ_OK;

		if (g->size == 0 || g->max_ts < ts)
			continue;
		/* The last index entry whose earlier frames are all < ts. */
		for (k = 0; k < g->n && g->tpre[k] < ts; k++)
			e = k;
		if (e != (size_t)-1) {
			pos = g->pos[e];
			want = g->off[e];
		}
		rb.fd = seg_fd(s, l, g);
		if (rb.fd < 0)
			return fs_errno_err(-rb.fd);
		while (pos < g->size) {
			const char *why;
			const unsigned char *h =
			    frame_at(&rb, pos, want, 0, &why, &err);

			if (h == NULL) {
				corrupt(s, l, g, pos, why);
				rc = err ? err : PMQ_ERR_CORRUPT;
				break;
			}
			if (want >= l->start &&
			    (int64_t)fs_get64(h + 32) >= ts) {
				*value = want;
				break;
			}
			want += fs_get32(h + 12);
			pos += FS_FRAME_HDR + fs_get32(h + 8);
		}
		fs_rbuf_free(&rb);
		if (rc != PMQ_OK || *value >= 0)
			return rc;
	}
	return PMQ_OK;
}
