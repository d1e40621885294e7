/*
 * test_slots.c - in-order replies on one connection: reply slots closed out
 * of order still leave in the order they were opened, ordered sends wait
 * behind open slots, PMQ_SEND_NOW does not, a slot outlives its connection
 * safely, and output over the high-water mark reports full and drains.
 * Drives core/conn.c over a socketpair with a stub transport.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "conn.h"
#include "daemon.h"
#include "listener.h"

static int closed_calls, closed_reason, drained_calls, input_calls;

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
	conn_input_drain(c, conn_input_len(c));
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
	closed_calls = drained_calls = input_calls = 0;
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;

	listener_close_all(&f->ln);
	close(f->peer);
	conn_shutdown();
	event_base_free(f->base);
	daemon_set_base(NULL);
	free(f);
	return 0;
}

/* Run the loop until want bytes arrived at the peer or 5 s passed. */
static size_t
read_peer(struct fixture *f, char *buf, size_t want)
{
	size_t got = 0;
	int i;

	for (i = 0; i < 500 && got < want; i++) {
		struct pollfd p = { f->peer, POLLIN, 0 };
		ssize_t n;

		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (poll(&p, 1, 10) == 1) {
			n = read(f->peer, buf + got, want - got);
			if (n > 0)
				got += (size_t)n;
		}
	}
	return got;
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_slots_out_of_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ordered_send_waits_now_does_not, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slot_outlives_connection, setup, teardown),
		cmocka_unit_test_setup_teardown(test_high_water_and_drain, setup, teardown),
		cmocka_unit_test_setup_teardown(test_flush_close_waits_for_slots, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
