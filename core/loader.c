/*
 * loader.c - plugin loading (see loader.h): dlopen, find and check the
 * pmq_plugin_v1 descriptor against the 1.x ABI rules, init once, and at
 * shutdown fini + dlclose in reverse order.
 *
 * The checks follow plugin.h and the ABI survey (section 10.4): the header
 * (magic, versions, size) is validated before anything after it is read,
 * and the sizes we compare against are the frozen 1.0 layouts, not sizeof,
 * which grows with every minor.
 */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <plexmq/storage.h>
#include <plexmq/transport.h>

#include "loader.h"
#include "logger.h"
#include "util.h"

#define LOADER_SYMBOL "pmq_plugin_v1"

/* Sizes of the 1.0 layouts: up to and including the last 1.0 member.
 * Members are only appended, so these never change within major 1. */
#define PMQ_PLUGIN_HEADER_SIZE offsetof(struct pmq_plugin, kind)
#define PMQ_PLUGIN_SIZE_V1_0 (offsetof(struct pmq_plugin, ops) + sizeof(void *))
#define PMQ_TRANSPORT_OPS_SIZE_V1_0                                           \
	(offsetof(struct pmq_transport_ops, deliver) + sizeof(void (*)(void)))
#define PMQ_STORAGE_OPS_SIZE_V1_0                                             \
	(offsetof(struct pmq_storage_ops, kv_scan) + sizeof(void (*)(void)))

#if PMQ_ABI_MINOR == 0
/* In 1.0 the frozen sizes are the whole structs; if one of these fires,
 * a member was appended without bumping PMQ_ABI_MINOR. */
_Static_assert(PMQ_PLUGIN_SIZE_V1_0 == sizeof(struct pmq_plugin),
               "struct pmq_plugin changed without an ABI minor bump");
_Static_assert(PMQ_TRANSPORT_OPS_SIZE_V1_0 == sizeof(struct pmq_transport_ops),
               "struct pmq_transport_ops changed without an ABI minor bump");
_Static_assert(PMQ_STORAGE_OPS_SIZE_V1_0 == sizeof(struct pmq_storage_ops),
               "struct pmq_storage_ops changed without an ABI minor bump");
#endif

/* A mandatory op: its name for the message and where it sits. */
struct loader_op {
	const char *name;
	size_t off;
};

#define LOADER_OP(type, member) { #member, offsetof(type, member) }

/* Mandatory ops as listed in the comments of transport.h and storage.h. */
static const struct loader_op transport_mandatory[] = {
	LOADER_OP(struct pmq_transport_ops, create),
	LOADER_OP(struct pmq_transport_ops, configure),
	LOADER_OP(struct pmq_transport_ops, destroy),
	LOADER_OP(struct pmq_transport_ops, conn_open),
	LOADER_OP(struct pmq_transport_ops, conn_input),
	LOADER_OP(struct pmq_transport_ops, conn_closed),
	LOADER_OP(struct pmq_transport_ops, deliver),
};

static const struct loader_op storage_mandatory[] = {
	LOADER_OP(struct pmq_storage_ops, create),
	LOADER_OP(struct pmq_storage_ops, configure),
	LOADER_OP(struct pmq_storage_ops, start),
	LOADER_OP(struct pmq_storage_ops, stop),
	LOADER_OP(struct pmq_storage_ops, destroy),
	LOADER_OP(struct pmq_storage_ops, log_list),
	LOADER_OP(struct pmq_storage_ops, log_open),
	LOADER_OP(struct pmq_storage_ops, log_close),
	LOADER_OP(struct pmq_storage_ops, log_append),
	LOADER_OP(struct pmq_storage_ops, log_read),
	LOADER_OP(struct pmq_storage_ops, log_trim),
	LOADER_OP(struct pmq_storage_ops, log_remove),
	LOADER_OP(struct pmq_storage_ops, kv_put),
	LOADER_OP(struct pmq_storage_ops, kv_del),
	LOADER_OP(struct pmq_storage_ops, kv_get),
	LOADER_OP(struct pmq_storage_ops, kv_scan),
};

/* What the loader knows about each kind.  Kinds without an ops table are
 * known (for a clear message) but not loadable by this plexmqd. */
struct loader_kind {
	uint32_t kind;
	const char *what;      /* "a transport": fits "is ..., expected ..." */
	const char *ops_name;  /* "transport" for "transport ops table ..." */
	size_t ops_size_v1_0;  /* 0: not loadable */
	size_t ops_sizeof;     /* our build's size, for the zero-filled copy */
	const struct loader_op *mandatory;
	size_t n_mandatory;
};

static const struct loader_kind loader_kinds[] = {
	{ PMQ_KIND_TRANSPORT, "a transport", "transport",
	  PMQ_TRANSPORT_OPS_SIZE_V1_0, sizeof(struct pmq_transport_ops),
	  transport_mandatory, UTIL_ARRAY_LEN(transport_mandatory) },
	{ PMQ_KIND_STORAGE, "a storage", "storage",
	  PMQ_STORAGE_OPS_SIZE_V1_0, sizeof(struct pmq_storage_ops),
	  storage_mandatory, UTIL_ARRAY_LEN(storage_mandatory) },
	{ PMQ_KIND_AUTH, "an auth", "auth", 0, 0, NULL, 0 },
};

/* The public entry plus the host-owned, zero-filled copies its desc and
 * desc->ops point at (see loader.h).  pub must stay first. */
struct loader_entry {
	struct loaded_plugin pub;
	struct pmq_plugin desc;
	union {
		struct pmq_transport_ops transport;
		struct pmq_storage_ops storage;
	} ops;
};

/* Newest first, so walking it is reverse load order. */
static struct loaded_plugin *loader_list;

static void loader_fail(char *err, size_t err_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Write one line into err; a NULL or empty buffer just drops it. */
static void
loader_fail(char *err, size_t err_len, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || err_len == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, err_len, fmt, ap);
	va_end(ap);
}

static const struct loader_kind *
loader_find_kind(uint32_t kind)
{
	size_t i;

	for (i = 0; i < UTIL_ARRAY_LEN(loader_kinds); i++)
		if (loader_kinds[i].kind == kind)
			return &loader_kinds[i];
	return NULL;
}

/*
 * The descriptor rules.  avail is how many bytes at d are known to be
 * readable (the ELF symbol's size), SIZE_MAX when unknown; it guards the
 * reads themselves, which a lying size field could not.
 */
static int
loader_check_at(const struct pmq_plugin *d, size_t avail,
                uint32_t expected_kind, char *err, size_t err_len)
{
	const struct loader_kind *k, *want;
	uint32_t ops_size;
	size_t i;

	want = loader_find_kind(expected_kind);
	if (want == NULL || want->ops_size_v1_0 == 0) {
		loader_fail(err, err_len,
		    "this plexmqd cannot load plugins of kind %u",
		    (unsigned)expected_kind);
		return PMQ_ERR_INVAL;
	}
	if (d == NULL) {
		loader_fail(err, err_len, "no descriptor");
		return PMQ_ERR_INVAL;
	}
	if (avail < PMQ_PLUGIN_HEADER_SIZE) {
		loader_fail(err, err_len,
		    "descriptor " LOADER_SYMBOL " is only %zu bytes: "
		    "not a plexmq plugin", avail);
		return PMQ_ERR_INVAL;
	}
	if (d->magic != PMQ_PLUGIN_MAGIC) {
		loader_fail(err, err_len,
		    "bad magic 0x%08x in " LOADER_SYMBOL
		    " (expected 0x%08x): not a plexmq plugin",
		    (unsigned)d->magic, (unsigned)PMQ_PLUGIN_MAGIC);
		return PMQ_ERR_INVAL;
	}
	if (d->abi_major != PMQ_ABI_MAJOR) {
		loader_fail(err, err_len,
		    "ABI major %u, this plexmqd supports %u",
		    (unsigned)d->abi_major, (unsigned)PMQ_ABI_MAJOR);
		return PMQ_ERR_ABI;
	}
	/* abi_minor (what it was built with) may exceed ours: only the
	 * minor it requires matters. */
	if (d->abi_minor_required > PMQ_ABI_MINOR) {
		loader_fail(err, err_len,
		    "requires ABI %u.%u, this plexmqd provides %u.%u",
		    (unsigned)d->abi_major, (unsigned)d->abi_minor_required,
		    (unsigned)PMQ_ABI_MAJOR, (unsigned)PMQ_ABI_MINOR);
		return PMQ_ERR_ABI;
	}
	if (d->size < PMQ_PLUGIN_SIZE_V1_0) {
		loader_fail(err, err_len,
		    "descriptor is truncated: %u bytes, need %zu",
		    (unsigned)d->size, (size_t)PMQ_PLUGIN_SIZE_V1_0);
		return PMQ_ERR_ABI;
	}
	if (d->size > avail) {
		loader_fail(err, err_len,
		    "descriptor claims %u bytes but " LOADER_SYMBOL
		    " is only %zu", (unsigned)d->size, avail);
		return PMQ_ERR_ABI;
	}
	/* From here on every 1.0 member is known to be there. */
	if (d->name == NULL) {
		loader_fail(err, err_len, "descriptor has no name");
		return PMQ_ERR_ABI;
	}
	if (d->init == NULL) {
		loader_fail(err, err_len, "descriptor has no init");
		return PMQ_ERR_ABI;
	}
	if (d->ops == NULL) {
		loader_fail(err, err_len, "descriptor has no ops table");
		return PMQ_ERR_ABI;
	}
	k = loader_find_kind(d->kind);
	if (k == NULL) {
		loader_fail(err, err_len,
		    "unknown plugin kind %u, expected %s plugin",
		    (unsigned)d->kind, want->what);
		return PMQ_ERR_UNSUPPORTED;
	}
	if (k != want) {
		loader_fail(err, err_len, "is %s plugin, expected %s",
		    k->what, want->what);
		return PMQ_ERR_CONFIG;
	}
	/* Every ops table begins with its uint32_t size. */
	memcpy(&ops_size, d->ops, sizeof ops_size);
	if (ops_size < k->ops_size_v1_0) {
		loader_fail(err, err_len,
		    "%s ops table is truncated: %u bytes, need %zu",
		    k->ops_name, (unsigned)ops_size, k->ops_size_v1_0);
		return PMQ_ERR_ABI;
	}
	for (i = 0; i < k->n_mandatory; i++) {
		void (*fn)(void);

		memcpy(&fn, (const char *)d->ops + k->mandatory[i].off,
		    sizeof fn);
		if (fn == NULL) {
			loader_fail(err, err_len,
			    "%s ops table has no %s (mandatory)", k->ops_name,
			    k->mandatory[i].name);
			return PMQ_ERR_ABI;
		}
	}
	return PMQ_OK;
}

int
loader_check(const struct pmq_plugin *d, uint32_t expected_kind, char *err,
             size_t err_len)
{
	return loader_check_at(d, SIZE_MAX, expected_kind, err, err_len);
}

/*
 * Where the descriptor came from and how big it really is, from the
 * dynamic symbol table.  The symbol must be this file's own: dlsym on a
 * handle also searches the module's dependencies.  *avail is the symbol's
 * st_size, or SIZE_MAX if the dynamic linker cannot tell.
 */
static int
loader_symbol_info(void *dl, const void *sym, size_t *avail, char *reason,
                   size_t reason_len)
{
	struct link_map *own = NULL, *found = NULL;
	const ElfW(Sym) *es = NULL;
	Dl_info info;

	*avail = SIZE_MAX;
	if (dlinfo(dl, RTLD_DI_LINKMAP, &own) != 0 || own == NULL) {
		const char *e = dlerror();

		loader_fail(reason, reason_len, "dlinfo: %s",
		    e ? e : "no link map");
		return PMQ_ERR_INVAL;
	}
	if (dladdr1(sym, &info, (void **)&found, RTLD_DL_LINKMAP) != 0 &&
	    found != NULL && found != own) {
		loader_fail(reason, reason_len,
		    LOADER_SYMBOL " is defined in %s, not in this file: "
		    "not a plexmq plugin",
		    info.dli_fname ? info.dli_fname : "another object");
		return PMQ_ERR_INVAL;
	}
	if (dladdr1(sym, &info, (void **)&es, RTLD_DL_SYMENT) != 0 &&
	    es != NULL && info.dli_saddr == sym && es->st_size > 0)
		*avail = (size_t)es->st_size;
	return PMQ_OK;
}

/* *path from dir and name (see loader.h), a string owned by the caller.
 * PMQ_OK, or PMQ_ERR_INVAL / PMQ_ERR_NOMEM with err set. */
static int
loader_resolve(const char *dir, const char *name, char **path, char *err,
               size_t err_len)
{
	size_t len;

	if (strchr(name, '/') != NULL) {
		*path = strdup(name);
	} else {
		if (dir == NULL || dir[0] == '\0') {
			loader_fail(err, err_len,
			    "plugin %s: no plugin directory to find it in",
			    name);
			return PMQ_ERR_INVAL;
		}
		len = strlen(dir);
		if (asprintf(path, "%s%s%s.so", dir,
		    dir[len - 1] == '/' ? "" : "/", name) < 0)
			*path = NULL;
	}
	if (*path == NULL) {
		loader_fail(err, err_len, "plugin %s: out of memory", name);
		return PMQ_ERR_NOMEM;
	}
	return PMQ_OK;
}

/* An entry already loaded from this path or handle, or NULL. */
static struct loaded_plugin *
loader_find(const char *path, const void *dl)
{
	struct loaded_plugin *p;

	for (p = loader_list; p != NULL; p = p->next)
		if ((path != NULL && strcmp(p->path, path) == 0) ||
		    (dl != NULL && p->dl == dl))
			return p;
	return NULL;
}

/* An existing entry asked for again: only the kind can differ. */
static int
loader_reuse(struct loaded_plugin *p, uint32_t expected_kind,
             struct loaded_plugin **out, char *err, size_t err_len)
{
	char reason[256];
	int rc;

	rc = loader_check(p->desc, expected_kind, reason, sizeof reason);
	if (rc != PMQ_OK) {
		loader_fail(err, err_len, "plugin %s: %s", p->path, reason);
		return rc;
	}
	*out = p;
	return PMQ_OK;
}

/* The text of dlerror() without the "PATH: " glibc puts in front, since
 * our message names the file already. */
static const char *
loader_dlerror(const char *path)
{
	const char *e = dlerror();
	size_t n = strlen(path);

	if (e == NULL)
		return "unknown dlopen error";
	if (strncmp(e, path, n) == 0 && e[n] == ':' && e[n + 1] == ' ')
		return e + n + 2;
	return e;
}

/* Record a checked module; takes ownership of path and dl (both released
 * on failure too). */
static int
loader_add(char *path, void *dl, const struct pmq_plugin *d,
           struct loaded_plugin **out, char *err, size_t err_len)
{
	const struct loader_kind *k = loader_find_kind(d->kind);
	struct loader_entry *e;
	uint32_t ops_size;
	size_t n;

	e = calloc(1, sizeof *e);
	if (e == NULL) {
		loader_fail(err, err_len, "plugin %s: out of memory", path);
		if (dlclose(dl) != 0)
			log_warn("plugin %s: dlclose: %s", path, dlerror());
		free(path);
		return PMQ_ERR_NOMEM;
	}
	/* Copy what the plugin has and leave newer members zero, so host
	 * code can read any member of our build without overrunning an
	 * older plugin's struct (survey 10.5, rule 4). */
	n = d->size < sizeof e->desc ? d->size : sizeof e->desc;
	memcpy(&e->desc, d, n);
	memcpy(&ops_size, d->ops, sizeof ops_size);
	n = ops_size < k->ops_sizeof ? ops_size : k->ops_sizeof;
	memcpy(&e->ops, d->ops, n);
	e->desc.ops = &e->ops;

	e->pub.path = path;
	e->pub.dl = dl;
	e->pub.desc = &e->desc;
	e->pub.initialized = 0;
	e->pub.next = loader_list;
	loader_list = &e->pub;
	*out = &e->pub;
	return PMQ_OK;
}

int
loader_load(const char *dir, const char *name, uint32_t expected_kind,
            struct loaded_plugin **out, char *err, size_t err_len)
{
	const struct loader_kind *want;
	const struct pmq_plugin *d;
	struct loaded_plugin *p;
	char reason[256];
	struct stat st;
	size_t avail;
	char *path;
	void *dl;
	int rc;

	if (name == NULL || name[0] == '\0' || out == NULL) {
		loader_fail(err, err_len, "plugin: no name given");
		return PMQ_ERR_INVAL;
	}
	want = loader_find_kind(expected_kind);
	if (want == NULL || want->ops_size_v1_0 == 0) {
		loader_fail(err, err_len,
		    "plugin %s: this plexmqd cannot load plugins of kind %u",
		    name, (unsigned)expected_kind);
		return PMQ_ERR_INVAL;
	}
	rc = loader_resolve(dir, name, &path, err, err_len);
	if (rc != PMQ_OK)
		return rc;

	p = loader_find(path, NULL);
	if (p != NULL) {
		free(path);
		return loader_reuse(p, expected_kind, out, err, err_len);
	}

	/* stat first: dlopen's message for a missing file is long-winded,
	 * and a directory should not reach dlopen at all. */
	if (stat(path, &st) != 0) {
		rc = errno == ENOENT || errno == ENOTDIR ? PMQ_ERR_NOTFOUND
		                                         : PMQ_ERR_IO;
		if (rc == PMQ_ERR_NOTFOUND)
			loader_fail(err, err_len, "plugin %s: no such file",
			    path);
		else
			loader_fail(err, err_len, "plugin %s: %s", path,
			    strerror(errno));
		free(path);
		return rc;
	}
	if (!S_ISREG(st.st_mode)) {
		loader_fail(err, err_len, "plugin %s: not a regular file", path);
		free(path);
		return PMQ_ERR_IO;
	}

	(void)dlerror();
	dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL) {
		loader_fail(err, err_len, "plugin %s: cannot load: %s", path,
		    loader_dlerror(path));
		free(path);
		return PMQ_ERR_INVAL;
	}
	/* Another path (symlink, "./x.so") to a module we already have:
	 * dlopen returned the same handle with one more reference. */
	p = loader_find(NULL, dl);
	if (p != NULL) {
		if (dlclose(dl) != 0)
			log_warn("plugin %s: dlclose: %s", path, dlerror());
		free(path);
		return loader_reuse(p, expected_kind, out, err, err_len);
	}

	(void)dlerror();
	d = dlsym(dl, LOADER_SYMBOL);
	if (d == NULL) {
		rc = PMQ_ERR_INVAL;
		loader_fail(reason, sizeof reason, "no descriptor "
		    LOADER_SYMBOL ": not a plexmq plugin");
	} else {
		rc = loader_symbol_info(dl, d, &avail, reason, sizeof reason);
		if (rc == PMQ_OK)
			rc = loader_check_at(d, avail, expected_kind, reason,
			    sizeof reason);
	}
	if (rc != PMQ_OK) {
		loader_fail(err, err_len, "plugin %s: %s", path, reason);
		if (dlclose(dl) != 0)
			log_warn("plugin %s: dlclose: %s", path, dlerror());
		free(path);
		return rc;
	}

	rc = loader_add(path, dl, d, out, err, err_len);
	if (rc != PMQ_OK)
		return rc;
	log_info("plugin %s %s (ABI %u.%u, requires %u.%u) loaded from %s",
	    d->name, d->version ? d->version : "(no version)",
	    (unsigned)d->abi_major, (unsigned)d->abi_minor,
	    (unsigned)d->abi_major, (unsigned)d->abi_minor_required,
	    (*out)->path);
	return PMQ_OK;
}

int
loader_init(struct loaded_plugin *p, const struct pmq_host_api *api,
            char *err, size_t err_len)
{
	int rc;

	if (p == NULL || api == NULL) {
		loader_fail(err, err_len, "plugin: init without %s",
		    p == NULL ? "a plugin" : "a host API");
		return PMQ_ERR_INVAL;
	}
	if (p->initialized == 1)
		return PMQ_OK;
	if (p->initialized == -1) {
		/* A half-initialized plugin may not survive a second try. */
		loader_fail(err, err_len, "plugin %s: init failed earlier",
		    p->path);
		return PMQ_ERR_CLOSED;
	}
	rc = p->desc->init(api);
	if (rc == PMQ_OK) {
		p->initialized = 1;
		return PMQ_OK;
	}
	p->initialized = -1;
	if (rc > 0) {
		loader_fail(err, err_len,
		    "plugin %s: init failed: returned %d, not an error code",
		    p->path, rc);
		return PMQ_ERR_INVAL;
	}
	if (api->strerror != NULL)
		loader_fail(err, err_len, "plugin %s: init failed: %s (%d)",
		    p->path, api->strerror(rc), rc);
	else
		loader_fail(err, err_len, "plugin %s: init failed: error %d",
		    p->path, rc);
	return rc;
}

void
loader_unload_all(void)
{
	struct loaded_plugin *p, *next;

	for (p = loader_list; p != NULL; p = next) {
		next = p->next;
		if (p->initialized == 1 && p->desc->fini != NULL)
			p->desc->fini();
		if (dlclose(p->dl) != 0)
			log_warn("plugin %s: dlclose: %s", p->path, dlerror());
		free(p->path);
		free(p); /* p is the first member of its loader_entry */
	}
	loader_list = NULL;
}
