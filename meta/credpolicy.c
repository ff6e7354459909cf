/*
 * credpolicy.c - the rules of the cluster's credentials (see credpolicy.h).
 */
#include "meta/credpolicy.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "block/name.h"
#include "store/store.h"

#define RULE_ENDS "\n;"
#define BLANKS " \t\r"
#define ANY "*"
#define NAMESPACE_MAX 63 /* a namespace is a DNS-1123 label */

/* One namespace and one source it may name; strings point into text. */
struct grant {
	const char *ns;     /* a namespace, or ANY */
	const char *source; /* a prefix ending in '/', or ANY */
};

struct credpolicy {
	char *text;          /* the rules, cut into the grants' strings */
	struct grant *grants;
	size_t n;
};

/* The next blank-separated word of *s, NUL-terminated in place; NULL at
 * the end. */
static char *next_word(char **s)
{
	char *word = *s + strspn(*s, BLANKS);
	size_t len = strcspn(word, BLANKS);

	if (!len)
		return NULL;
	*s = word + len + (word[len] != '\0');
	word[len] = '\0';
	return word;
}

/* A namespace name: the dataset name's rules (block/name.h) for one label. */
static bool namespace_name(const char *ns)
{
	return strlen(ns) <= NAMESPACE_MAX && !strchr(ns, '.') &&
	       block_dataset_name_check(ns, NULL) == ERR_OK;
}

static enum error_code check_source(const char *source, struct error *err)
{
	char *scheme = NULL, *bucket = NULL, *prefix = NULL;
	enum error_code rc;

	if (strcmp(source, ANY) == 0)
		return ERR_OK;
	rc = store_uri_parse(source, &scheme, &bucket, &prefix, err);
	free(scheme);
	free(bucket);
	free(prefix);
	if (rc != ERR_OK)
		return rc;
	/* "s3://b/ima" would also name s3://b/imagenet-private/. */
	if (source[strlen(source) - 1] != '/')
		return error_set(err, ERR_INVALID,
				 "source '%.200s' does not end in '/' (a rule names whole segments: '%.200s/')",
				 source, source);
	return ERR_OK;
}

static enum error_code add_grant(struct credpolicy *p, const char *ns, const char *source,
				 struct error *err)
{
	struct grant *grown = realloc(p->grants, (p->n + 1) * sizeof(*grown));

	if (!grown)
		return error_set(err, ERR_NOMEM, "key '" CREDPOLICY_KEY "': out of memory");
	p->grants = grown;
	p->grants[p->n++] = (struct grant){ ns, source };
	return ERR_OK;
}

/* Rule number (its text, cut in place) into p's grants. */
static enum error_code parse_rule(struct credpolicy *p, unsigned number, char *rule,
				  struct error *err)
{
	char shown[160], *ns, *source;
	size_t sources = 0, len;
	enum error_code rc;

	rule += strspn(rule, BLANKS);
	len = strlen(rule);
	while (len && strchr(BLANKS, rule[len - 1]))
		len--;
	snprintf(shown, sizeof(shown), "%.*s", (int)len, rule);
	ns = next_word(&rule);
	if (strcmp(ns, ANY) != 0 && !namespace_name(ns))
		return error_set(err, ERR_INVALID,
				 "key '" CREDPOLICY_KEY "': rule %u ('%s'): '%.100s' is neither '*' nor a namespace (at most %d lowercase letters, digits and '-', starting and ending with a letter or digit)",
				 number, shown, ns, NAMESPACE_MAX);
	while ((source = next_word(&rule))) {
		if (check_source(source, err) != ERR_OK)
			return error_wrap(err, "key '" CREDPOLICY_KEY "': rule %u ('%s')", number,
					  shown);
		rc = add_grant(p, ns, source, err);
		if (rc != ERR_OK)
			return rc;
		sources++;
	}
	if (!sources)
		return error_set(err, ERR_INVALID,
				 "key '" CREDPOLICY_KEY "': rule %u ('%s'): names no source: follow the namespace with the source prefixes it may name (s3://BUCKET/PREFIX/), or '*' for every source",
				 number, shown);
	return ERR_OK;
}

enum error_code credpolicy_parse(const char *text, struct credpolicy **out, struct error *err)
{
	struct credpolicy *p = calloc(1, sizeof(*p));
	unsigned number = 0;
	enum error_code rc;
	char *rule, *next;

	*out = NULL;
	if (!p || !(p->text = strdup(text ? text : ""))) {
		rc = error_set(err, ERR_NOMEM, "key '" CREDPOLICY_KEY "': out of memory");
		goto fail;
	}
	for (rule = p->text; rule; rule = next) {
		size_t len = strcspn(rule, RULE_ENDS);

		next = rule[len] ? rule + len + 1 : NULL;
		rule[len] = '\0';
		if (!rule[strspn(rule, BLANKS)])
			continue;
		rc = parse_rule(p, ++number, rule, err);
		if (rc != ERR_OK)
			goto fail;
	}
	*out = p;
	return ERR_OK;
fail:
	credpolicy_free(p);
	return rc;
}

void credpolicy_free(struct credpolicy *p)
{
	if (!p)
		return;
	free(p->grants);
	free(p->text);
	free(p);
}

/* Whether source is prefix, or lies under it: prefix ends in '/', so a
 * match ends at a segment's end ("s3://b" is the bucket "s3://b/"). */
static bool under(const char *source, const char *prefix)
{
	size_t len = strlen(prefix);

	return strncmp(source, prefix, len) == 0 ||
	       (strlen(source) == len - 1 && strncmp(source, prefix, len - 1) == 0);
}

static enum error_code refusal(const char *ns, const char *source, struct error *err);

/* "file://" and the realpath of a file:// source's directory, ending in
 * '/' (malloc'd), or NULL with errno (ENOMEM: out of memory). */
static char *resolve(const char *source)
{
	char *real = realpath(source + 7, NULL), *out = NULL;

	if (real && asprintf(&out, "file://%s%s", real, strcmp(real, "/") ? "/" : "") < 0) {
		out = NULL;
		errno = ENOMEM;
	}
	free(real);
	return out;
}

enum error_code credpolicy_check_resolved(const struct credpolicy *p, const char *ns,
					  const char *source, struct error *err)
{
	char *resolved = resolve(source);
	struct error why;
	enum error_code rc = ERR_PERMISSION;

	if (!resolved)
		return errno == ENOMEM ? error_set(err, ERR_NOMEM, "out of memory") : ERR_OK;
	for (size_t i = 0; i < p->n && rc != ERR_OK; i++) {
		const struct grant *g = &p->grants[i];
		char *prefix;

		if (strcmp(g->ns, ANY) != 0 && strcmp(g->ns, ns) != 0)
			continue;
		if (strcmp(g->source, ANY) == 0) {
			rc = ERR_OK;
		} else if (strncmp(g->source, "file://", 7) == 0 && (prefix = resolve(g->source))) {
			if (under(resolved, prefix))
				rc = ERR_OK;
			free(prefix);
		}
	}
	if (rc != ERR_OK) {
		refusal(ns, resolved, &why);
		error_set(err, rc, "source '%.200s' resolves to '%.200s': %s", source, resolved,
			  why.msg);
	}
	free(resolved);
	return rc;
}

enum error_code credpolicy_check(const struct credpolicy *p, const char *ns, const char *source,
				 struct error *err)
{
	for (size_t i = 0; i < p->n; i++) {
		const struct grant *g = &p->grants[i];

		if ((strcmp(g->ns, ANY) == 0 || strcmp(g->ns, ns) == 0) &&
		    (strcmp(g->source, ANY) == 0 || under(source, g->source)))
			return ERR_OK;
	}
	return refusal(ns, source, err);
}

/* Namespace ns may not name source: what to do. */
static enum error_code refusal(const char *ns, const char *source, struct error *err)
{
	/* A directory of the hosts: no Secret opens it. */
	if (strncmp(source, "file://", 7) == 0)
		return error_set(err, ERR_PERMISSION,
				 "namespace '%s' may not read '%.200s' (no rule of " CREDPOLICY_KEY " allows it, and a Secret opens no file:// source): ask the administrator to allow it (the chart's value datasets.clusterCredentials)",
				 ns, source);
	return error_set(err, ERR_PERMISSION,
			 "namespace '%s' may not read '%.200s' with the cluster's store credentials (no rule of " CREDPOLICY_KEY " allows it): name a Secret of %s that can read it in spec.secretRef, or ask the administrator to allow it (the chart's value datasets.clusterCredentials)",
			 ns, source, ns);
}
