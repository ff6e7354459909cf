/*
 * test_rpc.c - rpc_server and rpc_client against each other over a unix
 * socket and TCP loopback, with the granary.v1 messages: unary and
 * streaming calls, status mapping, deadlines, message limits, a busy pool
 * and graceful shutdown. Also error_from_grpc, the client's mapping back,
 * and calls that rpc_client never makes (headers without a request), from
 * a bare gRPC core client.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "common/error.h"
#include "common/retry.h"
#include "granary.pb-c.h"
#include "rpc/rpc_client.h"
#include "rpc/rpc_server.h"
#include "unit/check_main.h"

#define M_GET "/granary.v1.Meta/GetDataset"
#define M_SNAP "/granary.v1.Meta/GetSnapshot"

static char sock_dir[64], address[128];

/* What the handlers share with the tests. */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool release;            /* "block" handler may return */
	int blocked;             /* handlers waiting for release */
	uint64_t seen_remaining; /* last rpc_server_remaining_ms */
} hs = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, 0 };

/* Waits until the test releases the "block" handlers. */
static void block_until_released(void)
{
	pthread_mutex_lock(&hs.mu);
	hs.blocked++;
	pthread_cond_broadcast(&hs.cond);
	while (!hs.release)
		pthread_cond_wait(&hs.cond, &hs.mu);
	hs.blocked--;
	pthread_mutex_unlock(&hs.mu);
}

static enum error_code get_dataset(struct rpc_server_call *call, const ProtobufCMessage *request,
				   void *arg, struct error *err)
{
	const Granary__V1__GetDatasetRequest *req = (const void *)request;
	Granary__V1__DatasetSpec spec = GRANARY__V1__DATASET_SPEC__INIT;
	Granary__V1__Dataset ds = GRANARY__V1__DATASET__INIT;

	hs.seen_remaining = rpc_server_remaining_ms(call);
	if (strcmp(req->name, "missing") == 0)
		return error_set(err, ERR_NOT_FOUND, "dataset '%s' not found", req->name);
	if (strcmp(req->name, "slow") == 0) {
		retry_sleep_ms(1500);
		return error_set(err, ERR_INTERNAL, "should have timed out");
	}
	if (strcmp(req->name, "block") == 0)
		block_until_released();
	if (strcmp(req->name, "cancellable") == 0) {
		pthread_mutex_lock(&hs.mu);
		hs.blocked++;
		pthread_cond_broadcast(&hs.cond);
		pthread_mutex_unlock(&hs.mu);
		while (!rpc_server_cancelled(call))
			retry_sleep_ms(10);
		return error_set(err, ERR_CANCELLED, "stopped: the call was cancelled");
	}
	if (strcmp(req->name, "wrongtype") == 0) {
		Granary__V1__DeleteDatasetReply other = GRANARY__V1__DELETE_DATASET_REPLY__INIT;

		return rpc_server_reply(call, &other.base, err);
	}
	if (strcmp(req->name, "noreply") == 0)
		return ERR_OK;
	spec.name = req->name;
	spec.source_uri = strcmp(req->name, "huge") == 0 ? (char *)arg : "s3://b/p/";
	ds.spec = &spec;
	ds.generation = 7;
	ds.state = GRANARY__V1__DATASET_STATE__DATASET_STATE_READY;
	return rpc_server_reply(call, &ds.base, err);
}

static enum error_code get_snapshot(struct rpc_server_call *call, const ProtobufCMessage *request,
				    void *arg, struct error *err)
{
	const Granary__V1__GetSnapshotRequest *req = (const void *)request;
	uint8_t data[1000];

	if (strcmp(req->name, "block") == 0)
		block_until_released();
	for (uint64_t i = 0; i < req->generation; i++) {
		Granary__V1__SnapshotChunk chunk = GRANARY__V1__SNAPSHOT_CHUNK__INIT;

		memset(data, (int)i, sizeof(data));
		chunk.generation = req->generation;
		chunk.offset = i * sizeof(data);
		chunk.total_size = req->generation * sizeof(data);
		chunk.data.data = data;
		chunk.data.len = sizeof(data);
		if (rpc_server_send(call, &chunk.base, err) != ERR_OK)
			return err->code;
	}
	if (strcmp(req->name, "fail-after") == 0)
		return error_set(err, ERR_UNAVAILABLE, "store went away after %llu chunks",
				 (unsigned long long)req->generation);
	return ERR_OK;
}

static struct rpc_server *start_server(unsigned threads, size_t max_message, const char *listen,
				       int *port, void *arg)
{
	struct rpc_server_options opt = { .threads = threads, .max_message_bytes = max_message,
					  .shutdown_grace_ms = 2000 };
	struct rpc_server *srv = NULL;
	struct error err;

	ck_assert_int_eq(rpc_server_new(&opt, &srv, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_add_unary(srv, M_GET, &granary__v1__get_dataset_request__descriptor,
					      &granary__v1__dataset__descriptor, get_dataset, arg,
					      &err),
			 ERR_OK);
	ck_assert_int_eq(rpc_server_add_stream(srv, M_SNAP,
					       &granary__v1__get_snapshot_request__descriptor,
					       &granary__v1__snapshot_chunk__descriptor, get_snapshot,
					       NULL, &err),
			 ERR_OK);
	ck_assert_msg(rpc_server_listen(srv, listen, port, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(rpc_server_start(srv, &err), ERR_OK);
	return srv;
}

static struct rpc_client *client(const char *addr, size_t max_message)
{
	struct rpc_client_options opt = { .max_message_bytes = max_message, .wait_for_ready = true };
	struct rpc_client *c = NULL;
	struct error err;

	ck_assert_msg(rpc_client_new(addr, &opt, &c, &err) == ERR_OK, "%s", err.msg);
	return c;
}

static enum error_code get(struct rpc_client *c, const char *name, uint64_t timeout_ms,
			   Granary__V1__Dataset **out, struct error *err)
{
	Granary__V1__GetDatasetRequest req = GRANARY__V1__GET_DATASET_REQUEST__INIT;
	ProtobufCMessage *reply = NULL;
	enum error_code code;

	req.name = (char *)name;
	code = rpc_client_call(c, M_GET, &req.base, &granary__v1__dataset__descriptor, timeout_ms,
			       &reply, err);
	if (out)
		*out = (Granary__V1__Dataset *)reply;
	else if (reply)
		protobuf_c_message_free_unpacked(reply, NULL);
	return code;
}

static void setup(void)
{
	snprintf(sock_dir, sizeof(sock_dir), "/tmp/granary-rpc-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(sock_dir));
	snprintf(address, sizeof(address), "unix://%s/s.sock", sock_dir);
	hs.release = false;
	hs.blocked = 0;
}

static void teardown(void)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/s.sock", sock_dir);
	unlink(path);
	rmdir(sock_dir);
}

START_TEST(test_rpc_unary_round_trip_and_status_mapping)
{
	struct rpc_server *srv = start_server(2, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	Granary__V1__Dataset *ds = NULL;
	struct error err;

	ck_assert_msg(get(c, "imagenet", 5000, &ds, &err) == ERR_OK, "%s", err.msg);
	ck_assert_str_eq(ds->spec->name, "imagenet");
	ck_assert_str_eq(ds->spec->source_uri, "s3://b/p/");
	ck_assert_uint_eq(ds->generation, 7);
	ck_assert_int_eq(ds->state, GRANARY__V1__DATASET_STATE__DATASET_STATE_READY);
	protobuf_c_message_free_unpacked(&ds->base, NULL);
	/* The deadline reached the handler. */
	ck_assert_uint_le(hs.seen_remaining, 5100); /* gRPC rounds the deadline up */
	ck_assert_uint_gt(hs.seen_remaining, 1000);
	ck_assert_int_eq(get(c, "imagenet", 0, NULL, &err), ERR_OK);
	ck_assert_uint_eq(hs.seen_remaining, UINT64_MAX);

	/* The handler's code and message reach the client, with the method. */
	ck_assert_int_eq(get(c, "missing", 5000, NULL, &err), ERR_NOT_FOUND);
	ck_assert_ptr_nonnull(strstr(err.msg, "dataset 'missing' not found"));
	ck_assert_ptr_nonnull(strstr(err.msg, "GetDataset"));
	/* Handler bugs are INTERNAL, never a silent empty reply. */
	ck_assert_int_eq(get(c, "noreply", 5000, NULL, &err), ERR_INTERNAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "no reply"));
	ck_assert_int_eq(get(c, "wrongtype", 5000, NULL, &err), ERR_INTERNAL);

	/* A method nobody registered. */
	{
		Granary__V1__GetDatasetRequest req = GRANARY__V1__GET_DATASET_REQUEST__INIT;
		ProtobufCMessage *reply = NULL;

		ck_assert_int_eq(rpc_client_call(c, "/granary.v1.Meta/Nope", &req.base,
						 &granary__v1__dataset__descriptor, 5000, &reply, &err),
				 ERR_UNSUPPORTED);
		ck_assert_ptr_null(reply);
		ck_assert_ptr_nonnull(strstr(err.msg, "/granary.v1.Meta/Nope"));
	}
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

struct collected {
	int n;
	uint64_t next_off;
	int stop_after;
	bool bad;
};

static enum error_code collect(const ProtobufCMessage *msg, void *arg, struct error *err)
{
	const Granary__V1__SnapshotChunk *chunk = (const void *)msg;
	struct collected *col = arg;

	if (chunk->offset != col->next_off || chunk->data.len != 1000 ||
	    chunk->data.data[0] != (uint8_t)col->n)
		col->bad = true;
	col->next_off += chunk->data.len;
	col->n++;
	if (col->stop_after && col->n == col->stop_after)
		return error_set(err, ERR_IO, "receiver stopped at %d", col->n);
	return ERR_OK;
}

static enum error_code snap(struct rpc_client *c, const char *name, uint64_t count,
			    struct collected *col, struct error *err)
{
	Granary__V1__GetSnapshotRequest req = GRANARY__V1__GET_SNAPSHOT_REQUEST__INIT;

	req.name = (char *)name;
	req.generation = count;
	return rpc_client_stream(c, M_SNAP, &req.base, &granary__v1__snapshot_chunk__descriptor,
				 10000, collect, col, err);
}

START_TEST(test_rpc_stream_delivers_in_order_then_status)
{
	/* 4 threads, 2 of them for streams: the handler of a stream the
	 * receiver stopped may still be running when the next one comes. */
	struct rpc_server *srv = start_server(4, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	struct collected col = { 0 };
	struct error err;

	ck_assert_msg(snap(c, "x", 50, &col, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(col.n, 50);
	ck_assert(!col.bad);

	/* An error status after some messages: both are seen. */
	memset(&col, 0, sizeof(col));
	ck_assert_int_eq(snap(c, "fail-after", 3, &col, &err), ERR_UNAVAILABLE);
	ck_assert_int_eq(col.n, 3);
	ck_assert_ptr_nonnull(strstr(err.msg, "after 3 chunks"));

	/* No messages, status OK. */
	memset(&col, 0, sizeof(col));
	ck_assert_int_eq(snap(c, "x", 0, &col, &err), ERR_OK);
	ck_assert_int_eq(col.n, 0);

	/* The receiver stops: its error comes back, the server is fine. */
	memset(&col, 0, sizeof(col));
	col.stop_after = 4;
	ck_assert_int_eq(snap(c, "x", 1000, &col, &err), ERR_IO);
	ck_assert_int_eq(col.n, 4);
	ck_assert_ptr_nonnull(strstr(err.msg, "receiver stopped at 4"));
	memset(&col, 0, sizeof(col));
	ck_assert_int_eq(snap(c, "x", 5, &col, &err), ERR_OK);
	ck_assert_int_eq(col.n, 5);
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

START_TEST(test_rpc_deadline_passes_as_timeout)
{
	struct rpc_server *srv = start_server(2, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	struct error err;
	uint64_t t0 = retry_now_ms();

	/* The handler takes 1.5 s: well under that is the deadline, with room
	 * for a loaded machine. */
	ck_assert_int_eq(get(c, "slow", 100, NULL, &err), ERR_TIMEOUT);
	ck_assert_uint_lt(retry_now_ms() - t0, 1000);
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

START_TEST(test_rpc_message_limits_both_ways)
{
	char *huge = malloc(3000);
	struct rpc_server *srv;
	struct rpc_client *c, *big;
	struct error err;

	memset(huge, 'u', 2999);
	huge[2999] = '\0';
	srv = start_server(2, 2048, address, NULL, huge);
	c = client(address, 2048);
	big = client(address, 1 << 20);
	/* The client refuses to send over its limit. */
	ck_assert_int_eq(get(c, huge, 5000, NULL, &err), ERR_NO_SPACE);
	ck_assert_ptr_nonnull(strstr(err.msg, "message limit"));
	/* The server refuses to receive over its limit. */
	ck_assert_int_eq(get(big, huge, 5000, NULL, &err), ERR_NO_SPACE);
	/* The server refuses to send over its limit. */
	ck_assert_int_eq(get(big, "huge", 5000, NULL, &err), ERR_INTERNAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "message limit"));
	/* Under the limits all is well. */
	ck_assert_int_eq(get(c, "small", 5000, NULL, &err), ERR_OK);
	rpc_client_free(c);
	rpc_client_free(big);
	rpc_server_free(srv);
	free(huge);
}
END_TEST

struct bg_call {
	struct rpc_client *c;
	const char *name;
	enum error_code code;
	char msg[ERROR_MSG_MAX];
	pthread_t t;
};

static void *bg_get(void *arg)
{
	struct bg_call *b = arg;
	struct error err;

	error_clear(&err);
	b->code = get(b->c, b->name, 10000, NULL, &err);
	snprintf(b->msg, sizeof(b->msg), "%s", err.msg);
	return NULL;
}

static void wait_blocked(int n)
{
	pthread_mutex_lock(&hs.mu);
	while (hs.blocked < n)
		pthread_cond_wait(&hs.cond, &hs.mu);
	pthread_mutex_unlock(&hs.mu);
}

static void release_blocked(void)
{
	pthread_mutex_lock(&hs.mu);
	hs.release = true;
	pthread_cond_broadcast(&hs.cond);
	pthread_mutex_unlock(&hs.mu);
}

START_TEST(test_rpc_blocked_handler_does_not_stall_others)
{
	struct rpc_server *srv = start_server(3, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	struct bg_call b[2] = { { .c = c, .name = "block" }, { .c = c, .name = "block" } };
	struct error err;

	for (int i = 0; i < 2; i++)
		pthread_create(&b[i].t, NULL, bg_get, &b[i]);
	wait_blocked(2);
	/* Two of three workers wait; the third answers at once, many times. */
	for (int i = 0; i < 20; i++)
		ck_assert_int_eq(get(c, "quick", 2000, NULL, &err), ERR_OK);
	release_blocked();
	for (int i = 0; i < 2; i++) {
		pthread_join(b[i].t, NULL);
		ck_assert_int_eq(b[i].code, ERR_OK);
	}
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

struct bg_stream {
	struct rpc_client *c;
	enum error_code code;
	pthread_t t;
};

static void *bg_snap(void *arg)
{
	struct bg_stream *b = arg;
	struct collected col = { 0 };

	b->code = snap(b->c, "block", 3, &col, NULL);
	return NULL;
}

/* Streaming calls wait on their clients the longest: past max_streams
 * (half the threads by default) one is refused at once as busy, naming the
 * limit, and the other threads serve unary calls. */
START_TEST(test_rpc_streams_past_the_limit_are_refused_as_busy)
{
	struct rpc_server *srv = start_server(3, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	struct bg_stream b = { .c = c };
	struct collected col = { 0 };
	struct error err;

	pthread_create(&b.t, NULL, bg_snap, &b);
	wait_blocked(1);
	ck_assert_int_eq(snap(c, "x", 3, &col, &err), ERR_BUSY);
	ck_assert_int_eq(col.n, 0);
	ck_assert_msg(strstr(err.msg, "GetSnapshot: 1 streaming calls are in progress, "
				      "the most this server runs at once"),
		      "%s", err.msg);
	ck_assert_int_eq(get(c, "quick", 2000, NULL, &err), ERR_OK);
	release_blocked();
	pthread_join(b.t, NULL);
	ck_assert_int_eq(b.code, ERR_OK);
	/* The place is given back. */
	ck_assert_msg(snap(c, "x", 3, &col, &err) == ERR_OK, "%s", err.msg);
	ck_assert_int_eq(col.n, 3);
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

struct bg_shutdown {
	struct rpc_server *srv;
	pthread_t t;
	uint64_t done_ms;
};

static void *bg_stop(void *arg)
{
	struct bg_shutdown *s = arg;

	rpc_server_shutdown(s->srv);
	s->done_ms = retry_now_ms();
	return NULL;
}

START_TEST(test_rpc_shutdown_finishes_in_flight_calls)
{
	struct rpc_server *srv = start_server(2, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	struct bg_call b = { .c = c, .name = "block" };
	struct bg_shutdown s = { .srv = srv };
	struct rpc_client *late;
	struct rpc_client_options fast = { 0 };
	struct error err;
	uint64_t released;

	pthread_create(&b.t, NULL, bg_get, &b);
	wait_blocked(1);
	pthread_create(&s.t, NULL, bg_stop, &s);
	retry_sleep_ms(200);
	/* Shutdown waits for the call in flight... */
	ck_assert_uint_eq(s.done_ms, 0);
	released = retry_now_ms();
	release_blocked();
	pthread_join(b.t, NULL);
	pthread_join(s.t, NULL);
	/* ...which completes normally, and shutdown returns right after. */
	ck_assert_msg(b.code == ERR_OK, "%s", b.msg);
	ck_assert_uint_ge(s.done_ms, released);
	/* Nobody listens any more. */
	ck_assert_int_eq(rpc_client_new(address, &fast, &late, &err), ERR_OK);
	ck_assert_int_eq(get(late, "x", 2000, NULL, &err), ERR_UNAVAILABLE);
	rpc_client_free(late);
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

START_TEST(test_rpc_shutdown_cancels_after_grace)
{
	struct rpc_server *srv = start_server(2, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	struct bg_call b = { .c = c, .name = "cancellable" };
	uint64_t t0, took;

	/* The handler runs until it sees the call cancelled. */
	pthread_create(&b.t, NULL, bg_get, &b);
	wait_blocked(1);
	t0 = retry_now_ms();
	ck_assert(rpc_server_shutdown(srv));
	took = retry_now_ms() - t0;
	pthread_join(b.t, NULL);
	/* The grace (2 s in start_server) ran out, then the call was cancelled. */
	ck_assert_uint_ge(took, 1900);
	ck_assert_uint_lt(took, 6000);
	ck_assert_int_ne(b.code, ERR_OK);
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

START_TEST(test_rpc_client_finds_a_restarted_server_quickly)
{
	struct rpc_client_options fast = { 0 };
	struct rpc_server *srv = start_server(2, 0, address, NULL, NULL);
	struct rpc_client *c;
	struct error err;
	uint64_t t0;
	int failures = 0;

	ck_assert_int_eq(rpc_client_new(address, &fast, &c, &err), ERR_OK);
	ck_assert_int_eq(get(c, "x", 2000, NULL, &err), ERR_OK);
	rpc_server_free(srv);
	ck_assert_int_eq(get(c, "x", 2000, NULL, &err), ERR_UNAVAILABLE);
	retry_sleep_ms(300);
	ck_assert_int_eq(get(c, "x", 2000, NULL, &err), ERR_UNAVAILABLE);
	/* Back on the same address: without wait_for_ready the client fails
	 * fast until it has reconnected, which takes about a second at most. */
	srv = start_server(2, 0, address, NULL, NULL);
	t0 = retry_now_ms();
	while (get(c, "x", 2000, NULL, &err) != ERR_OK) {
		failures++;
		ck_assert_msg(retry_now_ms() - t0 < 3000, "not reconnected after %d tries: %s",
			      failures, err.msg);
		retry_sleep_ms(20);
	}
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

START_TEST(test_rpc_shutdown_gives_up_on_a_stuck_handler)
{
	struct rpc_server_options opt = { .threads = 2, .shutdown_grace_ms = 200 };
	struct rpc_server *srv = NULL;
	struct rpc_client *c = client(address, 0);
	struct bg_call b = { .c = c, .name = "block" };
	struct error err;
	uint64_t t0, took;

	ck_assert_int_eq(rpc_server_new(&opt, &srv, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_add_unary(srv, M_GET, &granary__v1__get_dataset_request__descriptor,
					      &granary__v1__dataset__descriptor, get_dataset, NULL,
					      &err),
			 ERR_OK);
	ck_assert_int_eq(rpc_server_listen(srv, address, NULL, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_start(srv, &err), ERR_OK);
	pthread_create(&b.t, NULL, bg_get, &b);
	wait_blocked(1);
	/* The handler ignores cancellation: two grace periods, then give up. */
	t0 = retry_now_ms();
	ck_assert(!rpc_server_shutdown(srv));
	took = retry_now_ms() - t0;
	ck_assert_uint_ge(took, 380);
	ck_assert_uint_lt(took, 3000);
	pthread_join(b.t, NULL);
	ck_assert_int_ne(b.code, ERR_OK); /* the client saw its call cancelled */
	/* Free waits for the handler, then cleans up. */
	release_blocked();
	rpc_server_free(srv);
	rpc_client_free(c);
}
END_TEST

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

START_TEST(test_rpc_tcp_listener_and_unreachable_server)
{
	char tcp[64];
	int port = free_port(), bound = 0;
	struct rpc_server *srv;
	struct rpc_client *c, *nobody;
	struct rpc_client_options fast = { 0 };
	struct error err;

	snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", port);
	srv = start_server(2, 0, tcp, &bound, NULL);
	ck_assert_int_eq(bound, port);
	c = client(tcp, 0);
	ck_assert_msg(get(c, "tcp", 5000, NULL, &err) == ERR_OK, "%s", err.msg);
	rpc_client_free(c);
	rpc_server_free(srv);

	/* No server on the socket: UNAVAILABLE at once without wait_for_ready. */
	ck_assert_int_eq(rpc_client_new(address, &fast, &nobody, &err), ERR_OK);
	ck_assert_int_eq(get(nobody, "x", 5000, NULL, &err), ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, address));
	rpc_client_free(nobody);

	/* Addresses are checked before gRPC sees them. */
	ck_assert_int_eq(rpc_client_new("nohost", &fast, &nobody, &err), ERR_INVALID);
	ck_assert_int_eq(rpc_server_new(NULL, &srv, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_listen(srv, "unix://relative", NULL, &err), ERR_INVALID);
	ck_assert_int_eq(rpc_server_listen(srv, "unix:///nonexistent-dir/x/s.sock", NULL, &err),
			 ERR_UNAVAILABLE);
	ck_assert_ptr_nonnull(strstr(err.msg, "nonexistent-dir"));
	ck_assert_int_eq(rpc_server_add_unary(srv, "GetDataset",
					      &granary__v1__get_dataset_request__descriptor,
					      &granary__v1__dataset__descriptor, get_dataset, NULL,
					      &err),
			 ERR_INVALID);
	rpc_server_free(srv);
}
END_TEST

START_TEST(test_error_from_grpc_inverts_error_to_grpc)
{
	for (int code = 0; code < ERR_CODE_COUNT; code++) {
		enum error_code back = error_from_grpc(error_to_grpc((enum error_code)code));

		/* Where two codes share a status, the more general one comes back. */
		if (code == ERR_IO)
			ck_assert_int_eq(back, ERR_INTERNAL);
		else if (code == ERR_NOMEM)
			ck_assert_int_eq(back, ERR_NO_SPACE);
		else if (code == ERR_BUSY) /* rpc_client tells it by its metadata */
			ck_assert_int_eq(back, ERR_UNAVAILABLE);
		else if (code == ERR_READ_ONLY)
			ck_assert_int_eq(back, ERR_PRECONDITION);
		else
			ck_assert_int_eq(back, code);
	}
	ck_assert_int_eq(error_from_grpc(2), ERR_INTERNAL);
	ck_assert_int_eq(error_from_grpc(10), ERR_UNAVAILABLE);
	ck_assert_int_eq(error_from_grpc(15), ERR_IO);
	ck_assert_int_eq(error_from_grpc(99), ERR_INTERNAL);
	ck_assert_int_eq(error_from_grpc(-1), ERR_INTERNAL);
}
END_TEST

/* ---- calls whose request does not come -------------------------------- */

/* A call as a bare gRPC core client opens it: its headers are sent, its
 * request message is not (nor its half-close) until the test says. */
struct bare_call {
	grpc_call *call;
	grpc_completion_queue *cq;
	grpc_status_code status;
	grpc_slice details;
	grpc_metadata_array initial, trailing;
	bool ended; /* its status came */
	char tag_sent, tag_status;
};

static void bare_op(grpc_op *op, grpc_op_type type)
{
	memset(op, 0, sizeof(*op));
	op->op = type;
}

/* Plucks the completion of tag within ms; true when it came. */
static bool bare_wait(struct bare_call *b, void *tag, int64_t ms)
{
	gpr_timespec until = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
					  gpr_time_from_millis(ms, GPR_TIMESPAN));

	return grpc_completion_queue_pluck(b->cq, tag, until, NULL).type == GRPC_OP_COMPLETE;
}

static void bare_open(struct bare_call *b, grpc_channel *ch, const char *method)
{
	grpc_slice name = grpc_slice_from_static_string(method);
	grpc_op ops[2];

	memset(b, 0, sizeof(*b));
	grpc_metadata_array_init(&b->initial);
	grpc_metadata_array_init(&b->trailing);
	b->cq = grpc_completion_queue_create_for_pluck(NULL);
	b->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, b->cq, name, NULL,
					   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	ck_assert_ptr_nonnull(b->call);
	bare_op(&ops[0], GRPC_OP_SEND_INITIAL_METADATA);
	ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY |
		       GRPC_INITIAL_METADATA_WAIT_FOR_READY_EXPLICITLY_SET;
	ck_assert_int_eq(grpc_call_start_batch(b->call, ops, 1, &b->tag_sent, NULL), GRPC_CALL_OK);
	ck_assert(bare_wait(b, &b->tag_sent, 5000));
	bare_op(&ops[0], GRPC_OP_RECV_INITIAL_METADATA);
	ops[0].data.recv_initial_metadata.recv_initial_metadata = &b->initial;
	bare_op(&ops[1], GRPC_OP_RECV_STATUS_ON_CLIENT);
	ops[1].data.recv_status_on_client.trailing_metadata = &b->trailing;
	ops[1].data.recv_status_on_client.status = &b->status;
	ops[1].data.recv_status_on_client.status_details = &b->details;
	ck_assert_int_eq(grpc_call_start_batch(b->call, ops, 2, &b->tag_status, NULL),
			 GRPC_CALL_OK);
}

/* Waits at most ms for the call's status; true when it came. */
static bool bare_ended(struct bare_call *b, int64_t ms)
{
	if (!b->ended)
		b->ended = bare_wait(b, &b->tag_status, ms);
	return b->ended;
}

/* Half-closes the call without having sent a request. */
static void bare_close(struct bare_call *b)
{
	grpc_op ops[1];

	bare_op(&ops[0], GRPC_OP_SEND_CLOSE_FROM_CLIENT);
	ck_assert_int_eq(grpc_call_start_batch(b->call, ops, 1, &b->tag_sent, NULL), GRPC_CALL_OK);
	ck_assert(bare_wait(b, &b->tag_sent, 5000));
}

/* Cancels the call unless it has ended, and frees it. */
static void bare_free(struct bare_call *b)
{
	if (!bare_ended(b, 0)) {
		grpc_call_cancel(b->call, NULL);
		ck_assert(bare_ended(b, 5000));
	}
	grpc_call_unref(b->call);
	grpc_slice_unref(b->details);
	grpc_metadata_array_destroy(&b->initial);
	grpc_metadata_array_destroy(&b->trailing);
	grpc_completion_queue_shutdown(b->cq);
	grpc_completion_queue_destroy(b->cq);
}

/* Calls whose request has not come hold no worker (gRPC hands a call of a
 * registered method to the pool only with its request), however many,
 * unary and streaming: with more of them open than the server has threads
 * a unary call is answered at once. A call to a method not registered is
 * answered UNIMPLEMENTED without its request; one half-closed without a
 * request, INVALID_ARGUMENT. */
START_TEST(test_rpc_calls_without_a_request_hold_no_thread)
{
	struct rpc_server *srv = start_server(2, 0, address, NULL, NULL);
	struct rpc_client *c = client(address, 0);
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	struct bare_call open[6], unknown;
	grpc_channel *ch;
	char target[128];
	struct error err;
	uint64_t t0;

	snprintf(target, sizeof(target), "unix:%s/s.sock", sock_dir);
	ch = grpc_channel_create(target, creds, NULL);
	grpc_channel_credentials_release(creds);

	for (int i = 0; i < 6; i++)
		bare_open(&open[i], ch, i % 2 ? M_SNAP : M_GET);
	retry_sleep_ms(200); /* every call's headers reached the server */
	t0 = retry_now_ms();
	for (int i = 0; i < 5; i++)
		ck_assert_msg(get(c, "quick", 2000, NULL, &err) == ERR_OK, "%s", err.msg);
	ck_assert_uint_lt(retry_now_ms() - t0, 1000);
	for (int i = 0; i < 6; i++) /* still open, waiting for their requests */
		ck_assert(!bare_ended(&open[i], 0));

	bare_open(&unknown, ch, "/granary.v1.Meta/Nope");
	ck_assert(bare_ended(&unknown, 2000));
	ck_assert_int_eq(unknown.status, GRPC_STATUS_UNIMPLEMENTED);
	bare_free(&unknown);

	bare_close(&open[0]);
	ck_assert(bare_ended(&open[0], 2000));
	ck_assert_int_eq(open[0].status, GRPC_STATUS_INVALID_ARGUMENT);
	ck_assert_int_eq(grpc_slice_str_cmp(open[0].details, M_GET ": no request message"), 0);

	for (int i = 0; i < 6; i++)
		bare_free(&open[i]);
	grpc_channel_destroy(ch);
	rpc_client_free(c);
	rpc_server_free(srv);
}
END_TEST

/* One connection holds at most RPC_STREAMS_PER_CONNECTION calls open: with
 * that many open without a request, one more waits in the client (its
 * half-close does not reach the server) until another ends. */
START_TEST(test_rpc_one_connection_holds_a_bounded_number_of_calls)
{
	struct rpc_server *srv = start_server(2, 0, address, NULL, NULL);
	grpc_channel_credentials *creds = grpc_insecure_credentials_create();
	struct bare_call *open = calloc(RPC_STREAMS_PER_CONNECTION, sizeof(*open));
	struct bare_call over = { 0 };
	grpc_slice name = grpc_slice_from_static_string(M_GET);
	grpc_channel *ch;
	grpc_op ops[2];
	char target[128];

	ck_assert_ptr_nonnull(open);
	snprintf(target, sizeof(target), "unix:%s/s.sock", sock_dir);
	ch = grpc_channel_create(target, creds, NULL);
	grpc_channel_credentials_release(creds);
	for (int i = 0; i < RPC_STREAMS_PER_CONNECTION; i++)
		bare_open(&open[i], ch, M_GET);
	retry_sleep_ms(200); /* the server's settings reached the client */

	grpc_metadata_array_init(&over.initial);
	grpc_metadata_array_init(&over.trailing);
	over.cq = grpc_completion_queue_create_for_pluck(NULL);
	over.call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, over.cq, name, NULL,
					     gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	bare_op(&ops[0], GRPC_OP_SEND_INITIAL_METADATA);
	bare_op(&ops[1], GRPC_OP_SEND_CLOSE_FROM_CLIENT);
	ck_assert_int_eq(grpc_call_start_batch(over.call, ops, 2, &over.tag_sent, NULL),
			 GRPC_CALL_OK);
	bare_op(&ops[0], GRPC_OP_RECV_INITIAL_METADATA);
	ops[0].data.recv_initial_metadata.recv_initial_metadata = &over.initial;
	bare_op(&ops[1], GRPC_OP_RECV_STATUS_ON_CLIENT);
	ops[1].data.recv_status_on_client.trailing_metadata = &over.trailing;
	ops[1].data.recv_status_on_client.status = &over.status;
	ops[1].data.recv_status_on_client.status_details = &over.details;
	ck_assert_int_eq(grpc_call_start_batch(over.call, ops, 2, &over.tag_status, NULL),
			 GRPC_CALL_OK);
	ck_assert_msg(!bare_ended(&over, 1000), "call %d was served: status %d",
		      RPC_STREAMS_PER_CONNECTION + 1, over.status);

	bare_free(&open[0]); /* a place frees: the waiting call goes on */
	ck_assert(bare_wait(&over, &over.tag_sent, 5000));
	ck_assert(bare_ended(&over, 5000));
	ck_assert_int_eq(over.status, GRPC_STATUS_INVALID_ARGUMENT);
	bare_free(&over);
	for (int i = 1; i < RPC_STREAMS_PER_CONNECTION; i++)
		bare_free(&open[i]);
	free(open);
	grpc_channel_destroy(ch);
	rpc_server_free(srv);
}
END_TEST

/* ---- authentication hooks -------------------------------------------- */

/* What the server's hook saw, and what the client's hook signed. */
static struct {
	char value[64];
	bool had_value;
	unsigned char body[256], signed_body[256];
	size_t len, signed_len;
} ah;

static enum error_code auth_server(const char *method, const char *value, const void *body,
				   size_t len, void *arg, struct error *err)
{
	ah.had_value = value != NULL;
	snprintf(ah.value, sizeof(ah.value), "%s", value ? value : "");
	ah.len = len < sizeof(ah.body) ? len : sizeof(ah.body);
	memcpy(ah.body, body, ah.len);
	if (!value)
		return error_set(err, ERR_UNAUTHENTICATED, "%s: no credentials", method);
	if (strcmp(value, "good") != 0)
		return error_set(err, ERR_PERMISSION, "%s: wrong credentials", method);
	return ERR_OK;
}

static enum error_code auth_client(const char *method, const void *body, size_t len,
				   char *value, size_t size, void *arg, struct error *err)
{
	ah.signed_len = len < sizeof(ah.signed_body) ? len : sizeof(ah.signed_body);
	memcpy(ah.signed_body, body, ah.signed_len);
	snprintf(value, size, "%s", (const char *)arg);
	return ERR_OK;
}

static struct rpc_client *auth_client_new(const char *value)
{
	struct rpc_client_options opt = { .wait_for_ready = true, .auth_key = "authorization",
					  .auth = auth_client, .auth_arg = (void *)value };
	struct rpc_client *c = NULL;
	struct error err;

	ck_assert_msg(rpc_client_new(address, &opt, &c, &err) == ERR_OK, "%s", err.msg);
	return c;
}

/* The hook sees the metadata and the request's bytes as the client signed
 * them, runs before the handler, and its refusals reach the client as
 * UNAUTHENTICATED and PERMISSION_DENIED with their messages. */
START_TEST(test_rpc_auth_hook_sees_metadata_and_body)
{
	struct rpc_server_options opt = { .threads = 2, .shutdown_grace_ms = 2000 };
	struct rpc_server *srv = NULL;
	struct rpc_client *none = client(address, 0), *bad = auth_client_new("bad"),
			  *good = auth_client_new("good");
	Granary__V1__GetDatasetRequest req = GRANARY__V1__GET_DATASET_REQUEST__INIT;
	unsigned char packed[256];
	size_t n;
	struct error err;

	ck_assert_int_eq(rpc_server_new(&opt, &srv, &err), ERR_OK);
	rpc_server_set_auth(srv, "authorization", auth_server, NULL);
	ck_assert_int_eq(rpc_server_add_unary(srv, M_GET, &granary__v1__get_dataset_request__descriptor,
					      &granary__v1__dataset__descriptor, get_dataset, NULL,
					      &err),
			 ERR_OK);
	ck_assert_int_eq(rpc_server_listen(srv, address, NULL, &err), ERR_OK);
	ck_assert_int_eq(rpc_server_start(srv, &err), ERR_OK);

	ck_assert_int_eq(get(none, "imagenet", 5000, NULL, &err), ERR_UNAUTHENTICATED);
	ck_assert_ptr_nonnull(strstr(err.msg, "no credentials"));
	ck_assert(!ah.had_value);
	ck_assert_int_eq(get(bad, "imagenet", 5000, NULL, &err), ERR_PERMISSION);
	ck_assert_ptr_nonnull(strstr(err.msg, "wrong credentials"));
	ck_assert_str_eq(ah.value, "bad");
	/* Refused before the handler: "missing" would have been NOT_FOUND. */
	ck_assert_int_eq(get(bad, "missing", 5000, NULL, &err), ERR_PERMISSION);

	ck_assert_msg(get(good, "imagenet", 5000, NULL, &err) == ERR_OK, "%s", err.msg);
	ck_assert_str_eq(ah.value, "good");
	req.name = "imagenet";
	n = protobuf_c_message_pack(&req.base, packed);
	ck_assert_uint_eq(ah.signed_len, n);
	ck_assert_uint_eq(ah.len, n);
	ck_assert_int_eq(memcmp(ah.signed_body, packed, n), 0);
	ck_assert_int_eq(memcmp(ah.body, packed, n), 0);
	ck_assert_int_eq(get(good, "missing", 5000, NULL, &err), ERR_NOT_FOUND);

	rpc_client_free(none);
	rpc_client_free(bad);
	rpc_client_free(good);
	rpc_server_free(srv);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("rpc");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_rpc_unary_round_trip_and_status_mapping);
	tcase_add_test(tc, test_rpc_stream_delivers_in_order_then_status);
	tcase_add_test(tc, test_rpc_deadline_passes_as_timeout);
	tcase_add_test(tc, test_rpc_message_limits_both_ways);
	tcase_add_test(tc, test_rpc_blocked_handler_does_not_stall_others);
	tcase_add_test(tc, test_rpc_streams_past_the_limit_are_refused_as_busy);
	tcase_add_test(tc, test_rpc_calls_without_a_request_hold_no_thread);
	tcase_add_test(tc, test_rpc_one_connection_holds_a_bounded_number_of_calls);
	tcase_add_test(tc, test_rpc_shutdown_finishes_in_flight_calls);
	tcase_add_test(tc, test_rpc_shutdown_cancels_after_grace);
	tcase_add_test(tc, test_rpc_shutdown_gives_up_on_a_stuck_handler);
	tcase_add_test(tc, test_rpc_tcp_listener_and_unreachable_server);
	tcase_add_test(tc, test_rpc_client_finds_a_restarted_server_quickly);
	tcase_add_test(tc, test_error_from_grpc_inverts_error_to_grpc);
	tcase_add_test(tc, test_rpc_auth_hook_sees_metadata_and_body);
	suite_add_tcase(s, tc);
	return check_main_run(s);
}
