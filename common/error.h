/*
 * error.h - the one error type of the project.
 *
 * Core code returns an enum error_code and, where the caller passes one, fills
 * a struct error with a message that says what failed and on what. Each edge
 * maps the code exactly once: error_to_errno() for FUSE replies,
 * error_to_grpc() for gRPC/CSI statuses, error_to_http() for HTTP answers.
 *
 * A struct error is caller-owned storage, no heap; it is not thread-safe by
 * itself (one per call chain). Messages never carry credentials.
 */
#ifndef GRANARY_COMMON_ERROR_H
#define GRANARY_COMMON_ERROR_H

#include <stdarg.h>
#include <stddef.h>

enum error_code {
	ERR_OK = 0,
	ERR_INVALID,        /* bad input from a caller or a file */
	ERR_NOT_FOUND,      /* the named thing does not exist */
	ERR_EXISTS,         /* already exists with a different definition */
	ERR_PERMISSION,     /* credentials refused / not allowed */
	ERR_UNAUTHENTICATED, /* no or malformed credentials or token */
	ERR_RANGE,          /* offset or range outside the object */
	ERR_UNAVAILABLE,    /* peer or store unreachable; retrying may help */
	ERR_BUSY,           /* the server refused for load (a cap on concurrent calls); retry later */
	ERR_TIMEOUT,        /* deadline passed */
	ERR_IO,             /* local I/O failed or data is corrupt */
	ERR_NO_SPACE,       /* capacity exhausted */
	ERR_NOMEM,          /* allocation failed */
	ERR_READ_ONLY,      /* write attempted on read-only data */
	ERR_PRECONDITION,   /* a call made before the one it needs (CSI: publish before stage) */
	ERR_UNSUPPORTED,    /* valid request we do not implement */
	ERR_CANCELLED,      /* stopped by shutdown or the caller */
	ERR_INTERNAL,       /* a bug: an invariant did not hold */
	ERR_CODE_COUNT
};

#define ERROR_MSG_MAX 512

struct error {
	enum error_code code;
	char msg[ERROR_MSG_MAX];
};

/* Resets *err to ERR_OK with an empty message. */
void error_clear(struct error *err);

/*
 * Sets err->code and formats err->msg; returns code so that a caller can
 * write `return error_set(err, ERR_INVALID, "...")`. err may be NULL, then
 * only the code is returned. The message is truncated to ERROR_MSG_MAX-1.
 */
enum error_code error_set(struct error *err, enum error_code code,
			  const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
enum error_code error_setv(struct error *err, enum error_code code,
			   const char *fmt, va_list ap)
	__attribute__((format(printf, 3, 0)));

/*
 * Prepends "what: " to an existing message, keeping the code, so that each
 * layer adds its context: "read 'ds/a.rec': s3 GET ...: connection refused".
 * Returns err->code.
 */
enum error_code error_wrap(struct error *err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Short lowercase name of a code, e.g. "not found". Never NULL. */
const char *error_code_name(enum error_code code);

/* Positive errno for a FUSE reply (ENOENT, EACCES, EIO, EROFS ...). */
int error_to_errno(enum error_code code);

/* Maps errno from a failed system call to our code (ENOENT -> ERR_NOT_FOUND). */
enum error_code error_from_errno(int errnum);

/*
 * gRPC status code number as defined by the gRPC protocol (0 OK, 3
 * INVALID_ARGUMENT, 5 NOT_FOUND, 14 UNAVAILABLE ...). The numbers are the
 * protocol's, so this header needs no gRPC include.
 */
int error_to_grpc(enum error_code code);

/*
 * The reverse, for a gRPC client: maps a status number received from a peer
 * (or made by the gRPC library: 14 UNAVAILABLE for a refused connection, 4
 * DEADLINE_EXCEEDED, 8 RESOURCE_EXHAUSTED for an oversized message) back to
 * our code. error_from_grpc(error_to_grpc(c)) == c for every code that has
 * a gRPC status of its own; where two codes share one status the more
 * general wins (13 -> ERR_INTERNAL, 8 -> ERR_NO_SPACE, 14 -> ERR_UNAVAILABLE;
 * the gRPC layer tells ERR_BUSY apart by a metadata key of its own).
 * Statuses we never
 * send map to their nearest meaning: 2 UNKNOWN -> ERR_INTERNAL, 10 ABORTED
 * -> ERR_UNAVAILABLE, 15 DATA_LOSS -> ERR_IO; anything else ERR_INTERNAL.
 */
enum error_code error_from_grpc(int status);

/* HTTP status for a data-plane answer (400, 401, 403, 404, 416, 503 ...). */
int error_to_http(enum error_code code);

#endif
