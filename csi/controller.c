/*
 * controller.c - CreateVolume / DeleteVolume / ValidateVolumeCapabilities
 * against granary-meta, and the checks of what a StorageClass and its
 * secrets may say.
 */
#include "csi/controller.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "block/name.h"
#include "common/fileio.h"
#include "common/config.h"
#include "common/log.h"
#include "store/credentials.h"
#include "store/store.h"

struct controller {
	char *dir;                  /* STATE/controller */
	struct meta_client *meta;
	char **file_roots;          /* allowed_file_roots; immutable */
	size_t nfile_roots;
	char *default_endpoint;     /* store.endpoint; immutable */
	char *allowed_endpoints;    /* store.allowed_endpoints; immutable */
	enum error_code (*on_volume)(const char *id, const struct controller_params *p,
				     bool created, void *arg, struct error *err);
	void *on_volume_arg;
};

/* ---- access modes -------------------------------------------------------- */

enum error_code controller_check_capability(const struct controller_capability *cap,
					    const char *what, struct error *err)
{
	switch (cap->access_type) {
	case CONTROLLER_ACCESS_MOUNT:
		break;
	case CONTROLLER_ACCESS_BLOCK:
		return error_set(err, ERR_INVALID,
				 "field '%s': block access is not supported (a dataset is a read-only filesystem: use mount access)",
				 what);
	default:
		return error_set(err, ERR_INVALID, "field '%s': access_type (mount) required", what);
	}
	switch (cap->mode) {
	case CONTROLLER_MODE_SINGLE_NODE_WRITER:
	case CONTROLLER_MODE_SINGLE_NODE_READER_ONLY:
	case CONTROLLER_MODE_MULTI_NODE_READER_ONLY:
	case CONTROLLER_MODE_SINGLE_NODE_SINGLE_WRITER:
	case CONTROLLER_MODE_SINGLE_NODE_MULTI_WRITER:
		return ERR_OK;
	case CONTROLLER_MODE_MULTI_NODE_SINGLE_WRITER:
	case CONTROLLER_MODE_MULTI_NODE_MULTI_WRITER:
		return error_set(err, ERR_INVALID,
				 "field '%s': access mode %s is not supported (dataset volumes are read-only; use ReadOnlyMany)",
				 what,
				 cap->mode == CONTROLLER_MODE_MULTI_NODE_SINGLE_WRITER
					 ? "MULTI_NODE_SINGLE_WRITER"
					 : "MULTI_NODE_MULTI_WRITER");
	case CONTROLLER_MODE_UNKNOWN:
		return error_set(err, ERR_INVALID, "field '%s': access_mode required", what);
	default:
		return error_set(err, ERR_INVALID, "field '%s': unknown access mode %d", what, cap->mode);
	}
}

/* ---- parameters ---------------------------------------------------------- */

/* Keys the external-provisioner adds (--extra-create-metadata) or reserves. */
#define RESERVED_PREFIX "csi.storage.k8s.io/"

/* The StorageClass parameters, which are also the registration keys of a
 * volume_context. */
static const char *const param_keys[] = { "source",      "endpoint", "region", "blockSize",
					  "cachePolicy", "pin",      "preload" };

#define KNOWN_PARAMS "source, endpoint, region, blockSize, cachePolicy, pin, preload"

static const struct {
	const char *name;
	int value;
} policies[] = {
	{ "lru", GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU },
	{ "scan-resistant", GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT },
};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* The index of k in param_keys, or -1. */
static int param_index(const char *k)
{
	for (size_t i = 0; i < COUNT(param_keys); i++)
		if (strcmp(k, param_keys[i]) == 0)
			return (int)i;
	return -1;
}

static enum error_code set_string(char **slot, const char *value, struct error *err)
{
	*slot = strdup(value);
	return *slot ? ERR_OK : error_set(err, ERR_NOMEM, "out of memory");
}

/* In the helpers below, what starts every message: "parameter" (a
 * StorageClass) or "volume_context key" (a PV's attributes). */
static enum error_code parse_bool(const char *what, const char *key, const char *value,
				  bool *out, struct error *err)
{
	if (config_parse_bool(value, out) != ERR_OK)
		return error_set(err, ERR_INVALID, "%s '%s': must be true or false, got '%s'", what,
				 key, value);
	return ERR_OK;
}

/* "" is the worker's default (0). */
static enum error_code parse_block_size(const char *what, const char *value, uint64_t *out,
					struct error *err)
{
	char field[96];
	uint64_t v = 0;

	if (!*value) {
		*out = 0;
		return ERR_OK;
	}
	if (config_parse_size(value, &v) != ERR_OK)
		return error_set(err, ERR_INVALID, "%s 'blockSize': not a size, got '%s' (e.g. 4MiB)",
				 what, value);
	snprintf(field, sizeof(field), "%s 'blockSize'", what);
	if (block_size_check(field, v, err) != ERR_OK)
		return ERR_INVALID;
	*out = v;
	return ERR_OK;
}

/* "" is the worker's default (0). */
static enum error_code parse_policy(const char *what, const char *value, int *out,
				    struct error *err)
{
	if (!*value) {
		*out = 0;
		return ERR_OK;
	}
	for (size_t i = 0; i < COUNT(policies); i++)
		if (strcmp(value, policies[i].name) == 0) {
			*out = policies[i].value;
			return ERR_OK;
		}
	return error_set(err, ERR_INVALID, "%s 'cachePolicy': must be lru or scan-resistant, got '%s'",
			 what, value);
}

static enum error_code check_source(const char *what, const char *uri, struct error *err)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL;
	enum error_code rc;

	rc = store_uri_parse(uri, &scheme, &bucket, &prefix, err);
	if (rc == ERR_OK && *prefix && prefix[strlen(prefix) - 1] != '/')
		rc = error_set(err, ERR_INVALID,
			       "the prefix must end in '/' (s3://BUCKET/PREFIX/), got '%s'", uri);
	free(scheme);
	free(bucket);
	free(prefix);
	return rc == ERR_OK ? ERR_OK : error_wrap(err, "%s 'source'", what);
}

void controller_params_release(struct controller_params *p)
{
	free(p->source);
	free(p->endpoint);
	free(p->region);
	memset(p, 0, sizeof(*p));
}

/* One key (of param_keys or an unknown one): the rules of both maps.
 * seen: a bit per param_keys entry already read. */
static enum error_code parse_one(const char *what, const char *k, const char *v,
				 struct controller_params *out, unsigned *seen, struct error *err)
{
	enum error_code rc = ERR_OK;
	int i = param_index(k);

	if (i < 0)
		return error_set(err, ERR_INVALID, "unknown %s '%s' (known: " KNOWN_PARAMS ")", what, k);
	if (*seen & (1u << i))
		return error_set(err, ERR_INVALID, "%s '%s': given twice", what, k);
	*seen |= 1u << i;
	if (strcmp(k, "source") == 0) {
		rc = set_string(&out->source, v, err);
	} else if (strcmp(k, "endpoint") == 0) {
		rc = set_string(&out->endpoint, v, err);
		if (rc == ERR_OK && *v && store_check_endpoint(v, err) != ERR_OK)
			rc = error_wrap(err, "%s 'endpoint'", what);
	} else if (strcmp(k, "region") == 0) {
		rc = set_string(&out->region, v, err);
		if (rc == ERR_OK && store_check_region(v, err) != ERR_OK)
			rc = error_wrap(err, "%s 'region'", what);
	} else if (strcmp(k, "blockSize") == 0) {
		rc = parse_block_size(what, v, &out->block_size, err);
	} else if (strcmp(k, "cachePolicy") == 0) {
		rc = parse_policy(what, v, &out->cache_policy, err);
	} else if (strcmp(k, "pin") == 0) {
		rc = parse_bool(what, k, v, &out->pin, err);
	} else {
		rc = parse_bool(what, k, v, &out->preload, err);
	}
	return rc;
}

/* The rules after every key is read: source required and well formed,
 * endpoint and region "" when absent. */
static enum error_code parse_finish(const char *what, struct controller_params *out,
				    struct error *err)
{
	if (!out->source || !*out->source)
		return error_set(err, ERR_INVALID, "%s 'source': required (the dataset's s3://BUCKET/PREFIX/)",
				 what);
	if (check_source(what, out->source, err) != ERR_OK)
		return err->code;
	if ((!out->endpoint && !(out->endpoint = strdup(""))) ||
	    (!out->region && !(out->region = strdup(""))))
		return error_set(err, ERR_NOMEM, "out of memory");
	return ERR_OK;
}

enum error_code controller_parse_params(const struct controller_kv *kv, size_t n,
					struct controller_params *out, struct error *err)
{
	enum error_code rc = ERR_OK;
	unsigned seen = 0;

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < n && rc == ERR_OK; i++) {
		const char *k = kv[i].key ? kv[i].key : "", *v = kv[i].value ? kv[i].value : "";

		if (strncmp(k, RESERVED_PREFIX, strlen(RESERVED_PREFIX)) == 0)
			continue;
		rc = parse_one("parameter", k, v, out, &seen, err);
	}
	return rc == ERR_OK ? parse_finish("parameter", out, err) : rc;
}

/* ---- volume context ------------------------------------------------------ */

void controller_context_init(struct controller_context *ctx, const char *dataset,
			     const struct controller_params *p)
{
	const char *policy = "";

	for (size_t i = 0; i < COUNT(policies); i++)
		if (policies[i].value == p->cache_policy)
			policy = policies[i].name;
	if (p->block_size)
		snprintf(ctx->block_size, sizeof(ctx->block_size), "%llu",
			 (unsigned long long)p->block_size);
	else
		ctx->block_size[0] = '\0';
	ctx->kv[0] = (struct controller_kv){ CONTROLLER_CONTEXT_DATASET, dataset };
	ctx->kv[1] = (struct controller_kv){ "source", p->source };
	ctx->kv[2] = (struct controller_kv){ "endpoint", p->endpoint ? p->endpoint : "" };
	ctx->kv[3] = (struct controller_kv){ "region", p->region ? p->region : "" };
	ctx->kv[4] = (struct controller_kv){ "blockSize", ctx->block_size };
	ctx->kv[5] = (struct controller_kv){ "cachePolicy", policy };
	ctx->kv[6] = (struct controller_kv){ "pin", p->pin ? "true" : "false" };
	ctx->kv[7] = (struct controller_kv){ "preload", p->preload ? "true" : "false" };
	ctx->n = 8;
}

enum error_code controller_context_params(const struct controller_kv *kv, size_t n,
					  struct controller_params *out, bool *present,
					  struct error *err)
{
	static const char what[] = "volume_context key";
	enum error_code rc = ERR_OK;
	unsigned seen = 0;

	memset(out, 0, sizeof(*out));
	*present = false;
	for (size_t i = 0; i < n && rc == ERR_OK; i++) {
		const char *k = kv[i].key ? kv[i].key : "", *v = kv[i].value ? kv[i].value : "";

		/* "dataset" and what others add (the provisioner's identity,
		 * the kubelet's pod keys) are not registration keys. */
		if (param_index(k) < 0)
			continue;
		*present = true;
		rc = parse_one(what, k, v, out, &seen, err);
	}
	if (rc == ERR_OK && *present)
		rc = parse_finish(what, out, err);
	if (rc != ERR_OK)
		*present = false;
	return rc;
}

enum error_code controller_register(struct meta_client *meta, const char *name,
				    const struct controller_params *p, const char *credentials_ref,
				    uint64_t timeout_ms, Granary__V1__Dataset **out,
				    struct error *err)
{
	Granary__V1__DatasetSpec spec = GRANARY__V1__DATASET_SPEC__INIT;
	Granary__V1__DatasetOptions opts = GRANARY__V1__DATASET_OPTIONS__INIT;

	spec.name = (char *)name;
	spec.source_uri = p->source;
	spec.endpoint = p->endpoint;
	spec.region = p->region;
	spec.credentials_ref = (char *)(credentials_ref ? credentials_ref : "");
	opts.block_size = p->block_size;
	opts.cache_policy = p->cache_policy;
	opts.pin = p->pin;
	opts.preload = p->preload;
	spec.options = &opts;
	if (meta_client_register_within(meta, &spec, timeout_ms, out, err) == ERR_OK)
		return ERR_OK;
	/* The store that refused may not be the one the user meant: say so. */
	if (!*p->endpoint && err->code != ERR_UNAVAILABLE && err->code != ERR_TIMEOUT)
		return error_wrap(err, "parameter 'endpoint' is empty, so granary-meta's default store was used");
	return err->code;
}

/* ---- secrets ------------------------------------------------------------- */

void controller_secret_release(struct controller_secret *s)
{
	char **slots[] = { &s->access_key_id, &s->secret_access_key, &s->session_token };

	for (size_t i = 0; i < sizeof(slots) / sizeof(slots[0]); i++) {
		if (*slots[i]) {
			explicit_bzero(*slots[i], strlen(*slots[i]));
			free(*slots[i]);
			*slots[i] = NULL;
		}
	}
}

/* One line, no control characters, nothing the INI reader would trim. */
static bool valid_secret_value(const char *v)
{
	size_t len = strlen(v);

	if (len == 0 || len > 4096 || v[0] == ' ' || v[0] == '\t' || v[len - 1] == ' ' ||
	    v[len - 1] == '\t')
		return false;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)v[i] < 0x20 || v[i] == 0x7f)
			return false;
	return true;
}

enum error_code controller_parse_secret(const char *what, const struct controller_kv *kv, size_t n,
					struct controller_secret *out, bool *present,
					struct error *err)
{
	enum error_code rc = ERR_OK;

	memset(out, 0, sizeof(*out));
	*present = false;
	for (size_t i = 0; i < n && rc == ERR_OK; i++) {
		const char *k = kv[i].key ? kv[i].key : "", *v = kv[i].value ? kv[i].value : "";
		char **slot;

		if (strcmp(k, "accessKeyID") == 0)
			slot = &out->access_key_id;
		else if (strcmp(k, "secretAccessKey") == 0)
			slot = &out->secret_access_key;
		else if (strcmp(k, "sessionToken") == 0)
			slot = &out->session_token;
		else {
			rc = error_set(err, ERR_INVALID,
				       "%s key '%s': unknown (known: accessKeyID, secretAccessKey, sessionToken)",
				       what, k);
			break;
		}
		if (*slot)
			rc = error_set(err, ERR_INVALID, "%s key '%s': given twice", what, k);
		else if (!valid_secret_value(v))
			rc = error_set(err, ERR_INVALID,
				       "%s key '%s': must be one non-empty line without surrounding spaces",
				       what, k);
		else if (!(*slot = strdup(v)))
			rc = error_set(err, ERR_NOMEM, "out of memory");
	}
	if (rc == ERR_OK && (out->access_key_id || out->secret_access_key || out->session_token)) {
		if (!out->access_key_id)
			rc = error_set(err, ERR_INVALID, "%s key 'accessKeyID': required with %s", what,
				       out->secret_access_key ? "'secretAccessKey'" : "'sessionToken'");
		else if (!out->secret_access_key)
			rc = error_set(err, ERR_INVALID,
				       "%s key 'secretAccessKey': required with 'accessKeyID'", what);
		else
			*present = true;
	}
	if (rc != ERR_OK)
		controller_secret_release(out);
	return rc;
}

enum error_code controller_write_credentials(const char *path, const struct controller_secret *s,
					     struct error *err)
{
	char *text = NULL;
	size_t len = 0;
	enum error_code rc;

	rc = credentials_format(s->access_key_id, s->secret_access_key, s->session_token, &text,
				&len, err);
	if (rc != ERR_OK)
		return rc;
	rc = fileio_replace(path, text, len, 0600, err);
	explicit_bzero(text, len);
	free(text);
	return rc;
}

/* ---- volume ids ---------------------------------------------------------- */

static bool is_alnum_lower(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

bool controller_valid_id(const char *id)
{
	struct error ignored;

	/* meta's rule for a dataset name, the CSI spec's length. */
	return id && strlen(id) <= CONTROLLER_ID_LEN && block_dataset_name_check(id, &ignored) == ERR_OK;
}

enum error_code controller_check_id(const char *field, const char *id, struct error *err)
{
	char quoted[65];
	size_t n = 0;

	if (!id || !*id)
		return error_set(err, ERR_INVALID, "field '%s': required", field);
	if (controller_valid_id(id))
		return ERR_OK;
	/* Whatever the caller sent, the message stays one short line. */
	for (; id[n] && n < sizeof(quoted) - 1; n++)
		quoted[n] = (unsigned char)id[n] < 0x20 || id[n] == 0x7f ? '?' : id[n];
	quoted[n] = '\0';
	return error_set(err, ERR_INVALID,
			 "field '%s': '%s%s' is not a volume id (lowercase letters, digits, '-' and '.', at most %d bytes)",
			 field, quoted, id[n] ? "..." : "", CONTROLLER_ID_LEN);
}

/* Room for the sanitised name: the id's length less "-" and 12 hex digits. */
#define ID_BODY_MAX (CONTROLLER_ID_LEN - 13)

enum error_code controller_volume_id(const char *name, char *out, size_t size, struct error *err)
{
	char body[ID_BODY_MAX + 1];
	size_t n = 0;
	uint64_t h;

	if (!name || !*name)
		return error_set(err, ERR_INVALID, "field 'name': required");
	/* The record keeps the name to tell a retry from another request. */
	if (strlen(name) > CONTROLLER_NAME_MAX)
		return error_set(err, ERR_INVALID, "field 'name': %zu bytes, longer than %d bytes",
				 strlen(name), CONTROLLER_NAME_MAX);
	if (size < CONTROLLER_ID_MAX)
		return error_set(err, ERR_INTERNAL, "volume id buffer too small");
	if (controller_valid_id(name)) {
		snprintf(out, size, "%s", name);
		return ERR_OK;
	}
	/* Lowercase letters and digits kept, runs of anything else one '-'. */
	for (const char *p = name; *p && n < ID_BODY_MAX; p++) {
		char c = *p;

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (is_alnum_lower(c))
			body[n++] = c;
		else if (n > 0 && body[n - 1] != '-')
			body[n++] = '-';
	}
	while (n > 0 && body[n - 1] == '-')
		n--;
	body[n] = '\0';
	/* The hash keeps names that sanitise alike apart (A_b vs a-b). */
	h = XXH3_64bits(name, strlen(name));
	snprintf(out, size, "%s%s%012llx", n ? body : "vol", "-",
		 (unsigned long long)(h & 0xffffffffffffull));
	return ERR_OK;
}

/* ---- records ------------------------------------------------------------- */

static void file_path(const struct controller *c, const char *id, const char *ext, char *out,
		      size_t size)
{
	snprintf(out, size, "%s/%s.%s", c->dir, id, ext);
}

/* What CreateVolume remembers beyond meta's spec. */
struct record {
	char name[CONTROLLER_NAME_MAX + 1];
	bool has_capacity;
	int64_t required, limit;
};

/* ERR_NOT_FOUND when there is none; a damaged record is treated as none. */
static enum error_code record_load(const struct controller *c, const char *id, struct record *r)
{
	char path[4200];
	json_error_t jerr;
	json_t *root;
	const char *name = NULL;
	int has = 0;
	json_int_t req = 0, lim = 0;

	file_path(c, id, "json", path, sizeof(path));
	root = json_load_file(path, 0, &jerr);
	if (!root)
		return ERR_NOT_FOUND;
	if (json_unpack(root, "{s:s, s:b, s:I, s:I}", "name", &name, "has_capacity", &has,
			"required_bytes", &req, "limit_bytes", &lim) != 0) {
		log_warn("ignoring a damaged volume record", LOG_S("path", path), LOG_S("cause", jerr.text));
		json_decref(root);
		return ERR_NOT_FOUND;
	}
	snprintf(r->name, sizeof(r->name), "%s", name);
	r->has_capacity = has;
	r->required = req;
	r->limit = lim;
	json_decref(root);
	return ERR_OK;
}

static enum error_code record_save(const struct controller *c, const char *id,
				   const struct record *r, struct error *err)
{
	char path[4200];
	json_t *root;
	char *text;
	enum error_code rc;

	root = json_pack("{s:i, s:s, s:b, s:I, s:I}", "version", 1, "name", r->name, "has_capacity",
			 r->has_capacity, "required_bytes", (json_int_t)r->required, "limit_bytes",
			 (json_int_t)r->limit);
	text = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
	json_decref(root);
	if (!text)
		return error_set(err, ERR_NOMEM, "out of memory");
	file_path(c, id, "json", path, sizeof(path));
	rc = fileio_replace(path, text, strlen(text), 0600, err);
	free(text);
	return rc;
}

static void remove_files(const struct controller *c, const char *id)
{
	char path[4200];

	file_path(c, id, "credentials", path, sizeof(path));
	unlink(path);
	file_path(c, id, "json", path, sizeof(path));
	unlink(path);
}

/* ---- the controller ------------------------------------------------------ */

enum error_code controller_new(const struct controller_config *cfg, struct controller **out,
			       struct error *err)
{
	struct controller *c = calloc(1, sizeof(*c));

	if (!c || asprintf(&c->dir, "%s/controller", cfg->state_dir) < 0) {
		free(c);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	c->meta = cfg->meta;
	c->on_volume = cfg->on_volume;
	c->on_volume_arg = cfg->on_volume_arg;
	if (cfg->nfile_roots && !(c->file_roots = calloc(cfg->nfile_roots, sizeof(char *)))) {
		controller_free(c);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	for (; c->nfile_roots < cfg->nfile_roots; c->nfile_roots++)
		if (!(c->file_roots[c->nfile_roots] = strdup(cfg->file_roots[c->nfile_roots]))) {
			controller_free(c);
			return error_set(err, ERR_NOMEM, "out of memory");
		}
	if (!(c->default_endpoint = strdup(cfg->default_endpoint ? cfg->default_endpoint : "")) ||
	    !(c->allowed_endpoints = strdup(cfg->allowed_endpoints ? cfg->allowed_endpoints : ""))) {
		controller_free(c);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	if (fileio_mkdirs(c->dir, 0700, err) != ERR_OK) {
		controller_free(c);
		return err->code;
	}
	*out = c;
	return ERR_OK;
}

void controller_volume_release(struct controller_volume *v)
{
	controller_params_release(&v->params);
}

void controller_free(struct controller *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nfile_roots; i++)
		free(c->file_roots[i]);
	free(c->file_roots);
	free(c->default_endpoint);
	free(c->allowed_endpoints);
	free(c->dir);
	free(c);
}

/*
 * A file:// source is a directory of the controller's host (and meta's)
 * that a pod could then read through its mount: only under
 * allowed_file_roots, checked before anything is listed.
 */
static enum error_code check_file_source(const struct controller *c, const char *uri,
					 struct error *err)
{
	if (store_file_root_check(uri, (const char *const *)c->file_roots, c->nfile_roots, err) ==
	    ERR_OK)
		return ERR_OK;
	err->code = ERR_INVALID; /* a directory that is not there too */
	return error_wrap(err, "parameter 'source'");
}

/*
 * granary-meta lists a dataset at the endpoint its StorageClass names, with
 * the provisioner Secret or the cluster's credentials: only store.endpoint
 * and store.allowed_endpoints (meta refuses the others too; here the
 * claim's error names the parameter before any Secret is written).
 */
static enum error_code check_endpoint(const struct controller *c,
				      const struct controller_params *p, struct error *err)
{
	if (store_endpoint_check(p->source, p->endpoint, c->default_endpoint,
				 c->allowed_endpoints, err) == ERR_OK)
		return ERR_OK;
	return error_wrap(err, "parameter 'endpoint'");
}

static enum error_code check_capabilities(const struct controller_capability *caps, size_t n,
					  struct error *err)
{
	char what[64];

	if (n == 0)
		return error_set(err, ERR_INVALID, "field 'volume_capabilities': required");
	for (size_t i = 0; i < n; i++) {
		snprintf(what, sizeof(what), "volume_capabilities[%zu]", i);
		if (controller_check_capability(&caps[i], what, err) != ERR_OK)
			return ERR_INVALID;
	}
	return ERR_OK;
}

static enum error_code check_capacity(const struct controller_create_request *req,
				      struct error *err)
{
	if (!req->has_capacity)
		return ERR_OK;
	if (req->required_bytes < 0 || req->limit_bytes < 0)
		return error_set(err, ERR_INVALID, "field 'capacity_range': negative bytes");
	if (req->limit_bytes && req->required_bytes > req->limit_bytes)
		return error_set(err, ERR_RANGE,
				 "field 'capacity_range': required_bytes %lld above limit_bytes %lld",
				 (long long)req->required_bytes, (long long)req->limit_bytes);
	return ERR_OK;
}

enum error_code controller_create_volume(struct controller *c,
					 const struct controller_create_request *req,
					 struct controller_volume *out, struct error *err)
{
	Granary__V1__Dataset *ds = NULL;
	struct controller_params params = { 0 };
	struct controller_secret secret = { 0 };
	struct record old, rec = { 0 };
	char cred_path[4200] = "";
	bool has_secret = false, existed;
	enum error_code rc;
	int64_t bytes;

	memset(out, 0, sizeof(*out));
	rc = controller_volume_id(req->name, out->id, sizeof(out->id), err);
	if (rc != ERR_OK)
		return rc;
	rc = check_capabilities(req->caps, req->ncaps, err);
	if (rc == ERR_OK && req->has_content_source)
		rc = error_set(err, ERR_INVALID,
			       "field 'volume_content_source': a dataset volume cannot be made from a snapshot or another volume");
	if (rc == ERR_OK)
		rc = check_capacity(req, err);
	if (rc == ERR_OK)
		rc = controller_parse_params(req->params, req->nparams, &params, err);
	if (rc == ERR_OK)
		rc = check_file_source(c, params.source, err);
	if (rc == ERR_OK)
		rc = check_endpoint(c, &params, err);
	if (rc == ERR_OK)
		rc = controller_parse_secret("secret", req->secrets, req->nsecrets, &secret,
					     &has_secret, err);
	if (rc != ERR_OK)
		goto out;

	existed = record_load(c, out->id, &old) == ERR_OK;
	if (existed && strcmp(old.name, req->name) != 0) {
		rc = error_set(err, ERR_EXISTS, "volume id '%s' is taken by the request name '%s'",
			       out->id, old.name);
		goto out;
	}
	if (existed && (old.has_capacity != req->has_capacity ||
			(req->has_capacity && (old.required != req->required_bytes ||
					       old.limit != req->limit_bytes)))) {
		rc = error_set(err, ERR_EXISTS,
			       "volume '%s' exists with another capacity_range (required %lld, limit %lld bytes)",
			       out->id, (long long)old.required, (long long)old.limit);
		goto out;
	}
	/*
	 * meta lists a new dataset with the file, so it is written first. An
	 * existing volume's file is what meta refreshes that dataset with: it
	 * is replaced only once meta took the request, so that one it refuses
	 * (other parameters, meta away) leaves the volume's credentials as
	 * they were.
	 */
	if (has_secret) {
		file_path(c, out->id, "credentials", cred_path, sizeof(cred_path));
		if (!existed) {
			rc = controller_write_credentials(cred_path, &secret, err);
			if (rc != ERR_OK)
				goto out;
		}
	}

	rc = controller_register(c->meta, out->id, &params, cred_path, 0, &ds, err);
	if (rc != ERR_OK) {
		if (!existed && cred_path[0])
			unlink(cred_path);
		goto out;
	}
	if (existed && has_secret) {
		rc = controller_write_credentials(cred_path, &secret, err);
		if (rc != ERR_OK)
			goto out;
	}
	bytes = ds->bytes > INT64_MAX ? INT64_MAX : (int64_t)ds->bytes;
	out->files = ds->files;
	out->capacity_bytes = bytes;
	/* Kubernetes refuses a volume smaller than the claim asked for; the
	 * volume is read-only, so offering the larger number promises no
	 * writable space. */
	if (req->has_capacity && req->required_bytes > bytes)
		out->capacity_bytes = req->required_bytes;
	if (req->has_capacity && req->limit_bytes && bytes > req->limit_bytes) {
		rc = error_set(err, ERR_RANGE,
			       "dataset '%s' holds %lld bytes, above capacity_range.limit_bytes %lld",
			       out->id, (long long)bytes, (long long)req->limit_bytes);
		if (!existed) {
			struct error ignored;

			if (meta_client_delete(c->meta, out->id, &ignored) != ERR_OK)
				log_warn("cannot remove the dataset of a refused volume",
					 LOG_S("dataset", out->id), LOG_S("cause", ignored.msg));
			remove_files(c, out->id);
		}
		goto out;
	}
	snprintf(rec.name, sizeof(rec.name), "%s", req->name);
	rec.has_capacity = req->has_capacity;
	rec.required = req->has_capacity ? req->required_bytes : 0;
	rec.limit = req->has_capacity ? req->limit_bytes : 0;
	rc = record_save(c, out->id, &rec, err);
	if (rc == ERR_OK) {
		struct error why;

		log_info("volume created", LOG_S("volume", out->id), LOG_S("source", params.source),
			 LOG_U("files", ds->files), LOG_U("bytes", ds->bytes),
			 LOG_I("capacity_bytes", out->capacity_bytes));
		if (c->on_volume &&
		    c->on_volume(out->id, &params, true, c->on_volume_arg, &why) != ERR_OK)
			log_warn("cannot show the volume as a Dataset", LOG_S("volume", out->id),
				 LOG_S("cause", why.msg));
		/* The registration goes back in the volume context. */
		out->params = params;
		memset(&params, 0, sizeof(params));
	}
out:
	if (ds)
		granary__v1__dataset__free_unpacked(ds, NULL);
	controller_params_release(&params);
	controller_secret_release(&secret);
	return rc;
}

enum error_code controller_delete_volume(struct controller *c, const char *volume_id,
					 struct error *err)
{
	enum error_code rc;

	if (controller_check_id("volume_id", volume_id, err) != ERR_OK)
		return err->code;
	if (c->on_volume && c->on_volume(volume_id, NULL, false, c->on_volume_arg, err) != ERR_OK)
		return error_wrap(err, "delete volume '%s'", volume_id);
	rc = meta_client_delete(c->meta, volume_id, err);
	if (rc == ERR_NOT_FOUND)
		rc = ERR_OK;
	if (rc != ERR_OK)
		return rc;
	remove_files(c, volume_id);
	log_info("volume deleted", LOG_S("volume", volume_id));
	return ERR_OK;
}

enum error_code controller_validate(struct controller *c, const char *volume_id,
				    const struct controller_capability *caps, size_t ncaps,
				    bool *confirmed, char *message, size_t message_size,
				    struct error *err)
{
	Granary__V1__Dataset *ds = NULL;
	struct error why;
	enum error_code rc;
	char what[64];

	*confirmed = false;
	message[0] = '\0';
	if (controller_check_id("volume_id", volume_id, err) != ERR_OK)
		return err->code;
	if (ncaps == 0)
		return error_set(err, ERR_INVALID, "field 'volume_capabilities': required");
	rc = meta_client_get(c->meta, volume_id, &ds, err);
	if (rc != ERR_OK)
		return rc == ERR_NOT_FOUND ? error_set(err, ERR_NOT_FOUND, "volume '%s' not found",
						       volume_id)
					   : rc;
	granary__v1__dataset__free_unpacked(ds, NULL);
	for (size_t i = 0; i < ncaps; i++) {
		snprintf(what, sizeof(what), "volume_capabilities[%zu]", i);
		if (controller_check_capability(&caps[i], what, &why) != ERR_OK) {
			snprintf(message, message_size, "%s", why.msg);
			return ERR_OK;
		}
	}
	*confirmed = true;
	return ERR_OK;
}
