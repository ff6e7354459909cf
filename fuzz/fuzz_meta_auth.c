/*
 * fuzz_meta_auth.c - the 'authorization' metadata granary-meta checks on
 * every call before the request is unpacked (meta_auth_check_at), and the
 * property that a value made by meta_auth_sign for a call verifies for
 * that call and for no other method, body or role.
 *
 * Input: METHOD "\n" TIMESTAMP "\n" HEADER "\n" BODY, the body taking the
 * rest (bytes).
 */
#include <stdlib.h>
#include <string.h>

#include "block/token.h"
#include "common/log.h"
#include "fuzz/fuzz.h"
#include "meta/meta_auth.h"

#define NOW 1700000000

static struct meta_auth auth; /* one key per role for every input */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const char *const secrets[META_ROLES] = {
		"fuzz-csi-key-of-thirty-two-bytes",
		"fuzz-worker-key-of-thirty-two-b!",
		"fuzz-mount-key-of-thirty-two-by!",
	};
	struct error err;

	(void)argc;
	(void)argv;
	log_set_level(LOG_LEVEL_ERROR);
	for (int r = 0; r < META_ROLES; r++)
		if (token_new(secrets[r], strlen(secrets[r]), &auth.keys[r], &err) != ERR_OK)
			abort();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *f[4];
	char *copy = fuzz_split(data, size, f, 4);
	char header[META_AUTH_HEADER_MAX];
	const char *body;
	size_t blen;
	struct error err;
	enum meta_role role;
	int64_t ts;

	if (!copy)
		return 0;
	/* The body as bytes, NULs included: where its field starts, to the end. */
	body = (const char *)data + (f[3] - copy);
	blen = size - (size_t)(f[3] - copy);
	if (meta_auth_check_at(&auth, f[0], f[2], body, blen, NOW, &err) != ERR_OK)
		fuzz_use(strlen(err.msg));

	role = (enum meta_role)((unsigned char)f[1][0] % META_ROLES);
	ts = NOW + (int64_t)(strtoll(f[1], NULL, 10) % 300);
	if (meta_auth_sign(auth.keys[role], role, f[0], body, blen, ts, header, sizeof(header)) ==
	    ERR_OK) {
		enum error_code rc = meta_auth_check_at(&auth, f[0], header, body, blen, NOW, &err);

		/* Signed right: only a role that may not call the method is refused. */
		if (rc != ERR_OK && !(rc == ERR_PERMISSION && !meta_role_allows(role, f[0])))
			abort();
		/* Another body is another request. */
		if (rc == ERR_OK &&
		    meta_auth_check_at(&auth, f[0], header, "x", blen == 1 && body[0] == 'x' ? 0 : 1,
				       NOW, &err) == ERR_OK)
			abort();
		/* Another method is another call. */
		if (rc == ERR_OK && strcmp(f[0], f[2]) != 0 &&
		    meta_auth_check_at(&auth, f[2], header, body, blen, NOW, &err) == ERR_OK)
			abort();
	}
	free(copy);
	return 0;
}
