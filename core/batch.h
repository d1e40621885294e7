/*
 * batch.h - Kafka RecordBatch v2 (magic 2), the core's log format: CRC32C,
 * zig-zag varints, validation of batches from producers, building batches
 * from MQTT publishes, and decoding records for cross-protocol readers.
 *
 * Layout (big-endian, as in Kafka's DefaultRecordBatch):
 *   offset  0 baseOffset i64          35 maxTimestamp i64
 *           8 batchLength i32         43 producerId i64
 *          12 partitionLeaderEpoch    51 producerEpoch i16
 *                     i32             53 baseSequence i32
 *          16 magic i8 (= 2)          57 recordsCount i32
 *          17 crc u32                 61 records...
 *          21 attributes i16
 *          23 lastOffsetDelta i32
 *          27 firstTimestamp i64
 * batchLength counts the bytes after itself (total - 12).  The CRC-32C
 * covers attributes .. end, so baseOffset and partitionLeaderEpoch can be
 * rewritten without recomputing it.
 *
 * MQTT <-> Kafka mapping (batch_build / batch_record_to_fields):
 *   record key    the message key when has_key, else the MQTT topic (so
 *                 Kafka's key-hash partitioning keeps one device in order)
 *   record value  the payload (never null; an empty payload is "")
 *   timestamp     the message timestamp (0 = the time of building)
 *   headers       the reserved plexmq headers below, first, then the
 *                 message's own headers (MQTT v5 user properties) in order:
 *     "mqtt.topic"            the MQTT topic name (when the message has one)
 *     "mqtt.qos"              "0", "1" or "2" (always written)
 *     "mqtt.retain"           "1", only when the retain flag is set
 *     "mqtt.payload_format"   "1", only when the v5 payload format is UTF-8
 *     "mqtt.content_type"     v5 content type, when present
 *     "mqtt.response_topic"   v5 response topic, when present
 *     "mqtt.correlation_data" v5 correlation data (binary), when present
 * A Kafka producer may set these headers itself to steer MQTT delivery.
 * When decoding, the first header of each reserved name is taken; a later
 * duplicate, or one whose value is not valid, stays an ordinary header.
 *
 * Threads: every function is pure (the CRC table is built once, under
 * pthread_once); any thread may call any of them.
 */
#ifndef PMQ_CORE_BATCH_H
#define PMQ_CORE_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include <plexmq/host.h>
#include <plexmq/storage.h>
#include <plexmq/types.h>

/* Fixed part of a batch: the bytes before the first record. */
#define BATCH_HEADER_SIZE 61
/* baseOffset + batchLength: the bytes batchLength does not count. */
#define BATCH_LOG_OVERHEAD 12
#define BATCH_MAGIC 2

/* attributes bits */
#define BATCH_ATTR_CODEC_MASK 0x07     /* 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd */
#define BATCH_ATTR_LOG_APPEND_TIME 0x08
#define BATCH_ATTR_TRANSACTIONAL 0x10
#define BATCH_ATTR_CONTROL 0x20

/* Reserved header names (see the mapping above). */
#define BATCH_HDR_TOPIC "mqtt.topic"
#define BATCH_HDR_QOS "mqtt.qos"
#define BATCH_HDR_RETAIN "mqtt.retain"
#define BATCH_HDR_PAYLOAD_FORMAT "mqtt.payload_format"
#define BATCH_HDR_CONTENT_TYPE "mqtt.content_type"
#define BATCH_HDR_RESPONSE_TOPIC "mqtt.response_topic"
#define BATCH_HDR_CORRELATION_DATA "mqtt.correlation_data"

/* Largest encodings of a zig-zag varint (int32) and varlong (int64). */
#define BATCH_VARINT_MAX 5
#define BATCH_VARLONG_MAX 10

/*
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), as Kafka's
 * Crc32C.  Incremental like zlib's crc32(): start with crc = 0 and pass
 * the previous result to continue.  batch_crc32c(0, "123456789", 9) is
 * 0xE3069283.
 */
uint32_t batch_crc32c(uint32_t crc, const void *data, size_t len);
/* The portable slice-by-8 table version, which batch_crc32c uses unless
 * the CPU has a CRC32C instruction (x86-64 SSE4.2).  For tests. */
uint32_t batch_crc32c_sw(uint32_t crc, const void *data, size_t len);

/*
 * Zig-zag base-128 varints (protobuf sint32/sint64), as Kafka's
 * ByteUtils.writeVarint/writeVarlong.  Encoders write into buf, which must
 * hold BATCH_VARINT_MAX / BATCH_VARLONG_MAX bytes, and return the number
 * of bytes written.  Decoders read at most len bytes from p and return
 * PMQ_OK with *used set, or PMQ_ERR_CORRUPT when the input ends inside the
 * varint or the varint is longer than 5 (10) bytes or overflows 32 (64)
 * bits.
 */
size_t batch_varint_encode(int32_t v, uint8_t *buf);
size_t batch_varlong_encode(int64_t v, uint8_t *buf);
size_t batch_varint_size(int32_t v);
size_t batch_varlong_size(int64_t v);
int batch_varint_decode(const void *p, size_t len, int32_t *out,
                        size_t *used);
int batch_varlong_decode(const void *p, size_t len, int64_t *out,
                         size_t *used);

/*
 * Check that data holds exactly ONE batch of exactly len bytes, as a
 * Kafka broker does for Produce: batchLength == len - 12, magic 2, CRC32C,
 * recordsCount > 0 and == lastOffsetDelta + 1.  Uncompressed batches also
 * have every record decoded: lengths and varints in bounds, offsetDelta of
 * record i == i, the records fill the batch exactly.  Compressed batches
 * (attributes & 7) are checked up to the CRC only.
 * On PMQ_OK fills *meta (size, records, base_offset as found in the batch,
 * first/max timestamp); meta may be NULL.
 * Returns PMQ_OK; PMQ_ERR_CORRUPT for a bad CRC or a structure that does
 * not parse (Kafka: CORRUPT_MESSAGE); PMQ_ERR_INVAL for NULL arguments, a
 * magic other than 2, or counts/offset deltas that break Kafka's rules
 * (Kafka: INVALID_RECORD).  Logs nothing: the caller knows the peer.
 */
int batch_validate(const void *data, size_t len, struct pmq_batch_meta *meta);

/*
 * Overwrite the baseOffset of the batch at data.  The field is not covered
 * by the CRC, so nothing else changes.  PMQ_ERR_INVAL if len is shorter
 * than a batch header.
 */
int batch_set_base_offset(void *data, size_t len, int64_t base);

/*
 * Build one uncompressed batch of n >= 1 records from MQTT messages,
 * following the mapping at the top of this file.  Header fields:
 * attributes 0 (CreateTime), producerId -1, producerEpoch -1,
 * baseSequence -1 (not idempotent), partitionLeaderEpoch 0 (what a
 * single-node Kafka broker stamps: the first leader epoch), firstTimestamp
 * = the first record's timestamp (as Kafka; deltas may be negative),
 * maxTimestamp = the largest.  A header with value NULL is written as a
 * Kafka null header value.
 * On PMQ_OK, *out is a new malloc() buffer of *out_len bytes that the
 * caller owns and frees with free().  Returns PMQ_ERR_INVAL (n == 0 or a
 * NULL argument), PMQ_ERR_RANGE (a field or the batch exceeds Kafka's
 * int32 lengths) or PMQ_ERR_NOMEM; *out is untouched on error.
 */
int batch_build(const struct pmq_msg_fields *const *msgs, size_t n,
                int64_t base_offset, void **out, size_t *out_len);

/*
 * Peek at the first batch in a buffer of concatenated batches (a log
 * segment, a Fetch response): *batch_len = its total size, *meta from its
 * header (meta may be NULL).  No CRC check, no record decoding: for
 * indexing and for storage recovery.  Returns PMQ_OK; PMQ_ERR_AGAIN when
 * len is shorter than the header or than the whole batch (*batch_len is
 * set as soon as 12 bytes are there); PMQ_ERR_CORRUPT when batchLength is
 * impossible, magic is not 2 or the record count is negative.
 */
int batch_next(const void *data, size_t len, size_t *batch_len,
               struct pmq_batch_meta *meta);

/*
 * Decode the records of one or more concatenated batches (what a log read
 * returns) and call fn for each, in order.  rec and everything it points
 * to (key, value, headers) are borrowed: valid only during the call of fn,
 * pointing into data and into a scratch array freed before return.
 * offset = baseOffset + offsetDelta; timestamp = firstTimestamp + delta,
 * or maxTimestamp for LogAppendTime batches (as Kafka).  Control batches
 * (transaction markers) are skipped, as Kafka consumers skip them.  A
 * trailing partial batch is ignored, as Kafka clients do.  Each batch's
 * CRC is checked before its records are delivered.
 * Returns PMQ_OK (also when fn returned non-zero to stop),
 * PMQ_ERR_CORRUPT (also a compressed blob that does not inflate),
 * PMQ_ERR_LIMIT (a batch inflating past 64 MiB), PMQ_ERR_NOMEM, or
 * PMQ_ERR_INVAL (NULL fn); earlier records were delivered.  Matches
 * host->batch_records.
 * Compressed batches (attributes & 7: 1 gzip, 2 snappy raw or in the
 * xerial framing of Kafka's Java clients, 3 lz4 frame format, 4 zstd)
 * are inflated into a temporary buffer, freed after the batch's records
 * were delivered.
 */
int batch_records(const void *data, size_t len, pmq_record_fn fn, void *arg);

/*
 * Map a decoded record back to message fields (the reverse of batch_build)
 * for delivery to MQTT subscribers.  f is filled completely (f->size set):
 *   topic   the "mqtt.topic" header, else NULL: the caller derives one
 *           (from the log's topic rule, or the Kafka topic)
 *   key     has_key = 0 when the record key equals the mqtt.topic header
 *           (batch_build put the topic there), else the record key
 *           (has_key = 1 unless the key is null)
 *   payload the record value (NULL when null)
 *   qos, retain, payload_format, content_type, response_topic,
 *   correlation_data  from the reserved headers; defaults 0 / NULL
 *   timestamp_ms = r->timestamp_ms; expiry_ms = 0
 *   headers the remaining headers, copied (as structs) into scratch
 * Everything points into r's buffers and scratch: valid as long as they
 * are.  scratch must hold scratch_len entries; r->n_headers always
 * suffices.  Returns PMQ_OK, PMQ_ERR_INVAL (NULL argument) or
 * PMQ_ERR_LIMIT when scratch is too small.
 */
int batch_record_to_fields(const struct pmq_record *r,
                           struct pmq_msg_fields *f,
                           struct pmq_header *scratch, uint32_t scratch_len);

#endif
