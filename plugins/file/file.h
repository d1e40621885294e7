/*
 * file.h - internals shared by the files of the "file" storage plugin
 * (file.c: the store, its I/O thread and group commit; segment.c: logs as
 * segment files with sparse indexes, recovery; journal.c: key-value state
 * in a journal and snapshot; util.c: CRC32C and careful syscalls; the
 * keys shared with the lmdb plugin are parsed by ../common/storecfg.c).
 * Nothing here is part of the plugin ABI; docs/storage-file.md describes
 * the on-disk format.
 *
 * Threads: the loop thread calls the ops; one I/O thread per store (the
 * "writer") runs the queue.  A log's segments are touched only by the
 * writer, or by the loop thread in log_open/log_list while the queue is
 * idle.  fs->mu guards the queue, log refcounts and the key-value map.
 */
#ifndef PMQ_FILE_H
#define PMQ_FILE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <plexmq/plexmq.h>

#include "../common/storecfg.h"

extern const struct pmq_host_api *fs_api;

/* ---- util.c ---- */

uint32_t fs_crc32c(uint32_t crc, const void *data, size_t len);
void fs_put32(unsigned char *p, uint32_t v);
void fs_put64(unsigned char *p, uint64_t v);
uint32_t fs_get32(const unsigned char *p);
uint64_t fs_get64(const unsigned char *p);
/* Write/read all of buf at off, retrying EINTR and short transfers.
 * 0 or -errno; fs_pread_full returns the bytes read (short at EOF). */
int fs_pwrite_full(int fd, const void *buf, size_t len, off_t off);
ssize_t fs_pread_full(int fd, void *buf, size_t len, off_t off);
/* errno value -> PMQ_ERR_NOSPC / RDONLY / NOMEM / IO. */
int fs_errno_err(int e);
/* fsync a directory by path; 0 or -errno. */
int fs_fsync_dir(const char *path);
/* Returns a new string (caller frees) "a/b", or NULL. */
char *fs_path(const char *a, const char *b);
/* Remove a directory tree; 0 or -errno of the first failure. */
int fs_rmtree(const char *path);

/* A read window over a file, so scans do not make a syscall per frame. */
struct fs_rbuf {
	int fd;
	unsigned char *buf; /* owned */
	size_t cap;
	off_t off; /* file position of buf[0] */
	size_t len; /* valid bytes in buf */
	uint64_t fsize;
	size_t win; /* bytes to read at a miss (0: 64 KiB); a reader that
	               knows a big batch follows asks for less, so the
	               window does not read (and copy) the batch's data */
};
/* Pointer to n bytes at pos, or NULL (past EOF, or *err set on an error). */
const unsigned char *fs_rbuf_get(struct fs_rbuf *rb, uint64_t pos, size_t n,
                                 int *err);
void fs_rbuf_free(struct fs_rbuf *rb);

/* ---- the store (file.c) ---- */

struct fs;
struct flog;

/* Files written but not yet fsynced: a group commit fsyncs each once. */
struct fs_dirty {
	uint64_t id;
	int fd;   /* -1 once synced or closed within the group */
	int err;  /* fsync result (0 or -errno), read by the ops of the group */
};

/* Record that the file id (open as fd) has unsynced writes.  Writer. */
int fs_dirty_add(struct fs *s, uint64_t id, int fd);
/* The file is about to be closed (sync 1: fsync it first unless the policy
 * is "never") or deleted (sync 0).  Writer. */
void fs_dirty_close(struct fs *s, uint64_t id, int sync);
/* fsync a directory if the policy asks for it; counted.  0 or -errno. */
int fs_sync_dir(struct fs *s, const char *path);
/* fdatasync fd (counted); 0 or -errno. */
int fs_sync_fd(struct fs *s, int fd);
uint64_t fs_new_file_id(struct fs *s);
enum storecfg_fsync fs_policy(const struct fs *s);
pmq_instance *fs_inst(const struct fs *s);
uint64_t fs_segment_bytes(const struct fs *s);
uint64_t fs_index_interval(const struct fs *s);
/* Non-zero once the store serves read-only (read_only = yes, or the data
 * dir, its LOCK or journal could not be opened for writing). */
int fs_rdonly(const struct fs *s);
/* Switch the store to read-only because path could not be opened for
 * writing (errno e); logged once.  Only during start. */
void fs_set_rdonly(struct fs *s, const char *path, int e);
/* A write was refused because the store or log is read-only (counted;
 * the first is logged). */
void fs_note_refused(struct fs *s);
/* zero_copy = yes (the default): log_read_extents may answer with file
 * pieces. */
int fs_zero_copy(const struct fs *s);
/* Writer: the store's /dev/null (open for writing), the sink of the page
 * cache warm-up, or -1 when there is none or it proved unusable. */
int fs_devnull(const struct fs *s);
/* Writer: sendfile into /dev/null failed with errno e (EINVAL, ENOSYS):
 * warm pages with posix_fadvise from now on; logged once. */
void fs_devnull_unusable(struct fs *s, int e);

/* ---- logs (segment.c) ---- */

/* One segment: <base>.log holding frames, plus its sparse indexes. */
struct seg {
	int64_t base;   /* offset of its first batch (from the file name) */
	int64_t end;    /* offset after its last batch */
	uint64_t size;  /* bytes of valid frames */
	int64_t max_ts; /* largest batch max timestamp, INT64_MIN if none */
	uint64_t id;    /* for group commit bookkeeping */
	int fd, ifd, tfd; /* open for the active (last) segment only */
	/* Read-only descriptor of the .log cached for reads (-1: none): opened
	 * on the first read that needs it, advised sequential, kept so the
	 * kernel's read-ahead state survives from one read to the next;
	 * log_read_extents answers hold dups of it (same open file
	 * description).  At most FS_RFD_MAX per log are kept (least recently
	 * used closed first).  rfd_used: l->rfd_tick at its last use. */
	int rfd;
	uint64_t rfd_used;
	/* Sparse index: the frame at pos[i] has base off[i]; tpre[i] is the
	 * largest max timestamp of the frames before it in this segment
	 * (INT64_MIN for none), so a time lookup can start there. */
	int64_t *off;
	uint64_t *pos;
	int64_t *tpre;
	size_t n, cap;
	uint64_t since; /* frame bytes since the last index entry */
	int index_broken; /* an index write failed: stop writing it */
};

struct flog {
	char *topic; /* owned */
	int32_t partition;
	char *dir;   /* owned: the log's directory */
	struct seg **segs; /* owned, in base order; the last is active */
	size_t nsegs, capsegs;
	int64_t start; /* logical first offset (trim checkpoint) */
	int refs;      /* host handle + queued ops; under fs->mu */
	int removing;  /* under fs->mu */
	int failed;    /* an fsync failed: appends fail with this until reopen */
	int rdonly;    /* files opened read-only: every write fails with
	                  PMQ_ERR_RDONLY, nothing on disk is changed */
	void *close_op; /* file.c's op for log_close, allocated at open */
	uint64_t rfd_tick; /* use clock of the segments' cached rfds */
};

/* Frame header before each batch in a segment file. */
#define FS_FRAME_HDR 40
#define FS_FRAME_MAGIC 0x504d5146u /* "PMQF" */

/* Open (create) the log directory and recover it; loop thread, queue idle.
 * Returns a new log owned by the caller (flog_free) or NULL with *err. */
struct flog *flog_open(struct fs *s, const char *logs_dir, const char *topic,
                       int32_t partition, int *err);
void flog_free(struct fs *s, struct flog *l);
int64_t flog_end(const struct flog *l);
/* Writer: append one frame (hdr has FS_FRAME_HDR bytes of room before
 * data); sets *file_id to the file written. */
int flog_append(struct fs *s, struct flog *l,
                const struct pmq_batch_meta *m, unsigned char *frame,
                size_t len, uint64_t *file_id);
/* Writer: returns PMQ_OK with *out (malloc'd, caller frees) and *out_len. */
int flog_read(struct fs *s, struct flog *l, int64_t offset, size_t max_bytes,
              int64_t limit, unsigned char **out, size_t *out_len);
/* Writer: the batches flog_read would return, as pieces: batches of
 * 64 KiB and more (with zero_copy) as file pieces (header checked, CRC
 * not; pages warmed into the page cache), the others copied (CRC checked)
 * into one buffer.  PMQ_OK with *out (NULL when empty; else release with
 * flog_extents_free, which closes its fds) and *out_len (batch bytes). */
int flog_read_extents(struct fs *s, struct flog *l, int64_t offset,
                      size_t max_bytes, int64_t limit,
                      struct pmq_extents **out, size_t *out_len);
/* Release a flog_read_extents answer: any thread, any time later (the
 * segment may be gone); closes its fds. */
void flog_extents_free(void *x);
int flog_trim(struct fs *s, struct flog *l, int64_t new_start,
              int64_t *value);
int flog_remove(struct fs *s, struct flog *l);
int flog_time(struct fs *s, struct flog *l, int64_t ts, int64_t *value);
/* Directory name for topic-partition; new string or NULL (too long/no
 * memory). */
char *flog_dirname(const char *topic, int32_t partition);
/* Decode a directory name; 0 with *topic (new string) or -1. */
int flog_parse_dirname(const char *name, char **topic, int32_t *partition);

/* ---- key-value state (journal.c) ---- */

struct fkv;

struct fkv *fkv_new(void);
void fkv_free(struct fkv *kv);
/* Load snapshot + journal from dir, cutting a bad journal tail; start. */
int fkv_open(struct fs *s, struct fkv *kv, const char *dir);
void fkv_close(struct fkv *kv);
/* Caller holds fs->mu.  Apply a put (val != NULL) or delete now and
 * return the journal record to write (new buffer in *rec) and an undo
 * token (*undo, owned by the caller, for fkv_undo_locked/fkv_undo_free). */
struct fkv_undo;
int fkv_apply_locked(struct fkv *kv, const char *ns, const void *key,
                     size_t klen, const void *val, size_t vlen, int del,
                     unsigned char **rec, size_t *rec_len,
                     struct fkv_undo **undo);
/* Caller holds fs->mu.  Take back a write whose record was not stored:
 * later is the list of undo tokens of writes submitted after it and not
 * yet stored (they inherit its old value when on the same key). */
void fkv_undo_locked(struct fkv *kv, struct fkv_undo *u,
                     struct fkv_undo *const *later, size_t nlater);
void fkv_undo_free(struct fkv_undo *u);
/* Caller holds fs->mu: the writer stored (or failed) one record applied
 * with fkv_apply_locked; it no longer blocks compaction. */
void fkv_done_locked(struct fkv *kv);
/* Writer: append a record to the journal.  PMQ_OK or an error (nothing
 * of it is left in the file then). */
int fkv_write(struct fs *s, struct fkv *kv, const unsigned char *rec,
              size_t len, uint64_t *file_id);
/* Writer: compact into a snapshot when the journal is large; takes fs->mu
 * (mu) briefly to copy the map. */
void fkv_maybe_compact(struct fs *s, struct fkv *kv, pthread_mutex_t *mu);
/* Caller holds fs->mu. */
int fkv_get_locked(struct fkv *kv, const char *ns, const void *key,
                   size_t klen, void **val, size_t *vlen);
/* Caller holds fs->mu: copy the first entry >= key (after: > key) with
 * prefix into *buf; 1 found, 0 none, <0 error. */
int fkv_next_locked(struct fkv *kv, const char *ns, const void *prefix,
                    size_t plen, const void *key, size_t klen, int after,
                    unsigned char **buf, size_t *cap, size_t *klen_out,
                    size_t *vlen_out);

#endif /* PMQ_FILE_H */
