/*
 * journal.c - key-value state of the file storage plugin: an in-memory map
 * (namespaces of keys sorted bytewise) that kv_get and kv_scan read, kept
 * durable by an append-only journal of checksummed records (kv.journal)
 * and compacted now and then into a snapshot (kv.snapshot) by atomic
 * replace.  At start the snapshot is loaded and the journal replayed on
 * top; a bad journal record ends the replay and the file is cut there.
 *
 * Writes change the map at submit time, on the loop thread, under the
 * store's mutex (kv_get must see submitted writes); the writer thread
 * appends the record later.  A record that cannot be stored is taken back
 * out of the map (fkv_undo_locked), so memory never claims what the disk
 * refused.
 *
 * Replaying a record twice is harmless (each is a whole put or delete), so
 * a crash between writing the snapshot and emptying the journal loses
 * nothing: the old journal replayed onto the new snapshot gives the same
 * map.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "file.h"

#define J_MAGIC "PMQKVJ1\n"
#define S_MAGIC "PMQKVS1\n"
#define REC_HDR 18 /* crc u32, blen u32, op u8, nslen u8, klen u32, vlen u32 */
#define OP_PUT 1
#define OP_DEL 2
#define OP_END 3 /* snapshot trailer: the snapshot is whole */
#define COMPACT_MIN (1u << 20)
#define COMPACT_RATIO 4

struct kent {
	unsigned char *key; /* owned; val points into the same block */
	size_t klen;
	unsigned char *val;
	size_t vlen;
};

struct kns {
	char *name; /* owned */
	struct kent *e;
	size_t n, cap;
};

struct fkv {
	struct kns *ns;
	size_t nns, capns;
	uint64_t live; /* bytes the live entries take as records */
	uint64_t jsize; /* journal bytes (writer) */
	int jfd;
	uint64_t id;
	char *dir, *jpath, *spath; /* owned */
	uint64_t pending; /* records submitted, not yet written; under mu */
};

struct fkv_undo {
	char *ns;
	unsigned char *key;
	size_t klen;
	int had;
	unsigned char *old; /* owned when had */
	size_t oldlen;
};

static uint64_t rec_size(size_t nslen, size_t klen, size_t vlen)
{
	return REC_HDR + nslen + klen + vlen;
}

/* ---- the map ---- */

static int key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
	int c = alen && blen ? memcmp(a, b, alen < blen ? alen : blen) : 0;

	if (c != 0)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static size_t kv_bound(const struct kns *ns, const void *key, size_t klen,
                       int after)
{
	size_t lo = 0, hi = ns->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(ns->e[mid].key, ns->e[mid].klen, key, klen);

		if (c < 0 || (after && c == 0))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static struct kns *ns_find(struct fkv *kv, const char *name, int create)
{
	struct kns *ns;
	size_t i;

	for (i = 0; i < kv->nns; i++)
		if (strcmp(kv->ns[i].name, name) == 0)
			return &kv->ns[i];
	if (!create)
		return NULL;
	if (kv->nns == kv->capns) {
		size_t nc = kv->capns ? kv->capns * 2 : 8;
		struct kns *n = realloc(kv->ns, nc * sizeof(*n));

		if (n == NULL)
			return NULL;
		kv->ns = n;
		kv->capns = nc;
	}
	ns = &kv->ns[kv->nns];
	memset(ns, 0, sizeof(*ns));
	ns->name = strdup(name);
	if (ns->name == NULL)
		return NULL;
	kv->nns++;
	return ns;
}

/* Set (val != NULL) or delete a key in the map. */
static int map_set(struct fkv *kv, const char *name, const void *key,
                   size_t klen, const void *val, size_t vlen)
{
	struct kns *ns = ns_find(kv, name, val != NULL);
	size_t i, nl = strlen(name);
	int found;

	if (ns == NULL)
		return val ? PMQ_ERR_NOMEM : PMQ_OK;
	i = kv_bound(ns, key, klen, 0);
	found = i < ns->n &&
	        key_cmp(ns->e[i].key, ns->e[i].klen, key, klen) == 0;
	if (val == NULL) {
		if (!found)
			return PMQ_OK;
		kv->live -= rec_size(nl, ns->e[i].klen, ns->e[i].vlen);
		free(ns->e[i].key);
		memmove(&ns->e[i], &ns->e[i + 1],
		        (ns->n - i - 1) * sizeof(*ns->e));
		ns->n--;
		return PMQ_OK;
	}
	unsigned char *blk = malloc(klen + vlen + 1);

	if (blk == NULL)
		return PMQ_ERR_NOMEM;
	if (!found) {
		if (ns->n == ns->cap) {
			size_t nc = ns->cap ? ns->cap * 2 : 16;
			struct kent *ne = realloc(ns->e, nc * sizeof(*ne));

			if (ne == NULL) {
				free(blk);
				return PMQ_ERR_NOMEM;
			}
			ns->e = ne;
			ns->cap = nc;
		}
		memmove(&ns->e[i + 1], &ns->e[i],
		        (ns->n - i) * sizeof(*ns->e));
		ns->n++;
	} else {
		kv->live -= rec_size(nl, ns->e[i].klen, ns->e[i].vlen);
		free(ns->e[i].key);
	}
	if (klen)
		memcpy(blk, key, klen);
	if (vlen)
		memcpy(blk + klen, val, vlen);
	ns->e[i].key = blk;
	ns->e[i].klen = klen;
	ns->e[i].val = blk + klen;
	ns->e[i].vlen = vlen;
	kv->live += rec_size(nl, klen, vlen);
	return PMQ_OK;
}

static const struct kent *map_get(struct fkv *kv, const char *name,
                                  const void *key, size_t klen)
{
	struct kns *ns = ns_find(kv, name, 0);
	size_t i;

	if (ns == NULL)
		return NULL;
	i = kv_bound(ns, key, klen, 0);
	if (i < ns->n && key_cmp(ns->e[i].key, ns->e[i].klen, key, klen) == 0)
		return &ns->e[i];
	return NULL;
}

/* ---- records ---- */

/* Encode a record into a new buffer. */
static unsigned char *rec_encode(int op, const char *ns, const void *key,
                                 size_t klen, const void *val, size_t vlen,
                                 size_t *len)
{
	size_t nl = strlen(ns);
	size_t n = (size_t)rec_size(nl, klen, vlen);
	unsigned char *r = malloc(n);

	if (r == NULL)
		return NULL;
	fs_put32(r + 4, (uint32_t)(n - 8));
	r[8] = (unsigned char)op;
	r[9] = (unsigned char)nl;
	fs_put32(r + 10, (uint32_t)klen);
	fs_put32(r + 14, (uint32_t)vlen);
	memcpy(r + REC_HDR, ns, nl);
	if (klen)
		memcpy(r + REC_HDR + nl, key, klen);
	if (vlen)
		memcpy(r + REC_HDR + nl + klen, val, vlen);
	fs_put32(r, fs_crc32c(0, r + 4, n - 4));
	*len = n;
	return r;
}

/* Replay the records of path from pos (after its magic) into the map.
 * Returns the end of the last good record in *good; *why says why it
 * stopped before EOF (NULL at a clean EOF, or after an END record). */
static int replay(struct fkv *kv, int fd, uint64_t fsize, uint64_t pos,
                  uint64_t *good, const char **why, int *ended)
{
	struct fs_rbuf rb = {.fd = fd, .fsize = fsize};
	int err = 0, rc = PMQ_OK;
	char name[256];

	*why = NULL;
	*ended = 0;
	while (pos < fsize) {
		const unsigned char *h = fs_rbuf_get(&rb, pos, REC_HDR, &err);
		uint32_t blen, klen, vlen;
		unsigned nl;

		if (h == NULL) {
			*why = err ? "read error" : "torn record header";
			break;
		}
		blen = fs_get32(h + 4);
		nl = h[9];
		klen = fs_get32(h + 10);
		vlen = fs_get32(h + 14);
		if (blen < REC_HDR - 8 || (uint64_t)blen !=
		        (uint64_t)REC_HDR - 8 + nl + klen + vlen ||
		    pos + 8 + blen > fsize) {
			*why = pos + 8 + blen > fsize && blen >= REC_HDR - 8
			           ? "torn record"
			           : "bad record length";
			break;
		}
		h = fs_rbuf_get(&rb, pos, 8 + (size_t)blen, &err);
		if (h == NULL) {
			*why = err ? "read error" : "torn record";
			break;
		}
		if (fs_crc32c(0, h + 4, 4 + (size_t)blen) != fs_get32(h)) {
			*why = "bad CRC";
			break;
		}
		if (h[8] == OP_END) {
			*ended = 1;
			pos += 8 + blen;
			break;
		}
		if ((h[8] != OP_PUT && h[8] != OP_DEL) || nl == 0 ||
		    (h[8] == OP_DEL && vlen)) {
			*why = "bad record";
			break;
		}
		memcpy(name, h + REC_HDR, nl);
		name[nl] = '\0';
		rc = map_set(kv, name, h + REC_HDR + nl, klen,
		             h[8] == OP_PUT ? h + REC_HDR + nl + klen
		                            : NULL,
		             vlen);
		if (rc != PMQ_OK)
			break;
		pos += 8 + blen;
	}
	if (err)
		rc = err;
	fs_rbuf_free(&rb);
	*good = pos;
	return rc;
}

/* ---- lifetime ---- */

struct fkv *fkv_new(void)
{
	struct fkv *kv = calloc(1, sizeof(*kv));

	if (kv != NULL)
		kv->jfd = -1;
	return kv;
}

void fkv_close(struct fkv *kv)
{
	if (kv->jfd >= 0)
		close(kv->jfd);
	kv->jfd = -1;
}

void fkv_free(struct fkv *kv)
{
	size_t i, j;

	if (kv == NULL)
		return;
	fkv_close(kv);
	for (i = 0; i < kv->nns; i++) {
		for (j = 0; j < kv->ns[i].n; j++)
			free(kv->ns[i].e[j].key);
		free(kv->ns[i].e);
		free(kv->ns[i].name);
	}
	free(kv->ns);
	free(kv->dir);
	free(kv->jpath);
	free(kv->spath);
	free(kv);
}

static int open_rw(const char *path, int flags)
{
	int fd;

	do
		fd = open(path, O_RDWR | O_CLOEXEC | flags, 0644);
	while (fd < 0 && errno == EINTR);
	return fd;
}

static int open_ro(const char *path)
{
	int fd;

	do
		fd = open(path, O_RDONLY | O_CLOEXEC);
	while (fd < 0 && errno == EINTR);
	return fd;
}

/* Write a fresh file (magic + body) to path by atomic replace. */
static int replace_file(struct fs *s, const char *path, const char *magic,
                        const unsigned char *body, size_t blen)
{
	size_t n = strlen(path);
	char *tmp = malloc(n + 5);
	int fd, rc;

	if (tmp == NULL)
		return -ENOMEM;
	memcpy(tmp, path, n);
	memcpy(tmp + n, ".tmp", 5);
	fd = open_rw(tmp, O_CREAT | O_TRUNC);
	if (fd < 0) {
		rc = -errno;
		free(tmp);
		return rc;
	}
	rc = fs_pwrite_full(fd, magic, 8, 0);
	if (rc == 0 && blen)
		rc = fs_pwrite_full(fd, body, blen, 8);
	/* Always synced, whatever the policy: a renamed file must never
	 * be seen empty. */
	if (rc == 0)
		rc = fs_sync_fd(s, fd);
	close(fd);
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -errno;
	if (rc != 0)
		unlink(tmp);
	free(tmp);
	return rc;
}

int fkv_open(struct fs *s, struct fkv *kv, const char *dir)
{
	struct stat st;
	char magic[8];
	const char *why;
	uint64_t good;
	int fd, ended, rc;

	kv->dir = strdup(dir);
	kv->jpath = fs_path(dir, "kv.journal");
	kv->spath = fs_path(dir, "kv.snapshot");
	kv->id = fs_new_file_id(s);
	if (kv->dir == NULL || kv->jpath == NULL || kv->spath == NULL)
		return PMQ_ERR_NOMEM;

	/* The snapshot: written whole and renamed, so damage here is a
	 * disk fault.  Keep what reads well and say so.  Only ever read
	 * through this fd. */
	fd = open_ro(kv->spath);
	if (fd >= 0) {
		if (fstat(fd, &st) != 0 ||
		    fs_pread_full(fd, magic, 8, 0) != 8 ||
		    memcmp(magic, S_MAGIC, 8) != 0) {
			fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
			            "file storage: %s: not a snapshot; ignored",
			            kv->spath);
		} else {
			rc = replay(kv, fd, (uint64_t)st.st_size, 8, &good,
			            &why, &ended);
			if (rc != PMQ_OK) {
				close(fd);
				return rc;
			}
			if (!ended)
				fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
				            "file storage: %s: damaged at "
				            "position %" PRIu64 " (%s); kept "
				            "what came before",
				            kv->spath, good,
				            why ? why : "no end record");
		}
		close(fd);
	} else if (errno != ENOENT) {
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR, "file storage: %s: %s",
		            kv->spath, strerror(errno));
		return fs_errno_err(errno);
	}

	fd = fs_rdonly(s) ? open_ro(kv->jpath) : open_rw(kv->jpath, 0);
	if (fd < 0 && !fs_rdonly(s) && (errno == EROFS || errno == EACCES)) {
		fs_set_rdonly(s, kv->jpath, errno);
		fd = open_ro(kv->jpath);
	}
	if (fd < 0 && errno != ENOENT) {
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR, "file storage: %s: %s",
		            kv->jpath, strerror(errno));
		return fs_errno_err(errno);
	}
	if (fd >= 0 && (fstat(fd, &st) != 0 || st.st_size < 8 ||
	                fs_pread_full(fd, magic, 8, 0) != 8 ||
	                memcmp(magic, J_MAGIC, 8) != 0)) {
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: no journal header (%lld bytes); "
		            "%s", kv->jpath, (long long)st.st_size,
		            fs_rdonly(s) ? "ignored (read-only)"
		                         : "starting a new journal");
		close(fd);
		fd = -1;
	}
	if (fd < 0 && fs_rdonly(s)) {
		/* Nothing to replay, and nothing may be created. */
		kv->jfd = -1;
		kv->jsize = 0;
		return PMQ_OK;
	}
	if (fd < 0) {
		rc = replace_file(s, kv->jpath, J_MAGIC, NULL, 0);
		if (rc == 0)
			rc = fs_sync_dir(s, dir);
		if (rc != 0) {
			fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
			            "file storage: %s: %s", kv->jpath,
			            strerror(-rc));
			return fs_errno_err(-rc);
		}
		fd = open_rw(kv->jpath, 0);
		if (fd < 0 || fstat(fd, &st) != 0) {
			rc = fs_errno_err(errno);
			if (fd >= 0)
				close(fd);
			return rc;
		}
	}
	rc = replay(kv, fd, (uint64_t)st.st_size, 8, &good, &why, &ended);
	if (rc != PMQ_OK) {
		close(fd);
		return rc;
	}
	if (good < (uint64_t)st.st_size && fs_rdonly(s)) {
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: ignoring %" PRIu64
		            " bytes at position %" PRIu64 " (%s; read-only: "
		            "not cut)", kv->jpath,
		            (uint64_t)st.st_size - good, good,
		            why ? why : "end record in a journal");
	} else if (good < (uint64_t)st.st_size) {
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: %s: cut %" PRIu64
		            " bytes at position %" PRIu64 " (%s)",
		            kv->jpath, (uint64_t)st.st_size - good, good,
		            why ? why : "end record in a journal");
		if (ftruncate(fd, (off_t)good) != 0) {
			rc = fs_errno_err(errno);
			close(fd);
			return rc;
		}
		if (fs_policy(s) != STORECFG_FSYNC_NEVER)
			fs_sync_fd(s, fd);
	}
	kv->jfd = fd;
	kv->jsize = good;
	return PMQ_OK;
}

/* ---- writes ---- */

int fkv_apply_locked(struct fkv *kv, const char *ns, const void *key,
                     size_t klen, const void *val, size_t vlen, int del,
                     unsigned char **rec, size_t *rec_len,
                     struct fkv_undo **undo)
{
	const struct kent *e = map_get(kv, ns, key, klen);
	struct fkv_undo *u = calloc(1, sizeof(*u));
	int rc;

	*rec = NULL;
	*undo = NULL;
	if (u == NULL)
		return PMQ_ERR_NOMEM;
	u->ns = strdup(ns);
	u->key = malloc(klen + 1);
	if (u->ns == NULL || u->key == NULL)
		goto nomem;
	if (klen)
		memcpy(u->key, key, klen);
	u->klen = klen;
	if (e != NULL) {
		u->had = 1;
		u->old = malloc(e->vlen + 1);
		if (u->old == NULL)
			goto nomem;
		if (e->vlen)
			memcpy(u->old, e->val, e->vlen);
		u->oldlen = e->vlen;
	}
	*rec = rec_encode(del ? OP_DEL : OP_PUT, ns, key, klen,
	                  del ? NULL : val, del ? 0 : vlen, rec_len);
	if (*rec == NULL)
		goto nomem;
	/* An empty value still needs a non-NULL pointer for map_set. */
	rc = map_set(kv, ns, key, klen, del ? NULL : (val ? val : ""),
	             del ? 0 : vlen);
	if (rc != PMQ_OK) {
		free(*rec);
		*rec = NULL;
		fkv_undo_free(u);
		return rc;
	}
	kv->pending++;
	*undo = u;
	return PMQ_OK;
nomem:
	fkv_undo_free(u);
	return PMQ_ERR_NOMEM;
}

void fkv_undo_free(struct fkv_undo *u)
{
	if (u == NULL)
		return;
	free(u->ns);
	free(u->key);
	free(u->old);
	free(u);
}

void fkv_undo_locked(struct fkv *kv, struct fkv_undo *u,
                     struct fkv_undo *const *later, size_t nlater)
{
	size_t i;

	for (i = 0; i < nlater; i++) {
		struct fkv_undo *w = later[i];

		if (w == NULL || strcmp(w->ns, u->ns) != 0 ||
		    key_cmp(w->key, w->klen, u->key, u->klen) != 0)
			continue;
		/* A later write owns the key now: it simply inherits the
		 * value from before the failed one. */
		free(w->old);
		w->had = u->had;
		w->old = u->old;
		w->oldlen = u->oldlen;
		u->old = NULL;
		u->had = 0;
		return;
	}
	if (u->had)
		map_set(kv, u->ns, u->key, u->klen, u->old ? u->old : u->key,
		        u->oldlen);
	else
		map_set(kv, u->ns, u->key, u->klen, NULL, 0);
}

int fkv_write(struct fs *s, struct fkv *kv, const unsigned char *rec,
              size_t len, uint64_t *file_id)
{
	int rc, t;

	if (fs_rdonly(s))
		return PMQ_ERR_RDONLY;
	if (kv->jfd < 0)
		return PMQ_ERR_IO;
	rc = fs_dirty_add(s, kv->id, kv->jfd);
	if (rc == 0)
		rc = fs_pwrite_full(kv->jfd, rec, len, (off_t)kv->jsize);
	if (rc != 0) {
		do
			t = ftruncate(kv->jfd, (off_t)kv->jsize);
		while (t != 0 && errno == EINTR);
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: %s: %s", kv->jpath, strerror(-rc));
		return fs_errno_err(-rc);
	}
	kv->jsize += len;
	*file_id = kv->id;
	return PMQ_OK;
}

void fkv_maybe_compact(struct fs *s, struct fkv *kv, pthread_mutex_t *mu)
{
	unsigned char *body, *p;
	size_t total = 0, i, j, count = 0;
	uint64_t id;
	int rc, fd;

	if (fs_rdonly(s) || kv->jfd < 0 || kv->jsize < COMPACT_MIN ||
	    kv->jsize < COMPACT_RATIO * kv->live)
		return;
	pthread_mutex_lock(mu);
	if (kv->pending != 0) {
		/* Only a map whose every write is stored may become the
		 * snapshot: a write still queued could yet fail. */
		pthread_mutex_unlock(mu);
		return;
	}
	/* live counts every entry as a record; room for the END record. */
	body = malloc((size_t)kv->live + REC_HDR + 8);
	if (body == NULL) {
		pthread_mutex_unlock(mu);
		return;
	}
	p = body;
	for (i = 0; i < kv->nns; i++) {
		for (j = 0; j < kv->ns[i].n; j++) {
			const struct kent *e = &kv->ns[i].e[j];
			size_t n;
			unsigned char *r = rec_encode(OP_PUT, kv->ns[i].name,
			                              e->key, e->klen, e->val,
			                              e->vlen, &n);

			if (r == NULL) {
				pthread_mutex_unlock(mu);
				free(body);
				return;
			}
			memcpy(p, r, n);
			p += n;
			free(r);
			count++;
		}
	}
	pthread_mutex_unlock(mu);
	{
		size_t n;
		unsigned char *r = rec_encode(OP_END, "$", NULL, 0, NULL, 0, &n);

		if (r == NULL) {
			free(body);
			return;
		}
		total = (size_t)(p - body);
		memcpy(p, r, n);
		total += n;
		free(r);
	}
	rc = replace_file(s, kv->spath, S_MAGIC, body, total);
	free(body);
	if (rc == 0)
		rc = fs_sync_dir(s, kv->dir);
	if (rc == 0)
		rc = replace_file(s, kv->jpath, J_MAGIC, NULL, 0);
	if (rc == 0)
		rc = fs_sync_dir(s, kv->dir);
	if (rc != 0) {
		/* The old journal still holds everything: carry on with it. */
		fs_api->log(fs_inst(s), PMQ_LOG_WARN,
		            "file storage: compaction of %s failed: %s",
		            kv->jpath, strerror(-rc));
		return;
	}
	fd = open_rw(kv->jpath, 0);
	if (fd < 0) {
		fs_api->log(fs_inst(s), PMQ_LOG_ERROR,
		            "file storage: %s: %s; key-value writes will fail",
		            kv->jpath, strerror(errno));
		fs_dirty_close(s, kv->id, 0);
		close(kv->jfd);
		kv->jfd = -1;
		return;
	}
	id = kv->id;
	fs_dirty_close(s, id, 0); /* its records are in the snapshot */
	close(kv->jfd);
	kv->jfd = fd;
	kv->id = fs_new_file_id(s);
	fs_api->log(fs_inst(s), PMQ_LOG_INFO,
	            "file storage: compacted %" PRIu64 " journal bytes into "
	            "a %zu-byte snapshot (%zu keys)", kv->jsize, total + 8,
	            count);
	kv->jsize = 8;
}

void fkv_done_locked(struct fkv *kv)
{
	if (kv->pending)
		kv->pending--;
}

/* ---- reads ---- */

int fkv_get_locked(struct fkv *kv, const char *ns, const void *key,
                   size_t klen, void **val, size_t *vlen)
{
	const struct kent *e = map_get(kv, ns, key, klen);

	if (e == NULL)
		return PMQ_ERR_NOTFOUND;
	*val = malloc(e->vlen + 1);
	if (*val == NULL)
		return PMQ_ERR_NOMEM;
	if (e->vlen)
		memcpy(*val, e->val, e->vlen);
	*vlen = e->vlen;
	return PMQ_OK;
}

int fkv_next_locked(struct fkv *kv, const char *name, const void *prefix,
                    size_t plen, const void *key, size_t klen, int after,
                    unsigned char **buf, size_t *cap, size_t *klen_out,
                    size_t *vlen_out)
{
	struct kns *ns = ns_find(kv, name, 0);
	const struct kent *e;
	size_t i;

	if (ns == NULL)
		return 0;
	i = kv_bound(ns, key, klen, after);
	if (i >= ns->n)
		return 0;
	e = &ns->e[i];
	if (e->klen < plen || (plen && memcmp(e->key, prefix, plen) != 0))
		return 0;
	if (e->klen + e->vlen + 1 > *cap) {
		unsigned char *nb = realloc(*buf, e->klen + e->vlen + 1);

		if (nb == NULL)
			return PMQ_ERR_NOMEM;
		*buf = nb;
		*cap = e->klen + e->vlen + 1;
	}
	if (e->klen + e->vlen)
		memcpy(*buf, e->key, e->klen + e->vlen);
	*klen_out = e->klen;
	*vlen_out = e->vlen;
	return 1;
}
