/*
 * granary-probe - a Kubernetes exec probe for the daemons' health
 * endpoints: GET URL, print the answer's body, exit 0 for a 2xx status and
 * 1 otherwise.
 *
 * Why not an httpGet probe: the kubelet reports a failed HTTP probe as
 * "HTTP probe failed with statuscode: 503" and drops the body, so the
 * reason a daemon gives for not being ready (granary-meta unreachable, a
 * full cache directory) would reach only its log. An exec probe's output
 * is the event's message: `kubectl describe pod` shows
 * "Readiness probe failed: http://127.0.0.1:8080/readyz: 503: granary-meta
 * unreachable at ...".
 *
 * Usage: granary-probe [--cacert FILE [--server-name NAME]] URL [TIMEOUT_SECONDS]
 * (timeout default 3). An https URL is verified against the CA in FILE;
 * with NAME the connection goes to the URL's host while the certificate
 * must carry NAME (a worker's certificate names the workers, not
 * 127.0.0.1).
 * Exit: 0 ready, 1 not ready or unreachable, 2 usage.
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBE_BODY_MAX 2048  /* what is kept of the body: one reason line */

struct body {
	char text[PROBE_BODY_MAX + 1];
	size_t len;
};

static size_t keep_body(char *data, size_t size, size_t nmemb, void *arg)
{
	struct body *b = arg;
	size_t n = size * nmemb, room = PROBE_BODY_MAX - b->len;

	memcpy(b->text + b->len, data, n < room ? n : room);
	b->len += n < room ? n : room;
	b->text[b->len] = '\0';
	return n;
}

static void trim(struct body *b)
{
	while (b->len && (b->text[b->len - 1] == '\n' || b->text[b->len - 1] == '\r' ||
			  b->text[b->len - 1] == ' '))
		b->text[--b->len] = '\0';
}

int main(int argc, char **argv)
{
	struct body body = { .len = 0 };
	char curl_msg[CURL_ERROR_SIZE] = "";
	long status = 0, timeout_s = 3;
	const char *cacert = NULL, *name = NULL, *url;
	char connect[320] = "";
	struct curl_slist connect_to = { .data = connect };
	CURL *c = NULL;
	CURLU *u = NULL;
	CURLcode rc;
	char *end, *host = NULL, *named_url = NULL;
	int a = 1;

	for (; a + 1 < argc && strncmp(argv[a], "--", 2) == 0; a += 2) {
		if (strcmp(argv[a], "--cacert") == 0)
			cacert = argv[a + 1];
		else if (strcmp(argv[a], "--server-name") == 0)
			name = argv[a + 1];
		else
			break;
	}
	if (argc - a < 1 || argc - a > 2 || (name && !cacert) ||
	    (strncmp(argv[a], "http://", 7) != 0 && strncmp(argv[a], "https://", 8) != 0) ||
	    ((cacert != NULL) != (strncmp(argv[a], "https://", 8) == 0))) {
		fprintf(stderr,
			"usage: granary-probe http://HOST:PORT/PATH [TIMEOUT_SECONDS]\n"
			"       granary-probe --cacert FILE [--server-name NAME] https://HOST:PORT/PATH [TIMEOUT_SECONDS]\n");
		return 2;
	}
	url = argv[a];
	if (argc - a == 2) {
		timeout_s = strtol(argv[a + 1], &end, 10);
		if (*end || timeout_s < 1 || timeout_s > 300) {
			fprintf(stderr, "granary-probe: timeout '%s' is not a number of seconds from 1 to 300\n",
				argv[a + 1]);
			return 2;
		}
	}
	if (name) {
		/* Ask NAME, connect to the URL's host: "::HOST:" matches any
		 * name and port and keeps the port. */
		u = curl_url();
		if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
		    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
		    curl_url_set(u, CURLUPART_HOST, name, 0) != CURLUE_OK ||
		    curl_url_get(u, CURLUPART_URL, &named_url, 0) != CURLUE_OK) {
			fprintf(stderr, "granary-probe: cannot use '%s' with server name '%s'\n", url,
				name);
			return 2;
		}
		snprintf(connect, sizeof(connect), "::%s:", host);
		curl_free(host);
		curl_url_cleanup(u);
	}
	if (curl_global_init(CURL_GLOBAL_NOTHING) != CURLE_OK || !(c = curl_easy_init())) {
		printf("%s: cannot start libcurl\n", url);
		return 1;
	}
	curl_easy_setopt(c, CURLOPT_URL, named_url ? named_url : url);
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, cacert ? "https" : "http");
	if (cacert)
		curl_easy_setopt(c, CURLOPT_CAINFO, cacert);
	if (named_url)
		curl_easy_setopt(c, CURLOPT_CONNECT_TO, &connect_to);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_msg);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, keep_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
	rc = curl_easy_perform(c);
	if (rc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(c);
	curl_free(named_url);
	curl_global_cleanup();
	trim(&body);
	if (rc != CURLE_OK) {
		printf("%s: %s\n", url, *curl_msg ? curl_msg : curl_easy_strerror(rc));
		return 1;
	}
	if (status < 200 || status > 299) {
		printf("%s: %ld: %s\n", url, status, body.len ? body.text : "(no reason given)");
		return 1;
	}
	printf("%s\n", body.len ? body.text : "ok");
	return 0;
}
