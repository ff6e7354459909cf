/*
 * registry.c - datasets by name, durable under a data dir; listings run
 * without the lock (see registry.h for the design).
 */
#include "meta/registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "block/name.h"
#include "common/array.h"
#include "common/bytes.h"
#include "common/config.h"
#include "common/fileio.h"
#include "common/log.h"
#include "common/retry.h"

#define RECORD_MAGIC "GRNYDS01"
#define RECORD_HEADER (8 + 8 + 8 + 4)
#define RECORD_MAX (1u << 20)

/* One listing in progress, shared with the calls that wait for it. It
 * outlives its dataset entry when the build fails (the entry goes). */
struct build {
	unsigned refs;    /* protected by r->mu */
	bool done;        /* protected by r->mu */
	struct error err; /* the result; protected by r->mu, set when done */
};

struct entry {
	char *name;
	uint8_t *spec;    /* canonical packed DatasetSpec; replaced under r->mu only
			   * by registry_set_options */
	size_t spec_len;
	/* the rest protected by r->mu */
	enum registry_state state;
	uint64_t generation;
	struct snapshot_totals totals;
	int64_t created_ms;
	bool damaged;
	struct build *build; /* set while REGISTERING or REFRESHING */
};

struct registry {
	char *records_dir, *snap_dir;
	struct store_config store; /* points at the strings below */
	char *endpoint, *region, *credentials_file, *profile;
	unsigned max_builds;
	unsigned max_foreign;      /* of max_builds, for endpoints other than store.endpoint */
	char *allowed_endpoints;   /* store.allowed_endpoints; NULL = none */
	struct store_list_limits limits;
	char *file_roots[STORE_FILE_ROOTS_MAX]; /* allowed_file_roots; immutable */
	size_t nfile_roots;
	void (*build_hook)(const char *name, uint64_t generation, void *arg);
	void *hook_arg;

	pthread_mutex_t mu;
	pthread_cond_t cond;      /* a build finished */
	struct entry **entries;   /* protected by mu: sorted by name */
	size_t n, cap;            /* protected by mu */
	unsigned builders;        /* protected by mu: Register/Refresh calls running or waiting */
	unsigned foreign;         /* protected by mu: of builders, listing foreign endpoints */
};

static const char *const state_names[] = {
	[REGISTRY_REGISTERING] = "registering",
	[REGISTRY_READY] = "ready",
	[REGISTRY_REFRESHING] = "refreshing",
};

const char *registry_state_name(enum registry_state state)
{
	if (state < REGISTRY_REGISTERING || state > REGISTRY_REFRESHING)
		return "unknown";
	return state_names[state];
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static const char *str_or_empty(const char *s)
{
	return s ? s : "";
}

/* ---- specs ------------------------------------------------------------- */

static enum error_code check_preload_prefixes(const Granary__V1__DatasetOptions *o,
					      struct error *err)
{
	if (o->n_preload_prefixes && !o->preload)
		return error_set(err, ERR_INVALID,
				 "field 'options.preload_prefixes': names what to preload, but preload is off");
	if (o->n_preload_prefixes > BLOCK_PRELOAD_PREFIXES_MAX)
		return error_set(err, ERR_INVALID,
				 "field 'options.preload_prefixes': %zu prefixes, at most %d",
				 o->n_preload_prefixes, BLOCK_PRELOAD_PREFIXES_MAX);
	for (size_t i = 0; i < o->n_preload_prefixes; i++)
		if (block_preload_prefix_check("", o->preload_prefixes[i], err) != ERR_OK)
			return error_wrap(err, "field 'options.preload_prefixes'");
	return ERR_OK;
}

enum error_code registry_check_spec(const Granary__V1__DatasetSpec *spec, struct error *err)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL;
	const Granary__V1__DatasetOptions *o = spec->options;
	enum error_code rc;
	bool prefix_ok;

	if (block_dataset_name_check(str_or_empty(spec->name), err) != ERR_OK)
		return error_wrap(err, "field 'name'");
	if (store_uri_parse(str_or_empty(spec->source_uri), &scheme, &bucket, &prefix, err) !=
	    ERR_OK)
		return error_wrap(err, "field 'source_uri'");
	prefix_ok = !*prefix || prefix[strlen(prefix) - 1] == '/';
	free(scheme);
	free(bucket);
	free(prefix);
	if (!prefix_ok)
		return error_set(err, ERR_INVALID,
				 "field 'source_uri' '%s': the prefix must end with '/' (%s/)",
				 spec->source_uri, spec->source_uri);
	if (spec->endpoint && *spec->endpoint) {
		rc = store_check_endpoint(spec->endpoint, err);
		if (rc != ERR_OK)
			return error_wrap(err, "field 'endpoint'");
	}
	if (spec->region && store_check_region(spec->region, err) != ERR_OK)
		return error_wrap(err, "field 'region'");
	if (spec->credentials_ref && *spec->credentials_ref && spec->credentials_ref[0] != '/')
		return error_set(err, ERR_INVALID,
				 "field 'credentials_ref' '%s': must be an absolute path to an AWS shared-credentials file, or empty",
				 spec->credentials_ref);
	/* 0 is the workers' default. */
	if (o && o->block_size && block_size_check("field 'options.block_size'", o->block_size, err) != ERR_OK)
		return ERR_INVALID;
	if (o && !protobuf_c_enum_descriptor_get_value(&granary__v1__cache_policy__descriptor,
						       (int)o->cache_policy))
		return error_set(err, ERR_INVALID, "field 'options.cache_policy': unknown value %d",
				 (int)o->cache_policy);
	return o ? check_preload_prefixes(o, err) : ERR_OK;
}

/*
 * Packs spec in one canonical form: options always present, no unknown
 * fields, NULL strings as "". protobuf-c packs fields in number order, so
 * two equal specs give equal bytes and "same spec" is a memcmp.
 */
static enum error_code canonical_pack(const Granary__V1__DatasetSpec *in, uint8_t **buf,
				      size_t *len, struct error *err)
{
	Granary__V1__DatasetSpec s = GRANARY__V1__DATASET_SPEC__INIT;
	Granary__V1__DatasetOptions o = GRANARY__V1__DATASET_OPTIONS__INIT;

	s.name = (char *)str_or_empty(in->name);
	s.source_uri = (char *)str_or_empty(in->source_uri);
	s.endpoint = (char *)str_or_empty(in->endpoint);
	s.region = (char *)str_or_empty(in->region);
	s.credentials_ref = (char *)str_or_empty(in->credentials_ref);
	if (in->options) {
		o.block_size = in->options->block_size;
		o.cache_policy = in->options->cache_policy;
		o.pin = in->options->pin;
		o.preload = in->options->preload;
		o.n_preload_prefixes = in->options->n_preload_prefixes;
		o.preload_prefixes = in->options->preload_prefixes;
	}
	s.options = &o;
	*len = granary__v1__dataset_spec__get_packed_size(&s);
	*buf = malloc(*len ? *len : 1);
	if (!*buf)
		return error_set(err, ERR_NOMEM, "dataset '%s': out of memory", s.name);
	granary__v1__dataset_spec__pack(&s, *buf);
	return ERR_OK;
}

static bool same_prefixes(const Granary__V1__DatasetOptions *a,
			  const Granary__V1__DatasetOptions *b)
{
	if (a->n_preload_prefixes != b->n_preload_prefixes)
		return false;
	for (size_t i = 0; i < a->n_preload_prefixes; i++)
		if (strcmp(a->preload_prefixes[i], b->preload_prefixes[i]) != 0)
			return false;
	return true;
}

/* Names the first field where two specs of the same name differ. */
static enum error_code spec_conflict(const struct entry *e, const Granary__V1__DatasetSpec *b,
				     struct error *err)
{
	Granary__V1__DatasetSpec *a = granary__v1__dataset_spec__unpack(NULL, e->spec_len, e->spec);
	static const Granary__V1__DatasetOptions none = GRANARY__V1__DATASET_OPTIONS__INIT;
	const Granary__V1__DatasetOptions *ao, *bo;
	const char *field = "options";

	if (!a)
		return error_set(err, ERR_EXISTS, "dataset '%s' already exists with another spec",
				 e->name);
	ao = a->options ? a->options : &none;
	bo = b->options ? b->options : &none;
	if (strcmp(str_or_empty(a->source_uri), str_or_empty(b->source_uri)))
		field = "source_uri";
	else if (strcmp(str_or_empty(a->endpoint), str_or_empty(b->endpoint)))
		field = "endpoint";
	else if (strcmp(str_or_empty(a->region), str_or_empty(b->region)))
		field = "region";
	else if (strcmp(str_or_empty(a->credentials_ref), str_or_empty(b->credentials_ref)))
		field = "credentials_ref";
	else if (ao->block_size != bo->block_size)
		field = "options.block_size";
	else if (ao->cache_policy != bo->cache_policy)
		field = "options.cache_policy";
	else if (ao->pin != bo->pin)
		field = "options.pin";
	else if (ao->preload != bo->preload)
		field = "options.preload";
	else if (!same_prefixes(ao, bo))
		field = "options.preload_prefixes";
	error_set(err, ERR_EXISTS,
		  "dataset '%s' already exists with a different spec (field '%s' differs; registered source_uri '%s'): delete it first or use another name",
		  e->name, field, str_or_empty(a->source_uri));
	granary__v1__dataset_spec__free_unpacked(a, NULL);
	return ERR_EXISTS;
}

/* ---- entries ----------------------------------------------------------- */

/* Binary search; *pos is where name is or would go. Called with r->mu held. */
static struct entry *find(const struct registry *r, const char *name, size_t *pos)
{
	size_t lo = 0, hi = r->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(r->entries[mid]->name, name);

		if (c == 0) {
			if (pos)
				*pos = mid;
			return r->entries[mid];
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (pos)
		*pos = lo;
	return NULL;
}

static enum error_code insert(struct registry *r, struct entry *e, size_t pos)
{
	if (array_grow((void **)&r->entries, &r->cap, r->n + 1, sizeof(*r->entries)) < 0)
		return ERR_NOMEM;
	memmove(&r->entries[pos + 1], &r->entries[pos], (r->n - pos) * sizeof(*r->entries));
	r->entries[pos] = e;
	r->n++;
	return ERR_OK;
}

static void entry_free(struct entry *e)
{
	if (!e)
		return;
	free(e->name);
	free(e->spec);
	free(e);
}

static void remove_at(struct registry *r, size_t pos)
{
	entry_free(r->entries[pos]);
	memmove(&r->entries[pos], &r->entries[pos + 1], (r->n - pos - 1) * sizeof(*r->entries));
	r->n--;
}

/* Fills a caller's copy. Called with r->mu held. */
static enum error_code fill(const struct entry *e, struct registry_dataset *out,
			    struct error *err)
{
	memset(out, 0, sizeof(*out));
	out->spec = granary__v1__dataset_spec__unpack(NULL, e->spec_len, e->spec);
	if (!out->spec)
		return error_set(err, ERR_NOMEM, "dataset '%s': out of memory", e->name);
	out->state = e->state;
	out->generation = e->generation;
	out->totals = e->totals;
	out->created_unix_ms = e->created_ms;
	out->damaged = e->damaged;
	return ERR_OK;
}

void registry_dataset_release(struct registry_dataset *d)
{
	if (!d)
		return;
	if (d->spec)
		granary__v1__dataset_spec__free_unpacked(d->spec, NULL);
	d->spec = NULL;
}

/* ---- files ------------------------------------------------------------- */

/* Writes DATA/datasets/NAME atomically and durably (fileio_replace). */
static enum error_code write_record(struct registry *r, const struct entry *e, uint64_t generation,
				    int64_t created_ms, struct error *err)
{
	size_t len = RECORD_HEADER + e->spec_len + 8;
	char *path = NULL;
	uint8_t *buf = malloc(len);
	enum error_code rc;

	if (!buf || asprintf(&path, "%s/%s", r->records_dir, e->name) < 0) {
		free(buf);
		return error_set(err, ERR_NOMEM, "save dataset '%s': out of memory", e->name);
	}
	memcpy(buf, RECORD_MAGIC, 8);
	bytes_put_le64(buf + 8, generation);
	bytes_put_le64(buf + 16, (uint64_t)created_ms);
	bytes_put_le32(buf + 24, (uint32_t)e->spec_len);
	memcpy(buf + RECORD_HEADER, e->spec, e->spec_len);
	bytes_put_le64(buf + RECORD_HEADER + e->spec_len,
		       XXH3_64bits(buf, RECORD_HEADER + e->spec_len));
	rc = fileio_replace(path, buf, len, 0600, err);
	if (rc != ERR_OK)
		error_wrap(err, "save dataset '%s'", e->name);
	free(path);
	free(buf);
	return rc;
}

/* Reads and checks a record; fills a new entry (state READY). */
static enum error_code read_record(const char *path, const char *name, struct entry **out,
				   struct error *err)
{
	struct entry *e = NULL;
	Granary__V1__DatasetSpec *spec = NULL;
	char *text = NULL;
	uint8_t *buf = NULL;
	size_t got = 0;
	uint32_t slen;
	enum error_code rc;

	*out = NULL;
	rc = fileio_read_small(path, RECORD_MAX, &text, &got, err);
	if (rc == ERR_INVALID)
		rc = error_set(err, ERR_IO, "read '%s': not a dataset record (over %u bytes)", path,
			       RECORD_MAX);
	if (rc != ERR_OK)
		goto out;
	buf = (uint8_t *)text;
	if (got < RECORD_HEADER + 8) {
		rc = error_set(err, ERR_IO, "read '%s': not a dataset record (%zu bytes)", path, got);
		goto out;
	}
	slen = bytes_get_le32(buf + 24);
	if (memcmp(buf, RECORD_MAGIC, 8) != 0 ||
	    (size_t)slen + RECORD_HEADER + 8 != got ||
	    bytes_get_le64(buf + got - 8) != XXH3_64bits(buf, got - 8)) {
		rc = error_set(err, ERR_IO, "read '%s': corrupt dataset record (bad magic, length or checksum)",
			       path);
		goto out;
	}
	spec = granary__v1__dataset_spec__unpack(NULL, slen, buf + RECORD_HEADER);
	if (!spec || strcmp(str_or_empty(spec->name), name) != 0) {
		rc = error_set(err, ERR_IO, "read '%s': the record's spec is not dataset '%s'", path,
			       name);
		goto out;
	}
	rc = registry_check_spec(spec, err);
	if (rc != ERR_OK) {
		error_wrap(err, "read '%s'", path);
		rc = ERR_IO;
		goto out;
	}
	e = calloc(1, sizeof(*e));
	if (!e || !(e->name = strdup(name)) || !(e->spec = malloc(slen ? slen : 1))) {
		entry_free(e);
		e = NULL;
		rc = error_set(err, ERR_NOMEM, "read '%s': out of memory", path);
		goto out;
	}
	memcpy(e->spec, buf + RECORD_HEADER, slen);
	e->spec_len = slen;
	e->state = REGISTRY_READY;
	e->generation = bytes_get_le64(buf + 8);
	e->created_ms = (int64_t)bytes_get_le64(buf + 16);
	if (e->generation == 0) {
		entry_free(e);
		e = NULL;
		rc = error_set(err, ERR_IO, "read '%s': generation 0 in a record", path);
		goto out;
	}
	*out = e;
	rc = ERR_OK;
out:
	if (spec)
		granary__v1__dataset_spec__free_unpacked(spec, NULL);
	free(buf);
	return rc;
}

/*
 * Removes snapshot files of name outside [keep_min, keep_max] and leftover
 * temporary files; keep_max 0 removes everything and the directory.
 * Called with r->mu held and no build of name running.
 */
static void prune_snapshots(struct registry *r, const char *name, uint64_t keep_min,
			    uint64_t keep_max)
{
	char dir[4096], path[4400];
	struct dirent *de;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/%s", r->snap_dir, name);
	d = opendir(dir);
	if (!d)
		return;
	while ((de = readdir(d))) {
		unsigned long long gen;
		char tail[8];

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (keep_max && de->d_name[0] != '.' &&
		    sscanf(de->d_name, "%llu.sna%1[p]", &gen, tail) == 2 && gen >= keep_min &&
		    gen <= keep_max)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) < 0 && errno != ENOENT)
			log_warn("cannot remove snapshot file", LOG_S("path", path),
				 LOG_S("cause", strerror(errno)));
	}
	closedir(d);
	if (!keep_max && rmdir(dir) < 0 && errno != ENOENT)
		log_warn("cannot remove snapshot directory", LOG_S("path", dir),
			 LOG_S("cause", strerror(errno)));
}

/* ---- open and load ----------------------------------------------------- */

static void load_snapshot(struct registry *r, struct entry *e)
{
	char *path = snapshot_file_path(r->snap_dir, e->name, e->generation);
	struct snapshot *snap = NULL;
	struct error err;

	if (!path || snapshot_load(path, &snap, &err) != ERR_OK) {
		e->damaged = true;
		log_error("dataset snapshot unreadable: RefreshDataset rebuilds it",
			  LOG_S("dataset", e->name), LOG_U("generation", e->generation),
			  LOG_S("cause", path ? err.msg : "out of memory"));
	} else if (snapshot_generation(snap) != e->generation ||
		   strcmp(snapshot_name(snap), e->name) != 0) {
		e->damaged = true;
		log_error("dataset snapshot is of another dataset or generation",
			  LOG_S("dataset", e->name), LOG_U("generation", e->generation),
			  LOG_S("path", path));
	} else {
		snapshot_totals(snap, &e->totals);
	}
	snapshot_free(snap);
	free(path);
}

/*
 * A file:// source is a directory of meta's host, which anyone who reaches
 * meta could otherwise have listed and every pod mounting it read: only
 * under allowed_file_roots (store_file_root_check). With missing_ok, a
 * directory written under a root that is not there (now) passes: a record
 * loaded at start-up keeps its snapshot, a registration of a spec already
 * registered needs no source, and a listing names the missing directory.
 */
static enum error_code check_file_source(const struct registry *r, const char *uri,
					 bool missing_ok, struct error *err)
{
	enum error_code rc;

	rc = store_file_root_check(uri, (const char *const *)r->file_roots, r->nfile_roots, err);
	if (rc == ERR_OK || (missing_ok && rc != ERR_INVALID))
		return ERR_OK;
	err->code = ERR_INVALID;
	return error_wrap(err, "field 'source_uri'");
}

/*
 * Meta lists a dataset with its own credentials, or with any file a csi
 * caller names as credentials_ref: only at store.endpoint and the endpoints
 * of store.allowed_endpoints (store_endpoint_check), so that a registration
 * sends nothing to an address of the registrant's choice.
 */
static enum error_code check_endpoint(const struct registry *r,
				      const Granary__V1__DatasetSpec *spec, struct error *err)
{
	if (store_endpoint_check(spec->source_uri, spec->endpoint, r->endpoint,
				 r->allowed_endpoints, err) == ERR_OK)
		return ERR_OK;
	return error_wrap(err, "field 'endpoint'");
}

/* The same for a record read at start-up. */
static enum error_code check_record_source(const struct registry *r, const struct entry *e,
					   struct error *err)
{
	Granary__V1__DatasetSpec *spec;
	enum error_code rc;

	spec = granary__v1__dataset_spec__unpack(NULL, e->spec_len, e->spec);
	if (!spec)
		return error_set(err, ERR_NOMEM, "dataset '%s': out of memory", e->name);
	rc = check_file_source(r, spec->source_uri, true, err);
	if (rc == ERR_OK)
		rc = check_endpoint(r, spec, err);
	granary__v1__dataset_spec__free_unpacked(spec, NULL);
	return rc;
}

static enum error_code load_all(struct registry *r, struct error *err)
{
	struct dirent *de;
	DIR *d;
	int saved;

	d = opendir(r->records_dir);
	if (!d) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "open '%s': %s", r->records_dir,
				 strerror(saved));
	}
	while ((de = readdir(d))) {
		char path[4400];
		struct entry *e = NULL;
		struct error rerr;
		size_t pos;

		if (de->d_name[0] == '.') {
			/* A temporary record a crash left behind. */
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				snprintf(path, sizeof(path), "%s/%s", r->records_dir, de->d_name);
				unlink(path);
			}
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", r->records_dir, de->d_name);
		if (block_dataset_name_check(de->d_name, &rerr) != ERR_OK ||
		    read_record(path, de->d_name, &e, &rerr) != ERR_OK ||
		    check_record_source(r, e, &rerr) != ERR_OK) {
			log_error("dataset record skipped", LOG_S("path", path),
				  LOG_S("cause", rerr.msg));
			entry_free(e);
			continue;
		}
		if (find(r, e->name, &pos) || insert(r, e, pos) != ERR_OK) {
			entry_free(e);
			closedir(d);
			return error_set(err, ERR_NOMEM, "load '%s': out of memory", path);
		}
		load_snapshot(r, e);
		prune_snapshots(r, e->name, e->generation > 1 ? e->generation - 1 : 1,
				e->generation);
		log_info("dataset loaded", LOG_S("dataset", e->name),
			 LOG_U("generation", e->generation), LOG_U("files", e->totals.files),
			 LOG_U("bytes", e->totals.bytes), LOG_S("damaged", e->damaged ? "yes" : "no"));
	}
	closedir(d);

	/* Snapshot directories no record names: a crash mid-registration. */
	d = opendir(r->snap_dir);
	if (!d) {
		saved = errno;
		return error_set(err, error_from_errno(saved), "open '%s': %s", r->snap_dir,
				 strerror(saved));
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || find(r, de->d_name, NULL))
			continue;
		log_info("removing snapshots of an unregistered dataset", LOG_S("dataset", de->d_name));
		prune_snapshots(r, de->d_name, 0, 0);
	}
	closedir(d);
	return ERR_OK;
}

/* Whether spec names an endpoint other than store.endpoint (an empty one is
 * store.endpoint's): such listings take at most max_foreign slots. */
static bool foreign_endpoint(const struct registry *r, const Granary__V1__DatasetSpec *spec)
{
	return store_endpoint_check(spec->source_uri, spec->endpoint, r->endpoint, NULL, NULL) !=
	       ERR_OK;
}

enum error_code registry_open(const struct registry_options *opt, struct registry **out,
			      struct error *err)
{
	static const struct store_config no_store;
	const struct store_config *sc = opt->store ? opt->store : &no_store;
	struct registry *r = NULL;
	enum error_code rc;

	*out = NULL;
	if (!opt->data_dir || opt->data_dir[0] != '/')
		return error_set(err, ERR_INVALID, "data dir '%s': must be an absolute path",
				 str_or_empty(opt->data_dir));
	r = calloc(1, sizeof(*r));
	if (!r)
		return error_set(err, ERR_NOMEM, "registry: out of memory");
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cond, NULL);
	r->max_builds = opt->max_builds ? opt->max_builds : 4;
	r->build_hook = opt->build_hook;
	r->hook_arg = opt->hook_arg;
	r->store = *sc;
	r->endpoint = dup_or_null(sc->endpoint && *sc->endpoint ? sc->endpoint : NULL);
	r->region = dup_or_null(sc->region && *sc->region ? sc->region : NULL);
	r->credentials_file = dup_or_null(sc->credentials_file && *sc->credentials_file
						  ? sc->credentials_file
						  : NULL);
	r->profile = dup_or_null(sc->profile && *sc->profile ? sc->profile : NULL);
	r->store.endpoint = r->endpoint;
	r->store.region = r->region;
	r->store.credentials_file = r->credentials_file;
	r->store.profile = r->profile;
	r->store.uniform_errors = true;
	r->limits = opt->limits;
	rc = config_split_dirs("allowed_file_roots", opt->file_roots, r->file_roots,
			       STORE_FILE_ROOTS_MAX, &r->nfile_roots, err);
	if (rc != ERR_OK) {
		registry_free(r);
		return rc;
	}
	r->max_foreign = r->max_builds / 2 ? r->max_builds / 2 : 1;
	if (opt->allowed_endpoints && *opt->allowed_endpoints &&
	    !(r->allowed_endpoints = strdup(opt->allowed_endpoints)))
		goto nomem;
	if (asprintf(&r->records_dir, "%s/datasets", opt->data_dir) < 0) {
		r->records_dir = NULL;
		goto nomem;
	}
	if (asprintf(&r->snap_dir, "%s/snapshots", opt->data_dir) < 0) {
		r->snap_dir = NULL;
		goto nomem;
	}
	rc = fileio_mkdirs(r->records_dir, 0755, err);
	if (rc == ERR_OK)
		rc = fileio_mkdirs(r->snap_dir, 0755, err);
	if (rc == ERR_OK)
		rc = load_all(r, err);
	if (rc != ERR_OK) {
		registry_free(r);
		return rc;
	}
	log_info("registry opened", LOG_S("data_dir", opt->data_dir), LOG_U("datasets", r->n));
	*out = r;
	return ERR_OK;
nomem:
	registry_free(r);
	return error_set(err, ERR_NOMEM, "registry: out of memory");
}

void registry_free(struct registry *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++)
		entry_free(r->entries[i]);
	free(r->entries);
	free(r->records_dir);
	free(r->snap_dir);
	free(r->endpoint);
	free(r->region);
	free(r->credentials_file);
	free(r->profile);
	free(r->allowed_endpoints);
	config_dirs_free(r->file_roots, r->nfile_roots);
	pthread_cond_destroy(&r->cond);
	pthread_mutex_destroy(&r->mu);
	free(r);
}

/* ---- building a generation (no lock held) ------------------------------ */

/*
 * Maps a store error met while opening or listing to what the caller of
 * Register/Refresh should see. Listing errors read "cannot list 'SOURCE'
 * at ENDPOINT: CAUSE": the store's cause is precise for S3 errors and one
 * sentence for everything else (store_config.uniform_errors).
 */
static enum error_code map_store_error(const Granary__V1__DatasetSpec *spec,
				       const char *endpoint, struct error *err, bool opening)
{
	bool has_ref = spec->credentials_ref && *spec->credentials_ref;
	const char *src = spec->source_uri;

	switch (err->code) {
	case ERR_UNAVAILABLE:
		return error_wrap(err, "cannot list '%s' at %s", src, endpoint);
	case ERR_TIMEOUT:
		return error_wrap(err, "cannot list '%s' at %s (limit: listing.max_time)", src,
				  endpoint);
	case ERR_NO_SPACE:
		return error_wrap(err,
				  "cannot list '%s' at %s (limits: listing.max_pages, "
				  "listing.max_objects)",
				  src, endpoint);
	case ERR_PERMISSION:
	case ERR_UNAUTHENTICATED:
		err->code = ERR_PERMISSION;
		if (opening)
			return error_wrap(err, "field 'credentials_ref'");
		return error_wrap(err, "credentials refused listing '%s'", src);
	case ERR_NOT_FOUND:
	case ERR_INVALID:
		err->code = ERR_INVALID;
		if (opening && has_ref)
			return error_wrap(err, "field 'credentials_ref'");
		return error_wrap(err, "field 'source_uri'");
	default:
		return error_wrap(err, "list '%s'", src);
	}
}

static enum error_code build_generation(struct registry *r, const Granary__V1__DatasetSpec *spec,
					uint64_t generation, struct snapshot_totals *totals,
					int64_t *created_ms, struct error *err)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL, *uri = NULL;
	struct store_config cfg = r->store;
	struct store *st = NULL;
	struct snapshot *snap = NULL;
	struct store_stats stats = { 0 };
	uint64_t t0 = retry_now_ms();
	const char *where = "AWS S3";
	enum error_code rc;

	if (r->build_hook)
		r->build_hook(spec->name, generation, r->hook_arg);
	/* Again at each refresh: the directory may have become a link out,
	 * the endpoint may have left store.allowed_endpoints. */
	rc = check_file_source(r, spec->source_uri, false, err);
	if (rc == ERR_OK)
		rc = check_endpoint(r, spec, err);
	if (rc != ERR_OK)
		goto out;
	rc = store_uri_parse(spec->source_uri, &scheme, &bucket, &prefix, err);
	if (rc != ERR_OK)
		goto out;
	if (asprintf(&uri, "%s://%s", scheme, bucket) < 0) {
		uri = NULL;
		rc = error_set(err, ERR_NOMEM, "dataset '%s': out of memory", spec->name);
		goto out;
	}
	if (spec->endpoint && *spec->endpoint)
		cfg.endpoint = spec->endpoint;
	if (spec->region && *spec->region)
		cfg.region = spec->region;
	if (strcmp(scheme, "file") == 0)
		where = "meta's node";
	else if (cfg.endpoint && *cfg.endpoint)
		where = cfg.endpoint;
	if (spec->credentials_ref && *spec->credentials_ref) {
		cfg.credentials_file = spec->credentials_ref;
		cfg.profile = NULL;
	}
	rc = store_open(uri, &cfg, &st, err);
	if (rc != ERR_OK) {
		rc = map_store_error(spec, where, err, true);
		goto out;
	}
	rc = snapshot_build_from_store_limited(st, prefix, spec->name, spec->source_uri,
					       generation, &r->limits, &snap, err);
	store_get_stats(st, &stats);
	if (rc != ERR_OK) {
		rc = map_store_error(spec, where, err, false);
		goto out;
	}
	rc = snapshot_save(snap, r->snap_dir, err);
	if (rc != ERR_OK) {
		error_wrap(err, "dataset '%s'", spec->name);
		goto out;
	}
	snapshot_totals(snap, totals);
	*created_ms = retry_wall_ms();
	log_info("dataset generation built", LOG_S("dataset", spec->name),
		 LOG_U("generation", generation), LOG_U("files", totals->files),
		 LOG_U("dirs", totals->dirs), LOG_U("bytes", totals->bytes),
		 LOG_U("store_requests", stats.requests), LOG_U("ms", retry_now_ms() - t0));
out:
	if (rc == ERR_OK && totals->skipped)
		log_warn("dataset has objects left out: a directory has their name",
			 LOG_S("dataset", spec->name), LOG_U("generation", generation),
			 LOG_U("skipped", totals->skipped));
	if (rc != ERR_OK)
		log_info("dataset build failed", LOG_S("dataset", spec->name),
			 LOG_U("generation", generation), LOG_S("cause", err->msg),
			 LOG_U("store_requests", stats.requests));
	snapshot_free(snap);
	store_free(st);
	free(uri);
	free(scheme);
	free(bucket);
	free(prefix);
	return rc;
}

static struct build *build_new(void)
{
	struct build *b = calloc(1, sizeof(*b));

	if (b)
		b->refs = 1;
	return b;
}

/* Drops one reference. Called with r->mu held. */
static void build_put(struct build *b)
{
	if (--b->refs == 0)
		free(b);
}

/* Publishes a build's result and wakes its waiters. Called with r->mu held. */
static void build_finish(struct registry *r, struct build *b, enum error_code rc,
			 const struct error *err)
{
	b->done = true;
	if (rc == ERR_OK)
		error_clear(&b->err);
	else
		b->err = *err;
	b->err.code = rc;
	pthread_cond_broadcast(&r->cond);
	build_put(b);
}

/* Waits for the build running on e and returns its result (the dataset as
 * it is then). Called with r->mu held; waits on r->cond. */
static enum error_code join_build(struct registry *r, struct entry *e,
				  struct registry_dataset *out, struct error *err)
{
	struct build *b = e->build;
	char name[BLOCK_DATASET_MAX + 1];
	enum error_code rc;

	if (r->builders >= r->max_builds)
		return error_set(err, ERR_UNAVAILABLE,
				 "dataset '%s': %u registrations or refreshes in progress; retry later",
				 e->name, r->builders);
	snprintf(name, sizeof(name), "%s", e->name);
	b->refs++;
	r->builders++;
	while (!b->done)
		pthread_cond_wait(&r->cond, &r->mu);
	r->builders--;
	/* e may be gone: a failed registration removes it. */
	if (b->err.code != ERR_OK) {
		rc = b->err.code;
		if (err)
			*err = b->err;
	} else if ((e = find(r, name, NULL))) {
		rc = fill(e, out, err);
	} else {
		rc = error_set(err, ERR_NOT_FOUND, "dataset '%s' not found (deleted meanwhile)", name);
	}
	build_put(b);
	return rc;
}

/* Whether one more listing may start: ERR_UNAVAILABLE naming the limit
 * that is full. Called with r->mu held. */
static enum error_code admit_build(const struct registry *r, const Granary__V1__DatasetSpec *spec,
				   bool foreign, struct error *err)
{
	if (r->builders >= r->max_builds)
		return error_set(err, ERR_UNAVAILABLE,
				 "dataset '%s': %u registrations or refreshes in progress; retry later",
				 spec->name, r->builders);
	if (foreign && r->foreign >= r->max_foreign)
		return error_set(err, ERR_UNAVAILABLE,
				 "dataset '%s': %u listings of endpoints other than store.endpoint in "
				 "progress, the most at once; retry later",
				 spec->name, r->foreign);
	return ERR_OK;
}

/* ---- the operations ---------------------------------------------------- */

enum error_code registry_register(struct registry *r, const Granary__V1__DatasetSpec *spec,
				  struct registry_dataset *out, struct error *err)
{
	struct error local;
	struct entry *e = NULL, *have;
	struct build *b = NULL;
	struct snapshot_totals totals = { 0 };
	int64_t created = 0;
	enum error_code rc;
	unsigned foreign;
	size_t pos;

	if (!err)
		err = &local;

	memset(out, 0, sizeof(*out));
	rc = registry_check_spec(spec, err);
	if (rc == ERR_OK)
		rc = check_file_source(r, spec->source_uri, true, err);
	if (rc == ERR_OK)
		rc = check_endpoint(r, spec, err);
	if (rc != ERR_OK)
		return rc;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->name = strdup(spec->name))) {
		entry_free(e);
		return error_set(err, ERR_NOMEM, "dataset '%s': out of memory", spec->name);
	}
	rc = canonical_pack(spec, &e->spec, &e->spec_len, err);
	if (rc != ERR_OK) {
		entry_free(e);
		return rc;
	}

	pthread_mutex_lock(&r->mu);
	have = find(r, spec->name, &pos);
	if (have) {
		if (have->spec_len != e->spec_len || memcmp(have->spec, e->spec, e->spec_len) != 0)
			rc = spec_conflict(have, spec, err);
		else if (have->state == REGISTRY_REGISTERING)
			rc = join_build(r, have, out, err);
		else
			rc = fill(have, out, err); /* idempotent */
		pthread_mutex_unlock(&r->mu);
		entry_free(e);
		return rc;
	}
	foreign = foreign_endpoint(r, spec);
	rc = admit_build(r, spec, foreign, err);
	if (rc != ERR_OK) {
		pthread_mutex_unlock(&r->mu);
		entry_free(e);
		return rc;
	}
	b = build_new();
	if (!b || insert(r, e, pos) != ERR_OK) {
		pthread_mutex_unlock(&r->mu);
		free(b);
		entry_free(e);
		return error_set(err, ERR_NOMEM, "dataset '%s': out of memory", spec->name);
	}
	e->state = REGISTRY_REGISTERING;
	e->build = b;
	r->builders++;
	r->foreign += foreign;
	pthread_mutex_unlock(&r->mu);
	log_info("dataset registering", LOG_S("dataset", e->name),
		 LOG_S("source_uri", spec->source_uri));

	/* The listing runs without the lock; e stays put meanwhile (Delete
	 * refuses a dataset being built, Register and Refresh join it). */
	rc = build_generation(r, spec, 1, &totals, &created, err);
	if (rc == ERR_OK)
		rc = write_record(r, e, 1, created, err);

	pthread_mutex_lock(&r->mu);
	r->builders--;
	r->foreign -= foreign;
	e->build = NULL;
	build_finish(r, b, rc, err);
	if (rc == ERR_OK) {
		e->state = REGISTRY_READY;
		e->generation = 1;
		e->totals = totals;
		e->created_ms = created;
		rc = fill(e, out, err);
	} else {
		find(r, e->name, &pos);
		prune_snapshots(r, e->name, 0, 0);
		remove_at(r, pos);
	}
	pthread_mutex_unlock(&r->mu);
	return rc;
}

enum error_code registry_get(struct registry *r, const char *name, struct registry_dataset *out,
			     struct error *err)
{
	struct error local;
	struct entry *e;
	enum error_code rc;

	if (!err)
		err = &local;

	memset(out, 0, sizeof(*out));
	if (block_dataset_name_check(str_or_empty(name), err) != ERR_OK)
		return error_wrap(err, "field 'name'");
	pthread_mutex_lock(&r->mu);
	e = find(r, name, NULL);
	rc = e ? fill(e, out, err) : error_set(err, ERR_NOT_FOUND, "dataset '%s' not found", name);
	pthread_mutex_unlock(&r->mu);
	return rc;
}

enum error_code registry_set_options(struct registry *r, const char *name,
				     const Granary__V1__DatasetOptions *opts,
				     struct registry_dataset *out, struct error *err)
{
	Granary__V1__DatasetSpec *spec = NULL;
	Granary__V1__DatasetOptions none = GRANARY__V1__DATASET_OPTIONS__INIT, *old;
	uint8_t *packed = NULL, *prev;
	size_t len = 0;
	struct entry *e;
	enum error_code rc;

	memset(out, 0, sizeof(*out));
	if (block_dataset_name_check(str_or_empty(name), err) != ERR_OK)
		return error_wrap(err, "field 'name'");
	pthread_mutex_lock(&r->mu);
	e = find(r, name, NULL);
	if (!e) {
		rc = error_set(err, ERR_NOT_FOUND, "dataset '%s' not found", name);
		goto unlock;
	}
	if (e->state != REGISTRY_READY) {
		rc = error_set(err, ERR_UNAVAILABLE, "dataset '%s' is being listed; try again", name);
		goto unlock;
	}
	spec = granary__v1__dataset_spec__unpack(NULL, e->spec_len, e->spec);
	if (!spec) {
		rc = error_set(err, ERR_IO, "dataset '%s': its record does not decode", name);
		goto unlock;
	}
	old = spec->options ? spec->options : &none;
	if (old->block_size != opts->block_size) {
		rc = error_set(err, ERR_INVALID,
			       "field 'options.block_size': dataset '%s' keeps %llu (its blocks' keys depend on it)",
			       name, (unsigned long long)old->block_size);
		goto unlock;
	}
	/* Only the options that change no block nor the listing. */
	spec->options = (Granary__V1__DatasetOptions *)opts;
	rc = registry_check_spec(spec, err);
	if (rc == ERR_OK)
		rc = canonical_pack(spec, &packed, &len, err);
	spec->options = old == &none ? NULL : old;
	if (rc != ERR_OK)
		goto unlock;
	prev = e->spec;
	{
		size_t prev_len = e->spec_len;

		e->spec = packed;
		e->spec_len = len;
		rc = write_record(r, e, e->generation, e->created_ms, err);
		if (rc != ERR_OK) {
			e->spec = prev;
			e->spec_len = prev_len;
			free(packed);
			goto unlock;
		}
	}
	free(prev);
	rc = fill(e, out, err);
	log_info("dataset options changed", LOG_S("dataset", name),
		 LOG_U("cache_policy", (uint64_t)opts->cache_policy), LOG_I("pin", opts->pin),
		 LOG_I("preload", opts->preload), LOG_U("preload_prefixes", opts->n_preload_prefixes));
unlock:
	pthread_mutex_unlock(&r->mu);
	if (spec)
		granary__v1__dataset_spec__free_unpacked(spec, NULL);
	return rc;
}

void registry_list_free(struct registry_dataset *list, size_t n)
{
	if (!list)
		return;
	for (size_t i = 0; i < n; i++)
		registry_dataset_release(&list[i]);
	free(list);
}

enum error_code registry_list(struct registry *r, struct registry_dataset **out, size_t *n,
			      struct error *err)
{
	struct registry_dataset *list;
	enum error_code rc = ERR_OK;
	size_t i;

	*out = NULL;
	*n = 0;
	pthread_mutex_lock(&r->mu);
	list = calloc(r->n ? r->n : 1, sizeof(*list));
	if (!list) {
		pthread_mutex_unlock(&r->mu);
		return error_set(err, ERR_NOMEM, "list datasets: out of memory");
	}
	for (i = 0; i < r->n && rc == ERR_OK; i++)
		rc = fill(r->entries[i], &list[i], err);
	pthread_mutex_unlock(&r->mu);
	if (rc != ERR_OK) {
		registry_list_free(list, i);
		return rc;
	}
	*out = list;
	*n = i;
	return ERR_OK;
}

enum error_code registry_delete(struct registry *r, const char *name, struct error *err)
{
	struct error local;
	struct entry *e;
	char *path = NULL;
	enum error_code rc;
	size_t pos;
	int saved;

	if (!err)
		err = &local;

	if (block_dataset_name_check(str_or_empty(name), err) != ERR_OK)
		return error_wrap(err, "field 'name'");
	pthread_mutex_lock(&r->mu);
	e = find(r, name, &pos);
	if (!e) {
		rc = error_set(err, ERR_NOT_FOUND, "dataset '%s' not found", name);
		goto out;
	}
	if (e->build) {
		rc = error_set(err, ERR_UNAVAILABLE, "dataset '%s' is %s; delete it when that is done",
			       name, state_names[e->state]);
		goto out;
	}
	if (asprintf(&path, "%s/%s", r->records_dir, name) < 0) {
		path = NULL;
		rc = error_set(err, ERR_NOMEM, "delete '%s': out of memory", name);
		goto out;
	}
	/* The record goes first: from here on the dataset is gone. */
	if (unlink(path) < 0 && errno != ENOENT) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "delete dataset '%s': unlink '%s': %s",
			       name, path, strerror(saved));
		goto out;
	}
	rc = fileio_sync_dir(r->records_dir, err);
	if (rc != ERR_OK)
		goto out;
	prune_snapshots(r, name, 0, 0);
	remove_at(r, pos);
	log_info("dataset deleted", LOG_S("dataset", name));
out:
	pthread_mutex_unlock(&r->mu);
	free(path);
	return rc;
}

enum error_code registry_refresh(struct registry *r, const char *name,
				 struct registry_dataset *out, struct error *err)
{
	struct error local;
	Granary__V1__DatasetSpec *spec = NULL;
	struct snapshot_totals totals = { 0 };
	int64_t created = 0;
	struct build *b;
	struct entry *e;
	uint64_t generation;
	unsigned foreign;
	enum error_code rc;

	if (!err)
		err = &local;

	memset(out, 0, sizeof(*out));
	if (block_dataset_name_check(str_or_empty(name), err) != ERR_OK)
		return error_wrap(err, "field 'name'");
	pthread_mutex_lock(&r->mu);
	e = find(r, name, NULL);
	if (!e) {
		rc = error_set(err, ERR_NOT_FOUND, "dataset '%s' not found", name);
		goto unlock;
	}
	if (e->build) {
		rc = join_build(r, e, out, err);
		goto unlock;
	}
	spec = granary__v1__dataset_spec__unpack(NULL, e->spec_len, e->spec);
	if (!spec) {
		rc = error_set(err, ERR_NOMEM, "refresh '%s': out of memory", name);
		goto unlock;
	}
	foreign = foreign_endpoint(r, spec);
	rc = admit_build(r, spec, foreign, err);
	if (rc != ERR_OK)
		goto unlock;
	b = build_new();
	if (!b) {
		rc = error_set(err, ERR_NOMEM, "refresh '%s': out of memory", name);
		goto unlock;
	}
	e->build = b;
	e->state = REGISTRY_REFRESHING;
	generation = e->generation + 1;
	r->builders++;
	r->foreign += foreign;
	pthread_mutex_unlock(&r->mu);

	rc = build_generation(r, spec, generation, &totals, &created, err);
	if (rc == ERR_OK)
		rc = write_record(r, e, generation, created, err);

	pthread_mutex_lock(&r->mu);
	r->builders--;
	r->foreign -= foreign;
	e->build = NULL;
	e->state = REGISTRY_READY;
	build_finish(r, b, rc, err);
	if (rc == ERR_OK) {
		e->generation = generation;
		e->totals = totals;
		e->created_ms = created;
		e->damaged = false;
		rc = fill(e, out, err);
	}
	/* Keep the current generation and the one before; drop a new file
	 * whose record could not be written. */
	prune_snapshots(r, name, e->generation > 1 ? e->generation - 1 : 1, e->generation);
unlock:
	pthread_mutex_unlock(&r->mu);
	if (spec)
		granary__v1__dataset_spec__free_unpacked(spec, NULL);
	return rc;
}

enum error_code registry_read_snapshot(struct registry *r, const char *name, uint64_t generation,
				       size_t chunk, registry_chunk_fn fn, void *arg,
				       struct error *err)
{
	struct error local;
	struct entry *e;
	char *path = NULL;
	uint8_t *buf = NULL;
	uint64_t current = 0, total = 0, off = 0;
	struct stat sb;
	enum error_code rc = ERR_OK;
	int fd = -1, saved;

	if (!err)
		err = &local;

	if (block_dataset_name_check(str_or_empty(name), err) != ERR_OK)
		return error_wrap(err, "field 'name'");
	if (chunk == 0)
		chunk = 1u << 20;
	pthread_mutex_lock(&r->mu);
	e = find(r, name, NULL);
	if (!e) {
		rc = error_set(err, ERR_NOT_FOUND, "dataset '%s' not found", name);
	} else if (e->state == REGISTRY_REGISTERING) {
		rc = error_set(err, ERR_UNAVAILABLE,
			       "dataset '%s' is being registered: no snapshot yet", name);
	} else {
		current = e->generation;
		if (generation == 0)
			generation = current;
		if (generation > current)
			rc = error_set(err, ERR_NOT_FOUND,
				       "dataset '%s' has no generation %llu (current is %llu)", name,
				       (unsigned long long)generation,
				       (unsigned long long)current);
		else if (generation == current && e->damaged)
			rc = error_set(err, ERR_IO,
				       "snapshot of dataset '%s' generation %llu did not load at start-up; RefreshDataset rebuilds it",
				       name, (unsigned long long)generation);
	}
	if (rc == ERR_OK) {
		path = snapshot_file_path(r->snap_dir, name, generation);
		if (!path) {
			rc = error_set(err, ERR_NOMEM, "snapshot of '%s': out of memory", name);
		} else if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
			saved = errno;
			if (saved == ENOENT)
				rc = error_set(err, ERR_NOT_FOUND,
					       "dataset '%s' generation %llu is no longer kept (current is %llu)",
					       name, (unsigned long long)generation,
					       (unsigned long long)current);
			else
				rc = error_set(err, error_from_errno(saved), "open '%s': %s", path,
					       strerror(saved));
		}
	}
	/* The open fd keeps the file readable whatever happens to it now. */
	pthread_mutex_unlock(&r->mu);
	if (rc != ERR_OK)
		goto out;
	if (fstat(fd, &sb) < 0) {
		saved = errno;
		rc = error_set(err, error_from_errno(saved), "stat '%s': %s", path, strerror(saved));
		goto out;
	}
	total = (uint64_t)sb.st_size;
	buf = malloc(chunk);
	if (!buf) {
		rc = error_set(err, ERR_NOMEM, "snapshot of '%s': out of memory", name);
		goto out;
	}
	while (off < total) {
		size_t want = total - off < chunk ? (size_t)(total - off) : chunk, got = 0;

		while (got < want) {
			ssize_t n = pread(fd, buf + got, want - got, (off_t)(off + got));

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				saved = errno;
				rc = error_set(err, ERR_IO, "read '%s': %s", path, strerror(saved));
				goto out;
			}
			if (n == 0) {
				rc = error_set(err, ERR_IO, "read '%s': file ends at %llu of %llu bytes",
					       path, (unsigned long long)(off + got),
					       (unsigned long long)total);
				goto out;
			}
			got += (size_t)n;
		}
		rc = fn(generation, total, off, buf, got, arg, err);
		if (rc != ERR_OK)
			goto out;
		off += got;
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	free(path);
	return rc;
}
