/*
 * dsobject.c - the Dataset resource in C (see dsobject.h).
 */
#include "meta/dsobject.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/credentials.h"

static const char *const phases[] = {
	[DSOBJECT_PENDING] = "Pending",   [DSOBJECT_LISTING] = "Listing",
	[DSOBJECT_READY] = "Ready",       [DSOBJECT_REFRESHING] = "Refreshing",
	[DSOBJECT_FAILED] = "Failed",
};

const char *dsobject_phase_name(enum dsobject_phase p)
{
	return phases[p];
}

static const char *str_at(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

/* "64Ki" .. "64Mi" (the schema's enum); 0 for "". */
static enum error_code parse_block_size(const char *s, uint64_t *out, struct error *err)
{
	char *end;
	unsigned long long n;

	*out = 0;
	if (!*s)
		return ERR_OK;
	n = strtoull(s, &end, 10);
	if (end != s && strcmp(end, "Ki") == 0)
		*out = n << 10;
	else if (end != s && strcmp(end, "Mi") == 0)
		*out = n << 20;
	if (*out < (64u << 10) || *out > (64u << 20) || (*out & (*out - 1)))
		return error_set(err, ERR_INVALID,
				 "field 'spec.blockSize': '%.32s' is not a power of two from 64Ki to 64Mi",
				 s);
	return ERR_OK;
}

enum error_code dsobject_parse(json_t *obj, struct dsobject *out, struct error *err)
{
	json_t *meta = json_object_get(obj, "metadata"), *spec = json_object_get(obj, "spec");
	json_t *status = json_object_get(obj, "status"), *fin, *v;
	const char *policy;
	size_t i;

	memset(out, 0, sizeof(*out));
	out->ns = str_at(meta, "namespace");
	out->name = str_at(meta, "name");
	out->uid = str_at(meta, "uid");
	out->resource_version = str_at(meta, "resourceVersion");
	out->generation = json_integer_value(json_object_get(meta, "generation"));
	out->volume = str_at(json_object_get(meta, "labels"), "granary.io/volume");
	out->deleting = json_object_get(meta, "deletionTimestamp") != NULL;
	fin = json_object_get(meta, "finalizers");
	json_array_foreach(fin, i, v)
		if (json_is_string(v) && strcmp(json_string_value(v), DSOBJECT_FINALIZER) == 0)
			out->has_finalizer = true;
	if (!*out->ns || !*out->name)
		return error_set(err, ERR_INVALID, "a Dataset without metadata.namespace or name");
	out->source = str_at(spec, "source");
	out->endpoint = str_at(spec, "endpoint");
	out->region = str_at(spec, "region");
	out->secret = str_at(json_object_get(spec, "secretRef"), "name");
	out->refresh = str_at(spec, "refresh");
	out->pin = json_is_true(json_object_get(spec, "pin"));
	out->preload = json_is_true(json_object_get(spec, "preload"));
	json_array_foreach(json_object_get(spec, "preloadPrefixes"), i, v) {
		if (!json_is_string(v) || i >= BLOCK_PRELOAD_PREFIXES_MAX)
			return error_set(err, ERR_INVALID,
					 "field 'spec.preloadPrefixes': at most %d strings",
					 BLOCK_PRELOAD_PREFIXES_MAX);
		out->preload_prefixes[out->n_preload_prefixes++] = json_string_value(v);
	}
	if (!*out->source)
		return error_set(err, ERR_INVALID, "field 'spec.source': required");
	if (parse_block_size(str_at(spec, "blockSize"), &out->block_size, err) != ERR_OK)
		return ERR_INVALID;
	policy = str_at(spec, "cachePolicy");
	if (!*policy)
		out->cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_UNSPECIFIED;
	else if (strcmp(policy, "lru") == 0)
		out->cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU;
	else if (strcmp(policy, "scan-resistant") == 0)
		out->cache_policy = GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT;
	else
		return error_set(err, ERR_INVALID,
				 "field 'spec.cachePolicy': '%.32s' is not lru or scan-resistant", policy);
	out->refreshed = str_at(status, "refreshed");
	out->phase = str_at(status, "phase");
	out->observed = json_integer_value(json_object_get(status, "observedGeneration"));
	out->snapshot = (uint64_t)json_integer_value(json_object_get(status, "snapshotGeneration"));
	return ERR_OK;
}

bool dsobject_is_mirror(const struct dsobject *d, const char *mirror_ns)
{
	return mirror_ns && *mirror_ns && strcmp(d->ns, mirror_ns) == 0 &&
	       strcmp(d->volume, d->name) == 0;
}

enum error_code dsobject_dataset_name(const struct dsobject *d, const char *mirror_ns, char *out,
				      size_t size, struct error *err)
{
	int n = dsobject_is_mirror(d, mirror_ns) ? snprintf(out, size, "%s", d->name)
						   : snprintf(out, size, "%s.%s", d->ns, d->name);

	if (n < 0 || (size_t)n >= size || n > DSOBJECT_NAME_MAX)
		return error_set(err, ERR_INVALID,
				 "Dataset %s/%s: namespace and name together exceed %d bytes", d->ns,
				 d->name, DSOBJECT_NAME_MAX - 1);
	return ERR_OK;
}

void dsobject_spec(const struct dsobject *d, const char *name, const char *credentials_ref,
		   Granary__V1__DatasetSpec *spec, Granary__V1__DatasetOptions *opts)
{
	granary__v1__dataset_spec__init(spec);
	granary__v1__dataset_options__init(opts);
	opts->block_size = d->block_size;
	opts->cache_policy = (Granary__V1__CachePolicy)d->cache_policy;
	opts->pin = d->pin;
	opts->preload = d->preload;
	opts->preload_prefixes = (char **)d->preload_prefixes;
	opts->n_preload_prefixes = d->n_preload_prefixes;
	spec->name = (char *)name;
	spec->source_uri = (char *)d->source;
	spec->endpoint = (char *)d->endpoint;
	spec->region = (char *)d->region;
	spec->credentials_ref = (char *)credentials_ref;
	spec->options = opts;
}

/* Decodes data[key] of a Secret; *out NUL-terminated. */
static enum error_code secret_value(json_t *data, const char *key, bool required, char **out,
				    struct error *err)
{
	const char *b64 = json_string_value(json_object_get(data, key));
	size_t n, pad = 0;
	unsigned char *raw;
	int len;

	*out = NULL;
	if (!b64 || !*b64)
		return required ? error_set(err, ERR_INVALID, "the Secret has no key '%s'", key)
				: ERR_OK;
	n = strlen(b64);
	if (n % 4 || n > 16384)
		return error_set(err, ERR_INVALID, "the Secret's key '%s' is not base64", key);
	while (pad < 2 && b64[n - 1 - pad] == '=')
		pad++;
	raw = malloc(n / 4 * 3 + 1);
	if (!raw)
		return error_set(err, ERR_NOMEM, "out of memory");
	len = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)n);
	if (len < 0) {
		free(raw);
		return error_set(err, ERR_INVALID, "the Secret's key '%s' is not base64", key);
	}
	len -= (int)pad;
	raw[len] = '\0';
	/* The value goes on one line of an ini file. */
	for (int i = 0; i < len; i++)
		if (raw[i] < 0x21 || raw[i] == 0x7f) {
			explicit_bzero(raw, (size_t)len);
			free(raw);
			return error_set(err, ERR_INVALID,
					 "the Secret's key '%s' holds a space or a control character", key);
		}
	if (len == 0 && required) {
		free(raw);
		return error_set(err, ERR_INVALID, "the Secret's key '%s' is empty", key);
	}
	*out = (char *)raw;
	return ERR_OK;
}

static void wipe(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

enum error_code dsobject_credentials(json_t *secret, char **out, size_t *len, struct error *err)
{
	json_t *data = json_object_get(secret, "data");
	char *id = NULL, *key = NULL, *token = NULL;
	enum error_code rc;

	*out = NULL;
	*len = 0;
	rc = secret_value(data, "accessKeyID", true, &id, err);
	if (rc == ERR_OK)
		rc = secret_value(data, "secretAccessKey", true, &key, err);
	if (rc == ERR_OK)
		rc = secret_value(data, "sessionToken", false, &token, err);
	if (rc == ERR_OK)
		rc = credentials_format(id, key, token, out, len, err);
	wipe(id);
	wipe(key);
	wipe(token);
	return rc;
}

void dsobject_size(uint64_t bytes, char *buf, size_t size)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%lluB", (unsigned long long)bytes);
	else
		snprintf(buf, size, v < 10 ? "%.1f%s" : "%.0f%s", v, units[u]);
}
