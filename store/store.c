/*
 * store.c - URI parsing, validation and dispatch to the backends.
 */
#include "store/store_impl.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/retry.h"
#include "store/s3_sign.h"

enum error_code store_check_bucket_name(const char *name, struct error *err)
{
	size_t len = name ? strlen(name) : 0;
	int dots = 0, all_digits_or_dots = 1;

	if (len < 3 || len > 63)
		return error_set(err, ERR_INVALID,
				 "bucket '%s': must be 3 to 63 characters long", name ? name : "");
	for (size_t i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-'))
			return error_set(err, ERR_INVALID,
					 "bucket '%s': only lowercase letters, digits, '.' and '-' are allowed",
					 name);
		if (c == '.') {
			dots++;
			if (i > 0 && name[i - 1] == '.')
				return error_set(err, ERR_INVALID,
						 "bucket '%s': must not contain '..'", name);
		}
		if (!(c == '.' || isdigit((unsigned char)c)))
			all_digits_or_dots = 0;
	}
	if (!isalnum((unsigned char)name[0]) || !isalnum((unsigned char)name[len - 1]))
		return error_set(err, ERR_INVALID,
				 "bucket '%s': must start and end with a letter or digit", name);
	if (dots == 3 && all_digits_or_dots)
		return error_set(err, ERR_INVALID,
				 "bucket '%s': must not look like an IP address", name);
	if (strncmp(name, "xn--", 4) == 0)
		return error_set(err, ERR_INVALID, "bucket '%s': must not start with 'xn--'", name);
	return ERR_OK;
}

enum error_code store_check_region(const char *region, struct error *err)
{
	size_t len = region ? strlen(region) : 0;
	size_t ok = len ? strspn(region, "abcdefghijklmnopqrstuvwxyz"
					 "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
			: 0;

	if (ok < len) {
		/* A region goes into every request's signature and headers:
		 * one with a byte that could break a log line is not echoed,
		 * its first such byte is named. */
		for (size_t i = ok; i < len; i++)
			if (!isprint((unsigned char)region[i]))
				return error_set(err, ERR_INVALID,
						 "region: byte %zu (0x%02x) is not a letter, digit, '-' or '_'",
						 i + 1, (unsigned char)region[i]);
		return error_set(err, ERR_INVALID,
				 "region '%.64s': only letters, digits, '-' and '_' are allowed",
				 region);
	}
	if (len > S3_REGION_MAX)
		return error_set(err, ERR_INVALID, "region '%.64s...': at most %d characters",
				 region, S3_REGION_MAX);
	return ERR_OK;
}

/* An endpoint as messages quote it: user info in its authority (an access
 * key and a secret given there by mistake) never, whatever else is wrong
 * with the URL. */
static void endpoint_shown(const char *url, char *out, size_t size)
{
	const char *sep = strstr(url, "://");
	const char *auth = sep ? sep + 3 : url;
	const char *at = memrchr(auth, '@', strcspn(auth, "/?#"));

	if (!at)
		snprintf(out, size, "%s", url);
	else
		snprintf(out, size, "%.*s<user info>@%s", (int)(auth - url), url, at + 1);
}

enum error_code store_check_endpoint(const char *url, struct error *err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *path = NULL, *part = NULL;
	enum error_code rc = ERR_OK;
	char shown[512];

	if (!u)
		return error_set(err, ERR_NOMEM, "endpoint: out of memory");
	if (url)
		endpoint_shown(url, shown, sizeof(shown));
	if (!url || !*url) {
		rc = error_set(err, ERR_INVALID, "endpoint '': empty URL");
		goto out;
	}
	if (!strstr(url, "://")) {
		rc = error_set(err, ERR_INVALID,
			       "endpoint '%s': must start with http:// or https://", shown);
		goto out;
	}
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		rc = error_set(err, ERR_INVALID, "endpoint '%s': not a valid URL", shown);
		goto out;
	}
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	if (!scheme || (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0)) {
		rc = error_set(err, ERR_INVALID,
			       "endpoint '%s': scheme must be http or https", shown);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
		rc = error_set(err, ERR_INVALID, "endpoint '%s': no host", shown);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_USER, &part, 0) == CURLUE_OK) {
		rc = error_set(err, ERR_INVALID,
			       "endpoint '%s': user info is not allowed (give credentials in a credentials file)",
			       shown);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_QUERY, &part, 0) == CURLUE_OK ||
	    curl_url_get(u, CURLUPART_FRAGMENT, &part, 0) == CURLUE_OK) {
		rc = error_set(err, ERR_INVALID,
			       "endpoint '%s': must not have a query or fragment", shown);
		goto out;
	}
	if (curl_url_get(u, CURLUPART_PATH, &path, 0) == CURLUE_OK && path &&
	    strcmp(path, "/") != 0 && *path) {
		rc = error_set(err, ERR_INVALID,
			       "endpoint '%s': must not have a path ('%s'); the bucket is given in the URI",
			       shown, path);
		goto out;
	}
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(path);
	curl_free(part);
	curl_url_cleanup(u);
	return rc;
}

/*
 * Whether path (a key prefix or a file:// directory, split on '/') has a
 * segment that is empty, "." or "..": such a prefix names paths outside
 * itself once keys are joined to it or mapped to files. The segment after
 * a final '/' is the normal end of a prefix, not an empty segment.
 */
static const char *bad_segment(const char *path)
{
	const char *p = path;

	while (*p) {
		size_t len = strcspn(p, "/");

		if (len == 0)
			return "an empty segment ('//')";
		if (len == 1 && p[0] == '.')
			return "a '.' segment";
		if (len == 2 && p[0] == '.' && p[1] == '.')
			return "a '..' segment";
		p += len;
		if (*p == '/')
			p++;
	}
	return NULL;
}

enum error_code store_uri_parse(const char *uri, char **scheme, char **bucket,
				char **prefix, struct error *err)
{
	const char *rest, *slash;
	enum error_code rc;

	*scheme = *bucket = *prefix = NULL;
	if (!uri || !*uri)
		return error_set(err, ERR_INVALID, "source URI '': empty");
	if (strncmp(uri, "file://", 7) == 0) {
		rest = uri + 7;
		if (rest[0] != '/')
			return error_set(err, ERR_INVALID,
					 "source URI '%s': file:// needs an absolute path (file:///dir)", uri);
		if (bad_segment(rest + 1))
			return error_set(err, ERR_INVALID,
					 "source URI '%s': the path has %s", uri, bad_segment(rest + 1));
		*scheme = strdup("file");
		*bucket = strdup(rest);
		*prefix = strdup("");
		goto check_alloc;
	}
	if (strncmp(uri, "s3://", 5) != 0)
		return error_set(err, ERR_INVALID,
				 "source URI '%s': scheme must be s3:// or file://", uri);
	rest = uri + 5;
	slash = strchr(rest, '/');
	if (slash && bad_segment(slash + 1))
		return error_set(err, ERR_INVALID, "source URI '%s': the prefix has %s", uri,
				 bad_segment(slash + 1));
	*scheme = strdup("s3");
	*bucket = slash ? strndup(rest, (size_t)(slash - rest)) : strdup(rest);
	*prefix = strdup(slash ? slash + 1 : "");
	if (*bucket) {
		rc = store_check_bucket_name(*bucket, err);
		if (rc != ERR_OK) {
			error_wrap(err, "source URI '%s'", uri);
			goto fail;
		}
	}
check_alloc:
	if (*scheme && *bucket && *prefix)
		return ERR_OK;
	rc = error_set(err, ERR_NOMEM, "source URI: out of memory");
fail:
	free(*scheme);
	free(*bucket);
	free(*prefix);
	*scheme = *bucket = *prefix = NULL;
	return rc;
}

/* True when path lies strictly under root (a root without a trailing '/',
 * "/" itself aside). */
static bool path_under(const char *path, const char *root)
{
	size_t rl = strlen(root);

	if (rl == 1 && root[0] == '/')
		return path[0] == '/' && path[1] != '\0';
	return strncmp(path, root, rl) == 0 && path[rl] == '/' && path[rl + 1] != '\0';
}

enum error_code store_file_root_check(const char *uri, const char *const *roots, size_t n,
				      struct error *err)
{
	char *scheme = NULL, *dir = NULL, *prefix = NULL, *path = NULL, *root;
	bool inside = false;
	enum error_code rc;
	int saved;

	if (!uri || strncmp(uri, "file://", 7) != 0)
		return ERR_OK;
	if (n == 0)
		return error_set(err, ERR_INVALID,
				 "file:// sources are off (allowed_file_roots is empty), got '%s'", uri);
	rc = store_uri_parse(uri, &scheme, &dir, &prefix, err);
	if (rc != ERR_OK)
		return rc;
	for (size_t i = 0; i < n && !inside; i++)
		inside = path_under(dir, roots[i]);
	if (!inside) {
		rc = error_set(err, ERR_INVALID, "'%s' is outside allowed_file_roots", uri);
		goto out;
	}
	path = realpath(dir, NULL);
	if (!path) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "'%s': %s", uri, strerror(saved));
		goto out;
	}
	inside = false;
	for (size_t i = 0; i < n && !inside; i++) {
		root = realpath(roots[i], NULL);
		inside = root && path_under(path, root);
		free(root);
	}
	if (!inside)
		rc = error_set(err, ERR_INVALID, "'%s' resolves to '%s', outside allowed_file_roots",
			       uri, path);
out:
	free(path);
	free(scheme);
	free(dir);
	free(prefix);
	return rc;
}

/* The endpoint text that compares: without spaces around it and without
 * trailing '/'. Sets *len. */
static const char *endpoint_trim(const char *e, size_t n, size_t *len)
{
	while (n > 0 && *e == ' ') {
		e++;
		n--;
	}
	while (n > 0 && (e[n - 1] == ' ' || e[n - 1] == '/'))
		n--;
	*len = n;
	return e;
}

static bool endpoint_same(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && strncasecmp(a, b, alen) == 0;
}

enum error_code store_endpoint_check(const char *uri, const char *endpoint,
				     const char *default_endpoint, const char *allowed,
				     struct error *err)
{
	const char *want, *item;
	char shown[512];
	size_t wlen, dlen, ilen;

	if (uri && strncmp(uri, "file://", 7) == 0)
		return ERR_OK;
	if (!endpoint || !*endpoint)
		return ERR_OK;
	want = endpoint_trim(endpoint, strlen(endpoint), &wlen);
	default_endpoint = default_endpoint ? default_endpoint : "";
	item = endpoint_trim(default_endpoint, strlen(default_endpoint), &dlen);
	if (endpoint_same(want, wlen, item, dlen))
		return ERR_OK;
	for (const char *p = allowed ? allowed : ""; *p;) {
		size_t n = strcspn(p, ",");

		item = endpoint_trim(p, n, &ilen);
		if (ilen > 0 && endpoint_same(want, wlen, item, ilen))
			return ERR_OK;
		p += n;
		if (*p == ',')
			p++;
	}
	endpoint_shown(endpoint, shown, sizeof(shown));
	return error_set(err, ERR_INVALID,
			 "endpoint '%s' is not allowed: the endpoints a dataset may name are "
			 "store.endpoint and store.allowed_endpoints",
			 shown);
}

enum error_code store_check_endpoint_list(const char *key, const char *list,
					  struct error *err)
{
	char item[1024];

	for (const char *p = list ? list : ""; *p;) {
		size_t n = strcspn(p, ","), len;
		const char *e = endpoint_trim(p, n, &len);

		/* Trailing '/' was trimmed for comparing; check the item whole. */
		while (len < n && e[len] == '/')
			len++;
		if (len >= sizeof(item))
			return error_set(err, ERR_INVALID, "key '%s': an endpoint longer than %zu bytes",
					 key, sizeof(item) - 1);
		memcpy(item, e, len);
		item[len] = '\0';
		if (store_check_endpoint(item, err) != ERR_OK)
			return error_wrap(err, "key '%s'", key);
		p += n;
		if (*p == ',')
			p++;
	}
	return ERR_OK;
}

enum error_code store_open(const char *uri, const struct store_config *cfg,
			   struct store **out, struct error *err)
{
	static const struct store_config defaults;
	char *scheme = NULL, *bucket = NULL, *prefix = NULL;
	enum error_code rc;

	*out = NULL;
	if (!cfg)
		cfg = &defaults;
	rc = store_uri_parse(uri, &scheme, &bucket, &prefix, err);
	if (rc != ERR_OK)
		return rc;
	if (strcmp(scheme, "s3") == 0 && *prefix) {
		rc = error_set(err, ERR_INVALID,
			       "store URI '%s': open the bucket (s3://%s), not a prefix", uri, bucket);
		goto out;
	}
	if (strcmp(scheme, "s3") == 0)
		rc = store_s3_open(bucket, cfg, out, err);
	else
		rc = store_file_open(bucket, cfg, out, err);
out:
	free(scheme);
	free(bucket);
	free(prefix);
	return rc;
}

void store_free(struct store *st)
{
	if (st)
		st->ops->free(st);
}

/* The wrappers count failed calls once, whatever the backend. */
static enum error_code counted(struct store *st, enum error_code rc)
{
	if (rc != ERR_OK)
		atomic_fetch_add(&st->errors, 1);
	return rc;
}

struct buffer_sink {
	char *buf;
	size_t used;
};

static int copy_to_buffer(const void *data, size_t len, void *arg)
{
	struct buffer_sink *b = arg;

	memcpy(b->buf + b->used, data, len);
	b->used += len;
	return 0;
}

enum error_code store_get_until(struct store *st, const char *key, uint64_t off,
				size_t len, void *buf, size_t *got, const char *etag,
				uint64_t until_ms, struct error *err)
{
	struct buffer_sink b = { buf, 0 };
	uint64_t delivered = 0;
	enum error_code rc;

	*got = 0;
	if (!key || !*key)
		return counted(st, error_set(err, ERR_INVALID, "get: empty object key"));
	if (len == 0)
		return ERR_OK;
	if (st->ops->get)
		return counted(st, st->ops->get(st, key, off, len, buf, got, etag, until_ms, err));
	rc = st->ops->get_stream(st, key, off, len, copy_to_buffer, &b, etag, until_ms,
				 &delivered, err);
	*got = (size_t)delivered;
	return counted(st, rc);
}

enum error_code store_get(struct store *st, const char *key, uint64_t off,
			  size_t len, void *buf, size_t *got,
			  const char *etag, struct error *err)
{
	return store_get_until(st, key, off, len, buf, got, etag, 0, err);
}

#define STREAM_CHUNK (1u << 20)

enum error_code store_get_stream_until(struct store *st, const char *key, uint64_t off,
				       uint64_t len, store_sink_fn sink, void *arg,
				       const char *etag, uint64_t until_ms,
				       uint64_t *delivered, struct error *err)
{
	enum error_code rc = ERR_OK;
	char *chunk;

	*delivered = 0;
	if (!key || !*key)
		return counted(st, error_set(err, ERR_INVALID, "get: empty object key"));
	if (len == 0)
		return ERR_OK;
	if (st->ops->get_stream)
		return counted(st, st->ops->get_stream(st, key, off, len, sink, arg,
						       etag, until_ms, delivered, err));
	chunk = malloc(STREAM_CHUNK);
	if (!chunk)
		return counted(st, error_set(err, ERR_NOMEM, "get '%s': out of memory", key));
	while (*delivered < len) {
		size_t want = len - *delivered < STREAM_CHUNK ? (size_t)(len - *delivered) : STREAM_CHUNK;
		size_t got = 0;

		rc = st->ops->get(st, key, off + *delivered, want, chunk, &got, etag, until_ms,
				 err);
		/* A later chunk starting exactly at the end is the end, not an error. */
		if (rc == ERR_RANGE && *delivered > 0) {
			rc = ERR_OK;
			error_clear(err);
			break;
		}
		if (rc != ERR_OK)
			break;
		if (got > 0 && sink(chunk, got, arg) != 0) {
			rc = error_set(err, ERR_IO, "get '%s': the reader stopped the transfer", key);
			break;
		}
		*delivered += got;
		if (got < want)
			break;
	}
	free(chunk);
	return counted(st, rc);
}

enum error_code store_get_stream(struct store *st, const char *key,
				 uint64_t off, uint64_t len, store_sink_fn sink,
				 void *arg, const char *etag, uint64_t *delivered,
				 struct error *err)
{
	return store_get_stream_until(st, key, off, len, sink, arg, etag, 0, delivered, err);
}

enum error_code store_put(struct store *st, const char *key, const void *data,
			  size_t len, struct error *err)
{
	if (!key || !*key)
		return counted(st, error_set(err, ERR_INVALID, "put: empty object key"));
	return counted(st, st->ops->put(st, key, data, len, err));
}

enum error_code store_head(struct store *st, const char *key,
			   struct store_object *info, struct error *err)
{
	memset(info, 0, sizeof(*info));
	if (!key || !*key)
		return counted(st, error_set(err, ERR_INVALID, "head: empty object key"));
	return counted(st, st->ops->head(st, key, info, err));
}

enum error_code store_list(struct store *st, const char *prefix,
			   const char *delimiter, const char *token,
			   unsigned max_keys, struct store_list_page *page,
			   struct error *err)
{
	memset(page, 0, sizeof(*page));
	return counted(st, st->ops->list(st, prefix ? prefix : "", delimiter,
					 token, max_keys, page, err));
}

enum error_code store_list_all(struct store *st, const char *prefix,
			       store_list_fn fn, void *arg, struct error *err)
{
	return store_list_all_limited(st, prefix, NULL, fn, arg, err);
}

enum error_code store_list_all_limited(struct store *st, const char *prefix,
				       const struct store_list_limits *lim, store_list_fn fn,
				       void *arg, struct error *err)
{
	static const struct store_list_limits none;
	struct store_list_page page;
	char *token = NULL;
	uint64_t pages = 0, objects = 0, t0 = retry_now_ms();
	enum error_code rc = ERR_OK;

	if (!lim)
		lim = &none;
	if (!prefix)
		prefix = "";
	do {
		rc = store_list(st, prefix, NULL, token, 0, &page, err);
		if (rc != ERR_OK)
			break;
		pages++;
		objects += page.nobjects;
		if (token && page.next_token && strcmp(token, page.next_token) == 0) {
			rc = error_set(err, ERR_INVALID,
				       "list '%s' of %s: page %llu returned the continuation token "
				       "it was asked with; the listing would never end",
				       prefix, store_describe_at(st), (unsigned long long)pages);
		} else if (lim->max_pages && pages > lim->max_pages) {
			rc = error_set(err, ERR_NO_SPACE,
				       "list '%s' of %s: more than %llu pages", prefix,
				       store_describe_at(st), (unsigned long long)lim->max_pages);
		} else if (lim->max_objects && objects > lim->max_objects) {
			rc = error_set(err, ERR_NO_SPACE,
				       "list '%s' of %s: more than %llu objects", prefix,
				       store_describe_at(st), (unsigned long long)lim->max_objects);
		}
		for (size_t i = 0; rc == ERR_OK && i < page.nobjects; i++) {
			if (fn(&page.objects[i], arg) != 0)
				rc = error_set(err, ERR_CANCELLED, "list of '%s' stopped by the caller",
					       prefix);
		}
		free(token);
		token = page.next_token;
		page.next_token = NULL;
		store_list_page_release(&page);
		if (rc == ERR_OK && token && lim->max_ms && retry_now_ms() - t0 > lim->max_ms)
			rc = error_set(err, ERR_TIMEOUT,
				       "list '%s' of %s: not done after %llu ms (%llu pages)", prefix,
				       store_describe_at(st), (unsigned long long)lim->max_ms,
				       (unsigned long long)pages);
	} while (rc == ERR_OK && token);
	free(token);
	return rc; /* store_list counted its own failures */
}

void store_object_release(struct store_object *obj)
{
	if (!obj)
		return;
	free(obj->key);
	obj->key = NULL;
}

void store_list_page_release(struct store_list_page *page)
{
	if (!page)
		return;
	for (size_t i = 0; i < page->nobjects; i++)
		free(page->objects[i].key);
	free(page->objects);
	for (size_t i = 0; i < page->nprefixes; i++)
		free(page->prefixes[i]);
	free(page->prefixes);
	free(page->next_token);
	memset(page, 0, sizeof(*page));
}

void store_get_stats(struct store *st, struct store_stats *out)
{
	out->requests = atomic_load(&st->requests);
	out->retries = atomic_load(&st->retries);
	out->bytes_read = atomic_load(&st->bytes_read);
	out->errors = atomic_load(&st->errors);
}

const char *store_describe(const struct store *st)
{
	return st->desc;
}

const char *store_describe_at(const struct store *st)
{
	return st->desc_at ? st->desc_at : st->desc;
}
