/*
 * tests/crash/powercut.c - an LD_PRELOAD shim that simulates a power cut,
 * in the spirit of SQLite's crash tests (test6.c).
 *
 * Only files under the directory named by PMQ_POWERCUT_DIR are watched;
 * every other call passes straight through.  For each watched file (keyed
 * by inode) the shim keeps an undo log of the writes issued since the last
 * completed fsync/fdatasync of that inode: before each write, ftruncate or
 * fallocate it saves the bytes the call overwrites and the file's size.
 * For each watched directory it keeps the name operations (create, rename,
 * unlink, mkdir) issued since the last completed fsync of that directory.
 *
 * At a simulated power cut every undo log is applied in reverse, then the
 * name operations are undone newest first, so the files are left as the
 * disk would hold them had the power failed: only what a completed fsync
 * covered survives.  The undo runs in a forked child while every thread
 * of the process is stopped (SIGSTOP), and the child then ends the process
 * with SIGKILL (137 as a shell reports it): no thread of it runs on a half
 * undone file, and no atexit handler runs.
 *
 * Environment:
 *   PMQ_POWERCUT_DIR    watched directory (unset: the shim does nothing)
 *   PMQ_POWERCUT_STATS  file to write counters to, at the cut or at exit
 *   PMQ_POWERCUT_AFTER  cut just before the Nth watched write (1-based)
 *   PMQ_POWERCUT_SIGNAL signal number that triggers the cut (default
 *                       SIGUSR2; 0 disables)
 *   PMQ_POWERCUT_MODE   discard (default): drop every unsynced write;
 *                       torn: per file, keep a random prefix of the
 *                       unsynced writes, the last one possibly cut at a
 *                       512-byte boundary (still never loses synced data)
 *   PMQ_POWERCUT_SEED   seed for torn mode (default: time and pid)
 *   PMQ_POWERCUT_DIRS   strict (default): a name operation survives only a
 *                       completed fsync of its directory (POSIX);
 *                       linux: fsync of a file also keeps its creation
 *                       (what ext4/xfs/btrfs do in practice)
 *
 * What a completed fsync covers: the writes that had returned before the
 * fsync call began.  A write racing with an fsync is treated as not
 * covered.  Writes through an O_SYNC/O_DSYNC descriptor are durable when
 * they return.  sync_file_range makes nothing durable (it neither flushes
 * metadata nor the disk cache); sync() and syncfs() make everything
 * durable.
 *
 * Not modelled (see docs/crash-testing.md): stores through mmap (LMDB's
 * MDB_WRITEMAP), stdio (fwrite goes to glibc's internal write), rmdir,
 * O_TMPFILE + linkat, hard links, renames across directories are durable
 * with the target directory's fsync alone, reordering of writes inside
 * one file other than the prefix kept in torn mode.
 *
 * Thread safety: one mutex.  Watched writes, truncations and name
 * operations run with it held; fsync runs without it (so group commit
 * keeps its concurrency) and takes it before and after.  The cut is done
 * by a thread of the shim woken through a pipe by the signal handler, with
 * the mutex held, so no watched write is half done when it happens.
 */
#undef _FILE_OFFSET_BITS
#undef _FORTIFY_SOURCE
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PC_EXPORT __attribute__((visibility("default")))

/* ---- the real functions ---- */

#define REAL(name) ((__typeof__(&name))pc_real(#name, &pc_real_##name))
#define REAL_DECL(name) static void *pc_real_##name
REAL_DECL(open);
REAL_DECL(openat);
REAL_DECL(openat64);
REAL_DECL(write);
REAL_DECL(pwrite);
REAL_DECL(pwrite64);
REAL_DECL(writev);
REAL_DECL(pwritev);
REAL_DECL(pwritev64);
REAL_DECL(pwritev2);
REAL_DECL(ftruncate);
REAL_DECL(ftruncate64);
REAL_DECL(fallocate);
REAL_DECL(fallocate64);
REAL_DECL(posix_fallocate);
REAL_DECL(posix_fallocate64);
REAL_DECL(fsync);
REAL_DECL(fdatasync);
REAL_DECL(sync_file_range);
REAL_DECL(sync);
REAL_DECL(syncfs);
REAL_DECL(rename);
REAL_DECL(renameat);
REAL_DECL(renameat2);
REAL_DECL(unlink);
REAL_DECL(unlinkat);
REAL_DECL(remove);
REAL_DECL(mkdir);
REAL_DECL(mkdirat);
REAL_DECL(close);
REAL_DECL(dup2);
REAL_DECL(dup3);

static void *pc_real(const char *name, void **slot)
{
	void *p = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
	if (p == NULL) {
		p = dlsym(RTLD_NEXT, name);
		if (p == NULL) {
			fprintf(stderr, "powercut: no real %s\n", name);
			abort();
		}
		__atomic_store_n(slot, p, __ATOMIC_RELEASE);
	}
	return p;
}

/* The fortified open variants glibc's headers call when they cannot check
 * the flags at compile time. */
int __open_2(const char *path, int flags);
int __open64_2(const char *path, int flags);
int __openat_2(int dfd, const char *path, int flags);
int __openat64_2(int dfd, const char *path, int flags);

/* ---- state (all under pc_mu unless said otherwise) ---- */

struct undo {
	uint64_t seq;     /* global order; fsync drops seq < its mark */
	off_t off;        /* where the call wrote */
	size_t wlen;      /* bytes it wrote (0 for a size change only) */
	size_t oldlen;    /* bytes saved in old: those it overwrote */
	off_t old_size;   /* file size before the call */
	unsigned char *old;
};

struct inode {
	dev_t dev;
	ino_t ino;
	int pfd;          /* our own O_RDWR descriptor: reads old bytes,
	                     applies the undo, keeps the inode alive */
	int refs;         /* app descriptors + fsyncs in flight */
	struct undo *u;
	size_t n, cap;
	struct inode *next;
};

enum { OP_CREATE, OP_RENAME, OP_EXCHANGE, OP_UNLINK, OP_MKDIR };

struct nsop {
	uint64_t seq;
	int kind;
	char *dir;        /* the directory whose fsync makes it durable */
	char *a, *b;      /* absolute paths (b: rename target) */
	int saved;        /* descriptor of an unlinked/replaced file, or -1 */
	dev_t dev;        /* OP_CREATE: the created inode */
	ino_t ino;
	struct nsop *prev; /* newer to older */
};

enum { FD_UNKNOWN = 0, FD_IGNORED, FD_FILE, FD_DIR };
#define FD_MAX 65536
#define FL_APPEND 1
#define FL_DSYNC 2

static pthread_mutex_t pc_mu = PTHREAD_MUTEX_INITIALIZER;
static int pc_enabled;             /* set once by the constructor */
static char pc_root[PATH_MAX];
static size_t pc_rootlen;
static const char *pc_stats_path;
static unsigned long long pc_cut_after; /* 0: never */
static int pc_torn;
static int pc_dirs_linux;
static unsigned long long pc_seed;
static int pc_pipe[2] = {-1, -1};

static unsigned char fd_kind[FD_MAX]; /* atomic loads outside the lock */
static unsigned char fd_flags[FD_MAX];
static struct inode *fd_ino[FD_MAX];
static char *fd_dir[FD_MAX];

static struct inode *pc_inodes;
static struct nsop *pc_ops; /* newest first */
static uint64_t pc_seq = 1;

static struct {
	unsigned long long writes, write_bytes, fsyncs, fdatasyncs,
	    dir_fsyncs, sync_file_ranges, syncs, truncates, creates,
	    renames, unlinks, mkdirs, dsync_writes;
} st;

static void pc_lock(void)
{
	pthread_mutex_lock(&pc_mu);
}

static void pc_unlock(void)
{
	pthread_mutex_unlock(&pc_mu);
}

static void pc_msg(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof buf)
		n = sizeof buf - 1;
	ssize_t r = REAL(write)(2, buf, (size_t)n);
	(void)r;
}

static void *pc_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL) {
		pc_msg("powercut: out of memory\n");
		abort();
	}
	return p;
}

static char *pc_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = pc_xmalloc(n);
	memcpy(p, s, n);
	return p;
}

/* ---- paths ---- */

static int pc_under(const char *abs)
{
	return strncmp(abs, pc_root, pc_rootlen) == 0 &&
	       (abs[pc_rootlen] == '\0' || abs[pc_rootlen] == '/');
}

static int pc_fd_path(int fd, char *out, size_t len)
{
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, out, len - 1);
	if (n < 0)
		return -1;
	out[n] = '\0';
	return 0;
}

/* The absolute path of PATH relative to DFD, its parent directory
 * resolved (the last component is kept as is).  -1 if it cannot be. */
static int pc_abs(int dfd, const char *path, char *out, size_t len)
{
	char tmp[PATH_MAX], par[PATH_MAX];
	if (path == NULL || path[0] == '\0')
		return -1;
	if (path[0] == '/') {
		if (strlen(path) >= sizeof tmp)
			return -1;
		strcpy(tmp, path);
	} else {
		char base[PATH_MAX];
		if (dfd == AT_FDCWD) {
			if (getcwd(base, sizeof base) == NULL)
				return -1;
		} else if (pc_fd_path(dfd, base, sizeof base) < 0) {
			return -1;
		}
		if ((size_t)snprintf(tmp, sizeof tmp, "%s/%s", base, path) >=
		    sizeof tmp)
			return -1;
	}
	/* Strip trailing slashes, split off the last component. */
	size_t l = strlen(tmp);
	while (l > 1 && tmp[l - 1] == '/')
		tmp[--l] = '\0';
	char *slash = strrchr(tmp, '/');
	const char *last = slash + 1;
	if (slash == tmp) {
		strcpy(par, "/");
	} else {
		*slash = '\0';
		if (realpath(tmp, par) == NULL)
			return -1;
	}
	if (strcmp(last, ".") == 0 || strcmp(last, "..") == 0 ||
	    last[0] == '\0') {
		/* A directory named by . or ..: resolve the whole. */
		char whole[PATH_MAX];
		snprintf(whole, sizeof whole, "%s/%s", par, last);
		if (realpath(whole, out) == NULL)
			return -1;
		return 0;
	}
	if ((size_t)snprintf(out, len, "%s%s%s", par,
	                     strcmp(par, "/") == 0 ? "" : "/", last) >= len)
		return -1;
	return 0;
}

static char *pc_parent(const char *abs)
{
	char *p = pc_strdup(abs);
	char *slash = strrchr(p, '/');
	if (slash == p)
		slash[1] = '\0';
	else if (slash != NULL)
		*slash = '\0';
	return p;
}

/* ---- inodes and their undo logs ---- */

static struct inode *pc_inode_get(dev_t dev, ino_t ino, int fd_for_open)
{
	for (struct inode *i = pc_inodes; i != NULL; i = i->next)
		if (i->dev == dev && i->ino == ino)
			return i;
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd_for_open);
	int pfd = REAL(open)(link, O_RDWR | O_CLOEXEC);
	if (pfd < 0) {
		pc_msg("powercut: cannot reopen fd %d: %s; its writes "
		       "cannot be undone\n", fd_for_open, strerror(errno));
	}
	struct inode *i = pc_xmalloc(sizeof *i);
	memset(i, 0, sizeof *i);
	i->dev = dev;
	i->ino = ino;
	i->pfd = pfd;
	i->next = pc_inodes;
	pc_inodes = i;
	return i;
}

static void pc_inode_maybe_free(struct inode *ino)
{
	if (ino->refs > 0 || ino->n > 0)
		return;
	for (struct inode **pp = &pc_inodes; *pp != NULL; pp = &(*pp)->next) {
		if (*pp == ino) {
			*pp = ino->next;
			break;
		}
	}
	if (ino->pfd >= 0)
		REAL(close)(ino->pfd);
	free(ino->u);
	free(ino);
}

static off_t pc_size(struct inode *ino, int fd)
{
	struct stat sb;
	if (fstat(ino->pfd >= 0 ? ino->pfd : fd, &sb) < 0)
		return 0;
	return sb.st_size;
}

static void pc_read_old(struct inode *ino, int fd, off_t off, size_t n,
                        off_t size, struct undo *u)
{
	u->oldlen = 0;
	u->old = NULL;
	if (off >= size || n == 0)
		return;
	size_t want = (size_t)(size - off) < n ? (size_t)(size - off) : n;
	u->old = pc_xmalloc(want);
	size_t got = 0;
	while (got < want) {
		ssize_t r = pread(ino->pfd >= 0 ? ino->pfd : fd, u->old + got,
		                  want - got, off + (off_t)got);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	u->oldlen = got;
}

/* Record the state a call about to change [off, off+n) (n bytes written,
 * or the size set to new_size when n == 0) would destroy. */
static void pc_record(struct inode *ino, int fd, off_t off, size_t n)
{
	off_t size = pc_size(ino, fd);
	if (ino->n == ino->cap) {
		size_t cap = ino->cap ? ino->cap * 2 : 16;
		struct undo *u = realloc(ino->u, cap * sizeof *u);
		if (u == NULL) {
			pc_msg("powercut: out of memory\n");
			abort();
		}
		ino->u = u;
		ino->cap = cap;
	}
	struct undo *u = &ino->u[ino->n++];
	u->seq = pc_seq++;
	u->off = off;
	u->wlen = n;
	u->old_size = size;
	pc_read_old(ino, fd, off, n, size, u);
}

/* A write that is durable when it returns (O_DSYNC): nothing to undo for
 * it, but the undo entries before it must not bring back what it
 * overwrote, nor cut the file below its end. */
static void pc_durable_write(struct inode *ino, off_t off,
                             const struct iovec *iov, int iovcnt)
{
	size_t total = 0;
	for (int k = 0; k < iovcnt; k++)
		total += iov[k].iov_len;
	for (size_t e = 0; e < ino->n; e++) {
		struct undo *u = &ino->u[e];
		off_t a = u->off > off ? u->off : off;
		off_t b1 = u->off + (off_t)u->oldlen, b2 = off + (off_t)total;
		off_t b = b1 < b2 ? b1 : b2;
		for (off_t p = a; p < b; p++) {
			/* byte p of the new data */
			size_t rel = (size_t)(p - off);
			int k = 0;
			while (rel >= iov[k].iov_len) {
				rel -= iov[k].iov_len;
				k++;
			}
			u->old[p - u->off] =
			    ((const unsigned char *)iov[k].iov_base)[rel];
		}
		if (u->old_size < off + (off_t)total)
			u->old_size = off + (off_t)total;
	}
}

static void pc_drop_before(struct inode *ino, uint64_t mark)
{
	size_t k = 0;
	while (k < ino->n && ino->u[k].seq < mark) {
		free(ino->u[k].old);
		k++;
	}
	if (k > 0) {
		memmove(ino->u, ino->u + k, (ino->n - k) * sizeof *ino->u);
		ino->n -= k;
	}
}

/* ---- descriptors ---- */

static void pc_fd_forget(int fd)
{
	if (fd < 0 || fd >= FD_MAX)
		return;
	if (fd_kind[fd] == FD_FILE && fd_ino[fd] != NULL) {
		fd_ino[fd]->refs--;
		pc_inode_maybe_free(fd_ino[fd]);
	}
	fd_ino[fd] = NULL;
	free(fd_dir[fd]);
	fd_dir[fd] = NULL;
	__atomic_store_n(&fd_kind[fd], FD_UNKNOWN, __ATOMIC_RELAXED);
}

/* What fd is; classifies it on first use.  Lock held. */
static int pc_classify(int fd)
{
	if (fd < 0 || fd >= FD_MAX)
		return FD_IGNORED;
	int k = fd_kind[fd];
	if (k != FD_UNKNOWN)
		return k;
	struct stat sb;
	char path[PATH_MAX];
	k = FD_IGNORED;
	if (fstat(fd, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)) &&
	    pc_fd_path(fd, path, sizeof path) == 0 && pc_under(path)) {
		if (S_ISREG(sb.st_mode)) {
			struct inode *ino = pc_inode_get(sb.st_dev, sb.st_ino, fd);
			ino->refs++;
			fd_ino[fd] = ino;
			int fl = fcntl(fd, F_GETFL);
			fd_flags[fd] = (unsigned char)(
			    (fl >= 0 && (fl & O_APPEND) ? FL_APPEND : 0) |
			    (fl >= 0 && (fl & O_DSYNC) ? FL_DSYNC : 0));
			k = FD_FILE;
		} else {
			fd_dir[fd] = pc_strdup(path);
			k = FD_DIR;
		}
	}
	__atomic_store_n(&fd_kind[fd], (unsigned char)k, __ATOMIC_RELAXED);
	return k;
}

static int pc_fast_ignored(int fd)
{
	return !pc_enabled ||
	       (fd >= 0 && fd < FD_MAX &&
	        __atomic_load_n(&fd_kind[fd], __ATOMIC_RELAXED) == FD_IGNORED);
}

/* ---- name operations ---- */

static struct nsop *pc_op_push(int kind, const char *dir, const char *a,
                               const char *b, int saved)
{
	struct nsop *op = pc_xmalloc(sizeof *op);
	memset(op, 0, sizeof *op);
	op->seq = pc_seq++;
	op->kind = kind;
	op->dir = pc_strdup(dir);
	op->a = pc_strdup(a);
	op->b = b ? pc_strdup(b) : NULL;
	op->saved = saved;
	op->prev = pc_ops;
	pc_ops = op;
	return op;
}

static void pc_op_free(struct nsop *op)
{
	if (op->saved >= 0)
		REAL(close)(op->saved);
	free(op->dir);
	free(op->a);
	free(op->b);
	free(op);
}

/* Drop the ops older than mark that DIR's fsync (or, for a file's fsync
 * in linux mode, the creation of inode dev/ino) made durable; dir NULL
 * and dev 0 ino 0: every op (sync). */
static void pc_ops_durable(const char *dir, int by_inode, dev_t dev,
                           ino_t ino, uint64_t mark)
{
	for (struct nsop **pp = &pc_ops; *pp != NULL;) {
		struct nsop *op = *pp;
		int hit;
		if (op->seq >= mark)
			hit = 0;
		else if (by_inode)
			hit = op->kind == OP_CREATE && op->dev == dev &&
			      op->ino == ino;
		else
			hit = dir == NULL || strcmp(op->dir, dir) == 0;
		if (hit) {
			*pp = op->prev;
			pc_op_free(op);
		} else {
			pp = &op->prev;
		}
	}
}

/* ---- the cut ---- */

static unsigned long long pc_rand(void)
{
	/* xorshift64* */
	pc_seed ^= pc_seed >> 12;
	pc_seed ^= pc_seed << 25;
	pc_seed ^= pc_seed >> 27;
	return pc_seed * 2685821657736338717ULL;
}

static void pc_pwrite_all(int fd, const unsigned char *p, size_t n, off_t off)
{
	while (n > 0) {
		ssize_t r = REAL(pwrite)(fd, p, n, off);
		if (r <= 0) {
			pc_msg("powercut: undo write failed: %s\n",
			       strerror(errno));
			return;
		}
		p += r;
		n -= (size_t)r;
		off += r;
	}
}

static void pc_undo_entry(int fd, const struct undo *u)
{
	if (u->oldlen > 0)
		pc_pwrite_all(fd, u->old, u->oldlen, u->off);
	if (REAL(ftruncate)(fd, u->old_size) < 0)
		pc_msg("powercut: undo truncate failed: %s\n", strerror(errno));
}

static void pc_undo_inode(struct inode *ino, unsigned long long *nw,
                          unsigned long long *nb)
{
	if (ino->n == 0)
		return;
	if (ino->pfd < 0) {
		pc_msg("powercut: %zu writes to inode %lu cannot be undone\n",
		       ino->n, (unsigned long)ino->ino);
		return;
	}
	size_t keep = 0;
	if (pc_torn)
		keep = (size_t)(pc_rand() % (ino->n + 1));
	for (size_t e = ino->n; e > keep; e--) {
		pc_undo_entry(ino->pfd, &ino->u[e - 1]);
		(*nw)++;
		*nb += ino->u[e - 1].wlen;
	}
	/* Torn: the last kept write may have reached the disk in part. */
	if (pc_torn && keep > 0 && ino->u[keep - 1].wlen > 512 &&
	    pc_rand() % 2) {
		const struct undo *u = &ino->u[keep - 1];
		size_t p = (size_t)(pc_rand() % u->wlen) & ~(size_t)511;
		if (p < u->oldlen)
			pc_pwrite_all(ino->pfd, u->old + p, u->oldlen - p,
			              u->off + (off_t)p);
		if (u->off + (off_t)u->wlen > u->old_size) {
			off_t ns = u->off + (off_t)p;
			if (ns < u->old_size)
				ns = u->old_size;
			if (REAL(ftruncate)(ino->pfd, ns) < 0)
				pc_msg("powercut: torn truncate failed\n");
		}
	}
}

static void pc_copy_back(int saved, const char *path)
{
	struct stat sb;
	if (fstat(saved, &sb) < 0)
		return;
	int fd = REAL(open)(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	                    sb.st_mode & 07777);
	if (fd < 0) {
		pc_msg("powercut: cannot restore %s: %s\n", path,
		       strerror(errno));
		return;
	}
	unsigned char buf[65536];
	off_t off = 0;
	for (;;) {
		ssize_t r = pread(saved, buf, sizeof buf, off);
		if (r <= 0)
			break;
		pc_pwrite_all(fd, buf, (size_t)r, off);
		off += r;
	}
	REAL(close)(fd);
}

static void pc_rm_tree(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb) < 0)
		return;
	if (S_ISDIR(sb.st_mode)) {
		DIR *d = opendir(path);
		if (d != NULL) {
			struct dirent *de;
			while ((de = readdir(d)) != NULL) {
				if (strcmp(de->d_name, ".") == 0 ||
				    strcmp(de->d_name, "..") == 0)
					continue;
				char sub[PATH_MAX];
				snprintf(sub, sizeof sub, "%s/%s", path,
				         de->d_name);
				pc_rm_tree(sub);
			}
			closedir(d);
		}
		rmdir(path);
	} else {
		REAL(unlink)(path);
	}
}

static void pc_undo_op(const struct nsop *op)
{
	switch (op->kind) {
	case OP_CREATE:
		REAL(unlink)(op->a);
		break;
	case OP_RENAME:
		if (REAL(rename)(op->b, op->a) < 0)
			pc_msg("powercut: cannot undo rename %s -> %s: %s\n",
			       op->a, op->b, strerror(errno));
		if (op->saved >= 0)
			pc_copy_back(op->saved, op->b);
		break;
	case OP_EXCHANGE:
		REAL(renameat2)(AT_FDCWD, op->b, AT_FDCWD, op->a,
		                RENAME_EXCHANGE);
		break;
	case OP_UNLINK:
		if (op->saved >= 0)
			pc_copy_back(op->saved, op->a);
		break;
	case OP_MKDIR:
		pc_rm_tree(op->a);
		break;
	}
}

static void pc_write_stats(int cut, unsigned long long dw,
                           unsigned long long db)
{
	if (pc_stats_path == NULL)
		return;
	char buf[2048];
	int n = snprintf(buf, sizeof buf,
	    "pid %ld\ncut %d\nwrites %llu\nwrite_bytes %llu\n"
	    "fsyncs %llu\nfdatasyncs %llu\nsyncs_total %llu\n"
	    "dir_fsyncs %llu\nsync_file_ranges %llu\nsyncs %llu\n"
	    "dsync_writes %llu\ntruncates %llu\ncreates %llu\n"
	    "renames %llu\nunlinks %llu\nmkdirs %llu\n"
	    "discarded_writes %llu\ndiscarded_bytes %llu\n",
	    (long)getpid(), cut, st.writes, st.write_bytes, st.fsyncs,
	    st.fdatasyncs, st.fsyncs + st.fdatasyncs, st.dir_fsyncs,
	    st.sync_file_ranges, st.syncs, st.dsync_writes, st.truncates,
	    st.creates, st.renames, st.unlinks, st.mkdirs, dw, db);
	int fd = REAL(open)(pc_stats_path, O_WRONLY | O_CREAT | O_TRUNC |
	                    O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	ssize_t r = REAL(write)(fd, buf, (size_t)n);
	(void)r;
	REAL(close)(fd);
}

/* Put every watched file and name back to what fsync covered. */
static void pc_undo_all(const char *why)
{
	unsigned long long nw = 0, nb = 0, nops = 0;
	for (struct inode *i = pc_inodes; i != NULL; i = i->next)
		pc_undo_inode(i, &nw, &nb);
	for (const struct nsop *op = pc_ops; op != NULL; op = op->prev) {
		pc_undo_op(op);
		nops++;
	}
	pc_write_stats(1, nw, nb);
	pc_msg("powercut: power cut (%s)%s: %llu writes (%llu bytes) and "
	       "%llu name operations discarded, %llu fsyncs seen\n", why,
	       pc_torn ? " torn, seed above" : "", nw, nb, nops,
	       st.fsyncs + st.fdatasyncs + st.dir_fsyncs);
}

/* 1 when every thread of pid is stopped (or gone). */
static int pc_all_stopped(pid_t pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof path, "/proc/%ld/task", (long)pid);
	DIR *d = opendir(path);
	if (d == NULL)
		return 1; /* gone */
	int all = 1;
	struct dirent *de;
	while (all && (de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		char sp[sizeof path + 256 + 8];
		snprintf(sp, sizeof sp, "%s/%s/stat", path, de->d_name);
		int fd = REAL(open)(sp, O_RDONLY | O_CLOEXEC, 0);
		if (fd < 0)
			continue; /* that thread is gone */
		ssize_t r = read(fd, buf, sizeof buf - 1);
		REAL(close)(fd);
		if (r <= 0)
			continue;
		buf[r] = '\0';
		/* "tid (comm) S ...": the state follows the last ')'. */
		const char *q = strrchr(buf, ')');
		if (q == NULL || q[1] != ' ')
			continue;
		all = q[2] == 'T' || q[2] == 't' || q[2] == 'Z' ||
		      q[2] == 'X';
	}
	closedir(d);
	return all;
}

/*
 * Lock held; never returns.  No other thread of the process may run while
 * the files are put back: LMDB reads its pages through mmap, so a thread
 * still running would see the undo half done (a meta page whose tree is
 * being rolled back, or a SIGBUS past a file end being truncated) and act
 * on it, e.g. fail appends with errors a real power cut can never cause.
 * So a child forked from this thread (it has only this thread and a copy
 * of the undo logs) stops the whole process with SIGSTOP, waits until
 * every thread is stopped, undoes, and then kills the process with
 * SIGKILL: its status, 137 as a shell reports it, is also a real crash's.
 * The child exits after that; it keeps stdout and stderr open until the
 * undo is done, so a reader of them sees the end only then.
 */
static void pc_cut(const char *why)
{
	pid_t self = getpid();
	pid_t child = fork();

	if (child == 0) {
		struct timespec ts = {0, 1000000};
		if (kill(self, SIGSTOP) < 0)
			pc_msg("powercut: SIGSTOP: %s\n", strerror(errno));
		/* A thread inside a system call (fsync) stops when it
		 * returns; 30 s is far beyond any of ours. */
		for (int i = 0; i < 30000 && !pc_all_stopped(self); i++)
			nanosleep(&ts, NULL);
		if (!pc_all_stopped(self))
			pc_msg("powercut: threads still running at the cut\n");
		pc_undo_all(why);
		kill(self, SIGKILL);
		_exit(0);
	}
	if (child < 0) {
		/* Better a cut with the other threads running than none. */
		pc_msg("powercut: fork: %s; undoing in process\n",
		       strerror(errno));
		pc_undo_all(why);
		_exit(137);
	}
	/* The child stops and kills this process. */
	for (;;)
		pause();
}

/* Count one watched write; cut first when it is the Nth.  Lock held. */
static void pc_count_write(size_t n)
{
	st.writes++;
	if (pc_cut_after != 0 && st.writes >= pc_cut_after)
		pc_cut("PMQ_POWERCUT_AFTER");
	st.write_bytes += n;
}

static void *pc_cutter(void *arg)
{
	(void)arg;
	char c;
	for (;;) {
		ssize_t r = read(pc_pipe[0], &c, 1);
		if (r == 1)
			break;
		if (r < 0 && errno == EINTR)
			continue;
		return NULL;
	}
	pc_lock();
	pc_cut("signal");
	return NULL;
}

static void pc_on_signal(int sig)
{
	(void)sig;
	int saved = errno;
	char c = 'x';
	ssize_t r = REAL(write)(pc_pipe[1], &c, 1);
	(void)r;
	errno = saved;
}

__attribute__((constructor)) static void pc_init(void)
{
	const char *dir = getenv("PMQ_POWERCUT_DIR");
	if (dir == NULL || dir[0] == '\0')
		return;
	if (realpath(dir, pc_root) == NULL) {
		pc_msg("powercut: PMQ_POWERCUT_DIR %s: %s\n", dir,
		       strerror(errno));
		_exit(2);
	}
	pc_rootlen = strlen(pc_root);
	pc_stats_path = getenv("PMQ_POWERCUT_STATS");
	const char *s = getenv("PMQ_POWERCUT_AFTER");
	if (s != NULL)
		pc_cut_after = strtoull(s, NULL, 10);
	s = getenv("PMQ_POWERCUT_MODE");
	pc_torn = s != NULL && strcmp(s, "torn") == 0;
	s = getenv("PMQ_POWERCUT_DIRS");
	pc_dirs_linux = s != NULL && strcmp(s, "linux") == 0;
	s = getenv("PMQ_POWERCUT_SEED");
	pc_seed = s != NULL ? strtoull(s, NULL, 10)
	                    : (unsigned long long)time(NULL) * 1000003ULL +
	                          (unsigned long long)getpid();
	if (pc_seed == 0)
		pc_seed = 1;
	if (pc_torn)
		pc_msg("powercut: torn mode, seed %llu\n", pc_seed);
	int sig = SIGUSR2;
	s = getenv("PMQ_POWERCUT_SIGNAL");
	if (s != NULL)
		sig = atoi(s);
	if (sig > 0) {
		if (pipe2(pc_pipe, O_CLOEXEC) < 0) {
			pc_msg("powercut: pipe: %s\n", strerror(errno));
			_exit(2);
		}
		pthread_t t;
		sigset_t all, old;
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		int rc = pthread_create(&t, NULL, pc_cutter, NULL);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (rc != 0) {
			pc_msg("powercut: pthread_create failed\n");
			_exit(2);
		}
		pthread_detach(t);
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = pc_on_signal;
		sa.sa_flags = SA_RESTART;
		sigemptyset(&sa.sa_mask);
		sigaction(sig, &sa, NULL);
	}
	__atomic_store_n(&pc_enabled, 1, __ATOMIC_RELEASE);
}

__attribute__((destructor)) static void pc_fini(void)
{
	if (!pc_enabled)
		return;
	pc_lock();
	/* Only a process that touched the directory: not a shell or a tool
	 * that merely inherited LD_PRELOAD. */
	if (st.writes + st.fsyncs + st.fdatasyncs + st.dir_fsyncs +
	        st.creates + st.renames + st.unlinks + st.mkdirs > 0)
		pc_write_stats(0, 0, 0);
	pc_unlock();
}

/* ---- the wrappers: writes ---- */

/* Common path of every write: fd watched → record, count, write. */
static ssize_t pc_do_write(int fd, const struct iovec *iov, int iovcnt,
                           off_t off, int use_off, ssize_t (*doit)(void *),
                           void *arg)
{
	pc_lock();
	if (pc_classify(fd) != FD_FILE) {
		pc_unlock();
		return doit(arg);
	}
	struct inode *ino = fd_ino[fd];
	size_t total = 0;
	for (int k = 0; k < iovcnt; k++)
		total += iov[k].iov_len;
	if (!use_off) {
		if (fd_flags[fd] & FL_APPEND)
			off = pc_size(ino, fd);
		else
			off = lseek(fd, 0, SEEK_CUR);
	}
	pc_count_write(total);
	if (fd_flags[fd] & FL_DSYNC) {
		st.dsync_writes++;
		pc_durable_write(ino, off, iov, iovcnt);
	} else {
		pc_record(ino, fd, off, total);
	}
	ssize_t r = doit(arg);
	int e = errno;
	pc_unlock();
	errno = e;
	return r;
}

struct pc_wargs {
	int fd;
	const void *buf;
	const struct iovec *iov;
	int iovcnt;
	size_t n;
	off_t off;
	int flags;
	int which;
};

static ssize_t pc_wcall(void *arg)
{
	struct pc_wargs *a = arg;
	switch (a->which) {
	case 0: return REAL(write)(a->fd, a->buf, a->n);
	case 1: return REAL(pwrite)(a->fd, a->buf, a->n, a->off);
	case 2: return REAL(pwrite64)(a->fd, a->buf, a->n, a->off);
	case 3: return REAL(writev)(a->fd, a->iov, a->iovcnt);
	case 4: return REAL(pwritev)(a->fd, a->iov, a->iovcnt, a->off);
	case 5: return REAL(pwritev64)(a->fd, a->iov, a->iovcnt, a->off);
	default:
		return REAL(pwritev2)(a->fd, a->iov, a->iovcnt, a->off,
		                      a->flags);
	}
}

PC_EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
	if (pc_fast_ignored(fd))
		return REAL(write)(fd, buf, n);
	struct pc_wargs a = {.fd = fd, .buf = buf, .n = n, .which = 0};
	struct iovec v = {(void *)(uintptr_t)buf, n};
	return pc_do_write(fd, &v, 1, 0, 0, pc_wcall, &a);
}

PC_EXPORT ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	if (pc_fast_ignored(fd))
		return REAL(pwrite)(fd, buf, n, off);
	struct pc_wargs a = {.fd = fd, .buf = buf, .n = n, .off = off,
	                     .which = 1};
	struct iovec v = {(void *)(uintptr_t)buf, n};
	return pc_do_write(fd, &v, 1, off, 1, pc_wcall, &a);
}

PC_EXPORT ssize_t pwrite64(int fd, const void *buf, size_t n, off64_t off)
{
	if (pc_fast_ignored(fd))
		return REAL(pwrite64)(fd, buf, n, off);
	struct pc_wargs a = {.fd = fd, .buf = buf, .n = n, .off = off,
	                     .which = 2};
	struct iovec v = {(void *)(uintptr_t)buf, n};
	return pc_do_write(fd, &v, 1, off, 1, pc_wcall, &a);
}

PC_EXPORT ssize_t writev(int fd, const struct iovec *iov, int iovcnt)
{
	if (pc_fast_ignored(fd) || iovcnt < 0)
		return REAL(writev)(fd, iov, iovcnt);
	struct pc_wargs a = {.fd = fd, .iov = iov, .iovcnt = iovcnt,
	                     .which = 3};
	return pc_do_write(fd, iov, iovcnt, 0, 0, pc_wcall, &a);
}

PC_EXPORT ssize_t pwritev(int fd, const struct iovec *iov, int iovcnt,
                          off_t off)
{
	if (pc_fast_ignored(fd) || iovcnt < 0)
		return REAL(pwritev)(fd, iov, iovcnt, off);
	struct pc_wargs a = {.fd = fd, .iov = iov, .iovcnt = iovcnt,
	                     .off = off, .which = 4};
	return pc_do_write(fd, iov, iovcnt, off, 1, pc_wcall, &a);
}

PC_EXPORT ssize_t pwritev64(int fd, const struct iovec *iov, int iovcnt,
                            off64_t off)
{
	if (pc_fast_ignored(fd) || iovcnt < 0)
		return REAL(pwritev64)(fd, iov, iovcnt, off);
	struct pc_wargs a = {.fd = fd, .iov = iov, .iovcnt = iovcnt,
	                     .off = off, .which = 5};
	return pc_do_write(fd, iov, iovcnt, off, 1, pc_wcall, &a);
}

PC_EXPORT ssize_t pwritev2(int fd, const struct iovec *iov, int iovcnt,
                           off_t off, int flags)
{
	if (pc_fast_ignored(fd) || iovcnt < 0)
		return REAL(pwritev2)(fd, iov, iovcnt, off, flags);
	struct pc_wargs a = {.fd = fd, .iov = iov, .iovcnt = iovcnt,
	                     .off = off, .flags = flags, .which = 6};
	/* RWF_DSYNC/RWF_SYNC are not modelled: such a write is treated as
	 * needing an fsync, which is the conservative reading. */
	return pc_do_write(fd, iov, iovcnt, off, off != -1, pc_wcall, &a);
}

/* Size changes: ftruncate and fallocate. */
static void pc_size_change(int fd, off_t new_size, int may_shrink)
{
	if (pc_classify(fd) != FD_FILE)
		return;
	struct inode *ino = fd_ino[fd];
	off_t size = pc_size(ino, fd);
	if (new_size == size || (!may_shrink && new_size < size))
		return;
	st.truncates++;
	if (new_size < size)
		pc_record(ino, fd, new_size, (size_t)(size - new_size));
	else
		pc_record(ino, fd, size, 0);
	/* a size-only entry: wlen 0 */
	ino->u[ino->n - 1].wlen = 0;
}

PC_EXPORT int ftruncate(int fd, off_t len)
{
	if (pc_fast_ignored(fd))
		return REAL(ftruncate)(fd, len);
	pc_lock();
	pc_size_change(fd, len, 1);
	int r = REAL(ftruncate)(fd, len);
	int e = errno;
	pc_unlock();
	errno = e;
	return r;
}

PC_EXPORT int ftruncate64(int fd, off64_t len)
{
	if (pc_fast_ignored(fd))
		return REAL(ftruncate64)(fd, len);
	pc_lock();
	pc_size_change(fd, len, 1);
	int r = REAL(ftruncate64)(fd, len);
	int e = errno;
	pc_unlock();
	errno = e;
	return r;
}

PC_EXPORT int fallocate(int fd, int mode, off_t off, off_t len)
{
	if (pc_fast_ignored(fd))
		return REAL(fallocate)(fd, mode, off, len);
	pc_lock();
	if (mode == 0)
		pc_size_change(fd, off + len, 0);
	int r = REAL(fallocate)(fd, mode, off, len);
	int e = errno;
	pc_unlock();
	errno = e;
	return r;
}

PC_EXPORT int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	if (pc_fast_ignored(fd))
		return REAL(fallocate64)(fd, mode, off, len);
	pc_lock();
	if (mode == 0)
		pc_size_change(fd, off + len, 0);
	int r = REAL(fallocate64)(fd, mode, off, len);
	int e = errno;
	pc_unlock();
	errno = e;
	return r;
}

PC_EXPORT int posix_fallocate(int fd, off_t off, off_t len)
{
	if (pc_fast_ignored(fd))
		return REAL(posix_fallocate)(fd, off, len);
	pc_lock();
	pc_size_change(fd, off + len, 0);
	int r = REAL(posix_fallocate)(fd, off, len);
	pc_unlock();
	return r;
}

PC_EXPORT int posix_fallocate64(int fd, off64_t off, off64_t len)
{
	if (pc_fast_ignored(fd))
		return REAL(posix_fallocate64)(fd, off, len);
	pc_lock();
	pc_size_change(fd, off + len, 0);
	int r = REAL(posix_fallocate64)(fd, off, len);
	pc_unlock();
	return r;
}

/* ---- the wrappers: syncs ---- */

static int pc_do_fsync(int fd, int data_only)
{
	int (*real)(int) = data_only ? REAL(fdatasync) : REAL(fsync);
	if (pc_fast_ignored(fd))
		return real(fd);
	pc_lock();
	int k = pc_classify(fd);
	if (k != FD_FILE && k != FD_DIR) {
		pc_unlock();
		return real(fd);
	}
	uint64_t mark = pc_seq++;
	struct inode *ino = k == FD_FILE ? fd_ino[fd] : NULL;
	char *dir = k == FD_DIR ? pc_strdup(fd_dir[fd]) : NULL;
	if (ino != NULL)
		ino->refs++;
	pc_unlock();

	int r = real(fd);
	int e = errno;

	pc_lock();
	if (r == 0) {
		if (ino != NULL) {
			if (data_only)
				st.fdatasyncs++;
			else
				st.fsyncs++;
			pc_drop_before(ino, mark);
			if (pc_dirs_linux)
				pc_ops_durable(NULL, 1, ino->dev, ino->ino, mark);
		} else {
			st.dir_fsyncs++;
			pc_ops_durable(dir, 0, 0, 0, mark);
		}
	}
	if (ino != NULL) {
		ino->refs--;
		pc_inode_maybe_free(ino);
	}
	pc_unlock();
	free(dir);
	errno = e;
	return r;
}

PC_EXPORT int fsync(int fd)
{
	return pc_do_fsync(fd, 0);
}

PC_EXPORT int fdatasync(int fd)
{
	return pc_do_fsync(fd, 1);
}

PC_EXPORT int sync_file_range(int fd, off64_t off, off64_t n,
                              unsigned int flags)
{
	if (!pc_fast_ignored(fd)) {
		pc_lock();
		if (pc_classify(fd) == FD_FILE)
			st.sync_file_ranges++;
		pc_unlock();
	}
	return REAL(sync_file_range)(fd, off, n, flags);
}

static void pc_all_durable_after(uint64_t mark)
{
	for (struct inode *i = pc_inodes, *next; i != NULL; i = next) {
		next = i->next;
		pc_drop_before(i, mark);
		pc_inode_maybe_free(i);
	}
	pc_ops_durable(NULL, 0, 0, 0, mark);
}

PC_EXPORT void sync(void)
{
	if (!pc_enabled) {
		REAL(sync)();
		return;
	}
	pc_lock();
	uint64_t mark = pc_seq++;
	pc_unlock();
	REAL(sync)();
	pc_lock();
	st.syncs++;
	pc_all_durable_after(mark);
	pc_unlock();
}

PC_EXPORT int syncfs(int fd)
{
	if (!pc_enabled)
		return REAL(syncfs)(fd);
	pc_lock();
	uint64_t mark = pc_seq++;
	pc_unlock();
	int r = REAL(syncfs)(fd);
	int e = errno;
	if (r == 0) {
		pc_lock();
		st.syncs++;
		pc_all_durable_after(mark);
		pc_unlock();
	}
	errno = e;
	return r;
}

/* ---- the wrappers: open, close ---- */

static int pc_do_open(int dfd, const char *path, int flags, mode_t mode,
                      int (*real)(int, const char *, int, ...))
{
	if (!pc_enabled)
		return real(dfd, path, flags, mode);
	char abs[PATH_MAX];
	if (!(flags & (O_CREAT | O_TRUNC)) ||
	    pc_abs(dfd, path, abs, sizeof abs) < 0 || !pc_under(abs)) {
		int fd = real(dfd, path, flags, mode);
		if (fd >= 0) {
			pc_lock();
			pc_fd_forget(fd);
			pc_unlock();
		}
		return fd;
	}
	pc_lock();
	struct stat sb;
	int exists = lstat(abs, &sb) == 0;
	if (exists && S_ISREG(sb.st_mode) && (flags & O_TRUNC) &&
	    (flags & O_ACCMODE) != O_RDONLY && sb.st_size > 0) {
		int tfd = REAL(open)(abs, O_RDONLY | O_CLOEXEC);
		if (tfd >= 0) {
			struct inode *ino =
			    pc_inode_get(sb.st_dev, sb.st_ino, tfd);
			st.truncates++;
			pc_record(ino, tfd, 0, (size_t)sb.st_size);
			ino->u[ino->n - 1].wlen = 0;
			REAL(close)(tfd);
		}
	}
	int fd = real(dfd, path, flags, mode);
	int e = errno;
	if (fd >= 0) {
		pc_fd_forget(fd);
		if (!exists && (flags & O_CREAT)) {
			char *dir = pc_parent(abs);
			struct nsop *op = pc_op_push(OP_CREATE, dir, abs, NULL,
			                             -1);
			free(dir);
			if (fstat(fd, &sb) == 0) {
				op->dev = sb.st_dev;
				op->ino = sb.st_ino;
			}
			st.creates++;
		}
	}
	pc_unlock();
	errno = e;
	return fd;
}

static int pc_openat_real(int dfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_arg(ap, mode_t);
	va_end(ap);
	return REAL(openat)(dfd, path, flags, mode);
}

static int pc_openat64_real(int dfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = va_arg(ap, mode_t);
	va_end(ap);
	return REAL(openat64)(dfd, path, flags, mode);
}

#define PC_MODE(flags, mode)                                                   \
	do {                                                                   \
		if ((flags) & (O_CREAT | __O_TMPFILE)) {                       \
			va_list ap;                                            \
			va_start(ap, flags);                                   \
			mode = va_arg(ap, mode_t);                             \
			va_end(ap);                                            \
		}                                                              \
	} while (0)

PC_EXPORT int open(const char *path, int flags, ...)
{
	mode_t mode = 0;
	PC_MODE(flags, mode);
	return pc_do_open(AT_FDCWD, path, flags, mode, pc_openat_real);
}

PC_EXPORT int open64(const char *path, int flags, ...)
{
	mode_t mode = 0;
	PC_MODE(flags, mode);
	return pc_do_open(AT_FDCWD, path, flags, mode, pc_openat64_real);
}

PC_EXPORT int openat(int dfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	PC_MODE(flags, mode);
	return pc_do_open(dfd, path, flags, mode, pc_openat_real);
}

PC_EXPORT int openat64(int dfd, const char *path, int flags, ...)
{
	mode_t mode = 0;
	PC_MODE(flags, mode);
	return pc_do_open(dfd, path, flags, mode, pc_openat64_real);
}

PC_EXPORT int __open_2(const char *path, int flags)
{
	return pc_do_open(AT_FDCWD, path, flags, 0, pc_openat_real);
}

PC_EXPORT int __open64_2(const char *path, int flags)
{
	return pc_do_open(AT_FDCWD, path, flags, 0, pc_openat64_real);
}

PC_EXPORT int __openat_2(int dfd, const char *path, int flags)
{
	return pc_do_open(dfd, path, flags, 0, pc_openat_real);
}

PC_EXPORT int __openat64_2(int dfd, const char *path, int flags)
{
	return pc_do_open(dfd, path, flags, 0, pc_openat64_real);
}

PC_EXPORT int creat(const char *path, mode_t mode)
{
	return pc_do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode,
	                  pc_openat_real);
}

PC_EXPORT int creat64(const char *path, mode_t mode)
{
	return pc_do_open(AT_FDCWD, path, O_CREAT | O_WRONLY | O_TRUNC, mode,
	                  pc_openat64_real);
}

PC_EXPORT int close(int fd)
{
	if (pc_enabled && fd >= 0 && fd < FD_MAX) {
		int k = __atomic_load_n(&fd_kind[fd], __ATOMIC_RELAXED);
		if (k == FD_FILE || k == FD_DIR) {
			pc_lock();
			pc_fd_forget(fd);
			pc_unlock();
		} else {
			__atomic_store_n(&fd_kind[fd], FD_UNKNOWN,
			                 __ATOMIC_RELAXED);
		}
	}
	return REAL(close)(fd);
}

PC_EXPORT int dup2(int oldfd, int newfd)
{
	if (pc_enabled && oldfd != newfd) {
		pc_lock();
		pc_fd_forget(newfd);
		pc_unlock();
	}
	return REAL(dup2)(oldfd, newfd);
}

PC_EXPORT int dup3(int oldfd, int newfd, int flags)
{
	if (pc_enabled && oldfd != newfd) {
		pc_lock();
		pc_fd_forget(newfd);
		pc_unlock();
	}
	return REAL(dup3)(oldfd, newfd, flags);
}

/* ---- the wrappers: names ---- */

static int pc_do_rename(int odfd, const char *a, int ndfd, const char *b,
                        unsigned int flags, int which)
{
	char A[PATH_MAX], B[PATH_MAX];
	int watched = pc_enabled && pc_abs(odfd, a, A, sizeof A) == 0 &&
	              pc_abs(ndfd, b, B, sizeof B) == 0 &&
	              (pc_under(A) || pc_under(B));
	int saved = -1;
	if (watched) {
		pc_lock();
		struct stat sb;
		if (!(flags & RENAME_EXCHANGE) && lstat(B, &sb) == 0 &&
		    S_ISREG(sb.st_mode))
			saved = REAL(open)(B, O_RDONLY | O_CLOEXEC);
	}
	int r;
	if (which == 0)
		r = REAL(rename)(a, b);
	else if (which == 1)
		r = REAL(renameat)(odfd, a, ndfd, b);
	else
		r = REAL(renameat2)(odfd, a, ndfd, b, flags);
	int e = errno;
	if (watched) {
		if (r == 0) {
			char *dir = pc_parent(B);
			pc_op_push(flags & RENAME_EXCHANGE ? OP_EXCHANGE
			                                   : OP_RENAME,
			           dir, A, B, saved);
			free(dir);
			st.renames++;
		} else if (saved >= 0) {
			REAL(close)(saved);
		}
		pc_unlock();
	}
	errno = e;
	return r;
}

PC_EXPORT int rename(const char *a, const char *b)
{
	return pc_do_rename(AT_FDCWD, a, AT_FDCWD, b, 0, 0);
}

PC_EXPORT int renameat(int odfd, const char *a, int ndfd, const char *b)
{
	return pc_do_rename(odfd, a, ndfd, b, 0, 1);
}

PC_EXPORT int renameat2(int odfd, const char *a, int ndfd, const char *b,
                        unsigned int flags)
{
	return pc_do_rename(odfd, a, ndfd, b, flags, 2);
}

static int pc_do_unlink(int dfd, const char *path, int which)
{
	char A[PATH_MAX];
	int watched = pc_enabled && pc_abs(dfd, path, A, sizeof A) == 0 &&
	              pc_under(A);
	int saved = -1;
	struct stat sb;
	if (watched) {
		pc_lock();
		if (lstat(A, &sb) == 0 && S_ISREG(sb.st_mode))
			saved = REAL(open)(A, O_RDONLY | O_CLOEXEC);
	}
	int r = which == 0 ? REAL(unlink)(path)
	                   : which == 1 ? REAL(unlinkat)(dfd, path, 0)
	                                : REAL(remove)(path);
	int e = errno;
	if (watched) {
		if (r == 0 && saved >= 0) {
			char *dir = pc_parent(A);
			pc_op_push(OP_UNLINK, dir, A, NULL, saved);
			free(dir);
			st.unlinks++;
		} else if (saved >= 0) {
			REAL(close)(saved);
		}
		pc_unlock();
	}
	errno = e;
	return r;
}

PC_EXPORT int unlink(const char *path)
{
	return pc_do_unlink(AT_FDCWD, path, 0);
}

PC_EXPORT int unlinkat(int dfd, const char *path, int flags)
{
	if (flags & AT_REMOVEDIR) /* rmdir: not modelled */
		return REAL(unlinkat)(dfd, path, flags);
	return pc_do_unlink(dfd, path, 1);
}

PC_EXPORT int remove(const char *path)
{
	return pc_do_unlink(AT_FDCWD, path, 2);
}

static int pc_do_mkdir(int dfd, const char *path, mode_t mode, int which)
{
	char A[PATH_MAX];
	int watched = pc_enabled && pc_abs(dfd, path, A, sizeof A) == 0 &&
	              pc_under(A);
	if (watched)
		pc_lock();
	int r = which == 0 ? REAL(mkdir)(path, mode)
	                   : REAL(mkdirat)(dfd, path, mode);
	int e = errno;
	if (watched) {
		if (r == 0) {
			char *dir = pc_parent(A);
			pc_op_push(OP_MKDIR, dir, A, NULL, -1);
			free(dir);
			st.mkdirs++;
		}
		pc_unlock();
	}
	errno = e;
	return r;
}

PC_EXPORT int mkdir(const char *path, mode_t mode)
{
	return pc_do_mkdir(AT_FDCWD, path, mode, 0);
}

PC_EXPORT int mkdirat(int dfd, const char *path, mode_t mode)
{
	return pc_do_mkdir(dfd, path, mode, 1);
}
