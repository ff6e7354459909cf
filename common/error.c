/*
 * error.c - the project error type and its three edge mappings.
 */
#include "common/error.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void error_clear(struct error *err)
{
	if (!err)
		return;
	err->code = ERR_OK;
	err->msg[0] = '\0';
}

/*
 * A message cut at its buffer's end can end inside a character (an object
 * key in UTF-8): the partial character goes, so that the message stays
 * UTF-8, which a JSON answer (jansson refuses anything else) and a gRPC
 * status's text must be.
 */
static void cut_whole_characters(char *s, int formatted, size_t size)
{
	size_t len, lead, want;

	if (formatted < 0 || (size_t)formatted < size)
		return;
	len = strlen(s);
	lead = len;
	while (lead > 0 && ((unsigned char)s[lead - 1] & 0xc0) == 0x80)
		lead--;
	if (lead == 0 || (unsigned char)s[lead - 1] < 0xc0)
		return;
	lead--;
	want = (unsigned char)s[lead] >= 0xf0 ? 4 : (unsigned char)s[lead] >= 0xe0 ? 3 : 2;
	if (len - lead < want)
		s[lead] = '\0';
}

enum error_code error_setv(struct error *err, enum error_code code,
			   const char *fmt, va_list ap)
{
	if (!err)
		return code;
	err->code = code;
	cut_whole_characters(err->msg, vsnprintf(err->msg, sizeof(err->msg), fmt, ap),
			     sizeof(err->msg));
	return code;
}

enum error_code error_set(struct error *err, enum error_code code,
			  const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	error_setv(err, code, fmt, ap);
	va_end(ap);
	return code;
}

enum error_code error_wrap(struct error *err, const char *fmt, ...)
{
	char prefix[ERROR_MSG_MAX];
	char joined[ERROR_MSG_MAX];
	va_list ap;
	int n;

	if (!err)
		return ERR_INTERNAL;
	va_start(ap, fmt);
	n = vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	cut_whole_characters(prefix, n, sizeof(prefix));
	cut_whole_characters(joined, snprintf(joined, sizeof(joined), "%s: %s", prefix, err->msg),
			     sizeof(joined));
	memcpy(err->msg, joined, sizeof(err->msg));
	return err->code;
}

/* One row per code keeps the four mappings side by side, so a new code
 * cannot be added to one edge and forgotten at another. */
static const struct {
	const char *name;
	int errnum;
	int grpc; /* gRPC protocol status numbers */
	int http;
} codes[ERR_CODE_COUNT] = {
	[ERR_OK] = { "ok", 0, 0, 200 },
	[ERR_INVALID] = { "invalid argument", EINVAL, 3, 400 },
	[ERR_NOT_FOUND] = { "not found", ENOENT, 5, 404 },
	[ERR_EXISTS] = { "already exists", EEXIST, 6, 409 },
	[ERR_PERMISSION] = { "permission denied", EACCES, 7, 403 },
	[ERR_UNAUTHENTICATED] = { "unauthenticated", EACCES, 16, 401 },
	[ERR_RANGE] = { "out of range", EINVAL, 11, 416 },
	[ERR_UNAVAILABLE] = { "unavailable", EIO, 14, 503 },
	[ERR_BUSY] = { "busy", EAGAIN, 14, 503 },
	[ERR_TIMEOUT] = { "timed out", ETIMEDOUT, 4, 504 },
	[ERR_IO] = { "i/o error", EIO, 13, 500 },
	[ERR_NO_SPACE] = { "no space", ENOSPC, 8, 507 },
	[ERR_NOMEM] = { "out of memory", ENOMEM, 8, 503 },
	[ERR_READ_ONLY] = { "read-only", EROFS, 9, 405 },
	[ERR_PRECONDITION] = { "failed precondition", EINVAL, 9, 412 },
	[ERR_UNSUPPORTED] = { "unsupported", ENOTSUP, 12, 501 },
	[ERR_CANCELLED] = { "cancelled", ECANCELED, 1, 503 },
	[ERR_INTERNAL] = { "internal error", EIO, 13, 500 },
};

static int valid(enum error_code code)
{
	return (int)code >= 0 && code < ERR_CODE_COUNT;
}

const char *error_code_name(enum error_code code)
{
	return valid(code) ? codes[code].name : "unknown error";
}

int error_to_errno(enum error_code code)
{
	return valid(code) ? codes[code].errnum : EIO;
}

int error_to_grpc(enum error_code code)
{
	return valid(code) ? codes[code].grpc : 2 /* UNKNOWN */;
}

enum error_code error_from_grpc(int status)
{
	switch (status) {
	case 0:
		return ERR_OK;
	case 1: /* CANCELLED */
		return ERR_CANCELLED;
	case 3: /* INVALID_ARGUMENT */
		return ERR_INVALID;
	case 4: /* DEADLINE_EXCEEDED */
		return ERR_TIMEOUT;
	case 5: /* NOT_FOUND */
		return ERR_NOT_FOUND;
	case 6: /* ALREADY_EXISTS */
		return ERR_EXISTS;
	case 7: /* PERMISSION_DENIED */
		return ERR_PERMISSION;
	case 8: /* RESOURCE_EXHAUSTED */
		return ERR_NO_SPACE;
	case 9: /* FAILED_PRECONDITION */
		return ERR_PRECONDITION;
	case 10: /* ABORTED: a conflict; trying again may succeed */
		return ERR_UNAVAILABLE;
	case 11: /* OUT_OF_RANGE */
		return ERR_RANGE;
	case 12: /* UNIMPLEMENTED */
		return ERR_UNSUPPORTED;
	case 14: /* UNAVAILABLE */
		return ERR_UNAVAILABLE;
	case 15: /* DATA_LOSS */
		return ERR_IO;
	case 16: /* UNAUTHENTICATED */
		return ERR_UNAUTHENTICATED;
	default: /* 2 UNKNOWN, 13 INTERNAL, numbers we do not know */
		return ERR_INTERNAL;
	}
}

int error_to_http(enum error_code code)
{
	return valid(code) ? codes[code].http : 500;
}

enum error_code error_from_errno(int errnum)
{
	switch (errnum) {
	case 0:
		return ERR_OK;
	case ENOENT:
	case ENOTDIR:
		return ERR_NOT_FOUND;
	case EEXIST:
		return ERR_EXISTS;
	case EACCES:
	case EPERM:
		return ERR_PERMISSION;
	case EINVAL:
	case ENAMETOOLONG:
	case EISDIR:
		return ERR_INVALID;
	case ENOSPC:
	case EDQUOT:
		return ERR_NO_SPACE;
	case ENOMEM:
		return ERR_NOMEM;
	case EROFS:
		return ERR_READ_ONLY;
	case ETIMEDOUT:
		return ERR_TIMEOUT;
	case ECONNREFUSED:
	case ECONNRESET:
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EAGAIN:
		return ERR_UNAVAILABLE;
	case ENOTSUP:
		return ERR_UNSUPPORTED;
	case ECANCELED:
	case EINTR:
		return ERR_CANCELLED;
	default:
		return ERR_IO;
	}
}
