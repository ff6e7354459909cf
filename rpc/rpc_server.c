/*
 * rpc_server.c - gRPC core server: a pool of workers, one completion queue
 * for new calls, one pluck queue per call.
 *
 * A call comes to the pool with its request: every method is registered
 * with gRPC to read the first message before the call is announced (its
 * one request, unary or server streaming alike), so a client that opens
 * calls and sends no request holds no worker, however many it opens; its
 * calls wait in gRPC until the request, the client's deadline or its
 * disconnection. A method not registered has generic requests of its own,
 * answered UNIMPLEMENTED at once, without reading anything.
 *
 * Why a queue per call: a worker runs its call start to end with blocking
 * batches (handler, send replies, send status). Were those batches
 * completed on the shared queue, a worker waiting for its own send could
 * only be woken by another worker, and N handlers waiting at once would
 * deadlock the pool. With a pluck queue bound to each call, a worker waits
 * on its own call only.
 *
 * Each method, and the methods not registered, keep `threads` requests for
 * new calls outstanding: a worker that receives a call asks gRPC for the
 * next one of the same method before it runs the handler, so calls that
 * arrive while every worker is busy wait in gRPC's queues.
 *
 * So that no client holds a worker for good: every batch waits at most
 * stall_ms for the client (a reply or stream message not read: HTTP/2 flow
 * control holds a send until the client reads), then the call is
 * cancelled; and at most max_streams workers run streaming handlers, which
 * wait on their client the longest, so that the others are left for unary
 * calls (heartbeats). A stream past them is refused with ERR_BUSY
 * (UNAVAILABLE and RPC_BUSY_METADATA), which a client retries.
 */
#include "rpc/rpc_server.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "common/cpu.h"
#include "common/log.h"
#include "common/netaddr.h"
#include "common/retry.h"

enum tag_kind { TAG_SLOT = 1, TAG_SHUTDOWN };

struct method {
	char *name;
	bool streaming;
	const ProtobufCMessageDescriptor *request, *reply;
	rpc_server_handler_fn fn;
	void *arg;
	void *registered; /* gRPC's handle of the method */
};

/* One outstanding request for a new call of method m (NULL: of a method
 * not registered): the call lands here. */
struct slot {
	enum tag_kind kind; /* first: tags on srv->cq start with their kind */
	const struct method *m;
	grpc_call *call;
	grpc_call_details details; /* m == NULL: the method and deadline */
	gpr_timespec deadline;     /* m != NULL */
	grpc_byte_buffer *request; /* m != NULL: the request; NULL when none came */
	grpc_metadata_array md;
	grpc_completion_queue *cq; /* pluck queue bound to the call */
};

struct rpc_server {
	grpc_server *server;
	grpc_completion_queue *cq; /* new calls and the shutdown notification */
	struct method *methods;
	size_t nmethods;
	const char *auth_key;      /* metadata key given to auth_fn */
	rpc_server_auth_fn auth_fn;
	void *auth_arg;
	unsigned nthreads;
	pthread_t *threads;
	size_t max_message;
	uint64_t grace_ms;
	uint64_t stall_ms;     /* one batch's wait for the client */
	unsigned max_streams;  /* streaming handlers at once */
	const struct tls_material *tls; /* the caller's, until the last listen */
	enum tag_kind shutdown_tag;
	bool started, stopped; /* set by the owner thread only */
	bool abandoned;        /* shutdown gave up waiting for handlers */

	pthread_mutex_t mu;
	pthread_cond_t cond;
	unsigned in_flight;    /* protected by mu: calls whose handler runs */
	unsigned streams;      /* protected by mu: streaming handlers running */
	unsigned pending;      /* protected by mu: requests not yet answered */
	bool stopping;         /* protected by mu: no new requests */
	bool shutdown_done;    /* protected by mu: gRPC's shutdown tag arrived */
	bool cancelling;       /* protected by mu: grace over, calls cancelled */
};

struct rpc_server_call {
	struct rpc_server *srv;
	const struct method *m;
	grpc_call *call;
	grpc_completion_queue *cq;
	gpr_timespec deadline;   /* monotonic; inf_future when none */
	char method_name[256];
	char *peer;              /* gpr_malloc'd */
	const grpc_metadata_array *md; /* the client's initial metadata */
	bool sent_initial;
	bool closed;             /* RECV_CLOSE_ON_SERVER completed */
	int close_cancelled;     /* its result */
	bool send_failed;
	bool stalled;            /* a batch outwaited stall_ms: cancelled */
	grpc_byte_buffer *reply; /* unary reply, packed */
	/* distinct addresses used as pluck tags */
	char tag_close, tag_send, tag_status;
};

static grpc_byte_buffer *pack_message(const ProtobufCMessage *msg, size_t max, size_t *size)
{
	size_t n = protobuf_c_message_get_packed_size(msg);
	grpc_byte_buffer *bb;
	grpc_slice slice;

	*size = n;
	if (n > max)
		return NULL;
	slice = grpc_slice_malloc(n);
	protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
	bb = grpc_raw_byte_buffer_create(&slice, 1);
	grpc_slice_unref(slice);
	return bb;
}

/* The whole message in one slice; false when gRPC cannot read it. */
static bool read_message(grpc_byte_buffer *bb, grpc_slice *all)
{
	grpc_byte_buffer_reader reader;

	if (!grpc_byte_buffer_reader_init(&reader, bb))
		return false;
	*all = grpc_byte_buffer_reader_readall(&reader);
	grpc_byte_buffer_reader_destroy(&reader);
	return true;
}

/* A copy of the first value of key among the call's metadata (malloc'd),
 * or NULL when there is none. */
static char *metadata_value(const grpc_metadata_array *md, const char *key)
{
	size_t klen = strlen(key);

	for (size_t i = 0; i < md->count; i++) {
		const grpc_metadata *m = &md->metadata[i];

		if (GRPC_SLICE_LENGTH(m->key) == klen &&
		    memcmp(GRPC_SLICE_START_PTR(m->key), key, klen) == 0)
			return strndup((const char *)GRPC_SLICE_START_PTR(m->value),
				       GRPC_SLICE_LENGTH(m->value));
	}
	return NULL;
}

/* What a call that outwaited stall_ms is told, and fails with. */
static enum error_code stalled_error(const struct rpc_server_call *c, struct error *err)
{
	return error_set(err, ERR_TIMEOUT,
			 "%s: the client read nothing for %llu ms (the server's stall timeout): call ended",
			 c->method_name, (unsigned long long)c->srv->stall_ms);
}

/* Runs a batch on the call's own queue and waits for it, at most stall_ms:
 * then the call is cancelled with DEADLINE_EXCEEDED (c->stalled), which
 * completes the batch at once, failed. Returns the batch's success flag. */
static bool run_batch(struct rpc_server_call *c, grpc_op *ops, size_t n, void *tag)
{
	grpc_call_error rc = grpc_call_start_batch(c->call, ops, n, tag, NULL);
	gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					  gpr_time_from_millis((int64_t)c->srv->stall_ms,
							       GPR_TIMESPAN));
	grpc_event ev;

	if (rc != GRPC_CALL_OK) {
		log_error("rpc batch refused", LOG_S("method", c->method_name),
			  LOG_S("cause", grpc_call_error_to_string(rc)));
		return false;
	}
	ev = grpc_completion_queue_pluck(c->cq, tag, until, NULL);
	if (ev.type == GRPC_QUEUE_TIMEOUT) {
		struct error err;

		c->stalled = true;
		stalled_error(c, &err);
		log_warn("rpc client stalled, call cancelled", LOG_S("method", c->method_name),
			 LOG_S("peer", c->peer), LOG_U("stall_timeout_ms", c->srv->stall_ms));
		grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, err.msg,
					     NULL);
		ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME),
						 NULL);
	}
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void init_op(grpc_op *op, grpc_op_type type)
{
	memset(op, 0, sizeof(*op));
	op->op = type;
}

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

/* ---- the server object ------------------------------------------------- */

enum error_code rpc_server_new(const struct rpc_server_options *opt, struct rpc_server **out,
			       struct error *err)
{
	struct rpc_server *srv = NULL;
	grpc_arg args[3];
	grpc_channel_args cargs;

	*out = NULL;
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return error_set(err, ERR_NOMEM, "rpc server: out of memory");
	srv->nthreads = opt && opt->threads ? opt->threads : (unsigned)cpu_available();
	srv->max_message = opt && opt->max_message_bytes ? opt->max_message_bytes
							 : RPC_DEFAULT_MAX_MESSAGE;
	if (srv->max_message > INT_MAX)
		srv->max_message = INT_MAX;
	srv->grace_ms = opt && opt->shutdown_grace_ms ? opt->shutdown_grace_ms : 10000;
	srv->stall_ms = opt && opt->stall_timeout_ms ? opt->stall_timeout_ms
						     : RPC_DEFAULT_STALL_TIMEOUT_MS;
	srv->max_streams = opt && opt->max_streams ? opt->max_streams
						   : (srv->nthreads / 2 ? srv->nthreads / 2 : 1);
	srv->tls = opt && tls_material_server(opt->tls) ? opt->tls : NULL;
	srv->shutdown_tag = TAG_SHUTDOWN;
	pthread_mutex_init(&srv->mu, NULL);
	pthread_cond_init(&srv->cond, NULL);

	pthread_once(&grpc_once, grpc_init_once);
	memset(args, 0, sizeof(args));
	args[0].type = GRPC_ARG_INTEGER;
	args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
	args[0].value.integer = (int)srv->max_message;
	args[1].type = GRPC_ARG_INTEGER;
	args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
	args[1].value.integer = (int)srv->max_message;
	args[2].type = GRPC_ARG_INTEGER;
	args[2].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
	args[2].value.integer = RPC_STREAMS_PER_CONNECTION;
	cargs.num_args = 3;
	cargs.args = args;
	srv->cq = grpc_completion_queue_create_for_next(NULL);
	srv->server = grpc_server_create(&cargs, NULL);
	if (!srv->cq || !srv->server) {
		rpc_server_free(srv);
		return error_set(err, ERR_INTERNAL, "rpc server: grpc refused to create a server");
	}
	grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
	*out = srv;
	return ERR_OK;
}

static bool method_name_ok(const char *name)
{
	const char *slash;

	/* "/pkg.Service/Method": a leading '/', a service, one more '/', a method. */
	if (!name || name[0] != '/' || strlen(name) >= sizeof(((struct rpc_server_call *)0)->method_name))
		return false;
	slash = strchr(name + 1, '/');
	return slash && slash > name + 1 && slash[1] && !strchr(slash + 1, '/');
}

void rpc_server_set_auth(struct rpc_server *srv, const char *key, rpc_server_auth_fn fn,
			 void *arg)
{
	if (srv->started)
		return;
	srv->auth_key = key;
	srv->auth_fn = fn;
	srv->auth_arg = arg;
}

static enum error_code add_method(struct rpc_server *srv, const char *name, bool streaming,
				  const ProtobufCMessageDescriptor *request,
				  const ProtobufCMessageDescriptor *reply,
				  rpc_server_handler_fn fn, void *arg, struct error *err)
{
	struct method *grown;

	if (srv->started)
		return error_set(err, ERR_INTERNAL, "rpc method '%s': added after start", name);
	if (!method_name_ok(name) || !request || !reply || !fn)
		return error_set(err, ERR_INVALID,
				 "rpc method '%s': expected /package.Service/Method with descriptors and a handler",
				 name ? name : "");
	for (size_t i = 0; i < srv->nmethods; i++)
		if (strcmp(srv->methods[i].name, name) == 0)
			return error_set(err, ERR_EXISTS, "rpc method '%s': registered twice", name);
	grown = realloc(srv->methods, (srv->nmethods + 1) * sizeof(*grown));
	if (!grown)
		return error_set(err, ERR_NOMEM, "rpc method '%s': out of memory", name);
	srv->methods = grown;
	grown[srv->nmethods] = (struct method){ .name = strdup(name), .streaming = streaming,
						.request = request, .reply = reply,
						.fn = fn, .arg = arg };
	if (!grown[srv->nmethods].name)
		return error_set(err, ERR_NOMEM, "rpc method '%s': out of memory", name);
	/* gRPC announces a call only once it has read the request (or the
	 * client half-closed without one), so that no worker waits for it. */
	grown[srv->nmethods].registered = grpc_server_register_method(
		srv->server, name, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
	if (!grown[srv->nmethods].registered) {
		free(grown[srv->nmethods].name);
		return error_set(err, ERR_INTERNAL, "rpc method '%s': grpc refused to register it",
				 name);
	}
	srv->nmethods++;
	return ERR_OK;
}

enum error_code rpc_server_add_unary(struct rpc_server *srv, const char *method,
				     const ProtobufCMessageDescriptor *request,
				     const ProtobufCMessageDescriptor *reply,
				     rpc_server_handler_fn fn, void *arg, struct error *err)
{
	return add_method(srv, method, false, request, reply, fn, arg, err);
}

enum error_code rpc_server_add_stream(struct rpc_server *srv, const char *method,
				      const ProtobufCMessageDescriptor *request,
				      const ProtobufCMessageDescriptor *reply,
				      rpc_server_handler_fn fn, void *arg, struct error *err)
{
	return add_method(srv, method, true, request, reply, fn, arg, err);
}

enum error_code rpc_server_listen(struct rpc_server *srv, const char *address, int *bound_port,
				  struct error *err)
{
	struct netaddr na;
	grpc_server_credentials *creds;
	char target[400];
	int port;

	if (bound_port)
		*bound_port = 0;
	if (srv->started)
		return error_set(err, ERR_INTERNAL, "listen '%s': server already started", address);
	if (netaddr_parse(address, "listen", &na, err) != ERR_OK)
		return err ? err->code : ERR_INVALID;
	/* gRPC spells a unix socket "unix:/path", an IPv6 host in brackets. */
	if (na.is_unix)
		snprintf(target, sizeof(target), "unix:%s", na.path);
	else if (strchr(na.host, ':'))
		snprintf(target, sizeof(target), "[%s]:%d", na.host, na.port);
	else
		snprintf(target, sizeof(target), "%s:%d", na.host, na.port);
	if (srv->tls && !na.is_unix) {
		grpc_ssl_pem_key_cert_pair pair = { srv->tls->key, srv->tls->cert };

		creds = grpc_ssl_server_credentials_create_ex(
			srv->tls->ca, &pair, 1,
			srv->tls->ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
				     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
			NULL);
	} else {
		creds = grpc_insecure_server_credentials_create();
	}
	if (!creds)
		return error_set(err, ERR_INTERNAL, "listen '%s': grpc refused the TLS credentials",
				 address);
	port = grpc_server_add_http2_port(srv->server, target, creds);
	grpc_server_credentials_release(creds);
	if (port <= 0)
		return error_set(err, ERR_UNAVAILABLE,
				 "listen '%s': cannot bind (address in use, missing directory or not allowed)",
				 address);
	if (bound_port)
		*bound_port = na.is_unix ? 0 : port;
	return ERR_OK;
}

/* ---- calls ------------------------------------------------------------- */

/* Asks gRPC for the next call of method m (NULL: of any method not
 * registered). */
static void request_slot(struct rpc_server *srv, const struct method *m)
{
	struct slot *s = calloc(1, sizeof(*s));
	grpc_call_error rc;

	if (!s) {
		log_error("rpc server: out of memory requesting a call");
		return;
	}
	s->kind = TAG_SLOT;
	s->m = m;
	grpc_call_details_init(&s->details);
	grpc_metadata_array_init(&s->md);
	s->cq = grpc_completion_queue_create_for_pluck(NULL);
	pthread_mutex_lock(&srv->mu);
	srv->pending++;
	pthread_mutex_unlock(&srv->mu);
	if (m)
		rc = grpc_server_request_registered_call(srv->server, m->registered, &s->call,
							 &s->deadline, &s->md, &s->request, s->cq,
							 srv->cq, s);
	else
		rc = grpc_server_request_call(srv->server, &s->call, &s->details, &s->md, s->cq,
					      srv->cq, s);
	if (rc != GRPC_CALL_OK) {
		log_error("rpc server: request for a call refused",
			  LOG_S("method", m ? m->name : "(not registered)"),
			  LOG_S("cause", grpc_call_error_to_string(rc)));
		pthread_mutex_lock(&srv->mu);
		srv->pending--;
		pthread_cond_broadcast(&srv->cond);
		pthread_mutex_unlock(&srv->mu);
		grpc_call_details_destroy(&s->details);
		grpc_metadata_array_destroy(&s->md);
		grpc_completion_queue_destroy(s->cq);
		free(s);
	}
}

static void slot_free(struct slot *s)
{
	if (s->call)
		grpc_call_unref(s->call);
	if (s->request)
		grpc_byte_buffer_destroy(s->request);
	grpc_call_details_destroy(&s->details);
	grpc_metadata_array_destroy(&s->md);
	/* Every batch of the call was plucked: the queue is empty. */
	grpc_completion_queue_shutdown(s->cq);
	grpc_completion_queue_destroy(s->cq);
	free(s);
}

/* Takes one of the max_streams places for a streaming handler; false when
 * none is left. */
static bool stream_admit(struct rpc_server *srv)
{
	bool ok;

	pthread_mutex_lock(&srv->mu);
	ok = srv->streams < srv->max_streams;
	if (ok)
		srv->streams++;
	pthread_mutex_unlock(&srv->mu);
	return ok;
}

static void stream_done(struct rpc_server *srv)
{
	pthread_mutex_lock(&srv->mu);
	srv->streams--;
	pthread_mutex_unlock(&srv->mu);
}

static void handle_call(struct rpc_server *srv, struct slot *s)
{
	struct rpc_server_call c;
	ProtobufCMessage *request = NULL;
	grpc_slice body = grpc_empty_slice();
	enum error_code code = ERR_OK;
	struct error err;
	grpc_op ops[3];
	size_t nops = 0, mlen;
	grpc_slice details;
	grpc_metadata busy_md;
	uint64_t t0 = retry_now_ms();

	error_clear(&err);
	memset(&c, 0, sizeof(c));
	c.srv = srv;
	c.m = s->m;
	c.call = s->call;
	c.cq = s->cq;
	if (c.m) {
		c.deadline = gpr_convert_clock_type(s->deadline, GPR_CLOCK_MONOTONIC);
		snprintf(c.method_name, sizeof(c.method_name), "%s", c.m->name);
	} else {
		c.deadline = gpr_convert_clock_type(s->details.deadline, GPR_CLOCK_MONOTONIC);
		mlen = GRPC_SLICE_LENGTH(s->details.method);
		if (mlen >= sizeof(c.method_name))
			mlen = sizeof(c.method_name) - 1;
		memcpy(c.method_name, GRPC_SLICE_START_PTR(s->details.method), mlen);
		c.method_name[mlen] = '\0';
	}
	c.peer = grpc_call_get_peer(c.call);
	c.md = &s->md;

	/* Learn about cancellation whenever it happens. */
	init_op(&ops[0], GRPC_OP_RECV_CLOSE_ON_SERVER);
	ops[0].data.recv_close_on_server.cancelled = &c.close_cancelled;
	if (grpc_call_start_batch(c.call, ops, 1, &c.tag_close, NULL) != GRPC_CALL_OK)
		c.closed = true; /* nothing to pluck */

	if (!c.m) {
		code = error_set(&err, ERR_UNSUPPORTED, "method '%s' is not served here",
				 c.method_name);
		goto status;
	}
	if (!s->request) { /* the client half-closed without sending one */
		code = error_set(&err, ERR_INVALID, "%s: no request message", c.method_name);
		goto status;
	}
	if (!read_message(s->request, &body)) {
		code = error_set(&err, ERR_INVALID, "%s: unreadable request", c.method_name);
		goto status;
	}
	if (srv->auth_fn) {
		char *value = metadata_value(&s->md, srv->auth_key);

		code = srv->auth_fn(c.method_name, value, GRPC_SLICE_START_PTR(body),
				    GRPC_SLICE_LENGTH(body), srv->auth_arg, &err);
		free(value);
		if (code != ERR_OK)
			goto status;
	}
	request = protobuf_c_message_unpack(c.m->request, NULL, GRPC_SLICE_LENGTH(body),
					    GRPC_SLICE_START_PTR(body));
	if (!request) {
		code = error_set(&err, ERR_INVALID, "%s: malformed %s request", c.method_name,
				 c.m->request->name);
		goto status;
	}
	if (c.m->streaming && !stream_admit(srv)) {
		code = error_set(&err, ERR_BUSY,
				 "%s: %u streaming calls are in progress, the most this server runs at once (its other threads are kept for unary calls); retry later",
				 c.method_name, srv->max_streams);
		goto status;
	}
	code = c.m->fn(&c, request, c.m->arg, &err);
	if (c.m->streaming)
		stream_done(srv);
	if (code == ERR_OK && !c.m->streaming && !c.reply)
		code = error_set(&err, ERR_INTERNAL, "%s: the handler sent no reply", c.method_name);
	if (code != ERR_OK && !err.msg[0])
		error_set(&err, code, "%s: %s", c.method_name, error_code_name(code));

status:
	nops = 0;
	if (!c.sent_initial) {
		init_op(&ops[nops], GRPC_OP_SEND_INITIAL_METADATA);
		nops++;
	}
	if (code == ERR_OK && c.reply) {
		init_op(&ops[nops], GRPC_OP_SEND_MESSAGE);
		ops[nops].data.send_message.send_message = c.reply;
		nops++;
	}
	details = grpc_slice_from_copied_string(code == ERR_OK ? "" : err.msg);
	init_op(&ops[nops], GRPC_OP_SEND_STATUS_FROM_SERVER);
	ops[nops].data.send_status_from_server.status = (grpc_status_code)error_to_grpc(code);
	ops[nops].data.send_status_from_server.status_details = &details;
	if (code == ERR_BUSY) {
		/* UNAVAILABLE alone is also "not there" or "not built yet":
		 * this tells a client that only load refused the call. */
		busy_md.key = grpc_slice_from_static_string(RPC_BUSY_METADATA);
		busy_md.value = grpc_slice_from_static_string("1");
		ops[nops].data.send_status_from_server.trailing_metadata_count = 1;
		ops[nops].data.send_status_from_server.trailing_metadata = &busy_md;
	}
	nops++;
	run_batch(&c, ops, nops, &c.tag_status);
	grpc_slice_unref(details);
	if (!c.closed)
		grpc_completion_queue_pluck(c.cq, &c.tag_close, gpr_inf_future(GPR_CLOCK_REALTIME),
					    NULL);

	if (code == ERR_OK)
		log_debug("rpc", LOG_S("method", c.method_name), LOG_S("peer", c.peer),
			  LOG_U("ms", retry_now_ms() - t0));
	else
		log_info("rpc failed", LOG_S("method", c.method_name), LOG_S("peer", c.peer),
			 LOG_S("code", error_code_name(code)), LOG_S("cause", err.msg),
			 LOG_U("ms", retry_now_ms() - t0));
	if (request)
		protobuf_c_message_free_unpacked(request, NULL);
	grpc_slice_unref(body);
	if (c.reply)
		grpc_byte_buffer_destroy(c.reply);
	gpr_free(c.peer);
}

static void *worker_main(void *arg)
{
	struct rpc_server *srv = arg;

	for (;;) {
		grpc_event ev = grpc_completion_queue_next(srv->cq,
							   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		struct slot *s;
		bool stopping;

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE)
			continue;
		if (*(enum tag_kind *)ev.tag == TAG_SHUTDOWN) {
			pthread_mutex_lock(&srv->mu);
			srv->shutdown_done = true;
			pthread_cond_broadcast(&srv->cond);
			pthread_mutex_unlock(&srv->mu);
			continue;
		}
		s = ev.tag;
		pthread_mutex_lock(&srv->mu);
		srv->pending--;
		if (ev.success)
			srv->in_flight++;
		stopping = srv->stopping;
		pthread_cond_broadcast(&srv->cond);
		pthread_mutex_unlock(&srv->mu);
		if (!ev.success) { /* a request failed at shutdown */
			slot_free(s);
			continue;
		}
		if (!stopping)
			request_slot(srv, s->m);
		handle_call(srv, s);
		slot_free(s);
		pthread_mutex_lock(&srv->mu);
		srv->in_flight--;
		pthread_cond_broadcast(&srv->cond);
		pthread_mutex_unlock(&srv->mu);
	}
	return NULL;
}

enum error_code rpc_server_start(struct rpc_server *srv, struct error *err)
{
	if (srv->started)
		return error_set(err, ERR_INTERNAL, "rpc server: started twice");
	srv->threads = calloc(srv->nthreads, sizeof(*srv->threads));
	if (!srv->threads)
		return error_set(err, ERR_NOMEM, "rpc server: out of memory");
	grpc_server_start(srv->server);
	srv->started = true;
	for (unsigned i = 0; i < srv->nthreads; i++) {
		request_slot(srv, NULL);
		for (size_t j = 0; j < srv->nmethods; j++)
			request_slot(srv, &srv->methods[j]);
	}
	for (unsigned i = 0; i < srv->nthreads; i++) {
		int rc = pthread_create(&srv->threads[i], NULL, worker_main, srv);

		if (rc != 0) {
			/* Serve with the threads we have; shutdown joins those. */
			log_error("rpc server: thread not started", LOG_S("cause", strerror(rc)),
				  LOG_U("threads", i));
			srv->nthreads = i;
			if (i == 0) {
				rpc_server_shutdown(srv);
				return error_set(err, ERR_NOMEM, "rpc server: no thread: %s",
						 strerror(rc));
			}
			break;
		}
	}
	log_info("rpc server started", LOG_U("threads", srv->nthreads),
		 LOG_U("methods", srv->nmethods), LOG_U("max_message", srv->max_message),
		 LOG_U("max_streams", srv->max_streams), LOG_U("stall_timeout_ms", srv->stall_ms));
	return ERR_OK;
}

/* Waits until gRPC confirmed the shutdown and no call is in a handler or
 * pending; false if deadline (CLOCK_REALTIME, NULL = none) passed first. */
static bool wait_drained(struct rpc_server *srv, const struct timespec *deadline)
{
	bool ok = true;

	pthread_mutex_lock(&srv->mu);
	while (!(srv->shutdown_done && srv->in_flight == 0 && srv->pending == 0)) {
		if (!deadline) {
			pthread_cond_wait(&srv->cond, &srv->mu);
		} else if (pthread_cond_timedwait(&srv->cond, &srv->mu, deadline) != 0) {
			ok = srv->shutdown_done && srv->in_flight == 0 && srv->pending == 0;
			break;
		}
	}
	pthread_mutex_unlock(&srv->mu);
	return ok;
}

static void grace_deadline(const struct rpc_server *srv, struct timespec *deadline)
{
	*deadline = retry_deadline_ts(CLOCK_REALTIME, srv->grace_ms);
}

/* Everything has drained: destroy the gRPC server and join the pool. */
static void finish(struct rpc_server *srv)
{
	grpc_server_destroy(srv->server);
	srv->server = NULL;
	grpc_completion_queue_shutdown(srv->cq);
	for (unsigned i = 0; i < srv->nthreads; i++)
		pthread_join(srv->threads[i], NULL);
	srv->stopped = true;
	log_info("rpc server stopped");
}

bool rpc_server_shutdown(struct rpc_server *srv)
{
	struct timespec deadline;
	unsigned left;

	if (!srv || !srv->started || srv->stopped)
		return true;
	if (srv->abandoned)
		return false;
	pthread_mutex_lock(&srv->mu);
	srv->stopping = true;
	left = srv->in_flight;
	pthread_mutex_unlock(&srv->mu);
	log_info("rpc server stopping", LOG_U("in_flight", left), LOG_U("grace_ms", srv->grace_ms));
	grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
	if (srv->nthreads == 0) {
		/* No worker drains the queue (no thread could start): do it here. */
		bool tagged = false;

		while (!tagged || srv->pending > 0) {
			grpc_event ev = grpc_completion_queue_next(
				srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

			if (ev.type != GRPC_OP_COMPLETE)
				break;
			if (*(enum tag_kind *)ev.tag == TAG_SHUTDOWN) {
				tagged = true;
				continue;
			}
			slot_free(ev.tag);
			srv->pending--;
		}
		srv->shutdown_done = true;
		finish(srv);
		return true;
	}
	grace_deadline(srv, &deadline);
	if (!wait_drained(srv, &deadline)) {
		pthread_mutex_lock(&srv->mu);
		srv->cancelling = true;
		left = srv->in_flight;
		pthread_mutex_unlock(&srv->mu);
		log_warn("rpc server: grace period over, cancelling calls", LOG_U("in_flight", left));
		grpc_server_cancel_all_calls(srv->server);
		/* Cancelled sends fail at once; a handler busy elsewhere gets one
		 * more grace period to notice rpc_server_cancelled(). */
		grace_deadline(srv, &deadline);
		if (!wait_drained(srv, &deadline)) {
			pthread_mutex_lock(&srv->mu);
			left = srv->in_flight;
			pthread_mutex_unlock(&srv->mu);
			log_error("rpc server: handlers still running after cancellation",
				  LOG_U("in_flight", left));
			srv->abandoned = true;
			return false;
		}
	}
	finish(srv);
	return true;
}

void rpc_server_free(struct rpc_server *srv)
{
	if (!srv)
		return;
	if (srv->started && !srv->stopped) {
		if (!rpc_server_shutdown(srv)) {
			/* Handlers still use the server: wait for them. */
			wait_drained(srv, NULL);
			finish(srv);
		}
	} else if (srv->server) {
		/* Never started: gRPC still wants a completed shutdown. */
		grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
		for (;;) {
			grpc_event ev = grpc_completion_queue_next(
				srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);

			if (ev.type != GRPC_OP_COMPLETE || *(enum tag_kind *)ev.tag == TAG_SHUTDOWN)
				break;
		}
		grpc_server_destroy(srv->server);
		srv->server = NULL;
	}
	if (srv->cq) {
		if (!srv->stopped)
			grpc_completion_queue_shutdown(srv->cq);
		/* Drain what is left before destroying. */
		while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
			       .type != GRPC_QUEUE_SHUTDOWN)
			;
		grpc_completion_queue_destroy(srv->cq);
	}
	for (size_t i = 0; i < srv->nmethods; i++)
		free(srv->methods[i].name);
	free(srv->methods);
	free(srv->threads);
	pthread_cond_destroy(&srv->cond);
	pthread_mutex_destroy(&srv->mu);
	free(srv);
}

/* ---- inside a handler -------------------------------------------------- */

static enum error_code pack_reply(struct rpc_server_call *c, const ProtobufCMessage *msg,
				  grpc_byte_buffer **bb, struct error *err)
{
	size_t size = 0;

	if (!msg || msg->descriptor != c->m->reply)
		return error_set(err, ERR_INTERNAL, "%s: reply is a %s, expected %s",
				 c->method_name, msg ? msg->descriptor->name : "null",
				 c->m->reply->name);
	*bb = pack_message(msg, c->srv->max_message, &size);
	if (!*bb)
		return error_set(err, ERR_INTERNAL,
				 "%s: reply of %zu bytes is over the %zu-byte message limit",
				 c->method_name, size, c->srv->max_message);
	return ERR_OK;
}

enum error_code rpc_server_reply(struct rpc_server_call *c, const ProtobufCMessage *msg,
				 struct error *err)
{
	if (c->m->streaming)
		return error_set(err, ERR_INTERNAL, "%s: reply on a streaming method",
				 c->method_name);
	if (c->reply)
		return error_set(err, ERR_INTERNAL, "%s: replied twice", c->method_name);
	return pack_reply(c, msg, &c->reply, err);
}

enum error_code rpc_server_send(struct rpc_server_call *c, const ProtobufCMessage *msg,
				struct error *err)
{
	grpc_byte_buffer *bb = NULL;
	grpc_op ops[2];
	size_t n = 0;
	bool ok;

	if (!c->m->streaming)
		return error_set(err, ERR_INTERNAL, "%s: send on a unary method", c->method_name);
	if (c->send_failed)
		goto failed;
	if (pack_reply(c, msg, &bb, err) != ERR_OK)
		return err ? err->code : ERR_INTERNAL;
	if (!c->sent_initial) {
		init_op(&ops[n++], GRPC_OP_SEND_INITIAL_METADATA);
		c->sent_initial = true;
	}
	init_op(&ops[n], GRPC_OP_SEND_MESSAGE);
	ops[n++].data.send_message.send_message = bb;
	ok = run_batch(c, ops, n, &c->tag_send);
	grpc_byte_buffer_destroy(bb);
	if (ok)
		return ERR_OK;
	c->send_failed = true;
failed:
	if (c->stalled)
		return stalled_error(c, err);
	if (rpc_server_remaining_ms(c) == 0)
		return error_set(err, ERR_TIMEOUT, "%s: deadline passed while sending",
				 c->method_name);
	return error_set(err, ERR_CANCELLED, "%s: the client went away or cancelled",
			 c->method_name);
}

uint64_t rpc_server_remaining_ms(const struct rpc_server_call *c)
{
	gpr_timespec now, left;

	if (gpr_time_cmp(c->deadline, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0 ||
	    c->deadline.tv_sec == INT64_MAX)
		return UINT64_MAX;
	now = gpr_now(GPR_CLOCK_MONOTONIC);
	if (gpr_time_cmp(c->deadline, now) <= 0)
		return 0;
	left = gpr_time_sub(c->deadline, now);
	return (uint64_t)left.tv_sec * 1000 + (uint64_t)left.tv_nsec / 1000000;
}

bool rpc_server_cancelled(struct rpc_server_call *c)
{
	bool cancelling;

	if (!c->closed) {
		grpc_event ev = grpc_completion_queue_pluck(c->cq, &c->tag_close,
							    gpr_inf_past(GPR_CLOCK_MONOTONIC), NULL);

		if (ev.type == GRPC_OP_COMPLETE)
			c->closed = true;
	}
	pthread_mutex_lock(&c->srv->mu);
	cancelling = c->srv->cancelling;
	pthread_mutex_unlock(&c->srv->mu);
	return cancelling || c->send_failed || (c->closed && c->close_cancelled) ||
	       rpc_server_remaining_ms(c) == 0;
}

char *rpc_server_metadata(const struct rpc_server_call *c, const char *key)
{
	return metadata_value(c->md, key);
}

const char *rpc_server_method(const struct rpc_server_call *c)
{
	return c->method_name;
}

const char *rpc_server_peer(const struct rpc_server_call *c)
{
	return c->peer ? c->peer : "";
}
