/*
 * host.h - the core's plugin instances and the host API table handed to
 * plugins (struct pmq_host_api, filled from the core modules).
 */
#ifndef PMQ_CORE_HOST_H
#define PMQ_CORE_HOST_H

#include <plexmq/plexmq.h>

/* One configured instance of a loaded plugin: a listener's transport or the
 * storage.  Owned by the daemon (daemon.c). */
struct pmq_instance {
	char *name;                      /* config section, e.g. "listener tcp" */
	const struct pmq_plugin *plugin; /* borrowed from the loaded module */
	void *state;                     /* what ops->create returned */
	void *owner;                     /* struct listener * or struct storage * */
};

/* The table passed to every plugin's init(); static, lives forever. */
const struct pmq_host_api *host_api(void);

/* Create / free the router and counters behind the table. */
int host_init(void);
void host_shutdown(void);
/* The topic router (for tests and $SYS counts). */
struct router *host_router(void);

#endif
