/*
 * rpc_client.h - a gRPC client for protobuf-c messages over the gRPC core C
 * API: unary calls and server-streaming calls, each with a deadline.
 *
 * One struct rpc_client is one channel to one address; gRPC connects on
 * first use, reconnects after failures (backoff capped at 1 s, so a restarted
 * server is found again within about a second) and multiplexes calls over
 * the connection. The first rpc_client_new or rpc_server_new of a process
 * initialises gRPC for the life of the process (it is never shut down; see
 * rpc_client.c), and sets GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS=100
 * in the environment unless it is set: call it before starting threads.
 * Every call has a completion queue of its own, so all calls are thread-safe
 * and may run from any number of threads at once.
 *
 * Errors: a status from the server comes back as error_from_grpc(status)
 * with the server's message, prefixed with the method and the address:
 *   "GetDataset at 'unix:///run/granary/meta.sock': dataset 'x' not found".
 * A server that cannot be reached is ERR_UNAVAILABLE, a passed deadline
 * ERR_TIMEOUT, a message over max_message_bytes (either way) ERR_NO_SPACE
 * (RESOURCE_EXHAUSTED), a reply that does not unpack ERR_IO. An UNAVAILABLE
 * with rpc_server's RPC_BUSY_METADATA is ERR_BUSY: the server refused the
 * call for load (a streaming call past its max_streams) and will take it
 * later; the caller decides whether and when to send it again.
 *
 * This header includes no gRPC header.
 */
#ifndef GRANARY_RPC_RPC_CLIENT_H
#define GRANARY_RPC_RPC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/error.h"
#include "common/tls.h"

struct rpc_client;

/* The longest metadata value an rpc_client_auth_fn may write, NUL included. */
#define RPC_AUTH_VALUE_MAX 512

/*
 * Signs a call: writes into value (size bytes, NUL-terminated) what the
 * call sends under the metadata key auth_key, for method and the request's
 * packed protobuf bytes (body, len) exactly as they are sent. Returns
 * ERR_OK, or an error (err filled) that fails the call before it is sent.
 */
typedef enum error_code (*rpc_client_auth_fn)(const char *method, const void *body, size_t len,
					      char *value, size_t size, void *arg,
					      struct error *err);

struct rpc_client_options {
	size_t max_message_bytes; /* both directions; 0 = 4 MiB (RPC_DEFAULT_MAX_MESSAGE) */
	/*
	 * false (default): a call fails at once with ERR_UNAVAILABLE when the
	 * server cannot be reached. true: a call waits for the connection up
	 * to its deadline (a daemon starting next to a server that is still
	 * starting).
	 */
	bool wait_for_ready;
	/*
	 * NULL (default): calls carry no credentials. Else every call carries
	 * metadata auth_key (a lowercase literal, e.g. "authorization") with
	 * the value auth(auth_arg) writes; auth_arg must outlive the client.
	 */
	const char *auth_key;
	rpc_client_auth_fn auth;
	void *auth_arg;
	/*
	 * NULL or without a CA (the default): plaintext. Else a TCP address
	 * is reached over TLS: the server's certificate must chain to tls->ca
	 * and carry tls->server_name (the address's host when NULL); with
	 * tls->cert the client presents it (mutual TLS). A unix socket stays
	 * plaintext: it never leaves the host. Read when the channel is
	 * made; may be released after rpc_client_new.
	 */
	const struct tls_material *tls;
};

/*
 * Creates a channel to address ("unix:///path" or "host:port", as
 * common/netaddr.h writes them). ERR_INVALID names a malformed address. No
 * connection is made yet. Free with rpc_client_free.
 */
enum error_code rpc_client_new(const char *address, const struct rpc_client_options *opt,
			       struct rpc_client **out, struct error *err);
void rpc_client_free(struct rpc_client *c);

/* The address as given to rpc_client_new. */
const char *rpc_client_address(const struct rpc_client *c);

/*
 * Unary call of method ("/granary.v1.Meta/GetDataset") with request;
 * timeout_ms 0 means no deadline. On ERR_OK *reply is the unpacked reply
 * (reply_desc's type), freed by the caller with
 * protobuf_c_message_free_unpacked(*reply, NULL); on error *reply is NULL.
 */
enum error_code rpc_client_call(struct rpc_client *c, const char *method,
				const ProtobufCMessage *request,
				const ProtobufCMessageDescriptor *reply_desc, uint64_t timeout_ms,
				ProtobufCMessage **reply, struct error *err);

/* One metadata entry a single call carries besides the signature: key a
 * lowercase literal, value a string (a bearer credential goes here, so
 * that only the calls that need it carry it). */
struct rpc_client_metadata {
	const char *key;
	const char *value;
};

/* rpc_client_call with extra (NULL: none) among the call's metadata. */
enum error_code rpc_client_call_with(struct rpc_client *c, const char *method,
				     const ProtobufCMessage *request,
				     const ProtobufCMessageDescriptor *reply_desc,
				     uint64_t timeout_ms, const struct rpc_client_metadata *extra,
				     ProtobufCMessage **reply, struct error *err);

/*
 * Receives each message of a streaming reply; msg is freed after fn
 * returns. fn returns ERR_OK to go on; anything else cancels the call and
 * rpc_client_stream returns that code with err as fn filled it.
 */
typedef enum error_code (*rpc_client_message_fn)(const ProtobufCMessage *msg, void *arg,
						 struct error *err);

/*
 * Server-streaming call: sends request, calls fn for every message in
 * order, and returns the final status (errors as rpc_client_call). The
 * deadline covers the whole stream.
 */
enum error_code rpc_client_stream(struct rpc_client *c, const char *method,
				  const ProtobufCMessage *request,
				  const ProtobufCMessageDescriptor *reply_desc, uint64_t timeout_ms,
				  rpc_client_message_fn fn, void *arg, struct error *err);

#endif
