/*
 * kubeapi.c - Kubernetes API calls over libcurl (see kubeapi.h).
 */
#include "csi/kubeapi.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fileio.h"

#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBEAPI_TIMEOUT_MS 10000
#define KUBEAPI_REPLY_MAX (4u << 20)
#define TOKEN_MAX 16384

struct kubeapi {
	char *base, *token_file, *ca_file;
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
	*out = k;
	return ERR_OK;
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
		return error_set(err, rc, "the service account token: %s", err->msg);
	while (len && (token[len - 1] == '\n' || token[len - 1] == '\r' || token[len - 1] == ' '))
		token[--len] = '\0';
	if (asprintf(out, "Authorization: Bearer %s", token) < 0)
		rc = error_set(err, ERR_NOMEM, "out of memory");
	explicit_bzero(token, len);
	free(token);
	return rc;
}

enum error_code kubeapi_call(struct kubeapi *k, const char *method, const char *path,
			     json_t *body, long *status, json_t **reply, struct error *err)
{
	struct curl_slist *h = NULL, *hh;
	struct buf b = { 0 };
	char *auth = NULL, *url = NULL, *text = NULL;
	enum error_code rc;
	CURLcode cc;
	CURL *c;

	*status = 0;
	if (reply)
		*reply = NULL;
	rc = auth_header(k, &auth, err);
	if (rc != ERR_OK)
		return rc;
	c = curl_easy_init();
	if (!c || asprintf(&url, "%s%s", k->base, path) < 0 ||
	    (body && !(text = json_dumps(body, JSON_COMPACT)))) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	h = curl_slist_append(h, auth);
	hh = h ? curl_slist_append(h, "Accept: application/json") : NULL;
	h = hh ? curl_slist_append(hh, "Content-Type: application/json") : NULL;
	if (!h) {
		rc = error_set(err, ERR_NOMEM, "out of memory");
		goto out;
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
	curl_easy_setopt(c, CURLOPT_CAINFO, k->ca_file);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)KUBEAPI_TIMEOUT_MS);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &b);
	if (text)
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, text);
	cc = curl_easy_perform(c);
	if (cc != CURLE_OK) {
		rc = error_set(err, ERR_UNAVAILABLE, "%s %s%s: %s", method, k->base, path,
			       b.over ? "answer too large" : curl_easy_strerror(cc));
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
	free(text);
	free(b.data);
	return rc;
}

const char *kubeapi_message(json_t *reply)
{
	const char *m = json_string_value(json_object_get(reply, "message"));

	return m ? m : "";
}
