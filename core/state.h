/*
 * state.h - key-value state through the storage plugin, and the retained
 * messages kept on top of it (namespace "retained": key = topic, value =
 * msg_encode()).
 *
 * Threads: loop thread only.
 */
#ifndef PMQ_CORE_STATE_H
#define PMQ_CORE_STATE_H

#include <plexmq/plexmq.h>

struct retain;

/* Load retained messages from storage (after the storage started). */
int state_init(void);
void state_shutdown(void);
/* The retained index (for retained_send and $SYS counts). */
struct retain *state_retained(void);

/* The host API's kv_* calls (see plexmq/host.h). */
int state_kv_put(const char *ns, const void *key, size_t key_len,
    const void *val, size_t val_len, pmq_done_fn done, void *arg);
int state_kv_del(const char *ns, const void *key, size_t key_len,
    pmq_done_fn done, void *arg);
int state_kv_get(const char *ns, const void *key, size_t key_len, void **val,
    size_t *val_len);
int state_kv_scan(const char *ns, const void *prefix, size_t prefix_len,
    pmq_kv_fn fn, void *arg);

/* Set (or, for an empty payload, clear) the retained message of m's topic,
 * in memory at once and in storage; done runs once stored. */
int state_retain(pmq_msg *m, pmq_done_fn done, void *arg);

#endif
