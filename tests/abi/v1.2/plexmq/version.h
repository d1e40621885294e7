/*
 * plexmq/version.h - plugin ABI version numbers and the ABI changelog.
 *
 * The ABI version is independent of the daemon's release version.  A plugin
 * is loaded when its abi_major equals the host's and the host's minor is at
 * least the minor the plugin requires (abi_minor_required in its descriptor).
 *
 * Rules (see docs/architecture.md, "Plugin ABI"):
 *   - Appending a member to any public struct or function table, adding an
 *     error code, a flag or a log level bumps PMQ_ABI_MINOR.
 *   - Anything else (removing, reordering, retyping a member, changing the
 *     meaning of a call) bumps PMQ_ABI_MAJOR.
 *   - Every struct that crosses the boundary starts with its size (the
 *     descriptor with magic and versions first); readers check the size with
 *     PMQ_HAS() before touching a member added after 1.0.
 *
 * Changelog
 *   1.0  (2026-11)  First frozen ABI: descriptor, host API table, transport
 *                   and storage ops tables, messages, subscriptions, logs,
 *                   key-value state, in-order reply slots.
 *   1.1  (2026-11)  Host API: has_subscribers, slot_send_ref,
 *                   log_read_ref/log_read_unref (send stored bytes by
 *                   reference), conn_block_input (a publisher waits for a
 *                   full subscriber instead of its messages being dropped).
 *   1.2  (2026-11)  Storage ops: log_read_extents (struct pmq_extent,
 *                   struct pmq_extents).  Host API: log_read_stored,
 *                   slot_send_stored (stored batches go from the segment
 *                   file to the socket with sendfile).
 */
#ifndef PLEXMQ_VERSION_H
#define PLEXMQ_VERSION_H

#define PMQ_ABI_MAJOR 1
#define PMQ_ABI_MINOR 2

/* "PMQP" in ASCII; the first word of every plugin descriptor. */
#define PMQ_PLUGIN_MAGIC 0x504d5150u

/*
 * A plugin that uses only features of an older minor may define
 * PMQ_TARGET_ABI_MINOR before including plexmq headers; PMQ_PLUGIN_DEFINE
 * then stamps that value as the minor it requires, so it also loads into
 * older hosts of the same major.
 */
#ifndef PMQ_TARGET_ABI_MINOR
#define PMQ_TARGET_ABI_MINOR PMQ_ABI_MINOR
#endif

#endif /* PLEXMQ_VERSION_H */
