/*
 * tfrecord.h - TFRecord framing, as TensorFlow writes and tf.data reads it:
 *
 *   uint64 length (little-endian)
 *   uint32 masked CRC32C of the 8 length bytes
 *   byte   data[length]
 *   uint32 masked CRC32C of data
 *
 * where masked(c) = ((c >> 15) | (c << 17)) + 0xa282ead8. CRC32C comes from
 * ISA-L (crc32_iscsi), a maintained, hardware-accelerated implementation.
 *
 * The parser is incremental: feed it bytes as read(2) returns them, in any
 * chunking, and it checks every length and data CRC.
 */
#ifndef GRANARY_BENCH_TFRECORD_H
#define GRANARY_BENCH_TFRECORD_H

#include <stddef.h>
#include <stdint.h>

#include "common/error.h"

#define TFRECORD_MAX_RECORD (256u << 20)

/* Standard CRC32C (Castagnoli) of data. */
uint32_t tfrecord_crc32c(const void *data, size_t len);
uint32_t tfrecord_mask(uint32_t crc);

/* Writes the 12-byte header for a record of len bytes whose data CRC is
 * appended later with tfrecord_footer. */
void tfrecord_header(uint64_t len, uint8_t out[12]);
void tfrecord_footer(const void *data, size_t len, uint8_t out[4]);

struct tfrecord_parser {
	uint64_t records;      /* complete records checked */
	uint64_t bytes;        /* bytes consumed */
	/* private */
	int state;
	uint8_t hdr[12];
	size_t have;
	uint64_t len, left;
	uint32_t crc;          /* running CRC32C of the current record's data */
	uint8_t foot[4];
};

void tfrecord_parser_init(struct tfrecord_parser *p);

/*
 * Consumes len bytes. Returns ERR_OK, or ERR_IO with the record number and
 * what failed (length CRC, data CRC, length over TFRECORD_MAX_RECORD).
 */
enum error_code tfrecord_parser_feed(struct tfrecord_parser *p, const void *data,
				     size_t len, struct error *err);

/* ERR_OK if the input ended on a record boundary, else ERR_IO (truncated). */
enum error_code tfrecord_parser_finish(const struct tfrecord_parser *p,
				       struct error *err);

#endif
