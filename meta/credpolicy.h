/*
 * credpolicy.h - which namespaces' Datasets may read which sources with
 * the cluster's store credentials (granary-meta's setting
 * datasets.cluster_credentials, the chart's datasets.clusterCredentials;
 * docs/datasets.md, "The cluster's credentials").
 *
 * A Dataset without spec.secretRef is listed by granary-meta, and its
 * blocks are fetched by the workers, with the cluster's own credentials,
 * which reach every bucket they were given for. The rules say which
 * namespace may name which source with them; the Dataset controller
 * (meta/datasets.c) registers no Dataset they refuse. A Dataset that names
 * a Secret, and a StorageClass claim's mirror (its StorageClass is the
 * administrator's), are not judged here.
 *
 * The setting's text: rules separated by newlines or ';', each a namespace
 * (or "*": every namespace) followed, blank-separated, by the source
 * prefixes it may name: "*" (every source), or a source ending in '/'
 * (s3://BUCKET/, s3://BUCKET/PREFIX/, file:///DIR/), which allows itself
 * and every source under it, segment by segment:
 *
 *     granary-system *
 *     team-a s3://shared-datasets/imagenet/ s3://shared-datasets/coco/
 *     * s3://public-datasets/
 *
 * Rules add up; empty text allows no namespace. A source with a blank or
 * ';' in it cannot be named: name the prefix above it.
 *
 * No lock; a parsed policy is read-only and may be shared by threads. No
 * I/O but credpolicy_check_resolved's realpath calls.
 */
#ifndef GRANARY_META_CREDPOLICY_H
#define GRANARY_META_CREDPOLICY_H

#include "common/error.h"

/* granary-meta's setting of the rules, named in messages. */
#define CREDPOLICY_KEY "datasets.cluster_credentials"

struct credpolicy;

/*
 * Parses text (NULL: ""). *out: the policy, to be freed with
 * credpolicy_free. ERR_INVALID naming CREDPOLICY_KEY, the rule by its
 * number (from 1, blank rules not counted) and text, and what is wrong
 * with it:
 *   "key 'datasets.cluster_credentials': rule 2 ('team-a s3://shared/x'):
 *    source 's3://shared/x' does not end in '/' (a rule names whole
 *    segments: 's3://shared/x/')"
 * a namespace that is neither "*" nor a namespace name, a rule without a
 * source, a source that store_uri_parse refuses; ERR_NOMEM.
 */
enum error_code credpolicy_parse(const char *text, struct credpolicy **out, struct error *err);

void credpolicy_free(struct credpolicy *p);

/*
 * Whether a Dataset of namespace ns may name source with the cluster's
 * credentials: ERR_OK when a rule of ns (or of "*") names "*" or a prefix
 * the source is, or lies under. Else ERR_PERMISSION, a message naming the
 * namespace, the source, CREDPOLICY_KEY and what to do:
 *   "namespace 'team-a' may not read 's3://private/x/' with the cluster's
 *    store credentials (no rule of datasets.cluster_credentials allows
 *    it): name a Secret of team-a that can read it in spec.secretRef, or
 *    ask the administrator to allow it (the chart's value
 *    datasets.clusterCredentials)"
 * (for a file:// source, which no Secret opens, only the administrator's
 * rule is named). The source's own syntax is not judged (the Dataset CRD's schema and
 * the registry do that).
 */
enum error_code credpolicy_check(const struct credpolicy *p, const char *ns, const char *source,
				 struct error *err);

/*
 * As credpolicy_check for a file:// source as its directory resolves
 * (realpath), against the file:// prefixes of the rules as they resolve
 * too (realpath at each call: a rule written through a link to the
 * directories holds; one that does not resolve allows nothing here). A
 * source that does not resolve is ERR_OK (its listing says why). The
 * refusal is credpolicy_check's for the resolved source, after "source
 * 'S' resolves to 'R': ".
 */
enum error_code credpolicy_check_resolved(const struct credpolicy *p, const char *ns,
					  const char *source, struct error *err);

#endif
