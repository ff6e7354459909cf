/*
 * credentials.c - explicit file, environment, shared file; first match wins.
 *
 * Everything read here may be a secret: file buffers and partially filled
 * results are wiped before they are freed, and no message quotes a line.
 */
#include "store/credentials.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fileio.h"

/* Far larger than any real credentials file; bounds what we read. */
#define CREDENTIALS_FILE_MAX (1 << 20)

static void wipe_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

void credentials_release(struct store_credentials *c)
{
	if (!c)
		return;
	wipe_free(c->access_key_id);
	wipe_free(c->secret_access_key);
	wipe_free(c->session_token);
	c->access_key_id = NULL;
	c->secret_access_key = NULL;
	c->session_token = NULL;
}

static const char *default_profile(const char *profile)
{
	const char *env = NULL;

	if (profile && *profile)
		return profile;
	env = getenv("AWS_PROFILE");
	return env && *env ? env : "default";
}

static char *trim(char *s)
{
	char *end = NULL;

	while (*s == ' ' || *s == '\t')
		s++;
	end = s + strlen(s);
	while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
		*--end = '\0';
	return s;
}

/* Replaces *slot with a copy of value; an empty value counts as absent. */
static int set_value(char **slot, const char *value)
{
	char *copy = NULL;

	if (*value) {
		copy = strdup(value);
		if (!copy)
			return -1;
	}
	wipe_free(*slot);
	*slot = copy;
	return 0;
}

/* credentials_parse; *no_profile tells that the section is absent. */
static enum error_code parse(const char *text, const char *name, const char *profile,
			     struct store_credentials *out, int *no_profile,
			     struct error *err)
{
	struct store_credentials c = { NULL, NULL, NULL };
	char *copy = NULL;
	char *line = NULL;
	char *next = NULL;
	unsigned lineno = 0;
	int in_profile = 0;
	int seen_profile = 0;
	enum error_code rc = ERR_OK;

	memset(out, 0, sizeof(*out));
	*no_profile = 0;
	profile = default_profile(profile);
	copy = strdup(text);
	if (!copy)
		return error_set(err, ERR_NOMEM, "parse credentials '%s': out of memory", name);

	for (line = copy; line; line = next) {
		char *s = NULL;
		char *eq = NULL;
		char *key = NULL;
		char **slot = NULL;

		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		lineno++;
		s = trim(line);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *close = strchr(s, ']');

			if (!close || *trim(close + 1) != '\0') {
				rc = error_set(err, ERR_INVALID,
					       "parse credentials '%s' line %u: malformed section header",
					       name, lineno);
				goto fail;
			}
			*close = '\0';
			in_profile = strcmp(trim(s + 1), profile) == 0;
			seen_profile |= in_profile;
			continue;
		}
		/* Other profiles may hold syntax we do not use; only ours must parse. */
		if (!in_profile)
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			rc = error_set(err, ERR_INVALID,
				       "parse credentials '%s' line %u: expected 'key = value' in profile '%s'",
				       name, lineno, profile);
			goto fail;
		}
		*eq = '\0';
		key = trim(s);
		if (strcasecmp(key, "aws_access_key_id") == 0)
			slot = &c.access_key_id;
		else if (strcasecmp(key, "aws_secret_access_key") == 0)
			slot = &c.secret_access_key;
		else if (strcasecmp(key, "aws_session_token") == 0)
			slot = &c.session_token;
		else
			continue;
		if (set_value(slot, trim(eq + 1)) < 0) {
			rc = error_set(err, ERR_NOMEM, "parse credentials '%s': out of memory", name);
			goto fail;
		}
	}

	if (!seen_profile) {
		*no_profile = 1;
		rc = error_set(err, ERR_INVALID, "credentials '%s': no profile '%s'", name, profile);
		goto fail;
	}
	if (!c.access_key_id || !c.secret_access_key) {
		rc = error_set(err, ERR_INVALID,
			       "credentials '%s': profile '%s' has no %s",
			       name, profile,
			       c.access_key_id ? "aws_secret_access_key" : "aws_access_key_id");
		goto fail;
	}
	explicit_bzero(copy, strlen(text));
	free(copy);
	*out = c;
	return ERR_OK;

fail:
	credentials_release(&c);
	explicit_bzero(copy, strlen(text));
	free(copy);
	return rc;
}

enum error_code credentials_parse(const char *text, const char *name,
				  const char *profile,
				  struct store_credentials *out,
				  struct error *err)
{
	int no_profile = 0;

	return parse(text, name, profile, out, &no_profile, err);
}

/*
 * Reads path into a NUL-terminated heap buffer. With optional set, a missing
 * file is ERR_NOT_FOUND without a message: the implicit shared file.
 */
static enum error_code read_file(const char *path, char **text, int optional,
				 struct error *err)
{
	struct stat sb;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd = -1;
	int saved = 0;
	enum error_code rc = ERR_OK;

	*text = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		saved = errno;
		if (saved == ENOENT && optional)
			return ERR_NOT_FOUND;
		if (saved == ENOENT)
			return error_set(err, ERR_NOT_FOUND,
					 "read credentials '%s': no such file", path);
		return error_set(err, error_from_errno(saved), "read credentials '%s': %s",
				 path, strerror(saved));
	}
	if (fstat(fd, &sb) < 0) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "read credentials '%s': %s",
			       path, strerror(saved));
		goto fail;
	}
	if (!S_ISREG(sb.st_mode)) {
		rc = error_set(err, ERR_INVALID, "read credentials '%s': not a regular file", path);
		goto fail;
	}
	if (sb.st_size > CREDENTIALS_FILE_MAX) {
		rc = error_set(err, ERR_INVALID, "read credentials '%s': larger than %d bytes",
			       path, CREDENTIALS_FILE_MAX);
		goto fail;
	}
	buf = malloc(CREDENTIALS_FILE_MAX + 1);
	if (!buf) {
		rc = error_set(err, ERR_NOMEM, "read credentials '%s': out of memory", path);
		goto fail;
	}
	/* Read to EOF rather than trusting st_size: the file may be growing. */
	n = fileio_pread_all(fd, buf, CREDENTIALS_FILE_MAX + 1, 0);
	if (n < 0) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "read credentials '%s': %s", path,
			       strerror(saved));
		goto fail;
	}
	if (n > CREDENTIALS_FILE_MAX) {
		rc = error_set(err, ERR_INVALID, "read credentials '%s': larger than %d bytes",
			       path, CREDENTIALS_FILE_MAX);
		goto fail;
	}
	len = (size_t)n;
	buf[len] = '\0';
	close(fd);
	*text = buf;
	return ERR_OK;

fail:
	if (buf) {
		explicit_bzero(buf, CREDENTIALS_FILE_MAX + 1);
		free(buf);
	}
	close(fd);
	return rc;
}

static enum error_code load_file(const char *path, const char *profile,
				 struct store_credentials *out, struct error *err)
{
	char *text = NULL;
	enum error_code rc = read_file(path, &text, 0, err);

	if (rc != ERR_OK)
		return rc;
	rc = credentials_parse(text, path, profile, out, err);
	explicit_bzero(text, strlen(text));
	free(text);
	return rc;
}

static enum error_code load_env(struct store_credentials *out, bool *found,
				struct error *err)
{
	const char *id = getenv("AWS_ACCESS_KEY_ID");
	const char *secret = getenv("AWS_SECRET_ACCESS_KEY");
	const char *token = getenv("AWS_SESSION_TOKEN");

	if (id && !*id)
		id = NULL;
	if (secret && !*secret)
		secret = NULL;
	if (token && !*token)
		token = NULL;
	if (!id && !secret)
		return ERR_OK;
	if (!id || !secret)
		return error_set(err, ERR_INVALID,
				 "credentials from the environment: %s is set but %s is not",
				 id ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
				 id ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
	out->access_key_id = strdup(id);
	out->secret_access_key = strdup(secret);
	out->session_token = token ? strdup(token) : NULL;
	if (!out->access_key_id || !out->secret_access_key || (token && !out->session_token)) {
		credentials_release(out);
		return error_set(err, ERR_NOMEM, "credentials from the environment: out of memory");
	}
	*found = true;
	return ERR_OK;
}

static enum error_code load_shared(const char *profile, struct store_credentials *out,
				   bool *found, struct error *err)
{
	const char *env = getenv("AWS_SHARED_CREDENTIALS_FILE");
	const char *home = getenv("HOME");
	const char *env_profile = getenv("AWS_PROFILE");
	int named = (profile && *profile) || (env_profile && *env_profile);
	int no_profile = 0;
	char *path = NULL;
	char *text = NULL;
	enum error_code rc = ERR_OK;

	if (env && *env) {
		path = strdup(env);
	} else {
		if (!home || !*home)
			return ERR_OK;
		if (asprintf(&path, "%s/.aws/credentials", home) < 0)
			path = NULL;
	}
	if (!path)
		return error_set(err, ERR_NOMEM, "credentials: out of memory");

	rc = read_file(path, &text, 1, err);
	if (rc == ERR_NOT_FOUND) {
		rc = ERR_OK;
		goto out;
	}
	if (rc != ERR_OK)
		goto out;
	rc = parse(text, path, profile, out, &no_profile, err);
	if (rc == ERR_OK) {
		*found = true;
	} else if (no_profile && !named) {
		/*
		 * A shared file without [default] holds someone's other
		 * profiles, not a request for credentials: stay anonymous. A
		 * profile asked for by name must exist.
		 */
		if (err)
			error_clear(err);
		rc = ERR_OK;
	}
out:
	if (text) {
		explicit_bzero(text, strlen(text));
		free(text);
	}
	free(path);
	return rc;
}

enum error_code credentials_load(const char *explicit_file, const char *profile,
				 struct store_credentials *out, bool *found,
				 struct error *err)
{
	enum error_code rc = ERR_OK;

	memset(out, 0, sizeof(*out));
	*found = false;
	if (explicit_file && *explicit_file) {
		rc = load_file(explicit_file, profile, out, err);
		if (rc == ERR_OK)
			*found = true;
		return rc;
	}
	rc = load_env(out, found, err);
	if (rc != ERR_OK || *found)
		return rc;
	return load_shared(profile, out, found, err);
}

enum error_code credentials_format(const char *key_id, const char *secret,
				   const char *session_token, char **out, size_t *len,
				   struct error *err)
{
	int n = session_token
			? asprintf(out,
				   "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\naws_session_token = %s\n",
				   key_id, secret, session_token)
			: asprintf(out, "[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n",
				   key_id, secret);

	if (n < 0) {
		*out = NULL;
		*len = 0;
		return error_set(err, ERR_NOMEM, "credentials: out of memory");
	}
	*len = (size_t)n;
	return ERR_OK;
}
