/*
 * fuzz_token.c - the Authorization header granary-worker checks on every
 * /v1 request (token_verify_at), and the property that a header made by
 * token_sign for a request verifies for that request and no other.
 *
 * Input: METHOD "\n" PATH "\n" QUERY "\n" TIMESTAMP "\n" HEADER, the last
 * field taking the rest.
 */
#include <stdlib.h>
#include <string.h>

#include "block/token.h"
#include "common/log.h"
#include "fuzz/fuzz.h"

#define NOW 1700000000

static struct token *tok; /* one secret for every input */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char secret[] = "fuzz-secret-of-thirty-two-bytes!";
	struct error err;

	log_set_level(LOG_LEVEL_ERROR);
	if (token_new(secret, sizeof(secret) - 1, &tok, &err) != ERR_OK)
		abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *f[5];
	char *copy = fuzz_split(data, size, f, 5);
	char header[TOKEN_HEADER_MAX];
	struct error err;
	int64_t ts;

	if (!copy)
		return 0;
	(void)token_verify_at(tok, f[0], f[1], f[2], f[4], NOW, &err);

	ts = NOW + (int64_t)(strtoll(f[3], NULL, 10) % TOKEN_WINDOW_S);
	if (token_sign(tok, f[0], f[1], f[2], ts, header, sizeof(header)) != ERR_OK)
		abort();
	if (token_verify_at(tok, f[0], f[1], f[2], header, NOW, &err) != ERR_OK)
		abort();
	if (strcmp(f[1], f[4]) != 0 &&
	    token_verify_at(tok, f[0], f[4], f[2], header, NOW, &err) != ERR_PERMISSION)
		abort();
	free(copy);
	return 0;
}
