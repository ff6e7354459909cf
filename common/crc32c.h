/*
 * crc32c.h - CRC32C (Castagnoli; iSCSI, ext4, TFRecord), computed by
 * ISA-L (crc32_iscsi, which uses the CPU's CRC instructions).
 */
#ifndef GRANARY_COMMON_CRC32C_H
#define GRANARY_COMMON_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* The state a running CRC32C starts from. */
#define CRC32C_INIT 0xffffffffu

/* Continues a running CRC32C over len more bytes; the CRC of what was fed
 * is the final state ^ CRC32C_INIT. */
uint32_t crc32c_update(uint32_t state, const void *data, size_t len);

/* CRC32C of len bytes ("123456789" gives 0xe3069283). */
uint32_t crc32c(const void *data, size_t len);

#endif
