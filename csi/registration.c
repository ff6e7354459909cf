/*
 * registration.c - the kubelet's verdict on the node plugin, and what
 * GetInfo tells it.
 */
#include "csi/registration.h"

#include <stdio.h>

#include "common/log.h"
#include "csi/identity.h"

/* The kubelet's CSI plugin API versions the plugin serves at its endpoint:
 * the kubelet speaks CSI v1 to any 1.x. */
static const char *const versions[] = { "1.0.0" };

void registration_init(struct registration *r, const char *endpoint)
{
	r->endpoint = endpoint;
	pthread_mutex_init(&r->mu, NULL);
	r->state = REGISTRATION_PENDING;
	r->error[0] = '\0';
}

void registration_release(struct registration *r)
{
	pthread_mutex_destroy(&r->mu);
}

void registration_info(const struct registration *r, struct registration_info *out)
{
	out->type = REGISTRATION_PLUGIN_TYPE;
	out->name = IDENTITY_PLUGIN_NAME;
	out->endpoint = r->endpoint;
	out->versions = versions;
	out->nversions = sizeof(versions) / sizeof(versions[0]);
}

void registration_notify(struct registration *r, bool registered, const char *error)
{
	const char *msg = error && *error ? error : "no reason given";

	pthread_mutex_lock(&r->mu);
	r->state = registered ? REGISTRATION_REGISTERED : REGISTRATION_REFUSED;
	snprintf(r->error, sizeof(r->error), "%s", registered ? "" : msg);
	pthread_mutex_unlock(&r->mu);
	if (registered)
		log_info("registered with the kubelet", LOG_S("driver", IDENTITY_PLUGIN_NAME),
			 LOG_S("kubelet_endpoint", r->endpoint));
	else
		log_error("the kubelet refused the registration", LOG_S("driver", IDENTITY_PLUGIN_NAME),
			  LOG_S("kubelet_endpoint", r->endpoint), LOG_S("cause", msg));
}

void registration_reset(struct registration *r)
{
	pthread_mutex_lock(&r->mu);
	r->state = REGISTRATION_PENDING;
	r->error[0] = '\0';
	pthread_mutex_unlock(&r->mu);
}

bool registration_ok(struct registration *r, struct error *why)
{
	enum registration_state state;
	char msg[ERROR_MSG_MAX];

	pthread_mutex_lock(&r->mu);
	state = r->state;
	snprintf(msg, sizeof(msg), "%s", r->error);
	pthread_mutex_unlock(&r->mu);
	switch (state) {
	case REGISTRATION_REGISTERED:
		return true;
	case REGISTRATION_REFUSED:
		error_set(why, ERR_UNAVAILABLE, "the kubelet refused the registration: %s", msg);
		return false;
	default:
		error_set(why, ERR_UNAVAILABLE,
			  "not registered with the kubelet yet (no registration status received)");
		return false;
	}
}
