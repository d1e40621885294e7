/*
 * test_slots.c - in-order replies on one connection: reply slots closed out
 * of order still leave in the order they were opened, ordered sends wait
 * behind open slots, PMQ_SEND_NOW does not, a slot outlives its connection
 * safely, and output over the high-water mark reports full and drains.
 * Also: bytes sent by reference (conn_slot_send_ref, conn_send_ref) keep
 * slot order and are released exactly once, also when the connection
 * dies; conn_block_input stops a publisher until the full connection
 * drains or either one goes away; a large read reaches the transport in
 * one callback, a partial frame is kept across reads, a resumed
 * connection sees its buffered input on a later callback, and an idle
 * connection holds no buffers.  A stored read answer (ABI 1.2) made of
 * file and memory pieces leaves in slot order, the file pieces through
 * sendfile, and the answer is freed once, after its last byte left or
 * when the connection died.
 * Drives core/conn.c over socketpairs with a stub transport.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "conn.h"
#include "daemon.h"
#include "listener.h"
#include "storage.h"

static int closed_calls, closed_reason, drained_calls, input_calls;
/* t_input: with need > 0, consume only whole frames of need bytes that
 * start with 'F' (checked through peek); block_target: call
 * conn_block_input on it and keep the result in block_rc. */
static size_t need;
static int frames_ok;
static pmq_conn *block_target;
static int block_rc;
/* t_input: pause and consume nothing, once. */
static int pause_next;

static void *
t_create(pmq_instance *inst)
{
	return inst;
}

static int
t_configure(void *st, const char *k, const char *v, char *e, size_t n)
{
	return PMQ_ERR_NOTFOUND;
}

static void
t_destroy(void *st)
{
}

static void *
t_open(void *st, pmq_conn *c)
{
	return c;
}

static void
t_input(void *st, void *cs, pmq_conn *c)
{
	input_calls++;
	if (pause_next) {
		pause_next = 0;
		conn_pause(c);
		return;
	}
	if (need > 0) {
		while (conn_input_len(c) >= need) {
			const char *p = conn_input_peek(c, need);

			if (p != NULL && p[0] == 'F' && p[need - 1] == 'E')
				frames_ok++;
			conn_input_drain(c, need);
		}
	} else {
		conn_input_drain(c, conn_input_len(c));
	}
	if (block_target != NULL)
		block_rc = conn_block_input(block_target);
}

static void
t_drained(void *st, void *cs, pmq_conn *c)
{
	drained_calls++;
}

static void
t_closed(void *st, void *cs, int reason)
{
	closed_calls++;
	closed_reason = reason;
}

static void
t_deliver(void *st, void *u, pmq_msg *m, const struct pmq_delivery *d)
{
}

static const struct pmq_transport_ops ops = {
	.size = sizeof ops,
	.create = t_create,
	.configure = t_configure,
	.destroy = t_destroy,
	.conn_open = t_open,
	.conn_input = t_input,
	.conn_drained = t_drained,
	.conn_closed = t_closed,
	.deliver = t_deliver,
};

static struct pmq_plugin plugin = { .name = "stub", .ops = &ops };

struct fixture {
	struct event_base *base;
	struct listener ln;
	int peer;          /* our end of the socketpair */
	struct pmq_conn *c;
	int peer2;         /* a second connection, when a test makes one */
	struct pmq_conn *c2;
};

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	int sv[2];

	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	daemon_set_base(f->base);
	f->ln.inst.name = "listener test";
	f->ln.inst.plugin = &plugin;
	f->ln.inst.owner = &f->ln;
	f->ln.ops = &ops;
	f->ln.max_connections = 10;
	f->ln.output_high_water = 4096;
	f->ln.input_max = 1 << 20;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	f->peer = sv[0];
	f->c = conn_new(&f->ln, sv[1], "peer");
	assert_non_null(f->c);
	f->peer2 = -1;
	closed_calls = drained_calls = input_calls = 0;
	need = 0;
	frames_ok = 0;
	block_target = NULL;
	block_rc = -1;
	pause_next = 0;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	listener_close_all(&f->ln);
	close(f->peer);
	if (f->peer2 >= 0)
		close(f->peer2);
	conn_shutdown();
	event_base_free(f->base);
	daemon_set_base(NULL);
	free(f);
	return 0;
}

/* Run the loop until want bytes arrived at fd or 5 s passed. */
static size_t
read_fd(struct fixture *f, int fd, char *buf, size_t want)
{
	size_t got = 0;
	int i;

	for (i = 0; i < 500 && got < want; i++) {
		struct pollfd p = { fd, POLLIN, 0 };
		ssize_t n;

		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 10) == 1) {
			n = read(fd, buf + got, want - got);
			if (n > 0)
				got += (size_t)n;
		}
	}
	return got;
}

static size_t
read_peer(struct fixture *f, char *buf, size_t want)
{
	return read_fd(f, f->peer, buf, want);
}

/* Run the loop until *counter reaches want or 5 s passed. */
static void
loop_until(struct fixture *f, const int *counter, int want)
{
	int i;

	for (i = 0; i < 500 && *counter < want; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (*counter < want)
			(void)poll(NULL, 0, 10);
	}
}

static void
count_release(void *arg)
{
	(*(int *)arg)++;
}

/* A second connection in the fixture. */
static void
open_second(struct fixture *f)
{
	int sv[2];

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	f->peer2 = sv[0];
	f->c2 = conn_new(&f->ln, sv[1], "peer2");
	assert_non_null(f->c2);
}

/* Nothing arrives within a few loop turns. */
static void
assert_nothing_pending(struct fixture *f)
{
	struct pollfd p = { f->peer, POLLIN, 0 };
	int i;

	for (i = 0; i < 5; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_int_equal(poll(&p, 1, 20), 0);
}

static void
test_slots_out_of_order(void **state)
{
	struct fixture *f = *state;
	pmq_slot *a, *b, *c;
	char buf[64];

	a = conn_slot_open(f->c);
	b = conn_slot_open(f->c);
	c = conn_slot_open(f->c);
	assert_non_null(a);
	assert_non_null(b);
	assert_non_null(c);
	assert_int_equal(conn_slot_send(c, "3", 1), PMQ_OK);
	conn_slot_close(c);
	assert_int_equal(conn_slot_send(b, "2", 1), PMQ_OK);
	conn_slot_close(b);
	assert_nothing_pending(f); /* a still open: nothing may leave */
	assert_int_equal(conn_slot_send(a, "1", 1), PMQ_OK);
	conn_slot_close(a);
	assert_int_equal(read_peer(f, buf, 3), 3);
	assert_memory_equal(buf, "123", 3);
}

static void
test_ordered_send_waits_now_does_not(void **state)
{
	struct fixture *f = *state;
	pmq_slot *a;
	char buf[64];

	a = conn_slot_open(f->c);
	assert_int_equal(conn_send(f->c, "B", 1, PMQ_SEND_ORDERED), PMQ_OK);
	assert_int_equal(conn_send(f->c, "N", 1, PMQ_SEND_NOW), PMQ_OK);
	assert_int_equal(read_peer(f, buf, 1), 1);
	assert_int_equal(buf[0], 'N');
	assert_nothing_pending(f);
	assert_int_equal(conn_slot_send(a, "A", 1), PMQ_OK);
	conn_slot_close(a);
	assert_int_equal(read_peer(f, buf, 2), 2);
	assert_memory_equal(buf, "AB", 2);
}

static void
test_slot_outlives_connection(void **state)
{
	struct fixture *f = *state;
	pmq_slot *a;
	int i;

	a = conn_slot_open(f->c);
	assert_non_null(a);
	close(f->peer); /* the peer goes away */
	f->peer = open("/dev/null", O_RDONLY);
	for (i = 0; i < 100 && closed_calls == 0; i++)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(closed_calls, 1);
	assert_int_equal(closed_reason, PMQ_CLOSE_PEER);
	/* A late storage completion: the slot must still be usable. */
	assert_int_equal(conn_slot_send(a, "x", 1), PMQ_ERR_CLOSED);
	conn_slot_close(a);
}

static void
test_high_water_and_drain(void **state)
{
	struct fixture *f = *state;
	char chunk[1024], buf[65536];
	size_t total = 0, got;
	int i;

	memset(chunk, 'z', sizeof chunk);
	/* Fill well past what the socket buffer takes so output queues. */
	for (i = 0; i < 1024 && !conn_output_full(f->c); i++) {
		assert_int_equal(conn_send(f->c, chunk, sizeof chunk, 0), PMQ_OK);
		total += sizeof chunk;
	}
	assert_true(conn_output_full(f->c));
	assert_true(conn_output_len(f->c) >= 4096);
	got = 0;
	for (i = 0; i < 2000 && got < total; i++)
		got += read_peer(f, buf, total - got < sizeof buf ?
		    total - got : sizeof buf);
	assert_int_equal(got, total);
	for (i = 0; i < 100 && drained_calls == 0; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_int_equal(drained_calls, 1);
	assert_false(conn_output_full(f->c));
}

static void
test_flush_close_waits_for_slots(void **state)
{
	struct fixture *f = *state;
	pmq_slot *a;
	char buf[8];
	int i;

	a = conn_slot_open(f->c);
	conn_close(f->c, 1);
	assert_nothing_pending(f);
	assert_int_equal(closed_calls, 0);
	assert_int_equal(conn_slot_send(a, "ok", 2), PMQ_OK);
	conn_slot_close(a);
	assert_int_equal(read_peer(f, buf, 2), 2);
	assert_memory_equal(buf, "ok", 2);
	for (i = 0; i < 100 && closed_calls == 0; i++)
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	assert_int_equal(closed_calls, 1);
	assert_int_equal(closed_reason, PMQ_CLOSE_PLUGIN);
}


static void
test_send_ref_keeps_slot_order(void **state)
{
	struct fixture *f = *state;
	static const char bb[] = "BB", cc[] = "C", nn[] = "N";
	int rel_b = 0, rel_c = 0, rel_n = 0;
	pmq_slot *a, *b;
	char buf[8];

	a = conn_slot_open(f->c);
	b = conn_slot_open(f->c);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(conn_slot_send_ref(b, bb, 2, count_release, &rel_b),
	    PMQ_OK);
	conn_slot_close(b);
	assert_int_equal(conn_send_ref(f->c, cc, 1, count_release, &rel_c,
	    PMQ_SEND_ORDERED), PMQ_OK);
	assert_int_equal(conn_send_ref(f->c, nn, 1, count_release, &rel_n,
	    PMQ_SEND_NOW), PMQ_OK);
	assert_int_equal(read_peer(f, buf, 1), 1);
	assert_int_equal(buf[0], 'N');
	assert_int_equal(rel_n, 1);
	assert_nothing_pending(f); /* a still open */
	assert_int_equal(rel_b + rel_c, 0);
	assert_int_equal(conn_slot_send(a, "A", 1), PMQ_OK);
	conn_slot_close(a);
	assert_int_equal(read_peer(f, buf, 4), 4);
	assert_memory_equal(buf, "ABBC", 4);
	assert_nothing_pending(f);
	assert_int_equal(rel_b, 1);
	assert_int_equal(rel_c, 1);
	assert_int_equal(rel_n, 1);
	/* Everything left: no buffer is kept for an idle connection. */
	assert_null(f->c->out);
	assert_null(f->c->in);
}

static void
test_send_ref_released_when_conn_gone(void **state)
{
	struct fixture *f = *state;
	static const char x[] = "x";
	int rel_open = 0, rel_closed = 0, rel_now = 0, rel_late = 0;
	pmq_slot *a, *b;

	a = conn_slot_open(f->c);
	b = conn_slot_open(f->c);
	assert_int_equal(conn_slot_send_ref(a, x, 1, count_release, &rel_open),
	    PMQ_OK);
	assert_int_equal(conn_slot_send_ref(b, x, 1, count_release,
	    &rel_closed), PMQ_OK);
	conn_slot_close(b); /* waits behind a */
	assert_int_equal(conn_send_ref(f->c, x, 1, count_release, &rel_now,
	    PMQ_SEND_NOW), PMQ_OK);
	/* Dies before the loop ran: nothing was written. */
	conn_close(f->c, 0);
	assert_int_equal(rel_closed, 1); /* b was ours to free */
	assert_int_equal(rel_open, 0);   /* a is still the transport's */
	loop_until(f, &closed_calls, 1);
	assert_int_equal(closed_calls, 1);
	assert_int_equal(closed_reason, PMQ_CLOSE_PLUGIN);
	assert_int_equal(rel_now, 1);
	/* A late completion writes into the dead slot: released at once. */
	assert_int_equal(conn_slot_send_ref(a, x, 1, count_release, &rel_late),
	    PMQ_ERR_CLOSED);
	assert_int_equal(rel_late, 1);
	conn_slot_close(a);
	assert_int_equal(rel_open, 1);
	assert_int_equal(rel_closed, 1);
	assert_int_equal(rel_now, 1);
	assert_int_equal(rel_late, 1);
}


/* ---- stored read answers (storage_send_stored) ---- */

/* An answer as a storage plugin's log_read_extents gives it. */
struct answer {
	struct pmq_extents x;
	struct pmq_extent v[4];
	int fd;     /* the answer's own descriptor, closed by answer_free */
	int freed;
};

static void
answer_free(void *data)
{
	struct answer *a = data;

	close(a->fd);
	a->fd = -1;
	a->freed++;
}

static void *got_ref;

static void
take_ref(void *arg, int status, int64_t value, const void *data, size_t len)
{
	(void)arg;
	(void)value;
	assert_int_equal(status, PMQ_OK);
	assert_non_null(data);
	assert_true(len > 0);
	/* A piece of an extents answer cannot be referred to alone. */
	assert_null(storage_read_ref((const char *)data + 1));
	got_ref = storage_read_ref(data);
	assert_non_null(got_ref);
}

/* A temp file of n pattern bytes (returned in *content); its fd. */
static int
pattern_file(size_t n, unsigned char **content)
{
	char path[] = "/tmp/pmq-test-slots-XXXXXX";
	unsigned char *b = malloc(n);
	size_t i;
	int fd = mkstemp(path);

	assert_non_null(b);
	assert_true(fd >= 0);
	unlink(path);
	for (i = 0; i < n; i++)
		b[i] = (unsigned char)(i * 7 % 251);
	assert_int_equal(write(fd, b, n), (ssize_t)n);
	*content = b;
	return fd;
}

/* Complete a stored read with a (extents) and take its reference. */
static void *
complete_answer(struct answer *a, size_t len, int extents)
{
	struct pmq_io *io = storage_io_new(take_ref, NULL);

	assert_non_null(io);
	if (extents)
		storage_io_set_extents(io);
	got_ref = NULL;
	storage_io_done_data(io, PMQ_OK, a, len, answer_free);
	assert_int_equal(storage_io_run(), 1);
	assert_int_equal(a->freed, 0); /* the reference keeps it */
	return got_ref;
}

static void
test_send_stored_file_pieces_in_order(void **state)
{
	struct fixture *f = *state;
	unsigned char *content, *want, *buf;
	struct answer a = {.x = {.size = sizeof a.x, .n = 4, .v = a.v}};
	size_t total = 4 + 200000 + 3 + 40000, all = 1 + total + 1, off = 0;
	pmq_slot *s1, *s2;
	int file = pattern_file(300000, &content);
	void *ref;

	a.fd = dup(file);
	assert_true(a.fd >= 0);
	a.v[0] = (struct pmq_extent){.data = "hdr-", .len = 4, .fd = -1};
	a.v[1] = (struct pmq_extent){.pos = 1000, .len = 200000, .fd = a.fd};
	a.v[2] = (struct pmq_extent){.data = "mid", .len = 3, .fd = -1};
	a.v[3] = (struct pmq_extent){.pos = 250000, .len = 40000, .fd = a.fd};
	ref = complete_answer(&a, total, 1);
	s1 = conn_slot_open(f->c);
	s2 = conn_slot_open(f->c);
	assert_int_equal(storage_send_stored(s2, ref), PMQ_OK);
	conn_slot_close(s2);
	assert_int_equal(conn_send(f->c, "Z", 1, PMQ_SEND_ORDERED), PMQ_OK);
	assert_nothing_pending(f); /* s1 still open */
	assert_int_equal(conn_output_len(f->c), total + 1);
	assert_int_equal(conn_slot_send(s1, "A", 1), PMQ_OK);
	conn_slot_close(s1);

	want = malloc(all);
	buf = malloc(all);
	assert_non_null(want);
	assert_non_null(buf);
	want[off++] = 'A';
	memcpy(want + off, "hdr-", 4), off += 4;
	memcpy(want + off, content + 1000, 200000), off += 200000;
	memcpy(want + off, "mid", 3), off += 3;
	memcpy(want + off, content + 250000, 40000), off += 40000;
	want[off++] = 'Z';
	assert_int_equal(off, all);
	assert_int_equal(read_peer(f, (char *)buf, all), all);
	assert_memory_equal(buf, want, all);
	assert_nothing_pending(f);
	loop_until(f, &a.freed, 1);
	assert_int_equal(a.freed, 1);
	assert_null(f->c->out);
	free(want);
	free(buf);
	free(content);
	close(file);
}

struct bytes_answer {
	char b[19];
	int freed;
};

static void
bytes_free(void *data)
{
	((struct bytes_answer *)data)->freed++;
}

static void
take_bytes_ref(void *arg, int status, int64_t value, const void *data,
    size_t len)
{
	(void)arg;
	(void)value;
	assert_int_equal(status, PMQ_OK);
	assert_int_equal(len, 18);
	got_ref = storage_read_ref(data);
	assert_non_null(got_ref);
}

static void
test_send_stored_bytes_answer(void **state)
{
	struct fixture *f = *state;
	/* A storage without log_read_extents answers with bytes: the same
	 * call sends them by reference. */
	struct bytes_answer a = {.b = "plain stored bytes"};
	struct pmq_io *io = storage_io_new(take_bytes_ref, NULL);
	pmq_slot *s;
	char buf[18];

	assert_non_null(io);
	got_ref = NULL;
	storage_io_done_data(io, PMQ_OK, &a, 18, bytes_free);
	assert_int_equal(storage_io_run(), 1);
	s = conn_slot_open(f->c);
	assert_int_equal(storage_send_stored(s, got_ref), PMQ_OK);
	conn_slot_close(s);
	assert_int_equal(read_peer(f, buf, 18), 18);
	assert_memory_equal(buf, "plain stored bytes", 18);
	loop_until(f, &a.freed, 1);
	assert_int_equal(a.freed, 1);
}

/* A file cut under a queued file piece: the connection is closed with an
 * error instead of waiting forever for bytes the file no longer has. */
static void
test_send_stored_file_cut(void **state)
{
	struct fixture *f = *state;
	unsigned char *content;
	struct answer a = {.x = {.size = sizeof a.x, .n = 1, .v = a.v}};
	int file = pattern_file(100000, &content);
	static char buf[100000];
	pmq_slot *s;
	void *ref;

	a.fd = dup(file);
	a.v[0] = (struct pmq_extent){.pos = 0, .len = 100000, .fd = a.fd};
	ref = complete_answer(&a, 100000, 1);
	s = conn_slot_open(f->c);
	assert_int_equal(storage_send_stored(s, ref), PMQ_OK);
	conn_slot_close(s);
	assert_int_equal(ftruncate(file, 1000), 0);
	assert_int_equal(read_peer(f, buf, 1000), 1000);
	assert_memory_equal(buf, content, 1000);
	loop_until(f, &closed_calls, 1);
	assert_int_equal(closed_calls, 1);
	assert_int_equal(closed_reason, PMQ_CLOSE_ERROR);
	assert_int_equal(a.freed, 1);
	free(content);
	close(file);
}

static void
test_send_stored_released_when_conn_gone(void **state)
{
	struct fixture *f = *state;
	unsigned char *content;
	struct answer a = {.x = {.size = sizeof a.x, .n = 2, .v = a.v}};
	int file = pattern_file(100000, &content);
	pmq_slot *s1, *s2;
	void *ref;

	a.fd = dup(file);
	a.v[0] = (struct pmq_extent){.pos = 0, .len = 100000, .fd = a.fd};
	a.v[1] = (struct pmq_extent){.data = "m", .len = 1, .fd = -1};
	ref = complete_answer(&a, 100001, 1);
	s1 = conn_slot_open(f->c);
	s2 = conn_slot_open(f->c);
	assert_int_equal(storage_send_stored(s2, ref), PMQ_OK);
	conn_slot_close(s2); /* waits behind s1: nothing written */
	conn_close(f->c, 0);
	loop_until(f, &closed_calls, 1);
	assert_int_equal(closed_calls, 1);
	assert_int_equal(a.freed, 1); /* both pieces dropped, freed once */
	assert_int_equal(fcntl(file, F_GETFD) >= 0, 1);
	/* A late answer into the dead slot is freed at once. */
	{
		struct answer b = {.x = {.size = sizeof b.x, .n = 1, .v = b.v}};

		b.fd = dup(file);
		b.v[0] = (struct pmq_extent){.pos = 5, .len = 10, .fd = b.fd};
		ref = complete_answer(&b, 10, 1);
		assert_int_equal(storage_send_stored(s1, ref), PMQ_ERR_CLOSED);
		assert_int_equal(b.freed, 1);
	}
	conn_slot_close(s1);
	free(content);
	close(file);
}

/* Queue far more output on c2 than the socket takes, so it stays over
 * half its mark until its peer reads. */
static size_t
fill_second(struct fixture *f)
{
	static char chunk[65536];
	size_t total = 0;
	int i;

	memset(chunk, 'z', sizeof chunk);
	for (i = 0; i < 32; i++) {
		assert_int_equal(conn_send(f->c2, chunk, sizeof chunk, 0), PMQ_OK);
		total += sizeof chunk;
	}
	return total;
}

/* Read everything c2 sends until total bytes came. */
static void
drain_second(struct fixture *f, size_t total)
{
	static char buf[65536];
	size_t got = 0;
	int i;

	for (i = 0; i < 2000 && got < total; i++)
		got += read_fd(f, f->peer2, buf, total - got < sizeof buf ?
		    total - got : sizeof buf);
	assert_int_equal(got, total);
}

static void
test_block_input_until_drained(void **state)
{
	struct fixture *f = *state;
	size_t total;
	int i;

	open_second(f);
	total = fill_second(f);
	block_target = f->c2;
	assert_int_equal(write(f->peer, "a", 1), 1);
	loop_until(f, &input_calls, 1);
	assert_int_equal(input_calls, 1);
	assert_int_equal(block_rc, 1);
	block_target = NULL;
	/* Blocked: new input is not read. */
	assert_int_equal(write(f->peer, "b", 1), 1);
	for (i = 0; i < 20; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		(void)poll(NULL, 0, 2);
	}
	assert_int_equal(input_calls, 1);
	/* The full one drains below half its mark: reading resumes. */
	drain_second(f, total);
	loop_until(f, &input_calls, 2);
	assert_int_equal(input_calls, 2);
	assert_int_equal(closed_calls, 0);
}

static void
test_block_input_full_dies(void **state)
{
	struct fixture *f = *state;

	signal(SIGPIPE, SIG_IGN); /* c2's write finds its peer gone */
	open_second(f);
	(void)fill_second(f);
	block_target = f->c2;
	assert_int_equal(write(f->peer, "a", 1), 1);
	loop_until(f, &input_calls, 1);
	assert_int_equal(block_rc, 1);
	block_target = NULL;
	assert_int_equal(write(f->peer, "b", 1), 1);
	close(f->peer2);
	f->peer2 = -1;
	loop_until(f, &closed_calls, 1);
	assert_int_equal(closed_calls, 1);
	assert_int_equal(closed_reason, PMQ_CLOSE_ERROR);
	/* The blocked one reads again and sees what waited. */
	loop_until(f, &input_calls, 2);
	assert_int_equal(input_calls, 2);
}

static void
test_block_input_blocked_dies(void **state)
{
	struct fixture *f = *state;
	size_t total;

	open_second(f);
	total = fill_second(f);
	block_target = f->c2;
	assert_int_equal(write(f->peer, "a", 1), 1);
	loop_until(f, &input_calls, 1);
	assert_int_equal(block_rc, 1);
	block_target = NULL;
	conn_close(f->c, 0); /* the blocked one goes away */
	loop_until(f, &closed_calls, 1);
	assert_int_equal(closed_calls, 1);
	/* The full one drains without touching it (ASan would see). */
	drain_second(f, total);
	loop_until(f, &drained_calls, 1);
	assert_int_equal(drained_calls, 1);
	assert_int_equal(closed_calls, 1);
}

static void
test_large_read_one_callback(void **state)
{
	struct fixture *f = *state;
	static char big[40000];
	uint64_t before = conn_bytes_in();
	int i;

	memset(big, 'y', sizeof big);
	assert_int_equal(write(f->peer, big, sizeof big), (ssize_t)sizeof big);
	for (i = 0; i < 500 && conn_bytes_in() - before < sizeof big; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		(void)poll(NULL, 0, 2);
	}
	assert_int_equal(conn_bytes_in() - before, sizeof big);
	assert_int_equal(input_calls, 1);
	assert_null(f->c->in);
}

static void
test_partial_frame_kept(void **state)
{
	struct fixture *f = *state;
	static char frame[20000];

	need = sizeof frame;
	memset(frame, 'm', sizeof frame);
	frame[0] = 'F';
	frame[sizeof frame - 1] = 'E';
	/* One and a half frames, then the rest of the second. */
	assert_int_equal(write(f->peer, frame, sizeof frame), (ssize_t)sizeof frame);
	assert_int_equal(write(f->peer, frame, 7000), 7000);
	loop_until(f, &frames_ok, 1);
	assert_int_equal(frames_ok, 1);
	assert_int_equal(conn_input_len(f->c), 7000);
	assert_int_equal(write(f->peer, frame + 7000, sizeof frame - 7000),
	    (ssize_t)(sizeof frame - 7000));
	loop_until(f, &frames_ok, 2);
	assert_int_equal(frames_ok, 2);
	assert_int_equal(conn_input_len(f->c), 0);
	assert_null(f->c->in);
}

static void
test_pause_resume_sees_buffered_input(void **state)
{
	struct fixture *f = *state;
	uint64_t before = conn_bytes_in();
	int i;

	pause_next = 1;
	assert_int_equal(write(f->peer, "abc", 3), 3);
	loop_until(f, &input_calls, 1);
	assert_int_equal(input_calls, 1);
	assert_int_equal(conn_input_len(f->c), 3);
	/* Paused: nothing more is read. */
	assert_int_equal(write(f->peer, "d", 1), 1);
	for (i = 0; i < 10; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		(void)poll(NULL, 0, 2);
	}
	assert_int_equal(input_calls, 1);
	assert_int_equal(conn_input_len(f->c), 3);
	/* Resume does not re-enter the transport; a later callback sees
	 * the buffered bytes, then the new ones. */
	conn_resume(f->c);
	assert_int_equal(input_calls, 1);
	for (i = 0; i < 500 && conn_bytes_in() - before < 4; i++) {
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		(void)poll(NULL, 0, 2);
	}
	assert_int_equal(conn_bytes_in() - before, 4);
	assert_true(input_calls >= 2);
	assert_null(f->c->in);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_slots_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ordered_send_waits_now_does_not, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slot_outlives_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_high_water_and_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_close_waits_for_slots, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_ref_keeps_slot_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_ref_released_when_conn_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_block_input_until_drained, setup, teardown),
		cmocka_unit_test_setup_teardown(test_block_input_full_dies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_block_input_blocked_dies, setup, teardown),
		cmocka_unit_test_setup_teardown(test_large_read_one_callback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_partial_frame_kept, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pause_resume_sees_buffered_input, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_stored_file_pieces_in_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_stored_bytes_answer, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_stored_released_when_conn_gone, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_stored_file_cut, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
