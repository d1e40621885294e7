/*
 * tests/crash/test_powercut.c - proves the power-cut shim (powercut.c)
 * itself: each scenario runs in a child process re-executed with the shim
 * preloaded; the child writes, syncs some of it, and cuts the power; the
 * parent then checks that exactly the synced state is left.
 *
 * Usage: test_powercut [SHIM.so]  (default: PC_SHIM from the build).
 * Exit 0 pass, 1 fail, 77 skip (no shim).
 */
#undef _FILE_OFFSET_BITS
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PC_SHIM
#define PC_SHIM "tests/crash/.libs/powercut.so"
#endif

#define REC 64       /* record size in the thread scenarios */
#define NTHREADS 4
#define SYNC_EVERY 8

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, " (%s)\n", strerror(errno));
	exit(3);
}

/* ---- child side: runs under the shim ---- */

static char D[4096];

static const char *P(const char *name)
{
	static char buf[4][4200];
	static int k;
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof buf[k], "%s/%s", D, name);
	return buf[k];
}

static void fill(int fd, char c, size_t n)
{
	char buf[8192];
	memset(buf, c, sizeof buf);
	while (n > 0) {
		size_t k = n < sizeof buf ? n : sizeof buf;
		if (write(fd, buf, k) != (ssize_t)k)
			die("write");
		n -= k;
	}
}

static void dirsync(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY);
	if (fd < 0 || fsync(fd) < 0)
		die("dirsync %s", dir);
	close(fd);
}

/* A file NAME holding n bytes of c, fsynced, its name durable. */
static void durable(const char *name, char c, size_t n)
{
	int fd = open(P(name), O_CREAT | O_RDWR | O_TRUNC, 0644);
	if (fd < 0)
		die("open %s", name);
	fill(fd, c, n);
	if (fsync(fd) < 0)
		die("fsync");
	close(fd);
	dirsync(D);
}

static void cut(void)
{
	fflush(stdout);
	kill(getpid(), SIGUSR2);
	/* The shim's thread ends the process; bounded by SIGALRM. */
	alarm(10);
	for (;;)
		pause();
}

static void rec_fill(unsigned char *r, int t, unsigned n)
{
	for (int i = 0; i < REC; i++)
		r[i] = (unsigned char)(t * 31 + n * 7 + (unsigned)i);
}

static volatile int stop_threads;

static void *writer(void *arg)
{
	int t = (int)(long)arg;
	char name[32];
	snprintf(name, sizeof name, "t%d", t);
	int fd = open(P(name), O_WRONLY | O_APPEND);
	if (fd < 0)
		die("open %s", name);
	for (unsigned n = 0; !stop_threads; n++) {
		unsigned char r[REC];
		rec_fill(r, t, n);
		/* alternate write and writev */
		if (n % 2) {
			struct iovec v[2] = {{r, 10}, {r + 10, REC - 10}};
			if (writev(fd, v, 2) != REC)
				die("writev");
		} else if (write(fd, r, REC) != REC) {
			die("write");
		}
		if ((n + 1) % SYNC_EVERY == 0) {
			if ((t % 2 ? fdatasync(fd) : fsync(fd)) < 0)
				die("fsync");
			/* durable: report it (stdout is a pipe to the parent,
			 * outside the watched directory) */
			char line[64];
			int l = snprintf(line, sizeof line, "%d %u\n", t, n + 1);
			if (write(1, line, (size_t)l) != l)
				die("report");
		}
	}
	return NULL;
}

static int child(const char *sc)
{
	if (strcmp(sc, "basic") == 0) {
		durable("a", 'A', 4096);
		int fd = open(P("a"), O_RDWR | O_APPEND);
		fill(fd, 'B', 4096);
		if (pwrite(fd, "CC", 2, 10) != 2)
			die("pwrite");
		cut();
	} else if (strcmp(sc, "trunc") == 0) {
		durable("a", 'A', 4096);
		int fd = open(P("a"), O_RDWR);
		if (ftruncate(fd, 100) < 0 || pwrite(fd, "X", 1, 50) != 1)
			die("ftruncate");
		if (ftruncate(fd, 9000) < 0)
			die("ftruncate up");
		cut();
	} else if (strcmp(sc, "otrunc") == 0) {
		durable("a", 'A', 4096);
		int fd = open(P("a"), O_WRONLY | O_TRUNC);
		fill(fd, 'Z', 10);
		cut();
	} else if (strcmp(sc, "newfile") == 0 ||
	           strcmp(sc, "newfile_linux") == 0) {
		int fd = open(P("n"), O_CREAT | O_WRONLY, 0644);
		fill(fd, 'N', 1000);
		if (fsync(fd) < 0)
			die("fsync");
		cut();
	} else if (strcmp(sc, "replace") == 0 ||
	           strcmp(sc, "replace_synced") == 0) {
		durable("final", 'O', 3000);
		int fd = open(P("tmp"), O_CREAT | O_WRONLY | O_TRUNC, 0644);
		fill(fd, 'W', 5000);
		if (fsync(fd) < 0)
			die("fsync");
		close(fd);
		if (rename(P("tmp"), P("final")) < 0)
			die("rename");
		if (strcmp(sc, "replace_synced") == 0)
			dirsync(D);
		cut();
	} else if (strcmp(sc, "unlink") == 0) {
		durable("u", 'U', 2000);
		if (unlink(P("u")) < 0)
			die("unlink");
		cut();
	} else if (strcmp(sc, "dsync") == 0) {
		durable("s", 'S', 100);
		int fd = open(P("s"), O_WRONLY | O_APPEND | O_DSYNC);
		fill(fd, 'T', 100);
		int fd2 = open(P("s"), O_WRONLY);
		if (pwrite(fd2, "xx", 2, 150) != 2) /* not durable */
			die("pwrite");
		fill(fd, 'V', 50); /* durable, after the pwrite */
		cut();
	} else if (strcmp(sc, "writev_lseek") == 0) {
		durable("l", 'A', 8192);
		int fd = open(P("l"), O_WRONLY);
		char b[2048];
		memset(b, 'B', sizeof b);
		struct iovec v[2] = {{b, sizeof b}, {b, sizeof b}};
		if (lseek(fd, 4096, SEEK_SET) != 4096 || writev(fd, v, 2) != 4096)
			die("writev");
		if (pwritev(fd, v, 1, 8000) != 2048) /* extends the file */
			die("pwritev");
		cut();
	} else if (strcmp(sc, "after") == 0) {
		int fd = open(P("r"), O_CREAT | O_WRONLY | O_APPEND, 0644);
		dirsync(D);
		for (int i = 0; i < 10; i++) {
			char r[100];
			memset(r, '0' + i, sizeof r);
			if (write(fd, r, sizeof r) != (ssize_t)sizeof r)
				die("write");
			if (i < 3 && fsync(fd) < 0)
				die("fsync");
		}
		return 4; /* the cut should have come first */
	} else if (strcmp(sc, "mkdir") == 0) {
		if (mkdir(P("sub"), 0755) < 0)
			die("mkdir");
		int fd = open(P("sub/x"), O_CREAT | O_WRONLY, 0644);
		fill(fd, 'X', 10);
		if (fsync(fd) < 0)
			die("fsync");
		dirsync(P("sub"));
		cut();
	} else if (strcmp(sc, "threads") == 0 || strcmp(sc, "torn") == 0) {
		pthread_t th[NTHREADS];
		for (int t = 0; t < NTHREADS; t++) {
			char name[32];
			snprintf(name, sizeof name, "t%d", t);
			int fd = open(P(name), O_CREAT | O_WRONLY, 0644);
			close(fd);
		}
		dirsync(D);
		for (int t = 0; t < NTHREADS; t++)
			pthread_create(&th[t], NULL, writer, (void *)(long)t);
		struct timespec ts = {0, 300 * 1000 * 1000};
		nanosleep(&ts, NULL); /* let them run, then cut mid-flight */
		cut();
	} else if (strcmp(sc, "stats") == 0) {
		int fd = open(P("s"), O_CREAT | O_WRONLY, 0644);
		for (int i = 0; i < 100; i++) {
			if (write(fd, "0123456789", 10) != 10)
				die("write");
			if (i % 10 == 9 && fdatasync(fd) < 0)
				die("fdatasync");
		}
		close(fd);
		/* outside the watched directory: not counted */
		fd = open("/dev/null", O_WRONLY);
		if (write(fd, "x", 1) != 1 || (fsync(fd) < 0 && errno != EINVAL))
			die("devnull");
		close(fd);
		return 0;
	} else {
		fprintf(stderr, "unknown scenario %s\n", sc);
		return 3;
	}
	return 3;
}

/* ---- parent side ---- */

static int failures;

static void check(int ok, const char *sc, const char *fmt, ...)
{
	if (ok)
		return;
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "FAIL %s: ", sc);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	failures++;
}

/* Content of D/name into buf; its length, or -1 if absent. */
static long slurp(const char *dir, const char *name, unsigned char *buf,
                  size_t cap)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	long n = 0;
	ssize_t r;
	while ((size_t)n < cap && (r = read(fd, buf + n, cap - (size_t)n)) > 0)
		n += r;
	close(fd);
	return n;
}

static int all(const unsigned char *b, long from, long to, char c)
{
	for (long i = from; i < to; i++)
		if (b[i] != (unsigned char)c)
			return 0;
	return 1;
}

static unsigned char big[1 << 24];

/* Run scenario sc in a child under the shim; returns its wait status and
 * collects its stdout into out. */
static int run(const char *self, const char *shim, const char *sc,
               const char *dir, const char *extra_env, char *out,
               size_t outcap)
{
	int p[2];
	if (pipe(p) < 0)
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		char stats[4300];
		snprintf(stats, sizeof stats, "%s.stats", dir);
		setenv("LD_PRELOAD", shim, 1);
		setenv("PMQ_POWERCUT_DIR", dir, 1);
		setenv("PMQ_POWERCUT_STATS", stats, 1);
		if (extra_env != NULL)
			putenv((char *)extra_env);
		dup2(p[1], 1);
		close(p[0]);
		close(p[1]);
		execl(self, self, "--child", sc, dir, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	size_t n = 0;
	ssize_t r;
	while ((r = read(p[0], out + n, outcap - 1 - n)) > 0) {
		n += (size_t)r;
		if (n == outcap - 1)
			n = 0; /* keep going; the tail matters little */
	}
	out[n] = '\0';
	close(p[0]);
	int status;
	if (waitpid(pid, &status, 0) < 0)
		die("waitpid");
	return status;
}

static int cut_ok(int status)
{
	/* SIGKILL after the undo (or _exit(137) if the shim cannot fork). */
	return (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ||
	       (WIFEXITED(status) && WEXITSTATUS(status) == 137);
}

static long stat_get(const char *dir, const char *key)
{
	char path[4200], line[256];
	snprintf(path, sizeof path, "%s.stats", dir);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return -1;
	long v = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f) != NULL)
		if (strncmp(line, key, kl) == 0 && line[kl] == ' ')
			v = atol(line + kl + 1);
	fclose(f);
	return v;
}

static void check_threads(const char *sc, const char *dir, const char *out,
                          int torn)
{
	long confirmed[NTHREADS] = {0};
	for (const char *l = out; *l;) {
		int t;
		long n;
		if (sscanf(l, "%d %ld", &t, &n) == 2 && t >= 0 && t < NTHREADS &&
		    n > confirmed[t])
			confirmed[t] = n;
		const char *nl = strchr(l, '\n');
		if (nl == NULL)
			break;
		l = nl + 1;
	}
	long total = 0, bytes = 0;
	for (int t = 0; t < NTHREADS; t++) {
		char name[32];
		snprintf(name, sizeof name, "t%d", t);
		long len = slurp(dir, name, big, sizeof big);
		check(len >= 0, sc, "%s missing", name);
		if (len < 0)
			continue;
		bytes += len;
		check(len >= confirmed[t] * REC, sc,
		      "%s: %ld bytes but %ld records were fsynced", name, len,
		      confirmed[t]);
		if (!torn)
			check(len % (REC * SYNC_EVERY) == 0, sc,
			      "%s: %ld bytes is not a whole number of fsync "
			      "groups: unsynced writes survived", name, len);
		for (long off = 0; off < len; off += REC) {
			unsigned char r[REC];
			rec_fill(r, t, (unsigned)(off / REC));
			long k = len - off < REC ? len - off : REC;
			if (memcmp(big + off, r, (size_t)k) != 0) {
				check(0, sc, "%s: record %ld damaged", name,
				      off / REC);
				break;
			}
		}
		total += confirmed[t];
	}
	check(total > 0, sc, "no record was fsynced before the cut");
	if (!torn)
		check(bytes + stat_get(dir, "discarded_bytes") ==
		          stat_get(dir, "write_bytes"), sc,
		      "%ld bytes left + %ld discarded != %ld written", bytes,
		      stat_get(dir, "discarded_bytes"),
		      stat_get(dir, "write_bytes"));
}

int main(int argc, char **argv)
{
	if (argc >= 4 && strcmp(argv[1], "--child") == 0) {
		snprintf(D, sizeof D, "%s", argv[3]);
		return child(argv[2]);
	}
	const char *shim = argc > 1 ? argv[1] : PC_SHIM;
	if (access(shim, R_OK) != 0) {
		printf("SKIP: %s not built\n", shim);
		return 77;
	}
	char self[4096];
	ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
	if (sl < 0)
		die("readlink");
	self[sl] = '\0';
	char base[] = "/tmp/powercut-test.XXXXXX";
	if (mkdtemp(base) == NULL)
		die("mkdtemp");

	static const struct {
		const char *sc, *env;
	} scs[] = {
		{"basic", NULL},     {"trunc", NULL},
		{"otrunc", NULL},    {"newfile", NULL},
		{"newfile_linux", "PMQ_POWERCUT_DIRS=linux"},
		{"replace", NULL},   {"replace_synced", NULL},
		{"unlink", NULL},    {"dsync", NULL},
		{"writev_lseek", NULL},
		{"after", "PMQ_POWERCUT_AFTER=5"},
		{"mkdir", NULL},     {"threads", NULL},
		{"torn", "PMQ_POWERCUT_MODE=torn"},
		{"stats", NULL},
	};
	static char out[1 << 20];
	for (size_t i = 0; i < sizeof scs / sizeof scs[0]; i++) {
		const char *sc = scs[i].sc;
		char dir[4200];
		snprintf(dir, sizeof dir, "%s/%s", base, sc);
		if (mkdir(dir, 0755) < 0)
			die("mkdir");
		int before = failures;
		int status = run(self, shim, sc, dir, scs[i].env, out, sizeof out);
		unsigned char *b = big;
		long n;
		if (strcmp(sc, "stats") == 0) {
			check(WIFEXITED(status) && WEXITSTATUS(status) == 0, sc,
			      "status %d", status);
			check(stat_get(dir, "writes") == 100, sc, "writes %ld",
			      stat_get(dir, "writes"));
			check(stat_get(dir, "fdatasyncs") == 10, sc,
			      "fdatasyncs %ld", stat_get(dir, "fdatasyncs"));
			check(stat_get(dir, "syncs_total") == 10, sc,
			      "syncs_total %ld", stat_get(dir, "syncs_total"));
			check(stat_get(dir, "cut") == 0, sc, "cut");
			check(slurp(dir, "s", b, sizeof big) == 1000, sc,
			      "content");
		} else {
			check(cut_ok(status), sc, "child status %#x, not a cut",
			      status);
			check(stat_get(dir, "cut") == 1, sc, "no stats at cut");
		}
		if (strcmp(sc, "basic") == 0) {
			n = slurp(dir, "a", b, sizeof big);
			check(n == 4096 && all(b, 0, n, 'A'), sc,
			      "len %ld, want 4096 x A", n);
		} else if (strcmp(sc, "trunc") == 0 ||
		           strcmp(sc, "otrunc") == 0) {
			n = slurp(dir, "a", b, sizeof big);
			check(n == 4096 && all(b, 0, n, 'A'), sc,
			      "len %ld, want 4096 x A", n);
		} else if (strcmp(sc, "newfile") == 0) {
			check(slurp(dir, "n", b, sizeof big) == -1, sc,
			      "a file whose directory was never fsynced "
			      "survived");
		} else if (strcmp(sc, "newfile_linux") == 0) {
			n = slurp(dir, "n", b, sizeof big);
			check(n == 1000 && all(b, 0, n, 'N'), sc, "len %ld", n);
		} else if (strcmp(sc, "replace") == 0) {
			n = slurp(dir, "final", b, sizeof big);
			check(n == 3000 && all(b, 0, n, 'O'), sc,
			      "final: len %ld, want the old 3000 x O", n);
			check(slurp(dir, "tmp", b, sizeof big) == -1, sc,
			      "tmp survived");
		} else if (strcmp(sc, "replace_synced") == 0) {
			n = slurp(dir, "final", b, sizeof big);
			check(n == 5000 && all(b, 0, n, 'W'), sc,
			      "final: len %ld, want the new 5000 x W", n);
			check(slurp(dir, "tmp", b, sizeof big) == -1, sc,
			      "tmp exists");
		} else if (strcmp(sc, "unlink") == 0) {
			n = slurp(dir, "u", b, sizeof big);
			check(n == 2000 && all(b, 0, n, 'U'), sc,
			      "unlinked file not restored: len %ld", n);
		} else if (strcmp(sc, "dsync") == 0) {
			n = slurp(dir, "s", b, sizeof big);
			check(n == 250 && all(b, 0, 100, 'S') &&
			          all(b, 100, 200, 'T') && all(b, 200, 250, 'V'),
			      sc, "len %ld, want S*100 T*100 V*50", n);
		} else if (strcmp(sc, "writev_lseek") == 0) {
			n = slurp(dir, "l", b, sizeof big);
			check(n == 8192 && all(b, 0, n, 'A'), sc,
			      "len %ld, want 8192 x A", n);
		} else if (strcmp(sc, "after") == 0) {
			n = slurp(dir, "r", b, sizeof big);
			check(n == 300 && all(b, 0, 100, '0') &&
			          all(b, 200, 300, '2'), sc,
			      "len %ld, want the 3 fsynced records", n);
			check(stat_get(dir, "writes") == 5, sc, "writes %ld",
			      stat_get(dir, "writes"));
		} else if (strcmp(sc, "mkdir") == 0) {
			check(slurp(dir, "sub/x", b, sizeof big) == -1, sc,
			      "a directory whose parent was never fsynced "
			      "survived");
		} else if (strcmp(sc, "threads") == 0) {
			check_threads(sc, dir, out, 0);
			check(stat_get(dir, "discarded_writes") > 0, sc,
			      "nothing was discarded");
		} else if (strcmp(sc, "torn") == 0) {
			check_threads(sc, dir, out, 1);
		}
		printf("%s %s\n", failures == before ? "ok  " : "FAIL", sc);
	}
	if (failures == 0) {
		char cmd[4200];
		snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", base);
	} else {
		fprintf(stderr, "left %s for inspection\n", base);
	}
	return failures ? 1 : 0;
}
