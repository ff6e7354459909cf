/*
 * dsmirror.c - StorageClass claims shown as Datasets (see dsmirror.h).
 */
#include "csi/dsmirror.h"

#include <stdio.h>

#define API "/apis/granary.io/v1alpha1/namespaces/"

static const char *policy_name(int policy)
{
	switch (policy) {
	case GRANARY__V1__CACHE_POLICY__CACHE_POLICY_LRU:
		return "lru";
	case GRANARY__V1__CACHE_POLICY__CACHE_POLICY_SCAN_RESISTANT:
		return "scan-resistant";
	default:
		return NULL;
	}
}

enum error_code dsmirror_create(struct kubeapi *k, const char *ns, const char *id,
				const struct controller_params *p, struct error *err)
{
	char path[512], size[16];
	json_t *spec, *body, *reply = NULL;
	enum error_code rc;
	long code;

	spec = json_pack("{s:s, s:s, s:s, s:b, s:b}", "source", p->source, "endpoint",
			 p->endpoint ? p->endpoint : "", "region", p->region ? p->region : "",
			 "pin", p->pin, "preload", p->preload);
	if (p->block_size) {
		/* A power of two from 64 KiB to 64 MiB (the parameter's rule). */
		if (p->block_size >= (1u << 20))
			snprintf(size, sizeof(size), "%lluMi",
				 (unsigned long long)(p->block_size >> 20));
		else
			snprintf(size, sizeof(size), "%lluKi",
				 (unsigned long long)(p->block_size >> 10));
		json_object_set_new(spec, "blockSize", json_string(size));
	}
	if (policy_name(p->cache_policy))
		json_object_set_new(spec, "cachePolicy", json_string(policy_name(p->cache_policy)));
	body = json_pack("{s:s, s:s, s:{s:s, s:s, s:{s:s, s:s}}, s:o}", "apiVersion",
			 "granary.io/v1alpha1", "kind", "Dataset", "metadata", "name", id,
			 "namespace", ns, "labels", "granary.io/volume", id,
			 "app.kubernetes.io/managed-by", "granary-csi", "spec", spec);
	snprintf(path, sizeof(path), API "%s/datasets", ns);
	rc = kubeapi_call(k, "POST", path, body, &code, &reply, err);
	json_decref(body);
	if (rc == ERR_OK && code != 201 && code != 409)
		rc = error_set(err, ERR_UNAVAILABLE, "create Dataset %s/%s: HTTP %ld: %s", ns, id,
			       code, kubeapi_message(reply));
	json_decref(reply);
	return rc;
}

enum error_code dsmirror_delete(struct kubeapi *k, const char *ns, const char *id,
				struct error *err)
{
	char path[512];
	json_t *reply = NULL;
	enum error_code rc;
	long code;

	snprintf(path, sizeof(path), API "%s/datasets/%s", ns, id);
	rc = kubeapi_call(k, "DELETE", path, NULL, &code, &reply, err);
	if (rc == ERR_OK && code != 200 && code != 202 && code != 404)
		rc = error_set(err, code == 429 || code >= 500 ? ERR_UNAVAILABLE : ERR_INTERNAL,
			       "delete Dataset %s/%s: HTTP %ld: %s", ns, id, code,
			       kubeapi_message(reply));
	json_decref(reply);
	return rc;
}
