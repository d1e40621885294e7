/*
 * storage.h - the core's side of storage plugins: the loaded storage
 * instance, pending-operation handles (pmq_io) and the completion queue that
 * brings results from storage threads back to the loop thread.
 *
 * Threads: storage_io_done*, storage_post are callable from any thread;
 * everything else belongs to the loop thread.
 */
#ifndef PMQ_CORE_STORAGE_H
#define PMQ_CORE_STORAGE_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/storage.h>

struct event_base;

/* Completion of one storage operation, run on the loop thread.  data/len
 * are set for reads only and are borrowed for the call. */
typedef void (*storage_io_fn)(void *arg, int status, int64_t value,
                              const void *data, size_t len);

/* The one active storage instance. */
struct storage {
	const struct pmq_storage_ops *ops;
	void *st;                 /* the plugin's instance state */
	struct pmq_instance *inst;
};

/* Set up the completion queue on base.  PMQ_OK or PMQ_ERR_NOMEM. */
int storage_io_init(struct event_base *base);
/* Run queued completions and free the queue (after storage stop). */
void storage_io_shutdown(void);
/* Returns a new io handle; it is freed after fn runs.  NULL on no memory. */
struct pmq_io *storage_io_new(storage_io_fn fn, void *arg);
/* Any thread: complete io; fn runs on the loop thread later. */
void storage_io_done(struct pmq_io *io, int status, int64_t value);
void storage_io_done_data(struct pmq_io *io, int status, void *data,
                          size_t len, void (*free_fn)(void *));
/* Any thread: run fn(arg) on the loop thread.  PMQ_ERR_CLOSED after
 * shutdown. */
int storage_post(void (*fn)(void *), void *arg);
/* Run every completion queued so far (loop thread); returns how many. */
size_t storage_io_run(void);
/* Operations submitted whose completion has not run yet. */
size_t storage_io_pending(void);

/* Inside a completion that carries data (a read): keep the buffer that
 * data points into alive past the callback.  Returns a reference for
 * storage_read_unref, or NULL when data is not in that buffer, the
 * storage lent it (no free function), or no memory: then copy.  Loop
 * thread only, like the release. */
void *storage_read_ref(const void *data);
void storage_read_unref(void *ref);
/* Mark io as a log_read_extents read: its data is a struct pmq_extents
 * (already checked by the submitter's completion), which
 * storage_send_stored sends piece by piece. */
void storage_io_set_extents(struct pmq_io *io);
/* slot_send_stored: every byte of the answer ref holds (a reference
 * taken with storage_read_ref on a log_read_stored answer) into slot s;
 * takes over ref, also on failure. */
int storage_send_stored(pmq_slot *s, void *ref);

/* The active storage (NULL before one is set). */
struct storage *storage_get(void);
void storage_set(struct storage *s);

#endif
