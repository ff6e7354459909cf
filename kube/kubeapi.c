/*
 * kubeapi.c - Kubernetes API calls over libcurl (see kubeapi.h).
 */
#include "kube/kubeapi.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fileio.h"
#include "common/retry.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBEAPI_REPLY_MAX (4u << 20)
/* Items asked for in one page of a list (most objects are a few KiB: a
 * page stays under KUBEAPI_REPLY_MAX), and how often a list whose
 * continue token expired starts again. */
#define KUBEAPI_LIST_LIMIT 250
#define KUBEAPI_LIST_RESTARTS 3
#define TOKEN_MAX 16384

struct kubeapi {
	char *base, *token_file, *ca_file;
	uint64_t timeout_ms;    /* a call's, and a watch's connect (kubeapi_set_timeout) */
};

struct buf {
	char *data;
	size_t len;
	bool over;
};

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
	struct buf *b = arg;
	size_t len = size * n;
	char *grown;

	if (b->len + len > KUBEAPI_REPLY_MAX) {
		b->over = true;
		return 0;
	}
	grown = realloc(b->data, b->len + len + 1);
	if (!grown)
		return 0;
	memcpy(grown + b->len, p, len);
	b->data = grown;
	b->len += len;
	b->data[b->len] = '\0';
	return len;
}

enum error_code kubeapi_new(const char *base_url, const char *token_file, const char *ca_file,
			    struct kubeapi **out, struct error *err)
{
	struct kubeapi *k = calloc(1, sizeof(*k));
	const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
	int rc;

	if (!k)
		return error_set(err, ERR_NOMEM, "out of memory");
	if (base_url && *base_url)
		rc = asprintf(&k->base, "%s", base_url);
	else if (host && *host && port && *port)
		rc = asprintf(&k->base, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
	else {
		free(k);
		return error_set(err, ERR_INVALID,
				 "no Kubernetes API address: KUBERNETES_SERVICE_HOST/PORT are not set (not in a pod?)");
	}
	if (rc < 0 ||
	    asprintf(&k->token_file, "%s", token_file && *token_file ? token_file : SA_DIR "/token") < 0 ||
	    asprintf(&k->ca_file, "%s", ca_file && *ca_file ? ca_file : SA_DIR "/ca.crt") < 0) {
		kubeapi_free(k);
		return error_set(err, ERR_NOMEM, "out of memory");
	}
	k->timeout_ms = KUBEAPI_TIMEOUT_MS;
	*out = k;
	return ERR_OK;
}

void kubeapi_set_timeout(struct kubeapi *k, uint64_t timeout_ms)
{
	k->timeout_ms = timeout_ms ? timeout_ms : KUBEAPI_TIMEOUT_MS;
}

void kubeapi_free(struct kubeapi *k)
{
	if (!k)
		return;
	free(k->base);
	free(k->token_file);
	free(k->ca_file);
	free(k);
}

static enum error_code auth_header(const struct kubeapi *k, char **out, struct error *err)
{
	char *token = NULL;
	size_t len = 0;
	enum error_code rc = fileio_read_small(k->token_file, TOKEN_MAX, &token, &len, err);

	if (rc != ERR_OK)
		return error_wrap(err, "the service account token");
	while (len && (token[len - 1] == '\n' || token[len - 1] == '\r' || token[len - 1] == ' '))
		token[--len] = '\0';
	if (asprintf(out, "Authorization: Bearer %s", token) < 0)
		rc = error_set(err, ERR_NOMEM, "out of memory");
	explicit_bzero(token, len);
	free(token);
	return rc;
}

/* A watch stream: bytes are cut into lines, each line one event. */
struct stream {
	struct buf line;
	kubeapi_event_fn fn;
	void *arg;
	bool (*stop)(void *arg);
	bool ended;             /* fn said stop, or a line was not an event */
	bool bad;               /* that line */
	CURL *curl;
};

static bool stream_line(struct stream *st, const char *line, size_t len)
{
	json_t *ev = json_loadb(line, len, 0, NULL);
	const char *type = json_string_value(json_object_get(ev, "type"));
	json_t *obj = json_object_get(ev, "object");
	bool go;

	if (!type || !json_is_object(obj)) {
		json_decref(ev);
		st->bad = true;
		return false;
	}
	go = st->fn(type, obj, st->arg);
	json_decref(ev);
	return go;
}

static size_t stream_collect(char *p, size_t size, size_t n, void *arg)
{
	struct stream *st = arg;
	size_t len = size * n, from = 0;
	long code = 0;

	/* An error answer is a Status, collected whole. */
	curl_easy_getinfo(st->curl, CURLINFO_RESPONSE_CODE, &code);
	if (code != 200)
		return collect(p, 1, len, &st->line);
	for (size_t i = 0; i < len; i++) {
		if (p[i] != '\n')
			continue;
		if (collect(p + from, 1, i - from, &st->line) != i - from)
			return 0;
		from = i + 1;
		if (st->line.len && !stream_line(st, st->line.data, st->line.len)) {
			st->ended = true;
			return 0;
		}
		st->line.len = 0;
	}
	if (collect(p + from, 1, len - from, &st->line) != len - from)
		return 0;
	return len;
}

static int stream_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	struct stream *st = arg;

	(void)dt, (void)dn, (void)ut, (void)un;
	if (st->stop && st->stop(st->arg)) {
		st->ended = true;
		return 1;
	}
	return 0;
}

/*
 * One request. With st, the answer is a stream of events given to st->fn
 * as they arrive (a 200 only: an error answer is collected whole into
 * *reply as usual).
 */
static enum error_code request(struct kubeapi *k, const char *method, const char *path,
			       const char *content_type, json_t *body, long timeout_ms,
			       struct stream *st, long *status, json_t **reply, struct error *err)
{
	struct curl_slist *h = NULL, *hh;
	struct buf b = { 0 };
	char *auth = NULL, *url = NULL, *text = NULL, ct[128];
	enum error_code rc;
	CURLcode cc;
	CURL *c;

	*status = 0;
	if (reply)
		*reply = NULL;
	rc = auth_header(k, &auth, err);
	if (rc != ERR_OK)
		return rc;
	snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
	c = curl_easy_init();
	if (!c || asprintf(&url, "%s%s", k->base, path) < 0 ||
	    (body && !(text = json_dumps(body, JSON_COMPACT)))) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	h = curl_slist_append(h, auth);
	hh = h ? curl_slist_append(h, "Accept: application/json") : NULL;
	h = hh ? curl_slist_append(hh, ct) : NULL;
	if (!h) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CAINFO, k->ca_file);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)k->timeout_ms);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (st) {
		/* The status is known before the first byte of the body. */
		curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, stream_progress);
		curl_easy_setopt(c, CURLOPT_XFERINFODATA, st);
		curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
	}
	if (text)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
	if (st) {
		long code = 0;

		st->curl = c;
		curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, stream_collect);
		curl_easy_setopt(c, CURLOPT_WRITEDATA, st);
		cc = curl_easy_perform(c);
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
		*status = code;
		if (st->bad) {
			rc = error_set(err, ERR_INVALID, "watch %s: a line that is not a watch event",
				       path);
			goto out;
		}
		if (code != 200 && st->line.data && reply)
			*reply = json_loadb(st->line.data, st->line.len, 0, NULL);
		if (cc == CURLE_OK || st->ended ||
		    (cc == CURLE_OPERATION_TIMEDOUT && code == 200)) {
			rc = ERR_OK;
			goto out;
		}
		rc = error_set(err, ERR_UNAVAILABLE, "watch %s%s: %s", k->base, path,
			       curl_easy_strerror(cc));
		goto out;
	}
	cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		if (b.over)
			rc = error_set(err, ERR_NO_SPACE, "%s %s%s: answer larger than %u MiB",
				       method, k->base, path, KUBEAPI_REPLY_MAX >> 20);
		else if (cc == CURLE_OPERATION_TIMEDOUT)
			rc = error_set(err, ERR_UNAVAILABLE,
				       "%s %s%s: no answer within %ld ms (the Kubernetes API call timeout)",
				       method, k->base, path, timeout_ms);
		else
			rc = error_set(err, ERR_UNAVAILABLE, "%s %s%s: %s", method, k->base, path,
				       curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	if (reply && b.data)
		*reply = json_loadb(b.data, b.len, 0, NULL);
	rc = ERR_OK;
out:
	if (auth)
		explicit_bzero(auth, strlen(auth));
	free(auth);
	curl_slist_free_all(h);
	if (c)
		curl_easy_cleanup(c);
	free(url);
	/* A body or an answer may hold a credential (a TokenReview's). */
	if (text)
		explicit_bzero(text, strlen(text));
	free(text);
	if (b.data)
		explicit_bzero(b.data, b.len);
	free(b.data);
	return rc;
}

enum error_code kubeapi_call_ct(struct kubeapi *k, const char *method, const char *path,
				const char *content_type, json_t *body, long *status,
				json_t **reply, struct error *err)
{
	return request(k, method, path, content_type, body, (long)k->timeout_ms, NULL, status,
		       reply, err);
}

enum error_code kubeapi_call(struct kubeapi *k, const char *method, const char *path,
			     json_t *body, long *status, json_t **reply, struct error *err)
{
	return kubeapi_call_ct(k, method, path, "application/json", body, status, reply, err);
}

/* GET of one page: path with limit and, when next is not NULL, its
 * continue token. */
static enum error_code list_page(struct kubeapi *k, const char *path, unsigned limit,
				 const char *next, long *status, json_t **page, struct error *err)
{
	char *token = next ? curl_easy_escape(NULL, next, 0) : NULL, *url = NULL;
	enum error_code rc;

	if ((next && !token) || asprintf(&url, "%s%climit=%u%s%s", path,
					 strchr(path, '?') ? '&' : '?', limit,
					 token ? "&continue=" : "", token ? token : "") < 0) {
		curl_free(token);
		return error_set(err, ERR_NOMEM, "list %s: out of memory", path);
	}
	curl_free(token);
	rc = kubeapi_call(k, "GET", url, NULL, status, page, err);
	free(url);
	return rc;
}

enum error_code kubeapi_list(struct kubeapi *k, const char *path, long *status, json_t **list,
			     struct error *err)
{
	json_t *first = NULL, *page = NULL, *meta;
	char *next = NULL;
	const char *token;
	unsigned limit = KUBEAPI_LIST_LIMIT, restarts = 0;
	enum error_code rc;

	*list = NULL;
	for (;;) {
		rc = list_page(k, path, limit, next, status, &page, err);
		if (rc == ERR_NO_SPACE && limit > 1) {
			/* Larger objects than most: fewer of them a page. */
			limit /= 2;
			continue;
		}
		if (rc != ERR_OK)
			break;
		if (*status == 410 && next && restarts++ < KUBEAPI_LIST_RESTARTS) {
			/* The continue token expired (its snapshot compacted
			 * away): the pages so far are of a past state. */
			json_decref(page);
			json_decref(first);
			page = first = NULL;
			free(next);
			next = NULL;
			continue;
		}
		if (*status != 200) {
			*list = page;
			page = NULL;
			break;
		}
		meta = json_object_get(page, "metadata");
		token = json_string_value(json_object_get(meta, "continue"));
		free(next);
		next = token && *token ? strdup(token) : NULL;
		if (token && *token && !next) {
			rc = error_set(err, ERR_NOMEM, "list %s: out of memory", path);
			break;
		}
		if (!first) {
			/* Its metadata is the list's: every page is of the
			 * first one's snapshot (its resourceVersion). */
			first = page;
			if (!json_is_array(json_object_get(first, "items")))
				json_object_set_new(first, "items", json_array());
		} else {
			json_array_extend(json_object_get(first, "items"),
					  json_object_get(page, "items"));
			json_decref(page);
		}
		page = NULL;
		if (!next) {
			meta = json_object_get(first, "metadata");
			json_object_del(meta, "continue");
			json_object_del(meta, "remainingItemCount");
			*list = first;
			first = NULL;
			break;
		}
	}
	free(next);
	json_decref(page);
	json_decref(first);
	return rc;
}

enum error_code kubeapi_watch(struct kubeapi *k, const char *path, unsigned timeout_s,
			      kubeapi_event_fn fn, void *arg, bool (*stop)(void *arg),
			      long *status, struct error *err)
{
	struct stream st = { .fn = fn, .arg = arg, .stop = stop };
	json_t *reply = NULL;
	enum error_code rc;

	/* The apiserver ends the stream at timeoutSeconds; the transfer
	 * gets a little more before it counts as broken. */
	rc = request(k, "GET", path, "application/json", NULL,
		     (long)timeout_s * 1000 + (long)k->timeout_ms, &st, status, &reply, err);
	if (rc == ERR_OK && *status != 200 && *status != 410)
		rc = error_set(err, ERR_UNAVAILABLE, "watch %s: HTTP %ld: %s", path, *status,
			       kubeapi_message(reply));
	json_decref(reply);
	free(st.line.data);
	return rc;
}

const char *kubeapi_message(json_t *reply)
{
	const char *m = json_string_value(json_object_get(reply, "message"));

	return m ? m : "";
}

void kubeapi_micro_time(int64_t unix_ms, char *buf, size_t size)
{
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;
	char day[32];

	gmtime_r(&t, &tm);
	strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf, size, "%s.%06dZ", day, (int)(unix_ms % 1000) * 1000);
}

void kubeapi_time(int64_t unix_ms, char *buf, size_t size)
{
	time_t t = (time_t)(unix_ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

enum error_code kubeapi_event(struct kubeapi *k, const struct kubeapi_ref *about,
			      const char *component, const char *type, const char *reason,
			      const char *message, struct error *err)
{
	char path[512], name[300], now[40];
	json_t *body, *reply = NULL;
	enum error_code rc;
	int64_t ms = retry_wall_ms();
	long status = 0;

	kubeapi_time(ms, now, sizeof(now));
	/* Unique per object and millisecond, as the apiserver wants. */
	snprintf(name, sizeof(name), "%.200s.%llx", about->name, (unsigned long long)ms);
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/events", about->ns);
	body = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s, s:s, s:s, s:s, s:s}, s:s, s:s, s:s, "
			 "s:{s:s}, s:s, s:s, s:i}",
			 "apiVersion", "v1", "kind", "Event", "metadata", "name", name, "namespace",
			 about->ns, "involvedObject", "apiVersion", about->api_version, "kind",
			 about->kind, "name", about->name, "namespace", about->ns, "uid",
			 about->uid ? about->uid : "", "type", type, "reason", reason, "message",
			 message, "source", "component", component, "firstTimestamp", now,
			 "lastTimestamp", now, "count", 1);
	if (!body)
		return error_set(err, ERR_NOMEM, "event '%s': out of memory", reason);
	rc = kubeapi_call(k, "POST", path, body, &status, &reply, err);
	if (rc == ERR_OK && status != 201)
		rc = error_set(err, ERR_UNAVAILABLE, "event '%s' about %s %s/%s: HTTP %ld: %s", reason,
			       about->kind, about->ns, about->name, status, kubeapi_message(reply));
	json_decref(reply);
	json_decref(body);
	return rc;
}

uint64_t kubeapi_backoff_ms(uint64_t last_ms)
{
	if (!last_ms)
		return 500;
	return last_ms * 2 > 30000 ? 30000 : last_ms * 2;
}

static void copy_string(char *dst, size_t size, json_t *v)
{
	const char *s = json_string_value(v);

	snprintf(dst, size, "%s", s ? s : "");
}

void kubeapi_token_review_parse(json_t *review, const char *audience,
				struct kubeapi_token_review *out)
{
	json_t *status = json_object_get(review, "status");
	json_t *user = json_object_get(status, "user");
	json_t *aud = json_object_get(status, "audiences"), *v;
	size_t i;

	memset(out, 0, sizeof(*out));
	out->authenticated = json_is_true(json_object_get(status, "authenticated"));
	/* An authenticator that ignores audiences answers none: the token is
	 * then the apiserver's own, not one issued for us. */
	json_array_foreach(aud, i, v)
		if (audience && json_string_value(v) && strcmp(json_string_value(v), audience) == 0)
			out->audience_ok = true;
	copy_string(out->username, sizeof(out->username), json_object_get(user, "username"));
	copy_string(out->node_name, sizeof(out->node_name),
		    json_array_get(json_object_get(json_object_get(user, "extra"),
						   KUBEAPI_NODE_NAME_EXTRA),
				   0));
	copy_string(out->error, sizeof(out->error), json_object_get(status, "error"));
}

enum error_code kubeapi_token_review(struct kubeapi *k, const char *token, const char *audience,
				     struct kubeapi_token_review *out, struct error *err)
{
	json_t *body, *reply = NULL;
	enum error_code rc;
	long status = 0;

	memset(out, 0, sizeof(*out));
	body = json_pack("{s:s, s:s, s:{s:s, s:[s]}}", "apiVersion", "authentication.k8s.io/v1",
			 "kind", "TokenReview", "spec", "token", token, "audiences", audience);
	if (!body)
		return error_set(err, ERR_NOMEM, "token review: out of memory");
	rc = kubeapi_call(k, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", body, &status,
			  &reply, err);
	if (rc == ERR_OK && status != 201 && status != 200)
		rc = error_set(err, ERR_UNAVAILABLE, "token review: HTTP %ld: %s", status,
			       kubeapi_message(reply));
	if (rc == ERR_OK)
		kubeapi_token_review_parse(reply, audience, out);
	json_decref(reply);
	json_decref(body);
	return rc;
}
