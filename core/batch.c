/*
 * batch.c - Kafka RecordBatch v2: CRC32C, zig-zag varints, validation,
 * building batches from MQTT messages and decoding records (see batch.h).
 *
 * Every read from a batch goes through a bounds-checked cursor: the bytes
 * come from the network or from disk and may be anything.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lz4frame.h>
#include <snappy-c.h>
#include <zlib.h>
#include <zstd.h>

#include "batch.h"
#include "logger.h"
#include "util.h"

/* Field offsets inside a batch (Kafka's DefaultRecordBatch). */
#define OFF_BASE_OFFSET 0
#define OFF_LENGTH 8
#define OFF_LEADER_EPOCH 12
#define OFF_MAGIC 16
#define OFF_CRC 17
#define OFF_ATTRIBUTES 21
#define OFF_LAST_OFFSET_DELTA 23
#define OFF_FIRST_TIMESTAMP 27
#define OFF_MAX_TIMESTAMP 35
#define OFF_PRODUCER_ID 43
#define OFF_PRODUCER_EPOCH 51
#define OFF_BASE_SEQUENCE 53
#define OFF_RECORDS_COUNT 57

/* Smallest batchLength: the header after baseOffset and batchLength. */
#define MIN_BATCH_LENGTH (BATCH_HEADER_SIZE - BATCH_LOG_OVERHEAD)

/* Codec ids in attributes (Kafka's CompressionType). */
#define CODEC_NONE 0
#define CODEC_GZIP 1
#define CODEC_SNAPPY 2
#define CODEC_LZ4 3
#define CODEC_ZSTD 4
/* Highest codec id Kafka defines (zstd). */
#define CODEC_MAX 4

/* Leader epoch written into batches we build: a single-node Kafka broker
 * stamps its first leader epoch, 0, on every batch it appends. */
#define BUILD_LEADER_EPOCH 0

/* ------------------------------------------------------------------ */
/* Big-endian fixed-width fields                                       */

static uint16_t
rd16(const uint8_t *p)
{
	return (uint16_t)((unsigned)p[0] << 8 | p[1]);
}

static uint32_t
rd32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint64_t
rd64(const uint8_t *p)
{
	return (uint64_t)rd32(p) << 32 | rd32(p + 4);
}

static void
wr16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static void
wr32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static void
wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)(v >> 32));
	wr32(p + 4, (uint32_t)v);
}

/* Signed sums on wire values wrap instead of overflowing (undefined in C):
 * a hostile batch may carry any base offset or timestamp. */
static int64_t
add_wrap(int64_t a, int64_t b)
{
	return (int64_t)((uint64_t)a + (uint64_t)b);
}

/* ------------------------------------------------------------------ */
/* CRC-32C                                                             */

#define CRC32C_POLY 0x82F63B78u /* reflected Castagnoli polynomial */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;
static int crc_have_hw;

static void
crc_init(void)
{
	uint32_t c;
	int i, k;

	for (i = 0; i < 256; i++) {
		c = (uint32_t)i;
		for (k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc_table[0][i] = c;
	}
	/* Slice-by-8: table k advances a byte through k more zero bytes. */
	for (i = 0; i < 256; i++)
		for (k = 1; k < 8; k++)
			crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^
			                  crc_table[0][crc_table[k - 1][i] & 0xff];
#if defined(__x86_64__) && defined(__GNUC__)
	__builtin_cpu_init();
	crc_have_hw = __builtin_cpu_supports("sse4.2");
#endif
}

uint32_t
batch_crc32c_sw(uint32_t crc, const void *data, size_t len)
{
	const uint8_t *p = data;

	pthread_once(&crc_once, crc_init);
	crc = ~crc;
	/* Bytes are combined one by one, so the result does not depend on
	 * the host's byte order or on alignment. */
	while (len >= 8) {
		crc ^= (uint32_t)p[0] | (uint32_t)p[1] << 8 |
		       (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
		crc = crc_table[7][crc & 0xff] ^
		      crc_table[6][(crc >> 8) & 0xff] ^
		      crc_table[5][(crc >> 16) & 0xff] ^
		      crc_table[4][crc >> 24] ^ crc_table[3][p[4]] ^
		      crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
		      crc_table[0][p[7]];
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

#if defined(__x86_64__) && defined(__GNUC__)
/* SSE4.2's crc32 instruction computes exactly CRC-32C, several times
 * faster than the tables; used only when the CPU reports it. */
__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = ~crc;
	uint64_t w;

	while (len >= 8) {
		memcpy(&w, p, 8); /* x86 is little-endian, as the CRC wants */
		c = __builtin_ia32_crc32di(c, w);
		p += 8;
		len -= 8;
	}
	while (len-- > 0)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return ~(uint32_t)c;
}
#endif

uint32_t
batch_crc32c(uint32_t crc, const void *data, size_t len)
{
	pthread_once(&crc_once, crc_init);
#if defined(__x86_64__) && defined(__GNUC__)
	if (crc_have_hw)
		return crc32c_hw(crc, data, len);
#endif
	return batch_crc32c_sw(crc, data, len);
}

/* ------------------------------------------------------------------ */
/* Zig-zag varints                                                     */

static size_t
uvarint_put(uint64_t v, uint8_t *buf)
{
	size_t n = 0;

	while (v >= 0x80) {
		buf[n++] = (uint8_t)(v | 0x80);
		v >>= 7;
	}
	buf[n++] = (uint8_t)v;
	return n;
}

static size_t
uvarint_size(uint64_t v)
{
	size_t n = 1;

	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

static uint32_t
zigzag32(int32_t v)
{
	return ((uint32_t)v << 1) ^ (0u - ((uint32_t)v >> 31));
}

static uint64_t
zigzag64(int64_t v)
{
	return ((uint64_t)v << 1) ^ (0u - ((uint64_t)v >> 63));
}

size_t
batch_varint_encode(int32_t v, uint8_t *buf)
{
	return uvarint_put(zigzag32(v), buf);
}

size_t
batch_varlong_encode(int64_t v, uint8_t *buf)
{
	return uvarint_put(zigzag64(v), buf);
}

size_t
batch_varint_size(int32_t v)
{
	return uvarint_size(zigzag32(v));
}

size_t
batch_varlong_size(int64_t v)
{
	return uvarint_size(zigzag64(v));
}

/* Read an unsigned base-128 value of at most max_bytes, whose last byte
 * may use only last_bits bits (so the value cannot overflow). */
static int
uvarint_get(const uint8_t *p, size_t len, size_t max_bytes,
            unsigned last_bits, uint64_t *out, size_t *used)
{
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < max_bytes; i++) {
		if (i >= len)
			return PMQ_ERR_CORRUPT;
		if (i == max_bytes - 1 && p[i] >= (1u << last_bits))
			return PMQ_ERR_CORRUPT; /* too long or overflows */
		v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if ((p[i] & 0x80) == 0) {
			*out = v;
			*used = i + 1;
			return PMQ_OK;
		}
	}
	return PMQ_ERR_CORRUPT;
}

int
batch_varint_decode(const void *p, size_t len, int32_t *out, size_t *used)
{
	uint64_t u;
	uint32_t z;
	int rc;

	if (p == NULL && len > 0)
		return PMQ_ERR_INVAL;
	rc = uvarint_get(p, len, BATCH_VARINT_MAX, 4, &u, used);
	if (rc != PMQ_OK)
		return rc;
	z = (uint32_t)u;
	*out = (int32_t)((z >> 1) ^ (0u - (z & 1)));
	return PMQ_OK;
}

int
batch_varlong_decode(const void *p, size_t len, int64_t *out, size_t *used)
{
	uint64_t u;
	int rc;

	if (p == NULL && len > 0)
		return PMQ_ERR_INVAL;
	rc = uvarint_get(p, len, BATCH_VARLONG_MAX, 1, &u, used);
	if (rc != PMQ_OK)
		return rc;
	*out = (int64_t)((u >> 1) ^ (0u - (u & 1)));
	return PMQ_OK;
}

/* ------------------------------------------------------------------ */
/* Bounds-checked reading of records                                   */

struct cursor {
	const uint8_t *p;
	const uint8_t *end;
};

static int
cur_varint(struct cursor *c, int32_t *v)
{
	size_t used;

	if (batch_varint_decode(c->p, (size_t)(c->end - c->p), v, &used) !=
	    PMQ_OK)
		return PMQ_ERR_CORRUPT;
	c->p += used;
	return PMQ_OK;
}

static int
cur_varlong(struct cursor *c, int64_t *v)
{
	size_t used;

	if (batch_varlong_decode(c->p, (size_t)(c->end - c->p), v, &used) !=
	    PMQ_OK)
		return PMQ_ERR_CORRUPT;
	c->p += used;
	return PMQ_OK;
}

/* Take n >= 0 bytes. */
static int
cur_take(struct cursor *c, int32_t n, const uint8_t **out)
{
	if (n < 0 || (size_t)n > (size_t)(c->end - c->p))
		return PMQ_ERR_CORRUPT;
	*out = c->p;
	c->p += n;
	return PMQ_OK;
}

/* A varint length then that many bytes; a negative length is null (Kafka
 * treats any negative length as null). */
static int
cur_nullable(struct cursor *c, const uint8_t **out, int32_t *len)
{
	if (cur_varint(c, len) != PMQ_OK)
		return PMQ_ERR_CORRUPT;
	if (*len < 0) {
		*out = NULL;
		*len = -1;
		return PMQ_OK;
	}
	return cur_take(c, *len, out);
}

/* One record as laid out on the wire; headers stay encoded. */
struct raw_record {
	int64_t ts_delta;
	int32_t offset_delta;
	const uint8_t *key;
	int32_t key_len; /* -1: null */
	const uint8_t *value;
	int32_t value_len; /* -1: null */
	int32_t n_headers;
	const uint8_t *headers; /* n_headers encoded headers, checked */
	const uint8_t *headers_end;
};

/* Parse and check the record at c, advancing c past it. */
static int
record_parse(struct cursor *c, struct raw_record *r)
{
	struct cursor b;
	const uint8_t *attr, *name, *val;
	int32_t body_len, name_len, val_len, i;

	if (cur_varint(c, &body_len) != PMQ_OK ||
	    cur_take(c, body_len, &b.p) != PMQ_OK)
		return PMQ_ERR_CORRUPT;
	b.end = b.p + body_len;

	if (cur_take(&b, 1, &attr) != PMQ_OK || /* unused by Kafka */
	    cur_varlong(&b, &r->ts_delta) != PMQ_OK ||
	    cur_varint(&b, &r->offset_delta) != PMQ_OK ||
	    cur_nullable(&b, &r->key, &r->key_len) != PMQ_OK ||
	    cur_nullable(&b, &r->value, &r->value_len) != PMQ_OK ||
	    cur_varint(&b, &r->n_headers) != PMQ_OK)
		return PMQ_ERR_CORRUPT;
	/* Each header takes at least two bytes: refuse counts the body
	 * cannot hold before anyone sizes an array by them. */
	if (r->n_headers < 0 ||
	    (size_t)r->n_headers > (size_t)(b.end - b.p) / 2)
		return PMQ_ERR_CORRUPT;
	r->headers = b.p;
	for (i = 0; i < r->n_headers; i++) {
		if (cur_varint(&b, &name_len) != PMQ_OK || name_len < 0 ||
		    cur_take(&b, name_len, &name) != PMQ_OK ||
		    cur_nullable(&b, &val, &val_len) != PMQ_OK)
			return PMQ_ERR_CORRUPT;
	}
	r->headers_end = b.p;
	/* Kafka: "Invalid record size: expected to read N bytes". */
	if (b.p != b.end)
		return PMQ_ERR_CORRUPT;
	return PMQ_OK;
}

/* Decode the headers record_parse already checked into out[n_headers]. */
static void
record_headers(const struct raw_record *r, struct pmq_header *out)
{
	struct cursor c = { r->headers, r->headers_end };
	const uint8_t *name = NULL, *val = NULL;
	int32_t name_len = 0, val_len = -1, i;

	for (i = 0; i < r->n_headers; i++) {
		/* Cannot fail after record_parse; checked all the same. */
		if (cur_varint(&c, &name_len) != PMQ_OK ||
		    cur_take(&c, name_len, &name) != PMQ_OK ||
		    cur_nullable(&c, &val, &val_len) != PMQ_OK) {
			name = val = NULL;
			name_len = 0;
			val_len = -1;
		}
		out[i].name = (const char *)name;
		out[i].name_len = (size_t)name_len;
		out[i].value = val;
		out[i].value_len = val_len < 0 ? 0 : (size_t)val_len;
	}
}

/* ------------------------------------------------------------------ */
/* Batch headers                                                       */

static void
meta_fill(const uint8_t *p, struct pmq_batch_meta *meta)
{
	if (meta == NULL)
		return;
	memset(meta, 0, sizeof(*meta));
	meta->size = sizeof(*meta);
	meta->records = (uint32_t)rd32(p + OFF_LAST_OFFSET_DELTA) + 1;
	meta->base_offset = (int64_t)rd64(p + OFF_BASE_OFFSET);
	meta->first_timestamp_ms = (int64_t)rd64(p + OFF_FIRST_TIMESTAMP);
	meta->max_timestamp_ms = (int64_t)rd64(p + OFF_MAX_TIMESTAMP);
}

static int
crc_ok(const uint8_t *p, size_t total)
{
	return rd32(p + OFF_CRC) ==
	       batch_crc32c(0, p + OFF_ATTRIBUTES, total - OFF_ATTRIBUTES);
}

int
batch_validate(const void *data, size_t len, struct pmq_batch_meta *meta)
{
	const uint8_t *p = data;
	struct cursor c;
	struct raw_record r;
	int32_t batch_length, last_delta, count, i;
	uint16_t attrs;

	if (data == NULL)
		return PMQ_ERR_INVAL;
	if (len < BATCH_HEADER_SIZE) {
		log_debug("%s: %zu bytes, shorter than a batch header",
		          __func__, len);
		return PMQ_ERR_CORRUPT;
	}
	batch_length = (int32_t)rd32(p + OFF_LENGTH);
	if (batch_length < MIN_BATCH_LENGTH ||
	    (size_t)batch_length != len - BATCH_LOG_OVERHEAD) {
		log_debug("%s: batchLength %d for %zu bytes", __func__,
		          batch_length, len);
		return PMQ_ERR_CORRUPT;
	}
	if (p[OFF_MAGIC] != BATCH_MAGIC) {
		log_debug("%s: magic %u", __func__, p[OFF_MAGIC]);
		return PMQ_ERR_INVAL;
	}
	/* CRC before any rule on the covered fields: a damaged byte there is
	 * corruption, whatever rule it happens to break. */
	if (!crc_ok(p, len)) {
		log_debug("%s: CRC mismatch", __func__);
		return PMQ_ERR_CORRUPT;
	}
	attrs = rd16(p + OFF_ATTRIBUTES);
	last_delta = (int32_t)rd32(p + OFF_LAST_OFFSET_DELTA);
	count = (int32_t)rd32(p + OFF_RECORDS_COUNT);
	/* Kafka's LogValidator: empty batches and count/delta mismatches are
	 * INVALID_RECORD. */
	if (last_delta < 0 || count <= 0 || count - 1 != last_delta) {
		log_debug("%s: lastOffsetDelta %d, recordsCount %d", __func__,
		          last_delta, count);
		return PMQ_ERR_INVAL;
	}
	if ((attrs & BATCH_ATTR_CODEC_MASK) > CODEC_MAX) {
		log_debug("%s: codec %u", __func__,
		          attrs & BATCH_ATTR_CODEC_MASK);
		return PMQ_ERR_INVAL;
	}
	if ((attrs & BATCH_ATTR_CODEC_MASK) == 0) {
		c.p = p + BATCH_HEADER_SIZE;
		c.end = p + len;
		for (i = 0; i < count; i++) {
			if (record_parse(&c, &r) != PMQ_OK) {
				log_debug("%s: record %d does not parse",
				          __func__, i);
				return PMQ_ERR_CORRUPT;
			}
			if (r.offset_delta != i) {
				log_debug("%s: record %d has offsetDelta %d",
				          __func__, i, r.offset_delta);
				return PMQ_ERR_INVAL;
			}
		}
		if (c.p != c.end) {
			log_debug("%s: %zu bytes after the last record",
			          __func__, (size_t)(c.end - c.p));
			return PMQ_ERR_CORRUPT;
		}
	}
	meta_fill(p, meta);
	return PMQ_OK;
}

int
batch_set_base_offset(void *data, size_t len, int64_t base)
{
	if (data == NULL || len < BATCH_HEADER_SIZE)
		return PMQ_ERR_INVAL;
	wr64((uint8_t *)data + OFF_BASE_OFFSET, (uint64_t)base);
	return PMQ_OK;
}

int
batch_next(const void *data, size_t len, size_t *batch_len,
           struct pmq_batch_meta *meta)
{
	const uint8_t *p = data;
	int32_t batch_length;

	if (data == NULL || batch_len == NULL)
		return PMQ_ERR_INVAL;
	if (len < BATCH_LOG_OVERHEAD)
		return PMQ_ERR_AGAIN;
	batch_length = (int32_t)rd32(p + OFF_LENGTH);
	if (batch_length < MIN_BATCH_LENGTH)
		return PMQ_ERR_CORRUPT;
	*batch_len = (size_t)batch_length + BATCH_LOG_OVERHEAD;
	if (len < BATCH_HEADER_SIZE)
		return PMQ_ERR_AGAIN;
	if (p[OFF_MAGIC] != BATCH_MAGIC ||
	    (int32_t)rd32(p + OFF_LAST_OFFSET_DELTA) < 0 ||
	    (int32_t)rd32(p + OFF_RECORDS_COUNT) < 0)
		return PMQ_ERR_CORRUPT;
	if (len < *batch_len)
		return PMQ_ERR_AGAIN;
	meta_fill(p, meta);
	return PMQ_OK;
}

/* ------------------------------------------------------------------ */
/* Decompression (records of compressed batches)                       */

/* The most a compressed batch may inflate to: a bound on what a hostile
 * batch can make us allocate (Kafka's own limit is the fetch size). */
#define INFLATE_MAX ((size_t)64 * 1024 * 1024)
#define INFLATE_STEP ((size_t)64 * 1024)

/* xerial snappy-java framing, which Kafka's Java clients use. */
static const uint8_t xerial_magic[8] = { 0x82, 'S', 'N', 'A', 'P', 'P', 'Y',
                                         0 };
#define XERIAL_HEADER 16 /* magic, version i32, compatible i32 */

struct growbuf {
	uint8_t *p;
	size_t len, cap;
};

/* Room for at least want more bytes (at least INFLATE_STEP, doubling),
 * never past INFLATE_MAX: PMQ_ERR_LIMIT then. */
static int
gb_reserve(struct growbuf *g, size_t want)
{
	size_t ncap;
	uint8_t *np;

	if (g->cap - g->len >= want && want > 0)
		return PMQ_OK;
	if (want == 0)
		want = 1;
	if (want > INFLATE_MAX - g->len)
		return PMQ_ERR_LIMIT;
	ncap = g->cap > 0 ? g->cap : INFLATE_STEP;
	while (ncap - g->len < want || ncap == g->cap)
		ncap = ncap > INFLATE_MAX / 2 ? INFLATE_MAX : ncap * 2;
	if (ncap > INFLATE_MAX)
		ncap = INFLATE_MAX;
	if (ncap - g->len < want)
		return PMQ_ERR_LIMIT;
	np = realloc(g->p, ncap);
	if (np == NULL)
		return PMQ_ERR_NOMEM;
	g->p = np;
	g->cap = ncap;
	return PMQ_OK;
}

static int
inflate_gzip(const uint8_t *src, size_t len, struct growbuf *g)
{
	z_stream z;
	int zrc, rc = PMQ_OK;

	memset(&z, 0, sizeof z);
	/* 15 + 32: a gzip or zlib header, detected. */
	if (inflateInit2(&z, 15 + 32) != Z_OK)
		return PMQ_ERR_NOMEM;
	z.next_in = (Bytef *)(uintptr_t)src;
	z.avail_in = (uInt)len; /* < 2 GiB: a batch length is an int32 */
	for (;;) {
		if (g->cap == g->len && (rc = gb_reserve(g, INFLATE_STEP)) !=
		    PMQ_OK)
			break;
		z.next_out = g->p + g->len;
		z.avail_out = (uInt)(g->cap - g->len);
		zrc = inflate(&z, Z_NO_FLUSH);
		g->len = g->cap - z.avail_out;
		if (zrc == Z_STREAM_END)
			break;
		if (zrc == Z_BUF_ERROR && z.avail_out == 0)
			continue; /* needs room */
		if (zrc != Z_OK || (z.avail_in == 0 && z.avail_out > 0)) {
			rc = PMQ_ERR_CORRUPT; /* bad or truncated stream */
			break;
		}
	}
	inflateEnd(&z);
	return rc;
}

static int
snappy_block(const uint8_t *src, size_t len, struct growbuf *g)
{
	size_t n;
	int rc;

	if (snappy_uncompressed_length((const char *)src, len, &n) !=
	    SNAPPY_OK)
		return PMQ_ERR_CORRUPT;
	if (n == 0)
		return PMQ_OK;
	rc = gb_reserve(g, n);
	if (rc != PMQ_OK)
		return rc;
	if (snappy_uncompress((const char *)src, len,
	                      (char *)g->p + g->len, &n) != SNAPPY_OK)
		return PMQ_ERR_CORRUPT;
	g->len += n;
	return PMQ_OK;
}

/* Raw snappy (librdkafka) or xerial-framed chunks (Java clients). */
static int
inflate_snappy(const uint8_t *src, size_t len, struct growbuf *g)
{
	size_t pos = XERIAL_HEADER;
	int rc;

	if (len < XERIAL_HEADER || memcmp(src, xerial_magic, 8) != 0)
		return snappy_block(src, len, g);
	while (pos < len) {
		uint32_t n;

		if (len - pos < 4)
			return PMQ_ERR_CORRUPT;
		n = rd32(src + pos);
		pos += 4;
		if (n > len - pos)
			return PMQ_ERR_CORRUPT;
		rc = snappy_block(src + pos, n, g);
		if (rc != PMQ_OK)
			return rc;
		pos += n;
	}
	return PMQ_OK;
}

/* Kafka's lz4 for magic 2 is the standard LZ4 frame format. */
static int
inflate_lz4(const uint8_t *src, size_t len, struct growbuf *g)
{
	LZ4F_dctx *d;
	size_t pos = 0, r = 1;
	int rc = PMQ_OK;

	if (LZ4F_isError(LZ4F_createDecompressionContext(&d, LZ4F_VERSION)))
		return PMQ_ERR_NOMEM;
	while (r != 0) {
		size_t out, in = len - pos;

		if (g->cap == g->len && (rc = gb_reserve(g, INFLATE_STEP)) !=
		    PMQ_OK)
			break;
		out = g->cap - g->len;
		r = LZ4F_decompress(d, g->p + g->len, &out, src + pos, &in,
		                    NULL);
		if (LZ4F_isError(r)) {
			rc = PMQ_ERR_CORRUPT;
			break;
		}
		pos += in;
		g->len += out;
		if (r != 0 && pos == len && out < g->cap - (g->len - out)) {
			rc = PMQ_ERR_CORRUPT; /* the frame is cut short */
			break;
		}
	}
	LZ4F_freeDecompressionContext(d);
	return rc;
}

static int
inflate_zstd(const uint8_t *src, size_t len, struct growbuf *g)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	ZSTD_inBuffer in = { src, len, 0 };
	size_t r = 1;
	int rc = PMQ_OK;

	if (d == NULL)
		return PMQ_ERR_NOMEM;
	/* Every frame to the end of the input (a producer may write
	 * several). */
	while (in.pos < in.size || r != 0) {
		ZSTD_outBuffer out;

		if (g->cap == g->len && (rc = gb_reserve(g, INFLATE_STEP)) !=
		    PMQ_OK)
			break;
		out.dst = g->p + g->len;
		out.size = g->cap - g->len;
		out.pos = 0;
		r = ZSTD_decompressStream(d, &out, &in);
		if (ZSTD_isError(r)) {
			rc = PMQ_ERR_CORRUPT;
			break;
		}
		g->len += out.pos;
		if (r != 0 && in.pos == in.size && out.pos < out.size) {
			rc = PMQ_ERR_CORRUPT; /* the frame is cut short */
			break;
		}
	}
	ZSTD_freeDCtx(d);
	return rc;
}

/* The records of a compressed batch, inflated into a new buffer (*out,
 * freed by the caller, also on error). */
static int
batch_inflate(unsigned codec, const uint8_t *src, size_t len, uint8_t **out,
              size_t *out_len)
{
	struct growbuf g = { NULL, 0, 0 };
	int rc;

	switch (codec) {
	case CODEC_GZIP:
		rc = inflate_gzip(src, len, &g);
		break;
	case CODEC_SNAPPY:
		rc = inflate_snappy(src, len, &g);
		break;
	case CODEC_LZ4:
		rc = inflate_lz4(src, len, &g);
		break;
	case CODEC_ZSTD:
		rc = inflate_zstd(src, len, &g);
		break;
	default:
		rc = PMQ_ERR_UNSUPPORTED;
		break;
	}
	*out = g.p;
	*out_len = g.len;
	return rc;
}

/* ------------------------------------------------------------------ */
/* Decoding records                                                    */

/* Deliver the records of one whole, CRC-checked batch whose header is at
 * p and whose (uncompressed) records are recs[0, recs_len).  *stop is set
 * when fn asked to stop. */
static int
records_of_batch(const uint8_t *p, const uint8_t *recs, size_t recs_len,
                 struct pmq_header **hdrs, size_t *cap, pmq_record_fn fn,
                 void *arg, int *stop)
{
	struct cursor c = { recs, recs + recs_len };
	struct raw_record r;
	struct pmq_record rec;
	struct pmq_header *grown;
	int64_t base, first_ts, max_ts;
	int32_t count, i;
	int log_append_time;

	base = (int64_t)rd64(p + OFF_BASE_OFFSET);
	first_ts = (int64_t)rd64(p + OFF_FIRST_TIMESTAMP);
	max_ts = (int64_t)rd64(p + OFF_MAX_TIMESTAMP);
	log_append_time = (rd16(p + OFF_ATTRIBUTES) &
	                   BATCH_ATTR_LOG_APPEND_TIME) != 0;
	count = (int32_t)rd32(p + OFF_RECORDS_COUNT);
	if (count < 0)
		return PMQ_ERR_CORRUPT;

	for (i = 0; i < count; i++) {
		if (record_parse(&c, &r) != PMQ_OK)
			return PMQ_ERR_CORRUPT;
		if ((size_t)r.n_headers > *cap) {
			/* Bounded by the batch size (record_parse). */
			grown = realloc(*hdrs, (size_t)r.n_headers *
			                           sizeof(**hdrs));
			if (grown == NULL)
				return PMQ_ERR_NOMEM;
			*hdrs = grown;
			*cap = (size_t)r.n_headers;
		}
		record_headers(&r, *hdrs);

		memset(&rec, 0, sizeof(rec));
		rec.size = sizeof(rec);
		rec.n_headers = (uint32_t)r.n_headers;
		rec.offset = add_wrap(base, r.offset_delta);
		/* As Kafka's DefaultRecord: LogAppendTime batches carry the
		 * broker's time in maxTimestamp for every record. */
		rec.timestamp_ms = log_append_time ? max_ts
		                                   : add_wrap(first_ts,
		                                              r.ts_delta);
		rec.key = r.key;
		rec.key_len = r.key_len < 0 ? 0 : (size_t)r.key_len;
		rec.value = r.value;
		rec.value_len = r.value_len < 0 ? 0 : (size_t)r.value_len;
		rec.headers = r.n_headers > 0 ? *hdrs : NULL;
		if (fn(arg, &rec) != 0) {
			*stop = 1;
			return PMQ_OK;
		}
	}
	/* Kafka: "Incorrect declared batch size, records still remaining". */
	if (c.p != c.end)
		return PMQ_ERR_CORRUPT;
	return PMQ_OK;
}

int
batch_records(const void *data, size_t len, pmq_record_fn fn, void *arg)
{
	const uint8_t *p = data;
	struct pmq_header *hdrs = NULL;
	size_t cap = 0, pos = 0, total;
	int32_t batch_length;
	uint16_t attrs;
	int rc = PMQ_OK, stop = 0;

	if ((data == NULL && len > 0) || fn == NULL)
		return PMQ_ERR_INVAL;
	while (!stop && len - pos >= BATCH_LOG_OVERHEAD) {
		batch_length = (int32_t)rd32(p + pos + OFF_LENGTH);
		if (batch_length < MIN_BATCH_LENGTH) {
			log_debug("%s: batchLength %d at byte %zu", __func__,
			          batch_length, pos);
			rc = PMQ_ERR_CORRUPT;
			break;
		}
		total = (size_t)batch_length + BATCH_LOG_OVERHEAD;
		if (total > len - pos)
			break; /* partial tail of a read: not ours to judge */
		if (p[pos + OFF_MAGIC] != BATCH_MAGIC ||
		    !crc_ok(p + pos, total)) {
			log_debug("%s: bad magic or CRC at byte %zu", __func__,
			          pos);
			rc = PMQ_ERR_CORRUPT;
			break;
		}
		attrs = rd16(p + pos + OFF_ATTRIBUTES);
		if ((attrs & BATCH_ATTR_CONTROL) == 0) {
			unsigned codec = attrs & BATCH_ATTR_CODEC_MASK;
			uint8_t *plain = NULL;
			size_t plain_len = 0;

			if (codec != CODEC_NONE) {
				/* The records after recordsCount are one
				 * compressed blob; inflate it, then decode
				 * as usual.  Records point into plain, freed
				 * once this batch is delivered. */
				rc = batch_inflate(codec, p + pos +
				                   BATCH_HEADER_SIZE, total -
				                   BATCH_HEADER_SIZE, &plain,
				                   &plain_len);
				if (rc != PMQ_OK) {
					free(plain);
					log_debug("%s: codec %u batch at byte "
					          "%zu does not inflate (%d)",
					          __func__, codec, pos, rc);
					break;
				}
				rc = records_of_batch(p + pos, plain,
				                      plain_len, &hdrs, &cap,
				                      fn, arg, &stop);
				free(plain);
			} else {
				rc = records_of_batch(p + pos, p + pos +
				                      BATCH_HEADER_SIZE,
				                      total - BATCH_HEADER_SIZE,
				                      &hdrs, &cap, fn, arg,
				                      &stop);
			}
			if (rc != PMQ_OK) {
				if (rc == PMQ_ERR_CORRUPT)
					log_debug("%s: bad record in batch at "
					          "byte %zu", __func__, pos);
				break;
			}
		}
		pos += total;
	}
	free(hdrs);
	return rc;
}

/* ------------------------------------------------------------------ */
/* Building batches                                                    */

/* Output that either writes or, with buf == NULL, only counts, so that
 * sizing and writing share one code path and cannot disagree. */
struct out {
	uint8_t *buf;
	size_t n;
};

static void
out_bytes(struct out *o, const void *src, size_t n)
{
	if (o->buf != NULL && n > 0)
		memcpy(o->buf + o->n, src, n);
	o->n += n;
}

static void
out_varint(struct out *o, int32_t v)
{
	uint8_t tmp[BATCH_VARINT_MAX];

	out_bytes(o, tmp, batch_varint_encode(v, tmp));
}

static void
out_varlong(struct out *o, int64_t v)
{
	uint8_t tmp[BATCH_VARLONG_MAX];

	out_bytes(o, tmp, batch_varlong_encode(v, tmp));
}

/* Length-prefixed bytes; NULL data with allow_null writes a null (-1). */
static void
out_field(struct out *o, const void *data, size_t len, int allow_null)
{
	if (data == NULL && allow_null) {
		out_varint(o, -1);
		return;
	}
	out_varint(o, (int32_t)len);
	out_bytes(o, data, len);
}

#define RESERVED_MAX 7

static const char digits[] = "0123456789";

/* The reserved headers of message m (see batch.h), into res. */
static uint32_t
reserved_headers(const struct pmq_msg_fields *m,
                 struct pmq_header res[RESERVED_MAX])
{
	uint32_t n = 0;

#define ADD(nm, v, vl)                                                  \
	do {                                                            \
		res[n].name = (nm);                                     \
		res[n].name_len = sizeof(nm) - 1;                       \
		res[n].value = (v);                                     \
		res[n].value_len = (vl);                                \
		n++;                                                    \
	} while (0)

	if (m->topic != NULL)
		ADD(BATCH_HDR_TOPIC, m->topic, m->topic_len);
	ADD(BATCH_HDR_QOS, &digits[m->qos], 1);
	if (m->retain)
		ADD(BATCH_HDR_RETAIN, &digits[1], 1);
	if (m->payload_format != PMQ_PAYLOAD_UNSPECIFIED)
		ADD(BATCH_HDR_PAYLOAD_FORMAT, &digits[m->payload_format], 1);
	if (m->content_type != NULL)
		ADD(BATCH_HDR_CONTENT_TYPE, m->content_type,
		    m->content_type_len);
	if (m->response_topic != NULL)
		ADD(BATCH_HDR_RESPONSE_TOPIC, m->response_topic,
		    m->response_topic_len);
	if (m->correlation_data != NULL)
		ADD(BATCH_HDR_CORRELATION_DATA, m->correlation_data,
		    m->correlation_data_len);
#undef ADD
	return n;
}

/* Every length Kafka stores is an int32. */
static int
fits(size_t len)
{
	return len <= INT32_MAX;
}

/* Refuse messages whose fields cannot be encoded. */
static int
msg_check(const struct pmq_msg_fields *m)
{
	uint32_t i;

	if (m == NULL || m->qos > 2 || m->payload_format > PMQ_PAYLOAD_UTF8 ||
	    (m->n_headers > 0 && m->headers == NULL) ||
	    (m->topic == NULL && m->topic_len > 0) ||
	    (m->key == NULL && m->key_len > 0) ||
	    (m->payload == NULL && m->payload_len > 0) ||
	    (m->content_type == NULL && m->content_type_len > 0) ||
	    (m->response_topic == NULL && m->response_topic_len > 0) ||
	    (m->correlation_data == NULL && m->correlation_data_len > 0))
		return PMQ_ERR_INVAL;
	if (!fits(m->topic_len) || !fits(m->key_len) ||
	    !fits(m->payload_len) || !fits(m->content_type_len) ||
	    !fits(m->response_topic_len) || !fits(m->correlation_data_len) ||
	    m->n_headers > INT32_MAX - RESERVED_MAX)
		return PMQ_ERR_RANGE;
	for (i = 0; i < m->n_headers; i++) {
		if ((m->headers[i].name == NULL && m->headers[i].name_len > 0) ||
		    (m->headers[i].value == NULL &&
		     m->headers[i].value_len > 0))
			return PMQ_ERR_INVAL;
		if (!fits(m->headers[i].name_len) ||
		    !fits(m->headers[i].value_len))
			return PMQ_ERR_RANGE;
	}
	return PMQ_OK;
}

/* The body of one record (everything after its length varint). */
static void
record_body(struct out *o, const struct pmq_msg_fields *m, int64_t ts_delta,
            int32_t offset_delta)
{
	struct pmq_header res[RESERVED_MAX];
	uint32_t n_res, i;
	const struct pmq_header *h;

	n_res = reserved_headers(m, res);
	out_bytes(o, "", 1); /* attributes: unused */
	out_varlong(o, ts_delta);
	out_varint(o, offset_delta);
	if (m->has_key)
		out_field(o, m->key, m->key_len, 0);
	else
		out_field(o, m->topic, m->topic_len, 1);
	out_field(o, m->payload, m->payload_len, 0);
	out_varint(o, (int32_t)(n_res + m->n_headers));
	for (i = 0; i < n_res + m->n_headers; i++) {
		h = i < n_res ? &res[i] : &m->headers[i - n_res];
		out_field(o, h->name, h->name_len, 0);
		out_field(o, h->value, h->value_len, 1);
	}
}

int
batch_build(const struct pmq_msg_fields *const *msgs, size_t n,
            int64_t base_offset, void **out, size_t *out_len)
{
	struct out o = { NULL, 0 }, body;
	uint64_t total = BATCH_HEADER_SIZE;
	int64_t now = 0, ts, first_ts = 0, max_ts = 0;
	uint8_t *buf;
	size_t i;
	int rc;

	if (msgs == NULL || n == 0 || out == NULL || out_len == NULL)
		return PMQ_ERR_INVAL;
	if (n > INT32_MAX)
		return PMQ_ERR_RANGE;

	/* Pass 1: check, find the timestamps, size the batch. */
	for (i = 0; i < n; i++) {
		rc = msg_check(msgs[i]);
		if (rc != PMQ_OK)
			return rc;
		ts = msgs[i]->timestamp_ms;
		if (ts == 0) {
			if (now == 0)
				now = util_now_ms();
			ts = now;
		}
		if (i == 0)
			first_ts = max_ts = ts;
		else if (ts > max_ts)
			max_ts = ts;
	}
	for (i = 0; i < n; i++) {
		ts = msgs[i]->timestamp_ms != 0 ? msgs[i]->timestamp_ms : now;
		body.buf = NULL;
		body.n = 0;
		record_body(&body, msgs[i], add_wrap(ts, -first_ts),
		            (int32_t)i);
		if (!fits(body.n))
			return PMQ_ERR_RANGE;
		total += batch_varint_size((int32_t)body.n) + body.n;
		if (total - BATCH_LOG_OVERHEAD > INT32_MAX)
			return PMQ_ERR_RANGE;
	}

	buf = malloc((size_t)total);
	if (buf == NULL)
		return PMQ_ERR_NOMEM;

	/* Pass 2: write. */
	wr64(buf + OFF_BASE_OFFSET, (uint64_t)base_offset);
	wr32(buf + OFF_LENGTH, (uint32_t)(total - BATCH_LOG_OVERHEAD));
	wr32(buf + OFF_LEADER_EPOCH, (uint32_t)BUILD_LEADER_EPOCH);
	buf[OFF_MAGIC] = BATCH_MAGIC;
	wr16(buf + OFF_ATTRIBUTES, 0);
	wr32(buf + OFF_LAST_OFFSET_DELTA, (uint32_t)(n - 1));
	wr64(buf + OFF_FIRST_TIMESTAMP, (uint64_t)first_ts);
	wr64(buf + OFF_MAX_TIMESTAMP, (uint64_t)max_ts);
	wr64(buf + OFF_PRODUCER_ID, (uint64_t)-1);
	wr16(buf + OFF_PRODUCER_EPOCH, (uint16_t)-1);
	wr32(buf + OFF_BASE_SEQUENCE, (uint32_t)-1);
	wr32(buf + OFF_RECORDS_COUNT, (uint32_t)n);
	o.buf = buf;
	o.n = BATCH_HEADER_SIZE;
	for (i = 0; i < n; i++) {
		ts = msgs[i]->timestamp_ms != 0 ? msgs[i]->timestamp_ms : now;
		body.buf = NULL;
		body.n = 0;
		record_body(&body, msgs[i], add_wrap(ts, -first_ts),
		            (int32_t)i);
		out_varint(&o, (int32_t)body.n);
		record_body(&o, msgs[i], add_wrap(ts, -first_ts), (int32_t)i);
	}
	if (o.n != total) { /* the two passes disagree: a bug here */
		log_error("%s: wrote %zu bytes of %llu", __func__, o.n,
		          (unsigned long long)total);
		free(buf);
		return PMQ_ERR_INVAL;
	}
	wr32(buf + OFF_CRC, batch_crc32c(0, buf + OFF_ATTRIBUTES,
	                                 (size_t)total - OFF_ATTRIBUTES));
	*out = buf;
	*out_len = (size_t)total;
	return PMQ_OK;
}

/* ------------------------------------------------------------------ */
/* Records back to message fields                                      */

static int
hdr_is(const struct pmq_header *h, const char *name, size_t name_len)
{
	return h->name_len == name_len && memcmp(h->name, name, name_len) == 0;
}

#define HDR_IS(h, nm) hdr_is((h), nm, sizeof(nm) - 1)

/* A one-digit value in 0..max, or -1. */
static int
hdr_digit(const struct pmq_header *h, int max)
{
	const char *v = h->value;

	if (v == NULL || h->value_len != 1 || v[0] < '0' || v[0] > '0' + max)
		return -1;
	return v[0] - '0';
}

int
batch_record_to_fields(const struct pmq_record *r, struct pmq_msg_fields *f,
                       struct pmq_header *scratch, uint32_t scratch_len)
{
	/* One flag per reserved name: only the first occurrence counts. */
	enum { H_TOPIC, H_QOS, H_RETAIN, H_PF, H_CT, H_RT, H_CD, H_N };
	int seen[H_N] = { 0 };
	const struct pmq_header *h;
	uint32_t i, n_out = 0;
	int d, taken;

	if (r == NULL || f == NULL || (scratch == NULL && scratch_len > 0) ||
	    (r->n_headers > 0 && r->headers == NULL))
		return PMQ_ERR_INVAL;
	memset(f, 0, sizeof(*f));
	f->size = sizeof(*f);

	for (i = 0; i < r->n_headers; i++) {
		h = &r->headers[i];
		taken = 0;
		if (HDR_IS(h, BATCH_HDR_TOPIC) && !seen[H_TOPIC] &&
		    h->value != NULL) {
			seen[H_TOPIC] = taken = 1;
			f->topic = h->value;
			f->topic_len = h->value_len;
		} else if (HDR_IS(h, BATCH_HDR_QOS) && !seen[H_QOS] &&
		           (d = hdr_digit(h, 2)) >= 0) {
			seen[H_QOS] = taken = 1;
			f->qos = (uint8_t)d;
		} else if (HDR_IS(h, BATCH_HDR_RETAIN) && !seen[H_RETAIN] &&
		           (d = hdr_digit(h, 1)) >= 0) {
			seen[H_RETAIN] = taken = 1;
			f->retain = (uint8_t)d;
		} else if (HDR_IS(h, BATCH_HDR_PAYLOAD_FORMAT) && !seen[H_PF] &&
		           (d = hdr_digit(h, PMQ_PAYLOAD_UTF8)) >= 0) {
			seen[H_PF] = taken = 1;
			f->payload_format = (uint8_t)d;
		} else if (HDR_IS(h, BATCH_HDR_CONTENT_TYPE) && !seen[H_CT] &&
		           h->value != NULL) {
			seen[H_CT] = taken = 1;
			f->content_type = h->value;
			f->content_type_len = h->value_len;
		} else if (HDR_IS(h, BATCH_HDR_RESPONSE_TOPIC) &&
		           !seen[H_RT] && h->value != NULL) {
			seen[H_RT] = taken = 1;
			f->response_topic = h->value;
			f->response_topic_len = h->value_len;
		} else if (HDR_IS(h, BATCH_HDR_CORRELATION_DATA) &&
		           !seen[H_CD] && h->value != NULL) {
			seen[H_CD] = taken = 1;
			f->correlation_data = h->value;
			f->correlation_data_len = h->value_len;
		}
		if (taken)
			continue;
		if (n_out >= scratch_len)
			return PMQ_ERR_LIMIT;
		scratch[n_out++] = *h;
	}
	f->headers = n_out > 0 ? scratch : NULL;
	f->n_headers = n_out;

	/* batch_build put the topic in the key of keyless messages. */
	if (r->key != NULL && !(f->topic != NULL &&
	                        r->key_len == f->topic_len &&
	                        memcmp(r->key, f->topic, r->key_len) == 0)) {
		f->has_key = 1;
		f->key = r->key;
		f->key_len = r->key_len;
	}
	f->payload = r->value;
	f->payload_len = r->value_len;
	f->timestamp_ms = r->timestamp_ms;
	return PMQ_OK;
}
