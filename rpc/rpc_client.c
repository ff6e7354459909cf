/*
 * rpc_client.c - gRPC core client: one channel, one pluck queue per call.
 */
#include "rpc/rpc_client.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/netaddr.h"
#include "rpc/rpc_server.h" /* RPC_DEFAULT_MAX_MESSAGE, RPC_BUSY_METADATA */

struct rpc_client {
	grpc_channel *channel;
	char *address;
	size_t max_message;
	bool wait_for_ready;
	const char *auth_key;
	rpc_client_auth_fn auth;
	void *auth_arg;
};

/*
 * gRPC is initialised once per process and never shut down: grpc_shutdown
 * in libgrpc 1.51 can block for ten seconds on an executor thread after a
 * large streamed reply, which would delay every daemon's exit; the process
 * exit frees it all. Before that first grpc_init, the client channel's
 * backup poller is set to 100 ms (unless the environment chose): in 1.51 it
 * is what drives a reconnection between calls, and its default of 5 s made
 * a client fail for 5 s after a restarted server was back.
 */
static pthread_once_t grpc_once = PTHREAD_ONCE_INIT;

static void grpc_init_once(void)
{
	setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100", 0);
	grpc_init();
}

enum error_code rpc_client_new(const char *address, const struct rpc_client_options *opt,
			       struct rpc_client **out, struct error *err)
{
	struct rpc_client *c = NULL;
	grpc_channel_credentials *creds;
	struct netaddr na;
	char target[400];
	grpc_arg args[5];
	grpc_channel_args cargs;

	*out = NULL;
	if (netaddr_parse(address, "address", &na, err) != ERR_OK)
		return err ? err->code : ERR_INVALID;
	if (na.is_unix)
		snprintf(target, sizeof(target), "unix:%s", na.path);
	else if (strchr(na.host, ':'))
		snprintf(target, sizeof(target), "ipv6:[%s]:%d", na.host, na.port);
	else
		snprintf(target, sizeof(target), "%s:%d", na.host, na.port);
	c = calloc(1, sizeof(*c));
	if (!c || !(c->address = strdup(address))) {
		free(c);
		return error_set(err, ERR_NOMEM, "rpc client '%s': out of memory", address);
	}
	c->max_message = opt && opt->max_message_bytes ? opt->max_message_bytes
						       : RPC_DEFAULT_MAX_MESSAGE;
	if (c->max_message > INT_MAX)
		c->max_message = INT_MAX;
	c->wait_for_ready = opt && opt->wait_for_ready;
	if (opt && opt->auth && opt->auth_key) {
		c->auth_key = opt->auth_key;
		c->auth = opt->auth;
		c->auth_arg = opt->auth_arg;
	}

	pthread_once(&grpc_once, grpc_init_once);
	memset(args, 0, sizeof(args));
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = (int)c->max_message;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[1].value.integer = (int)c->max_message;
	/* Meta is a cluster-local service: after it restarts, find it again
	 * within a second rather than gRPC's default of up to two minutes. */
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
	args[2].value.integer = 100;
	args[3].type = GRPC_ARG_INTEGER;
	args[3].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
	args[3].value.integer = 1000;
	cargs.num_args = 4;
	cargs.args = args;
	if (opt && tls_material_client(opt->tls) && !na.is_unix) {
		grpc_ssl_pem_key_cert_pair pair = { opt->tls->key, opt->tls->cert };

		creds = grpc_ssl_credentials_create(opt->tls->ca, opt->tls->cert ? &pair : NULL,
						    NULL, NULL);
		/* Meta is dialled by Service name or by pod IP; the certificate
		 * names the Service, so the name checked can be set apart from
		 * the address dialled. */
		if (opt->tls->server_name) {
			args[4].type = GRPC_ARG_STRING;
			args[4].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
			args[4].value.string = (char *)opt->tls->server_name;
			cargs.num_args = 5;
		}
	} else {
		creds = grpc_insecure_credentials_create();
	}
	if (!creds) {
		rpc_client_free(c);
		return error_set(err, ERR_INTERNAL, "rpc client '%s': grpc refused the TLS credentials",
				 address);
	}
	c->channel = grpc_channel_create(target, creds, &cargs);
	grpc_channel_credentials_release(creds);
	if (!c->channel) {
		rpc_client_free(c);
		return error_set(err, ERR_INTERNAL, "rpc client '%s': grpc refused the channel",
				 address);
	}
	*out = c;
	return ERR_OK;
}

void rpc_client_free(struct rpc_client *c)
{
	if (!c)
		return;
	if (c->channel)
		grpc_channel_destroy(c->channel);
	free(c->address);
	free(c);
}

const char *rpc_client_address(const struct rpc_client *c)
{
	return c->address;
}

/* "/granary.v1.Meta/GetDataset" -> "GetDataset" */
static const char *short_method(const char *method)
{
	const char *slash = strrchr(method, '/');

	return slash ? slash + 1 : method;
}

static void init_op(grpc_op *op, grpc_op_type type)
{
	memset(op, 0, sizeof(*op));
	op->op = type;
}

/* The per-call state both kinds of call share. */
struct call {
	struct rpc_client *c;
	const char *method;
	grpc_completion_queue *cq;
	grpc_call *call;
	grpc_byte_buffer *request;
	grpc_metadata md[2];     /* sent with the call: the signature, the caller's extra */
	size_t nmd;
	grpc_metadata_array initial_md, trailing_md;
	grpc_status_code status;
	grpc_slice details;
	char tag_start, tag_status, tag_recv;
};

static enum error_code call_start(struct call *k, struct rpc_client *c, const char *method,
				  const ProtobufCMessage *request, uint64_t timeout_ms,
				  const struct rpc_client_metadata *extra, struct error *err)
{
	size_t size = protobuf_c_message_get_packed_size(request);
	gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_REALTIME);
	grpc_slice method_slice, payload;

	memset(k, 0, sizeof(*k));
	k->c = c;
	k->method = method;
	grpc_metadata_array_init(&k->initial_md);
	grpc_metadata_array_init(&k->trailing_md);
	k->details = grpc_empty_slice();
	if (size > c->max_message)
		return error_set(err, ERR_NO_SPACE,
				 "%s at '%s': request of %zu bytes is over the %zu-byte message limit",
				 short_method(method), c->address, size, c->max_message);
	payload = grpc_slice_malloc(size);
	protobuf_c_message_pack(request, GRPC_SLICE_START_PTR(payload));
	if (c->auth) {
		char value[RPC_AUTH_VALUE_MAX];
		enum error_code rc;

		value[0] = '\0';
		rc = c->auth(method, GRPC_SLICE_START_PTR(payload), size, value, sizeof(value),
			     c->auth_arg, err);
		if (rc != ERR_OK) {
			grpc_slice_unref(payload);
			if (err)
				error_wrap(err, "%s at '%s'", short_method(method), c->address);
			return rc;
		}
		k->md[k->nmd].key = grpc_slice_from_static_string(c->auth_key);
		k->md[k->nmd].value = grpc_slice_from_copied_string(value);
		k->nmd++;
	}
	if (extra && extra->key && extra->value) {
		k->md[k->nmd].key = grpc_slice_from_static_string(extra->key);
		k->md[k->nmd].value = grpc_slice_from_copied_string(extra->value);
		k->nmd++;
	}
	k->request = grpc_raw_byte_buffer_create(&payload, 1);
	grpc_slice_unref(payload);
	if (timeout_ms)
		deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					gpr_time_from_millis((int64_t)timeout_ms, GPR_TIMESPAN));
	k->cq = grpc_completion_queue_create_for_pluck(NULL);
	method_slice = grpc_slice_from_copied_string(method);
	k->call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, k->cq,
					   method_slice, NULL, deadline, NULL);
	grpc_slice_unref(method_slice);
	if (!k->call)
		return error_set(err, ERR_INTERNAL, "%s at '%s': grpc refused the call",
				 short_method(method), c->address);
	return ERR_OK;
}

static void add_send_ops(struct call *k, grpc_op *ops, size_t *n)
{
	init_op(&ops[*n], GRPC_OP_SEND_INITIAL_METADATA);
	if (k->nmd) {
		ops[*n].data.send_initial_metadata.count = k->nmd;
		ops[*n].data.send_initial_metadata.metadata = k->md;
	}
	if (k->c->wait_for_ready)
		ops[*n].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
				GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
	(*n)++;
	init_op(&ops[*n], GRPC_OP_SEND_MESSAGE);
	ops[*n].data.send_message.send_message = k->request;
	(*n)++;
	init_op(&ops[*n], GRPC_OP_SEND_CLOSE_FROM_CLIENT);
	(*n)++;
	init_op(&ops[*n], GRPC_OP_RECV_INITIAL_METADATA);
	ops[*n].data.recv_initial_metadata.recv_initial_metadata = &k->initial_md;
	(*n)++;
}

static void add_status_op(struct call *k, grpc_op *ops, size_t *n)
{
	init_op(&ops[*n], GRPC_OP_RECV_STATUS_ON_CLIENT);
	ops[*n].data.recv_status_on_client.trailing_metadata = &k->trailing_md;
	ops[*n].data.recv_status_on_client.status = &k->status;
	ops[*n].data.recv_status_on_client.status_details = &k->details;
	(*n)++;
}

static bool run(struct call *k, grpc_op *ops, size_t n, void *tag)
{
	grpc_event ev;

	if (grpc_call_start_batch(k->call, ops, n, tag, NULL) != GRPC_CALL_OK)
		return false;
	ev = grpc_completion_queue_pluck(k->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Whether the server marked its UNAVAILABLE as a refusal for load. */
static bool refused_busy(const struct call *k)
{
	for (size_t i = 0; i < k->trailing_md.count; i++)
		if (grpc_slice_str_cmp(k->trailing_md.metadata[i].key, RPC_BUSY_METADATA) == 0)
			return true;
	return false;
}

static enum error_code status_error(struct call *k, struct error *err)
{
	enum error_code code = error_from_grpc((int)k->status);

	if (code == ERR_OK)
		return ERR_OK;
	if (code == ERR_UNAVAILABLE && refused_busy(k))
		code = ERR_BUSY;
	return error_set(err, code, "%s at '%s': %.*s", short_method(k->method), k->c->address,
			 (int)GRPC_SLICE_LENGTH(k->details),
			 (const char *)GRPC_SLICE_START_PTR(k->details));
}

static void call_end(struct call *k)
{
	if (k->call)
		grpc_call_unref(k->call);
	if (k->cq) {
		grpc_completion_queue_shutdown(k->cq);
		grpc_completion_queue_destroy(k->cq);
	}
	if (k->request)
		grpc_byte_buffer_destroy(k->request);
	for (size_t i = 0; i < k->nmd; i++) {
		grpc_slice_unref(k->md[i].key);
		grpc_slice_unref(k->md[i].value);
	}
	grpc_metadata_array_destroy(&k->initial_md);
	grpc_metadata_array_destroy(&k->trailing_md);
	grpc_slice_unref(k->details);
}

static ProtobufCMessage *unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc)
{
	grpc_byte_buffer_reader reader;
	ProtobufCMessage *msg;
	grpc_slice all;

	if (!grpc_byte_buffer_reader_init(&reader, bb))
		return NULL;
	all = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	msg = protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all),
					GRPC_SLICE_START_PTR(all));
	grpc_slice_unref(all);
	return msg;
}

enum error_code rpc_client_call(struct rpc_client *c, const char *method,
				const ProtobufCMessage *request,
				const ProtobufCMessageDescriptor *reply_desc, uint64_t timeout_ms,
				ProtobufCMessage **reply, struct error *err)
{
	return rpc_client_call_with(c, method, request, reply_desc, timeout_ms, NULL, reply, err);
}

enum error_code rpc_client_call_with(struct rpc_client *c, const char *method,
				     const ProtobufCMessage *request,
				     const ProtobufCMessageDescriptor *reply_desc,
				     uint64_t timeout_ms, const struct rpc_client_metadata *extra,
				     ProtobufCMessage **reply, struct error *err)
{
	grpc_byte_buffer *bb = NULL;
	struct call k;
	grpc_op ops[6];
	size_t n = 0;
	enum error_code code;

	*reply = NULL;
	code = call_start(&k, c, method, request, timeout_ms, extra, err);
	if (code != ERR_OK)
		goto out;
	add_send_ops(&k, ops, &n);
	init_op(&ops[n], GRPC_OP_RECV_MESSAGE);
	ops[n++].data.recv_message.recv_message = &bb;
	add_status_op(&k, ops, &n);
	if (!run(&k, ops, n, &k.tag_start)) {
		code = error_set(err, ERR_INTERNAL, "%s at '%s': call failed in gRPC",
				 short_method(method), c->address);
		goto out;
	}
	code = status_error(&k, err);
	if (code != ERR_OK)
		goto out;
	if (!bb) {
		code = error_set(err, ERR_IO, "%s at '%s': status OK without a reply",
				 short_method(method), c->address);
		goto out;
	}
	*reply = unpack(bb, reply_desc);
	if (!*reply)
		code = error_set(err, ERR_IO, "%s at '%s': malformed %s reply", short_method(method),
				 c->address, reply_desc->name);
out:
	if (bb)
		grpc_byte_buffer_destroy(bb);
	call_end(&k);
	return code;
}

enum error_code rpc_client_stream(struct rpc_client *c, const char *method,
				  const ProtobufCMessage *request,
				  const ProtobufCMessageDescriptor *reply_desc, uint64_t timeout_ms,
				  rpc_client_message_fn fn, void *arg, struct error *err)
{
	enum error_code code, stopped = ERR_OK;
	struct error fn_err;
	struct call k;
	grpc_op ops[5];
	size_t n = 0;
	bool status_started;

	error_clear(&fn_err);
	code = call_start(&k, c, method, request, timeout_ms, NULL, err);
	if (code != ERR_OK)
		goto out;
	/* The status op is started first and completes after the last message;
	 * messages are received one at a time in between. */
	add_status_op(&k, ops, &n);
	status_started = grpc_call_start_batch(k.call, ops, n, &k.tag_status, NULL) == GRPC_CALL_OK;
	n = 0;
	add_send_ops(&k, ops, &n);
	if (run(&k, ops, n, &k.tag_start)) {
		for (;;) {
			grpc_byte_buffer *bb = NULL;
			ProtobufCMessage *msg;

			init_op(&ops[0], GRPC_OP_RECV_MESSAGE);
			ops[0].data.recv_message.recv_message = &bb;
			if (!run(&k, ops, 1, &k.tag_recv) || !bb)
				break;
			msg = unpack(bb, reply_desc);
			grpc_byte_buffer_destroy(bb);
			if (!msg) {
				stopped = error_set(&fn_err, ERR_IO, "%s at '%s': malformed %s message",
						    short_method(method), c->address,
						    reply_desc->name);
			} else {
				stopped = fn(msg, arg, &fn_err);
				protobuf_c_message_free_unpacked(msg, NULL);
			}
			if (stopped != ERR_OK) {
				grpc_call_cancel(k.call, NULL);
				break;
			}
		}
	}
	if (!status_started) {
		code = error_set(err, ERR_INTERNAL, "%s at '%s': call failed in gRPC",
				 short_method(method), c->address);
		goto out;
	}
	grpc_completion_queue_pluck(k.cq, &k.tag_status, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	if (stopped != ERR_OK) {
		if (!fn_err.msg[0])
			error_set(&fn_err, stopped, "%s at '%s': stopped by the receiver: %s",
				  short_method(method), c->address, error_code_name(stopped));
		fn_err.code = stopped;
		if (err)
			*err = fn_err;
		code = stopped;
		goto out;
	}
	code = status_error(&k, err);
out:
	call_end(&k);
	return code;
}
