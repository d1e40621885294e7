/*
 * plexmq/plugin.h - the plugin descriptor: the one symbol a plugin exports.
 *
 * A plugin is a shared object that exports exactly one symbol,
 * `pmq_plugin_v1`, a const struct pmq_plugin.  plexmqd opens it with
 * dlopen(RTLD_NOW | RTLD_LOCAL) and reads, in this order, before running any
 * plugin code: magic, abi_major (must equal the host's), abi_minor_required
 * (must be <= the host's minor), size (must cover the 1.0 descriptor), the
 * mandatory members, kind, and the ops table's size.  Then it calls init()
 * once; then the kind's ops create one instance per config section that
 * names the plugin.
 *
 * Plugins must not have ELF constructors or destructors: dlopen would run
 * them before the descriptor is checked.  No runtime unload in 1.x: fini()
 * runs at shutdown after every instance is destroyed.
 *
 * Threads: init and fini run on the loop thread (see host.h).
 */
#ifndef PLEXMQ_PLUGIN_H
#define PLEXMQ_PLUGIN_H

#include "host.h"
#include "types.h"
#include "version.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Plugin kinds.  Values are never reused. */
#define PMQ_KIND_TRANSPORT 1u
#define PMQ_KIND_STORAGE 2u
#define PMQ_KIND_AUTH 3u /* reserved for a later minor */

/* Descriptor flags. */
/* The plugin's global state is safe when several event loops (threads)
 * call into it later; today the host runs one loop. */
#define PMQ_PLUGIN_MULTI_LOOP_SAFE 0x1u

struct pmq_plugin {
	/* Read first, before anything else: never move these. */
	uint32_t magic;     /* PMQ_PLUGIN_MAGIC */
	uint16_t abi_major; /* PMQ_ABI_MAJOR at build time */
	uint16_t abi_minor; /* PMQ_ABI_MINOR at build time */
	uint32_t size;      /* sizeof(struct pmq_plugin) at build time */
	uint16_t abi_minor_required; /* lowest host minor that works */
	uint16_t reserved0;

	uint32_t kind;  /* PMQ_KIND_* */
	uint32_t flags; /* PMQ_PLUGIN_* */
	const char *name;        /* short name: "tcp", "memory" */
	const char *version;     /* the plugin's own release */
	const char *description; /* one line */

	/* Mandatory.  Called once after the checks; keep api (it lives until
	 * after fini).  Return PMQ_OK or an error (logged, daemon exits). */
	int (*init)(const struct pmq_host_api *api);
	/* Optional.  Called once at shutdown, after all instances are gone. */
	void (*fini)(void);
	/* Mandatory: struct pmq_transport_ops or struct pmq_storage_ops,
	 * according to kind.  Begins with its own size. */
	const void *ops;

	/* 1.1+: append only. */
};

#if defined(__GNUC__)
#define PMQ_EXPORT __attribute__((visibility("default")))
#else
#define PMQ_EXPORT
#endif

/*
 * Define the descriptor:
 *
 *   PMQ_PLUGIN_DEFINE(PMQ_KIND_TRANSPORT, "tcp", "1.0.0",
 *                     "plain-TCP protocol", 0, tcp_init, NULL, &tcp_ops);
 */
#define PMQ_PLUGIN_DEFINE(kind_, name_, version_, desc_, flags_, init_,     \
                          fini_, ops_)                                       \
	PMQ_EXPORT const struct pmq_plugin pmq_plugin_v1 = {                  \
	    .magic = PMQ_PLUGIN_MAGIC,                                        \
	    .abi_major = PMQ_ABI_MAJOR,                                       \
	    .abi_minor = PMQ_ABI_MINOR,                                       \
	    .size = sizeof(struct pmq_plugin),                                \
	    .abi_minor_required = PMQ_TARGET_ABI_MINOR,                       \
	    .kind = (kind_),                                                  \
	    .flags = (flags_),                                                \
	    .name = (name_),                                                  \
	    .version = (version_),                                            \
	    .description = (desc_),                                           \
	    .init = (init_),                                                  \
	    .fini = (fini_),                                                  \
	    .ops = (ops_),                                                    \
	}

#ifdef __cplusplus
}
#endif

#endif /* PLEXMQ_PLUGIN_H */
