/*
 * loader.h - opens plugin shared objects, checks their descriptor against
 * the frozen 1.x ABI rules before any plugin code runs, calls init() once
 * and, at shutdown, fini() and dlclose() in reverse load order.
 *
 * Threads: loop thread only (in practice: startup and shutdown).  The list
 * of loaded modules is not locked, and dlerror() state is per thread.
 *
 * Errors: every function returns PMQ_OK or a negative enum pmq_err and, on
 * failure, writes exactly one line (no newline) into err.  The loader never
 * logs a failure itself: the caller logs err once and unwinds.
 *
 *   PMQ_ERR_NOTFOUND     the file does not exist
 *   PMQ_ERR_IO           stat() failed otherwise, or it is not a file
 *   PMQ_ERR_INVAL        not a plexmq plugin (dlopen failed, no
 *                        pmq_plugin_v1, bad magic), bad arguments, or a
 *                        plugin's init() returned a non-error value != 0
 *   PMQ_ERR_ABI          ABI major/minor mismatch, a truncated descriptor
 *                        or ops table, a NULL mandatory member or op
 *   PMQ_ERR_UNSUPPORTED  a kind this plexmqd does not know or load
 *   PMQ_ERR_CONFIG       a known kind other than the one the caller needs
 *   PMQ_ERR_NOMEM        allocation failed
 *   anything else        what the plugin's init() returned
 */
#ifndef PMQ_CORE_LOADER_H
#define PMQ_CORE_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/plugin.h>

/* One opened module.  Owned by the loader; freed in loader_unload_all(). */
struct loaded_plugin {
	char *path;  /* as resolved from dir/name, for messages */
	void *dl;    /* dlopen() handle */
	/* A host-owned copy of the plugin's descriptor, zero-filled past the
	 * plugin's size (members of a newer minor read as 0/NULL); its ops
	 * points at a zero-filled copy of the ops table the same way.  The
	 * size members keep the plugin's values, so PMQ_HAS() still tells
	 * what the plugin really provides. */
	const struct pmq_plugin *desc;
	int initialized; /* 0: init not called, 1: init ok, -1: init failed */
	struct loaded_plugin *next;
};

/*
 * Open and check one plugin; does NOT call init.
 *
 * name containing '/' is a path (relative to the working directory or
 * absolute); a bare name means DIR/NAME.so.  expected_kind is the
 * PMQ_KIND_* the caller needs.  On success *out is the module, owned by
 * the loader.  Loading a file already loaded (same path, or a path dlopen
 * resolves to the same object) returns the same entry, re-checked against
 * expected_kind.  On failure *out is untouched and err reads e.g.
 *   "plugin /x/bad_major.so: ABI major 2, this plexmqd supports 1".
 * Logs one info line per newly loaded module.
 */
int loader_load(const char *dir, const char *name, uint32_t expected_kind,
                struct loaded_plugin **out, char *err, size_t err_len);

/*
 * The descriptor rules alone, on memory (no dlopen, no file name in err;
 * loader_load prefixes "plugin PATH: ").  Order: magic, abi_major,
 * abi_minor_required, size, name/init/ops non-NULL, kind, ops->size,
 * mandatory ops.  Reads nothing past the fields already validated.
 */
int loader_check(const struct pmq_plugin *d, uint32_t expected_kind,
                 char *err, size_t err_len);

/*
 * Call the plugin's init(api) unless it already ran (then PMQ_OK, or the
 * earlier failure's PMQ_ERR_CLOSED: init is never retried).  api is kept
 * by the plugin and must outlive loader_unload_all().  On failure err
 * reads "plugin PATH: init failed: REASON".
 */
int loader_init(struct loaded_plugin *p, const struct pmq_host_api *api,
                char *err, size_t err_len);

/*
 * Shutdown, once every instance is destroyed: for each module, newest
 * first, fini() if its init succeeded, then dlclose(); frees every entry.
 */
void loader_unload_all(void);

#endif
