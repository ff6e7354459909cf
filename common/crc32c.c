/*
 * crc32c.c - CRC32C over ISA-L.
 */
#include "common/crc32c.h"

#include <isa-l/crc.h>

uint32_t crc32c_update(uint32_t state, const void *data, size_t len)
{
	const unsigned char *p = data;

	/* crc32_iscsi takes an int length: feed large buffers in pieces. */
	while (len > 0) {
		int n = len > (1u << 30) ? (1 << 30) : (int)len;

		state = crc32_iscsi((unsigned char *)p, n, state);
		p += n;
		len -= (size_t)n;
	}
	return state;
}

uint32_t crc32c(const void *data, size_t len)
{
	return crc32c_update(CRC32C_INIT, data, len) ^ CRC32C_INIT;
}
