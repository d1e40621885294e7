/*
 * probe.c - the ABI probe: a module whose one exported symbol reaches every
 * type of the public plugin ABI, so that abidw/abidiff can see them all
 * (plexmqd exports nothing, and abigail only analyses types reachable from
 * exported symbols).  scripts/abi-check.sh compiles it with -g -Og against
 * a header set and compares the result with abi/plexmq-plugin-v1.abi.
 *
 * Rules for this file:
 *   - One pointer member per public struct, one member per public enum and
 *     per public function-pointer typedef; nothing embedded by value, so a
 *     struct's growth does not move the probe's own members.
 *   - A type added in minor N gets a member appended at the end, inside
 *     `#if PMQ_ABI_MINOR >= N`, so the probe still builds against the
 *     frozen headers of older minors (tests/abi/v1.M/).
 *   - Never reorder or remove members: the probe's own layout is in the
 *     baseline too.
 */
#include <plexmq/plexmq.h>

struct pmq_abi_probe {
	/* plugin.h */
	const struct pmq_plugin *plugin;
	/* host.h */
	const struct pmq_host_api *host_api;
	const struct pmq_stats *stats;
	pmq_done_fn done_fn;
	pmq_publish_fn publish_fn;
	pmq_append_fn append_fn;
	pmq_read_fn read_fn;
	pmq_offset_fn offset_fn;
	pmq_kv_fn kv_fn;
	pmq_record_fn record_fn;
	pmq_topic_fn topic_fn;
	/* transport.h */
	const struct pmq_transport_ops *transport_ops;
	/* storage.h */
	const struct pmq_storage_ops *storage_ops;
	const struct pmq_batch_meta *batch_meta;
	const struct pmq_log_state *log_state;
	pmq_log_list_fn log_list_fn;
	/* types.h */
	enum pmq_err err;
	const struct pmq_header *header;
	const struct pmq_msg_fields *msg_fields;
	const struct pmq_sub_opts *sub_opts;
	const struct pmq_delivery *delivery;
	const struct pmq_publish_result *publish_result;
	const struct pmq_record *record;
	const struct pmq_topic_config *topic_config;
	const struct pmq_log_offsets *log_offsets;
	/* Opaque handles: their names are ABI, their contents are not. */
	pmq_instance *instance;
	pmq_conn *conn;
	pmq_slot *slot;
	pmq_client *client;
	pmq_msg *msg;
	pmq_timer *timer;
	pmq_io *io;
	pmq_waiter *waiter;
	/* Append types of later minors here, each under #if PMQ_ABI_MINOR. */
#if PMQ_ABI_MINOR >= 2
	const struct pmq_extent *extent;
	const struct pmq_extents *extents;
#endif
};

PMQ_EXPORT const struct pmq_abi_probe pmq_abi_probe;
const struct pmq_abi_probe pmq_abi_probe = { .err = PMQ_OK };
