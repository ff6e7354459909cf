/*
 * store_s3.c - the s3:// backend: libcurl, our own SigV4, bounded retries.
 *
 * Connections: a pool of curl easy handles. An easy handle keeps its
 * connection alive after a transfer, so borrowing a handle borrows a warm
 * connection; handles beyond max_connections are closed on return. A curl
 * share object holds the DNS and TLS session caches for all handles.
 *
 * Retries: each call runs under a struct retry (attempts and an overall
 * deadline). Connection failures, resets, timeouts, 5xx and 429 are
 * retried with backoff; any other 4xx is final at once. Each attempt's
 * timeout is the smaller of request_timeout_ms and what is left of the
 * deadline, so a call never outlives its deadline by more than one connect.
 */
#include "store/store_impl.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/log.h"
#include "common/retry.h"
#include "store/credentials.h"
#include "store/s3_sign.h"
#include "store/s3_xml.h"

#define S3_ERROR_BODY_MAX (64 * 1024)
#define S3_LIST_BODY_MAX (64 * 1024 * 1024)

struct s3_store {
	struct store base;
	char *bucket;
	char *base_url;    /* "http://host:port" or "http://bucket.host:port" */
	char *host;        /* Host header value, as signed */
	char *path_prefix; /* "/bucket" for path-style, "" for virtual-host */
	char *region;
	char *endpoint;    /* as configured, for messages */
	struct store_credentials cred;
	bool anonymous;
	struct retry_policy retry;
	long connect_timeout_ms;
	uint64_t request_timeout_ms;
	bool insecure;
	bool uniform_errors;
	struct log_limiter retry_log; /* "s3 request retried": one line per 10 s */
	CURLSH *share;
	pthread_mutex_t share_mu[CURL_LOCK_DATA_LAST];
	/* Today's signing key: derived at the first request of each day
	 * (UTC), not at every request; date "" until then. */
	pthread_mutex_t sign_mu;
	struct s3_signing_key sign_key; /* protected by sign_mu */
	pthread_mutex_t pool_mu;
	CURL **idle;       /* protected by pool_mu */
	size_t nidle;      /* protected by pool_mu */
	size_t max_idle;
};

/* What one request asks for and what came back. */
struct s3_call {
	const char *op;        /* "GET", "HEAD", "LIST": for messages */
	const char *method;
	const char *key;       /* object key or "" for the bucket */
	const char *query;     /* canonical query, "" for none */
	char range[64];        /* "" for none */
	const char *if_match;  /* NULL for none */
	const char *upload;    /* PUT body, NULL for none */
	size_t upload_len, upload_pos;
	const char *payload_hash; /* hex SHA-256 of the body */
	/*
	 * GET data goes to sink, in order, each byte once: a retry asks for
	 * the range from off + delivered, so a stream resumes where the
	 * failed attempt stopped. Other bodies (errors, listings) collect
	 * into the bounded growing buffer dyn.
	 */
	store_sink_fn sink;
	void *sink_arg;
	uint64_t off, len;
	uint64_t until_ms;     /* the caller's deadline; 0 = store.deadline only */
	uint64_t delivered;
	uint64_t skip;         /* this attempt: bytes to drop if the server ignored Range */
	bool sink_failed;
	char *dyn;
	size_t dyn_len, dyn_cap, dyn_max;
	long status;
	CURL *curl;
	/* from the response headers */
	char etag[80];
	char pinned[96];       /* if_match of a resumed GET: the version begun */
	int64_t content_length; /* -1 when absent */
	int64_t mtime;          /* -1 when absent */
	bool want_mtime;        /* parse Last-Modified (HEAD) */
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_global(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_ALL);
}

static void share_lock(CURL *h, curl_lock_data data, curl_lock_access a, void *arg)
{
	struct s3_store *s = arg;

	(void)h;
	(void)a;
	pthread_mutex_lock(&s->share_mu[data]);
}

static void share_unlock(CURL *h, curl_lock_data data, void *arg)
{
	struct s3_store *s = arg;

	(void)h;
	pthread_mutex_unlock(&s->share_mu[data]);
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct s3_call *call = arg;
	size_t n = size * nmemb, total = n;
	long status = 0;

	curl_easy_getinfo(call->curl, CURLINFO_RESPONSE_CODE, &status);
	if (status >= 200 && status < 300 && call->sink) {
		uint64_t want = call->len - call->delivered;

		/* A server that ignores Range sends the whole object with 200:
		 * drop the bytes before the window, stop after it. */
		if (status == 200 && call->skip > 0) {
			size_t drop = call->skip < n ? (size_t)call->skip : n;

			call->skip -= drop;
			data += drop;
			n -= drop;
		}
		if (n > want)
			n = (size_t)want;
		if (n > 0 && call->sink(data, n, call->sink_arg) != 0) {
			call->sink_failed = true;
			return 0;
		}
		call->delivered += n;
		/* Past the window of a 200 answer: stop the transfer early. */
		return (call->delivered == call->len && n < total && status == 200) ? 0 : total;
	}
	/* Error bodies and listings collect into a bounded growing buffer. A
	 * listing past it fails; an error body keeps its first dyn_max bytes,
	 * enough to tell the error (a proxy's long HTML page for a 503), and
	 * its status still decides whether to retry. */
	if (call->dyn_len + n > call->dyn_max) {
		if (status < 300)
			return 0;
		n = call->dyn_max - call->dyn_len;
	}
	if (call->dyn_len + n + 1 > call->dyn_cap) {
		size_t cap = call->dyn_cap ? call->dyn_cap : 16384;
		char *p;

		while (cap < call->dyn_len + n + 1)
			cap *= 2;
		p = realloc(call->dyn, cap);
		if (!p)
			return 0;
		call->dyn = p;
		call->dyn_cap = cap;
	}
	memcpy(call->dyn + call->dyn_len, data, n);
	call->dyn_len += n;
	call->dyn[call->dyn_len] = '\0';
	return total;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct s3_call *call = arg;
	size_t n = size * nmemb;

	if (n > 5 && strncasecmp(data, "etag:", 5) == 0) {
		const char *v = data + 5;
		size_t len = n - 5, out = 0;

		for (size_t i = 0; i < len && out + 1 < sizeof(call->etag); i++) {
			char c = v[i];

			if (c == '"' || c == ' ' || c == '\t' || c == '\r' || c == '\n')
				continue;
			call->etag[out++] = c;
		}
		call->etag[out] = '\0';
	} else if (n > 15 && strncasecmp(data, "content-length:", 15) == 0) {
		call->content_length = strtoll(data + 15, NULL, 10);
	} else if (call->want_mtime && n > 14 && strncasecmp(data, "last-modified:", 14) == 0) {
		char v[128];
		size_t len = n - 14 < sizeof(v) - 1 ? n - 14 : sizeof(v) - 1;

		memcpy(v, data + 14, len);
		v[len] = '\0';
		call->mtime = (int64_t)curl_getdate(v, NULL);
	}
	return n;
}

static size_t on_upload(char *data, size_t size, size_t nmemb, void *arg)
{
	struct s3_call *call = arg;
	size_t n = size * nmemb, left = call->upload_len - call->upload_pos;

	if (n > left)
		n = left;
	memcpy(data, call->upload + call->upload_pos, n);
	call->upload_pos += n;
	return n;
}

/*
 * A new handle, with the options every request of this store sets the
 * same way: prepare() sets only what changes from one request to the
 * next, instead of resetting the handle and setting them all again.
 */
static CURL *handle_new(struct s3_store *s)
{
	CURL *c = curl_easy_init();

	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_SHARE, s->share);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, s->connect_timeout_ms);
	curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(c, CURLOPT_BUFFERSIZE, 512L * 1024);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	if (s->insecure) {
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	return c;
}

static CURL *handle_borrow(struct s3_store *s)
{
	CURL *c = NULL;

	pthread_mutex_lock(&s->pool_mu);
	if (s->nidle > 0)
		c = s->idle[--s->nidle];
	pthread_mutex_unlock(&s->pool_mu);
	return c ? c : handle_new(s);
}

static void handle_return(struct s3_store *s, CURL *c)
{
	pthread_mutex_lock(&s->pool_mu);
	if (s->nidle < s->max_idle) {
		s->idle[s->nidle++] = c;
		c = NULL;
	}
	pthread_mutex_unlock(&s->pool_mu);
	if (c)
		curl_easy_cleanup(c);
}

static bool retryable_curl(CURLcode rc)
{
	switch (rc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_OPERATION_TIMEDOUT:
	case CURLE_SEND_ERROR:
	case CURLE_RECV_ERROR:
	case CURLE_GOT_NOTHING:
	case CURLE_PARTIAL_FILE:
	case CURLE_HTTP2:
	case CURLE_HTTP2_STREAM:
	case CURLE_SSL_CONNECT_ERROR:
		return true;
	default:
		return false;
	}
}

static bool retryable_status(long status)
{
	return status >= 500 || status == 429;
}

static char *join_url(const struct s3_store *s, const struct s3_call *call,
		      char **path_out)
{
	size_t need = s3_uri_encode(call->key, true, NULL, 0);
	char *enc = malloc(need + 1), *path = NULL, *url = NULL;

	if (!enc)
		return NULL;
	s3_uri_encode(call->key, true, enc, need + 1);
	if (asprintf(&path, "%s/%s", s->path_prefix, enc) < 0)
		path = NULL;
	free(enc);
	if (!path)
		return NULL;
	if (asprintf(&url, "%s%s%s%s", s->base_url, path, *call->query ? "?" : "",
		     call->query) < 0)
		url = NULL;
	if (!url) {
		free(path);
		return NULL;
	}
	*path_out = path;
	return url;
}

/* Describes the target in messages: never a credential or signature. */
static void where(const struct s3_store *s, const struct s3_call *call,
		  char *out, size_t size)
{
	if (*call->key)
		snprintf(out, size, "s3 %s '%s' in bucket '%s' at %s", call->op,
			 call->key, s->bucket, s->endpoint);
	else
		snprintf(out, size, "s3 %s of bucket '%s' at %s", call->op, s->bucket,
			 s->endpoint);
}

#define NOT_S3 "the endpoint did not answer as an S3 server"

/* With uniform_errors: the failure detail goes to the debug log only, the
 * caller gets the one message every non-S3 failure gives. */
static enum error_code not_s3(const struct s3_store *s, const struct s3_call *call,
			      const char *detail, struct error *err)
{
	log_debug("s3 endpoint did not answer as S3", LOG_S("op", call->op),
		  LOG_S("bucket", s->bucket), LOG_S("endpoint", s->endpoint),
		  LOG_S("cause", detail));
	return error_set(err, ERR_UNAVAILABLE, NOT_S3);
}

static enum error_code status_error(const struct s3_store *s, struct s3_call *call,
				    struct error *err)
{
	char code[64] = "", message[256] = "", at[1024];
	const char *hint = "";
	enum error_code ec;

	where(s, call, at, sizeof(at));
	if (call->dyn_len > 0)
		s3_xml_parse_error(call->dyn, call->dyn_len, code, sizeof(code),
				   message, sizeof(message));
	/* HEAD answers carry no body: their status is all an S3 server says. */
	if (s->uniform_errors && !*code && strcmp(call->method, "HEAD") != 0) {
		char detail[1200];

		snprintf(detail, sizeof(detail), "%s: HTTP %ld without an S3 error document", at,
			 call->status);
		return not_s3(s, call, detail, err);
	}
	switch (call->status) {
	case 400:
		ec = ERR_INVALID;
		break;
	case 401:
		ec = ERR_UNAUTHENTICATED;
		hint = ": check the credentials";
		break;
	case 403:
		ec = ERR_PERMISSION;
		hint = ": check the credentials and the bucket policy";
		break;
	case 404:
		ec = ERR_NOT_FOUND;
		if (strcmp(code, "NoSuchBucket") == 0)
			return error_set(err, ERR_NOT_FOUND, "%s: bucket '%s' does not exist",
					 at, s->bucket);
		if (*call->key)
			return error_set(err, ERR_NOT_FOUND, "%s: no such key", at);
		break;
	case 412:
		return error_set(err, ERR_NOT_FOUND,
				 "%s: object changed (ETag is no longer '%s')", at,
				 call->if_match ? call->if_match : "");
	case 416:
		ec = ERR_RANGE;
		break;
	case 429:
	case 500:
	case 502:
	case 503:
	case 504:
		ec = ERR_UNAVAILABLE;
		break;
	default:
		ec = call->status >= 500 ? ERR_UNAVAILABLE : ERR_INVALID;
		break;
	}
	if (*code)
		return error_set(err, ec, "%s: HTTP %ld %s%s%s%s", at, call->status, code,
				 *message ? ": " : "", message, hint);
	return error_set(err, ec, "%s: HTTP %ld %s%s", at, call->status,
			 error_code_name(ec), hint);
}

/* Sets up the handle for one attempt; the signature is made fresh each time. */
static enum error_code prepare(struct s3_store *s, struct s3_call *call,
			       const char *url, const char *path, long timeout_ms,
			       struct curl_slist **hdrs, struct error *err)
{
	/* A line holds any header the signer can sign (its canonical request
	 * is 8 KiB): a session token from STS has no fixed size. */
	char date[17], auth[1024], line[8192 + 64];
	struct s3_header h[6];
	size_t nh = 0;
	CURL *c = call->curl;

	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, call);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, call);
	/* A GET, unless said otherwise below: undoes the HEAD or the PUT
	 * of the handle's last request (CURLOPT_NOBODY and CURLOPT_UPLOAD
	 * back to 0). */
	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	if (call->upload) {
		call->upload_pos = 0;
		curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(c, CURLOPT_READDATA, call);
		curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)call->upload_len);
	} else if (strcmp(call->method, "HEAD") == 0) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	}

	s3_amz_date(time(NULL), date);
	h[nh++] = (struct s3_header){ "host", s->host };
	h[nh++] = (struct s3_header){ "x-amz-content-sha256", call->payload_hash };
	h[nh++] = (struct s3_header){ "x-amz-date", date };
	if (*call->range)
		h[nh++] = (struct s3_header){ "range", call->range };
	if (call->if_match)
		h[nh++] = (struct s3_header){ "if-match", call->if_match };
	if (!s->anonymous && s->cred.session_token)
		h[nh++] = (struct s3_header){ "x-amz-security-token", s->cred.session_token };

	*hdrs = NULL;
	/* host is set by curl from the URL; the rest we send as signed. */
	for (size_t i = 1; i < nh; i++) {
		int n = snprintf(line, sizeof(line), "%s: %s", h[i].name, h[i].value);

		if (n < 0 || (size_t)n >= sizeof(line)) {
			explicit_bzero(line, sizeof(line));
			return error_set(err, ERR_INVALID, "s3: header '%s' is too long to send (%zu bytes)",
					 h[i].name, strlen(h[i].value));
		}
		*hdrs = curl_slist_append(*hdrs, line);
	}
	if (!s->anonymous) {
		struct s3_sign_request req = {
			.method = call->method, .canonical_uri = path,
			.canonical_query = call->query, .headers = h, .nheaders = nh,
			.payload_hash = call->payload_hash, .amz_date = date,
			.region = s->region,
		};
		struct s3_signing_key key;
		enum error_code rc = ERR_OK;

		pthread_mutex_lock(&s->sign_mu);
		if (strncmp(s->sign_key.date, date, 8) != 0)
			rc = s3_signing_key_derive(&s->cred, date, s->region, &s->sign_key, err);
		key = s->sign_key;
		pthread_mutex_unlock(&s->sign_mu);
		if (rc == ERR_OK)
			rc = s3_sign_v4_key(&s->cred, &key, &req, auth, sizeof(auth), err);
		explicit_bzero(&key, sizeof(key));
		if (rc != ERR_OK)
			return rc;
		snprintf(line, sizeof(line), "authorization: %s", auth);
		*hdrs = curl_slist_append(*hdrs, line);
		explicit_bzero(line, sizeof(line));
	}
	/* Expect: 100-continue costs a round trip per PUT; Accept is noise. */
	*hdrs = curl_slist_append(*hdrs, "accept:");
	*hdrs = curl_slist_append(*hdrs, "expect:");
	if (!*hdrs)
		return error_set(err, ERR_NOMEM, "s3: out of memory");
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, *hdrs);
	return ERR_OK;
}

/*
 * Runs one call with retries. On ERR_OK call->status is 2xx (or 416 for a
 * caller that handles it); otherwise err says why, naming the target.
 */
static enum error_code perform(struct s3_store *s, struct s3_call *call,
			       struct error *err)
{
	char *url = NULL, *path = NULL, at[1024];
	char curl_msg[CURL_ERROR_SIZE];
	struct retry r;
	enum error_code rc = ERR_OK;
	uint64_t delay;

	url = join_url(s, call, &path);
	if (!url)
		return error_set(err, ERR_NOMEM, "s3 %s: out of memory", call->op);
	call->curl = handle_borrow(s);
	if (!call->curl) {
		free(url);
		free(path);
		return error_set(err, ERR_NOMEM, "s3 %s: cannot create a connection handle", call->op);
	}
	if (!call->payload_hash)
		call->payload_hash = S3_EMPTY_PAYLOAD_SHA256;
	retry_init(&r, &s->retry);
	if (call->until_ms) {
		/* The caller's deadline, when nearer, is this call's. */
		if (call->until_ms <= r.start_ms) {
			where(s, call, at, sizeof(at));
			rc = error_set(err, ERR_TIMEOUT, "%s: the read's deadline passed before it was sent",
				       at);
			handle_return(s, call->curl);
			call->curl = NULL;
			free(url);
			free(path);
			return rc;
		}
		if (!r.policy.deadline_ms || call->until_ms - r.start_ms < r.policy.deadline_ms)
			r.policy.deadline_ms = call->until_ms - r.start_ms;
	}
	for (;;) {
		struct curl_slist *hdrs = NULL;
		uint64_t left = retry_remaining_ms(&r, retry_now_ms());
		long timeout = (long)(left < s->request_timeout_ms ? left : s->request_timeout_ms);
		CURLcode cc;
		bool again;

		if (timeout <= 0)
			timeout = 1;
		if (call->sink) {
			uint64_t from = call->off + call->delivered;

			snprintf(call->range, sizeof(call->range), "bytes=%llu-%llu",
				 (unsigned long long)from,
				 (unsigned long long)(call->off + call->len - 1));
			call->skip = from;
		}
		call->dyn_len = 0;
		call->status = 0;
		call->etag[0] = '\0';
		call->content_length = -1;
		call->mtime = -1;
		rc = prepare(s, call, url, path, timeout, &hdrs, err);
		if (rc != ERR_OK) {
			curl_slist_free_all(hdrs);
			break;
		}
		curl_msg[0] = '\0';
		curl_easy_setopt(call->curl, CURLOPT_ERRORBUFFER, curl_msg);
		atomic_fetch_add(&s->base.requests, 1);
		cc = curl_easy_perform(call->curl);
		curl_easy_getinfo(call->curl, CURLINFO_RESPONSE_CODE, &call->status);
		curl_slist_free_all(hdrs);
		/* A GET that delivered bytes of a version it did not name goes
		 * on with that version only: a later attempt asks If-Match its
		 * ETag, so an object replaced meanwhile is "changed" (412),
		 * never its old bytes followed by the new ones. */
		if (call->sink && !call->if_match && call->delivered > 0 && *call->etag) {
			snprintf(call->pinned, sizeof(call->pinned), "\"%s\"", call->etag);
			call->if_match = call->pinned;
		}

		if (cc == CURLE_WRITE_ERROR && call->sink && call->sink_failed) {
			rc = error_set(err, ERR_IO, "s3 %s '%s': the reader stopped the transfer",
				       call->op, call->key);
			break;
		}
		if (cc == CURLE_WRITE_ERROR && call->sink && call->status == 200 &&
		    call->delivered == call->len) {
			/* We stopped a full-object answer once our window was filled. */
			cc = CURLE_OK;
		}
		if (cc == CURLE_OK && call->status >= 200 && call->status < 300) {
			rc = ERR_OK;
			break;
		}
		if (cc == CURLE_OK && !retryable_status(call->status)) {
			rc = status_error(s, call, err);
			break;
		}
		again = cc == CURLE_OK || retryable_curl(cc);
		where(s, call, at, sizeof(at));
		if (cc != CURLE_OK && s->uniform_errors) {
			char detail[1400];

			snprintf(detail, sizeof(detail), "%s: %s", at,
				 *curl_msg ? curl_msg : curl_easy_strerror(cc));
			rc = not_s3(s, call, detail, err);
		} else if (cc != CURLE_OK) {
			rc = error_set(err,
				       cc == CURLE_OPERATION_TIMEDOUT ? ERR_TIMEOUT : ERR_UNAVAILABLE,
				       "%s: %s", at, *curl_msg ? curl_msg : curl_easy_strerror(cc));
		} else {
			rc = status_error(s, call, err);
		}
		if (!again || !retry_next(&r, retry_now_ms(), &delay)) {
			/* The count of attempts would tell how the endpoint failed. */
			if (again && r.attempt > 1 && !s->uniform_errors)
				error_wrap(err, "gave up after %u attempts", r.attempt);
			break;
		}
		atomic_fetch_add(&s->base.retries, 1);
		if (s->uniform_errors)
			log_debug("s3 request retried", LOG_S("op", call->op),
				  LOG_S("bucket", s->bucket), LOG_U("attempt", r.attempt),
				  LOG_U("delay_ms", delay));
		else
			log_limited_warn(&s->retry_log, "s3 request retried", LOG_S("op", call->op),
					 LOG_S("bucket", s->bucket), LOG_S("key", call->key),
					 LOG_U("attempt", r.attempt), LOG_U("delay_ms", delay),
					 LOG_S("cause", err ? err->msg : ""));
		retry_sleep_ms(delay);
	}
	if (rc != ERR_OK) {
		/* A connection that failed mid-transfer is not worth keeping. */
		curl_easy_cleanup(call->curl);
	} else {
		/* Nothing of this call's (its headers, its error buffer) stays
		 * with a handle kept for the next. */
		curl_easy_setopt(call->curl, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(call->curl, CURLOPT_ERRORBUFFER, NULL);
		handle_return(s, call->curl);
	}
	call->curl = NULL;
	free(url);
	free(path);
	return rc;
}

static enum error_code s3_get_stream(struct store *st, const char *key, uint64_t off,
				     uint64_t len, store_sink_fn sink, void *arg,
				     const char *etag, uint64_t until_ms, uint64_t *delivered,
				     struct error *err)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_call call = {
		.op = "GET", .method = "GET", .key = key, .query = "",
		.sink = sink, .sink_arg = arg, .off = off, .len = len, .until_ms = until_ms,
		.dyn_max = S3_ERROR_BODY_MAX,
	};
	enum error_code rc;
	char quoted[96];

	if (etag && *etag) {
		snprintf(quoted, sizeof(quoted), "\"%s\"", etag);
		call.if_match = quoted;
	}
	rc = perform(s, &call, err);
	if (rc == ERR_OK && call.status == 200 && off > 0 && call.delivered == 0) {
		/* The server ignored Range and the object ends before off. */
		rc = error_set(err, ERR_RANGE,
			       "s3 GET '%s' in bucket '%s' at %s: offset %llu is past the end",
			       key, s->bucket, s->endpoint, (unsigned long long)off);
	}
	if (rc == ERR_RANGE && off == 0 && call.delivered == 0) {
		/* S3 answers 416 to any range of a zero-byte object: reading
		 * from its start yields nothing, which is not an error. */
		rc = ERR_OK;
		error_clear(err);
	}
	atomic_fetch_add(&s->base.bytes_read, call.delivered);
	*delivered = call.delivered;
	free(call.dyn);
	return rc;
}

static enum error_code s3_head(struct store *st, const char *key,
			       struct store_object *info, struct error *err)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_call call = { .op = "HEAD", .method = "HEAD", .key = key, .query = "",
				.want_mtime = true, .dyn_max = S3_ERROR_BODY_MAX };
	enum error_code rc;

	rc = perform(s, &call, err);
	free(call.dyn);
	if (rc != ERR_OK)
		return rc;
	if (call.content_length < 0)
		return error_set(err, ERR_IO,
				 "s3 HEAD '%s' in bucket '%s' at %s: answer has no Content-Length",
				 key, s->bucket, s->endpoint);
	info->key = strdup(key);
	if (!info->key)
		return error_set(err, ERR_NOMEM, "s3 HEAD: out of memory");
	info->size = (uint64_t)call.content_length;
	info->mtime = call.mtime > 0 ? call.mtime : 0;
	snprintf(info->etag, sizeof(info->etag), "%s", call.etag);
	return ERR_OK;
}

/* Appends "name=value&" with the value S3-encoded ('/' too). */
static void query_add(char *q, size_t size, const char *name, const char *value)
{
	size_t len = strlen(q);

	if (len >= size)
		return;
	snprintf(q + len, size - len, "%s%s=", len ? "&" : "", name);
	len = strlen(q);
	s3_uri_encode(value, false, q + len, size - len);
}

static enum error_code s3_list(struct store *st, const char *prefix,
			       const char *delimiter, const char *token,
			       unsigned max_keys, struct store_list_page *page,
			       struct error *err)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_call call = { .op = "LIST", .method = "GET", .key = "",
				.dyn_max = S3_LIST_BODY_MAX };
	/* Room for the longest parameters below encoded (three bytes for one
	 * of UTF-8: 2 x 3 x 1024 + 3 x 16 + the names and numbers), so that
	 * no page asks for a prefix cut short; the signer refuses what its
	 * canonical request cannot hold. */
	char query[8192] = "", num[16];
	enum error_code rc;

	if (strlen(prefix) > 1024 || (token && strlen(token) > 1024) ||
	    (delimiter && strlen(delimiter) > 16))
		return error_set(err, ERR_INVALID, "s3 LIST of bucket '%s': prefix, token or delimiter too long",
				 s->bucket);
	/* Canonical order: parameters sorted by name, as SigV4 signs them. */
	if (token && *token)
		query_add(query, sizeof(query), "continuation-token", token);
	if (delimiter && *delimiter)
		query_add(query, sizeof(query), "delimiter", delimiter);
	query_add(query, sizeof(query), "encoding-type", "url");
	query_add(query, sizeof(query), "list-type", "2");
	if (max_keys) {
		snprintf(num, sizeof(num), "%u", max_keys);
		query_add(query, sizeof(query), "max-keys", num);
	}
	if (*prefix)
		query_add(query, sizeof(query), "prefix", prefix);
	call.query = query;
	rc = perform(s, &call, err);
	if (rc == ERR_OK) {
		rc = s3_xml_parse_list(call.dyn ? call.dyn : "", call.dyn_len, page, err);
		if (rc != ERR_OK && s->uniform_errors)
			rc = not_s3(s, &call, err ? err->msg : "", err);
		else if (rc != ERR_OK)
			error_wrap(err, "s3 LIST of bucket '%s' at %s", s->bucket, s->endpoint);
	}
	free(call.dyn);
	return rc;
}

static void release_s3(struct store *st)
{
	struct s3_store *s = (struct s3_store *)st;

	if (!s)
		return;
	for (size_t i = 0; i < s->nidle; i++)
		curl_easy_cleanup(s->idle[i]);
	free(s->idle);
	if (s->share)
		curl_share_cleanup(s->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&s->share_mu[i]);
	pthread_mutex_destroy(&s->pool_mu);
	pthread_mutex_destroy(&s->sign_mu);
	explicit_bzero(&s->sign_key, sizeof(s->sign_key));
	log_limiter_release(&s->retry_log);
	credentials_release(&s->cred);
	free(s->bucket);
	free(s->base_url);
	free(s->host);
	free(s->path_prefix);
	free(s->region);
	free(s->endpoint);
	free(s->base.desc);
	free(s->base.desc_at);
	free(s);
}

static enum error_code s3_put(struct store *st, const char *key, const void *data,
			      size_t len, struct error *err)
{
	struct s3_store *s = (struct s3_store *)st;
	struct s3_call call = { .op = "PUT", .method = "PUT", .key = key, .query = "",
				.dyn_max = S3_ERROR_BODY_MAX, .upload = data, .upload_len = len };
	char hash[2 * 32 + 1];
	enum error_code rc;

	rc = s3_payload_sha256(data, len, hash, err);
	if (rc != ERR_OK)
		return rc;
	call.payload_hash = hash;
	rc = perform(s, &call, err);
	free(call.dyn);
	return rc;
}

static const struct store_ops s3_ops = {
	.put = s3_put,
	.get_stream = s3_get_stream,
	.head = s3_head,
	.list = s3_list,
	.free = release_s3,
};

static bool is_aws_host(const char *host)
{
	size_t n = strlen(host);

	return n >= 14 && strcmp(host + n - 14, ".amazonaws.com") == 0;
}

/* Splits the endpoint into scheme and authority and decides addressing. */
static enum error_code setup_addressing(struct s3_store *s, const char *endpoint,
					enum store_addressing addressing,
					struct error *err)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	enum error_code rc = ERR_OK;
	bool virtual_host;
	int n;

	if (!u)
		return error_set(err, ERR_NOMEM, "s3: out of memory");
	curl_url_set(u, CURLUPART_URL, endpoint, 0);
	curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &host, 0);
	/* A scheme's own port (:443, :80) is left out, as curl leaves it out
	 * of the Host header it sends: the host signed must be that one. */
	curl_url_get(u, CURLUPART_PORT, &port, CURLU_NO_DEFAULT_PORT);
	if (!scheme || !host) {
		rc = error_set(err, ERR_INVALID, "endpoint '%s': not a valid URL", endpoint);
		goto out;
	}
	if (addressing == STORE_ADDR_AUTO)
		virtual_host = is_aws_host(host) && !strchr(s->bucket, '.');
	else
		virtual_host = addressing == STORE_ADDR_VIRTUAL;
	if (virtual_host && strchr(s->bucket, '.') && strcmp(scheme, "https") == 0) {
		rc = error_set(err, ERR_INVALID,
			       "bucket '%s': a name with '.' cannot use virtual-host addressing over https "
			       "(the certificate does not match); use path-style", s->bucket);
		goto out;
	}
	n = asprintf(&s->host, "%s%s%s%s%s", virtual_host ? s->bucket : "",
		     virtual_host ? "." : "", host, port ? ":" : "", port ? port : "");
	if (n < 0)
		s->host = NULL;
	n = asprintf(&s->base_url, "%s://%s", scheme, s->host ? s->host : "");
	if (n < 0)
		s->base_url = NULL;
	s->path_prefix = virtual_host ? strdup("") : NULL;
	if (!virtual_host && asprintf(&s->path_prefix, "/%s", s->bucket) < 0)
		s->path_prefix = NULL;
	if (!s->host || !s->base_url || !s->path_prefix)
		rc = error_set(err, ERR_NOMEM, "s3: out of memory");
out:
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

enum error_code store_s3_open(const char *bucket, const struct store_config *cfg,
			      struct store **out, struct error *err)
{
	struct s3_store *s = NULL;
	const char *region = cfg->region && *cfg->region ? cfg->region : "us-east-1";
	char *aws_endpoint = NULL;
	const char *endpoint = cfg->endpoint;
	enum error_code rc;
	bool found = false;

	*out = NULL;
	pthread_once(&curl_once, curl_global);
	if (curl_init_rc != CURLE_OK)
		return error_set(err, ERR_INTERNAL, "s3: libcurl initialisation failed");
	rc = store_check_bucket_name(bucket, err);
	if (rc != ERR_OK)
		return rc;
	rc = store_check_region(region, err);
	if (rc != ERR_OK)
		return error_wrap(err, "s3");
	if (!endpoint || !*endpoint) {
		if (asprintf(&aws_endpoint, "https://s3.%s.amazonaws.com", region) < 0)
			return error_set(err, ERR_NOMEM, "s3: out of memory");
		endpoint = aws_endpoint;
	}
	rc = store_check_endpoint(endpoint, err);
	if (rc != ERR_OK)
		goto fail;

	s = calloc(1, sizeof(*s));
	if (!s) {
		rc = error_set(err, ERR_NOMEM, "s3: out of memory");
		goto fail;
	}
	s->base.ops = &s3_ops;
	pthread_mutex_init(&s->pool_mu, NULL);
	pthread_mutex_init(&s->sign_mu, NULL);
	log_limiter_init(&s->retry_log, 10000, NULL, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&s->share_mu[i], NULL);
	s->bucket = strdup(bucket);
	s->region = strdup(region);
	s->endpoint = strdup(endpoint);
	if (asprintf(&s->base.desc, "s3://%s", bucket) < 0)
		s->base.desc = NULL;
	if (asprintf(&s->base.desc_at, "s3://%s at %s", bucket, endpoint) < 0)
		s->base.desc_at = NULL;
	if (!s->bucket || !s->region || !s->endpoint || !s->base.desc || !s->base.desc_at) {
		rc = error_set(err, ERR_NOMEM, "s3: out of memory");
		goto fail;
	}
	rc = setup_addressing(s, endpoint, cfg->addressing, err);
	if (rc != ERR_OK)
		goto fail;

	if (!cfg->anonymous) {
		rc = credentials_load(cfg->credentials_file, cfg->profile, &s->cred, &found, err);
		if (rc != ERR_OK)
			goto fail;
	}
	s->anonymous = !found;

	s->connect_timeout_ms = (long)(cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 3000);
	s->request_timeout_ms = cfg->request_timeout_ms ? cfg->request_timeout_ms : 30000;
	s->retry = (struct retry_policy){
		.max_attempts = cfg->max_attempts ? cfg->max_attempts : 5,
		.base_ms = cfg->retry_base_ms ? cfg->retry_base_ms : 50,
		.max_ms = cfg->retry_max_ms ? cfg->retry_max_ms : 2000,
		.deadline_ms = cfg->deadline_ms ? cfg->deadline_ms : 60000,
	};
	s->insecure = cfg->insecure_skip_verify;
	s->uniform_errors = cfg->uniform_errors;
	s->max_idle = cfg->max_connections ? cfg->max_connections : 64;
	s->idle = calloc(s->max_idle, sizeof(*s->idle));
	s->share = curl_share_init();
	if (!s->idle || !s->share) {
		rc = error_set(err, ERR_NOMEM, "s3: out of memory");
		goto fail;
	}
	curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	free(aws_endpoint);
	*out = &s->base;
	return ERR_OK;
fail:
	free(aws_endpoint);
	release_s3(s ? &s->base : NULL);
	return rc;
}
