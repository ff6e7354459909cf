/*
 * config.c - YAML configuration with command-line overrides.
 *
 * The YAML is read with libyaml's document API: it resolves anchors and
 * aliases for us and gives every node its line, which is all the messages
 * need. Every value, from a file, a flag or a default, goes through the same
 * convert() so the three sources cannot disagree on what "4MiB" means.
 */
#include "common/config.h"

#include "common/fileio.h"
#include "common/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <yaml.h>

/* A config file is a few kilobytes; this only stops a wrong path (a disk
 * image, /dev/zero) from eating memory before the YAML parser refuses it. */
#define CONFIG_FILE_MAX (16u << 20)

/* One parsed value, held apart from the settings struct so that a value that
 * fails its range check never lands there. */
union config_value {
	char *s;
	bool b;
	int64_t i;
	uint64_t u;
	double d;
	int e;
};

struct unit {
	const char *name;
	uint64_t mult;
};

/* Lone k/m/g/t are 1024-based: "64k" next to a block size means 65536. */
static const struct unit size_units[] = {
	{ "", 1 },
	{ "b", 1 },
	{ "k", 1ull << 10 },
	{ "kib", 1ull << 10 },
	{ "kb", 1000ull },
	{ "m", 1ull << 20 },
	{ "mib", 1ull << 20 },
	{ "mb", 1000000ull },
	{ "g", 1ull << 30 },
	{ "gib", 1ull << 30 },
	{ "gb", 1000000000ull },
	{ "t", 1ull << 40 },
	{ "tib", 1ull << 40 },
	{ "tb", 1000000000000ull },
};

static const struct unit duration_units[] = {
	{ "", 1000 }, /* a bare number is seconds, as in most daemons' flags */
	{ "ms", 1 },
	{ "s", 1000 },
	{ "m", 60 * 1000 },
	{ "h", 60 * 60 * 1000 },
};

/*
 * Parses DIGITS[.DIGITS][ ]UNIT. The fraction is kept exactly (up to 18
 * digits, the rest truncated) and the product is computed in 128 bits, so
 * "1.5GiB" is exact and "16384PiB"-sized inputs are caught as overflow
 * instead of wrapping. Returns ERR_INVALID for syntax, ERR_RANGE for
 * values above UINT64_MAX.
 */
static enum error_code parse_scaled(const char *text, const struct unit *units,
				    size_t nunits, uint64_t *out)
{
	const char *p = text;
	uint64_t whole = 0, frac = 0, den = 1;
	bool overflow = false;
	const struct unit *unit = NULL;
	const char *q;
	unsigned __int128 v;
	size_t i;

	if (!isdigit((unsigned char)*p))
		return ERR_INVALID;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (whole > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			whole = whole * 10 + d;
	}
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return ERR_INVALID;
		for (; isdigit((unsigned char)*p); p++) {
			if (den < 1000000000000000000ull) {
				frac = frac * 10 + (uint64_t)(*p - '0');
				den *= 10;
			}
		}
	}
	/* "4 MiB" reads naturally; a trailing space alone is still junk. */
	for (q = p; *q == ' '; q++)
		;
	if (*q != '\0')
		p = q;
	for (i = 0; i < nunits; i++) {
		if (strcasecmp(p, units[i].name) == 0) {
			unit = &units[i];
			break;
		}
	}
	if (!unit)
		return ERR_INVALID;
	if (overflow)
		return ERR_RANGE;
	v = (unsigned __int128)whole * unit->mult +
	    (unsigned __int128)frac * unit->mult / den;
	if (v > UINT64_MAX)
		return ERR_RANGE;
	*out = (uint64_t)v;
	return ERR_OK;
}

enum error_code config_parse_size(const char *text, uint64_t *out)
{
	if (!text)
		return ERR_INVALID;
	return parse_scaled(text, size_units,
			    sizeof(size_units) / sizeof(size_units[0]), out);
}

enum error_code config_parse_duration_ms(const char *text, uint64_t *out)
{
	if (!text)
		return ERR_INVALID;
	return parse_scaled(text, duration_units,
			    sizeof(duration_units) / sizeof(duration_units[0]),
			    out);
}

enum error_code config_parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };
	size_t i;

	if (!text)
		return ERR_INVALID;
	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = true;
			return ERR_OK;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = false;
			return ERR_OK;
		}
	}
	return ERR_INVALID;
}

/* strtoll would also take leading blanks, '+' and trailing junk checks by
 * hand anyway; a digit loop states the accepted form exactly. */
static enum error_code parse_int64(const char *text, int64_t *out)
{
	const char *p = text;
	uint64_t mag = 0;
	bool neg = false, overflow = false;

	if (*p == '-') {
		neg = true;
		p++;
	}
	if (!isdigit((unsigned char)*p))
		return ERR_INVALID;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (mag > (UINT64_MAX - d) / 10)
			overflow = true;
		else
			mag = mag * 10 + d;
	}
	if (*p != '\0')
		return ERR_INVALID;
	if (overflow || mag > (uint64_t)INT64_MAX + (neg ? 1 : 0))
		return ERR_RANGE;
	if (neg)
		*out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
	else
		*out = (int64_t)mag;
	return ERR_OK;
}

static enum error_code parse_double(const char *text, double *out)
{
	char *end = NULL;
	double d;

	/* strtod skips leading blanks; a value with them is a typo. */
	if (*text == '\0' || isspace((unsigned char)*text))
		return ERR_INVALID;
	errno = 0;
	d = strtod(text, &end);
	if (*end != '\0')
		return ERR_INVALID;
	if (errno == ERANGE || !isfinite(d))
		return ERR_RANGE;
	*out = d;
	return ERR_OK;
}

static const char *type_name(const struct config_field *f)
{
	switch (f->type) {
	case CONFIG_STRING:
		return "STRING";
	case CONFIG_BOOL:
		return "BOOL";
	case CONFIG_INT:
		return "INT";
	case CONFIG_SIZE:
		return "SIZE";
	case CONFIG_DURATION:
		return "DURATION";
	case CONFIG_DOUBLE:
		return "NUMBER";
	case CONFIG_ENUM:
		return "ENUM";
	}
	return "VALUE";
}

/* Bounds are doubles in the table; integral ones print as integers so that
 * a size limit reads "1073741824", not "1.07374e+09". */
static void format_bound(char *buf, size_t len, double v)
{
	if (v == floor(v) && fabs(v) < 1e18)
		snprintf(buf, len, "%.0f", v);
	else
		snprintf(buf, len, "%g", v);
}

static enum error_code check_bounds(const struct config_field *f, double v,
				    const char *text, char *why, size_t whylen)
{
	char lo[64], hi[64];
	const char *unit = "";

	if (f->min == 0 && f->max == 0)
		return ERR_OK;
	if (v >= f->min && v <= f->max)
		return ERR_OK;
	format_bound(lo, sizeof(lo), f->min);
	format_bound(hi, sizeof(hi), f->max);
	if (f->type == CONFIG_SIZE)
		unit = " bytes";
	else if (f->type == CONFIG_DURATION)
		unit = "ms";
	snprintf(why, whylen, "out of range: must be between %s and %s%s, got '%s'",
		 lo, hi, unit, text);
	return ERR_INVALID;
}

static void list_choices(const struct config_field *f, char *buf, size_t len,
			 const char *sep, const char *quote)
{
	size_t used = 0;
	size_t i;

	buf[0] = '\0';
	for (i = 0; f->choices && f->choices[i]; i++) {
		int n = snprintf(buf + used, len - used, "%s%s%s%s",
				 i ? sep : "", quote, f->choices[i], quote);

		if (n < 0 || (size_t)n >= len - used)
			break; /* truncated list; the message is still useful */
		used += (size_t)n;
	}
}

/*
 * Converts text to f's type into *v and checks its bounds; on failure fills
 * why with what is wrong (without the key or the place: callers add those,
 * as they differ between files and flags). text NULL means YAML null.
 * On success with CONFIG_STRING, v->s is a heap copy the caller owns.
 */
static enum error_code convert(const struct config_field *f, const char *text,
			       union config_value *v, char *why, size_t whylen)
{
	enum error_code rc;
	char choices[256];
	size_t i;

	if (f->type == CONFIG_STRING) {
		/* Daemons never see NULL strings: null and "" both give "". */
		v->s = strdup(text ? text : "");
		if (!v->s) {
			snprintf(why, whylen, "out of memory");
			return ERR_NOMEM;
		}
		return ERR_OK;
	}
	if (!text)
		text = "";
	switch (f->type) {
	case CONFIG_STRING:
		break;
	case CONFIG_BOOL:
		if (config_parse_bool(text, &v->b) != ERR_OK) {
			snprintf(why, whylen,
				 "expected true or false (or yes/no, on/off, 1/0), got '%s'",
				 text);
			return ERR_INVALID;
		}
		return ERR_OK;
	case CONFIG_INT:
		rc = parse_int64(text, &v->i);
		if (rc == ERR_RANGE) {
			snprintf(why, whylen,
				 "out of range: must be between %lld and %lld, got '%s'",
				 (long long)INT64_MIN, (long long)INT64_MAX, text);
			return ERR_INVALID;
		}
		if (rc != ERR_OK) {
			snprintf(why, whylen, "expected an integer, got '%s'", text);
			return ERR_INVALID;
		}
		return check_bounds(f, (double)v->i, text, why, whylen);
	case CONFIG_SIZE:
		rc = config_parse_size(text, &v->u);
		if (rc == ERR_RANGE) {
			snprintf(why, whylen,
				 "out of range: size '%s' does not fit in 64 bits",
				 text);
			return ERR_INVALID;
		}
		if (rc != ERR_OK) {
			snprintf(why, whylen,
				 "expected a size like 4MiB, 1.5GB or 4096, got '%s'",
				 text);
			return ERR_INVALID;
		}
		return check_bounds(f, (double)v->u, text, why, whylen);
	case CONFIG_DURATION:
		rc = config_parse_duration_ms(text, &v->u);
		if (rc == ERR_RANGE) {
			snprintf(why, whylen,
				 "out of range: duration '%s' does not fit in 64 bits of milliseconds",
				 text);
			return ERR_INVALID;
		}
		if (rc != ERR_OK) {
			snprintf(why, whylen,
				 "expected a duration like 250ms, 30s, 5m or 1h, got '%s'",
				 text);
			return ERR_INVALID;
		}
		return check_bounds(f, (double)v->u, text, why, whylen);
	case CONFIG_DOUBLE:
		rc = parse_double(text, &v->d);
		if (rc == ERR_RANGE) {
			snprintf(why, whylen, "out of range: '%s' is not a finite number",
				 text);
			return ERR_INVALID;
		}
		if (rc != ERR_OK) {
			snprintf(why, whylen, "expected a number, got '%s'", text);
			return ERR_INVALID;
		}
		return check_bounds(f, v->d, text, why, whylen);
	case CONFIG_ENUM:
		for (i = 0; f->choices && f->choices[i]; i++) {
			if (strcasecmp(text, f->choices[i]) == 0) {
				v->e = (int)i;
				return ERR_OK;
			}
		}
		list_choices(f, choices, sizeof(choices), ", ", "'");
		snprintf(why, whylen, "expected one of %s, got '%s'", choices,
			 text);
		return ERR_INVALID;
	}
	snprintf(why, whylen, "field has an unknown type %d", (int)f->type);
	return ERR_INTERNAL;
}

static void store(const struct config_field *f, void *obj,
		  const union config_value *v)
{
	char *p = (char *)obj + f->offset;

	switch (f->type) {
	case CONFIG_STRING:
		free(*(char **)p);
		*(char **)p = v->s;
		break;
	case CONFIG_BOOL:
		*(bool *)p = v->b;
		break;
	case CONFIG_INT:
		*(int64_t *)p = v->i;
		break;
	case CONFIG_SIZE:
	case CONFIG_DURATION:
		*(uint64_t *)p = v->u;
		break;
	case CONFIG_DOUBLE:
		*(double *)p = v->d;
		break;
	case CONFIG_ENUM:
		*(int *)p = v->e;
		break;
	}
}

/* Converts and, only if that worked, stores: a bad value leaves the field
 * as it was. */
static enum error_code assign(const struct config_field *f, void *obj,
			      const char *text, char *why, size_t whylen)
{
	union config_value v;
	enum error_code rc;

	memset(&v, 0, sizeof(v));
	rc = convert(f, text, &v, why, whylen);
	if (rc != ERR_OK)
		return rc;
	store(f, obj, &v);
	return ERR_OK;
}

static const struct config_field *find_field_n(const struct config_schema *schema,
					       const char *key, size_t len)
{
	size_t i;

	for (i = 0; i < schema->nfields; i++) {
		const char *k = schema->fields[i].key;

		if (strlen(k) == len && strncmp(k, key, len) == 0)
			return &schema->fields[i];
	}
	return NULL;
}

static const struct config_field *find_field(const struct config_schema *schema,
					     const char *key)
{
	return find_field_n(schema, key, strlen(key));
}

/* True if some field lives under "prefix.", i.e. prefix names a section. */
static bool is_section(const struct config_schema *schema, const char *prefix)
{
	size_t len = strlen(prefix);
	size_t i;

	for (i = 0; i < schema->nfields; i++) {
		const char *k = schema->fields[i].key;

		if (strncmp(k, prefix, len) == 0 && k[len] == '.')
			return true;
	}
	return false;
}

enum error_code config_apply_defaults(const struct config_schema *schema,
				      void *obj, struct error *err)
{
	char why[ERROR_MSG_MAX];
	enum error_code rc = ERR_OK;
	size_t i;

	/* obj may be fresh stack storage: forget, do not free, what the string
	 * slots hold, so that config_release() is safe from here on. */
	for (i = 0; i < schema->nfields; i++) {
		const struct config_field *f = &schema->fields[i];

		if (f->type == CONFIG_STRING)
			*(char **)((char *)obj + f->offset) = NULL;
	}
	for (i = 0; i < schema->nfields; i++) {
		const struct config_field *f = &schema->fields[i];
		union config_value zero;

		if (!f->def && f->type != CONFIG_STRING) {
			memset(&zero, 0, sizeof(zero));
			store(f, obj, &zero);
			continue;
		}
		rc = assign(f, obj, f->def, why, sizeof(why));
		if (rc != ERR_OK) {
			error_set(err, rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID,
				  "key '%s': bad default in the schema: %s",
				  f->key, why);
			goto fail;
		}
	}
	return ERR_OK;
fail:
	config_release(schema, obj);
	return rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID;
}

enum error_code config_set(const struct config_schema *schema, void *obj,
			   const char *key, const char *value,
			   const char *where, struct error *err)
{
	const struct config_field *f = find_field(schema, key);
	char why[ERROR_MSG_MAX];
	enum error_code rc;
	const char *sep = where && *where ? ": " : "";

	if (!where)
		where = "";
	if (!f)
		return error_set(err, ERR_INVALID, "%s%skey '%s': unknown key",
				 where, sep, key);
	rc = assign(f, obj, value, why, sizeof(why));
	if (rc != ERR_OK)
		return error_set(err, rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID,
				 "%s%skey '%s': %s", where, sep, key, why);
	return ERR_OK;
}

/* State of one YAML load. */
struct loader {
	const struct config_schema *schema;
	void *obj;
	const char *name;
	yaml_document_t *doc;
	size_t *set_on_line; /* per field: line it was set on, 0 = not yet */
	struct error *err;
};

static size_t node_line(const yaml_node_t *node)
{
	return node->start_mark.line + 1;
}

static const char *node_kind(const yaml_node_t *node)
{
	switch (node->type) {
	case YAML_MAPPING_NODE:
		return "a mapping";
	case YAML_SEQUENCE_NODE:
		return "a sequence";
	default:
		return "a scalar";
	}
}

/* Plain ~, null and the empty scalar are YAML null; quoted ones are text. */
static bool is_null(const yaml_node_t *node)
{
	const char *s = (const char *)node->data.scalar.value;

	if (node->type != YAML_SCALAR_NODE ||
	    node->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
	       strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static enum error_code load_scalar(struct loader *ld,
				   const struct config_field *f,
				   const yaml_node_t *node)
{
	size_t idx = (size_t)(f - ld->schema->fields);
	size_t line = node_line(node);
	const char *text = (const char *)node->data.scalar.value;
	char why[ERROR_MSG_MAX];
	enum error_code rc;

	if (ld->set_on_line[idx])
		return error_set(ld->err, ERR_INVALID,
				 "%s:%zu: key '%s': duplicate key (first set on line %zu)",
				 ld->name, line, f->key, ld->set_on_line[idx]);
	if (strlen(text) != node->data.scalar.length)
		return error_set(ld->err, ERR_INVALID,
				 "%s:%zu: key '%s': value contains a NUL byte",
				 ld->name, line, f->key);
	rc = assign(f, ld->obj, is_null(node) ? NULL : text, why, sizeof(why));
	if (rc != ERR_OK)
		return error_set(ld->err, rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID,
				 "%s:%zu: key '%s': %s", ld->name, line, f->key,
				 why);
	ld->set_on_line[idx] = line;
	return ERR_OK;
}

static enum error_code load_mapping(struct loader *ld, const yaml_node_t *map,
				    const char *prefix);

static enum error_code load_pair(struct loader *ld, const yaml_node_t *map,
				 const yaml_node_pair_t *pair,
				 const char *prefix)
{
	const yaml_node_t *k = yaml_document_get_node(ld->doc, pair->key);
	const yaml_node_t *v = yaml_document_get_node(ld->doc, pair->value);
	const struct config_field *f;
	const yaml_node_pair_t *other;
	const char *name;
	char *key = NULL;
	enum error_code rc;

	if (!k || !v || k->type != YAML_SCALAR_NODE)
		return error_set(ld->err, ERR_INVALID,
				 "%s:%zu: keys must be plain names, got %s",
				 ld->name, k ? node_line(k) : node_line(map),
				 k ? node_kind(k) : "nothing");
	name = (const char *)k->data.scalar.value;
	if (asprintf(&key, "%s%s%s", prefix, *prefix ? "." : "", name) < 0)
		return error_set(ld->err, ERR_NOMEM, "%s: out of memory",
				 ld->name);

	/* YAML says keys of one mapping are unique; libyaml does not check. */
	for (other = map->data.mapping.pairs.start; other < pair; other++) {
		const yaml_node_t *ok = yaml_document_get_node(ld->doc, other->key);

		if (ok && ok->type == YAML_SCALAR_NODE &&
		    strcmp((const char *)ok->data.scalar.value, name) == 0) {
			rc = error_set(ld->err, ERR_INVALID,
				       "%s:%zu: key '%s': duplicate key (first on line %zu)",
				       ld->name, node_line(k), key,
				       node_line(ok));
			goto out;
		}
	}

	f = find_field(ld->schema, key);
	if (f) {
		if (v->type != YAML_SCALAR_NODE)
			rc = error_set(ld->err, ERR_INVALID,
				       "%s:%zu: key '%s': expected a %s value, got %s",
				       ld->name, node_line(v), key,
				       type_name(f), node_kind(v));
		else
			rc = load_scalar(ld, f, v);
		goto out;
	}
	if (!is_section(ld->schema, key)) {
		rc = error_set(ld->err, ERR_INVALID, "%s:%zu: key '%s': unknown key",
			       ld->name, node_line(k), key);
		goto out;
	}
	if (v->type == YAML_MAPPING_NODE) {
		rc = load_mapping(ld, v, key);
		goto out;
	}
	/* "store:" with every sub-key commented out is an empty section. */
	if (is_null(v)) {
		rc = ERR_OK;
		goto out;
	}
	if (v->type == YAML_SCALAR_NODE)
		rc = error_set(ld->err, ERR_INVALID,
			       "%s:%zu: key '%s': expected a mapping of '%s.*' keys, got '%s'",
			       ld->name, node_line(v), key, key,
			       (const char *)v->data.scalar.value);
	else
		rc = error_set(ld->err, ERR_INVALID,
			       "%s:%zu: key '%s': expected a mapping of '%s.*' keys, got %s",
			       ld->name, node_line(v), key, key, node_kind(v));
out:
	free(key);
	return rc;
}

/* Recursion depth is bounded by the schema: only a prefix of some field's
 * key descends, so even a self-referencing alias ends in "unknown key". */
static enum error_code load_mapping(struct loader *ld, const yaml_node_t *map,
				    const char *prefix)
{
	const yaml_node_pair_t *pair;
	enum error_code rc;

	for (pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		rc = load_pair(ld, map, pair, prefix);
		if (rc != ERR_OK)
			return rc;
	}
	return ERR_OK;
}

static enum error_code yaml_problem(const yaml_parser_t *parser,
				    const char *name, struct error *err)
{
	size_t line;

	if (parser->error == YAML_MEMORY_ERROR)
		return error_set(err, ERR_NOMEM, "%s: out of memory parsing yaml",
				 name);
	/* Reader errors (bad UTF-8) carry an offset, not a mark. */
	line = parser->error == YAML_READER_ERROR ? parser->mark.line :
						    parser->problem_mark.line;
	if (parser->context)
		return error_set(err, ERR_INVALID,
				 "%s:%zu: malformed yaml: %s %s", name, line + 1,
				 parser->problem ? parser->problem : "error",
				 parser->context);
	return error_set(err, ERR_INVALID, "%s:%zu: malformed yaml: %s", name,
			 line + 1, parser->problem ? parser->problem : "error");
}

/*
 * Refuses a document nested deeper than CONFIG_MAX_DEPTH before it is
 * loaded: yaml_parser_load builds the whole tree first, and libyaml takes
 * time quadratic in the depth to do it (a 100,000-level file held a daemon
 * for tens of seconds). Walking the events stops at the first level too
 * many. Other problems are left to the load that follows, which reports
 * them the usual way.
 */
static enum error_code check_depth(const char *name, const unsigned char *buf,
				   size_t len, struct error *err)
{
	yaml_parser_t parser;
	yaml_event_t ev;
	enum error_code rc = ERR_OK;
	unsigned depth = 0;
	bool done = false;

	if (!yaml_parser_initialize(&parser))
		return error_set(err, ERR_NOMEM, "%s: out of memory", name);
	yaml_parser_set_input_string(&parser, buf, len);
	while (!done && rc == ERR_OK) {
		if (!yaml_parser_parse(&parser, &ev))
			break; /* the load reports it */
		switch (ev.type) {
		case YAML_MAPPING_START_EVENT:
		case YAML_SEQUENCE_START_EVENT:
			if (++depth > CONFIG_MAX_DEPTH)
				rc = error_set(err, ERR_INVALID,
					       "%s:%zu: nested more than %d levels deep",
					       name, ev.start_mark.line + 1,
					       CONFIG_MAX_DEPTH);
			break;
		case YAML_MAPPING_END_EVENT:
		case YAML_SEQUENCE_END_EVENT:
			depth--;
			break;
		case YAML_STREAM_END_EVENT:
			done = true;
			break;
		default:
			break;
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&parser);
	return rc;
}

static enum error_code load_buffer(const struct config_schema *schema,
				   void *obj, const char *name,
				   const unsigned char *buf, size_t len,
				   struct error *err)
{
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	bool parser_ok = false, doc_ok = false;
	struct loader ld;
	yaml_node_t *root;
	enum error_code rc;

	memset(&ld, 0, sizeof(ld));
	ld.set_on_line = calloc(schema->nfields + 1, sizeof(*ld.set_on_line));
	if (!ld.set_on_line) {
		rc = error_set(err, ERR_NOMEM, "%s: out of memory", name);
		goto fail;
	}
	rc = check_depth(name, buf, len, err);
	if (rc != ERR_OK)
		goto fail;
	if (!yaml_parser_initialize(&parser)) {
		rc = error_set(err, ERR_NOMEM, "%s: out of memory", name);
		goto fail;
	}
	parser_ok = true;
	yaml_parser_set_input_string(&parser, buf, len);
	if (!yaml_parser_load(&parser, &doc)) {
		rc = yaml_problem(&parser, name, err);
		goto fail;
	}
	doc_ok = true;

	root = yaml_document_get_root_node(&doc);
	if (!root || is_null(root)) {
		/* Empty, comments only, or a bare "---": nothing to change. */
		rc = ERR_OK;
	} else if (root->type != YAML_MAPPING_NODE) {
		rc = error_set(err, ERR_INVALID,
			       "%s:%zu: expected a mapping of settings at the top level, got %s",
			       name, node_line(root), node_kind(root));
		goto fail;
	} else {
		ld.schema = schema;
		ld.obj = obj;
		ld.name = name;
		ld.doc = &doc;
		ld.err = err;
		rc = load_mapping(&ld, root, "");
		if (rc != ERR_OK)
			goto fail;
	}

	/* A second document would silently be ignored; say so instead. */
	if (root) {
		if (!yaml_parser_load(&parser, &extra)) {
			rc = yaml_problem(&parser, name, err);
			goto fail;
		}
		if (yaml_document_get_root_node(&extra)) {
			rc = error_set(err, ERR_INVALID,
				       "%s:%zu: only one yaml document is allowed",
				       name, extra.start_mark.line + 1);
			yaml_document_delete(&extra);
			goto fail;
		}
		yaml_document_delete(&extra);
	}
fail:
	if (doc_ok)
		yaml_document_delete(&doc);
	if (parser_ok)
		yaml_parser_delete(&parser);
	free(ld.set_on_line);
	return rc;
}

enum error_code config_load_string(const struct config_schema *schema,
				   void *obj, const char *name,
				   const char *yaml, struct error *err)
{
	if (!name)
		name = "<string>";
	if (!yaml)
		yaml = "";
	return load_buffer(schema, obj, name, (const unsigned char *)yaml,
			   strlen(yaml), err);
}

enum error_code config_load_file(const struct config_schema *schema, void *obj,
				 const char *path, struct error *err)
{
	struct error local;
	char *buf = NULL;
	size_t len = 0;
	enum error_code rc;

	/* fileio_read_small reports its code through err; keep one even if the caller
	 * passed none. */
	if (!err)
		err = &local;
	/* Read here so that I/O errors get errno and the path, rather than
	 * libyaml's generic "input error". */
	rc = fileio_read_small(path, CONFIG_FILE_MAX, &buf, &len, err);
	if (rc != ERR_OK)
		return rc;
	rc = load_buffer(schema, obj, path, (const unsigned char *)buf, len,
			 err);
	free(buf);
	return rc;
}

/* One flag as written on the command line. */
struct flag {
	const char *name;  /* after "--"; not NUL-terminated when '=' follows */
	size_t namelen;
	const char *value; /* NULL when none was given */
	int nargs;         /* argv slots taken: 1, or 2 with a separate value */
};

static bool is_help(const char *a)
{
	return strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0;
}

static bool is_version(const char *a)
{
	return strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0;
}

/*
 * Splits argv[i], which starts with "--", into name and value. A separate
 * value is taken from argv[i+1] unless that is another "--" flag (so a
 * forgotten value is reported, not swallowing the next flag); a BOOL takes
 * it only if it reads as a bool, so "--verbose input.txt" leaves the file
 * as a positional.
 */
static void split_flag(const struct config_schema *schema, int argc,
		       char **argv, int i, struct flag *fl)
{
	const char *a = argv[i] + 2;
	const char *eq = strchr(a, '=');
	const struct config_field *f;
	const char *next = i + 1 < argc ? argv[i + 1] : NULL;
	bool b;

	fl->name = a;
	fl->nargs = 1;
	fl->value = NULL;
	if (eq) {
		fl->namelen = (size_t)(eq - a);
		fl->value = eq + 1;
		return;
	}
	fl->namelen = strlen(a);
	if (!next || strncmp(next, "--", 2) == 0)
		return;
	if (strcmp(a, "config") == 0) {
		fl->value = next;
		fl->nargs = 2;
		return;
	}
	f = find_field_n(schema, a, fl->namelen);
	if (!f)
		return;
	if (f->type == CONFIG_BOOL && config_parse_bool(next, &b) != ERR_OK)
		return;
	fl->value = next;
	fl->nargs = 2;
}

static bool flag_is(const struct flag *fl, const char *name)
{
	return fl->namelen == strlen(name) &&
	       strncmp(fl->name, name, fl->namelen) == 0;
}

enum config_args_result config_parse_args(const struct config_schema *schema,
					  void *obj, int argc, char **argv,
					  const char *version,
					  int *first_positional,
					  struct error *err)
{
	const char *config_path = NULL;
	bool config_missing = false;
	char **flags = NULL, **pos = NULL;
	int nflags = 0, npos = 0;
	char why[ERROR_MSG_MAX];
	struct flag fl;
	int i, j;

	if (first_positional)
		*first_positional = argc;
	if (config_apply_defaults(schema, obj, err) != ERR_OK)
		return CONFIG_ARGS_ERROR;

	/* Pass 1: --help and --version win over anything else on the line,
	 * and --config is loaded before any flag so flags override the file
	 * wherever they stand. */
	for (i = 1; i < argc; i += fl.nargs) {
		fl.nargs = 1;
		if (strcmp(argv[i], "--") == 0)
			break;
		if (is_help(argv[i])) {
			config_usage(schema, stdout);
			return CONFIG_ARGS_HELP;
		}
		if (is_version(argv[i])) {
			printf("%s %s\n", schema->program,
			       version ? version : "unknown");
			return CONFIG_ARGS_VERSION;
		}
		if (strncmp(argv[i], "--", 2) != 0)
			continue;
		split_flag(schema, argc, argv, i, &fl);
		if (flag_is(&fl, "config")) {
			config_path = fl.value;
			config_missing = !fl.value;
		}
	}
	if (config_missing) {
		error_set(err, ERR_INVALID, "flag '--config': needs a value");
		return CONFIG_ARGS_ERROR;
	}
	if (config_path &&
	    config_load_file(schema, obj, config_path, err) != ERR_OK)
		return CONFIG_ARGS_ERROR;

	flags = calloc((size_t)argc + 1, sizeof(*flags));
	pos = calloc((size_t)argc + 1, sizeof(*pos));
	if (!flags || !pos) {
		error_set(err, ERR_NOMEM, "parse arguments: out of memory");
		goto fail;
	}

	/* Pass 2: apply flags in order and set positionals aside. */
	for (i = 1; i < argc; i += fl.nargs) {
		const struct config_field *f;
		enum error_code rc;

		fl.nargs = 1;
		if (strcmp(argv[i], "--") == 0) {
			flags[nflags++] = argv[i];
			for (j = i + 1; j < argc; j++)
				pos[npos++] = argv[j];
			break;
		}
		if (strncmp(argv[i], "--", 2) != 0) {
			pos[npos++] = argv[i];
			continue;
		}
		split_flag(schema, argc, argv, i, &fl);
		for (j = 0; j < fl.nargs; j++)
			flags[nflags++] = argv[i + j];
		if (flag_is(&fl, "config"))
			continue;
		f = find_field_n(schema, fl.name, fl.namelen);
		if (!f) {
			error_set(err, ERR_INVALID,
				  "flag '--%.*s': unknown flag (see --help)",
				  (int)fl.namelen, fl.name);
			goto fail;
		}
		if (!fl.value && f->type == CONFIG_BOOL) {
			fl.value = "true";
		} else if (!fl.value) {
			error_set(err, ERR_INVALID, "flag '--%s': needs a value",
				  f->key);
			goto fail;
		}
		rc = assign(f, obj, fl.value, why, sizeof(why));
		if (rc != ERR_OK) {
			error_set(err, rc == ERR_NOMEM ? ERR_NOMEM : ERR_INVALID,
				  "flag '--%s': %s", f->key, why);
			goto fail;
		}
	}

	/* Stable permutation, as GNU getopt does: flags keep their order,
	 * positionals keep theirs and come last. */
	for (j = 0; j < nflags; j++)
		argv[1 + j] = flags[j];
	for (j = 0; j < npos; j++)
		argv[1 + nflags + j] = pos[j];
	if (first_positional)
		*first_positional = argc > 0 ? 1 + nflags : 0;
	free(flags);
	free(pos);
	return CONFIG_ARGS_RUN;
fail:
	free(flags);
	free(pos);
	return CONFIG_ARGS_ERROR;
}

/* The text after "--KEY": the type, or the choices of an enum, which say
 * more than "ENUM" does. */
static void flag_arg(const struct config_field *f, char *buf, size_t len)
{
	if (f->type == CONFIG_ENUM)
		list_choices(f, buf, len, "|", "");
	else if (f->type == CONFIG_BOOL)
		snprintf(buf, len, "[BOOL]");
	else
		snprintf(buf, len, "%s", type_name(f));
}

static const char *default_text(const struct config_field *f)
{
	if (f->def)
		return f->def;
	switch (f->type) {
	case CONFIG_BOOL:
		return "false";
	case CONFIG_ENUM:
		return f->choices && f->choices[0] ? f->choices[0] : "";
	case CONFIG_STRING:
		return "";
	default:
		return "0";
	}
}

void config_usage(const struct config_schema *schema, FILE *out)
{
	static const char *const builtin[][2] = {
		{ "--config FILE", "load settings from a YAML file first" },
		{ "--help, -h", "print this help and exit" },
		{ "--version, -V", "print the version and exit" },
	};
	char arg[256], left[512];
	int width = 0;
	size_t i;

	/* First pass measures, so help texts line up in one column. */
	for (i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		if ((int)strlen(builtin[i][0]) > width)
			width = (int)strlen(builtin[i][0]);
	for (i = 0; i < schema->nfields; i++) {
		flag_arg(&schema->fields[i], arg, sizeof(arg));
		snprintf(left, sizeof(left), "--%s %s", schema->fields[i].key,
			 arg);
		if ((int)strlen(left) > width)
			width = (int)strlen(left);
	}

	fprintf(out, "usage: %s [--config FILE] [--KEY VALUE ...]\n",
		schema->program);
	if (schema->summary && *schema->summary)
		fprintf(out, "%s\n", schema->summary);
	fprintf(out, "\n");
	for (i = 0; i < sizeof(builtin) / sizeof(builtin[0]); i++)
		fprintf(out, "  %-*s  %s\n", width, builtin[i][0],
			builtin[i][1]);
	for (i = 0; i < schema->nfields; i++) {
		const struct config_field *f = &schema->fields[i];
		const char *def = default_text(f);

		flag_arg(f, arg, sizeof(arg));
		snprintf(left, sizeof(left), "--%s %s", f->key, arg);
		fprintf(out, "  %-*s  %s", width, left, f->help ? f->help : "");
		if (*def)
			fprintf(out, "%s(default: %s)", f->help ? " " : "", def);
		fprintf(out, "\n");
	}
}

void config_release(const struct config_schema *schema, void *obj)
{
	size_t i;

	for (i = 0; i < schema->nfields; i++) {
		const struct config_field *f = &schema->fields[i];
		char **p = (char **)((char *)obj + f->offset);

		if (f->type != CONFIG_STRING)
			continue;
		free(*p);
		*p = NULL;
	}
}

enum error_code config_check_abs_path(const char *key, const char *path,
				      struct error *err)
{
	if (!path || path[0] != '/')
		return error_set(err, ERR_INVALID, "key '%s': must be an absolute path, got '%s'",
				 key, path ? path : "");
	return ERR_OK;
}

void config_dirs_free(char **dirs, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(dirs[i]);
}

enum error_code config_split_dirs(const char *key, const char *list, char **dirs, size_t max,
				  size_t *n, struct error *err)
{
	const char *p = list ? list : "";

	*n = 0;
	while (*p) {
		size_t len = strcspn(p, ",");
		const char *next = p[len] ? p + len + 1 : p + len;

		while (len && (*p == ' ' || *p == '\t'))
			p++, len--;
		while (len > 1 && (p[len - 1] == ' ' || p[len - 1] == '\t' || p[len - 1] == '/'))
			len--;
		if (len == 0) {
			p = next;
			continue;
		}
		if (*p != '/') {
			config_dirs_free(dirs, *n);
			*n = 0;
			return error_set(err, ERR_INVALID,
					 "key '%s': '%.*s' is not an absolute path", key, (int)len, p);
		}
		if (*n == max) {
			config_dirs_free(dirs, *n);
			*n = 0;
			return error_set(err, ERR_INVALID, "key '%s': more than %zu directories", key,
					 max);
		}
		dirs[*n] = strndup(p, len);
		if (!dirs[*n]) {
			config_dirs_free(dirs, *n);
			*n = 0;
			return error_set(err, ERR_NOMEM, "out of memory");
		}
		(*n)++;
		p = next;
	}
	return ERR_OK;
}

/* Kubernetes node names are DNS subdomains; a little wider (uppercase, '_')
 * so a bare-metal hostname works, but nothing that breaks a path or a log
 * line. */
enum error_code config_check_node_name(const char *key, const char *name,
				       struct error *err)
{
	size_t len = name ? strlen(name) : 0;

	if (len > 253)
		return error_set(err, ERR_INVALID, "key '%s': longer than 253 characters", key);
	if (strspn(name ? name : "",
		   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") != len)
		return error_set(err, ERR_INVALID,
				 "key '%s': '%s' may only hold letters, digits, '.', '-' and '_'",
				 key, name);
	return ERR_OK;
}

enum error_code config_check_log_level(const char *key, const char *level,
				       struct error *err)
{
	if (log_level_parse(level) < 0)
		return error_set(err, ERR_INVALID,
				 "key '%s': must be debug, info, warn or error, got '%s'", key,
				 level ? level : "");
	return ERR_OK;
}
