/*
 * storage.c - brings storage completions from storage threads back to the
 * loop thread.  A storage plugin finishes each operation with io_done();
 * that pushes the pmq_io onto a mutex-protected queue and activates one
 * libevent event; the loop then runs the completions in the order they were
 * finished.  post() rides on the same queue.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include <event2/event.h>

#include "conn.h"
#include "logger.h"
#include "storage.h"

struct pmq_io {
	storage_io_fn fn;
	void *arg;
	void (*post_fn)(void *);  /* set for post(): fn is unused */
	int status;
	int64_t value;
	void *data;
	size_t len;
	void (*free_fn)(void *);
	struct pmq_io *next;
	unsigned extents : 1; /* data is a struct pmq_extents */
};

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pmq_io *q_head, *q_tail;
static struct event *q_event;
static int q_closed;
static atomic_size_t q_pending;
static struct storage *active;

/* A finished read's buffer kept past its callback (log_read_ref), so a
 * transport can send the stored bytes by reference instead of copying. */
struct read_ref {
	void *data;
	void (*free_fn)(void *);
	size_t len;           /* the answer's bytes (extents: their sum) */
	unsigned refs;
	unsigned extents : 1; /* data is a struct pmq_extents */
};
/* The completion running now, and its read_ref once one was taken. */
static struct pmq_io *cur_io;
static struct read_ref *cur_ref;

static void
queue_push(struct pmq_io *io)
{
	int wake;

	pthread_mutex_lock(&q_lock);
	io->next = NULL;
	if (q_tail != NULL)
		q_tail->next = io;
	else
		q_head = io;
	q_tail = io;
	wake = q_event != NULL;
	/* event_active is thread-safe once evthread_use_pthreads() ran. */
	if (wake)
		event_active(q_event, EV_READ, 0);
	pthread_mutex_unlock(&q_lock);
}

size_t
storage_io_run(void)
{
	struct pmq_io *list, *io;
	size_t n = 0;

	pthread_mutex_lock(&q_lock);
	list = q_head;
	q_head = q_tail = NULL;
	pthread_mutex_unlock(&q_lock);
	while ((io = list) != NULL) {
		list = io->next;
		if (io->post_fn != NULL)
			io->post_fn(io->arg);
		else {
			struct pmq_io *outer_io = cur_io;
			struct read_ref *outer_ref = cur_ref;

			cur_io = io;
			cur_ref = NULL;
			if (io->fn != NULL)
				io->fn(io->arg, io->status, io->value, io->data,
				    io->len);
			if (cur_ref != NULL)
				storage_read_unref(cur_ref); /* the callback's */
			else if (io->free_fn != NULL)
				io->free_fn(io->data);
			cur_io = outer_io;
			cur_ref = outer_ref;
			atomic_fetch_sub(&q_pending, 1);
		}
		free(io);
		n++;
	}
	return n;
}

static void
queue_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	storage_io_run();
}

int
storage_io_init(struct event_base *base)
{
	q_event = event_new(base, -1, 0, queue_cb, NULL);
	if (q_event == NULL)
		return PMQ_ERR_NOMEM;
	q_closed = 0;
	return PMQ_OK;
}

void
storage_io_shutdown(void)
{
	storage_io_run();
	pthread_mutex_lock(&q_lock);
	q_closed = 1;
	if (q_event != NULL)
		event_free(q_event);
	q_event = NULL;
	pthread_mutex_unlock(&q_lock);
	storage_io_run();
}

struct pmq_io *
storage_io_new(storage_io_fn fn, void *arg)
{
	struct pmq_io *io = calloc(1, sizeof *io);

	if (io == NULL)
		return NULL;
	io->fn = fn;
	io->arg = arg;
	atomic_fetch_add(&q_pending, 1);
	return io;
}

void
storage_io_done(struct pmq_io *io, int status, int64_t value)
{
	io->status = status;
	io->value = value;
	queue_push(io);
}

void
storage_io_done_data(struct pmq_io *io, int status, void *data, size_t len,
    void (*free_fn)(void *))
{
	io->status = status;
	io->data = data;
	io->len = len;
	io->free_fn = free_fn;
	queue_push(io);
}

int
storage_post(void (*fn)(void *), void *arg)
{
	struct pmq_io *io;

	if (q_closed)
		return PMQ_ERR_CLOSED;
	io = calloc(1, sizeof *io);
	if (io == NULL)
		return PMQ_ERR_NOMEM;
	io->post_fn = fn;
	io->arg = arg;
	queue_push(io);
	return PMQ_OK;
}

size_t
storage_io_pending(void)
{
	return atomic_load(&q_pending);
}

struct storage *
storage_get(void)
{
	return active;
}

void
storage_set(struct storage *s)
{
	active = s;
}

void *
storage_read_ref(const void *data)
{
	const char *p = data, *base;

	if (cur_io == NULL || cur_io->data == NULL || cur_io->free_fn == NULL)
		return NULL;
	base = cur_io->data;
	if (p < base || p > base + (cur_io->extents ? 0 : cur_io->len))
		return NULL; /* an extents answer is referred to as a whole */
	if (cur_ref == NULL) {
		cur_ref = malloc(sizeof *cur_ref);
		if (cur_ref == NULL)
			return NULL;
		cur_ref->data = cur_io->data;
		cur_ref->free_fn = cur_io->free_fn;
		cur_ref->len = cur_io->len;
		cur_ref->extents = cur_io->extents;
		cur_ref->refs = 1; /* dropped when the callback returns */
	}
	cur_ref->refs++;
	return cur_ref;
}

void
storage_read_unref(void *ref)
{
	struct read_ref *r = ref;

	if (r == NULL || --r->refs > 0)
		return;
	r->free_fn(r->data);
	free(r);
}

void
storage_io_set_extents(struct pmq_io *io)
{
	io->extents = 1;
}

int
storage_send_stored(pmq_slot *s, void *ref)
{
	struct read_ref *r = ref;
	const struct pmq_extents *x;
	uint32_t i;
	int rc = PMQ_OK;

	if (r == NULL)
		return PMQ_ERR_INVAL;
	if (!r->extents) /* plain bytes: one reference */
		return conn_slot_send_ref(s, r->data, r->len, storage_read_unref,
		    r);
	x = r->data;
	for (i = 0; rc == PMQ_OK && i < x->n; i++) {
		const struct pmq_extent *e = &x->v[i];

		if (e->len == 0)
			continue;
		r->refs++; /* one per piece: each is released on its own */
		if (e->fd >= 0)
			rc = conn_slot_send_file(s, e->fd, e->pos, e->len,
			    storage_read_unref, r);
		else
			rc = conn_slot_send_ref(s, e->data, e->len,
			    storage_read_unref, r);
	}
	storage_read_unref(r); /* the caller's */
	return rc;
}
