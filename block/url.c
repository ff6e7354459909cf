/*
 * url.c - the worker's block URL and the checksum header of its answer.
 */
#include "block/url.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 3986 unreserved characters pass; every other byte is %XX. */
static size_t escape(const char *s, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (isalnum(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
			if (out)
				out[o] = (char)*p;
			o++;
			continue;
		}
		if (out) {
			out[o] = '%';
			out[o + 1] = hex[*p >> 4];
			out[o + 2] = hex[*p & 0xf];
		}
		o += 3;
	}
	return o;
}

enum error_code block_url_origin(const char *addr, bool tls, const char *server_name,
				 char *origin, size_t origin_size, char *connect_to,
				 size_t connect_size, struct error *err)
{
	const char *scheme = tls ? "https" : "http";
	const char *colon;
	int n;

	connect_to[0] = '\0';
	if (server_name && !*server_name)
		server_name = NULL;
	if (strncmp(addr, "unix://", 7) == 0) {
		n = snprintf(origin, origin_size, "%s://%s", scheme,
			     tls && server_name ? server_name : "localhost");
		if (n < 0 || (size_t)n >= origin_size)
			return error_set(err, ERR_INVALID, "worker address '%.200s': too long", addr);
		return ERR_OK;
	}
	colon = strrchr(addr, ':');
	if (!colon || colon == addr || !colon[1] || strlen(colon + 1) > 5)
		return error_set(err, ERR_INVALID, "worker address '%.200s': not host:port", addr);
	if (!tls || !server_name) {
		n = snprintf(origin, origin_size, "%s://%s", scheme, addr);
	} else {
		n = snprintf(origin, origin_size, "https://%s%s", server_name, colon);
		if (n >= 0 && (size_t)n < origin_size) {
			/* NAME:PORT:HOST:PORT; an IPv6 host keeps its brackets. */
			n = snprintf(connect_to, connect_size, "%s%s:%s", server_name, colon, addr);
			if (n >= 0 && (size_t)n >= connect_size)
				n = (int)origin_size; /* too long, reported below */
		}
	}
	if (n < 0 || (size_t)n >= origin_size)
		return error_set(err, ERR_INVALID, "worker address '%.200s': too long", addr);
	return ERR_OK;
}

int block_url_path(const char *dataset, uint64_t index, char *out, size_t size)
{
	return snprintf(out, size, BLOCK_URL_PREFIX "%s/%llu", dataset, (unsigned long long)index);
}

size_t block_url_query_into(char *out, size_t size, const char *key, const char *etag,
			    uint64_t object_size, uint64_t block_size, unsigned readahead,
			    bool verify, const char *cache_id)
{
	size_t klen = escape(key, NULL), elen = escape(etag, NULL);
	size_t clen = cache_id ? escape(cache_id, NULL) : 0;
	/* the names, '=' and '&' of the other parameters, four numbers, NUL */
	size_t need = klen + elen + clen + 130;
	char *p = out;

	if (size < need) {
		if (size > 0)
			out[0] = '\0';
		return need;
	}
	memcpy(p, "key=", 4);
	p += 4;
	p += escape(key, p);
	memcpy(p, "&etag=", 6);
	p += 6;
	p += escape(etag, p);
	if (object_size)
		p += snprintf(p, size - (size_t)(p - out), "&size=%llu",
			      (unsigned long long)object_size);
	if (block_size)
		p += snprintf(p, size - (size_t)(p - out), "&bs=%llu",
			      (unsigned long long)block_size);
	p += snprintf(p, size - (size_t)(p - out), "&readahead=%u%s", readahead,
		      verify ? "&verify=1" : "");
	if (clen) {
		memcpy(p, "&cache=", 7);
		p += 7;
		p += escape(cache_id, p);
		*p = '\0';
	}
	return (size_t)(p - out);
}

char *block_url_query(const char *key, const char *etag, unsigned readahead, bool verify)
{
	size_t size = block_url_query_into(NULL, 0, key, etag, 0, 0, readahead, verify, NULL);
	char *out = malloc(size);

	if (out)
		block_url_query_into(out, size, key, etag, 0, 0, readahead, verify, NULL);
	return out;
}

/* --- the checksum header --- */

void block_crc_header_format(const struct block_sums *s, uint64_t off, uint64_t len,
			    char *out)
{
	uint64_t first = off / s->chunk_size, last = (off + len - 1) / s->chunk_size;
	int n = snprintf(out, BLOCK_CRC_HEADER_MAX, "%u:", s->chunk_size);

	for (uint64_t i = first; i <= last; i++)
		n += snprintf(out + n, BLOCK_CRC_HEADER_MAX - (size_t)n, "%s%08x",
			      i == first ? "" : ",", s->crc[i]);
}

enum error_code block_crc_header_parse(const char *value, uint32_t chunk_size, uint64_t off,
				      uint64_t len, uint64_t data_len,
				      struct block_sums *out, struct error *err)
{
	uint64_t first, last, cs = 0;
	const char *p = value;
	char *end = NULL;

	if (!value)
		return error_set(err, ERR_INVALID, "no checksum header " BLOCK_CRC_HEADER);
	if (len == 0 || off + len > data_len || chunk_size == 0 ||
	    data_len > (uint64_t)chunk_size * BLOCK_CHUNKS_MAX)
		return error_set(err, ERR_INVALID, "checksum header '%.64s': bad range for it",
				 value);
	errno = 0;
	cs = strtoull(p, &end, 10);
	if (end == p || *end != ':' || errno != 0 || cs != chunk_size)
		return error_set(err, ERR_INVALID,
				 "checksum header '%.64s': expected chunk size %u first", value,
				 chunk_size);
	p = end + 1;
	first = off / chunk_size;
	last = (off + len - 1) / chunk_size;
	for (uint64_t i = first; i <= last; i++) {
		uint32_t v = 0;
		int k;

		for (k = 0; k < 8 && isxdigit((unsigned char)p[k]); k++)
			v = v << 4 | (uint32_t)(isdigit((unsigned char)p[k]) ? p[k] - '0'
							: (tolower((unsigned char)p[k]) - 'a' + 10));
		if (k != 8 || (p[8] != (i == last ? '\0' : ',')))
			return error_set(err, ERR_INVALID,
					 "checksum header '%.64s': expected %llu checksums of 8 hex digits",
					 value, (unsigned long long)(last - first + 1));
		out->crc[i] = v;
		p += 9;
	}
	out->data_len = data_len;
	out->chunk_size = chunk_size;
	return ERR_OK;
}

