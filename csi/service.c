/*
 * service.c - csi.v1 handlers: parse, call the core, reply.
 */
#include "csi/service.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "csi.pb-c.h"
#include "csi/identity.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Every protobuf-c map entry has this layout: base, key, value. */
struct map_entry {
	ProtobufCMessage base;
	char *key;
	char *value;
};

/* A request's map as controller_kv pairs pointing into the request; *out
 * is NULL for an empty map, else freed by the caller. */
static enum error_code map_to_kv(void *const *entries, size_t n, struct controller_kv **out,
				 struct error *err)
{
	*out = NULL;
	if (n == 0)
		return ERR_OK;
	*out = calloc(n, sizeof(**out));
	if (!*out)
		return error_set(err, ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++) {
		const struct map_entry *e = entries[i];

		(*out)[i].key = e->key;
		(*out)[i].value = e->value;
	}
	return ERR_OK;
}

#define MAP_TO_KV(msg, field, out, err) map_to_kv((void *const *)(msg)->field, (msg)->n_##field, out, err)

/* The value of key in a map, or NULL. */
static const char *map_get(void *const *entries, size_t n, const char *key)
{
	for (size_t i = 0; i < n; i++) {
		const struct map_entry *e = entries[i];

		if (e->key && strcmp(e->key, key) == 0)
			return e->value;
	}
	return NULL;
}

#define MAP_GET(msg, field, key) map_get((void *const *)(msg)->field, (msg)->n_##field, key)

/* ---- strings at their wire length ---------------------------------------- */

/*
 * protobuf-c hands strings over NUL-terminated, so a name "pvc-a\0b" would
 * arrive as "pvc-a" (the same volume as "pvc-a") and a secret would be cut
 * short without a word. Requests are therefore taken off the wire as a
 * message without fields (everything stays in its unknown fields, bytes as
 * sent), every string field of the method's request type is checked at its
 * wire length, and only then is the request unpacked by its own descriptor.
 */
static const ProtobufCMessageDescriptor raw_request_descriptor = {
	.magic = PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
	.name = "granary.csi.RawRequest",
	.short_name = "RawRequest",
	.c_name = "RawRequest",
	.package_name = "granary.csi",
	.sizeof_message = sizeof(ProtobufCMessage),
};

/* Reads a varint at *p (before end); false when it runs off the end. */
static bool wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
	*out = 0;
	for (unsigned shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;

		*out |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

/*
 * The next field of data[0..end): its number, and for a length-delimited
 * one its bytes (*value, *len; else *value NULL). False at the end or on
 * malformed input, which the unpack that follows refuses.
 */
static bool wire_next(const uint8_t **p, const uint8_t *end, uint32_t *number,
		      const uint8_t **value, size_t *len)
{
	uint64_t tag, n = 0;

	if (*p >= end || !wire_varint(p, end, &tag))
		return false;
	*number = (uint32_t)(tag >> 3);
	*value = NULL;
	switch (tag & 7) {
	case 0:
		return wire_varint(p, end, &n);
	case 1:
		n = 8;
		break;
	case 5:
		n = 4;
		break;
	case 2:
		if (!wire_varint(p, end, &n))
			return false;
		break;
	default:
		return false;
	}
	if (n > (uint64_t)(end - *p))
		return false;
	if ((tag & 7) == 2) {
		*value = *p;
		*len = (size_t)n;
	}
	*p += n;
	return true;
}

/* protobuf-c's map entries: messages of exactly a key and a value. */
static bool is_map_entry(const ProtobufCMessageDescriptor *d)
{
	return d->n_fields == 2 && strcmp(d->fields[0].name, "key") == 0 &&
	       strcmp(d->fields[1].name, "value") == 0 &&
	       d->fields[0].type == PROTOBUF_C_TYPE_STRING;
}

/* A map entry of field path: a NUL in the key, or in a string value
 * (named by its key; a value is never quoted, it may be a secret). */
static enum error_code check_entry(const ProtobufCMessageDescriptor *d, const uint8_t *p,
				   size_t size, const char *path, struct error *err)
{
	const uint8_t *end = p + size, *v, *key = NULL;
	size_t len, key_len = 0;
	uint32_t number;
	bool bad_value = false;

	while (wire_next(&p, end, &number, &v, &len)) {
		if (!v)
			continue;
		if (number == 1) {
			if (memchr(v, '\0', len))
				return error_set(err, ERR_INVALID, "field '%s': a key holds a NUL byte",
						 path);
			key = v;
			key_len = len;
		} else if (number == 2 && d->fields[1].type == PROTOBUF_C_TYPE_STRING &&
			   memchr(v, '\0', len)) {
			bad_value = true;
		}
	}
	if (bad_value)
		return error_set(err, ERR_INVALID, "field '%s': the value of key '%.*s%s' holds a NUL byte",
				 path, (int)(key_len > 64 ? 64 : key_len), key ? (const char *)key : "",
				 key_len > 64 ? "..." : "");
	return ERR_OK;
}

/* Every string in data[0..size), a message of type d at field path ("" at
 * the top): ERR_INVALID naming the field when one holds a NUL byte. */
static enum error_code check_strings(const ProtobufCMessageDescriptor *d, const uint8_t *p,
				     size_t size, const char *path, struct error *err)
{
	const uint8_t *end = p + size, *v;
	const ProtobufCFieldDescriptor *f;
	char sub[256];
	uint32_t number;
	size_t len;

	while (wire_next(&p, end, &number, &v, &len)) {
		if (!v || !(f = protobuf_c_message_descriptor_get_field(d, number)))
			continue;
		snprintf(sub, sizeof(sub), "%s%s%s", path, *path ? "." : "", f->name);
		if (f->type == PROTOBUF_C_TYPE_STRING && memchr(v, '\0', len))
			return error_set(err, ERR_INVALID, "field '%s': holds a NUL byte", sub);
		if (f->type != PROTOBUF_C_TYPE_MESSAGE)
			continue;
		if (is_map_entry(f->descriptor) ? check_entry(f->descriptor, v, len, sub, err)
						 : check_strings(f->descriptor, v, len, sub, err))
			return err->code;
	}
	return ERR_OK;
}

static void capability_from_proto(const Csi__V1__VolumeCapability *in,
				  struct controller_capability *out)
{
	switch (in->access_type_case) {
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK:
		out->access_type = CONTROLLER_ACCESS_BLOCK;
		break;
	case CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT:
		out->access_type = CONTROLLER_ACCESS_MOUNT;
		break;
	default:
		out->access_type = CONTROLLER_ACCESS_UNSET;
	}
	out->mode = in->access_mode ? (int)in->access_mode->mode : CONTROLLER_MODE_UNKNOWN;
}

static enum error_code capabilities_from_proto(Csi__V1__VolumeCapability *const *in, size_t n,
					       struct controller_capability **out,
					       struct error *err)
{
	*out = calloc(n ? n : 1, sizeof(**out));
	if (!*out)
		return error_set(err, ERR_NOMEM, "out of memory");
	for (size_t i = 0; i < n; i++)
		capability_from_proto(in[i], &(*out)[i]);
	return ERR_OK;
}

/* ---- Identity ------------------------------------------------------------ */

static enum error_code on_plugin_info(struct rpc_server_call *call, const ProtobufCMessage *request,
				      void *arg, struct error *err)
{
	Csi__V1__GetPluginInfoResponse reply = CSI__V1__GET_PLUGIN_INFO_RESPONSE__INIT;

	reply.name = IDENTITY_PLUGIN_NAME;
	reply.vendor_version = (char *)identity_vendor_version();
	return rpc_server_reply(call, &reply.base, err);
}

static enum error_code on_plugin_capabilities(struct rpc_server_call *call,
					      const ProtobufCMessage *request, void *arg,
					      struct error *err)
{
	Csi__V1__GetPluginCapabilitiesResponse reply = CSI__V1__GET_PLUGIN_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__PluginCapability cap = CSI__V1__PLUGIN_CAPABILITY__INIT, *caps[1] = { &cap };
	Csi__V1__PluginCapability__Service service = CSI__V1__PLUGIN_CAPABILITY__SERVICE__INIT;
	struct csi_service *svc = arg;

	if (svc->controller) {
		service.type = CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__CONTROLLER_SERVICE;
		cap.type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_SERVICE;
		cap.service = &service;
		reply.n_capabilities = 1;
		reply.capabilities = caps;
	}
	return rpc_server_reply(call, &reply.base, err);
}

static enum error_code on_probe(struct rpc_server_call *call, const ProtobufCMessage *request,
				void *arg, struct error *err)
{
	Csi__V1__ProbeResponse reply = CSI__V1__PROBE_RESPONSE__INIT;
	Google__Protobuf__BoolValue ready = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
	struct csi_service *svc = arg;
	struct error why;

	ready.value = identity_probe(svc->probe, &why);
	if (!ready.value)
		log_warn("probe: not ready", LOG_S("cause", why.msg));
	reply.ready = &ready;
	return rpc_server_reply(call, &reply.base, err);
}

/* ---- Controller ---------------------------------------------------------- */

static enum error_code on_create_volume(struct rpc_server_call *call,
					const ProtobufCMessage *request, void *arg,
					struct error *err)
{
	const Csi__V1__CreateVolumeRequest *req = (const void *)request;
	Csi__V1__CreateVolumeResponse reply = CSI__V1__CREATE_VOLUME_RESPONSE__INIT;
	Csi__V1__Volume vol = CSI__V1__VOLUME__INIT;
	struct controller_context ctx;
	Csi__V1__Volume__VolumeContextEntry entries[COUNT(ctx.kv)];
	Csi__V1__Volume__VolumeContextEntry *ctxs[COUNT(ctx.kv)];
	struct controller_create_request cr = { 0 };
	struct controller_kv *params = NULL, *secrets = NULL;
	struct controller_capability *caps = NULL;
	struct controller_volume out = { 0 };
	struct csi_service *svc = arg;
	enum error_code rc;

	rc = MAP_TO_KV(req, parameters, &params, err);
	if (rc == ERR_OK)
		rc = MAP_TO_KV(req, secrets, &secrets, err);
	if (rc == ERR_OK)
		rc = capabilities_from_proto(req->volume_capabilities, req->n_volume_capabilities,
					     &caps, err);
	if (rc != ERR_OK)
		goto out;
	cr.name = req->name;
	cr.params = params;
	cr.nparams = req->n_parameters;
	cr.secrets = secrets;
	cr.nsecrets = req->n_secrets;
	cr.caps = caps;
	cr.ncaps = req->n_volume_capabilities;
	cr.has_content_source = req->volume_content_source != NULL &&
				req->volume_content_source->type_case !=
					CSI__V1__VOLUME_CONTENT_SOURCE__TYPE__NOT_SET;
	if (req->capacity_range) {
		cr.has_capacity = true;
		cr.required_bytes = req->capacity_range->required_bytes;
		cr.limit_bytes = req->capacity_range->limit_bytes;
	}
	rc = controller_create_volume(svc->controller, &cr, &out, err);
	if (rc != ERR_OK)
		goto out;
	controller_context_init(&ctx, out.id, &out.params);
	for (size_t i = 0; i < ctx.n; i++) {
		csi__v1__volume__volume_context_entry__init(&entries[i]);
		entries[i].key = (char *)ctx.kv[i].key;
		entries[i].value = (char *)ctx.kv[i].value;
		ctxs[i] = &entries[i];
	}
	vol.volume_id = out.id;
	vol.capacity_bytes = out.capacity_bytes;
	vol.n_volume_context = ctx.n;
	vol.volume_context = ctxs;
	reply.volume = &vol;
	rc = rpc_server_reply(call, &reply.base, err);
out:
	controller_volume_release(&out);
	free(params);
	free(secrets);
	free(caps);
	return rc;
}

static enum error_code on_delete_volume(struct rpc_server_call *call,
					const ProtobufCMessage *request, void *arg,
					struct error *err)
{
	const Csi__V1__DeleteVolumeRequest *req = (const void *)request;
	Csi__V1__DeleteVolumeResponse reply = CSI__V1__DELETE_VOLUME_RESPONSE__INIT;
	struct csi_service *svc = arg;
	enum error_code rc;

	rc = controller_delete_volume(svc->controller, req->volume_id, err);
	return rc == ERR_OK ? rpc_server_reply(call, &reply.base, err) : rc;
}

static enum error_code on_validate(struct rpc_server_call *call, const ProtobufCMessage *request,
				   void *arg, struct error *err)
{
	const Csi__V1__ValidateVolumeCapabilitiesRequest *req = (const void *)request;
	Csi__V1__ValidateVolumeCapabilitiesResponse reply =
		CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__ValidateVolumeCapabilitiesResponse__Confirmed confirmed =
		CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__CONFIRMED__INIT;
	struct controller_capability *caps = NULL;
	struct csi_service *svc = arg;
	char message[ERROR_MSG_MAX];
	bool ok = false;
	enum error_code rc;

	rc = capabilities_from_proto(req->volume_capabilities, req->n_volume_capabilities, &caps,
				     err);
	if (rc == ERR_OK)
		rc = controller_validate(svc->controller, req->volume_id, caps,
					 req->n_volume_capabilities, &ok, message, sizeof(message),
					 err);
	free(caps);
	if (rc != ERR_OK)
		return rc;
	if (ok) {
		/* Confirmed: the capabilities asked for (context and
		 * parameters are optional in the reply). */
		confirmed.n_volume_capabilities = req->n_volume_capabilities;
		confirmed.volume_capabilities = req->volume_capabilities;
		reply.confirmed = &confirmed;
	} else {
		reply.message = message;
	}
	return rpc_server_reply(call, &reply.base, err);
}

static enum error_code on_controller_capabilities(struct rpc_server_call *call,
						  const ProtobufCMessage *request, void *arg,
						  struct error *err)
{
	Csi__V1__ControllerGetCapabilitiesResponse reply =
		CSI__V1__CONTROLLER_GET_CAPABILITIES_RESPONSE__INIT;
	Csi__V1__ControllerServiceCapability cap = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__INIT;
	Csi__V1__ControllerServiceCapability *caps[1] = { &cap };
	Csi__V1__ControllerServiceCapability__RPC rpc = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__INIT;

	rpc.type = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_VOLUME;
	cap.type_case = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__TYPE_RPC;
	cap.rpc = &rpc;
	reply.n_capabilities = 1;
	reply.capabilities = caps;
	return rpc_server_reply(call, &reply.base, err);
}

/* ---- Node ---------------------------------------------------------------- */

/* Time a handler may spend: the caller's deadline less a margin to reply. */
static uint64_t budget_ms(const struct rpc_server_call *call)
{
	uint64_t left = rpc_server_remaining_ms(call);

	if (left == UINT64_MAX)
		return 0; /* no deadline: the node's own stage_timeout */
	return left > 1000 ? left - 500 : (left ? left : 1);
}

static enum error_code on_stage(struct rpc_server_call *call, const ProtobufCMessage *request,
				void *arg, struct error *err)
{
	const Csi__V1__NodeStageVolumeRequest *req = (const void *)request;
	Csi__V1__NodeStageVolumeResponse reply = CSI__V1__NODE_STAGE_VOLUME_RESPONSE__INIT;
	struct node_stage_request sr = { 0 };
	struct controller_capability cap;
	struct controller_kv *secrets = NULL, *context = NULL;
	struct csi_service *svc = arg;
	enum error_code rc;

	rc = MAP_TO_KV(req, secrets, &secrets, err);
	if (rc == ERR_OK)
		rc = MAP_TO_KV(req, volume_context, &context, err);
	if (rc != ERR_OK) {
		free(secrets);
		return rc;
	}
	if (req->volume_capability) {
		capability_from_proto(req->volume_capability, &cap);
		sr.cap = &cap;
	}
	sr.volume_id = req->volume_id;
	sr.staging_path = req->staging_target_path;
	sr.dataset = MAP_GET(req, volume_context, CONTROLLER_CONTEXT_DATASET);
	sr.context = context;
	sr.ncontext = req->n_volume_context;
	sr.secrets = secrets;
	sr.nsecrets = req->n_secrets;
	rc = node_stage(svc->node, &sr, budget_ms(call), err);
	free(context);
	free(secrets);
	return rc == ERR_OK ? rpc_server_reply(call, &reply.base, err) : rc;
}

static enum error_code on_unstage(struct rpc_server_call *call, const ProtobufCMessage *request,
				  void *arg, struct error *err)
{
	const Csi__V1__NodeUnstageVolumeRequest *req = (const void *)request;
	Csi__V1__NodeUnstageVolumeResponse reply = CSI__V1__NODE_UNSTAGE_VOLUME_RESPONSE__INIT;
	struct csi_service *svc = arg;
	enum error_code rc;

	rc = node_unstage(svc->node, req->volume_id, req->staging_target_path, err);
	return rc == ERR_OK ? rpc_server_reply(call, &reply.base, err) : rc;
}

static enum error_code on_publish(struct rpc_server_call *call, const ProtobufCMessage *request,
				  void *arg, struct error *err)
{
	const Csi__V1__NodePublishVolumeRequest *req = (const void *)request;
	Csi__V1__NodePublishVolumeResponse reply = CSI__V1__NODE_PUBLISH_VOLUME_RESPONSE__INIT;
	struct node_publish_request pr = { 0 };
	struct controller_capability cap;
	struct csi_service *svc = arg;
	enum error_code rc;

	if (req->volume_capability) {
		capability_from_proto(req->volume_capability, &cap);
		pr.cap = &cap;
	}
	pr.volume_id = req->volume_id;
	pr.staging_path = req->staging_target_path;
	pr.target_path = req->target_path;
	/* readonly or not, the bind mount is read-only: the volume is. */
	rc = node_publish(svc->node, &pr, err);
	return rc == ERR_OK ? rpc_server_reply(call, &reply.base, err) : rc;
}

static enum error_code on_unpublish(struct rpc_server_call *call, const ProtobufCMessage *request,
				    void *arg, struct error *err)
{
	const Csi__V1__NodeUnpublishVolumeRequest *req = (const void *)request;
	Csi__V1__NodeUnpublishVolumeResponse reply = CSI__V1__NODE_UNPUBLISH_VOLUME_RESPONSE__INIT;
	struct csi_service *svc = arg;
	enum error_code rc;

	rc = node_unpublish(svc->node, req->volume_id, req->target_path, err);
	return rc == ERR_OK ? rpc_server_reply(call, &reply.base, err) : rc;
}

static enum error_code on_stats(struct rpc_server_call *call, const ProtobufCMessage *request,
				void *arg, struct error *err)
{
	const Csi__V1__NodeGetVolumeStatsRequest *req = (const void *)request;
	Csi__V1__NodeGetVolumeStatsResponse reply = CSI__V1__NODE_GET_VOLUME_STATS_RESPONSE__INIT;
	Csi__V1__VolumeUsage bytes = CSI__V1__VOLUME_USAGE__INIT, inodes = CSI__V1__VOLUME_USAGE__INIT;
	Csi__V1__VolumeUsage *usage[2] = { &bytes, &inodes };
	Csi__V1__VolumeCondition condition = CSI__V1__VOLUME_CONDITION__INIT;
	struct csi_service *svc = arg;
	struct node_condition cond;
	struct node_stats st;
	enum error_code rc;

	rc = node_volume_stats(svc->node, req->volume_id, req->volume_path, &st, &cond, err);
	if (rc != ERR_OK)
		return rc;
	condition.abnormal = cond.abnormal;
	condition.message = cond.message;
	reply.volume_condition = &condition;
	bytes.unit = CSI__V1__VOLUME_USAGE__UNIT__BYTES;
	bytes.total = st.bytes_total;
	bytes.available = st.bytes_available;
	bytes.used = st.bytes_used;
	inodes.unit = CSI__V1__VOLUME_USAGE__UNIT__INODES;
	inodes.total = st.inodes_total;
	inodes.available = st.inodes_available;
	inodes.used = st.inodes_used;
	reply.n_usage = 2;
	reply.usage = usage;
	return rpc_server_reply(call, &reply.base, err);
}

static enum error_code on_node_capabilities(struct rpc_server_call *call,
					    const ProtobufCMessage *request, void *arg,
					    struct error *err)
{
	Csi__V1__NodeGetCapabilitiesResponse reply = CSI__V1__NODE_GET_CAPABILITIES_RESPONSE__INIT;
	static const Csi__V1__NodeServiceCapability__RPC__Type types[] = {
		CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__STAGE_UNSTAGE_VOLUME,
		CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME_STATS,
		CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__VOLUME_CONDITION,
	};
	Csi__V1__NodeServiceCapability cap[COUNT(types)];
	Csi__V1__NodeServiceCapability__RPC rpc[COUNT(types)];
	Csi__V1__NodeServiceCapability *caps[COUNT(types)];

	for (size_t i = 0; i < COUNT(types); i++) {
		csi__v1__node_service_capability__init(&cap[i]);
		csi__v1__node_service_capability__rpc__init(&rpc[i]);
		rpc[i].type = types[i];
		cap[i].type_case = CSI__V1__NODE_SERVICE_CAPABILITY__TYPE_RPC;
		cap[i].rpc = &rpc[i];
		caps[i] = &cap[i];
	}
	reply.n_capabilities = COUNT(types);
	reply.capabilities = caps;
	return rpc_server_reply(call, &reply.base, err);
}

static enum error_code on_node_info(struct rpc_server_call *call, const ProtobufCMessage *request,
				    void *arg, struct error *err)
{
	Csi__V1__NodeGetInfoResponse reply = CSI__V1__NODE_GET_INFO_RESPONSE__INIT;
	struct csi_service *svc = arg;

	/* No topology: every node reaches every dataset. */
	reply.node_id = (char *)svc->node_id;
	reply.max_volumes_per_node = 0;
	return rpc_server_reply(call, &reply.base, err);
}

/* ---- registration -------------------------------------------------------- */

struct method {
	const char *name;
	const ProtobufCMessageDescriptor *request, *reply;
	rpc_server_handler_fn fn;
};

#define METHOD(service, name, req, rep, fn) \
	{ "/csi.v1." service "/" name, &csi__v1__##req##__descriptor, &csi__v1__##rep##__descriptor, fn }

static const struct method identity_methods[] = {
	METHOD("Identity", "GetPluginInfo", get_plugin_info_request, get_plugin_info_response,
	       on_plugin_info),
	METHOD("Identity", "GetPluginCapabilities", get_plugin_capabilities_request,
	       get_plugin_capabilities_response, on_plugin_capabilities),
	METHOD("Identity", "Probe", probe_request, probe_response, on_probe),
};

static const struct method controller_methods[] = {
	METHOD("Controller", "CreateVolume", create_volume_request, create_volume_response,
	       on_create_volume),
	METHOD("Controller", "DeleteVolume", delete_volume_request, delete_volume_response,
	       on_delete_volume),
	METHOD("Controller", "ValidateVolumeCapabilities", validate_volume_capabilities_request,
	       validate_volume_capabilities_response, on_validate),
	METHOD("Controller", "ControllerGetCapabilities", controller_get_capabilities_request,
	       controller_get_capabilities_response, on_controller_capabilities),
};

static const struct method node_methods[] = {
	METHOD("Node", "NodeStageVolume", node_stage_volume_request, node_stage_volume_response,
	       on_stage),
	METHOD("Node", "NodeUnstageVolume", node_unstage_volume_request,
	       node_unstage_volume_response, on_unstage),
	METHOD("Node", "NodePublishVolume", node_publish_volume_request,
	       node_publish_volume_response, on_publish),
	METHOD("Node", "NodeUnpublishVolume", node_unpublish_volume_request,
	       node_unpublish_volume_response, on_unpublish),
	METHOD("Node", "NodeGetVolumeStats", node_get_volume_stats_request,
	       node_get_volume_stats_response, on_stats),
	METHOD("Node", "NodeGetCapabilities", node_get_capabilities_request,
	       node_get_capabilities_response, on_node_capabilities),
	METHOD("Node", "NodeGetInfo", node_get_info_request, node_get_info_response, on_node_info),
};

/* Every method: the raw request checked (above), unpacked by the method's
 * own descriptor, handed to its handler. */
static enum error_code on_raw(struct rpc_server_call *call, const ProtobufCMessage *raw,
			      void *arg, struct error *err)
{
	const struct csi_service_method *b = arg;
	const struct method *m = b->method;
	ProtobufCMessage *req = NULL;
	uint8_t *buf = NULL;
	size_t size;
	enum error_code rc;

	size = protobuf_c_message_get_packed_size(raw);
	buf = malloc(size ? size : 1);
	if (!buf)
		return error_set(err, ERR_NOMEM, "out of memory");
	protobuf_c_message_pack(raw, buf);
	rc = check_strings(m->request, buf, size, "", err);
	if (rc == ERR_OK && !(req = protobuf_c_message_unpack(m->request, NULL, size, buf)))
		rc = error_set(err, ERR_INVALID, "malformed %s", m->request->name);
	if (rc == ERR_OK)
		rc = m->fn(call, req, b->svc, err);
	if (req)
		protobuf_c_message_free_unpacked(req, NULL);
	free(buf);
	return rc;
}

static enum error_code add_all(struct rpc_server *srv, const struct method *m, size_t n,
			       struct csi_service *svc, size_t *used, struct error *err)
{
	for (size_t i = 0; i < n; i++) {
		struct csi_service_method *b = &svc->methods[(*used)++];

		b->svc = svc;
		b->method = &m[i];
		if (rpc_server_add_unary(srv, m[i].name, &raw_request_descriptor, m[i].reply, on_raw,
					 b, err) != ERR_OK)
			return err->code;
	}
	return ERR_OK;
}

enum error_code csi_service_add(struct rpc_server *srv, struct csi_service *svc,
				struct error *err)
{
	size_t used = 0;

	_Static_assert(COUNT(identity_methods) + COUNT(controller_methods) + COUNT(node_methods) <=
			       CSI_SERVICE_METHODS,
		       "csi_service.methods holds every method");
	if (add_all(srv, identity_methods, COUNT(identity_methods), svc, &used, err) != ERR_OK)
		return err->code;
	if (svc->controller && add_all(srv, controller_methods, COUNT(controller_methods), svc,
				       &used, err) != ERR_OK)
		return err->code;
	if (svc->node && add_all(srv, node_methods, COUNT(node_methods), svc, &used, err) != ERR_OK)
		return err->code;
	return ERR_OK;
}
