/*
 * rpc_server.h - a gRPC server for protobuf-c messages over the gRPC core C
 * API, shared by granary-meta and granary-csi.
 *
 * Handlers are registered by full method name ("/granary.v1.Meta/GetDataset")
 * with the descriptors of their request and reply messages. A handler gets
 * the unpacked request and a call object; it answers by calling
 * rpc_server_reply() once (unary) or rpc_server_send() any number of times
 * (server streaming), and returns an enum error_code with a struct error:
 * ERR_OK becomes status OK, anything else the status error_to_grpc() gives,
 * with err->msg as the status message. The adapters stay thin: parse, call
 * the core, map the error once here, reply.
 *
 * Threads: rpc_server_start() starts a pool of workers (cpu_available() by
 * default) that take new calls from one completion queue and run each call
 * to its end on the worker that took it; every call has a completion queue
 * of its own, so a handler blocked on a slow client never stalls another
 * call. A handler runs on one worker thread; handlers of different calls run
 * at the same time, so whatever they share needs its own locking. A call
 * comes to a worker only once its request message is in (gRPC reads it
 * first), so calls whose client never sends the request hold no thread,
 * however many are open.
 *
 * Limits: requests and replies over max_message_bytes (default 4 MiB) are
 * refused on both sides (RESOURCE_EXHAUSTED from gRPC for a request; a
 * reply is checked before it is sent and the call fails with ERR_INTERNAL).
 * A call holds its thread while it waits for its client to read, so no
 * wait is open-ended: a client that does not take a streamed message or
 * the reply (flow control holds the send) within stall_timeout_ms has its
 * call cancelled with DEADLINE_EXCEEDED; and at most max_streams streaming
 * calls run at once, a call beyond them being refused with ERR_BUSY
 * (RPC_BUSY_METADATA) before its handler runs, so that clients that open
 * streams and never read cannot take the threads of the unary calls.
 *
 * Shutdown (rpc_server_shutdown) is graceful: no new calls are admitted,
 * calls in flight get shutdown_grace_ms to finish, then they are cancelled
 * (their sends fail; rpc_server_cancelled() turns true) and the pool is
 * joined after the last handler returns (or given up on after a second
 * grace period, for the process to exit).
 *
 * This header includes no gRPC header: the core never sees gRPC types.
 */
#ifndef GRANARY_RPC_RPC_SERVER_H
#define GRANARY_RPC_RPC_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/error.h"
#include "common/tls.h"

#define RPC_DEFAULT_MAX_MESSAGE (4u << 20)
#define RPC_DEFAULT_STALL_TIMEOUT_MS 30000
/* Calls one client connection may have open at once (HTTP/2's
 * SETTINGS_MAX_CONCURRENT_STREAMS); more wait in the client. A call is
 * handed to a worker only once its request is in, so calls that never send
 * one hold no thread, but each holds gRPC's memory for the call: this
 * bounds what one connection can hold. */
#define RPC_STREAMS_PER_CONNECTION 100
/*
 * The trailing metadata key (value "1") of every call that ends with
 * ERR_BUSY (past max_streams, or a handler's). Its gRPC status is
 * UNAVAILABLE, gRPC's "transient: retry with a backoff"; the key tells
 * rpc_client the refusal apart from the other UNAVAILABLEs (a server not
 * reached, a resource not ready yet), so that it gives ERR_BUSY back.
 */
#define RPC_BUSY_METADATA "granary-busy"

struct rpc_server;
struct rpc_server_call;

struct rpc_server_options {
	unsigned threads;           /* worker threads; 0 = cpu_available() */
	size_t max_message_bytes;   /* both directions; 0 = RPC_DEFAULT_MAX_MESSAGE */
	uint64_t shutdown_grace_ms; /* in-flight calls' time to finish; 0 = 10 s */
	/* The longest one step of a call waits for its client: a streamed
	 * message or the reply and status to be taken. Past it the call is
	 * cancelled (DEADLINE_EXCEEDED) and its thread is free. (A request
	 * that does not arrive holds no thread: the call waits in gRPC.)
	 * 0 = RPC_DEFAULT_STALL_TIMEOUT_MS. */
	uint64_t stall_timeout_ms;
	/* Streaming calls that run at once (each holds a thread while its
	 * client reads); the next is refused with ERR_BUSY. 0 = half
	 * the threads, at least one. Keep it below threads: the rest serve
	 * unary calls. */
	unsigned max_streams;
	/*
	 * NULL or without a certificate (the default): plaintext. Else every
	 * TCP listener serves TLS with tls->cert and tls->key, and with
	 * tls->ca asks each client for a certificate signed by it and refuses
	 * the handshake without one (mutual TLS). Unix sockets stay
	 * plaintext. Read by rpc_server_listen; may be released after the
	 * last listener is added.
	 */
	const struct tls_material *tls;
};

/*
 * A handler. request is the unpacked request (of the descriptor given at
 * registration), owned by the server and freed after the handler returns.
 * Returns ERR_OK, or an error code with err filled (its message goes to the
 * client as the status message, so it must hold no secret).
 */
typedef enum error_code (*rpc_server_handler_fn)(struct rpc_server_call *call,
						 const ProtobufCMessage *request, void *arg,
						 struct error *err);

/*
 * Creates a server (initialises gRPC once per process, see rpc_client.h;
 * call it before starting threads). Nothing listens until
 * rpc_server_start. ERR_NOMEM or ERR_INTERNAL when gRPC refuses. Free with
 * rpc_server_free.
 */
enum error_code rpc_server_new(const struct rpc_server_options *opt, struct rpc_server **out,
			       struct error *err);

/*
 * Registers a unary (reply once) or server-streaming handler for the full
 * method name. Only before rpc_server_start. ERR_EXISTS for a name given
 * twice, ERR_INVALID for a name not of the form "/package.Service/Method",
 * ERR_INTERNAL when gRPC refuses to register it. A call to a method that
 * is not registered is answered UNIMPLEMENTED.
 */
enum error_code rpc_server_add_unary(struct rpc_server *srv, const char *method,
				     const ProtobufCMessageDescriptor *request,
				     const ProtobufCMessageDescriptor *reply,
				     rpc_server_handler_fn fn, void *arg, struct error *err);
enum error_code rpc_server_add_stream(struct rpc_server *srv, const char *method,
				      const ProtobufCMessageDescriptor *request,
				      const ProtobufCMessageDescriptor *reply,
				      rpc_server_handler_fn fn, void *arg, struct error *err);

/*
 * Adds a listener, an address as common/netaddr.h writes it:
 * "unix:///run/granary/meta.sock" (a stale socket file there is replaced;
 * the directory must exist) or "host:port" ("0.0.0.0:7400", "[::]:7400").
 * Only before rpc_server_start. *bound_port (may be NULL) gets the TCP
 * port, 0 for a unix socket. ERR_INVALID for a malformed address,
 * ERR_UNAVAILABLE when the address cannot be bound (in use, no such
 * directory, not allowed), naming it.
 */
enum error_code rpc_server_listen(struct rpc_server *srv, const char *address, int *bound_port,
				  struct error *err);

/*
 * Authentication of calls. fn runs for every call of a registered method
 * once its request message has arrived, before the message is unpacked or
 * any handler runs, with the method name, the value of the call's metadata
 * key (NULL when the call carries none) and the request exactly as received
 * (its protobuf bytes). ERR_OK lets the call through; any other code ends
 * it with that status and err's message (ERR_UNAUTHENTICATED becomes
 * UNAUTHENTICATED, ERR_PERMISSION PERMISSION_DENIED), so err must hold no
 * secret. key is a lowercase gRPC metadata key ("authorization") that
 * outlives the server. Only before rpc_server_start; without it every call
 * is served.
 */
typedef enum error_code (*rpc_server_auth_fn)(const char *method, const char *value,
					      const void *body, size_t len, void *arg,
					      struct error *err);
void rpc_server_set_auth(struct rpc_server *srv, const char *key, rpc_server_auth_fn fn,
			 void *arg);

/* Starts serving on every listener with the worker pool. */
enum error_code rpc_server_start(struct rpc_server *srv, struct error *err);

/*
 * Graceful stop: no new calls; calls in flight get shutdown_grace_ms to
 * finish; then they are cancelled and their handlers get one more grace
 * period to return (a handler that does not send notices it through
 * rpc_server_cancelled()). Returns true when every call finished and every
 * worker exited. Returns false when handlers still run after that: the
 * server is left serving nothing, and a daemon should exit the process
 * without freeing what those handlers use (rpc_server_free would wait for
 * them). From any thread that is not a worker; a server never started
 * returns true at once.
 */
bool rpc_server_shutdown(struct rpc_server *srv);

/* Shuts down if needed (waiting for every handler to return), then frees.
 * NULL is fine. */
void rpc_server_free(struct rpc_server *srv);

/* ---- inside a handler -------------------------------------------------- */

/*
 * Unary only: sets the reply, packed at once (msg can be freed as soon as
 * this returns). It is sent with status OK when the handler returns ERR_OK.
 * ERR_INTERNAL when msg is not of the registered reply type, is over the
 * size limit, or is the second reply.
 */
enum error_code rpc_server_reply(struct rpc_server_call *call, const ProtobufCMessage *msg,
				 struct error *err);

/*
 * Streaming only: sends one message and waits until gRPC has taken it (flow
 * control: a slow reader slows the handler, memory stays bounded), at most
 * stall_timeout_ms. ERR_CANCELLED when the client went away or cancelled,
 * ERR_TIMEOUT when the call's deadline passed or the client took nothing
 * for stall_timeout_ms (the call is then cancelled); the handler should
 * then return that error. ERR_INTERNAL for a wrong type or an oversized
 * message.
 */
enum error_code rpc_server_send(struct rpc_server_call *call, const ProtobufCMessage *msg,
				struct error *err);

/* Milliseconds left before the client's deadline; UINT64_MAX when it set
 * none, 0 once it has passed. */
uint64_t rpc_server_remaining_ms(const struct rpc_server_call *call);

/* True once the client cancelled or went away, the deadline passed or the
 * server is cancelling calls at shutdown: long handlers may stop early. */
bool rpc_server_cancelled(struct rpc_server_call *call);

/*
 * A copy (malloc'd, the caller frees it) of the first value of the call's
 * metadata key (a lowercase literal), or NULL when the call carries none
 * or memory ran out. For a second credential a handler checks itself; the
 * one rpc_server_set_auth names is checked before the handler runs.
 */
char *rpc_server_metadata(const struct rpc_server_call *call, const char *key);

/* The full method name, and the peer ("ipv4:127.0.0.1:5312", "unix:...")
 * for logs. Valid during the handler. */
const char *rpc_server_method(const struct rpc_server_call *call);
const char *rpc_server_peer(const struct rpc_server_call *call);

#endif
