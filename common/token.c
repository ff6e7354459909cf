/*
 * token.c - secrets in files and the HMAC-SHA256 signatures both request
 * schemes share (common/token.h).
 */
#include "common/token.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"
#include "common/hmac.h"

struct token {
	size_t len;
	unsigned char secret[];
};

enum error_code token_new(const void *secret, size_t len, struct token **out,
			  struct error *err)
{
	struct token *tok;

	*out = NULL;
	if (len < TOKEN_SECRET_MIN)
		return error_set(err, ERR_INVALID,
				 "token secret is %zu bytes: it must have at least %d", len,
				 TOKEN_SECRET_MIN);
	if (len > TOKEN_SECRET_MAX)
		return error_set(err, ERR_INVALID,
				 "token secret is %zu bytes: it may have at most %d", len,
				 TOKEN_SECRET_MAX);
	if (!hmac_sha256_ready())
		return error_set(err, ERR_INTERNAL, "token: OpenSSL has no HMAC");
	tok = malloc(sizeof(*tok) + len);
	if (!tok)
		return error_set(err, ERR_NOMEM, "token: out of memory");
	tok->len = len;
	memcpy(tok->secret, secret, len);
	*out = tok;
	return ERR_OK;
}

void token_free(struct token *tok)
{
	if (!tok)
		return;
	OPENSSL_cleanse(tok->secret, tok->len);
	free(tok);
}

enum error_code token_load_file(const char *path, struct token **out, struct error *err)
{
	unsigned char buf[TOKEN_SECRET_MAX + 3];
	struct stat sb;
	enum error_code rc;
	size_t len = 0;
	ssize_t n;
	int fd = -1;

	*out = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int saved = errno;

		return error_set(err, error_from_errno(saved), "token file '%s': %s", path,
				 strerror(saved));
	}
	if (fstat(fd, &sb) < 0) {
		int saved = errno;

		rc = error_set(err, error_from_errno(saved), "token file '%s': %s", path,
			       strerror(saved));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = error_set(err, ERR_INVALID, "token file '%s': not a regular file", path);
		goto out;
	}
	if (sb.st_mode & (S_IRWXG | S_IRWXO)) {
		rc = error_set(err, ERR_PERMISSION,
			       "token file '%s' is readable or writable by group or others (mode %04o): chmod 600 it",
			       path, (unsigned)(sb.st_mode & 07777));
		goto out;
	}
	/* Read one byte more than the largest secret plus "\r\n" would need,
	 * so an oversized file is seen as such rather than cut. */
	n = fileio_pread_all(fd, buf, sizeof(buf), 0);
	if (n < 0) {
		int saved = errno;

		rc = error_set(err, error_from_errno(saved), "token file '%s': %s", path,
			       strerror(saved));
		goto out;
	}
	len = (size_t)n;
	if (len == sizeof(buf)) {
		rc = error_set(err, ERR_INVALID,
			       "token file '%s': longer than a secret of at most %d bytes and a line end",
			       path, TOKEN_SECRET_MAX);
		goto out;
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	rc = token_new(buf, len, out, err);
	if (rc != ERR_OK)
		error_wrap(err, "token file '%s'", path);
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	close(fd);
	return rc;
}

enum error_code token_mac(const struct token *tok, const char *const *lines, size_t n,
			  unsigned char sig[TOKEN_SIG_LEN])
{
	EVP_MAC_CTX *ctx = hmac_sha256_begin(tok->secret, tok->len);

	if (!ctx)
		return ERR_INTERNAL;
	for (size_t i = 0; i < n; i++) {
		if (i > 0 && !EVP_MAC_update(ctx, (const unsigned char *)"\n", 1))
			return ERR_INTERNAL;
		if (!EVP_MAC_update(ctx, (const unsigned char *)lines[i], strlen(lines[i])))
			return ERR_INTERNAL;
	}
	return hmac_sha256_end(ctx, sig) ? ERR_OK : ERR_INTERNAL;
}

void token_hex(const unsigned char *bytes, size_t len, char *out)
{
	static const char hex[] = "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = hex[bytes[i] >> 4];
		out[2 * i + 1] = hex[bytes[i] & 15];
	}
	out[2 * len] = '\0';
}

const char *token_skip_scheme(const char *h)
{
	const size_t scheme_len = strlen(TOKEN_SCHEME);

	if (strncmp(h, TOKEN_SCHEME, scheme_len) != 0 || h[scheme_len] != ' ')
		return NULL;
	h += scheme_len;
	while (*h == ' ')
		h++;
	return h;
}

int token_parse_ts_sig(const char *s, int64_t *ts, unsigned char sig[TOKEN_SIG_LEN])
{
	int64_t v = 0;
	int digits = 0;

	if (strncmp(s, "ts=", 3) != 0)
		return -1;
	s += 3;
	for (; *s >= '0' && *s <= '9'; s++, digits++) {
		if (v > (INT64_MAX - 9) / 10)
			return -1;
		v = v * 10 + (*s - '0');
	}
	if (digits == 0 || strncmp(s, ",sig=", 5) != 0)
		return -1;
	s += 5;
	for (int i = 0; i < TOKEN_SIG_LEN; i++) {
		int hi = fileio_hex_value(s[2 * i]), lo;

		if (hi < 0)
			return -1;
		lo = fileio_hex_value(s[2 * i + 1]);
		if (lo < 0)
			return -1;
		sig[i] = (unsigned char)(hi << 4 | lo);
	}
	if (s[2 * TOKEN_SIG_LEN] != '\0')
		return -1;
	*ts = v;
	return 0;
}

enum error_code token_check(const unsigned char want[TOKEN_SIG_LEN],
			    const unsigned char got[TOKEN_SIG_LEN], int64_t ts, int64_t now,
			    int64_t window_s, const char *what, const char *clock,
			    struct error *err)
{
	if (CRYPTO_memcmp(want, got, TOKEN_SIG_LEN) != 0)
		return error_set(err, ERR_PERMISSION, "%s does not match", what);
	if (ts < now - window_s || ts > now + window_s)
		return error_set(err, ERR_PERMISSION,
				 "%s is from %" PRId64 ", %" PRId64
				 " s away from %s clock (at most %" PRId64 " allowed)",
				 what, ts, ts > now ? ts - now : now - ts, clock, window_s);
	return ERR_OK;
}
