/*
 * lease.c - leader election with a Lease (see lease.h).
 */
#include "kube/lease.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/retry.h"

struct lease {
	struct kubeapi *k;
	char *ns, *name, *identity;
	unsigned duration_s;
	char holder[256];
	char renew_time[64];    /* the holder's renewTime as last read */
	uint64_t observed_ms;   /* when holder or renewTime last changed */
	uint64_t renewed_ms;
};

enum error_code lease_new(struct kubeapi *k, const struct lease_config *cfg, struct lease **out,
			  struct error *err)
{
	struct lease *l = calloc(1, sizeof(*l));

	if (!cfg->identity || !*cfg->identity || strlen(cfg->identity) >= sizeof(l->holder)) {
		free(l);
		return error_set(err, ERR_INVALID, "a Lease candidate needs an identity of 1 to %zu bytes",
				 sizeof(l->holder) - 1);
	}
	if (!l || !(l->ns = strdup(cfg->namespace_)) || !(l->name = strdup(cfg->name)) ||
	    !(l->identity = strdup(cfg->identity))) {
		lease_free(l);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	l->k = k;
	l->duration_s = cfg->duration_s ? cfg->duration_s : 15;
	*out = l;
	return ERR_OK;
}

void lease_free(struct lease *l)
{
	if (!l)
		return;
	free(l->ns);
	free(l->name);
	free(l->identity);
	free(l);
}

const char *lease_holder(const struct lease *l)
{
	return l->holder;
}

uint64_t lease_renewed_ms(const struct lease *l)
{
	return l->renewed_ms;
}

static enum error_code status_error(const char *what, long status, json_t *reply,
				    struct error *err)
{
	return error_set(err, status == 401 || status == 403 ? ERR_PERMISSION : ERR_UNAVAILABLE,
			 "%s: HTTP %ld: %s", what, status, kubeapi_message(reply));
}

/* spec with this identity as holder, renewed now. */
static json_t *holder_spec(const struct lease *l, json_t *old_spec, bool taking)
{
	char now[40];
	json_t *spec = old_spec ? json_deep_copy(old_spec) : json_object();
	json_int_t transitions = json_integer_value(json_object_get(spec, "leaseTransitions"));

	kubeapi_micro_time(retry_wall_ms(), now, sizeof(now));
	json_object_set_new(spec, "holderIdentity", json_string(l->identity));
	json_object_set_new(spec, "leaseDurationSeconds", json_integer(l->duration_s));
	json_object_set_new(spec, "renewTime", json_string(now));
	if (taking) {
		json_object_set_new(spec, "acquireTime", json_string(now));
		json_object_set_new(spec, "leaseTransitions",
				    json_integer(old_spec ? transitions + 1 : 0));
	}
	return spec;
}

enum error_code lease_try(struct lease *l, bool *held, struct error *err)
{
	char path[512], holder[256];
	json_t *reply = NULL, *spec, *body;
	const char *renew;
	enum error_code rc;
	uint64_t now = retry_now_ms();
	bool mine, taking;
	long status;

	*held = false;
	snprintf(path, sizeof(path), "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", l->ns,
		 l->name);
	rc = kubeapi_call(l->k, "GET", path, NULL, &status, &reply, err);
	if (rc != ERR_OK)
		return rc;
	if (status == 404) {
		char list[512];

		json_decref(reply);
		body = json_pack("{s:s, s:s, s:{s:s, s:s}, s:o}", "apiVersion",
				 "coordination.k8s.io/v1", "kind", "Lease", "metadata", "name", l->name,
				 "namespace", l->ns, "spec", holder_spec(l, NULL, true));
		snprintf(list, sizeof(list), "/apis/coordination.k8s.io/v1/namespaces/%s/leases",
			 l->ns);
		rc = kubeapi_call(l->k, "POST", list, body, &status, &reply, err);
		json_decref(body);
		if (rc == ERR_OK && status == 201) {
			snprintf(l->holder, sizeof(l->holder), "%s", l->identity);
			l->renewed_ms = l->observed_ms = now;
			*held = true;
		} else if (rc == ERR_OK && status != 409) {
			rc = status_error("create the Lease", status, reply, err);
		}
		json_decref(reply);
		return rc;
	}
	if (status != 200) {
		rc = status_error("read the Lease", status, reply, err);
		json_decref(reply);
		return rc;
	}
	spec = json_object_get(reply, "spec");
	snprintf(holder, sizeof(holder), "%s",
		 json_string_value(json_object_get(spec, "holderIdentity")) ?: "");
	renew = json_string_value(json_object_get(spec, "renewTime"));
	renew = renew ? renew : "";
	if (strcmp(holder, l->holder) != 0 || strcmp(renew, l->renew_time) != 0) {
		snprintf(l->holder, sizeof(l->holder), "%s", holder);
		snprintf(l->renew_time, sizeof(l->renew_time), "%s", renew);
		l->observed_ms = now;
	}
	mine = strcmp(holder, l->identity) == 0;
	/* Another live holder: its renewTime moved within the duration. */
	if (!mine && *holder && now - l->observed_ms < (uint64_t)l->duration_s * 1000) {
		json_decref(reply);
		return ERR_OK;
	}
	taking = !mine;
	body = json_deep_copy(reply);
	json_object_set_new(body, "spec", holder_spec(l, spec, taking));
	json_decref(reply);
	rc = kubeapi_call(l->k, "PUT", path, body, &status, &reply, err);
	json_decref(body);
	if (rc == ERR_OK && status == 200) {
		spec = json_object_get(reply, "spec");
		renew = json_string_value(json_object_get(spec, "renewTime"));
		snprintf(l->holder, sizeof(l->holder), "%s", l->identity);
		snprintf(l->renew_time, sizeof(l->renew_time), "%s", renew ? renew : "");
		l->renewed_ms = l->observed_ms = now;
		*held = true;
		if (taking)
			log_info("took the Lease", LOG_S("lease", l->name), LOG_S("namespace", l->ns),
				 LOG_S("previous_holder", holder));
	} else if (rc == ERR_OK && status != 409) {
		rc = status_error("write the Lease", status, reply, err);
	}
	json_decref(reply);
	return rc;
}

void lease_release(struct lease *l)
{
	char path[512];
	json_t *reply = NULL, *spec;
	struct error err;
	long status;

	snprintf(path, sizeof(path), "/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", l->ns,
		 l->name);
	if (kubeapi_call(l->k, "GET", path, NULL, &status, &reply, &err) != ERR_OK || status != 200)
		goto out;
	spec = json_object_get(reply, "spec");
	if (!json_is_object(spec) ||
	    strcmp(json_string_value(json_object_get(spec, "holderIdentity")) ?: "", l->identity))
		goto out;
	json_object_set_new(spec, "holderIdentity", json_string(""));
	json_object_set_new(spec, "leaseDurationSeconds", json_integer(1));
	{
		json_t *again = NULL;

		if (kubeapi_call(l->k, "PUT", path, reply, &status, &again, &err) == ERR_OK &&
		    status == 200)
			log_info("gave the Lease up", LOG_S("lease", l->name));
		json_decref(again);
	}
out:
	json_decref(reply);
}
