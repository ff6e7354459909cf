/*
 * tfrecord.c - TFRecord framing and an incremental, checking parser.
 */
#include "bench/tfrecord.h"

#include <string.h>

#include "common/bytes.h"
#include "common/crc32c.h"

enum { ST_HEADER, ST_DATA, ST_FOOTER };

uint32_t tfrecord_crc32c(const void *data, size_t len)
{
	return crc32c(data, len);
}

uint32_t tfrecord_mask(uint32_t crc)
{
	return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

void tfrecord_header(uint64_t len, uint8_t out[12])
{
	bytes_put_le64(out, len);
	bytes_put_le32(out + 8, tfrecord_mask(tfrecord_crc32c(out, 8)));
}

void tfrecord_footer(const void *data, size_t len, uint8_t out[4])
{
	bytes_put_le32(out, tfrecord_mask(tfrecord_crc32c(data, len)));
}

void tfrecord_parser_init(struct tfrecord_parser *p)
{
	memset(p, 0, sizeof(*p));
	p->state = ST_HEADER;
}

enum error_code tfrecord_parser_feed(struct tfrecord_parser *p, const void *data,
				     size_t len, struct error *err)
{
	const uint8_t *in = data;

	while (len > 0) {
		size_t n;

		switch (p->state) {
		case ST_HEADER:
			n = 12 - p->have < len ? 12 - p->have : len;
			memcpy(p->hdr + p->have, in, n);
			p->have += n;
			if (p->have < 12)
				break;
			p->len = bytes_get_le64(p->hdr);
			if (tfrecord_mask(tfrecord_crc32c(p->hdr, 8)) != bytes_get_le32(p->hdr + 8))
				return error_set(err, ERR_IO, "record %llu at byte %llu: length CRC mismatch",
						 (unsigned long long)p->records,
						 (unsigned long long)p->bytes);
			if (p->len > TFRECORD_MAX_RECORD)
				return error_set(err, ERR_IO, "record %llu: length %llu is implausible",
						 (unsigned long long)p->records,
						 (unsigned long long)p->len);
			p->left = p->len;
			p->crc = 0xffffffffu;
			p->have = 0;
			p->state = ST_DATA;
			break;
		case ST_DATA:
			n = p->left < len ? (size_t)p->left : len;
			p->crc = crc32c_update(p->crc, in, n);
			p->left -= n;
			if (p->left == 0)
				p->state = ST_FOOTER;
			break;
		default:
			n = 4 - p->have < len ? 4 - p->have : len;
			memcpy(p->foot + p->have, in, n);
			p->have += n;
			if (p->have < 4)
				break;
			if (tfrecord_mask(p->crc ^ 0xffffffffu) != bytes_get_le32(p->foot))
				return error_set(err, ERR_IO, "record %llu: data CRC mismatch",
						 (unsigned long long)p->records);
			p->records++;
			p->have = 0;
			p->state = ST_HEADER;
			break;
		}
		in += n;
		len -= n;
		p->bytes += n;
	}
	return ERR_OK;
}

enum error_code tfrecord_parser_finish(const struct tfrecord_parser *p,
				       struct error *err)
{
	if (p->state != ST_HEADER || p->have != 0)
		return error_set(err, ERR_IO, "truncated after %llu records (%llu bytes)",
				 (unsigned long long)p->records, (unsigned long long)p->bytes);
	return ERR_OK;
}
