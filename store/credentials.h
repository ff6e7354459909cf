/*
 * credentials.h - where object-store credentials come from.
 *
 * Order, first match wins (see struct store_config): an explicit credentials
 * file, the AWS_* environment variables, then the shared credentials file
 * (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials). The file format is the
 * AWS shared credentials INI format:
 *
 *   [default]
 *   aws_access_key_id = AKIA...
 *   aws_secret_access_key = ...
 *   aws_session_token = ...      (optional)
 *
 * Messages name the file, the line and the profile, never a value.
 */
#ifndef GRANARY_STORE_CREDENTIALS_H
#define GRANARY_STORE_CREDENTIALS_H

#include <stdbool.h>

#include "common/error.h"
#include "store/store.h"

/*
 * Fills out from the first source that has credentials. *found is false
 * (and out all NULL) when no source has any: anonymous access. profile
 * NULL or "" means $AWS_PROFILE, else "default".
 *
 * An explicit file that is missing or unreadable is an error (ERR_NOT_FOUND
 * / ERR_PERMISSION naming the path; a path that is not a regular file is
 * ERR_INVALID); so is one without the profile or with only one of the two
 * keys (ERR_INVALID). Only one of AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
 * set is ERR_INVALID naming the missing variable (empty counts as unset).
 * The implicit shared file is skipped when absent, and also when it lacks
 * [default] and no profile was named (neither argument nor AWS_PROFILE):
 * a file holding only other profiles is not a request for credentials.
 * Release out with credentials_release.
 */
enum error_code credentials_load(const char *explicit_file, const char *profile,
				 struct store_credentials *out, bool *found,
				 struct error *err);

/*
 * Parses INI text; name is the file name used in messages. Sections are
 * "[name]", keys are case-insensitive, whitespace around keys and values
 * is trimmed, lines starting with '#' or ';' are comments, a later value
 * wins. Only lines of the chosen profile must be "key = value"; other
 * profiles may hold syntax we do not read. profile as in credentials_load.
 * Both key id and secret are required (ERR_INVALID naming the missing key,
 * or the missing profile); on error out is all NULL.
 */
enum error_code credentials_parse(const char *text, const char *name,
				  const char *profile,
				  struct store_credentials *out,
				  struct error *err);

/* Frees and wipes (explicit_bzero) the strings. */
void credentials_release(struct store_credentials *c);

/*
 * The INI text of a [default] profile with key id, secret and (when not
 * NULL) session token, what credentials_parse reads back: *out malloc'd,
 * *len its length; the caller wipes and frees it. ERR_NOMEM.
 */
enum error_code credentials_format(const char *key_id, const char *secret,
				   const char *session_token, char **out, size_t *len,
				   struct error *err);

#endif
