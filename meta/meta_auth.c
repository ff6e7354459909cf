/*
 * meta_auth.c - granary-meta's call signatures and roles (meta/meta_auth.h).
 */
#include "meta/meta_auth.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "meta/methods.h"

#define DOMAIN "granary-meta"

static const char *const role_names[META_ROLES] = {
	[META_ROLE_CSI] = "csi",
	[META_ROLE_WORKER] = "worker",
	[META_ROLE_MOUNT] = "mount",
};

/* Bit per role. */
#define CSI (1u << META_ROLE_CSI)
#define WORKER (1u << META_ROLE_WORKER)
#define MOUNT (1u << META_ROLE_MOUNT)

static const struct {
	const char *method;
	unsigned roles;
	const char *who; /* for the refusal */
} grants[] = {
	{ META_METHOD_REGISTER, CSI, "csi" },
	{ META_METHOD_DELETE, CSI, "csi" },
	{ META_METHOD_REFRESH, CSI, "csi" },
	{ META_METHOD_HEARTBEAT, WORKER, "worker" },
	{ META_METHOD_LIST, CSI | WORKER, "csi and worker" },
	{ META_METHOD_GET, CSI | WORKER | MOUNT, "csi, worker and mount" },
	{ META_METHOD_SNAPSHOT, CSI | WORKER | MOUNT, "csi, worker and mount" },
	{ META_METHOD_WORKERS, CSI | WORKER | MOUNT, "csi, worker and mount" },
};

const char *meta_role_name(enum meta_role role)
{
	return role >= 0 && role < META_ROLES ? role_names[role] : "?";
}

/* The grant of method, or -1 for a method no role may call. */
static int grant_of(const char *method)
{
	for (size_t i = 0; i < sizeof(grants) / sizeof(grants[0]); i++)
		if (strcmp(grants[i].method, method) == 0)
			return (int)i;
	return -1;
}

bool meta_role_allows(enum meta_role role, const char *method)
{
	int g = grant_of(method);

	return g >= 0 && role >= 0 && role < META_ROLES && (grants[g].roles & (1u << role));
}

/* "/granary.v1.Meta/Heartbeat" -> "Heartbeat" */
static const char *short_method(const char *method)
{
	const char *slash = strrchr(method, '/');

	return slash ? slash + 1 : method;
}

static enum error_code compute(const struct token *key, const char *role, const char *method,
			       const void *body, size_t len, int64_t ts,
			       unsigned char sig[TOKEN_SIG_LEN])
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	char tsbuf[24], bodyhex[2 * 32 + 1];
	const char *lines[5] = { DOMAIN, role, method, tsbuf, bodyhex };

	if (!EVP_Digest(len ? body : "", len, digest, &dlen, EVP_sha256(), NULL) || dlen != 32)
		return ERR_INTERNAL;
	token_hex(digest, dlen, bodyhex);
	snprintf(tsbuf, sizeof(tsbuf), "%" PRId64, ts);
	return token_mac(key, lines, 5, sig);
}

enum error_code meta_auth_sign(const struct token *key, enum meta_role role,
			       const char *method, const void *body, size_t len, int64_t ts,
			       char *out, size_t size)
{
	unsigned char sig[TOKEN_SIG_LEN];
	char sighex[TOKEN_SIG_HEX + 1];
	int n;

	if (role < 0 || role >= META_ROLES)
		return ERR_INVALID;
	if (compute(key, role_names[role], method, body, len, ts, sig) != ERR_OK)
		return ERR_INTERNAL;
	token_hex(sig, TOKEN_SIG_LEN, sighex);
	n = snprintf(out, size, TOKEN_SCHEME " role=%s,ts=%" PRId64 ",sig=%s", role_names[role],
		     ts, sighex);
	return n >= 0 && (size_t)n < size ? ERR_OK : ERR_INVALID;
}

/* Whether a and b sign alike. HMAC pads a short key with zeros and hashes
 * a long one, so keys that differ only so are the same key: comparing
 * their MACs of one message catches them too, in constant time. */
static bool same_key(const struct token *a, const struct token *b)
{
	static const char *const probe[] = { DOMAIN, "key comparison" };
	unsigned char x[TOKEN_SIG_LEN], y[TOKEN_SIG_LEN];

	if (token_mac(a, probe, 2, x) != ERR_OK || token_mac(b, probe, 2, y) != ERR_OK)
		return false;
	return CRYPTO_memcmp(x, y, sizeof(x)) == 0;
}

enum error_code meta_auth_load(struct meta_auth *a, const char *const files[META_ROLES],
			       bool insecure, struct error *err)
{
	static const char *const keys[META_ROLES] = {
		[META_ROLE_CSI] = "auth.csi_key_file",
		[META_ROLE_WORKER] = "auth.worker_key_file",
		[META_ROLE_MOUNT] = "auth.mount_key_file",
	};
	int nfiles = 0;

	memset(a, 0, sizeof(*a));
	for (int r = 0; r < META_ROLES; r++)
		if (files[r] && *files[r])
			nfiles++;
	if (nfiles == 0 && !insecure)
		return error_set(err, ERR_INVALID,
				 "no key file: set auth.csi_key_file, auth.worker_key_file and auth.mount_key_file, or auth.insecure=true to serve unsigned calls (local tests only)");
	if (nfiles > 0 && insecure)
		return error_set(err, ERR_INVALID,
				 "key 'auth.insecure': true refuses to go with key files (unset them or set auth.insecure=false)");
	a->insecure = insecure;
	for (int r = 0; r < META_ROLES; r++) {
		if (!files[r] || !*files[r])
			continue;
		if (token_load_file(files[r], &a->keys[r], err) != ERR_OK) {
			meta_auth_release(a);
			return error_wrap(err, "key '%s'", keys[r]);
		}
	}
	/* One role's holders could sign as the other: a mount pod, holding
	 * the cluster token (the mount role's key), as csi. */
	for (int r = 0; r < META_ROLES; r++) {
		for (int o = r + 1; o < META_ROLES; o++) {
			if (!a->keys[r] || !a->keys[o] || !same_key(a->keys[r], a->keys[o]))
				continue;
			meta_auth_release(a);
			return error_set(err, ERR_INVALID,
					 "keys '%s' and '%s' hold the same secret: each role needs a key of its own (the mount role's is the cluster token), or the holders of one could sign as the other",
					 keys[r], keys[o]);
		}
	}
	return ERR_OK;
}

void meta_auth_release(struct meta_auth *a)
{
	for (int r = 0; r < META_ROLES; r++) {
		token_free(a->keys[r]);
		a->keys[r] = NULL;
	}
}

/* "Granary-HMAC role=<name>,ts=...,sig=..." -> role and the rest; -1 for
 * anything else (an unknown role included). */
static int parse_header(const char *h, enum meta_role *role, int64_t *ts,
			unsigned char sig[TOKEN_SIG_LEN])
{
	h = token_skip_scheme(h);
	if (!h || strncmp(h, "role=", 5) != 0)
		return -1;
	h += 5;
	for (int r = 0; r < META_ROLES; r++) {
		size_t n = strlen(role_names[r]);

		if (strncmp(h, role_names[r], n) == 0 && h[n] == ',') {
			*role = (enum meta_role)r;
			return token_parse_ts_sig(h + n + 1, ts, sig);
		}
	}
	return -1;
}

enum error_code meta_auth_check_at(const struct meta_auth *a, const char *method,
				   const char *header, const void *body, size_t len, int64_t now,
				   struct error *err)
{
	unsigned char want[TOKEN_SIG_LEN], got[TOKEN_SIG_LEN];
	enum meta_role role = META_ROLE_CSI;
	char what[128];
	int64_t ts = 0;
	int g;

	if (a->insecure)
		return ERR_OK;
	if (!header || !*header)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "%s: unsigned call: granary-meta needs gRPC metadata '" META_AUTH_METADATA
				 ": " TOKEN_SCHEME " role=<csi|worker|mount>,ts=<unix seconds>,sig=<64 hex digits>'",
				 short_method(method));
	if (parse_header(header, &role, &ts, got) < 0)
		return error_set(err, ERR_UNAUTHENTICATED,
				 "%s: malformed '" META_AUTH_METADATA "' metadata: expected '" TOKEN_SCHEME
				 " role=<csi|worker|mount>,ts=<unix seconds>,sig=<64 hex digits>'",
				 short_method(method));
	if (!a->keys[role])
		return error_set(err, ERR_PERMISSION,
				 "%s: granary-meta holds no key for role '%s' (auth.%s_key_file is not set)",
				 short_method(method), role_names[role], role_names[role]);
	if (compute(a->keys[role], role_names[role], method, body, len, ts, want) != ERR_OK)
		return error_set(err, ERR_INTERNAL, "%s: HMAC-SHA256 failed", short_method(method));
	snprintf(what, sizeof(what), "%s: the signature of role '%s'", short_method(method),
		 role_names[role]);
	if (token_check(want, got, ts, now, META_AUTH_WINDOW_S, what, "granary-meta's", err) !=
	    ERR_OK)
		return ERR_PERMISSION;
	g = grant_of(method);
	if (g < 0 || !(grants[g].roles & (1u << role)))
		return error_set(err, ERR_PERMISSION, "%s: role '%s' may not call it (%s only)",
				 short_method(method), role_names[role],
				 g < 0 ? "no role" : grants[g].who);
	return ERR_OK;
}

enum error_code meta_auth_check(const char *method, const char *header, const void *body,
				size_t len, void *arg, struct error *err)
{
	return meta_auth_check_at(arg, method, header, body, len, (int64_t)time(NULL), err);
}
