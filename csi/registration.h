/*
 * registration.h - the node plugin's registration with the kubelet, in
 * place of the node-driver-registrar sidecar: the core, without gRPC
 * (csi/registration_service.c serves it as the kubelet's
 * pluginregistration.Registration API, api/pluginregistration.proto).
 *
 * The kubelet watches its plugins_registry directory. For a new socket
 * there it calls GetInfo (what the plugin is, where its CSI socket is on
 * the host), checks the answer, calls NodeGetInfo on that CSI socket, and
 * tells the plugin the outcome with NotifyRegistrationStatus. It calls
 * GetInfo again from time to time to see that the plugin is alive, and
 * registers it again after its own restart.
 *
 * State: PENDING (nothing heard since start, or since the socket was made
 * anew) -> REGISTERED or REFUSED (with the kubelet's message); every
 * notification sets it, the last one wins. Thread-safe: handlers and the
 * health endpoint use it from their own threads.
 */
#ifndef GRANARY_CSI_REGISTRATION_H
#define GRANARY_CSI_REGISTRATION_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/error.h"

/* The longest registration socket path: sun_path (107 bytes) less what the
 * server adds to bind it first at a hidden name (registration_service.h). */
#define REGISTRATION_SOCKET_MAX (107 - 10)

/* PluginInfo.type for a CSI driver. */
#define REGISTRATION_PLUGIN_TYPE "CSIPlugin"

enum registration_state {
	REGISTRATION_PENDING = 0, /* no NotifyRegistrationStatus yet */
	REGISTRATION_REGISTERED,  /* the kubelet took the plugin */
	REGISTRATION_REFUSED,     /* the kubelet said no; error holds why */
};

struct registration {
	const char *endpoint;           /* the CSI socket on the host; caller's, outlives */
	pthread_mutex_t mu;
	enum registration_state state;  /* protected by mu */
	char error[ERROR_MSG_MAX];      /* protected by mu: the kubelet's message */
};

/* What GetInfo answers. Every pointer is static or the registration's. */
struct registration_info {
	const char *type;               /* REGISTRATION_PLUGIN_TYPE */
	const char *name;               /* IDENTITY_PLUGIN_NAME */
	const char *endpoint;           /* kubelet_endpoint */
	const char *const *versions;    /* { "1.0.0" }: the kubelet's CSI plugin API */
	size_t nversions;
};

/* Caller's storage, PENDING; endpoint (the kubelet_endpoint setting) is
 * not copied and must outlive r. Release with registration_release. */
void registration_init(struct registration *r, const char *endpoint);
void registration_release(struct registration *r);

void registration_info(const struct registration *r, struct registration_info *out);

/*
 * Records the kubelet's verdict and logs it: info when registered, error
 * with the kubelet's message when not (error may be NULL or empty).
 */
void registration_notify(struct registration *r, bool registered, const char *error);

/* Back to PENDING: the registration socket was made anew, and the kubelet
 * took the old one's removal as the plugin leaving. */
void registration_reset(struct registration *r);

/*
 * True when the kubelet's last word was REGISTERED. Otherwise false, and
 * why (may be NULL) gets ERR_UNAVAILABLE with the reason: "not registered
 * with the kubelet yet (no registration status received)" or "the kubelet
 * refused the registration: MESSAGE".
 */
bool registration_ok(struct registration *r, struct error *why);

#endif
