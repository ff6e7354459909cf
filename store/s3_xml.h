/*
 * s3_xml.h - parsers for the S3 XML bodies we read, built on libexpat.
 *
 * Only the elements we use are kept; unknown elements are skipped, so newer
 * services that add fields still parse. Malformed XML is ERR_INVALID with
 * expat's line and message. Pure functions: thread-safe, no I/O.
 */
#ifndef GRANARY_STORE_S3_XML_H
#define GRANARY_STORE_S3_XML_H

#include <stddef.h>

#include "common/error.h"
#include "store/store.h"

/*
 * Parses a ListObjectsV2 answer (<ListBucketResult>) into page: Contents
 * (Key, Size, ETag without quotes, LastModified as epoch seconds),
 * CommonPrefixes/Prefix, and NextContinuationToken when IsTruncated is
 * true. With <EncodingType>url</EncodingType> keys and prefixes are
 * percent-decoded. page is zeroed first; on error nothing is left
 * allocated in it.
 */
enum error_code s3_xml_parse_list(const char *body, size_t len,
				  struct store_list_page *page, struct error *err);

/*
 * Parses an S3 <Error> body: copies Code and Message (truncated, always
 * NUL-terminated; "" when absent). Returns ERR_OK when the body was an
 * <Error> document, ERR_INVALID otherwise.
 */
enum error_code s3_xml_parse_error(const char *body, size_t len, char *code,
				   size_t code_size, char *message,
				   size_t message_size);

/* "2026-11-25T12:00:00.000Z" -> epoch seconds; -1 if malformed. */
long long s3_xml_parse_time(const char *iso8601);

#endif
