/*
 * state.c - key-value state through the storage plugin, and retained
 * messages on top of it (see state.h).  Writes go to the storage plugin
 * asynchronously; their completion is what a transport waits for before
 * acknowledging.
 */
#include <stdlib.h>
#include <string.h>

#include "logger.h"
#include "msg.h"
#include "retain.h"
#include "state.h"
#include "storage.h"

#define NS_RETAINED "retained"

static struct retain *retained;

struct kv_op {
	pmq_done_fn done;
	void *arg;
};

static void
kv_io_cb(void *arg, int status, int64_t value, const void *data, size_t len)
{
	struct kv_op *op = arg;

	(void)value;
	(void)data;
	(void)len;
	if (op->done != NULL)
		op->done(op->arg, status);
	free(op);
}

static struct pmq_io *
kv_io(pmq_done_fn done, void *arg)
{
	struct kv_op *op = malloc(sizeof *op);
	struct pmq_io *io;

	if (op == NULL)
		return NULL;
	op->done = done;
	op->arg = arg;
	io = storage_io_new(kv_io_cb, op);
	if (io == NULL)
		free(op);
	return io;
}

int
state_kv_put(const char *ns, const void *key, size_t key_len, const void *val,
    size_t val_len, pmq_done_fn done, void *arg)
{
	struct storage *s = storage_get();
	struct pmq_io *io;

	if (s == NULL)
		return PMQ_ERR_CLOSED;
	if (ns == NULL || key == NULL || key_len == 0)
		return PMQ_ERR_INVAL;
	if ((io = kv_io(done, arg)) == NULL)
		return PMQ_ERR_NOMEM;
	s->ops->kv_put(s->st, ns, key, key_len, val, val_len, io);
	return PMQ_OK;
}

int
state_kv_del(const char *ns, const void *key, size_t key_len,
    pmq_done_fn done, void *arg)
{
	struct storage *s = storage_get();
	struct pmq_io *io;

	if (s == NULL)
		return PMQ_ERR_CLOSED;
	if (ns == NULL || key == NULL || key_len == 0)
		return PMQ_ERR_INVAL;
	if ((io = kv_io(done, arg)) == NULL)
		return PMQ_ERR_NOMEM;
	s->ops->kv_del(s->st, ns, key, key_len, io);
	return PMQ_OK;
}

int
state_kv_get(const char *ns, const void *key, size_t key_len, void **val,
    size_t *val_len)
{
	struct storage *s = storage_get();

	if (s == NULL)
		return PMQ_ERR_CLOSED;
	return s->ops->kv_get(s->st, ns, key, key_len, val, val_len);
}

int
state_kv_scan(const char *ns, const void *prefix, size_t prefix_len,
    pmq_kv_fn fn, void *arg)
{
	struct storage *s = storage_get();

	if (s == NULL)
		return PMQ_ERR_CLOSED;
	return s->ops->kv_scan(s->st, ns, prefix, prefix_len, fn, arg);
}

struct load_ctx {
	size_t loaded, bad;
};

static int
load_one(void *arg, const void *key, size_t key_len, const void *val,
    size_t val_len)
{
	struct load_ctx *lc = arg;
	pmq_msg *m = NULL;

	if (msg_decode(val, val_len, &m) != PMQ_OK) {
		/* One damaged record must not cost the others. */
		logger_log(NULL, PMQ_LOG_WARN,
		    "retained message for '%.*s' is corrupt: skipped",
		    (int)(key_len > 200 ? 200 : key_len), (const char *)key);
		lc->bad++;
		return 0;
	}
	retain_set(retained, m);
	msg_unref(m);
	lc->loaded++;
	return 0;
}

int
state_init(void)
{
	struct load_ctx lc = { 0, 0 };
	int rc;

	retained = retain_new();
	if (retained == NULL)
		return PMQ_ERR_NOMEM;
	rc = state_kv_scan(NS_RETAINED, "", 0, load_one, &lc);
	if (rc != PMQ_OK && rc != PMQ_ERR_NOTFOUND)
		return rc;
	if (lc.loaded != 0 || lc.bad != 0)
		log_info("retained messages: %zu loaded, %zu corrupt", lc.loaded,
		    lc.bad);
	return PMQ_OK;
}

void
state_shutdown(void)
{
	retain_free(retained);
	retained = NULL;
}

struct retain *
state_retained(void)
{
	return retained;
}

int
state_retain(pmq_msg *m, pmq_done_fn done, void *arg)
{
	struct pmq_msg_fields f;
	void *buf = NULL;
	size_t len = 0;
	int rc;

	if (retained == NULL)
		return PMQ_ERR_CLOSED;
	memset(&f, 0, sizeof f);
	f.size = sizeof f;
	msg_fields(m, &f);
	retain_set(retained, m);
	if (f.payload_len == 0)
		return state_kv_del(NS_RETAINED, f.topic, f.topic_len, done, arg);
	rc = msg_encode(m, &buf, &len);
	if (rc != PMQ_OK)
		return rc;
	rc = state_kv_put(NS_RETAINED, f.topic, f.topic_len, buf, len, done, arg);
	free(buf);
	return rc;
}
