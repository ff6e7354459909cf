/*
 * fuzz_s3_error.c - an S3 <Error> body (s3_xml_parse_error), with the
 * small buffers that cut Code and Message, and the ISO 8601 times of
 * LastModified (s3_xml_parse_time).
 */
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "fuzz/fuzz.h"
#include "store/s3_xml.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	log_set_level(LOG_LEVEL_ERROR);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char code[8], message[64], big_code[256], big_message[1024];
	char *text;

	/* Canaries past the sizes given: a write there is a bug. */
	memset(code, 'x', sizeof(code));
	memset(message, 'x', sizeof(message));
	s3_xml_parse_error((const char *)data, size, code, 4, message, 32);
	if (!memchr(code, '\0', 4) || !memchr(message, '\0', 32) || code[4] != 'x' ||
	    message[32] != 'x')
		abort();
	s3_xml_parse_error((const char *)data, size, big_code, sizeof(big_code), big_message,
			   sizeof(big_message));
	if (!memchr(big_code, '\0', sizeof(big_code)) ||
	    !memchr(big_message, '\0', sizeof(big_message)))
		abort();

	text = fuzz_strndup(data, size < 64 ? size : 64);
	if (text) {
		(void)s3_xml_parse_time(text);
		free(text);
	}
	return 0;
}
